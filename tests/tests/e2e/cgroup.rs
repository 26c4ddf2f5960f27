//! Containment by cgroup v2 (issue 12): one cgroup per start, as root under
//! `MOUNT/pm/STATEID/NAME:RUNID`, a non-root user under its delegated subtree.
//!
//! Each test asserts on the kernel's word, read with the harness's own code: `cgroup.procs`
//! ([`procfs::cgroup_pids`]), `/proc/PID/cgroup` ([`procfs::cgroup_of`]) and `/proc/PID/stat`
//! (zombies count as gone), never on pm-core's reader. `make test` runs the suite a second
//! time with `PM_CGROUP=off` in the environment: every pm command here sets `PM_CGROUP`
//! itself, so both passes test the same thing. Tests that need root and a writable cgroup2
//! hierarchy skip loudly without them.
//!
//! Clean-up: every process a test starts carries its sandbox's `PM_STATE_DIR`, and the
//! `Sandbox` also kills whatever is left in its cgroups; nginx (which rewrites its
//! environment) and the delegated cgroup of the non-root test have guards of their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pm_tests::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Helpers

/// Runs pm tool `tool` with `PM_CGROUP=mode` (whatever the caller's environment says).
fn pm(sb: &Sandbox, mode: &str, tool: &str, args: &[&str]) -> Output {
    sb.cmd(tool)
        .env("PM_CGROUP", mode)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"))
}

/// [`pm`] with `PM_CGROUP=on`: a missing hierarchy is an error, not a silent fallback.
fn on(sb: &Sandbox, tool: &str, args: &[&str]) -> Output {
    pm(sb, "on", tool, args)
}

/// `pm-status --json NAME` with `PM_CGROUP=mode`, the one object.
fn json(sb: &Sandbox, mode: &str, name: &str) -> Value {
    let out = pm(sb, mode, "pm-status", &["--json", name]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("pm-status --json: bad JSON ({e}): {}", describe(&out)));
    v[0].clone()
}

