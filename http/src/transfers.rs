//! `/v1/transfers`, `/v1/transfers/quote`, `/v1/transfers/{id}`, `/v1/transfers/{id}/cancel`
//! and `/v1/transfer-types`: a customer moves money out of their own accounts.
//!
//! A request becomes an engine `TransferRequest` here (`plan`): the source must be the
//! caller's (else `404`, as for accounts: existence does not leak), the amount is parsed in
//! the source account's currency, an `internal` transfer names a customer account, an
//! `external` one a beneficiary (inline, or a saved one by `beneficiary_id`: see
//! `beneficiaries.rs`) and pays out through the settlement account of the currency.
//! Every money-moving request then goes through `run_transfer`, the one call into the engine,
//! with the caller's `Idempotency-Key` if they sent one.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_actors::{Engine, EngineError};
use tally_engine::money::with_currency_scale;
use tally_engine::system_accounts::{is_system_account, settlement};
use tally_engine::transfer::Beneficiary;
use tally_engine::transfer_type::{PENDING_EXPIRY_SECS_MAX, PENDING_EXPIRY_SECS_MIN};
use tally_engine::{
    AccountId, Currency, ErrorCode, Idempotency, Transfer, TransferId, TransferKind, TransferRequest, TransferStatus,
    UserId,
};

use crate::accounts::owned_account_currency;
use crate::auth::Caller;
use crate::auth::api_keys::{Scoped, TransfersRead, TransfersWrite};
use crate::auth::stepup::{StepUp, TransfersCancel, TransfersCreate};
use crate::beneficiaries::{Payee, SavedPayees};
use crate::digest::sha256_hex;
use crate::iban;
use crate::input::{self, DESCRIPTION_LENGTH_MAX, IdPath, OptionalJson, REFERENCE_LENGTH_MAX};
use crate::json::{ApiJson, write};
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::{TransferView, money};

/// Longest beneficiary name (SEPA allows 70; card and SWIFT rails up to 140).
pub const BENEFICIARY_NAME_LENGTH_MAX: usize = 140;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeneficiaryBody {
    pub name: String,
    pub iban: String,
}

/// The body of `POST /v1/transfers` and `POST /v1/transfers/quote`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(format = Uuid)]
    pub source_account_id: String,
    #[schema(format = Uuid)]
    pub destination_account_id: Option<String>,
    pub beneficiary: Option<BeneficiaryBody>,
    /// A saved beneficiary of the caller (`POST /v1/beneficiaries`), instead of an inline
    /// `beneficiary` (exactly one of the two on an external transfer). Unknown, another
    /// user's, or deleted → `404 NOT_FOUND`; a transfer made by it records the payee's name
    /// and IBAN, so later deletion changes no transfer.
    #[schema(format = Uuid)]
    pub beneficiary_id: Option<String>,
    /// In the source account's currency, as a string.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("125.50"))]
    pub amount: String,
    pub reference: Option<String>,
    pub description: Option<String>,
    /// The client's own key-value pairs, stored with the transfer and shown wherever it is:
    /// at most 16 keys, each 1 to 64 ASCII letters, digits or `_ - . :` (case-sensitive), each
    /// value a string of 1 to 512 characters without control characters. `null` and `{}` are
    /// no metadata. Part of the request an `Idempotency-Key` fingerprints. A quote checks it
    /// as a transfer would and otherwise ignores it.
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    pub metadata: Option<crate::metadata::MetadataBody>,
    /// Seconds (an integer, 60 … 2,592,000) this transfer may wait `pending` for an admin
    /// before it ends `expired`, its hold released; it replaces the type's
    /// `pending_timeout_secs`. Counted from `created_at`; ignored by a transfer that completes
    /// at once. Part of the `Idempotency-Key` fingerprint. Not accepted on batch items (`400`):
    /// their type's timeout applies.
    #[schema(value_type = Option<u32>, minimum = 60, maximum = 2592000, examples(86400))]
    pub pending_expires_in: Option<serde_json::Value>,
}

