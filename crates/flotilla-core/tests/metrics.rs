//! Metrics through the fleet's public API: a known workload gives the expected counts and
//! percentiles, a closed minute becomes rows of every period, failures and recoveries give
//! the MTTR, and a long run keeps the recorder's memory flat.

mod common;

use common::{Harness, ms, secs, spec};
use flotilla_core::metrics::{Bucket, MetricPoint, MetricRow, Period, Scope};
use flotilla_core::{AgentId, AgentStatus, Backoff, Heartbeat, ResourceUsage, TaskId};

/// Moves the harness to the start of the next minute, closing the one under way, with every
/// agent heartbeating every 10 s on the way (their lease is 15 s). Returns the metric rows and
/// prunes the ticks on the way asked the store for.
fn next_minute(h: &mut Harness, agents: &[AgentId]) -> (usize, usize) {
    let next = Period::Minute.start_of(h.now) + secs(60);
    let (mut rows, mut prunes) = (0, 0);
    while h.now < next {
        h.advance_to(next.min(h.now + secs(10)));
        rows += h.last.metric_rows.len();
        prunes += h.last.metric_prunes.len();
        for &a in agents {
            h.heartbeat(a).unwrap();
        }
    }
    (rows, prunes)
}

/// The figures of the minute under way of one series of the harness's swarm.
fn open_point(h: &Harness, scope: Scope, key: &str) -> MetricPoint {
    let (minute, open) = h
        .fleet
        .metrics()
        .open_bucket(h.swarm_id, scope, key)
        .expect("an open bucket");
    open.point(minute, Period::Minute)
}

fn row<'a>(rows: &'a [MetricRow], scope: Scope, key: &str, period: Period) -> &'a Bucket {
    &rows
        .iter()
        .find(|r| r.scope == scope && r.key == key && r.period == period)
        .unwrap_or_else(|| panic!("no {scope:?} {key:?} {period:?} row in {rows:#?}"))
        .bucket
}

