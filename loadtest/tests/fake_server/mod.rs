//! A fake Tally for testing the generator itself: axum on 127.0.0.1:0 with just the routes the
//! generator uses, an injectable delay per transfer and the ability to "lose" one transfer
//! (acknowledge it, then never store it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Debug, Default)]
struct Ledger {
    balances: HashMap<String, Decimal>,
    transfers: HashMap<String, Value>,
    replies: HashMap<String, (u16, Value)>,
    transfers_seen: usize,
    /// Admin balance reads answered `503` so far (`Fault::UnavailableReads`).
    reads_refused: usize,
}

#[derive(Debug, Clone)]
pub struct Fake {
    ledger: Arc<Mutex<Ledger>>,
    delay: Duration,
    fault: Option<Fault>,
}

/// A bug the fake can be told to have, on its n-th transfer (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Acknowledged but never stored (and no money moves).
    Lose(usize),
    /// Stored, but the destination is credited twice: money is created.
    CreditTwice(usize),
    /// `Idempotency-Key` ignored: every replay pays again.
    IgnoreKeys,
    /// The first n admin balance reads are answered `503` with `Retry-After: 0`.
    UnavailableReads(usize),
}

pub const SETTLEMENT: &str = "00000000-0000-0000-0000-00000000000a";

pub struct Running {
    pub base_url: String,
    pub fake: Fake,
}

impl Fake {
    pub fn transfers_stored(&self) -> usize {
        self.ledger.lock().unwrap().transfers.len()
    }

    pub fn reads_refused(&self) -> usize {
        self.ledger.lock().unwrap().reads_refused
    }
}

/// Starts the fake on an ephemeral port.
pub async fn start(delay: Duration, fault: Option<Fault>) -> Running {
    let fake = fake(delay, fault);
    let base_url = serve(router(&fake)).await;
    Running { base_url, fake }
}

/// A fake cluster: one ledger served on `nodes` ephemeral ports (any node serves any request,
/// as Tally's nodes do), each node counting the `POST /v1/transfers` it received.
pub struct Cluster {
    pub base_urls: Vec<String>,
    pub fake: Fake,
    pub transfers_received: Vec<Arc<AtomicUsize>>,
}

pub async fn start_cluster(nodes: usize) -> Cluster {
    let fake = fake(Duration::ZERO, None);
    let mut cluster = Cluster { base_urls: Vec::new(), fake: fake.clone(), transfers_received: Vec::new() };
    for _ in 0..nodes {
        let received = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        let app = router(&fake).layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            if request.method() == Method::POST && request.uri().path() == "/v1/transfers" {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            next.run(request)
        }));
        cluster.base_urls.push(serve(app).await);
        cluster.transfers_received.push(received);
    }
    cluster
}

/// A base URL where nothing listens (a node that is down): connecting is refused.
pub async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

fn fake(delay: Duration, fault: Option<Fault>) -> Fake {
    let mut ledger = Ledger::default();
    ledger.balances.insert(SETTLEMENT.to_owned(), Decimal::ZERO);
    Fake { ledger: Arc::new(Mutex::new(ledger)), delay, fault }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base_url
}

fn router(fake: &Fake) -> Router {
    Router::new()
        .route(
            "/v1/auth/register",
            post(|| async { (StatusCode::CREATED, Json(json!({"user_id": Uuid::new_v4().to_string()}))) }),
        )
        .route("/v1/auth/login", post(|| async { Json(json!({"access_token": "token", "token_type": "Bearer"})) }))
        .route("/v1/accounts", post(open))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/admin/accounts/{id}", get(admin_account))
        .route("/v1/admin/adjustments", post(adjust))
        .route("/v1/transfers", post(transfer))
        .route("/v1/transfers/batch", post(batch))
        .route("/v1/transfers/{id}", get(get_transfer))
        .with_state(fake.clone())
}

async fn open(State(fake): State<Fake>) -> (StatusCode, Json<Value>) {
    let id = Uuid::new_v4().to_string();
    fake.ledger.lock().unwrap().balances.insert(id.clone(), Decimal::ZERO);
    (StatusCode::CREATED, Json(json!({"id": id, "balance": "0.00"})))
}

