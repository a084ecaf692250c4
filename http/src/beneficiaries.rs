//! Saved beneficiaries (API.md *1.1* "Ledger views"): `GET/POST /v1/beneficiaries` and
//! `GET/DELETE /v1/beneficiaries/{id}`, a customer's payees `{id, name, iban, created_at}`; and
//! `beneficiary_id` in place of an inline `beneficiary` on external transfers and batch items
//! (`SavedPayees`, used by `transfers::plan`).
//!
//! Decisions (API.md is silent; docs/ledger-views.md collects them):
//! - People only (a bearer token): an API key is refused `403`, as on every route that does
//!   not name a scope. Adding a payee is what an account takeover does first, so a machine
//!   key cannot do it; a key with `transfers:write` may still *pay* a saved beneficiary.
//! - The name follows the inline beneficiary's rules (trimmed, 1 to 140 characters, no control
//!   characters); the IBAN is checked (ISO 13616: mod 97 and its country's registered format, `iban.rs`) and kept in its electronic
//!   form (no spaces, upper case).
//! - At most `BENEFICIARIES_PER_USER_MAX` live beneficiaries per user (`409 CONFLICT` past
//!   it), and one per IBAN (`409 CONFLICT` for a second: so a replayed create is a `409` too).
//!   The bound is exact under concurrency (the store counts and inserts in one serialised step).
//! - There is no edit: a saved beneficiary never changes, so a `beneficiary_id` names one payee
//!   for good. Another user's beneficiary, an unknown id and a deleted one are `404` alike.
//! - `GET` lists every live beneficiary, newest first, unpaged (bounded by the per-user
//!   maximum), as `GET /v1/accounts` lists accounts. `GET /v1/beneficiaries/{id}` reads one
//!   (API.md names no such route; a created resource should be readable where its `201`'s
//!   `Location` points): the caller's live beneficiary, else `404` as for `DELETE`.
//! - A deletion keeps the row, marked deleted: a transfer made by `beneficiary_id` and retried
//!   under its Idempotency-Key after the deletion replays (`replay_only`), as API.md's
//!   idempotency rule asks; a *new* transfer to a deleted beneficiary is `404`.
//! - Creating and deleting are audited (`beneficiary.create`, `beneficiary.delete`) in the
//!   change's own transaction: a new payee is the first thing a fraud investigation looks for.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use tally_actors::Engine;
use tally_engine::transfer::Beneficiary;
use tally_engine::{Idempotency, UserId};
use tally_persistence::users::beneficiaries::{CreateBeneficiaryError, SavedBeneficiary};
use uuid::Uuid;

use crate::audit::{Actor, AuditContext, Event, record};
use crate::auth::Caller;
use crate::iban;
use crate::input::{self, IdPath};
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::transfers::{BENEFICIARY_NAME_LENGTH_MAX, BeneficiaryBody};
use crate::views::rfc3339;

/// Live beneficiaries one user may keep: a bank customer's payees fit in dozens, and the bound
/// keeps `GET /v1/beneficiaries` one unpaged answer.
pub const BENEFICIARIES_PER_USER_MAX: u32 = 100;

/// A saved payee.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BeneficiaryView {
    pub id: String,
    pub name: String,
    /// The electronic form: no spaces, upper case.
    pub iban: String,
    pub created_at: String,
}

