//! pm-up under faults: interrupts that come twice or late, a concurrent pm-up of the same
//! file, an inherited SIGCHLD=SIG_IGN, one file reached by two paths.

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pm_tests::*;

/// Live (not zombie) children of `pid`, by the harness's /proc reader.
fn children(pid: i32) -> Vec<i32> {
    pm_tests::procfs::scan()
        .into_iter()
        .filter(|s| s.ppid == pid && !s.is_zombie())
        .map(|s| s.pid)
        .collect()
}

/// A second pm-up finds `a` being started by the first and waits for that start: `a` is
/// then up, but not started by the second, and interrupting the second must not stop it.
#[test]
fn an_interrupted_up_stops_only_what_it_started() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = \"exec sleep 1000\"\nready = \"file:go\"\nready_timeout = \"100s\"\n\n[services.b]\ncommand = \"exec sleep 1001\"\nready = \"file:never\"\nready_timeout = \"100s\"\n",
    );
    let first = sb.spawn_tool("up1", "pm-up", &["a"]);
    wait_until("a is starting", || sb.pid("a").is_some_and(is_alive));
    let a = sb.pid("a").unwrap();
    let second = sb.spawn_tool("up2", "pm-up", &[]);
    wait_until("b is starting", || sb.pid("b").is_some_and(is_alive));
    let b = sb.pid("b").unwrap();
    fs::write(sb.path("go"), "").unwrap();
    let done = first.finish(Duration::from_secs(60));
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    // The second pm-up's child for a ends once a is up; only b's remains.
    wait_until("the second pm-up waits only for b", || {
        children(second.pid()).len() == 1
    });
    kill(Pid::from_raw(second.pid()), Signal::SIGINT).unwrap();
    let done = second.finish(Duration::from_secs(60));
    assert_died_of_sigint(&done);
    assert_gone(b);
    assert!(
        is_alive(a),
        "a, started by the first pm-up, was stopped: {}",
        done.describe()
    );
    assert_eq!(sb.state_of("a"), "running");
    let out = sb.cmd("pm-down").output().unwrap();
    assert_success(&out, "pm-down");
    assert_gone(a);
}

/// A terminal's Ctrl-C reaches pm-up and its child alike (one process group), and the
/// child hears it twice (from the tty and forwarded): the task still gets its stop
/// signal and the time to act on it, not an immediate SIGKILL.
#[test]
fn a_ctrl_c_heard_twice_lets_a_task_clean_up() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.t]\ncommand = \"trap 'sleep 0.5; echo cleaned > cleaned; exit 0' TERM; touch began; sleep 1000 & wait\"\noneshot = true\n",
    );
    let mut cmd = sb.std_cmd(bin_dir().join("pm-up"));
    cmd.process_group(0);
    let run = sb.spawn_cmd("up", cmd);
    wait_until("the task began", || sb.path("began").exists());
    let began = Instant::now();
    kill(Pid::from_raw(-run.pid()), Signal::SIGINT).unwrap();
    let done = run.finish(Duration::from_secs(60));
    let took = began.elapsed();
    assert_died_of_sigint(&done);
    assert_eq!(
        fs::read_to_string(sb.path("cleaned")).ok().as_deref(),
        Some("cleaned\n"),
        "the task was killed before its TERM trap ran: {}",
        done.describe()
    );
    // Its trap took 0.5 s; the stop timeout (10 s) was not waited out.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// SIGCHLD ignored by whatever ran pm-up (inherited across exec) would have the kernel
