//! API keys for machine clients: `GET/POST /v1/api-keys`, `DELETE /v1/api-keys/{id}`, and the
//! `Scoped<S>` extractor that lets a route accept `X-API-Key` for one scope.
//!
//! A key is `tly_` and 256 random bits (base64url). It is shown once, at creation; the store
//! keeps only its SHA-256. A fast hash is right here, unlike for passwords: the secret has
//! full entropy, so there is nothing to brute-force offline that a slow hash would protect,
//! and the key is checked on every request, where argon2 would cost ~50 ms of CPU each.
//! Verified keys are cached by hash in memory; deleting a key evicts it at once.
//!
//! Which routes a key opens (everything else refuses keys with `403 FORBIDDEN`):
//!
//! | scope | routes |
//! |---|---|
//! | `accounts:read` | `GET /v1/accounts`, `GET /v1/accounts/{id}`, `GET /v1/accounts/{id}/statement`, `GET /v1/accounts/{id}/balance` (and the other account reads) |
//! | `transfers:read` | `GET /v1/transfers/{id}`, `GET /v1/transfer-types` |
//! | `transfers:write` | `POST /v1/transfers`, `POST /v1/transfers/quote`, `POST /v1/transfers/{id}/cancel` (and batches, when built); a transfer may name a saved `beneficiary_id`, but saving one takes a person |
//!
//! Opening accounts, API-key management, sessions, MFA, step-up and admin routes take people
//! only. A request that carries `X-API-Key` is an API-key request everywhere: its key decides,
//! whatever `Authorization` says. A key acts as its owner and never needs step-up.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tally_engine::{ErrorCode, UserId};
use tally_persistence::users::mfa::{ApiKeyRecord, MfaStore};

use super::caller::Caller;
use crate::accounts::created;
use crate::audit::{Actor, AuditContext, Event, audited};
use crate::digest::{sha256, sha256_hex};
use crate::input::IdPath;
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::rfc3339;

/// The header machine clients send their key in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// What every key starts with, so a leaked one is recognisable (secret scanners, logs).
const KEY_PREFIX: &str = "tly_";

/// Random bytes per key: 256 bits, beyond guessing.
const KEY_BYTES: usize = 32;

/// Longest key looked at: ours are 47 characters.
pub const API_KEY_LENGTH_MAX: usize = 128;

/// Keys one user may hold: one per integration and environment is a handful; 32 keeps the
/// unpaginated list small.
pub const API_KEYS_PER_USER_MAX: u64 = 32;

/// Longest key name (a label for people).
pub const API_KEY_NAME_LENGTH_MAX: usize = 100;

/// Held while a key is counted and inserted, and while a password reset by emailed code
/// revokes a user's keys and ends their sessions (`self_service::reset_password`). One lock for
/// every user: making a key is rare, and a cluster serves identity from one node.
pub(crate) static CREATIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Verified keys cached at once (~200 bytes each, ~13 MiB); when full the cache is emptied
/// and refills from the store.
pub const API_KEYS_CACHED_MAX: usize = 65_536;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    AccountsRead,
    TransfersRead,
    TransfersWrite,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::AccountsRead, Scope::TransfersRead, Scope::TransfersWrite];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::AccountsRead => "accounts:read",
            Scope::TransfersRead => "transfers:read",
            Scope::TransfersWrite => "transfers:write",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == text)
    }

    /// The scope's bit in `VerifiedKey::scopes`, a `u8`: a ninth scope must widen it (this
    /// stops the build until it does).
    const fn bit(self) -> u8 {
        const _: () = assert!(Scope::ALL.len() <= u8::BITS as usize, "VerifiedKey::scopes has a bit per scope");
        1 << self as u8
    }
}

/// The scope a route needs of an API key, named in its signature as `Scoped<S>`.
pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: Scope;
}

#[derive(Debug)]
pub struct AccountsRead;
impl RequiredScope for AccountsRead {
    const SCOPE: Scope = Scope::AccountsRead;
}

