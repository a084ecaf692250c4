//! The catalog of admin permission actions (API.md, "Admin"), and one marker type per action
//! so that a route states the permission it needs in its signature:
//! `Authorized<TransfersExecute>` (see `caller.rs`).

/// An admin permission action.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Action {
    TransfersRead,
    TransfersExecute,
    TransfersReject,
    TransfersCancel,
    TransfersAdjust,
    AccountsRead,
    AccountsWrite,
    AccountsClose,
    FeesRead,
    FeesWrite,
    FxRead,
    FxWrite,
    TransferTypesWrite,
    AmlRead,
    AmlWrite,
    UsersRead,
    UsersBlock,
    UsersWrite,
    UsersVerify,
    AdminUsersRead,
    AdminUsersManage,
    OpsRead,
    OpsWrite,
    LimitsRead,
    LimitsWrite,
    AuditRead,
    EventsRead,
    WebhooksManage,
}

impl Action {
    pub const ALL: [Action; 28] = [
        Action::TransfersRead,
        Action::TransfersExecute,
        Action::TransfersReject,
        Action::TransfersCancel,
        Action::TransfersAdjust,
        Action::AccountsRead,
        Action::AccountsWrite,
        Action::AccountsClose,
        Action::FeesRead,
        Action::FeesWrite,
        Action::FxRead,
        Action::FxWrite,
        Action::TransferTypesWrite,
        Action::AmlRead,
        Action::AmlWrite,
        Action::UsersRead,
        Action::UsersBlock,
        Action::UsersWrite,
        Action::UsersVerify,
        Action::AdminUsersRead,
        Action::AdminUsersManage,
        Action::OpsRead,
        Action::OpsWrite,
        Action::LimitsRead,
        Action::LimitsWrite,
        Action::AuditRead,
        Action::EventsRead,
        Action::WebhooksManage,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Action::TransfersRead => "transfers:read",
            Action::TransfersExecute => "transfers:execute",
            Action::TransfersReject => "transfers:reject",
            Action::TransfersCancel => "transfers:cancel",
            Action::TransfersAdjust => "transfers:adjust",
            Action::AccountsRead => "accounts:read",
            Action::AccountsWrite => "accounts:write",
            Action::AccountsClose => "accounts:close",
            Action::FeesRead => "fees:read",
            Action::FeesWrite => "fees:write",
            Action::FxRead => "fx:read",
            Action::FxWrite => "fx:write",
            Action::TransferTypesWrite => "transfer_types:write",
            Action::AmlRead => "aml:read",
            Action::AmlWrite => "aml:write",
            Action::UsersRead => "users:read",
            Action::UsersBlock => "users:block",
            Action::UsersWrite => "users:write",
            Action::UsersVerify => "users:verify",
            Action::AdminUsersRead => "admin_users:read",
            Action::AdminUsersManage => "admin_users:manage",
            Action::OpsRead => "ops:read",
            Action::OpsWrite => "ops:write",
            Action::LimitsRead => "limits:read",
            Action::LimitsWrite => "limits:write",
            Action::AuditRead => "audit:read",
            Action::EventsRead => "events:read",
            Action::WebhooksManage => "webhooks:manage",
        }
    }

    pub const fn description(self) -> &'static str {
        match self {
            Action::TransfersRead => "See any transfer, with its admin fields, and statements",
            Action::TransfersExecute => "Execute a pending transfer",
            Action::TransfersReject => "Reject a pending transfer, releasing its hold",
            Action::TransfersCancel => "Cancel a pending transfer, releasing its hold",
            Action::TransfersAdjust => "Credit or debit an account against settlement",
            Action::AccountsRead => "See any account, its holds and flags",
            Action::AccountsWrite => "Open an account for any user, with a credit limit",
            Action::AccountsClose => "Block, unblock or close an account",
            Action::FeesRead => "See fee rules",
            Action::FeesWrite => "Create and change fee rules",
            Action::FxRead => "See FX rates",
            Action::FxWrite => "Set FX rates",
            Action::TransferTypesWrite => "Enable, disable and limit transfer types",
            Action::AmlRead => "See AML flags",
            Action::AmlWrite => "See and change AML rules, resolve flags",
            Action::UsersRead => "See users: search, count, one user with roles and sessions",
            Action::UsersBlock => "Block and unblock users, end their sessions",
            Action::UsersWrite => "Edit users' profiles and send them a password reset",
            Action::UsersVerify => "Set users' verification level",
            Action::AdminUsersRead => "See admins, roles and the permission catalog",
            Action::AdminUsersManage => "Create admins, grant or revoke permissions, manage and assign roles",
            Action::OpsRead => "See actor and journal health",
            Action::OpsWrite => "Act on actors: release a quarantined one",
            Action::LimitsRead => "See the transfer limits of each verification level",
            Action::LimitsWrite => "Set the transfer limits of each verification level",
            Action::AuditRead => "Read the audit log and its chain head",
            Action::EventsRead => "Read the event feed",
            Action::WebhooksManage => "Create, change, delete and replay webhook subscriptions",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|action| action.as_str() == text)
    }
}

/// A marker type naming one action, for `Authorized<P>`.
pub trait Permission: Send + Sync + 'static {
    const ACTION: Action;
}

macro_rules! permissions {
    ($($name:ident => $action:ident),* $(,)?) => {
        $(
            #[derive(Debug)]
            pub struct $name;

            impl Permission for $name {
                const ACTION: Action = Action::$action;
            }
        )*
    };
}

permissions! {
    TransfersRead => TransfersRead,
    TransfersExecute => TransfersExecute,
    TransfersReject => TransfersReject,
    TransfersCancel => TransfersCancel,
    TransfersAdjust => TransfersAdjust,
    AccountsRead => AccountsRead,
    AccountsWrite => AccountsWrite,
    AccountsClose => AccountsClose,
    FeesRead => FeesRead,
    FeesWrite => FeesWrite,
    FxRead => FxRead,
    FxWrite => FxWrite,
    TransferTypesWrite => TransferTypesWrite,
    AmlRead => AmlRead,
    AmlWrite => AmlWrite,
    UsersRead => UsersRead,
    UsersBlock => UsersBlock,
    UsersWrite => UsersWrite,
    UsersVerify => UsersVerify,
    AdminUsersRead => AdminUsersRead,
    AdminUsersManage => AdminUsersManage,
    OpsRead => OpsRead,
    OpsWrite => OpsWrite,
    LimitsRead => LimitsRead,
    LimitsWrite => LimitsWrite,
    AuditRead => AuditRead,
    EventsRead => EventsRead,
    WebhooksManage => WebhooksManage,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_action_has_a_distinct_name_that_parses_back() {
        let names: HashSet<&str> = Action::ALL.iter().map(|action| action.as_str()).collect();
        assert_eq!(names.len(), Action::ALL.len());
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
            assert!(!action.description().is_empty());
        }
        assert_eq!(Action::parse("transfers:write"), None, "an API-key scope, not an admin action");
    }
}
