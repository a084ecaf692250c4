//! The transfer saga (DESIGN.md §4).
//!
//! ```text
//! 1 price, admit, claim, screen           nothing to undo          (Engine::transfer, below)
//! 2 source.hold(T, amount + fee)          undo: source.release(T)
//!   [manual or AML review: stop as pending; execute resumes at 3; reject/cancel runs the undo;
//!    past its pending_expires_at, the expiry sweeper runs the undo as `expired` (expiry.rs)]
//! 3 destination.credit(T, amount)         after 3 only forward
//! 4 source.post(T); fees.credit(T, fee)   retried until they succeed
//! ```
//!
//! A transfer between currencies (FX) adds the clearing legs, so each currency balances on
//! its own: just before step 3, `fx_clearing(dst).hold(T, converted)`; in step 4,
//! `fx_clearing(dst).post(T)` and `fx_clearing(src).credit(T, amount)`. The clearing hold is
//! placed before the credit (and released with the source's hold on every undo path) because a
//! hold and its post are idempotent on the transfer id, where a bare debit repeated after a
//! restart would debit twice. Same-currency transfers never touch the clearing accounts.
//!
//! The saga is driven by the transfer's own state (`status`, `step`) and an `Intent`, so the
//! same loop starts a transfer, resumes it after an admin's decision, and restarts it after a
//! panic: a restarted saga repeats its current step, which every actor applies once.
//!
//! A saga runs as a task on its source account's shard, not as an actix actor: a future is a
//! few hundred bytes, an actor context several times that, and a saga lives for microseconds.
//! Its supervision is the same in kind as the entity actors': a panic is caught, counted as a
//! `transfer_saga` restart, and the saga re-runs from its last completed step.
//!
//! This file holds the transfer's steps and what each outcome means; how a state is recorded,
//! how the final record is made durable, how a forward-only step is retried and how an undo is
//! counted are `driver`'s, shared with atomic batches (batch.rs) and crypto operations
//! (crypto.rs), so the three cannot drift apart.

pub(crate) mod driver;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use tally_engine::system_accounts;
use tally_engine::transfer::SagaStep;
use tally_engine::{
    AccountCommand, AccountId, AccountRejection, AuditRecord, CreateTransferRejection, ErrorCode, ExecutionMode,
    Idempotency, PendingReason, Record, Transfer, TransferRequest, TransferStatus,
};

use crate::engine::{Claim, Engine, EngineError, EngineInner, SagaPermit, TransferError};
use crate::entity::ActorKind;
use crate::idempotency::KeyClaim;
use crate::registry::{CallError, Unavailable};
use driver::{Answer, Halt, NotApplied};

// ---- step 1 and the way in ----------------------------------------------------------------

