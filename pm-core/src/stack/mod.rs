//! Stacks: a file of services with dependencies (`pm.toml`), brought up by pm-up in
//! dependency order and taken down by pm-down in the reverse order.
//!
//! The file is only read by pm-up. Each service it starts records what it needs, its tags
//! and the definition it was started from ([`crate::record::Member`]), so pm-down orders
//! its stops from what is running, not from a file that may have been edited since, and
//! a later pm-up can tell an unchanged service (left alone) from a changed one
//! (restarted).

pub mod down;
pub mod up;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::record::{Condition, Member, Need};
use crate::start::Request;
use crate::Name;

/// The file pm-up and pm-down read when no `-f FILE` is given.
pub const DEFAULT_FILE: &str = "pm.toml";

/// Larger files are refused rather than read: a services file is a few kilobytes.
const MAX_FILE: u64 = 4 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    services: BTreeMap<String, Spanned<ServiceToml>>,
}

/// A command: a string runs under `/bin/sh -c`, an array is run as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum CommandToml {
    Shell(String),
    Argv(Vec<String>),
}

/// One value or a list of them (`ready = "tcp:80"` or `ready = ["tcp:80", "file:x"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `needs = ["db"]` (each must be ready) or `needs = { db = "ready", migrate = "succeeded" }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum NeedsToml {
    List(Vec<String>),
    Map(BTreeMap<String, Condition>),
}

/// A size or a count: `"512M"` or `536870912`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum SizeToml {
    Number(u64),
    Text(String),
}

impl SizeToml {
    fn text(&self) -> String {
        match self {
            SizeToml::Number(n) => n.to_string(),
            SizeToml::Text(s) => s.clone(),
        }
    }
}

/// A service as written. Serialized (with `cwd` made absolute and `env_file` read) it is
/// the definition a record keeps, to tell whether the file changed since the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceToml {
    command: CommandToml,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cwd: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ready: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ready_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pidfile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_restarts: Option<SizeToml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_max_size: Option<SizeToml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_keep: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    log_timestamps: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_max: Option<SizeToml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu_max: Option<SizeToml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pids_max: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    no_cgroup: bool,
    /// A task that runs to completion (a migration): what needs it waits for exit 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    oneshot: bool,
    // Not part of the definition: editing what a service needs or its tags does not
    // restart it (both are recorded at its next start).
    #[serde(default, skip_serializing)]
    needs: Option<Spanned<NeedsToml>>,
    #[serde(default, skip_serializing)]
    tags: Vec<String>,
}

/// One service of a stack, ready to start.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: Name,
    /// What pm-start would be asked (no state directory: the caller's applies).
    pub request: Request,
    pub needs: Vec<Need>,
    pub tags: Vec<String>,
    /// Runs to completion; see `oneshot` in pm(7).
    pub oneshot: bool,
    /// The definition as a record keeps it ([`Member::definition`]).
    pub definition: serde_json::Value,
}

impl Service {
    /// What its record keeps of the stack.
    /// What its record keeps of the stack; `by`: the pm-up run starting it.
    pub fn member(&self, file: &Path, by: &str) -> Member {
        Member {
            file: file.to_path_buf(),
            by: Some(by.to_string()),
            needs: self.needs.clone(),
            tags: self.tags.clone(),
            definition: self.definition.clone(),
        }
    }
}

/// A services file, read and checked: every name valid, every need defined, no cycle.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Absolute path of the file.
    pub file: PathBuf,
    pub services: BTreeMap<String, Service>,
}

