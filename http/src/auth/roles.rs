//! Roles (API.md 1.1): `GET`/`POST /v1/admin/roles`, `GET`/`PUT`/`DELETE
//! /v1/admin/roles/{id}`, `POST /v1/admin/users/{id}/roles`, `DELETE
//! /v1/admin/users/{id}/roles/{role_id}`.
//!
//! A role is a named set of permission actions; a user's effective permissions are their
//! direct actions and every held role's. Nothing caches permissions (`Authorized<P>` reads the
//! user, roles included, on every request), so granting, changing, assigning or unassigning a
//! role takes effect on the very next request, on every node.
//!
//! Rules where the contract is silent (docs/identity.md):
//! - No escalation: an admin may create or change a role only with actions they hold, and
//!   assign a role only if they hold all its actions (`403`), as for direct grants.
//! - No lock-out: unassigning a role from oneself, or changing a role one holds, so that one
//!   would lose `admin_users:manage` is `409 CONFLICT`.
//! - A role in use cannot be deleted (`409`, with the number of holders); names are unique
//!   case-insensitively (`409`); at most `ROLES_MAX` roles; a role may have no action.
//! - Assigning a role already held, or unassigning one not held, is a `204` no-op (nothing is
//!   audited: nothing changed).

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tally_engine::{ErrorCode, UserId};
use tally_persistence::users::User;
use tally_persistence::users::roles::{Role, RoleAssign, RoleDelete, RoleUnassign, RoleWrite};
use uuid::Uuid;

use super::admin_users::{ACTIONS_PER_REQUEST_MAX, check_no_escalation, outranked_user};
use super::caller::Authorized;
use super::permissions::{Action, AdminUsersManage, AdminUsersRead};
use crate::audit::{Actor, AuditContext, Event, audited, record};
use crate::input::{self, DESCRIPTION_LENGTH_MAX, IdPath};
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::rfc3339;

/// Roles at most: a bank's job functions fit in dozens; the list is answered unpaged.
pub const ROLES_MAX: u32 = 256;

/// Longest role name.
pub const ROLE_NAME_LENGTH_MAX: usize = 100;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = RoleBody)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// 1 to 100 printable characters, unique case-insensitively.
    pub name: String,
    pub description: Option<String>,
    /// Permission actions of the catalog (`GET /v1/admin/permissions`); may be empty.
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RoleView)]
pub struct RoleView {
    id: String,
    name: String,
    description: Option<String>,
    actions: Vec<String>,
    /// Users holding the role.
    users: u64,
    created_at: String,
    updated_at: String,
}

