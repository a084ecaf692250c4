//! The identity store's contract, run on both SQL backends: the same scenario against a fresh
//! Postgres database and a fresh SQLite file. Its code is written once for both
//! (`persistence/src/sql.rs`); this is what proves that one text of SQL means the same on each
//! (parameters, id and list encodings, locks, unique-violation mapping), since most HTTP
//! tests run on Postgres only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use tally_engine::audit::{ActorKind, AuditRecord};
use tally_engine::{Timestamp, UserId};
use tally_persistence::audit::verify_chain;
use tally_persistence::open_users::{UserStores, open_user_store};
use tally_persistence::sessions::SessionRecord;
use tally_persistence::users::admin::UserFilter;
use tally_persistence::users::roles::{Role, RoleAssign, RoleDelete, RoleUnassign, RoleWrite};
use tally_persistence::users::{
    CreateUserError, RefreshTokenRecord, RefreshUse, SigningKeyRecord, User, UserStatus, VerificationLevel,
};
use tally_tests::postgres::fresh_database;
use uuid::Uuid;

fn audit(action: &str) -> AuditRecord {
    AuditRecord {
        id: Uuid::new_v4(),
        at: Timestamp::from_micros(1_000),
        actor_kind: ActorKind::User,
        actor_id: Some("admin".to_owned()),
        action: action.to_owned(),
        target_type: None,
        target_id: None,
        subject_user: None,
        request_id: "req".to_owned(),
        ip: None,
        user_agent: None,
        details: "{}".to_owned(),
    }
}

fn user(email: &str, first_name: &str, permissions: &[&str]) -> User {
    User {
        id: UserId::from_uuid(Uuid::new_v4()),
        email: email.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        first_name: first_name.to_owned(),
        last_name: "Example".to_owned(),
        status: UserStatus::Active,
        permissions: permissions.iter().map(|action| (*action).to_owned()).collect(),
        created_at: Timestamp::from_micros(1_000),
        phone: Some("+15550100".to_owned()),
        email_verified_at: None,
        verification_level: VerificationLevel::Basic,
        roles: Vec::new(),
    }
}

fn actions(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|action| (*action).to_owned()).collect()
}

