//! `flotilla bench`'s API scenarios run end to end at a small size and report what they
//! measured (the figures themselves are for `docs/benchmarks.md`, not for assertions).

mod common;

use std::process::Command;

use common::FLOTILLA;
use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(FLOTILLA)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("flotilla bench runs");
    assert!(
        out.status.success(),
        "bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn the_api_scenarios_measure_what_they_say() {
    let r = bench(&["register", "--agents", "20"]);
    assert_eq!(r["register"]["agents"], 20, "{r:#}");
    assert!(r["register"]["per_second"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(
        r["register"]["latency"]["p99_us"].as_u64().unwrap() > 0,
        "{r:#}"
    );

    let r = bench(&["status", "--agents", "50", "--queries", "20"]);
    assert_eq!(r["status"][0]["agents"], 50, "{r:#}");
    assert_eq!(r["status"][0]["queries"], 20, "{r:#}");

    let r = bench(&[
        "heartbeat",
        "--agents",
        "10",
        "--seconds",
        "1",
        "--submitters",
        "2",
    ]);
    assert!(r["heartbeat"]["heartbeats"].as_u64().unwrap() > 0, "{r:#}");

    let r = bench(&["failover", "--rounds", "2", "--timeout", "60"]);
    assert_eq!(r["failover"]["rounds"], 2, "{r:#}");
    assert!(
        r["failover"]["requeued"]["max_us"].as_u64().unwrap() > 0,
        "{r:#}"
    );

    let r = bench(&[
        "memory",
        "--agents",
        "10",
        "--tasks",
        "2000",
        "--timeout",
        "60",
    ]);
    assert_eq!(r["memory"]["tasks"], 2000, "{r:#}");
    let (base, loaded) = (
        r["memory"]["base_rss_mib"].as_f64().unwrap(),
        r["memory"]["loaded_rss_mib"].as_f64().unwrap(),
    );
    assert!(base > 1.0 && loaded > 1.0, "{r:#}");
}
