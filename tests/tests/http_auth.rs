//! Identity over a real socket: registration, login, refresh rotation, `/v1/users/me`, the
//! JWKS, the admin bootstrap, and every kind of bad token refused with `401` and no effect.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use tally_actors::{RandomIds, SystemClock};
use tally_engine::{Timestamp, UserId};
use tally_http::auth::Identity;
use tally_http::auth::bootstrap::{AdminOutcome, ensure_admin};
use tally_http::auth::permissions::Action;
use tally_http::auth::tokens::{AUDIENCE, AccessClaims};
use tally_persistence::open_users::open_user_store;
use tally_persistence::users::{User, UserStatus};
use tally_tests::http::{PASSWORD, TestServer, forge_alg_none, forge_hs256_with_public_key, forge_unknown_kid, tamper};
use tally_tests::on_both_stores;

on_both_stores!(
    a_user_registers_logs_in_with_any_case_and_reads_themselves,
    registration_refuses_weak_passwords_bad_fields_and_taken_emails,
    login_refuses_wrong_passwords_unknown_emails_and_blocked_users,
    every_kind_of_bad_token_is_refused_and_changes_nothing,
    refresh_rotates_and_a_reused_token_revokes_its_family,
    signing_keys_and_tokens_survive_a_restart,
    the_bootstrap_admin_gets_every_permission_once,
);

fn user_id_of(user: &tally_tests::http::TestUser) -> UserId {
    UserId::from_uuid(uuid::Uuid::parse_str(&user.user_id).unwrap())
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    header["kid"].as_str().unwrap().to_owned()
}

async fn a_user_registers_logs_in_with_any_case_and_reads_themselves(server: TestServer) {
    let registered = server
        .post(
            "/v1/auth/register",
            None,
            json!({"email": "Ada.Lovelace@Example.com", "password": PASSWORD, "first_name": " Ada ", "last_name": "Lovelace"}),
        )
        .await;
    registered.assert_status(201);
    let user_id = registered.str("user_id");
    uuid::Uuid::parse_str(&user_id).unwrap();

    let login = server.login("ada.lovelace@EXAMPLE.com", PASSWORD).await;
    login.assert_status(200);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 900);
    assert!(!login.str("refresh_token").is_empty());
    assert_eq!(login.headers["cache-control"], "no-store");
    let token = login.str("access_token");

    let me = server.get("/v1/users/me", Some(&token)).await;
    me.assert_status(200);
    assert_eq!(me.str("user_id"), user_id);
    assert_eq!(me.str("email"), "Ada.Lovelace@Example.com", "kept as written");
    assert_eq!(me.str("first_name"), "Ada", "trimmed");
    assert_eq!(me.str("status"), "active");
    assert_eq!(me.body["mfa"]["totp_enabled"], false);
    assert_eq!(me.body["permissions"], json!([]));
    assert!(me.str("created_at").ends_with('Z'));

    let jwks = server.get("/.well-known/jwks.json", None).await;
    jwks.assert_status(200);
    let keys = jwks.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert_eq!(keys[0]["use"], "sig");
    assert_eq!(keys[0]["kid"], kid_of(&token).as_str(), "the token names the published key");
    server.shutdown().await;
}

async fn registration_refuses_weak_passwords_bad_fields_and_taken_emails(server: TestServer) {
    let register = |body| server.post("/v1/auth/register", None, body);
    let weak = [
        ("Short1!", "at least 8"),
        ("alllowercase1!", "uppercase"),
        ("ALLUPPERCASE1!", "lowercase"),
        ("NoDigitsHere!", "digit"),
        ("NoSpecials123", "special"),
    ];
    for (password, missing) in weak {
        let reply =
            register(json!({"email": "weak@example.com", "password": password, "first_name": "A", "last_name": "B"}))
                .await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec!["password"], "{password}");
        assert!(reply.body["errors"][0]["message"].as_str().unwrap().contains(missing), "{}", reply.text);
    }
    let everything_wrong =
        register(json!({"email": "not-an-email", "password": "weak", "first_name": "", "last_name": " "})).await;
    everything_wrong.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(everything_wrong.error_fields(), vec!["email", "password", "first_name", "last_name"]);

    register(json!({"email": "x@example.com", "password": PASSWORD, "first_name": "A"}))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    register(
        json!({"email": "x@example.com", "password": PASSWORD, "first_name": "A", "last_name": "B", "admin": true}),
    )
    .await
    .assert_problem(400, "VALIDATION_ERROR");
    // None of the refused registrations exists.
    server.login("weak@example.com", "Short1!").await.assert_problem(401, "INVALID_CREDENTIALS");

    register(json!({"email": "taken@example.com", "password": PASSWORD, "first_name": "A", "last_name": "B"}))
        .await
        .assert_status(201);
    register(json!({"email": "TAKEN@example.com", "password": "Other!pass1", "first_name": "C", "last_name": "D"}))
        .await
        .assert_problem(409, "CONFLICT");
    // The first registration is untouched: its password still works, the second's does not.
    server.login("taken@example.com", PASSWORD).await.assert_status(200);
    server.login("taken@example.com", "Other!pass1").await.assert_problem(401, "INVALID_CREDENTIALS");
    server.shutdown().await;
}

