//! Per-name locks: start and stop of one NAME are serialised across processes.
//!
//! `flock(2)` on `STATE/NAME.lock`; the kernel drops it when the holder exits or dies, so a
//! killed pm-start never leaves a name locked. A lock file is removed only by its holder
//! ([`NameLock::remove`], for a name that has no record), and a taker checks, once it holds
//! the lock, that the path still names the file it locked (else it takes the new one): so
//! two processes never hold "the" lock on two different inodes.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{errno, Error, Result};

/// Held while alive; released on drop.
#[derive(Debug)]
pub struct NameLock {
    lock: Flock<File>,
    path: std::path::PathBuf,
}

impl NameLock {
    /// Blocks until the lock at `path` is ours.
    pub fn acquire(path: &Path) -> Result<NameLock> {
        Self::take(path, FlockArg::LockExclusive)
            .map(|l| l.ok_or_else(|| Error::Os("lock".into())))?
    }

    /// Takes the lock if nobody holds it; `Ok(None)` when somebody does.
    pub fn try_acquire(path: &Path) -> Result<Option<NameLock>> {
        Self::take(path, FlockArg::LockExclusiveNonblock)
    }

    /// [`NameLock::acquire`], shared: with other shared holders, never with an exclusive
    /// one.
    pub fn acquire_shared(path: &Path) -> Result<NameLock> {
        Self::take(path, FlockArg::LockShared).map(|l| l.ok_or_else(|| Error::Os("lock".into())))?
    }

    /// [`NameLock::try_acquire`], shared.
    pub fn try_acquire_shared(path: &Path) -> Result<Option<NameLock>> {
        Self::take(path, FlockArg::LockSharedNonblock)
    }

    /// Removes the lock file, then releases the lock: for a name that has no record (a
    /// typo, a forgotten service), so no `NAME.lock` is left behind. Whoever waited on the
    /// removed file finds the path gone and takes a new one.
    pub fn remove(self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    fn take(path: &Path, arg: FlockArg) -> Result<Option<NameLock>> {
        loop {
            let Some(lock) = Self::take_once(path, arg)? else {
                return Ok(None);
            };
            // Still the file at `path`? (Its holder may have removed it meanwhile.)
            let held = lock.lock.metadata().map_err(|e| Error::io(path, e))?;
            match std::fs::symlink_metadata(path) {
                Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => {
                    return Ok(Some(lock))
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
    }

    fn take_once(path: &Path, arg: FlockArg) -> Result<Option<NameLock>> {
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        loop {
            match Flock::lock(file, arg) {
                Ok(lock) => {
                    return Ok(Some(NameLock {
                        lock,
                        path: path.to_path_buf(),
                    }))
                }
                Err((f, Errno::EINTR)) => file = f,
                Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => return Err(Error::io(path, errno(e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn second_taker_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.lock");
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (path, inside, max_inside) = (path.clone(), inside.clone(), max_inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let _l = NameLock::acquire(&path).unwrap();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max_inside.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn lock_is_released_when_the_holding_process_dies() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.lock");
        // Another process takes the lock and says so.
        let mut holder = Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys,time\nf=open(sys.argv[1],'a')\nfcntl.flock(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(100)",
            ])
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        assert!(NameLock::try_acquire(&path).unwrap().is_none());
        holder.kill().unwrap();
        holder.wait().unwrap();
        let t = Instant::now();
        let l = NameLock::acquire(&path).unwrap();
        assert!(t.elapsed() < Duration::from_secs(10));
        drop(l);
        assert!(NameLock::try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn a_removed_lock_file_is_never_held_twice() {
        // Threads take the lock, and each time one removes the file on its way out: still
        // never two inside at once.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.lock");
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (path, inside, max_inside) = (path.clone(), inside.clone(), max_inside.clone());
                std::thread::spawn(move || {
                    for j in 0..30 {
                        let l = NameLock::acquire(&path).unwrap();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max_inside.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(100));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        if (i + j) % 2 == 0 {
                            l.remove().unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn refuses_a_symlinked_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let path = dir.path().join("web.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(NameLock::acquire(&path).is_err());
    }
}
