//! `flotilla events`: the event log, the newest page or followed live.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Result;
use flotilla_client::{EventQuery, StreamItem};
use flotilla_core::{AgentId, Event};

use crate::cli::{EventsArgs, FindAgent, GlobalArgs};
use crate::commands::agent;
use crate::commands::names::{NameBook, agent_or_dash};
use crate::config;
use crate::output::{self, age, now, table};

/// Runs `flotilla events`.
pub async fn run(global: &GlobalArgs, args: EventsArgs) -> Result<ExitCode> {
    let client = config::client(global)?;
    let agent = match &args.agent {
        Some(a) => {
            let find = FindAgent {
                swarm: args.swarm.clone(),
            };
            Some(agent::resolve(&client, a, &find).await?.id)
        }
        None => None,
    };
    let mut names = NameBook::new(args.swarm.as_deref());
    if !args.out.json {
        names.refresh(&client).await?;
    }
    if !args.follow {
        // The newest `limit`: read the log's tail page by page (it answers oldest first).
        let mut query = EventQuery {
            swarm: args.swarm.clone(),
            kind: args.kind,
            agent,
            task: args.task,
            after: args.after,
            limit: Some(1000),
            cursor: None,
            latest: None,
        };
        let mut all: Vec<Event> = Vec::new();
        loop {
            let page = client.list_events(&query).await?;
            all.extend(page.items);
            if all.len() > args.limit as usize {
                all.drain(..all.len() - args.limit as usize);
            }
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        if args.out.json {
            output::json(&all)?;
        } else if all.is_empty() {
            output::line("no events")?;
        } else {
            output::line(&event_table(&all, &names.names, now()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let query = EventQuery {
        swarm: args.swarm.clone(),
        kind: args.kind,
        agent,
        task: args.task,
        after: args.after,
        limit: None,
        cursor: None,
        latest: None,
    };
    let mut stream = client.follow_events(&query).await?;
    while let Some(item) = stream.next().await? {
        let StreamItem::Event(e) = item else { continue };
        if args.out.json {
            output::line(&serde_json::to_string(&e)?)?;
            continue;
        }
        names.learn(&client, e.agent_id).await;
        output::line(&event_line(&e, &names.names))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The table of `flotilla events`, oldest first.
pub fn event_table(
    events: &[Event],
    names: &HashMap<AgentId, String>,
    now: flotilla_core::Timestamp,
) -> String {
    let rows = events
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                age(e.at, now),
                e.kind.as_str().to_owned(),
                agent_or_dash(e.agent_id, names),
                e.task_id.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                e.detail.clone(),
            ]
        })
        .collect();
    table(&["SEQ", "WHEN", "TYPE", "AGENT", "TASK", "WHAT"], rows)
}

/// One followed event as a line: seq, time of day, type, agent, task, detail.
pub fn event_line(e: &Event, names: &HashMap<AgentId, String>) -> String {
    let at = e.at.to_rfc3339();
    let time = at.get(11..23).unwrap_or(&at);
    let task = e.task_id.map_or_else(String::new, |t| format!(" task {t}"));
    let detail = if e.detail.is_empty() {
        String::new()
    } else {
        format!("  {}", e.detail)
    };
    format!(
        "{:>8}  {time}  {:<22} {}{task}{detail}",
        e.seq,
        e.kind.as_str(),
        agent_or_dash(e.agent_id, names)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::{EventKind, SwarmId, TaskId, Timestamp};

    #[test]
    fn events_print_as_a_table_and_as_lines() {
        let agent = AgentId(uuid::Uuid::now_v7());
        let task = TaskId(uuid::Uuid::now_v7());
        let e = Event {
            seq: 42,
            at: Timestamp::from_millis(1_767_225_600_123),
            kind: EventKind::LeaderElection,
            swarm_id: SwarmId(uuid::Uuid::now_v7()),
            agent_id: Some(agent),
            task_id: Some(task),
            detail: "r1 elected leader (r0 is unhealthy)".to_owned(),
        };
        let names = HashMap::from([(agent, "r1".to_owned())]);
        let text = event_table(
            std::slice::from_ref(&e),
            &names,
            Timestamp::from_millis(1_767_225_660_000),
        );
        for want in [
            "42",
            "leader_election",
            "r1",
            "r0 is unhealthy",
            &task.to_string(),
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let line = event_line(&e, &names);
        assert!(line.contains("00:00:00.123"), "{line}");
        assert!(
            line.contains("leader_election") && line.contains("r1 elected"),
            "{line}"
        );
        let unknown = event_line(
            &Event {
                agent_id: None,
                task_id: None,
                ..e
            },
            &HashMap::new(),
        );
        assert!(unknown.contains(" - "), "{unknown}");
    }

    #[test]
    fn the_command_line_parses() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "flotilla",
            "events",
            "--swarm",
            "s",
            "--type",
            "task_completed",
            "-f",
            "--after",
            "7",
        ])
        .unwrap();
        let crate::cli::Command::Events(args) = cli.command else {
            panic!("events");
        };
        assert!(args.follow);
        assert_eq!(args.after, Some(7));
        assert_eq!(args.kind, Some(EventKind::TaskCompleted));
        assert!(crate::cli::Cli::try_parse_from(["flotilla", "events", "--type", "nope"]).is_err());
    }
}
