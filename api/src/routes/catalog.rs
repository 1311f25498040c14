//! Paged, filtered and sorted listings of artifacts and releases, as upstream's
//! `GET /artifacts/list` (what mender-cli 2.x lists artifacts with) and
//! `GET /deployments/releases/list` (the UI's release list) answer them. Both are lenient, as
//! upstream is: a paging value out of range or an unknown sort falls back to the default.

use std::cmp::Ordering;

use serde::Serialize;
use storage::ArtifactRecord;
use time::OffsetDateTime;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use super::artifacts::ArtifactView;
use super::paging::{raw_query, Paging};
use super::{management, MANAGEMENT_BASE};
use crate::auth::{self, Identity};
use crate::error::{respond, ApiResult};
use crate::state::AppState;

/// The listing routes; mounted before the artifact routes, whose `/artifacts/{id}` would
/// otherwise take `list` for an id.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let st = warp::any().map(move || state.clone());
    let artifacts = management()
        .and(warp::path!("artifacts" / "list"))
        .and(warp::get())
        .and(auth::user())
        .and(raw_query())
        .and(st.clone())
        .then(|id, q, st| async move { respond(artifacts(id, q, st).await) });
    let releases = management()
        .and(warp::path!("deployments" / "releases" / "list"))
        .and(warp::get())
        .and(auth::user())
        .and(raw_query())
        .and(st)
        .then(|id, q, st| async move { respond(releases(id, q, st).await) });
    artifacts.or(releases).unify().boxed()
}

/// A sort key and direction, `key:asc` or `key:desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sort<K> {
    key: K,
    descending: bool,
}

impl<K: Copy> Sort<K> {
    /// `raw` if it names one of `keys`, else `default` ascending.
    fn parse(raw: &str, keys: &[(&str, K)], default: K) -> Self {
        let (name, dir) = raw.split_once(':').unwrap_or((raw, "asc"));
        let key = keys.iter().find(|(n, _)| *n == name).map(|(_, k)| *k);
        match (key, dir) {
            (Some(key), "asc") => Sort {
                key,
                descending: false,
            },
            (Some(key), "desc") => Sort {
                key,
                descending: true,
            },
            _ => Sort {
                key: default,
                descending: false,
            },
        }
    }

