//! Self-service (API.md 1.1): `PATCH /v1/users/me`, `POST /v1/users/me/password` ★,
//! `POST /v1/auth/password/forgot`, `POST /v1/auth/password/reset`,
//! `POST /v1/users/me/email/verification` and `/confirm`, `GET /v1/users/me/activity`.
//! (TOTP off, backup codes and `GET /v1/users/me/mfa` are in `mfa.rs`; ending the other
//! sessions is in `sessions.rs`.)
//!
//! Decisions where the contract is silent (docs/identity.md lists them all):
//! - A wrong current password is `400 VALIDATION_ERROR` on `current_password`, not `401`: the
//!   caller's token is fine, and a `401` tells clients to log in again. Wrong ones count per
//!   user (`WRONG_PASSWORDS_PER_USER_MAX`, then `429`). A change marks the user's unspent
//!   reset code used, in its transaction: a code mailed before must not undo it.
//! - Wrong current passwords (per user) and wrong emailed codes (per client ip) count as they
//!   start, as logins do (`take_attempt`): each attempt takes its place under the bound before
//!   its argon2 check, and a right one gives it back. Counted only once judged, concurrent
//!   attempts all passed the check while they were being hashed.
//! - The forgot-password answer is `202` with the same body for every well-formed address,
//!   and it is sent once the code has been made and hashed, which is done for an unknown
//!   address too; storing, auditing and mailing happen after the answer, in a task, so
//!   neither the store nor the mail server makes a known address slower. A blocked user gets
//!   no code (their answer is the same).
//! - A reset by emailed code proves control of the mailbox, not of the account as it stood:
//!   whoever held the account before (a squatter who registered the address first, or a thief)
//!   must lose it. So besides ending every session (API.md), it revokes every API key of the
//!   user in the transaction that sets the password (one `auth.api_key_deleted` entry each,
//!   reason `password_reset`), and forgets the user's step-up tokens and cached keys. Key
//!   creation waits on the same lock (`api_keys::CREATIONS`) and refuses once its session has
//!   ended, so no key made by a session the reset ends outlives it. A password change by the
//!   logged-in owner keeps the keys (the owner is known; they revoke keys one by one).
//! - A code of the wrong shape is `400 VALIDATION_ERROR`; a well-formed code that does not
//!   work, for whatever reason, is `400 INVALID_CODE`, the same for an address that names
//!   nobody.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use tally_engine::{ErrorCode, Timestamp, UserId};
use tally_persistence::users::self_service::{CodePurpose, ProfileChange};
use tally_persistence::users::{UserStatus, normalize_email};

use super::caller::Caller;
use super::codes::{self, invalid_code, is_code_shaped};
use super::password::{PASSWORD_LENGTH_MAX, check_policy};
use super::rate_limit::{ClientIp, FailureLimiter, check_all, rate_limited};
use super::sessions::{end_reason, end_sessions};
use super::stepup::{PasswordChange, StepUp};
use super::validate::{check_email, check_name};
use crate::audit::{ACTIVITY_CURSOR_TAG, Actor, AuditContext, Event, activity_page, audited, record};
use crate::json::ApiJson;
use crate::pagination;
use crate::problem::{ApiError, FieldError};
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::rfc3339;

/// Digits of a phone number after `+` (E.164: at most 15; 7 is the shortest in use).
const PHONE_DIGITS_MIN: usize = 7;
const PHONE_DIGITS_MAX: usize = 15;

/// A phone number in E.164 form: `+`, a non-zero digit, then digits, 7 to 15 in all.
pub fn check_phone(phone: &str) -> Result<(), String> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    let ok = (PHONE_DIGITS_MIN..=PHONE_DIGITS_MAX).contains(&digits.len())
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && !digits.starts_with('0');
    if ok { Ok(()) } else { Err("must be E.164: + and 7 to 15 digits, e.g. +447700900123".to_owned()) }
}

/// `Some(None)` for an explicit `null`, `Some(Some(_))` for a value; a missing field stays
/// `None` through `#[serde(default)]`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// Every field error at once, as registration reports them.
fn field_errors(checks: Vec<(&str, Result<(), String>)>) -> Result<(), ApiError> {
    let errors: Vec<FieldError> = checks
        .into_iter()
        .filter_map(|(field, check)| check.err().map(|message| FieldError { field: field.to_owned(), message }))
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    let detail = errors.iter().map(|error| format!("{}: {}", error.field, error.message)).collect::<Vec<_>>();
    let mut problem = ApiError::new(ErrorCode::ValidationError, detail.join("; "));
    problem.errors = errors;
    Err(problem)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ProfileBody)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// E.164 (`+447700900123`); `null` removes the phone.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
}

