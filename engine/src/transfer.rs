//! Transfers: the request, the record, its statuses and the transitions between them.
//!
//! ```text
//! processing -> completed | failed | pending
//! pending    -> processing (execute) | rejected | cancelled
//! ```
//! Terminal statuses never change.

use std::sync::{Arc, OnceLock};

use rust_decimal::Decimal;

use crate::currency::Currency;
use crate::error_code::ErrorCode;
use crate::ids::{AccountId, Timestamp, TransferId, UserId};
use crate::metadata::Metadata;
use crate::money::{self, validate_amount};
use crate::rejection::{CreateTransferRejection, TransitionRejection};
use crate::transfer_type::TransferTypeSettings;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TransferKind {
    Internal,
    External,
    AdminCredit,
    AdminDebit,
}

impl TransferKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TransferKind::Internal => "internal",
            TransferKind::External => "external",
            TransferKind::AdminCredit => "admin_credit",
            TransferKind::AdminDebit => "admin_debit",
        }
    }

    pub fn parse(text: &str) -> Option<TransferKind> {
        match text {
            "internal" => Some(TransferKind::Internal),
            "external" => Some(TransferKind::External),
            "admin_credit" => Some(TransferKind::AdminCredit),
            "admin_debit" => Some(TransferKind::AdminDebit),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TransferStatus {
    Processing,
    Pending,
    Completed,
    Failed,
    Rejected,
    Cancelled,
    /// A pending transfer no one decided before its `pending_expires_at`: the hold was
    /// released as for a rejection. Terminal.
    Expired,
}

impl TransferStatus {
    /// Every status, in the order of the enum.
    pub const ALL: [TransferStatus; 7] = [
        TransferStatus::Processing,
        TransferStatus::Pending,
        TransferStatus::Completed,
        TransferStatus::Failed,
        TransferStatus::Rejected,
        TransferStatus::Cancelled,
        TransferStatus::Expired,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Processing => "processing",
            TransferStatus::Pending => "pending",
            TransferStatus::Completed => "completed",
            TransferStatus::Failed => "failed",
            TransferStatus::Rejected => "rejected",
            TransferStatus::Cancelled => "cancelled",
            TransferStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<TransferStatus> {
        match text {
            "processing" => Some(TransferStatus::Processing),
            "pending" => Some(TransferStatus::Pending),
            "completed" => Some(TransferStatus::Completed),
            "failed" => Some(TransferStatus::Failed),
            "rejected" => Some(TransferStatus::Rejected),
            "cancelled" => Some(TransferStatus::Cancelled),
            "expired" => Some(TransferStatus::Expired),
            _ => None,
        }
    }

    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TransferStatus::Completed
                | TransferStatus::Failed
                | TransferStatus::Rejected
                | TransferStatus::Cancelled
                | TransferStatus::Expired
        )
    }

    /// The transitions of the state machine above, and no others.
    pub const fn can_become(self, next: TransferStatus) -> bool {
        matches!(
            (self, next),
            (TransferStatus::Processing, TransferStatus::Completed)
                | (TransferStatus::Processing, TransferStatus::Failed)
                | (TransferStatus::Processing, TransferStatus::Pending)
                | (TransferStatus::Pending, TransferStatus::Processing)
                | (TransferStatus::Pending, TransferStatus::Rejected)
                | (TransferStatus::Pending, TransferStatus::Cancelled)
                | (TransferStatus::Pending, TransferStatus::Expired)
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PendingReason {
    ManualExecution,
    AmlReview,
}

impl PendingReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            PendingReason::ManualExecution => "manual_execution",
            PendingReason::AmlReview => "aml_review",
        }
    }

    pub fn parse(text: &str) -> Option<PendingReason> {
        match text {
            "manual_execution" => Some(PendingReason::ManualExecution),
            "aml_review" => Some(PendingReason::AmlReview),
            _ => None,
        }
    }
}

/// How far a transfer's saga got, as last recorded. Recovery resumes from here: before
/// `Held` nothing is undone; at `Held` the hold is released (or kept, if pending); at
/// `Credited` the saga only goes forward.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum SagaStep {
    Started,
    Held,
    Credited,
    Posted,
    Released,
}

impl SagaStep {
    pub const fn as_str(self) -> &'static str {
        match self {
            SagaStep::Started => "started",
            SagaStep::Held => "held",
            SagaStep::Credited => "credited",
            SagaStep::Posted => "posted",
            SagaStep::Released => "released",
        }
    }

    pub fn parse(text: &str) -> Option<SagaStep> {
        match text {
            "started" => Some(SagaStep::Started),
            "held" => Some(SagaStep::Held),
            "credited" => Some(SagaStep::Credited),
            "posted" => Some(SagaStep::Posted),
            "released" => Some(SagaStep::Released),
            _ => None,
        }
    }
}

