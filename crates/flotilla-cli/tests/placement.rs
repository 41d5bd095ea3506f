//! Placement strategies end to end: a coordinator in this process, real managed agents, the
//! strategy set with the CLI as a user would.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const SHORT: Duration = Duration::from_secs(15);

/// Sleeps a little, then prints nothing (the result is `null`).
const AGENT: &str = "#!/bin/sh\nsleep 0.2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_keeps_a_key_on_one_agent_and_round_robin_does_not() {
    let h = Harness::start().await;
    let script = h.write_script("agent.sh", AGENT);
    h.put_pool(
        "default",
        json!({
            "name": "coder",
            "min_agents": 2,
            "max_agents": 2,
            "agent": h.template(json!({ "command": script.to_str().unwrap(), "mode": "exec" })),
        }),
    )
    .await;
    poll("two idle agents", SHORT, || async {
        let agents = h.agents("default", "coder").await;
        if agents.len() == 2 && agents.iter().all(|a| a["status"] == "idle") {
            Ok(())
        } else {
            Err(agents)
        }
    })
    .await;

    // One keyed task at a time: which agent runs each?
    async fn ran_on(h: &Harness, n: usize) -> Vec<String> {
        let mut on = Vec::new();
        for _ in 0..n {
            let id = h
                .submit(
                    "default",
                    json!({ "type": "edit", "affinity_key": "repo-a" }),
                )
                .await;
            let t = h.finished(id, SHORT).await;
            assert_eq!(t["status"], "completed", "{t:#}");
            on.push(t["agent_id"].as_str().unwrap().to_owned());
            // Both agents are waiting again before the next task comes.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        on
    }

    let turns = ran_on(&h, 4).await;
    assert!(
        turns.windows(2).any(|w| w[0] != w[1]),
        "round robin spreads the tasks over both agents: {turns:?}"
    );

    let out = h.cli(&[
        "swarm",
        "update",
        "default",
        "--strategy",
        "affinity",
        "--affinity-wait",
        "30s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = h.cli(&["swarm", "show", "default"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("affinity (a keyed task waits 30s for its agent), prefetch 0"),
        "{text}"
    );
    let kept = ran_on(&h, 5).await;
    // The first may go anywhere; the rest follow it.
    assert!(
        kept.iter().all(|a| *a == kept[0]),
        "affinity keeps repo-a on one agent: {kept:?}"
    );

    let out = h.cli(&["swarm", "update", "default", "--strategy", "fastest"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("least_loaded"), "{err}");
    h.finish().await;
}
