//! Verification levels and limits (API.md *1.1*), configuration and display:
//! `GET /v1/admin/limits` (`limits:read`), `PUT /v1/admin/limits/{level}` (`limits:write`)
//! and `GET /v1/users/me/limits`. The limits live in the engine (`tally_actors::limits`),
//! loaded at start and replaced per level here (store first, audited in the same
//! transaction); the pure rules are `tally_engine::limits`.
//!
//! **Enforced in saga step 1** for transfers and batch items (`tally_actors::limits`): the
//! usage shown is the engine's in-memory counters, rebuilt from the ledger at start-up
//! (`main.rs`, `LimitsStore::load_usage`). Crypto withdrawals are checked at their start
//! (`tally_actors::crypto`). The OpenAPI descriptions and docs/ledger-views.md say so.
//!
//! Decisions (API.md is silent; docs/ledger-views.md collects them):
//! - A maximum is an amount of its currency as a transfer amount is: a string, positive, at
//!   most the currency's decimals and its per-transfer maximum; `null` or absent = no bound.
//!   They must nest: `per_transfer_max ≤ daily_max ≤ monthly_max` for each pair given.
//! - `PUT` replaces the level's whole set: a currency left out is unlimited. One entry per
//!   currency (a repeat is `400`), each with at least one maximum (an entry with none is `400`:
//!   leave the currency out instead). An unknown level in the path is `404`.
//! - Days and months are UTC (the day from midnight, the calendar month from the 1st), and
//!   usage is the sum of amounts in the source currency (fees not included), per currency:
//!   no conversion between currencies.
//! - `GET /v1/users/me/limits` lists the currencies the caller's level has limits in, and any
//!   other currency with usage this month (its maxima `null`), in the currency table's order.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tally_engine::Currency;
use tally_engine::limits::{Usage, UserLimits};
use tally_persistence::users::VerificationLevel;

use crate::audit::{Actor, AuditContext, Event, audited, record};
use crate::auth::permissions::{LimitsRead, LimitsWrite};
use crate::auth::{Authorized, Caller};
use crate::input;
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::money;

/// One currency's maxima in a `PUT` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitBody {
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub currency: String,
    /// The largest single amount; absent or `null` = no bound.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("1000.00"))]
    pub per_transfer_max: Option<String>,
    /// The largest sum of amounts in one UTC day.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub daily_max: Option<String>,
    /// The largest sum of amounts in one UTC calendar month.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub monthly_max: Option<String>,
}

/// The body of `PUT /v1/admin/limits/{level}`: the level's whole set.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LevelLimitsBody {
    pub limits: Vec<LimitBody>,
}

/// One currency's maxima, each `null` when there is no bound.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LimitView {
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub currency: &'static str,
    pub per_transfer_max: Option<String>,
    pub daily_max: Option<String>,
    pub monthly_max: Option<String>,
}

impl LimitView {
    fn of(currency: Currency, limits: &UserLimits) -> LimitView {
        let show = |value: Option<rust_decimal::Decimal>| value.map(|value| money(value, currency));
        LimitView {
            currency: currency.code(),
            per_transfer_max: show(limits.per_transfer_max),
            daily_max: show(limits.daily_max),
            monthly_max: show(limits.monthly_max),
        }
    }
}

/// A level's set of limits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LevelView {
    /// `none`, `basic`, `verified` or `enhanced`.
    pub level: &'static str,
    pub limits: Vec<LimitView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LevelList {
    /// Every level, lowest first, each with its set (empty: unlimited).
    pub items: Vec<LevelView>,
}

fn level_view(state: &AppState, level: VerificationLevel) -> Result<LevelView, ApiError> {
    let limits = state.engine()?.limits().of_level(level);
    Ok(LevelView {
        level: level.as_str(),
        limits: limits.iter().map(|(currency, limits)| LimitView::of(*currency, limits)).collect(),
    })
}

