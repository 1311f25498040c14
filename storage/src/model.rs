//! The records rollout persists, shaped like the management API's JSON so that the API layer
//! can serve them without a translation layer. Every record names its tenant.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub use crate::tenant::{TenantId, TenantIdError, MAX_TENANT_ID_LEN};

/// `info` of an artifact: the Mender artifact format and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// Always `mender` for artifacts we accept.
    pub format: String,
    /// The artifact format version (2 or 3).
    pub version: u32,
}

/// `type_info` of an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeInfo {
    /// The payload type (`rootfs-image`, `single-file`, …); `None` for an empty payload.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// One payload file of an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFile {
    /// The file name inside the payload.
    pub name: String,
    /// Hex sha256 of the uncompressed file, as the manifest lists it.
    pub checksum: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time recorded in the payload tar.
    #[serde(with = "time::serde::rfc3339")]
    pub date: OffsetDateTime,
}

/// One update (payload) of an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The payload type.
    pub type_info: TypeInfo,
    /// The payload's files.
    pub files: Vec<UpdateFile>,
    /// The update's `meta-data` documents. Always an array: mender-cli rejects an object.
    pub meta_data: Vec<serde_json::Value>,
}

/// What the artifact parser extracts from a Mender artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// `artifact_name`.
    pub name: String,
    /// Device types the artifact installs on.
    pub device_types_compatible: Vec<String>,
    /// Format and version.
    pub info: ArtifactInfo,
    /// Whether the artifact carries `manifest.sig`.
    pub signed: bool,
    /// The payloads.
    pub updates: Vec<Update>,
    /// Everything the artifact provides (header-info and type-info merged).
    pub artifact_provides: BTreeMap<String, String>,
    /// Everything the artifact depends on (header-info and type-info merged).
    pub artifact_depends: BTreeMap<String, serde_json::Value>,
    /// Provides that installing the artifact clears.
    pub clears_artifact_provides: Vec<String>,
}

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Artifact id.
    pub id: Uuid,
    /// Owning tenant.
    pub tenant: TenantId,
    /// Operator-editable description.
    pub description: String,
    /// Parsed metadata.
    #[serde(flatten)]
    pub meta: ArtifactMeta,
    /// Bytes stored in the blob store.
    pub size: u64,
    /// Creation or last edit.
    #[serde(with = "time::serde::rfc3339")]
    pub modified: OffsetDateTime,
}

/// A device's status within one deployment. Serde names match the API exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Waiting for the device to pick up the deployment.
    Pending,
    /// Downloading the artifact.
    Downloading,
    /// Installing.
    Installing,
    /// Rebooting into the new software.
    Rebooting,
    /// Paused before installing (update control maps).
    PauseBeforeInstalling,
    /// Paused before committing.
    PauseBeforeCommitting,
    /// Paused before rebooting.
    PauseBeforeRebooting,
    /// Installed successfully.
    Success,
    /// Failed for good (no retries left).
    Failure,
    /// No artifact of the release fits the device type.
    Noartifact,
    /// The device already runs the artifact.
    #[serde(rename = "already-installed")]
    AlreadyInstalled,
    /// The deployment was aborted before the device finished.
    Aborted,
    /// The device was decommissioned.
    Decommissioned,
}

impl DeviceStatus {
    /// Every status, in the order statistics list them.
    pub const ALL: [DeviceStatus; 13] = [
        DeviceStatus::Pending,
        DeviceStatus::Downloading,
        DeviceStatus::Installing,
        DeviceStatus::Rebooting,
        DeviceStatus::PauseBeforeInstalling,
        DeviceStatus::PauseBeforeCommitting,
        DeviceStatus::PauseBeforeRebooting,
        DeviceStatus::Success,
        DeviceStatus::Failure,
        DeviceStatus::Noartifact,
        DeviceStatus::AlreadyInstalled,
        DeviceStatus::Aborted,
        DeviceStatus::Decommissioned,
    ];

    /// Terminal statuses never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeviceStatus::Success
                | DeviceStatus::Failure
                | DeviceStatus::Noartifact
                | DeviceStatus::AlreadyInstalled
                | DeviceStatus::Aborted
                | DeviceStatus::Decommissioned
        )
    }

    /// The API name (`already-installed`, `pause_before_installing`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Downloading => "downloading",
            DeviceStatus::Installing => "installing",
            DeviceStatus::Rebooting => "rebooting",
            DeviceStatus::PauseBeforeInstalling => "pause_before_installing",
            DeviceStatus::PauseBeforeCommitting => "pause_before_committing",
            DeviceStatus::PauseBeforeRebooting => "pause_before_rebooting",
            DeviceStatus::Success => "success",
            DeviceStatus::Failure => "failure",
            DeviceStatus::Noartifact => "noartifact",
            DeviceStatus::AlreadyInstalled => "already-installed",
            DeviceStatus::Aborted => "aborted",
            DeviceStatus::Decommissioned => "decommissioned",
        }
    }

    /// Index into [`DeviceStatus::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deployment's overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    /// The first phase starts in the future.
    Scheduled,
    /// No device has gone past pending.
    Pending,
    /// At least one device has moved.
    Inprogress,
    /// Every device is terminal, or the deployment was aborted.
    Finished,
}

