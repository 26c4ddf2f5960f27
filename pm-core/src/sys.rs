//! The system calls pm makes beyond std and nix, in one place: pidfds and the sysconf
//! values from rustix, the terminal size from terminal_size, and the raw calls no crate
//! wraps: `clone3(CLONE_INTO_CGROUP)` and the child's side of a spawn up to exec, and
//! `close_range(CLOSE_RANGE_CLOEXEC)`.
//!
//! Everything `unsafe` in pm-core's system interface lives here, behind safe functions
//! with the same error conventions as the rest of the crate.

use std::ffi::CString;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::time::{clock_gettime, ClockId};

/// `pidfd_open(2)`: a file descriptor that refers to exactly one process, never to a later
/// process that reuses its PID.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    pidfd_open(pid, PidfdFlags::empty()).map_err(io::Error::from)
}

/// `pidfd_send_signal(2)`.
pub fn pidfd_send_signal(fd: BorrowedFd<'_>, sig: Signal) -> io::Result<()> {
    let sig = rustix::process::Signal::from_named_raw(sig as i32)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    rustix::process::pidfd_send_signal(fd, sig).map_err(io::Error::from)
}

/// Marks every fd >= `first` close-on-exec, in a child before exec.
///
/// Marking instead of closing keeps the exec-error pipe working (it is already CLOEXEC),
/// so exec failures are still reported as not-found / permission denied.
/// Uses `close_range(CLOSE_RANGE_CLOEXEC)` (Linux 5.11) and falls back to a loop over the
/// fd limit. Async-signal-safe: no allocation.
pub fn cloexec_from(first: i32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: syscall with integer arguments only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // SAFETY: sysconf has no memory side effects.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let max = if max <= 0 {
        65536
    } else {
        max.min(1 << 20) as i32
    };
    for fd in first..max {
        // SAFETY: fcntl on a possibly-closed fd just fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Clock ticks per second, the unit of `/proc/PID/stat` times.
pub fn clk_tck() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Bytes per page, the unit of `/proc/PID/stat` rss.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

fn clock(id: ClockId) -> Duration {
    clock_gettime(id)
        .map(Duration::from)
        .unwrap_or(Duration::ZERO)
}

/// Time since boot, including suspend: the clock `/proc/PID/stat` start times use.
pub fn boottime() -> Duration {
    clock(ClockId::CLOCK_BOOTTIME)
}

/// Wall-clock time as a Duration since the epoch.
pub fn realtime() -> Duration {
    clock(ClockId::CLOCK_REALTIME)
}

/// Columns of the terminal on `fd`, if it is one.
pub fn terminal_width(fd: BorrowedFd<'_>) -> Option<usize> {
    terminal_size::terminal_size_of(fd).map(|(w, _)| usize::from(w.0))
}

/// Sets each of `signals` to SIG_IGN (errors ignored: these are all catchable signals).
pub fn ignore_signals(signals: &[Signal]) {
    use nix::sys::signal::{signal, SigHandler};
    for s in signals {
        // SAFETY: SIG_IGN installs no handler, so no code of ours runs in signal context.
        let _ = unsafe { signal(*s, SigHandler::SigIgn) };
    }
}

/// Puts back the default action of `sig` (errors ignored).
pub fn default_action(sig: Signal) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing the default action runs no code of ours in a handler.
    let _ = unsafe { sigaction(sig, &default) };
}

/// Sets up a readiness probe's child between fork and exec: its own process group (so a
/// timed-out probe is killed whole), `lifeline` as fd 3 (the probe wrapper exits when pm's
/// end closes), then the service's credentials.
pub fn probe_pre_exec(
    cmd: &mut std::process::Command,
    lifeline: i32,
    creds: Option<(Vec<nix::unistd::Gid>, nix::unistd::Gid, nix::unistd::Uid)>,
) {
    // SAFETY: signal, setpgid, dup2, fcntl and setgroups/setgid/setuid are async-signal-safe;
    // nothing allocates.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            // dup2 onto itself keeps close-on-exec: clear it by hand in that case.
            let fd = if lifeline == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(lifeline, 3)
            };
            // Not inherited from pm-up's child (which ignores it): the probe runs as the
            // service would.
            libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            if libc::setpgid(0, 0) != 0 || fd < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some((groups, gid, uid)) = &creds {
                nix::unistd::setgroups(groups).map_err(io::Error::from)?;
                nix::unistd::setgid(*gid).map_err(io::Error::from)?;
                nix::unistd::setuid(*uid).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
}