impl Engine {
    /// Runs a transfer's saga. Answers once the outcome is durable: `completed`, or `pending`
    /// for manual execution; a rejection if any check failed (the transfer is then recorded
    /// `failed`, with every hold released).
    pub fn transfer(&self, request: TransferRequest) -> impl Future<Output = Result<Transfer, TransferError>> + '_ {
        self.start_transfer(request, None, None, None, None)
    }

    /// `transfer_idempotent` for a transfer that names its own time to expiry if it stops
    /// pending (`pending_expires_in`, seconds, checked by the caller against
    /// `PENDING_EXPIRY_SECS_MIN..=MAX`): it wins over its type's `pending_timeout_secs`.
    pub fn transfer_idempotent_expiring(
        &self,
        request: TransferRequest,
        key: Option<Idempotency>,
        pending_expires_in: Option<u32>,
    ) -> impl Future<Output = Result<(Transfer, bool), TransferError>> + '_ {
        self.transfer_idempotent_full(request, key, None, pending_expires_in)
    }

    /// Step 1 of the saga (price, admit, claim, screen), then the saga itself. Under an
    /// idempotency key, `key` is the key's claim: the saga holds it from here (see
    /// `spawn_saga`); a request refused in step 1 recorded nothing under the key and releases
    /// it at once (so those stay fast answers while the database is down).
    async fn start_transfer(
        &self,
        request: TransferRequest,
        idempotency: Option<Idempotency>,
        key: Option<KeyClaim>,
        audit: Option<AuditRecord>,
        pending_expires_in: Option<u32>,
    ) -> Result<Transfer, TransferError> {
        match self.step_one(request, idempotency, pending_expires_in).await {
            Ok((transfer, stop_pending, permit, claim)) => {
                self.spawn_saga(transfer, Intent::Run { stop_pending }, permit, claim, key, audit).await
            }
            Err(error) => {
                if let Some(key) = key {
                    key.release(true).await;
                }
                Err(error)
            }
        }
    }

    async fn step_one(
        &self,
        request: TransferRequest,
        idempotency: Option<Idempotency>,
        pending_expires_in: Option<u32>,
    ) -> Result<(Transfer, Option<PendingReason>, SagaPermit, Claim), TransferError> {
        let settings = self.transfer_type(request.kind);
        let stop_pending = (settings.execution_mode == ExecutionMode::Manual).then_some(PendingReason::ManualExecution);
        // Fees, limits and FX (pricing.rs): the same call the quote makes.
        let mut transfer = self.price_under(request, &settings).await?;
        // Verification limits (limits.rs): counted in memory, given back if anything below
        // refuses the transfer (the reservation is dropped uncommitted).
        let reservation = self.reserve_limits(&transfer)?;
        let permit = self.admit_saga(transfer.source.as_uuid())?;
        let claim = self.claim(transfer.id)?;
        self.inner.claims.insert(transfer.id, choose_journal(&self.inner, transfer.source, transfer.destination));
        transfer.idempotency = idempotency;
        let stop_pending = self.screen_transfer(&transfer, stop_pending).await?;
        // Only a transfer that will wait for a decision has a deadline (expiry.rs); one that
        // completes at once never expires.
        if stop_pending.is_some() {
            transfer.pending_expires_at =
                crate::expiry::deadline(transfer.created_at, pending_expires_in, settings.pending_timeout_secs);
        }
        // From here the saga runs: its end gives the amount back if no money moved (`finish`).
        if let Some(reservation) = reservation {
            reservation.commit();
        }
        Ok((transfer, stop_pending, permit, claim))
    }

    /// Runs a transfer under a caller's idempotency key. The first request with a key runs the
    /// saga; a repeat with the same fingerprint gets the transfer as it stands (`true`: a
    /// replay), whatever its outcome was; a repeat with another fingerprint is refused.
    /// Concurrent repeats wait for the first, so however many arrive, one transfer exists.
    ///
    /// A request rejected before its saga started (invalid amount, disabled type) leaves no
    /// transfer; its repeat is validated again and rejected again, the same way.
    pub fn transfer_idempotent(
        &self,
        request: TransferRequest,
        key: Option<Idempotency>,
    ) -> impl Future<Output = Result<(Transfer, bool), TransferError>> + '_ {
        self.transfer_idempotent_full(request, key, None, None)
    }

    /// `transfer_idempotent` for an admin's adjustment: `audit` is committed in the batch that
    /// records the transfer's outcome, unless the transfer failed (its request is answered
    /// with an error, and nothing changed). A replay changes nothing and is answered `2xx`, so
    /// its audit record is committed alone (docs/audit.md: a replay is recorded again).
    pub fn transfer_idempotent_audited(
        &self,
        request: TransferRequest,
        key: Option<Idempotency>,
        audit: Option<AuditRecord>,
    ) -> impl Future<Output = Result<(Transfer, bool), TransferError>> + '_ {
        self.transfer_idempotent_full(request, key, audit, None)
    }

    async fn transfer_idempotent_full(
        &self,
        request: TransferRequest,
        key: Option<Idempotency>,
        audit: Option<AuditRecord>,
        pending_expires_in: Option<u32>,
    ) -> Result<(Transfer, bool), TransferError> {
        // One call of `start_transfer` for both paths: each call site would be a state of this
        // future as large as the saga's start, and the future is moved whole.
        let (idempotency, claim) = match key {
            None => (None, None),
            Some(key) => {
                // If this call is dropped before the saga holds the claim (its client went
                // away), `KeyClaim`'s drop keeps the key until the journals are durable.
                let claim = self.claim_key(key.scope, key.key.clone()).await;
                match self.replay_under_key(&key).await {
                    Ok(None) => (Some(key), Some(claim)),
                    Ok(Some(transfer)) => {
                        claim.release(true).await;
                        if let Some(mut audit) = audit
                            && transfer.status != TransferStatus::Failed
                        {
                            // The answer names the transfer the key made first, not this
                            // request's. Boxed: an admin's replay is rare.
                            audit.target_id = Some(transfer.id.to_string());
                            Box::pin(self.audit_alone(transfer.source.as_uuid(), audit)).await.map_err(|error| {
                                match error {
                                    EngineError::Unavailable(unavailable) => TransferError::Unavailable(unavailable),
                                    other => TransferError::Internal(other.to_string()),
                                }
                            })?;
                        }
                        return Ok((transfer, true));
                    }
                    Err(error) => {
                        claim.release(true).await;
                        return Err(error);
                    }
                }
            }
        };
        self.start_transfer(request, idempotency, claim, audit, pending_expires_in)
            .await
            .map(|transfer| (transfer, false))
    }

    /// Runs a transfer under a key its caller already knows to be new: an item of a keyed
    /// batch, whose batch claim (held by the caller) covers the item's key and whose look-up
    /// the batch made for all its items at once.
    pub fn transfer_under_new_key(
        &self,
        request: TransferRequest,
        key: Idempotency,
    ) -> impl Future<Output = Result<Transfer, TransferError>> + '_ {
        self.start_transfer(request, Some(key), None, None, None)
    }

    /// The transfer a repeat of `key` answers with, if the key was used.
    async fn replay_under_key(&self, key: &Idempotency) -> Result<Option<Transfer>, TransferError> {
        let existing = self
            .transfer_under_key(key.scope, &key.key)
            .await
            .map_err(|error| TransferError::Unavailable(Unavailable::Store(error.to_string())))?;
        let Some(existing) = existing else { return Ok(None) };
        let same_request = existing.idempotency.as_ref().is_some_and(|i| i.fingerprint == key.fingerprint);
        if !same_request {
            return Err(TransferError::IdempotencyKeyReused);
        }
        // The store's copy may be older than the journal's (a pending transfer since
        // executed): answer with the newest. Boxed: a replay is rare, and this read would
        // otherwise be part of every keyed transfer's future.
        Ok(Some(Box::pin(self.newest_of(existing)).await))
    }

    /// `transfer` as last recorded, or as given if it cannot be read.
    async fn newest_of(&self, transfer: Transfer) -> Transfer {
        self.load_transfer(transfer.id).await.ok().flatten().unwrap_or(transfer)
    }
}

