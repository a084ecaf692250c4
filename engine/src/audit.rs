//! What an audit entry records before the audit chain places it (`tally_persistence::audit`
//! chains, stores and verifies it; docs/audit.md). It lives here, in the pure domain, because
//! a journal record carries it (`Record::Audit`): an admin change made through the engine is
//! audited in the very batch transaction that makes it durable.
//!
//! Nothing here knows JSON: `details` is text the HTTP layer wrote, kept and hashed byte for
//! byte.

use uuid::Uuid;

use crate::ids::{Timestamp, UserId};

/// Who did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActorKind {
    /// A person with a bearer token (admin or customer).
    User,
    /// A machine client with an API key.
    ApiKey,
    /// Tally itself (start-up bootstrap, a command-line tool).
    System,
    /// Nobody authenticated: a failed login, a password-reset request.
    Anonymous,
}

impl ActorKind {
    pub const ALL: [ActorKind; 4] = [ActorKind::User, ActorKind::ApiKey, ActorKind::System, ActorKind::Anonymous];

    pub const fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::System => "system",
            ActorKind::Anonymous => "anonymous",
        }
    }

    pub fn parse(text: &str) -> Option<ActorKind> {
        ActorKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// What an entry records, before the chain places it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: Uuid,
    /// When the change was made (the request's clock); `seq`, not `at`, orders the log.
    pub at: Timestamp,
    pub actor_kind: ActorKind,
    pub actor_id: Option<String>,
    /// `transfer.execute`, `user.block`, `auth.login_failed`, …
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// The user whose security activity this is (`GET /v1/users/me/activity`), if any.
    pub subject_user: Option<UserId>,
    pub request_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// JSON text, without secrets (the HTTP layer's job).
    pub details: String,
}
