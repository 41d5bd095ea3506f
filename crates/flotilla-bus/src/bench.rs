//! Publish → receive measurement of a bus, for `examples/bus_bench.rs`
//! (`cargo run --release -p flotilla-bus --example bus_bench`).
//!
//! One publisher sends numbered messages on one fresh channel to `subscribers` subscribers of
//! that channel; each payload carries its send time, so each subscriber measures delivery
//! latency as it receives. The publisher keeps at most [`WINDOW`] messages in flight (sent but
//! not yet received by every subscriber), which stays under every subscriber's buffer: the
//! figures are those of a saturated bus that loses nothing, latency including the queueing
//! that saturation brings. A run is bounded in time ([`DEADLINE`]) and in the latencies it keeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::{Bus, Delivery, SUBSCRIBER_BUFFER};

/// Most messages in flight at once (sent, not yet received by all subscribers).
pub const WINDOW: usize = SUBSCRIBER_BUFFER / 4;
/// A run gives up after this long, reporting what it measured.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Most latency samples kept in all (every k-th message is sampled past this).
const MAX_SAMPLES: usize = 4_000_000;
/// Bytes of the header every payload starts with: sequence number, send time.
const HEADER: usize = 16;
/// How often a subscriber waiting for the end re-checks whether the publisher has finished.
const RECHECK: Duration = Duration::from_millis(50);

/// What one run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The backend, as [`Bus::describe`] names it.
    pub backend: String,
    /// Messages the publisher was asked to send.
    pub messages: usize,
    /// Bytes per payload (at least the 16-byte header).
    pub payload_bytes: usize,
    /// Subscribers that took part (fewer than asked if the backend refused some).
    pub subscribers: usize,
    /// Messages published successfully.
    pub published: usize,
    /// Copies received, all subscribers together (`published × subscribers` when complete).
    pub received: u64,
    /// Gaps the subscribers saw (0 unless something was lost).
    pub gaps: u64,
    /// Publishes that failed.
    pub publish_errors: u64,
    /// From the first publish to the last copy received.
    pub elapsed: Duration,
    /// Whether every copy arrived before the deadline.
    pub complete: bool,
    /// Delivery latency percentiles (publish call → subscriber's `next` returning).
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest delivery.
    pub max: Duration,
}

impl BenchReport {
    /// Messages per second, end to end: published messages over the time until every
    /// subscriber had them.
    pub fn messages_per_sec(&self) -> f64 {
        per_sec(self.published as f64, self.elapsed)
    }

    /// Copies received per second, all subscribers together.
    pub fn deliveries_per_sec(&self) -> f64 {
        per_sec(self.received as f64, self.elapsed)
    }
}

fn per_sec(count: f64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count / elapsed.as_secs_f64()
    }
}

/// What one subscriber task brings back.
struct Received {
    copies: u64,
    gaps: u64,
    latencies_ns: Vec<u64>,
    last_at: Option<Instant>,
}

