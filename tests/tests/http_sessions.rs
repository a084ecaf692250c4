//! Login sessions over a real socket: logout, listing and deleting sessions, and every way a
//! session ends (logout, deletion, refresh-token reuse, an admin block, idleness, the per-user
//! bound) refusing its access token with `401` at once, even though the token itself is
//! validly signed, unexpired and already in the verified-token cache. Sessions survive a
//! restart, and an ended one stays ended.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tally_actors::sessions::SESSIONS_PER_USER_MAX;
use tally_actors::{Clock, RandomIds, SessionConfig, SystemClock};
use tally_engine::Timestamp;
use tally_http::auth::Identity;
use tally_http::{AppState, app};
use tally_persistence::open_users::open_user_store;
use tally_tests::http::{PASSWORD, Reply, TestServer, TestUser};
use tally_tests::on_both_stores;

on_both_stores!(
    a_login_racing_a_password_change_keeps_no_session,
    logout_refuses_the_sessions_access_and_refresh_tokens_at_once,
    sessions_are_listed_with_the_current_one_marked_and_deleting_one_ends_it,
    another_users_session_is_not_found_and_bad_ids_are_refused,
    reusing_a_spent_refresh_token_ends_the_session_at_once,
    blocking_a_user_ends_every_session_at_once_and_unblocking_revives_none,
    a_login_beyond_the_per_user_bound_ends_the_oldest_session,
    sessions_survive_a_restart_and_an_ended_one_stays_ended,
    an_idle_session_expires_by_the_clock_and_activity_keeps_it_alive,
    session_ticks_leave_the_store_alone_while_the_node_may_not_write,
);

/// A second server process on the same database: a fresh `Identity` (and so a fresh, empty
/// session registry) over the same ledger engine, served on its own socket.
struct SecondServer {
    base: String,
    identity: Identity,
    _server: tokio::task::JoinHandle<()>,
}

async fn second_server(server: &TestServer, identity: Identity) -> SecondServer {
    let state = AppState::with_engine(server.store.clone(), identity.clone(), server.engine.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let handle = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    SecondServer { base, identity, _server: handle }
}

impl SecondServer {
    async fn get(&self, server: &TestServer, path: &str, token: &str) -> Reply {
        server.send(server.client.get(format!("{}{path}", self.base)).bearer_auth(token)).await
    }

    async fn post(&self, server: &TestServer, path: &str, body: Value) -> Reply {
        server.send(server.client.post(format!("{}{path}", self.base)).json(&body)).await
    }
}

/// A clock the test moves by hand (the `Clock` seam), starting at the real time.
struct ManualClock(AtomicI64);

impl ManualClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.0.load(Ordering::SeqCst))
    }
}

async fn login_with_agent(server: &TestServer, email: &str, agent: &str) -> (String, String) {
    let reply = server
        .send(
            server
                .client
                .post(server.url("/v1/auth/login"))
                .header("user-agent", agent)
                .json(&json!({"identifier": email, "password": PASSWORD})),
        )
        .await;
    reply.assert_status(200);
    (reply.str("access_token"), reply.str("refresh_token"))
}

async fn delete(server: &TestServer, path: &str, token: Option<&str>) -> Reply {
    let request = server.client.delete(server.url(path));
    server.send(if let Some(token) = token { request.bearer_auth(token) } else { request }).await
}

async fn sessions_of(server: &TestServer, token: &str) -> Vec<Value> {
    let reply = server.get("/v1/users/me/sessions", Some(token)).await;
    reply.assert_status(200);
    reply.body.as_array().unwrap().clone()
}

async fn refresh(server: &TestServer, refresh_token: &str) -> Reply {
    server.post("/v1/auth/refresh", None, json!({"refresh_token": refresh_token})).await
}

async fn logout_refuses_the_sessions_access_and_refresh_tokens_at_once(server: TestServer) {
    let user = server.user().await;
    let (other_access, _) = login_with_agent(&server, &user.email, "phone").await;
    // The token is verified and cached before the logout: the cache must not keep it alive.
    server.get("/v1/users/me", Some(&user.token)).await.assert_status(200);

    server.post_empty("/v1/auth/logout", Some(&user.token)).await.assert_status(204);
    server.get("/v1/users/me", Some(&user.token)).await.assert_problem(401, "UNAUTHENTICATED");
    server.get("/v1/accounts", Some(&user.token)).await.assert_problem(401, "UNAUTHENTICATED");
    refresh(&server, &user.refresh_token).await.assert_problem(401, "UNAUTHENTICATED");
    // Replayed: the ended session's token cannot log out again.
    server.post_empty("/v1/auth/logout", Some(&user.token)).await.assert_problem(401, "UNAUTHENTICATED");
    server.post_empty("/v1/auth/logout", None).await.assert_problem(401, "UNAUTHENTICATED");
    server.post_empty("/v1/auth/logout", Some("not-a-token")).await.assert_problem(401, "UNAUTHENTICATED");

    // The user's other session is untouched.
    server.get("/v1/users/me", Some(&other_access)).await.assert_status(200);
    assert_eq!(sessions_of(&server, &other_access).await.len(), 1);
    server.shutdown().await;
}

