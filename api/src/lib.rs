//! The HTTP face of rollout: warp routes for the Mender management and device APIs, bearer
//! token identities, signed artifact downloads, `/metrics`, and the `rollout` binary that
//! wires storage, engine and routes together.
//!
//! A request's path: [`server`] gives it a request id and hands it to the warp filters in
//! [`routes`]; a handler parses the input, calls one engine service or sends one actor
//! message, and maps the answer (or an [`error::ApiError`]) to HTTP. Callers are who
//! [`auth`] says their verified token says; in standalone mode [`identity`] is also the
//! device authentication and login service that issues those tokens.

pub mod auth;
mod backup;
pub mod commands;
pub mod config;
pub mod error;
pub mod files;
mod flag_values;
pub mod identity;
mod membership;
pub mod metrics;
pub mod multipart;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod signing;
pub mod state;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use engine::{
    ArtifactLimits, ArtifactService, Clock, ClusterConfig, DeploymentService, InventoryService,
};
use storage::{BlobStore, EmbeddedStore, MetaStore, NodeRecord, ScyllaStore};

use crate::auth::{SigningKey, TokenIssuer, TokenVerifier, VerifyKey};
use crate::config::{ServeArgs, StoreArgs, StoreBackend};
use crate::identity::login::AdminCredentials;
use crate::identity::{Admission, IdentityConfig, IdentityService};
use crate::signing::{LinkCache, LinkSigner};
use crate::state::{AppState, Services, Settings};

/// Build everything `rollout serve` needs and serve until SIGTERM/SIGINT.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Bound first: a start that cannot listen leaves no data dir, key or store behind.
    // (Bound before the deployments start, too: a node in a cluster is named by its port.)
    let (listener, addr) = server::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    refuse_foreign_dir(&args.data_dir)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let metrics_token = metrics_token(&args)?;
    // Before anything records a metric: what the store and the resumed deployments
    // publish while starting would otherwise be lost until it next changes.
    let metrics = metrics::install();
    let (store, embedded) = open_store_parts(&args.store, &args.data_dir).await?;
    let blobs =
        BlobStore::new(&args.blobs.config(&args.data_dir)?).context("opening the blob store")?;
    // The store lock is held: no other server uploads into these blobs.
    let partial = blobs
        .remove_partial_uploads()
        .await
        .context("removing partial uploads")?;
    if partial.files > 0 {
        tracing::info!(
            files = partial.files,
            bytes = partial.bytes,
            "removed the partial files of uploads interrupted by a crash"
        );
    }
    let signer = LinkSigner::load_or_create(&args.data_dir).context("loading the download key")?;
    let control_socket = control_socket(&args, embedded, &blobs);
    let artifacts = Arc::new(ArtifactService::new(
        store.clone(),
        blobs,
        ArtifactLimits {
            max_upload: args.max_artifact_size,
            tenant_storage: args.storage_limit,
            max_concurrent_uploads: args.max_concurrent_uploads,
        },
    ));
    let node_id = args
        .node_id
        .clone()
        .unwrap_or_else(|| membership::default_node_id(addr.port()));
    let deployments = start_deployments(&args, store.clone(), &signer, &node_id)
        .await
        .context("rehydrating deployments")?;
    let (auth, identity) = identity(&args, store.clone())?;
    keep_revocations(&args, store.clone(), auth.clone()).await?;
    let store_for_heartbeat = store.clone();
    let inventory = InventoryService::new(store.clone(), deployments.clone(), Clock::new());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let state = AppState::new(Services {
        stopping,
        artifacts,
        deployments: deployments.clone(),
        inventory,
        store,
        signer,
        device_links: LinkCache::new(args.device_link_ttl),
        auth,
        identity,
        settings: Settings {
            public_url: args.public_url.clone(),
            max_json_body: args.max_json_body,
            device_link_ttl: args.device_link_ttl,
            operator_link_ttl: args.operator_link_ttl,
            metrics_max_deployments: args.metrics_max_deployments,
            metrics_token,
            body_read_timeout: Duration::from_secs(args.body_read_timeout),
        },
    });
    // `--chaos-crash-every` (chaos drills only): crash random deployment actors until exit.
    if let Some(ms) = args.chaos_crash_every {
        deployments.start_chaos_drill(std::time::Duration::from_millis(ms));
    }
    metrics::seed_artifact_bytes(state.store.as_ref())
        .await
        .context("reading artifact sizes for /metrics")?;
    let metrics_server = metrics_listener(&args, &state, &metrics).await?;
    let mut app = routes::app(state, metrics);
    if args.access_log {
        app = server::with_access_log(app);
    }
    server::raise_open_files_limit(args.max_connections);
    let connection_limits = connection_limits(&args);
    tracing::info!(%addr, data_dir = %args.data_dir.display(), version = config::VERSION, "rollout started");
    let address = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let node = NodeRecord {
        id: node_id,
        address,
        cluster: deployments.cluster_address(),
        started: time::OffsetDateTime::now_utc(),
        seen: time::OffsetDateTime::now_utc(),
    };
    let heartbeat = membership::start_heartbeat(store_for_heartbeat, node)
        .await
        .context("writing this node's first heartbeat")?;
    println!("listening on http://{addr}");
    std::io::stdout().flush().ok();
    let shutdown = async move {
        server::shutdown_signal().await;
        let _ = stop.send(true);
    };
    server::run(listener, app, connection_limits, shutdown).await;
    heartbeat.abort();
    for task in [metrics_server, control_socket].into_iter().flatten() {
        task.abort();
    }
    let _ = std::fs::remove_file(args.data_dir.join(backup::socket::SOCKET_FILE));
    // Everything acknowledged is durable already; stopping the actors releases the store.
    deployments.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The deployment service: on a cluster store, as one node among those sharing it, each
