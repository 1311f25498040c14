//! The OpenAPI document the server serves: it is the committed `api/openapi.yaml`, it
//! documents every route rollout has, and every operation it documents is one the server
//! routes. (Whether the answers match the document is what `scripts/schemathesis` checks.)

mod common;

use std::collections::BTreeSet;

use common::{send, Server};
use reqwest::{Method, StatusCode};

const DOCUMENT_PATH: &str = "/api/management/v1/deployments/openapi.yaml";

/// The committed document, which the server must serve unchanged.
const COMMITTED: &str = include_str!("../openapi.yaml");

/// Every operation of the server (but `/metrics`, left out of the document on purpose).
/// A route added to the server belongs here and in the document.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/management/v1/deployments/artifacts"),
    ("post", "/api/management/v1/deployments/artifacts"),
    ("post", "/api/management/v1/deployments/artifacts/generate"),
    ("get", "/api/management/v1/deployments/artifacts/list"),
    ("get", "/api/management/v1/deployments/artifacts/{id}"),
    ("put", "/api/management/v1/deployments/artifacts/{id}"),
    ("delete", "/api/management/v1/deployments/artifacts/{id}"),
    (
        "get",
        "/api/management/v1/deployments/artifacts/{id}/download",
    ),
    ("get", "/api/management/v1/deployments/deployments/releases"),
    (
        "get",
        "/api/management/v1/deployments/deployments/releases/list",
    ),
    ("get", "/api/management/v1/deployments/limits/storage"),
    ("post", "/api/management/v1/deployments/deployments"),
    ("get", "/api/management/v1/deployments/deployments"),
    (
        "post",
        "/api/management/v1/deployments/deployments/group/{name}",
    ),
    ("post", "/api/management/v2/deployments/deployments"),
    (
        "get",
        "/api/management/v1/deployments/deployments/devices/{id}",
    ),
    (
        "delete",
        "/api/management/v1/deployments/deployments/devices/{id}",
    ),
    (
        "post",
        "/api/management/v1/deployments/deployments/statistics/list",
    ),
    ("get", "/api/management/v1/deployments/deployments/{id}"),
    ("patch", "/api/management/v1/deployments/deployments/{id}"),
    (
        "get",
        "/api/management/v1/deployments/deployments/{id}/devices",
    ),
    (
        "get",
        "/api/management/v1/deployments/deployments/{id}/devices/list",
    ),
    (
        "get",
        "/api/management/v1/deployments/deployments/{id}/device_list",
    ),
    (
        "get",
        "/api/management/v1/deployments/deployments/{id}/statistics",
    ),
    (
        "get",
        "/api/management/v1/deployments/deployments/{id}/devices/{device_id}/log",
    ),
    (
        "put",
        "/api/management/v1/deployments/deployments/{id}/status",
    ),
    (
        "post",
        "/api/management/v1/deployments/deployments/{id}/pause",
    ),
    (
        "post",
        "/api/management/v1/deployments/deployments/{id}/resume",
    ),
    (
        "get",
        "/api/management/v1/deployments/deployments/{id}/events",
    ),
    (
        "post",
        "/api/management/v1/deployments/deployments/{id}/phases/{n}/approve",
    ),
    ("get", "/api/devices/v1/deployments/device/deployments/next"),
    (
        "post",
        "/api/devices/v1/deployments/device/deployments/next",
    ),
    (
        "put",
        "/api/devices/v1/deployments/device/deployments/{id}/status",
    ),
    (
        "put",
        "/api/devices/v1/deployments/device/deployments/{id}/log",
    ),
    (
        "post",
        "/api/devices/v2/deployments/device/deployments/next",
    ),
    (
        "get",
        "/api/devices/v2/deployments/device/deployments/{id}/update_control_map",
    ),
    ("post", "/api/devices/v1/authentication/auth_requests"),
    ("get", "/api/management/v2/devauth/devices"),
    ("post", "/api/management/v2/devauth/devices"),
    ("get", "/api/management/v2/devauth/devices/{id}"),
    ("delete", "/api/management/v2/devauth/devices/{id}"),
    (
        "put",
        "/api/management/v2/devauth/devices/{id}/auth/{aid}/status",
    ),
    ("put", "/api/devices/v1/inventory/device/attributes"),
    ("patch", "/api/devices/v1/inventory/device/attributes"),
    ("post", "/api/management/v1/useradm/auth/login"),
    ("get", "/api/management/v1/inventory/devices"),
    ("get", "/api/management/v1/inventory/devices/{id}"),
    ("delete", "/api/management/v1/inventory/devices/{id}"),
    ("get", "/api/management/v1/inventory/devices/{id}/group"),
    ("put", "/api/management/v1/inventory/devices/{id}/group"),
    (
        "delete",
        "/api/management/v1/inventory/devices/{id}/group/{name}",
    ),
    ("get", "/api/management/v1/inventory/groups"),
    ("get", "/api/management/v1/inventory/groups/{name}/devices"),
    ("post", "/api/management/v2/inventory/filters/search"),
    ("get", "/api/management/v2/inventory/filters/attributes"),
    ("post", "/api/management/v2/inventory/filters"),
    ("get", "/api/management/v2/inventory/filters"),
    ("get", "/api/management/v2/inventory/filters/{id}"),
    ("delete", "/api/management/v2/inventory/filters/{id}"),
    ("get", "/api/management/v2/inventory/filters/{id}/search"),
    ("get", "/health"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/api/management/v1/deployments/openapi.yaml"),
    ("get", "/download/{id}"),
    ("head", "/download/{id}"),
];

