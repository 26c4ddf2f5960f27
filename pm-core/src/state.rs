//! The state directory: where records, PID files, logs and locks live.
//!
//! Resolution order: `--state-dir` › `$PM_STATE_DIR` › `$XDG_RUNTIME_DIR/pm` › `/run/pm`
//! (root) › `${TMPDIR:-/tmp}/pm-$UID`. Because the last one sits in a shared directory, a
//! directory that is not ours or is group/world-writable is refused: another user must not
//! be able to plant records or PID files that make pm signal their choice of process.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::lock::NameLock;
use crate::name::{self, Name};
use crate::record::Record;

/// Largest record pm will read.
pub const MAX_RECORD: u64 = 1 << 20;

/// A resolved, checked state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
    /// `.cgroup-id`, read once.
    cgroup_id: std::sync::OnceLock<Option<String>>,
}

/// The file in a state directory that names its cgroups (see [`StateDir::cgroup_id`]).
const CGROUP_ID_FILE: &str = ".cgroup-id";

/// Where the state directory is, before any check: the documented resolution order.
pub fn locate(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
    euid: u32,
) -> PathBuf {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = nonempty("PM_STATE_DIR") {
        return PathBuf::from(p);
    }
    if let Some(p) = nonempty("XDG_RUNTIME_DIR").filter(|p| Path::new(p).is_absolute()) {
        return PathBuf::from(p).join("pm");
    }
    if euid == 0 {
        return PathBuf::from("/run/pm");
    }
    let tmp = nonempty("TMPDIR").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(tmp).join(format!("pm-{euid}"))
}

impl StateDir {
    /// Resolves the state directory from the flag and the environment. With `create`, a
    /// missing directory is made (mode 0700); without, it is returned unchecked if missing
    /// (read-only callers such as pm-status then see no records).
    pub fn resolve(explicit: Option<&Path>, create: bool) -> Result<StateDir> {
        let euid = nix::unistd::geteuid().as_raw();
        let path = locate(explicit, |k| std::env::var_os(k), euid);
        let path = std::path::absolute(&path).map_err(|e| Error::io(&path, e))?;
        Self::open(path, create, euid)
    }