/// reap pm-up's children unseen, and pm-up wait for them forever.
#[test]
fn up_works_with_sigchld_ignored_by_its_caller() {
    if !python_ok() {
        return skip("python3 is needed to exec with SIGCHLD ignored");
    }
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = [\"sleep\", \"1000\"]\n\n[services.t]\ncommand = \"true\"\noneshot = true\nneeds = { a = \"ready\" }\n",
    );
    let mut cmd = sb.std_cmd("python3");
    cmd.args([
        "-c",
        "import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])",
    ])
    .arg(bin_dir().join("pm-up"));
    let mut run = sb.spawn_cmd("up", cmd);
    let ended = run.wait_for_exit(Duration::from_secs(30));
    if !ended {
        run.kill_and_reap();
    }
    let done = run.finish(Duration::from_secs(5));
    assert!(ended, "pm-up hung: {}", done.describe());
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    assert_eq!(sb.state_of("a"), "running");
    assert_success(&sb.cmd("pm-down").output().unwrap(), "pm-down");
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// `-f sub/../pm.toml` and a symlinked directory name the file the records name: the
/// stack is the same one, not "started from another file".
#[test]
fn one_file_by_two_paths_is_one_stack() {
    let sb = Sandbox::new();
    write_stack(&sb, "[services.a]\ncommand = [\"sleep\", \"1000\"]\n");
    fs::create_dir(sb.path("sub")).unwrap();
    std::os::unix::fs::symlink(sb.path("."), sb.path("link")).unwrap();
    assert_success(
        &sb.cmd("pm-up")
            .args(["-f", "sub/../pm.toml"])
            .output()
            .unwrap(),
        "pm-up -f sub/../pm.toml",
    );
    let a = sb.pid("a").unwrap();
    for f in ["pm.toml", "link/pm.toml"] {
        let out = sb.cmd("pm-up").args(["-f", f]).output().unwrap();
        assert_success(&out, f);
        assert!(
            stderr(&out).contains(&format!("pm-up: a: already running, pid {a}")),
            "{f}: {}",
            describe(&out)
        );
    }
    // pm-down goes by the records, also once the file is gone: through the symlinked
    // directory, and a symlink to the file left dangling, it is still the same stack.
    std::os::unix::fs::symlink("pm.toml", sb.path("alias.toml")).unwrap();
    fs::remove_file(sb.path("pm.toml")).unwrap();
    let out = sb
        .cmd("pm-down")
        .args(["-f", "link/alias.toml"])
        .output()
        .unwrap();
    assert_success(&out, "pm-down -f link/alias.toml");
    assert!(stderr(&out).contains("a: stopped"), "{}", describe(&out));
    assert_gone(a);
}

/// A name or tag the file does not define is "no such service" (exit 4, as in the other
/// tools), not a usage error; nothing starts.
#[test]
fn up_of_an_unknown_name_or_tag_is_exit_4() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = [\"sleep\", \"1000\"]\ntags = [\"x\"]\n",
    );
    for arg in ["zz", "@nope"] {
        let out = sb.cmd("pm-up").arg(arg).output().unwrap();
        assert_code(&out, 4);
        assert!(stderr(&out).contains("pm.toml"), "{}", describe(&out));
        assert!(sb.record("a").is_none(), "{arg}: a was started");
    }
}

/// A task whose working directory is missing says so, not "command not found".
#[test]
fn a_task_with_a_missing_cwd_names_the_directory() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.t]\ncommand = \"true\"\ncwd = \"gone\"\noneshot = true\n",
    );
    let out = sb.cmd("pm-up").output().unwrap();
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("gone") && err.contains("working directory does not exist"),
        "{}",
        describe(&out)
    );
}

