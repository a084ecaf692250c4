//! Pending expiry (docs/ledger-views.md "Pending expiry"): a pending transfer with a
//! `pending_expires_at` that no one decides by then ends `expired`, its hold released exactly
//! as a rejection releases it.
//!
//! Who sends here: saga step 1 sets the deadline (`deadline`); the saga schedules it once the
//! `pending` record is durable, an atomic batch once its intent is, and recovery at start-up for
//! every pending transfer it finds (an overdue one then expires on the sweeper's first tick).
//! The deadline lives in the transfer's own row (migration 0051), so nothing else needs to be
//! durable: the queue below is rebuilt from the store at every start.
//!
//! Cost: one ordered set per engine (`ExpiryQueue`) and one sweeper task that wakes every
//! `EXPIRY_TICK`, looks at the set's first entry, and takes the due ones: no task or timer per
//! transfer. An expiry is the saga's undo path (`Intent::Undo { outcome: Expired }`), run
//! through `Engine::resume` like an admin's reject, so it takes the transfer's claim: an
//! admin's execute, reject or cancel racing it gets one winner, and the loser the answer a
//! decided transfer gives (`409`). A decision that arrives after the deadline but before the
//! sweeper's tick is refused and the transfer expires then (`Engine::resume`): the deadline
//! is the line, not the sweeper's timing.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tally_engine::{Timestamp, TransferId, TransferStatus, TransitionRejection};

use crate::engine::{Engine, EngineInner, TransferError};

/// How often the sweeper looks for due transfers: an expiry happens at most this late. A
/// quarter of a second is far finer than the one-minute minimum timeout, and a tick costs one
/// lock and one look at the set's first entry.
pub const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// Expiries started per tick, at most. Each runs a saga (a release and a journal write), and a
/// burst of them (a restart after a long outage) must leave saga permits for live traffic; the
/// rest wait for the next tick, still in the set.
pub const EXPIRIES_PER_TICK_MAX: usize = 256;

/// How long to wait before trying again an expiry that could not run (another saga held the
/// transfer, or the engine was overloaded). If that other saga decided it, the retry finds it
/// terminal and drops it.
const EXPIRY_RETRY: Duration = Duration::from_secs(1);

/// The pending transfers with a deadline, ordered by it. At most one entry per pending
/// transfer (the saga schedules it once), so its size is bounded by the pending transfers.
#[derive(Debug, Default)]
pub(crate) struct ExpiryQueue {
    due: Mutex<BTreeSet<(Timestamp, TransferId)>>,
}

impl ExpiryQueue {
    pub(crate) fn schedule(&self, at: Timestamp, id: TransferId) {
        self.due.lock().unwrap_or_else(PoisonError::into_inner).insert((at, id));
    }

    /// Drops a decided transfer's entry, so the set holds only transfers still pending.
    fn forget(&self, at: Timestamp, id: TransferId) {
        self.due.lock().unwrap_or_else(PoisonError::into_inner).remove(&(at, id));
    }

    /// Removes and returns up to `max` entries due at `now`, earliest first.
    fn take_due(&self, now: Timestamp, max: usize) -> Vec<TransferId> {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let mut taken = Vec::new();
        while taken.len() < max {
            match due.first() {
                Some(&(at, id)) if at <= now => {
                    due.pop_first();
                    taken.push(id);
                }
                _ => break,
            }
        }
        taken
    }