/// `pending_expires_in` as written: an integer number of seconds in
/// `PENDING_EXPIRY_SECS_MIN..=PENDING_EXPIRY_SECS_MAX`. Taken as raw JSON so a string, a
/// fraction or a negative number is a `400` on this field, not a generic body error.
pub fn pending_expires_in(value: Option<&serde_json::Value>) -> Result<Option<u32>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let message = "must be an integer number of seconds from 60 to 2592000";
    if value.is_null() {
        return Ok(None);
    }
    let secs = value.as_u64().ok_or_else(|| ApiError::field("pending_expires_in", message))?;
    u32::try_from(secs)
        .ok()
        .filter(|secs| (PENDING_EXPIRY_SECS_MIN..=PENDING_EXPIRY_SECS_MAX).contains(secs))
        .map(Some)
        .ok_or_else(|| ApiError::field("pending_expires_in", message))
}

/// A UUID in a body field.
pub fn body_id(field: &str, text: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(text).map_err(|_| ApiError::field(field, "must be a UUID"))
}

/// The canonical form of a request that its `Idempotency-Key` fingerprint is taken over: the
/// request as understood (ids parsed, the amount at the currency's scale, text trimmed), not
/// as written, so `"10"` and `"10.00"` are the same request and a reordered body is too. The
/// payee is the resolved one (name and IBAN): a saved beneficiary named by `beneficiary_id`
/// and the same payee written inline are the same request, and a saved beneficiary never
/// changes, so its id always resolves to the payee the first request paid.
#[derive(Serialize)]
struct Canonical<'a> {
    route: &'a str,
    kind: &'a str,
    source: uuid::Uuid,
    destination: uuid::Uuid,
    beneficiary: Option<(&'a str, &'a str)>,
    amount: String,
    currency: &'a str,
    reference: Option<&'a str>,
    description: Option<&'a str>,
    /// Absent from the canonical form when not given, so fingerprints of requests made before
    /// pending expiry existed are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_expires_in: Option<u32>,
    /// Left out when empty, so a request without metadata keeps the fingerprint it had
    /// before metadata existed (a retry across the upgrade still replays).
    #[serde(skip_serializing_if = "no_pairs")]
    metadata: &'a [(String, String)],
}

fn no_pairs(pairs: &&[(String, String)]) -> bool {
    pairs.is_empty()
}

impl Canonical<'_> {
    /// `serde_json::to_vec(self)` written by hand: the same bytes
    /// (`the_canonical_form_written_by_hand_is_serdes`), without serde_json escaping ids and
    /// amounts byte by byte (under `scripts/callgrind` ~5,000 instructions per keyed
    /// transfer by serde, not counting the hash). The fingerprints of stored keys depend on
    /// these bytes: a field added to `Canonical` must be added here too, and the test fails
    /// until it is.
    fn json(&self) -> String {
        let mut out = String::with_capacity(320);
        out.push('{');
        write::field(&mut out, "route");
        write::plain(&mut out, self.route);
        write::field(&mut out, "kind");
        write::plain(&mut out, self.kind);
        write::field(&mut out, "source");
        write::uuid(&mut out, self.source);
        write::field(&mut out, "destination");
        write::uuid(&mut out, self.destination);
        write::field(&mut out, "beneficiary");
        match self.beneficiary {
            Some((name, iban)) => {
                out.push('[');
                write::text(&mut out, name);
                out.push(',');
                write::text(&mut out, iban);
                out.push(']');
            }
            None => out.push_str("null"),
        }
        write::field(&mut out, "amount");
        write::plain(&mut out, &self.amount);
        write::field(&mut out, "currency");
        write::plain(&mut out, self.currency);
        write::field(&mut out, "reference");
        write::option(&mut out, self.reference, write::text);
        write::field(&mut out, "description");
        write::option(&mut out, self.description, write::text);
        if let Some(secs) = self.pending_expires_in {
            write::field(&mut out, "pending_expires_in");
            out.push_str(&secs.to_string());
        }
        if !no_pairs(&self.metadata) {
            write::field(&mut out, "metadata");
            out.push('[');
            for (i, (key, value)) in self.metadata.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('[');
                write::text(&mut out, key);
                out.push(',');
                write::text(&mut out, value);
                out.push(']');
            }
            out.push(']');
        }
        out.push('}');
        out
    }
}