async fn users_and_roles(stores: &UserStores) {
    let ada = user("Ada@Example.com", "Ada", &["transfers:execute", "fees:write"]);
    let bob = user("bob@example.com", "Bob", &[]);
    stores.users.create_user(&ada, &audit("user.create")).await.unwrap();
    stores.users.create_user(&bob, &audit("user.create")).await.unwrap();

    // Uniqueness: the normalized email, then the id.
    let mut same_email = user("ada@EXAMPLE.com", "Other", &[]);
    assert!(matches!(
        stores.users.create_user(&same_email, &audit("user.create")).await,
        Err(CreateUserError::EmailTaken)
    ));
    same_email.email = "new@example.com".to_owned();
    same_email.id = ada.id;
    assert!(matches!(
        stores.users.create_user(&same_email, &audit("user.create")).await,
        Err(CreateUserError::IdTaken)
    ));

    let read = stores.users.user_by_email("ADA@example.com").await.unwrap().expect("found by email");
    assert_eq!(read, ada, "a user reads back as written");
    assert_eq!(stores.users.user_by_id(bob.id).await.unwrap().as_ref(), Some(&bob));
    assert_eq!(stores.users.user_by_id(UserId::from_uuid(Uuid::new_v4())).await.unwrap(), None);
    assert_eq!(stores.users.user_by_email("nobody\0@example.com").await.unwrap(), None);

    // Direct permissions: a grant that adds nothing new still finds the user.
    assert!(
        stores
            .admin
            .grant_permissions(bob.id, &["audit:read".into(), "users:read".into()], &audit("grant"))
            .await
            .unwrap()
    );
    assert!(
        stores
            .admin
            .revoke_permissions(bob.id, &["users:read".into(), "not:held".into()], &audit("revoke"))
            .await
            .unwrap()
    );
    assert!(
        !stores
            .admin
            .grant_permissions(UserId::from_uuid(Uuid::new_v4()), &["x:y".into()], &audit("grant"))
            .await
            .unwrap()
    );
    let bob_now = stores.users.user_by_id(bob.id).await.unwrap().unwrap();
    assert_eq!(bob_now.permissions, actions(&["audit:read"]));

    // Roles: create, the name's uniqueness, actions, assignment, deletion while held.
    let role = Role {
        id: Uuid::new_v4(),
        name: "Treasury".to_owned(),
        description: Some("moves money".to_owned()),
        actions: actions(&["transfers:execute", "transfers:reject"]),
        holders: 0,
        created_at: Timestamp::from_micros(2_000),
        updated_at: Timestamp::from_micros(2_000),
    };
    assert_eq!(stores.roles.create_role(&role, 10, &audit("role.create")).await.unwrap(), RoleWrite::Written);
    let twin = Role { id: Uuid::new_v4(), name: " treasury ".to_owned(), ..role.clone() };
    assert_eq!(stores.roles.create_role(&twin, 10, &audit("role.create")).await.unwrap(), RoleWrite::NameTaken);
    assert_eq!(stores.roles.create_role(&twin, 1, &audit("role.create")).await.unwrap(), RoleWrite::TooMany);
    let renamed = Role { name: "Treasury ops".to_owned(), actions: actions(&["transfers:execute"]), ..role.clone() };
    assert_eq!(stores.roles.update_role(&renamed, &audit("role.update")).await.unwrap(), RoleWrite::Written);
    let missing = Role { id: Uuid::new_v4(), name: "Nobody".to_owned(), ..role.clone() };
    assert_eq!(stores.roles.update_role(&missing, &audit("role.update")).await.unwrap(), RoleWrite::NotFound);

    let at = Timestamp::from_micros(3_000);
    assert_eq!(stores.roles.assign_role(bob.id, role.id, at, &audit("assign")).await.unwrap(), RoleAssign::Assigned);
    assert_eq!(stores.roles.assign_role(bob.id, role.id, at, &audit("assign")).await.unwrap(), RoleAssign::AlreadyHeld);
    assert_eq!(
        stores.roles.assign_role(bob.id, Uuid::new_v4(), at, &audit("assign")).await.unwrap(),
        RoleAssign::NoSuchRole
    );
    assert_eq!(
        stores.roles.assign_role(UserId::from_uuid(Uuid::new_v4()), role.id, at, &audit("assign")).await.unwrap(),
        RoleAssign::NoSuchUser
    );
    let held = stores.roles.role(role.id).await.unwrap().expect("the role");
    assert_eq!(
        (held.name.as_str(), held.holders, &held.actions),
        ("Treasury ops", 1, &actions(&["transfers:execute"]))
    );
    assert_eq!(stores.roles.roles().await.unwrap(), vec![held.clone()]);
    let bob_now = stores.users.user_by_id(bob.id).await.unwrap().unwrap();
    assert_eq!(bob_now.roles.len(), 1);
    assert_eq!((bob_now.roles[0].id, &bob_now.roles[0].actions), (role.id, &actions(&["transfers:execute"])));
    assert_eq!(stores.roles.delete_role(role.id, &audit("role.delete")).await.unwrap(), RoleDelete::InUse(1));

    // The admin listing: search (case-insensitive email substring, name prefix, id prefix),
    // filters, paging by id, and each user's grants.
    let everyone = UserFilter::default();
    assert_eq!(stores.admin.count_users(&everyone).await.unwrap(), 2);
    let page = stores.admin.list_users(&everyone, None, 1, Timestamp::from_micros(0)).await.unwrap();
    let rest = stores.admin.list_users(&everyone, Some(page[0].user.id), 10, Timestamp::from_micros(0)).await.unwrap();
    let listed: Vec<UserId> = page.iter().chain(&rest).map(|summary| summary.user.id).collect();
    let mut expected = vec![ada.id, bob.id];
    expected.sort_by_key(|id| id.as_uuid());
    assert_eq!(listed, expected, "pages by id, without gaps or repeats");
    let summary = page.iter().chain(&rest).find(|summary| summary.user.id == bob.id).unwrap();
    assert_eq!((&summary.user.permissions, summary.user.roles.len()), (&actions(&["audit:read"]), 1));
    assert!(!summary.totp_enabled);
    for (search, found) in [("EXAMPLE.COM", 2), ("ad", 1), ("nobody", 0), ("%", 0)] {
        let filter = UserFilter { search: Some(search.to_owned()), ..UserFilter::default() };
        assert_eq!(stores.admin.count_users(&filter).await.unwrap(), found, "search {search:?}");
    }
    let by_id = UserFilter { search: Some(ada.id.as_uuid().to_string()[..8].to_owned()), ..UserFilter::default() };
    assert_eq!(stores.admin.list_users(&by_id, None, 10, at).await.unwrap()[0].user.id, ada.id);

    assert!(stores.admin.set_user_status(ada.id, UserStatus::Blocked, &audit("block")).await.unwrap());
    assert!(
        !stores
            .admin
            .set_user_status(UserId::from_uuid(Uuid::new_v4()), UserStatus::Blocked, &audit("block"))
            .await
            .unwrap()
    );
    let blocked = UserFilter { status: Some(UserStatus::Blocked), ..UserFilter::default() };
    assert_eq!(stores.admin.count_users(&blocked).await.unwrap(), 1);

    assert_eq!(stores.roles.unassign_role(bob.id, role.id, &audit("unassign")).await.unwrap(), RoleUnassign::Removed);
    assert_eq!(stores.roles.unassign_role(bob.id, role.id, &audit("unassign")).await.unwrap(), RoleUnassign::NotHeld);
    assert_eq!(stores.roles.delete_role(role.id, &audit("role.delete")).await.unwrap(), RoleDelete::Deleted);
    assert_eq!(stores.roles.delete_role(role.id, &audit("role.delete")).await.unwrap(), RoleDelete::NotFound);

    // Every change above that changed something wrote one chained audit entry: two users, a
    // grant, a revocation, a role's creation, update, assignment, removal and deletion, and a
    // block. Refused or empty changes wrote none.
    let report = verify_chain(stores.audit.as_ref()).await.unwrap();
    assert!(report.first_break.is_none() && report.entries == 10, "{report:?}");
}

