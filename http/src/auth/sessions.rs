//! Login sessions over HTTP: starting one (`start_session`, called by login and, after a
//! second factor, by MFA verification), `POST /v1/auth/logout`, `GET /v1/users/me/sessions`
//! and `DELETE /v1/users/me/sessions/{session_id}`.
//!
//! The sessions themselves are `SessionActor`s behind `tally_actors::Sessions`; a session's id
//! is the `sid` of its access tokens and the family id of its refresh tokens.

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

/// Starts a login session for `user` (whose credentials, and second factor if any, the caller
/// has checked) and answers with its token pair. Ends the user's oldest sessions beyond the
/// per-user bound first.
pub async fn start_session(state: &AppState, user: &User, client: ClientInfo) -> Result<Response, ApiError> {
    let identity = state.identity();
    let session_id = identity.ids.next_uuid();
    identity.sessions.start_session(session_id, user.id, client.ip, client.user_agent).await?;
    // An admin may have blocked the user since the caller read them: blocking ends the
    // sessions it finds, and this one may have been stored just after. Look again.
    let still_active = identity.users.user_by_id(user.id).await?.is_some_and(|user| user.status == UserStatus::Active);
    if !still_active {
        identity.sessions.terminate(session_id, reason::USER_BLOCKED).await?;
        return Err(ApiError::new(ErrorCode::Unauthenticated, "this user is blocked"));
    }
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
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    // `Caller` refuses API keys, so a bearer caller always has a session.
    let session = caller.session_id.ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "no login session"))?;
    state.identity().sessions.terminate(session, reason::LOGOUT).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SessionItem {
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
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
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
    Ok(axum::Json(items).into_response())
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
pub async fn delete(State(state): State<AppState>, caller: Caller, IdPath(id): IdPath) -> Result<Response, ApiError> {
    let sessions = &state.identity().sessions;
    if sessions.owner(id).await? != Some(caller.user_id) {
        return Err(ApiError::not_found("session"));
    }
    sessions.terminate(id, reason::DELETED).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
