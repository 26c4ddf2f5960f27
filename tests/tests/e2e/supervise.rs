//! Opt-in supervision (issue 13): `pm-start --restart on-failure|always` forks a monitor,
//! the service's parent, that records how the service ended (`last_exit`), waits the
//! restart delay in state `backoff`, starts it again (readiness checks included), doubles
//! the delay after each quick failure and gives up (`failed`) past `--max-restarts`.
//! pm-stop and pm-stopall stop the monitor first, so a stop never races a restart; a
//! SIGKILLed monitor leaves the service running, unsupervised.
//!
//! Every service here is a real process; the tests judge pm by the kernel's word, read with
//! the harness's own /proc reader (zombies count as gone): which PIDs live, their parents,
//! sessions and start times, the cgroup's `cgroup.procs`, the monitor's CPU ticks and RSS.
//! Crashes are triggered by the test, not by timers: the [`CRASHER`] service runs until the
//! test creates its `$GO` file, then removes it and exits with `$CODE`. Every timing claim
//! is bounded above and, where pm promises a delay, below.
//!
//! `make test` runs this twice, the second time with `PM_CGROUP=off`: where it matters the
//! tests look at `tracking` and check what that tracking promises. The Sandbox kills the
//! monitors its records name before anything else, so a failing test leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pm_tests::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Helpers

/// Runs until `$GO` exists, then removes it and exits `${CODE:-3}`. Each run appends
/// `run PID` to `$RUNS`. The poll is the service's, not pm's.
const CRASHER: &str = r#"echo "run $$" >> "$RUNS"
while [ ! -e "$GO" ]; do sleep 0.02; done
rm -f "$GO"
exit "${CODE:-3}""#;

/// Files of one [`CRASHER`] service.
struct Crasher {
    go: PathBuf,
    runs: PathBuf,
}

impl Crasher {
    fn new(sb: &Sandbox, name: &str) -> Crasher {
        Crasher {
            go: sb.path(&format!("{name}.go")),
            runs: sb.path(&format!("{name}.runs")),
        }
    }

    /// `--env GO=… --env RUNS=…` and `--env CODE=code`.
    fn env(&self, code: i32) -> Vec<String> {
        vec![
            "--env".into(),
            format!("GO={}", s(&self.go)),
            "--env".into(),
            format!("RUNS={}", s(&self.runs)),
            "--env".into(),
            format!("CODE={code}"),
        ]
    }

    /// Makes the running service exit; returns once its PID `pid` is gone.
    #[track_caller]
    fn crash(&self, pid: i32) -> Instant {
        assert!(
            is_alive(pid),
            "pid {pid} should be running before the crash"
        );
        fs::write(&self.go, "").unwrap();
        let t = Instant::now();
        within(&format!("pid {pid} exits"), Duration::from_secs(5), || {
            !is_alive(pid)
        });
        t
    }
}

/// `pm-start NAME OPTS... -- sh -c CRASHER` with the crasher's environment, asserting
/// success; the PID.
fn start_crasher(sb: &Sandbox, name: &str, c: &Crasher, code: i32, opts: &[&str]) -> i32 {
    let mut all: Vec<String> = c.env(code);
    all.extend(opts.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    sb.start_sh(name, &all, CRASHER)
}

/// Polls `f` every 2 ms until it holds; fails after `limit`. Returns how long it took.
#[track_caller]
fn within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if f() {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A string field of NAME's record ("" if absent).
fn field(sb: &Sandbox, name: &str, key: &str) -> String {
    sb.record(name)
        .and_then(|r| r[key].as_str().map(String::from))
        .unwrap_or_default()
}

fn phase(sb: &Sandbox, name: &str) -> String {
    field(sb, name, "phase")
}

/// A process by identity: PID and start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ident {
    pid: i32,
    start: u64,
}

impl Ident {
    /// Still the same process, and not a zombie.
    fn alive(self) -> bool {
        Stat::read(self.pid).is_some_and(|s| s.start_time == self.start && !s.is_zombie())
    }
}

/// The monitor NAME's record names, which must be this very process, alive (its start time
/// checked against /proc).
#[track_caller]
fn monitor(sb: &Sandbox, name: &str) -> Ident {
    let rec = sb.rec(name);
    let m = &rec["monitor"];
    let id = Ident {
        pid: m["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("no monitor in the record of {name}: {rec}"))
            as i32,
        start: m["start_time"].as_u64().expect("monitor.start_time"),
    };
    assert!(id.alive(), "the recorded monitor {id:?} is not running");
    id
}

/// `pm-status NAME` (table): exit code and stdout.
fn table(sb: &Sandbox, name: &str) -> (Option<i32>, String) {
    let out = sb.status(&[name]);
    (out.status.code(), stdout(&out))
}

/// `pm-status --json NAME`, the one object.
fn json(sb: &Sandbox, name: &str) -> Value {
    sb.status_json(&[name])[0].clone()
}

/// An RFC 3339 UTC time as pm writes it (`2026-11-26T14:44:50.178398884Z`), parsed here
/// (not with pm's code).
#[track_caller]
fn time(text: &str) -> SystemTime {
    let bad = || -> ! { panic!("not an RFC 3339 UTC time: {text:?}") };
    let t = text.strip_suffix('Z').unwrap_or_else(|| bad());
    let (date, clock) = t.split_once('T').unwrap_or_else(|| bad());
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, "0"));
    let c: Vec<u64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    assert!(d.len() == 3 && c.len() == 3 && frac.len() <= 9, "{text:?}");
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    let nanos: u64 = format!("{frac:0<9}").parse().unwrap();
    UNIX_EPOCH + Duration::new(days * 86_400 + c[0] * 3600 + c[1] * 60 + c[2], nanos as u32)
}

