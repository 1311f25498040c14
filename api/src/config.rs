//! Command line and environment configuration of the `rollout` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use storage::TenantId;

pub use crate::identity::Admission;

/// `rollout --version`: the release and the commit it was built from.
pub(crate) const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("ROLLOUT_COMMIT"), ")");

/// rollout: a Mender-compatible OTA rollout server.
#[derive(Debug, Parser)]
#[command(
    name = "rollout",
    version = VERSION,
    about = "rollout: an OTA rollout server that speaks the Mender Deployments API",
    long_about = "rollout: an OTA rollout server that speaks the Mender Deployments API.\n\n\
                  `rollout serve` runs it (every flag also has a ROLLOUT_* variable); the \
                  other commands work on a server's data dir or store offline."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written to stderr (which ones: `ROLLOUT_LOG`, e.g. `info`,
    /// `debug`, `info,api=debug`; default `info`).
    #[arg(long, global = true, env = "ROLLOUT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    // Boxed: by far the largest variant.
    Serve(Box<ServeArgs>),
    /// Print a token signed with the key in the server's data dir.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage devices in the data dir's store.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage the ScyllaDB schema.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// The nodes sharing a store.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Copy everything a running server keeps (store, artifact files, keys) into one
    /// file, consistently, while it serves.
    Backup(BackupArgs),
    /// Rebuild a data dir from a `rollout backup` file (offline, into a new or empty
    /// directory).
    Restore(RestoreArgs),
}

/// `rollout backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write (a gzip'd tar; must not exist). It holds the token signing key:
    /// keep it as private as the data dir.
    #[arg(long)]
    pub to: PathBuf,
    /// The data dir of the running server to back up (its `control.sock` is how the
    /// command reaches the server; run it as the server's user).
    #[command(flatten)]
    pub dir: DataDirArg,
}

/// `rollout restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    pub from: PathBuf,
    /// The data dir to create (new or empty); then `rollout serve --data-dir` it.
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Where to put the artifact files: the blob store flags the restored server will be
    /// started with.
    #[command(flatten)]
    pub blobs: BlobArgs,
}

/// `rollout cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the nodes of a store (alive or not, from their heartbeats) and its unfinished
    /// deployments with the node holding each one's lease. Meant for a cluster store: the
    /// embedded store cannot be opened while `rollout serve` runs on it.
    Status {
        /// Data dir.
        #[command(flatten)]
        dir: DataDirArg,
        /// The metadata store.
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Default validity of tokens printed by `rollout token user|device`: 7 days.
pub const CLI_TOKEN_TTL: u64 = 7 * 24 * 3600;

/// The data dir option shared by the offline subcommands.
#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// The server's data dir (holds `token-signing.key` and the metadata store).
    #[arg(long, env = "ROLLOUT_DATA_DIR", default_value = "./rollout-data")]
    pub data_dir: PathBuf,
}

/// `rollout token …`: mint tokens with the server's signing key.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// A management API token (`mender.user`).
    User {
        /// Tenant (empty: the default tenant).
        #[arg(long, default_value = "")]
        tenant: TenantId,
        /// `sub`: the user id.
        #[arg(long)]
        subject: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = CLI_TOKEN_TTL)]
        ttl: u64,
        /// Data dir.
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// A device API token (`mender.device`).
    Device {
        /// Tenant (empty: the default tenant).
        #[arg(long, default_value = "")]
        tenant: TenantId,
        /// `sub`: the device id.
        #[arg(long)]
        device: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = CLI_TOKEN_TTL)]
        ttl: u64,
        /// Data dir.
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// A tenant token, for a device's `TenantToken` setting: devices presenting it join
    /// the tenant.
    Tenant {
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// Validity in seconds; without it the token never expires.
        #[arg(long)]
        ttl: Option<u64>,
        /// Data dir.
        #[command(flatten)]
        dir: DataDirArg,
    },
}

