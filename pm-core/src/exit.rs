//! Exit codes, LSB style, as one enum so every tool and man page uses the same table.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success / running |
//! | 1    | failure; for pm-status: dead (recorded as running, process gone) |
//! | 2    | usage error |
//! | 3    | not running (stopped) |
//! | 4    | unknown name (no record, no PID file) |
//! | 150  | pm-status only: still starting (LSB reserves 150-199 for applications) |
//! | 151  | pm-status only: supervised, ended, its monitor restarts it shortly (backoff) |

/// A documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    NotRunning = 3,
    Unknown = 4,
    Starting = 150,
    Backoff = 151,
}

impl Code {
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The documented code with this value, if there is one.
    pub fn from_i32(n: i32) -> Option<Code> {
        [
            Code::Ok,
            Code::Failure,
            Code::Usage,
            Code::NotRunning,
            Code::Unknown,
            Code::Starting,
            Code::Backoff,
        ]
        .into_iter()
        .find(|c| c.as_i32() == n)
    }

    /// Combines per-name outcomes of pm-stop / pm-stopall / pm-start: a failure
    /// outranks an unknown name, which outranks success. Order of names does not matter.
    pub fn worst(codes: impl IntoIterator<Item = Code>) -> Code {
        codes.into_iter().fold(Code::Ok, |acc, c| {
            let rank = |c: Code| match c {
                Code::Ok => 0,
                Code::NotRunning | Code::Starting | Code::Backoff => 1,
                Code::Unknown => 2,
                Code::Usage => 3,
                Code::Failure => 4,
            };
            if rank(c) > rank(acc) {
                c
            } else {
                acc
            }
        })
    }

    /// pm-status's LSB rule: the first name that is not running decides.
    pub fn first_not_ok(codes: impl IntoIterator<Item = Code>) -> Code {
        codes
            .into_iter()
            .find(|c| *c != Code::Ok)
            .unwrap_or(Code::Ok)
    }
}

impl From<Code> for std::process::ExitCode {
    fn from(c: Code) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}

/// How a tool that dies of SIGINT, SIGTERM or SIGHUP is seen by its shell: 128 + N.
pub const INTERRUPTED: &str = "130, 143, 129";

