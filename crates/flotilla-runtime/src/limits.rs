//! Enforcing [`Limits`]: rlimits set in the child before `exec`, and cgroup v2 groups when the
//! machine offers them.
//!
//! | limit | with a usable cgroup v2 | without |
//! | --- | --- | --- |
//! | `memory_bytes` | `memory.max` (and `memory.swap.max` 0) | `RLIMIT_AS` |
//! | `cpu_cores` | `cpu.max` = `quota 100000` | not enforced |
//! | `cpu_time` | `RLIMIT_CPU` | `RLIMIT_CPU` |
//! | `open_files` | `RLIMIT_NOFILE` | `RLIMIT_NOFILE` |
//!
//! `RLIMIT_AS` bounds address space, not memory in use: runtimes that reserve large virtual
//! ranges (Go, the JVM, Node) can fail under it with little resident memory. It is therefore
//! only the fallback; a cgroup's `memory.max` is used whenever it can be.
//!
//! A cgroup is usable when its root lists the `memory` or `cpu` controller in
//! `cgroup.controllers` and we may write there ([`Cgroups::detect`]). The machine's root is
//! `$FLOTILLA_CGROUP_ROOT` if set, else the cgroup2 mount ([`Cgroups::system`]). Agents get
//! `ROOT/flotilla/agent-NAME`, exec tasks `ROOT/flotilla/task-PID-N`. A process joins its cgroup
//! from inside the child, before `exec` (it writes `0`, "myself", to `cgroup.procs`), so nothing
//! it starts escapes. Every use reports what was enforced as [`AppliedLimits`].

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
use nix::unistd::AccessFlags;
use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;
use crate::spec::Limits;

/// The environment variable naming the cgroup v2 directory under which Flotilla creates its
/// cgroups (a delegated subtree, typically). Default: the cgroup2 mount point.
pub const CGROUP_ROOT_ENV: &str = "FLOTILLA_CGROUP_ROOT";

/// The period written to `cpu.max`, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// Which limits were enforced for a process, and how, for people to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedLimits {
    /// Whether at least one rlimit was set.
    pub rlimits: bool,
    /// Whether the process runs in its own cgroup with limits.
    pub cgroup: bool,
    /// One line per limit: what enforces it, or why nothing does.
    pub note: String,
}

impl AppliedLimits {
    /// The note: one clause per limit, saying what enforces it or why nothing does.
    pub fn describe(&self) -> String {
        self.note.clone()
    }
}

impl std::fmt::Display for AppliedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.note)
    }
}

/// rlimits to set in a child, computed in the parent (allocation is not allowed after `fork`).
#[derive(Debug, Clone, Default)]
pub(crate) struct RlimitPlan {
    items: Vec<(Resource, u64, u64)>,
}

impl RlimitPlan {
    /// Sets the limits on the calling process. Async-signal-safe: meant for `pre_exec`.
    pub(crate) fn apply_to_self(&self) -> io::Result<()> {
        for &(resource, soft, hard) in &self.items {
            setrlimit(resource, soft, hard).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        }
        Ok(())
    }

