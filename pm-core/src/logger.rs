//! The log writer (`--log-max-size`, `--log-keep`, `--log-timestamps`): one small process
//! per start, reading the service's stdout and stderr from a pipe and appending whole
//! lines to the log, rotated by size (`LOG.1`, `LOG.2`, …) and optionally time-stamped —
//! the s6-log / multilog habit.
//!
//! It is a process of the service (in its cgroup, carrying its run marker) that ignores the
//! stop signals and ends when the last writer has gone: a stop ends the service, the pipe
//! reads EOF, every line written before that is in the log, then it exits. Without these
//! options there is no logger: the service writes straight to its log.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Rotated files kept by default.
pub const DEFAULT_KEEP: u32 = 5;
/// A line longer than this is written in pieces (each piece ends with a newline).
pub const MAX_LINE: usize = 64 << 10;

/// How the log is written, as remembered in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rotation {
    /// Rotate before a line would take the log past this many bytes.
    pub max_size: Option<u64>,
    /// Rotated files kept (`LOG.1` … `LOG.N`).
    pub keep: u32,
    /// Prefix each line with its arrival time (RFC 3339 UTC, milliseconds).
    pub timestamps: bool,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: None,
            keep: DEFAULT_KEEP,
            timestamps: false,
        }
    }
}

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

/// The writing end of the logger: the log's directory (opened once, the careful way), the
/// current file and its size.
pub struct Writer {
    dir: OwnedFd,
    name: OsString,
    rotation: Rotation,
    file: File,
    size: u64,
}

impl Writer {
    /// The log may sit in a directory the service's user can write, and the logger runs
    /// as root: the directory is resolved once (no symlink of another user followed, see
    /// [`crate::untrusted::parent_dir`]) and every later open, rename and unlink is made
    /// relative to it, so swapping a path component for a symlink later changes nothing.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Writer> {
        let (dir, name) = crate::untrusted::parent_dir(path)?.map_err(|r| refused(path, r))?;
        let file = open(&dir, &name, path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            dir,
            name,
            rotation,
            file,
            size,
        })
    }

    /// Writes one line (with its newline), rotating first if it would not fit. A line is
    /// never split across two files.
    pub fn line(&mut self, line: &[u8]) -> io::Result<()> {
        let stamp = if self.rotation.timestamps {
            let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
            format!("{now} ")
        } else {
            String::new()
        };
        let len = (stamp.len() + line.len()) as u64;
        if let Some(max) = self.rotation.max_size {
            if self.size > 0 && self.size + len > max {
                self.rotate()?;
            }
        }
        let mut out = Vec::with_capacity(len as usize);
        out.extend_from_slice(stamp.as_bytes());
        out.extend_from_slice(line);
        self.file.write_all(&out)?;
        self.size += len;
        Ok(())
    }

    /// `LOG.N-1` → `LOG.N` … `LOG` → `LOG.1`, then a new `LOG`, all inside the directory
    /// opened at the start. rename(2) replaces an entry without following it, so a symlink
    /// planted as `LOG.3` is replaced, not written through.
    fn rotate(&mut self) -> io::Result<()> {
        use nix::fcntl::renameat;
        let numbered = |n: u32| {
            let mut p = self.name.clone();
            p.push(format!(".{n}"));
            p
        };
        let missing_ok = |r: nix::Result<()>| match r {
            Err(nix::errno::Errno::ENOENT) | Ok(()) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        };
        if self.rotation.keep == 0 {
            missing_ok(nix::unistd::unlinkat(
                &self.dir,
                self.name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            ))?;
        } else {
            for n in (1..self.rotation.keep).rev() {
                let (from, to) = (numbered(n), numbered(n + 1));
                missing_ok(renameat(
                    &self.dir,
                    from.as_os_str(),
                    &self.dir,
                    to.as_os_str(),
                ))?;
            }
            let one = numbered(1);
            missing_ok(renameat(
                &self.dir,
                self.name.as_os_str(),
                &self.dir,
                one.as_os_str(),
            ))?;
        }
        self.file = open(&self.dir, &self.name, Path::new(&self.name))?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }
}

fn refused(path: &Path, r: crate::untrusted::Refused) -> io::Error {
    io::Error::other(format!("{}: refusing the log: it {r}", path.display()))
}

/// The log is opened the careful way (no symlink, FIFO or extra hard link), as the
/// service's log always is.
fn open(dir: &OwnedFd, name: &OsStr, path: &Path) -> io::Result<File> {
    match crate::untrusted::open_append_in(dir, name, 0o640)? {
        Ok((f, _)) => Ok(f),
        Err(r) => Err(refused(path, r)),
    }
}

/// Copies `input` to the log line by line until EOF (every writer gone). A last line
/// without a newline is written as it is.
pub fn run(mut input: impl Read, writer: &mut Writer) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_LINE];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
            writer.line(&pending[start..start + i + 1])?;
            start += i + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            let mut piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            piece.push(b'\n');
            writer.line(&piece)?;
        }
    }
    if !pending.is_empty() {
        writer.line(&pending)?;
    }
    Ok(())
}

/// The logger process: `pm-start --pm-logger LOG MAX KEEP TS`, stdin the service's
/// output. The stop signals are the service's business, not the logger's: it ends when
/// the last writer has gone, so nothing written before a stop is lost.
pub fn process_main() -> std::process::ExitCode {
    use nix::sys::signal::Signal;
    crate::sys::ignore_signals(&[
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ]);
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [log, max, keep, ts] = args.as_slice() else {
        return crate::Code::Usage.into();
    };
    let Some(rotation) = Rotation::from_args(max, keep, ts) else {
        return crate::Code::Usage.into();
    };
    let written = Writer::open(Path::new(log), rotation)
        .and_then(|mut w| run(std::io::stdin().lock(), &mut w));
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => {
            // Nobody to tell (stderr is the log we could not write): drain, so the service
            // is not killed by SIGPIPE for our failure.
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            crate::Code::Failure.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_between_whole_lines_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        let mut w = Writer::open(
            &log,
            Rotation {
                max_size: Some(20),
                keep: 2,
                timestamps: false,
            },
        )
        .unwrap();
        let input: Vec<u8> = (0..10)
            .flat_map(|i| format!("line {i:02}\n").into_bytes())
            .collect();
        // Fed in odd-sized chunks, so lines arrive split across reads.
        struct Chunky<'a>(&'a [u8]);
        impl Read for Chunky<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(7).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        run(Chunky(&input), &mut w).unwrap();
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
        let mut w = Writer::open(
            &log,
            Rotation {
                timestamps: true,
                ..Rotation::default()
            },
        )
        .unwrap();
        let mut input = b"hello\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        run(&input[..], &mut w).unwrap();
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
}
