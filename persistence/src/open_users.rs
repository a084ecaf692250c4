//! Opening the identity store from a `TALLY_DATABASE_URL`, next to `open::open_store`.
//!
//! The identity store lives in the ledger's database (same URL) on a pool of its own; see
//! `users` for why. One store object serves `UserStore`, `AccountReads`, `SessionStore`,
//! `AdminUserStore`, `MfaStore`, `SelfServiceStore`, `RoleStore`, `AuditStore`,
//! `BeneficiaryStore` and `LimitsStore`, so they share its pool (and the audit log's entries
//! commit in the identity changes' transactions).

use std::sync::Arc;

use crate::audit::AuditStore;
use crate::events::EventStore;
use crate::reads::AccountReads;
use crate::sessions::SessionStore;
use crate::store::StoreError;
use crate::users::UserStore;
use crate::users::admin::AdminUserStore;
use crate::users::beneficiaries::BeneficiaryStore;
use crate::users::limits::LimitsStore;
use crate::users::mfa::MfaStore;
use crate::users::postgres::PgUserStore;
use crate::users::roles::RoleStore;
use crate::users::self_service::SelfServiceStore;
use crate::users::sqlite::SqliteUserStore;

/// The faces of one opened identity store.
#[derive(Clone)]
pub struct UserStores {
    pub users: Arc<dyn UserStore>,
    pub reads: Arc<dyn AccountReads>,
    /// TOTP, backup codes and API keys (`users::mfa`), on the same pool.
    pub mfa: Arc<dyn MfaStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub admin: Arc<dyn AdminUserStore>,
    /// Profile, password, emailed codes and verification level (`users::self_service`).
    pub self_service: Arc<dyn SelfServiceStore>,
    pub roles: Arc<dyn RoleStore>,
    /// The hash-chained audit log (`audit`).
    pub audit: Arc<dyn AuditStore>,
    /// Customers' saved payees (`users::beneficiaries`).
    pub beneficiaries: Arc<dyn BeneficiaryStore>,
    /// The limits of each verification level (`users::limits`).
    pub limits: Arc<dyn LimitsStore>,
    /// The event feed, webhooks and the journal's hash chain (`events`).
    pub events: Arc<dyn EventStore>,
}

impl std::fmt::Debug for UserStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStores").finish_non_exhaustive()
    }
}

/// Opens the identity store the URL names (`postgres://…` or `sqlite://path`) and applies the
/// migrations not yet applied (the ledger's and the identity tables: one migration set).
pub async fn open_user_store(url: &str) -> Result<UserStores, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = Arc::new(PgUserStore::connect(url).await?);
        store.migrate().await?;
        Ok(UserStores {
            users: store.clone(),
            reads: store.clone(),
            sessions: store.clone(),
            admin: store.clone(),
            self_service: store.clone(),
            roles: store.clone(),
            audit: store.clone(),
            beneficiaries: store.clone(),
            limits: store.clone(),
            events: store.clone(),
            mfa: store,
        })
    } else if url.starts_with("sqlite:") {
        let store = Arc::new(SqliteUserStore::open(url).await?);
        store.migrate().await?;
        Ok(UserStores {
            users: store.clone(),
            reads: store.clone(),
            sessions: store.clone(),
            admin: store.clone(),
            self_service: store.clone(),
            roles: store.clone(),
            audit: store.clone(),
            beneficiaries: store.clone(),
            limits: store.clone(),
            events: store.clone(),
            mfa: store,
        })
    } else {
        Err(StoreError::Corrupt(format!("unsupported database url (want postgres:// or sqlite://): {url}")))
    }
}
