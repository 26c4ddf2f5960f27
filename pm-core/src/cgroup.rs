//! Containment by cgroup v2: one cgroup per start, where the kernel lets pm make one.
//!
//! Process groups, sessions and parent links are hints a service can shed (setsid, a
//! double fork, a crashed master); cgroup membership is not: every process a service
//! forks is born in its cgroup and cannot leave it without write access to another
//! cgroup. A cgroup also outlives the process that made it, so pm needs no daemon to hold
//! it. pm finds a writable cgroup2 hierarchy itself ([`Base::locate`]): root uses a `pm`
//! subtree of the unified mount, another user the subtree delegated to it (systemd's
//! `user@UID.service`) that its own cgroup sits in; anywhere else, and with
//! `--no-cgroup`/`PM_CGROUP=off`, pm tracks process groups as before.
//!
//! Layout: `BASE/pm/STATEID/NAME:RUNID`, where STATEID is the state directory's random
//! id (`.cgroup-id` in it: two state directories never share a cgroup, not even two at the
//! same path in different mount namespaces) and RUNID the start's run id. `:` cannot occur
//! in a NAME, nor in any of the kernel's interface file names.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::name::Name;
use crate::process::{self, Stat};
pub use crate::record::Limits;

/// `PM_CGROUP`: `off` forces process-group tracking, `on` makes a missing hierarchy an
/// error, `auto` (or unset) uses a cgroup where one can be made.
pub const ENV_VAR: &str = "PM_CGROUP";

/// What the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Auto,
    Off,
    Required,
}

impl Want {
    /// From `--no-cgroup` and `PM_CGROUP`; the flag wins.
    pub fn from_env(no_cgroup: bool) -> Result<Want> {
        if no_cgroup {
            return Ok(Want::Off);
        }
        match std::env::var(ENV_VAR).ok().as_deref() {
            None | Some("" | "auto") => Ok(Want::Auto),
            Some("off" | "0" | "no") => Ok(Want::Off),
            Some("on" | "1" | "yes") => Ok(Want::Required),
            Some(other) => Err(Error::InvalidArgument {
                what: "PM_CGROUP",
                value: other.into(),
                reason: "expected auto, on or off".into(),
            }),
        }
    }
}

impl crate::record::Record {
    /// This start's cgroup, if it has one that pm could have made for it in state
    /// directory `sd` (see [`Cgroup::from_record`]) and it is from this boot.
    pub fn cgroup(&self, sd: &crate::StateDir) -> Option<Cgroup> {
        let path = self.cgroup.as_deref()?;
        if !self.this_boot() {
            return None;
        }
        let id = sd.cgroup_id(false)?;
        Cgroup::from_record(path, &self.name, self.run_id.as_deref(), &id)
    }
}

impl Limits {
    /// (controller, interface file, value, option) for each limit that is set.
    fn entries(&self) -> Vec<(&'static str, &'static str, String, &'static str)> {
        let mut out = Vec::new();
        if let Some(m) = self.memory_max {
            out.push(("memory", "memory.max", m.to_string(), "--memory-max"));
        }
        if let Some(c) = &self.cpu_max {
            out.push(("cpu", "cpu.max", c.clone(), "--cpu-max"));
        }
        if let Some(p) = self.pids_max {
            out.push(("pids", "pids.max", p.to_string(), "--pids-max"));
        }
        out
    }

    /// The limits in the words pm-status prints: `memory 64M, cpu 50%, pids 50`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.memory_max {
            parts.push(format!("memory {}", human_bytes(m)));
        }
        if let Some(c) = &self.cpu_max {
            let pct = c
                .split_once(' ')
                .and_then(|(q, p)| Some(q.parse::<f64>().ok()? * 100.0 / p.parse::<f64>().ok()?));
            parts.push(match pct {
                Some(p) => format!("cpu {p:.0}%"),
                None => format!("cpu {c}"),
            });
        }
        if let Some(p) = self.pids_max {
            parts.push(format!("pids {p}"));
        }
        parts.join(", ")
    }
}