/// The (method, path) pairs of the document's `paths`, read from its layout (paths at two
/// spaces of indent, their methods at four), which the file's header comment fixes.
fn documented(doc: &str) -> BTreeSet<(String, String)> {
    const METHODS: [&str; 6] = ["get", "head", "put", "post", "patch", "delete"];
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<&str> = None;
    for line in doc.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            path = Some(p);
        } else if let Some(m) = line.strip_prefix("    ").and_then(|m| m.strip_suffix(':')) {
            if let (true, Some(p)) = (METHODS.contains(&m), path) {
                out.insert((m.to_owned(), format!("/{p}")));
            }
        }
    }
    out
}

/// `path` with each `{param}` replaced by a fresh UUID.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                uuid::Uuid::new_v4().to_string()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_served_document_is_the_committed_openapi_3_document() {
    let server = Server::start().await;
    let resp = send(server.http().get(server.url(DOCUMENT_PATH))).await;
    assert_eq!(resp.status(), StatusCode::OK, "served without a token");
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/yaml"));
    let body = resp.text().await.expect("reading the document");
    assert_eq!(
        body, COMMITTED,
        "the server serves api/openapi.yaml as committed"
    );
    assert!(
        body.lines().any(|l| l.starts_with("openapi: 3.0.")),
        "an OpenAPI 3.0 document"
    );
}

#[tokio::test]
async fn every_route_of_the_server_is_documented() {
    let doc = documented(COMMITTED);
    assert!(doc.len() >= ROUTES.len(), "the document's paths: {doc:?}");
    let missing: Vec<_> = ROUTES
        .iter()
        .filter(|(m, p)| !doc.contains(&((*m).to_owned(), (*p).to_owned())))
        .collect();
    assert!(missing.is_empty(), "not in api/openapi.yaml: {missing:?}");
}

#[tokio::test]
async fn every_documented_operation_is_routed_by_the_server() {
    let server = Server::start().await;
    for (method, path) in documented(COMMITTED) {
        let url = server.url(&concrete(&path));
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
        let resp = send(server.http().request(method.clone(), &url)).await;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        // Without a token or a body, a routed operation answers 401, 400 or 403 (or 200);
        // warp answers an unrouted one with "no such route", a wrong method with 405.
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && !body.contains("no such route"),
            "{method} {path}: {status} {body}"
        );
    }
}

#[test]
fn the_layout_reader_finds_paths_and_methods_only() {
    let doc = "openapi: 3.0.3\npaths:\n  /a/{id}:\n    parameters:\n      - x\n    get:\n      \
               responses: {}\n    put:\n      summary: x\n  /b:\n    post:\n      x: 1\n\
               components:\n  /c:\n    get:\n";
    let got: Vec<_> = documented(doc).into_iter().collect();
    let want = [("get", "/a/{id}"), ("post", "/b"), ("put", "/a/{id}")];
    let want: Vec<_> = want
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(got, want);
}
