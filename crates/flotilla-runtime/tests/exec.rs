//! Exec mode with real processes: exit codes, stdin, stdout and stderr capture, deadlines with
//! no orphans, limits, logs, and payloads that try to inject commands.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::group_members;
use flotilla_runtime::{
    CommandSpec, ExecRequest, ExitInfo, LogSpec, TaskVars, render_args, run_once,
};
use serde_json::json;

fn sh(script: &str) -> CommandSpec {
    CommandSpec::new("sh").args(["-c", script])
}

fn deadline_in(d: Duration) -> Option<tokio::time::Instant> {
    Some(tokio::time::Instant::now() + d)
}

#[tokio::test]
async fn success_with_stdin_stdout_and_stderr() {
    let mut req = ExecRequest::new(sh("cat; echo done >&2"));
    req.stdin = b"hello\nworld".to_vec();
    let out = run_once(req).await.unwrap();
    assert_eq!(out.exit, ExitInfo::exited(0));
    assert_eq!(out.stdout, b"hello\nworld");
    assert!(!out.stdout_truncated && !out.timed_out);
    assert_eq!(out.stderr_tail, "done\n");
    assert_eq!(out.applied_limits.note, "no limits");
}

#[tokio::test]
async fn failure_keeps_the_exit_code_and_the_end_of_stderr() {
    let script =
        "i=0; while [ $i -lt 500 ]; do echo \"error line $i\" >&2; i=$((i+1)); done; exit 3";
    let out = run_once(ExecRequest::new(sh(script))).await.unwrap();
    assert_eq!(out.exit.describe(), "exited with code 3");
    assert_eq!(out.stderr_tail.len(), ExecRequest::DEFAULT_STDERR_TAIL);
    assert!(out.stderr_tail.ends_with("error line 499\n"));
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn json_on_stdout_and_task_environment() {
    let mut req = ExecRequest::new(sh(
        "printf '{\"ok\":true,\"task\":\"%s\"}' \"$FLOTILLA_TASK_ID\"",
    ));
    req.env.insert("FLOTILLA_TASK_ID".into(), "t-42".into());
    let out = run_once(req).await.unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value, json!({"ok": true, "task": "t-42"}));
}

#[tokio::test]
async fn stdout_beyond_the_limit_is_drained_and_dropped() {
    let mut req = ExecRequest::new(sh("head -c 1000000 /dev/zero; echo end >&2"));
    req.stdout_limit = 100;
    let out = run_once(req).await.unwrap();
    assert!(
        out.exit.success(),
        "the writer was not blocked: {}",
        out.exit
    );
    assert_eq!(out.stdout, vec![0u8; 100]);
    assert!(out.stdout_truncated);
    assert_eq!(out.stderr_tail, "end\n");
}

#[tokio::test]
async fn a_process_that_ignores_stdin_is_fine() {
    let mut req = ExecRequest::new(sh("exit 0"));
    req.stdin = vec![b'x'; 4 * 1024 * 1024];
    assert!(run_once(req).await.unwrap().exit.success());
}

#[tokio::test]
async fn deadline_terminates_the_whole_group() {
    let mut req = ExecRequest::new(sh(
        "echo $$; sleep 100 & sh -c 'sleep 100 & sleep 100' & sleep 100",
    ));
    req.deadline = deadline_in(Duration::from_millis(500));
    let started = Instant::now();
    let out = run_once(req).await.unwrap();
    assert!(out.timed_out);
    assert_eq!(out.exit.describe(), "killed by SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(20));
    let pgid: u32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        group_members(pgid).is_empty(),
        "orphans: {:?}",
        group_members(pgid)
    );
}

#[tokio::test]
async fn deadline_kills_a_group_that_ignores_sigterm() {
    let mut req = ExecRequest::new(sh("trap '' TERM; echo $$; sleep 100 & sleep 100"));
    req.deadline = deadline_in(Duration::from_millis(300));
    let started = Instant::now();
    let out = run_once(req).await.unwrap();
    assert!(out.timed_out);
    assert_eq!(out.exit.describe(), "killed by SIGKILL");
    assert!(
        started.elapsed() >= Duration::from_millis(300) + flotilla_runtime::exec::DEADLINE_GRACE
    );
    let pgid: u32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        group_members(pgid).is_empty(),
        "orphans: {:?}",
        group_members(pgid)
    );
}

