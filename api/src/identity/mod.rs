//! Standalone identity: rollout as its own device authentication and user administration
//! service, so that a real mender-client and mender-cli work against it with no other
//! Mender service.
//!
//! - Devices: an auth request signed with the device key ([`device_key`]) is decided on by
//!   the [`Admission`] policy over the device's auth sets ([`admission`]: a new key never
//!   inherits a device someone holds) and, if its key is accepted, answered with a device
//!   token.
//! - Operators: the administrator logs in with HTTP Basic credentials ([`login`]) and gets a
//!   user token; `rollout token …` mints tokens from the command line.
//!
//! Tokens are signed with the data dir's key ([`crate::auth::SigningKey`]).

pub mod admission;
pub mod device_key;
pub mod login;

use std::sync::Arc;

use serde::Deserialize;
use storage::{DeviceAuthRecord, DeviceAuthStatus, MetaStore, Revocation, TenantId, Write};
use time::OffsetDateTime;

use crate::auth::{AuthError, TokenIssuer, TokenVerifier};
use crate::error::ApiError;
use admission::Verdict;
use device_key::{device_id, DevicePublicKey};
use login::AdminCredentials;

/// Which devices get a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Admission {
    /// The first key of a device nobody holds yet is accepted (any validly signed request).
    /// A new key for a device that has an accepted, preauthorized or rejected key waits as
    /// pending until an operator accepts it.
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
    /// No such device or auth set.
    #[error("{0}")]
    NotFound(String),
    /// A device with this identity is already registered.
    #[error("device {id} already exists with status {status:?}")]
    AlreadyExists {
        /// The device id.
        id: String,
        /// Its status.
        status: DeviceAuthStatus,
    },
    /// The device's record kept changing under our compare-and-set.
    #[error("device {0} is being changed by other requests; try again")]
    Contended(String),
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
            IdentityError::NotFound(_) => ApiError::NotFound(msg),
            IdentityError::Contended(_) => ApiError::Unavailable {
                message: msg,
                retry_after: 1,
            },
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

/// A device token, and whose it is.
pub struct Admitted {
    /// The token.
    pub token: String,
    /// The device's tenant.
    pub tenant: TenantId,
    /// The device's id.
    pub device: String,
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

