//! Step-up: a fresh TOTP code in exchange for a short-lived token that authorises one kind of
//! sensitive operation (the ★ routes of API.md).
//!
//! `POST /v1/auth/step-up {operation_type}` opens a step-up session (5 minutes, single use,
//! `CHALLENGE_ATTEMPTS_MAX` wrong codes); `POST /v1/auth/step-up/verify {step_up_session_id,
//! code}` answers `{step_up_token, expires_in}`. The token is opaque, kept in memory as its
//! SHA-256, and bound to the user, the login session that verified the code (a token carried
//! off to another of the user's sessions, or outliving its own, authorises nothing) and the
//! operation type; it may be used for that operation type as often as needed until it expires (a client retrying with its `Idempotency-Key`
//! must not need a new code). Only TOTP steps up: backup codes are for a lost phone at login.
//!
//! A handler states its need in its signature with `StepUp<O>`: for a bearer caller with TOTP
//! on, the request must carry `X-Step-Up-Token` for `O::TYPE`, else `403 STEP_UP_REQUIRED`.
//! Callers without TOTP, and API keys (whose scopes decide), pass.

use std::marker::PhantomData;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tally_engine::{ErrorCode, Timestamp, UserId};

use super::api_keys::API_KEY_HEADER;
use super::caller::Caller;
use super::challenges::{Attempt, CHALLENGE_TTL, Challenges, Purpose};
use super::mfa::{Accept, CODE_LENGTH_MAX, METHODS, session_id};
use super::totp;
use crate::digest::sha256;
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;

/// How long a step-up token authorises its operation type: five minutes, long enough to
/// review and submit one form, short enough that a leaked token soon stops mattering.
pub const STEP_UP_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);

/// Step-up tokens live at once. ~100 bytes each; when full, expired ones are purged, and if
/// none are, a new step-up gets `503` rather than memory growing.
pub const STEP_UP_TOKENS_MAX: usize = 65_536;

/// The header a ★ request carries its step-up token in.
pub const STEP_UP_HEADER: &str = "x-step-up-token";

/// Longest step-up token looked at: ours are 43 characters.
const STEP_UP_TOKEN_LENGTH_MAX: usize = 128;

/// Random bytes per token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// An operation type a step-up token can authorise.
pub trait Operation: Send + Sync + 'static {
    const TYPE: &'static str;
}

