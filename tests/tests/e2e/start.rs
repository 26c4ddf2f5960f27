//! End-to-end tests of `pm-start` (issue 4): real services (small sh and python3 programs
//! written by the tests) started by the real binary in a private state directory, checked
//! against the exit code, stderr, the process table (/proc) and the record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pm_tests::*;

// ---------------------------------------------------------------------------------------
// helpers

/// PID == PGID == SID, exactly fds 0, 1, 2, stdin /dev/null, stdout and stderr the log.
#[track_caller]
fn assert_detached(pid: i32, log: &Path) {
    assert_eq!(
        fds_of(pid),
        vec![0, 1, 2],
        "pid {pid} has other fds than 0, 1, 2"
    );
    assert_detached_with_sockets(pid, log);
}

/// As [`assert_detached`], for a server that has opened its own sockets since: every fd
/// above 2 must be a socket (nothing inherited: pipes, files, the caller's fds).
#[track_caller]
fn assert_detached_with_sockets(pid: i32, log: &Path) {
    assert!(is_alive(pid), "pid {pid} is not running");
    let s = stat(pid);
    assert_eq!(
        (s.pgrp, s.session),
        (pid, pid),
        "pid {pid} is not a session leader: {s:?}"
    );
    let fds = fds_of(pid);
    assert_eq!(fds[..3], [0, 1, 2], "pid {pid} lacks stdio: {fds:?}");
    for fd in fds.iter().filter(|fd| **fd > 2) {
        let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert!(
            target.to_string_lossy().starts_with("socket:"),
            "pid {pid} has fd {fd} -> {} that it did not open itself",
            target.display()
        );
    }
    let link = |fd: i32| fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    assert_eq!(link(0), PathBuf::from("/dev/null"), "stdin of {pid}");
    let log = log.canonicalize().unwrap();
    assert_eq!(link(1), log, "stdout of {pid}");
    assert_eq!(link(2), log, "stderr of {pid}");
}

/// `sh -c SCRIPT` in the background, with `$PM_START_BIN` set.
fn spawn_sh(sb: &Sandbox, tag: &str, script: &str) -> Bg {
    let mut c = sb.std_cmd("/bin/sh");
    c.env("PM_START_BIN", bin_dir().join("pm-start"))
        .args(["-c", script]);
    sb.spawn_cmd(tag, c)
}

/// Asserts `pm-start` failed with exit 1, printing `reason` and the log tail line `tail`.
#[track_caller]
fn assert_failed(out: &std::process::Output, reason: &str, tail: Option<&str>) {
    assert_code(out, 1);
    let err = stderr(out);
    assert!(
        err.contains("failed to start") && err.contains(reason),
        "expected \"{reason}\" on stderr: {}",
        describe(out)
    );
    if let Some(t) = tail {
        assert!(
            err.contains("last lines of"),
            "no log tail: {}",
            describe(out)
        );
        assert!(
            err.contains(&format!("| {t}")),
            "log tail lacks {t:?}: {}",
            describe(out)
        );
    }
    assert!(
        stdout(out).is_empty(),
        "stdout not empty: {}",
        describe(out)
    );
}

#[track_caller]
fn started_pid(sb: &Sandbox, out: &std::process::Output, name: &str) -> i32 {
    assert_success(out, "pm-start");
    assert!(
        stdout(out).is_empty(),
        "stdout must be empty without --print-pid: {}",
        describe(out)
    );
    let pid = sb.pid(name).expect("record has a pid");
    let err = stderr(out);
    assert!(
        err.contains(&format!("pm-start: {name}: started, pid {pid}, log ")),
        "no start line naming pid {pid}: {}",
        describe(out)
    );
    assert!(is_alive(pid), "recorded pid {pid} is not running");
    pid
}

// ---------------------------------------------------------------------------------------
// plain long-running commands

#[test]
fn http_server_ready_on_tcp_is_a_detached_session_leader() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let ready = format!("tcp:{port}");
    let out = sb.start(
        "web",
        &[
            "--ready",
            &ready,
            "--",
            "python3",
            "-m",
            "http.server",
            &port,
            "--bind",
            "127.0.0.1",
        ],
    );
    let pid = started_pid(&sb, &out, "web");
    assert!(stderr(&out).contains(&format!("log {}", sb.state.join("web.log").display())));
    assert_detached_with_sockets(pid, &sb.state.join("web.log"));
    // Ready means it serves, right now.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port.parse().unwrap())).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    assert_eq!(sb.state_of("web"), "running");
    assert_eq!(sb.rec("web")["phase"], "running");
    assert_eq!(sb.processes(), vec![pid]);
}

#[test]
fn sleep_starts_and_the_record_holds_everything() {
    let sb = Sandbox::new();
    let out = sb.start(
        "web",
        &[
            "--stop-signal",
            "SIGINT",
            "--stop-timeout",
            "3s",
            "--env",
            "A=1",
            "--ready",
            "pidfile",
            "--ready-timeout",
            "7s",
            "--",
            "sleep",
            "100",
        ],
    );
    let pid = started_pid(&sb, &out, "web");
    assert_detached(pid, &sb.state.join("web.log"));
    assert_eq!(cmdline(pid), ["sleep", "100"]);
    let r = sb.rec("web");
    let st = stat(pid);
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(r["version"], 1, "{r:#}");
    assert_eq!(r["name"], "web");
    assert_eq!(r["command"], serde_json::json!(["sleep", "100"]));
    assert_eq!(r["cwd"], s(sb.dir.path()));
    assert_eq!(r["env"], serde_json::json!([["A", "1"]]));
    assert_eq!(r["pidfile"], s(&sb.state.join("web.pid")));
    assert_eq!(r["pidfile_by"], "pm");
    assert_eq!(
        fs::read_to_string(sb.state.join("web.pid")).unwrap().trim(),
        pid.to_string()
    );
    assert_eq!(r["log"], s(&sb.state.join("web.log")));
    assert_eq!(r["pid"], pid);
    assert_eq!(r["pgid"], pid);
    assert_eq!(r["sid"], pid);
    assert_eq!(
        r["start_time"], st.start_time,
        "field 22 of /proc/{pid}/stat"
    );
    assert_eq!(r["boot_id"], boot.trim());
    let at = r["started_at"].as_str().expect("started_at");
    assert!(
        at.len() >= 20 && at.contains('T') && at.ends_with('Z'),
        "not RFC 3339 UTC: {at}"
    );
    assert_eq!(r["stop_signal"], "INT");
    assert_eq!(r["stop_timeout_ms"], 3000);
    assert_eq!(r["ready"], serde_json::json!(["pidfile"]));
    assert_eq!(r["ready_timeout_ms"], 7000);
    assert_eq!(r["phase"], "running");
    // The env given with --env is the service's.
    assert!(environ(pid).contains(&"A=1".to_string()));
}