#[derive(Debug)]
pub struct TransfersRead;
impl RequiredScope for TransfersRead {
    const SCOPE: Scope = Scope::TransfersRead;
}

#[derive(Debug)]
pub struct TransfersWrite;
impl RequiredScope for TransfersWrite {
    const SCOPE: Scope = Scope::TransfersWrite;
}

/// A key the store knows, of an active user: small and `Copy`, since every request with a key
/// reads it from the cache.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VerifiedKey {
    pub(crate) user: UserId,
    /// The key's scopes, one bit each (`Scope::bit`).
    scopes: u8,
}

impl VerifiedKey {
    fn holds(&self, scope: Scope) -> bool {
        self.scopes & scope.bit() != 0
    }
}

/// The key store and the cache of verified keys, keyed by the key's SHA-256 (the raw digest:
/// the store's lowercase hex of it is made only on a miss).
pub struct ApiKeys {
    store: Arc<dyn MfaStore>,
    verified: DashMap<[u8; 32], VerifiedKey>,
    /// Evictions so far (`forget_user`, `forget_hash`). `verify` caches what it read only if
    /// none happened while it read: a key deleted, or its user blocked, between its read and
    /// its insert would otherwise be put back and keep working until the cache was cleared.
    evictions: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("cached", &self.verified.len()).finish_non_exhaustive()
    }
}

fn invalid_key() -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, "missing, malformed or unknown API key")
}

impl ApiKeys {
    pub fn new(store: Arc<dyn MfaStore>) -> ApiKeys {
        ApiKeys { store, verified: DashMap::new(), evictions: std::sync::atomic::AtomicU64::new(0) }
    }

    /// The owner and scopes of `key`, or `401`. A key of a blocked user is refused: checked
    /// against the user store when the key is first seen, and `forget_user` evicts a user's
    /// keys from the cache when an admin blocks them.
    pub(crate) async fn verify(
        &self,
        key: &str,
        users: &dyn tally_persistence::users::UserStore,
    ) -> Result<VerifiedKey, ApiError> {
        if key.is_empty() || key.len() > API_KEY_LENGTH_MAX || !key.starts_with(KEY_PREFIX) {
            return Err(invalid_key());
        }
        let digest = sha256(key.as_bytes());
        if let Some(hit) = self.verified.get(&digest).map(|entry| *entry.value()) {
            return Ok(hit);
        }
        let hash = data_encoding::HEXLOWER.encode(&digest);
        let evictions = self.evictions.load(std::sync::atomic::Ordering::SeqCst);
        let record = self.store.api_key_by_hash(&hash).await?.ok_or_else(invalid_key)?;
        let owner = users.user_by_id(record.user_id).await?;
        if owner.is_none_or(|owner| owner.status != tally_persistence::users::UserStatus::Active) {
            return Err(ApiError::new(ErrorCode::Unauthenticated, "this API key's user is blocked"));
        }
        let verified = VerifiedKey {
            user: record.user_id,
            scopes: record.scopes.iter().filter_map(|s| Scope::parse(s)).fold(0, |bits, scope| bits | scope.bit()),
        };
        if self.verified.len() >= API_KEYS_CACHED_MAX {
            self.verified.clear();
        }
        self.verified.insert(digest, verified);
        // An eviction since the read may have missed this entry (it was not there yet): undo
        // the insert, so the next request reads the store again.
        if self.evictions.load(std::sync::atomic::Ordering::SeqCst) != evictions {
            self.verified.remove(&digest);
        }
        Ok(verified)
    }
}

impl ApiKeys {
    /// Evicts every cached key of `user` (an admin blocked them): their next request with a key
    /// goes to the store again and is refused there.
    pub fn forget_user(&self, user: UserId) {
        self.evictions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.verified.retain(|_, verified| verified.user != user);
    }

