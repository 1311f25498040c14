//! `token-bench`: what verifying a device token costs the server, for the tokens rollout
//! issues (HS256 with the data dir's device secret) beside Ed25519-signed ones (how
//! rollout signed device tokens before, and how it still signs user tokens), in the same
//! run, through the server's own verifier.
//!
//! A fleet of a million devices holds a million distinct tokens: the verified-token cache
//! cannot keep them all, so each check-in pays a full verification. The bench verifies
//! `--tokens` distinct tokens with a cache too small to help, then one token again and
//! again (the cache's hit path), and prints microseconds per verification.
//!
//!   cargo run --release -p bench --bin token-bench            # 20,000 tokens per kind

use std::time::Instant;

use api::auth::{SigningKey, TokenIssuer, TokenVerifier};
use clap::Parser;
use serde_json::json;
use storage::TenantId;

#[derive(Parser)]
#[command(about = "Cost of verifying device tokens: HS256 (rollout's) beside Ed25519")]
struct Args {
    /// Distinct tokens verified per kind.
    #[arg(long, default_value_t = 20_000)]
    tokens: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let key = SigningKey::load_or_create(dir.path())?;
    let issuer = TokenIssuer::new(key.clone());
    let tenant = TenantId::parse("bench")?;
    let ttl = 3600;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let hs256: Vec<String> = (0..args.tokens)
        .map(|i| issuer.device_token(&tenant, &format!("dev-{i:08}"), ttl))
        .collect::<Result<_, _>>()?;
    let ed25519: Vec<String> = (0..args.tokens)
        .map(|i| {
            key.sign(&json!({
                "sub": format!("dev-{i:08}"), "mender.device": true,
                "mender.tenant": "bench", "iat": now, "exp": now + ttl as i64,
            }))
        })
        .collect::<Result<_, _>>()?;
    println!(
        "verifying {} distinct device tokens per kind, cache of 16 (misses), then one token \
         {} times (cache hits)",
        args.tokens, args.tokens
    );
    println!(
        "{:<42} {:>12} {:>14}",
        "tokens", "µs / verify", "verifies / s"
    );
    let verifier =
        || TokenVerifier::new(vec![key.verify_key(), key.device_verify_key()], false, 16);
    for (name, tokens) in [
        ("HS256 (rollout's device tokens)", &hs256),
        ("Ed25519 (baseline)", &ed25519),
    ] {
        let misses = per_verify(&verifier(), tokens.iter())?;
        let hits = per_verify(&verifier(), tokens.iter().map(|_| &tokens[0]))?;
        row(&format!("{name}, distinct"), misses);
        row(&format!("{name}, cached"), hits);
    }
    Ok(())
}

/// Seconds per verification of each of `tokens` by `verifier`.
fn per_verify<'a>(
    verifier: &TokenVerifier,
    tokens: impl ExactSizeIterator<Item = &'a String>,
) -> anyhow::Result<f64> {
    let count = tokens.len().max(1) as f64;
    let started = Instant::now();
    for token in tokens {
        verifier.verify(token)?;
    }
    Ok(started.elapsed().as_secs_f64() / count)
}

fn row(name: &str, seconds: f64) {
    println!(
        "{name:<42} {:>12.2} {:>14.0}",
        seconds * 1e6,
        1.0 / seconds.max(1e-12)
    );
}
