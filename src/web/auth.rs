//! Bearer-token checks for cron and operator routes. Comparison is constant
//! time; a missing server-side secret refuses every call (fail closed).

use http::header;

use crate::core::secret::Secret;
use crate::web::error::ApiError;
use crate::web::respond::Request;

/// Requires `Authorization: Bearer <secret>`. `var` names the variable in the
/// error when the secret is not configured.
pub fn require_bearer(req: &Request, secret: Option<&Secret>, var: &str) -> Result<(), ApiError> {
    let Some(secret) = secret else {
        return Err(ApiError::unauthorized(format!(
            "{var} is not configured on the server; this route refuses every call"
        )));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer header"))?;
    if secret.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid bearer token"))
    }
}