/// A task starts with no signal blocked, whatever pm-up (which reads them from a
/// signalfd) or its caller blocks; a restart by hand is no longer that pm-up's start.
#[test]
fn a_task_starts_with_no_signal_blocked_and_a_restart_is_not_the_runs() {
    if !python_ok() {
        return skip("python3 is needed to exec with signals blocked");
    }
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.t]\ncommand = \"grep SigBlk /proc/self/status > blk\"\noneshot = true\n\n[services.a]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    let mut cmd = sb.std_cmd("python3");
    cmd.args([
        "-c",
        "import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}); os.execv(sys.argv[1], sys.argv[1:])",
    ])
    .arg(bin_dir().join("pm-up"));
    let done = sb.spawn_cmd("up", cmd).finish(Duration::from_secs(60));
    assert_eq!(done.code(), Some(0), "{}", done.describe());
    let blk = fs::read_to_string(sb.path("blk")).unwrap();
    assert_eq!(
        blk.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{blk}"
    );
    assert!(sb.rec("a")["stack"]["by"].is_string(), "{}", sb.rec("a"));
    assert_success(
        &sb.cmd("pm-restart").arg("a").output().unwrap(),
        "pm-restart a",
    );
    assert!(sb.rec("a")["stack"]["by"].is_null(), "{}", sb.rec("a"));
    assert_eq!(sb.rec("a")["stack"]["file"], s(&sb.path("pm.toml")));
    assert_success(&sb.cmd("pm-down").output().unwrap(), "pm-down");
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// A oneshot task has no record, so nothing but pm-up could stop it: a SIGKILLed pm-up
/// must not leave it (or what it started) running.
#[test]
fn a_killed_up_leaves_no_task_behind() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.t]\ncommand = \"sleep 1000 & echo $! > child; echo $$ > task; wait\"\noneshot = true\n",
    );
    let mut run = sb.spawn_tool("up", "pm-up", &[]);
    wait_until("the task began", || {
        ["task", "child"]
            .iter()
            .all(|f| fs::read_to_string(sb.path(f)).is_ok_and(|s| s.ends_with('\n')))
    });
    let (task, child) = (pid_in(&sb, "task"), pid_in(&sb, "child"));
    assert!(is_alive(task) && is_alive(child));
    sigkill(run.pid());
    run.kill_and_reap();
    let killed = Instant::now();
    wait_until("the task and its child are gone", || {
        !is_alive(task) && !is_alive(child)
    });
    // Stopped by its stop signal at once, not after its stop timeout (10 s).
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// A task's runner (pm-up's child) SIGKILLed, say by the OOM killer: the task dies with it
/// (PDEATHSIG), and pm-up, still running, kills what the task left in its session, then
/// says the task failed (exit 1).
#[test]
fn a_killed_task_runner_leaves_nothing_of_the_task_behind() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.t]\ncommand = \"sleep 1000 & echo $! > child; echo $$ > task; wait\"\noneshot = true\n",
    );
    kill_the_runner_and_find_nothing_left(&sb);
}

