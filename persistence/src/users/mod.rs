//! Identity storage: users, their permission actions, the JWT signing keys, and refresh tokens.
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

pub mod admin;
mod admin_postgres;
mod admin_sqlite;
pub mod mfa;
mod mfa_postgres;
mod mfa_sqlite;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

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
    /// Admin permission actions (`transfers:execute`, ...); empty for a customer.
    pub permissions: BTreeSet<String>,
    pub created_at: Timestamp,
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
    /// Inserts the user and their permissions in one transaction.
    async fn create_user(&self, user: &User) -> Result<(), CreateUserError>;

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
    async fn create_user(&self, user: &User) -> Result<(), CreateUserError> {
        (**self).create_user(user).await
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
    fn status_names_round_trip() {
        for status in [UserStatus::Active, UserStatus::Blocked] {
            assert_eq!(UserStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(UserStatus::parse("deleted"), None);
    }
}
