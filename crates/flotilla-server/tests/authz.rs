//! The authorization matrix: every endpoint of the route table, called with every kind of
//! token (none, unknown, expired, revoked; viewer, operator, admin of the whole fleet; the three
//! roles limited to one swarm, on that swarm and on another; the agent itself, another agent of
//! its swarm, an agent of another swarm), gets the status its rule says.
//!
//! The rows come from `flotilla_server::routes::table()`, which also builds the router: a new
//! endpoint is in the matrix the moment it exists. The matrix is also written out in
//! `docs/security.md`; a rule that changes without the document failing this test would be a
//! silent change of who may do what (`FLOTILLA_BLESS=1` rewrites the document).
//!
//! Requests carry a probe: an unknown query parameter and, for methods with a body, malformed
//! JSON. A handler that parses either refuses it (400) after authorization, so allowed calls
//! prove they got past the checks without changing anything.

mod common;

use std::time::Duration;

use common::Harness;
use flotilla_server::access::{Access, Agents, Target};
use flotilla_server::auth::Role;
use flotilla_server::routes::{Route, table};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    NoToken,
    Unknown,
    Expired,
    Revoked,
    User(Role),
    Scoped(Role),
    /// The agent the path names (agent A), or holding the task / party to the message.
    AgentSelf,
    /// Another agent of the same swarm.
    AgentPeer,
    /// An agent of another swarm.
    AgentForeign,
}

/// What should happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Unauthorized,
    Forbidden,
    /// 404, as for something that does not exist.
    Hidden,
    /// Past authorization: neither 401 nor 403.
    Allowed,
    /// Past the route's rule; the handler refuses it (anything but a success).
    Refused,
}

fn expect(access: &Access, who: Who, own_swarm: bool) -> Expect {
    match who {
        Who::NoToken | Who::Unknown | Who::Expired | Who::Revoked => Expect::Unauthorized,
        Who::User(role) if role < access.role => Expect::Forbidden,
        Who::User(_) => Expect::Allowed,
        Who::Scoped(role) if role < access.role => Expect::Forbidden,
        Who::Scoped(_) => match access.target {
            Target::Fleet => Expect::Forbidden,
            Target::Listed => Expect::Allowed,
            _ if own_swarm => Expect::Allowed,
            _ => Expect::Hidden,
        },
        Who::AgentSelf | Who::AgentPeer | Who::AgentForeign => match (access.agents, who) {
            (Agents::Refused, _) => Expect::Forbidden,
            (_, Who::AgentSelf) => Expect::Allowed,
            (Agents::Own, _) => Expect::Forbidden,
            (Agents::SameSwarm, Who::AgentPeer) => Expect::Allowed,
            (Agents::SameSwarm, _) => Expect::Forbidden,
            (Agents::Handler, _) => Expect::Refused,
        },
    }
}

/// The ids a path's parameters are filled with: in swarm alpha (the agent, task and message
/// belong to agent A) or in swarm beta.
struct Targets {
    swarm: String,
    agent: String,
    task: String,
    message: String,
}

fn fill(route: &Route, t: &Targets) -> String {
    let id = match route.access.target {
        Target::Task => &t.task,
        Target::Message => &t.message,
        _ => &t.agent,
    };
    let random = uuid::Uuid::now_v7().to_string();
    route
        .path
        .replace("{swarm}", &t.swarm)
        .replace(
            "{id}",
            if route.path.starts_with("/api/v1/tokens/") {
                &random
            } else {
                id
            },
        )
        .replace("{pool}", "no-such-pool")
        .replace("{checkpoint}", &random)
        .replace("{topic}", "news")
}

struct Fixture {
    h: Harness,
    tokens: Vec<(Who, Option<String>)>,
    alpha: Targets,
    beta: Targets,
}

