//! Webhooks against a real HTTP receiver on loopback started by the test: every committed
//! transfer's event arrives in order, signed as API.md says (the receiver checks the HMAC with
//! its own implementation), none for a refused request; a receiver answering 500 for a while
//! gets everything once it answers 200, with the attempts counted; a receiver down for longer
//! than the retry window (the clock moved 25 hours) makes the delivery `dead`, and a replay
//! delivers it; the subscription routes' answers and refusals. With
//! `TALLY_WEBHOOK_DENY_PRIVATE`, private receivers are refused at create and PATCH and fail at
//! delivery (an IP literal, and a name resolved at connection time); `https` receivers with a
//! certificate from a CA the server was given are delivered to, others fail the handshake;
//! the position write is one conditional statement; the pending and delivery figures appear
//! and move in `/metrics` and `/v1/admin/actors`.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tally_http::webhooks::WebhookOptions;
use tally_persistence::events::FeedPosition;
use tally_tests::http::{Backend, Reply, TestOptions, TestServer, TestUser};
use tally_tests::on_both_stores;

on_both_stores!(
    committed_transfers_arrive_in_order_signed_and_none_for_a_refused_request,
    a_receiver_failing_for_a_while_gets_everything_with_attempts_counted,
    a_receiver_down_past_the_retry_window_is_dead_then_replay_delivers,
    subscription_routes_answer_and_refuse_bad_input,
    the_position_write_is_conditional_and_an_edit_never_moves_it,
    pending_and_delivery_figures_appear_and_move_in_metrics_and_ops,
    where_events_go_changes_only_with_the_step_up_a_new_subscription_takes,
    a_subscription_to_a_rare_type_moves_past_the_other_events,
    the_answer_showing_the_secret_is_not_cached,
    a_replay_past_the_newest_event_drops_none_that_follow,
    two_patches_of_different_fields_at_once_both_take_effect,
);

/// Scenarios that need a server with webhook options, on both stores.
macro_rules! with_options_on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod with_options_on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() { super::$scenario(tally_tests::http::Backend::Sqlite).await; }
            )*
        }
        mod with_options_on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() { super::$scenario(tally_tests::http::Backend::Postgres).await; }
            )*
        }
    };
}

with_options_on_both_stores!(
    deny_private_refuses_private_receivers_at_create_patch_and_delivery,
    https_receivers_are_delivered_to_when_their_ca_is_trusted_and_not_otherwise,
);

/// What the receiver got: (headers, raw body).
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// Answer 500 while this is above zero (counting down); `u32::MAX`: always.
    failures_left: Arc<AtomicU32>,
}

impl Receiver {
    fn router(&self) -> axum::Router {
        let state = self.clone();
        axum::Router::new().route(
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
        )
    }

    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = receiver.router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    /// The same receiver behind TLS with `certificate` (for `localhost` and 127.0.0.1); the
    /// URL names `localhost`.
    async fn start_tls(certificate: &ServerCertificate) -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = receiver.router();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der.clone()], certificate.key.clone_key())
            .unwrap();
        let listener = TlsListener {
            tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        let url = format!("https://localhost:{}/hook", listener.tcp.local_addr().unwrap().port());
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
    assert_eq!(reply.headers["location"], format!("/v1/admin/webhooks/{}", reply.str("id")).as_str());
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
    let delivered = settled_log(&server, &admin, &id, "?status=delivered", |items| items.len() == sent.len()).await;
    assert_eq!(delivered.len(), sent.len(), "{delivered:?}");
    assert!(delivered.iter().all(|item| item["attempts"] == 1 && item["last_status_code"] == 200));
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
    let items = settled_log(&server, &admin, &id, "", |items| {
        items.len() == 3 && items.iter().all(|item| item["status"] == "delivered")
    })
    .await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0]["attempts"], 4, "three 500s, then 200: {items:?}");
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
    let delivered = settled_log(&server, &admin, &id, "?status=delivered", |items| items.len() == 1).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
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

// ---- TLS ----

/// A TCP listener that completes a TLS handshake before handing the connection to axum; a
/// failed handshake (a client that does not trust the certificate) is dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, address)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A CA made for the test: its certificate (PEM, what the server is told to trust) and what
/// signs server certificates.
struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

