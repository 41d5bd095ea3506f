//! Helpers shared by the integration tests: polling with deadlines, `/proc` inspection, and
//! the programs the tests need (tmux, python3).

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flotilla_runtime::TmuxServer;

/// Generous: the tests share two cores with everything else.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` (every 20 ms) until it returns `Some`, or panics after `PATIENCE`.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({:?} left)",
            deadline.saturating_duration_since(Instant::now())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fields of /proc/PID/stat: (state, pgrp, utime + stime).
pub fn stat(pid: u32) -> Option<(char, u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 2..].split(' ').collect();
    let state = fields[0].chars().next()?;
    let ticks = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
    Some((state, fields[2].parse().ok()?, ticks))
}

/// Live (not zombie) processes of group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some((state, pgrp, _)) = stat(pid)
            && pgrp == pgid
            && state != 'Z'
            && state != 'X'
        {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until group `pgid` has at least `n` live processes.
pub async fn wait_for_members(pgid: u32, n: usize) -> Vec<u32> {
    eventually(&format!("{n} processes in group {pgid}"), || {
        let members = group_members(pgid);
        (members.len() >= n).then_some(members)
    })
    .await
}

/// The real python3 executable (not a pyenv shim), or `None` (with the reason printed) when
/// there is none outside CI. Under CI a missing python3 fails the test.
pub fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let found = Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
            if found.is_none() {
                assert!(!in_ci(), "python3 is required by the tests under CI");
                eprintln!("SKIPPED: python3 is not installed");
            }
            found
        })
        .clone()
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether tmux can be used, installing it with apt-get if it is missing. Outside CI a failed
/// install skips (returns false, printing why); under CI it fails the test.
pub fn ensure_tmux() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let works = || {
            Command::new("tmux")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if works() {
            return true;
        }
        eprintln!("tmux is missing: running apt-get install -y tmux");
        let mut installed = Command::new("apt-get")
            .args(["install", "-y", "tmux"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let _ = Command::new("apt-get").arg("update").status();
            installed = Command::new("apt-get")
                .args(["install", "-y", "tmux"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success());
        }
        if installed && works() {
            return true;
        }
        assert!(
            !in_ci(),
            "tmux is missing and `apt-get install -y tmux` failed"
        );
        eprintln!("SKIPPED: tmux is missing and could not be installed");
        false
    })
}

/// A private tmux server (socket in a temporary directory), killed when dropped.
pub struct PrivateTmux {
    pub dir: tempfile::TempDir,
    pub server: TmuxServer,
}

impl PrivateTmux {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = TmuxServer::with_socket(dir.path().join("tmux.sock"));
        Self { dir, server }
    }

    pub fn socket(&self) -> &Path {
        self.server.socket().unwrap()
    }

    /// Runs a raw tmux command on this server; returns (success, stdout).
    pub fn tmux(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn has_session(&self, session: &str) -> bool {
        self.tmux(&["has-session", "-t", &format!("={session}")]).0
    }
}

impl Drop for PrivateTmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(self.socket())
            .arg("kill-server")
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Kills a process group if the test panics before stopping it, so a failed test leaves no
/// processes behind (on success the test stopped it: nothing is signalled).
pub struct KillOnPanic(pub u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() && self.0 > 1 {
            let pgid = nix::unistd::Pid::from_raw(self.0 as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGCONT);
        }
    }
}
