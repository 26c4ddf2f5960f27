//! Files and processes another user controls must never be turned against pm (issue 11).
//!
//! Each test plants what a hostile service user (or a previous run, or an unrelated
//! process) could leave behind: a PID file that is a symlink to root's PID file or into
//! /proc, a template instance `..`, a log swapped for a symlink, a hard link or a FIFO, a
//! `MAINPID=` naming an unrelated process, a port, socket or ready file that is someone
//! else's. It proves, on the kernel's view (which processes live, owners, modes and contents
//! of files) and on exit codes, that pm refuses instead of signalling, chowning, hanging or
//! calling a service ready on evidence that is not from this start; and that `--user` with
//! `--ready notify` works.
//!
//! Real processes only. Processes a test starts itself are `Owned` and carry the sandbox's
//! `PM_STATE_DIR`, so the `Sandbox` kills them too if a test fails; each is its own process
//! group, so no tool that wrongly signals one can reach the test binary's group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{chown, lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pm_tests::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// helpers

/// uid/gid of `nobody` (Debian's unprivileged user).
const NOBODY: u32 = 65534;

/// What the tests that skip without root need it for.
const ROOT_FOR: &str = "chown, --user";

/// A sandbox whose directory other users may traverse (as /run is), for tests where a
/// service running as `nobody` must reach a path inside it. The state dir stays 0700.
fn shared_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    fs::set_permissions(sb.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    sb
}

/// A directory in the sandbox owned by `nobody` (the service user's own directory).
fn nobody_dir(sb: &Sandbox, name: &str) -> PathBuf {
    let d = sb.path(name);
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    chown(&d, Some(NOBODY), Some(NOBODY)).unwrap();
    d
}

/// An unrelated `sleep 1000` the test owns, in a process group of its own.
fn sleeper(sb: &Sandbox) -> Owned {
    let child = sb
        .std_cmd("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn sleep");
    let o = Owned(child);
    let pid = o.pid();
    wait_until("the sleeper runs", || is_alive(pid));
    o
}

/// Live processes of the sandbox other than the ones the test owns.
fn service_processes(sb: &Sandbox, owned: &[i32]) -> Vec<i32> {
    sb.processes()
        .into_iter()
        .filter(|p| !owned.contains(p))
        .collect()
}

#[track_caller]
fn assert_nothing_runs(sb: &Sandbox, owned: &[i32]) {
    let left = service_processes(sb, owned);
    assert!(
        left.is_empty(),
        "processes of the service still run: {left:?}"
    );
}

/// Writes a file atomically (temp + rename), mode 0644.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// An hour ago, so "older than the spawn" cannot depend on timestamp granularity.
fn an_hour_ago() -> SystemTime {
    SystemTime::now() - Duration::from_secs(3600)
}

/// Sets a file's mtime an hour back (following no symlink: for a symlink, its own time).
fn backdate(path: &Path) {
    let then = an_hour_ago()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let tv = nix::sys::time::TimeVal::new(then.as_secs() as _, 0);
    nix::sys::stat::lutimes(path, &tv, &tv).unwrap();
    let m = fs::symlink_metadata(path).unwrap();
    assert!(
        m.modified().unwrap() < SystemTime::now() - Duration::from_secs(600),
        "{} was not backdated",
        path.display()
    );
}

/// Waits until the wall clock is well past the last change (ctime) of `path`'s entry, so
/// a `file:` check cannot take it for a change after a spawn that comes next, whatever the
/// grain of the clocks (the kernel may stamp a fine-grained ctime, pm compares it with the
/// coarse clock).
fn settle_ctime(path: &Path) {
    let m = fs::symlink_metadata(path).unwrap();
    let changed = SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(m.ctime()).unwrap(),
            u32::try_from(m.ctime_nsec()).unwrap(),
        );
    wait_until("the clock is well past the file's last change", || {
        SystemTime::now() > changed + Duration::from_millis(100)
    });
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// Real, effective, saved and filesystem uid of a process, from /proc/PID/status.
fn uids_of(pid: i32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid: line");
    line.split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect()
}

/// Lines pm-TOOL printed about NAME itself (not the log tail it quotes).
fn own_lines(out: &str, tool: &str, name: &str) -> Vec<String> {
    let prefix = format!("{tool}: {name}:");
    out.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(String::from)
        .collect()
}

/// pm-status must not call NAME running: a non-zero exit, and no JSON object (if it
/// printed any) says `running`.
#[track_caller]
fn assert_not_reported_running(out: &Output) {
    assert_ne!(
        out.status.code(),
        Some(0),
        "pm-status says running: {}",
        describe(out)
    );
    if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&out.stdout) {
        for it in items {
            assert_ne!(it["state"], "running", "pm-status: {}", describe(out));
        }
    }
}

