//! The process runtime with real processes: start, wait, stop (graceful and forced), nothing of
//! the group left, pause and resume, log capture and rotation, rlimits, sampling.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{KillOnPanic, eventually, group_members, stat, wait_for_members};
use flotilla_runtime::{
    CommandSpec, ExitInfo, LogSpec, RuntimeKind, Sampler, Supervised, logs::rotated_path, start,
};

fn sh(script: &str) -> CommandSpec {
    CommandSpec::new("sh").args(["-c", script])
}

async fn start_sh(name: &str, script: &str, dir: &tempfile::TempDir) -> Agent {
    let log = LogSpec::new(dir.path().join(format!("{name}.log")));
    start_spec(name, &sh(script), &log).await
}

async fn start_spec(name: &str, spec: &CommandSpec, log: &LogSpec) -> Agent {
    let agent = start(RuntimeKind::Process, name, spec, log).await.unwrap();
    Agent {
        _guard: KillOnPanic(agent.pgid()),
        agent,
    }
}

/// A started agent whose group is killed if the test fails before stopping it.
struct Agent {
    agent: Supervised,
    _guard: KillOnPanic,
}

impl std::ops::Deref for Agent {
    type Target = Supervised;
    fn deref(&self) -> &Supervised {
        &self.agent
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut Supervised {
        &mut self.agent
    }
}

#[tokio::test]
async fn spawn_and_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_sh("exit-3", "exit 3", &dir).await;
    assert_eq!(agent.pgid(), agent.pid(), "the process leads its own group");
    assert_eq!(agent.kind(), RuntimeKind::Process);
    let exit = agent.wait().await;
    assert_eq!(exit, ExitInfo::exited(3));
    assert_eq!(exit.describe(), "exited with code 3");
    // Asking again answers at once; stop after exit is harmless.
    assert_eq!(agent.wait().await, exit);
    assert_eq!(agent.stop(Duration::from_secs(1)).await, exit);

    let mut killed = start_sh("self-kill", "kill -9 $$", &dir).await;
    assert_eq!(killed.wait().await.describe(), "killed by SIGKILL");
    killed.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn missing_program_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = CommandSpec::new("/nonexistent/agent-binary");
    let err = start(
        RuntimeKind::Process,
        "missing",
        &spec,
        &LogSpec::new(dir.path().join("l")),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/agent-binary"),
        "{err}"
    );
    let err = start(
        RuntimeKind::Process,
        "bad name",
        &spec,
        &LogSpec::new(dir.path().join("l")),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("invalid agent name"), "{err}");
}

#[tokio::test]
async fn stop_is_graceful_when_the_process_honours_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_sh(
        "graceful",
        "trap 'exit 7' TERM; while :; do sleep 0.1; done",
        &dir,
    )
    .await;
    // Once the loop's first sleep runs, the trap is set.
    wait_for_members(agent.pgid(), 2).await;
    let started = Instant::now();
    let exit = agent.stop(Duration::from_secs(20)).await;
    assert_eq!(exit, ExitInfo::exited(7), "{exit}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "did not need the whole grace"
    );

    let mut sleeper = start_sh("plain-sleep", "exec sleep 100", &dir).await;
    assert_eq!(
        sleeper.stop(Duration::from_secs(20)).await.describe(),
        "killed by SIGTERM"
    );
}

#[tokio::test]
async fn stop_kills_after_the_grace_when_sigterm_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    // Ignored dispositions survive exec: the sleeps ignore SIGTERM too.
    let mut agent = start_sh(
        "stubborn",
        "trap '' TERM; sleep 100 & while :; do sleep 1; done",
        &dir,
    )
    .await;
    let pgid = agent.pgid();
    wait_for_members(pgid, 2).await;
    let grace = Duration::from_millis(700);
    let started = Instant::now();
    let exit = agent.stop(grace).await;
    assert_eq!(exit.describe(), "killed by SIGKILL");
    assert!(started.elapsed() >= grace);
    assert!(
        group_members(pgid).is_empty(),
        "left: {:?}",
        group_members(pgid)
    );
}

