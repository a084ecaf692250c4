//! Idempotency keys: who holds one right now (`KeyClaim`), and whether the store can hold a
//! transfer under one at all (`KeyFilter`).
//!
//! A request under a key first claims it: a concurrent duplicate waits for the claim, then
//! finds the first request's transfer. The claim is released only once whatever the request
//! recorded is durable, even when the request itself is dropped half way (its client went
//! away): otherwise a retry could find nothing in the store and start a second transfer.
//!
//! Finding the first request's transfer used to be a store round trip for every keyed
//! request, though nearly every key is new. The filter answers "certainly new" from memory:
//! it holds every key the store holds (all of them read at start-up) and every key claimed
//! since, before its transfer is recorded. It can say "maybe" for a new key (a false
//! positive, about one in a thousand keys, rising slowly past its sizing), and then the store
//! is asked as before; it never says "new" for a key the store has. The store's unique index
//! stays the last word: a second transfer under a key could never commit.
//!
//! Keys are per caller (`scope`), and the filter holds (scope, key) pairs. In a cluster
//! (issue 13) the filter must hold the keys of the shards this node serves, and be refilled
//! from the store when it takes a shard over.

use std::sync::{Arc, Mutex};

use growable_bloom_filter::GrowableBloom;
use tally_engine::Transfer;
use tally_persistence::StoreError;
use tokio::sync::OwnedMutexGuard;

use crate::engine::{Engine, EngineInner};

/// Keys read from the store per round trip at start-up.
const LOAD_PAGE: u32 = 10_000;

/// False-positive rate the filter is sized for (each costs one store look-up).
const FALSE_POSITIVE_RATE: f64 = 0.001;

/// Keys the filter is first sized for; it grows by adding larger layers as keys arrive.
const INITIAL_CAPACITY: usize = 1_000_000;

/// Independent filters, chosen by the key's hash, so that concurrent requests on several
/// threads rarely wait for the same lock.
const FILTER_SHARDS: usize = 16;

/// A Bloom filter over every (scope, key) the store holds or a request has claimed.
pub(crate) struct KeyFilter {
    shards: Vec<Mutex<GrowableBloom>>,
}

impl KeyFilter {
    pub(crate) fn new() -> Self {
        let shards = (0..FILTER_SHARDS)
            .map(|_| Mutex::new(GrowableBloom::new(FALSE_POSITIVE_RATE, INITIAL_CAPACITY / FILTER_SHARDS)))
            .collect();
        KeyFilter { shards }
    }

    fn shard(&self, scope: uuid::Uuid, key: &str) -> &Mutex<GrowableBloom> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one((scope, key));
        let index = usize::try_from(hash % FILTER_SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// Adds the key; true if it was (maybe) there already.
    pub(crate) fn insert(&self, scope: uuid::Uuid, key: &str) -> bool {
        let mut filter = self.shard(scope, key).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        !filter.insert((scope, key))
    }

    /// False only if the key was certainly never inserted.
    pub(crate) fn may_contain(&self, scope: uuid::Uuid, key: &str) -> bool {
        let filter = self.shard(scope, key).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        filter.contains((scope, key))
    }
}

/// Holds an idempotency key while the work under it runs (see the module's doc).
pub struct KeyClaim {
    inner: Arc<EngineInner>,
    slot: (uuid::Uuid, Arc<str>),
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyClaim {
    /// Releases the key now if everything recorded under it is durable already
    /// (`settled`), else once the journals have made it so.
    pub async fn release(mut self, settled: bool) {
        if !settled {
            wait_for_journals(&self.inner).await;
        }
        self.forget();
    }

    fn forget(&mut self) {
        forget(&self.inner, &self.slot, self.guard.take());
    }
}

/// Lets go of `slot`'s lock, and forgets the slot once only the map holds it.
fn forget(inner: &EngineInner, slot: &(uuid::Uuid, Arc<str>), guard: Option<OwnedMutexGuard<()>>) {
    drop(guard);
    inner.idempotency_claims.remove_if(slot, |_, current| Arc::strong_count(current) <= 1);
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else { return };
        // Dropped without `release`: the request was cut off (its client went away) while its
        // work may still be recording. Keep the key until the journals are durable.
        let inner = Arc::clone(&self.inner);
        let slot = self.slot.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                // The task holds the lock's guard, not a `KeyClaim`: a runtime that is shutting
                // down drops the task at once, inside `spawn`, and a claim dropped there would
                // hand its release on again, without end, until the stack overflowed. The
                // guard dropped with the task lets go of the key (the process is stopping).
                handle.spawn(async move {
                    wait_for_journals(&inner).await;
                    forget(&inner, &slot, Some(guard));
                });
            }
            Err(_) => forget(&inner, &slot, Some(guard)),
        }
    }
}

