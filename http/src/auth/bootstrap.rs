//! The first admin: created at `tally serve` start-up from `TALLY_ADMIN_EMAIL` and
//! `TALLY_ADMIN_PASSWORD`, or by `tally admin create`, with every permission action. An
//! existing user with that email is left exactly as it is (its password is not reset and no
//! permission is granted), so restarting with the variables still set changes nothing. The
//! creation is audited (`user.create` by the `system` actor) in the same transaction.

use std::collections::BTreeSet;

use tally_actors::{Clock, IdSource};
use tally_engine::UserId;
use tally_persistence::audit::{ActorKind, AuditRecord};
use tally_persistence::users::{CreateUserError, User, UserStore};

use super::password::{Passwords, check_policy};
use super::permissions::Action;
use super::validate::check_email;

/// The names a bootstrapped admin gets; an admin can change them later.
const ADMIN_FIRST_NAME: &str = "Tally";
const ADMIN_LAST_NAME: &str = "Admin";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminOutcome {
    Created(UserId),
    /// A user with that email exists; nothing was changed.
    Exists(UserId),
}

/// Creates the admin `email` with every permission unless a user with that email exists.
pub async fn ensure_admin(
    users: &dyn UserStore,
    passwords: &Passwords,
    clock: &dyn Clock,
    ids: &dyn IdSource,
    email: &str,
    password: &str,
) -> Result<AdminOutcome, String> {
    check_email(email).map_err(|message| format!("admin email {message}"))?;
    check_policy(password).map_err(|message| format!("admin password {message}"))?;
    if let Some(existing) = users.user_by_email(email).await.map_err(|error| error.to_string())? {
        return Ok(AdminOutcome::Exists(existing.id));
    }
    let password_hash = passwords.hash(password.to_owned()).await.map_err(|error| error.detail)?;
    let user = User::new(
        UserId::from_uuid(ids.next_uuid()),
        email.trim().to_owned(),
        password_hash,
        ADMIN_FIRST_NAME.to_owned(),
        ADMIN_LAST_NAME.to_owned(),
        Action::ALL.iter().map(|action| action.as_str().to_owned()).collect::<BTreeSet<_>>(),
        clock.now(),
    );
    let audit = AuditRecord {
        id: ids.next_uuid(),
        at: clock.now(),
        actor_kind: ActorKind::System,
        actor_id: None,
        action: "user.create".to_owned(),
        target_type: Some("user".to_owned()),
        target_id: Some(user.id.to_string()),
        subject_user: Some(user.id),
        request_id: "bootstrap".to_owned(),
        ip: None,
        user_agent: None,
        details: serde_json::json!({"bootstrap": true, "actions": user.permissions}).to_string(),
    };
    match users.create_user(&user, &audit).await {
        Ok(()) => Ok(AdminOutcome::Created(user.id)),
        // Another process bootstrapped the same admin a moment ago.
        Err(CreateUserError::EmailTaken) => match users.user_by_email(email).await {
            Ok(Some(existing)) => Ok(AdminOutcome::Exists(existing.id)),
            Ok(None) => Err("the admin's email was taken and then vanished".to_owned()),
            Err(error) => Err(error.to_string()),
        },
        Err(error) => Err(error.to_string()),
    }
}
