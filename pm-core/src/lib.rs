//! pm-core: everything the pm tools share.
//!
//! pm starts, stops and reports background services with no daemon: all state is plain
//! files in a state directory, and every question about a process is answered by the
//! kernel (`/proc`, signals, pidfds) at the moment it is asked. The modules follow the
//! nouns of the design: [`name`]s and templates, the [`state`] directory and its
//! [`record`]s, per-name [`lock`]s, [`pidfile`]s, [`process`] identity, [`spawn`],
//! [`stop`], [`ready`] checks and [`status`].

pub mod cgroup;
#[cfg(feature = "cli")]
pub mod cli;
pub mod deliver;
pub mod duration;
pub mod error;
pub mod exit;
pub mod lineage;
pub mod lock;
pub mod logger;
pub mod monitor;
pub mod name;
pub mod parallel;
pub mod pidfile;
pub mod process;
pub mod ready;
pub mod record;
pub mod report;
pub mod signal;
pub mod spawn;
pub mod stack;
pub mod start;
pub mod state;
pub mod status;
pub mod stop;
mod sys;
pub mod tail;
pub mod untrusted;
pub mod watch;
pub use sys::terminal_width;

pub use error::{Error, Result};
pub use exit::Code;
pub use name::Name;
pub use state::StateDir;

/// The modules build on each other in layers: no module reaches itself through the
/// others (`record` below `monitor`, `process` below `cgroup`, `state` below `logger`,
/// `monitor` below `stop`), so each can be read, and tested, from the bottom up.
#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Top-level module -> the modules its non-test code names as `crate::X`.
    fn uses() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                for f in std::fs::read_dir(&p).unwrap() {
                    files.push(f.unwrap().path());
                }
            } else {
                files.push(p);
            }
        }
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        {
            let rel = f.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let deps = out.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let idents: Vec<&str> = match rest.strip_prefix('{') {
                    // `use crate::{a, b::{c, d}}`: every word up to the matching brace.
                    Some(group) => {
                        let mut depth = 1;
                        let end = group
                            .char_indices()
                            .find(|&(_, c)| {
                                depth += match c {
                                    '{' => 1,
                                    '}' => -1,
                                    _ => 0,
                                };
                                depth == 0
                            })
                            .map_or(group.len(), |(j, _)| j);
                        group[..end]
                            .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                            .collect()
                    }
                    None => rest
                        .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                        .take(1)
                        .collect(),
                };
                deps.extend(
                    idents
                        .into_iter()
                        .filter(|w| !w.is_empty() && *w != module)
                        .map(str::to_string),
                );
            }
        }
        let names: BTreeSet<String> = out.keys().cloned().collect();
        for deps in out.values_mut() {
            deps.retain(|d| names.contains(d));
        }
        out
    }

    #[test]
    fn no_module_reaches_itself() {
        let uses = uses();
        assert!(uses.len() > 20, "sources not found: {uses:?}");
        assert!(uses["stop"].contains("process"), "the scan finds nothing");
        for start in uses.keys() {
            // Depth-first from `start`, with the path that led to each module.
            let mut todo: Vec<Vec<&str>> = vec![vec![start.as_str()]];
            let mut seen = BTreeSet::new();
            while let Some(path) = todo.pop() {
                let here = path[path.len() - 1];
                for next in &uses[here] {
                    let mut p = path.clone();
                    p.push(next.as_str());
                    assert!(next != start, "import cycle: {}", p.join(" -> "));
                    if seen.insert(next.as_str()) {
                        todo.push(p);
                    }
                }
            }
        }
    }
}
