//! pm-signal (issue 13): a signal for a running service, through the identity gate and a
//! pidfd, to its main process or with `--group` to every process of it; never to a process
//! that is not the service's, and nothing for a service that is stopped, dead or unknown.
//! And pm-stop's warning when its signal is one that usually does not stop a service.
//!
//! The services are shell scripts ([`Traps`]) that append one line per signal they catch,
//! with their own PID, to a file: what a process logged is the kernel's word that it got
//! the signal. "Nothing was sent" is proved without sleeping: the test itself then sends
//! SIGWINCH and waits for that to be logged. Any signal pm-signal sent is pending before
//! pm-signal exits, the kernel delivers pending signals lowest number first and the shell
//! runs its pending traps in signal-number order (dash and bash both do), so HUP, USR1 and
//! USR2 (all below WINCH) would have been logged first.
//!
//! `make test` runs this twice, the second time with `PM_CGROUP=off`: each test checks
//! what `pm-status --json` says the tracking is and expects what that tracking promises.
//!
//! The real nginx test needs its own clean-up ([`Seen`]): nginx rewrites its process title
//! over its environment, where the Sandbox looks for `PM_STATE_DIR`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pm_tests::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// `trapper.sh TAG DIR [leader]`: logs `TAG SIG PID` to `DIR/got` for every HUP, USR1,
/// USR2 and WINCH it catches; as `leader` it first starts two workers of itself, `w1` in
/// its process group and `w2` in a session (and group) of its own; then writes its PID to
/// `DIR/TAG.pid` (traps already set) and waits, interruptibly, forever.
const TRAPPER: &str = r#"#!/bin/sh
tag=$1
dir=$2
for sig in HUP USR1 USR2 WINCH; do
    trap "echo \"$tag $sig \$\$\" >> \"$dir/got\"" "$sig"
done
if [ "$3" = leader ]; then
    "$0" w1 "$dir" &
    setsid "$0" w2 "$dir" &
fi
echo $$ > "$dir/$tag.tmp" && mv "$dir/$tag.tmp" "$dir/$tag.pid"
while :; do sleep 1 & wait $!; done
"#;

/// A directory of [`TRAPPER`] processes and the file they log to.
struct Traps {
    script: PathBuf,
    dir: PathBuf,
}

impl Traps {
    fn new(sb: &Sandbox, name: &str) -> Traps {
        let dir = sb.path(name);
        fs::create_dir(&dir).unwrap();
        let script = script(sb, &format!("{name}.sh"), TRAPPER);
        Traps { script, dir }
    }

    /// The command line of one trapper (`leader` also starts `w1` and `w2`).
    fn argv(&self, tag: &str, leader: bool) -> Vec<String> {
        let mut v = vec![s(&self.script).to_string(), tag.into(), s(&self.dir).into()];
        if leader {
            v.push("leader".into());
        }
        v
    }

    /// `pm-start NAME -- trapper TAG DIR [leader]`, asserting success; the PID of `tag`
    /// once its traps are set, which must be the record's.
    fn start(&self, sb: &Sandbox, name: &str, tag: &str, leader: bool) -> i32 {
        let mut args = vec!["--".to_string()];
        args.extend(self.argv(tag, leader));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sb.start(name, &args);
        assert_success(&out, &format!("pm-start {name}"));
        let pid = self.pid(tag);
        assert_eq!(
            sb.pid(name),
            Some(pid),
            "the record names the trapper {tag}"
        );
        pid
    }

    /// An unrelated trapper the test owns, in a process group of its own (so nothing
    /// that signals the service's group, or the test's, can reach it by accident).
    fn own(&self, sb: &Sandbox, tag: &str) -> Owned {
        let argv = self.argv(tag, false);
        let child = sb
            .std_cmd(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn the unrelated trapper");
        let o = Owned(child);
        assert_eq!(self.pid(tag), o.pid());
        o
    }

    /// The PID `tag` wrote once its traps were set.
    #[track_caller]
    fn pid(&self, tag: &str) -> i32 {
        let f = self.dir.join(format!("{tag}.pid"));
        wait_until(&format!("{tag} has set its traps"), || f.exists());
        fs::read_to_string(&f).unwrap().trim().parse().unwrap()
    }

    /// `(tag, signal, pid)` of every line logged so far.
    fn lines(&self) -> Vec<(String, String, i32)> {
        fs::read_to_string(self.dir.join("got"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 3, "bad line {l:?}");
                (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap())
            })
            .collect()
    }

