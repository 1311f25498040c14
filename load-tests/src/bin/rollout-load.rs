//! `rollout-load`: simulate a fleet of Mender devices against a rollout server on this
//! machine. `rollout-load --help` lists the options; see `load-tests/` and BENCHMARKS.md.

use std::process::ExitCode;

use clap::Parser;
use load_tests::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rollout-load: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(load_tests::run(&cli)) {
        Ok((report, exit)) => {
            if cli.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("rollout-load: encoding the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.table());
            }
            ExitCode::from(exit)
        }
        Err(e) => {
            eprintln!("rollout-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
