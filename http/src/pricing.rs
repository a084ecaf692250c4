//! Admin pricing routes: `/v1/admin/fx-rates`, `/v1/admin/fee-rules`,
//! `/v1/admin/transfer-types`. Parsing and answers live here; the rules (what a valid rate,
//! rule or limit is; which rule applies; how fees and conversions round) are the engine's
//! (`tally_engine::{fees, fx, transfer_type}`), and the write-through to the store is the
//! actors' (`tally_actors::pricing`).
//!
//! Decisions where API.md is silent (also in docs/api-decisions.md):
//! - A rate is directed; the inverse pair is not implied. `PUT` upserts and answers `204`.
//! - A `percentage` is in percent ("1.5" = 1.5 %). At most one enabled fee rule per
//!   (transfer_type, currency): a second one is `409 CONFLICT`. Rules are not deleted; they
//!   are disabled (`enabled: false`), which keeps their history readable.
//! - The admin lists answer `{items:[...]}`, unpaginated: they are configuration, bounded by
//!   types × currencies, not data that grows with traffic.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_actors::PricingError;
use tally_engine::fees::{FeeKind, FeeRule, FeeTier};
use tally_engine::transfer_type::{ExecutionMode, TransferTypeSettings};
use tally_engine::{FxRate, Timestamp, TransferKind};

use crate::audit::{AdminChange, audited};
use crate::auth::Authorized;
use crate::auth::permissions::{FeesRead, FeesWrite, FxRead, FxWrite, TransferTypesWrite};
use crate::input::{self, IdPath};
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::{money, rfc3339};

/// Longest fee rule name.
const FEE_RULE_NAME_LENGTH_MAX: usize = 100;

impl From<PricingError> for ApiError {
    fn from(error: PricingError) -> Self {
        match error {
            PricingError::Invalid { field, message } => ApiError::field(field, message),
            PricingError::Store(ref store) => {
                tracing::warn!(%store, "pricing write refused by the store");
                ApiError::new(error.code(), "the store did not take the change; retry")
            }
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

/// A plain positive-or-zero decimal written as a string (no sign, no exponent), for rates and
/// percentages, whose scale is not a currency's.
fn decimal(field: &str, text: &str) -> Result<Decimal, ApiError> {
    let plain = !text.is_empty()
        && text.len() <= 64
        && text.split_once('.').map_or(text.bytes().all(|b| b.is_ascii_digit()), |(whole, fraction)| {
            !whole.is_empty()
                && !fraction.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && fraction.bytes().all(|b| b.is_ascii_digit())
        });
    if !plain {
        let message =
            if text.starts_with('-') { "must be greater than zero" } else { "must be a decimal string like \"1.25\"" };
        return Err(ApiError::field(field, message));
    }
    Decimal::from_str_exact(text).map_err(|_| ApiError::field(field, "must be a decimal string like \"1.25\""))
}

/// `pending_timeout_secs` as written: `null` or an integer in the range a transfer's own
/// `pending_expires_in` has (the same check, on this field's name).
fn pending_timeout_secs(value: Option<&serde_json::Value>) -> Result<Option<u32>, ApiError> {
    crate::transfers::pending_expires_in(value).map_err(|_| {
        ApiError::field("pending_timeout_secs", "must be null or an integer number of seconds from 60 to 2592000")
    })
}

// ---- FX rates -----------------------------------------------------------------------------

/// `PUT /v1/admin/fx-rates` body: one unit of `from` buys `rate` units of `to`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FxRateBody {
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub from: String,
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub to: String,
    /// Greater than zero, at most 18 decimals, at most 10^10.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("0.92"))]
    pub rate: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FxRateView {
    pub from: &'static str,
    pub to: &'static str,
    pub rate: String,
    pub updated_at: String,
}

impl FxRateView {
    fn of(rate: &FxRate) -> Result<FxRateView, ApiError> {
        Ok(FxRateView {
            from: rate.from.code(),
            to: rate.to.code(),
            rate: rate.rate.normalize().to_string(),
            updated_at: rfc3339(rate.updated_at)?,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FxRateList {
    pub items: Vec<FxRateView>,
}

/// `GET /v1/admin/fx-rates` (`fx:read`) → every rate set, by (from, to).
#[utoipa::path(
    get,
    path = "/v1/admin/fx-rates",
    tag = "admin",
    responses((status = 200, body = FxRateList)),
    security(("bearer" = []))
)]
pub async fn list_fx_rates(
    State(state): State<AppState>,
    _admin: Authorized<FxRead>,
) -> Result<axum::Json<FxRateList>, ApiError> {
    let engine = state.engine()?;
    let items = engine.fx_rates().iter().map(FxRateView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(FxRateList { items }))
}

/// `PUT /v1/admin/fx-rates` (`fx:write`) → `204`. Sets or replaces the directed rate
/// `from` → `to` (the inverse is not implied). New transfers use it at once; transfers already
/// created (a pending FX transfer) keep the rate they were created with. Converted amounts are
/// the exact product truncated to the destination currency's decimals.
#[utoipa::path(
    put,
    path = "/v1/admin/fx-rates",
    tag = "admin",
    request_body = FxRateBody,
    responses((status = 204, description = "The rate is stored and in effect")),
    security(("bearer" = []))
)]
pub async fn put_fx_rate(
    State(state): State<AppState>,
    admin: Authorized<FxWrite>,
    change: AdminChange,
    ApiJson(body): ApiJson<FxRateBody>,
) -> Result<Response, ApiError> {
    let from = input::currency("from", &body.from)?;
    let to = input::currency("to", &body.to)?;
    let rate = decimal("rate", &body.rate)?;
    let engine = state.engine()?;
    let pair = format!("{}/{}", from.code(), to.code());
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::NO_CONTENT), Some(pair));
    engine.set_fx_rate(from, to, rate, Some(&entry)).await?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), %from, %to, %rate, "fx rate set");
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

