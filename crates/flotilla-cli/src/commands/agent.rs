//! `flotilla agent list|show|remove`.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Result;
use flotilla_core::api::Page;
use flotilla_core::{Agent, SwarmId};
use serde::Serialize;

use crate::cli::{AgentCommand, GlobalArgs};
use crate::config;
use crate::output::{self, age, age_opt, key_values, now, table, when};

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
        AgentCommand::Show { id, out } => {
            let agent = client.get_agent(id).await?;
            if out.json {
                output::json(&agent)?;
            } else {
                output::line(&describe(&agent))?;
            }
        }
        AgentCommand::Remove { id } => {
            client.remove_agent(id).await?;
            output::line(&format!(
                "removed agent {id}; its tasks go back to the queue"
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
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
    let mut rows = vec![
        ("ID", a.id.to_string()),
        ("Name", a.name.clone()),
        ("Swarm", a.swarm_id.to_string()),
        ("Type", a.agent_type.clone()),
        ("Role", json_name(&a.role)),
        ("Status", a.status.as_str().to_owned()),
        ("Health", json_name(&a.reported_health)),
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
    let metadata = a.metadata.to_value();
    if !(metadata.is_null() || metadata.as_object().is_some_and(|m| m.is_empty())) {
        rows.push(("Metadata", output::pretty_json_text(a.metadata.get())));
    }
    key_values(&rows)
}
