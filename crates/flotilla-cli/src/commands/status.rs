//! `flotilla status`: the coordinator, and with `--cluster` every coordinator sharing its store.

use std::process::ExitCode;

use anyhow::Result;
use flotilla_core::api::{ClusterStatus, OrchestratorInfo};

use crate::cli::{GlobalArgs, StatusArgs};
use crate::config;
use crate::output::{self, table};

/// Runs `flotilla status`.
pub async fn run(global: &GlobalArgs, args: StatusArgs) -> Result<ExitCode> {
    let client = config::client(global)?;
    if args.cluster {
        let cluster = client.cluster().await?;
        if args.out.json {
            output::json(&cluster)?;
        } else {
            output::line(&cluster_text(&cluster))?;
        }
        // Exit 1 when a coordinator that held swarms is gone or a swarm has no valid lease:
        // scripts and health checks can act on it.
        let unhealthy = cluster.clustered
            && (cluster.leases.iter().any(|l| !l.valid)
                || cluster.nodes.iter().any(|n| !n.alive && n.swarms > 0));
        return Ok(if unhealthy {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let info = client.orchestrator().await?;
    if args.out.json {
        output::json(&info)?;
    } else {
        output::line(&orchestrator_text(&info))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The coordinator, as `flotilla status` prints it.
fn orchestrator_text(info: &OrchestratorInfo) -> String {
    let secs = info.uptime_ms / 1000;
    format!(
        "flotilla {} up {}h{:02}m{:02}s\nstore:   {}\nbus:     {}\nswarms:  {}\nagents:  {}{}\ntasks:   {} queued, {} running, {} blocked",
        info.version,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        info.store,
        info.bus,
        info.swarms,
        info.agents.total,
        info.agents
            .by_status
            .iter()
            .map(|(status, n)| format!("{n} {}", status.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
        info.tasks.queued,
        info.tasks.running,
        info.tasks.blocked,
    )
}

/// The cluster, as `flotilla status --cluster` prints it.
pub fn cluster_text(c: &ClusterStatus) -> String {
    if !c.clustered {
        let mut out = "a single coordinator (its store is SQLite): no cluster; run several \
                       coordinators with --store postgres://… to have one"
            .to_owned();
        out.push_str(&hosts_text(&c.hosts));
        return out;
    }
    let nodes = table(
        &[
            "COORDINATOR",
            "URL",
            "HEALTH",
            "HEARTBEAT",
            "SWARMS",
            "VERSION",
        ],
        c.nodes
            .iter()
            .map(|n| {
                vec![
                    format!("{}{}", short(&n.id), if n.this { " (this)" } else { "" }),
                    n.url.clone(),
                    if n.alive { "alive" } else { "gone" }.to_owned(),
                    format!("{} ms ago", n.heartbeat_age_ms),
                    n.swarms.to_string(),
                    n.version.clone(),
                ]
            })
            .collect(),
    );
    let leases = table(
        &["SWARM", "OWNER", "EPOCH", "LEASE"],
        c.leases
            .iter()
            .map(|l| {
                vec![
                    l.swarm.clone(),
                    l.owner.as_deref().map(short).unwrap_or("-").to_owned(),
                    l.epoch.to_string(),
                    match (l.valid, l.expires_in_ms) {
                        (true, Some(ms)) => format!("valid, {ms} ms left"),
                        (false, Some(ms)) => format!("lapsed {} ms ago", -ms),
                        _ => "none".to_owned(),
                    },
                ]
            })
            .collect(),
    );
    let mut out = format!(
        "{} coordinator(s), leases of {} ms\n\n{nodes}\n\n{leases}",
        c.nodes.iter().filter(|n| n.alive).count(),
        c.lease_ttl_ms
    );
    if !c.takeovers.is_empty() {
        out.push_str("\n\ntaken over by this coordinator (newest last):");
        for t in &c.takeovers {
            out.push_str(&format!(
                "\n  {} (epoch {}), loaded in {} ms",
                t.swarm, t.epoch, t.load_ms
            ));
        }
    }
    out.push_str(&hosts_text(&c.hosts));
    out
}

/// The hosts connected to the answering coordinator, after a blank line; nothing without any.
fn hosts_text(hosts: &[flotilla_core::host::HostView]) -> String {
    if hosts.is_empty() {
        return String::new();
    }
    let rows = hosts
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.status.as_str().to_owned(),
                format!("{} ms ago", h.last_seen_ms_ago),
                format!(
                    "{:.2}/{:.2} cores, {}/{} MiB",
                    h.allocated.cpu_cores,
                    h.capacity.cpu_cores,
                    h.allocated.memory_mb,
                    h.capacity.memory_mb
                ),
                if h.labels.is_empty() {
                    "-".to_owned()
                } else {
                    h.labels.join(",")
                },
                if h.agents.is_empty() {
                    "-".to_owned()
                } else {
                    h.agents
                        .iter()
                        .map(|a| format!("{} ({})", a.name, a.status.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ]
        })
        .collect();
    format!(
        "\n\n{}",
        table(
            &[
                "HOST",
                "STATUS",
                "LAST POLL",
                "ALLOCATED",
                "LABELS",
                "AGENTS"
            ],
            rows
        )
    )
}

/// The last 8 characters of an id (a node id is a UUIDv7, whose first characters are the time
/// it started and the same for nodes started together).
fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}