#[test]
fn print_pid_prints_the_pid_and_nothing_else() {
    let sb = Sandbox::new();
    let out = sb.start("web", &["--print-pid", "--", "sleep", "100"]);
    assert_success(&out, "pm-start --print-pid");
    let pid = sb.pid("web").unwrap();
    assert_eq!(stdout(&out), format!("{pid}\n"));
    assert!(is_alive(pid));
    // Already running: still the one PID, still nothing else on stdout.
    let again = sb.start("web", &["--print-pid", "--", "sleep", "100"]);
    assert_success(&again, "pm-start --print-pid (again)");
    assert_eq!(stdout(&again), format!("{pid}\n"));
    assert!(
        stderr(&again).contains("already running"),
        "{}",
        describe(&again)
    );
}

// ---------------------------------------------------------------------------------------
// failures: exits at once, killed, not found, not executable

#[test]
fn command_exiting_at_once_fails_with_status_and_log_tail() {
    let sb = Sandbox::new();
    // 30 lines: the tail shows the last ~20, not the first ones.
    let out = sb.start(
        "web",
        &[
            "--",
            "sh",
            "-c",
            "i=1; while [ $i -le 30 ]; do echo \"L$i.\"; i=$((i+1)); done; echo oops >&2; exit 3",
        ],
    );
    assert_failed(&out, "exited with status 3", Some("oops"));
    let err = stderr(&out);
    assert!(err.contains("| L30."), "{err}");
    assert!(
        !err.contains("| L2."),
        "more than the last lines shown: {err}"
    );
    let r = sb.rec("web");
    assert_eq!(r["phase"], "failed", "{r:#}");
    assert_eq!(r["failure"]["exit_code"], 3);
    assert!(r["failure"]["reason"]
        .as_str()
        .unwrap()
        .contains("exited with status 3"));
    let pid = r["pid"].as_i64().unwrap() as i32;
    assert_gone(pid);
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
    assert!(
        sb.log("web").contains("L1.\n"),
        "the log keeps all the output"
    );
    assert_eq!(sb.state_of("web"), "dead");
}

#[test]
fn command_killed_by_a_signal_says_which() {
    let sb = Sandbox::new();
    let out = sb.start(
        "web",
        &["--", "sh", "-c", "echo about to die; kill -KILL $$"],
    );
    assert_failed(&out, "killed by SIGKILL", Some("about to die"));
    let r = sb.rec("web");
    assert_eq!(r["phase"], "failed");
    assert_eq!(r["failure"]["signal"], "KILL", "{r:#}");
    assert!(sb.processes().is_empty());
}