/// The checked change of a profile body: at least one field, each valid; names trimmed.
pub(crate) fn profile_change(body: ProfileBody) -> Result<ProfileChange, ApiError> {
    if body.first_name.is_none() && body.last_name.is_none() && body.phone.is_none() {
        return Err(ApiError::new(
            ErrorCode::ValidationError,
            "nothing to change: give first_name, last_name or phone",
        ));
    }
    let mut checks = Vec::new();
    if let Some(name) = &body.first_name {
        checks.push(("first_name", check_name(name)));
    }
    if let Some(name) = &body.last_name {
        checks.push(("last_name", check_name(name)));
    }
    if let Some(Some(phone)) = &body.phone {
        checks.push(("phone", check_phone(phone.trim())));
    }
    field_errors(checks)?;
    Ok(ProfileChange {
        first_name: body.first_name.map(|name| name.trim().to_owned()),
        last_name: body.last_name.map(|name| name.trim().to_owned()),
        phone: body.phone.map(|phone| phone.map(|phone| phone.trim().to_owned())),
    })
}

/// The names of the fields a change sets (what an audit entry records: not their values,
/// which are personal data the log has no need of).
pub(crate) fn changed_fields(change: &ProfileChange) -> Value {
    let mut fields = Vec::new();
    if change.first_name.is_some() {
        fields.push("first_name");
    }
    if change.last_name.is_some() {
        fields.push("last_name");
    }
    if change.phone.is_some() {
        fields.push("phone");
    }
    json!({ "fields": fields })
}

fn gone() -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, "the token's user no longer exists")
}

/// `429` if `key` has used up its count; else the attempt counted as a failure at once, before
/// it is judged (as `LoginLimits::take_attempt` does for logins): counted only once judged,
/// concurrent attempts all passed the check while their argon2 checks ran. Check and count
/// are one step (`FailureLimiter::take`). A right attempt gives its count back (`forgive_one`).
fn take_attempt(limiter: &FailureLimiter, key: &str, now: Timestamp, detail: &str) -> Result<(), ApiError> {
    limiter.take(key, now).map_err(|wait| rate_limited(detail, wait))
}

/// `PATCH /v1/users/me {first_name?, last_name?, phone?}` → `200` the caller as
/// `GET /v1/users/me` shows them.
#[utoipa::path(
    patch,
    path = "/v1/users/me",
    tag = "identity",
    request_body = ProfileBody,
    description = "Changes the caller's profile: any of `first_name`, `last_name` (1 to 100 printable \
                   characters) and `phone` (E.164, or `null` to remove it). At least one field; unknown fields \
                   are refused. The email cannot be changed here. Answers the user as `GET /v1/users/me` does.",
    responses((status = 200, body = crate::auth::routes::Me)),
    security(("bearer" = []))
)]
pub async fn update_me(
    State(state): State<AppState>,
    caller: Caller,
    context: AuditContext,
    ApiJson(body): ApiJson<ProfileBody>,
) -> Result<Response, ApiError> {
    let change = profile_change(body)?;
    let identity = state.identity();
    let entry = record(
        identity,
        &context,
        &Actor::of(&caller),
        Event::new("auth.profile_updated").on_user(caller.user_id).details(changed_fields(&change)),
    );
    let user = identity.self_service.update_profile(caller.user_id, &change, &entry).await?.ok_or_else(gone)?;
    Ok(audited(axum::Json(super::routes::me_view(&state, user).await?).into_response()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = PasswordChangeBody)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    pub current_password: String,
    pub new_password: String,
}

/// `POST /v1/users/me/password {current_password, new_password}` ★ (`password.change`) →
/// `204`; every other session of the user ends at once.
#[utoipa::path(
    post,
    path = "/v1/users/me/password",
    tag = "identity",
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for password.change (POST /v1/auth/step-up)")),
    request_body = PasswordBody,
    description = "Changes the caller's password. Needs a step-up token for `password.change` when TOTP is on. \
                   The new password follows the registration policy and must differ from the current one. A \
                   wrong `current_password` is `400 VALIDATION_ERROR` on that field (the token is fine, so not \
                   `401`); five wrong ones within 15 minutes answer `429` until the window ends. Every other \
                   session of the user ends at once (their tokens are refused from the next request); this one \
                   stays. API keys are not affected.",
    responses((status = 204, description = "Changed; every other session has ended")),
    security(("bearer" = []))
)]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    _step_up: StepUp<PasswordChange>,
    context: AuditContext,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<Response, ApiError> {
    field_errors(vec![("new_password", check_policy(&body.new_password))])?;
    let identity = state.identity();
    let now = identity.now();
    let limiter = &identity.protection.self_service.wrong_passwords_by_user;
    let key = caller.user_id.to_string();
    // Counted as a wrong password now, before it is checked; a right one gives it back.
    take_attempt(limiter, &key, now, "too many wrong passwords; retry later")?;
    let user = identity.users.user_by_id(caller.user_id).await?.ok_or_else(gone)?;
    let current_ok = body.current_password.chars().count() <= PASSWORD_LENGTH_MAX
        && identity.passwords.verify(body.current_password.clone(), Some(user.password_hash.clone())).await?;
    if !current_ok {
        return Err(ApiError::field("current_password", "does not match the current password"));
    }
    limiter.forgive_one(&key);
    if body.new_password == body.current_password {
        return Err(ApiError::field("new_password", "must differ from the current password"));
    }
    let password_hash = identity.passwords.hash(body.new_password).await?;
    let actor = Actor::of(&caller);
    let entry = record(identity, &context, &actor, Event::new("auth.password_changed").on_user(user.id));
    if !identity.self_service.set_password(user.id, &password_hash, identity.now(), &entry).await? {
        return Err(gone());
    }
    limiter.clear(&key);
    end_sessions(&state, user.id.as_uuid(), caller.session_id, end_reason::PASSWORD_CHANGED, &actor, &context).await?;
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = PasswordForgotBody)]
#[serde(deny_unknown_fields)]
pub struct ForgotBody {
    pub email: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Accepted)]
