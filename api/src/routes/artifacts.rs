//! Artifact routes of the management API: upload, list, show, edit, delete, download link,
//! generate, releases and storage limits.

use std::collections::BTreeMap;

use engine::{GenerateRequest, SingleFileSpec};
use futures_util::{Stream, TryStreamExt};
use serde::{Deserialize, Serialize};
use storage::{ArtifactInfo, ArtifactRecord, TypeInfo, Update, UpdateFile};
use time::OffsetDateTime;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::{Buf, Filter};

use super::{base_url, created, json_body, management, no_content, MANAGEMENT_BASE};
use crate::auth::{self, Identity};
use crate::error::{respond, ApiError, ApiResult};
use crate::multipart::{Form, PartHead};
use crate::signing::LinkSigner;
use crate::state::AppState;

/// Longest text form field we read (description, args, name, …).
const MAX_FIELD: usize = 64 * 1024;

/// The artifact routes.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let st = warp::any().map(move || state.clone());
    let artifacts = management().and(warp::path("artifacts")).boxed();
    let list = artifacts
        .clone()
        .and(warp::path::end())
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|id, st| async move { respond(list(id, st).await) });
    let upload = artifacts
        .clone()
        .and(warp::path::end())
        .and(warp::post())
        .and(auth::user())
        .and(multipart())
        .and(st.clone())
        .then(|id, form, st| async move { respond(upload(id, form, st).await) });
    let generate = artifacts
        .clone()
        .and(warp::path!("generate"))
        .and(warp::post())
        .and(auth::user())
        .and(multipart())
        .and(st.clone())
        .then(|id, form, st| async move { respond(generate(id, form, st).await) });
    let show = artifacts
        .clone()
        .and(warp::path!(String))
        .and(warp::get())
        .and(auth::user())
        .and(st.clone())
        .then(|aid, id, st| async move { respond(show(aid, id, st).await) });
    let edit = artifacts
        .clone()
        .and(warp::path!(String))
        .and(warp::put())
        .and(auth::user())
        .and(json_body::<ArtifactUpdate>(64 * 1024))
        .and(st.clone())
        .then(|aid, id, body, st| async move { respond(edit(aid, id, st, body).await) });
    let delete = artifacts
        .clone()
        .and(warp::path!(String))
        .and(warp::delete())
        .and(auth::user())
        .and(st.clone())
        .then(|aid, id, st| async move { respond(delete(aid, id, st).await) });
    let link = artifacts
        .clone()
        .and(warp::path!(String / "download"))
        .and(warp::get())
        .and(auth::user())
        .and(base_url())
        .and(st.clone())
        .then(|aid, id, base, st| async move { respond(link(aid, id, base, st).await) });
    let releases = management()
        .and(warp::path!("deployments" / "releases"))
        .and(warp::get())
        .and(auth::user())
        .and(warp::query::<ReleaseQuery>())
        .and(st.clone())
        .then(|id, q, st| async move { respond(releases(id, q, st).await) });
    let limits = management()
        .and(warp::path!("limits" / "storage"))
        .and(warp::get())
        .and(auth::user())
        .and(st)
        .then(|id, st| async move { respond(limits(id, st).await) });
    super::any_of([
        list.boxed(),
        upload.boxed(),
        generate.boxed(),
        link.boxed(),
        show.boxed(),
        edit.boxed(),
        delete.boxed(),
        releases.boxed(),
        limits.boxed(),
    ])
}

/// The request body as a multipart [`Form`]. No length limit here: mender-cli sends chunked
/// bodies, and the artifact service enforces the size while it streams.
fn multipart() -> impl Filter<Extract = (Form,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::body::stream())
        .and_then(form_of)
}

async fn form_of<S, B>(content_type: Option<String>, body: S) -> Result<Form, warp::Rejection>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    let body = body.map_ok(|mut data| data.copy_to_bytes(data.remaining()));
    Form::from_content_type(content_type.as_deref(), body)
        .map_err(|e| warp::reject::custom(ApiError::from(e)))
}

