//! `GET /metrics`: the fleet in the Prometheus text exposition format (version 0.0.4).
//!
//! Counters and histograms come from the core's cumulative [`Totals`] (since the coordinator
//! started, as Prometheus expects of counters: it handles the reset on restart); gauges are
//! read from the fleet at scrape time. The text is written here rather than through the
//! `prometheus` or `metrics-exporter-prometheus` crates because every value already lives in
//! the pure core, keyed by swarm, pool and task type: a registry would be a second copy to keep
//! in step on the hot path, while a scrape is one pass over state that is in memory anyway.
//! Swarms are labelled by name, agents by name within their swarm.

use std::fmt::Write;

use flotilla_core::metrics::{Histogram, PROMETHEUS_BOUNDS, TaskTotals, Totals};
use flotilla_core::{AgentStatus, Fleet, SwarmId, Timestamp};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes families of samples.
struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: its help line and type.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample with its labels.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// The `_bucket`, `_sum` and `_count` samples of a histogram in seconds.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (bound, n) in PROMETHEUS_BOUNDS.iter().zip(h.counts) {
            cumulative += n;
            let le = bound.to_string();
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The whole exposition of `fleet` at `now`.
pub fn render(fleet: &Fleet, now: Timestamp) -> String {
    let mut x = Exposition {
        out: String::with_capacity(16 * 1024),
    };
    let name_of = |id: &SwarmId| {
        fleet
            .swarm_by_id(*id)
            .map_or_else(|| id.to_string(), |s| s.name.clone())
    };
    let totals = fleet.metrics().totals();
    tasks(&mut x, totals, &name_of);
    swarm_counters(&mut x, totals, &name_of);
    gauges(&mut x, fleet, now);
    x.out
}

/// One series of task totals: the swarm's name, the pool, the task type and the totals.
type TaskRow<'a> = (String, &'a str, &'a str, &'a TaskTotals);

/// The labels of a series of task totals.
fn task_labels<'r>(r: &'r TaskRow<'_>) -> [(&'static str, &'r str); 3] {
    [("swarm", &r.0), ("pool", r.1), ("task_type", r.2)]
}

/// Task counters and histograms by swarm, pool and task type.
fn tasks(x: &mut Exposition, totals: &Totals, name_of: &dyn Fn(&SwarmId) -> String) {
    // Sorted, so that successive scrapes list series in the same order.
    let mut rows: Vec<TaskRow<'_>> = Vec::new();
    for (swarm, pools) in &totals.tasks {
        for (pool, types) in pools {
            for (task_type, t) in types {
                rows.push((name_of(swarm), pool.as_str(), task_type.as_str(), t));
            }
        }
    }
    rows.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    type Counter = fn(&TaskTotals) -> u64;
    let counters: [(&str, &str, Counter); 3] = [
        (
            "flotilla_tasks_submitted_total",
            "Tasks submitted (pool empty: not yet run by an agent).",
            |t| t.counts.submitted,
        ),
        (
            "flotilla_task_retries_total",
            "Failed attempts that were retried.",
            |t| t.counts.retried,
        ),
        (
            "flotilla_tasks_requeued_total",
            "Tasks put back in the queue because their agent was lost.",
            |t| t.counts.requeued,
        ),
    ];
    for (name, help, get) in counters {
        x.family(name, "counter", help);
        for r in &rows {
            x.sample(name, &task_labels(r), get(r.3) as f64);
        }
    }
    x.family(
        "flotilla_tasks_finished_total",
        "counter",
        "Tasks that ended, by outcome (completed, failed, dead, cancelled).",
    );
    for r in &rows {
        let [swarm, pool, task_type] = task_labels(r);
        let t = &r.3.counts;
        for (outcome, n) in [
            ("completed", t.completed),
            ("failed", t.failed),
            ("dead", t.dead),
            ("cancelled", t.cancelled),
        ] {
            let l = [swarm, pool, task_type, ("outcome", outcome)];
            x.sample("flotilla_tasks_finished_total", &l, n as f64);
        }
    }
    type Hist = fn(&TaskTotals) -> &Histogram;
    let histograms: [(&str, &str, Hist); 3] = [
        (
            "flotilla_task_wait_seconds",
            "Time tasks waited in the ready queue before an agent took them.",
            |t| &t.wait,
        ),
        (
            "flotilla_task_run_seconds",
            "Run time of task attempts, whatever their outcome.",
            |t| &t.run,
        ),
        (
            "flotilla_task_latency_seconds",
            "Time from a task's submission to its end.",
            |t| &t.latency,
        ),
    ];
    for (name, help, get) in histograms {
        x.family(name, "histogram", help);
        for r in &rows {
            x.histogram(name, &task_labels(r), get(r.3));
        }
    }
}

/// Heartbeats, scaling events, agent failures and recoveries by swarm.
fn swarm_counters(x: &mut Exposition, totals: &Totals, name_of: &dyn Fn(&SwarmId) -> String) {
    let mut rows: Vec<_> = totals
        .swarms
        .iter()
        .map(|(id, t)| (name_of(id), t))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    type Counter = fn(&flotilla_core::metrics::SwarmTotals) -> u64;
    let counters: [(&str, &str, Counter); 3] = [
        (
            "flotilla_heartbeats_total",
            "Heartbeats received from agents.",
            |t| t.heartbeats,
        ),
        (
            "flotilla_scaling_events_total",
            "Pool size changes, by a user or the autoscaler.",
            |t| t.scaling_events,
        ),
        (
            "flotilla_agent_failures_total",
            "Agents that failed (crashed, lost, judged unhealthy).",
            |t| t.failures,
        ),
    ];
    for (name, help, get) in counters {
        x.family(name, "counter", help);
        for (swarm, t) in &rows {
            x.sample(name, &[("swarm", swarm)], get(t) as f64);
        }
    }
    x.family(
        "flotilla_agent_recovery_seconds",
        "histogram",
        "Time from an agent's failure to its return to service (MTTR).",
    );
    for (swarm, t) in &rows {
        x.histogram(
            "flotilla_agent_recovery_seconds",
            &[("swarm", swarm)],
            &t.recoveries,
        );
    }
}