pub(crate) struct AcceptedAnswer {
    /// What happens next, in words.
    pub(crate) message: &'static str,
}

const FORGOT_ANSWER: &str =
    "if this address belongs to an account, a 6-digit code valid for 15 minutes has been sent to it";

/// The subject and body of a code mail. Lines stay under 76 characters, so the body goes out
/// as plain 7-bit text, and the code is on a line of its own.
fn code_mail(purpose: CodePurpose, code: &str) -> (&'static str, String) {
    let minutes = codes::CODE_TTL.as_secs() / 60;
    match purpose {
        CodePurpose::PasswordReset => (
            "Your Tally password reset code",
            format!(
                "Your password reset code is:\r\n\r\n    {code}\r\n\r\nIt works once, for {minutes} \
                 minutes.\r\nIf you did not ask to reset your password, ignore this\r\nmessage: your \
                 password is unchanged.\r\n"
            ),
        ),
        CodePurpose::EmailVerification => (
            "Verify your email for Tally",
            format!(
                "Your email verification code is:\r\n\r\n    {code}\r\n\r\nIt works once, for {minutes} \
                 minutes.\r\n"
            ),
        ),
    }
}

/// `POST /v1/auth/password/forgot {email}` → `202`, whether or not the address is registered.
#[utoipa::path(
    post,
    path = "/v1/auth/password/forgot",
    tag = "identity",
    request_body = ForgotBody,
    description = "Mails a 6-digit reset code, valid for 15 minutes and 5 tries, to the address if it belongs to \
                   an active user. The answer is the same `202` for every well-formed address and takes as long \
                   either way (the code is made and hashed before answering in both cases; storing and mailing \
                   happen after the answer). A new request replaces the previous code. At most 5 requests per \
                   address and 20 per client ip within 15 minutes, counted for every address (`429` beyond).",
    responses((status = 202, body = AcceptedAnswer))
)]
pub async fn forgot_password(
    State(state): State<AppState>,
    ip: ClientIp,
    context: AuditContext,
    ApiJson(body): ApiJson<ForgotBody>,
) -> Result<Response, ApiError> {
    field_errors(vec![("email", check_email(&body.email))])?;
    let identity = state.identity();
    let now = identity.now();
    let limits = &identity.protection.self_service;
    let email_key = normalize_email(&body.email);
    let ip_key = ip.key();
    check_all(
        &[(&limits.reset_requests_by_email, &email_key), (&limits.reset_requests_by_ip, &ip_key)],
        now,
        "too many password reset requests; retry later",
    )?;
    limits.reset_requests_by_email.record_failure(&email_key, now);
    limits.reset_requests_by_ip.record_failure(&ip_key, now);
    let user = identity.users.user_by_email(&body.email).await?.filter(|user| user.status == UserStatus::Active);
    // Made and hashed for every address: the answer's timing must not say which exist.
    let issued =
        codes::issue(identity, user.as_ref().map_or(UserId::from_u128(0), |user| user.id), CodePurpose::PasswordReset)
            .await?;
    if let Some(user) = user {
        let identity = identity.clone();
        tokio::spawn(async move {
            let entry = record(
                &identity,
                &context,
                &Actor::anonymous(),
                Event::new("auth.password_reset_requested").on_user(user.id),
            );
            // The mail's place is taken first: a code that could not be mailed must not replace
            // the one the user may already have.
            let (subject, body) = code_mail(CodePurpose::PasswordReset, &issued.code);
            let mail = match identity.mail.reserve(&user.email, subject, body) {
                Ok(mail) => mail,
                Err(error) => {
                    tracing::warn!(%error, user_id = %user.id, "a password reset mail could not be queued; no code issued");
                    return;
                }
            };
            match identity.self_service.issue_code(&issued.stored, &entry).await {
                Ok(true) => mail.send(),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, user_id = %user.id, "a password reset code could not be stored"),
            }
        });
    }
    Ok((StatusCode::ACCEPTED, axum::Json(AcceptedAnswer { message: FORGOT_ANSWER })).into_response())
}