/// 10 `echo` tasks (7 succeed, 3 fail for good) and 2 `flaky` ones (fail once, retried after
/// 1 s, then succeed), on one agent: every task waits 100 ms and every attempt runs 50 ms.
#[test]
fn a_known_workload_gives_the_expected_counts_and_percentiles() {
    let mut h = Harness::new();
    let a = h.agent("w-1", &[], 20);
    // The harness starts on a minute boundary; the workload takes 1.3 s of it.
    let minute = Period::Minute.start_of(h.now);
    assert_eq!(minute, h.now);

    let echo: Vec<TaskId> = (0..10).map(|_| h.submit(spec("echo", 5))).collect();
    let flaky: Vec<TaskId> = (0..2)
        .map(|_| {
            let mut s = spec("flaky", 5);
            s.max_attempts = Some(3);
            s.backoff = Some(Backoff {
                initial: secs(1),
                max: secs(1),
            });
            h.submit(s)
        })
        .collect();
    h.advance(ms(100));
    let mut taken = 0;
    while h.take(a).is_some() {
        taken += 1;
    }
    assert_eq!(taken, 12);
    h.advance(ms(50));
    // Failures and successes alternate, so that the agent's circuit breaker (open after
    // three failures in a row) stays closed.
    let (ok, bad) = echo.split_at(7);
    let failing = bad
        .iter()
        .map(|t| (*t, false))
        .chain(flaky.iter().map(|t| (*t, true)));
    for (i, (t, retryable)) in failing.enumerate() {
        h.fail(a, t, 1, retryable).unwrap();
        h.complete(a, ok[i], 1).unwrap();
    }
    for t in &ok[5..] {
        h.complete(a, *t, 1).unwrap();
    }
    // The retries become ready after their 1 s backoff and are taken 100 ms later.
    h.advance(secs(1));
    h.advance(ms(100));
    assert!(h.take(a).is_some() && h.take(a).is_some());
    h.advance(ms(50));
    for t in &flaky {
        h.complete(a, *t, 2).unwrap();
    }

    // The minute under way is readable before it is stored.
    let (open_at, open) = h
        .fleet
        .metrics()
        .open_bucket(h.swarm_id, Scope::Swarm, "")
        .expect("an open bucket");
    assert_eq!(open_at, minute);
    assert_eq!(
        (
            open.tasks.submitted,
            open.tasks.completed,
            open.tasks.failed,
            open.tasks.retried
        ),
        (12, 9, 3, 2)
    );

    // The minute closes: four rows (one per period) per series.
    h.advance_to(minute + secs(61));
    let rows: Vec<MetricRow> = h
        .last
        .metric_rows
        .iter()
        .filter(|r| r.swarm_id == h.swarm_id)
        .cloned()
        .collect();
    assert!(
        rows.iter().all(|r| r.start == r.period.start_of(minute)),
        "each row starts its period"
    );
    let whole = row(&rows, Scope::Swarm, "", Period::Minute);
    let p = whole.point(minute, Period::Minute);
    assert_eq!(
        (
            p.tasks.submitted,
            p.tasks.completed,
            p.tasks.failed,
            p.tasks.dead,
            p.tasks.retried
        ),
        (12, 9, 3, 0, 2)
    );
    assert_eq!(p.throughput_per_min, 9.0);
    assert_eq!(p.error_rate, Some(0.25));
    assert_eq!(p.retry_rate, Some(2.0 / 14.0));
    let wait = p.wait_ms.expect("waits");
    let run = p.run_ms.expect("runs");
    let latency = p.latency_ms.expect("latencies");
    assert_eq!((wait.count, run.count, latency.count), (14, 14, 12));
    let near = |got: f64, want: f64| (got - want).abs() <= want * 0.026;
    assert!(near(wait.p50, 100.0) && near(wait.p99, 100.0), "{wait:?}");
    assert!(near(run.p50, 50.0) && run.max == 50.0, "{run:?}");
    // Ten tasks took 150 ms; the two retried ones 100 + 50 + 1000 + 100 + 50.
    assert!(near(latency.p50, 150.0), "{latency:?}");
    assert!(
        near(latency.p99, 1300.0) && latency.max == 1300.0,
        "{latency:?}"
    );
    assert!(
        p.queue_depth.is_some() && p.agents.is_some(),
        "gauges sampled"
    );
    assert_eq!(p.agents.as_ref().map(|g| g.max), Some(1));

    // The same bucket is the delta of the 5-minute, hour and day rows.
    for period in [Period::FiveMinutes, Period::Hour, Period::Day] {
        assert_eq!(row(&rows, Scope::Swarm, "", period), whole);
    }
    let by_type = |t: &str| row(&rows, Scope::TaskType, t, Period::Minute);
    assert_eq!(
        (
            by_type("echo").tasks.completed,
            by_type("echo").tasks.failed
        ),
        (7, 3)
    );
    assert_eq!(
        (
            by_type("flaky").tasks.completed,
            by_type("flaky").tasks.retried
        ),
        (2, 2)
    );
    let agent = row(&rows, Scope::Agent, "w-1", Period::Minute);
    assert_eq!(agent.tasks.completed, 9);
    let pool = h.fleet.agent(a).unwrap().agent_type.clone();
    assert_eq!(
        row(&rows, Scope::Pool, &pool, Period::Minute)
            .tasks
            .completed,
        9
    );

    // Cumulative totals for Prometheus, by swarm, pool and task type.
    let totals = &h.fleet.metrics().totals().tasks[&h.swarm_id];
    assert_eq!(totals[&pool]["echo"].counts.completed, 7);
    assert_eq!(totals[&pool]["echo"].counts.failed, 3);
    assert_eq!(
        totals[""]["echo"].counts.submitted, 10,
        "submitted before any agent"
    );
    assert_eq!(totals[&pool]["flaky"].run.count, 4);
}

