//! `flotilla bench curves`: how cost grows with work. The core's assignment rate and latency
//! with 1,000 agents and 1,000 to 1,000,000 queued tasks, and end-to-end throughput and latency
//! (HTTP, durable SQLite) with 10, 100 and 1,000 agents (10,000 with `--agents 10000`); printed
//! as tables and drawn as one SVG file (`--out`, `bench-curves.svg` by default).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use flotilla_core::Strategy;
use serde::Serialize;

use super::bench::{assign, throughput};

/// One queue size.
#[derive(Debug, Serialize)]
pub struct QueuePoint {
    /// Tasks queued.
    pub queued: usize,
    /// Assignments per second.
    pub assign_per_sec: f64,
    /// Latency of one assignment, 99th percentile, µs.
    pub assign_p99_us: u64,
}

/// One fleet size.
#[derive(Debug, Serialize)]
pub struct AgentsPoint {
    /// Connected agents.
    pub agents: usize,
    /// Tasks run.
    pub tasks: usize,
    /// Tasks per second end to end.
    pub tasks_per_sec: f64,
    /// Submit → an agent has it, under full load, 99th percentile, µs.
    pub start_p99_us: u64,
    /// Submit → done, under full load, 99th percentile, µs.
    pub done_p99_us: u64,
    /// Submit → an agent has it at light load, 99th percentile, µs.
    pub light_start_p99_us: u64,
}

/// Results of `curves`.
#[derive(Debug, Serialize)]
pub struct CurvesReport {
    /// By queue size.
    pub queue: Vec<QueuePoint>,
    /// By fleet size.
    pub agents: Vec<AgentsPoint>,
    /// Where the plot was written.
    pub svg: PathBuf,
}

/// Measures both curves and writes the plot to `out`.
pub async fn curves(
    max_agents: usize,
    tasks: usize,
    timeout: Duration,
    out: &Path,
) -> Result<CurvesReport> {
    let mut queue = Vec::new();
    for queued in [1_000, 10_000, 100_000, 1_000_000] {
        let r =
            tokio::task::spawn_blocking(move || assign(1_000, queued, 20_000, Strategy::default()))
                .await??;
        queue.push(QueuePoint {
            queued,
            assign_per_sec: r.assign_per_sec,
            assign_p99_us: r.assign_latency.p99_us,
        });
    }
    let mut agents = Vec::new();
    for n in [10, 100, 1_000, 10_000]
        .into_iter()
        .filter(|n| *n <= max_agents)
    {
        let r = throughput(flotilla_store::SyncMode::Full, n, tasks, 1_000, 32, timeout)
            .await
            .with_context(|| format!("throughput with {n} agents"))?;
        agents.push(AgentsPoint {
            agents: n,
            tasks: r.tasks,
            tasks_per_sec: r.tasks_per_sec,
            start_p99_us: r.enqueue_to_start.p99_us,
            done_p99_us: r.enqueue_to_done.p99_us,
            light_start_p99_us: r.light_enqueue_to_start.p99_us,
        });
    }
    let svg = plot(&queue, &agents);
    std::fs::write(out, svg).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(CurvesReport {
        queue,
        agents,
        svg: out.to_path_buf(),
    })
}

/// Prints `curves`.
pub fn print_curves(r: &CurvesReport) {
    println!("curves: the core with 1,000 agents, by queued tasks");
    println!("  {:>9}  {:>12}  {:>10}", "queued", "assign/s", "p99");
    for p in &r.queue {
        println!(
            "  {:>9}  {:>12.0}  {:>7} µs",
            p.queued, p.assign_per_sec, p.assign_p99_us
        );
    }
    println!("curves: end to end (HTTP, durable SQLite), by connected agents");
    println!(
        "  {:>7}  {:>7}  {:>9}  {:>14}  {:>14}  {:>16}",
        "agents", "tasks", "tasks/s", "start p99", "done p99", "light start p99"
    );
    for p in &r.agents {
        println!(
            "  {:>7}  {:>7}  {:>9.0}  {:>11} ms  {:>11} ms  {:>13.2} ms",
            p.agents,
            p.tasks,
            p.tasks_per_sec,
            p.start_p99_us / 1000,
            p.done_p99_us / 1000,
            p.light_start_p99_us as f64 / 1000.0
        );
    }
    println!("curves: plot written to {}", r.svg.display());
}