/// Waits until every record appended so far is durable (nothing to wait for once a journal
/// has failed: it commits nothing more).
async fn wait_for_journals(inner: &EngineInner) {
    let journals = &inner.shared.journals;
    if !journals.has_failed() {
        let _ = journals.barrier().await;
    }
}

impl Engine {
    /// Claims `slot` of `scope`, waiting for whoever holds it. Transfers, batches and crypto
    /// operations name their slots apart (a batch's and a crypto operation's carry a space
    /// that a transfer's key cannot hold; a deposit's `tx_hash` is in the nil scope).
    pub async fn claim_key(&self, scope: uuid::Uuid, slot: impl Into<Arc<str>>) -> KeyClaim {
        let slot = (scope, slot.into());
        let mutex = Arc::clone(self.inner.idempotency_claims.entry(slot.clone()).or_default().value());
        let guard = mutex.lock_owned().await;
        KeyClaim { inner: Arc::clone(&self.inner), slot, guard: Some(guard) }
    }

    /// The transfer made under `key` of `scope`, if any; the store is asked only when the
    /// filter cannot rule the key out. The key is then in the filter: call this while holding
    /// the key's claim, before anything is recorded under it.
    pub async fn transfer_under_key(&self, scope: uuid::Uuid, key: &str) -> Result<Option<Transfer>, StoreError> {
        if !self.inner.keys.insert(scope, key) {
            return Ok(None);
        }
        Ok(self.inner.shared.store.transfer_by_idempotency(scope, key).await?.map(|loaded| loaded.value))
    }

    /// Whether the filter can rule out that the store holds a transfer under `key` (for
    /// tests and metrics: a new key should almost always be ruled out).
    pub fn key_ruled_out(&self, scope: uuid::Uuid, key: &str) -> bool {
        !self.inner.keys.may_contain(scope, key)
    }

    /// Reads every key the store holds into the filter (at start-up, before serving).
    pub(crate) async fn load_keys(&self) -> Result<u64, StoreError> {
        let mut after = None;
        let mut loaded = 0_u64;
        loop {
            let page = self.inner.shared.store.idempotency_keys_after(after.take(), LOAD_PAGE).await?;
            for (scope, key) in &page {
                self.inner.keys.insert(*scope, key);
            }
            loaded += page.len() as u64;
            if page.len() < LOAD_PAGE as usize {
                return Ok(loaded);
            }
            after = page.into_iter().last();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inserted_key_is_never_ruled_out_and_most_new_keys_are() {
        let filter = KeyFilter::new();
        let scope = uuid::Uuid::from_u128(7);
        let seen_before = (0..20_000).filter(|i| filter.insert(scope, &format!("key-{i}"))).count();
        assert!(seen_before < 200, "{seen_before} of 20,000 new keys were not ruled out on insertion");
        for i in 0..20_000 {
            assert!(filter.may_contain(scope, &format!("key-{i}")), "key-{i} was inserted");
        }
        let other = uuid::Uuid::from_u128(8);
        assert!(filter.may_contain(scope, "key-1"));
        let false_positives = (0..20_000).filter(|i| filter.may_contain(other, &format!("key-{i}"))).count();
        assert!(false_positives < 200, "{false_positives} of 20,000 new keys were not ruled out");
    }
}

#[cfg(test)]
mod claim_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use tally_persistence::MemoryStore;

    use crate::engine::{Engine, EngineConfig};

    /// A request's task holding a claim it never released, dropped as its runtime shuts down
    /// (a server stopped with batches in flight). The claim's drop hands the key's release to
    /// a task of its own, which the closing runtime drops at once: that must not drop another
    /// claim that hands its release on again (it did, without end, until the thread's stack
    /// overflowed and the process aborted). The key is free afterwards.
    #[test]
    fn a_claim_dropped_as_its_runtime_shuts_down_lets_go_of_its_key() {
        let outer = tokio::runtime::Runtime::new().unwrap();
        let engine = outer.block_on(Engine::start(Arc::new(MemoryStore::new()), EngineConfig::default())).unwrap();
        let scope = uuid::Uuid::from_u128(7);
        let inner = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        inner.block_on(async {
            let claim = engine.claim_key(scope, "key").await;
            tokio::spawn(async move {
                let _claim = claim;
                std::future::pending::<()>().await;
            });
            tokio::task::yield_now().await;
        });
        drop(inner);
        let again = outer
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), engine.claim_key(scope, "key")).await });
        assert!(again.is_ok(), "the key is still held");
    }
}
