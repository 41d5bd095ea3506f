//! The tmux runtime with a real tmux, each test on a private server (its socket in a temporary
//! directory), killed at the end.

mod common;

use std::fs;
use std::time::Duration;

use common::{PrivateTmux, eventually, group_members, stat, wait_for_members};
use flotilla_runtime::tmux::session_name;
use flotilla_runtime::{CommandSpec, ExecRequest, ExitInfo, LogSpec, RuntimeKind};

fn sh(script: &str) -> CommandSpec {
    CommandSpec::new("sh").args(["-c", script])
}

#[tokio::test]
async fn session_runs_the_script_logs_its_output_and_reports_its_exit() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let log = LogSpec::new(tmux.dir.path().join("logs/agent.log"));
    let script = "echo hello-from-tmux; read line; echo got-$line; exit 3";
    let mut agent = tmux
        .server
        .start("script.1", &sh(script), &log)
        .await
        .unwrap();
    assert_eq!(agent.kind(), RuntimeKind::Tmux);
    assert_eq!(agent.pgid(), agent.pid(), "the pane leads its own group");
    assert!(tmux.has_session("flotilla-script_1"));
    assert!(tmux.server.has_session("script.1").await.unwrap());
    assert!(
        !tmux.server.has_session("script").await.unwrap(),
        "names match exactly"
    );

    eventually("the output in the log", || {
        fs::read_to_string(&log.path)
            .ok()?
            .contains("hello-from-tmux")
            .then_some(())
    })
    .await;
    // The pane is a terminal people can type into.
    tmux.tmux(&["send-keys", "-t", "=flotilla-script_1:", "pong", "Enter"]);
    let exit = tokio::time::timeout(common::PATIENCE, agent.wait())
        .await
        .unwrap();
    assert_eq!(exit, ExitInfo::exited(3));
    // The log is written by tmux's pipe-pane `cat`, a little after the pane printed it.
    eventually("the reply in the log", || {
        fs::read_to_string(&log.path)
            .ok()?
            .contains("got-pong")
            .then_some(())
    })
    .await;
    // remain-on-exit keeps the session until stop.
    assert!(tmux.has_session("flotilla-script_1"));
    assert_eq!(agent.stop(Duration::from_secs(1)).await, exit);
    assert!(!tmux.has_session("flotilla-script_1"));
}

#[tokio::test]
async fn wait_reports_a_signal() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let log = LogSpec::new(tmux.dir.path().join("a.log"));
    let mut agent = tmux
        .server
        .start("killed", &sh("kill -KILL $$"), &log)
        .await
        .unwrap();
    let exit = tokio::time::timeout(common::PATIENCE, agent.wait())
        .await
        .unwrap();
    assert_eq!(exit.describe(), "killed by SIGKILL");
    agent.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn stop_kills_the_group_and_the_session() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let log = LogSpec::new(tmux.dir.path().join("a.log"));
    let script = "trap '' TERM; sleep 100 & sh -c 'sleep 100 & sleep 100' & sleep 100";
    let mut agent = tmux
        .server
        .start("stubborn", &sh(script), &log)
        .await
        .unwrap();
    let pgid = agent.pgid();
    wait_for_members(pgid, 4).await;
    let exit = agent.stop(Duration::from_millis(500)).await;
    assert_eq!(exit.describe(), "killed by SIGKILL");
    assert!(
        group_members(pgid).is_empty(),
        "left: {:?}",
        group_members(pgid)
    );
    assert!(!tmux.has_session("flotilla-stubborn"));
    // The agent name is free again.
    let mut again = tmux
        .server
        .start("stubborn", &sh("exec sleep 100"), &log)
        .await
        .unwrap();
    // Once it runs `sleep` (a signal sent while the pane's process is still being set up can
    // be lost, and the stop would then end in SIGKILL after its grace).
    let pgid = again.pgid();
    common::eventually("the pane to run sleep", || {
        group_members(pgid).into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
    })
    .await;
    assert_eq!(
        again.stop(Duration::from_secs(10)).await.describe(),
        "killed by SIGTERM"
    );
}