    /// Evicts the key whose stored hash (lowercase hex of its SHA-256) is `hash`: it was
    /// deleted. A hash that is not one (never stored so) empties the cache rather than leave a
    /// deleted key working.
    fn forget_hash(&self, hash: &str) {
        self.evictions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match data_encoding::HEXLOWER.decode(hash.as_bytes()).ok().and_then(|raw| <[u8; 32]>::try_from(raw).ok()) {
            Some(digest) => {
                self.verified.remove(&digest);
            }
            None => self.verified.clear(),
        }
    }
}

/// A caller allowed on a route that accepts API keys with scope `S`: a person with a bearer
/// token, or an API key holding `S` (acting as its owner).
#[derive(Debug)]
pub struct Scoped<S> {
    pub caller: Caller,
    scope: PhantomData<S>,
}

impl<S: RequiredScope> FromRequestParts<AppState> for Scoped<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(API_KEY_HEADER) else {
            let caller = Caller::from_request_parts(parts, state).await?;
            return Ok(Scoped { caller, scope: PhantomData });
        };
        let key = value.to_str().map_err(|_| invalid_key())?.trim();
        let identity = state.identity();
        let verified = identity.protection.api_keys.verify(key, identity.users.as_ref()).await?;
        if !verified.holds(S::SCOPE) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this API key lacks the scope {}", S::SCOPE.as_str()),
            ));
        }
        identity.protection.requests.admit(verified.user, identity.now())?;
        Ok(Scoped { caller: Caller { user_id: verified.user, session_id: None }, scope: PhantomData })
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ApiKeyCreateBody)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub name: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ApiKeyView)]
struct KeyView {
    id: String,
    name: String,
    scopes: Vec<String>,
    created_at: String,
}

