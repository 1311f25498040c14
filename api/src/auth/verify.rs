//! Token verification: signature, algorithm, expiry and the claims rollout needs, with a
//! cache of verified tokens in front.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use storage::{TenantId, TenantIdError};

use super::cache::TokenCache;
use super::claims::{Claims, TENANT_SUBJECT};
use super::keys::VerifyKey;
use super::revoked::Revocations;
use super::{bearer_token, Identity, PrincipalKind};

/// Default number of verified tokens kept ([`TokenCache`]).
pub const DEFAULT_CACHE_CAPACITY: usize = 64 * 1024;

/// Why a token was refused. Every variant is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    MissingToken,
    /// Not a JWT, or a header naming an algorithm we do not know (including `none`).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm no configured key accepts.
    #[error("token algorithm {0:?} is not accepted by this server")]
    UnexpectedAlgorithm(Algorithm),
    /// The header names an algorithm that is never accepted, such as `none`.
    #[error("token algorithm {0:?} is not supported")]
    UnsupportedAlgorithm(String),
    /// No configured key verifies the signature.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// The device was decommissioned, or its key rejected, after the token was issued.
    #[error("this device token was revoked: its device was decommissioned or its key rejected; authenticate again")]
    Revoked,
    /// `nbf` is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// A claim the token must carry is missing.
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    /// The claims make no sense for where the token is used.
    #[error("{0}")]
    Claims(String),
    /// `mender.tenant` is not a valid tenant id.
    #[error("the token's mender.tenant claim is invalid: {0}")]
    Tenant(#[from] TenantIdError),
}

/// Verifies bearer tokens and turns them into [`Identity`]s.
pub struct TokenVerifier {
    keys: Vec<VerifyKey>,
    /// Read claims without verifying signatures (behind a gateway that verifies them).
    trust_gateway: bool,
    cache: TokenCache,
    /// Decommissioned devices, whose earlier tokens are refused.
    revoked: Revocations,
}

impl TokenVerifier {
    /// A verifier accepting tokens signed by any of `keys`; with `trust_gateway`, claims are
    /// read without any signature check.
    pub fn new(keys: Vec<VerifyKey>, trust_gateway: bool, cache_capacity: usize) -> Self {
        TokenVerifier {
            keys,
            trust_gateway,
            cache: TokenCache::new(cache_capacity),
            revoked: Revocations::default(),
        }
    }

    /// Decommissioned devices, whose tokens issued until then this verifier refuses.
    pub fn revocations(&self) -> &Revocations {
        &self.revoked
    }

    /// Whether signatures are skipped.
    pub fn trusts_gateway(&self) -> bool {
        self.trust_gateway
    }

    /// The identity behind an `Authorization` header value.
    pub fn identify(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let token = header
            .and_then(bearer_token)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        self.verify(token)
    }