/// pm-up of the stack in `sb`, whose task `t` writes its PID to `task`, then its child's
/// to `child`: SIGKILL of the task's runner, and then nothing of the task may be left
/// once pm-up has exited (its stop waits until what it killed is gone), which it does
/// with status 1, saying why.
fn kill_the_runner_and_find_nothing_left(sb: &Sandbox) {
    let run = sb.spawn_tool("up", "pm-up", &[]);
    wait_until("the task began", || {
        ["task", "child"]
            .iter()
            .all(|f| fs::read_to_string(sb.path(f)).is_ok_and(|s| s.ends_with('\n')))
    });
    let (task, child) = (pid_in(sb, "task"), pid_in(sb, "child"));
    let runner = procfs::Stat::read(task).expect("the task's stat").ppid;
    assert_eq!(
        procfs::Stat::read(runner).map(|s| s.ppid),
        Some(run.pid()),
        "the task's parent is not pm-up's child"
    );
    sigkill(runner);
    let done = run.finish(Duration::from_secs(60));
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert!(
        done.stderr
            .contains("pm-up: t: its runner was killed; what the task left is killed too"),
        "{}",
        done.describe()
    );
    assert!(!is_alive(task), "the task outlived its runner");
    assert!(!is_alive(child), "the task's child outlived its runner");
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// As above, with a task that takes a while to die (1 GiB of touched memory to free):
/// pm-up reaps the runner while the task is still alive, not yet a zombie. (Seen as a
/// leaderless stop, its live PID hid its group and session, and its child was left.)
#[test]
fn a_killed_task_runner_leaves_nothing_of_a_slowly_dying_task() {
    let sb = Sandbox::new();
    fs::write(
        sb.path("t.pl"),
        "$x = \"a\" x (1024 * 1024 * 1024);\n$p = fork // die; if (!$p) { exec \"sleep\", \"1000\"; }\nopen F, \">child\"; print F \"$p\\n\"; close F;\nopen F, \">task\"; print F \"$$\\n\"; close F; sleep 1000;\n",
    )
    .unwrap();
    write_stack(
        &sb,
        "[services.t]\ncommand = \"exec perl t.pl\"\noneshot = true\n",
    );
    kill_the_runner_and_find_nothing_left(&sb);
}

/// A task that starts a supervised service of its own (pm-start --restart): when the
/// task's runner is SIGKILLed, what pm-up kills is the task's, not that service or its
/// monitor (the monitor, detached into a session of its own, once carried the task's
/// PM_RUN_ID and was taken for the task's, with the service under it).
#[test]
fn a_killed_task_runner_leaves_a_service_the_task_started_alone() {
    let sb = Sandbox::new();
    let start = bin_dir().join("pm-start");
    write_stack(
        &sb,
        &format!(
            "[services.t]\ncommand = \"{} helper --restart always -- sleep 1000 && sleep 1000 & echo $! > child; echo $$ > task; wait\"\noneshot = true\n",
            s(&start)
        ),
    );
    let run = sb.spawn_tool("up", "pm-up", &[]);
    wait_until("the helper is supervised and running", || {
        sb.state_of("helper") == "running" && sb.status_json(&["helper"])[0]["monitor_pid"].is_i64()
    });
    let helper = sb.pid("helper").expect("helper's pid");
    let monitor = sb.status_json(&["helper"])[0]["monitor_pid"]
        .as_i64()
        .unwrap() as i32;
    let task = pid_in(&sb, "task");
    let runner = procfs::Stat::read(task).expect("the task's stat").ppid;
    sigkill(runner);
    let done = run.finish(Duration::from_secs(60));
    assert_eq!(done.code(), Some(1), "{}", done.describe());
    assert!(!is_alive(task), "the task outlived its runner");
    assert!(
        is_alive(helper),
        "the task's service was killed: {}",
        done.describe()
    );
    assert!(
        is_alive(monitor),
        "the service's monitor was killed: {}",
        done.describe()
    );
    assert_eq!(sb.state_of("helper"), "running");
    assert_success(&sb.stop(&["helper"]), "pm-stop helper");
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// pm-down while a pm-up of the same file is still starting: it waits for that pm-up to
/// end (said on stderr), then stops everything, also what the pm-up started after
/// pm-down began (c, started only once b is ready). Before, pm-down stopped what it saw
/// and returned; c then came up and stayed.
#[test]
fn a_down_during_an_up_waits_for_it_and_leaves_nothing_up() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = \"exec sleep 1000\"\n\n[services.b]\ncommand = \"exec sleep 1001\"\nready = \"file:b.go\"\nready_timeout = \"60s\"\nneeds = [\"a\"]\n\n[services.c]\ncommand = \"exec sleep 1002\"\nneeds = [\"b\"]\n",
    );
    let up = sb.spawn_tool("up", "pm-up", &[]);
    wait_until("b is starting", || sb.pid("b").is_some_and(is_alive));
    let down = sb.spawn_tool("down", "pm-down", &[]);
    wait_until("pm-down says it waits", || {
        down.stderr_so_far()
            .contains("waiting for the pm-up of this file to end")
    });
    assert!(is_alive(sb.pid("a").expect("a")), "pm-down did not wait");
    fs::write(sb.path("b.go"), "").unwrap();
    let up = up.finish(Duration::from_secs(60));
    assert_eq!(up.code(), Some(0), "{}", up.describe());
    let down = down.finish(Duration::from_secs(60));
    assert_eq!(down.code(), Some(0), "{}", down.describe());
    for n in ["a", "b", "c"] {
        assert_eq!(sb.state_of(n), "stopped", "{n}: {}", down.describe());
    }
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// A task that runs pm-down of its own stack does not wait for the pm-up that runs it
/// (which waits for the task): it says so and stops what it was asked to.
#[test]
fn a_down_run_by_a_task_of_the_same_file_does_not_wait_for_its_up() {
    let sb = Sandbox::new();
    let down = bin_dir().join("pm-down");
    write_stack(
        &sb,
        &format!(
            "[services.a]\ncommand = \"exec sleep 1000\"\n\n[services.t]\ncommand = \"{} a\"\noneshot = true\nneeds = [\"a\"]\n",
            s(&down)
        ),
    );
    let up = sb.spawn_tool("up", "pm-up", &[]);
    let up = up.finish(Duration::from_secs(60));
    assert_eq!(up.code(), Some(0), "{}", up.describe());
    // The task's output is in its log.
    let log = fs::read_to_string(sb.state.join("t.log")).unwrap_or_default();
    assert!(
        log.contains("run by the pm-up of this file: not waiting for it"),
        "{log}"
    );
    assert_eq!(sb.state_of("a"), "stopped", "{}", up.describe());
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// A pm-down waiting for a pm-up holds back the pm-up runs that come after it (else a
/// stream of overlapping pm-up runs would keep it waiting for ever): the later pm-up
/// waits for the pm-down, and brings the stack up again after it.
#[test]
fn a_waiting_down_goes_before_a_later_up() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = \"exec sleep 1000\"\n\n[services.b]\ncommand = \"exec sleep 1001\"\nready = \"file:b.go\"\nready_timeout = \"60s\"\nneeds = [\"a\"]\n",
    );
    let first = sb.spawn_tool("up1", "pm-up", &[]);
    wait_until("b is starting", || sb.pid("b").is_some_and(is_alive));
    let down = sb.spawn_tool("down", "pm-down", &[]);
    wait_until("pm-down waits", || {
        down.stderr_so_far()
            .contains("waiting for the pm-up of this file to end")
    });
    let second = sb.spawn_tool("up2", "pm-up", &[]);
    wait_until("the second pm-up waits for pm-down", || {
        second
            .stderr_so_far()
            .contains("waiting for a pm-down of this file to end")
    });
    fs::write(sb.path("b.go"), "").unwrap();
    let first = first.finish(Duration::from_secs(60));
    assert_eq!(first.code(), Some(0), "{}", first.describe());
    let b = sb.pid("b").expect("b's pid");
    let down = down.finish(Duration::from_secs(60));
    assert_eq!(down.code(), Some(0), "{}", down.describe());
    // The second pm-up brings both up again after the pm-down (b once its file is newer
    // than its new start).
    wait_until("the second pm-up starts b", || {
        sb.pid("b").is_some_and(|p| p != b && is_alive(p))
    });
    fs::write(sb.path("b.go"), "again").unwrap();
    let second = second.finish(Duration::from_secs(60));
    assert_eq!(second.code(), Some(0), "{}", second.describe());
    for n in ["a", "b"] {
        assert_eq!(sb.state_of(n), "running", "{n}: {}", second.describe());
    }
    assert_success(&sb.cmd("pm-down").output().unwrap(), "pm-down");
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// pm-up SIGKILLed while b is starting: its child finishes b's start (as a pm-start
/// would), and a pm-down waits for that start to end instead of stopping a and leaving
/// b to come up after it.
#[test]
fn a_down_after_a_killed_up_waits_for_the_starts_it_left() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = \"exec sleep 1000\"\n\n[services.b]\ncommand = \"exec sleep 1001\"\nready = \"file:b.go\"\nready_timeout = \"60s\"\nneeds = [\"a\"]\n",
    );
    let mut up = sb.spawn_tool("up", "pm-up", &[]);
    wait_until("b is starting", || sb.pid("b").is_some_and(is_alive));
    sigkill(up.pid());
    up.kill_and_reap();
    let down = sb.spawn_tool("down", "pm-down", &[]);
    wait_until("pm-down says it waits", || {
        down.stderr_so_far()
            .contains("waiting for the pm-up of this file to end")
    });
    fs::write(sb.path("b.go"), "").unwrap();
    let down = down.finish(Duration::from_secs(60));
    assert_eq!(down.code(), Some(0), "{}", down.describe());
    for n in ["a", "b"] {
        assert_eq!(sb.state_of(n), "stopped", "{n}: {}", down.describe());
    }
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// What pm-up leaves running (here a supervised service's monitor, forked from pm-up's
/// child, which inherits pm-up's hold on the stack) does not hold the stack: pm-down
/// after pm-up goes at once.
#[test]
fn what_an_up_leaves_running_does_not_keep_a_down_waiting() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = \"exec sleep 1000\"\nrestart = \"always\"\n",
    );
    let out = sb.cmd("pm-up").output().unwrap();
    assert_success(&out, "pm-up");
    let down = sb.spawn_tool("down", "pm-down", &[]);
    let down = down.finish(Duration::from_secs(30));
    assert_eq!(down.code(), Some(0), "{}", down.describe());
    assert!(!down.stderr.contains("waiting"), "{}", down.describe());
    assert_eq!(sb.state_of("a"), "stopped");
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// Two pm-up runs of one file run a oneshot task one after the other, never both at once
/// (a migration run twice concurrently can corrupt what it migrates).
#[test]
fn two_ups_never_run_a_task_at_the_same_time() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.t]\ncommand = \"mkdir running || exit 7; echo >> runs; sleep 0.5; rmdir running\"\noneshot = true\n",
    );
    let first = sb.spawn_tool("up1", "pm-up", &[]);
    wait_until("the first run began", || sb.path("running").exists());
    let second = sb.spawn_tool("up2", "pm-up", &[]);
    let (one, two) = (
        first.finish(Duration::from_secs(30)),
        second.finish(Duration::from_secs(30)),
    );
    assert_eq!(one.code(), Some(0), "{}", one.describe());
    assert_eq!(two.code(), Some(0), "{}", two.describe());
    assert!(
        two.stderr.contains("waiting for another run of this task"),
        "{}",
        two.describe()
    );
    assert_eq!(fs::read_to_string(sb.path("runs")).unwrap(), "\n\n");
    // A task has no record, and leaves no lock file either.
    assert!(!sb.path("state/t.lock").exists());
}

