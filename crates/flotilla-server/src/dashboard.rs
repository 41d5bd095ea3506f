//! The web dashboard: a single page (`web/` at the repository's root) compiled into the binary
//! and served at `/`.
//!
//! The files are plain JavaScript modules, CSS and SVG with no build step; `include_bytes!`
//! embeds them, so the binary needs no files beside it and a dashboard always matches its
//! coordinator. They hold no data and need no token: the page asks for the admin token and
//! sends it with every API call (and as a WebSocket subprotocol, see [`crate::auth`]).
//!
//! Every answer carries a strong ETag (a hash of the file, computed once) and `Cache-Control:
//! no-cache`, so a browser revalidates each load and gets `304 Not Modified` until the binary
//! changes; and a Content-Security-Policy that lets the page load and connect to its own origin
//! only: no inline script or style, no other host, no framing.

use std::sync::LazyLock;

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// The policy every dashboard answer carries: the page's own origin for scripts, styles,
/// images and API calls (`'self'` covers `ws:`/`wss:` to it), nothing inline, nothing else.
pub const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

macro_rules! web_file {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $name))
    };
}

/// The dashboard's files.
pub static ASSETS: [Asset; 5] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: web_file!("index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: web_file!("app.js"),
    },
    Asset {
        path: "/charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: web_file!("charts.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: web_file!("style.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: web_file!("favicon.svg"),
    },
];

/// Each asset's ETag, in the order of [`ASSETS`]: the start of its SHA-256, quoted.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let hash = hex::encode(&Sha256::digest(a.body)[..12]);
            HeaderValue::from_str(&format!("\"{hash}\"")).expect("hex is a valid header value")
        })
        .collect()
});

/// The dashboard's routes (added to the API's router).
pub fn router() -> Router<AppState> {
    ASSETS
        .iter()
        .enumerate()
        .fold(Router::new(), |router, (i, asset)| {
            router.route(
                asset.path,
                get(move |headers: HeaderMap| async move { serve(i, &headers) }),
            )
        })
}

/// Answers with asset `i`, or 304 when the client's `If-None-Match` names its ETag.
fn serve(i: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let common = [
        (ETAG, etag.clone()),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    if matches_etag(headers, etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
        asset.body,
    )
        .into_response()
}

/// Whether `If-None-Match` (a list of ETags, weak or strong, or `*`) names `etag`. RFC 9110
/// has If-None-Match compare weakly: `W/"x"` matches `"x"`.
fn matches_etag(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_if_none_match(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let etag = HeaderValue::from_static("\"abc\"");
        assert!(matches_etag(&with_if_none_match("\"abc\""), &etag));
        assert!(matches_etag(&with_if_none_match("W/\"abc\""), &etag));
        assert!(matches_etag(&with_if_none_match("\"x\", \"abc\""), &etag));
        assert!(matches_etag(&with_if_none_match("*"), &etag));
        assert!(!matches_etag(&with_if_none_match("\"abcd\""), &etag));
        assert!(!matches_etag(&HeaderMap::new(), &etag));
    }

    #[test]
    fn every_asset_has_a_distinct_etag() {
        let mut tags: Vec<&HeaderValue> = ETAGS.iter().collect();
        tags.sort_by_key(|t| t.as_bytes());
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