    fn apply(&self, o: Ordering) -> Ordering {
        if self.descending {
            o.reverse()
        } else {
            o
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArtifactKey {
    Name,
    Modified,
}

/// `GET /artifacts/list` filters: each a case-insensitive substring.
#[derive(Debug, Default)]
struct ArtifactFilter {
    name: Option<String>,
    description: Option<String>,
    device_type: Option<String>,
}

fn contains(haystack: &str, needle: &Option<String>) -> bool {
    needle
        .as_ref()
        .is_none_or(|n| haystack.to_lowercase().contains(n.as_str()))
}

impl ArtifactFilter {
    fn keeps(&self, a: &ArtifactRecord) -> bool {
        contains(&a.meta.name, &self.name)
            && contains(&a.description, &self.description)
            && (self.device_type.is_none()
                || a.meta
                    .device_types_compatible
                    .iter()
                    .any(|t| contains(t, &self.device_type)))
    }
}

async fn artifacts(id: Identity, raw: String, st: AppState) -> ApiResult {
    let mut paging = Paging::default();
    let mut filter = ArtifactFilter::default();
    let mut sort = Sort::parse("", &[], ArtifactKey::Name);
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if paging.take_leniently(&k, &v) {
            continue;
        }
        let v = Some(v.to_lowercase());
        match k.as_ref() {
            "name" => filter.name = v,
            "description" => filter.description = v,
            "device_type" => filter.device_type = v,
            "sort" => {
                let keys = [
                    ("name", ArtifactKey::Name),
                    ("modified", ArtifactKey::Modified),
                ];
                sort = Sort::parse(v.as_deref().unwrap_or_default(), &keys, ArtifactKey::Name);
            }
            _ => {}
        }
    }
    let mut all = st.artifacts.list(&id.tenant).await?;
    all.retain(|a| filter.keeps(a));
    all.sort_by(|a, b| {
        let by_key = match sort.key {
            ArtifactKey::Name => a.meta.name.cmp(&b.meta.name),
            ArtifactKey::Modified => a.modified.cmp(&b.modified),
        };
        sort.apply(by_key).then(a.id.cmp(&b.id))
    });
    let total = all.len() as u64;
    let page = paging.page_of(&all);
    let views: Vec<ArtifactView<'_>> = page.into_iter().map(ArtifactView::from).collect();
    let path = format!("{MANAGEMENT_BASE}/artifacts/list");
    Ok(paging.headers(warp::reply::json(&views), &path, &raw, total))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReleaseKey {
    Name,
    Modified,
    ArtifactsCount,
    Tags,
}

/// `GET /deployments/releases/list` filters.
#[derive(Debug, Default)]
struct ReleaseFilter {
    /// Case-insensitive prefix of the release name.
    name: Option<String>,
    /// Case-insensitive substring of an artifact's description.
    description: Option<String>,
    /// A device type an artifact is compatible with, exactly.
    device_type: Option<String>,
    /// An update type of an artifact, exactly.
    update_type: Option<String>,
}

impl ReleaseFilter {
    fn keeps(&self, name: &str, artifacts: &[ArtifactRecord]) -> bool {
        let prefix = self
            .name
            .as_ref()
            .is_none_or(|p| name.to_lowercase().starts_with(&p.to_lowercase()));
        let described = self.description.as_ref().is_none_or(|d| {
            let d = d.to_lowercase();
            artifacts
                .iter()
                .any(|a| a.description.to_lowercase().contains(&d))
        });
        let typed = self.device_type.as_ref().is_none_or(|t| {
            artifacts
                .iter()
                .any(|a| a.meta.device_types_compatible.contains(t))
        });
        let updated = self.update_type.as_ref().is_none_or(|u| {
            artifacts.iter().any(|a| {
                a.meta
                    .updates
                    .iter()
                    .any(|x| x.type_info.kind.as_deref() == Some(u.as_str()))
            })
        });
        prefix && described && typed && updated
    }
}

/// A release in the v1 listing. Upstream's v1 route serializes it with these capitalized
/// keys (its v2 route, and rollout's `/deployments/releases`, use lowercase), and scripts
/// written against it read them.
#[derive(Serialize)]
struct ReleaseListView<'a> {
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Modified", with = "time::serde::rfc3339")]
    modified: OffsetDateTime,
    #[serde(rename = "Artifacts")]
    artifacts: Vec<ArtifactView<'a>>,
    #[serde(rename = "ArtifactsCount")]
    artifacts_count: usize,
    tags: [&'a str; 0],
    notes: &'a str,
}

async fn releases(id: Identity, raw: String, st: AppState) -> ApiResult {
    let mut paging = Paging::default();
    let mut filter = ReleaseFilter::default();
    let mut sort = Sort::parse("", &[], ReleaseKey::Name);
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if paging.take_leniently(&k, &v) {
            continue;
        }
        let v = Some(v.into_owned());
        match k.as_ref() {
            "name" => filter.name = v,
            "description" => filter.description = v,
            "device_type" => filter.device_type = v,
            "update_type" => filter.update_type = v,
            "sort" => {
                let keys = [
                    ("name", ReleaseKey::Name),
                    ("modified", ReleaseKey::Modified),
                    ("artifacts_count", ReleaseKey::ArtifactsCount),
                    ("tags", ReleaseKey::Tags),
                ];
                sort = Sort::parse(v.as_deref().unwrap_or_default(), &keys, ReleaseKey::Name);
            }
            _ => {}
        }
    }
    let mut all = st.artifacts.releases(&id.tenant, None).await?;
    all.retain(|r| filter.keeps(&r.name, &r.artifacts));
    let modified = |r: &engine::Release| {
        r.artifacts
            .iter()
            .map(|a| a.modified)
            .max()
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    all.sort_by(|a, b| {
        let by_key = match sort.key {
            ReleaseKey::Name => a.name.cmp(&b.name),
            // Releases have no tags here: every release sorts equal by them.
            ReleaseKey::Tags => Ordering::Equal,
            ReleaseKey::Modified => modified(a).cmp(&modified(b)),
            ReleaseKey::ArtifactsCount => a.artifacts.len().cmp(&b.artifacts.len()),
        };
        sort.apply(by_key).then(a.name.cmp(&b.name))
    });
    let total = all.len() as u64;
    let page = paging.page_of(&all);
    let views: Vec<ReleaseListView<'_>> = page
        .into_iter()
        .map(|r| ReleaseListView {
            name: &r.name,
            modified: modified(r),
            artifacts: r.artifacts.iter().map(ArtifactView::from).collect(),
            artifacts_count: r.artifacts.len(),
            tags: [],
            notes: "",
        })
        .collect();
    let path = format!("{MANAGEMENT_BASE}/deployments/releases/list");
    Ok(paging.headers(warp::reply::json(&views), &path, &raw, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_parse_with_a_default_for_anything_unknown() {
        let keys = [
            ("name", ArtifactKey::Name),
            ("modified", ArtifactKey::Modified),
        ];
        let s = Sort::parse("modified:desc", &keys, ArtifactKey::Name);
        assert_eq!((s.key, s.descending), (ArtifactKey::Modified, true));
        let s = Sort::parse("name", &keys, ArtifactKey::Modified);
        assert_eq!((s.key, s.descending), (ArtifactKey::Name, false));
        for bogus in ["size:asc", "name:sideways", ""] {
            let s = Sort::parse(bogus, &keys, ArtifactKey::Name);
            assert_eq!((s.key, s.descending), (ArtifactKey::Name, false), "{bogus}");
        }
    }
}