    /// Sets the limits on another process (a tmux pane, which tmux started, not us).
    pub(crate) fn apply_to_pid(&self, pid: u32) -> io::Result<()> {
        for &(resource, soft, hard) in &self.items {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: plain syscall; `limit` outlives it and the old-limit pointer may be null.
            let rc = unsafe {
                libc::prlimit(
                    pid as libc::pid_t,
                    resource as _,
                    &limit,
                    std::ptr::null_mut(),
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The limits of one process, ready to apply: rlimits for the child, a cgroup if one is used.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub rlimits: RlimitPlan,
    pub cgroup: Option<CgroupHandle>,
    pub applied: AppliedLimits,
}

/// Decides how to enforce `limits` and creates the cgroup if one is used. `cgroup_name` is the
/// cgroup's directory name under `ROOT/flotilla`. A cgroup that cannot be created is reported in
/// the note and replaced by the fallbacks, never an error: the process still starts.
pub(crate) fn prepare(cgroup_name: &str, limits: &Limits) -> Prepared {
    prepare_with(Cgroups::system(), cgroup_name, limits)
}

fn prepare_with(cgroups: Result<&Cgroups, &str>, cgroup_name: &str, limits: &Limits) -> Prepared {
    let mut cgroup = None;
    let controllers = match cgroups {
        _ if !wants_cgroup(limits) => Err(String::new()),
        Ok(cgroups) => match cgroups.create(cgroup_name, limits) {
            Ok(handle) => {
                let controllers = (handle.memory, handle.cpu);
                cgroup = Some(handle);
                Ok(controllers)
            }
            Err(e) => Err(format!("creating the cgroup failed: {e}")),
        },
        Err(reason) => Err(format!("cgroup v2 unavailable: {reason}")),
    };
    let (rlimits, applied) = plan(controllers, limits);
    Prepared {
        rlimits,
        cgroup,
        applied,
    }
}

/// How `limits` would be enforced on this machine now, without creating anything: the note
/// [`prepare`] would report (assuming the cgroup, if any, can be created).
pub(crate) fn describe_plan(limits: &Limits) -> AppliedLimits {
    let controllers = match Cgroups::system() {
        _ if !wants_cgroup(limits) => Err(String::new()),
        Ok(cgroups) => Ok((
            cgroups.memory && limits.memory_bytes.is_some(),
            cgroups.cpu && limits.cpu_cores.is_some(),
        )),
        Err(reason) => Err(format!("cgroup v2 unavailable: {reason}")),
    };
    plan(controllers, limits).1
}

fn wants_cgroup(limits: &Limits) -> bool {
    limits.memory_bytes.is_some() || limits.cpu_cores.is_some()
}

/// The rlimits and the note for `limits`, given which controllers a cgroup enforces
/// (`Ok((memory, cpu))`) or why there is none.
fn plan(cgroup: Result<(bool, bool), String>, limits: &Limits) -> (RlimitPlan, AppliedLimits) {
    let mut notes = Vec::new();
    let (memory_in_cgroup, cpu_in_cgroup) = cgroup.clone().unwrap_or((false, false));
    let why_not = |controller: &'static str| match &cgroup {
        Ok(_) => controller.to_owned(),
        Err(reason) => reason.clone(),
    };
    let mut items = Vec::new();
    if let Some(bytes) = limits.memory_bytes {
        if memory_in_cgroup {
            notes.push(format!("memory {}: cgroup memory.max", human_bytes(bytes)));
        } else {
            let (value, clamp) = clamp_to_hard(Resource::RLIMIT_AS, bytes);
            items.push((Resource::RLIMIT_AS, value, value));
            notes.push(format!(
                "memory {}: RLIMIT_AS (address space){clamp} ({})",
                human_bytes(bytes),
                why_not("no memory controller")
            ));
        }
    }
    if let Some(cores) = limits.cpu_cores {
        if cpu_in_cgroup {
            notes.push(format!("cpu {cores} cores: cgroup cpu.max"));
        } else {
            notes.push(format!(
                "cpu {cores} cores: not enforced ({})",
                why_not("no cpu controller")
            ));
        }
    }
    if let Some(cpu_time) = limits.cpu_time {
        // SIGXCPU at the soft limit (it kills by default), SIGKILL five seconds later.
        let secs = cpu_time.as_secs() + u64::from(cpu_time.subsec_nanos() > 0);
        let (soft, clamp) = clamp_to_hard(Resource::RLIMIT_CPU, secs);
        let (hard, _) = clamp_to_hard(Resource::RLIMIT_CPU, secs + 5);
        items.push((Resource::RLIMIT_CPU, soft, hard));
        notes.push(format!("cpu time {secs} s: RLIMIT_CPU{clamp}"));
    }
    if let Some(files) = limits.open_files {
        let (value, clamp) = clamp_to_hard(Resource::RLIMIT_NOFILE, files);
        items.push((Resource::RLIMIT_NOFILE, value, value));
        notes.push(format!("open files {files}: RLIMIT_NOFILE{clamp}"));
    }
    if notes.is_empty() {
        notes.push("no limits".to_owned());
    }
    let applied = AppliedLimits {
        rlimits: !items.is_empty(),
        cgroup: cgroup.is_ok(),
        note: notes.join("; "),
    };
    (RlimitPlan { items }, applied)
}

/// An unprivileged process cannot raise its hard limit: ask for at most the current one.
fn clamp_to_hard(resource: Resource, wanted: u64) -> (u64, String) {
    match getrlimit(resource) {
        Ok((_, hard)) if hard != RLIM_INFINITY && wanted > hard => {
            (hard, format!(" (clamped to the hard limit {hard})"))
        }
        _ => (wanted, String::new()),
    }
}

fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A cgroup v2 directory under which Flotilla may create cgroups with limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    root: PathBuf,
    memory: bool,
    cpu: bool,
}

impl Cgroups {
    /// The cgroups at `root` if they can be used: `root/cgroup.controllers` lists `memory` or
    /// `cpu`, and we may write `root` and `root/cgroup.subtree_control`.
    pub fn detect(root: &Path) -> Option<Cgroups> {
        Self::probe(root).ok()
    }

    /// Like [`Cgroups::detect`], saying why the cgroups cannot be used.
    pub fn probe(root: &Path) -> Result<Cgroups, String> {
        let controllers_file = root.join("cgroup.controllers");
        let controllers = fs::read_to_string(&controllers_file)
            .map_err(|e| format!("cannot read {}: {e}", controllers_file.display()))?;
        let has = |name: &str| controllers.split_ascii_whitespace().any(|c| c == name);
        let (memory, cpu) = (has("memory"), has("cpu"));
        if !memory && !cpu {
            return Err(format!(
                "no memory or cpu controller in {} (controllers: {:?})",
                controllers_file.display(),
                controllers.trim()
            ));
        }
        for path in [root.to_path_buf(), root.join("cgroup.subtree_control")] {
            nix::unistd::access(&path, AccessFlags::W_OK)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(Cgroups {
            root: root.to_path_buf(),
            memory,
            cpu,
        })
    }

    /// The machine's cgroups, probed once: `$FLOTILLA_CGROUP_ROOT`, else the cgroup2 mount
    /// found in `/proc/self/mountinfo` (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid
    /// systems). `Err` says why there are none.
    pub fn system() -> Result<&'static Cgroups, &'static str> {
        static SYSTEM: OnceLock<Result<Cgroups, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let root = match std::env::var_os(CGROUP_ROOT_ENV) {
                    Some(root) => PathBuf::from(root),
                    None => cgroup2_mount()
                        .ok_or_else(|| "no cgroup2 file system mounted".to_owned())?,
                };
                Self::probe(&root)
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// The directory under which cgroups are created (as `flotilla/NAME`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the memory controller is available.
    pub fn has_memory(&self) -> bool {
        self.memory
    }

    /// Whether the cpu controller is available.
    pub fn has_cpu(&self) -> bool {
        self.cpu
    }

    /// Creates (or reuses) `ROOT/flotilla/NAME` with the memory and CPU limits of `limits`,
    /// enabling the controllers it needs on the way down. `name` must be a single path component.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<CgroupHandle, RuntimeError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(RuntimeError::InvalidSpec(format!(
                "invalid cgroup name {name:?}"
            )));
        }
        let memory = self.memory && limits.memory_bytes.is_some();
        let cpu = self.cpu && limits.cpu_cores.is_some();
        let mut enable = Vec::new();
        if memory {
            enable.push("+memory");
        }
        if cpu {
            enable.push("+cpu");
        }
        // Controllers must be enabled in every ancestor's subtree_control to be usable below it.
        let parent = self.root.join("flotilla");
        for controller in &enable {
            write_file(&self.root.join("cgroup.subtree_control"), controller)?;
        }
        make_dir(&parent)?;
        for controller in &enable {
            write_file(&parent.join("cgroup.subtree_control"), controller)?;
        }
        let path = parent.join(name);
        make_dir(&path)?;
        let handle = CgroupHandle {
            path,
            memory,
            cpu,
            removed: false,
        };
        if let (true, Some(bytes)) = (memory, limits.memory_bytes) {
            write_file(&handle.path.join("memory.max"), &bytes.to_string())?;
            // Without this the group swaps instead of meeting its limit. Not every kernel has
            // swap accounting: best effort.
            let _ = write_file(&handle.path.join("memory.swap.max"), "0");
        }
        if let (true, Some(cores)) = (cpu, limits.cpu_cores) {
            // The kernel refuses quotas under 1 ms.
            let quota = ((cores * CPU_PERIOD_US as f64).round() as u64).max(1000);
            write_file(
                &handle.path.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_US}"),
            )?;
        }
        Ok(handle)
    }
}

