//! Events out (DESIGN.md §11, API.md *1.1* "Events and webhooks"): a transactional outbox fed
//! by the journal.
//!
//! **What an event is.** A record of a shard's journal that describes a change a client cares
//! about (a transfer reaching `completed`/`pending`/`failed`/`rejected`/`cancelled`, an account
//! opened or its status changed, an AML flag raised, a deposit credited, a withdrawal
//! confirmed or failed, a crypto order completed) becomes one row of `events`, keyed by the
//! record's own journal position `(shard, seq)`, and written by the same batch transaction that
//! writes the change (`BatchPlan::events`, written with the batch's other rows). So an event
//! exists if and only if its change is durable, and per shard the events' order is the
//! journal's order; a consumer resumes from the last `(shard, seq)` it saw. Sequence numbers
//! are the journal's, so they are increasing per shard but not dense: records that are not
//! events (holds, credits, postings) take numbers too. Keying by the record's position costs no
//! counter, no read at start-up and nothing to fence: the journal's fence already makes every
//! shard's committed events a prefix.
//!
//! **Data.** `data` is the object as it stood after the change, as JSON text written once by
//! the HTTP layer's encoder (`install_encoder`: only `http` knows JSON), so every read and
//! every delivery of an event is the same bytes (a webhook's signature is over them). Without
//! an installed encoder (a store driven by tests or tools without the HTTP layer) `data` is
//! left NULL; the event still exists.
//!
//! **Not events.** A transfer refused before anything was held (`failed` at its first step: an
//! insufficient balance, a blocked account) is a request answered with an error, not a change
//! a client was told happened, so it has no event. `transfer.expired` is in the catalogue for
//! the contract but nothing expires transfers yet, so none is written.

pub mod chain;
mod sql;
pub mod webhooks;

pub use sql::{postgres, sqlite};

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use tally_engine::crypto::{CryptoOpKind, CryptoOpStatus};
use tally_engine::transfer::SagaStep;
use tally_engine::{AccountEvent, Record, Timestamp, TransferStatus};
use uuid::Uuid;

use crate::store::{SequencedRecord, StoreError};

/// The types API.md lists, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    TransferCompleted,
    TransferPending,
    TransferFailed,
    TransferRejected,
    TransferCancelled,
    TransferExpired,
    AccountOpened,
    AccountStatusChanged,
    AmlFlagRaised,
    DepositCredited,
    WithdrawalConfirmed,
    WithdrawalFailed,
    CryptoOrderCompleted,
}