/// A task run as another user gets that user's groups, HOME and USER, as a service does.
#[test]
fn a_task_runs_with_its_users_groups_and_home() {
    if !root_or_skip("running as another user needs root") {
        return;
    }
    let sb = Sandbox::new();
    let out = sb.path("who");
    write_stack(
        &sb,
        &format!(
            "[services.t]\ncommand = \"echo $(id -u) $(id -G) $USER $HOME > {}\"\nuser = \"pmtest\"\noneshot = true\n",
            out.display()
        ),
    );
    // The file is written by pmtest.
    let uid = nix::unistd::User::from_name("pmtest").unwrap().unwrap().uid;
    std::os::unix::fs::chown(sb.path("."), Some(uid.as_raw()), None).unwrap();
    assert_success(&sb.cmd("pm-up").output().unwrap(), "pm-up");
    let expect = std::process::Command::new("sh")
        .args([
            "-c",
            "echo $(id -u pmtest) $(id -G pmtest) pmtest $(getent passwd pmtest | cut -d: -f6)",
        ])
        .output()
        .unwrap();
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        String::from_utf8_lossy(&expect.stdout)
    );
}

/// `a` never becomes ready and `b` needs it only started: on an interrupt `b` (up) must
/// stop before `a` (still starting), though `a`'s start is the one still under way.
const ORDER_STACK: &str = "[services.a]\ncommand = \"trap 'echo a >> order; exit 0' TERM; touch a.trapped; sleep 1000 & wait\"\nready = \"file:never\"\nready_timeout = \"100s\"\n\n[services.b]\ncommand = \"trap 'echo b >> order; exit 0' TERM; touch b.trapped; sleep 1000 & wait\"\nneeds = { a = \"started\" }\n";

