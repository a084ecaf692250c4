//! `POST /v1/transfers/batch {transfers:[...], atomic?}` → `200 {results:[{index, status,
//! transfer?, error?}]}`.
//!
//! Each item is the body of `POST /v1/transfers` and goes through the same `plan` (ownership,
//! amount, type); `status` is what that item alone would have answered (`201`, `202`, `4xx`,
//! `503`) and `error` its problem object. A malformed item fails alone (`400` in its result),
//! unless the batch is atomic.
//!
//! Non-atomic items run through `run_transfer` concurrently, at most
//! `BATCH_ITEMS_IN_FLIGHT_MAX` at once. Atomic batches go to `Engine::transfer_batch_atomic`
//! (all or none; see `tally_actors::batch`).
//!
//! Idempotency: the batch's `Idempotency-Key` K gives item i the key `"K #i"` (a space never
//! occurs in a client's key, so it meets no single transfer's key), and every item carries
//! the fingerprint of the whole batch. A batch holds the claim `" batch K"` while it runs, so a
//! concurrent duplicate waits and then replays. A repeat finds each item's transfer under its
//! key (one transfer per item, however often it is replayed); a different body finds a
//! different fingerprint: `409 IDEMPOTENCY_KEY_REUSED`. Items refused before a transfer
//! existed (validation) have nothing stored and are planned and refused again on a repeat.
//! An item naming a saved beneficiary that has since been deleted resolves to the payee it
//! named (so the batch's fingerprint is unchanged) and may only replay its item's transfer:
//! without one it is refused `404` (see `beneficiaries.rs`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tally_actors::{AtomicBatch, BatchItem, TransferError};
use tally_engine::{ErrorCode, Idempotency, Transfer, TransferRequest, TransferStatus};

use crate::auth::Caller;
use crate::auth::api_keys::{Scoped, TransfersWrite};
use crate::auth::stepup::{StepUp, TransfersCreate};
use crate::beneficiaries::SavedPayees;
use crate::digest::sha256_hex;
use crate::input;
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::transfers::{Plan, TransferBody, fingerprint, plan, run_transfer};
use crate::views::TransferView;

/// Items in one batch (API.md). 8,190 items of ~400 bytes fit the 4 MiB body limit, and one
/// batch's sagas stay a quarter of the engine's 32,768 in flight.
pub const BATCH_ITEMS_MAX: usize = 8_190;

/// Items of one non-atomic batch planned or run at once. Each is a few actor round trips and
/// a durable ack, so a batch's rate is this many over the commit latency. Measured with
/// `scripts/bench` batch (8 batches of 1,000 in flight, adjacent runs, 2026-12-04): 64 ran
/// 17,332 transfers/s, 128 20,431/s, 256 22,555/s. 128, not 256, because a batch's items
/// usually share one source account, whose mailbox takes 1,024 messages before refusing
/// (`ActorConfig::mailbox_capacity_max`): eight batches from one account at once still fit.
/// It also keeps one batch from taking 8,190 saga permits.
pub const BATCH_ITEMS_IN_FLIGHT_MAX: usize = 128;

/// Store look-ups of a batch's item keys at once. On Postgres the store answers those in flight
/// together in one query (`key_lookups.rs`), so many in flight means few queries.
const KEY_LOOKUPS_IN_FLIGHT_MAX: usize = 1024;

const ROUTE: &str = "POST /v1/transfers/batch";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// Raw items, so that one malformed item fails alone instead of the whole body. Kept as
    /// the client's text, not as `Value`s: a `Value` keeps the last of two equal keys, so an
    /// item with `amount` or a metadata key given twice would pass where `POST /v1/transfers`
    /// refuses the same body.
    #[schema(value_type = Vec<Object>)]
    pub transfers: Vec<Box<RawValue>>,
    pub atomic: Option<bool>,
}