/// `rollout device …`.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Register a device's identity and public key for `--device-admission preauthorized`,
    /// in the store `rollout serve` uses (the same `--store` flags). The embedded store is
    /// locked while `rollout serve` runs on it: then use
    /// `POST /api/management/v2/devauth/devices` instead. A cluster store takes it anytime.
    Preauthorize {
        /// Tenant (empty: the default tenant).
        #[arg(long, default_value = "")]
        tenant: TenantId,
        /// Identity data as a JSON object, e.g. `{"mac":"02:00:00:00:00:01"}`.
        #[arg(long)]
        identity: String,
        /// The device's public key (PKIX PEM file).
        #[arg(long)]
        pubkey: PathBuf,
        /// Data dir.
        #[command(flatten)]
        dir: DataDirArg,
        /// The metadata store.
        #[command(flatten)]
        store: StoreArgs,
    },
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
    /// Address to listen on: HOST:PORT (a host name is resolved), PORT (on 127.0.0.1) or
    /// :PORT (on every interface); port 0 picks a free port. The bound address is printed
    /// as `listening on http://ADDR`.
    #[arg(long, env = "ROLLOUT_LISTEN", default_value = "127.0.0.1:8080",
          value_parser = crate::flag_values::listen_addr)]
    pub listen: SocketAddr,

    /// Directory for the metadata store, blobs and keys.
    #[arg(long, env = "ROLLOUT_DATA_DIR", default_value = "./rollout-data")]
    pub data_dir: PathBuf,

    /// Base URL that devices and operators use to reach this server (for download links).
    /// Defaults to `http://<Host header>`.
    #[arg(long, env = "ROLLOUT_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Largest artifact upload, in bytes (or with K, M, G, T: 10G).
    #[arg(long, env = "ROLLOUT_MAX_ARTIFACT_SIZE", default_value_t = 10 * 1024 * 1024 * 1024,
          value_parser = crate::flag_values::bytes)]
    pub max_artifact_size: u64,

    /// Storage limit per tenant in bytes (or with K, M, G, T; 0 = no limit).
    #[arg(long, env = "ROLLOUT_STORAGE_LIMIT", default_value_t = 0,
          value_parser = crate::flag_values::bytes)]
    pub storage_limit: u64,

    /// Largest JSON request body, in bytes or with K, M, G (a 1,000,000-device deployment is
    /// ~40 MB).
    #[arg(long, env = "ROLLOUT_MAX_JSON_BODY", default_value_t = 128 * 1024 * 1024,
          value_parser = crate::flag_values::bytes)]
    pub max_json_body: u64,

    /// Validity of download links handed to devices, in seconds (or with s, m, h, d).
    #[arg(long, env = "ROLLOUT_DEVICE_LINK_TTL", default_value_t = 24 * 3600,
          value_parser = crate::flag_values::seconds)]
    pub device_link_ttl: u64,

    /// Validity of download links handed to operators, in seconds (or with s, m, h, d).
    #[arg(long, env = "ROLLOUT_OPERATOR_LINK_TTL", default_value_t = 15 * 60,
          value_parser = crate::flag_values::seconds)]
    pub operator_link_ttl: u64,

    /// Most unfinished deployments that get per-deployment series on `/metrics` (bounds
    /// the label cardinality a tenant can cause).
    #[arg(long, env = "ROLLOUT_METRICS_MAX_DEPLOYMENTS", default_value_t = 200)]
    pub metrics_max_deployments: usize,

    /// A key that management and device tokens may be signed with, besides the server's own
    /// (repeatable; the env var takes a comma-separated list). A PEM public key is an RS256,
    /// ES256 or EdDSA key by its type; any other file is an HS256 secret (trailing
    /// whitespace ignored).
    #[arg(
        long = "jwt-verify-key",
        env = "ROLLOUT_JWT_VERIFY_KEYS",
        value_delimiter = ','
    )]
    pub jwt_verify_keys: Vec<PathBuf>,

    /// Read token claims WITHOUT verifying signatures, trusting a gateway in front that
    /// verified them. Anyone who can reach the server directly can then forge any identity.
    #[arg(long, env = "ROLLOUT_TRUST_GATEWAY",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub trust_gateway: bool,

    /// Verified tokens kept in memory, so repeat requests skip the signature check.
    #[arg(long, env = "ROLLOUT_TOKEN_CACHE_SIZE", default_value_t = 64 * 1024)]
    pub token_cache_size: usize,

    /// Which devices get a token from `auth_requests`.
    #[arg(long, env = "ROLLOUT_DEVICE_ADMISSION", value_enum, default_value_t = Admission::Auto)]
    pub device_admission: Admission,

    /// Validity of device tokens handed out on auth requests, seconds (Mender's default is
    /// a week; devices re-authenticate on any 401); units s, m, h, d also work.
    #[arg(long, env = "ROLLOUT_DEVICE_TOKEN_TTL", default_value_t = 7 * 24 * 3600,
          value_parser = crate::flag_values::seconds)]
    pub device_token_ttl: u64,

    /// Validity of user tokens handed out on login, seconds (or with s, m, h, d).
    #[arg(long, env = "ROLLOUT_USER_TOKEN_TTL", default_value_t = 24 * 3600,
          value_parser = crate::flag_values::seconds)]
    pub user_token_ttl: u64,

    /// The administrator's user name for `POST /api/management/v1/useradm/auth/login`.
    #[arg(
        long,
        env = "ROLLOUT_ADMIN_USER",
        default_value = "admin@rollout.local"
    )]
    pub admin_user: String,

    /// File holding the administrator's password (trailing newline ignored). The password
    /// can also come from the env var ROLLOUT_ADMIN_PASSWORD. Without either, login is off.
    #[arg(long, env = "ROLLOUT_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: Option<PathBuf>,

    /// Tenant of the administrator's tokens (empty: the default tenant).
    #[arg(long, env = "ROLLOUT_ADMIN_TENANT", default_value = "")]
    pub admin_tenant: TenantId,

    /// Where artifact files are kept (`--blob-store`, `--s3-*`).
    #[command(flatten)]
    pub blobs: BlobArgs,

    /// File holding the bearer token that `/metrics` on the API address requires
    /// (`Authorization: Bearer <token>`; surrounding whitespace ignored). Without it,
    /// `/metrics` on the API address answers 401.
    #[arg(long, env = "ROLLOUT_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,

    /// Serve `/metrics` without a token on this separate address, meant for the scrape
    /// network only; port 0 picks a free port. The bound address is printed as
    /// `metrics listening on http://ADDR`.
    #[arg(long, env = "ROLLOUT_METRICS_LISTEN", value_parser = crate::flag_values::listen_addr)]
    pub metrics_listen: Option<SocketAddr>,

    /// Log one line per request (request id, method, path, status, latency; every request,
    /// none sampled) at info level, target `access`.
    #[arg(long, env = "ROLLOUT_ACCESS_LOG",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub access_log: bool,

    /// Connections served at once; at the bound, new clients wait in the listen backlog.
    #[arg(long, env = "ROLLOUT_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_connections: usize,

    /// Seconds a client may take to send a request's headers (also the longest wait for
    /// the next request on a kept-alive connection).
    #[arg(long, env = "ROLLOUT_HEADER_READ_TIMEOUT", default_value_t = 30,
          value_parser = crate::flag_values::positive_seconds)]
    pub header_read_timeout: u64,

    /// Seconds a connection may stay without any byte moving while no request is being
    /// handled (e.g. a client that stopped reading a download) before it is closed.
    #[arg(long, env = "ROLLOUT_IDLE_TIMEOUT", default_value_t = 60,
          value_parser = crate::flag_values::positive_seconds)]
    pub idle_timeout: u64,

    /// Seconds a request body may stall (no data arriving) before the request is answered
    /// 408 Request Timeout.
    #[arg(long, env = "ROLLOUT_BODY_READ_TIMEOUT", default_value_t = 30,
          value_parser = crate::flag_values::positive_seconds)]
    pub body_read_timeout: u64,

    /// Artifact uploads and generations in progress at once; past it they are answered
    /// 503 with Retry-After.
    #[arg(long, env = "ROLLOUT_MAX_CONCURRENT_UPLOADS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_concurrent_uploads: usize,

    /// This node's id among the nodes sharing the store (`rollout cluster status`); by
    /// default the host name and the bound port.
    #[arg(long, env = "ROLLOUT_NODE_ID")]
    pub node_id: Option<String>,

    /// With `--store scylla`, where this node accepts requests other nodes forward to it
    /// for the deployments it runs (port 0: any free port, written in its node record).
    #[arg(long, env = "ROLLOUT_CLUSTER_LISTEN", default_value = "127.0.0.1:0",
          value_parser = crate::flag_values::listen_addr)]
    pub cluster_listen: SocketAddr,

    /// The `HOST:PORT` other nodes dial to reach `--cluster-listen`, when that is a
    /// wildcard address or behind NAT.
    #[arg(long, env = "ROLLOUT_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<String>,

    /// Seconds a node holds a deployment's lease unless it renews it (every third of it):
    /// a dead node's deployments carry on elsewhere within about this long.
    #[arg(long, env = "ROLLOUT_LEASE_TTL", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub lease_ttl: u64,

    /// CHAOS DRILLS ONLY, never in production: every this many milliseconds, make the actor
    /// of a random running deployment panic, so that supervision is exercised under real
    /// load (the supervisor restarts it from the store; drills are not charged to the
    /// deployment's restart budget). Hidden from `--help`.
    #[arg(long, env = "ROLLOUT_CHAOS_CRASH_EVERY_MS", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub chaos_crash_every: Option<u64>,

    /// The metadata store (`--store`, `--scylla-*`).
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where artifact files are kept: `rollout serve` and `rollout restore` options.
#[derive(Debug, Clone, Args)]
pub struct BlobArgs {
    /// Blob store backend.
    #[arg(long, env = "ROLLOUT_BLOB_STORE", value_enum, default_value_t = BlobBackend::Fs)]
    pub blob_store: BlobBackend,

