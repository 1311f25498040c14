//! rollout-load: a fleet simulator for rollout.
//!
//! It plays up to millions of Mender devices, each with its own JWT, against a rollout
//! server on this machine: plain check-ins, whole rollouts (check-in, download, status
//! reports, logs), or a steady mix; under a closed-loop or open-loop load. It can create the
//! deployment itself and then checks that the server's statistics match what the devices
//! did. At the end it prints throughput and latency percentiles per kind of request.
//!
//! The pieces: [`cli`] (options), [`tokens`] (JWTs), [`client`] (the device API over one
//! keep-alive pool), [`driver`] (load shape and stop condition), [`fleet`] (compact device
//! state and poll queue), [`scenario`] (one module per mode), [`manage`] and [`verify`]
//! (the operator side), [`stats`] and [`report`] (measurements and output).

pub mod cli;
pub mod client;
pub mod driver;
pub mod fleet;
pub mod manage;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod tokens;
pub mod verify;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use crate::cli::{Cli, Mode};
use crate::client::DeviceApi;
use crate::driver::Driver;
use crate::fleet::FleetState;
use crate::manage::{phase_capacities, DeploymentSpec, Management};
use crate::progress::{Measure, Progress};
use crate::report::{DeploymentReport, FleetReport, Report};
use crate::scenario::{Behaviour, Shared};
use crate::tokens::TokenSource;
use crate::verify::{check_statistics, PhaseWatch};

/// Exit status when the statistics disagree with the devices.
pub const EXIT_MISMATCH: u8 = 3;
/// Exit status when a rollout run ended before every device finished.
pub const EXIT_UNFINISHED: u8 = 4;
/// Exit status after Ctrl-C (the shell's 128 + SIGINT): the report is partial, and a
/// deployment the run created is aborted.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The deployment made by `--create-deployment`.
struct Created {
    mgmt: Management,
    id: String,
    uploaded: bool,
    watch: Option<PhaseWatch>,
}

/// Run the simulation `cli` describes; the report and the process exit status.
pub async fn run(cli: &Cli) -> anyhow::Result<(Report, u8)> {
    cli.validate().map_err(anyhow::Error::msg)?;
    let tokens = match &cli.data_dir {
        Some(dir) => TokenSource::from_data_dir(dir, &cli.tenant, cli.token_cache)?,
        None => TokenSource::unsigned(&cli.tenant, cli.token_cache),
    };
    let api = DeviceApi::new(&cli.server, &cli.device_type, &cli.current_artifact)?;
    let created = match cli.create_deployment {
        true => Some(create_deployment(cli, &api, &tokens).await?),
        false => None,
    };

    let driver = Driver::new(
        cli.concurrency as usize,
        cli.rate,
        cli.run_limit(),
        cli.requests,
    );
    let behaviour = Behaviour {
        poll_interval: Duration::from_millis(cli.poll_interval_ms),
        fail_share: cli.fail_share,
        seed: cli.seed,
        retries: cli.retries,
        mix: cli.mix,
        deployment_over: created
            .as_ref()
            .and_then(|c| c.watch.as_ref())
            .map(|w| w.over.clone())
            .unwrap_or_default(),
    };
    let shared = Arc::new(Shared::new(driver, api, tokens, cli.devices, behaviour));
    let fleet = Arc::new(FleetState::new(match cli.mode {
        Mode::Rollout => cli.devices,
        _ => 0,
    }));
    let measure = match (cli.mode, cli.requests) {
        (Mode::Rollout, _) => Measure::Devices(fleet.clone()),
        (_, Some(n)) => Measure::Requests(n),
        _ => Measure::Time(cli.run_limit()),
    };
    let progress = Progress::start(shared.clone(), measure, !cli.no_progress);
    let interrupted = Arc::new(AtomicBool::new(false));
    let on_ctrl_c = tokio::spawn(stop_on_ctrl_c(shared.clone(), interrupted.clone()));
    let started = Instant::now();
    let cpu_at_start = report::cpu_seconds();
    match cli.mode {
        Mode::Checkin => scenario::checkin::run(shared.clone()).await,
        Mode::Rollout => scenario::rollout::run(shared.clone(), fleet.clone()).await,
        Mode::Mixed => scenario::mixed::run(shared.clone()).await,
    }
    let elapsed = started.elapsed();
    on_ctrl_c.abort();
    progress.finish();
    let interrupted = interrupted.load(Ordering::Relaxed);

    let recorder = &shared.driver.recorder;
    let requests = recorder.total();
    let mut report = Report {
        mode: cli.mode,
        server: cli
            .server
            .iter()
            .map(|s| s.as_str().trim_end_matches('/'))
            .collect::<Vec<_>>()
            .join(","),
        devices: cli.devices,
        concurrency: cli.concurrency,
        rate: cli.rate,
        elapsed_secs: elapsed.as_secs_f64(),
        requests,
        errors: recorder.errors(),
        throughput_rps: requests as f64 / elapsed.as_secs_f64().max(1e-9),
        client_cpu_percent: cpu_at_start
            .zip(report::cpu_seconds())
            .map(|(start, end)| 100.0 * (end - start) / elapsed.as_secs_f64().max(1e-9)),
        kinds: recorder
            .summaries(elapsed)
            .into_iter()
            .map(|k| (k.kind, k))
            .collect(),
        fleet: None,
        deployment: None,
        error: shared.fatal(),
        interrupted,
    };
    let mut exit = 0;
    if cli.mode == Mode::Rollout {
        let [active, success, failure, stopped] = fleet.counts();
        report.fleet = Some(FleetReport {
            finished: success + failure + stopped,
            success,
            failure,
            stopped,
            unfinished: active,
        });
        if active > 0 {
            exit = EXIT_UNFINISHED;
        }
    }
    if let Some(c) = created {
        if interrupted {
            // Left running, the deployment would keep its devices from the next run.
            c.mgmt.abort(&c.id).await?;
        }
        let d = finish_deployment(cli, c, &fleet).await?;
        if d.statistics.as_ref().is_some_and(|s| !s.ok) {
            exit = EXIT_MISMATCH;
        }
        report.deployment = Some(d);
    }
    if report.error.is_some() {
        exit = 1;
    }
    if interrupted {
        exit = EXIT_INTERRUPTED;
    }
    Ok((report, exit))
}