/// `Engine::claims`' value for a saga whose journal is not chosen (one resumed by an admin's
/// decision, or by recovery): it uses its source's shard's.
pub(crate) const UNCHOSEN: u16 = u16::MAX;

/// The shard of the journal a saga's records go to: all of them (its transfer's states and its
/// steps' account records) to one journal, so one durable ack covers the transfer and one
/// batch usually writes it once.
pub(crate) fn journal_of(inner: &EngineInner, transfer: &Transfer) -> u16 {
    match inner.claims.get(&transfer.id).map(|journal| *journal) {
        Some(journal) if journal != UNCHOSEN => journal,
        _ => inner.shared.shard_of(transfer.source.as_uuid()),
    }
}

/// Step 1 picks the saga's journal. Normally its source's shard's. But an account with a record
/// not yet durable in some journal (a busy account: a hot one, a fee or settlement account)
/// makes a record of it in any other journal wait for that one (`depends_on`): two journals
/// taking turns one commit at a time for it, which capped a one-hot-account load at about a
/// quarter of its rate (`scripts/bench`, hot). So the saga follows a busy end: the source's
/// journal while the source is busy, else the destination's (`Registry::keep_journal`). Both
/// ends then keep the choice for their next sagas, so an account credited by a busy source
/// follows it (`scripts/bench` uniform: waits per commit 0.19 with the source alone, 0.02).
fn choose_journal(inner: &EngineInner, source: AccountId, destination: AccountId) -> u16 {
    choose_journal_within(inner, source, destination, AFFINITY_MS)
}

fn choose_journal_within(inner: &EngineInner, source: AccountId, destination: AccountId, window_ms: u64) -> u16 {
    inner.accounts.keep_journal(source, destination, inner.shared.shard_of(source.as_uuid()), window_ms)
}

/// How long an account's sagas keep the journal its last one took. Longer than the gap between
/// sagas on a busy account (a millisecond or less), and short, so that an account used now and
/// then does not pull a busy one's records into another journal.
const AFFINITY_MS: u64 = 20;

/// What the saga is asked to do with the transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Intent {
    /// Run a new transfer; stop as `pending` after the hold if a reason is given.
    Run { stop_pending: Option<PendingReason> },
    /// An admin executes a pending transfer.
    Execute,
    /// Recovery drives on a saga the last run left past its hold. `fee_credited`: the fee's
    /// posting is durable already. Of step 4's legs the fee's credit is the one a repeat would
    /// apply twice (posts are no-ops once their hold is gone, and the FX clearing credit is the
    /// last leg, so recovery only repeats step 4 without it), and an account loaded from the
    /// store no longer remembers which transfers it credited.
    Recover { fee_credited: bool },
    /// An admin rejects, or someone cancels, a pending transfer.
    Undo { outcome: TransferStatus },
    /// Recovery undoes a saga that never paused and only got as far as its hold.
    Abandon,
}