/// What each exit code means for `tool`, in the words of its man page's EXIT STATUS
/// section (generated from this table, so the pages cannot drift from the codes).
pub fn meanings(tool: &str) -> Vec<(String, &'static str)> {
    let mut rows = match tool {
        "pm-start" => vec![
            (Code::Ok.as_i32().to_string(), "the service is up (or was already running)"),
            (Code::Failure.as_i32().to_string(), "it could not be started: not found, not executable, exited early, killed, not ready in time; the reason and the log tail are on stderr"),
            (Code::Unknown.as_i32().to_string(), "no COMMAND was given and NAME has no record (for @TAG: no record has the tag)"),
            (INTERRUPTED.to_string(), "interrupted by SIGINT, SIGTERM or SIGHUP while waiting: the half-started service is stopped, then pm-start dies of that signal (the shell reports 128 + N and stops a loop)"),
        ],
        "pm-stop" => vec![
            (Code::Ok.as_i32().to_string(), "every NAME is stopped or was not running (a stale PID file is removed and reported)"),
            (Code::Failure.as_i32().to_string(), "some NAME could not be stopped (permission denied, alive after SIGKILL, or alive after the timeout with \\-\\-no\\-kill); its PIDs are on stderr"),
            (Code::Unknown.as_i32().to_string(), "some NAME is unknown: no record and no PID file (the others were still handled)"),
            (INTERRUPTED.to_string(), "interrupted by SIGINT, SIGTERM or SIGHUP: for the service being stopped pm-stop says which signal it sent how long ago (the service may still be shutting down), then dies of that signal; running pm-stop again finishes the stop"),
        ],
        "pm-status" => vec![
            (Code::Ok.as_i32().to_string(), "every NAME is running (with no NAME: every recorded service)"),
            (Code::Failure.as_i32().to_string(), "dead: recorded as running but the process is gone or its PID was reused (stale PID file), or its leader is gone and its cgroup still holds processes; or failed: its monitor (\\-\\-restart) gave up restarting it"),
            (Code::NotRunning.as_i32().to_string(), "stopped: stopped by pm-stop, or recorded and never running"),
            (Code::Unknown.as_i32().to_string(), "unknown: no record and no PID file, or the record cannot be read"),
            (Code::Starting.as_i32().to_string(), "starting: pm-start (or the monitor, restarting it) is still waiting for it to become ready"),
            (Code::Backoff.as_i32().to_string(), "backoff: started with \\-\\-restart, it ended and its monitor starts it again after the restart delay"),
        ],
        "pm-stopall" => vec![
            (Code::Ok.as_i32().to_string(), "every running service was stopped"),
            (Code::Failure.as_i32().to_string(), "some service could not be stopped"),
            (INTERRUPTED.to_string(), "interrupted by SIGINT, SIGTERM or SIGHUP: for each service being stopped pm-stopall says which signal it sent how long ago, then dies of that signal; running it again finishes the stops"),
        ],
        "pm-signal" => vec![
            (Code::Ok.as_i32().to_string(), "every NAME was sent the signal"),
            (Code::Failure.as_i32().to_string(), "some NAME is not running (stopped or dead) or could not be signalled; the others were still handled"),
            (Code::Unknown.as_i32().to_string(), "some NAME is unknown: no record and no PID file"),
        ],
        "pm-up" => vec![
            (Code::Ok.as_i32().to_string(), "every service asked for (and what it needs) is ready, or a oneshot task succeeded; those already running unchanged were left alone"),
            (Code::Failure.as_i32().to_string(), "some service failed to start (or a task failed), so what needs it was not started; the reason and the log tail are on stderr; the others were still started"),
            (Code::Unknown.as_i32().to_string(), "some NAME or @TAG is not in the file; nothing was started"),
            (INTERRUPTED.to_string(), "interrupted by SIGINT, SIGTERM or SIGHUP: the services this pm-up started (and still started by it) are stopped, each after what needs it, and the starts under way are stopped in the same order; then pm-up dies of that signal"),
        ],
        "pm-down" => vec![
            (Code::Ok.as_i32().to_string(), "every service is stopped or was not running"),
            (Code::Failure.as_i32().to_string(), "some service could not be stopped; what it needs was still stopped"),
            (Code::Unknown.as_i32().to_string(), "some NAME or @TAG has no record"),
        ],
        _ => Vec::new(),
    };
    rows.push((
        Code::Usage.as_i32().to_string(),
        "usage error (bad option, name, signal, duration or template)",
    ));
    rows.sort_by_key(|(c, _)| {
        c.split(',')
            .next()
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
    });
    rows
}

/// How a tool ends: with its outcome, or with its error said on stderr as
/// `TOOL: what: why...` (the whole chain, as anyhow's `{:#}` shows it) and the exit code
/// the first [`crate::Error`] in the chain decides. Every binary's `main` ends here.
pub fn finish<E>(tool: &str, outcome: Result<std::process::ExitCode, E>) -> std::process::ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    let err = match outcome {
        Ok(code) => return code,
        Err(e) => e,
    };
    let top: &(dyn std::error::Error + 'static) = err.as_ref();
    let chain = || std::iter::successors(Some(top), |e| e.source());
    let text: Vec<String> = chain().map(|e| e.to_string()).collect();
    // Not eprintln!: a closed stderr must not turn an error into a panic.
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{tool}: {}", text.join(": "));
    code_for(chain()).into()
}

/// The exit code for an error chain (as from `anyhow::Error::chain`): the first
/// `pm_core::Error` in it decides; anything else is a plain failure.
pub fn code_for<'a>(chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> Code {
    chain
        .filter_map(|e| e.downcast_ref::<crate::Error>())
        .map(|e| e.exit_code())
        .next()
        .unwrap_or(Code::Failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_prefers_failure_over_unknown_over_ok() {
        assert_eq!(Code::worst([Code::Ok, Code::Ok]), Code::Ok);
        assert_eq!(Code::worst([Code::Ok, Code::Unknown]), Code::Unknown);
        assert_eq!(
            Code::worst([Code::Unknown, Code::Failure, Code::Ok]),
            Code::Failure
        );
        assert_eq!(Code::worst([Code::Failure, Code::Unknown]), Code::Failure);
        assert_eq!(Code::worst([]), Code::Ok);
    }

    #[test]
    fn first_not_ok_is_order_sensitive() {
        assert_eq!(
            Code::first_not_ok([Code::Ok, Code::NotRunning, Code::Failure]),
            Code::NotRunning
        );
        assert_eq!(
            Code::first_not_ok([Code::Failure, Code::NotRunning]),
            Code::Failure
        );
        assert_eq!(Code::first_not_ok([Code::Ok]), Code::Ok);
    }
}