#[test]
fn missing_command_is_not_found() {
    let sb = Sandbox::new();
    for (name, cmd) in [
        ("a", "no-such-command-pm-e2e"),
        ("b", "/nonexistent/pm-e2e"),
    ] {
        let out = sb.start(name, &["--", cmd, "arg"]);
        assert_failed(&out, "not found", None);
        assert!(
            stderr(&out).contains(cmd),
            "the message names the command: {}",
            describe(&out)
        );
        assert!(
            !stderr(&out).contains("exited with status"),
            "{}",
            describe(&out)
        );
        let r = sb.rec(name);
        assert_eq!(r["phase"], "failed");
        assert!(r["pid"].is_null(), "nothing was spawned: {r:#}");
        assert!(r["failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("not found"));
    }
    assert!(sb.processes().is_empty());
}

#[test]
fn non_executable_file_is_permission_denied() {
    let sb = Sandbox::new();
    let p = sb.path("svc.sh");
    fs::write(&p, "#!/bin/sh\nexec sleep 100\n").unwrap(); // mode 0644: not executable
    let out = sb.start("web", &["--", s(&p)]);
    assert_failed(&out, "permission denied", None);
    assert!(!stderr(&out).contains("not found"), "{}", describe(&out));
    assert_eq!(sb.rec("web")["phase"], "failed");
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
}

#[test]
fn early_exit_inside_a_long_grace_fails_fast() {
    let sb = Sandbox::new();
    let t = Instant::now();
    let out = sb.start(
        "web",
        &[
            "--grace",
            "20s",
            "--",
            "sh",
            "-c",
            "sleep 0.1; echo giving up; exit 7",
        ],
    );
    let took = t.elapsed();
    assert_failed(&out, "exited with status 7", Some("giving up"));
    assert!(
        took < Duration::from_secs(10),
        "waited {took:?} of a 20s grace"
    );
}

#[test]
fn survives_the_grace_then_counts_as_started() {
    let sb = Sandbox::new();
    let t = Instant::now();
    let out = sb.start("web", &["--grace", "1s", "--", "sleep", "100"]);
    let took = t.elapsed();
    let pid = started_pid(&sb, &out, "web");
    assert!(
        took >= Duration::from_secs(1),
        "returned before the grace: {took:?}"
    );
    // Generous (2 cores, tests in parallel), but a grace taken for much longer fails.
    assert!(
        took < Duration::from_secs(10),
        "waited {took:?} for a 1s grace"
    );
    assert_eq!(sb.rec("web")["grace_ms"], 1000);
    assert!(is_alive(pid));
}

// ---------------------------------------------------------------------------------------
// self-daemonizing services

const DAEMON_PY: &str = r#"
import os, sys, time
pidfile = sys.argv[1]
if os.fork() > 0:
    os._exit(0)          # the launcher exits 0 at once
os.setsid()
if os.fork() > 0:
    os._exit(0)
time.sleep(0.3)          # the PID file appears only later
tmp = pidfile + ".tmp"
with open(tmp, "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(tmp, pidfile)
print("daemon up", flush=True)
time.sleep(100)
"#;

fn daemon_test(with_ready: bool) {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let script = sb.path("daemon.py");
    fs::write(&script, DAEMON_PY).unwrap();
    let pidfile = sb.path("run/daemon.pid");
    fs::create_dir(sb.path("run")).unwrap();
    // A stale PID file naming a live process that is not the daemon must not be taken.
    let mut decoy = sb
        .std_cmd("sleep")
        .arg("100")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    fs::write(&pidfile, format!("{}\n", decoy.id())).unwrap();

    let mut args = vec!["--pidfile", s(&pidfile)];
    if with_ready {
        args.extend(["--ready", "pidfile"]);
    }
    args.extend(["--", "python3", s(&script), s(&pidfile)]);
    let out = sb.start("daemon", &args);
    let pid = started_pid(&sb, &out, "daemon");
    let written: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, written, "record pid is not the daemon's own");
    assert_ne!(pid, decoy.id() as i32, "took the stale PID file");
    let st = stat(pid);
    let r = sb.rec("daemon");
    assert_eq!(r["pidfile"], s(&pidfile));
    assert_eq!(r["pidfile_by"], "service");
    assert_eq!(r["start_time"], st.start_time);
    assert_eq!(r["pgid"], st.pgrp);
    assert_eq!(r["sid"], st.session);
    assert_eq!(r["phase"], "running");
    assert!(sb.log("daemon").contains("daemon up"));
    assert_eq!(fds_of(pid), vec![0, 1, 2]);
    assert_eq!(sb.state_of("daemon"), "running");
    assert_eq!(sb.status_json(&["daemon"])[0]["pid"], pid);
    // The decoy was never touched.
    assert!(is_alive(decoy.id() as i32));
    decoy.kill().unwrap();
    decoy.wait().unwrap();
}

#[test]
fn self_daemonizing_service_is_tracked_through_its_pidfile() {
    daemon_test(false);
}

#[test]
fn self_daemonizing_service_with_ready_pidfile() {
    daemon_test(true);
}

#[test]
fn daemon_launcher_exiting_nonzero_is_a_failure() {
    let sb = Sandbox::new();
    let pidfile = sb.path("d.pid");
    let out = sb.start(
        "d",
        &[
            "--pidfile",
            s(&pidfile),
            "--",
            "sh",
            "-c",
            "echo cannot bind; exit 2",
        ],
    );
    assert_failed(&out, "exited with status 2", Some("cannot bind"));
}

// ---------------------------------------------------------------------------------------
// log, cwd, env, PM_NAME, fds

#[test]
fn log_defaults_to_the_state_dir_and_log_option_appends() {
    let sb = Sandbox::new();
    let out = sb.start(
        "a",
        &[
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exec sleep 100",
        ],
    );
    let pid = started_pid(&sb, &out, "a");
    assert_detached(pid, &sb.state.join("a.log"));
    wait_until("both lines are in the default log", || {
        let l = sb.log("a");
        l.contains("to-stdout\n") && l.contains("to-stderr\n")
    });

    // --log (relative to pm-start's cwd) appends to what is already there.
    fs::write(sb.path("b-custom.log"), "earlier line\n").unwrap();
    let out = sb.start(
        "b",
        &[
            "--log",
            "b-custom.log",
            "--",
            "sh",
            "-c",
            "echo hello-b; exec sleep 100",
        ],
    );
    let pid = started_pid(&sb, &out, "b");
    let custom = sb.path("b-custom.log");
    assert_detached(pid, &custom);
    assert_eq!(sb.rec("b")["log"], s(&custom));
    wait_until("the custom log has the new line", || {
        fs::read_to_string(&custom).unwrap() == "earlier line\nhello-b\n"
    });
    assert!(
        !sb.state.join("b.log").exists(),
        "default log used despite --log"
    );
}

#[test]
fn cwd_env_and_pm_name_reach_the_service() {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("work dir")).unwrap();
    let out = sb.start(
        "svc",
        &[
            "--cwd",
            "work dir",
            "--env",
            "GREETING=hello there",
            "--env",
            "EMPTY=",
            "--env",
            "EQ=a=b",
            "--",
            "sh",
            "-c",
            "echo \"[$GREETING][$EQ][$PM_NAME] in $(pwd)\"; exec sleep 100",
        ],
    );
    let pid = started_pid(&sb, &out, "svc");
    let wd = sb.path("work dir").canonicalize().unwrap();
    assert_eq!(fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), wd);
    let env = environ(pid);
    for kv in ["GREETING=hello there", "EMPTY=", "EQ=a=b", "PM_NAME=svc"] {
        assert!(env.contains(&kv.to_string()), "{kv} missing from {env:?}");
    }
    assert!(
        !env.iter().any(|e| e.starts_with("NOTIFY_SOCKET=")),
        "{env:?}"
    );
    wait_until("the service logged its view", || {
        sb.log("svc") == format!("[hello there][a=b][svc] in {}\n", wd.display())
    });
    let r = sb.rec("svc");
    assert_eq!(r["cwd"], s(&sb.path("work dir")));
    assert_eq!(
        r["env"],
        serde_json::json!([["GREETING", "hello there"], ["EMPTY", ""], ["EQ", "a=b"]])
    );
}

