//! A new deployment: its input, its validation, and phase admission.

use std::collections::HashSet;

use serde::{Deserialize, Deserializer};
use storage::PhaseRecord;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{EngineError, Result};

/// Longest name or artifact name.
pub const MAX_NAME: usize = 4096;
/// Longest device id a deployment lists: ids are UUIDs or the like; a 1 MB "id" names no
/// device and would only be stored and served back.
const MAX_DEVICE_ID: usize = 1024;

/// `POST /deployments` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewDeployment {
    /// Deployment name.
    pub name: String,
    /// The release to deploy.
    pub artifact_name: String,
    /// Device ids.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Instead of `devices`: every device accepted in the tenant when the deployment is
    /// created.
    #[serde(default)]
    pub all_devices: bool,
    /// Phases (none: everyone at once).
    #[serde(default)]
    pub phases: Option<Vec<NewPhase>>,
    /// Extra attempts after a failure.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Hand the update also to devices that report running the release already.
    #[serde(default)]
    pub force_installation: bool,
    /// A dynamic deployment: the id of a saved inventory filter.
    #[serde(default)]
    pub filter_id: Option<Uuid>,
    /// A dynamic deployment: a filter given inline.
    #[serde(default)]
    pub filter: Option<InlineFilter>,
    /// A dynamic deployment takes at most this many devices.
    #[serde(default)]
    pub max_devices: Option<u64>,
    /// Instead of `devices`: the members of this inventory group at creation (set from the
    /// path of `POST /deployments/group/{name}`, never from the body).
    #[serde(skip)]
    pub group: Option<String>,
    /// Abort (or stop admitting) when too many devices fail.
    #[serde(default)]
    pub auto_abort: Option<storage::AutoAbort>,
    /// At most so many devices start the update per minute.
    #[serde(default)]
    pub pacing: Option<storage::Pacing>,
    /// A device downloading, installing or rebooting longer than this many seconds fails.
    #[serde(default)]
    pub device_timeout_seconds: Option<u64>,
    /// Devices start the update only inside one of these windows.
    #[serde(default)]
    pub maintenance_windows: Vec<storage::MaintenanceWindow>,
    /// No device starts the update after this time.
    #[serde(default)]
    pub end: Option<storage::DeploymentEnd>,
    /// Where devices whose client supports it stop and wait for the operator.
    #[serde(default)]
    pub update_control_map: Option<storage::UpdateControlMap>,
}

/// A dynamic deployment's filter, given in the request rather than saved first.
#[derive(Debug, Clone, Deserialize)]
pub struct InlineFilter {
    /// A name for it (the deployment's, if left out).
    #[serde(default)]
    pub name: Option<String>,
    /// The terms, all of which must hold.
    pub terms: Vec<storage::FilterTerm>,
}

impl NewDeployment {
    /// Whether devices that match its filter later join it.
    pub fn is_dynamic(&self) -> bool {
        self.filter_id.is_some() || self.filter.is_some()
    }
}

/// One requested phase.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewPhase {
    /// Percentage of the devices.
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// When it opens (only the first phase, and a phase with a gate or an approval, may
    /// leave it out).
    #[serde(default, deserialize_with = "lenient_time")]
    pub start_ts: Option<OffsetDateTime>,
    /// It opens only once the previous phase's devices succeeded this well.
    #[serde(default)]
    pub gate: Option<storage::PhaseGate>,
    /// It opens only once an operator approved it.
    #[serde(default)]
    pub needs_approval: bool,
}

/// RFC 3339, also with the `+0000` offsets of the Mender API examples.
fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    parse_time(&s)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("start_ts {s:?} is not an RFC 3339 time")))
}

/// Parse RFC 3339, accepting `+HHMM` offsets too.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    // `…+HHMM`: the last four bytes are ASCII digits, so every cut below is on a char
    // boundary whatever the rest of the input holds.
    let b = s.as_bytes();
    let n = b.len();
    if n > 5 && matches!(b[n - 5], b'+' | b'-') && b[n - 4..].iter().all(u8::is_ascii_digit) {
        let fixed = format!("{}:{}", &s[..n - 2], &s[n - 2..]);
        return OffsetDateTime::parse(&fixed, &Rfc3339).ok();
    }
    None
}

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::Invalid(msg.into())
}

