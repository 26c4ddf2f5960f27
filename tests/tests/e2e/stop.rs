//! End-to-end tests of pm-stop and pm-stopall with real processes.
//!
//! Every service records, in a file of its own, which signal it received and when; the
//! tests assert on those records, on the process table, and on what the tools print and
//! return. Nothing here kills by name: only PIDs a test started are ever touched, and the
//! Sandbox kills whatever is left when a test ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pm_tests::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Helpers

/// `ARGV` as a std command with the sandbox's clean environment, stdio on /dev/null.
fn std_cmd(sb: &Sandbox, argv: &[&str]) -> std::process::Command {
    let mut c = sb.std_cmd(argv[0]);
    c.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Lines of a file (none if it does not exist).
fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// The single stderr line about NAME, asserting there is exactly one.
#[track_caller]
fn line_for(out: &Output, tool: &str, name: &str) -> String {
    let prefix = format!("{tool}: {name}: ");
    let found: Vec<String> = stderr_lines(out)
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one line for {name}: {}",
        describe(out)
    );
    found[0].clone()
}

/// Asserts a "stopped" line says what was sent, whether it escalated and how long it took.
#[track_caller]
fn assert_stopped_line(line: &str, sig: &str, escalated: bool) {
    assert!(
        line.contains(&format!("stopped by SIG{sig}")),
        "line does not say SIG{sig} was sent: {line}"
    );
    assert_eq!(
        line.contains("escalated to SIGKILL"),
        escalated,
        "escalation not reported as {escalated}: {line}"
    );
    let took = line
        .split(" in ")
        .nth(1)
        .unwrap_or_else(|| panic!("no duration in: {line}"));
    assert!(
        took.starts_with(|c: char| c.is_ascii_digit())
            && (took.contains("ms") || took.contains('s')),
        "no duration in: {line}"
    );
}

/// A shell service that appends `got SIG` to `$OUT` for each signal in `sigs` and exits,
/// and says it is set up by creating `$UP`. Its group: the shell and one `sleep`, which
/// the trap kills with SIGKILL (a background job ignores QUIT, and a signal that reaches
/// it between fork and exec is lost in the shell's own handler).
fn trapper(sigs: &[&str]) -> String {
    let mut s = String::new();
    for sig in sigs {
        s.push_str(&format!(
            "trap 'echo got {sig} >> \"$OUT\"; kill -KILL $! 2>/dev/null; exit 0' {sig}; "
        ));
    }
    s.push_str("sleep 1000 & : > \"$UP\"; wait");
    s
}

/// Starts a [`trapper`] through pm-start and returns (pid, signal log).
fn start_trapper(sb: &Sandbox, name: &str, extra: &[&str], sigs: &[&str]) -> (i32, PathBuf) {
    let out = sb.path(&format!("{name}.signals"));
    let up = sb.path(&format!("{name}.up"));
    let env_out = format!("OUT={}", s(&out));
    let env_up = format!("UP={}", s(&up));
    let ready = format!("file:{}", s(&up));
    let mut opts = vec!["--env", &env_out, "--env", &env_up, "--ready", &ready];
    opts.extend_from_slice(extra);
    let pid = sb.start_sh(name, &opts, &trapper(sigs));
    (pid, out)
}

/// A shell service that ignores SIGTERM (and so does its `sleep`).
fn start_stubborn(sb: &Sandbox, name: &str, extra: &[&str]) -> i32 {
    let up = sb.path(&format!("{name}.up"));
    let env_up = format!("UP={}", s(&up));
    let ready = format!("file:{}", s(&up));
    let mut opts = vec!["--env", &env_up, "--ready", &ready];
    opts.extend_from_slice(extra);
    let pid = sb.start_sh(name, &opts, "trap '' TERM; sleep 1000 & : > \"$UP\"; wait");
    wait_until("the stubborn service's sleep runs", || {
        group_members(pid).len() >= 2
    });
    pid
}

/// A Python service for pm-stopall: on TERM, QUIT or USR1 it appends
/// `NAME SIGNAL UNIXTIME` to a shared file and exits. Modes: `exit` (at once), `ignore`
/// (ignores all three), `pair` (after writing, waits until the file has two lines, so it
/// can only exit if another service is being stopped at the same time).
const PY_SERVICE: &str = r#"
import os, signal, sys, time
name, out, ready, mode = sys.argv[1:5]
def handler(sig, frame):
    with open(out, "a") as f:
        f.write("%s %s %.9f\n" % (name, signal.Signals(sig).name, time.time()))
    if mode == "pair":
        while len(open(out).read().splitlines()) < 2:
            time.sleep(0.01)
    os._exit(0)
for s in (signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1):
    signal.signal(s, signal.SIG_IGN if mode == "ignore" else handler)
open(ready, "w").close()
while True:
    signal.pause()
"#;

fn start_py(sb: &Sandbox, name: &str, shared: &Path, mode: &str, extra: &[&str]) -> i32 {
    let prog = script(sb, "service.py", PY_SERVICE);
    let up = sb.path(&format!("{name}.up"));
    let ready = format!("file:{}", s(&up));
    let mut args: Vec<&str> = vec!["--ready", &ready];
    args.extend_from_slice(extra);
    args.extend(["--", "python3", s(&prog), name, s(shared), s(&up), mode]);
    let out = sb.start(name, &args);
    assert_success(&out, "pm-start");
    sb.pid(name).expect("record has a pid")
}

/// A self-daemonizing service: the launcher forks and exits 0; the daemon calls setsid
/// (mode `single`: it leads its own session; `double`: it forks once more, like a classic
/// daemon), optionally forks a worker, writes its PID file (atomically), and on TERM or
/// QUIT appends `got SIG` to OUT and exits. With REWRITE != 0 its TERM handler first
/// rewrites the PID file to name REWRITE (as a restarted daemon would).
const PY_DAEMON: &str = r#"
import os, signal, sys
pidfile, out, mode, worker, rewrite = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
if os.fork() > 0:
    os._exit(0)
os.setsid()
if mode == "double" and os.fork() > 0:
    os._exit(0)
if worker and os.fork() == 0:
    while True:
        signal.pause()
