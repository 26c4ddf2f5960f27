//! Real daemons from Debian's packages, started, inspected and stopped by the pm tools:
//! nginx (foreground and self-daemonizing), php-fpm, redis-server, PostgreSQL, MariaDB,
//! all five together, a service whose child leaves the session, and `--user`.
//!
//! Every daemon runs on a free 127.0.0.1 port with a config written here, every path it
//! uses (PID file, logs, temp dirs, sockets, data) inside its test's sandbox. `.ci/install-deps`
//! installs the packages; on a developer machine without them a test skips loudly, in CI
//! (`CI=true`) a missing daemon is a failure.
//!
//! nginx, php-fpm and PostgreSQL rewrite their process titles over their environment, so
//! the Sandbox's clean-up (which finds processes by `PM_STATE_DIR` in their environment)
//! cannot see them: each test also holds a [`Guard`] that, on drop, runs `pm-stopall` and
//! then kills whatever it saw the test start (by PID and start time, never by name).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pm_tests::*;

// ---------------------------------------------------------------------------------------
// Harness: a sandbox that also remembers and cleans up what its daemons became.

struct Guard {
    sb: Sandbox,
    /// (pid, start time) of every process seen belonging to a service of this test.
    seen: RefCell<Vec<(i32, u64)>>,
}

impl Deref for Guard {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

impl Guard {
    fn new() -> Guard {
        Guard {
            sb: Sandbox::new(),
            seen: RefCell::new(Vec::new()),
        }
    }

    /// A sandbox others can traverse (daemon workers running as another user read from it).
    fn open() -> Guard {
        let g = Guard::new();
        fs::set_permissions(g.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        g
    }

    /// Remembers `pid`, its descendants and its group/session members for the clean-up.
    fn track(&self, pid: i32) {
        let mut pids = vec![pid];
        pids.extend(descendants(pid));
        pids.extend(group_members(pid));
        let mut seen = self.seen.borrow_mut();
        for p in pids {
            if let Some(s) = Stat::read(p) {
                if !seen.contains(&(p, s.start_time)) {
                    seen.push((p, s.start_time));
                }
            }
        }
    }

    /// Remembers what the record of NAME names (see [`Guard::track`]); returns its PID.
    fn track_name(&self, name: &str) -> i32 {
        let pid = self
            .pid(name)
            .unwrap_or_else(|| panic!("{name} has no pid in its record"));
        self.track(pid);
        pid
    }

    /// `pm-start NAME ARGS...`, asserting success; tracks and returns the service's PID.
    fn up(&self, name: &str, args: &[&str]) -> i32 {
        let out = self.start(name, args);
        assert_success(&out, &format!("pm-start {name}"));
        self.track_name(name)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Graceful first (this is what the tests prove works), then certain.
        let _ = self
            .sb
            .cmd("pm-stopall")
            .args(["--timeout", "5s"])
            .timeout(Duration::from_secs(60))
            .output();
        let seen = self.seen.borrow().clone();
        for _ in 0..100 {
            let mut any = false;
            for &(pid, st) in &seen {
                let ours = matches!(Stat::read(pid), Some(s) if s.start_time == st);
                if ours && is_alive(pid) {
                    any = true;
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The unprivileged user daemons run as when the suite runs as root.
const USER: &str = "pmtest";

/// When root: true if the unprivileged user exists (in CI it must); when not root: false,
/// with a message (the caller runs the daemon as itself or skips).
fn have_test_user() -> bool {
    if !is_root() {
        return false;
    }
    if nix::unistd::User::from_name(USER).ok().flatten().is_some() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("user {USER} is missing in CI: .ci/install-deps must create it");
    }
    skip(&format!(
        "user {USER} does not exist; create it with: useradd --system {USER}"
    ));
    false
}

/// Everything of a service that must be gone after pm-stop: the leader, its group and
/// session, and its descendants, snapshotted while it runs.
fn snapshot(pid: i32) -> Vec<i32> {
    let mut v = vec![pid];
    v.extend(group_members(pid));
    v.extend(descendants(pid));
    v.sort_unstable();
    v.dedup();
    v
}

#[track_caller]
fn assert_all_gone(what: &str, pids: &[i32]) {
    let left: Vec<String> = pids
        .iter()
        .filter(|p| is_alive(**p))
        .map(|p| format!("{p} {:?}", Stat::read(*p).map(|s| s.comm)))
        .collect();
    assert!(left.is_empty(), "{what}: still running: {left:?}");
}

/// Live children of `pid` whose command name starts with `comm`.
fn children_named(pid: i32, comm: &str) -> Vec<i32> {
    procfs::scan()
        .into_iter()
        .filter(|s| s.ppid == pid && s.comm.starts_with(comm) && is_alive(s.pid))
        .map(|s| s.pid)
        .collect()
}

/// `cmdline` of a process, arguments joined by spaces (the process title for daemons
/// that set one); empty when it is gone.
fn title(pid: i32) -> String {
    cmdline(pid).join(" ")
}

/// `GET PATH` over HTTP/1.0; the whole response.
fn http_get(port: u16, path: &str) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).expect("read HTTP response");
    body
}

/// One redis command over RESP; the reply as text (`+OK`, a bulk string's value, `(nil)`).
fn redis(port: u16, args: &[&str]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    c.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let line = line.trim_end().to_string();
    match line.strip_prefix('$') {
        Some("-1") => "(nil)".into(),
        Some(n) => {
            let mut buf = vec![0u8; n.parse::<usize>().unwrap() + 2];
            r.read_exact(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned()
        }
        None => line,
    }
}

// ---------------------------------------------------------------------------------------
// Daemon set-ups: config files and pm-start arguments.

struct Nginx {
    port: u16,
    prefix: PathBuf,
    conf: PathBuf,
    pidfile: PathBuf,
}

impl Nginx {
    /// Writes an nginx site under SANDBOX/nginx: a config (every path inside), a page,
    /// and optionally PHP through FastCGI on `fpm_port`.
    fn setup(g: &Guard, daemon: bool, fpm_port: Option<u16>) -> Nginx {
        let port = free_port();
        let prefix = g.path("nginx");
        let html = prefix.join("html");
        fs::create_dir_all(&html).unwrap();
        fs::create_dir_all(prefix.join("tmp")).unwrap();
        for d in [&prefix, &html] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(html.join("index.html"), "hello from nginx\n").unwrap();
        fs::write(
            html.join("index.php"),
            "<?php echo 'php says ', 6 * 7, \"\\n\";\n",
        )
        .unwrap();
        let p = s(&prefix);
        let php = fpm_port.map_or(String::new(), |fp| {
            format!(
                "location ~ \\.php$ {{ fastcgi_pass 127.0.0.1:{fp}; \
                 fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; \
                 fastcgi_param REQUEST_METHOD $request_method; }}"
            )
        });
        let conf = format!(
            "daemon {};\n\
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
               server {{ listen 127.0.0.1:{port}; root {p}/html; {php} }}\n\
             }}\n",
            if daemon { "on" } else { "off" }
        );
        let conf_path = prefix.join("nginx.conf");
        fs::write(&conf_path, conf).unwrap();
        Nginx {
            port,
            pidfile: prefix.join("nginx.pid"),
            prefix,
            conf: conf_path,
        }
    }

    /// `nginx -p DIR -c CONF -e DIR/error.log`.
    fn argv(&self, nginx: &Path) -> Vec<String> {
        let e = self.prefix.join("error.log");
        [
            nginx,
            Path::new("-p"),
            &self.prefix,
            Path::new("-c"),
            &self.conf,
            Path::new("-e"),
            &e,
        ]
        .iter()
        .map(|p| s(p).to_string())
        .collect()
    }

    /// Workers of the master `pid`, waiting until there are two.
    fn workers(&self, master: i32) -> Vec<i32> {
        wait_until("nginx has 2 workers", || {
            children_named(master, "nginx").len() == 2
        });
        let w = children_named(master, "nginx");
        for p in &w {
            assert!(title(*p).contains("worker process"), "{}", title(*p));
        }
        w
    }
}

struct Fpm {
    port: u16,
    conf: PathBuf,
    pidfile: PathBuf,
}

impl Fpm {
    /// php-fpm config under SANDBOX/php: `pm = static`, 2 children, listening on a free
    /// port; the pool sets `user` only if given.
    fn setup(g: &Guard, user: Option<&str>) -> Fpm {
        let port = free_port();
        let dir = g.path("php");
        fs::create_dir_all(&dir).unwrap();
        let d = s(&dir);
        let user = user.map_or(String::new(), |u| format!("user = {u}\ngroup = {u}\n"));
        let conf = format!(
            "[global]\n\
             pid = {d}/php-fpm.pid\n\
             error_log = {d}/php-fpm.log\n\
             daemonize = no\n\
             [www]\n\
             {user}\
             listen = 127.0.0.1:{port}\n\
             pm = static\n\
             pm.max_children = 2\n"
        );
        let path = dir.join("php-fpm.conf");
        fs::write(&path, conf).unwrap();
        Fpm {
            port,
            conf: path,
            pidfile: dir.join("php-fpm.pid"),
        }
    }

    fn argv(&self, fpm: &Path, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            s(fpm).to_string(),
            "--nodaemonize".into(),
            "--fpm-config".into(),
            s(&self.conf).to_string(),
        ];
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    }

    fn children(&self, master: i32) -> Vec<i32> {
        wait_until("php-fpm has 2 children", || {
            children_named(master, "php-fpm").len() == 2
        });
        children_named(master, "php-fpm")
    }
}

struct Redis {
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn setup(g: &Guard) -> Redis {
        let dir = g.path("redis");
        fs::create_dir_all(&dir).unwrap();
        Redis {
            port: free_port(),
            dir,
        }
    }