/// `64M`, `1.5G`: for status output.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}")
    } else if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// `--memory-max SIZE`: bytes, or with a K/M/G/T suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = |reason: &str| Error::InvalidArgument {
        what: "size",
        value: s.into(),
        reason: reason.into(),
    };
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| bad("expected a number of bytes, optionally with K, M, G or T"))?;
    if !v.is_finite() || v < 1.0 || v * mult as f64 > u64::MAX as f64 / 2.0 {
        return Err(bad("out of range"));
    }
    Ok((v * mult as f64) as u64)
}

/// `--cpu-max`: `50%` of one CPU, or a number of CPUs (`1.5`); as `cpu.max` takes it.
pub fn parse_cpu(s: &str) -> Result<String> {
    const PERIOD: f64 = 100_000.0;
    let bad = || Error::InvalidArgument {
        what: "--cpu-max",
        value: s.into(),
        reason: "expected a percentage of one CPU (50%) or a number of CPUs (1.5)".into(),
    };
    let t = s.trim();
    let cpus = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => t.parse::<f64>().map_err(|_| bad())?,
    };
    // The kernel takes quotas from 1 ms.
    if !cpus.is_finite() || cpus * PERIOD < 1000.0 || cpus > 1.0e6 {
        return Err(bad());
    }
    Ok(format!(
        "{} {}",
        (cpus * PERIOD).round() as u64,
        PERIOD as u64
    ))
}

/// `--pids-max N`.
pub fn parse_pids(s: &str) -> Result<u64> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Error::InvalidArgument {
            what: "--pids-max",
            value: s.into(),
            reason: "expected a number of processes, at least 1".into(),
        }),
    }
}

/// The cgroup2 mount point, from `/proc/self/mountinfo` (never assumed: a hybrid host
/// has it at /sys/fs/cgroup/unified, a modern one at /sys/fs/cgroup). Only a read-write
/// mount of the hierarchy's root counts. Read once per process: pm-status asks for every
/// record, and the mount table is the largest file it would read.
pub fn mount() -> Option<PathBuf> {
    static MOUNT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    MOUNT.get_or_init(find_mount).clone()
}