/// Finds the cgroup2 mount point in `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_ascii_whitespace().next()? == "cgroup2")
            .then(|| left.split_ascii_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// One cgroup created for a process. Removed by [`CgroupHandle::remove`] or, without waiting,
/// when dropped.
#[derive(Debug)]
pub struct CgroupHandle {
    path: PathBuf,
    memory: bool,
    cpu: bool,
    removed: bool,
}

impl CgroupHandle {
    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), RuntimeError> {
        write_file(&self.path.join("cgroup.procs"), &pid.to_string())
    }

    /// `cgroup.procs` opened for writing, for a child to join with `write(fd, "0")` before exec.
    pub(crate) fn open_procs(&self) -> Result<OwnedFd, RuntimeError> {
        let path = self.path.join("cgroup.procs");
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map(OwnedFd::from)
            .map_err(|source| RuntimeError::Cgroup { path, source })
    }

    /// Kills whatever is left in the cgroup (`cgroup.kill`, Linux 5.14+), waits up to two seconds
    /// for it to empty, and removes the directory.
    pub fn remove(&mut self) -> Result<(), RuntimeError> {
        if self.removed {
            return Ok(());
        }
        let kill = self.path.join("cgroup.kill");
        if kill.exists() {
            let _ = write_file(&kill, "1");
        }
        let procs = self.path.join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(2);
        while fs::read_to_string(&procs).is_ok_and(|p| !p.trim().is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        match fs::remove_dir(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RuntimeError::Cgroup {
                    path: self.path.clone(),
                    source,
                });
            }
        }
        self.removed = true;
        Ok(())
    }
}

