//! Starting a service detached: its own session, no terminal, no inherited fds.
//!
//! Every inherited fd >= 3 is closed at exec, so `x=$(pm-start ...)`, a Make jobserver or a
//! CI pipe never waits on the service. std's `Command` reports exec failures through a
//! CLOEXEC pipe, which is why fds are *marked* close-on-exec rather than closed early: the
//! caller still learns "not found" or "permission denied" instead of a silent exit 127.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{Gid, Group, Uid, User};

use crate::error::{Error, ExecFailure, Result};
use crate::process::Handle;
use crate::untrusted;

/// Who the service runs as (`--user USER[:GROUP]`), resolved before forking.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub home: PathBuf,
}

impl Credentials {
    /// Resolves `USER[:GROUP]` (names or numeric ids) and the user's supplementary groups.
    pub fn resolve(spec: &str) -> Result<Credentials> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let lookup = |u: &str| -> Result<Option<User>> {
            let found = match u.parse::<u32>() {
                Ok(n) => User::from_uid(Uid::from_raw(n)),
                Err(_) => User::from_name(u),
            };
            found.map_err(|e| Error::Os(format!("looking up user {u:?}: {e}")))
        };
        let user = lookup(u)?.ok_or_else(|| Error::UnknownUser(u.to_string()))?;
        let gid = match g {
            None | Some("") => user.gid,
            Some(g) => {
                let found = match g.parse::<u32>() {
                    Ok(n) => Group::from_gid(Gid::from_raw(n)),
                    Err(_) => Group::from_name(g),
                };
                found
                    .map_err(|e| Error::Os(format!("looking up group {g:?}: {e}")))?
                    .ok_or_else(|| Error::UnknownGroup(g.to_string()))?
                    .gid
            }
        };
        let cname =
            CString::new(user.name.clone()).map_err(|_| Error::UnknownUser(user.name.clone()))?;
        let mut groups = nix::unistd::getgrouplist(&cname, gid).unwrap_or_else(|_| vec![gid]);
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        Ok(Credentials {
            user: user.name,
            uid: user.uid,
            gid,
            groups,
            home: user.dir,
        })
    }
}

/// What to run and how.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    pub argv: &'a [String],
    pub cwd: &'a Path,
    /// Extra environment, applied over the base one.
    pub env: &'a [(String, String)],
    /// The base environment: the caller's when `None`; else exactly this (a restart from
    /// the record gets the environment of the first start, not the restarting caller's).
    pub base_env: Option<&'a [(String, String)]>,
    /// The executable to run, resolved when the service was first started (`argv[0]` is
    /// still passed as given); `None` searches PATH now.
    pub program: Option<&'a Path>,
    pub log: &'a Path,
    /// Where stdout and stderr go instead of `log`: the logger's pipe.
    pub output: Option<&'a File>,
    pub user: Option<&'a Credentials>,
}

/// A freshly spawned service: our child, a session leader.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub handle: Handle,
}

impl Spawned {
    pub fn pid(&self) -> i32 {
        self.handle.pid
    }
}