/// Check a new deployment (its `devices` resolved from whatever it targets) and work out
/// its phases. Errors name the problem. A dynamic deployment may start with no device; its
/// phases' percentages are of `max_devices`, or else of the devices it starts with, and
/// devices that join later go to the last phase.
pub fn validate(new: &NewDeployment, now: OffsetDateTime) -> Result<Vec<PhaseRecord>> {
    check_text("name", &new.name)?;
    check_text("artifact_name", &new.artifact_name)?;
    let dynamic = new.is_dynamic();
    match new.max_devices {
        Some(0) => return Err(invalid("max_devices must be at least 1")),
        Some(_) if !dynamic => {
            return Err(invalid("max_devices applies to dynamic deployments only"))
        }
        _ => {}
    }
    if new.devices.is_empty() && !dynamic {
        return Err(invalid(
            "provide a list of devices, or set all_devices to deploy to every accepted device",
        ));
    }
    let mut seen = HashSet::with_capacity(new.devices.len());
    for d in &new.devices {
        if d.trim().is_empty() || d.len() > MAX_DEVICE_ID || !storage::keys::is_valid_component(d) {
            return Err(invalid(format!(
                "invalid device id {d:?}: it must be 1 to {MAX_DEVICE_ID} bytes, not blank"
            )));
        }
        if !seen.insert(d.as_str()) {
            return Err(invalid(format!("device {d:?} is listed twice")));
        }
    }
    let phases = new.phases.as_deref().unwrap_or(&[]);
    if dynamic {
        let n = new.max_devices.unwrap_or(new.devices.len() as u64);
        return plan(phases, n, true, now);
    }
    plan_phases(phases, new.devices.len() as u64, now)
}

fn check_text(field: &str, value: &str) -> Result<()> {
    let n = value.chars().count();
    if n == 0 || n > MAX_NAME {
        return Err(invalid(format!(
            "{field} must be 1 to {MAX_NAME} characters long"
        )));
    }
    Ok(())
}

/// Phases with capacities: each `batch_size` percent of `n`, rounded down; the last phase
/// takes the rest.
pub fn plan_phases(phases: &[NewPhase], n: u64, now: OffsetDateTime) -> Result<Vec<PhaseRecord>> {
    plan(phases, n, false, now)
}

/// [`plan_phases`]; `open_ended` (a dynamic deployment) lets a phase hold no device yet.
fn plan(
    phases: &[NewPhase],
    n: u64,
    open_ended: bool,
    now: OffsetDateTime,
) -> Result<Vec<PhaseRecord>> {
    if phases.is_empty() {
        return Ok(vec![phase(None, now, n)]);
    }
    let mut out = Vec::with_capacity(phases.len());
    let mut percent_total = 0u32;
    let mut assigned = 0u64;
    let mut previous_start: Option<OffsetDateTime> = None;
    for (i, p) in phases.iter().enumerate() {
        let last = i + 1 == phases.len();
        let held = p.gate.is_some() || p.needs_approval;
        if i == 0 && held {
            return Err(invalid(
                "the first phase cannot have a gate or need approval (no phase precedes it)",
            ));
        }
        if let Some(g) = &p.gate {
            if !(1..=100).contains(&g.success_percent) {
                return Err(invalid(format!(
                    "phase {}: gate.success_percent must be 1 to 100",
                    i + 1
                )));
            }
        }
        let start = match (i, p.start_ts, previous_start) {
            (_, Some(t), _) => t,
            (0, None, _) => now,
            // Held by its gate or an approval, not by time: as soon as the previous phase.
            (_, None, Some(prev)) if held => prev,
            _ => {
                return Err(invalid(format!(
                    "phase {} has no start_ts (only the first phase, and a phase with a gate or an approval, may leave it out)",
                    i + 1
                )))
            }
        };
        if let (Some(prev), Some(_)) = (previous_start, p.start_ts) {
            if start <= prev {
                return Err(invalid(format!(
                    "phase {} starts before or with phase {}",
                    i + 1,
                    i
                )));
            }
        }
        previous_start = Some(start);
        let capacity = match (p.batch_size, last) {
            (Some(0), _) => return Err(invalid(format!("phase {} has a batch_size of 0", i + 1))),
            (Some(b), _) if b > 100 => {
                return Err(invalid(format!(
                    "phase {} has a batch_size over 100",
                    i + 1
                )))
            }
            (Some(b), false) => {
                percent_total += b;
                u64::from(b) * n / 100
            }
            (b, true) => {
                percent_total += b.unwrap_or(0);
                n.saturating_sub(assigned)
            }
            (None, false) => {
                return Err(invalid(format!(
                    "phase {} needs a batch_size (only the last phase may leave it out)",
                    i + 1
                )))
            }
        };
        if percent_total > 100 {
            return Err(invalid(
                "the phases' batch_size values add up to more than 100",
            ));
        }
        if capacity == 0 && !open_ended {
            return Err(invalid(format!(
                "phase {} would hold 0 of the {n} devices; raise its batch_size",
                i + 1
            )));
        }
        assigned += capacity;
        out.push(PhaseRecord {
            gate: p.gate,
            needs_approval: p.needs_approval,
            ..phase(p.batch_size, start, capacity)
        });
    }
    Ok(out)
}