#[tokio::test]
async fn a_second_session_with_the_same_name_is_refused() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let log = LogSpec::new(tmux.dir.path().join("a.log"));
    let mut first = tmux
        .server
        .start("twin", &sh("exec sleep 100"), &log)
        .await
        .unwrap();
    let err = tmux
        .server
        .start("twin", &sh("exec sleep 100"), &log)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("duplicate session"), "{err}");
    first.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn pause_and_resume() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let log = LogSpec::new(tmux.dir.path().join("a.log"));
    let mut agent = tmux
        .server
        .start("busy", &sh("while :; do :; done"), &log)
        .await
        .unwrap();
    let pgid = agent.pgid();
    // The pane's process is the wrapper; the busy loop is its child.
    let busy = eventually("the busy loop", || {
        group_members(pgid).into_iter().find(|&p| p != agent.pid())
    })
    .await;
    let start_ticks = stat(busy).unwrap().2;
    eventually("the loop to burn CPU", || {
        (stat(busy)?.2 > start_ticks + 5).then_some(())
    })
    .await;
    agent.pause().unwrap();
    eventually("the loop to stop", || (stat(busy)?.0 == 'T').then_some(())).await;
    let paused_ticks = stat(busy).unwrap().2;
    // tmux would have continued a stopped pane process by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stat(busy).unwrap().0, 'T', "still stopped");
    assert_eq!(stat(busy).unwrap().2, paused_ticks, "no CPU while paused");
    agent.resume().unwrap();
    eventually("the loop to run again", || {
        (stat(busy)?.2 > paused_ticks + 5).then_some(())
    })
    .await;
    assert_eq!(
        agent.stop(Duration::from_secs(10)).await.describe(),
        "killed by SIGTERM"
    );
}

#[tokio::test]
async fn arguments_environment_and_workdir_reach_the_pane_verbatim() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let dir = tmux.dir.path();
    let marker = dir.join("pwned");
    let workdir = dir.join(format!(
        "work #(touch {}) #{{pane_id}} dir",
        marker.display()
    ));
    fs::create_dir_all(&workdir).unwrap();
    let out = dir.join("seen");
    let hostile = [
        "x;".to_owned(),
        "run-shell".to_owned(),
        format!("touch {};", marker.display()),
        ";".to_owned(),
        "\\;".to_owned(),
        format!("#(touch {})", marker.display()),
        format!("$(touch {})", marker.display()),
        "#{pane_id}".to_owned(),
        "{".to_owned(),
        "".to_owned(),
    ];
    // Prints each argument on its own line, NUL-terminated, then the environment value and pwd.
    let mut spec = CommandSpec::new("sh").args([
        "-c",
        "for a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$OUT\"; printf '%s\\0%s\\0' \"$HOSTILE\" \"$(pwd)\" >> \"$OUT\"",
        "sh",
    ]);
    spec.args.extend(hostile.iter().cloned());
    spec.env.insert("OUT".into(), out.display().to_string());
    spec.env.insert(
        "HOSTILE".into(),
        format!("v; #(touch {});", marker.display()),
    );
    spec.workdir = Some(workdir.clone());
    let log = LogSpec::new(dir.join("a.log"));
    let mut agent = tmux.server.start("verbatim", &spec, &log).await.unwrap();
    assert!(
        tokio::time::timeout(common::PATIENCE, agent.wait())
            .await
            .unwrap()
            .success()
    );
    agent.stop(Duration::from_secs(1)).await;
    let seen = fs::read_to_string(&out).unwrap();
    let seen: Vec<&str> = seen.strip_suffix('\0').unwrap().split('\0').collect();
    let mut expected: Vec<String> = hostile.to_vec();
    expected.push(format!("v; #(touch {});", marker.display()));
    expected.push(workdir.display().to_string());
    assert_eq!(seen, expected);
    assert!(!marker.exists(), "tmux ran a command from an argument");
}

