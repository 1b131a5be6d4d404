//! Webhook signature checks over the raw request bytes, before any parsing.
//! All comparisons are constant time (`Mac::verify_slice`). Pure: the current
//! time comes in as an argument.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::core::clock::Timestamp;

/// Why a delivery was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {0} header")]
    MalformedHeader(&'static str),
    #[error("signature does not match")]
    BadSignature,
    #[error("timestamp is outside the {0} s tolerance")]
    Stale(i64),
    #[error("event createdAt is older than {0} h (the dedupe window); a replay is refused")]
    Replayed(u64),
    #[error("no secret is configured for this source ({0}); refusing unauthenticated deliveries")]
    NotConfigured(&'static str),
}

/// Tolerance for signed timestamps (Standard Webhooks, Grafana).
pub const TOLERANCE_SECS: i64 = 300;

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    mac
}

/// `hex(HMAC-SHA256(secret, body))`, as Sentry and Grafana send it.
pub fn hmac_sha256_hex(
    secret: &[u8],
    signed: &[&[u8]],
    header_hex: &str,
) -> Result<(), VerifyError> {
    let tag = hex::decode(header_hex.trim()).map_err(|_| VerifyError::BadSignature)?;
    hmac256(secret, signed)
        .verify_slice(&tag)
        .map_err(|_| VerifyError::BadSignature)
}

/// `hex(HMAC-SHA1(secret, body))`, as Vercel sends it in `x-vercel-signature`.
pub fn hmac_sha1_hex(secret: &[u8], body: &[u8], header_hex: &str) -> Result<(), VerifyError> {
    let tag = hex::decode(header_hex.trim()).map_err(|_| VerifyError::BadSignature)?;
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    mac.verify_slice(&tag)
        .map_err(|_| VerifyError::BadSignature)
}

/// Grafana: signs `"{ts}:{body}"` when a timestamp header is configured, else the body.
pub fn grafana(
    secret: &[u8],
    body: &[u8],
    signature: &str,
    timestamp: Option<&str>,
    now: Timestamp,
) -> Result<(), VerifyError> {
    match timestamp {
        Some(ts) => {
            check_fresh(ts, now, "timestamp")?;
            hmac_sha256_hex(secret, &[ts.trim().as_bytes(), b":", body], signature)
        }
        None => hmac_sha256_hex(secret, &[body], signature),
    }
}

/// Parses a signed timestamp header (seconds) and checks it is within
/// [`TOLERANCE_SECS`] of `now`. Any i64 is handled: the distance is computed
/// without overflow.
pub fn check_fresh(ts: &str, now: Timestamp, header: &'static str) -> Result<i64, VerifyError> {
    let secs: i64 = ts
        .trim()
        .parse()
        .map_err(|_| VerifyError::MalformedHeader(header))?;
    if (now.as_millis() / 1000).abs_diff(secs) > TOLERANCE_SECS.unsigned_abs() {
        return Err(VerifyError::Stale(TOLERANCE_SECS));
    }
    Ok(secs)
}

/// Standard Webhooks: `webhook-signature` holds space-separated `v1,<base64>`
/// signatures of `"{webhook-id}.{webhook-timestamp}.{body}"`; the secret is
/// `whsec_<base64 key>` (a secret without the prefix is used as raw bytes).
pub fn standard_webhooks(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: Timestamp,
) -> Result<(), VerifyError> {
    check_fresh(timestamp, now, "webhook-timestamp")?;
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| {
                VerifyError::NotConfigured("GENERIC_WEBHOOK_SECRET is not valid base64")
            })?,
        None => secret.as_bytes().to_vec(),
    };
    let mac = hmac256(
        &key,
        &[id.as_bytes(), b".", timestamp.trim().as_bytes(), b".", body],
    );
    for sig in signatures.split_whitespace() {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        if mac.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::BadSignature)
}

/// Signs like Standard Webhooks (for senders and tests).
pub fn sign_standard_webhooks(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let tag = hmac256(
        &key,
        &[
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    )
    .finalize()
    .into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// `hex(HMAC-SHA256(secret, parts…))` (for senders and tests).
pub fn sign_sha256_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(hmac256(secret, parts).finalize().into_bytes())
}

/// `hex(HMAC-SHA1(secret, body))` (for senders and tests).
pub fn sign_sha1_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    #[test]
    fn hmac_sha256_matches_the_rfc_4231_style_known_vector() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        let want = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        assert_eq!(
            sign_sha256_hex(b"key", &[b"The quick brown fox jumps over the lazy dog"]),
            want
        );
        assert_eq!(
            hmac_sha256_hex(
                b"key",
                &[b"The quick brown fox jumps over the lazy dog"],
                want
            ),
            Ok(())
        );
        assert_eq!(
            hmac_sha256_hex(
                b"key",
                &[b"The quick brown fox jumps over the lazy cat"],
                want
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            hmac_sha256_hex(b"key", &[b"x"], "not-hex"),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn hmac_sha1_matches_the_known_vector() {
        let want = "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9";
        assert_eq!(
            sign_sha1_hex(b"key", b"The quick brown fox jumps over the lazy dog"),
            want
        );
        assert_eq!(
            hmac_sha1_hex(b"key", b"The quick brown fox jumps over the lazy dog", want),
            Ok(())
        );
        assert!(hmac_sha1_hex(
            b"other",
            b"The quick brown fox jumps over the lazy dog",
            want
        )
        .is_err());
    }

    #[test]
    fn standard_webhooks_accepts_any_listed_signature_and_rejects_stale_ones() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let ts = NOW.as_millis() / 1000;
        let good = sign_standard_webhooks(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", ts, body);
        let header = format!("v1,AAAA {good}");
        assert_eq!(
            standard_webhooks(
                secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                &ts.to_string(),
                &header,
                body,
                NOW
            ),
            Ok(())
        );
        assert_eq!(
            standard_webhooks(secret, "msg_other", &ts.to_string(), &good, body, NOW),
            Err(VerifyError::BadSignature),
            "the id is signed"
        );
        let old = (ts - 301).to_string();
        assert_eq!(
            standard_webhooks(
                secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                &old,
                &good,
                body,
                NOW
            ),
            Err(VerifyError::Stale(300))
        );
    }

    #[test]
    fn grafana_signs_the_timestamp_when_one_is_sent() {
        let ts = (NOW.as_millis() / 1000).to_string();
        let sig = sign_sha256_hex(b"s3cret", &[ts.as_bytes(), b":", b"{}"]);
        assert_eq!(grafana(b"s3cret", b"{}", &sig, Some(&ts), NOW), Ok(()));
        assert!(grafana(b"s3cret", b"{}", &sig, None, NOW).is_err());
        let plain = sign_sha256_hex(b"s3cret", &[b"{}"]);
        assert_eq!(grafana(b"s3cret", b"{}", &plain, None, NOW), Ok(()));
    }
}