/// A client's idempotency key for a transfer, scoped to the caller. Stored with the transfer's
/// first record, so the key and the transfer become durable together: a retry after a crash
/// finds the transfer, never creates a second one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// The caller the key belongs to (a user or an API key).
    pub scope: uuid::Uuid,
    // Shared, not owned: a transfer is cloned several times on its way (the saga's copy, its
    // journal records, the write plan, the rendering's), and each `String` cloned was an
    // allocation (`scripts/callgrind`: 19 string clones per keyed transfer).
    pub key: Arc<str>,
    /// A digest of the request body: the same key with another body is refused.
    pub fingerprint: Arc<str>,
}

/// An external beneficiary: where an `external` transfer's money goes outside Tally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beneficiary {
    pub name: String,
    pub iban: String,
}

/// A request to move money, already parsed: amounts are `Decimal`, ids resolved. For
/// `external` transfers `destination` is the settlement account of the currency; for admin
/// adjustments one side is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRequest {
    pub id: TransferId,
    pub kind: TransferKind,
    pub source: AccountId,
    pub destination: AccountId,
    /// In the source account's currency.
    pub amount: Decimal,
    pub currency: Currency,
    /// In the source currency; held and debited on top of `amount`, credited to fees.
    pub fee: Decimal,
    pub reference: Option<Arc<str>>,
    pub description: Option<Arc<str>>,
    pub beneficiary: Option<Beneficiary>,
    /// The user on whose behalf the transfer runs (`None` for system-made transfers).
    pub initiated_by: Option<UserId>,
    pub created_at: Timestamp,
    /// The client's key-value pairs (`Metadata::none()` for most transfers: no allocation).
    pub metadata: Metadata,
}

impl TransferRequest {
    /// The checks that need no account: amount, fee, accounts distinct, type enabled, limits.
    /// Returns the request with amounts at the currency's scale.
    pub fn validate(mut self, settings: &TransferTypeSettings) -> Result<TransferRequest, CreateTransferRejection> {
        self.amount = validate_amount(self.amount, self.currency).map_err(CreateTransferRejection::InvalidAmount)?;
        if self.fee.is_sign_negative() || self.fee.normalize().scale() > self.currency.scale() {
            return Err(CreateTransferRejection::InvalidFee);
        }
        self.fee = money::with_currency_scale(self.fee, self.currency);
        if self.source == self.destination {
            return Err(CreateTransferRejection::SameAccount);
        }
        if !settings.enabled {
            return Err(CreateTransferRejection::TransferTypeDisabled);
        }
        if !settings.allows_amount(self.amount) {
            return Err(CreateTransferRejection::AmountLimitExceeded);
        }
        money::add(self.amount, self.fee).map_err(|_| CreateTransferRejection::Overflow)?;
        Ok(self)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub kind: TransferKind,
    pub status: TransferStatus,
    pub step: SagaStep,
    pub source: AccountId,
    pub destination: AccountId,
    pub amount: Decimal,
    pub currency: Currency,
    pub fee: Decimal,
    pub fx_rate: Option<Decimal>,
    pub destination_amount: Decimal,
    pub destination_currency: Currency,
    pub pending_reason: Option<PendingReason>,
    pub failure_reason: Option<ErrorCode>,
    pub reference: Option<Arc<str>>,
    pub description: Option<Arc<str>>,
    pub beneficiary: Option<Beneficiary>,
    pub initiated_by: Option<UserId>,
    pub idempotency: Option<Idempotency>,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// The request's metadata, shared (an `Arc`) by every record of the saga that clones this.
    pub metadata: Metadata,
    /// When a pending transfer that no one decides ends `expired` (its own
    /// `pending_expires_in`, else its type's `pending_timeout_secs`, counted from its
    /// creation); `None`: it waits for a decision however long. Set in saga step 1, only for a
    /// transfer that stops pending; kept on the terminal record as the deadline it had.
    pub pending_expires_at: Option<Timestamp>,
    /// What the API rendered of this state, shared with the journal record cloned from it
    /// (see `Rendering`). Not part of the transfer: equality ignores it.
    pub rendering: Rendering,
}

/// The text the HTTP layer rendered of one exact state of a transfer, so that the JSON its
/// journal writer renders for the state's event is not rendered a second time for the client's
/// answer (the two are the same object: `http/src/events.rs`, `transfers::transfer_answer`).
/// The engine neither writes nor reads it: it is an opaque slot that clones share, which the
/// saga makes fresh before it clones the final state into its record (`saga::finish`).
///
/// The slot keeps a copy of the state it was rendered from, and `get` answers only for an equal
/// transfer, so a clone changed after the rendering never gets another state's text.
#[derive(Clone, Default)]
pub struct Rendering(Arc<OnceLock<(Transfer, Arc<str>)>>);

impl Rendering {
    /// Keeps `text` as the rendering of `state`, unless the slot already holds one.
    pub fn set(&self, state: &Transfer, text: Arc<str>) {
        let mut copy = state.clone();
        // The copy gets a slot of its own: sharing this one would make a cycle of `Arc`s.
        copy.rendering = Rendering::default();
        let _ = self.0.set((copy, text));
    }

