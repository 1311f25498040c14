//! The engine without HTTP: create a large deployment, then measure idle check-ins,
//! check-ins that hand out an update, and durable status reports, beside the raw store
//! commit rate measured in the same run; then the same check-ins and reports on a second
//! deployment of as many devices with every safety rule on (auto-abort, pacing, device
//! timeout, a maintenance window, an end), side by side with the first.

use std::sync::Arc;
use std::time::Instant;

use bench::{rate, row, rss_bytes};
use clap::Parser;
use engine::{Clock, DeploymentService, NewDeployment};
use storage::{
    ArtifactInfo, ArtifactMeta, ArtifactRecord, DeviceDeploymentRecord, DeviceStatus,
    EmbeddedStore, MetaStore, TenantId, Write,
};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Devices in the deployment.
    #[arg(long, default_value_t = 1_000_000)]
    devices: usize,
    /// Devices that check in and report in the throughput runs.
    #[arg(long, default_value_t = 50_000)]
    active: usize,
    /// Concurrent simulated devices.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Internal: measure, in this process, the memory and time to rehydrate the store in
    /// this directory (the parent runs this in a fresh child process).
    #[arg(long, hide = true)]
    rehydrate_probe: Option<std::path::PathBuf>,
    /// Run on the ScyllaDB store on this CQL node (`host:port`) instead of the embedded
    /// store, in a fresh keyspace.
    #[arg(long)]
    cql: Option<String>,
    /// Internal: the keyspace of a `--cql` run (the restart probe reuses it).
    #[arg(long, hide = true)]
    keyspace: Option<String>,
}

/// The store of this run: embedded in `dir`, or on the `--cql` node.
async fn open_store(args: &Args, dir: &std::path::Path) -> Arc<dyn MetaStore> {
    let Some(node) = &args.cql else {
        return Arc::new(EmbeddedStore::open(dir).expect("store"));
    };
    let keyspace = args.keyspace.as_deref().expect("a keyspace for --cql");
    let config = storage::ScyllaConfig {
        nodes: vec![node.clone()],
        keyspace: keyspace.parse().expect("keyspace"),
        replication: Default::default(),
        consistency: Default::default(),
        credentials: None,
    };
    Arc::new(
        storage::ScyllaStore::connect(&config)
            .await
            .expect("connect to --cql"),
    )
}

/// Child-process probe: start the engine on an existing store and report the resident
/// memory it took per device and the time, as `rehydrate <secs> <bytes-per-device>`.
async fn rehydrate_probe(args: &Args, dir: &std::path::Path, devices: usize) {
    let store = open_store(args, dir).await;
    let before = rss_bytes();
    let start = Instant::now();
    let svc = DeploymentService::start(store, Clock::new())
        .await
        .expect("rehydrate");
    let secs = start.elapsed().as_secs_f64();
    let per_device = rss_bytes().saturating_sub(before) as f64 / devices as f64;
    println!("rehydrate {secs} {per_device} {}", svc.running());
}

fn artifact(tenant: &TenantId) -> ArtifactRecord {
    ArtifactRecord {
        id: Uuid::new_v4(),
        tenant: tenant.clone(),
        description: String::new(),
        meta: ArtifactMeta {
            name: "app-2.0".into(),
            device_types_compatible: vec!["dev-a".into()],
            info: ArtifactInfo {
                format: "mender".into(),
                version: 3,
            },
            signed: false,
            updates: vec![],
            artifact_provides: Default::default(),
            artifact_depends: Default::default(),
            clears_artifact_provides: vec![],
        },
        size: 5120,
        modified: OffsetDateTime::now_utc(),
    }
}