#[tokio::test]
async fn stop_leaves_no_process_of_the_group() {
    let dir = tempfile::tempdir().unwrap();
    // A child and a grandchild in the background, and a foreground child.
    let mut agent = start_sh(
        "family",
        "sh -c 'sleep 100 & sleep 100' & sleep 100; wait",
        &dir,
    )
    .await;
    let pgid = agent.pgid();
    let members = wait_for_members(pgid, 4).await;
    assert!(members.contains(&agent.pid()));
    agent.stop(Duration::from_secs(10)).await;
    assert!(
        group_members(pgid).is_empty(),
        "left: {:?}",
        group_members(pgid)
    );
    for pid in members {
        assert!(
            stat(pid).is_none_or(|(state, ..)| state == 'Z'),
            "{pid} still runs"
        );
    }
}

#[tokio::test]
async fn stop_continues_a_paused_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_sh(
        "paused-stop",
        "trap 'exit 5' TERM; while :; do sleep 0.1; done",
        &dir,
    )
    .await;
    // Once the loop's first sleep runs, the trap is set.
    wait_for_members(agent.pgid(), 2).await;
    agent.pause().unwrap();
    assert!(agent.is_paused());
    // A shell stopped inside vfork (its child not yet exec'd) shows 'D' until the child runs.
    let pgid = agent.pgid();
    eventually("the group to stop", || {
        let states: Vec<char> = group_members(pgid)
            .into_iter()
            .filter_map(|p| Some(stat(p)?.0))
            .collect();
        states.iter().all(|s| matches!(s, 'T' | 'D')).then_some(())
    })
    .await;
    assert_eq!(
        agent.stop(Duration::from_secs(20)).await,
        ExitInfo::exited(5)
    );
    assert!(!agent.is_paused());
}

#[tokio::test]
async fn pause_stops_cpu_use_and_resume_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_sh("busy", "while :; do :; done", &dir).await;
    let (pid, pgid) = (agent.pid(), agent.pgid());
    let mut sampler = Sampler::new();
    sampler.sample(&[pgid]);
    let busy = busy_percent(&mut sampler, pgid).await;
    assert!(busy > 10.0, "a busy loop uses CPU: {busy}%");

    agent.pause().unwrap();
    eventually("the busy loop to stop", || {
        (stat(pid)?.0 == 'T').then_some(())
    })
    .await;
    let ticks_paused = stat(pid).unwrap().2;
    sampler.sample(&[pgid]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let paused = sampler.sample(&[pgid])[&pgid];
    assert_eq!(paused.cpu_percent, 0.0, "{paused:?}");
    assert_eq!(stat(pid).unwrap().2, ticks_paused);

    agent.resume().unwrap();
    eventually("the busy loop to run again", || {
        (stat(pid)?.2 > ticks_paused + 5).then_some(())
    })
    .await;
    sampler.sample(&[pgid]);
    let busy = busy_percent(&mut sampler, pgid).await;
    assert!(busy > 10.0, "resumed: {busy}%");
    assert_eq!(
        agent.stop(Duration::from_secs(10)).await.describe(),
        "killed by SIGTERM"
    );
}

/// Samples until the group shows CPU use (the machine may be busy), up to the patience.
async fn busy_percent(sampler: &mut Sampler, pgid: u32) -> f64 {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let usage = sampler.sample(&[pgid])[&pgid];
        if usage.cpu_percent > 10.0 || Instant::now() > deadline {
            return usage.cpu_percent;
        }
    }
}

#[tokio::test]
async fn sampler_reports_cpu_rss_files_and_processes() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_sh("sampled", "sleep 100 & while :; do :; done", &dir).await;
    let pgid = agent.pgid();
    wait_for_members(pgid, 2).await;
    let mut sampler = Sampler::new();
    sampler.sample(&[pgid]);
    let busy = busy_percent(&mut sampler, pgid).await;
    assert!(busy > 10.0, "{busy}%");
    let usage = sampler.sample(&[pgid])[&pgid];
    assert_eq!(usage.processes, 2, "{usage:?}");
    assert!(usage.rss_bytes > 100 * 1024, "{usage:?}");
    // stdin, stdout and stderr of two processes at least.
    assert!(usage.open_files >= 6, "{usage:?}");
    agent.stop(Duration::from_secs(10)).await;
    assert!(
        !sampler.sample(&[pgid]).contains_key(&pgid),
        "nothing left to sample"
    );
}

#[tokio::test]
async fn output_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_sh(
        "logged",
        "echo to-stdout; echo to-stderr >&2; echo again",
        &dir,
    )
    .await;
    assert_eq!(agent.wait().await, ExitInfo::exited(0));
    agent.stop(Duration::from_secs(1)).await;
    let log = fs::read_to_string(agent.log_path()).unwrap();
    assert_eq!(
        log, "to-stdout\nto-stderr\nagain\n",
        "stdout and stderr share one pipe, in order"
    );
}

