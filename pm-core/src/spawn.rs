//! Starting a service detached: its own session, no terminal, no inherited fds, born in
//! its cgroup.
//!
//! The child is made by our own clone3/fork and exec path (`sys::spawn_exec`),
//! not std's `Command`, because only clone3 can create a process inside a cgroup. Every
//! inherited fd >= 3 is closed at exec, so `x=$(pm-start ...)`, a Make jobserver or a CI
//! pipe never waits on the service; they are *marked* close-on-exec rather than closed, so
//! the exec-error pipe still tells the caller "not found" or "permission denied" instead of
//! a silent exit 127.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

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
    /// Killed (SIGKILL) when the spawning process dies: a oneshot task under pm-up, which
    /// no record names.
    pub die_with_parent: bool,
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

/// Our child, born by [`spawn`]: reaped by [`Child::wait`] or [`Child::try_wait`] only, so
/// until then its PID cannot name another process.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    status: Option<ExitStatus>,
}

impl Child {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for it to exit (at once if it already has been reaped).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(st) = self.status {
            return Ok(st);
        }
        let raw = crate::sys::waitpid(self.pid, false)?.unwrap_or(0);
        let st = ExitStatus::from_raw(raw);
        self.status = Some(st);
        Ok(st)
    }

    /// Reaps it if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = crate::sys::waitpid(self.pid, true)?.map(ExitStatus::from_raw);
        }
        Ok(self.status)
    }

    /// SIGKILL, unless it has been reaped (then its PID may be another process's).
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(io::Error::from)
    }
}

/// The environment of a spawn, as `KEY=VALUE` strings: `base` (the caller's when `None`)
/// without its `NOTIFY_SOCKET`, then `set` over it; one entry per key, the last value winning
/// (as std's `Command` built it), so the PATH searched is the PATH the service sees.
fn environment(base: Option<&[(String, String)]>, set: &[(&OsStr, &OsStr)]) -> Vec<OsString> {
    let base: Vec<(OsString, OsString)> = match base {
        Some(b) => b.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        None => std::env::vars_os().collect(),
    };
    let mut env: Vec<(OsString, OsString)> = Vec::with_capacity(base.len() + set.len());
    let given = base
        .into_iter()
        .filter(|(k, _)| k != "NOTIFY_SOCKET")
        .chain(set.iter().map(|(k, v)| (k.into(), v.into())));
    for (k, v) in given {
        match env.iter_mut().find(|(ek, _)| *ek == k) {
            Some(e) => e.1 = v,
            None => env.push((k, v)),
        }
    }
    env.into_iter()
        .map(|(mut k, v)| {
            k.push("=");
            k.push(v);
            k
        })
        .collect()
}

/// Spawns the service detached, in `cgroup` if given. See the module docs for what
/// "detached" means.
///
/// `before_exec` runs once the child exists — in its own session and its cgroup, with
/// its PID and start time known — but before it can run the command: the child waits on
/// a pipe for the go that follows a successful `before_exec`. pm-start records the
/// service there, so a pm-start killed at any moment leaves either a recorded service or
/// none at all: if this process dies (or `before_exec` fails) first, the pipe closes and
/// the child exits without running anything.
pub fn spawn(
    spec: &SpawnSpec<'_>,
    cgroup: Option<&crate::cgroup::Cgroup>,
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
    let log = match spec.output {
        Some(out) => out.try_clone().map_err(|e| Error::io(spec.log, e))?,
        None => open_log(spec.log, spec.user)?,
    };
    let mut set: Vec<(&OsStr, &OsStr)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    if let Some(c) = spec.user {
        let user: &OsStr = c.user.as_ref();
        set.extend([
            ("USER".as_ref(), user),
            ("LOGNAME".as_ref(), user),
            ("HOME".as_ref(), c.home.as_os_str()),
        ]);
    }
    let env = environment(spec.base_env, &set);
    // Without a resolved program the child searches PATH (the one it will run with).
    let search = env
        .iter()
        .rev()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .map(std::ffi::OsStr::from_bytes);
    let exe = spec.program.unwrap_or(Path::new(&program));
    if exe.as_os_str().is_empty() {
        return Err(exec_error(io::Error::from(io::ErrorKind::NotFound)));
    }
    let null = File::open("/dev/null").map_err(|e| Error::io("/dev/null", e))?;
    let argv: Vec<OsString> = spec.argv.iter().map(OsString::from).collect();
    let plan = crate::sys::ExecPlan::new(
        exe,
        search,
        &argv,
        &env,
        Some(spec.cwd),
        [null.as_fd(), log.as_fd(), log.as_fd()],
        spec.user.map(|c| {
            let groups = c.groups.iter().map(|g| g.as_raw()).collect();
            (groups, c.gid.as_raw(), c.uid.as_raw())
        }),
        true,
    )
    .map_err(exec_error)?;
    let plan = if spec.die_with_parent {
        plan.die_with_parent()
    } else {
        plan
    };
    drop((log, null));
    let (child, handle) = launch(&plan, cgroup, &program, before_exec).map_err(|e| match e {
        Launch::Exec(e) => exec_error(e),
        Launch::Pm(e) => e,
    })?;
    Ok(Spawned { child, handle })
}