/// The error for `file`, at the line of byte `at` of `src` where known.
fn at(file: &Path, src: &str, at: Option<usize>, msg: impl Into<String>) -> Error {
    Error::Stack {
        file: file.to_path_buf(),
        line: at.map(|i| {
            src.as_bytes()[..i.min(src.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        }),
        msg: msg.into(),
    }
}

/// The file pm-up and pm-down use: `-f FILE`, else `pm.toml` in the current directory,
/// as the path records keep: canonical (`sub/../pm.toml` and a symlinked directory name
/// the same stack), or only made absolute when the file is gone (pm-down after a rename).
pub fn locate(file: Option<&Path>) -> Result<PathBuf> {
    let p = file.unwrap_or(Path::new(DEFAULT_FILE));
    if let Ok(c) = std::fs::canonicalize(p) {
        return Ok(c);
    }
    // Gone: its directory still names it as the records do (a symlinked one too), and a
    // symlink left dangling names its target.
    let mut abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&abs) else {
            break;
        };
        abs = match abs.parent() {
            Some(dir) => dir.join(target),
            None => target,
        };
    }
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(leaf)) => match std::fs::canonicalize(dir) {
            Ok(d) => Ok(d.join(leaf)),
            Err(_) => Ok(abs),
        },
        _ => Ok(abs),
    }
}

/// The environment entry pm-up gives everything it runs (`PM_STACK_LOCK=`, the path of
/// its stack's lock): a pm-down or pm-up of the same file run from inside (a task, a
/// service's script) must not wait for the pm-up it runs under, which waits for it.
const NESTED_VAR: &str = "PM_STACK_LOCK";

/// A hold on a stack (see [`hold`]), released on drop.
pub(crate) struct Hold {
    /// The lock, then (pm-down's) the turnstile; none for a pm-down run from inside a
    /// pm-up of the same file.
    locks: Vec<crate::lock::NameLock>,
}

impl Hold {
    /// Releases the hold and removes its files (pm-down, once no record names the stack):
    /// whoever waits on them finds them gone and takes new ones.
    pub(crate) fn remove(self) {
        for l in self.locks {
            let _ = l.remove();
        }
    }
}

/// Held by pm-up (shared: several pm-up runs of one file go on side by side) and by
/// pm-down (exclusive) for the whole of their run, on `STATE/.stack.HASH.lock` (HASH: of
/// the file's path, as [`locate`] gives it): a pm-down waits for every pm-up of its file to
/// end, so none starts a service after pm-down has looked, and a pm-up waits for a
/// pm-down to end. pm-down holds a turnstile, `STATE/.stack.HASH.turn`, from before it
/// waits to its end, and a pm-up passes through it first, so that a stream of pm-up runs
/// cannot keep a pm-down waiting for ever (flock lets a shared taker in while an exclusive
/// one waits). A pm-up or pm-down run by what a pm-up of the same file runs neither waits
/// for that pm-up nor at the turnstile. Said on stderr when it has to wait.
pub(crate) fn hold(sd: &crate::StateDir, file: &Path, shared: bool, tool: &str) -> Result<Hold> {
    use crate::lock::NameLock;
    // FNV-1a: the same in every build (the standard library's hasher is not promised to be).
    let hash = file
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    let path = sd.path().join(format!(".stack.{hash:016x}.lock"));
    let turn = sd.path().join(format!(".stack.{hash:016x}.turn"));
    let nested = std::env::var_os(NESTED_VAR).is_some_and(|v| v == path.as_os_str());
    let say = |what: &str| crate::report::say(tool, &file.display().to_string(), what);
    // Takes `path` now if it can, else says `why` and waits for it.
    let take = |path: &Path, shared: bool, why: &str| -> Result<NameLock> {
        let now = match shared {
            true => NameLock::try_acquire_shared(path)?,
            false => NameLock::try_acquire(path)?,
        };
        if let Some(l) = now {
            return Ok(l);
        }
        say(why);
        match shared {
            true => NameLock::acquire_shared(path),
            false => NameLock::acquire(path),
        }
    };
    const DOWN: &str = "waiting for a pm-down of this file to end";
    const UP: &str = "waiting for the pm-up of this file to end, and the starts it began (interrupt it to stop it sooner)";
    let mut locks = Vec::new();
    if shared {
        // Through the turnstile (shared: pm-up runs do not wait for each other there),
        // unless run by a pm-up of this file (a pm-down waiting there waits for that one).
        let gate = if nested {
            None
        } else {
            Some(take(&turn, true, DOWN)?)
        };
        locks.push(take(&path, true, DOWN)?);
        drop(gate);
        // Everything this pm-up runs inherits it (set while pm-up has no other thread).
        std::env::set_var(NESTED_VAR, &path);
    } else if nested {
        match NameLock::try_acquire(&path)? {
            Some(l) => locks.push(l),
            None => say("run by the pm-up of this file: not waiting for it"),
        }
    } else {
        let gate = take(
            &turn,
            false,
            "waiting for another pm-down of this file to end",
        )?;
        locks.push(take(&path, false, UP)?);
        locks.push(gate);
    }
    Ok(Hold { locks })
}