/// running the deployments whose leases it holds; on the embedded store, alone.
/// How often a node on a cluster store rereads the decommissioned devices, which another
/// node may have added.
const REVOCATIONS_REFRESH: Duration = Duration::from_secs(2);

/// Load the decommissioned devices whose tokens the verifier refuses; on a cluster store,
/// keep rereading them.
async fn keep_revocations(
    args: &ServeArgs,
    store: Arc<dyn MetaStore>,
    verifier: Arc<TokenVerifier>,
) -> anyhow::Result<()> {
    let all = store
        .revocations()
        .await
        .context("reading the decommissioned devices")?;
    verifier.revocations().load(&all);
    if args.store.backend == StoreBackend::Embedded {
        return Ok(());
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(REVOCATIONS_REFRESH);
        loop {
            ticks.tick().await;
            match store.revocations().await {
                Ok(all) => verifier.revocations().load(&all),
                Err(e) => tracing::warn!(error = %e, "rereading the decommissioned devices failed"),
            }
        }
    });
    Ok(())
}

async fn start_deployments(
    args: &ServeArgs,
    store: Arc<dyn MetaStore>,
    signer: &LinkSigner,
    node_id: &str,
) -> anyhow::Result<DeploymentService> {
    if args.store.backend == StoreBackend::Embedded {
        return Ok(DeploymentService::start(store, Clock::new()).await?);
    }
    let config = ClusterConfig {
        node_id: node_id.to_owned(),
        listen: args.cluster_listen,
        advertise: args.cluster_advertise.clone(),
        cookie: signer.derive("cluster cookie"),
        lease_ttl: Duration::from_secs(args.lease_ttl),
    };
    Ok(DeploymentService::start_clustered(store, Clock::new(), config).await?)
}

/// The `/metrics` token of `--metrics-token-file`, if given.
fn metrics_token(args: &ServeArgs) -> anyhow::Result<Option<metrics::ScrapeToken>> {
    match &args.metrics_token_file {
        Some(path) => Ok(Some(metrics::ScrapeToken::load(path)?)),
        None => {
            if args.metrics_listen.is_none() {
                tracing::warn!(
                    "neither --metrics-token-file nor --metrics-listen is set: \
                     /metrics answers 401 and nothing can scrape this server"
                );
            }
            Ok(None)
        }
    }
}

/// With `--metrics-listen`, serve `/metrics` without a token on that address; prints
/// `metrics listening on http://ADDR` (before the API's address line, which thus still
/// says that the server is ready).
async fn metrics_listener(
    args: &ServeArgs,
    state: &AppState,
    metrics: &Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = args.metrics_listen else {
        return Ok(None);
    };
    let (listener, bound) = server::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-listen {addr}"))?;
    println!("metrics listening on http://{bound}");
    let app = routes::health::metrics_app(state.clone(), metrics.clone());
    Ok(Some(tokio::spawn(server::run(
        listener,
        app,
        connection_limits(args),
        std::future::pending::<()>(),
    ))))
}

/// The connection bounds of `--max-connections` and the timeouts, for every listener.
fn connection_limits(args: &ServeArgs) -> server::ConnectionLimits {
    server::ConnectionLimits {
        max_connections: args.max_connections,
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
    }
}

/// Listen on the data dir's control socket, through which `rollout backup` asks for a
/// backup. Without it the server still serves: backups are then the one thing missing.
fn control_socket(
    args: &ServeArgs,
    embedded: Option<EmbeddedStore>,
    blobs: &BlobStore,
) -> Option<tokio::task::JoinHandle<()>> {
    let source = embedded.map(|store| backup::write::BackupSource {
        store,
        blobs: blobs.clone(),
        data_dir: args.data_dir.clone(),
    });
    match backup::socket::listen(&args.data_dir, source) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "no control socket: `rollout backup` cannot reach this server"
            );
            None
        }
    }
}

