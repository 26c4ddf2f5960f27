//! The RECIPES of pm(7) run as scripts (issue 14): the Makefile, the init-style script, the
//! "start everything that is not running; restart everything" one-liners and "follow logs".
//! The cron watchdog is tested in `status.rs`, the real-daemon recipes in `services.rs`.
//!
//! Every recipe is read from `man/pm.7` itself (the `.nf`/`.fi` block of its `.SS`,
//! un-escaped from roff by [`unroff`], which refuses an escape it does not know), so a page
//! that changes in a way that breaks a recipe fails here. Only what must be is substituted:
//! the Makefile's ports (free ones instead of 5432 and 8000) and, on PATH, stand-ins for
//! PostgreSQL's `postgres` and `pg_isready` (the Makefile's db is not a real-daemon test).
//! The init-style script runs under `env -i`, as init runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use pm_tests::*;

// ---------------------------------------------------------------------------------------
// Reading the recipes from the page

/// One line of roff source as the reader sees it: `\-` is `-`, `\e` and `\\` are `\`,
/// `\&` and font changes vanish, `\(aq` is `'`, and so on. Any other escape panics, so a
/// page the test cannot read fails instead of feeding the shell a garbled recipe.
fn unroff(line: &str) -> String {
    fn named(name: &str, line: &str) -> &'static str {
        match name {
            "aq" => "'",
            "dq" => "\"",
            "ti" | "a~" => "~",
            "ha" | "a^" => "^",
            "rs" => "\\",
            "lq" | "rq" => "\"",
            "oq" | "cq" => "'",
            "ga" => "`",
            "hy" | "mi" => "-",
            "bv" | "ba" => "|",
            _ => panic!("unknown roff special character \\({name} in {line:?}"),
        }
    }
    let mut out = String::new();
    let mut it = line.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('-') => out.push('-'),
            Some('e' | '\\') => out.push('\\'),
            Some('&' | '%') => {}
            Some(' ' | '~') => out.push(' '),
            Some('f') => match it.next() {
                Some('(') => {
                    it.next();
                    it.next();
                }
                Some('[') => for _ in it.by_ref().take_while(|&c| c != ']') {},
                Some(_) => {}
                None => panic!("dangling \\f in {line:?}"),
            },
            Some('(') => {
                let name: String = it.by_ref().take(2).collect();
                out.push_str(named(&name, line));
            }
            Some('[') => {
                let name: String = it.by_ref().take_while(|&c| c != ']').collect();
                out.push_str(named(&name, line));
            }
            other => panic!("unknown roff escape \\{other:?} in {line:?}"),
        }
    }
    out
}

/// The lines of the recipe `.SS TITLE` of pm(7)'s RECIPES: its one `.nf` ... `.fi` block,
/// un-escaped.
fn recipe(title: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../man/pm.7");
    let page = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = page
        .lines()
        .skip_while(|l| l.trim() != ".SH RECIPES")
        .skip(1)
        .take_while(|l| !l.starts_with(".SH"))
        .collect();
    assert!(!lines.is_empty(), "{} has no RECIPES", path.display());
    let start = lines
        .iter()
        .position(|l| {
            l.strip_prefix(".SS ")
                .is_some_and(|t| unroff(t.trim().trim_matches('"')) == title)
        })
        .unwrap_or_else(|| panic!("pm(7) RECIPES has no .SS {title:?}"));
    let section: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with(".SS"))
        .copied()
        .collect();
    let mut blocks: Vec<Vec<String>> = Vec::new();
    let mut inside = false;
    for l in section {
        match l.trim_end() {
            ".nf" => {
                inside = true;
                blocks.push(Vec::new());
            }
            ".fi" => inside = false,
            l if inside => {
                assert!(
                    !l.starts_with('.') && !l.starts_with('\''),
                    "a roff request inside the recipe {title:?}: {l:?}"
                );
                blocks.last_mut().unwrap().push(unroff(l));
            }
            _ => {}
        }
    }
    assert!(!inside, "the recipe {title:?} has no .fi");
    assert_eq!(blocks.len(), 1, "recipe {title:?}: one .nf block expected");
    blocks.pop().unwrap()
}

// ---------------------------------------------------------------------------------------
// Running them

