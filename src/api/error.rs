//! `ApiError`: every way an API request fails, answered as `{"error":{"code","message"}}`.

use std::fmt::Display;

use crate::http::response::Response;
use crate::store::StoreError;

/// A failed request: its status, a machine-readable code, a message for people, and any headers
/// the client needs to act on it (`Retry-After`, `WWW-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// A body field is missing, of the wrong type, or out of range.
    pub fn invalid_field(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_field", message)
    }

    /// A query parameter cannot be read.
    pub fn invalid_query(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_query", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", message)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "method_not_allowed",
            "this route does not accept that method",
        )
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, "conflict", message)
    }

    /// No valid credentials: the header tells clients which scheme to use.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            401,
            "unauthorized",
            "log in, or send Authorization: Bearer <admin or API token>",
        )
        .with_header("WWW-Authenticate", "Bearer".to_string())
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(403, "forbidden", "your role does not allow this")
    }

    /// The store (or the random source, or the password hasher) failed: a 503 the client may
    /// retry. The cause goes to the log, not to the client.
    pub fn unavailable(cause: impl Display) -> ApiError {
        tracing::error!(error = %cause, "store error in API");
        ApiError::new(
            503,
            "store_unavailable",
            "the store could not complete the request; retry",
        )
    }
}

impl ApiError {
    /// A change that needs the cluster (its registry, its command stream) while NATS cannot be
    /// reached: nothing was changed anywhere; the client may retry.
    pub fn cluster_unavailable(why: &str) -> ApiError {
        ApiError::new(
            503,
            "cluster_unavailable",
            format!(
                "this change needs the cluster, which cannot be reached now ({why}); nothing was changed; retry"
            ),
        )
    }
}

impl From<crate::fleet::cluster::ClusterError> for ApiError {
    fn from(e: crate::fleet::cluster::ClusterError) -> ApiError {
        match e {
            crate::fleet::cluster::ClusterError::Unavailable(why) => {
                ApiError::cluster_unavailable(&why)
            }
            crate::fleet::cluster::ClusterError::SerialTaken => ApiError::new(
                409,
                "serial_taken",
                "a device with this serial exists or is being created",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::unavailable(e)
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        let mut r = Response::error(e.status, e.code, &e.message);
        r.headers.extend(e.headers);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_one_error_shape_with_its_headers() {
        let r: Response = ApiError::new(429, "auth_throttled", "wait")
            .with_header("Retry-After", "3".to_string())
            .into();
        assert_eq!(r.status, 429);
        assert_eq!(
            r.body,
            br#"{"error":{"code":"auth_throttled","message":"wait"}}"#
        );
        assert_eq!(
            r.headers,
            vec![
                ("Content-Type", "application/json".to_string()),
                ("Retry-After", "3".to_string())
            ]
        );
    }

    #[test]
    fn a_store_error_is_a_503_that_hides_its_cause() {
        let r: Response = ApiError::from(StoreError::CommitFailed).into();
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body,
            br#"{"error":{"code":"store_unavailable","message":"the store could not complete the request; retry"}}"#
        );
    }
}
