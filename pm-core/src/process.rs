//! What the kernel says about a process, and whether it is still the one pm recorded.
//!
//! A PID alone is not an identity: PIDs are reused. A process counts as ours only when its
//! start time (field 22 of `/proc/PID/stat`, in clock ticks since boot) and the boot id
//! match the record, or, for a PID read from a PID file the service wrote, when it started
//! no later than that file was written. Signals go through a pidfd opened *before* that
//! check, so the PID cannot be recycled between check and kill.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{errno, Error, Result};
use crate::sys;

/// The fields of `/proc/PID/stat` pm uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub utime: u64,
    pub stime: u64,
    /// Clock ticks after boot at which the process started.
    pub start_time: u64,
    pub rss_pages: i64,
}

/// Reads a /proc or cgroupfs file whole. These report size 0, so `fs::read_to_string`
/// stats and seeks the file and then reads in growing 32-byte steps; a 4 KiB buffer takes
/// most such files in one read(2) and the read that says EOF.
/// A kernel file (cgroupfs, /proc) read whole from `f`, to the read that returns 0: a
/// seq_file may return less than asked before its end (cgroup.procs of a cgroup with
/// hundreds of processes does).
pub fn read_seq(f: fs::File) -> io::Result<String> {
    read_seq_until(f, false)
}

/// [`read_seq`] of a kernel file of short lines (cgroup.procs, cpu.stat; not mountinfo,
/// whose lines can be long), without the read that says EOF where the end is plain: a
/// seq_file stops short of what was asked before its end only when its buffer (a page at
/// least) cannot take the next line, so a short first read of less than half a page is
/// the end. Only the first: a later read may return the rest of a line left in that
/// buffer, and keep for the next read an error (the cgroup removed meanwhile).
/// pm-status reads two such files per service; the extra read was a tenth of its calls.
pub fn read_seq_lines(f: fs::File) -> io::Result<String> {
    read_seq_until(f, true)
}

fn read_seq_until(mut f: fs::File, short_lines: bool) -> io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                let (asked, first) = (buf.len() - len, len == 0);
                len += n;
                if short_lines && first && n < asked && n < 2048 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub fn read_pseudo(path: impl AsRef<std::path::Path>) -> io::Result<String> {
    read_seq(fs::File::open(path)?)
}

impl Stat {
    /// Parses the text of `/proc/PID/stat`. `comm` may hold spaces and parentheses, so
    /// it runs from the first `(` to the *last* `)`.
    pub fn parse(text: &str) -> Option<Stat> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        if close < open {
            return None;
        }
        let pid = text[..open].trim().parse().ok()?;
        let comm = text[open + 1..close].to_string();
        let f: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
        // f[0] is field 3 (state); field N is f[N - 3].
        let num = |n: usize| f.get(n - 3).and_then(|s| s.parse::<i64>().ok());
        let unum = |n: usize| f.get(n - 3).and_then(|s| s.parse::<u64>().ok());
        Some(Stat {
            pid,
            comm,
            state: f.first()?.chars().next()?,
            ppid: i32::try_from(num(4)?).ok()?,
            pgrp: i32::try_from(num(5)?).ok()?,
            session: i32::try_from(num(6)?).ok()?,
            utime: unum(14)?,
            stime: unum(15)?,
            start_time: unum(22)?,
            rss_pages: num(24)?,
        })
    }

    /// Reads `/proc/PID/stat`; `None` when there is no such process. One read(2) into a
    /// stack buffer: pm-status and pm-stop do this for many processes.
    pub fn read(pid: i32) -> Result<Option<Stat>> {
        use std::io::Read;
        let path = format!("/proc/{pid}/stat");
        let gone = |e: &io::Error| {
            e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
        };
        let mut f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut buf = [0u8; 2048];
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let mut stat =
            Stat::parse(&text).ok_or_else(|| Error::Os(format!("{path}: unexpected format")))?;
        // A main thread that called pthread_exit shows `Z` while the process's other
        // threads run on: such a process is alive (and must be found and stopped).
        if stat.is_zombie() {
            if let Some(state) = live_thread_state(pid) {
                stat.state = state;
            }
        }
        Ok(Some(stat))
    }

    /// Zombies (and dead tasks) count as gone: they run no code and hold no resources
    /// but their PID, and on some hosts PID 1 reaps them only every second or two.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    pub fn rss_bytes(&self) -> u64 {
        (self.rss_pages.max(0) as u64) * sys::page_size()
    }

    pub fn cpu_secs(&self) -> f64 {
        (self.utime + self.stime) as f64 / sys::clk_tck() as f64
    }

    /// How long the process has been running.
    pub fn uptime(&self) -> Duration {
        sys::boottime().saturating_sub(ticks_to_duration(self.start_time))
    }

    /// Wall-clock time at which the process started (precise to a clock tick).
    pub fn started_at(&self) -> SystemTime {
        boot_realtime() + ticks_to_duration(self.start_time)
    }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let hz = sys::clk_tck();
    Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz)
}