/// Both services of [`ORDER_STACK`] have set their TERM traps (a SIGTERM before that
/// kills the shell without a word in `order`).
fn wait_for_traps(sb: &Sandbox, names: &[&str]) {
    wait_until("the services' traps are set", || {
        names
            .iter()
            .all(|n| sb.path(&format!("{n}.trapped")).exists())
    });
}

/// pm-up died of SIGINT, its services' TERM traps wrote `order` as expected, and nothing
/// is left.
fn assert_wound_down_in_order(sb: &Sandbox, done: &Done, order: &str) {
    assert_died_of_sigint(done);
    assert_eq!(
        fs::read_to_string(sb.path("order")).unwrap_or_default(),
        order,
        "stopped out of order: {}",
        done.describe()
    );
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

#[track_caller]
fn assert_died_of_sigint(done: &Done) {
    assert_eq!(
        done.status.signal(),
        Some(Signal::SIGINT as i32),
        "{}",
        done.describe()
    );
}

/// The PID a test's shell command wrote to the sandbox file `f`.
fn pid_in(sb: &Sandbox, f: &str) -> i32 {
    fs::read_to_string(sb.path(f))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// SIGINT sent to pm-up alone.
#[test]
fn an_interrupt_stops_a_need_still_starting_after_its_dependent() {
    let sb = Sandbox::new();
    write_stack(&sb, ORDER_STACK);
    let run = sb.spawn_tool("up", "pm-up", &[]);
    wait_until("b is running", || sb.state_of("b") == "running");
    wait_for_traps(&sb, &["a", "b"]);
    kill(Pid::from_raw(run.pid()), Signal::SIGINT).unwrap();
    let done = run.finish(Duration::from_secs(60));
    assert_wound_down_in_order(&sb, &done, "b\na\n");
}

/// pm-up on a pseudo-terminal of its own (its session's controlling terminal, pm-up the
/// foreground group), where Ctrl-C is typed once the file `ctrl-c` exists; the terminal's
/// output goes to the run's stderr. `None` without python3.
fn up_at_a_terminal(sb: &Sandbox) -> Option<Bg> {
    if !python_ok() {
        skip("python3 is needed for a pseudo-terminal");
        return None;
    }
    let mut cmd = sb.std_cmd("python3");
    cmd.args([
        "-c",
        "import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
while not os.path.exists('ctrl-c'):
    time.sleep(0.01)
os.write(fd, b'\\x03')
out = b''
while True:
    try:
        d = os.read(fd, 4096)
    except OSError:
        break
    if not d:
        break
    out += d
_, st = os.waitpid(pid, 0)
sys.stderr.write(out.decode(errors='replace'))
if os.WIFSIGNALED(st):
    os.kill(os.getpid(), os.WTERMSIG(st))
sys.exit(os.WEXITSTATUS(st))",
    ])
    .arg(bin_dir().join("pm-up"));
    Some(sb.spawn_cmd("up", cmd))
}

/// Ctrl-C typed at a terminal reaches pm-up alone (its children have process groups of
/// their own), which passes it on in order; also when the need is supervised.
#[test]
fn ctrl_c_at_a_terminal_stops_a_need_still_starting_after_its_dependent() {
    for stack in [
        ORDER_STACK.to_string(),
        ORDER_STACK.replace(
            "ready_timeout = \"100s\"\n",
            "ready_timeout = \"100s\"\nrestart = \"always\"\n",
        ),
    ] {
        let sb = Sandbox::new();
        write_stack(&sb, &stack);
        let Some(run) = up_at_a_terminal(&sb) else {
            return;
        };
        wait_until("b is running", || sb.state_of("b") == "running");
        wait_for_traps(&sb, &["a", "b"]);
        fs::write(sb.path("ctrl-c"), "").unwrap();
        let done = run.finish(Duration::from_secs(60));
        assert_wound_down_in_order(&sb, &done, "b\na\n");
    }
}

/// Ctrl-C typed while three tasks run stops all three at once: none is left to run to
/// its end (a copy of the signal heard by a task's runner and one from pm-up merge into
/// one, so the runner must hear only pm-up's).
#[test]
fn ctrl_c_at_a_terminal_stops_every_task() {
    for _ in 0..3 {
        let sb = Sandbox::new();
        write_stack(
            &sb,
            "[services.t1]\ncommand = \"touch t1.go; exec sleep 30\"\noneshot = true\n\n[services.t2]\ncommand = \"touch t2.go; exec sleep 30\"\noneshot = true\n\n[services.t3]\ncommand = \"touch t3.go; exec sleep 30\"\noneshot = true\n",
        );
        let Some(run) = up_at_a_terminal(&sb) else {
            return;
        };
        wait_until("the tasks began", || {
            ["t1.go", "t2.go", "t3.go"]
                .iter()
                .all(|f| sb.path(f).exists())
        });
        fs::write(sb.path("ctrl-c"), "").unwrap();
        let done = run.finish(Duration::from_secs(60));
        assert_eq!(
            done.status.signal(),
            Some(Signal::SIGINT as i32),
            "{}",
            done.describe()
        );
        // The tasks sleep 30 s: stopped, not waited out.
        assert!(done.took < Duration::from_secs(15), "{}", done.describe());
        assert!(!done.stderr.contains("succeeded"), "{}", done.describe());
        wait_until("the sandbox is empty", || sb.processes().is_empty());
    }
}

/// app needs the task migrate, which needs db: on an interrupt while app is starting, db
/// is still needed (through the task) and goes only after app.
#[test]
fn an_interrupt_keeps_a_need_reached_through_a_task_until_its_dependent_is_stopped() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.db]\ncommand = \"trap 'echo db >> order; exit 0' TERM; touch db.trapped; sleep 1000 & wait\"\n\n[services.migrate]\ncommand = \"true\"\noneshot = true\nneeds = { db = \"ready\" }\n\n[services.app]\ncommand = \"trap 'sleep 0.3; echo app >> order; exit 0' TERM; touch app.trapped; sleep 1000 & wait\"\nready = \"file:never\"\nready_timeout = \"100s\"\nneeds = { migrate = \"succeeded\" }\n",
    );
    let run = sb.spawn_tool("up", "pm-up", &[]);
    wait_until("app is starting", || sb.pid("app").is_some_and(is_alive));
    wait_for_traps(&sb, &["db", "app"]);
    kill(Pid::from_raw(run.pid()), Signal::SIGINT).unwrap();
    let done = run.finish(Duration::from_secs(60));
    assert_wound_down_in_order(&sb, &done, "app\ndb\n");
}

