//! Login sessions as stored (migration `0003_sessions.sql`): who, from where, since when, last
//! seen when, and, once terminated, when and why. The `SessionActor` (actors crate) owns a
//! live session in memory; this store is what lets a restart neither log everyone out nor
//! revive a terminated session.
//!
//! A session's id is also the family id of its refresh tokens, so revoking a session revokes
//! its refresh tokens in the same transaction.
//!
//! Both identity stores (`PgUserStore`, `SqliteUserStore`) implement `SessionStore` with the
//! same code (`sql.rs`), each on its own pool.

mod sql;

use async_trait::async_trait;
use tally_engine::{Timestamp, UserId};
use uuid::Uuid;

use crate::store::StoreError;

/// Longest user agent kept. Browsers send 100–300 characters; anything longer is truncated
/// before it is stored, so a hostile header cannot bloat the table.
pub const USER_AGENT_LENGTH_MAX: usize = 512;

/// One login session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Also the family id of the session's refresh tokens.
    pub id: Uuid,
    pub user_id: UserId,
    /// The peer address of the login's connection, if known.
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Timestamp,
    pub last_activity_at: Timestamp,
    /// Set once, when the session is terminated, with `revoked_reason`.
    pub revoked_at: Option<Timestamp>,
    pub revoked_reason: Option<String>,
}

impl SessionRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    async fn session(&self, id: Uuid) -> Result<Option<SessionRecord>, StoreError>;

    /// The user's sessions not yet revoked, oldest first (some may be idle past their expiry:
    /// the caller decides).
    async fn live_sessions_of(&self, user: UserId) -> Result<Vec<SessionRecord>, StoreError>;

    /// Revokes the session and every refresh token of its family, in one transaction. Returns
    /// false if it was already revoked (the first reason is kept) or does not exist.
    async fn revoke_session(&self, id: Uuid, at: Timestamp, reason: &str) -> Result<bool, StoreError>;

    /// Writes behind the session's last activity (never moving it backwards).
    async fn record_activity(&self, id: Uuid, at: Timestamp) -> Result<(), StoreError>;
}

/// Cuts a user agent to `USER_AGENT_LENGTH_MAX` characters.
pub fn bounded_user_agent(user_agent: &str) -> String {
    user_agent.chars().take(USER_AGENT_LENGTH_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_user_agents_are_cut_to_the_bound_on_a_character_boundary() {
        assert_eq!(bounded_user_agent("curl/8"), "curl/8");
        let long = "é".repeat(USER_AGENT_LENGTH_MAX + 10);
        assert_eq!(bounded_user_agent(&long).chars().count(), USER_AGENT_LENGTH_MAX);
    }
}