fn phase(batch_size: Option<u32>, start_ts: OffsetDateTime, capacity: u64) -> PhaseRecord {
    PhaseRecord {
        id: Uuid::new_v4(),
        batch_size,
        start_ts,
        capacity,
        device_count: 0,
        gate: None,
        needs_approval: false,
        approved: None,
    }
}

/// Admit one device into the earliest open phase with room; its index, or `None` to wait.
/// A phase is open from its `start_ts`, once it is unlocked: approved if it needs approval,
/// and its gate passed (`gate_passed(i)` for phase `i`) if it has one. A phase that admitted
/// a device stays unlocked; a locked phase keeps every later phase closed.
pub fn admit(
    phases: &mut [PhaseRecord],
    now: OffsetDateTime,
    gate_passed: impl Fn(usize, &storage::PhaseGate) -> bool,
) -> Option<u32> {
    for (i, p) in phases.iter_mut().enumerate() {
        let unlocked = p.device_count > 0
            || ((!p.needs_approval || p.approved.is_some())
                && p.gate.as_ref().is_none_or(|g| gate_passed(i, g)));
        if !unlocked {
            return None;
        }
        if p.start_ts <= now && p.device_count < p.capacity {
            p.device_count += 1;
            return Some(i as u32);
        }
    }
    None
}

/// The next time a phase opens after `now`.
pub fn next_opening(phases: &[PhaseRecord], now: OffsetDateTime) -> Option<OffsetDateTime> {
    phases.iter().map(|p| p.start_ts).find(|t| *t > now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn start_times_with_multibyte_characters_near_the_end_are_refused_not_a_panic() {
        // Found by the json_bodies fuzz target: a cut inside 'ϑ' panicked.
        assert_eq!(parse_time("2026-0ϑs"), None);
        assert_eq!(parse_time("2026-01-01T00:00:00+ϑ00"), None);
        assert_eq!(parse_time("2026-01-01T00:00:00+00ϑ"), None);
        assert!(parse_time("2026-01-01T00:00:00+0100").is_some());
    }

    fn p(batch: Option<u32>, offset_min: Option<i64>, now: OffsetDateTime) -> NewPhase {
        NewPhase {
            gate: None,
            needs_approval: false,
            batch_size: batch,
            start_ts: offset_min.map(|m| now + Duration::minutes(m)),
        }
    }

    #[test]
    fn percentages_round_down_and_the_last_phase_takes_the_rest() {
        let now = OffsetDateTime::now_utc();
        let phases = [
            p(Some(10), None, now),
            p(Some(25), Some(10), now),
            p(None, Some(20), now),
        ];
        let plan = plan_phases(&phases, 11, now).unwrap();
        let caps: Vec<u64> = plan.iter().map(|p| p.capacity).collect();
        assert_eq!(caps, vec![1, 2, 8]);
    }

    #[test]
    fn a_phase_rounding_to_zero_devices_is_refused() {
        let now = OffsetDateTime::now_utc();
        let err = plan_phases(&[p(Some(5), None, now), p(None, Some(1), now)], 11, now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("phase 1 would hold 0"), "{err}");
    }

    #[test]
    fn percentages_over_100_and_unordered_starts_are_refused() {
        let now = OffsetDateTime::now_utc();
        assert!(plan_phases(
            &[p(Some(60), None, now), p(Some(50), Some(1), now)],
            10,
            now
        )
        .unwrap_err()
        .to_string()
        .contains("more than 100"));
        assert!(
            plan_phases(&[p(Some(50), Some(5), now), p(None, Some(1), now)], 10, now)
                .unwrap_err()
                .to_string()
                .contains("starts before")
        );
        assert!(
            plan_phases(&[p(Some(50), None, now), p(None, None, now)], 10, now)
                .unwrap_err()
                .to_string()
                .contains("no start_ts")
        );
    }

    #[test]
    fn admission_fills_open_phases_first_come_first_served() {
        let now = OffsetDateTime::now_utc();
        let mut plan =
            plan_phases(&[p(Some(50), None, now), p(None, Some(10), now)], 4, now).unwrap();
        assert_eq!(admit(&mut plan, now, |_, _| true), Some(0));
        assert_eq!(admit(&mut plan, now, |_, _| true), Some(0));
        assert_eq!(admit(&mut plan, now, |_, _| true), None);
        let later = now + Duration::minutes(10);
        assert_eq!(next_opening(&plan, now), Some(later));
        assert_eq!(admit(&mut plan, later, |_, _| true), Some(1));
        assert_eq!(plan[0].device_count, 2);
        assert_eq!(plan[1].device_count, 1);
    }

    #[test]
    fn mender_style_offsets_parse() {
        assert!(parse_time("2019-07-07T21:16:17.063+0000").is_some());
        assert!(parse_time("2019-07-07T21:16:17Z").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