/// The hex SHA-256 of the canonical form of `request` on `route`.
pub fn fingerprint(route: &str, request: &TransferRequest) -> Result<String, ApiError> {
    fingerprint_expiring(route, request, None)
}

/// `fingerprint` of a request that names its own `pending_expires_in`.
pub fn fingerprint_expiring(
    route: &str,
    request: &TransferRequest,
    pending_expires_in: Option<u32>,
) -> Result<String, ApiError> {
    let canonical = Canonical {
        route,
        kind: request.kind.as_str(),
        source: request.source.as_uuid(),
        destination: request.destination.as_uuid(),
        beneficiary: request.beneficiary.as_ref().map(|b| (b.name.as_str(), b.iban.as_str())),
        amount: money(request.amount, request.currency),
        currency: request.currency.code(),
        reference: request.reference.as_deref(),
        description: request.description.as_deref(),
        metadata: request.metadata.pairs(),
        pending_expires_in,
    };
    Ok(sha256_hex(canonical.json().as_bytes()))
}

/// The caller's `Idempotency-Key` for `request` on `route`, scoped to `scope` (the caller).
pub fn idempotency(
    headers: &HeaderMap,
    scope: UserId,
    route: &str,
    request: &TransferRequest,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = input::idempotency_key(headers)? else { return Ok(None) };
    Ok(Some(Idempotency { scope: scope.as_uuid(), key, fingerprint: fingerprint(route, request)?.into() }))
}

/// Runs a transfer through the engine: the one place the API moves money. With a key, a
/// repeat of the same request answers with the original transfer (`replayed = true`), and a
/// different request under the same key is `409 IDEMPOTENCY_KEY_REUSED`.
pub async fn run_transfer(
    state: &AppState,
    request: TransferRequest,
    key: Option<Idempotency>,
) -> Result<(Transfer, bool), ApiError> {
    run_transfer_audited(state, request, key, None).await
}

/// `run_transfer` for an admin's money-moving request: `audit` is committed with the
/// transfer's outcome (`Engine::transfer_idempotent_audited`).
pub async fn run_transfer_audited(
    state: &AppState,
    request: TransferRequest,
    key: Option<Idempotency>,
    audit: Option<tally_engine::AuditRecord>,
) -> Result<(Transfer, bool), ApiError> {
    let engine = state.engine()?;
    engine.transfer_idempotent_audited(request, key, audit).await.map_err(ApiError::from)
}

/// The answer to a money-moving POST: `201` for a completed transfer, `202` for one still
/// waiting (pending an admin). A replay answers with the transfer as it is now, marked
/// `Idempotent-Replayed: true`; a replay of a transfer that failed answers with its failure,
/// as the original request did. `Location` is the customer's read of the transfer.
pub fn transfer_answer(transfer: &Transfer, replayed: bool) -> Result<Response, ApiError> {
    transfer_answer_at("/v1/transfers", transfer, replayed)
}