/// Runs one measurement on `bus` (see the module comment). Needs a Tokio runtime; spawns one
/// task per subscriber.
pub async fn run(
    bus: &Bus,
    messages: usize,
    payload_bytes: usize,
    subscribers: usize,
) -> BenchReport {
    let subscribers = subscribers.max(1);
    let payload_bytes = payload_bytes.max(HEADER);
    let start = Instant::now();
    let deadline = start + DEADLINE;
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let channel = format!("bench:{}-{nonce}:fanout", std::process::id());
    let sample_every = (messages.saturating_mul(subscribers) / MAX_SAMPLES).max(1);

    let mut subscriptions = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        // A subscription the backend refuses (Redis down) is left out of the run: the report
        // says how many took part.
        if let Ok(subscription) = bus.subscribe(&channel).await {
            subscriptions.push(subscription);
        }
    }
    let subscribers = subscriptions.len();

    // The publisher's window: a permit per message in flight, given back by whichever
    // subscriber receives a message last.
    let window = Arc::new(Semaphore::new(WINDOW));
    let outstanding: Arc<Vec<AtomicU32>> = Arc::new(
        (0..messages)
            .map(|_| AtomicU32::new(subscribers as u32))
            .collect(),
    );
    // How many messages subscribers should expect: unknown (MAX) until the publisher is done.
    let expected = Arc::new(AtomicUsize::new(usize::MAX));

    let mut tasks = Vec::with_capacity(subscribers);
    for mut subscription in subscriptions {
        let (window, outstanding, expected) = (
            Arc::clone(&window),
            Arc::clone(&outstanding),
            Arc::clone(&expected),
        );
        tasks.push(tokio::spawn(async move {
            let mut got = Received {
                copies: 0,
                gaps: 0,
                latencies_ns: Vec::with_capacity(messages / sample_every + 1),
                last_at: None,
            };
            let mut seen = 0usize;
            while seen < expected.load(Ordering::Acquire) && Instant::now() < deadline {
                let delivery = match timeout(RECHECK, subscription.next()).await {
                    Ok(Some(delivery)) => delivery,
                    Ok(None) => break,
                    Err(_) => continue,
                };
                let Delivery::Message { payload, .. } = delivery else {
                    got.gaps += 1;
                    continue;
                };
                let now = Instant::now();
                let Some((seq, sent_ns)) = read_header(&payload) else {
                    continue;
                };
                seen += 1;
                got.copies += 1;
                got.last_at = Some(now);
                if seq % sample_every == 0 {
                    let now_ns = now.duration_since(start).as_nanos() as u64;
                    got.latencies_ns.push(now_ns.saturating_sub(sent_ns));
                }
                if let Some(left) = outstanding.get(seq)
                    && left.fetch_sub(1, Ordering::AcqRel) == 1
                {
                    window.add_permits(1);
                }
            }
            got
        }));
    }

    let mut payload = vec![0u8; payload_bytes];
    let (mut published, mut publish_errors) = (0usize, 0u64);
    let mut first_publish = None;
    // Without subscribers nothing would give permits back; there is nothing to measure.
    let to_send = if subscribers == 0 { 0 } else { messages };
    for seq in 0..to_send {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, window.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            _ => break, // deadline: subscribers are not keeping up (or lost messages)
        }
        let sent_ns = start.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&(seq as u64).to_le_bytes());
        payload[8..HEADER].copy_from_slice(&sent_ns.to_le_bytes());
        first_publish.get_or_insert_with(Instant::now);
        match bus.publish(&channel, &payload).await {
            Ok(()) => published += 1,
            Err(_) => {
                publish_errors += 1;
                // Nobody will receive it, so nobody gives its permit back.
                window.add_permits(1);
            }
        }
    }
    expected.store(published, Ordering::Release);

    let mut latencies = Vec::new();
    let (mut received, mut gaps, mut last_at) = (0u64, 0u64, None::<Instant>);
    for task in tasks {
        let Ok(got) = task.await else { continue };
        received += got.copies;
        gaps += got.gaps;
        last_at = last_at.max(got.last_at);
        latencies.extend(got.latencies_ns);
    }
    latencies.sort_unstable();
    let percentile = |p: f64| {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len());
        Duration::from_nanos(latencies[rank - 1])
    };
    let elapsed = match (first_publish, last_at) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    BenchReport {
        backend: bus.describe(),
        messages,
        payload_bytes,
        subscribers,
        published,
        received,
        gaps,
        publish_errors,
        elapsed,
        complete: published == messages && received == (published as u64) * (subscribers as u64),
        p50: percentile(0.50),
        p95: percentile(0.95),
        p99: percentile(0.99),
        max: percentile(1.0),
    }
}

fn read_header(payload: &[u8]) -> Option<(usize, u64)> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let sent_ns = u64::from_le_bytes(payload.get(8..HEADER)?.try_into().ok()?);
    Some((usize::try_from(seq).ok()?, sent_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_on_the_memory_bus_is_complete_and_ordered_in_its_figures() {
        let bus = Bus::memory();
        let report = run(&bus, 2_000, 64, 3).await;
        assert!(report.complete, "{report:?}");
        assert_eq!(report.received, 6_000);
        assert_eq!(report.gaps, 0);
        assert!(report.p50 <= report.p95 && report.p95 <= report.p99 && report.p99 <= report.max);
        assert!(report.messages_per_sec() > 0.0);
        // The run's subscriptions are gone with it.
        assert_eq!(bus.subscriber_count(), 0);
    }
}
