//! The harness's own small reader of `/proc`, so the tests judge pm with code that is not
//! pm's: a bug in pm-core's process reader cannot hide itself from the tests.
//!
//! Zombies (and dead tasks, states `Z`, `X`, `x`) count as gone everywhere: they run no
//! code and hold nothing but their PID, and on some hosts PID 1 reaps orphans only every
//! second or two.

use std::fs;

/// The fields of `/proc/PID/stat` the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Field 1.
    pub pid: i32,
    /// Field 2, without its parentheses (it may itself hold spaces and parentheses).
    pub comm: String,
    /// Field 3: `R`, `S`, `D`, `T`, `Z`, ...
    pub state: char,
    /// Field 4.
    pub ppid: i32,
    /// Field 5: the process group.
    pub pgrp: i32,
    /// Field 6: the session.
    pub session: i32,
    /// Field 22: clock ticks after boot at which the process started.
    pub start_time: u64,
}

impl Stat {
    /// Parses the text of `/proc/PID/stat`. `comm` runs from the first `(` to the *last*
    /// `)`, so a name like `a) S 1 (b` cannot shift the fields after it.
    pub fn parse(text: &str) -> Option<Stat> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        if close < open {
            return None;
        }
        let pid = text[..open].trim().parse().ok()?;
        let comm = text[open + 1..close].to_string();
        // rest[0] is field 3; field N is rest[N - 3].
        let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
        let field = |n: usize| rest.get(n - 3).copied();
        Some(Stat {
            pid,
            comm,
            state: field(3)?.chars().next()?,
            ppid: field(4)?.parse().ok()?,
            pgrp: field(5)?.parse().ok()?,
            session: field(6)?.parse().ok()?,
            start_time: field(22)?.parse().ok()?,
        })
    }

    /// Reads `/proc/PID/stat`; `None` when there is no such process (or its stat cannot be
    /// read or parsed). A zombie is returned: see [`Stat::is_zombie`] and [`is_alive`].
    pub fn read(pid: i32) -> Option<Stat> {
        if pid <= 0 {
            return None;
        }
        let raw = fs::read(format!("/proc/{pid}/stat")).ok()?;
        Stat::parse(&String::from_utf8_lossy(&raw))
    }

    /// A zombie or dead task: counts as gone.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// True while `pid` is a running (non-zombie) process.
pub fn is_alive(pid: i32) -> bool {
    Stat::read(pid).is_some_and(|s| !s.is_zombie())
}

/// Every PID listed in `/proc` right now (zombies included).
pub fn pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// A snapshot of every live process (zombies left out).
pub fn scan() -> Vec<Stat> {
    pids()
        .into_iter()
        .filter_map(Stat::read)
        .filter(|s| !s.is_zombie())
        .collect()
}

/// The NUL-separated entries of `/proc/PID/FILE`; empty when the process is gone.
fn nul_list(pid: i32, file: &str) -> Vec<String> {
    fs::read(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The environment of `pid` as `KEY=VALUE` entries (empty when the process is gone or is
/// a zombie; root can read any process's).
pub fn environ(pid: i32) -> Vec<String> {
    nul_list(pid, "environ")
}

/// The arguments of `pid` (the process title, for daemons that rewrite it); empty when the
/// process is gone or is a zombie.
pub fn cmdline(pid: i32) -> Vec<String> {
    nul_list(pid, "cmdline")
}

/// The cgroup2 mount point, from `/proc/self/mountinfo` (the root of a read-write cgroup2
/// mount), if any.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        let ok = right.starts_with("cgroup2 ") && f.get(3) == Some(&"/");
        let rw = f.get(5)?.split(',').next() == Some("rw");
        (ok && rw).then(|| std::path::PathBuf::from(f[4]))
    })
}

/// The cgroup2 path of `pid` relative to the hierarchy's root (`0::` in /proc/PID/cgroup).
pub fn cgroup_of(pid: i32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Every PID listed in `cgroup.procs` of `dir` and of the cgroups below it, live or not.
pub fn cgroup_pids(dir: &std::path::Path) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if let Ok(t) = fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(rd) = fs::read_dir(&d) {
            todo.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_runs_to_the_last_parenthesis() {
        let text = "42 (a) S 1 (b) R 7 8 9 10 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 12345 0 0\n";
        let s = Stat::parse(text).unwrap();
        assert_eq!(s.pid, 42);
        assert_eq!(s.comm, "a) S 1 (b");
        assert_eq!(s.state, 'R');
        assert_eq!((s.ppid, s.pgrp, s.session), (7, 8, 9));
        assert_eq!(s.start_time, 12345);
    }

    #[test]
    fn short_or_broken_lines_are_none() {
        assert_eq!(Stat::parse("1 (x) S 0 1 1"), None);
        assert_eq!(
            Stat::parse("1 )x( S 0 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5"),
            None
        );
        assert_eq!(Stat::parse(""), None);
    }

    #[test]
    fn this_process_is_alive_and_read_correctly() {
        let me = std::process::id() as i32;
        assert!(is_alive(me));
        let s = Stat::read(me).unwrap();
        assert_eq!(s.pid, me);
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(s.pgrp, nix::unistd::getpgrp().as_raw());
        assert!(scan().iter().any(|s| s.pid == me));
        assert!(!cmdline(me).is_empty());
        assert!(!is_alive(0) && !is_alive(-1));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: it stays a zombie until we wait for it.
        let t = std::time::Instant::now();
        while Stat::read(pid).is_some_and(|s| !s.is_zombie()) {
            assert!(t.elapsed() < std::time::Duration::from_secs(30));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(Stat::read(pid).unwrap().is_zombie());
        assert!(!is_alive(pid));
        assert!(!scan().iter().any(|s| s.pid == pid));
        child.wait().unwrap();
    }
}
