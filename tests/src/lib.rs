//! The shared test harness for pm's end-to-end tests.
//!
//! A [`Sandbox`] owns a temporary directory with a private state directory, builds
//! commands for the real pm binaries with the caller's `PM_*`, `XDG_RUNTIME_DIR` and
//! `NOTIFY_SOCKET` cleared, and on drop kills every process that carries its unique state
//! directory in its environment (pm passes the environment on to services), so no process
//! outlives its test, even when the test fails; the monitors its records name (`pm-start
//! --restart`) first, by PID and start time, so none restarts what is being killed. It
//! never kills by name.
//!
//! The harness judges pm with its own small /proc reader, [`procfs`], never with pm-core's
//! code, so a bug there cannot hide itself; zombies count as gone everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

pub use assert_cmd::Command;

pub mod procfs;
pub use procfs::{cmdline, environ, is_alive, Stat};

/// Generous limit for anything a test waits for (tests must not hang, not time things).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Where the pm binaries are: `$PM_TEST_BIN_DIR` (to test an installed copy), else the
/// cargo target directory this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PM_TEST_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("target dir").to_path_buf()
    } else {
        deps.to_path_buf()
    };
    static FRESH: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    if let Err(e) = FRESH.get_or_init(|| check_fresh(&dir)) {
        panic!("{e}");
    }
    dir
}

/// The tools the tests run.
pub const TOOLS: [&str; 10] = [
    "pm-start",
    "pm-stop",
    "pm-status",
    "pm-stopall",
    "pm-signal",
    "pm-up",
    "pm-down",
    "pm-wait",
    "pm-restart",
    "pm-logs",
];

/// Fails unless every tool in `dir` is at least as new as its sources: `cargo test -p
/// pm-tests` rebuilds the libraries it links, not the binaries it runs, so a changed
/// pm-core would otherwise be tested through yesterday's executables.
fn check_fresh(dir: &Path) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let core = newest(&root.join("pm-core"));
    for tool in TOOLS {
        let bin = dir.join(tool);
        let built = fs::metadata(&bin).and_then(|m| m.modified()).map_err(|_| {
            format!(
                "{} is missing: run `cargo build --workspace` first (or `make test`)",
                bin.display()
            )
        })?;
        if built < core.max(newest(&root.join(tool))) {
            return Err(format!(
                "{} is older than its sources: run `cargo build --workspace` first (or `make test`)",
                bin.display()
            ));
        }
    }
    Ok(())
}

