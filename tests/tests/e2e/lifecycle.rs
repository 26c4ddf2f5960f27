//! The start lifecycle as other starts see it (issue 18): a second `pm-start NAME` while
//! the service's monitor is starting it, or while it waits to restart it, waits for the
//! outcome instead of failing or claiming success; leftovers of killed record writes go;
//! a monitor whose state directory is deleted under it removes the run's empty cgroup; a
//! monitor that gives up on a full state directory leaves its reason.
//!
//! Judged with the harness's /proc reader and the files on disk, never with pm-core.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pm_tests::*;

/// Polls `f` every 5 ms until it holds; fails after `limit`.
#[track_caller]
fn within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn alive(pid: i32) -> bool {
    Stat::read(pid).is_some_and(|s| !s.is_zombie())
}

#[test]
fn a_second_start_waits_for_the_monitor_starting_it_and_succeeds_when_it_is_up() {
    let sb = Sandbox::new();
    let flag = sb.path("ready-flag");
    // Ready 1.5 s after the spawn: long enough for a second start to arrive meanwhile.
    let first = sb.spawn_tool(
        "first",
        "pm-start",
        &[
            "web",
            "--restart",
            "always",
            "--ready",
            &format!("file:{}", s(&flag)),
            "--ready-timeout",
            "20s",
            "--stop-timeout",
            "1s",
            "--",
            "sh",
            "-c",
            &format!("sleep 1.5; touch {}; exec sleep 1000", s(&flag)),
        ],
    );
    within("web is starting", PATIENCE, || {
        sb.state_of("web") == "starting"
    });
    let t = Instant::now();
    let second = sb.start("web", &[]);
    let took = t.elapsed();
    assert_success(&second, "the second pm-start");
    assert!(
        stderr(&second).contains("waiting for the outcome"),
        "{}",
        describe(&second)
    );
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        describe(&second)
    );
    // The old second start waited for the monitor to exit: ready timeout + stop timeout +
    // 10 s, then failed. This one returns once the service is up.
    assert!(
        took < Duration::from_secs(8),
        "the second start took {took:?}"
    );
    let done = first.finish(PATIENCE);
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    let pid = sb.pid("web").expect("a pid");
    assert!(alive(pid), "pm-start said up, but pid {pid} is not running");
    assert!(flag.exists());
    // Exactly one service process ran: the sh that became sleep.
    assert_eq!(sb.rec("web")["restarts"].as_u64().unwrap_or(0), 0);
    assert_success(&sb.stop(&["web"]), "pm-stop");
    assert_gone(pid);
}

#[test]
fn a_start_during_backoff_waits_for_the_restart_and_exits_0_only_when_it_runs() {
    let sb = Sandbox::new();
    let crashed = sb.path("crashed");
    let go = sb.path("go");
    // The first run exits 3 once the test says so; the restart runs for good.
    let script = format!(
        "if [ -e {c} ]; then exec sleep 1000; fi; while [ ! -e {g} ]; do sleep 0.02; done; touch {c}; exit 3",
        c = s(&crashed),
        g = s(&go)
    );
    let first = sb.start_sh(
        "job",
        &["--restart", "on-failure", "--restart-delay", "1500ms"],
        &script,
    );
    fs::write(&go, "").unwrap();
    within("job is in backoff", PATIENCE, || {
        sb.state_of("job") == "backoff"
    });
    let t = Instant::now();
    let out = sb.start("job", &[]);
    let took = t.elapsed();
    assert_success(&out, "pm-start during backoff");
    assert!(
        stderr(&out).contains("waiting for its monitor"),
        "{}",
        describe(&out)
    );
    // Exit 0 means it runs: a new process, alive now.
    let pid = sb.pid("job").expect("a pid");
    assert_ne!(pid, first, "the restart has a new process");
    assert!(alive(pid), "pm-start exited 0 but pid {pid} is not running");
    assert_eq!(sb.state_of("job"), "running");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_success(&sb.stop(&["job"]), "pm-stop");
    assert_gone(pid);
}

#[test]
fn temp_files_of_killed_record_writes_are_removed_by_the_next_start() {
    let sb = Sandbox::new();
    let pid = sb.start_sh("svc", &[], "exec sleep 1000");
    assert_success(&sb.stop(&["svc"]), "pm-stop");
    assert_gone(pid);
    // As a writer killed between create and rename leaves them: a PID above pid_max is
    // never alive. A live writer's temp file (this test's PID) stays.
    let dead = sb.state.join(".svc.json.2147483647.0.tmp");
    let other = sb.state.join(".svc2.json.2147483647.0.tmp");
    let live = sb
        .state
        .join(format!(".svc.json.{}.0.tmp", std::process::id()));
    for f in [&dead, &other, &live] {
        fs::write(f, "{\"half\":").unwrap();
    }
    let pid = sb.start_sh("svc", &[], "exec sleep 1000");
    assert!(!dead.exists(), "a dead writer's temp file was left");
    assert!(
        other.exists(),
        "another NAME's temp file is not this start's to remove"
    );
    assert!(live.exists(), "a live writer's temp file was removed");
    assert_success(&sb.stop(&["svc"]), "pm-stop");
    assert_gone(pid);
}

#[test]
fn a_monitor_whose_state_dir_was_deleted_removes_the_ended_runs_empty_cgroup() {
    let sb = Sandbox::new();
    let pid = sb.start_sh("svc", &["--restart", "always"], "exec sleep 1000");
    let rec = sb.rec("svc");
    let Some(cg) = rec["cgroup"].as_str().map(PathBuf::from) else {
        skip("a_monitor_whose_state_dir_was_deleted: no cgroup tracking here");
        return;
    };
    let monitor = rec["monitor"]["pid"].as_i64().expect("a monitor") as i32;
    assert!(cg.is_dir());
    fs::remove_dir_all(&sb.state).unwrap();
    sigkill(pid);
    within("the monitor exits", PATIENCE, || !alive(monitor));
    within("the cgroup is removed", PATIENCE, || !cg.exists());
    assert_gone(pid);
}

#[test]
fn a_monitor_that_cannot_write_the_state_dir_leaves_its_reason_for_pm_status() {
    if !root_or_skip("a_monitor_that_cannot_write: mounts a small tmpfs") {
        return;
    }
    let sb = Sandbox::new();
    fs::create_dir(&sb.state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
        .arg(&sb.state)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        skip("a_monitor_that_cannot_write: cannot mount a tmpfs");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(sb.state.clone());
    let pid = sb.start_sh(
        "svc",
        &["--restart", "always", "--log", s(&sb.path("svc.log"))],
        "exec sleep 1000",
    );
    let monitor = sb.rec("svc")["monitor"]["pid"].as_i64().expect("a monitor") as i32;
    // Fill the state dir, then end the service: the monitor cannot write its record.
    let fill = sb.state.join("fill");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", s(&fill)))
        .stderr(std::process::Stdio::null())
        .status();
    sigkill(pid);
    within("the monitor exits", PATIENCE, || !alive(monitor));
    let json = sb.status_json(&["svc"]);
    let text = json[0].to_string();
    assert!(
        text.contains("No space left on device"),
        "pm-status does not say why supervision ended: {text}"
    );
    let _ = fs::remove_file(&fill);
    sb.stop(&["svc"]);
}