async fn login_refuses_wrong_passwords_unknown_emails_and_blocked_users(server: TestServer) {
    let user = server.user().await;
    let wrong = server.login(&user.email, "Wr0ng!password").await;
    wrong.assert_problem(401, "INVALID_CREDENTIALS");
    let unknown = server.login("nobody@example.com", PASSWORD).await;
    unknown.assert_problem(401, "INVALID_CREDENTIALS");
    assert_eq!(wrong.body["detail"], unknown.body["detail"], "the two are indistinguishable");
    server.login(&"a".repeat(300), PASSWORD).await.assert_problem(401, "INVALID_CREDENTIALS");
    server
        .post("/v1/auth/login", None, json!({"identifier": user.email}))
        .await
        .assert_problem(400, "VALIDATION_ERROR");

    let identity = server.state.identity();
    let mut blocked = User::new(
        UserId::from_uuid(uuid::Uuid::new_v4()),
        "blocked@example.com".to_owned(),
        identity.passwords.hash(PASSWORD.to_owned()).await.unwrap(),
        "B".to_owned(),
        "L".to_owned(),
        Default::default(),
        identity.now(),
    );
    blocked.status = UserStatus::Blocked;
    identity.users.create_user(&blocked, &tally_tests::http::setup_record(&blocked)).await.unwrap();
    let refused = server.login("blocked@example.com", PASSWORD).await;
    refused.assert_problem(401, "UNAUTHENTICATED");
    assert!(refused.body.get("access_token").is_none());
    server.shutdown().await;
}

async fn every_kind_of_bad_token_is_refused_and_changes_nothing(server: TestServer) {
    let user = server.user().await;
    let victim = server.user().await;
    let now = server.state.identity().now();
    let claims = AccessClaims::new(user_id_of(&victim), uuid::Uuid::new_v4(), now);
    let mut expired = AccessClaims::new(
        user_id_of(&user),
        uuid::Uuid::new_v4(),
        Timestamp::from_micros(now.as_micros() - 3_600_000_000),
    );
    expired.exp = now.as_micros() / 1_000_000 - 1;
    let mut wrong_audience = AccessClaims::new(user_id_of(&user), uuid::Uuid::new_v4(), now);
    wrong_audience.aud = format!("{AUDIENCE}-other");
    let mut not_a_user = AccessClaims::new(user_id_of(&user), uuid::Uuid::new_v4(), now);
    not_a_user.sub = "root".to_owned();

    // Only a token Tally signed, intact, says TOKEN_EXPIRED when it expired (so the client
    // refreshes); a forged or altered one never learns that its claims were stale.
    let bad_tokens = [
        ("garbage", "not.a.jwt".to_owned(), "UNAUTHENTICATED"),
        ("expired", server.sign(&expired), "TOKEN_EXPIRED"),
        ("expired under an unknown kid", forge_unknown_kid(&expired), "UNAUTHENTICATED"),
        ("expired, alg none", forge_alg_none(&expired), "UNAUTHENTICATED"),
        ("alg none", forge_alg_none(&claims), "UNAUTHENTICATED"),
        ("HS256 with the public key", forge_hs256_with_public_key(&server, &claims), "UNAUTHENTICATED"),
        ("unknown kid", forge_unknown_kid(&claims), "UNAUTHENTICATED"),
        ("tampered payload", tamper(&user.token, &claims), "UNAUTHENTICATED"),
        ("tampered to expired", tamper(&user.token, &expired), "UNAUTHENTICATED"),
        ("wrong audience", server.sign(&wrong_audience), "UNAUTHENTICATED"),
        ("subject not a user id", server.sign(&not_a_user), "UNAUTHENTICATED"),
        ("truncated signature", user.token[..user.token.len() - 4].to_owned(), "UNAUTHENTICATED"),
    ];
    for (what, token, code) in &bad_tokens {
        let me = server.get("/v1/users/me", Some(token)).await;
        assert_eq!(me.body["code"], *code, "{what}: {}", me.text);
        me.assert_problem(401, code);
        let open = server.post("/v1/accounts", Some(token), json!({"currency": "USD"})).await;
        open.assert_problem(401, code);
        assert!(!open.text.contains(&victim.user_id), "{what}: no detail about the subject");
    }
    server.get("/v1/users/me", None).await.assert_problem(401, "UNAUTHENTICATED");
    let basic =
        server.send(server.client.get(server.url("/v1/users/me")).header("authorization", "Basic dXNlcjpwYXNz")).await;
    basic.assert_problem(401, "UNAUTHENTICATED");
    let empty = server.send(server.client.get(server.url("/v1/users/me")).header("authorization", "Bearer ")).await;
    empty.assert_problem(401, "UNAUTHENTICATED");

    // Nothing was opened in either user's name.
    for someone in [&user, &victim] {
        let list = server.get("/v1/accounts", Some(&someone.token)).await;
        list.assert_status(200);
        assert_eq!(list.body["items"], json!([]));
    }
    // The genuine token still works, lower-case scheme too.
    let lower = server
        .send(server.client.get(server.url("/v1/users/me")).header("authorization", format!("bearer {}", user.token)))
        .await;
    lower.assert_status(200);
    server.shutdown().await;
}