/// Run `op(i)` for i in 0..n over `concurrency` tasks; returns ops/s.
async fn drive<F, Fut>(n: usize, concurrency: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    op(i).await;
                    i += concurrency;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    rate(n as u64, start.elapsed())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.rehydrate_probe {
        rehydrate_probe(&args, dir, args.devices).await;
        return;
    }
    let mut args = args;
    if args.cql.is_some() {
        args.keyspace = Some(format!("engine_bench_{}", Uuid::new_v4().simple()));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(&args, dir.path()).await;
    let tenant = TenantId::default_tenant();
    store
        .commit(vec![Write::PutArtifact(artifact(&tenant))])
        .await
        .expect("artifact");
    println!(
        "engine-bench: {} store, {} devices, {} active, {} concurrent, {} cores",
        if args.cql.is_some() {
            "cql"
        } else {
            "embedded"
        },
        args.devices,
        args.active,
        args.concurrency,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Baseline: the raw durable write rate with the same concurrency.
    let s = store.clone();
    let baseline = drive(args.active, args.concurrency, move |i| {
        let s = s.clone();
        async move {
            let rec = DeviceDeploymentRecord::pending(format!("b{i}"), OffsetDateTime::now_utc());
            s.commit(vec![Write::PutDevice {
                tenant: TenantId("bench-baseline".into()),
                deployment: Uuid::nil(),
                record: rec,
            }])
            .await
            .expect("commit");
        }
    })
    .await;
    row(
        "baseline: store group commit, 1 write each",
        baseline,
        "writes/s",
        "",
    );

    let svc = DeploymentService::start(store.clone(), Clock::new())
        .await
        .expect("service");
    let devices: Vec<String> = (0..args.devices)
        .map(|i| format!("device-{i:08}"))
        .collect();
    let start = Instant::now();
    let dep = svc
        .create(
            &tenant,
            NewDeployment {
                name: "bench".into(),
                artifact_name: "app-2.0".into(),
                devices: devices.clone(),
                ..NewDeployment::default()
            },
        )
        .await
        .expect("create");
    let created = start.elapsed();
    row(
        "create deployment",
        created.as_secs_f64(),
        "s",
        &format!("{} devices", args.devices),
    );

    let ruled = svc
        .create(&tenant, every_rule(args.devices))
        .await
        .expect("create the deployment with every rule");
    let svc = Arc::new(svc);
    let s = svc.clone();
    let idle = drive(args.active, args.concurrency, move |i| {
        let s = s.clone();
        async move {
            let d = format!("not-deployed-{i}");
            s.check_in(&TenantId::default_tenant(), &d, "dev-a", "app-1.0")
                .await
                .expect("check-in");
        }
    })
    .await;
    row(
        "idle check-ins (nothing to do)",
        idle,
        "req/s",
        &format!("x{:.2} of baseline", idle / baseline),
    );

    // The two deployments take turns (no rules, every rule, every rule, no rules), each
    // turn on its own quarter of `--active` devices, so that the store's background work
    // after the two creations weighs on both alike.
    let plain_names = Arc::new(devices);
    let ruled_names: Arc<Vec<String>> = Arc::new((0..args.devices).map(ruled_device).collect());
    let quarter = (args.active / 4).max(1);
    let mut plain = Rates::default();
    let mut rules = Rates::default();
    for (turn, ruled_turn) in [false, true, true, false].into_iter().enumerate() {
        let from = (turn / 2) * quarter;
        let (id, names, rates) = match ruled_turn {
            false => (dep.id, plain_names.clone(), &mut plain),
            true => (ruled.id, ruled_names.clone(), &mut rules),
        };
        rates.add(updates(&svc, &args, id, names, from..from + quarter).await);
    }
    for (label, rates) in [("no rules", &plain), ("every rule on", &rules)] {
        row(
            &format!("{label}: check-ins handing out an update"),
            rates.deliver(),
            "req/s",
            &format!("x{:.2} of baseline", rates.deliver() / baseline),
        );
        row(
            &format!("{label}: durable status reports"),
            rates.report(),
            "req/s",
            &format!("x{:.2} of baseline", rates.report() / baseline),
        );
    }
    row(
        "every rule on / no rules: check-ins handing out an update",
        rules.deliver() / plain.deliver(),
        "x",
        "",
    );
    row(
        "every rule on / no rules: durable status reports",
        rules.report() / plain.report(),
        "x",
        "",
    );

    svc.shutdown().await;
    drop(svc);
    drop(store);
    probe_restart(&args, dir.path());
}

/// Devices handled and seconds spent, over several turns.
#[derive(Default)]
struct Rates {
    devices: f64,
    deliver_secs: f64,
    report_secs: f64,
}

impl Rates {
    fn add(&mut self, (n, deliver, report): (usize, f64, f64)) {
        let n = n as f64;
        self.devices += n;
        self.deliver_secs += n / deliver;
        self.report_secs += n / report;
    }

    fn deliver(&self) -> f64 {
        self.devices / self.deliver_secs
    }

    fn report(&self) -> f64 {
        self.devices / self.report_secs
    }
}

/// Hand the update out to `names[range]` in deployment `id`, then take a durable status
/// report from each: how many, and both rates.
async fn updates(
    svc: &Arc<DeploymentService>,
    args: &Args,
    id: Uuid,
    names: Arc<Vec<String>>,
    range: std::ops::Range<usize>,
) -> (usize, f64, f64) {
    let (s, n, from) = (svc.clone(), names.clone(), range.start);
    let count = range.len();
    let deliver = drive(count, args.concurrency, move |i| {
        let s = s.clone();
        let d = n[from + i].clone();
        async move {
            let found = s
                .check_in(&TenantId::default_tenant(), &d, "dev-a", "app-1.0")
                .await
                .expect("check-in");
            assert!(
                matches!(found, engine::Delivery::Update { .. }),
                "{d} gets the update"
            );
        }
    })
    .await;
    let s = svc.clone();
    let reports = drive(count, args.concurrency, move |i| {
        let s = s.clone();
        let d = names[from + i].clone();
        async move {
            s.report(
                &TenantId::default_tenant(),
                &d,
                id,
                DeviceStatus::Downloading,
                None,
            )
            .await
            .expect("report");
        }
    })
    .await;
    (count, deliver, reports)
}

fn ruled_device(i: usize) -> String {
    format!("ruled-{i:08}")
}

/// A deployment with every safety rule on, none of which holds a device back during the
/// run: the cost of checking them is what is measured.
fn every_rule(devices: usize) -> NewDeployment {
    NewDeployment {
        name: "bench with every rule".into(),
        artifact_name: "app-2.0".into(),
        devices: (0..devices).map(ruled_device).collect(),
        auto_abort: Some(storage::AutoAbort {
            failure_percent: 50,
            min_finished: 1000,
            action: storage::AbortAction::Abort,
        }),
        pacing: Some(storage::Pacing {
            per_minute: u32::MAX,
            factor: Some(2.0),
            step: Some(1000),
            max_per_minute: None,
        }),
        device_timeout_seconds: Some(3600),
        maintenance_windows: vec![storage::MaintenanceWindow {
            cron: "0 0 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            duration_minutes: 26 * 60,
        }],
        end: Some(storage::DeploymentEnd {
            at: OffsetDateTime::now_utc() + time::Duration::days(365),
            action: storage::EndAction::Abort,
        }),
        ..NewDeployment::default()
    }
}

/// Restart in a fresh process: rehydration time and the memory the deployment takes.
fn probe_restart(args: &Args, dir: &std::path::Path) {
    // Let the committer thread release the store's lock.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let exe = std::env::current_exe().expect("own path");
    let mut probe = std::process::Command::new(exe);
    probe
        .arg("--rehydrate-probe")
        .arg(dir)
        .arg("--devices")
        .arg((2 * args.devices).to_string());
    if let (Some(node), Some(keyspace)) = (&args.cql, &args.keyspace) {
        probe.args(["--cql", node, "--keyspace", keyspace]);
    }
    let out = probe.output().expect("probe");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = text
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    match fields.as_slice() {
        [secs, per_device, running] => {
            row(
                "restart: rehydrate",
                *secs,
                "s",
                &format!("{running} deployment(s)"),
            );
            row(
                "restart: server memory for the deployment",
                *per_device,
                "B/device",
                "RSS growth in a fresh process",
            );
        }
        _ => eprintln!(
            "rehydrate probe failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
