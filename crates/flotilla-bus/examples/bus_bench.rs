//! Publish → receive figures of the bus, in-process and on Redis.
//!
//! ```text
//! cargo run --release -p flotilla-bus --example bus_bench [-- --quick]
//! ```
//!
//! Redis is `FLOTILLA_BENCH_REDIS_URL`, else `FLOTILLA_TEST_REDIS_URL`, else
//! `redis://127.0.0.1:6379`; its rows are skipped, with a word, if it cannot be reached.
//! Each row is one `flotilla_bus::bench::run`: one publisher, N subscribers of one channel.

use std::time::Duration;

use flotilla_bus::Bus;
use flotilla_bus::bench::{self, BenchReport};

/// (messages, payload bytes, subscribers) per row.
const FULL: &[(usize, usize, usize)] = &[
    (100_000, 64, 1),
    (20_000, 4_096, 1),
    (20_000, 64, 10),
    (5_000, 64, 100),
    (1_000, 64, 1_000),
];
const QUICK: &[(usize, usize, usize)] = &[(10_000, 64, 1), (2_000, 64, 10), (200, 64, 1_000)];

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rows = if quick { QUICK } else { FULL };

    header();
    let memory = Bus::memory();
    for &(messages, bytes, subscribers) in rows {
        print_row(&bench::run(&memory, messages, bytes, subscribers).await);
    }

    let url = std::env::var("FLOTILLA_BENCH_REDIS_URL")
        .or_else(|_| std::env::var("FLOTILLA_TEST_REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    match Bus::connect(&url).await {
        Ok(redis) => {
            for &(messages, bytes, subscribers) in rows {
                print_row(&bench::run(&redis, messages, bytes, subscribers).await);
            }
        }
        Err(e) => println!("(Redis rows skipped: {e})"),
    }
}

fn header() {
    println!(
        "{:<24} {:>8} {:>6} {:>5} {:>11} {:>12} {:>9} {:>9} {:>9} {:>9} {:>5}",
        "backend",
        "messages",
        "bytes",
        "subs",
        "msgs/s",
        "copies/s",
        "p50",
        "p95",
        "p99",
        "max",
        "ok"
    );
}

fn print_row(r: &BenchReport) {
    println!(
        "{:<24} {:>8} {:>6} {:>5} {:>11.0} {:>12.0} {:>9} {:>9} {:>9} {:>9} {:>5}",
        r.backend,
        r.published,
        r.payload_bytes,
        r.subscribers,
        r.messages_per_sec(),
        r.deliveries_per_sec(),
        micros(r.p50),
        micros(r.p95),
        micros(r.p99),
        micros(r.max),
        if r.complete {
            "yes".to_owned()
        } else {
            format!("NO ({} gaps, {} errors)", r.gaps, r.publish_errors)
        },
    );
}

fn micros(d: Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}µs", d.as_micros())
    }
}