impl Stack {
    /// Reads and checks the file at `path` (absolute, see [`locate`]).
    pub fn load(path: &Path) -> Result<Stack> {
        let src = read_text(path).map_err(|e| Error::Stack {
            file: path.to_path_buf(),
            line: None,
            msg: e,
        })?;
        Stack::parse(path, &src)
    }

    /// Checks `src` as the contents of `file`.
    pub fn parse(file: &Path, src: &str) -> Result<Stack> {
        let parsed: FileToml = toml::from_str(src)
            .map_err(|e| at(file, src, e.span().map(|s| s.start), e.message()))?;
        let dir = file.parent().unwrap_or(Path::new("/"));
        let mut services = BTreeMap::new();
        for (key, spanned) in &parsed.services {
            let start = Some(spanned.span().start);
            let svc = resolve(dir, key, spanned.get_ref())
                .map_err(|msg| at(file, src, start, format!("service {key}: {msg}")))?;
            services.insert(key.clone(), svc);
        }
        for (key, spanned) in &parsed.services {
            let needs_at = spanned.get_ref().needs.as_ref().map(|n| n.span().start);
            for need in &services[key].needs {
                let Some(dep) = services.get(&need.name) else {
                    return Err(at(
                        file,
                        src,
                        needs_at,
                        format!(
                            "service {key} needs {:?}, which is not in this file",
                            need.name
                        ),
                    ));
                };
                let problem = match (dep.oneshot, need.condition) {
                    (true, Condition::Succeeded)
                    | (false, Condition::Ready | Condition::Started) => None,
                    (true, _) => Some("is a oneshot task: need it \"succeeded\""),
                    (false, Condition::Succeeded) => Some(
                        "is not a oneshot task, so it never \"succeeded\" (set oneshot = true)",
                    ),
                };
                if let Some(p) = problem {
                    return Err(at(
                        file,
                        src,
                        needs_at,
                        format!("service {key} needs {}, which {p}", need.name),
                    ));
                }
            }
        }
        let stack = Stack {
            file: file.to_path_buf(),
            services,
        };
        if let Some(cycle) = stack.cycle() {
            let first = &cycle[0];
            let start = parsed.services.get(first).map(|s| s.span().start);
            return Err(at(
                file,
                src,
                start,
                format!("dependency cycle: {}", cycle.join(" -> ")),
            ));
        }
        Ok(stack)
    }

    /// A dependency cycle, as the names along it (the first repeated at the end).
    fn cycle(&self) -> Option<Vec<String>> {
        // Depth first without recursion: a chain of 100k needs must not overflow the
        // stack. `path` holds each name on the current path with the index of the next
        // need to follow; 1: on the path, 2: done.
        let mut mark: BTreeMap<&str, u8> = BTreeMap::new();
        let needs = |n: &str| {
            self.services
                .get(n)
                .map(|x| x.needs.as_slice())
                .unwrap_or_default()
        };
        for root in self.services.keys() {
            if mark.contains_key(root.as_str()) {
                continue;
            }
            let mut path: Vec<(&str, usize)> = vec![(root.as_str(), 0)];
            mark.insert(root, 1);
            while let Some((n, i)) = path.last_mut() {
                let Some(need) = needs(n).get(*i) else {
                    mark.insert(n, 2);
                    path.pop();
                    continue;
                };
                *i += 1;
                let next = need.name.as_str();
                match mark.get(next) {
                    Some(2) => {}
                    Some(_) => {
                        let from = path.iter().position(|(p, _)| *p == next).unwrap_or(0);
                        let mut c: Vec<String> =
                            path[from..].iter().map(|(p, _)| p.to_string()).collect();
                        c.push(next.to_string());
                        return Some(c);
                    }
                    None => {
                        mark.insert(next, 1);
                        path.push((next, 0));
                    }
                }
            }
        }
        None
    }

