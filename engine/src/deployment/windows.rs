//! Maintenance windows: recurring times, given as cron patterns in a named time zone, in
//! which a deployment's devices may start the update. Pure time arithmetic; the actor asks
//! [`Windows::open`] before a device starts.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use storage::MaintenanceWindow;
use time::OffsetDateTime;

use crate::error::{EngineError, Result};

/// Most windows one deployment may have.
pub(crate) const MAX_WINDOWS: usize = 16;
/// Longest window: a week (a longer one never closes for a weekly pattern).
pub(crate) const MAX_WINDOW_MINUTES: u32 = 7 * 24 * 60;

/// A deployment's windows, compiled, with the last answer kept until it can change (so a
/// check-in storm costs a comparison, not a cron search).
#[derive(Debug, Default)]
pub(crate) struct Windows {
    windows: Vec<Window>,
    /// Whether the windows were open at the last question, and until when that holds.
    known: Option<(bool, OffsetDateTime)>,
    /// Closed for good (see [`Windows::never`]).
    never: bool,
}

#[derive(Debug)]
struct Window {
    cron: Cron,
    zone: Tz,
    length: chrono::Duration,
}

impl Windows {
    /// Compile and check windows as given in a request or read from the store.
    pub(crate) fn compile(specs: &[MaintenanceWindow], now: OffsetDateTime) -> Result<Self> {
        if specs.len() > MAX_WINDOWS {
            return Err(invalid(format!(
                "at most {MAX_WINDOWS} maintenance_windows"
            )));
        }
        let windows = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                Window::compile(spec, now)
                    .map_err(|e| invalid(format!("maintenance_windows[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Windows {
            windows,
            ..Windows::default()
        })
    }

    /// Windows that never open: what a stored window that no longer compiles becomes, so
    /// that an upgrade never hands out updates outside the windows an operator set.
    pub(crate) fn never() -> Self {
        Windows {
            never: true,
            ..Windows::default()
        }
    }

    /// Whether devices may start the update at `now` (always, without windows).
    pub(crate) fn open(&mut self, now: OffsetDateTime) -> bool {
        if self.never {
            return false;
        }
        if let Some((open, until)) = self.known {
            if now < until {
                return open;
            }
        }
        if self.windows.is_empty() {
            return true;
        }
        let t = to_chrono(now);
        let mut open = false;
        let mut until: Option<DateTime<Utc>> = None;
        for w in &self.windows {
            let (is_open, changes) = w.state(t);
            open |= is_open;
            until = match (until, changes) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        // A pattern with no further occurrence: look again in a day.
        let until = until.unwrap_or(t + chrono::Duration::days(1));
        self.known = Some((open, from_chrono(until)));
        open
    }
}

impl Window {
    fn compile(spec: &MaintenanceWindow, now: OffsetDateTime) -> std::result::Result<Self, String> {
        let zone = Tz::from_str(&spec.time_zone).map_err(|_| {
            format!(
                "unknown time_zone {:?} (an IANA name such as Europe/Berlin)",
                spec.time_zone
            )
        })?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&spec.cron)
            .map_err(|e| format!("cron {:?}: {e}", spec.cron))?;
        if !(1..=MAX_WINDOW_MINUTES).contains(&spec.duration_minutes) {
            return Err(format!(
                "duration_minutes must be 1 to {MAX_WINDOW_MINUTES}"
            ));
        }
        let w = Window {
            cron,
            zone,
            length: chrono::Duration::minutes(i64::from(spec.duration_minutes)),
        };
        if w.next_start(to_chrono(now)).is_none() {
            return Err(format!("cron {:?} never matches", spec.cron));
        }
        Ok(w)
    }

    /// Whether this window is open at `t`, and when that may change (none: never again).
    /// It is open when its latest start at or before `t` was less than `length` ago.
    fn state(&self, t: DateTime<Utc>) -> (bool, Option<DateTime<Utc>>) {
        let latest = self
            .cron
            .find_previous_occurrence(&t.with_timezone(&self.zone), true)
            .ok()
            .map(|d| d.with_timezone(&Utc));
        match latest {
            Some(start) if t < start + self.length => (true, Some(start + self.length)),
            _ => (false, self.next_start(t)),
        }
    }

    /// The first time this window opens strictly after `t`.
    fn next_start(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.zone), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

fn to_chrono(t: OffsetDateTime) -> DateTime<Utc> {
    let nanos = t.unix_timestamp_nanos();
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    Utc.timestamp_opt(secs, sub).single().unwrap_or_default()
}

fn from_chrono(t: DateTime<Utc>) -> OffsetDateTime {
    let nanos = i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn invalid(msg: String) -> EngineError {
    EngineError::Invalid(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn windows(specs: &[(&str, &str, u32)], now: OffsetDateTime) -> Result<Windows> {
        let specs: Vec<MaintenanceWindow> = specs
            .iter()
            .map(|(cron, zone, minutes)| MaintenanceWindow {
                cron: (*cron).into(),
                time_zone: (*zone).into(),
                duration_minutes: *minutes,
            })
            .collect();
        Windows::compile(&specs, now)
    }

    #[test]
    fn a_window_across_midnight_is_open_until_its_length_has_passed() {
        let now = datetime!(2026-12-02 12:00 UTC);
        let mut w = windows(&[("0 23 * * *", "UTC", 180)], now).unwrap();
        assert!(!w.open(datetime!(2026-12-02 22:59:59 UTC)));
        assert!(w.open(datetime!(2026-12-02 23:00 UTC)));
        assert!(w.open(datetime!(2026-12-03 01:59:59 UTC)));
        assert!(!w.open(datetime!(2026-12-03 02:00 UTC)));
        assert!(w.open(datetime!(2026-12-03 23:30 UTC)));
    }

    #[test]
    fn the_pattern_is_local_time_in_the_zone_on_both_sides_of_a_dst_change() {
        // Berlin: UTC+1 until 2026-03-29 02:00 local, UTC+2 after.
        let now = datetime!(2026-03-01 00:00 UTC);
        let mut w = windows(&[("0 22 * * *", "Europe/Berlin", 60)], now).unwrap();
        // 22:00 local is 21:00 UTC in winter ...
        assert!(w.open(datetime!(2026-03-28 21:30 UTC)));
        assert!(!w.open(datetime!(2026-03-28 22:00 UTC)));
        // ... and 20:00 UTC in summer.
        assert!(!w.open(datetime!(2026-03-29 19:59 UTC)));
        assert!(w.open(datetime!(2026-03-29 20:00 UTC)));
        assert!(!w.open(datetime!(2026-03-29 21:00 UTC)));
    }

    #[test]
    fn a_window_spanning_the_dst_change_lasts_its_length_in_real_time() {
        // Opens 01:00 local (00:00 UTC) on the night clocks go forward; 3 hours later it
        // is 04:00 local (02:00 UTC... then +1): it closes at 03:00 UTC whatever the clock says.
        let now = datetime!(2026-03-01 00:00 UTC);
        let mut w = windows(&[("0 1 29 3 *", "Europe/Berlin", 180)], now).unwrap();
        assert!(!w.open(datetime!(2026-03-28 23:59 UTC)));
        assert!(w.open(datetime!(2026-03-29 00:00 UTC)));
        assert!(w.open(datetime!(2026-03-29 02:59 UTC)));
        assert!(!w.open(datetime!(2026-03-29 03:00 UTC)));
    }

    #[test]
    fn any_open_window_admits() {
        let now = datetime!(2026-12-02 12:00 UTC);
        let mut w = windows(
            &[
                ("0 2 * * MON-FRI", "UTC", 60),
                ("0 10 * * SAT,SUN", "UTC", 120),
            ],
            now,
        )
        .unwrap();
        assert!(w.open(datetime!(2026-12-04 02:30 UTC))); // Friday night
        assert!(!w.open(datetime!(2026-12-05 02:30 UTC))); // Saturday night
        assert!(w.open(datetime!(2026-12-05 11:59 UTC))); // Saturday morning
        assert!(!w.open(datetime!(2026-12-07 11:00 UTC))); // Monday morning
    }

    #[test]
    fn bad_windows_are_refused_with_the_reason() {
        let now = datetime!(2026-12-02 12:00 UTC);
        let err = |specs: &[(&str, &str, u32)]| match windows(specs, now) {
            Err(EngineError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert!(err(&[("0 2 * * *", "Mars/Olympus", 60)]).contains("time_zone"));
        assert!(err(&[("0 2 * *", "UTC", 60)]).contains("cron"));
        assert!(err(&[("0 0 2 * * *", "UTC", 60)]).contains("cron"));
        assert!(err(&[("0 2 * * *", "UTC", 0)]).contains("duration_minutes"));
        assert!(err(&[("0 2 * * *", "UTC", MAX_WINDOW_MINUTES + 1)]).contains("duration_minutes"));
        assert!(err(&[("0 0 30 2 *", "UTC", 60)]).contains("never matches"));
        let many = vec![("0 2 * * *", "UTC", 60); MAX_WINDOWS + 1];
        assert!(err(&many).contains("at most"));
    }

    #[test]
    fn no_windows_means_always_open_and_never_means_never() {
        let now = datetime!(2026-12-02 12:00 UTC);
        assert!(windows(&[], now).unwrap().open(now));
        assert!(!Windows::never().open(now));
    }
}
