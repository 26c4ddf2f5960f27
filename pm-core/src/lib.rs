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
