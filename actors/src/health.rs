//! Per-kind actor health: the counters behind `/metrics` and `/v1/admin/actors`.
//!
//! Mailbox depth is counted by Tally (enqueued minus handled), because actix has no API for it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::entity::ActorKind;

#[derive(Debug, Default)]
pub struct KindStats {
    pub active: AtomicI64,
    pub activations: AtomicU64,
    pub passivations: AtomicU64,
    pub restarts: AtomicU64,
    pub quarantined: AtomicI64,
    pub handled: AtomicU64,
    pub handler_nanos: AtomicU64,
}

impl KindStats {
    pub fn snapshot(&self, kind: ActorKind) -> KindHealth {
        KindHealth {
            kind,
            active: self.active.load(Ordering::Relaxed),
            activations: self.activations.load(Ordering::Relaxed),
            passivations: self.passivations.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            quarantined: self.quarantined.load(Ordering::Relaxed),
            mailbox_depth: 0,
            mailbox_depth_max: 0,
            handled: self.handled.load(Ordering::Relaxed),
            handler_nanos: self.handler_nanos.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindHealth {
    pub kind: ActorKind,
    pub active: i64,
    pub activations: u64,
    pub passivations: u64,
    pub restarts: u64,
    pub quarantined: i64,
    /// Messages waiting in all this kind's mailboxes (Tally counts: enqueued minus handled).
    pub mailbox_depth: i64,
    /// The deepest single mailbox of this kind.
    pub mailbox_depth_max: i64,
    pub handled: u64,
    pub handler_nanos: u64,
}

/// One actor that stands out: deep mailbox, many restarts, or quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorstActor {
    pub kind: ActorKind,
    pub id: String,
    pub mailbox_depth: u32,
    pub restarts: u32,
    pub quarantined: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub kinds: Vec<KindHealth>,
    pub sagas_in_flight: u64,
    pub sagas_completed: u64,
    pub sagas_failed: u64,
    pub sagas_compensated: u64,
    /// Pending transfers with a deadline, waiting in the expiry queue (`expiry.rs`).
    pub pending_expiries_scheduled: u64,
    pub journal_depth: usize,
    pub journal_committed_seq: u64,
    pub journal_durable_lag_micros: u64,
    pub journal_last_flush_micros: u64,
    pub journal_flush_errors: u64,
    /// Times a journal's writer found its queue's head waiting for another journal's commit.
    pub journal_dependency_waits: u64,
    /// Wake-ups of the runtime threads' inboxes (work from another thread: saga starts, steps
    /// for actors there, their answers) and the jobs they ran: jobs per wake-up is how much
    /// one cross-thread wake-up carries.
    pub inbox_wakeups: u64,
    pub inbox_jobs: u64,
    pub worst: Vec<WorstActor>,
}

impl HealthReport {
    pub fn kind(&self, kind: ActorKind) -> Option<&KindHealth> {
        self.kinds.iter().find(|health| health.kind == kind)
    }
}