    /// Answer an auth request: check its signature over the exact `body` bytes, decide on
    /// the key ([`admission::decide`]) and return a fresh device token if it is accepted.
    /// Every request gets a new token; the device id stays the same for the same identity.
    pub async fn authenticate(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<Admitted, IdentityError> {
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
        let admission = self.config.admission;
        let verdict = update_device(self.store.as_ref(), &tenant, &id, |stored| {
            let now = OffsetDateTime::now_utc();
            let mut device = stored
                .cloned()
                .unwrap_or_else(|| new_device(id.clone(), &tenant, identity_data.clone(), now));
            let (verdict, changed) = admission::decide(&mut device, &key, admission, now);
            Ok((changed.then_some(device), verdict))
        })
        .await?;
        match verdict {
            Verdict::Admitted => {
                let revoked_at = self.verifier.revocations().revoked_at(&tenant, &id);
                let token = self.issuer.device_token_after(
                    &tenant,
                    &id,
                    self.config.device_token_ttl,
                    revoked_at,
                )?;
                Ok(Admitted {
                    token,
                    tenant,
                    device: id,
                })
            }
            Verdict::Refused(reason) => Err(IdentityError::NotAdmitted {
                id,
                reason: reason.into(),
            }),
        }
    }

    /// Set the status of one auth set of a device (an operator accepting or rejecting a
    /// key). `preauthorized` is not a status an operator sets here. When a key that was
    /// accepted stops being so (rejected, set back to pending, or replaced by another one
    /// accepted), the tokens the device holds are refused from then on, as upstream drops
    /// them: a device gets and keeps a token only while one of its keys is accepted.
    pub async fn set_auth_status(
        &self,
        tenant: &TenantId,
        device: &str,
        auth_set: &str,
        status: DeviceAuthStatus,
    ) -> Result<(), IdentityError> {
        if status == DeviceAuthStatus::Preauthorized {
            return Err(IdentityError::InvalidBody(
                "status must be accepted, rejected or pending".into(),
            ));
        }
        let accepted = |r: &DeviceAuthRecord| -> Vec<String> {
            let sets = r.auth_sets.iter();
            sets.filter(|s| s.status == DeviceAuthStatus::Accepted)
                .map(|s| s.id.clone())
                .collect()
        };
        let key_lost = update_device(self.store.as_ref(), tenant, device, |stored| {
            let mut record = stored
                .cloned()
                .ok_or_else(|| IdentityError::NotFound(format!("device {device} not found")))?;
            let before = accepted(&record);
            let now = OffsetDateTime::now_utc();
            if !admission::set_status(&mut record, auth_set, status, now) {
                return Err(IdentityError::NotFound(format!(
                    "device {device} has no auth set {auth_set}"
                )));
            }
            let after = accepted(&record);
            let lost = before.iter().any(|id| !after.contains(id));
            Ok((Some(record), lost))
        })
        .await?;
        if key_lost {
            self.revoke_tokens(tenant, device).await?;
        }
        Ok(())
    }

    /// Refuse every token `device` holds, on every node (see [`crate::auth::revoked`]);
    /// durable before it returns.
    async fn revoke_tokens(&self, tenant: &TenantId, device: &str) -> Result<(), IdentityError> {
        // A token issued since an earlier revocation may be dated its next second (see
        // `device_token_after`); this one must cover it even within that second.
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let earlier = self.verifier.revocations().revoked_at(tenant, device);
        let revocation = Revocation {
            tenant: tenant.clone(),
            device: device.to_owned(),
            revoked_at: earlier.map_or(now, |t| now.max(t.saturating_add(1))),
        };
        self.store
            .commit(vec![Write::PutRevocation(revocation.clone())])
            .await?;
        self.verifier.revocations().revoke(&revocation);
        Ok(())
    }

    /// Decommission a device: refuse every token it holds (on every node, see
    /// [`crate::auth::revoked`]) and forget its authentication record, so that it must be
    /// admitted again to get a new token. The caller takes it out of its deployments and
    /// the inventory.
    pub async fn decommission(&self, tenant: &TenantId, device: &str) -> Result<(), IdentityError> {
        let Some(mut stored) = self.store.device_auth(tenant, device).await? else {
            return Err(IdentityError::NotFound(format!(
                "device {device} not found"
            )));
        };
        // Before anything else: once answered, no node may take its tokens.
        self.revoke_tokens(tenant, device).await?;
        for _ in 0..MAX_SWAPS {
            if self.store.remove_device_auth(&stored).await? {
                return Ok(());
            }
            match self.store.device_auth(tenant, device).await? {
                Some(again) => stored = again,
                None => return Ok(()),
            }
        }
        Err(IdentityError::Contended(device.to_owned()))
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
            tracing::warn!(%user, "login refused: wrong username or password");
            return Err(IdentityError::Login("invalid username or password".into()));
        }
        tracing::info!(%user, "operator logged in");
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

/// Register a device's identity and key in `store` as a preauthorized auth set. A device
/// known only by pending or rejected keys gets the set added; one that has an accepted or
/// preauthorized key is a conflict. Shared by the HTTP endpoint and `rollout device
/// preauthorize`.
pub async fn preauthorize(
    store: &dyn MetaStore,
    tenant: &TenantId,
    identity_data: serde_json::Value,
    pubkey: &str,
) -> Result<DeviceAuthRecord, IdentityError> {
    check_identity(&identity_data)?;
    let key = DevicePublicKey::from_pem(pubkey)?;
    let id = device_id(tenant, &identity_data);
    update_device(store, tenant, &id, |stored| {
        let now = OffsetDateTime::now_utc();
        let mut device = match stored {
            Some(r)
                if matches!(
                    r.status(),
                    DeviceAuthStatus::Accepted | DeviceAuthStatus::Preauthorized
                ) =>
            {
                return Err(IdentityError::AlreadyExists {
                    id: id.clone(),
                    status: r.status(),
                })
            }
            Some(r) => r.clone(),
            None => new_device(id.clone(), tenant, identity_data.clone(), now),
        };
        admission::preauthorize(&mut device, &key, now);
        Ok((Some(device.clone()), device))
    })
    .await
}

/// Change one device's authentication record: `decide` sees the stored record and answers
/// what to store (`None`: nothing) and what to return. The record is stored only if it is
/// still the one `decide` saw (compare-and-set), so a change made meanwhile by another
/// request or another rollout node is never overwritten: `decide` runs again on it.
async fn update_device<T>(
    store: &dyn MetaStore,
    tenant: &TenantId,
    id: &str,
    mut decide: impl FnMut(
        Option<&DeviceAuthRecord>,
    ) -> Result<(Option<DeviceAuthRecord>, T), IdentityError>,
) -> Result<T, IdentityError> {
    for _ in 0..MAX_SWAPS {
        let stored = store.device_auth(tenant, id).await?;
        let (new, out) = decide(stored.as_ref())?;
        let stored_it = match new {
            None => true,
            Some(record) => store.replace_device_auth(stored.as_ref(), record).await?,
        };
        if stored_it {
            return Ok(out);
        }
    }
    Err(IdentityError::Contended(id.to_owned()))
}

/// Tries of a compare-and-set of one device's record before giving up (503): each failed
/// try means another request changed it, so this many in a row only happen in a storm.
pub(crate) const MAX_SWAPS: usize = 16;

/// A device seen for the first time, with no auth set yet.
fn new_device(
    id: String,
    tenant: &TenantId,
    identity_data: serde_json::Value,
    now: OffsetDateTime,
) -> DeviceAuthRecord {
    DeviceAuthRecord {
        id,
        tenant: tenant.clone(),
        identity_data,
        auth_sets: Vec::new(),
        created: now,
        updated: now,
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
