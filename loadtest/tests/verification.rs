//! The verification against a fake Tally with one wrong transfer: each bug loses or duplicates
//! a customer's money while every acknowledged id still exists with its acknowledged amount and
//! the test accounts' total is unchanged, so only comparing the stored transfer with the
//! request and its answer, and each account's balance with its transfers, catches it. And the
//! other way round: outcomes the load could not know (a `500`) and pending transfers (`202`)
//! must not fail an honest server's run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::config;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

const SETTLEMENT: &str = "00000000-0000-0000-0000-00000000000a";
/// The transfer (0-based) that has the bug.
const BUGGY: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    /// Acknowledged once, but executed twice: the source is debited twice, the destination
    /// credited twice, and a second transfer row (another id) is stored.
    PaidTwice,
    /// The acknowledged transfer row is stored as `completed`, but no money moved.
    NeverApplied,
    /// Acknowledged `201 completed`, then stored as `failed` with no money moved (a saga
    /// compensated after its answer).
    StoredAsFailed,
    /// The row names the requested destination, but another test account was credited.
    Misdirected,
    /// Not a bug: made and paid, but answered `500` (a node that stalled past its time-out);
    /// a replay under its key answers the transfer.
    PaidThenAnswered500,
    /// Not a bug: made and paid, but answered `500`; every replay is refused `401` (the load
    /// user's token expired meanwhile), so the outcome cannot be learnt.
    PaidThenUnanswerable,
    /// Not a bug: answered `202 pending`, the money held, not moved.
    Pending,
}

#[derive(Debug, Default)]
struct Ledger {
    balances: HashMap<String, Decimal>,
    order: Vec<String>,
    transfers: HashMap<String, Value>,
    replies: HashMap<String, (StatusCode, Value)>,
    seen: usize,
}

#[derive(Debug, Clone)]
struct Buggy {
    ledger: Arc<Mutex<Ledger>>,
    bug: Bug,
}

fn row(id: &str, source: &str, destination: &str, amount: Decimal, status: &str) -> Value {
    json!({"id": id, "status": status, "source_account_id": source,
        "destination_account_id": destination, "amount": amount.to_string()})
}

fn mv(ledger: &mut Ledger, from: &str, to: &str, amount: Decimal) {
    *ledger.balances.get_mut(from).unwrap() -= amount;
    *ledger.balances.get_mut(to).unwrap() += amount;
}

