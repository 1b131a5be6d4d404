//! One parser per alert source, each turning a verified body into signals.

pub mod alertmanager;
pub mod generic;
pub mod logdrain;
pub mod sentry;
pub mod vercel;

use crate::core::clock::Timestamp;

/// Reads an RFC 3339 string, falling back to `default` (senders disagree on precision).
pub(crate) fn time_or(v: Option<&serde_json::Value>, default: Timestamp) -> Timestamp {
    v.and_then(serde_json::Value::as_str)
        .and_then(Timestamp::parse_rfc3339)
        .unwrap_or(default)
}

/// A string field, trimmed, if present and non-empty.
pub(crate) fn str_field<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().map(str::trim).filter(|s| !s.is_empty())
}
