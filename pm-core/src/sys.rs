//! The few raw system calls nix does not wrap (pidfd, close_range), in one place.
//!
//! Everything `unsafe` in pm lives here, behind safe functions with the same error
//! conventions as the rest of the crate.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::time::{clock_gettime, ClockId};

/// `pidfd_open(2)`: a file descriptor that refers to exactly one process, never to a later
/// process that reuses its PID.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the result is a new fd we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(r).map_err(|_| io::Error::other("pidfd_open returned a bad fd"))?;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)`.
pub fn pidfd_send_signal(fd: BorrowedFd<'_>, sig: Signal) -> io::Result<()> {
    // SAFETY: the fd is borrowed for the call; a null siginfo asks for kill(2) semantics.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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
    // SAFETY: sysconf has no memory side effects.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// Bytes per page, the unit of `/proc/PID/stat` rss.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory side effects.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
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
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}