impl RoleView {
    fn of(role: Role) -> Result<RoleView, ApiError> {
        Ok(RoleView {
            id: role.id.to_string(),
            name: role.name,
            description: role.description,
            actions: role.actions.into_iter().collect(),
            users: role.holders,
            created_at: rfc3339(role.created_at)?,
            updated_at: rfc3339(role.updated_at)?,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RoleList)]
pub struct RoleList {
    items: Vec<RoleView>,
}

/// A role body's checked parts: name, description, actions (known, at most
/// `ACTIONS_PER_REQUEST_MAX`, duplicates once).
fn checked(body: &RoleBody) -> Result<(String, Option<String>, BTreeSet<&'static str>), ApiError> {
    let name = input::required_text("name", &body.name, ROLE_NAME_LENGTH_MAX)?;
    let description = input::text("description", body.description.as_deref(), DESCRIPTION_LENGTH_MAX)?;
    if body.actions.len() > ACTIONS_PER_REQUEST_MAX {
        return Err(ApiError::field("actions", format!("must have at most {ACTIONS_PER_REQUEST_MAX} entries")));
    }
    let unknown: Vec<&str> =
        body.actions.iter().filter(|action| Action::parse(action).is_none()).map(String::as_str).collect();
    if !unknown.is_empty() {
        return Err(ApiError::field(
            "actions",
            format!("unknown permission actions {unknown:?}; GET /v1/admin/permissions lists them"),
        ));
    }
    let actions = body.actions.iter().filter_map(|action| Action::parse(action)).map(Action::as_str).collect();
    Ok((name, description, actions))
}

fn owned(actions: &BTreeSet<&'static str>) -> BTreeSet<String> {
    actions.iter().map(|action| (*action).to_owned()).collect()
}

fn role_id(text: &str, field: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(text).map_err(|_| ApiError::field(field, "must be a UUID"))
}

/// Whether `admin` would still hold `admin_users:manage` if role `role` granted
/// `role_actions` (or was not held at all, with `None`).
fn keeps_manage(admin: &User, role: Uuid, role_actions: Option<&BTreeSet<String>>) -> bool {
    let manage = Action::AdminUsersManage.as_str();
    admin.permissions.contains(manage)
        || admin.roles.iter().any(|held| held.id != role && held.actions.contains(manage))
        || role_actions.is_some_and(|actions| actions.contains(manage))
}

fn lockout() -> ApiError {
    ApiError::new(ErrorCode::Conflict, "this would take admin_users:manage from yourself; another admin must do it")
}

/// `GET /v1/admin/roles` (`admin_users:read`) → `{items}`, by name, unpaged (at most 256).
#[utoipa::path(
    get,
    path = "/v1/admin/roles",
    tag = "admin",
    responses((status = 200, body = RoleList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Authorized<AdminUsersRead>,
) -> Result<axum::Json<RoleList>, ApiError> {
    let roles = state.identity().roles.roles().await?;
    let items = roles.into_iter().map(RoleView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(RoleList { items }))
}

/// `POST /v1/admin/roles {name, description?, actions}` (`admin_users:manage`) → `201` role.
#[utoipa::path(
    post,
    path = "/v1/admin/roles",
    tag = "admin",
    request_body = RoleBody,
    description = "Creates a role. Its actions must be in the catalog and held by the caller (`403` otherwise: \
                   roles are no way to escalate). A name already used (case-insensitively) is `409`; so is a \
                   257th role.",
    responses((status = 201, body = RoleView)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    admin: Authorized<AdminUsersManage>,
    context: AuditContext,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<Response, ApiError> {
    let (name, description, actions) = checked(&body)?;
    check_no_escalation(&admin.admin, &actions)?;
    let identity = state.identity();
    let now = identity.now();
    let role = Role {
        id: identity.ids.next_uuid(),
        name,
        description,
        actions: owned(&actions),
        holders: 0,
        created_at: now,
        updated_at: now,
    };
    let entry = record(
        identity,
        &context,
        &Actor::user(admin.admin_id()),
        Event::new("role.create").target("role", role.id).details(json!({"name": role.name, "actions": role.actions})),
    );
    match identity.roles.create_role(&role, ROLES_MAX, &entry).await? {
        RoleWrite::Written => {}
        RoleWrite::NameTaken => return Err(ApiError::new(ErrorCode::Conflict, "a role with this name exists")),
        RoleWrite::TooMany => {
            return Err(ApiError::new(ErrorCode::Conflict, format!("there are already {ROLES_MAX} roles")));
        }
        RoleWrite::NotFound => return Err(ApiError::internal("a role being created was not found")),
    }
    let mut response = (StatusCode::CREATED, axum::Json(RoleView::of(role.clone())?)).into_response();
    if let Ok(location) = axum::http::HeaderValue::from_str(&format!("/v1/admin/roles/{}", role.id)) {
        response.headers_mut().insert(axum::http::header::LOCATION, location);
    }
    Ok(audited(response))
}

/// `GET /v1/admin/roles/{id}` (`admin_users:read`) → role.
#[utoipa::path(
    get,
    path = "/v1/admin/roles/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The role id")),
    responses((status = 200, body = RoleView)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    _admin: Authorized<AdminUsersRead>,
    IdPath(id): IdPath,
) -> Result<axum::Json<RoleView>, ApiError> {
    let role = state.identity().roles.role(id).await?.ok_or_else(|| ApiError::not_found("role"))?;
    Ok(axum::Json(RoleView::of(role)?))
}

/// `PUT /v1/admin/roles/{id} {name, description?, actions}` (`admin_users:manage`) → `200`.
#[utoipa::path(
    put,
    path = "/v1/admin/roles/{id}",
    tag = "admin",
    request_body = RoleBody,
    params(("id" = uuid::Uuid, Path, description = "The role id")),
    description = "Replaces a role's name, description and actions; every holder's permissions change on their \
                   next request. The same checks as creating, and the caller must hold every action the role has \
                   now (`403`); changing a role you hold so that you would lose \
                   `admin_users:manage` is `409`. Unknown id: `404`.",
    responses((status = 200, body = RoleView)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    admin: Authorized<AdminUsersManage>,
    context: AuditContext,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<Response, ApiError> {
    let (name, description, actions) = checked(&body)?;
    check_no_escalation(&admin.admin, &actions)?;
    let identity = state.identity();
    let existing = identity.roles.role(id).await?.ok_or_else(|| ApiError::not_found("role"))?;
    // Changing a role changes every holder's powers: an admin may take away only actions they
    // hold, as they may grant only those (else a lesser admin could empty a greater one's role).
    let not_held: Vec<&str> =
        existing.actions.iter().map(String::as_str).filter(|action| !admin.admin.holds(action)).collect();
    if !not_held.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("an admin can only change roles whose actions they all hold; not held: {not_held:?}"),
        ));
    }
    let actions = owned(&actions);
    let holds_it = admin.admin.roles.iter().any(|held| held.id == id);
    if holds_it && !keeps_manage(&admin.admin, id, Some(&actions)) {
        return Err(lockout());
    }
    let role = Role { name, description, actions, updated_at: identity.now(), ..existing.clone() };
    let entry = record(
        identity,
        &context,
        &Actor::user(admin.admin_id()),
        Event::new("role.update").target("role", id).details(json!({
            "name": role.name,
            "actions": role.actions,
            "previous_name": existing.name,
            "previous_actions": existing.actions,
        })),
    );
    match identity.roles.update_role(&role, &entry).await? {
        RoleWrite::Written => {}
        RoleWrite::NameTaken => return Err(ApiError::new(ErrorCode::Conflict, "a role with this name exists")),
        RoleWrite::NotFound => return Err(ApiError::not_found("role")),
        RoleWrite::TooMany => return Err(ApiError::internal("a role update counted as a creation")),
    }
    Ok(audited(axum::Json(RoleView::of(role)?).into_response()))
}

