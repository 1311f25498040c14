//! A device's public key and the signature over its auth request, and the device id that
//! its identity data maps to.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ParsedPublicKey, VerificationAlgorithm, ECDSA_P256_SHA256_ASN1, ED25519,
    RSA_PKCS1_2048_8192_SHA256,
};
use sha2::{Digest, Sha256};
use storage::TenantId;
use uuid::Uuid;

use super::IdentityError;
use crate::auth::keys::encode_pem;

/// The signature schemes mender-client uses for `X-MEN-Signature`, by key type: RSA
/// PKCS#1 v1.5 with SHA-256, ECDSA P-256 with SHA-256 (DER signature), and Ed25519.
const SCHEMES: [&'static dyn VerificationAlgorithm; 3] = [
    &RSA_PKCS1_2048_8192_SHA256,
    &ECDSA_P256_SHA256_ASN1,
    &ED25519,
];

/// A device's public key, parsed once.
pub struct DevicePublicKey {
    key: ParsedPublicKey,
    /// The key as SubjectPublicKeyInfo DER, for comparing keys whatever their PEM layout.
    spki: Vec<u8>,
}

impl std::fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevicePublicKey({} bytes)", self.spki.len())
    }
}

impl DevicePublicKey {
    /// Parse a PKIX PEM (`BEGIN PUBLIC KEY`; PKCS#1 `BEGIN RSA PUBLIC KEY` is accepted too)
    /// holding an RSA (2048 to 8192 bits), EC P-256 or Ed25519 key.
    pub fn from_pem(text: &str) -> Result<Self, IdentityError> {
        let pem = pem::parse(text.trim())
            .map_err(|e| IdentityError::InvalidPubkey(format!("not a PEM public key: {e}")))?;
        if pem.tag() != "PUBLIC KEY" && pem.tag() != "RSA PUBLIC KEY" {
            return Err(IdentityError::InvalidPubkey(format!(
                "expected a PEM public key, got {:?}",
                pem.tag()
            )));
        }
        let key = SCHEMES
            .iter()
            .find_map(|alg| ParsedPublicKey::new(*alg, pem.contents()).ok())
            .ok_or_else(|| {
                IdentityError::InvalidPubkey(
                    "not an RSA (2048 to 8192 bits), EC P-256 or Ed25519 public key".into(),
                )
            })?;
        let spki = key
            .as_der()
            .map_err(|_| IdentityError::InvalidPubkey("cannot encode the key".into()))?
            .as_ref()
            .to_vec();
        Ok(DevicePublicKey { key, spki })
    }

    /// Check `signature` (the base64 `X-MEN-Signature`) over the exact request body.
    pub fn verify(&self, body: &[u8], signature_b64: &str) -> Result<(), IdentityError> {
        use base64::Engine as _;
        let text = signature_b64.trim();
        let sig = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| IdentityError::BadSignature)?;
        self.key
            .verify_sig(body, &sig)
            .map_err(|_| IdentityError::BadSignature)
    }

    /// The key as PKIX PEM with Unix line endings: the form it is stored and shown in.
    pub fn to_pem(&self) -> String {
        encode_pem("PUBLIC KEY", self.spki.clone())
    }

    /// Whether `other` is the same key.
    pub fn same_as(&self, other: &DevicePublicKey) -> bool {
        self.spki == other.spki
    }
}

/// Identity data in canonical form: JSON with object keys sorted at every level and no
/// insignificant whitespace, so the same attributes always give the same text.
pub fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let body: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => {
            let body: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", body.join(","))
        }
        other => other.to_string(),
    }
}

/// The id of the device with `identity_data` in `tenant`: a UUID (version 8) made of the
/// first 16 bytes of SHA-256 over the tenant and the canonical identity data. The same
/// identity always gets the same id, so a device re-registering (new key, wiped data dir)
/// keeps its deployments; the tenant is hashed in so tenants never share an id.
pub fn device_id(tenant: &TenantId, identity_data: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(b"rollout-device\0");
    h.update(tenant.as_str().as_bytes());
    h.update(b"\0");
    h.update(canonical_json(identity_data).as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// A stable user id for the administrator `name` (the `sub` of login tokens).
pub fn user_id(name: &str) -> Uuid {
    let digest = Sha256::digest(format!("rollout-user\0{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_device_id_ignores_key_order_but_not_values_or_tenant() {
        let t = TenantId::default_tenant();
        let a = json!({"mac": "02:00", "serial": "S1", "nested": {"b": 1, "a": [2, 3]}});
        let b: serde_json::Value =
            serde_json::from_str(r#"{"serial":"S1","nested":{"a":[2,3],"b":1},"mac":"02:00"}"#)
                .unwrap();
        assert_eq!(device_id(&t, &a), device_id(&t, &b));
        assert_ne!(device_id(&t, &a), device_id(&t, &json!({"mac": "02:01"})));
        assert_ne!(device_id(&t, &a), device_id(&TenantId("acme".into()), &a));
        assert!(Uuid::parse_str(&device_id(&t, &a)).is_ok());
    }

    #[test]
    fn canonical_json_sorts_keys_and_escapes_strings() {
        assert_eq!(
            canonical_json(&json!({"b": "x\"y", "a": [1, {"d": null, "c": true}]})),
            r#"{"a":[1,{"c":true,"d":null}],"b":"x\"y"}"#
        );
    }

    #[test]
    fn an_ed25519_signature_over_the_body_verifies_and_a_tampered_body_does_not() {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
        use base64::Engine as _;
        let pair = Ed25519KeyPair::generate().unwrap();
        let spki = pair.public_key().as_der().unwrap().as_ref().to_vec();
        let key = DevicePublicKey::from_pem(&encode_pem("PUBLIC KEY", spki)).unwrap();
        let body = b"{\"id_data\":\"{}\"}\n";
        let sig = base64::engine::general_purpose::STANDARD.encode(pair.sign(body).as_ref());
        key.verify(body, &sig).unwrap();
        assert!(key.verify(b"{\"id_data\":\"{}\"}", &sig).is_err());
        assert!(key.verify(body, "not base64!").is_err());
        let again = DevicePublicKey::from_pem(&key.to_pem()).unwrap();
        assert!(again.same_as(&key));
    }

    #[test]
    fn keys_that_are_not_public_keys_are_refused() {
        assert!(DevicePublicKey::from_pem("garbage").is_err());
        let private = encode_pem("PRIVATE KEY", vec![1, 2, 3]);
        assert!(DevicePublicKey::from_pem(&private).is_err());
        let junk = encode_pem("PUBLIC KEY", vec![1, 2, 3]);
        assert!(DevicePublicKey::from_pem(&junk).is_err());
    }
}
