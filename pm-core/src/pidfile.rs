//! PID files: strict reading, atomic writing, careful removal.
//!
//! A PID file is input from outside pm (the service, an admin, an attacker on a shared
//! host), so reading is strict: first line only (PostgreSQL's `postmaster.pid` has more),
//! decimal digits only, never 0 or 1 or above the kernel's `pid_max`, and never a file
//! larger than 4 KiB or something that is not a regular file.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::process;
use crate::untrusted::{self, Opened};

/// Largest PID file pm will read.
pub const MAX_SIZE: u64 = 4096;

/// A PID read from a file, with the time the file was last written (for identity checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    pub pid: i32,
    pub mtime: SystemTime,
    /// The file's owner: a non-root owner may only name its own processes.
    pub owner: u32,
}

impl PidFile {
    /// How to verify the process this file names.
    pub fn expect(&self) -> crate::process::Expect {
        crate::process::Expect::WrittenBy {
            mtime: self.mtime,
            owner: Some(self.owner),
        }
    }
}

/// Parses the contents of a PID file.
pub fn parse(text: &str) -> std::result::Result<i32, String> {
    let first = text.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        return Err("empty".into());
    }
    if !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{first:?} is not a decimal PID"));
    }
    let pid: i64 = first
        .parse()
        .map_err(|_| format!("{first:?} is out of range"))?;
    if pid <= 1 {
        return Err(format!("PID {pid} is never a service"));
    }
    let max = process::pid_max();
    if pid > max || pid > i64::from(i32::MAX) {
        return Err(format!("PID {pid} is above the kernel's pid_max ({max})"));
    }
    Ok(pid as i32)
}

/// Reads a PID file; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> Result<Option<PidFile>> {
    let invalid = |reason: String| Error::InvalidPidFile {
        path: path.to_path_buf(),
        reason,
    };
    // The service's user may control this path: no symlink, no FIFO, no /proc, and the
    // owner that counts is the owner of the file itself.
    let (file, meta) = match untrusted::open_read(path).map_err(|e| Error::io(path, e))? {
        Opened::File(f, m) => (f, m),
        Opened::Missing => return Ok(None),
        Opened::Refused(r) => return Err(invalid(r.0)),
    };
    if meta.size() > MAX_SIZE {
        return Err(invalid(format!("larger than {MAX_SIZE} bytes")));
    }
    let mut buf = Vec::with_capacity(64);
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > MAX_SIZE {
        return Err(invalid(format!("larger than {MAX_SIZE} bytes")));
    }
    let text = String::from_utf8_lossy(&buf);
    let pid = parse(&text).map_err(invalid)?;
    let mtime = meta.modified().map_err(|e| Error::io(path, e))?;
    Ok(Some(PidFile {
        pid,
        mtime,
        owner: meta.uid(),
    }))
}

/// Writes `pid` to `path` atomically (temp file in the same directory, rename). Not
/// fsynced: pm writes it before the service may exec, and a PID file names a process that
/// no power cut leaves running.
pub fn write(path: &Path, pid: i32) -> Result<()> {
    crate::state::write_atomic_with(path, format!("{pid}\n").as_bytes(), 0o644, false)
}

/// Removes the PID file only if it still names `pid`; true when it was removed.
pub fn remove_if_names(path: &Path, pid: i32) -> Result<bool> {
    match read(path) {
        Ok(Some(p)) if p.pid == pid => {}
        _ => return Ok(false),
    }
    untrusted::remove(path).map_err(|e| Error::io(path, e))
}

/// Removes a PID file that is stale (unreadable junk, or naming a process that is gone).
pub fn remove(path: &Path) -> Result<bool> {
    untrusted::remove(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn parses_first_line_trimmed() {
        assert_eq!(parse("4242\n"), Ok(4242));
        assert_eq!(parse("  4242  \n"), Ok(4242));
        assert_eq!(parse("4242"), Ok(4242));
        // PostgreSQL's postmaster.pid: PID, data dir, start time, port, ...
        assert_eq!(
            parse("4242\n/var/lib/postgresql/15/main\n1700000000\n5432\n"),
            Ok(4242)
        );
    }

    #[test]
    fn rejects_junk_signs_and_reserved_pids() {
        for bad in [
            "",
            "\n",
            "1",
            "0",
            "-5",
            "+5",
            "abc",
            "12abc",
            "0x10",
            "4 2",
            "99999999999999999999",
            "4194305000",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejects_pid_above_pid_max() {
        let max = process::pid_max();
        assert!(parse(&(max + 1).to_string()).is_err());
        assert!(parse(&max.to_string()).is_ok());
    }

    #[test]
    fn read_refuses_huge_files_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pid");
        let mut content = b"4242\n".to_vec();
        content.resize(1 << 20, b'x');
        fs::write(&big, &content).unwrap();
        let e = read(&big).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert_eq!(read(&dir.path().join("missing.pid")).unwrap(), None);
        // Named pipes must not make the reader block.
        let fifo = dir.path().join("fifo.pid");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read(&fifo).is_err());
    }

    #[test]
    fn read_rejects_each_bad_content() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["1", "0", "-5", "abc", ""] {
            let p = dir.path().join("x.pid");
            fs::write(&p, bad).unwrap();
            assert!(read(&p).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn write_then_remove_only_if_it_names_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("svc.pid");
        write(&p, 4242).unwrap();
        let got = read(&p).unwrap().unwrap();
        assert_eq!(got.pid, 4242);
        assert!(got.mtime <= SystemTime::now());
        assert!(!remove_if_names(&p, 4243).unwrap());
        assert!(p.exists());
        assert!(remove_if_names(&p, 4242).unwrap());
        assert!(!p.exists());
        assert!(!remove_if_names(&p, 4242).unwrap());
    }
}