// ---- fee rules ----------------------------------------------------------------------------

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeeTierBody {
    /// Inclusive upper bound of the amounts the tier prices; only the last tier may omit it.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("1000.00"))]
    pub up_to: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("0.50"))]
    pub flat_amount: Option<String>,
    /// In percent: "1.5" is 1.5 %.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("1.5"))]
    pub percentage: Option<String>,
}

/// `POST /v1/admin/fee-rules` and `PUT /v1/admin/fee-rules/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeeRuleBody {
    pub name: String,
    /// `internal` or `external`.
    #[schema(examples("internal"))]
    pub transfer_type: String,
    /// The source currency the rule prices; the fee is in it.
    #[schema(value_type = crate::openapi::CurrencyCode)]
    pub currency: String,
    /// `flat`, `percentage` or `tiered`.
    #[schema(examples("percentage"))]
    pub kind: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("0.30"))]
    pub flat_amount: Option<String>,
    /// In percent: "1.5" is 1.5 %; 0 < p ≤ 100, at most 4 decimals.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("1.5"))]
    pub percentage: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("0.50"))]
    pub min_fee: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("25.00"))]
    pub max_fee: Option<String>,
    pub tiers: Option<Vec<FeeTierBody>>,
    /// Default `true` on create; on replace (`PUT`), absent keeps the stored value. At most
    /// one enabled rule per (transfer_type, currency).
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeeRuleView {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub transfer_type: &'static str,
    pub currency: &'static str,
    pub kind: &'static str,
    pub flat_amount: Option<String>,
    pub percentage: Option<String>,
    pub min_fee: Option<String>,
    pub max_fee: Option<String>,
    pub tiers: Vec<FeeTierBody>,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl FeeRuleView {
    fn of(rule: &FeeRule) -> Result<FeeRuleView, ApiError> {
        let currency = rule.currency;
        let amount = |value: Option<Decimal>| value.map(|value| money(value, currency));
        let percent = |value: Option<Decimal>| value.map(|value| value.normalize().to_string());
        Ok(FeeRuleView {
            id: rule.id.to_string(),
            name: rule.name.clone(),
            transfer_type: rule.transfer_type.as_str(),
            currency: currency.code(),
            kind: rule.kind.as_str(),
            flat_amount: amount(rule.flat_amount),
            percentage: percent(rule.percentage),
            min_fee: amount(rule.min_fee),
            max_fee: amount(rule.max_fee),
            tiers: rule
                .tiers
                .iter()
                .map(|tier| FeeTierBody {
                    up_to: amount(tier.up_to),
                    flat_amount: amount(tier.flat_amount),
                    percentage: percent(tier.percentage),
                })
                .collect(),
            enabled: rule.enabled,
            created_at: rfc3339(rule.created_at)?,
            updated_at: rfc3339(rule.updated_at)?,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeeRuleList {
    pub items: Vec<FeeRuleView>,
}

/// A body as the engine's rule (id and times are set by the engine).
fn fee_rule_spec(body: FeeRuleBody) -> Result<FeeRule, ApiError> {
    let name = input::required_text("name", &body.name, FEE_RULE_NAME_LENGTH_MAX)?;
    let transfer_type = match body.transfer_type.as_str() {
        "internal" => TransferKind::Internal,
        "external" => TransferKind::External,
        _ => return Err(ApiError::field("transfer_type", "must be \"internal\" or \"external\"")),
    };
    let currency = input::currency("currency", &body.currency)?;
    let kind = FeeKind::parse(&body.kind)
        .ok_or_else(|| ApiError::field("kind", "must be \"flat\", \"percentage\" or \"tiered\""))?;
    // Zero is a fee amount like any other ("the first 100.00 free, then 1 %" is a tier whose
    // flat amount is 0), as the engine's rule check has it; negative is not.
    let amount =
        |field: &str, value: Option<&str>| value.map(|text| input::amount_or_zero(field, text, currency)).transpose();
    let percent = |field: &str, value: Option<&str>| value.map(|text| decimal(field, text)).transpose();
    let tiers = body
        .tiers
        .unwrap_or_default()
        .iter()
        .map(|tier| {
            Ok(FeeTier {
                up_to: amount("tiers.up_to", tier.up_to.as_deref())?,
                flat_amount: amount("tiers.flat_amount", tier.flat_amount.as_deref())?,
                percentage: percent("tiers.percentage", tier.percentage.as_deref())?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(FeeRule {
        id: uuid::Uuid::nil(),
        name,
        transfer_type,
        currency,
        kind,
        flat_amount: amount("flat_amount", body.flat_amount.as_deref())?,
        percentage: percent("percentage", body.percentage.as_deref())?,
        min_fee: amount("min_fee", body.min_fee.as_deref())?,
        max_fee: amount("max_fee", body.max_fee.as_deref())?,
        tiers,
        enabled: body.enabled.unwrap_or(true),
        created_at: Timestamp::default(),
        updated_at: Timestamp::default(),
    })
}

/// `GET /v1/admin/fee-rules` (`fees:read`) → every rule, enabled or not, oldest first.
#[utoipa::path(
    get,
    path = "/v1/admin/fee-rules",
    tag = "admin",
    responses((status = 200, body = FeeRuleList)),
    security(("bearer" = []))
)]
pub async fn list_fee_rules(
    State(state): State<AppState>,
    _admin: Authorized<FeesRead>,
) -> Result<axum::Json<FeeRuleList>, ApiError> {
    let engine = state.engine()?;
    let items = engine.fee_rules().iter().map(FeeRuleView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(FeeRuleList { items }))
}

/// `POST /v1/admin/fee-rules` (`fees:write`) → `201` rule. An enabled rule for a (type,
/// currency) that already has one is `409 CONFLICT`. Fees round half away from zero to the
/// currency's decimals, then `min_fee`/`max_fee` clamp them; tiers price the whole amount by
/// the first tier whose `up_to` is at least the amount.
#[utoipa::path(
    post,
    path = "/v1/admin/fee-rules",
    tag = "admin",
    request_body = FeeRuleBody,
    responses((status = 201, body = FeeRuleView)),
    security(("bearer" = []))
)]
pub async fn create_fee_rule(
    State(state): State<AppState>,
    admin: Authorized<FeesWrite>,
    change: AdminChange,
    ApiJson(body): ApiJson<FeeRuleBody>,
) -> Result<Response, ApiError> {
    let spec = fee_rule_spec(body)?;
    let engine = state.engine()?;
    let id = engine.new_transfer_id().as_uuid();
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::CREATED), Some(id.to_string()));
    let rule = engine.create_fee_rule(id, spec, Some(&entry)).await?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), rule = %rule.id, "fee rule created");
    Ok(audited(crate::accounts::created(format!("/v1/admin/fee-rules/{id}"), FeeRuleView::of(&rule)?)))
}

/// `GET /v1/admin/fee-rules/{id}` (`fees:read`) → the rule.
#[utoipa::path(
    get,
    path = "/v1/admin/fee-rules/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The fee rule id")),
    responses((status = 200, body = FeeRuleView)),
    security(("bearer" = []))
)]
pub async fn get_fee_rule(
    State(state): State<AppState>,
    _admin: Authorized<FeesRead>,
    IdPath(id): IdPath,
) -> Result<axum::Json<FeeRuleView>, ApiError> {
    let engine = state.engine()?;
    let rule = engine.fee_rule(id).ok_or_else(|| ApiError::not_found("fee rule"))?;
    Ok(axum::Json(FeeRuleView::of(&rule)?))
}

