//! Keys for tokens: the public keys (or HMAC secrets) that tokens may be signed with, and
//! the server's own signing key in the data dir.

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

/// File name of the server's token signing key inside the data dir.
pub const SIGNING_KEY_FILE: &str = "token-signing.key";

/// File name of the server's HS256 secret for device tokens inside the data dir.
pub const DEVICE_TOKEN_KEY_FILE: &str = "device-token.key";

/// Why a key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds a private key where a public key is expected.
    #[error("{0}: this is a private key; give the public key (openssl pkey -in KEY -pubout)")]
    NotPublic(PathBuf),
    /// A PEM file holds no RSA, EC or Ed25519 public key.
    #[error("{0}: not an RSA, EC (P-256) or Ed25519 public key in PEM form")]
    UnsupportedPem(PathBuf),
    /// An HMAC secret file is empty.
    #[error("{0}: the HS256 secret is empty")]
    EmptySecret(PathBuf),
    /// The signing key file is not an Ed25519 PKCS#8 PEM key.
    #[error("{0}: not an Ed25519 private key in PKCS#8 PEM form (delete it to make a new one)")]
    CorruptSigningKey(PathBuf),
    /// The device token secret is not 32 bytes in hex.
    #[error("{0}: not a 32-byte secret in hex (delete it to make a new one; device tokens signed with it stop working)")]
    CorruptDeviceKey(PathBuf),
    /// An offline command was pointed at a data dir without a signing key; making one
    /// there would print tokens no server accepts.
    #[error(
        "{0}: no token signing key here; run the command from where the server's data dir \
         is, or pass --data-dir (the server makes the key on its first start)"
    )]
    NoSigningKey(PathBuf),
    /// The crypto library failed.
    #[error("crypto: {0}")]
    Crypto(String),
}

/// PEM text with Unix line endings (the `pem` crate defaults to CRLF).
pub fn encode_pem(tag: &str, der: Vec<u8>) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A key that tokens may be signed with, and the one algorithm accepted with it.
///
/// One algorithm per key type (RS256, ES256, EdDSA, HS256): a token whose header names
/// another algorithm is refused, which closes the classic confusion of an RSA public key
/// used as an HMAC secret.
#[derive(Clone)]
pub struct VerifyKey {
    /// Where the key came from, for logs.
    pub source: String,
    /// The accepted algorithm.
    pub algorithm: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyKey({:?} from {})", self.algorithm, self.source)
    }
}

impl VerifyKey {
    /// Load a `--jwt-verify-key` file. The content decides the kind: a PEM public key
    /// (`-----BEGIN PUBLIC KEY-----` or `-----BEGIN RSA PUBLIC KEY-----`) is an RS256, ES256
    /// or EdDSA key by its type; anything else is an HS256 secret, taken as the file's bytes
    /// without trailing whitespace (so `openssl rand -hex 32 > secret` works).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let source = path.display().to_string();
        let text = String::from_utf8_lossy(&bytes);
        if text.contains("-----BEGIN") {
            if text.contains("PRIVATE KEY-----") {
                return Err(KeyError::NotPublic(path.to_owned()));
            }
            let (algorithm, key) = if let Ok(k) = DecodingKey::from_rsa_pem(&bytes) {
                (Algorithm::RS256, k)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&bytes) {
                (Algorithm::ES256, k)
            } else if let Ok(k) = DecodingKey::from_ed_pem(&bytes) {
                (Algorithm::EdDSA, k)
            } else {
                return Err(KeyError::UnsupportedPem(path.to_owned()));
            };
            return Ok(VerifyKey {
                source,
                algorithm,
                key,
            });
        }
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        if end == 0 {
            return Err(KeyError::EmptySecret(path.to_owned()));
        }
        Ok(VerifyKey {
            source,
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(&bytes[..end]),
        })
    }
}

/// The server's own token signing key, kept in the data dir.
///
/// Ed25519, because: signatures are 64 bytes, so tokens stay short on every request;
/// signing is deterministic, so no random nonce can be reused or leaked (the ECDSA
/// failure mode); there are no parameters to get wrong (curve, padding, key size); and
/// making a key takes microseconds, where RSA key generation would slow the first start.
/// Verification (~50 µs) is slower than RSA's, which the verified-token cache absorbs.
///
/// Device tokens are the exception: HS256 with a secret kept beside the key
/// (`device-token.key`). A fleet presents them on every check-in, and with a million
/// devices each holding its own token no cache holds them all, so every check-in would
/// pay an Ed25519 verification (~50–110 µs of server CPU) where an HMAC costs about a
/// microsecond (`cargo run --release -p bench --bin token-bench`). Only rollout verifies
/// them, so no public key is needed; user and tenant tokens stay Ed25519 for services
/// that check them with the public key.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    public: DecodingKey,
    path: PathBuf,
    device_encoding: EncodingKey,
    device_decoding: DecodingKey,
    device_path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.path.display())
    }
}

