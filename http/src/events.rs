//! Events out over HTTP (API.md *1.1* "Events and webhooks", `docs/events.md`): the encoder
//! that renders each event's `data` once, as the journal writes it (`install_encoder`), the
//! event's JSON envelope (`envelope`, also a webhook's body), and the feed `GET
//! /v1/admin/events` with long-polling.
//!
//! The feed's position: events are ordered per shard by the journal's sequence (there is no
//! ledger-wide sequence, DESIGN.md §5), so where a consumer stands is one `seq` per shard.
//! `after` takes what the previous page's `next_after` said (`S:N,S:N,…`), a bare number (after
//! that seq on every shard: `0` is from the beginning, and on a one-shard node it is simply the
//! last seq seen), or nothing (from the beginning).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_engine::{AccountEvent, Record};
use tally_persistence::events::{EventEncoder, EventType, FeedPosition, StoredEvent, install_encoder};

use crate::aml::AmlFlagView;
use crate::auth::Authorized;
use crate::auth::permissions::EventsRead;
use crate::crypto::CryptoOpView;
use crate::problem::ApiError;
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::{AccountView, TransferView, money, rfc3339};

/// Most events one page answers (API.md: `limit ≤ 1000`).
pub const FEED_LIMIT_MAX: u32 = 1000;
const FEED_LIMIT_DEFAULT: u32 = 100;
/// Longest long-poll (API.md: `wait=0..30` seconds).
pub const FEED_WAIT_MAX_SECS: u64 = 30;
/// How often a waiting feed request looks at the journals' committed sequences (in memory):
/// a new event shows within this much of its commit, and a waiting request costs nothing else.
const FEED_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// A waiting request also reads the store this often, for events written by another process
/// sharing the database (a cluster node, a tool) whose journals this node cannot see.
const FEED_STORE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Renders `data` with the API's own views.
struct JsonEvents;

impl EventEncoder for JsonEvents {
    fn encode(&self, kind: EventType, record: &Record) -> Option<String> {
        let rendered = match record {
            Record::Transfer(transfer) => {
                // The view's JSON (`TransferView::json`), which the client's answer sends
                // (`transfers::transfer_answer`).
                let text = TransferView::json(transfer).ok()?;
                transfer.rendering.set(transfer, Arc::from(text.as_str()));
                Ok(text)
            }
            Record::AccountOpened(account) => serde_json::to_string(&AccountView::of(account).ok()?),
            Record::Account { account, currency, after, event, .. } => {
                let available = after.balance.checked_add(after.credit_limit)?.checked_sub(after.held)?;
                let AccountEvent::StatusChanged { owner, opened_at, .. } = event else { return None };
                serde_json::to_string(&AccountStatusView {
                    id: account.to_string(),
                    user_id: owner.map(|owner| owner.to_string()),
                    currency: currency.code(),
                    status: after.status.as_str(),
                    balance: money(after.balance, *currency),
                    held: money(after.held, *currency),
                    available_balance: money(available, *currency),
                    credit_limit: money(after.credit_limit, *currency),
                    created_at: crate::views::rfc3339(*opened_at).ok()?,
                })
            }
            Record::AmlFlag(flag) => serde_json::to_string(&AmlFlagView::of(flag).ok()?),
            Record::CryptoOp(op) => serde_json::to_string(&CryptoOpView::of(op).ok()?),
            // No events (`EventType::of_record`): an audit record is the audit log's, not a client's.
            Record::WalletOpened(_) | Record::Wallet { .. } | Record::Audit(_) => return None,
        };
        match rendered {
            Ok(text) => Some(text),
            Err(error) => {
                tracing::error!(event = kind.as_str(), %error, "event data could not be rendered");
                None
            }
        }
    }
}

/// Installs the JSON encoder for every journal of this process (idempotent). `AppState::new`
/// calls it, before any engine starts.
pub fn install() {
    install_encoder(Arc::new(JsonEvents));
}

/// `data` of `account.status_changed`: the account's figures after the change (the record
/// carries no owner or creation time; `GET /v1/admin/accounts/{id}` has them).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountStatusView {
    pub id: String,
    /// `null` for system accounts.
    pub user_id: Option<String>,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub currency: &'static str,
    pub status: &'static str,
    pub balance: String,
    pub held: String,
    /// Balance plus credit limit less holds.
    pub available_balance: String,
    pub credit_limit: String,
    pub created_at: String,
}

