//! `TALLY_REQUIRE_VERIFIED_EMAIL=true`: money-moving routes answer `403 EMAIL_NOT_VERIFIED`
//! until the caller (a person, or the owner of an API key) has verified their email.
//!
//! The gate is part of the route layer (`admit`, called by `lib.rs`'s `route_policies`), so the money routes' handlers stay as
//! they are and the rule sits in one place. It authenticates the request the way the handler
//! would (`Caller`, or the API key) and leaves the outcome in the request: a refused credential
//! passes through untouched, and the handler answers `401`/`403` as always, so the order of
//! checks is authentication first, then verification. A credential that could not be checked
//! (`5xx`: the store away) is answered here, never passed on unchecked. Off (the default), the layer is one
//! branch per request.
//!
//! Verification never goes back (no route un-verifies an email), so verified users are
//! remembered in memory (bounded) and the hot path asks the store only about users not yet
//! seen verified. Unverified users are asked every time: they are refused anyway, and the
//! moment they verify their next request passes.

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use tally_engine::{ErrorCode, UserId};

use super::api_keys::API_KEY_HEADER;
use super::caller::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

/// The routes that move money (API.md): creating transfers, one or a batch, crypto orders and
/// withdrawals. Reading, quoting, cancelling (which only releases a hold back to its owner)
/// and admin routes are not gated.
pub const MONEY_MOVING_ROUTES: [(&str, &str); 4] = [
    ("POST", "/v1/transfers"),
    ("POST", "/v1/transfers/batch"),
    ("POST", "/v1/crypto/orders"),
    ("POST", "/v1/crypto/withdrawals"),
];

/// Verified users remembered at once (~40 bytes each, ~10 MiB); when full the memory is
/// emptied and refills from the store (forgetting is always correct).
pub const VERIFIED_USERS_REMEMBERED_MAX: usize = 262_144;

#[derive(Debug)]
pub struct EmailGate {
    required: bool,
    verified: DashMap<UserId, ()>,
}

impl EmailGate {
    pub fn new(required: bool) -> EmailGate {
        EmailGate { required, verified: DashMap::new() }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// Notes that `user` verified their email (the confirm route calls this).
    pub fn remember_verified(&self, user: UserId) {
        if self.verified.len() >= VERIFIED_USERS_REMEMBERED_MAX {
            self.verified.clear();
        }
        self.verified.insert(user, ());
    }

    async fn is_verified(&self, state: &AppState, user: UserId) -> Result<bool, ApiError> {
        if self.verified.contains_key(&user) {
            return Ok(true);
        }
        let verified =
            state.identity().users.user_by_id(user).await?.is_some_and(|user| user.email_verified_at.is_some());
        if verified {
            self.remember_verified(user);
        }
        Ok(verified)
    }
}

fn is_money_moving(method: &Method, route: &str) -> bool {
    MONEY_MOVING_ROUTES.iter().any(|(m, r)| method.as_str() == *m && route == *r)
}

/// The gate (see the module comment): the request to pass on, or the refusal to answer.
pub async fn admit(state: &AppState, request: Request) -> Result<Request, Response> {
    let gate = &state.identity().email_gate;
    if !gate.required() {
        return Ok(request);
    }
    let gated = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|route| is_money_moving(request.method(), route.as_str()));
    if !gated {
        return Ok(request);
    }
    let (mut parts, body) = request.into_parts();
    let authenticated = match parts.headers.get(API_KEY_HEADER).map(|value| value.to_str().map(str::trim)) {
        Some(Ok(key)) => {
            let identity = state.identity();
            identity.protection.api_keys.verify(key, identity.users.as_ref()).await.map(|verified| verified.user)
        }
        Some(Err(_)) => Err(ApiError::new(ErrorCode::Unauthenticated, "unreadable API key")),
        None => Caller::from_request_parts(&mut parts, state).await.map(|caller| caller.user_id),
    };
    let user = match authenticated {
        Ok(user) => Some(user),
        // Not the credential's fault (the store that knows the session or the key away for a
        // moment): answered here. Passed on, the handler's own look-up might succeed a moment
        // later and move money for a user this gate never checked.
        Err(error) if error.code.http_status() >= 500 => return Err(error.into_response()),
        // A refused credential: the handler answers it as always.
        Err(_) => None,
    };
    if let Some(user) = user {
        match gate.is_verified(state, user).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ApiError::new(
                    ErrorCode::EmailNotVerified,
                    "verify your email first (POST /v1/users/me/email/verification) to move money",
                )
                .into_response());
            }
            Err(error) => return Err(error.into_response()),
        }
    }
    Ok(Request::from_parts(parts, body))
}