    fn argv(&self, redis: &Path) -> Vec<String> {
        let port = self.port.to_string();
        [
            s(redis),
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--dir",
            s(&self.dir),
            "--daemonize",
            "no",
            "--appendonly",
            "yes",
            "--hz",
            "100",
            "--save",
            "",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }
}

/// PostgreSQL's programs, found together.
struct PgBin {
    postgres: PathBuf,
    initdb: PathBuf,
    psql: PathBuf,
    pg_isready: PathBuf,
    pg_controldata: PathBuf,
}

impl PgBin {
    fn find() -> Option<PgBin> {
        Some(PgBin {
            postgres: daemon_program("postgres", "postgresql")?,
            initdb: daemon_program("initdb", "postgresql")?,
            psql: daemon_program("psql", "postgresql-client")?,
            pg_isready: daemon_program("pg_isready", "postgresql-client")?,
            pg_controldata: daemon_program("pg_controldata", "postgresql")?,
        })
    }
}

struct Pg {
    bin: PgBin,
    port: u16,
    data: PathBuf,
    sock: PathBuf,
    /// `--user` for pm-start: the unprivileged user when the suite runs as root.
    user: Option<&'static str>,
}

/// The database superuser initdb creates (trust authentication on loopback).
const PG_ROLE: &str = "pmtest";

impl Pg {
    /// initdb into SANDBOX/pg/data, as the unprivileged user when root. None: skip.
    fn setup(g: &Guard) -> Option<Pg> {
        let bin = PgBin::find()?;
        let user = if is_root() {
            if !have_test_user() {
                return None;
            }
            Some(USER)
        } else {
            eprintln!("not root: PostgreSQL runs as the current user, --user is not tested");
            None
        };
        let base = g.path("pg");
        let sock = base.join("sock");
        fs::create_dir_all(&sock).unwrap();
        if let Some(u) = user {
            let u = nix::unistd::User::from_name(u).unwrap().unwrap();
            for d in [&base, &sock] {
                nix::unistd::chown(d.as_path(), Some(u.uid), Some(u.gid)).unwrap();
            }
        }
        let data = base.join("data");
        let mut initdb = match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&bin.initdb);
                c
            }
            None => Command::new(&bin.initdb),
        };
        let out = initdb
            .args([
                "--auth=trust",
                "-U",
                PG_ROLE,
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .current_dir(g.dir.path())
            .timeout(Duration::from_secs(120))
            .output()
            .expect("run initdb");
        assert_success(&out, "initdb");
        Some(Pg {
            bin,
            port: free_port(),
            data,
            sock,
            user,
        })
    }

    /// pm-start options and command for the postmaster (`extra` goes before `--`).
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if let Some(u) = self.user {
            v.extend(["--user".into(), u.into()]);
        }
        v.extend([
            "--stop-signal".into(),
            "INT".into(),
            "--ready".into(),
            format!(
                "exec:{} -q -U {PG_ROLE} -h 127.0.0.1 -p {}",
                s(&self.bin.pg_isready),
                self.port
            ),
        ]);
        v.extend(extra.iter().map(|a| a.to_string()));
        v.push("--".into());
        v.extend(
            [
                s(&self.bin.postgres),
                "-D",
                s(&self.data),
                "-k",
                s(&self.sock),
                "-p",
                &self.port.to_string(),
                "-h",
                "127.0.0.1",
            ]
            .iter()
            .map(|a| a.to_string()),
        );
        v
    }