    /// Everything `name` needs, transitively (not `name` itself).
    pub fn needs_below(&self, name: &str) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        let mut todo = vec![name];
        while let Some(n) = todo.pop() {
            for need in self.services.get(n).map_or(&[][..], |s| &s.needs[..]) {
                if out.insert(need.name.as_str()) {
                    todo.push(need.name.as_str());
                }
            }
        }
        out
    }

    /// The services `targets` name (`NAME` or `@TAG`; none: all), with everything they
    /// need, transitively.
    pub fn select(&self, targets: &[String]) -> Result<BTreeSet<String>> {
        let mut want: Vec<String> = Vec::new();
        if targets.is_empty() {
            want.extend(self.services.keys().cloned());
        }
        for t in targets {
            let found: Vec<String> = match t.strip_prefix('@') {
                Some(tag) => self
                    .services
                    .values()
                    .filter(|s| s.tags.iter().any(|x| x == tag))
                    .map(|s| s.name.to_string())
                    .collect(),
                None => self
                    .services
                    .get(t)
                    .map(|s| s.name.to_string())
                    .into_iter()
                    .collect(),
            };
            if found.is_empty() {
                return Err(Error::NotInStack {
                    file: self.file.clone(),
                    msg: match t.strip_prefix('@') {
                        Some(tag) => format!("no service is tagged {tag:?}"),
                        None => format!("no service {t:?} in this file"),
                    },
                });
            }
            want.extend(found);
        }
        let mut out = BTreeSet::new();
        while let Some(n) = want.pop() {
            if out.insert(n.clone()) {
                if let Some(s) = self.services.get(&n) {
                    want.extend(s.needs.iter().map(|x| x.name.clone()));
                }
            }
        }
        Ok(out)
    }
}

/// A small regular text file, read whole; the error says what is wrong with it.
fn read_text(path: &Path) -> std::result::Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO put in the file's place must not hang the tool.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    String::from_utf8(buf).map_err(|_| "not UTF-8 text".to_string())
}

/// A `KEY=VALUE` file: blank lines and `#` comments skipped, an optional `export `, and
/// one level of matching quotes removed; no expansion.
fn read_env_file(path: &Path) -> std::result::Result<Vec<(String, String)>, String> {
    let src = read_text(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("{}:{}: expected KEY=VALUE", path.display(), i + 1));
        };
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) || k.contains('\0') {
            return Err(format!(
                "{}:{}: invalid variable name {k:?}",
                path.display(),
                i + 1
            ));
        }
        let v = v.trim();
        let v = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(a, b)| v.strip_prefix(*a).and_then(|x| x.strip_suffix(*b)))
            .unwrap_or(v);
        if v.contains('\0') {
            return Err(format!(
                "{}:{}: {k}: a value cannot hold a NUL byte",
                path.display(),
                i + 1
            ));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// A relative path template (pidfile, log) taken from the file's directory, as its other
/// paths are; absolute ones and those under `{state_dir}` as written.
fn anchored(dir: &Path, template: &str) -> std::result::Result<String, String> {
    crate::name::check_template(template).map_err(|e| e.to_string())?;
    if template.contains('\0') {
        return Err(format!("{template:?}: a path cannot hold a NUL byte"));
    }
    if template.starts_with('/') || template.starts_with("{state_dir}") {
        return Ok(template.to_string());
    }
    // The directory is text inside a template: its braces must not read as placeholders.
    let d = dir
        .display()
        .to_string()
        .replace('{', "{{")
        .replace('}', "}}");
    Ok(format!("{}/{template}", d.trim_end_matches('/')))
}

/// A service's `needs`: a list (each needed ready) or a table of name = condition.
fn needs_of(t: &ServiceToml) -> Vec<Need> {
    match t.needs.as_ref().map(|n| n.get_ref()) {
        None => Vec::new(),
        Some(NeedsToml::List(v)) => v
            .iter()
            .map(|n| Need {
                name: n.clone(),
                condition: Condition::Ready,
            })
            .collect(),
        Some(NeedsToml::Map(m)) => m
            .iter()
            .map(|(n, c)| Need {
                name: n.clone(),
                condition: *c,
            })
            .collect(),
    }
}

fn check_tags(tags: &[String]) -> std::result::Result<(), String> {
    for tag in tags {
        if tag.is_empty()
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!("tags: invalid tag {tag:?} (use A-Z a-z 0-9 . _ -)"));
        }
    }
    Ok(())
}