/// Where `program` would be found now: as given if it names a path (relative to `cwd`),
/// else the first executable file of that name in `path` (a PATH value). `None` if there
/// is none (the spawn then reports "command not found").
pub fn resolve_program(program: &str, path: Option<&str>, cwd: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        return Some(cwd.join(program));
    }
    let path = path.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':').find_map(|dir| {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(dir)
        };
        let candidate = cwd.join(dir).join(program);
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

/// Opens (creating if needed) the log for appending. The log may sit in a directory the
/// service's user can write, so it is opened the careful way (no symlink, FIFO or extra
/// hard link), and only a log this call created is given to `owner` (so the service can
/// reopen it on SIGHUP/USR1): chowning whatever is there would hand over a file planted
/// in its place.
pub fn open_log(path: &Path, owner: Option<&Credentials>) -> Result<File> {
    let (file, created) = match untrusted::open_append(path, 0o640) {
        Ok(Ok(opened)) => opened,
        Ok(Err(refused)) => {
            return Err(Error::io(
                path,
                io::Error::other(format!("refusing the log: it {refused}")),
            ))
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    if let (Some(c), true) = (owner, created) {
        nix::unistd::fchown(&file, Some(c.uid), Some(c.gid))
            .map_err(|e| Error::io(path, crate::error::errno(e)))?;
    }
    Ok(file)
}

/// Spawns the service detached. See the module docs for what "detached" means.
///
/// `before_exec` runs once the child exists — in its own session, with its PID and start
/// time known — but before it can run the command: the child waits on a pipe for the go
/// that follows a successful `before_exec`. pm-start records the service there, so a
/// pm-start killed at any moment leaves either a recorded service or none at all: if this
/// process dies (or `before_exec` fails) first, the pipe closes and the child exits
/// without running anything.
pub fn spawn(
    spec: &SpawnSpec<'_>,
    before_exec: &mut dyn FnMut(&Handle) -> Result<()>,
) -> Result<Spawned> {
    let program = spec
        .argv
        .first()
        .ok_or_else(|| Error::InvalidArgument {
            what: "command",
            value: String::new(),
            reason: "empty".into(),
        })?
        .clone();
    // Checked here so a missing directory is not reported as a missing command.
    if !spec.cwd.is_dir() {
        return Err(Error::io(
            spec.cwd,
            io::Error::new(io::ErrorKind::NotFound, "working directory does not exist"),
        ));
    }
    let log = match spec.output {
        Some(out) => out.try_clone().map_err(|e| Error::io(spec.log, e))?,
        None => open_log(spec.log, spec.user)?,
    };
    let log2 = log.try_clone().map_err(|e| Error::io(spec.log, e))?;
    let mut cmd = match spec.program {
        Some(exe) => {
            let mut c = Command::new(exe);
            std::os::unix::process::CommandExt::arg0(&mut c, &program);
            c
        }
        None => Command::new(&program),
    };
    if let Some(base) = spec.base_env {
        cmd.env_clear().envs(base.iter().map(|(k, v)| (k, v)));
    }
    cmd.args(&spec.argv[1..])
        .current_dir(spec.cwd)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .env_remove("NOTIFY_SOCKET");
    for (k, v) in spec.env {
        cmd.env(k, v);
    }
    if let Some(c) = spec.user {
        cmd.env("USER", &c.user)
            .env("LOGNAME", &c.user)
            .env("HOME", &c.home);
    }
    let creds = spec.user.cloned();
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(errno_os);
    let (pid_r, pid_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (pid_w_raw, go_r_raw, go_w_raw) = (pid_w.as_raw_fd(), go_r.as_raw_fd(), go_w.as_raw_fd());
    // SAFETY: the hook runs between fork and exec and calls only async-signal-safe
    // functions (setsid, signal, sigprocmask, getpid, write, read, close,
    // setgroups/setgid/setuid, fcntl); nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
            // Signals ignored by whoever ran pm-start (a background job of a script ignores
            // INT and QUIT, nohup ignores HUP) must not stay ignored in the service, or a
            // `--stop-signal QUIT` would never be acted on. Exec resets only caught ones.
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(io::Error::from)?;
            // Say who we are, then wait for the go. Only the parent holds the go pipe's
            // write end (our copy is closed first), so its death reads as EOF.
            let me = libc::getpid().to_ne_bytes();
            if libc::write(pid_w_raw, me.as_ptr().cast(), me.len()) != me.len() as isize {
                return Err(io::Error::last_os_error());
            }
            libc::close(go_w_raw);
            let mut go = [0u8; 1];
            loop {
                let n = libc::read(go_r_raw, go.as_mut_ptr().cast(), 1);
                if n == 1 {
                    break;
                }
                if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(io::Error::from_raw_os_error(libc::ECANCELED));
            }
            if let Some(c) = &creds {
                nix::unistd::setgroups(&c.groups).map_err(io::Error::from)?;
                nix::unistd::setgid(c.gid).map_err(io::Error::from)?;
                nix::unistd::setuid(c.uid).map_err(io::Error::from)?;
            }
            crate::sys::cloexec_from(3)
        });
    }
    let exec_error = |e: io::Error| {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => ExecFailure::NotFound,
            io::ErrorKind::PermissionDenied => ExecFailure::PermissionDenied,
            _ => ExecFailure::Other,
        };
        Error::Exec {
            program: program.clone(),
            kind,
            err: e,
        }
    };
    // std's spawn returns only once the child has exec'd (or failed to), so it runs on a
    // thread of its own while this one hears from the child and records it.
    std::thread::scope(|scope| {
        let spawner = scope.spawn(move || {
            let r = cmd.spawn();
            drop(pid_w); // with the child's copy gone too: EOF if it never said its PID
            r
        });
        let mut go_w = Some(go_w);
        let gate = (|| -> Result<Handle> {
            let mut buf = [0u8; 4];
            File::from(pid_r)
                .read_exact(&mut buf)
                .map_err(|e| Error::Os(format!("{program}: the child did not start: {e}")))?;
            let handle = Handle::of_child(i32::from_ne_bytes(buf))?;
            before_exec(&handle)?;
            let go = go_w.take().map(File::from);
            go.ok_or_else(|| Error::Os("go pipe".into()))?
                .write_all(b"g")
                .map_err(|e| Error::Os(format!("{program}: releasing the child: {e}")))?;
            Ok(handle)
        })();
        drop(go_w); // on failure: EOF, and the child exits without exec
        let child = spawner
            .join()
            .map_err(|_| Error::Os("the spawning thread panicked".into()))?;
        match (gate, child) {
            (Ok(handle), Ok(child)) => Ok(Spawned { child, handle }),
            (Ok(_), Err(e)) => Err(exec_error(e)),
            (Err(e), Ok(mut child)) => {
                // Cannot happen (no go, no exec), but never leave it running.
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
            (Err(e), Err(_)) => Err(e),
        }
    })
}

/// Starts the logger of `--log-max-size`/`--log-timestamps` (in the start's cgroup,
/// carrying its marker) and returns the pipe the service writes to. `status` is where the
/// logger says that the log is failing ([`crate::logger::status_path`]).
pub fn logger(
    name: &str,
    log: &Path,
    rotation: &crate::logger::Rotation,
    creds: Option<&Credentials>,
    run_id: &str,
    cg: Option<&crate::cgroup::Cgroup>,
    status: &Path,
) -> Result<File> {
    // The log is checked (and created, and given to --user) here, the way a log the
    // service writes itself is: a refused log fails the start instead of a silent logger.
    drop(open_log(log, creds)?);
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(errno_os)?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("pm-start")
        .arg("--pm-logger")
        .args(crate::logger::argv(
            log,
            rotation,
            creds.map(|c| (c.uid.as_raw(), c.gid.as_raw())),
            status,
        ))
        .stdin(File::from(r))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("PM_NAME", name)
        .env(crate::record::RUN_ID_VAR, run_id)
        .current_dir("/");
    // SAFETY: setsid and close_range/fcntl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            crate::sys::cloexec_from(3)
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::Os(format!("starting the log writer: {e}")))?;
    if let Some(cg) = cg {
        cg.join(child.id() as i32)?;
    }
    Ok(File::from(w))
}

