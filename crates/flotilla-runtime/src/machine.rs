//! The machine's capacity and machine-wide usage: CPU from `/proc/stat`, memory from
//! `/proc/meminfo`, disk from `statvfs` of a directory.
//!
//! The `sysinfo` crate would give the same figures portably, but it is a large dependency and
//! not in our build; Flotilla runs agents on Linux, and these three sources are stable and
//! simple to read (the same choice as `sample`, which reads `/proc` for process groups).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What the machine has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineCapacity {
    /// CPU cores this process may use (affinity and cgroup quota included).
    pub cpu_cores: f64,
    /// Memory, in bytes (`MemTotal`).
    pub memory_bytes: u64,
    /// Space free to unprivileged users on the directory's file system, in bytes.
    pub disk_available_bytes: u64,
}

/// Machine-wide use at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineUsage {
    /// Share of all cores busy since the previous sample, 0 to 1 (`None` at the first).
    pub cpu_busy: Option<f64>,
    /// Memory in total, in bytes.
    pub memory_total_bytes: u64,
    /// Memory available for new work (`MemAvailable`), in bytes.
    pub memory_available_bytes: u64,
    /// The directory's file system size, in bytes.
    pub disk_total_bytes: u64,
    /// Its space in use, in bytes.
    pub disk_used_bytes: u64,
    /// Its space free to unprivileged users, in bytes.
    pub disk_available_bytes: u64,
}

impl MachineUsage {
    /// Share of the disk in use as `df` counts it: used / (used + available to users), so the
    /// blocks reserved for root do not count as free.
    pub fn disk_used_fraction(&self) -> f64 {
        let seen = self.disk_used_bytes + self.disk_available_bytes;
        if seen == 0 {
            0.0
        } else {
            self.disk_used_bytes as f64 / seen as f64
        }
    }

    /// Share of memory not available for new work.
    pub fn memory_used_fraction(&self) -> f64 {
        if self.memory_total_bytes == 0 {
            0.0
        } else {
            1.0 - self.memory_available_bytes as f64 / self.memory_total_bytes as f64
        }
    }
}

/// Measures the machine's capacity, for agents whose files live under `dir`.
pub fn capacity(dir: &Path) -> io::Result<MachineCapacity> {
    let cpu_cores = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let mem = meminfo(Path::new("/proc/meminfo"))?;
    let (_, _, disk_available_bytes) = disk(dir)?;
    Ok(MachineCapacity {
        cpu_cores,
        memory_bytes: mem.0,
        disk_available_bytes,
    })
}

/// Samples machine-wide usage, remembering CPU counters between calls.
#[derive(Debug)]
pub struct MachineSampler {
    proc_root: PathBuf,
    previous_cpu: Option<(u64, u64)>,
}

impl Default for MachineSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl MachineSampler {
    /// A sampler of `/proc`.
    pub fn new() -> Self {
        MachineSampler {
            proc_root: PathBuf::from("/proc"),
            previous_cpu: None,
        }
    }

    /// One sample; disk figures are of `dir`'s file system.
    pub fn sample(&mut self, dir: &Path) -> io::Result<MachineUsage> {
        let (busy, total) = cpu_ticks(&fs::read_to_string(self.proc_root.join("stat"))?)
            .ok_or_else(|| io::Error::other("/proc/stat has no cpu line"))?;
        let cpu_busy = self.previous_cpu.and_then(|(b0, t0)| {
            let dt = total.checked_sub(t0)?;
            (dt > 0).then(|| (busy.saturating_sub(b0) as f64 / dt as f64).clamp(0.0, 1.0))
        });
        self.previous_cpu = Some((busy, total));
        let (memory_total_bytes, memory_available_bytes) =
            meminfo(&self.proc_root.join("meminfo"))?;
        let (disk_total_bytes, disk_free_bytes, disk_available_bytes) = disk(dir)?;
        Ok(MachineUsage {
            cpu_busy,
            memory_total_bytes,
            memory_available_bytes,
            disk_total_bytes,
            disk_used_bytes: disk_total_bytes.saturating_sub(disk_free_bytes),
            disk_available_bytes,
        })
    }
}

/// Busy and total ticks of the aggregate `cpu` line of `/proc/stat` (idle and iowait are not
/// busy; guest time is already inside user time).
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// `MemTotal` and `MemAvailable`, in bytes.
fn meminfo(path: &Path) -> io::Result<(u64, u64)> {
    let text = fs::read_to_string(path)?;
    parse_meminfo(&text)
        .ok_or_else(|| io::Error::other(format!("{} is not readable as meminfo", path.display())))
}

fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    let total = field("MemTotal")?;
    Some((total, field("MemAvailable").unwrap_or(total)))
}

/// Size and space available of `dir`'s file system, in bytes.
/// (Its free space and space available to unprivileged users, too.)
fn disk(dir: &Path) -> io::Result<(u64, u64, u64)> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    let unit = s.fragment_size() as u64;
    Ok((
        s.blocks() as u64 * unit,
        s.blocks_free() as u64 * unit,
        s.blocks_available() as u64 * unit,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n";
        assert_eq!(cpu_ticks(stat), Some((160, 1000)));
        assert_eq!(cpu_ticks("intr 1 2"), None);
    }

    #[test]
    fn meminfo_is_read_in_kib() {
        let text = "MemTotal:       24684000 kB\nMemFree:  100 kB\nMemAvailable:   23862000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some((24_684_000 * 1024, 23_862_000 * 1024))
        );
    }

    #[test]
    fn the_real_machine_is_measured() {
        let dir = std::env::temp_dir();
        let cap = capacity(&dir).unwrap();
        assert!(cap.cpu_cores >= 1.0 && cap.memory_bytes > 0, "{cap:?}");
        let mut s = MachineSampler::new();
        let first = s.sample(&dir).unwrap();
        assert_eq!(first.cpu_busy, None);
        assert!(first.memory_available_bytes <= first.memory_total_bytes);
        assert!(first.disk_available_bytes <= first.disk_total_bytes);
        assert!((0.0..=1.0).contains(&first.disk_used_fraction()));
        assert!((0.0..1.0).contains(&first.memory_used_fraction()));
        // Burn a little CPU so that the counters move.
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(t.elapsed());
        }
        let second = s.sample(&dir).unwrap();
        let busy = second.cpu_busy.expect("a second sample measures CPU");
        assert!((0.0..=1.0).contains(&busy), "{busy}");
    }
}
