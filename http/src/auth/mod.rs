//! Identity over HTTP: registration and login with argon2id passwords, RS256 access tokens
//! with a published JWKS, opaque single-use refresh tokens, and the permission checks of
//! admin routes.
//!
//! Following a request: `caller.rs` turns a bearer token into a `Caller` (`tokens.rs`
//! verifies it, from its cache when it can) or, for admin routes, into `Authorized<P>` after
//! checking the user store for permission `P`. `routes.rs` serves `/v1/auth/*`,
//! `/v1/users/me` and the JWKS; `bootstrap.rs` creates the first admin. `mfa.rs` (TOTP over
//! `totp.rs`, backup codes, the MFA step of login), `stepup.rs` (`StepUp<O>` on ★ routes),
//! `api_keys.rs` (`Scoped<S>`), `rate_limit.rs` and `challenges.rs` hold their state in
//! `protection.rs`. `sessions.rs` starts login sessions and serves logout and
//! `/v1/users/me/sessions`; `admin_users.rs` serves `/v1/admin/users*` and
//! `/v1/admin/permissions`.

pub mod admin_users;
pub mod api_keys;
pub mod bootstrap;
pub mod caller;
pub mod challenges;
pub mod keys;
pub mod mfa;
pub mod password;
pub mod permissions;
pub mod protection;
pub mod rate_limit;
pub mod refresh;
pub mod routes;
pub mod sessions;
pub mod stepup;
pub mod tokens;
pub mod totp;
pub mod validate;

use std::sync::Arc;

use tally_actors::{Clock, IdSource, RandomIds, SessionConfig, Sessions, SystemClock};
use tally_engine::Timestamp;
use tally_persistence::open_users::UserStores;
use tally_persistence::reads::AccountReads;
use tally_persistence::users::UserStore;
use tally_persistence::users::admin::AdminUserStore;

pub use caller::{Authorized, Caller};
pub use keys::KeyRing;
pub use password::Passwords;
pub use tokens::Tokens;

/// Everything identity needs, built once at start-up.
#[derive(Clone)]
pub struct Identity {
    pub users: Arc<dyn UserStore>,
    pub reads: Arc<dyn AccountReads>,
    pub tokens: Arc<Tokens>,
    pub passwords: Passwords,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    /// Second factor, step-up, API keys and rate limits (`protection.rs`).
    pub protection: Arc<protection::Protection>,
    /// Login sessions: the hot-path liveness check of every bearer token.
    pub sessions: Arc<Sessions>,
    /// Listing, blocking and granting for the admin-user routes.
    pub admin: Arc<dyn AdminUserStore>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("tokens", &self.tokens).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("signing keys: {0}")]
    Keys(#[from] keys::KeyError),
    #[error("password hasher: {0}")]
    Passwords(String),
    #[error("session registry: {0}")]
    Sessions(#[from] std::io::Error),
}

impl Identity {
    /// Loads (or, on first start, creates and stores) the signing keys and prepares the
    /// password hasher, with the production clock and ids.
    pub async fn open(stores: UserStores) -> Result<Identity, IdentityError> {
        Identity::open_with(stores, Arc::new(SystemClock), Arc::new(RandomIds)).await
    }

    pub async fn open_with(
        stores: UserStores,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
    ) -> Result<Identity, IdentityError> {
        Identity::open_with_sessions(stores, clock, ids, SessionConfig::default()).await
    }

    /// As `open_with`, with the session settings (`tally serve` reads them from the
    /// environment; tests shorten them).
    pub async fn open_with_sessions(
        stores: UserStores,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        sessions: SessionConfig,
    ) -> Result<Identity, IdentityError> {
        let sessions = Arc::new(Sessions::start(stores.sessions.clone(), Arc::clone(&clock), sessions)?);
        let keys = KeyRing::load_or_create(stores.users.as_ref(), clock.now()).await?;
        let passwords = Passwords::new().await.map_err(IdentityError::Passwords)?;
        Ok(Identity {
            users: stores.users,
            reads: stores.reads,
            tokens: Arc::new(Tokens::new(keys)),
            passwords,
            protection: Arc::new(protection::Protection::new(stores.mfa)),
            clock,
            ids,
            sessions,
            admin: stores.admin,
        })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