fn errno_os(e: nix::errno::Errno) -> Error {
    Error::Os(format!("pipe: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Stat;
    use std::time::{Duration, Instant};

    #[derive(Debug)]
    struct Guard(Spawned);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0.pid()),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.0.child.wait();
        }
    }

    fn run(argv: &[&str], dir: &Path, env: &[(String, String)]) -> Result<Guard> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        spawn(
            &SpawnSpec {
                argv: &argv,
                cwd: dir,
                env,
                base_env: None,
                program: None,
                log: &dir.join("svc.log"),
                output: None,
                user: None,
            },
            &mut |_| Ok(()),
        )
        .map(Guard)
    }

    fn wait_for(mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "condition never held"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn child_is_a_session_leader_with_exactly_fds_0_1_2() {
        let dir = tempfile::tempdir().unwrap();
        // A leaked fd in the parent (not CLOEXEC) must not reach the child.
        let leaked = File::open("/dev/null").unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&leaked);
        nix::fcntl::fcntl(
            &leaked,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .unwrap();
        let g = run(&["sleep", "100"], dir.path(), &[]).unwrap();
        let pid = g.0.pid();
        wait_for(|| Stat::read(pid).unwrap().is_some_and(|s| s.comm == "sleep"));
        let s = Stat::read(pid).unwrap().unwrap();
        assert_eq!(s.pid, s.pgrp);
        assert_eq!(s.pid, s.session);
        let fds = || -> Vec<i32> {
            let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        // The kernel renames the task a moment before it closes the CLOEXEC fds, so give
        // exec time to finish; a real leak never closes and fails here.
        let t = Instant::now();
        while fds() != [0, 1, 2] && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(fds(), vec![0, 1, 2], "fd {raw} leaked?");
        let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
        assert_eq!(stdin, PathBuf::from("/dev/null"));
        let out = std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
        assert_eq!(out, dir.path().join("svc.log").canonicalize().unwrap());
        drop(leaked);
    }

    #[test]
    fn output_env_and_cwd_reach_the_service() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("svc.log"), "old line\n").unwrap();
        let env = vec![("GREETING".to_string(), "hello there".to_string())];
        let mut g = run(
            &["sh", "-c", "echo \"$GREETING\"; pwd; echo oops >&2"],
            dir.path(),
            &env,
        )
        .unwrap();
        let status = g.0.child.wait().unwrap();
        assert!(status.success());
        let log = std::fs::read_to_string(dir.path().join("svc.log")).unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(
            log,
            format!("old line\nhello there\n{}\noops\n", cwd.display())
        );
    }

    #[test]
    fn nothing_runs_before_the_caller_recorded_it_nor_when_recording_fails() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let argv: Vec<String> = ["touch", marker.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let spec = SpawnSpec {
            argv: &argv,
            cwd: dir.path(),
            env: &[],
            base_env: None,
            program: None,
            log: &dir.path().join("svc.log"),
            output: None,
            user: None,
        };
        let e = spawn(&spec, &mut |h| {
            // The child exists, leads its own session, and has not run the command.
            let s = Stat::read(h.pid).unwrap().unwrap();
            assert_eq!((s.pgrp, s.session), (h.pid, h.pid));
            assert!(!marker.exists());
            Err(Error::Os("record write failed".into()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("record write failed"), "{e}");
        assert!(
            !marker.exists(),
            "the command ran although it was never recorded"
        );
        let mut seen = None;
        let mut g = spawn(&spec, &mut |h| {
            seen = Some(h.pid);
            Ok(())
        })
        .map(Guard)
        .unwrap();
        assert_eq!(seen, Some(g.0.pid()));
        assert!(g.0.child.wait().unwrap().success());
        assert!(marker.exists());
    }

    #[test]
    fn exec_failures_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(&["/nonexistent/prog"], dir.path(), &[]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Exec {
                    kind: ExecFailure::NotFound,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("not found"), "{e}");
        let e = run(&["no-such-command-pm-test"], dir.path(), &[]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Exec {
                    kind: ExecFailure::NotFound,
                    ..
                }
            ),
            "{e}"
        );
        let script = dir.path().join("noexec.sh");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let e = run(&[script.to_str().unwrap()], dir.path(), &[]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Exec {
                    kind: ExecFailure::PermissionDenied,
                    ..
                }
            ),
            "{e}"
        );
        let e = run(&["true"], &dir.path().join("missing"), &[]).unwrap_err();
        assert!(e.to_string().contains("working directory"), "{e}");
    }

    #[test]
    fn resolves_users_and_refuses_unknown_ones() {
        let root = Credentials::resolve("root").unwrap();
        assert_eq!(root.uid.as_raw(), 0);
        assert_eq!(Credentials::resolve("0:0").unwrap().gid.as_raw(), 0);
        assert!(matches!(
            Credentials::resolve("no-such-user-pm").unwrap_err(),
            Error::UnknownUser(_)
        ));
        assert!(matches!(
            Credentials::resolve("root:no-such-group-pm").unwrap_err(),
            Error::UnknownGroup(_)
        ));
    }
}
