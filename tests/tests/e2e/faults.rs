//! Faults at the worst moment (issue 11, "losing track" and "hanging and lying"): pm-start
//! and pm-stop SIGKILLed mid-way, a crashed leader restarted over its leftovers, a dead
//! leader's PID reused by another state directory's service of the same NAME (forced in a
//! PID namespace), a state directory that fills up, a killed `exec:` probe, concurrent
//! starts, and one stop deadline. Each test asserts on the kernel's view (/proc), on exit
//! codes and on what the tools report; only PIDs a test started are ever signalled, and
//! every process a test starts carries its sandbox's `PM_STATE_DIR`, so the `Sandbox`
//! kills whatever is left when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pm_tests::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// helpers

/// Live (non-zombie) descendants of `root`, by parent PID.
fn tree_below(root: i32) -> Vec<i32> {
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in procfs::pids() {
        if let Some(s) = Stat::read(pid) {
            kids.entry(s.ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        for &c in kids.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                queue.push(c);
                if is_alive(c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// What the test knows about a PID, for failure messages.
fn show(pid: i32) -> String {
    format!("pid {pid} {:?} {:?}", cmdline(pid), Stat::read(pid))
}

/// The PIDs in a file, one per line (none while it does not exist or is being written).
fn pids_in(path: &Path) -> Vec<i32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map_while(|l| l.trim().parse().ok())
        .collect()
}

/// Waits until `path` holds `n` PIDs and returns them.
#[track_caller]
fn wait_pids(path: &Path, n: usize) -> Vec<i32> {
    wait_until(&format!("{} names {n} pid(s)", path.display()), || {
        let text = fs::read_to_string(path).unwrap_or_default();
        text.ends_with('\n') && pids_in(path).len() >= n
    });
    pids_in(path)
}

#[track_caller]
fn assert_exit(done: &Done, code: i32, what: &str) {
    assert_eq!(done.code(), Some(code), "{what}: {}", done.describe());
}

/// The record's `phase`, if there is a readable record.
fn phase(sb: &Sandbox, name: &str) -> Option<String> {
    sb.record(name)?["phase"].as_str().map(String::from)
}

/// Waits until the record of NAME says `starting` (pm-start spawned and waits).
#[track_caller]
fn wait_starting(sb: &Sandbox, name: &str) {
    wait_until(&format!("the record of {name} says starting"), || {
        phase(sb, name).as_deref() == Some("starting")
    });
}

/// `pm-status --json NAMES...` as PID -> (NAME, state) for the names that report a PID.
fn reported(sb: &Sandbox, names: &[String]) -> HashMap<i64, (String, String)> {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    sb.status_json(&refs)
        .iter()
        .filter_map(|o| {
            Some((
                o["pid"].as_i64()?,
                (
                    o["name"].as_str().unwrap_or("").to_string(),
                    o["state"].as_str().unwrap_or("").to_string(),
                ),
            ))
        })
        .collect()
}

/// Waits until no process of the sandbox is left (zombies count as gone).
#[track_caller]
fn wait_all_gone(sb: &Sandbox, what: &str) {
    let t = Instant::now();
    loop {
        let left = sb.processes();
        if left.is_empty() {
            return;
        }
        assert!(
            t.elapsed() < PATIENCE,
            "{what}: still running: {:?}",
            left.iter().map(|&p| show(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits at most `limit` until none of `pids` is alive; false if some still are.
fn gone_within(pids: &[i32], limit: Duration) -> bool {
    let t = Instant::now();
    while pids.iter().any(|&p| is_alive(p)) {
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

// ---------------------------------------------------------------------------------------
// 1. SIGKILL of pm-start between spawn and record

#[test]
fn a_pm_start_killed_at_any_moment_never_leaves_a_service_no_tool_sees() {
    let sb = Sandbox::new();
    const N: u64 = 40;
    let names: Vec<String> = (0..N).map(|i| format!("s{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        // Kill delays spread evenly over 0..=20 ms after the spawn (the first few ms are
        // where pm-start spawns the service and records it).
        let delay = Duration::from_micros(i as u64 * 20_000 / (N - 1));
        let mut start = sb.spawn_tool(name, "pm-start", &[name, "--", "sleep", "1000"]);
        let at = start.began() + delay;
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        start.kill_and_reap();
    }

    // Every live process of the sandbox (a service, or a fork of pm-start before its
    // exec) must end up as the PID pm-status reports as running or starting for a name.
    // Once every one of them runs `sleep` (no fork of pm-start is left to change
    // anything), a few seconds without progress settle it.
    let t = Instant::now();
    let mut settled: Option<Instant> = None;
    loop {
        let live = sb.processes();
        let seen = reported(&sb, &names);
        let unseen: Vec<i32> = live
            .into_iter()
            .filter(|&pid| {
                !seen
                    .get(&(pid as i64))
                    .is_some_and(|(_, st)| st == "running" || st == "starting")
            })
            .filter(|&pid| is_alive(pid))
            .collect();
        if unseen.is_empty() {
            break;
        }
        let only_services = unseen.iter().all(|&p| cmdline(p) == ["sleep", "1000"]);
        if !only_services {
            settled = None;
        }
        let since = *settled.get_or_insert_with(Instant::now);
        assert!(
            t.elapsed() < PATIENCE && since.elapsed() < Duration::from_secs(3),
            "processes no tool reports as a running service: {:?}\n\
             pm-status reports (pid -> name, state): {seen:?}",
            unseen.iter().map(|&p| show(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = sb.cmd("pm-stopall").output().expect("run pm-stopall");
    assert_code(&out, 0);
    wait_all_gone(&sb, "after pm-stopall");
}

// ---------------------------------------------------------------------------------------
// 2. SIGKILL of pm-stop after the leader died

#[test]
fn a_stop_killed_after_the_leader_died_is_finished_by_the_next_pm_stop() {
    let sb = Sandbox::new();
    let esc = sb.path("escapee.pid");
    let up = sb.path("up");
    let env_esc = format!("ESC={}", s(&esc));
    let env_up = format!("UP={}", s(&up));
    let ready = format!("file:{}", s(&up));
    // The leader dies on TERM; its child left group and session and ignores TERM.
    let leader = sb.start_sh(
        "esc",
        &[
            "--env",
            &env_esc,
            "--env",
            &env_up,
            "--ready",
            &ready,
            "--stop-timeout",
            "30s",
        ],
        "setsid sh -c 'trap \"\" TERM; echo $$ > \"$ESC\"; while :; do sleep 0.1; done' & \
         while [ ! -s \"$ESC\" ]; do sleep 0.01; done; : > \"$UP\"; exec sleep 1000",
    );
    let escapee = wait_pids(&esc, 1)[0];
    let s = Stat::read(escapee).expect("the escapee runs");
    assert!(
        s.session != leader && s.pgrp != leader,
        "the escapee left group and session: {s:?}"
    );

    let mut first = sb.spawn_tool("stop1", "pm-stop", &["esc"]);
    wait_until("the leader is gone", || !is_alive(leader));
    assert!(
        is_alive(escapee),
        "TERM-ignoring escapee died: {}",
        show(escapee)
    );
    assert!(
        !first.exited(),
        "pm-stop returned while the escapee runs (it has 30 s): {}",
        first.stderr_so_far()
    );
    first.kill_and_reap();
    assert!(
        is_alive(escapee),
        "the escapee must outlive the killed pm-stop"
    );

    let out = sb
        .cmd("pm-stop")
        .args(["--timeout", "1s", "esc"])
        .output()
        .expect("run pm-stop");
    assert_code(&out, 0);
    assert!(
        !is_alive(escapee),
        "the second pm-stop left the escapee of the interrupted stop: {}\n{}",
        show(escapee),
        describe(&out)
    );
    assert_gone(leader);
    wait_all_gone(&sb, "after the second pm-stop");
}

// ---------------------------------------------------------------------------------------
// 3. pm-start NAME over a crashed run

/// Starts `crash`, a shell with one `sleep` worker (in its group, or with `left_session`
/// in a session of its own) whose PID it appends to `workers` (so the restarted run adds a
/// line), SIGKILLs the leader, and restarts NAME from its record. Returns (old leader, old
/// worker, the restart's output).
fn crash_and_restart(sb: &Sandbox, left_session: bool) -> (i32, i32, std::process::Output) {
    let workers = sb.path("workers");
    let env = format!("W={}", s(&workers));
    let worker = if left_session {
        "setsid sleep 1000"
    } else {
        "sleep 1000"
    };
    let leader = sb.start_sh(
        "crash",
        &["--env", &env],
        &format!("{worker} & echo $! >> \"$W\"; wait"),
    );
    let old = wait_pids(&workers, 1)[0];
    if left_session {
        wait_until("the worker leads a session of its own", || {
            Stat::read(old).is_some_and(|s| s.session == old)
        });
    } else {
        let s = Stat::read(old).expect("the worker runs");
        assert_eq!(s.pgrp, leader, "the worker is in the leader's group: {s:?}");
    }
    kill(Pid::from_raw(leader), Signal::SIGKILL).unwrap();
    wait_until("the crashed leader is gone", || !is_alive(leader));
    wait_until("pm-status says dead", || sb.state_of("crash") == "dead");
    assert!(is_alive(old), "the old worker outlives its leader");

    let out = sb.start("crash", &[]);
    (leader, old, out)
}

/// After the restart: the new run runs (with a new worker), the old worker is gone.
#[track_caller]
fn assert_restarted_over_leftovers(
    sb: &Sandbox,
    leader: i32,
    old: i32,
    out: &std::process::Output,
) {
    assert_code(out, 0);
    assert!(
        !is_alive(old),
        "the crashed run's worker runs on after the restart: {}\n{}",
        show(old),
        describe(out)
    );
    assert_eq!(sb.state_of("crash"), "running");
    let new = sb.pid("crash").expect("record has a pid");
    assert!(is_alive(new), "the new leader {new} runs");
    let listed = wait_pids(&sb.path("workers"), 2);
    assert!(is_alive(listed[1]), "the new run's worker runs");
    assert_ne!((new, listed[1]), (leader, old));

    let out = sb.stop(&["crash"]);
    assert_code(&out, 0);
    wait_all_gone(sb, "after pm-stop");
}

#[test]
fn a_start_over_a_crashed_run_stops_the_old_runs_workers_first() {
    let sb = Sandbox::new();
    let (leader, old, out) = crash_and_restart(&sb, false);
    assert_restarted_over_leftovers(&sb, leader, old, &out);
}

/// Without a cgroup, only the dead run's marker (in the environment of everything it
/// started) can find a worker that left the session before its leader crashed.
#[test]
fn a_start_over_a_crashed_run_stops_an_old_worker_that_left_the_session() {
    let sb = Sandbox::new();
    let (leader, old, out) = crash_and_restart(&sb, true);
    assert_restarted_over_leftovers(&sb, leader, old, &out);
}

// ---------------------------------------------------------------------------------------
// 4. The marker identifies one start, not a NAME (PID reuse forced in a PID namespace)

/// Runs as PID 1 of a new PID namespace. State dir A starts `web` (leader P with a worker
/// in its group); A's whole service dies; `ns_last_pid` makes B's `web` (state dir B, same
/// NAME) leader get PID P; B's leader forks a worker in group P and is SIGKILLed. Then
/// `pm-stopall` and `pm-stop web` run for A. Results go to `phase1.json`; once `go`
/// exists, B is stopped and `final.json` is written.
const NS_SCENARIO: &str = r#"
import json, os, signal, subprocess, sys, time
bindir, A, B, D = sys.argv[1:5]

def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return

def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2] not in "ZXx"

def stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    f = st[st.rindex(")") + 2:].split()
    return {"state": f[0], "ppid": int(f[1]), "pgrp": int(f[2]), "session": int(f[3])}

def wait_for(what, cond, limit=30.0):
    t = time.time()
    while not cond():
        reap()
        if time.time() - t > limit:
            raise SystemExit("timed out waiting until " + what)
        time.sleep(0.01)

def pm(tool, sd, *args, pre=None):
    env = dict(os.environ, PM_STATE_DIR=sd)
    r = subprocess.run([os.path.join(bindir, tool)] + list(args), env=env, cwd=D,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=120, preexec_fn=pre)
    return {"code": r.returncode, "stdout": r.stdout, "stderr": r.stderr}

def read_pid(path):
    def ok():
        try:
            with open(path) as f:
                t = f.read()
            return t.endswith("\n")
        except OSError:
            return False
    wait_for(path, ok)
    with open(path) as f:
        return int(f.read().split()[0])

def start(sd, tag, pre=None):
    up = os.path.join(D, tag + ".up")
    w = os.path.join(D, tag + ".worker")
    for f in (up, w):
        if os.path.exists(f):
            os.unlink(f)
    script = 'sleep 1000 & echo $! > "%s"; : > "%s"; wait' % (w, up)
    r = pm("pm-start", sd, "web", "--print-pid", "--ready", "file:" + up,
           "--", "sh", "-c", script, pre=pre)
    if r["code"] != 0:
        raise SystemExit("pm-start %s failed: %r" % (tag, r))
    return int(r["stdout"].split()[0]), read_pid(w)

def kill_gone(*pids):
    for p in pids:
        os.kill(p, signal.SIGKILL)
    wait_for("%s are gone" % (pids,), lambda: not any(alive(p) for p in pids))
    reap()

out = {}
P, aw = start(A, "a")
out["P"], out["a_worker"] = P, aw
out["a_worker_stat"] = stat(aw)
kill_gone(aw, P)
wait_for("pid %d is free" % P, lambda: not os.path.exists("/proc/%d" % P))

# B's web: its pm-start's next fork gets P. pm-start may fork or spawn threads before it
# spawns the service: try a few offsets.
b = None
for k in range(6):
    def pre(k=k):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(P - 1 - k))
    lead, bw = start(B, "b", pre)
    if lead == P:
        b = (lead, bw)
        break
    r = pm("pm-stop", B, "web")
    reap()
    wait_for("B's tries are gone", lambda: not alive(lead) and not alive(bw))
    wait_for("pid %d is free" % P, lambda: not os.path.exists("/proc/%d" % P))
out["b_leader"] = b[0] if b else None
if b:
    lead, bw = b
    out["b_worker"] = bw
    out["b_worker_stat"] = stat(bw)
    with open("/proc/%d/environ" % bw, "rb") as f:
        out["b_worker_env"] = [e.decode(errors="replace") for e in f.read().split(b"\0")
                               if e.startswith(b"PM_")]
    kill_gone(lead)
    out["b_worker_alive_after_leader_died"] = alive(bw)
    out["a_status"] = pm("pm-status", A, "--json", "web")
    out["stopall_a"] = pm("pm-stopall", A)
    reap()
    out["b_worker_alive_after_stopall_a"] = alive(bw)
    out["stop_a"] = pm("pm-stop", A, "web")
    reap()
    out["b_worker_alive_after_stop_a"] = alive(bw)

with open(os.path.join(D, "phase1.json.tmp"), "w") as f:
    json.dump(out, f)
os.rename(os.path.join(D, "phase1.json.tmp"), os.path.join(D, "phase1.json"))
if not b:
    sys.exit(0)
wait_for("the test says go", lambda: os.path.exists(os.path.join(D, "go")), limit=120)
fin = {"stop_b": pm("pm-stop", B, "web")}
reap()
fin["b_worker_alive_after_stop_b"] = alive(b[1])
with open(os.path.join(D, "final.json"), "w") as f:
    json.dump(fin, f)
"#;

/// Host PIDs of live processes whose environment holds `PM_STATE_DIR=<state>` and whose
/// PID in the innermost namespace is `ns_pid`.
fn host_pids_of(state: &Path, ns_pid: i64) -> Vec<i32> {
    let needle = format!("PM_STATE_DIR={}", state.display());
    procfs::pids()
        .into_iter()
        .filter(|&pid| {
            let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let inner = fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("NSpid:"))
                .and_then(|l| l.split_whitespace().last().map(String::from));
            env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
                && inner.as_deref() == Some(ns_pid.to_string().as_str())
                && is_alive(pid)
        })
        .collect()
}

#[test]
fn processes_of_another_state_dirs_service_with_the_same_name_are_never_adopted() {
    if !root_or_skip("a PID namespace to force PID reuse") {
        return;
    }
    if !require("unshare", "util-linux") || !require("python3", "python3") {
        return;
    }
    let a = Sandbox::new();
    let b = Sandbox::new();
    fs::create_dir_all(&b.state).unwrap();
    let prog = script(&a, "ns_scenario.py", NS_SCENARIO);
    let dir = a.dir.path();
    // The namespace's init carries A's PM_STATE_DIR, so Sandbox A kills it on failure;
    // --kill-child takes the whole namespace down with `unshare`.
    let mut ns = Owned(
        a.std_cmd("unshare")
            .stdin(Stdio::null())
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", "python3"])
            .arg(&prog)
            .arg(bin_dir())
            .args([&a.state, &b.state])
            .arg(dir)
            .stdout(fs::File::create(a.path("ns.stdout")).unwrap())
            .stderr(fs::File::create(a.path("ns.stderr")).unwrap())
            .spawn()
            .expect("spawn unshare"),
    );
    let ns_err = || fs::read_to_string(a.path("ns.stderr")).unwrap_or_default();
    let phase1 = a.path("phase1.json");
    wait_until("the namespace scenario reaches its checks", || {
        if phase1.exists() {
            return true;
        }
        if let Ok(Some(st)) = ns.0.try_wait() {
            panic!("the namespace scenario ended early ({st}): {}", ns_err());
        }
        false
    });
    let r: Value = serde_json::from_str(&fs::read_to_string(&phase1).unwrap()).unwrap();
    let ctx = format!("{r:#}");
    assert_eq!(
        r["b_leader"], r["P"],
        "could not make B's leader reuse A's dead leader's PID: {ctx}"
    );
    let pid_p = r["P"].as_i64().unwrap();
    assert_eq!(r["a_worker_stat"]["pgrp"].as_i64(), Some(pid_p), "{ctx}");
    assert_eq!(r["b_worker_stat"]["pgrp"].as_i64(), Some(pid_p), "{ctx}");
    assert!(
        r["b_worker_env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "PM_NAME=web"),
        "{ctx}"
    );
    assert_eq!(r["b_worker_alive_after_leader_died"], true, "{ctx}");
    assert_eq!(r["a_status"]["code"], 1, "A's web is dead: {ctx}");
    assert_eq!(r["stopall_a"]["code"], 0, "pm-stopall for A: {ctx}");
    assert_eq!(
        r["b_worker_alive_after_stopall_a"], true,
        "pm-stopall of state dir A killed B's worker (same NAME, group P): {ctx}"
    );
    assert_eq!(r["stop_a"]["code"], 0, "pm-stop web for A: {ctx}");
    assert_eq!(
        r["b_worker_alive_after_stop_a"], true,
        "pm-stop web of state dir A killed B's worker (same NAME, group P): {ctx}"
    );
    // The kernel's view from outside the namespace agrees.
    let bw = r["b_worker"].as_i64().unwrap();
    assert_eq!(
        host_pids_of(&b.state, bw).len(),
        1,
        "B's worker (pid {bw} in the namespace) is not running: {ctx}"
    );

    fs::write(dir.join("go"), "").unwrap();
    wait_until("the namespace scenario ends", || {
        matches!(ns.0.try_wait(), Ok(Some(_)))
    });
    let st = ns.0.try_wait().unwrap().unwrap();
    assert!(st.success(), "namespace scenario: {st}: {}", ns_err());
    let fin: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("final.json")).unwrap()).unwrap();
    assert_eq!(fin["stop_b"]["code"], 0, "pm-stop web for B: {fin:#}");
    assert_eq!(fin["b_worker_alive_after_stop_b"], false, "{fin:#}");
    wait_all_gone(&a, "A, after the namespace ended");
    wait_all_gone(&b, "B, after the namespace ended");
}

// ---------------------------------------------------------------------------------------
// 5. The record cannot be written after the service became ready

/// A small tmpfs mounted over a sandbox's state dir; on drop, the sandbox's processes are
/// killed first, then it is lazily unmounted.
struct Tmpfs<'a> {
    sb: &'a Sandbox,
    at: PathBuf,
}

impl<'a> Tmpfs<'a> {
    fn mount(sb: &'a Sandbox, size: &str) -> Tmpfs<'a> {
        fs::create_dir_all(&sb.state).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&sb.state)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}: {st}", sb.state.display());
        Tmpfs {
            sb,
            at: sb.state.clone(),
        }
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        self.sb.kill_all();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}

/// Writes into `path` until the file system says ENOSPC.
fn fill(path: &Path) {
    let mut f = fs::File::create(path).unwrap();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                if chunk.len() == 1 {
                    break;
                }
                chunk.truncate(chunk.len() / 2);
            }
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

#[test]
fn a_record_that_cannot_be_written_after_ready_fails_the_start_and_stops_the_service() {
    if !root_or_skip("mounts a tmpfs") {
        return;
    }
    let sb = Sandbox::new();
    let _mounted = Tmpfs::mount(&sb, "256k");
    let go = sb.path("go");
    let log = sb.path("x.log");
    let ready = format!("file:{}", s(&go));
    let start = sb.spawn_tool(
        "start",
        "pm-start",
        &[
            "x",
            "--log",
            s(&log),
            "--ready",
            &ready,
            "--",
            "sleep",
            "1000",
        ],
    );
    wait_starting(&sb, "x");
    let pid = sb.pid("x").expect("the starting record has a pid");
    assert!(is_alive(pid), "the service runs while pm-start waits");
    fill(&sb.state.join("filler"));
    fs::write(&go, "").unwrap();

    let done = start.finish(PATIENCE);
    assert_exit(&done, 1, "pm-start whose record cannot be written");
    assert!(
        done.stderr.contains("No space"),
        "the error names the OS error: {}",
        done.describe()
    );
    assert!(
        done.stderr.contains("x.json") || done.stderr.contains("record"),
        "the error names the record: {}",
        done.describe()
    );
    assert!(
        !is_alive(pid),
        "pm-start exited 1 but the service runs on: {}\n{}",
        show(pid),
        done.describe()
    );
    let left = sb.processes();
    assert!(
        left.is_empty(),
        "processes of the failed start still run: {:?}",
        left.iter().map(|&p| show(p)).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// 6. A killed pm-start and its exec: probe

#[test]
fn a_killed_pm_start_leaves_no_exec_probe_running() {
    let sb = Sandbox::new();
    let mut start = sb.spawn_tool(
        "start",
        "pm-start",
        &[
            "x",
            "--ready",
            "exec:sleep 300",
            "--ready-timeout",
            "60s",
            "--",
            "sleep",
            "1000",
        ],
    );
    let starter = start.pid();
    let mut service = 0;
    let mut probes: Vec<i32> = Vec::new();
    wait_until("pm-start runs its exec: probe", || {
        let Some(svc) = sb.pid("x") else { return false };
        service = svc;
        let svc_tree: HashSet<i32> = tree_below(svc).into_iter().chain([svc]).collect();
        probes = tree_below(starter)
            .into_iter()
            .filter(|p| !svc_tree.contains(p))
            .collect();
        probes.iter().any(|&p| cmdline(p) == ["sleep", "300"])
    });
    assert!(is_alive(service), "the service runs while pm-start waits");

    start.kill_and_reap();
    assert!(
        gone_within(&probes, Duration::from_secs(5)),
        "the killed pm-start's probe runs on: {:?}",
        probes
            .iter()
            .filter(|&&p| is_alive(p))
            .map(|&p| show(p))
            .collect::<Vec<_>>()
    );

    let out = sb.stop(&["x"]);
    assert_code(&out, 0);
    assert_gone(service);
    wait_all_gone(&sb, "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 7. A concurrent pm-start of a starting NAME

/// The live `sleep 1000`s of the sandbox.
fn sleeps_1000(sb: &Sandbox) -> Vec<i32> {
    sb.processes()
        .into_iter()
        .filter(|&p| cmdline(p) == ["sleep", "1000"])
        .collect()
}

/// `pm-start x --ready file:GO --ready-timeout TIMEOUT -- sleep 1000` twice: the first
/// waits for readiness, and the second must still be waiting 700 ms after it began.
/// Returns GO (not yet created) and both.
fn concurrent_starts(sb: &Sandbox, ready_timeout: &str) -> (PathBuf, Bg, Bg) {
    let go = sb.path("go");
    let ready = format!("file:{}", s(&go));
    let args = [
        "x",
        "--ready",
        &ready,
        "--ready-timeout",
        ready_timeout,
        "--",
        "sleep",
        "1000",
    ];
    let first = sb.spawn_tool("a", "pm-start", &args);
    wait_starting(sb, "x");
    let mut second = sb.spawn_tool("b", "pm-start", &args);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !second.exited(),
        "the second pm-start returned while the first still waits for readiness: {}",
        second.stderr_so_far()
    );
    (go, first, second)
}

#[test]
fn a_concurrent_start_waits_for_the_first_start_to_succeed() {
    let sb = Sandbox::new();
    let (go, first, second) = concurrent_starts(&sb, "30s");
    fs::write(&go, "").unwrap();

    let a = first.finish(PATIENCE);
    let b = second.finish(PATIENCE);
    assert_exit(&a, 0, "first pm-start");
    assert_exit(&b, 0, "second pm-start");
    let running = sleeps_1000(&sb);
    assert_eq!(running.len(), 1, "exactly one service: {running:?}");
    assert_eq!(Some(running[0]), sb.pid("x"), "the recorded one");
    assert_eq!(sb.state_of("x"), "running");

    let out = sb.stop(&["x"]);
    assert_code(&out, 0);
    wait_all_gone(&sb, "after pm-stop");
}

#[test]
fn a_concurrent_start_waits_for_the_first_start_to_fail_and_reports_it() {
    let sb = Sandbox::new();
    let (_go, first, second) = concurrent_starts(&sb, "2s");

    let a = first.finish(PATIENCE);
    assert_exit(&a, 1, "first pm-start, never ready");
    assert!(
        a.took >= Duration::from_millis(1800) && a.took < Duration::from_secs(10),
        "the first start gives up after its 2 s: {}",
        a.describe()
    );
    let b = second.finish(PATIENCE);
    assert_exit(
        &b,
        1,
        "second pm-start, waiting for the first one's failure",
    );
    assert!(
        b.took >= Duration::from_millis(700) && b.took < Duration::from_secs(10),
        "{}",
        b.describe()
    );
    assert!(
        b.stderr.contains("x:") && b.stderr.to_lowercase().contains("fail"),
        "the second pm-start reports the failure: {}",
        b.describe()
    );
    let left = sb.processes();
    assert!(
        left.is_empty(),
        "nothing runs after both starts failed: {:?}",
        left.iter().map(|&p| show(p)).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// 8. One deadline per stop

#[test]
fn stop_timeout_is_one_deadline_for_the_group_and_the_sweep() {
    let sb = Sandbox::new();
    let esc = sb.path("escapee.pid");
    let up = sb.path("up");
    let env_esc = format!("ESC={}", s(&esc));
    let env_up = format!("UP={}", s(&up));
    let ready = format!("file:{}", s(&up));
    let stubborn = sb.path("stubborn.pid");
    let env_stubborn = format!("STUBBORN={}", s(&stubborn));
    // The leader dies on TERM; one child stays in its group and ignores TERM (so the group
    // takes the whole timeout), another left group and session and ignores TERM too.
    let leader = sb.start_sh(
        "leaky",
        &[
            "--env",
            &env_esc,
            "--env",
            &env_stubborn,
            "--env",
            &env_up,
            "--ready",
            &ready,
        ],
        "sh -c 'trap \"\" TERM; echo $$ > \"$STUBBORN\"; while :; do sleep 0.1; done' & \
         setsid sh -c 'trap \"\" TERM; echo $$ > \"$ESC\"; while :; do sleep 0.1; done' & \
         while [ ! -s \"$ESC\" ] || [ ! -s \"$STUBBORN\" ]; do sleep 0.01; done; \
         : > \"$UP\"; wait",
    );
    let escapee = wait_pids(&esc, 1)[0];
    let in_group = wait_pids(&stubborn, 1)[0];
    let s = Stat::read(escapee).expect("the escapee runs");
    assert!(s.session != leader, "the escapee left the session: {s:?}");
    let s = Stat::read(in_group).expect("the stubborn group member runs");
    assert_eq!(s.pgrp, leader, "the stubborn child is in the group: {s:?}");

    let t = Instant::now();
    let out = sb
        .cmd("pm-stop")
        .args(["--timeout", "2s", "leaky"])
        .output()
        .expect("run pm-stop");
    let took = t.elapsed();
    assert_code(&out, 0);
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(3300),
        "--timeout 2s must bound the whole stop (TERM to all, SIGKILL at 2 s), took {took:?}: {}",
        describe(&out)
    );
    assert_gone(leader);
    assert_gone(in_group);
    assert_gone(escapee);
    wait_all_gone(&sb, "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// Review findings: a full state dir during pm-stop, one deadline for a failed start's
// clean-up

#[test]
fn a_full_state_dir_does_not_keep_pm_stop_from_stopping_the_service() {
    if !root_or_skip("mounts a tmpfs") {
        return;
    }
    let sb = Sandbox::new();
    let _mounted = Tmpfs::mount(&sb, "256k");
    let leader = sb.start_sh("svc", &[], "setsid sleep 1000 & exec sleep 1000");
    let mut both = Vec::new();
    wait_until("the leader and its setsid child both run", || {
        both = sleeps_1000(&sb);
        both.len() == 2
    });
    assert!(both.contains(&leader), "{both:?}");
    let child = *both.iter().find(|&&p| p != leader).unwrap();
    let s = Stat::read(child).expect("the child runs");
    assert!(
        s.session == child && s.ppid == leader,
        "the child leads its own session under the leader: {}",
        show(child)
    );
    fill(&sb.state.join("filler"));

    let out = sb
        .cmd("pm-stop")
        .arg("svc")
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run pm-stop");
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "pm-stop on a full state dir: {}",
        describe(&out)
    );
    assert!(
        !is_alive(leader) && !is_alive(child),
        "pm-stop on a full state dir left the service running: {} / {}\n{}",
        show(leader),
        show(child),
        describe(&out)
    );
    wait_all_gone(&sb, "after pm-stop on a full state dir");
}

#[test]
fn a_failed_starts_clean_up_is_one_deadline_for_every_daemon() {
    let sb = Sandbox::new();
    let loops = sb.path("loops.pid");
    let env = format!("L={}", s(&loops));
    let never = sb.path("never");
    let ready = format!("file:{}", s(&never));
    // The leader stays; three TERM-ignoring loops double-fork into sessions of their own
    // and are re-parented to pm-start (a child subreaper).
    let script = "for i in 1 2 3; do \
                    ( setsid sh -c 'trap \"\" TERM; echo $$ >> \"$L\"; \
                      while :; do sleep 0.1; done' & ); \
                  done; exec sleep 1000";
    let mut start = sb.spawn_tool(
        "start",
        "pm-start",
        &[
            "x",
            "--env",
            &env,
            "--ready",
            &ready,
            "--ready-timeout",
            "1s",
            "--stop-timeout",
            "2s",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let daemons = wait_pids(&loops, 3);
    let starter = start.pid();
    for &d in &daemons {
        wait_until("a loop is re-parented to pm-start", || {
            Stat::read(d).is_some_and(|s| s.ppid == starter && s.session == d) || start.exited()
        });
    }

    let done = start.finish(PATIENCE);
    assert_exit(&done, 1, "pm-start, never ready");
    assert!(
        done.took >= Duration::from_millis(2500) && done.took < Duration::from_millis(5500),
        "1 s ready timeout + one 2 s stop deadline for the leader and all three loops: {}",
        done.describe()
    );
    assert!(
        gone_within(&daemons, Duration::from_secs(2)),
        "loops of the failed start survive: {:?}",
        daemons
            .iter()
            .filter(|&&p| is_alive(p))
            .map(|&p| show(p))
            .collect::<Vec<_>>()
    );
    wait_all_gone(&sb, "after the failed start");
}