impl EventType {
    pub const ALL: [EventType; 13] = [
        EventType::TransferCompleted,
        EventType::TransferPending,
        EventType::TransferFailed,
        EventType::TransferRejected,
        EventType::TransferCancelled,
        EventType::TransferExpired,
        EventType::AccountOpened,
        EventType::AccountStatusChanged,
        EventType::AmlFlagRaised,
        EventType::DepositCredited,
        EventType::WithdrawalConfirmed,
        EventType::WithdrawalFailed,
        EventType::CryptoOrderCompleted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::TransferCompleted => "transfer.completed",
            EventType::TransferPending => "transfer.pending",
            EventType::TransferFailed => "transfer.failed",
            EventType::TransferRejected => "transfer.rejected",
            EventType::TransferCancelled => "transfer.cancelled",
            EventType::TransferExpired => "transfer.expired",
            EventType::AccountOpened => "account.opened",
            EventType::AccountStatusChanged => "account.status_changed",
            EventType::AmlFlagRaised => "aml.flag_raised",
            EventType::DepositCredited => "deposit.credited",
            EventType::WithdrawalConfirmed => "withdrawal.confirmed",
            EventType::WithdrawalFailed => "withdrawal.failed",
            EventType::CryptoOrderCompleted => "crypto_order.completed",
        }
    }

    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The event `record` makes, if any (see the module's comment for what is not an event).
    pub fn of_record(record: &Record) -> Option<EventType> {
        match record {
            Record::Transfer(transfer) => match transfer.status {
                TransferStatus::Completed => Some(EventType::TransferCompleted),
                TransferStatus::Pending => Some(EventType::TransferPending),
                // Refused at its first step: nothing was ever held, the caller heard an error.
                TransferStatus::Failed if transfer.step == SagaStep::Started => None,
                TransferStatus::Failed => Some(EventType::TransferFailed),
                TransferStatus::Rejected => Some(EventType::TransferRejected),
                TransferStatus::Cancelled => Some(EventType::TransferCancelled),
                TransferStatus::Expired => Some(EventType::TransferExpired),
                TransferStatus::Processing => None,
            },
            Record::AccountOpened(_) => Some(EventType::AccountOpened),
            Record::Account { event: AccountEvent::StatusChanged { .. }, .. } => Some(EventType::AccountStatusChanged),
            Record::AmlFlag(_) => Some(EventType::AmlFlagRaised),
            Record::CryptoOp(op) => match (op.kind, op.status) {
                (CryptoOpKind::Deposit, CryptoOpStatus::Completed) => Some(EventType::DepositCredited),
                (CryptoOpKind::Withdrawal, CryptoOpStatus::Completed) => Some(EventType::WithdrawalConfirmed),
                // Refused before it was ever pending (its hold refused, or undone by recovery
                // before the custodian heard of it): the requester heard an error, as for a
                // transfer refused at its first step. A custodian's failure carries its hash.
                (CryptoOpKind::Withdrawal, CryptoOpStatus::Failed) if op.tx_hash.is_none() => None,
                (CryptoOpKind::Withdrawal, CryptoOpStatus::Failed) => Some(EventType::WithdrawalFailed),
                (CryptoOpKind::Buy | CryptoOpKind::Sell, CryptoOpStatus::Completed) => {
                    Some(EventType::CryptoOrderCompleted)
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// Renders an event's `data` (the object after the change) as JSON text. Installed once by the
/// HTTP layer, which owns the API's views.
pub trait EventEncoder: Send + Sync + 'static {
    fn encode(&self, kind: EventType, record: &Record) -> Option<String>;
}

static ENCODER: OnceLock<Arc<dyn EventEncoder>> = OnceLock::new();

/// Installs the encoder every journal writer of this process uses from now on (the first
/// installation wins; installing again is a no-op).
pub fn install_encoder(encoder: Arc<dyn EventEncoder>) {
    let _ = ENCODER.set(encoder);
}

/// One event row as a batch writes it; `shard` and `occurred_at` are the batch's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub seq: u64,
    pub kind: EventType,
    /// The id of the object `data` describes (a transfer, an account, a flag, a crypto
    /// operation).
    pub object: Uuid,
    pub data: Option<String>,
}

/// The event rows of a batch's records, in journal order.
pub fn events_of(records: &[SequencedRecord]) -> Vec<EventRow> {
    let encoder = ENCODER.get();
    records
        .iter()
        .filter_map(|SequencedRecord { seq, record }| {
            let kind = EventType::of_record(record)?;
            Some(EventRow {
                seq: *seq,
                kind,
                object: object_of(record),
                data: encoder.and_then(|encoder| encoder.encode(kind, record)),
            })
        })
        .collect()
}

fn object_of(record: &Record) -> Uuid {
    match record {
        Record::Transfer(transfer) => transfer.id.as_uuid(),
        Record::AccountOpened(account) => account.id.as_uuid(),
        Record::Account { account, .. } => account.as_uuid(),
        Record::AmlFlag(flag) => flag.id,
        Record::CryptoOp(op) => op.id.as_uuid(),
        Record::WalletOpened(wallet) => wallet.id.as_uuid(),
        Record::Wallet { wallet, .. } => wallet.as_uuid(),
        // Never reached: an audit record makes no event (`of_record`).
        Record::Audit(record) => record.id,
    }
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub shard: u16,
    pub seq: u64,
    pub kind: EventType,
    pub object: Uuid,
    pub occurred_at: Timestamp,
    pub data: Option<String>,
}

/// Namespace of event ids (UUIDv5 of `"<shard>:<seq>"`): an event's id is a function of its
/// position, so every read and every delivery of it carries the same id without storing one.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7a11_e7e0_0000_5000_8000_0000_0000_0016);

impl StoredEvent {
    pub fn id(&self) -> Uuid {
        event_id(self.shard, self.seq)
    }
}

pub fn event_id(shard: u16, seq: u64) -> Uuid {
    Uuid::new_v5(&EVENT_ID_NAMESPACE, format!("{shard}:{seq}").as_bytes())
}

/// Where a consumer stands: per shard, the last seq it has seen (absent: none yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedPosition {
    /// Applies to every shard not in `shards`: the seq after which to start (0: from the
    /// beginning).
    pub default_after: u64,
    /// (shard, last seq seen), sorted by shard, one entry per shard.
    pub shards: Vec<(u16, u64)>,
}

/// Longest position text accepted: 1,024 shards' worth is far beyond any node's.
pub const POSITION_TEXT_MAX: usize = 32 * 1024;

impl FeedPosition {
    pub fn after(&self, shard: u16) -> u64 {
        self.shards.binary_search_by_key(&shard, |(s, _)| *s).map_or(self.default_after, |at| self.shards[at].1)
    }

    pub fn advance(&mut self, shard: u16, seq: u64) {
        match self.shards.binary_search_by_key(&shard, |(s, _)| *s) {
            Ok(at) => self.shards[at].1 = self.shards[at].1.max(seq),
            Err(at) => self.shards.insert(at, (shard, seq.max(self.default_after))),
        }
    }

    /// Moves past everything up to `heads` (`EventStore::event_heads`, read before a page that
    /// came back short): never backwards.
    pub fn reach(&mut self, heads: &[(u16, u64)]) {
        for (shard, head) in heads {
            self.advance(*shard, *head);
        }
    }

    /// `""` (from the start), `N` (after seq N on every shard) or `S:N,S:N,…` (after N on
    /// shard S; shards not named from the start). `None` for anything else.
    pub fn parse(text: &str) -> Option<FeedPosition> {
        let text = text.trim();
        if text.len() > POSITION_TEXT_MAX {
            return None;
        }
        if text.is_empty() {
            return Some(FeedPosition::default());
        }
        if !text.contains(':') {
            return Some(FeedPosition { default_after: parse_digits(text)?, shards: Vec::new() });
        }
        let mut position = FeedPosition::default();
        for part in text.split(',') {
            let (shard, seq) = part.split_once(':')?;
            let shard = u16::try_from(parse_digits(shard)?).ok()?;
            let seq = parse_digits(seq)?;
            if position.shards.iter().any(|(s, _)| *s == shard) {
                return None;
            }
            position.shards.push((shard, seq));
        }
        position.shards.sort_unstable();
        Some(position)
    }

    /// The text form `parse` reads back: `S:N` for each shard, or the bare default.
    pub fn text(&self) -> String {
        if self.shards.is_empty() {
            return self.default_after.to_string();
        }
        self.shards.iter().map(|(shard, seq)| format!("{shard}:{seq}")).collect::<Vec<_>>().join(",")
    }
}

/// Digits only (no sign, no spaces), at most what fits an i64 (the stores' BIGINT).
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let value: u64 = text.parse().ok()?;
    (value <= i64::MAX as u64).then_some(value)
}

/// What `EventStore::backlog` counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Events after the position (each shard's counted up to the cap).
    pub events: u64,
    /// The oldest of them, if any.
    pub oldest: Option<Timestamp>,
}