/// Wall-clock time of boot, derived from two clocks read back to back (nanosecond
/// precision, unlike `btime` in /proc/stat which is whole seconds).
pub fn boot_realtime() -> SystemTime {
    UNIX_EPOCH + sys::realtime().saturating_sub(sys::boottime())
}

/// This boot's id, so a record from before a reboot never matches a new process.
pub fn boot_id() -> Result<String> {
    static ID: OnceLock<String> = OnceLock::new();
    if let Some(id) = ID.get() {
        return Ok(id.clone());
    }
    let path = "/proc/sys/kernel/random/boot_id";
    let id = fs::read_to_string(path)
        .map_err(|e| Error::io(path, e))?
        .trim()
        .to_string();
    Ok(ID.get_or_init(|| id).clone())
}

/// The kernel's largest PID (`/proc/sys/kernel/pid_max`), 4194304 if unreadable.
pub fn pid_max() -> i64 {
    fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304)
}

/// `kill(pid, 0)` semantics, with zombies counted as dead: EPERM means alive.
pub fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    !matches!(
        Stat::read(pid),
        Ok(None)
            | Ok(Some(Stat {
                state: 'Z' | 'X' | 'x',
                ..
            }))
    )
}

/// What identifies the process a record or PID file speaks of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Recorded start time (clock ticks after boot) on the recorded boot.
    StartTime { start_time: u64, boot_id: String },
    /// A PID read from a PID file: the process must have started no later than the file's
    /// last write, and a file owned by a user other than root must belong to a process of
    /// that user (so one user cannot point pm at another user's process).
    WrittenBy {
        mtime: SystemTime,
        owner: Option<u32>,
    },
}

impl Expect {
    /// A process known by its start time on boot `boot_id`: how every recorded or
    /// observed identity is built.
    pub fn started(start_time: u64, boot_id: &str) -> Expect {
        Expect::StartTime {
            start_time,
            boot_id: boot_id.to_string(),
        }
    }
}

impl crate::record::Proc {
    /// This process's identity on boot `boot_id`.
    pub fn expect(&self, boot_id: &str) -> Expect {
        Expect::started(self.start_time, boot_id)
    }
}

impl crate::record::Starter {
    /// This starter's identity on boot `boot_id`.
    pub fn expect(&self, boot_id: &str) -> Expect {
        Expect::started(self.start_time, boot_id)
    }
}

impl crate::record::Record {
    /// Is this record from the running boot? Start times, PIDs, groups and sessions of
    /// another boot say nothing about today's processes.
    pub fn this_boot(&self) -> bool {
        self.boot_id.is_some() && self.boot_id.as_deref() == boot_id().ok().as_deref()
    }

    /// The identity gate's lower bound: no process that started before the recorded
    /// launch (this boot only) can be this start's — not a daemon named by a PID file,
    /// not `MAINPID=`, not a group or session member, not a descendant.
    pub fn born_after(&self) -> Option<u64> {
        self.start_time.filter(|_| self.this_boot())
    }

    /// The recorded main process's identity, if the record has one.
    pub fn identity(&self) -> Option<Expect> {
        Some(Expect::started(self.start_time?, self.boot_id.as_deref()?))
    }
}