/// Waits until NAME's record says `starting` and its service process runs.
fn wait_starting(sb: &Sandbox, name: &str) -> i32 {
    let mut pid = 0;
    wait_until("the record says starting, with a live pid", || {
        let Some(r) = sb.record(name) else {
            return false;
        };
        match r["pid"].as_i64() {
            Some(p) if r["phase"] == "starting" && is_alive(p as i32) => {
                pid = p as i32;
                true
            }
            _ => false,
        }
    });
    pid
}

/// Positive control for `file:`: `pm-start y --ready file:FLAG` whose service touches FLAG
/// is ready; then it stops and nothing is left.
#[track_caller]
fn assert_ready_when_the_service_touches(sb: &Sandbox, flag: &Path) {
    let out = sb.start(
        "y",
        &[
            "--ready",
            &format!("file:{}", s(flag)),
            "--ready-timeout",
            "20s",
            "--",
            "sh",
            "-c",
            &format!("touch '{}'; exec sleep 1000", s(flag)),
        ],
    );
    assert_success(&out, "pm-start y (touches its ready file)");
    let pid = sb.pid("y").unwrap();
    assert!(is_alive(pid));
    assert_success(&sb.stop(&["y"]), "pm-stop y");
    assert_gone(pid);
    assert_nothing_runs(sb, &[]);
}

/// `pm-start NAME --ready CHECK --ready-timeout 2s -- sleep 1000` must fail (exit 1) at
/// about the timeout and leave nothing running.
#[track_caller]
fn assert_not_ready_within_2s(sb: &Sandbox, name: &str, check: &str, owned: &[i32]) {
    let t = Instant::now();
    let out = sb
        .cmd("pm-start")
        .args([name, "--ready", check, "--ready-timeout", "2s"])
        .args(["--", "sleep", "1000"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let took = t.elapsed();
    assert_code(&out, 1);
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "pm-start should give up at its 2 s ready timeout, took {took:?}: {}",
        describe(&out)
    );
    assert_nothing_runs(sb, owned);
}

// ---------------------------------------------------------------------------------------
// 1, 2: PID files that are symlinks

#[test]
fn symlinked_pid_file_never_lends_its_targets_owner() {
    if !root_or_skip(ROOT_FOR) {
        return;
    }
    let sb = Sandbox::new();
    let d = nobody_dir(&sb, "d");
    // root's daemon and its root-owned PID file, outside nobody's directory.
    let daemon = sleeper(&sb);
    let rootd = sb.path("rootd.pid");
    write_atomic(&rootd, &format!("{}\n", daemon.pid()));
    assert_eq!(fs::metadata(&rootd).unwrap().uid(), 0);
    // nobody plants app.pid -> root's PID file in its own directory.
    let link = d.join("app.pid");
    symlink(&rootd, &link).unwrap();
    lchown(&link, Some(NOBODY), Some(NOBODY)).unwrap();
    let template = format!("{}/{{name}}.pid", s(&d));

    let status = sb
        .cmd("pm-status")
        .env("PM_PIDFILE", &template)
        .args(["--json", "app"])
        .output()
        .unwrap();
    let out = sb
        .cmd("pm-stop")
        .env("PM_PIDFILE", &template)
        .arg("app")
        .output()
        .unwrap();
    assert!(
        is_alive(daemon.pid()),
        "pm-stop killed root's daemon through nobody's symlink: {}",
        describe(&out)
    );
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("symbolic link"),
        "stderr should say the PID file is a symbolic link: {}",
        describe(&out)
    );
    assert_not_reported_running(&status);
    // Root's PID file is untouched.
    assert_eq!(
        fs::read_to_string(&rootd).unwrap(),
        format!("{}\n", daemon.pid())
    );
    assert_nothing_runs(&sb, &[daemon.pid()]);
}

#[test]
fn pid_file_symlinked_into_proc_is_refused_and_signals_nothing() {
    let sb = Sandbox::new();
    let d = sb.path("d");
    fs::create_dir(&d).unwrap();
    let link = d.join("app.pid");
    symlink("/proc/sys/kernel/ns_last_pid", &link).unwrap();
    let template = format!("{}/{{name}}.pid", s(&d));
    // The last PID handed out is (likely) this sleep's.
    let victim = sleeper(&sb);

    let status = sb
        .cmd("pm-status")
        .env("PM_PIDFILE", &template)
        .args(["--json", "app"])
        .output()
        .unwrap();
    assert_not_reported_running(&status);

    let out = sb
        .cmd("pm-stop")
        .env("PM_PIDFILE", &template)
        .arg("app")
        .output()
        .unwrap();
    assert!(
        is_alive(victim.pid()),
        "pm-stop signalled the last PID the kernel handed out: {}",
        describe(&out)
    );
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains("symbolic link"),
        "stderr should say the PID file is a symbolic link: {}",
        describe(&out)
    );
    assert_nothing_runs(&sb, &[victim.pid()]);
}

// ---------------------------------------------------------------------------------------
// 3: template instance `..`

