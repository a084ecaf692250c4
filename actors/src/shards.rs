//! The actix runtime: one `System` thread and a fixed number of arbiters (shards). Entities
//! are spread over the shards by a hash of their id; sagas run on their source's shard.
//!
//! actix cannot start an actor outside its own runtime (it panics outside a `LocalSet`), so
//! everything that starts an actor or spawns a saga goes through an `ArbiterHandle`, which
//! accepts work from any thread.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::thread::JoinHandle;

use actix::{Arbiter, ArbiterHandle, System};

pub struct Shards {
    arbiters: Vec<ArbiterHandle>,
    system: System,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards").field("count", &self.arbiters.len()).finish()
    }
}

impl Shards {
    /// Starts the actix system on its own thread with `count` arbiter threads.
    pub fn start(count: usize) -> std::io::Result<Shards> {
        let count = count.max(1);
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new().name("tally-actix".to_owned()).spawn(move || {
            let system = actix::System::new();
            let arbiters: Vec<Arbiter> = system.block_on(async { (0..count).map(|_| Arbiter::new()).collect() });
            let handles: Vec<ArbiterHandle> = arbiters.iter().map(Arbiter::handle).collect();
            if sender.send((System::current(), handles)).is_err() {
                return;
            }
            if let Err(error) = system.run() {
                tracing::error!(%error, "actix system stopped with an error");
            }
            for arbiter in arbiters {
                arbiter.stop();
                let _ = arbiter.join();
            }
        })?;
        let (system, arbiters) =
            receiver.recv().map_err(|_| std::io::Error::other("the actix system thread did not start"))?;
        Ok(Shards { arbiters, system, thread: Mutex::new(Some(thread)) })
    }

    pub fn count(&self) -> usize {
        self.arbiters.len()
    }

    /// The shard that owns `key`. Stable for the life of the process: `DefaultHasher::new()`
    /// uses fixed keys.
    pub fn for_key<K: Hash>(&self, key: &K) -> &ArbiterHandle {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let index = (hasher.finish() % self.arbiters.len() as u64) as usize;
        &self.arbiters[index]
    }

    /// Runs `future` on the shard that owns `key`. Returns false if the shard has stopped.
    pub fn spawn_on<K: Hash>(&self, key: &K, future: impl Future<Output = ()> + Send + 'static) -> bool {
        self.for_key(key).spawn(future)
    }

    /// Stops every arbiter and the system, and waits for the threads. Idempotent.
    pub fn stop(&self) {
        let thread = self.thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if thread.is_some() {
            self.system.stop();
        }
        // Joining from one of our own actix threads would wait for itself: signal and leave.
        if System::try_current().is_some() {
            return;
        }
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("actix system thread panicked");
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop();
    }
}
