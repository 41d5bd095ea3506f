//! Metric rows merged on write, retention prunes, heartbeat history, and both removed with
//! their swarm.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use flotilla_core::metrics::{Bucket, HeartbeatSample, MetricRow, Period, Prune, Scope};
use flotilla_core::{AgentStatus, Changes, ReportedHealth, ResourceUsage, TaskId};
use flotilla_store::{MetricSeries, Store};

fn bucket(completed: u64, waits: &[u64]) -> Bucket {
    let mut b = Bucket::default();
    b.tasks.completed = completed;
    for w in waits {
        b.wait.record(Duration::from_millis(*w));
    }
    b
}

fn row(swarm: u128, period: Period, start: i64, b: Bucket) -> MetricRow {
    MetricRow {
        swarm_id: swarm_id(swarm),
        scope: Scope::Pool,
        key: "workers".to_owned(),
        period,
        start: ts(start),
        bucket: b,
    }
}

fn series(swarm: u128, period: Period) -> MetricSeries<'static> {
    MetricSeries {
        swarm: swarm_id(swarm),
        scope: Scope::Pool,
        key: "workers",
        period,
    }
}

fn heartbeat(agent: u128, swarm: u128, at: i64) -> HeartbeatSample {
    HeartbeatSample {
        agent_id: agent_id(agent),
        swarm_id: swarm_id(swarm),
        recorded_at: ts(at),
        status: AgentStatus::Busy,
        reported_health: ReportedHealth::Degraded,
        resource_usage: ResourceUsage {
            cpu_percent: Some(12.5),
            memory_mb: Some(0.1 + 0.2),
            active_connections: Some(3),
            open_files: None,
        },
        current_tasks: vec![TaskId(uuid::Uuid::from_u128(9))],
        queue_depth: 2,
    }
}

