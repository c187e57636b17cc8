//! Answers every route shares: list pages and store failures.

use crate::http::response::Response;

/// `{"items":[...],"next_cursor":...}` from already-encoded items.
pub fn page(items: &[String], next: Option<String>) -> Response {
    let mut s = String::with_capacity(32 + items.iter().map(|i| i.len() + 1).sum::<usize>());
    s.push_str("{\"items\":[");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(it);
    }
    s.push_str("],\"next_cursor\":");
    match next {
        Some(c) => {
            s.push('"');
            s.push_str(&c);
            s.push('"');
        }
        None => s.push_str("null"),
    }
    s.push('}');
    Response::json(200, s.into_bytes())
}

pub fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "store error in API");
    Response::error(
        503,
        "store_unavailable",
        "the store could not complete the request; retry",
    )
}
