//! `flotilla task submit|list|show|cancel|retry|wait`.

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use flotilla_client::{Client, TaskQuery};
use flotilla_core::api::Page;
use flotilla_core::task::DEFAULT_PRIORITY;
use flotilla_core::{
    Dependency, DependencyKind, DependencySpec, Json, SwarmId, Task, TaskId, TaskSpec, TaskState,
    Timestamp,
};

use crate::cli::{GlobalArgs, SubmitArgs, TaskCommand, TaskListArgs};
use crate::config;
use crate::duration::{format_duration, parse_duration};
use crate::output::{self, age, ellipsize, key_values, now, table, when};

/// Payloads and results longer than this are cut in `task show` (use `--json` for all of it).
const SHOW_JSON_LIMIT: usize = 4096;
/// The shortest interval between two polls of a task, whatever the coordinator answers.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Runs a `task` subcommand.
pub async fn run(global: &GlobalArgs, cmd: TaskCommand) -> Result<ExitCode> {
    let client = config::client(global)?;
    match cmd {
        TaskCommand::Submit(args) => submit(&client, *args).await,
        TaskCommand::List(args) => list(&client, args).await,
        TaskCommand::Show { id, out } => {
            let task = client.get_task(id).await?;
            if out.json {
                output::json(&task)?;
            } else {
                output::line(&describe(&task))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Cancel { id, reason, out } => {
            let task = client.cancel_task(id, reason).await?;
            if out.json {
                output::json(&task)?;
            } else {
                output::line(&format!("task {id} is {}", task.status()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Retry {
            id,
            max_attempts,
            out,
        } => {
            let task = client.retry_task(id, max_attempts).await?;
            if out.json {
                output::json(&task)?;
            } else {
                output::line(&format!(
                    "task {id} is {} again ({} attempts allowed)",
                    task.status(),
                    task.max_attempts
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Wait { id, timeout, out } => {
            wait_and_report(&client, id, timeout, out.json).await
        }
    }
}

async fn submit(client: &Client, args: SubmitArgs) -> Result<ExitCode> {
    let spec = build_spec(&args, &mut std::io::stdin().lock())?;
    let task = client.submit_task(&args.swarm, &spec).await?;
    if args.wait {
        eprintln!("submitted task {}; waiting for it to finish", task.id);
        return wait_and_report(client, task.id, args.wait_timeout, args.out.json).await;
    }
    if args.out.json {
        output::json(&task)?;
    } else {
        output::line(&task.id.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The task spec the `submit` flags describe; `stdin` is read for a payload of `-`.
pub fn build_spec(args: &SubmitArgs, stdin: &mut dyn Read) -> Result<TaskSpec> {
    let payload = match (&args.payload, &args.payload_file) {
        (Some(text), _) if text == "-" => Some(("stdin".to_owned(), read_all(stdin)?)),
        (Some(text), _) => Some(("--payload".to_owned(), text.clone())),
        (None, Some(path)) if path.as_os_str() == "-" => {
            Some(("stdin".to_owned(), read_all(stdin)?))
        }
        (None, Some(path)) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the payload file {}", path.display()))?,
        )),
        (None, None) => None,
    };
    let payload = match payload {
        None => Json::null(),
        Some((from, text)) => Json::parse(text.trim()).map_err(|e| {
            anyhow!(
                "the payload from {from} is not valid JSON: {e} (to send text, quote it: '\"text\"')"
            )
        })?,
    };
    let depends_on = args
        .depends_on
        .iter()
        .map(|d| parse_dependency(d))
        .collect::<Result<Vec<_>>>()?;
    let deadline = args
        .deadline
        .as_deref()
        .map(|d| parse_deadline(d, now()))
        .transpose()?;
    Ok(TaskSpec {
        task_type: args
            .task_type
            .clone()
            .unwrap_or_else(|| TaskSpec::default().task_type),
        payload,
        priority: args.priority.unwrap_or(DEFAULT_PRIORITY),
        required_capabilities: args.require.clone(),
        depends_on,
        affinity_key: args.affinity_key.clone(),
        idempotency_key: args.idempotency_key.clone(),
        max_attempts: args.max_attempts,
        timeout: args.timeout,
        deadline,
        ordered: args.ordered,
        ..TaskSpec::default()
    })
}

fn read_all(r: &mut dyn Read) -> Result<String> {
    let mut text = String::new();
    r.read_to_string(&mut text)
        .context("cannot read the payload from stdin")?;
    Ok(text)
}

/// `ID` or `ID:success` / `ID:completion`.
pub fn parse_dependency(text: &str) -> Result<DependencySpec> {
    let (id, kind) = match text.split_once(':') {
        None => (text, None),
        Some((id, "success")) => (id, Some(DependencyKind::Success)),
        Some((id, "completion")) => (id, Some(DependencyKind::Completion)),
        Some((_, other)) => bail!(
            "--depends-on {text:?}: unknown kind {other:?}; write ID, ID:success or ID:completion"
        ),
    };
    let task_id: TaskId = id
        .trim()
        .parse()
        .map_err(|e| anyhow!("--depends-on {text:?}: {e}"))?;
    Ok(match kind {
        None => DependencySpec::Id(task_id),
        Some(kind) => DependencySpec::Full(Dependency { task_id, kind }),
    })
}

/// An RFC 3339 instant, or a duration from `now`.
pub fn parse_deadline(text: &str, now: Timestamp) -> Result<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(text.trim()) {
        return Ok(t);
    }
    if let Ok(d) = parse_duration(text) {
        return Ok(now + d);
    }
    bail!(
        "--deadline {text:?} is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor a duration \
         from now (1h)"
    )
}

async fn list(client: &Client, args: TaskListArgs) -> Result<ExitCode> {
    let mut query = TaskQuery {
        swarm: args.swarm.clone(),
        status: args.status,
        task_type: args.task_type.clone(),
        agent: args.agent,
        limit: Some(if args.all { 1000 } else { args.limit }),
        cursor: None,
    };
    let mut items = Vec::new();
    let next_cursor = loop {
        let page = client.list_tasks(&query).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) if args.all && query.cursor.as_ref() != Some(&next) => {
                query.cursor = Some(next)
            }
            next => break if args.all { None } else { next },
        }
    };
    if args.out.json {
        output::json(&Page { items, next_cursor })?;
        return Ok(ExitCode::SUCCESS);
    }
    let names: Option<HashMap<SwarmId, String>> = match args.swarm {
        Some(_) => None,
        None => Some(
            client
                .list_swarms()
                .await?
                .into_iter()
                .map(|s| (s.swarm.id, s.swarm.name))
                .collect(),
        ),
    };
    output::line(&task_table(&items, names.as_ref()))?;
    if next_cursor.is_some() {
        eprintln!("(more tasks match: pass --all, or a --limit up to 1000)");
    }
    Ok(ExitCode::SUCCESS)
}

/// The table of `task list`; with `swarm_names`, a SWARM column.
pub fn task_table(tasks: &[Task], swarm_names: Option<&HashMap<SwarmId, String>>) -> String {
    let now = now();
    let mut header = vec!["ID"];
    if swarm_names.is_some() {
        header.push("SWARM");
    }
    header.extend([
        "TYPE", "STATUS", "PRI", "TRIES", "AGENT", "CREATED", "UPDATED",
    ]);
    let rows = tasks
        .iter()
        .map(|t| {
            let mut row = vec![t.id.to_string()];
            if let Some(names) = swarm_names {
                row.push(
                    names
                        .get(&t.swarm_id)
                        .cloned()
                        .unwrap_or_else(|| t.swarm_id.to_string()),
                );
            }
            row.extend([
                ellipsize(&t.task_type, 24),
                t.status().to_string(),
                t.priority.to_string(),
                format!("{}/{}", t.attempts, t.max_attempts),
                t.state
                    .agent_id()
                    .map(|a| a.to_string()[..8].to_owned())
                    .unwrap_or_else(|| "-".into()),
                age(t.created_at, now),
                age(t.updated_at, now),
            ]);
            row
        })
        .collect();
    table(&header, rows)
}

/// Waits until the task finishes or `timeout` passes, then prints it: exit 0 if it completed,
/// 1 if it did not, 2 on timeout.
pub async fn wait_and_report(
    client: &Client,
    id: TaskId,
    timeout: Duration,
    json: bool,
) -> Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    let task = loop {
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(started);
        let task = match client
            .wait_task(id, remaining.min(Duration::from_secs(60)))
            .await
        {
            Ok(t) => t,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                eprintln!("warning: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1).min(remaining)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if task.status().is_terminal() {
            break task;
        }
        if Instant::now() >= deadline {
            if json {
                output::json(&task)?;
            }
            eprintln!(
                "error: timed out after {} waiting for task {id} (it is {})",
                format_duration(timeout),
                task.status()
            );
            return Ok(ExitCode::from(2));
        }
        let elapsed = started.elapsed();
        if elapsed < MIN_POLL_INTERVAL {
            tokio::time::sleep(MIN_POLL_INTERVAL - elapsed).await;
        }
    };
    if json {
        output::json(&task)?;
    }
    match &task.state {
        TaskState::Completed { result, .. } => {
            if !json {
                output::line(&output::pretty_json_text(result.get()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskState::Failed { error, .. } | TaskState::Dead { error, .. } => {
            eprintln!("error: task {id} {}: {}", task.status(), error.message);
            Ok(ExitCode::FAILURE)
        }
        TaskState::Cancelled { reason, .. } => {
            match reason {
                Some(r) => eprintln!("error: task {id} was cancelled: {r}"),
                None => eprintln!("error: task {id} was cancelled"),
            }
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::FAILURE),
    }
}

fn json_block(json: &Json) -> String {
    let pretty = output::pretty_json_text(json.get());
    if pretty.len() > SHOW_JSON_LIMIT {
        format!(
            "{}\n… ({} bytes in all; use --json to see it whole)",
            ellipsize(&pretty, SHOW_JSON_LIMIT),
            json.len()
        )
    } else {
        pretty
    }
}

fn json_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The human form of `task show`.
pub fn describe(t: &Task) -> String {
    let now = now();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut rows: Vec<(&str, String)> = vec![
        ("ID", t.id.to_string()),
        ("Swarm", t.swarm_id.to_string()),
        ("Type", t.task_type.clone()),
        ("Status", t.status().to_string()),
        ("Priority", t.priority.to_string()),
        ("Attempts", format!("{} of {}", t.attempts, t.max_attempts)),
        ("Timeout", format_duration(t.timeout)),
    ];
    if !t.required_capabilities.is_empty() {
        rows.push(("Requires", t.required_capabilities.join(", ")));
    }
    if !t.depends_on.is_empty() {
        let deps: Vec<String> = t
            .depends_on
            .iter()
            .map(|d| format!("{} ({})", d.task_id, json_name(&d.kind)))
            .collect();
        rows.push(("Depends on", deps.join("\n")));
    }
    if let Some(p) = t.parent_task_id {
        rows.push(("Parent", p.to_string()));
    }
    if t.affinity_key.is_some() {
        rows.push(("Affinity key", opt(&t.affinity_key)));
    }
    if t.ordered {
        rows.push((
            "Ordered",
            "yes, one at a time in submission order".to_owned(),
        ));
    }
    if let Some(by) = t.delegated_by {
        rows.push(("Delegated by", by.to_string()));
    }
    if let Some(d) = &t.delegation {
        rows.push((
            "Delegated to",
            format!(
                "{} subtask(s), {} finished",
                d.subtasks.len(),
                d.outcomes.len()
            ),
        ));
    }
    if t.idempotency_key.is_some() {
        rows.push(("Idempotency key", opt(&t.idempotency_key)));
    }
    if let Some(d) = t.deadline {
        rows.push(("Deadline", when(d, now)));
    }
    rows.push(("Created", when(t.created_at, now)));
    rows.push(("Updated", when(t.updated_at, now)));
    match &t.state {
        TaskState::Blocked => {}
        TaskState::Queued {
            queued_at,
            run_after,
        } => {
            rows.push(("Queued", when(*queued_at, now)));
            if let Some(r) = run_after {
                rows.push(("Runs after", when(*r, now)));
            }
        }
        TaskState::Assigned {
            agent_id,
            assigned_at,
        } => {
            rows.push(("Agent", agent_id.to_string()));
            rows.push(("Assigned", when(*assigned_at, now)));
        }
        TaskState::Running {
            agent_id,
            started_at,
            timeout_at,
        } => {
            rows.push(("Agent", agent_id.to_string()));
            rows.push(("Started", when(*started_at, now)));
            rows.push(("Times out", when(*timeout_at, now)));
        }
        TaskState::Completed {
            agent_id,
            completed_at,
            ..
        } => {
            rows.push(("Agent", agent_id.to_string()));
            rows.push(("Completed", when(*completed_at, now)));
        }
        TaskState::Failed {
            error,
            completed_at,
        }
        | TaskState::Dead {
            error,
            completed_at,
        } => {
            rows.push(("Finished", when(*completed_at, now)));
            rows.push((
                "Error",
                format!("{}: {}", json_name(&error.kind), error.message),
            ));
        }
        TaskState::Cancelled {
            reason,
            completed_at,
        } => {
            rows.push(("Cancelled", when(*completed_at, now)));
            if reason.is_some() {
                rows.push(("Reason", opt(reason)));
            }
        }
    }
    if let Some(p) = &t.progress {
        let mut text = p.percent.map(|pc| format!("{pc:.0}%")).unwrap_or_default();
        if let Some(m) = &p.message {
            if !text.is_empty() {
                text.push_str(" — ");
            }
            text.push_str(m);
        }
        rows.push(("Progress", text));
    }
    if let Some(e) = &t.last_error
        && !matches!(t.state, TaskState::Failed { .. } | TaskState::Dead { .. })
    {
        rows.push((
            "Last error",
            format!("{}: {}", json_name(&e.kind), e.message),
        ));
    }
    rows.push(("Payload", json_block(&t.payload)));
    if let TaskState::Completed { result, .. } = &t.state {
        rows.push(("Result", json_block(result)));
    }
    key_values(&rows)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn submit_args(extra: &[&str]) -> SubmitArgs {
        let args = ["flotilla", "task", "submit"].iter().chain(extra.iter());
        match Cli::try_parse_from(args).unwrap().command {
            Command::Task(TaskCommand::Submit(s)) => *s,
            other => panic!("{other:?}"),
        }
    }

    const ID: &str = "0190b6e4-0000-7000-8000-000000000001";

    #[test]
    fn builds_a_spec_from_the_flags() {
        let args = submit_args(&[
            "--type",
            "build",
            "--payload",
            r#"{"n": 3}"#,
            "--priority",
            "8",
            "--require",
            "rust",
            "--depends-on",
            ID,
            "--timeout",
            "45s",
            "--max-attempts",
            "2",
            "--idempotency-key",
            "k1",
            "--affinity-key",
            "repo-a",
            "--deadline",
            "2030-01-01T00:00:00Z",
        ]);
        let spec = build_spec(&args, &mut std::io::empty()).unwrap();
        assert_eq!(spec.task_type, "build");
        assert_eq!(spec.payload.to_value(), serde_json::json!({"n": 3}));
        assert_eq!(spec.priority, 8);
        assert_eq!(spec.required_capabilities, vec!["rust"]);
        assert_eq!(
            spec.depends_on,
            vec![DependencySpec::Id(ID.parse().unwrap())]
        );
        assert_eq!(spec.timeout, Some(Duration::from_secs(45)));
        assert_eq!(spec.max_attempts, Some(2));
        assert_eq!(spec.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(spec.affinity_key.as_deref(), Some("repo-a"));
        assert_eq!(
            spec.deadline,
            Timestamp::parse_rfc3339("2030-01-01T00:00:00Z")
        );
        // The body is what the API documents.
        let body = serde_json::to_value(&spec).unwrap();
        assert_eq!(body["type"], "build");
        assert_eq!(body["timeout_ms"], 45_000);
    }

    #[test]
    fn defaults_to_the_api_defaults() {
        let spec = build_spec(&submit_args(&[]), &mut std::io::empty()).unwrap();
        assert_eq!(spec, TaskSpec::default());
    }

    #[test]
    fn reads_the_payload_from_stdin_or_a_file() {
        let spec = build_spec(
            &submit_args(&["--payload", "-"]),
            &mut "[1, 2]\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(spec.payload.get(), "[1, 2]");
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("p.json");
        std::fs::write(&path, "{\"x\": true}\n").unwrap();
        let args = submit_args(&["--payload-file", path.to_str().unwrap()]);
        let spec = build_spec(&args, &mut std::io::empty()).unwrap();
        assert_eq!(spec.payload.to_value(), serde_json::json!({"x": true}));
        let err = build_spec(
            &submit_args(&["--payload-file", "/nonexistent/p.json"]),
            &mut std::io::empty(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/p.json"));
    }

    #[test]
    fn refuses_a_payload_that_is_not_json() {
        let err = build_spec(&submit_args(&["--payload", "hello"]), &mut std::io::empty())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(err.contains("quote it"), "{err}");
    }

    #[test]
    fn parses_dependencies() {
        let id: TaskId = ID.parse().unwrap();
        assert_eq!(parse_dependency(ID).unwrap(), DependencySpec::Id(id));
        assert_eq!(
            parse_dependency(&format!("{ID}:success")).unwrap(),
            DependencySpec::Full(Dependency {
                task_id: id,
                kind: DependencyKind::Success
            })
        );
        assert_eq!(
            parse_dependency(&format!("{ID}:completion")).unwrap(),
            DependencySpec::Full(Dependency {
                task_id: id,
                kind: DependencyKind::Completion
            })
        );
        assert!(parse_dependency(&format!("{ID}:maybe")).is_err());
        assert!(
            parse_dependency("build")
                .unwrap_err()
                .to_string()
                .contains("UUID")
        );
    }

    #[test]
    fn parses_deadlines() {
        let now = Timestamp::from_millis(1_000_000);
        assert_eq!(
            parse_deadline("1h", now).unwrap(),
            Timestamp::from_millis(1_000_000 + 3_600_000)
        );
        assert_eq!(
            parse_deadline("1970-01-01T00:00:01Z", now).unwrap(),
            Timestamp::from_millis(1000)
        );
        assert!(parse_deadline("tomorrow", now).is_err());
    }

    fn sample_task(state: serde_json::Value) -> Task {
        let mut v = serde_json::json!({
            "id": ID, "swarm_id": "0190b6e4-0000-7000-8000-000000000002", "parent_task_id": null,
            "type": "build", "payload": {"n": 1}, "priority": 5, "required_capabilities": ["rust"],
            "depends_on": [], "affinity_key": null, "idempotency_key": null, "attempts": 1,
            "max_attempts": 3, "backoff": {"initial_ms": 1000, "max_ms": 2000}, "timeout_ms": 30000,
            "deadline": null, "last_error": null, "progress": {"percent": 50.0, "message": "half"},
            "created_at": "2020-01-01T00:00:00.000Z", "updated_at": "2020-01-01T00:00:00.000Z"
        });
        for (k, val) in state.as_object().unwrap() {
            v[k] = val.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn shows_a_task_and_lists_tasks() {
        let t = sample_task(serde_json::json!({
            "status": "running", "agent_id": "0190b6e4-0000-7000-8000-00000000000a",
            "started_at": "2020-01-01T00:00:00.000Z", "timeout_at": "2020-01-01T00:00:30.000Z"
        }));
        let text = describe(&t);
        assert!(text.contains("Status:"), "{text}");
        assert!(text.contains("running"), "{text}");
        assert!(text.contains("50% — half"), "{text}");
        assert!(text.contains("\"n\": 1"), "{text}");
        let table = task_table(&[t], None);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID") && !lines[0].contains("SWARM"));
        assert!(
            lines[1].starts_with(ID) && lines[1].contains("0190b6e4  "),
            "{table}"
        );
        assert!(lines[1].contains("1/3"), "{table}");
    }
}