/// One event as the feed lists it and a webhook posts it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct EventView {
    /// Stable across every read and delivery: a consumer dedupes by it (`Tally-Event-Id`).
    #[schema(format = Uuid)]
    pub id: String,
    /// The journal shard the change was committed by.
    pub shard: u16,
    /// The change's position in its shard's journal: increasing in commit order per shard,
    /// not dense.
    pub seq: u64,
    #[serde(rename = "type")]
    #[schema(
        pattern = "^(transfer\\.(completed|pending|failed|rejected|cancelled|expired)|account\\.(opened|status_changed)|aml\\.flag_raised|deposit\\.credited|withdrawal\\.(confirmed|failed)|crypto_order\\.completed)$"
    )]
    pub kind: String,
    /// When the change was committed (RFC 3339 UTC, microseconds).
    pub occurred_at: String,
    /// The object after the change: a transfer, an account, an AML flag or a crypto
    /// operation, as the API's own reads show it.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// The event's JSON, exactly as stored `data` was written (so a webhook body is the same bytes
/// on every attempt). Every field but `data` is made of digits, hex, dashes and a type name.
pub fn envelope(event: &StoredEvent) -> Result<String, ApiError> {
    Ok(format!(
        "{{\"id\":\"{}\",\"shard\":{},\"seq\":{},\"type\":\"{}\",\"occurred_at\":\"{}\",\"data\":{}}}",
        event.id(),
        event.shard,
        event.seq,
        event.kind.as_str(),
        rfc3339(event.occurred_at)?,
        event.data.as_deref().unwrap_or("null"),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Where to resume: the previous page's `next_after` (`S:N,S:N`), a seq applying to every
    /// shard (`0`: from the beginning), or absent (from the beginning).
    pub after: Option<String>,
    /// Comma-separated event types; absent: every type.
    pub types: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<String>,
    /// Seconds to wait for an event when there is none yet: 0 to 30, default 0.
    pub wait: Option<String>,
}

/// What the feed answers. `next_after` is the position after the last event listed (or the
/// same position when none was), to pass as `after` next time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = EventPage)]
#[allow(dead_code)]
struct FeedPage {
    items: Vec<EventView>,
    next_after: String,
}

pub fn parse_types(text: Option<&str>) -> Result<Option<Vec<EventType>>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let mut types = Vec::new();
    for name in text.split(',') {
        let kind = EventType::parse(name.trim()).ok_or_else(|| {
            ApiError::field("types", format!("unknown event type {:?}", name.chars().take(64).collect::<String>()))
        })?;
        if !types.contains(&kind) {
            types.push(kind);
        }
    }
    Ok(Some(types))
}

fn bounded(field: &str, text: Option<&str>, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
    let Some(text) = text else { return Ok(default) };
    let refuse = || ApiError::field(field, format!("must be a whole number from {min} to {max}"));
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(refuse());
    }
    let value: u64 = text.parse().map_err(|_| refuse())?;
    if !(min..=max).contains(&value) {
        return Err(refuse());
    }
    Ok(value)
}