/// SIGKILL of pm-up's whole process group (a job killed by `kill -9 -PGID`, `timeout -s
/// KILL`): the task's runner is in a group of its own, hears of pm-up's death and stops
/// the task, and what the task started with it.
#[test]
fn a_killed_job_leaves_no_task_behind() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.t]\ncommand = \"sleep 1000 & echo $! > child; echo $$ > task; wait\"\noneshot = true\n",
    );
    let mut cmd = sb.std_cmd(bin_dir().join("pm-up"));
    cmd.process_group(0);
    let mut run = sb.spawn_cmd("up", cmd);
    wait_until("the task began", || {
        ["task", "child"]
            .iter()
            .all(|f| fs::read_to_string(sb.path(f)).is_ok_and(|s| s.ends_with('\n')))
    });
    let (task, child) = (pid_in(&sb, "task"), pid_in(&sb, "child"));
    kill(Pid::from_raw(-run.pid()), Signal::SIGKILL).unwrap();
    run.kill_and_reap();
    wait_until("the task and its child are gone", || {
        !is_alive(task) && !is_alive(child)
    });
    wait_until("the sandbox is empty", || sb.processes().is_empty());
    assert!(
        !sb.path("state/t.lock").exists(),
        "the task's lock file was left"
    );
}

/// A service stopped and started again by hand while pm-up waits for another is no
/// longer pm-up's: its interrupt must leave it running.
#[test]
fn an_interrupt_leaves_a_service_restarted_by_hand() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = [\"sleep\", \"1000\"]\n\n[services.b]\ncommand = [\"sleep\", \"1001\"]\nready = \"file:never\"\nready_timeout = \"100s\"\n",
    );
    let run = sb.spawn_tool("up", "pm-up", &[]);
    wait_until("a is running", || sb.state_of("a") == "running");
    wait_until("b is starting", || sb.pid("b").is_some_and(is_alive));
    assert_success(&sb.stop(&["a"]), "pm-stop a");
    assert_success(&sb.start("a", &["--", "sleep", "1002"]), "pm-start a");
    let a = sb.pid("a").unwrap();
    kill(Pid::from_raw(run.pid()), Signal::SIGINT).unwrap();
    let done = run.finish(Duration::from_secs(60));
    assert_died_of_sigint(&done);
    assert!(
        is_alive(a),
        "the hand-started a was stopped: {}",
        done.describe()
    );
    assert!(
        done.stderr.contains("a: interrupted: not stopped"),
        "{}",
        done.describe()
    );
    assert_success(&sb.stop(&["a"]), "pm-stop a");
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}

