//! pm-up and pm-down over a services file: order, parallel starts, idempotence, errors,
//! failures that stop dependents, Ctrl-C. Ordering is judged from evidence the services
//! leave themselves (a file that must exist when a dependent starts), never from sleeps.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pm_tests::*;

fn up(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    sb.cmd("pm-up").args(args).output().expect("run pm-up")
}

fn down(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    sb.cmd("pm-down").args(args).output().expect("run pm-down")
}

#[track_caller]
fn live_pid(sb: &Sandbox, name: &str) -> i32 {
    let pid = sb.pid(name).unwrap_or_else(|| panic!("{name} has no pid"));
    assert!(is_alive(pid), "{name} (pid {pid}) is not running");
    pid
}

#[track_caller]
fn assert_nothing_left(sb: &Sandbox) {
    wait_until("every process of the sandbox is gone", || {
        sb.processes().is_empty()
    });
}

/// db becomes ready late; the migration must see it ready, web must see the migration
/// done; on the way down db must see web gone. The file is edited between up and down
/// (web no longer needs db): pm-down still goes by the records.
const ORDERED: &str = r#"
[services.db]
command = "trap 'if [ -e web.alive ]; then echo early; else echo after; fi > db.down; exit 0' TERM; sleep 0.3; touch db.ready; sleep 1000 & wait"
ready = "file:db.ready"

[services.migrate]
command = "test -e db.ready && echo done > migrated"
oneshot = true
needs = ["db"]

[services.web]
command = "test -e migrated || exit 7; touch web.alive; trap 'rm -f web.alive; exit 0' TERM; sleep 1000 & wait"
needs = { db = "ready", migrate = "succeeded" }
"#;

#[test]
fn up_follows_needs_and_down_reverses_the_recorded_order() {
    let sb = Sandbox::new();
    write_stack(&sb, ORDERED);
    let out = up(&sb, &[]);
    assert_success(&out, "pm-up");
    assert_eq!(fs::read_to_string(sb.path("migrated")).unwrap(), "done\n");
    assert!(sb.path("web.alive").exists(), "{}", describe(&out));
    live_pid(&sb, "db");
    live_pid(&sb, "web");
    assert!(
        stderr(&out).contains("pm-up: migrate: succeeded"),
        "{}",
        describe(&out)
    );
    let rec = sb.rec("web");
    assert_eq!(rec["stack"]["needs"][0]["name"], "db", "{rec}");
    // Edited: web needs nothing now, db needs web. The running stack was not started so.
    write_stack(
        &sb,
        &ORDERED
            .replace("needs = { db = \"ready\", migrate = \"succeeded\" }", "")
            .replace(
                "ready = \"file:db.ready\"",
                "ready = \"file:db.ready\"\nneeds = [\"web\"]",
            ),
    );
    let out = down(&sb, &[]);
    assert_success(&out, "pm-down");
    assert_eq!(
        fs::read_to_string(sb.path("db.down")).unwrap(),
        "after\n",
        "db was stopped while web ran: {}",
        describe(&out)
    );
    assert_nothing_left(&sb);
}

/// Each waits, before it is ready, until the other has begun: started one after the
/// other, the first would never become ready.
#[test]
fn independent_services_start_at_the_same_time() {
    let sb = Sandbox::new();
    let svc = |me: &str, other: &str| {
        format!(
            "[services.{me}]\ncommand = \"touch {me}.began; while [ ! -e {other}.began ]; do sleep 0.01; done; touch {me}.ready; exec sleep 1000\"\nready = \"file:{me}.ready\"\nready_timeout = \"20s\"\n"
        )
    };
    write_stack(&sb, &format!("{}\n{}", svc("a", "b"), svc("b", "a")));
    let out = up(&sb, &[]);
    assert_success(&out, "pm-up");
    live_pid(&sb, "a");
    live_pid(&sb, "b");
    assert_success(&down(&sb, &[]), "pm-down");
    assert_nothing_left(&sb);
}