    /// The text rendered of a state equal to `state`, if any.
    pub fn get(&self, state: &Transfer) -> Option<Arc<str>> {
        self.0.get().filter(|(rendered, _)| rendered == state).map(|(_, text)| Arc::clone(text))
    }
}

impl PartialEq for Rendering {
    fn eq(&self, _: &Rendering) -> bool {
        true
    }
}

impl Eq for Rendering {}

impl std::fmt::Debug for Rendering {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(if self.0.get().is_some() { "Rendering(kept)" } else { "Rendering(none)" })
    }
}

impl Transfer {
    /// A transfer as its saga starts it: `processing`, nothing done yet.
    pub fn start(request: TransferRequest) -> Transfer {
        Transfer {
            id: request.id,
            kind: request.kind,
            status: TransferStatus::Processing,
            step: SagaStep::Started,
            source: request.source,
            destination: request.destination,
            amount: request.amount,
            currency: request.currency,
            fee: request.fee,
            fx_rate: None,
            destination_amount: request.amount,
            destination_currency: request.currency,
            pending_reason: None,
            failure_reason: None,
            reference: request.reference,
            description: request.description,
            beneficiary: request.beneficiary,
            initiated_by: request.initiated_by,
            idempotency: None,
            created_at: request.created_at,
            completed_at: None,
            metadata: request.metadata,
            pending_expires_at: None,
            rendering: Rendering::default(),
        }
    }

    /// Whether the transfer converts between currencies (and so runs the FX clearing legs).
    pub fn is_fx(&self) -> bool {
        self.destination_currency != self.currency
    }

    /// What the source holds and finally loses: amount plus fee.
    pub fn total_debited(&self) -> Result<Decimal, money::Overflow> {
        money::add(self.amount, self.fee)
    }

    /// Moves to `next` if the state machine allows it. `at` stamps terminal statuses.
    pub fn transition(&mut self, next: TransferStatus, at: Timestamp) -> Result<(), TransitionRejection> {
        if !self.status.can_become(next) {
            return Err(match next {
                TransferStatus::Cancelled => TransitionRejection::NotCancellable { status: self.status },
                _ => TransitionRejection::NotPending { status: self.status },
            });
        }
        self.status = next;
        if next != TransferStatus::Pending {
            self.pending_reason = None;
        }
        if next.is_terminal() {
            self.completed_at = Some(at);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [TransferStatus; 7] = TransferStatus::ALL;

    #[test]
    fn terminal_statuses_never_change() {
        for from in ALL.into_iter().filter(|status| status.is_terminal()) {
            for to in ALL {
                assert!(!from.can_become(to), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn exactly_seven_transitions_exist() {
        let allowed: usize = ALL.iter().map(|from| ALL.iter().filter(|to| from.can_become(**to)).count()).sum();
        assert_eq!(allowed, 7);
    }

    fn a_transfer() -> Transfer {
        Transfer::start(TransferRequest {
            id: TransferId::from_u128(1),
            kind: TransferKind::Internal,
            source: AccountId::from_u128(2),
            destination: AccountId::from_u128(3),
            amount: Decimal::new(5_000, 2),
            currency: Currency::USD,
            fee: Decimal::ZERO,
            reference: None,
            description: None,
            beneficiary: None,
            initiated_by: None,
            created_at: Timestamp::from_micros(1),
            metadata: Metadata::default(),
        })
    }

    #[test]
    fn a_rendering_is_shared_by_clones_and_given_only_for_the_state_it_was_rendered_from() {
        let mut transfer = a_transfer();
        transfer.status = TransferStatus::Completed;
        let record = transfer.clone();
        record.rendering.set(&record, Arc::from("completed"));
        assert_eq!(transfer.rendering.get(&transfer).as_deref(), Some("completed"), "clones share the slot");
        assert_eq!(transfer, record, "the slot is not part of the transfer");
        // A clone changed afterwards never gets the other state's text.
        let mut changed = transfer.clone();
        changed.status = TransferStatus::Failed;
        assert_eq!(changed.rendering.get(&changed), None);
        // A slot is written once.
        record.rendering.set(&changed, Arc::from("failed"));
        assert_eq!(transfer.rendering.get(&transfer).as_deref(), Some("completed"));
        // The kept copy has a slot of its own: no cycle keeps the slot alive.
        assert_eq!(Arc::strong_count(&transfer.rendering.0), 3);
        drop((record, changed));
        assert_eq!(Arc::strong_count(&transfer.rendering.0), 1);
    }

    #[test]
    fn names_round_trip() {
        for status in ALL {
            assert_eq!(TransferStatus::parse(status.as_str()), Some(status));
        }
        for kind in
            [TransferKind::Internal, TransferKind::External, TransferKind::AdminCredit, TransferKind::AdminDebit]
        {
            assert_eq!(TransferKind::parse(kind.as_str()), Some(kind));
        }
        for step in [SagaStep::Started, SagaStep::Held, SagaStep::Credited, SagaStep::Posted, SagaStep::Released] {
            assert_eq!(SagaStep::parse(step.as_str()), Some(step));
        }
    }
}