/// Real, effective, saved and filesystem uid of `pid` (empty if unreadable).
fn uids(pid: i32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("Uid:")).map(|l| {
                l.split_whitespace()
                    .filter_map(|u| u.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Slack for comparing a start time (truncated to a clock tick) with a file mtime (taken
/// from the coarse clock): a real writer may appear a tick or two "after" its own write.
const MTIME_SLACK: Duration = Duration::from_millis(25);

/// The outcome of an identity check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Alive and it is the expected process.
    Ours(Stat),
    /// No such process, or a zombie.
    Gone,
    /// A live process holds the PID but it is not the expected one.
    Reused(Stat),
    /// The record is from an earlier boot.
    OtherBoot,
    /// PID 0, 1, negative, or the calling process: never to be signalled.
    Protected,
}

impl Verdict {
    pub fn is_ours(&self) -> bool {
        matches!(self, Verdict::Ours(_))
    }
}

/// Is `pid` a PID pm may ever act on?
pub fn is_protected(pid: i32) -> bool {
    pid <= 1 || pid == std::process::id() as i32
}

/// The state of a live thread of process `pid`, if one is left (see [`Stat::read`]).
fn live_thread_state(pid: i32) -> Option<char> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().take(65536).find_map(|t| {
        let text = fs::read_to_string(t.path().join("stat")).ok()?;
        let s = Stat::parse(&text)?;
        (!s.is_zombie()).then_some(s.state)
    })
}

/// Checks whether `pid` is the expected process right now.
pub fn check(pid: i32, expect: &Expect) -> Result<Verdict> {
    if is_protected(pid) {
        return Ok(Verdict::Protected);
    }
    if let Expect::StartTime { boot_id: b, .. } = expect {
        if *b != boot_id()? {
            return Ok(Verdict::OtherBoot);
        }
    }
    let Some(stat) = Stat::read(pid)? else {
        return Ok(Verdict::Gone);
    };
    if stat.is_zombie() {
        return Ok(Verdict::Gone);
    }
    let ours = match expect {
        Expect::StartTime { start_time, .. } => stat.start_time == *start_time,
        Expect::WrittenBy { mtime, owner } => {
            stat.started_at() <= *mtime + MTIME_SLACK
                && owner.is_none_or(|o| o == 0 || uids(pid).contains(&o))
        }
    };
    Ok(if ours {
        Verdict::Ours(stat)
    } else {
        Verdict::Reused(stat)
    })
}

/// A process pm has verified and may signal: a pidfd opened before the identity check
/// (or, where the kernel has no pidfds, just the PID and its start time).
#[derive(Debug)]
pub struct Handle {
    pub pid: i32,
    pub start_time: u64,
    fd: Option<OwnedFd>,
}

impl Handle {
    /// Opens `pid` and verifies it against `expect`. `Ok(Err(verdict))` when it is not ours.
    pub fn open(pid: i32, expect: &Expect) -> Result<std::result::Result<Handle, Verdict>> {
        if is_protected(pid) {
            return Ok(Err(Verdict::Protected));
        }
        let fd = match open_pidfd(pid)? {
            Some(fd) => fd,
            None => return Ok(Err(Verdict::Gone)),
        };
        match check(pid, expect)? {
            Verdict::Ours(stat) => Ok(Ok(Handle {
                pid,
                start_time: stat.start_time,
                fd,
            })),
            other => Ok(Err(other)),
        }
    }

    /// A handle on a child we just spawned: its PID cannot be reused until we reap it.
    pub fn of_child(pid: i32) -> Result<Handle> {
        Self::of_child_fd(pid, None)
    }

    /// [`Handle::of_child`] with the pidfd its clone3 returned, if any.
    pub fn of_child_fd(pid: i32, pidfd: Option<OwnedFd>) -> Result<Handle> {
        let gone = || Error::Process {
            pid,
            err: io::Error::from_raw_os_error(libc::ESRCH),
        };
        let fd = match pidfd {
            Some(fd) => Some(fd),
            None => open_pidfd(pid)?.ok_or_else(gone)?,
        };
        let stat = Stat::read(pid)?.ok_or_else(gone)?;
        Ok(Handle {
            pid,
            start_time: stat.start_time,
            fd,
        })
    }

    /// Sends `sig` to this very process (never to a PID successor). `Ok(false)` when it has
    /// already exited.
    pub fn signal(&self, sig: Signal) -> Result<bool> {
        let r = match &self.fd {
            Some(fd) => sys::pidfd_send_signal(fd.as_fd(), sig),
            None => {
                // Fallback without pidfds: re-check the start time right before kill(2).
                match Stat::read(self.pid)? {
                    Some(s) if s.start_time == self.start_time && !s.is_zombie() => {
                        kill(Pid::from_raw(self.pid), sig).map_err(errno)
                    }
                    _ => return Ok(false),
                }
            }
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(Error::Process {
                pid: self.pid,
                err: e,
            }),
        }
    }

    /// Has the process exited (zombies count)?
    pub fn is_gone(&self) -> bool {
        match &self.fd {
            Some(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            }
            None => !matches!(
                Stat::read(self.pid),
                Ok(Some(s)) if s.start_time == self.start_time && !s.is_zombie()
            ),
        }
    }

    /// The pidfd, for callers that poll it together with other fds.
    pub fn pidfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }
}

/// `Ok(None)`: no such process (or a thread id, which is not a process). `Ok(Some(None))`:
/// it exists but no pidfd can be had (kernel without pidfds, or out of fds), so the caller
/// falls back to kill(2) with a start-time re-check.
fn open_pidfd(pid: i32) -> Result<Option<Option<OwnedFd>>> {
    match sys::pidfd_open(pid) {
        Ok(fd) => Ok(Some(Some(fd))),
        Err(e) => match e.raw_os_error() {
            Some(libc::ESRCH) | Some(libc::EINVAL) => Ok(None),
            Some(libc::ENOSYS) | Some(libc::EMFILE) | Some(libc::ENFILE) => Ok(Some(None)),
            _ => Err(Error::Process { pid, err: e }),
        },
    }
}

/// The identity gate for one service: every "is this process the service's?" decision
/// that is not an exact recorded identity goes through it — a PID file's process, a
/// daemon a starting service names, a group or session member, a descendant, a leftover
/// of a dead run. It knows the born-after bound (nothing older than the launch), the
/// protected PIDs, and, once the leader is gone, the per-start marker a leftover must
/// carry. Signals then go to the [`Handle`] the gate opened, never to a bare PID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Clock ticks after boot: nothing that started earlier is the service's.
    pub born_after: u64,
    /// With the leader gone, the environment entry (`PM_RUN_ID=…`) a process must carry:
    /// a recorded group or session id may have been reused after the whole service died.
    pub marker: Option<String>,
}

