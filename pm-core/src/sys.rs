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

/// `fork(2)`, refused unless this process has a single thread: only then may the child
/// run arbitrary code (no lock of another thread is held forever in it).
pub fn fork_single_threaded() -> nix::Result<nix::unistd::ForkResult> {
    let threads = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            after.split_whitespace().nth(17)?.parse::<u32>().ok()
        });
    if threads != Some(1) {
        return Err(nix::errno::Errno::EAGAIN);
    }
    // SAFETY: this process has one thread (checked above), so the child inherits no lock
    // held by another thread and may allocate and run any code.
    unsafe { nix::unistd::fork() }
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
