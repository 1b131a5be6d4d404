//! Secrets that never print: `Debug` and `Display` are redacted, and the value
//! is only reachable through [`Secret::expose`].

use std::fmt;

/// A secret string (token, key, connection URL with a password).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Call sites should be few and obvious.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality with a presented value (bearer tokens, cron secret).
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"[redacted]\")")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Compares two byte strings without an early exit on the first difference.
/// The length is not secret (it leaks through timing anyway).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Replaces the password in a connection URL with `***` for logs and health output.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let secretish = ["password", "token", "key", "secret"]
                        .iter()
                        .any(|s| k.to_ascii_lowercase().contains(s));
                    (
                        k.into_owned(),
                        if secretish {
                            "***".into()
                        } else {
                            v.into_owned()
                        },
                    )
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "[unparseable url]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
    }

    #[test]
    fn matches_compares_whole_values() {
        let s = Secret::new("abc123");
        assert!(s.matches(b"abc123"));
        assert!(!s.matches(b"abc12"));
        assert!(!s.matches(b"abc124"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn redact_url_hides_password_and_token_params() {
        let r = redact_url("postgres://u:pw@db.example:5432/app?sslmode=require&api_token=zz");
        assert_eq!(
            r,
            "postgres://u:***@db.example:5432/app?sslmode=require&api_token=***"
        );
        assert_eq!(redact_url("not a url"), "[unparseable url]");
    }
}
