//! The artifacts part of the management API against the real server, with artifacts
//! written at test time by the real `mender-artifact`.

mod common;

use common::{assert_error, created_id, find, json_ok, no_body, sha256_hex, Server, Workdir};
use reqwest::multipart::Form;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const TENANT: &str = "acme";

/// The single update of an artifact.
fn update(a: &Value) -> &Value {
    let updates = a["updates"].as_array().expect("updates is an array");
    assert_eq!(updates.len(), 1, "{a}");
    &updates[0]
}

/// Assert the fields every stored rootfs artifact has, whatever its version.
fn assert_rootfs(a: &Value, id: &str, built: &common::Built, version: u64) {
    let payload = built.payload_bytes();
    assert_eq!(a["id"], json!(id));
    assert_eq!(a["info"], json!({"format": "mender", "version": version}));
    assert_eq!(a["size"], json!(built.bytes().len()));
    let u = update(a);
    assert_eq!(u["type_info"]["type"], json!("rootfs-image"));
    let files = u["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{u}");
    let file_name = built.payload.file_name().unwrap().to_str().unwrap();
    assert_eq!(files[0]["name"], json!(file_name));
    assert_eq!(files[0]["checksum"], json!(sha256_hex(&payload)));
    assert_eq!(files[0]["size"], json!(payload.len()));
    common::assert_rfc3339(&files[0]["date"]);
    // No meta-data: the field is left out, as upstream does (mender-cli accepts that).
    assert!(u.get("meta_data").is_none(), "{u}");
}

#[tokio::test]
async fn v2_rootfs_artifact_is_listed_with_its_metadata() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let built = work.rootfs("rootfs-v2", &["dev-a", "dev-b"], &["-v", "2"]);
    let id = api.upload_ok(&built.path, "first build").await;

    let list = api.artifacts().await;
    assert_eq!(list.len(), 1);
    let a = find(&list, &id);
    assert_rootfs(a, &id, &built, 2);
    assert_eq!(a["name"], json!("rootfs-v2"));
    assert_eq!(a["description"], json!("first build"));
    assert_eq!(a["device_types_compatible"], json!(["dev-a", "dev-b"]));
    assert_eq!(a["signed"], json!(false));
    common::assert_rfc3339(&a["modified"]);
    assert_eq!(
        &api.artifact(&id).await,
        a,
        "GET by id differs from the list"
    );
}

#[tokio::test]
async fn v2_rsa_signed_artifact_is_marked_signed() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let key = work.rsa_key();
    let key = common::utf8(&key);
    let built = work.rootfs("rootfs-v2-rsa", &["dev-a"], &["-v", "2", "-k", key]);
    let id = api.upload_ok(&built.path, "").await;
    let a = api.artifact(&id).await;
    assert_rootfs(&a, &id, &built, 2);
    assert_eq!(a["signed"], json!(true));
}

#[tokio::test]
async fn v3_rootfs_artifact_takes_its_type_from_header_info() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let built = work.rootfs("rootfs-v3", &["dev-a", "dev-b", "raspberrypi4"], &[]);
    let id = api.upload_ok(&built.path, "").await;
    let a = api.artifact(&id).await;
    assert_rootfs(&a, &id, &built, 3);
    assert_eq!(a["signed"], json!(false));
    assert_eq!(
        a["device_types_compatible"],
        json!(["dev-a", "dev-b", "raspberrypi4"])
    );
    assert_eq!(a["artifact_provides"]["artifact_name"], json!("rootfs-v3"));
    assert_eq!(
        a["artifact_provides"]["rootfs-image.version"],
        json!("rootfs-v3")
    );
    assert_eq!(
        a["artifact_provides"]["rootfs-image.checksum"],
        json!(sha256_hex(&built.payload_bytes()))
    );
}

#[tokio::test]
async fn v3_ecdsa_signed_artifact_keeps_provides_and_depends() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let key = work.ec_key();
    let key = common::utf8(&key);
    let extra = ["-p", "custom.p:1", "-d", "custom.d:2", "-k", key];
    let built = work.rootfs("rootfs-ec", &["dev-a", "dev-c"], &extra);
    let id = api.upload_ok(&built.path, "").await;
    let a = api.artifact(&id).await;
    assert_rootfs(&a, &id, &built, 3);
    assert_eq!(a["signed"], json!(true));
    assert_eq!(a["artifact_provides"]["custom.p"], json!("1"));
    assert_eq!(a["artifact_depends"]["custom.d"], json!("2"));
    assert_eq!(
        a["artifact_depends"]["device_type"],
        json!(["dev-a", "dev-c"])
    );
    let clears = a["clears_artifact_provides"].as_array().unwrap();
    assert!(clears.contains(&json!("rootfs-image.*")), "{clears:?}");
}