/// `PUT /v1/admin/fee-rules/{id}` (`fees:write`) → the rule as replaced (the whole body, as
/// for create, except an absent `enabled`, which keeps the stored value). `enabled: false`
/// retires a rule.
#[utoipa::path(
    put,
    path = "/v1/admin/fee-rules/{id}",
    tag = "admin",
    description = "Replaces the rule whole, as create's body describes it, except `enabled`: a body without it keeps the rule's stored value (a disabled rule stays disabled). `enabled: false` retires a rule.",
    params(("id" = uuid::Uuid, Path, description = "The fee rule id")),
    request_body = FeeRuleBody,
    responses((status = 200, body = FeeRuleView)),
    security(("bearer" = []))
)]
pub async fn put_fee_rule(
    State(state): State<AppState>,
    admin: Authorized<FeesWrite>,
    change: AdminChange,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<FeeRuleBody>,
) -> Result<Response, ApiError> {
    let enabled = body.enabled;
    let spec = fee_rule_spec(body)?;
    let engine = state.engine()?;
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::OK), Some(id.to_string()));
    // A body without `enabled` keeps the stored value, read under the engine's pricing lock: it
    // re-enabled a disabled rule before (found by review).
    let rule = engine
        .update_fee_rule(id, Some(&entry), |stored| FeeRule { enabled: enabled.unwrap_or(stored.enabled), ..spec })
        .await?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), rule = %rule.id, "fee rule replaced");
    Ok(audited(axum::Json(FeeRuleView::of(&rule)?).into_response()))
}

