//! pm-wait: it waits (does not return early), wakes on the event (a record written, a
//! process that ends) rather than a timer, and gives up at its timeout.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pm_tests::*;

#[test]
fn waits_for_ready_and_wakes_when_the_start_records_it() {
    let sb = Sandbox::new();
    let start = sb.spawn_tool(
        "start",
        "pm-start",
        &["web", "--ready", "file:go", "--", "sleep", "1000"],
    );
    wait_until("web is starting", || sb.state_of("web") == "starting");
    let mut waiter = sb.spawn_tool("wait", "pm-wait", &["web"]);
    // Still starting a while later: pm-wait must not have returned.
    assert!(
        !waiter.wait_for_exit(Duration::from_millis(300)),
        "returned before web was ready"
    );
    std::fs::write(sb.path("go"), "").unwrap();
    let done = start.finish(Duration::from_secs(30));
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    let ready_at = Instant::now();
    let w = waiter.finish(Duration::from_secs(30));
    assert_eq!(w.code(), Some(0), "{}", w.describe());
    assert!(
        ready_at.elapsed() < Duration::from_secs(2),
        "woke {:?} after the record",
        ready_at.elapsed()
    );
    assert_success(&sb.stop(&["web"]), "pm-stop");
}

#[test]
fn wakes_on_a_crash_through_the_pidfd() {
    let sb = Sandbox::new();
    let pid = sb.start_sh("w", &[], "exec sleep 1000");
    let mut waiter = sb.spawn_tool("wait", "pm-wait", &["--for", "exited", "w"]);
    assert!(
        !waiter.wait_for_exit(Duration::from_millis(300)),
        "returned while w ran"
    );
    let killed = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let w = waiter.finish(Duration::from_secs(30));
    assert_eq!(w.code(), Some(0), "{}", w.describe());
    // No record is written on a crash: only the pidfd can wake it this soon (PID 1 here
    // reaps orphans only every second or two).
    assert!(
        killed.elapsed() < Duration::from_millis(900),
        "woke {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(sb.state_of("w"), "dead");
}

#[test]
fn gives_up_at_the_timeout_and_says_the_state() {
    let sb = Sandbox::new();
    sb.start_sh("w", &[], "exec sleep 1000");
    let t = Instant::now();
    let out = sb
        .cmd("pm-wait")
        .args(["--for", "stopped", "--timeout", "300ms", "w"])
        .output()
        .unwrap();
    let took = t.elapsed();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("pm-wait: w: still running after 300ms"),
        "{}",
        describe(&out)
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_success(&sb.stop(&["w"]), "pm-stop");
}
