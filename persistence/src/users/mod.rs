//! Identity storage: users, their permission actions and roles, the JWT signing keys, refresh
//! tokens, emailed codes and the audit log's identity entries.
//!
//! The `UserStore` trait has a Postgres and an SQLite implementation. Each opens its own
//! connection pool on the *same database* as the ledger store (the same `TALLY_DATABASE_URL`),
//! and runs it on its own small runtime, as the ledger stores do, so identity queries never
//! compete with the journal writer for a pooled connection and never depend on which runtime
//! the caller is on. The identity tables come from `migrations/*/0002_identity.sql`, which
//! both the ledger store's `migrate()` and `open_user_store` apply (migrations are recorded in
//! `_sqlx_migrations`, so whichever runs first applies them and the other skips them).
//!
//! Nothing here decides policy (password rules, token lifetimes, the permission catalog): the
//! HTTP layer does. The store keeps what it is given and enforces only what a database must:
//! one user per normalized email, one signing key per generation, single use of a refresh token.
//!
//! **Every change is audited in its own transaction.** Each method that changes identity data
//! takes the `AuditRecord` describing it and appends it to the audit log inside the same
//! transaction (`AppendAudit::append_audit`), so a change and its entry
//! commit together or not at all. SQLite transactions that change anything begin `IMMEDIATE`.

pub mod admin;
mod admin_sql;
pub mod beneficiaries;
mod beneficiaries_sql;
pub mod limits;
mod limits_sql;
pub mod mfa;
mod mfa_sql;
pub mod postgres;
pub mod roles;
mod roles_sql;
pub mod self_service;
mod self_service_sql;
mod sql;
pub mod sqlite;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use crate::audit::AuditRecord;
use crate::store::StoreError;

/// Longest email accepted anywhere (RFC 5321 limits a forward path to 256 octets including the
/// angle brackets, so 254 characters of address).
pub const EMAIL_LENGTH_MAX: usize = 254;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum UserStatus {
    Active,
    /// Refused at login; an admin can unblock.
    Blocked,
}

impl UserStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Blocked => "blocked",
        }
    }

    pub fn parse(text: &str) -> Option<UserStatus> {
        match text {
            "active" => Some(UserStatus::Active),
            "blocked" => Some(UserStatus::Blocked),
            _ => None,
        }
    }
}

/// What an admin verified of a person (API.md "Verification levels and limits"), lowest
/// first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub enum VerificationLevel {
    #[default]
    None,
    Basic,
    Verified,
    Enhanced,
}

impl VerificationLevel {
    pub const ALL: [VerificationLevel; 4] =
        [VerificationLevel::None, VerificationLevel::Basic, VerificationLevel::Verified, VerificationLevel::Enhanced];

    pub const fn as_str(self) -> &'static str {
        match self {
            VerificationLevel::None => "none",
            VerificationLevel::Basic => "basic",
            VerificationLevel::Verified => "verified",
            VerificationLevel::Enhanced => "enhanced",
        }
    }

    pub fn parse(text: &str) -> Option<VerificationLevel> {
        VerificationLevel::ALL.into_iter().find(|level| level.as_str() == text)
    }
}

/// A role a user holds, with the actions it grants as they stand now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleGrant {
    pub id: Uuid,
    pub name: String,
    pub actions: BTreeSet<String>,
}

/// A person who signs in with an email and a password.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    /// As the user wrote it; uniqueness is on `normalize_email(email)`.
    pub email: String,
    /// An argon2id PHC string (`$argon2id$v=19$m=...`), never the password.
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub status: UserStatus,
    /// Admin permission actions granted directly (`transfers:execute`, ...); empty for a
    /// customer. What the user may do is `effective_permissions`: these and their roles'.
    pub permissions: BTreeSet<String>,
    pub created_at: Timestamp,
    pub phone: Option<String>,
    /// When the user proved their address with an emailed code.
    pub email_verified_at: Option<Timestamp>,
    pub verification_level: VerificationLevel,
    /// The roles the user holds, by name.
    pub roles: Vec<RoleGrant>,
}

impl User {
    /// A new active user with no phone, unverified, holding `permissions` directly and no role.
    pub fn new(
        id: UserId,
        email: String,
        password_hash: String,
        first_name: String,
        last_name: String,
        permissions: BTreeSet<String>,
        created_at: Timestamp,
    ) -> User {
        User {
            id,
            email,
            password_hash,
            first_name,
            last_name,
            status: UserStatus::Active,
            permissions,
            created_at,
            phone: None,
            email_verified_at: None,
            verification_level: VerificationLevel::None,
            roles: Vec::new(),
        }
    }

    /// Every action the user holds: granted directly or through a role.
    pub fn effective_permissions(&self) -> BTreeSet<String> {
        let mut all = self.permissions.clone();
        for role in &self.roles {
            all.extend(role.actions.iter().cloned());
        }
        all
    }

    /// Whether the user holds `action`, directly or through a role.
    pub fn holds(&self, action: &str) -> bool {
        self.permissions.contains(action) || self.roles.iter().any(|role| role.actions.contains(action))
    }
}

