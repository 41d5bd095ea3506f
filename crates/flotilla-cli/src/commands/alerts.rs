//! `flotilla alerts`: the newest alerts, as a table.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Result;
use flotilla_core::{AgentId, Event, EventKind};

use crate::cli::{AlertsArgs, GlobalArgs};
use crate::commands::names::{agent_names, agent_or_dash};
use crate::config;
use crate::output::{self, age, now, table};

/// Runs `flotilla alerts`.
pub async fn run(global: &GlobalArgs, args: AlertsArgs) -> Result<ExitCode> {
    let client = config::client(global)?;
    let levels: Vec<&str> = args.level.iter().map(String::as_str).collect();
    let page = client
        .alerts(args.swarm.as_deref(), &levels, Some(args.limit))
        .await?;
    if args.out.json {
        output::json(&page.items)?;
        return Ok(ExitCode::SUCCESS);
    }
    if page.items.is_empty() {
        output::line("no alerts")?;
        return Ok(ExitCode::SUCCESS);
    }
    let names = agent_names(&client, None).await?;
    output::line(&alert_table(&page.items, &names, now()))?;
    Ok(ExitCode::SUCCESS)
}

/// The level an alert event stands for.
pub fn level(kind: EventKind) -> &'static str {
    match kind {
        EventKind::AlertWarning => "warning",
        EventKind::AlertCritical => "critical",
        EventKind::AlertRecovery => "recovery",
        _ => "-",
    }
}

/// The table of `flotilla alerts`, newest last.
pub fn alert_table(
    alerts: &[Event],
    names: &HashMap<AgentId, String>,
    now: flotilla_core::Timestamp,
) -> String {
    let rows = alerts
        .iter()
        .map(|e| {
            vec![
                age(e.at, now),
                level(e.kind).to_owned(),
                agent_or_dash(e.agent_id, names),
                e.detail.clone(),
            ]
        })
        .collect();
    table(&["WHEN", "LEVEL", "AGENT", "WHAT"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::{SwarmId, Timestamp};

    #[test]
    fn the_table_names_levels_and_agents() {
        let agent = AgentId(uuid::Uuid::now_v7());
        let gone = AgentId(uuid::Uuid::now_v7());
        let event = |kind, agent_id, detail: &str| Event {
            seq: 1,
            at: Timestamp::from_millis(1_000),
            kind,
            swarm_id: SwarmId(uuid::Uuid::now_v7()),
            agent_id,
            task_id: None,
            detail: detail.to_owned(),
        };
        let names = HashMap::from([(agent, "coder-1".to_owned())]);
        let text = alert_table(
            &[
                event(
                    EventKind::AlertWarning,
                    Some(agent),
                    "agent coder-1 is degraded",
                ),
                event(EventKind::AlertCritical, Some(gone), "agent x is unhealthy"),
            ],
            &names,
            Timestamp::from_millis(61_000),
        );
        assert!(text.contains("warning"), "{text}");
        assert!(text.contains("coder-1"), "{text}");
        assert!(text.contains("critical"), "{text}");
        assert!(text.contains(&gone.to_string()), "{text}");
        assert!(
            text.contains("1m ago") || text.contains("60s ago"),
            "{text}"
        );
    }
}