/// What rollout keeps in a data dir (any one marks a directory as rollout's).
const DATA_DIR_ENTRIES: [&str; 5] = [
    "meta",
    "blobs",
    "download.key",
    "token-signing.key",
    "device-token.key",
];

/// A data dir must be new, empty, or rollout's: pointed by mistake at a directory of other
/// files (a home directory), rollout would scatter its store and keys among them.
fn refuse_foreign_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let ours = names.iter().any(|n| DATA_DIR_ENTRIES.contains(&n.as_str()));
    anyhow::ensure!(
        names.is_empty() || ours,
        "the data dir {} holds other files ({} entries) and no rollout data: give a new or \
         empty directory as --data-dir (rollout keeps {} there)",
        dir.display(),
        names.len(),
        DATA_DIR_ENTRIES.join(", ")
    );
    Ok(())
}

/// The metadata store `--store` selects: the embedded one in `data_dir/meta` (reporting
/// its commits to the metrics), or the cluster.
pub(crate) async fn open_store(
    store: &StoreArgs,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn MetaStore>> {
    Ok(open_store_parts(store, data_dir).await?.0)
}

/// [`open_store`], and the embedded store itself when it is one (backups read it whole).
async fn open_store_parts(
    store: &StoreArgs,
    data_dir: &std::path::Path,
) -> anyhow::Result<(Arc<dyn MetaStore>, Option<EmbeddedStore>)> {
    Ok(match store.backend {
        StoreBackend::Embedded => {
            let meta = data_dir.join("meta");
            let opened = EmbeddedStore::open_with_observer(&meta, metrics::commit_observer())?;
            (Arc::new(opened.clone()), Some(opened))
        }
        StoreBackend::Scylla => {
            let config = store.scylla.config()?;
            let store = ScyllaStore::connect(&config)
                .await
                .with_context(|| format!("connecting to {}", config.nodes.join(",")))?;
            tracing::info!(nodes = ?config.nodes, keyspace = %config.keyspace, "metadata on the cluster");
            (Arc::new(store), None)
        }
    })
}

/// The token verifier and the identity service, from the data dir's signing key and the
/// identity flags.
fn identity(
    args: &ServeArgs,
    store: Arc<dyn MetaStore>,
) -> anyhow::Result<(Arc<TokenVerifier>, Arc<IdentityService>)> {
    let signing = SigningKey::load_or_create(&args.data_dir).context("loading the token key")?;
    let mut keys = vec![signing.verify_key(), signing.device_verify_key()];
    for path in &args.jwt_verify_keys {
        let key = VerifyKey::load(path).context("loading --jwt-verify-key")?;
        tracing::info!(key = ?key, "accepting tokens signed with this key");
        keys.push(key);
    }
    if args.trust_gateway {
        tracing::warn!(
            "--trust-gateway is on: token signatures are NOT verified. Anyone who can reach \
             this server without passing the gateway can act as any user or device of any tenant."
        );
    }
    let verifier = Arc::new(TokenVerifier::new(
        keys,
        args.trust_gateway,
        args.token_cache_size,
    ));
    let admin = admin_password(args)?.map(|password| {
        AdminCredentials::new(
            args.admin_user.clone(),
            &password,
            args.admin_tenant.clone(),
        )
    });
    if admin.is_none() {
        tracing::info!("no administrator password configured: login is disabled");
    }
    match args.device_admission {
        Admission::Auto => tracing::warn!(
            "device admission is auto: any device that asks with a new identity is accepted \
             (Mender's default is pending; --device-admission preauthorized accepts only \
             devices registered beforehand)"
        ),
        Admission::Preauthorized => {
            tracing::info!("device admission is preauthorized: only registered devices get tokens")
        }
    }
    let config = IdentityConfig {
        admission: args.device_admission,
        device_token_ttl: args.device_token_ttl,
        user_token_ttl: args.user_token_ttl,
        admin,
    };
    let service = IdentityService::new(store, TokenIssuer::new(signing), verifier.clone(), config);
    Ok((verifier, Arc::new(service)))
}

/// The administrator password from `--admin-password-file` or `ROLLOUT_ADMIN_PASSWORD`.
fn admin_password(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    let from_env = std::env::var("ROLLOUT_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let from_file = match &args.admin_password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the admin password file {}", path.display()))?;
            let password = text.trim_end_matches(['\r', '\n']).to_owned();
            anyhow::ensure!(!password.is_empty(), "{} is empty", path.display());
            Some(password)
        }
        None => None,
    };
    anyhow::ensure!(
        !(from_env.is_some() && from_file.is_some()),
        "set the admin password either in --admin-password-file or in ROLLOUT_ADMIN_PASSWORD, not both"
    );
    Ok(from_file.or(from_env))
}
