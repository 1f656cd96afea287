//! The web dashboard at `/ui`: static assets compiled into the binary, nothing to build or
//! install. The page holds no data of its own: its script calls the same `/v1` API as the CLI,
//! with the token the operator types in (kept in the browser tab's session storage), so it can
//! show and do exactly what that token may.
//!
//! The assets are public (the page must load before it can ask for a token); a strict
//! Content-Security-Policy keeps them from loading or running anything but themselves.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Every file the dashboard serves, by name. uPlot (MIT, see `assets/LICENSE-uPlot`) draws the
/// charts.
const ASSETS: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("assets/index.html")),
    ("app.js", include_bytes!("assets/app.js")),
    ("app.css", include_bytes!("assets/app.css")),
    ("uplot.min.js", include_bytes!("assets/uplot.min.js")),
    ("uplot.min.css", include_bytes!("assets/uplot.min.css")),
    ("LICENSE-uPlot", include_bytes!("assets/LICENSE-uPlot")),
];

/// The media type of an asset, by its extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

/// Only this origin's own scripts, styles and API; no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// The dashboard's routes, to merge into the API's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { serve("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

fn serve(name: &str) -> Response {
    let Some((_, body)) = ASSETS.iter().find(|(n, _)| *n == name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no dashboard file {name:?}; the dashboard is at /ui/"),
        )
            .into_response();
    };
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(name)),
        )],
        *body,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary brings new assets under the same names: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_links_is_served() {
        let index = std::str::from_utf8(ASSETS[0].1).unwrap();
        for linked in ["app.js", "app.css", "uplot.min.js", "uplot.min.css"] {
            assert!(
                index.contains(&format!("\"{linked}\"")),
                "index.html links {linked}"
            );
            assert_eq!(serve(linked).status(), StatusCode::OK);
        }
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        let total: usize = ASSETS.iter().map(|(_, body)| body.len()).sum();
        assert!(total < 1024 * 1024);
    }

    #[test]
    fn the_page_runs_no_inline_script() {
        // The CSP forbids inline script; one would silently not run.
        let index = std::str::from_utf8(ASSETS[0].1).unwrap();
        assert!(!index.contains("<script>"), "inline script in index.html");
        for handler in ["onclick=", "onload=", "onsubmit=", "onchange=", "oninput="] {
            assert!(!index.contains(handler), "inline {handler} in index.html");
        }
    }
}
