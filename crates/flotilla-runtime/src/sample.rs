//! Resource usage of agents' process groups, read from `/proc`.
//!
//! One [`Sampler::sample`] call scans `/proc` once, whatever the number of groups asked about,
//! and sums every live process whose process group, or session, is one of them (an agent leads
//! its session; its commands may run in process groups of their own). CPU% is measured over the
//! interval since the previous call (utime + stime ticks, `CLK_TCK` from `sysconf`; 100% is one
//! core), so a group's first sample reports 0. Processes that ended during the interval take
//! their CPU time with them. RSS is the sum of the processes' resident sets (shared pages count
//! once per process). The `procfs` crate would parse more than these few fields, at the cost of
//! a dependency tree; the three files read here are simple to parse (see `proc_stat`).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::unistd::{SysconfVar, sysconf};
use serde::{Deserialize, Serialize};

use crate::proc_stat;

/// What a process group uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU used since the previous sample, in percent of one core (200 = two cores busy).
    pub cpu_percent: f64,
    /// Resident memory of all its processes, in bytes.
    pub rss_bytes: u64,
    /// File descriptors open in all its processes.
    pub open_files: u64,
    /// Live processes in the group.
    pub processes: u32,
}

/// Samples the usage of process groups, remembering CPU ticks between calls.
#[derive(Debug)]
pub struct Sampler {
    proc_root: PathBuf,
    ticks_per_second: f64,
    page_size: u64,
    previous: Option<Snapshot>,
}

#[derive(Debug)]
struct Snapshot {
    at: Instant,
    groups: HashSet<u32>,
    /// CPU ticks by (pid, start time): the start time tells a reused pid apart.
    ticks: HashMap<(u32, u64), u64>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// A sampler reading `/proc`.
    pub fn new() -> Self {
        Self::with_proc_root("/proc")
    }

    /// A sampler reading another procfs mount (a container's, or a test's).
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> Self {
        let ticks = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|&t| t > 0)
            .unwrap_or(100);
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .filter(|&p| p > 0)
            .unwrap_or(4096);
        Self {
            proc_root: proc_root.into(),
            ticks_per_second: ticks as f64,
            page_size: page as u64,
            previous: None,
        }
    }

    /// The usage of each group in `pgids` that has a live process; see the module
    /// documentation.
    pub fn sample(&mut self, pgids: &[u32]) -> HashMap<u32, Usage> {
        let wanted: HashSet<u32> = pgids.iter().copied().collect();
        let now = Instant::now();
        let mut usage: HashMap<u32, Usage> = HashMap::new();
        let mut ticks = HashMap::new();
        let mut used_ticks: HashMap<u32, u64> = HashMap::new();
        let previous = self.previous.take();
        proc_stat::for_each_process(&self.proc_root, |stat| {
            if !stat.is_live() {
                return;
            }
            // A group asked about, or the session it leads: an agent's commands may run in
            // process groups of their own (a worker's task, a shell's job) inside its session.
            let key = if wanted.contains(&stat.pgrp) {
                stat.pgrp
            } else if wanted.contains(&stat.session) {
                stat.session
            } else {
                return;
            };
            let total = stat.utime + stat.stime;
            ticks.insert((stat.pid, stat.starttime), total);
            if let Some(prev) = previous.as_ref().filter(|p| p.groups.contains(&key)) {
                // A process new since the previous sample used all its ticks in the interval.
                let before = prev
                    .ticks
                    .get(&(stat.pid, stat.starttime))
                    .copied()
                    .unwrap_or(0);
                *used_ticks.entry(key).or_default() += total.saturating_sub(before);
            }
            let group = usage.entry(key).or_default();
            group.processes += 1;
            group.rss_bytes += stat.rss_pages * self.page_size;
            group.open_files += count_fds(&self.proc_root, stat.pid);
        });
        if let Some(prev) = &previous {
            let seconds = now.duration_since(prev.at).as_secs_f64();
            if seconds > 0.0 {
                for (pgid, used) in used_ticks {
                    if let Some(group) = usage.get_mut(&pgid) {
                        group.cpu_percent = used as f64 / self.ticks_per_second / seconds * 100.0;
                    }
                }
            }
        }
        self.previous = Some(Snapshot {
            at: now,
            groups: wanted,
            ticks,
        });
        usage
    }
}

fn count_fds(proc_root: &Path, pid: u32) -> u64 {
    fs::read_dir(proc_root.join(pid.to_string()).join("fd")).map_or(0, |dir| dir.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_our_own_group() {
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        let mut sampler = Sampler::new();
        let first = sampler.sample(&[pgid, 999_999_999]);
        let ours = first[&pgid];
        assert!(
            ours.processes >= 1 && ours.rss_bytes > 0 && ours.open_files >= 3,
            "{ours:?}"
        );
        assert_eq!(ours.cpu_percent, 0.0, "no interval yet");
        assert!(!first.contains_key(&999_999_999));
        // Burn some CPU in this process, then sample again.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 200 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let second = sampler.sample(&[pgid]);
        assert!(second[&pgid].cpu_percent > 5.0, "{:?}", second[&pgid]);
    }

    #[test]
    fn counts_the_process_groups_inside_a_session_it_leads() {
        // A session leader whose background job runs in a process group of its own (`set -m`).
        let mut leader = std::process::Command::new("setsid")
            .args(["sh", "-c", "set -m; sleep 30 & wait"])
            .spawn()
            .unwrap();
        let sid = leader.id();
        let mut sampler = Sampler::new();
        let mut seen = 0;
        for _ in 0..100 {
            seen = sampler.sample(&[sid]).get(&sid).map_or(0, |u| u.processes);
            if seen >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(sid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = std::process::Command::new("pkill")
            .args(["-KILL", "-s", &sid.to_string()])
            .status();
        let _ = leader.wait();
        assert_eq!(seen, 2, "the shell and its job in another group");
    }
}
