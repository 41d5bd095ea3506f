//! The dashboard's server side: `GET /events?latest=true` (the newest events, which the
//! dashboard's live list starts from).

mod common;

use common::Harness;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_events_are_the_newest_in_log_order() {
    let h = Harness::start().await;
    for i in 0..5 {
        h.submit("default", json!({"type": format!("t{i}")})).await;
    }
    let (s, all) = h.get("/events?type=task_submitted").await;
    assert_eq!(s, StatusCode::OK);
    let all: Vec<u64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(all.len(), 5);
    let (s, latest) = h
        .get("/events?type=task_submitted&latest=true&limit=2")
        .await;
    assert_eq!(s, StatusCode::OK, "{latest}");
    let latest: Vec<u64> = latest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(latest, all[3..].to_vec());
}