impl SigningKey {
    /// Load `DATA_DIR/token-signing.key`, creating it (mode 0600) when missing. The file is
    /// a PKCS#8 PEM, so `openssl pkey -in token-signing.key -pubout` exports the public key
    /// for other services that verify rollout's tokens.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, KeyError> {
        let ed25519 = read_or_create(data_dir, SIGNING_KEY_FILE, new_ed25519_pem)?;
        let secret = read_or_create(data_dir, DEVICE_TOKEN_KEY_FILE, new_secret_hex)?;
        Self::parse(data_dir, &ed25519, &secret)
    }

    /// Load `DATA_DIR/token-signing.key` and `device-token.key`, which must exist (offline
    /// commands never make them).
    pub fn load(data_dir: &Path) -> Result<Self, KeyError> {
        let read = |name: &str| {
            let path = data_dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Ok(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(KeyError::NoSigningKey(path))
                }
                Err(source) => Err(KeyError::Io { path, source }),
            }
        };
        Self::parse(
            data_dir,
            &read(SIGNING_KEY_FILE)?,
            &read(DEVICE_TOKEN_KEY_FILE)?,
        )
    }

    fn parse(data_dir: &Path, ed25519: &[u8], secret_hex: &[u8]) -> Result<Self, KeyError> {
        let path = data_dir.join(SIGNING_KEY_FILE);
        let der = pem::parse(ed25519)
            .ok()
            .filter(|p| p.tag() == "PRIVATE KEY")
            .map(|p| p.into_contents())
            .ok_or_else(|| KeyError::CorruptSigningKey(path.clone()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| KeyError::CorruptSigningKey(path.clone()))?;
        let device_path = data_dir.join(DEVICE_TOKEN_KEY_FILE);
        let secret = std::str::from_utf8(secret_hex)
            .ok()
            .and_then(|text| hex::decode(text.trim()).ok())
            .filter(|secret| secret.len() == 32)
            .ok_or_else(|| KeyError::CorruptDeviceKey(device_path.clone()))?;
        Ok(SigningKey {
            encoding: EncodingKey::from_ed_der(&der),
            public: DecodingKey::from_ed_der(pair.public_key().as_ref()),
            path,
            device_encoding: EncodingKey::from_secret(&secret),
            device_decoding: DecodingKey::from_secret(&secret),
            device_path,
        })
    }

    /// The key that verifies this key's tokens.
    pub fn verify_key(&self) -> VerifyKey {
        VerifyKey {
            source: self.path.display().to_string(),
            algorithm: Algorithm::EdDSA,
            key: self.public.clone(),
        }
    }

    /// The key that verifies device tokens.
    pub fn device_verify_key(&self) -> VerifyKey {
        VerifyKey {
            source: self.device_path.display().to_string(),
            algorithm: Algorithm::HS256,
            key: self.device_decoding.clone(),
        }
    }

    /// Sign `claims` as an EdDSA JWT.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, KeyError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .map_err(|e| KeyError::Crypto(e.to_string()))
    }

    /// Sign a device token's `claims` as an HS256 JWT.
    pub fn sign_device<C: Serialize>(&self, claims: &C) -> Result<String, KeyError> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.device_encoding,
        )
        .map_err(|e| KeyError::Crypto(e.to_string()))
    }
}

/// The bytes of `DATA_DIR/name`, written first by `make` when the file is missing.
fn read_or_create(
    data_dir: &Path,
    name: &str,
    make: fn() -> std::io::Result<Vec<u8>>,
) -> Result<Vec<u8>, KeyError> {
    let path = data_dir.join(name);
    let io = |source| KeyError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(io)?;
            create_key_file(&path, &make().map_err(io)?).map_err(io)?;
            std::fs::read(&path).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

/// A new Ed25519 key, as PKCS#8 PEM.
fn new_ed25519_pem() -> std::io::Result<Vec<u8>> {
    let pair = Ed25519KeyPair::generate().map_err(|e| std::io::Error::other(e.to_string()))?;
    let der = pair
        .to_pkcs8v1()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .as_ref()
        .to_vec();
    Ok(encode_pem("PRIVATE KEY", der).into_bytes())
}

/// A new 32-byte secret, in hex.
fn new_secret_hex() -> std::io::Result<Vec<u8>> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(format!("{}\n", hex::encode(secret)).into_bytes())
}

/// Write a new key file `path` (mode 0600) holding `contents`, unless another process got
/// there first: the key goes to a private temp file that is then hard-linked into place,
/// which fails if `path` exists, so concurrent first starts (a server and `rollout token`)
/// end up using the same key.
fn create_key_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}", uuid::Uuid::new_v4()));
    {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_key_is_created_private_and_reloaded_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let first = SigningKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(SIGNING_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = SigningKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.public.as_bytes(), again.public.as_bytes());
    }

    #[test]
    fn offline_commands_never_make_a_key_and_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("rollout-data");
        let err = SigningKey::load(&elsewhere).unwrap_err();
        assert!(matches!(err, KeyError::NoSigningKey(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("rollout-data/token-signing.key") && text.contains("--data-dir"));
        assert!(!elsewhere.exists(), "nothing was created");
        let made = SigningKey::load_or_create(dir.path()).unwrap();
        let loaded = SigningKey::load(dir.path()).unwrap();
        assert_eq!(made.public.as_bytes(), loaded.public.as_bytes());
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| SigningKey::load_or_create(dir.path()).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().public.as_bytes().to_vec())
                .collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "temp files left behind: {names:?}");
    }

    #[test]
    fn a_secret_file_is_an_hs256_key_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let key = VerifyKey::load(&path).unwrap();
        assert_eq!(key.algorithm, Algorithm::HS256);
        assert_eq!(key.key.as_bytes(), b"s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            VerifyKey::load(&path),
            Err(KeyError::EmptySecret(_))
        ));
    }

    #[test]
    fn a_private_pem_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(
            VerifyKey::load(&path),
            Err(KeyError::NotPublic(_))
        ));
    }
}