    /// The identity a user or device token names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let key = TokenCache::key(token);
        if let Some((id, issued)) = self.cache.get(&key, now) {
            return self.unrevoked(id, issued);
        }
        let claims = self.claims(token, true)?;
        let exp = claims.exp.ok_or(AuthError::MissingClaim("exp"))?;
        if exp <= now {
            return Err(AuthError::Expired);
        }
        let issued = claims.iat;
        let identity = identity(claims)?;
        if !self.trust_gateway {
            self.cache.insert(key, identity.clone(), issued, exp, now);
        }
        self.unrevoked(identity, issued)
    }

    fn unrevoked(&self, id: Identity, issued: Option<i64>) -> Result<Identity, AuthError> {
        if self.revoked.covers(&id, issued) {
            return Err(AuthError::Revoked);
        }
        Ok(id)
    }

    /// The tenant a tenant token names. An empty token is the default tenant.
    pub fn verify_tenant_token(&self, token: &str) -> Result<TenantId, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Ok(TenantId::default_tenant());
        }
        let claims = self.claims(token, false)?;
        if claims.user || claims.device {
            return Err(AuthError::Claims(
                "a user or device token is not a tenant token".into(),
            ));
        }
        if claims.sub.as_deref() != Some(TENANT_SUBJECT) {
            return Err(AuthError::Claims(format!(
                "a tenant token has sub {TENANT_SUBJECT:?}"
            )));
        }
        let tenant = claims
            .tenant
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingClaim("mender.tenant"))?;
        Ok(TenantId::parse(&tenant)?)
    }

    /// Verified (or, behind a trusted gateway, merely decoded) claims. `exp` is checked
    /// when present and, with `require_exp`, required.
    fn claims(&self, token: &str, require_exp: bool) -> Result<Claims, AuthError> {
        if self.trust_gateway {
            let data = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
                .map_err(|e| AuthError::Malformed(e.to_string()))?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            match data.claims.exp {
                Some(exp) if exp <= now => return Err(AuthError::Expired),
                None if require_exp => return Err(AuthError::MissingClaim("exp")),
                _ => {}
            }
            return Ok(data.claims);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| header_error(token, e))?;
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .peekable();
        if candidates.peek().is_none() {
            return Err(AuthError::UnexpectedAlgorithm(header.alg));
        }
        let validation = validation(header.alg, require_exp);
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    last = map_error(e.into_kind());
                    if last != AuthError::BadSignature {
                        // The signature matched (claims are checked after it); another key
                        // would not change the verdict.
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

fn validation(alg: Algorithm, require_exp: bool) -> Validation {
    let mut v = Validation::new(alg);
    // `exp` in the past is expired, with no grace period.
    v.leeway = 0;
    v.validate_nbf = true;
    // Mender tokens carry no audience.
    v.validate_aud = false;
    let required: &[&str] = if require_exp { &["exp"] } else { &[] };
    v.set_required_spec_claims(required);
    v
}

/// Why a header could not be read: an algorithm we never accept (`none`, …) or garbage.
fn header_error(token: &str, e: jsonwebtoken::errors::Error) -> AuthError {
    use base64::Engine as _;
    let alg = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .and_then(|h| h.get("alg")?.as_str().map(str::to_owned));
    match alg {
        Some(alg) => AuthError::UnsupportedAlgorithm(alg),
        None => AuthError::Malformed(e.to_string()),
    }
}

fn map_error(kind: ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingClaim("exp"),
        ErrorKind::InvalidAlgorithm => AuthError::Malformed("algorithm mismatch".into()),
        other => AuthError::Malformed(format!("{other:?}")),
    }
}

/// The identity user or device claims name.
fn identity(claims: Claims) -> Result<Identity, AuthError> {
    let subject = claims
        .sub
        .filter(|s| !s.is_empty())
        .ok_or(AuthError::MissingClaim("sub"))?;
    let kind = match (claims.user, claims.device) {
        (true, false) => PrincipalKind::User,
        (false, true) => PrincipalKind::Device,
        (true, true) => {
            return Err(AuthError::Claims(
                "a token cannot be both a user (mender.user) and a device (mender.device)".into(),
            ))
        }
        (false, false) => {
            return Err(AuthError::Claims(
                "the token names neither a user (mender.user) nor a device (mender.device)".into(),
            ))
        }
    };
    let tenant = TenantId::parse(claims.tenant.as_deref().unwrap_or_default())?;
    if !storage::keys::is_valid_component(&subject) {
        return Err(AuthError::Claims(
            "the token's sub claim is malformed".into(),
        ));
    }
    Ok(Identity {
        tenant,
        subject,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::TokenIssuer;
    use crate::auth::keys::SigningKey;
    use jsonwebtoken::{EncodingKey, Header};

    fn setup() -> (tempfile::TempDir, TokenIssuer, TokenVerifier) {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(dir.path()).unwrap();
        let verifier =
            TokenVerifier::new(vec![key.verify_key(), key.device_verify_key()], false, 16);
        (dir, TokenIssuer::new(key), verifier)
    }

    #[test]
    fn device_tokens_are_hs256_and_user_tokens_eddsa_and_both_verify() {
        let (_dir, issuer, verifier) = setup();
        let tenant = TenantId::parse("acme").unwrap();
        let device = issuer.device_token(&tenant, "dev-1", 60).unwrap();
        let user = issuer.user_token(&tenant, "ops", 60).unwrap();
        let alg = |t: &str| jsonwebtoken::decode_header(t).unwrap().alg;
        assert_eq!(alg(&device), Algorithm::HS256);
        assert_eq!(alg(&user), Algorithm::EdDSA);
        assert_eq!(
            verifier.verify(&device).unwrap().kind,
            PrincipalKind::Device
        );
        assert_eq!(verifier.verify(&user).unwrap().kind, PrincipalKind::User);
        // Another data dir's secret does not verify them.
        let (_other_dir, other, _) = setup();
        let forged = other.device_token(&tenant, "dev-1", 60).unwrap();
        assert_eq!(verifier.verify(&forged), Err(AuthError::BadSignature));
    }

    fn hs256(claims: &Claims, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn issued_tokens_verify_to_their_identity_and_are_cached() {
        let (_dir, issuer, verifier) = setup();
        let tenant = TenantId("acme".into());
        let token = issuer.device_token(&tenant, "dev-1", 60).unwrap();
        let id = verifier.verify(&token).unwrap();
        assert_eq!(id.kind, PrincipalKind::Device);
        assert_eq!(id.tenant, tenant);
        assert_eq!(id.subject, "dev-1");
        assert_eq!(verifier.cache.len(), 1);
        assert_eq!(verifier.verify(&token).unwrap(), id);
        let user = issuer
            .user_token(&TenantId::default_tenant(), "u", 60)
            .unwrap();
        assert_eq!(verifier.verify(&user).unwrap().kind, PrincipalKind::User);
    }

    #[test]
    fn tokens_of_an_unknown_key_or_algorithm_are_refused() {
        let (_dir, _issuer, verifier) = setup();
        let (_other_dir, other, _) = setup();
        let foreign = other
            .user_token(&TenantId::default_tenant(), "u", 60)
            .unwrap();
        assert_eq!(verifier.verify(&foreign), Err(AuthError::BadSignature));
        let claims = Claims {
            sub: Some("u".into()),
            user: true,
            exp: Some(i64::MAX / 2),
            ..Claims::default()
        };
        // HS256 is the algorithm of the server's device tokens: another secret's token is
        // a bad signature; an algorithm no key has is refused as such.
        assert_eq!(
            verifier.verify(&hs256(&claims, b"k")),
            Err(AuthError::BadSignature)
        );
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&hs384),
            Err(AuthError::UnexpectedAlgorithm(Algorithm::HS384))
        );
    }

    #[test]
    fn tenant_tokens_name_their_tenant_and_are_no_access_tokens() {
        let (_dir, issuer, verifier) = setup();
        let tenant = TenantId("acme".into());
        let token = issuer.tenant_token(&tenant, None).unwrap();
        assert_eq!(verifier.verify_tenant_token(&token), Ok(tenant.clone()));
        assert!(matches!(
            verifier.verify(&token),
            Err(AuthError::MissingClaim("exp"))
        ));
        let with_ttl = issuer.tenant_token(&tenant, Some(60)).unwrap();
        assert!(matches!(
            verifier.verify(&with_ttl),
            Err(AuthError::Claims(_))
        ));
        assert_eq!(
            verifier.verify_tenant_token(""),
            Ok(TenantId::default_tenant())
        );
        let user = issuer.user_token(&tenant, "u", 60).unwrap();
        assert!(verifier.verify_tenant_token(&user).is_err());
    }

    #[test]
    fn tokens_naming_an_invalid_tenant_are_refused() {
        let (_dir, issuer, verifier) = setup();
        for bad in ["..", "/x", "_default", "a b"] {
            let claims = Claims {
                sub: Some("d".into()),
                tenant: Some(bad.into()),
                device: true,
                exp: Some(time::OffsetDateTime::now_utc().unix_timestamp() + 60),
                ..Claims::default()
            };
            let token = issuer.key().sign(&claims).unwrap();
            assert!(
                matches!(verifier.verify(&token), Err(AuthError::Tenant(_))),
                "{bad:?}"
            );
            let tenant_token = issuer
                .key()
                .sign(&Claims {
                    sub: Some(TENANT_SUBJECT.into()),
                    device: false,
                    exp: None,
                    ..claims
                })
                .unwrap();
            assert!(
                matches!(
                    verifier.verify_tenant_token(&tenant_token),
                    Err(AuthError::Tenant(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn behind_a_trusted_gateway_claims_are_read_but_expiry_still_counts() {
        let verifier = TokenVerifier::new(vec![], true, 16);
        let mut claims = Claims {
            sub: Some("u".into()),
            user: true,
            exp: Some(time::OffsetDateTime::now_utc().unix_timestamp() + 60),
            ..Claims::default()
        };
        assert_eq!(
            verifier.verify(&hs256(&claims, b"whatever")).unwrap().kind,
            PrincipalKind::User
        );
        claims.exp = Some(1);
        assert_eq!(
            verifier.verify(&hs256(&claims, b"whatever")),
            Err(AuthError::Expired)
        );
    }
}
