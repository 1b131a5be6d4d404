//! `ApiError` and every mapping from module errors to HTTP. Bodies are always
//! JSON `{code, detail}` with a stable snake_case `code`; 5xx details are
//! opaque (the cause is logged once, here, never sent to the client).

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};

use crate::store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `payload_too_large`.
    pub code: &'static str,
    /// Human-readable explanation; never contains secrets.
    pub detail: String,
    /// Seconds a client should wait before retrying (503, 429).
    pub retry_after: Option<u32>,
    /// Methods the route accepts (405 only), sent as `Allow`.
    pub allow: Option<&'static str>,
}

impl ApiError {
    /// An error with the given status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            allow: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub fn method_not_allowed(allowed: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("allowed methods: {allowed}"),
        );
        e.allow = Some(allowed);
        e
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    }

    /// The configuration is invalid; only `/api/health` answers normally.
    pub fn config_invalid() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "config_invalid",
            "the guard's configuration is invalid; GET /api/health lists the problems",
        );
        e.retry_after = Some(60);
        e
    }

    /// Renders the error as an HTTP response.
    pub fn into_response(self) -> http::Response<Bytes> {
        let body = serde_json::json!({ "code": self.code, "detail": self.detail });
        let mut res = crate::web::respond::json_response(self.status, &body);
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        res
    }
}

impl From<crate::runtime::app::ConfigInvalid> for ApiError {
    fn from(_: crate::runtime::app::ConfigInvalid) -> Self {
        ApiError::config_invalid()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} does not exist"),
            ),
            other => {
                tracing::error!(error = %other, "store failure");
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "state store is unavailable; retry later",
                );
                e.retry_after = Some(5);
                e
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_become_retryable_503s_without_internal_detail() {
        let e = ApiError::from(StoreError::Unavailable(
            "connect to 10.0.0.5:5432 refused".into(),
        ));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code, "store_unavailable");
        assert!(!e.detail.contains("10.0.0.5"));
        let res = e.into_response();
        assert_eq!(res.headers()[header::RETRY_AFTER], "5");
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn body_is_code_and_detail_json() {
        let res = ApiError::payload_too_large(1024).into_response();
        let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "payload_too_large", "detail": "request body exceeds 1024 bytes"})
        );
    }
}