    /// `psql -c SQL` over TCP, asserting success; the unaligned, tuples-only output.
    fn sql(&self, sql: &str) -> String {
        let out = Command::new(&self.bin.psql)
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                PG_ROLE,
            ])
            .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql])
            .timeout(Duration::from_secs(60))
            .output()
            .expect("run psql");
        assert_success(&out, &format!("psql -c {sql:?}"));
        stdout(&out).trim().to_string()
    }

    /// `pg_controldata DATA`'s "Database cluster state".
    fn cluster_state(&self) -> String {
        let out = Command::new(&self.bin.pg_controldata)
            .arg(&self.data)
            .env("LC_ALL", "C")
            .output()
            .expect("run pg_controldata");
        assert_success(&out, "pg_controldata");
        stdout(&out)
            .lines()
            .find_map(|l| l.strip_prefix("Database cluster state:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }
}

/// MariaDB's programs, found together.
struct MariaBin {
    mariadbd: PathBuf,
    install_db: PathBuf,
    client: PathBuf,
}

impl MariaBin {
    fn find() -> Option<MariaBin> {
        Some(MariaBin {
            mariadbd: daemon_program("mariadbd", "mariadb-server")?,
            install_db: daemon_program("mariadb-install-db", "mariadb-server")?,
            client: daemon_program("mariadb", "mariadb-client")?,
        })
    }
}

struct Maria {
    bin: MariaBin,
    port: u16,
    data: PathBuf,
    /// Its own tmpdir (see [`Maria::setup`]).
    tmp: PathBuf,
    sock: PathBuf,
    pidfile: PathBuf,
    /// `--user` for pm-start: the unprivileged user when the suite runs as root.
    user: Option<&'static str>,
}

impl Maria {
    /// `mariadb-install-db` into SANDBOX/mariadb/data, as the unprivileged user when root,
    /// with a password-less `root` (reachable only over the sandbox's socket and on
    /// 127.0.0.1, only while the test runs). None: skip.
    fn setup(g: &Guard) -> Option<Maria> {
        let bin = MariaBin::find()?;
        let user = if is_root() {
            if !have_test_user() {
                return None;
            }
            Some(USER)
        } else {
            eprintln!("not root: MariaDB runs as the current user, --user is not tested");
            None
        };
        // mariadbd creates its socket and PID file here, so the directory is its user's.
        let base = g.path("mariadb");
        fs::create_dir_all(&base).unwrap();
        if let Some(u) = user {
            let u = nix::unistd::User::from_name(u).unwrap().unwrap();
            nix::unistd::chown(base.as_path(), Some(u.uid), Some(u.gid)).unwrap();
        }
        let data = base.join("data");
        // A tmpdir of its own: a mariadbd that starts removes every `#sql*` file in its
        // tmpdir, and with /tmp shared it removed a parallel test's install-db tables.
        let tmp = base.join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        if let Some(u) = user {
            let u = nix::unistd::User::from_name(u).unwrap().unwrap();
            nix::unistd::chown(tmp.as_path(), Some(u.uid), Some(u.gid)).unwrap();
        }
        let mut install = match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&bin.install_db);
                c
            }
            None => Command::new(&bin.install_db),
        };
        let out = install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", s(&data)))
            .arg(format!("--tmpdir={}", s(&tmp)))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .current_dir(g.dir.path())
            .timeout(Duration::from_secs(120))
            .output()
            .expect("run mariadb-install-db");
        assert_success(&out, "mariadb-install-db");
        Some(Maria {
            bin,
            port: free_port(),
            data,
            tmp,
            sock: base.join("mariadb.sock"),
            pidfile: base.join("mariadbd.pid"),
            user,
        })
    }

    /// pm-start options and command for mariadbd in the foreground (`extra` goes before
    /// `--`): no option files, everything in the sandbox, TCP on 127.0.0.1 only.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if let Some(u) = self.user {
            v.extend(["--user".into(), u.into()]);
        }
        // Both listeners: mariadbd opens its TCP port just before its socket, and the
        // tests' first client comes over the socket.
        v.extend([
            "--ready".into(),
            format!("tcp:127.0.0.1:{}", self.port),
            "--ready".into(),
            format!("unix:{}", s(&self.sock)),
        ]);
        v.extend(extra.iter().map(|a| a.to_string()));
        v.push("--".into());
        v.extend([
            s(&self.bin.mariadbd).to_string(),
            "--no-defaults".into(),
            format!("--datadir={}", s(&self.data)),
            format!("--tmpdir={}", s(&self.tmp)),
            format!("--socket={}", s(&self.sock)),
            format!("--pid-file={}", s(&self.pidfile)),
            format!("--port={}", self.port),
            "--bind-address=127.0.0.1".into(),
            "--skip-name-resolve".into(),
        ]);
        v
    }

    /// `mariadb -e SQL` as root over the socket, or over TCP when `tcp`, asserting
    /// success; the batch output without column names.
    fn sql_via(&self, tcp: bool, sql: &str) -> String {
        let mut c = Command::new(&self.bin.client);
        c.args([
            "--no-defaults",
            "--batch",
            "--skip-column-names",
            "-u",
            "root",
        ]);
        if tcp {
            c.args(["--protocol=tcp", "-h", "127.0.0.1"])
                .arg(format!("--port={}", self.port));
        } else {
            c.arg("--protocol=socket")
                .arg(format!("--socket={}", s(&self.sock)));
        }
        let out = c
            .args(["-e", sql])
            .timeout(Duration::from_secs(60))
            .output()
            .expect("run mariadb");
        assert_success(&out, &format!("mariadb -e {sql:?}"));
        stdout(&out).trim().to_string()
    }

    fn sql(&self, sql: &str) -> String {
        self.sql_via(false, sql)
    }
}

fn args_ref(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `OPTS... -- ARGV...` as pm-start arguments.
fn with_cmd(opts: &[&str], argv: &[String]) -> Vec<String> {
    let mut v: Vec<String> = opts.iter().map(|a| a.to_string()).collect();
    v.push("--".into());
    v.extend(argv.iter().cloned());
    v
}

// ---------------------------------------------------------------------------------------
// nginx

#[test]
fn nginx_foreground_serves_and_leaves_no_worker() {
    let Some(bin) = daemon_program("nginx", "nginx") else {
        return;
    };
    let g = Guard::open();
    let ng = Nginx::setup(&g, false, None);
    let ready = format!("tcp:{}", ng.port);
    let args = with_cmd(
        &["--stop-signal", "QUIT", "--ready", &ready],
        &ng.argv(&bin),
    );
    let master = g.up("nginx", &args_ref(&args));

    let page = http_get(ng.port, "/index.html");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("hello from nginx"), "{page}");
    assert!(
        title(master).contains("master process"),
        "{}",
        title(master)
    );
    let workers = ng.workers(master);
    g.track(master);
    for w in &workers {
        let st = stat(*w);
        assert_eq!(
            (st.pgrp, st.session),
            (master, master),
            "worker {w} in the group"
        );
    }
    wait_until("nginx wrote its PID file", || ng.pidfile.exists());
    assert_eq!(g.state_of("nginx"), "running");

    let all = snapshot(master);
    let out = g.stop(&["nginx"]);
    assert_success(&out, "pm-stop nginx");
    assert!(
        stderr(&out).contains("stopped by SIGQUIT"),
        "{}",
        stderr(&out)
    );
    assert_all_gone("nginx master and workers", &all);
    assert!(!ng.pidfile.exists(), "nginx's PID file is left");
    assert_eq!(g.state_of("nginx"), "stopped");
}