/// The cgroup2 mount when this process is root and may make cgroups there; else `None`,
/// after saying the test is skipped.
fn cgroup_or_skip(what: &str) -> Option<PathBuf> {
    if !root_or_skip(what) {
        return None;
    }
    let Some(mount) = procfs::cgroup2_mount() else {
        eprintln!("SKIPPED: no read-write cgroup2 hierarchy is mounted ({what})");
        return None;
    };
    let probe = mount.join(format!("pmtest-probe-{}", std::process::id()));
    match fs::create_dir(&probe) {
        Ok(()) => {
            let _ = fs::remove_dir(&probe);
            Some(mount)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Some(mount),
        Err(e) => {
            eprintln!(
                "SKIPPED: cannot make a cgroup in {}: {e} ({what})",
                mount.display()
            );
            None
        }
    }
}

/// Live (non-zombie) processes in cgroup `dir` and below, sorted.
fn live_in(dir: &Path) -> Vec<i32> {
    let mut v: Vec<i32> = procfs::cgroup_pids(dir)
        .into_iter()
        .filter(|p| is_alive(*p))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `dir` as `/proc/PID/cgroup` names it: relative to the hierarchy's root.
fn rel(dir: &Path) -> String {
    let mount = procfs::cgroup2_mount().expect("cgroup2 mount");
    format!(
        "/{}",
        s(dir.strip_prefix(&mount).expect("inside the mount"))
    )
}

/// The cgroups (one per start) under the sandbox's state-dir cgroup.
fn leaves(sb: &Sandbox) -> Vec<PathBuf> {
    let Some(dir) = sb.cgroup_dir() else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Any cgroup `MOUNT/pm/*/NAME:RUN` (whatever the state dir's id), for a start that
/// must not have one.
fn cgroups_of_run(name: &str, run: &str) -> Vec<PathBuf> {
    let Some(mount) = procfs::cgroup2_mount() else {
        return Vec::new();
    };
    let leaf = format!("{name}:{}", run.replace(['/', ':'], "_"));
    fs::read_dir(mount.join("pm"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join(&leaf))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

/// The record's cgroup of NAME, which must be `cgroup_dir()/NAME:RUNID` (the harness's
/// own computation of the state dir's id) and exist.
#[track_caller]
fn leaf_of(sb: &Sandbox, name: &str) -> PathBuf {
    let rec = sb.rec(name);
    let path = PathBuf::from(
        rec["cgroup"]
            .as_str()
            .unwrap_or_else(|| panic!("record of {name} names no cgroup: {rec}")),
    );
    let run = rec["run_id"].as_str().expect("run_id");
    let want = sb
        .cgroup_dir()
        .expect("cgroup dir")
        .join(format!("{name}:{}", run.replace(['/', ':'], "_")));
    assert_eq!(path, want, "the cgroup of {name}");
    assert!(
        path.join("cgroup.procs").exists(),
        "{} is missing",
        path.display()
    );
    path
}

/// Asserts every one of `pids` is alive and in cgroup `dir` (the kernel's word).
#[track_caller]
fn assert_in(dir: &Path, pids: &[i32]) {
    let want = rel(dir);
    for &p in pids {
        assert!(is_alive(p), "pid {p} is not running");
        assert_eq!(
            procfs::cgroup_of(p).as_deref(),
            Some(want.as_str()),
            "pid {p} ({:?}) is not in the service's cgroup",
            cmdline(p)
        );
    }
}

/// Asserts none of `pids` is alive.
#[track_caller]
fn assert_all_gone(what: &str, pids: &[i32]) {
    let left: Vec<String> = pids
        .iter()
        .filter(|p| is_alive(**p))
        .map(|p| format!("{p} {:?} in {:?}", cmdline(*p), procfs::cgroup_of(*p)))
        .collect();
    assert!(left.is_empty(), "{what}: still running: {left:?}");
}

/// Asserts the sandbox has nothing left: no process, no live PID in its cgroups, no
/// per-start cgroup.
#[track_caller]
fn assert_nothing_left(sb: &Sandbox, what: &str) {
    let procs: Vec<String> = sb
        .processes()
        .into_iter()
        .map(|p| {
            format!(
                "{p} {:?} {:?} in {:?}",
                cmdline(p),
                Stat::read(p),
                procfs::cgroup_of(p)
            )
        })
        .collect();
    assert!(procs.is_empty(), "{what}: processes left: {procs:?}");
    if let Some(dir) = sb.cgroup_dir() {
        let live = live_in(&dir);
        assert!(
            live.is_empty(),
            "{what}: left in {}: {live:?}",
            dir.display()
        );
    }
    let l = leaves(sb);
    assert!(l.is_empty(), "{what}: cgroups left: {l:?}");
}

/// The PIDs in a file, one per line.
fn pids_in(path: &Path) -> Vec<i32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map_while(|l| l.trim().parse().ok())
        .collect()
}

/// Waits until `path` names `n` PIDs (and ends with a newline); returns them.
#[track_caller]
fn wait_pids(path: &Path, n: usize) -> Vec<i32> {
    wait_until(&format!("{} names {n} pid(s)", path.display()), || {
        fs::read_to_string(path).is_ok_and(|t| t.ends_with('\n')) && pids_in(path).len() >= n
    });
    pids_in(path)
}

/// `pm-start NAME [OPTS...] --ready file:UP -- sh -c SCRIPT` with `PM_CGROUP=on`, where
/// the script creates `$UP` once set up; asserts success and returns the leader's PID.
#[track_caller]
fn up(sb: &Sandbox, name: &str, opts: &[&str], script: &str) -> i32 {
    let upf = sb.path(&format!("{name}.up"));
    let _ = fs::remove_file(&upf);
    let env_up = format!("UP={}", s(&upf));
    let ready = format!("file:{}", s(&upf));
    let mut args = vec![name, "--env", &env_up, "--ready", &ready];
    args.extend_from_slice(opts);
    args.extend(["--", "sh", "-c", script]);
    let out = on(sb, "pm-start", &args);
    assert_success(&out, &format!("pm-start {name}"));
    sb.pid(name).expect("record has a pid")
}

/// The one stderr line of `tool` about NAME.
#[track_caller]
fn line_for(out: &Output, tool: &str, name: &str) -> String {
    let prefix = format!("{tool}: {name}: ");
    let found: Vec<String> = stderr_lines(out)
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert_eq!(found.len(), 1, "one line for {name}: {}", describe(out));
    found[0].clone()
}

/// The name of the state dir's cgroup (`ID` in `MOUNT/pm/ID`), as the harness computes
/// it ([`Sandbox::cgroup_dir`]): the same under a delegated subtree.
fn state_id(sb: &Sandbox) -> String {
    let dir = sb.cgroup_dir().expect("root with a cgroup2 mount");
    dir.file_name().unwrap().to_str().unwrap().to_string()
}

/// Removes a cgroup and every cgroup below it, deepest first (each must be empty).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// A service with two workers (one in the leader's group, one that left it with setsid)
/// whose PIDs it writes to `$W`, one per line.
const TWO_WORKERS: &str =
    "sleep 1000 & a=$!; setsid sleep 1000 & b=$!; printf '%s\\n%s\\n' $a $b > \"$W\"; : > \"$UP\"; wait";

/// [`TWO_WORKERS`] under NAME; returns (leader, workers, cgroup).
fn start_two_workers(sb: &Sandbox, name: &str) -> (i32, Vec<i32>, PathBuf) {
    let w = sb.path(&format!("{name}.workers"));
    let _ = fs::remove_file(&w);
    let env_w = format!("W={}", s(&w));
    let leader = up(sb, name, &["--env", &env_w], TWO_WORKERS);
    let workers = wait_workers(&w, leader);
    let cg = leaf_of(sb, name);
    assert_in(&cg, &[leader]);
    assert_in(&cg, &workers);
    (leader, workers, cg)
}

/// The two workers of a [`TWO_WORKERS`] service led by `leader`, once both run `sleep`
/// and the second has left the session (setsid runs in the child after the shell noted
/// its PID).
#[track_caller]
fn wait_workers(w: &Path, leader: i32) -> Vec<i32> {
    let workers = wait_pids(w, 2);
    wait_until(
        "both workers run sleep, the second in a session of its own",
        || {
            let sleeping = |p: i32| cmdline(p).first().map(String::as_str) == Some("sleep");
            sleeping(workers[0]) && sleeping(workers[1]) && stat(workers[1]).session != leader
        },
    );
    workers
}

// ---------------------------------------------------------------------------------------
// 1. A helper that double-forks out of its session is stopped with its service

#[test]
fn a_double_forked_helper_is_in_the_cgroup_and_stopped_with_its_service() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let sb = Sandbox::new();
    let helper_file = sb.path("helper.pid");
    let env_h = format!("H={}", s(&helper_file));
    // The inner sh leaves the session (setsid), forks the helper and exits: the helper is
    // an orphan in another session and group, no descendant of the leader.
    let leader = up(
        &sb,
        "web",
        &["--env", &env_h],
        "setsid sh -c 'sleep 1000 & echo $! > \"$H\"'; : > \"$UP\"; exec sleep 1000",
    );
    let helper = wait_pids(&helper_file, 1)[0];
    let (l, h) = (stat(leader), stat(helper));
    assert_ne!(h.ppid, leader, "the helper was reparented");
    assert!(!descendants(leader).contains(&helper));
    assert_ne!(h.session, l.session, "the helper left the session");
    assert_ne!(h.pgrp, l.pgrp, "the helper left the group");
    let cg = leaf_of(&sb, "web");
    assert_in(&cg, &[leader, helper]);
    assert_eq!(live_in(&cg), {
        let mut v = vec![leader, helper];
        v.sort_unstable();
        v
    });

    let out = on(&sb, "pm-stop", &["--timeout", "3s", "web"]);
    assert_code(&out, 0);
    let line = line_for(&out, "pm-stop", "web");
    assert!(line.contains("stopped by SIGTERM"), "{line}");
    assert!(!line.contains("escalated"), "{line}");
    assert!(line.contains("in its cgroup"), "{line}");
    assert_all_gone("leader and double-forked helper", &[leader, helper]);
    assert!(!cg.exists(), "{} was not removed", cg.display());
    assert_nothing_left(&sb, "after pm-stop");
    assert_eq!(json(&sb, "on", "web")["state"], "stopped");
}

// ---------------------------------------------------------------------------------------
// 2. A SIGKILLed leader's workers: dead with what is left, stopped by pm-stop / pm-stopall

#[test]
fn a_sigkilled_leaders_workers_are_reported_and_stopped_by_pm_stop_and_pm_stopall() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let sb = Sandbox::new();
    for tool in ["pm-stop", "pm-stopall"] {
        let (leader, workers, cg) = start_two_workers(&sb, "web");
        sigkill(leader);
        assert_in(&cg, &workers);

        let out = on(&sb, "pm-status", &["web"]);
        assert_code(&out, 1);
        assert!(stdout(&out).contains("dead"), "{}", describe(&out));
        let j = json(&sb, "on", "web");
        assert_eq!(j["state"], "dead", "{j}");
        let note = j["note"].as_str().unwrap_or_default();
        assert!(
            note.contains("2 processes left in its cgroup"),
            "note: {note:?}"
        );
        assert_eq!(j["usage"]["procs"], 2, "{j}");

        let out = if tool == "pm-stop" {
            on(&sb, "pm-stop", &["--timeout", "3s", "web"])
        } else {
            on(&sb, "pm-stopall", &["--timeout", "3s"])
        };
        assert_code(&out, 0);
        let line = line_for(&out, tool, "web");
        assert!(line.contains("stopped by SIGTERM"), "{line}");
        assert!(!line.contains("escalated"), "{line}");
        assert_all_gone(&format!("{tool}: the dead leader's workers"), &workers);
        assert!(!cg.exists(), "{tool}: {} was not removed", cg.display());
        assert_nothing_left(&sb, tool);
    }
}

/// Writes a foreground nginx site with two workers under SANDBOX/nginx; returns the
/// pm-start arguments after NAME and the port.
fn nginx_site(sb: &Sandbox, bin: &Path) -> (Vec<String>, u16) {
    // Workers run as nobody: the sandbox must be traversable.
    fs::set_permissions(sb.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let prefix = sb.path("nginx");
    fs::create_dir_all(prefix.join("html")).unwrap();
    fs::create_dir_all(prefix.join("tmp")).unwrap();
    let p = s(&prefix);
    let conf = format!(
        "daemon off;\n\
         worker_processes 2;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
           access_log {p}/access.log;\n\
           client_body_temp_path {p}/tmp/body;\n\
           proxy_temp_path {p}/tmp/proxy;\n\
           fastcgi_temp_path {p}/tmp/fastcgi;\n\
           uwsgi_temp_path {p}/tmp/uwsgi;\n\
           scgi_temp_path {p}/tmp/scgi;\n\
           server {{ listen 127.0.0.1:{port}; root {p}/html; }}\n\
         }}\n"
    );
    fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let args = vec![
        "--stop-signal".to_string(),
        "QUIT".into(),
        "--ready".into(),
        format!("tcp:{port}"),
        "--".into(),
        s(bin).into(),
        "-p".into(),
        p.into(),
        "-c".into(),
        format!("{p}/nginx.conf"),
        "-e".into(),
        format!("{p}/error.log"),
    ];
    (args, port)
}

#[test]
fn a_sigkilled_nginx_masters_workers_are_stopped_by_pm_stop_and_pm_stopall() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let Some(bin) = daemon_program("nginx", "nginx") else {
        return;
    };
    let sb = Sandbox::new();
    let seen = Seen::default();
    let (args, port) = nginx_site(&sb, &bin);
    let args: Vec<&str> = std::iter::once("nginx")
        .chain(args.iter().map(String::as_str))
        .collect();
    for tool in ["pm-stop", "pm-stopall"] {
        let out = on(&sb, "pm-start", &args);
        assert_success(&out, "pm-start nginx");
        let master = sb.pid("nginx").unwrap();
        seen.add(&[master]);
        let cg = leaf_of(&sb, "nginx");
        wait_until("nginx has a master and 2 workers", || {
            live_in(&cg).len() == 3
        });
        let workers: Vec<i32> = live_in(&cg).into_iter().filter(|p| *p != master).collect();
        seen.add(&workers);
        for w in &workers {
            assert_eq!(stat(*w).ppid, master, "worker {w}");
            wait_until("the worker set its title", || {
                cmdline(*w).join(" ").contains("worker process")
            });
        }
        sigkill(master);
        // The workers go on serving without their master (nginx's workers do not notice).
        assert_in(&cg, &workers);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

        let out = on(&sb, "pm-status", &["nginx"]);
        assert_code(&out, 1);
        let note = json(&sb, "on", "nginx")["note"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(note.contains("2 processes left in its cgroup"), "{note:?}");

        let out = if tool == "pm-stop" {
            on(&sb, "pm-stop", &["--timeout", "3s", "nginx"])
        } else {
            on(&sb, "pm-stopall", &["--timeout", "3s"])
        };
        assert_code(&out, 0);
        let line = line_for(&out, tool, "nginx");
        assert!(line.contains("stopped by SIGQUIT"), "{line}");
        assert!(!line.contains("escalated"), "{line}");
        assert_all_gone(&format!("{tool}: nginx workers"), &workers);
        assert!(!cg.exists(), "{tool}: {} was not removed", cg.display());
        assert_nothing_left(&sb, tool);
    }
}

// ---------------------------------------------------------------------------------------
// 3. pm-start SIGKILLed while it waits: the service is found by pm-stopall

#[test]
fn a_pm_start_killed_after_spawn_leaves_a_service_pm_stopall_stops() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let sb = Sandbox::new();
    let w = sb.path("web.workers");
    let mut c = sb.std_cmd(bin_dir().join("pm-start"));
    c.env("PM_CGROUP", "on").args([
        "web",
        "--env",
        &format!("W={}", s(&w)),
        "--env",
        "UP=/dev/null",
        "--ready",
        "file:/nonexistent/pm-test-never",
        "--",
        "sh",
        "-c",
        &format!("echo $$ > \"$W.leader\"; {TWO_WORKERS}"),
    ]);
    let mut start = sb.spawn_cmd("pm-start", c);
    let leader = wait_pids(&sb.path("web.workers.leader"), 1)[0];
    let workers = wait_workers(&w, leader);
    start.kill_and_reap();

    let cg = leaf_of(&sb, "web");
    assert_in(&cg, &[leader]);
    assert_in(&cg, &workers);
    let j = json(&sb, "on", "web");
    // Found: the leader is recorded (pm-start recorded it before it could run).
    assert_eq!(j["pid"], leader, "{j}");
    assert!(j["state"] == "running" || j["state"] == "starting", "{j}");
    assert_eq!(j["tracking"], "cgroup", "{j}");
    assert_eq!(j["usage"]["procs"], 3, "{j}");

    let out = on(&sb, "pm-stopall", &[]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("pm-stopall: web: stopped"),
        "{}",
        describe(&out)
    );
    assert_all_gone(
        "the half-started service",
        &[leader, workers[0], workers[1]],
    );
    assert!(!cg.exists(), "{} was not removed", cg.display());
    assert_nothing_left(&sb, "after pm-stopall");
}

// ---------------------------------------------------------------------------------------
// 4. Two state dirs, one NAME: two cgroups that never touch each other

#[test]
fn two_state_dirs_with_the_same_name_never_touch_each_other() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let a = Sandbox::new();
    let b = Sandbox::new();
    let (la, wa, cga) = start_two_workers(&a, "web");
    let (lb, wb, cgb) = start_two_workers(&b, "web");
    assert_ne!(cga, cgb);
    assert_ne!(cga.parent(), cgb.parent(), "one cgroup per state dir");
    let mut b_all = vec![lb];
    b_all.extend(&wb);
    let b_times: Vec<u64> = b_all.iter().map(|p| stat(*p).start_time).collect();
    let b_intact = |what: &str| {
        assert_in(&cgb, &b_all);
        let now: Vec<u64> = b_all.iter().map(|p| stat(*p).start_time).collect();
        assert_eq!(now, b_times, "{what}: b's processes are the same ones");
        assert_eq!(json(&b, "on", "web")["state"], "running", "{what}");
        assert_eq!(live_in(&cgb), {
            let mut v = b_all.clone();
            v.sort_unstable();
            v
        });
    };

    let out = on(&a, "pm-stop", &["web"]);
    assert_code(&out, 0);
    assert_all_gone("a's web", &[la, wa[0], wa[1]]);
    assert!(!cga.exists());
    b_intact("after pm-stop web in a");

    let (la, wa, cga) = start_two_workers(&a, "web");
    let out = on(&a, "pm-stopall", &[]);
    assert_code(&out, 0);
    assert_all_gone("a's web", &[la, wa[0], wa[1]]);
    assert!(!cga.exists());
    assert_nothing_left(&a, "a after pm-stopall");
    b_intact("after pm-stopall in a");

    let out = on(&b, "pm-stopall", &[]);
    assert_code(&out, 0);
    assert_all_gone("b's web", &b_all);
    assert_nothing_left(&b, "b after pm-stopall");
}

