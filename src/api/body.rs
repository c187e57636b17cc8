//! A request's JSON object body and typed getters for its fields. Every error is the 400 (or 415)
//! a client sees; the getters take the message because each field words its own.

use simd_json::OwnedValue;
use simd_json::prelude::*;

use crate::api::error::ApiError;
use crate::http::request::Request;

/// The body of a request that must be a JSON object, parsed.
#[derive(Debug)]
pub struct JsonObject {
    value: OwnedValue,
}

impl JsonObject {
    /// Reads the body: 415 unless it is sent as `application/json`, 400 `invalid_json` if it
    /// nests too deep, does not parse, or is not an object.
    pub fn from_request(req: &Request) -> Result<JsonObject, ApiError> {
        let ct = req.header_str("content-type").unwrap_or("");
        if !ct.to_ascii_lowercase().starts_with("application/json") {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        JsonObject::parse(req.body.clone())
    }

    fn parse(mut text: Vec<u8>) -> Result<JsonObject, ApiError> {
        // simd-json recurses, so the depth is checked on the text first.
        if crate::lenient::too_deep(&text, crate::lenient::MAX_JSON_DEPTH) {
            return Err(ApiError::new(
                400,
                "invalid_json",
                "the JSON body nests too deep",
            ));
        }
        let value = simd_json::to_owned_value(&mut text)
            .map_err(|e| ApiError::new(400, "invalid_json", format!("malformed JSON body: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::new(
                400,
                "invalid_json",
                "the body must be a JSON object",
            ));
        }
        Ok(JsonObject { value })
    }

    /// The field as sent, `null` included.
    pub fn get(&self, key: &str) -> Option<&OwnedValue> {
        self.value.get(key)
    }

    /// The field, where `null` counts as not sent.
    pub fn given(&self, key: &str) -> Option<&OwnedValue> {
        self.get(key).filter(|v| !v.is_null())
    }

    /// The first field name not in `allowed`.
    pub fn unknown_key(&self, allowed: &[&str]) -> Option<&str> {
        self.value
            .as_object()
            .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())))
            .map(String::as_str)
    }

    /// A string field, as sent; `why` if it is missing or not a string.
    pub fn string(&self, key: &str, why: &str) -> Result<&str, ApiError> {
        self.get(key)
            .and_then(|v| v.as_str())
            .ok_or_else(|| ApiError::invalid_field(why))
    }

    /// A string field if given (not missing, not `null`); `why` if it is not a string.
    pub fn opt_string(&self, key: &str, why: &str) -> Result<Option<&str>, ApiError> {
        self.given(key)
            .map(|v| v.as_str().ok_or_else(|| ApiError::invalid_field(why)))
            .transpose()
    }

    /// A trimmed string field of 1 to `max` bytes; `why` if it is missing, not a string, blank,
    /// or longer.
    pub fn text(&self, key: &str, max: usize, why: &str) -> Result<String, ApiError> {
        self.get(key)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= max)
            .map(str::to_string)
            .ok_or_else(|| ApiError::invalid_field(why))
    }

    /// `text` for a field that may be left out or `null`.
    pub fn opt_text(&self, key: &str, max: usize, why: &str) -> Result<Option<String>, ApiError> {
        self.given(key)
            .map(|_| self.text(key, max, why))
            .transpose()
    }

    /// A string field read by `parse` if given; `why` if it is not a string `parse` accepts.
    pub fn opt_parsed<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Option<T>,
        why: &str,
    ) -> Result<Option<T>, ApiError> {
        self.given(key)
            .map(|v| {
                v.as_str()
                    .and_then(parse)
                    .ok_or_else(|| ApiError::invalid_field(why))
            })
            .transpose()
    }

    /// A non-negative integer field if given; `why` if it is anything else.
    pub fn opt_u64(&self, key: &str, why: &str) -> Result<Option<u64>, ApiError> {
        self.given(key)
            .map(|v| v.as_u64().ok_or_else(|| ApiError::invalid_field(why)))
            .transpose()
    }

    /// A boolean field; anything else (missing, `null`, another type) reads as not given rather
    /// than as an error, as the API has always taken `must_change_password`.
    pub fn opt_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.as_bool())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::Method;
    use crate::http::response::Response;

    fn req(content_type: Option<&str>, body: &str) -> Request {
        Request {
            method: Method::Post,
            path: "/api/x".to_string(),
            query: String::new(),
            headers: content_type
                .map(|c| ("content-type".to_string(), c.as_bytes().to_vec()))
                .into_iter()
                .collect(),
            body: body.as_bytes().to_vec(),
            keep_alive: true,
            version: 1,
            secure: false,
        }
    }

    fn object(body: &str) -> JsonObject {
        JsonObject::from_request(&req(Some("application/json"), body)).expect("an object")
    }

    fn error(r: Result<impl std::fmt::Debug, ApiError>) -> (u16, String, String) {
        let e = r.expect_err("an error");
        (e.status, e.code.to_string(), e.message)
    }

    #[test]
    fn the_body_must_be_a_json_object_sent_as_json() {
        let ct = |c| JsonObject::from_request(&req(c, "{}"));
        assert_eq!(
            error(ct(Some("text/plain"))),
            (
                415,
                "unsupported_media_type".into(),
                "send the body as Content-Type: application/json".into()
            )
        );
        assert_eq!(error(ct(None)).0, 415);
        assert!(ct(Some("Application/JSON; charset=utf-8")).is_ok());
        let bad = |b: &str| error(JsonObject::from_request(&req(Some("application/json"), b)));
        assert_eq!(
            bad("[1]"),
            (
                400,
                "invalid_json".into(),
                "the body must be a JSON object".into()
            )
        );
        let (status, code, message) = bad("{");
        assert_eq!((status, code.as_str()), (400, "invalid_json"));
        assert!(message.starts_with("malformed JSON body: "), "{message}");
        assert_eq!(
            bad(&format!("{}{}", "[".repeat(100), "]".repeat(100))),
            (
                400,
                "invalid_json".into(),
                "the JSON body nests too deep".into()
            )
        );
    }

    #[test]
    fn an_error_reads_as_todays_json_error() {
        let e = JsonObject::from_request(&req(Some("application/json"), "[]")).expect_err("array");
        let r: Response = e.into();
        assert_eq!(
            r.body,
            br#"{"error":{"code":"invalid_json","message":"the body must be a JSON object"}}"#
        );
    }

    #[test]
    fn strings_are_required_or_optional_and_null_is_not_given() {
        let o = object(r#"{"a":"x","n":null,"i":5,"blank":"  ","long":"abcdef"}"#);
        assert_eq!(o.string("a", "why"), Ok("x"));
        assert_eq!(
            error(o.string("n", "why")),
            (400, "invalid_field".into(), "why".into())
        );
        assert_eq!(error(o.string("i", "why")).2, "why");
        assert_eq!(error(o.string("missing", "why")).2, "why");
        assert_eq!(o.opt_string("missing", "why"), Ok(None));
        assert_eq!(o.opt_string("n", "why"), Ok(None));
        assert_eq!(o.opt_string("a", "why"), Ok(Some("x")));
        assert_eq!(error(o.opt_string("i", "why")).2, "why");
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        let o = object(r#"{"a":" x ","n":null,"blank":"  ","long":"abcdef"}"#);
        assert_eq!(o.text("a", 5, "why"), Ok("x".to_string()));
        assert_eq!(error(o.text("blank", 5, "why")).2, "why");
        assert_eq!(error(o.text("long", 5, "why")).2, "why");
        assert_eq!(error(o.text("n", 5, "why")).2, "why");
        assert_eq!(o.opt_text("n", 5, "why"), Ok(None));
        assert_eq!(o.opt_text("missing", 5, "why"), Ok(None));
        assert_eq!(error(o.opt_text("blank", 5, "why")).2, "why");
    }

    #[test]
    fn numbers_booleans_and_parsed_strings() {
        let o = object(r#"{"t":60,"neg":-1,"f":1.5,"s":"60","b":true,"bs":"yes","p":"two"}"#);
        assert_eq!(o.opt_u64("t", "why"), Ok(Some(60)));
        assert_eq!(o.opt_u64("missing", "why"), Ok(None));
        for k in ["neg", "f", "s"] {
            assert_eq!(error(o.opt_u64(k, "why")).2, "why", "{k}");
        }
        assert_eq!(o.opt_bool("b"), Some(true));
        assert_eq!(o.opt_bool("bs"), None);
        let two = |s: &str| (s == "two").then_some(2);
        assert_eq!(o.opt_parsed("p", two, "why"), Ok(Some(2)));
        assert_eq!(o.opt_parsed("missing", two, "why"), Ok(None));
        assert_eq!(error(o.opt_parsed("s", two, "why")).2, "why");
        assert_eq!(error(o.opt_parsed("t", two, "why")).2, "why");
    }

    #[test]
    fn unknown_keys_are_named() {
        let o = object(r#"{"name":"x","serial":"y"}"#);
        assert_eq!(o.unknown_key(&["name", "settings"]), Some("serial"));
        assert_eq!(o.unknown_key(&["name", "serial"]), None);
    }
}