#[test]
fn nginx_self_daemonizing_is_followed_through_its_pid_file() {
    let Some(bin) = daemon_program("nginx", "nginx") else {
        return;
    };
    let g = Guard::open();
    let ng = Nginx::setup(&g, true, None);
    let ready = format!("tcp:{}", ng.port);
    let pf = s(&ng.pidfile).to_string();
    let args = with_cmd(
        &[
            "--pidfile",
            &pf,
            "--stop-signal",
            "QUIT",
            "--ready",
            &ready,
            "--print-pid",
        ],
        &ng.argv(&bin),
    );
    let out = g.start("nginx", &args_ref(&args));
    assert_success(&out, "pm-start nginx (daemon on)");
    let master = g.track_name("nginx");
    let printed: i32 = stdout(&out).trim().parse().expect("--print-pid");
    assert_eq!(printed, master);

    // The launcher forked: the master is a new PID in a session of its own, and the
    // record names the PID nginx wrote.
    let in_file: i32 = fs::read_to_string(&ng.pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(master, in_file, "record pid vs nginx.pid");
    let st = Stat::read(master).expect("master alive");
    assert_eq!(st.session, master, "master leads its own session");
    // (Not the record's sid: nginx's launcher writes nginx.pid before the master's
    // setsid(), so pm-start may see the master still in the launcher's session.) Its
    // title it sets later still.
    wait_until("the master's title", || {
        title(master).contains("master process")
    });
    let workers = ng.workers(master);
    g.track(master);
    assert!(http_get(ng.port, "/").contains("hello from nginx"));
    let status = g.status_json(&["nginx"]);
    assert_eq!(status[0]["state"], "running", "{status:?}");
    assert_eq!(status[0]["pid"].as_i64(), Some(master as i64), "{status:?}");
    assert_eq!(
        status[0]["pgid"].as_i64(),
        Some(master as i64),
        "{status:?}"
    );

    let all = snapshot(master);
    assert!(workers.iter().all(|w| all.contains(w)));
    let out = g.stop(&["nginx"]);
    assert_success(&out, "pm-stop nginx");
    assert_all_gone("nginx master and workers", &all);
    assert!(!ng.pidfile.exists(), "nginx's PID file is left");
    assert_code(
        &g.cmd("pm-status").args(["-q", "nginx"]).output().unwrap(),
        3,
    );
}

// ---------------------------------------------------------------------------------------
// php-fpm

#[test]
fn php_fpm_as_root_without_a_user_exits_78_and_pm_start_says_so() {
    let Some(bin) = daemon_program("php-fpm8.2", "php-fpm") else {
        return;
    };
    if !is_root() {
        skip("php-fpm exits 78 for a pool without user only when run as root");
        return;
    }
    let g = Guard::open();
    let fpm = Fpm::setup(&g, None);
    let ready = format!("tcp:{}", fpm.port);
    let args = with_cmd(
        &["--stop-signal", "QUIT", "--ready", &ready],
        &fpm.argv(&bin, &[]),
    );
    let out = g.start("php-fpm", &args_ref(&args));
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("exited with status 78"), "{err}");
    let rec = g.record("php-fpm").expect("the failure is recorded");
    assert_eq!(rec["failure"]["exit_code"].as_i64(), Some(78), "{rec}");
    // php-fpm says why in its own error log.
    let own = fs::read_to_string(g.path("php/php-fpm.log")).unwrap_or_default();
    assert!(own.contains("user has not been defined"), "{own}");
    assert_ne!(g.state_of("php-fpm"), "running");
    // Nothing of it is left (the test itself started nothing else).
    assert!(g.processes().is_empty(), "{:?}", g.processes());
}

#[test]
fn php_fpm_runs_two_children_and_pm_stop_leaves_none() {
    let Some(bin) = daemon_program("php-fpm8.2", "php-fpm") else {
        return;
    };
    let g = Guard::open();
    // As root: -R (allow root), the documented quick way; the stack test uses user=pmtest.
    let extra: &[&str] = if is_root() { &["-R"] } else { &[] };
    let fpm = Fpm::setup(&g, None);
    let ready = format!("tcp:{}", fpm.port);
    let args = with_cmd(
        &["--stop-signal", "QUIT", "--ready", &ready],
        &fpm.argv(&bin, extra),
    );
    let master = g.up("php-fpm", &args_ref(&args));
    let kids = fpm.children(master);
    g.track(master);
    assert!(
        title(master).contains("master process"),
        "{}",
        title(master)
    );
    wait_until("php-fpm wrote its PID file", || fpm.pidfile.exists());

    let all = snapshot(master);
    assert!(kids.iter().all(|k| all.contains(k)));
    let out = g.stop(&["php-fpm"]);
    assert_success(&out, "pm-stop php-fpm");
    assert!(
        stderr(&out).contains("stopped by SIGQUIT"),
        "{}",
        stderr(&out)
    );
    assert_all_gone("php-fpm master and children", &all);
    assert!(!fpm.pidfile.exists(), "php-fpm's PID file is left");
}

// ---------------------------------------------------------------------------------------
// redis