/// `GET /v1/admin/limits` (`limits:read`) → every level's limits.
#[utoipa::path(
    get,
    path = "/v1/admin/limits",
    tag = "admin",
    description = "The limits of every verification level (`none`, `basic`, `verified`, `enhanced`, in that order), \
                   each a list of `{currency, per_transfer_max, daily_max, monthly_max}` in the currency table's \
                   order; a `null` maximum, or a currency not listed, is no bound. Amounts are at the currency's \
                   scale. Days and months are UTC. Transfers and batch items are checked against the initiating \
                   user's level in saga step 1 (`422 VERIFICATION_LIMIT_EXCEEDED`, nothing held), crypto \
                   withdrawals against their owner's, in the asset.",
    responses((status = 200, body = LevelList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Authorized<LimitsRead>,
) -> Result<axum::Json<LevelList>, ApiError> {
    let items = VerificationLevel::ALL.into_iter().map(|level| level_view(&state, level)).collect::<Result<_, _>>()?;
    Ok(axum::Json(LevelList { items }))
}

/// The body's entries, checked in order: currency, the three maxima as amounts of it, their
/// nesting, at least one given, no currency twice.
fn checked_set(body: &LevelLimitsBody) -> Result<Vec<(Currency, UserLimits)>, ApiError> {
    let currencies = Currency::all().count();
    if body.limits.len() > currencies {
        return Err(ApiError::field("limits", format!("at most {currencies} entries, one per currency")));
    }
    let mut set: Vec<(Currency, UserLimits)> = Vec::with_capacity(body.limits.len());
    for (index, entry) in body.limits.iter().enumerate() {
        let field = |name: &str| format!("limits[{index}].{name}");
        let currency = input::currency(&field("currency"), &entry.currency)?;
        let amount =
            |name: &str, text: Option<&str>| text.map(|text| input::amount(&field(name), text, currency)).transpose();
        let per_transfer_max = amount("per_transfer_max", entry.per_transfer_max.as_deref())?;
        let daily_max = amount("daily_max", entry.daily_max.as_deref())?;
        let monthly_max = amount("monthly_max", entry.monthly_max.as_deref())?;
        let limits = UserLimits::new(currency, per_transfer_max, daily_max, monthly_max)
            .map_err(|error| ApiError::field(&field(error.field), error.message))?;
        if limits.is_unlimited() {
            return Err(ApiError::field(
                &field("currency"),
                "give at least one of per_transfer_max, daily_max, monthly_max (leave the currency out for no bound)",
            ));
        }
        if set.iter().any(|(earlier, _)| *earlier == currency) {
            return Err(ApiError::field(&field("currency"), format!("{} is listed twice", currency.code())));
        }
        set.push((currency, limits));
    }
    Ok(set)
}

/// `PUT /v1/admin/limits/{level} {limits:[...]}` (`limits:write`) → `200` the level's set as
/// now stored.
#[utoipa::path(
    put,
    path = "/v1/admin/limits/{level}",
    tag = "admin",
    params(("level" = String, Path, description = "none, basic, verified or enhanced")),
    request_body = LevelLimitsBody,
    description = "Replaces the level's whole set of limits (a currency left out is unlimited; `{\"limits\": []}` \
                   clears the level). Each entry names a currency once and at least one maximum; a maximum is an \
                   amount string of its currency (positive, at most its decimals and its per-transfer maximum), \
                   and they nest: `per_transfer_max ≤ daily_max ≤ monthly_max` for each pair given. Stored first \
                   (audited as `limits.update` in the same transaction), then in effect. An unknown level is \
                   `404`. In effect for the next transfer's step 1 (usage already counted stays counted).",
    responses((status = 200, body = LevelView)),
    security(("bearer" = []))
)]
pub async fn put_level(
    State(state): State<AppState>,
    admin: Authorized<LimitsWrite>,
    context: AuditContext,
    crate::input::TextPath(level): crate::input::TextPath,
    ApiJson(body): ApiJson<LevelLimitsBody>,
) -> Result<Response, ApiError> {
    let level = VerificationLevel::parse(&level).ok_or_else(|| ApiError::not_found("verification level"))?;
    let set = checked_set(&body)?;
    let engine = state.engine()?;
    let identity = state.identity();
    let details: Vec<LimitView> = set.iter().map(|(currency, limits)| LimitView::of(*currency, limits)).collect();
    let entry = record(
        identity,
        &context,
        &Actor::user(admin.admin_id()),
        Event::new("limits.update").target("verification_level", level.as_str()).details(json!({
            "limits": details.iter().map(|view| json!({
                "currency": view.currency,
                "per_transfer_max": view.per_transfer_max,
                "daily_max": view.daily_max,
                "monthly_max": view.monthly_max,
            })).collect::<Vec<_>>(),
        })),
    );
    engine.limits().replace_level(identity.limits.as_ref(), level, set, identity.now(), &entry).await.map_err(
        |error| match error {
            tally_actors::LimitsError::Invalid { field, message } => ApiError::field(field, message),
            tally_actors::LimitsError::Store(error) => ApiError::from(error),
        },
    )?;
    Ok(audited(axum::Json(level_view(&state, level)?).into_response()))
}