#[tokio::test]
async fn a_bootstrap_artifact_has_files_null_and_no_meta_data_as_upstream_shows_it() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let path = work.path().join("bootstrap.mender");
    let out = common::utf8(&path);
    let args = [
        "write",
        "bootstrap-artifact",
        "-n",
        "boot-1",
        "-t",
        "dev-a",
        "-o",
        out,
    ];
    common::run_ok("mender-artifact", args, work.path());
    let id = api.upload_ok(&path, "").await;
    for a in [
        api.artifact(&id).await,
        common::find(&api.artifacts().await, &id).clone(),
    ] {
        let u = update(&a);
        assert_eq!(u["files"], Value::Null, "{u}");
        assert!(u.get("meta_data").is_none(), "{u}");
    }
}

#[tokio::test]
async fn module_image_meta_data_is_an_array_holding_the_object() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let meta = work.file("meta.json", br#"{"dest_dir_hint": "/tmp/x", "answer": 42}"#);
    let meta = ["-m", common::utf8(&meta)];
    let built = work.single_file("app-1.0", &["dev-a", "dev-b"], &meta);
    let id = api.upload_ok(&built.path, "").await;
    let a = api.artifact(&id).await;
    let u = update(&a);
    assert_eq!(u["type_info"]["type"], json!("single-file"));
    assert_eq!(
        u["meta_data"],
        json!([{"answer": 42, "dest_dir_hint": "/tmp/x"}])
    );
    let names: Vec<&str> = u["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dest_dir", "filename", "permissions", "hello.txt"]);
    let hello = &u["files"][3];
    assert_eq!(hello["checksum"], json!(sha256_hex(&built.payload_bytes())));
    assert_eq!(
        a["artifact_provides"]["rootfs-image.single-file.version"],
        json!("app-1.0")
    );
}

#[tokio::test]
async fn every_compression_is_accepted() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    // Compressible payload, so the compressed members really differ from the raw bytes.
    let payload = work.file("text.ext4", &b"rollout compresses well\n".repeat(4096));
    for compression in ["none", "gzip", "lzma"] {
        let name = format!("rootfs-{compression}");
        let built = work.rootfs_with(&name, &["dev-a"], &payload, &["--compression", compression]);
        let id = api.upload_ok(&built.path, "").await;
        let a = api.artifact(&id).await;
        assert_rootfs(&a, &id, &built, 3);
        assert_eq!(a["name"], json!(name));
    }
    assert_eq!(api.artifacts().await.len(), 3);
}

/// Upload bytes that are not a valid artifact: 400, and nothing listed, counted or kept.
async fn assert_rejected(server: &Server, bytes: &[u8]) {
    let api = server.as_user(TENANT);
    let work = Workdir::new();
    let bad = work.file("bad.mender", bytes);
    api.upload_refused(&bad, StatusCode::BAD_REQUEST).await;
    assert_eq!(api.artifacts().await, Vec::<Value>::new());
    assert_eq!(api.storage().await["usage"], json!(0));
    assert_eq!(server.blob_files(), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn corrupt_artifact_is_rejected_and_nothing_is_stored() {
    let (server, work) = (Server::start().await, Workdir::new());
    let mut bytes = work.rootfs("corrupt", &["dev-a"], &[]).bytes();
    // The middle of the file is deep inside the compressed 64 KiB payload.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    assert_rejected(&server, &bytes).await;
}

#[tokio::test]
async fn truncated_artifact_is_rejected_and_nothing_is_stored() {
    let (server, work) = (Server::start().await, Workdir::new());
    let bytes = work.rootfs("truncated", &["dev-a"], &[]).bytes();
    assert_rejected(&server, &bytes[..bytes.len() / 2]).await;
}

#[tokio::test]
async fn non_artifact_upload_is_rejected_and_nothing_is_stored() {
    let server = Server::start().await;
    assert_rejected(&server, &b"this is not a tar archive".repeat(100)).await;
}

#[tokio::test]
async fn upload_without_artifact_part_is_rejected() {
    let server = Server::start().await;
    let api = server.as_user(TENANT);
    let form = Form::new().text("size", "10").text("description", "x");
    let resp = api.post_form("/artifacts", form).await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    assert!(api.artifacts().await.is_empty());
}

#[tokio::test]
async fn same_name_with_overlapping_device_types_conflicts() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let first = work.rootfs("release-1", &["dev-a", "dev-b"], &[]);
    let id = api.upload_ok(&first.path, "").await;
    let blobs = server.blob_files();

    let dir2 = Workdir::new();
    let overlapping = dir2.rootfs("release-1", &["dev-b", "dev-c"], &[]);
    api.upload_refused(&overlapping.path, StatusCode::CONFLICT)
        .await;
    let list = api.artifacts().await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], json!(id));
    assert_eq!(server.blob_files(), blobs, "the refused upload left a blob");

    let dir3 = Workdir::new();
    let disjoint = dir3.rootfs("release-1", &["dev-c", "dev-d"], &[]);
    let id2 = api.upload_ok(&disjoint.path, "").await;
    assert_ne!(id, id2);
    assert_eq!(api.artifacts().await.len(), 2);
}

