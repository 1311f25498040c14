//! The JWT claims rollout reads and writes, in Mender's naming, and the tokens it mints.

use serde::{Deserialize, Serialize};
use storage::TenantId;

use super::keys::{KeyError, SigningKey};

/// Issuer of the tokens rollout signs.
pub const ISSUER: &str = "rollout";

/// `sub` of tenant tokens.
pub const TENANT_SUBJECT: &str = "tenant";

/// Claims of every token rollout reads. Unknown claims are ignored; each field is optional
/// here so that a missing one gives a precise error instead of a generic parse failure.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    /// User id, device id, or [`TENANT_SUBJECT`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Tenant; absent or empty means the default tenant.
    #[serde(
        rename = "mender.tenant",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tenant: Option<String>,
    /// Set on device tokens.
    #[serde(rename = "mender.device", default, skip_serializing_if = "is_false")]
    pub device: bool,
    /// Set on user (management) tokens.
    #[serde(rename = "mender.user", default, skip_serializing_if = "is_false")]
    pub user: bool,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Issued at, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Expiry, Unix seconds. Required on user and device tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Unique token id: two tokens minted in the same second still differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Claims {
    fn new(sub: &str, tenant: &TenantId, ttl: Option<u64>) -> Self {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Claims {
            sub: Some(sub.to_owned()),
            tenant: (!tenant.0.is_empty()).then(|| tenant.0.clone()),
            iss: Some(ISSUER.to_owned()),
            iat: Some(now),
            exp: ttl.map(|t| now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX))),
            jti: Some(uuid::Uuid::new_v4().to_string()),
            ..Claims::default()
        }
    }
}

/// Mints the tokens rollout hands out (login, device auth, the `rollout token` command).
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    key: SigningKey,
}

impl TokenIssuer {
    /// An issuer signing with `key`.
    pub fn new(key: SigningKey) -> Self {
        TokenIssuer { key }
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// A management token for `subject` in `tenant`, valid for `ttl` seconds.
    pub fn user_token(
        &self,
        tenant: &TenantId,
        subject: &str,
        ttl: u64,
    ) -> Result<String, KeyError> {
        let claims = Claims {
            user: true,
            ..Claims::new(subject, tenant, Some(ttl))
        };
        self.key.sign(&claims)
    }

    /// A device token for device `device` in `tenant`, valid for `ttl` seconds.
    pub fn device_token(
        &self,
        tenant: &TenantId,
        device: &str,
        ttl: u64,
    ) -> Result<String, KeyError> {
        self.device_token_after(tenant, device, ttl, None)
    }

    /// A device token issued after `revoked_at` (Unix seconds), the last second whose
    /// tokens of this device are refused: `iat` is whole seconds, so a device admitted
    /// again within the second of its revocation gets a token dated the next second, not
    /// one that is dead on arrival.
    pub fn device_token_after(
        &self,
        tenant: &TenantId,
        device: &str,
        ttl: u64,
        revoked_at: Option<i64>,
    ) -> Result<String, KeyError> {
        let mut claims = Claims {
            device: true,
            ..Claims::new(device, tenant, Some(ttl))
        };
        if let (Some(iat), Some(revoked)) = (claims.iat, revoked_at) {
            claims.iat = Some(iat.max(revoked.saturating_add(1)));
        }
        self.key.sign_device(&claims)
    }

    /// A tenant token (what devices put in `TenantToken` to join `tenant`); `ttl` `None`
    /// never expires. It is neither a user nor a device token, so no API accepts it as one.
    pub fn tenant_token(&self, tenant: &TenantId, ttl: Option<u64>) -> Result<String, KeyError> {
        self.key.sign(&Claims::new(TENANT_SUBJECT, tenant, ttl))
    }
}
