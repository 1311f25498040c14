//! Running the API suites on a Cassandra/ScyllaDB node instead of the embedded store: with
//! `ROLLOUT_TEST_STORE=scylla` and `ROLLOUT_TEST_CQL=host:port`, every [`Server`] runs
//! `--store scylla` in a keyspace of its own (kept across restarts, dropped with the server).
//!
//! [`Server`]: super::Server

use std::time::Duration;

/// A keyspace created for one test server.
pub struct TestKeyspace {
    node: String,
    name: String,
}

impl TestKeyspace {
    /// `Some` when the environment asks for the scylla store.
    pub fn from_env() -> Option<TestKeyspace> {
        match std::env::var("ROLLOUT_TEST_STORE").as_deref() {
            Ok("scylla") => {}
            Ok("embedded") | Ok("") | Err(_) => return None,
            Ok(other) => panic!("ROLLOUT_TEST_STORE={other:?}: expected scylla or embedded"),
        }
        let node = std::env::var("ROLLOUT_TEST_CQL").expect(
            "ROLLOUT_TEST_STORE=scylla needs ROLLOUT_TEST_CQL=host:port \
             (scripts/cassandra-node start DIR prints it)",
        );
        let name = format!("api_{}", uuid::Uuid::new_v4().simple());
        Some(TestKeyspace { node, name })
    }

    /// The `rollout serve` flags that use this keyspace.
    pub fn serve_args(&self) -> Vec<String> {
        [
            "--store",
            "scylla",
            "--scylla-nodes",
            &self.node,
            "--scylla-keyspace",
            &self.name,
        ]
        .map(String::from)
        .to_vec()
    }
}

impl Drop for TestKeyspace {
    /// Drop the keyspace, so that a long test run does not pile up tables in the node's heap.
    fn drop(&mut self) {
        let (node, name) = (self.node.clone(), self.name.clone());
        // Its own thread and runtime: drop may run inside or outside the test's runtime.
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let builder =
                    scylla::client::session_builder::SessionBuilder::new().known_node(&node);
                let connect = builder.build();
                if let Ok(Ok(session)) =
                    tokio::time::timeout(Duration::from_secs(10), connect).await
                {
                    let drop = format!("DROP KEYSPACE IF EXISTS {name}");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        session.query_unpaged(drop, ()),
                    )
                    .await;
                }
            });
        });
        let _ = done.join();
    }
}
