//! Login sessions over HTTP: starting one (`start_session`, called by login and, after a
//! second factor, by MFA verification), `POST /v1/auth/logout`, `GET /v1/users/me/sessions`,
//! `DELETE /v1/users/me/sessions/{session_id}`, `DELETE /v1/users/me/sessions` (every other
//! one), and `end_sessions`, which password changes and resets and the admin routes use.
//!
//! The sessions themselves are `SessionActor`s behind `tally_actors::Sessions`; a session's id
//! is the `sid` of its access tokens and the family id of its refresh tokens. Ending one sets
//! its `ended` flag before anything is stored, so its tokens are refused at once, on the very
//! next request. Each ended session is then an `auth.session_ended` audit entry, written after
//! the session actor stored the revocation (the actor owns that write, so the entry cannot
//! share its transaction).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_actors::SessionError;
use tally_actors::sessions::reason;
use tally_engine::ErrorCode;
use tally_persistence::sessions::bounded_user_agent;
use tally_persistence::users::{User, UserStatus};

use super::caller::Caller;
use super::routes::token_pair;
use crate::audit::{Actor, AuditContext, Event, audited, record, record_after_change};
use crate::input::IdPath;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::rfc3339;

impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Store(error) => error.into(),
            SessionError::Overloaded => ApiError::new(ErrorCode::Overloaded, "too many sessions; retry shortly"),
        }
    }
}

/// Where a login comes from: the peer address of its connection (not a forwarding header,
/// which any client can write; behind a proxy this is the proxy) and its `User-Agent`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Present when the server was started with connect info (`tally serve` and the test
        // server are); an in-process `oneshot` has no peer, and the session records none.
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip().to_string());
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(bounded_user_agent);
        Ok(ClientInfo { ip, user_agent })
    }
}

/// Why a session ended, beyond `tally_actors::sessions::reason` (stored as `revoked_reason`).
pub mod end_reason {
    pub const PASSWORD_CHANGED: &str = "password_changed";
    pub const PASSWORD_RESET: &str = "password_reset";
    pub const ENDED_BY_USER: &str = "ended_by_user";
    pub const ENDED_BY_ADMIN: &str = "ended_by_admin";
    pub const PASSWORD_RESET_BY_ADMIN: &str = "password_reset_by_admin";
}

/// Ends every live session of `user` except `keep`, each refusing its tokens at once, and
/// records one `auth.session_ended` entry per session ended (by `actor`, in `context`).
/// Returns how many ended.
pub async fn end_sessions(
    state: &AppState,
    user: uuid::Uuid,
    keep: Option<uuid::Uuid>,
    why: &'static str,
    actor: &Actor,
    context: &AuditContext,
) -> Result<usize, ApiError> {
    let identity = state.identity();
    let user = tally_engine::UserId::from_uuid(user);
    let mut ended = 0;
    for session in identity.sessions.live_of(user).await? {
        if Some(session.id) == keep {
            continue;
        }
        if identity.sessions.terminate(session.id, why).await? {
            ended += 1;
            record_session_end(state, user, session.id, why, actor, context).await;
        }
    }
    Ok(ended)
}

/// The `auth.session_ended` entry of one session, after its end is stored.
async fn record_session_end(
    state: &AppState,
    user: tally_engine::UserId,
    session: uuid::Uuid,
    why: &str,
    actor: &Actor,
    context: &AuditContext,
) {
    let identity = state.identity();
    let event = Event::new("auth.session_ended")
        .target("session", session)
        .subject(user)
        .details(serde_json::json!({"session_id": session.to_string(), "reason": why}));
    record_after_change(identity, record(identity, context, actor, event)).await;
}

/// Starts a login session for `user` (whose credentials, and second factor if any, the caller
/// has checked) and answers with its token pair. Ends the user's oldest sessions beyond the
/// per-user bound first.
pub async fn start_session(state: &AppState, user: &User, client: ClientInfo) -> Result<Response, ApiError> {
    let identity = state.identity();
    let session_id = identity.ids.next_uuid();
    let context = AuditContext {
        request_id: crate::problem::request_id(),
        ip: client.ip.clone(),
        user_agent: client.user_agent.clone(),
    };
    identity.sessions.start_session(session_id, user.id, client.ip, client.user_agent).await?;
    // An admin may have blocked the user, or the password may have been reset or changed,
    // since the caller read them: each ends the sessions it finds, and this one may have been
    // stored just after. Look again. (A change stores the new password before it ends the
    // sessions, so a login that verified the old one either is found by that, or finds here
    // the password it verified gone.)
    let current = identity.users.user_by_id(user.id).await?;
    let still_active = current.as_ref().is_some_and(|current| current.status == UserStatus::Active);
    if !still_active {
        identity.sessions.terminate(session_id, reason::USER_BLOCKED).await?;
        return Err(ApiError::new(ErrorCode::Unauthenticated, "this user is blocked"));
    }
    if current.is_some_and(|current| current.password_hash != user.password_hash) {
        identity.sessions.terminate(session_id, end_reason::PASSWORD_CHANGED).await?;
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "the password changed while signing in; sign in again",
        ));
    }
    // Recorded before the tokens are handed out: a login the log does not show never got any.
    let event = Event::new("auth.login_succeeded")
        .on_user(user.id)
        .details(serde_json::json!({"session_id": session_id.to_string()}));
    identity.audit.append(&record(identity, &context, &Actor::user(user.id), event)).await?;
    token_pair(state, user.id, session_id).await
}

