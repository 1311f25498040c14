//! The `rollout` binary.

use std::io::IsTerminal;

use clap::Parser;

use api::config::{Cli, Command, LogFormat};

/// mimalloc instead of glibc's malloc: allocation was ~13 % of the server's cycles on the
/// check-in path (BENCHMARKS.md, "What the HTTP path costs").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What is logged when `ROLLOUT_LOG` is not set: rollout at info, the embedded store's
/// engine only when it warns (it narrates every start-up at info).
const DEFAULT_LOG: &str = "info,lsm_tree=warn,fjall=warn";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => api::serve(*args).await,
        Command::Token(cmd) => api::commands::token(cmd),
        Command::Device(cmd) => api::commands::device(cmd).await,
        Command::Schema(cmd) => api::commands::schema(cmd).await,
        Command::Cluster(cmd) => api::commands::cluster(cmd).await,
        Command::Backup(args) => api::commands::backup(args).await,
        Command::Restore(args) => api::commands::restore(args).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROLLOUT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    let lines = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => lines.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => lines.json().flatten_event(true).init(),
    }
}
