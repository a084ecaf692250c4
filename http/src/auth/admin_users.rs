//! Admin users and permissions (API.md, "Admin"): `GET /v1/admin/users` (search, filters),
//! `GET /v1/admin/users/count`, `GET`/`PATCH /v1/admin/users/{id}`, `POST /v1/admin/users`,
//! `POST`/`DELETE /v1/admin/users/{id}/permissions`, `POST /v1/admin/users/{id}/status`,
//! `POST /v1/admin/users/{id}/password-reset`, `GET`/`DELETE /v1/admin/users/{id}/sessions`,
//! `POST /v1/admin/users/{id}/verification` and `GET /v1/admin/permissions`.
//!
//! Rules where the contract is silent (docs/api-decisions.md lists them too):
//! - An admin cannot block themselves nor revoke their own `admin_users:manage` (`409
//!   CONFLICT`): either would lock out the one doing it, possibly the last admin able to undo.
//! - An admin grants only actions they hold themselves (`403 FORBIDDEN` otherwise), when
//!   creating an admin or granting: `admin_users:manage` is not a way to escalate.
//! - An admin changes another user (status, sessions, password reset, profile, verification,
//!   revoking) only if they hold every action that user holds (`403`, `check_outranks`): the
//!   same rule seen from the target, so a lesser admin cannot lock out a greater one.
//! - Blocking ends every session of the user at once (their access tokens answer `401`);
//!   unblocking revives none: the user logs in again.
//! - Held actions are effective ones: direct grants and roles' actions alike
//!   (`User::holds`). The lock-out rule looks at the effective set after the change.
//! - The email is not an editable profile field (changing it would need re-verification).
//! - An admin password reset keeps the current password working (the user may still know it);
//!   it ends every session and mails a code. To lock someone out, block them.
//!
//! Every change appends its audit entry in the same transaction (`user.create`,
//! `user.permissions_grant`, `user.permissions_revoke`, `user.block`, `user.unblock`,
//! `user.profile_update`, `user.password_reset`, `user.verification`); ending sessions, which
//! the session actors store, is audited right after (`user.sessions_end`, and one
//! `auth.session_ended` per session).

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tally_actors::sessions::reason;
use tally_engine::{ErrorCode, UserId};
use tally_persistence::users::admin::{UserFilter, UserSummary};
use tally_persistence::users::self_service::CodePurpose;
use tally_persistence::users::{CreateUserError, User, UserStatus, VerificationLevel};

use super::caller::Authorized;
use super::codes;
use super::password::check_policy;
use super::permissions::{Action, AdminUsersManage, AdminUsersRead, UsersBlock, UsersRead, UsersVerify, UsersWrite};
use super::self_service::{ProfileBody, changed_fields, profile_change};
use super::sessions::{end_reason, end_sessions};
use super::validate::{check_email, check_name};
use crate::audit::{Actor, AuditContext, Event, audited, record, record_after_change};
use crate::input::{self, DESCRIPTION_LENGTH_MAX, IdPath};
use crate::json::ApiJson;
use crate::problem::{ApiError, FieldError};
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::rfc3339;

/// Users per page when `limit` is not given.
pub const USERS_PAGE_DEFAULT: u32 = 50;

/// Most users per page: each carries its permissions, so a page stays well under 100 KB.
pub const USERS_PAGE_MAX: u32 = 200;

/// Most entries in one `actions` list. The catalog has 28 actions; a list far longer is not a
/// mistake a person makes, and is refused before any of it is looked at.
pub const ACTIONS_PER_REQUEST_MAX: usize = 64;

/// Longest `search` accepted: an email is at most 254 characters.
pub const SEARCH_LENGTH_MAX: usize = 254;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub cursor: Option<String>,
    pub limit: Option<String>,
    /// `active` or `blocked`.
    pub status: Option<String>,
    /// `none`, `basic`, `verified` or `enhanced`.
    pub verification_level: Option<String>,
    /// Part of the email, or the start of the first name, last name or user id
    /// (case-insensitive for ASCII letters); 1 to 254 printable characters.
    pub search: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CountQuery {
    pub status: Option<String>,
    pub verification_level: Option<String>,
    pub search: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = UserRoleRef)]
