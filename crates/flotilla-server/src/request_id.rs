//! Request ids and the access log: [`RequestIdLayer`] gives every HTTP request an id, runs the
//! request inside a tracing span that carries it (so each log line the request causes names
//! it), answers it in the `x-request-id` header, lets [`crate::error::ApiError`] put it in
//! error bodies, and writes one access line per request.
//!
//! The id is the caller's own `x-request-id` when it is usable (1 to [`MAX_LEN`] visible ASCII
//! characters, so it cannot break a log line), else a fresh UUID v7 (time-ordered, so ids sort
//! like the requests they name).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::HeaderName;
use axum::response::Response;
use tower::{Layer, Service};
use tracing::Instrument;

/// The header the id comes in and goes back in.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a caller; a longer one is replaced.
pub const MAX_LEN: usize = 128;

/// The tracing target of the access log (one line per request), so that it can be filtered on
/// its own: `RUST_LOG=info,flotilla::access=off`.
pub const ACCESS_TARGET: &str = "flotilla::access";

tokio::task_local! {
    /// The id of the request whose handler is running.
    static CURRENT: RequestId;
}

/// A request's id. Also in the request's extensions, for handlers that want it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The caller's id if it is usable: 1 to [`MAX_LEN`] characters, each visible ASCII
    /// (`!` to `~`: no spaces, no control characters, nothing a log line could be forged with).
    pub fn parse(text: &[u8]) -> Option<RequestId> {
        let usable =
            !text.is_empty() && text.len() <= MAX_LEN && text.iter().all(|b| b.is_ascii_graphic());
        // Visible ASCII is valid UTF-8.
        usable
            .then(|| std::str::from_utf8(text).ok())
            .flatten()
            .map(|s| RequestId(s.into()))
    }

    /// A fresh id: a UUID v7.
    pub fn generate() -> RequestId {
        RequestId(uuid::Uuid::now_v7().to_string().into())
    }

    /// The id of this request: its `x-request-id` header if usable, else a fresh one.
    pub fn for_request(req: &Request) -> RequestId {
        req.headers()
            .get(&HEADER)
            .and_then(|v| RequestId::parse(v.as_bytes()))
            .unwrap_or_else(RequestId::generate)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the request being handled by the current task, if it runs inside
    /// [`RequestIdLayer`].
    pub fn current() -> Option<RequestId> {
        CURRENT.try_with(RequestId::clone).ok()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The layer: wrap the whole router in it (outermost, so that every answer, rejections and
/// fallbacks included, gets the id and an access line).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

/// The service [`RequestIdLayer`] wraps around another.
#[derive(Clone, Debug)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S> Service<Request> for RequestIdService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let id = RequestId::for_request(&req);
        req.extensions_mut().insert(id.clone());
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %method,
            path = %path,
        );
        // The clone is the one that was not made ready: keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let current = id.clone();
        let handled = async move {
            let mut response = inner.call(req).await?;
            let status = response.status().as_u16();
            if let Ok(value) = HeaderValue::from_str(id.as_str()) {
                response.headers_mut().insert(HEADER, value);
            }
            // Until the answer's head: a stream's access line is written when it starts.
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            tracing::info!(
                target: ACCESS_TARGET,
                method = %method,
                path = %path,
                status,
                latency_ms = (latency_ms * 1000.0).round() / 1000.0,
                request_id = %id,
                "answered",
            );
            Ok(response)
        };
        Box::pin(CURRENT.scope(current, handled.instrument(span)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;

    use crate::error::ApiError;

    #[test]
    fn usable_ids_are_kept_and_others_refused() {
        assert_eq!(
            RequestId::parse(b"abc-123_X.y").unwrap().as_str(),
            "abc-123_X.y"
        );
        assert!(RequestId::parse(&[b'a'; MAX_LEN]).is_some());
        for bad in [
            &b""[..],
            &[b'a'; MAX_LEN + 1][..],
            b"two words",
            b"line\nbreak",
            b"tab\there",
            "caf\u{e9}".as_bytes(),
            b"nul\0",
        ] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?} was taken");
        }
        let fresh = RequestId::generate();
        let uuid = uuid::Uuid::parse_str(fresh.as_str()).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert_ne!(fresh, RequestId::generate());
    }

    /// A router with one good and one failing route, behind the layer.
    fn app() -> Router {
        Router::new()
            .route(
                "/ok",
                get(
                    |axum::Extension(id): axum::Extension<RequestId>| async move {
                        format!("handled {id}")
                    },
                ),
            )
            .route(
                "/bad",
                get(|| async { ApiError::bad_request("this request is wrong") }),
            )
            .layer(RequestIdLayer)
    }

    async fn call(path: &str, id: Option<&str>) -> (u16, Option<String>, String) {
        let mut req = Request::builder().uri(path);
        if let Some(id) = id {
            req = req.header(&HEADER, id);
        }
        let mut app = app();
        std::future::poll_fn(|cx| Service::<Request>::poll_ready(&mut app, cx))
            .await
            .unwrap();
        let res = app.call(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status().as_u16();
        let header = res
            .headers()
            .get(&HEADER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, header, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_callers_id_is_echoed_and_reaches_the_handler() {
        let (status, header, body) = call("/ok", Some("trace-42")).await;
        assert_eq!(status, 200);
        assert_eq!(header.as_deref(), Some("trace-42"));
        assert_eq!(body, "handled trace-42");
    }

    #[tokio::test]
    async fn errors_carry_the_id_in_their_body() {
        let (status, header, body) = call("/bad", Some("oops-1")).await;
        assert_eq!(status, 400);
        assert_eq!(header.as_deref(), Some("oops-1"));
        let body: flotilla_core::api::ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(body.error.code, "invalid_request");
        assert_eq!(body.error.request_id.as_deref(), Some("oops-1"));

        // An unusable id is replaced by a fresh one, the same in header and body; so is none.
        for given in [Some("has space"), None] {
            let (_, header, body) = call("/bad", given).await;
            let header = header.expect("an id is always answered");
            assert_eq!(uuid::Uuid::parse_str(&header).unwrap().get_version_num(), 7);
            let body: flotilla_core::api::ErrorBody = serde_json::from_str(&body).unwrap();
            assert_eq!(body.error.request_id.as_deref(), Some(header.as_str()));
        }
    }

    #[test]
    fn an_error_outside_a_request_has_no_id() {
        let body = flotilla_core::api::ErrorBody {
            error: flotilla_core::api::ErrorDetail {
                code: "x".into(),
                message: "y".into(),
                request_id: RequestId::current().map(|id| id.to_string()),
            },
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "x", "message": "y"}})
        );
    }
}
