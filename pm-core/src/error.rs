//! One error type for the whole library.
//!
//! Every variant names the thing that went wrong (a path, a PID, a name) and keeps the OS
//! error as its source, so a binary can print `{err:#}` and the user knows what to look at.
//! Each variant also knows which documented exit code it maps to.

use std::io;
use std::path::PathBuf;

use crate::exit::Code;

/// Result alias used throughout pm-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an `exec` of the service's command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFailure {
    NotFound,
    PermissionDenied,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    #[error("invalid template {template:?}: {reason}")]
    InvalidTemplate { template: String, reason: String },

    #[error("invalid signal {0:?} (use a name such as TERM or SIGTERM, or a number such as 15)")]
    InvalidSignal(String),

    #[error("invalid duration {0:?} (use e.g. 250ms, 5s, 2m or 1.5)")]
    InvalidDuration(String),

    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: String,
    },

    #[error("state directory {path}: {reason}")]
    UnsafeStateDir { path: PathBuf, reason: String },

    // The OS error is part of the message (not a `source`), so `{err:#}` shows it once.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },

    #[error("{path}: corrupt record: {reason}")]
    CorruptRecord { path: PathBuf, reason: String },

    #[error("{path}: invalid PID file: {reason}")]
    InvalidPidFile { path: PathBuf, reason: String },

    #[error("pid {pid}: {err}")]
    Process { pid: i32, err: io::Error },

    #[error("{program}: {}", exec_reason(*kind, err))]
    Exec {
        program: String,
        kind: ExecFailure,
        err: io::Error,
    },

    #[error("unknown user {0:?}")]
    UnknownUser(String),

    #[error("unknown group {0:?}")]
    UnknownGroup(String),

    #[error("no record for {0} (start it once with a command: pm-start {0} -- COMMAND)")]
    NoRecord(String),

    #[error("@{0}: no recorded service is tagged {0:?}")]
    NoTag(String),

    /// pm-up asked for a NAME or @TAG its file does not define.
    #[error("{}: {msg}", file.display())]
    NotInStack {
        file: std::path::PathBuf,
        msg: String,
    },

    #[error("{0}")]
    Os(String),

    /// A start refused or given up for the reason stated (another user, a record that
    /// cannot be read, leftovers that cannot be stopped, a concurrent start that hung).
    #[error("{0}")]
    Start(String),

    /// A cgroup could not be made or set up as asked (a missing controller, a limit the
    /// kernel refused, `PM_CGROUP=on` without a hierarchy).
    #[error("cgroup: {0}")]
    Cgroup(String),

    /// A services file that cannot be read or is not a valid stack.
    #[error("{}{}: {msg}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Stack {
        file: PathBuf,
        line: Option<usize>,
        msg: String,
    },
}

fn exec_reason(kind: ExecFailure, err: &io::Error) -> String {
    match kind {
        ExecFailure::NotFound => "command not found".into(),
        ExecFailure::PermissionDenied => "permission denied (not executable?)".into(),
        ExecFailure::Other => format!("cannot execute: {err}"),
    }
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }

    /// The documented exit code for this error.
    pub fn exit_code(&self) -> Code {
        match self {
            Error::InvalidName { .. }
            | Error::InvalidTemplate { .. }
            | Error::InvalidSignal(_)
            | Error::InvalidDuration(_)
            | Error::InvalidArgument { .. }
            | Error::Stack { .. } => Code::Usage,
            Error::NoRecord(_) | Error::NoTag(_) | Error::NotInStack { .. } => Code::Unknown,
            _ => Code::Failure,
        }
    }
}

/// Converts a nix errno into an io::Error.
pub(crate) fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}
