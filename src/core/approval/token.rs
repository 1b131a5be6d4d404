//! Approval tokens: `v1.<kid>.<b64url(payload)>.<b64url(HMAC-SHA256)>`.
//! The MAC covers the version, the key id and the payload, so a token cannot
//! be moved to another key or format. The payload binds purpose, approval
//! request, incident, action, approver and target deployment, with an expiry
//! and a 128-bit nonce (consumed once, on POST, by the store). Pure: keys,
//! time and randomness are arguments.

use serde::{Deserialize, Serialize};

use crate::core::clock::Timestamp;
use crate::core::signed;

pub use crate::core::signed::SigningKey;

/// The only purpose this token format is minted for.
pub const PURPOSE: &str = "rollback.decide";
/// Clock skew tolerated on expiry.
pub const SKEW_SECS: i64 = 30;

/// What a token authorises.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "p")]
    pub purpose: String,
    /// Approval request id.
    #[serde(rename = "req")]
    pub request: String,
    #[serde(rename = "inc")]
    pub incident: String,
    /// e.g. `rollback`.
    #[serde(rename = "act")]
    pub action: String,
    /// Who may use it.
    #[serde(rename = "who")]
    pub approver: String,
    /// Deployment the rollback goes to.
    #[serde(rename = "tgt")]
    pub target: String,
    pub iat: i64,
    pub exp: i64,
    /// 128-bit random nonce, hex.
    #[serde(rename = "n")]
    pub nonce: String,
}

impl Claims {
    /// Claims for one approver, valid from `now` for `ttl_secs`. `nonce` is 16 random bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        request: &str,
        incident: &str,
        action: &str,
        approver: &str,
        target: &str,
        now: Timestamp,
        ttl_secs: i64,
        nonce: [u8; 16],
    ) -> Self {
        let iat = now.as_millis() / 1000;
        Self {
            purpose: PURPOSE.into(),
            request: request.into(),
            incident: incident.into(),
            action: action.into(),
            approver: approver.into(),
            target: target.into(),
            iat,
            exp: iat + ttl_secs,
            nonce: hex::encode(nonce),
        }
    }
}

/// Why a token was refused. Messages are safe to show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link was signed with a key that is no longer accepted")]
    UnknownKey,
    #[error("the link's signature is invalid")]
    BadSignature,
    #[error("the link has expired")]
    Expired,
    #[error("the link is not an approval link")]
    WrongPurpose,
}

/// Signs claims with `key`.
pub fn mint(key: &SigningKey, claims: &Claims) -> String {
    signed::seal(key, "", "v1", claims)
}

/// Verifies signature (constant time), key id, purpose and expiry. The nonce
/// is not consumed here: that is the store's job on POST.
pub fn verify(keys: &[SigningKey], token: &str, now: Timestamp) -> Result<Claims, TokenError> {
    let claims: Claims = signed::open(keys, "", "v1", token.trim()).map_err(|e| match e {
        signed::OpenError::Malformed => TokenError::Malformed,
        signed::OpenError::UnknownKey => TokenError::UnknownKey,
        signed::OpenError::BadSignature => TokenError::BadSignature,
    })?;
    if claims.purpose != PURPOSE {
        return Err(TokenError::WrongPurpose);
    }
    if now.as_millis() / 1000 > claims.exp + SKEW_SECS {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::secret::Secret;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn key(kid: &str, secret: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            key: Secret::new(secret),
        }
    }

    const NOW: Timestamp = Timestamp::from_millis(1_795_600_800_000);

    fn claims() -> Claims {
        Claims::new(
            "apr_1",
            "inc_1",
            "rollback",
            "alice@example.com",
            "dpl_good",
            NOW,
            1800,
            [7; 16],
        )
    }

    #[test]
    fn a_minted_token_verifies_with_any_accepted_key_set_containing_its_kid() {
        let k1 = key("k1", &"a".repeat(32));
        let k2 = key("k2", &"b".repeat(32));
        let t = mint(&k1, &claims());
        assert!(t.starts_with("v1.k1."));
        assert_eq!(verify(&[k2.clone(), k1.clone()], &t, NOW), Ok(claims()));
        // Rotation: once k1 is dropped its tokens stop working.
        assert_eq!(verify(&[k2], &t, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn forged_tampered_and_re_keyed_tokens_are_refused() {
        let k1 = key("k1", &"a".repeat(32));
        let t = mint(&k1, &claims());
        let parts: Vec<&str> = t.split('.').collect();
        // Another approver's payload under the original tag.
        let mut other = claims();
        other.approver = "mallory@example.com".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        let forged = format!("v1.k1.{forged_payload}.{}", parts[3]);
        assert_eq!(
            verify(std::slice::from_ref(&k1), &forged, NOW),
            Err(TokenError::BadSignature)
        );
        // Same key material under another kid: the kid is inside the MAC.
        let k_same = key("k9", &"a".repeat(32));
        let moved = format!("v1.k9.{}.{}", parts[2], parts[3]);
        assert_eq!(
            verify(&[k_same], &moved, NOW),
            Err(TokenError::BadSignature)
        );
        for bad in ["", "v1", "v2.k1.x.y", "v1.k1.!!.??", &format!("{t}.extra")] {
            assert!(
                verify(std::slice::from_ref(&k1), bad, NOW).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn expiry_allows_only_small_clock_skew() {
        let k1 = key("k1", &"a".repeat(32));
        let t = mint(&k1, &claims());
        assert!(verify(
            std::slice::from_ref(&k1),
            &t,
            NOW.plus(std::time::Duration::from_secs(1800 + SKEW_SECS as u64))
        )
        .is_ok());
        assert_eq!(
            verify(
                &[k1],
                &t,
                NOW.plus(std::time::Duration::from_secs(1800 + SKEW_SECS as u64 + 1))
            ),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn tokens_of_another_purpose_are_refused() {
        let k1 = key("k1", &"a".repeat(32));
        let mut c = claims();
        c.purpose = "view".into();
        assert_eq!(
            verify(std::slice::from_ref(&k1), &mint(&k1, &c), NOW),
            Err(TokenError::WrongPurpose)
        );
    }
}
