//! Deployments and simulated devices for the API tests: a server with an uploaded release,
//! deployment helpers for the management API, device clients for the device API (each with
//! a token for its own device id), and a hard crash of the server process.

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use super::{json_ok, mint_token, send, Api, Built, Server, Workdir};

/// The release uploaded by [`Fleet::start`].
pub const RELEASE: &str = "app-1.0";
/// Its device type.
pub const DEVICE_TYPE: &str = "dev-a";
/// What simulated devices run before they update.
pub const OLD_RELEASE: &str = "app-0.9";
/// Base path of the device deployments API.
pub const DEVICE_API: &str = "/api/devices/v1/deployments/device/deployments";
/// Base path of its v2 (the check for an update with control maps, and their refresh).
pub const DEVICE_API_V2: &str = "/api/devices/v2/deployments/device/deployments";

impl Server {
    /// A device token for device `device` of `tenant`, signed by the server's key
    /// (`rollout token device`), like [`Server::device_token`] but with a chosen id.
    pub fn device_token_for(&self, tenant: &str, device: &str) -> String {
        mint_token(
            &self.data_dir,
            &[
                "device", "--tenant", tenant, "--device", device, "--ttl", "3600",
            ],
        )
    }

    /// A client for device `device` of `tenant`.
    pub fn device(&self, tenant: &str, device: &str) -> Device {
        Device {
            id: device.to_owned(),
            base: self.base.clone(),
            token: self.device_token_for(tenant, device),
            client: self.client.clone(),
        }
    }

    /// Kill the server with SIGKILL (no shutdown, nothing flushed) and start it again on
    /// the same data dir. The port changes; [`Server::base`] is updated.
    pub fn crash_and_restart(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().expect("sending SIGKILL");
        child.wait().expect("reaping the killed server");
        self.spawn();
    }
}