#[test]
fn up_leaves_an_unchanged_service_alone_and_restarts_a_changed_one() {
    let sb = Sandbox::new();
    let stack = "[services.db]\ncommand = [\"sleep\", \"1000\"]\n\n[services.web]\ncommand = [\"sleep\", \"1001\"]\nneeds = [\"db\"]\ntags = [\"front\"]\n";
    write_stack(&sb, stack);
    assert_success(&up(&sb, &[]), "pm-up");
    let (db, web) = (live_pid(&sb, "db"), live_pid(&sb, "web"));
    let out = up(&sb, &[]);
    assert_success(&out, "pm-up again");
    assert!(
        stderr(&out).contains(&format!("pm-up: web: already running, pid {web}")),
        "{}",
        describe(&out)
    );
    assert_eq!((live_pid(&sb, "db"), live_pid(&sb, "web")), (db, web));
    write_stack(&sb, &stack.replace("\"1001\"", "\"1002\""));
    let out = up(&sb, &["@front"]);
    assert_success(&out, "pm-up after an edit");
    assert!(
        stderr(&out).contains("pm-up: web: definition changed"),
        "{}",
        describe(&out)
    );
    let web2 = live_pid(&sb, "web");
    assert_ne!(web2, web);
    assert_gone(web);
    assert_eq!(live_pid(&sb, "db"), db);
    assert!(cmdline(web2).contains(&"1002".to_string()));
    // pm-down db: web, started needing db, goes too (and first).
    let out = down(&sb, &["db"]);
    assert_success(&out, "pm-down db");
    let lines = stderr_lines(&out);
    let pos = |n: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(&format!("pm-down: {n}: stopped")))
    };
    assert!(
        pos("web") < pos("db") && pos("db").is_some(),
        "{}",
        describe(&out)
    );
    assert_nothing_left(&sb);
}

#[test]
fn a_bad_file_is_a_usage_error_and_starts_nothing() {
    let sb = Sandbox::new();
    fs::write(sb.path("nul.env"), "A=1\nX=a\0b\n").unwrap();
    let cases = [
        ("[services.a]\ncommand = \"sleep 1000\"\n\n[services.b]\ncommand = \"sleep 1000\"\nneedz = [\"a\"]\n", "pm.toml:6: ", "needz"),
        ("[services.a]\ncommand = \"sleep 1000\"\nneeds = [\"nope\"]\n", "pm.toml:3: ", "\"nope\", which is not in this file"),
        ("[services.a]\ncommand = \"sleep 1000\"\nneeds = [\"b\"]\n[services.b]\ncommand = \"sleep 1000\"\nneeds = [\"a\"]\n", "pm.toml:", "dependency cycle: a -> b -> a"),
        ("[services.a]\ncommand = \"true\"\noneshot = true\npidfile = \"a.pid\"\n", "pm.toml:", "pidfile does not apply to a oneshot task"),
        ("[services.a]\ncommand = \"sleep 1000\"\npidfile = \"{nmae}.pid\"\n", "pm.toml:", "pidfile: "),
        ("[services.a]\ncommand = \"sleep 1000\"\nenv_file = \"nul.env\"\n", "nul.env:2: ", "X: a value cannot hold a NUL byte"),
    ];
    for (toml, at, what) in cases {
        write_stack(&sb, toml);
        let out = up(&sb, &[]);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains(at) && err.contains(what),
            "{toml}\n{}",
            describe(&out)
        );
        assert!(sb.processes().is_empty(), "something started: {toml}");
        assert!(sb.record("a").is_none(), "a record was written: {toml}");
    }
    let out = sb
        .cmd("pm-up")
        .args(["-f", "missing.toml"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("missing.toml"), "{}", describe(&out));
}

