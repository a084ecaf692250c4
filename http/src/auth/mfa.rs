//! TOTP as a second factor: `POST /v1/users/me/mfa/totp/setup` and `/confirm`, the MFA step of
//! a login (`POST /v1/auth/mfa/verify`), and the checks step-up shares (`SecondFactor`).
//!
//! Setup answers the secret, its `otpauth://` URL and ten **backup codes**, all shown once
//! (API.md fixes confirm's answer as `204`, so the codes come with the secret: the user saves
//! both at the same moment). Nothing is on until confirm proves the app computes the same
//! codes. A code's time step is accepted once per user (the store moves `last_used_step`
//! forward atomically), so a code seen over a shoulder or replayed from a log is refused.
//! Backup codes (80 random bits each) are stored as SHA-256 of user id and code, single use,
//! accepted at login only: step-up wants the device itself.
//!
//! Whether a user has TOTP on is cached in memory (`totp_enabled`): every ★ request asks, and
//! a query per transfer would cost the hot path. Confirm and turning TOTP off drop this
//! node's entry after the store changed (`changed`), and a state read from the store is cached
//! only if no change was made since the read began (`remember_read`): a read that began before
//! a confirm and ended after it would otherwise cache "off" for a user whose TOTP is on, and
//! step-up would stop asking for the device until the cache emptied. Identity requests are
//! served by one node of a cluster (docs/cluster.md), so there is no other copy to drop.
//!
//! Also here: `GET /v1/users/me/mfa`, `DELETE /v1/users/me/mfa/totp` ★ (TOTP off, backup codes
//! void) and `POST /v1/users/me/mfa/backup-codes` ★ (ten new codes, the old ones void).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tally_engine::{ErrorCode, Timestamp, UserId};
use tally_persistence::users::UserStatus;
use tally_persistence::users::mfa::MfaStore;
use uuid::Uuid;

use super::caller::Caller;
use super::challenges::{Attempt, Challenges, Purpose};
use super::rate_limit::{FailureLimiter, LOGIN_FAILURE_WINDOW, SECOND_FACTOR_FAILURES_PER_USER_MAX, rate_limited};
use super::stepup::{MfaBackupCodes, MfaDisable, StepUp};
use super::totp;
use crate::audit::{Actor, AuditContext, Event, audited, record, record_in_background};
use crate::digest::sha256_hex;
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;

/// Backup codes made at setup: ten is what most services give, enough for years of a lost
/// phone now and then.
pub const BACKUP_CODES_PER_USER: usize = 10;

/// Base32 characters per backup code: 16 × 5 = 80 random bits, beyond offline guessing of
/// its SHA-256 (which is why a fast hash is enough here).
const BACKUP_CODE_CHARACTERS: usize = 16;

/// Longest `code` looked at: a backup code with its dashes is 19 characters.
pub const CODE_LENGTH_MAX: usize = 32;

/// Users whose TOTP state is cached. An entry is ~40 bytes, so ~10 MiB; when full the cache
/// is emptied and refills from the store (a cache, so forgetting is always correct).
pub const TOTP_STATES_CACHED_MAX: usize = 262_144;

/// The methods a challenge offers (API.md).
pub const METHODS: [&str; 1] = ["totp"];

/// The second factor's state and checks, shared by login and step-up.
pub struct SecondFactor {
    store: Arc<dyn MfaStore>,
    enabled: DashMap<UserId, bool>,
    /// Bumped by every change of any user's TOTP state, before its entry is dropped: a read
    /// from the store caches its answer only if this did not move meanwhile.
    changes: AtomicU64,
    failures: FailureLimiter,
    /// MFA sessions opened by a password login.
    pub sessions: Challenges,
}

impl std::fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecondFactor").field("cached", &self.enabled.len()).finish_non_exhaustive()
    }
}

/// Which kinds of code a check accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    TotpOnly,
    TotpOrBackupCode,
}