/// `fork(2)`, refused unless this process has a single thread: only then may the child
/// run arbitrary code (no lock of another thread is held forever in it).
pub fn fork_single_threaded() -> nix::Result<nix::unistd::ForkResult> {
    if single_threaded() != Some(true) {
        return Err(nix::errno::Errno::EAGAIN);
    }
    // SAFETY: this process has one thread (checked above), so the child inherits no lock
    // held by another thread and may allocate and run any code.
    unsafe { nix::unistd::fork() }
}

/// Has this process one thread (from /proc/self/stat)?
fn single_threaded() -> Option<bool> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = s.rsplit_once(')')?.1;
    let threads = after.split_whitespace().nth(17)?.parse::<u32>().ok()?;
    Some(threads == 1)
}

/// [`fork_single_threaded`], the child born in the cgroup whose directory `cgroup` is
/// (clone3 `CLONE_INTO_CGROUP`: nothing migrates, so no wait for an RCU grace period).
/// Where the kernel refuses that, or `PM_CLONE3=off`, a plain fork, and the child moves
/// itself into the cgroup (best effort: the slow way, on the child's time).
pub fn fork_single_threaded_into(
    cgroup: Option<BorrowedFd<'_>>,
) -> nix::Result<nix::unistd::ForkResult> {
    use nix::unistd::{ForkResult, Pid};
    use std::os::fd::AsRawFd;
    let Some(cg) = cgroup else {
        return fork_single_threaded();
    };
    let moved = || {
        let forked = fork_single_threaded()?;
        if let ForkResult::Child = forked {
            let procs = nix::fcntl::openat(
                cg,
                "cgroup.procs",
                nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            );
            if let Ok(procs) = procs {
                let me = std::process::id().to_string();
                let _ = nix::unistd::write(&procs, me.as_bytes());
            }
        }
        Ok(forked)
    };
    if !clone3_allowed() {
        return moved();
    }
    if single_threaded() != Some(true) {
        return Err(nix::errno::Errno::EAGAIN);
    }
    let mut no_pidfd = -1;
    // SAFETY: as in fork_single_threaded: one thread, so the child may run any code.
    match unsafe { clone3_fork(CLONE_INTO_CGROUP, cg.as_raw_fd() as u64, &mut no_pidfd) } {
        Ok(0) => Ok(ForkResult::Child),
        Ok(pid) => Ok(ForkResult::Parent {
            child: Pid::from_raw(pid),
        }),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(nix::errno::Errno::EAGAIN),
        Err(_) => moved(),
    }
}

/// `PM_CLONE3=off` takes the fork path (for tests of the fallback).
fn clone3_allowed() -> bool {
    std::env::var_os("PM_CLONE3").is_none_or(|v| v != "off")
}

/// clone3(2) as a fork with options (no `CLONE_VM`): `flags`, the cgroup fd `cgroup`
/// (with `CLONE_INTO_CGROUP`), the pidfd stored in `pidfd` (with `CLONE_PIDFD`). Returns
/// the child's PID here and 0 in the child.
///
/// # Safety
/// As for fork(2): the child continues from here with a copy of this address space, and
/// may run only what is safe in a child of this process (anything, if it has one thread).
unsafe fn clone3_fork(flags: u64, cgroup: u64, pidfd: &mut libc::c_int) -> io::Result<i32> {
    let mut args = CloneArgs {
        flags,
        pidfd: pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup,
        ..CloneArgs::default()
    };
    // SAFETY: a valid clone_args of the size given; without CLONE_VM the child gets its
    // own copy of memory (the caller's contract covers what it runs).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

/// Drops this process's mappings of program text (pm-start's and the libraries') before it
/// goes idle: a monitor sleeps for days and touches a few pages when it wakes, which
/// fault back in from the page cache. Only executable mappings, which are never written:
/// their pages are the same as the file's, so nothing is lost.
pub fn shed_text() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if perms != "r-xp" {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        let (Some(addr), Some(len)) = (
            std::ptr::NonNull::new(a as *mut std::ffi::c_void),
            std::num::NonZeroUsize::new(b.saturating_sub(a)),
        ) else {
            continue;
        };
        // SAFETY: a private, read-only, executable file mapping: MADV_DONTNEED only drops
        // the page-table entries; the next access maps the same file pages again.
        let _ = unsafe {
            nix::sys::mman::madvise(addr, len.get(), nix::sys::mman::MmapAdvise::MADV_DONTNEED)
        };
    }
}

