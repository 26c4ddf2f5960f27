//! The lineage of a start: which processes are this start's while pm-start waits for it.
//! Apart from `process` so that `process` (which `cgroup` builds on) needs no cgroup.

use crate::process::{descendants, is_protected, scan, Stat};

/// The processes of one start, while pm-start waits for it: the launched process and
/// everything descended from it. pm-start is a child subreaper, so a daemon that
/// double-forks is re-parented to pm-start rather than to init and stays in this lineage;
/// pm-start's own readiness probes are not part of it (they run in process groups of
/// their own). This is what `MAINPID=`, a PID file and a listening socket must point
/// into to count as the service's.
#[derive(Debug, Clone)]
pub struct Lineage {
    /// pm-start itself (the subreaper).
    pub starter: i32,
    /// The process pm-start spawned.
    pub launcher: i32,
    /// Its start time: nothing older is the service.
    pub born_after: u64,
    /// Process groups of pm-start's own probes.
    pub probe_groups: Vec<i32>,
    /// The start's cgroup, where it has one: then membership is the kernel's word, not a
    /// walk of parent links (probes run outside it, in pm-start's own cgroup).
    pub cgroup: Option<crate::cgroup::Cgroup>,
}

impl Lineage {
    /// Is `pid` a live process of this start?
    pub fn contains(&self, pid: i32) -> bool {
        if is_protected(pid) {
            return false;
        }
        let Ok(Some(first)) = Stat::read(pid) else {
            return false;
        };
        if first.is_zombie() || first.start_time < self.born_after {
            return false;
        }
        if let Some(cg) = &self.cgroup {
            return cg.contains(pid) && !self.probe_groups.contains(&first.pgrp);
        }
        let mut s = first;
        for _ in 0..4096 {
            if self.probe_groups.contains(&s.pgrp) {
                return false;
            }
            if s.pid == self.launcher || s.ppid == self.launcher || s.ppid == self.starter {
                return true;
            }
            match Stat::read(s.ppid) {
                Ok(Some(parent)) if parent.pid > 1 => s = parent,
                _ => return false,
            }
        }
        false
    }

    /// Every live process of this start (the launcher, if alive, included).
    pub fn members(&self) -> Vec<i32> {
        if let Some(cg) = &self.cgroup {
            let mut out: Vec<i32> = cg.members().iter().map(|s| s.pid).collect();
            out.sort_unstable();
            return out;
        }
        // Without the kernel's children lists, every process whose parent chain leads here.
        let found = descendants(self.starter).unwrap_or_else(|| {
            scan()
                .into_iter()
                .filter(|s| self.contains(s.pid))
                .collect()
        });
        let mut out: Vec<i32> = found
            .into_iter()
            .filter(|s| s.start_time >= self.born_after && !self.probe_groups.contains(&s.pgrp))
            .map(|s| s.pid)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}