#[test]
fn a_failed_agent_that_comes_back_gives_one_failure_one_recovery_and_the_mttr() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let b = h.agent("b", &[], 1);
    // a falls silent for its lease (5 s × 3) and fails; b keeps beating.
    for _ in 0..3 {
        h.advance(secs(5));
        h.heartbeat(b).unwrap();
    }
    assert_eq!(h.agent_status(a), AgentStatus::Unhealthy);
    let failed_at = h.now;
    h.advance(secs(4));
    assert_eq!(h.heartbeat(a).unwrap(), AgentStatus::Idle);
    let took = h.now.since(failed_at);
    let p = open_point(&h, Scope::Swarm, "");
    assert_eq!((p.failures, p.recoveries), (1, 1));
    // The failure is noticed by the tick that ends the lease, at most one tick after it.
    let mttr = p.mttr_ms.unwrap();
    assert!(
        mttr >= took.as_millis() as f64 && mttr <= took.as_millis() as f64 + 5_000.0,
        "{mttr} vs {took:?}"
    );
    assert_eq!(p.heartbeats, 4);
    let totals = &h.fleet.metrics().totals().swarms[&h.swarm_id];
    assert_eq!((totals.failures, totals.recoveries.count), (1, 1));
}

/// Twelve hours of steady work, minute after minute: the recorder holds only the minute under way
/// (its rows leave with each minute), and asks for history past retention to be pruned.
#[test]
fn a_long_run_keeps_the_recorder_flat_and_prunes_history() {
    let mut h = Harness::new();
    let agents: Vec<_> = (0..5).map(|i| h.agent(&format!("w-{i}"), &[], 2)).collect();
    let mut rows_per_minute = Vec::new();
    let mut prunes = 0;
    let minutes = 12 * 60;
    for m in 0..minutes {
        for &a in &agents {
            let t = h.submit(spec(if m % 2 == 0 { "even" } else { "odd" }, 5));
            h.advance(ms(10));
            prunes += h.last.metric_prunes.len();
            assert_eq!(h.take(a).map(|t| t.id), Some(t));
            h.advance(ms(20));
            prunes += h.last.metric_prunes.len();
            h.complete(a, t, 1).unwrap();
            h.heartbeat(a).unwrap();
        }
        let (rows, pruned) = next_minute(&mut h, &agents);
        rows_per_minute.push(rows);
        prunes += pruned;
        let open = h.fleet.metrics().open_keys(h.swarm_id, Scope::Agent);
        assert!(
            open.len() <= agents.len(),
            "only this minute's agents are open"
        );
    }
    // Swarm, pool, five agents and one task type a minute, and the idle default swarm's
    // gauges: 9 series of 4 periods.
    assert!(
        rows_per_minute.iter().all(|n| *n == 36),
        "{:?}",
        &rows_per_minute[..20]
    );
    // One round of prunes (four periods and the heartbeats) per hour.
    assert!(
        (minutes / 60 * 5..=(minutes / 60 + 1) * 5).contains(&prunes),
        "{prunes}"
    );
    assert!(h.fleet.tasks_in_memory() < 20_000);
}

#[test]
fn reported_and_sampled_usage_are_averaged_per_agent() {
    let mut h = Harness::new();
    let a = h.agent("a", &[], 1);
    let usage = |cpu: f64, mb: f64| ResourceUsage {
        cpu_percent: Some(cpu),
        memory_mb: Some(mb),
        ..ResourceUsage::default()
    };
    // A heartbeat with usage, one without, and a sample of the agent's processes.
    let beat = Heartbeat {
        resource_usage: Some(usage(10.0, 100.0)),
        ..Heartbeat::default()
    };
    h.fleet.heartbeat(a, beat, h.now).unwrap();
    h.settle();
    h.heartbeat(a).unwrap();
    h.fleet.record_usage(a, usage(30.0, 300.0), h.now);
    h.settle();
    let p = open_point(&h, Scope::Agent, "a");
    assert_eq!(p.heartbeats, 2);
    assert_eq!((p.cpu_percent, p.memory_mb), (Some(20.0), Some(200.0)));

    // A report of memory alone does not pull the CPU mean down.
    let memory_only = ResourceUsage {
        memory_mb: Some(500.0),
        ..ResourceUsage::default()
    };
    h.fleet.record_usage(a, memory_only, h.now);
    h.settle();
    let p = open_point(&h, Scope::Agent, "a");
    assert_eq!((p.cpu_percent, p.memory_mb), (Some(20.0), Some(300.0)));

    // Absurd figures are refused before they reach the sums.
    let absurd = Heartbeat {
        resource_usage: Some(usage(1e308, 1.0)),
        ..Heartbeat::default()
    };
    let refused = h.fleet.heartbeat(a, absurd, h.now);
    assert!(h.refused(refused).to_string().contains("cpu_percent"));
}
