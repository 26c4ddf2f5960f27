//! Starting a service detached: its own session, no terminal, no inherited fds.
//!
//! Every inherited fd >= 3 is closed at exec, so `x=$(pm-start ...)`, a Make jobserver or a
//! CI pipe never waits on the service. std's `Command` reports exec failures through a
//! CLOEXEC pipe, which is why fds are *marked* close-on-exec rather than closed early: the
//! caller still learns "not found" or "permission denied" instead of a silent exit 127.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{Gid, Group, Uid, User};

use crate::error::{Error, ExecFailure, Result};
use crate::process::Handle;

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
    /// Extra environment, applied over the caller's.
    pub env: &'a [(String, String)],
    pub log: &'a Path,
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

/// Opens (creating if needed) the log for appending; with `owner`, a new log is given to
/// that user so the service can reopen it (e.g. on SIGHUP/USR1 log reopen).
pub fn open_log(path: &Path, owner: Option<&Credentials>) -> Result<File> {
    let file = File::options()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    if let Some(c) = owner {
        nix::unistd::fchown(&file, Some(c.uid), Some(c.gid))
            .map_err(|e| Error::io(path, crate::error::errno(e)))?;
    }
    Ok(file)
}

/// Spawns the service detached. See the module docs for what "detached" means.
pub fn spawn(spec: &SpawnSpec<'_>) -> Result<Spawned> {
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
    let log = open_log(spec.log, spec.user)?;
    let log2 = log.try_clone().map_err(|e| Error::io(spec.log, e))?;
    let mut cmd = Command::new(&program);
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
    // SAFETY: the hook runs between fork and exec and calls only async-signal-safe
    // functions (setsid, signal, sigprocmask, setgroups/setgid/setuid, fcntl); nothing
    // allocates.
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
            if let Some(c) = &creds {
                nix::unistd::setgroups(&c.groups).map_err(io::Error::from)?;
                nix::unistd::setgid(c.gid).map_err(io::Error::from)?;
                nix::unistd::setuid(c.uid).map_err(io::Error::from)?;
            }
            crate::sys::cloexec_from(3)
        });
    }
    let child = cmd.spawn().map_err(|e| {
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
    })?;
    let handle = Handle::of_child(child.id() as i32)?;
    Ok(Spawned { child, handle })
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
        spawn(&SpawnSpec {
            argv: &argv,
            cwd: dir,
            env,
            log: &dir.join("svc.log"),
            user: None,
        })
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
