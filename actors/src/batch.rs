//! Atomic batches of transfers (`Engine::transfer_batch_atomic`): all or none, across a crash
//! too. The per-key claim a batch holds is `idempotency::KeyClaim`.
//!
//! An atomic batch runs in phases instead of one saga per item:
//!
//! ```text
//! 0 price and screen every item (type, fee, FX, AML)   any invalid: nothing happens
//! 1 for every item, concurrently (bounded):            any refusal: release every hold,
//!     source.hold(T, amount + fee)                       withdraw every admission, record
//!     destination.admit_credit(T, amount)                nothing; all fail
//! 2 the intent: every item's transfer (held, or pending for review) and its AML flags,
//!   appended as one group to one journal and committed in one transaction
//! 3 once the intent is durable, each item's saga from step 3: credit, post
//! ```
//!
//! On any abort, the items' velocity-window notes are taken back (`aml::BatchScreenings`) and
//! each item that raised an AML flag is recorded `failed` with its flags
//! (`Engine::record_aborted_batch`): nothing moved, but the screening leaves its trace.
//!
//! Phase 1 is where an item can still fail: funds, status and currency at both ends. A
//! destination that admitted a credit honours it in phase 3 even if it was blocked in
//! between (and refuses to close while it has admissions), so phase 3 only goes forward, as a
//! saga does after step 3. Phase 1's hold records go to the journal that takes the intent,
//! ahead of it, so the intent is never durable without the holds it stands on.
//!
//! After a crash, recovery sees either the whole intent or none of it. With none, the holds
//! belong to no live transfer and are released: nothing happened. With the intent, every
//! item is a live transfer held at its source: recovery drives each forward (and keeps the
//! pending ones for their admin), so every item happens. No item's money moves before the
//! intent is durable.

use futures::StreamExt;
use tally_engine::transfer::SagaStep;
use tally_engine::{
    AccountCommand, AccountRejection, CreateTransferRejection, ExecutionMode, Idempotency, PendingReason, Record,
    Transfer, TransferRequest, TransferStatus,
};

use crate::engine::{Claim, Engine, TransferError};
use crate::registry::{CallError, Unavailable};
use crate::saga::{self, Intent};

/// Actor steps of one batch in flight at once. Enough to keep both cores' shards busy (an
/// actor round trip is a few microseconds, so 64 outstanding hide the hops), few enough that
/// one batch of 8,190 items does not fill a hot account's mailbox (1,024) on its own.
pub const BATCH_STEPS_IN_FLIGHT_MAX: usize = 64;

/// One item of a batch: the request as planned, and the idempotency key it runs under.
#[derive(Clone, Debug)]
pub struct BatchItem {
    pub request: TransferRequest,
    pub key: Option<Idempotency>,
}

/// The outcome of an atomic batch.
#[derive(Debug)]
pub enum AtomicBatch {
    /// Every hold and admission stood; each item then ran on (in the items' order).
    Ran(Vec<Result<Transfer, TransferError>>),
    /// Nothing happened: every hold was released and nothing was recorded. These items (index,
    /// reason) are why; every other item was not attempted or was rolled back.
    Aborted(Vec<(usize, TransferError)>),
}

/// What phase 1 placed for one item, to undo if the batch aborts.
struct Placed {
    held: bool,
    admitted: bool,
}