/// On Ctrl-C, end the run as its deadline would: the report covers what was done.
async fn stop_on_ctrl_c(shared: Arc<Shared>, interrupted: Arc<AtomicBool>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("rollout-load: interrupted; stopping and reporting the run so far");
        interrupted.store(true, Ordering::Relaxed);
        shared.driver.stop.cancel();
    }
}

/// Upload the artifact unless its release exists, create the deployment, and (in `rollout`
/// mode) start watching its phases.
async fn create_deployment(
    cli: &Cli,
    api: &DeviceApi,
    tokens: &TokenSource,
) -> anyhow::Result<Created> {
    let token = match &cli.user_token {
        Some(t) => t.clone(),
        None => tokens
            .user("rollout-load")
            .context("minting the operator token")?,
    };
    let first = cli.server.first().context("no --server given")?;
    let mgmt = Management::new(api.http().clone(), first, &token);
    let exists = mgmt
        .artifact_exists(&cli.artifact_name, &cli.device_type)
        .await?;
    if !exists {
        mgmt.generate_artifact(&cli.artifact_name, &cli.device_type, cli.artifact_size)
            .await?;
    }
    let phases = cli.phases.as_ref().map(|p| p.0.clone()).unwrap_or_default();
    let spec = DeploymentSpec {
        name: cli.deployment_name.clone(),
        artifact_name: cli.artifact_name.clone(),
        devices: cli.devices,
        phases: phases.clone(),
        phase_interval_secs: cli.phase_interval_secs,
        retries: cli.retries,
        auto_abort: cli.auto_abort,
    };
    let created_at = Instant::now();
    let id = mgmt.create_deployment(&spec).await?;
    let watch = (cli.mode == Mode::Rollout).then(|| {
        PhaseWatch::start(
            mgmt.clone(),
            id.clone(),
            created_at,
            phases.clone(),
            phase_capacities(&phases, u64::from(cli.devices)),
            Duration::from_secs(cli.phase_interval_secs),
        )
    });
    Ok(Created {
        mgmt,
        id,
        uploaded: !exists,
        watch,
    })
}

/// Stop watching, read the deployment, and (in `rollout` mode) check its statistics.
async fn finish_deployment(
    cli: &Cli,
    c: Created,
    fleet: &FleetState,
) -> anyhow::Result<DeploymentReport> {
    let (phases, finished_secs) = match c.watch {
        Some(w) => w.finish().await,
        None => (Vec::new(), None),
    };
    let view = c.mgmt.deployment(&c.id).await?;
    let statistics = if cli.mode == Mode::Rollout {
        let actual = c.mgmt.statistics(&c.id).await?;
        let [_, success, failure, stopped] = fleet.counts();
        Some(check_statistics(
            actual,
            u64::from(cli.devices),
            success,
            failure,
            stopped,
        ))
    } else {
        None
    };
    Ok(DeploymentReport {
        id: c.id,
        artifact_name: cli.artifact_name.clone(),
        artifact_uploaded: c.uploaded,
        status: view.status,
        abort_reason: view.abort_reason,
        finished_secs,
        phases,
        statistics,
    })
}