/// The newest modification time of the crate's manifest and of any file under its `src/`.
fn newest(krate: &Path) -> std::time::SystemTime {
    fn walk(p: &Path, best: &mut std::time::SystemTime) {
        let Ok(meta) = fs::symlink_metadata(p) else {
            return;
        };
        if let Ok(t) = meta.modified() {
            *best = (*best).max(t);
        }
        if meta.is_dir() {
            for e in fs::read_dir(p).into_iter().flatten().flatten() {
                walk(&e.path(), best);
            }
        }
    }
    let mut best = std::time::UNIX_EPOCH;
    walk(&krate.join("Cargo.toml"), &mut best);
    walk(&krate.join("src"), &mut best);
    best
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("pm-test-")
            .tempdir()
            .expect("tempdir");
        let state = dir.path().join("state");
        Sandbox { dir, state }
    }

    /// A path inside the sandbox.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A pm tool (`"pm-start"`, ...) set up for this sandbox: clean environment, the
    /// sandbox as cwd and `PM_STATE_DIR`, a hard timeout so a hang fails instead of blocking.
    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(bin_dir().join(tool));
        for k in unclean_env() {
            c.env_remove(k);
        }
        c.env("PM_STATE_DIR", &self.state)
            .current_dir(self.dir.path())
            .timeout(Duration::from_secs(120));
        c
    }

    /// A std `Command` for any program with the same clean environment, cwd and
    /// `PM_STATE_DIR` as [`Sandbox::cmd`] (so the sandbox's clean-up finds what it starts);
    /// stdio is left to the caller.
    pub fn std_cmd(&self, program: impl AsRef<OsStr>) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        for k in unclean_env() {
            c.env_remove(k);
        }
        c.env("PM_STATE_DIR", &self.state)
            .current_dir(self.dir.path());
        c
    }

    /// Starts a process the test owns (not through pm), e.g. an unrelated `sleep`, with
    /// stdio on /dev/null; see [`Owned`].
    pub fn own(&self, argv: &[&str]) -> Owned {
        let child = self
            .std_cmd(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        Owned(child)
    }

    /// Starts `PROGRAM ARGS...` in the background with the clean environment of
    /// [`Sandbox::std_cmd`]; see [`Bg`]. `tag` names its output files in the sandbox.
    pub fn spawn(&self, tag: &str, program: impl AsRef<OsStr>, args: &[&str]) -> Bg {
        let mut c = self.std_cmd(program);
        c.args(args);
        self.spawn_cmd(tag, c)
    }

    /// A pm tool (`"pm-start"`, ...) in the background, as [`Sandbox::spawn`].
    pub fn spawn_tool(&self, tag: &str, tool: &str, args: &[&str]) -> Bg {
        self.spawn(tag, bin_dir().join(tool), args)
    }

    /// Starts `cmd` (built on [`Sandbox::std_cmd`]) in the background: stdin on /dev/null,
    /// stdout and stderr to `TAG.stdout` and `TAG.stderr` in the sandbox (files, never pipes
    /// a leaked fd could hold open). See [`Bg`].
    pub fn spawn_cmd(&self, tag: &str, mut cmd: std::process::Command) -> Bg {
        let out = self.path(&format!("{tag}.stdout"));
        let err = self.path(&format!("{tag}.stderr"));
        let what = Path::new(cmd.get_program())
            .file_name()
            .unwrap_or(cmd.get_program())
            .to_string_lossy()
            .into_owned();
        let began = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Bg {
            child,
            what,
            out,
            err,
            began,
        }
    }

    /// Runs `pm-start NAME [ARGS...]` and returns its output (whatever the exit code).
    pub fn start(&self, name: &str, args: &[&str]) -> Output {
        self.cmd("pm-start")
            .arg(name)
            .args(args)
            .output()
            .expect("run pm-start")
    }

    /// `pm-start NAME [OPTS...] -- sh -c SCRIPT`, asserting success; returns the PID.
    pub fn start_sh(&self, name: &str, opts: &[&str], script: &str) -> i32 {
        let mut args: Vec<&str> = opts.to_vec();
        args.extend(["--", "sh", "-c", script]);
        let out = self.start(name, &args);
        assert_success(&out, "pm-start");
        self.pid(name).expect("record has a pid")
    }

    /// `pm-stop ARGS...`, whatever the exit code.
    pub fn stop(&self, args: &[&str]) -> Output {
        self.cmd("pm-stop")
            .args(args)
            .output()
            .expect("run pm-stop")
    }

    /// `pm-stopall ARGS...`, whatever the exit code.
    pub fn stopall(&self, args: &[&str]) -> Output {
        self.cmd("pm-stopall")
            .args(args)
            .output()
            .expect("run pm-stopall")
    }

    /// `pm-status ARGS...`, whatever the exit code.
    pub fn status(&self, args: &[&str]) -> Output {
        self.cmd("pm-status")
            .args(args)
            .output()
            .expect("run pm-status")
    }

    /// `pm-status --json NAMES...` parsed.
    pub fn status_json(&self, names: &[&str]) -> Vec<Value> {
        let out = self
            .cmd("pm-status")
            .arg("--json")
            .args(names)
            .output()
            .expect("run pm-status");
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("pm-status --json gave bad JSON ({e}): {}", describe(&out)))
            .as_array()
            .cloned()
            .expect("a JSON array")
    }

    /// The state pm-status reports for NAME.
    pub fn state_of(&self, name: &str) -> String {
        self.status_json(&[name])[0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The record `STATE/NAME.json`, if any.
    pub fn record(&self, name: &str) -> Option<Value> {
        let text = fs::read_to_string(self.state.join(format!("{name}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The record, which must exist.
    #[track_caller]
    pub fn rec(&self, name: &str) -> Value {
        self.record(name)
            .unwrap_or_else(|| panic!("no readable record {name}.json in {}", self.state.display()))
    }

    pub fn pid(&self, name: &str) -> Option<i32> {
        self.record(name)?["pid"].as_i64().map(|p| p as i32)
    }

    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.state.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Every live (non-zombie) process started under this sandbox's state dir.
    pub fn processes(&self) -> Vec<i32> {
        let needle = format!("PM_STATE_DIR={}", self.state.display());
        let me = std::process::id() as i32;
        let mut out = Vec::new();
        for pid in procfs::pids() {
            if pid == me {
                continue;
            }
            if environ(pid).contains(&needle) && is_alive(pid) {
                out.push(pid);
            }
        }
        out
    }

    /// The monitors (`pm-start --restart`) that the records in the state directory name and
    /// that are still the recorded process: same PID *and* start time, read with the
    /// harness's own /proc reader (a PID successor is never named here). Zombies left out.
    fn recorded_monitors(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let Ok(dir) = fs::read_dir(&self.state) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in dir.flatten() {
            let file = e.file_name();
            let file = file.to_string_lossy();
            // Records are NAME.json; pm's temporary files start with a dot.
            if file.starts_with('.') || !file.ends_with(".json") {
                continue;
            }
            let Some(rec) = fs::read_to_string(e.path())
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            else {
                continue;
            };
            let m = &rec["monitor"];
            let (Some(pid), Some(start)) = (m["pid"].as_i64(), m["start_time"].as_u64()) else {
                continue;
            };
            let Ok(pid) = i32::try_from(pid) else {
                continue;
            };
            let same = Stat::read(pid).is_some_and(|s| s.start_time == start && !s.is_zombie());
            if same && pid != me && !out.contains(&pid) {
                out.push(pid);
            }
        }
        out
    }

    /// Kills everything this sandbox started (by environment, never by name), then
    /// removes the cgroups its pm made (see [`Sandbox::cgroup_dir`]). The monitors of
    /// supervised services die first (else they restart what is being killed).
    pub fn kill_all(&self) {
        for _ in 0..50 {
            let monitors = self.recorded_monitors();
            if monitors.is_empty() {
                break;
            }
            for p in monitors {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..50 {
            let pids = self.processes();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(dir) = self.cgroup_dir() {
            // Every PID listed, zombie-looking or not: a process whose main thread exited
            // shows Z while its other threads run (zombies just ignore the signal).
            for _ in 0..50 {
                let listed = procfs::cgroup_pids(&dir);
                if listed.is_empty() {
                    break;
                }
                for p in listed {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten().filter(|e| e.path().is_dir()) {
                    let _ = fs::remove_dir(e.path());
                }
            }
            let _ = fs::remove_dir(&dir);
        }
    }

    /// Where root's pm puts this sandbox's cgroups: `MOUNT/pm/ID`, ID the random id pm
    /// keeps in the state directory's `.cgroup-id`. None without a cgroup2 mount, when not
    /// root, or before pm made an id.
    pub fn cgroup_dir(&self) -> Option<PathBuf> {
        if !is_root() {
            return None;
        }
        let mount = procfs::cgroup2_mount()?;
        let id = fs::read_to_string(self.state.join(".cgroup-id")).ok()?;
        let id = id.trim();
        (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| mount.join("pm").join(id))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A process a test started itself (not through pm), e.g. an "unrelated" `sleep` for the
/// PID-reuse cases; killed and reaped on drop. Start it with the sandbox's `PM_STATE_DIR`
/// in its environment and the Sandbox kills it too if the test fails.
pub struct Owned(pub std::process::Child);

impl Owned {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pm tool or any program running in the background (not waited for), started by
/// [`Sandbox::spawn`], [`Sandbox::spawn_tool`] or [`Sandbox::spawn_cmd`]; polled for its
/// exit, and SIGKILLed and reaped when dropped unfinished or when [`Bg::finish`] runs out of
/// time.
pub struct Bg {
    child: Child,
    what: String,
    out: PathBuf,
    err: PathBuf,
    began: Instant,
}

/// How a [`Bg`] ended: its status, its whole stdout and stderr, and how long it ran.
pub struct Done {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From just before the spawn to the exit.
    pub took: Duration,
}

impl Bg {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// When it was spawned (taken just before the spawn).
    pub fn began(&self) -> Instant {
        self.began
    }

    /// True once it has exited (it is reaped then).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits until it exited or `limit` (since it began) passed; true if it exited.
    pub fn wait_for_exit(&mut self, limit: Duration) -> bool {
        while self.began.elapsed() < limit {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.exited()
    }

    /// What it has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// SIGKILL, then reap (so it does not linger as a zombie).
    pub fn kill_and_reap(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until it exits, at most `limit` after it began (then kills it and fails).
    #[track_caller]
    pub fn finish(mut self, limit: Duration) -> Done {
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if self.began.elapsed() > limit {
                self.kill_and_reap();
                panic!(
                    "{} still running after {limit:?} (killed it); stderr so far:\n{}",
                    self.what,
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = self.began.elapsed();
        Done {
            status,
            took,
            stdout: fs::read_to_string(&self.out).unwrap(),
            stderr: fs::read_to_string(&self.err).unwrap(),
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if !self.exited() {
            self.kill_and_reap();
        }
    }
}

impl Done {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Status, run time, stdout and stderr, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.took, self.stdout, self.stderr
        )
    }
}

/// The caller's variables that must not reach pm or a service: `PM_*`,
/// `XDG_RUNTIME_DIR`, `NOTIFY_SOCKET`. `PM_CGROUP` and `PM_CLONE3` are let through: `make
/// test` runs the suite once as the host allows (cgroups where writable, services born in
/// them), once with `PM_CGROUP=off`, and the cgroup tests once more with `PM_CLONE3=off`.
fn unclean_env() -> Vec<String> {
    std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .filter(|k| k.starts_with("PM_") || k == "XDG_RUNTIME_DIR" || k == "NOTIFY_SOCKET")
        .filter(|k| k != "PM_CGROUP" && k != "PM_CLONE3")
        .collect()
}

/// The `/proc/PID/stat` of a process that must exist (a zombie is returned too).
#[track_caller]
pub fn stat(pid: i32) -> Stat {
    Stat::read(pid).unwrap_or_else(|| panic!("pid {pid} is not in /proc"))
}

/// Writes the sandbox's stack file, `pm.toml` (pm-up's and pm-down's default).
pub fn write_stack(sb: &Sandbox, toml: &str) {
    fs::write(sb.path("pm.toml"), toml).unwrap();
}

/// SIGKILLs a process the test itself may kill, and waits until it is gone.
#[track_caller]
pub fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    wait_until(&format!("pid {pid} is gone"), || !is_alive(pid));
}

/// A path as `&str`, for argument lists.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Command, exit status, stdout and stderr, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of stderr.
pub fn stderr_lines(out: &Output) -> Vec<String> {
    stderr(out).lines().map(String::from).collect()
}

#[track_caller]
pub fn assert_success(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", describe(out));
}

#[track_caller]
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "wrong exit code: {}",
        describe(out)
    );
}

/// Waits (polling, with a generous limit) until `f` holds.
#[track_caller]
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < PATIENCE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts the process is gone (zombies count as gone).
#[track_caller]
pub fn assert_gone(pid: i32) {
    assert!(
        !is_alive(pid),
        "pid {pid} is still running: {:?}",
        Stat::read(pid)
    );
}

/// Live (non-zombie) processes in process group `pgid`, or in session `sid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    procfs::scan()
        .into_iter()
        .filter(|s| s.pgrp == pgid || s.session == pgid)
        .map(|s| s.pid)
        .collect()
}

/// Live descendants of `pid` (by parent PID).
pub fn descendants(pid: i32) -> Vec<i32> {
    let stats = procfs::scan();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for s in stats.iter().filter(|s| s.ppid == p) {
            if seen.insert(s.pid) {
                out.push(s.pid);
                queue.push(s.pid);
            }
        }
    }
    out
}

/// The fds a process has open, sorted.
pub fn fds_of(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// A free TCP port on 127.0.0.1, one no other test of this run is given.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below the kernel's ephemeral range (32768-60999 by default), so no outgoing
    // connection (a readiness probe, a client) can be given the port between this check
    // and the test's own bind; and a counter, so two tests of this run never get the same
    // one. The PID spreads concurrent runs apart.
    //
    // The probe binds without listening, with SO_REUSEADDR: a child that another thread
    // of this test process forks at that moment may hold a copy of the probe until it
    // execs, and a copy of a *listening* probe would keep the port (EADDRINUSE for the
    // test's own listener, seen in CI); a bound, non-listening copy does not.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + std::process::id() % 6_000;
    for _ in 0..6_000 {
        let port = (base + NEXT.fetch_add(1, Ordering::Relaxed) % 6_000) as u16;
        if port_is_free(port) {
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 in 20000-31999");
}

/// Whether nothing listens on (or is connected from) 127.0.0.1:`port`.
fn port_is_free(port: u16) -> bool {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let Ok(fd) = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    setsockopt(&fd, sockopt::ReuseAddr, &true).is_ok()
        && bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::new(127, 0, 0, 1, port),
        )
        .is_ok()
}

/// A listener of the test's own on a free 127.0.0.1 port (bound at once: no gap in
/// which anything else can take the port).
pub fn listen_on_free_port() -> (u16, std::net::TcpListener) {
    for _ in 0..100 {
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", free_port())) {
            let port = l.local_addr().expect("local_addr").port();
            return (port, l);
        }
    }
    panic!("could not listen on a free TCP port on 127.0.0.1");
}

/// Writes an executable script into the sandbox and returns its path.
pub fn script(sb: &Sandbox, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = sb.path(name);
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Says that the running test is skipped and why. cargo test reports a test that returns
/// early as "ok", so the skip is also appended to the file `$PM_TEST_SKIPPED` names:
/// `make test` lists them at the end, so a skip is never mistaken for a pass.
pub fn skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("SKIPPED: {test}: {why}");
    if let Some(path) = std::env::var_os("PM_TEST_SKIPPED") {
        use std::io::Write;
        if let Ok(mut f) = fs::OpenOptions::new().append(true).create(true).open(path) {
            // One write(2) of the whole line: O_APPEND keeps parallel tests' lines whole.
            let _ = f.write_all(format!("{test}: {why}\n").as_bytes());
        }
    }
}

/// False (after [`skip`] saying what needs root) when not root.
pub fn root_or_skip(why: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(&format!("needs root ({why})"));
    false
}

/// [`require`] for python3.
pub fn python_ok() -> bool {
    require("python3", "python3")
}

/// True when `prog` is on PATH.
pub fn have(prog: impl AsRef<OsStr>) -> bool {
    let prog = prog.as_ref();
    if Path::new(prog).is_absolute() {
        return Path::new(prog).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).exists()))
        .unwrap_or(false)
}

/// Skips (returns false) on a developer machine when `prog` is missing, saying what to
/// install; in CI (`CI=true`) a missing program is a failure.
pub fn require(prog: &str, package: &str) -> bool {
    if have(prog) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{prog} is missing in CI: .ci/run must install {package}");
    }
    skip(&format!(
        "{prog} not found; install it with: apt-get install {package}"
    ));
    false
}

/// What every tool's command line must do: `--help` with examples and `--state-dir`,
/// `--version` starting with the tool's name, exit 2 on an unknown option. Each binary
/// crate calls this from its own `tests/cli.rs` (which also makes cargo build the binary).
pub fn assert_cli_basics(bin: &Path, tool: &str) {
    let out = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{tool} --help: {}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("Examples:"), "{text}");
    assert!(text.contains("--state-dir"), "{text}");
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with(&format!("{tool} ")),
        "{}",
        stdout(&out)
    );
    let out = std::process::Command::new(bin)
        .arg("--no-such-option")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// Finds a daemon's program on PATH, in the sbin directories (not on a normal user's
/// PATH) or, for PostgreSQL's server programs, in the newest `/usr/lib/postgresql/*/bin`.
/// `None` (after a loud skip message) when missing on a developer machine; a failure in CI.
pub fn daemon_program(prog: &str, package: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    let mut pg: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    pg.sort();
    // The newest PostgreSQL first: its server and client programs belong together.
    dirs.splice(0..0, pg.into_iter().rev().map(|(_, d)| d));
    let found = dirs.iter().map(|d| d.join(prog)).find(|p| p.is_file());
    if found.is_none() {
        // Fails in CI, says what to install on a developer machine.
        require(prog, package);
    }
    found
}

/// Kills, on drop, the processes it was shown (by PID and start time, never by name): for
/// daemons that rewrite their environment (nginx), which [`Sandbox::kill_all`] looks for.
#[derive(Default)]
pub struct Seen(std::cell::RefCell<Vec<(i32, u64)>>);

impl Seen {
    pub fn add(&self, pids: &[i32]) {
        for &p in pids {
            if let Some(st) = Stat::read(p) {
                self.0.borrow_mut().push((p, st.start_time));
            }
        }
    }
}

impl Drop for Seen {
    fn drop(&mut self) {
        for _ in 0..100 {
            let mut any = false;
            for &(p, t) in self.0.borrow().iter() {
                if Stat::read(p).is_some_and(|s| s.start_time == t) && is_alive(p) {
                    any = true;
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Clock ticks since boot, now (the unit of /proc/PID/stat's start time).
pub fn ticks_since_boot() -> u64 {
    let up: f64 = fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (up * hz as f64) as u64
}

/// Rewrites NAME's record through `f`, atomically (as pm writes it).
pub fn edit_record(sb: &Sandbox, name: &str, f: impl FnOnce(&mut Value)) {
    let mut rec = sb.rec(name);
    f(&mut rec);
    let tmp = sb.state.join(format!(".{name}.json.test"));
    fs::write(&tmp, serde_json::to_string_pretty(&rec).unwrap()).unwrap();
    fs::rename(&tmp, sb.state.join(format!("{name}.json"))).unwrap();
}