macro_rules! operations {
    ($($(#[$doc:meta])* $name:ident = $type:literal;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $name;
            impl Operation for $name {
                const TYPE: &'static str = $type;
            }
        )*
        /// Every operation type, the one list `POST /v1/auth/step-up` accepts.
        pub const OPERATION_TYPES: &[&str] = &[$($type),*];
    };
}

operations! {
    /// `POST /v1/accounts`.
    AccountsOpen = "accounts.open";
    /// `POST /v1/transfers`.
    TransfersCreate = "transfers.create";
    /// `POST /v1/transfers/{id}/cancel`.
    TransfersCancel = "transfers.cancel";
    /// `POST /v1/admin/transfers/{id}/execute`.
    TransfersExecute = "transfers.execute";
    /// `POST /v1/admin/adjustments`.
    AdjustmentsCreate = "adjustments.create";
    /// `POST /v1/crypto/withdrawals`.
    WithdrawalsCreate = "withdrawals.create";
    /// `POST /v1/users/me/password`.
    PasswordChange = "password.change";
    /// `DELETE /v1/users/me/mfa/totp`.
    MfaDisable = "mfa.disable";
    /// `POST /v1/users/me/mfa/backup-codes`.
    MfaBackupCodes = "mfa.backup_codes";
    /// `POST /v1/admin/webhooks` (`webhooks.rs`).
    WebhooksManage = "webhooks.manage";
}

#[derive(Clone, Copy, Debug)]
struct Grant {
    user: UserId,
    /// The login session that verified the code (`None` only for a caller without one).
    session: Option<uuid::Uuid>,
    operation: &'static str,
    expires_micros: i64,
}

/// Stripes of `StepUps::forgets`: a user's `forget_user` withdraws grants racing it of the
/// users in the same stripe only (one in 32), not of everyone.
const FORGET_STRIPES: usize = 32;

/// Step-up sessions and the tokens they granted.
#[derive(Debug, Default)]
pub struct StepUps {
    sessions: Challenges,
    grants: DashMap<[u8; 32], Grant>,
    /// Bumped by `forget_user` before it drops a user's tokens, in the user's stripe: a grant
    /// whose verification began before (its code checked while TOTP was being turned off)
    /// withdraws itself.
    forgets: [std::sync::atomic::AtomicU64; FORGET_STRIPES],
}

impl StepUps {
    /// The `forgets` counter of `user`'s stripe.
    fn forgets_of(&self, user: UserId) -> &std::sync::atomic::AtomicU64 {
        let stripe = (user.as_uuid().as_u128() % FORGET_STRIPES as u128) as usize;
        &self.forgets[stripe]
    }

    /// Where `forget_user` stands for `user`: taken before a code is checked, for `grant`.
    fn forgets(&self, user: UserId) -> u64 {
        self.forgets_of(user).load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A token for `operation`, unless a `forget_user` ran since `checked_from` (`forgets`,
    /// taken before the code was checked). The token goes in first and is taken back if one
    /// did: `forget_user` bumps the count before it drops tokens, so a grant that saw no bump
    /// was inserted before that drop, which then removes it.
    fn grant(
        &self,
        user: UserId,
        session: Option<uuid::Uuid>,
        operation: &'static str,
        now: Timestamp,
        checked_from: u64,
    ) -> Result<String, ApiError> {
        if self.grants.len() >= STEP_UP_TOKENS_MAX {
            self.grants.retain(|_, grant| grant.expires_micros > now.as_micros());
            if self.grants.len() >= STEP_UP_TOKENS_MAX {
                return Err(ApiError::new(ErrorCode::Overloaded, "too many step-up tokens live; retry later"));
            }
        }
        let mut bytes = [0_u8; TOKEN_BYTES];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("the system random generator failed"))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let ttl = i64::try_from(STEP_UP_TOKEN_TTL.as_micros()).unwrap_or(i64::MAX);
        let expires_micros = now.as_micros().saturating_add(ttl);
        let digest = sha256(token.as_bytes());
        self.grants.insert(digest, Grant { user, session, operation, expires_micros });
        if self.forgets(user) != checked_from {
            self.grants.remove(&digest);
            return Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "the second factor changed meanwhile; step up again",
            ));
        }
        Ok(token)
    }

    /// Whether `token` authorises `user`, in login session `session`, for `operation` at `now`.
    fn authorises(
        &self,
        token: &str,
        user: UserId,
        session: Option<uuid::Uuid>,
        operation: &str,
        now: Timestamp,
    ) -> bool {
        if token.is_empty() || token.len() > STEP_UP_TOKEN_LENGTH_MAX {
            return false;
        }
        let digest = sha256(token.as_bytes());
        let Some(grant) = self.grants.get(&digest).map(|entry| *entry.value()) else { return false };
        if grant.expires_micros <= now.as_micros() {
            self.grants.remove(&digest);
            return false;
        }
        grant.user == user && grant.session == session && grant.operation == operation
    }

    /// Forgets every step-up token of `user` (their TOTP was turned off: tokens earned with
    /// the old device must not outlive it if TOTP is turned on again).
    pub fn forget_user(&self, user: UserId) {
        self.forgets_of(user).fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.grants.retain(|_, grant| grant.user != user);
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = StepUpBody)]
#[serde(deny_unknown_fields)]
pub struct BeginBody {
    pub operation_type: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = StepUpBegan)]
