//! Tokens, the audit log and the per-token cap on open streams, through the API of a real
//! coordinator.

mod common;

use std::time::Duration;

use common::Harness;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn create_token(h: &Harness, body: Value) -> (String, String) {
    let (s, v) = h.post("/tokens", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v.get("hash").is_none(), "never the hash: {v}");
    (
        v["token"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn roles_expiry_and_revocation_take_effect_at_once() {
    let h = Harness::start().await;
    let (viewer, _) = create_token(&h, json!({"role": "viewer"})).await;
    let (operator, operator_id) =
        create_token(&h, json!({"role": "operator", "label": "ci"})).await;

    // A viewer reads, an operator also submits, only an admin creates swarms.
    let (s, _) = h.call_as(&viewer, Method::GET, "/swarms", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h
        .call_as(
            &viewer,
            Method::POST,
            "/swarms/default/tasks",
            Some(json!({"type": "t"})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("operator"),
        "says which role it needs: {v}"
    );
    let (s, v) = h
        .call_as(
            &operator,
            Method::POST,
            "/swarms/default/tasks",
            Some(json!({"type": "t"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = h
        .call_as(
            &operator,
            Method::POST,
            "/swarms",
            Some(json!({"name": "x"})),
        )
        .await;
    Harness::assert_error(s, &v, StatusCode::FORBIDDEN, "forbidden");

    // Listed without secrets; revoked at once.
    let (s, list) = h.get("/tokens").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let text = list.to_string();
    assert!(
        !text.contains(&operator) && !text.contains(&viewer),
        "{text}"
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == operator_id.as_str()
                && t["role"] == "operator"
                && t["label"] == "ci"),
        "{list}"
    );
    let (s, v) = h
        .call(Method::DELETE, &format!("/tokens/{operator_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["revoked_at"].is_string(), "{v}");
    let (s, v) = h.call_as(&operator, Method::GET, "/swarms", None).await;
    Harness::assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, v) = h
        .call(Method::DELETE, &format!("/tokens/{operator_id}"), None)
        .await;
    Harness::assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (_, all) = h.get("/tokens?all=true").await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == operator_id.as_str() && t["revoked_at"].is_string()),
        "{all}"
    );

    // Expiry.
    let (short, _) = create_token(&h, json!({"role": "viewer", "expires_in_ms": 300})).await;
    let (s, _) = h.call_as(&short, Method::GET, "/swarms", None).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, v) = h.call_as(&short, Method::GET, "/swarms", None).await;
    Harness::assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );

    // Bad specs.
    for bad in [
        json!({"role": "root"}),
        json!({"role": "agent"}),
        json!({"role": "viewer", "swarm": "nope"}),
        json!({"role": "viewer", "expires_in_ms": 0}),
        json!({"role": "viewer", "expires_in_ms": u64::MAX}),
        json!({"role": "viewer", "label": "a\nb"}),
        json!({"role": "viewer", "extra": 1}),
    ] {
        let (s, v) = h.post("/tokens", bad.clone()).await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
            "{bad}: {s} {v}"
        );
        assert!(v["error"]["code"].is_string(), "{v}");
    }
}

#[tokio::test]
async fn the_last_admin_token_stays_and_a_revoked_admin_file_is_replaced_at_restart() {
    let h = Harness::start().await;
    let (_, tokens) = h.get("/tokens").await;
    let file_admin = tokens.as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, v) = h
        .call(Method::DELETE, &format!("/tokens/{file_admin}"), None)
        .await;
    Harness::assert_error(s, &v, StatusCode::CONFLICT, "conflict");

    let (second, _) = create_token(&h, json!({"role": "admin"})).await;
    let old = h.server.admin_token.clone();
    let (s, v) = h
        .call_as(
            &second,
            Method::DELETE,
            &format!("/tokens/{file_admin}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = h.call_as(&old, Method::GET, "/swarms", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let Harness { server, dir, .. } = h;
    server.shutdown().await.unwrap();
    let h = Harness::start_with(dir, |_| {}).await;
    assert!(
        h.server.admin_token_created,
        "a new admin token was written"
    );
    assert_ne!(h.server.admin_token, old);
    let on_disk = std::fs::read_to_string(&h.server.admin_token_path).unwrap();
    assert_eq!(on_disk.trim(), h.server.admin_token);
    let (s, _) = h.get("/swarms").await;
    assert_eq!(s, StatusCode::OK, "the new file token works");
    let (s, _) = h.call_as(&old, Method::GET, "/swarms", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the old one stays revoked");
    let (s, _) = h.call_as(&second, Method::GET, "/swarms", None).await;
    assert_eq!(s, StatusCode::OK, "other tokens survive the restart");
}

#[tokio::test]
async fn the_audit_log_says_who_did_what_from_where_and_never_holds_a_secret() {
    let h = Harness::start().await;
    let (viewer, viewer_id) = create_token(&h, json!({"role": "viewer"})).await;
    let (operator, operator_id) = create_token(&h, json!({"role": "operator"})).await;
    let (agent, agent_token) = h.register("default", json!({"name": "a"})).await;

    let send = |token: String, method: Method, path: &str, body: Option<Value>, rid: &str| {
        let req = h
            .http
            .request(method, h.url(path))
            .bearer_auth(token)
            .header("x-request-id", rid);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        async move { req.send().await.unwrap().status() }
    };
    let s = send(
        operator.clone(),
        Method::POST,
        "/swarms/default/tasks",
        Some(json!({"type": "t"})),
        "submit-1",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let s = send(
        viewer.clone(),
        Method::DELETE,
        "/swarms/default",
        None,
        "refused-1",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let s = send(
        "flt_nonsense".into(),
        Method::GET,
        "/swarms",
        None,
        "unknown-1",
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let s = send(
        agent_token.clone(),
        Method::POST,
        &format!("/agents/{agent}/heartbeat"),
        Some(json!({})),
        "beat-1",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let s = send(viewer.clone(), Method::GET, "/tasks", None, "read-1").await;
    assert_eq!(s, StatusCode::OK);

    let (s, log) = common::eventually("the audit entries", Duration::from_secs(5), || async {
        let (s, v) = h.get("/audit?limit=1000").await;
        let ids: Vec<String> = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["request_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (["submit-1", "refused-1", "unknown-1"]
            .iter()
            .all(|r| ids.iter().any(|i| i == r)))
        .then_some((s, v))
    })
    .await;
    assert_eq!(s, StatusCode::OK);
    let items = log["items"].as_array().unwrap();
    let find = |rid: &str| items.iter().find(|e| e["request_id"] == rid);

    let submit = find("submit-1").expect("the submission");
    assert_eq!(submit["token_id"], operator_id.as_str());
    assert_eq!(submit["role"], "operator");
    assert_eq!(submit["method"], "POST");
    assert_eq!(submit["path"], "/api/v1/swarms/default/tasks");
    assert_eq!(submit["action"], "POST /api/v1/swarms/{swarm}/tasks");
    assert_eq!(submit["status"], 201);
    assert_eq!(submit["outcome"], "ok");
    assert!(
        submit["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with("127.0.0.1:")),
        "from where: {submit}"
    );

    let refused = find("refused-1").expect("the refused deletion");
    assert_eq!(refused["token_id"], viewer_id.as_str());
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["outcome"], "forbidden");
    let unknown = find("unknown-1").expect("the unknown token");
    assert_eq!(unknown["token_id"], Value::Null);
    assert_eq!(unknown["outcome"], "unauthorized");

    assert!(find("beat-1").is_none(), "heartbeats are not audited");
    assert!(find("read-1").is_none(), "reads are not audited");
    // Token creations are audited too, newest first.
    let seqs: Vec<u64> = items.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert!(items.iter().any(|e| e["action"] == "POST /api/v1/tokens"));

    let text = log.to_string();
    for secret in [&viewer, &operator, &agent_token, &h.server.admin_token] {
        assert!(!text.contains(secret.as_str()), "a secret in the audit log");
    }

    let (_, denied) = h.get("/audit?denied=true").await;
    assert!(
        denied["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == 403 || e["status"] == 401),
        "{denied}"
    );
    let (_, mine) = h.get(&format!("/audit?token={viewer_id}")).await;
    assert!(
        mine["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["token_id"] == viewer_id.as_str()),
        "{mine}"
    );
    let (_, page) = h.get("/audit?limit=2").await;
    let cursor = page["next_cursor"]
        .as_str()
        .expect("more than two entries")
        .to_owned();
    let (_, next) = h.get(&format!("/audit?limit=2&cursor={cursor}")).await;
    let first_next = next["items"][0]["seq"].as_u64().unwrap();
    assert!(first_next < page["items"][1]["seq"].as_u64().unwrap());
    for bad in [
        "/audit?since=yesterday",
        "/audit?cursor=x",
        "/audit?limit=0",
        "/audit?bogus=1",
    ] {
        let (s, v) = h.get(bad).await;
        Harness::assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    }
    // Only fleet administrators read it.
    let (s, _) = h.call_as(&operator, Method::GET, "/audit", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_token_holds_at_most_its_share_of_open_streams() {
    let h = Harness::start_with(tempfile::tempdir().unwrap(), |c| {
        c.max_streams_per_token = 2
    })
    .await;
    let (viewer, _) = create_token(&h, json!({"role": "viewer"})).await;
    let open = || {
        h.http
            .get(h.url("/events/stream"))
            .bearer_auth(&viewer)
            .send()
    };
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    let third = open().await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let v: Value = third.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_streams", "{v}");
    // Another token has its own share; reads that do not stream are not counted.
    let (s, _) = h.get("/events").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.call_as(&viewer, Method::GET, "/events", None).await;
    assert_eq!(s, StatusCode::OK);
    let admin_stream = h
        .http
        .get(h.url("/events/stream"))
        .bearer_auth(&h.server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(admin_stream.status(), StatusCode::OK);
    // Closing a stream frees its slot.
    drop(first);
    common::eventually("a freed slot", Duration::from_secs(5), || async {
        let r = open().await.unwrap();
        (r.status() == StatusCode::OK).then_some(r)
    })
    .await;
}