async fn start_buggy(bug: Bug) -> String {
    let mut ledger = Ledger::default();
    ledger.balances.insert(SETTLEMENT.to_owned(), Decimal::ZERO);
    let state = Buggy { ledger: Arc::new(Mutex::new(ledger)), bug };
    let app = Router::new()
        .route(
            "/v1/auth/register",
            post(|| async { (StatusCode::CREATED, Json(json!({"user_id": Uuid::new_v4().to_string()}))) }),
        )
        .route("/v1/auth/login", post(|| async { Json(json!({"access_token": "token"})) }))
        .route(
            "/v1/accounts",
            post(|State(s): State<Buggy>| async move {
                let id = Uuid::new_v4().to_string();
                let mut l = s.ledger.lock().unwrap();
                l.balances.insert(id.clone(), Decimal::ZERO);
                l.order.push(id.clone());
                (StatusCode::CREATED, Json(json!({"id": id})))
            }),
        )
        .route(
            "/v1/admin/accounts/{id}",
            get(|State(s): State<Buggy>, Path(id): Path<String>| async move {
                let b = s.ledger.lock().unwrap().balances[&id];
                Json(json!({"id": id, "balance": b.to_string()}))
            }),
        )
        .route(
            "/v1/admin/adjustments",
            post(|State(s): State<Buggy>, Json(body): Json<Value>| async move {
                let amount = Decimal::from_str(body["amount"].as_str().unwrap()).unwrap();
                let account = body["account_id"].as_str().unwrap().to_owned();
                let mut l = s.ledger.lock().unwrap();
                mv(&mut l, SETTLEMENT, &account, amount);
                let id = Uuid::new_v4().to_string();
                let t = row(&id, SETTLEMENT, &account, amount, "completed");
                l.transfers.insert(id, t.clone());
                (StatusCode::CREATED, Json(t))
            }),
        )
        .route("/v1/transfers", post(buggy_transfer))
        .route(
            "/v1/transfers/{id}",
            get(|State(s): State<Buggy>, Path(id): Path<String>| async move {
                match s.ledger.lock().unwrap().transfers.get(&id) {
                    Some(t) => (StatusCode::OK, Json(t.clone())),
                    None => (StatusCode::NOT_FOUND, Json(json!({"code": "NOT_FOUND"}))),
                }
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn buggy_transfer(
    State(s): State<Buggy>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let key = headers.get("idempotency-key").map(|k| k.to_str().unwrap().to_owned()).unwrap();
    let mut l = s.ledger.lock().unwrap();
    if let Some((status, reply)) = l.replies.get(&key) {
        return (*status, Json(reply.clone()));
    }
    let amount = Decimal::from_str(body["amount"].as_str().unwrap()).unwrap();
    let source = body["source_account_id"].as_str().unwrap().to_owned();
    let destination = body["destination_account_id"].as_str().unwrap().to_owned();
    let n = l.seen;
    l.seen += 1;
    let id = Uuid::new_v4().to_string();
    let answer = row(&id, &source, &destination, amount, "completed");
    let mut status = StatusCode::CREATED;
    // What a replay under the key answers.
    let mut replay = answer.clone();
    let stored = if n != BUGGY {
        mv(&mut l, &source, &destination, amount);
        answer.clone()
    } else {
        match s.bug {
            Bug::PaidTwice => {
                mv(&mut l, &source, &destination, amount);
                mv(&mut l, &source, &destination, amount);
                let twin = Uuid::new_v4().to_string();
                l.transfers.insert(twin.clone(), row(&twin, &source, &destination, amount, "completed"));
                answer.clone()
            }
            Bug::NeverApplied => answer.clone(),
            Bug::StoredAsFailed => row(&id, &source, &destination, amount, "failed"),
            Bug::Misdirected => {
                let other = l.order.iter().find(|a| **a != source && **a != destination).unwrap().clone();
                mv(&mut l, &source, &other, amount);
                answer.clone()
            }
            Bug::PaidThenAnswered500 | Bug::PaidThenUnanswerable => {
                mv(&mut l, &source, &destination, amount);
                let internal = json!({"code": "INTERNAL", "status": 500});
                if s.bug == Bug::PaidThenUnanswerable {
                    let expired = json!({"code": "TOKEN_EXPIRED", "status": 401});
                    l.replies.insert(key, (StatusCode::UNAUTHORIZED, expired));
                } else {
                    l.replies.insert(key, (status, replay));
                }
                l.transfers.insert(id, answer);
                return (StatusCode::INTERNAL_SERVER_ERROR, Json(internal));
            }
            Bug::Pending => {
                status = StatusCode::ACCEPTED;
                replay = row(&id, &source, &destination, amount, "pending");
                replay.clone()
            }
        }
    };
    l.transfers.insert(id, stored);
    l.replies.insert(key, (status, replay.clone()));
    let answer = if s.bug == Bug::Pending && n == BUGGY { replay } else { answer };
    (status, Json(answer))
}

async fn run_against(bug: Bug) -> tally_loadtest::report::Report {
    let url = start_buggy(bug).await;
    let cfg = config(&url, &["--rate", "20", "--duration", "1s"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    assert!(report.verification.acknowledged > BUGGY);
    report
}

/// Acknowledged once, paid twice (a second row, another id): every acknowledged id is found
/// with its amount and the total is unchanged, but the source and destination balances moved
/// by twice what their acknowledged transfers explain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_fails_when_an_acknowledged_transfer_is_paid_twice() {
    let report = run_against(Bug::PaidTwice).await;
    assert_eq!(report.ok, 20, "every request acknowledged");
    assert!(!report.verification.passed, "a transfer paid twice passed verification: {:?}", report.verification);
    assert_eq!(report.verification.balance_mismatches, 2, "{:?}", report.verification);
}

/// A row stored `completed` with the right amount, but no balance moved: its two accounts'
/// balances are off by its amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_fails_when_an_acknowledged_transfer_never_moved_money() {
    let report = run_against(Bug::NeverApplied).await;
    assert_eq!(report.ok, 20, "every request acknowledged");
    assert!(!report.verification.passed, "a transfer never applied passed verification: {:?}", report.verification);
    assert_eq!(report.verification.balance_mismatches, 2, "{:?}", report.verification);
}

/// The stored transfer's `status` is read: a `201 completed` later stored as `failed` (and no
/// money moved) fails as a wrong status and in the balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_fails_when_an_acknowledged_transfer_is_stored_as_failed() {
    let report = run_against(Bug::StoredAsFailed).await;
    assert_eq!(report.ok, 20, "every request acknowledged");
    assert!(
        !report.verification.passed,
        "a completed transfer stored as failed passed verification: {:?}",
        report.verification
    );
    assert_eq!(report.verification.wrong_status, 1, "{:?}", report.verification);
    assert!(report.verification.problems.iter().any(|p| p.contains("stored as `failed`")));
}

/// Money credited to another test account than the requested destination keeps the total
/// (and the row names the requested destination): the destination and the account credited
/// instead are off by the amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_fails_when_an_acknowledged_transfer_pays_the_wrong_account() {
    let report = run_against(Bug::Misdirected).await;
    assert_eq!(report.ok, 20, "every request acknowledged");
    assert!(!report.verification.passed, "a misdirected transfer passed verification: {:?}", report.verification);
    assert_eq!(report.verification.balance_mismatches, 2, "{:?}", report.verification);
}

/// A transfer made and paid but answered `500` is an unknown outcome, not a loss: the replay
/// under its key after the load finds it, and it is checked and accounted like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_is_resolved_by_a_replay_under_its_key() {
    let report = run_against(Bug::PaidThenAnswered500).await;
    assert_eq!((report.ok, report.errors), (19, 1), "{report:?}");
    let v = &report.verification;
    assert_eq!((v.acknowledged, v.unknown, v.resolved_applied, v.unresolved), (19, 1, 1, 0), "{v:?}");
    report.verification.verdict().unwrap();
}

/// When the replay cannot tell either (refused `401`; a `500` or `503` would be retried for
/// 30 s first), the outcome stays unresolved and is reported so; the balance checks allow for
/// it having moved money or not, so an honest server's run still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolved_outcome_is_reported_and_allowed_for_in_the_balances() {
    let report = run_against(Bug::PaidThenUnanswerable).await;
    let v = &report.verification;
    assert_eq!((v.acknowledged, v.unknown, v.resolved_applied, v.unresolved), (19, 1, 0, 1), "{v:?}");
    assert!(v.problems.iter().any(|p| p.contains("unresolved")), "{v:?}");
    report.verification.verdict().unwrap();
}

/// A `202` whose transfer is stored `pending` with no money moved is what the API promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_transfer_passes_with_its_money_not_yet_moved() {
    let report = run_against(Bug::Pending).await;
    assert_eq!(report.ok_by_status.get("202"), Some(&1), "{report:?}");
    report.verification.verdict().unwrap();
}
