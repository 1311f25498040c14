//! Malformed input gets a clear 4xx with the usual error body, changes nothing, and never
//! takes the server down.

mod common;

use std::time::Duration;

use common::raw::status_within;
use common::{assert_error, json_ok, send, Server, MANAGEMENT};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn malformed_requests_get_4xx_and_leave_the_server_healthy() {
    let server = Server::start().await;
    let user = server.as_user("acme");

    let no_boundary = user
        .request(Method::POST, "/artifacts")
        .header("content-type", "multipart/form-data")
        .body("garbage");
    assert_error(send(no_boundary).await, StatusCode::BAD_REQUEST).await;

    for body in [
        json!({"name": "d", "artifact_name": "a", "devices": ["a\u{0}b"]}),
        json!({"name": "d", "artifact_name": "a", "devices": ["a"], "retries": -1}),
        json!({"name": "d", "artifact_name": "a", "devices": ["a"], "phases": [{"batch_size": 99_999_999_999u64}]}),
        json!({"name": "d", "artifact_name": "a", "devices": "a"}),
        json!({"name": "d", "artifact_name": "a", "devices": ["a", " "]}),
        json!({"name": "d", "artifact_name": "a", "devices": ["d".repeat(1025)]}),
    ] {
        let req = user
            .request(Method::POST, "/deployments")
            .header("content-type", "application/json")
            .body(body.to_string());
        assert_error(send(req).await, StatusCode::BAD_REQUEST).await;
    }

    let huge_page = user
        .get("/deployments?page=99999999999999999&per_page=500")
        .await;
    assert_eq!(json_ok(huge_page).await, json!([]));
    assert_error(
        user.get("/deployments?created_after=99999999999999999999")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    assert_eq!(json_ok(user.get("/deployments").await).await, json!([]));
    assert_eq!(json_ok(user.get("/artifacts").await).await, json!([]));
}

/// An error message quotes at most 256 characters of any input (README, "Limits"): a
/// huge input gets a small 400, not itself sent back.
#[tokio::test]
async fn an_error_quotes_at_most_256_characters_of_its_input() {
    let server = Server::start().await;
    let user = server.as_user("acme");
    let huge = "x".repeat(300_000);
    let body = json!({"name": "d", "artifact_name": "a", "devices": huge});
    let req = user
        .request(Method::POST, "/deployments")
        .header("content-type", "application/json")
        .body(body.to_string());
    let message = assert_error(send(req).await, StatusCode::BAD_REQUEST).await;
    assert!(message.contains(&"x".repeat(256)), "{message}");
    assert!(!message.contains(&"x".repeat(257)), "{}", message.len());
    assert!(
        message.contains("expected"),
        "the reason is kept: {message}"
    );

    let id = "y".repeat(60_000);
    let message = assert_error(
        user.get(&format!("/artifacts/{id}")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(message.len() < 600, "{} bytes", message.len());
    assert_eq!(json_ok(user.get("/deployments").await).await, json!([]));
}

/// A JSON body whose `Content-Length` is over the limit is refused at once (413), not
/// after the client has sent it, or after the body-read timeout if it never does.
#[tokio::test]
async fn a_body_declared_over_the_limit_gets_413_before_it_is_sent() {
    let server = Server::start_with(&["--max-json-body", "1K"]).await;
    let user_token = server.user_token("acme");
    let device_token = server.device_token("acme");
    let deployments = format!("{MANAGEMENT}/deployments");
    let status = "/api/devices/v1/deployments/device/deployments/\
                  0b7a4d5c-8d7c-4a35-9b1e-2f3c4d5e6f70/status";
    for (method, path, token) in [
        ("POST", deployments.as_str(), &user_token),
        ("PUT", status, &device_token),
    ] {
        let mut stream = server.connect().await;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let got = status_within(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(got, Some(413), "{method} {path}");
    }
    assert_eq!(
        json_ok(server.as_user("acme").get("/deployments").await).await,
        json!([])
    );
}

#[tokio::test]
async fn a_wrong_method_gets_405_with_the_allowed_ones() {
    let server = Server::start().await;
    let user = server.as_user("acme");
    let cases = [
        (Method::DELETE, "/artifacts", "GET, POST"),
        (
            Method::POST,
            "/artifacts/0b7a4d5c-8d7c-4a35-9b1e-2f3c4d5e6f70",
            "GET, PUT, DELETE",
        ),
        (Method::PUT, "/deployments/releases", "GET"),
    ];
    for (method, path, allowed) in cases {
        let refused = send(user.request(method.clone(), path)).await;
        assert_eq!(
            refused.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allowed),
            "{method} {path}"
        );
        assert_error(refused, StatusCode::METHOD_NOT_ALLOWED).await;
    }
}
