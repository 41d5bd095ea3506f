//! `flotilla metrics`: a swarm's (or one pool's, agent's, task type's) figures over time.

use std::process::ExitCode;

use anyhow::{Result, bail};
use flotilla_client::MetricsQuery;
use flotilla_core::metrics::{MetricPoint, Period, Scope};

use crate::cli::{GlobalArgs, MetricsArgs};
use crate::config;
use crate::output::{self, now, table};

/// Rows shown when `--since` is not given.
const DEFAULT_ROWS: u32 = 15;

/// Runs `flotilla metrics`.
pub async fn run(global: &GlobalArgs, args: MetricsArgs) -> Result<ExitCode> {
    let client = config::client(global)?;
    let Some(period) = Period::parse(&args.period) else {
        bail!("--period must be 1m, 5m, 1h or 1d");
    };
    let scope = match args.scope.as_deref() {
        None => Scope::Swarm,
        Some(s) => match Scope::parse(s) {
            Some(scope) => scope,
            None => bail!("--scope must be pool, agent or task_type"),
        },
    };
    let span = args
        .since
        .unwrap_or(std::time::Duration::from_millis(period.millis() as u64) * DEFAULT_ROWS);
    let to = now();
    let query = MetricsQuery {
        period,
        from: Some(to - span),
        to: Some(to),
        scope,
        key: args.key.clone(),
    };
    let series = client.swarm_metrics(&args.swarm, &query).await?;
    if args.out.json {
        output::json(&series)?;
        return Ok(ExitCode::SUCCESS);
    }
    if series.points.is_empty() {
        output::line(&format!(
            "no figures for {} in this range: nothing was submitted, run or sampled",
            args.key.as_deref().unwrap_or(&args.swarm)
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    output::line(&metrics_table(&series.points, period))?;
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds, short: `850ms`, `3.2s`, `4.5m`.
fn ms(v: f64) -> String {
    if v < 1_000.0 {
        format!("{v:.0}ms")
    } else if v < 60_000.0 {
        format!("{:.1}s", v / 1_000.0)
    } else {
        format!("{:.1}m", v / 60_000.0)
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |r| format!("{:.0}%", r * 100.0))
}

/// One row per period: what finished, how fast, how loaded.
pub fn metrics_table(points: &[MetricPoint], period: Period) -> String {
    let rows = points
        .iter()
        .map(|p| {
            let when = p.start.to_rfc3339();
            // `2026-12-03T10:15:00.000Z`: the date only for days, the time otherwise.
            let when = match period {
                Period::Day => when[..10].to_owned(),
                _ => when[..16].replace('T', " "),
            };
            let latency = p.latency_ms.as_ref().map_or_else(
                || "-".to_owned(),
                |s| format!("{} / {} / {}", ms(s.p50), ms(s.p95), ms(s.p99)),
            );
            vec![
                when,
                p.tasks.submitted.to_string(),
                p.tasks.completed.to_string(),
                (p.tasks.failed + p.tasks.dead).to_string(),
                format!("{:.1}", p.throughput_per_min),
                latency,
                p.wait_ms
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |s| ms(s.p95)),
                percent(p.error_rate),
                p.queue_depth
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |g| format!("{:.0}", g.avg)),
                percent(p.utilization),
                p.agents
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |g| format!("{:.0}", g.avg)),
            ]
        })
        .collect();
    table(
        &[
            "PERIOD",
            "SUBMITTED",
            "DONE",
            "FAILED",
            "PER MIN",
            "LATENCY P50/P95/P99",
            "WAIT P95",
            "ERRORS",
            "QUEUE",
            "UTIL",
            "AGENTS",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::Timestamp;
    use flotilla_core::metrics::{Bucket, TaskCounts};

    #[test]
    fn a_row_shows_counts_latency_and_load() {
        let mut b = Bucket {
            tasks: TaskCounts {
                submitted: 12,
                completed: 10,
                dead: 2,
                ..TaskCounts::default()
            },
            ..Bucket::default()
        };
        for v in [100, 200, 2_500] {
            b.latency.record(std::time::Duration::from_millis(v));
        }
        let start = Timestamp::parse_rfc3339("2026-12-03T10:15:00Z").unwrap();
        let text = metrics_table(&[b.point(start, Period::Minute)], Period::Minute);
        assert!(text.contains("2026-12-03 10:15"), "{text}");
        assert!(text.contains("17%"), "error rate 2/12: {text}");
        assert!(text.contains("/ 2."), "p95 and p99 near 2.5 s: {text}");
    }
}