/// `503` for a mail that cannot be queued now, `409` for an address no mail can go to.
fn mail_refused(error: crate::mail::MailError) -> ApiError {
    match error {
        crate::mail::MailError::QueueFull | crate::mail::MailError::Stopped => {
            ApiError::new(ErrorCode::Overloaded, "mail cannot be sent right now; retry later")
        }
        other => ApiError::new(ErrorCode::Conflict, format!("no mail can be sent to this address: {other}")),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = PasswordResetBody)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    pub email: String,
    /// The 6-digit code from the mail.
    pub code: String,
    pub new_password: String,
}

fn check_code_field(code: &str) -> Result<(), String> {
    if is_code_shaped(code) { Ok(()) } else { Err("must be the 6-digit code from the mail".to_owned()) }
}

/// `POST /v1/auth/password/reset {email, code, new_password}` → `204`; every session of the
/// user ends and every API key of theirs is revoked.
#[utoipa::path(
    post,
    path = "/v1/auth/password/reset",
    tag = "identity",
    request_body = ResetBody,
    description = "Sets a new password with the mailed code. A wrong, expired or used code, or an address that \
                   names nobody, is `400 INVALID_CODE` alike; the fifth try kills a code. A malformed `email`, \
                   `code` (not 6 digits) or a `new_password` outside the policy is `400 VALIDATION_ERROR`. \
                   Wrong codes count per client ip too (20 per 15 minutes, then `429`). On success every session \
                   of the user ends at once, every API key of the user is revoked (whoever held the account \
                   before the mailbox's owner proved control of it loses it), and failed-login counts for the \
                   address are cleared.",
    responses((status = 204, description = "The password is set; every session has ended, every API key is revoked"))
)]
pub async fn reset_password(
    State(state): State<AppState>,
    ip: ClientIp,
    context: AuditContext,
    ApiJson(body): ApiJson<ResetBody>,
) -> Result<Response, ApiError> {
    field_errors(vec![
        ("email", check_email(&body.email)),
        ("code", check_code_field(&body.code)),
        ("new_password", check_policy(&body.new_password)),
    ])?;
    let identity = state.identity();
    let now = identity.now();
    let wrong_codes = &identity.protection.self_service.wrong_codes_by_ip;
    let ip_key = ip.key();
    // Counted as a wrong code now, before it is checked; a right one gives it back.
    take_attempt(wrong_codes, &ip_key, now, "too many wrong codes; retry later")?;
    let user = identity.users.user_by_email(&body.email).await?.filter(|user| user.status == UserStatus::Active);
    let matched =
        codes::check(identity, user.as_ref().map(|user| user.id), CodePurpose::PasswordReset, &body.code).await?;
    let (Some(user), Some(code_hash)) = (user, matched) else {
        return Err(invalid_code());
    };
    wrong_codes.forgive_one(&ip_key);
    let password_hash = identity.passwords.hash(body.new_password).await?;
    let actor = Actor::anonymous();
    let entry = record(identity, &context, &actor, Event::new("auth.password_reset").on_user(user.id));
    let protection = &identity.protection;
    // Whoever held the account before the mailbox's owner proved control of it loses every
    // standing credential: sessions, API keys, step-up tokens. Key creation waits while this
    // holds the lock, and refuses after it if its session ended here.
    let _creations = super::api_keys::CREATIONS.lock().await;
    let limit = u32::try_from(super::api_keys::API_KEYS_PER_USER_MAX).unwrap_or(u32::MAX);
    let revoked_keys: Vec<_> = protection
        .second_factor
        .store()
        .api_keys_of(user.id, limit)
        .await?
        .iter()
        .map(|key| {
            let event = Event::new("auth.api_key_deleted")
                .target("api_key", key.id)
                .subject(user.id)
                .details(json!({"reason": end_reason::PASSWORD_RESET}));
            (key.id, record(identity, &context, &actor, event))
        })
        .collect();
    if !identity
        .self_service
        .redeem_password_reset(user.id, &code_hash, &password_hash, identity.now(), &entry, &revoked_keys)
        .await?
    {
        // Spent or replaced between the check and now (a concurrent reset).
        return Err(invalid_code());
    }
    protection.api_keys.forget_user(user.id);
    protection.step_ups.forget_user(user.id);
    protection.logins.by_identifier.clear(&normalize_email(&user.email));
    end_sessions(&state, user.id.as_uuid(), None, end_reason::PASSWORD_RESET, &actor, &context).await?;
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

/// `POST /v1/users/me/email/verification` → `202`: mails a code.
#[utoipa::path(
    post,
    path = "/v1/users/me/email/verification",
    tag = "identity",
    description = "Mails a 6-digit code (15 minutes, 5 tries) to the caller's address; a new request replaces \
                   the previous code. No body. Already verified is `409 CONFLICT`; more than 5 requests within \
                   15 minutes is `429`; a full mail queue is `503` (the previous code \
                   stays as it was).",
    responses((status = 202, body = AcceptedAnswer)),
    security(("bearer" = []))
)]
pub async fn request_verification(
    State(state): State<AppState>,
    caller: Caller,
    context: AuditContext,
) -> Result<Response, ApiError> {
    let identity = state.identity();
    let now = identity.now();
    let user = identity.users.user_by_id(caller.user_id).await?.ok_or_else(gone)?;
    if user.email_verified_at.is_some() {
        return Err(ApiError::new(ErrorCode::Conflict, "the email is already verified"));
    }
    let limiter = &identity.protection.self_service.verification_requests_by_user;
    let key = user.id.to_string();
    check_all(&[(limiter, &key)], now, "too many verification requests; retry later")?;
    limiter.record_failure(&key, now);
    let issued = codes::issue(identity, user.id, CodePurpose::EmailVerification).await?;
    let entry = record(
        identity,
        &context,
        &Actor::of(&caller),
        Event::new("auth.email_verification_requested").on_user(user.id),
    );
    // The mail's place first: a code that cannot be mailed does not replace the previous one.
    let (subject, body) = code_mail(CodePurpose::EmailVerification, &issued.code);
    let mail = identity.mail.reserve(&user.email, subject, body).map_err(mail_refused)?;
    if !identity.self_service.issue_code(&issued.stored, &entry).await? {
        return Err(gone());
    }
    mail.send();
    let answer = AcceptedAnswer { message: "a 6-digit code valid for 15 minutes has been sent to your address" };
    Ok(audited((StatusCode::ACCEPTED, axum::Json(answer)).into_response()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = EmailCodeBody)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    /// The 6-digit code from the mail.
    pub code: String,
}

/// `POST /v1/users/me/email/verification/confirm {code}` → `204`.
#[utoipa::path(
    post,
    path = "/v1/users/me/email/verification/confirm",
    tag = "identity",
    request_body = CodeBody,
    description = "Verifies the caller's email with the mailed code. A wrong, expired or used code is `400 \
                   INVALID_CODE` (the fifth try kills it); a code not of 6 digits is `400 VALIDATION_ERROR`; \
                   already verified is `409 CONFLICT`. From now on `GET /v1/users/me` shows \
                   `email_verified: true`, and with `TALLY_REQUIRE_VERIFIED_EMAIL=true` money-moving routes \
                   accept the caller.",
    responses((status = 204, description = "The email is verified")),
    security(("bearer" = []))
)]
pub async fn confirm_verification(
    State(state): State<AppState>,
    caller: Caller,
    ip: ClientIp,
    context: AuditContext,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Response, ApiError> {
    field_errors(vec![("code", check_code_field(&body.code))])?;
    let identity = state.identity();
    let now = identity.now();
    let wrong_codes = &identity.protection.self_service.wrong_codes_by_ip;
    let ip_key = ip.key();
    check_all(&[(wrong_codes, &ip_key)], now, "too many wrong codes; retry later")?;
    let user = identity.users.user_by_id(caller.user_id).await?.ok_or_else(gone)?;
    if user.email_verified_at.is_some() {
        return Err(ApiError::new(ErrorCode::Conflict, "the email is already verified"));
    }
    // Counted as a wrong code now, before it is checked; a right one gives it back.
    take_attempt(wrong_codes, &ip_key, now, "too many wrong codes; retry later")?;
    let Some(code_hash) = codes::check(identity, Some(user.id), CodePurpose::EmailVerification, &body.code).await?
    else {
        return Err(invalid_code());
    };
    wrong_codes.forgive_one(&ip_key);
    let entry = record(identity, &context, &Actor::of(&caller), Event::new("auth.email_verified").on_user(user.id));
    if !identity.self_service.redeem_email_verification(user.id, &code_hash, identity.now(), &entry).await? {
        return Err(invalid_code());
    }
    identity.email_gate.remember_verified(user.id);
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ActivityItem)]
struct ActivityItem {
    id: String,
    at: String,
    /// `login_succeeded`, `login_failed`, `mfa_challenge_failed`, `password_changed`,
    /// `password_reset`, `password_reset_requested`, `email_verified`,
    /// `email_verification_requested`, `mfa_enabled`, `mfa_disabled`,
    /// `backup_codes_regenerated`, `session_ended`, `api_key_created`, `api_key_deleted`,
    /// `profile_updated`, `registered`.
    kind: String,
    ip: Option<String>,
    user_agent: Option<String>,
    #[schema(value_type = Object)]
    details: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ActivityPage)]