impl DeploymentStatus {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Scheduled => "scheduled",
            DeploymentStatus::Pending => "pending",
            DeploymentStatus::Inprogress => "inprogress",
            DeploymentStatus::Finished => "finished",
        }
    }
}

/// One phase of a deployment as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// Phase id.
    pub id: Uuid,
    /// Percentage of the devices (the last phase may leave it out: the rest).
    pub batch_size: Option<u32>,
    /// When the phase opens.
    #[serde(with = "time::serde::rfc3339")]
    pub start_ts: OffsetDateTime,
    /// How many devices the phase admits.
    pub capacity: u64,
    /// Devices admitted so far.
    pub device_count: u64,
    /// The phase opens only once the previous phase's devices succeeded this well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<PhaseGate>,
    /// The phase opens only once an operator approved it.
    #[serde(default)]
    pub needs_approval: bool,
    /// When an operator approved it.
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub approved: Option<OffsetDateTime>,
}

/// What the previous phase must reach before a phase opens: of its devices that ended with
/// `success` or `failure` (at least `min_finished`, and at least one), `success_percent`
/// succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseGate {
    /// Share of the previous phase's finished devices that succeeded, in percent (1 to 100).
    pub success_percent: u32,
    /// Finished devices of the previous phase needed before the share counts.
    #[serde(default)]
    pub min_finished: u64,
}

/// The deployment header: everything but the per-device records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// Deployment id.
    pub id: Uuid,
    /// Owning tenant.
    pub tenant: TenantId,
    /// Operator-given name.
    pub name: String,
    /// The release (artifact name) deployed.
    pub artifact_name: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// When the deployment finished.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub finished: Option<OffsetDateTime>,
    /// Overall status.
    pub status: DeploymentStatus,
    /// Number of devices.
    pub device_count: u64,
    /// Extra attempts a device gets after a failure.
    pub retries: u32,
    /// The phases (always at least one).
    pub phases: Vec<PhaseRecord>,
    /// Whether an operator aborted it.
    #[serde(default)]
    pub aborted: bool,
    /// Ids of the artifacts of the release at creation time.
    #[serde(default)]
    pub artifacts: Vec<Uuid>,
    /// What the devices ended with, kept when the deployment finishes so that listings do
    /// not count its records (absent while it runs, and in deployments stored before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_statistics: Option<FinalStatistics>,
    /// Devices that start matching `filter` while it runs join it.
    #[serde(default)]
    pub dynamic: bool,
    /// The inventory filter of a dynamic deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<crate::DeploymentFilter>,
    /// A dynamic deployment takes at most this many devices, and finishes once they have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_devices: Option<u64>,
    /// The devices a dynamic deployment matched when it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_device_count: Option<u64>,
    /// Hand the update also to devices that report running the release already.
    #[serde(default)]
    pub force_installation: bool,
    /// What keeps a bad release from spreading, and what it did.
    #[serde(default, skip_serializing_if = "Safety::is_default")]
    pub safety: Safety,
}

/// A deployment's safety rules (set at creation) and their state (an operator's pause, an
/// auto-abort that tripped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Safety {
    /// Stop the deployment when too many devices fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_abort: Option<AutoAbort>,
    /// At most so many devices start the update per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing: Option<Pacing>,
    /// A device downloading, installing or rebooting longer than this fails (and is
    /// retried if it has attempts left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_timeout_secs: Option<u64>,
    /// An operator paused the deployment: no device starts the update until it resumes.
    #[serde(default)]
    pub paused: bool,
    /// Why the deployment stopped by itself, once it has: the auto-abort rule tripped, or
    /// its end time passed with [`EndAction::Abort`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// The auto-abort rule tripped with [`AbortAction::StopAdmitting`]: devices that have
    /// not started stay pending until an operator resumes or aborts the deployment.
    #[serde(default)]
    pub halted: bool,
    /// Devices start the update only inside one of these windows (none: at any time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance_windows: Vec<MaintenanceWindow>,
    /// No device starts the update after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DeploymentEnd>,
    /// Where devices whose client supports update control maps stop and wait (set at
    /// creation, replaced by the operator while the deployment runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_control_map: Option<UpdateControlMap>,
}

impl Safety {
    /// Whether no rule is set and nothing happened (then it is not stored).
    pub fn is_default(&self) -> bool {
        *self == Safety::default()
    }

    /// Whether devices that have not started the update may start it now.
    pub fn admits(&self) -> bool {
        !self.paused && !self.halted
    }
}

/// A recurring time in which devices may start the update: it opens at each time the cron
/// pattern matches in `time_zone` and stays open for `duration_minutes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    /// Five fields: minute, hour, day of month, month, day of week (`0 22 * * MON-FRI`).
    pub cron: String,
    /// An IANA time zone name (`Europe/Berlin`); the pattern is local time there, daylight
    /// saving included.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// How long each window stays open.
    pub duration_minutes: u32,
}

