//! Tenant ids against the real binary: tokens naming a tenant id that could escape or share
//! a storage folder are refused, `rollout token` refuses to mint them, and each valid tenant
//! keeps its blobs in a folder of its own.

mod common;

use common::{assert_error, json_ok, no_body, send, Server, Workdir};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

const NEXT: &str =
    "/api/devices/v1/deployments/device/deployments/next?artifact_name=base&device_type=dev-a";

/// Tenant ids that must never reach the store: a path escape, ids that shared a blob folder
/// with `x` and with the default tenant, and ids outside the alphabet or too long.
fn invalid_tenants() -> Vec<String> {
    let mut ids: Vec<String> = ["..", "/x", "x/", "_default", "a b", "a.b", "tenant\n"]
        .map(str::to_owned)
        .to_vec();
    ids.push("a".repeat(65));
    ids
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A server that accepts HS256 tokens signed with a secret, and that secret.
async fn server_with_secret(work: &Workdir) -> (Server, EncodingKey) {
    let secret = "tenant-ids-secret-0123456789abcdef";
    let file = work.file("hs256.secret", secret.as_bytes());
    let server = Server::start_with(&["--jwt-verify-key", file.to_str().unwrap()]).await;
    (server, EncodingKey::from_secret(secret.as_bytes()))
}

fn sign(key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key).unwrap()
}

#[tokio::test]
async fn tokens_naming_an_invalid_tenant_are_refused() {
    let work = Workdir::new();
    let (server, key) = server_with_secret(&work).await;
    for tenant in invalid_tenants() {
        let user = sign(
            &key,
            &json!({"sub": "u", "mender.user": true, "mender.tenant": tenant, "exp": now() + 600}),
        );
        let msg = assert_error(
            server.api(user).get("/artifacts").await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert!(msg.contains("mender.tenant"), "{tenant:?}: {msg}");
        let device = sign(
            &key,
            &json!({"sub": "d", "mender.device": true, "mender.tenant": tenant, "exp": now() + 600}),
        );
        let next = server.http().get(server.url(NEXT)).bearer_auth(device);
        assert_error(send(next).await, StatusCode::UNAUTHORIZED).await;
    }
    // A Mender tenant id (an ObjectId in hex) is fine.
    let mender = sign(
        &key,
        &json!({"sub": "u", "mender.user": true, "mender.tenant": "5f1b2c3d4e5f6a7b8c9d0e1f", "exp": now() + 600}),
    );
    assert_eq!(
        json_ok(server.api(mender).get("/artifacts").await).await,
        json!([])
    );
}

#[tokio::test]
async fn rollout_token_refuses_invalid_tenant_ids() {
    let work = Workdir::new();
    for tenant in invalid_tenants() {
        for kind in [
            &["user", "--subject", "u"][..],
            &["device", "--device", "d"],
            &["tenant"],
        ] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollout"))
                .arg("token")
                .args(kind)
                .args(["--tenant", &tenant, "--data-dir"])
                .arg(work.path().join("data"))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{kind:?} {tenant:?} minted a token");
            assert!(err.contains("tenant id"), "{kind:?} {tenant:?}: {err}");
        }
    }
}

#[tokio::test]
async fn each_tenant_keeps_its_blobs_in_a_folder_of_its_own() {
    let (server, work) = (Server::start().await, Workdir::new());
    let built = work.single_file("blob-1", &["dev-a"], &[]);
    let mut ids = Vec::new();
    for tenant in ["", "x", "default"] {
        ids.push(server.as_user(tenant).upload_ok(&built.path, "").await);
    }
    let root = server.data_dir.join("blobs/artifacts");
    let mut files: Vec<String> = server
        .blob_files()
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    let mut expected: Vec<String> = ["_default", "x", "default"]
        .iter()
        .zip(&ids)
        .map(|(folder, id)| format!("{folder}/{id}"))
        .collect();
    expected.sort();
    assert_eq!(files, expected);
    // Deleting the default tenant's artifact leaves the others' blobs alone.
    no_body(
        server
            .as_user("")
            .delete(&format!("/artifacts/{}", ids[0]))
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(server.blob_files().len(), 2);
}
