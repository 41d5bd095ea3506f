//! `flotilla run FILE.jsonl`: submits every task of a JSON Lines file, follows them with a
//! progress bar, and prints a summary.
//!
//! A file of at most 10,000 tasks goes as one batch, so `ref`s resolve across the whole file.
//! A larger file (or any file with `--batch`) goes in batches; a dependency on a `ref` of an
//! earlier batch is rewritten to that task's id, and one on a `ref` of a later batch is refused
//! before anything is submitted.

use std::collections::HashMap;
use std::ops::Range;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flotilla_client::Client;
use flotilla_core::{Dependency, DependencySpec, TaskId, TaskSpec, TaskState, TaskStatus};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::{GlobalArgs, RunArgs};
use crate::config;
use crate::duration::format_duration;
use crate::output;

/// The most tasks the API takes in one batch (and ids in one lookup).
pub const MAX_BATCH: usize = 10_000;
/// The batch size of a file over [`MAX_BATCH`] tasks when `--batch` is not given.
pub const DEFAULT_BATCH: usize = 1000;
/// How often unfinished tasks are looked up.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How many failures the summary shows.
const SHOWN_FAILURES: usize = 5;

/// One task spec of the file, with its line number (1-based).
#[derive(Debug, Clone)]
pub struct Line {
    /// The line number.
    pub number: usize,
    /// The spec.
    pub spec: TaskSpec,
}

/// Runs `flotilla run`.
pub async fn run(global: &GlobalArgs, args: RunArgs) -> Result<ExitCode> {
    let name = args.file.display().to_string();
    let text =
        std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {name}"))?;
    let lines = parse_jsonl(&name, &text)?;
    let batches = plan_batches(&name, &lines, args.batch.map(|b| b as usize))?;
    let client = config::client(global)?;

    let started = Instant::now();
    let bar = progress_bar(lines.len() as u64);
    bar.set_message("submitting");
    let ids = submit(&client, &args.swarm, &lines, &batches, &bar).await?;
    bar.set_position(0);

    let deadline = args.timeout.map(|t| started + t);
    let summary = follow(&client, &ids, deadline, &bar).await?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let report = Summary::new(
        &name,
        &args.swarm,
        ids.len(),
        summary,
        elapsed,
        args.timeout,
    );
    if args.out.json {
        output::json(&report)?;
    } else {
        output::line(&report.human())?;
    }
    Ok(if report.outcome.timed_out {
        ExitCode::from(2)
    } else if report.outcome.completed as usize == report.total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Parses the file: each non-empty line is one task spec. Errors name `file:line`.
pub fn parse_jsonl(file: &str, text: &str) -> Result<Vec<Line>> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let spec: TaskSpec = serde_json::from_str(trimmed).map_err(|e| {
            let msg = e.to_string().replace(" at line 1 column ", " at column ");
            anyhow::anyhow!("{file}:{}: {msg}", i + 1)
        })?;
        lines.push(Line {
            number: i + 1,
            spec,
        });
    }
    if lines.is_empty() {
        bail!("{file} has no tasks (one JSON task spec per line)");
    }
    Ok(lines)
}

