//! The log writer (`--log-max-size`, `--log-keep`, `--log-timestamps`): one small process
//! per start, reading the service's stdout and stderr from a pipe and appending whole
//! lines to the log, rotated by size (`LOG.1`, `LOG.2`, …) and optionally time-stamped —
//! the s6-log / multilog habit.
//!
//! It is a process of the service (in its cgroup, carrying its run marker) that ignores the
//! stop signals and ends when the last writer has gone: a stop ends the service, the pipe
//! reads EOF, every line written before that is in the log, then it exits. Without these
//! options there is no logger: the service writes straight to its log.
//!
//! It never loses output silently. A write, open or rotation that fails (a full disk, a
//! name the service's user blocked) does not end it: it keeps reading the pipe (so the
//! service never blocks on it for longer than the pipe buffer), holds what it read in a
//! bounded [`Backlog`] (the oldest lines go first when that is full), retries with backoff,
//! says so in a status file pm-status reads ([`read_status`]), and once the log can be
//! written again it writes notices of the failure, the recovery and what was dropped.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use crate::record::{Rotation, DEFAULT_KEEP};

/// A line longer than this is written in pieces (each piece ends with a newline).
pub const MAX_LINE: usize = 64 << 10;
/// Output held while the log cannot be written; beyond it the oldest lines are dropped.
pub const BACKLOG_MAX: usize = 4 << 20;
/// The first retry after a failure; each failed retry doubles the wait, up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A rotation that could not be made is tried again after this (the log grows meanwhile).
const ROTATE_RETRY: Duration = Duration::from_secs(1);
/// After EOF, how long held output is still retried: a stop waits for the logger to end.
const EOF_GRACE: Duration = Duration::from_secs(2);
/// pm's own notices held at most (they are short; only a flood of failures fills this).
const NOTICES_MAX: usize = 64 << 10;

impl Rotation {
    /// As arguments of the logger's hidden command line.
    pub fn to_args(&self) -> [String; 3] {
        [
            self.max_size.map_or("-".into(), |m| m.to_string()),
            self.keep.to_string(),
            if self.timestamps { "ts" } else { "-" }.into(),
        ]
    }

    pub fn from_args(max: &str, keep: &str, ts: &str) -> Option<Rotation> {
        Some(Rotation {
            max_size: if max == "-" {
                None
            } else {
                Some(max.parse().ok()?)
            },
            keep: keep.parse().ok()?,
            timestamps: ts == "ts",
        })
    }
}

/// The logger's hidden command line after `--pm-logger`: `LOG MAX KEEP TS OWNER STATUS`.
/// `owner` (uid, gid) gets the log files the logger creates (a `--user` service must be
/// able to read its rotated logs); `status` is where it says that the log is failing
/// ([`crate::state::StateDir::log_status_path`]).
pub fn argv(
    log: &Path,
    rotation: &Rotation,
    owner: Option<(u32, u32)>,
    status: &Path,
) -> Vec<OsString> {
    let mut v = vec![log.as_os_str().to_owned()];
    v.extend(rotation.to_args().map(OsString::from));
    v.push(owner.map_or("-".into(), |(u, g)| format!("{u}:{g}")).into());
    v.push(status.as_os_str().to_owned());
    v
}

fn parse_owner(s: &str) -> Option<Option<(u32, u32)>> {
    if s == "-" {
        return Some(None);
    }
    let (u, g) = s.split_once(':')?;
    Some(Some((u.parse().ok()?, g.parse().ok()?)))
}

/// What the status file holds: the run it is about, and what is wrong.
#[derive(Debug, Serialize, Deserialize)]
struct Status {
    run_id: String,
    error: String,
}

/// The logger's complaint about run `run_id`, if it has one. A file left by an earlier
/// run (a logger killed while failing) names another run and is ignored.
pub fn read_status(path: &Path, run_id: &str) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut buf = Vec::new();
    f.take(64 << 10).read_to_end(&mut buf).ok()?;
    let s: Status = serde_json::from_slice(&buf).ok()?;
    (s.run_id == run_id).then_some(s.error)
}