    /// The signals `tag` caught, in order, other than the test's own SIGWINCH.
    fn caught(&self, tag: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|(t, sig, _)| t == tag && sig != "WINCH")
            .map(|(_, sig, _)| sig)
            .collect()
    }

    /// Sends each `(tag, pid)` SIGWINCH and waits until each has logged it: whatever pm
    /// sent them before has been logged by then (see the module's comment).
    #[track_caller]
    fn settle(&self, procs: &[(&str, i32)]) {
        for &(tag, pid) in procs {
            let winches = || {
                self.lines()
                    .iter()
                    .filter(|(t, sig, p)| t == tag && sig == "WINCH" && *p == pid)
                    .count()
            };
            let before = winches();
            kill(Pid::from_raw(pid), Signal::SIGWINCH).expect("SIGWINCH");
            wait_until(&format!("{tag} ({pid}) logged SIGWINCH"), || {
                winches() == before + 1
            });
        }
    }
}

/// `pm-signal ARGS...`, whatever the exit code.
fn signal(sb: &Sandbox, args: &[&str]) -> Output {
    sb.cmd("pm-signal")
        .args(args)
        .output()
        .expect("run pm-signal")
}

/// pm-signal's line for NAME (after `pm-signal: NAME: `).
#[track_caller]
fn line_for(out: &Output, name: &str) -> String {
    let prefix = format!("pm-signal: {name}: ");
    let found: Vec<String> = stderr_lines(out)
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect();
    assert_eq!(found.len(), 1, "one line for {name}: {}", describe(out));
    found[0].clone()
}

/// The PIDs pm-signal says it sent SIG`sig` to for NAME.
#[track_caller]
fn sent_to(out: &Output, name: &str, sig: &str) -> Vec<i32> {
    let line = line_for(out, name);
    let head = format!("SIG{sig} sent to ");
    let rest = line
        .strip_prefix(&head)
        .unwrap_or_else(|| panic!("{name}: expected {head:?}...: {}", describe(out)));
    let list = match rest.strip_prefix("pid ") {
        Some(one) => one,
        None => rest.split_once(": ").expect("N processes: PIDS").1,
    };
    list.split(' ').map(|p| p.parse().unwrap()).collect()
}

/// "cgroup" or "group", as `pm-status --json` reports the start's tracking.
fn tracking(sb: &Sandbox, name: &str) -> String {
    let v = sb.status_json(&[name]);
    v[0]["tracking"]
        .as_str()
        .unwrap_or_else(|| panic!("no tracking in {v:?}"))
        .to_string()
}

/// Waits (polling) until `f` holds, failing after `limit`.
#[track_caller]
fn wait_within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// 1. The main process gets the signal and keeps running

#[test]
fn hup_reaches_the_running_service_once_and_it_keeps_running() {
    let sb = Sandbox::new();
    let t = Traps::new(&sb, "hup");
    let pid = t.start(&sb, "svc", "svc", false);
    let born = stat(pid).start_time;

    let out = signal(&sb, &["-s", "HUP", "svc"]);
    assert_code(&out, 0);
    assert_eq!(
        stderr_lines(&out),
        vec![format!("pm-signal: svc: SIGHUP sent to pid {pid}")],
        "{}",
        describe(&out)
    );
    t.settle(&[("svc", pid)]);
    assert_eq!(t.caught("svc"), ["HUP"], "{:?}", t.lines());
    assert!(t.lines().iter().all(|l| l.2 == pid), "{:?}", t.lines());
    assert_eq!(
        stat(pid).start_time,
        born,
        "the same process, still running"
    );
    assert!(is_alive(pid));
    let v = sb.status_json(&["svc"]);
    assert_eq!(v[0]["state"], "running", "{v:?}");
    assert_eq!(v[0]["pid"].as_i64(), Some(pid as i64), "{v:?}");

    // No -s: HUP is the default.
    let out = signal(&sb, &["svc"]);
    assert_code(&out, 0);
    assert_eq!(sent_to(&out, "svc", "HUP"), vec![pid]);
    t.settle(&[("svc", pid)]);
    assert_eq!(t.caught("svc"), ["HUP", "HUP"], "{:?}", t.lines());
    assert_eq!(stat(pid).start_time, born);
    assert_eq!(sb.pid("svc"), Some(pid));
    assert_eq!(sb.state_of("svc"), "running");
}

