//! The subcommands besides `serve`: `rollout token …`, `rollout device preauthorize`,
//! `rollout schema apply`, `rollout cluster status`, `rollout backup` (which asks the
//! running server) and `rollout restore`.

use anyhow::Context;

use crate::auth::{SigningKey, TokenIssuer};
use crate::config::{
    BackupArgs, ClusterCommand, DeviceCommand, RestoreArgs, SchemaCommand, TokenCommand,
};

/// Print the token a `rollout token` command asks for.
pub fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    let (dir, token) = match &cmd {
        TokenCommand::User {
            tenant,
            subject,
            ttl,
            dir,
        } => (
            dir,
            issuer_for(&dir.data_dir, subject)?.user_token(tenant, subject, *ttl),
        ),
        TokenCommand::Device {
            tenant,
            device,
            ttl,
            dir,
        } => (
            dir,
            issuer_for(&dir.data_dir, device)?.device_token(tenant, device, *ttl),
        ),
        TokenCommand::Tenant { tenant, ttl, dir } => {
            anyhow::ensure!(!tenant.is_default(), "--tenant must not be empty");
            (
                dir,
                issuer_for(&dir.data_dir, "tenant")?.tenant_token(tenant, *ttl),
            )
        }
    };
    let token = token.with_context(|| format!("signing with {}", dir.data_dir.display()))?;
    println!("{token}");
    Ok(())
}

/// The issuer of the data dir's key, after checking that the subject can be stored (clap
/// has checked the tenant with [`storage::TenantId::parse`]).
fn issuer_for(data_dir: &std::path::Path, subject: &str) -> anyhow::Result<TokenIssuer> {
    anyhow::ensure!(!subject.is_empty(), "the subject must not be empty");
    anyhow::ensure!(
        storage::keys::is_valid_component(subject),
        "the subject must not contain NUL bytes"
    );
    let key = SigningKey::load(data_dir).context("loading the token key")?;
    Ok(TokenIssuer::new(key))
}

/// Run a `rollout device` command.
pub async fn device(cmd: DeviceCommand) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::Preauthorize {
            tenant,
            identity,
            pubkey,
            dir,
            store,
        } => {
            let identity_data: serde_json::Value =
                serde_json::from_str(&identity).context("--identity is not JSON")?;
            let pem = std::fs::read_to_string(&pubkey)
                .with_context(|| format!("reading {}", pubkey.display()))?;
            let store = crate::open_store(&store, &dir.data_dir).await.context(
                "no store to register the device in (while `rollout serve` runs on the \
                     embedded store, use POST /api/management/v2/devauth/devices instead)",
            )?;
            let record =
                crate::identity::preauthorize(store.as_ref(), &tenant, identity_data, &pem).await?;
            println!("{}", record.id);
            Ok(())
        }
    }
}

/// Run a `rollout cluster` command.
pub async fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status { dir, store } => {
            let store = crate::open_store(&store, &dir.data_dir).await?;
            print!("{}", crate::membership::status(store.as_ref()).await?);
            Ok(())
        }
    }
}

/// Run a `rollout schema` command.
pub async fn schema(cmd: SchemaCommand) -> anyhow::Result<()> {
    match cmd {
        SchemaCommand::Apply(args) => {
            let config = args.config()?;
            // Connecting applies the schema (idempotently) and prepares every statement,
            // which also proves that the tables have the columns this binary uses.
            storage::ScyllaStore::connect(&config)
                .await
                .with_context(|| format!("applying the schema on {}", config.nodes.join(",")))?;
            println!("schema applied to keyspace {}", config.keyspace);
            Ok(())
        }
    }
}

/// Run `rollout backup`: ask the server running on the data dir for a backup.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let summary = tokio::task::spawn_blocking(move || {
        crate::backup::save::save(&args.dir.data_dir, &args.to).map(|summary| (summary, args.to))
    })
    .await??;
    let (summary, to) = summary;
    let mut left_out = String::new();
    if summary.artifacts_left_out > 0 {
        left_out = format!(
            "; {} artifacts deleted meanwhile were left out",
            summary.artifacts_left_out
        );
    }
    println!(
        "backup written to {} in {:.1} s: {summary}{left_out}",
        to.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Run `rollout restore`: rebuild a data dir from a backup file.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let blobs = args.blobs.config(&args.dir.data_dir)?;
    let runtime = tokio::runtime::Handle::current();
    let data_dir = args.dir.data_dir.clone();
    let summary = tokio::task::spawn_blocking(move || {
        crate::backup::restore::restore(&args.from, &args.dir.data_dir, &blobs, &runtime)
    })
    .await??;
    println!(
        "restored into {}: {summary}; start it with `rollout serve --data-dir {}`",
        data_dir.display(),
        data_dir.display()
    );
    Ok(())
}
