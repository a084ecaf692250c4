//! AML screening in the saga's step 1 (validate), before the hold, with no store round trip:
//! the rules are in memory (loaded at start, swapped whole on every admin write, store first)
//! and so is each source account's velocity window (a `DashMap` entry, locked only while one
//! transfer is screened; never across an `.await`).
//!
//! What screening does with the pure decision (`tally_engine::aml`):
//! - every matched rule raises a flag, appended to the journal before the transfer's first
//!   record, so the transfer's durable answer covers its flags;
//! - `review`: the saga holds and stops `pending` with `aml_review`;
//! - `block`: the transfer is recorded `failed` with `TRANSFER_BLOCKED` (the audit trail, and
//!   what an idempotent replay answers) and no money moves.
//!
//! Velocity windows start empty at start-up: they are not rebuilt from the store. A restart
//! therefore forgets up to one window of history per account; rebuilding would cost a scan of
//! recent transfers on every start (see ARCHITECTURE.md, "AML").

use std::sync::{Arc, RwLock};

use rust_decimal::Decimal;
use tally_engine::aml::{
    AML_RULES_MAX, AmlAction, AmlFlag, AmlRule, AmlSubject, VelocityWindow, evaluate, is_screened,
    velocity_horizon_seconds,
};
use tally_engine::{
    AccountId, AuditRecord, CreateTransferRejection, Currency, ErrorCode, PendingReason, Record, Timestamp, Transfer,
    TransferStatus,
};
use tally_persistence::{Store, StoreError};

use crate::IdMap;
use crate::engine::{Engine, EngineError, TransferError};
use crate::registry::Unavailable;

/// The engine's AML state.
pub(crate) struct Aml {
    /// The rule set, replaced whole on each admin write so a screening reads one consistent set.
    rules: RwLock<Arc<Vec<AmlRule>>>,
    /// Each source account's recent screened transfers, while a velocity rule is enabled.
    windows: IdMap<AccountId, VelocityWindow>,
    /// Serialises admin writes: store, then swap, in the same order for every writer.
    writes: tokio::sync::Mutex<()>,
}

impl Aml {
    /// The rules the store holds (none for a store that keeps none).
    pub(crate) async fn load(store: &dyn Store) -> Result<Aml, StoreError> {
        let rules = match store.aml() {
            Some(aml) => aml.aml_rules().await?,
            None => Vec::new(),
        };
        Ok(Aml { rules: RwLock::new(Arc::new(rules)), windows: IdMap::default(), writes: tokio::sync::Mutex::new(()) })
    }