#[test]
fn missing_cwd_is_an_error_naming_it() {
    let sb = Sandbox::new();
    let out = sb.start("svc", &["--cwd", "nowhere", "--", "sleep", "100"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("nowhere"), "{}", describe(&out));
    assert!(
        !stderr(&out).contains("command not found"),
        "{}",
        describe(&out)
    );
    assert!(sb.processes().is_empty());
}

#[test]
fn no_inherited_fd_above_2_reaches_the_service() {
    let sb = Sandbox::new();
    // fd 7 and 9 are open (without close-on-exec) in the shell that runs pm-start.
    let run = spawn_sh(
        &sb,
        "sh",
        "exec 7>extra-fd.txt 9</dev/null; [ -e /proc/$$/fd/7 ] && [ -e /proc/$$/fd/9 ] || exit 99; \
         exec \"$PM_START_BIN\" web -- sleep 100",
    );
    let done = run.finish(Duration::from_secs(20));
    assert!(done.status.success(), "{}", done.describe());
    let pid = sb.pid("web").unwrap();
    assert_detached(pid, &sb.state.join("web.log"));
}

#[test]
fn command_substitution_returns_at_once() {
    let sb = Sandbox::new();
    let run = spawn_sh(
        &sb,
        "sh",
        "x=$(\"$PM_START_BIN\" web -- sleep 100); echo \"got[$x]\"",
    );
    let done = run.finish(Duration::from_secs(20));
    assert!(done.status.success(), "{}", done.describe());
    assert!(done.took < Duration::from_secs(15), "{}", done.describe());
    assert_eq!(done.stdout, "got[]\n", "{}", done.describe());
    let pid = sb.pid("web").unwrap();
    assert!(is_alive(pid), "the service must outlive the substitution");

    let run = spawn_sh(
        &sb,
        "sh2",
        "x=$(\"$PM_START_BIN\" --print-pid web2 -- sleep 100); echo \"$x\"",
    );
    let done = run.finish(Duration::from_secs(20));
    assert!(done.status.success(), "{}", done.describe());
    assert!(done.took < Duration::from_secs(15), "{}", done.describe());
    assert_eq!(done.stdout, format!("{}\n", sb.pid("web2").unwrap()));
}

#[test]
fn piping_into_cat_returns_at_once() {
    let sb = Sandbox::new();
    let run = spawn_sh(
        &sb,
        "sh",
        "\"$PM_START_BIN\" web -- sleep 100 | cat; echo done",
    );
    let done = run.finish(Duration::from_secs(20));
    assert!(done.status.success(), "{}", done.describe());
    assert!(done.took < Duration::from_secs(15), "{}", done.describe());
    assert_eq!(done.stdout, "done\n");
    assert!(is_alive(sb.pid("web").unwrap()));
}

// ---------------------------------------------------------------------------------------
// ready checks

#[test]
fn ready_pidfile_waits_for_the_service_to_write_it() {
    let sb = Sandbox::new();
    let pidfile = sb.path("svc.pid");
    let out = sb.start(
        "svc",
        &[
            "--pidfile",
            s(&pidfile),
            "--ready",
            "pidfile",
            "--",
            "sh",
            "-c",
            "sleep 0.5; echo $$ > \"$0\"; exec sleep 100",
            s(&pidfile),
        ],
    );
    let pid = started_pid(&sb, &out, "svc");
    let written: i32 = fs::read_to_string(&pidfile)
        .expect("PID file exists once ready")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, written);
    assert_detached(pid, &sb.state.join("svc.log"));
}

#[test]
fn ready_tcp_waits_for_the_port() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let ready = format!("tcp:127.0.0.1:{port}");
    let script = format!("sleep 0.5; exec python3 -m http.server {port} --bind 127.0.0.1");
    let out = sb.start("web", &["--ready", &ready, "--", "sh", "-c", &script]);
    let pid = started_pid(&sb, &out, "web");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("port accepts once ready");
    assert_detached_with_sockets(pid, &sb.state.join("web.log"));
}

#[test]
fn ready_unix_waits_for_the_socket_to_accept() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let sock = sb.path("svc.sock");
    let py = "import socket, sys, time\n\
              time.sleep(0.5)\n\
              s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
              s.bind(sys.argv[1])\n\
              s.listen(8)\n\
              while True:\n    c, _ = s.accept()\n    c.close()\n";
    let ready = format!("unix:{}", sock.display());
    let out = sb.start(
        "svc",
        &["--ready", &ready, "--", "python3", "-c", py, s(&sock)],
    );
    let pid = started_pid(&sb, &out, "svc");
    std::os::unix::net::UnixStream::connect(&sock).expect("socket accepts once ready");
    assert_eq!(sb.rec("svc")["ready"], serde_json::json!([ready]));
    assert!(is_alive(pid));
}

#[test]
fn ready_file_waits_for_the_path() {
    let sb = Sandbox::new();
    let out = sb.start(
        "svc",
        &[
            "--ready",
            "file:flag",
            "--",
            "sh",
            "-c",
            "sleep 0.5; touch flag; exec sleep 100",
        ],
    );
    started_pid(&sb, &out, "svc");
    assert!(sb.path("flag").exists(), "returned before the file existed");
}

#[test]
fn ready_exec_waits_for_the_command_to_succeed() {
    let sb = Sandbox::new();
    let flag = sb.path("flag");
    let check = format!("exec:test -e '{}'", flag.display());
    let out = sb.start(
        "svc",
        &[
            "--ready",
            &check,
            "--",
            "sh",
            "-c",
            "sleep 0.5; touch flag; exec sleep 100",
        ],
    );
    started_pid(&sb, &out, "svc");
    assert!(flag.exists(), "returned before the exec check could pass");
}