fn find_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        let fstype = right.split(' ').next()?;
        let rw = f.get(5)?.split(',').next() == Some("rw");
        (fstype == "cgroup2" && *f.get(3)? == "/" && rw).then(|| PathBuf::from(unescape(f[4])))
    })
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push(
                    d.iter()
                        .fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup2 path of process `pid` (`/proc/PID/cgroup`, the `0::` line), relative to
/// the hierarchy's root.
fn cgroup_of(pid: &str) -> Option<String> {
    let text = process::read_pseudo(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Where one state directory's services get their cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    mount: PathBuf,
    /// The directory above `pm/` (the hierarchy's root, or the delegated subtree).
    parent: PathBuf,
    /// `parent/pm/STATEID`.
    dir: PathBuf,
}

impl Base {
    /// Finds where this caller may make cgroups for the services of state directory
    /// `sd`, without creating any cgroup (`create_id` makes the state directory's id if it
    /// has none). `Err` says why not, in words for a message.
    pub fn locate(sd: &crate::StateDir, create_id: bool) -> std::result::Result<Base, String> {
        let (mount, parent) = writable_parent()?;
        let id = sd
            .cgroup_id(create_id)
            .ok_or("the state directory has no cgroup id yet")?;
        let dir = parent.join("pm").join(id);
        Ok(Base { mount, parent, dir })
    }

    /// `BASE/pm/STATEID`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the cgroup of one start, with `limits` written before anything joins it.
    pub fn create(&self, name: &Name, run_id: &str, limits: &Limits) -> Result<Cgroup> {
        let top = self.parent.join("pm");
        let mkdirs = || -> Result<()> {
            for d in [&top, &self.dir] {
                match fs::create_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io(d, e)),
                }
            }
            Ok(())
        };
        mkdirs()?;
        let entries = limits.entries();
        for (controller, _, _, option) in &entries {
            // Each level above the service's cgroup must hand the controller down.
            for (dir, child) in [
                (&self.parent, &top),
                (&top, &self.dir),
                (&self.dir, &self.dir),
            ] {
                let offered = fs::read_to_string(dir.join("cgroup.controllers"))
                    .map_err(|e| Error::io(dir.join("cgroup.controllers"), e))?;
                if !offered.split_whitespace().any(|c| c == *controller) {
                    let _ = fs::remove_dir(&self.dir);
                    return Err(Error::Cgroup(format!(
                        "{option} needs the cgroup v2 {controller} controller, which {} does not offer (it has: {}){}",
                        dir.display(),
                        if offered.trim().is_empty() { "none" } else { offered.trim() },
                        if dir == &self.mount { "; on a hybrid host it is usually bound to the v1 hierarchy" } else { "" }
                    )));
                }
                let ctl = dir.join("cgroup.subtree_control");
                let enabled = fs::read_to_string(&ctl).unwrap_or_default();
                if !enabled.split_whitespace().any(|c| c == *controller) {
                    write_file(&ctl, &format!("+{controller}")).map_err(|e| {
                        let _ = fs::remove_dir(&self.dir);
                        Error::Cgroup(format!(
                            "{option}: cannot enable the {controller} controller for {}: {e}",
                            child.display()
                        ))
                    })?;
                }
            }
        }
        let path = self.dir.join(leaf(name.as_str(), run_id));
        // Another tool removes the state directory's cgroup once it is empty: make it again.
        let mut made = fs::create_dir(&path);
        for _ in 0..8 {
            match &made {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    mkdirs()?;
                    made = fs::create_dir(&path);
                }
                _ => break,
            }
        }
        made.map_err(|e| Error::io(&path, e))?;
        let cg = Cgroup::at(&self.mount, path).ok_or_else(|| Error::Cgroup("bad path".into()))?;
        for (_, file, value, option) in entries {
            if let Err(e) = write_file(&cg.path.join(file), &value) {
                let _ = cg.remove();
                return Err(Error::Cgroup(format!(
                    "{option}: writing {value:?} to {file}: {e}"
                )));
            }
        }
        Ok(cg)
    }

    /// The cgroups under this state directory, with the NAME each belongs to (every
    /// start's, including ones no record names any more).
    pub fn cgroups(&self) -> Vec<(String, Cgroup)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(f) = file.to_str() else { continue };
            let Some((name, _run)) = f.split_once(':') else {
                continue;
            };
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if let Some(cg) = Cgroup::at(&self.mount, e.path()) {
                    out.push((name.to_string(), cg));
                }
            }
        }
        out
    }
}

/// The cgroup2 mount, and the cgroup under which this caller may make `pm/`: the root for
/// root, else the subtree delegated to this user. `Err` says why there is none.
fn writable_parent() -> std::result::Result<(PathBuf, PathBuf), String> {
    let mount = mount().ok_or("no read-write cgroup2 hierarchy is mounted")?;
    let euid = nix::unistd::geteuid();
    let parent = if euid.is_root() {
        mount.clone()
    } else {
        let own = cgroup_of("self").ok_or("cannot read /proc/self/cgroup")?;
        delegated(&mount, &own, euid.as_raw()).ok_or_else(|| {
            format!("no cgroup subtree is delegated to uid {euid} (own cgroup {own})")
        })?
    };
    // Root in a user namespace, a read-only bind: not writable after all.
    let w = nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK;
    let top = parent.join("pm");
    let writable = |p: &Path| {
        nix::unistd::faccessat(nix::fcntl::AT_FDCWD, p, w, nix::fcntl::AtFlags::AT_EACCESS).is_ok()
    };
    if !(writable(&top) || (!top.exists() && writable(&parent))) {
        return Err(format!("{} is not writable", parent.display()));
    }
    Ok((mount, parent))
}

/// The directory of the cgroup monitors live in, `BASE/pm/monitors` (made if need be),
/// for a monitor to be born in; `None` where this caller may make no cgroup. In its
/// caller's cgroup, a monitor started from a service's command would die with that
/// service when it is stopped (its cgroup is killed whole), leaving its own service
/// unsupervised. Shared by every state directory of the base; never in a state
/// directory's cgroup, whose cgroups are all services' (and swept as such).
pub fn monitors_dir() -> Option<File> {
    let (_, parent) = writable_parent().ok()?;
    let top = parent.join("pm");
    let dir = top.join(MONITORS);
    for d in [&top, &dir] {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(_) => return None,
        }
    }
    File::open(&dir).ok()
}

