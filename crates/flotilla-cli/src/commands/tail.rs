//! `flotilla msg tail`: a swarm's messages (and, with `--events`, its events) as they happen,
//! one line each, until Ctrl-C.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use flotilla_client::{Client, StreamItem};
use flotilla_core::{AgentId, Event, Message, Timestamp};
use serde::Serialize;

use crate::commands::agent::resolve;
use crate::commands::msg::{in_swarm, party, sender};
use crate::commands::names::NameBook;
use crate::output::{self, json_summary};

/// How much of a body a line shows.
const BODY_CHARS: usize = 80;

/// Follows the stream of `swarm` and prints it.
pub async fn run(
    client: &Client,
    swarm: &str,
    agent: Option<&str>,
    topic: Option<&str>,
    events: bool,
    json: bool,
) -> Result<ExitCode> {
    let agent = match agent {
        Some(a) => Some(resolve(client, a, &in_swarm(swarm)).await?),
        None => None,
    };
    let mut names = NameBook::new(Some(swarm));
    if !json {
        names.refresh(client).await?;
    }
    let mut stream = client
        .follow_messages(swarm, agent.as_ref().map(|a| a.id), topic, events)
        .await?;
    let mut what = format!("following the messages of swarm {swarm}");
    if let Some(a) = &agent {
        what.push_str(&format!(" to or from {}", a.name));
    }
    if let Some(t) = topic {
        what.push_str(&format!(" on topics matching {t}"));
    }
    if events {
        what.push_str(", and its events");
    }
    eprintln!("{what} (Ctrl-C to stop)");
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let item = tokio::select! {
            _ = &mut ctrl_c => return Ok(ExitCode::SUCCESS),
            item = stream.next() => item?,
        };
        let Some(item) = item else {
            bail!(
                "the coordinator ended the stream (it is shutting down?); run the command again to follow on"
            )
        };
        if json {
            output::line(&serde_json::to_string(&JsonLine::from(&item))?)?;
            continue;
        }
        let text = match &item {
            StreamItem::Message(m) => {
                names
                    .learn(client, [m.from, m.to].into_iter().flatten())
                    .await;
                message_line(m, &names.names)
            }
            StreamItem::Event(e) => {
                names.learn(client, e.agent_id).await;
                event_line(e, &names.names)
            }
            StreamItem::Gap => gap_line(),
        };
        output::line(&text)?;
    }
}

/// One line of `msg tail --json`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum JsonLine<'a> {
    Message { message: &'a Message },
    Event { event: &'a Event },
    Gap,
}

impl<'a> From<&'a StreamItem> for JsonLine<'a> {
    fn from(item: &'a StreamItem) -> Self {
        match item {
            StreamItem::Message(message) => JsonLine::Message { message },
            StreamItem::Event(event) => JsonLine::Event { event },
            StreamItem::Gap => JsonLine::Gap,
        }
    }
}

/// `12:03:04.120  high      request    planner → coder-1  reviews  {"diff":"…"}`.
pub fn message_line(m: &Message, names: &HashMap<AgentId, String>) -> String {
    format!(
        "{}  {:<8}  {:<9}  {} → {}  {}  {}",
        clock(m.created_at),
        m.priority.as_str(),
        m.kind.as_str(),
        sender(m, names),
        party(m.to, names),
        m.topic.as_deref().unwrap_or("-"),
        json_summary(m.body.get(), BODY_CHARS)
    )
}

/// `12:03:04.120  event     task_completed  coder-1  task 0190…  detail`.
pub fn event_line(e: &Event, names: &HashMap<AgentId, String>) -> String {
    let mut text = format!("{}  event     {}", clock(e.at), e.kind.as_str());
    if let Some(a) = e.agent_id {
        text.push_str(&format!("  {}", party(Some(a), names)));
    }
    if let Some(t) = e.task_id {
        text.push_str(&format!("  task {t}"));
    }
    if !e.detail.is_empty() {
        text.push_str(&format!("  {}", output::ellipsize(&e.detail, BODY_CHARS)));
    }
    text
}

fn gap_line() -> String {
    format!(
        "{}  -- some messages may have been missed (the coordinator's bus dropped some); \
         `flotilla msg list` and `flotilla msg dead` show what was sent",
        clock(output::now())
    )
}

/// The time of day, local, to the millisecond.
fn clock(at: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(at.as_millis())
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_else(|| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: serde_json::Value, topic: Option<&str>) -> Message {
        serde_json::from_value(serde_json::json!({
            "id": "0190b6e4-0000-7000-8000-00000000000a",
            "swarm_id": "0190b6e4-0000-7000-8000-000000000002",
            "kind": "event", "from": "0190b6e4-0000-7000-8000-000000000004",
            "to": "0190b6e4-0000-7000-8000-000000000003", "topic": topic,
            "priority": "high", "body": body,
            "created_at": "2026-01-01T12:00:00.250Z", "status": "pending",
            "deliveries": 0, "max_deliveries": 5, "seq": 1
        }))
        .unwrap()
    }

    #[test]
    fn a_message_is_one_line_with_names_and_a_short_body() {
        let m = message(
            serde_json::json!({"text": "x".repeat(200)}),
            Some("builds.done"),
        );
        let mut names = HashMap::new();
        names.insert(m.from.unwrap(), "planner".to_owned());
        names.insert(m.to.unwrap(), "coder-1".to_owned());
        let line = message_line(&m, &names);
        assert!(!line.contains('\n'));
        assert!(line.starts_with(&clock(m.created_at)), "{line}");
        assert!(
            line.contains("high      event      planner → coder-1  builds.done  {\"text\":\"xxx"),
            "{line}"
        );
        let body = line.split("builds.done  ").nth(1).unwrap();
        assert_eq!(body.chars().count(), BODY_CHARS, "{line}");
        assert!(body.ends_with('…'), "{line}");
        // No names known, no topic, from the operator.
        let mut m = message(serde_json::json!("hi"), None);
        m.from = None;
        let line = message_line(&m, &HashMap::new());
        assert!(
            line.contains("operator → 0190b6e4-0000-7000-8000-000000000003  -  \"hi\""),
            "{line}"
        );
        // The timeout answer to an operator's request comes from the coordinator.
        m.kind = flotilla_core::MessageKind::Response;
        m.to = None;
        let line = message_line(&m, &HashMap::new());
        assert!(line.contains("response   coordinator → operator"), "{line}");
    }

    #[test]
    fn events_and_gaps_are_lines_too() {
        let e: Event = serde_json::from_value(serde_json::json!({
            "seq": 3, "at": "2026-01-01T12:00:00.000Z", "type": "token_passed",
            "swarm_id": "0190b6e4-0000-7000-8000-000000000002",
            "agent_id": "0190b6e4-0000-7000-8000-000000000003", "detail": "from a to b"
        }))
        .unwrap();
        let mut names = HashMap::new();
        names.insert(e.agent_id.unwrap(), "coder-1".to_owned());
        let line = event_line(&e, &names);
        assert!(
            line.ends_with("event     token_passed  coder-1  from a to b"),
            "{line}"
        );
        assert!(gap_line().contains("may have been missed"));
    }

    #[test]
    fn json_lines_say_what_they_hold() {
        let m = message(serde_json::json!(1), None);
        let line = serde_json::to_value(JsonLine::from(&StreamItem::Message(m))).unwrap();
        assert_eq!(line["type"], "message");
        assert_eq!(line["message"]["body"], 1);
        let line = serde_json::to_string(&JsonLine::from(&StreamItem::Gap)).unwrap();
        assert_eq!(line, r#"{"type":"gap"}"#);
    }
}