impl Gate {
    /// A gate with the born-after bound only (the leader lives, or nothing is adopted).
    pub fn born_after(born_after: u64) -> Gate {
        Gate {
            born_after,
            marker: None,
        }
    }

    /// [`check`], and not older than the service.
    pub fn check(&self, pid: i32, expect: &Expect) -> Result<Verdict> {
        Ok(match check(pid, expect)? {
            Verdict::Ours(s) if s.start_time < self.born_after => Verdict::Reused(s),
            v => v,
        })
    }

    /// May a process found by group, session, descendants or marker be treated (and
    /// stopped) as part of the service?
    pub fn admits(&self, s: &Stat) -> bool {
        s.start_time >= self.born_after
            && !is_protected(s.pid)
            && self.marker.as_deref().is_none_or(|m| has_env(s.pid, m))
    }
}

/// How long to wait for processes to disappear after SIGKILL (here, not in `stop`, for
/// the monitor, which `stop` builds on).
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// Raises the soft open-file limit to the hard one: a stop holds one pidfd per process of
/// the service, and a big service must not make pm-stop run out.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// `now + d`, saturating far in the future instead of overflowing.
pub fn deadline(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Does the environment of `pid` hold the exact entry `KEY=VALUE`? False when it cannot be
/// read (another user's process without privilege, a process that rewrote its memory).
pub fn has_env(pid: i32, entry: &str) -> bool {
    use std::io::Read;
    let Ok(f) = fs::File::open(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let mut buf = Vec::new();
    if f.take(1 << 20).read_to_end(&mut buf).is_err() {
        return false;
    }
    buf.split(|b| *b == 0).any(|kv| kv == entry.as_bytes())
}

/// Waits until every handle has exited or `deadline` passes; true when all are gone.
///
/// Event-driven: polls the pidfds. Only without pidfd support does it fall back to
/// re-checking with a short, growing sleep.
pub fn wait_all_gone(handles: &[&Handle], deadline: Instant) -> bool {
    loop {
        let live: Vec<&&Handle> = handles.iter().filter(|h| !h.is_gone()).collect();
        if live.is_empty() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let left = deadline - now;
        if live.iter().all(|h| h.fd.is_some()) {
            let mut fds: Vec<PollFd<'_>> = live
                .iter()
                .filter_map(|h| h.pidfd())
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            let _ = poll(&mut fds, timeout(left));
        } else {
            std::thread::sleep(left.min(Duration::from_millis(5)));
        }
    }
}

/// A poll timeout for `d`, rounded up to whole milliseconds and capped.
pub fn timeout(d: Duration) -> PollTimeout {
    let ms = d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

/// A snapshot of every process in `/proc` (zombies left out).
pub fn scan() -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(|pid| Stat::read(pid).ok().flatten())
        .filter(|s| !s.is_zombie())
        .collect()
}

/// Live descendants of `pid`, read from `/proc/PID/task/*/children` (no scan of all of
/// `/proc`); `None` when the kernel does not provide those files.
pub fn descendants(pid: i32) -> Option<Vec<Stat>> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut roots = Vec::new();
    for t in tasks.filter_map(|e| e.ok()) {
        let text = fs::read_to_string(t.path().join("children")).ok()?;
        roots.extend(
            text.split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok()),
        );
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    while let Some(p) = roots.pop() {
        if !seen.insert(p) {
            continue;
        }
        if let Ok(Some(s)) = Stat::read(p) {
            if !s.is_zombie() {
                if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
                    for t in tasks.filter_map(|e| e.ok()) {
                        if let Ok(text) = fs::read_to_string(t.path().join("children")) {
                            roots.extend(
                                text.split_whitespace()
                                    .filter_map(|c| c.parse::<i32>().ok()),
                            );
                        }
                    }
                }
                out.push(s);
            }
        }
    }
    Some(out)
}