// ---------------------------------------------------------------------------------------
// 2. --group: the whole service, as its tracking defines it; nobody else

#[test]
fn group_reaches_every_process_of_the_service_and_nothing_else() {
    let sb = Sandbox::new();
    let t = Traps::new(&sb, "grp");
    let leader = t.start(&sb, "svc", "leader", true);
    let w1 = t.pid("w1");
    let w2 = t.pid("w2");
    let (s1, s2) = (stat(w1), stat(w2));
    assert_eq!(s1.pgrp, leader, "w1 is in the leader's group");
    assert_eq!((s2.pgrp, s2.session), (w2, w2), "w2 left with setsid");
    let tracking = tracking(&sb, "svc");
    if tracking == "cgroup" {
        let cg = procfs::cgroup_of(leader).unwrap();
        assert_eq!(
            procfs::cgroup_of(w2).as_ref(),
            Some(&cg),
            "w2 is in the cgroup"
        );
    } else {
        assert_eq!(tracking, "group");
    }
    let other = t.own(&sb, "other");
    let op = other.pid();
    let all = [("leader", leader), ("w1", w1), ("w2", w2), ("other", op)];

    // Without --group: the leader only.
    let out = signal(&sb, &["-s", "USR1", "svc"]);
    assert_code(&out, 0);
    assert_eq!(sent_to(&out, "svc", "USR1"), vec![leader]);
    t.settle(&all);
    assert_eq!(t.caught("leader"), ["USR1"], "{:?}", t.lines());
    for tag in ["w1", "w2", "other"] {
        assert!(t.caught(tag).is_empty(), "{tag}: {:?}", t.lines());
    }

    // With --group: the leader's group, or with a cgroup everything in it.
    let out = signal(&sb, &["--group", "-s", "USR1", "svc"]);
    assert_code(&out, 0);
    let sent = sent_to(&out, "svc", "USR1");
    assert!(sent.contains(&leader) && sent.contains(&w1), "{sent:?}");
    assert_eq!(
        sent.contains(&w2),
        tracking == "cgroup",
        "{tracking}: {sent:?}"
    );
    assert!(!sent.contains(&op), "{sent:?}");
    t.settle(&all);
    assert_eq!(t.caught("leader"), ["USR1", "USR1"], "{:?}", t.lines());
    assert_eq!(t.caught("w1"), ["USR1"], "{:?}", t.lines());
    let want_w2: &[&str] = if tracking == "cgroup" { &["USR1"] } else { &[] };
    assert_eq!(t.caught("w2"), want_w2, "{tracking}: {:?}", t.lines());
    assert!(t.caught("other").is_empty(), "{:?}", t.lines());
    // Each line came from the process it names.
    for (tag, _, p) in t.lines() {
        let want = all.iter().find(|a| a.0 == tag).unwrap().1;
        assert_eq!(p, want, "{tag}");
    }
    for (tag, p) in all {
        assert!(is_alive(p), "{tag} ({p}) is still running");
    }
    assert_eq!(sb.pid("svc"), Some(leader));

    assert_success(&sb.stop(&["svc"]), "pm-stop svc");
    assert!(is_alive(op), "pm-stop spared the unrelated process");
}

// ---------------------------------------------------------------------------------------
// 3. Never a reused PID; nothing for dead, stopped or unknown services; usage errors

