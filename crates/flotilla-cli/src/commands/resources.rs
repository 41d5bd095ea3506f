//! `flotilla resources`: the resource manager, readably.

use std::process::ExitCode;

use anyhow::Result;
use flotilla_core::ResourceRequest;
use flotilla_core::resources::view::{PolicyUpdate, ResourcesView};

use crate::cli::{GlobalArgs, ResourcesArgs};
use crate::config;
use crate::output::{self, age, now, table};

/// Runs `flotilla resources`.
pub async fn run(global: &GlobalArgs, args: ResourcesArgs) -> Result<ExitCode> {
    let client = config::client(global)?;
    let view = if args.strategy.is_some() || args.admission.is_some() {
        let update = PolicyUpdate {
            strategy: args.strategy.as_deref().map(str::parse).transpose()?,
            admission: args.admission.as_deref().map(str::parse).transpose()?,
            responses: None,
        };
        client.put_resource_policy(&update).await?
    } else {
        client.resources().await?
    };
    if args.out.json {
        output::json(&view)?;
    } else {
        output::line(&render(&view, now()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn amount(r: &ResourceRequest) -> String {
    format!(
        "{:.2} cpu, {} MiB mem, {} MiB disk",
        r.cpu_cores, r.memory_mb, r.disk_mb
    )
}

/// The human summary.
pub fn render(v: &ResourcesView, now: flotilla_core::Timestamp) -> String {
    let mut out = String::new();
    let c = &v.capacity;
    out.push_str(&format!(
        "capacity   {:.2} cpu, {} MiB mem, {} MiB disk   (strategy {}, admission {})\n",
        c.cpu_cores,
        c.memory_mb,
        c.disk_mb,
        v.strategy.as_str(),
        v.admission.as_str()
    ));
    out.push_str(&format!("allocated  {}\n", amount(&v.allocated)));
    let p = &v.pressure;
    out.push_str(&format!(
        "pressure   {}{}\n",
        p.level,
        if p.reason.is_empty() {
            String::new()
        } else {
            format!(
                " ({}: {})",
                p.signal.map(|s| s.as_str()).unwrap_or("-"),
                p.reason
            )
        }
    ));
    let mut active = Vec::new();
    if p.active.alert {
        active.push("alert".to_owned());
    }
    if p.active.stop_scale_up {
        active.push("scale-up refused".to_owned());
    }
    if p.active.pause_low_priority {
        active.push(format!(
            "{} low-priority agent(s) paused",
            p.paused_agents.len()
        ));
    }
    if let Some(b) = p.active.shed_below {
        active.push(format!("tasks below priority {b} shed"));
    }
    if let Some(b) = p.active.delay_below {
        active.push(format!("tasks below priority {b} delayed"));
    }
    if !active.is_empty() {
        out.push_str(&format!("responses  {}\n", active.join("; ")));
    }
    if let Some(m) = &v.usage.machine {
        out.push_str(&format!(
            "machine    cpu {}, mem {}/{} MiB, disk {}/{} MiB\n",
            m.cpu_percent
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "-".into()),
            m.memory_used_mb,
            m.memory_total_mb,
            m.disk_used_mb,
            m.disk_total_mb
        ));
    }
    out.push_str(&format!(
        "fleet use  {:.2} cpu, {:.0} MiB mem\n",
        v.usage.fleet_cpu_cores, v.usage.fleet_memory_mb
    ));
    let signals = p
        .signals
        .iter()
        .map(|(s, st)| {
            vec![
                s.as_str().to_owned(),
                st.level.to_string(),
                format!("{:.0}%", st.smoothed * 100.0),
                format!("{:+.2}%/s", st.slope_per_sec * 100.0),
                st.exhaustion_in
                    .map(|d| crate::output::millis(d.as_secs() * 1000))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["SIGNAL", "LEVEL", "AVERAGE", "TREND", "EXHAUSTED IN"],
        signals,
    ));
    if !v.pools.is_empty() {
        let rows = v
            .pools
            .iter()
            .map(|t| {
                vec![
                    t.swarm.clone(),
                    t.pool.clone().unwrap_or_default(),
                    t.priority.map(|p| p.to_string()).unwrap_or_default(),
                    t.agents.to_string(),
                    amount(&t.allocated),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["SWARM", "POOL", "PRIORITY", "AGENTS", "ALLOCATED"],
            rows,
        ));
    }
    if !v.waiting.is_empty() {
        let rows = v
            .waiting
            .iter()
            .map(|w| {
                vec![
                    w.pool.pool.clone(),
                    if w.refused { "refused" } else { "waiting" }.to_owned(),
                    w.count.to_string(),
                    age(w.since, now),
                    w.reason.clone(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["POOL", "STATE", "AGENTS", "SINCE", "WHY"], rows));
    }
    out.trim_end().to_owned()
}
