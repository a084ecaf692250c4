//! What admin-user management needs from the identity store beyond `UserStore`: listing users
//! a page at a time, blocking and unblocking, granting and revoking permission actions.
//! Implemented by both identity stores (`admin_postgres.rs`, `admin_sqlite.rs`). Policy (which
//! actions exist, who may change whom) is the HTTP layer's.

use async_trait::async_trait;
use tally_engine::UserId;

use super::{User, UserStatus};
use crate::store::StoreError;

#[async_trait]
pub trait AdminUserStore: Send + Sync + 'static {
    /// Up to `limit` users with an id greater than `after`, in id order, optionally only those
    /// with `status`; each with their permissions.
    async fn list_users(
        &self,
        after: Option<UserId>,
        status: Option<UserStatus>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError>;

    /// Sets the user's status. Returns false if there is no such user.
    async fn set_user_status(&self, id: UserId, status: UserStatus) -> Result<bool, StoreError>;

    /// Grants every action (already-held ones are kept once). False if there is no such user.
    async fn grant_permissions(&self, id: UserId, actions: &[String]) -> Result<bool, StoreError>;

    /// Revokes every action (ones not held are ignored). False if there is no such user.
    async fn revoke_permissions(&self, id: UserId, actions: &[String]) -> Result<bool, StoreError>;
}