#[test]
fn a_reused_pid_in_the_record_is_never_signalled() {
    let sb = Sandbox::new();
    let t = Traps::new(&sb, "reuse");
    let leader = t.start(&sb, "svc", "svc", false);
    let tracking = tracking(&sb, "svc");
    let born = stat(leader).start_time;
    sigkill(leader);
    // The unrelated process is born in a later clock tick, as one that reuses the PID.
    wait_until("a clock tick has passed since the leader started", || {
        ticks_since_boot() > born
    });
    let other = t.own(&sb, "other");
    let op = other.pid();
    assert!(stat(op).start_time > born);
    edit_record(&sb, "svc", |r| r["pid"] = op.into());
    assert_eq!(sb.state_of("svc"), "dead");

    for args in [&["svc"][..], &["--group", "-s", "USR1", "svc"]] {
        let out = signal(&sb, args);
        assert_code(&out, 1);
        let line = line_for(&out, "svc");
        assert!(line.starts_with("not running (dead): "), "{line}");
        assert!(line.ends_with(" not sent"), "{line}");
    }
    if tracking == "cgroup" {
        // Even with its start time forged too, a process outside the cgroup is not it.
        // (Without a cgroup a record naming a process by PID and start time is that
        // process: the record is root's, in a 0700 directory.)
        edit_record(&sb, "svc", |r| r["start_time"] = stat(op).start_time.into());
        for args in [&["svc"][..], &["--group", "-s", "USR1", "svc"]] {
            let out = signal(&sb, args);
            assert_code(&out, 1);
            assert!(
                line_for(&out, "svc").contains("not running"),
                "{}",
                describe(&out)
            );
        }
    }
    t.settle(&[("other", op)]);
    assert!(t.caught("other").is_empty(), "{:?}", t.lines());
    assert!(is_alive(op));
}

#[test]
fn dead_stopped_and_unknown_services_get_nothing() {
    let sb = Sandbox::new();

    // Dead: the leader SIGKILLed, its workers left.
    let d = Traps::new(&sb, "dead");
    let leader = d.start(&sb, "dead", "leader", true);
    let (w1, w2) = (d.pid("w1"), d.pid("w2"));
    sigkill(leader);
    assert_eq!(sb.state_of("dead"), "dead");
    for args in [&["dead"][..], &["--group", "-s", "USR1", "dead"]] {
        let out = signal(&sb, args);
        assert_code(&out, 1);
        let line = line_for(&out, "dead");
        assert!(line.starts_with("not running (dead): "), "{line}");
    }
    d.settle(&[("w1", w1), ("w2", w2)]);
    assert!(d.caught("w1").is_empty(), "{:?}", d.lines());
    assert!(d.caught("w2").is_empty(), "{:?}", d.lines());

    // Stopped.
    let st = Traps::new(&sb, "stopped");
    let pid = st.start(&sb, "stopped", "svc", false);
    assert_success(&sb.stop(&["stopped"]), "pm-stop stopped");
    assert_gone(pid);
    let out = signal(&sb, &["stopped"]);
    assert_code(&out, 1);
    assert_eq!(
        line_for(&out, "stopped"),
        "not running (stopped): SIGHUP not sent"
    );

    // Unknown: exit 4, and the other NAMEs are still handled, in either order.
    let u = Traps::new(&sb, "up");
    let up = u.start(&sb, "up", "svc", false);
    for (i, args) in [["nosuch", "up"], ["up", "nosuch"]].iter().enumerate() {
        let out = signal(&sb, args);
        assert_code(&out, 4);
        assert_eq!(
            line_for(&out, "nosuch"),
            "unknown: no record and no PID file"
        );
        assert_eq!(sent_to(&out, "up", "HUP"), vec![up]);
        u.settle(&[("svc", up)]);
        assert_eq!(u.caught("svc").len(), i + 1, "{:?}", u.lines());
    }
    // A NAME not running outranks an unknown one; the running one still gets its HUP.
    let out = signal(&sb, &["stopped", "nosuch", "up"]);
    assert_code(&out, 1);
    assert_eq!(sent_to(&out, "up", "HUP"), vec![up]);
    u.settle(&[("svc", up)]);
    assert_eq!(u.caught("svc"), ["HUP"; 3], "{:?}", u.lines());

    // Usage errors: exit 2, clap's message, nothing sent.
    for bad in ["BOGUS", "0", "65", "SIGFOO"] {
        let out = signal(&sb, &["-s", bad, "up"]);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("invalid value '{bad}' for '--signal <SIG>'"))
                && err.contains("--help"),
            "{err}"
        );
    }
    let out = signal(&sb, &[]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("Usage: pm-signal"),
        "{}",
        describe(&out)
    );
    let out = signal(&sb, &["--no-such-option", "up"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("Usage: pm-signal"),
        "{}",
        describe(&out)
    );
    u.settle(&[("svc", up)]);
    assert_eq!(u.caught("svc"), ["HUP"; 3], "{:?}", u.lines());
    assert!(is_alive(up));
}