/// Why a [`launch`] failed: the child's own exec (or a step before it), or pm's side.
enum Launch {
    Exec(io::Error),
    Pm(Error),
}

impl From<Error> for Launch {
    fn from(e: Error) -> Launch {
        Launch::Pm(e)
    }
}

/// Creates the child of `plan` (in `cgroup` if given) behind its gate: `before_exec`
/// runs once it exists, in its session and its cgroup, and before it may exec; then
/// waits for the exec. Every failure leaves no child behind, reaped.
fn launch(
    plan: &crate::sys::ExecPlan,
    cgroup: Option<&crate::cgroup::Cgroup>,
    program: &str,
    before_exec: &mut dyn FnMut(&Handle) -> Result<()>,
) -> std::result::Result<(Child, Handle), Launch> {
    let cg_dir = match cgroup {
        Some(cg) => Some(File::open(cg.path()).map_err(|e| Error::io(cg.path(), e))?),
        None => None,
    };
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(errno_os);
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let gate = crate::sys::Gate {
        ready: ready_w.as_fd(),
        go: go_r.as_fd(),
        go_w: go_w.as_fd(),
    };
    let born = crate::sys::spawn_exec(plan, cg_dir.as_ref().map(|d| d.as_fd()), Some(&gate))
        .map_err(|e| Error::Os(format!("{program}: cannot create the process: {e}")))?;
    drop((ready_w, go_r, cg_dir));
    let mut child = Child {
        pid: born.pid,
        status: None,
    };
    let pidfd = born.pidfd;
    let gate = (|| -> Result<Handle> {
        let mut buf = [0u8; 1];
        File::from(ready_r)
            .read_exact(&mut buf)
            .map_err(|e| Error::Os(format!("{program}: the child did not start: {e}")))?;
        let handle = Handle::of_child_fd(born.pid, pidfd)?;
        if let (Some(cg), false) = (cgroup, born.in_cgroup) {
            cg.join(handle.pid)?;
        }
        before_exec(&handle)?;
        File::from(go_w)
            .write_all(b"g")
            .map_err(|e| Error::Os(format!("{program}: releasing the child: {e}")))?;
        Ok(handle)
    })();
    // On failure go_w is closed by now: the child reads EOF and exits without exec.
    let handle = match gate {
        Ok(h) => h,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            // A child that failed before its gate (dup2, chdir, setsid) said why.
            return Err(match exec_result(born.errors) {
                Some(x) if x.raw_os_error() != Some(libc::ECANCELED) => Launch::Exec(x),
                _ => Launch::Pm(e),
            });
        }
    };
    match exec_result(born.errors) {
        None => Ok((child, handle)),
        Some(e) => {
            let _ = child.wait();
            Err(Launch::Exec(e))
        }
    }
}

/// What the exec-error pipe of a spawn says: `None` at EOF (the child exec'd).
fn exec_result(errors: std::os::fd::OwnedFd) -> Option<io::Error> {
    let mut buf = Vec::with_capacity(4);
    match File::from(errors).read_to_end(&mut buf) {
        Ok(_) if buf.is_empty() => None,
        Ok(_) => Some(match <[u8; 4]>::try_from(&buf[..]) {
            Ok(b) => io::Error::from_raw_os_error(i32::from_ne_bytes(b)),
            Err(_) => io::Error::other("garbled exec status"),
        }),
        Err(e) => Some(e),
    }
}

