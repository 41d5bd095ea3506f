//! Managed agents end to end: a coordinator in this process starts real child processes (and
//! tmux sessions) from pool templates, hands them tasks, and the tests look at what really ran
//! through `/proc` as well as through the API.

mod common;

use std::time::Duration;

use common::*;
use flotilla_core::Operation;
use flotilla_core::api::FleetSpec;
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_secs(10);
const LONG: Duration = Duration::from_secs(30);

/// The exec-mode test agent: what it does depends on the task's type.
const EXEC_SCRIPT: &str = r#"#!/bin/sh
case "$FLOTILLA_TASK_TYPE" in
  json)
    input=$(cat)
    printf '{"arg": "%s", "id": "%s", "attempt": %s, "stdin": %s}\n' \
      "$1" "$FLOTILLA_TASK_ID" "$FLOTILLA_TASK_ATTEMPT" "$input" ;;
  text)
    printf 'hello %s\n' "$1" ;;
  verbatim)
    printf '%s' "$1" ;;
  env)
    printf '%s' "$FLOTILLA_TASK_PAYLOAD" ;;
  fail)
    echo "this goes to the log" 
    echo "boom: $1" >&2
    exit 3 ;;
  spin)
    # A process tree: a child that sleeps, and this shell spinning on the CPU.
    sleep 300 &
    while :; do :; done ;;
  hang)
    sleep 300 &
    sleep 300 ;;
esac
"#;