def handler(sig, frame):
    if rewrite:
        with open(pidfile + ".new", "w") as f:
            f.write("%d\n" % rewrite)
        os.rename(pidfile + ".new", pidfile)
    with open(out, "a") as f:
        f.write("got %s\n" % signal.Signals(sig).name)
    os._exit(0)
signal.signal(signal.SIGTERM, handler)
signal.signal(signal.SIGQUIT, handler)
with open(pidfile + ".tmp", "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(pidfile + ".tmp", pidfile)
while True:
    signal.pause()
"#;

fn daemon_script(sb: &Sandbox) -> PathBuf {
    script(sb, "daemon.py", PY_DAEMON)
}

/// Runs the daemon outside pm, as an init script would, and returns the daemon's PID.
fn run_daemon_myself(sb: &Sandbox, pidfile: &Path, out: &Path, mode: &str) -> i32 {
    let prog = daemon_script(sb);
    let status = std_cmd(
        sb,
        &["python3", s(&prog), s(pidfile), s(out), mode, "0", "0"],
    )
    .status()
    .expect("run the daemon's launcher");
    assert!(status.success(), "launcher failed: {status:?}");
    let mut pid = 0;
    wait_until("the daemon writes its PID file", || {
        pid = fs::read_to_string(pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        pid > 0 && is_alive(pid)
    });
    pid
}

/// Sets a file's mtime `secs` seconds into the past.
fn age(path: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

/// Every process of a service right now: its group/session and its descendants.
fn tree(pid: i32) -> Vec<i32> {
    let mut all = group_members(pid);
    for d in descendants(pid) {
        if !all.contains(&d) {
            all.push(d);
        }
    }
    if is_alive(pid) && !all.contains(&pid) {
        all.push(pid);
    }
    all
}

// ---------------------------------------------------------------------------------------
// pm-stop: graceful stop of whole groups and trees

#[test]
fn term_stops_the_whole_group_of_a_shell_with_workers() {
    let sb = Sandbox::new();
    let pid = sb.start_sh("web", &[], "sleep 1000 & sleep 1000 & wait");
    wait_until("both workers run", || group_members(pid).len() >= 3);
    let before = tree(pid);
    assert!(before.len() >= 3, "{before:?}");
    let pidfile = sb.state.join("web.pid");
    assert!(pidfile.exists(), "pm writes STATE/web.pid");

    let out = sb.stop(&["web"]);
    assert_code(&out, 0);
    assert_eq!(stderr_lines(&out).len(), 1, "{}", describe(&out));
    assert_stopped_line(&line_for(&out, "pm-stop", "web"), "TERM", false);
    for p in &before {
        assert_gone(*p);
    }
    assert!(group_members(pid).is_empty());

    // The PID file named what was stopped: removed. The record keeps the outcome.
    assert!(!pidfile.exists(), "PID file left behind");
    let rec = sb.rec("web");
    assert_eq!(rec["phase"], "stopped");
    let last = &rec["last_stop"];
    assert_eq!(last["signal"], "TERM", "{rec}");
    assert_eq!(last["escalated"], false);
    assert_eq!(last["result"], "stopped");
    assert_eq!(last["by"], "pm-stop");
    assert!(!last["at"].as_str().unwrap_or("").is_empty(), "{rec}");
    let st = &sb.status_json(&["web"])[0];
    assert_eq!(st["state"], "stopped", "{st}");
    assert_eq!(st["last_stop"]["signal"], "TERM", "{st}");
}

const PY_MASTER: &str = r#"
import os, signal, sys
out, ready = sys.argv[1], sys.argv[2]
r, w = os.pipe()
kids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setpgid(0, 0)  # a worker in a process group of its own: killpg cannot reach it
        def worker(sig, frame):
            with open(out, "a") as f:
                f.write("worker %d got %s\n" % (os.getpid(), signal.Signals(sig).name))
            os._exit(0)
        signal.signal(signal.SIGTERM, worker)
        os.write(w, b"x")
        while True:
            signal.pause()
    kids.append(pid)
os.close(w)
got = b""
while len(got) < 2:
    got += os.read(r, 2)
def master(sig, frame):
    for k in kids:
        os.kill(k, sig)
    for k in kids:
        os.waitpid(k, 0)
    with open(out, "a") as f:
        f.write("master got %s\n" % signal.Signals(sig).name)
    os._exit(0)
signal.signal(signal.SIGTERM, master)
open(ready, "w").close()
while True:
    signal.pause()
"#;

#[test]
fn master_worker_tree_is_stopped_gracefully_and_completely() {
    let sb = Sandbox::new();
    let prog = script(&sb, "master.py", PY_MASTER);
    let out = sb.path("tree.signals");
    let up = sb.path("tree.up");
    let ready = format!("file:{}", s(&up));
    let o = sb.start(
        "fpm",
        &[
            "--ready",
            &ready,
            "--",
            "python3",
            s(&prog),
            s(&out),
            s(&up),
        ],
    );
    assert_success(&o, "pm-start");
    let pid = sb.pid("fpm").unwrap();
    let workers = descendants(pid);
    assert_eq!(workers.len(), 2, "two workers: {workers:?}");
    for w in &workers {
        let s = stat(*w);
        assert_ne!(s.pgrp, pid, "worker {w} should have left the group");
    }

    let o = sb.stop(&["fpm"]);
    assert_code(&o, 0);
    assert_stopped_line(&line_for(&o, "pm-stop", "fpm"), "TERM", false);
    assert_gone(pid);
    for w in &workers {
        assert_gone(*w);
    }
    // Graceful: the master forwarded TERM and each worker handled it; nothing was killed.
    let got = lines(&out);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got.iter().filter(|l| l.ends_with("got SIGTERM")).count(), 3);
    assert_eq!(got.last().unwrap(), "master got SIGTERM");
}

#[test]
fn a_child_that_left_the_session_is_swept() {
    let sb = Sandbox::new();
    let esc = sb.path("escapee.pid");
    let env = format!("ESC={}", s(&esc));
    let pid = sb.start_sh(
        "leaky",
        &["--env", &env],
        "setsid sh -c 'echo $$ > \"$ESC\"; trap \"exit 0\" TERM; \
         while :; do sleep 0.05; done' & wait",
    );
    let mut escapee = 0;
    wait_until("the escapee says its pid", || {
        escapee = fs::read_to_string(&esc)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        escapee > 0
    });
    let s = stat(escapee);
    assert_ne!(s.session, pid, "the escapee is in a session of its own");
    assert_ne!(s.pgrp, pid);

    let out = sb.stop(&["leaky"]);
    assert_code(&out, 0);
    let line = line_for(&out, "pm-stop", "leaky");
    assert_stopped_line(&line, "TERM", false);
    assert!(
        line.contains("outside the group") || line.contains("in its cgroup"),
        "{line}"
    );
    assert_gone(pid);
    assert_gone(escapee);
}

#[test]
fn orphaned_group_member_is_stopped_after_its_leader_exited() {
    let sb = Sandbox::new();
    let kid_file = sb.path("kid.pid");
    let go = sb.path("go");
    let env_kid = format!("KID={}", s(&kid_file));
    let env_go = format!("GO={}", s(&go));
    let pid = sb.start_sh(
        "orph",
        &["--env", &env_kid, "--env", &env_go],
        "sleep 1000 & echo $! > \"$KID\"; \
         while [ ! -e \"$GO\" ]; do sleep 0.02; done; exit 0",
    );
    let mut kid = 0;
    wait_until("the child's pid is written", || {
        kid = fs::read_to_string(&kid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        kid > 0
    });
    fs::write(&go, "").unwrap();
    wait_until("the leader exits", || !is_alive(pid));
    assert!(is_alive(kid), "the orphan keeps running");
    assert_eq!(stat(kid).pgrp, pid);

    let out = sb.stop(&["orph"]);
    assert_code(&out, 0);
    assert_stopped_line(&line_for(&out, "pm-stop", "orph"), "TERM", false);
    assert_gone(kid);
}

// ---------------------------------------------------------------------------------------
// pm-stop: signals, timeout, escalation

#[test]
fn recorded_stop_signal_is_used_and_signal_overrides_it() {
    let sb = Sandbox::new();
    let (pid, out) = start_trapper(
        &sb,
        "q",
        &["--stop-signal", "QUIT"],
        &["QUIT", "TERM", "USR1"],
    );
    let o = sb.stop(&["q"]);
    assert_code(&o, 0);
    assert_stopped_line(&line_for(&o, "pm-stop", "q"), "QUIT", false);
    assert_eq!(lines(&out), vec!["got QUIT"]);
    assert_gone(pid);
    assert_eq!(sb.rec("q")["last_stop"]["signal"], "QUIT");

    // Start it again from its record (still QUIT), stop it with --signal USR1.
    fs::remove_file(&out).unwrap();
    fs::remove_file(sb.path("q.up")).unwrap();
    assert_success(&sb.start("q", &[]), "pm-start from record");
    let pid = sb.pid("q").unwrap();
    assert_eq!(sb.rec("q")["stop_signal"], "QUIT");
    let o = sb.stop(&["--signal", "USR1", "q"]);
    assert_code(&o, 0);
    assert_stopped_line(&line_for(&o, "pm-stop", "q"), "USR1", false);
    assert_eq!(lines(&out), vec!["got USR1"]);
    assert_gone(pid);
    assert_eq!(sb.rec("q")["last_stop"]["signal"], "USR1");
}

#[test]
fn stop_signal_works_even_if_pm_start_ran_with_it_ignored() {
    // A background job of a script starts with INT and QUIT ignored; the service must not
    // inherit that, or its recorded stop signal would do nothing.
    let sb = Sandbox::new();
    let out = sb.path("q.signals");
    let up = sb.path("q.up");
    let env_out = format!("OUT={}", s(&out));
    let env_up = format!("UP={}", s(&up));
    let ready = format!("file:{}", s(&up));
    let pm_start = bin_dir().join("pm-start");
    let script = trapper(&["QUIT", "INT"]);
    let o = std_cmd(
        &sb,
        &[
            "sh",
            "-c",
            "trap '' INT QUIT; exec \"$@\"",
            "sh",
            s(&pm_start),
            "q",
            "--stop-signal",
            "QUIT",
            "--env",
            &env_out,
            "--env",
            &env_up,
            "--ready",
            &ready,
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    assert_success(&o, "pm-start with INT and QUIT ignored");
    let pid = sb.pid("q").unwrap();
    let o = sb.stop(&["--timeout", "20s", "q"]);
    assert_code(&o, 0);
    assert_stopped_line(&line_for(&o, "pm-stop", "q"), "QUIT", false);
    assert_eq!(lines(&out), vec!["got QUIT"]);
    assert_gone(pid);
}

#[test]
fn term_ignoring_service_escalates_to_sigkill_after_the_timeout() {
    let sb = Sandbox::new();
    let pid = start_stubborn(&sb, "stubborn", &[]);
    let before = tree(pid);
    let t = Instant::now();
    let out = sb.stop(&["--timeout", "500ms", "stubborn"]);
    let took = t.elapsed();
    assert_code(&out, 0);
    assert_stopped_line(&line_for(&out, "pm-stop", "stubborn"), "TERM", true);
    assert!(
        took >= Duration::from_millis(500),
        "escalated before the timeout: {took:?}"
    );
    // Generous (2 cores, tests in parallel), but well before the 10s default.
    assert!(
        took < Duration::from_secs(5),
        "the 500ms --timeout was not used: {took:?}"
    );
    for p in before {
        assert_gone(p);
    }
    let rec = sb.rec("stubborn");
    assert_eq!(rec["last_stop"]["escalated"], true, "{rec}");
    assert_eq!(rec["phase"], "stopped");
}

#[test]
fn recorded_stop_timeout_is_used() {
    let sb = Sandbox::new();
    let pid = start_stubborn(&sb, "slowpoke", &["--stop-timeout", "1s"]);
    let before = tree(pid);
    assert_eq!(sb.rec("slowpoke")["stop_timeout_ms"], 1000);
    let t = Instant::now();
    let out = sb.stop(&["slowpoke"]);
    let took = t.elapsed();
    assert_code(&out, 0);
    assert_stopped_line(&line_for(&out, "pm-stop", "slowpoke"), "TERM", true);
    // Escalated after the recorded 1s, and well before the 10s default (generous: 2
    // cores, tests in parallel).
    assert!(
        took >= Duration::from_secs(1),
        "escalated before the recorded timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the recorded 1s stop timeout was not used: {took:?}"
    );
    for p in before {
        assert_gone(p);
    }
    assert_eq!(sb.rec("slowpoke")["last_stop"]["escalated"], true);
}

#[test]
fn no_kill_does_not_escalate_and_exits_1() {
    let sb = Sandbox::new();
    let pid = start_stubborn(&sb, "stubborn", &[]);
    let t = Instant::now();
    let out = sb.stop(&["--no-kill", "--timeout", "300ms", "stubborn"]);
    let took = t.elapsed();
    assert_code(&out, 1);
    // Gave up after the 300ms timeout, well before the 10s default.
    assert!(
        took >= Duration::from_millis(300),
        "gave up before the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the 300ms --timeout was not used: {took:?}"
    );
    let line = line_for(&out, "pm-stop", "stubborn");
    assert!(line.contains("could not stop"), "{line}");
    assert!(!line.contains("SIGKILL"), "{line}");
    assert!(
        line.contains(&pid.to_string()),
        "names the PID left: {line}"
    );
    assert!(is_alive(pid), "--no-kill must leave it running");
    let rec = sb.rec("stubborn");
    assert_eq!(rec["last_stop"]["result"], "failed", "{rec}");
    assert_eq!(rec["last_stop"]["escalated"], false, "{rec}");
    assert_eq!(sb.state_of("stubborn"), "running");
    assert!(
        sb.state.join("stubborn.pid").exists(),
        "PID file of a running service removed"
    );

    // Clean up the way a user would: without --no-kill.
    let out = sb.stop(&["--timeout", "300ms", "stubborn"]);
    assert_code(&out, 0);
    assert_stopped_line(&line_for(&out, "pm-stop", "stubborn"), "TERM", true);
    assert_gone(pid);
}

// ---------------------------------------------------------------------------------------
// pm-stop: exit codes and messages

#[test]
fn unknown_name_exits_4_after_stopping_the_others() {
    let sb = Sandbox::new();
    let (a, a_out) = start_trapper(&sb, "a", &[], &["TERM"]);
    let (b, b_out) = start_trapper(&sb, "b", &[], &["TERM"]);
    let out = sb.stop(&["a", "nosuch", "b"]);
    assert_code(&out, 4);
    let l = stderr_lines(&out);
    assert_eq!(l.len(), 3, "one line per NAME: {}", describe(&out));
    assert!(l[0].starts_with("pm-stop: a: "), "{l:?}");
    assert!(l[1].starts_with("pm-stop: nosuch: "), "{l:?}");
    assert!(l[2].starts_with("pm-stop: b: "), "{l:?}");
    assert_stopped_line(&l[0], "TERM", false);
    assert!(l[1].contains("unknown"), "{l:?}");
    assert_stopped_line(&l[2], "TERM", false);
    assert_gone(a);
    assert_gone(b);
    assert_eq!(lines(&a_out), vec!["got TERM"]);
    assert_eq!(lines(&b_out), vec!["got TERM"]);
}

#[test]
fn already_stopped_is_success_and_signals_nothing() {
    let sb = Sandbox::new();
    let (pid, out) = start_trapper(&sb, "svc", &[], &["TERM"]);
    assert_code(&sb.stop(&["svc"]), 0);
    assert_gone(pid);
    let last = sb.rec("svc")["last_stop"].clone();

    // Processes born after the service must never be taken for its remains.
    let bystander = sb.own(&["sleep", "1000"]);
    let o = sb.stop(&["svc"]);
    assert_code(&o, 0);
    let line = line_for(&o, "pm-stop", "svc");
    assert!(line.contains("not running"), "{line}");
    assert!(
        is_alive(bystander.pid()),
        "an unrelated process was signalled"
    );
    assert_eq!(lines(&out), vec!["got TERM"], "signalled twice");
    assert_eq!(sb.state_of("svc"), "stopped");
    // The first stop's outcome is what pm-status keeps showing as signal and escalation.
    let now = sb.rec("svc")["last_stop"].clone();
    assert_eq!(now["signal"], last["signal"], "{now}");
}

#[test]
fn dead_service_is_success_and_its_stale_pid_file_goes() {
    let sb = Sandbox::new();
    let go = sb.path("go");
    let env = format!("GO={}", s(&go));
    let pid = sb.start_sh(
        "crash",
        &["--env", &env],
        "while [ ! -e \"$GO\" ]; do sleep 0.02; done; exit 3",
    );
    fs::write(&go, "").unwrap();
    wait_until("the service exits on its own", || !is_alive(pid));
    assert_eq!(sb.state_of("crash"), "dead");
    let bystander = sb.own(&["sleep", "1000"]);

    let out = sb.stop(&["crash"]);
    assert_code(&out, 0);
    assert!(
        line_for(&out, "pm-stop", "crash").contains("not running"),
        "{}",
        describe(&out)
    );
    assert!(is_alive(bystander.pid()));
    assert!(!sb.state.join("crash.pid").exists(), "stale PID file kept");
    assert_eq!(sb.state_of("crash"), "stopped");
}

// ---------------------------------------------------------------------------------------
// pm-stop: never the wrong process

#[test]
fn pid_file_naming_a_process_born_after_it_is_never_signalled() {
    let sb = Sandbox::new();
    let victim = sb.own(&["sleep", "1000"]);
    let pidfile = sb.path("ghost.pid");
    fs::write(&pidfile, format!("{}\n", victim.pid())).unwrap();
    // As if the file had been written a minute before this sleep was born.
    age(&pidfile, 60);

    let out = sb.stop(&["--pidfile", s(&pidfile), "ghost"]);
    assert_code(&out, 0);
    let line = line_for(&out, "pm-stop", "ghost");
    assert!(line.contains("not running"), "{line}");
    assert!(line.contains("stale"), "reports the stale PID file: {line}");
    assert!(is_alive(victim.pid()), "a reused PID was signalled");
    assert!(!pidfile.exists(), "stale PID file kept");
}

#[test]
fn crashed_daemon_whose_pid_was_reused_is_not_signalled() {
    let sb = Sandbox::new();
    let pidfile = sb.path("dd.pid");
    let out = sb.path("dd.signals");
    let prog = daemon_script(&sb);
    let o = sb.start(
        "dd",
        &[
            "--pidfile",
            s(&pidfile),
            "--ready",
            "pidfile",
            "--",
            "python3",
            s(&prog),
            s(&pidfile),
            s(&out),
            "single",
            "0",
            "0",
        ],
    );
    assert_success(&o, "pm-start");
    let daemon = sb.pid("dd").unwrap();
    // The daemon crashes (the test started it, so the test may kill it) ...
    sigkill(daemon);
    // ... and its PID file now names a younger, unrelated process.
    let victim = sb.own(&["sleep", "1000"]);
    fs::write(&pidfile, format!("{}\n", victim.pid())).unwrap();
    age(&pidfile, 60);
    assert_eq!(sb.state_of("dd"), "dead");

    let o = sb.stop(&["dd"]);
    assert_code(&o, 0);
    assert!(
        line_for(&o, "pm-stop", "dd").contains("not running"),
        "{}",
        describe(&o)
    );
    assert!(is_alive(victim.pid()), "a reused PID was signalled");
    assert!(!pidfile.exists(), "stale PID file kept");
    assert!(lines(&out).is_empty());
}

#[test]
fn record_whose_start_time_does_not_match_is_not_signalled() {
    // The group mode's identity gate (with a cgroup, the process would still be in the
    // service's cgroup, which makes it the service's: see cgroup.rs).
    let sb = Sandbox::new();
    let (pid, out) = start_trapper(&sb, "svc", &["--no-cgroup"], &["TERM"]);
    let sleeper = descendants(pid);
    let path = sb.state.join("svc.json");
    let mut rec: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let st = rec["start_time"].as_u64().unwrap();
    rec["start_time"] = Value::from(st + 1);
    fs::write(&path, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
    assert_eq!(sb.state_of("svc"), "dead", "PID now counts as reused");

    let o = sb.stop(&["svc"]);
    assert_code(&o, 0);
    assert!(
        line_for(&o, "pm-stop", "svc").contains("not running"),
        "{}",
        describe(&o)
    );
    assert!(
        is_alive(pid),
        "a process with another start time was signalled"
    );
    for s in sleeper {
        assert!(is_alive(s), "its child {s} was signalled");
    }
    assert!(lines(&out).is_empty(), "it got a signal: {:?}", lines(&out));
}

#[test]
fn pid_file_saying_1_is_refused() {
    // A PID file that names PID 1 is not a PID file pm understands: it is reported as
    // invalid (exit 1), nothing is signalled, and the file is left for its owner.
    let sb = Sandbox::new();
    let pidfile = sb.path("init.pid");
    fs::write(&pidfile, "1\n").unwrap();
    age(&pidfile, 60);
    let out = sb.stop(&["--pidfile", s(&pidfile), "init"]);
    assert_code(&out, 1);
    let line = line_for(&out, "pm-stop", "init");
    assert!(line.contains("invalid PID file"), "{line}");
    assert!(line.contains("never a service"), "{line}");
    assert!(!line.contains("stopped by"), "{line}");
    assert!(is_alive(1));
    assert!(pidfile.exists(), "a file pm cannot read was deleted");

    // Same through PM_PIDFILE, with a fresh file (mtime after PID 1 started).
    fs::write(&pidfile, "1\n").unwrap();
    let out = sb
        .cmd("pm-stop")
        .env("PM_PIDFILE", s(&pidfile))
        .arg("init")
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        !line_for(&out, "pm-stop", "init").contains("stopped by"),
        "{}",
        describe(&out)
    );
    assert!(pidfile.exists());
}

#[test]
fn a_file_that_is_not_a_pid_file_is_never_deleted() {
    // A typo in --pidfile must not cost the user a config file.
    let sb = Sandbox::new();
    let conf = sb.path("nginx.conf");
    fs::write(&conf, "worker_processes 4;\n").unwrap();
    let out = sb.stop(&["--pidfile", s(&conf), "nginx"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("not a decimal PID"),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::read_to_string(&conf).unwrap(), "worker_processes 4;\n");
}

// ---------------------------------------------------------------------------------------
// pm-stop: self-daemonizing services and services pm did not start

#[test]
fn self_daemonizing_service_is_stopped_by_its_pid_file() {
    let sb = Sandbox::new();
    let pidfile = sb.path("run/nginx.pid");
    fs::create_dir(sb.path("run")).unwrap();
    let out = sb.path("nginx.signals");
    let prog = daemon_script(&sb);
    let o = sb.start(
        "nginx",
        &[
            "--pidfile",
            s(&pidfile),
            "--ready",
            "pidfile",
            "--",
            "python3",
            s(&prog),
            s(&pidfile),
            s(&out),
            "single",
            "1",
            "0",
        ],
    );
    assert_success(&o, "pm-start");
    let daemon: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        sb.pid("nginx"),
        Some(daemon),
        "tracks the PID from the file"
    );
    let s = stat(daemon);
    assert_eq!(s.session, daemon, "the daemon leads its own session");
    let worker = descendants(daemon);
    assert_eq!(worker.len(), 1, "{worker:?}");

    let o = sb.stop(&["nginx"]);
    assert_code(&o, 0);
    assert_stopped_line(&line_for(&o, "pm-stop", "nginx"), "TERM", false);
    assert_eq!(lines(&out), vec!["got SIGTERM"]);
    assert_gone(daemon);
    assert_gone(worker[0]);
    assert!(!pidfile.exists(), "PID file naming the stopped daemon kept");
    assert_eq!(sb.state_of("nginx"), "stopped");
}

#[test]
fn pid_file_is_kept_when_it_names_another_process_by_then() {
    let sb = Sandbox::new();
    let pidfile = sb.path("up.pid");
    let out = sb.path("up.signals");
    let other = sb.own(&["sleep", "1000"]);
    let prog = daemon_script(&sb);
    let other_pid = other.pid().to_string();
    let o = sb.start(
        "up",
        &[
            "--pidfile",
            s(&pidfile),
            "--ready",
            "pidfile",
            "--",
            "python3",
            s(&prog),
            s(&pidfile),
            s(&out),
            "single",
            "0",
            &other_pid,
        ],
    );
    assert_success(&o, "pm-start");
    let daemon = sb.pid("up").unwrap();

    let o = sb.stop(&["up"]);
    assert_code(&o, 0);
    assert_gone(daemon);
    assert_eq!(lines(&out), vec!["got SIGTERM"]);
    // The daemon handed its PID file to another process while stopping: not ours to remove.
    assert_eq!(
        fs::read_to_string(&pidfile).unwrap().trim(),
        other_pid,
        "PID file removed or changed"
    );
    assert!(is_alive(other.pid()));
}

#[test]
fn pidfile_template_and_pm_pidfile_stop_services_pm_did_not_start() {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("php")).unwrap();
    let template = format!("{}/php{{instance}}-fpm.pid", s(&sb.path("php")));
    let out83 = sb.path("fpm83.signals");
    let out82 = sb.path("fpm82.signals");
    let pf83 = sb.path("php/php8.3-fpm.pid");
    let pf82 = sb.path("php/php8.2-fpm.pid");
    let d83 = run_daemon_myself(&sb, &pf83, &out83, "double");
    let d82 = run_daemon_myself(&sb, &pf82, &out82, "double");

    let o = sb.stop(&["--pidfile", &template, "fpm@8.3"]);
    assert_code(&o, 0);
    assert_stopped_line(&line_for(&o, "pm-stop", "fpm@8.3"), "TERM", false);
    assert_gone(d83);
    assert_eq!(lines(&out83), vec!["got SIGTERM"]);
    assert!(!pf83.exists());
    assert!(is_alive(d82), "the other instance was touched");
    assert!(sb.record("fpm@8.3").is_none(), "no record invented");

    let o = sb
        .cmd("pm-stop")
        .env("PM_PIDFILE", &template)
        .args(["--signal", "QUIT", "fpm@8.2"])
        .output()
        .unwrap();
    assert_code(&o, 0);
    assert_stopped_line(&line_for(&o, "pm-stop", "fpm@8.2"), "QUIT", false);
    assert_gone(d82);
    assert_eq!(lines(&out82), vec!["got SIGQUIT"]);
    assert!(!pf82.exists());

    // An instance with no PID file and no record is unknown.
    let o = sb.stop(&["--pidfile", &template, "fpm@7.4"]);
    assert_code(&o, 4);
    assert!(line_for(&o, "pm-stop", "fpm@7.4").contains("unknown"));
}

// ---------------------------------------------------------------------------------------
// pm-stop: concurrency

#[test]
fn ten_concurrent_stops_all_succeed_and_signal_once() {
    let sb = Sandbox::new();
    let (pid, out) = start_trapper(&sb, "svc", &[], &["TERM"]);
    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..10).map(|_| s.spawn(|| sb.stop(&["svc"]))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut stopped = 0;
    for o in &outs {
        assert_code(o, 0);
        let line = line_for(o, "pm-stop", "svc");
        if line.contains("stopped by") {
            stopped += 1;
        } else {
            assert!(line.contains("not running"), "{line}");
        }
    }
    assert_eq!(stopped, 1, "exactly one pm-stop stopped it");
    assert_gone(pid);
    assert_eq!(
        lines(&out),
        vec!["got TERM"],
        "the handler ran more than once"
    );
    let st = &sb.status_json(&["svc"])[0];
    assert_eq!(st["state"], "stopped", "{st}");
    // The stop that did the work is what stays recorded, not the nine no-ops.
    assert_eq!(st["last_stop"]["signal"], "TERM", "{st}");
    assert_eq!(st["last_stop"]["result"], "stopped", "{st}");
}

#[test]
fn stop_while_pm_start_waits_for_readiness() {
    let sb = Sandbox::new();
    let never = sb.path("never/ready");
    let ready = format!("file:{}", s(&never));
    let (start_out, stop_out, stop_took, start_done_after) = std::thread::scope(|s| {
        let starter = s.spawn(|| {
            let o = sb.start(
                "slow",
                &[
                    "--ready",
                    &ready,
                    "--ready-timeout",
                    "60s",
                    "--",
                    "sh",
                    "-c",
                    "sleep 1000 & wait",
                ],
            );
            (o, Instant::now())
        });
        wait_until("pm-status says starting", || {
            sb.record("slow").is_some() && sb.state_of("slow") == "starting"
        });
        let t = Instant::now();
        let o = sb.stop(&["slow"]);
        let took = t.elapsed();
        let (so, done) = starter.join().unwrap();
        (so, o, took, done.duration_since(t))
    });
    assert_code(&stop_out, 0);
    assert_stopped_line(&line_for(&stop_out, "pm-stop", "slow"), "TERM", false);
    // Within pm-stop's own (default 10 s) timeout, not after the 60 s ready timeout.
    assert!(stop_took < Duration::from_secs(10), "took {stop_took:?}");
    assert!(
        !start_out.status.success(),
        "pm-start succeeded: {}",
        describe(&start_out)
    );
    assert!(
        start_done_after < Duration::from_secs(30),
        "pm-start kept waiting: {start_done_after:?}"
    );
    assert!(sb.processes().is_empty(), "left: {:?}", sb.processes());
    assert_eq!(sb.state_of("slow"), "stopped");
}

// ---------------------------------------------------------------------------------------
// pm-stopall

/// (name, signal) in the order the services got their signal.
fn received(shared: &Path) -> Vec<(String, String, f64)> {
    lines(shared)
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "bad line {l:?}");
            (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn stopall_stops_newest_first_and_skips_stopped_and_dead() {
    let sb = Sandbox::new();
    let shared = sb.path("order");
    let a = start_py(&sb, "a", &shared, "exit", &[]);
    let b = start_py(&sb, "b", &shared, "exit", &["--stop-signal", "QUIT"]);
    let c = start_py(&sb, "c", &shared, "exit", &[]);
    // Newer still, but not running: one stopped by pm-stop, one that died on its own.
    let d = start_py(&sb, "d", &shared, "exit", &[]);
    assert_code(&sb.stop(&["d"]), 0);
    assert_gone(d);
    fs::remove_file(&shared).unwrap();
    let go = sb.path("go");
    let env = format!("GO={}", s(&go));
    let e = sb.start_sh(
        "e",
        &["--env", &env],
        "while [ ! -e \"$GO\" ]; do sleep 0.02; done",
    );
    fs::write(&go, "").unwrap();
    wait_until("e exits on its own", || !is_alive(e));
    let d_last = sb.rec("d")["last_stop"].clone();

    let out = sb.stopall(&[]);
    assert_code(&out, 0);
    let l = stderr_lines(&out);
    assert_eq!(
        l.len(),
        3,
        "one line per running service: {}",
        describe(&out)
    );
    assert!(l[0].starts_with("pm-stopall: c: "), "{l:?}");
    assert!(l[1].starts_with("pm-stopall: b: "), "{l:?}");
    assert!(l[2].starts_with("pm-stopall: a: "), "{l:?}");
    assert_stopped_line(&l[0], "TERM", false);
    assert_stopped_line(&l[1], "QUIT", false);
    assert_stopped_line(&l[2], "TERM", false);

    // The services' own account: who got which signal, when.
    let got = received(&shared);
    let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, vec!["c", "b", "a"], "{got:?}");
    assert_eq!(got[1].1, "SIGQUIT", "b's recorded stop signal: {got:?}");
    assert!(got[0].2 <= got[1].2 && got[1].2 <= got[2].2, "{got:?}");
    for pid in [a, b, c] {
        assert_gone(pid);
    }
    // Skipped: d keeps pm-stop's outcome, e is still just dead.
    assert_eq!(sb.rec("d")["last_stop"], d_last);
    assert_eq!(sb.rec("e")["last_stop"], Value::Null);
    assert_eq!(sb.state_of("e"), "dead");
    for n in ["a", "b", "c"] {
        assert_eq!(sb.rec(n)["last_stop"]["by"], "pm-stopall");
        assert_eq!(sb.state_of(n), "stopped");
    }

    // Nothing left: still success, nothing printed.
    let out = sb.stopall(&[]);
    assert_code(&out, 0);
    assert!(stderr_lines(&out).is_empty(), "{}", describe(&out));
}

#[test]
fn stopall_parallel_stops_the_newest_together_and_all_of_them() {
    let sb = Sandbox::new();
    let shared = sb.path("order");
    // Each service, once signalled, exits only when two services have been signalled:
    // only possible if the two newest are stopped at the same time.
    let pids: Vec<i32> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| start_py(&sb, n, &shared, "pair", &[]))
        .collect();
    let out = sb.stopall(&["--parallel", "2", "--timeout", "20s"]);
    assert_code(&out, 0);
    assert_eq!(stderr_lines(&out).len(), 4, "{}", describe(&out));
    assert!(!stderr(&out).contains("escalated"), "{}", describe(&out));
    for n in ["a", "b", "c", "d"] {
        assert_stopped_line(&line_for(&out, "pm-stopall", n), "TERM", false);
    }
    let got = received(&shared);
    let mut first: Vec<&str> = got[..2].iter().map(|(n, _, _)| n.as_str()).collect();
    let mut last: Vec<&str> = got[2..].iter().map(|(n, _, _)| n.as_str()).collect();
    first.sort();
    last.sort();
    assert_eq!(first, vec!["c", "d"], "newest first: {got:?}");
    assert_eq!(last, vec!["a", "b"], "{got:?}");
    for pid in pids {
        assert_gone(pid);
    }
}

#[test]
fn stopall_signal_and_timeout_override_the_records() {
    let sb = Sandbox::new();
    let shared = sb.path("order");
    let x = start_py(&sb, "x", &shared, "exit", &["--stop-signal", "QUIT"]);
    let y = start_py(&sb, "y", &shared, "ignore", &["--stop-timeout", "60s"]);
    let t = Instant::now();
    let out = sb.stopall(&["--signal", "USR1", "--timeout", "500ms"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "y escalated before the 500ms --timeout: {took:?}"
    );
    assert_code(&out, 0);
    assert_stopped_line(&line_for(&out, "pm-stopall", "x"), "USR1", false);
    assert_stopped_line(&line_for(&out, "pm-stopall", "y"), "USR1", true);
    let got = received(&shared);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("x", "SIGUSR1"));
    // Generous (2 cores, tests in parallel), but well before the 10s default, let alone
    // y's recorded 60s.
    assert!(
        took < Duration::from_secs(5),
        "the 500ms --timeout was not used for y: {took:?}"
    );
    assert_gone(x);
    assert_gone(y);
    assert_eq!(sb.rec("y")["last_stop"]["escalated"], true);
}

#[test]
fn stopall_exits_1_when_one_cannot_be_stopped() {
    let sb = Sandbox::new();
    let shared = sb.path("order");
    let good = start_py(&sb, "good", &shared, "exit", &[]);
    let bad = start_py(&sb, "bad", &shared, "ignore", &[]);
    let good2 = start_py(&sb, "good2", &shared, "exit", &[]);
    let out = sb.stopall(&["--no-kill", "--timeout", "300ms"]);
    assert_code(&out, 1);
    assert_eq!(stderr_lines(&out).len(), 3, "{}", describe(&out));
    assert!(line_for(&out, "pm-stopall", "bad").contains("could not stop"));
    assert_stopped_line(&line_for(&out, "pm-stopall", "good"), "TERM", false);
    assert_stopped_line(&line_for(&out, "pm-stopall", "good2"), "TERM", false);
    assert_gone(good);
    assert_gone(good2);
    assert!(is_alive(bad), "--no-kill killed it");
    assert_eq!(sb.state_of("bad"), "running");

    // Again, allowed to kill: only the one left is handled.
    let out = sb.stopall(&["--timeout", "300ms"]);
    assert_code(&out, 0);
    assert_eq!(stderr_lines(&out).len(), 1, "{}", describe(&out));
    assert_stopped_line(&line_for(&out, "pm-stopall", "bad"), "TERM", true);
    assert_gone(bad);
}

#[test]
fn stopall_stops_what_is_left_of_a_dead_service() {
    // The leader exits on its own; its worker (same group, PM_NAME inherited) lives on.
    let sb = Sandbox::new();
    let marker = sb.path("worker.pid");
    let script = format!("sleep 100 & echo $! > {}; sleep 0.5; exit 0", s(&marker));
    let out = sb.start("d", &["--grace", "0", "--", "sh", "-c", &script]);
    assert_success(&out, "pm-start d");
    wait_until("the leader exits", || sb.state_of("d") == "dead");
    let worker: i32 = fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    assert!(is_alive(worker));
    let out = sb.stopall(&[]);
    assert_code(&out, 0);
    assert!(
        line_for(&out, "pm-stopall", "d").contains("stopped by SIGTERM"),
        "{}",
        describe(&out)
    );
    assert_gone(worker);
    // Nothing left: a second run is silent.
    let out = sb.stopall(&[]);
    assert_code(&out, 0);
    assert!(stderr_lines(&out).is_empty(), "{}", describe(&out));
}

#[test]
fn stopall_run_by_a_service_does_not_kill_itself() {
    // A service whose own script runs pm-stopall: pm-stopall is in the service's group,
    // so it must signal the members one by one and leave itself out. Had it signalled
    // its own group, it would die before printing its line.
    let sb = Sandbox::new();
    let report = sb.path("stopall.out");
    let stopall = bin_dir().join("pm-stopall");
    let script = format!(
        "sleep 0.3; exec 3>{r}; {} >&3 2>&3; echo \"exit=$?\" >&3",
        stopall.display(),
        r = s(&report)
    );
    let out = sb.start("self", &["--grace", "0", "--", "sh", "-c", &script]);
    assert_success(&out, "pm-start self");
    let pid = sb.pid("self").unwrap();
    wait_until("pm-stopall reported", || {
        fs::read_to_string(&report)
            .unwrap_or_default()
            .contains("pm-stopall: self:")
    });
    wait_until("the service is gone", || !is_alive(pid));
    wait_until("pm-stopall is done", || sb.processes().is_empty());
    let text = fs::read_to_string(&report).unwrap();
    assert!(
        text.contains("pm-stopall: self: stopped by SIGTERM in"),
        "{text}"
    );
    assert!(!text.contains("escalated"), "{text}");
    assert_eq!(sb.state_of("self"), "stopped");
}

#[test]
fn forget_stops_the_service_and_removes_its_record_and_lock_but_keeps_its_log() {
    let sb = Sandbox::new();
    let pid = sb.start_sh("old", &[], "echo hello; exec sleep 100");
    let log = sb.state.join("old.log");
    wait_until("the service logged", || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("hello")
    });
    let out = sb.stop(&["--forget", "old"]);
    assert_code(&out, 0);
    let line = line_for(&out, "pm-stop", "old");
    assert!(line.contains("stopped by SIGTERM"), "{line}");
    assert!(line.contains("forgotten"), "{line}");
    assert_gone(pid);
    for f in ["old.json", "old.lock", "old.pid"] {
        assert!(!sb.state.join(f).exists(), "{f} left behind");
    }
    assert!(
        fs::read_to_string(&log).unwrap().contains("hello"),
        "log lost"
    );
    // No longer listed: pm-status of everything is empty and says all is well.
    let st = sb.status(&["--json"]);
    assert_code(&st, 0);
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn forget_clears_a_dead_typo_that_made_every_status_exit_1() {
    let sb = Sandbox::new();
    let out = sb.start("typo", &["--", "sh", "-c", "exit 3"]);
    assert_code(&out, 1);
    assert_code(&sb.status(&[]), 1);
    let out = sb.stop(&["--forget", "typo"]);
    assert_code(&out, 0);
    assert!(
        line_for(&out, "pm-stop", "typo").contains("forgotten"),
        "{}",
        describe(&out)
    );
    assert_code(&sb.status(&[]), 0);
    assert!(!sb.state.join("typo.json").exists());
    // Unknown now: forgetting it again is exit 4, like any unknown NAME.
    assert_code(&sb.stop(&["--forget", "typo"]), 4);
}

#[test]
fn no_tool_leaves_a_lock_file_for_a_name_without_a_record() {
    let sb = Sandbox::new();
    assert_code(&sb.stop(&["nosuch"]), 4);
    assert_code(&sb.start("nosuch2", &[]), 4);
    assert_code(
        &sb.start("nosuch3", &["--stop-signal", "BOGUS", "--", "sleep", "1"]),
        2,
    );
    let mut left: Vec<String> = fs::read_dir(&sb.state)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    left.sort();
    assert!(left.is_empty(), "left in the state directory: {left:?}");
}

#[test]
fn ctrl_c_during_pm_stop_says_what_it_leaves_and_stops_the_loop() {
    // A service that ignores TERM keeps pm-stop waiting for its timeout; Ctrl-C then
    // reaches the whole foreground group (bash and pm-stop).
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let sb = Sandbox::new();
    // Each says in a file when it got TERM, and keeps running.
    let svc = |name: &str| {
        let out = sb.path(&format!("{name}.got"));
        let env = format!("OUT={}", s(&out));
        let pid = sb.start_sh(
            name,
            &["--env", &env],
            "trap 'echo TERM >> \"$OUT\"' TERM; while :; do sleep 0.05; done",
        );
        (pid, out)
    };
    let (a, a_got) = svc("a");
    let (b, b_got) = svc("b");
    let script = format!(
        "for s in a b; do {} \"$s\"; echo \"after-$s\"; done",
        bin_dir().join("pm-stop").display()
    );
    let mut cmd = sb.std_cmd("bash");
    cmd.args(["-c", &script]).process_group(0);
    let run = sb.spawn_cmd("loop", cmd);
    wait_until("a got TERM from pm-stop", || {
        fs::read_to_string(&a_got)
            .unwrap_or_default()
            .contains("TERM")
    });
    let t = Instant::now();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(run.pid()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let done = run.finish(Duration::from_secs(30));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "Ctrl-C was not acted on at once"
    );
    assert_eq!(
        done.status.signal(),
        Some(nix::sys::signal::Signal::SIGINT as i32),
        "bash went on after Ctrl-C: {}",
        done.describe()
    );
    assert!(!done.stdout.contains("after-"), "{}", done.describe());
    assert!(
        done.stderr
            .contains("pm-stop: a: interrupted: SIGTERM sent")
            && done.stderr.contains("may still be shutting down"),
        "{}",
        done.describe()
    );
    // Left as said: a still runs (it ignores TERM), b was never touched.
    assert!(is_alive(a) && is_alive(b));
    assert!(!b_got.exists(), "the loop went on to stop b");
    let out = sb.stop(&["--timeout", "100ms", "a", "b"]);
    assert_code(&out, 0);
    assert_gone(a);
    assert_gone(b);
}