#[test]
fn ready_log_matches_only_lines_written_after_this_start() {
    let sb = Sandbox::new();
    fs::create_dir_all(&sb.state).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&sb.state, fs::Permissions::from_mode(0o700)).unwrap();
    // An old matching line from an earlier run does not count.
    fs::write(sb.state.join("svc.log"), "listening on port 1\n").unwrap();
    let out = sb.start(
        "svc",
        &[
            "--ready",
            r"log:^listening on port \d+$",
            "--",
            "sh",
            "-c",
            "echo booting; sleep 0.5; echo listening on port 8080; exec sleep 100",
        ],
    );
    started_pid(&sb, &out, "svc");
    assert!(
        sb.log("svc").contains("listening on port 8080\n"),
        "returned before the new line: {:?}",
        sb.log("svc")
    );
}

const NOTIFY_PY: &str = r#"
import os, socket, sys, time
time.sleep(0.5)
addr = os.environ["NOTIFY_SOCKET"]
with open(sys.argv[1], "w") as f:
    f.write(addr)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=warming up\nREADY=1\n", addr)
time.sleep(100)
"#;

#[test]
fn ready_notify_waits_for_ready_1_and_removes_the_socket() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let marker = sb.path("notify-addr");
    let out = sb.start(
        "svc",
        &[
            "--ready",
            "notify",
            "--",
            "python3",
            "-c",
            NOTIFY_PY,
            s(&marker),
        ],
    );
    let pid = started_pid(&sb, &out, "svc");
    let addr =
        fs::read_to_string(&marker).expect("the service sent READY=1 before pm-start returned");
    assert_eq!(
        Path::new(&addr),
        sb.state.join("svc.notify"),
        "socket in the state dir"
    );
    assert!(!Path::new(&addr).exists(), "notify socket left behind");
    assert_detached_with_sockets(pid, &sb.state.join("svc.log"));
}

const MAINPID_PY: &str = r#"
import os, socket, sys, time
r, w = os.pipe()
if os.fork() == 0:
    os.close(r)
    with open(sys.argv[1], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(0.3)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(("MAINPID=%d\nREADY=1\n" % os.getpid()).encode(), os.environ["NOTIFY_SOCKET"])
    os.write(w, b"x")
    os.close(w)
    time.sleep(100)
    os._exit(0)
os.close(w)
os.read(r, 1)            # exit 0 right after the main process announced itself
os._exit(0)
"#;

#[test]
fn ready_notify_honours_mainpid() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let marker = sb.path("main-pid");
    let out = sb.start(
        "svc",
        &[
            "--ready",
            "notify",
            "--",
            "python3",
            "-c",
            MAINPID_PY,
            s(&marker),
        ],
    );
    let pid = started_pid(&sb, &out, "svc");
    let main: i32 = fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    assert_eq!(pid, main, "record pid is not MAINPID");
    let st = stat(main);
    let r = sb.rec("svc");
    assert_eq!(r["start_time"], st.start_time);
    assert_eq!(r["sid"], st.session);
    assert_eq!(sb.state_of("svc"), "running");
    assert!(!sb.state.join("svc.notify").exists());
}

#[test]
fn several_ready_checks_must_all_pass() {
    let sb = Sandbox::new();
    let out = sb.start(
        "svc",
        &[
            "--ready",
            "file:one",
            "--ready",
            "file:two",
            "--ready",
            "log:^three$",
            "--",
            "sh",
            "-c",
            "touch one; sleep 0.3; echo three; sleep 0.3; touch two; exec sleep 100",
        ],
    );
    started_pid(&sb, &out, "svc");
    assert!(sb.path("one").exists() && sb.path("two").exists());
}