/// What the child of [`spawn_exec`] does between its birth and exec, all built before the
/// clone: the child of a process that may have other threads must not allocate or take a
/// lock, so it only walks these ready-made C strings and fds with raw calls.
pub struct ExecPlan {
    /// The paths to try, in order (one, or a PATH search done by the child: as the
    /// service's user, after its chdir, the way execvp(3) searches).
    paths: Vec<CString>,
    argv: Vec<CString>,
    /// Per path, `argv` run by `/bin/sh`, for an executable without a `#!` line
    /// (ENOEXEC), the way execvp(3) and shells treat one.
    sh_argv: Vec<Vec<CString>>,
    env: Vec<CString>,
    cwd: Option<CString>,
    /// The fds that become 0, 1 and 2; each is >= 3 (see [`ExecPlan::new`]).
    stdio: [OwnedFd; 3],
    /// Supplementary groups, gid, uid to switch to.
    creds: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)>,
    /// Signal dispositions back to default (a service); else inherited. The mask is
    /// always emptied.
    reset_signals: bool,
    /// The PID of the process whose death SIGKILLs the child (`PR_SET_PDEATHSIG`), for a
    /// child nothing else would stop when that parent is killed.
    parent_death: Option<libc::pid_t>,
}

impl ExecPlan {
    /// `program` with a `/` is run as is; else it is looked up in `search` (a PATH value)
    /// by the child. Fails with `InvalidInput` on a NUL byte in any string. The stdio fds are
    /// duplicated above 2 here, so no `dup2` in the child can clobber a source that happens
    /// to be 0, 1 or 2 in this process (a pm-start run with stdin closed).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        program: &std::path::Path,
        search: Option<&std::ffi::OsStr>,
        argv: &[std::ffi::OsString],
        env: &[std::ffi::OsString],
        cwd: Option<&std::path::Path>,
        stdio: [BorrowedFd<'_>; 3],
        creds: Option<(Vec<u32>, u32, u32)>,
        reset_signals: bool,
    ) -> io::Result<ExecPlan> {
        use std::os::unix::ffi::OsStrExt;
        let c = |s: &std::ffi::OsStr| {
            CString::new(s.as_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{:?} contains a NUL byte", s),
                )
            })
        };
        let argv: Vec<CString> = argv.iter().map(|a| c(a)).collect::<io::Result<_>>()?;
        let dirs = search.unwrap_or("/usr/local/bin:/usr/bin:/bin".as_ref());
        let paths: Vec<CString> = if program.as_os_str().as_bytes().contains(&b'/') {
            vec![c(program.as_os_str())?]
        } else {
            dirs.as_bytes()
                .split(|b| *b == b':')
                .map(|d| {
                    let d = if d.is_empty() { b"." as &[u8] } else { d };
                    c(std::path::Path::new(std::ffi::OsStr::from_bytes(d))
                        .join(program)
                        .as_os_str())
                })
                .collect::<io::Result<_>>()?
        };
        let sh = c("/bin/sh".as_ref())?;
        let sh_argv = paths
            .iter()
            .map(|p| {
                let mut v = vec![sh.clone(), p.clone()];
                v.extend(argv.iter().skip(1).cloned());
                v
            })
            .collect();
        let high = |fd: BorrowedFd<'_>| dup_at_least(fd, 3);
        Ok(ExecPlan {
            paths,
            argv,
            sh_argv,
            env: env.iter().map(|e| c(e)).collect::<io::Result<_>>()?,
            cwd: cwd.map(|d| c(d.as_os_str())).transpose()?,
            stdio: [high(stdio[0])?, high(stdio[1])?, high(stdio[2])?],
            creds,
            reset_signals,
            parent_death: None,
        })
    }

    /// Has the child die with this process, the one that spawns it (see `parent_death`).
    pub fn die_with_parent(mut self) -> ExecPlan {
        self.parent_death = Some(std::process::id() as libc::pid_t);
        self
    }
}

/// `fcntl(F_DUPFD_CLOEXEC)`: a close-on-exec copy of `fd` numbered `min` or above.
fn dup_at_least(fd: BorrowedFd<'_>, min: i32) -> io::Result<OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a valid fd returns a new fd we then own.
    let fd = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by fcntl and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The gate of a spawn: the child says it exists (one byte on `ready`) and waits for one
/// byte on `go`; if `go`'s write end closes first (the parent died or gave up), it exits
/// without running anything. `go_w` is the parent's end, closed in the child.
pub struct Gate<'a> {
    pub ready: BorrowedFd<'a>,
    pub go: BorrowedFd<'a>,
    pub go_w: BorrowedFd<'a>,
}

