//! clap value parsers for the values every tool takes (signals, durations, `--env`,
//! `--ready`, limits), so a bad value is a usage error in clap's words and with clap's exit
//! code, whichever tool and option it came through; and so completion scripts can offer
//! signal names and check kinds.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::{PossibleValue, TypedValueParser};
use nix::sys::signal::Signal;

/// `--state-dir DIR`, which every tool takes (flattened into its command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StateDirArg {
    /// State directory [default: $PM_STATE_DIR, $XDG_RUNTIME_DIR/pm, /run/pm as root, else ${TMPDIR:-/tmp}/pm-$UID]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateDirArg {
    /// The directory given, if any (else [`crate::StateDir::resolve`] finds the default).
    pub fn dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }
}

/// `--signal`, `--stop-signal`: a name (TERM, SIGTERM) or a number; completion offers the
/// usual names (give the argument `hide_possible_values`: any signal is accepted).
#[derive(Clone, Copy, Debug)]
pub struct SignalArg;

/// The signals offered by completion, the ones services use.
pub const SIGNAL_NAMES: [&str; 12] = [
    "TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2", "WINCH", "CONT", "STOP", "ALRM", "PWR",
];

impl TypedValueParser for SignalArg {
    type Value = Signal;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Signal, clap::Error> {
        let parse = |s: &str| crate::signal::parse(s).map_err(|e| e.to_string());
        parse.parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            SIGNAL_NAMES.iter().map(|n| PossibleValue::new(*n)),
        ))
    }
}

/// `--ready CHECK`: validated (the record keeps the text as given); completion offers the
/// check kinds.
#[derive(Clone, Copy, Debug)]
pub struct CheckArg;

/// The check kinds, as completion offers them.
pub const CHECK_KINDS: [&str; 7] = [
    "pidfile", "notify", "tcp:", "unix:", "file:", "exec:", "log:",
];

impl TypedValueParser for CheckArg {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let parse = |s: &str| {
            crate::ready::Check::parse(s)
                .map(|_| s.to_string())
                .map_err(|e| e.to_string())
        };
        parse.parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(CHECK_KINDS.iter().map(|n| PossibleValue::new(*n))))
    }
}

/// Durations: `250ms`, `5s`, `2m`, `1.5`.
pub fn duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

/// `--env KEY=VALUE`.
pub fn env_pair(kv: &str) -> Result<(String, String), String> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err("expected KEY=VALUE".into()),
    }
}

/// `--memory-max SIZE`.
pub fn size(s: &str) -> Result<u64, String> {
    crate::cgroup::parse_size(s).map_err(|e| e.to_string())
}

/// `--cpu-max CPUS`.
pub fn cpu(s: &str) -> Result<String, String> {
    crate::cgroup::parse_cpu(s).map_err(|e| e.to_string())
}

/// `--pids-max N`.
pub fn pids(s: &str) -> Result<u64, String> {
    crate::cgroup::parse_pids(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[arg(long, value_parser = SignalArg)]
        signal: Option<Signal>,
        #[arg(long, value_parser = CheckArg)]
        ready: Vec<String>,
        #[arg(long, value_parser = duration)]
        timeout: Option<Duration>,
    }

    #[test]
    fn bad_values_are_usage_errors_in_clap_words() {
        let t = T::try_parse_from([
            "t",
            "--signal",
            "quit",
            "--ready",
            "tcp:80",
            "--timeout",
            "2s",
        ])
        .unwrap();
        assert_eq!(t.signal, Some(Signal::SIGQUIT));
        assert_eq!(t.ready, ["tcp:80"]);
        assert_eq!(t.timeout, Some(Duration::from_secs(2)));
        for argv in [
            ["t", "--signal", "BOGUS"],
            ["t", "--ready", "tcp:0"],
            ["t", "--timeout", "soon"],
        ] {
            let e = T::try_parse_from(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("invalid value '{}' for '{}", argv[2], argv[1])),
                "{text}"
            );
            assert!(
                text.contains("For more information, try '--help'"),
                "{text}"
            );
        }
    }
}
