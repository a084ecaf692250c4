//! Identity over HTTP: registration and login with argon2id passwords, RS256 access tokens
//! with a published JWKS, opaque single-use refresh tokens, and the permission checks of
//! admin routes.
//!
//! Following a request: `caller.rs` turns a bearer token into a `Caller` (`tokens.rs`
//! verifies it, from its cache when it can) or, for admin routes, into `Authorized<P>` after
//! checking the user store for permission `P`. `routes/customer.rs` serves `/v1/auth/*`,
//! `/v1/users/me` and the JWKS; `bootstrap.rs` creates the first admin. `mfa.rs` (TOTP over
//! `totp.rs`, backup codes, the MFA step of login), `stepup.rs` (`StepUp<O>` on ★ routes),
//! `api_keys.rs` (`Scoped<S>`), `rate_limit.rs` and `challenges.rs` hold their state in
//! `protection.rs`. `sessions.rs` starts login sessions and serves logout and
//! `/v1/users/me/sessions`; `admin_users.rs` serves `/v1/admin/users*` and
//! `/v1/admin/permissions`; `roles.rs` serves `/v1/admin/roles*` and role assignment.
//! `self_service.rs` serves the self-service routes (profile, password change and reset,
//! email verification, activity) with `codes.rs` (emailed one-time codes);
//! `verified_email.rs` is the `TALLY_REQUIRE_VERIFIED_EMAIL` gate on money-moving routes.

pub mod admin_users;
pub mod api_keys;
pub mod bootstrap;
pub mod caller;
pub mod challenges;
pub mod codes;
pub mod keys;
pub mod mfa;
pub mod password;
pub mod permissions;
pub mod protection;
pub mod rate_limit;
pub mod refresh;
pub mod roles;
pub mod routes;
pub mod self_service;
pub mod sessions;
pub mod stepup;
pub mod tokens;
pub mod totp;
pub mod validate;
pub mod verified_email;

use std::sync::Arc;

use tally_actors::{Clock, IdSource, RandomIds, SessionConfig, Sessions, SystemClock};
use tally_engine::Timestamp;
use tally_persistence::audit::AuditStore;
use tally_persistence::open_users::UserStores;
use tally_persistence::reads::AccountReads;
use tally_persistence::users::UserStore;
use tally_persistence::users::admin::AdminUserStore;
use tally_persistence::users::beneficiaries::BeneficiaryStore;
use tally_persistence::users::limits::{LevelLimits, LimitsStore};
use tally_persistence::users::roles::RoleStore;
use tally_persistence::users::self_service::SelfServiceStore;

use crate::mail::{MailConfig, MailError, Mailer};

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
    /// Profile, password, emailed codes, verification level.
    pub self_service: Arc<dyn SelfServiceStore>,
    pub roles: Arc<dyn RoleStore>,
    /// The hash-chained audit log.
    pub audit: Arc<dyn AuditStore>,
    /// The event feed, webhooks and the journal's hash chain (`events.rs`, `webhooks.rs`).
    pub events: Arc<dyn tally_persistence::events::EventStore>,
    /// Outgoing mail (reset and verification codes).
    pub mail: Arc<Mailer>,
    /// `TALLY_REQUIRE_VERIFIED_EMAIL`, and the verified users it has seen.
    pub email_gate: Arc<verified_email::EmailGate>,
    /// Customers' saved payees (`beneficiaries.rs`).
    pub beneficiaries: Arc<dyn BeneficiaryStore>,
    /// Where the verification limits are stored (`limits.rs`); the engine holds them in memory.
    pub limits: Arc<dyn LimitsStore>,
    /// The limits as stored when identity opened: `AppState::set_engine` gives them to the
    /// engine before it serves (the engine starts after identity and has no identity store).
    pub limits_at_start: Arc<Vec<LevelLimits>>,
    /// The users above level `none` when identity opened, given to the engine with the limits.
    pub levels_at_start: Arc<Vec<(tally_engine::UserId, tally_persistence::users::VerificationLevel)>>,
    /// `IdentityOptions::webhooks`, read by the webhook routes and the delivery worker.
    pub webhooks: crate::webhooks::WebhookOptions,
}

/// What `tally serve` configures from the environment beyond the stores; tests set it directly.
#[derive(Clone, Debug, Default)]
pub struct IdentityOptions {
    pub sessions: SessionConfig,
    pub mail: MailConfig,
    /// Money-moving routes answer `403 EMAIL_NOT_VERIFIED` until the caller's email is verified.
    pub require_verified_email: bool,
    /// Private receivers and extra CA certificates for webhook deliveries (`webhooks.rs`).
    pub webhooks: crate::webhooks::WebhookOptions,
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
    #[error("{0}")]
    Mail(#[from] MailError),
    #[error("verification limits: {0}")]
    Limits(tally_persistence::StoreError),
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
        Identity::open_configured(stores, clock, ids, IdentityOptions { sessions, ..IdentityOptions::default() }).await
    }

    /// As `open_with`, with every option. Starts the mail worker on the current runtime.
    pub async fn open_configured(
        stores: UserStores,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        options: IdentityOptions,
    ) -> Result<Identity, IdentityError> {
        let mail = Arc::new(Mailer::start(&options.mail)?);
        let sessions = Arc::new(Sessions::start(stores.sessions.clone(), Arc::clone(&clock), options.sessions)?);
        let keys = KeyRing::load_or_create(stores.users.as_ref(), clock.now()).await?;
        let passwords = Passwords::new().await.map_err(IdentityError::Passwords)?;
        let limits_at_start = stores.limits.load_limits().await.map_err(IdentityError::Limits)?;
        let levels_at_start = stores.limits.load_user_levels().await.map_err(IdentityError::Limits)?;
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
            self_service: stores.self_service,
            roles: stores.roles,
            audit: stores.audit,
            events: stores.events,
            mail,
            email_gate: Arc::new(verified_email::EmailGate::new(options.require_verified_email)),
            beneficiaries: stores.beneficiaries,
            limits: stores.limits,
            limits_at_start: Arc::new(limits_at_start),
            levels_at_start: Arc::new(levels_at_start),
            webhooks: options.webhooks,
        })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
