//! Request extractors that answer bad input with [`ApiError`] JSON bodies instead of axum's
//! plain-text rejections.

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Reads the body as bytes, mapping an over-limit body to 413.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is over the size limit; send fewer tasks per batch or a smaller payload",
            )
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

fn check_json_content_type(req: &Request) -> Result<(), ApiError> {
    let ok = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with the header `Content-Type: application/json`",
        ))
    }
}

/// Parses JSON text into `T` with a message that names the problem and where it is.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A JSON body, required.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_json_content_type(&req)?;
        let bytes = body_bytes(req, state).await?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty; send a JSON document",
            ));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out (an empty body means `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let has_type = req.headers().contains_key(CONTENT_TYPE);
        if has_type {
            check_json_content_type(&req)?;
        }
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !has_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with the header `Content-Type: application/json`",
            ));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// The raw JSON body (checked for content type and size, not parsed).
pub struct RawJson(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_json_content_type(&req)?;
        body_bytes(req, state).await.map(RawJson)
    }
}

/// Query parameters, with a clear 400 when they do not parse.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                ApiError::bad_request(format!("invalid query parameters: {}", e.body_text()))
            })
    }
}

/// Path parameters, with a JSON 400 when a segment does not decode (invalid UTF-8 once
/// percent-decoded) instead of axum's plain-text rejection.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            // A route and its extractor that disagree: our bug, not the caller's.
            Err(e) if e.status().is_server_error() => Err(ApiError::internal(e.body_text())),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid path: {}",
                e.body_text()
            ))),
        }
    }
}

/// A WebSocket upgrade, with a JSON error when the request is not one (axum's rejections are
/// plain text): 400 for missing or wrong upgrade headers, 426 when the connection cannot be
/// upgraded, 405 for a method other than GET.
pub struct ApiWebSocket(pub WebSocketUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for ApiWebSocket {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map(ApiWebSocket)
            .map_err(|e| {
                let status = e.status();
                let code = match status {
                    StatusCode::UPGRADE_REQUIRED => "upgrade_required",
                    StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                    _ => "invalid_request",
                };
                ApiError::new(
                    status,
                    code,
                    format!(
                        "this endpoint is a WebSocket: {} (connect with a WebSocket client)",
                        e.body_text()
                    ),
                )
            })
    }
}

/// Parses an id from a path segment, naming what was expected.
pub fn parse_id<T: std::str::FromStr<Err = flotilla_core::CoreError>>(
    text: &str,
) -> Result<T, ApiError> {
    text.parse::<T>().map_err(ApiError::from)
}
