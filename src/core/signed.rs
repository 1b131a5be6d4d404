//! Signed values `<version>.<kid>.<payload>.<mac>` (pure): the payload is
//! URL-safe base64 JSON, the MAC is HMAC-SHA256 with the key named by `kid`
//! over `domain` followed by `<version>.<kid>.<payload>`, compared in
//! constant time. Approval links and dashboard sessions are both such
//! values; their versions and domains keep one from verifying as the other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;

use crate::core::secret::Secret;

/// One HMAC key (approval links, dashboard sessions).
#[derive(Clone, Debug)]
pub struct SigningKey {
    /// Key id carried in the token so keys can rotate.
    pub kid: String,
    pub key: Secret,
}

/// Why a value did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    Malformed,
    UnknownKey,
    BadSignature,
}

fn mac(key: &SigningKey, domain: &str, signed: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key.key.expose().as_bytes())
        .expect("HMAC accepts any key length");
    m.update(domain.as_bytes());
    m.update(signed.as_bytes());
    m
}

/// Signs `payload` with `key`.
pub fn seal<T: Serialize>(key: &SigningKey, domain: &str, version: &str, payload: &T) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).expect("payload serializes"));
    let signed = format!("{version}.{}.{body}", key.kid);
    let tag = URL_SAFE_NO_PAD.encode(mac(key, domain, &signed).finalize().into_bytes());
    format!("{signed}.{tag}")
}

/// Checks the shape, the key and the MAC, then decodes the payload.
pub fn open<T: DeserializeOwned>(
    keys: &[SigningKey],
    domain: &str,
    version: &str,
    value: &str,
) -> Result<T, OpenError> {
    let mut parts = value.split('.');
    let (Some(v), Some(kid), Some(body), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(OpenError::Malformed);
    };
    if v != version {
        return Err(OpenError::Malformed);
    }
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(OpenError::UnknownKey)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| OpenError::Malformed)?;
    mac(key, domain, &format!("{version}.{kid}.{body}"))
        .verify_slice(&tag)
        .map_err(|_| OpenError::BadSignature)?;
    URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(OpenError::Malformed)
}