#[test]
fn redis_keeps_a_key_across_stop_and_restart_from_the_record() {
    let Some(bin) = daemon_program("redis-server", "redis-server") else {
        return;
    };
    let g = Guard::new();
    let r = Redis::setup(&g);
    let ready = format!("tcp:{}", r.port);
    let args = with_cmd(&["--ready", &ready], &r.argv(&bin));
    let first = g.up("redis", &args_ref(&args));
    assert_eq!(redis(r.port, &["SET", "pm-key", "kept"]), "+OK");

    let out = g.stop(&["redis"]);
    assert_success(&out, "pm-stop redis");
    assert!(
        stderr(&out).contains("stopped by SIGTERM"),
        "{}",
        stderr(&out)
    );
    assert_gone(first);
    assert!(
        r.dir.join("appendonlydir").is_dir(),
        "no AOF in {}",
        r.dir.display()
    );

    // No command: the same argv, options and ready check from the record.
    let second = g.up("redis", &[]);
    assert_ne!(second, first);
    assert_eq!(redis(r.port, &["GET", "pm-key"]), "kept");
    assert_success(&g.stop(&["redis"]), "pm-stop redis");
    assert_gone(second);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

#[test]
fn postgres_as_unprivileged_user_keeps_a_row_and_shuts_down_cleanly() {
    let g = Guard::open();
    let Some(pg) = Pg::setup(&g) else { return };
    let args = pg.args(&[]);
    let pm = g.up("pg", &args_ref(&args));
    if pg.user.is_some() {
        let uid = nix::unistd::User::from_name(USER)
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        assert_eq!(
            fs::metadata(format!("/proc/{pm}")).unwrap().uid(),
            uid,
            "runs as {USER}"
        );
    }
    pg.sql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('row before stop')");
    // Every postgres child calls setsid(): snapshot the postmaster's descendants.
    wait_until("postgres has its background processes", || {
        descendants(pm).len() >= 3
    });
    g.track(pm);
    let all = snapshot(pm);
    assert!(
        all.iter()
            .any(|p| *p != pm && Stat::read(*p).is_some_and(|s| s.session == *p)),
        "expected postgres children in sessions of their own: {all:?}"
    );

    let out = g.stop(&["pg"]);
    assert_success(&out, "pm-stop pg");
    assert!(
        stderr(&out).contains("stopped by SIGINT"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("escalated"), "{}", stderr(&out));
    assert_all_gone("postmaster and its children", &all);
    assert_eq!(pg.cluster_state(), "shut down");
    assert!(!pg.data.join("postmaster.pid").exists());

    let again = g.up("pg", &[]);
    assert_ne!(again, pm);
    assert_eq!(pg.sql("SELECT v FROM kept"), "row before stop");
    let all = snapshot(again);
    assert_success(&g.stop(&["pg"]), "pm-stop pg");
    assert_all_gone("postmaster and its children", &all);
    assert_eq!(pg.cluster_state(), "shut down");
}

#[test]
fn postgres_with_its_own_multi_line_postmaster_pid() {
    let g = Guard::open();
    let Some(pg) = Pg::setup(&g) else { return };
    let pidfile = pg.data.join("postmaster.pid");
    let args = pg.args(&["--pidfile", s(&pidfile)]);
    let pm = g.up("pg", &args_ref(&args));
    let text = fs::read_to_string(&pidfile).unwrap();
    assert!(
        text.lines().count() > 1,
        "postmaster.pid is multi-line: {text:?}"
    );
    assert_eq!(text.lines().next().unwrap().trim(), pm.to_string());
    let rec = g.record("pg").unwrap();
    assert_eq!(rec["pidfile_by"], "service", "{rec}");

    let status = g.status_json(&["pg"]);
    assert_eq!(status[0]["state"], "running", "{status:?}");
    assert_eq!(status[0]["pid"].as_i64(), Some(pm as i64), "{status:?}");
    assert_code(&g.cmd("pm-status").args(["-q", "pg"]).output().unwrap(), 0);
    pg.sql("SELECT 1");

    wait_until("postgres has its background processes", || {
        descendants(pm).len() >= 3
    });
    g.track(pm);
    let all = snapshot(pm);
    let out = g.stop(&["pg"]);
    assert_success(&out, "pm-stop pg");
    assert_all_gone("postmaster and its children", &all);
    assert!(!pidfile.exists(), "postmaster.pid is left");
    assert_eq!(pg.cluster_state(), "shut down");
    assert_code(&g.cmd("pm-status").args(["-q", "pg"]).output().unwrap(), 3);
}

// ---------------------------------------------------------------------------------------
// MariaDB

/// Asserts a pm-stop/pm-stopall of NAME was a clean SIGTERM shutdown: its line says so
/// without escalation, so does the record's last stop, and mariadbd's own log says its
/// shutdown completed `times` times in all.
#[track_caller]
fn assert_mariadb_shut_down(g: &Guard, name: &str, out: &Output, times: usize) {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.contains(&format!(": {name}: ")))
        .unwrap_or_else(|| panic!("no line about {name}: {err}"));
    assert!(line.contains("stopped by SIGTERM"), "{err}");
    assert!(
        !line.contains("escalated") && !line.contains("SIGKILL"),
        "{err}"
    );
    let rec = g.rec(name);
    assert_eq!(rec["last_stop"]["escalated"], false, "{rec}");
    let log = g.log(name);
    assert_eq!(
        log.matches("mariadbd: Shutdown complete").count(),
        times,
        "mariadbd's log:\n{log}"
    );
}

#[test]
fn mariadb_as_unprivileged_user_keeps_a_row_across_a_restart_from_the_record() {
    let g = Guard::open();
    let Some(db) = Maria::setup(&g) else { return };
    let args = db.args(&[]);
    let first = g.up("mariadb", &args_ref(&args));
    if db.user.is_some() {
        let uid = nix::unistd::User::from_name(USER)
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        assert_eq!(
            fs::metadata(format!("/proc/{first}")).unwrap().uid(),
            uid,
            "runs as {USER}"
        );
    }
    // Over the socket, then the same row over TCP.
    db.sql(
        "CREATE DATABASE pm; CREATE TABLE pm.kept (v varchar(40)); \
         INSERT INTO pm.kept VALUES ('row before stop')",
    );
    assert_eq!(db.sql_via(true, "SELECT v FROM pm.kept"), "row before stop");
    wait_until("mariadbd wrote its PID file", || db.pidfile.exists());
    let in_file = fs::read_to_string(&db.pidfile).unwrap();
    assert_eq!(in_file.trim(), first.to_string(), "mariadbd.pid");
    g.track(first);
    let all = snapshot(first);

    let out = g.stop(&["mariadb"]);
    assert_success(&out, "pm-stop mariadb");
    assert_mariadb_shut_down(&g, "mariadb", &out, 1);
    assert_all_gone("mariadbd", &all);
    assert!(!db.pidfile.exists(), "mariadbd's PID file is left");
    assert!(!db.sock.exists(), "mariadbd's socket is left");
    assert_eq!(g.state_of("mariadb"), "stopped");

    // No command: the same argv, user and ready check from the record.
    let again = g.up("mariadb", &[]);
    assert_ne!(again, first);
    assert_eq!(db.sql("SELECT v FROM pm.kept"), "row before stop");
    let all = snapshot(again);
    let out = g.stop(&["mariadb"]);
    assert_success(&out, "pm-stop mariadb");
    assert_mariadb_shut_down(&g, "mariadb", &out, 2);
    assert_all_gone("mariadbd", &all);
    assert!(g.processes().is_empty(), "{:?}", g.processes());
    assert!(
        db.data.join("pm").is_dir(),
        "no database dir in {}",
        db.data.display()
    );
}

// ---------------------------------------------------------------------------------------
// The stack

#[test]
fn the_stack_starts_reports_and_stops_newest_first() {
    let (Some(nginx), Some(fpm_bin), Some(redis_bin), Some(jq)) = (
        daemon_program("nginx", "nginx"),
        daemon_program("php-fpm8.2", "php-fpm"),
        daemon_program("redis-server", "redis-server"),
        daemon_program("jq", "jq"),
    ) else {
        return;
    };
    let g = Guard::open();
    let Some(pg) = Pg::setup(&g) else { return };
    let Some(db) = Maria::setup(&g) else { return };
    let fpm = Fpm::setup(&g, pg.user);
    let ng = Nginx::setup(&g, false, Some(fpm.port));
    let r = Redis::setup(&g);

    // Start order: databases, cache, PHP, web server; pm-stopall must reverse it.
    let pg_args = pg.args(&[]);
    let pg_pid = g.up("pg", &args_ref(&pg_args));
    let db_args = db.args(&[]);
    let db_pid = g.up("mariadb", &args_ref(&db_args));
    let ready = format!("tcp:{}", r.port);
    let redis_pid = g.up(
        "redis",
        &args_ref(&with_cmd(&["--ready", &ready], &r.argv(&redis_bin))),
    );
    let ready = format!("tcp:{}", fpm.port);
    let fpm_extra: &[&str] = if is_root() && pg.user.is_none() {
        &["-R"]
    } else {
        &[]
    };
    let fpm_args = with_cmd(
        &["--stop-signal", "QUIT", "--ready", &ready],
        &fpm.argv(&fpm_bin, fpm_extra),
    );
    let fpm_pid = g.up("php-fpm", &args_ref(&fpm_args));
    let ready = format!("tcp:{}", ng.port);
    let ng_args = with_cmd(
        &["--stop-signal", "QUIT", "--ready", &ready],
        &ng.argv(&nginx),
    );
    let ng_pid = g.up("nginx", &args_ref(&ng_args));

    // The data each keeps, and the web stack working end to end (nginx -> php-fpm).
    pg.sql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('stacked')");
    db.sql(
        "CREATE DATABASE pm; CREATE TABLE pm.kept (v varchar(40)); \
         INSERT INTO pm.kept VALUES ('stacked')",
    );
    assert_eq!(redis(r.port, &["SET", "stack-key", "stacked"]), "+OK");
    let page = http_get(ng.port, "/index.php");
    assert!(page.contains("php says 42"), "{page}");
    assert!(http_get(ng.port, "/index.html").contains("hello from nginx"));
    ng.workers(ng_pid);
    fpm.children(fpm_pid);
    wait_until("postgres has its background processes", || {
        descendants(pg_pid).len() >= 3
    });
    let mut all = Vec::new();
    for p in [pg_pid, db_pid, redis_pid, fpm_pid, ng_pid] {
        g.track(p);
        all.extend(snapshot(p));
    }

    // pm-status --json | jq: five running.
    let json = g.cmd("pm-status").arg("--json").output().unwrap();
    assert_success(&json, "pm-status --json");
    let out = Command::new(&jq)
        .args(["-r", ".[] | \"\\(.name) \\(.state)\""])
        .write_stdin(json.stdout)
        .output()
        .unwrap();
    assert_success(&out, "jq");
    let mut got: Vec<String> = stdout(&out).lines().map(String::from).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "mariadb running",
            "nginx running",
            "pg running",
            "php-fpm running",
            "redis running"
        ],
        "{}",
        stdout(&out)
    );

    let t = Instant::now();
    let out = g.stopall(&[]);
    assert_success(&out, "pm-stopall");
    let order: Vec<String> = stderr_lines(&out)
        .iter()
        .filter_map(|l| l.strip_prefix("pm-stopall: "))
        .filter_map(|l| l.split(':').next())
        .map(String::from)
        .collect();
    assert_eq!(
        order,
        ["nginx", "php-fpm", "redis", "mariadb", "pg"],
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("escalated"), "{}", stderr(&out));
    assert_mariadb_shut_down(&g, "mariadb", &out, 1);
    eprintln!("pm-stopall took {:?}", t.elapsed());
    assert_all_gone("the stack", &all);
    for n in ["nginx", "php-fpm", "redis", "mariadb", "pg"] {
        assert_eq!(g.state_of(n), "stopped", "{n}");
    }
    assert!(!ng.pidfile.exists() && !fpm.pidfile.exists() && !db.pidfile.exists());
    assert_eq!(pg.cluster_state(), "shut down");

    // Nothing lost: start the data stores again from their records.
    g.up("pg", &[]);
    g.up("mariadb", &[]);
    g.up("redis", &[]);
    assert_eq!(pg.sql("SELECT v FROM kept"), "stacked");
    assert_eq!(db.sql("SELECT v FROM pm.kept"), "stacked");
    assert_eq!(redis(r.port, &["GET", "stack-key"]), "stacked");
    let out = g.stopall(&[]);
    assert_success(&out, "pm-stopall");
    assert_mariadb_shut_down(&g, "mariadb", &out, 2);
    assert_eq!(pg.cluster_state(), "shut down");
    assert!(g.processes().is_empty(), "{:?}", g.processes());
}

