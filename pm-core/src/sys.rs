//! The system calls pm makes beyond std and nix, in one place: pidfds and the sysconf
//! values from rustix, the terminal size from terminal_size, and the one raw call no
//! crate wraps for a `pre_exec` hook (`close_range(CLOSE_RANGE_CLOEXEC)`).
//!
//! Everything `unsafe` in pm-core's system interface lives here, behind safe functions
//! with the same error conventions as the rest of the crate.

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

/// Marks every fd >= `first` close-on-exec, in a `pre_exec` hook.
///
/// Marking instead of closing keeps std's own exec-error pipe working (it is already
/// CLOEXEC), so exec failures are still reported as not-found / permission denied.
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