fn utc() -> String {
    "UTC".into()
}

/// When a deployment stops handing out the update, and what happens then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentEnd {
    /// From this time on no device starts the update.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happens at that time.
    #[serde(default)]
    pub action: EndAction,
}

/// What a deployment's end does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndAction {
    /// Devices in the middle of the update finish; the others stay pending until an operator
    /// aborts the deployment.
    #[default]
    StopAdmitting,
    /// Abort the deployment, as an operator would.
    Abort,
}

/// Mender's update control map as the operator sets it: what a device's client does when it
/// reaches each of three points of the update. Fields are checked as strictly as the Mender
/// client checks them (an unknown field makes the client drop the whole answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateControlMap {
    /// Which of several maps for a deployment wins on the device, -10 to 10.
    #[serde(default)]
    pub priority: i32,
    /// What happens at each point; a point left out continues.
    #[serde(default)]
    pub states: BTreeMap<ControlPoint, PointControl>,
}

/// A point of the update where a control map can stop the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ControlPoint {
    /// Before installing (the device reports `pause_before_installing` while it waits).
    #[serde(rename = "ArtifactInstall_Enter")]
    ArtifactInstallEnter,
    /// Before rebooting (`pause_before_rebooting`).
    #[serde(rename = "ArtifactReboot_Enter")]
    ArtifactRebootEnter,
    /// Before committing (`pause_before_committing`).
    #[serde(rename = "ArtifactCommit_Enter")]
    ArtifactCommitEnter,
}

/// What the client does at one point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointControl {
    /// What to do while the map is fresh.
    #[serde(default)]
    pub action: ControlAction,
    /// What to do once the device could not refresh the map in time (the client's default:
    /// `fail` for `pause`, else the action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_map_expire: Option<ExpireAction>,
    /// What the action becomes once it has been carried out (the client's default: the
    /// action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_action_executed: Option<ControlAction>,
}

/// An action of an update control map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    /// Go on, unless a map of higher priority says otherwise.
    #[default]
    Continue,
    /// Go on whatever other maps say.
    ForceContinue,
    /// Wait until a refreshed map says otherwise.
    Pause,
    /// Fail the update (and roll back where the device can).
    Fail,
}

/// What a client does at a point once its map has expired (pausing is not a choice there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpireAction {
    /// Go on.
    Continue,
    /// Go on whatever other maps say.
    ForceContinue,
    /// Fail the update.
    Fail,
}

/// When failures stop a deployment: once `failure_percent` of the finished devices (at
/// least `min_finished` of them) failed, overall or within one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoAbort {
    /// Share of the finished devices that failed, in percent (1 to 100).
    pub failure_percent: u32,
    /// Finished devices needed before the share counts (overall, and in a phase).
    #[serde(default)]
    pub min_finished: u64,
    /// What tripping does.
    #[serde(default)]
    pub action: AbortAction,
}

/// What a tripped auto-abort does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortAction {
    /// Abort the deployment, as an operator would.
    #[default]
    Abort,
    /// Let devices in the middle of the update finish, start no more.
    StopAdmitting,
}

/// How fast devices start the update: `per_minute` at first, multiplied by `factor` each
/// time `step` more devices have succeeded, never above `max_per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pacing {
    /// Devices that may start the update in any minute, at first.
    pub per_minute: u32,
    /// The ramp: the rate grows by this factor (more than 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// The ramp: successes between two increases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// The ramp never goes above this rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u32>,
}

/// A finished deployment's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalStatistics {
    /// Devices per status.
    pub status: BTreeMap<DeviceStatus, u64>,
    /// Bytes of the artifacts handed to the devices.
    pub total_size: u64,
}

/// One device's record in one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDeploymentRecord {
    /// The device id (JWT `sub`).
    pub device_id: String,
    /// Current status.
    pub status: DeviceStatus,
    /// Optional substate the device reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substate: Option<String>,
    /// When the record was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// When it became terminal.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub finished: Option<OffsetDateTime>,
    /// How many times the device has started the deployment.
    #[serde(default)]
    pub attempts: u32,
    /// Whether a log was uploaded.
    #[serde(default)]
    pub log: bool,
    /// Device type reported at the first check-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Artifact name reported at the first check-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_artifact: Option<String>,
    /// The artifact handed out to the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_id: Option<Uuid>,
    /// Index of the phase the device was admitted into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<u32>,
}

impl DeviceDeploymentRecord {
    /// A fresh `pending` record.
    pub fn pending(device_id: String, created: OffsetDateTime) -> Self {
        DeviceDeploymentRecord {
            device_id,
            status: DeviceStatus::Pending,
            substate: None,
            created,
            finished: None,
            attempts: 0,
            log: false,
            device_type: None,
            reported_artifact: None,
            artifact_id: None,
            phase: None,
        }
    }
}

/// One line of a device's deployment log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMessage {
    /// When the device logged it (RFC 3339).
    pub timestamp: String,
    /// Log level.
    pub level: String,
    /// The message.
    pub message: String,
}
