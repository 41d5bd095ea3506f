//! Tokens and the audit log from the command line, against a real `flotilla serve` process:
//! `flotilla token create/list/revoke`, a swarm-limited operator, a viewer refused, revocation
//! at once, `flotilla audit`, one-line errors, and no token in anything the coordinator wrote.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::free_port;
use parking_lot::Mutex;
use serde_json::Value;

const FLOTILLA: &str = env!("CARGO_BIN_EXE_flotilla");

struct Coordinator {
    child: Child,
    url: String,
    admin: String,
    output: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Coordinator {
    async fn start() -> Coordinator {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(FLOTILLA)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("FLOTILLA_DATA_DIR", dir.path())
            // As much as it would ever log.
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flotilla serve starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = output.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    sink.lock().push(line);
                }
            });
        }
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{url}/healthz")).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "not up: {:#?}",
                output.lock()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let admin = std::fs::read_to_string(dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Coordinator {
            child,
            url,
            admin,
            output,
            _dir: dir,
        }
    }

    fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(FLOTILLA)
            .args(args)
            .env("FLOTILLA_URL", &self.url)
            .env("FLOTILLA_TOKEN", token)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("flotilla runs")
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(&self.admin, args)
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let written = c.output.lock().join("\n");
    assert!(!written.is_empty());
    for secret in [&operator, &viewer, &c.admin] {
        assert!(
            !written.contains(secret.as_str()),
            "a token in the coordinator's output"
        );
    }
}
