//! The dashboard's files as a browser gets them (content types, ETag revalidation, the
//! Content-Security-Policy, no token needed), the event WebSocket authenticated by the
//! `bearer.<token>` subprotocol a browser must use, and `GET /events?latest=true`.

mod common;

use std::time::Duration;

use common::Harness;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const FILES: [(&str, &str); 5] = [
    ("/", "text/html; charset=utf-8"),
    ("/app.js", "text/javascript; charset=utf-8"),
    ("/charts.js", "text/javascript; charset=utf-8"),
    ("/style.css", "text/css; charset=utf-8"),
    ("/favicon.svg", "image/svg+xml"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_are_served_with_their_types_a_strict_policy_and_no_token() {
    let h = Harness::start().await;
    for (path, content_type) in FILES {
        let resp = h
            .http
            .get(format!("{}{path}", h.server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let headers = resp.headers().clone();
        assert_eq!(headers[CONTENT_TYPE], content_type, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert_eq!(csp, flotilla_server::dashboard::POLICY, "{path}");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-cache");
        assert!(headers.contains_key(ETAG), "{path}");
        let body = resp.bytes().await.unwrap();
        assert!(!body.is_empty(), "{path}");
    }
    let page = h
        .http
        .get(h.server.url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<script type="module" src="/app.js"></script>"#));
    // No inline script or style that the policy would block.
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "{page}"
    );
    // The API still wants its token; unknown paths are still JSON 404s.
    let resp = h.http.get(h.url("/swarms")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = h
        .http
        .get(format!("{}/nothing.js", h.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_etag_is_answered_304_without_a_body() {
    let h = Harness::start().await;
    let url = format!("{}/app.js", h.server.url());
    let first = h.http.get(&url).send().await.unwrap();
    let etag = first.headers()[ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    for sent in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
    ] {
        let again = h
            .http
            .get(&url)
            .header(IF_NONE_MATCH, &sent)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{sent}");
        assert_eq!(again.headers()[ETAG], etag.as_str());
        assert!(again.headers().contains_key("content-security-policy"));
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let changed = h
        .http
        .get(&url)
        .header(IF_NONE_MATCH, "\"an-older-build\"")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    // Each file has its own tag.
    let css = h
        .http
        .get(format!("{}/style.css", h.server.url()))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
}

/// Opens the event WebSocket with these subprotocols and no Authorization header.
async fn open_with_protocols(
    h: &Harness,
    protocols: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tungstenite::handshake::client::Response,
    ),
    tungstenite::Error,
> {
    let url = format!(
        "ws://{}/api/v1/events/ws?type=task_submitted",
        h.server.addr
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    tokio_tungstenite::connect_async(req).await
}

fn refused_with(result: Result<impl Sized, tungstenite::Error>, status: u16) {
    match result {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), status),
        Err(e) => panic!("expected HTTP {status}, got {e}"),
        Ok(_) => panic!("expected HTTP {status}, the socket opened"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_take_the_token_from_a_subprotocol() {
    let h = Harness::start().await;
    let admin = h.server.admin_token.clone();
    let (mut ws, resp) = open_with_protocols(&h, &format!("flotilla, bearer.{admin}"))
        .await
        .expect("the socket opens with the token as a subprotocol");
    // The server picks `flotilla`, never echoing the token back.
    assert_eq!(resp.headers()["sec-websocket-protocol"], "flotilla");
    let t = h.submit("default", json!({"type": "from-a-browser"})).await;
    let frame = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        if let tungstenite::Message::Text(t) = m {
            break serde_json::from_str::<Value>(t.as_str()).unwrap();
        }
    };
    assert_eq!(frame["events"][0]["task_id"], t["id"]);

    // A wrong token, an agent's token (the log is the admin's) and no token at all.
    refused_with(
        open_with_protocols(&h, "flotilla, bearer.flt_0000").await,
        401,
    );
    let (agent, agent_token) = h.register("default", json!({"name": "nosy"})).await;
    refused_with(
        open_with_protocols(&h, &format!("flotilla, bearer.{agent_token}")).await,
        403,
    );
    // The agent's own message socket takes its token the same way.
    let url = format!("ws://{}/api/v1/agents/{agent}/messages/ws", h.server.addr);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("flotilla, bearer.{agent_token}").parse().unwrap(),
    );
    let (_inbox, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the agent's message socket opens");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "flotilla");
    refused_with(open_with_protocols(&h, "flotilla").await, 401);

    // The subprotocol is read on WebSocket upgrades of the sockets only: a plain request
    // carrying it, or an upgrade of a route that is not a socket, is refused as if it had no
    // token.
    for upgrade in [false, true] {
        let mut req = h.http.get(h.url("/orchestrator")).header(
            "Sec-WebSocket-Protocol",
            format!("flotilla, bearer.{admin}"),
        );
        if upgrade {
            req = req
                .header("Connection", "Upgrade")
                .header("Upgrade", "websocket");
        }
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "upgrade: {upgrade}"
        );
    }
    // An Authorization header still works on the socket, and wins over the subprotocol.
    let url = format!("ws://{}/api/v1/events/ws", h.server.addr);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {admin}").parse().unwrap());
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "flotilla, bearer.flt_0000".parse().unwrap(),
    );
    let (_ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("the header's token is used");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "flotilla");
}

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
