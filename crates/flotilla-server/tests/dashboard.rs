//! The dashboard's server side: the event WebSocket authenticated by the `bearer.<token>`
//! subprotocol a browser must use, and `GET /events?latest=true` (the newest events, which the
//! dashboard's live list starts from).

mod common;

use std::time::Duration;

use common::Harness;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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

    // The subprotocol is read on WebSocket upgrades only: a plain request carrying it is
    // refused as if it had no token.
    let resp = h
        .http
        .get(h.url("/orchestrator"))
        .header(
            "Sec-WebSocket-Protocol",
            format!("flotilla, bearer.{admin}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
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
