//! Command line and environment configuration of the `rollout` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// rollout: a Mender-compatible OTA rollout server.
#[derive(Debug, Parser)]
#[command(name = "rollout", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
}

/// Where artifact blobs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BlobBackend {
    /// The local filesystem under `<data-dir>/blobs`.
    Fs,
    /// An S3-compatible bucket (`--s3-*`).
    S3,
}

/// `rollout serve` options. Every flag can also be set through its environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port. The bound address is printed as
    /// `listening on http://ADDR`.
    #[arg(long, env = "ROLLOUT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the metadata store, blobs and keys.
    #[arg(long, env = "ROLLOUT_DATA_DIR", default_value = "./rollout-data")]
    pub data_dir: PathBuf,

    /// Base URL that devices and operators use to reach this server (for download links).
    /// Defaults to `http://<Host header>`.
    #[arg(long, env = "ROLLOUT_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Largest artifact upload, in bytes.
    #[arg(long, env = "ROLLOUT_MAX_ARTIFACT_SIZE", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub max_artifact_size: u64,

    /// Storage limit per tenant in bytes (0 = no limit).
    #[arg(long, env = "ROLLOUT_STORAGE_LIMIT", default_value_t = 0)]
    pub storage_limit: u64,

    /// Largest JSON request body, in bytes (a 1,000,000-device deployment is ~40 MB).
    #[arg(long, env = "ROLLOUT_MAX_JSON_BODY", default_value_t = 128 * 1024 * 1024)]
    pub max_json_body: u64,

    /// Validity of download links handed to devices, in seconds.
    #[arg(long, env = "ROLLOUT_DEVICE_LINK_TTL", default_value_t = 24 * 3600)]
    pub device_link_ttl: u64,

    /// Validity of download links handed to operators, in seconds.
    #[arg(long, env = "ROLLOUT_OPERATOR_LINK_TTL", default_value_t = 15 * 60)]
    pub operator_link_ttl: u64,

    /// Blob store backend.
    #[arg(long, env = "ROLLOUT_BLOB_STORE", value_enum, default_value_t = BlobBackend::Fs)]
    pub blob_store: BlobBackend,

    /// S3 bucket (with `--blob-store s3`).
    #[arg(long, env = "ROLLOUT_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3 region.
    #[arg(long, env = "ROLLOUT_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// S3 endpoint (for MinIO and other S3-compatible stores).
    #[arg(long, env = "ROLLOUT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Key prefix inside the bucket.
    #[arg(long, env = "ROLLOUT_S3_ROOT", default_value = "/")]
    pub s3_root: String,
}
