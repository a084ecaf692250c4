//! `/v1/auth/register`, `/v1/auth/login`, `/v1/auth/refresh`, `/.well-known/jwks.json` and
//! `/v1/users/me`. Logout and session management are in `sessions.rs`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tally_actors::sessions::reason as session_reason;
use tally_engine::{ErrorCode, UserId};
use tally_persistence::users::{CreateUserError, RefreshUse, User, UserStatus};
use uuid::Uuid;

use super::caller::Caller;
use super::password::{PASSWORD_LENGTH_MAX, check_policy};
use super::rate_limit::ClientIp;
use super::refresh;
use super::sessions::{ClientInfo, start_session};
use super::tokens::ACCESS_TOKEN_TTL;
use super::validate::{check_email, check_name};
use crate::audit::{Actor, AuditContext, Event, record, record_in_background};
use crate::json::ApiJson;
use crate::problem::{ApiError, FieldError};
use crate::state::AppState;
use crate::views::rfc3339;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Registered {
    user_id: String,
}

/// `POST /v1/auth/register` → `201 {user_id}`. Every field is checked and every problem is
/// reported at once; a taken email is `409 CONFLICT` (the contract wants it said, so this
/// route tells whether an address is registered; login does not).
#[utoipa::path(
    post,
    path = "/v1/auth/register",
    tag = "identity",
    request_body = RegisterBody,
    responses((status = 201, body = Registered))
)]
pub async fn register(
    State(state): State<AppState>,
    context: AuditContext,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let checks = [
        ("email", check_email(&body.email)),
        ("password", check_policy(&body.password)),
        ("first_name", check_name(&body.first_name)),
        ("last_name", check_name(&body.last_name)),
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
    let identity = state.identity();
    let password_hash = identity.passwords.hash(body.password).await?;
    let user = User::new(
        UserId::from_uuid(identity.ids.next_uuid()),
        body.email.trim().to_owned(),
        password_hash,
        body.first_name.trim().to_owned(),
        body.last_name.trim().to_owned(),
        Default::default(),
        identity.now(),
    );
    let entry = record(identity, &context, &Actor::anonymous(), Event::new("auth.registered").on_user(user.id));
    match identity.users.create_user(&user, &entry).await {
        Ok(()) => {
            let body = Registered { user_id: user.id.to_string() };
            Ok((StatusCode::CREATED, axum::Json(body)).into_response())
        }
        Err(CreateUserError::EmailTaken) => {
            Err(ApiError::new(ErrorCode::Conflict, "a user with this email is already registered"))
        }
        Err(CreateUserError::IdTaken) => Err(ApiError::internal("a fresh user id collided")),
        Err(CreateUserError::Store(error)) => Err(error.into()),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The user's email.
    pub identifier: String,
    pub password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenPair {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
}

/// What a successful login answers with, for the OpenAPI document: the handler writes one of
/// the two bodies directly.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Never built: it only describes the answer.
pub(crate) enum LoginAnswer {
    Tokens(TokenPair),
    Mfa(super::mfa::MfaRequired),
}

fn invalid_credentials() -> ApiError {
    ApiError::new(ErrorCode::InvalidCredentials, "wrong email or password")
}

/// Signs an access token for login session `session` and stores a refresh token in its family
/// (the family id is the session id), and answers with both. Token answers must not be cached
/// anywhere (RFC 6749 §5.1).
pub(crate) async fn token_pair(state: &AppState, user: UserId, session: Uuid) -> Result<Response, ApiError> {
    let identity = state.identity();
    let now = identity.now();
    let access_token = identity.tokens.issue(user, session, now).await?;
    let refresh_token = refresh::issue(identity.users.as_ref(), user, session, now).await?;
    let pair = TokenPair { access_token, refresh_token, token_type: "Bearer", expires_in: ACCESS_TOKEN_TTL.as_secs() };
    let mut response = axum::Json(pair).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /v1/auth/login` → tokens, or `401 INVALID_CREDENTIALS` for an unknown email or a
/// wrong password alike (an unknown email costs one decoy verification, so timing does not
/// tell them apart either). A blocked user with the right password gets `401
/// UNAUTHENTICATED`, saying so. Failures are counted per identifier and per client ip
/// (`rate_limit.rs`): past the limit, `429 RATE_LIMITED` before the password is checked. With
/// TOTP on, a right password opens an MFA session instead of issuing tokens (`mfa.rs`);
/// otherwise it starts a login session (`sessions.rs`).
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "identity",
    request_body = LoginBody,
    responses((status = 200, description = "Tokens, or with TOTP on the MFA challenge", body = LoginAnswer))
)]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    client: ClientInfo,
    context: AuditContext,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let identity = state.identity();
    let limits = &identity.protection.logins;
    let identifier = tally_persistence::users::normalize_email(&body.identifier);
    // The limiter keys by identifier; an absurdly long one is kept as its digest so a body of
    // megabytes cannot become a megabyte key.
    let identifier = if identifier.len() > tally_persistence::users::EMAIL_LENGTH_MAX {
        crate::digest::sha256_hex(identifier.as_bytes())
    } else {
        identifier
    };
    let now = identity.now();
    // Counted as a failure now, before the password is checked; a success takes it back.
    limits.take_attempt(&identifier, ip, now)?;
    let refused = invalid_credentials;
    // No user has an address or password this long, so refuse without touching the store;
    // the answer is the same as for any wrong credentials.
    if body.identifier.chars().count() > tally_persistence::users::EMAIL_LENGTH_MAX
        || body.password.chars().count() > PASSWORD_LENGTH_MAX
    {
        return Err(refused());
    }
    let user = identity.users.user_by_email(&body.identifier).await?;
    let verified =
        identity.passwords.verify(body.password, user.as_ref().map(|user| user.password_hash.clone())).await?;
    let user = match user {
        Some(user) if verified => user,
        known => {
            // A wrong password for a real user is a security event of theirs. It is written
            // in the background, so the answer takes as long as for an unknown address (for
            // which nothing is written: there is nobody to attach it to, and the identifier
            // may be anything, even a mistyped password).
            if let Some(user) = known {
                let event =
                    Event::new("auth.login_failed").on_user(user.id).details(json!({"reason": "wrong_password"}));
                record_in_background(identity, record(identity, &context, &Actor::anonymous(), event));
            }
            return Err(refused());
        }
    };
    if user.status != UserStatus::Active {
        let event = Event::new("auth.login_failed").on_user(user.id).details(json!({"reason": "user_blocked"}));
        record_in_background(identity, record(identity, &context, &Actor::anonymous(), event));
        return Err(ApiError::new(ErrorCode::Unauthenticated, "this user is blocked"));
    }
    limits.record_success(&identifier, ip);
    if let Some(challenge) = super::mfa::login_challenge(&state, user.id, &user.password_hash).await? {
        return Ok(challenge);
    }
    start_session(&state, &user, client).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    pub refresh_token: String,
}

/// `POST /v1/auth/refresh` → a new pair in the same session, spending the old refresh token.
/// An unknown, expired or spent token is `401`, and so is one whose session has ended; a spent
/// one also revokes every token of its family and ends its session.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "identity",
    request_body = RefreshBody,
    responses((status = 200, body = TokenPair))
)]
pub async fn refresh(
    State(state): State<AppState>,
    context: AuditContext,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response, ApiError> {
    let identity = state.identity();
    let refused = || ApiError::new(ErrorCode::Unauthenticated, "refresh token invalid, expired or already used");
    let (user_id, family) = match refresh::spend(identity.users.as_ref(), &body.refresh_token, identity.now()).await? {
        RefreshUse::Spent { user_id, family_id } => (user_id, family_id),
        RefreshUse::Reused { family_id } => {
            // A replayed refresh token is a stolen one, or a client gone wrong: its session ends,
            // and the owner sees it in their activity.
            let why = session_reason::REFRESH_TOKEN_REUSED;
            if identity.sessions.terminate(family_id, why).await?
                && let Some(owner) = identity.sessions.owner(family_id).await?
            {
                let event = Event::new("auth.session_ended")
                    .target("session", family_id)
                    .subject(owner)
                    .details(json!({"session_id": family_id.to_string(), "reason": why}));
                crate::audit::record_after_change(identity, record(identity, &context, &Actor::anonymous(), event))
                    .await;
            }
            return Err(refused());
        }
        RefreshUse::Invalid => return Err(refused()),
    };
    if identity.sessions.authorize(family).await? != Some(user_id) {
        return Err(ApiError::new(ErrorCode::Unauthenticated, "this session has ended; log in again"));
    }
    let user = identity.users.user_by_id(user_id).await?.ok_or_else(refused)?;
    if user.status != UserStatus::Active {
        return Err(ApiError::new(ErrorCode::Unauthenticated, "this user is blocked"));
    }
    token_pair(&state, user.id, family).await
}

/// `GET /.well-known/jwks.json`: the public halves of every signing key. Public and
/// cacheable for five minutes: a rotation publishes the new key before it signs.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "identity",
    responses((status = 200, description = "The JWKS (RFC 7517) of every RS256 signing key", body = Object))
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(state.identity().tokens.keys().jwks().clone()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Mfa {
    pub(crate) totp_enabled: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    user_id: String,
    email: String,
    /// Whether the user proved the address with an emailed code
    /// (`POST /v1/users/me/email/verification`).
    email_verified: bool,
    first_name: String,
    last_name: String,
    /// E.164 (`+` and 7 to 15 digits), or `null`.
    phone: Option<String>,
    status: &'static str,
    /// What an admin verified of the person: `none`, `basic`, `verified` or `enhanced`.
    verification_level: &'static str,
    mfa: Mfa,
    /// Every admin action the user holds, directly or through a role.
    permissions: Vec<String>,
    created_at: String,
}

/// The `/v1/users/me` view of `user`.
pub(crate) async fn me_view(state: &AppState, user: User) -> Result<Me, ApiError> {
    Ok(Me {
        user_id: user.id.to_string(),
        email_verified: user.email_verified_at.is_some(),
        permissions: user.effective_permissions().into_iter().collect(),
        mfa: Mfa { totp_enabled: state.identity().protection.second_factor.totp_enabled(user.id).await? },
        created_at: rfc3339(user.created_at)?,
        status: user.status.as_str(),
        verification_level: user.verification_level.as_str(),
        email: user.email,
        first_name: user.first_name,
        last_name: user.last_name,
        phone: user.phone,
    })
}

/// `GET /v1/users/me`.
#[utoipa::path(
    get,
    path = "/v1/users/me",
    tag = "identity",
    responses((status = 200, body = Me)),
    security(("bearer" = []))
)]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Me>, ApiError> {
    let user = state
        .identity()
        .users
        .user_by_id(caller.user_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "the token's user no longer exists"))?;
    Ok(axum::Json(me_view(&state, user).await?))
}
