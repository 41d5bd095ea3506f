//! `flotilla msg send|publish|broadcast|list|dead|retry|subscribe` (and `tail`, in
//! [`super::tail`]): the message bus from the command line, acting as the operator.

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use flotilla_client::{Client, ClientError, MessageQuery};
use flotilla_core::{AgentId, Json, Message, MessageSpec, MessageStatus, Sent};

use crate::cli::{FindAgent, GlobalArgs, MsgBody, MsgCommand, MsgSendArgs};
use crate::commands::agent::resolve;
use crate::commands::names::agent_names;
use crate::config;
use crate::duration::format_duration;
use crate::output::{self, age, age_opt, ellipsize, json_summary, now, table};

/// Runs a `msg` subcommand.
pub async fn run(global: &GlobalArgs, cmd: MsgCommand) -> Result<ExitCode> {
    let client = config::client(global)?;
    match cmd {
        MsgCommand::Send(args) => send(&client, *args).await?,
        MsgCommand::Publish {
            swarm,
            topic,
            message,
            out,
        } => {
            let spec = message_spec(&message, &mut std::io::stdin().lock())?;
            let sent = client.publish(&swarm, &topic, &spec).await?;
            if out.json {
                output::json(&sent)?;
            } else {
                output::line(&format!(
                    "published to topic {topic} in swarm {swarm}: {}",
                    reach(
                        &sent,
                        "recipient",
                        "no agent subscribes to a matching pattern"
                    )
                ))?;
            }
        }
        MsgCommand::Broadcast {
            swarm,
            message,
            out,
        } => {
            let spec = message_spec(&message, &mut std::io::stdin().lock())?;
            let sent = client.broadcast(&swarm, &spec).await?;
            if out.json {
                output::json(&sent)?;
            } else {
                output::line(&format!(
                    "broadcast to swarm {swarm}: {}",
                    reach(&sent, "agent", "it has no agent")
                ))?;
            }
        }
        MsgCommand::Tail {
            swarm,
            agent,
            topic,
            events,
            out,
        } => {
            return super::tail::run(
                &client,
                &swarm,
                agent.as_deref(),
                topic.as_deref(),
                events,
                out.json,
            )
            .await;
        }
        MsgCommand::List {
            agent,
            direction,
            status,
            limit,
            find,
            out,
        } => {
            let agent = resolve(&client, &agent, &find).await?;
            let query = MessageQuery {
                direction: Some(direction.into()),
                status,
                limit: Some(limit),
                ..MessageQuery::default()
            };
            let page = client.message_history(agent.id, &query).await?;
            if out.json {
                output::json(&page)?;
            } else if page.items.is_empty() {
                let status = status.map(|s| format!("{} ", s.as_str()));
                output::line(&format!(
                    "no {}messages {} {}",
                    status.unwrap_or_default(),
                    direction.describe(),
                    agent.name
                ))?;
            } else {
                let names = agent_names(&client, Some(&agent.swarm_id.to_string())).await?;
                output::line(&message_table(&page.items, &names))?;
                if page.next_cursor.is_some() {
                    eprintln!(
                        "(more messages: pass a --limit up to 1000, or use --json and the API's cursor)"
                    );
                }
            }
        }
        MsgCommand::Dead { swarm, limit, out } => {
            let query = MessageQuery {
                status: Some(MessageStatus::Dead),
                limit: Some(limit),
                ..MessageQuery::default()
            };
            let page = client.swarm_messages(&swarm, &query).await?;
            if out.json {
                output::json(&page)?;
            } else if page.items.is_empty() {
                output::line(&format!("no dead letters in swarm {swarm}"))?;
            } else {
                let names = agent_names(&client, Some(&swarm)).await?;
                output::line(&dead_table(&page.items, &names))?;
                eprintln!("(put one back in its inbox with `flotilla msg retry ID`)");
            }
        }
        MsgCommand::Retry { id, out } => {
            let message = client.retry_message(id).await?;
            if out.json {
                output::json(&message)?;
            } else {
                let to = match message.to {
                    Some(to) => match client.get_agent(to).await {
                        Ok(a) => a.name,
                        Err(_) => to.to_string(),
                    },
                    None => "the operator".to_owned(),
                };
                output::line(&format!(
                    "message {id} is back in {to}'s inbox ({})",
                    message.status.as_str()
                ))?;
            }
        }
        MsgCommand::Subscribe {
            agent,
            topics,
            clear,
            find,
            out,
        } => {
            let agent = resolve(&client, &agent, &find).await?;
            let topics = if topics.is_empty() && !clear {
                client.subscriptions(agent.id).await?
            } else {
                client.subscribe(agent.id, &topics).await?
            };
            if out.json {
                output::json(&flotilla_core::api::Subscriptions { topics })?;
            } else if topics.is_empty() {
                output::line(&format!("{} subscribes to no topic", agent.name))?;
            } else {
                output::line(&format!(
                    "{} subscribes to: {}",
                    agent.name,
                    topics.join(", ")
                ))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn send(client: &Client, args: MsgSendArgs) -> Result<()> {
    let agent = resolve(client, &args.agent, &args.find).await?;
    let mut spec = message_spec(&args.message, &mut std::io::stdin().lock())?;
    spec.topic = args.topic.clone();
    if !args.request {
        let message = client.send_message(agent.id, &spec).await?;
        if args.out.json {
            return output::json(&message);
        }
        return output::line(&format!(
            "sent message {} to {} ({})",
            message.id,
            agent.name,
            message.priority.as_str()
        ));
    }
    spec.timeout = args.timeout;
    let wait = format_duration(
        args.timeout
            .unwrap_or(flotilla_core::message::DEFAULT_REQUEST_TIMEOUT),
    );
    eprintln!(
        "sent a request to {}; waiting up to {wait} for its response",
        agent.name
    );
    let exchange = match client.request(agent.id, &spec).await {
        Ok(e) => e,
        Err(e) if timed_out(&e) => bail!(
            "no response from {} within {wait}; give it longer with --timeout, or check it is \
             running (`flotilla agent show {}`)",
            agent.name,
            agent.name
        ),
        Err(e) => return Err(e.into()),
    };
    if args.out.json {
        output::json(&exchange)
    } else {
        output::line(&output::pretty_json_text(exchange.response.body.get()))
    }
}

/// Whether a request went unanswered: the coordinator said so (504), or its answer did not
/// come within the request's timeout and margin.
fn timed_out(e: &ClientError) -> bool {
    e.is_request_timeout() || matches!(e, ClientError::Http { timeout: true, .. })
}

/// The spec the `--body`, `--priority` and `--ttl` flags describe; `stdin` is read for a body
/// of `-`.
pub fn message_spec(m: &MsgBody, stdin: &mut dyn Read) -> Result<MessageSpec> {
    let body = if m.body == "-" {
        let mut text = String::new();
        stdin
            .read_to_string(&mut text)
            .context("cannot read the body from stdin")?;
        parse_body(text.trim_end_matches(['\n', '\r']))?
    } else {
        parse_body(&m.body)?
    };
    Ok(MessageSpec {
        body,
        priority: m.priority,
        ttl: m.ttl,
        ..MessageSpec::default()
    })
}

/// A body as given: JSON as it is, any other text as a JSON string. Text that looks like a
/// JSON object or array but is not valid JSON is refused rather than sent as a string.
pub fn parse_body(text: &str) -> Result<Json> {
    let trimmed = text.trim();
    match Json::parse(trimmed) {
        Ok(json) => Ok(json),
        Err(e) if trimmed.starts_with('{') || trimmed.starts_with('[') => bail!(
            "the body looks like JSON but is not valid: {e} (to send it as text, quote it as a \
             JSON string: '\"…\"')"
        ),
        Err(_) => Ok(Json::from_value(text)),
    }
}

/// `3 recipients, 1 unreachable by the topology`, or `why_none` when nobody got it.
fn reach(sent: &Sent, noun: &str, why_none: &str) -> String {
    let n = sent.messages.len();
    let mut text = match n {
        0 if sent.unreachable == 0 => format!("no {noun}s ({why_none})"),
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    };
    if sent.unreachable > 0 {
        text.push_str(&format!(
            ", {} unreachable by the topology",
            sent.unreachable
        ));
    }
    text
}

/// An agent's name, its id when unknown (removed), `operator` for none.
pub fn party(id: Option<AgentId>, names: &HashMap<AgentId, String>) -> String {
    match id {
        None => "operator".to_owned(),
        Some(id) => names.get(&id).cloned().unwrap_or_else(|| id.to_string()),
    }
}

/// Who sent a message: an agent, the operator, or (a response sent by nobody: the timeout
/// answer to a request) the coordinator.
pub fn sender(m: &Message, names: &HashMap<AgentId, String>) -> String {
    if m.from.is_none() && m.kind == flotilla_core::MessageKind::Response {
        return "coordinator".to_owned();
    }
    party(m.from, names)
}

/// The table of `msg list`.
pub fn message_table(messages: &[Message], names: &HashMap<AgentId, String>) -> String {
    let now = now();
    let rows = messages
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                age(m.created_at, now),
                m.kind.as_str().to_owned(),
                m.priority.as_str().to_owned(),
                sender(m, names),
                party(m.to, names),
                m.topic.clone().unwrap_or_else(|| "-".into()),
                m.status.as_str().to_owned(),
                json_summary(m.body.get(), 40),
            ]
        })
        .collect();
    table(
        &[
            "ID", "SENT", "KIND", "PRIORITY", "FROM", "TO", "TOPIC", "STATUS", "BODY",
        ],
        rows,
    )
}

/// The table of `msg dead`.
pub fn dead_table(messages: &[Message], names: &HashMap<AgentId, String>) -> String {
    let now = now();
    let rows = messages
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                age_opt(m.finished_at, now),
                party(m.to, names),
                sender(m, names),
                m.kind.as_str().to_owned(),
                m.topic.clone().unwrap_or_else(|| "-".into()),
                format!("{}/{}", m.deliveries, m.max_deliveries),
                ellipsize(m.dead_reason.as_deref().unwrap_or("-"), 60),
                json_summary(m.body.get(), 30),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "DIED",
            "TO",
            "FROM",
            "KIND",
            "TOPIC",
            "DELIVERIES",
            "REASON",
            "BODY",
        ],
        rows,
    )
}

