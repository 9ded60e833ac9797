//! The operator console: the web UI at `/` of `floe serve`, embedded in the binary.
//!
//! The front-end lives in `coordinator/console/` (Vite + Preact); its build output,
//! `coordinator/console/dist/`, is committed and compiled into `floe` here (rust-embed, embedded
//! in debug builds too), so `cargo build` never needs npm. A test
//! (`tests/tests/console_browser.rs`) rebuilds the sources and checks the committed dist is
//! their build.
//!
//! These routes need no token: the page holds no data. It asks the operator for an API token
//! and sends it as a bearer token on every `/api/v1` request it makes.
//!
//! Answers: `index.html` for `/` with `Cache-Control: no-cache` (it names the current hashed
//! assets), hashed files under `/assets/` as `immutable` for a year, every file with a strong
//! ETag (its SHA-256) and 304 for a matching `If-None-Match`, and text assets gzipped (once,
//! on first use, kept for the process's life: a handful of files) when the client accepts it.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flate2::Compression;
use flate2::write::GzEncoder;
use rust_embed::RustEmbed;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// The built console.
#[derive(RustEmbed)]
#[folder = "console/dist/"]
struct Assets;

/// The console's routes (GET and HEAD): `/`, `/index.html`, `/assets/{file}` and the other
/// top-level files of the build (the icon).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/index.html",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>, h: HeaderMap| async move {
                serve(&format!("assets/{file}"), &h)
            }),
        )
        .route(
            "/favicon.svg",
            get(|h: HeaderMap| async move { serve("favicon.svg", &h) }),
        )
}

/// Whether `path` is one of the console's open (token-free) routes for `method`.
pub fn serves(method: &Method, path: &str) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    matches!(path, "/" | "/index.html" | "/favicon.svg")
        || path
            .strip_prefix("/assets/")
            .is_some_and(|f| !f.is_empty() && !f.contains('/'))
}

/// The total size in bytes of the embedded files (what the console adds to `floe`, before
/// compression of the binary itself).
pub fn embedded_bytes() -> usize {
    Assets::iter()
        .filter_map(|f| Assets::get(&f).map(|a| a.data.len()))
        .sum()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn compressible(path: &str) -> bool {
    content_type(path).starts_with("text/") || path.ends_with(".svg") || path.ends_with(".json")
}

/// The gzip of an embedded text file, made on first request and kept (the set of files is
/// fixed at build time, so the cache is bounded by it). `None` when compressing failed.
fn gzipped(path: &str, data: &[u8]) -> Option<Vec<u8>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(map) = cache.lock()
        && let Some(gz) = map.get(path)
    {
        return Some(gz.clone());
    }
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 3), Compression::best());
    enc.write_all(data).ok()?;
    let gz = enc.finish().ok()?;
    if let Ok(mut map) = cache.lock() {
        map.insert(path.to_string(), gz.clone());
    }
    Some(gz)
}

fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name == "gzip" || name == "*") && !refused
        })
}

fn serve(path: &str, h: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no console file {path:?}"),
        )
            .into_response();
    };
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    let matches = h
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path == "index.html" {
        // The page loads only its own files and talks only to its own origin.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
    }
    if compressible(path)
        && accepts_gzip(h)
        && let Some(gz) = gzipped(path, &file.data)
    {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return (StatusCode::OK, headers, gz).into_response();
    }
    (StatusCode::OK, headers, file.data.into_owned()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_paths_are_open_only_for_reads() {
        assert!(serves(&Method::GET, "/"));
        assert!(serves(&Method::HEAD, "/index.html"));
        assert!(serves(&Method::GET, "/assets/index-abc.js"));
        assert!(!serves(&Method::POST, "/"));
        assert!(!serves(&Method::GET, "/assets/"));
        assert!(!serves(&Method::GET, "/assets/a/b.js"));
        assert!(!serves(&Method::GET, "/api/v1/flows"));
    }

    #[test]
    fn the_build_is_embedded_with_an_index_that_names_its_assets() {
        let index = Assets::get("index.html").expect("index.html is embedded");
        let text = String::from_utf8(index.data.into_owned()).expect("utf-8");
        let assets: Vec<_> = Assets::iter()
            .filter(|f| f.starts_with("assets/"))
            .collect();
        assert!(!assets.is_empty(), "no assets embedded");
        for a in &assets {
            assert!(
                text.contains(&format!("/{a}")),
                "index.html does not load {a}"
            );
        }
        assert!(embedded_bytes() < 1 << 20, "the console adds over 1 MiB");
    }

    #[test]
    fn gzip_is_chosen_from_accept_encoding() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