/// PATH for a recipe: the pm binaries under test first.
fn path_with(dirs: &[&Path]) -> String {
    let mut v: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    v.push(bin_dir());
    v.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(v)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A recipe line run by `/bin/sh -c` from a user's shell: the sandbox's environment, the pm
/// binaries on PATH.
fn sh(sb: &Sandbox, line: &str) -> Output {
    sb.std_cmd("/bin/sh")
        .args(["-c", line])
        .env("PATH", path_with(&[]))
        .output()
        .unwrap()
}

/// The init-style script run as init runs it: `env -i`, nothing but a PATH and the state
/// directory (and `PM_CGROUP` when the suite runs with it), cwd `/`.
fn init(sb: &Sandbox, script: &Path, action: &str) -> Output {
    let mut c = std::process::Command::new("env");
    c.arg("-i")
        .arg(format!(
            "PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bin_dir().display()
        ))
        .arg(format!("PM_STATE_DIR={}", sb.state.display()));
    if let Some(v) = std::env::var_os("PM_CGROUP") {
        c.arg(format!("PM_CGROUP={}", v.to_string_lossy()));
    }
    c.args(["/bin/sh", s(script), action])
        .current_dir("/")
        .output()
        .unwrap()
}

/// The init-style recipe as `/etc/init.d/web`: a shebang and the page's lines, with the
/// sandbox's state directory for /run/pm and a `sleep` for the service's command.
fn init_script(sb: &Sandbox) -> PathBuf {
    let webd = script(sb, "webd", "#!/bin/sh\nexec sleep 100\n");
    let lines = recipe("init-style script").join("\n");
    assert!(
        lines.contains("/run/pm") && lines.contains("/usr/local/bin/webd"),
        "{lines}"
    );
    let body = lines
        .replace("/run/pm", s(&sb.state))
        .replace("/usr/local/bin/webd", s(&webd));
    script(sb, "web.init", &format!("#!/bin/sh\n{body}\n"))
}

#[track_caller]
fn running(sb: &Sandbox, name: &str) -> i32 {
    assert_eq!(
        sb.state_of(name),
        "running",
        "{name}: {}",
        describe(&sb.status(&[]))
    );
    let pid = sb.pid(name).unwrap();
    assert!(is_alive(pid), "{name}'s pid {pid} is not alive");
    pid
}

#[track_caller]
fn stopped(sb: &Sandbox, name: &str, old: i32) {
    assert_eq!(sb.state_of(name), "stopped");
    assert_gone(old);
}

// ---------------------------------------------------------------------------------------
// Makefile

/// Stand-ins for PostgreSQL, put first on PATH: `postgres ... -p PORT` listens on PORT
/// (a moment late, so `--ready` has to wait) and `pg_isready -h H -p P` says whether H:P
/// accepts a connection.
fn fake_postgres(sb: &Sandbox) -> PathBuf {
    let bin = sb.path("fakebin");
    fs::create_dir(&bin).unwrap();
    script(
        sb,
        "fakebin/postgres",
        "#!/usr/bin/env python3\n\
         import socket, sys, time\n\
         a = sys.argv[1:]\n\
         port = int(a[a.index('-p') + 1])\n\
         time.sleep(0.2)\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', port))\n\
         s.listen()\n\
         while True:\n    s.accept()[0].close()\n",
    );
    script(
        sb,
        "fakebin/pg_isready",
        "#!/bin/bash\n\
         while getopts h:p:qU:d: o; do case $o in h) host=$OPTARG;; p) port=$OPTARG;; esac; done\n\
         (: >\"/dev/tcp/$host/$port\") 2>/dev/null\n",
    );
    bin
}

fn make(sb: &Sandbox, fakebin: &Path, target: &str) -> Output {
    sb.std_cmd("make")
        .arg(target)
        // Not the jobserver of a `make test` this suite may run under.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .env("PATH", path_with(&[fakebin]))
        .output()
        .unwrap()
}

#[test]
fn the_makefile_recipe_brings_the_stack_up_reports_it_and_brings_it_down() {
    if !python_ok() || !require("make", "make") {
        return;
    }
    let sb = Sandbox::new();
    let fakebin = fake_postgres(&sb);
    let text = recipe("Makefile").join("\n") + "\n";
    assert!(
        text.contains("5432") && text.contains("8000"),
        "the Makefile recipe changed its ports:\n{text}"
    );
    let (db_port, web_port) = (free_port(), free_port());
    let text = text
        .replace("5432", &db_port.to_string())
        .replace("8000", &web_port.to_string());
    fs::write(sb.path("Makefile"), &text).unwrap();

    // up: both started and ready (so listening) when make returns.
    let out = make(&sb, &fakebin, "up");
    assert_code(&out, 0);
    let db = running(&sb, "db");
    let web = running(&sb, "web");
    for port in [db_port, web_port] {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port} after make up: {e}"));
    }
    let argv = cmdline(db);
    assert!(
        argv.ends_with(&[
            "-D".to_string(),
            "data".into(),
            "-k".into(),
            "/tmp".into(),
            "-p".into(),
            db_port.to_string(),
        ]),
        "{argv:?}"
    );
    assert!(cmdline(web).contains(&"http.server".to_string()));
    // `-D data` is relative: the service runs where make ran.
    assert_eq!(
        fs::read_link(format!("/proc/{db}/cwd")).unwrap(),
        sb.dir.path().canonicalize().unwrap()
    );

    // status: 0 while everything runs.
    let out = make(&sb, &fakebin, "status");
    assert_code(&out, 0);
    let table = stdout(&out);
    assert!(table.contains("db") && table.contains("web"), "{table}");

    // up again: nothing restarted, no error.
    let out = make(&sb, &fakebin, "up");
    assert_code(&out, 0);
    assert_eq!((sb.pid("db"), sb.pid("web")), (Some(db), Some(web)));

    // down: both stopped, nothing of this sandbox left.
    let out = make(&sb, &fakebin, "down");
    assert_code(&out, 0);
    stopped(&sb, "db", db);
    stopped(&sb, "web", web);
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());

    // status: pm-status's exit 3 (stopped) fails the target.
    let out = make(&sb, &fakebin, "status");
    assert_code(&out, 2);
    assert!(stderr(&out).contains("Error 3"), "{}", describe(&out));
    assert!(stdout(&out).contains("stopped"), "{}", describe(&out));
}

