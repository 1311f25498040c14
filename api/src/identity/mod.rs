//! Standalone identity: rollout as its own device authentication and user administration
//! service, so that a real mender-client and mender-cli work against it with no other
//! Mender service.
//!
//! - Devices: an auth request signed with the device key ([`device_key`]) is admitted by
//!   the [`Admission`] policy and answered with a device token.
//! - Operators: the administrator logs in with HTTP Basic credentials ([`login`]) and gets a
//!   user token; `rollout token …` mints tokens from the command line.
//!
//! Tokens are signed with the data dir's key ([`crate::auth::SigningKey`]).

pub mod device_key;
pub mod login;

use std::sync::Arc;

use serde::Deserialize;
use storage::{DeviceAuthRecord, DeviceAuthStatus, MetaStore, TenantId, Write};
use time::OffsetDateTime;

use crate::auth::{AuthError, TokenIssuer, TokenVerifier};
use crate::error::ApiError;
use device_key::{device_id, DevicePublicKey};
use login::AdminCredentials;

/// Which devices get a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Admission {
    /// Every device whose auth request carries a valid signature.
    Auto,
    /// Only devices whose identity and key an operator registered beforehand
    /// (`POST /api/management/v2/devauth/devices` or `rollout device preauthorize`);
    /// others are recorded as `pending` and refused.
    Preauthorized,
}

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The request body is not what the endpoint takes.
    #[error("invalid request: {0}")]
    InvalidBody(String),
    /// The identity data is not a non-empty JSON object.
    #[error("invalid identity data: {0}")]
    InvalidIdentity(String),
    /// The public key cannot be used.
    #[error("invalid public key: {0}")]
    InvalidPubkey(String),
    /// The auth request has no `X-MEN-Signature`.
    #[error("missing X-MEN-Signature header")]
    MissingSignature,
    /// The signature does not verify with the presented key.
    #[error("the request signature does not verify with the presented public key")]
    BadSignature,
    /// The tenant token is not valid.
    #[error("invalid tenant token: {0}")]
    TenantToken(AuthError),
    /// The device is not admitted.
    #[error("device {id} is not admitted: {reason}")]
    NotAdmitted {
        /// The device id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A device with this identity is already registered.
    #[error("device {id} already exists with status {status:?}")]
    AlreadyExists {
        /// The device id.
        id: String,
        /// Its status.
        status: DeviceAuthStatus,
    },
    /// Login refused.
    #[error("{0}")]
    Login(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] storage::StoreError),
    /// A token could not be signed.
    #[error(transparent)]
    Key(#[from] crate::auth::keys::KeyError),
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        let msg = e.to_string();
        match e {
            IdentityError::InvalidBody(_)
            | IdentityError::InvalidIdentity(_)
            | IdentityError::InvalidPubkey(_) => ApiError::BadRequest(msg),
            IdentityError::MissingSignature
            | IdentityError::BadSignature
            | IdentityError::TenantToken(_)
            | IdentityError::NotAdmitted { .. }
            | IdentityError::Login(_) => ApiError::Unauthorized(msg),
            IdentityError::AlreadyExists { .. } => ApiError::Conflict(msg),
            IdentityError::Store(_) | IdentityError::Key(_) => ApiError::Internal(msg),
        }
    }
}

/// Body of `POST /api/devices/v1/authentication/auth_requests`.
#[derive(Debug, Deserialize)]
pub struct AuthRequest {
    /// Identity attributes as a JSON *string* holding an object.
    pub id_data: String,
    /// PKIX PEM public key.
    pub pubkey: String,
    /// Tenant token; empty for the default tenant.
    #[serde(default)]
    pub tenant_token: String,
}

/// Settings of the identity service.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Admission policy.
    pub admission: Admission,
    /// Validity of device tokens from auth requests, seconds.
    pub device_token_ttl: u64,
    /// Validity of user tokens from login, seconds.
    pub user_token_ttl: u64,
    /// The administrator who may log in, if a password is configured.
    pub admin: Option<AdminCredentials>,
}

/// Device admission, login and the device registry.
pub struct IdentityService {
    store: Arc<dyn MetaStore>,
    issuer: TokenIssuer,
    verifier: Arc<TokenVerifier>,
    config: IdentityConfig,
}

impl IdentityService {
    /// The service over `store`, signing with `issuer` and checking tenant tokens with
    /// `verifier`.
    pub fn new(
        store: Arc<dyn MetaStore>,
        issuer: TokenIssuer,
        verifier: Arc<TokenVerifier>,
        config: IdentityConfig,
    ) -> Self {
        IdentityService {
            store,
            issuer,
            verifier,
            config,
        }
    }