/// The ready checks, each checked, relative paths made the service's; and its restart
/// policy checked.
fn ready_checks(t: &ServiceToml, cwd: &Path) -> std::result::Result<Vec<String>, String> {
    // Relative paths in a check are the service's, as exec: probes run in its cwd (pm-start
    // would take them from wherever pm-up was run).
    let ready: Vec<String> = t
        .ready
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .map(|r| match r.split_once(':') {
            Some((kind @ ("file" | "unix"), p)) if !p.is_empty() && !p.starts_with('/') => {
                format!("{kind}:{}", cwd.join(p).display())
            }
            _ => r,
        })
        .collect();
    for r in &ready {
        crate::ready::Check::parse(r).map_err(|e| format!("ready: {e}"))?;
    }
    if let Some(r) = &t.restart {
        crate::monitor::Policy::parse(r).map_err(|e| format!("restart: {e}"))?;
    }
    Ok(ready)
}

/// A oneshot task takes only what applies to a run under pm-up.
fn check_oneshot(t: &ServiceToml, ready: &[String]) -> std::result::Result<(), String> {
    if t.oneshot && (t.restart.as_deref().is_some_and(|r| r != "no") || !ready.is_empty()) {
        return Err(
            "a oneshot task has no restart policy and no ready checks: it succeeds by exiting 0"
                .into(),
        );
    }
    if t.oneshot {
        // A task runs to its end under pm-up, with no record, monitor, logger or cgroup:
        // settings for those would be ignored, so they are refused.
        let unused = [
            ("grace", t.grace.is_some()),
            ("pidfile", t.pidfile.is_some()),
            ("restart_delay", t.restart_delay.is_some()),
            ("max_restarts", t.max_restarts.is_some()),
            ("log_max_size", t.log_max_size.is_some()),
            ("log_keep", t.log_keep.is_some()),
            ("log_timestamps", t.log_timestamps),
            ("memory_max", t.memory_max.is_some()),
            ("cpu_max", t.cpu_max.is_some()),
            ("pids_max", t.pids_max.is_some()),
        ];
        if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
            return Err(format!("{key} does not apply to a oneshot task"));
        }
    }
    Ok(())
}

/// The command, and the strings that only fail at exec if not checked here: a NUL byte
/// in the command, cwd, env_file or user.
fn command_of(t: &ServiceToml) -> std::result::Result<Vec<String>, String> {
    let command = match &t.command {
        CommandToml::Shell(s) if !s.trim().is_empty() => {
            vec!["/bin/sh".to_string(), "-c".to_string(), s.clone()]
        }
        CommandToml::Argv(v) if !v.is_empty() && !v[0].is_empty() => v.clone(),
        _ => return Err("command is empty".into()),
    };
    if command.iter().any(|a| a.contains('\0')) {
        return Err("command: an argument cannot hold a NUL byte".into());
    }
    let nul_path = |what: &str, p: &Option<PathBuf>| match p {
        Some(p) if p.as_os_str().as_encoded_bytes().contains(&0) => {
            Err(format!("{what}: a path cannot hold a NUL byte"))
        }
        _ => Ok(()),
    };
    nul_path("cwd", &t.cwd)?;
    nul_path("env_file", &t.env_file)?;
    if t.user
        .as_deref()
        .is_some_and(|u| u.is_empty() || u.contains('\0'))
    {
        return Err(format!(
            "user: invalid user {:?}",
            t.user.as_deref().unwrap_or("")
        ));
    }
    Ok(command)
}