    fn open(path: PathBuf, create: bool, euid: u32) -> Result<StateDir> {
        let unsafe_dir = |reason: String| Error::UnsafeStateDir {
            path: path.clone(),
            reason,
        };
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&path)
                    .map_err(|e| Error::io(&path, e))?;
                fs::metadata(&path).map_err(|e| Error::io(&path, e))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StateDir::at(path)),
            Err(e) => return Err(Error::io(&path, e)),
        };
        if !meta.is_dir() {
            return Err(unsafe_dir("not a directory".into()));
        }
        if meta.uid() != euid {
            return Err(unsafe_dir(format!(
                "owned by uid {}, not by you (uid {euid})",
                meta.uid()
            )));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(unsafe_dir(format!(
                "group- or world-writable (mode {:o}); run chmod go-w on it",
                meta.permissions().mode() & 0o7777
            )));
        }
        Ok(StateDir::at(path))
    }

    fn at(path: PathBuf) -> StateDir {
        StateDir {
            path,
            cgroup_id: std::sync::OnceLock::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The random id that names this state directory's cgroups (`.cgroup-id`, 32 hex
    /// digits), made by the first start that needs it (`create`). Random, not derived from
    /// the path: two state directories at the same path in different mount namespaces
    /// (containers, PrivateTmp) must never share cgroups.
    pub fn cgroup_id(&self, create: bool) -> Option<String> {
        let path = self.path.join(CGROUP_ID_FILE);
        let read = || -> Option<String> {
            let mut f = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)
                .ok()?;
            let mut buf = [0u8; 64];
            let n = f.read(&mut buf).ok()?;
            let id = std::str::from_utf8(&buf[..n]).ok()?.trim().to_string();
            (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
        };
        if let Some(id) = self.cgroup_id.get().cloned().flatten() {
            return Some(id);
        }
        let mut id = read();
        if id.is_none() && create {
            let mut raw = [0u8; 16];
            let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut raw));
            if random.is_ok() {
                let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                // Written aside, then linked into place: a concurrent start either wins
                // or reads the winner's whole id.
                let tmp = self
                    .path
                    .join(format!(".cgroup-id.{}.tmp", std::process::id()));
                if write_atomic(&tmp, format!("{hex}\n").as_bytes(), 0o600).is_ok() {
                    let _ = fs::hard_link(&tmp, &path);
                    let _ = fs::remove_file(&tmp);
                }
                id = read();
            }
        }
        if id.is_some() {
            let _ = self.cgroup_id.set(id.clone());
        }
        id
    }

    pub fn record_path(&self, name: &Name) -> PathBuf {
        self.path.join(format!("{name}.json"))
    }

    pub fn pidfile_path(&self, name: &Name) -> PathBuf {
        self.path.join(format!("{name}.pid"))
    }

    pub fn log_path(&self, name: &Name) -> PathBuf {
        self.path.join(format!("{name}.log"))
    }

    pub fn lock_path(&self, name: &Name) -> PathBuf {
        self.path.join(format!("{name}.lock"))
    }

    /// `STATE/.NAME.logstatus`: the logger's status file. The leading dot keeps it out of
    /// the record namespace (a NAME never starts with `.`, and records are `NAME.json`).
    pub fn log_status_path(&self, name: &Name) -> PathBuf {
        self.path.join(format!(".{name}.logstatus"))
    }

    /// Removes the logger's status file, with the record or before a new run.
    pub fn remove_log_status(&self, name: &Name) -> Result<()> {
        let path = self.log_status_path(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        }
    }

    pub fn notify_path(&self, name: &Name) -> PathBuf {
        self.path.join(format!("{name}.notify"))
    }

    /// Expands a path template for `name` in this directory.
    pub fn expand(&self, template: &str, name: &Name) -> Result<PathBuf> {
        name::expand(template, name, &self.path)
    }

    /// Takes the per-name lock (blocking).
    pub fn lock(&self, name: &Name) -> Result<NameLock> {
        NameLock::acquire(&self.lock_path(name))
    }

    /// Removes `NAME.lock` if `name` has no record and nobody holds the lock: no tool
    /// leaves a lock file behind for a name it found unknown (a typo) or forgot.
    pub fn tidy_lock(&self, name: &Name) {
        if let Ok(Some(l)) = NameLock::try_acquire(&self.lock_path(name)) {
            if !self.record_path(name).exists() {
                let _ = l.remove();
            }
        }
    }

    /// Removes `NAME.json` (pm-stop --forget, under the name's lock).
    pub fn remove_record(&self, name: &Name) -> Result<()> {
        let path = self.record_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Reads `NAME.json`; `Ok(None)` when there is none.
    pub fn read_record(&self, name: &Name) -> Result<Option<Record>> {
        self.read_record_as(name, false)
    }

    /// [`StateDir::read_record`]; `report`: without its environment ([`Record::for_report`]).
    fn read_record_as(&self, name: &Name, report: bool) -> Result<Option<Record>> {
        let path = self.record_path(name);
        let file = match File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(Error::CorruptRecord {
                    path,
                    reason: "is a symbolic link".into(),
                })
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        if !meta.is_file() || meta.len() > MAX_RECORD {
            return Err(Error::CorruptRecord {
                path,
                reason: format!("not a regular file of at most {MAX_RECORD} bytes"),
            });
        }
        // A record is replaced by a rename, never written in place: its size is known,
        // and one read of it (not a second for the end) is the whole of it.
        let mut buf = vec![0u8; meta.len() as usize];
        let mut len = 0;
        let mut file = file;
        while len < buf.len() {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        buf.truncate(len);
        let parsed = if report {
            Record::for_report(&buf)
        } else {
            serde_json::from_slice(&buf)
        };
        let record: Record = parsed.map_err(|e| Error::CorruptRecord {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if record.name != name.as_str() {
            return Err(Error::CorruptRecord {
                path,
                reason: format!("it names {:?}", record.name),
            });
        }
        Ok(Some(record))
    }

    /// Writes the record atomically: readers see the old or the new one, never a mix.
    pub fn write_record(&self, record: &Record) -> Result<()> {
        let name = Name::new(&record.name)?;
        write_atomic(&self.record_path(&name), &encode(record)?, 0o600)
    }

    /// [`StateDir::write_record`] without the fsync: still atomic (temp file + rename), so
    /// a killed tool leaves the old or the new record, but not made durable against a power
    /// cut — for records that describe live processes only (which a reboot ends anyway),
    /// written where the fsync's latency would count: before the service may exec, and the
    /// stop journal.
    pub fn write_record_unsynced(&self, record: &Record) -> Result<()> {
        let name = Name::new(&record.name)?;
        write_atomic_with(&self.record_path(&name), &encode(record)?, 0o600, false)
    }

    /// Removes the temp files of record writes that never finished (`.NAME.json.PID.N.tmp`
    /// of a writer that is gone: killed between create and rename). Call it under the
    /// name's lock: a writer that is alive is left alone, whatever it is.
    pub fn remove_stale_temps(&self, name: &Name) {
        let prefix = format!(".{name}.json.");
        let Ok(dir) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in dir.flatten() {
            let file = entry.file_name();
            let Some(rest) = file
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .and_then(|f| f.strip_suffix(".tmp"))
            else {
                continue;
            };
            let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let alive = pid > 0 && Path::new(&format!("/proc/{pid}")).exists();
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Rewrites `NAME.json` in place, for when [`StateDir::write_record`] cannot make a
    /// new file (a full file system): not atomic, so only for a last word that is better
    /// said half than not at all. Never creates the file, never follows a symlink.
    pub fn overwrite_record_in_place(&self, record: &Record) -> Result<()> {
        let name = Name::new(&record.name)?;
        let path = self.record_path(&name);
        let data = encode(record)?;
        let mut f = File::options()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        f.write_all(&data)
            .and_then(|()| f.set_len(data.len() as u64))
            .map_err(|e| Error::io(&path, e))
    }

    /// Every record, oldest start first (never-started ones first of all, by name).
    /// A record that cannot be read is listed with its error, not dropped.
    pub fn list(&self) -> Result<Vec<(Name, Result<Record>)>> {
        self.list_keeping(true)
    }

    /// An inotify watch that wakes a waiter when a record changes here (records are
    /// renamed into place, removed, or written); `None` where inotify is not to be had.
    pub fn watch_records(&self) -> Option<nix::sys::inotify::Inotify> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let i = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        i.add_watch(
            &self.path,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_DELETE | AddWatchFlags::IN_CLOSE_WRITE,
        )
        .ok()?;
        Some(i)
    }

    /// Command-line NAMEs as names: each `@TAG` becomes every recorded service with that
    /// tag (pm-up records a stack service's tags), in start order; a NAME stays as given.
    /// A tag no record has is an error (exit status 4), so a typo does not act on nothing,
    /// unless a service is recorded under that very name (`@x` is a valid NAME).
    pub fn targets(&self, args: &[String]) -> Result<Vec<Name>> {
        let mut listed: Option<Vec<(Name, Vec<String>)>> = None;
        let mut out: Vec<Name> = Vec::new();
        for a in args {
            let Some(tag) = a.strip_prefix('@') else {
                out.push(Name::new(a)?);
                continue;
            };
            let recs = match &mut listed {
                Some(l) => l,
                None => listed.insert(
                    self.list_for_report()?
                        .into_iter()
                        .filter_map(|(n, r)| Some((n, r.ok()?.stack?.tags)))
                        .collect(),
                ),
            };
            let tagged: Vec<&Name> = recs
                .iter()
                .filter(|(_, tags)| tags.iter().any(|t| t == tag))
                .map(|(n, _)| n)
                .collect();
            if tagged.is_empty() {
                // The design allows a NAME to begin with `@`: one that is recorded is
                // still reachable, when no service has that tag.
                let name = Name::new(a)?;
                if self.read_record(&name).ok().flatten().is_some() {
                    out.push(name);
                    continue;
                }
                return Err(Error::NoTag(tag.to_string()));
            }
            for n in tagged {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        }
        Ok(out)
    }

    /// `names` with each service after the services its record says it needs (pm-up
    /// records a stack service's needs), otherwise in the order given: the order in which
    /// to start them. A name without a readable record, or a cycle a hostile record makes,
    /// keeps its place.
    pub fn needs_first(&self, names: Vec<Name>) -> Vec<Name> {
        let needs: Vec<Vec<String>> = names
            .iter()
            .map(|n| match self.read_record(n) {
                Ok(Some(r)) => r
                    .stack
                    .map(|s| s.needs.into_iter().map(|x| x.name).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            })
            .collect();
        let mut placed = vec![false; names.len()];
        let mut out = Vec::with_capacity(names.len());
        while out.len() < names.len() {
            let waiting = |i: usize| {
                needs[i].iter().any(|x| {
                    names
                        .iter()
                        .zip(&placed)
                        .any(|(n, p)| !p && n.as_str() == x)
                })
            };
            // The first one whose needs are all placed; in a cycle, the first one left.
            let next = (0..names.len())
                .find(|&i| !placed[i] && !waiting(i))
                .or_else(|| (0..names.len()).find(|&i| !placed[i]));
            let Some(i) = next else { break };
            placed[i] = true;
            out.push(names[i].clone());
        }
        out
    }

    /// [`StateDir::list`] for reports: each record's `environment` (most of its size) is
    /// dropped as soon as it is read, so a thousand records do not sit in memory with a
    /// thousand copies of the caller's environment. Never write these records back.
    pub fn list_for_report(&self) -> Result<Vec<(Name, Result<Record>)>> {
        self.list_keeping(false)
    }

    fn list_keeping(&self, environment: bool) -> Result<Vec<(Name, Result<Record>)>> {
        let read = crate::parallel::map(self.record_names()?, |name| {
            let rec = self.read_record_as(&name, !environment);
            (name, rec)
        });
        let mut out = Vec::with_capacity(read.len());
        for (name, rec) in read {
            match rec {
                Ok(Some(r)) => out.push((name, Ok(r))),
                Ok(None) => {} // removed while listing
                Err(e) => out.push((name, Err(e))),
            }
        }
        // Each start time parsed once, not at every comparison.
        out.sort_by_cached_key(|(n, r)| start_order(n, r.as_ref().ok()));
        Ok(out)
    }

    /// The names of the records here, in no order (see [`start_order`] for the order of
    /// [`StateDir::list`]).
    pub fn record_names(&self) -> Result<Vec<Name>> {
        let dir = match fs::read_dir(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| Error::io(&self.path, e))?;
            let file = entry.file_name();
            let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(name) = Name::new(stem) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// [`StateDir::read_record`] for a report: without the record's environment (most of
    /// its size; see [`Record::for_report`]). Never write such a record back.
    pub fn read_record_for_report(&self, name: &Name) -> Result<Option<Record>> {
        self.read_record_as(name, true)
    }
}

/// Where a record goes in [`StateDir::list`]: oldest start first, never-started (and
/// unreadable) ones first of all, each group by name.
pub fn start_order(name: &Name, record: Option<&Record>) -> (Option<SystemTime>, Name) {
    (record.and_then(Record::started), name.clone())
}

fn encode(record: &Record) -> Result<Vec<u8>> {
    let mut json = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::Os(format!("cannot encode record: {e}")))?;
    json.push(b'\n');
    Ok(json)
}

/// Writes `data` to `path` atomically: a temp file beside it, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_atomic_with(path, data, mode, true)
}

pub(crate) fn write_atomic_with(path: &Path, data: &[u8], mode: u32, sync: bool) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    // PID + counter: unique across processes and across threads of one process.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.{}.{seq}.tmp", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{now_rfc3339, Phase};
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn resolution_order() {
        let all = env(&[
            ("PM_STATE_DIR", "/a"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("TMPDIR", "/t"),
        ]);
        assert_eq!(
            locate(Some(Path::new("/x")), &all, 1000),
            PathBuf::from("/x")
        );
        assert_eq!(locate(None, &all, 1000), PathBuf::from("/a"));
        let no_pm = env(&[("XDG_RUNTIME_DIR", "/run/user/1000"), ("TMPDIR", "/t")]);
        assert_eq!(
            locate(None, &no_pm, 1000),
            PathBuf::from("/run/user/1000/pm")
        );
        let tmp_only = env(&[("TMPDIR", "/t")]);
        assert_eq!(locate(None, &tmp_only, 0), PathBuf::from("/run/pm"));
        assert_eq!(locate(None, &tmp_only, 1000), PathBuf::from("/t/pm-1000"));
        assert_eq!(locate(None, env(&[]), 1000), PathBuf::from("/tmp/pm-1000"));
        // Empty or relative values are ignored, as an unset variable would be.
        let empty = env(&[("PM_STATE_DIR", ""), ("XDG_RUNTIME_DIR", "relative")]);
        assert_eq!(locate(None, &empty, 1000), PathBuf::from("/tmp/pm-1000"));
    }

    #[test]
    fn creates_0700_and_refuses_writable_or_foreign_dirs() {
        let base = tempfile::tempdir().unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        let p = base.path().join("a/b/pm");
        let sd = StateDir::open(p.clone(), true, euid).unwrap();
        assert_eq!(
            fs::metadata(sd.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );

        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
        let e = StateDir::open(p.clone(), true, euid)
            .unwrap_err()
            .to_string();
        assert!(e.contains("world-writable"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o720)).unwrap();
        assert!(StateDir::open(p.clone(), true, euid).is_err());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(StateDir::open(p.clone(), true, euid).is_ok());

        // Owned by somebody else.
        let e = StateDir::open(p.clone(), true, euid + 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not by you"), "{e}");

        let file = base.path().join("file");
        fs::write(&file, "").unwrap();
        let e = StateDir::open(file, true, euid).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");

        // Read-only resolution does not create.
        let missing = base.path().join("missing");
        StateDir::open(missing.clone(), false, euid).unwrap();
        assert!(!missing.exists());
    }

    fn sd() -> (tempfile::TempDir, StateDir) {
        let base = tempfile::tempdir().unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        let sd = StateDir::open(base.path().join("pm"), true, euid).unwrap();
        (base, sd)
    }

    fn rec(name: &str) -> Record {
        Record {
            name: name.into(),
            command: vec!["sleep".into(), "1".into()],
            phase: Phase::Running,
            started_at: Some(now_rfc3339()),
            ..Record::default()
        }
    }

    #[test]
    fn write_read_and_list_in_start_order() {
        let (_b, sd) = sd();
        for n in ["c", "a", "b"] {
            sd.write_record(&rec(n)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let never = Record {
            name: "z".into(),
            ..Record::default()
        };
        sd.write_record(&never).unwrap();
        let names: Vec<String> = sd
            .list()
            .unwrap()
            .into_iter()
            .map(|(n, r)| {
                r.unwrap();
                n.to_string()
            })
            .collect();
        assert_eq!(names, ["z", "c", "a", "b"]);
        let n = Name::new("a").unwrap();
        assert_eq!(sd.read_record(&n).unwrap().unwrap().name, "a");
        assert!(sd
            .read_record(&Name::new("nope").unwrap())
            .unwrap()
            .is_none());
        // No temp files left behind.
        let stray: Vec<_> = fs::read_dir(sd.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty());
    }

    #[test]
    fn corrupt_records_are_reported_not_dropped() {
        let (_b, sd) = sd();
        sd.write_record(&rec("good")).unwrap();
        fs::write(sd.path().join("bad.json"), "{\"version\": 1, \"name\": ").unwrap();
        fs::write(
            sd.path().join("liar.json"),
            "{\"version\": 1, \"name\": \"other\"}",
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", sd.path().join("link.json")).unwrap();
        let listed = sd.list().unwrap();
        assert_eq!(listed.len(), 4);
        for (n, r) in listed {
            match n.as_str() {
                "good" => assert!(r.is_ok()),
                other => {
                    let e = r.unwrap_err();
                    assert!(matches!(e, Error::CorruptRecord { .. }), "{other}: {e}");
                }
            }
        }
        let big = sd.path().join("big.json");
        fs::write(&big, vec![b' '; (MAX_RECORD + 10) as usize]).unwrap();
        assert!(sd.read_record(&Name::new("big").unwrap()).is_err());
    }

    #[test]
    fn readers_never_see_a_half_written_record() {
        let (_b, sd) = sd();
        let name = Name::new("web").unwrap();
        let mut big = rec("web");
        big.command = (0..2000).map(|i| format!("arg-{i}")).collect();
        sd.write_record(&big).unwrap();
        let writer = {
            let sd = sd.clone();
            let big = big.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    let mut r = big.clone();
                    r.pid = Some(i + 2);
                    sd.write_record(&r).unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() {
            let r = sd.read_record(&name).unwrap().unwrap();
            assert_eq!(r.command.len(), 2000);
            reads += 1;
        }
        writer.join().unwrap();
        assert!(reads > 0);
    }
}
