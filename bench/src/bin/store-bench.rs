//! Durable write rate of the metadata store: one write per fsync'd commit, and many writes
//! grouped in one commit (what the group committer does under load). With `--cql HOST:PORT`
//! the same three runs go to the ScyllaDB store on that node too (keyspace `store_bench`,
//! QUORUM), printed beside the embedded store's.

use std::sync::Arc;
use std::time::Instant;

use bench::{rate, row};
use clap::Parser;
use storage::{
    DeviceDeploymentRecord, EmbeddedStore, MetaStore, ScyllaConfig, ScyllaStore, TenantId, Write,
};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Commits of one write each.
    #[arg(long, default_value_t = 2_000)]
    single: u64,
    /// Writes in grouped commits.
    #[arg(long, default_value_t = 200_000)]
    grouped: u64,
    /// Writes per grouped commit.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Concurrent submitters for the group-commit run.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Also measure the ScyllaDB store on this CQL node (`host:port`).
    #[arg(long)]
    cql: Option<String>,
}

fn record(i: u64) -> Write {
    Write::PutDevice {
        tenant: TenantId::default_tenant(),
        deployment: Uuid::nil(),
        record: DeviceDeploymentRecord::pending(
            format!("device-{i:08}"),
            OffsetDateTime::now_utc(),
        ),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
    println!(
        "store-bench: fjall, fsync per commit, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    measure("fjall", store, &args).await;

    if let Some(node) = &args.cql {
        let config = ScyllaConfig {
            nodes: vec![node.clone()],
            keyspace: "store_bench".parse().expect("a valid keyspace"),
            replication: Default::default(),
            consistency: Default::default(),
            credentials: None,
        };
        let store = ScyllaStore::connect(&config)
            .await
            .expect("connect to --cql");
        println!("store-bench: ScyllaDB store on {node}, QUORUM, RF 1");
        measure("cql", Arc::new(store), &args).await;
    }

    #[cfg(feature = "engines")]
    engines::run(&args);
}

/// One write per commit, `batch` writes per commit, and `concurrency` submitters of one
/// write each, on `store`.
async fn measure(label: &str, store: Arc<dyn MetaStore>, args: &Args) {
    let start = Instant::now();
    for i in 0..args.single {
        store.commit(vec![record(i)]).await.expect("commit");
    }
    let single = rate(args.single, start.elapsed());
    row(
        &format!("{label}: 1 write per commit (baseline)"),
        single,
        "writes/s",
        "",
    );

    let start = Instant::now();
    let mut i = 0;
    while i < args.grouped {
        let writes: Vec<Write> = (i..i + args.batch as u64).map(record).collect();
        store.commit(writes).await.expect("commit");
        i += args.batch as u64;
    }
    let grouped = rate(args.grouped, start.elapsed());
    row(
        &format!("{label}: {} writes per commit", args.batch),
        grouped,
        "writes/s",
        &format!("x{:.1} vs baseline", grouped / single),
    );

    let start = Instant::now();
    let per_task = args.grouped / args.concurrency as u64;
    let mut tasks = Vec::new();
    for t in 0..args.concurrency as u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..per_task {
                store
                    .commit(vec![record(1_000_000 + t * per_task + j)])
                    .await
                    .expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let group = rate(per_task * args.concurrency as u64, start.elapsed());
    row(
        &format!("{label}: {} concurrent writers", args.concurrency),
        group,
        "writes/s",
        &format!("x{:.1} vs baseline", group / single),
    );
}

#[cfg(feature = "engines")]
mod engines {
    use super::*;

    /// The same raw writes in every engine: 8-byte keys, 200-byte values, `batch` writes per
    /// fsync'd commit.
    pub fn run(args: &Args) {
        let dir = tempfile::tempdir().expect("temp dir");
        let value = vec![7u8; 200];
        println!("same raw writes in each engine (8-byte key, 200-byte value):");

        let db = fjall::Database::builder(dir.path().join("fjall"))
            .manual_journal_persist(true)
            .open()
            .expect("fjall");
        let ks = db
            .keyspace("t", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        let start = Instant::now();
        let mut i = 0u64;
        while i < args.grouped {
            let mut batch = db.batch();
            for j in i..i + args.batch as u64 {
                batch.insert(&ks, j.to_be_bytes().to_vec(), value.clone());
            }
            batch.commit().expect("commit");
            db.persist(fjall::PersistMode::SyncAll).expect("fsync");
            i += args.batch as u64;
        }
        row(
            &format!("fjall: {} writes per commit", args.batch),
            rate(args.grouped, start.elapsed()),
            "writes/s",
            "",
        );

        let db = redb::Database::create(dir.path().join("redb")).expect("redb");
        let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");
        let start = Instant::now();
        let mut i = 0u64;
        while i < args.grouped {
            let tx = db.begin_write().expect("tx");
            {
                let mut t = tx.open_table(table).expect("table");
                for j in i..i + args.batch as u64 {
                    t.insert(j.to_be_bytes().as_slice(), value.as_slice())
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
            i += args.batch as u64;
        }
        row(
            &format!("redb: {} writes per commit", args.batch),
            rate(args.grouped, start.elapsed()),
            "writes/s",
            "",
        );

        let conn = rusqlite::Connection::open(dir.path().join("sqlite")).expect("sqlite");
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t(k BLOB PRIMARY KEY, v BLOB);").expect("schema");
        let start = Instant::now();
        let mut i = 0u64;
        while i < args.grouped {
            let tx = conn.unchecked_transaction().expect("tx");
            {
                let mut st = tx
                    .prepare_cached("INSERT OR REPLACE INTO t VALUES (?1, ?2)")
                    .expect("prepare");
                for j in i..i + args.batch as u64 {
                    st.execute(rusqlite::params![j.to_be_bytes().to_vec(), value])
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
            i += args.batch as u64;
        }
        row(
            &format!("SQLite WAL FULL: {} writes per commit", args.batch),
            rate(args.grouped, start.elapsed()),
            "writes/s",
            "",
        );
    }
}
