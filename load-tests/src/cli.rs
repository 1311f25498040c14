//! Command line of `rollout-load`: what to simulate, against which server, under which load
//! shape, and for how long.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, ValueEnum};
use reqwest::Url;

/// rollout-load: simulate a fleet of Mender devices against a rollout server on this machine.
///
/// Exit status: 0 when the run went as expected; 1 on an error; 2 on a command line error;
/// 3 when the deployment's statistics disagree with what the simulated devices did; 4 when a
/// rollout run ended (by `--timeout`) before every device had finished; 130 after Ctrl-C,
/// which ends the run with a report of what was done and aborts a deployment the run created.
#[derive(Debug, Clone, Parser)]
#[command(name = "rollout-load", version, about)]
#[command(group(ArgGroup::new("token_source").required(true).args(["tokens", "data_dir"])))]
pub struct Cli {
    /// Base URL of the server; repeat it for the nodes of a cluster, and the devices are
    /// spread over them (each device keeps to one node; management calls go to the first).
    /// Only loopback addresses are accepted: this tool must not load anybody else's machine.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = parse_server)]
    pub server: Vec<Url>,

    /// What the devices do.
    #[arg(long, value_enum, default_value_t = Mode::Checkin)]
    pub mode: Mode,

    /// Number of simulated devices, named `dev-00000000`, `dev-00000001`, …
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub devices: u32,

    /// Closed loop: this many requests in flight, each sent as soon as the previous one of its
    /// worker is answered. With `--rate`, the cap on requests in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Open loop: start this many requests per second, whatever the answers' latency
    /// (latency is then measured from each request's scheduled start).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Stop after this long (`500ms`, `10s`, `2m`, or seconds). Default for `checkin` and
    /// `mixed` when neither `--duration` nor `--requests` is given: 10s.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,

    /// Hard limit of the request loop, whatever the mode (a `rollout` run ends here if devices
    /// are still unfinished).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How long a device waits after a check-in that found nothing before it asks again.
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,

    /// Share of devices (0 to 1) whose installation fails (`rollout` mode); those upload a log
    /// and report `failure` on every attempt. Chosen by a hash of the device index and `--seed`.
    #[arg(long, default_value_t = 0.05, value_parser = parse_share)]
    pub fail_share: f64,

    /// Seed of the failing-device choice and of the `mixed` mode's random picks.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// `mixed` mode: relative weights of check-ins, status reports and log uploads.
    #[arg(long, default_value = "checkin=90,status=9,log=1", value_parser = parse_mix)]
    pub mix: Mix,

    /// The artifact the devices report they run.
    #[arg(long, default_value = "factory-0.1")]
    pub current_artifact: String,

    /// The devices' device type.
    #[arg(long, default_value = "rollout-load-device")]
    pub device_type: String,

    /// Tenant of the devices and of the operator (`mender.tenant`); empty: the default tenant.
    #[arg(long, default_value = "")]
    pub tenant: String,

    /// Mint tokens with a placeholder signature, for a server started with
    /// `--trust-gateway`.
    #[arg(long, value_enum)]
    pub tokens: Option<TokenKind>,

    /// Mint tokens signed with the key in this rollout data dir (`token-signing.key`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Keep the tokens of this many devices (the first ones) instead of minting them on
    /// every use (~300 bytes each).
    #[arg(long, default_value_t = 200_000)]
    pub token_cache: u32,

    /// Before the run, upload an artifact (unless `--artifact-name` exists) and create a
    /// deployment of it to all devices; afterwards check its statistics.
    #[arg(long)]
    pub create_deployment: bool,

    /// Operator token for `--create-deployment` (default: minted like the device tokens).
    #[arg(long, env = "ROLLOUT_USER_TOKEN", hide_env_values = true)]
    pub user_token: Option<String>,

    /// The release to deploy with `--create-deployment`.
    #[arg(long, default_value = "rollout-load-1.0")]
    pub artifact_name: String,

    /// Size in bytes of the file inside a generated artifact (at least 4096).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(4096..=1 << 30))]
    pub artifact_size: u64,

    /// Name of the created deployment.
    #[arg(long, default_value = "rollout-load")]
    pub deployment_name: String,

    /// Phases of the created deployment as percentages, e.g. `10,30,60`; none: one phase.
    #[arg(long, value_parser = parse_phases)]
    pub phases: Option<Phases>,

    /// Seconds between the openings of consecutive phases.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub phase_interval_secs: u64,

    /// Extra attempts a device gets after a failure.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=60))]
    pub retries: u32,

    /// The created deployment aborts once this share of its finished devices failed,
    /// `PERCENT[:MIN_FINISHED]` (e.g. `5:100`: at least 100 finished, 5 % of them failed);
    /// the report says when and why.
    #[arg(long, value_parser = parse_auto_abort)]
    pub auto_abort: Option<AutoAbortRule>,

    /// Print only the JSON report on stdout.
    #[arg(long)]
    pub json: bool,

    /// Do not draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Worker threads of the client's runtime (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// What the simulated devices do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Check for an update, over and over.
    Checkin,
    /// Take part in a rollout from check-in to final status, until every device has finished.
    Rollout,
    /// A steady mix of check-ins, status reports and log uploads for `--duration`.
    Mixed,
}

