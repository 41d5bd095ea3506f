//! `flotilla serve --config FILE`: a real coordinator started from a settings file, the
//! command line and the environment winning over it, and a bad file refused at once.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_runs_from_a_settings_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().join("elsewhere.db");
    let file = dir.path().join("serve.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstore = \"sqlite:{}\"\nhost_timeout = \"5s\"\nbus = \"redis://127.0.0.1:1\"\n",
            db.display()
        ),
    )
    .unwrap();
    // The environment wins over the file: the bus stays in memory (the file's Redis URL
    // would not answer).
    let mut child = Command::new(FLOTILLA)
        .args(["serve", "--config"])
        .arg(&file)
        .env("FLOTILLA_DATA_DIR", dir.path().join("data"))
        .env("FLOTILLA_BUS", "memory")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the coordinator did not come up on the file's address"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the coordinator exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    let out = Command::new(FLOTILLA)
        .args(["status", "--json"])
        .env("FLOTILLA_URL", &url)
        .env("FLOTILLA_TOKEN", token.trim())
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        info["store"].as_str().unwrap().contains("elsewhere.db"),
        "{info:#}"
    );
    assert_eq!(info["bus"], "in-process", "{info:#}");
    assert!(db.is_file());
}

#[test]
fn a_bad_settings_file_stops_the_coordinator_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(&file, "stroe = \"postgres://x\"\n").unwrap();
    let out = Command::new(FLOTILLA)
        .args(["serve", "--config"])
        .arg(&file)
        .env("FLOTILLA_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("serve.toml: \"stroe\" is not a setting"),
        "{err}"
    );
    let out = Command::new(FLOTILLA)
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"),
        "{out:?}"
    );
}