#[test]
fn dot_and_dot_dot_are_never_an_instance() {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("d")).unwrap();
    // `<sandbox>/d/{instance}/x.pid` with instance `..` would be `<sandbox>/x.pid`.
    let victim = sleeper(&sb);
    write_atomic(&sb.path("x.pid"), &format!("{}\n", victim.pid()));
    let template = format!("{}/d/{{instance}}/x.pid", s(sb.dir.path()));

    for name in ["svc@..", "svc@."] {
        let instance = &name[4..];
        // With PM_PIDFILE first, while NAME has no record (a record would take precedence).
        let runs: Vec<(&str, Output)> = vec![
            (
                "pm-status (PM_PIDFILE)",
                sb.cmd("pm-status")
                    .env("PM_PIDFILE", &template)
                    .args(["--json", name])
                    .output()
                    .unwrap(),
            ),
            (
                "pm-stop (PM_PIDFILE)",
                sb.cmd("pm-stop")
                    .env("PM_PIDFILE", &template)
                    .arg(name)
                    .output()
                    .unwrap(),
            ),
            ("pm-status", sb.cmd("pm-status").arg(name).output().unwrap()),
            ("pm-stop", sb.cmd("pm-stop").arg(name).output().unwrap()),
            (
                "pm-start",
                sb.cmd("pm-start")
                    .args([name, "--", "true"])
                    .output()
                    .unwrap(),
            ),
        ];
        assert!(
            is_alive(victim.pid()),
            "{name}: pm-stop climbed out of the template's directory and killed the sleep"
        );
        for (what, out) in &runs {
            assert_eq!(
                out.status.code(),
                Some(2),
                "{what} {name}: a usage error expected: {}",
                describe(out)
            );
            assert!(
                stderr(out).contains(instance),
                "{what} {name}: stderr should name {instance:?}: {}",
                describe(out)
            );
        }
        assert!(sb.record(name).is_none(), "{name}: a record was written");
    }
    assert_eq!(
        fs::read_to_string(sb.path("x.pid")).unwrap(),
        format!("{}\n", victim.pid()),
        "the PID file outside the template's directory was touched"
    );
    assert_nothing_runs(&sb, &[victim.pid()]);
}

// ---------------------------------------------------------------------------------------
// 4, 5, 6: the log

/// Root's secret file, outside nobody's directory.
fn secret_file(sb: &Sandbox) -> PathBuf {
    let f = sb.path("secret");
    fs::write(&f, "secret\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    f
}

#[track_caller]
fn assert_secret_untouched(f: &Path) {
    let m = fs::metadata(f).unwrap();
    assert_eq!(
        fs::read_to_string(f).unwrap(),
        "secret\n",
        "content changed"
    );
    assert_eq!(m.uid(), 0, "root's file was handed to uid {}", m.uid());
    assert_eq!(m.gid(), 0, "root's file was handed to gid {}", m.gid());
    assert_eq!(m.mode() & 0o7777, 0o600, "mode changed");
}

#[test]
fn log_swapped_for_a_symlink_or_hard_link_is_neither_followed_nor_chowned() {
    if !root_or_skip(ROOT_FOR) {
        return;
    }
    let sb = shared_sandbox();
    let d = nobody_dir(&sb, "d");
    let log = d.join("web.log");
    let out = sb.start(
        "web",
        &["--user", "nobody", "--log", s(&log), "--", "sleep", "1000"],
    );
    assert_success(&out, "pm-start web --user nobody");
    let pid = sb.pid("web").unwrap();
    assert!(is_alive(pid));
    assert_success(&sb.stop(&["web"]), "pm-stop web");
    assert_gone(pid);
    let secret = secret_file(&sb);

    // nobody replaces its log by a symlink to root's secret file.
    fs::remove_file(&log).unwrap();
    symlink(&secret, &log).unwrap();
    lchown(&log, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = sb.start("web", &[]);
    assert_secret_untouched(&secret);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(s(&log)) && err.contains("symbolic link"),
        "stderr should name the log and say it is a symbolic link: {}",
        describe(&out)
    );
    assert_nothing_runs(&sb, &[]);

    // ... or by a hard link to it (root made it here: the kernel's protected_hardlinks
    // stops nobody, but not every system sets it).
    fs::remove_file(&log).unwrap();
    fs::hard_link(&secret, &log).unwrap();
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 2);
    let out = sb.start("web", &[]);
    assert_secret_untouched(&secret);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(s(&log)) && (err.contains("hard link") || err.contains("links")),
        "stderr should name the log and its extra links: {}",
        describe(&out)
    );
    assert_nothing_runs(&sb, &[]);
}

