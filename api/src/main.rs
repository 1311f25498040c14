//! The `rollout` binary.

use clap::Parser;

use api::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROLLOUT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => api::serve(*args).await,
        Command::Token(cmd) => api::commands::token(cmd),
        Command::Device(cmd) => api::commands::device(cmd).await,
        Command::Schema(cmd) => api::commands::schema(cmd).await,
        Command::Cluster(cmd) => api::commands::cluster(cmd).await,
    }
}
