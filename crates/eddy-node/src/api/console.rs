//! The console: a web page on the admin listener, every file of it embedded in the binary
//! (no CDN; it works offline). It holds no data and needs no token: the page signs in with
//! `POST /v1/session` and reads and acts through the documented control API, like any
//! other client. Guide: `docs/console.md`.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::ApiState;

/// The page's Content-Security-Policy: its own scripts, styles and API only; no inline
/// script or style, no framing, no form posted elsewhere. Guest output, queue payloads and
/// names shown on it are text, and this holds even if one were not.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its bytes, its media type and a validator of its content.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    etag: LazyLock<String>,
}

macro_rules! asset {
    ($file:literal, $type:literal) => {
        Asset {
            bytes: include_bytes!(concat!("../../console/", $file)),
            content_type: $type,
            etag: LazyLock::new(|| {
                let digest = Sha256::digest(include_bytes!(concat!("../../console/", $file)));
                format!("\"{}\"", hex::encode(&digest[..16]))
            }),
        }
    };
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static APP_JS: Asset = asset!("app.js", "text/javascript; charset=utf-8");
static APP_CSS: Asset = asset!("app.css", "text/css; charset=utf-8");
static UPLOT_JS: Asset = asset!("uPlot.iife.min.js", "text/javascript; charset=utf-8");
static UPLOT_CSS: Asset = asset!("uPlot.min.css", "text/css; charset=utf-8");

/// The console's files, merged at the admin listener's root.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { serve(&INDEX, &h) }))
        .route(
            "/console/app.js",
            get(|h: HeaderMap| async move { serve(&APP_JS, &h) }),
        )
        .route(
            "/console/app.css",
            get(|h: HeaderMap| async move { serve(&APP_CSS, &h) }),
        )
        .route(
            "/console/uPlot.iife.min.js",
            get(|h: HeaderMap| async move { serve(&UPLOT_JS, &h) }),
        )
        .route(
            "/console/uPlot.min.css",
            get(|h: HeaderMap| async move { serve(&UPLOT_CSS, &h) }),
        )
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = HeaderValue::from_str(&asset.etag).expect("a hex etag is a header value");
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes());
    let mut answer = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.bytes,
        )
            .into_response()
    };
    let headers = answer.headers_mut();
    headers.insert(header::ETAG, etag);
    // Revalidated on every load: a node upgraded serves its new console at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_CSP),
    );
    answer
}

/// Headers every answer of the admin listener carries: no content sniffing, no framing,
/// no referrer, and API answers are not cached (they hold state and, for a new token, a
/// secret).
pub async fn hardening(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/v1/");
    let mut answer = next.run(request).await;
    let headers = answer.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    answer
}