impl Backlog {
    pub(crate) fn add(&mut self, events: u64, oldest: Option<Timestamp>) {
        self.events = self.events.saturating_add(events);
        self.oldest = match (self.oldest, oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The event feed and the webhook tables, on the identity store's pool (same database).
#[async_trait]
pub trait EventStore: webhooks::WebhookStore + Send + Sync + 'static {
    /// Up to `limit` events after `position`, each shard's in seq order, the shards' merged by
    /// time (then shard, then seq). Only `types` when given.
    async fn events_after(
        &self,
        position: &FeedPosition,
        types: Option<&[EventType]>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The shards that have ever committed: the ones a position must cover.
    async fn event_shards(&self) -> Result<Vec<u16>, StoreError>;

    /// Each shard's newest event seq, for the shards that have events. Read before an
    /// `events_after` that then came back short, every event up to these was in its reach
    /// (a shard's events become visible in seq order): a consumer whose types matched none of
    /// them may move past them (`FeedPosition::reach`) instead of reading them all again.
    async fn event_heads(&self) -> Result<Vec<(u16, u64)>, StoreError>;

    /// How far a consumer at `position` is behind: the events after it (only `types` when
    /// given), counted up to `cap` per shard so a long backlog costs a bounded index walk, and
    /// the time of the oldest of them.
    async fn backlog(
        &self,
        position: &FeedPosition,
        types: Option<&[EventType]>,
        cap: u32,
    ) -> Result<Backlog, StoreError>;

    /// Recomputes the journal's batch hash chain (`chain`).
    async fn verify_ledger_chain(&self) -> Result<chain::ChainReport, StoreError>;

    /// The newest link of each shard's chain.
    async fn ledger_heads(&self) -> Result<Vec<chain::ChainHead>, StoreError>;

    /// The hash of a shard's link ending at `last_seq`, if there is one (`tally verify
    /// --ledger-head`: a head anchored elsewhere must still be in the chain).
    async fn ledger_link(&self, shard: u16, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Reads up to `limit` events after `position` from each shard with `per_shard` and merges
/// them: the shared shape of both SQL stores' `events_after`.
pub(crate) async fn merge_shards<F, Fut>(
    shards: Vec<u16>,
    position: &FeedPosition,
    limit: u32,
    mut per_shard: F,
) -> Result<Vec<StoredEvent>, StoreError>
where
    F: FnMut(u16, u64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<StoredEvent>, StoreError>>,
{
    let mut all = Vec::new();
    for shard in shards {
        all.extend(per_shard(shard, position.after(shard)).await?);
    }
    all.sort_by_key(|event| (event.occurred_at, event.shard, event.seq));
    all.truncate(limit as usize);
    Ok(all)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn positions_round_trip_and_refuse_garbage() {
        assert_eq!(FeedPosition::parse("").unwrap(), FeedPosition::default());
        assert_eq!(FeedPosition::parse("17").unwrap().after(3), 17);
        let position = FeedPosition::parse("1:5,0:9").unwrap();
        assert_eq!(position.text(), "0:9,1:5");
        assert_eq!(position.after(0), 9);
        assert_eq!(position.after(2), 0);
        for bad in ["-1", "a", "0:1,0:2", "1:", ":1", "70000:1", "1:x", "99999999999999999999", "1 :2"] {
            assert!(FeedPosition::parse(bad).is_none(), "{bad} accepted");
        }
    }

    #[test]
    fn advancing_keeps_the_largest_seq() {
        let mut position = FeedPosition { default_after: 4, shards: Vec::new() };
        position.advance(1, 10);
        position.advance(1, 7);
        position.advance(0, 2);
        assert_eq!(position.shards, vec![(0, 4), (1, 10)]);
    }

    #[test]
    fn event_ids_are_a_function_of_the_position() {
        assert_eq!(event_id(0, 1), event_id(0, 1));
        assert_ne!(event_id(0, 1), event_id(1, 0));
        assert_ne!(event_id(0, 1), event_id(0, 2));
    }

    /// A withdrawal the custodian failed is an event; one refused at its hold (never pending,
    /// its requester answered with an error) is not, like a transfer refused at its first step.
    #[test]
    fn a_withdrawal_refused_before_it_was_pending_is_no_event() {
        let now = tally_engine::Timestamp::from_micros(1);
        let mut op = tally_engine::CryptoOp {
            id: tally_engine::TransferId::from_u128(1),
            kind: CryptoOpKind::Withdrawal,
            status: CryptoOpStatus::Failed,
            step: 0,
            owner: tally_engine::UserId::from_u128(2),
            wallet: tally_engine::WalletId::from_u128(3),
            asset: tally_engine::Currency::BTC,
            asset_amount: rust_decimal::Decimal::ONE,
            fiat_account: None,
            fiat_currency: None,
            fiat_amount: rust_decimal::Decimal::ZERO,
            fee: rust_decimal::Decimal::ZERO,
            price: None,
            address: Some("bc1away".to_owned()),
            tx_hash: None,
            idempotency: None,
            failure_reason: Some(tally_engine::ErrorCode::InsufficientFunds),
            created_at: now,
            updated_at: now,
        };
        assert_eq!(EventType::of_record(&Record::CryptoOp(Box::new(op.clone()))), None);
        op.tx_hash = Some("tx-out".to_owned());
        op.failure_reason = None;
        assert_eq!(EventType::of_record(&Record::CryptoOp(Box::new(op))), Some(EventType::WithdrawalFailed));
    }

    #[test]
    fn every_type_parses_back() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("transfer.nope"), None);
    }
}