impl BeneficiaryView {
    fn of(saved: &SavedBeneficiary) -> Result<BeneficiaryView, ApiError> {
        Ok(BeneficiaryView {
            id: saved.id.to_string(),
            name: saved.name.clone(),
            iban: saved.iban.clone(),
            created_at: rfc3339(saved.created_at)?,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BeneficiaryList {
    items: Vec<BeneficiaryView>,
}

/// `POST /v1/beneficiaries {name, iban}` → `201 {id, name, iban, created_at}`.
#[utoipa::path(
    post,
    path = "/v1/beneficiaries",
    tag = "beneficiaries",
    request_body = BeneficiaryBody,
    description = "Saves a payee for external transfers (`beneficiary_id` on `POST /v1/transfers` and batch items). \
                   The name is trimmed, 1 to 140 characters, no control characters; the IBAN is checked (mod 97, check digits 02 to 98, and the length and format its country registered with SWIFT) and \
                   stored without spaces in upper case. At most 100 live beneficiaries per user and one per IBAN: \
                   either bound answers `409 CONFLICT` (so repeating a create is a `409`). A saved beneficiary is \
                   never edited; save a new one. People only: API keys are refused `403`.",
    responses((status = 201, body = BeneficiaryView)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    context: AuditContext,
    ApiJson(body): ApiJson<BeneficiaryBody>,
) -> Result<Response, ApiError> {
    let name = input::required_text("name", &body.name, BENEFICIARY_NAME_LENGTH_MAX)?;
    let iban = iban::normalize(&body.iban).map_err(|message| ApiError::field("iban", message))?;
    let identity = state.identity();
    let saved = SavedBeneficiary {
        id: identity.ids.next_uuid(),
        user: caller.user_id,
        name,
        iban,
        created_at: identity.now(),
        deleted_at: None,
    };
    let entry = record(
        identity,
        &context,
        &Actor::of(&caller),
        Event::new("beneficiary.create")
            .target("beneficiary", saved.id)
            .subject(caller.user_id)
            .details(json!({"name": saved.name, "iban": saved.iban})),
    );
    match identity.beneficiaries.create_beneficiary(&saved, BENEFICIARIES_PER_USER_MAX, &entry).await {
        Ok(()) => Ok(crate::audit::audited(crate::accounts::created(
            format!("/v1/beneficiaries/{}", saved.id),
            BeneficiaryView::of(&saved)?,
        ))),
        Err(CreateBeneficiaryError::LimitReached(max)) => Err(ApiError::new(
            tally_engine::ErrorCode::Conflict,
            format!("a user may keep at most {max} beneficiaries; delete one first"),
        )),
        Err(CreateBeneficiaryError::IbanTaken) => {
            Err(ApiError::new(tally_engine::ErrorCode::Conflict, "a beneficiary with this IBAN is already saved"))
        }
        Err(CreateBeneficiaryError::Store(error)) => Err(error.into()),
    }
}

/// `GET /v1/beneficiaries` → `{items: [beneficiary]}`, newest first.
#[utoipa::path(
    get,
    path = "/v1/beneficiaries",
    tag = "beneficiaries",
    description = "The caller's saved beneficiaries, newest first, unpaged (at most 100). Deleted ones are not listed.",
    responses((status = 200, body = BeneficiaryList)),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<BeneficiaryList>, ApiError> {
    let saved = state.identity().beneficiaries.live_beneficiaries(caller.user_id, BENEFICIARIES_PER_USER_MAX).await?;
    let items = saved.iter().map(BeneficiaryView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(BeneficiaryList { items }))
}

/// `GET /v1/beneficiaries/{id}` → the caller's live beneficiary; another user's, unknown or
/// deleted → `404`.
#[utoipa::path(
    get,
    path = "/v1/beneficiaries/{id}",
    tag = "beneficiaries",
    params(("id" = uuid::Uuid, Path, description = "The beneficiary id")),
    description = "One of the caller's saved beneficiaries, as listed. Another user's, an unknown or a deleted \
                   beneficiary is `404` alike.",
    responses((status = 200, body = BeneficiaryView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<axum::Json<BeneficiaryView>, ApiError> {
    match state.identity().beneficiaries.beneficiary(caller.user_id, id).await? {
        Some(saved) if saved.deleted_at.is_none() => Ok(axum::Json(BeneficiaryView::of(&saved)?)),
        _ => Err(ApiError::not_found("beneficiary")),
    }
}

/// `DELETE /v1/beneficiaries/{id}` → `204`; another user's, unknown or already deleted → `404`.
#[utoipa::path(
    delete,
    path = "/v1/beneficiaries/{id}",
    tag = "beneficiaries",
    params(("id" = uuid::Uuid, Path, description = "The beneficiary id")),
    description = "Deletes a saved beneficiary: it is no longer listed and pays nobody new (`404` on a new transfer \
                   naming it). Transfers made by it keep the payee they recorded, and a transfer made by it and \
                   retried under its Idempotency-Key replays. Another user's, an unknown or an already deleted \
                   beneficiary is `404` alike.",
    responses((status = 204, description = "Deleted")),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    context: AuditContext,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let identity = state.identity();
    let entry = record(
        identity,
        &context,
        &Actor::of(&caller),
        Event::new("beneficiary.delete").target("beneficiary", id).subject(caller.user_id),
    );
    if identity.beneficiaries.delete_beneficiary(caller.user_id, id, identity.now(), &entry).await? {
        Ok(crate::audit::audited(StatusCode::NO_CONTENT.into_response()))
    } else {
        Err(ApiError::not_found("beneficiary"))
    }
}

/// How a transfer request names its payee: written out, or a saved beneficiary's id.
#[derive(Debug)]
pub(crate) enum Payee {
    Inline(Beneficiary),
    Saved(Uuid),
}

/// A caller's saved beneficiaries as one request resolves them: each id is read once per
/// request (a batch naming one beneficiary in 8,190 items asks the store once, or a few
/// times when its first look-ups race).
pub(crate) struct SavedPayees<'a> {
    state: &'a AppState,
    user: UserId,
    seen: Mutex<HashMap<Uuid, Option<SavedBeneficiary>>>,
}

impl<'a> SavedPayees<'a> {
    pub(crate) fn new(state: &'a AppState, user: UserId) -> SavedPayees<'a> {
        SavedPayees { state, user, seen: Mutex::new(HashMap::new()) }
    }

    fn remembered(&self, id: Uuid) -> Option<Option<SavedBeneficiary>> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned()
    }

    /// The payee of the caller's beneficiary `id`, and whether it has been deleted; `404` if
    /// the caller has no beneficiary with this id (never saved, or another user's).
    pub(crate) async fn resolve(&self, id: Uuid) -> Result<(Beneficiary, bool), ApiError> {
        let saved = match self.remembered(id) {
            Some(saved) => saved,
            None => {
                let saved = self.state.identity().beneficiaries.beneficiary(self.user, id).await?;
                self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, saved.clone());
                saved
            }
        };
        let saved = saved.ok_or_else(|| ApiError::not_found("beneficiary"))?;
        Ok((Beneficiary { name: saved.name, iban: saved.iban }, saved.deleted_at.is_some()))
    }
}

/// A request naming a deleted beneficiary may only replay: `Ok` if its Idempotency-Key
/// already made a transfer (the engine then answers with it, or `409` if the body differs),
/// `404` otherwise.
///
/// It holds the key's claim while it looks, as a transfer under the key does: a first request
/// still running holds it until its records are durable, so a retry that arrives meanwhile
/// finds its transfer in the store instead of answering `404` for a transfer that completes.
/// The claim is given back before the caller runs the replay, which claims the key again.
pub(crate) async fn replay_only(engine: &Engine, key: Option<&Idempotency>) -> Result<(), ApiError> {
    let Some(key) = key else { return Err(ApiError::not_found("beneficiary")) };
    let claim = engine.claim_key(key.scope, key.key.clone()).await;
    let found = engine.store().transfer_by_idempotency(key.scope, &key.key).await;
    // Nothing was recorded under the key here.
    claim.release(true).await;
    match found? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("beneficiary")),
    }
}