impl Engine {
    /// Runs `items` all or none (see the module's doc).
    pub async fn transfer_batch_atomic(&self, items: Vec<BatchItem>) -> Result<AtomicBatch, TransferError> {
        // Phase 0: every item valid, or nothing happens.
        let mut transfers = Vec::with_capacity(items.len());
        let mut stops = Vec::with_capacity(items.len());
        // Each item's type's time to expiry, should it stop pending (batch items name none of
        // their own: docs/ledger-views.md "Pending expiry").
        let mut timeouts = Vec::with_capacity(items.len());
        let mut invalid = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let settings = self.transfer_type(item.request.kind);
            // Type settings, fee and FX, exactly as for a single transfer (pricing.rs).
            match self.price_under(item.request, &settings).await {
                Ok(mut transfer) => {
                    transfer.idempotency = item.key;
                    transfers.push(transfer);
                    stops.push(
                        (settings.execution_mode == ExecutionMode::Manual).then_some(PendingReason::ManualExecution),
                    );
                    timeouts.push(settings.pending_timeout_secs);
                }
                Err(error) => invalid.push((index, error)),
            }
        }
        if !invalid.is_empty() {
            return Ok(AtomicBatch::Aborted(invalid));
        }
        // Verification limits (limits.rs), item by item in order, as single transfers would be
        // counted: an item that does not fit (with the items before it) aborts the batch, and
        // every reservation is dropped, given back, on any abort below.
        let mut reservations = Vec::with_capacity(transfers.len());
        for (index, transfer) in transfers.iter().enumerate() {
            match self.reserve_limits(transfer) {
                Ok(reservation) => reservations.push(reservation),
                Err(error) => invalid.push((index, error)),
            }
        }
        if !invalid.is_empty() {
            return Ok(AtomicBatch::Aborted(invalid));
        }
        // Every item's admission, saga permit and claim up front: a batch that cannot run
        // whole does not start (what it took comes back when this returns).
        let sources: Vec<uuid::Uuid> = transfers.iter().map(|transfer| transfer.source.as_uuid()).collect();
        let permits = self.admit_sagas(&sources)?;
        let mut claims: Vec<Claim> = Vec::with_capacity(transfers.len());
        for transfer in &transfers {
            claims.push(self.claim(transfer.id)?);
        }
        // AML screening (step 1): a blocked item aborts the batch before anything is held; the
        // flags of the others are recorded in phase 2 with their transfers (`aml.rs`). Every
        // velocity note made here is taken back if the batch aborts (`BatchScreenings`).
        let mut screenings = crate::aml::BatchScreenings::new(self);
        let mut flags = Vec::with_capacity(transfers.len());
        let mut blocked = Vec::new();
        for (index, (transfer, stop)) in transfers.iter().zip(stops.iter_mut()).enumerate() {
            let screened = self.screen(transfer);
            screenings.push(transfer, &screened);
            if screened.action == Some(tally_engine::aml::AmlAction::Block) {
                blocked.push((index, TransferError::Rejected(CreateTransferRejection::Blocked)));
            }
            *stop = screened.stop_pending(*stop);
            flags.push(screened.flags);
        }
        // The journal the intent goes to (and, should the batch abort, the record of its
        // flagged items).
        let intent_journal = self.inner.shared.shard_of(transfers[0].source.as_uuid());
        if !blocked.is_empty() {
            self.record_aborted_batch(&transfers, flags, &blocked, intent_journal).await?;
            return Ok(AtomicBatch::Aborted(blocked));
        }

        // Phase 1: holds and admissions. Their records go to the journal that will hold the
        // batch's intent, ahead of it, so the intent can never be durable without them.
        let placing: Vec<_> = transfers
            .iter()
            .zip(&stops)
            .map(|(transfer, stop)| {
                let (engine, transfer, admit) = (self.clone(), transfer.clone(), stop.is_none());
                async move { engine.place(&transfer, admit, intent_journal).await }
            })
            .collect();
        let placed: Vec<(Placed, Option<TransferError>)> =
            futures::stream::iter(placing).buffered(BATCH_STEPS_IN_FLIGHT_MAX).collect().await;
        let failures: Vec<(usize, TransferError)> = placed
            .iter()
            .enumerate()
            .filter_map(|(index, (_, error))| error.clone().map(|error| (index, error)))
            .collect();
        if !failures.is_empty() {
            self.unplace(&transfers, &placed).await?;
            self.record_aborted_batch(&transfers, flags, &failures, intent_journal).await?;
            return Ok(AtomicBatch::Aborted(failures));
        }