/// The sum of every journal's committed sequence on this node: it changes whenever any shard
/// commits, and reading it touches no store.
fn committed_marker(state: &AppState) -> u64 {
    state.engine_if_started().map_or(0, |engine| {
        engine
            .journals()
            .iter()
            .map(|journal| journal.stats().committed_seq.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    })
}

/// `GET /v1/admin/events?after&types&limit&wait` (`events:read`).
#[utoipa::path(
    get,
    path = "/v1/admin/events",
    tag = "admin",
    params(FeedQuery),
    description = "The event feed: every committed change a client cares about, written in the same commit as \
                   the change. Events are ordered per journal shard by `seq`; a page merges the shards by \
                   `occurred_at`. Resume with `after` = the previous page's `next_after` (one seq per shard, \
                   `S:N,S:N`); a bare number applies to every shard (`0` = from the beginning). With `wait` \
                   (seconds, at most 30) and nothing to list yet, the request waits until an event is \
                   committed or the time passes, then answers (possibly an empty page). `types` filters by \
                   a comma-separated list of event types. Types: transfer.completed, transfer.pending, \
                   transfer.failed (after money was held; a transfer refused outright is not an event), \
                   transfer.rejected, transfer.cancelled, transfer.expired (a pending transfer past its pending_expires_at, hold released), \
                   account.opened, account.status_changed, aml.flag_raised, deposit.credited, \
                   withdrawal.confirmed, withdrawal.failed, crypto_order.completed. See docs/events.md.",
    responses((status = 200, body = FeedPage)),
    security(("bearer" = []))
)]
pub async fn feed(
    State(state): State<AppState>,
    admin: Authorized<EventsRead>,
    caller: crate::auth::caller::Caller,
    ApiQuery(query): ApiQuery<FeedQuery>,
) -> Result<Response, ApiError> {
    let position = FeedPosition::parse(query.after.as_deref().unwrap_or(""))
        .ok_or_else(|| ApiError::field("after", "must be a seq or a position S:N,S:N as next_after gives it"))?;
    let types = parse_types(query.types.as_deref())?;
    let limit =
        bounded("limit", query.limit.as_deref(), u64::from(FEED_LIMIT_DEFAULT), 1, u64::from(FEED_LIMIT_MAX))? as u32;
    let wait = Duration::from_secs(bounded("wait", query.wait.as_deref(), 0, 0, FEED_WAIT_MAX_SECS)?);
    let events_store = &state.identity().events;
    let deadline = tokio::time::Instant::now() + wait;
    let mut events;
    let mut heads;
    let mut waited = false;
    loop {
        let marker = committed_marker(&state);
        // With a type filter, where each shard stood before the read: a short page then moves
        // `next_after` past the events of other types too, so a consumer of a rare type does
        // not scan everything since its position again on every poll.
        heads = match types {
            Some(_) => events_store.event_heads().await?,
            None => Vec::new(),
        };
        events = events_store.events_after(&position, types.as_deref(), limit).await?;
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        waited = true;
        let store_poll = tokio::time::Instant::now() + FEED_STORE_POLL_INTERVAL;
        while committed_marker(&state) == marker
            && tokio::time::Instant::now() < deadline
            && tokio::time::Instant::now() < store_poll
        {
            tokio::time::sleep(FEED_POLL_INTERVAL).await;
        }
    }
    if waited {
        // The caller was checked when the request came in, up to `wait` ago: an admin blocked,
        // logged out or stripped of `events:read` meanwhile gets no event committed since.
        admin.still(&state, caller).await?;
    }
    let mut next = position.clone();
    if next.default_after > 0 {
        // A bare seq stands for every shard: name each, so the answer's position keeps it
        // for shards this page did not reach.
        for shard in events_store.event_shards().await? {
            next.advance(shard, 0);
        }
    }
    let mut items = Vec::with_capacity(events.len());
    for event in &events {
        next.advance(event.shard, event.seq);
        items.push(envelope(event)?);
    }
    if events.len() < limit as usize {
        next.reach(&heads);
    }
    let body = format!("{{\"items\":[{}],\"next_after\":\"{}\"}}", items.join(","), next.text());
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rust_decimal::Decimal;
    use tally_engine::{
        AccountId, Currency, Timestamp, Transfer, TransferId, TransferKind, TransferRequest, TransferStatus,
    };

    use super::*;
    use crate::transfers::transfer_answer;

    fn completed() -> Transfer {
        let mut transfer = Transfer::start(TransferRequest {
            id: TransferId::from_u128(1),
            kind: TransferKind::Internal,
            source: AccountId::from_u128(2),
            destination: AccountId::from_u128(3),
            amount: Decimal::new(12_550, 2),
            currency: Currency::USD,
            fee: Decimal::ZERO,
            reference: Some("invoice \"7\"".into()),
            description: None,
            beneficiary: None,
            initiated_by: None,
            created_at: Timestamp::from_micros(1_714_564_800_123_456),
            metadata: Default::default(),
        });
        transfer.status = TransferStatus::Completed;
        transfer.completed_at = Some(Timestamp::from_micros(1_714_564_800_223_456));
        transfer
    }

    async fn answer(transfer: &Transfer) -> (axum::http::StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let (parts, body) = transfer_answer(transfer, false).unwrap().into_parts();
        (parts.status, parts.headers, axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec())
    }

    #[tokio::test]
    async fn the_answer_to_a_transfer_is_the_text_its_event_rendered_and_what_rendering_it_anew_gives() {
        let transfer = completed();
        let rendered_anew = answer(&completed()).await;
        // The journal writer renders the record, a clone sharing the transfer's slot.
        let data =
            JsonEvents.encode(EventType::TransferCompleted, &Record::Transfer(Box::new(transfer.clone()))).unwrap();
        assert_eq!(transfer.rendering.get(&transfer).as_deref(), Some(data.as_str()), "the event's text is kept");
        let reused = answer(&transfer).await;
        assert_eq!(reused, rendered_anew, "status, headers and body byte for byte");
        assert_eq!(reused.2, data.as_bytes());
    }

    #[tokio::test]
    async fn a_transfer_changed_after_its_event_was_rendered_is_rendered_anew() {
        let mut transfer = completed();
        JsonEvents.encode(EventType::TransferCompleted, &Record::Transfer(Box::new(transfer.clone()))).unwrap();
        transfer.reference = Some("changed".into());
        let mut fresh = completed();
        fresh.reference = Some("changed".into());
        assert_eq!(answer(&transfer).await, answer(&fresh).await);
    }
}