    /// S3 bucket (with `--blob-store s3`; credentials from the environment variables
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
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

impl BlobArgs {
    /// The blob store these flags describe, for a server on `data_dir`.
    pub fn config(&self, data_dir: &std::path::Path) -> anyhow::Result<storage::BlobConfig> {
        Ok(match self.blob_store {
            BlobBackend::Fs => storage::BlobConfig::Fs {
                root: data_dir.join("blobs"),
            },
            BlobBackend::S3 => storage::BlobConfig::S3 {
                bucket: anyhow::Context::context(
                    self.s3_bucket.clone(),
                    "--s3-bucket is required with --blob-store s3",
                )?,
                region: self.s3_region.clone(),
                endpoint: self.s3_endpoint.clone(),
                root: self.s3_root.clone(),
            },
        })
    }
}

// ---- Metadata store selection (embedded or ScyllaDB) ----

/// Which metadata store `rollout serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreBackend {
    /// fjall in `<data-dir>/meta`: one box, no other process to run.
    Embedded,
    /// A ScyllaDB (or Apache Cassandra) cluster (`--scylla-*`).
    Scylla,
}

/// `--scylla-consistency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScyllaConsistency {
    /// QUORUM (SERIAL for conditional writes).
    Quorum,
    /// LOCAL_QUORUM (LOCAL_SERIAL): durable in the local datacenter only.
    LocalQuorum,
}

