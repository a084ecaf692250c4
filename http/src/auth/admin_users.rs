//! Admin users and permissions (API.md, "Admin"): `GET /v1/admin/users`, `POST
//! /v1/admin/users`, `POST`/`DELETE /v1/admin/users/{id}/permissions`, `POST
//! /v1/admin/users/{id}/status` and `GET /v1/admin/permissions`.
//!
//! Rules where the contract is silent (ARCHITECTURE.md lists them too):
//! - An admin cannot block themselves nor revoke their own `admin_users:manage` (`409
//!   CONFLICT`): either would lock out the one doing it, possibly the last admin able to undo.
//! - An admin grants only actions they hold themselves (`403 FORBIDDEN` otherwise), when
//!   creating an admin or granting: `admin_users:manage` is not a way to escalate.
//! - Blocking ends every session of the user at once (their access tokens answer `401`);
//!   unblocking revives none: the user logs in again.
//!
//! Every change is logged with `target: "audit"`: the admin, the target user, what changed
//! and the reason if given.

use std::collections::BTreeSet;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_actors::sessions::reason;
use tally_engine::{ErrorCode, UserId};
use tally_persistence::users::{CreateUserError, User, UserStatus};

use super::caller::Authorized;
use super::password::check_policy;
use super::permissions::{Action, AdminUsersManage, AdminUsersRead, UsersBlock, UsersRead};
use super::validate::{check_email, check_name};
use crate::input::{self, DESCRIPTION_LENGTH_MAX, IdPath};
use crate::json::ApiJson;
use crate::problem::{ApiError, FieldError};
use crate::state::AppState;
use crate::views::rfc3339;

/// Users per page when `limit` is not given.
pub const USERS_PAGE_DEFAULT: u32 = 50;

/// Most users per page: each carries its permissions, so a page stays well under 100 KB.
pub const USERS_PAGE_MAX: u32 = 200;

/// Most entries in one `actions` list. The catalog has 21 actions; a list far longer is not a
/// mistake a person makes, and is refused before any of it is looked at.
pub const ACTIONS_PER_REQUEST_MAX: usize = 64;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub cursor: Option<String>,
    pub limit: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UserItem {
    user_id: String,
    email: String,
    first_name: String,
    last_name: String,
    status: &'static str,
    permissions: Vec<String>,
    created_at: String,
}

impl UserItem {
    fn of(user: User) -> Result<UserItem, ApiError> {
        Ok(UserItem {
            user_id: user.id.to_string(),
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            status: user.status.as_str(),
            permissions: user.permissions.into_iter().collect(),
            created_at: rfc3339(user.created_at)?,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = UserPage)]
struct Page {
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

/// `GET /v1/admin/users?status=&cursor=&limit=` (`users:read`) → `{items, next_cursor}`, in
/// user-id order. The cursor is the id of the last user of the previous page (opaque to
/// clients); `next_cursor` is `null` on the last page.
#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    params(ListQuery),
    responses((status = 200, body = Page)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Authorized<UsersRead>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::new(ErrorCode::ValidationError, rejection.body_text()))?;
    let limit = page_limit(query.limit.as_deref())?;
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(
            UserStatus::parse(text).ok_or_else(|| ApiError::field("status", "must be \"active\" or \"blocked\""))?,
        ),
    };
    let after = match query.cursor.as_deref() {
        None => None,
        Some(text) => Some(UserId::from_uuid(
            uuid::Uuid::try_parse(text).map_err(|_| ApiError::field("cursor", "not a cursor this API issued"))?,
        )),
    };
    // One more than asked tells whether another page follows.
    let mut users = state.identity().admin.list_users(after, status, limit + 1).await?;
    let more = users.len() > limit as usize;
    users.truncate(limit as usize);
    let next_cursor = if more { users.last().map(|user| user.id.to_string()) } else { None };
    let items = users.into_iter().map(UserItem::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(Page { items, next_cursor }).into_response())
}

/// The actions of a request: known, at least one, at most `ACTIONS_PER_REQUEST_MAX`;
/// duplicates count once.
fn parse_actions(actions: &[String]) -> Result<BTreeSet<&'static str>, ApiError> {
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
fn check_no_escalation(admin: &User, actions: &BTreeSet<&'static str>) -> Result<(), ApiError> {
    let missing: Vec<&str> = actions.iter().copied().filter(|action| !admin.permissions.contains(*action)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!("an admin can only grant actions they hold; not held: {missing:?}"),
    ))
}

