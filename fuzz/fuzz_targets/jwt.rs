//! Bearer tokens from the network: any header value ends in an identity or an
//! `AuthError`, never a panic. Three ways in, chosen by the first byte: a raw
//! `Authorization` header against the server's own key, the same with
//! `--trust-gateway` (claims parsed without a signature), and arbitrary JSON claims
//! signed with the server's key, so claim validation runs behind a good signature.
#![no_main]

use std::sync::OnceLock;

use api::auth::{SigningKey, TokenVerifier};
use libfuzzer_sys::fuzz_target;

struct Keys {
    signing: SigningKey,
    verifying: TokenVerifier,
    gateway: TokenVerifier,
    _dir: tempfile::TempDir,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir for the fuzzing key");
        let signing = SigningKey::load_or_create(dir.path()).expect("fuzzing key");
        // A cache of 0 entries: every input goes through the full verification.
        let verifying = TokenVerifier::new(vec![signing.verify_key()], false, 0);
        let gateway = TokenVerifier::new(vec![], true, 0);
        Keys {
            signing,
            verifying,
            gateway,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keys = keys();
    match mode % 3 {
        0 => {
            let header = String::from_utf8_lossy(rest);
            let _ = keys.verifying.identify(Some(&header));
            let _ = keys.verifying.verify_tenant_token(&header);
        }
        1 => {
            let header = String::from_utf8_lossy(rest);
            let _ = keys.gateway.identify(Some(&header));
        }
        _ => {
            if let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) {
                if let Ok(token) = keys.signing.sign(&claims) {
                    let _ = keys.verifying.verify(&token);
                    let _ = keys.verifying.verify_tenant_token(&token);
                }
            }
        }
    }
});