struct ServerCertificate {
    der: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        TestCa { pem: certificate.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    fn server_certificate(&self) -> ServerCertificate {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        ServerCertificate {
            der: certificate.der().clone(),
            key: rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

/// The delivery log (`query` appended to its path) once `settled` holds for its items: a
/// receiver's answer reaches the log when the task settles its run (at most ~100 ms later,
/// docs/events.md), so a test reads it when it is there, waiting at most 20 s.
async fn settled_log(
    server: &TestServer,
    admin: &TestUser,
    id: &str,
    query: &str,
    settled: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let log = server.get(&format!("/v1/admin/webhooks/{id}/deliveries{query}"), Some(&admin.token)).await;
        log.assert_status(200);
        let items = log.body["items"].as_array().unwrap().clone();
        if settled(&items) || started.elapsed() > Duration::from_secs(20) {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deliveries(server: &TestServer, admin: &TestUser, id: &str) -> Vec<Value> {
    let log = server.get(&format!("/v1/admin/webhooks/{id}/deliveries"), Some(&admin.token)).await;
    log.assert_status(200);
    log.body["items"].as_array().unwrap().clone()
}

/// Waits until the subscription's first delivery has failed at least once; its log entry.
async fn first_failure(server: &TestServer, admin: &TestUser, id: &str) -> Value {
    let started = Instant::now();
    loop {
        if let Some(item) = deliveries(server, admin, id).await.into_iter().next() {
            return item;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no attempt made for {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn https_receivers_are_delivered_to_when_their_ca_is_trusted_and_not_otherwise(backend: Backend) {
    let trusted = TestCa::new("Tally test CA");
    let stranger = TestCa::new("Some other CA");
    let options = TestOptions {
        webhooks: WebhookOptions { extra_ca_pem: Some(trusted.pem.clone().into_bytes()), ..WebhookOptions::default() },
        ..TestOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let (admin, customer, a, b) = setup(&server).await;
    let (receiver, url) = Receiver::start_tls(&trusted.server_certificate()).await;
    let (refused, refused_url) = Receiver::start_tls(&stranger.server_certificate()).await;
    assert!(url.starts_with("https://localhost:"));
    let created = subscribe(&server, &admin, &url, json!(["transfer.completed"])).await;
    let secret = created.str("secret");
    let untrusted = subscribe(&server, &admin, &refused_url, json!(["transfer.completed"])).await.str("id");
    let sent = transfer(&server, &customer, &a, &b, "1.00").await.str("id");

    let bodies = receiver.wait_for(1).await;
    assert_eq!(bodies.len(), 1, "delivered over TLS");
    assert_eq!(bodies[0]["data"]["id"], sent.as_str());
    let (headers, body) = receiver.received.lock().unwrap()[0].clone();
    verify_signature(&secret, &headers, &body);

    // A certificate from a CA the server does not trust: the handshake fails, the delivery is
    // retried with the reason in the log, and that receiver gets nothing.
    let failed = first_failure(&server, &admin, &untrusted).await;
    assert_eq!(failed["status"], "pending", "{failed}");
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("certificate") || error.contains("UnknownIssuer"), "a certificate error: {error}");
    assert!(refused.bodies().is_empty());
    server.shutdown().await;
}

async fn deny_private_refuses_private_receivers_at_create_patch_and_delivery(backend: Backend) {
    let options = TestOptions {
        webhooks: WebhookOptions { deny_private: true, ..WebhookOptions::default() },
        ..TestOptions::default()
    };
    let server = TestServer::start_with(backend, options).await;
    let (admin, customer, a, b) = setup(&server).await;
    let (receiver, url) = Receiver::start().await;
    let port = url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hook").to_owned();
    for private in [
        url.clone(),
        format!("http://localhost:{port}/hook"),
        "http://10.1.2.3/hook".to_owned(),
        "http://172.16.0.1/hook".to_owned(),
        "http://192.168.1.1/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://0.0.0.0/hook".to_owned(),
        "http://100.64.0.1/hook".to_owned(),
        "http://[::1]/hook".to_owned(),
        "http://[::ffff:127.0.0.1]/hook".to_owned(),
        "http://[fd00::1]/hook".to_owned(),
        "http://[fe80::1]/hook".to_owned(),
        "https://nothing.invalid/hook".to_owned(),
    ] {
        let reply =
            server.post("/v1/admin/webhooks", Some(&admin.token), json!({"url": private, "events": ["*"]})).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec!["url".to_owned()], "{private}: {}", reply.text);
    }
    // A public address is accepted (an IP literal: no resolver needed), and a PATCH to a
    // private one refused, leaving the URL as it was.
    let public = subscribe(&server, &admin, "http://93.184.215.14/hook", json!(["account.opened"])).await.str("id");
    let patched = server.patch(&format!("/v1/admin/webhooks/{public}"), Some(&admin.token), json!({"url": url})).await;
    patched.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(patched.error_fields(), vec!["url".to_owned()]);
    let read = server.get(&format!("/v1/admin/webhooks/{public}"), Some(&admin.token)).await;
    assert_eq!(read.body["url"], "http://93.184.215.14/hook");
    server
        .patch(&format!("/v1/admin/webhooks/{public}"), Some(&admin.token), json!({"enabled": false}))
        .await
        .assert_status(200);

    // At delivery: subscriptions that point at the loopback receiver anyway (made before the
    // setting was on, or a name whose answer changed since: written here behind the API's
    // back) fail every attempt and reach nothing, by IP literal and by name alike.
    let store = server.state.identity().events.clone();
    let mut ids = Vec::new();
    for target in [url.clone(), format!("http://localhost:{port}/hook")] {
        let id = subscribe(&server, &admin, "http://93.184.215.14/hook", json!(["transfer.completed"])).await.str("id");
        let mut subscription = store.subscription(id.parse().unwrap()).await.unwrap().unwrap();
        subscription.url = target;
        assert!(store.update_subscription(&subscription, None).await.unwrap());
        ids.push(id);
    }
    transfer(&server, &customer, &a, &b, "1.00").await.assert_status(201);
    for (id, expected) in ids.iter().zip(["127.0.0.1 is a private address", "resolves to 127.0.0.1"]) {
        let failed = first_failure(&server, &admin, id).await;
        assert_eq!(failed["status"], "pending");
        assert_eq!(failed["last_status_code"], Value::Null);
        let error = failed["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(expected) && error.contains("TALLY_WEBHOOK_DENY_PRIVATE"), "{id}: {error}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.bodies().is_empty(), "nothing reached the private receiver");
    server.shutdown().await;
}

async fn the_position_write_is_conditional_and_an_edit_never_moves_it(server: TestServer) {
    let admin = server.admin(&["webhooks:manage"]).await;
    // Disabled at once: no task moves the position under this test.
    let id = subscribe(&server, &admin, "http://127.0.0.1:9/hook", json!(["*"])).await.str("id");
    server.patch(&format!("/v1/admin/webhooks/{id}"), Some(&admin.token), json!({"enabled": false})).await;
    let uuid: uuid::Uuid = id.parse().unwrap();
    let store = server.state.identity().events.clone();
    let start = store.subscription(uuid).await.unwrap().unwrap().position;

    // The task's write against a position that a replay has moved meanwhile: nothing written.
    assert!(store.set_position(uuid, "0:7", None, None).await.unwrap(), "a replay writes unconditionally");
    assert!(
        !store.set_position(uuid, "0:9", Some(&start), None).await.unwrap(),
        "a stale compare-and-set writes nothing"
    );
    assert_eq!(store.subscription(uuid).await.unwrap().unwrap().position, "0:7");
    assert!(store.set_position(uuid, "0:9", Some("0:7"), None).await.unwrap());
    assert_eq!(store.subscription(uuid).await.unwrap().unwrap().position, "0:9");

    // An edit carries the position it read; it is not written (the task's progress stands).
    let mut stale = store.subscription(uuid).await.unwrap().unwrap();
    stale.position = start.clone();
    stale.description = Some("edited".to_owned());
    assert!(store.update_subscription(&stale, None).await.unwrap());
    let now = store.subscription(uuid).await.unwrap().unwrap();
    assert_eq!((now.position.as_str(), now.description.as_deref()), ("0:9", Some("edited")));
    // Through the API: PATCH keeps it, replay moves it.
    server
        .patch(&format!("/v1/admin/webhooks/{id}"), Some(&admin.token), json!({"events": ["transfer.completed"]}))
        .await;
    assert_eq!(server.get(&format!("/v1/admin/webhooks/{id}"), Some(&admin.token)).await.body["position"], "0:9");
    server
        .post(&format!("/v1/admin/webhooks/{id}/replay"), Some(&admin.token), json!({"after_seq": 3}))
        .await
        .assert_status(202);
    let replayed_text = server.get(&format!("/v1/admin/webhooks/{id}"), Some(&admin.token)).await.str("position");
    let replayed = FeedPosition::parse(&replayed_text).unwrap();
    assert!(replayed.shards.iter().all(|(_, seq)| *seq == 3), "{replayed:?}");
    assert!(!replayed.shards.is_empty() || replayed.default_after == 3, "{replayed:?}");
    assert!(!store.set_position(uuid::Uuid::new_v4(), "1", None, None).await.unwrap(), "unknown subscription");

    // A settled run: its delivery rows and the position after it, in one transaction, the
    // position by compare-and-set. Stale: nothing at all is written, not even the rows.
    let delivered = |seq: u64| tally_persistence::events::webhooks::Delivery {
        shard: 0,
        seq,
        status: tally_persistence::events::webhooks::DeliveryStatus::Delivered,
        attempts: 1,
        last_status_code: Some(200),
        last_error: None,
        first_attempt_at: tally_engine::Timestamp::from_micros(1),
        next_attempt_at: None,
        delivered_at: Some(tally_engine::Timestamp::from_micros(2)),
    };
    let run = [delivered(4), delivered(5)];
    assert!(!store.settle(uuid, &run, "5", "0:9").await.unwrap(), "a stale run writes nothing");
    assert_eq!(store.subscription(uuid).await.unwrap().unwrap().position, replayed_text);
    assert!(store.delivery(uuid, 0, 4).await.unwrap().is_none(), "nor its delivery rows");
    assert!(store.settle(uuid, &run, "5", &replayed_text).await.unwrap());
    assert_eq!(store.subscription(uuid).await.unwrap().unwrap().position, "5");
    assert_eq!(store.delivery(uuid, 0, 4).await.unwrap(), Some(delivered(4)));
    assert_eq!(store.delivery(uuid, 0, 5).await.unwrap(), Some(delivered(5)));
    server.shutdown().await;
}

/// One sample's value of `name{labels}` in Prometheus text (labels as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn pending_and_delivery_figures_appear_and_move_in_metrics_and_ops(server: TestServer) {
    let (admin, customer, a, b) = setup(&server).await;
    let ops = server.admin(&["ops:read"]).await;
    let (receiver, url) = Receiver::start().await;
    receiver.failures_left.store(u32::MAX, Ordering::SeqCst);
    subscribe(&server, &admin, &url, json!(["transfer.completed"])).await;
    let delivered_before =
        sample(&server.get("/metrics", None).await.text, "tally_webhook_deliveries_total{outcome=\"delivered\"}")
            .unwrap_or(0.0);
    for amount in ["1.00", "2.00", "3.00"] {
        transfer(&server, &customer, &a, &b, amount).await.assert_status(201);
    }
    // The receiver answers 500: three events pending, the oldest ageing, failures counted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = server.get("/metrics", None).await;
    metrics.assert_status(200);
    assert_eq!(sample(&metrics.text, "tally_webhook_pending_events{state=\"enabled\"}"), Some(3.0), "{}", metrics.text);
    assert_eq!(sample(&metrics.text, "tally_webhook_subscriptions{state=\"enabled\"}"), Some(1.0));
    let oldest = sample(&metrics.text, "tally_webhook_oldest_pending_seconds").unwrap();
    assert!(oldest >= 1.0, "the oldest pending event is over a second old: {oldest}");
    assert!(sample(&metrics.text, "tally_webhook_deliveries_total{outcome=\"failed\"}").unwrap_or(0.0) >= 1.0);
    let actors = server.get("/v1/admin/actors", Some(&ops.token)).await;
    actors.assert_status(200);
    let webhooks = &actors.body["webhooks"];
    assert_eq!((webhooks["subscriptions"].as_u64(), webhooks["pending"].as_u64()), (Some(1), Some(3)), "{webhooks}");
    assert!(webhooks["oldest_pending_seconds"].as_f64().unwrap() >= 1.0);
    assert!(webhooks["failed"].as_u64().unwrap() >= 1);

    // The receiver recovers: nothing pending, the delivered counter up by three at least.
    receiver.failures_left.store(0, Ordering::SeqCst);
    assert_eq!(receiver.wait_for(3).await.len(), 3);
    let started = Instant::now();
    loop {
        let metrics = server.get("/metrics", None).await.text;
        if sample(&metrics, "tally_webhook_pending_events{state=\"enabled\"}") == Some(0.0) {
            assert_eq!(sample(&metrics, "tally_webhook_oldest_pending_seconds"), Some(0.0));
            let delivered = sample(&metrics, "tally_webhook_deliveries_total{outcome=\"delivered\"}").unwrap();
            assert!(delivered >= delivered_before + 3.0, "{delivered_before} → {delivered}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still pending: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let webhooks = server.get("/v1/admin/actors", Some(&ops.token)).await.body["webhooks"].clone();
    assert_eq!(webhooks["pending"], 0, "{webhooks}");
    assert!(webhooks["delivered"].as_u64().unwrap() >= 3);
    server.shutdown().await;
}

/// An admin with TOTP on needs the `webhooks.manage` step-up to subscribe, and as much to send
/// events somewhere new: a new `url`, or a replay from the beginning. Without it a stolen
/// bearer token could point an existing subscription at itself and replay every event.
async fn where_events_go_changes_only_with_the_step_up_a_new_subscription_takes(server: TestServer) {
    let admin = server.admin(&["webhooks:manage"]).await;
    let (secret, _) = tally_tests::mfa::enable_totp(&server, &admin).await;
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]});
    server.post("/v1/admin/webhooks", Some(&admin.token), body.clone()).await.assert_problem(403, "STEP_UP_REQUIRED");
    let stepped_up = |request: reqwest::RequestBuilder, token: String| {
        server.send(request.bearer_auth(&admin.token).header("x-step-up-token", token))
    };
    let token = tally_tests::mfa::step_up(&server, &admin, &secret, "webhooks.manage").await;
    let made = stepped_up(server.client.post(server.url("/v1/admin/webhooks")).json(&body), token).await;
    made.assert_status(201);
    let path = format!("/v1/admin/webhooks/{}", made.str("id"));

    let elsewhere = json!({"url": "http://127.0.0.1:10/stolen"});
    server.patch(&path, Some(&admin.token), elsewhere.clone()).await.assert_problem(403, "STEP_UP_REQUIRED");
    let replay = json!({"after_seq": 0});
    server
        .post(&format!("{path}/replay"), Some(&admin.token), replay.clone())
        .await
        .assert_problem(403, "STEP_UP_REQUIRED");
    let read = server.get(&path, Some(&admin.token)).await;
    read.assert_status(200);
    assert_eq!(read.str("url"), "http://127.0.0.1:9/hook", "unchanged");

    let token = tally_tests::mfa::step_up(&server, &admin, &secret, "webhooks.manage").await;
    stepped_up(server.client.patch(server.url(&path)).json(&elsewhere), token).await.assert_status(200);
    let token = tally_tests::mfa::step_up(&server, &admin, &secret, "webhooks.manage").await;
    stepped_up(server.client.post(server.url(&format!("{path}/replay"))).json(&replay), token).await.assert_status(202);
    server.shutdown().await;
}

/// A subscription to a type nothing makes for a while moves its position past the events of
/// other types it read through (it used to read all of them again on every poll, and count
/// them in its backlog), and still delivers the first event of its type, once.
async fn a_subscription_to_a_rare_type_moves_past_the_other_events(server: TestServer) {
    let (admin, customer, a, b) = setup(&server).await;
    let (receiver, url) = Receiver::start().await;
    let id = subscribe(&server, &admin, &url, json!(["account.status_changed"])).await.str("id");
    let path = format!("/v1/admin/webhooks/{id}");
    let start = server.get(&path, Some(&admin.token)).await.str("position");
    for _ in 0..3 {
        transfer(&server, &customer, &a, &b, "1.00").await.assert_status(201);
    }
    let (_, end) = {
        let page = server.get("/v1/admin/events?after=0&limit=1000", Some(&admin.token)).await;
        (page.body["items"].as_array().unwrap().len(), page.str("next_after"))
    };
    let end = FeedPosition::parse(&end).unwrap();
    let past_end = |text: &str| {
        let position = FeedPosition::parse(text).unwrap();
        end.shards.iter().all(|(shard, seq)| position.after(*shard) >= *seq)
    };
    assert!(!past_end(&start));
    let began = Instant::now();
    let mut position = start.clone();
    while !past_end(&position) && began.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        position = server.get(&path, Some(&admin.token)).await.str("position");
    }
    assert!(past_end(&position), "{position}, from {start}, is past every event of another type");
    assert!(receiver.bodies().is_empty(), "nothing of another type delivered");

    let staff = server.admin(&["accounts:close"]).await;
    let block = json!({"action": "block", "reason": "test"});
    server.post(&format!("/v1/admin/accounts/{b}/status"), Some(&staff.token), block).await.assert_status(204);
    let bodies = receiver.wait_for(1).await;
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["type"], "account.status_changed");
    assert_eq!(bodies[0]["data"]["id"], b.as_str());

    // A replay from a bare seq names every shard at it: the task's next write, naming only
    // the shards it delivered from, kept the others at the beginning and sent their history.
    server.post(&format!("{path}/replay"), Some(&admin.token), json!({"after_seq": 1})).await.assert_status(202);
    let replayed = FeedPosition::parse(&server.get(&path, Some(&admin.token)).await.str("position")).unwrap();
    for (shard, _) in &end.shards {
        assert!(replayed.after(*shard) >= 1, "shard {shard} in {replayed:?}");
        assert!(replayed.shards.iter().any(|(named, _)| named == shard), "shard {shard} named in {replayed:?}");
    }
    server.shutdown().await;
}

/// Every answer that shows a secret once says `Cache-Control: no-store`; the webhook's create
/// answer did not (found by a review), so a browser (the admin console) or a proxy could keep it.
async fn the_answer_showing_the_secret_is_not_cached(server: TestServer) {
    let admin = server.admin(&["webhooks:manage"]).await;
    let created = subscribe(&server, &admin, "http://127.0.0.1:9/hook", json!(["*"])).await;
    assert!(created.str("secret").starts_with("whsec_"));
    assert_eq!(created.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let read = server.get(&format!("/v1/admin/webhooks/{}", created.str("id")), Some(&admin.token)).await;
    assert!(read.body.get("secret").is_none(), "never shown again: {}", read.text);
    server.shutdown().await;
}

/// A replay to a seq past the newest event was stored as the position as given (`202`), and
/// every event committed later up to that seq was silently never delivered (found by a
/// review). Past a shard's newest event it is now clamped to it: nothing old to replay there,
/// and the new events go out.
async fn a_replay_past_the_newest_event_drops_none_that_follow(server: TestServer) {
    let (admin, customer, a, b) = setup(&server).await;
    let (receiver, url) = Receiver::start().await;
    let id = subscribe(&server, &admin, &url, json!(["transfer.completed"])).await.str("id");
    transfer(&server, &customer, &a, &b, "1.00").await.assert_status(201);
    let before = receiver.wait_for(1).await;
    assert_eq!(before.len(), 1, "the first transfer is delivered");
    let replay = server
        .post(&format!("/v1/admin/webhooks/{id}/replay"), Some(&admin.token), json!({"after_seq": 1_000_000_000_u64}))
        .await;
    replay.assert_status(202);
    let position = server.get(&format!("/v1/admin/webhooks/{id}"), Some(&admin.token)).await.str("position");
    assert!(!position.contains("1000000000"), "clamped to the newest events: {position}");
    let sent = transfer(&server, &customer, &a, &b, "2.00").await;
    sent.assert_status(201);
    let bodies = receiver.wait_for(2).await;
    assert_eq!(bodies.len(), 2, "the transfer after the replay is delivered (position {position})");
    assert_eq!(bodies[1]["data"]["id"], sent.body["id"]);
    server.shutdown().await;
}

/// A PATCH read the subscription, changed the fields given and wrote every field back, so two
/// PATCHes of different fields at once (one admin disables it, another moves its URL) each
/// answered `200` with its change while one change was lost: a disable answered `"enabled":
/// false` could leave it enabled (found by a review). They now take turns.
async fn two_patches_of_different_fields_at_once_both_take_effect(server: TestServer) {
    let one = server.admin(&["webhooks:manage"]).await;
    let other = server.admin(&["webhooks:manage"]).await;
    let mut lost = Vec::new();
    for round in 0..20 {
        let id = subscribe(&server, &one, "http://127.0.0.1:9/a", json!(["*"])).await.str("id");
        let path = format!("/v1/admin/webhooks/{id}");
        let new_url = format!("http://127.0.0.1:9/b{round}");
        let (disabled, moved) = tokio::join!(
            server.patch(&path, Some(&one.token), json!({"enabled": false})),
            server.patch(&path, Some(&other.token), json!({"url": new_url})),
        );
        disabled.assert_status(200);
        moved.assert_status(200);
        let now = server.get(&path, Some(&one.token)).await;
        if now.body["enabled"] != false || now.body["url"] != new_url.as_str() {
            lost.push(now.text.clone());
        }
    }
    assert!(lost.is_empty(), "{} of 20 rounds lost a change: {:#?}", lost.len(), lost);
    server.shutdown().await;
}
