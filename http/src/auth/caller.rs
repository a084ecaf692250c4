//! Who is calling: `Caller` (any valid bearer token) and `Authorized<P>` (an active admin who
//! holds permission `P`, directly or through a role, checked against the user store on every
//! request so that a revoked permission, a changed or unassigned role, or a blocked admin
//! stops working at once: permissions are never cached, so there is nothing to invalidate,
//! on this node or any other).
//!
//! Both are extractors that run before the body is read: an unauthenticated or unauthorised
//! request is refused before its input is even parsed, and changes nothing.

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tally_engine::{ErrorCode, UserId};
use tally_persistence::users::{User, UserStatus};

use super::permissions::Permission;
use crate::problem::ApiError;
use crate::state::AppState;

/// The user a valid access token speaks for, in a live login session. The token's signature
/// is checked once (then cached); the session's liveness is checked on every request, in
/// memory (`tally_actors::Sessions::authorize`), so a logout, a session deletion, a
/// refresh-token reuse or an admin block refuses the token at once without a store query per
/// request on the hottest path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    /// The login session the token belongs to.
    /// The login session the token belongs to; `None` for a machine client with an API key
    /// (`Scoped<S>`), which has no session.
    pub session_id: Option<uuid::Uuid>,
}

/// A place a route layer leaves in the request for `Caller` to fill in, so the layer learns
/// who the handler served (the audit layer records it) without verifying the token again.
#[derive(Clone, Debug, Default)]
pub struct CallerSlot(Arc<OnceLock<Caller>>);

impl CallerSlot {
    pub fn get(&self) -> Option<Caller> {
        self.0.get().copied()
    }
}

fn unauthenticated(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, detail)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(AUTHORIZATION).ok_or_else(|| unauthenticated("missing Authorization: Bearer token"))?;
    let value = value.to_str().map_err(|_| unauthenticated("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(unauthenticated("expected Authorization: Bearer <access token>")),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Extracted once per request (a handler may also take `StepUp<O>`), so the request is
        // counted against the caller's rate once.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(*caller);
        }
        if parts.headers.contains_key(super::api_keys::API_KEY_HEADER) {
            return Err(ApiError::new(ErrorCode::Forbidden, "this route does not accept API keys"));
        }
        let token = bearer_token(&parts.headers)?;
        let identity = state.identity();
        let now = identity.now();
        let verified = identity.tokens.verify_session(token, now)?;
        let live = identity.sessions.authorize(verified.session).await.map_err(ApiError::from)?;
        if live != Some(verified.user) {
            return Err(unauthenticated("this session has ended; log in again"));
        }
        identity.protection.requests.admit(verified.user, now)?;
        let caller = Caller { user_id: verified.user, session_id: Some(verified.session) };
        parts.extensions.insert(caller);
        if let Some(slot) = parts.extensions.get::<CallerSlot>() {
            let _ = slot.0.set(caller);
        }
        Ok(caller)
    }
}

/// An active admin holding permission `P`.
#[derive(Debug)]
pub struct Authorized<P> {
    pub admin: User,
    permission: PhantomData<P>,
}

impl<P> Authorized<P> {
    pub fn admin_id(&self) -> UserId {
        self.admin.id
    }
}

impl<P: Permission> FromRequestParts<AppState> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Self::of(state, caller).await
    }
}

impl<P: Permission> Authorized<P> {
    /// The check again, for a request that waited (a long poll) before it answers: a block, a
    /// logout or a permission taken away meanwhile refuses what it would have answered.
    pub async fn still(&self, state: &AppState, caller: Caller) -> Result<(), ApiError> {
        if let Some(session) = caller.session_id {
            let live = state.identity().sessions.authorize(session).await.map_err(ApiError::from)?;
            if live != Some(caller.user_id) {
                return Err(unauthenticated("this session has ended; log in again"));
            }
        }
        Self::of(state, caller).await.map(|_| ())
    }

    async fn of(state: &AppState, caller: Caller) -> Result<Self, ApiError> {
        let user = state
            .identity()
            .users
            .user_by_id(caller.user_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| unauthenticated("the token's user no longer exists"))?;
        if user.status != UserStatus::Active {
            return Err(unauthenticated("this user is blocked"));
        }
        if !user.holds(P::ACTION.as_str()) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this route needs the permission {}", P::ACTION.as_str()),
            ));
        }
        Ok(Authorized { admin: user, permission: PhantomData })
    }
}