pub struct Began {
    step_up_session_id: String,
    methods: [&'static str; 1],
    /// Seconds the session waits for its code.
    expires_in: u64,
}

/// `POST /v1/auth/step-up {operation_type}` → `200 {step_up_session_id, methods}`. An unknown
/// operation type is `400`; a caller without TOTP has nothing to step up with: `409 CONFLICT`.
#[utoipa::path(
    post,
    path = "/v1/auth/step-up",
    tag = "identity",
    request_body = BeginBody,
    responses((status = 200, body = Began)),
    security(("bearer" = []))
)]
pub async fn begin(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<BeginBody>,
) -> Result<axum::Json<Began>, ApiError> {
    let operation = OPERATION_TYPES.iter().find(|known| **known == body.operation_type).ok_or_else(|| {
        ApiError::field("operation_type", format!("unknown operation type; one of {}", OPERATION_TYPES.join(", ")))
    })?;
    let identity = state.identity();
    let protection = &identity.protection;
    if !protection.second_factor.totp_enabled(caller.user_id).await? {
        return Err(ApiError::new(ErrorCode::Conflict, "TOTP is not enabled; step-up needs it"));
    }
    let id = identity.ids.next_uuid();
    protection.step_ups.sessions.open(id, caller.user_id, Purpose::StepUp(operation), identity.now())?;
    let answer = Began { step_up_session_id: id.to_string(), methods: METHODS, expires_in: CHALLENGE_TTL.as_secs() };
    Ok(axum::Json(answer))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = StepUpVerifyBody)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub step_up_session_id: String,
    pub code: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = StepUpGranted)]
struct Granted {
    step_up_token: String,
    operation_type: &'static str,
    /// Seconds the token lives.
    expires_in: u64,
}

/// `POST /v1/auth/step-up/verify {step_up_session_id, code}` → `200 {step_up_token,
/// expires_in}`. A session that is unknown, expired, used or another user's is `404
/// NOT_FOUND`; a wrong or replayed code `401 INVALID_CREDENTIALS`.
#[utoipa::path(
    post,
    path = "/v1/auth/step-up/verify",
    tag = "identity",
    request_body = VerifyBody,
    responses((status = 200, body = Granted)),
    security(("bearer" = []))
)]
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    context: crate::audit::AuditContext,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Response, ApiError> {
    let id = session_id("step_up_session_id", &body.step_up_session_id)?;
    if body.code.len() > CODE_LENGTH_MAX || !totp::is_code_shaped(&body.code) {
        return Err(ApiError::field("code", "must be a 6-digit code"));
    }
    let identity = state.identity();
    let protection = &identity.protection;
    let now = identity.now();
    let challenge = protection
        .step_ups
        .sessions
        .begin(id, now)
        .filter(|challenge| challenge.user == caller.user_id)
        .ok_or_else(|| ApiError::not_found("step-up session"))?;
    let Purpose::StepUp(operation) = challenge.purpose else { return Err(ApiError::not_found("step-up session")) };
    let checked_from = protection.step_ups.forgets(caller.user_id);
    let correct = protection.second_factor.check_code(caller.user_id, &body.code, Accept::TotpOnly, now).await?;
    if let Attempt::Refused { attempts_left } = protection.step_ups.sessions.settle(id, correct) {
        super::mfa::challenge_failed(&state, &context, caller.user_id, "step_up");
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            format!("wrong or already used code; {attempts_left} attempts left in this step-up session"),
        ));
    }
    let token = protection.step_ups.grant(caller.user_id, caller.session_id, operation, now, checked_from)?;
    let answer = Granted { step_up_token: token, operation_type: operation, expires_in: STEP_UP_TOKEN_TTL.as_secs() };
    let mut response = axum::Json(answer).into_response();
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Proof that the request may perform operation `O`: see the module comment.
#[derive(Debug)]
pub struct StepUp<O>(PhantomData<O>);