async fn tokens_keys_and_sessions(stores: &UserStores) {
    let owner = user("carol@example.com", "Carol", &[]);
    stores.users.create_user(&owner, &audit("user.create")).await.unwrap();

    let key = SigningKeyRecord {
        generation: 1,
        kid: "k1".to_owned(),
        algorithm: "RS256".to_owned(),
        private_key_pkcs8: vec![1, 2, 3],
        created_at: Timestamp::from_micros(5),
    };
    assert!(stores.users.insert_signing_key(&key).await.unwrap());
    assert!(!stores.users.insert_signing_key(&key).await.unwrap(), "a generation is written once");
    assert!(stores.users.signing_keys().await.unwrap() == vec![key], "the key reads back as written");

    let family = Uuid::new_v4();
    let token = |hash: &str| RefreshTokenRecord {
        token_hash: hash.to_owned(),
        user_id: owner.id,
        family_id: family,
        issued_at: Timestamp::from_micros(10),
        expires_at: Timestamp::from_micros(100),
    };
    stores.users.insert_refresh_token(&token("a")).await.unwrap();
    stores.users.insert_refresh_token(&token("b")).await.unwrap();
    let now = Timestamp::from_micros(50);
    assert_eq!(
        stores.users.spend_refresh_token("a", now).await.unwrap(),
        RefreshUse::Spent { user_id: owner.id, family_id: family }
    );
    assert_eq!(stores.users.spend_refresh_token("a", now).await.unwrap(), RefreshUse::Reused { family_id: family });
    assert_eq!(stores.users.spend_refresh_token("b", now).await.unwrap(), RefreshUse::Invalid, "the family is revoked");
    assert_eq!(stores.users.spend_refresh_token("unknown", now).await.unwrap(), RefreshUse::Invalid);

    let session = SessionRecord {
        id: Uuid::new_v4(),
        user_id: owner.id,
        client_ip: Some("127.0.0.1".to_owned()),
        user_agent: None,
        created_at: Timestamp::from_micros(10),
        last_activity_at: Timestamp::from_micros(10),
        revoked_at: None,
        revoked_reason: None,
    };
    stores.sessions.insert_session(&session).await.unwrap();
    stores.sessions.record_activity(session.id, Timestamp::from_micros(30)).await.unwrap();
    stores.sessions.record_activity(session.id, Timestamp::from_micros(20)).await.unwrap();
    let live = stores.sessions.live_sessions_of(owner.id).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].last_activity_at, Timestamp::from_micros(30), "activity never moves backwards");
    assert!(stores.sessions.revoke_session(session.id, Timestamp::from_micros(40), "logout").await.unwrap());
    assert!(!stores.sessions.revoke_session(session.id, Timestamp::from_micros(41), "again").await.unwrap());
    let revoked = stores.sessions.session(session.id).await.unwrap().unwrap();
    assert_eq!(
        (revoked.revoked_at, revoked.revoked_reason.as_deref()),
        (Some(Timestamp::from_micros(40)), Some("logout"))
    );
    assert!(stores.sessions.live_sessions_of(owner.id).await.unwrap().is_empty());
}

async fn on_postgres() -> UserStores {
    open_user_store(&fresh_database("identity").await).await.expect("open the Postgres identity store")
}

/// A fresh SQLite file, removed (with its WAL files) when dropped.
struct SqliteFile(std::path::PathBuf);

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

async fn on_sqlite() -> (UserStores, SqliteFile) {
    let file = SqliteFile(std::env::temp_dir().join(format!("tally-identity-{}.db", Uuid::new_v4().simple())));
    let stores =
        open_user_store(&format!("sqlite://{}", file.0.display())).await.expect("open the SQLite identity store");
    (stores, file)
}

#[tokio::test]
async fn users_and_roles_on_postgres() {
    users_and_roles(&on_postgres().await).await;
}

#[tokio::test]
async fn users_and_roles_on_sqlite() {
    let (stores, _file) = on_sqlite().await;
    users_and_roles(&stores).await;
}

#[tokio::test]
async fn tokens_keys_and_sessions_on_postgres() {
    tokens_keys_and_sessions(&on_postgres().await).await;
}

#[tokio::test]
async fn tokens_keys_and_sessions_on_sqlite() {
    let (stores, _file) = on_sqlite().await;
    tokens_keys_and_sessions(&stores).await;
}