async fn token(h: &Harness, role: &str, swarm: Option<&str>, expires_in_ms: Option<u64>) -> Value {
    let (s, v) = h
        .post(
            "/tokens",
            json!({"role": role, "swarm": swarm, "expires_in_ms": expires_in_ms, "label": "matrix"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

async fn fixture() -> Fixture {
    let h = Harness::start().await;
    for name in ["alpha", "beta"] {
        let (s, v) = h.post("/swarms", json!({"name": name})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (agent_a, token_a) = h.register("alpha", json!({"name": "a"})).await;
    let (_agent_b, token_b) = h.register("alpha", json!({"name": "b"})).await;
    let (agent_c, token_c) = h.register("beta", json!({"name": "c"})).await;
    let task_alpha = h.submit("alpha", json!({"type": "t"})).await;
    let taken = h
        .next(&agent_a, &token_a, 5.0)
        .await
        .expect("agent a takes its task");
    assert_eq!(taken["id"], task_alpha["id"]);
    let task_beta = h.submit("beta", json!({"type": "t"})).await;
    let message = |to: String| {
        let h = &h;
        async move {
            let (s, v) = h
                .post(
                    &format!("/agents/{to}/messages"),
                    json!({"body": {"hi": 1}}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            v["id"].as_str().expect("message id").to_owned()
        }
    };
    let message_alpha = message(agent_a.clone()).await;
    let message_beta = message(agent_c.clone()).await;

    let secret = |v: Value| Some(v["token"].as_str().unwrap().to_owned());
    let expired = token(&h, "admin", None, Some(1)).await;
    let revoked = token(&h, "admin", None, None).await;
    let (s, v) = h
        .call(
            Method::DELETE,
            &format!("/tokens/{}", revoked["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut tokens = vec![
        (Who::NoToken, None),
        (Who::Unknown, Some(format!("flt_{}", "0".repeat(64)))),
        (Who::Expired, secret(expired)),
        (Who::Revoked, secret(revoked)),
    ];
    for role in Role::ALL {
        tokens.push((
            Who::User(role),
            secret(token(&h, role.as_str(), None, None).await),
        ));
        tokens.push((
            Who::Scoped(role),
            secret(token(&h, role.as_str(), Some("alpha"), None).await),
        ));
    }
    tokens.push((Who::AgentPeer, Some(token_b)));
    tokens.push((Who::AgentForeign, Some(token_c)));
    tokens.push((Who::AgentSelf, Some(token_a)));
    // Past the expiry of the expired one.
    tokio::time::sleep(Duration::from_millis(20)).await;
    Fixture {
        h,
        tokens,
        alpha: Targets {
            swarm: "alpha".into(),
            agent: agent_a,
            task: task_alpha["id"].as_str().unwrap().to_owned(),
            message: message_alpha,
        },
        beta: Targets {
            swarm: "beta".into(),
            agent: agent_c,
            task: task_beta["id"].as_str().unwrap().to_owned(),
            message: message_beta,
        },
    }
}

/// Sends the probe; returns status and body.
async fn probe(
    h: &Harness,
    token: Option<&str>,
    method: &Method,
    path: &str,
) -> (StatusCode, String) {
    let url = format!("{}{}?flotilla_probe=1", h.server.url(), path);
    let mut req = h
        .http
        .request(method.clone(), url)
        .timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if !matches!(*method, Method::GET | Method::DELETE) {
        req = req.header("content-type", "application/json").body("{");
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    // Streams that got through would not end: their status is enough.
    let body = if status.is_success() {
        String::new()
    } else {
        resp.text().await.unwrap_or_default()
    };
    (status, body)
}

fn check(got: StatusCode, body: &str, want: Expect, what: &str) -> Result<(), String> {
    let ok = match want {
        Expect::Unauthorized => got == StatusCode::UNAUTHORIZED,
        Expect::Forbidden => got == StatusCode::FORBIDDEN,
        Expect::Hidden => got == StatusCode::NOT_FOUND,
        Expect::Allowed => got != StatusCode::UNAUTHORIZED && got != StatusCode::FORBIDDEN,
        Expect::Refused => !got.is_success(),
    };
    let json_error = got.is_success()
        || serde_json::from_str::<Value>(body).is_ok_and(|v| v["error"]["code"].is_string());
    match (ok, json_error) {
        (true, true) => Ok(()),
        (false, _) => Err(format!("{what}: expected {want:?}, got {got} {body}")),
        (true, false) => Err(format!("{what}: {got} without a JSON error body: {body}")),
    }
}

#[tokio::test]
async fn every_endpoint_answers_every_kind_of_token_as_its_rule_says() {
    let f = fixture().await;
    let mut routes = table();
    // Unregistering agent A goes last: the fixture's ids stay valid until then.
    routes.sort_by_key(|r| r.method == Method::DELETE && r.path == "/api/v1/agents/{id}");
    let mut failures = Vec::new();
    let mut calls = 0;
    for route in &routes {
        let mut tokens = f.tokens.clone();
        if route.method == Method::DELETE && route.path == "/api/v1/agents/{id}" {
            // Agent A removes itself before anyone else removes it (which revokes its token).
            tokens.sort_by_key(|(w, _)| *w != Who::AgentSelf);
        }
        for (who, token) in &tokens {
            let path = fill(route, &f.alpha);
            let want = expect(&route.access, *who, true);
            let (got, body) = probe(&f.h, token.as_deref(), &route.method, &path).await;
            calls += 1;
            let what = format!("{} {path} as {who:?}", route.method);
            failures.extend(check(got, &body, want, &what).err());
            // Swarm-limited tokens, on another swarm's things.
            if matches!(who, Who::Scoped(_))
                && !matches!(route.access.target, Target::Fleet | Target::Listed)
            {
                let path = fill(route, &f.beta);
                let want = expect(&route.access, *who, false);
                let (got, body) = probe(&f.h, token.as_deref(), &route.method, &path).await;
                calls += 1;
                let what = format!("{} {path} as {who:?} of another swarm", route.method);
                failures.extend(check(got, &body, want, &what).err());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls broke the matrix:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing a refused or hidden call touched changed: beta's task and agent are still there.
    let (s, _) = f.h.get(&format!("/tasks/{}", f.beta.task)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = f.h.get(&format!("/agents/{}", f.beta.agent)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_ne!(v["status"], "stopped", "{v}");
    eprintln!(
        "authorization matrix: {} endpoints, {calls} calls",
        routes.len()
    );
}

#[tokio::test]
async fn swarm_limited_lists_show_only_their_swarm() {
    let f = fixture().await;
    let scoped = f
        .tokens
        .iter()
        .find(|(w, _)| *w == Who::Scoped(Role::Viewer))
        .and_then(|(_, t)| t.clone())
        .unwrap();
    let h = &f.h;
    let (s, v) = h.call_as(&scoped, Method::GET, "/swarms", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"]);
    let (s, v) = h.call_as(&scoped, Method::GET, "/tasks", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ids: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [f.alpha.task.as_str()]);
    let (s, v) = h
        .call_as(&scoped, Method::GET, "/tasks?swarm=beta", None)
        .await;
    Harness::assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = h
        .call_as(
            &scoped,
            Method::POST,
            "/tasks/lookup",
            Some(json!({"ids": [f.alpha.task, f.beta.task]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["missing"], json!([f.beta.task]), "{v}");
    let (s, v) = h
        .call_as(&scoped, Method::GET, "/events?limit=1000", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let alpha_id = names_to_id(h, "alpha").await;
    let events = v["items"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e["swarm_id"] == alpha_id),
        "only alpha's events: {v}"
    );
}

async fn names_to_id(h: &Harness, name: &str) -> Value {
    let (s, v) = h.get(&format!("/swarms/{name}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["id"].clone()
}

/// The matrix as the security document shows it.
fn matrix_markdown() -> String {
    let mark = |e: Expect| match e {
        Expect::Allowed => "yes",
        Expect::Refused => "own",
        Expect::Hidden => "404",
        Expect::Forbidden => "-",
        Expect::Unauthorized => "401",
    };
    let mut out = String::from(
        "| Endpoint | viewer | operator | admin | limited to swarm S: on S | on another swarm | agent: itself | another agent, same swarm | agent of another swarm |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in table() {
        let a = &r.access;
        // A limited token's row: the weakest limited role that may call it.
        let limited = Role::ALL
            .into_iter()
            .find(|role| expect(a, Who::Scoped(*role), true) == Expect::Allowed);
        let (on_s, other) = match limited {
            Some(role) if a.target == Target::Listed => {
                (format!("{}+", role.as_str()), "not shown".to_owned())
            }
            Some(role) => (
                format!("{}+", role.as_str()),
                mark(expect(a, Who::Scoped(role), false)).to_owned(),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        out.push_str(&format!(
            "| `{} {}` | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.method,
            r.path,
            mark(expect(a, Who::User(Role::Viewer), true)),
            mark(expect(a, Who::User(Role::Operator), true)),
            mark(expect(a, Who::User(Role::Admin), true)),
            on_s,
            other,
            mark(expect(a, Who::AgentSelf, true)),
            mark(expect(a, Who::AgentPeer, true)),
            mark(expect(a, Who::AgentForeign, true)),
        ));
    }
    out
}

#[test]
fn the_security_document_shows_the_matrix_of_the_route_table() {
    const START: &str =
        "<!-- authorization matrix: generated by crates/flotilla-server/tests/authz.rs -->\n";
    const END: &str = "<!-- end of the authorization matrix -->";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md");
    let doc = std::fs::read_to_string(&path).expect("docs/security.md");
    let (Some(a), Some(b)) = (doc.find(START), doc.find(END)) else {
        panic!("docs/security.md lacks the matrix markers");
    };
    let want = matrix_markdown();
    let have = &doc[a + START.len()..b];
    if have != want {
        if std::env::var_os("FLOTILLA_BLESS").is_some() {
            let new = format!("{}{START}{want}{}", &doc[..a], &doc[b..]);
            std::fs::write(&path, new).unwrap();
            return;
        }
        panic!(
            "docs/security.md's authorization matrix is not the route table's: a rule changed or an \
             endpoint was added; review the change, then run with FLOTILLA_BLESS=1 to rewrite it.\n\
             Expected:\n{want}"
        );
    }
}

#[test]
fn the_openapi_document_describes_exactly_the_route_table_and_its_rules() {
    let doc = serde_json::to_value(flotilla_server::openapi()).unwrap();
    let mut described = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            described.insert((method.to_uppercase(), path.clone()));
            if let Some(access) = op.get("x-flotilla-access") {
                assert!(access["role"].is_string(), "{path}: {access}");
            }
        }
    }
    let mut routed: std::collections::BTreeSet<(String, String)> = table()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    // The two endpoints outside the table: they need no token.
    routed.insert(("GET".into(), "/healthz".into()));
    routed.insert(("GET".into(), "/api/v1/openapi.json".into()));
    let missing: Vec<_> = routed.difference(&described).collect();
    let extra: Vec<_> = described.difference(&routed).collect();
    assert!(missing.is_empty(), "routed but not described: {missing:?}");
    assert!(extra.is_empty(), "described but not routed: {extra:?}");
    // Two types of one name would share one schema (the ring's token once stood in for API
    // tokens): the token's schema is its own.
    let token = &doc["components"]["schemas"]["ApiToken"]["properties"];
    assert!(
        token["role"].is_object() && token["expires_at"].is_object(),
        "{token}"
    );
    for r in table() {
        let method = r.method.as_str().to_lowercase();
        let access = &doc["paths"][r.path][&method]["x-flotilla-access"];
        assert_eq!(
            access["role"],
            r.access.role.as_str(),
            "{} {}",
            r.method,
            r.path
        );
    }
}