impl SecondFactor {
    pub fn new(store: Arc<dyn MfaStore>) -> SecondFactor {
        SecondFactor {
            store,
            enabled: DashMap::new(),
            changes: AtomicU64::new(0),
            failures: FailureLimiter::new(SECOND_FACTOR_FAILURES_PER_USER_MAX, LOGIN_FAILURE_WINDOW),
            sessions: Challenges::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn MfaStore> {
        &self.store
    }

    /// Whether `user` has TOTP on, from the cache when it can.
    pub async fn totp_enabled(&self, user: UserId) -> Result<bool, ApiError> {
        if let Some(enabled) = self.enabled.get(&user).map(|entry| *entry.value()) {
            return Ok(enabled);
        }
        let read_from = self.generation();
        let enabled = self.store.totp(user).await?.is_some_and(|record| record.enabled);
        self.remember_read(user, enabled, read_from);
        Ok(enabled)
    }

    /// Where the changes stand: taken before reading a TOTP state from the store, for
    /// `remember_read`.
    pub fn generation(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Caches `enabled`, read from the store by a read that began at `read_from`
    /// (`generation`), unless a change was made since: that change may have landed after the
    /// read and dropped its entry before this one would go in. The check and the insert hold
    /// the entry's lock, which `changed` needs to drop the entry, so a stale answer is either
    /// refused here or dropped there.
    pub fn remember_read(&self, user: UserId, enabled: bool, read_from: u64) {
        if self.enabled.len() >= TOTP_STATES_CACHED_MAX {
            self.enabled.clear();
        }
        if let dashmap::Entry::Vacant(slot) = self.enabled.entry(user)
            && self.generation() == read_from
        {
            slot.insert(enabled);
        }
    }

    /// After the store changed `user`'s TOTP state: forget what is cached, and keep any read
    /// under way from caching what it found.
    pub(crate) fn changed(&self, user: UserId) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.enabled.remove(&user);
    }

    /// Checks `code` for `user` (whose TOTP must be on), spending what it matched: the TOTP
    /// step or the backup code. A wrong code counts against the user's second-factor limit;
    /// past it every code is refused with `429` until the window ends.
    pub async fn check_code(&self, user: UserId, code: &str, accept: Accept, now: Timestamp) -> Result<bool, ApiError> {
        let key = user.to_string();
        if let Some(wait) = self.failures.blocked_for(&key, now) {
            return Err(rate_limited("too many wrong codes; retry later", wait));
        }
        // Counted as wrong now, before the code is checked, and given back if it is right: a
        // count taken only once judged let concurrent codes all pass the check meanwhile.
        self.failures.record_failure(&key, now);
        let accepted = if totp::is_code_shaped(code) {
            match self.store.totp(user).await? {
                Some(record) if record.enabled => match totp::matching_step(&record.secret, code, now) {
                    Some(step) => self.store.use_totp_step(user, step).await?,
                    None => false,
                },
                _ => false,
            }
        } else if let (Accept::TotpOrBackupCode, Some(normalized)) = (accept, normalize_backup_code(code)) {
            self.store.use_backup_code(user, &backup_code_hash(user, &normalized), now).await?
        } else {
            false
        };
        if accepted {
            self.failures.forgive_one(&key);
        }
        Ok(accepted)
    }
}

/// A backup code as typed (any case, dashes and spaces anywhere) in canonical form: 16
/// lowercase base32 characters; `None` if it cannot be one.
fn normalize_backup_code(code: &str) -> Option<String> {
    let normalized: String = code.chars().filter(|c| *c != '-' && *c != ' ').map(|c| c.to_ascii_lowercase()).collect();
    let base32 = |c: char| c.is_ascii_lowercase() || ('2'..='7').contains(&c);
    (normalized.len() == BACKUP_CODE_CHARACTERS && normalized.chars().all(base32)).then_some(normalized)
}

/// The stored form of a backup code: salted with the user id, so equal codes of two users
/// (never expected at 80 bits) would still hash apart.
fn backup_code_hash(user: UserId, normalized: &str) -> String {
    sha256_hex(format!("{user}:{normalized}").as_bytes())
}

/// Ten fresh backup codes, shown as `xxxx-xxxx-xxxx-xxxx`.
fn generate_backup_codes() -> Result<Vec<String>, ApiError> {
    (0..BACKUP_CODES_PER_USER)
        .map(|_| {
            let mut bytes = [0_u8; BACKUP_CODE_CHARACTERS * 5 / 8];
            aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("the system random generator failed"))?;
            let plain = totp::base32_encode(&bytes).to_ascii_lowercase();
            let groups: Vec<&str> = [0, 4, 8, 12].iter().map(|start| &plain[*start..start + 4]).collect();
            Ok(groups.join("-"))
        })
        .collect()
}

/// The `code` of a request body: present, not absurdly long, and shaped like a TOTP code
/// (or, where `accept` allows, a backup code). Anything else is `400`.
fn check_code_shape(code: &str, accept: Accept) -> Result<(), ApiError> {
    let shaped = code.len() <= CODE_LENGTH_MAX
        && (totp::is_code_shaped(code)
            || (accept == Accept::TotpOrBackupCode && normalize_backup_code(code).is_some()));
    if shaped {
        Ok(())
    } else if accept == Accept::TotpOrBackupCode {
        Err(ApiError::field("code", "must be a 6-digit code or a backup code"))
    } else {
        Err(ApiError::field("code", "must be a 6-digit code"))
    }
}

/// A session id of a request body, or `400`.
pub fn session_id(field: &str, text: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(text).map_err(|_| ApiError::field(field, "must be a UUID"))
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SetupAnswer {
    secret: String,
    otpauth_url: String,
    backup_codes: Vec<String>,
}

/// `POST /v1/users/me/mfa/totp/setup` → `200 {secret, otpauth_url, backup_codes}`. Calling it
/// again before confirming replaces the secret and the codes; once TOTP is on, `409 CONFLICT`
/// (turn it off first, `DELETE /v1/users/me/mfa/totp`, to set up a new device).
#[utoipa::path(
    post,
    path = "/v1/users/me/mfa/totp/setup",
    tag = "identity",
    responses((status = 200, body = SetupAnswer)),
    security(("bearer" = []))
)]
pub async fn setup(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let identity = state.identity();
    let second_factor = &identity.protection.second_factor;
    let conflict = || ApiError::new(ErrorCode::Conflict, "TOTP is already enabled for this user");
    if second_factor.totp_enabled(caller.user_id).await? {
        return Err(conflict());
    }
    let user = identity
        .users
        .user_by_id(caller.user_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "the token's user no longer exists"))?;
    let secret = totp::generate_secret()?;
    let backup_codes = generate_backup_codes()?;
    let hashes: Vec<String> = backup_codes
        .iter()
        .filter_map(|code| normalize_backup_code(code))
        .map(|normalized| backup_code_hash(user.id, &normalized))
        .collect();
    if hashes.len() != backup_codes.len() {
        return Err(ApiError::internal("a generated backup code did not normalise"));
    }
    if !second_factor.store().begin_totp(user.id, &secret, &hashes, identity.now()).await? {
        return Err(conflict());
    }
    let encoded = totp::base32_encode(&secret);
    let answer = SetupAnswer { otpauth_url: totp::otpauth_url(&encoded, &user.email), secret: encoded, backup_codes };
    Ok(no_store(axum::Json(answer).into_response()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    pub code: String,
}

/// `POST /v1/users/me/mfa/totp/confirm {code}` → `204`: TOTP is on from now, and the code's
/// step is spent. No pending secret (setup not called) or TOTP already on → `409 CONFLICT`; a
/// code that does not match → `400 VALIDATION_ERROR` on `code` (counted like any wrong code).
#[utoipa::path(
    post,
    path = "/v1/users/me/mfa/totp/confirm",
    tag = "identity",
    request_body = ConfirmBody,
    responses((status = 204, description = "TOTP is on from now")),
    security(("bearer" = []))
)]
pub async fn confirm(
    State(state): State<AppState>,
    caller: Caller,
    context: AuditContext,
    ApiJson(body): ApiJson<ConfirmBody>,
) -> Result<Response, ApiError> {
    check_code_shape(&body.code, Accept::TotpOnly)?;
    let identity = state.identity();
    let second_factor = &identity.protection.second_factor;
    let now = identity.now();
    let record = match second_factor.store().totp(caller.user_id).await? {
        Some(record) if !record.enabled => record,
        Some(_) => return Err(ApiError::new(ErrorCode::Conflict, "TOTP is already enabled for this user")),
        None => return Err(ApiError::new(ErrorCode::Conflict, "no TOTP setup to confirm; call setup first")),
    };
    let key = caller.user_id.to_string();
    if let Some(wait) = second_factor.failures.blocked_for(&key, now) {
        return Err(rate_limited("too many wrong codes; retry later", wait));
    }
    let Some(step) = totp::matching_step(&record.secret, &body.code, now) else {
        second_factor.failures.record_failure(&key, now);
        return Err(ApiError::field("code", "does not match the secret; check the device's clock"));
    };
    let entry = crate::audit::record(
        identity,
        &context,
        &Actor::of(&caller),
        Event::new("auth.mfa_enabled").on_user(caller.user_id).details(serde_json::json!({"method": "totp"})),
    );
    if !second_factor.store().enable_totp(caller.user_id, &record.secret, step, now, &entry).await? {
        return Err(ApiError::new(ErrorCode::Conflict, "the TOTP setup changed meanwhile; confirm the new secret"));
    }
    second_factor.changed(caller.user_id);
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MfaRequired {
    mfa_required: bool,
    mfa_session_id: String,
    methods: [&'static str; 1],
}

/// The answer to a correct password when the user has TOTP on: an MFA session instead of
/// tokens; `None` when TOTP is off and the login may issue tokens. `password_hash` is the
/// stored hash the password was just checked against: the session ends if it changes.
pub async fn login_challenge(
    state: &AppState,
    user: UserId,
    password_hash: &str,
) -> Result<Option<Response>, ApiError> {
    let identity = state.identity();
    let second_factor = &identity.protection.second_factor;
    if !second_factor.totp_enabled(user).await? {
        return Ok(None);
    }
    let id = identity.ids.next_uuid();
    second_factor.sessions.open(id, user, Purpose::login(password_hash), identity.now())?;
    let answer = MfaRequired { mfa_required: true, mfa_session_id: id.to_string(), methods: METHODS };
    Ok(Some(no_store(axum::Json(answer).into_response())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = MfaVerifyBody)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub mfa_session_id: String,
    pub code: String,
}

/// `POST /v1/auth/mfa/verify {mfa_session_id, code}` → tokens. A TOTP code or an unused
/// backup code completes the login. An unknown, expired or used session is `401
/// UNAUTHENTICATED`; a wrong code `401 INVALID_CREDENTIALS` (the session allows
/// `CHALLENGE_ATTEMPTS_MAX` of them).
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/verify",
    tag = "identity",
    request_body = VerifyBody,
    responses((status = 200, body = crate::auth::routes::TokenPair))
)]
pub async fn verify(
    State(state): State<AppState>,
    client: super::sessions::ClientInfo,
    context: AuditContext,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Response, ApiError> {
    let id = session_id("mfa_session_id", &body.mfa_session_id)?;
    check_code_shape(&body.code, Accept::TotpOrBackupCode)?;
    let identity = state.identity();
    let second_factor = &identity.protection.second_factor;
    let now = identity.now();
    let challenge = second_factor
        .sessions
        .begin(id, now)
        .filter(|challenge| matches!(challenge.purpose, Purpose::Login { .. }))
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "MFA session unknown, expired or already used"))?;
    let correct = second_factor.check_code(challenge.user, &body.code, Accept::TotpOrBackupCode, now).await?;
    match second_factor.sessions.settle(id, correct) {
        Attempt::Accepted => {}
        Attempt::Refused { attempts_left } => {
            challenge_failed(&state, &context, challenge.user, "login");
            return Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                format!("wrong or already used code; {attempts_left} attempts left in this MFA session"),
            ));
        }
    }
    let user = identity
        .users
        .user_by_id(challenge.user)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "the user no longer exists"))?;
    if user.status != UserStatus::Active {
        return Err(ApiError::new(ErrorCode::Unauthenticated, "this user is blocked"));
    }
    // The password this session's login checked must still be the user's: a change or a reset
    // since (the owner locking out whoever had it) ends a login still waiting for its code.
    // `start_session` checks the same against its own read, for a change racing this one.
    if !challenge.purpose.is_login_with(&user.password_hash) {
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "the password changed while signing in; sign in again",
        ));
    }
    super::sessions::start_session(&state, &user, client).await
}