/// One item's result. The answer is written by `answer_body`, not by serde: `transfer` is the
/// transfer's JSON as rendered once for its event (see `of_transfer`).
#[derive(Debug, utoipa::ToSchema)]
struct ItemResult {
    index: usize,
    status: u16,
    #[schema(value_type = Option<TransferView>)]
    transfer: Option<Arc<str>>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, utoipa::ToSchema)]
struct BatchAnswer {
    results: Vec<ItemResult>,
}

/// `{"results":[{"index":…,"status":…,"transfer":…|"error":…},…]}`: the bytes serde would
/// write for `BatchAnswer` with `transfer` as a `TransferView` (absent members left out), the
/// transfers' text copied in as rendered. Under `scripts/callgrind` (batches of 1,000)
/// serialising each item's view again through serde was ~12,000 instructions per transfer of
/// ~133,000.
fn answer_body(answer: &BatchAnswer) -> Result<Vec<u8>, ApiError> {
    let rendered: usize =
        answer.results.iter().map(|item| item.transfer.as_ref().map_or(200, |text| text.len() + 40)).sum();
    let mut out = Vec::with_capacity(rendered + 16);
    out.extend_from_slice(b"{\"results\":[");
    for (i, item) in answer.results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"index\":");
        out.extend_from_slice(itoa::Buffer::new().format(item.index).as_bytes());
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(item.status).as_bytes());
        if let Some(transfer) = &item.transfer {
            out.extend_from_slice(b",\"transfer\":");
            out.extend_from_slice(transfer.as_bytes());
        }
        if let Some(error) = &item.error {
            out.extend_from_slice(b",\"error\":");
            serde_json::to_writer(&mut out, error).map_err(ApiError::internal)?;
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

fn failed(index: usize, error: &ApiError) -> ItemResult {
    let (status, error) = error.to_problem();
    ItemResult { index, status, transfer: None, error: Some(error) }
}

/// The result of an item whose transfer exists: `201` completed, `202` still pending, or the
/// failure it ended with (as `transfer_answer` answers a single transfer).
fn of_transfer(index: usize, transfer: &Transfer) -> Result<ItemResult, ApiError> {
    if transfer.status == TransferStatus::Failed {
        let code = transfer.failure_reason.unwrap_or(ErrorCode::Internal);
        return Ok(failed(index, &ApiError::new(code, format!("transfer {} failed: {}", transfer.id, code.as_str()))));
    }
    let status = if transfer.status == TransferStatus::Completed { StatusCode::CREATED } else { StatusCode::ACCEPTED };
    // The journal writer rendered this very state for its event, as for a single transfer's
    // answer (`transfers::transfer_answer`).
    let text = match transfer.rendering.get(transfer) {
        Some(text) => text,
        None => Arc::from(TransferView::json(transfer)?),
    };
    Ok(ItemResult { index, status: status.as_u16(), transfer: Some(text), error: None })
}

fn of_outcome(index: usize, outcome: Result<Transfer, TransferError>) -> Result<ItemResult, ApiError> {
    match outcome {
        Ok(transfer) => of_transfer(index, &transfer),
        Err(error) => Ok(failed(index, &ApiError::from(error))),
    }
}

/// Item i's key under batch key `key`.
fn item_key(key: &str, index: usize) -> String {
    format!("{key} #{index}")
}

/// Plans one raw item as `POST /v1/transfers` would.
async fn plan_item(
    state: &AppState,
    caller: Caller,
    payees: &SavedPayees<'_>,
    raw: &RawValue,
) -> Result<Plan, ApiError> {
    if !crate::json::is_object(raw.get().as_bytes()) {
        return Err(ApiError::new(ErrorCode::ValidationError, "invalid item: expected a JSON object"));
    }
    let body = crate::json::parse::<TransferBody>(raw.get().as_bytes())?;
    // A batch is one decision about many transfers; a per-item deadline would make an atomic
    // batch's items end at different times after being decided together. Each item's type's
    // `pending_timeout_secs` applies instead (docs/ledger-views.md "Pending expiry").
    if body.pending_expires_in.is_some() {
        return Err(ApiError::field(
            "pending_expires_in",
            "not accepted on batch items; the transfer type's pending_timeout_secs applies",
        ));
    }
    plan(state.engine()?, caller, &body, payees).await
}

/// The fingerprint of the whole batch: every item as written, canonicalised (re-serialised, so
/// that a retry differing only in spacing or key order still matches), and the `atomic` flag.
///
/// It depends on the body alone. It was made from each item as planned (a saved beneficiary
/// resolved, the amount at its currency's scale), falling back to the item as written where
/// planning failed; but planning can fail for a passing reason (the store or an account
/// briefly unavailable) while a plain batch's other items run and keep the key, so the
/// identical retry, planned in full, was refused `409` for ever. Batches stored under that
/// older fingerprint still replay (`legacy_batch_fingerprint`).
///
/// The hashed text is `{"atomic":…,"items":["<item>",…],"v":2}`, each item's canonical text
/// as a JSON string: what `serde_json::json!` of those three members wrote, which the stored
/// fingerprints were made from (a test pins the two together). It is written here into one
/// buffer: the `json!` value moved every item's text into a `String` of its own first.
fn batch_fingerprint(atomic: bool, raw: &[Box<RawValue>]) -> Result<String, ApiError> {
    let mut canonical = Vec::with_capacity(raw.iter().map(|item| item.get().len() + 16).sum::<usize>() + 32);
    canonical.extend_from_slice(if atomic {
        b"{\"atomic\":true,\"items\":["
    } else {
        b"{\"atomic\":false,\"items\":["
    });
    for (i, item) in raw.iter().enumerate() {
        if i > 0 {
            canonical.push(b',');
        }
        // Written in one pass where it can be (`json::canonical`), else through `Value`. An
        // item `Value` cannot read, though the body's parse took it (nested past serde_json's
        // recursion limit, a number past `f64`'s range, a lone surrogate escape: its plan
        // refuses it too), counts as written: the batch answered 500 for it before, so no
        // stored fingerprint has one, and its identical retry matches.
        if !crate::json::canonical::write_as_string(item.get(), &mut canonical) {
            let text = canonical_item(item).unwrap_or_else(|_| item.get().to_owned());
            serde_json::to_writer(&mut canonical, &text).map_err(ApiError::internal)?;
        }
    }
    canonical.extend_from_slice(b"],\"v\":2}");
    Ok(sha256_hex(&canonical))
}

/// The fingerprint batches were stored under before `batch_fingerprint` (see there): accepted
/// on a retry so that a batch a previous version stored still replays.
fn legacy_batch_fingerprint(
    atomic: bool,
    raw: &[Box<RawValue>],
    planned: &[Result<Plan, ApiError>],
) -> Result<String, ApiError> {
    let mut items = Vec::with_capacity(planned.len());
    for (raw, plan) in raw.iter().zip(planned) {
        items.push(match plan {
            Ok(plan) => fingerprint(ROUTE, &plan.request)?,
            // As in `batch_fingerprint`: an item `Value` cannot read counts as written.
            Err(_) => canonical_item(raw).unwrap_or_else(|_| raw.get().to_owned()),
        });
    }
    let canonical = serde_json::json!({ "atomic": atomic, "items": items });
    serde_json::to_vec(&canonical).map(|bytes| sha256_hex(&bytes)).map_err(ApiError::internal)
}

/// One item as written, re-serialised: object keys in order, no spacing.
fn canonical_item(raw: &RawValue) -> Result<String, ApiError> {
    serde_json::from_str::<serde_json::Value>(raw.get())
        .and_then(|value| serde_json::to_string(&value))
        .map_err(ApiError::internal)
}

/// `POST /v1/transfers/batch`.
#[utoipa::path(
    post,
    path = "/v1/transfers/batch",
    tag = "transfers",
    request_body = BatchBody,
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for this operation type (POST /v1/auth/step-up)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key and body answer as the first time (with Idempotent-Replayed: true when an item answers the transfer an earlier request under the key made); a different body is 409 IDEMPOTENCY_KEY_REUSED. The body is compared as JSON values: key order and spacing do not count, every other difference (an amount written \"5\" then \"5.00\") does. In a plain (not atomic) batch, an item answered 503 that moved no money, or one that failed before it became a transfer, keeps no key: a retry of the batch runs that item afresh. An atomic batch that did nothing (an item refused) keeps no key either: its retry runs the whole batch again")),
    responses((status = 200, description = "One result per item, in order", body = BatchAnswer)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<TransfersWrite>,
    // A batch moves money as `POST /v1/transfers` does, so it needs the same step-up.
    _step_up: StepUp<TransfersCreate>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BatchBody>,
) -> Result<Response, ApiError> {
    let count = body.transfers.len();
    if count == 0 {
        return Err(ApiError::field("transfers", "must hold at least one transfer"));
    }
    if count > BATCH_ITEMS_MAX {
        return Err(ApiError::field("transfers", format!("must hold at most {BATCH_ITEMS_MAX} transfers")));
    }
    let key = input::idempotency_key(&headers)?;
    // Runs to the end even if the client goes away: the batch's claim on its key, and an
    // atomic batch's phases, must not be cut off half way, or a retry could find items whose
    // records are not yet durable and run them a second time. The task keeps the request's
    // id, which each item's error carries.
    let batch = crate::problem::REQUEST_ID.scope(crate::problem::request_id(), run_batch(state, caller, body, key));
    tokio::spawn(batch).await.map_err(ApiError::internal)?
}