impl Drop for CgroupHandle {
    fn drop(&mut self) {
        if !self.removed {
            let _ = fs::remove_dir(&self.path);
        }
    }
}

/// Joins the cgroup whose `cgroup.procs` is open as `fd`. Async-signal-safe: for `pre_exec`.
pub(crate) fn join_cgroup_in_child(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: writes one byte from a static buffer to a descriptor we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A unique cgroup name for one exec-mode task of this process.
pub(crate) fn task_cgroup_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "task-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn make_dir(path: &Path) -> Result<(), RuntimeError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(RuntimeError::Cgroup {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn write_file(path: &Path, content: &str) -> Result<(), RuntimeError> {
    fs::write(path, content).map_err(|source| RuntimeError::Cgroup {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(controllers: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), controllers).unwrap();
        fs::write(dir.path().join("cgroup.subtree_control"), "").unwrap();
        dir
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn detects_usable_roots_only() {
        let dir = fake_root("cpuset cpu io memory pids\n");
        let cgroups = Cgroups::detect(dir.path()).unwrap();
        assert!(cgroups.has_memory() && cgroups.has_cpu());
        assert_eq!(cgroups.root(), dir.path());

        let empty = fake_root("\n");
        let why = Cgroups::probe(empty.path()).unwrap_err();
        assert!(why.contains("no memory or cpu controller"), "{why}");
        assert!(Cgroups::detect(Path::new("/nonexistent")).is_none());
    }

    #[test]
    fn this_machine_has_no_usable_cgroup_v2() {
        // The hybrid hierarchy here mounts cgroup2 without controllers. Elsewhere (a full v2
        // system) the probe may succeed: only check that it answers.
        match Cgroups::system() {
            Ok(cgroups) => println!("cgroup v2 usable at {}", cgroups.root().display()),
            Err(why) => println!("cgroup v2 unusable: {why}"),
        }
    }

    #[test]
    fn create_writes_limits_and_enables_controllers() {
        let dir = fake_root("cpu memory pids");
        let cgroups = Cgroups::detect(dir.path()).unwrap();
        let limits = Limits {
            memory_bytes: Some(100 * 1024 * 1024),
            cpu_cores: Some(1.5),
            ..Limits::default()
        };
        let mut handle = cgroups.create("agent-a", &limits).unwrap();
        let path = dir.path().join("flotilla/agent-a");
        assert_eq!(handle.path(), path);
        assert_eq!(read(&path.join("memory.max")), "104857600");
        assert_eq!(read(&path.join("memory.swap.max")), "0");
        assert_eq!(read(&path.join("cpu.max")), "150000 100000");
        // Each write replaces a plain file's content: the last controller enabled remains.
        assert_eq!(read(&dir.path().join("cgroup.subtree_control")), "+cpu");
        assert_eq!(
            read(&dir.path().join("flotilla/cgroup.subtree_control")),
            "+cpu"
        );
        handle.add(4242).unwrap();
        assert_eq!(read(&path.join("cgroup.procs")), "4242");

        // A tiny CPU share is raised to the kernel's 1 ms minimum.
        let tiny = Limits {
            cpu_cores: Some(0.001),
            ..Limits::default()
        };
        let other = cgroups.create("agent-b", &tiny).unwrap();
        assert_eq!(read(&other.path().join("cpu.max")), "1000 100000");
        assert!(!other.path().join("memory.max").exists());

        // On cgroupfs the interface files vanish with the directory; here we delete them.
        fs::write(path.join("cgroup.procs"), "").unwrap();
        for file in ["memory.max", "memory.swap.max", "cpu.max", "cgroup.procs"] {
            fs::remove_file(path.join(file)).unwrap();
        }
        handle.remove().unwrap();
        assert!(!path.exists());
        assert!(cgroups.create("../escape", &limits).is_err());
    }

    #[test]
    fn prepare_prefers_cgroups_and_falls_back_to_rlimits() {
        let limits = Limits {
            memory_bytes: Some(64 * 1024 * 1024),
            cpu_cores: Some(0.5),
            cpu_time: Some(Duration::from_millis(1500)),
            open_files: Some(64),
        };
        let without = prepare_with(Err("no controllers"), "x", &limits);
        assert!(without.applied.rlimits && !without.applied.cgroup && without.cgroup.is_none());
        let note = &without.applied.note;
        assert!(note.contains("memory 64 MiB: RLIMIT_AS"), "{note}");
        assert!(
            note.contains("cpu 0.5 cores: not enforced (cgroup v2 unavailable: no controllers)"),
            "{note}"
        );
        assert!(note.contains("cpu time 2 s: RLIMIT_CPU"), "{note}");
        assert!(note.contains("open files 64: RLIMIT_NOFILE"), "{note}");
        assert_eq!(without.rlimits.items.len(), 3);

        let dir = fake_root("cpu memory");
        let cgroups = Cgroups::detect(dir.path()).unwrap();
        let with = prepare_with(Ok(&cgroups), "agent-x", &limits);
        assert!(with.applied.cgroup, "{}", with.applied.note);
        assert!(
            with.applied
                .note
                .contains("memory 64 MiB: cgroup memory.max")
        );
        assert!(with.applied.note.contains("cpu 0.5 cores: cgroup cpu.max"));
        // RLIMIT_AS is not used when the cgroup limits memory.
        assert!(
            with.rlimits
                .items
                .iter()
                .all(|(r, ..)| *r != Resource::RLIMIT_AS)
        );

        let planned = describe_plan(&limits);
        assert!(
            planned.note.contains("open files 64: RLIMIT_NOFILE"),
            "{planned}"
        );
        assert_eq!(planned.describe(), planned.note);

        let none = prepare_with(Err("x"), "y", &Limits::default());
        assert_eq!(
            none.applied,
            AppliedLimits {
                rlimits: false,
                cgroup: false,
                note: "no limits".into()
            }
        );
    }
}