#[test]
fn fifo_as_log_fails_fast_instead_of_hanging() {
    let sb = Sandbox::new();
    let fifo = sb.path("log.fifo");
    mkfifo(&fifo);
    let t = Instant::now();
    let out = sb
        .cmd("pm-start")
        .args(["x", "--log", s(&fifo), "--", "sleep", "1000"])
        .timeout(Duration::from_secs(10))
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "pm-start hung on a FIFO log ({took:?}; killed by the test): {}",
        describe(&out)
    );
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("not a regular file"),
        "stderr should say the log is not a regular file: {}",
        describe(&out)
    );
    assert_nothing_runs(&sb, &[]);
    assert!(
        fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "the FIFO is left alone"
    );

    let t = Instant::now();
    let out = sb
        .cmd("pm-stop")
        .arg("x")
        .timeout(Duration::from_secs(10))
        .output()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "pm-stop hung: {}",
        describe(&out)
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(4)),
        "{}",
        describe(&out)
    );
    assert_nothing_runs(&sb, &[]);
}

#[test]
fn log_swapped_for_a_fifo_during_a_log_wait_still_times_out() {
    let sb = Sandbox::new();
    let mut run = sb.spawn_tool(
        "x",
        "pm-start",
        &[
            "x",
            "--ready",
            "log:never-printed",
            "--ready-timeout",
            "2s",
            "--",
            "sleep",
            "1000",
        ],
    );
    let pid = wait_starting(&sb, "x");
    let log = sb.state.join("x.log");
    let real = log.canonicalize().unwrap();
    // The service has its log open: the swap comes after pm-start opened it.
    wait_until("the service writes to its log", || {
        fs::read_link(format!("/proc/{pid}/fd/1")).is_ok_and(|t| t == real)
    });
    fs::remove_file(&log).unwrap();
    mkfifo(&log);

    let exited = run.wait_for_exit(Duration::from_secs(8));
    // Meanwhile (on a hang: while pm-start still waits) pm-stop must not block.
    let t = Instant::now();
    let stop = sb
        .cmd("pm-stop")
        .arg("x")
        .timeout(Duration::from_secs(10))
        .output()
        .unwrap();
    let stop_took = t.elapsed();
    let done = run.finish(Duration::from_secs(8));
    assert!(
        exited,
        "pm-start did not exit by itself: {}",
        done.describe()
    );
    assert_eq!(done.status.code(), Some(1), "{}", done.describe());
    assert!(
        done.took >= Duration::from_millis(1500) && done.took < Duration::from_secs(8),
        "pm-start should give up at its 2 s ready timeout: {}",
        done.describe()
    );
    assert!(
        stop_took < Duration::from_secs(10),
        "pm-stop blocked {stop_took:?}: {}",
        describe(&stop)
    );
    assert_success(&stop, "pm-stop x");
    assert_gone(pid);
    assert_nothing_runs(&sb, &[]);
}

// ---------------------------------------------------------------------------------------
// 7: MAINPID

/// Waits until the file argv[1] holds a PID, then sends `MAINPID=<it>` and `READY=1`.
const MAINPID_PY: &str = r#"
import os, socket, sys, time
marker = sys.argv[1]
while True:
    try:
        with open(marker) as f:
            text = f.read()
        if text.endswith("\n"):
            break
    except OSError:
        pass
    time.sleep(0.01)
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(("MAINPID=%s\n" % text.strip()).encode(), addr)
s.sendto(b"READY=1\n", addr)
time.sleep(1000)
"#;

fn mainpid_case(sb: &Sandbox, marker_dir: &Path, extra: &[&str]) {
    let marker = marker_dir.join("mainpid");
    let mut args = vec!["svc", "--ready", "notify", "--ready-timeout", "20s"];
    args.extend_from_slice(extra);
    args.extend(["--", "python3", "-c", MAINPID_PY, s(&marker)]);
    let run = sb.spawn_tool("svc", "pm-start", &args);
    let service = wait_starting(sb, "svc");
    // An unrelated process, newer than the service.
    let other = sleeper(sb);
    write_atomic(&marker, &format!("{}\n", other.pid()));

    let done = run.finish(Duration::from_secs(25));
    assert!(
        is_alive(other.pid()),
        "the unrelated process was signalled: {}",
        done.describe()
    );
    assert_eq!(done.status.code(), Some(1), "{}", done.describe());
    assert!(
        own_lines(&done.stderr, "pm-start", "svc")
            .iter()
            .any(|l| l.contains("MAINPID")),
        "pm-start should say it refused MAINPID: {}",
        done.describe()
    );
    assert_ne!(sb.pid("svc"), Some(other.pid()), "the record tracks it");
    assert_gone(service);
    assert_nothing_runs(sb, &[other.pid()]);

    let out = sb.stop(&["svc"]);
    assert!(
        is_alive(other.pid()),
        "pm-stop killed the unrelated process: {}",
        describe(&out)
    );
    assert_code(&out, 0);
    assert_nothing_runs(sb, &[other.pid()]);
}

#[test]
fn mainpid_naming_a_newer_unrelated_process_is_refused() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    mainpid_case(&sb, sb.dir.path(), &[]);
}

#[test]
fn mainpid_from_a_service_running_as_another_user_is_refused_too() {
    if !root_or_skip(ROOT_FOR) || !python_ok() {
        return;
    }
    let sb = shared_sandbox();
    let dir = sb.path("marker");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    mainpid_case(&sb, &dir, &["--user", "nobody"]);
}