struct RoleRef {
    id: String,
    name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserItem {
    user_id: String,
    email: String,
    email_verified: bool,
    first_name: String,
    last_name: String,
    phone: Option<String>,
    status: &'static str,
    /// `none`, `basic`, `verified` or `enhanced`.
    verification_level: &'static str,
    /// Effective permissions: granted directly or through a role.
    permissions: Vec<String>,
    /// Granted directly (what `POST/DELETE .../permissions` change).
    direct_permissions: Vec<String>,
    roles: Vec<RoleRef>,
    mfa: super::routes::Mfa,
    /// Sessions not ended and used within the idle time-out.
    sessions_active: u64,
    created_at: String,
}

impl UserItem {
    fn of(summary: UserSummary) -> Result<UserItem, ApiError> {
        let UserSummary { user, totp_enabled, sessions_active } = summary;
        Ok(UserItem {
            user_id: user.id.to_string(),
            email_verified: user.email_verified_at.is_some(),
            permissions: user.effective_permissions().into_iter().collect(),
            roles: user.roles.iter().map(|role| RoleRef { id: role.id.to_string(), name: role.name.clone() }).collect(),
            status: user.status.as_str(),
            verification_level: user.verification_level.as_str(),
            created_at: rfc3339(user.created_at)?,
            direct_permissions: user.permissions.into_iter().collect(),
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            phone: user.phone,
            mfa: super::routes::Mfa { totp_enabled },
            sessions_active,
        })
    }
}

/// The filter of a listing or count, checked.
fn user_filter(
    status: Option<&str>,
    verification_level: Option<&str>,
    search: Option<&str>,
) -> Result<UserFilter, ApiError> {
    let status = match status {
        None => None,
        Some(text) => Some(
            UserStatus::parse(text).ok_or_else(|| ApiError::field("status", "must be \"active\" or \"blocked\""))?,
        ),
    };
    let verification_level = verification_level.map(parse_level).transpose()?;
    let search = match search {
        None => None,
        Some(text) => {
            let text = text.trim();
            if text.is_empty() || text.chars().count() > SEARCH_LENGTH_MAX || text.chars().any(char::is_control) {
                return Err(ApiError::field(
                    "search",
                    format!("must be 1 to {SEARCH_LENGTH_MAX} printable characters"),
                ));
            }
            Some(text.to_owned())
        }
    };
    Ok(UserFilter { search, status, verification_level })
}

fn parse_level(text: &str) -> Result<VerificationLevel, ApiError> {
    VerificationLevel::parse(text)
        .ok_or_else(|| ApiError::field("verification_level", "must be one of none, basic, verified, enhanced"))
}

/// Sessions count as active when used within the idle time-out.
fn active_since(state: &AppState) -> tally_engine::Timestamp {
    let identity = state.identity();
    let idle = i64::try_from(identity.sessions.config().idle.as_micros()).unwrap_or(i64::MAX);
    tally_engine::Timestamp::from_micros(identity.now().as_micros().saturating_sub(idle))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = UserPage)]
pub struct Page {
    items: Vec<UserItem>,
    next_cursor: Option<String>,
}

/// `limit` as given: 1 to `USERS_PAGE_MAX`.
fn page_limit(limit: Option<&str>) -> Result<u32, ApiError> {
    let Some(text) = limit else { return Ok(USERS_PAGE_DEFAULT) };
    match text.parse::<u32>() {
        Ok(limit) if (1..=USERS_PAGE_MAX).contains(&limit) => Ok(limit),
        _ => Err(ApiError::field("limit", format!("must be a whole number from 1 to {USERS_PAGE_MAX}"))),
    }
}

