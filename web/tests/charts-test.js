// Renders charts.js from a fixed answer of GET /api/v1/swarms/{swarm}/metrics (the contract in
// docs/dashboard.md) for tests/dashboard.mjs to check: 30 minutes of 1m periods with minutes
// 10-14 missing (no observations: a gap) and no latency in minute 20.

import { metricCharts, timeRange } from "/charts.js";

const FROM = Date.parse("2026-12-03T07:00:00Z");
const MINUTE = 60_000;

function summary(base) {
  return { count: 10, mean: base * 1.2, p50: base, p95: base * 2, p99: base * 3, max: base * 4 };
}

/** One MetricPoint exactly as the endpoint answers it. */
function point(minute) {
  const start = new Date(FROM + minute * MINUTE).toISOString().replace(".000Z", "Z");
  const end = new Date(FROM + (minute + 1) * MINUTE).toISOString().replace(".000Z", "Z");
  const completed = 20 + (minute % 7);
  return {
    start,
    end,
    submitted: completed + 2,
    completed,
    failed: minute % 5 === 0 ? 1 : 0,
    dead: 0,
    cancelled: 0,
    retried: minute % 5 === 0 ? 1 : 0,
    requeued: 0,
    throughput_per_min: completed,
    error_rate: completed ? (minute % 5 === 0 ? 1 : 0) / completed : null,
    retry_rate: null,
    wait_ms: summary(40),
    latency_ms: minute === 20 ? null : summary(200 + minute * 10),
    run_ms: summary(150),
    queue_depth: { avg: 3 + (minute % 4), max: 6 + (minute % 4) },
    agents: { avg: 4, max: 4 },
    utilization: 0.25 + (minute % 3) * 0.25,
    busy_slots: 2,
    heartbeats: 48,
    cpu_percent: 12.5,
    memory_mb: 64,
    scaling_events: 0,
    failures: 0,
    recoveries: 0,
    mttr_ms: null,
  };
}

const minutes = [...Array(30).keys()].filter((m) => m < 10 || m >= 15);
export const answer = { swarm: "fixture", period: "1m", scope: "swarm", key: null, points: minutes.map(point) };

document.getElementById("filled").append(
  metricCharts(answer.points, { period: "1m", from: FROM, to: FROM + 60 * MINUTE }),
);
const now = timeRange("1m");
document.getElementById("empty").append(metricCharts([], { period: "1m", ...now }));
document.body.dataset.points = String(answer.points.length);
document.body.dataset.ready = "1";