#[test]
fn ready_timeout_stops_the_service_and_shows_the_log() {
    let sb = Sandbox::new();
    let t = Instant::now();
    let out = sb.start(
        "svc",
        &[
            "--ready",
            "file:one",
            "--ready",
            "file:never",
            "--ready-timeout",
            "1s",
            "--",
            "sh",
            "-c",
            "touch one; echo still warming up; exec sleep 100",
        ],
    );
    let took = t.elapsed();
    assert_failed(&out, "not ready within", Some("still warming up"));
    let err = stderr(&out);
    assert!(
        err.contains("file:") && err.contains("never"),
        "names the check that failed: {err}"
    );
    assert!(!err.contains("/one"), "names a check that passed: {err}");
    assert!(
        took >= Duration::from_secs(1),
        "gave up before the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    let r = sb.rec("svc");
    let pid = r["pid"].as_i64().unwrap() as i32;
    assert_gone(pid);
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
    assert_eq!(r["phase"], "failed", "{r:#}");
    assert!(r["failure"]["reason"]
        .as_str()
        .unwrap()
        .contains("not ready"));
    assert_eq!(r["last_stop"]["by"], "pm-start", "{r:#}");
    assert!(
        !sb.state.join("svc.pid").exists(),
        "pm's PID file left behind for a stopped service"
    );
}

#[test]
fn ready_timeout_kills_a_service_that_ignores_the_stop_signal() {
    let sb = Sandbox::new();
    let t = Instant::now();
    let out = sb.start(
        "svc",
        &[
            "--ready",
            "file:never",
            "--ready-timeout",
            "500ms",
            "--stop-timeout",
            "500ms",
            "--",
            "sh",
            "-c",
            "trap '' TERM; echo ignoring TERM; while :; do sleep 0.05; done",
        ],
    );
    let took = t.elapsed();
    assert_failed(&out, "not ready within", Some("ignoring TERM"));
    // 500ms ready timeout, then 500ms stop timeout before SIGKILL: at least 1s, and well
    // before the 10s default stop timeout (or the 30s default ready timeout) would end.
    assert!(
        took >= Duration::from_secs(1),
        "escalated before the ready and stop timeouts passed: {took:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "the 500ms ready or stop timeout was not used: {took:?}"
    );
    let r = sb.rec("svc");
    assert_gone(r["pid"].as_i64().unwrap() as i32);
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
    assert_eq!(r["last_stop"]["escalated"], true, "{r:#}");
}

#[test]
fn dying_while_waiting_fails_at_once_not_at_the_timeout() {
    let sb = Sandbox::new();
    let t = Instant::now();
    let out = sb.start(
        "svc",
        &[
            "--ready",
            "file:never",
            "--ready-timeout",
            "60s",
            "--",
            "sh",
            "-c",
            "sleep 0.3; echo crashed; exit 5",
        ],
    );
    let took = t.elapsed();
    assert_failed(&out, "exited with status 5", Some("crashed"));
    assert!(
        took < Duration::from_secs(15),
        "waited {took:?} of a 60s ready timeout"
    );
    assert_eq!(sb.rec("svc")["failure"]["exit_code"], 5);
}

// ---------------------------------------------------------------------------------------
// idempotence

#[test]
fn already_running_succeeds_and_spawns_nothing() {
    let sb = Sandbox::new();
    let out = sb.start("web", &["--", "sleep", "100"]);
    let pid = started_pid(&sb, &out, "web");
    let before = sb.rec("web");
    let again = sb.start(
        "web",
        &["--", "sh", "-c", "touch second-spawned; exec sleep 100"],
    );
    assert_success(&again, "second pm-start");
    assert!(stdout(&again).is_empty());
    assert!(
        stderr(&again).contains(&format!("pm-start: web: already running, pid {pid}")),
        "{}",
        describe(&again)
    );
    assert!(!sb.path("second-spawned").exists(), "a second command ran");
    assert_eq!(sb.processes(), vec![pid]);
    assert_eq!(sb.rec("web"), before, "the record changed");
}

#[test]
fn twenty_concurrent_starts_start_exactly_one_process() {
    let sb = Sandbox::new();
    let runs: Vec<Bg> = (0..20)
        .map(|i| sb.spawn_tool(&format!("c{i}"), "pm-start", &["web", "--", "sleep", "100"]))
        .collect();
    let done: Vec<Done> = runs
        .into_iter()
        .map(|r| r.finish(Duration::from_secs(60)))
        .collect();
    for d in &done {
        assert!(d.status.success(), "{}", d.describe());
        assert!(d.stdout.is_empty(), "{}", d.describe());
    }
    let started = done
        .iter()
        .filter(|d| d.stderr.contains("started, pid"))
        .count();
    let already = done.iter().filter(|d| d.stderr.contains("already")).count();
    assert_eq!(
        (started, already),
        (1, 19),
        "{}",
        done.iter().map(Done::describe).collect::<String>()
    );
    let pid = sb.pid("web").unwrap();
    assert_eq!(sb.processes(), vec![pid], "more than one service process");
    assert_eq!(cmdline(pid), ["sleep", "100"]);
}

#[test]
fn a_record_whose_process_died_does_not_count_as_running() {
    let sb = Sandbox::new();
    let out = sb.start("web", &["--", "sleep", "100"]);
    let old = started_pid(&sb, &out, "web");
    sigkill(old);
    assert_eq!(sb.state_of("web"), "dead");
    let out = sb.start("web", &["--", "sleep", "100"]);
    let new = started_pid(&sb, &out, "web");
    assert_ne!(new, old);
    assert!(!stderr(&out).contains("already"), "{}", describe(&out));
    assert_eq!(sb.processes(), vec![new]);
}

#[test]
fn a_record_whose_pid_belongs_to_someone_else_does_not_count_as_running() {
    // The group mode's identity gate (with a cgroup, the process would still be in the
    // service's cgroup, which makes it the service's: see cgroup.rs).
    let sb = Sandbox::new();
    let out = sb.start("web", &["--no-cgroup", "--", "sleep", "100"]);
    let old = started_pid(&sb, &out, "web");
    // Pretend the PID was reused: the recorded start time no longer matches the process.
    let path = sb.state.join("web.json");
    let mut r = sb.rec("web");
    r["start_time"] = (r["start_time"].as_u64().unwrap() + 12345).into();
    fs::write(&path, serde_json::to_string_pretty(&r).unwrap()).unwrap();
    assert_eq!(sb.state_of("web"), "dead");

    let out = sb.start("web", &["--", "sleep", "100"]);
    let new = started_pid(&sb, &out, "web");
    assert_ne!(new, old);
    assert!(
        is_alive(old),
        "the process now holding the old PID was signalled"
    );
    let mut live = sb.processes();
    live.sort_unstable();
    let mut want = vec![old, new];
    want.sort_unstable();
    assert_eq!(live, want);
    assert_eq!(sb.rec("web")["start_time"], stat(new).start_time);
}

// ---------------------------------------------------------------------------------------
// restart from the record

#[test]
fn no_command_restarts_from_the_record() {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("wd")).unwrap();
    let argv = [
        "sh",
        "-c",
        "echo \"run $K in $(pwd)\"; exec sleep 100",
        "ignored-arg0",
    ];
    let mut args = vec![
        "--cwd",
        "wd",
        "--env",
        "K=V 1",
        "--stop-signal",
        "HUP",
        "--stop-timeout",
        "2s",
        "--ready",
        "log:^run ",
        "--",
    ];
    args.extend(argv);
    let out = sb.start("web", &args);
    let first = started_pid(&sb, &out, "web");
    let rec1 = sb.rec("web");
    sigkill(first);

    // Started from a different directory, with nothing but the name.
    let out = sb
        .cmd("pm-start")
        .current_dir("/")
        .arg("web")
        .output()
        .unwrap();
    let second = started_pid(&sb, &out, "web");
    assert_ne!(second, first);
    assert_eq!(cmdline(second), ["sleep", "100"]);
    let wd = sb.path("wd").canonicalize().unwrap();
    assert_eq!(fs::read_link(format!("/proc/{second}/cwd")).unwrap(), wd);
    assert!(environ(second).contains(&"K=V 1".to_string()));
    let line = format!("run V 1 in {}\n", wd.display());
    wait_until("both runs logged", || {
        sb.log("web") == format!("{line}{line}")
    });
    let rec2 = sb.rec("web");
    for k in [
        "command",
        "cwd",
        "env",
        "log",
        "pidfile",
        "stop_signal",
        "stop_timeout_ms",
        "ready",
    ] {
        assert_eq!(rec2[k], rec1[k], "{k} differs after a restart");
    }
    assert_eq!(rec2["stop_signal"], "HUP");
    assert_eq!(rec2["command"][0], "sh");
    assert_ne!(rec2["started_at"], rec1["started_at"]);
}