/// Records a wrong second-factor code (`auth.mfa_challenge_failed`) in the background: the
/// answer must not wait for it, and its timing must not differ from a right code's.
pub(crate) fn challenge_failed(state: &AppState, context: &AuditContext, user: UserId, during: &str) {
    let identity = state.identity();
    let event = Event::new("auth.mfa_challenge_failed").on_user(user).details(serde_json::json!({"during": during}));
    record_in_background(identity, record(identity, context, &Actor::anonymous(), event));
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = MfaStatus)]
pub struct MfaStatus {
    totp_enabled: bool,
    /// Unused backup codes (0 while TOTP is off: codes exist only with TOTP).
    backup_codes_remaining: u64,
}

/// `GET /v1/users/me/mfa` → `{totp_enabled, backup_codes_remaining}`.
#[utoipa::path(
    get,
    path = "/v1/users/me/mfa",
    tag = "identity",
    responses((status = 200, body = MfaStatus)),
    security(("bearer" = []))
)]
pub async fn status(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<MfaStatus>, ApiError> {
    let second_factor = &state.identity().protection.second_factor;
    let read_from = second_factor.generation();
    let totp = second_factor.store().totp(caller.user_id).await?;
    let totp_enabled = totp.is_some_and(|totp| totp.enabled);
    let backup_codes_remaining =
        if totp_enabled { second_factor.store().backup_codes_remaining(caller.user_id).await? } else { 0 };
    second_factor.remember_read(caller.user_id, totp_enabled, read_from);
    Ok(axum::Json(MfaStatus { totp_enabled, backup_codes_remaining }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = TotpOffBody)]
#[serde(deny_unknown_fields)]
pub struct DisableBody {
    /// A current TOTP code (of a later time step than the one that earned the step-up token:
    /// each step is accepted once) or an unused backup code.
    pub code: String,
}

fn totp_off_conflict() -> ApiError {
    ApiError::new(ErrorCode::Conflict, "TOTP is not enabled for this user")
}

/// `DELETE /v1/users/me/mfa/totp {code}` ★ (`mfa.disable`) → `204`.
#[utoipa::path(
    delete,
    path = "/v1/users/me/mfa/totp",
    tag = "identity",
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for mfa.disable (POST /v1/auth/step-up)")),
    request_body = DisableBody,
    description = "Turns TOTP off: the secret is deleted and every backup code is void; step-up is no longer \
                   asked of this user. Needs a step-up token for `mfa.disable` AND a code in the body: a TOTP \
                   code of a later time step than the step-up's (each step is accepted once) or an unused backup \
                   code (for a user whose device is gone). A wrong or used code is `400 INVALID_CODE` and counts \
                   against the user's second-factor limit (`429` beyond it); TOTP not on is `409 CONFLICT`.",
    responses((status = 204, description = "TOTP is off; the backup codes are void")),
    security(("bearer" = []))
)]
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    _step_up: StepUp<MfaDisable>,
    context: AuditContext,
    ApiJson(body): ApiJson<DisableBody>,
) -> Result<Response, ApiError> {
    check_code_shape(&body.code, Accept::TotpOrBackupCode)?;
    let identity = state.identity();
    let second_factor = &identity.protection.second_factor;
    if !second_factor.store().totp(caller.user_id).await?.is_some_and(|record| record.enabled) {
        return Err(totp_off_conflict());
    }
    if !second_factor.check_code(caller.user_id, &body.code, Accept::TotpOrBackupCode, identity.now()).await? {
        challenge_failed(&state, &context, caller.user_id, "mfa.disable");
        return Err(ApiError::new(ErrorCode::InvalidCode, "the code is wrong or already used"));
    }
    let entry =
        record(identity, &context, &Actor::of(&caller), Event::new("auth.mfa_disabled").on_user(caller.user_id));
    if !second_factor.store().disable_totp(caller.user_id, &entry).await? {
        return Err(totp_off_conflict());
    }
    second_factor.changed(caller.user_id);
    identity.protection.step_ups.forget_user(caller.user_id);
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = BackupCodes)]
struct BackupCodes {
    /// Ten new codes, shown once; every earlier code stopped working.
    codes: Vec<String>,
}

