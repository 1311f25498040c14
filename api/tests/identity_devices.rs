//! Standalone device identity against the real binary: auth requests signed the way
//! mender-client signs them (keys and signatures made by openssl), tenant tokens,
//! preauthorized admission (HTTP and `rollout device preauthorize`), and inventory.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{assert_error, json_ok, send, Server, Workdir};
use reqwest::StatusCode;
use serde_json::{json, Value};

const AUTH: &str = "/api/devices/v1/authentication/auth_requests";
const DEVAUTH: &str = "/api/management/v2/devauth/devices";
const INVENTORY: &str = "/api/devices/v1/inventory/device/attributes";
const NEXT: &str =
    "/api/devices/v1/deployments/device/deployments/next?artifact_name=base&device_type=dev-a";

/// Device key types mender-client may use.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Rsa,
    Ec,
    Ed25519,
}

/// A device key pair made by openssl.
struct DeviceKey {
    kind: Kind,
    key: PathBuf,
    /// PKIX PEM.
    public: String,
}

impl DeviceKey {
    fn new(kind: Kind, dir: &Path, name: &str) -> DeviceKey {
        let key = dir.join(format!("{name}.pem"));
        let k = key.to_str().unwrap();
        let args: Vec<&str> = match kind {
            // What mender-client writes: PKCS#1 RSA, SEC1 EC.
            Kind::Rsa => vec!["genrsa", "-traditional", "-out", k, "2048"],
            Kind::Ec => vec![
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
                k,
            ],
            Kind::Ed25519 => vec!["genpkey", "-algorithm", "ED25519", "-out", k],
        };
        common::run_ok("openssl", args, dir);
        let public = common::run_ok("openssl", ["pkey", "-in", k, "-pubout"], dir);
        DeviceKey { kind, key, public }
    }

    /// Base64 signature over `body`: RSA PKCS#1 v1.5 / ECDSA (DER) over SHA-256, or Ed25519.
    fn sign(&self, body: &[u8]) -> String {
        let dir = self.key.parent().unwrap();
        let input = dir.join("body.bin");
        let sig = dir.join("body.sig");
        std::fs::write(&input, body).unwrap();
        let (k, i, s) = (
            self.key.to_str().unwrap(),
            input.to_str().unwrap(),
            sig.to_str().unwrap(),
        );
        let args: Vec<&str> = match self.kind {
            Kind::Rsa | Kind::Ec => vec!["dgst", "-sha256", "-sign", k, "-out", s, i],
            Kind::Ed25519 => vec![
                "pkeyutl", "-sign", "-rawin", "-inkey", k, "-in", i, "-out", s,
            ],
        };
        common::run_ok("openssl", args, dir);
        STANDARD.encode(std::fs::read(&sig).unwrap())
    }
}

/// An auth request body as mender-client's json.Encoder writes it, trailing newline included.
fn auth_body(identity: &Value, pubkey: &str, tenant_token: &str) -> Vec<u8> {
    let body = json!({
        "id_data": identity.to_string(),
        "pubkey": pubkey,
        "tenant_token": tenant_token,
    });
    format!("{body}\n").into_bytes()
}

async fn post_auth(base: &str, body: Vec<u8>, signature: Option<String>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{AUTH}"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer")
        .body(body);
    if let Some(sig) = signature {
        req = req.header("X-MEN-Signature", sig);
    }
    send(req).await
}

/// Sign and send an auth request; returns the response.
async fn authenticate(
    base: &str,
    key: &DeviceKey,
    identity: &Value,
    tenant_token: &str,
) -> reqwest::Response {
    let body = auth_body(identity, &key.public, tenant_token);
    let sig = key.sign(&body);
    post_auth(base, body, Some(sig)).await
}

/// Authenticate, asserting 200 with a JWT body; returns the token.
async fn token_for(base: &str, key: &DeviceKey, identity: &Value, tenant_token: &str) -> String {
    let resp = authenticate(base, key, identity, tenant_token).await;
    let status = resp.status();
    let ct = resp.headers().get("content-type").cloned();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "auth request refused: {text}");
    assert_eq!(ct.unwrap(), "application/jwt");
    assert_eq!(text.split('.').count(), 3, "not a JWT: {text}");
    text
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// `GET /devauth/devices` as a user of `tenant`.
async fn devices(server: &Server, tenant: &str) -> Vec<Value> {
    let req = server
        .http()
        .get(server.url(DEVAUTH))
        .bearer_auth(server.user_token(tenant));
    match json_ok(send(req).await).await {
        Value::Array(list) => list,
        other => panic!("not an array: {other}"),
    }
}

