//! pm-restart: a new process from the record, the old one gone, one copy only, also when
//! a pm-start of the same name comes in the middle, and for a supervised service.

use std::time::Duration;

use pm_tests::*;

/// Live processes of the sandbox whose command line contains `needle`.
fn copies(sb: &Sandbox, needle: &str) -> Vec<i32> {
    sb.processes()
        .into_iter()
        .filter(|p| cmdline(*p).iter().any(|a| a.contains(needle)))
        .collect()
}

#[test]
fn restarts_from_the_record_with_one_copy_even_with_a_start_in_between() {
    let sb = Sandbox::new();
    // Slow to stop: a pm-start that comes meanwhile must wait for the whole restart.
    let old = sb.start_sh(
        "w",
        &[],
        "trap 'touch stopping; sleep 0.4; exit 0' TERM; echo marker-w >/dev/null; sleep 1000 & wait",
    );
    let restart = sb.spawn_tool("restart", "pm-restart", &["w"]);
    wait_until("the stop has begun", || sb.path("stopping").exists());
    let start = sb.spawn_tool("start", "pm-start", &["w"]);
    let r = restart.finish(Duration::from_secs(30));
    assert_eq!(r.code(), Some(0), "{}", r.describe());
    let s = start.finish(Duration::from_secs(30));
    assert_eq!(s.code(), Some(0), "{}", s.describe());
    let new = sb.pid("w").unwrap();
    assert_ne!(new, old);
    assert_gone(old);
    assert!(is_alive(new));
    assert!(
        s.stderr.contains(&format!("already running, pid {new}")),
        "{}",
        s.describe()
    );
    assert!(
        r.stderr.contains("pm-restart: w: stopped by SIGTERM"),
        "{}",
        r.describe()
    );
    assert_eq!(
        copies(&sb, "marker-w").len(),
        1,
        "{:?}",
        copies(&sb, "marker-w")
    );
    assert_success(&sb.stop(&["w"]), "pm-stop");
}

#[test]
fn a_supervised_service_gets_a_new_monitor_and_stays_supervised() {
    let sb = Sandbox::new();
    let old = sb.start_sh("s", &["--restart", "always"], "exec sleep 1234");
    let mon = sb.rec("s")["monitor"]["pid"].as_i64().unwrap() as i32;
    let out = sb.cmd("pm-restart").arg("s").output().unwrap();
    assert_success(&out, "pm-restart");
    let new = sb.pid("s").unwrap();
    assert_ne!(new, old);
    assert_gone(old);
    wait_until("the old monitor is gone", || !is_alive(mon));
    let mon2 = sb.rec("s")["monitor"]["pid"].as_i64().unwrap() as i32;
    assert!(is_alive(mon2) && mon2 != mon);
    assert_eq!(copies(&sb, "1234").len(), 1);
    assert_eq!(sb.state_of("s"), "running");
    let out = sb.cmd("pm-restart").arg("nope").output().unwrap();
    assert_code(&out, 4);
    assert_success(&sb.stop(&["s"]), "pm-stop");
}