#[tokio::test]
async fn background_processes_do_not_outlive_the_task() {
    // The task exits at once, leaving a sleeper that holds its stdout.
    let out = run_once(ExecRequest::new(sh("echo $$; sleep 100 &")))
        .await
        .unwrap();
    assert!(out.exit.success() && !out.timed_out);
    assert!(out.duration < Duration::from_secs(20));
    let pgid: u32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    common::eventually("the sleeper to die", || {
        group_members(pgid).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn output_is_appended_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogSpec::new(dir.path().join("agent.log"));
    for i in 0..3 {
        let mut req = ExecRequest::new(sh(&format!("echo task {i}")));
        req.log = Some(log.clone());
        run_once(req).await.unwrap();
    }
    assert_eq!(
        fs::read_to_string(&log.path).unwrap(),
        "task 0\ntask 1\ntask 2\n"
    );
}

#[tokio::test]
async fn payload_injection_arrives_as_plain_text() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let victim = dir.path().join("x");
    fs::create_dir(&victim).unwrap();
    let payload = json!({
        "a": format!("; rm -rf {}", victim.display()),
        "b": format!("$(touch {})", marker.display()),
        "c": format!("`touch {}` && touch {} | cat; ", marker.display(), marker.display()),
    });
    let task = TaskVars {
        id: "t-1".into(),
        type_: "evil".into(),
        attempt: 1,
    };
    let template: Vec<String> = [
        "-c",
        ECHO_ARGV,
        "{{payload.a}}",
        "--b={{payload.b}}",
        "{{payload.c}}",
        "{{payload}}",
    ]
    .map(String::from)
    .to_vec();
    let args = render_args(&template, &payload, &task).unwrap();
    let mut req = ExecRequest::new(CommandSpec {
        program: python.display().to_string(),
        args,
        ..CommandSpec::default()
    });
    req.stdin = format!("$(touch {}); rm -rf {}", marker.display(), victim.display()).into_bytes();
    let out = run_once(req).await.unwrap();
    assert!(out.exit.success(), "{} {}", out.exit, out.stderr_tail);
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen,
        json!({
            "argv": [payload["a"], format!("--b={}", payload["b"].as_str().unwrap()), payload["c"], payload.to_string()],
            "stdin": format!("$(touch {}); rm -rf {}", marker.display(), victim.display()),
        })
    );
    assert!(!marker.exists(), "a payload ran a command");
    assert!(victim.exists(), "a payload ran a command");
}

/// A Python program printing its arguments and stdin as JSON.
const ECHO_ARGV: &str =
    "import json, sys; print(json.dumps({'argv': sys.argv[1:], 'stdin': sys.stdin.read()}))";

#[tokio::test]
async fn memory_limit_makes_a_large_allocation_fail() {
    let Some(python) = common::python() else {
        return;
    };
    let allocate = |limit: Option<u64>| {
        let mut spec = CommandSpec::new(python.display().to_string())
            .args(["-c", "x = bytearray(500 * 1024 * 1024); print('allocated')"]);
        spec.limits.memory_bytes = limit;
        run_once(ExecRequest::new(spec))
    };
    let limited = allocate(Some(100 * 1024 * 1024)).await.unwrap();
    assert!(
        !limited.exit.success(),
        "allocated 500 MiB under a 100 MiB limit"
    );
    assert!(
        limited.stderr_tail.contains("MemoryError"),
        "{}",
        limited.stderr_tail
    );
    assert!(limited.applied_limits.rlimits || limited.applied_limits.cgroup);
    println!("memory limit enforced by: {}", limited.applied_limits.note);

    let free = allocate(None).await.unwrap();
    assert!(free.exit.success(), "{} {}", free.exit, free.stderr_tail);
    assert_eq!(free.stdout, b"allocated\n");
}

#[tokio::test]
async fn open_files_limit_applies() {
    let mut spec = sh("ulimit -n");
    spec.limits.open_files = Some(33);
    let out = run_once(ExecRequest::new(spec)).await.unwrap();
    assert_eq!(out.stdout, b"33\n");
}

#[tokio::test]
async fn cpu_time_limit_stops_a_busy_loop() {
    let mut spec = sh("while :; do :; done");
    spec.limits.cpu_time = Some(Duration::from_secs(1));
    let mut req = ExecRequest::new(spec);
    req.deadline = deadline_in(Duration::from_secs(60));
    let out = run_once(req).await.unwrap();
    assert!(!out.timed_out);
    assert_eq!(out.exit.describe(), "killed by SIGXCPU");
}

#[tokio::test]
async fn a_missing_program_is_an_error() {
    let err = run_once(ExecRequest::new(CommandSpec::new("/nonexistent/tool")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot start \"/nonexistent/tool\""),
        "{err}"
    );
}

#[tokio::test]
async fn cancelling_run_once_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let mut req = ExecRequest::new(sh("echo $$ > \"$PID_FILE\"; sleep 100 & sleep 100"));
    req.env
        .insert("PID_FILE".into(), pid_file.display().to_string());
    let pgid: u32 = tokio::select! {
        outcome = run_once(req) => panic!("the task ended by itself: {outcome:?}"),
        pgid = common::eventually("the task to start", || {
            fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
        }) => pgid,
    };
    // The run_once future was dropped by select!.
    common::eventually("the cancelled task's processes to die", || {
        group_members(pgid).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_running_task_can_be_paused_and_resumed_through_its_group() {
    let (tx, rx) = std::sync::mpsc::channel();
    let req = ExecRequest::new(sh(
        "i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done; echo done",
    ));
    let task = tokio::spawn(flotilla_runtime::run_once_with(req, move |group| {
        tx.send(group).unwrap();
    }));
    let group = common::eventually("the task to start", || rx.try_recv().ok()).await;
    assert!(group.is_live());
    let pgid = group.pgid();
    assert!(group.signal(flotilla_runtime::Signal::Stop).unwrap());
    common::eventually("the task to stop", || {
        (common::stat(pgid)?.0 == 'T').then_some(())
    })
    .await;
    let ticks = common::stat(pgid).unwrap().2;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(common::stat(pgid).unwrap().2, ticks, "no CPU while paused");
    assert!(group.signal(flotilla_runtime::Signal::Cont).unwrap());
    let out = task.await.unwrap().unwrap();
    assert!(out.exit.success());
    assert_eq!(out.stdout, b"done\n");
    assert_eq!(out.pgid, pgid);
    // Once reaped, the handle signals nothing: the number may belong to someone else now.
    assert!(!group.is_live());
    assert!(!group.signal(flotilla_runtime::Signal::Kill).unwrap());
}