/// A child born by [`spawn_exec`].
pub struct Born {
    pub pid: i32,
    /// From `CLONE_PIDFD`, when clone3 made it.
    pub pidfd: Option<OwnedFd>,
    /// Whether it was born in the requested cgroup (else the caller must move it there
    /// before the gate opens).
    pub in_cgroup: bool,
    /// Readable end of the exec-error pipe: EOF once the child has exec'd; else the errno
    /// of the step that failed (4 bytes), and the child exits 127.
    pub errors: OwnedFd,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Creates the child that runs `plan`: with `clone3(CLONE_INTO_CGROUP | CLONE_PIDFD)`
/// when `cgroup` (an fd of the cgroup's directory) is given, so it is in its cgroup from
/// its first instruction and the migration a write to `cgroup.procs` costs (a wait for
/// an RCU grace period, 10–15 ms) never happens. Where the kernel refuses that (before
/// 5.7, seccomp, a cgroup that may not take processes), clone3 without a cgroup, then
/// fork(2); `in_cgroup` says which. `PM_CLONE3=off` takes the fork path (for tests).
pub fn spawn_exec(
    plan: &ExecPlan,
    cgroup: Option<BorrowedFd<'_>>,
    gate: Option<&Gate<'_>>,
) -> io::Result<Born> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // Pointer arrays into the plan's strings, built before the clone (no allocation after).
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv, envp) = (ptrs(&plan.argv), ptrs(&plan.env));
    let sh_argv: Vec<_> = plan.sh_argv.iter().map(|v| ptrs(v)).collect();
    let child = || -> ! {
        // SAFETY: runs in the new child only; every call is async-signal-safe and reads
        // memory built before the clone.
        unsafe { child_main(plan, &argv, &sh_argv, &envp, gate, err_w.as_raw_fd()) }
    };
    let mut pidfd: libc::c_int = -1;
    let clone3 = |flags: u64, cg: u64, pidfd: &mut libc::c_int| {
        // SAFETY: the child only runs child_main (async-signal-safe, no allocation).
        unsafe { clone3_fork(flags, cg, pidfd) }
    };
    let allowed = clone3_allowed();
    let mut born = None;
    if allowed {
        if let Some(cg) = cgroup {
            match clone3(
                CLONE_PIDFD | CLONE_INTO_CGROUP,
                cg.as_raw_fd() as u64,
                &mut pidfd,
            ) {
                Ok(0) => child(),
                Ok(pid) => born = Some((pid, true)),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Err(e),
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => return Err(e),
                Err(_) => {}
            }
        }
        if born.is_none() {
            pidfd = -1;
            match clone3(CLONE_PIDFD, 0, &mut pidfd) {
                Ok(0) => child(),
                Ok(pid) => born = Some((pid, false)),
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let (pid, in_cgroup) = match born {
        Some(b) => b,
        None => {
            pidfd = -1;
            // SAFETY: the child only runs child_main (async-signal-safe, no allocation).
            match unsafe { libc::fork() } {
                0 => child(),
                pid if pid < 0 => return Err(io::Error::last_os_error()),
                pid => (pid, false),
            }
        }
    };
    drop(err_w);
    Ok(Born {
        pid,
        // SAFETY: clone3 stored a new fd of ours there (or left -1).
        pidfd: (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) }),
        in_cgroup,
        errors: err_r,
    })
}

