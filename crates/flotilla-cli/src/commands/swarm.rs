//! `flotilla swarm create|list|show|update|delete|scale` (and `topology`, in
//! [`super::topology`]).

use std::process::ExitCode;

use anyhow::{Result, bail};
use flotilla_core::api::{Page, PoolView, ScaleAnswer, ScaleRequest, SwarmHealth, SwarmView};
use flotilla_core::{SwarmConfig, SwarmSpec, SwarmUpdate};
use serde::Serialize;

use crate::cli::{GlobalArgs, SwarmCommand, SwarmSettings};
use crate::config;
use crate::output::{self, age, key_values, millis, now, table, when};

/// Runs a `swarm` subcommand.
pub async fn run(global: &GlobalArgs, cmd: SwarmCommand) -> Result<ExitCode> {
    let client = config::client(global)?;
    match cmd {
        SwarmCommand::Create {
            name,
            settings,
            out,
        } => {
            let spec = SwarmSpec {
                name,
                description: settings.description.clone().unwrap_or_default(),
                topology: settings.topology.map(Into::into).unwrap_or_default(),
                config: apply_settings(SwarmConfig::default(), &settings),
            };
            let view = client.create_swarm(&spec).await?;
            if out.json {
                output::json(&view)?;
            } else {
                output::line(&format!(
                    "created swarm {} ({})",
                    view.swarm.name, view.swarm.id
                ))?;
            }
        }
        SwarmCommand::List { out } => {
            let swarms = client.list_swarms().await?;
            if out.json {
                output::json(&Page {
                    items: swarms,
                    next_cursor: None,
                })?;
            } else {
                output::line(&swarm_table(&swarms))?;
            }
        }
        SwarmCommand::Show { swarm, out } => {
            let (view, health) =
                tokio::try_join!(client.get_swarm(&swarm), client.swarm_health(&swarm))?;
            if out.json {
                output::json(&SwarmWithHealth {
                    swarm: &view,
                    health: &health,
                })?;
            } else {
                output::line(&describe(&view, &health))?;
            }
        }
        SwarmCommand::Update {
            swarm,
            rename,
            settings,
            out,
        } => {
            let config_changes = settings.min_agents.is_some()
                || settings.max_agents.is_some()
                || settings.heartbeat_interval.is_some()
                || settings.heartbeat_miss_limit.is_some()
                || settings.task_timeout.is_some()
                || settings.max_attempts.is_some()
                || settings.strategy.is_some()
                || settings.prefetch.is_some()
                || settings.affinity_wait.is_some();
            if rename.is_none()
                && settings.description.is_none()
                && settings.topology.is_none()
                && !config_changes
            {
                bail!(
                    "nothing to change: pass --rename, --description, --topology, --min-agents, \
                     --max-agents, --heartbeat-interval, --heartbeat-miss-limit, --task-timeout, \
                     --max-attempts, --strategy, --prefetch or --affinity-wait"
                );
            }
            // The API replaces the whole configuration: start from the current one.
            let config = if config_changes {
                let current = client.get_swarm(&swarm).await?;
                Some(apply_settings(current.swarm.config, &settings))
            } else {
                None
            };
            let update = SwarmUpdate {
                name: rename,
                description: settings.description.clone(),
                topology: settings.topology.map(Into::into),
                config,
            };
            let view = client.update_swarm(&swarm, &update).await?;
            if out.json {
                output::json(&view)?;
            } else {
                output::line(&format!(
                    "updated swarm {} ({})",
                    view.swarm.name, view.swarm.id
                ))?;
            }
        }
        SwarmCommand::Scale {
            swarm,
            pool,
            agents,
            by,
            out,
        } => {
            let request = ScaleRequest {
                pool,
                agents,
                delta: by,
            };
            let answer = client.scale_pool(&swarm, &request).await?;
            if out.json {
                output::json(&answer)?;
            } else {
                output::line(&describe_scale(&swarm, &answer))?;
            }
        }
        SwarmCommand::Topology {
            swarm,
            set,
            config,
            dot,
            out,
        } => {
            let args = super::topology::TopologyArgs {
                swarm,
                set,
                config,
                dot,
                json: out.json,
            };
            super::topology::run(&client, args).await?;
        }
        SwarmCommand::Delete { swarm, force } => {
            client.delete_swarm(&swarm, force).await?;
            output::line(&format!("deleted swarm {swarm}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `swarm show --json`: the swarm's fields, with its health under `health`.
#[derive(Serialize)]
struct SwarmWithHealth<'a> {
    #[serde(flatten)]
    swarm: &'a SwarmView,
    health: &'a SwarmHealth,
}

/// The configuration with the given settings applied.
pub fn apply_settings(mut config: SwarmConfig, s: &SwarmSettings) -> SwarmConfig {
    if let Some(v) = s.min_agents {
        config.min_agents = v;
    }
    if let Some(v) = s.max_agents {
        config.max_agents = v;
    }
    if let Some(v) = s.heartbeat_interval {
        config.heartbeat_interval = v;
    }
    if let Some(v) = s.heartbeat_miss_limit {
        config.heartbeat_miss_limit = v;
    }
    if let Some(v) = s.task_timeout {
        config.task_timeout = v;
    }
    if let Some(v) = s.max_attempts {
        config.task_max_attempts = v;
    }
    if let Some(v) = s.strategy {
        config.strategy = v;
    }
    if let Some(v) = s.prefetch {
        config.prefetch = v;
    }
    if let Some(v) = s.affinity_wait {
        config.affinity_wait = v;
    }
    config
}

fn json_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The table of `swarm list`.
pub fn swarm_table(swarms: &[SwarmView]) -> String {
    let now = now();
    let rows = swarms
        .iter()
        .map(|v| {
            vec![
                v.swarm.name.clone(),
                v.swarm.status.as_str().to_owned(),
                json_name(&v.swarm.topology),
                v.agent_count.to_string(),
                v.queue_depth.to_string(),
                age(v.swarm.created_at, now),
            ]
        })
        .collect();
    table(
        &["NAME", "STATUS", "TOPOLOGY", "AGENTS", "QUEUED", "CREATED"],
        rows,
    )
}

/// What `swarm scale` prints.
fn describe_scale(swarm: &str, a: &ScaleAnswer) -> String {
    let mut text = if a.from == a.to {
        format!("pool {swarm}/{} stays at {} agents", a.pool.name, a.to)
    } else {
        format!(
            "scaled pool {swarm}/{}: {} -> {} agents",
            a.pool.name, a.from, a.to
        )
    };
    if !a.draining.is_empty() {
        text.push_str(&format!(
            "; draining {} (they finish their tasks, then stop)",
            a.draining.join(", ")
        ));
    }
    if !a.kept.is_empty() {
        text.push_str(&format!("; kept {}", a.kept.join(", ")));
    }
    text
}

/// The pools table of `swarm show`.
pub fn pool_table(pools: &[PoolView]) -> String {
    let rows = pools
        .iter()
        .map(|p| {
            let s = &p.size;
            vec![
                p.name.clone(),
                if p.managed {
                    format!("{}/{} ({}–{})", s.current, s.desired, s.min, s.max)
                } else {
                    format!("{} (connected)", s.current)
                },
                s.draining.to_string(),
                format!("{:.0}%", p.utilization * 100.0),
                format!("{} ({:.1}/agent)", p.queue.ready, p.queue.per_agent),
                if p.recent_outcomes == 0 {
                    "-".to_owned()
                } else {
                    format!("{:.0}% of {}", p.error_rate * 100.0, p.recent_outcomes)
                },
                p.wait_p95_ms.map(millis).unwrap_or_else(|| "-".to_owned()),
                if p.scaling_policies == 0 {
                    "-".to_owned()
                } else {
                    p.scaling_policies.to_string()
                },
            ]
        })
        .collect();
    table(
        &[
            "POOL", "AGENTS", "DRAINING", "UTIL", "QUEUE", "ERRORS", "WAIT P95", "POLICIES",
        ],
        rows,
    )
}

fn describe(v: &SwarmView, h: &SwarmHealth) -> String {
    let text = describe_swarm(v, h);
    if v.pools.is_empty() {
        return text;
    }
    format!(
        "{text}\n\nPools (agents: current/desired (min–max)):\n{}",
        pool_table(&v.pools)
    )
}

fn describe_swarm(v: &SwarmView, h: &SwarmHealth) -> String {
    let now = now();
    let s = &v.swarm;
    let c = &s.config;
    let by_status = if h.agents.by_status.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = h
            .agents
            .by_status
            .iter()
            .map(|(st, n)| format!("{} {n}", st.as_str()))
            .collect();
        format!(" ({})", parts.join(", "))
    };
    let t = &h.tasks;
    key_values(&[
        ("Name", s.name.clone()),
        ("ID", s.id.to_string()),
        ("Description", s.description.clone()),
        ("Status", s.status.as_str().to_owned()),
        ("Topology", json_name(&s.topology)),
        (
            "Leader",
            s.leader_agent_id
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("Created", when(s.created_at, now)),
        ("Updated", when(s.updated_at, now)),
        (
            "Config",
            format!(
                "agents {}–{}, heartbeat every {} (lease lapses after {} misses), \
                 task timeout {}, {} attempts",
                c.min_agents,
                c.max_agents,
                output::millis(c.heartbeat_interval.as_millis() as u64),
                c.heartbeat_miss_limit,
                millis(c.task_timeout.as_millis() as u64),
                c.task_max_attempts
            ),
        ),
        (
            "Placement",
            match (c.strategy, c.prefetch) {
                (flotilla_core::Strategy::Affinity, p) => format!(
                    "affinity (a keyed task waits {} for its agent), prefetch {p}",
                    millis(c.affinity_wait.as_millis() as u64)
                ),
                (s, p) => format!("{}, prefetch {p}", s.as_str()),
            },
        ),
        ("Agents", format!("{}{by_status}", h.agents.total)),
        (
            "Tasks",
            format!(
                "{} queued, {} delayed, {} blocked, {} assigned, {} running",
                t.queued, t.delayed, t.blocked, t.assigned, t.running
            ),
        ),
        (
            "Oldest queued",
            match (h.oldest_queued_at, h.oldest_queued_age_ms) {
                (Some(at), _) => when(at, now),
                (None, Some(ms)) => format!("{} ago", millis(ms)),
                (None, None) => "-".into(),
            },
        ),
    ])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn settings_change_only_what_was_given() {
        let s = SwarmSettings {
            max_agents: Some(7),
            task_timeout: Some(Duration::from_secs(60)),
            ..SwarmSettings::default()
        };
        let c = apply_settings(SwarmConfig::default(), &s);
        assert_eq!(c.max_agents, 7);
        assert_eq!(c.task_timeout, Duration::from_secs(60));
        assert_eq!(c.min_agents, SwarmConfig::default().min_agents);
        assert_eq!(
            c.heartbeat_interval,
            SwarmConfig::default().heartbeat_interval
        );
    }

    #[test]
    fn lists_swarms_in_a_table() {
        let v: SwarmView = serde_json::from_value(serde_json::json!({
            "id": "0190b6e4-0000-7000-8000-000000000001", "name": "default", "description": "",
            "topology": "star", "config": {}, "status": "active", "leader_agent_id": null,
            "created_at": "2020-01-01T00:00:00.000Z", "updated_at": "2020-01-01T00:00:00.000Z",
            "agent_count": 3, "queue_depth": 12
        }))
        .unwrap();
        let t = swarm_table(&[v]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].starts_with("default"));
        assert!(lines[1].contains("active") && lines[1].contains("star"));
        assert!(
            lines[1].contains("12") && lines[1].ends_with("d ago"),
            "{t}"
        );
    }
}
