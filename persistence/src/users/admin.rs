//! What admin-user management needs from the identity store beyond `UserStore`: listing,
//! searching and counting users, blocking and unblocking, granting and revoking permission
//! actions. Implemented by both identity stores with one text (`admin_sql.rs`).
//! Policy (which actions exist, who may change whom) is the HTTP layer's. Every change
//! appends its audit entry in its own transaction, and only when it changed something.

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};

use super::{User, UserStatus, VerificationLevel};
use crate::audit::AuditRecord;
use crate::store::StoreError;

/// Which users a listing or count covers; `None` is "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// Matched (ASCII case-insensitively) as a substring of the email, a prefix of the first
    /// or last name, or a prefix of the id.
    pub search: Option<String>,
    pub status: Option<UserStatus>,
    pub verification_level: Option<VerificationLevel>,
}

/// A user as an admin listing shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSummary {
    pub user: User,
    pub totp_enabled: bool,
    /// Sessions not revoked and used since the `active_since` the listing was given.
    pub sessions_active: u64,
}

/// `search` as a LIKE pattern body: lowercased, with `\`, `%` and `_` escaped by `\` (both
/// databases' queries say `ESCAPE '\'`), so a search is always literal text.
pub(crate) fn like_text(search: &str) -> String {
    let mut out = String::with_capacity(search.len());
    for c in search.trim().to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
pub trait AdminUserStore: Send + Sync + 'static {
    /// Up to `limit` users matching `filter` with an id greater than `after`, in id order;
    /// each with their permissions, roles, TOTP state and sessions active since
    /// `active_since`.
    async fn list_users(
        &self,
        filter: &UserFilter,
        after: Option<UserId>,
        limit: u32,
        active_since: Timestamp,
    ) -> Result<Vec<UserSummary>, StoreError>;

    async fn count_users(&self, filter: &UserFilter) -> Result<u64, StoreError>;

    /// Sets the user's status. Returns false if there is no such user.
    async fn set_user_status(&self, id: UserId, status: UserStatus, audit: &AuditRecord) -> Result<bool, StoreError>;

    /// Grants every action (already-held ones are kept once). False if there is no such user.
    async fn grant_permissions(&self, id: UserId, actions: &[String], audit: &AuditRecord) -> Result<bool, StoreError>;

    /// Revokes every action (ones not held are ignored). False if there is no such user.
    async fn revoke_permissions(&self, id: UserId, actions: &[String], audit: &AuditRecord)
    -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_are_literal_lowercase_text() {
        assert_eq!(like_text("  Ada "), "ada");
        assert_eq!(like_text("100%_a\\b"), "100\\%\\_a\\\\b");
    }
}
