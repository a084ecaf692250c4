//! Crash mid-delivery: a real `tally serve` (the binary, `TALLY_BIN`) delivers webhooks to a
//! receiver on loopback that records each request as it arrives and answers 200 only after
//! a pause, so a delivery is in flight most of the time. The server is killed with SIGKILL
//! while one is, and restarted: every committed transfer's event still arrives, the one cut
//! short arrives again (at-least-once), each duplicate carries the same `Tally-Event-Id` as
//! its first copy, and after dropping duplicates every shard's events are in `seq` order.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tally_tests::postgres;
use tally_tests::server::{Client, TallyServer};

/// How long the receiver holds each delivery before answering.
const ANSWER_AFTER: Duration = Duration::from_millis(150);
const TRANSFERS_BEFORE: usize = 30;
const TRANSFERS_AFTER: usize = 5;

/// One request as it arrived: the `Tally-Event-Id` header and the body.
#[derive(Clone, Debug)]
struct Arrival {
    header_id: String,
    event: Value,
}

#[derive(Clone, Default)]
struct SlowReceiver {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    in_flight: Arc<AtomicUsize>,
}

impl SlowReceiver {
    async fn start() -> (SlowReceiver, String) {
        let receiver = SlowReceiver::default();
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    // Recorded on arrival: a receiver that has acted on the event when the
                    // sender dies before hearing the answer, the case that makes duplicates.
                    state.arrivals.lock().unwrap().push(Arrival {
                        header_id: headers["tally-event-id"].to_str().unwrap().to_owned(),
                        event: serde_json::from_str(&body).unwrap(),
                    });
                    state.in_flight.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(ANSWER_AFTER).await;
                    state.in_flight.fetch_sub(1, Ordering::SeqCst);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// The transfer ids received so far, each once.
    fn transfers(&self) -> HashSet<String> {
        self.arrivals().iter().map(|arrival| arrival.event["data"]["id"].as_str().unwrap().to_owned()).collect()
    }
}

async fn transfer(admin: &Client, from: &str, to: &str) -> String {
    let body = json!({"type": "internal", "source_account_id": from, "destination_account_id": to, "amount": "0.01"});
    let key = uuid::Uuid::new_v4().to_string();
    let (status, transfer) = admin.send(reqwest::Method::POST, "/v1/transfers", Some(body), Some(&key)).await.unwrap();
    assert_eq!(status, 201, "{transfer}");
    transfer["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_loses_no_event_and_duplicates_carry_the_same_event_id() {
    let database = postgres::fresh_database("webhook_crash").await;
    let mut server = TallyServer::start(&database, &[]).await;
    let admin = Client::admin(&server).await;
    let a = admin.open_account("USD").await;
    let b = admin.open_account("USD").await;
    admin.fund(&a, "100.00").await;
    let (receiver, url) = SlowReceiver::start().await;
    let (status, created) =
        admin.post("/v1/admin/webhooks", json!({"url": url, "events": ["transfer.completed"]})).await;
    assert_eq!(status, 201, "{created}");

    let mut sent = Vec::new();
    for _ in 0..TRANSFERS_BEFORE {
        sent.push(transfer(&admin, &a, &b).await);
    }
    // Kill while a delivery is in flight, a few deliveries in.
    let started = Instant::now();
    while receiver.arrivals().len() < 5 || receiver.in_flight.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "deliveries never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let cut = receiver.arrivals().last().unwrap().header_id.clone();
    let before_kill = receiver.arrivals().len();
    assert!(before_kill < TRANSFERS_BEFORE, "the kill came mid-stream: {before_kill} arrived");

    server.restart().await;
    let admin = Client::admin(&server).await;
    for _ in 0..TRANSFERS_AFTER {
        sent.push(transfer(&admin, &a, &b).await);
    }
    let expected: HashSet<String> = sent.iter().cloned().collect();
    let started = Instant::now();
    while !expected.is_subset(&receiver.transfers()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "missing after restart: {:?}",
            expected.difference(&receiver.transfers()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(ANSWER_AFTER * 3).await;
    let arrivals = receiver.arrivals();

    // Every copy of an event carries its id in the header and the body, and copies are the
    // same event.
    let mut first: HashMap<String, Value> = HashMap::new();
    for arrival in &arrivals {
        assert_eq!(arrival.header_id, arrival.event["id"].as_str().unwrap());
        let seen = first.entry(arrival.header_id.clone()).or_insert_with(|| arrival.event.clone());
        assert_eq!(*seen, arrival.event, "a duplicate is the same event");
    }
    // Nothing that was not committed, nothing lost.
    assert_eq!(receiver.transfers(), expected);
    let duplicates = arrivals.len() - first.len();
    assert!(
        arrivals.iter().filter(|arrival| arrival.header_id == cut).count() >= 2,
        "the delivery cut short by the kill was sent again ({duplicates} duplicates in {} arrivals)",
        arrivals.len()
    );
    // After dropping duplicates, each shard's events are in seq order.
    let mut seen = HashSet::new();
    let mut last_seq: HashMap<u64, u64> = HashMap::new();
    for arrival in &arrivals {
        if !seen.insert(arrival.header_id.clone()) {
            continue;
        }
        let (shard, seq) = (arrival.event["shard"].as_u64().unwrap(), arrival.event["seq"].as_u64().unwrap());
        let previous = last_seq.insert(shard, seq);
        assert!(previous.is_none_or(|previous| previous < seq), "shard {shard}: {previous:?} then {seq}");
    }
    eprintln!(
        "{} transfers, {} arrivals, {duplicates} duplicate(s), killed after {before_kill} arrivals",
        expected.len(),
        arrivals.len()
    );
    server.kill();
}
