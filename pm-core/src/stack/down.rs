//! pm-down: stop a stack's services, each after everything that needs it.
//!
//! The order comes from the records (what each service needed when it was started), not
//! from the file, which may have been edited since: a file is only used to name the stack.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::Result;
use crate::report::say;
use crate::stop::{stop_name, Options, Report};
use crate::{Code, Name, StateDir};

const TOOL: &str = "pm-down";

/// Stops the services of the stack in `file` that `targets` name (`NAME` or `@TAG`;
/// none: every service started from `file`), and everything recorded as needing them,
/// dependents first; independent services are stopped at the same time.
pub fn down(
    file: &Path,
    state_dir: Option<&Path>,
    targets: &[String],
    opts: &Options,
) -> Result<Code> {
    let sd = StateDir::resolve(state_dir, false)?;
    // Not in a state dir that does not exist (nothing to stop, nothing to create).
    let held = match sd.path().is_dir() {
        true => Some(super::hold(&sd, file, false, TOOL)?),
        false => None,
    };
    let rec = Recorded::read(&sd, file)?;
    // No record of this stack left (forgotten, or never started here): nor its lock files.
    if rec.from_file.is_empty() {
        if let Some(h) = held {
            h.remove();
        }
    }
    let (mut set, code) = rec.chosen(file, targets)?;
    // Whatever needs a service that stops goes first, whichever file it came from.
    loop {
        let more: Vec<String> = rec
            .needs
            .iter()
            .filter(|(n, ns)| !set.contains(*n) && ns.iter().any(|x| set.contains(x)))
            .map(|(n, _)| n.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        set.extend(more);
    }
    crate::stop::report_interrupts(TOOL)?;
    Ok(Code::worst([
        code,
        stop_in_rounds(&sd, &rec.needs, set, opts),
    ]))
}

/// What the records say of stacks.
struct Recorded {
    /// name -> what it was started needing, for every record started from a stack.
    needs: BTreeMap<String, Vec<String>>,
    tags: BTreeMap<String, Vec<String>>,
    /// Those started from the file asked about.
    from_file: BTreeSet<String>,
    /// Every recorded name.
    known: BTreeSet<String>,
}

impl Recorded {
    fn read(sd: &StateDir, file: &Path) -> Result<Recorded> {
        let mut r = Recorded {
            needs: BTreeMap::new(),
            tags: BTreeMap::new(),
            from_file: BTreeSet::new(),
            known: BTreeSet::new(),
        };
        for (name, rec) in sd.list_for_report()? {
            r.known.insert(name.to_string());
            let Ok(rec) = rec else { continue };
            let Some(m) = rec.stack else { continue };
            if m.file == file {
                r.from_file.insert(name.to_string());
            }
            r.needs.insert(
                name.to_string(),
                m.needs.into_iter().map(|n| n.name).collect(),
            );
            r.tags.insert(name.to_string(), m.tags);
        }
        Ok(r)
    }

    /// The names `targets` ask for (none: all from `file`); an unknown one is said, and
    /// makes the code `Unknown`.
    fn chosen(&self, file: &Path, targets: &[String]) -> Result<(BTreeSet<String>, Code)> {
        let mut code = Code::Ok;
        let mut set: BTreeSet<String> = BTreeSet::new();
        if targets.is_empty() {
            set = self.from_file.clone();
            if set.is_empty() {
                crate::report::line(format!(
                    "{TOOL}: {}: no service was started from this file",
                    file.display()
                ));
            }
        }
        for t in targets {
            match t.strip_prefix('@') {
                Some(tag) => {
                    let found: Vec<&String> = self
                        .tags
                        .iter()
                        .filter(|(_, ts)| ts.iter().any(|x| x == tag))
                        .map(|(n, _)| n)
                        .collect();
                    if found.is_empty() {
                        crate::report::line(format!(
                            "{TOOL}: @{tag}: no recorded service is tagged {tag:?}"
                        ));
                        code = Code::worst([code, Code::Unknown]);
                    }
                    set.extend(found.into_iter().cloned());
                }
                None => {
                    let name = Name::new(t)?;
                    if self.known.contains(name.as_str()) {
                        set.insert(name.to_string());
                    } else {
                        say(TOOL, name.as_str(), Report::Unknown.describe());
                        code = Code::worst([code, Code::Unknown]);
                    }
                }
            }
        }
        Ok((set, code))
    }
}

/// Stops `left` in rounds: each round those nothing left needs, at the same time.
fn stop_in_rounds(
    sd: &StateDir,
    needs: &BTreeMap<String, Vec<String>>,
    mut left: BTreeSet<String>,
    opts: &Options,
) -> Code {
    let mut code = Code::Ok;
    while !left.is_empty() {
        // Those nothing left needs; if a hand-edited record closed a cycle, the rest at once.
        let mut round: Vec<String> = left
            .iter()
            .filter(|n| {
                !left
                    .iter()
                    .any(|o| needs.get(o).is_some_and(|ns| ns.contains(n)))
            })
            .cloned()
            .collect();
        if round.is_empty() {
            round = left.iter().cloned().collect();
        }
        let codes = crate::parallel::each(round.iter().collect(), |n| stop_one(sd, n, opts));
        let codes = codes.into_iter().map(|c| c.unwrap_or(Code::Failure));
        code = Code::worst(codes.chain([code]));
        for n in round {
            left.remove(&n);
        }
    }
    code
}

fn stop_one(sd: &StateDir, name: &str, opts: &Options) -> Code {
    let stopped = Name::new(name).and_then(|n| stop_name(sd, &n, opts, TOOL));
    match stopped {
        Ok(r) => {
            say(TOOL, name, r.describe());
            r.code()
        }
        Err(e) => {
            say(TOOL, name, &e);
            Code::Failure
        }
    }
}