#[tokio::test]
async fn devices_with_rsa_ec_and_ed25519_keys_are_admitted_and_get_device_tokens() {
    let (server, work) = (Server::start().await, Workdir::new());
    for (n, kind) in [Kind::Rsa, Kind::Ec, Kind::Ed25519].into_iter().enumerate() {
        let key = DeviceKey::new(kind, work.path(), &format!("dev{n}"));
        let identity = json!({"mac": format!("02:00:00:00:00:0{n}"), "serial": "S"});
        let token = token_for(&server.base, &key, &identity, "").await;
        let c = claims(&token);
        assert_eq!(c["mender.device"], json!(true), "{kind:?}");
        let id = c["sub"].as_str().unwrap().to_owned();

        let next = send(server.http().get(server.url(NEXT)).bearer_auth(&token)).await;
        assert_eq!(next.status(), StatusCode::NO_CONTENT, "{kind:?}");
        let mgmt = server.api(token.clone()).get("/artifacts").await;
        assert_error(mgmt, StatusCode::FORBIDDEN).await;

        // Again, with the identity's keys in another order: a fresh token, the same device.
        let reordered: Value =
            serde_json::from_str(&format!(r#"{{"serial":"S","mac":"02:00:00:00:00:0{n}"}}"#))
                .unwrap();
        let again = token_for(&server.base, &key, &reordered, "").await;
        assert_ne!(again, token);
        assert_eq!(claims(&again)["sub"], json!(id));

        let list = devices(&server, "").await;
        assert_eq!(list.len(), n + 1);
        let dev = list.iter().find(|d| d["id"] == json!(id)).expect("listed");
        assert_eq!(dev["status"], json!("accepted"));
        assert_eq!(dev["identity_data"], identity);
        assert_eq!(
            dev["auth_sets"][0]["pubkey"].as_str().unwrap().trim(),
            key.public.trim()
        );
    }
}

#[tokio::test]
async fn auth_requests_with_bad_signatures_or_bodies_are_refused() {
    let (server, work) = (Server::start().await, Workdir::new());
    let key = DeviceKey::new(Kind::Ec, work.path(), "dev");
    let other = DeviceKey::new(Kind::Ec, work.path(), "other");
    let identity = json!({"mac": "02:00:00:00:00:01"});
    let body = auth_body(&identity, &key.public, "");
    let mut tampered = body.clone();
    tampered.truncate(body.len() - 1); // the signature covers the trailing newline too
    let cases = [
        ("no signature", body.clone(), None),
        ("another key", body.clone(), Some(other.sign(&body))),
        ("another body", tampered, Some(key.sign(&body))),
        ("not base64", body.clone(), Some("%%%".to_owned())),
    ];
    for (case, body, sig) in cases {
        let resp = post_auth(&server.base, body, sig).await;
        let msg = assert_error(resp, StatusCode::UNAUTHORIZED).await;
        eprintln!("{case}: {msg}");
    }
    let not_json = b"{nope\n".to_vec();
    let sig = key.sign(&not_json);
    assert_error(
        post_auth(&server.base, not_json, Some(sig)).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let list_id = json!({"id_data": "[1]", "pubkey": key.public, "tenant_token": ""});
    let body = format!("{list_id}\n").into_bytes();
    let sig = key.sign(&body);
    assert_error(
        post_auth(&server.base, body, Some(sig)).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let bad_tenant = authenticate(&server.base, &key, &identity, "not-a-token").await;
    assert_error(bad_tenant, StatusCode::UNAUTHORIZED).await;
    let user_as_tenant = authenticate(&server.base, &key, &identity, &server.user_token("x")).await;
    assert_error(user_as_tenant, StatusCode::UNAUTHORIZED).await;
    assert!(devices(&server, "").await.is_empty());
}

/// `rollout ARGS… --data-dir DIR`, asserting success; stdout trimmed.
fn rollout(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rollout {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_tenant_token_puts_the_device_in_its_tenant() {
    let (server, work) = (Server::start().await, Workdir::new());
    let key = DeviceKey::new(Kind::Rsa, work.path(), "dev");
    let tenant_token = rollout(&server.data_dir, &["token", "tenant", "--tenant", "acme"]);
    let identity = json!({"mac": "02:00:00:00:00:01"});
    let token = token_for(&server.base, &key, &identity, &tenant_token).await;
    assert_eq!(claims(&token)["mender.tenant"], json!("acme"));
    let acme = devices(&server, "acme").await;
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0]["id"], claims(&token)["sub"]);
    assert!(devices(&server, "").await.is_empty());
    // The same identity without a tenant token is another device, in the default tenant.
    let plain = token_for(&server.base, &key, &identity, "").await;
    assert_ne!(claims(&plain)["sub"], claims(&token)["sub"]);
    // A tenant token is no access token.
    assert_error(
        server.api(tenant_token).get("/artifacts").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn preauthorized_admission_admits_only_registered_keys() {
    let server = Server::start_with(&["--device-admission", "preauthorized"]).await;
    let work = Workdir::new();
    let key = DeviceKey::new(Kind::Rsa, work.path(), "dev");
    let impostor = DeviceKey::new(Kind::Ed25519, work.path(), "impostor");
    let identity = json!({"mac": "02:00:00:00:00:07"});

    let refused = authenticate(&server.base, &key, &identity, "").await;
    assert_error(refused, StatusCode::UNAUTHORIZED).await;
    let pending = devices(&server, "").await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["status"], json!("pending"));

    let user = server.user_token("");
    let preauth = json!({"identity_data": identity, "pubkey": key.public});
    let post = |token: String, body: Value| {
        let req = server
            .http()
            .post(server.url(DEVAUTH))
            .bearer_auth(token)
            .json(&body);
        send(req)
    };
    let created = post(user.clone(), preauth.clone()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    assert_error(
        post(user.clone(), preauth.clone()).await,
        StatusCode::CONFLICT,
    )
    .await;
    let bad_key = json!({"identity_data": {"mac": "x"}, "pubkey": "nope"});
    assert_error(post(user.clone(), bad_key).await, StatusCode::BAD_REQUEST).await;
    let as_device = post(server.device_token(""), preauth).await;
    assert_error(as_device, StatusCode::FORBIDDEN).await;

    let token = token_for(&server.base, &key, &identity, "").await;
    let id = claims(&token)["sub"].as_str().unwrap().to_owned();
    assert!(location.ends_with(&format!("{DEVAUTH}/{id}")), "{location}");
    let shown = send(
        server
            .http()
            .get(server.url(&format!("{DEVAUTH}/{id}")))
            .bearer_auth(&user),
    );
    assert_eq!(json_ok(shown.await).await["status"], json!("accepted"));
    let stolen = authenticate(&server.base, &impostor, &identity, "").await;
    assert_error(stolen, StatusCode::UNAUTHORIZED).await;
    token_for(&server.base, &key, &identity, "").await;
}

/// `PUT /devauth/devices/{device}/auth/{set}/status` as `token`.
async fn set_auth_status(
    server: &Server,
    token: &str,
    device: &str,
    set: &str,
    body: Value,
) -> reqwest::Response {
    let url = server.url(&format!("{DEVAUTH}/{device}/auth/{set}/status"));
    send(server.http().put(url).bearer_auth(token).json(&body)).await
}

/// `(id, pubkey, status)` of each auth set of a listed device.
fn auth_sets(device: &Value) -> Vec<(String, String, String)> {
    device["auth_sets"]
        .as_array()
        .expect("auth_sets is an array")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["pubkey"].as_str().unwrap().trim().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_device_asking_with_two_keys_on_two_nodes_at_once_is_admitted_once() {
    let first = Server::start().await;
    let Some(second) = Server::start_beside(&first).await else {
        eprintln!("SKIPPED: two nodes need ROLLOUT_TEST_STORE=scylla and ROLLOUT_TEST_CQL");
        return;
    };
    let work = Workdir::new();
    let keys = [
        DeviceKey::new(Kind::Ed25519, work.path(), "one"),
        DeviceKey::new(Kind::Ed25519, work.path(), "two"),
    ];
    // Each round a new device's first two auth requests race, one per node. Without a
    // compare-and-set both would admit their key and one record would overwrite the other.
    for round in 0..6 {
        let identity = json!({"mac": format!("02:00:00:00:02:{round:02x}")});
        let bodies = keys.each_ref().map(|k| auth_body(&identity, &k.public, ""));
        let signatures = [keys[0].sign(&bodies[0]), keys[1].sign(&bodies[1])];
        let [b0, b1] = bodies;
        let [s0, s1] = signatures;
        let (one, two) = tokio::join!(
            post_auth(&first.base, b0, Some(s0)),
            post_auth(&second.base, b1, Some(s1))
        );
        let mut statuses = [one.status(), two.status()];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::UNAUTHORIZED],
            "round {round}: one key admitted, the other waits"
        );
        let listed = devices(&second, "").await;
        let device = listed
            .iter()
            .find(|d| d["identity_data"] == identity)
            .expect("the device is listed");
        let mut statuses: Vec<String> = auth_sets(device).into_iter().map(|(_, _, s)| s).collect();
        statuses.sort();
        assert_eq!(statuses, ["accepted", "pending"], "round {round}");
    }
}

#[tokio::test]
async fn a_new_key_for_an_accepted_device_waits_as_pending_until_an_operator_accepts_it() {
    let (mut server, work) = (Server::start().await, Workdir::new());
    let owner = DeviceKey::new(Kind::Ec, work.path(), "owner");
    let intruder = DeviceKey::new(Kind::Ed25519, work.path(), "intruder");
    let identity = json!({"mac": "02:00:00:00:00:0a"});
    let token = token_for(&server.base, &owner, &identity, "").await;
    let id = claims(&token)["sub"].as_str().unwrap().to_owned();

    // The same identity data with another key gets no token, and its key waits as pending.
    let taken = authenticate(&server.base, &intruder, &identity, "").await;
    let msg = assert_error(taken, StatusCode::UNAUTHORIZED).await;
    assert!(msg.contains("pending"), "{msg}");
    let list = devices(&server, "").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], json!(id));
    assert_eq!(list[0]["status"], json!("accepted"));
    let sets = auth_sets(&list[0]);
    let status_of = |sets: &[(String, String, String)], key: &DeviceKey| {
        sets.iter()
            .find(|(_, pem, _)| pem == key.public.trim())
            .map(|(set, _, status)| (set.clone(), status.clone()))
            .expect("the key has an auth set")
    };
    assert_eq!(sets.len(), 2);
    assert_eq!(status_of(&sets, &owner).1, "accepted");
    let (pending_set, status) = status_of(&sets, &intruder);
    assert_eq!(status, "pending");
    // Asking again changes nothing; the accepted key keeps working, also after a restart.
    assert_error(
        authenticate(&server.base, &intruder, &identity, "").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(auth_sets(&devices(&server, "").await[0]).len(), 2);
    server.restart().await;
    let owner_token = token_for(&server.base, &owner, &identity, "").await;

    // Only an operator can move the device to the new key; the old one is then rejected.
    let user = server.user_token("");
    for (token, set, body, status) in [
        (
            server.device_token(""),
            pending_set.as_str(),
            json!({"status": "accepted"}),
            StatusCode::FORBIDDEN,
        ),
        (
            user.clone(),
            pending_set.as_str(),
            json!({"status": "bogus"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            user.clone(),
            pending_set.as_str(),
            json!({"status": "preauthorized"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            user.clone(),
            "no-such-set",
            json!({"status": "accepted"}),
            StatusCode::NOT_FOUND,
        ),
        (
            server.user_token("other"),
            pending_set.as_str(),
            json!({"status": "accepted"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        assert_error(
            set_auth_status(&server, &token, &id, set, body).await,
            status,
        )
        .await;
    }
    let accepted = set_auth_status(
        &server,
        &user,
        &id,
        &pending_set,
        json!({"status": "accepted"}),
    );
    assert_eq!(accepted.await.status(), StatusCode::NO_CONTENT);
    let moved = token_for(&server.base, &intruder, &identity, "").await;
    assert_eq!(claims(&moved)["sub"], json!(id));
    assert_error(
        authenticate(&server.base, &owner, &identity, "").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let sets = auth_sets(&devices(&server, "").await[0]);
    assert_eq!(status_of(&sets, &owner).1, "rejected");
    assert_eq!(status_of(&sets, &intruder).1, "accepted");

    // The old key's token is refused from then on; the new key's, though issued within
    // the same second, works.
    let next = |token: &str| {
        let req = server.http().get(server.url(NEXT)).bearer_auth(token);
        async move { send(req).await.status() }
    };
    assert_eq!(next(&owner_token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(next(&moved).await, StatusCode::NO_CONTENT);
    // Rejecting the accepted key leaves the device no token that works.
    let rejected = set_auth_status(
        &server,
        &user,
        &id,
        &pending_set,
        json!({"status": "rejected"}),
    );
    assert_eq!(rejected.await.status(), StatusCode::NO_CONTENT);
    assert_eq!(next(&moved).await, StatusCode::UNAUTHORIZED);
    assert_error(
        authenticate(&server.base, &intruder, &identity, "").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

/// A `rollout serve` on a given data dir, killed on drop.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(dir: &Path, args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollout"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .expect("address line")
            .to_owned();
        Serve { child, base }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_preauthorize_command_registers_a_device_while_the_server_is_stopped() {
    let work = Workdir::new();
    let data = work.path().join("data");
    let key = DeviceKey::new(Kind::Ec, work.path(), "dev");
    let pubkey = work.file("dev.pub", key.public.as_bytes());
    let identity = json!({"mac": "02:00:00:00:00:09"});
    let args = [
        "device",
        "preauthorize",
        "--identity",
        &identity.to_string(),
        "--pubkey",
        pubkey.to_str().unwrap(),
    ];
    let id = rollout(&data, &args);

    let server = Serve::start(&data, &["--device-admission", "preauthorized"]);
    let token = token_for(&server.base, &key, &identity, "").await;
    assert_eq!(claims(&token)["sub"], json!(id));

    // While the server runs, the store is locked and the command says what to do instead.
    let out = Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args(args)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("POST /api/management/v2/devauth/devices"),
        "{err}"
    );
}

#[tokio::test]
async fn devices_report_inventory_with_put_or_patch() {
    let server = Server::start().await;
    let token = server.device_token("acme");
    let attrs = json!([{"name": "device_type", "value": "dev-a"}, {"name": "ipv4", "value": ["10.0.0.1/8"]}]);
    for method in [reqwest::Method::PUT, reqwest::Method::PATCH] {
        let req = server
            .http()
            .request(method.clone(), server.url(INVENTORY))
            .bearer_auth(&token);
        let resp = send(req.json(&attrs)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{method}");
    }
    let req = server
        .http()
        .put(server.url(INVENTORY))
        .bearer_auth(server.user_token("acme"));
    assert_error(send(req.json(&attrs)).await, StatusCode::FORBIDDEN).await;
    let req = server.http().put(server.url(INVENTORY)).bearer_auth(&token);
    assert_error(
        send(req.json(&json!({"name": "x"}))).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let req = server.http().put(server.url(INVENTORY)).json(&attrs);
    assert_error(send(req).await, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn all_devices_deploys_to_every_accepted_device_of_the_tenant() {
    let (server, work) = (Server::start().await, Workdir::new());
    let mut ids = Vec::new();
    for n in 0..2 {
        let key = DeviceKey::new(Kind::Ed25519, work.path(), &format!("all{n}"));
        let identity = json!({"mac": format!("02:00:00:00:0a:0{n}")});
        let token = token_for(&server.base, &key, &identity, "").await;
        ids.push(claims(&token)["sub"].as_str().unwrap().to_owned());
    }
    ids.sort();
    let api = server.as_user("");
    let release = work.single_file("everyone-1", &["dev-a"], &[]);
    api.upload_ok(&release.path, "").await;
    let body = |extra: Value| {
        let mut b = json!({"name": "everyone", "artifact_name": "everyone-1"});
        if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        b
    };
    let created = common::fleet::create(&api, &body(json!({"all_devices": true}))).await;
    let id = common::fleet::deployment_id(created).await;
    let d = json_ok(api.get(&format!("/deployments/{id}")).await).await;
    assert_eq!(d["device_count"], json!(2), "{d}");
    let listed = json_ok(api.get(&format!("/deployments/{id}/device_list")).await).await;
    assert_eq!(listed, json!(ids));

    // Either a list or all_devices; and all_devices needs an accepted device.
    let both = body(json!({"all_devices": true, "devices": [ids[0]]}));
    assert_error(
        common::fleet::create(&api, &both).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let neither = body(json!({}));
    assert_error(
        common::fleet::create(&api, &neither).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let other = server.as_user("globex");
    other.upload_ok(&release.path, "").await;
    let empty = common::fleet::create(&other, &body(json!({"all_devices": true}))).await;
    assert_error(empty, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn decommissioning_a_device_revokes_its_tokens_on_every_node_and_ends_its_deployments() {
    let (mut server, work) = (Server::start().await, Workdir::new());
    let key = DeviceKey::new(Kind::Ed25519, work.path(), "gone");
    let identity = json!({"mac": "02:00:00:00:0d:01"});
    let token = token_for(&server.base, &key, &identity, "").await;
    let id = claims(&token)["sub"].as_str().unwrap().to_owned();
    let api = server.as_user("");
    let release = work.single_file("gone-1", &["dev-a"], &[]);
    api.upload_ok(&release.path, "").await;
    let body = json!({"name": "before", "artifact_name": "gone-1", "devices": [id]});
    let deployment = common::fleet::deployment_id(common::fleet::create(&api, &body).await).await;
    let next = |base: String, token: String| async move {
        let req = reqwest::Client::new()
            .get(format!("{base}{NEXT}"))
            .bearer_auth(token);
        send(req).await.status()
    };
    assert_eq!(
        next(server.base.clone(), token.clone()).await,
        StatusCode::OK
    );
    let inventory = server
        .http()
        .patch(server.url(INVENTORY))
        .bearer_auth(&token);
    let resp = send(inventory.json(&json!([{"name": "device_type", "value": "dev-a"}]))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // A second node on the same cluster store, when the suite runs on one.
    let beside = Server::start_beside(&server).await;
    if let Some(other) = &beside {
        assert_eq!(
            next(other.base.clone(), token.clone()).await,
            StatusCode::OK
        );
    }

    let user = server.user_token("");
    let delete = |id: String| {
        let req = server.http().delete(server.url(&format!("{DEVAUTH}/{id}")));
        send(req.bearer_auth(user.clone()))
    };
    assert_error(delete("no-such-device".into()).await, StatusCode::NOT_FOUND).await;
    common::no_body(delete(id.clone()).await, StatusCode::NO_CONTENT).await;

    // The token is refused at once here, within seconds on the other node, and after a
    // restart; the device left its deployment and the registry and the inventory.
    assert_eq!(
        next(server.base.clone(), token.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    if let Some(other) = &beside {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while next(other.base.clone(), token.clone()).await != StatusCode::UNAUTHORIZED {
            assert!(
                std::time::Instant::now() < deadline,
                "the other node still takes the token"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let api = server.as_user("");
    let records = json_ok(api.get(&format!("/deployments/{deployment}/devices")).await).await;
    assert_eq!(records[0]["status"], "decommissioned");
    assert!(devices(&server, "").await.is_empty());
    let inv = server
        .http()
        .get(server.url(&format!("/api/management/v1/inventory/devices/{id}")))
        .bearer_auth(&user);
    assert_error(send(inv).await, StatusCode::NOT_FOUND).await;
    drop(beside);
    server.restart().await;
    assert_eq!(
        next(server.base.clone(), token.clone()).await,
        StatusCode::UNAUTHORIZED
    );

    // Admitted again (auto admission takes an unknown device), it gets a token that works,
    // also within the second of its decommission.
    let again = token_for(&server.base, &key, &identity, "").await;
    assert_eq!(claims(&again)["sub"], json!(id));
    assert_eq!(
        next(server.base.clone(), again).await,
        StatusCode::NO_CONTENT
    );
}