        // Phase 2: every hold stands. The batch's intent, every item's transfer as held (or,
        // stopping for review, as pending) with its AML flags, is appended as one group to one
        // journal and committed in one transaction: after a crash, either every item is a live
        // transfer that recovery drives on (or keeps pending), or none is and recovery
        // releases the holds. Only once the intent is durable does any item move money.
        let mut intent = Vec::with_capacity(transfers.len() + flags.iter().map(Vec::len).sum::<usize>());
        for (((transfer, stop_pending), flags), timeout) in transfers.iter_mut().zip(&stops).zip(flags).zip(&timeouts) {
            transfer.step = SagaStep::Held;
            if let Some(reason) = stop_pending {
                transfer.transition(TransferStatus::Pending, self.now()).map_err(TransferError::Transition)?;
                transfer.pending_reason = Some(*reason);
                transfer.pending_expires_at = crate::expiry::deadline(transfer.created_at, None, *timeout);
            }
            intent.extend(flags.into_iter().map(|flag| Record::AmlFlag(Box::new(flag))));
            intent.push(Record::Transfer(Box::new(transfer.clone())));
        }
        let journal = self.inner.shared.journals.shard(intent_journal);
        let durable = match journal.append_group_acked(intent) {
            Ok(ack) => ack.wait().await,
            Err(_) => {
                self.unplace(&transfers, &placed).await?;
                // The journal refused the intent, flags and all: as for a single transfer whose
                // journal refuses its flags (`Engine::record_flags`), nothing is kept and the
                // caller hears 503. Its screenings are taken back (`screenings`' drop).
                return Err(TransferError::Unavailable(Unavailable::Overloaded));
            }
        };
        // The intent is appended: the items count (if it never becomes durable, recovery may
        // still finish them, so they stay counted: the safe side).
        reservations.into_iter().flatten().for_each(crate::limits::Reservation::commit);
        screenings.keep();
        if durable.is_err() {
            // The journal stopped: whether the intent is in the store is for recovery to find
            // out on the next start, which finishes the batch or undoes it whole.
            return Err(TransferError::Internal(
                "the journal stopped before the batch's intent was durable".to_owned(),
            ));
        }
        // Then each item runs on: its saga from step 3, or, stopped for review, nothing more.
        let runs: Vec<_> = transfers
            .into_iter()
            .zip(permits.into_iter().zip(claims))
            .map(|(transfer, (permit, claim))| {
                let engine = self.clone();
                async move {
                    if transfer.status == TransferStatus::Pending {
                        engine.inner.sagas_paused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        crate::expiry::schedule_if_pending(&engine.inner, &transfer);
                        drop((permit, claim));
                        return Ok(transfer);
                    }
                    engine.spawn_saga(transfer, Intent::Run { stop_pending: None }, permit, claim, None, None).await
                }
            })
            .collect();
        let results = futures::stream::iter(runs).buffered(BATCH_STEPS_IN_FLIGHT_MAX).collect().await;
        Ok(AtomicBatch::Ran(results))
    }

    /// Phase 1 for one item: the hold at the source, then (unless it will stop pending) the
    /// admission at the destination.
    async fn place(&self, transfer: &Transfer, admit: bool, journal: u16) -> (Placed, Option<TransferError>) {
        let mut placed = Placed { held: false, admitted: false };
        let amount = match transfer.total_debited() {
            Ok(amount) => amount,
            Err(_) => return (placed, Some(TransferError::Rejected(CreateTransferRejection::Overflow))),
        };
        let hold = AccountCommand::Hold { transfer: transfer.id, amount, currency: transfer.currency };
        if let Err(error) = self.inner.accounts.command_on(transfer.source, hold, Some(journal)).await {
            let error = match error {
                CallError::NotFound => TransferError::Rejected(CreateTransferRejection::SourceNotFound),
                CallError::Rejected(AccountRejection::Hold(hold)) => {
                    TransferError::Rejected(CreateTransferRejection::from_source(hold))
                }
                CallError::Rejected(other) => TransferError::Internal(format!("hold answered {other:?}")),
                CallError::Unavailable(unavailable) => TransferError::Unavailable(unavailable),
            };
            return (placed, Some(error));
        }
        placed.held = true;
        if !admit {
            return (placed, None);
        }
        let admission = AccountCommand::AdmitCredit {
            transfer: transfer.id,
            amount: transfer.destination_amount,
            currency: transfer.destination_currency,
        };
        if let Err(error) = self.inner.accounts.command_on(transfer.destination, admission, Some(journal)).await {
            let error = match error {
                CallError::NotFound => TransferError::Rejected(CreateTransferRejection::DestinationNotFound),
                CallError::Rejected(AccountRejection::Credit(credit)) => {
                    TransferError::Rejected(CreateTransferRejection::from_destination(credit))
                }
                CallError::Rejected(other) => TransferError::Internal(format!("admission answered {other:?}")),
                CallError::Unavailable(unavailable) => TransferError::Unavailable(unavailable),
            };
            return (placed, Some(error));
        }
        placed.admitted = true;
        (placed, None)
    }

    /// Undoes phase 1: every hold released, every admission withdrawn. These steps cannot be
    /// refused; they are retried until applied, as a saga's compensation is.
    async fn unplace(
        &self,
        transfers: &[Transfer],
        placed: &[(Placed, Option<TransferError>)],
    ) -> Result<(), TransferError> {
        let undo: Vec<_> = transfers
            .iter()
            .zip(placed)
            .map(|(transfer, (placed, _))| {
                let (engine, transfer, held, admitted) = (self.clone(), transfer.clone(), placed.held, placed.admitted);
                async move {
                    if held {
                        let release = AccountCommand::Release { transfer: transfer.id };
                        saga::forward(&engine.inner, &transfer, release, transfer.source).await?;
                    }
                    if admitted {
                        let withdraw = AccountCommand::WithdrawCredit { transfer: transfer.id };
                        saga::forward(&engine.inner, &transfer, withdraw, transfer.destination).await?;
                    }
                    Ok::<(), TransferError>(())
                }
            })
            .collect();
        let results: Vec<Result<(), TransferError>> =
            futures::stream::iter(undo).buffer_unordered(BATCH_STEPS_IN_FLIGHT_MAX).collect().await;
        results.into_iter().collect::<Result<Vec<()>, TransferError>>().map(|_| ())
    }
}
