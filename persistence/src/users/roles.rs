//! Roles: named sets of admin permission actions, and who holds them (migration 0020). A
//! user's effective permissions are their direct actions and every held role's (`User::roles`
//! is read with the user, so a change is effective on the user's next request).
//!
//! Implemented by both identity stores with one text (`roles_sql.rs`). Policy (which
//! actions exist, who may change what) is the HTTP layer's; the store enforces what must be
//! atomic: unique names, at most `roles_max` roles, and no deletion of a role in use.

use std::collections::BTreeSet;

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use crate::audit::AuditRecord;
use crate::store::StoreError;

/// A role as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub id: Uuid,
    /// As the admin wrote it; uniqueness is on `normalize_role_name(name)`.
    pub name: String,
    pub description: Option<String>,
    pub actions: BTreeSet<String>,
    /// Users holding it (read-only: ignored on writes).
    pub holders: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The form of a role name uniqueness uses: trimmed and lowercased.
pub fn normalize_role_name(name: &str) -> String {
    name.trim().to_lowercase()
}

/// What creating or replacing a role did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleWrite {
    Written,
    /// Another role has the same normalized name.
    NameTaken,
    /// Creating it would exceed `roles_max`.
    TooMany,
    /// No role with that id (a replace).
    NotFound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleDelete {
    Deleted,
    NotFound,
    /// Held by this many users; nothing was deleted.
    InUse(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleAssign {
    Assigned,
    /// The user held it already; nothing changed (and nothing was audited).
    AlreadyHeld,
    NoSuchUser,
    NoSuchRole,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleUnassign {
    Removed,
    /// The user did not hold it; nothing changed (and nothing was audited).
    NotHeld,
    NoSuchUser,
}

#[async_trait]
pub trait RoleStore: Send + Sync + 'static {
    /// Every role, by normalized name (at most the bound the HTTP layer enforces on create).
    async fn roles(&self) -> Result<Vec<Role>, StoreError>;

    async fn role(&self, id: Uuid) -> Result<Option<Role>, StoreError>;

    /// Inserts `role` (its `holders` is ignored) unless its name is taken or `roles_max`
    /// roles exist, appending `audit` in the same transaction.
    async fn create_role(&self, role: &Role, roles_max: u32, audit: &AuditRecord) -> Result<RoleWrite, StoreError>;

    /// Replaces role `role.id`'s name, description and actions (keeping `created_at`).
    async fn update_role(&self, role: &Role, audit: &AuditRecord) -> Result<RoleWrite, StoreError>;

    /// Deletes a role nobody holds.
    async fn delete_role(&self, id: Uuid, audit: &AuditRecord) -> Result<RoleDelete, StoreError>;

    async fn assign_role(
        &self,
        user: UserId,
        role: Uuid,
        at: Timestamp,
        audit: &AuditRecord,
    ) -> Result<RoleAssign, StoreError>;

    async fn unassign_role(&self, user: UserId, role: Uuid, audit: &AuditRecord) -> Result<RoleUnassign, StoreError>;
}

/// Groups `(role id, name, action)` rows (actions may be absent for a role with none) into
/// role grants, keeping the rows' order of roles.
pub(crate) fn group_grants(rows: Vec<(Uuid, String, Option<String>)>) -> Vec<super::RoleGrant> {
    let mut grants: Vec<super::RoleGrant> = Vec::new();
    for (id, name, action) in rows {
        if grants.last().is_none_or(|last| last.id != id) {
            grants.push(super::RoleGrant { id, name, actions: BTreeSet::new() });
        }
        if let (Some(action), Some(last)) = (action, grants.last_mut()) {
            last.actions.insert(action);
        }
    }
    grants
}