#[test]
fn no_command_and_no_record_exits_4() {
    let sb = Sandbox::new();
    let out = sb.start("ghost", &[]);
    assert_code(&out, 4);
    assert!(stderr(&out).contains("no record"), "{}", describe(&out));
    assert!(stderr(&out).contains("ghost"), "{}", describe(&out));
    assert!(sb.record("ghost").is_none());
    assert!(sb.processes().is_empty());
}

// ---------------------------------------------------------------------------------------
// while waiting: pm-status, pm-stop, signals

/// Nobody holds the flock on `path` right now.
fn lock_is_free(path: &Path) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok()
}

/// Starts `pm-start svc` with a ready check that never passes; returns once pm-status
/// says `starting` and the service runs.
fn start_waiting(sb: &Sandbox) -> (Bg, i32) {
    let run = sb.spawn_tool(
        "waiting",
        "pm-start",
        &[
            "svc",
            "--ready",
            "file:never",
            "--ready-timeout",
            "60s",
            "--",
            "sh",
            "-c",
            "echo waiting-service; exec sleep 100",
        ],
    );
    wait_until("pm-status says starting", || {
        sb.state_of("svc") == "starting"
    });
    // pm-start records the service before it may exec, and lets go of the lock once it
    // has: wait for both, so a test that holds pm-start still does not hold the lock.
    wait_until(
        "the service runs and pm-start waits without the lock",
        || sb.log("svc").contains("waiting-service") && lock_is_free(&sb.state.join("svc.lock")),
    );
    let pid = sb.pid("svc").unwrap();
    assert!(is_alive(pid));
    assert_eq!(sb.rec("svc")["phase"], "starting");
    (run, pid)
}

#[test]
fn status_shows_starting_and_pm_stop_is_not_blocked() {
    let sb = Sandbox::new();
    let (mut run, pid) = start_waiting(&sb);
    assert!(!run.exited());
    let t = Instant::now();
    let out = sb
        .cmd("pm-stop")
        .arg("svc")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let took = t.elapsed();
    assert_success(&out, "pm-stop while starting");
    assert!(took < Duration::from_secs(15), "pm-stop blocked {took:?}");
    assert_gone(pid);
    let done = run.finish(Duration::from_secs(20));
    assert!(
        !done.status.success(),
        "pm-start succeeded for a stopped service: {}",
        done.describe()
    );
    assert!(done.took < Duration::from_secs(40), "{}", done.describe());
    assert!(done.stdout.is_empty());
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
    assert_eq!(sb.state_of("svc"), "stopped");
}

fn interrupt_test(sig: Signal) {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::new();
    let (run, pid) = start_waiting(&sb);
    kill(Pid::from_raw(run.pid()), sig).unwrap();
    let done = run.finish(Duration::from_secs(30));
    // Died of the signal itself (a shell shows 128 + N and stops its loop), after cleaning up.
    assert_eq!(
        done.status.signal(),
        Some(sig as i32),
        "{}",
        done.describe()
    );
    assert!(
        done.stderr.contains(&format!("interrupted by {sig:?}")),
        "{}",
        done.describe()
    );
    assert!(
        done.stderr.contains("| waiting-service"),
        "no log tail: {}",
        done.describe()
    );
    assert_gone(pid);
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
    let r = sb.rec("svc");
    assert_eq!(r["phase"], "failed", "{r:#}");
    assert_ne!(sb.state_of("svc"), "starting");
}

#[test]
fn sigint_while_waiting_stops_the_service_and_dies_of_sigint() {
    interrupt_test(Signal::SIGINT);
}

#[test]
fn sigterm_while_waiting_stops_the_service_and_dies_of_sigterm() {
    interrupt_test(Signal::SIGTERM);
}

#[test]
fn a_late_failure_never_overwrites_a_newer_starts_record() {
    // Start A waits for readiness; it is held still (SIGSTOP) while pm-stop stops its
    // service and start B records a new run. When A resumes and fails, B's record stays.
    let sb = Sandbox::new();
    let (run_a, pid_a) = start_waiting(&sb);
    kill(Pid::from_raw(run_a.pid()), Signal::SIGSTOP).unwrap();
    assert_success(&sb.stop(&["svc"]), "pm-stop while A is held");
    assert_gone(pid_a);
    let out = sb.start("svc", &["--", "sleep", "100"]);
    assert_success(&out, "start B");
    let pid_b = sb.pid("svc").unwrap();
    kill(Pid::from_raw(run_a.pid()), Signal::SIGCONT).unwrap();
    let done = run_a.finish(Duration::from_secs(30));
    assert!(!done.status.success(), "{}", done.describe());
    assert_eq!(sb.pid("svc"), Some(pid_b), "A overwrote B's record");
    assert_eq!(sb.rec("svc")["phase"], "running");
    assert_eq!(sb.state_of("svc"), "running");
    assert!(is_alive(pid_b));
}

const OLD_MAINPID_PY: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(("MAINPID=%s\nREADY=1\n" % sys.argv[1]).encode(), os.environ["NOTIFY_SOCKET"])
import time; time.sleep(100)
"#;