/// The Artifact JSON of the API.
#[derive(Serialize)]
pub struct ArtifactView<'a> {
    id: Uuid,
    name: &'a str,
    description: &'a str,
    device_types_compatible: &'a [String],
    info: &'a ArtifactInfo,
    signed: bool,
    updates: Vec<UpdateView<'a>>,
    artifact_provides: &'a BTreeMap<String, String>,
    artifact_depends: &'a BTreeMap<String, serde_json::Value>,
    clears_artifact_provides: &'a [String],
    size: u64,
    #[serde(with = "time::serde::rfc3339")]
    modified: OffsetDateTime,
}

impl<'a> From<&'a ArtifactRecord> for ArtifactView<'a> {
    fn from(a: &'a ArtifactRecord) -> Self {
        ArtifactView {
            id: a.id,
            name: &a.meta.name,
            description: &a.description,
            device_types_compatible: &a.meta.device_types_compatible,
            info: &a.meta.info,
            signed: a.meta.signed,
            updates: a.meta.updates.iter().map(UpdateView::from).collect(),
            artifact_provides: &a.meta.artifact_provides,
            artifact_depends: &a.meta.artifact_depends,
            clears_artifact_provides: &a.meta.clears_artifact_provides,
            size: a.size,
            modified: a.modified,
        }
    }
}

/// An update as upstream's deployments service shows it, which scripts written against it
/// expect: `files` is `null` when there are none (a bootstrap artifact), and `meta_data` is
/// left out when the update has none.
#[derive(Serialize)]
struct UpdateView<'a> {
    type_info: &'a TypeInfo,
    files: Option<&'a [UpdateFile]>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    meta_data: &'a [serde_json::Value],
}

impl<'a> From<&'a Update> for UpdateView<'a> {
    fn from(u: &'a Update) -> Self {
        UpdateView {
            type_info: &u.type_info,
            files: (!u.files.is_empty()).then_some(u.files.as_slice()),
            meta_data: &u.meta_data,
        }
    }
}

fn views(list: &[ArtifactRecord]) -> Vec<ArtifactView<'_>> {
    list.iter().map(ArtifactView::from).collect()
}

/// An artifact id from the path; anything that is not a UUID cannot exist.
fn artifact_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::BadRequest(format!("artifact id {raw:?} is not a UUID")))
}

async fn list(id: Identity, st: AppState) -> ApiResult {
    let all = st.artifacts.list(&id.tenant).await?;
    Ok(warp::reply::json(&views(&all)).into_response())
}

async fn show(raw: String, id: Identity, st: AppState) -> ApiResult {
    let a = st.artifacts.get(&id.tenant, artifact_id(&raw)?).await?;
    Ok(warp::reply::json(&ArtifactView::from(&a)).into_response())
}

/// `PUT /artifacts/{id}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArtifactUpdate {
    description: Option<String>,
}

async fn edit(raw: String, id: Identity, st: AppState, body: ArtifactUpdate) -> ApiResult {
    let aid = artifact_id(&raw)?;
    let description = body.description.unwrap_or_default();
    st.artifacts
        .edit_description(&id.tenant, aid, description)
        .await?;
    Ok(no_content())
}

async fn delete(raw: String, id: Identity, st: AppState) -> ApiResult {
    // The contract answers a bad id here only with 404, as an unknown one.
    let aid = Uuid::parse_str(&raw).map_err(|_| ApiError::NotFound("artifact not found".into()))?;
    st.artifacts.delete(&id.tenant, aid).await?;
    Ok(no_content())
}

/// `{uri, expire}`.
#[derive(Serialize)]
pub struct ArtifactLink {
    /// Where to GET the blob.
    pub uri: String,
    /// When the link stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expire: OffsetDateTime,
}

/// A download link for an artifact valid for `ttl_secs` (signed by rollout, or presigned by
/// S3).
pub async fn download_link(
    st: &AppState,
    base: &str,
    record: &ArtifactRecord,
    ttl_secs: u64,
) -> ApiResult<ArtifactLink> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let expires = now + ttl_secs as i64;
    let blobs = st.artifacts.blobs();
    let uri = if blobs.presigns() {
        let path = storage::BlobStore::path(&record.tenant, record.id);
        blobs
            .presign(&path, std::time::Duration::from_secs(ttl_secs))
            .await?
    } else {
        let base = st.settings.public_url.as_deref().unwrap_or(base);
        format!(
            "{}{}?{}",
            base.trim_end_matches('/'),
            LinkSigner::path(record.id),
            st.signer.query(record.id, &record.tenant, expires)
        )
    };
    link_of(uri, expires)
}