// ---------------------------------------------------------------------------------------
// 4. Real nginx reloads its configuration: same master, new workers

/// The body of `GET /` over HTTP/1.0 when the status is 200; `None` on any failure.
fn get(port: u16) -> Option<String> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(c, "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut r = String::new();
    c.read_to_string(&mut r).ok()?;
    let (head, body) = r.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Live children of the nginx master whose title says they are workers, sorted.
fn workers(master: i32) -> Vec<i32> {
    let mut v: Vec<i32> = procfs::scan()
        .into_iter()
        .filter(|s| s.ppid == master && is_alive(s.pid))
        .filter(|s| cmdline(s.pid).join(" ").contains("worker process"))
        .map(|s| s.pid)
        .collect();
    v.sort_unstable();
    v
}

/// The nginx config: every path under `p`, the site's root `p/ROOT`.
fn nginx_conf(p: &Path, port: u16, root: &str) -> String {
    let p = s(p);
    format!(
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
           server {{ listen 127.0.0.1:{port}; root {p}/{root}; }}\n\
         }}\n"
    )
}

#[test]
fn nginx_reloaded_by_hup_serves_the_new_config_with_the_same_master() {
    let Some(bin) = daemon_program("nginx", "nginx") else {
        return;
    };
    let sb = Sandbox::new();
    let seen = Seen::default();
    // Workers run as nobody when the master is root: they must reach the pages.
    fs::set_permissions(sb.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let prefix = sb.path("nginx");
    for (dir, page) in [("a", "content A\n"), ("b", "content B\n")] {
        fs::create_dir_all(prefix.join(dir)).unwrap();
        fs::write(prefix.join(dir).join("index.html"), page).unwrap();
    }
    fs::create_dir_all(prefix.join("tmp")).unwrap();
    for d in ["", "a", "b"] {
        fs::set_permissions(prefix.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let port = free_port();
    let conf = prefix.join("nginx.conf");
    fs::write(&conf, nginx_conf(&prefix, port, "a")).unwrap();
    let pidfile = prefix.join("nginx.pid");
    let ready = format!("tcp:{port}");
    let err = prefix.join("error.log");
    let out = sb.start(
        "nginx",
        &[
            "--pidfile",
            s(&pidfile),
            "--stop-signal",
            "QUIT",
            "--ready",
            &ready,
            "--",
            s(&bin),
            "-p",
            s(&prefix),
            "-c",
            s(&conf),
            "-e",
            s(&err),
        ],
    );
    assert_success(&out, "pm-start nginx");
    let master = sb.pid("nginx").expect("record has a pid");
    seen.add(&[master]);
    let born = stat(master).start_time;
    wait_within(Duration::from_secs(10), "nginx has 2 workers", || {
        workers(master).len() == 2
    });
    let old = workers(master);
    seen.add(&old);
    assert_eq!(get(port).as_deref(), Some("content A\n"));

    // The new configuration: another root. (Changing the page alone would be served
    // without any reload.)
    let tmp = prefix.join("nginx.conf.new");
    fs::write(&tmp, nginx_conf(&prefix, port, "b")).unwrap();
    fs::rename(&tmp, &conf).unwrap();
    assert_eq!(
        get(port).as_deref(),
        Some("content A\n"),
        "not reloaded yet"
    );

    let out = signal(&sb, &["-s", "HUP", "nginx"]);
    assert_code(&out, 0);
    assert_eq!(sent_to(&out, "nginx", "HUP"), vec![master]);
    wait_within(Duration::from_secs(10), "nginx serves content B", || {
        get(port).as_deref() == Some("content B\n")
    });
    wait_within(
        Duration::from_secs(10),
        "the old workers are replaced by 2 new ones",
        || {
            let now = workers(master);
            seen.add(&now);
            now.len() == 2
                && now.iter().all(|w| !old.contains(w))
                && old.iter().all(|w| !is_alive(*w))
        },
    );
    let new = workers(master);
    assert_eq!(stat(master).start_time, born, "the same master process");
    let v = sb.status_json(&["nginx"]);
    assert_eq!(v[0]["state"], "running", "{v:?}");
    assert_eq!(v[0]["pid"].as_i64(), Some(master as i64), "{v:?}");
    assert_eq!(get(port).as_deref(), Some("content B\n"));

    let out = sb.stop(&["nginx"]);
    assert_success(&out, "pm-stop nginx");
    assert!(
        stderr(&out).contains("stopped by SIGQUIT"),
        "{}",
        describe(&out)
    );
    for p in [master].iter().chain(&old).chain(&new) {
        assert_gone(*p);
    }
    assert_eq!(sb.state_of("nginx"), "stopped");
    assert!(get(port).is_none(), "nothing serves the port any more");
}

// ---------------------------------------------------------------------------------------
// 5. pm-stop warns when its signal usually does not stop a service

#[test]
fn pm_stop_warns_about_reload_signals_and_points_to_pm_signal() {
    let sb = Sandbox::new();
    let warning = |sig: &str| {
        format!(
            "pm-stop: warning: SIG{sig} usually does not stop a service, so pm-stop will \
             SIGKILL it after the timeout; to send it without stopping: pm-signal -s {sig} NAME"
        )
    };

    // sleep dies of HUP and USR1: pm-stop warns and still stops it with that signal.
    for sig in ["HUP", "USR1"] {
        let out = sb.start("svc", &["--", "sleep", "1000"]);
        assert_success(&out, "pm-start svc");
        let pid = sb.pid("svc").unwrap();
        let out = sb.stop(&["--signal", sig, "svc"]);
        assert_code(&out, 0);
        let lines = stderr_lines(&out);
        assert_eq!(lines[0], warning(sig), "{}", describe(&out));
        assert_eq!(lines.len(), 2, "{}", describe(&out));
        assert!(
            lines[1].starts_with(&format!("pm-stop: svc: stopped by SIG{sig} ")),
            "{}",
            describe(&out)
        );
        assert_gone(pid);
        assert_eq!(sb.state_of("svc"), "stopped");
    }

    // sleep ignores WINCH: the warning says what then happens.
    let out = sb.start("svc", &["--", "sleep", "1000"]);
    assert_success(&out, "pm-start svc");
    let pid = sb.pid("svc").unwrap();
    let out = sb.stop(&["--signal", "WINCH", "--timeout", "100ms", "svc"]);
    assert_code(&out, 0);
    assert_eq!(
        stderr_lines(&out)[0],
        warning("WINCH"),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("SIGKILL"), "{}", describe(&out));
    assert_gone(pid);

    // No warning for the recorded signal or for TERM.
    for args in [&["svc"][..], &["--signal", "TERM", "svc"]] {
        let out = sb.start("svc", &["--", "sleep", "1000"]);
        assert_success(&out, "pm-start svc");
        let pid = sb.pid("svc").unwrap();
        let out = sb.stop(args);
        assert_code(&out, 0);
        let err = stderr(&out);
        assert!(
            !err.contains("warning") && !err.contains("pm-signal"),
            "{err}"
        );
        assert_eq!(stderr_lines(&out).len(), 1, "{err}");
        assert_gone(pid);
    }
}