// ---------------------------------------------------------------------------------------
// init-style script

#[test]
fn the_init_style_script_starts_stops_restarts_and_reports_with_lsb_codes() {
    let sb = Sandbox::new();
    let script = init_script(&sb);
    // The service was started once with its command, and stopped.
    let first = sb.start_sh("web", &[], "exec sleep 100");
    assert_success(&sb.stop(&["web"]), "pm-stop");
    assert_gone(first);

    // status of a stopped service: 3.
    assert_code(&init(&sb, &script, "status"), 3);
    // start: 0, running; start again: 0, the same process.
    let out = init(&sb, &script, "start");
    assert_code(&out, 0);
    let a = running(&sb, "web");
    assert_code(&init(&sb, &script, "start"), 0);
    assert_eq!(sb.pid("web"), Some(a));
    // status of a running service: 0.
    assert_code(&init(&sb, &script, "status"), 0);
    // restart: 0, a new process, the old one gone.
    assert_code(&init(&sb, &script, "restart"), 0);
    let b = running(&sb, "web");
    assert_ne!(a, b);
    assert_gone(a);
    // stop: 0, gone; stop again: 0.
    assert_code(&init(&sb, &script, "stop"), 0);
    stopped(&sb, "web", b);
    assert_code(&init(&sb, &script, "stop"), 0);
    assert_code(&init(&sb, &script, "status"), 3);
    // restart of a stopped service starts it.
    assert_code(&init(&sb, &script, "restart"), 0);
    let c = running(&sb, "web");
    // The service died: status 1 (dead), start brings it back.
    sigkill(c);
    wait_until("web is dead", || sb.state_of("web") == "dead");
    assert_code(&init(&sb, &script, "status"), 1);
    assert_code(&init(&sb, &script, "start"), 0);
    let d = running(&sb, "web");
    assert_code(&init(&sb, &script, "stop"), 0);
    stopped(&sb, "web", d);
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
}