#[test]
fn mainpid_naming_an_older_unrelated_process_is_refused() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    // An unrelated process, older than the service.
    let mut other = std::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .unwrap();
    let other_pid = other.id() as i32;
    // Start times count in clock ticks (10 ms): make it at least a few ticks older.
    let born = stat(other_pid).start_time;
    wait_until("a few clock ticks pass", || {
        let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
        let secs: f64 = uptime
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or(0.0);
        (secs * 100.0) as u64 > born + 3
    });
    let out = sb.start(
        "svc",
        &[
            "--ready",
            "notify",
            "--ready-timeout",
            "20s",
            "--",
            "python3",
            "-c",
            OLD_MAINPID_PY,
            &other_pid.to_string(),
        ],
    );
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("older than the service"),
        "{}",
        describe(&out)
    );
    assert!(is_alive(other_pid), "the unrelated process was signalled");
    assert_ne!(sb.pid("svc"), Some(other_pid));
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn a_failed_start_stops_a_daemon_that_left_the_session_after_its_launcher_exited() {
    // The launcher starts a daemon in a session of its own and exits 0, but the PID file
    // it was supposed to write never appears: the start fails, and the daemon (adopted by
    // pm-start as a subreaper) must not be left running.
    let sb = Sandbox::new();
    let marker = sb.path("daemon.pid");
    let script = format!("setsid sleep 100 & echo $! > {}; exit 0", s(&marker));
    let out = sb.start(
        "dm",
        &[
            "--pidfile",
            s(&sb.path("never-written.pid")),
            "--ready-timeout",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_code(&out, 1);
    let daemon: i32 = fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    assert_gone(daemon);
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
}

#[test]
fn dying_while_an_exec_check_runs_fails_at_once() {
    // The exec: check takes a minute; the service dies after 0.3 s. pm-start must notice
    // the death then, not when the check returns.
    let sb = Sandbox::new();
    let t = Instant::now();
    let out = sb.start(
        "svc",
        &[
            "--ready",
            "exec:sleep 60; false",
            "--ready-timeout",
            "120s",
            "--",
            "sh",
            "-c",
            "sleep 0.3; exit 3",
        ],
    );
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("exited with status 3"),
        "{}",
        describe(&out)
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
}

#[test]
fn ctrl_c_in_a_shell_loop_of_starts_stops_the_loop() {
    // bash stops a loop only when its child died of SIGINT; a child that exits 130 lets
    // the loop go on to the next service. Ctrl-C reaches the whole foreground group.
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let sb = Sandbox::new();
    let script = format!(
        "for s in a b c; do {} \"$s\" --ready file:never -- sleep 100; echo \"after-$s\"; done",
        bin_dir().join("pm-start").display()
    );
    let mut cmd = sb.std_cmd("bash");
    cmd.args(["-c", &script]).process_group(0);
    let run = sb.spawn_cmd("loop", cmd);
    wait_until("service a is starting", || sb.state_of("a") == "starting");
    nix::sys::signal::killpg(Pid::from_raw(run.pid()), Signal::SIGINT).unwrap();
    let done = run.finish(Duration::from_secs(30));
    assert_eq!(
        done.status.signal(),
        Some(Signal::SIGINT as i32),
        "bash went on after Ctrl-C: {}",
        done.describe()
    );
    assert!(!done.stdout.contains("after-"), "{}", done.describe());
    assert!(
        sb.record("b").is_none(),
        "the loop started the next service"
    );
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
}

#[test]
fn a_different_command_for_a_running_service_is_said_not_ignored() {
    let sb = Sandbox::new();
    let pid = sb.start_sh("web", &[], "exec sleep 100");
    let out = sb.start("web", &["--", "sleep", "200"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("already running"), "{err}");
    assert!(
        err.contains("sleep 200") && err.contains("pm-stop web"),
        "{err}"
    );
    assert_eq!(sb.pid("web"), Some(pid), "nothing new was started");
    // The same command again: just "already running".
    let out = sb.start("web", &["--", "sh", "-c", "exec sleep 100"]);
    assert!(
        !stderr(&out).contains("not the command given"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_restart_from_the_record_runs_the_same_program_in_the_first_starts_environment() {
    // As from cron: `env -i` with another PATH that has another `tool` first. The restart
    // must run the program the first start resolved, with the first start's environment.
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let mk = |dir: &str, says: &str| {
        let d = sb.path(dir);
        fs::create_dir_all(&d).unwrap();
        let tool = d.join("tool");
        fs::write(
            &tool,
            format!("#!/bin/sh\necho \"{says} FOO=$FOO\"\nexec sleep 100\n"),
        )
        .unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        d
    };
    let first = mk("first", "first");
    let other = mk("other", "other");
    let path = format!("{}:/usr/bin:/bin", s(&first));
    let out = sb
        .cmd("pm-start")
        .env("PATH", &path)
        .env("FOO", "from-the-first-start")
        .args(["svc", "--", "tool"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(sb.rec("svc")["exe"], s(&first.join("tool")));
    assert_code(&sb.stop(&["svc"]), 0);

    let cron_path = format!("{}:/usr/bin:/bin", s(&other));
    let mut cmd = sb.std_cmd("env");
    cmd.args(["-i", &format!("PATH={cron_path}")])
        .arg(format!("PM_STATE_DIR={}", s(&sb.state)))
        .arg(bin_dir().join("pm-start"))
        .arg("svc");
    let out = cmd.output().unwrap();
    assert_code(&out, 0);
    let log = sb.state.join("svc.log");
    wait_until("the restarted service logged", || {
        fs::read_to_string(&log).unwrap_or_default().lines().count() >= 2
    });
    let text = fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap();
    assert_eq!(last, "first FOO=from-the-first-start", "{text}");
    let pid = sb.pid("svc").unwrap();
    assert!(environ(pid).iter().any(|e| e == "FOO=from-the-first-start"));
}