// ---------------------------------------------------------------------------------------
// The same stack as a services file: examples/grazr, brought up by pm-up

/// `examples/grazr` copied into the sandbox, moved to free ports, with this machine's
/// programs and, as root, every service run as the test user (PostgreSQL and MariaDB
/// refuse root).
struct Grazr {
    file: PathBuf,
    dir: PathBuf,
    http: u16,
    redis: u16,
    pg: u16,
    psql: PathBuf,
    mariadb: PathBuf,
}

/// Replaces `from` by `to` in `text`, which must contain it (an example edited out of
/// step with this test fails here, by name).
fn subst(text: &mut String, what: &str, from: &str, to: &str) {
    assert!(text.contains(from), "{what} has no {from:?}");
    *text = text.replace(from, to);
}

impl Grazr {
    fn setup(g: &Guard) -> Option<Grazr> {
        let mut prog = std::collections::BTreeMap::new();
        for (p, pkg) in [
            ("nginx", "nginx"),
            ("php-fpm8.2", "php-fpm"),
            ("redis-server", "redis-server"),
            ("postgres", "postgresql"),
            ("initdb", "postgresql"),
            ("pg_isready", "postgresql-client"),
            ("psql", "postgresql-client"),
            ("mariadbd", "mariadb-server"),
            ("mariadb-install-db", "mariadb-server"),
            ("mariadb", "mariadb-client"),
        ] {
            prog.insert(p, s(&daemon_program(p, pkg)?).to_string());
        }
        let user = if is_root() {
            if !have_test_user() {
                return None;
            }
            Some(USER)
        } else {
            None
        };
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grazr");
        let dir = g.path("grazr");
        fs::create_dir_all(dir.join("www")).unwrap();
        let read = |f: &str| fs::read_to_string(src.join(f)).unwrap();
        let (mut toml, mut nginx, mut fpm) =
            (read("pm.toml"), read("nginx.conf"), read("php-fpm.conf"));
        fs::copy(src.join("www/index.php"), dir.join("www/index.php")).unwrap();
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let (http, fpm_port, redis, pg, maria) = (ports[0], ports[1], ports[2], ports[3], ports[4]);
        subst(&mut nginx, "nginx.conf", "18080", &http.to_string());
        subst(&mut nginx, "nginx.conf", "19000", &fpm_port.to_string());
        subst(&mut fpm, "php-fpm.conf", "19000", &fpm_port.to_string());
        for (from, to) in [
            ("18080", http),
            ("19000", fpm_port),
            ("16379", redis),
            ("15432", pg),
            ("13306", maria),
        ] {
            subst(&mut toml, "pm.toml", from, &to.to_string());
        }
        // (where the example names a program, that program as written, which found)
        for (at, written, p) in [
            (
                "\"/usr/lib/postgresql/15/bin/postgres\"",
                "/usr/lib/postgresql/15/bin/postgres",
                "postgres",
            ),
            (
                "/usr/lib/postgresql/15/bin/initdb ",
                "/usr/lib/postgresql/15/bin/initdb",
                "initdb",
            ),
            (
                "/usr/lib/postgresql/15/bin/pg_isready ",
                "/usr/lib/postgresql/15/bin/pg_isready",
                "pg_isready",
            ),
            ("exec mariadbd ", "mariadbd", "mariadbd"),
            (
                "&& mariadb-install-db ",
                "mariadb-install-db",
                "mariadb-install-db",
            ),
            ("exec redis-server ", "redis-server", "redis-server"),
            ("\"php-fpm8.2\"", "php-fpm8.2", "php-fpm8.2"),
            ("exec nginx ", "nginx", "nginx"),
        ] {
            subst(&mut toml, "pm.toml", at, &at.replace(written, &prog[p]));
        }
        if let Some(u) = user {
            let mut out = String::new();
            for line in toml.lines() {
                out.push_str(line);
                out.push('\n');
                if line.starts_with("[services.") {
                    out.push_str(&format!("user = \"{u}\"\n"));
                }
            }
            toml = out;
        }
        let file = dir.join("pm.toml");
        fs::write(&file, toml).unwrap();
        fs::write(dir.join("nginx.conf"), nginx).unwrap();
        fs::write(dir.join("php-fpm.conf"), fpm).unwrap();
        if let Some(u) = user {
            let out = Command::new("chown")
                .args(["-R", &format!("{u}:")])
                .arg(&dir)
                .output()
                .unwrap();
            assert_success(&out, "chown");
        }
        Some(Grazr {
            file,
            dir,
            http,
            redis,
            pg,
            psql: prog["psql"].clone().into(),
            mariadb: prog["mariadb"].clone().into(),
        })
    }