fn link_of(uri: String, expires: i64) -> ApiResult<ArtifactLink> {
    let expire = OffsetDateTime::from_unix_timestamp(expires)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(ArtifactLink { uri, expire })
}

/// A device's download link: reused from [`crate::signing::LinkCache`] while fresh.
pub async fn device_link(
    st: &AppState,
    base: &str,
    record: &ArtifactRecord,
) -> ApiResult<ArtifactLink> {
    let ttl = st.settings.device_link_ttl;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if let Some((uri, expires)) = st.device_links.get(record.id, base, ttl, now) {
        return link_of(uri, expires);
    }
    let link = download_link(st, base, record, ttl).await?;
    let expires = link.expire.unix_timestamp();
    st.device_links
        .put(record.id, base, link.uri.clone(), expires);
    Ok(link)
}

async fn link(raw: String, id: Identity, base: String, st: AppState) -> ApiResult {
    let a = st.artifacts.get(&id.tenant, artifact_id(&raw)?).await?;
    let link = download_link(&st, &base, &a, st.settings.operator_link_ttl).await?;
    Ok(warp::reply::json(&link).into_response())
}

#[derive(Deserialize)]
struct ReleaseQuery {
    name: Option<String>,
}

#[derive(Serialize)]
struct ReleaseView<'a> {
    name: &'a str,
    artifacts: Vec<ArtifactView<'a>>,
}

async fn releases(id: Identity, q: ReleaseQuery, st: AppState) -> ApiResult {
    // `?name=` with nothing after it filters nothing, as a form's empty field means.
    let name = q.name.as_deref().filter(|n| !n.is_empty());
    let releases = st.artifacts.releases(&id.tenant, name).await?;
    let out: Vec<ReleaseView<'_>> = releases
        .iter()
        .map(|r| ReleaseView {
            name: &r.name,
            artifacts: views(&r.artifacts),
        })
        .collect();
    Ok(warp::reply::json(&out).into_response())
}

async fn limits(id: Identity, st: AppState) -> ApiResult {
    let usage = st.artifacts.usage(&id.tenant).await?;
    Ok(warp::reply::json(&usage).into_response())
}

