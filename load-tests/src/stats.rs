//! What the run measured: a latency histogram, a count, an error count and a byte count per
//! kind of request, shared by every worker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Kinds of requests, reported separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A check-in answered 200 (an update).
    Checkin200,
    /// A check-in answered 204 (nothing now).
    Checkin204,
    /// A check-in answered anything else, or not at all.
    CheckinOther,
    /// An artifact download.
    Download,
    /// A status report.
    Status,
    /// A log upload.
    Log,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 6] = [
        Kind::Checkin200,
        Kind::Checkin204,
        Kind::CheckinOther,
        Kind::Download,
        Kind::Status,
        Kind::Log,
    ];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Checkin200 => "checkin-200",
            Kind::Checkin204 => "checkin-204",
            Kind::CheckinOther => "checkin-other",
            Kind::Download => "download",
            Kind::Status => "status",
            Kind::Log => "log",
        }
    }
}

/// Longest latency the histograms hold (longer ones are clamped): the client's request
/// timeout.
const MAX_LATENCY_US: u64 = 120_000_000;

/// Counters and histogram of one kind.
struct KindStats {
    count: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    /// Answers that were not a success, by HTTP status (a std mutex: taken only on those).
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// `503` answers with `Retry-After` that the device waited out and sent again.
    retried: AtomicU64,
    /// A std mutex, not a tokio one: it is held for the few nanoseconds of one `record`,
    /// never across an await, and one shared histogram per kind costs far less memory than
    /// one per worker when there are thousands of workers.
    latency_us: Mutex<Histogram<u64>>,
}

/// The shared recorder of a run.
pub struct Recorder {
    kinds: [KindStats; 6],
    total: AtomicU64,
    errors: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        let kind = || KindStats {
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            statuses: Mutex::new(BTreeMap::new()),
            retried: AtomicU64::new(0),
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                    .expect("constant histogram bounds are valid"),
            ),
        };
        Recorder {
            kinds: [kind(), kind(), kind(), kind(), kind(), kind()],
            total: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// Record one answered (or failed) request of `kind` that took `latency`; `ok` is false
    /// when the answer was not the one expected.
    pub fn record(&self, kind: Kind, latency: Duration, ok: bool) {
        let k = &self.kinds[kind as usize];
        k.count.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        if !ok {
            k.errors.fetch_add(1, Ordering::Relaxed);
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .clamp(1, MAX_LATENCY_US);
        let mut h = k.latency_us.lock().unwrap_or_else(|p| p.into_inner());
        h.saturating_record(us);
    }

    /// Count `n` body bytes received for `kind`.
    pub fn add_bytes(&self, kind: Kind, n: u64) {
        self.kinds[kind as usize]
            .bytes
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Count the HTTP status of an answer to a `kind` request, if it is not a success.
    pub fn add_status(&self, kind: Kind, status: reqwest::StatusCode) {
        if status.is_success() {
            return;
        }
        let mut m = self.kinds[kind as usize]
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(status.as_u16()).or_default() += 1;
    }

    /// A `503` answer to a `kind` request is retried, as the server asked.
    pub fn add_retry(&self, kind: Kind) {
        self.kinds[kind as usize]
            .retried
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Requests so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Unexpected answers so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The summary of every kind that saw at least one request.
    pub fn summaries(&self, elapsed: Duration) -> Vec<KindSummary> {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Kind::ALL
            .iter()
            .filter_map(|&kind| {
                let k = &self.kinds[kind as usize];
                let count = k.count.load(Ordering::Relaxed);
                if count == 0 {
                    return None;
                }
                let h = k.latency_us.lock().unwrap_or_else(|p| p.into_inner());
                let ms = |us: u64| us as f64 / 1000.0;
                let statuses = k.statuses.lock().unwrap_or_else(|p| p.into_inner()).clone();
                Some(KindSummary {
                    kind: kind.name(),
                    count,
                    errors: k.errors.load(Ordering::Relaxed),
                    statuses,
                    retried: k.retried.load(Ordering::Relaxed),
                    bytes: k.bytes.load(Ordering::Relaxed),
                    rps: count as f64 / secs,
                    mean_ms: h.mean() / 1000.0,
                    p50_ms: ms(h.value_at_quantile(0.50)),
                    p90_ms: ms(h.value_at_quantile(0.90)),
                    p99_ms: ms(h.value_at_quantile(0.99)),
                    p999_ms: ms(h.value_at_quantile(0.999)),
                    max_ms: ms(h.max()),
                })
            })
            .collect()
    }
}

/// Figures of one kind of request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindSummary {
    /// Kind name (`checkin-204`, `download`, …).
    pub kind: &'static str,
    /// Requests.
    pub count: u64,
    /// Requests whose answer was not the expected one (or that failed).
    pub errors: u64,
    /// Answers that were not a success, by HTTP status (`409`: the device stops; `5xx`: a
    /// server failure, except `503` with `Retry-After`, which devices retry).
    pub statuses: BTreeMap<u16, u64>,
    /// `503` answers that were retried (status reports and logs after `Retry-After`;
    /// check-ins at the next poll).
    pub retried: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Requests per second over the run.
    pub rps: f64,
    /// Mean latency.
    pub mean_ms: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_skip_unused_kinds_and_count_errors() {
        let r = Recorder::new();
        for ms in 1..=100 {
            r.record(Kind::Checkin204, Duration::from_millis(ms), true);
        }
        r.record(Kind::Status, Duration::from_millis(5), false);
        r.add_status(Kind::Status, reqwest::StatusCode::NO_CONTENT);
        r.add_status(Kind::Status, reqwest::StatusCode::CONFLICT);
        r.add_status(Kind::Status, reqwest::StatusCode::CONFLICT);
        r.add_retry(Kind::Status);
        let s = r.summaries(Duration::from_secs(1));
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].kind, s[0].count, s[0].errors),
            ("checkin-204", 100, 0)
        );
        assert!((s[0].p50_ms - 50.0).abs() < 0.1, "{}", s[0].p50_ms);
        assert!((s[0].p99_ms - 99.0).abs() < 0.1, "{}", s[0].p99_ms);
        assert_eq!((s[1].kind, s[1].errors), ("status", 1));
        assert_eq!(
            s[1].statuses,
            BTreeMap::from([(409, 2)]),
            "only failures count"
        );
        assert_eq!(s[1].retried, 1);
        assert!(s[0].statuses.is_empty());
        assert_eq!((r.total(), r.errors()), (101, 1));
    }
}
