//! HTTP itself over a real socket: unknown routes, wrong methods, request ids, and the `503`
//! answered while the engine is still recovering, all as problem+json.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tally_http::auth::Identity;
use tally_http::{AppState, app};
use tally_persistence::open::open_store;
use tally_persistence::open_users::open_user_store;
use tally_tests::http::{Backend, PASSWORD, TestServer};
use tally_tests::on_both_stores;

on_both_stores!(
    unknown_routes_and_wrong_methods_answer_problem_json_with_the_request_id,
    a_write_that_runs_out_of_time_answers_500_with_its_id_and_a_retry_replays_its_outcome,
);

async fn unknown_routes_and_wrong_methods_answer_problem_json_with_the_request_id(server: TestServer) {
    let unknown = server.get("/v1/nothing-here", None).await;
    unknown.assert_problem(404, "NOT_FOUND");
    let wrong_method = server.send(server.client.delete(server.url("/v1/accounts"))).await;
    wrong_method.assert_status(405);
    assert_eq!(wrong_method.headers["content-type"], "application/problem+json");
    let quote_by_get = server.get("/v1/transfers/quote", None).await;
    quote_by_get.assert_status(405);

    let traced = server.send(server.client.get(server.url("/v1/users/me")).header("x-request-id", "trace-me-42")).await;
    traced.assert_problem(401, "UNAUTHENTICATED");
    assert_eq!(traced.body["request_id"], "trace-me-42");
    assert_eq!(traced.headers["x-request-id"], "trace-me-42");
    let generated = server.get("/v1/users/me", None).await;
    assert_eq!(generated.headers["x-request-id"].to_str().unwrap(), generated.str("request_id"));
    server.shutdown().await;
}

/// A write still waiting for its commit when its time limit runs out is answered `500` "outcome
/// unknown" with its request id; once the limit is back a retry under its key answers `201`,
/// and the money moved once. The commit is held back for certain (another connection holds
/// the ledger's write lock until the `500` has arrived): a time limit alone races a fast commit
/// (a zero limit fires at the timer's next millisecond tick, and a commit on Postgres can take
/// a third of one). (Reads, `503`: `request_scope`'s unit test; most are answered from memory
/// before the limit is ever checked.)
async fn a_write_that_runs_out_of_time_answers_500_with_its_id_and_a_retry_replays_its_outcome(server: TestServer) {
    let user = server.user().await;
    let source = server.open_account(&user, "USD").await;
    let destination = server.open_account(&user, "USD").await;
    server.fund(&source, rust_decimal::Decimal::new(1_000, 2)).await;
    let body = json!({
        "type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": "2.50"
    });
    let write = |request_id: &str| {
        server
            .client
            .post(server.url("/v1/transfers"))
            .bearer_auth(&user.token)
            .header("idempotency-key", "late-write")
            .header("x-request-id", request_id)
            .json(&body)
    };

    let held = WriteLock::take(&server).await;
    server.state.set_request_timeout(std::time::Duration::from_millis(200));
    let late = server.send(write("late-write-1")).await;
    late.assert_problem(500, "INTERNAL");
    assert!(late.str("detail").contains("Idempotency-Key"), "{:?}", late.body);
    assert_eq!(late.body["request_id"], "late-write-1");
    held.release().await;

    server.state.set_request_timeout(tally_http::REQUEST_TIMEOUT);
    let again = server.send(write("late-write-2")).await;
    again.assert_status(201);
    // On a slow machine the first request may have run out before its saga began (then the
    // retry makes the transfer) rather than while it waited for its commit (then the retry
    // waits for that commit and replays it): either way, one transfer.
    if let Some(replayed) = again.headers.get("idempotent-replayed") {
        assert_eq!(replayed, "true");
    }
    assert_eq!(again.body["amount"], "2.50");
    let (balance, held) = server.position(&source).await;
    assert_eq!((balance, held), (rust_decimal::Decimal::new(750, 2), rust_decimal::Decimal::ZERO));
    server.shutdown().await;
}

/// Another connection's open transaction holding the ledger's write lock, so that the journal's
/// next commit waits (Postgres: a `SHARE` lock on `transfers`, which reads pass and inserts
/// wait for; SQLite: `BEGIN IMMEDIATE`, which readers in WAL mode pass and the journal's
/// writer waits for, then retries).
enum WriteLock {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl WriteLock {
    async fn take(server: &TestServer) -> WriteLock {
        use sqlx::Connection;
        match server.backend {
            Backend::Postgres => {
                let mut db = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
                sqlx::raw_sql("BEGIN; LOCK TABLE transfers IN SHARE MODE").execute(&mut db).await.unwrap();
                WriteLock::Postgres(db)
            }
            Backend::Sqlite => {
                let mut db = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut db).await.unwrap();
                WriteLock::Sqlite(db)
            }
        }
    }

    async fn release(self) {
        match self {
            WriteLock::Postgres(mut db) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut db).await.unwrap();
            }
            WriteLock::Sqlite(mut db) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut db).await.unwrap();
            }
        }
    }
}

/// Until the engine has recovered, money routes answer `503 OVERLOADED` with `Retry-After`,
/// while identity already works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_engine_is_ready_money_routes_answer_503() {
    let file = std::env::temp_dir().join(format!("tally-http-{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}", file.display());
    let store = open_store(&url).await.unwrap();
    let identity = Identity::open(open_user_store(&url).await.unwrap()).await.unwrap();
    let state = AppState::new(store, identity);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await });
    let client = reqwest::Client::new();

    let register = json!({"email": "early@example.com", "password": PASSWORD, "first_name": "E", "last_name": "B"});
    let registered = client.post(format!("{base}/v1/auth/register")).json(&register).send().await.unwrap();
    assert_eq!(registered.status(), 201);
    let login = json!({"identifier": "early@example.com", "password": PASSWORD});
    let tokens: serde_json::Value =
        client.post(format!("{base}/v1/auth/login")).json(&login).send().await.unwrap().json().await.unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    let open = client
        .post(format!("{base}/v1/accounts"))
        .bearer_auth(token)
        .json(&json!({"currency": "USD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 503);
    assert_eq!(open.headers()["retry-after"], "1");
    let body: serde_json::Value = open.json().await.unwrap();
    assert_eq!(body["code"], "OVERLOADED");
    server.abort();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}
