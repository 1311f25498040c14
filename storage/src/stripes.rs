//! Striped async locks: a fixed number of mutexes shared by hash, so memory stays constant
//! however many keys there are, while two keys rarely wait for each other.

use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

pub(crate) struct Stripes(Box<[Mutex<()>]>);

impl Stripes {
    pub(crate) fn new(stripes: usize) -> Self {
        Stripes((0..stripes.max(1)).map(|_| Mutex::new(())).collect())
    }

    /// Hold the stripe of `key` (and of every key that hashes with it).
    pub(crate) async fn lock(&self, key: impl Hash) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        self.0[h.finish() as usize % self.0.len()].lock().await
    }
}
