//! `flotilla checkpoint create|list|show|delete|rollback`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use flotilla_core::{Checkpoint, CheckpointId};

use crate::cli::{CheckpointCommand, GlobalArgs};
use crate::commands::agent::resolve;
use crate::config;
use crate::output::{self, age, key_values, now, table};

/// Runs a `checkpoint` subcommand.
pub async fn run(global: &GlobalArgs, cmd: CheckpointCommand) -> Result<ExitCode> {
    let client = config::client(global)?;
    match cmd {
        CheckpointCommand::Create {
            agent,
            description,
            find,
            out,
        } => {
            let agent = resolve(&client, &agent, &find).await?;
            let c = client
                .create_checkpoint(agent.id, description.as_deref())
                .await?;
            if out.json {
                output::json(&c)?;
            } else {
                output::line(&format!(
                    "checkpoint {} of agent {}: {}",
                    c.id,
                    agent.name,
                    summary(&c)
                ))?;
            }
        }
        CheckpointCommand::List { agent, find, out } => {
            let agent = resolve(&client, &agent, &find).await?;
            let list = client.list_checkpoints(agent.id).await?;
            if out.json {
                output::json(&list)?;
            } else if list.is_empty() {
                output::line(&format!(
                    "agent {} has no checkpoints; take one with `flotilla checkpoint create {}`",
                    agent.name, agent.name
                ))?;
            } else {
                let now = now();
                let rows = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.to_string(),
                            age(c.created_at, now),
                            c.trigger.as_str().to_owned(),
                            c.description.clone(),
                            summary(c),
                        ]
                    })
                    .collect();
                output::line(&table(
                    &["ID", "TAKEN", "TRIGGER", "DESCRIPTION", "SAVED"],
                    rows,
                ))?;
            }
        }
        CheckpointCommand::Show {
            agent,
            checkpoint,
            find,
            out,
        } => {
            let agent = resolve(&client, &agent, &find).await?;
            let c = client.get_checkpoint(agent.id, parse(&checkpoint)?).await?;
            if out.json {
                output::json(&c)?;
            } else {
                output::line(&describe(&c))?;
            }
        }
        CheckpointCommand::Delete {
            agent,
            checkpoint,
            find,
        } => {
            let agent = resolve(&client, &agent, &find).await?;
            let id = parse(&checkpoint)?;
            client.delete_checkpoint(agent.id, id).await?;
            output::line(&format!("deleted checkpoint {id} of agent {}", agent.name))?;
        }
        CheckpointCommand::Rollback {
            agent,
            checkpoint,
            find,
            out,
        } => {
            let agent = resolve(&client, &agent, &find).await?;
            let id = checkpoint.as_deref().map(parse).transpose()?;
            let after = client.rollback_agent(agent.id, id).await?;
            if out.json {
                output::json(&after)?;
            } else {
                output::line(&format!(
                    "agent {}: rolling back to {}; it restarts when its workspace and state are restored (`flotilla agent show {}`)",
                    after.name,
                    id.map_or("its latest checkpoint".to_owned(), |c| format!(
                        "checkpoint {c}"
                    )),
                    after.name
                ))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse(text: &str) -> Result<CheckpointId> {
    text.trim().parse().with_context(|| {
        format!("{text:?} is not a checkpoint id; see `flotilla checkpoint list AGENT`")
    })
}

/// What a checkpoint saved, in a few words.
pub fn summary(c: &Checkpoint) -> String {
    let mut parts = Vec::new();
    if c.state.is_some() {
        parts.push("state".to_owned());
    }
    parts.push(format!("{} task(s)", c.tasks.len()));
    match (&c.workspace, &c.workspace_error) {
        (Some(w), _) => {
            let v = w.to_value();
            parts.push(match v["kind"].as_str() {
                Some("git") => format!(
                    "workspace at {}",
                    v["reference"].as_str().unwrap_or("a private ref")
                ),
                Some("archive") => format!(
                    "workspace in {}",
                    v["path"].as_str().unwrap_or("an archive")
                ),
                _ => "workspace".to_owned(),
            });
        }
        (None, Some(e)) => parts.push(format!("workspace NOT saved: {e}")),
        (None, None) => {}
    }
    parts.join(", ")
}

fn describe(c: &Checkpoint) -> String {
    let now = now();
    let mut rows = vec![
        ("ID", c.id.to_string()),
        ("Agent", c.agent_id.to_string()),
        (
            "Taken",
            format!("{} ({})", age(c.created_at, now), c.created_at),
        ),
        ("Trigger", c.trigger.as_str().to_owned()),
        ("Description", c.description.clone()),
        ("Saved", summary(c)),
    ];
    if let Some(s) = &c.state {
        rows.push(("State", output::pretty_json_text(s.get())));
    }
    for t in &c.tasks {
        rows.push((
            "Task",
            format!("{} ({}, attempt {})", t.task_id, t.task_type, t.attempt),
        ));
    }
    if let Some(w) = &c.workspace {
        rows.push(("Workspace", output::pretty_json_text(w.get())));
    }
    key_values(&rows)
}