/// `transfer_answer` with `Location` under `collection`: an admin's adjustment points at the
/// admin's read (`/v1/admin/transfers/{id}`), since its caller is not the customer whose
/// route `/v1/transfers/{id}` is (that route answers `404` to anyone but the owner).
pub fn transfer_answer_at(collection: &str, transfer: &Transfer, replayed: bool) -> Result<Response, ApiError> {
    if transfer.status == TransferStatus::Failed {
        let code = transfer.failure_reason.unwrap_or(ErrorCode::Internal);
        return Err(ApiError::new(code, format!("transfer {} failed: {}", transfer.id, code.as_str())));
    }
    let status = if transfer.status == TransferStatus::Completed { StatusCode::CREATED } else { StatusCode::ACCEPTED };
    // The journal writer rendered this very state for its event; the answer is the same JSON.
    let text = match transfer.rendering.get(transfer) {
        Some(text) => text,
        None => std::sync::Arc::from(TransferView::json(transfer)?),
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        axum::body::Body::from(axum::body::Bytes::from_owner(Rendered(text))),
    )
        .into_response();
    let headers = response.headers_mut();
    // Written without `format!`'s machinery, and taken as it is: `from_str` would copy it.
    let mut location = String::with_capacity(collection.len() + 1 + uuid::fmt::Hyphenated::LENGTH);
    location.push_str(collection);
    location.push('/');
    location.push_str(transfer.id.as_uuid().hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
    if let Ok(location) = HeaderValue::try_from(location) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A transfer's rendered JSON as a response body, without copying it.
struct Rendered(std::sync::Arc<str>);

impl AsRef<[u8]> for Rendered {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A customer's request, checked and resolved: what the engine runs.
pub(crate) struct Plan {
    pub request: TransferRequest,
    /// The request names a saved beneficiary that has since been deleted. Such a request may
    /// only replay the transfer its Idempotency-Key made before the deletion (`replay_only`);
    /// anything else is `404`.
    pub payee_deleted: bool,
    /// The request's own `pending_expires_in`, checked.
    pub pending_expires_in: Option<u32>,
}

/// A customer's request, checked and resolved into what the engine runs. Checks in order:
/// the body's shape and fields (`400`), the source account (`404` unless the caller's), the
/// amount in its currency (`400`), then a saved beneficiary (`404`).
pub(crate) async fn plan(
    engine: &Engine,
    caller: Caller,
    body: &TransferBody,
    payees: &SavedPayees<'_>,
) -> Result<Plan, ApiError> {
    let kind = match body.kind.as_str() {
        "internal" => TransferKind::Internal,
        "external" => TransferKind::External,
        _ => return Err(ApiError::field("type", "must be \"internal\" or \"external\"")),
    };
    let source = AccountId::from_uuid(body_id("source_account_id", &body.source_account_id)?);
    let (destination_id, beneficiary) = match kind {
        TransferKind::Internal => {
            if body.beneficiary.is_some() {
                return Err(ApiError::field("beneficiary", "only external transfers have a beneficiary"));
            }
            if body.beneficiary_id.is_some() {
                return Err(ApiError::field("beneficiary_id", "only external transfers have a beneficiary"));
            }
            let Some(destination) = body.destination_account_id.as_deref() else {
                return Err(ApiError::field("destination_account_id", "an internal transfer needs a destination"));
            };
            let destination = AccountId::from_uuid(body_id("destination_account_id", destination)?);
            // Settlement, fees and FX clearing are not destinations: a customer paying the
            // settlement account directly would be an external payout that skips review.
            if is_system_account(destination) {
                return Err(ApiError::field("destination_account_id", "must be a customer account"));
            }
            (Some(destination), None)
        }
        _ => {
            if body.destination_account_id.is_some() {
                return Err(ApiError::field(
                    "destination_account_id",
                    "an external transfer pays a beneficiary, not an account",
                ));
            }
            match (body.beneficiary.as_ref(), body.beneficiary_id.as_deref()) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::field("beneficiary_id", "give beneficiary or beneficiary_id, not both"));
                }
                (None, None) => {
                    return Err(ApiError::field(
                        "beneficiary",
                        "an external transfer needs a beneficiary {name, iban} or a beneficiary_id",
                    ));
                }
                (Some(beneficiary), None) => {
                    let name =
                        input::required_text("beneficiary.name", &beneficiary.name, BENEFICIARY_NAME_LENGTH_MAX)?;
                    let iban = iban::normalize(&beneficiary.iban)
                        .map_err(|message| ApiError::field("beneficiary.iban", message))?;
                    (None, Some(Payee::Inline(Beneficiary { name, iban })))
                }
                (None, Some(id)) => (None, Some(Payee::Saved(body_id("beneficiary_id", id)?))),
            }
        }
    };
    let reference = input::shared_text("reference", body.reference.as_deref(), REFERENCE_LENGTH_MAX)?;
    let description = input::shared_text("description", body.description.as_deref(), DESCRIPTION_LENGTH_MAX)?;
    let metadata = crate::metadata::metadata(body.metadata.as_ref())?;
    let pending_expires_in = pending_expires_in(body.pending_expires_in.as_ref())?;
    let currency = owned_account_currency(engine, source, caller.user_id, "source account").await?;
    let amount = input::amount("amount", &body.amount, currency)?;
    let (beneficiary, payee_deleted) = match beneficiary {
        None => (None, false),
        Some(Payee::Inline(beneficiary)) => (Some(beneficiary), false),
        Some(Payee::Saved(id)) => {
            let (beneficiary, deleted) = payees.resolve(id).await?;
            (Some(beneficiary), deleted)
        }
    };
    let now = engine.now();
    let request = TransferRequest {
        id: engine.new_transfer_id_at(now),
        kind,
        source,
        destination: destination_id.unwrap_or_else(|| settlement(currency)),
        amount,
        currency,
        // The engine sets the fee from the fee rules when it prices the transfer.
        fee: with_currency_scale(Decimal::ZERO, currency),
        reference,
        description,
        beneficiary,
        initiated_by: Some(caller.user_id),
        created_at: now,
        metadata,
    };
    Ok(Plan { request, payee_deleted, pending_expires_in })
}