/// The child's side of [`spawn_exec`]: never returns.
///
/// # Safety
/// Only in the child of a clone/fork, with `argv`/`sh_argv`/`envp` NULL-terminated pointer
/// arrays into `plan`.
unsafe fn child_main(
    plan: &ExecPlan,
    argv: &[*const libc::c_char],
    sh_argv: &[Vec<*const libc::c_char>],
    envp: &[*const libc::c_char],
    gate: Option<&Gate<'_>>,
    err: i32,
) -> ! {
    // SAFETY: see the function contract; each call below is async-signal-safe.
    unsafe {
        use std::os::fd::AsRawFd;
        let fail = |errno: i32| -> ! {
            let b = errno.to_ne_bytes();
            libc::write(err, b.as_ptr().cast(), b.len());
            libc::_exit(127)
        };
        let errno = || {
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        };
        for (target, fd) in plan.stdio.iter().enumerate() {
            if libc::dup2(fd.as_raw_fd(), target as i32) < 0 {
                fail(errno());
            }
        }
        if let Some(cwd) = &plan.cwd {
            if libc::chdir(cwd.as_ptr()) < 0 {
                fail(errno());
            }
        }
        if libc::setsid() < 0 {
            fail(errno());
        }
        // The mask is never inherited: pm-start blocks the signals it waits for.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if plan.reset_signals {
            // Signals ignored by whoever ran pm-start (a background job of a script ignores INT
            // and QUIT, nohup ignores HUP) must not stay ignored in the service, or a
            // `--stop-signal QUIT` would never be acted on. Exec resets only caught ones.
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
        }
        if let Some(g) = gate {
            // Say we exist (in our own session now), then wait for the go. Only the parent
            // holds the go pipe's write end once ours is closed, so its death reads as EOF.
            let r = [b'r'];
            if libc::write(g.ready.as_raw_fd(), r.as_ptr().cast(), 1) != 1 {
                fail(errno());
            }
            libc::close(g.go_w.as_raw_fd());
            let mut go = [0u8; 1];
            loop {
                let n = libc::read(g.go.as_raw_fd(), go.as_mut_ptr().cast(), 1);
                if n == 1 {
                    break;
                }
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                fail(libc::ECANCELED);
            }
        }
        if let Err(e) = become_service(plan) {
            fail(e);
        }
        if cloexec_from(3).is_err() {
            fail(errno());
        }
        // execvp(3)'s search: a path that is missing or not ours to run is skipped, and
        // "permission denied" wins over "not found" if no path runs.
        let mut denied = false;
        for (path, sh) in plan.paths.iter().zip(sh_argv) {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            match errno() {
                libc::ENOEXEC => {
                    libc::execve(sh[0], sh.as_ptr(), envp.as_ptr());
                    fail(errno())
                }
                libc::EACCES => denied = true,
                // What glibc's execvp skips too; anything else ends the search.
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                e => fail(e),
            }
        }
        fail(if denied { libc::EACCES } else { libc::ENOENT })
    }
}

/// The child's ids (groups, gid, uid), then its parent-death signal: the step of
/// [`child_main`] that makes it the service's user. `Err(errno)` of the call that failed.
///
/// # Safety
/// Only in the child of a clone/fork (see [`child_main`]).
unsafe fn become_service(plan: &ExecPlan) -> Result<(), i32> {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: see the function contract; each call below is async-signal-safe.
    unsafe {
        // The raw system calls, not glibc's wrappers: those make every thread of the
        // process change ids (setxid), walking a thread list copied from a parent that
        // may have had other threads, and can wait forever for threads that do not
        // exist here. The kernel's ids are per thread, and this process has one.
        if let Some((groups, gid, uid)) = &plan.creds {
            let (g, u) = (*gid as libc::c_long, *uid as libc::c_long);
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) < 0
                || libc::syscall(libc::SYS_setresgid, g, g, g) < 0
                || libc::syscall(libc::SYS_setresuid, u, u, u) < 0
            {
                return Err(errno());
            }
        }
        // After the id change, which clears the parent-death signal. The parent may have
        // died just before: then it is too late to be told, and the child goes now.
        if let Some(parent) = plan.parent_death {
            let kill = libc::SIGKILL as libc::c_ulong;
            if libc::prctl(libc::PR_SET_PDEATHSIG, kill, 0, 0, 0) < 0 {
                return Err(errno());
            }
            if libc::getppid() != parent {
                return Err(libc::ECANCELED);
            }
        }
    }
    Ok(())
}