/// `POST /v1/users/me/mfa/backup-codes` ★ (`mfa.backup_codes`) → `200 {codes}`.
#[utoipa::path(
    post,
    path = "/v1/users/me/mfa/backup-codes",
    tag = "identity",
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for mfa.backup_codes (POST /v1/auth/step-up)")),
    description = "Ten new backup codes, shown once; every earlier code stops working. Needs TOTP on (`409` \
                   otherwise: backup codes belong to TOTP) and a step-up token for `mfa.backup_codes`, which is \
                   the current code this asks for. No body.",
    responses((status = 200, body = BackupCodes)),
    security(("bearer" = []))
)]
pub async fn regenerate_backup_codes(
    State(state): State<AppState>,
    caller: Caller,
    _step_up: StepUp<MfaBackupCodes>,
    context: AuditContext,
) -> Result<Response, ApiError> {
    let identity = state.identity();
    let second_factor = &identity.protection.second_factor;
    let codes = generate_backup_codes()?;
    let hashes: Vec<String> = codes
        .iter()
        .filter_map(|code| normalize_backup_code(code))
        .map(|normalized| backup_code_hash(caller.user_id, &normalized))
        .collect();
    if hashes.len() != codes.len() {
        return Err(ApiError::internal("a generated backup code did not normalise"));
    }
    let entry = record(
        identity,
        &context,
        &Actor::of(&caller),
        Event::new("auth.backup_codes_regenerated")
            .on_user(caller.user_id)
            .details(serde_json::json!({"count": codes.len()})),
    );
    if !second_factor.store().replace_backup_codes(caller.user_id, &hashes, &entry).await? {
        return Err(totp_off_conflict());
    }
    Ok(audited(no_store(axum::Json(BackupCodes { codes }).into_response())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn backup_codes_are_80_bit_groups_that_normalise_however_typed() {
        let codes = generate_backup_codes().unwrap();
        assert_eq!(codes.len(), BACKUP_CODES_PER_USER);
        for code in &codes {
            assert_eq!(code.len(), 19, "{code}");
            let normalized = normalize_backup_code(code).unwrap();
            assert_eq!(normalize_backup_code(&code.to_ascii_uppercase().replace('-', " ")).unwrap(), normalized);
        }
        assert_eq!(normalize_backup_code("abcd-efgh-ijkl-mno1"), None, "1 is not base32");
        assert_eq!(normalize_backup_code("abcd"), None);
        check_code_shape("123456", Accept::TotpOnly).unwrap();
        assert!(check_code_shape(&codes[0], Accept::TotpOnly).is_err());
        check_code_shape(&codes[0], Accept::TotpOrBackupCode).unwrap();
        assert!(check_code_shape(&"1".repeat(CODE_LENGTH_MAX + 1), Accept::TotpOrBackupCode).is_err());
    }
}