async fn sessions_are_listed_with_the_current_one_marked_and_deleting_one_ends_it(server: TestServer) {
    let user = server.user().await;
    let (laptop, _) = login_with_agent(&server, &user.email, "Laptop/1.0").await;
    let (phone, phone_refresh) = login_with_agent(&server, &user.email, "Phone/2.0").await;

    let listed = sessions_of(&server, &laptop).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let current: Vec<&Value> = listed.iter().filter(|session| session["current"] == true).collect();
    assert_eq!(current.len(), 1, "exactly the asking session is current");
    assert_eq!(current[0]["user_agent"], "Laptop/1.0");
    for session in &listed {
        assert_eq!(session["client_ip"], "127.0.0.1", "the peer address of the login");
        uuid::Uuid::parse_str(session["session_id"].as_str().unwrap()).unwrap();
        assert!(session["created_at"].as_str().unwrap().ends_with('Z'));
        assert!(session["last_activity_at"].as_str().unwrap() >= session["created_at"].as_str().unwrap());
    }
    let phone_session = listed.iter().find(|session| session["user_agent"] == "Phone/2.0").unwrap();
    let phone_id = phone_session["session_id"].as_str().unwrap().to_owned();

    server.get("/v1/users/me", Some(&phone)).await.assert_status(200);
    delete(&server, &format!("/v1/users/me/sessions/{phone_id}"), Some(&laptop)).await.assert_status(204);
    server.get("/v1/users/me", Some(&phone)).await.assert_problem(401, "UNAUTHENTICATED");
    refresh(&server, &phone_refresh).await.assert_problem(401, "UNAUTHENTICATED");
    // Deleting it again is idempotent.
    delete(&server, &format!("/v1/users/me/sessions/{phone_id}"), Some(&laptop)).await.assert_status(204);

    let listed = sessions_of(&server, &laptop).await;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|session| session["session_id"] != phone_id.as_str()));
    server.get("/v1/users/me", Some(&laptop)).await.assert_status(200);
    server.get("/v1/users/me/sessions", None).await.assert_problem(401, "UNAUTHENTICATED");
    server.shutdown().await;
}

async fn another_users_session_is_not_found_and_bad_ids_are_refused(server: TestServer) {
    let alice = server.user().await;
    let mallory = server.user().await;
    let alice_id = sessions_of(&server, &alice.token).await[0]["session_id"].as_str().unwrap().to_owned();

    delete(&server, &format!("/v1/users/me/sessions/{alice_id}"), Some(&mallory.token))
        .await
        .assert_problem(404, "NOT_FOUND");
    server.get("/v1/users/me", Some(&alice.token)).await.assert_status(200);
    delete(&server, &format!("/v1/users/me/sessions/{}", uuid::Uuid::new_v4()), Some(&mallory.token))
        .await
        .assert_problem(404, "NOT_FOUND");
    delete(&server, "/v1/users/me/sessions/not-a-uuid", Some(&mallory.token))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    delete(&server, &format!("/v1/users/me/sessions/{alice_id}"), None).await.assert_problem(401, "UNAUTHENTICATED");
    server.get("/v1/users/me", Some(&alice.token)).await.assert_status(200);
    server.shutdown().await;
}

async fn reusing_a_spent_refresh_token_ends_the_session_at_once(server: TestServer) {
    let user = server.user().await;
    let rotated = refresh(&server, &user.refresh_token).await;
    rotated.assert_status(200);
    let access = rotated.str("access_token");
    server.get("/v1/users/me", Some(&access)).await.assert_status(200);
    assert_eq!(sessions_of(&server, &access).await.len(), 1, "rotation stays within the session");

    // The spent token is presented again: someone copied it. The session ends.
    refresh(&server, &user.refresh_token).await.assert_problem(401, "UNAUTHENTICATED");
    server.get("/v1/users/me", Some(&access)).await.assert_problem(401, "UNAUTHENTICATED");
    server.get("/v1/users/me", Some(&user.token)).await.assert_problem(401, "UNAUTHENTICATED");
    refresh(&server, &rotated.str("refresh_token")).await.assert_problem(401, "UNAUTHENTICATED");
    server.shutdown().await;
}

