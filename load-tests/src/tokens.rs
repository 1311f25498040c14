//! Device and operator JWTs for the simulated fleet.
//!
//! Two sources:
//! - `--data-dir DIR`: tokens signed with the server's own keys, as `rollout token` signs
//!   them (device tokens HS256 with `DIR/device-token.key`, operator tokens EdDSA with
//!   `DIR/token-signing.key`), which a server verifies like any device's token;
//! - `--tokens unsigned`: tokens whose signature is a placeholder, for a server started with
//!   `--trust-gateway` (it reads claims without checking signatures).
//!
//! A token is minted when a device first needs it. The tokens of the first `--token-cache`
//! devices are kept (a signature costs microseconds, which would otherwise be spent on every
//! check-in); beyond that they are minted on every use, so that a million-device
//! fleet does not hold a million tokens.

use std::borrow::Cow;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;

use crate::fleet::device_id;

/// How long minted tokens stay valid: longer than any run.
const VALIDITY_SECS: i64 = 24 * 3600;

/// The claims of a device or operator token, as rollout reads them.
#[derive(Debug, Clone, Serialize)]
pub struct Claims<'a> {
    /// Device id or user id.
    pub sub: &'a str,
    /// Set on device tokens.
    #[serde(rename = "mender.device", skip_serializing_if = "std::ops::Not::not")]
    pub device: bool,
    /// Set on operator tokens.
    #[serde(rename = "mender.user", skip_serializing_if = "std::ops::Not::not")]
    pub user: bool,
    /// Tenant; left out for the default tenant.
    #[serde(rename = "mender.tenant", skip_serializing_if = "Option::is_none")]
    pub tenant: Option<&'a str>,
    /// Issuer.
    pub iss: &'static str,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// How claims become a token.
enum Signer {
    /// A placeholder signature (`x`) after a header naming EdDSA. The header is not
    /// `alg: none` because rollout's `--trust-gateway` decoding still parses the header and
    /// refuses algorithms it does not know.
    Unsigned {
        /// The encoded header, the same for every token.
        header: String,
    },
    /// Signed with the server's key.
    Key(api::auth::SigningKey),
}

/// Mints the tokens of one run.
pub struct TokenSource {
    tenant: Option<String>,
    iat: i64,
    signer: Signer,
    /// Tokens of the first devices, filled on first use.
    cache: Vec<OnceLock<Box<str>>>,
}

impl TokenSource {
    /// Unsigned tokens for `tenant` (empty: the default tenant), keeping the tokens of the
    /// first `cached` devices.
    pub fn unsigned(tenant: &str, cached: u32) -> Self {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
        Self::with(tenant, cached, Signer::Unsigned { header })
    }

    /// Tokens signed with the key in the server's data dir `dir`.
    pub fn from_data_dir(dir: &Path, tenant: &str, cached: u32) -> anyhow::Result<Self> {
        let path = dir.join(api::auth::keys::SIGNING_KEY_FILE);
        anyhow::ensure!(
            path.is_file(),
            "{} does not exist: pass the --data-dir of a rollout server that has started once",
            path.display()
        );
        let key = api::auth::SigningKey::load(dir)
            .with_context(|| format!("loading the token key {}", path.display()))?;
        Ok(Self::with(tenant, cached, Signer::Key(key)))
    }

    fn with(tenant: &str, cached: u32, signer: Signer) -> Self {
        TokenSource {
            tenant: (!tenant.is_empty()).then(|| tenant.to_owned()),
            iat: time::OffsetDateTime::now_utc().unix_timestamp(),
            signer,
            cache: (0..cached).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The token of device `i` (`dev-{i:08}`).
    pub fn device(&self, i: u32) -> anyhow::Result<Cow<'_, str>> {
        let mint = || {
            let id = device_id(i);
            self.mint(&self.claims(&id, true))
        };
        match self.cache.get(i as usize) {
            Some(slot) => match slot.get() {
                Some(t) => Ok(Cow::Borrowed(&**t)),
                None => {
                    let t = mint()?;
                    Ok(Cow::Borrowed(&**slot.get_or_init(|| t.into_boxed_str())))
                }
            },
            None => mint().map(Cow::Owned),
        }
    }

    /// An operator token for `user`.
    pub fn user(&self, user: &str) -> anyhow::Result<String> {
        self.mint(&self.claims(user, false))
    }

    fn claims<'a>(&'a self, sub: &'a str, device: bool) -> Claims<'a> {
        Claims {
            sub,
            device,
            user: !device,
            tenant: self.tenant.as_deref(),
            iss: "rollout-load",
            iat: self.iat,
            exp: self.iat + VALIDITY_SECS,
        }
    }

    fn mint(&self, claims: &Claims<'_>) -> anyhow::Result<String> {
        match &self.signer {
            Signer::Unsigned { header } => {
                let payload = serde_json::to_vec(claims).context("encoding token claims")?;
                Ok(format!("{header}.{}.x", URL_SAFE_NO_PAD.encode(payload)))
            }
            // Device tokens are HS256 with the data dir's device secret, as the server signs
            // them; user tokens EdDSA.
            Signer::Key(key) if claims.device => key.sign_device(claims).context("signing a token"),
            Signer::Key(key) => key.sign(claims).context("signing a token"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(token: &str) -> serde_json::Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn unsigned_device_tokens_name_the_device_and_tenant() {
        let t = TokenSource::unsigned("acme", 0)
            .device(42)
            .unwrap()
            .into_owned();
        let c = claims(&t);
        assert_eq!(c["sub"], "dev-00000042");
        assert_eq!(c["mender.device"], true);
        assert_eq!(c["mender.tenant"], "acme");
        assert!(c["exp"].as_i64().unwrap() > c["iat"].as_i64().unwrap());
        assert!(t.ends_with(".x"));
    }

    #[test]
    fn unsigned_user_tokens_of_the_default_tenant_have_no_tenant_claim() {
        let c = claims(&TokenSource::unsigned("", 0).user("load-tests").unwrap());
        assert_eq!(c["mender.user"], true);
        assert!(c.get("mender.device").is_none());
        assert!(c.get("mender.tenant").is_none());
    }

    #[test]
    fn cached_tokens_are_reused_and_others_minted() {
        let s = TokenSource::unsigned("", 2);
        assert!(matches!(s.device(1).unwrap(), Cow::Borrowed(_)));
        assert_eq!(s.device(1).unwrap(), s.device(1).unwrap());
        assert!(matches!(s.device(2).unwrap(), Cow::Owned(_)));
    }

    #[test]
    fn data_dir_tokens_are_verified_by_the_servers_key() {
        let dir = std::env::temp_dir().join(format!("rollout-load-key-{}", std::process::id()));
        let key = api::auth::SigningKey::load_or_create(&dir).unwrap();
        let s = TokenSource::from_data_dir(&dir, "", 0).unwrap();
        let verifier = api::auth::TokenVerifier::new(
            vec![key.verify_key(), key.device_verify_key()],
            false,
            16,
        );
        let id = verifier.verify(&s.device(7).unwrap()).unwrap();
        assert_eq!(id.subject, "dev-00000007");
        assert_eq!(id.kind, api::auth::PrincipalKind::Device);
        let user = verifier.verify(&s.user("ops").unwrap()).unwrap();
        assert_eq!(user.kind, api::auth::PrincipalKind::User);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_data_dir_without_a_key_is_refused() {
        let err = TokenSource::from_data_dir(Path::new("/nonexistent-rollout-dir"), "", 0)
            .err()
            .unwrap();
        assert!(err.to_string().contains("token-signing.key"), "{err}");
    }
}