impl<O: Operation> FromRequestParts<AppState> for StepUp<O> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // API keys never step up (API.md); whether the key may call this route at all is for
        // `Scoped` or `Caller` to say, and they refuse it if not.
        if parts.headers.contains_key(API_KEY_HEADER) {
            return Ok(StepUp(PhantomData));
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        require::<O>(state, &parts.headers, caller).await?;
        Ok(StepUp(PhantomData))
    }
}

/// `StepUp<O>`'s check for a bearer caller, for a handler whose need depends on its body:
/// passes if `user` has TOTP off, or `headers` carry a valid step-up token of theirs for `O`.
pub(crate) async fn require<O: Operation>(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    caller: Caller,
) -> Result<(), ApiError> {
    let user = caller.user_id;
    let identity = state.identity();
    if !identity.protection.second_factor.totp_enabled(user).await? {
        return Ok(());
    }
    let token = headers.get(STEP_UP_HEADER).and_then(|value| value.to_str().ok()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::StepUpRequired,
            format!("this operation needs an X-Step-Up-Token for operation type {}", O::TYPE),
        )
    })?;
    if identity.protection.step_ups.authorises(token.trim(), user, caller.session_id, O::TYPE, identity.now()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::StepUpRequired,
            format!(
                "the X-Step-Up-Token is invalid, expired, from another session, or not for operation type {}",
                O::TYPE
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const NOW: Timestamp = Timestamp::from_micros(1_700_000_000_000_000);

    /// A step-up whose code was checked while its user turned TOTP off (`forget_user` between
    /// the check and the grant) gets no token: made after the drop, it would have outlived it
    /// and worked again once TOTP was back on (found by a review). A grant with no forget in
    /// between works, and a forget after it drops it.
    #[test]
    fn a_grant_raced_by_forget_user_is_withdrawn() {
        let step_ups = StepUps::default();
        let user = UserId::from_u128(3);
        let session = Some(uuid::Uuid::from_u128(7));
        let checked_from = step_ups.forgets(user);
        step_ups.forget_user(user);
        assert!(step_ups.grant(user, session, "transfers.create", NOW, checked_from).is_err());
        assert!(step_ups.grants.is_empty(), "nothing left behind");

        let token = step_ups.grant(user, session, "transfers.create", NOW, step_ups.forgets(user)).unwrap();
        assert!(step_ups.authorises(&token, user, session, "transfers.create", NOW));
        step_ups.forget_user(user);
        assert!(!step_ups.authorises(&token, user, session, "transfers.create", NOW));
    }

    /// Another user's `forget_user` does not withdraw a grant racing it (it did while one
    /// counter served every user), unless they share a stripe.
    #[test]
    fn another_users_forget_does_not_withdraw_a_grant() {
        let step_ups = StepUps::default();
        let (user, other) = (UserId::from_u128(3), UserId::from_u128(4));
        let session = Some(uuid::Uuid::from_u128(7));
        let checked_from = step_ups.forgets(user);
        step_ups.forget_user(other);
        let token = step_ups.grant(user, session, "transfers.create", NOW, checked_from).unwrap();
        assert!(step_ups.authorises(&token, user, session, "transfers.create", NOW));
    }

    /// A token authorises in the login session that verified its code only.
    #[test]
    fn a_token_is_bound_to_its_login_session() {
        let step_ups = StepUps::default();
        let user = UserId::from_u128(3);
        let (session, other) = (Some(uuid::Uuid::from_u128(7)), Some(uuid::Uuid::from_u128(8)));
        let token = step_ups.grant(user, session, "transfers.create", NOW, step_ups.forgets(user)).unwrap();
        assert!(step_ups.authorises(&token, user, session, "transfers.create", NOW));
        assert!(!step_ups.authorises(&token, user, other, "transfers.create", NOW));
        assert!(!step_ups.authorises(&token, user, None, "transfers.create", NOW));
    }
}
