//! `/v1/admin/aml/*`: AML rules (`aml:write` to see and to change, as API.md says) and the flags they
//! raise (`aml:read` to list, count and read; `aml:write` to resolve).
//!
//! A rule is `{name, kind, config, action, enabled}`; `config` depends on `kind` and is checked
//! strictly (unknown fields refused, amounts at the currency's scale):
//! - `threshold`: `{amount, currency, transfer_type?}` matches a transfer of at least `amount`
//!   in `currency` (of `transfer_type` only, if given: `internal` or `external`);
//! - `velocity`: `{window_seconds, max_count?, max_amount?, currency}` (at least one limit)
//!   matches when the source account's transfers in `currency` within the last
//!   `window_seconds`, this one included, number more than `max_count` or sum to more than
//!   `max_amount`.
//!
//! The engine screens each transfer against its in-memory copy of the rules
//! (`tally_actors::aml`); a write here is stored first, then in force for the next transfer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_engine::aml::{
    AmlAction, AmlFlag, AmlRule, AmlRuleKind, FlagStatus, RuleConfigError, ThresholdRule, VelocityRule,
};
use tally_engine::{AccountId, ErrorCode, TransferId, TransferKind};
use tally_persistence::aml::{AmlStore, FlagFilter, Resolution, Resolved};
use tally_persistence::reads::listing::Position;

use crate::accounts::created;
use crate::audit::{AdminChange, audited};
use crate::auth::Authorized;
use crate::auth::permissions::{AmlRead, AmlWrite};
use crate::input::{self, IdPath};
use crate::json::ApiJson;
use crate::openapi::CurrencyCode;
use crate::pagination::{self, parse_position_cursor, position_cursor};
use crate::problem::ApiError;
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::{money, rfc3339};

/// Longest rule name: a line in a list, not a document.
const RULE_NAME_LENGTH_MAX: usize = 100;

/// Longest resolution note: a paragraph of the analyst's reasoning.
const NOTES_LENGTH_MAX: usize = 2_000;

/// The flags `GET /v1/admin/accounts/{id}` shows: the newest this many (the flag listing
/// pages through the rest).
pub const ACCOUNT_FLAGS_MAX: u32 = 50;

const FLAGS_TAG: &str = "aml-flags";

/// A threshold rule's configuration.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// Matches transfers of at least this amount (a string at the currency's scale).
    #[schema(examples("10000.00"))]
    pub amount: String,
    #[schema(value_type = CurrencyCode)]
    pub currency: String,
    /// Only transfers of this type; absent: internal and external alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^(internal|external)$")]
    pub transfer_type: Option<String>,
}

/// A velocity rule's configuration: at least one of `max_count` and `max_amount`.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VelocityConfig {
    /// The window looked back over, 1 s to 30 days.
    #[schema(minimum = 1, maximum = 2_592_000)]
    pub window_seconds: u32,
    /// Matches when more than this many transfers fall in the window (1 to 1,024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 1024)]
    pub max_count: Option<u32>,
    /// Matches when the window's transfers sum to more than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, examples("5000.00"))]
    pub max_amount: Option<String>,
    #[schema(value_type = CurrencyCode)]
    pub currency: String,
}

