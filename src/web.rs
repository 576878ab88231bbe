//! The page people use in a browser, served at `/`, and the JavaScript client
//! it is built on, at `/onair-client.js`.
//!
//! The files are embedded in the binary, so there is nothing to deploy beside
//! it and no build step. Every response carries a strict
//! `Content-Security-Policy` (this origin only: no inline code, no third-party
//! fetches), `cache-control: no-cache` with an `ETag` (a new binary's files
//! are picked up at once, an unchanged file costs a 304), and `nosniff`.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;

/// Only this origin: scripts and styles from files (never inline), sockets and
/// API calls back to onair, media (recordings) from onair's media endpoint.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; media-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    /// Computed at compile time from `body`.
    etag: u64,
}

impl Asset {
    const fn new(body: &'static [u8], content_type: &'static str) -> Self {
        Self {
            body,
            content_type,
            etag: fnv1a(body),
        }
    }
}

const INDEX: Asset = Asset::new(include_bytes!("web/index.html"), "text/html; charset=utf-8");
const APP: Asset = Asset::new(
    include_bytes!("web/app.js"),
    "text/javascript; charset=utf-8",
);
const STYLE: Asset = Asset::new(include_bytes!("web/style.css"), "text/css; charset=utf-8");
const ICON: Asset = Asset::new(include_bytes!("web/favicon.svg"), "image/svg+xml");
const CLIENT: Asset = Asset::new(
    include_str!("../clients/js/onair-client.js").as_bytes(),
    "text/javascript; charset=utf-8",
);

/// The page's routes, to be merged into the main router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { serve(&INDEX, &h) }))
        .route(
            "/app.js",
            get(|h: HeaderMap| async move { serve(&APP, &h) }),
        )
        .route(
            "/style.css",
            get(|h: HeaderMap| async move { serve(&STYLE, &h) }),
        )
        .route(
            "/favicon.svg",
            get(|h: HeaderMap| async move { serve(&ICON, &h) }),
        )
        .route(
            "/onair-client.js",
            get(|h: HeaderMap| async move { serve(&CLIENT, &h) }),
        )
}

/// The file, or 304 when the browser's copy is current.
fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `?token=` links must not leak to other sites through the Referer header.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

/// FNV-1a, 64 bit: enough to tell two versions of a file apart, and `const`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_between_files() {
        let tags = [INDEX.etag, APP.etag, STYLE.etag, ICON.etag, CLIENT.etag];
        for (i, a) in tags.iter().enumerate() {
            assert!(tags[i + 1..].iter().all(|b| a != b));
        }
    }

    #[test]
    fn not_modified_when_the_etag_matches() {
        let etag = format!("\"{:016x}\"", INDEX.etag);
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).unwrap());
        let response = serve(&INDEX, &request);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], etag.as_str());

        let response = serve(&INDEX, &HeaderMap::new());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(
            response.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .starts_with("default-src 'none'")
        );
    }
}