impl Mode {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Checkin => "checkin",
            Mode::Rollout => "rollout",
            Mode::Mixed => "mixed",
        }
    }
}

/// Where device tokens come from, besides `--data-dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenKind {
    /// Tokens whose signature is a placeholder.
    Unsigned,
}

/// Weights of the `mixed` mode's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mix {
    /// Check-ins.
    pub checkin: u32,
    /// Status reports (`downloading`/`installing`, alternately).
    pub status: u32,
    /// Log uploads.
    pub log: u32,
}

/// `--auto-abort`: a failure share in percent and the finished devices it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoAbortRule {
    /// Share of the finished devices that failed, in percent (1 to 100).
    pub failure_percent: u32,
    /// Finished devices needed before the share counts.
    pub min_finished: u64,
}

fn parse_auto_abort(s: &str) -> Result<AutoAbortRule, String> {
    let (pct, min) = s.split_once(':').unwrap_or((s, "0"));
    let failure_percent = pct
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| format!("{pct:?} is not a percentage from 1 to 100"))?;
    let min_finished = min
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{min:?} is not a number of devices"))?;
    Ok(AutoAbortRule {
        failure_percent,
        min_finished,
    })
}

/// Phase sizes in percent of the devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phases(pub Vec<u32>);

impl Cli {
    /// How long the request loop may run: `--duration` capped by `--timeout`, with the
    /// 10-second default of the steady-state modes.
    pub fn run_limit(&self) -> Duration {
        let default = match (self.mode, self.requests) {
            (Mode::Rollout, _) | (_, Some(_)) => self.timeout,
            _ => Duration::from_secs(10),
        };
        self.duration.unwrap_or(default).min(self.timeout)
    }

    /// Checks that need more than one flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.create_deployment && self.mode == Mode::Checkin {
            return Err("--create-deployment needs --mode rollout or --mode mixed".into());
        }
        if self.create_deployment && self.artifact_name == self.current_artifact {
            return Err(format!(
                "--artifact-name and --current-artifact are both {:?}: devices would report \
                 the update as already installed",
                self.artifact_name
            ));
        }
        if self.mix.checkin + self.mix.status + self.mix.log == 0 {
            return Err("--mix needs at least one non-zero weight".into());
        }
        for (flag, v) in [
            ("--device-type", &self.device_type),
            ("--current-artifact", &self.current_artifact),
            ("--artifact-name", &self.artifact_name),
        ] {
            if v.is_empty() || v.len() > 4096 {
                return Err(format!("{flag} must be 1 to 4096 characters long"));
            }
        }
        Ok(())
    }
}

/// Parse `--server`: an `http://` URL whose host is a loopback address or `localhost`.
pub fn parse_server(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!("{s:?}: only http:// servers are supported"));
    }
    if !is_loopback(&url) {
        return Err(format!(
            "{s:?} is not a loopback address: rollout-load only targets servers on this machine \
             (127.0.0.0/8, ::1 or localhost)"
        ));
    }
    Ok(url)
}

/// Whether a URL's host is on this machine.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Parse `500ms`, `10s`, `2m`, `1h` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of requests per second"
        )),
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a share between 0 and 1")),
    }
}

/// Parse `checkin=90,status=9,log=1` (missing kinds weigh 0).
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut mix = Mix {
        checkin: 0,
        status: 0,
        log: 0,
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected KIND=WEIGHT"))?;
        let v: u32 = v
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the weight must be a whole number"))?;
        match k.trim() {
            "checkin" => mix.checkin = v,
            "status" => mix.status = v,
            "log" => mix.log = v,
            other => return Err(format!("unknown kind {other:?} (checkin, status, log)")),
        }
    }
    Ok(mix)
}

/// Parse `10,30,60`.
pub fn parse_phases(s: &str) -> Result<Phases, String> {
    let phases = s
        .split(',')
        .map(|p| match p.trim().parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(format!("phase {p:?} is not a percentage from 1 to 100")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if phases.iter().sum::<u32>() > 100 {
        return Err(format!("the phases of {s:?} add up to more than 100 %"));
    }
    Ok(Phases(phases))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_accepted() {
        assert!(parse_server("http://127.0.0.1:8080").is_ok());
        assert!(parse_server("http://127.1.2.3:1").is_ok());
        assert!(parse_server("http://[::1]:8080/").is_ok());
        assert!(parse_server("http://localhost:8080").is_ok());
        assert!(parse_server("http://10.0.0.1:8080").is_err());
        assert!(parse_server("http://example.com").is_err());
        assert!(parse_server("https://127.0.0.1").is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn mixes_and_phases_parse() {
        let m = parse_mix("checkin=5, log=1").unwrap();
        assert_eq!((m.checkin, m.status, m.log), (5, 0, 1));
        assert!(parse_mix("reboot=1").is_err());
        assert_eq!(parse_phases("10,30,60").unwrap().0, vec![10, 30, 60]);
        assert!(parse_phases("60,60").is_err());
        assert!(parse_phases("0,10").is_err());
    }
}