/// One currency of the caller's limits, with what they used of it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MyLimitView {
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub currency: &'static str,
    pub per_transfer_max: Option<String>,
    pub daily_max: Option<String>,
    pub monthly_max: Option<String>,
    /// Sum of amounts in this currency today (UTC).
    pub used_today: String,
    /// Sum of amounts in this currency this calendar month (UTC).
    pub used_this_month: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MyLimits {
    /// `none`, `basic`, `verified` or `enhanced`.
    pub verification_level: &'static str,
    pub limits: Vec<MyLimitView>,
}

/// `GET /v1/users/me/limits` → the caller's level, its limits and their usage.
#[utoipa::path(
    get,
    path = "/v1/users/me/limits",
    tag = "users",
    description = "The caller's verification level and, per currency, its maxima (`null` = no bound) with what the \
                   caller used today and this month (UTC; amounts in the source currency, fees not included). \
                   Listed: every currency the level has limits in, and any other with usage this month, in the \
                   currency table's order. Transfers (single and batch items) are checked in saga step 1: one \
                   that does not fit is `422 VERIFICATION_LIMIT_EXCEEDED` before anything is held; usage counts \
                   completed and pending transfers the caller initiated, and one that fails, is rejected or is \
                   cancelled gives its amount back. Crypto withdrawals count in their asset (a failed one gives \
                   its amount back). Usage is rebuilt from the ledger at start.",
    responses((status = 200, body = MyLimits)),
    security(("bearer" = []))
)]
pub async fn mine(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<MyLimits>, ApiError> {
    let engine = state.engine()?;
    let user =
        state.identity().users.user_by_id(caller.user_id).await?.ok_or_else(|| {
            ApiError::new(tally_engine::ErrorCode::Unauthenticated, "the token's user no longer exists")
        })?;
    let level = user.verification_level;
    let limits = engine.limits();
    let now = engine.now();
    let mut items = Vec::new();
    for currency in Currency::all() {
        let set = limits.limits(level, currency);
        let usage: Usage = limits.usage(caller.user_id, currency, now);
        if set.is_unlimited() && usage.used_this_month.is_zero() && usage.used_today.is_zero() {
            continue;
        }
        let view = LimitView::of(currency, &set);
        items.push(MyLimitView {
            currency: view.currency,
            per_transfer_max: view.per_transfer_max,
            daily_max: view.daily_max,
            monthly_max: view.monthly_max,
            used_today: money(usage.used_today, currency),
            used_this_month: money(usage.used_this_month, currency),
        });
    }
    Ok(axum::Json(MyLimits { verification_level: level.as_str(), limits: items }))
}