// ---------------------------------------------------------------------------------------
// 8, 9, 10: readiness on evidence from this start

const TCP_SERVER_PY: &str = r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
time.sleep(1000)
"#;

const UNIX_SERVER_PY: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(16)
time.sleep(1000)
"#;

#[test]
fn tcp_ready_needs_the_services_own_listener() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let (port, theirs) = listen_on_free_port();
    assert_not_ready_within_2s(&sb, "x", &format!("tcp:{port}"), &[]);
    drop(theirs);

    // Positive control: a service that listens there itself is ready.
    let out = sb.start(
        "y",
        &[
            "--ready",
            &format!("tcp:{port}"),
            "--",
            "python3",
            "-c",
            TCP_SERVER_PY,
            &port.to_string(),
        ],
    );
    assert_success(&out, "pm-start y (own listener)");
    let pid = sb.pid("y").unwrap();
    assert!(is_alive(pid));
    assert_success(&sb.stop(&["y"]), "pm-stop y");
    assert_gone(pid);
}

#[test]
fn unix_ready_needs_the_services_own_listener() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let sock = sb.path("s.sock");
    let theirs = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert_not_ready_within_2s(&sb, "x", &format!("unix:{}", s(&sock)), &[]);
    drop(theirs);

    // Positive control: a service that binds and listens itself is ready.
    let own = sb.path("t.sock");
    let out = sb.start(
        "y",
        &[
            "--ready",
            &format!("unix:{}", s(&own)),
            "--",
            "python3",
            "-c",
            UNIX_SERVER_PY,
            s(&own),
        ],
    );
    assert_success(&out, "pm-start y (own socket)");
    let pid = sb.pid("y").unwrap();
    assert!(is_alive(pid));
    assert_success(&sb.stop(&["y"]), "pm-stop y");
    assert_gone(pid);
}

#[test]
fn file_ready_needs_a_file_newer_than_the_spawn() {
    let sb = Sandbox::new();
    // Left by a previous run.
    let flag = sb.path("ready.flag");
    fs::write(&flag, "").unwrap();
    backdate(&flag);
    settle_ctime(&flag);
    assert_not_ready_within_2s(&sb, "x", &format!("file:{}", s(&flag)), &[]);

    // A symlink (old) to an old file does not count either.
    let old = sb.path("old.txt");
    fs::write(&old, "").unwrap();
    backdate(&old);
    let link = sb.path("ready.link");
    symlink(&old, &link).unwrap();
    backdate(&link);
    settle_ctime(&link);
    assert_not_ready_within_2s(&sb, "z", &format!("file:{}", s(&link)), &[]);

    // Positive control: the service touches an old file: newer than the spawn, ready.
    let path2 = sb.path("ready2.flag");
    fs::write(&path2, "").unwrap();
    backdate(&path2);
    assert_ready_when_the_service_touches(&sb, &path2);
}

// ---------------------------------------------------------------------------------------
// 11: --user with --ready notify

const NOTIFY_PY: &str = r#"
import os, socket, time
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1\n", addr)
time.sleep(1000)
"#;

#[test]
fn notify_works_for_a_service_running_as_another_user() {
    if !root_or_skip(ROOT_FOR) || !python_ok() {
        return;
    }
    let sb = shared_sandbox();
    let out = sb
        .cmd("pm-start")
        .args(["n", "--user", "nobody", "--ready", "notify"])
        .args(["--ready-timeout", "20s", "--", "python3", "-c", NOTIFY_PY])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_success(&out, "pm-start --user nobody --ready notify");
    let pid = sb.pid("n").expect("record has a pid");
    assert!(is_alive(pid));
    assert_eq!(
        uids_of(pid),
        vec![NOBODY; 4],
        "the service runs as nobody (real, effective, saved, fs uid)"
    );
    assert_success(&sb.stop(&["n"]), "pm-stop n");
    assert_gone(pid);
    assert_nothing_runs(&sb, &[]);
}

// ---------------------------------------------------------------------------------------
// Review findings: a symlinked directory on the way, a full backlog, the notify directory,
// the exec: probe's user, a future mtime

/// Swaps `dir` (a directory of the service user) for a symlink to `target`, as that user
/// would: the directory is renamed away and the symlink, owned by `nobody`, takes its place.
fn swap_dir_for_symlink(dir: &Path, target: &Path) {
    let away = dir.with_extension("away");
    fs::rename(dir, &away).unwrap();
    symlink(target, dir).unwrap();
    lchown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    assert!(fs::symlink_metadata(dir).unwrap().file_type().is_symlink());
}