/// `POST /v1/transfers` → `201` completed or `202` pending transfer.
#[utoipa::path(
    post,
    path = "/v1/transfers",
    tag = "transfers",
    request_body = TransferBody,
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for this operation type (POST /v1/auth/step-up)"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key and body answer the transfer the first request made, as it stands now (a pending transfer decided since answers its new state), with Idempotent-Replayed: true; a different body is 409 IDEMPOTENCY_KEY_REUSED. A 503 that moved no money (an account overloaded or quarantined), or a 422 refusal before any money was held (type disabled, amount or verification limit, no FX rate), keeps no key: a retry under it is checked afresh. A transfer blocked by AML is kept failed with its flags under its key: a retry answers 422 TRANSFER_BLOCKED again")),
    responses((status = 201, description = "Completed", body = TransferView), (status = 202, description = "Pending an admin (manual execution or review)", body = TransferView)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<TransfersWrite>,
    _step_up: StepUp<TransfersCreate>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TransferBody>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let payees = SavedPayees::new(&state, caller.user_id);
    let Plan { request, payee_deleted, pending_expires_in } = plan(engine, caller, &body, &payees).await?;
    let route = "POST /v1/transfers";
    let key = match input::idempotency_key(&headers)? {
        None => None,
        Some(key) => Some(Idempotency {
            scope: caller.user_id.as_uuid(),
            key,
            fingerprint: fingerprint_expiring(route, &request, pending_expires_in)?.into(),
        }),
    };
    if payee_deleted {
        crate::beneficiaries::replay_only(engine, key.as_ref()).await?;
    }
    let (transfer, replayed) =
        engine.transfer_idempotent_expiring(request, key, pending_expires_in).await.map_err(ApiError::from)?;
    transfer_answer(&transfer, replayed)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Quote {
    amount: String,
    currency: &'static str,
    fee: String,
    fx_rate: Option<String>,
    destination_amount: String,
    destination_currency: &'static str,
    hold_amount: String,
    total_debited: String,
}

/// `POST /v1/transfers/quote` → what the same body would move, hold and cost. Nothing is
/// created, held or recorded. The checks that need no balance run as for a real transfer
/// (amount, ownership, type enabled, limits, fee rule, FX rate); funds are not checked, since
/// they can change before the transfer is sent. `hold_amount` = `total_debited` = amount +
/// fee, in the source currency; `destination_amount` is converted at `fx_rate` (truncated to
/// the destination's decimals) when the destination holds another currency.
#[utoipa::path(
    post,
    path = "/v1/transfers/quote",
    tag = "transfers",
    request_body = TransferBody,
    responses((status = 200, body = Quote)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn quote(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<TransfersWrite>,
    ApiJson(body): ApiJson<TransferBody>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let Plan { request, payee_deleted, .. } =
        plan(engine, caller, &body, &SavedPayees::new(&state, caller.user_id)).await?;
    // A deleted beneficiary pays nobody new; there is nothing to quote.
    if payee_deleted {
        return Err(ApiError::not_found("beneficiary"));
    }
    // A real transfer to a missing account fails at its credit step; a quote says so now.
    if request.kind == TransferKind::Internal {
        match engine.account(request.destination).await {
            Ok(_) => {}
            Err(EngineError::NotFound) => return Err(ApiError::not_found("destination account")),
            Err(other) => return Err(other.into()),
        }
    }
    // The very pricing the transfer runs (type settings, fee rule, FX rate and conversion),
    // so a quote is what the same body would do now.
    let transfer = engine.price(request).await?;
    // The verification limits need no balance either: what the transfer would be refused
    // for now (its amount against the user's level and this day's and month's usage).
    engine.check_limits(&transfer)?;
    let currency: Currency = transfer.currency;
    let total = transfer
        .total_debited()
        .map_err(|_| ApiError::new(ErrorCode::AmountLimitExceeded, "amount plus fee overflows"))?;
    Ok(axum::Json(Quote {
        amount: money(transfer.amount, currency),
        currency: currency.code(),
        fee: money(transfer.fee, currency),
        fx_rate: transfer.fx_rate.map(|rate| rate.normalize().to_string()),
        destination_amount: money(transfer.destination_amount, transfer.destination_currency),
        destination_currency: transfer.destination_currency.code(),
        hold_amount: money(total, currency),
        total_debited: money(total, currency),
    })
    .into_response())
}

/// Who may do what with a transfer besides its initiator and its source account's owner.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sight {
    /// Reading: its destination account's owner too (an incoming transfer or an admin's credit
    /// is in their listing, `GET /v1/transfers`, and reads the same way by id).
    Read,
    /// Acting on it (cancel): the paying side only.
    Act,
}

/// The transfer if `caller` may see it for `sight` (they initiated it, own its source
/// account, or for reading its destination account); `404` otherwise, exactly as for a
/// transfer that does not exist.
async fn visible_transfer(engine: &Engine, caller: Caller, id: TransferId, sight: Sight) -> Result<Transfer, ApiError> {
    let transfer = engine.load_transfer(id).await?.ok_or_else(|| ApiError::not_found("transfer"))?;
    if transfer.initiated_by == Some(caller.user_id) {
        return Ok(transfer);
    }
    let sides: &[AccountId] =
        if sight == Sight::Read { &[transfer.source, transfer.destination] } else { &[transfer.source] };
    for side in sides {
        match engine.account(*side).await {
            Ok(account) if account.owner == Some(caller.user_id) => return Ok(transfer),
            Ok(_) | Err(EngineError::NotFound) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Err(ApiError::not_found("transfer"))
}

/// `GET /v1/transfers/{id}` → the caller's transfer (sent, or received by one of their
/// accounts: as `GET /v1/transfers` lists them), or `404`.
#[utoipa::path(
    get,
    path = "/v1/transfers/{id}",
    tag = "transfers",
    params(("id" = uuid::Uuid, Path, description = "The transfer id")),
    responses((status = 200, body = TransferView)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<TransfersRead>,
    IdPath(id): IdPath,
) -> Result<axum::Json<TransferView>, ApiError> {
    let engine = state.engine()?;
    let transfer = visible_transfer(engine, caller, TransferId::from_uuid(id), Sight::Read).await?;
    Ok(axum::Json(TransferView::of(&transfer)?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub reason: Option<String>,
}

/// `POST /v1/transfers/{id}/cancel {reason?}` → `204`, the hold released; a transfer that is
/// not pending is `409 NOT_CANCELLABLE` (an `expired` one too; one past its
/// `pending_expires_at` expires then and is refused the same way). The reason goes to the log (there is no audit table
/// yet), not to the transfer.
#[utoipa::path(
    post,
    path = "/v1/transfers/{id}/cancel",
    tag = "transfers",
    request_body = Option<ReasonBody>,
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for this operation type (POST /v1/auth/step-up)"), ("id" = uuid::Uuid, Path, description = "The transfer id")),
    responses((status = 204, description = "Cancelled; the hold is released")),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Scoped { caller, .. }: Scoped<TransfersWrite>,
    _step_up: StepUp<TransfersCancel>,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let reason = input::text("reason", body.as_ref().and_then(|body| body.reason.as_deref()), DESCRIPTION_LENGTH_MAX)?;
    let engine = state.engine()?;
    let transfer = visible_transfer(engine, caller, TransferId::from_uuid(id), Sight::Act).await?;
    engine.cancel(transfer.id).await?;
    tracing::info!(transfer = %transfer.id, user = %caller.user_id, reason = reason.as_deref().unwrap_or(""), "transfer cancelled by its owner");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransferTypeView {
    code: &'static str,
    enabled: bool,
    execution_mode: &'static str,
    min_amount: Option<String>,
    max_amount: Option<String>,
    /// Seconds a pending transfer of this type waits for an admin before it ends `expired`
    /// (unless it names its own `pending_expires_in`); `null`: never.
    pending_timeout_secs: Option<u32>,
}

/// `GET /v1/transfer-types` → the types a customer can send, as configured now.
#[utoipa::path(
    get,
    path = "/v1/transfer-types",
    tag = "transfers",
    responses((status = 200, body = Vec<TransferTypeView>)),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn types(
    State(state): State<AppState>,
    _caller: Scoped<TransfersRead>,
) -> Result<axum::Json<Vec<TransferTypeView>>, ApiError> {
    let engine = state.engine()?;
    let views: Vec<TransferTypeView> = [TransferKind::Internal, TransferKind::External]
        .into_iter()
        .map(|kind| {
            let settings = engine.transfer_type(kind);
            TransferTypeView {
                code: kind.as_str(),
                enabled: settings.enabled,
                execution_mode: settings.execution_mode.as_str(),
                min_amount: settings.min_amount.map(|amount| amount.normalize().to_string()),
                max_amount: settings.max_amount.map(|amount| amount.normalize().to_string()),
                pending_timeout_secs: settings.pending_timeout_secs,
            }
        })
        .collect();
    Ok(axum::Json(views))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_canonical_form_written_by_hand_is_serdes() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            // xorshift: reproducible.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let texts = ["wrk", "invoice \"7\"", "back\\slash", "tab\tnew\nline\u{1}\u{1f}", "café ✓ 🙂", ""];
        let text = |n: u64| texts[(n % texts.len() as u64) as usize];
        let pairs: Vec<(String, String)> = (0..4).map(|k| (format!("key_{k}"), format!("{}v", text(k)))).collect();
        for i in 0..2_000_u64 {
            let amount = Decimal::new(i64::try_from(next() >> 4).unwrap(), (next() % 9) as u32);
            let canonical = Canonical {
                route: ["/v1/transfers", "/v1/transfers/batch"][(i % 2) as usize],
                kind: ["internal", "external"][(next() % 2) as usize],
                source: uuid::Uuid::from_u64_pair(next(), next()),
                destination: uuid::Uuid::from_u64_pair(next(), next()),
                beneficiary: (next() % 2 == 0).then(|| (text(next()), text(next()))),
                amount: money(amount, tally_engine::Currency::USD),
                currency: "USD",
                reference: (next() % 2 == 0).then(|| text(next())),
                description: (next() % 2 == 0).then(|| text(next())),
                pending_expires_in: (next() % 2 == 0).then(|| (next() % 100_000) as u32),
                metadata: &pairs[..(next() % 5) as usize],
            };
            assert_eq!(canonical.json().into_bytes(), serde_json::to_vec(&canonical).unwrap());
        }
    }

    #[test]
    fn a_fingerprint_is_the_one_stored_keys_were_made_with() {
        // A fingerprint stored before the canonical form was written by hand: a retry across
        // the upgrade must replay, so the bytes hashed must not change.
        let request = TransferRequest {
            id: tally_engine::TransferId::from_u128(9),
            kind: TransferKind::Internal,
            source: tally_engine::AccountId::from_u128(1),
            destination: tally_engine::AccountId::from_u128(2),
            amount: Decimal::new(1250, 2),
            currency: tally_engine::Currency::USD,
            fee: Decimal::ZERO,
            reference: Some("invoice \"7\"".into()),
            description: None,
            beneficiary: None,
            initiated_by: None,
            created_at: tally_engine::Timestamp::from_micros(0),
            metadata: Default::default(),
        };
        assert_eq!(
            fingerprint("/v1/transfers", &request).unwrap(),
            "b608d5bd1c4bbd2beb4131e995a5cecdd2f298ce6db1df2740b36d9dca89c170"
        );
    }
}