// ---------------------------------------------------------------------------------------
// 5. A fork loop is stopped completely; --pids-max

#[test]
fn a_fork_loop_that_ignores_term_is_stopped_completely_by_cgroup_kill() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let sb = Sandbox::new();
    // Up to 300 children, all ignoring TERM (an ignored signal stays ignored across exec),
    // still forking while pm-stop runs.
    let leader = up(
        &sb,
        "forky",
        &[],
        "trap '' TERM; : > \"$UP\"; i=0; while [ $i -lt 300 ]; do sleep 1000 & i=$((i+1)); done; wait",
    );
    let cg = leaf_of(&sb, "forky");
    assert_in(&cg, &[leader]);
    wait_until("the loop forked 50 children", || live_in(&cg).len() > 50);
    let before = live_in(&cg);
    assert!(before.contains(&leader));

    let t = Instant::now();
    let out = on(&sb, "pm-stop", &["--timeout", "300ms", "forky"]);
    let took = t.elapsed();
    assert_code(&out, 0);
    let line = line_for(&out, "pm-stop", "forky");
    assert!(line.contains("escalated to SIGKILL"), "{line}");
    assert_all_gone("the fork loop", &before);
    assert!(!cg.exists(), "{} was not removed", cg.display());
    assert_nothing_left(&sb, "after pm-stop");
    eprintln!(
        "fork loop: {} processes when pm-stop began, stopped in {took:?}",
        before.len()
    );
}