/// `env_file` (taken from the file's directory) and then `env` over it.
fn env_of(dir: &Path, t: &ServiceToml) -> std::result::Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(f) = &t.env_file {
        env.extend(read_env_file(&dir.join(f))?);
    }
    for (k, v) in &t.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(format!("env: invalid variable {k:?}"));
        }
        env.push((k.clone(), v.clone()));
    }
    Ok(env)
}

/// Checks one service and turns it into a start request; `dir`: the file's directory,
/// which relative paths are taken from.
fn resolve(dir: &Path, key: &str, t: &ServiceToml) -> std::result::Result<Service, String> {
    let name = Name::new(key).map_err(|e| e.to_string())?;
    if name.instance().is_some() {
        return Err("a stack service cannot be a template instance (no @ in its name)".into());
    }
    let command = command_of(t)?;
    let cwd = dir.join(t.cwd.as_deref().unwrap_or(Path::new(".")));
    let env = env_of(dir, t)?;
    let dur = |what: &str, v: &Option<String>| {
        v.as_deref()
            .map(crate::duration::parse)
            .transpose()
            .map_err(|e| format!("{what}: {e}"))
    };
    let num = |what: &str, v: &Option<SizeToml>, f: fn(&str) -> Result<u64>| {
        v.as_ref()
            .map(|x| f(&x.text()))
            .transpose()
            .map_err(|e| format!("{what}: {e}"))
    };
    let stop_signal = t
        .stop_signal
        .as_deref()
        .map(crate::signal::parse)
        .transpose()
        .map_err(|e| format!("stop_signal: {e}"))?;
    let max_restarts = t
        .max_restarts
        .as_ref()
        .map(|m| crate::monitor::parse_max_restarts(&m.text()))
        .transpose()
        .map_err(|e| format!("max_restarts: {e}"))?;
    let ready = ready_checks(t, &cwd)?;
    check_oneshot(t, &ready)?;
    let cpu_max = t
        .cpu_max
        .as_ref()
        .map(|c| crate::cgroup::parse_cpu(&c.text()))
        .transpose()
        .map_err(|e| format!("cpu_max: {e}"))?;
    let request = Request {
        name: name.to_string(),
        command,
        cwd: Some(cwd.clone()),
        env,
        user: t.user.clone(),
        pidfile: t
            .pidfile
            .as_deref()
            .map(|p| anchored(dir, p).map_err(|e| format!("pidfile: {e}")))
            .transpose()?,
        log: t
            .log
            .as_deref()
            .map(|p| anchored(dir, p).map_err(|e| format!("log: {e}")))
            .transpose()?,
        stop_signal,
        stop_timeout: dur("stop_timeout", &t.stop_timeout)?,
        grace: dur("grace", &t.grace)?,
        ready,
        ready_timeout: dur("ready_timeout", &t.ready_timeout)?,
        no_cgroup: t.no_cgroup,
        memory_max: num("memory_max", &t.memory_max, crate::cgroup::parse_size)?,
        cpu_max,
        pids_max: t.pids_max,
        restart: t.restart.clone(),
        restart_delay: dur("restart_delay", &t.restart_delay)?,
        max_restarts,
        log_max_size: num("log_max_size", &t.log_max_size, crate::cgroup::parse_size)?,
        log_keep: t.log_keep,
        log_timestamps: t.log_timestamps,
        ..Request::default()
    };
    let needs = needs_of(t);
    if needs.iter().any(|n| n.name == key) {
        return Err("a service cannot need itself".into());
    }
    check_tags(&t.tags)?;
    let mut resolved = t.clone();
    resolved.cwd = Some(cwd);
    resolved.env = request.env.iter().cloned().collect();
    resolved.env_file = None;
    let definition = serde_json::to_value(&resolved).map_err(|e| e.to_string())?;
    Ok(Service {
        name,
        request,
        needs,
        tags: t.tags.clone(),
        oneshot: t.oneshot,
        definition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Stack> {
        Stack::parse(Path::new("/srv/app/pm.toml"), src)
    }

    fn err(src: &str) -> String {
        match parse(src) {
            Ok(_) => panic!("accepted: {src}"),
            Err(e) => {
                assert_eq!(e.exit_code(), crate::Code::Usage, "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn a_stack_resolves_paths_and_needs() {
        let s = parse(
            r#"
[services.db]
command = ["postgres", "-D", "data"]
ready = "tcp:5432"
tags = ["data"]

[services.migrate]
command = "./migrate up"
oneshot = true
needs = ["db"]

[services.web]
command = ["./web"]
cwd = "www"
env = { PORT = "8000" }
needs = { db = "ready", migrate = "succeeded" }
ready = ["unix:run/web.sock", "file:/abs/x", "exec:test -e y"]
pidfile = "run/{name}.pid"
log = "{state_dir}/{name}.log"
"#,
        )
        .unwrap();
        let web = &s.services["web"];
        assert_eq!(web.request.cwd.as_deref(), Some(Path::new("/srv/app/www")));
        assert_eq!(web.request.env, vec![("PORT".into(), "8000".into())]);
        assert_eq!(
            web.request.ready,
            [
                "unix:/srv/app/www/run/web.sock",
                "file:/abs/x",
                "exec:test -e y"
            ]
        );
        assert_eq!(
            web.request.pidfile.as_deref(),
            Some("/srv/app/run/{name}.pid")
        );
        assert_eq!(web.request.log.as_deref(), Some("{state_dir}/{name}.log"));
        assert_eq!(web.needs.len(), 2);
        assert_eq!(
            s.services["migrate"].request.command[..2],
            ["/bin/sh", "-c"]
        );
        assert_eq!(s.services["db"].request.ready, vec!["tcp:5432"]);
        let all: Vec<_> = s.select(&["web".into()]).unwrap().into_iter().collect();
        assert_eq!(all, ["db", "migrate", "web"]);
        let data: Vec<_> = s.select(&["@data".into()]).unwrap().into_iter().collect();
        assert_eq!(data, ["db"]);
        assert!(s.select(&["@nope".into()]).is_err());
        assert!(s.select(&["nope".into()]).is_err());
    }

    #[test]
    fn errors_name_the_line() {
        let e = err("[services.a]\ncommand = \"x\"\ncomand = \"y\"\n");
        assert!(e.starts_with("/srv/app/pm.toml:3: "), "{e}");
        assert!(e.contains("comand"), "{e}");
        let e = err(
            "[services.a]\ncommand = \"x\"\n\n[services.b]\ncommand = \"y\"\nneeds = [\"c\"]\n",
        );
        assert!(e.starts_with("/srv/app/pm.toml:6: "), "{e}");
        assert!(e.contains("\"c\", which is not in this file"), "{e}");
        let e = err("[services.a]\ncommand = \"x\"\nneeds = [\"b\"]\n[services.b]\ncommand = \"y\"\nneeds = [\"a\"]\n");
        assert!(e.contains("dependency cycle: a -> b -> a"), "{e}");
        let e = err("[services.a]\ncommand = \"x\"\nneeds = { b = \"done\" }\n[services.b]\ncommand = \"y\"\n");
        assert!(e.contains(":3: "), "{e}");
        let e = err("[services.a]\ncommand = \"x\"\nneeds = { b = \"succeeded\" }\n[services.b]\ncommand = \"y\"\n");
        assert!(e.contains("oneshot"), "{e}");
        let e = err("[services.\"a b\"]\ncommand = \"x\"\n");
        assert!(e.contains("invalid name"), "{e}");
        let e = err("[services.a]\ncommand = \"x\"\nstop_timeout = \"soon\"\n");
        assert!(e.contains("stop_timeout"), "{e}");
        err("[services.a]\ncommand = []\n");
        err("[service.a]\ncommand = \"x\"\n");
        err("[services.a]\ncommand = \"x\"\nneeds = [\"a\"]\n");
        // A NUL byte can only fail at exec: the file is refused where it is read.
        for (key, line) in [
            ("command", "command = [\"x\", \"a\\u0000b\"]"),
            ("command", "command = \"x\\u0000\""),
            ("cwd", "command = \"x\"\ncwd = \"/tmp\\u0000x\""),
            ("user", "command = \"x\"\nuser = \"root\\u0000\""),
        ] {
            let e = err(&format!("[services.a]\n{line}\n"));
            assert!(e.contains(":1: ") && e.contains(key), "{e}");
        }
    }

    #[test]
    fn a_long_chain_of_needs_is_checked_without_recursion() {
        // 50k services in one chain, closed into a cycle at the end: a recursive check
        // overflows the stack (test threads have 2 MiB).
        let n = 50_000;
        let mut src = String::new();
        for i in 0..n {
            let next = (i + 1) % n;
            src.push_str(&format!(
                "[services.s{i}]\ncommand = \"x\"\nneeds = [\"s{next}\"]\n"
            ));
        }
        let e = err(&src);
        assert!(
            e.contains("dependency cycle: s0 -> s1 -> s2"),
            "{}",
            &e[..200]
        );
        let open = src.replace("needs = [\"s0\"]", "");
        assert!(parse(&open).is_ok());
    }

    #[test]
    fn the_example_file_is_a_valid_stack() {
        let s = parse(include_str!("../../../examples/pm.toml")).unwrap();
        let web: Vec<_> = s.select(&["@front".into()]).unwrap().into_iter().collect();
        assert_eq!(web, ["db", "migrate", "web"]);
        let g = parse(include_str!("../../../examples/grazr/pm.toml")).unwrap();
        let all: Vec<_> = g.select(&["nginx".into()]).unwrap().into_iter().collect();
        assert_eq!(
            all,
            [
                "mariadb",
                "mariadb-init",
                "nginx",
                "pg",
                "pg-init",
                "php-fpm",
                "redis"
            ]
        );
    }

    #[test]
    fn the_definition_ignores_needs_and_tags() {
        let a = parse("[services.a]\ncommand = \"x\"\n").unwrap();
        let b = parse("[services.a]\ncommand = \"x\"\ntags = [\"t\"]\n").unwrap();
        let c = parse("[services.a]\ncommand = \"x y\"\n").unwrap();
        assert_eq!(a.services["a"].definition, b.services["a"].definition);
        assert_ne!(a.services["a"].definition, c.services["a"].definition);
    }

    #[test]
    fn env_files_are_read_without_expansion() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "# c\n\nexport A=1\nB=\"two words\"\nC='$HOME'\n",
        )
        .unwrap();
        let file = dir.path().join("pm.toml");
        let s = Stack::parse(
            &file,
            "[services.a]\ncommand = \"x\"\nenv_file = \".env\"\nenv = { A = \"9\" }\n",
        )
        .unwrap();
        let env = &s.services["a"].request.env;
        assert_eq!(
            env,
            &[
                ("A".to_string(), "1".to_string()),
                ("B".into(), "two words".into()),
                ("C".into(), "$HOME".into()),
                ("A".into(), "9".into())
            ]
        );
        std::fs::write(dir.path().join(".env"), "junk\n").unwrap();
        let e = Stack::parse(
            &file,
            "[services.a]\ncommand = \"x\"\nenv_file = \".env\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains(".env:1: expected KEY=VALUE"), "{e}");
    }
}