async fn refresh_rotates_and_a_reused_token_revokes_its_family(server: TestServer) {
    let user = server.user().await;
    let first = server.post("/v1/auth/refresh", None, json!({"refresh_token": user.refresh_token})).await;
    first.assert_status(200);
    let (access, next_refresh) = (first.str("access_token"), first.str("refresh_token"));
    assert_ne!(next_refresh, user.refresh_token);
    server.get("/v1/users/me", Some(&access)).await.assert_status(200);

    // The spent token again: refused, and the family (including `next_refresh`) revoked.
    server
        .post("/v1/auth/refresh", None, json!({"refresh_token": user.refresh_token}))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    server
        .post("/v1/auth/refresh", None, json!({"refresh_token": next_refresh}))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    server
        .post("/v1/auth/refresh", None, json!({"refresh_token": "made-up"}))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    // A new login starts a new family.
    let again = server.login(&user.email, PASSWORD).await;
    server
        .post("/v1/auth/refresh", None, json!({"refresh_token": again.str("refresh_token")}))
        .await
        .assert_status(200);
    server.shutdown().await;
}

async fn signing_keys_and_tokens_survive_a_restart(server: TestServer) {
    let user = server.user().await;
    let kid = kid_of(&user.token);
    // A second server process on the same database loads the stored key instead of making one.
    let reopened = Identity::open(open_user_store(&server.database_url).await.unwrap()).await.unwrap();
    assert_eq!(reopened.tokens.keys().signing_key().kid, kid);
    assert_eq!(reopened.tokens.verify(&user.token, reopened.now()).unwrap().to_string(), user.user_id);
    assert_eq!(reopened.tokens.keys().jwks(), server.state.identity().tokens.keys().jwks());
    server.shutdown().await;
}

async fn the_bootstrap_admin_gets_every_permission_once(server: TestServer) {
    let identity = server.state.identity();
    let bootstrap = |password: &'static str| {
        ensure_admin(
            identity.users.as_ref(),
            &identity.passwords,
            &SystemClock,
            &RandomIds,
            "root@tally.test",
            password,
        )
    };
    let Ok(AdminOutcome::Created(id)) = bootstrap("R00t!password").await else { panic!("created") };
    // Again, even with another password: the admin exists and nothing changes.
    assert_eq!(bootstrap("Other!passw0rd").await, Ok(AdminOutcome::Exists(id)));
    assert!(bootstrap("weak").await.is_err(), "the password policy applies to admins too");

    let login = server.login("root@tally.test", "R00t!password").await;
    login.assert_status(200);
    let me = server.get("/v1/users/me", Some(&login.str("access_token"))).await;
    let permissions: Vec<String> =
        me.body["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    let mut every: Vec<String> = Action::ALL.iter().map(|action| action.as_str().to_owned()).collect();
    every.sort();
    assert_eq!(permissions, every);
    server.login("root@tally.test", "Other!passw0rd").await.assert_problem(401, "INVALID_CREDENTIALS");
    server.shutdown().await;
}