async fn blocking_a_user_ends_every_session_at_once_and_unblocking_revives_none(server: TestServer) {
    let admin = server.admin(&["users:block"]).await;
    let user = server.user().await;
    let (second, second_refresh) = login_with_agent(&server, &user.email, "tablet").await;
    server.get("/v1/users/me", Some(&user.token)).await.assert_status(200);
    server.get("/v1/users/me", Some(&second)).await.assert_status(200);

    let path = format!("/v1/admin/users/{}/status", user.user_id);
    server
        .post(&path, Some(&admin.token), json!({"status": "blocked", "reason": "fraud review"}))
        .await
        .assert_status(204);
    server.get("/v1/users/me", Some(&user.token)).await.assert_problem(401, "UNAUTHENTICATED");
    server.get("/v1/users/me", Some(&second)).await.assert_problem(401, "UNAUTHENTICATED");
    refresh(&server, &second_refresh).await.assert_problem(401, "UNAUTHENTICATED");
    server.login(&user.email, PASSWORD).await.assert_problem(401, "UNAUTHENTICATED");

    server.post(&path, Some(&admin.token), json!({"status": "active"})).await.assert_status(204);
    server.get("/v1/users/me", Some(&second)).await.assert_problem(401, "UNAUTHENTICATED");
    let again = server.login(&user.email, PASSWORD).await;
    again.assert_status(200);
    server.get("/v1/users/me", Some(&again.str("access_token"))).await.assert_status(200);
    server.shutdown().await;
}

async fn a_login_beyond_the_per_user_bound_ends_the_oldest_session(server: TestServer) {
    let user = server.user().await;
    let mut tokens = vec![user.token.clone()];
    for n in 1..SESSIONS_PER_USER_MAX {
        tokens.push(login_with_agent(&server, &user.email, &format!("device-{n}")).await.0);
    }
    for token in &tokens {
        server.get("/v1/users/me", Some(token)).await.assert_status(200);
    }
    let newest = login_with_agent(&server, &user.email, "one-too-many").await.0;
    server.get("/v1/users/me", Some(&tokens[0])).await.assert_problem(401, "UNAUTHENTICATED");
    for token in tokens.iter().skip(1) {
        server.get("/v1/users/me", Some(token)).await.assert_status(200);
    }
    let listed = sessions_of(&server, &newest).await;
    assert_eq!(listed.len(), SESSIONS_PER_USER_MAX);
    assert!(listed.iter().all(|session| session["user_agent"] != Value::Null));
    server.shutdown().await;
}

async fn sessions_survive_a_restart_and_an_ended_one_stays_ended(server: TestServer) {
    let user = server.user().await;
    let (ended, ended_refresh) = login_with_agent(&server, &user.email, "ended").await;
    server.post_empty("/v1/auth/logout", Some(&ended)).await.assert_status(204);

    let reopened = Identity::open(open_user_store(&server.database_url).await.unwrap()).await.unwrap();
    let restarted = second_server(&server, reopened).await;
    assert_eq!(restarted.identity.sessions.in_memory(), 0, "a new process remembers nothing in memory");
    restarted.get(&server, "/v1/users/me", &user.token).await.assert_status(200);
    restarted.get(&server, "/v1/users/me", &ended).await.assert_problem(401, "UNAUTHENTICATED");
    restarted
        .post(&server, "/v1/auth/refresh", json!({"refresh_token": ended_refresh}))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    let rotated = restarted.post(&server, "/v1/auth/refresh", json!({"refresh_token": user.refresh_token})).await;
    rotated.assert_status(200);
    let listed = restarted.get(&server, "/v1/users/me/sessions", &rotated.str("access_token")).await;
    listed.assert_status(200);
    assert_eq!(listed.body.as_array().unwrap().len(), 1, "the ended session is not listed: {}", listed.text);
    assert_eq!(listed.body[0]["current"], true);
    server.shutdown().await;
}

