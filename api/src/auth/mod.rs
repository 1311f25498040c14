//! Who is calling: bearer tokens verified and turned into an [`Identity`].
//!
//! Tokens are verified, never just decoded ([`verify`]): by the server's own Ed25519 key
//! ([`keys::SigningKey`], in the data dir) and by every `--jwt-verify-key` (RS256, ES256,
//! EdDSA or HS256). Only with `--trust-gateway`, behind a gateway that has verified them
//! already, are claims read without a signature check. A cache of verified tokens
//! ([`cache`]) keeps signature checks off the device check-in path.
//!
//! How routes get at the verifier: [`crate::routes::app`] puts the server's
//! `Arc<TokenVerifier>` into every request's extensions, and the [`user`] and [`device`]
//! filters take it from there. The routes thus stay `auth::user()` / `auth::device()` and no
//! route needs the verifier threaded through.

pub mod cache;
pub mod claims;
pub mod keys;
pub mod revoked;
pub mod verify;

use std::sync::Arc;

use storage::TenantId;
use warp::Filter;

pub use claims::TokenIssuer;
pub use keys::{SigningKey, VerifyKey};
pub use verify::{AuthError, TokenVerifier};

use crate::error::ApiError;

/// What kind of principal a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An operator (management API): `mender.user: true`.
    User,
    /// A device (device API): `mender.device: true`.
    Device,
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Tenant (`mender.tenant`, empty for the default tenant).
    pub tenant: TenantId,
    /// `sub`: user id or device id.
    pub subject: String,
    /// User or device.
    pub kind: PrincipalKind,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

fn require(
    kind: PrincipalKind,
) -> impl Filter<Extract = (Identity,), Error = warp::Rejection> + Clone {
    warp::ext::optional::<Arc<TokenVerifier>>()
        .and(warp::header::optional::<String>("authorization"))
        .and_then(
            move |verifier: Option<Arc<TokenVerifier>>, h: Option<String>| async move {
                let verifier = verifier.ok_or_else(|| {
                    warp::reject::custom(ApiError::Internal(
                        "the request carries no token verifier (not served by routes::app)".into(),
                    ))
                })?;
                identify_as(&verifier, h.as_deref(), kind).map_err(warp::reject::custom)
            },
        )
}

/// Who the `Authorization` header names, if it is a `kind`: 401 without a valid token, 403
/// for the other kind. What [`user`] and [`device`] check, for routes served without warp.
pub(crate) fn identify_as(
    verifier: &TokenVerifier,
    header: Option<&str>,
    kind: PrincipalKind,
) -> Result<Identity, ApiError> {
    let id = verifier.identify(header)?;
    if id.kind != kind {
        let msg = match kind {
            PrincipalKind::User => "a device token cannot be used on the management API",
            PrincipalKind::Device => "a user token cannot be used on the device API",
        };
        return Err(ApiError::Forbidden(msg.into()));
    }
    Ok(id)
}

/// An operator, for management routes: 401 without a valid user or device token, 403 for a
/// device token.
pub fn user() -> impl Filter<Extract = (Identity,), Error = warp::Rejection> + Clone {
    require(PrincipalKind::User)
}

/// A device, for device routes: 401 without a valid token, 403 for a user token.
pub fn device() -> impl Filter<Extract = (Identity,), Error = warp::Rejection> + Clone {
    require(PrincipalKind::Device)
}

/// The token of an `Authorization: Bearer <token>` header value. The scheme's name is
/// case-insensitive (RFC 9110), so `bearer` is a bearer too.
pub(crate) fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"] {
            assert_eq!(bearer_token(header), Some("abc"), "{header:?}");
        }
        for header in ["Basic abc", "Bearer", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }
}