/// The cgroup of monitors, beside the state directories' (see [`monitors_dir`]).
const MONITORS: &str = "monitors";

/// The last component of a start's cgroup.
fn leaf(name: &str, run_id: &str) -> String {
    format!("{name}:{}", run_id.replace(['/', ':'], "_"))
}

/// The topmost ancestor of `own` (including itself) that `uid` owns and may move
/// processes into: the subtree delegated to that user.
fn delegated(mount: &Path, own: &str, uid: u32) -> Option<PathBuf> {
    let mut found = None;
    let mut rel = own.trim_end_matches('/').to_string();
    while !rel.is_empty() {
        let dir = mount.join(rel.trim_start_matches('/'));
        let ours = |p: &Path| fs::metadata(p).is_ok_and(|m| m.uid() == uid);
        if !(ours(&dir) && ours(&dir.join("cgroup.procs"))) {
            break;
        }
        found = Some(dir);
        match rel.rfind('/') {
            Some(i) => rel.truncate(i),
            None => break,
        }
    }
    found
}

/// Writes `value` to a cgroup interface file in one write (the kernel parses each write).
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// Whole-service figures, from the cgroup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    pub procs: usize,
    pub memory_bytes: u64,
    /// `memory.current`, or `rss` (summed over the processes) where the memory
    /// controller is not enabled.
    pub memory_from: &'static str,
    pub cpu_secs: f64,
}

/// One start's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
    /// The path relative to the hierarchy's root, as /proc/PID/cgroup shows it.
    rel: String,
}

impl Cgroup {
    fn at(mount: &Path, path: PathBuf) -> Option<Cgroup> {
        let rel = path.strip_prefix(mount).ok()?;
        let rel = format!("/{}", rel.to_str()?);
        Some(Cgroup { path, rel })
    }

    /// The cgroup a record names, if it is one pm could have made for this NAME and run in
    /// the state directory whose cgroup id is `id`: inside the cgroup2 hierarchy, no `..`,
    /// `…/pm/ID/NAME:RUNID`. A record is the caller's own file, but a path that fails
    /// these (copied from another state directory, say) is never acted on.
    pub fn from_record(path: &Path, name: &str, run_id: Option<&str>, id: &str) -> Option<Cgroup> {
        let mount = mount()?;
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return None;
        }
        let last = path.file_name()?.to_str()?;
        let (n, _) = last.split_once(':')?;
        if n != name || run_id.is_some_and(|r| leaf(name, r) != last) {
            return None;
        }
        // In this state directory's cgroup (by its id), under a `pm` subtree.
        let dir = path.parent()?;
        if dir.file_name()? != id || dir.parent()?.file_name()? != "pm" {
            return None;
        }
        Cgroup::at(&mount, path.to_path_buf())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Does the cgroup still exist?
    pub fn exists(&self) -> bool {
        self.path.join("cgroup.procs").exists()
    }

    /// Every process in the cgroup and in cgroups the service made below it.
    pub fn pids(&self) -> Vec<i32> {
        self.snapshot().unwrap_or_default()
    }

    /// [`Cgroup::snapshot`] through the cgroup's directory, opened once and returned for
    /// [`Cgroup::usage_in`]: each file is then one step from it, not a walk of the whole
    /// hierarchy's path (the walks were most of what pm-status spent per service).
    pub fn snapshot_dir(&self) -> Option<(Vec<i32>, Option<std::os::fd::OwnedFd>)> {
        let dir = match open_dir(&self.path) {
            Ok(d) => d,
            Err(_) => return self.snapshot().map(|p| (p, None)),
        };
        match dir.metadata() {
            // Sub-cgroups: the walk below lists them.
            Ok(m) if m.nlink() == 2 => {}
            _ => return self.snapshot().map(|p| (p, None)),
        }
        let procs = open_at(&dir, "cgroup.procs").and_then(process::read_seq_lines);
        let pids = match procs {
            Ok(text) => text.lines().filter_map(|l| l.trim().parse().ok()).collect(),
            // Removed meanwhile: as snapshot says of a cgroup that is gone.
            Err(_) if !self.path.exists() => return None,
            Err(_) => Vec::new(),
        };
        Some((pids, Some(dir.into())))
    }