/// Four charts, x on a log scale: assignments per second and p99 by queue size; tasks per
/// second and submit → done p99 by fleet size.
fn plot(queue: &[QueuePoint], agents: &[AgentsPoint]) -> String {
    let (w, h) = (960.0, 640.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let q: Vec<(f64, f64)> = queue
        .iter()
        .map(|p| (p.queued as f64, p.assign_per_sec))
        .collect();
    let ql: Vec<(f64, f64)> = queue
        .iter()
        .map(|p| (p.queued as f64, p.assign_p99_us as f64))
        .collect();
    let a: Vec<(f64, f64)> = agents
        .iter()
        .map(|p| (p.agents as f64, p.tasks_per_sec))
        .collect();
    let al: Vec<(f64, f64)> = agents
        .iter()
        .map(|p| (p.agents as f64, p.done_p99_us as f64 / 1000.0))
        .collect();
    chart(
        &mut svg,
        (0.0, 0.0),
        "core: assignments/s (1,000 agents)",
        "queued tasks",
        &q,
    );
    chart(
        &mut svg,
        (w / 2.0, 0.0),
        "core: one assignment, p99 (µs)",
        "queued tasks",
        &ql,
    );
    chart(
        &mut svg,
        (0.0, h / 2.0),
        "end to end: tasks/s",
        "connected agents",
        &a,
    );
    chart(
        &mut svg,
        (w / 2.0, h / 2.0),
        "end to end: submit → done, p99 (ms)",
        "connected agents",
        &al,
    );
    svg.push_str("</svg>\n");
    svg
}

fn chart(svg: &mut String, (ox, oy): (f64, f64), title: &str, xlabel: &str, points: &[(f64, f64)]) {
    let (left, top, width, height) = (ox + 70.0, oy + 40.0, 360.0, 220.0);
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}</text>",
        ox + 20.0,
        oy + 24.0,
        xml(title)
    );
    let _ = writeln!(
        svg,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{width}\" height=\"{height}\" fill=\"none\" stroke=\"#999\"/>"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
        left + width / 2.0,
        top + height + 34.0,
        xml(xlabel)
    );
    if points.is_empty() {
        return;
    }
    let lx: Vec<f64> = points.iter().map(|p| p.0.max(1.0).log10()).collect();
    let (xmin, xmax) = (
        lx.iter().cloned().fold(f64::INFINITY, f64::min),
        lx.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    );
    let ymax = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let span = (xmax - xmin).max(1e-9);
    let xy: Vec<(f64, f64)> = points
        .iter()
        .zip(&lx)
        .map(|(p, l)| {
            let x = if points.len() == 1 {
                left + width / 2.0
            } else {
                left + 20.0 + (l - xmin) / span * (width - 40.0)
            };
            (x, top + height - p.1 / ymax * height)
        })
        .collect();
    let line: Vec<String> = xy.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#2563eb\" stroke-width=\"2\"/>",
        line.join(" ")
    );
    for ((x, y), p) in xy.iter().zip(points) {
        let _ = writeln!(
            svg,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#2563eb\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            y - 9.0,
            human(p.1),
            top + height + 16.0,
            human(p.0)
        );
    }
}

/// 1,234,567 → "1.2M", 12,345 → "12.3k", 12.5 → "12.5".
fn human(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.0}k", v / 1e3),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v if v >= 10.0 => format!("{v:.0}"),
        v => format!("{v:.2}"),
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_has_a_point_and_a_label_per_measure() {
        let queue = vec![
            QueuePoint {
                queued: 1_000,
                assign_per_sec: 400_000.0,
                assign_p99_us: 5,
            },
            QueuePoint {
                queued: 1_000_000,
                assign_per_sec: 250_000.0,
                assign_p99_us: 9,
            },
        ];
        let agents = vec![AgentsPoint {
            agents: 10,
            tasks: 1000,
            tasks_per_sec: 3_500.0,
            start_p99_us: 2_000,
            done_p99_us: 12_000,
            light_start_p99_us: 1_500,
        }];
        let svg = plot(&queue, &agents);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2 + 2 + 1 + 1, "{svg}");
        for label in [
            "400k",
            "250k",
            "1.0M",
            "1.0k",
            "3.5k",
            ">12<",
            "submit → done",
        ] {
            assert!(svg.contains(label), "{label} missing: {svg}");
        }
    }
}