/// `waitpid(2)` on our child: its raw wait status, `None` with `nohang` while it runs.
pub fn waitpid(pid: i32, nohang: bool) -> io::Result<Option<i32>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, if nohang { libc::WNOHANG } else { 0 }) };
        match r {
            0 => return Ok(None),
            r if r > 0 => return Ok(Some(status)),
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    /// A cgroup of the test's own, emptied (cgroup.kill) and removed on drop.
    struct TestCgroup(std::path::PathBuf);
    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
            let t = std::time::Instant::now();
            while std::fs::remove_dir(&self.0).is_err() && t.elapsed().as_secs() < 5 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn a_child_is_born_in_its_cgroup_and_runs_nothing_before_the_go() {
        let Some(m) = crate::cgroup::mount() else {
            return;
        };
        if !nix::unistd::geteuid().is_root() || std::env::var_os("PM_CLONE3").is_some() {
            return;
        }
        let cg = TestCgroup(m.join(format!("pm-unit-{}", std::process::id())));
        std::fs::create_dir(&cg.0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let null = File::open("/dev/null").unwrap();
        let argv = ["sh", "-c", "echo > \"$1\"", "sh", marker.to_str().unwrap()].map(Into::into);
        let plan = ExecPlan::new(
            "/bin/sh".as_ref(),
            None,
            &argv,
            &[],
            None,
            [null.as_fd(), null.as_fd(), null.as_fd()],
            None,
            true,
        )
        .unwrap();
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let gate = Gate {
            ready: ready_w.as_fd(),
            go: go_r.as_fd(),
            go_w: go_w.as_fd(),
        };
        let cg_dir = File::open(&cg.0).unwrap();
        let born = spawn_exec(&plan, Some(cg_dir.as_fd()), Some(&gate)).unwrap();
        drop((ready_w, go_r));
        assert!(
            born.in_cgroup,
            "clone3(CLONE_INTO_CGROUP) refused on this kernel"
        );
        assert!(born.pidfd.is_some());
        let mut b = [0u8; 1];
        File::from(ready_r).read_exact(&mut b).unwrap();
        // Before the go: already in the cgroup (the kernel's own view), command not run.
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", born.pid)).unwrap();
        let rel = cg.0.strip_prefix(&m).unwrap();
        assert!(
            own.lines().any(|l| l == format!("0::/{}", rel.display())),
            "{own}"
        );
        let procs = std::fs::read_to_string(cg.0.join("cgroup.procs")).unwrap();
        assert_eq!(procs.trim(), born.pid.to_string());
        assert!(!marker.exists());
        File::from(go_w).write_all(b"g").unwrap();
        let mut errors = Vec::new();
        File::from(born.errors).read_to_end(&mut errors).unwrap();
        assert!(errors.is_empty(), "exec failed: {errors:?}");
        let status = waitpid(born.pid, false).unwrap().unwrap();
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(marker.exists());
    }

    /// glibc's setuid in a child cloned from a process whose other threads come and go
    /// can wait forever for threads that are not there (seen within seconds with the
    /// wrappers); the raw system calls cannot.
    #[test]
    fn ids_are_switched_while_other_threads_come_and_go() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::thread::spawn(|| {}).join();
                }
            })
        };
        let null = File::open("/dev/null").unwrap();
        let plan = ExecPlan::new(
            "/bin/true".as_ref(),
            None,
            &["true".into()],
            &[],
            None,
            [null.as_fd(), null.as_fd(), null.as_fd()],
            Some((vec![0], 0, 0)),
            true,
        )
        .unwrap();
        let mut hung = None;
        for _ in 0..300 {
            let born = spawn_exec(&plan, None, None).unwrap();
            let fd = born.pidfd.as_ref().map(|f| f.as_fd());
            let done = match fd {
                Some(fd) => {
                    let mut p = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                    nix::poll::poll(&mut p, nix::poll::PollTimeout::from(10_000u16)).unwrap() == 1
                }
                None => true,
            };
            if !done {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(born.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                hung = Some(born.pid);
            }
            let status = waitpid(born.pid, false).unwrap().unwrap();
            if hung.is_some() {
                break;
            }
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        assert_eq!(hung, None, "a child hung before exec");
    }

    #[test]
    fn a_closed_gate_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let null = File::open("/dev/null").unwrap();
        let argv = ["sh", "-c", "echo > \"$1\"", "sh", marker.to_str().unwrap()].map(Into::into);
        let plan = ExecPlan::new(
            "sh".as_ref(),
            Some("/usr/bin:/bin".as_ref()),
            &argv,
            &[],
            None,
            [null.as_fd(), null.as_fd(), null.as_fd()],
            None,
            true,
        )
        .unwrap();
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let gate = Gate {
            ready: ready_w.as_fd(),
            go: go_r.as_fd(),
            go_w: go_w.as_fd(),
        };
        let born = spawn_exec(&plan, None, Some(&gate)).unwrap();
        drop((ready_w, go_r, go_w));
        let mut b = [0u8; 1];
        File::from(ready_r).read_exact(&mut b).unwrap();
        let mut errors = Vec::new();
        File::from(born.errors).read_to_end(&mut errors).unwrap();
        assert_eq!(errors, libc::ECANCELED.to_ne_bytes());
        let status = waitpid(born.pid, false).unwrap().unwrap();
        assert_eq!(libc::WEXITSTATUS(status), 127);
        assert!(!marker.exists());
    }
}
