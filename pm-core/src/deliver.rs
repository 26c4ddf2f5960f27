//! Sending a signal to a running service (pm-signal): through the same identity gate as
//! every other decision, to a pidfd, never to a bare PID that may have been reused.
//!
//! The main process is the one pm-status reports (the launched process, or the daemon its
//! PID file names); `--group` reaches every process of the service: everything in its
//! cgroup where it has one, else the members of the leader's process group.

use nix::sys::signal::Signal;

use crate::error::Result;
use crate::name::Name;
use crate::process::{self, Expect, Gate, Handle, Stat};
use crate::state::StateDir;
use crate::status::{inspect, State};

/// What sending to one NAME did.
#[derive(Debug)]
pub enum Delivery {
    /// No record and no PID file.
    Unknown,
    /// Known, but nothing runs (stopped or dead: the state says which).
    NotRunning(State),
    /// Sent to these PIDs.
    Sent(Vec<i32>),
}

impl Delivery {
    pub fn code(&self) -> crate::exit::Code {
        use crate::exit::Code;
        match self {
            Delivery::Unknown => Code::Unknown,
            Delivery::NotRunning(_) => Code::Failure,
            Delivery::Sent(_) => Code::Ok,
        }
    }

    /// The line pm-signal prints (after `pm-signal: NAME: `).
    pub fn describe(&self, sig: Signal) -> String {
        let name = crate::signal::name(sig);
        match self {
            Delivery::Unknown => "unknown: no record and no PID file".into(),
            Delivery::NotRunning(s) => format!("not running ({}): SIG{name} not sent", s.as_str()),
            Delivery::Sent(pids) if pids.len() == 1 => format!("SIG{name} sent to pid {}", pids[0]),
            Delivery::Sent(pids) => {
                let list: Vec<String> = pids.iter().map(i32::to_string).collect();
                format!(
                    "SIG{name} sent to {} processes: {}",
                    pids.len(),
                    list.join(" ")
                )
            }
        }
    }
}

/// Sends `sig` to the running service `name`: its main process, or with `group` every
/// process of it. `template` is the PID-file template for names without a record.
pub fn send(
    sd: &StateDir,
    name: &Name,
    sig: Signal,
    group: bool,
    template: Option<&str>,
) -> Result<Delivery> {
    let ins = inspect(sd, name, template);
    if let Some(e) = ins.error {
        return Err(e);
    }
    let (stat, expect) = match (ins.state, &ins.live) {
        (State::Running | State::Starting, Some(live)) => live.clone(),
        (State::Unknown, _) => {
            if let Some(e) = ins.pidfile_error {
                return Err(e);
            }
            return Ok(Delivery::Unknown);
        }
        (s, _) => return Ok(Delivery::NotRunning(s)),
    };
    let Ok(leader) = Handle::open(stat.pid, &expect)? else {
        return Ok(Delivery::NotRunning(State::Dead));
    };
    let mut targets = vec![leader];
    if group {
        let boot = process::boot_id()?;
        let born_after = ins
            .record
            .as_ref()
            .and_then(|r| r.born_after())
            .unwrap_or(stat.start_time)
            .min(stat.start_time);
        let members: Vec<Stat> = match &ins.cgroup {
            Some(cg) => cg.members(),
            // Without a cgroup: the leader's own process group, if it leads one.
            None if stat.pgrp == stat.pid => process::scan()
                .into_iter()
                .filter(|s| s.pgrp == stat.pgrp && Gate::born_after(born_after).admits(s))
                .collect(),
            None => Vec::new(),
        };
        for s in members.iter().filter(|s| s.pid != stat.pid) {
            let e = Expect::StartTime {
                start_time: s.start_time,
                boot_id: boot.clone(),
            };
            if let Ok(h) = Handle::open(s.pid, &e)? {
                // With the pidfd open: still in the cgroup, or still in the group.
                let still = match &ins.cgroup {
                    Some(cg) => cg.contains(h.pid),
                    None => Stat::read(h.pid)?.is_some_and(|n| n.pgrp == stat.pgrp),
                };
                if still {
                    targets.push(h);
                }
            }
        }
    }
    let mut sent = Vec::new();
    for h in &targets {
        if h.signal(sig)? {
            sent.push(h.pid);
        }
    }
    if sent.is_empty() {
        return Ok(Delivery::NotRunning(State::Dead));
    }
    Ok(Delivery::Sent(sent))
}