/// Read the current part as text of at most [`MAX_FIELD`] bytes.
async fn read_field(form: &mut Form, head: &PartHead) -> ApiResult<String> {
    let name = &head.name;
    let mut out = Vec::new();
    while let Some(chunk) = form.chunk().await? {
        if out.len() + chunk.len() > MAX_FIELD {
            return Err(ApiError::BadRequest(format!(
                "form field {name} is longer than {MAX_FIELD} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::BadRequest(format!("form field {name} is not UTF-8")))
}

async fn upload(id: Identity, mut form: Form, st: AppState) -> ApiResult {
    let result = upload_form(&id, &mut form, &st).await;
    if result.is_err() {
        drain(&mut form).await;
    }
    result
}

async fn upload_form(id: &Identity, form: &mut Form, st: &AppState) -> ApiResult {
    let mut description = String::new();
    while let Some(head) = form.next_part().await? {
        match head.name.as_str() {
            "artifact" => {
                let record = st
                    .artifacts
                    .upload(&id.tenant, description, form.part_stream())
                    .await?;
                if let Err(e) = nothing_after(form, "artifact").await {
                    // Refused as a whole: a field sent after the file would otherwise be
                    // lost without a word.
                    st.artifacts.delete(&id.tenant, record.id).await?;
                    return Err(e);
                }
                return Ok(created(format!(
                    "{MANAGEMENT_BASE}/artifacts/{}",
                    record.id
                )));
            }
            "description" => description = read_field(form, &head).await?,
            _ => {
                read_field(form, &head).await?;
            }
        }
    }
    Err(ApiError::BadRequest(
        "the form has no \"artifact\" file part".into(),
    ))
}

/// The `args` form field of a `single_file` generation.
#[derive(Deserialize)]
struct SingleFileArgs {
    dest_dir: Option<String>,
    filename: Option<String>,
    software_name: Option<String>,
    software_version: Option<String>,
    software_filesystem: Option<String>,
}

#[derive(Default)]
struct GenerateForm {
    name: String,
    description: String,
    device_types: Vec<String>,
    kind: String,
    args: Option<String>,
}

impl GenerateForm {
    fn into_request(self, uploaded_name: Option<String>) -> ApiResult<GenerateRequest> {
        if self.kind != "single_file" {
            return Err(ApiError::BadRequest(format!(
                "unsupported type {:?}: only \"single_file\" can be generated",
                self.kind
            )));
        }
        if self.name.trim().is_empty() {
            return Err(ApiError::BadRequest("name is required".into()));
        }
        if self.device_types.is_empty() {
            return Err(ApiError::BadRequest(
                "device_types_compatible is required".into(),
            ));
        }
        let raw = self
            .args
            .ok_or_else(|| ApiError::BadRequest("args is required for single_file".into()))?;
        let args: SingleFileArgs = serde_json::from_str(&raw)
            .map_err(|e| ApiError::BadRequest(format!("args is not a valid JSON object: {e}")))?;
        let dest_dir = args
            .dest_dir
            .filter(|d| !d.is_empty())
            .ok_or_else(|| ApiError::BadRequest("args.dest_dir is required".into()))?;
        let filename = args
            .filename
            .filter(|f| !f.is_empty())
            .or(uploaded_name)
            .ok_or_else(|| ApiError::BadRequest("args.filename is required".into()))?;
        Ok(GenerateRequest {
            description: self.description,
            spec: SingleFileSpec {
                artifact_name: self.name,
                device_types: self.device_types,
                dest_dir,
                filename,
                permissions: None,
                software_name: args.software_name,
                software_version: args.software_version,
                software_filesystem: args.software_filesystem,
            },
        })
    }
}

async fn generate(id: Identity, mut form: Form, st: AppState) -> ApiResult {
    let result = generate_form(&id, &mut form, &st).await;
    if result.is_err() {
        drain(&mut form).await;
    }
    result
}

/// The contract wants the file as the last part of the form; a part after it is refused
/// rather than ignored.
async fn nothing_after(form: &mut Form, file: &str) -> ApiResult<()> {
    match form.next_part().await? {
        None => Ok(()),
        Some(head) => Err(ApiError::BadRequest(format!(
            "the {file:?} part has to be the last part of the form; {:?} came after it",
            head.name
        ))),
    }
}

/// How long the rest of a refused upload is read and discarded before the error answer
/// goes out.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Read and discard what is left of a refused multipart upload (for at most
/// [`DRAIN_TIMEOUT`], and not past a malformed or stalled body). Closing a connection with
/// unread request bytes makes the kernel send a TCP reset, which destroys the 400/409/413
/// answer before the client reads it: clients then see "connection reset" instead of the
/// reason.
async fn drain(form: &mut Form) {
    let discard = async { while let Ok(Some(_)) = form.next_part().await {} };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
}

async fn generate_form(id: &Identity, form: &mut Form, st: &AppState) -> ApiResult {
    let mut fields = GenerateForm::default();
    while let Some(head) = form.next_part().await? {
        match head.name.as_str() {
            "file" => {
                let req = std::mem::take(&mut fields)
                    .into_request(head.filename.clone())
                    .map_err(|e| match e {
                        ApiError::BadRequest(m) => ApiError::BadRequest(format!(
                            "{m} (the \"file\" part has to be the last part of the form: \
                             fields after it are not read)"
                        )),
                        other => other,
                    })?;
                let record = st
                    .artifacts
                    .generate(&id.tenant, req, form.part_stream())
                    .await?;
                if let Err(e) = nothing_after(form, "file").await {
                    st.artifacts.delete(&id.tenant, record.id).await?;
                    return Err(e);
                }
                return Ok(created(format!(
                    "{MANAGEMENT_BASE}/artifacts/{}",
                    record.id
                )));
            }
            "name" => fields.name = read_field(form, &head).await?,
            "description" => fields.description = read_field(form, &head).await?,
            "type" => fields.kind = read_field(form, &head).await?,
            "args" => fields.args = Some(read_field(form, &head).await?),
            "device_types_compatible" => {
                let v = read_field(form, &head).await?;
                fields.device_types.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                );
            }
            _ => {
                read_field(form, &head).await?;
            }
        }
    }
    Err(ApiError::BadRequest("the form has no \"file\" part".into()))
}
