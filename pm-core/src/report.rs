//! Message conventions shared by the tools: data on stdout, messages on stderr, each
//! message prefixed `pm-TOOL: NAME:`; a closed stdout is a quiet success.

use std::io::{self, Write};
use std::path::Path;

/// Prints `TOOL: NAME: MESSAGE` on stderr.
pub fn say(tool: &str, name: &str, msg: impl std::fmt::Display) {
    let tool = SPEAKER.get().copied().unwrap_or(tool);
    let _ = writeln!(io::stderr().lock(), "{tool}: {name}: {msg}");
}

/// Prints `text` as a line on stderr. Never panics (as `eprintln!` does when stderr is
/// gone: a terminal hung up, and pm-up still has services to stop).
pub fn line(text: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// The tool every message of this process is said as, whatever code says it: pm-up's
/// children run pm-start's start, and the user ran pm-up.
static SPEAKER: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Has [`say`] name `tool` from now on in this process (first call wins).
pub fn speak_as(tool: &'static str) {
    let _ = SPEAKER.set(tool);
}

/// Writes `text` to stdout; a closed pipe (`| head -1`) is not an error.
pub fn out(text: &str) -> io::Result<()> {
    let mut o = io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// The last `n` lines of a log, from byte `from` on (the part this start wrote).
pub fn log_tail(path: &Path, from: u64, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    // The log may have been swapped for a FIFO or a symlink: never open such a thing.
    let Ok(crate::untrusted::Opened::File(mut f, meta)) = crate::untrusted::open_read(path) else {
        return Vec::new();
    };
    let len = meta.len();
    // Read at most the last 64 KiB: enough for 20 lines, bounded for huge logs.
    let start = from.max(len.saturating_sub(64 * 1024)).min(len);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(64 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_takes_only_new_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "old1\nold2\n").unwrap();
        let from = 10;
        let mut s = String::from("old1\nold2\n");
        for i in 0..30 {
            s.push_str(&format!("new{i}\n"));
        }
        std::fs::write(&p, &s).unwrap();
        let tail = log_tail(&p, from, 20);
        assert_eq!(tail.len(), 20);
        assert_eq!(tail[0], "new10");
        assert_eq!(tail[19], "new29");
        assert_eq!(log_tail(&p, from, 100).len(), 30);
        assert!(log_tail(&dir.path().join("none"), 0, 5).is_empty());
    }
}
