//! The HTTP face of rollout: warp routes for the Mender management and device APIs, bearer
//! token identities, signed artifact downloads, `/metrics`, and the `rollout` binary that
//! wires storage, engine and routes together.
//!
//! A request's path: [`server`] gives it a request id and hands it to the warp filters in
//! [`routes`]; a handler parses the input, calls one engine service or sends one actor
//! message, and maps the answer (or an [`error::ApiError`]) to HTTP.

pub mod auth;
pub mod config;
pub mod error;
pub mod files;
pub mod metrics;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod signing;
pub mod state;

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context;
use engine::{ArtifactLimits, ArtifactService, Clock, DeploymentService};
use storage::{BlobConfig, BlobStore, EmbeddedStore, MetaStore};

use crate::config::{BlobBackend, ServeArgs};
use crate::signing::LinkSigner;
use crate::state::{AppState, Settings};

/// Build everything `rollout serve` needs and serve until SIGTERM/SIGINT.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let store: Arc<dyn MetaStore> = Arc::new(
        EmbeddedStore::open_with_observer(&args.data_dir.join("meta"), metrics::commit_observer())
            .context("opening the metadata store")?,
    );
    let blobs = BlobStore::new(&blob_config(&args)?).context("opening the blob store")?;
    let signer = LinkSigner::load_or_create(&args.data_dir).context("loading the download key")?;
    let artifacts = Arc::new(ArtifactService::new(
        store.clone(),
        blobs,
        ArtifactLimits {
            max_upload: args.max_artifact_size,
            tenant_storage: args.storage_limit,
        },
    ));
    let deployments = DeploymentService::start(store.clone(), Clock::new())
        .await
        .context("rehydrating deployments")?;
    let state = AppState {
        artifacts,
        deployments,
        store,
        signer,
        settings: Arc::new(Settings {
            public_url: args.public_url.clone(),
            max_json_body: args.max_json_body,
            device_link_ttl: args.device_link_ttl,
            operator_link_ttl: args.operator_link_ttl,
        }),
    };
    let metrics = metrics::install();
    let app = routes::app(state, metrics);
    let (listener, addr) = server::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "rollout started");
    println!("listening on http://{addr}");
    std::io::stdout().flush().ok();
    server::run(listener, app, server::shutdown_signal()).await;
    Ok(())
}

fn blob_config(args: &ServeArgs) -> anyhow::Result<BlobConfig> {
    Ok(match args.blob_store {
        BlobBackend::Fs => BlobConfig::Fs {
            root: args.data_dir.join("blobs"),
        },
        BlobBackend::S3 => BlobConfig::S3 {
            bucket: args
                .s3_bucket
                .clone()
                .context("--s3-bucket is required with --blob-store s3")?,
            region: args.s3_region.clone(),
            endpoint: args.s3_endpoint.clone(),
            root: args.s3_root.clone(),
        },
    })
}
