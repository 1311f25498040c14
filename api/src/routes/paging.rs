//! Paging of list endpoints, as upstream Mender pages them: `page` (from 1) and `per_page`
//! (1 to 500, default 20); the total count in `X-Total-Count`, and a `Link` header with the
//! `first`, `prev`, `next` and `last` pages that keeps the request's other parameters.

use warp::reply::{Reply, Response};
use warp::Filter;

use crate::error::{ApiError, ApiResult};

/// Largest `per_page`.
pub(crate) const MAX_PER_PAGE: u64 = 500;

/// One page of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paging {
    /// From 1.
    pub(crate) page: u64,
    pub(crate) per_page: u64,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            page: 1,
            per_page: 20,
        }
    }
}

impl Paging {
    /// Take the query parameter `key=value` if it is a paging one: `Ok(false)` for any
    /// other key, 400 for a paging value out of range.
    pub(crate) fn take(&mut self, key: &str, value: &str) -> ApiResult<bool> {
        let bad = || ApiError::BadRequest(format!("invalid value {value:?} for {key}"));
        match key {
            "page" => {
                self.page = value.parse().ok().filter(|p| *p >= 1).ok_or_else(bad)?;
            }
            "per_page" => {
                self.per_page = value
                    .parse()
                    .ok()
                    .filter(|p| (1..=MAX_PER_PAGE).contains(p))
                    .ok_or_else(bad)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Like [`Paging::take`], but a value out of range leaves the default in place, as
    /// upstream's artifact and release listings do.
    pub(crate) fn take_leniently(&mut self, key: &str, value: &str) -> bool {
        let mut tried = *self;
        match tried.take(key, value) {
            Ok(taken) => {
                *self = tried;
                taken
            }
            Err(_) => true,
        }
    }

    /// The items of this page, out of all of them.
    pub(crate) fn page_of<T>(&self, all: impl IntoIterator<Item = T>) -> Vec<T> {
        let skip = usize::try_from(self.page.saturating_sub(1).saturating_mul(self.per_page))
            .unwrap_or(usize::MAX);
        let take = usize::try_from(self.per_page).unwrap_or(usize::MAX);
        all.into_iter().skip(skip).take(take).collect()
    }

    /// The `Link` header for the list at `path` (under the API's base), requested with the
    /// query `raw`, of `total` items.
    pub(crate) fn link(&self, path: &str, raw: &str, total: u64) -> String {
        let others: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
            .filter(|(k, _)| k != "page" && k != "per_page")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let url = |page: u64| {
            let mut s = form_urlencoded::Serializer::new(String::new());
            s.append_pair("page", &page.to_string());
            s.append_pair("per_page", &self.per_page.to_string());
            for (k, v) in &others {
                s.append_pair(k, v);
            }
            format!("<{path}?{}>", s.finish())
        };
        let mut links = vec![format!("{}; rel=\"first\"", url(1))];
        if self.page > 1 {
            links.push(format!("{}; rel=\"prev\"", url(self.page - 1)));
        }
        if self.page.saturating_mul(self.per_page) < total {
            links.push(format!("{}; rel=\"next\"", url(self.page + 1)));
        }
        if total > 0 {
            let last = total.div_ceil(self.per_page);
            links.push(format!("{}; rel=\"last\"", url(last)));
        }
        links.join(", ")
    }

    /// `reply` with the `Link` and `X-Total-Count` headers.
    pub(crate) fn headers(&self, reply: impl Reply, path: &str, raw: &str, total: u64) -> Response {
        let reply = warp::reply::with_header(reply, "link", self.link(path, raw, total));
        warp::reply::with_header(reply, "x-total-count", total.to_string()).into_response()
    }
}

/// The raw query string (empty when there is none).
pub(crate) fn raw_query(
) -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_values_are_checked() {
        let mut p = Paging::default();
        assert!(p.take("page", "0").is_err());
        assert!(p.take("per_page", "501").is_err());
        assert!(p.take("per_page", "x").is_err());
        assert!(!p.take("status", "x").unwrap());
        assert!(p.take("page", "2").unwrap() && p.take("per_page", "5").unwrap());
        assert_eq!(
            p,
            Paging {
                page: 2,
                per_page: 5
            }
        );
        assert_eq!(p.page_of(0..12), vec![5, 6, 7, 8, 9]);
    }

    #[test]
    fn link_header_has_first_prev_next_and_last() {
        let p = Paging {
            page: 2,
            per_page: 5,
        };
        let h = p.link("/x", "page=2&per_page=5&search=x", 22);
        assert!(
            h.contains("</x?page=1&per_page=5&search=x>; rel=\"first\""),
            "{h}"
        );
        assert!(h.contains("rel=\"prev\""));
        assert!(h.contains("page=3&per_page=5&search=x>; rel=\"next\""));
        assert!(
            h.contains("page=5&per_page=5&search=x>; rel=\"last\""),
            "{h}"
        );
        let end = Paging {
            page: 5,
            per_page: 5,
        };
        assert!(!end.link("/x", "", 22).contains("next"));
        assert!(!end.link("/x", "", 0).contains("last"));
    }
}
