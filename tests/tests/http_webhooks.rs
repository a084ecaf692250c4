//! Webhooks against a real HTTP receiver on loopback started by the test: every committed
//! transfer's event arrives in order, signed as API.md says (the receiver checks the HMAC with
//! its own implementation), none for a refused request; a receiver answering 500 for a while
//! gets everything once it answers 200, with the attempts counted; a receiver down for longer
//! than the retry window (the clock moved 25 hours) makes the delivery `dead`, and a replay
//! delivers it; the subscription routes' answers and refusals.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tally_tests::http::{Reply, TestServer, TestUser};
use tally_tests::on_both_stores;

on_both_stores!(
    committed_transfers_arrive_in_order_signed_and_none_for_a_refused_request,
    a_receiver_failing_for_a_while_gets_everything_with_attempts_counted,
    a_receiver_down_past_the_retry_window_is_dead_then_replay_delivers,
    subscription_routes_answer_and_refuse_bad_input,
);

/// What the receiver got: (headers, raw body).
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// Answer 500 while this is above zero (counting down); `u32::MAX`: always.
    failures_left: Arc<AtomicU32>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let left = state.failures_left.load(Ordering::SeqCst);
                    if left > 0 {
                        if left != u32::MAX {
                            state.failures_left.store(left - 1, Ordering::SeqCst);
                        }
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    state.received.lock().unwrap().push((headers, body));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn bodies(&self) -> Vec<Value> {
        self.received.lock().unwrap().iter().map(|(_, body)| serde_json::from_str(body).unwrap()).collect()
    }

    /// Waits until `count` deliveries have arrived (at most 30 s).
    async fn wait_for(&self, count: usize) -> Vec<Value> {
        let started = Instant::now();
        while self.received.lock().unwrap().len() < count && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.bodies()
    }
}

