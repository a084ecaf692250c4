//! What every saga does the same way, whatever money it moves. The transfer saga (saga.rs)
//! and crypto operations (crypto.rs) record their state, end with a durable record and count a
//! compensation here; they and an atomic batch's undo (batch.rs, through `saga::forward`)
//! retry the steps they cannot take back here. So a change to one of these rules reaches every
//! flow at once. Their steps, legs and statuses stay with each flow; each maps `Halt` to its
//! own error.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tally_engine::{AuditRecord, Record};
use tally_persistence::{DurableAck, Journal};

use crate::engine::EngineInner;
use crate::registry::{CallError, Unavailable};

/// Why the driver stopped a saga short of what it was asked; the flow names what it was
/// driving in its own error (`TransferError`, `CryptoError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Halt {
    /// The journal had no room for a record, or a forward-only step met an unavailable actor
    /// while the engine shuts down or a journal has failed: try again later; what was recorded
    /// stays for the next start's recovery.
    Unavailable,
    /// The journal failed (its store refused a batch): it never takes another record, so the
    /// saga is left, as last recorded, to the next start's recovery.
    JournalFailed,
    /// The journal stopped before the final record was durable: the outcome must not be told.
    NotDurable,
}

/// A `Halt` as every flow answers it, in its own error's two variants.
pub(crate) enum Answer {
    Unavailable(Unavailable),
    Internal(String),
}

impl Halt {
    /// The answer for a saga over `what` ("transfer", "operation").
    pub(crate) fn answer(self, what: &str) -> Answer {
        match self {
            Halt::Unavailable => Answer::Unavailable(Unavailable::Overloaded),
            Halt::JournalFailed => Answer::Internal(format!("journal failed; the {what} is left to recovery")),
            Halt::NotDurable => Answer::Internal(format!("journal stopped before the {what} was durable")),
        }
    }
}

/// Appends a saga's state without waiting: a record between steps, which the final record's
/// durable ack covers (one journal commits in order).
pub(crate) fn record(journal: &Journal, state: Record) -> Result<(), Halt> {
    journal.append(state).map(|_| ()).map_err(|_| Halt::Unavailable)
}

/// A saga's final record, appended but maybe not yet durable.
#[must_use = "the outcome may be told only once it is durable"]
pub(crate) struct Appended(DurableAck);

impl Appended {
    /// Waits until the final record, and so every record of the saga before it in the same
    /// journal, is durable. Only then may the caller hear the outcome.
    pub(crate) async fn durable(self) -> Result<(), Halt> {
        self.0.wait().await.map_err(|_| Halt::NotDurable)
    }
}

/// Appends a saga's final state (`state` builds it: a refused append consumes its record) to
/// `journal`, in one group with `audit` if there is one: one batch, one store transaction, so
/// the outcome and an admin's record of asking for it are durable together or not at all.
pub(crate) async fn append_final(
    journal: &Journal,
    state: impl Fn() -> Record,
    audit: Option<&AuditRecord>,
) -> Result<Appended, Halt> {
    loop {
        let appended = match audit {
            None => journal.append_acked(state()).map(|(_, ack)| ack),
            Some(audit) => journal.append_group_acked(vec![state(), Record::Audit(Box::new(audit.clone()))]),
        };
        match appended {
            Ok(ack) => return Ok(Appended(ack)),
            Err(_) if journal.has_failed() => return Err(Halt::JournalFailed),
            // Only admitted sagas get here and the journal keeps room for them above the
            // admission bound; waiting is the rare case of a journal past even that.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// How a step's failure reads to the retry policy: an actor merely unavailable (overloaded,
/// restarting, quarantined) is retried; anything else is a refusal.
pub(crate) trait StepFailure {
    type Refusal;
    /// `None` if the actor was only unavailable.
    fn refusal(self) -> Option<Self::Refusal>;
}

impl<R> StepFailure for CallError<R> {
    type Refusal = CallError<R>;

    fn refusal(self) -> Option<Self::Refusal> {
        match self {
            CallError::Unavailable(_) => None,
            refused => Some(refused),
        }
    }
}

/// Why a forward-only step was not applied.
pub(crate) enum NotApplied<R> {
    Halted(Halt),
    /// Post, release, a withdrawn admission and a system account's credit cannot be refused;
    /// if one is, the state is not what the saga recorded. The flow stops loudly rather than
    /// spin.
    Refused(R),
}

/// The one retry policy of a step after which a saga only goes forward: `send` is repeated
/// while the actor is unavailable, until it is applied or refused. The first wait is short
/// (1 ms) because an actor is usually unavailable briefly (a full mailbox, a restart); the
/// doubling, capped at 100 ms, keeps a long outage from being polled hard.
///
/// Shutting down, or a failed journal that will never take the step's record, stops it: the
/// saga stays where it is for the next start's recovery, which finds it by its records.
pub(crate) async fn forward<T, E, F, Fut>(inner: &EngineInner, mut send: F) -> Result<(), NotApplied<E::Refusal>>
where
    E: StepFailure,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    // 1 ms doubling to at most 100 ms, for as long as the step is neither done nor refused.
    let mut waits = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(100))
        .without_max_times()
        .build();
    loop {
        match send().await {
            Ok(_) => return Ok(()),
            Err(error) => match error.refusal() {
                Some(refusal) => return Err(NotApplied::Refused(refusal)),
                None => {
                    if inner.shutting_down.load(Ordering::Relaxed) || inner.shared.journals.has_failed() {
                        return Err(NotApplied::Halted(Halt::Unavailable));
                    }
                    tokio::time::sleep(waits.next().unwrap_or(Duration::from_millis(100))).await;
                }
            },
        }
    }
}

/// A compensation: every undo step, in order, each forward-only (`apply` retries it through
/// `forward`), and only then is the saga counted compensated, so the count says money was
/// given back, not that giving it back was tried.
pub(crate) async fn compensate<S, E, F, Fut>(
    inner: &EngineInner,
    undo: impl IntoIterator<Item = S>,
    mut apply: F,
) -> Result<(), E>
where
    F: FnMut(S) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    for step in undo {
        apply(step).await?;
    }
    inner.sagas_compensated.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
