//! Metrics end to end: real agents (`flotilla worker` processes) run a known workload; the
//! stored aggregates, `/metrics` (read by a Prometheus text parser), the heartbeat history and
//! `flotilla metrics` report it, the figures survive a restart, and bad queries get a 400.

mod common;

use std::time::Duration;

use common::*;
use flotilla_client::{ClientError, MetricsQuery};
use flotilla_core::metrics::{MetricPoint, MetricsResponse, Period, Scope};
use prometheus_parse::{LineInfo, Scrape, Value as Prom};
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

/// A task of type `good` succeeds; a `bad` one exits 1 (each of its two attempts).
const SCRIPT: &str = r#"read payload; case "$payload" in *fail*) echo broken >&2; exit 1;; esac; echo '{"ok": true}'"#;

fn sum(points: &[MetricPoint], f: impl Fn(&MetricPoint) -> u64) -> u64 {
    points.iter().map(f).sum()
}

async fn series(h: &Harness, period: Period, scope: Scope, key: Option<&str>) -> MetricsResponse {
    let query = MetricsQuery {
        period,
        scope,
        key: key.map(str::to_owned),
        ..MetricsQuery::default()
    };
    h.admin.swarm_metrics("m", &query).await.expect("metrics")
}

/// Checks the whole swarm's figures: 24 submitted, 20 completed, 4 dead after 4 retries.
fn check_totals(points: &[MetricPoint]) {
    assert_eq!(sum(points, |p| p.tasks.submitted), 24, "{points:#?}");
    assert_eq!(sum(points, |p| p.tasks.completed), 20);
    assert_eq!(sum(points, |p| p.tasks.dead), 4);
    assert_eq!(sum(points, |p| p.tasks.retried), 4);
    assert_eq!(sum(points, |p| p.tasks.failed + p.tasks.cancelled), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_workload_is_counted_in_the_api_prometheus_and_the_cli() {
    let mut h = Harness::start().await;
    h.admin
        .create_swarm(&serde_json::from_value(json!({"name": "m"})).unwrap())
        .await
        .unwrap();
    h.put_pool(
        "m",
        json!({
            "name": "workers",
            "min_agents": 2,
            "agent": h.template(json!({
                "command": FLOTILLA,
                "args": ["worker", "--agent-from-env", "--", "sh", "-c", SCRIPT],
                "mode": "daemon",
            })),
        }),
    )
    .await;
    poll("two idle agents", LONG, || async {
        let agents = h.agents("m", "workers").await;
        let idle = agents.iter().filter(|a| a["status"] == "idle").count();
        if idle == 2 { Ok(()) } else { Err(agents) }
    })
    .await;

    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            h.submit("m", json!({"type": "good", "payload": {"n": i}}))
                .await,
        );
    }
    for _ in 0..4 {
        let spec = json!({"type": "bad", "payload": {"k": "fail"}, "max_attempts": 2,
                          "backoff": {"initial_ms": 10, "max_ms": 10}});
        ids.push(h.submit("m", spec).await);
    }
    for id in &ids {
        h.finished(*id, LONG).await;
    }

    // Minutes: the figures of the minute under way come from memory, earlier ones from the
    // store; together they are the workload.
    let minutes = series(&h, Period::Minute, Scope::Swarm, None).await;
    check_totals(&minutes.points);
    let p = minutes
        .points
        .iter()
        .filter_map(|p| p.latency_ms.as_ref())
        .max_by_key(|s| s.count)
        .expect("latencies");
    assert!(
        0.0 < p.p50 && p.p50 <= p.p95 && p.p95 <= p.p99 && p.p99 <= p.max,
        "percentiles in order: {p:?}"
    );
    assert!(p.max < LONG.as_millis() as f64, "{p:?}");
    let waits: u64 = minutes
        .points
        .iter()
        .filter_map(|p| p.wait_ms.as_ref().map(|s| s.count))
        .sum();
    assert_eq!(waits, 28, "one wait per attempt");
    // The same workload in the hour and the day.
    check_totals(&series(&h, Period::Hour, Scope::Swarm, None).await.points);
    check_totals(&series(&h, Period::Day, Scope::Swarm, None).await.points);
    // By task type, pool and agent.
    let bad = series(&h, Period::Hour, Scope::TaskType, Some("bad")).await;
    assert_eq!(sum(&bad.points, |p| p.tasks.dead), 4);
    assert_eq!(bad.key.as_deref(), Some("bad"));
    let pool = series(&h, Period::Hour, Scope::Pool, Some("workers")).await;
    assert_eq!(sum(&pool.points, |p| p.tasks.completed), 20);
    let agents = h.admin.metric_keys("m", Scope::Agent).await.unwrap();
    assert_eq!(agents.keys.len(), 2, "{agents:?}");
    let mut by_agent = 0;
    for key in &agents.keys {
        let s = series(&h, Period::Hour, Scope::Agent, Some(key)).await;
        by_agent += sum(&s.points, |p| p.tasks.completed);
    }
    assert_eq!(by_agent, 20);

    // Prometheus: every line is a comment or a sample a parser reads, and the counters add up.
    let text = h.admin.prometheus_text().await.unwrap();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } | LineInfo::Type { .. } => {}
            LineInfo::Sample { value, .. } => {
                assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
            }
            other => panic!("{line:?} is not exposition text: {other:?}"),
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let counter = |metric: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                Prom::Counter(v) | Prom::Gauge(v) => v,
                ref other => panic!("{metric} is not a counter: {other:?}"),
            })
            .sum()
    };
    let swarm = [("swarm", "m")];
    let done = [
        ("swarm", "m"),
        ("task_type", "good"),
        ("outcome", "completed"),
    ];
    let dead = [("swarm", "m"), ("task_type", "bad"), ("outcome", "dead")];
    assert_eq!(counter("flotilla_tasks_submitted_total", &swarm), 24.0);
    assert_eq!(counter("flotilla_tasks_finished_total", &done), 20.0);
    assert_eq!(counter("flotilla_tasks_finished_total", &dead), 4.0);
    assert_eq!(counter("flotilla_task_retries_total", &swarm), 4.0);
    assert!(counter("flotilla_heartbeats_total", &swarm) >= 2.0);
    let idle = [("swarm", "m"), ("pool", "workers"), ("status", "idle")];
    assert_eq!(counter("flotilla_agents", &idle), 2.0);
    let latency: f64 = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "flotilla_task_latency_seconds" && s.labels.get("swarm") == Some("m")
        })
        .map(|s| match &s.value {
            Prom::Histogram(buckets) => {
                assert!(
                    buckets.windows(2).all(|w| w[0].count <= w[1].count),
                    "cumulative buckets: {buckets:?}"
                );
                buckets.last().map_or(0.0, |b| b.count)
            }
            other => panic!("not a histogram: {other:?}"),
        })
        .sum();
    assert_eq!(latency, 24.0, "one completion time per finished task");

    // Every series the Grafana dashboard in the repository queries is exposed.
    let grafana = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana/flotilla.json"),
    )
    .unwrap();
    let types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut queried = 0;
    for (i, _) in grafana.match_indices("flotilla_") {
        let name: String = grafana[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains(f)))
            .unwrap_or(&name);
        assert!(
            types.contains(&family),
            "the dashboard queries {name}, not exposed"
        );
        queried += 1;
    }
    assert!(queried > 10, "{queried}");

    // The heartbeat history of an agent.
    let agent = id_of(&h.agents("m", "workers").await[0]);
    let history = h.admin.agent_heartbeats(agent, None).await.unwrap();
    assert!(!history.items.is_empty(), "{history:?}");
    assert!(history.items.iter().all(|s| s.agent_id == agent));

    // The CLI.
    let out = h.cli(&["metrics", "m", "--period", "1h"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("LATENCY P50/P95/P99") && text.contains("20"),
        "{text}"
    );
    let out = h.cli(&["metrics", "m", "--period", "1h", "--json"]);
    let parsed: MetricsResponse = serde_json::from_slice(&out.stdout).expect("JSON");
    check_totals(&parsed.points);
    let out = h.cli(&["metrics", "m", "--period", "2m"]);
    assert!(!out.status.success());

    // Bad queries: 400 with a reason.
    let bad_query = |q: MetricsQuery| {
        let client = h.admin.clone();
        async move {
            match client.swarm_metrics("m", &q).await {
                Err(ClientError::Api {
                    status, message, ..
                }) => (status, message),
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
    };
    let (status, message) = bad_query(MetricsQuery {
        scope: Scope::Pool,
        ..MetricsQuery::default()
    })
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("key"), "{message}");
    let (status, message) = bad_query(MetricsQuery {
        from: Some(flotilla_core::Timestamp::from_millis(0)),
        ..MetricsQuery::default()
    })
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("at most"), "{message}");

    // A restart: the minute under way was flushed at shutdown; all of it is in the store.
    h.shutdown().await;
    h.start_again().await;
    check_totals(&series(&h, Period::Minute, Scope::Swarm, None).await.points);
    check_totals(&series(&h, Period::Day, Scope::Swarm, None).await.points);
    h.finish().await;
}