/// The receiver's own check of `Tally-Signature: t=…,v1=…` over `"<t>.<raw body>"`.
fn verify_signature(secret: &str, headers: &HeaderMap, body: &str) {
    let header = headers["tally-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - t.parse::<i64>().unwrap()).abs() < 300, "timestamp within tolerance");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let expected: Vec<u8> =
        (0..v1.len() / 2).map(|at| u8::from_str_radix(&v1[2 * at..2 * at + 2], 16).unwrap()).collect();
    aws_lc_rs::hmac::verify(&key, format!("{t}.{body}").as_bytes(), &expected).expect("the HMAC matches");
}

async fn subscribe(server: &TestServer, admin: &TestUser, url: &str, events: Value) -> Reply {
    let reply = server.post("/v1/admin/webhooks", Some(&admin.token), json!({"url": url, "events": events})).await;
    reply.assert_status(201);
    reply
}

async fn transfer(server: &TestServer, user: &TestUser, from: &str, to: &str, amount: &str) -> Reply {
    server
        .post_keyed(
            "/v1/transfers",
            Some(&user.token),
            &uuid::Uuid::new_v4().to_string(),
            json!({"type": "internal", "source_account_id": from, "destination_account_id": to, "amount": amount}),
        )
        .await
}

async fn setup(server: &TestServer) -> (TestUser, TestUser, String, String) {
    let admin = server.admin(&["webhooks:manage", "events:read"]).await;
    let customer = server.user().await;
    let a = server.open_account(&customer, "USD").await;
    let b = server.open_account(&customer, "USD").await;
    server.fund(&a, dec!(100)).await;
    (admin, customer, a, b)
}

async fn committed_transfers_arrive_in_order_signed_and_none_for_a_refused_request(server: TestServer) {
    let (admin, customer, a, b) = setup(&server).await;
    let (receiver, url) = Receiver::start().await;
    let created = subscribe(&server, &admin, &url, json!(["transfer.completed", "transfer.failed"])).await;
    let secret = created.str("secret");
    assert!(secret.starts_with("whsec_"));
    let id = created.str("id");
    // The secret is shown once.
    let read = server.get(&format!("/v1/admin/webhooks/{id}"), Some(&admin.token)).await;
    read.assert_status(200);
    assert_eq!(read.body.get("secret"), None, "{}", read.text);

    let mut sent = Vec::new();
    for amount in ["1.00", "2.00", "3.00", "4.00", "5.00"] {
        let reply = transfer(&server, &customer, &a, &b, amount).await;
        reply.assert_status(201);
        sent.push(reply.str("id"));
    }
    transfer(&server, &customer, &a, &b, "1000.00").await.assert_problem(422, "INSUFFICIENT_FUNDS");
    let bodies = receiver.wait_for(sent.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bodies = if bodies.len() < receiver.bodies().len() { receiver.bodies() } else { bodies };
    let ids: Vec<&str> = bodies.iter().map(|body| body["data"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, sent.iter().map(String::as_str).collect::<Vec<_>>(), "every transfer once, in order, nothing else");
    for (headers, body) in receiver.received.lock().unwrap().iter() {
        verify_signature(&secret, headers, body);
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(headers["tally-event-id"].to_str().unwrap(), event["id"].as_str().unwrap());
        assert_eq!(headers["tally-event-type"].to_str().unwrap(), "transfer.completed");
    }
    let log = server.get(&format!("/v1/admin/webhooks/{id}/deliveries?status=delivered"), Some(&admin.token)).await;
    log.assert_status(200);
    assert_eq!(log.body["items"].as_array().unwrap().len(), sent.len());
    assert!(
        log.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["attempts"] == 1 && item["last_status_code"] == 200)
    );
    server.shutdown().await;
}

async fn a_receiver_failing_for_a_while_gets_everything_with_attempts_counted(server: TestServer) {
    let (admin, customer, a, b) = setup(&server).await;
    let (receiver, url) = Receiver::start().await;
    receiver.failures_left.store(3, Ordering::SeqCst);
    let id = subscribe(&server, &admin, &url, json!(["*"])).await.str("id");
    let mut sent = Vec::new();
    for amount in ["1.00", "2.00", "3.00"] {
        sent.push(transfer(&server, &customer, &a, &b, amount).await.str("id"));
    }
    let bodies = receiver.wait_for(3).await;
    let ids: Vec<&str> = bodies.iter().map(|body| body["data"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, sent.iter().map(String::as_str).collect::<Vec<_>>(), "in order despite the failures");
    let log = server.get(&format!("/v1/admin/webhooks/{id}/deliveries"), Some(&admin.token)).await;
    let items = log.body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{}", log.text);
    assert_eq!(items[0]["attempts"], 4, "three 500s, then 200: {}", log.text);
    assert!(items.iter().all(|item| item["status"] == "delivered"));
    assert_eq!(items[1]["attempts"], 1);
    server.shutdown().await;
}

async fn a_receiver_down_past_the_retry_window_is_dead_then_replay_delivers(server: TestServer) {
    let (admin, customer, a, b) = setup(&server).await;
    let (receiver, url) = Receiver::start().await;
    receiver.failures_left.store(u32::MAX, Ordering::SeqCst);
    let created = subscribe(&server, &admin, &url, json!(["transfer.completed"])).await;
    let id = created.str("id");
    let start = created.str("position");
    let sent = transfer(&server, &customer, &a, &b, "1.00").await.str("id");
    // The first attempt fails; then a day and an hour pass.
    let started = Instant::now();
    loop {
        let log = server.get(&format!("/v1/admin/webhooks/{id}/deliveries"), Some(&admin.token)).await;
        if log.body["items"].as_array().is_some_and(|items| !items.is_empty()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no attempt made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.clock.advance(Duration::from_secs(25 * 3600));
    // A day later the access token has expired: log in again.
    let admin = server.session_of(&admin.email, tally_tests::http::PASSWORD).await;
    let started = Instant::now();
    loop {
        let log = server.get(&format!("/v1/admin/webhooks/{id}/deliveries?status=dead"), Some(&admin.token)).await;
        if let Some(item) = log.body["items"].as_array().and_then(|items| items.first()) {
            assert_eq!(item["last_status_code"], 500);
            assert!(item["attempts"].as_u64().unwrap() >= 2);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never dead: {}", log.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(receiver.bodies().is_empty());
    // The receiver is back; replay from before the transfer.
    receiver.failures_left.store(0, Ordering::SeqCst);
    server
        .post(&format!("/v1/admin/webhooks/{id}/replay"), Some(&admin.token), json!({"after_seq": start}))
        .await
        .assert_status(202);
    let bodies = receiver.wait_for(1).await;
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["data"]["id"], sent.as_str());
    let log = server.get(&format!("/v1/admin/webhooks/{id}/deliveries?status=delivered"), Some(&admin.token)).await;
    assert_eq!(log.body["items"].as_array().unwrap().len(), 1, "{}", log.text);
    server.shutdown().await;
}

async fn subscription_routes_answer_and_refuse_bad_input(server: TestServer) {
    let admin = server.admin(&["webhooks:manage"]).await;
    for (body, field) in [
        (json!({"url": "ftp://example.com/x", "events": ["*"]}), "url"),
        (json!({"url": "not a url", "events": ["*"]}), "url"),
        (json!({"url": "http://u:p@example.com/", "events": ["*"]}), "url"),
        (json!({"url": "http://example.com/", "events": []}), "events"),
        (json!({"url": "http://example.com/", "events": ["transfer.nope"]}), "events"),
    ] {
        let reply = server.post("/v1/admin/webhooks", Some(&admin.token), body.clone()).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec![field.to_owned()], "{body}: {}", reply.text);
    }
    let id = subscribe(&server, &admin, "http://127.0.0.1:9/hook", json!(["*"])).await.str("id");
    let listed = server.get("/v1/admin/webhooks", Some(&admin.token)).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let patched =
        server.patch(&format!("/v1/admin/webhooks/{id}"), Some(&admin.token), json!({"enabled": false})).await;
    patched.assert_status(200);
    assert_eq!(patched.body["enabled"], false);
    server.get("/v1/admin/webhooks/not-a-uuid", Some(&admin.token)).await.assert_problem(400, "VALIDATION_ERROR");
    let unknown = uuid::Uuid::new_v4();
    server.get(&format!("/v1/admin/webhooks/{unknown}"), Some(&admin.token)).await.assert_problem(404, "NOT_FOUND");
    server.delete(&format!("/v1/admin/webhooks/{id}"), Some(&admin.token), None).await.assert_status(204);
    server.delete(&format!("/v1/admin/webhooks/{id}"), Some(&admin.token), None).await.assert_problem(404, "NOT_FOUND");
    server.get("/v1/admin/webhooks", None).await.assert_problem(401, "UNAUTHENTICATED");
    let other = server.admin(&["events:read"]).await;
    server.get("/v1/admin/webhooks", Some(&other.token)).await.assert_problem(403, "FORBIDDEN");
    server.shutdown().await;
}
