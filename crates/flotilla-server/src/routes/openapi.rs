//! The API's OpenAPI 3.1 description, generated from the handlers' `#[utoipa::path]`
//! annotations and the request and answer types' `ToSchema` derives, and served without a
//! token at `GET /api/v1/openapi.json` (it is the public description of the API, not data).
//!
//! Each annotation names its handler's success answers and the errors particular to it; the
//! errors every authenticated endpoint may answer (400, 401, 403, 429, 503; 413 and 415 where
//! a body is read) are added to every operation by [`CommonErrors`], all with the body of
//! [`ErrorBody`].

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flotilla_core::api::ErrorBody;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, PathItem, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// The name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flotilla",
        description = "The coordinator's HTTP API: swarms, agents, tasks, messages, pools, \
                       metrics, resources. See docs/api.md. Every operation but /healthz and \
                       this document needs `Authorization: Bearer <token>`; errors are \
                       `{\"error\": {\"code\", \"message\", \"request_id\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    security(("bearer" = [])),
    modifiers(&BearerScheme, &CommonErrors, &OperationIds, &Rules),
    paths(
        super::tokens::create,
        super::tokens::list,
        super::tokens::revoke,
        super::tokens::audit,
        super::swarms::create,
        super::swarms::list,
        super::swarms::show,
        super::swarms::update,
        super::swarms::delete,
        super::swarms::health,
        super::swarms::scale,
        super::metrics::series,
        super::metrics::keys,
        super::metrics::heartbeats,
        super::agents::register,
        super::agents::list,
        super::agents::show,
        super::agents::status,
        super::agents::remove,
        super::agents::heartbeat,
        super::agents::next_task,
        super::tasks::submit,
        super::tasks::list_in_swarm,
        super::tasks::list,
        super::tasks::lookup,
        super::tasks::show,
        super::tasks::cancel,
        super::tasks::retry,
        super::tasks::progress,
        super::tasks::complete,
        super::tasks::fail,
        super::topology::show,
        super::topology::update,
        super::topology::delegate,
        super::messages::broadcast_to_swarm,
        super::messages::swarm_history,
        super::messages::stream,
        super::messages::publish,
        super::messages::agent_history,
        super::messages::send,
        super::messages::broadcast_from,
        super::messages::clear,
        super::messages::update_status,
        super::messages::receive,
        super::messages::socket,
        super::messages::subscriptions,
        super::messages::subscribe,
        super::messages::show,
        super::messages::retry,
        super::pools::list,
        super::pools::show,
        super::pools::put,
        super::pools::delete,
        super::pools::spawn,
        super::pools::apply_fleet,
        super::pools::lifecycle,
        super::pools::logs,
        super::checkpoints::get_state,
        super::checkpoints::put_state,
        super::checkpoints::create,
        super::checkpoints::list,
        super::checkpoints::show,
        super::checkpoints::delete,
        super::system::alerts,
        super::system::events,
        super::system::orchestrator,
        super::system::cluster,
        super::events_live::stream,
        super::events_live::socket,
        super::resources::show,
        super::resources::put_policy,
        super::hosts::register,
        super::hosts::list,
        super::hosts::show,
        super::hosts::poll,
        super::hosts::leave,
        super::prometheus_metrics,
        super::healthz,
        document,
    ),
    components(schemas(ErrorBody)),
)]
struct ApiDoc;

/// The OpenAPI document of the API, as served at [`PATH`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The router serving the document, without authentication.
pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(document))
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI document (no token needed).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = serde_json::Value),
    ),
)]
async fn document() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| {
        // Our own types serialize without fail.
        openapi()
            .to_json()
            .expect("the OpenAPI document serializes")
    });
    ([(header::CONTENT_TYPE, "application/json")], text.clone()).into_response()
}

/// Declares the bearer scheme the document's `security` names.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "The admin token (`<data-dir>/admin.token`) or an agent's token (from its \
             registration)."
                .to_owned(),
        );
        components.add_security_scheme(BEARER, SecurityScheme::Http(http));
    }
}

/// Adds the errors any authenticated operation may answer to every operation, unless its
/// annotation already describes that status.
struct CommonErrors;

