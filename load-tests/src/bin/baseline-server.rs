//! `baseline-server`: the least an HTTP server on warp can do for a device check-in.
//!
//! It answers `GET` and `POST` on the check-in path with a fixed 200 JSON body of the size
//! of rollout's 200 check-in answer, and does no other work (no token, no store, no actor).
//! `rollout-load --mode checkin` against it measures what the machine, warp and the client
//! can do, the ceiling rollout's figures are compared with.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use warp::Filter;

/// A bare warp server answering device check-ins with a constant update.
#[derive(Debug, Parser)]
#[command(name = "baseline-server", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port. Prints `listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let body: &'static str = Box::leak(checkin_body(addr).into_boxed_str());
    let next =
        warp::path!("api" / "devices" / "v1" / "deployments" / "device" / "deployments" / "next")
            .and(warp::get().or(warp::post()).unify())
            .map(move || {
                warp::http::Response::builder()
                    .header("content-type", "application/json")
                    .body(body)
            });
    println!("listening on http://{addr}");
    warp::serve(next)
        .incoming(listener)
        .graceful(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .run()
        .await;
    Ok(())
}

/// A check-in answer shaped and sized like rollout's: ids, a signed download link on this
/// server, its expiry, the compatible device types.
fn checkin_body(addr: SocketAddr) -> String {
    let artifact = "3f0d4f0e-6a1e-4a43-9a57-5b0f4a3c2d11";
    serde_json::json!({
        "id": "9b2f7c4e-1d3a-4c5b-8e6f-7a8b9c0d1e2f",
        "artifact": {
            "id": artifact,
            "artifact_name": "rollout-load-1.0",
            "source": {
                "uri": format!(
                    "http://{addr}/download/{artifact}?tenant=&expires=1767225600&signature={}",
                    "0123456789abcdef".repeat(4)
                ),
                "expire": "2026-01-01T00:00:00Z",
                "method": "GET"
            },
            "device_types_compatible": ["rollout-load-device"]
        }
    })
    .to_string()
}