#[test]
fn the_init_style_script_starts_the_service_at_boot() {
    let sb = Sandbox::new();
    let script = init_script(&sb);
    // Boot: an empty state directory.
    let out = init(&sb, &script, "start");
    assert_code(&out, 0);
    let pid = running(&sb, "web");
    assert_code(&init(&sb, &script, "stop"), 0);
    stopped(&sb, "web", pid);
}

// ---------------------------------------------------------------------------------------
// start everything that is not running; restart everything

#[test]
fn the_start_everything_and_restart_everything_lines_do_so() {
    if !require("jq", "jq") {
        return;
    }
    let lines = recipe("start everything that is not running; restart everything");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let sb = Sandbox::new();
    let a = sb.start_sh("a", &[], "exec sleep 100");
    let b = sb.start_sh("b", &[], "exec sleep 100");
    let c = sb.start_sh("c", &[], "exec sleep 100");
    assert_success(&sb.stop(&["b"]), "pm-stop b");
    sigkill(c);
    wait_until("c is dead", || sb.state_of("c") == "dead");

    // Start everything that is not running: b (stopped) and c (dead); a left alone.
    let out = sh(&sb, &lines[0]);
    assert_code(&out, 0);
    assert_eq!(running(&sb, "a"), a, "a was restarted: {}", describe(&out));
    let b2 = running(&sb, "b");
    let c2 = running(&sb, "c");
    assert!(b2 != b && c2 != c);

    // Nothing to start: a no-op (xargs -r).
    let out = sh(&sb, &lines[0]);
    assert_code(&out, 0);
    assert_eq!(
        [sb.pid("a"), sb.pid("b"), sb.pid("c")],
        [Some(a), Some(b2), Some(c2)]
    );

    // Restart everything: each one a new process, every old one gone.
    let out = sh(&sb, &lines[1]);
    assert_code(&out, 0);
    for (name, old) in [("a", a), ("b", b2), ("c", c2)] {
        let new = running(&sb, name);
        assert_ne!(new, old, "{name} was not restarted: {}", describe(&out));
        assert_gone(old);
    }
    assert_eq!(sb.processes().len(), 3, "{:?}", sb.processes());
    assert_success(&sb.stopall(&[]), "pm-stopall");
}

// ---------------------------------------------------------------------------------------
// follow logs

#[test]
fn the_follow_logs_lines_follow_one_log_and_print_every_tail() {
    let lines = recipe("follow logs");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let sb = Sandbox::new();
    sb.start_sh(
        "web",
        &[],
        "echo first; while [ ! -e go ]; do sleep 0.02; done; echo second; exec sleep 100",
    );
    sb.start_sh(
        "db",
        &[],
        "i=1; while [ $i -le 60 ]; do echo db$i; i=$((i+1)); done; exec sleep 100",
    );

    // `pm-status --log web` names the log the service writes.
    let out = sb.status(&["--log", "web"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        format!("{}\n", sb.state.join("web.log").display())
    );

    // One service: tail -F shows what it wrote and what it writes next.
    let mut cmd = sb.std_cmd("/bin/sh");
    cmd.args(["-c", &lines[0]]).env("PATH", path_with(&[]));
    let follow = sb.spawn_cmd("follow", cmd);
    let seen = || fs::read_to_string(sb.path("follow.stdout")).unwrap_or_default();
    wait_until("tail -F shows `first`", || seen().contains("first\n"));
    assert!(!seen().contains("second"));
    fs::write(sb.path("go"), "").unwrap();
    wait_until("tail -F shows `second`", || seen().contains("second\n"));
    drop(follow);

    // Every service: the last 50 lines of each log, each under its path.
    wait_until("db wrote 60 lines", || sb.log("db").lines().count() == 60);
    let out = sh(&sb, &lines[1]);
    assert_code(&out, 0);
    let text = stdout(&out);
    for name in ["web", "db"] {
        let header = format!("==> {} <==", sb.state.join(format!("{name}.log")).display());
        assert!(text.contains(&header), "no {header:?} in:\n{text}");
    }
    let db: Vec<&str> = text.lines().filter(|l| l.starts_with("db")).collect();
    let want: Vec<String> = (11..=60).map(|i| format!("db{i}")).collect();
    assert_eq!(db, want, "{text}");
    assert!(text.contains("first\nsecond\n"), "{text}");
    assert_success(&sb.stopall(&[]), "pm-stopall");
}