/// Live processes in `stats` that belong to a service whose leader is `leader`: its
/// descendants (by parent PID), members of process group `pgid` and of session `sid`.
/// Processes born before `born_after` (ticks) are left out: they cannot be ours.
pub fn members(
    stats: &[Stat],
    leader: i32,
    pgid: Option<i32>,
    sid: Option<i32>,
    born_after: u64,
) -> Vec<Stat> {
    let mut children: HashMap<i32, Vec<&Stat>> = HashMap::new();
    for s in stats {
        children.entry(s.ppid).or_default().push(s);
    }
    let mut out: Vec<Stat> = Vec::new();
    let mut seen: HashSet<i32> = HashSet::new();
    // Without a leader (0) there is no parent to follow: PID 1 and kthreadd have parent 0,
    // so walking "its children" would take in every process on the host.
    let mut queue = if leader > 1 { vec![leader] } else { Vec::new() };
    for s in stats {
        let in_group = pgid.is_some_and(|g| g > 1 && s.pgrp == g);
        let in_session = sid.is_some_and(|g| g > 1 && s.session == g);
        if (in_group || in_session) && s.pid != leader {
            queue.push(s.pid);
        }
    }
    while let Some(p) = queue.pop() {
        if !seen.insert(p) {
            continue;
        }
        if p != leader {
            if let Some(s) = stats.iter().find(|s| s.pid == p) {
                if s.start_time >= born_after && !is_protected(s.pid) {
                    out.push(s.clone());
                }
            }
        }
        if let Some(kids) = children.get(&p) {
            queue.extend(kids.iter().map(|k| k.pid));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Only a short *first* read ends a read of short lines: a later one may be the rest
    /// of a line, with more (or an error) still to come.
    #[test]
    fn a_short_read_after_the_first_does_not_end_a_read_of_short_lines() {
        use std::io::Write;
        let (r, w) = nix::unistd::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = fs::File::from(w);
            let pause = || std::thread::sleep(std::time::Duration::from_millis(50));
            w.write_all(&[b'1'; 4096]).unwrap();
            pause();
            w.write_all(b"2345\n").unwrap();
            pause();
            w.write_all(b"67\n").unwrap();
        });
        let text = read_seq_lines(fs::File::from(r)).unwrap();
        writer.join().unwrap();
        assert_eq!(text.len(), 4096 + 5 + 3, "{:?}", &text[4096..]);
    }

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let text = "4242 (a) (b c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 123456 1000000 250 18446744073709551615";
        let s = Stat::parse(text).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "a) (b c)");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 4242);
        assert_eq!(s.session, 4242);
        assert_eq!(s.utime, 7);
        assert_eq!(s.stime, 3);
        assert_eq!(s.start_time, 123456);
        assert_eq!(s.rss_pages, 250);
    }

    #[test]
    fn rejects_truncated_stat() {
        assert!(Stat::parse("12 (x) S 1 2").is_none());
        assert!(Stat::parse("garbage").is_none());
        assert!(Stat::parse(")( 1 2").is_none());
    }

    #[test]
    fn reads_own_stat() {
        let me = std::process::id() as i32;
        let s = Stat::read(me).unwrap().unwrap();
        assert_eq!(s.pid, me);
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert!(s.uptime() < Duration::from_secs(3600));
        assert!(Stat::read(i32::MAX).unwrap().is_none());
    }

    #[test]
    fn boot_id_is_stable() {
        let a = boot_id().unwrap();
        assert_eq!(a.len(), 36);
        assert_eq!(a, boot_id().unwrap());
    }

    struct Reaper(std::process::Child);
    impl Drop for Reaper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn sleeper() -> Reaper {
        Reaper(Command::new("sleep").arg("100").spawn().unwrap())
    }

    #[test]
    fn identity_accepts_matching_start_time_and_rejects_a_different_one() {
        let child = sleeper();
        let pid = child.0.id() as i32;
        let stat = Stat::read(pid).unwrap().unwrap();
        let boot = boot_id().unwrap();
        let good = Expect::StartTime {
            start_time: stat.start_time,
            boot_id: boot.clone(),
        };
        assert!(check(pid, &good).unwrap().is_ours());
        // A live process whose start time differs is somebody else: PID reuse.
        let reused = Expect::StartTime {
            start_time: stat.start_time + 1,
            boot_id: boot,
        };
        assert!(matches!(check(pid, &reused).unwrap(), Verdict::Reused(_)));
        let other_boot = Expect::StartTime {
            start_time: stat.start_time,
            boot_id: "00000000-0000-0000-0000-000000000000".into(),
        };
        assert_eq!(check(pid, &other_boot).unwrap(), Verdict::OtherBoot);
        assert!(matches!(
            Handle::open(pid, &reused).unwrap(),
            Err(Verdict::Reused(_))
        ));
    }

    #[test]
    fn identity_by_pidfile_time_rejects_process_born_after_the_file() {
        let before = SystemTime::now() - Duration::from_secs(5);
        let child = sleeper();
        let pid = child.0.id() as i32;
        assert!(matches!(
            check(
                pid,
                &Expect::WrittenBy {
                    mtime: before,
                    owner: None
                }
            )
            .unwrap(),
            Verdict::Reused(_)
        ));
        std::thread::sleep(Duration::from_millis(30));
        assert!(check(
            pid,
            &Expect::WrittenBy {
                mtime: SystemTime::now(),
                owner: None
            }
        )
        .unwrap()
        .is_ours());
    }

    #[test]
    fn pidfile_owned_by_another_user_cannot_name_our_process() {
        let child = sleeper();
        let pid = child.0.id() as i32;
        let me = nix::unistd::geteuid().as_raw();
        let other = if me == 0 { 65534 } else { me + 1 };
        let now = SystemTime::now() + Duration::from_secs(1);
        let by = |owner| Expect::WrittenBy {
            mtime: now,
            owner: Some(owner),
        };
        assert!(check(pid, &by(me)).unwrap().is_ours());
        assert!(
            check(pid, &by(0)).unwrap().is_ours(),
            "root's PID files are trusted"
        );
        assert!(matches!(
            check(pid, &by(other)).unwrap(),
            Verdict::Reused(_)
        ));
    }

    #[test]
    fn the_gate_refuses_what_is_older_than_the_service_and_unmarked_leftovers() {
        let child = Command::new("sleep")
            .arg("100")
            .env("PM_RUN_ID", "run-a")
            .spawn()
            .unwrap();
        let child = Reaper(child);
        let pid = child.0.id() as i32;
        // Until exec, /proc shows the parent's environment.
        let t = Instant::now();
        while !has_env(pid, "PM_RUN_ID=run-a") && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let stat = Stat::read(pid).unwrap().unwrap();
        let exact = Expect::StartTime {
            start_time: stat.start_time,
            boot_id: boot_id().unwrap(),
        };
        assert!(Gate::born_after(stat.start_time)
            .check(pid, &exact)
            .unwrap()
            .is_ours());
        // Started before the service: not the service's, whatever else matches.
        assert!(matches!(
            Gate::born_after(stat.start_time + 1)
                .check(pid, &exact)
                .unwrap(),
            Verdict::Reused(_)
        ));
        let marked = |m: &str| Gate {
            born_after: 0,
            marker: Some(m.into()),
        };
        assert!(marked("PM_RUN_ID=run-a").admits(&stat));
        assert!(
            !marked("PM_RUN_ID=run-b").admits(&stat),
            "another start's leftover"
        );
        assert!(Gate::born_after(0).admits(&stat));
        assert!(!Gate::born_after(stat.start_time + 1).admits(&stat));
        let me = Stat::read(std::process::id() as i32).unwrap().unwrap();
        assert!(
            !Gate::born_after(0).admits(&me),
            "the tool itself is protected"
        );
    }

    #[test]
    fn pid_one_and_self_are_protected() {
        let any = Expect::WrittenBy {
            mtime: SystemTime::now(),
            owner: None,
        };
        assert_eq!(check(1, &any).unwrap(), Verdict::Protected);
        assert_eq!(check(0, &any).unwrap(), Verdict::Protected);
        assert_eq!(check(-5, &any).unwrap(), Verdict::Protected);
        assert_eq!(
            check(std::process::id() as i32, &any).unwrap(),
            Verdict::Protected
        );
        assert!(matches!(
            Handle::open(1, &any).unwrap(),
            Err(Verdict::Protected)
        ));
    }

    #[test]
    fn zombie_counts_as_gone_and_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: a zombie once it exits.
        let h = Handle::of_child(pid).unwrap_or_else(|_| Handle {
            pid,
            start_time: 0,
            fd: None,
        });
        assert!(wait_all_gone(
            &[&h],
            Instant::now() + Duration::from_secs(10)
        ));
        assert!(!is_alive(pid));
        let v = check(
            pid,
            &Expect::WrittenBy {
                mtime: SystemTime::now(),
                owner: None,
            },
        )
        .unwrap();
        assert_eq!(v, Verdict::Gone);
        child.wait().unwrap();
    }

    #[test]
    fn handle_signals_and_waits_event_driven() {
        let child = sleeper();
        let pid = child.0.id() as i32;
        let h = Handle::of_child(pid).unwrap();
        assert!(is_alive(pid));
        assert!(!h.is_gone());
        assert!(!wait_all_gone(
            &[&h],
            Instant::now() + Duration::from_millis(20)
        ));
        assert!(h.signal(Signal::SIGTERM).unwrap());
        let t = Instant::now();
        assert!(wait_all_gone(
            &[&h],
            Instant::now() + Duration::from_secs(10)
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
        drop(child);
    }

    #[test]
    fn descendants_are_found_without_a_scan() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 100 & sleep 100 & wait"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let t = Instant::now();
        let kids = loop {
            let k = descendants(pid).expect("children files");
            // Forked children are `sh` until they exec sleep.
            let execd = k.iter().all(|k| k.comm == "sleep");
            if (k.len() == 2 && execd) || t.elapsed() > Duration::from_secs(10) {
                break k;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(kids.len(), 2, "{kids:?}");
        assert!(kids.iter().all(|k| k.ppid == pid && k.comm == "sleep"));
        for k in &kids {
            let _ = kill(Pid::from_raw(k.pid), Signal::SIGKILL);
        }
        child.wait().unwrap();
    }

    #[test]
    fn members_follow_parents_group_and_session() {
        let s = |pid, ppid, pgrp, session, start| Stat {
            pid,
            comm: "x".into(),
            state: 'S',
            ppid,
            pgrp,
            session,
            utime: 0,
            stime: 0,
            start_time: start,
            rss_pages: 0,
        };
        let stats = vec![
            s(100, 1, 100, 100, 10),   // leader
            s(101, 100, 100, 100, 11), // child in group
            s(102, 101, 102, 102, 12), // grandchild that called setsid
            s(103, 1, 100, 100, 13),   // orphaned group member
            s(104, 1, 104, 100, 14),   // same session, own group
            s(200, 1, 200, 200, 5),    // unrelated
            s(105, 100, 100, 100, 3),  // "child" born before the leader: impossible, excluded
        ];
        let mut got: Vec<i32> = members(&stats, 100, Some(100), Some(100), 10)
            .iter()
            .map(|s| s.pid)
            .collect();
        got.sort();
        assert_eq!(got, vec![101, 102, 103, 104]);
        // No leader: only the group and session, never "the children of PID 0" (everything).
        let mut all = stats.clone();
        all.push(s(1, 0, 1, 1, 0));
        let mut got: Vec<i32> = members(&all, 0, None, None, 0)
            .iter()
            .map(|s| s.pid)
            .collect();
        assert!(got.is_empty(), "{got:?}");
        got = members(&all, 0, Some(100), None, 10)
            .iter()
            .map(|s| s.pid)
            .collect();
        got.sort();
        assert_eq!(got, vec![100, 101, 102, 103]);
    }
}