// ---- transfer types -----------------------------------------------------------------------

/// `PUT /v1/admin/transfer-types/{code}` body. `min_amount`/`max_amount` bound `amount` (not
/// the fee) in whatever the source currency is; absent means no bound beyond the currency's.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferTypeBody {
    pub enabled: bool,
    /// `auto` or `manual` (manual: the transfer waits `pending` for an admin after its hold).
    #[schema(examples("auto"))]
    pub execution_mode: String,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("1.00"))]
    pub min_amount: Option<String>,
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", examples("10000.00"))]
    pub max_amount: Option<String>,
    /// Seconds (an integer, 60 … 2,592,000) a transfer of this type may wait `pending` before
    /// it ends `expired`, its hold released, unless the transfer names its own
    /// `pending_expires_in`. Absent or `null`: pending transfers of this type never expire.
    /// Applies to transfers created after the change; ones already pending keep the deadline
    /// they were created with.
    #[schema(value_type = Option<u32>, minimum = 60, maximum = 2592000, examples(604800))]
    pub pending_timeout_secs: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminTransferTypeView {
    pub code: &'static str,
    pub enabled: bool,
    pub execution_mode: &'static str,
    pub min_amount: Option<String>,
    pub max_amount: Option<String>,
    /// Seconds a pending transfer of this type waits before it expires; `null`: never.
    pub pending_timeout_secs: Option<u32>,
}

