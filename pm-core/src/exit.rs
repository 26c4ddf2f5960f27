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

/// A documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    NotRunning = 3,
    Unknown = 4,
    Starting = 150,
}

impl Code {
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// Combines per-name outcomes of pm-stop / pm-stopall / pm-start: a failure
    /// outranks an unknown name, which outranks success. Order of names does not matter.
    pub fn worst(codes: impl IntoIterator<Item = Code>) -> Code {
        codes.into_iter().fold(Code::Ok, |acc, c| {
            let rank = |c: Code| match c {
                Code::Ok => 0,
                Code::NotRunning | Code::Starting => 1,
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
