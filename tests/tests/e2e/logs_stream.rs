//! pm-logs: several logs in one stream, prefixed with the service's name; `-f` follows a
//! log through many rotations and prints every line exactly once, in order.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pm_tests::*;

#[test]
fn prints_each_services_lines_prefixed_with_its_name() {
    let sb = Sandbox::new();
    sb.start_sh("a", &[], "echo one; echo two; exec sleep 1000");
    sb.start_sh("bb", &[], "echo three; exec sleep 1000");
    wait_until("both logged", || {
        sb.log("a").contains("two") && sb.log("bb").contains("three")
    });
    let out = sb.cmd("pm-logs").args(["-n", "all"]).output().unwrap();
    assert_success(&out, "pm-logs");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["a  | one", "a  | two", "bb | three"],
        "{}",
        describe(&out)
    );
    let out = sb
        .cmd("pm-logs")
        .args(["-n", "1", "a", "nope"])
        .output()
        .unwrap();
    assert_code(&out, 4);
    assert_eq!(stdout(&out), "a | two\n");
    assert_success(&sb.stop(&["a", "bb"]), "pm-stop");
}

#[test]
fn follows_a_log_through_rotations_without_losing_or_repeating_a_line() {
    let sb = Sandbox::new();
    sb.start_sh(
        "r",
        &["--log-max-size", "1K", "--log-keep", "100"],
        "while [ ! -e go ]; do sleep 0.01; done; i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done; exec sleep 1000",
    );
    let mut follow = sb.spawn_tool("follow", "pm-logs", &["-f", "-n", "0", "r"]);
    // The follower is set up once it has printed nothing and is still running.
    assert!(
        !follow.wait_for_exit(Duration::from_millis(200)),
        "{}",
        follow.stderr_so_far()
    );
    std::fs::write(sb.path("go"), "").unwrap();
    let out = sb.path("follow.stdout");
    wait_until("the follower printed the last line", || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("line-2999\n")
    });
    assert!(sb.state.join("r.log.5").exists(), "the log did not rotate");
    kill(Pid::from_raw(follow.pid()), Signal::SIGINT).unwrap();
    let done = follow.finish(Duration::from_secs(10));
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    let got: Vec<String> = done.stdout.lines().map(String::from).collect();
    let want: Vec<String> = (0..3000).map(|i| format!("r | line-{i}")).collect();
    let first = got.iter().zip(&want).position(|(g, w)| g != w);
    assert_eq!(
        got.len(),
        want.len(),
        "lost or repeated lines; first difference at {first:?}: {:?}",
        first.map(|i| &got[i.saturating_sub(2)..(i + 3).min(got.len())])
    );
    assert!(got == want, "lines out of order or changed");
    assert_success(&sb.stop(&["r"]), "pm-stop");
}