/// `GET /v1/admin/users?search=&status=&verification_level=&cursor=&limit=` (`users:read`) →
/// `{items, next_cursor}`, in user-id order. The cursor is the id of the last user of the
/// previous page (opaque to clients); `next_cursor` is `null` on the last page.
#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    params(ListQuery),
    description = "Users in id order, `limit` 1 to 200 (default 50), opaque `cursor`. `search` matches part of \
                   the email, or the start of the first name, last name or id, case-insensitively for ASCII \
                   letters (other letters as written); `status` and `verification_level` filter exactly. Each \
                   user carries effective `permissions` (direct and through roles), `direct_permissions`, \
                   `roles`, `verification_level`, `email_verified`, `mfa` and `sessions_active` (sessions not \
                   ended and used within the idle time-out, as stored: last use is written behind every 15 s).",
    responses((status = 200, body = Page)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Authorized<UsersRead>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<Page>, ApiError> {
    let limit = page_limit(query.limit.as_deref())?;
    let filter = user_filter(query.status.as_deref(), query.verification_level.as_deref(), query.search.as_deref())?;
    let after = match query.cursor.as_deref() {
        None => None,
        Some(text) => Some(UserId::from_uuid(
            uuid::Uuid::try_parse(text).map_err(|_| ApiError::field("cursor", "not a cursor this API issued"))?,
        )),
    };
    // One more than asked tells whether another page follows.
    let mut users = state.identity().admin.list_users(&filter, after, limit + 1, active_since(&state)).await?;
    let more = users.len() > limit as usize;
    users.truncate(limit as usize);
    let next_cursor = if more { users.last().map(|summary| summary.user.id.to_string()) } else { None };
    let items = users.into_iter().map(UserItem::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page { items, next_cursor }))
}

/// The actions of a request: known, at least one, at most `ACTIONS_PER_REQUEST_MAX`;
/// duplicates count once.
pub(crate) fn parse_actions(actions: &[String]) -> Result<BTreeSet<&'static str>, ApiError> {
    if actions.is_empty() {
        return Err(ApiError::field("actions", "must name at least one permission action"));
    }
    if actions.len() > ACTIONS_PER_REQUEST_MAX {
        return Err(ApiError::field("actions", format!("must have at most {ACTIONS_PER_REQUEST_MAX} entries")));
    }
    let unknown: Vec<&str> =
        actions.iter().filter(|action| Action::parse(action).is_none()).map(String::as_str).collect();
    if !unknown.is_empty() {
        return Err(ApiError::field(
            "actions",
            format!("unknown permission actions {unknown:?}; GET /v1/admin/permissions lists them"),
        ));
    }
    Ok(actions.iter().filter_map(|action| Action::parse(action)).map(Action::as_str).collect())
}

/// Refuses granting an action the granting admin does not hold.
pub(crate) fn check_no_escalation(admin: &User, actions: &BTreeSet<&'static str>) -> Result<(), ApiError> {
    let missing: Vec<&str> = actions.iter().copied().filter(|action| !admin.holds(action)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!("an admin can only grant actions they hold; not held: {missing:?}"),
    ))
}

/// Refuses an admin's change to another user who holds an action the admin does not hold: a
/// lesser admin cannot block, sign out, strip, reset or edit a greater one. It is the rule of
/// no escalation seen from the target's side (an admin who could lock out whoever outranks them
/// could remove the only people able to undo it). Users without admin actions (customers) are
/// outranked by every admin; an admin's own account is checked by the routes' own rules.
pub(crate) fn check_outranks(admin: &User, target: &User) -> Result<(), ApiError> {
    if admin.id == target.id {
        return Ok(());
    }
    let missing: Vec<String> =
        target.effective_permissions().into_iter().filter(|action| !admin.holds(action)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!("an admin can only change users whose actions they all hold; not held: {missing:?}"),
    ))
}

/// The user `id`, or `404`; then `403` unless `admin` outranks them (`check_outranks`).
pub(crate) async fn outranked_user(state: &AppState, admin: &User, id: uuid::Uuid) -> Result<User, ApiError> {
    let user = target_user(state, id).await?;
    check_outranks(admin, &user)?;
    Ok(user)
}