impl CommonErrors {
    const ALWAYS: [(&'static str, &'static str); 5] = [
        (
            "400",
            "invalid_request: malformed input, a value out of range, a bad id or query parameter",
        ),
        ("401", "unauthorized: missing, malformed or unknown token"),
        (
            "403",
            "forbidden: the token may not do this (an agent token acting for another agent, or calling an admin endpoint)",
        ),
        (
            "429",
            "rate_limited: the token is over its rate limit; `Retry-After` says when to try again",
        ),
        (
            "503",
            "unavailable: the store could not persist or read; nothing was accepted",
        ),
    ];

    const WITH_BODY: [(&'static str, &'static str); 2] = [
        (
            "413",
            "payload_too_large: the body is over the limit (8 MiB), or a payload over 1 MiB",
        ),
        (
            "415",
            "unsupported_media_type: the body was not sent as `application/json`",
        ),
    ];
}

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let error = || {
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            if path == "/healthz" || path == PATH {
                continue;
            }
            for op in operations(item) {
                let with_body = op.request_body.is_some();
                let extra = Self::ALWAYS
                    .iter()
                    .chain(Self::WITH_BODY.iter().filter(|_| with_body));
                for (status, description) in extra {
                    op.responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(*description)
                                .content("application/json", error())
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

/// Makes operation ids unique: utoipa takes the handler's name (`show`, `list`…, shared by
/// several modules); the tag (the module's subject) goes in front, `swarms_show`.
struct OperationIds;

impl Modify for OperationIds {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                if let (Some(tag), Some(id)) =
                    (op.tags.as_ref().and_then(|t| t.first()), &op.operation_id)
                    && !id.starts_with(tag.as_str())
                {
                    op.operation_id = Some(format!("{tag}_{id}"));
                }
            }
        }
    }
}

/// Each operation's authorization rule from the route table, as `x-flotilla-access` (the
/// least role, the target a swarm-limited token is checked against, what agent tokens may do)
/// and a sentence in its description.
struct Rules;

impl Modify for Rules {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use crate::access::Agents;
        for route in super::table() {
            let Some(item) = doc.paths.paths.get_mut(route.path) else {
                continue;
            };
            let op = match route.method.as_str() {
                "GET" => item.get.as_mut(),
                "PUT" => item.put.as_mut(),
                "POST" => item.post.as_mut(),
                "DELETE" => item.delete.as_mut(),
                "PATCH" => item.patch.as_mut(),
                _ => None,
            };
            let Some(op) = op else { continue };
            let a = route.access;
            let agents = match a.agents {
                Agents::Refused => "refused",
                Agents::Own => "own",
                Agents::SameSwarm => "same_swarm",
                Agents::Handler => "own_task_or_message",
            };
            let note = format!(
                "Needs the {} role (or more); agent tokens: {agents}.",
                a.role.as_str()
            );
            op.description = Some(match op.description.take() {
                Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
                _ => note,
            });
            let mut ext = utoipa::openapi::extensions::Extensions::default();
            ext.insert(
                "x-flotilla-access".into(),
                serde_json::json!({
                    "role": a.role.as_str(),
                    "target": format!("{:?}", a.target).to_lowercase(),
                    "agents": agents,
                }),
            );
            match op.extensions.as_mut() {
                Some(e) => e.merge(ext),
                None => op.extensions = Some(ext),
            }
        }
    }
}

/// Every operation of a path.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The body of `POST /swarms/{swarm}/tasks`: one task, or a batch (at most 10,000).
#[allow(dead_code, clippy::large_enum_variant)] // Only described: never built.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum TaskSubmission {
    /// One task.
    One(flotilla_core::TaskSpec),
    /// A batch, all or nothing.
    Batch(Vec<flotilla_core::TaskSpec>),
}

/// The answer to `POST /swarms/{swarm}/tasks`: the task, or the batch's tasks.
#[allow(dead_code, clippy::large_enum_variant)] // Only described: never built.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum TaskSubmitted {
    /// The task.
    One(flotilla_core::Task),
    /// The batch.
    Batch(flotilla_core::api::BatchSubmitted),
}

/// The answer to `DELETE /agents/{id}/messages`.
#[allow(dead_code)] // Only described: the handler answers with `json!`.
#[derive(utoipa::ToSchema)]
pub(super) struct Cleared {
    /// How many messages left the inbox.
    cleared: u64,
}