#[tokio::test]
async fn upload_over_max_artifact_size_is_refused_with_413() {
    let server = Server::start_with(&["--max-artifact-size", "20000"]).await;
    let work = Workdir::new();
    let api = server.as_user(TENANT);
    let big = work.rootfs("big", &["dev-a"], &[]);
    assert!(big.bytes().len() > 20000);
    api.upload_refused(&big.path, StatusCode::PAYLOAD_TOO_LARGE)
        .await;
    assert!(api.artifacts().await.is_empty());
    assert!(server.blob_files().is_empty());

    let small = work.single_file("small", &["dev-a"], &[]);
    assert!(small.bytes().len() <= 20000);
    api.upload_ok(&small.path, "").await;
}

#[tokio::test]
async fn upload_over_storage_limit_is_refused_with_413() {
    let work = Workdir::new();
    let first = work.rootfs("first", &["dev-a"], &[]);
    let second = work.rootfs("second", &["dev-a"], &[]);
    let first_size = first.bytes().len();
    let limit = (first_size + first_size / 2).to_string();
    let server = Server::start_with(&["--storage-limit", &limit]).await;
    let api = server.as_user(TENANT);
    api.upload_ok(&first.path, "").await;
    api.upload_refused(&second.path, StatusCode::PAYLOAD_TOO_LARGE)
        .await;
    assert_eq!(api.artifacts().await.len(), 1);
    assert_eq!(server.blob_files().len(), 1);
    let storage = api.storage().await;
    assert_eq!(
        storage,
        json!({"limit": limit.parse::<u64>().unwrap(), "usage": first_size})
    );
    // The limit is per tenant: another tenant still has room.
    server.as_user("other").upload_ok(&second.path, "").await;
}

#[tokio::test]
async fn description_can_be_edited_up_to_4096_characters() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let built = work.rootfs("editable", &["dev-a"], &[]);
    let id = api.upload_ok(&built.path, "old").await;
    let path = format!("/artifacts/{id}");

    let resp = api.put_json(&path, &json!({"description": "new"})).await;
    no_body(resp, StatusCode::NO_CONTENT).await;
    assert_eq!(api.artifact(&id).await["description"], json!("new"));

    let longest = "é".repeat(4096);
    let resp = api.put_json(&path, &json!({"description": longest})).await;
    no_body(resp, StatusCode::NO_CONTENT).await;
    assert_eq!(api.artifact(&id).await["description"], json!(longest));

    let too_long = "x".repeat(4097);
    let resp = api.put_json(&path, &json!({"description": too_long})).await;
    assert_error(resp, StatusCode::BAD_REQUEST).await;
    assert_eq!(api.artifact(&id).await["description"], json!(longest));
}