pub(crate) fn action_names(actions: &BTreeSet<&'static str>) -> Vec<String> {
    actions.iter().map(|action| (*action).to_owned()).collect()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminBody {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = UserCreated)]
struct Created {
    user_id: String,
}

/// `POST /v1/admin/users {email, password, first_name, last_name, actions}`
/// (`admin_users:manage`) → `201 {user_id}`. Field checks are those of registration, plus the
/// actions; every problem is reported at once. A taken email is `409 CONFLICT`.
#[utoipa::path(
    post,
    path = "/v1/admin/users",
    tag = "admin",
    request_body = CreateAdminBody,
    responses((status = 201, body = Created)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    admin: Authorized<AdminUsersManage>,
    context: AuditContext,
    ApiJson(body): ApiJson<CreateAdminBody>,
) -> Result<Response, ApiError> {
    let actions = parse_actions(&body.actions);
    let checks = [
        ("email", check_email(&body.email)),
        ("password", check_policy(&body.password)),
        ("first_name", check_name(&body.first_name)),
        ("last_name", check_name(&body.last_name)),
        ("actions", actions.as_ref().map(|_| ()).map_err(|error| error.detail.clone())),
    ];
    let errors: Vec<FieldError> = checks
        .into_iter()
        .filter_map(|(field, check)| check.err().map(|message| FieldError { field: field.to_owned(), message }))
        .collect();
    if !errors.is_empty() {
        let detail = errors.iter().map(|error| format!("{}: {}", error.field, error.message)).collect::<Vec<_>>();
        let mut problem = ApiError::new(ErrorCode::ValidationError, detail.join("; "));
        problem.errors = errors;
        return Err(problem);
    }
    let actions = actions?;
    check_no_escalation(&admin.admin, &actions)?;
    let identity = state.identity();
    let password_hash = identity.passwords.hash(body.password).await?;
    let user = User::new(
        UserId::from_uuid(identity.ids.next_uuid()),
        body.email.trim().to_owned(),
        password_hash,
        body.first_name.trim().to_owned(),
        body.last_name.trim().to_owned(),
        action_names(&actions).into_iter().collect(),
        identity.now(),
    );
    let entry = record(
        identity,
        &context,
        &Actor::user(admin.admin_id()),
        Event::new("user.create").on_user(user.id).details(json!({"actions": action_names(&actions)})),
    );
    match identity.users.create_user(&user, &entry).await {
        Ok(()) => {}
        Err(CreateUserError::EmailTaken) => {
            return Err(ApiError::new(ErrorCode::Conflict, "a user with this email is already registered"));
        }
        Err(CreateUserError::IdTaken) => return Err(ApiError::internal("a fresh user id collided")),
        Err(CreateUserError::Store(error)) => return Err(error.into()),
    }
    let location = format!("/v1/admin/users/{}", user.id);
    Ok(audited(crate::accounts::created(location, Created { user_id: user.id.to_string() })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionsBody {
    pub actions: Vec<String>,
}

/// `POST /v1/admin/users/{id}/permissions {actions}` (`admin_users:manage`) → `204`. Actions
/// already held stay held once; unknown user → `404`.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/permissions",
    tag = "admin",
    request_body = ActionsBody,
    params(("id" = uuid::Uuid, Path, description = "The user id")),
    responses((status = 204, description = "Granted")),
    security(("bearer" = []))
)]
pub async fn grant(
    State(state): State<AppState>,
    admin: Authorized<AdminUsersManage>,
    context: AuditContext,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<ActionsBody>,
) -> Result<Response, ApiError> {
    let actions = parse_actions(&body.actions)?;
    check_no_escalation(&admin.admin, &actions)?;
    let target = UserId::from_uuid(id);
    let identity = state.identity();
    let entry = record(
        identity,
        &context,
        &Actor::user(admin.admin_id()),
        Event::new("user.permissions_grant").on_user(target).details(json!({"actions": action_names(&actions)})),
    );
    if !identity.admin.grant_permissions(target, &action_names(&actions), &entry).await? {
        return Err(ApiError::not_found("user"));
    }
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

/// `DELETE /v1/admin/users/{id}/permissions {actions}` (`admin_users:manage`) → `204`.
/// Actions not held are ignored; unknown user → `404`; an admin revoking their own
/// `admin_users:manage` → `409 CONFLICT`.
#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}/permissions",
    tag = "admin",
    request_body = ActionsBody,
    params(("id" = uuid::Uuid, Path, description = "The user id")),
    responses((status = 204, description = "Revoked")),
    security(("bearer" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    admin: Authorized<AdminUsersManage>,
    context: AuditContext,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<ActionsBody>,
) -> Result<Response, ApiError> {
    let actions = parse_actions(&body.actions)?;
    let target = UserId::from_uuid(id);
    // Locked out only if the action is not also held through a role.
    let manage = Action::AdminUsersManage.as_str();
    if target == admin.admin_id()
        && actions.contains(manage)
        && !admin.admin.roles.iter().any(|role| role.actions.contains(manage))
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "an admin cannot revoke their own admin_users:manage; another admin must",
        ));
    }
    outranked_user(&state, &admin.admin, id).await?;
    let identity = state.identity();
    let entry = record(
        identity,
        &context,
        &Actor::user(admin.admin_id()),
        Event::new("user.permissions_revoke").on_user(target).details(json!({"actions": action_names(&actions)})),
    );
    if !identity.admin.revoke_permissions(target, &action_names(&actions), &entry).await? {
        return Err(ApiError::not_found("user"));
    }
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserStatusBody {
    pub status: String,
    pub reason: Option<String>,
}

/// `POST /v1/admin/users/{id}/status {status: "active"|"blocked", reason?}` (`users:block`) →
/// `204`. Blocking ends every session of the user before answering; an admin cannot block
/// themselves (`409 CONFLICT`); unknown user → `404`; a user holding an action the caller does
/// not hold → `403` (so for every change to another user on these routes).
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/status",
    tag = "admin",
    request_body = UserStatusBody,
    params(("id" = uuid::Uuid, Path, description = "The user id")),
    responses((status = 204, description = "Status set; blocking ends the user's sessions at once")),
    security(("bearer" = []))
)]
pub async fn set_status(
    State(state): State<AppState>,
    admin: Authorized<UsersBlock>,
    context: AuditContext,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<UserStatusBody>,
) -> Result<Response, ApiError> {
    let status = UserStatus::parse(&body.status)
        .ok_or_else(|| ApiError::field("status", "must be \"active\" or \"blocked\""))?;
    let reason_text = input::text("reason", body.reason.as_deref(), DESCRIPTION_LENGTH_MAX)?;
    let target = UserId::from_uuid(id);
    if target == admin.admin_id() && status == UserStatus::Blocked {
        return Err(ApiError::new(ErrorCode::Conflict, "an admin cannot block themselves"));
    }
    outranked_user(&state, &admin.admin, id).await?;
    let identity = state.identity();
    let actor = Actor::user(admin.admin_id());
    let action = match status {
        UserStatus::Blocked => "user.block",
        UserStatus::Active => "user.unblock",
    };
    let entry =
        record(identity, &context, &actor, Event::new(action).on_user(target).details(json!({"reason": reason_text})));
    if !identity.admin.set_user_status(target, status, &entry).await? {
        return Err(ApiError::not_found("user"));
    }
    // After the status is stored, so a login racing the block either fails its status check
    // or has its new session ended here (or by its own re-check in `start_session`).
    if status == UserStatus::Blocked {
        identity.protection.api_keys.forget_user(target);
        end_sessions(&state, target.as_uuid(), None, reason::USER_BLOCKED, &actor, &context).await?;
        // Sessions in memory the store did not list (none are expected), ended as before.
        identity.sessions.terminate_user(target, reason::USER_BLOCKED).await?;
    }
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CatalogEntry {
    action: &'static str,
    description: &'static str,
}

/// The user `id`, or `404`.
async fn target_user(state: &AppState, id: uuid::Uuid) -> Result<User, ApiError> {
    state.identity().users.user_by_id(UserId::from_uuid(id)).await?.ok_or_else(|| ApiError::not_found("user"))
}

/// `GET /v1/admin/users/count?search&status&verification_level` (`users:read`) → `{count}`.
#[utoipa::path(
    get,
    path = "/v1/admin/users/count",
    tag = "admin",
    params(CountQuery),
    description = "How many users the same filters as `GET /v1/admin/users` match.",
    responses((status = 200, body = Count)),
    security(("bearer" = []))
)]
pub async fn count(
    State(state): State<AppState>,
    _admin: Authorized<UsersRead>,
    ApiQuery(query): ApiQuery<CountQuery>,
) -> Result<axum::Json<Count>, ApiError> {
    let filter = user_filter(query.status.as_deref(), query.verification_level.as_deref(), query.search.as_deref())?;
    let count = state.identity().admin.count_users(&filter).await?;
    Ok(axum::Json(Count { count }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = UserCount)]
pub struct Count {
    count: u64,
}

/// One user as an admin sees them: the listing's item, with live sessions counted exactly.
async fn user_view(state: &AppState, user: User) -> Result<UserItem, ApiError> {
    let identity = state.identity();
    let totp_enabled = identity.protection.second_factor.totp_enabled(user.id).await?;
    let sessions_active = identity.sessions.live_of(user.id).await?.len() as u64;
    UserItem::of(UserSummary { user, totp_enabled, sessions_active })
}

/// `GET /v1/admin/users/{id}` (`users:read`) → the user.
#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The user id")),
    description = "One user, as the listing shows them; `sessions_active` here is exact (the live sessions in \
                   memory, idle ones ended on the way). Unknown id: `404`.",
    responses((status = 200, body = UserItem)),
    security(("bearer" = []))
)]
pub async fn get_one(
    State(state): State<AppState>,
    _admin: Authorized<UsersRead>,
    IdPath(id): IdPath,
) -> Result<axum::Json<UserItem>, ApiError> {
    let user = target_user(&state, id).await?;
    Ok(axum::Json(user_view(&state, user).await?))
}

