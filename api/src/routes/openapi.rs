//! `GET /api/management/v1/deployments/openapi.yaml`: rollout's OpenAPI document
//! (`api/openapi.yaml`), served without a token so that tools such as schemathesis, code
//! generators and API browsers can read it from the running server.
//!
//! The document is written by hand from the contract and these routes, and compiled into
//! the binary: what a server serves is always the document of its own version. `scripts/
//! schemathesis` checks it against the running server, so it cannot drift silently.

use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

/// The document, as committed.
pub const DOCUMENT: &str = include_str!("../../openapi.yaml");

/// The route; it takes no state.
pub fn routes() -> BoxedFilter<(Response,)> {
    warp::path!("api" / "management" / "v1" / "deployments" / "openapi.yaml")
        .and(warp::get())
        .map(|| {
            warp::reply::with_header(DOCUMENT, "content-type", "application/yaml").into_response()
        })
        .boxed()
}

/// The methods the document lists for `path`, for the `Allow` header a 405 must carry
/// (RFC 9110). The document lists every route (`api/tests/openapi.rs` holds it to the
/// server's), so it is the route table; `None` for a path it does not know (`/metrics`).
/// Of the templates that match, the most literal one names the resource.
pub(crate) fn allowed_methods(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    ROUTE_TABLE
        .iter()
        .filter(|r| r.matches(&segments))
        .min_by_key(|r| r.template.iter().filter(|s| s.is_none()).count())
        .map(|r| r.allow.as_str())
}

/// One path of the document: its segments (`None` for a `{parameter}`) and its methods.
struct RouteMethods {
    template: Vec<Option<&'static str>>,
    allow: String,
}

impl RouteMethods {
    fn matches(&self, segments: &[&str]) -> bool {
        self.template.len() == segments.len()
            && self
                .template
                .iter()
                .zip(segments)
                .all(|(t, s)| t.is_none_or(|t| t == *s) && !s.is_empty())
    }
}

/// Every literal segment of the document's paths (for the metrics' route words).
#[cfg(test)]
pub(crate) fn literal_segments() -> impl Iterator<Item = &'static str> {
    ROUTE_TABLE
        .iter()
        .flat_map(|r| r.template.iter().flatten().copied())
}

static ROUTE_TABLE: std::sync::LazyLock<Vec<RouteMethods>> =
    std::sync::LazyLock::new(|| route_table(DOCUMENT));

/// The `paths:` of the document: a path at two spaces of indentation, its operations at
/// four (the document is written in that layout; the unit test below reads it back).
fn route_table(document: &'static str) -> Vec<RouteMethods> {
    const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];
    let mut table: Vec<RouteMethods> = Vec::new();
    let paths = document
        .lines()
        .skip_while(|l| *l != "paths:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '));
    for line in paths {
        if let Some(path) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            let template = path
                .split('/')
                .map(|s| (!s.starts_with('{')).then_some(s))
                .collect();
            table.push(RouteMethods {
                template,
                allow: String::new(),
            });
        } else if let (Some(route), Some(key)) = (table.last_mut(), line.strip_prefix("    ")) {
            let method = key.trim_end().trim_end_matches(':');
            if METHODS.contains(&method) {
                if !route.allow.is_empty() {
                    route.allow.push_str(", ");
                }
                route.allow.push_str(&method.to_ascii_uppercase());
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::allowed_methods;

    #[test]
    fn the_allowed_methods_come_from_the_document() {
        let allow = |p: &str| allowed_methods(p);
        assert_eq!(
            allow("/api/devices/v1/deployments/device/deployments/next"),
            Some("GET, POST")
        );
        assert_eq!(
            allow("/api/devices/v1/deployments/device/deployments/d-1/status"),
            Some("PUT")
        );
        assert_eq!(
            allow("/api/management/v1/deployments/artifacts/a-1"),
            Some("GET, PUT, DELETE")
        );
        // A literal segment wins over a parameter in the same place.
        assert_eq!(
            allow("/api/management/v1/deployments/deployments/releases"),
            Some("GET")
        );
        assert_eq!(allow("/metrics"), None);
        assert_eq!(allow("/api/management/v1/deployments/artifacts//x"), None);
    }
}