/// `b - a`, which must not be negative.
#[track_caller]
fn gap(a: SystemTime, b: SystemTime) -> Duration {
    b.duration_since(a)
        .unwrap_or_else(|e| panic!("{b:?} is {:?} before {a:?}", e.duration()))
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: i32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest: Vec<&str> = text[text.rfind(')').unwrap() + 1..]
        .split_ascii_whitespace()
        .collect();
    // rest[0] is field 3.
    rest[14 - 3].parse::<u64>().unwrap() + rest[15 - 3].parse::<u64>().unwrap()
}

/// A `kB` line of /proc/PID/status (`VmRSS`, `RssAnon`, ...), in KiB.
fn status_kib(pid: i32, key: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Live processes whose environment carries `PM_RUN_ID=run` (the marker of one start).
fn marked(run: &str) -> Vec<i32> {
    let needle = format!("PM_RUN_ID={run}");
    procfs::pids()
        .into_iter()
        .filter(|&p| environ(p).contains(&needle) && is_alive(p))
        .collect()
}

/// Nothing of the sandbox runs: no process with its state dir in the environment (services,
/// monitors, anything they forked), nothing in its cgroups, nothing with the marker of the
/// last recorded start of NAME, nothing in the recorded process group.
#[track_caller]
fn assert_nothing_left(sb: &Sandbox, name: &str, when: &str) {
    let left = sb.processes();
    assert!(
        left.is_empty(),
        "{when}: still running: {:?}",
        left.iter()
            .map(|&p| (p, cmdline(p), Stat::read(p)))
            .collect::<Vec<_>>()
    );
    if let Some(dir) = sb.cgroup_dir() {
        let live: Vec<i32> = procfs::cgroup_pids(&dir)
            .into_iter()
            .filter(|&p| is_alive(p))
            .collect();
        assert!(
            live.is_empty(),
            "{when}: left in {}: {live:?}",
            dir.display()
        );
    }
    if let Some(rec) = sb.record(name) {
        if let Some(run) = rec["run_id"].as_str() {
            let m = marked(run);
            assert!(m.is_empty(), "{when}: processes marked {run} run: {m:?}");
        }
        if let Some(pgid) = rec["pgid"].as_i64() {
            let g = group_members(pgid as i32);
            assert!(g.is_empty(), "{when}: group {pgid} still has {g:?}");
        }
    }
}

/// `"cgroup"` or `"group"`, as pm-status says.
fn tracking(sb: &Sandbox, name: &str) -> String {
    json(sb, name)["tracking"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[track_caller]
fn assert_stopped(sb: &Sandbox, name: &str) {
    let (code, text) = table(sb, name);
    assert_eq!(code, Some(3), "pm-status {name} after the stop:\n{text}");
    assert_eq!(phase(sb, name), "stopped", "{}", sb.rec(name));
}

fn stop_ok(out: &Output) {
    assert_success(out, "pm-stop");
}

// ---------------------------------------------------------------------------------------
// 1. A crash with code 3 under on-failure: last_exit, backoff, restarted with a new PID

#[test]
fn a_crash_is_recorded_with_its_code_and_restarted_after_the_delay() {
    let sb = Sandbox::new();
    let c = Crasher::new(&sb, "c");
    let delay = Duration::from_millis(300);
    let p1 = start_crasher(
        &sb,
        "c",
        &c,
        3,
        &["--restart", "on-failure", "--restart-delay", "300ms"],
    );
    let m = monitor(&sb, "c");
    assert_eq!(stat(p1).ppid, m.pid, "the monitor is the service's parent");
    let j = json(&sb, "c");
    assert_eq!(j["restart"], "on-failure", "{j}");
    assert_eq!(j["supervised"], true, "{j}");
    assert_eq!(j["monitor_pid"], m.pid, "{j}");
    assert_eq!(j["restarts"], 0, "{j}");
    assert!(j["last_exit"].is_null(), "{j}");

    let mut prev = p1;
    for round in 1..=2u64 {
        c.crash(prev);
        // Backoff: the end is recorded (code 3, no signal) and the restart announced.
        within("the record says backoff", Duration::from_secs(2), || {
            phase(&sb, "c") == "backoff"
        });
        let rec = sb.rec("c");
        let j = json(&sb, "c");
        let (code, text) = table(&sb, "c");
        // The restart may already have happened by now only if pm ignored the delay: the
        // first delay is 300 ms, the second 600 ms.
        if phase(&sb, "c") == "backoff" {
            assert_eq!(code, Some(151), "pm-status in backoff:\n{text}\n{j}");
            assert_eq!(j["state"], "backoff", "{j}");
            assert!(
                text.contains("[exited 3, restarting in "),
                "the table says how it ended and when it restarts:\n{text}"
            );
        }
        assert_eq!(j["last_exit"]["code"], 3, "{j}");
        assert!(j["last_exit"]["signal"].is_null(), "{j}");
        assert_eq!(j["last_exit"]["core"], false, "{j}");
        assert!(j["last_exit"]["at"].is_string(), "{j}");
        assert_eq!(rec["last_exit"]["code"], 3, "{rec}");
        assert_eq!(j["restarts"], round - 1, "not restarted yet: {j}");
        assert_eq!(j["supervised"], true, "{j}");
        assert!(m.alive(), "the monitor stays through the backoff");
        let ended = time(rec["last_exit"]["at"].as_str().unwrap());

        // Restarted: a new PID, a child of the same monitor, after the delay (doubled on
        // the second quick failure), not much later.
        let want = delay * (1 << (round - 1));
        within(
            "a new PID is recorded",
            want + Duration::from_secs(3),
            || sb.pid("c").is_some_and(|p| p != prev && is_alive(p)),
        );
        let p = sb.pid("c").unwrap();
        let rec = sb.rec("c");
        let started = time(rec["started_at"].as_str().unwrap());
        let took = gap(ended, started);
        eprintln!("round {round}: restarted {took:?} after the end (delay {want:?})");
        assert!(
            took >= want,
            "restarted {took:?} after the end, before the {want:?} delay"
        );
        assert!(
            took < want + Duration::from_secs(2),
            "restarted {took:?} after the end: the delay is {want:?}"
        );
        within("running again", Duration::from_secs(5), || {
            sb.state_of("c") == "running"
        });
        assert_eq!(
            stat(p).ppid,
            m.pid,
            "the restarted service is the monitor's child"
        );
        assert!(m.alive());
        let j = json(&sb, "c");
        assert_eq!(j["pid"], p, "{j}");
        assert_eq!(j["restarts"], round, "{j}");
        assert_eq!(j["last_exit"]["code"], 3, "{j}");
        assert_eq!(j["monitor_pid"], m.pid, "{j}");
        let (code, text) = table(&sb, "c");
        assert_eq!(code, Some(0), "{text}");
        assert!(
            text.contains(&format!(
                "[restarted {round} time{}; last exited 3",
                if round == 1 { "" } else { "s" }
            )),
            "{text}"
        );
        prev = p;
    }
    let log = sb.log("c");
    assert!(log.contains("c: exited 3; restarting in 300ms"), "{log}");
    assert!(log.contains("c: exited 3; restarting in 600ms"), "{log}");
    // One line per run: the first start and two restarts.
    let runs = fs::read_to_string(&c.runs).unwrap();
    assert_eq!(runs.lines().count(), 3, "{runs}");

    stop_ok(&sb.stop(&["c"]));
    assert!(!m.alive(), "pm-stop waits for the monitor to be gone");
    assert_stopped(&sb, "c");
    assert_nothing_left(&sb, "c", "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 2. kill -SEGV: the signal is recorded

#[test]
fn a_service_killed_by_sigsegv_has_the_signal_recorded() {
    let sb = Sandbox::new();
    let out = sb.start(
        "seg",
        &[
            "--restart",
            "on-failure",
            "--restart-delay",
            "5s",
            "--",
            "sleep",
            "1000",
        ],
    );
    assert_success(&out, "pm-start");
    let pid = sb.pid("seg").unwrap();
    let m = monitor(&sb, "seg");
    kill(Pid::from_raw(pid), Signal::SIGSEGV).unwrap();
    within("the record says backoff", Duration::from_secs(3), || {
        phase(&sb, "seg") == "backoff"
    });
    assert_gone(pid);
    let j = json(&sb, "seg");
    assert_eq!(j["state"], "backoff", "{j}");
    assert_eq!(j["last_exit"]["signal"], "SEGV", "{j}");
    assert!(j["last_exit"]["code"].is_null(), "{j}");
    // A core is dumped or not depending on `ulimit -c` and core_pattern: a bool either way.
    assert!(j["last_exit"]["core"].is_boolean(), "{j}");
    let rec = sb.rec("seg");
    assert_eq!(rec["last_exit"]["signal"], "SEGV", "{rec}");
    let (code, text) = table(&sb, "seg");
    assert_eq!(code, Some(151), "{text}");
    assert!(text.contains("killed by SIGSEGV"), "{text}");
    assert!(
        sb.log("seg").contains("seg: killed by SIGSEGV"),
        "{}",
        sb.log("seg")
    );
    stop_ok(&sb.stop(&["seg"]));
    assert!(!m.alive());
    assert_stopped(&sb, "seg");
    assert_nothing_left(&sb, "seg", "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 3. Growing delays, then failed at --max-restarts

#[test]
fn on_failure_backs_off_with_doubling_delays_and_gives_up_at_max_restarts() {
    let sb = Sandbox::new();
    // Runs 300 ms (past the 200 ms grace), then exits 3.
    let out = sb.start(
        "flap",
        &[
            "--restart",
            "on-failure",
            "--restart-delay",
            "100ms",
            "--max-restarts",
            "3/1m",
            "--",
            "sh",
            "-c",
            "sleep 0.3; exit 3",
        ],
    );
    assert_success(&out, "pm-start");
    let m = monitor(&sb, "flap");
    let began = Instant::now();
    // Every distinct run: (pid, kernel start time, record's started_at, the record's
    // last_exit.at while that run was recorded: the end of the run before it).
    let mut runs: Vec<(i32, u64, String, Option<String>)> = Vec::new();
    let mut ends: Vec<String> = Vec::new();
    loop {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "never gave up: {}",
            sb.rec("flap")
        );
        let Some(rec) = sb.record("flap") else {
            continue;
        };
        let at = rec["last_exit"]["at"].as_str().map(String::from);
        if let Some(a) = &at {
            if !ends.contains(a) {
                ends.push(a.clone());
            }
        }
        if let (Some(pid), Some(started)) = (rec["pid"].as_i64(), rec["started_at"].as_str()) {
            if !runs.iter().any(|r| r.2 == started) {
                let st = rec["start_time"].as_u64().unwrap();
                runs.push((pid as i32, st, started.to_string(), at.clone()));
            }
        }
        if rec["phase"] == "failed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    // 1 start + 3 restarts, 4 ends: the 4th end within the window gives up.
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(ends.len(), 4, "{ends:?}");
    // The gap between the end of run k and the start of run k+1: the delay, doubling.
    let mut gaps = Vec::new();
    for k in 1..runs.len() {
        let prev_end = runs[k]
            .3
            .as_deref()
            .expect("a restarted run records the end");
        assert_eq!(prev_end, ends[k - 1], "runs {runs:?} ends {ends:?}");
        gaps.push(gap(time(prev_end), time(&runs[k].2)));
    }
    eprintln!("restart gaps: {gaps:?}");
    for (k, g) in gaps.iter().enumerate() {
        let want = Duration::from_millis(100 << k);
        assert!(*g >= want, "restart {} after {g:?}, before {want:?}", k + 1);
        assert!(
            *g < want + Duration::from_secs(1),
            "restart {} after {g:?}; want {want:?}",
            k + 1
        );
    }
    for w in gaps.windows(2) {
        let ratio = w[1].as_secs_f64() / w[0].as_secs_f64();
        assert!(
            (1.5..=2.6).contains(&ratio),
            "the delay should double: {gaps:?}"
        );
    }
    // The kernel's start times agree: each start-to-start interval is the ~300 ms run plus
    // the delay, so it grows by about the last delay each time (ticks are 10 ms coarse).
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let spans: Vec<f64> = runs
        .windows(2)
        .map(|w| (w[1].1 - w[0].1) as f64 / hz)
        .collect();
    eprintln!("start-to-start (kernel): {spans:?}");
    assert!(spans[1] - spans[0] > 0.05, "{spans:?}");
    assert!(spans[2] - spans[1] > 0.10, "{spans:?}");

    // Failed: exit 1, the reason, the monitor gone, nothing of the service left.
    within("the monitor exits", Duration::from_secs(3), || !m.alive());
    let (code, text) = table(&sb, "flap");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("exited 3, 4 times in 1m0s; gave up"),
        "{text}"
    );
    let j = json(&sb, "flap");
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["supervised"], false, "{j}");
    assert!(j["monitor_pid"].is_null(), "{j}");
    assert_eq!(j["restarts"], 3, "{j}");
    assert_eq!(j["last_exit"]["code"], 3, "{j}");
    let rec = sb.rec("flap");
    assert_eq!(
        rec["failure"]["reason"], "exited 3, 4 times in 1m0s; gave up",
        "{rec}"
    );
    assert_nothing_left(&sb, "flap", "after giving up");
    let log = sb.log("flap");
    for d in ["100ms", "200ms", "400ms"] {
        assert!(
            log.contains(&format!("exited 3; restarting in {d}")),
            "{log}"
        );
    }
    // And it stays down.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(phase(&sb, "flap"), "failed");
    assert_eq!(sb.pid("flap"), Some(runs[3].0));
    assert_nothing_left(&sb, "flap", "a while after giving up");
    // pm-stop of a failed service: nothing to stop, exit 0.
    stop_ok(&sb.stop(&["flap"]));
}

// ---------------------------------------------------------------------------------------
// 4. always restarts a clean exit, on-failure does not

#[test]
fn always_restarts_a_clean_exit_and_on_failure_leaves_it_dead() {
    let sb = Sandbox::new();
    let a = Crasher::new(&sb, "a");
    let o = Crasher::new(&sb, "o");
    let opts = |p| vec!["--restart", p, "--restart-delay", "100ms"];
    let pa = start_crasher(&sb, "a", &a, 0, &opts("always"));
    let po = start_crasher(&sb, "o", &o, 0, &opts("on-failure"));
    let ma = monitor(&sb, "a");
    let mo = monitor(&sb, "o");

    // always: restarted after exit 0.
    a.crash(pa);
    within("a restarted", Duration::from_secs(5), || {
        sb.pid("a").is_some_and(|p| p != pa && is_alive(p))
    });
    within("a running", Duration::from_secs(5), || {
        sb.state_of("a") == "running"
    });
    let j = json(&sb, "a");
    assert_eq!(j["restarts"], 1, "{j}");
    assert_eq!(j["last_exit"]["code"], 0, "{j}");
    assert_eq!(j["supervised"], true, "{j}");
    assert!(ma.alive());

    // on-failure: exit 0 ends supervision; the service is dead, not restarted.
    o.crash(po);
    within("o's monitor exits", Duration::from_secs(3), || !mo.alive());
    let (code, text) = table(&sb, "o");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("exited 0; not restarted (--restart on-failure)"),
        "{text}"
    );
    let j = json(&sb, "o");
    assert_eq!(j["state"], "dead", "{j}");
    assert_eq!(j["last_exit"]["code"], 0, "{j}");
    assert_eq!(j["supervised"], false, "{j}");
    assert_eq!(j["restarts"], 0, "{j}");
    // And nothing restarts it later (the delay was 100 ms).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(sb.pid("o"), Some(po));
    assert_eq!(sb.state_of("o"), "dead");
    let runs = fs::read_to_string(&o.runs).unwrap();
    assert_eq!(runs.lines().count(), 1, "o ran again: {runs}");
    assert!(
        sb.log("o")
            .contains("o: exited 0; not restarted (--restart on-failure)"),
        "{}",
        sb.log("o")
    );

    stop_ok(&sb.stop(&["a", "o"]));
    assert!(!ma.alive());
    assert_stopped(&sb, "a");
    assert_nothing_left(&sb, "a", "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 5. pm-stop during the backoff

#[test]
fn pm_stop_during_backoff_is_prompt_and_nothing_restarts_after_the_delay() {
    let sb = Sandbox::new();
    let c = Crasher::new(&sb, "b");
    let delay = Duration::from_secs(5);
    let p = start_crasher(
        &sb,
        "b",
        &c,
        3,
        &["--restart", "on-failure", "--restart-delay", "5s"],
    );
    let m = monitor(&sb, "b");
    let crashed = c.crash(p);
    within("backoff", Duration::from_secs(2), || {
        phase(&sb, "b") == "backoff"
    });
    let t = Instant::now();
    let out = sb.stop(&["b"]);
    let took = t.elapsed();
    stop_ok(&out);
    eprintln!("pm-stop during backoff took {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "pm-stop waited {took:?} (the restart delay is {delay:?}): {}",
        describe(&out)
    );
    assert!(!m.alive(), "the monitor is gone when pm-stop returns");
    assert_stopped(&sb, "b");
    assert_nothing_left(&sb, "b", "after pm-stop");

    // Past the moment the restart was due (+1 s): still stopped, nothing ran again.
    let due = delay + Duration::from_secs(1);
    std::thread::sleep(due.saturating_sub(crashed.elapsed()));
    assert_stopped(&sb, "b");
    assert_eq!(sb.pid("b"), Some(p), "no new start was recorded");
    assert_nothing_left(&sb, "b", "after the restart delay");
    let runs = fs::read_to_string(&c.runs).unwrap();
    assert_eq!(runs.lines().count(), 1, "it ran again: {runs}");
}

// ---------------------------------------------------------------------------------------
// 6. pm-stop racing restarts, 50 times

#[test]
fn pm_stop_at_any_moment_of_a_restart_loop_leaves_it_stopped_with_nothing_left() {
    let sb = Sandbox::new();
    let began = Instant::now();
    let mut saw = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..50u64 {
        let delay = format!("{}ms", 10 + (i % 5) * 10);
        // Short runs past a 20 ms grace, then exit 1: running, backoff and restarting (the
        // grace of a restart) follow each other every few tens of ms.
        let script = if i % 2 == 0 {
            "sleep 0.05; exit 1"
        } else {
            "sleep 0.03; exit 1"
        };
        let out = sb.start(
            "race",
            &[
                "--restart",
                "on-failure",
                "--restart-delay",
                &delay,
                "--max-restarts",
                "0",
                "--grace",
                "20ms",
                "--",
                "sh",
                "-c",
                script,
            ],
        );
        assert_success(&out, &format!("pm-start, round {i}"));
        let m = monitor(&sb, "race");
        std::thread::sleep(Duration::from_millis((i * 37) % 130));
        *saw.entry(phase(&sb, "race")).or_default() += 1;
        let t = Instant::now();
        let out = sb.stop(&["race"]);
        let took = t.elapsed();
        assert_success(&out, &format!("pm-stop, round {i}"));
        assert!(
            took < Duration::from_secs(5),
            "round {i}: pm-stop took {took:?}"
        );
        assert!(!m.alive(), "round {i}: the monitor {m:?} survived pm-stop");
        assert_eq!(
            phase(&sb, "race"),
            "stopped",
            "round {i}: {}",
            sb.rec("race")
        );
        assert_nothing_left(&sb, "race", &format!("round {i}, after pm-stop"));
        // Longer than any restart delay of this loop: nothing came back.
        std::thread::sleep(Duration::from_millis(120));
        assert_stopped(&sb, "race");
        assert_nothing_left(&sb, "race", &format!("round {i}, 120 ms after pm-stop"));
    }
    eprintln!(
        "phases seen just before pm-stop: {saw:?}; 50 rounds in {:?}",
        began.elapsed()
    );
    // The moments varied: the stops hit more than one phase of the loop.
    assert!(saw.len() >= 2, "{saw:?}");
}

// ---------------------------------------------------------------------------------------
// 7. SIGKILL of the monitor

#[test]
fn a_sigkilled_monitor_leaves_the_service_running_unsupervised() {
    let sb = Sandbox::new();
    let out = sb.start("k", &["--restart", "always", "--", "sleep", "1000"]);
    assert_success(&out, "pm-start");
    let pid = sb.pid("k").unwrap();
    let start = stat(pid).start_time;
    let m = monitor(&sb, "k");
    sigkill(m.pid);
    // Same process, still running, reported as such.
    assert!(is_alive(pid) && stat(pid).start_time == start);
    let (code, text) = table(&sb, "k");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("running"), "{text}");
    assert!(
        text.contains("[unsupervised: its monitor is gone]"),
        "{text}"
    );
    let j = json(&sb, "k");
    assert_eq!(j["state"], "running", "{j}");
    assert_eq!(j["pid"], pid, "{j}");
    assert_eq!(j["supervised"], false, "{j}");
    assert!(j["monitor_pid"].is_null(), "{j}");
    assert_eq!(j["restart"], "always", "{j}");
    // A second look a little later: nothing changed it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(is_alive(pid) && stat(pid).start_time == start);
    assert_eq!(sb.pid("k"), Some(pid));

    let out = sb.stop(&["k"]);
    stop_ok(&out);
    assert!(
        stderr(&out).contains("stopped by SIGTERM"),
        "{}",
        describe(&out)
    );
    assert_gone(pid);
    assert_stopped(&sb, "k");
    assert_nothing_left(&sb, "k", "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 8. Readiness checks run again on every restart

#[test]
fn a_restart_is_running_only_once_its_readiness_check_passes_again() {
    let sb = Sandbox::new();
    let c = Crasher::new(&sb, "r");
    let up = sb.path("r.up");
    let count = sb.path("r.count");
    // Every run but the first takes a second before it creates $UP (the old $UP stays:
    // only a file newer than the start counts).
    let script = format!(
        r#"n=$(( $(cat "$COUNT" 2>/dev/null || echo 0) + 1 )); echo $n > "$COUNT"
if [ $n -ge 2 ]; then sleep 1; fi
: > "$UP"
{CRASHER}"#
    );
    let mut opts: Vec<String> = c.env(3);
    opts.extend([
        "--env".into(),
        format!("UP={}", s(&up)),
        "--env".into(),
        format!("COUNT={}", s(&count)),
        "--ready".into(),
        format!("file:{}", s(&up)),
        "--restart".into(),
        "on-failure".into(),
        "--restart-delay".into(),
        "100ms".into(),
    ]);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let p1 = sb.start_sh("r", &opts, &script);
    let first_up = fs::metadata(&up).unwrap().modified().unwrap();
    c.crash(p1);
    let mut new_pid_at = None;
    let mut saw_starting = false;
    let began = Instant::now();
    let p2 = loop {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "never running again: {}",
            sb.rec("r")
        );
        // The phase first, then the file: running must mean the file was already new.
        let rec = sb.rec("r");
        let up_time = fs::metadata(&up).unwrap().modified().unwrap();
        let pid = rec["pid"].as_i64().unwrap() as i32;
        if pid != p1 && new_pid_at.is_none() {
            new_pid_at = Some(Instant::now());
        }
        if pid != p1 && rec["phase"] == "starting" && !saw_starting {
            saw_starting = true;
            let (code, text) = table(&sb, "r");
            if phase(&sb, "r") == "starting" {
                assert_eq!(code, Some(150), "a restart waiting for readiness:\n{text}");
            }
        }
        if pid != p1 && rec["phase"] == "running" {
            let started = time(rec["started_at"].as_str().unwrap());
            assert!(
                up_time > started && up_time > first_up,
                "running before its ready file was renewed (file {up_time:?}, start {started:?})"
            );
            break pid;
        }
        std::thread::sleep(Duration::from_millis(3));
    };
    let waited = new_pid_at.unwrap().elapsed();
    eprintln!("the restart was running {waited:?} after its PID was recorded");
    assert!(saw_starting, "the restart was never seen starting");
    assert!(
        waited >= Duration::from_millis(900),
        "reported running {waited:?} after the restart; its file comes after 1s"
    );
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(sb.state_of("r"), "running");
    assert_eq!(json(&sb, "r")["restarts"], 1);
    assert!(is_alive(p2));
    stop_ok(&sb.stop(&["r"]));
    assert_nothing_left(&sb, "r", "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 9. The monitor is idle: no CPU, small RSS

#[test]
fn an_idle_monitor_uses_no_cpu_and_little_memory() {
    let sb = Sandbox::new();
    let out = sb.start("idle", &["--restart", "always", "--", "sleep", "1000"]);
    assert_success(&out, "pm-start");
    let m = monitor(&sb, "idle");
    // Let it settle (detach, and whatever it does once) before measuring.
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(m.pid);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let after = cpu_ticks(m.pid);
    let rss = status_kib(m.pid, "VmRSS");
    let anon = status_kib(m.pid, "RssAnon");
    let state = stat(m.pid).state;
    eprintln!(
        "monitor {}: {} ticks of CPU over {:?} ({} total), VmRSS {rss} KiB (RssAnon {anon} KiB), state {state}, binaries in {}",
        m.pid,
        after - before,
        t.elapsed(),
        after,
        bin_dir().display()
    );
    assert!(m.alive());
    assert_eq!(after, before, "the idle monitor used CPU");
    assert_eq!(state, 'S', "the idle monitor sleeps in the kernel");
    // Private memory is what each monitor costs; VmRSS also counts the binary's pages, which
    // are shared between monitors and much larger in an unoptimized (debug) build.
    assert!(anon < 2 * 1024, "RssAnon {anon} KiB");
    let optimized = !bin_dir().to_string_lossy().contains("/debug");
    let limit = if optimized { 4 * 1024 } else { 8 * 1024 };
    assert!(
        rss < limit,
        "VmRSS {rss} KiB, limit {limit} KiB (optimized build: {optimized})"
    );
    stop_ok(&sb.stop(&["idle"]));
    assert_nothing_left(&sb, "idle", "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 10. The monitor lets go of the caller

#[test]
fn command_substitution_of_a_supervised_start_returns_promptly() {
    let sb = Sandbox::new();
    let mut c = sb.std_cmd("sh");
    c.env("PMSTART", bin_dir().join("pm-start")).args([
        "-c",
        r#"x=$("$PMSTART" sub --restart always -- sleep 1000 2>&1); printf '%s\n' "$x""#,
    ]);
    let done = sb.spawn_cmd("sub", c).finish(Duration::from_secs(15));
    eprintln!("x=$(pm-start …) took {:?}", done.took);
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert!(
        done.stdout.contains("sub: started, pid"),
        "{}",
        done.describe()
    );
    assert!(
        done.took < Duration::from_secs(5),
        "$(pm-start) waited {:?}: the monitor holds the caller's pipe",
        done.took
    );
    // The monitor is detached: its own session, stdin/stdout on /dev/null, stderr to the
    // service's log, no pipe of the caller's, not in the service's cgroup.
    let m = monitor(&sb, "sub");
    let pid = sb.pid("sub").unwrap();
    assert!(is_alive(pid));
    assert_eq!(stat(pid).ppid, m.pid);
    let ms = stat(m.pid);
    assert_eq!(
        ms.session, m.pid,
        "the monitor leads a session of its own: {ms:?}"
    );
    let link = |fd: i32| {
        fs::read_link(format!("/proc/{}/fd/{fd}", m.pid))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    assert_eq!(link(0), "/dev/null");
    assert_eq!(link(1), "/dev/null");
    let log = sb.state.join("sub.log");
    assert_eq!(Path::new(&link(2)), log.as_path());
    for fd in fds_of(m.pid) {
        assert!(!link(fd).starts_with("pipe:"), "fd {fd} is {}", link(fd));
    }
    if tracking(&sb, "sub") == "cgroup" {
        let leaf = PathBuf::from(sb.rec("sub")["cgroup"].as_str().unwrap());
        let inside = procfs::cgroup_pids(&leaf);
        assert!(inside.contains(&pid), "{inside:?}");
        assert!(
            !inside.contains(&m.pid),
            "the monitor is in the service's cgroup"
        );
        assert_ne!(procfs::cgroup_of(m.pid), procfs::cgroup_of(pid));
    }
    stop_ok(&sb.stop(&["sub"]));
    assert_nothing_left(&sb, "sub", "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 11. pm-stopall: a running and a backing-off supervised service

#[test]
fn pm_stopall_stops_supervised_services_running_or_in_backoff() {
    let sb = Sandbox::new();
    let out = sb.start("up", &["--restart", "always", "--", "sleep", "1000"]);
    assert_success(&out, "pm-start");
    let up = sb.pid("up").unwrap();
    let mu = monitor(&sb, "up");
    let c = Crasher::new(&sb, "down");
    let p = start_crasher(
        &sb,
        "down",
        &c,
        3,
        &["--restart", "on-failure", "--restart-delay", "10s"],
    );
    let md = monitor(&sb, "down");
    c.crash(p);
    within("down is in backoff", Duration::from_secs(2), || {
        phase(&sb, "down") == "backoff"
    });
    assert_eq!(sb.state_of("down"), "backoff");

    let t = Instant::now();
    let out = sb.stopall(&[]);
    let took = t.elapsed();
    assert_success(&out, "pm-stopall");
    eprintln!("pm-stopall took {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "{took:?}: {}",
        describe(&out)
    );
    assert!(!mu.alive() && !md.alive(), "a monitor survived pm-stopall");
    assert_gone(up);
    for name in ["up", "down"] {
        assert_stopped(&sb, name);
        assert_nothing_left(&sb, name, "after pm-stopall");
    }
    std::thread::sleep(Duration::from_millis(500));
    for name in ["up", "down"] {
        assert_stopped(&sb, name);
        assert_nothing_left(&sb, name, "500 ms after pm-stopall");
    }
}

// ---------------------------------------------------------------------------------------
// 12. A main process that hands over to a successor its PID file names (a binary upgrade,
//     haproxy -sf) is followed: never a second copy, and pm-stop leaves nothing.

#[test]
fn a_handover_to_a_successor_named_by_the_pid_file_is_followed_not_restarted() {
    let sb = Sandbox::new();
    let pf = sb.path("svc.pid");
    let flag = sb.path("handover");
    let body = format!(
        "#!/bin/sh\necho $$ > {pf}\nwhile :; do\n  if [ -e {flag} ]; then rm -f {flag}; \"$0\" & sleep 0.3; exit 0; fi\n  sleep 0.05\ndone\n",
        pf = s(&pf),
        flag = s(&flag)
    );
    let prog = script(&sb, "handover.sh", &body);
    let out = sb.start(
        "ho",
        &["--restart", "always", "--pidfile", s(&pf), "--", s(&prog)],
    );
    assert_success(&out, "pm-start ho");
    let first = sb.pid("ho").unwrap();
    fs::write(&flag, "").unwrap();
    // The first process ends 0.3 s after its successor wrote the PID file.
    within("the handover is recorded", Duration::from_secs(10), || {
        sb.pid("ho").is_some_and(|p| p != first) && !is_alive(first)
    });
    let successor = sb.pid("ho").unwrap();
    assert_eq!(
        fs::read_to_string(&pf).unwrap().trim(),
        successor.to_string()
    );
    // Give a wrong restart time to happen: there must still be exactly one copy.
    std::thread::sleep(Duration::from_millis(500));
    let copies: Vec<i32> = sb
        .processes()
        .into_iter()
        .filter(|&p| cmdline(p).iter().any(|a| a.contains("handover.sh")))
        .collect();
    assert_eq!(copies, vec![successor], "more than one copy runs");
    let j = json(&sb, "ho");
    assert_eq!(j["state"], "running", "{j}");
    assert_eq!(j["supervised"], true, "{j}");
    assert_eq!(j["last_exit"]["code"], 0, "{j}");
    stop_ok(&sb.stop(&["ho"]));
    assert_nothing_left(&sb, "ho", "after pm-stop");
}

/// A supervised service started from another service's command keeps its monitor when
/// that service is stopped: the monitor is born in pm's own cgroup for monitors, not in
/// its caller's (which pm-stop kills whole), so the helper, killed afterwards, is started
/// again. Without a cgroup the monitor's own session keeps it apart.
#[test]
fn a_monitor_started_by_a_service_outlives_the_stop_of_that_service() {
    let sb = Sandbox::new();
    let start = bin_dir().join("pm-start");
    let script = format!(
        "{} helper --restart always --restart-delay 0 --grace 0 -- sleep 1000; exec sleep 1000",
        s(&start)
    );
    sb.start_sh("outer", &["--grace", "0"], &script);
    within("helper is up", PATIENCE, || {
        field(&sb, "helper", "phase") == "running"
    });
    let rec = sb.rec("helper");
    let monitor = rec["monitor"]["pid"].as_i64().expect("a monitor") as i32;
    let first = rec["pid"].as_i64().expect("a pid") as i32;
    let outer = sb.rec("outer");
    if let Some(cg) = outer["cgroup"].as_str() {
        let listed = fs::read_to_string(Path::new(cg).join("cgroup.procs")).unwrap();
        assert!(
            !listed.lines().any(|l| l == monitor.to_string()),
            "helper's monitor {monitor} is in outer's cgroup {cg}"
        );
    }
    assert_success(&sb.stop(&["outer"]), "pm-stop outer");
    assert!(
        is_alive(monitor),
        "helper's monitor {monitor} went with outer"
    );
    sigkill(first);
    within("helper is started again", PATIENCE, || {
        sb.pid("helper").is_some_and(|p| p != first && is_alive(p))
    });
    let second = sb.pid("helper").unwrap();
    assert_success(&sb.stop(&["helper"]), "pm-stop helper");
    assert_gone(monitor);
    assert_gone(second);
    assert!(sb.processes().is_empty(), "left: {:?}", sb.processes());
}
