//! What self-service and the admin user views change about a user (migration 0020): profile
//! fields, the password, emailed one-time codes, and the verification level. Implemented by
//! both identity stores with one text (`self_service_sql.rs`); every change
//! appends its audit entry in the same transaction.
//!
//! **Emailed codes.** One live code per user and purpose; issuing replaces it. The store keeps
//! only the hash the HTTP layer made (argon2id: see the migration for why not a fast hash), so
//! checking a code is two steps: `take_code_attempt` atomically counts one try against the
//! code and hands back its hash (none once it is used, expired or out of tries), the caller
//! verifies the code against the hash off the async threads, and `redeem_*` then spends the
//! code and makes the change in one transaction, provided it is still that same unspent code.
//! Counting the try before checking means concurrent guesses can never exceed the bound.

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use super::{User, VerificationLevel};
use crate::audit::AuditRecord;
use crate::store::StoreError;

/// What an emailed code is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodePurpose {
    PasswordReset,
    EmailVerification,
}

impl CodePurpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            CodePurpose::PasswordReset => "password_reset",
            CodePurpose::EmailVerification => "email_verification",
        }
    }
}

/// A code to store: only its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailCode {
    pub user: UserId,
    pub purpose: CodePurpose,
    pub code_hash: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for EmailCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailCode")
            .field("user", &self.user)
            .field("purpose", &self.purpose)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A profile change: `None` leaves a field as it is; `phone: Some(None)` clears the phone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileChange {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<Option<String>>,
}

#[async_trait]
pub trait SelfServiceStore: Send + Sync + 'static {
    /// Applies `change`; the user as it now stands, or `None` if there is no such user.
    async fn update_profile(
        &self,
        user: UserId,
        change: &ProfileChange,
        audit: &AuditRecord,
    ) -> Result<Option<User>, StoreError>;

    /// Replaces the password hash and, in the same transaction, marks the user's unspent
    /// password-reset code used (at `now`): a code mailed before the change must not undo it.
    /// False if there is no such user.
    async fn set_password(
        &self,
        user: UserId,
        password_hash: &str,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;

    /// Stores `code` as the user's live code for its purpose (replacing one, with a fresh
    /// count of tries). False if there is no such user.
    async fn issue_code(&self, code: &EmailCode, audit: &AuditRecord) -> Result<bool, StoreError>;

    /// Counts one try against the user's live code for `purpose` and returns its hash; `None`
    /// (counting nothing) if there is no code, or it is used, expired at `now`, or has had
    /// `attempts_max` tries.
    async fn take_code_attempt(
        &self,
        user: UserId,
        purpose: CodePurpose,
        now: Timestamp,
        attempts_max: u32,
    ) -> Result<Option<String>, StoreError>;

    /// Spends the user's password-reset code if it is still the unspent code with `code_hash`
    /// and unexpired at `now`, sets `password_hash` and revokes every API key of the user, in
    /// one transaction. `revoked_keys` are the keys the caller found, each with the entry its
    /// revocation appends (only if the key is still there); a key not among them is deleted
    /// too, without an entry of its own. False otherwise (nothing changes).
    async fn redeem_password_reset(
        &self,
        user: UserId,
        code_hash: &str,
        password_hash: &str,
        now: Timestamp,
        audit: &AuditRecord,
        revoked_keys: &[(Uuid, AuditRecord)],
    ) -> Result<bool, StoreError>;

    /// Spends the user's email-verification code as above and marks the email verified.
    async fn redeem_email_verification(
        &self,
        user: UserId,
        code_hash: &str,
        now: Timestamp,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;

    /// Sets the verification level. False if there is no such user.
    async fn set_verification_level(
        &self,
        user: UserId,
        level: VerificationLevel,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
}
