//! Tokens and the audit log from the command line, against a real `flotilla serve` process:
//! `flotilla token create/list/revoke`, a swarm-limited operator, a viewer refused, revocation
//! at once, `flotilla audit`, one-line errors, and no token in anything the coordinator wrote.

mod common;

use std::process::Output;

use common::ServeProcess;
use serde_json::Value;

struct Coordinator(ServeProcess);

impl Coordinator {
    async fn start() -> Coordinator {
        // As much as it would ever log.
        Coordinator(
            ServeProcess::start(|cmd| {
                cmd.env("RUST_LOG", "debug");
            })
            .await,
        )
    }

    fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        self.0.cli_as(token, args)
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.0.cli_as(&self.0.token, args)
    }

    /// Everything the coordinator wrote so far.
    fn written(&self) -> String {
        let mut all = self.0.stdout.lock().clone();
        all.extend(self.0.stderr.lock().iter().cloned());
        all.join("\n")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// Failed with exit code 1 and one line on stderr containing `needle`.
fn refused(o: Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle:?} in {err}");
}

#[tokio::test]
async fn tokens_and_the_audit_log_from_the_command_line() {
    let c = Coordinator::start().await;
    ok(c.cli(&["swarm", "create", "ci"]));

    // An operator limited to swarm ci: the secret alone on stdout.
    let out = c.cli(&[
        "token",
        "create",
        "--role",
        "operator",
        "--swarm",
        "ci",
        "--expires",
        "1h",
        "--label",
        "ci-bot",
    ]);
    let operator = ok(out.clone()).trim().to_owned();
    assert!(
        operator.starts_with("flt_") && !operator.contains(' '),
        "{operator}"
    );
    assert!(
        stderr(&out).contains("created operator token"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("limited to swarm"),
        "{}",
        stderr(&out)
    );

    let id = ok(c.cli_as(
        &operator,
        &["task", "submit", "--swarm", "ci", "--type", "build"],
    ));
    assert!(!id.trim().is_empty());
    let swarms = ok(c.cli_as(&operator, &["swarm", "list"]));
    assert!(
        swarms.contains("ci") && !swarms.contains("default"),
        "{swarms}"
    );
    refused(
        c.cli_as(&operator, &["task", "submit", "--swarm", "default"]),
        "not found",
    );

    // A viewer reads but may not change anything.
    let viewer = ok(c.cli(&["token", "create", "--role", "viewer"]))
        .trim()
        .to_owned();
    ok(c.cli_as(&viewer, &["swarm", "list"]));
    refused(
        c.cli_as(&viewer, &["swarm", "create", "nope"]),
        "admin role",
    );

    // Listed without secrets; revoked at once.
    let list: Value = serde_json::from_str(&ok(c.cli(&["token", "list", "--json"]))).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "ci-bot")
        .expect("the operator's token listed")
        .clone();
    assert_eq!(entry["role"], "operator");
    assert!(entry["expires_at"].is_string());
    let table = ok(c.cli(&["token", "list"]));
    assert!(
        table.contains("ci-bot") && table.contains("operator"),
        "{table}"
    );
    assert!(
        !table.contains(&operator) && !table.contains(&viewer),
        "{table}"
    );
    let token_id = entry["id"].as_str().unwrap();
    let out = ok(c.cli(&["token", "revoke", token_id]));
    assert!(out.contains("revoked operator token"), "{out}");
    refused(c.cli_as(&operator, &["swarm", "list"]), "revoked");
    refused(c.cli(&["token", "revoke", token_id]), "not found");

    // Bad input: one line, exit 2 from the parser.
    let bad = c.cli(&["token", "create", "--role", "root"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let bad = c.cli(&["token", "create", "--role", "viewer", "--expires", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    // The audit log: the refused creation, by whom; the revocation.
    let denied = ok(c.cli(&["audit", "--denied"]));
    assert!(denied.contains("POST /api/v1/swarms"), "{denied}");
    assert!(
        denied.contains("forbidden") && denied.contains("viewer"),
        "{denied}"
    );
    assert!(denied.contains("127.0.0.1"), "{denied}");
    let all: Value =
        serde_json::from_str(&ok(c.cli(&["audit", "--json", "--since", "1h"]))).unwrap();
    let entries = all.as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "DELETE /api/v1/tokens/{id}" && e["status"] == 200),
        "{all}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "POST /api/v1/swarms/{swarm}/tasks"
                && e["token_id"] == token_id
                && e["status"] == 201),
        "{all}"
    );
    refused(c.cli_as(&viewer, &["audit"]), "admin role");

    // No secret anywhere the coordinator wrote, at debug level.
    let written = c.written();
    assert!(!written.is_empty());
    for secret in [&operator, &viewer, &c.0.token] {
        assert!(
            !written.contains(secret.as_str()),
            "a token in the coordinator's output"
        );
    }
}