pub struct ActivityPage {
    items: Vec<ActivityItem>,
    next_cursor: Option<String>,
}

/// `GET /v1/users/me/activity?cursor&limit` → the caller's security events, newest first.
#[utoipa::path(
    get,
    path = "/v1/users/me/activity",
    tag = "identity",
    params(ActivityQuery),
    description = "The caller's security events, newest first, from the audit log (each item is an `auth.*` \
                   entry about the caller; `kind` is its action without the prefix). Events done by an admin to \
                   the caller's sessions show too (`session_ended`); admins' other actions on the user are in the \
                   admin audit log only. `limit` 1 to 200 (default 50), opaque `cursor`.",
    responses((status = 200, body = ActivityPage)),
    security(("bearer" = []))
)]
pub async fn activity(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ActivityQuery>,
) -> Result<axum::Json<ActivityPage>, ApiError> {
    let limit = pagination::limit(query.limit.as_deref())?;
    let before = pagination::parse_seq_cursor(ACTIVITY_CURSOR_TAG, query.cursor.as_deref())?;
    let (entries, next_cursor) = activity_page(&state, caller.user_id, before, limit).await?;
    let items = entries
        .into_iter()
        .map(|entry| {
            let record = entry.record;
            Ok(ActivityItem {
                id: record.id.to_string(),
                at: rfc3339(record.at)?,
                kind: record.action.strip_prefix(crate::audit::ACTIVITY_PREFIX).unwrap_or(&record.action).to_owned(),
                ip: record.ip,
                user_agent: record.user_agent,
                details: serde_json::from_str(&record.details).unwrap_or(Value::Null),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(axum::Json(ActivityPage { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn phones_are_e164() {
        for good in ["+447700900123", "+15555550100", "+4912345"] {
            assert_eq!(check_phone(good), Ok(()), "{good}");
        }
        for bad in ["447700900123", "+0447700900", "+44 7700 900123", "+123456", "+1234567890123456", "+", ""] {
            assert!(check_phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_profile_body_distinguishes_absent_from_null_and_needs_a_field() {
        let body: ProfileBody = serde_json::from_str(r#"{"phone": null}"#).unwrap();
        assert_eq!(profile_change(body).unwrap().phone, Some(None));
        let body: ProfileBody = serde_json::from_str(r#"{"first_name": " Ada "}"#).unwrap();
        let change = profile_change(body).unwrap();
        assert_eq!((change.first_name.as_deref(), change.phone), (Some("Ada"), None));
        let body: ProfileBody = serde_json::from_str("{}").unwrap();
        assert!(profile_change(body).is_err());
        assert!(serde_json::from_str::<ProfileBody>(r#"{"email": "x@y.z"}"#).is_err());
    }
}