impl std::fmt::Debug for User {
    // The hash stays out of logs: it is not the password, but it is what an attacker would
    // brute-force offline.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("status", &self.status)
            .field("permissions", &self.permissions)
            .field("roles", &self.roles)
            .field("verification_level", &self.verification_level)
            .finish_non_exhaustive()
    }
}

/// The form of an email that uniqueness and look-up use: trimmed and lowercased, so
/// `Alice@Example.com` and `alice@example.com` are one user.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A JWT signing key as stored. Generation 1 is made on first start; a rotation inserts the
/// next generation. The newest generation signs; every stored generation verifies and is
/// published in the JWKS, so tokens signed before a rotation stay valid until they expire.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub generation: u32,
    /// The JWT `kid` header value.
    pub kid: String,
    /// Always `RS256` today; stored so a later algorithm change is a data change.
    pub algorithm: String,
    /// The private key, PKCS#8 DER. Stored in the database in the clear: whoever can read the
    /// database can read the ledger too. Encryption at rest under a KMS key is future work.
    pub private_key_pkcs8: Vec<u8>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("generation", &self.generation)
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A refresh token as stored: only its hash, so a database leak yields no usable token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    /// Hex SHA-256 of the opaque token.
    pub token_hash: String,
    pub user_id: UserId,
    /// Every token rotated from one login shares its family; reuse of a spent token revokes
    /// the whole family.
    pub family_id: Uuid,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What spending a refresh token found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshUse {
    /// The token was live and is now spent; issue the next one in `family_id`.
    Spent { user_id: UserId, family_id: Uuid },
    /// The token was spent before: someone replayed it. Its whole family is now revoked.
    Reused { family_id: Uuid },
    /// Unknown, expired, or revoked.
    Invalid,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CreateUserError {
    /// Another user has the same normalized email.
    #[error("email already registered")]
    EmailTaken,
    /// A user with this id exists (ids are random, so this is a caller bug).
    #[error("user id already exists")]
    IdTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Inserts the user and their direct permissions, and appends `audit`, in one
    /// transaction. The user's roles are not written (a new user holds none).
    async fn create_user(&self, user: &User, audit: &AuditRecord) -> Result<(), CreateUserError>;

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// Looks the user up by `normalize_email(email)`.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;

    /// Every signing key, oldest generation first.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;

    /// Inserts the key unless its generation exists. Returns false if another process got
    /// there first (two servers starting at once): the caller then reads the keys again and
    /// uses the winner's, so every node signs with the same key.
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError>;

    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError>;

    /// Spends the refresh token with this hash at `now`, atomically: of two concurrent uses of
    /// one token, exactly one sees `Spent`.
    async fn spend_refresh_token(&self, token_hash: &str, now: Timestamp) -> Result<RefreshUse, StoreError>;
}

#[async_trait]
impl<S: UserStore + ?Sized> UserStore for Arc<S> {
    async fn create_user(&self, user: &User, audit: &AuditRecord) -> Result<(), CreateUserError> {
        (**self).create_user(user, audit).await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        (**self).user_by_id(id).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        (**self).user_by_email(email).await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        (**self).signing_keys().await
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError> {
        (**self).insert_signing_key(key).await
    }

    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError> {
        (**self).insert_refresh_token(token).await
    }

    async fn spend_refresh_token(&self, token_hash: &str, now: Timestamp) -> Result<RefreshUse, StoreError> {
        (**self).spend_refresh_token(token_hash, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_differing_in_case_and_surrounding_space_normalize_alike() {
        assert_eq!(normalize_email(" Alice@Example.COM "), "alice@example.com");
        assert_eq!(normalize_email("ÉLODIE@exemple.fr"), "élodie@exemple.fr");
    }

    #[test]
    fn verification_levels_round_trip_and_order_lowest_first() {
        for level in VerificationLevel::ALL {
            assert_eq!(VerificationLevel::parse(level.as_str()), Some(level));
        }
        assert_eq!(VerificationLevel::default(), VerificationLevel::None);
        assert!(VerificationLevel::Basic < VerificationLevel::Enhanced);
        assert_eq!(VerificationLevel::parse("gold"), None);
    }

    #[test]
    fn effective_permissions_are_direct_ones_and_every_role_s() {
        let mut user = User::new(
            UserId::from_u128(1),
            "a@b.co".to_owned(),
            String::new(),
            "A".to_owned(),
            "B".to_owned(),
            ["users:read".to_owned()].into_iter().collect(),
            Timestamp::default(),
        );
        user.roles.push(RoleGrant {
            id: Uuid::from_u128(2),
            name: "support".to_owned(),
            actions: ["users:read".to_owned(), "audit:read".to_owned()].into_iter().collect(),
        });
        assert!(user.holds("audit:read") && user.holds("users:read") && !user.holds("ops:read"));
        assert_eq!(user.effective_permissions().len(), 2);
    }

    #[test]
    fn status_names_round_trip() {
        for status in [UserStatus::Active, UserStatus::Blocked] {
            assert_eq!(UserStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(UserStatus::parse("deleted"), None);
    }
}