/// `POST /v1/auth/logout` → `204`: ends the caller's session; its access and refresh tokens
/// stop working at once.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "identity",
    responses((status = 204, description = "The session ended; its tokens stop working at once")),
    security(("bearer" = []))
)]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    context: AuditContext,
) -> Result<Response, ApiError> {
    // `Caller` refuses API keys, so a bearer caller always has a session.
    let session = caller.session_id.ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "no login session"))?;
    if state.identity().sessions.terminate(session, reason::LOGOUT).await? {
        record_session_end(&state, caller.user_id, session, reason::LOGOUT, &Actor::of(&caller), &context).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionItem {
    session_id: String,
    client_ip: Option<String>,
    user_agent: Option<String>,
    created_at: String,
    last_activity_at: String,
    /// Whether this is the session of the token that asked.
    current: bool,
}

/// `GET /v1/users/me/sessions` → the caller's live sessions, oldest first (a plain array, as
/// the contract shows: at most `SESSIONS_PER_USER_MAX` of them, so no pagination).
#[utoipa::path(
    get,
    path = "/v1/users/me/sessions",
    tag = "identity",
    responses((status = 200, body = Vec<SessionItem>)),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<SessionItem>>, ApiError> {
    let sessions = state.identity().sessions.live_of(caller.user_id).await?;
    let items = sessions
        .into_iter()
        .map(|session| {
            Ok(SessionItem {
                session_id: session.id.to_string(),
                client_ip: session.client_ip,
                user_agent: session.user_agent,
                created_at: rfc3339(session.created_at)?,
                last_activity_at: rfc3339(session.last_activity_at)?,
                current: Some(session.id) == caller.session_id,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(axum::Json(items))
}

/// `DELETE /v1/users/me/sessions/{session_id}` → `204`; that session's tokens stop working at
/// once. Another user's session, or one that never existed, is `404` alike, so session ids
/// of others do not leak; deleting one's own ended session again is `204` (idempotent).
#[utoipa::path(
    delete,
    path = "/v1/users/me/sessions/{id}",
    tag = "identity",
    params(("id" = uuid::Uuid, Path, description = "The session id")),
    responses((status = 204, description = "The session ended; its tokens stop working at once")),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    context: AuditContext,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let sessions = &state.identity().sessions;
    if sessions.owner(id).await? != Some(caller.user_id) {
        return Err(ApiError::not_found("session"));
    }
    if sessions.terminate(id, reason::DELETED).await? {
        record_session_end(&state, caller.user_id, id, reason::DELETED, &Actor::of(&caller), &context).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SessionsEnded)]
pub(crate) struct Ended {
    /// How many sessions this request ended.
    pub(crate) ended: usize,
}

/// `DELETE /v1/users/me/sessions` → `200 {ended}`: every session of the caller but the one
/// asking ends at once (their tokens are refused from the next request).
#[utoipa::path(
    delete,
    path = "/v1/users/me/sessions",
    tag = "identity",
    description = "Ends every session of the caller except the current one, at once: their access tokens are \
                   refused from the next request and their refresh tokens are revoked. Answers how many ended \
                   (0 when there were no others). Each ended session is an `auth.session_ended` entry of the \
                   caller's activity.",
    responses((status = 200, body = Ended)),
    security(("bearer" = []))
)]
pub async fn end_others(
    State(state): State<AppState>,
    caller: Caller,
    context: AuditContext,
) -> Result<Response, ApiError> {
    let ended = end_sessions(
        &state,
        caller.user_id.as_uuid(),
        caller.session_id,
        end_reason::ENDED_BY_USER,
        &Actor::of(&caller),
        &context,
    )
    .await?;
    Ok(audited(axum::Json(Ended { ended }).into_response()))
}
