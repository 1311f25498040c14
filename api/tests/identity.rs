//! Token verification against the real binary: every rejection for every key type of
//! `--jwt-verify-key`, expiry past the cache, login, `--trust-gateway`, and tenant
//! isolation on every endpoint.

mod common;

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{assert_error, json_ok, no_body, send, Server, Workdir, MANAGEMENT};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

const DEVICE_NEXT: &str =
    "/api/devices/v1/deployments/device/deployments/next?artifact_name=base&device_type=dev-a";
const LOGIN: &str = "/api/management/v1/useradm/auth/login";

/// A key type of `--jwt-verify-key`.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Rs256,
    Es256,
    EdDsa,
    Hs256,
}

/// A signing key made by openssl, and what the server is given to verify it.
struct TestKey {
    kind: Kind,
    /// The private key PEM, or the secret.
    private: Vec<u8>,
    /// What `--jwt-verify-key` points at.
    verify_file: PathBuf,
}

impl TestKey {
    /// Make a key of `kind` in `dir` named `name`.
    fn new(kind: Kind, dir: &Path, name: &str) -> TestKey {
        let key = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        let genpkey = |opts: &[&str]| {
            let mut args = vec!["genpkey"];
            args.extend_from_slice(opts);
            args.extend(["-out", key.to_str().unwrap()]);
            common::run_ok("openssl", args, dir);
            let pubout = ["pkey", "-in", key.to_str().unwrap(), "-pubout", "-out"];
            common::run_ok(
                "openssl",
                pubout.iter().copied().chain([public.to_str().unwrap()]),
                dir,
            );
        };
        match kind {
            Kind::Rs256 => genpkey(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
            Kind::Es256 => genpkey(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
            Kind::EdDsa => genpkey(&["-algorithm", "ED25519"]),
            Kind::Hs256 => {
                let hex = common::run_ok("openssl", ["rand", "-hex", "32"], dir);
                // Written with its newline, as `openssl rand -hex 32 > secret` would.
                std::fs::write(&key, &hex).unwrap();
                return TestKey {
                    kind,
                    private: hex.trim().as_bytes().to_vec(),
                    verify_file: key,
                };
            }
        }
        TestKey {
            kind,
            private: std::fs::read(&key).unwrap(),
            verify_file: public,
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self.kind {
            Kind::Rs256 => Algorithm::RS256,
            Kind::Es256 => Algorithm::ES256,
            Kind::EdDsa => Algorithm::EdDSA,
            Kind::Hs256 => Algorithm::HS256,
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        match self.kind {
            Kind::Rs256 => EncodingKey::from_rsa_pem(&self.private).unwrap(),
            Kind::Es256 => EncodingKey::from_ec_pem(&self.private).unwrap(),
            Kind::EdDsa => EncodingKey::from_ed_pem(&self.private).unwrap(),
            Kind::Hs256 => EncodingKey::from_secret(&self.private),
        }
    }

    /// `claims` signed with this key and its algorithm.
    fn sign(&self, claims: &Value) -> String {
        sign(self.algorithm(), &self.encoding_key(), claims)
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("signing a test token")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn user_claims(tenant: &str) -> Value {
    json!({"sub": "user-1", "mender.user": true, "mender.tenant": tenant, "exp": now() + 600})
}

fn device_claims(tenant: &str) -> Value {
    json!({"sub": "device-1", "mender.device": true, "mender.tenant": tenant, "exp": now() + 600})
}

/// An unsigned token: `alg: none` and an empty signature.
fn alg_none(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// `GET /artifacts` with `token`.
async fn management(server: &Server, token: &str) -> reqwest::Response {
    server.api(token.to_owned()).get("/artifacts").await
}

/// A device check-in with `token`.
async fn device_api(server: &Server, token: &str) -> reqwest::Response {
    send(
        server
            .http()
            .get(server.url(DEVICE_NEXT))
            .bearer_auth(token),
    )
    .await
}

/// Every rejection for tokens of `kind`, on a server that accepts only that key (and its
/// own).
async fn rejections(kind: Kind) {
    let dir = Workdir::new();
    let key = TestKey::new(kind, dir.path(), "trusted");
    let other = TestKey::new(kind, dir.path(), "other");
    let server = Server::start_with(&["--jwt-verify-key", key.verify_file.to_str().unwrap()]).await;

    let ok = management(&server, &key.sign(&user_claims("acme"))).await;
    let body = json_ok(ok).await;
    assert_eq!(body, json!([]), "{kind:?}: a valid user token");
    no_body(
        device_api(&server, &key.sign(&device_claims("acme"))).await,
        StatusCode::NO_CONTENT,
    )
    .await;

    // An HMAC no key is for (HS512): for public keys, signed with the verify file's bytes
    // as the secret; for a secret, a stronger HMAC than the one accepted.
    let wrong_alg = match kind {
        Kind::Hs256 => sign(
            Algorithm::HS512,
            &EncodingKey::from_secret(&key.private),
            &user_claims("acme"),
        ),
        _ => sign(
            Algorithm::HS512,
            &EncodingKey::from_secret(&std::fs::read(&key.verify_file).unwrap()),
            &user_claims("acme"),
        ),
    };
    // The RSA/HMAC confusion: HS256 (the algorithm of the server's own device tokens) with
    // a public verify file as the secret is only a bad signature (for a secret key: HS256
    // with another secret).
    let confusing_secret = match kind {
        Kind::Hs256 => b"not the secret".to_vec(),
        _ => std::fs::read(&key.verify_file).unwrap(),
    };
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&confusing_secret),
        &user_claims("acme"),
    );
    let mut tampered = key.sign(&user_claims("acme"));
    let payload = URL_SAFE_NO_PAD.encode(user_claims("other-tenant").to_string());
    let parts: Vec<&str> = tampered.split('.').collect();
    tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    let mut no_sub = user_claims("acme");
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut expired = user_claims("acme");
    expired["exp"] = json!(now() - 10);
    let mut no_exp = user_claims("acme");
    no_exp.as_object_mut().unwrap().remove("exp");

    let cases = [
        (
            "alg none",
            alg_none(&user_claims("acme")),
            "\"none\" is not supported",
        ),
        ("wrong algorithm", wrong_alg, "is not accepted"),
        (
            "public key as HMAC secret",
            confused,
            "signature is invalid",
        ),
        (
            "signed by another key",
            other.sign(&user_claims("acme")),
            "signature is invalid",
        ),
        ("tampered claims", tampered, "signature is invalid"),
        ("expired", key.sign(&expired), "expired"),
        ("no exp", key.sign(&no_exp), "no exp claim"),
        ("no sub", key.sign(&no_sub), "no sub claim"),
        (
            "neither user nor device",
            key.sign(&json!({"sub": "x", "exp": now() + 60})),
            "neither",
        ),
        ("not a JWT", "not-a-jwt".to_owned(), "malformed"),
    ];
    for (case, token, why) in cases {
        let msg = assert_error(management(&server, &token).await, StatusCode::UNAUTHORIZED).await;
        assert!(msg.contains(why), "{kind:?} {case}: {msg:?} lacks {why:?}");
        assert_error(device_api(&server, &token).await, StatusCode::UNAUTHORIZED).await;
    }
    let device_on_management = management(&server, &key.sign(&device_claims("acme"))).await;
    assert_error(device_on_management, StatusCode::FORBIDDEN).await;
    let user_on_device = device_api(&server, &key.sign(&user_claims("acme"))).await;
    assert_error(user_on_device, StatusCode::FORBIDDEN).await;
    let missing = send(
        server
            .http()
            .get(server.url(&format!("{MANAGEMENT}/artifacts"))),
    )
    .await;
    assert_error(missing, StatusCode::UNAUTHORIZED).await;
    // A header that is not even text is no credential either.
    let not_text = reqwest::header::HeaderValue::from_bytes(b"Bearer \xff").unwrap();
    for path in [format!("{MANAGEMENT}/artifacts"), DEVICE_NEXT.to_owned()] {
        let request = server.http().get(server.url(&path));
        let resp = send(request.header("authorization", not_text.clone())).await;
        assert_error(resp, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn rs256_tokens_are_verified_and_every_bad_one_refused() {
    rejections(Kind::Rs256).await;
}

#[tokio::test]
async fn es256_tokens_are_verified_and_every_bad_one_refused() {
    rejections(Kind::Es256).await;
}

#[tokio::test]
async fn eddsa_tokens_are_verified_and_every_bad_one_refused() {
    rejections(Kind::EdDsa).await;
}

#[tokio::test]
async fn hs256_tokens_are_verified_and_every_bad_one_refused() {
    rejections(Kind::Hs256).await;
}

#[tokio::test]
async fn unsigned_tokens_are_refused_unless_a_gateway_is_trusted() {
    let forged = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(user_claims("acme").to_string()),
        URL_SAFE_NO_PAD.encode("sig")
    );
    let strict = Server::start().await;
    assert_error(management(&strict, &forged).await, StatusCode::UNAUTHORIZED).await;

    let trusting = Server::start_with(&["--trust-gateway"]).await;
    json_ok(management(&trusting, &forged).await).await;
    let mut expired = user_claims("acme");
    expired["exp"] = json!(now() - 10);
    let expired = format!(
        "{}.{}.",
        forged.split('.').next().unwrap(),
        URL_SAFE_NO_PAD.encode(expired.to_string())
    );
    assert_error(
        management(&trusting, &expired).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let log = trusting.log_text();
    assert!(
        log.contains("WARN") && log.contains("--trust-gateway"),
        "no start-up warning in:\n{log}"
    );
}

#[tokio::test]
async fn a_cached_token_is_refused_once_it_expires() {
    let server = Server::start().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args([
            "token",
            "user",
            "--subject",
            "u",
            "--ttl",
            "2",
            "--data-dir",
        ])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    json_ok(management(&server, &token).await).await;
    json_ok(management(&server, &token).await).await;
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let msg = assert_error(management(&server, &token).await, StatusCode::UNAUTHORIZED).await;
    assert!(msg.contains("expired"), "{msg}");
}

/// POST login with Basic credentials.
async fn login(server: &Server, user: &str, password: &str) -> reqwest::Response {
    let basic = STANDARD.encode(format!("{user}:{password}"));
    let req = server
        .http()
        .post(server.url(LOGIN))
        .header("authorization", format!("Basic {basic}"));
    send(req).await
}

#[tokio::test]
async fn the_administrator_logs_in_with_basic_credentials() {
    let dir = Workdir::new();
    let file = dir.file("password", b"s3cret-pw\n");
    let server = Server::start_with(&[
        "--admin-user",
        "ops@example.com",
        "--admin-password-file",
        file.to_str().unwrap(),
        "--admin-tenant",
        "acme",
    ])
    .await;
    let resp = login(&server, "ops@example.com", "s3cret-pw").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/jwt");
    let token = resp.text().await.unwrap();
    json_ok(management(&server, &token).await).await;
    assert_error(device_api(&server, &token).await, StatusCode::FORBIDDEN).await;

    // The token is for the configured tenant: it sees acme's devices, not the default's.
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["mender.tenant"], json!("acme"));
    assert_eq!(claims["mender.user"], json!(true));

    for (user, password) in [
        ("ops@example.com", "wrong"),
        ("other@example.com", "s3cret-pw"),
    ] {
        assert_error(
            login(&server, user, password).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let bearer = send(server.http().post(server.url(LOGIN)).bearer_auth("x")).await;
    assert_error(bearer, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn login_is_refused_when_no_password_is_configured() {
    let server = Server::start().await;
    let msg = assert_error(
        login(&server, "admin@rollout.local", "").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(msg.contains("no administrator password"), "{msg}");
}

/// A device token of `tenant` for `device`, from `rollout token device`.
fn device_token(server: &Server, tenant: &str, device: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args([
            "token",
            "device",
            "--tenant",
            tenant,
            "--device",
            device,
            "--data-dir",
        ])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

const DEVICE_DEPLOYMENTS: &str = "/api/devices/v1/deployments/device/deployments";

#[tokio::test]
async fn a_tenant_sees_nothing_of_another_tenants_artifacts_deployments_devices_or_logs() {
    let (server, work) = (Server::start().await, Workdir::new());
    let (a, b) = (server.as_user("tenant-a"), server.as_user("tenant-b"));
    let built = work.single_file("iso-1", &["dev-a"], &[]);
    let artifact = a.upload_ok(&built.path, "").await;
    let device = "shared-device-id";
    let create = send(
        a.request(reqwest::Method::POST, "/deployments")
            .json(&json!({
                "name": "d", "artifact_name": "iso-1", "devices": [device]
            })),
    )
    .await;
    assert_eq!(create.status(), StatusCode::CREATED);
    let location = create.headers()["location"].to_str().unwrap().to_owned();
    let deployment = location.rsplit('/').next().unwrap().to_owned();

    // Tenant A's device takes the deployment, fails it and uploads a log.
    let dev_a = device_token(&server, "tenant-a", device);
    let next = server.url(&format!(
        "{DEVICE_DEPLOYMENTS}/next?artifact_name=base&device_type=dev-a"
    ));
    json_ok(send(server.http().get(&next).bearer_auth(&dev_a)).await).await;
    let status = server.url(&format!("{DEVICE_DEPLOYMENTS}/{deployment}/status"));
    let failure = json!({"status": "failure"});
    for report in [json!({"status": "downloading"}), failure.clone()] {
        let req = server.http().put(&status).bearer_auth(&dev_a).json(&report);
        no_body(send(req).await, StatusCode::NO_CONTENT).await;
    }
    let log = server.url(&format!("{DEVICE_DEPLOYMENTS}/{deployment}/log"));
    let messages = json!({"messages": [{"level": "error", "message": "boom", "timestamp": "2024-01-01T00:00:00Z"}]});
    let req = server.http().put(&log).bearer_auth(&dev_a).json(&messages);
    no_body(send(req).await, StatusCode::NO_CONTENT).await;
    let log_path = format!("/deployments/{deployment}/devices/{device}/log");
    assert_eq!(a.get(&log_path).await.status(), StatusCode::OK);

    // Tenant B: empty lists and 404s everywhere.
    assert_eq!(b.artifacts().await, Vec::<Value>::new());
    assert_eq!(json_ok(b.get("/deployments").await).await, json!([]));
    let releases = json_ok(b.get("/deployments/releases").await).await;
    assert_eq!(releases, json!([]));
    for path in [
        format!("/artifacts/{artifact}"),
        format!("/artifacts/{artifact}/download"),
        format!("/deployments/{deployment}"),
        format!("/deployments/{deployment}/devices"),
        format!("/deployments/{deployment}/statistics"),
        log_path.clone(),
    ] {
        assert_error(b.get(&path).await, StatusCode::NOT_FOUND).await;
    }
    assert_error(
        b.delete(&format!("/artifacts/{artifact}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let abort_path = format!("/deployments/{deployment}/status");
    let abort = b.put_json(&abort_path, &json!({"status": "aborted"})).await;
    assert_error(abort, StatusCode::NOT_FOUND).await;

    // Tenant B's device with the same id is offered nothing and cannot report on A's.
    let dev_b = device_token(&server, "tenant-b", device);
    no_body(
        send(server.http().get(&next).bearer_auth(&dev_b)).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let req = server
        .http()
        .put(&status)
        .bearer_auth(&dev_b)
        .json(&failure);
    assert_error(send(req).await, StatusCode::NOT_FOUND).await;

    // Device registry: each tenant lists only its own devices.
    let devauth = server.url("/api/management/v2/devauth/devices");
    let token_b = server.user_token("tenant-b");
    let listed = json_ok(send(server.http().get(&devauth).bearer_auth(&token_b)).await).await;
    assert_eq!(listed, json!([]));
    // Tenant A still sees its artifact.
    assert_eq!(a.artifacts().await.len(), 1);
}