async fn exec_pool(h: &Harness, swarm: &str, name: &str, min: u32, extra: Value) -> Vec<Value> {
    let script = h.write_script("agent.sh", EXEC_SCRIPT);
    let mut template = json!({
        "command": script.to_str().unwrap(),
        "args": ["{{payload.arg}}"],
        "mode": "exec",
    });
    for (k, v) in extra.as_object().unwrap() {
        template[k] = v.clone();
    }
    h.put_pool(
        swarm,
        json!({ "name": name, "min_agents": min, "max_agents": 10, "agent": h.template(template) }),
    )
    .await;
    poll("the pool's agents to be idle", SHORT, || async {
        let agents = h.agents(swarm, name).await;
        if agents.len() == min as usize && agents.iter().all(|a| a["status"] == "idle") {
            Ok(agents)
        } else {
            Err(agents)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_agents_run_one_process_per_task_and_report_what_it_printed() {
    let h = Harness::start().await;
    let agents = exec_pool(&h, "default", "calc", 2, json!({})).await;
    assert_eq!(agents.len(), 2);
    for a in &agents {
        assert_eq!(a["managed"]["mode"], "exec");
        assert_eq!(a["managed"]["starts"], 1);
        // Exec agents hold no process between tasks.
        assert!(a["managed"]["pid"].is_null(), "{a:#}");
    }

    // JSON on stdout is the result as JSON; the payload arrived on stdin; placeholders and
    // FLOTILLA_TASK_* were filled in.
    let id = h
        .submit(
            "default",
            json!({"type": "json", "payload": {"arg": "x y", "n": 7}}),
        )
        .await;
    let t = h.finished(id, LONG).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["result"]["arg"], "x y");
    assert_eq!(t["result"]["id"], id.to_string());
    assert_eq!(t["result"]["attempt"], 1);
    assert_eq!(t["result"]["stdin"], json!({"arg": "x y", "n": 7}));

    // Anything else is the result as a string, without the trailing newline.
    let id = h
        .submit(
            "default",
            json!({"type": "text", "payload": {"arg": "world"}}),
        )
        .await;
    let t = h.finished(id, LONG).await;
    assert_eq!(t["result"], "hello world", "{t:#}");

    // The payload is in the environment too.
    let id = h
        .submit(
            "default",
            json!({"type": "env", "payload": {"arg": 1, "b": [true]}}),
        )
        .await;
    let t = h.finished(id, LONG).await;
    assert_eq!(t["result"], json!({"arg": 1, "b": [true]}), "{t:#}");

    // A non-zero exit fails the attempt with the exit and the end of stderr; stdout goes to
    // the agent's log.
    let id = h
        .submit(
            "default",
            json!({"type": "fail", "payload": {"arg": "disk full"}, "max_attempts": 2,
                   "backoff": {"initial_ms": 10, "max_ms": 10}}),
        )
        .await;
    let t = h.finished(id, LONG).await;
    assert_eq!(t["status"], "dead", "{t:#}");
    assert_eq!(t["attempts"], 2);
    assert_eq!(t["last_error"]["kind"], "agent_error");
    assert_eq!(
        t["last_error"]["message"], "exited with code 3: boom: disk full",
        "{t:#}"
    );
    let ran_on: flotilla_core::AgentId = t["last_error"]["agent_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let log = h.admin.agent_logs(ran_on, 100).await.unwrap();
    assert!(log.contains("this goes to the log"), "log: {log}");

    // The agents are idle again, with their counters, and no process of theirs is left.
    let agents = h.agents("default", "calc").await;
    let completed: u64 = agents
        .iter()
        .map(|a| a["tasks_completed"].as_u64().unwrap())
        .sum();
    let failed: u64 = agents
        .iter()
        .map(|a| a["tasks_failed"].as_u64().unwrap())
        .sum();
    assert_eq!((completed, failed), (3, 2), "{agents:#?}");
    h.no_processes_left().await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_values_reach_the_command_verbatim_never_through_a_shell() {
    let h = Harness::start().await;
    exec_pool(&h, "default", "calc", 1, json!({})).await;
    let marker = h.path("pwned");
    let m = marker.display();
    let precious = h.path("precious");
    std::fs::create_dir(&precious).unwrap();
    let p = precious.display();
    let nasty = [
        format!("; rm -rf {p}"),
        format!("$(rm -rf {p})"),
        format!("; touch {m}"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("&& touch {m} || touch {m}"),
        format!("' \"; touch {m}; echo \""),
        "{{task.id}} stays as it was given".to_owned(),
        "tab\there, newline\nthere, glob * and ~".to_owned(),
    ];
    for arg in &nasty {
        let id = h
            .submit(
                "default",
                json!({"type": "verbatim", "payload": {"arg": arg}}),
            )
            .await;
        let t = h.finished(id, LONG).await;
        assert_eq!(t["status"], "completed", "{t:#}");
        assert_eq!(t["result"].as_str(), Some(arg.as_str()), "{t:#}");
    }
    assert!(!marker.exists(), "a payload value was run by a shell");
    assert!(precious.exists(), "a payload value was run by a shell");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_timeout_is_killed_with_every_process_it_started() {
    let h = Harness::start().await;
    let agents = exec_pool(&h, "default", "calc", 1, json!({})).await;
    let agent = id_of(&agents[0]);
    let id = h
        .submit(
            "default",
            json!({"type": "hang", "payload": {"arg": "-"}, "timeout_ms": 1500, "max_attempts": 1}),
        )
        .await;
    // The command runs: a shell and its sleeping child, in a group of their own.
    let procs = poll("the task's processes", SHORT, || async {
        let p = marked(&h.marker);
        if p.len() >= 2 { Ok(p) } else { Err(p) }
    })
    .await;
    let pgid = procs[0].pgrp;
    assert!(procs.iter().all(|p| p.pgrp == pgid), "{procs:#?}");
    assert_eq!(pgid, procs.iter().map(|p| p.pid).min().unwrap());

    let t = h.finished(id, LONG).await;
    assert_eq!(t["status"], "dead", "{t:#}");
    assert_eq!(t["last_error"]["kind"], "timeout", "{t:#}");
    wait_until("the whole process group to be gone", SHORT, || {
        let left = group_members(pgid);
        if left.is_empty() { Ok(()) } else { Err(left) }
    })
    .await;

    // The agent goes on with the next task.
    h.agent_until(agent, "the agent to be idle", SHORT, |a| {
        a["status"] == "idle"
    })
    .await;
    let id = h
        .submit(
            "default",
            json!({"type": "text", "payload": {"arg": "again"}}),
        )
        .await;
    assert_eq!(h.finished(id, LONG).await["result"], "hello again");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_task_timeout_limits_tasks_without_a_shorter_one() {
    let h = Harness::start().await;
    exec_pool(
        &h,
        "default",
        "calc",
        1,
        json!({"limits": {"task_timeout_ms": 800}}),
    )
    .await;
    let id = h
        .submit(
            "default",
            json!({"type": "hang", "payload": {"arg": "-"}, "timeout_ms": 600000, "max_attempts": 1}),
        )
        .await;
    let t = h.finished(id, LONG).await;
    assert_eq!(t["last_error"]["kind"], "timeout", "{t:#}");
    h.no_processes_left().await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_an_agent_freezes_its_task_which_keeps_its_lease() {
    let h = Harness::start().await;
    let agents = exec_pool(&h, "default", "calc", 1, json!({})).await;
    let agent = id_of(&agents[0]);
    let id = h
        .submit(
            "default",
            json!({"type": "spin", "payload": {"arg": "-"}, "timeout_ms": 120000, "max_attempts": 1}),
        )
        .await;
    h.task_until(id, "the task to run", SHORT, |t| t["status"] == "running")
        .await;
    let procs: Vec<u32> = poll("the task's processes", SHORT, || async {
        let p = marked(&h.marker);
        if p.len() >= 2 { Ok(p) } else { Err(p) }
    })
    .await
    .iter()
    .map(|p| p.pid)
    .collect();

    let a = h
        .admin
        .agent_lifecycle(agent, Operation::Pause, false)
        .await
        .unwrap();
    assert_eq!(a.status.as_str(), "paused");
    wait_until("every process of the task to be stopped", SHORT, || {
        let states: Vec<char> = procs
            .iter()
            .filter_map(|p| proc_stat(*p))
            .map(|s| s.state)
            .collect();
        if states.iter().all(|s| *s == 'T') {
            Ok(())
        } else {
            Err(states)
        }
    })
    .await;
    let before = cpu_ticks(&procs);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = cpu_ticks(&procs);
    assert_eq!(before, after, "a paused task used CPU");
    // The task stays with the agent: paused is not lost.
    let t = h.task(id).await;
    assert_eq!(t["status"], "running", "{t:#}");
    assert_eq!(t["agent_id"], agent.to_string());

    let a = h
        .admin
        .agent_lifecycle(agent, Operation::Resume, false)
        .await
        .unwrap();
    assert_eq!(a.status.as_str(), "busy");
    let start = cpu_ticks(&procs);
    wait_until("the task to use CPU again", SHORT, || {
        let now = cpu_ticks(&procs);
        if now > start { Ok(()) } else { Err(now) }
    })
    .await;

    // A forced stop kills the task's processes at once; the task goes back to the queue
    // without losing an attempt (a user stopped the agent: the task did nothing wrong).
    h.admin
        .agent_lifecycle(agent, Operation::Stop, true)
        .await
        .unwrap();
    let a = h
        .agent_until(agent, "the agent to be stopped", SHORT, |a| {
            a["status"] == "stopped"
        })
        .await;
    assert_eq!(a["managed"]["desired"], "stopped", "{a:#}");
    let t = h.task(id).await;
    assert_eq!(t["status"], "queued", "{t:#}");
    assert_eq!(t["attempts"], 0, "{t:#}");
    assert!(t["agent_id"].is_null(), "{t:#}");
    h.no_processes_left().await;
    h.finish().await;
}

/// A daemon pool whose agents run `flotilla worker --agent-from-env -- COMMAND…`.
async fn daemon_pool(
    h: &Harness,
    swarm: &str,
    name: &str,
    runtime: &str,
    worker_cmd: &[&str],
) -> Value {
    let mut args = vec!["worker", "--agent-from-env", "--"];
    args.extend_from_slice(worker_cmd);
    h.put_pool(
        swarm,
        json!({
            "name": name,
            "min_agents": 1,
            "max_agents": 5,
            "agent": h.template(json!({
                "command": FLOTILLA,
                "args": args,
                "mode": "daemon",
                "runtime": runtime,
                "env": {"RUST_LOG": "info"},
            })),
        }),
    )
    .await;
    poll("the daemon to call in", LONG, || async {
        let agents = h.agents(swarm, name).await;
        match agents.as_slice() {
            [a] if a["status"] == "idle" => Ok(a.clone()),
            _ => Err(agents),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_agents_stop_start_and_restart_as_asked() {
    let h = Harness::start().await;
    let a = daemon_pool(&h, "default", "echo", "process", &["cat"]).await;
    let agent = id_of(&a);
    assert_eq!(a["managed"]["mode"], "daemon");
    assert_eq!(a["managed"]["starts"], 1);
    let pid = a["managed"]["pid"].as_u64().expect("a daemon has a pid") as u32;
    assert!(is_live(pid));
    assert_eq!(proc_stat(pid).unwrap().pgrp, pid, "its own process group");

    let id = h
        .submit("default", json!({"payload": {"hello": "world"}}))
        .await;
    let t = h.finished(id, LONG).await;
    assert_eq!(t["result"], json!({"hello": "world"}), "{t:#}");

    // Its resource usage is sampled from /proc (every 2 s) and shown on the agent.
    let a = h
        .agent_until(agent, "resource usage to be sampled", SHORT, |a| {
            a["resource_usage"]["memory_mb"]
                .as_f64()
                .is_some_and(|m| m > 0.0)
                && a["resource_usage"]["open_files"]
                    .as_u64()
                    .is_some_and(|n| n > 0)
        })
        .await;
    assert!(a["resource_usage"]["cpu_percent"].is_number(), "{a:#}");
    let out = h.cli(&["agent", "show", a["name"].as_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&pid.to_string()), "{shown}");

    // A graceful stop (from the CLI, by name): SIGTERM, the worker exits, the agent is
    // stopped and nothing is left.
    let name = a["name"].as_str().unwrap().to_owned();
    let out = h.cli(&["agent", "stop", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = h
        .agent_until(agent, "the agent to stop", SHORT, |a| {
            a["status"] == "stopped"
        })
        .await;
    assert!(a["managed"]["last_exit"].is_string(), "{a:#}");
    h.no_processes_left().await;
    // A stopped agent takes no task, and a stopped pool member is not replaced.
    let queued = h.submit("default", json!({"payload": 1})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.task(queued).await["status"], "queued");
    assert_eq!(h.agents("default", "echo").await.len(), 1);

    // Start: a new process, which calls in with a fresh token and takes the waiting task.
    let out = h.cli(&["agent", "start", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = h.finished(queued, LONG).await;
    assert_eq!(t["result"], 1, "{t:#}");
    let a = h.agent(agent).await;
    assert_eq!(a["managed"]["starts"], 2, "{a:#}");
    let pid2 = a["managed"]["pid"].as_u64().unwrap() as u32;
    assert_ne!(pid, pid2);

    // Restart (forced): killed and started again.
    h.admin
        .agent_lifecycle(agent, Operation::Restart, true)
        .await
        .unwrap();
    let a = h
        .agent_until(agent, "the agent to come back", LONG, |a| {
            a["managed"]["starts"] == 3 && a["status"] == "idle"
        })
        .await;
    assert!(!is_live(pid2), "the old process is gone");
    assert!(is_live(a["managed"]["pid"].as_u64().unwrap() as u32));

    // Its output is in its log, which the CLI prints.
    let log = h.admin.agent_logs(agent, 1000).await.unwrap();
    assert!(!log.trim().is_empty(), "the daemon's log is empty");
    let out = h.cli(&["agent", "logs", &name, "--tail", "1000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon may have written more since: what the API showed is still there.
    let printed = String::from_utf8_lossy(&out.stdout);
    let last = log.trim().lines().last().unwrap();
    assert!(printed.contains(last), "{printed:?} lacks {last:?}");

    // A mistake gets one line saying what is wrong, and a failing exit code.
    let out = h.cli(&["agent", "stop", "no-such-agent"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no-such-agent"), "{stderr}");
    let marker = h.marker.clone();
    h.finish().await;
    assert!(marked(&marker).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_daemon_is_noticed_at_once_not_after_missed_heartbeats() {
    let h = Harness::start().await;
    // Heartbeats every minute: only the exit itself can tell the coordinator quickly.
    h.admin
        .create_swarm(
            &serde_json::from_value(json!({
                "name": "slow",
                "config": {"heartbeat_interval_ms": 60000},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let a = daemon_pool(&h, "slow", "sleepy", "process", &["sleep", "300"]).await;
    let agent = id_of(&a);
    let pid = a["managed"]["pid"].as_u64().unwrap() as u32;
    let id = h
        .submit(
            "slow",
            json!({"payload": {}, "max_attempts": 3, "backoff": {"initial_ms": 60000}}),
        )
        .await;
    h.task_until(id, "the task to run", SHORT, |t| t["status"] == "running")
        .await;

    let killed = std::time::Instant::now();
    signal_group("KILL", pid);
    let t = h
        .task_until(id, "the attempt to fail", Duration::from_secs(5), |t| {
            t["last_error"]["kind"] == "agent_exited"
        })
        .await;
    let noticed = killed.elapsed();
    assert!(noticed < Duration::from_secs(5), "took {noticed:?}");
    assert_eq!(t["status"], "queued", "back in the queue at once: {t:#}");
    assert_eq!(t["last_error"]["retryable"], true);
    let a = h.agent(agent).await;
    assert_eq!(a["managed"]["last_exit"], "killed by SIGKILL", "{a:#}");
    assert!(a["current_tasks"].as_array().unwrap().is_empty(), "{a:#}");
    assert_eq!(a["health"]["reason"], "process_exited", "{a:#}");
    // Recovery restarts it after its backoff (1 s for a first restart), and it is healthy.
    let a = h
        .agent_until(agent, "the agent to be restarted", LONG, |a| {
            a["managed"]["starts"] == 2 && (a["status"] == "idle" || a["status"] == "busy")
        })
        .await;
    assert_eq!(a["health"]["state"], "healthy", "{a:#}");
    assert_eq!(a["health"]["recovery"]["restarts"], 1, "{a:#}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmux_agents_run_in_sessions_a_user_can_attach_to() {
    if !tmux_available() {
        return;
    }
    let h = Harness::start().await;
    let tmux = PrivateTmux::new();

    // A daemon in a tmux session.
    let a = daemon_pool(&h, "default", "echo", "tmux", &["cat"]).await;
    let agent = id_of(&a);
    let name = a["name"].as_str().unwrap().to_owned();
    let session = format!("flotilla-{name}");
    assert!(tmux.has_session(&session), "no tmux session {session}");
    let id = h.submit("default", json!({"payload": "via tmux"})).await;
    assert_eq!(h.finished(id, LONG).await["result"], "via tmux");

    // `flotilla agent attach NAME` puts a terminal (here a pseudo-terminal from `script`) on
    // the session; detaching gives the terminal back and attach exits 0.
    let mut attach = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{FLOTILLA} agent attach {name}"),
            "/dev/null",
        ])
        .env("FLOTILLA_URL", h.server().url())
        .env("FLOTILLA_TOKEN", &h.server().admin_token)
        .env("FLOTILLA_TMUX_SOCKET", &tmux.socket)
        .env("TERM", "xterm")
        .env_remove("TMUX")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("script runs");
    wait_until("a client on the agent's session", SHORT, || {
        let clients = tmux.run(&["list-clients", "-t", &format!("={session}")]);
        match clients {
            Some(c) if !c.trim().is_empty() => Ok(()),
            other => Err(other),
        }
    })
    .await;
    tmux.run(&["detach-client", "-s", &format!("={session}")])
        .expect("detach");
    let status = poll("attach to exit", SHORT, || {
        std::future::ready(match attach.try_wait() {
            Ok(Some(status)) => Ok(status),
            other => Err(format!("{other:?}")),
        })
    })
    .await;
    assert!(status.success(), "attach exited {status}");
    h.admin
        .agent_lifecycle(agent, Operation::Stop, false)
        .await
        .unwrap();
    h.agent_until(agent, "the agent to stop", SHORT, |a| {
        a["status"] == "stopped"
    })
    .await;
    wait_until("the session to be gone", SHORT, || {
        if tmux.has_session(&session) {
            Err(session.clone())
        } else {
            Ok(())
        }
    })
    .await;

    // Exec mode in tmux: each task runs in the agent's session; stdin and stdout still carry
    // the payload and the result, and the exit code still counts.
    let agents = exec_pool(&h, "default", "calc", 1, json!({"runtime": "tmux"})).await;
    let session = format!("flotilla-{}", agents[0]["name"].as_str().unwrap());
    let id = h
        .submit(
            "default",
            json!({"type": "json", "payload": {"arg": "in tmux"}}),
        )
        .await;
    let t = h.finished(id, LONG).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["result"]["arg"], "in tmux");
    assert_eq!(t["result"]["stdin"], json!({"arg": "in tmux"}));
    assert!(tmux.has_session(&session), "no tmux session {session}");
    let id = h
        .submit(
            "default",
            json!({"type": "fail", "payload": {"arg": "x"}, "max_attempts": 1}),
        )
        .await;
    let t = h.finished(id, LONG).await;
    assert_eq!(
        t["last_error"]["message"], "exited with code 3: boom: x",
        "{t:#}"
    );
    h.finish().await;
    assert!(
        !tmux.has_session(&session),
        "the session outlived the coordinator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_starts_its_managed_agents_again() {
    let mut h = Harness::start().await;
    let agents = exec_pool(&h, "default", "calc", 2, json!({})).await;
    let daemon = daemon_pool(&h, "default", "echo", "process", &["cat"]).await;
    let ids: Vec<_> = agents.iter().map(id_of).collect();

    // A graceful shutdown stops every managed process.
    h.shutdown().await;
    assert!(marked(&h.marker).is_empty(), "{:#?}", marked(&h.marker));

    h.start_again().await;
    let again = poll("the agents to be back", LONG, || async {
        let mut all = h.agents("default", "calc").await;
        all.extend(h.agents("default", "echo").await);
        if all.len() == 3 && all.iter().all(|a| a["status"] == "idle") {
            Ok(all)
        } else {
            Err(all)
        }
    })
    .await;
    // The same agents, not new ones.
    let mut back: Vec<_> = again.iter().map(id_of).collect();
    back.sort();
    let mut before = ids.clone();
    before.push(id_of(&daemon));
    before.sort();
    assert_eq!(back, before);
    let d = again.iter().find(|a| a["id"] == daemon["id"]).unwrap();
    assert_eq!(d["managed"]["starts"], 2, "{d:#}");

    let id = h
        .submit(
            "default",
            json!({"type": "text", "payload": {"arg": "after"}}),
        )
        .await;
    let t = h.finished(id, LONG).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_document_applies_idempotently_and_all_or_nothing() {
    let h = Harness::start().await;
    let script = h.write_script("agent.sh", EXEC_SCRIPT);
    let doc = |max: u32| -> FleetSpec {
        serde_json::from_value(json!({"swarms": [
            {"name": "alpha", "description": "first", "pools": [
                {"name": "calc", "min_agents": 2, "max_agents": max,
                 "agent": h.template(json!({"command": script.to_str().unwrap()}))}
            ]},
            {"name": "beta", "pools": []},
        ]}))
        .unwrap()
    };
    let first = h.admin.apply_fleet(&doc(4)).await.unwrap();
    let actions: Vec<_> = first
        .changes
        .iter()
        .map(|c| (c.kind.as_str(), c.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("swarm", "created"),
            ("pool", "created"),
            ("swarm", "created"),
            ("agent", "spawned"),
            ("agent", "spawned"),
        ],
        "{first:#?}"
    );
    poll("two idle agents", SHORT, || async {
        let a = h.agents("alpha", "calc").await;
        if a.len() == 2 && a.iter().all(|a| a["status"] == "idle") {
            Ok(())
        } else {
            Err(a)
        }
    })
    .await;

    // Again: nothing changes, nothing more is started.
    let second = h.admin.apply_fleet(&doc(4)).await.unwrap();
    assert!(
        second.changes.iter().all(|c| c.action == "unchanged"),
        "{second:#?}"
    );
    assert_eq!(h.agents("alpha", "calc").await.len(), 2);

    // A document with one bad pool changes nothing at all, the good swarm before it included.
    let bad: FleetSpec = serde_json::from_value(json!({"swarms": [
        {"name": "gamma", "pools": []},
        {"name": "alpha", "pools": [{"name": "calc", "min_agents": 5, "max_agents": 2,
            "agent": {"command": "true"}}]},
    ]}))
    .unwrap();
    let err = h.admin.apply_fleet(&bad).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("min_agents"), "{err}");
    assert!(
        h.admin.get_swarm("gamma").await.is_err(),
        "gamma was created"
    );
    let pool = h.admin.get_pool("alpha", "calc").await.unwrap();
    assert_eq!(pool.max_agents, 4);

    // The CLI's `apply` reads TOML and says where a mistake is.
    let toml = h.path("fleet.toml");
    std::fs::write(&toml, "[swarms.delta]\ndescription = 3\n").unwrap();
    let out = h.cli(&["apply", toml.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fleet.toml:2:"), "{stderr}");
    std::fs::write(&toml, "[swarms.delta]\ndescription = \"from toml\"\n").unwrap();
    let out = h.cli(&["apply", toml.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        h.admin.get_swarm("delta").await.unwrap().swarm.description,
        "from toml"
    );
    h.finish().await;
}
