//! Signed, expiring download links that rollout serves itself (filesystem blob store).
//!
//! A link is `/download/{artifact}?tenant=T&expires=UNIX&signature=HEX`, where the signature
//! is HMAC-SHA256 over method, path, expiry and tenant with a key kept in the data dir.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use storage::TenantId;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks download links.
#[derive(Clone)]
pub struct LinkSigner {
    key: [u8; 32],
}

/// Why a link was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// The expiry has passed.
    #[error("the download link has expired")]
    Expired,
    /// The signature does not match.
    #[error("the download link signature is invalid")]
    BadSignature,
}

impl LinkSigner {
    /// Load the key from `dir/download.key`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("download.key");
        if let Ok(hexkey) = std::fs::read_to_string(&path) {
            if let Ok(bytes) = hex::decode(hexkey.trim()) {
                if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
                    return Ok(LinkSigner { key });
                }
            }
            return Err(std::io::Error::other(format!(
                "{} is not a 32-byte hex key",
                path.display()
            )));
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        crate::files::write_private(&path, hex::encode(key).as_bytes())?;
        Ok(LinkSigner { key })
    }

    /// The path part of an artifact's link.
    pub fn path(artifact: Uuid) -> String {
        format!("/download/{artifact}")
    }

    /// The MAC of a GET of `path` until `expires` for `tenant`.
    fn mac(&self, path: &str, expires: i64, tenant: &TenantId) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any size");
        for part in ["GET", path, &expires.to_string(), tenant.as_str()] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    /// The query string of a link.
    pub fn query(&self, artifact: Uuid, tenant: &TenantId, expires: i64) -> String {
        let mac = self.mac(&Self::path(artifact), expires, tenant);
        let sig = hex::encode(mac.finalize().into_bytes());
        form_urlencoded::Serializer::new(String::new())
            .append_pair("tenant", tenant.as_str())
            .append_pair("expires", &expires.to_string())
            .append_pair("signature", &sig)
            .finish()
    }

    /// Check a link's signature and expiry.
    pub fn verify(
        &self,
        artifact: Uuid,
        tenant: &TenantId,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), LinkError> {
        let given = hex::decode(signature).map_err(|_| LinkError::BadSignature)?;
        self.mac(&Self::path(artifact), expires, tenant)
            .verify_slice(&given)
            .map_err(|_| LinkError::BadSignature)?;
        if now > expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner { key: [7; 32] }
    }

    fn parse(q: &str) -> (String, i64, String) {
        let m: std::collections::HashMap<String, String> =
            form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        (
            m["tenant"].clone(),
            m["expires"].parse().unwrap(),
            m["signature"].clone(),
        )
    }

    #[test]
    fn a_fresh_link_verifies_and_tampering_or_expiry_is_refused() {
        let s = signer();
        let id = Uuid::new_v4();
        let t = TenantId("acme".into());
        let (tenant, exp, sig) = parse(&s.query(id, &t, 1000));
        assert_eq!(tenant, "acme");
        assert_eq!(s.verify(id, &t, exp, &sig, 999), Ok(()));
        assert_eq!(s.verify(id, &t, exp, &sig, 1001), Err(LinkError::Expired));
        assert_eq!(
            s.verify(id, &t, exp + 1, &sig, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(id, &TenantId("other".into()), exp, &sig, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify(Uuid::new_v4(), &t, exp, &sig, 999),
            Err(LinkError::BadSignature)
        );
    }
}
