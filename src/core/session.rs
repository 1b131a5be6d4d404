//! Dashboard sessions (pure): `s1.<kid>.<payload>.<mac>`, HMAC-SHA256 over
//! `session:s1.<kid>.<payload>` with the approval signing keys (the first
//! signs, all verify, so keys rotate as approval links do; the `session:`
//! prefix keeps a session from ever verifying as an approval link). The
//! payload holds a random session id (for sign-out), the expiry, and a
//! fingerprint of the operator token, so changing the token ends every
//! session. Time and randomness are passed in.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::clock::Timestamp;
use crate::core::secret::Secret;
use crate::core::signed::{self, SigningKey};

/// MAC domain: a session never verifies as an approval link.
const DOMAIN: &str = "session:";

/// How long a session lasts.
pub const SESSION_SECS: i64 = 12 * 3600;

/// What a session says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Random id, revoked on sign-out.
    pub sid: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Fingerprint of the operator token it was issued for.
    pub op: String,
}

/// Why a session value is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("not a session")]
    Malformed,
    #[error("the session's signature is invalid")]
    BadSignature,
    #[error("the session has expired")]
    Expired,
    #[error("the operator token changed since this session began")]
    TokenChanged,
}

/// The first 16 hex characters of SHA-256 of the operator token.
pub fn fingerprint(operator_token: &Secret) -> String {
    hex::encode(&Sha256::digest(operator_token.expose().as_bytes())[..8])
}

/// The keys sessions are signed with: the approval signing keys, or, when
/// none are configured, one derived from the operator token.
pub fn keys(signing_keys: &[SigningKey], operator_token: &Secret) -> Vec<SigningKey> {
    if !signing_keys.is_empty() {
        return signing_keys.to_vec();
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(operator_token.expose().as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(b"rollback-guard dashboard session key");
    vec![SigningKey {
        kid: "op".into(),
        key: Secret::new(hex::encode(mac.finalize().into_bytes())),
    }]
}

/// A new session value.
pub fn mint(key: &SigningKey, sid: [u8; 16], op: &str, now: Timestamp) -> String {
    let s = Session {
        sid: hex::encode(sid),
        exp: now.as_millis() / 1000 + SESSION_SECS,
        op: op.to_string(),
    };
    signed::seal(key, DOMAIN, "s1", &s)
}

/// Checks a session value: signature (constant time), expiry, token.
pub fn verify(
    keys: &[SigningKey],
    value: &str,
    op: &str,
    now: Timestamp,
) -> Result<Session, SessionError> {
    let s: Session = signed::open(keys, DOMAIN, "s1", value).map_err(|e| match e {
        signed::OpenError::Malformed => SessionError::Malformed,
        signed::OpenError::UnknownKey | signed::OpenError::BadSignature => {
            SessionError::BadSignature
        }
    })?;
    if now.as_millis() / 1000 >= s.exp {
        return Err(SessionError::Expired);
    }
    if s.op != op {
        return Err(SessionError::TokenChanged);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, k: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            key: Secret::new(k),
        }
    }

    #[test]
    fn sessions_verify_rotate_expire_and_end_with_the_token() {
        let now = Timestamp::from_millis(1_795_600_800_000);
        let old = key("k1", "k1-secret-0123456789-0123456789-abc");
        let new = key("k2", "k2-secret-0123456789-0123456789-abc");
        let v = mint(&old, [7; 16], "fp1", now);
        // Rotation: the old key still verifies while it is listed.
        let s = verify(&[new.clone(), old.clone()], &v, "fp1", now).unwrap();
        assert_eq!(s.sid, hex::encode([7u8; 16]));
        assert_eq!(
            verify(&[new], &v, "fp1", now),
            Err(SessionError::BadSignature)
        );
        let later = now.plus(std::time::Duration::from_secs(SESSION_SECS as u64));
        assert_eq!(
            verify(std::slice::from_ref(&old), &v, "fp1", later),
            Err(SessionError::Expired)
        );
        assert_eq!(
            verify(std::slice::from_ref(&old), &v, "fp2", now),
            Err(SessionError::TokenChanged)
        );
        assert_eq!(
            verify(&[old], "v1.k1.x.y", "fp1", now),
            Err(SessionError::Malformed)
        );
    }
}