/// `rollout serve` options choosing the metadata store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where metadata (artifacts, deployments, devices) is kept.
    #[arg(long = "store", env = "ROLLOUT_STORE", value_enum, default_value_t = StoreBackend::Embedded)]
    pub backend: StoreBackend,

    /// The cluster (with `--store scylla`).
    #[command(flatten)]
    pub scylla: ScyllaArgs,
}

/// How to reach a ScyllaDB cluster.
#[derive(Debug, Clone, Args)]
pub struct ScyllaArgs {
    /// Contact points, `host:port` (9042 is the CQL port), comma-separated; the driver
    /// discovers the other nodes.
    #[arg(long, env = "ROLLOUT_SCYLLA_NODES", value_delimiter = ',')]
    pub scylla_nodes: Vec<String>,

    /// Keyspace of rollout's tables, created (with its tables) if missing.
    #[arg(long, env = "ROLLOUT_SCYLLA_KEYSPACE", default_value = "rollout")]
    pub scylla_keyspace: storage::scylla::Keyspace,

    /// Replication of a keyspace rollout creates: a replica count per datacenter (`3`) or
    /// `DC:COUNT,...`. The default of 1 is for development; an existing keyspace is kept.
    #[arg(long, env = "ROLLOUT_SCYLLA_REPLICATION", default_value = "1")]
    pub scylla_replication: storage::scylla::Replication,