/// Where `msg` commands look an agent's name up: its swarm.
pub fn in_swarm(swarm: &str) -> FindAgent {
    FindAgent {
        swarm: Some(swarm.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn body(text: &str) -> MsgBody {
        MsgBody {
            body: text.to_owned(),
            priority: flotilla_core::MessagePriority::High,
            ttl: Some(Duration::from_secs(30)),
        }
    }

    #[test]
    fn json_bodies_go_as_they_are_and_text_as_a_string() {
        assert_eq!(
            parse_body(r#"{"a": [1, 2]}"#).unwrap().get(),
            r#"{"a": [1, 2]}"#
        );
        assert_eq!(parse_body(" 42 ").unwrap().get(), "42");
        assert_eq!(parse_body("true").unwrap().get(), "true");
        assert_eq!(parse_body(r#""quoted""#).unwrap().get(), r#""quoted""#);
        assert_eq!(
            parse_body("hello agents").unwrap().get(),
            r#""hello agents""#
        );
        assert_eq!(
            parse_body("say \"hi\"\n").unwrap().to_value(),
            serde_json::json!("say \"hi\"\n")
        );
        assert_eq!(parse_body("").unwrap().get(), r#""""#);
        let err = parse_body(r#"{"a": 1"#).unwrap_err().to_string();
        assert!(err.contains("looks like JSON but is not valid"), "{err}");
        assert!(parse_body("[1, 2,]").is_err());
    }

    #[test]
    fn specs_carry_the_flags_and_read_stdin_for_a_dash() {
        let spec = message_spec(&body("{\"n\": 1}"), &mut std::io::empty()).unwrap();
        assert_eq!(spec.body.to_value(), serde_json::json!({"n": 1}));
        assert_eq!(spec.priority, flotilla_core::MessagePriority::High);
        assert_eq!(spec.ttl, Some(Duration::from_secs(30)));
        assert_eq!(spec.kind, None);
        let spec = message_spec(&body("-"), &mut "plain words\n".as_bytes()).unwrap();
        assert_eq!(spec.body.to_value(), serde_json::json!("plain words"));
        let spec = message_spec(&body("-"), &mut "[1, 2]\n".as_bytes()).unwrap();
        assert_eq!(spec.body.to_value(), serde_json::json!([1, 2]));
    }

    #[test]
    fn reach_says_who_got_it_and_who_the_topology_left_out() {
        let sent = |n: usize, unreachable: u32| -> Sent {
            let m: Message = serde_json::from_value(sample_message()).unwrap();
            Sent {
                messages: vec![m; n],
                unreachable,
            }
        };
        assert_eq!(reach(&sent(3, 0), "recipient", "-"), "3 recipients");
        assert_eq!(
            reach(&sent(1, 2), "agent", "-"),
            "1 agent, 2 unreachable by the topology"
        );
        assert_eq!(
            reach(&sent(0, 0), "recipient", "nobody subscribes"),
            "no recipients (nobody subscribes)"
        );
        assert_eq!(
            reach(&sent(0, 1), "agent", "-"),
            "0 agents, 1 unreachable by the topology"
        );
    }

    fn sample_message() -> serde_json::Value {
        serde_json::json!({
            "id": "0190b6e4-0000-7000-8000-00000000000a",
            "swarm_id": "0190b6e4-0000-7000-8000-000000000002",
            "kind": "message", "from": null, "to": "0190b6e4-0000-7000-8000-000000000003",
            "priority": "normal", "body": {"text": "hello"},
            "created_at": "2026-01-01T12:00:00.000Z", "status": "dead",
            "finished_at": "2026-01-01T12:01:00.000Z", "dead_reason": "not acknowledged after 5 deliveries",
            "deliveries": 5, "max_deliveries": 5, "seq": 1
        })
    }

    #[test]
    fn tables_name_the_agents() {
        let m: Message = serde_json::from_value(sample_message()).unwrap();
        let mut names = HashMap::new();
        names.insert(m.to.unwrap(), "worker-1".to_owned());
        let t = message_table(std::slice::from_ref(&m), &names);
        let row = t.lines().nth(1).unwrap();
        assert!(row.contains("operator") && row.contains("worker-1"), "{t}");
        assert!(row.contains(r#"{"text":"hello"}"#), "{t}");
        let t = dead_table(std::slice::from_ref(&m), &HashMap::new());
        assert!(t.lines().next().unwrap().contains("REASON"), "{t}");
        let row = t.lines().nth(1).unwrap();
        assert!(row.contains("not acknowledged after 5 deliveries"), "{t}");
        assert!(row.contains("5/5"), "{t}");
        // An agent no longer known shows as its id.
        assert!(row.contains("0190b6e4-0000-7000-8000-000000000003"), "{t}");
    }
}