/// A rule's configuration, by its `kind`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum AmlRuleConfig {
    Threshold(ThresholdConfig),
    Velocity(VelocityConfig),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmlRuleBody {
    pub name: String,
    #[schema(pattern = "^(threshold|velocity)$")]
    pub kind: String,
    /// `ThresholdConfig` for `threshold`, `VelocityConfig` for `velocity`.
    #[schema(value_type = AmlRuleConfig)]
    pub config: serde_json::Value,
    #[schema(pattern = "^(flag|review|block)$")]
    pub action: String,
    /// Default `true` on create; on replace (`PUT`), absent keeps the stored value.
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AmlRuleView {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub config: AmlRuleConfig,
    pub action: &'static str,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl AmlRuleView {
    fn of(rule: &AmlRule) -> Result<AmlRuleView, ApiError> {
        let config = match &rule.kind {
            AmlRuleKind::Threshold(threshold) => AmlRuleConfig::Threshold(ThresholdConfig {
                amount: money(threshold.amount, threshold.currency),
                currency: threshold.currency.code().to_owned(),
                transfer_type: threshold.transfer_kind.map(|kind| kind.as_str().to_owned()),
            }),
            AmlRuleKind::Velocity(velocity) => AmlRuleConfig::Velocity(VelocityConfig {
                window_seconds: velocity.window_seconds,
                max_count: velocity.max_count,
                max_amount: velocity.max_amount.map(|amount| money(amount, velocity.currency)),
                currency: velocity.currency.code().to_owned(),
            }),
        };
        Ok(AmlRuleView {
            id: rule.id.to_string(),
            name: rule.name.clone(),
            kind: rule.kind.as_str(),
            config,
            action: rule.action.as_str(),
            enabled: rule.enabled,
            created_at: rfc3339(rule.created_at)?,
            updated_at: rfc3339(rule.updated_at)?,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AmlFlagView {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub transfer_id: String,
    #[schema(format = Uuid)]
    pub account_id: String,
    /// The user who initiated the transfer.
    #[schema(format = Uuid)]
    pub user_id: Option<String>,
    #[schema(format = Uuid)]
    pub rule_id: String,
    /// The rule's name when the flag was raised (rules may change or go).
    pub rule_name: String,
    /// The rule's action: `flag`, `review` or `block`.
    pub action: &'static str,
    /// `open`, `cleared` or `false_positive`.
    pub status: &'static str,
    pub notes: Option<String>,
    pub amount: String,
    #[schema(value_type = CurrencyCode)]
    pub currency: &'static str,
    pub created_at: String,
    pub resolved_at: Option<String>,
    #[schema(format = Uuid)]
    pub resolved_by: Option<String>,
}

impl AmlFlagView {
    pub fn of(flag: &AmlFlag) -> Result<AmlFlagView, ApiError> {
        Ok(AmlFlagView {
            id: flag.id.to_string(),
            transfer_id: flag.transfer.to_string(),
            account_id: flag.account.to_string(),
            user_id: flag.user.map(|user| user.to_string()),
            rule_id: flag.rule_id.to_string(),
            rule_name: flag.rule_name.clone(),
            action: flag.action.as_str(),
            status: flag.status.as_str(),
            notes: flag.notes.clone(),
            amount: money(flag.amount, flag.currency),
            currency: flag.currency.code(),
            created_at: rfc3339(flag.created_at)?,
            resolved_at: flag.resolved_at.map(rfc3339).transpose()?,
            resolved_by: flag.resolved_by.map(|user| user.to_string()),
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AmlRuleList {
    pub items: Vec<AmlRuleView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AmlFlagPage {
    pub items: Vec<AmlFlagView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AmlFlagCount {
    pub count: u64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    #[schema(pattern = "^(clear|mark_false_positive)$")]
    pub action: String,
    #[schema(nullable = false)]
    pub notes: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FlagQuery {
    /// `open`, `cleared` or `false_positive`.
    pub status: Option<String>,
    /// Only the flags this transfer raised (a UUID); an unknown transfer is `404`.
    pub transfer_id: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FlagCountQuery {
    /// `open`, `cleared` or `false_positive`.
    pub status: Option<String>,
    /// Only the flags this transfer raised (a UUID); an unknown transfer is `404`.
    pub transfer_id: Option<String>,
}

fn config_error(error: RuleConfigError) -> ApiError {
    let field = match error {
        RuleConfigError::Amount(_) => "config.amount",
        RuleConfigError::MaxAmount(_) => "config.max_amount",
        RuleConfigError::WindowSeconds => "config.window_seconds",
        RuleConfigError::MaxCount => "config.max_count",
        RuleConfigError::NoLimit => "config",
        RuleConfigError::TransferType => "config.transfer_type",
    };
    ApiError::field(field, error.to_string())
}

fn config<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value.clone()).map_err(|error| ApiError::field("config", error.to_string()))
}

fn rule_kind(kind: &str, value: &serde_json::Value) -> Result<AmlRuleKind, ApiError> {
    match kind {
        "threshold" => {
            let body: ThresholdConfig = config(value)?;
            let currency = input::currency("config.currency", &body.currency)?;
            let amount = input::amount("config.amount", &body.amount, currency)?;
            let transfer_kind = match body.transfer_type.as_deref() {
                None => None,
                Some("internal") => Some(TransferKind::Internal),
                Some("external") => Some(TransferKind::External),
                Some(_) => return Err(config_error(RuleConfigError::TransferType)),
            };
            ThresholdRule::new(amount, currency, transfer_kind).map(AmlRuleKind::Threshold).map_err(config_error)
        }
        "velocity" => {
            let body: VelocityConfig = config(value)?;
            let currency = input::currency("config.currency", &body.currency)?;
            let max_amount = body
                .max_amount
                .as_deref()
                .map(|text| input::amount("config.max_amount", text, currency))
                .transpose()?;
            VelocityRule::new(body.window_seconds, body.max_count, max_amount, currency)
                .map(AmlRuleKind::Velocity)
                .map_err(config_error)
        }
        _ => Err(ApiError::field("kind", "must be \"threshold\" or \"velocity\"")),
    }
}

/// The rule a body describes, with the given id; `stored`, the rule it replaces, gives the
/// creation time and, when the body leaves `enabled` out, whether it is enabled (a new rule is).
fn rule_of(
    body: &AmlRuleBody,
    id: uuid::Uuid,
    stored: Option<&AmlRule>,
    now: tally_engine::Timestamp,
) -> Result<AmlRule, ApiError> {
    let name = input::required_text("name", &body.name, RULE_NAME_LENGTH_MAX)?;
    let kind = rule_kind(&body.kind, &body.config)?;
    let action =
        AmlAction::parse(&body.action).ok_or_else(|| ApiError::field("action", "must be flag, review or block"))?;
    Ok(AmlRule {
        id,
        name,
        kind,
        action,
        // A replacement that leaves `enabled` out keeps the stored value: it re-enabled a
        // disabled rule before (found by review), which an admin editing a threshold would not
        // expect.
        enabled: body.enabled.unwrap_or(stored.is_none_or(|stored| stored.enabled)),
        created_at: stored.map_or(now, |stored| stored.created_at),
        updated_at: now,
    })
}

fn aml_store(state: &AppState) -> Result<&dyn AmlStore, ApiError> {
    state.store().aml().ok_or_else(|| ApiError::internal("the store keeps no AML flags"))
}

/// The newest flags of `account` (for the admin account view).
pub async fn account_flags(state: &AppState, account: AccountId) -> Result<Vec<AmlFlagView>, ApiError> {
    let filter = FlagFilter { status: None, account: Some(account), transfer: None };
    let flags = aml_store(state)?.aml_flag_page(filter, None, ACCOUNT_FLAGS_MAX).await?;
    flags.iter().map(AmlFlagView::of).collect()
}

/// `GET /v1/admin/aml/rules` (`aml:write`, as API.md names for every rule route: the rules are
/// what a launderer would most like to read, so reading them is the rule editors' right) → every rule, oldest first (at most 256).
#[utoipa::path(
    get,
    path = "/v1/admin/aml/rules",
    tag = "admin",
    responses((status = 200, body = AmlRuleList)),
    security(("bearer" = []))
)]
pub async fn list_rules(
    State(state): State<AppState>,
    _admin: Authorized<AmlWrite>,
) -> Result<axum::Json<AmlRuleList>, ApiError> {
    let rules = state.engine()?.aml_rules();
    let items = rules.iter().map(AmlRuleView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(AmlRuleList { items }))
}

/// `POST /v1/admin/aml/rules` (`aml:write`) → `201` rule. More than 256 rules → `409`.
#[utoipa::path(
    post,
    path = "/v1/admin/aml/rules",
    tag = "admin",
    request_body = AmlRuleBody,
    responses((status = 201, body = AmlRuleView)),
    security(("bearer" = []))
)]
pub async fn create_rule(
    State(state): State<AppState>,
    admin: Authorized<AmlWrite>,
    change: AdminChange,
    ApiJson(body): ApiJson<AmlRuleBody>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let rule = rule_of(&body, engine.new_transfer_id().as_uuid(), None, engine.now())?;
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::CREATED), Some(rule.id.to_string()));
    engine.create_aml_rule(rule.clone(), Some(&entry)).await?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), rule = %rule.id, name = %rule.name, "AML rule created");
    Ok(audited(created(format!("/v1/admin/aml/rules/{}", rule.id), AmlRuleView::of(&rule)?)))
}

fn find_rule(state: &AppState, id: uuid::Uuid) -> Result<AmlRule, ApiError> {
    state
        .engine()?
        .aml_rules()
        .iter()
        .find(|rule| rule.id == id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("AML rule"))
}

/// `GET /v1/admin/aml/rules/{id}` (`aml:write`) → the rule.
#[utoipa::path(
    get,
    path = "/v1/admin/aml/rules/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The rule id")),
    responses((status = 200, body = AmlRuleView)),
    security(("bearer" = []))
)]
pub async fn get_rule(
    State(state): State<AppState>,
    _admin: Authorized<AmlWrite>,
    IdPath(id): IdPath,
) -> Result<axum::Json<AmlRuleView>, ApiError> {
    Ok(axum::Json(AmlRuleView::of(&find_rule(&state, id)?)?))
}