/// A cluster node woken from a pause must not end, in the shared store, sessions another node
/// now serves: its session actors' ticks run only while it may (`Sessions::tick_only_while`).
async fn session_ticks_leave_the_store_alone_while_the_node_may_not_write(server: TestServer) {
    let user: TestUser = server.user().await;
    let clock = Arc::new(ManualClock(AtomicI64::new(SystemClock.now().as_micros())));
    // An idle time of 2 s makes the actors tick every 2 s.
    let config = SessionConfig { idle: Duration::from_secs(2), ..SessionConfig::default() };
    let stores = open_user_store(&server.database_url).await.unwrap();
    let identity =
        Identity::open_with_sessions(stores.clone(), clock.clone(), Arc::new(RandomIds), config).await.unwrap();
    let allowed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = Arc::clone(&allowed);
    identity.sessions.tick_only_while(move || gate.load(std::sync::atomic::Ordering::SeqCst));
    let timed = second_server(&server, identity).await;
    let login = timed.post(&server, "/v1/auth/login", json!({"identifier": user.email, "password": PASSWORD})).await;
    login.assert_status(200);
    let session = timed.identity.tokens.verify_session(&login.str("access_token"), clock.now()).unwrap().session;
    let revoked = || async { stores.sessions.session(session).await.unwrap().and_then(|record| record.revoked_reason) };

    // Idle by the clock, and two ticks' worth of time passes: not ended while the gate is shut.
    clock.advance(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(revoked().await, None, "a tick ended a session while the node might not write");

    // The gate opens: the next tick ends it, in the store.
    allowed.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut reason = None;
    for _ in 0..100 {
        reason = revoked().await;
        if reason.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reason.as_deref(), Some("idle"));
    server.shutdown().await;
}

async fn an_idle_session_expires_by_the_clock_and_activity_keeps_it_alive(server: TestServer) {
    let user: TestUser = server.user().await;
    let clock = Arc::new(ManualClock(AtomicI64::new(SystemClock.now().as_micros())));
    let config = SessionConfig { idle: Duration::from_secs(300), ..SessionConfig::default() };
    let stores = open_user_store(&server.database_url).await.unwrap();
    let identity =
        Identity::open_with_sessions(stores.clone(), clock.clone(), Arc::new(RandomIds), config).await.unwrap();
    let timed = second_server(&server, identity).await;

    let login = timed.post(&server, "/v1/auth/login", json!({"identifier": user.email, "password": PASSWORD})).await;
    login.assert_status(200);
    let (access, refresh_token) = (login.str("access_token"), login.str("refresh_token"));
    let session = timed.identity.tokens.verify_session(&access, clock.now()).unwrap().session;
    // Activity within the idle time keeps it alive, each time for another idle time (all of
    // it well inside the access token's 15 minutes, so only the session can refuse it).
    for _ in 0..3 {
        clock.advance(Duration::from_secs(150));
        timed.get(&server, "/v1/users/me", &access).await.assert_status(200);
    }
    clock.advance(Duration::from_secs(301));
    timed.get(&server, "/v1/users/me", &access).await.assert_problem(401, "UNAUTHENTICATED");
    timed
        .post(&server, "/v1/auth/refresh", json!({"refresh_token": refresh_token}))
        .await
        .assert_problem(401, "UNAUTHENTICATED");

    // The expiry is stored (written by the session's actor), so a restart keeps it ended.
    let mut stored_reason = None;
    for _ in 0..100 {
        stored_reason = stores.sessions.session(session).await.unwrap().and_then(|record| record.revoked_reason);
        if stored_reason.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored_reason.as_deref(), Some("idle"));
    server.shutdown().await;
}

/// Logins with the old password keep arriving while the user changes it. A login that read
/// the old password before the change stored the new one, and stored its session after the
/// change ended the sessions it found, used to keep that session (for 30 days of refreshes):
/// every access token such a login obtained must be refused once the change is done.
async fn a_login_racing_a_password_change_keeps_no_session(server: TestServer) {
    let user = server.user().await;
    let done = std::sync::atomic::AtomicBool::new(false);
    let obtained = std::sync::Mutex::new(Vec::new());
    let login_loop = || async {
        // A little past the change's answer, so that logins in flight then are counted too.
        let mut after = 0;
        while after < 4 {
            if done.load(Ordering::SeqCst) {
                after += 1;
            }
            let reply =
                server.post("/v1/auth/login", None, json!({"identifier": user.email, "password": PASSWORD})).await;
            if reply.status == 200 {
                obtained.lock().unwrap().push(reply.str("access_token"));
            }
        }
    };
    let change = async {
        // As soon as one login has its session: the race needs logins that read the old
        // password (a fixed 30 ms head start left none on a slow machine, whose first login
        // ended after the change), and the change must authenticate before the logins'
        // sessions pass the per-user bound (10) and end the oldest, its own. Its two password
        // hashes leave logins in flight.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while obtained.lock().unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "no login succeeded within 60 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let changed = server
            .post(
                "/v1/users/me/password",
                Some(&user.token),
                json!({"current_password": PASSWORD, "new_password": "An0ther!secret-entirely"}),
            )
            .await;
        done.store(true, Ordering::SeqCst);
        changed
    };
    let (changed, ..) = tokio::join!(change, login_loop(), login_loop(), login_loop(), login_loop());
    changed.assert_status(204);
    let obtained = obtained.into_inner().unwrap();
    assert!(!obtained.is_empty(), "logins before the change succeeded");
    for token in &obtained {
        server.get("/v1/users/me", Some(token)).await.assert_problem(401, "UNAUTHENTICATED");
    }
    server.shutdown().await;
}
