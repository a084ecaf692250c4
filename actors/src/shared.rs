//! What every actor, registry and saga shares: the store, the journal, the runtime and where
//! each entity lives on it, the fault switch, the health counters and the configured bounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_persistence::{Journal, Journals, Store};

use crate::entity::ActorKind;
use crate::faults::FaultInjector;
use crate::health::KindStats;
use crate::runtime::{Placement, Runtime};

/// Bounds and timings of the actor layer. Every number has a reason next to it.
#[derive(Clone, Debug)]
pub struct ActorConfig {
    /// Runtime threads (when the engine starts its own runtime). One per core: each thread
    /// serves its shards' actors, sagas and journals and, in `tally serve`, HTTP connections.
    pub shards: usize,
    /// Messages waiting in one actor's mailbox before senders get `Overloaded`. 1,024 lets a
    /// hot account absorb a burst of about a millisecond of its peak rate; deeper queues only
    /// add latency.
    pub mailbox_capacity_max: u32,
    /// An actor idle this long is passivated (once its records are durable).
    pub idle_timeout: Duration,
    /// How often the registry looks for idle actors.
    pub passivation_sweep_interval: Duration,
    /// Restarts within `restart_window` after which an actor is quarantined. Five restarts
    /// a minute is far beyond any transient fault and means the actor's state or input is
    /// poisoned; refusing its writes protects the rest of the system.
    pub quarantine_restarts: u32,
    pub restart_window: Duration,
    /// Attempts to deliver one message when the actor restarts or passivates under it.
    pub send_attempts_max: u32,
}

impl Default for ActorConfig {
    fn default() -> Self {
        ActorConfig {
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            mailbox_capacity_max: 1_024,
            idle_timeout: Duration::from_secs(60),
            passivation_sweep_interval: Duration::from_secs(5),
            quarantine_restarts: 5,
            restart_window: Duration::from_secs(60),
            send_attempts_max: 12,
        }
    }
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    /// One journal per shard (`placement.shards()` of them).
    pub journals: Journals,
    pub runtime: Arc<Runtime>,
    pub placement: Placement,
    pub faults: Arc<FaultInjector>,
    pub stats: [KindStats; 4],
    pub config: ActorConfig,
    pub started: Instant,
}

impl Shared {
    pub fn stats(&self, kind: ActorKind) -> &KindStats {
        &self.stats[kind.index()]
    }

    /// The thread that serves the entity or saga keyed by `id`.
    pub fn thread_of(&self, id: uuid::Uuid) -> usize {
        self.placement.thread_of(id.as_u128())
    }

    /// The shard of the entity or saga keyed by `id`.
    pub fn shard_of(&self, id: uuid::Uuid) -> u16 {
        u16::try_from(self.placement.shard_of(id.as_u128())).unwrap_or(u16::MAX)
    }

    /// The journal a saga (or any work) keyed by `id` appends to: its shard's.
    pub fn journal_of(&self, id: uuid::Uuid) -> &Journal {
        self.journals.shard(self.shard_of(id))
    }

    /// Milliseconds since start: the clock of an account's journal affinity
    /// (`Registry::keep_journal`).
    pub fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Seconds since start, as a coarse clock for idleness (4 bytes per slot, not 16).
    pub fn tick(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }
}