/// Starts the logger of `--log-max-size`/`--log-timestamps` (in the start's cgroup,
/// carrying its marker) and returns the pipe the service writes to. `status` is where the
/// logger says that the log is failing ([`crate::state::StateDir::log_status_path`]).
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
    let fail = |e: io::Error| Error::Os(format!("starting the log writer: {e}"));
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(errno_os)?;
    let null = File::open("/dev/null").map_err(|e| Error::io("/dev/null", e))?;
    let mut argv: Vec<OsString> = vec!["pm-start".into(), "--pm-logger".into()];
    argv.extend(crate::logger::argv(
        log,
        rotation,
        creds.map(|c| (c.uid.as_raw(), c.gid.as_raw())),
        status,
    ));
    let env = environment(
        None,
        &[
            ("PM_NAME".as_ref(), name.as_ref()),
            (crate::record::RUN_ID_VAR.as_ref(), run_id.as_ref()),
        ],
    );
    let plan = crate::sys::ExecPlan::new(
        Path::new("/proc/self/exe"),
        None,
        &argv,
        &env,
        Some(Path::new("/")),
        [r.as_fd(), null.as_fd(), null.as_fd()],
        None,
        false,
    )
    .map_err(fail)?;
    drop(null);
    // Behind a gate like the service, so it never runs outside the cgroup; it is not
    // waited for (it ends at the service's EOF, after this process, as a rule).
    launch(&plan, cg, "the log writer", &mut |_| Ok(())).map_err(|e| match e {
        Launch::Exec(e) => fail(e),
        Launch::Pm(e) => e,
    })?;
    drop(r);
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
                die_with_parent: false,
            },
            None,
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
            die_with_parent: false,
        };
        let e = spawn(&spec, None, &mut |h| {
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
        let mut g = spawn(&spec, None, &mut |h| {
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
    fn path_is_searched_by_the_child_as_the_user_like_execvp() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let Ok(nobody) = Credentials::resolve("nobody") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(dir.path(), 0o755);
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        mode(&out, 0o777);
        // The same name in a directory only root may enter, then in a public one; neither
        // has a #! line (ENOEXEC: run by /bin/sh, as execvp does).
        for (sub, m) in [("hidden", 0o700), ("public", 0o755)] {
            let d = dir.path().join(sub);
            std::fs::create_dir(&d).unwrap();
            let probe = d.join("pm-probe-x");
            std::fs::write(&probe, format!("echo {sub} > {}/$(id -u)\n", out.display())).unwrap();
            mode(&probe, 0o755);
            mode(&d, m);
        }
        let path = format!(
            "{}:{}:/usr/bin:/bin",
            dir.path().join("hidden").display(),
            dir.path().join("public").display()
        );
        let argv = vec!["pm-probe-x".to_string()];
        for user in [Some(&nobody), None] {
            let env = [("PATH".to_string(), path.clone())];
            let mut g = Guard(
                spawn(
                    &SpawnSpec {
                        argv: &argv,
                        cwd: dir.path(),
                        env: &env,
                        base_env: Some(&[]),
                        program: None,
                        log: &dir.path().join("svc.log"),
                        output: None,
                        user,
                        die_with_parent: false,
                    },
                    None,
                    &mut |_| Ok(()),
                )
                .unwrap(),
            );
            assert!(g.0.child.wait().unwrap().success());
        }
        let read = |uid: u32| std::fs::read_to_string(out.join(uid.to_string())).unwrap();
        assert_eq!(read(nobody.uid.as_raw()), "public\n");
        assert_eq!(read(0), "hidden\n");
    }

    #[test]
    fn one_entry_per_variable_the_last_winning_and_only_our_notify_socket() {
        let base: Vec<(String, String)> = [("PATH", "/a"), ("X", "1"), ("PATH", "/b")]
            .iter()
            .chain(&[("NOTIFY_SOCKET", "/run/s")])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let set: [(&OsStr, &OsStr); 2] = [
            ("X".as_ref(), "2".as_ref()),
            ("NOTIFY_SOCKET".as_ref(), "/x".as_ref()),
        ];
        assert_eq!(
            environment(Some(&base), &set),
            ["PATH=/b", "X=2", "NOTIFY_SOCKET=/x"]
        );
        assert_eq!(environment(Some(&base), &[]), ["PATH=/b", "X=1"]);
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