    fn rules(&self) -> Arc<Vec<AmlRule>> {
        Arc::clone(&self.rules.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn swap(&self, rules: Vec<AmlRule>) {
        if velocity_horizon_seconds(&rules).is_none() {
            // No velocity rule left: the windows would only use memory.
            self.windows.clear();
        }
        *self.rules.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(rules);
    }
}

/// The outcome of screening one transfer.
#[derive(Debug, Default)]
pub(crate) struct Screened {
    pub(crate) action: Option<AmlAction>,
    pub(crate) flags: Vec<AmlFlag>,
    /// The time it was noted at in its source's velocity window, if it was (a velocity rule
    /// enabled and the transfer not blocked): what `BatchScreenings` takes back out.
    pub(crate) noted_at: Option<Timestamp>,
}

impl Screened {
    /// The pending reason the saga stops with: `aml_review` wins over the type's own
    /// (manual execution), since an admin must look at it either way and this says why.
    pub(crate) fn stop_pending(&self, stop_pending: Option<PendingReason>) -> Option<PendingReason> {
        if self.action == Some(AmlAction::Review) { Some(PendingReason::AmlReview) } else { stop_pending }
    }
}

/// The velocity-window notes an atomic batch's screening made, taken back out when dropped
/// unless `keep` was called: an aborted batch moved nothing and is answered as a whole, so its
/// items are not payments attempted one by one (a retry runs the whole batch again and is
/// screened again). Without this, a batch aborted for one item's funds left every item
/// counted, and a few retries blocked the account's next, single, transfer.
///
/// The notes are made when each item is screened, not once the batch's intent is durable: a
/// concurrent transfer of the same account is screened against them while the batch runs,
/// so two cannot both pass a velocity rule that only one fits (noting only after the intent
/// would let them). Taking a note back is `VelocityWindow::forget` from the time it was
/// noted: if another transfer of the same amount was noted at that instant, either may go,
/// and the window's count and sum come out the same.
pub(crate) struct BatchScreenings {
    inner: Arc<crate::engine::EngineInner>,
    noted: Vec<(AccountId, Currency, Decimal, Timestamp)>,
}

impl BatchScreenings {
    pub(crate) fn new(engine: &Engine) -> BatchScreenings {
        BatchScreenings { inner: Arc::clone(&engine.inner), noted: Vec::new() }
    }

    /// Remembers what screening `transfer` noted, to take back should the batch abort.
    pub(crate) fn push(&mut self, transfer: &Transfer, screened: &Screened) {
        if let Some(at) = screened.noted_at {
            self.noted.push((transfer.source, transfer.currency, transfer.amount, at));
        }
    }

    /// The batch's intent is appended: its items stay counted (if the intent never becomes
    /// durable, recovery may still finish them, so counting them is the safe side).
    pub(crate) fn keep(mut self) {
        self.noted.clear();
    }
}

impl Drop for BatchScreenings {
    fn drop(&mut self) {
        for (source, currency, amount, at) in self.noted.drain(..) {
            if let Some(mut window) = self.inner.aml.windows.get_mut(&source) {
                window.forget(currency, amount, at);
            }
        }
    }
}

/// Takes a screened transfer back out of its source's velocity window: it was refused as
/// unavailable (an account overloaded or quarantined) before any money moved, and its
/// retry is screened again (`saga::give_key_back`). Counting both would make a client's
/// retries during an incident look like a burst of payments.
pub(crate) fn unscreen(inner: &crate::engine::EngineInner, transfer: &Transfer) {
    if is_screened(transfer.kind)
        && let Some(mut window) = inner.aml.windows.get_mut(&transfer.source)
    {
        window.forget(transfer.currency, transfer.amount, transfer.created_at);
    }
}

impl Engine {
    /// Screens `transfer` against the rules and notes it in its source's velocity window
    /// (unless blocked: a refused transfer moved nothing). Pure computation and one map entry.
    pub(crate) fn screen(&self, transfer: &Transfer) -> Screened {
        let inner = &self.inner;
        if !is_screened(transfer.kind) {
            return Screened::default();
        }
        let rules = inner.aml.rules();
        if rules.iter().all(|rule| !rule.enabled) {
            return Screened::default();
        }
        let subject = AmlSubject {
            kind: transfer.kind,
            amount: transfer.amount,
            currency: transfer.currency,
            at: inner.clock.now(),
        };
        let mut noted_at = None;
        let decision = match velocity_horizon_seconds(&rules) {
            None => evaluate(&rules, &subject, &VelocityWindow::default()),
            Some(keep_seconds) => {
                let mut window = inner.aml.windows.entry(transfer.source).or_default();
                let decision = evaluate(&rules, &subject, &window);
                if decision.action != Some(AmlAction::Block) {
                    window.note(&subject, keep_seconds);
                    noted_at = Some(subject.at);
                }
                decision
            }
        };
        let flags = decision
            .matched
            .iter()
            .map(|matched| {
                let id = self.new_transfer_id().as_uuid();
                AmlFlag::raise(id, transfer.id, transfer.source, transfer.initiated_by, &subject, matched)
            })
            .collect();
        Screened { action: decision.action, flags, noted_at }
    }

    /// Appends the flags of a screened transfer to its saga's journal (`saga::journal_of`, chosen
    /// before the screen), before its first record: the journal's durable prefix then makes
    /// every flag durable no later than the transfer it points at. (The source's home journal
    /// would not: a saga may write to another, and its ack would not wait for the flag.)
    fn record_flags(&self, transfer: &Transfer, flags: &[AmlFlag]) -> Result<(), TransferError> {
        let journal = self.inner.shared.journals.shard(crate::saga::journal_of(&self.inner, transfer));
        for flag in flags {
            journal
                .append(Record::AmlFlag(Box::new(flag.clone())))
                .map_err(|_| TransferError::Unavailable(Unavailable::Overloaded))?;
        }
        Ok(())
    }

    /// Step 1's AML screen for a single transfer: records its flags, and answers the pending
    /// reason its saga stops with, or refuses it (`block`) once its failure is durable.
    pub(crate) async fn screen_transfer(
        &self,
        transfer: &Transfer,
        stop_pending: Option<PendingReason>,
    ) -> Result<Option<PendingReason>, TransferError> {
        let screened = self.screen(transfer);
        self.record_flags(transfer, &screened.flags)?;
        if screened.action != Some(AmlAction::Block) {
            return Ok(screened.stop_pending(stop_pending));
        }
        // Kept as a failed transfer: the flags point at it, and a replay under the same key
        // answers TRANSFER_BLOCKED again.
        let mut blocked = transfer.clone();
        blocked.transition(TransferStatus::Failed, self.now()).map_err(TransferError::Transition)?;
        blocked.failure_reason = Some(ErrorCode::TransferBlocked);
        let (_, ack) = self
            .inner
            .shared
            .journals
            .shard(crate::saga::journal_of(&self.inner, &blocked))
            .append_acked(Record::Transfer(Box::new(blocked)))
            .map_err(|_| TransferError::Unavailable(Unavailable::Overloaded))?;
        ack.wait().await.map_err(|_| TransferError::Internal("journal stopped".to_owned()))?;
        Err(TransferError::Rejected(CreateTransferRejection::Blocked))
    }

    /// The AML record of an atomic batch that aborted (`batch.rs`), which otherwise records
    /// nothing: every item that raised a flag is kept as a single transfer refused after its
    /// screening is (`screen_transfer`, `saga::drive`): a `failed` transfer with its flags, so
    /// a block rule cannot be probed through atomic batches without trace. Its failure is its
    /// own refusal (`failures`: `TRANSFER_BLOCKED`, `INSUFFICIENT_FUNDS`, ...) or, for an item
    /// only rolled back with the batch, `CONFLICT`, what the batch's answer gives it. Items
    /// that raised no flag stay unrecorded, as before.
    ///
    /// The records carry no idempotency key: the batch's answer is unchanged (an aborted batch
    /// keeps no key, and its retry runs the whole batch again, screened again and, if blocked
    /// again, recorded again). One group in the batch's journal, durable before the answer, as
    /// a blocked single transfer's failure is.
    pub(crate) async fn record_aborted_batch(
        &self,
        transfers: &[Transfer],
        flags: Vec<Vec<AmlFlag>>,
        failures: &[(usize, TransferError)],
        journal: u16,
    ) -> Result<(), TransferError> {
        let mut records = Vec::new();
        for (index, (transfer, flags)) in transfers.iter().zip(flags).enumerate() {
            if flags.is_empty() {
                continue;
            }
            let code = failures
                .iter()
                .find(|(failed, _)| *failed == index)
                .map_or(ErrorCode::Conflict, |(_, error)| error.code());
            let mut failed = transfer.clone();
            failed.idempotency = None;
            failed.transition(TransferStatus::Failed, self.now()).map_err(TransferError::Transition)?;
            failed.failure_reason = Some(code);
            records.extend(flags.into_iter().map(|flag| Record::AmlFlag(Box::new(flag))));
            records.push(Record::Transfer(Box::new(failed)));
        }
        if records.is_empty() {
            return Ok(());
        }
        let ack = self
            .inner
            .shared
            .journals
            .shard(journal)
            .append_group_acked(records)
            .map_err(|_| TransferError::Unavailable(Unavailable::Overloaded))?;
        ack.wait().await.map_err(|_| TransferError::Internal("journal stopped".to_owned()))
    }

    // ---- rules (admin) --------------------------------------------------------------------

    /// The rules in force, oldest first.
    pub fn aml_rules(&self) -> Arc<Vec<AmlRule>> {
        self.inner.aml.rules()
    }

    /// Creates a rule (a new id): stored first, then in force for the next screening.
    /// Creating beyond `AML_RULES_MAX` rules is a conflict.
    /// `audit` (an admin's record of the change) is stored in the same transaction.
    pub async fn create_aml_rule(&self, rule: AmlRule, audit: Option<&AuditRecord>) -> Result<(), EngineError> {
        let aml = &self.inner.aml;
        let _write = aml.writes.lock().await;
        let mut rules = (*aml.rules()).clone();
        if rules.iter().any(|stored| stored.id == rule.id) {
            return Err(EngineError::Conflict);
        }
        if rules.len() >= AML_RULES_MAX {
            return Err(EngineError::Conflict);
        }
        self.aml_store()?.insert_aml_rule(&rule, audit).await.map_err(store_error)?;
        rules.push(rule);
        aml.swap(rules);
        Ok(())
    }

    /// Replaces rule `id` with what `replace` makes of the rule in force, read under the
    /// admin writes' lock, so a replacement racing a deletion either comes first or finds no
    /// rule (`None`, nothing recorded): it can never bring a deleted rule back (it did, found
    /// by review: the rule was looked up before the lock and then stored as new). The store
    /// replaces only a rule it holds. `audit` as for `create_aml_rule`.
    pub async fn replace_aml_rule<E: From<EngineError>>(
        &self,
        id: uuid::Uuid,
        audit: Option<&AuditRecord>,
        replace: impl FnOnce(&AmlRule) -> Result<AmlRule, E>,
    ) -> Result<Option<AmlRule>, E> {
        let aml = &self.inner.aml;
        let _write = aml.writes.lock().await;
        let mut rules = (*aml.rules()).clone();
        let Some(at) = rules.iter().position(|stored| stored.id == id) else {
            return Ok(None);
        };
        let rule = replace(&rules[at])?;
        if rule.id != id {
            return Err(EngineError::Internal("a replaced AML rule must keep its id".to_owned()).into());
        }
        if !self.aml_store()?.replace_aml_rule(&rule, audit).await.map_err(store_error)? {
            // Rules in memory are the store's, changed only under this lock: the store not
            // holding one is a fault, not a race.
            return Err(EngineError::Internal(format!("AML rule {id} is in force but not stored")).into());
        }
        rules[at] = rule.clone();
        aml.swap(rules);
        Ok(Some(rule))
    }

    /// Deletes a rule; false if there was none (nothing recorded). Its flags keep its id and
    /// name. `audit` as for `create_aml_rule`.
    pub async fn delete_aml_rule(&self, id: uuid::Uuid, audit: Option<&AuditRecord>) -> Result<bool, EngineError> {
        let aml = &self.inner.aml;
        let _write = aml.writes.lock().await;
        let deleted = self.aml_store()?.delete_aml_rule(id, audit).await.map_err(store_error)?;
        let mut rules = (*aml.rules()).clone();
        rules.retain(|rule| rule.id != id);
        aml.swap(rules);
        Ok(deleted)
    }

    fn aml_store(&self) -> Result<&dyn tally_persistence::aml::AmlStore, EngineError> {
        self.inner.shared.store.aml().ok_or_else(|| EngineError::Internal("this store keeps no AML rules".to_owned()))
    }
}

fn store_error(error: StoreError) -> EngineError {
    match error {
        StoreError::Unavailable(detail) => EngineError::Unavailable(Unavailable::Store(detail)),
        StoreError::Corrupt(detail) => EngineError::Internal(detail),
    }
}
