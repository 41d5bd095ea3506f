//! `/tokens` and `/audit`: people's tokens (create, list, revoke) and the audit log.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use flotilla_core::Timestamp;
use flotilla_core::api::{AuditEntry, ErrorBody, NewToken, Page, TokenSpec, TokenView};
use flotilla_store::{AuditFilter, TokenRecord};
use serde::Deserialize;

use super::{check_limit, read};
use crate::auth::{Role, new_token, record};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// The longest a token may be made to last: ten years.
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The longest label.
const MAX_LABEL: usize = 200;

fn view(r: &TokenRecord) -> TokenView {
    TokenView {
        id: r.id.clone(),
        role: r.role.as_str().to_owned(),
        swarm_id: r.swarm_id,
        agent_id: r.agent_id,
        label: r.label.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
    }
}

/// `POST /tokens`: a new token, shown once.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = TokenSpec,
    responses(
        (status = 201, description = "The token, shown only here", body = NewToken),
        (status = 404, description = "No such swarm", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<TokenSpec>,
) -> ApiResult<impl IntoResponse> {
    let role: Role = spec.role.parse().map_err(ApiError::bad_request)?;
    let label = spec.label.unwrap_or_default();
    if label.len() > MAX_LABEL || label.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "label must be at most {MAX_LABEL} bytes, without control characters"
        )));
    }
    let lifetime = match spec.expires_in_ms {
        None => None,
        Some(0) => return Err(ApiError::bad_request("expires_in_ms must be above 0")),
        Some(ms) if Duration::from_millis(ms) > MAX_LIFETIME => {
            return Err(ApiError::bad_request(
                "expires_in_ms must be at most ten years; leave it out for a token that does not expire",
            ));
        }
        Some(ms) => Some(Duration::from_millis(ms)),
    };
    let swarm = match &spec.swarm {
        None => None,
        Some(s) => Some(state.fleet.lock().resolve_swarm(s)?),
    };
    let (secret, hash) = new_token();
    let token = state
        .apply_with_tokens(|_, now| {
            let mut r = record(hash, role.token_role(), None, &label, now);
            r.swarm_id = swarm;
            r.expires_at = lifetime.map(|l| now + l);
            // The secret is revealed only after the commit, so the token cannot be used
            // before it is durable.
            state.tokens.write().insert(r.clone());
            Ok((r.clone(), vec![r]))
        })
        .await?;
    tracing::info!(token = %token.id, role = %token.role, "token created");
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            token: secret,
            view: view(&token),
        }),
    ))
}

/// Filters of `GET /tokens`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    /// Revoked and expired tokens too, and agents' tokens.
    #[serde(default)]
    all: bool,
}

/// `GET /tokens`: people's tokens in force (`?all=true`: every token ever issued).
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    params(TokenQuery),
    responses(
        (status = 200, description = "Tokens, oldest first, never their secrets", body = Vec<TokenView>),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TokenQuery>,
) -> ApiResult<Json<Vec<TokenView>>> {
    if q.all {
        let all = read(&state, |r| r.list_tokens()).await?;
        return Ok(Json(all.iter().map(view).collect()));
    }
    let now = state.now();
    let people = state.tokens.read().people();
    Ok(Json(
        people
            .iter()
            .filter(|r| r.expires_at.is_none_or(|e| e > now))
            .map(view)
            .collect(),
    ))
}

/// `DELETE /tokens/{id}`: revokes a token at once. The last administrator token of the whole
/// fleet cannot be revoked (nobody could manage the fleet any more).
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "The token's id (not the token)")),
    responses(
        (status = 200, description = "The revoked token", body = TokenView),
        (status = 404, description = "No such token in force", body = ErrorBody),
        (status = 409, description = "The last administrator token of the fleet", body = ErrorBody),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TokenView>> {
    let revoked = state
        .apply_with_tokens(|_, now| {
            let mut table = state.tokens.write();
            let Some(r) = table.get(&id) else {
                return Err(flotilla_core::CoreError::NotFound(format!(
                    "token {id} not found, or already revoked or expired"
                )));
            };
            if r.role == flotilla_store::TokenRole::Admin
                && r.swarm_id.is_none()
                && r.expires_at.is_none_or(|e| e > now)
                && table.fleet_admins(now) == 1
            {
                return Err(flotilla_core::CoreError::Conflict(
                    "this is the last administrator token of the fleet: create another admin token first (flotilla token create --role admin)".into(),
                ));
            }
            let r = table.revoke(&id, now).expect("token found above");
            Ok((r.clone(), vec![r]))
        })
        .await?;
    tracing::info!(token = %revoked.id, "token revoked");
    Ok(Json(view(&revoked)))
}

/// Filters of `GET /audit`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only calls made with this token (by id).
    #[serde(default)]
    token: Option<String>,
    /// Only calls at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<String>,
    /// Only calls before this time (RFC 3339).
    #[serde(default)]
    until: Option<String>,
    /// Only refused calls (401 and 403).
    #[serde(default)]
    denied: bool,
    /// Page size, 1 to 1000 (100).
    #[serde(default)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

fn time(name: &str, text: Option<&str>) -> ApiResult<Option<Timestamp>> {
    text.map(|t| {
        Timestamp::parse_rfc3339(t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be an RFC 3339 time such as 2026-12-01T08:00:00Z"
            ))
        })
    })
    .transpose()
}

/// `GET /audit`: the audit log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "tokens",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of the audit log, newest first", body = Page<AuditEntry>),
    ),
)]
pub async fn audit(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let limit = check_limit(q.limit)?;
    let before_seq = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| ApiError::bad_request("invalid cursor: pass next_cursor as it came"))
        })
        .transpose()?;
    let filter = AuditFilter {
        token_id: q.token,
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        denied: q.denied,
        before_seq,
    };
    let mut items = read(&state, move |r| r.list_audit(&filter, limit + 1)).await?;
    let next_cursor = (items.len() > limit).then(|| items[limit - 1].seq.to_string());
    items.truncate(limit);
    Ok(Json(Page { items, next_cursor }))
}