/// `b` needs `a` only started, and `a` is ready only once `b` runs. When another pm-up is
/// already starting `a`, this one's start of `a` waits for that one: `a` is still started
/// (its record says so), so `b` must not wait for `a` to be ready (that never comes).
#[test]
fn started_holds_while_another_up_starts_the_need() {
    let sb = Sandbox::new();
    write_stack(
        &sb,
        "[services.a]\ncommand = \"exec sleep 1000\"\nready = \"file:b.began\"\nready_timeout = \"30s\"\n\n[services.b]\ncommand = \"touch b.began; exec sleep 1001\"\nneeds = { a = \"started\" }\n",
    );
    let first = sb.spawn_tool("up1", "pm-up", &["a"]);
    wait_until("a is starting", || sb.state_of("a") == "starting");
    let began = Instant::now();
    let second = sb.spawn_tool("up2", "pm-up", &[]);
    let two = second.finish(Duration::from_secs(60));
    let one = first.finish(Duration::from_secs(60));
    assert_eq!(two.code(), Some(0), "{}", two.describe());
    assert_eq!(one.code(), Some(0), "{}", one.describe());
    // Well before a's ready timeout, which a wait for a's readiness would run out.
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );
    assert_success(&sb.cmd("pm-down").output().unwrap(), "pm-down");
    wait_until("the sandbox is empty", || sb.processes().is_empty());
}
