//! `flotilla pool list|show|delete`.

use std::process::ExitCode;

use anyhow::Result;
use flotilla_core::api::Page;
use flotilla_core::{Agent, AgentStatus, Pool};
use serde::Serialize;

use crate::cli::{GlobalArgs, PoolCommand};
use crate::config;
use crate::duration::format_duration;
use crate::output::{self, key_values, now, table, when};

/// Runs a `pool` subcommand.
pub async fn run(global: &GlobalArgs, cmd: PoolCommand) -> Result<ExitCode> {
    let client = config::client(global)?;
    match cmd {
        PoolCommand::List { swarm, out } => {
            let swarms: Vec<(String, String)> = match &swarm {
                Some(s) => {
                    let v = client.get_swarm(s).await?;
                    vec![(v.swarm.id.to_string(), v.swarm.name)]
                }
                None => client
                    .list_swarms()
                    .await?
                    .into_iter()
                    .map(|v| (v.swarm.id.to_string(), v.swarm.name))
                    .collect(),
            };
            let mut rows = Vec::new();
            for (id, name) in &swarms {
                let (pools, agents) =
                    tokio::try_join!(client.list_pools(id), client.list_agents(id, None, None))?;
                for pool in pools {
                    rows.push(PoolRow {
                        swarm: name.clone(),
                        agents: live_agents(&pool, &agents),
                        pool,
                    });
                }
            }
            if out.json {
                output::json(&Page {
                    items: rows.into_iter().map(|r| r.pool).collect::<Vec<_>>(),
                    next_cursor: None,
                })?;
            } else {
                output::line(&pool_table(&rows))?;
            }
        }
        PoolCommand::Show { pool, swarm, out } => {
            let (pool, agents) = tokio::try_join!(
                client.get_pool(&swarm, &pool),
                client.list_agents(&swarm, None, None)
            )?;
            if out.json {
                output::json(&pool)?;
            } else {
                output::line(&describe(&pool, &swarm, &agents))?;
            }
        }
        PoolCommand::Delete { pool, swarm, force } => {
            client.delete_pool(&swarm, &pool, force).await?;
            output::line(&format!("deleted pool {pool} of swarm {swarm}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A line of `pool list`.
#[derive(Serialize)]
pub struct PoolRow {
    /// The swarm's name.
    pub swarm: String,
    /// The pool.
    pub pool: Pool,
    /// Its agents that are not stopped.
    pub agents: usize,
}

/// How many of `agents` belong to `pool` and are not stopped.
pub fn live_agents(pool: &Pool, agents: &[Agent]) -> usize {
    agents
        .iter()
        .filter(|a| a.agent_type == pool.name && a.status != AgentStatus::Stopped)
        .count()
}

fn json_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The table of `pool list`.
pub fn pool_table(rows: &[PoolRow]) -> String {
    let lines = rows
        .iter()
        .map(|r| {
            let p = &r.pool;
            let (managed, mode, runtime) = match &p.template {
                Some(t) => ("yes", json_name(&t.mode), json_name(&t.runtime)),
                None => ("no", "-".into(), "-".into()),
            };
            vec![
                r.swarm.clone(),
                p.name.clone(),
                managed.to_owned(),
                mode,
                runtime,
                format!("{}/{}", p.min_agents, p.max_agents),
                r.agents.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SWARM", "POOL", "MANAGED", "MODE", "RUNTIME", "MIN/MAX", "AGENTS",
        ],
        lines,
    )
}

fn describe(p: &Pool, swarm: &str, agents: &[Agent]) -> String {
    let now = now();
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    let members: Vec<String> = agents
        .iter()
        .filter(|a| a.agent_type == p.name)
        .map(|a| format!("{} ({})", a.name, a.status.as_str()))
        .collect();
    let mut rows = vec![
        ("Pool", p.name.clone()),
        ("Swarm", swarm.to_owned()),
        ("Agents", format!("{} to {}", p.min_agents, p.max_agents)),
        ("Capabilities", list(&p.capabilities)),
        ("Tasks each", p.max_concurrent_tasks.to_string()),
        ("Members", list(&members)),
        ("Created", when(p.created_at, now)),
        ("Updated", when(p.updated_at, now)),
    ];
    match &p.template {
        None => rows.push(("Managed", "no (it groups connected agents)".into())),
        Some(t) => {
            let mut command = vec![t.command.clone()];
            command.extend(t.args.iter().map(|a| shell_word(a)));
            rows.push((
                "Managed",
                format!(
                    "{} runtime, {} mode",
                    json_name(&t.runtime),
                    json_name(&t.mode)
                ),
            ));
            rows.push(("Command", command.join(" ")));
            rows.push(("Workdir", t.workdir.clone().unwrap_or_else(|| "-".into())));
            if !t.env.is_empty() {
                let env: Vec<String> = t.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                rows.push(("Env", env.join("\n")));
            }
            let l = &t.limits;
            let mut limits = Vec::new();
            if let Some(m) = l.memory_bytes {
                limits.push(format!("memory {}", human_bytes(m)));
            }
            if let Some(c) = l.cpu_cores {
                limits.push(format!("cpu {c} cores"));
            }
            if let Some(d) = l.cpu_time {
                limits.push(format!("cpu time {}", format_duration(d)));
            }
            if let Some(d) = l.task_timeout {
                limits.push(format!("task timeout {}", format_duration(d)));
            }
            rows.push(("Limits", list(&limits)));
            rows.push(("Stop grace", format_duration(t.stop_grace)));
        }
    }
    key_values(&rows)
}

/// An argument as a shell would need it written (quoted when it has to be).
fn shell_word(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,{}@%+".contains(c))
    {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Bytes in the largest binary unit that keeps a whole or one-decimal number: `256MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(managed: bool) -> Pool {
        serde_json::from_value(serde_json::json!({
            "swarm_id": "0190b6e4-0000-7000-8000-000000000002",
            "name": "wordcount", "min_agents": 3, "max_agents": 10, "capabilities": ["text"],
            "max_concurrent_tasks": 1,
            "template": if managed { serde_json::json!({
                "command": "python3", "args": ["agents/wordcount.py", "{{payload.text}} x"],
                "env": {"LANG": "C.UTF-8"}, "workdir": "/srv/examples", "runtime": "tmux",
                "mode": "exec", "limits": {"memory_bytes": 268435456, "task_timeout_ms": 30000},
                "stop_grace_ms": 10000
            }) } else { serde_json::Value::Null },
            "created_at": "2020-01-01T00:00:00.000Z", "updated_at": "2020-01-01T00:00:00.000Z"
        }))
        .unwrap()
    }

    #[test]
    fn pools_are_listed_with_their_counts() {
        let t = pool_table(&[
            PoolRow {
                swarm: "default".into(),
                pool: pool(true),
                agents: 3,
            },
            PoolRow {
                swarm: "default".into(),
                pool: pool(false),
                agents: 0,
            },
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("SWARM"), "{t}");
        assert!(lines[1].contains("yes") && lines[1].contains("exec"), "{t}");
        assert!(
            lines[1].contains("tmux") && lines[1].contains("3/10"),
            "{t}"
        );
        assert!(lines[2].contains("no"), "{t}");
    }

    #[test]
    fn show_describes_the_template() {
        let text = describe(&pool(true), "default", &[]);
        assert!(
            text.contains("python3 agents/wordcount.py '{{payload.text}} x'"),
            "{text}"
        );
        assert!(text.contains("memory 256MiB, task timeout 30s"), "{text}");
        assert!(text.contains("LANG=C.UTF-8"), "{text}");
        let text = describe(&pool(false), "default", &[]);
        assert!(text.contains("groups connected agents"), "{text}");
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(256 << 20), "256MiB");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(100), "100B");
    }
}
