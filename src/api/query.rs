//! A request's query parameters, read as the lists need them: page size, cursor, times, ids. Every
//! error is a 400 `invalid_query`.

use uuid::Uuid;

use crate::api::error::ApiError;
use crate::fleet::auth;
use crate::http::query;

/// Items per page when the client does not say, and the most it may ask for.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// A cursor this server did not hand out (or handed out for another list).
pub fn bad_cursor() -> ApiError {
    ApiError::invalid_query("cursor is not one this list returned")
}

/// The decoded `key=value` pairs of a query string.
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Query {
        Query {
            pairs: query::parse(raw),
        }
    }

    /// The first value of `key`, empty or not.
    pub fn get(&self, key: &str) -> Option<&str> {
        query::get(&self.pairs, key)
    }

    /// The first value of `key` unless it is empty: `?status=` filters on nothing.
    pub fn given(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// `limit`: 1 to `MAX_LIMIT`, `DEFAULT_LIMIT` when absent.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::invalid_query(format!(
                    "limit must be 1 to {MAX_LIMIT}"
                ))),
            },
        }
    }

    /// `cursor` of a store scan: the hex of the key to continue from (see `page::key_page`),
    /// which must lie under the list's `prefix` so a cursor cannot walk into another list.
    pub fn key_cursor(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
        match self.given("cursor") {
            None => Ok(None),
            Some(c) => match auth::unhex(c) {
                Some(k) if k.starts_with(prefix) => Ok(Some(k)),
                _ => Err(bad_cursor()),
            },
        }
    }

    /// An RFC 3339 time, in microseconds since the epoch (earlier times clamp to 0); `why` if it
    /// does not parse.
    pub fn time_us(&self, key: &str, why: &str) -> Result<Option<u64>, ApiError> {
        self.given(key)
            .map(|s| {
                s.parse::<jiff::Timestamp>()
                    .map(|t| t.as_microsecond().max(0) as u64)
                    .map_err(|_| ApiError::invalid_query(why))
            })
            .transpose()
    }

    /// A UUID, such as `device_id`.
    pub fn uuid(&self, key: &str) -> Result<Option<Uuid>, ApiError> {
        self.given(key)
            .map(|s| {
                Uuid::parse_str(s)
                    .map_err(|_| ApiError::invalid_query(format!("{key} must be a UUID")))
            })
            .transpose()
    }

    /// A non-negative integer, such as `enrollid`.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.given(key)
            .map(|s| {
                s.parse()
                    .map_err(|_| ApiError::invalid_query(format!("{key} must be a number")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<T: std::fmt::Debug>(r: Result<T, ApiError>) -> String {
        let e = r.expect_err("an error");
        assert_eq!((e.status, e.code), (400, "invalid_query"));
        e.message
    }

    #[test]
    fn limit_defaults_and_is_bounded() {
        assert_eq!(Query::parse("").limit(), Ok(DEFAULT_LIMIT));
        assert_eq!(Query::parse("limit=1").limit(), Ok(1));
        assert_eq!(Query::parse("limit=1000").limit(), Ok(1000));
        for bad in ["limit=0", "limit=1001", "limit=x", "limit=", "limit=-1"] {
            assert_eq!(
                message(Query::parse(bad).limit()),
                "limit must be 1 to 1000",
                "{bad}"
            );
        }
    }

    #[test]
    fn key_cursors_stay_under_their_prefix() {
        assert_eq!(Query::parse("").key_cursor(b"\x01"), Ok(None));
        assert_eq!(Query::parse("cursor=").key_cursor(b"\x01"), Ok(None));
        assert_eq!(
            Query::parse("cursor=0102").key_cursor(b"\x01"),
            Ok(Some(vec![1, 2]))
        );
        for bad in ["cursor=0202", "cursor=zz", "cursor=0"] {
            assert_eq!(
                message(Query::parse(bad).key_cursor(b"\x01")),
                "cursor is not one this list returned",
                "{bad}"
            );
        }
    }

    #[test]
    fn times_ids_and_numbers() {
        let q = Query::parse("from=1970-01-01T00:00:01Z&to=nope&d=x&e=7&f=-1&g=");
        assert_eq!(q.time_us("from", "why"), Ok(Some(1_000_000)));
        assert_eq!(message(q.time_us("to", "why")), "why");
        assert_eq!(q.time_us("g", "why"), Ok(None));
        assert_eq!(message(q.uuid("d")), "d must be a UUID");
        assert_eq!(q.uuid("g"), Ok(None));
        assert_eq!(q.u64("e"), Ok(Some(7)));
        assert_eq!(message(q.u64("f")), "f must be a number");
        assert_eq!(q.u64("missing"), Ok(None));
    }
}
