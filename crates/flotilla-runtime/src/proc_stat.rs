//! Reading `/proc/PID/stat`, and finding the live members of a process group by scanning
//! `/proc`. Shared by the supervisor (is anything of this group left?) and the sampler.

use std::fs;
use std::path::Path;

use crate::spec::ExitInfo;

/// The fields of `/proc/PID/stat` this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: u32,
    /// `R`, `S`, `D`, `T`, `Z`, …
    pub state: u8,
    pub ppid: u32,
    pub pgrp: u32,
    /// The session id.
    pub session: u32,
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time after boot, in clock ticks: with the pid, identifies a process.
    pub starttime: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

impl ProcStat {
    /// Whether the process still runs code: not a zombie waiting to be reaped, nor dead.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from its last `)`.
pub(crate) fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace();
    // Index 0 is field 3 (state); field N is at index N - 3.
    let mut field = |skip: usize| fields.nth(skip);
    let state = *field(0)?.as_bytes().first()?;
    let ppid = field(0)?.parse().ok()?; // field 4
    let pgrp = field(0)?.parse().ok()?; // field 5
    let session = field(0)?.parse().ok()?; // field 6
    let utime = field(7)?.parse().ok()?; // field 14
    let stime = field(0)?.parse().ok()?; // field 15
    let starttime = field(6)?.parse().ok()?; // field 22
    let rss: i64 = field(1)?.parse().ok()?; // field 24
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
        session,
        utime,
        stime,
        starttime,
        rss_pages: u64::try_from(rss).unwrap_or(0),
    })
}

/// Reads one process's stat; `None` if it is gone (or unreadable).
pub(crate) fn read_stat(proc_root: &Path, pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(pid, &text)
}

/// How a zombie (exited, not yet reaped) process ended, from field 52 of its stat (the status
/// `waitpid` would return); `None` if `pid` is not a zombie.
pub(crate) fn zombie_exit(pid: u32) -> Option<ExitInfo> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &text[text.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace();
    if fields.next()? != "Z" {
        return None;
    }
    let status: i32 = fields.nth(48)?.parse().ok()?; // field 52
    Some(if status & 0x7f == 0 {
        ExitInfo::exited((status >> 8) & 0xff)
    } else {
        ExitInfo::killed(status & 0x7f)
    })
}

/// Calls `f` for every process in `/proc` (processes that vanish during the scan are skipped).
pub(crate) fn for_each_process(proc_root: &Path, mut f: impl FnMut(ProcStat)) {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = read_stat(proc_root, pid) {
            f(stat);
        }
    }
}

/// The live (not zombie) processes whose process group is `pgid`.
pub(crate) fn live_group_members(pgid: u32) -> Vec<u32> {
    live_group_stats(pgid).into_iter().map(|s| s.pid).collect()
}

/// The stats of the live (not zombie) processes whose process group is `pgid`.
pub(crate) fn live_group_stats(pgid: u32) -> Vec<ProcStat> {
    let mut stats = Vec::new();
    for_each_process(Path::new("/proc"), |stat| {
        if stat.pgrp == pgid && stat.is_live() {
            stats.push(stat);
        }
    });
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let text = "4242 (a) b (c)) S 1 4240 4239 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 \
                    98765 1234567 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let stat = parse_stat(4242, text).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                pid: 4242,
                state: b'S',
                ppid: 1,
                pgrp: 4240,
                session: 4239,
                utime: 17,
                stime: 5,
                starttime: 98765,
                rss_pages: 321
            }
        );
        assert!(stat.is_live());
        assert!(parse_stat(1, "garbage").is_none());
    }

    #[test]
    fn reads_the_status_of_a_zombie() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = child.id();
        // Wait for it to exit without reaping it.
        let flags = nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT;
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(pid as i32)),
            flags,
        )
        .unwrap();
        assert_eq!(zombie_exit(pid), Some(ExitInfo::exited(7)));
        child.wait().unwrap();
        assert_eq!(zombie_exit(pid), None);

        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert_eq!(zombie_exit(pid), None, "alive");
        child.kill().unwrap();
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(pid as i32)),
            flags,
        )
        .unwrap();
        assert_eq!(zombie_exit(pid), Some(ExitInfo::killed(9)));
        child.wait().unwrap();
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let stat = read_stat(Path::new("/proc"), me).unwrap();
        assert_eq!(stat.pid, me);
        assert!(stat.rss_pages > 0);
        assert_eq!(stat.pgrp, nix::unistd::getpgrp().as_raw() as u32);
    }
}
