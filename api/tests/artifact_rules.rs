//! The rules that tie artifacts to deployments: an artifact a deployment has used cannot be
//! edited (422), and one an unfinished deployment uses cannot be deleted (409) until that
//! deployment finishes.

mod common;

use common::fleet::Fleet;
use common::{assert_error, no_body};
use reqwest::StatusCode;
use serde_json::json;

const TENANT: &str = "acme";

#[tokio::test]
async fn artifacts_in_use_cannot_be_edited_or_deleted_until_their_deployment_ends() {
    let fleet = Fleet::start(TENANT).await;
    let user = fleet.user();
    let path = format!("/artifacts/{}", fleet.artifact_id);
    no_body(
        user.put_json(&path, &json!({"description": "before any deployment"}))
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;

    let id = fleet.deploy(&["dev-1"]).await;
    assert_error(
        user.put_json(&path, &json!({"description": "after"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_error(user.delete(&path).await, StatusCode::CONFLICT).await;
    assert_eq!(
        user.artifact(&fleet.artifact_id).await["description"],
        "before any deployment",
        "a refused edit changes nothing"
    );

    let device = fleet.device("dev-1");
    assert_eq!(device.check_in().await.as_deref(), Some(id.as_str()));
    device
        .report_all(&id, &["downloading", "installing", "success"])
        .await;
    assert_eq!(fleet.deployment(&id).await["status"], "finished");

    // Still used by a (finished) deployment: no edits; but it may now be deleted.
    assert_error(
        user.put_json(&path, &json!({"description": "later"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    no_body(user.delete(&path).await, StatusCode::NO_CONTENT).await;
    assert_error(user.get(&path).await, StatusCode::NOT_FOUND).await;
}