/// Splits the file into batches and checks its `ref`s: defined once, and each dependency on a
/// `ref` names a task of its own batch or of an earlier one.
pub fn plan_batches(file: &str, lines: &[Line], batch: Option<usize>) -> Result<Vec<Range<usize>>> {
    let size = match batch {
        Some(b) => b.clamp(1, MAX_BATCH),
        None if lines.len() <= MAX_BATCH => lines.len().max(1),
        None => DEFAULT_BATCH,
    };
    let batches: Vec<Range<usize>> = (0..lines.len())
        .step_by(size)
        .map(|start| start..(start + size).min(lines.len()))
        .collect();
    let mut defined: HashMap<&str, usize> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(r) = &l.spec.reference
            && let Some(first) = defined.insert(r.as_str(), i)
        {
            bail!(
                "{file}:{}: ref {r:?} is already used on line {}",
                l.number,
                lines[first].number
            );
        }
    }
    for (i, l) in lines.iter().enumerate() {
        for dep in &l.spec.depends_on {
            let DependencySpec::Ref { reference, .. } = dep else {
                continue;
            };
            let Some(&target) = defined.get(reference.as_str()) else {
                bail!(
                    "{file}:{}: depends on ref {reference:?}, which no task of the file has",
                    l.number
                );
            };
            if target / size > i / size {
                bail!(
                    "{file}:{}: depends on ref {reference:?} (line {}), which is submitted in a \
                     later batch of {size} tasks; put that task earlier in the file{}",
                    l.number,
                    lines[target].number,
                    if batch.is_some() {
                        " or use a larger --batch"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(batches)
}

/// The specs of one batch, with dependencies on `ref`s of earlier batches replaced by ids.
pub fn batch_specs(
    lines: &[Line],
    batch: Range<usize>,
    earlier: &HashMap<String, TaskId>,
) -> Vec<TaskSpec> {
    let in_batch: std::collections::HashSet<&str> = lines[batch.clone()]
        .iter()
        .filter_map(|l| l.spec.reference.as_deref())
        .collect();
    lines[batch]
        .iter()
        .map(|l| {
            let mut spec = l.spec.clone();
            for dep in &mut spec.depends_on {
                if let DependencySpec::Ref { reference, kind } = dep
                    && !in_batch.contains(reference.as_str())
                    && let Some(id) = earlier.get(reference.as_str())
                {
                    *dep = DependencySpec::Full(Dependency {
                        task_id: *id,
                        kind: *kind,
                    });
                }
            }
            spec
        })
        .collect()
}

async fn submit(
    client: &Client,
    swarm: &str,
    lines: &[Line],
    batches: &[Range<usize>],
    bar: &ProgressBar,
) -> Result<Vec<TaskId>> {
    let mut ids = Vec::with_capacity(lines.len());
    let mut refs: HashMap<String, TaskId> = HashMap::new();
    for batch in batches {
        let specs = batch_specs(lines, batch.clone(), &refs);
        let tasks = client.submit_tasks(swarm, &specs).await.with_context(|| {
            if ids.is_empty() {
                "submitting the tasks failed; none was submitted".to_owned()
            } else {
                format!(
                    "{} of {} tasks were submitted, then the batch from line {} failed",
                    ids.len(),
                    lines.len(),
                    lines[batch.start].number
                )
            }
        })?;
        if tasks.len() != specs.len() {
            bail!(
                "the coordinator answered {} tasks for a batch of {}",
                tasks.len(),
                specs.len()
            );
        }
        for (spec, task) in specs.iter().zip(&tasks) {
            if let Some(r) = &spec.reference {
                refs.insert(r.clone(), task.id);
            }
            ids.push(task.id);
        }
        bar.set_position(ids.len() as u64);
    }
    Ok(ids)
}

/// How the tasks ended.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Completed.
    pub completed: u64,
    /// Failed for good.
    pub failed: u64,
    /// Out of attempts.
    pub dead: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// No longer known to the coordinator (their swarm was deleted).
    pub missing: u64,
    /// Not finished when the wait ended.
    pub unfinished: u64,
    /// The first few tasks that did not complete.
    pub failures: Vec<FailureLine>,
    /// Whether `--timeout` ended the wait.
    pub timed_out: bool,
}

impl Outcome {
    fn record(&mut self, id: TaskId, state: &TaskState) {
        let message = match state {
            TaskState::Completed { .. } => {
                self.completed += 1;
                return;
            }
            TaskState::Failed { error, .. } => {
                self.failed += 1;
                error.message.clone()
            }
            TaskState::Dead { error, .. } => {
                self.dead += 1;
                error.message.clone()
            }
            TaskState::Cancelled { reason, .. } => {
                self.cancelled += 1;
                reason.clone().unwrap_or_default()
            }
            _ => return,
        };
        if self.failures.len() < SHOWN_FAILURES {
            self.failures.push(FailureLine {
                id,
                status: state.status(),
                message,
            });
        }
    }

    fn finished(&self) -> u64 {
        self.completed + self.failed + self.dead + self.cancelled + self.missing
    }
}

async fn follow(
    client: &Client,
    ids: &[TaskId],
    deadline: Option<Instant>,
    bar: &ProgressBar,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut pending: Vec<TaskId> = ids.to_vec();
    let mut warned = false;
    loop {
        let round = Instant::now();
        let mut still = Vec::with_capacity(pending.len());
        for chunk in pending.chunks(MAX_BATCH) {
            match client.lookup_tasks(chunk).await {
                Ok(found) => {
                    for task in &found.items {
                        if task.status().is_terminal() {
                            outcome.record(task.id, &task.state);
                        } else {
                            still.push(task.id);
                        }
                    }
                    outcome.missing += found.missing.len() as u64;
                    warned = false;
                }
                Err(e) if e.is_transient() => {
                    if !warned {
                        bar.println(format!("warning: {e}; still trying"));
                        warned = true;
                    }
                    still.extend_from_slice(chunk);
                }
                Err(e) => return Err(e.into()),
            }
        }
        pending = still;
        bar.set_position(outcome.finished());
        bar.set_message(format!(
            "completed {} · failed {}",
            outcome.completed,
            outcome.failed + outcome.dead + outcome.cancelled + outcome.missing
        ));
        if pending.is_empty() {
            return Ok(outcome);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            outcome.unfinished = pending.len() as u64;
            outcome.timed_out = true;
            return Ok(outcome);
        }
        let mut pause = POLL_INTERVAL.saturating_sub(round.elapsed());
        if let Some(d) = deadline {
            pause = pause.min(d.saturating_duration_since(Instant::now()));
        }
        tokio::time::sleep(pause).await;
    }
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The summary `flotilla run` prints (as JSON with `--json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The file.
    pub file: String,
    /// The swarm.
    pub swarm: String,
    /// Tasks submitted.
    pub total: usize,
    /// How they ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// From the first submission to the end, in milliseconds.
    pub elapsed_ms: u64,
    /// Finished tasks per second.
    pub tasks_per_second: f64,
    #[serde(skip)]
    timeout: Option<Duration>,
}

/// One task that did not complete.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureLine {
    /// Its id.
    pub id: TaskId,
    /// How it ended.
    pub status: TaskStatus,
    /// Its error message or cancellation reason.
    pub message: String,
}

impl Summary {
    fn new(
        file: &str,
        swarm: &str,
        total: usize,
        o: Outcome,
        elapsed: Duration,
        timeout: Option<Duration>,
    ) -> Summary {
        let secs = elapsed.as_secs_f64().max(0.001);
        Summary {
            file: file.to_owned(),
            swarm: swarm.to_owned(),
            total,
            elapsed_ms: elapsed.as_millis() as u64,
            tasks_per_second: ((o.finished() as f64 / secs) * 10.0).round() / 10.0,
            outcome: o,
            timeout,
        }
    }

    /// The human form.
    pub fn human(&self) -> String {
        let o = &self.outcome;
        let mut rows = vec![
            ("tasks", self.total.to_string()),
            ("completed", o.completed.to_string()),
            ("failed", o.failed.to_string()),
            ("dead", o.dead.to_string()),
            ("cancelled", o.cancelled.to_string()),
        ];
        if o.missing > 0 {
            rows.push(("missing", o.missing.to_string()));
        }
        if o.timed_out {
            rows.push((
                "unfinished",
                format!(
                    "{} (stopped waiting after {})",
                    o.unfinished,
                    self.timeout.map(format_duration).unwrap_or_default()
                ),
            ));
        }
        rows.push((
            "time",
            format_duration(Duration::from_millis(self.elapsed_ms)),
        ));
        rows.push(("throughput", format!("{} tasks/s", self.tasks_per_second)));
        let mut text = output::key_values(&rows);
        if !o.failures.is_empty() {
            text.push_str("\nfirst failures:");
            for f in &o.failures {
                text.push_str(&format!(
                    "\n  {} {}: {}",
                    f.id,
                    f.status,
                    output::ellipsize(&f.message.replace('\n', " "), 200)
                ));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(text: &str) -> Vec<Line> {
        parse_jsonl("f.jsonl", text).unwrap()
    }

    #[test]
    fn parses_non_empty_lines_with_their_numbers() {
        let lines = specs("{\"type\":\"a\"}\n\n   \n{\"type\":\"b\",\"payload\":[1]}\n");
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].number, lines[1].number), (1, 4));
        assert_eq!(lines[1].spec.task_type, "b");
    }

    #[test]
    fn a_bad_line_names_file_and_line() {
        let err = parse_jsonl("f.jsonl", "{}\n{\"type\": }\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.jsonl:2: "), "{err}");
        let err = parse_jsonl("f.jsonl", "{}\n\n{\"nope\": 1}\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.jsonl:3: unknown field `nope`"), "{err}");
        let err = parse_jsonl("f.jsonl", "\n\n").unwrap_err().to_string();
        assert!(err.contains("no tasks"), "{err}");
    }

    #[test]
    fn a_small_file_is_one_batch_and_refs_go_anywhere() {
        let lines = specs(
            "{\"ref\":\"b\",\"depends_on\":[{\"ref\":\"a\"}]}\n{\"ref\":\"a\"}\n{\"depends_on\":[{\"ref\":\"b\",\"type\":\"success\"}]}\n",
        );
        assert_eq!(plan_batches("f", &lines, None).unwrap(), vec![0..3]);
    }

    #[test]
    fn refs_are_checked_before_submitting() {
        let dup = specs("{\"ref\":\"a\"}\n{\"ref\":\"a\"}\n");
        let err = plan_batches("f", &dup, None).unwrap_err().to_string();
        assert_eq!(err, "f:2: ref \"a\" is already used on line 1");
        let unknown = specs("{\"depends_on\":[{\"ref\":\"x\"}]}\n");
        let err = plan_batches("f", &unknown, None).unwrap_err().to_string();
        assert!(err.starts_with("f:1: depends on ref \"x\""), "{err}");
    }

    #[test]
    fn batches_allow_refs_backwards_only() {
        let lines =
            specs("{\"ref\":\"a\"}\n{}\n{\"depends_on\":[{\"ref\":\"a\",\"type\":\"success\"}]}\n");
        assert_eq!(
            plan_batches("f", &lines, Some(2)).unwrap(),
            vec![0..2, 2..3]
        );
        let id: TaskId = "0190b6e4-0000-7000-8000-000000000001".parse().unwrap();
        let earlier = HashMap::from([("a".to_owned(), id)]);
        let second = batch_specs(&lines, 2..3, &earlier);
        assert_eq!(
            second[0].depends_on,
            vec![DependencySpec::Full(Dependency {
                task_id: id,
                kind: flotilla_core::DependencyKind::Success
            })]
        );
        // Within a batch the ref stays a ref for the coordinator to resolve.
        let first = batch_specs(&lines, 0..3, &earlier);
        assert!(matches!(first[2].depends_on[0], DependencySpec::Ref { .. }));

        let forward = specs("{\"depends_on\":[{\"ref\":\"z\"}]}\n{}\n{\"ref\":\"z\"}\n");
        let err = plan_batches("f", &forward, Some(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("later batch"), "{err}");
        assert!(plan_batches("f", &forward, None).is_ok());
    }

    #[test]
    fn big_files_go_in_default_batches() {
        let lines: Vec<Line> = (0..MAX_BATCH + 1)
            .map(|i| Line {
                number: i + 1,
                spec: TaskSpec::default(),
            })
            .collect();
        let b = plan_batches("f", &lines, None).unwrap();
        assert_eq!(b.len(), 11);
        assert_eq!(b[0], 0..DEFAULT_BATCH);
        assert_eq!(b[10], 10_000..10_001);
    }

    #[test]
    fn the_summary_counts_and_rates() {
        let o = Outcome {
            completed: 8,
            failed: 1,
            dead: 1,
            failures: vec![FailureLine {
                id: "0190b6e4-0000-7000-8000-000000000001".parse().unwrap(),
                status: TaskStatus::Dead,
                message: "boom\nagain".into(),
            }],
            ..Outcome::default()
        };
        let s = Summary::new("f", "default", 10, o, Duration::from_secs(2), None);
        assert_eq!(s.tasks_per_second, 5.0);
        let text = s.human();
        assert!(text.contains("completed:  8"), "{text}");
        assert!(text.contains("throughput: 5 tasks/s"), "{text}");
        assert!(text.contains("dead: boom again"), "{text}");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["completed"], 8);
        assert_eq!(v["failures"][0]["status"], "dead");
        assert!(v.get("timeout").is_none());
    }
}