/// `PUT /v1/admin/aml/rules/{id}` (`aml:write`) → the rule as replaced; unknown → `404`.
#[utoipa::path(
    put,
    path = "/v1/admin/aml/rules/{id}",
    tag = "admin",
    description = "Replaces the rule whole, except `enabled`: a body without it keeps the rule's stored value (a disabled rule stays disabled). A rule deleted meanwhile is not created again: `404`.",
    params(("id" = uuid::Uuid, Path, description = "The rule id")),
    request_body = AmlRuleBody,
    responses((status = 200, body = AmlRuleView)),
    security(("bearer" = []))
)]
pub async fn put_rule(
    State(state): State<AppState>,
    admin: Authorized<AmlWrite>,
    change: AdminChange,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<AmlRuleBody>,
) -> Result<Response, ApiError> {
    let engine = state.engine()?;
    let now = engine.now();
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::OK), Some(id.to_string()));
    // The stored rule is read, and replaced, under the engine's lock on rule writes: looked up
    // before it, a rule deleted meanwhile was stored again (found by review).
    let rule = engine
        .replace_aml_rule(id, Some(&entry), |stored| rule_of(&body, id, Some(stored), now))
        .await?
        .ok_or_else(|| ApiError::not_found("AML rule"))?;
    tracing::info!(target: "audit", admin = %admin.admin_id(), rule = %rule.id, name = %rule.name, "AML rule replaced");
    Ok(audited(axum::Json(AmlRuleView::of(&rule)?).into_response()))
}

