//! Opening paths that someone other than the caller may control.
//!
//! Root runs pm for services that run as other users, and those users can write their PID
//! files, logs and readiness files, and the directories they sit in. Such a path may be
//! swapped for a symlink to a file of root's (which pm would then read, append to or chown),
//! for a FIFO (which blocks open(2) until someone opens the other end), or for a link into
//! /proc (whose files hold numbers the kernel writes). So every such path is opened without
//! following a final symlink and without blocking, and what was opened is checked with
//! fstat: its type, its link count, its file system, and its owner — the owner of what was
//! opened, never of a symlink's target.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why a path was refused; the text completes "PATH: ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an open of an untrusted path found.
#[derive(Debug)]
pub enum Opened {
    /// A regular file, with its metadata (from fstat of the open file).
    File(File, Metadata),
    /// Nothing at that path.
    Missing,
    /// Something pm must not use; the reason names it.
    Refused(Refused),
}

const FLAGS: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// Opens `path` for reading: a regular file with one link, on a real file system.
pub fn open_read(path: &Path) -> io::Result<Opened> {
    let r = File::options().read(true).custom_flags(FLAGS).open(path);
    finish(r, false)
}

/// Opens `path` for appending, creating it (mode `mode`, subject to the umask) if missing.
/// `Ok((file, true))` when this call created it: only a file pm created may be handed to
/// another user, never one that was already there.
pub fn open_append(path: &Path, mode: u32) -> io::Result<Result<(File, bool), Refused>> {
    let opts = |create_new: bool| {
        let mut o = File::options();
        o.append(true).mode(mode).custom_flags(FLAGS);
        if create_new {
            o.create_new(true);
        }
        o
    };
    // O_CREAT|O_EXCL fails on any existing entry, a dangling symlink included, so
    // "created" is certain; otherwise open what is there and check it.
    let (r, created) = match opts(true).open(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (opts(false).open(path), false),
        r => (r, true),
    };
    match finish(r, created)? {
        Opened::File(f, _) => {
            // The service gets this file description as stdout: it must block as usual.
            clear_nonblock(&f)?;
            Ok(Ok((f, created)))
        }
        Opened::Missing => Err(io::Error::from(io::ErrorKind::NotFound)),
        Opened::Refused(r) => Ok(Err(r)),
    }
}

fn clear_nonblock(f: &File) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(f, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(f, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

fn finish(r: io::Result<File>, created: bool) -> io::Result<Opened> {
    let file = match r {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(refused("is a symbolic link"));
        }
        // A FIFO with no reader, opened for writing without blocking.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Ok(refused("is not a regular file (a FIFO or socket)"));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(refused(&format!(
            "is not a regular file (a {})",
            kind(&meta)
        )));
    }
    if meta.nlink() > 1 && !created {
        return Ok(refused(&format!(
            "has {} hard links (a link to another file is refused)",
            meta.nlink()
        )));
    }
    if on_pseudo_fs(&file) {
        return Ok(refused("is on /proc or /sys, not a file a service wrote"));
    }
    Ok(Opened::File(file, meta))
}

fn refused(why: &str) -> Opened {
    Opened::Refused(Refused(why.to_string()))
}

fn kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// /proc and /sys hold numbers the kernel writes (ns_last_pid, a PID of its choosing), and
/// a directory symlink earlier in the path can lead there even when the last part is not a
/// symlink.
fn on_pseudo_fs(f: &File) -> bool {
    use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC, SYSFS_MAGIC};
    fstatfs(f).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == PROC_SUPER_MAGIC || t == SYSFS_MAGIC
    })
}

/// The wall clock as file timestamps see it (CLOCK_REALTIME_COARSE: the kernel stamps
/// files with the coarse clock, which may lag the precise one by a tick). A file whose
/// mtime is not older than this was written after the call.
pub fn coarse_now() -> std::time::SystemTime {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
        .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from(t))
        .unwrap_or_else(|_| std::time::SystemTime::now())
}

/// Like `lstat`, for a path whose age is evidence (`file:` ready checks): the entry itself,
/// never a symlink's target.
pub fn entry_mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| !m.file_type().is_symlink())
        .and_then(|m| m.modified().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn regular_files_open_and_everything_else_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "42\n").unwrap();
        assert!(matches!(open_read(&file).unwrap(), Opened::File(..)));
        assert!(matches!(
            open_read(&dir.path().join("missing")).unwrap(),
            Opened::Missing
        ));
        let link = dir.path().join("link");
        symlink(&file, &link).unwrap();
        match open_read(&link).unwrap() {
            Opened::Refused(r) => assert!(r.0.contains("symbolic link"), "{r}"),
            o => panic!("{o:?}"),
        }
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(open_read(&fifo).unwrap(), Opened::Refused(_)));
        match open_append(&fifo, 0o640).unwrap() {
            Err(r) => assert!(r.0.contains("not a regular file"), "{r}"),
            Ok(_) => panic!("FIFO opened as a log"),
        }
        let hard = dir.path().join("hard");
        std::fs::hard_link(&file, &hard).unwrap();
        assert!(open_append(&hard, 0o640).unwrap().is_err());
        match open_read(Path::new("/proc/sys/kernel/pid_max")).unwrap() {
            Opened::Refused(r) => assert!(r.0.contains("/proc"), "{r}"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn append_says_whether_it_created_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let (_, created) = open_append(&log, 0o640).unwrap().unwrap();
        assert!(created);
        let (_, created) = open_append(&log, 0o640).unwrap().unwrap();
        assert!(!created);
        // A dangling symlink is neither created through nor opened.
        let dangling = dir.path().join("dangling");
        symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(open_append(&dangling, 0o640).unwrap().is_err());
        assert!(!dir.path().join("nowhere").exists());
    }
}