/// The batch after its request was read: plan, claim the key, run the items.
async fn run_batch(
    state: AppState,
    caller: Caller,
    body: BatchBody,
    key: Option<Arc<str>>,
) -> Result<Response, ApiError> {
    let count = body.transfers.len();
    let atomic = body.atomic.unwrap_or(false);
    let engine = state.engine()?;
    let payees = SavedPayees::new(&state, caller.user_id);
    let planned: Vec<Result<Plan, ApiError>> = collect_sized(
        futures::stream::iter(0..count)
            .map(|index| plan_item(&state, caller, &payees, &body.transfers[index]))
            .buffered(BATCH_ITEMS_IN_FLIGHT_MAX),
        count,
    )
    .await;
    let scope = caller.user_id.as_uuid();

    // Under a key: hold the batch's claim, refuse a different body, find what a first run made.
    let mut _claim = None;
    let mut keys: Vec<Option<Idempotency>> = vec![None; count];
    let mut existing: Vec<Option<Transfer>> = vec![None; count];
    if let Some(key) = &key {
        // One text shared by every item's key.
        let batch_print: Arc<str> = batch_fingerprint(atomic, &body.transfers)?.into();
        _claim = Some(engine.claim_key(scope, format!(" batch {key}")).await);
        // Each item's key, made once for its look-up and its transfer.
        let item_keys: Vec<Arc<str>> = (0..count).map(|index| item_key(key, index).into()).collect();
        let found: Vec<Result<Option<Transfer>, ApiError>> = collect_sized(
            futures::stream::iter(0..count)
                .map(|index| {
                    let item_key = Arc::clone(&item_keys[index]);
                    // The store is asked only if the key filter cannot rule the item's key out.
                    async move { Ok(engine.transfer_under_key(scope, &item_key).await?) }
                })
                .buffered(KEY_LOOKUPS_IN_FLIGHT_MAX),
            count,
        )
        .await;
        // Made at most once: a batch stored under the older fingerprint has it on every item.
        let mut legacy_print: Option<String> = None;
        for ((index, found), item_key) in found.into_iter().enumerate().zip(item_keys) {
            if let Some(transfer) = found? {
                let stored = transfer.idempotency.as_ref().map(|i| &*i.fingerprint);
                let same = match stored {
                    Some(stored) if stored == &*batch_print => true,
                    Some(stored) => {
                        if legacy_print.is_none() {
                            legacy_print = Some(legacy_batch_fingerprint(atomic, &body.transfers, &planned)?);
                        }
                        legacy_print.as_deref() == Some(stored)
                    }
                    None => false,
                };
                if !same {
                    return Err(ApiError::from(TransferError::IdempotencyKeyReused));
                }
                existing[index] = Some(transfer);
            }
            keys[index] = Some(Idempotency { scope, key: item_key, fingerprint: Arc::clone(&batch_print) });
        }
    }
    // An item naming a deleted beneficiary only replays what a first run made of it.
    let planned: Vec<Result<TransferRequest, ApiError>> = planned
        .into_iter()
        .zip(&existing)
        .map(|(plan, existing)| match plan {
            Ok(Plan { payee_deleted: true, .. }) if existing.is_none() => Err(ApiError::not_found("beneficiary")),
            Ok(plan) => Ok(plan.request),
            Err(error) => Err(error),
        })
        .collect();

    // A repeat of an earlier request under the key: at least one item answers what that
    // request made (docs/api-decisions.md, "Batch results").
    let replayed = existing.iter().any(Option::is_some);
    let results = if atomic {
        run_atomic(&state, planned, keys, existing).await?
    } else {
        let runs = planned.into_iter().zip(keys.into_iter().zip(existing)).enumerate().map(
            |(index, (plan, (key, existing)))| {
                let state = state.clone();
                async move {
                    match (plan, existing, key) {
                        // A repeat: the item as it is now.
                        (_, Some(first), _) => {
                            let transfer =
                                state.engine()?.load_transfer(first.id).await.ok().flatten().unwrap_or(first);
                            of_transfer(index, &transfer)
                        }
                        // The batch's look-up found no transfer under the item's key, and the
                        // batch's claim covers it: no second look-up.
                        (Ok(request), None, Some(key)) => {
                            match state.engine()?.transfer_under_new_key(request, key).await {
                                Ok(transfer) => of_transfer(index, &transfer),
                                Err(error) => Ok(failed(index, &ApiError::from(error))),
                            }
                        }
                        (Ok(request), None, None) => match run_transfer(&state, request, None).await {
                            Ok((transfer, _replayed)) => of_transfer(index, &transfer),
                            Err(error) => Ok(failed(index, &error)),
                        },
                        (Err(error), None, _) => Ok(failed(index, &error)),
                    }
                }
            },
        );
        let results: Vec<Result<ItemResult, ApiError>> =
            collect_sized(futures::stream::iter(runs).buffered(BATCH_ITEMS_IN_FLIGHT_MAX), count).await;
        results.into_iter().collect::<Result<Vec<_>, _>>()?
    };
    let body = answer_body(&BatchAnswer { results })?;
    let mut response =
        ([(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"))], body)
            .into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `stream`'s `count` items in order, in a vector sized for them up front: the items are
/// large, and a vector grown by doubling would move them all once or twice more (vectors
/// growing, these among others, were 1.4 % of the server's samples under `scripts/bench`'s
/// `batch`).
async fn collect_sized<T>(stream: impl futures::Stream<Item = T>, count: usize) -> Vec<T> {
    stream
        .fold(Vec::with_capacity(count), |mut all, item| async move {
            all.push(item);
            all
        })
        .await
}

/// An atomic batch: every item planned, else nothing happens; a repeat answers with what the
/// first run recorded; otherwise the engine runs it all or none.
async fn run_atomic(
    state: &AppState,
    planned: Vec<Result<TransferRequest, ApiError>>,
    keys: Vec<Option<Idempotency>>,
    existing: Vec<Option<Transfer>>,
) -> Result<Vec<ItemResult>, ApiError> {
    let engine = state.engine()?;
    // A first run that got past its holds recorded every item; a repeat answers with them as
    // they are now. A first run that aborted recorded none, and runs again. The replay comes
    // before this run's plans are looked at: an item whose plan fails now for a passing reason
    // (a read that failed) must not make an applied batch answer "nothing was applied", which
    // a client would take as leave to pay again under a new key.
    if existing.iter().any(Option::is_some) {
        let mut results = Vec::with_capacity(existing.len());
        for (index, transfer) in existing.into_iter().enumerate() {
            let Some(transfer) = transfer else {
                results.push(failed(index, &ApiError::internal("an atomic batch's item is missing on replay")));
                continue;
            };
            let newest = engine.load_transfer(transfer.id).await?.unwrap_or(transfer);
            results.push(of_transfer(index, &newest)?);
        }
        return Ok(results);
    }
    let invalid: Vec<usize> = planned.iter().enumerate().filter(|(_, plan)| plan.is_err()).map(|(i, _)| i).collect();
    if !invalid.is_empty() {
        let skipped = not_applied(&invalid);
        return Ok(planned
            .iter()
            .enumerate()
            .map(|(index, plan)| match plan {
                Err(error) => failed(index, error),
                Ok(_) => failed(index, &skipped),
            })
            .collect());
    }
    let items: Vec<BatchItem> = planned
        .into_iter()
        .zip(keys)
        .filter_map(|(plan, key)| plan.ok().map(|request| BatchItem { request, key }))
        .collect();
    let count = items.len();
    match engine.transfer_batch_atomic(items).await? {
        AtomicBatch::Ran(outcomes) => {
            outcomes.into_iter().enumerate().map(|(index, outcome)| of_outcome(index, outcome)).collect()
        }
        AtomicBatch::Aborted(failures) => {
            let skipped = not_applied(&failures.iter().map(|(index, _)| *index).collect::<Vec<_>>());
            let mut results: Vec<ItemResult> = (0..count).map(|index| failed(index, &skipped)).collect();
            for (index, error) in failures {
                if let Some(slot) = results.get_mut(index) {
                    *slot = failed(index, &ApiError::from(error));
                }
            }
            Ok(results)
        }
    }
}

/// The error of an atomic batch's item that was not applied because others failed. `409
/// CONFLICT`: the item itself may be fine, but it conflicts with the batch's all-or-none rule.
fn not_applied(failed_items: &[usize]) -> ApiError {
    const LISTED_MAX: usize = 10;
    let listed: Vec<String> = failed_items.iter().take(LISTED_MAX).map(usize::to_string).collect();
    let more = if failed_items.len() > LISTED_MAX { ", ..." } else { "" };
    ApiError::new(
        ErrorCode::Conflict,
        format!("not applied: this atomic batch did nothing because item(s) {}{more} failed", listed.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rust_decimal_macros::dec;
    use serde::Serialize;
    use tally_engine::{AccountId, Currency, Metadata, Timestamp, TransferId, TransferKind};

    use super::*;

    /// The answer as serde wrote it before `answer_body`.
    #[derive(Serialize)]
    struct SerdeItem {
        index: usize,
        status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        transfer: Option<TransferView>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<serde_json::Value>,
    }

    fn transfer(n: u128, reference: &str) -> Transfer {
        let mut transfer = Transfer::start(TransferRequest {
            id: TransferId::from_u128(n),
            kind: TransferKind::Internal,
            source: AccountId::from_u128(n + 1),
            destination: AccountId::from_u128(n + 2),
            amount: dec!(12.30),
            currency: Currency::USD,
            fee: dec!(0.25),
            reference: Some(reference.into()),
            description: None,
            beneficiary: None,
            initiated_by: None,
            created_at: Timestamp::from_micros(1_714_564_800_123_456),
            metadata: Metadata::default(),
        });
        transfer.status = TransferStatus::Completed;
        transfer.completed_at = Some(Timestamp::from_micros(1_714_564_800_223_456));
        transfer
    }

    #[test]
    fn the_answer_is_the_bytes_serde_wrote() {
        let done = transfer(7, "invoice \"7\" \\ ✓");
        let mut pending = transfer(9, "");
        pending.status = TransferStatus::Pending;
        // One transfer rendered for its event already, one not: the answer is the same.
        done.rendering.set(&done, Arc::from(TransferView::json(&done).unwrap()));
        let error = ApiError::new(ErrorCode::InsufficientFunds, "not enough \"money\"");
        let results = vec![
            of_transfer(0, &done).unwrap(),
            failed(1, &error),
            of_transfer(2, &pending).unwrap(),
            of_transfer(3, &{
                let mut failed = transfer(11, "x");
                failed.status = TransferStatus::Failed;
                failed.failure_reason = Some(ErrorCode::InsufficientFunds);
                failed
            })
            .unwrap(),
        ];
        let serde_items: Vec<SerdeItem> = results
            .iter()
            .map(|item| SerdeItem {
                index: item.index,
                status: item.status,
                transfer: match item.index {
                    0 => Some(TransferView::of(&done).unwrap()),
                    2 => Some(TransferView::of(&pending).unwrap()),
                    _ => None,
                },
                error: item.error.clone(),
            })
            .collect();
        #[derive(Serialize)]
        struct SerdeAnswer {
            results: Vec<SerdeItem>,
        }
        let written = answer_body(&BatchAnswer { results }).unwrap();
        let serde = serde_json::to_vec(&SerdeAnswer { results: serde_items }).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(serde).unwrap());
    }

    #[test]
    fn the_batch_fingerprint_hashes_what_json_wrote() {
        let bodies = [
            r#"[{"type":"internal","amount":"1.00"}]"#,
            r#"[{"b":1,"a":{"z":[1,2,{"y":"\"q\"","x":null}],"c":"é\n"}}, {"amount": "5" , "type":"internal"}, 7, "text", null]"#,
            r#"[{}]"#,
        ];
        for body in bodies {
            let raw: Vec<Box<RawValue>> = serde_json::from_str(body).unwrap();
            for atomic in [false, true] {
                let items = raw.iter().map(|raw| canonical_item(raw)).collect::<Result<Vec<_>, _>>().unwrap();
                let canonical = serde_json::json!({ "atomic": atomic, "items": items, "v": 2 });
                let before = sha256_hex(&serde_json::to_vec(&canonical).unwrap());
                assert_eq!(batch_fingerprint(atomic, &raw).unwrap(), before, "{body} atomic={atomic}");
            }
        }
    }

    #[test]
    fn an_item_value_cannot_read_is_fingerprinted_as_written() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for item in [r#"{"amount":1e400}"#, r#"{"reference":"\ud800"}"#, &deep] {
            let body = format!(r#"[{item}, {{"amount":"1.00"}}]"#);
            let raw: Vec<Box<RawValue>> = serde_json::from_str(&body).unwrap();
            assert!(canonical_item(&raw[0]).is_err(), "{item}: Value reads it");
            let print = batch_fingerprint(false, &raw).unwrap();
            assert_eq!(batch_fingerprint(false, &raw).unwrap(), print, "{item}");
            let other: Vec<Box<RawValue>> = serde_json::from_str(&body.replace("1.00", "2.00")).unwrap();
            assert_ne!(batch_fingerprint(false, &other).unwrap(), print, "{item}");
        }
    }

    #[test]
    fn an_empty_answer_is_valid_json() {
        let written = answer_body(&BatchAnswer { results: Vec::new() }).unwrap();
        assert_eq!(written, br#"{"results":[]}"#);
    }
}