#[tokio::test]
async fn edit_needs_json_and_an_existing_artifact() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let id = api
        .upload_ok(&work.rootfs("x", &["dev-a"], &[]).path, "kept")
        .await;
    let path = format!("/artifacts/{id}");

    let plain = api
        .request(Method::PUT, &path)
        .header("content-type", "text/plain")
        .body(r#"{"description": "new"}"#);
    assert_error(common::send(plain).await, StatusCode::BAD_REQUEST).await;
    let malformed = api
        .request(Method::PUT, &path)
        .header("content-type", "application/json")
        .body("{");
    assert_error(common::send(malformed).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(api.artifact(&id).await["description"], json!("kept"));
    // The contract marks the body optional: none reads as `{}`, which clears the description.
    let bodiless = api.request(Method::PUT, &path);
    no_body(common::send(bodiless).await, StatusCode::NO_CONTENT).await;
    assert_eq!(api.artifact(&id).await["description"], json!(""));

    let unknown = format!("/artifacts/{}", uuid::Uuid::new_v4());
    let resp = api.put_json(&unknown, &json!({"description": "d"})).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn deleted_artifact_is_gone_with_its_blob() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let id = api
        .upload_ok(&work.rootfs("doomed", &["dev-a"], &[]).path, "")
        .await;
    let blobs = server.blob_files();
    assert_eq!(blobs.len(), 1);
    assert!(blobs[0].to_string_lossy().contains(&id), "{blobs:?}");

    no_body(
        api.delete(&format!("/artifacts/{id}")).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_error(
        api.get(&format!("/artifacts/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        api.delete(&format!("/artifacts/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(api.artifacts().await.is_empty());
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
    assert_eq!(api.storage().await["usage"], json!(0));
}

#[tokio::test]
async fn unknown_artifact_ids_are_404_and_malformed_ones_400_where_the_contract_lists_it() {
    let server = Server::start().await;
    let api = server.as_user(TENANT);
    let unknown = uuid::Uuid::new_v4().to_string();
    for (id, status) in [
        (unknown.as_str(), StatusCode::NOT_FOUND),
        ("not-a-uuid", StatusCode::BAD_REQUEST),
    ] {
        assert_error(api.get(&format!("/artifacts/{id}")).await, status).await;
        let link = api.get(&format!("/artifacts/{id}/download")).await;
        assert_error(link, status).await;
        // DELETE lists no 400: an id that is no UUID names no artifact.
        let delete = api.delete(&format!("/artifacts/{id}")).await;
        assert_error(delete, StatusCode::NOT_FOUND).await;
        let edit = json!({"description": "x"});
        let put = api.put_json(&format!("/artifacts/{id}"), &edit).await;
        assert_error(put, status).await;
    }
}

#[tokio::test]
async fn releases_group_artifacts_by_name_and_filter_by_name() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let a1 = api
        .upload_ok(&work.rootfs("app-1", &["dev-a"], &[]).path, "")
        .await;
    let other = Workdir::new();
    let a2 = api
        .upload_ok(&other.rootfs("app-1", &["dev-b"], &[]).path, "")
        .await;
    let b = api
        .upload_ok(&work.rootfs("app-2", &["dev-a"], &[]).path, "")
        .await;

    // In upload order, as upstream lists a release's artifacts.
    let ids = |release: &Value| -> Vec<String> {
        release["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let app1 = vec![a1.clone(), a2.clone()];

    let all = json_ok(api.get("/deployments/releases").await).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let by_name = |n: &str| all.iter().find(|r| r["name"] == json!(n)).unwrap().clone();
    assert_eq!(ids(&by_name("app-1")), app1);
    assert_eq!(ids(&by_name("app-2")), vec![b.clone()]);
    assert_eq!(by_name("app-2")["artifacts"][0], api.artifact(&b).await);

    let filtered = json_ok(api.get("/deployments/releases?name=app-1").await).await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["name"], json!("app-1"));
    assert_eq!(ids(&filtered[0]), app1);
    let none = json_ok(api.get("/deployments/releases?name=nope").await).await;
    assert_eq!(none, json!([]));
    // An empty filter (a form's blank field) filters nothing.
    let blank = json_ok(api.get("/deployments/releases?name=").await).await;
    assert_eq!(blank.as_array().unwrap().len(), 2, "{blank:?}");
}

#[tokio::test]
async fn storage_usage_is_the_sum_of_artifact_sizes() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    assert_eq!(api.storage().await, json!({"limit": 0, "usage": 0}));
    let a = work.rootfs("one", &["dev-a"], &[]);
    let b = work.single_file("two", &["dev-a"], &[]);
    api.upload_ok(&a.path, "").await;
    api.upload_ok(&b.path, "").await;
    let listed: u64 = api
        .artifacts()
        .await
        .iter()
        .map(|a| a["size"].as_u64().unwrap())
        .sum();
    let expected = (a.bytes().len() + b.bytes().len()) as u64;
    assert_eq!(listed, expected);
    assert_eq!(api.storage().await, json!({"limit": 0, "usage": expected}));
}

#[tokio::test]
async fn tenants_cannot_see_each_others_artifacts() {
    let (server, work) = (Server::start().await, Workdir::new());
    let a = server.as_user("tenant-a");
    let b = server.as_user("tenant-b");
    let built = work.rootfs("shared-name", &["dev-a"], &[]);
    let id = a.upload_ok(&built.path, "").await;
    let path = format!("/artifacts/{id}");

    assert!(b.artifacts().await.is_empty());
    assert_error(b.get(&path).await, StatusCode::NOT_FOUND).await;
    assert_error(
        b.get(&format!("{path}/download")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let put = b.put_json(&path, &json!({"description": "hijacked"})).await;
    assert_error(put, StatusCode::NOT_FOUND).await;
    assert_error(b.delete(&path).await, StatusCode::NOT_FOUND).await;
    assert_eq!(
        json_ok(b.get("/deployments/releases").await).await,
        json!([])
    );
    assert_eq!(b.storage().await["usage"], json!(0));

    // The same release in another tenant is no conflict.
    b.upload_ok(&built.path, "").await;
    assert_eq!(a.artifact(&id).await["description"], json!(""));
    assert_eq!(a.artifacts().await.len(), 1);
}

#[tokio::test]
async fn request_id_is_echoed_and_errors_carry_it() {
    let server = Server::start().await;
    let api = server.as_user(TENANT);
    let generated = api.get("/artifacts").await;
    assert!(!common::request_id(&generated).is_empty());

    let sent = api
        .request(Method::GET, "/artifacts")
        .header("X-MEN-RequestID", "test-request-42");
    assert_eq!(
        common::request_id(&common::send(sent).await),
        "test-request-42"
    );

    let missing = format!("/artifacts/{}", uuid::Uuid::new_v4());
    let failing = api
        .request(Method::GET, &missing)
        .header("X-MEN-RequestID", "test-request-43");
    let resp = common::send(failing).await;
    assert_eq!(common::request_id(&resp), "test-request-43");
    assert_error(resp, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn unknown_route_is_404_with_an_error_body() {
    let server = Server::start().await;
    let api = server.as_user(TENANT);
    assert_error(api.get("/no-such-thing").await, StatusCode::NOT_FOUND).await;
    let raw = common::send(server.http().get(server.url("/nowhere"))).await;
    assert_error(raw, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn management_routes_need_a_user_token() {
    let server = Server::start().await;
    let anonymous = server.anonymous();
    assert_error(anonymous.get("/artifacts").await, StatusCode::UNAUTHORIZED).await;
    assert_error(
        anonymous.get("/limits/storage").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let garbage = server.api("not-a-jwt".into());
    assert_error(garbage.get("/artifacts").await, StatusCode::UNAUTHORIZED).await;
    let forged = server.api(server.forged_user_token(TENANT));
    assert_error(forged.get("/artifacts").await, StatusCode::UNAUTHORIZED).await;

    let device = server.api(server.device_token(TENANT));
    assert_error(device.get("/artifacts").await, StatusCode::FORBIDDEN).await;
    let work = Workdir::new();
    let built = work.single_file("from-device", &["dev-a"], &[]);
    assert_error(device.upload(&built.path, "").await, StatusCode::FORBIDDEN).await;
    assert!(server.as_user(TENANT).artifacts().await.is_empty());
}

#[tokio::test]
async fn artifacts_survive_a_restart() {
    let (mut server, work) = (Server::start().await, Workdir::new());
    let built = work.rootfs("durable", &["dev-a"], &[]);
    let id = server.as_user(TENANT).upload_ok(&built.path, "kept").await;
    let before = server.as_user(TENANT).artifact(&id).await;

    server.restart().await;
    let api = server.as_user(TENANT);
    let list = api.artifacts().await;
    assert_eq!(list.len(), 1);
    assert_eq!(find(&list, &id), &before);
    let downloaded = api.download(&id).await;
    assert_eq!(sha256_hex(&downloaded), sha256_hex(&built.bytes()));
}

const ARGS: &str = r#"{"dest_dir": "/etc/app", "filename": "app.conf"}"#;

#[tokio::test]
async fn generated_single_file_artifact_is_a_valid_mender_artifact() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let content = b"key = value\n".repeat(100);
    let fields = [
        ("name", "generated-1.0"),
        ("description", "made by rollout"),
        ("device_types_compatible", "dev-a,dev-b"),
        ("type", "single_file"),
        ("args", ARGS),
    ];
    let id = created_id(api.generate(&fields, &content).await).await;

    let a = api.artifact(&id).await;
    assert_eq!(a["name"], json!("generated-1.0"));
    assert_eq!(a["description"], json!("made by rollout"));
    assert_eq!(a["device_types_compatible"], json!(["dev-a", "dev-b"]));
    assert_eq!(update(&a)["type_info"]["type"], json!("single-file"));

    let file = work.file("generated.mender", &api.download(&id).await);
    assert_eq!(a["size"], json!(std::fs::metadata(&file).unwrap().len()));
    let file = common::utf8(&file);
    let validated = common::run_ok("mender-artifact", ["validate", file], work.path());
    assert!(validated.contains("validated successfully"), "{validated}");
    let read = ["read", "--no-progress", file];
    let read = common::run_ok("mender-artifact", read, work.path());
    let expected = [
        "Name: generated-1.0",
        "Compatible devices: '[dev-a dev-b]'",
        "Type:   single-file",
        // The uploaded file is the payload.
        &sha256_hex(&content),
    ];
    common::assert_contains_all(&read, &expected);
}

#[tokio::test]
async fn generate_rejects_incomplete_requests() {
    let server = Server::start().await;
    let api = server.as_user(TENANT);
    let base = [
        ("name", "gen"),
        ("device_types_compatible", "dev-a"),
        ("type", "single_file"),
        ("args", ARGS),
    ];
    let cases: [(&str, Option<&str>); 5] = [
        ("type", Some("rootfs_image")),
        ("name", None),
        ("args", None),
        ("args", Some("not json")),
        ("args", Some(r#"{"filename": "app.conf"}"#)),
    ];
    for (field, value) in cases {
        let fields: Vec<(&str, &str)> = base
            .iter()
            .filter(|(k, _)| *k != field)
            .copied()
            .chain(value.map(|v| (field, v)))
            .collect();
        assert_error(api.generate(&fields, b"x").await, StatusCode::BAD_REQUEST).await;
    }
    assert!(api.artifacts().await.is_empty());
    assert!(server.blob_files().is_empty());
}

#[tokio::test]
async fn a_part_after_the_file_is_refused_and_stores_nothing() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let bytes = std::fs::read(&work.rootfs("late", &["dev-a"], &[]).path).unwrap();
    let file = reqwest::multipart::Part::bytes(bytes)
        .file_name("late.mender")
        .mime_str("application/octet-stream")
        .unwrap();
    let form = Form::new()
        .part("artifact", file)
        .text("description", "sent too late");
    let refused = api.post_form("/artifacts", form).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let error = refused.json::<Value>().await.unwrap()["error"].clone();
    assert!(error.as_str().unwrap().contains("last part"), "{error}");

    // A generation whose fields come after the file says so.
    let file = reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("app.conf");
    let form = Form::new()
        .text("name", "gen")
        .part("file", file)
        .text("type", "single_file");
    let refused = api.post_form("/artifacts/generate", form).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let error = refused.json::<Value>().await.unwrap()["error"].clone();
    assert!(error.as_str().unwrap().contains("last part"), "{error}");

    assert!(api.artifacts().await.is_empty());
    assert!(server.blob_files().is_empty());
    let usage = json_ok(api.get("/limits/storage").await).await;
    assert_eq!(usage["usage"], json!(0));
}

#[tokio::test]
async fn artifacts_list_pages_filters_and_sorts_as_mender_cli_2_reads_it() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let other = Workdir::new();
    let b1 = api
        .upload_ok(
            &work.single_file("beta-1", &["dev-a"], &[]).path,
            "Nightly build",
        )
        .await;
    let a1 = api
        .upload_ok(
            &other.single_file("alpha-1", &["dev-b", "dev-c"], &[]).path,
            "stable",
        )
        .await;
    let a2 = api
        .upload_ok(
            &work.single_file("alpha-2", &["dev-a"], &[]).path,
            "stable too",
        )
        .await;
    let get = |query: &str| {
        let path = format!("/artifacts/list?{query}");
        let api = &api;
        async move { api.get(&path).await }
    };
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("an array")
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // Default: by name ascending, 20 a page.
    let resp = get("").await;
    assert_eq!(resp.headers()["x-total-count"], "3");
    assert_eq!(
        ids(&json_ok(resp).await),
        [a1.as_str(), a2.as_str(), b1.as_str()]
    );
    let resp = get("per_page=2&page=2").await;
    let link = resp.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.contains("rel=\"prev\"") && link.contains("rel=\"last\""),
        "{link}"
    );
    assert_eq!(ids(&json_ok(resp).await), [b1.as_str()]);
    let desc = json_ok(get("sort=name:desc").await).await;
    assert_eq!(ids(&desc), [b1.as_str(), a2.as_str(), a1.as_str()]);
    let newest = json_ok(get("sort=modified:desc").await).await;
    assert_eq!(ids(&newest), [a2.as_str(), a1.as_str(), b1.as_str()]);
    // Filters: case-insensitive substrings.
    assert_eq!(
        ids(&json_ok(get("name=ALPHA").await).await),
        [a1.as_str(), a2.as_str()]
    );
    assert_eq!(
        ids(&json_ok(get("description=nightly").await).await),
        [b1.as_str()]
    );
    assert_eq!(
        ids(&json_ok(get("device_type=dev-c").await).await),
        [a1.as_str()]
    );
    let both = json_ok(get("name=alpha&device_type=dev-a").await).await;
    assert_eq!(ids(&both), [a2.as_str()]);
    // Lenient, as upstream: bad paging and unknown sorts fall back to the defaults.
    let lenient = json_ok(get("page=0&per_page=9999&sort=size:up").await).await;
    assert_eq!(ids(&lenient), [a1.as_str(), a2.as_str(), b1.as_str()]);
    // The items are the same Artifact objects as /artifacts/{id}.
    assert_eq!(
        json_ok(get("name=beta").await).await[0],
        api.artifact(&b1).await
    );
    // Another tenant's list is empty.
    let theirs = server.as_user("globex").get("/artifacts/list").await;
    assert_eq!(theirs.headers()["x-total-count"], "0");
}

#[tokio::test]
async fn releases_list_filters_and_sorts_with_upstreams_v1_keys() {
    let (server, work) = (Server::start().await, Workdir::new());
    let api = server.as_user(TENANT);
    let other = Workdir::new();
    let r1 = api
        .upload_ok(&work.single_file("app-1", &["dev-a"], &[]).path, "first")
        .await;
    let r2 = api
        .upload_ok(&other.single_file("app-1", &["dev-b"], &[]).path, "")
        .await;
    api.upload_ok(&work.rootfs("os-7", &["dev-a"], &[]).path, "base system")
        .await;
    let get = |query: &str| {
        let path = format!("/deployments/releases/list?{query}");
        let api = &api;
        async move { api.get(&path).await }
    };
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("an array")
            .iter()
            .map(|r| r["Name"].as_str().unwrap().to_owned())
            .collect()
    };
    let resp = get("").await;
    assert_eq!(resp.headers()["x-total-count"], "2");
    let all = json_ok(resp).await;
    assert_eq!(names(&all), ["app-1", "os-7"]);
    let app = &all[0];
    assert_eq!(app["ArtifactsCount"], json!(2));
    assert_eq!(app["Artifacts"][0]["id"], json!(r1));
    assert_eq!(app["Artifacts"][1]["id"], json!(r2));
    assert_eq!(app["tags"], json!([]));
    common::assert_rfc3339(&app["Modified"]);

    assert_eq!(
        names(&json_ok(get("sort=name:desc").await).await),
        ["os-7", "app-1"]
    );
    let by_count = json_ok(get("sort=artifacts_count:asc").await).await;
    assert_eq!(names(&by_count), ["os-7", "app-1"]);
    assert_eq!(names(&json_ok(get("name=AP").await).await), ["app-1"]);
    assert_eq!(
        names(&json_ok(get("name=pp").await).await),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&json_ok(get("description=BASE").await).await),
        ["os-7"]
    );
    assert_eq!(
        names(&json_ok(get("device_type=dev-b").await).await),
        ["app-1"]
    );
    let rootfs = json_ok(get("update_type=rootfs-image").await).await;
    assert_eq!(names(&rootfs), ["os-7"]);
    let paged = get("per_page=1&page=2").await;
    assert_eq!(paged.headers()["x-total-count"], "2");
    assert_eq!(names(&json_ok(paged).await), ["os-7"]);
}