/// Queue, agent and pool gauges, read now.
fn gauges(x: &mut Exposition, fleet: &Fleet, now: Timestamp) {
    let views = fleet.swarm_views(now);
    let healths: Vec<_> = views
        .iter()
        .filter_map(|v| fleet.swarm_health(v.swarm.id, now))
        .collect();
    x.family(
        "flotilla_tasks",
        "gauge",
        "Unfinished tasks by state (blocked, queued, delayed, assigned, running).",
    );
    for h in &healths {
        let t = &h.tasks;
        for (state, n) in [
            ("blocked", t.blocked),
            ("queued", t.queued),
            ("delayed", t.delayed),
            ("assigned", t.assigned),
            ("running", t.running),
        ] {
            x.sample(
                "flotilla_tasks",
                &[("swarm", &h.name), ("state", state)],
                n as f64,
            );
        }
    }
    x.family(
        "flotilla_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest task waiting in the ready queue.",
    );
    for h in &healths {
        if let Some(age) = h.oldest_queued_age_ms {
            x.sample(
                "flotilla_queue_oldest_age_seconds",
                &[("swarm", &h.name)],
                age as f64 / 1000.0,
            );
        }
    }
    x.family(
        "flotilla_agents",
        "gauge",
        "Registered agents by pool and status.",
    );
    let mut per_agent = Vec::new();
    for v in &views {
        let agents = fleet.agents_of(v.swarm.id, None, None);
        let mut counts: std::collections::BTreeMap<(&str, AgentStatus), u64> =
            std::collections::BTreeMap::new();
        for a in &agents {
            *counts.entry((a.agent_type.as_str(), a.status)).or_default() += 1;
        }
        for ((pool, status), n) in counts {
            x.sample(
                "flotilla_agents",
                &[
                    ("swarm", &v.swarm.name),
                    ("pool", pool),
                    ("status", status.as_str()),
                ],
                n as f64,
            );
        }
        per_agent.push((v.swarm.name.as_str(), agents));
    }
    x.family(
        "flotilla_pool_utilization",
        "gauge",
        "Held task slots over the slots of a pool's agents in service (0 to 1).",
    );
    for v in &views {
        for p in &v.pools {
            x.sample(
                "flotilla_pool_utilization",
                &[("swarm", &v.swarm.name), ("pool", &p.name)],
                p.utilization,
            );
        }
    }
    x.family(
        "flotilla_pool_size",
        "gauge",
        "Agents a pool has (current) and should have (desired).",
    );
    for v in &views {
        for p in &v.pools {
            for (which, n) in [("current", p.size.current), ("desired", p.size.desired)] {
                x.sample(
                    "flotilla_pool_size",
                    &[("swarm", &v.swarm.name), ("pool", &p.name), ("size", which)],
                    f64::from(n),
                );
            }
        }
    }
    type AgentGauge = fn(&flotilla_core::Agent) -> Option<f64>;
    let agent_gauges: [(&str, &str, AgentGauge); 4] = [
        (
            "flotilla_agent_current_tasks",
            "Tasks an agent holds (assigned or running).",
            |a| Some(a.current_tasks.len() as f64),
        ),
        (
            "flotilla_agent_max_tasks",
            "Tasks an agent may hold at once.",
            |a| Some(f64::from(a.max_concurrent_tasks)),
        ),
        (
            "flotilla_agent_cpu_percent",
            "CPU an agent last reported, percent of one core.",
            |a| a.resource_usage.cpu_percent,
        ),
        (
            "flotilla_agent_memory_mb",
            "Resident memory an agent last reported, MiB.",
            |a| a.resource_usage.memory_mb,
        ),
    ];
    for (name, help, get) in agent_gauges {
        x.family(name, "gauge", help);
        for (swarm, agents) in &per_agent {
            for a in agents {
                if let Some(v) = get(a) {
                    x.sample(
                        name,
                        &[
                            ("swarm", swarm),
                            ("pool", &a.agent_type),
                            ("agent", &a.name),
                        ],
                        v,
                    );
                }
            }
        }
    }
    x.family(
        "flotilla_tasks_in_memory",
        "gauge",
        "Tasks the coordinator holds in memory (unfinished, and recently finished).",
    );
    x.sample(
        "flotilla_tasks_in_memory",
        &[],
        fleet.tasks_in_memory() as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut x = Exposition { out: String::new() };
        x.sample("m", &[("a", "x\"y\\z\nw")], 1.5);
        assert_eq!(x.out, "m{a=\"x\\\"y\\\\z\\nw\"} 1.5\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let mut h = Histogram::default();
        h.record(std::time::Duration::from_millis(3));
        h.record(std::time::Duration::from_millis(40));
        h.record(std::time::Duration::from_secs(7200));
        let mut x = Exposition { out: String::new() };
        x.histogram("h", &[], &h);
        assert!(x.out.contains("h_bucket{le=\"0.005\"} 1\n"), "{}", x.out);
        assert!(x.out.contains("h_bucket{le=\"0.05\"} 2\n"), "{}", x.out);
        assert!(x.out.contains("h_bucket{le=\"3600\"} 2\n"), "{}", x.out);
        assert!(x.out.contains("h_bucket{le=\"+Inf\"} 3\n"), "{}", x.out);
        assert!(x.out.contains("h_count 3\n"), "{}", x.out);
    }
}