#[test]
fn a_failed_service_stops_the_start_of_what_needs_it() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.db]\ncommand = \"echo cannot open data >&2; exit 3\"\n\n[services.web]\ncommand = \"sleep 1000\"\nneeds = [\"db\"]\n\n[services.other]\ncommand = \"sleep 1000\"\n",
    );
    let out = up(&sb, &[]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("pm-up: web: not started: it needs db, which failed"),
        "{err}"
    );
    assert!(err.contains("cannot open data"), "no log tail: {err}");
    // Said as the tool the user ran, though pm-start's start code says it.
    assert!(
        err.contains("pm-up: db: failed to start: exited with status 3"),
        "{err}"
    );
    assert!(!err.contains("pm-start:"), "{err}");
    assert!(sb.record("web").is_none(), "web was started");
    live_pid(&sb, "other");
    assert_success(&down(&sb, &[]), "pm-down");
    assert_nothing_left(&sb);
}

#[test]
fn ctrl_c_during_up_stops_what_it_started_and_dies_of_sigint() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = \"exec sleep 1000\"\n\n[services.b]\ncommand = \"exec sleep 1001\"\nready = \"file:never\"\nready_timeout = \"100s\"\nneeds = [\"a\"]\n",
    );
    let run = sb.spawn_tool("up", "pm-up", &[]);
    wait_until("b is being started", || {
        sb.pid("b").is_some_and(is_alive) && sb.pid("a").is_some_and(is_alive)
    });
    let (a, b) = (sb.pid("a").unwrap(), sb.pid("b").unwrap());
    kill(Pid::from_raw(run.pid()), Signal::SIGINT).unwrap();
    let done = run.finish(Duration::from_secs(60));
    assert_eq!(
        done.status.signal(),
        Some(Signal::SIGINT as i32),
        "{}",
        done.describe()
    );
    assert_gone(a);
    assert_gone(b);
    assert_nothing_left(&sb);
}

/// `@TAG` names every recorded service with that tag, in pm-status, pm-signal and pm-stop;
/// a tag no record has is exit 4 and touches nothing.
#[test]
fn tags_select_services_in_every_tool() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = \"trap 'echo hup >> a.hup' HUP; sleep 1000 & while :; do wait; done\"\ntags = [\"web\"]\n\n[services.b]\ncommand = [\"sleep\", \"1000\"]\ntags = [\"web\", \"x\"]\n\n[services.c]\ncommand = [\"sleep\", \"1001\"]\n",
    );
    assert_success(&up(&sb, &[]), "pm-up");
    let c = live_pid(&sb, "c");
    let out = sb.status(&["--json", "@web"]);
    assert_success(&out, "pm-status @web");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let out = sb
        .cmd("pm-signal")
        .args(["-s", "HUP", "@web"])
        .output()
        .unwrap();
    assert_success(&out, "pm-signal @web");
    wait_until("a got SIGHUP", || sb.path("a.hup").exists());
    let out = sb.stop(&["@nope"]);
    assert_code(&out, 4);
    assert!(
        stderr(&out).contains("no recorded service is tagged \"nope\""),
        "{}",
        describe(&out)
    );
    let out = sb.stop(&["@web"]);
    assert_success(&out, "pm-stop @web");
    assert_eq!(sb.state_of("a"), "stopped");
    assert_eq!(sb.state_of("b"), "stopped");
    assert_eq!(live_pid(&sb, "c"), c);
    assert_success(&down(&sb, &[]), "pm-down");
    assert_nothing_left(&sb);
}