    fn up(&self, g: &Guard) -> Output {
        g.cmd("pm-up")
            .arg("-f")
            .arg(&self.file)
            .timeout(Duration::from_secs(300))
            .output()
            .unwrap()
    }

    fn down(&self, g: &Guard) -> Output {
        g.cmd("pm-down")
            .arg("-f")
            .arg(&self.file)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    }

    fn pg_sql(&self, sql: &str) -> String {
        let out = Command::new(&self.psql)
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args(["-U", "app", "-d", "postgres", "-p", &self.pg.to_string()])
            .args(["-c", sql])
            .timeout(Duration::from_secs(60))
            .output()
            .expect("run psql");
        assert_success(&out, &format!("psql -c {sql:?}"));
        stdout(&out).trim().to_string()
    }

    fn maria_sql(&self, sql: &str) -> String {
        let out = Command::new(&self.mariadb)
            .args([
                "--no-defaults",
                "--batch",
                "--skip-column-names",
                "-u",
                "root",
            ])
            .arg("--protocol=socket")
            .arg(format!(
                "--socket={}",
                s(&self.dir.join("run/mariadb.sock"))
            ))
            .args(["-e", sql])
            .timeout(Duration::from_secs(60))
            .output()
            .expect("run mariadb");
        assert_success(&out, &format!("mariadb -e {sql:?}"));
        stdout(&out).trim().to_string()
    }
}

/// What each service of examples/grazr needs that has a record (the tasks have none).
const GRAZR_NEEDS: [(&str, &[&str]); 2] = [
    ("nginx", &["php-fpm"]),
    ("php-fpm", &["pg", "mariadb", "redis"]),
];
const GRAZR: [&str; 5] = ["nginx", "php-fpm", "pg", "mariadb", "redis"];