impl KeyView {
    fn of(record: &ApiKeyRecord) -> Result<KeyView, ApiError> {
        Ok(KeyView {
            id: record.id.to_string(),
            name: record.name.clone(),
            scopes: record.scopes.clone(),
            created_at: rfc3339(record.created_at)?,
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ApiKeyCreated)]
struct Created {
    #[serde(flatten)]
    view: KeyView,
    /// The key itself: shown here once, never again.
    key: String,
}

/// The checked scopes of a create body: known, at least one, no repeats (sorted).
fn parse_scopes(scopes: &[String]) -> Result<Vec<Scope>, ApiError> {
    if scopes.is_empty() {
        return Err(ApiError::field("scopes", "at least one scope is needed"));
    }
    let mut parsed = Vec::with_capacity(scopes.len());
    for text in scopes {
        let scope = Scope::parse(text).ok_or_else(|| {
            let known: Vec<&str> = Scope::ALL.iter().map(|scope| scope.as_str()).collect();
            ApiError::field("scopes", format!("unknown scope {text:?}; one of {}", known.join(", ")))
        })?;
        if parsed.contains(&scope) {
            return Err(ApiError::field("scopes", format!("{text} is listed twice")));
        }
        parsed.push(scope);
    }
    parsed.sort();
    Ok(parsed)
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::field("name", "must not be empty"));
    }
    if name.chars().count() > API_KEY_NAME_LENGTH_MAX {
        return Err(ApiError::field("name", format!("at most {API_KEY_NAME_LENGTH_MAX} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::field("name", "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// `POST /v1/api-keys {name, scopes}` → `201 {id, key, name, scopes, created_at}`.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "identity",
    request_body = CreateBody,
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed for a key with the transfers:write scope when the caller has TOTP on: a step-up token for transfers.create (POST /v1/auth/step-up). Such a key moves money without step-up, so making one needs the step-up a transfer would")),
    responses((status = 201, body = Created)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    context: AuditContext,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let name = check_name(&body.name)?;
    let scopes = parse_scopes(&body.scopes)?;
    // A key never steps up (API.md), so a key that may move money would let anyone holding
    // the caller's bearer token move it without the second factor, for as long as the key
    // lives: making one takes the step-up a transfer takes (docs/identity.md).
    if scopes.contains(&Scope::TransfersWrite) {
        super::stepup::require::<super::stepup::TransfersCreate>(&state, &headers, caller).await?;
    }
    let identity = state.identity();
    let store = identity.protection.second_factor.store();
    // The count and the insert as one step: keys made at once all passed the count, and a
    // user ended with more than the bound, the ones past it working but never listed (the
    // list shows the bound), so never found to revoke.
    let _creating = CREATIONS.lock().await;
    // A reset by emailed code revokes the user's keys and ends their sessions under this
    // lock: a key made by a session it ended, once it let go, would outlive the reset.
    if let Some(session) = caller.session_id
        && identity.sessions.authorize(session).await? != Some(caller.user_id)
    {
        return Err(ApiError::new(ErrorCode::Unauthenticated, "this session has ended; log in again"));
    }
    if store.count_api_keys(caller.user_id).await? >= API_KEYS_PER_USER_MAX {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("a user may hold at most {API_KEYS_PER_USER_MAX} API keys"),
        ));
    }
    let mut bytes = [0_u8; KEY_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("the system random generator failed"))?;
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let record = ApiKeyRecord {
        id: identity.ids.next_uuid(),
        user_id: caller.user_id,
        name,
        key_hash: sha256_hex(key.as_bytes()),
        scopes: scopes.iter().map(|scope| scope.as_str().to_owned()).collect(),
        created_at: identity.now(),
    };
    let entry = crate::audit::record(
        identity,
        &context,
        &Actor::of(&caller),
        Event::new("auth.api_key_created")
            .target("api_key", record.id)
            .subject(caller.user_id)
            .details(serde_json::json!({"name": record.name, "scopes": record.scopes})),
    );
    store.insert_api_key(&record, &entry).await?;
    let body = Created { view: KeyView::of(&record)?, key };
    let mut response = created(format!("/v1/api-keys/{}", record.id), body);
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(audited(response))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ApiKeyList)]
pub struct KeyList {
    items: Vec<KeyView>,
}

/// `GET /v1/api-keys` → `{items:[{id, name, scopes, created_at}]}`, oldest first; never the key.
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "identity",
    responses((status = 200, body = KeyList)),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<KeyList>, ApiError> {
    let store = state.identity().protection.second_factor.store();
    let limit = u32::try_from(API_KEYS_PER_USER_MAX).unwrap_or(u32::MAX);
    let records = store.api_keys_of(caller.user_id, limit).await?;
    let items = records.iter().map(KeyView::of).collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(KeyList { items }))
}

/// `DELETE /v1/api-keys/{id}` → `204`; the key stops working at once. Another user's key, or
/// none, is `404` (key ids do not leak across users).
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "identity",
    params(("id" = uuid::Uuid, Path, description = "The API key id")),
    responses((status = 204, description = "Deleted; the key stops working at once")),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    context: AuditContext,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let identity = state.identity();
    let protection = &identity.protection;
    let entry = crate::audit::record(
        identity,
        &context,
        &Actor::of(&caller),
        Event::new("auth.api_key_deleted").target("api_key", id).subject(caller.user_id),
    );
    let hash = protection.second_factor.store().delete_api_key(caller.user_id, id, &entry).await?;
    let hash = hash.ok_or_else(|| ApiError::not_found("API key"))?;
    protection.api_keys.forget_hash(&hash);
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn scopes_parse_strictly() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        let scopes = |list: &[&str]| parse_scopes(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(
            scopes(&["transfers:write", "accounts:read"]).unwrap(),
            vec![Scope::AccountsRead, Scope::TransfersWrite]
        );
        assert!(scopes(&[]).is_err());
        assert!(scopes(&["admin"]).is_err());
        assert!(scopes(&["accounts:read", "accounts:read"]).is_err());
    }

    #[test]
    fn a_verified_key_holds_exactly_its_scopes() {
        let user = UserId::from_uuid(uuid::Uuid::nil());
        for held in 0..1_u8 << Scope::ALL.len() {
            let key = VerifiedKey { user, scopes: held };
            for (index, scope) in Scope::ALL.into_iter().enumerate() {
                assert_eq!(key.holds(scope), held & (1 << index) != 0, "{scope:?} in {held:03b}");
            }
        }
    }
}
