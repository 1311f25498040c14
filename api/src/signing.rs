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

/// The file in the data dir holding the download link key.
pub const LINK_KEY_FILE: &str = "download.key";

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
    /// Load the key from `dir/download.key` ([`LINK_KEY_FILE`]), creating it on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(LINK_KEY_FILE);
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
    /// A secret for another purpose, derived from this key: nodes that share a data dir's
    /// keys share it without another file (the cluster cookie).
    pub fn derive(&self, purpose: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any size");
        mac.update(b"rollout derived secret\n");
        mac.update(purpose.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

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

/// Download links handed to devices, reused while most of their validity remains: every
/// device of a deployment asks for the same artifact, and signing a fresh link per check-in
/// (HMAC, hex, URL encoding) was a visible share of the check-in's cost. A link is re-signed
/// once it has lost [`LinkCache::refresh_after`] of its validity, so a device always gets at
/// least `ttl - refresh_after` seconds.
pub struct LinkCache {
    links: std::sync::Mutex<std::collections::HashMap<(Uuid, String), (String, i64)>>,
    refresh_after: i64,
}

/// Most links kept; the cache starts over when it is full.
const MAX_CACHED_LINKS: usize = 10_000;

impl LinkCache {
    /// A cache for links valid `ttl` seconds: they are reused for a 24th of that (at most
    /// an hour).
    pub fn new(ttl: u64) -> Self {
        LinkCache {
            links: Default::default(),
            refresh_after: (ttl / 24).min(3600) as i64,
        }
    }

    /// The cached `(uri, expires)` for this artifact and base URL, if still fresh at `now`.
    pub fn get(&self, artifact: Uuid, base: &str, ttl: u64, now: i64) -> Option<(String, i64)> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let (uri, expires) = links.get(&(artifact, base.to_owned()))?;
        let signed_at = *expires - ttl as i64;
        (now >= signed_at && now - signed_at < self.refresh_after).then(|| (uri.clone(), *expires))
    }

    /// Remember a freshly signed link.
    pub fn put(&self, artifact: Uuid, base: &str, uri: String, expires: i64) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links.len() >= MAX_CACHED_LINKS {
            links.clear();
        }
        links.insert((artifact, base.to_owned()), (uri, expires));
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
    fn cached_links_are_reused_for_a_24th_of_their_validity() {
        let cache = LinkCache::new(24 * 3600);
        let id = Uuid::new_v4();
        cache.put(id, "http://a", "uri".into(), 1_000 + 24 * 3600);
        assert_eq!(
            cache.get(id, "http://a", 24 * 3600, 1_000 + 3599),
            Some(("uri".to_string(), 1_000 + 24 * 3600))
        );
        assert_eq!(cache.get(id, "http://a", 24 * 3600, 1_000 + 3600), None);
        assert_eq!(cache.get(id, "http://b", 24 * 3600, 1_000), None);
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
