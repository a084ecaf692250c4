//! The identity store behind the HTTP API, on SQLite and Postgres alike: one user per email
//! however many register at once, one spend per refresh token however many race, one key per
//! generation, and users read back exactly as written.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tally_engine::{Timestamp, UserId};
use tally_persistence::users::{RefreshTokenRecord, RefreshUse, SigningKeyRecord, User, UserStatus};
use tally_tests::http::{PASSWORD, TestServer};
use tally_tests::on_both_stores;

on_both_stores!(
    concurrent_registrations_of_one_email_make_one_user,
    concurrent_spends_of_one_refresh_token_succeed_once,
    a_user_reads_back_exactly_and_key_generations_are_unique,
);

async fn concurrent_registrations_of_one_email_make_one_user(server: TestServer) {
    let attempts = (0..8).map(|i| {
        let email = if i % 2 == 0 { "race@example.com" } else { "RACE@example.com" };
        server.post(
            "/v1/auth/register",
            None,
            json!({"email": email, "password": PASSWORD, "first_name": format!("N{i}"), "last_name": "R"}),
        )
    });
    let replies = futures::future::join_all(attempts).await;
    let created = replies.iter().filter(|reply| reply.status == 201).count();
    let conflicts = replies.iter().filter(|reply| reply.status == 409 && reply.body["code"] == "CONFLICT").count();
    assert_eq!((created, conflicts), (1, 7));
    server.login("race@example.com", PASSWORD).await.assert_status(200);
    server.shutdown().await;
}

async fn concurrent_spends_of_one_refresh_token_succeed_once(server: TestServer) {
    let user = server.user().await;
    let users = server.state.identity().users.clone();
    let user_id = UserId::from_uuid(uuid::Uuid::parse_str(&user.user_id).unwrap());
    let family = uuid::Uuid::new_v4();
    let now = Timestamp::from_micros(1_000_000);
    let record = RefreshTokenRecord {
        token_hash: "ab".repeat(32),
        user_id,
        family_id: family,
        issued_at: now,
        expires_at: Timestamp::from_micros(2_000_000),
    };
    users.insert_refresh_token(&record).await.unwrap();
    let sibling = RefreshTokenRecord { token_hash: "cd".repeat(32), ..record.clone() };
    users.insert_refresh_token(&sibling).await.unwrap();

    let spends = (0..8).map(|_| users.spend_refresh_token(&record.token_hash, now));
    let outcomes: Vec<RefreshUse> = futures::future::join_all(spends).await.into_iter().map(Result::unwrap).collect();
    let spent = outcomes.iter().filter(|outcome| matches!(outcome, RefreshUse::Spent { .. })).count();
    assert_eq!(spent, 1, "{outcomes:?}");
    assert!(outcomes.contains(&RefreshUse::Spent { user_id, family_id: family }));
    assert!(outcomes.iter().all(|o| matches!(o, RefreshUse::Spent { .. } | RefreshUse::Reused { .. })));
    // The reuse revoked the sibling of the same family.
    assert_eq!(users.spend_refresh_token(&sibling.token_hash, now).await.unwrap(), RefreshUse::Invalid);
    // Expiry and unknown hashes.
    let late = RefreshTokenRecord { token_hash: "ef".repeat(32), family_id: uuid::Uuid::new_v4(), ..record.clone() };
    users.insert_refresh_token(&late).await.unwrap();
    assert_eq!(
        users.spend_refresh_token(&late.token_hash, Timestamp::from_micros(2_000_000)).await.unwrap(),
        RefreshUse::Invalid
    );
    assert_eq!(users.spend_refresh_token("00", now).await.unwrap(), RefreshUse::Invalid);
    server.shutdown().await;
}

async fn a_user_reads_back_exactly_and_key_generations_are_unique(server: TestServer) {
    let users = server.state.identity().users.clone();
    let mut user = User::new(
        UserId::from_uuid(uuid::Uuid::new_v4()),
        "Élodie@Exemple.FR".to_owned(),
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        "Élodie".to_owned(),
        "D'Arc".to_owned(),
        ["transfers:read".to_owned(), "accounts:read".to_owned()].into_iter().collect(),
        Timestamp::from_micros(1_714_564_800_123_456),
    );
    user.status = UserStatus::Blocked;
    user.phone = Some("+33612345678".to_owned());
    user.email_verified_at = Some(Timestamp::from_micros(1_714_564_900_000_001));
    user.verification_level = tally_persistence::users::VerificationLevel::Enhanced;
    users.create_user(&user, &tally_tests::http::setup_record(&user)).await.unwrap();
    assert_eq!(users.user_by_id(user.id).await.unwrap(), Some(user.clone()));
    assert_eq!(users.user_by_email("élodie@exemple.fr").await.unwrap(), Some(user.clone()), "Unicode case folded");
    assert_eq!(users.user_by_email(" ÉLODIE@EXEMPLE.FR ").await.unwrap(), Some(user.clone()));
    assert_eq!(users.user_by_email("elodie@exemple.fr").await.unwrap(), None);
    // Postgres text cannot hold NUL: such an address must be "no user", not an error (a 500
    // on login, found by schemathesis).
    assert_eq!(users.user_by_email("élodie\0@exemple.fr").await.unwrap(), None);
    assert_eq!(users.user_by_id(UserId::from_uuid(uuid::Uuid::new_v4())).await.unwrap(), None);

    let keys = users.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1, "the server made generation 1 at start");
    let duplicate = SigningKeyRecord { kid: "another".to_owned(), ..keys[0].clone() };
    assert!(!users.insert_signing_key(&duplicate).await.unwrap(), "generation 1 is taken");
    assert_eq!(users.signing_keys().await.unwrap(), keys);
    server.shutdown().await;
}
