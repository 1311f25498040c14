//! The administrator's login: one user name and password from the configuration, checked
//! against HTTP Basic credentials (what `mender-cli login` sends).

use base64::Engine as _;
use sha2::{Digest, Sha256};
use storage::TenantId;

use super::IdentityError;

/// The one administrator who may log in, and the tenant their tokens are for.
#[derive(Clone)]
pub struct AdminCredentials {
    /// User name (`--admin-user`).
    pub user: String,
    /// SHA-256 of the password: only digests are compared, so the comparison takes the same
    /// time whatever the password's length, and the password itself is not kept.
    password_digest: [u8; 32],
    /// Tenant of the tokens login hands out.
    pub tenant: TenantId,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AdminCredentials({:?}, tenant {:?})",
            self.user, self.tenant.0
        )
    }
}

impl AdminCredentials {
    /// Credentials for `user` with `password` in `tenant`.
    pub fn new(user: String, password: &str, tenant: TenantId) -> Self {
        AdminCredentials {
            user,
            password_digest: Sha256::digest(password.as_bytes()).into(),
            tenant,
        }
    }

    /// Whether `user` and `password` are the administrator's, compared in constant time.
    pub fn matches(&self, user: &str, password: &str) -> bool {
        let given_user: [u8; 32] = Sha256::digest(user.as_bytes()).into();
        let want_user: [u8; 32] = Sha256::digest(self.user.as_bytes()).into();
        let given_password: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let diff = given_user
            .iter()
            .zip(want_user.iter())
            .chain(given_password.iter().zip(self.password_digest.iter()))
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

/// The user name and password of an `Authorization: Basic …` header.
pub fn parse_basic(header: Option<&str>) -> Result<(String, String), IdentityError> {
    let refused = |why: &str| IdentityError::Login(why.to_owned());
    let encoded = header
        .and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
        .ok_or_else(|| refused("login needs HTTP Basic credentials"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| refused("malformed Basic credentials"))?;
    let text = String::from_utf8(decoded).map_err(|_| refused("malformed Basic credentials"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| refused("malformed Basic credentials"))?;
    Ok((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }

    #[test]
    fn only_the_configured_user_and_password_match() {
        let admin = AdminCredentials::new("a@x".into(), "pw", TenantId::default_tenant());
        assert!(admin.matches("a@x", "pw"));
        assert!(!admin.matches("a@x", "pw2"));
        assert!(!admin.matches("b@x", "pw"));
    }

    #[test]
    fn basic_credentials_are_parsed_and_other_schemes_refused() {
        assert_eq!(
            parse_basic(Some(&basic("u@x:p:w"))).unwrap(),
            ("u@x".to_owned(), "p:w".to_owned())
        );
        assert!(parse_basic(None).is_err());
        assert!(parse_basic(Some("Bearer abc")).is_err());
        assert!(parse_basic(Some("Basic !!!")).is_err());
        assert!(parse_basic(Some(&basic("nocolon"))).is_err());
    }
}
