//! `flotilla top` end to end: the real binary in a real terminal (a private tmux server) against
//! a coordinator with a few agents, read back with `tmux capture-pane`; its refusal without a
//! terminal; and what one frame costs (read + derive + draw) with 1,000 agents.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flotilla_cli::commands::top::{fetch, model, render};
use flotilla_core::{AgentId, AgentSpec, Heartbeat, Timestamp};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Registers a connected agent named `name` in `swarm`; its id and a client acting as it.
async fn register(h: &Harness, swarm: &str, name: &str) -> (AgentId, flotilla_client::Client) {
    let spec = AgentSpec {
        name: Some(name.to_owned()),
        ..AgentSpec::default()
    };
    let reg = h
        .admin
        .register_agent(swarm, &spec)
        .await
        .expect("register");
    (reg.agent_id, h.admin.with_token(reg.token))
}

/// What the pane shows now.
fn screen(tmux: &PrivateTmux) -> String {
    tmux.run(&["capture-pane", "-p", "-t", "top"])
        .unwrap_or_default()
}

/// Waits until the pane shows everything in `want`; returns the screen.
async fn shows(tmux: &PrivateTmux, want: &[&str], within: Duration) -> String {
    poll(&format!("the screen to show {want:?}"), within, || async {
        let s = screen(tmux);
        if want.iter().all(|w| s.contains(w)) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_the_fleet_in_tmux_and_gives_the_terminal_back() {
    if !tmux_available() {
        return;
    }
    let h = Harness::start().await;
    h.admin
        .create_swarm(&serde_json::from_value(serde_json::json!({"name": "night"})).unwrap())
        .await
        .expect("create a swarm");
    let (busy, busy_client) = register(&h, "default", "reviewer-busy").await;
    let (idle, idle_client) = register(&h, "default", "reviewer-idle").await;
    let (owl, owl_client) = register(&h, "night", "night-owl").await;
    let taker = busy_client.clone();
    // Keep the leases while the test runs.
    let beats = tokio::spawn(async move {
        loop {
            let _ = busy_client.heartbeat(busy, &Heartbeat::default()).await;
            let _ = idle_client.heartbeat(idle, &Heartbeat::default()).await;
            let _ = owl_client.heartbeat(owl, &Heartbeat::default()).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let task = h
        .submit("default", serde_json::json!({"type": "review-pr"}))
        .await;
    let taken = taker
        .next_task(busy, Duration::from_secs(5))
        .await
        .expect("next task")
        .expect("the busy agent takes the task");
    assert_eq!(taken.id, task);
    h.submit("night", serde_json::json!({"type": "later"}))
        .await;

    let tmux = PrivateTmux::new();
    let dir = h.path("tty");
    std::fs::create_dir_all(&dir).unwrap();
    // The shell records the terminal's settings before and after, and says how top ended.
    let script = format!(
        "stty -g > '{d}/before'; printf 'before top\\n'; \
         '{bin}' top --interval 200ms; echo \"top exited $?\"; \
         stty -g > '{d}/after'; exec sleep 600",
        d = dir.display(),
        bin = FLOTILLA,
    );
    let url = format!("FLOTILLA_URL={}", h.server().url());
    let token = format!("FLOTILLA_TOKEN={}", h.server().admin_token);
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "200",
        "-y",
        "50",
        "-e",
        &url,
        "-e",
        &token,
        "sh",
        "-c",
        &script,
    ])
    .expect("tmux starts a session");

    let s = shows(
        &tmux,
        &[
            "flotilla top",
            "reviewer-busy",
            "reviewer-idle",
            "night-owl",
            "busy",
            "idle",
            "review-pr",
            "swarms 2",
            "agents 3: 2 idle · 1 busy",
            "▶ Agents",
            "task_started",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert!(s.contains("night"), "{s}");

    // Tab moves the focus to the queue; s shows one swarm alone.
    tmux.run(&["send-keys", "-t", "top", "Tab"]).unwrap();
    shows(&tmux, &["▶ Queue"], Duration::from_secs(5)).await;
    tmux.run(&["send-keys", "-t", "top", "s"]).unwrap();
    let alone = shows(
        &tmux,
        &["showing swarm default", "agents 2: 1 idle · 1 busy"],
        Duration::from_secs(5),
    )
    .await;
    assert!(!alone.contains("night-owl"), "{alone}");
    tmux.run(&["send-keys", "-t", "top", "?"]).unwrap();
    shows(
        &tmux,
        &["pause or resume the refresh"],
        Duration::from_secs(5),
    )
    .await;

    // q quits: the shell's own screen is back, and the terminal's settings are as before.
    tmux.run(&["send-keys", "-t", "top", "q"]).unwrap();
    let after = shows(&tmux, &["top exited 0"], Duration::from_secs(10)).await;
    assert!(
        after.contains("before top"),
        "the screen from before top: {after}"
    );
    assert!(
        !after.contains("reviewer-busy"),
        "top's screen is gone: {after}"
    );
    let settings = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    wait_until(
        "stty to record the settings after",
        Duration::from_secs(5),
        || {
            if settings("after").is_empty() {
                Err("not yet")
            } else {
                Ok(())
            }
        },
    )
    .await;
    assert_eq!(settings("before"), settings("after"), "raw mode was left");

    beats.abort();
    drop(tmux);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_refuses_to_run_without_a_terminal() {
    let h = Harness::start().await;
    let out = h.cli(&["top"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(
        err.contains("flotilla agent list") && err.contains("--json"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    h.finish().await;
}

/// One frame of `flotilla top` with 1,000 agents: read a snapshot over HTTP, derive the view,
/// draw it. Prints the figures (`--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_with_1000_agents() {
    const AGENTS: usize = 1000;
    let h = Harness::start().await;
    let started = Instant::now();
    for chunk in (0..AGENTS).collect::<Vec<_>>().chunks(50) {
        let regs = chunk.iter().map(|i| {
            let spec = AgentSpec {
                name: Some(format!("load-{i}")),
                ..AgentSpec::default()
            };
            let admin = h.admin.clone();
            async move { admin.register_agent("default", &spec).await }
        });
        for r in futures_util::future::join_all(regs).await {
            r.expect("register");
        }
    }
    eprintln!("registered {AGENTS} agents in {:?}", started.elapsed());
    for i in 0..200 {
        h.submit("default", serde_json::json!({"type": format!("job-{i}")}))
            .await;
    }

    let mut m = model::Model::new(&h.server().url(), Duration::from_secs(1), None);
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).unwrap();
    let (mut reads, mut derives, mut draws) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        let t = Instant::now();
        let snap = fetch::snapshot(&h.admin, None).await.expect("a snapshot");
        let read = t.elapsed();
        assert_eq!(snap.agents.len(), AGENTS);
        let t = Instant::now();
        m.apply(Ok(snap), Instant::now());
        let derive = t.elapsed();
        let t = Instant::now();
        let clock = render::Clock {
            wall: Timestamp::from_millis(chrono::Utc::now().timestamp_millis()),
            mono: Instant::now(),
        };
        terminal
            .draw(|f| render::draw(f, &m, render::Palette::new(true), clock))
            .unwrap();
        let draw = t.elapsed();
        reads.push(read);
        derives.push(derive);
        draws.push(draw);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (read, derive, draw) = (median(&mut reads), median(&mut derives), median(&mut draws));
    eprintln!(
        "one frame with {AGENTS} agents (median of 7{}): read {read:?} + derive {derive:?} + \
         draw {draw:?} = {:?}",
        if cfg!(debug_assertions) {
            ", debug build"
        } else {
            ""
        },
        read + derive + draw
    );
    let screen: String = terminal
        .backend()
        .buffer()
        .content()
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(screen.contains("agents 1000"), "{screen}");
    // Responsive: a frame well within the default 1 s interval, even unoptimized.
    assert!(
        read + derive + draw < Duration::from_secs(1),
        "read {read:?} derive {derive:?} draw {draw:?}"
    );
    h.finish().await;
}