/// `DELETE /v1/admin/roles/{id}` (`admin_users:manage`) → `204`; in use → `409`.
#[utoipa::path(
    delete,
    path = "/v1/admin/roles/{id}",
    tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "The role id")),
    description = "Deletes a role nobody holds. A role in use is `409 CONFLICT` (unassign it first); unknown id: \
                   `404`.",
    responses((status = 204, description = "Deleted")),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    admin: Authorized<AdminUsersManage>,
    context: AuditContext,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let identity = state.identity();
    let entry =
        record(identity, &context, &Actor::user(admin.admin_id()), Event::new("role.delete").target("role", id));
    match identity.roles.delete_role(id, &entry).await? {
        RoleDelete::Deleted => Ok(audited(StatusCode::NO_CONTENT.into_response())),
        RoleDelete::NotFound => Err(ApiError::not_found("role")),
        RoleDelete::InUse(holders) => {
            Err(ApiError::new(ErrorCode::Conflict, format!("the role is held by {holders} user(s); unassign it first")))
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = RoleAssignBody)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    pub role_id: String,
}

/// `POST /v1/admin/users/{id}/roles {role_id}` (`admin_users:manage`) → `204`.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/roles",
    tag = "admin",
    request_body = AssignBody,
    params(("id" = uuid::Uuid, Path, description = "The user id")),
    description = "Gives the user the role; their permissions include its actions from their next request. The \
                   caller must hold every action of the role (`403`). Already held: `204`, nothing changes. \
                   Unknown user or role: `404`.",
    responses((status = 204, description = "Assigned")),
    security(("bearer" = []))
)]
pub async fn assign(
    State(state): State<AppState>,
    admin: Authorized<AdminUsersManage>,
    context: AuditContext,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<AssignBody>,
) -> Result<Response, ApiError> {
    let role_id = role_id(&body.role_id, "role_id")?;
    let identity = state.identity();
    let role = identity.roles.role(role_id).await?.ok_or_else(|| ApiError::not_found("role"))?;
    let actions: BTreeSet<&str> = role.actions.iter().map(String::as_str).collect();
    let missing: Vec<&str> = actions.iter().copied().filter(|action| !admin.admin.holds(action)).collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("an admin can only assign roles whose actions they hold; not held: {missing:?}"),
        ));
    }
    let target = UserId::from_uuid(id);
    let entry = record(
        identity,
        &context,
        &Actor::user(admin.admin_id()),
        Event::new("role.assign").on_user(target).details(json!({"role_id": role.id.to_string(), "role": role.name})),
    );
    match identity.roles.assign_role(target, role_id, identity.now(), &entry).await? {
        RoleAssign::Assigned | RoleAssign::AlreadyHeld => Ok(audited(StatusCode::NO_CONTENT.into_response())),
        RoleAssign::NoSuchUser => Err(ApiError::not_found("user")),
        RoleAssign::NoSuchRole => Err(ApiError::not_found("role")),
    }
}