/// A simulated device: its id, its token, and the server's address at creation.
#[derive(Clone)]
pub struct Device {
    /// The device id (the token's `sub`).
    pub id: String,
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Device {
    /// The same device talking to a restarted server.
    pub fn at(&self, server: &Server) -> Device {
        Device {
            base: server.base.clone(),
            ..self.clone()
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{DEVICE_API}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// A request to the v2 device deployments API.
    pub fn request_v2(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{DEVICE_API_V2}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// `GET next?artifact_name=…&device_type=…` (either may be left out).
    pub async fn next_query(
        &self,
        artifact_name: Option<&str>,
        device_type: Option<&str>,
    ) -> Response {
        let mut query = Vec::new();
        if let Some(a) = artifact_name {
            query.push(("artifact_name", a));
        }
        if let Some(t) = device_type {
            query.push(("device_type", t));
        }
        send(self.request(reqwest::Method::GET, "/next").query(&query)).await
    }

    /// `GET next` as a [`DEVICE_TYPE`] device running `artifact_name`.
    pub async fn next_as(&self, artifact_name: &str, device_type: &str) -> Response {
        self.next_query(Some(artifact_name), Some(device_type))
            .await
    }

    /// `POST next` with a JSON body.
    pub async fn next_post(&self, body: &Value) -> Response {
        send(self.request(reqwest::Method::POST, "/next").json(body)).await
    }

    /// Check in as a [`DEVICE_TYPE`] device running [`OLD_RELEASE`]: the deployment id on
    /// 200, `None` on 204; anything else fails the test.
    pub async fn check_in(&self) -> Option<String> {
        let resp = self.next_as(OLD_RELEASE, DEVICE_TYPE).await;
        match resp.status() {
            StatusCode::NO_CONTENT => None,
            StatusCode::OK => {
                let body = json_ok(resp).await;
                Some(body["id"].as_str().expect("id is a string").to_owned())
            }
            other => panic!(
                "{}: check-in answered {other}: {}",
                self.id,
                resp.text().await.unwrap_or_default()
            ),
        }
    }

    /// `PUT {deployment}/status` with `{"status": status}`.
    pub async fn report(&self, deployment: &str, status: &str) -> Response {
        self.put(deployment, "status", &json!({ "status": status }))
            .await
    }

    /// `PUT {deployment}/{what}` with a JSON body.
    pub async fn put(&self, deployment: &str, what: &str, body: &Value) -> Response {
        send(
            self.request(reqwest::Method::PUT, &format!("/{deployment}/{what}"))
                .json(body),
        )
        .await
    }

    /// Check in without asserting anything; a transport error (the server is down) is
    /// returned, not a test failure.
    pub async fn try_check_in(&self) -> reqwest::Result<Response> {
        self.request(reqwest::Method::GET, "/next")
            .query(&[("artifact_name", OLD_RELEASE), ("device_type", DEVICE_TYPE)])
            .send()
            .await
    }

    /// Report a status without asserting anything (see [`Device::try_check_in`]).
    pub async fn try_report(&self, deployment: &str, status: &str) -> reqwest::Result<Response> {
        self.request(reqwest::Method::PUT, &format!("/{deployment}/status"))
            .json(&json!({ "status": status }))
            .send()
            .await
    }

    /// Report each status, asserting 204 for each.
    pub async fn report_all(&self, deployment: &str, statuses: &[&str]) {
        for s in statuses {
            let resp = self.report(deployment, s).await;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            assert_eq!(
                status,
                StatusCode::NO_CONTENT,
                "{} reporting {s}: {body}",
                self.id
            );
        }
    }
}

/// A running server with [`RELEASE`] for [`DEVICE_TYPE`] uploaded (a real `mender-artifact`
/// single-file module image) in one tenant.
pub struct Fleet {
    /// The server.
    pub server: Server,
    /// The tenant everything is in.
    pub tenant: String,
    /// The uploaded artifact file.
    pub artifact: Built,
    /// Its id.
    pub artifact_id: String,
    _work: Workdir,
}

impl Fleet {
    /// Start a server and upload the release for `tenant`.
    pub async fn start(tenant: &str) -> Fleet {
        let server = Server::start().await;
        let work = Workdir::new();
        let artifact = work.single_file(RELEASE, &[DEVICE_TYPE], &[]);
        let artifact_id = server
            .as_user(tenant)
            .upload_ok(&artifact.path, "the release")
            .await;
        Fleet {
            server,
            tenant: tenant.to_owned(),
            artifact,
            artifact_id,
            _work: work,
        }
    }

    /// A management client of the fleet's tenant.
    pub fn user(&self) -> Api<'_> {
        self.server.as_user(&self.tenant)
    }

    /// A device client of the fleet's tenant.
    pub fn device(&self, id: &str) -> Device {
        self.server.device(&self.tenant, id)
    }

    /// Create a deployment of [`RELEASE`] to `devices` with extra body fields, asserting
    /// 201; its id.
    pub async fn deploy_with(&self, devices: &[&str], extra: Value) -> String {
        let mut body = json!({"name": "rollout", "artifact_name": RELEASE, "devices": devices});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        deployment_id(create(&self.user(), &body).await).await
    }

    /// Create a deployment of [`RELEASE`] to `devices`; its id.
    pub async fn deploy(&self, devices: &[&str]) -> String {
        self.deploy_with(devices, json!({})).await
    }

    /// `GET /deployments/{id}`, asserting 200.
    pub async fn deployment(&self, id: &str) -> Value {
        json_ok(self.user().get(&format!("/deployments/{id}")).await).await
    }

    /// `GET /deployments/{id}/devices`, asserting 200.
    pub async fn devices(&self, id: &str) -> Vec<Value> {
        let list = json_ok(self.user().get(&format!("/deployments/{id}/devices")).await).await;
        list.as_array().expect("devices is an array").clone()
    }

    /// The record of `device` in `/devices`.
    pub async fn device_record(&self, id: &str, device: &str) -> Value {
        self.devices(id)
            .await
            .into_iter()
            .find(|d| d["id"] == json!(device))
            .unwrap_or_else(|| panic!("{device} is not in /deployments/{id}/devices"))
    }

    /// `GET /deployments/{id}/statistics`, asserting 200 and that it equals counting the
    /// `/devices` records.
    pub async fn statistics(&self, id: &str) -> Value {
        statistics(&self.user(), id).await
    }
}

/// `POST /deployments` with a JSON body.
pub async fn create(api: &Api<'_>, body: &Value) -> Response {
    send(
        api.request(reqwest::Method::POST, "/deployments")
            .json(body),
    )
    .await
}

/// Assert 201 with `Location: MANAGEMENT/deployments/{id}`; the id.
pub async fn deployment_id(resp: Response) -> String {
    super::location_id(resp, "deployments").await
}

/// `GET /deployments/{id}/statistics`, asserting that it equals counting `/devices`.
pub async fn statistics(api: &Api<'_>, id: &str) -> Value {
    let stats = json_ok(api.get(&format!("/deployments/{id}/statistics")).await).await;
    let devices = json_ok(api.get(&format!("/deployments/{id}/devices")).await).await;
    let mut counted = serde_json::Map::new();
    for key in stats.as_object().expect("statistics is an object").keys() {
        counted.insert(key.clone(), json!(0));
    }
    for d in devices.as_array().expect("devices is an array") {
        let status = d["status"].as_str().expect("status is a string");
        let n = counted
            .get(status)
            .unwrap_or_else(|| panic!("status {status} is missing from {stats}"))
            .as_u64()
            .unwrap();
        counted.insert(status.to_owned(), json!(n + 1));
    }
    assert_eq!(
        stats,
        Value::Object(counted),
        "statistics differ from /devices"
    );
    stats
}