/// `DELETE /v1/admin/aml/rules/{id}` (`aml:write`) → `204`; unknown → `404`. Flags it raised
/// stay, with its id and name.
#[utoipa::path(
    delete,
    path = "/v1/admin/aml/rules/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The rule id")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = []))
)]
pub async fn delete_rule(
    State(state): State<AppState>,
    admin: Authorized<AmlWrite>,
    change: AdminChange,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::NO_CONTENT), Some(id.to_string()));
    if !state.engine()?.delete_aml_rule(id, Some(&entry)).await? {
        return Err(ApiError::not_found("AML rule"));
    }
    tracing::info!(target: "audit", admin = %admin.admin_id(), rule = %id, "AML rule deleted");
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

fn flag_status(text: Option<&str>) -> Result<Option<FlagStatus>, ApiError> {
    text.map(|text| {
        FlagStatus::parse(text).ok_or_else(|| ApiError::field("status", "must be open, cleared or false_positive"))
    })
    .transpose()
}

/// The filter of a flag listing or count. A transfer's flags are raised on its source account,
/// so `transfer_id` is looked up and the account's index finds them; an unknown transfer is
/// `404` (an empty list would pass a mistyped id as "no flags").
async fn flag_filter(
    state: &AppState,
    status: Option<&str>,
    transfer_id: Option<&str>,
) -> Result<FlagFilter, ApiError> {
    let status = flag_status(status)?;
    let Some(text) = transfer_id else {
        return Ok(FlagFilter { status, account: None, transfer: None });
    };
    let id = uuid::Uuid::try_parse(text).map_err(|_| ApiError::field("transfer_id", "must be a UUID"))?;
    let transfer = state
        .engine()?
        .load_transfer(TransferId::from_uuid(id))
        .await?
        .ok_or_else(|| ApiError::not_found("transfer"))?;
    Ok(FlagFilter { status, account: Some(transfer.source), transfer: Some(transfer.id) })
}

