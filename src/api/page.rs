//! A page of a list: `{"items":[...],"next_cursor":...}`, the shape every list answers.

use serde::Serialize;

use crate::fleet::auth;
use crate::http::response::Response;

/// A page from already-encoded items; `next` is the cursor of the following page, if any.
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

/// A page of a store scan that continues at `next` (a store key): its cursor is the key's hex,
/// opaque to clients, which `Query::key_cursor` reads back.
pub fn key_page(items: &[String], next: Option<Vec<u8>>) -> Response {
    page(items, next.map(|k| auth::hex(&k)))
}

/// A list that is always one page (users, tokens): its cursor is always `null`.
pub fn whole<T: Serialize>(items: Vec<T>) -> Response {
    #[derive(Serialize)]
    struct Items<T> {
        items: Vec<T>,
        next_cursor: Option<String>,
    }
    Response::json_value(
        200,
        &Items {
            items,
            next_cursor: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_cursor() {
        let items = ["{\"a\":1}".to_string(), "2".to_string()];
        assert_eq!(
            page(&items, None).body,
            b"{\"items\":[{\"a\":1},2],\"next_cursor\":null}"
        );
        assert_eq!(
            key_page(&[], Some(vec![0, 255])).body,
            b"{\"items\":[],\"next_cursor\":\"00ff\"}"
        );
        assert_eq!(
            whole(vec![1, 2]).body,
            b"{\"items\":[1,2],\"next_cursor\":null}"
        );
    }
}