/// `DELETE /v1/admin/users/{id}/roles/{role_id}` (`admin_users:manage`) → `204`.
#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}/roles/{role_id}",
    tag = "admin",
    params(
        ("id" = uuid::Uuid, Path, description = "The user id"),
        ("role_id" = uuid::Uuid, Path, description = "The role id"),
    ),
    description = "Takes the role from the user; effective from their next request. Not held: `204`, nothing \
                   changes. Taking from yourself a role you need for `admin_users:manage` is `409`. Unknown user: \
                   `404`.",
    responses((status = 204, description = "Unassigned")),
    security(("bearer" = []))
)]
pub async fn unassign(
    State(state): State<AppState>,
    admin: Authorized<AdminUsersManage>,
    context: AuditContext,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Path((user, role)) =
        path.map_err(|rejection| ApiError::new(ErrorCode::ValidationError, rejection.body_text()))?;
    let target = UserId::from_uuid(role_id(&user, "id")?);
    let role = role_id(&role, "role_id")?;
    if target == admin.admin_id() && !keeps_manage(&admin.admin, role, None) {
        return Err(lockout());
    }
    outranked_user(&state, &admin.admin, target.as_uuid()).await?;
    let identity = state.identity();
    let entry = record(
        identity,
        &context,
        &Actor::user(admin.admin_id()),
        Event::new("role.unassign").on_user(target).details(json!({"role_id": role.to_string()})),
    );
    match identity.roles.unassign_role(target, role, &entry).await? {
        RoleUnassign::Removed | RoleUnassign::NotHeld => Ok(audited(StatusCode::NO_CONTENT.into_response())),
        RoleUnassign::NoSuchUser => Err(ApiError::not_found("user")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tally_engine::Timestamp;
    use tally_persistence::users::RoleGrant;

    use super::*;

    fn admin(direct: &[&str], roles: &[(u128, &[&str])]) -> User {
        let mut user = User::new(
            UserId::from_u128(1),
            "a@b.co".to_owned(),
            String::new(),
            "A".to_owned(),
            "B".to_owned(),
            direct.iter().map(|action| (*action).to_owned()).collect(),
            Timestamp::default(),
        );
        user.roles = roles
            .iter()
            .map(|(id, actions)| RoleGrant {
                id: Uuid::from_u128(*id),
                name: format!("r{id}"),
                actions: actions.iter().map(|action| (*action).to_owned()).collect(),
            })
            .collect();
        user
    }

    #[test]
    fn losing_manage_through_a_role_is_seen_whatever_else_grants_it() {
        let manage = "admin_users:manage";
        let only_role = admin(&[], &[(7, &[manage])]);
        assert!(!keeps_manage(&only_role, Uuid::from_u128(7), None), "unassigning the one role that grants it");
        assert!(keeps_manage(&only_role, Uuid::from_u128(7), Some(&[manage.to_owned()].into_iter().collect())));
        assert!(keeps_manage(&admin(&[manage], &[(7, &[manage])]), Uuid::from_u128(7), None), "held directly too");
        assert!(keeps_manage(&admin(&[], &[(7, &[manage]), (8, &[manage])]), Uuid::from_u128(7), None));
    }

    #[test]
    fn role_bodies_are_checked() {
        let body = |name: &str, actions: &[&str]| RoleBody {
            name: name.to_owned(),
            description: None,
            actions: actions.iter().map(|action| (*action).to_owned()).collect(),
        };
        assert!(checked(&body("", &[])).is_err());
        assert!(checked(&body(&"x".repeat(ROLE_NAME_LENGTH_MAX + 1), &[])).is_err());
        assert!(checked(&body("support", &["users:fly"])).is_err());
        let (name, _, actions) = checked(&body(" support ", &["users:read", "users:read"])).unwrap();
        assert_eq!((name.as_str(), actions.len()), ("support", 1));
        assert!(checked(&body("empty", &[])).is_ok(), "a role may hold no action yet");
    }
}