#[test]
fn the_example_stack_comes_up_ready_goes_down_and_keeps_its_data() {
    let g = Guard::open();
    let Some(st) = Grazr::setup(&g) else { return };

    // Up from nothing: the tasks make the data directories, everything ends up ready.
    let out = st.up(&g);
    assert_success(&out, "pm-up");
    for n in ["pg-init", "mariadb-init"] {
        assert!(
            stderr(&out).contains(&format!("pm-up: {n}: succeeded")),
            "{}",
            describe(&out)
        );
    }
    for n in GRAZR {
        assert_eq!(g.state_of(n), "running", "{n}: {}", describe(&out));
    }
    // Each was started only once what it needs was ready (the records' own times).
    for (svc, needs) in GRAZR_NEEDS {
        let started = g.rec(svc)["started_at"].as_str().unwrap().to_string();
        for n in needs {
            let ready = g.rec(n)["ready_at"].as_str().unwrap().to_string();
            assert!(
                started > ready,
                "{svc} started at {started}, before {n} was ready at {ready}"
            );
        }
    }
    let page = http_get(st.http, "/index.php");
    assert!(page.contains("php says 42"), "{page}");
    st.pg_sql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('grazr')");
    st.maria_sql("CREATE DATABASE pm; CREATE TABLE pm.kept (v varchar(40)); INSERT INTO pm.kept VALUES ('grazr')");
    assert_eq!(redis(st.redis, &["SET", "grazr-key", "grazr"]), "+OK");
    let mut all = Vec::new();
    for n in GRAZR {
        let pid = g.track_name(n);
        all.extend(snapshot(pid));
    }

    // Down: dependents first, from the records.
    let out = st.down(&g);
    assert_success(&out, "pm-down");
    let lines = stderr_lines(&out);
    let pos = |n: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(&format!("pm-down: {n}: stopped")))
            .unwrap_or_else(|| panic!("{n} not stopped: {}", describe(&out)))
    };
    assert!(pos("nginx") < pos("php-fpm"), "{}", describe(&out));
    for n in ["pg", "mariadb", "redis"] {
        assert!(pos("php-fpm") < pos(n), "{}", describe(&out));
    }
    assert!(!stderr(&out).contains("escalated"), "{}", describe(&out));
    assert_all_gone("the stack", &all);
    assert!(g.processes().is_empty(), "{:?}", g.processes());

    // Ctrl-C while it comes up again: what this pm-up started is stopped, it dies of it.
    // pg is held in its start (one more ready check, a file no one makes) while the others
    // come up: pm-up has started some and is starting one when the signal comes.
    let file = fs::read_to_string(&st.file).unwrap();
    let mut gated = String::new();
    for line in file.lines() {
        match line.strip_prefix("ready = \"exec:") {
            Some(rest) => gated.push_str(&format!(
                "ready = [\"exec:{rest}, \"file:{}\"]\n",
                s(&st.dir.join("gate"))
            )),
            None => gated.push_str(&format!("{line}\n")),
        }
    }
    assert_ne!(gated, format!("{file}\n"), "pg has no exec: ready check");
    fs::write(&st.file, &gated).unwrap();
    let run = g.spawn_tool("up", "pm-up", &["-f", s(&st.file)]);
    wait_until("redis and mariadb are up, pg is being started", || {
        let phase = |n: &str| g.record(n).map(|r| r["phase"].clone());
        phase("redis").is_some_and(|p| p == "running")
            && phase("mariadb").is_some_and(|p| p == "running")
            && phase("pg").is_some_and(|p| p == "starting")
            && g.pid("pg").is_some_and(is_alive)
    });
    for n in ["redis", "mariadb", "pg"] {
        g.track_name(n);
    }
    kill(Pid::from_raw(run.pid()), Signal::SIGINT).unwrap();
    let done = run.finish(Duration::from_secs(120));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        done.status.signal(),
        Some(Signal::SIGINT as i32),
        "{}",
        done.describe()
    );
    for n in GRAZR {
        let state = g.state_of(n);
        assert!(
            state != "running" && state != "starting",
            "{n} was left {state}: {}",
            done.describe()
        );
    }
    wait_until("nothing of the stack is left", || g.processes().is_empty());
    fs::write(&st.file, file).unwrap();

    // Up again: the tasks find the data, and nothing was lost.
    let out = st.up(&g);
    assert_success(&out, "pm-up again");
    assert_eq!(st.pg_sql("SELECT v FROM kept"), "grazr");
    assert_eq!(st.maria_sql("SELECT v FROM pm.kept"), "grazr");
    assert_eq!(redis(st.redis, &["GET", "grazr-key"]), "grazr");
    assert!(http_get(st.http, "/index.php").contains("php says 42"));
    let mut all = Vec::new();
    for n in GRAZR {
        all.extend(snapshot(g.track_name(n)));
    }
    assert_success(&st.down(&g), "pm-down");
    assert_all_gone("the stack", &all);
    assert!(g.processes().is_empty(), "{:?}", g.processes());
}

// ---------------------------------------------------------------------------------------
// Nothing left behind, and --user

#[test]
fn a_child_that_left_the_session_is_stopped_too() {
    let Some(py) = daemon_program("python3", "python3") else {
        return;
    };
    let g = Guard::new();
    // The leader forks a child that calls setsid() (leaving the group and session) and
    // ignores SIGHUP (so the leader's death does not take it along), then both wait.
    let code = r#"
import os, signal, sys, time
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setsid()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.write(w, b"%d\n" % os.getpid())
    while True:
        time.sleep(0.05)
print(os.read(r, 32).decode().strip(), flush=True)
while True:
    time.sleep(0.05)
"#;
    let leader = g.up(
        "escapee",
        &["--ready", "log:^[0-9]+$", "--", s(&py), "-c", code],
    );
    let child: i32 = {
        let mut v = 0;
        wait_until("the child's pid is logged", || {
            v = g.log("escapee").trim().parse().unwrap_or(0);
            v > 0
        });
        v
    };
    g.track(leader);
    let st = Stat::read(child).expect("child alive");
    assert_eq!(st.session, child, "the child leads a session of its own");
    assert_ne!(st.pgrp, leader);

    let out = g.stop(&["escapee"]);
    assert_success(&out, "pm-stop escapee");
    assert!(
        stderr(&out).contains("outside the group") || stderr(&out).contains("in its cgroup"),
        "{}",
        stderr(&out)
    );
    assert_gone(leader);
    assert_gone(child);
}

#[test]
fn user_runs_the_service_as_that_user_with_a_log_it_can_write() {
    if !root_or_skip("--user") {
        return;
    }
    if !have_test_user() {
        return;
    }
    let g = Guard::open();
    let u = nix::unistd::User::from_name(USER).unwrap().unwrap();
    let log = g.path("as-user.log");
    // The service writes to stdout, then reopens its log by path and appends (as a
    // daemon does on a log-reopen signal).
    let pid = g.up(
        "as-user",
        &[
            "--user",
            USER,
            "--log",
            s(&log),
            "--",
            "sh",
            "-c",
            "echo \"uid $(id -u)\"; echo reopened >> \"$1\"; exec sleep 1000",
            "sh",
            s(&log),
        ],
    );
    wait_until("the service wrote its log", || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("reopened")
    });
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("uid {}", u.uid)), "{text}");
    assert!(!text.contains("Permission denied"), "{text}");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    assert!(uids.iter().all(|x| *x == u.uid.to_string()), "{uid_line}");
    let gid_line = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
    assert!(
        gid_line
            .split_whitespace()
            .skip(1)
            .all(|x| x == u.gid.to_string()),
        "{gid_line}"
    );
    assert_eq!(
        fs::metadata(&log).unwrap().uid(),
        u.uid.as_raw(),
        "log owned by {USER}"
    );
    assert_eq!(g.record("as-user").unwrap()["user"], USER);

    assert_success(&g.stop(&["as-user"]), "pm-stop as-user");
    assert_gone(pid);
}

#[test]
fn user_that_does_not_exist_is_refused_by_name() {
    let g = Guard::new();
    let out = g.start(
        "nobody-here",
        &["--user", "no-such-user-pm", "--", "sleep", "100"],
    );
    assert!(
        matches!(out.status.code(), Some(1) | Some(2)),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).contains("no-such-user-pm"), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown user"), "{}", stderr(&out));
    assert!(g.processes().is_empty(), "{:?}", g.processes());
    let out = g.start(
        "nobody-here",
        &["--user", "root:no-such-group-pm", "--", "sleep", "100"],
    );
    assert!(
        matches!(out.status.code(), Some(1) | Some(2)),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("no-such-group-pm"),
        "{}",
        stderr(&out)
    );
}