/// `PATCH /v1/admin/users/{id} {first_name?, last_name?, phone?}` (`users:write`) → `200` the
/// user.
#[utoipa::path(
    patch,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    request_body = ProfileBody,
    params(("id" = uuid::Uuid, Path, description = "The user id")),
    description = "Edits a user's profile, as `PATCH /v1/users/me` does (the email is not editable). Unknown \
                   id: `404`.",
    responses((status = 200, body = UserItem)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    admin: Authorized<UsersWrite>,
    context: AuditContext,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<ProfileBody>,
) -> Result<Response, ApiError> {
    let change = profile_change(body)?;
    outranked_user(&state, &admin.admin, id).await?;
    let identity = state.identity();
    let target = UserId::from_uuid(id);
    let entry = record(
        identity,
        &context,
        &Actor::user(admin.admin_id()),
        Event::new("user.profile_update").on_user(target).details(changed_fields(&change)),
    );
    let user = identity.self_service.update_profile(target, &change, &entry).await?;
    let user = user.ok_or_else(|| ApiError::not_found("user"))?;
    Ok(audited(axum::Json(user_view(&state, user).await?).into_response()))
}

/// `POST /v1/admin/users/{id}/password-reset` (`users:write`) → `202`.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/password-reset",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The user id")),
    description = "Ends every session of the user at once and mails them a reset code (as `POST \
                   /v1/auth/password/forgot` would; they finish with `POST /v1/auth/password/reset`). The current \
                   password keeps working until then (block the user to lock them out). No body. Unknown id: \
                   `404`; a full mail queue: `503` (nothing changed: no code, no session ended; ask again).",
    responses((status = 202, body = crate::auth::self_service::AcceptedAnswer)),
    security(("bearer" = []))
)]
pub async fn password_reset(
    State(state): State<AppState>,
    admin: Authorized<UsersWrite>,
    context: AuditContext,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let identity = state.identity();
    let user = outranked_user(&state, &admin.admin, id).await?;
    let issued = codes::issue(identity, user.id, CodePurpose::PasswordReset).await?;
    let actor = Actor::user(admin.admin_id());
    let entry = record(identity, &context, &actor, Event::new("user.password_reset").on_user(user.id));
    let minutes = codes::CODE_TTL.as_secs() / 60;
    let body = format!(
        "An administrator started a password reset for your account.\r\nYour sessions have ended. \
         Your reset code is:\r\n\r\n    {}\r\n\r\nIt works once, for {minutes} minutes.\r\n",
        issued.code
    );
    // The mail's place first: when it cannot be queued nothing changes (no code replaced, no
    // session ended), and the admin asks again.
    let mail = identity.mail.reserve(&user.email, "Your Tally password reset code", body).map_err(|error| {
        tracing::warn!(%error, user_id = %user.id, "an admin password reset mail could not be queued");
        ApiError::new(ErrorCode::Overloaded, "the reset mail cannot be sent right now; retry later")
    })?;
    if !identity.self_service.issue_code(&issued.stored, &entry).await? {
        return Err(ApiError::not_found("user"));
    }
    end_sessions(&state, user.id.as_uuid(), None, end_reason::PASSWORD_RESET_BY_ADMIN, &actor, &context).await?;
    mail.send();
    let answer = crate::auth::self_service::AcceptedAnswer {
        message: "the user's sessions have ended and a reset code has been mailed to them",
    };
    Ok(audited((StatusCode::ACCEPTED, axum::Json(answer)).into_response()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AdminSessionItem)]
pub struct SessionItem {
    session_id: String,
    client_ip: Option<String>,
    user_agent: Option<String>,
    created_at: String,
    last_activity_at: String,
}

/// `GET /v1/admin/users/{id}/sessions` (`users:read`) → the user's live sessions.
#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}/sessions",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The user id")),
    description = "The user's live sessions, oldest first (a plain array, at most 10, as \
                   `GET /v1/users/me/sessions`). Unknown id: `404`.",
    responses((status = 200, body = Vec<SessionItem>)),
    security(("bearer" = []))
)]
pub async fn sessions(
    State(state): State<AppState>,
    _admin: Authorized<UsersRead>,
    IdPath(id): IdPath,
) -> Result<axum::Json<Vec<SessionItem>>, ApiError> {
    let user = target_user(&state, id).await?;
    let items = state
        .identity()
        .sessions
        .live_of(user.id)
        .await?
        .into_iter()
        .map(|session| {
            Ok(SessionItem {
                session_id: session.id.to_string(),
                client_ip: session.client_ip,
                user_agent: session.user_agent,
                created_at: rfc3339(session.created_at)?,
                last_activity_at: rfc3339(session.last_activity_at)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(axum::Json(items))
}

/// `DELETE /v1/admin/users/{id}/sessions` (`users:block`) → `200 {ended}`.
#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}/sessions",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The user id")),
    description = "Ends every session of the user at once (an admin may end their own too; they stay able to \
                   log in). Answers how many ended. Unknown id: `404`.",
    responses((status = 200, body = crate::auth::sessions::Ended)),
    security(("bearer" = []))
)]
pub async fn end_user_sessions(
    State(state): State<AppState>,
    admin: Authorized<UsersBlock>,
    context: AuditContext,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let user = outranked_user(&state, &admin.admin, id).await?;
    let actor = Actor::user(admin.admin_id());
    let ended = end_sessions(&state, user.id.as_uuid(), None, end_reason::ENDED_BY_ADMIN, &actor, &context).await?;
    let identity = state.identity();
    let event = Event::new("user.sessions_end").on_user(user.id).details(json!({"ended": ended}));
    record_after_change(identity, record(identity, &context, &actor, event)).await;
    Ok(audited(axum::Json(crate::auth::sessions::Ended { ended }).into_response()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = VerificationBody)]
#[serde(deny_unknown_fields)]
pub struct VerificationBody {
    /// `none`, `basic`, `verified` or `enhanced`.
    pub level: String,
    /// Why (what was checked); kept in the audit entry, up to 500 characters.
    pub notes: Option<String>,
}

/// `POST /v1/admin/users/{id}/verification {level, notes?}` (`users:verify`) → `204`.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/verification",
    tag = "admin",
    request_body = VerificationBody,
    params(("id" = uuid::Uuid, Path, description = "The user id")),
    description = "Sets the user's verification level (any level, up or down; setting the current one again is \
                   a `204` that is still audited). `notes` are kept in the audit entry (`user.verification`, \
                   with the previous level), not shown to the user. Unknown id: `404`.",
    responses((status = 204, description = "The level is set")),
    security(("bearer" = []))
)]
pub async fn set_verification(
    State(state): State<AppState>,
    admin: Authorized<UsersVerify>,
    context: AuditContext,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<VerificationBody>,
) -> Result<Response, ApiError> {
    let level = VerificationLevel::parse(&body.level)
        .ok_or_else(|| ApiError::field("level", "must be one of none, basic, verified, enhanced"))?;
    let notes = input::text("notes", body.notes.as_deref(), DESCRIPTION_LENGTH_MAX)?;
    // The read, the store's write and the engine's copy in one critical section: two changes
    // racing could otherwise be stored in one order and applied in memory in the other,
    // leaving the engine enforcing a level the store no longer says until the next start (and
    // the audit's `previous_level` naming a level already replaced). One lock for every user:
    // these are rare admin writes.
    static LEVEL_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _writing = LEVEL_WRITES.lock().await;
    let user = outranked_user(&state, &admin.admin, id).await?;
    // The engine enforces levels from memory: no change while it is still starting (`503`),
    // which it would not see (it takes the levels stored when identity opened).
    let engine = state.engine()?;
    let identity = state.identity();
    let entry = record(
        identity,
        &context,
        &Actor::user(admin.admin_id()),
        Event::new("user.verification").on_user(user.id).details(json!({
            "level": level.as_str(),
            "previous_level": user.verification_level.as_str(),
            "notes": notes,
        })),
    );
    if !identity.self_service.set_verification_level(user.id, level, &entry).await? {
        return Err(ApiError::not_found("user"));
    }
    // Stored: from now on the engine enforces the new level's limits (limits.rs).
    engine.limits().set_level(user.id, level);
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

/// `GET /v1/admin/permissions` (`admin_users:read`) → `[{action, description}]`, every action
/// of the catalog in its fixed order.
#[utoipa::path(
    get,
    path = "/v1/admin/permissions",
    tag = "admin",
    responses((status = 200, body = Vec<CatalogEntry>)),
    security(("bearer" = []))
)]
pub async fn catalog(_admin: Authorized<AdminUsersRead>) -> Response {
    let entries: Vec<CatalogEntry> = Action::ALL
        .into_iter()
        .map(|action| CatalogEntry { action: action.as_str(), description: action.description() })
        .collect();
    axum::Json(entries).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn actions_must_be_known_non_empty_and_bounded_and_count_once() {
        let names = |list: &[&str]| list.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        assert!(parse_actions(&[]).is_err());
        assert!(parse_actions(&names(&["users:read", "users:fly"])).is_err());
        assert!(parse_actions(&names(&["transfers:write"])).is_err(), "an API-key scope is not an admin action");
        assert!(parse_actions(&vec!["users:read".to_owned(); ACTIONS_PER_REQUEST_MAX + 1]).is_err());
        let parsed = parse_actions(&names(&["users:read", "users:read", "ops:read"])).unwrap();
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn page_limits_are_whole_numbers_within_the_bound() {
        assert_eq!(page_limit(None).unwrap(), USERS_PAGE_DEFAULT);
        assert_eq!(page_limit(Some("1")).unwrap(), 1);
        assert_eq!(page_limit(Some(&USERS_PAGE_MAX.to_string())).unwrap(), USERS_PAGE_MAX);
        for bad in ["0", "-1", "201", "ten", "1.5", ""] {
            assert!(page_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