#[test]
fn log_reached_through_a_symlinked_directory_of_the_service_user_is_refused() {
    if !root_or_skip(ROOT_FOR) {
        return;
    }
    let sb = shared_sandbox();
    let home = nobody_dir(&sb, "home");
    let logs = home.join("logs");
    fs::create_dir(&logs).unwrap();
    chown(&logs, Some(NOBODY), Some(NOBODY)).unwrap();
    // Root's private directory and file, outside nobody's reach.
    let victim_dir = sb.path("victimdir");
    fs::create_dir(&victim_dir).unwrap();
    fs::set_permissions(&victim_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let victim = victim_dir.join("web.log");
    fs::write(&victim, "secret\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();

    let log = logs.join("web.log");
    let out = sb.start(
        "web",
        &[
            "--user",
            "nobody",
            "--log",
            s(&log),
            "--",
            "sh",
            "-c",
            "echo from-nobody; exec sleep 1000",
        ],
    );
    assert_success(&out, "pm-start web --user nobody");
    let pid = sb.pid("web").unwrap();
    assert_eq!(uids_of(pid), vec![NOBODY; 4], "the service runs as nobody");
    wait_until("the service wrote its log", || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("from-nobody"))
    });
    assert_success(&sb.stop(&["web"]), "pm-stop web");
    assert_gone(pid);

    // nobody swaps its logs directory for a symlink to root's directory.
    swap_dir_for_symlink(&logs, &victim_dir);
    let out = sb.start("web", &[]);
    assert_secret_untouched(&victim);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("symbolic link"),
        "stderr should say the log is reached through a symbolic link: {}",
        describe(&out)
    );
    assert_nothing_runs(&sb, &[]);

    // With the victim gone, pm must not create a file in root's directory either.
    fs::remove_file(&victim).unwrap();
    let out = sb.start("web", &[]);
    assert!(
        fs::symlink_metadata(&victim).is_err(),
        "pm-start created {} through nobody's symlink (owner {:?}): {}",
        victim.display(),
        fs::metadata(&victim).map(|m| m.uid()),
        describe(&out)
    );
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("symbolic link"),
        "stderr should say the log is reached through a symbolic link: {}",
        describe(&out)
    );
    assert_nothing_runs(&sb, &[]);
}

#[test]
fn pid_file_reached_through_a_symlinked_directory_of_the_service_user_is_refused() {
    if !root_or_skip(ROOT_FOR) {
        return;
    }
    let sb = Sandbox::new();
    let home = nobody_dir(&sb, "home");
    let run = home.join("run");
    fs::create_dir(&run).unwrap();
    chown(&run, Some(NOBODY), Some(NOBODY)).unwrap();
    // Root's daemon (a session of its own) and its PID file in a root directory.
    let daemon = Owned(
        sb.std_cmd("setsid")
            .args(["sleep", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn setsid sleep"),
    );
    let dpid = daemon.pid();
    wait_until("root's daemon runs in a session of its own", || {
        Stat::read(dpid).is_some_and(|s| s.session == dpid && s.comm == "sleep")
    });
    let root_run = sb.path("rootrun");
    fs::create_dir(&root_run).unwrap();
    let pidfile = root_run.join("app.pid");
    write_atomic(&pidfile, &format!("{dpid}\n"));

    // nobody swaps its run directory for a symlink to root's.
    swap_dir_for_symlink(&run, &root_run);
    let template = format!("{}/{{name}}.pid", s(&run));

    let status = sb
        .cmd("pm-status")
        .env("PM_PIDFILE", &template)
        .args(["--json", "app"])
        .output()
        .unwrap();
    let out = sb
        .cmd("pm-stop")
        .env("PM_PIDFILE", &template)
        .arg("app")
        .output()
        .unwrap();
    assert!(
        is_alive(dpid),
        "pm-stop killed root's daemon through nobody's directory symlink: {}",
        describe(&out)
    );
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains("symbolic link"),
        "stderr should say the PID file is reached through a symbolic link: {}",
        describe(&out)
    );
    assert_not_reported_running(&status);
    assert_eq!(
        fs::read_to_string(&pidfile).unwrap(),
        format!("{dpid}\n"),
        "root's PID file was touched"
    );
    assert_nothing_runs(&sb, &[dpid]);
}

/// Binds a unix socket (at a temporary name), listen(0), fills the backlog with its own
/// non-blocking connects, then moves the socket to argv[1]; never accepts.
const FULL_BACKLOG_PY: &str = r#"
import os, socket, sys, time
path = sys.argv[1]
tmp = path + ".tmp"
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(tmp)
s.listen(0)
held = []
while True:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.setblocking(False)
    try:
        c.connect(tmp)
    except BlockingIOError:
        break
    held.append(c)
    if len(held) > 64:
        sys.exit("the backlog never filled")
os.rename(tmp, path)
time.sleep(1000)
"#;

#[test]
fn unix_ready_against_a_full_backlog_honours_the_ready_timeout() {
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let sock = sb.path("full.sock");
    let t = Instant::now();
    let out = sb
        .cmd("pm-start")
        .args(["x", "--ready", &format!("unix:{}", s(&sock))])
        .args(["--ready-timeout", "2s", "--"])
        .args(["python3", "-c", FULL_BACKLOG_PY])
        .arg(&sock)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "pm-start blocked on a listener with a full backlog ({took:?}; killed by the test): {}",
        describe(&out)
    );
    assert_code(&out, 1);
    assert!(
        took >= Duration::from_millis(1500),
        "pm-start should give up at its 2 s ready timeout, took {took:?}: {}",
        describe(&out)
    );
    assert_nothing_runs(&sb, &[]);
}

