//! Recovery at start-up: finish every saga the last run left unfinished, from the durable
//! evidence of how far it got, and leave no hold dangling.
//!
//! What is durable is a prefix of each shard's journal, and a saga's records all go to one
//! journal (its source's), so the store tells exactly which steps of a
//! saga happened. For a transfer recorded `processing`:
//!
//! | durable evidence                        | decision                                        |
//! |-----------------------------------------|-------------------------------------------------|
//! | source debited (and fee credited)       | forward: record `completed`                     |
//! | destination credited                    | forward: step 4's legs not yet durable          |
//! | hold only, saga resumed by an execute   | forward: credit, post (the admin said execute)  |
//! | hold only, saga never paused            | undo: release the hold, record `failed`         |
//! | nothing                                 | record `failed`: no money moved                 |
//!
//! A `pending` transfer keeps its hold and waits for its admin. A hold whose transfer is not
//! live (terminal, or unknown) is released, and a credit admission likewise withdrawn.
//!
//! No caller ever heard a success for any transfer recovery touches: a saga answers only after
//! its final record is durable, and that record would have made the transfer terminal.

use std::collections::HashSet;

use tally_engine::transfer::SagaStep;
use tally_engine::{AccountCommand, Direction, TransferStatus, system_accounts};
use tally_persistence::StoreError;

use crate::engine::Engine;
use crate::saga::Intent;

/// What recovery did, for the start-up log and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub driven_forward: usize,
    pub undone: usize,
    pub pending_kept: usize,
    pub dangling_holds_released: usize,
    /// Credit admissions of atomic batches whose intent never became durable (the batch
    /// created nothing, so nothing will keep the promise).
    pub dangling_admissions_withdrawn: usize,
}

/// Sagas recovered at once: enough to overlap the store's round trips, few enough not to
/// swamp the journal's admission bound with a crash's worth of unfinished work.
const RECOVERY_CONCURRENCY: usize = 256;

