//! `flotilla agent list|show|remove|spawn|start|stop|pause|resume|restart|attach|logs`.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use flotilla_client::Client;
use flotilla_core::api::Page;
use flotilla_core::{Agent, AgentId, Operation, RuntimeKind, SwarmId};
use serde::Serialize;

use crate::cli::{
    AgentCommand, FindAgent, ForceLifecycleArgs, GlobalArgs, JsonFlag, LifecycleArgs,
};
use crate::config;
use crate::output::{self, age, age_opt, key_values, now, table, when};

/// The environment variable naming the tmux server socket that tmux-runtime agents run on
/// (`tmux -S PATH`); the default server when unset.
pub const TMUX_SOCKET_ENV: &str = "FLOTILLA_TMUX_SOCKET";

/// Runs an `agent` subcommand.
pub async fn run(global: &GlobalArgs, cmd: AgentCommand) -> Result<ExitCode> {
    let client = config::client(global)?;
    match cmd {
        AgentCommand::List {
            swarm,
            status,
            agent_type,
            out,
        } => {
            let mut names = HashMap::new();
            let agents = match &swarm {
                Some(swarm) => {
                    client
                        .list_agents(swarm, status, agent_type.as_deref())
                        .await?
                }
                None => {
                    let mut all = Vec::new();
                    for s in client.list_swarms().await? {
                        names.insert(s.swarm.id, s.swarm.name.clone());
                        all.extend(
                            client
                                .list_agents(&s.swarm.id.to_string(), status, agent_type.as_deref())
                                .await?,
                        );
                    }
                    all
                }
            };
            if out.json {
                output::json(&Page {
                    items: agents,
                    next_cursor: None,
                })?;
            } else {
                let swarm_name = |id: SwarmId| {
                    names
                        .get(&id)
                        .cloned()
                        .or_else(|| swarm.clone())
                        .unwrap_or_else(|| id.to_string())
                };
                output::line(&agent_table(&agents, swarm_name))?;
            }
        }
        AgentCommand::Show { agent, find, out } => {
            let agent = resolve(&client, &agent, &find).await?;
            if out.json {
                output::json(&agent)?;
            } else {
                output::line(&describe(&agent))?;
            }
        }
        AgentCommand::Remove { agent, find } => {
            let agent = resolve(&client, &agent, &find).await?;
            client.remove_agent(agent.id).await?;
            output::line(&format!(
                "removed agent {} ({}); its tasks go back to the queue",
                agent.name, agent.id
            ))?;
        }
        AgentCommand::Spawn { swarm, pool, out } => {
            let agent = client.spawn_agent(&swarm, &pool).await?;
            if out.json {
                output::json(&agent)?;
            } else {
                output::line(&format!(
                    "spawned agent {} ({}) in pool {pool} of swarm {swarm}: {}",
                    agent.name,
                    agent.id,
                    agent.status.as_str()
                ))?;
            }
        }
        AgentCommand::Start(a) => lifecycle(&client, a, Operation::Start).await?,
        AgentCommand::Pause(a) => lifecycle(&client, a, Operation::Pause).await?,
        AgentCommand::Resume(a) => lifecycle(&client, a, Operation::Resume).await?,
        AgentCommand::Stop(a) => forced_lifecycle(&client, a, Operation::Stop).await?,
        AgentCommand::Restart(a) => forced_lifecycle(&client, a, Operation::Restart).await?,
        AgentCommand::Attach { agent, find } => {
            let agent = resolve(&client, &agent, &find).await?;
            return attach(&agent);
        }
        AgentCommand::Logs {
            agent,
            find,
            follow,
            tail,
        } => {
            let agent = resolve(&client, &agent, &find).await?;
            if agent.managed.is_none() {
                bail!(
                    "{} is a connected agent: Flotilla did not start it and keeps no log of it",
                    agent.name
                );
            }
            if follow {
                let mut stream = client.follow_agent_logs(agent.id, tail).await?;
                let mut out = std::io::stdout();
                while let Some(text) = stream.next_chunk().await? {
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
                }
            } else {
                let text = client.agent_logs(agent.id, tail).await?;
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn lifecycle(client: &Client, a: LifecycleArgs, op: Operation) -> Result<()> {
    let agent = resolve(client, &a.agent, &a.find).await?;
    let after = client.agent_lifecycle(agent.id, op, false).await?;
    report_lifecycle(&after, op, a.out)
}

async fn forced_lifecycle(client: &Client, a: ForceLifecycleArgs, op: Operation) -> Result<()> {
    let agent = resolve(client, &a.agent, &a.find).await?;
    let after = client.agent_lifecycle(agent.id, op, a.force).await?;
    report_lifecycle(&after, op, a.out)
}

fn report_lifecycle(agent: &Agent, op: Operation, out: JsonFlag) -> Result<()> {
    if out.json {
        return output::json(agent);
    }
    let asked = match op {
        Operation::Start => "start",
        Operation::Stop => "stop",
        Operation::Pause => "pause",
        Operation::Resume => "resume",
        Operation::Restart => "restart",
        Operation::Rollback => "rollback",
    };
    output::line(&format!(
        "agent {} ({}): {asked} accepted; status now {}",
        agent.name,
        agent.id,
        agent.status.as_str()
    ))
}

/// Finds the agent that `text` names: an id, or a name looked up in `--swarm` (every swarm
/// when it is not given).
pub async fn resolve(client: &Client, text: &str, find: &FindAgent) -> Result<Agent> {
    let text = text.trim();
    if let Ok(id) = text.parse::<AgentId>() {
        return Ok(client.get_agent(id).await?);
    }
    let swarms: Vec<(String, String)> = match &find.swarm {
        Some(s) => vec![(s.clone(), s.clone())],
        None => client
            .list_swarms()
            .await?
            .into_iter()
            .map(|v| (v.swarm.id.to_string(), v.swarm.name))
            .collect(),
    };
    let mut found = Vec::new();
    for (key, name) in &swarms {
        for agent in client.list_agents(key, None, None).await? {
            if agent.name == text {
                found.push((name.clone(), agent));
            }
        }
    }
    pick(text, find.swarm.as_deref(), found)
}

/// The one agent among those named `text`, or an error saying why there is not exactly one.
fn pick(text: &str, swarm: Option<&str>, mut found: Vec<(String, Agent)>) -> Result<Agent> {
    match found.len() {
        1 => Ok(found.pop().expect("one").1),
        0 => match swarm {
            Some(s) => bail!(
                "no agent named {text:?} in swarm {s} (see `flotilla agent list --swarm {s}`)"
            ),
            None => bail!(
                "no agent named {text:?} in any swarm (see `flotilla agent list`); give its name \
                 or id"
            ),
        },
        _ => {
            let places: Vec<String> = found
                .iter()
                .map(|(s, a)| format!("{} in swarm {s}", a.id))
                .collect();
            bail!(
                "{} agents are named {text:?} ({}): pass --swarm or the agent's id",
                found.len(),
                places.join(", ")
            )
        }
    }
}

/// The tmux session of a tmux-runtime agent: `flotilla-NAME`, with `.` (and `:`) turned into
/// `_` as tmux does (the same rule as `flotilla_runtime::tmux::session_name`).
pub fn tmux_session(agent_name: &str) -> String {
    format!("flotilla-{}", agent_name.replace(['.', ':'], "_"))
}

/// The tmux command line that attaches to `session`: `tmux [-S SOCKET] attach-session -t
/// =SESSION`, or `switch-client` from inside tmux on the same server.
pub fn tmux_attach_args(session: &str, socket: Option<&str>, inside_tmux: bool) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(socket) = socket {
        args.extend(["-S".to_owned(), socket.to_owned()]);
    }
    let verb = if inside_tmux && socket.is_none() {
        "switch-client"
    } else {
        "attach-session"
    };
    args.extend([verb.to_owned(), "-t".to_owned(), format!("={session}")]);
    args
}

/// Replaces this process with `tmux attach` to a tmux-runtime agent's session.
fn attach(agent: &Agent) -> Result<ExitCode> {
    let name = &agent.name;
    let Some(managed) = &agent.managed else {
        bail!(
            "{name} is a connected agent, not one Flotilla started: it has no session to attach to"
        );
    };
    if let Some(host) = &managed.host {
        bail!(
            "{name} runs on host {host}: attach there (`tmux attach -t {}` on that machine)",
            tmux_session(name)
        );
    }
    if managed.runtime == RuntimeKind::Process {
        bail!(
            "{name} runs in the process runtime, which has no terminal to attach to; follow its \
             output with `flotilla agent logs {name} --follow` (or set runtime = \"tmux\" in its \
             pool's agent template)"
        );
    }
    let session = tmux_session(name);
    let socket = std::env::var(TMUX_SOCKET_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty());
    let mut base = std::process::Command::new("tmux");
    if let Some(socket) = &socket {
        base.args(["-S", socket]);
    }
    let probe = base
        .args(["has-session", "-t", &format!("={session}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match probe {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("cannot run tmux: it is not installed or not on PATH")
        }
        Err(e) => bail!("cannot run tmux: {e}"),
        Ok(status) if !status.success() => {
            let hint = if agent.is_exec() {
                " (an exec-mode agent's session appears with its first task)"
            } else {
                ""
            };
            let on = match &socket {
                Some(s) => format!("on the tmux server at {s}"),
                None => format!(
                    "on the default tmux server (set {TMUX_SOCKET_ENV} if the coordinator uses \
                     another socket)"
                ),
            };
            bail!(
                "{name} has no tmux session {session} {on}; it is {}{hint}",
                agent.status.as_str()
            );
        }
        Ok(_) => {}
    }
    let inside = std::env::var_os("TMUX").is_some();
    let args = tmux_attach_args(&session, socket.as_deref(), inside);
    let mut cmd = std::process::Command::new("tmux");
    cmd.args(&args);
    if socket.is_some() {
        // Attaching from inside another tmux server nests the client; tmux refuses unless
        // TMUX is unset.
        cmd.env_remove("TMUX");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = cmd.exec();
        Err(err).context("cannot run tmux")
    }
    #[cfg(not(unix))]
    {
        let status = cmd.status().context("cannot run tmux")?;
        Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

fn json_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The table of `agent list`.
pub fn agent_table(agents: &[Agent], swarm_name: impl Fn(SwarmId) -> String) -> String {
    let now = now();
    let rows = agents
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.name.clone(),
                swarm_name(a.swarm_id),
                a.agent_type.clone(),
                a.status.as_str().to_owned(),
                match a.health.reason {
                    Some(r) if a.health.state != flotilla_core::HealthState::Healthy => {
                        format!("{} ({})", a.health.state.as_str(), r.as_str())
                    }
                    _ => a.health.state.as_str().to_owned(),
                },
                format!("{}/{}", a.current_tasks.len(), a.max_concurrent_tasks),
                a.tasks_completed.to_string(),
                a.tasks_failed.to_string(),
                age(a.last_heartbeat_at, now),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "SWARM",
            "TYPE",
            "STATUS",
            "HEALTH",
            "TASKS",
            "DONE",
            "FAILED",
            "LAST SEEN",
        ],
        rows,
    )
}

fn describe(a: &Agent) -> String {
    let now = now();
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    let usage = &a.resource_usage;
    let mut usage_parts = Vec::new();
    if let Some(c) = usage.cpu_percent {
        usage_parts.push(format!("cpu {c:.1}%"));
    }
    if let Some(m) = usage.memory_mb {
        usage_parts.push(format!("memory {m:.0} MiB"));
    }
    if let Some(n) = usage.active_connections {
        usage_parts.push(format!("{n} connections"));
    }
    if let Some(n) = usage.open_files {
        usage_parts.push(format!("{n} open files"));
    }
    let mut rows = vec![
        ("ID", a.id.to_string()),
        ("Name", a.name.clone()),
        ("Swarm", a.swarm_id.to_string()),
        ("Type", a.agent_type.clone()),
        ("Role", json_name(&a.role)),
        ("Status", a.status.as_str().to_owned()),
        ("Health", health_line(a, now)),
        ("Reports", json_name(&a.reported_health)),
        ("Breaker", breaker_line(a, now)),
        ("Capabilities", list(a.capabilities.clone())),
        (
            "Tasks",
            format!(
                "{} of {} ({})",
                a.current_tasks.len(),
                a.max_concurrent_tasks,
                list(a.current_tasks.iter().map(|t| t.to_string()).collect())
            ),
        ),
        (
            "Done",
            format!("{} completed, {} failed", a.tasks_completed, a.tasks_failed),
        ),
        ("Resources", list(usage_parts)),
        ("Registered", when(a.registered_at, now)),
        ("Last seen", when(a.last_heartbeat_at, now)),
        ("Lease until", when(a.lease_until, now)),
    ];
    if a.stopped_at.is_some() {
        rows.push(("Stopped", age_opt(a.stopped_at, now)));
    }
    rows.extend(managed_rows(a, now));
    if !a.health.history.is_empty() {
        let lines: Vec<String> = a
            .health
            .history
            .iter()
            .rev()
            .take(10)
            .map(|t| {
                let why = t
                    .reason
                    .map(|r| format!(" ({})", r.as_str()))
                    .unwrap_or_default();
                let words = if t.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", t.detail)
                };
                format!(
                    "{} {} -> {}{why}{words}",
                    age(t.at, now),
                    t.from.as_str(),
                    t.to.as_str()
                )
            })
            .collect();
        rows.push(("History", lines.join("\n")));
    }
    let metadata = a.metadata.to_value();
    if !(metadata.is_null() || metadata.as_object().is_some_and(|m| m.is_empty())) {
        rows.push(("Metadata", output::pretty_json_text(a.metadata.get())));
    }
    key_values(&rows)
}

/// `healthy`, or `degraded (error_rate) for 2m: 3 of its last 4 tasks failed`.
fn health_line(a: &Agent, now: flotilla_core::Timestamp) -> String {
    let h = &a.health;
    let mut s = h.state.as_str().to_owned();
    if let Some(r) = h.reason {
        s.push_str(&format!(" ({})", r.as_str()));
    }
    if let Some(since) = h.since {
        s.push_str(&format!(" since {}", age(since, now)));
    }
    if !h.detail.is_empty() {
        s.push_str(&format!(": {}", h.detail));
    }
    let r = &h.recovery;
    if r.gave_up {
        s.push_str("; recovery gave up");
    } else if let Some(at) = r.next_at {
        s.push_str(&format!(
            "; restart {} due {}",
            r.restarts + 1,
            when(at, now)
        ));
    } else if r.restarts > 0 {
        s.push_str(&format!("; {} restart(s) in a row", r.restarts));
    }
    s
}

/// `closed`, `open until …` or `half-open`, with the failures in a row.
fn breaker_line(a: &Agent, now: flotilla_core::Timestamp) -> String {
    let h = &a.health;
    let state = match h.breaker {
        flotilla_core::Breaker::Closed => "closed".to_owned(),
        flotilla_core::Breaker::Open { until } => format!("open until {}", when(until, now)),
        flotilla_core::Breaker::HalfOpen => "half-open (one trial task)".to_owned(),
    };
    format!("{state}; {} failure(s) in a row", h.consecutive_failures)
}

/// The rows of `agent show` about a managed agent's process; none for a connected agent.
fn managed_rows(a: &Agent, now: flotilla_core::Timestamp) -> Vec<(&'static str, String)> {
    let Some(m) = &a.managed else {
        return vec![("Managed", "no (a connected agent)".to_owned())];
    };
    let mut rows = vec![
        (
            "Managed",
            format!(
                "{} runtime, {} mode",
                json_name(&m.runtime),
                json_name(&m.mode)
            ),
        ),
        ("Desired", json_name(&m.desired)),
        (
            "Host",
            m.host
                .clone()
                .unwrap_or_else(|| "this coordinator's machine".into()),
        ),
        (
            "PID",
            m.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        ),
        (
            "Starts",
            match m.started_at {
                Some(at) => format!("{} (last {})", m.starts, age(at, now)),
                None => m.starts.to_string(),
            },
        ),
        (
            "Last exit",
            m.last_exit.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "Limits",
            m.limits_applied.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    if m.runtime == RuntimeKind::Tmux {
        rows.push((
            "Session",
            format!(
                "{} (flotilla agent attach {})",
                tmux_session(&a.name),
                a.name
            ),
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::{AgentMode, Desired, Managed};

    fn agent(name: &str, managed: Option<Managed>) -> Agent {
        let mut a: Agent = serde_json::from_value(serde_json::json!({
            "id": "0190b6e4-0000-7000-8000-000000000001",
            "swarm_id": "0190b6e4-0000-7000-8000-000000000002",
            "name": name, "type": "echo", "capabilities": [], "max_concurrent_tasks": 1,
            "role": "worker", "status": "idle", "reported_health": "healthy", "metadata": {},
            "resource_usage": {"cpu_percent": 1.5, "memory_mb": 20.0, "open_files": 7},
            "current_tasks": [], "tasks_completed": 2, "tasks_failed": 0,
            "registered_at": "2020-01-01T00:00:00.000Z",
            "last_heartbeat_at": "2020-01-01T00:00:00.000Z",
            "lease_until": "2020-01-01T00:00:15.000Z", "stopped_at": null
        }))
        .unwrap();
        a.managed = managed;
        a
    }

    #[test]
    fn show_tells_the_process_side_of_a_managed_agent() {
        let m = Managed {
            runtime: RuntimeKind::Tmux,
            mode: AgentMode::Daemon,
            desired: Desired::Running,
            pid: Some(4242),
            started_at: None,
            starts: 2,
            last_exit: Some("exited with code 3".into()),
            limits_applied: Some("rlimit AS 256 MiB; cgroup cpu.max".into()),
            host: Some("build-1".into()),
            drain: None,
        };
        let text = describe(&agent("echo-1", Some(m)));
        assert!(text.contains("tmux runtime, daemon mode"), "{text}");
        assert!(text.contains("4242"), "{text}");
        assert!(text.contains("build-1"), "{text}");
        assert!(text.contains("exited with code 3"), "{text}");
        assert!(text.contains("rlimit AS 256 MiB"), "{text}");
        assert!(text.contains("7 open files"), "{text}");
        assert!(
            text.contains("flotilla-echo-1 (flotilla agent attach echo-1)"),
            "{text}"
        );
        let text = describe(&agent("ext", None));
        assert!(text.contains("no (a connected agent)"), "{text}");
    }

    #[test]
    fn list_and_show_tell_an_agents_health() {
        let mut a = agent("flaky-1", None);
        a.health.state = flotilla_core::HealthState::Degraded;
        a.health.reason = Some(flotilla_core::HealthReason::ErrorRate);
        a.health.detail = "3 of its last 4 tasks failed".into();
        a.health.consecutive_failures = 2;
        a.health.history.push_back(flotilla_core::HealthTransition {
            at: a.registered_at,
            from: flotilla_core::HealthState::Healthy,
            to: flotilla_core::HealthState::Degraded,
            reason: Some(flotilla_core::HealthReason::ErrorRate),
            detail: "3 of its last 4 tasks failed".into(),
        });
        let table = agent_table(std::slice::from_ref(&a), |_| "default".into());
        assert!(table.contains("HEALTH"), "{table}");
        assert!(table.contains("degraded (error_rate)"), "{table}");
        let text = describe(&a);
        assert!(
            text.contains("degraded (error_rate)") && text.contains("3 of its last 4 tasks failed"),
            "{text}"
        );
        assert!(text.contains("closed; 2 failure(s) in a row"), "{text}");
        assert!(text.contains("healthy -> degraded (error_rate)"), "{text}");
    }

    #[test]
    fn names_resolve_to_exactly_one_agent() {
        let one = agent("echo-1", None);
        assert_eq!(
            pick("echo-1", None, vec![("default".into(), one.clone())]).unwrap(),
            one
        );
        let err = pick("nope", None, vec![]).unwrap_err().to_string();
        assert!(
            err.contains("no agent named \"nope\" in any swarm"),
            "{err}"
        );
        let err = pick("nope", Some("b"), vec![]).unwrap_err().to_string();
        assert!(err.contains("in swarm b"), "{err}");
        let err = pick(
            "echo-1",
            None,
            vec![("a".into(), one.clone()), ("b".into(), one.clone())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("2 agents are named \"echo-1\""), "{err}");
        assert!(err.contains("pass --swarm or the agent's id"), "{err}");
    }

    #[test]
    fn attach_runs_tmux_on_the_agents_session() {
        assert_eq!(tmux_session("echo-1"), "flotilla-echo-1");
        assert_eq!(tmux_session("a.b-c_d"), "flotilla-a_b-c_d");
        assert_eq!(
            tmux_attach_args("flotilla-echo-1", None, false),
            ["attach-session", "-t", "=flotilla-echo-1"]
        );
        assert_eq!(
            tmux_attach_args("flotilla-echo-1", Some("/tmp/s"), true),
            ["-S", "/tmp/s", "attach-session", "-t", "=flotilla-echo-1"]
        );
        assert_eq!(
            tmux_attach_args("flotilla-echo-1", None, true),
            ["switch-client", "-t", "=flotilla-echo-1"]
        );
    }

    #[test]
    fn attach_refuses_process_runtime_and_connected_agents() {
        let m = Managed {
            runtime: RuntimeKind::Process,
            ..Managed::default()
        };
        let err = attach(&agent("wordcount-1", Some(m)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("flotilla agent logs wordcount-1 --follow"),
            "{err}"
        );
        let err = attach(&agent("ext", None)).unwrap_err().to_string();
        assert!(err.contains("connected agent"), "{err}");
    }
}