/// Before READY=1, tries to replace the notify socket's directory by a symlink to argv[1]
/// (rename it away, symlink in its place); then sends READY=1 to wherever the socket is.
const NOTIFY_DIR_SWAP_PY: &str = r#"
import os, socket, sys, time
addr = os.environ["NOTIFY_SOCKET"]
d = os.path.dirname(addr)
moved = d + ".moved"
try:
    os.rename(d, moved)
    addr = os.path.join(moved, os.path.basename(addr))
    os.symlink(sys.argv[1], d)
    print("swapped", d, flush=True)
except OSError as e:
    print("swap refused:", e, flush=True)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1\n", addr)
time.sleep(1000)
"#;

#[test]
fn notify_directory_cannot_be_swapped_by_a_service_running_as_another_user() {
    if !root_or_skip(ROOT_FOR) || !python_ok() {
        return;
    }
    let sb = shared_sandbox();
    // pm-start's own temp dir (TMPDIR), sticky and world-writable like /tmp, so that what
    // pm leaves there is this test's alone.
    let tmp = sb.path("tmp");
    fs::create_dir(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    // Root's directory V with a file named like the socket.
    let v = sb.path("v");
    fs::create_dir(&v).unwrap();
    fs::write(v.join("notify"), "root's\n").unwrap();

    let out = sb
        .cmd("pm-start")
        .env("TMPDIR", &tmp)
        .args(["n", "--user", "nobody", "--ready", "notify"])
        .args(["--ready-timeout", "10s", "--", "python3", "-c"])
        .args([NOTIFY_DIR_SWAP_PY, s(&v)])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let log = sb.log("n");
    let _ = sb.stop(&["n"]);
    assert!(
        log.contains("swap"),
        "the service did not get to try the swap: {}\n--- log\n{log}",
        describe(&out)
    );
    assert!(
        v.join("notify").exists(),
        "pm removed root's V/notify through the service user's symlink: {}\n--- log\n{log}",
        describe(&out)
    );
    assert_eq!(fs::read_to_string(v.join("notify")).unwrap(), "root's\n");
    let left: Vec<String> = fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pm-notify."))
        .collect();
    assert!(
        left.is_empty(),
        "notify directories left in TMPDIR: {left:?}: {}\n--- log\n{log}",
        describe(&out)
    );
    assert_nothing_runs(&sb, &[]);
}

#[test]
fn exec_probe_runs_as_the_services_user() {
    if !root_or_skip(ROOT_FOR) {
        return;
    }
    let sb = shared_sandbox();
    let d = nobody_dir(&sb, "d");
    let marker = d.join("probe-uid");
    let check = format!("exec:id -u > '{}'; true", s(&marker));
    let out = sb
        .cmd("pm-start")
        .args(["x", "--user", "nobody", "--cwd", s(&d), "--ready", &check])
        .args(["--ready-timeout", "10s", "--", "sleep", "1000"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let uid = fs::read_to_string(&marker).unwrap_or_default();
    let owner = fs::metadata(&marker).map(|m| m.uid()).ok();
    assert_success(&out, "pm-start --user nobody --ready exec:...");
    let pid = sb.pid("x").unwrap();
    assert_eq!(uids_of(pid), vec![NOBODY; 4], "the service runs as nobody");
    assert_eq!(
        uid.trim(),
        NOBODY.to_string(),
        "the exec: probe ran as uid {uid:?}, not as the service's user"
    );
    assert_eq!(owner, Some(NOBODY), "the probe's file is nobody's");
    assert_success(&sb.stop(&["x"]), "pm-stop x");
    assert_gone(pid);
    assert_nothing_runs(&sb, &[]);
}

#[test]
fn file_ready_with_a_future_mtime_does_not_count() {
    if !require("touch", "coreutils") {
        return;
    }
    let sb = Sandbox::new();
    let flag = sb.path("ready.flag");
    let touch = sb
        .std_cmd("touch")
        .args(["-d", "+1 year"])
        .arg(&flag)
        .status()
        .unwrap();
    assert!(touch.success(), "touch -d '+1 year': {touch}");
    let m = fs::metadata(&flag).unwrap();
    assert!(
        m.modified().unwrap() > SystemTime::now() + Duration::from_secs(300 * 86400),
        "the mtime is a year ahead"
    );
    settle_ctime(&flag);
    assert_not_ready_within_2s(&sb, "x", &format!("file:{}", s(&flag)), &[]);

    // Positive control: a service that touches it is ready.
    assert_ready_when_the_service_touches(&sb, &flag);
}

/// Live (not zombie) threads of process `pid`, from /proc/PID/task: a process whose main
/// thread has exited shows `Z` in /proc/PID/stat while its other threads run.
fn live_threads(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter(|t| {
                    fs::read_to_string(t.path().join("stat"))
                        .ok()
                        .and_then(|s| Stat::parse(&s))
                        .is_some_and(|s| !matches!(s.state, 'Z' | 'X' | 'x'))
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_service_whose_main_thread_exited_is_running_and_is_stopped() {
    // The main thread calls pthread_exit while another thread runs on: /proc/PID/stat
    // says Z, yet the process lives. It must neither read as dead nor survive pm-stop.
    if !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    let code = "import threading, ctypes, time\n\
                threading.Thread(target=time.sleep, args=(1000,)).start()\n\
                print('up', flush=True)\n\
                ctypes.CDLL(None).pthread_exit(None)";
    let out = sb.start(
        "ghost",
        &["--ready", "log:^up$", "--", "python3", "-c", code],
    );
    assert_success(&out, "pm-start ghost");
    let pid = sb.pid("ghost").unwrap();
    wait_until("the main thread has exited", || {
        procfs::Stat::read(pid).is_some_and(|s| s.state == 'Z')
    });
    assert!(live_threads(pid) >= 1, "the other thread runs on");
    assert_eq!(sb.state_of("ghost"), "running");
    let out = sb.stop(&["ghost", "--timeout", "2s"]);
    assert_code(&out, 0);
    wait_until("no thread of it is left", || live_threads(pid) == 0);
    if let Some(dir) = sb.cgroup_dir() {
        assert!(
            procfs::cgroup_pids(&dir).is_empty(),
            "left in the cgroup: {:?}",
            procfs::cgroup_pids(&dir)
        );
    }
}

/// Runs a pm tool with `PM_CGROUP=on` (a cgroup per start, or an error).
fn contained(sb: &Sandbox, tool: &str, args: &[&str]) -> Output {
    sb.cmd(tool)
        .env("PM_CGROUP", "on")
        .args(args)
        .output()
        .expect("run the tool")
}

#[test]
fn with_a_cgroup_a_pid_file_naming_a_process_outside_it_is_not_the_service() {
    // Without a cgroup a PID file rewritten to name a newer process is trusted (the
    // owner and time rules pass); with one, the process must be in the cgroup.
    if !is_root() || procfs::cgroup2_mount().is_none() {
        skip("needs root and a cgroup2 hierarchy");
        return;
    }
    let sb = Sandbox::new();
    let pidfile = sb.path("svc.pid");
    let pf = s(&pidfile).to_string();
    let script = format!("echo $$ > {pf}; exec sleep 1000");
    let out = contained(
        &sb,
        "pm-start",
        &[
            "svc",
            "--pidfile",
            &pf,
            "--ready",
            "pidfile",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert_success(&out, "pm-start svc");
    let svc = sb.pid("svc").unwrap();
    let outsider = sleeper(&sb);
    write_atomic(&pidfile, &format!("{}\n", outsider.pid()));
    let v = sb.status_json(&["svc"]).remove(0);
    assert_eq!(v["tracking"], "cgroup", "{v}");
    assert_ne!(
        v["pid"],
        outsider.pid(),
        "a process outside the cgroup counted: {v}"
    );
    let out = sb.stop(&["svc"]);
    assert_code(&out, 0);
    assert!(
        is_alive(outsider.pid()),
        "pm-stop killed a process outside the service's cgroup"
    );
    assert_gone(svc);
}

#[test]
fn a_record_copied_from_another_state_directory_never_acts_on_that_ones_cgroup() {
    if !is_root() || procfs::cgroup2_mount().is_none() {
        skip("needs root and a cgroup2 hierarchy");
        return;
    }
    let a = Sandbox::new();
    let b = Sandbox::new();
    let out = contained(&a, "pm-start", &["web", "--", "sleep", "1000"]);
    assert_success(&out, "pm-start web in a");
    let pid = a.pid("web").unwrap();
    // b gets a cgroup id of its own, then a's record.
    let out = contained(&b, "pm-start", &["other", "--", "sleep", "1000"]);
    assert_success(&out, "pm-start other in b");
    fs::copy(a.state.join("web.json"), b.state.join("web.json")).unwrap();
    // Its PID and start time match a live process, but the cgroup is not b's: the record
    // is refused like any record that cannot be read, and nothing is signalled.
    assert_eq!(b.state_of("web"), "unknown");
    let out = contained(&b, "pm-stop", &["web"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("another state directory"),
        "{}",
        describe(&out)
    );
    assert!(is_alive(pid), "b's pm-stop stopped a's service");
    // pm-stopall stops b's own service and leaves the foreign record alone.
    let out = contained(&b, "pm-stopall", &[]);
    assert!(is_alive(pid), "b's pm-stopall stopped a's service");
    assert!(
        stderr(&out).contains("pm-stopall: other: stopped"),
        "{}",
        describe(&out)
    );
    assert_eq!(a.state_of("web"), "running");
}
