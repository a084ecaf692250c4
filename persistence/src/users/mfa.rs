//! Second-factor and machine-credential storage: TOTP secrets, backup codes and API keys
//! (`migrations/*/0004_mfa_api_keys.sql`), on the identity store's pool.
//!
//! A separate trait from `UserStore` so identity and MFA can change apart; both SQL identity
//! stores implement it with one text (`mfa_sql.rs`).
//!
//! The store enforces what must be atomic: a TOTP time step is accepted at most once per user
//! (`use_totp_step` only moves `last_used_step` forward), a backup code is spent once, and
//! TOTP is enabled only with the very secret the caller verified a code against.
//!
//! **The TOTP secret at rest** is stored as it is: a verifier must compute the same HMAC as the
//! authenticator app, so unlike a password it cannot be hashed. Whoever can read the database
//! can read the secrets, as they can read the JWT signing key (`SigningKeyRecord`) and the
//! ledger itself; encrypting them under a KMS key is future work, as it is for the signing key.

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use crate::audit::AuditRecord;
use crate::store::StoreError;

/// A user's TOTP secret as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpRecord {
    /// The raw shared secret (20 bytes for Tally's secrets).
    pub secret: Vec<u8>,
    /// False while the secret is pending confirmation.
    pub enabled: bool,
    /// The RFC 6238 time step of the last accepted code.
    pub last_used_step: Option<i64>,
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("enabled", &self.enabled)
            .field("last_used_step", &self.last_used_step)
            .finish_non_exhaustive()
    }
}

/// An API key as stored: only the hash of the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub user_id: UserId,
    pub name: String,
    /// Hex SHA-256 of the key.
    pub key_hash: String,
    /// Scope names (`transfers:write`, ...), as the HTTP layer validated them.
    pub scopes: Vec<String>,
    pub created_at: Timestamp,
}

#[async_trait]
pub trait MfaStore: Send + Sync + 'static {
    async fn totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError>;

    /// Stores `secret` as the user's pending TOTP secret, replacing a pending one and its
    /// backup codes with `backup_code_hashes`. Returns false, changing nothing, if the user's
    /// TOTP is already enabled.
    async fn begin_totp(
        &self,
        user: UserId,
        secret: &[u8],
        backup_code_hashes: &[String],
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Enables the pending TOTP secret if it is still exactly `secret`, recording `step` as
    /// used, and appends `audit`. False if there is no such pending secret (confirmed already,
    /// or replaced); nothing is audited then.
    async fn enable_totp(
        &self,
        user: UserId,
        secret: &[u8],
        step: i64,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;

    /// Turns TOTP off: deletes the secret (enabled or pending) and every backup code, and
    /// appends `audit`. False (nothing audited) if TOTP was not enabled.
    async fn disable_totp(&self, user: UserId, audit: &AuditRecord) -> Result<bool, StoreError>;

    /// Replaces every backup code of a user whose TOTP is enabled with `backup_code_hashes`,
    /// and appends `audit`. False (nothing changed) if TOTP is not enabled.
    async fn replace_backup_codes(
        &self,
        user: UserId,
        backup_code_hashes: &[String],
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;

    /// Unused backup codes of the user.
    async fn backup_codes_remaining(&self, user: UserId) -> Result<u64, StoreError>;

    /// Accepts time step `step` for the enabled secret if it is later than the last accepted
    /// one, atomically; false for a replayed or older step (or no enabled TOTP).
    async fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError>;

    /// Spends the unused backup code with this hash, atomically; false if it is unknown or
    /// spent, or the user's TOTP is not enabled.
    async fn use_backup_code(&self, user: UserId, code_hash: &str, now: Timestamp) -> Result<bool, StoreError>;

    /// Stores the key and appends `audit`, in one transaction.
    async fn insert_api_key(&self, key: &ApiKeyRecord, audit: &AuditRecord) -> Result<(), StoreError>;

    /// The user's keys, oldest first, at most `limit`.
    async fn api_keys_of(&self, user: UserId, limit: u32) -> Result<Vec<ApiKeyRecord>, StoreError>;

    async fn count_api_keys(&self, user: UserId) -> Result<u64, StoreError>;

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Deletes the user's key `id` and appends `audit`, returning its hash (to evict it from
    /// caches); `None` (nothing audited) if the user has no such key.
    async fn delete_api_key(&self, user: UserId, id: Uuid, audit: &AuditRecord) -> Result<Option<String>, StoreError>;
}

/// Scopes as stored: one space-separated column.
pub(crate) fn scopes_to_db(scopes: &[String]) -> String {
    scopes.join(" ")
}

pub(crate) fn scopes_from_db(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}
