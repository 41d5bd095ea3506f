//! `flotilla bench messages`: the message bus through the whole product, on loopback.
//!
//! A coordinator with its durable SQLite store and the chosen bus (`memory`, or Redis), N
//! receiving agents in a full mesh, each long-polling its inbox and acknowledging what it gets
//! in batches. First a light load (one message at a time, the receivers waiting), then a flood
//! from S concurrent senders. Each message carries its number; the send instant is noted just
//! before the send, the delivery instant when a receive answers with it. Reported: messages per
//! second end to end (first send to last delivery) and delivery latency percentiles. Bounded in
//! count and time; loopback and a temporary data directory only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flotilla_client::Client;
use flotilla_core::{AgentId, AgentSpec, Json, MessageSpec, SwarmSpec, Topology};
use parking_lot::Mutex;
use serde::Serialize;

use super::bench::{Percentiles, percentiles};

/// Results of `messages`.
#[derive(Debug, Serialize)]
pub struct MessagesReport {
    /// The bus (`in-process`, or the Redis address).
    pub bus: String,
    /// Receiving agents.
    pub receivers: usize,
    /// Concurrent senders in the flood.
    pub senders: usize,
    /// Messages in the flood.
    pub messages: usize,
    /// Seconds from the first send of the flood to its last delivery.
    pub seconds: f64,
    /// Messages per second, sent, stored, delivered (end to end).
    pub messages_per_sec: f64,
    /// Flood: send to the receiver getting it.
    pub delivery: Percentiles,
    /// Light load: one message at a time, the receivers waiting.
    pub light_delivery: Percentiles,
    /// Messages in the light phase.
    pub light_messages: usize,
}

/// Runs the scenario.
pub async fn messages(
    bus: &str,
    receivers: usize,
    messages: usize,
    senders: usize,
    timeout: Duration,
) -> Result<MessagesReport> {
    let dir = tempfile::tempdir().context("create a temporary data directory")?;
    let mut config = flotilla_server::ServerConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    config.bus = bus.to_owned();
    let server = flotilla_server::start(config)
        .await
        .with_context(|| format!("start a coordinator with the bus {bus}"))?;
    let bus_name = server.state.bus.describe();
    let admin = Client::new(&server.url(), server.admin_token.clone())?;
    let swarm = SwarmSpec {
        name: "bench-messages".to_owned(),
        topology: Topology::Mesh,
        ..SwarmSpec::default()
    };
    admin.create_swarm(&swarm).await?;
    let light = 200.min(messages);
    let total = light + messages;
    // Index → instant sent; index → instant delivered.
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    let got: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    let delivered = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut ids: Vec<AgentId> = Vec::with_capacity(receivers);
    let mut loops = Vec::with_capacity(receivers);
    for i in 0..receivers {
        let spec = AgentSpec {
            name: Some(format!("rx-{i}")),
            ..AgentSpec::default()
        };
        let reg = admin.register_agent(&swarm.name, &spec).await?;
        ids.push(reg.agent_id);
        let client = admin.with_token(reg.token);
        let (got, delivered, arrived, stop) = (
            got.clone(),
            delivered.clone(),
            arrived.clone(),
            stop.clone(),
        );
        let me = reg.agent_id;
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client
                    .receive_messages(me, Duration::from_secs(1), 500)
                    .await
                {
                    Ok(batch) if !batch.is_empty() => {
                        let now = Instant::now();
                        let mut ack = Vec::with_capacity(batch.len());
                        {
                            let mut g = got.lock();
                            for m in &batch {
                                if let Some(i) = m.body.to_value()["i"].as_u64()
                                    && let Some(slot) = g.get_mut(i as usize)
                                    && slot.is_none()
                                {
                                    *slot = Some(now);
                                    delivered.fetch_add(1, Ordering::Relaxed);
                                }
                                ack.push(m.id);
                            }
                        }
                        arrived.notify_one();
                        if let Err(e) = client.ack_messages(me, &ack).await {
                            eprintln!("bench receiver: {e}");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("bench receiver: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + timeout;
    let body = |i: usize| MessageSpec {
        body: Json::from_value(&serde_json::json!({ "i": i })),
        ..MessageSpec::default()
    };
    // Light load: one at a time.
    for i in 0..light {
        sent.lock()[i] = Some(Instant::now());
        admin.send_message(ids[i % ids.len()], &body(i)).await?;
        while delivered.load(Ordering::Relaxed) <= i {
            if Instant::now() > deadline {
                bail!("the light phase did not finish within {timeout:?}");
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), arrived.notified()).await;
        }
    }
    // The flood.
    let next = Arc::new(AtomicUsize::new(light));
    let t0 = Instant::now();
    let mut sending = Vec::with_capacity(senders);
    for _ in 0..senders {
        let (admin, next, sent, ids) = (admin.clone(), next.clone(), sent.clone(), ids.clone());
        sending.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > deadline {
                    return Ok::<(), flotilla_client::ClientError>(());
                }
                sent.lock()[i] = Some(Instant::now());
                admin.send_message(ids[i % ids.len()], &body(i)).await?;
            }
        }));
    }
    for s in sending {
        s.await??;
    }
    while delivered.load(Ordering::Relaxed) < total {
        if Instant::now() > deadline {
            bail!(
                "only {} of {total} messages were delivered within {timeout:?}",
                delivered.load(Ordering::Relaxed)
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), arrived.notified()).await;
    }
    let last = got.lock().iter().flatten().max().copied().unwrap_or(t0);
    let seconds = last.saturating_duration_since(t0).as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    let sent = sent.lock().clone();
    let got = got.lock().clone();
    let lat = |range: std::ops::Range<usize>| -> Vec<Duration> {
        range
            .filter_map(|i| Some(got[i]?.saturating_duration_since(sent[i]?)))
            .collect()
    };
    let report = MessagesReport {
        bus: bus_name,
        receivers,
        senders,
        messages,
        seconds,
        messages_per_sec: messages as f64 / seconds.max(1e-9),
        delivery: percentiles(lat(light..total)),
        light_delivery: percentiles(lat(0..light)),
        light_messages: light,
    };
    server.shutdown().await?;
    Ok(report)
}

/// Prints a `messages` report.
pub fn print_messages(r: &MessagesReport) {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    println!(
        "messages over {} bus: {} receivers (long poll, batched acks), {} senders, durable SQLite",
        r.bus, r.receivers, r.senders
    );
    println!(
        "  flood: {} messages in {:.2} s = {:.0} messages/s end to end",
        r.messages, r.seconds, r.messages_per_sec
    );
    println!(
        "  delivery under flood: p50 {}  p95 {}  p99 {}  max {}",
        ms(r.delivery.p50_us),
        ms(r.delivery.p95_us),
        ms(r.delivery.p99_us),
        ms(r.delivery.max_us)
    );
    println!(
        "  delivery, one at a time ({}): p50 {}  p95 {}  p99 {}  max {}",
        r.light_messages,
        ms(r.light_delivery.p50_us),
        ms(r.light_delivery.p95_us),
        ms(r.light_delivery.p99_us),
        ms(r.light_delivery.max_us)
    );
}