async fn account(State(fake): State<Fake>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    match fake.ledger.lock().unwrap().balances.get(&id) {
        Some(b) => (StatusCode::OK, Json(json!({"id": id, "balance": b.to_string()}))),
        None => (StatusCode::NOT_FOUND, Json(json!({"code": "NOT_FOUND"}))),
    }
}

/// An admin's read of an account, refused while `Fault::UnavailableReads` has refusals left.
async fn admin_account(State(fake): State<Fake>, Path(id): Path<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(Fault::UnavailableReads(n)) = fake.fault {
        let mut ledger = fake.ledger.lock().unwrap();
        if ledger.reads_refused < n {
            ledger.reads_refused += 1;
            let problem = json!({"code": "OVERLOADED", "status": 503});
            return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")], Json(problem)).into_response();
        }
    }
    account(State(fake), Path(id)).await.into_response()
}

fn post_transfer(ledger: &mut Ledger, source: &str, destination: &str, amount: Decimal, store: bool) -> Value {
    let id = Uuid::new_v4().to_string();
    let transfer = json!({"id": id, "status": "completed", "source_account_id": source,
        "destination_account_id": destination, "amount": amount.to_string()});
    if store {
        *ledger.balances.get_mut(source).unwrap() -= amount;
        *ledger.balances.get_mut(destination).unwrap() += amount;
        ledger.transfers.insert(id, transfer.clone());
    }
    transfer
}

async fn adjust(State(fake): State<Fake>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let amount = Decimal::from_str(body["amount"].as_str().unwrap()).unwrap();
    let account = body["account_id"].as_str().unwrap();
    let mut ledger = fake.ledger.lock().unwrap();
    (StatusCode::CREATED, Json(post_transfer(&mut ledger, SETTLEMENT, account, amount, true)))
}

/// One transfer: stored and paid unless it is the one to lose.
fn create(fake: &Fake, body: &Value) -> (u16, Value) {
    let amount = Decimal::from_str(body["amount"].as_str().unwrap()).unwrap();
    let mut ledger = fake.ledger.lock().unwrap();
    let n = ledger.transfers_seen;
    ledger.transfers_seen += 1;
    let store = fake.fault != Some(Fault::Lose(n));
    let source = body["source_account_id"].as_str().unwrap().to_owned();
    let destination = body["destination_account_id"].as_str().unwrap().to_owned();
    if fake.fault == Some(Fault::CreditTwice(n)) {
        *ledger.balances.get_mut(&destination).unwrap() += amount;
    }
    (201, post_transfer(&mut ledger, &source, &destination, amount, store))
}

async fn transfer(State(fake): State<Fake>, headers: HeaderMap, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    tokio::time::sleep(fake.delay).await;
    let key = headers.get("idempotency-key").map(|k| k.to_str().unwrap().to_owned());
    let key = key.filter(|_| fake.fault != Some(Fault::IgnoreKeys));
    let replay = key.as_ref().and_then(|k| fake.ledger.lock().unwrap().replies.get(k).cloned());
    if let Some((status, reply)) = replay {
        return (StatusCode::from_u16(status).unwrap(), Json(reply));
    }
    let (status, reply) = create(&fake, &body);
    if let Some(key) = key {
        fake.ledger.lock().unwrap().replies.insert(key, (status, reply.clone()));
    }
    (StatusCode::from_u16(status).unwrap(), Json(reply))
}

async fn batch(State(fake): State<Fake>, Json(body): Json<Value>) -> Json<Value> {
    tokio::time::sleep(fake.delay).await;
    let results: Vec<Value> = body["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let (status, transfer) = create(&fake, item);
            json!({"index": index, "status": status, "transfer": transfer})
        })
        .collect();
    Json(json!({"results": results}))
}

async fn get_transfer(State(fake): State<Fake>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    match fake.ledger.lock().unwrap().transfers.get(&id) {
        Some(t) => (StatusCode::OK, Json(t.clone())),
        None => (StatusCode::NOT_FOUND, Json(json!({"code": "NOT_FOUND", "status": 404}))),
    }
}