    /// Answer an auth request: check its signature over the exact `body` bytes, admit the
    /// device and return a fresh device token. Every request gets a new token; the device
    /// id stays the same for the same identity.
    pub async fn authenticate(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<String, IdentityError> {
        let req: AuthRequest = serde_json::from_slice(body)
            .map_err(|e| IdentityError::InvalidBody(format!("auth request: {e}")))?;
        let key = DevicePublicKey::from_pem(&req.pubkey)?;
        key.verify(body, signature.ok_or(IdentityError::MissingSignature)?)?;
        let identity_data = parse_identity(&req.id_data)?;
        let tenant = self
            .verifier
            .verify_tenant_token(&req.tenant_token)
            .map_err(IdentityError::TenantToken)?;
        let id = device_id(&tenant, &identity_data);
        let existing = self.store.device_auth(&tenant, &id).await?;
        let now = OffsetDateTime::now_utc();
        let record = |status, created| DeviceAuthRecord {
            id: id.clone(),
            tenant: tenant.clone(),
            identity_data: identity_data.clone(),
            pubkey: key.to_pem(),
            status,
            created,
            updated: now,
        };
        let same_key = |r: &DeviceAuthRecord| {
            DevicePublicKey::from_pem(&r.pubkey).is_ok_and(|k| k.same_as(&key))
        };
        match (self.config.admission, existing) {
            (_, Some(r)) if r.status == DeviceAuthStatus::Accepted && same_key(&r) => {}
            (Admission::Auto, existing) => {
                let created = existing.map_or(now, |r| r.created);
                let accepted = record(DeviceAuthStatus::Accepted, created);
                self.store
                    .commit(vec![Write::PutDeviceAuth(accepted)])
                    .await?;
            }
            (Admission::Preauthorized, Some(r))
                if r.status == DeviceAuthStatus::Preauthorized && same_key(&r) =>
            {
                let accepted = record(DeviceAuthStatus::Accepted, r.created);
                self.store
                    .commit(vec![Write::PutDeviceAuth(accepted)])
                    .await?;
            }
            (Admission::Preauthorized, existing) => {
                let reason = match &existing {
                    Some(r) if r.status != DeviceAuthStatus::Pending => {
                        "its key differs from the registered one"
                    }
                    _ => "it is not preauthorized",
                };
                // Record the attempt as pending (once per key) so operators can see it.
                if existing
                    .as_ref()
                    .is_none_or(|r| r.status == DeviceAuthStatus::Pending && !same_key(r))
                {
                    let created = existing.map_or(now, |r| r.created);
                    let pending = record(DeviceAuthStatus::Pending, created);
                    self.store
                        .commit(vec![Write::PutDeviceAuth(pending)])
                        .await?;
                }
                return Err(IdentityError::NotAdmitted {
                    id,
                    reason: reason.into(),
                });
            }
        }
        Ok(self
            .issuer
            .device_token(&tenant, &id, self.config.device_token_ttl)?)
    }

    /// Check the administrator's Basic credentials and return a user token.
    pub fn login(&self, authorization: Option<&str>) -> Result<String, IdentityError> {
        let admin = self.config.admin.as_ref().ok_or_else(|| {
            IdentityError::Login(
                "login is disabled: no administrator password is configured \
                 (set --admin-password-file or ROLLOUT_ADMIN_PASSWORD)"
                    .into(),
            )
        })?;
        let (user, password) = login::parse_basic(authorization)?;
        if !admin.matches(&user, &password) {
            return Err(IdentityError::Login("invalid username or password".into()));
        }
        Ok(self.issuer.user_token(
            &admin.tenant,
            &device_key::user_id(&admin.user).to_string(),
            self.config.user_token_ttl,
        )?)
    }

    /// Register a device's identity and key ahead of its first auth request.
    pub async fn preauthorize(
        &self,
        tenant: &TenantId,
        identity_data: serde_json::Value,
        pubkey: &str,
    ) -> Result<DeviceAuthRecord, IdentityError> {
        preauthorize(self.store.as_ref(), tenant, identity_data, pubkey).await
    }

    /// The devices of a tenant, oldest first.
    pub async fn devices(&self, tenant: &TenantId) -> Result<Vec<DeviceAuthRecord>, IdentityError> {
        let mut all = self.store.device_auths(tenant).await?;
        all.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        Ok(all)
    }

    /// One device of a tenant.
    pub async fn device(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<DeviceAuthRecord>, IdentityError> {
        Ok(self.store.device_auth(tenant, id).await?)
    }
}

/// Register a device's identity and key in `store` with status `preauthorized`. A device
/// known only as `pending` is replaced; one already preauthorized or accepted is a conflict.
/// Shared by the HTTP endpoint and `rollout device preauthorize`.
pub async fn preauthorize(
    store: &dyn MetaStore,
    tenant: &TenantId,
    identity_data: serde_json::Value,
    pubkey: &str,
) -> Result<DeviceAuthRecord, IdentityError> {
    check_identity(&identity_data)?;
    let key = DevicePublicKey::from_pem(pubkey)?;
    let id = device_id(tenant, &identity_data);
    // Compare-and-set, so that a device admitted or registered meanwhile (by another
    // request or another rollout node) is never overwritten; retried while only pending
    // attempts race with us.
    loop {
        let existing = store.device_auth(tenant, &id).await?;
        if let Some(r) = &existing {
            if r.status != DeviceAuthStatus::Pending {
                return Err(IdentityError::AlreadyExists {
                    id,
                    status: r.status,
                });
            }
        }
        let now = OffsetDateTime::now_utc();
        let record = DeviceAuthRecord {
            id: id.clone(),
            tenant: tenant.clone(),
            identity_data: identity_data.clone(),
            pubkey: key.to_pem(),
            status: DeviceAuthStatus::Preauthorized,
            created: existing.as_ref().map_or(now, |r| r.created),
            updated: now,
        };
        if store
            .replace_device_auth(existing.as_ref(), record.clone())
            .await?
        {
            return Ok(record);
        }
    }
}

/// `id_data` of an auth request: a JSON string holding a non-empty object.
fn parse_identity(id_data: &str) -> Result<serde_json::Value, IdentityError> {
    let value: serde_json::Value = serde_json::from_str(id_data)
        .map_err(|e| IdentityError::InvalidIdentity(format!("id_data is not JSON: {e}")))?;
    check_identity(&value)?;
    Ok(value)
}

fn check_identity(value: &serde_json::Value) -> Result<(), IdentityError> {
    match value.as_object() {
        Some(map) if !map.is_empty() => Ok(()),
        Some(_) => Err(IdentityError::InvalidIdentity(
            "it is an empty object".into(),
        )),
        None => Err(IdentityError::InvalidIdentity(
            "it is not a JSON object".into(),
        )),
    }
}