impl AdminTransferTypeView {
    fn of(kind: TransferKind, settings: &TransferTypeSettings) -> AdminTransferTypeView {
        AdminTransferTypeView {
            code: kind.as_str(),
            enabled: settings.enabled,
            execution_mode: settings.execution_mode.as_str(),
            min_amount: settings.min_amount.map(|amount| amount.normalize().to_string()),
            max_amount: settings.max_amount.map(|amount| amount.normalize().to_string()),
            pending_timeout_secs: settings.pending_timeout_secs,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminTransferTypeList {
    pub items: Vec<AdminTransferTypeView>,
}

/// The types a customer sends; adjustments are always on and not configurable.
const CONFIGURABLE_TYPES: [TransferKind; 2] = [TransferKind::Internal, TransferKind::External];

/// `GET /v1/admin/transfer-types` (`transfer_types:write`) → every configurable type with its
/// limits.
#[utoipa::path(
    get,
    path = "/v1/admin/transfer-types",
    tag = "admin",
    responses((status = 200, body = AdminTransferTypeList)),
    security(("bearer" = []))
)]
pub async fn list_transfer_types(
    State(state): State<AppState>,
    _admin: Authorized<TransferTypesWrite>,
) -> Result<axum::Json<AdminTransferTypeList>, ApiError> {
    let engine = state.engine()?;
    let items = CONFIGURABLE_TYPES
        .into_iter()
        .map(|kind| AdminTransferTypeView::of(kind, &engine.transfer_type(kind)))
        .collect();
    Ok(axum::Json(AdminTransferTypeList { items }))
}

/// `PUT /v1/admin/transfer-types/{code}` (`transfer_types:write`) → the type as now set.
/// Stored first, then in effect for new transfers and batch items (a disabled type answers
/// `422 TRANSFER_TYPE_DISABLED`; an amount outside the limits `422 AMOUNT_LIMIT_EXCEEDED`).
/// Transfers already pending keep running as created.
#[utoipa::path(
    put,
    path = "/v1/admin/transfer-types/{code}",
    tag = "admin",
    params(("code" = String, Path, description = "internal or external")),
    request_body = TransferTypeBody,
    responses((status = 200, body = AdminTransferTypeView)),
    security(("bearer" = []))
)]
pub async fn put_transfer_type(
    State(state): State<AppState>,
    admin: Authorized<TransferTypesWrite>,
    change: AdminChange,
    crate::input::TextPath(code): crate::input::TextPath,
    ApiJson(body): ApiJson<TransferTypeBody>,
) -> Result<Response, ApiError> {
    let kind = CONFIGURABLE_TYPES
        .into_iter()
        .find(|kind| kind.as_str() == code)
        .ok_or_else(|| ApiError::not_found("transfer type"))?;
    let execution_mode = ExecutionMode::parse(&body.execution_mode)
        .ok_or_else(|| ApiError::field("execution_mode", "must be \"auto\" or \"manual\""))?;
    let limit = |field: &str, value: Option<&str>| value.map(|text| decimal(field, text)).transpose();
    let settings = TransferTypeSettings {
        enabled: body.enabled,
        execution_mode,
        min_amount: limit("min_amount", body.min_amount.as_deref())?,
        max_amount: limit("max_amount", body.max_amount.as_deref())?,
        pending_timeout_secs: pending_timeout_secs(body.pending_timeout_secs.as_ref())?,
    };
    let engine = state.engine()?;
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::OK), Some(code.clone()));
    engine.save_transfer_type(kind, settings.clone(), Some(&entry)).await?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), kind = kind.as_str(), enabled = settings.enabled, "transfer type set");
    Ok(audited(axum::Json(AdminTransferTypeView::of(kind, &engine.transfer_type(kind))).into_response()))
}