/// Removes the status file (a stop, a new start, a forget); a missing one is fine.
pub fn remove_status(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Output the log could not take yet: whole lines, oldest first, at most `cap` bytes.
/// When full, the oldest lines go (counted, for the notice), except a line already begun
/// in the log: dropping that one would leave half a line there.
#[derive(Debug)]
pub struct Backlog {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    cap: usize,
    /// Bytes of the front line already written.
    begun: usize,
    /// Dropped and not yet announced.
    dropped: (u64, u64),
    dropped_total: u64,
}

impl Backlog {
    pub fn new(cap: usize) -> Backlog {
        Backlog {
            lines: VecDeque::new(),
            bytes: 0,
            cap,
            begun: 0,
            dropped: (0, 0),
            dropped_total: 0,
        }
    }

    pub fn push(&mut self, line: Vec<u8>) {
        self.bytes += line.len();
        self.lines.push_back(line);
        let keep = usize::from(self.begun > 0);
        while self.bytes > self.cap && self.lines.len() > keep {
            if let Some(old) = self.lines.remove(keep) {
                self.bytes -= old.len();
                self.dropped.0 += old.len() as u64;
                self.dropped.1 += 1;
                self.dropped_total += old.len() as u64;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes held (whole lines, a begun one included).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the front line is partly written (it must be finished before anything else).
    pub fn mid_line(&self) -> bool {
        self.begun > 0
    }

    /// What is left of the front line, and whether that is all of it.
    pub fn front(&self) -> Option<(&[u8], bool)> {
        self.lines
            .front()
            .map(|l| (&l[self.begun..], self.begun == 0))
    }

    /// `n` more bytes of the front line were written.
    pub fn written(&mut self, n: usize) {
        let Some(front) = self.lines.front() else {
            return;
        };
        self.begun += n;
        if self.begun >= front.len() {
            self.bytes -= front.len();
            self.lines.pop_front();
            self.begun = 0;
        }
    }

    /// Bytes and lines dropped since the last call, if any.
    pub fn take_dropped(&mut self) -> Option<(u64, u64)> {
        let d = std::mem::take(&mut self.dropped);
        (d.1 > 0).then_some(d)
    }

    /// Bytes dropped in all.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

/// The writing end of the logger: the log's directory (opened once, the careful way), the
/// current file and its size.
pub struct Writer {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
    rotation: Rotation,
    owner: Option<(u32, u32)>,
    /// None until (re)opened: at the start if the open failed, after a failed write.
    file: Option<File>,
    size: u64,
    /// Why the last rotation could not be made, and when to try again.
    blocked: Option<(String, Instant)>,
    /// Notices for the log (rotation trouble), taken by the [`Logger`].
    notes: Vec<String>,
}

impl Writer {
    /// The log may sit in a directory the service's user can write, and the logger runs
    /// as root: the directory is resolved once (no symlink of another user followed, see
    /// [`crate::untrusted::parent_dir`]) and every later open, rename and unlink is made
    /// relative to it, so swapping a path component for a symlink later changes nothing.
    /// A log that cannot be opened now is retried by the first write.
    pub fn open(path: &Path, rotation: Rotation, owner: Option<(u32, u32)>) -> io::Result<Writer> {
        let (dir, name) = crate::untrusted::parent_dir(path)?
            .map_err(|r| io::Error::other(format!("{}: {}", path.display(), refused(r))))?;
        let mut w = Writer {
            dir,
            name,
            path: path.to_path_buf(),
            rotation,
            owner,
            file: None,
            size: 0,
            blocked: None,
            notes: Vec::new(),
        };
        if let Ok(f) = w.open_file() {
            w.size = f.metadata()?.len();
            w.file = Some(f);
        }
        Ok(w)
    }

    /// Writes what is left of a line (`begins`: all of it), rotating first if a line that
    /// begins would take the log past the maximum: a line is never split across two
    /// files. Returns how much was written (a full disk may take part of it).
    fn write(&mut self, data: &[u8], begins: bool) -> io::Result<usize> {
        let file = match self.file.take() {
            Some(f) => f,
            None => {
                let f = self.open_file()?;
                self.size = f.metadata()?.len();
                f
            }
        };
        self.file = Some(file);
        if begins {
            self.maybe_rotate(data.len() as u64);
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("no log file"));
        };
        loop {
            match f.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.size += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A full disk is waited out on the same file; anything else reopens
                    // the log by name (it may have been removed or replaced meanwhile).
                    if !matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
                        self.file = None;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Opens (or creates) the log the careful way (no symlink, FIFO or extra hard link),
    /// as the service's log always is; a file it creates goes to the service's user.
    fn open_file(&mut self) -> io::Result<File> {
        let (f, created) = match crate::untrusted::open_append_in(&self.dir, &self.name, 0o640)? {
            Ok(opened) => opened,
            Err(r) => return Err(io::Error::other(refused(r))),
        };
        if let (Some((uid, gid)), true) = (self.owner, created) {
            let owner = (
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            );
            if let Err(e) = nix::unistd::fchown(&f, owner.0, owner.1) {
                self.notes.push(format!(
                    "{}: cannot give it to uid {uid}: {}",
                    self.path.display(),
                    describe(&e.into())
                ));
            }
        }
        Ok(f)
    }

    fn maybe_rotate(&mut self, len: u64) {
        let Some(max) = self.rotation.max_size else {
            return;
        };
        if self.size == 0 || self.size + len <= max {
            return;
        }
        if self
            .blocked
            .as_ref()
            .is_some_and(|(_, at)| Instant::now() < *at)
        {
            return;
        }
        match self.rotate() {
            Ok(()) => {
                if self.blocked.take().is_some() {
                    self.notes.push("log rotated again".into());
                }
            }
            Err(e) => {
                let why = format!(
                    "{} not rotated: {}; it grows past --log-max-size",
                    self.path.display(),
                    describe(&e)
                );
                if self.blocked.as_ref().map(|(w, _)| w) != Some(&why) {
                    self.notes.push(why.clone());
                }
                self.blocked = Some((why, Instant::now() + ROTATE_RETRY));
            }
        }
    }

    /// `LOG.N-1` → `LOG.N` … `LOG` → `LOG.1`, then a new `LOG`, all inside the directory
    /// opened at the start. rename(2) replaces an entry without following it, so a symlink
    /// or FIFO planted as `LOG.3` is replaced, not written through. A directory planted as
    /// `LOG.N` cannot be replaced: that step is skipped (the file below it takes its
    /// place, one rotated generation early); if it blocks `LOG.1`, or the new `LOG` cannot
    /// be created, the current file is kept and written on, so nothing is lost.
    fn rotate(&mut self) -> io::Result<()> {
        use nix::errno::Errno;
        use nix::fcntl::renameat;
        let numbered = |n: u32| {
            let mut p = self.name.clone();
            p.push(format!(".{n}"));
            p
        };
        let failed = |to: &OsStr, e: Errno| {
            io::Error::other(format!(
                "{}: {}",
                Path::new(to).display(),
                describe(&e.into())
            ))
        };
        if self.rotation.keep == 0 {
            match nix::unistd::unlinkat(
                &self.dir,
                self.name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            ) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(failed(&self.name, e)),
            }
        } else {
            for n in (1..self.rotation.keep).rev() {
                let (from, to) = (numbered(n), numbered(n + 1));
                match renameat(&self.dir, from.as_os_str(), &self.dir, to.as_os_str()) {
                    Ok(())
                    | Err(
                        Errno::ENOENT
                        | Errno::EISDIR
                        | Errno::ENOTDIR
                        | Errno::ENOTEMPTY
                        | Errno::EEXIST,
                    ) => {}
                    Err(e) => return Err(failed(&to, e)),
                }
            }
            let one = numbered(1);
            match renameat(&self.dir, self.name.as_os_str(), &self.dir, one.as_os_str()) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(failed(&one, e)),
            }
        }
        let file = self.open_file()?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }
}

fn refused(r: crate::untrusted::Refused) -> String {
    format!("refusing the log: it {r}")
}

/// An error as the notices say it: `ENOSPC: No space left on device`.
fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let errno = nix::errno::Errno::from_raw(n);
            format!("{errno:?}: {}", errno.desc())
        }
        None => e.to_string(),
    }
}

/// The log is failing: since when, why, and when to try again.
struct Failing {
    since: Instant,
    error: String,
    delay: Duration,
    retry_at: Instant,
}

/// The status file and what was last written to it (None: nothing there of ours).
struct StatusFile {
    path: PathBuf,
    run_id: String,
    written: Option<String>,
}

/// Reads lines, holds them in the [`Backlog`], writes them through the [`Writer`], and
/// deals with a log that fails; see the module docs.
pub struct Logger {
    writer: Writer,
    backlog: Backlog,
    /// pm's own lines: written after a line begun, before the held output.
    notices: Backlog,
    /// The input's last line, not yet ended by a newline.
    partial: Vec<u8>,
    timestamps: bool,
    failing: Option<Failing>,
    status: Option<StatusFile>,
}

impl Logger {
    /// `status`: the status file and this run's id.
    pub fn new(writer: Writer, status: Option<(PathBuf, String)>) -> Logger {
        Logger::with_backlog(writer, status, BACKLOG_MAX)
    }

    fn with_backlog(writer: Writer, status: Option<(PathBuf, String)>, cap: usize) -> Logger {
        Logger {
            timestamps: writer.rotation.timestamps,
            writer,
            backlog: Backlog::new(cap),
            notices: Backlog::new(NOTICES_MAX),
            partial: Vec::new(),
            failing: None,
            status: status.map(|(path, run_id)| StatusFile {
                path,
                run_id,
                written: None,
            }),
        }
    }

    /// Copies `input` to the log until EOF (every writer gone), then until what is held is
    /// written or `EOF_GRACE` (2 s) has passed. Waits only in poll(2) on the pipe (up to the
    /// next retry while the log is failing): the pipe is read whatever the log does.
    pub fn run(&mut self, mut input: impl Read + AsFd) -> io::Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut buf = vec![0u8; MAX_LINE];
        let mut eof: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let wait = self
                .failing
                .as_ref()
                .map(|f| f.retry_at.saturating_duration_since(now));
            match eof {
                None => {
                    let timeout = wait.map_or(PollTimeout::NONE, crate::process::timeout);
                    let mut fds = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, timeout) {
                        Ok(0) => {}
                        Ok(_) => match input.read(&mut buf) {
                            Ok(0) => eof = Some(now),
                            Ok(n) => self.feed(&buf[..n]),
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                                ) => {}
                            // Nothing more will come: write what was read.
                            Err(_) => eof = Some(now),
                        },
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                    if eof.is_some() {
                        self.end_input();
                    }
                }
                Some(at) => {
                    // Only retries are left (the pipe is closed): wait for the next one.
                    let left = (at + EOF_GRACE).saturating_duration_since(now);
                    std::thread::sleep(wait.unwrap_or_default().min(left));
                }
            }
            self.flush(Instant::now());
            if let Some(at) = eof {
                if self.idle() || Instant::now() >= at + EOF_GRACE {
                    break;
                }
            }
        }
        if self.idle() {
            self.set_status(None);
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{} bytes of output could not be written",
                self.backlog.bytes()
            )))
        }
    }

    /// Takes what was read: whole lines are held for writing; a line longer than
    /// [`MAX_LINE`] is cut into pieces, each given a newline.
    pub fn feed(&mut self, data: &[u8]) {
        let mut pending = std::mem::take(&mut self.partial);
        pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
            self.hold(pending[start..start + i + 1].to_vec());
            start += i + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            let mut piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            piece.push(b'\n');
            self.hold(piece);
        }
        self.partial = pending;
    }

    /// The input ended: a last line without a newline is written as it is.
    pub fn end_input(&mut self) {
        let last = std::mem::take(&mut self.partial);
        if !last.is_empty() {
            self.hold(last);
        }
    }

    fn stamped(&self, line: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.len() + 32);
        if self.timestamps {
            let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
            out.extend_from_slice(format!("{now} ").as_bytes());
        }
        out.extend_from_slice(line);
        out
    }

    fn hold(&mut self, line: Vec<u8>) {
        let line = if self.timestamps {
            self.stamped(&line)
        } else {
            line
        };
        self.backlog.push(line);
    }

    fn notice(&mut self, text: &str) {
        let line = self.stamped(format!("[pm: {text}]\n").as_bytes());
        self.notices.push(line);
    }

    fn idle(&self) -> bool {
        self.backlog.is_empty() && self.notices.is_empty() && self.partial.is_empty()
    }

    /// Writes what is held as far as the log takes it, never waiting for the log to come
    /// back: a failure sets the next retry (backoff), and until then this does nothing.
    pub fn flush(&mut self, now: Instant) {
        if self.failing.as_ref().is_some_and(|f| now < f.retry_at) {
            return;
        }
        loop {
            let between_lines = !self.backlog.mid_line();
            if between_lines && self.notices.is_empty() {
                if let Some((bytes, lines)) = self.backlog.take_dropped() {
                    self.notice(&format!(
                        "{bytes} bytes dropped ({lines} line{}): the log could not be written and more than {} KiB was waiting",
                        if lines == 1 { "" } else { "s" },
                        self.backlog.cap >> 10
                    ));
                }
            }
            let queue = if between_lines && !self.notices.is_empty() {
                &mut self.notices
            } else {
                &mut self.backlog
            };
            let Some((data, begins)) = queue.front() else {
                break;
            };
            match self.writer.write(data, begins) {
                Ok(n) => {
                    queue.written(n);
                    if let Some(f) = self.failing.take() {
                        let after =
                            crate::duration::elapsed(now.saturating_duration_since(f.since));
                        self.notice(&format!("log writes work again (after {after})"));
                    }
                }
                Err(e) => {
                    self.failed(&e, now);
                    break;
                }
            }
            for note in std::mem::take(&mut self.writer.notes) {
                self.notice(&note);
            }
        }
        for note in std::mem::take(&mut self.writer.notes) {
            self.notice(&note);
        }
        let want = self.status_text();
        self.set_status(want);
    }

    fn failed(&mut self, e: &io::Error, now: Instant) {
        let error = format!(
            "log write failed: {}: {}",
            self.writer.path.display(),
            describe(e)
        );
        match &mut self.failing {
            Some(f) => {
                f.delay = (f.delay * 2).min(RETRY_MAX);
                f.retry_at = now + f.delay;
                f.error = error;
            }
            None => {
                self.notice(&format!("{error}; retrying"));
                self.failing = Some(Failing {
                    since: now,
                    error,
                    delay: RETRY_FIRST,
                    retry_at: now + RETRY_FIRST,
                });
            }
        }
    }

    /// What pm-status should say about the log, if anything.
    fn status_text(&self) -> Option<String> {
        if let Some(f) = &self.failing {
            let mut s = format!(
                "{}; retrying, {} bytes waiting",
                f.error,
                self.backlog.bytes()
            );
            if self.backlog.dropped_total() > 0 {
                s.push_str(&format!(", {} dropped", self.backlog.dropped_total()));
            }
            return Some(s);
        }
        self.writer.blocked.as_ref().map(|(why, _)| why.clone())
    }

    /// Writes (atomically: pm-status never reads half of it) or removes the status file
    /// when what it should say changed. A failure is retried at the next flush.
    fn set_status(&mut self, want: Option<String>) {
        let Some(st) = &mut self.status else {
            return;
        };
        if want == st.written {
            return;
        }
        let done = match &want {
            Some(error) => serde_json::to_vec(&Status {
                run_id: st.run_id.clone(),
                error: error.clone(),
            })
            .is_ok_and(|data| {
                crate::state::write_atomic_with(&st.path, &data, 0o600, false).is_ok()
            }),
            None => remove_status(&st.path).is_ok(),
        };
        if done {
            st.written = want;
        }
    }
}