/// `pm-start @TAG` starts every recorded service with that tag again from its record,
/// each after what its record says it needs, even where the start order of the records
/// says otherwise (db was restarted by hand after web); other services are not touched.
#[test]
fn start_of_a_tag_starts_its_services_again_needs_first() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.db]\ncommand = \"trap 'rm -f db.up; exit 0' TERM; touch db.up; sleep 1000 & wait\"\nready = \"file:db.up\"\ntags = [\"app\"]\n\n[services.web]\ncommand = \"test -e db.up || exit 7; exec sleep 1000\"\nneeds = { db = \"ready\" }\ntags = [\"app\"]\n\n[services.c]\ncommand = [\"sleep\", \"1001\"]\ntags = [\"other\"]\n",
    );
    assert_success(&up(&sb, &[]), "pm-up");
    assert_success(
        &sb.cmd("pm-restart").arg("db").output().unwrap(),
        "pm-restart db",
    );
    let c = live_pid(&sb, "c");
    assert_success(&sb.stop(&["@app"]), "pm-stop @app");
    assert!(!sb.path("db.up").exists(), "db did not stop by its trap");
    let out = sb.cmd("pm-start").arg("@app").output().unwrap();
    assert_success(&out, "pm-start @app");
    let (db, web) = (live_pid(&sb, "db"), live_pid(&sb, "web"));
    assert_eq!(sb.state_of("db"), "running");
    assert_eq!(sb.state_of("web"), "running");
    assert_eq!(
        procfs::cmdline(web).first().map(String::as_str),
        Some("sleep")
    );
    assert_ne!(db, web);
    assert_eq!(
        live_pid(&sb, "c"),
        c,
        "a service of another tag was touched"
    );
    let out = sb.cmd("pm-start").arg("@nope").output().unwrap();
    assert_code(&out, 4);
    assert!(
        stderr(&out).contains("no recorded service is tagged \"nope\""),
        "{}",
        describe(&out)
    );
    assert_success(&down(&sb, &[]), "pm-down");
    assert_nothing_left(&sb);
}

/// `pm-start @TAG` goes on after a service that fails to start: the others are started,
/// the failure is said, and the exit status is 1.
#[test]
fn start_of_a_tag_goes_on_after_a_failure_and_exits_1() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = \"test -e a.fails && exit 3; exec sleep 1000\"\ntags = [\"t\"]\n\n[services.b]\ncommand = \"exec sleep 1001\"\ntags = [\"t\"]\nneeds = [\"a\"]\n",
    );
    // b needs a: a is started first, and fails, and b is still started after it.
    assert_success(&up(&sb, &[]), "pm-up");
    assert_success(&sb.stop(&["@t"]), "pm-stop @t");
    fs::write(sb.path("a.fails"), "").unwrap();
    let out = sb.cmd("pm-start").arg("@t").output().unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("pm-start: a: failed to start: exited with status 3"),
        "{}",
        describe(&out)
    );
    live_pid(&sb, "b");
    assert_eq!(sb.state_of("b"), "running");
    assert_ne!(sb.state_of("a"), "running");
    assert_success(&down(&sb, &[]), "pm-down");
    assert_nothing_left(&sb);
}

/// `started`: b needs a only started, and a is ready only once b has begun. Were
/// `started` waited for as `ready`, a would never become ready.
#[test]
fn a_need_that_is_only_started_does_not_wait_for_ready() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = \"exec sleep 1000\"\nready = \"file:b.began\"\nready_timeout = \"20s\"\n\n[services.b]\ncommand = \"while [ ! -e a.began ]; do sleep 0.01; done; touch b.began; exec sleep 1001\"\nneeds = { a = \"started\" }\n",
    );
    // a's command, first thing: what b waits for (a is spawned, not yet its first line).
    write_stack(
        &sb,
        &fs::read_to_string(sb.path("pm.toml"))
            .unwrap()
            .replace("exec sleep 1000", "touch a.began; exec sleep 1000"),
    );
    let out = up(&sb, &[]);
    assert_success(&out, "pm-up");
    live_pid(&sb, "a");
    live_pid(&sb, "b");
    let (a, b) = (sb.rec("a"), sb.rec("b"));
    let a_ready = a["ready_at"].as_str().unwrap();
    let b_started = b["started_at"].as_str().unwrap();
    assert!(
        b_started < a_ready,
        "b started at {b_started}, after a was ready at {a_ready}"
    );
    assert_success(&down(&sb, &[]), "pm-down");
    assert_nothing_left(&sb);
}