fn action_names(actions: &BTreeSet<&'static str>) -> Vec<String> {
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
    let user = User {
        id: UserId::from_uuid(identity.ids.next_uuid()),
        email: body.email.trim().to_owned(),
        password_hash,
        first_name: body.first_name.trim().to_owned(),
        last_name: body.last_name.trim().to_owned(),
        status: UserStatus::Active,
        permissions: action_names(&actions).into_iter().collect(),
        created_at: identity.now(),
    };
    match identity.users.create_user(&user).await {
        Ok(()) => {}
        Err(CreateUserError::EmailTaken) => {
            return Err(ApiError::new(ErrorCode::Conflict, "a user with this email is already registered"));
        }
        Err(CreateUserError::IdTaken) => return Err(ApiError::internal("a fresh user id collided")),
        Err(CreateUserError::Store(error)) => return Err(error.into()),
    }
    tracing::info!(target: "audit", admin = %admin.admin_id(), user = %user.id, actions = ?user.permissions, "admin user created");
    Ok((StatusCode::CREATED, axum::Json(Created { user_id: user.id.to_string() })).into_response())
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
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<ActionsBody>,
) -> Result<Response, ApiError> {
    let actions = parse_actions(&body.actions)?;
    check_no_escalation(&admin.admin, &actions)?;
    let target = UserId::from_uuid(id);
    if !state.identity().admin.grant_permissions(target, &action_names(&actions)).await? {
        return Err(ApiError::not_found("user"));
    }
    tracing::info!(target: "audit", admin = %admin.admin_id(), user = %target, actions = ?action_names(&actions), "permissions granted");
    Ok(StatusCode::NO_CONTENT.into_response())
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
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<ActionsBody>,
) -> Result<Response, ApiError> {
    let actions = parse_actions(&body.actions)?;
    let target = UserId::from_uuid(id);
    if target == admin.admin_id() && actions.contains(Action::AdminUsersManage.as_str()) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "an admin cannot revoke their own admin_users:manage; another admin must",
        ));
    }
    if !state.identity().admin.revoke_permissions(target, &action_names(&actions)).await? {
        return Err(ApiError::not_found("user"));
    }
    tracing::info!(target: "audit", admin = %admin.admin_id(), user = %target, actions = ?action_names(&actions), "permissions revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserStatusBody {
    pub status: String,
    pub reason: Option<String>,
}

/// `POST /v1/admin/users/{id}/status {status: "active"|"blocked", reason?}` (`users:block`) →
/// `204`. Blocking ends every session of the user before answering; an admin cannot block
/// themselves (`409 CONFLICT`); unknown user → `404`.
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
    let identity = state.identity();
    if !identity.admin.set_user_status(target, status).await? {
        return Err(ApiError::not_found("user"));
    }
    // After the status is stored, so a login racing the block either fails its status check
    // or has its new session ended here (or by its own re-check in `start_session`).
    let ended = match status {
        UserStatus::Blocked => {
            identity.protection.api_keys.forget_user(target);
            identity.sessions.terminate_user(target, reason::USER_BLOCKED).await?
        }
        UserStatus::Active => 0,
    };
    tracing::info!(
        target: "audit",
        admin = %admin.admin_id(),
        user = %target,
        status = status.as_str(),
        sessions_ended = ended,
        reason = reason_text.as_deref().unwrap_or(""),
        "user status set"
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CatalogEntry {
    action: &'static str,
    description: &'static str,
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
