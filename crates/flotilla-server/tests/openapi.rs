//! The OpenAPI document: served without a token, parses, describes every endpoint that
//! `docs/api.md` lists (and nothing it does not), each with a success and a client-error
//! answer, and every schema it references exists.

mod common;

use std::collections::BTreeSet;

use common::Harness;
use reqwest::StatusCode;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Public operations: no token, and no client error to describe (any request gets the answer).
const PUBLIC: [&str; 2] = ["/healthz", "/api/v1/openapi.json"];

fn document() -> Value {
    let text = flotilla_server::openapi()
        .to_json()
        .expect("the document serializes");
    serde_json::from_str(&text).expect("the document is JSON")
}

/// (method, path) of every operation in the document, paths as served (`/api/v1/...`).
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// (method, path) of every endpoint `docs/api.md` names as `` `METHOD /path` `` (or
/// `` `GET`/`PUT /path` ``), query strings left out; paths under `/api/v1` unless the page
/// says they are at the root.
fn documented() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"))
        .expect("docs/api.md");
    let mut ops = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find('`') {
        rest = &rest[start + 1..];
        let Some(end) = rest.find('`') else { break };
        let mut span = &rest[..end];
        let mut methods = Vec::new();
        // `GET`/`PUT /path`: the first method stands alone in its own backticks.
        if METHODS.iter().any(|m| span.eq_ignore_ascii_case(m)) && rest[end..].starts_with("`/`") {
            methods.push(span.to_owned());
            rest = &rest[end + 3..];
            let Some(next_end) = rest.find('`') else {
                break;
            };
            span = &rest[..next_end];
            rest = &rest[next_end + 1..];
        } else {
            rest = &rest[end + 1..];
        }
        let Some((method, path)) = span.split_once(' ') else {
            continue;
        };
        if !METHODS.iter().any(|m| method.eq_ignore_ascii_case(m)) || !path.starts_with('/') {
            continue;
        }
        methods.push(method.to_owned());
        let path = path.split(['?', ' ']).next().unwrap();
        let full = if ["/metrics", "/healthz"].contains(&path) || path.starts_with("/api/v1/") {
            path.to_owned()
        } else {
            format!("/api/v1{path}")
        };
        for m in methods {
            ops.insert((m.to_uppercase(), full.clone()));
        }
    }
    ops
}

#[test]
fn the_document_describes_every_endpoint_of_docs_api_md_and_no_other() {
    let doc = document();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let described = operations(&doc);
    let listed = documented();
    let missing: Vec<_> = listed.difference(&described).collect();
    let extra: Vec<_> = described.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "in docs/api.md, not in the document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in the document, not in docs/api.md: {extra:?}"
    );
    assert!(described.len() >= 60, "{} operations", described.len());
    let mut ids = BTreeSet::new();
    for (method, path) in &described {
        let id = doc["paths"][path][method.to_lowercase()]["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
    }
}

#[test]
fn every_operation_has_a_success_and_a_client_error_with_the_error_body() {
    let doc = document();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let statuses: Vec<&String> = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}: no responses"))
            .keys()
            .collect();
        assert!(
            statuses
                .iter()
                .any(|s| s.starts_with('2') || s.as_str() == "101"),
            "{method} {path}: no success answer in {statuses:?}"
        );
        if PUBLIC.contains(&path.as_str()) {
            assert_eq!(op["security"], serde_json::json!([{}]), "{method} {path}");
            continue;
        }
        assert!(
            op.get("security").is_none(),
            "{method} {path} overrides the bearer scheme"
        );
        for status in ["400", "401", "403", "429"] {
            let error = &op["responses"][status];
            assert_eq!(
                error["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path}: {status}"
            );
        }
        assert!(
            statuses.iter().any(|s| s.starts_with('4')),
            "{method} {path}: no client error in {statuses:?}"
        );
        if op.get("requestBody").is_some() {
            for status in ["413", "415"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path}: a body but no {status}"
                );
            }
        }
    }
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let detail = &doc["components"]["schemas"]["ErrorDetail"];
    for field in ["code", "message", "request_id"] {
        assert!(detail["properties"].get(field).is_some(), "{detail}");
    }
}

#[test]
fn every_reference_resolves() {
    fn walk(v: &Value, schemas: &serde_json::Map<String, Value>, seen: &mut usize) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    let name = r
                        .strip_prefix("#/components/schemas/")
                        .unwrap_or_else(|| panic!("unexpected reference {r}"));
                    assert!(schemas.contains_key(name), "{r} is not in the document");
                    *seen += 1;
                }
                map.values().for_each(|v| walk(v, schemas, seen));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, schemas, seen)),
            _ => {}
        }
    }
    let doc = document();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut seen = 0;
    walk(&doc, schemas, &mut seen);
    assert!(seen > 100, "{seen} references");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_without_a_token_while_the_api_still_needs_one() {
    let h = Harness::start().await;
    let resp = h.http.get(h.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served: Value = resp.json().await.unwrap();
    assert_eq!(served, document());

    // The nest beside it is untouched: no token is a 401, the admin token works, and an
    // unknown path under /api/v1 is the API's JSON 404.
    let resp = h.http.get(h.url("/swarms")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (s, v) = h.get("/swarms").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h.get("/openapi.yaml").await;
    Harness::assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    // A token is not needed, and not in the way either.
    let (s, v) = h.get("/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, document());
}