/// `GET /v1/admin/aml/flags?status&transfer_id&cursor&limit` (`aml:read`) → flags, newest
/// first.
#[utoipa::path(
    get,
    path = "/v1/admin/aml/flags",
    tag = "admin",
    params(FlagQuery),
    responses((status = 200, body = AmlFlagPage)),
    security(("bearer" = []))
)]
pub async fn list_flags(
    State(state): State<AppState>,
    _admin: Authorized<AmlRead>,
    ApiQuery(params): ApiQuery<FlagQuery>,
) -> Result<axum::Json<AmlFlagPage>, ApiError> {
    let filter = flag_filter(&state, params.status.as_deref(), params.transfer_id.as_deref()).await?;
    let limit = pagination::limit(params.limit.as_deref())?;
    let after = parse_position_cursor(FLAGS_TAG, params.cursor.as_deref())?;
    // One row more than asked says whether another page follows.
    let mut flags = aml_store(&state)?.aml_flag_page(filter, after, limit + 1).await?;
    let more = flags.len() > limit as usize;
    flags.truncate(limit as usize);
    let next_cursor = if more {
        flags
            .last()
            .map(|flag| position_cursor(FLAGS_TAG, Position { created_at: flag.created_at.as_micros(), id: flag.id }))
    } else {
        None
    };
    let items = flags.iter().map(AmlFlagView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(AmlFlagPage { items, next_cursor }))
}

/// `GET /v1/admin/aml/flags/count?status&transfer_id` (`aml:read`) → `{count}`.
#[utoipa::path(
    get,
    path = "/v1/admin/aml/flags/count",
    tag = "admin",
    params(FlagCountQuery),
    responses((status = 200, body = AmlFlagCount)),
    security(("bearer" = []))
)]
pub async fn count_flags(
    State(state): State<AppState>,
    _admin: Authorized<AmlRead>,
    ApiQuery(params): ApiQuery<FlagCountQuery>,
) -> Result<axum::Json<AmlFlagCount>, ApiError> {
    let filter = flag_filter(&state, params.status.as_deref(), params.transfer_id.as_deref()).await?;
    let count = aml_store(&state)?.count_aml_flags(filter).await?;
    Ok(axum::Json(AmlFlagCount { count }))
}

/// `GET /v1/admin/aml/flags/{id}` (`aml:read`) → the flag.
#[utoipa::path(
    get,
    path = "/v1/admin/aml/flags/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The flag id")),
    responses((status = 200, body = AmlFlagView)),
    security(("bearer" = []))
)]
pub async fn get_flag(
    State(state): State<AppState>,
    _admin: Authorized<AmlRead>,
    IdPath(id): IdPath,
) -> Result<axum::Json<AmlFlagView>, ApiError> {
    let flag = aml_store(&state)?.aml_flag(id).await?.ok_or_else(|| ApiError::not_found("AML flag"))?;
    Ok(axum::Json(AmlFlagView::of(&flag)?))
}

/// `POST /v1/admin/aml/flags/{id}/resolve` (`aml:write`) `{action, notes?}` → `204`. A flag
/// is resolved once: again → `409 CONFLICT`.
#[utoipa::path(
    post,
    path = "/v1/admin/aml/flags/{id}/resolve",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The flag id")),
    request_body = ResolveBody,
    responses((status = 204, description = "Resolved")),
    security(("bearer" = []))
)]
pub async fn resolve_flag(
    State(state): State<AppState>,
    admin: Authorized<AmlWrite>,
    change: AdminChange,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Response, ApiError> {
    let status = match body.action.as_str() {
        "clear" => FlagStatus::Cleared,
        "mark_false_positive" => FlagStatus::FalsePositive,
        _ => return Err(ApiError::field("action", "must be \"clear\" or \"mark_false_positive\"")),
    };
    let notes = input::text("notes", body.notes.as_deref(), NOTES_LENGTH_MAX)?;
    let engine = state.engine()?;
    let resolution = Resolution { status, notes, at: engine.now(), by: admin.admin_id() };
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::NO_CONTENT), Some(id.to_string()));
    match aml_store(&state)?.resolve_aml_flag(id, &resolution, Some(&entry)).await? {
        Resolved::Resolved => {
            tracing::info!(target: "audit", admin = %admin.admin_id(), flag = %id, status = status.as_str(), "AML flag resolved");
            Ok(audited(StatusCode::NO_CONTENT.into_response()))
        }
        Resolved::NotFound => Err(ApiError::not_found("AML flag")),
        Resolved::AlreadyResolved => Err(ApiError::new(ErrorCode::Conflict, "this flag is already resolved")),
    }
}