fn deltas_are_merged_into_the_stored_row_within_a_batch_and_across_batches(backend: Backend) {
    let (dir, mut store) = open_on(backend);
    commit(
        &mut store,
        Changes {
            metric_rows: vec![
                row(1, Period::Hour, 3_600_000, bucket(2, &[10, 20])),
                row(1, Period::Hour, 3_600_000, bucket(1, &[30])),
                row(1, Period::Minute, 3_600_000, bucket(3, &[10, 20, 30])),
            ],
            ..Changes::default()
        },
    );
    commit(
        &mut store,
        Changes {
            metric_rows: vec![row(1, Period::Hour, 3_600_000, bucket(4, &[40]))],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    let hours = reader
        .metric_buckets(&series(1, Period::Hour), ts(0), ts(86_400_000))
        .unwrap();
    let want = bucket(7, &[10, 20, 30, 40]);
    assert_eq!(hours, vec![(ts(3_600_000), want)]);
    let minutes = reader
        .metric_buckets(&series(1, Period::Minute), ts(0), ts(86_400_000))
        .unwrap();
    assert_eq!(minutes.len(), 1);
    assert_eq!(minutes[0].1.tasks.completed, 3);
    // The range is [from, to).
    assert!(
        reader
            .metric_buckets(&series(1, Period::Hour), ts(0), ts(3_600_000))
            .unwrap()
            .is_empty()
    );
    // Keys of a scope, and the rows survive a reopen.
    drop(store);
    let store = reopen(&dir);
    let keys = store
        .reader()
        .unwrap()
        .metric_keys(swarm_id(1), Scope::Pool, Period::Hour, ts(0))
        .unwrap();
    assert_eq!(keys, vec!["workers".to_owned()]);
}

fn prunes_drop_only_the_period_and_age_asked_for(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let minute = 60_000;
    commit(
        &mut store,
        Changes {
            metric_rows: (0..10)
                .flat_map(|i| {
                    [
                        row(1, Period::Minute, i * minute, bucket(1, &[])),
                        row(1, Period::Day, i * 86_400_000, bucket(1, &[])),
                    ]
                })
                .collect(),
            heartbeat_samples: (0..10).map(|i| heartbeat(1, 1, i * minute)).collect(),
            ..Changes::default()
        },
    );
    commit(
        &mut store,
        Changes {
            metric_prunes: vec![
                Prune::Metrics(Period::Minute, ts(6 * minute)),
                Prune::Heartbeats(ts(4 * minute)),
            ],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    let minutes = reader
        .metric_buckets(&series(1, Period::Minute), ts(0), ts(i64::MAX / 2))
        .unwrap();
    assert_eq!(minutes.first().map(|m| m.0), Some(ts(6 * minute)));
    assert_eq!(minutes.len(), 4);
    let days = reader
        .metric_buckets(&series(1, Period::Day), ts(0), ts(i64::MAX / 2))
        .unwrap();
    assert_eq!(days.len(), 10, "other periods are kept");
    let size = reader.history_size().unwrap();
    assert_eq!(size.metric_rows, [4, 0, 0, 10]);
    assert_eq!(size.heartbeat_rows, 6);
    assert!(size.metric_bytes > 0 && size.heartbeat_bytes > 0);
}

fn heartbeats_read_back_exactly_newest_first_within_the_range(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    let samples: Vec<_> = (0..5).map(|i| heartbeat(1, 1, 1_000 * i)).collect();
    commit(
        &mut store,
        Changes {
            heartbeat_samples: [samples.clone(), vec![heartbeat(2, 1, 500)]].concat(),
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    let got = reader
        .heartbeats(agent_id(1), ts(1_000), ts(4_000), 100)
        .unwrap();
    assert_eq!(
        got,
        vec![samples[3].clone(), samples[2].clone(), samples[1].clone()]
    );
    let limited = reader
        .heartbeats(agent_id(1), ts(0), ts(10_000), 2)
        .unwrap();
    assert_eq!(limited, vec![samples[4].clone(), samples[3].clone()]);
}

fn a_deleted_swarm_takes_its_metrics_and_heartbeats_with_it(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    commit(
        &mut store,
        Changes {
            swarms: vec![swarm(1, "a"), swarm(2, "b")],
            metric_rows: vec![
                row(1, Period::Minute, 0, bucket(1, &[])),
                row(2, Period::Minute, 0, bucket(1, &[])),
            ],
            heartbeat_samples: vec![heartbeat(1, 1, 0), heartbeat(2, 2, 0)],
            ..Changes::default()
        },
    );
    // A late delta of the swarm in the batch that deletes it leaves no orphan row.
    commit(
        &mut store,
        Changes {
            deleted_swarms: vec![swarm_id(1)],
            metric_rows: vec![row(1, Period::Hour, 0, bucket(1, &[]))],
            ..Changes::default()
        },
    );
    let reader = store.reader().unwrap();
    let size = reader.history_size().unwrap();
    assert_eq!((size.total_metric_rows(), size.heartbeat_rows), (1, 1));
    let left = reader
        .metric_buckets(&series(2, Period::Minute), ts(0), ts(60_000))
        .unwrap();
    assert_eq!(left.len(), 1);
    let scheme = match backend {
        Backend::Sqlite => "sqlite:",
        Backend::Postgres => "postgres://",
    };
    assert!(store.describe().starts_with(scheme), "{}", store.describe());
}

fn an_unreadable_stored_bucket_is_replaced_rather_than_stopping_commits(backend: Backend) {
    let (_dir, mut store) = open_on(backend);
    // A non-finite sum is written as JSON null, which does not read back as a number: what an
    // agent reporting absurd figures once caused.
    let mut poisoned = bucket(1, &[]);
    poisoned.cpu_samples = 2;
    poisoned.cpu_sum = f64::INFINITY;
    commit(
        &mut store,
        Changes {
            metric_rows: vec![row(1, Period::Day, 0, poisoned)],
            ..Changes::default()
        },
    );
    commit(
        &mut store,
        Changes {
            metric_rows: vec![row(1, Period::Day, 0, bucket(2, &[]))],
            ..Changes::default()
        },
    );
    let days = store
        .reader()
        .unwrap()
        .metric_buckets(&series(1, Period::Day), ts(0), ts(86_400_000))
        .unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(
        days[0].1.tasks.completed, 2,
        "the delta replaced the unreadable row"
    );
}

on_both_backends!(
    deltas_are_merged_into_the_stored_row_within_a_batch_and_across_batches,
    prunes_drop_only_the_period_and_age_asked_for,
    heartbeats_read_back_exactly_newest_first_within_the_range,
    a_deleted_swarm_takes_its_metrics_and_heartbeats_with_it,
    an_unreadable_stored_bucket_is_replaced_rather_than_stopping_commits,
);
