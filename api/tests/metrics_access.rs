//! Who may read `/metrics` and what a scrape costs: the API address refuses it without the
//! token of `--metrics-token-file`, `--metrics-listen` serves it without one on an address
//! of its own, and the per-tenant artifact bytes follow uploads and deletes without the
//! scrape reading the store.

mod common;

use common::{assert_error, no_body, send, Server, Workdir};
use reqwest::StatusCode;
use serde_json::json;

/// `GET url` with an optional bearer token, asserting 200; the text.
async fn scrape(server: &Server, url: &str, token: Option<&str>) -> String {
    let mut req = server.http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = send(req).await;
    let status = resp.status();
    let text = resp.text().await.expect("reading /metrics");
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    text
}

/// The value of the series `name{labels}` in a scrape, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

#[tokio::test]
async fn metrics_on_the_api_address_are_refused_without_a_configured_token() {
    let server = Server::start().await;
    let url = server.url("/metrics");
    let msg = assert_error(
        send(server.http().get(&url)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(
        msg.contains("--metrics-token-file") && msg.contains("--metrics-listen"),
        "{msg}"
    );
    // No token can open it while none is configured, not even an operator's.
    let user = server.http().get(&url).bearer_auth(server.user_token(""));
    assert_error(send(user).await, StatusCode::UNAUTHORIZED).await;
    let health = send(server.http().get(server.url("/health"))).await;
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_on_the_api_address_need_the_configured_token() {
    let work = Workdir::new();
    let token = "f3a9c1d07e5b42a8b6c0d9e1f2a3b4c5";
    let file = work.file("metrics.token", format!("{token}\n").as_bytes());
    let server = Server::start_with(&["--metrics-token-file", file.to_str().unwrap()]).await;
    let url = server.url("/metrics");
    for wrong in [
        "",
        "f3a9c1d07e5b42a8b6c0d9e1f2a3b4c",
        "f3a9c1d07e5b42a8b6c0d9e1f2a3b4c55",
    ] {
        let req = server.http().get(&url).bearer_auth(wrong);
        assert_error(send(req).await, StatusCode::UNAUTHORIZED).await;
    }
    let basic = server
        .http()
        .get(&url)
        .basic_auth("prometheus", Some(token));
    assert_error(send(basic).await, StatusCode::UNAUTHORIZED).await;
    let text = scrape(&server, &url, Some(token)).await;
    assert!(text.contains("rollout_deployments{"), "{text}");
}

#[tokio::test]
async fn an_empty_token_file_stops_the_server_from_starting() {
    let work = Workdir::new();
    let file = work.file("metrics.token", b"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-token-file"])
        .arg(&file)
        .arg("--data-dir")
        .arg(work.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics token file"), "{err}");
}

#[tokio::test]
async fn metrics_listen_serves_metrics_without_a_token_and_nothing_else() {
    let server = Server::start_with(&["--metrics-listen", "127.0.0.1:0"]).await;
    let metrics = server.metrics_base();
    assert_ne!(metrics, server.base);
    let text = scrape(&server, &format!("{metrics}/metrics"), None).await;
    assert!(text.contains("rollout_deployments{"), "{text}");
    assert!(
        text.lines().any(|l| l == "rollout_deployment_actors 0"),
        "a fresh server says it runs no actor: {text}"
    );
    for path in ["/api/management/v1/deployments/artifacts", "/health"] {
        let resp = send(server.http().get(format!("{metrics}{path}"))).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // The API address still refuses, since no token is configured.
    let api = send(server.http().get(server.url("/metrics"))).await;
    assert_error(api, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn artifact_bytes_follow_uploads_and_deletes_and_survive_a_restart() {
    let mut server = Server::start_with(&["--metrics-listen", "127.0.0.1:0"]).await;
    let work = Workdir::new();
    let series = r#"rollout_artifact_bytes{tenant="acme"}"#;
    let bytes = |text: &str| sample(text, series);
    let url = |server: &Server| format!("{}/metrics", server.metrics_base());
    assert_eq!(bytes(&scrape(&server, &url(&server), None).await), None);

    let user = server.as_user("acme");
    let first = work.single_file("bytes-1", &["dev-a"], &[]);
    let second = work.single_file("bytes-2", &["dev-a"], &[]);
    let a = user.upload_ok(&first.path, "").await;
    let b = user.upload_ok(&second.path, "").await;
    let size = |id: &str| {
        let user = &user;
        let id = id.to_owned();
        async move { user.artifact(&id).await["size"].as_u64().unwrap() as f64 }
    };
    let (size_a, size_b) = (size(&a).await, size(&b).await);
    let text = scrape(&server, &url(&server), None).await;
    assert_eq!(bytes(&text), Some(size_a + size_b), "{text}");

    no_body(
        user.delete(&format!("/artifacts/{a}")).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(
        bytes(&scrape(&server, &url(&server), None).await),
        Some(size_b)
    );
    // An unfinished deployment: its actor is resumed at the next start.
    let body = json!({"name": "resumed", "artifact_name": "bytes-2", "devices": ["d1"]});
    common::fleet::deployment_id(common::fleet::create(&user, &body).await).await;
    drop(user);

    server.restart().await;
    let text = scrape(&server, &url(&server), None).await;
    assert_eq!(bytes(&text), Some(size_b));
    // What the start published (the resumed actor) is there, not lost before the
    // recorder was installed.
    assert_eq!(
        sample(&text, "rollout_deployment_actors"),
        Some(1.0),
        "{text}"
    );
}

/// The probes a load balancer or Kubernetes uses: no token needed, 200 while serving.
#[tokio::test]
async fn liveness_and_readiness_probes_answer_without_a_token() {
    let server = Server::start().await;
    for path in ["/health", "/health/live", "/health/ready"] {
        let resp = send(server.http().get(server.url(path))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"status": "ok"}), "{path}");
    }
}