#[test]
fn pids_max_limits_forks_where_the_controller_is_available_else_fails_clearly() {
    let Some(mount) = cgroup_or_skip("cgroup limits") else {
        return;
    };
    let sb = Sandbox::new();
    let offered = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    let ran = sb.path("ran");
    let script = format!(
        ": > '{}'; : > \"$UP\"; i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done; wait",
        s(&ran)
    );
    if offered.split_whitespace().any(|c| c == "pids") {
        eprintln!(
            "pids controller available in {}: testing the limit",
            mount.display()
        );
        let leader = up(&sb, "forky", &["--pids-max", "50"], &script);
        let cg = leaf_of(&sb, "forky");
        assert_in(&cg, &[leader]);
        assert_eq!(
            fs::read_to_string(cg.join("pids.max")).unwrap().trim(),
            "50"
        );
        // Forks past the limit are refused: the kernel counts them in pids.events.
        wait_until("a fork was refused (pids.events max > 0)", || {
            fs::read_to_string(cg.join("pids.events"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("max "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        });
        let live = live_in(&cg);
        assert!(
            live.len() <= 50,
            "{} processes despite pids.max 50",
            live.len()
        );
        let current: u64 = fs::read_to_string(cg.join("pids.current"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(current <= 50, "pids.current {current}");
        assert_eq!(json(&sb, "on", "forky")["limits"]["pids_max"], 50);
        let out = on(&sb, "pm-stop", &["forky"]);
        assert_code(&out, 0);
        assert_all_gone("the limited fork loop", &live);
        assert_nothing_left(&sb, "after pm-stop");
    } else {
        eprintln!(
            "pids controller not in {} (it has: {:?}): testing the clear error",
            mount.display(),
            offered.trim()
        );
        let out = on(
            &sb,
            "pm-start",
            &["forky", "--pids-max", "50", "--", "sh", "-c", &script],
        );
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(err.contains("pids controller"), "{err}");
        assert!(err.contains("--pids-max"), "{err}");
        assert!(!ran.exists(), "the service ran");
        assert!(sb.processes().is_empty(), "{:?}", sb.processes());
        assert!(leaves(&sb).is_empty(), "{:?}", leaves(&sb));
        if let Some(dir) = sb.cgroup_dir() {
            assert!(live_in(&dir).is_empty());
        }
    }
}

// ---------------------------------------------------------------------------------------
// 6. --no-cgroup and PM_CGROUP=off: process-group tracking, as before

#[test]
fn no_cgroup_and_pm_cgroup_off_track_by_group_as_before() {
    let sb = Sandbox::new();
    let my_cgroup = procfs::cgroup_of(std::process::id() as i32);
    // (name, PM_CGROUP, extra option)
    for (name, mode, opt) in [("flag", "on", Some("--no-cgroup")), ("env", "off", None)] {
        let w = sb.path(&format!("{name}.workers"));
        let upf = sb.path(&format!("{name}.up"));
        let mut args = vec![
            name.to_string(),
            "--env".into(),
            format!("W={}", s(&w)),
            "--env".into(),
            format!("UP={}", s(&upf)),
            "--ready".into(),
            format!("file:{}", s(&upf)),
        ];
        args.extend(opt.map(String::from));
        args.extend(["--", "sh", "-c", TWO_WORKERS].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = pm(&sb, mode, "pm-start", &args);
        assert_success(&out, &format!("pm-start {name}"));
        let leader = sb.pid(name).unwrap();
        let workers = wait_workers(&w, leader);
        let rec = sb.rec(name);
        assert!(rec["cgroup"].is_null(), "{name}: {rec}");
        let j = json(&sb, mode, name);
        assert_eq!(j["tracking"], "group", "{name}: {j}");
        assert!(j["cgroup"].is_null(), "{name}: {j}");
        assert!(j["usage"].is_null(), "{name}: {j}");
        for p in [leader, workers[0], workers[1]] {
            assert_eq!(procfs::cgroup_of(p), my_cgroup, "{name}: pid {p} moved");
        }
        assert!(leaves(&sb).is_empty(), "{name}: {:?}", leaves(&sb));
        let run = rec["run_id"].as_str().unwrap_or_default();
        let made = cgroups_of_run(name, run);
        assert!(made.is_empty(), "{name}: a cgroup was made: {made:?}");

        let out = pm(&sb, mode, "pm-stop", &[name]);
        assert_code(&out, 0);
        let line = line_for(&out, "pm-stop", name);
        assert!(line.contains("stopped by SIGTERM"), "{line}");
        assert!(!line.contains("cgroup"), "{line}");
        assert!(line.contains("outside the group"), "{line}");
        assert_all_gone(name, &[leader, workers[0], workers[1]]);
    }
    // --no-cgroup is remembered: a restart from the record (PM_CGROUP=auto) is tracked
    // by group again.
    let out = pm(&sb, "auto", "pm-start", &["flag"]);
    assert_success(&out, "pm-start flag (from the record)");
    let rec = sb.rec("flag");
    assert!(rec["cgroup"].is_null(), "{rec}");
    assert_eq!(json(&sb, "auto", "flag")["tracking"], "group");
    let made = cgroups_of_run("flag", rec["run_id"].as_str().unwrap_or_default());
    assert!(made.is_empty(), "a cgroup was made: {made:?}");
    assert_code(&pm(&sb, "auto", "pm-stop", &["flag"]), 0);
    assert_nothing_left(&sb, "after the stops");

    // Limits need a cgroup: a usage error with tracking off.
    for (mode, flag) in [("on", Some("--no-cgroup")), ("off", None)] {
        let mut args = vec!["lim"];
        args.extend(flag);
        args.extend(["--memory-max", "64M", "--", "sleep", "1000"]);
        let out = pm(&sb, mode, "pm-start", &args);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains("limits need a cgroup"),
            "{}",
            describe(&out)
        );
        assert!(sb.processes().is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// 7. JSON: tracking, cgroup path, whole-service figures

#[test]
fn status_json_reports_the_cgroup_and_counts_every_process_in_it() {
    let Some(mount) = cgroup_or_skip("cgroup containment") else {
        return;
    };
    let sb = Sandbox::new();
    // Three processes: the shell and two sleeps, one of them in a session of its own.
    let (leader, workers, cg) = start_two_workers(&sb, "web");
    let live = live_in(&cg);
    assert_eq!(live.len(), 3, "{live:?}");
    let j = json(&sb, "on", "web");
    assert_eq!(j["state"], "running", "{j}");
    assert_eq!(j["pid"], leader);
    assert_eq!(j["tracking"], "cgroup", "{j}");
    assert_eq!(j["cgroup"].as_str(), Some(s(&cg)), "{j}");
    assert!(cg.is_dir());
    assert_eq!(j["usage"]["procs"].as_u64(), Some(live.len() as u64), "{j}");
    assert!(j["usage"]["memory_bytes"].as_u64().unwrap() > 0, "{j}");
    let from = if cg.join("memory.current").exists() {
        "memory.current"
    } else {
        "rss"
    };
    assert_eq!(j["usage"]["memory_from"], from, "{j}");
    assert!(j["usage"]["cpu_secs"].as_f64().is_some(), "{j}");
    assert!(j["limits"].is_null(), "{j}");
    // With a memory limit the controller is on, and memory.current is what counts.
    let controllers = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        let out = on(
            &sb,
            "pm-start",
            &["capped", "--memory-max", "64M", "--", "sleep", "1000"],
        );
        assert_success(&out, "pm-start --memory-max");
        let capped = leaf_of(&sb, "capped");
        assert!(capped.join("memory.current").exists());
        let j = json(&sb, "on", "capped");
        assert_eq!(j["usage"]["memory_from"], "memory.current", "{j}");
        assert_success(&on(&sb, "pm-stop", &["capped"]), "pm-stop capped");
    } else {
        skip("no cgroup v2 memory controller: memory.current in pm-status not tested");
    }

    // One process fewer in the cgroup: counted.
    kill(Pid::from_raw(workers[0]), Signal::SIGKILL).unwrap();
    wait_until("the worker is gone", || !is_alive(workers[0]));
    wait_until("two left in the cgroup", || live_in(&cg).len() == 2);
    assert_eq!(json(&sb, "on", "web")["usage"]["procs"], 2);

    // The long table: TRACK and PROCS columns.
    let out = on(&sb, "pm-status", &["-l", "web"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    let col = |h: &str| row[header.iter().position(|x| *x == h).unwrap()];
    assert_eq!(col("TRACK"), "cgroup", "{text}");
    assert_eq!(col("PROCS"), "2", "{text}");

    assert_code(&on(&sb, "pm-stop", &["web"]), 0);
    assert!(json(&sb, "on", "web")["usage"].is_null());
    assert_nothing_left(&sb, "after pm-stop");
}

/// pm-status lists a cgroup's directory only when it has sub-cgroups (the link count
/// says so): a leader that moved into a cgroup it made below its own is still running,
/// and what runs below is counted.
#[test]
fn a_leader_in_a_sub_cgroup_it_made_is_running_and_counted() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let sb = Sandbox::new();
    let w = sb.path("nest.worker");
    let env_w = format!("W={}", s(&w));
    let script = "cg=/proc/self/cgroup; mnt=$(awk '$9 == \"cgroup2\" {print $5; exit}' /proc/self/mountinfo); \
                  own=$mnt$(sed -n 's/^0:://p' $cg); mkdir \"$own/inner\" && echo $$ > \"$own/inner/cgroup.procs\" && \
                  { sleep 1000 & echo $! > \"$W\"; } && touch \"$UP\" && exec sleep 1000";
    let leader = up(&sb, "nest", &["--env", &env_w], script);
    let worker = wait_pids(&w, 1)[0];
    let cg = leaf_of(&sb, "nest");
    let inner = cg.join("inner");
    wait_until("the leader and its worker run in the sub-cgroup", || {
        let live = live_in(&inner);
        live.contains(&leader) && live.contains(&worker)
    });
    assert!(live_in(&cg).len() >= 2, "{:?}", live_in(&cg));
    assert!(pids_in(&cg.join("cgroup.procs")).is_empty());
    let j = json(&sb, "on", "nest");
    assert_eq!(j["state"], "running", "{j}");
    assert_eq!(j["pid"], leader, "{j}");
    assert_eq!(j["usage"]["procs"].as_u64(), Some(2), "{j}");
    assert_code(&on(&sb, "pm-stop", &["nest"]), 0);
    assert_all_gone("after pm-stop", &[leader, worker]);
    assert_nothing_left(&sb, "after pm-stop");
}

/// The leader is in its cgroup before it runs a single command: born there by
/// clone3(CLONE_INTO_CGROUP), or (`PM_CLONE3=off`, the fallback for kernels that refuse it)
/// moved there before the gate opens. Its first command reads its own cgroup; so does the
/// `--log-max-size` logger's, which must be in it too.
#[test]
fn the_leader_runs_nothing_outside_its_cgroup_with_clone3_or_without() {
    if cgroup_or_skip("first instruction in the cgroup").is_none() {
        return;
    }
    let sb = Sandbox::new();
    for (name, clone3) in [("born", "on"), ("moved", "off")] {
        let out = sb.path(&format!("{name}.cg"));
        let script = format!("cat /proc/$$/cgroup > {}; exec sleep 1000", s(&out));
        let start = sb
            .cmd("pm-start")
            .env("PM_CGROUP", "on")
            .env("PM_CLONE3", clone3)
            .args([
                name,
                "--grace",
                "0",
                "--log-max-size",
                "1M",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .output()
            .unwrap();
        assert_success(&start, "pm-start");
        let leaf = leaf_of(&sb, name);
        let pid = sb.pid(name).expect("pid");
        // `>` creates the file before cat writes it: wait for the whole of it.
        let read = || fs::read_to_string(&out).unwrap_or_default();
        wait_until("the first command's output", || read().contains("\n0::"));
        let seen = read();
        assert!(
            seen.lines().any(|l| l == format!("0::{}", rel(&leaf))),
            "{name}: the leader's first command saw {seen:?}, not {}",
            rel(&leaf)
        );
        // `cat` may still be alive after its write: the shell reaps it before it execs
        // sleep, so wait for that before counting.
        wait_until("the leader to exec sleep", || {
            procfs::cmdline(pid).first().map(String::as_str) == Some("sleep")
        });
        // The service and its logger, nothing else, and both in the cgroup.
        let live = live_in(&leaf);
        assert_eq!(live.len(), 2, "{name}: {live:?}");
        assert!(live.contains(&pid), "{name}: {live:?}");
        assert_in(&leaf, &live);
        assert_success(&on(&sb, "pm-stop", &[name]), "pm-stop");
        assert_all_gone(name, &live);
    }
    assert_nothing_left(&sb, "after both stops");
}

// ---------------------------------------------------------------------------------------
// 8. A record naming an unrelated process: never signalled, the cgroup still stopped

/// The real Python interpreter behind `python3` (not a version manager's shim, which
/// forks helpers of its own before it execs Python).
fn python() -> String {
    static PY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("run python3");
        let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !exe.is_empty(),
            "python3 has no sys.executable"
        );
        exe
    })
    .clone()
}

/// An unrelated process the test owns (outside any pm cgroup) that writes the number of
/// every signal it receives to `sigs` and keeps running; returns it once set up.
fn signal_logger(sb: &Sandbox, sigs: &Path) -> Owned {
    let upf = sigs.with_extension("up");
    let code = "import signal, sys\n\
                out, up = sys.argv[1:3]\n\
                def h(n, f):\n\
                \x20   with open(out, 'a') as o: o.write('%d\\n' % n)\n\
                for s in (signal.SIGTERM, signal.SIGCONT, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1):\n\
                \x20   signal.signal(s, h)\n\
                open(up, 'w').close()\n\
                while True:\n\
                \x20   signal.pause()\n";
    let o = sb.own(&[&python(), "-c", code, s(sigs), s(&upf)]);
    wait_until("the unrelated process is set up", || upf.exists());
    o
}

/// Runs `tool` on a service whose record names `own` and checks that `own` got nothing
/// and the service's processes are gone.
fn forged_record_case(forge_start_time: bool) {
    if cgroup_or_skip("cgroup containment").is_none() || !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    for tool in ["pm-stop", "pm-stopall"] {
        let (leader, workers, cg) = start_two_workers(&sb, "web");
        // The unrelated process starts in a later clock tick than the leader (as a process
        // that reuses its PID would), so only the start time forged below can match.
        let born = stat(leader).start_time;
        wait_until("a clock tick has passed since the leader started", || {
            ticks_since_boot() > born
        });
        let sigs = sb.path(&format!("{tool}.signals"));
        let own = signal_logger(&sb, &sigs);
        let me = own.pid();
        let mine = procfs::cgroup_of(me).unwrap();
        assert!(!mine.contains("/pm/"), "the unrelated process is in {mine}");
        let st = stat(me).start_time;
        assert!(
            st > born,
            "the unrelated process started at tick {st}, the leader at {born}"
        );
        edit_record(&sb, "web", |r| {
            r["pid"] = me.into();
            if forge_start_time {
                r["start_time"] = st.into();
            }
        });
        let out = if tool == "pm-stop" {
            on(&sb, "pm-stop", &["--timeout", "2s", "web"])
        } else {
            on(&sb, "pm-stopall", &["--timeout", "2s"])
        };
        let got = fs::read_to_string(&sigs).unwrap_or_default();
        assert!(
            got.is_empty() && is_alive(me),
            "{tool} signalled the unrelated process {me} (signals it caught: {got:?}, \
             alive: {}): {}",
            is_alive(me),
            describe(&out)
        );
        assert_code(&out, 0);
        assert_all_gone(tool, &[leader, workers[0], workers[1]]);
        assert!(!cg.exists(), "{tool}: {} was not removed", cg.display());
        drop(own);
        assert_nothing_left(&sb, tool);
    }
}

#[test]
fn a_reused_pid_in_the_record_is_never_signalled_and_the_cgroup_is_stopped() {
    // The PID names another process, the start time is still the leader's: a PID reused.
    forged_record_case(false);
}

#[test]
fn a_record_naming_a_process_outside_the_cgroup_never_gets_it_signalled() {
    // PID and start time both name the unrelated process: only the cgroup says it is not
    // the service.
    forged_record_case(true);
}

// ---------------------------------------------------------------------------------------
// 9. Cgroups no record names (strays)

#[test]
fn pm_stopall_stops_a_cgroup_no_record_names_and_says_so() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let sb = Sandbox::new();
    let (leader, workers, cg) = start_two_workers(&sb, "web");
    fs::remove_file(sb.state.join("web.json")).unwrap();
    assert_eq!(json(&sb, "on", "web")["state"], "unknown");

    let out = on(&sb, "pm-stopall", &[]);
    assert_code(&out, 0);
    let line = line_for(&out, "pm-stopall", "web");
    assert!(line.contains("stopped by SIGTERM"), "{line}");
    assert!(line.contains("which no record names"), "{line}");
    assert!(line.contains(s(&cg)), "{line}");
    assert_all_gone("the unrecorded service", &[leader, workers[0], workers[1]]);
    assert!(!cg.exists(), "{} was not removed", cg.display());
    assert_nothing_left(&sb, "after pm-stopall");
}

#[test]
fn pm_start_stops_the_stray_of_its_name_and_only_that_before_starting() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let sb = Sandbox::new();
    let (l1, w1, cg1) = start_two_workers(&sb, "web");
    let (l2, w2, cg2) = start_two_workers(&sb, "other");
    fs::remove_file(sb.state.join("web.json")).unwrap();
    fs::remove_file(sb.state.join("other.json")).unwrap();

    // A new command under the same name: the old start's cgroup is stopped first.
    let leader = up(&sb, "web", &[], ": > \"$UP\"; exec sleep 1000");
    assert_all_gone("the stray of web", &[l1, w1[0], w1[1]]);
    assert!(!cg1.exists(), "{} was not removed", cg1.display());
    let cg = leaf_of(&sb, "web");
    assert_ne!(cg, cg1);
    assert_eq!(live_in(&cg), vec![leader]);
    // Another name's stray is not pm-start web's business.
    assert_in(&cg2, &[l2, w2[0], w2[1]]);

    let out = on(&sb, "pm-stopall", &[]);
    assert_code(&out, 0);
    assert!(
        line_for(&out, "pm-stopall", "other").contains("which no record names"),
        "{}",
        describe(&out)
    );
    assert_all_gone("everything", &[leader, l2, w2[0], w2[1]]);
    assert_nothing_left(&sb, "after pm-stopall");
}

#[test]
fn pm_start_reports_the_stray_it_stopped() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let sb = Sandbox::new();
    let (l1, w1, cg1) = start_two_workers(&sb, "web");
    fs::remove_file(sb.state.join("web.json")).unwrap();
    let upf = sb.path("web2.up");
    let ready = format!("file:{}", s(&upf));
    let script = format!(": > '{}'; exec sleep 1000", s(&upf));
    let out = on(
        &sb,
        "pm-start",
        &["web", "--ready", &ready, "--", "sh", "-c", &script],
    );
    assert_success(&out, "pm-start web");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("stopped what was left in {}", s(&cg1))),
        "{err}"
    );
    assert_all_gone("the stray", &[l1, w1[0], w1[1]]);
    assert_code(&on(&sb, "pm-stop", &["web"]), 0);
    assert_nothing_left(&sb, "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 10. A frozen cgroup is still stopped gracefully

/// Thaws a cgroup on drop (so a failing test leaves nothing frozen).
struct Thaw(PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("cgroup.freeze"), "0");
    }
}

#[test]
fn a_frozen_cgroup_is_stopped_gracefully() {
    if cgroup_or_skip("cgroup containment").is_none() {
        return;
    }
    let sb = Sandbox::new();
    let got = sb.path("got");
    let env = format!("GOT={}", s(&got));
    let leader = up(
        &sb,
        "icy",
        &["--env", &env],
        "trap 'echo got TERM > \"$GOT\"; kill -KILL $! 2>/dev/null; exit 0' TERM; \
         sleep 1000 & : > \"$UP\"; wait",
    );
    let cg = leaf_of(&sb, "icy");
    assert_in(&cg, &[leader]);
    wait_until("the sleep runs", || live_in(&cg).len() == 2);
    let all = live_in(&cg);
    let _thaw = Thaw(cg.clone());
    fs::write(cg.join("cgroup.freeze"), "1").unwrap();
    wait_until("the cgroup is frozen", || {
        fs::read_to_string(cg.join("cgroup.events"))
            .unwrap_or_default()
            .lines()
            .any(|l| l == "frozen 1")
    });
    assert!(is_alive(leader));

    let out = on(&sb, "pm-stop", &["--timeout", "3s", "icy"]);
    assert_code(&out, 0);
    let line = line_for(&out, "pm-stop", "icy");
    assert!(line.contains("stopped by SIGTERM"), "{line}");
    assert!(!line.contains("escalated"), "{line}");
    assert_eq!(
        fs::read_to_string(&got).unwrap_or_default(),
        "got TERM\n",
        "the leader's TERM trap did not run: {line}"
    );
    assert_all_gone("the frozen service", &all);
    assert!(!cg.exists(), "{} was not removed", cg.display());
    assert_nothing_left(&sb, "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 11. The wait for the cgroup to empty is event-driven

#[test]
fn pm_stop_returns_as_soon_as_the_last_process_of_the_cgroup_exits() {
    if cgroup_or_skip("cgroup containment").is_none() || !python_ok() {
        return;
    }
    let sb = Sandbox::new();
    // A worker in a session of its own, without children, that exits 300 ms after TERM.
    let worker = "import os, signal, sys, time\n\
                  def h(n, f):\n\
                  \x20   time.sleep(0.3)\n\
                  \x20   with open(sys.argv[1] + '.exit', 'w') as e: e.write(repr(time.time()))\n\
                  \x20   os._exit(0)\n\
                  signal.signal(signal.SIGTERM, h)\n\
                  with open(sys.argv[1], 'w') as f: f.write('%d\\n' % os.getpid())\n\
                  while True:\n\
                  \x20   signal.pause()\n";
    let wfile = sb.path("worker.pid");
    let env_py = format!("PY={worker}");
    let env_exe = format!("PYTHON={}", python());
    let env_w = format!("WF={}", s(&wfile));
    let leader = up(
        &sb,
        "slow",
        &["--env", &env_py, "--env", &env_exe, "--env", &env_w],
        "setsid \"$PYTHON\" -c \"$PY\" \"$WF\" & \
         while [ ! -s \"$WF\" ]; do sleep 0.01; done; : > \"$UP\"; wait",
    );
    let w = wait_pids(&wfile, 1)[0];
    let cg = leaf_of(&sb, "slow");
    assert_in(&cg, &[leader, w]);
    assert_ne!(stat(w).pgrp, leader, "the worker left the leader's group");

    let t = Instant::now();
    let out = on(&sb, "pm-stop", &["--timeout", "5s", "slow"]);
    let took = t.elapsed();
    let returned = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_code(&out, 0);
    assert_all_gone("the slow worker", &[leader, w]);
    // How long after the worker's exit pm-stop had returned (the same host's clock).
    let exited: f64 = fs::read_to_string(wfile.with_extension("pid.exit"))
        .unwrap_or_else(|e| panic!("the worker wrote no exit time ({e}): {}", describe(&out)))
        .trim()
        .parse()
        .unwrap();
    let gap = returned - exited;
    eprintln!(
        "pm-stop returned {:.1} ms after the worker's exit",
        gap * 1000.0
    );
    assert!(!cg.exists());
    let line = line_for(&out, "pm-stop", "slow");
    assert!(!line.contains("escalated"), "{line}");
    eprintln!("pm-stop took {took:?} for a worker that exits 300 ms after TERM");
    assert!(
        took >= Duration::from_millis(300),
        "returned early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(550),
        "pm-stop took {took:?}: not woken by the cgroup emptying"
    );
    // Woken by the kernel's notification, not by a timer that happened to come round:
    // a few ms here, the period's remainder with polling (100 ms for a 400 ms period).
    assert!(
        gap < 0.075,
        "pm-stop returned {:.0} ms after the last process of the cgroup exited",
        gap * 1000.0
    );
    assert_nothing_left(&sb, "after pm-stop");
}

// ---------------------------------------------------------------------------------------
// 12. A non-root user: a delegated subtree, else group tracking

/// The unprivileged user of the test suite (`.ci/install-deps` creates it).
const USER: &str = "pmtest";

/// `(uid, gid)` of [`USER`] when root and it exists; else `None` after a skip message (a
/// failure in CI).
fn test_user() -> Option<(u32, u32)> {
    if !is_root() {
        eprintln!("SKIPPED: needs root (to act as {USER})");
        return None;
    }
    match nix::unistd::User::from_name(USER).ok().flatten() {
        Some(u) => Some((u.uid.as_raw(), u.gid.as_raw())),
        None => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("user {USER} is missing in CI: .ci/install-deps must create it");
            }
            eprintln!(
                "SKIPPED: user {USER} does not exist; create it with: useradd --system {USER}"
            );
            None
        }
    }
}

/// A cgroup delegated to a user for one test; on drop everything in it is killed and the
/// whole subtree removed.
struct Delegated(PathBuf);

impl Drop for Delegated {
    fn drop(&mut self) {
        for _ in 0..100 {
            let live = live_in(&self.0);
            if live.is_empty() {
                break;
            }
            for p in live {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        remove_cgroup_tree(&self.0);
    }
}

/// A sandbox whose state dir the user owns (and whose directory it can traverse).
fn user_sandbox(uid: u32, gid: u32) -> Sandbox {
    let sb = Sandbox::new();
    fs::set_permissions(sb.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(&sb.state).unwrap();
    fs::set_permissions(&sb.state, fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(
        &sb.state,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    sb
}

/// Runs pm tool `tool ARGS...` as the user (setpriv: no PAM, no cgroup move), with
/// `PM_CGROUP=mode`; first moved into cgroup `into`, if given, by a root shell that then
/// drops its privileges.
fn as_user(
    sb: &Sandbox,
    (uid, gid): (u32, u32),
    into: Option<&Path>,
    mode: &str,
    tool: &str,
    args: &[&str],
) -> Output {
    let mut c = sb.std_cmd("sh");
    let script = match into {
        Some(dir) => format!(
            "echo $$ > '{}' && exec setpriv --reuid={uid} --regid={gid} --clear-groups -- \"$@\"",
            s(&dir.join("cgroup.procs"))
        ),
        None => format!("exec setpriv --reuid={uid} --regid={gid} --clear-groups -- \"$@\""),
    };
    c.env("PM_CGROUP", mode)
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(bin_dir().join(tool))
        .args(args);
    c.output().expect("run sh/setpriv")
}

#[test]
fn a_user_with_a_delegated_cgroup_gets_cgroups_there_and_one_without_gets_groups() {
    let Some(mount) = cgroup_or_skip("delegating a cgroup") else {
        return;
    };
    let Some(user) = test_user() else { return };
    if !require("setpriv", "util-linux") {
        return;
    }
    let (uid, gid) = user;

    // Without delegation (its cgroup is root's): group tracking, or an error with on.
    let sb = user_sandbox(uid, gid);
    let out = as_user(
        &sb,
        user,
        None,
        "on",
        "pm-start",
        &["web", "--", "sleep", "1000"],
    );
    assert_code(&out, 1);
    assert!(stderr(&out).contains("delegated"), "{}", describe(&out));
    assert!(sb.processes().is_empty());
    let out = as_user(
        &sb,
        user,
        None,
        "auto",
        "pm-start",
        &["web", "--", "sleep", "1000"],
    );
    assert_success(&out, "pm-start web as the user, no delegation");
    let pid = sb.pid("web").unwrap();
    assert_eq!(stat(pid).pid, pid);
    assert_eq!(
        procfs::cgroup_of(pid),
        procfs::cgroup_of(std::process::id() as i32)
    );
    let st = as_user(&sb, user, None, "auto", "pm-status", &["--json", "web"]);
    let j: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(j[0]["tracking"], "group", "{j}");
    assert!(j[0]["cgroup"].is_null(), "{j}");
    assert_code(&as_user(&sb, user, None, "auto", "pm-stop", &["web"]), 0);
    assert_gone(pid);
    drop(sb);

    // With a delegated subtree: cgroups under it.
    let deleg = Delegated(mount.join(format!(
        "pmtest-deleg-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )));
    fs::create_dir(&deleg.0).unwrap();
    for f in [
        "",
        "cgroup.procs",
        "cgroup.subtree_control",
        "cgroup.threads",
    ] {
        nix::unistd::chown(
            &deleg.0.join(f),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
    }
    let sb = user_sandbox(uid, gid);
    // Where the user's service writes.
    let files = sb.path("files");
    fs::create_dir(&files).unwrap();
    nix::unistd::chown(
        &files,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    let w = files.join("web.workers");
    let upf = files.join("web.up");
    let (env_w, env_up, ready) = (
        format!("W={}", s(&w)),
        format!("UP={}", s(&upf)),
        format!("file:{}", s(&upf)),
    );
    let out = as_user(
        &sb,
        user,
        Some(&deleg.0),
        "on",
        "pm-start",
        &[
            "web",
            "--env",
            &env_w,
            "--env",
            &env_up,
            "--ready",
            &ready,
            "--",
            "sh",
            "-c",
            TWO_WORKERS,
        ],
    );
    assert_success(&out, "pm-start web as the user, in a delegated cgroup");
    let leader = sb.pid("web").unwrap();
    let workers = wait_workers(&w, leader);
    let st = as_user(&sb, user, None, "on", "pm-status", &["--json", "web"]);
    let j: Value =
        serde_json::from_slice(&st.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&st)));
    let j = &j[0];
    assert_eq!(j["state"], "running", "{j}");
    assert_eq!(j["tracking"], "cgroup", "{j}");
    let cg = PathBuf::from(j["cgroup"].as_str().unwrap());
    let run = sb.rec("web")["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        cg,
        deleg
            .0
            .join("pm")
            .join(state_id(&sb))
            .join(format!("web:{}", run.replace(['/', ':'], "_")))
    );
    assert_in(&cg, &[leader, workers[0], workers[1]]);
    assert_eq!(j["usage"]["procs"], 3, "{j}");
    for p in [leader, workers[0], workers[1]] {
        assert_eq!(stat(p).pid, p);
        let owner = fs::metadata(format!("/proc/{p}"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap();
        assert_eq!(owner, uid, "pid {p} runs as the user");
    }

    let out = as_user(&sb, user, None, "on", "pm-stop", &["web"]);
    assert_code(&out, 0);
    assert!(
        line_for(&out, "pm-stop", "web").contains("in its cgroup"),
        "{}",
        describe(&out)
    );
    assert_all_gone("the user's service", &[leader, workers[0], workers[1]]);
    assert!(!cg.exists(), "{} was not removed", cg.display());
    assert!(live_in(&deleg.0).is_empty());
    assert!(sb.processes().is_empty());
}

/// A cgroup of 1501 processes: cgroup.procs (at least 4 bytes a line, more than a page)
/// comes in more than one read (the kernel returns a short read before its end), and
/// pm-status counts them all.
#[test]
fn status_counts_every_process_of_a_large_cgroup() {
    let sb = Sandbox::new();
    sb.start_sh(
        "big",
        &[],
        "for i in $(seq 1500); do sleep 1000 & done; wait",
    );
    if sb.cgroup_dir().is_none() || sb.rec("big")["cgroup"].is_null() {
        return skip("no cgroup for this start");
    }
    let leaf = leaf_of(&sb, "big");
    let count = || {
        fs::read_to_string(leaf.join("cgroup.procs"))
            .unwrap()
            .lines()
            .count()
    };
    wait_until("1501 processes in the cgroup", || count() == 1501);
    let st = &sb.status_json(&["big"])[0];
    assert_eq!(st["usage"]["procs"], 1501, "{st}");
    assert_success(&sb.stop(&["big"]), "pm-stop big");
}
