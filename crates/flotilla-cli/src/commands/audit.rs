//! `flotilla token` (create, list, revoke) and `flotilla audit`.

use std::process::ExitCode;

use anyhow::Result;
use flotilla_client::AuditQuery;
use flotilla_core::Timestamp;
use flotilla_core::api::{AuditEntry, TokenSpec, TokenView};

use crate::cli::{AuditArgs, GlobalArgs, TokenCommand};
use crate::config;
use crate::output::{self, age, now, table};

/// Runs `flotilla token …`.
pub async fn token(global: &GlobalArgs, cmd: TokenCommand) -> Result<ExitCode> {
    let client = config::client(global)?;
    match cmd {
        TokenCommand::Create(args) => {
            let spec = TokenSpec {
                role: args.role,
                swarm: args.swarm,
                expires_in_ms: args
                    .expires
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                label: args.label,
            };
            let created = client.create_token(&spec).await?;
            if args.out.json {
                output::json(&created)?;
            } else {
                // The secret alone on stdout, so that `$(flotilla token create …)` captures it;
                // what it is goes to stderr.
                eprintln!(
                    "created {} token {}{}{}; it is shown only now: keep it secret",
                    created.view.role,
                    created.view.id,
                    created
                        .view
                        .swarm_id
                        .map(|s| format!(", limited to swarm {s}"))
                        .unwrap_or_default(),
                    created
                        .view
                        .expires_at
                        .map(|e| format!(", expiring {}", e.to_rfc3339()))
                        .unwrap_or_default(),
                );
                output::line(&created.token)?;
            }
        }
        TokenCommand::List(args) => {
            let tokens = client.list_tokens(args.all).await?;
            if args.out.json {
                output::json(&tokens)?;
            } else if tokens.is_empty() {
                output::line("no tokens")?;
            } else {
                output::line(&token_table(&tokens, now()))?;
            }
        }
        TokenCommand::Revoke(args) => {
            let revoked = client.revoke_token(&args.id).await?;
            output::line(&format!(
                "revoked {} token {} ({})",
                revoked.role,
                revoked.id,
                if revoked.label.is_empty() {
                    "no label"
                } else {
                    &revoked.label
                }
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The table of `flotilla token list`.
pub fn token_table(tokens: &[TokenView], now: Timestamp) -> String {
    let rows = tokens
        .iter()
        .map(|t| {
            let state = match (t.revoked_at, t.expires_at) {
                (Some(r), _) => format!("revoked {}", age(r, now)),
                (None, Some(e)) if e <= now => format!("expired {}", age(e, now)),
                (None, Some(e)) => format!("expires {}", e.to_rfc3339()),
                (None, None) => "active".to_owned(),
            };
            vec![
                t.id.clone(),
                t.role.clone(),
                t.swarm_id
                    .map_or_else(|| "all".to_owned(), |s| s.to_string()),
                state,
                age(t.created_at, now),
                t.label.clone(),
            ]
        })
        .collect();
    table(&["ID", "ROLE", "SWARM", "STATE", "CREATED", "LABEL"], rows)
}

/// Runs `flotilla audit`.
pub async fn run(global: &GlobalArgs, args: AuditArgs) -> Result<ExitCode> {
    let client = config::client(global)?;
    let query = AuditQuery {
        token: args.token_id,
        since: args.since.map(|d| now() - d),
        denied: args.denied,
        limit: Some(usize::from(args.limit)),
        cursor: None,
    };
    let page = client.audit(&query).await?;
    if args.out.json {
        output::json(&page.items)?;
    } else if page.items.is_empty() {
        output::line("no audit entries")?;
    } else {
        output::line(&audit_table(&page.items, now()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The table of `flotilla audit`, newest first.
pub fn audit_table(entries: &[AuditEntry], now: Timestamp) -> String {
    let rows = entries
        .iter()
        .map(|e| {
            let who = match (&e.token_id, &e.role) {
                (Some(t), Some(r)) => format!("{r} {}", short(t)),
                (Some(t), None) => short(t),
                (None, _) => "-".to_owned(),
            };
            vec![
                age(e.at, now),
                who,
                format!("{} {}", e.method, e.path),
                e.status.to_string(),
                e.outcome.clone(),
                e.remote.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    table(&["WHEN", "WHO", "CALL", "STATUS", "OUTCOME", "FROM"], rows)
}

/// The last 8 characters of a token id (UUID v7s differ at the end).
fn short(id: &str) -> String {
    let start = id.len().saturating_sub(8);
    id.get(start..).unwrap_or(id).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_say_who_did_what_and_each_token_state() {
        let now = Timestamp::from_millis(10_000_000);
        let token = |id: &str, revoked: Option<i64>, expires: Option<i64>| TokenView {
            id: id.to_owned(),
            role: "operator".into(),
            swarm_id: None,
            agent_id: None,
            label: "ci".into(),
            created_at: Timestamp::from_millis(1_000),
            expires_at: expires.map(Timestamp::from_millis),
            revoked_at: revoked.map(Timestamp::from_millis),
        };
        let text = token_table(
            &[
                token("a", None, None),
                token("b", Some(9_000_000), None),
                token("c", None, Some(5_000)),
            ],
            now,
        );
        assert!(text.contains("active"), "{text}");
        assert!(text.contains("revoked"), "{text}");
        assert!(text.contains("expired"), "{text}");
        let entry = AuditEntry {
            seq: 1,
            at: Timestamp::from_millis(9_990_000),
            token_id: Some("0190-aaaa-bbbbcccc".into()),
            role: Some("viewer".into()),
            agent_id: None,
            method: "POST".into(),
            path: "/api/v1/swarms".into(),
            action: "POST /api/v1/swarms".into(),
            status: 403,
            outcome: "forbidden".into(),
            remote: Some("127.0.0.1:4000".into()),
            request_id: None,
        };
        let text = audit_table(&[entry], now);
        assert!(text.contains("viewer bbbbcccc"), "{text}");
        assert!(text.contains("POST /api/v1/swarms"), "{text}");
        assert!(text.contains("forbidden"), "{text}");
        assert!(text.contains("127.0.0.1:4000"), "{text}");
    }
}
