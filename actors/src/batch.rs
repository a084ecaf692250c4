//! Batches of transfers: the per-key claim a batch holds while it runs, and the atomic batch
//! (`Engine::transfer_batch_atomic`), all or none.
//!
//! An atomic batch runs in two phases instead of one saga per item:
//!
//! ```text
//! 0 price every item (type, fee, FX)           any invalid: nothing happens
//! 1 for every item, concurrently (bounded):    any refusal: release every hold, withdraw
//!     source.hold(T, amount + fee)               every admission, record nothing; all fail
//!     destination.admit_credit(T, amount)
//! 2 for every item: record the transfer (held), then its saga from step 3: credit, post
//! ```
//!
//! Phase 1 is where an item can still fail: funds, status and currency at both ends. A
//! destination that admitted a credit honours it in phase 2 even if it was blocked in
//! between (and refuses to close while it has admissions), so phase 2 only goes forward, as a
//! saga does after step 3. Phase 1 writes no transfer record: a crash inside it leaves holds
//! whose transfer is not live, and recovery releases them, so nothing happened. The limits
//! of the guarantee are in ARCHITECTURE.md ("Atomic batches").

use std::sync::Arc;

use futures::StreamExt;
use tally_engine::transfer::SagaStep;
use tally_engine::{
    AccountCommand, AccountRejection, CreateTransferRejection, ExecutionMode, Idempotency, PendingReason, Transfer,
    TransferRequest,
};
use tokio::sync::OwnedMutexGuard;

use crate::engine::{Claim, Engine, EngineInner, TransferError};
use crate::registry::CallError;
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

/// Holds a caller's idempotency key (a batch's) while the work under it runs: a concurrent
/// duplicate waits here, then finds the first one's transfers in the store.
pub struct KeyClaim {
    inner: Arc<EngineInner>,
    slot: (uuid::Uuid, String),
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Forget the slot once only the map holds it.
        self.inner.idempotency_claims.remove_if(&self.slot, |_, current| Arc::strong_count(current) <= 1);
    }
}

/// What phase 1 placed for one item, to undo if the batch aborts.
struct Placed {
    held: bool,
    admitted: bool,
}

impl Engine {
    /// Claims `slot` of `scope` (waiting for whoever holds it). Batch slots are named so they
    /// cannot meet a single transfer's key (see `tally_http::batch`).
    pub async fn claim_key(&self, scope: uuid::Uuid, slot: String) -> KeyClaim {
        let slot = (scope, slot);
        let mutex = Arc::clone(self.inner.idempotency_claims.entry(slot.clone()).or_default().value());
        let guard = mutex.lock_owned().await;
        KeyClaim { inner: Arc::clone(&self.inner), slot, guard: Some(guard) }
    }

    /// Runs `items` all or none (see the module's doc).
    pub async fn transfer_batch_atomic(&self, items: Vec<BatchItem>) -> Result<AtomicBatch, TransferError> {
        // Phase 0: every item valid, or nothing happens.
        let mut transfers = Vec::with_capacity(items.len());
        let mut stops = Vec::with_capacity(items.len());
        let mut invalid = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let settings = self.transfer_type(item.request.kind);
            // Type settings, fee and FX, exactly as for a single transfer (pricing.rs).
            match self.price(item.request).await {
                Ok(mut transfer) => {
                    transfer.idempotency = item.key;
                    transfers.push(transfer);
                    stops.push(
                        (settings.execution_mode == ExecutionMode::Manual).then_some(PendingReason::ManualExecution),
                    );
                }
                Err(error) => invalid.push((index, error)),
            }
        }
        if !invalid.is_empty() {
            return Ok(AtomicBatch::Aborted(invalid));
        }
        self.admit().map_err(TransferError::Unavailable)?;
        // Every item's saga permit and claim up front: a batch that cannot run whole does not
        // start (the permits come back when this returns).
        let mut permits = Vec::with_capacity(transfers.len());
        let mut claims: Vec<Claim> = Vec::with_capacity(transfers.len());
        for transfer in &transfers {
            permits.push(self.saga_permit()?);
            claims.push(self.claim(transfer.id)?);
        }
        // AML screening (step 1): a blocked item aborts the batch before anything is held; the
        // flags of the others are recorded in phase 2 with their transfers (`aml.rs`).
        let mut flags = Vec::with_capacity(transfers.len());
        let mut blocked = Vec::new();
        for (index, (transfer, stop)) in transfers.iter().zip(stops.iter_mut()).enumerate() {
            let screened = self.screen(transfer);
            if screened.action == Some(tally_engine::aml::AmlAction::Block) {
                blocked.push((index, TransferError::Rejected(CreateTransferRejection::Blocked)));
            }
            *stop = screened.stop_pending(*stop);
            flags.push(screened.flags);
        }
        if !blocked.is_empty() {
            return Ok(AtomicBatch::Aborted(blocked));
        }

        // Phase 1: holds and admissions.
        let placing: Vec<_> = transfers
            .iter()
            .zip(&stops)
            .map(|(transfer, stop)| {
                let (engine, transfer, admit) = (self.clone(), transfer.clone(), stop.is_none());
                async move { engine.place(&transfer, admit).await }
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
            return Ok(AtomicBatch::Aborted(failures));
        }

        // Phase 2: every hold stands. Record each transfer as held, then run its saga on from
        // step 3 (or stop it as pending, as a single transfer in manual mode would).
        let runs: Vec<_> = transfers
            .into_iter()
            .zip(stops.into_iter().zip(flags))
            .zip(permits.into_iter().zip(claims))
            .map(|((mut transfer, (stop_pending, flags)), (permit, claim))| {
                let engine = self.clone();
                async move {
                    transfer.step = SagaStep::Held;
                    engine.record_flags(&flags)?;
                    saga::record(&engine.inner, &transfer)?;
                    engine.spawn_saga(transfer, Intent::Run { stop_pending }, permit, claim).await
                }
            })
            .collect();
        let results = futures::stream::iter(runs).buffered(BATCH_STEPS_IN_FLIGHT_MAX).collect().await;
        Ok(AtomicBatch::Ran(results))
    }

    /// Phase 1 for one item: the hold at the source, then (unless it will stop pending) the
    /// admission at the destination.
    async fn place(&self, transfer: &Transfer, admit: bool) -> (Placed, Option<TransferError>) {
        let mut placed = Placed { held: false, admitted: false };
        let amount = match transfer.total_debited() {
            Ok(amount) => amount,
            Err(_) => return (placed, Some(TransferError::Rejected(CreateTransferRejection::Overflow))),
        };
        let hold = AccountCommand::Hold { transfer: transfer.id, amount, currency: transfer.currency };
        if let Err(error) = self.inner.accounts.command(transfer.source, hold).await {
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
        if let Err(error) = self.inner.accounts.command(transfer.destination, admission).await {
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
