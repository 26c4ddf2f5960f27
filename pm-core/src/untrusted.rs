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
//!
//! The same holds one level up: the service's user may own a directory on the way
//! (`/srv/app/run/app.pid`, with `run` swapped for a symlink to `/run`). So the path is
//! walked one directory at a time with `O_PATH|O_NOFOLLOW`; a symlink on the way is followed
//! only when root or the caller owns it (`/var/run -> /run` is fine, a link planted by
//! another user is refused), and the last part is opened relative to the directory found.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::{openat, readlinkat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, Mode};

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

/// Symlinks followed on the way to one file, at most (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// The directory that holds `path`'s last part, reached without following a symlink that
/// someone other than root or the caller owns, and that last part's name.
pub fn parent_dir(path: &Path) -> io::Result<Result<(OwnedFd, OsString), Refused>> {
    use std::path::Component;
    let me = nix::unistd::geteuid().as_raw();
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root = || openat(AT_FDCWD, "/", dir_flags, Mode::empty()).map_err(io::Error::from);
    let Some(name) = path.file_name().map(OsStr::to_os_string) else {
        return Ok(Err(Refused("does not name a file".into())));
    };
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut dir = if parent.is_absolute() {
        root()?
    } else {
        openat(AT_FDCWD, ".", dir_flags, Mode::empty()).map_err(io::Error::from)?
    };
    // Components still to walk, last first (so a link's target can be pushed in front).
    let mut todo: Vec<OsString> = Vec::new();
    let push = |todo: &mut Vec<OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => todo.push(n.to_os_string()),
                Component::ParentDir => todo.push("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    push(&mut todo, parent);
    let mut links = 0;
    while let Some(c) = todo.pop() {
        let fd = openat(
            &dir,
            c.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        let st = fstat(&fd).map_err(io::Error::from)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => dir = fd,
            libc::S_IFLNK => {
                if st.st_uid != 0 && st.st_uid != me {
                    return Ok(Err(Refused(format!(
                        "is reached through {:?}, a symbolic link owned by uid {} (only root's or your own links are followed)",
                        c, st.st_uid
                    ))));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = readlinkat(&fd, "").map_err(io::Error::from)?;
                let target = Path::new(&target);
                if target.is_absolute() {
                    dir = root()?;
                }
                push(&mut todo, target);
            }
            _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }
    Ok(Ok((dir, name)))
}

fn open_in(dir: &OwnedFd, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<File> {
    let flags = flags | OFlag::from_bits_truncate(FLAGS);
    openat(dir, name, flags, Mode::from_bits_truncate(mode))
        .map(File::from)
        .map_err(io::Error::from)
}

/// Opens `path` for reading: a regular file with one link, on a real file system.
pub fn open_read(path: &Path) -> io::Result<Opened> {
    let (dir, name) = match parent_dir(path) {
        Ok(Ok(d)) => d,
        Ok(Err(r)) => return Ok(Opened::Refused(r)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
        Err(e) => return Err(e),
    };
    finish(open_in(&dir, &name, OFlag::O_RDONLY, 0), false)
}

/// Removes `path` (never through a symlinked directory another user owns); false when it
/// was already gone.
pub fn remove(path: &Path) -> io::Result<bool> {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let (dir, name) = match parent_dir(path)? {
        Ok(d) => d,
        Err(r) => return Err(io::Error::other(format!("not removed: it {r}"))),
    };
    match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Opens `path` for appending, creating it (mode `mode`, subject to the umask) if missing.
/// `Ok((file, true))` when this call created it: only a file pm created may be handed to
/// another user, never one that was already there.
pub fn open_append(path: &Path, mode: u32) -> io::Result<Result<(File, bool), Refused>> {
    let (dir, name) = match parent_dir(path)? {
        Ok(d) => d,
        Err(r) => return Ok(Err(r)),
    };
    open_append_in(&dir, &name, mode)
}

/// [`open_append`] for entry `name` of a directory already opened by [`parent_dir`] (the
/// logger keeps its directory, so a later swap of a path component changes nothing).
pub fn open_append_in(
    dir: &OwnedFd,
    name: &OsStr,
    mode: u32,
) -> io::Result<Result<(File, bool), Refused>> {
    let append = OFlag::O_WRONLY | OFlag::O_APPEND;
    // O_CREAT|O_EXCL fails on any existing entry, a dangling symlink included, so
    // "created" is certain; otherwise open what is there and check it.
    let (r, created) = match open_in(dir, name, append | OFlag::O_CREAT | OFlag::O_EXCL, mode) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            (open_in(dir, name, append, 0), false)
        }
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
        return Ok(refused(
            "is on /proc, /sys or another kernel file system, not a file a service wrote",
        ));
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

/// /proc, /sys and the other kernel file systems hold numbers the kernel writes
/// (ns_last_pid: a PID of its choosing), not files a service wrote.
fn on_pseudo_fs(f: &File) -> bool {
    use nix::sys::statfs::*;
    const KERNEL_FS: [FsType; 9] = [
        PROC_SUPER_MAGIC,
        SYSFS_MAGIC,
        CGROUP_SUPER_MAGIC,
        CGROUP2_SUPER_MAGIC,
        DEBUGFS_MAGIC,
        TRACEFS_MAGIC,
        SECURITYFS_MAGIC,
        BPF_FS_MAGIC,
        NSFS_MAGIC,
    ];
    fstatfs(f).is_ok_and(|s| KERNEL_FS.contains(&s.filesystem_type()))
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

/// When the entry at `path` last changed (its ctime, from `lstat`: the entry itself, never
/// a symlink's target), for a path whose age is evidence (`file:` ready checks). The ctime,
/// unlike the mtime, cannot be set by the file's owner (`touch -d` sets the mtime and bumps
/// the ctime to now).
pub fn entry_changed(path: &Path) -> Option<std::time::SystemTime> {
    let m = std::fs::symlink_metadata(path).ok()?;
    if m.file_type().is_symlink() {
        return None;
    }
    let secs = u64::try_from(m.ctime()).ok()?;
    let nanos = u32::try_from(m.ctime_nsec()).ok()?;
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
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
    fn a_directory_symlink_of_another_user_is_not_followed_but_roots_is() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("f"), "42\n").unwrap();
        let link = dir.path().join("link");
        symlink(&real, &link).unwrap();
        // Our own (or root's) link on the way is followed.
        assert!(matches!(
            open_read(&link.join("f")).unwrap(),
            Opened::File(..)
        ));
        let me = nix::unistd::geteuid().as_raw();
        if me == 0 {
            // Planted by another user: refused, and nothing is created through it.
            std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
            match open_read(&link.join("f")).unwrap() {
                Opened::Refused(r) => assert!(r.0.contains("uid 65534"), "{r}"),
                o => panic!("{o:?}"),
            }
            assert!(open_append(&link.join("new"), 0o640).unwrap().is_err());
            assert!(!real.join("new").exists());
            assert!(remove(&link.join("f")).is_err());
            assert!(real.join("f").exists());
        }
        assert!(matches!(
            open_read(&dir.path().join("missing/f")).unwrap(),
            Opened::Missing
        ));
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