    pub(crate) fn len(&self) -> usize {
        self.due.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A transfer's deadline: `created_at` plus its own `pending_expires_in`, else its type's
/// `pending_timeout_secs`; `None` if neither is set (or, impossibly for validated inputs, the
/// sum overflows: such a transfer simply waits for a decision).
pub(crate) fn deadline(created_at: Timestamp, own: Option<u32>, type_default: Option<u32>) -> Option<Timestamp> {
    let secs = own.or(type_default)?;
    let micros = i64::from(secs).checked_mul(1_000_000)?;
    created_at.as_micros().checked_add(micros).map(Timestamp::from_micros)
}

/// Schedules `transfer`'s expiry if it is pending with a deadline.
pub(crate) fn schedule_if_pending(inner: &EngineInner, transfer: &tally_engine::Transfer) {
    if transfer.status == TransferStatus::Pending
        && let Some(at) = transfer.pending_expires_at
    {
        inner.expiry.schedule(at, transfer.id);
    }
}

/// Takes a transfer with a deadline out of the queue once a decision (an admin's execute,
/// reject or cancel, the customer's cancel) has recorded it terminal: without this, every
/// decided transfer would wait in the set until its deadline (up to 30 days), and the set and
/// `tally_pending_expiries_scheduled` would count transfers no longer pending. Called once the
/// terminal record is appended; if the journal then fails, recovery rebuilds the set from the
/// store at the next start. (An expiry the sweeper runs has left the set already.)
pub(crate) fn forget_if_decided(inner: &EngineInner, transfer: &tally_engine::Transfer) {
    if transfer.status != TransferStatus::Pending
        && let Some(at) = transfer.pending_expires_at
    {
        inner.expiry.forget(at, transfer.id);
    }
}

impl Engine {
    /// Starts the sweeper: on thread 0, as the passivation sweeper, holding only a weak
    /// reference between ticks so a dropped engine stops it. It does nothing until recovery has
    /// finished (recovery's sagas hold the claims it would need, and recovery schedules what it
    /// keeps pending), and stops at shutdown.
    pub(crate) fn start_expiry_sweeper(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.shared.runtime.spawn_on(0, async move {
            loop {
                tokio::time::sleep(EXPIRY_TICK).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let engine = Engine { inner };
                if !engine.is_ready() || engine.inner.expiries_held.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let due = engine.inner.expiry.take_due(engine.now(), EXPIRIES_PER_TICK_MAX);
                if due.is_empty() {
                    continue;
                }
                let runs = due.into_iter().map(|id| {
                    let engine = engine.clone();
                    async move { (id, engine.expire(id).await) }
                });
                for (id, result) in futures::future::join_all(runs).await {
                    engine.after_expiry(id, result);
                }
            }
        });
    }

    /// Expires a pending transfer now, whatever its deadline (the sweeper calls it for due
    /// ones). Refused as an admin's reject would be if the transfer is not pending.
    pub async fn expire(&self, id: TransferId) -> Result<tally_engine::Transfer, TransferError> {
        self.resume_expiring(id).await
    }

    /// Pending transfers waiting for their deadline in this engine (health and tests).
    pub fn expiries_scheduled(&self) -> usize {
        self.inner.expiry.len()
    }

    fn after_expiry(&self, id: TransferId, result: Result<tally_engine::Transfer, TransferError>) {
        match result {
            Ok(transfer) => tracing::info!(transfer = %transfer.id, "pending transfer expired"),
            // Decided already (executed, rejected, cancelled) or gone: nothing to expire.
            Err(TransferError::Transition(TransitionRejection::NotPending { status }))
                if status != TransferStatus::Processing =>
            {
                tracing::debug!(transfer = %id, status = status.as_str(), "expiry found the transfer decided");
            }
            Err(TransferError::Transition(TransitionRejection::NotFound)) => {
                tracing::warn!(transfer = %id, "expiry found no such transfer");
            }
            // Another saga holds it right now (an admin's decision in flight), or the engine
            // is busy: look again shortly. If that decision stands, the retry finds it decided.
            Err(error) => {
                tracing::debug!(transfer = %id, ?error, "expiry postponed");
                let retry_micros = i64::try_from(EXPIRY_RETRY.as_micros()).unwrap_or(i64::MAX);
                let at = Timestamp::from_micros(self.now().as_micros().saturating_add(retry_micros));
                self.inner.expiry.schedule(at, id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> TransferId {
        TransferId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn takes_only_due_entries_earliest_first_and_at_most_max() {
        let queue = ExpiryQueue::default();
        queue.schedule(Timestamp::from_micros(30), id(3));
        queue.schedule(Timestamp::from_micros(10), id(1));
        queue.schedule(Timestamp::from_micros(20), id(2));
        queue.schedule(Timestamp::from_micros(40), id(4));
        assert_eq!(queue.take_due(Timestamp::from_micros(5), 10), Vec::<TransferId>::new());
        assert_eq!(queue.take_due(Timestamp::from_micros(30), 2), vec![id(1), id(2)]);
        assert_eq!(queue.take_due(Timestamp::from_micros(30), 2), vec![id(3)]);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn a_decided_transfer_leaves_the_queue() {
        let queue = ExpiryQueue::default();
        queue.schedule(Timestamp::from_micros(10), id(1));
        queue.schedule(Timestamp::from_micros(20), id(2));
        queue.forget(Timestamp::from_micros(10), id(1));
        // Another deadline of the same transfer (a retry's) is not this entry.
        queue.forget(Timestamp::from_micros(21), id(2));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.take_due(Timestamp::from_micros(30), 10), vec![id(2)]);
    }

    #[test]
    fn the_transfers_own_time_wins_over_its_types() {
        let created = Timestamp::from_micros(1_000_000);
        assert_eq!(deadline(created, Some(60), Some(3_600)), Some(Timestamp::from_micros(61_000_000)));
        assert_eq!(deadline(created, None, Some(3_600)), Some(Timestamp::from_micros(3_601_000_000)));
        assert_eq!(deadline(created, None, None), None);
        assert_eq!(deadline(Timestamp::from_micros(i64::MAX), Some(60), None), None);
    }
}