/// Runs the saga to its end, restarting it after panics. The permit and claim the caller
/// holds are released when this returns.
pub(crate) async fn run(
    inner: Arc<EngineInner>,
    mut transfer: Transfer,
    intent: Intent,
    mut audit: Option<AuditRecord>,
) -> Result<Transfer, TransferError> {
    let stats = inner.shared.stats(ActorKind::TransferSaga);
    stats.active.fetch_add(1, Ordering::Relaxed);
    let mut restarts = 0;
    // Decided once, from where the saga began: a pass restarted after a panic finds the
    // transfer further on, and must still give back a key it may give back.
    let key_may_go_back = transfer.step == SagaStep::Started;
    // Kept across a pass restarted after a panic too: step 4 is repeated from its start.
    let mut fee_credited = matches!(intent, Intent::Recover { fee_credited: true });
    let result = loop {
        let attempt =
            AssertUnwindSafe(drive(&inner, &mut transfer, intent, key_may_go_back, &mut fee_credited, &mut audit))
                .catch_unwind()
                .await;
        match attempt {
            Ok(result) => break result,
            Err(_panic) => {
                restarts += 1;
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                if restarts >= inner.shared.config.quarantine_restarts {
                    // The saga keeps failing: park it. Its transfer stays non-terminal with
                    // its money held, visible in health, for an operator or the next start's
                    // recovery to finish.
                    stats.quarantined.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(transfer = %transfer.id, "transfer saga quarantined after repeated panics");
                    break Err(TransferError::Unavailable(Unavailable::Quarantined));
                }
            }
        }
    };
    stats.active.fetch_sub(1, Ordering::Relaxed);
    // A saga counted in step 1 that ended before anything of it was recorded (the journal
    // refused its first record, or its hold answered what no hold answers) moved nothing and
    // ran no `finish`: its amount goes back. One parked after panics is left to recovery.
    if matches!(intent, Intent::Run { .. })
        && transfer.status == TransferStatus::Processing
        && transfer.step == SagaStep::Started
        && matches!(&result, Err(error) if !matches!(error, TransferError::Unavailable(Unavailable::Quarantined)))
    {
        crate::limits::Counted::of(&transfer).give_back(&inner.limits);
    }
    let counter = match &result {
        Ok(transfer) if transfer.status == TransferStatus::Completed => &inner.sagas_completed,
        Ok(_) => &inner.sagas_paused,
        Err(_) => &inner.sagas_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    result
}

/// One pass of the saga from the transfer's current state.
/// `audit`, an admin's record of asking for this (an adjustment, an execution, a rejection, a
/// cancellation), rides with the record of the transfer's outcome (`finish`).
///
/// `key_may_go_back`: the saga began at its first step, so it may give its idempotency key
/// back if it is refused as unavailable (`give_key_back`). An atomic batch's item begins
/// later, at `Held`: the batch's replay finds every item by its key, so its items keep theirs.
async fn drive(
    inner: &EngineInner,
    transfer: &mut Transfer,
    intent: Intent,
    key_may_go_back: bool,
    fee_credited: &mut bool,
    audit: &mut Option<AuditRecord>,
) -> Result<Transfer, TransferError> {
    let faults = &inner.shared.faults;
    loop {
        faults.maybe_panic(ActorKind::TransferSaga);
        match (transfer.status, transfer.step, intent) {
            // Step 1 is done by the caller; record the start so recovery knows the transfer.
            (TransferStatus::Processing, SagaStep::Started, Intent::Run { .. }) => {
                record(inner, transfer)?;
                let hold = AccountCommand::Hold {
                    transfer: transfer.id,
                    amount: transfer.total_debited().map_err(|_| overflow())?,
                    currency: transfer.currency,
                };
                match step(inner, transfer, transfer.source, hold).await {
                    Ok(_) => transfer.step = SagaStep::Held,
                    Err(error) => {
                        let rejection = match error {
                            CallError::NotFound => CreateTransferRejection::SourceNotFound,
                            CallError::Rejected(AccountRejection::Hold(hold)) => {
                                CreateTransferRejection::from_source(hold)
                            }
                            CallError::Rejected(other) => {
                                return Err(TransferError::Internal(format!("hold answered {other:?}")));
                            }
                            CallError::Unavailable(unavailable) => {
                                // Nothing was held. Record the failure so the transfer is not
                                // left `processing`, then tell the caller to retry later.
                                give_key_back(inner, transfer, key_may_go_back);
                                let unaudited = &mut None;
                                finish(inner, transfer, TransferStatus::Failed, Some(ErrorCode::Overloaded), unaudited)
                                    .await?;
                                return Err(TransferError::Unavailable(unavailable));
                            }
                        };
                        finish(inner, transfer, TransferStatus::Failed, Some(rejection.code()), &mut None).await?;
                        return Err(TransferError::Rejected(rejection));
                    }
                }
            }
            (TransferStatus::Processing, SagaStep::Held, Intent::Run { stop_pending: Some(reason) }) => {
                transfer.pending_reason = Some(reason);
                finish(inner, transfer, TransferStatus::Pending, None, audit).await?;
                // Durable as pending, with its deadline: from here it may expire.
                crate::expiry::schedule_if_pending(inner, transfer);
                return Ok(transfer.clone());
            }
            (TransferStatus::Pending, SagaStep::Held, Intent::Execute) => {
                // The source must still hold the money: a later step's post of a hold that is
                // not there counts as done (it is idempotent), so executing a pending transfer
                // whose hold an interrupted undo released would credit money no one paid.
                // Recovery ends such transfers (`recovery.rs`); this refuses one it could not.
                let source = inner.accounts.read(transfer.source).await.map_err(|error| match error {
                    CallError::Unavailable(unavailable) => TransferError::Unavailable(unavailable),
                    other => TransferError::Internal(format!("reading the source answered {other:?}")),
                })?;
                if source.position.hold_of(transfer.id).is_none() {
                    return Err(TransferError::Internal(format!(
                        "pending transfer {} holds nothing at its source; not executed",
                        transfer.id
                    )));
                }
                transition(inner, transfer, TransferStatus::Processing)?;
                record(inner, transfer)?;
            }
            (TransferStatus::Pending, SagaStep::Held, Intent::Undo { outcome }) => {
                compensate(inner, transfer).await?;
                finish(inner, transfer, outcome, None, audit).await?;
                return Ok(transfer.clone());
            }
            (TransferStatus::Processing, SagaStep::Held, Intent::Abandon) => {
                compensate(inner, transfer).await?;
            }
            (TransferStatus::Processing, SagaStep::Released, Intent::Abandon) => {
                // Interrupted by a restart before it could complete; no money moved.
                // An FX clearing hold may outlive the source's release if the crash fell
                // between the two; releasing again is a no-op otherwise.
                // Only recovery abandons, and no caller waits: the answer is the failed transfer.
                release(inner, transfer).await?;
                // Recovery's own decision: no one asked, nothing to audit.
                finish(inner, transfer, TransferStatus::Failed, Some(ErrorCode::Internal), &mut None).await?;
                return Ok(transfer.clone());
            }
            (TransferStatus::Processing, SagaStep::Held, _) => {
                if transfer.is_fx() {
                    let hold = AccountCommand::Hold {
                        transfer: transfer.id,
                        amount: transfer.destination_amount,
                        currency: transfer.destination_currency,
                    };
                    forward(inner, transfer, hold, system_accounts::fx_clearing(transfer.destination_currency)).await?;
                }
                let credit = AccountCommand::Credit {
                    transfer: transfer.id,
                    amount: transfer.destination_amount,
                    currency: transfer.destination_currency,
                };
                // A destination that is only busy (its mailbox full, or the store that loads it
                // away for a moment) fails a new transfer, whose client hears `503` and
                // retries under its key, which the saga gives back. Any other saga has no such
                // retry: an atomic batch's item (undone alone, it would break the batch's all
                // or none), one an admin executes, one recovery drives on. Those wait while the
                // destination is busy, with the retry policy of forward-only steps
                // (`BusyOnly`); a refusal undoes them as before. A quarantined destination
                // (refused until an operator releases it, which may never come) leaves an
                // execute undone (the transfer stays pending, below) and undoes a recovered
                // saga, which stand alone, but not an atomic batch's item (`Run` begun past
                // step 1): the batch is past the pivot its items share, so the item waits for
                // the release like any forward-only step.
                let credited = if key_may_go_back {
                    step(inner, transfer, transfer.destination, credit).await.map(|_| ())
                } else {
                    let send = || step(inner, transfer, transfer.destination, credit);
                    let waited = if matches!(intent, Intent::Run { .. }) {
                        driver::forward(inner, send).await
                    } else {
                        driver::forward(inner, || async { send().await.map_err(BusyOnly) }).await
                    };
                    match waited {
                        Ok(()) => Ok(()),
                        Err(NotApplied::Refused(refusal)) => Err(refusal),
                        Err(NotApplied::Halted(halt)) => return Err(halt.into()),
                    }
                };
                match credited {
                    Ok(_) => transfer.step = SagaStep::Credited,
                    Err(CallError::Unavailable(unavailable)) if matches!(intent, Intent::Execute) => {
                        // An admin's execute meets a quarantined destination (only that ends
                        // its wait): not executed, and nothing changes. It stays pending with
                        // its source's hold, and the admin hears `503`, which means exactly
                        // that; they execute again once an operator releases the
                        // quarantine, or reject. Failing it here (as before) answered `503`
                        // for a transfer that had ended `failed`, and its client's key
                        // replayed that `503` for ever.
                        if transfer.is_fx() {
                            let clearing = system_accounts::fx_clearing(transfer.destination_currency);
                            forward(inner, transfer, AccountCommand::Release { transfer: transfer.id }, clearing)
                                .await?;
                        }
                        finish(inner, transfer, TransferStatus::Pending, None, &mut None).await?;
                        crate::expiry::schedule_if_pending(inner, transfer);
                        return Err(TransferError::Unavailable(unavailable));
                    }
                    Err(error) => {
                        let destination_exists = !matches!(error, CallError::NotFound);
                        let rejection = match error {
                            CallError::NotFound => Some(CreateTransferRejection::DestinationNotFound),
                            CallError::Rejected(AccountRejection::Credit(credit)) => {
                                Some(CreateTransferRejection::from_destination(credit))
                            }
                            CallError::Rejected(_) | CallError::Unavailable(_) => None,
                        };
                        // Undo step 2, then end failed: no money moved.
                        compensate(inner, transfer).await?;
                        // An atomic batch's item (and a recovered one) may hold an admission at
                        // the destination: void with the item, it must not keep the account
                        // from closing. A new transfer's saga never has one.
                        if !key_may_go_back && destination_exists {
                            let withdraw = AccountCommand::WithdrawCredit { transfer: transfer.id };
                            forward(inner, transfer, withdraw, transfer.destination).await?;
                        }
                        if rejection.is_none() {
                            give_key_back(inner, transfer, key_may_go_back);
                        }
                        let code = rejection.as_ref().map_or(ErrorCode::Overloaded, CreateTransferRejection::code);
                        // An admin's execute that fails still decided the pending transfer: it
                        // ends `failed`, its hold released, and the entry says who asked. A
                        // new transfer (an adjustment) refused here changed nothing asked for.
                        let audit = if matches!(intent, Intent::Execute) { audit } else { &mut None };
                        finish(inner, transfer, TransferStatus::Failed, Some(code), audit).await?;
                        return Err(match rejection {
                            Some(rejection) => TransferError::Rejected(rejection),
                            None => TransferError::Unavailable(Unavailable::Overloaded),
                        });
                    }
                }
            }
            (TransferStatus::Processing, SagaStep::Credited, _) => {
                forward(inner, transfer, AccountCommand::Post { transfer: transfer.id }, transfer.source).await?;
                if !transfer.fee.is_zero() && !*fee_credited {
                    let fees = system_accounts::fees(transfer.currency);
                    let credit = AccountCommand::Credit {
                        transfer: transfer.id,
                        amount: transfer.fee,
                        currency: transfer.currency,
                    };
                    forward(inner, transfer, credit, fees).await?;
                    *fee_credited = true;
                }
                if transfer.is_fx() {
                    let post = AccountCommand::Post { transfer: transfer.id };
                    forward(inner, transfer, post, system_accounts::fx_clearing(transfer.destination_currency)).await?;
                    let credit = AccountCommand::Credit {
                        transfer: transfer.id,
                        amount: transfer.amount,
                        currency: transfer.currency,
                    };
                    forward(inner, transfer, credit, system_accounts::fx_clearing(transfer.currency)).await?;
                }
                transfer.step = SagaStep::Posted;
            }
            (TransferStatus::Processing, SagaStep::Posted, _) => {
                finish(inner, transfer, TransferStatus::Completed, None, audit).await?;
                return Ok(transfer.clone());
            }
            (status, step, intent) => {
                return Err(TransferError::Internal(format!(
                    "saga cannot proceed from {status:?}/{step:?} with {intent:?}"
                )));
            }
        }
    }
}

/// A credit's failure as `drive`'s wait reads it: a destination that is busy (`Overloaded`)
/// or could not be loaded (the store away for a moment) is waited for; a quarantined one, like
/// a refusal, ends the wait.
struct BusyOnly(CallError<AccountRejection>);

impl driver::StepFailure for BusyOnly {
    type Refusal = CallError<AccountRejection>;

    fn refusal(self) -> Option<Self::Refusal> {
        match self.0 {
            CallError::Unavailable(Unavailable::Overloaded | Unavailable::Store(_)) => None,
            other => Some(other),
        }
    }
}

/// A transfer refused as unavailable (an account's mailbox full, an actor quarantined) moved
/// no money, and its caller was told to retry later (`503`). Its record keeps the failure, but
/// not the caller's idempotency key: a retry under the same key runs afresh instead of
/// replaying the `503` for ever. The key's claim is held until this record is durable, so the
/// retry finds the key free only once the store no longer holds it (every store writes a
/// transfer's record as its full state, key included).
///
/// Its screening is given back too (`aml::unscreen`): the retry is screened again, and a
/// velocity rule would otherwise count the one payment once per try.
fn give_key_back(inner: &EngineInner, transfer: &mut Transfer, allowed: bool) {
    if allowed {
        transfer.idempotency = None;
        crate::aml::unscreen(inner, transfer);
    }
}

/// Where step 2 holds: at the source and, for FX, at the destination currency's clearing
/// account. Releasing at both undoes it, whether or not the clearing hold was placed (release
/// is idempotent).
fn held_at(transfer: &Transfer) -> impl Iterator<Item = AccountId> + use<> {
    let clearing = transfer.is_fx().then(|| system_accounts::fx_clearing(transfer.destination_currency));
    std::iter::once(transfer.source).chain(clearing)
}

/// Releases step 2's holds.
async fn release(inner: &EngineInner, transfer: &Transfer) -> Result<(), TransferError> {
    for account in held_at(transfer) {
        forward(inner, transfer, AccountCommand::Release { transfer: transfer.id }, account).await?;
    }
    Ok(())
}

/// Undoes step 2: the saga's compensation.
async fn compensate(inner: &EngineInner, transfer: &mut Transfer) -> Result<(), TransferError> {
    let undone: &Transfer = transfer;
    let release = AccountCommand::Release { transfer: undone.id };
    driver::compensate(inner, held_at(undone), |account| forward(inner, undone, release, account)).await?;
    transfer.step = SagaStep::Released;
    Ok(())
}

fn overflow() -> TransferError {
    TransferError::Rejected(CreateTransferRejection::Overflow)
}

fn transition(inner: &EngineInner, transfer: &mut Transfer, next: TransferStatus) -> Result<(), TransferError> {
    transfer.transition(next, inner.clock.now()).map_err(TransferError::Transition)
}

/// Sends one step of `transfer`'s saga to `account`. The step's record goes to the saga's own
/// journal (`journal_of`), with the transfer's states.
pub(crate) async fn step(
    inner: &EngineInner,
    transfer: &Transfer,
    account: AccountId,
    command: AccountCommand,
) -> Result<Option<tally_engine::AccountEvent>, CallError<AccountRejection>> {
    // Waits first if the account's newest record is still in another journal
    // (`Registry::settled_outside`).
    inner.accounts.command_on(account, command, Some(journal_of(inner, transfer))).await
}

/// Appends the transfer's current state to its saga's journal.
pub(crate) fn record(inner: &EngineInner, transfer: &Transfer) -> Result<(), TransferError> {
    let journal = inner.shared.journals.shard(journal_of(inner, transfer));
    driver::record(journal, Record::Transfer(Box::new(transfer.clone()))).map_err(TransferError::from)
}

/// Moves the transfer to `status`, records it, and waits until that record (and so every
/// record of the saga before it) is durable. Only then may the caller hear the outcome.
///
/// An admin's `audit` record goes in one group with that record (one batch, one store
/// transaction: the outcome and its audit entry are durable together or not at all). It is
/// taken, so a saga restarted after a panic cannot append it twice. A caller whose failure
/// changed nothing an admin asked for (an adjustment refused at its hold or credit) passes
/// none: that request is answered with an error and audited by nothing.
async fn finish(
    inner: &EngineInner,
    transfer: &mut Transfer,
    status: TransferStatus,
    failure: Option<ErrorCode>,
    audit: &mut Option<AuditRecord>,
) -> Result<(), TransferError> {
    let pending_reason = transfer.pending_reason;
    transition(inner, transfer, status)?;
    if status == TransferStatus::Pending {
        transfer.pending_reason = pending_reason;
    }
    transfer.failure_reason = failure;
    let audit = audit.take();
    let journal = inner.shared.journals.shard(journal_of(inner, transfer));
    // A fresh slot for this state, shared with its record: the journal writer renders the
    // state's event into it and the client's answer reuses that text (`Rendering`).
    transfer.rendering = tally_engine::transfer::Rendering::default();
    let outcome = &*transfer;
    let appended =
        driver::append_final(journal, || Record::Transfer(Box::new(outcome.clone())), audit.as_ref()).await?;
    // Only once the outcome is appended: a refused append leaves the transfer as it was (held,
    // or pending) until recovery ends it, and its amount still counted (usage is rebuilt from
    // the ledger at the next start). Given back before, a refused append returned the usage
    // of a transfer still holding its money.
    crate::limits::on_finish(&inner.limits, transfer);
    crate::expiry::forget_if_decided(inner, transfer);
    appended.durable().await.map_err(TransferError::from)
}

/// A step after which the saga only goes forward: retried until the account applies it
/// (`driver::forward`).
pub(crate) async fn forward(
    inner: &EngineInner,
    transfer: &Transfer,
    command: AccountCommand,
    account: AccountId,
) -> Result<(), TransferError> {
    driver::forward(inner, || step(inner, transfer, account, command)).await.map_err(|error| match error {
        NotApplied::Halted(halt) => halt.into(),
        NotApplied::Refused(error) => {
            tracing::error!(transfer = %transfer.id, %account, ?error, "forward-only saga step refused");
            TransferError::Internal(format!("forward-only step refused: {error:?}"))
        }
    })
}

impl From<Halt> for TransferError {
    fn from(halt: Halt) -> Self {
        match halt.answer("transfer") {
            Answer::Unavailable(unavailable) => TransferError::Unavailable(unavailable),
            Answer::Internal(message) => TransferError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;
    use tally_engine::{Account, Currency, TransferKind, TransferRequest, UserId};
    use tally_persistence::MemoryStore;

    use super::*;
    use crate::engine::EngineConfig;
    use crate::shared::ActorConfig;

    /// An engine of two shards, each with its own journal, on a memory store whose journals can
    /// be paused one at a time.
    async fn two_shards() -> (Arc<MemoryStore>, Engine) {
        let store = Arc::new(MemoryStore::new());
        let config =
            EngineConfig { actors: ActorConfig { shards: 2, ..ActorConfig::default() }, ..EngineConfig::default() };
        let engine = Engine::start(store.clone(), config).await.unwrap();
        (store, engine)
    }

    /// An open account whose actor lives on `shard`.
    async fn open_on(engine: &Engine, shard: u16) -> Account {
        loop {
            let account =
                engine.open_account(UserId::from_uuid(uuid::Uuid::nil()), Currency::USD, Decimal::ZERO).await.unwrap();
            if engine.shard_of(account.id.as_uuid()) == shard {
                return account;
            }
        }
    }

    fn request(engine: &Engine, source: &Account, destination: &Account) -> TransferRequest {
        let now = engine.now();
        TransferRequest {
            id: engine.new_transfer_id_at(now),
            kind: TransferKind::Internal,
            source: source.id,
            destination: destination.id,
            amount: dec!(1),
            currency: Currency::USD,
            fee: Decimal::ZERO,
            reference: None,
            description: None,
            beneficiary: None,
            initiated_by: None,
            created_at: now,
            metadata: Default::default(),
        }
    }

    /// Waits until `account`'s actor shows `balance` (applied, not necessarily durable).
    async fn applied(engine: &Engine, account: &Account, balance: Decimal) {
        for _ in 0..500 {
            if engine.account(account.id).await.unwrap().balance() == balance {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never reached {balance}", account.id);
    }

    /// Within the window: the tests' choices come microseconds apart, but a loaded machine
    /// may stall a thread for longer than the production window.
    const LONG_MS: u64 = 60_000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sagas_keep_a_busy_accounts_journal_and_the_accounts_it_pays_follow_it() {
        let (store, engine) = two_shards().await;
        let payer = [open_on(&engine, 0).await, open_on(&engine, 1).await];
        let payee = [open_on(&engine, 0).await, open_on(&engine, 1).await];
        let source = open_on(&engine, 0).await;
        for account in payer.iter().chain([&source]) {
            engine.adjust(TransferKind::AdminCredit, account.id, dec!(10), None, None, None).await.unwrap();
        }
        // The funding's sagas are past their window: nothing here is busy.
        tokio::time::sleep(Duration::from_millis(AFFINITY_MS + 10)).await;

        // Commits stop: payee[j] gets a credit that stays in journal j (its payer's shard).
        store.set_commits_available(false);
        let mut waiting = Vec::new();
        for j in 0..2 {
            let engine_for_task = engine.clone();
            let request = request(&engine, &payer[j], &payee[j]);
            waiting.push(tokio::spawn(async move { engine_for_task.transfer(request).await }));
            applied(&engine, &payee[j], dec!(1)).await;
        }
        // Past the window, payee[j] is busy only by its record not yet durable.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let inner = &engine.inner;
        for (journal, account) in [0, 1].into_iter().zip(&payee) {
            assert_eq!(inner.accounts.busy_journal(account.id, 0), Some(journal));
        }

        // The source has nothing pending: its first saga follows its busy destination into
        // journal 1, and the next one, started at once, follows the source there, although
        // its own destination is busy in journal 0 (the first saga's hold on the source may
        // not be applied yet: a choice must not depend on it).
        assert_eq!(choose_journal_within(inner, source.id, payee[1].id, LONG_MS), 1);
        assert_eq!(choose_journal_within(inner, source.id, payee[0].id, LONG_MS), 1);
        // That destination now works in journal 1 too: its own next saga goes there, though
        // its record not yet durable is in journal 0 (that one wait, not one per transfer).
        assert_eq!(choose_journal_within(inner, payee[0].id, payer[0].id, LONG_MS), 1);
        // Once the window has passed, only records not yet durable count: the source has none,
        // and its destination's record in journal 0 leads.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(choose_journal_within(inner, source.id, payee[0].id, 0), 0);

        store.set_commits_available(true);
        for task in waiting {
            task.await.unwrap().unwrap();
        }
        engine.shutdown(Duration::from_secs(5)).await;
    }

    /// A flag raised on a transfer is durable no later than the transfer: it goes to the
    /// journal the saga chose, which need not be its source's home journal.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transfers_aml_flags_go_to_its_sagas_journal_and_are_durable_when_it_is() {
        use tally_engine::aml::{AmlAction, AmlRule, AmlRuleKind, ThresholdRule};
        use tally_persistence::Store;
        use tally_persistence::aml::FlagFilter;

        let (store, engine) = two_shards().await;
        let now = engine.now();
        let rule = AmlRule {
            id: uuid::Uuid::new_v4(),
            name: "at least 5".to_owned(),
            kind: AmlRuleKind::Threshold(ThresholdRule {
                amount: dec!(5),
                currency: Currency::USD,
                transfer_kind: None,
            }),
            action: AmlAction::Flag,
            enabled: true,
            created_at: now,
            updated_at: now,
        };
        engine.create_aml_rule(rule, None).await.unwrap();
        let payer = open_on(&engine, 1).await;
        let source = open_on(&engine, 0).await;
        let destination = open_on(&engine, 0).await;
        for account in [&payer, &source] {
            engine.adjust(TransferKind::AdminCredit, account.id, dec!(10), None, None, None).await.unwrap();
        }
        // The funding's sagas are past their window: nothing here is busy.
        tokio::time::sleep(Duration::from_millis(AFFINITY_MS + 10)).await;

        // A credit below the threshold leaves the source's newest record waiting in journal 1
        // (its payer's), so the source's next saga goes there.
        store.set_journal_commits_available(1, false);
        let engine_for_task = engine.clone();
        let credit = request(&engine, &payer, &source);
        let credit = tokio::spawn(async move { engine_for_task.transfer(credit).await });
        applied(&engine, &source, dec!(11)).await;

        // The source's home journal, 0, stops committing: only journal 1 can make the flagged
        // transfer durable, and its flag must be durable with it.
        store.set_journal_commits_available(0, false);
        let mut big = request(&engine, &source, &destination);
        big.amount = dec!(5);
        let engine_for_task = engine.clone();
        let big = tokio::spawn(async move { engine_for_task.transfer(big).await });
        applied(&engine, &destination, dec!(5)).await;
        store.set_journal_commits_available(1, true);
        credit.await.unwrap().unwrap();
        big.await.unwrap().unwrap();
        let flags = store.aml().unwrap().count_aml_flags(FlagFilter::default()).await.unwrap();
        assert_eq!(flags, 1, "the transfer is durable, so its flag is");

        store.set_journal_commits_available(0, true);
        engine.shutdown(Duration::from_secs(5)).await;
    }

    /// A step for an account whose newest record still waits in another journal waits in its
    /// saga (`Registry::settled_outside`), not in the journal: the saga's journal keeps
    /// committing everything else meanwhile, with no dependency wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_waits_in_its_saga_for_the_accounts_record_in_another_journal() {
        let (store, engine) = two_shards().await;
        let source = open_on(&engine, 0).await;
        let other = open_on(&engine, 0).await;
        let payer = open_on(&engine, 1).await;
        let destination = open_on(&engine, 1).await;
        for account in [&source, &payer] {
            engine.adjust(TransferKind::AdminCredit, account.id, dec!(10), None, None, None).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(AFFINITY_MS + 10)).await;
        let spawn = |request: TransferRequest| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.transfer(request).await })
        };

        // The source's newest record waits in journal 0, the destination's in journal 1.
        store.set_journal_commits_available(0, false);
        store.set_journal_commits_available(1, false);
        let first = spawn(request(&engine, &source, &other));
        applied(&engine, &other, dec!(1)).await;
        let credit = spawn(request(&engine, &payer, &destination));
        applied(&engine, &destination, dec!(1)).await;
        // A saga between them goes to the source's journal, 0; its credit would follow the
        // destination's record in journal 1.
        let between = spawn(request(&engine, &source, &destination));
        // Its hold is placed (or, were the credit not held back, already posted).
        for _ in 0..500 {
            if engine.account(source.id).await.unwrap().available().unwrap() == dec!(8) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Journal 0 commits; its records do not wait for journal 1, and the credit is not
        // sent while the destination's record is not durable.
        store.set_journal_commits_available(0, true);
        first.await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(engine.account(destination.id).await.unwrap().balance(), dec!(1), "the credit waits in its saga");
        let journal = engine.inner.shared.journals.shard(0);
        assert_eq!(journal.stats().dependency_waits.load(Ordering::Relaxed), 0, "journal 0 never waited");

        store.set_journal_commits_available(1, true);
        credit.await.unwrap().unwrap();
        between.await.unwrap().unwrap();
        assert_eq!(engine.account(destination.id).await.unwrap().balance(), dec!(2));
        engine.shutdown(Duration::from_secs(5)).await;
    }
}
