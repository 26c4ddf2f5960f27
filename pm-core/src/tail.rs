//! Reading services' logs together (pm-logs): each line prefixed with its service's name,
//! and with `follow`, new lines as they are written, across pm's rotations.
//!
//! A log is followed by its open file, not its name: when the logger renames LOG to
//! LOG.1 and starts a new LOG, what is left in the old file is read to its end first, then
//! the new LOG from its start, so no line is lost or printed twice. Waiting is inotify on
//! the logs' directories; nothing is polled on a timer.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::error::{Error, Result};

/// Longer lines are cut (and the cut said): a log line is a message, not a file.
const MAX_LINE: usize = 64 * 1024;

/// Rotated generations looked through for the one a followed file became.
const MAX_GENERATIONS: usize = 1000;

/// One log being read.
struct Source {
    prefix: String,
    path: PathBuf,
    file: Option<File>,
    /// Inode of `file`, to notice that `path` now names another file.
    ino: u64,
    /// A line not ended yet.
    partial: Vec<u8>,
}

impl Source {
    fn open(&mut self, from_end: bool) {
        let Ok(crate::untrusted::Opened::File(mut f, meta)) =
            crate::untrusted::open_read(&self.path)
        else {
            return;
        };
        if from_end {
            let _ = f.seek(SeekFrom::End(0));
        }
        self.ino = meta.ino();
        self.file = Some(f);
    }

    /// Writes every complete line readable now.
    fn drain(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            self.partial.extend_from_slice(&buf[..n]);
            while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=i).collect();
                out.write_all(self.prefix.as_bytes())?;
                out.write_all(&line)?;
            }
            if self.partial.len() > MAX_LINE {
                out.write_all(self.prefix.as_bytes())?;
                out.write_all(&self.partial)?;
                out.write_all(b" [line cut]\n")?;
                self.partial.clear();
            }
        }
        Ok(())
    }

    /// A last line without its newline, at the end of a file that is done.
    fn end_partial(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if !self.partial.is_empty() {
            out.write_all(self.prefix.as_bytes())?;
            out.write_all(&self.partial)?;
            out.write_all(b"\n")?;
            self.partial.clear();
        }
        Ok(())
    }

    /// After a change in its directory: reads what is new, and follows a rotation.
    fn update(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.drain(out)?;
        let now = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if now.is_none() || now == Some(self.ino) {
            return Ok(());
        }
        // Rotated (or created): the old file is read to its end above. The new LOG is
        // opened before the rotated ones are looked at, so a rotation meanwhile cannot
        // slip a generation between the two.
        let old = self.ino;
        let Ok(crate::untrusted::Opened::File(newest, meta)) =
            crate::untrusted::open_read(&self.path)
        else {
            return Ok(()); // gone again, or not a file: looked at on the next change
        };
        self.end_partial(out)?;
        if self.file.is_some() {
            for f in self.between(old, meta.ino()) {
                self.file = Some(f);
                self.drain(out)?;
                self.end_partial(out)?;
            }
        }
        self.file = Some(newest);
        self.ino = meta.ino();
        self.drain(out)
    }

    /// The rotated generations newer than the file `old` and older than the file
    /// `newest`, oldest first, opened. The logger renames LOG.N-1 to LOG.N, …, LOG to
    /// LOG.1 while this runs, so the names are read upwards (a file moves upwards, ahead
    /// of the scan, or is seen twice: kept once), past a one-name gap, and known by inode.
    fn between(&self, old: u64, newest: u64) -> Vec<File> {
        let base = self.path.display().to_string();
        let mut seen: Vec<(u64, File)> = Vec::new();
        let mut misses = 0;
        let mut found = false;
        for k in 1..=MAX_GENERATIONS {
            match crate::untrusted::open_read(Path::new(&format!("{base}.{k}"))) {
                Ok(crate::untrusted::Opened::File(f, m)) => {
                    misses = 0;
                    if m.ino() == old {
                        found = true;
                        break;
                    }
                    if !seen.iter().any(|(i, _)| *i == m.ino()) {
                        seen.push((m.ino(), f));
                    }
                }
                _ => {
                    misses += 1;
                    if misses > 1 {
                        break;
                    }
                }
            }
        }
        if !found {
            return Vec::new();
        }
        // Newer than `newest` (it rotated meanwhile): left for the next update.
        if let Some(i) = seen.iter().position(|(ino, _)| *ino == newest) {
            seen.drain(..=i);
        }
        seen.into_iter().rev().map(|(_, f)| f).collect()
    }
}

/// What ended [`show`]: the signal, or `None` (the end without `follow`, or a reader that
/// closed the pipe, as `pm-logs | head` does: a quiet success).
pub fn show(
    logs: &[(String, PathBuf)],
    lines: Option<usize>,
    follow: bool,
    interrupts: &SignalFd,
) -> Result<Option<Signal>> {
    match show_until(logs, lines, follow, interrupts) {
        Err(Error::Io { err, .. }) if err.kind() == io::ErrorKind::BrokenPipe => Ok(None),
        r => r,
    }
}

/// Prints the logs `(name, path)`: their last `lines` lines each (all with `None`), each
/// line prefixed `NAME | ` (names padded to one width), then with `follow` what is
/// written from then on, until a signal comes on `interrupts` (returned).
fn show_until(
    logs: &[(String, PathBuf)],
    lines: Option<usize>,
    follow: bool,
    interrupts: &SignalFd,
) -> Result<Option<Signal>> {
    let width = logs.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let broken = |e: io::Error| Error::io("stdout", e);
    // Watches first, so nothing written after the first read is missed.
    let watch = if follow {
        let i = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| Error::Os(format!("inotify: {e}")))?;
        let mut dirs: Vec<&Path> = logs.iter().filter_map(|(_, p)| p.parent()).collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            i.add_watch(
                d,
                AddWatchFlags::IN_MODIFY
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CLOSE_WRITE,
            )
            .map_err(|e| Error::io(d, crate::error::errno(e)))?;
        }
        Some(i)
    } else {
        None
    };
    let mut sources: Vec<Source> = logs
        .iter()
        .map(|(n, p)| Source {
            prefix: format!("{n:width$} | "),
            path: p.clone(),
            file: None,
            ino: 0,
            partial: Vec::new(),
        })
        .collect();
    for s in &mut sources {
        match lines {
            Some(n) => {
                for l in crate::report::log_tail(&s.path, 0, n) {
                    writeln!(out, "{}{l}", s.prefix).map_err(broken)?;
                }
                s.open(true);
            }
            None => {
                s.open(false);
                s.drain(&mut out).map_err(broken)?;
            }
        }
    }
    out.flush().map_err(broken)?;
    let Some(watch) = watch else { return Ok(None) };
    loop {
        let mut fds = [
            PollFd::new(interrupts.as_fd(), PollFlags::POLLIN),
            PollFd::new(watch.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, PollTimeout::NONE);
        if let Some(sig) = crate::signal::pending(interrupts) {
            return Ok(Some(sig));
        }
        while matches!(watch.read_events(), Ok(e) if !e.is_empty()) {}
        for s in &mut sources {
            s.update(&mut out).map_err(broken)?;
        }
        out.flush().map_err(broken)?;
    }
}