#[tokio::test]
async fn the_log_is_rotated_and_capped() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogSpec {
        path: dir.path().join("rot/agent.log"),
        max_bytes: 10_000,
        keep: 2,
    };
    let dots = ".".repeat(40);
    let script =
        format!("i=0; while [ $i -lt 3000 ]; do echo \"line $i {dots}\"; i=$((i+1)); done");
    let mut agent = start_spec("rotating", &sh(&script), &log).await;
    assert!(agent.wait().await.success());
    agent.stop(Duration::from_secs(1)).await;
    for path in [
        log.path.clone(),
        rotated_path(&log.path, 1),
        rotated_path(&log.path, 2),
    ] {
        let len = fs::metadata(&path).unwrap().len();
        assert!(len > 0 && len <= 10_000, "{}: {len}", path.display());
    }
    assert!(
        !rotated_path(&log.path, 3).exists(),
        "only `keep` rotated files"
    );
    let newest = fs::read_to_string(&log.path).unwrap();
    assert!(newest.ends_with(&format!("line 2999 {dots}\n")), "{newest}");
}

#[tokio::test]
async fn rlimits_are_visible_in_proc() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("exec sleep 100");
    spec.limits.open_files = Some(77);
    spec.limits.cpu_time = Some(Duration::from_secs(30));
    let log = LogSpec::new(dir.path().join("limits.log"));
    let mut agent = start_spec("limited", &spec, &log).await;
    assert!(
        agent.applied_limits().rlimits,
        "{:?}",
        agent.applied_limits()
    );
    assert!(agent.applied_limits().note.contains("RLIMIT_NOFILE"));
    let pid = agent.pid();
    let limits = eventually("sleep to run", || {
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .ok()?
            .starts_with("sleep")
            .then_some(limits)
    })
    .await;
    let line = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        line("Max open files").starts_with("Max open files 77 77"),
        "{limits}"
    );
    assert!(
        line("Max cpu time").starts_with("Max cpu time 30 35 seconds"),
        "{limits}"
    );
    agent.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn environment_and_workdir_are_passed() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("echo \"$GREETING $(pwd)\"");
    spec.env.insert("GREETING".into(), "hello world".into());
    spec.workdir = Some(dir.path().to_path_buf());
    let log = LogSpec::new(dir.path().join("env.log"));
    let mut agent = start_spec("env", &spec, &log).await;
    agent.wait().await;
    agent.stop(Duration::from_secs(1)).await;
    let expected = format!(
        "hello world {}\n",
        dir.path().canonicalize().unwrap().display()
    );
    assert_eq!(fs::read_to_string(&log.path).unwrap(), expected);
}

#[tokio::test]
async fn kill_ends_the_group_now_and_a_stopped_agent_takes_no_signals() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_sh("killed-now", "trap '' TERM; sleep 100 & sleep 100", &dir).await;
    let pgid = agent.pgid();
    wait_for_members(pgid, 3).await;
    agent.kill().unwrap();
    assert_eq!(agent.wait().await.describe(), "killed by SIGKILL");
    common::eventually("the group to die", || {
        group_members(pgid).is_empty().then_some(())
    })
    .await;
    agent.stop(Duration::from_secs(1)).await;
    for result in [agent.pause(), agent.resume(), agent.kill()] {
        let err = result.unwrap_err();
        assert!(err.to_string().contains("No such process"), "{err}");
    }
}

#[tokio::test]
async fn leftover_groups_are_killed_only_when_they_carry_the_agent_marker() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_sh("leftover", "sleep 100 & sleep 100", &dir).await;
    let pgid = agent.pgid();
    wait_for_members(pgid, 3).await;
    let environ = fs::read(format!("/proc/{}/environ", agent.pid())).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|v| v == b"FLOTILLA_RUNTIME_AGENT=leftover")
    );
    // A coordinator that died: the handle is gone, the processes are not.
    drop(agent);
    assert!(!flotilla_runtime::kill_leftover_group(pgid, "someone-else"));
    assert_eq!(group_members(pgid).len(), 3);
    assert!(flotilla_runtime::kill_leftover_group(pgid, "leftover"));
    eventually("the leftovers to die", || {
        group_members(pgid).is_empty().then_some(())
    })
    .await;
    assert!(!flotilla_runtime::kill_leftover_group(pgid, "leftover"));
}