/// The logger process: `pm-start --pm-logger LOG MAX KEEP TS OWNER STATUS` (see
/// [`argv`]), stdin the service's output. The stop signals are the service's business,
/// not the logger's: it ends when the last writer has gone, so nothing written before a
/// stop is lost.
pub fn process_main() -> std::process::ExitCode {
    use nix::sys::signal::Signal;
    crate::sys::ignore_signals(&[
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ]);
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [log, max, keep, ts, owner, status] = args.as_slice() else {
        return crate::Code::Usage.into();
    };
    let (Some(rotation), Some(owner)) = (Rotation::from_args(max, keep, ts), parse_owner(owner))
    else {
        return crate::Code::Usage.into();
    };
    let status = (status != "-").then(|| {
        let run_id = std::env::var(crate::record::RUN_ID_VAR).unwrap_or_default();
        (PathBuf::from(status), run_id)
    });
    // Unbuffered: poll(2) must see all that is unread (a BufReader would hide some).
    let Ok(input) = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
    else {
        return crate::Code::Failure.into();
    };
    let written = Writer::open(Path::new(log), rotation, owner)
        .and_then(|w| Logger::new(w, status).run(&input));
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => {
            // Nobody to tell (stderr is the log we could not write): drain, so the service
            // is not killed by SIGPIPE for our failure.
            let _ = std::io::copy(&mut &input, &mut std::io::sink());
            crate::Code::Failure.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(log: &Path, rotation: Rotation) -> Writer {
        Writer::open(log, rotation, None).unwrap()
    }

    #[test]
    fn rotates_between_whole_lines_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        let w = writer(
            &log,
            Rotation {
                max_size: Some(20),
                keep: 2,
                timestamps: false,
            },
        );
        let mut l = Logger::new(w, None);
        let input: Vec<u8> = (0..10)
            .flat_map(|i| format!("line {i:02}\n").into_bytes())
            .collect();
        // Fed in odd-sized chunks, so lines arrive split across reads.
        for chunk in input.chunks(7) {
            l.feed(chunk);
            l.flush(Instant::now());
        }
        l.end_input();
        l.flush(Instant::now());
        assert!(l.idle());
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let cur = read(&log);
        let one = read(&dir.path().join("svc.log.1"));
        let two = read(&dir.path().join("svc.log.2"));
        assert!(!dir.path().join("svc.log.3").exists());
        for f in [&cur, &one, &two] {
            assert!(f.len() <= 20 && f.ends_with('\n'), "{f:?}");
        }
        // The newest lines, in order, across the files that are kept.
        let all = format!("{two}{one}{cur}");
        assert!(String::from_utf8(input).unwrap().ends_with(&all), "{all:?}");
    }

    #[test]
    fn stamps_lines_and_splits_only_overlong_ones() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        let w = writer(
            &log,
            Rotation {
                timestamps: true,
                ..Rotation::default()
            },
        );
        let mut input = b"hello\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        // Through a real pipe, as the logger process reads it.
        let (r, w_end) = nix::unistd::pipe().unwrap();
        let feeder = std::thread::spawn(move || File::from(w_end).write_all(&input));
        Logger::new(w, None).run(File::from(r)).unwrap();
        feeder.join().unwrap().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with("Z hello"), "{}", lines[0]);
        assert!(lines[0].starts_with("20"), "{}", lines[0]);
        assert!(
            !text.ends_with('\n'),
            "an unterminated last line stays unterminated"
        );
    }

    #[test]
    fn a_full_backlog_drops_the_oldest_lines_and_counts_them() {
        let mut b = Backlog::new(20);
        for i in 0..5 {
            b.push(format!("line {i}\n").into_bytes()); // 7 bytes each
        }
        // 35 bytes pushed, 20 fit: the two oldest went.
        assert_eq!(b.bytes(), 21 - 7);
        assert_eq!(b.take_dropped(), Some((21, 3)));
        assert_eq!(b.take_dropped(), None);
        assert_eq!(b.front(), Some((&b"line 3\n"[..], true)));
        // A line begun in the log is finished, never dropped.
        b.written(3);
        assert!(b.mid_line());
        for i in 5..9 {
            b.push(format!("line {i}\n").into_bytes());
        }
        assert_eq!(b.front(), Some((&b"e 3\n"[..], false)));
        b.written(4);
        assert_eq!(b.front(), Some((&b"line 8\n"[..], true)));
        assert_eq!(b.take_dropped(), Some((28, 4)));
        assert_eq!(b.dropped_total(), 49);
    }

    #[test]
    fn a_failing_log_is_retried_and_what_happened_is_written_once_it_works() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        let status = dir.path().join(".svc.logstatus");
        // The log's name is taken by a directory: nothing can be written.
        std::fs::create_dir(&log).unwrap();
        let w = writer(&log, Rotation::default());
        let mut l = Logger::with_backlog(w, Some((status.clone(), "run-1".into())), 30);
        let mut t = Instant::now();
        for i in 0..10 {
            l.feed(format!("line {i}\n").as_bytes());
            l.flush(t);
        }
        // A retry that fails again updates the status file.
        t += RETRY_MAX;
        l.flush(t);
        let said = read_status(&status, "run-1").expect("a status file");
        assert!(said.contains("log write failed"), "{said}");
        assert!(said.contains("dropped"), "{said}");
        assert_eq!(read_status(&status, "run-0"), None, "another run's");
        std::fs::remove_dir(&log).unwrap();
        // Not before the retry is due.
        l.flush(t);
        assert!(!log.exists());
        t += RETRY_MAX;
        l.flush(t);
        assert!(l.idle());
        assert!(!status.exists(), "the status file is removed on recovery");
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("[pm: log write failed: "), "{text}");
        assert!(lines[0].ends_with("; retrying]"), "{text}");
        assert!(lines[1].starts_with("[pm: log writes work again"), "{text}");
        assert!(
            lines[2].starts_with("[pm: 42 bytes dropped (6 lines)"),
            "{text}"
        );
        assert_eq!(
            lines[3..],
            ["line 6", "line 7", "line 8", "line 9"],
            "{text}"
        );
    }

    #[test]
    fn a_directory_in_a_rotation_slot_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        std::fs::create_dir(dir.path().join("svc.log.1")).unwrap();
        std::fs::write(dir.path().join("svc.log.1/x"), "").unwrap();
        let w = writer(
            &log,
            Rotation {
                max_size: Some(10),
                keep: 1,
                timestamps: false,
            },
        );
        let mut l = Logger::new(w, None);
        for i in 0..5 {
            l.feed(format!("line {i}\n").as_bytes());
            l.flush(Instant::now());
        }
        let text = std::fs::read_to_string(&log).unwrap();
        for i in 0..5 {
            assert!(text.contains(&format!("line {i}\n")), "{text}");
        }
        assert!(text.contains("not rotated"), "{text}");
        assert_eq!(text.matches("not rotated").count(), 1, "{text}");
        assert!(dir.path().join("svc.log.1/x").exists());
    }
}