pub(crate) async fn recover(engine: &Engine) -> Result<RecoveryReport, StoreError> {
    let store = engine.store().clone();
    let unfinished = store.non_terminal_transfers().await?;
    let mut report = RecoveryReport::default();
    let mut live: HashSet<tally_engine::TransferId> = HashSet::new();
    // Unfinished crypto operations hold account holds too; `recover_crypto` finishes them.
    live.extend(store.unfinished_crypto_ops().await?.iter().map(|op| op.id));
    let mut work = Vec::new();
    for transfer in unfinished {
        live.insert(transfer.id);
        if transfer.status == TransferStatus::Pending {
            // An undo (a reject, a cancel, an expiry) releases the hold first and records the
            // outcome after: a stop between the two leaves the transfer `pending` with nothing
            // held. Which decision it was is not recorded, and the money may since have been
            // spent, so it must never be executed (that would credit money its source no
            // longer holds). Past its deadline it stays pending for the sweeper, which expires
            // it as it would have (its release finds nothing to release): the usual case, an
            // expiry cut short. Before its deadline it ends `failed` (`INTERNAL`), having moved
            // nothing: an admin's reject or a cancel cut short, never acknowledged.
            let source = engine.account(transfer.source).await;
            let overdue = transfer.pending_expires_at.is_some_and(|at| at <= engine.now());
            if !overdue && source.is_ok_and(|source| source.position.hold_of(transfer.id).is_none()) {
                let mut transfer = transfer;
                transfer
                    .transition(TransferStatus::Processing, engine.now())
                    .map_err(|error| StoreError::Corrupt(format!("pending transfer {}: {error:?}", transfer.id)))?;
                transfer.step = SagaStep::Released;
                report.undone += 1;
                work.push((transfer, Intent::Abandon));
                continue;
            }
            report.pending_kept += 1;
            // Its deadline was stored with it: an overdue one expires on the sweeper's first
            // tick after recovery, the others at their time (expiry.rs).
            crate::expiry::schedule_if_pending(&engine.inner, &transfer);
            continue;
        }
        let postings = store.postings_of_transfer(transfer.id).await?;
        let credited = postings.iter().any(|p| p.account == transfer.destination && p.direction == Direction::Credit);
        let debited = postings.iter().any(|p| p.account == transfer.source && p.direction == Direction::Debit);
        let fee_credited = transfer.fee.is_zero()
            || postings
                .iter()
                .any(|p| p.account == system_accounts::fees(transfer.currency) && p.direction == Direction::Credit);
        // FX: the clearing legs are the last of step 4 (saga.rs): the destination side's
        // clearing hold posted (a debit) and the source side's clearing credited.
        let fx_done = !transfer.is_fx()
            || (postings.iter().any(|p| {
                p.account == system_accounts::fx_clearing(transfer.destination_currency)
                    && p.direction == Direction::Debit
            }) && postings.iter().any(|p| {
                p.account == system_accounts::fx_clearing(transfer.currency) && p.direction == Direction::Credit
            }));
        let held =
            engine.account(transfer.source).await.is_ok_and(|source| source.position.hold_of(transfer.id).is_some());
        let mut transfer = transfer;
        let recover = Intent::Recover { fee_credited };
        let intent = if debited && fee_credited && fx_done {
            transfer.step = SagaStep::Posted;
            report.driven_forward += 1;
            recover
        } else if credited || debited {
            // Step 4 again, without the fee's credit if it is durable (`Intent::Recover`).
            transfer.step = SagaStep::Credited;
            report.driven_forward += 1;
            recover
        } else if held && transfer.step == SagaStep::Held {
            // The record says `processing` at step `held`: an admin's execute resumed it.
            report.driven_forward += 1;
            recover
        } else if held {
            transfer.step = SagaStep::Held;
            report.undone += 1;
            Intent::Abandon
        } else {
            transfer.step = SagaStep::Released;
            report.undone += 1;
            Intent::Abandon
        };
        work.push((transfer, intent));
    }
    for chunk in work.chunks(RECOVERY_CONCURRENCY) {
        let runs = chunk.iter().map(|(transfer, intent)| engine.recover_saga(transfer.clone(), *intent));
        for result in futures::future::join_all(runs).await {
            if let Err(error) = result {
                tracing::error!(?error, "a recovered saga did not finish; it stays non-terminal for the next start");
            }
        }
    }
    for hold in store.live_holds().await? {
        if live.contains(&hold.transfer) {
            continue;
        }
        let release = AccountCommand::Release { transfer: hold.transfer };
        match engine.accounts().command(hold.account, release).await {
            Ok(_) => report.dangling_holds_released += 1,
            Err(error) => {
                tracing::error!(account = %hold.account, transfer = %hold.transfer, ?error, "could not release a dangling hold")
            }
        }
    }
    // An admission waits for its credit, which a live transfer (driven above) makes. One whose
    // transfer is not live belongs to an atomic batch cut before its intent was durable: the
    // batch created nothing, and the promise would only keep its account from closing. One
    // whose transfer ended above without its credit (refused, or its destination quarantined)
    // is withdrawn too; one whose saga did not finish waits for the next start.
    for admission in store.live_admissions().await? {
        if live.contains(&admission.transfer) {
            match engine.load_transfer(admission.transfer).await {
                Ok(Some(transfer)) if transfer.status.is_terminal() => {}
                _ => continue,
            }
        }
        let withdraw = AccountCommand::WithdrawCredit { transfer: admission.transfer };
        match engine.accounts().command(admission.account, withdraw).await {
            Ok(_) => report.dangling_admissions_withdrawn += 1,
            Err(error) => {
                tracing::error!(account = %admission.account, transfer = %admission.transfer, ?error, "could not withdraw a dangling credit admission")
            }
        }
    }
    engine.journals().barrier().await.map_err(|_| StoreError::Unavailable("journal stopped".to_owned()))?;
    Ok(report)
}