    /// [`Cgroup::pids`], or `None` if the cgroup is gone. A directory is listed only if it
    /// has sub-cgroups: kernfs counts them in its link count (2 + subdirectories), so a
    /// plain service's cgroup costs one statx and one read of `cgroup.procs`.
    pub fn snapshot(&self) -> Option<Vec<i32>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.path.clone()];
        let mut top = true;
        while let Some(d) = dirs.pop() {
            let links = match fs::metadata(&d) {
                Ok(m) => m.nlink(),
                Err(_) if top => return None,
                Err(_) => continue,
            };
            top = false;
            if let Ok(text) = process::read_pseudo(d.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            if links == 2 {
                continue;
            }
            if let Ok(rd) = fs::read_dir(&d) {
                dirs.extend(
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            if dirs.len() > 4096 {
                break;
            }
        }
        Some(out)
    }

    /// The live processes of the cgroup (zombies are gone: they hold nothing).
    pub fn members(&self) -> Vec<Stat> {
        self.pids()
            .into_iter()
            .filter_map(|p| Stat::read(p).ok().flatten())
            .filter(|s| !s.is_zombie())
            .collect()
    }

    /// Is `pid` in this cgroup (or below it) right now?
    pub fn contains(&self, pid: i32) -> bool {
        cgroup_of(&pid.to_string()).is_some_and(|c| {
            c == self.rel
                || c.strip_prefix(&self.rel)
                    .is_some_and(|r| r.starts_with('/'))
        })
    }

    /// `populated` from `cgroup.events`: does any live process remain? A cgroup that is
    /// gone is empty.
    pub fn populated(&self) -> bool {
        match process::read_pseudo(self.path.join("cgroup.events")) {
            Ok(t) => events_populated(&t),
            Err(_) => !self.members().is_empty(),
        }
    }

    /// Waits until the cgroup is empty, woken by the kernel's notification on
    /// `cgroup.events` (poll POLLPRI), not by a timer. False at the deadline.
    pub fn wait_empty(&self, deadline: Instant) -> bool {
        let Ok(mut f) = File::open(self.path.join("cgroup.events")) else {
            return !self.exists() || self.members().is_empty();
        };
        let mut buf = String::new();
        loop {
            buf.clear();
            // Reading re-arms the notification: an exit after this read wakes the poll.
            if f.seek(SeekFrom::Start(0)).is_err() || f.read_to_string(&mut buf).is_err() {
                return !self.exists();
            }
            if !events_populated(&buf) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let mut fds = [nix::poll::PollFd::new(
                f.as_fd(),
                nix::poll::PollFlags::POLLPRI,
            )];
            match nix::poll::poll(&mut fds, process::timeout(deadline - now)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return !self.populated(),
            }
        }
    }

    /// Removes the cgroup once it is empty, waiting until `deadline` for that; true if it
    /// is gone. An rmdir refused (EBUSY) right after "populated 0" (a task that has exited
    /// but not yet been unlinked from it) is tried again on the next change of
    /// cgroup.events, or a tenth of a second later, until the deadline.
    pub fn remove_once_empty(&self, deadline: Instant) -> bool {
        loop {
            let empty = self.wait_empty(deadline);
            if empty && self.remove().is_ok() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return !self.exists();
            }
            self.wait_empty(now + Duration::from_millis(100).min(deadline - now));
            if empty {
                // Empty but refused: give the kernel its moment before the next try.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Thaws a frozen cgroup, so its processes can act on the stop signal.
    pub fn thaw(&self) {
        let frozen = fs::read_to_string(self.path.join("cgroup.events"))
            .is_ok_and(|t| t.lines().any(|l| l == "frozen 1"));
        if frozen {
            let _ = write_file(&self.path.join("cgroup.freeze"), "0");
        }
    }

    /// SIGKILL to every process in the cgroup at once (`cgroup.kill`, Linux 5.14); false
    /// where the kernel lacks it and the caller must kill them one by one.
    pub fn kill(&self) -> io::Result<bool> {
        match write_file(&self.path.join("cgroup.kill"), "1") {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.exists() => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Moves process `pid` into the cgroup.
    pub fn join(&self, pid: i32) -> Result<()> {
        let procs = self.path.join("cgroup.procs");
        write_file(&procs, &pid.to_string()).map_err(|e| Error::io(procs, e))
    }

    /// Removes the cgroup (and any the service made below it) once it is empty. Gone
    /// already is fine.
    pub fn remove(&self) -> io::Result<()> {
        remove_tree(&self.path, 0)?;
        // The state directory's cgroup too, once its last start is gone (it fails, and
        // stays, while another start's cgroup is in it), and the monitors' once no
        // monitor is left in it (a monitor cannot remove the cgroup it is in).
        if let Some(parent) = self.path.parent() {
            let _ = fs::remove_dir(parent);
            if let Some(top) = parent.parent() {
                let _ = fs::remove_dir(top.join(MONITORS));
            }
        }
        Ok(())
    }

    /// Whole-service figures: processes, memory, CPU.
    pub fn usage(&self) -> Usage {
        self.usage_of(&self.pids(), None)
    }

    /// [`Cgroup::usage`] from a [`Cgroup::snapshot`] already taken, with the `/proc` stat of
    /// a member already read (the leader, say) not read again.
    pub fn usage_of(&self, pids: &[i32], known: Option<&Stat>) -> Usage {
        self.usage_in(None, pids, known)
    }

    /// [`Cgroup::usage_of`], its files read through `dir` (from [`Cgroup::snapshot_dir`])
    /// where given.
    pub fn usage_in(
        &self,
        dir: Option<&std::os::fd::OwnedFd>,
        pids: &[i32],
        known: Option<&Stat>,
    ) -> Usage {
        let read = |file: &str| match dir {
            Some(d) => open_at(d, file).and_then(process::read_seq_lines),
            None => process::read_pseudo(self.path.join(file)),
        };
        let members: Vec<Stat> = pids
            .iter()
            .filter_map(|&p| match known {
                Some(k) if k.pid == p => Some(k.clone()),
                _ => Stat::read(p).ok().flatten(),
            })
            .filter(|s| !s.is_zombie())
            .collect();
        let current = self
            .has_memory_files()
            .then(|| read("memory.current").ok())
            .flatten()
            .and_then(|t| t.trim().parse::<u64>().ok());
        let (memory_bytes, memory_from) = match current {
            Some(m) => (m, "memory.current"),
            None => (members.iter().map(Stat::rss_bytes).sum(), "rss"),
        };
        let cpu_secs = read("cpu.stat")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .map_or_else(
                // + 0.0: an empty f64 sum is -0.0, which JSON would show.
                || members.iter().map(Stat::cpu_secs).sum::<f64>() + 0.0,
                |us| us as f64 / 1e6,
            );
        Usage {
            procs: members.len(),
            memory_bytes,
            memory_from,
            cpu_secs,
        }
    }
}

impl Cgroup {
    /// Whether the memory controller's files (memory.current) are in this cgroup: only
    /// when its parent enables the controller for its children. Asked once per parent and
    /// process: pm-status asks for every service, and a failed open of a kernfs file
    /// costs as much as reading one.
    fn has_memory_files(&self) -> bool {
        static SEEN: std::sync::Mutex<Vec<(PathBuf, bool)>> = std::sync::Mutex::new(Vec::new());
        let Some(parent) = self.path.parent() else {
            return true;
        };
        let Ok(mut seen) = SEEN.lock() else {
            return true;
        };
        if let Some((_, has)) = seen.iter().find(|(p, _)| p == parent) {
            return *has;
        }
        let has = process::read_pseudo(parent.join("cgroup.subtree_control"))
            .map_or(true, |t| t.split_whitespace().any(|c| c == "memory"));
        seen.push((parent.to_path_buf(), has));
        has
    }
}

/// A cgroup's directory, O_PATH (only a place to look up from: no open of it), found from
/// its parent's, which each thread opens once: the services of a state directory share
/// one parent, and the walk of its path through kernfs was the dearest part of the open.
fn open_dir(path: &Path) -> io::Result<File> {
    use std::cell::RefCell;
    use std::os::unix::fs::OpenOptionsExt;
    let open = |p: &Path| {
        fs::File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_PATH | libc::O_NOFOLLOW)
            .open(p)
    };
    thread_local! {
        static PARENT: RefCell<Option<(PathBuf, File)>> = const { RefCell::new(None) };
    }
    let (Some(parent), Some(leaf)) = (path.parent(), path.file_name()) else {
        return open(path);
    };
    let from = |dir: &File| {
        nix::fcntl::openat(
            dir.as_fd(),
            leaf,
            nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map(File::from)
        .map_err(io::Error::from)
    };
    PARENT.with_borrow_mut(|cached| {
        if let Some((p, dir)) = cached.as_ref() {
            if p == parent {
                if let Ok(d) = from(dir) {
                    return Ok(d);
                }
            }
        }
        // None yet, another parent, or one removed (and maybe made again) since it was
        // opened: the parent afresh, kept for the next lookups.
        *cached = None;
        let dir = open(parent)?;
        let found = from(&dir);
        *cached = Some((parent.to_path_buf(), dir));
        found
    })
}

/// Opens `file` in the directory `dir` for reading.
fn open_at(dir: &impl AsFd, file: &str) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        file,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok(File::from(fd))
}

fn events_populated(text: &str) -> bool {
    text.lines().any(|l| l == "populated 1")
}

fn remove_tree(dir: &Path, depth: usize) -> io::Result<()> {
    if depth < 64 {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&e.path(), depth + 1)?;
                }
            }
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The tracking a start gets: a fresh cgroup, or none (and why, for `PM_CGROUP=on`).
pub fn choose(sd: &crate::StateDir, want: Want) -> Result<Option<Base>> {
    if want == Want::Off {
        return Ok(None);
    }
    match (want, Base::locate(sd, true)) {
        (_, Ok(b)) => Ok(Some(b)),
        (Want::Required, Err(why)) => Err(Error::Cgroup(format!("PM_CGROUP=on: {why}"))),
        (_, Err(_)) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpu_parse_as_the_kernel_wants_them() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(parse_cpu("50%").unwrap(), "50000 100000");
        assert_eq!(parse_cpu("1.5").unwrap(), "150000 100000");
        assert!(parse_cpu("0.1%").is_err());
        assert!(parse_cpu("x").is_err());
        assert_eq!(parse_pids("50").unwrap(), 50);
        assert!(parse_pids("0").is_err());
        let l = Limits {
            memory_max: Some(64 << 20),
            cpu_max: Some("50000 100000".into()),
            pids_max: Some(50),
        };
        assert_eq!(l.describe(), "memory 64M, cpu 50%, pids 50");
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape("/sys/fs/cgroup"), "/sys/fs/cgroup");
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\"), "/a\\");
    }

    #[test]
    fn a_record_cannot_point_pm_at_a_foreign_cgroup() {
        let Some(m) = mount() else { return };
        let id = "0123456789abcdef0123456789abcdef";
        let ok = m.join(format!("pm/{id}/web:1.2.3"));
        let rec = |p: &Path, n: &str, r: Option<&str>| Cgroup::from_record(p, n, r, id);
        assert!(rec(&ok, "web", Some("1.2.3")).is_some());
        assert!(rec(&m.join(format!("x/pm/{id}/web:1")), "web", None).is_some());
        // Another state directory's id, or none.
        assert!(
            Cgroup::from_record(&ok, "web", None, "fedcba9876543210fedcba9876543210").is_none()
        );
        assert!(rec(&m.join("pm/0123/web:1"), "web", None).is_none());
        assert!(rec(&ok, "web", Some("9.9.9")).is_none());
        assert!(rec(&ok, "db", Some("1.2.3")).is_none());
        assert!(rec(&m.join("init.scope"), "web", None).is_none());
        assert!(rec(&m.join(format!("pm/{id}/../../web:1")), "web", None).is_none());
        assert!(rec(Path::new("/tmp/web:1.2.3"), "web", None).is_none());
    }
}