#[tokio::test]
async fn a_lone_program_is_not_run_by_a_shell() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let marker = tmux.dir.path().join("pwned");
    let spec = CommandSpec::new(format!("touch {}", marker.display()));
    let log = LogSpec::new(tmux.dir.path().join("a.log"));
    let mut agent = tmux.server.start("lone", &spec, &log).await.unwrap();
    let exit = tokio::time::timeout(common::PATIENCE, agent.wait())
        .await
        .unwrap();
    assert_eq!(exit, ExitInfo::exited(127), "no program has that name");
    agent.stop(Duration::from_secs(1)).await;
    assert!(!marker.exists());

    // A real lone program runs.
    let mut ok = tmux
        .server
        .start("true", &CommandSpec::new("true"), &log)
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(common::PATIENCE, ok.wait())
            .await
            .unwrap()
            .success()
    );
    ok.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn log_with_awkward_path_and_rotation() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let marker = tmux.dir.path().join("pwned");
    let dir = tmux
        .dir
        .path()
        .join(format!("it's #(touch {}) $(x)", marker.display()));
    let log = LogSpec {
        path: dir.join("a.log"),
        max_bytes: 2_000,
        keep: 2,
    };
    let script = "i=0; while [ $i -lt 100 ]; do echo \"line $i ........................\"; i=$((i+1)); done; exec sleep 100";
    let mut agent = tmux
        .server
        .start("rotate", &sh(script), &log)
        .await
        .unwrap();
    eventually("all lines in the log", || {
        fs::read_to_string(&log.path)
            .ok()?
            .contains("line 99 ")
            .then_some(())
    })
    .await;
    assert!(!marker.exists());
    assert!(flotilla_runtime::rotate_if_needed(&log).unwrap());
    assert_eq!(fs::metadata(&log.path).unwrap().len(), 0);
    assert!(
        fs::read_to_string(flotilla_runtime::logs::rotated_path(&log.path, 1))
            .unwrap()
            .contains("line 99 ")
    );
    agent.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn limits_are_applied_to_the_pane() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let mut spec = sh("exec sleep 100");
    spec.limits.open_files = Some(55);
    let log = LogSpec::new(tmux.dir.path().join("a.log"));
    let mut agent = tmux.server.start("limited", &spec, &log).await.unwrap();
    assert!(agent.applied_limits().rlimits);
    // The wrapper and the agent (sleep) both have the limit.
    let members = wait_for_members(agent.pgid(), 2).await;
    for pid in members {
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>()[3..5],
            ["55", "55"],
            "{line}"
        );
    }
    agent.stop(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn exec_mode_shows_task_output_in_the_agent_session() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let log = LogSpec::new(tmux.dir.path().join("exec.log"));
    let mut req = ExecRequest::new(sh("cat; echo task-stderr >&2; exit 4"));
    req.stdin = b"task-input\n".to_vec();
    req.log = Some(log.clone());
    let out = tmux.server.run_once("worker", req).await.unwrap();
    assert_eq!(out.exit, ExitInfo::exited(4));
    assert_eq!(out.stdout, b"task-input\n");
    assert_eq!(out.stderr_tail, "task-stderr\n");
    assert!(tmux.has_session(&session_name("worker")));
    let (_, command) = tmux.tmux(&[
        "list-panes",
        "-t",
        "=flotilla-worker:",
        "-F",
        "#{pane_current_command}",
    ]);
    assert_eq!(command.trim(), "tail");
    eventually("the task output on the agent's screen", || {
        let (_, screen) = tmux.tmux(&["capture-pane", "-p", "-t", "=flotilla-worker:"]);
        (screen.contains("task-input") && screen.contains("task-stderr")).then_some(())
    })
    .await;
    // A second task reuses the session.
    let mut req = ExecRequest::new(sh("echo second"));
    req.log = Some(log.clone());
    assert!(
        tmux.server
            .run_once("worker", req)
            .await
            .unwrap()
            .exit
            .success()
    );
    tmux.server.kill_session("worker").await.unwrap();
    assert!(!tmux.has_session("flotilla-worker"));
    tmux.server.kill_session("worker").await.unwrap();

    let err = tmux
        .server
        .run_once("worker", ExecRequest::new(sh("true")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs a log"), "{err}");
}

#[test]
fn attach_command_argv() {
    let tmux = PrivateTmux::new();
    let command = tmux.server.attach_command("agent-7");
    assert_eq!(command.get_program(), "tmux");
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let socket = tmux.socket().display().to_string();
    assert_eq!(
        args,
        [
            "-S",
            socket.as_str(),
            "attach-session",
            "-t",
            "=flotilla-agent-7"
        ]
    );
}

#[tokio::test]
async fn shell_metacharacters_quotes_and_newlines_reach_the_pane_as_text() {
    if !common::ensure_tmux() {
        return;
    }
    let tmux = PrivateTmux::new();
    let dir = tmux.dir.path();
    let marker = dir.join("pwned");
    let m = marker.display();
    let out = dir.join("seen");
    // What a payload could hold: separators, substitutions, both quotes, newlines, backslashes.
    let hostile = [
        format!("; touch {m}"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("'; touch {m}; '"),
        format!("\"; touch {m}; \""),
        format!("line one\ntouch {m}\n"),
        "it's \"quoted\" \\ back\\slash \\".to_owned(),
        format!("; $(touch {m}) ' \" \n"),
    ];
    let mut spec = CommandSpec::new("sh").args([
        "-c",
        "for a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$OUT\"; printf '%s\\0' \"$HOSTILE\" >> \"$OUT\"",
        "sh",
    ]);
    spec.args.extend(hostile.iter().cloned());
    spec.env.insert("OUT".into(), out.display().to_string());
    spec.env
        .insert("HOSTILE".into(), format!("; $(touch {m}) ' \" \n;"));
    let log = LogSpec::new(dir.join("a.log"));
    let mut agent = tmux.server.start("quotes", &spec, &log).await.unwrap();
    assert!(
        tokio::time::timeout(common::PATIENCE, agent.wait())
            .await
            .unwrap()
            .success()
    );
    agent.stop(Duration::from_secs(1)).await;
    let seen = fs::read_to_string(&out).unwrap();
    let seen: Vec<&str> = seen.strip_suffix('\0').unwrap().split('\0').collect();
    let mut expected = hostile.to_vec();
    expected.push(format!("; $(touch {m}) ' \" \n;"));
    assert_eq!(seen, expected, "each argument arrives byte for byte");
    assert!(!marker.exists(), "something ran a command from an argument");
}