    /// Consistency of every read and write.
    #[arg(long, env = "ROLLOUT_SCYLLA_CONSISTENCY", value_enum, default_value_t = ScyllaConsistency::Quorum)]
    pub scylla_consistency: ScyllaConsistency,

    /// Role name, when the cluster requires authentication.
    #[arg(long, env = "ROLLOUT_SCYLLA_USER")]
    pub scylla_user: Option<String>,

    /// File holding the role's password (trailing newline ignored).
    #[arg(long, env = "ROLLOUT_SCYLLA_PASSWORD_FILE")]
    pub scylla_password_file: Option<PathBuf>,
}

impl ScyllaArgs {
    /// The store configuration these flags describe (reads the password file).
    pub fn config(&self) -> anyhow::Result<storage::ScyllaConfig> {
        anyhow::ensure!(
            !self.scylla_nodes.is_empty(),
            "--store scylla needs --scylla-nodes (or ROLLOUT_SCYLLA_NODES), e.g. 10.0.0.1:9042"
        );
        let credentials = match (&self.scylla_user, &self.scylla_password_file) {
            (None, None) => None,
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file).map_err(|e| {
                    anyhow::anyhow!("reading --scylla-password-file {}: {e}", file.display())
                })?;
                Some(storage::scylla::Credentials {
                    user: user.clone(),
                    password: password.trim_end_matches(['\r', '\n']).to_owned(),
                })
            }
            _ => anyhow::bail!("--scylla-user and --scylla-password-file go together"),
        };
        Ok(storage::ScyllaConfig {
            nodes: self.scylla_nodes.clone(),
            keyspace: self.scylla_keyspace.clone(),
            replication: self.scylla_replication.clone(),
            consistency: match self.scylla_consistency {
                ScyllaConsistency::Quorum => storage::scylla::Consistency::Quorum,
                ScyllaConsistency::LocalQuorum => storage::scylla::Consistency::LocalQuorum,
            },
            credentials,
        })
    }
}

/// `rollout schema …`.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Create the keyspace and tables of `ops/scylla/schema.cql` if missing (idempotent;
    /// `rollout serve --store scylla` does it at start-up too).
    Apply(ScyllaArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let argv = ["rollout", "serve"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => *args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serve_flags_take_units_short_addresses_and_boolish_values() {
        let a = serve(&[
            "--listen",
            "8080",
            "--max-artifact-size",
            "10G",
            "--device-token-ttl",
            "1d",
            "--trust-gateway",
        ]);
        assert_eq!(a.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(a.max_artifact_size, 10 << 30);
        assert_eq!(a.device_token_ttl, 86400);
        assert!(a.trust_gateway);
        let defaults = serve(&[]);
        assert_eq!(defaults.max_artifact_size, 10 << 30);
        assert_eq!(defaults.idle_timeout, 60);
        assert!(!defaults.trust_gateway);
        let refused = Cli::try_parse_from(["rollout", "serve", "--idle-timeout", "0"]);
        assert!(refused.is_err());
    }
}
