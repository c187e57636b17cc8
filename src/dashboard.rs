//! The operator dashboard's static files, embedded in the binary (no build step, nothing to deploy
//! beside it) and served at `/`. The page logs in through the REST API itself, so these files need
//! no authentication; they hold no data.

use crate::http::request::{Method, Request};
use crate::http::response::Response;

/// Strict CSP: only this origin's scripts and styles, no inline code, no framing (clickjacking).
pub const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

const FILES: [(&str, &str, &str); 7] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    ),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/app.css"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "/api.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/api.js"),
    ),
    (
        "/pages.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/pages.js"),
    ),
    (
        "/charts.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/charts.js"),
    ),
    (
        "/snippets.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/snippets.js"),
    ),
];

/// The file at `req.path`, or `None` if this is not one of the dashboard's paths.
pub fn serve(req: &Request) -> Option<Response> {
    let path = if req.path == "/index.html" {
        "/"
    } else {
        req.path.as_str()
    };
    let (_, content_type, body) = FILES.iter().find(|(p, _, _)| *p == path)?;
    Some(match req.method {
        Method::Get | Method::Head => Response::text(200, content_type, body.as_bytes().to_vec())
            // Revalidate on every load so a new binary's dashboard is picked up at once.
            .with_header("Cache-Control", "no-cache".to_string())
            .with_header("Content-Security-Policy", CSP.to_string())
            .with_header("X-Content-Type-Options", "nosniff".to_string())
            .with_header("Referrer-Policy", "same-origin".to_string()),
        _ => Response::error(
            405,
            "method_not_allowed",
            "this route does not accept that method",
        ),
    })
}
