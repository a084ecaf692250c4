//! Pending expiry (issue 15 item 6, docs/ledger-views.md "Pending expiry") against a real
//! `tally serve` process on SQLite and on Postgres, its engine clock moved forward through the
//! test clock (`TALLY_TEST_CLOCK=enabled`, `TALLY_TEST_CLOCK_OFFSET_FILE`):
//! - a pending transfer ends `expired` at its own `pending_expires_in`, or its type's
//!   `pending_timeout_secs`, with its hold released, the balances exact, a `transfer.expired`
//!   event written, and the listings showing it; decisions after that are `409`;
//! - bad `pending_expires_in` / `pending_timeout_secs` are `400` on that field and change
//!   nothing; the field is part of the idempotency fingerprint; batch items refuse it;
//! - an admin's execute racing the expiry, many times: one outcome each time, money moved once;
//! - across `kill -9`: the overdue transfer expires after the restart, the one not yet due later.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tally_tests::server::{Client, TallyServer, tally_check};

const IBAN: &str = "DE89 3704 0044 0532 0130 00";

/// The engine's clock offset, written where the server reads it.
struct TestClock {
    file: PathBuf,
    offset_secs: i64,
}

impl TestClock {
    fn new() -> TestClock {
        let file = std::env::temp_dir().join(format!("tally-clock-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, "0").expect("clock file");
        TestClock { file, offset_secs: 0 }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TALLY_TEST_CLOCK", "enabled".to_owned()),
            ("TALLY_TEST_CLOCK_OFFSET_FILE", self.file.display().to_string()),
        ]
    }

    /// Moves the server's engine clock forward and waits until it has read the file (it polls
    /// every 50 ms).
    async fn advance(&mut self, secs: i64) {
        self.offset_secs += secs;
        std::fs::write(&self.file, self.offset_secs.to_string()).expect("clock file");
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
}

impl Drop for TestClock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

async fn start(database_url: &str, clock: &TestClock) -> TallyServer {
    let env = clock.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TallyServer::start(database_url, &pairs).await
}

fn sqlite_url(name: &str) -> (String, PathBuf) {
    let file = std::env::temp_dir().join(format!("tally-expiry-{name}-{}.db", uuid::Uuid::new_v4().simple()));
    (format!("sqlite://{}", file.display()), file)
}

fn remove_sqlite(file: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

fn external(source: &str, amount: &str, expires_in: Option<Value>) -> Value {
    let mut body = json!({"type": "external", "source_account_id": source,
                          "beneficiary": {"name": "Grace Hopper", "iban": IBAN}, "amount": amount});
    if let Some(expires_in) = expires_in {
        body["pending_expires_in"] = expires_in;
    }
    body
}

async fn put_type(admin: &Client, code: &str, body: Value) -> (u16, Value) {
    admin.send(Method::PUT, &format!("/v1/admin/transfer-types/{code}"), Some(body), None).await.expect("request")
}

async fn account(admin: &Client, id: &str) -> (Decimal, Decimal) {
    let (status, body) = admin.get(&format!("/v1/accounts/{id}")).await;
    assert_eq!(status, 200, "{body}");
    (body["balance"].as_str().unwrap().parse().unwrap(), body["held"].as_str().unwrap().parse().unwrap())
}

async fn transfer(admin: &Client, id: &str) -> Value {
    let (status, body) = admin.get(&format!("/v1/transfers/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls until the transfer leaves `pending` (the sweeper ticks every 250 ms), or 10 s pass.
async fn settled(admin: &Client, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let body = transfer(admin, id).await;
        if body["status"] != "pending" || started.elapsed() > Duration::from_secs(10) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A read of the store (listings, counts, the event feed) once `done` holds, or after 10 s:
/// a transfer's own view reads the journal, so it shows a state a moment before the store's
/// commit does.
async fn committed(admin: &Client, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = admin.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        if done(&body) || started.elapsed() > Duration::from_secs(10) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn items(body: &Value) -> usize {
    body["items"].as_array().map_or(0, Vec::len)
}

/// The pending transfers waiting for their deadline, as operators see them: the gauge in
/// `/metrics` and the figure in `/v1/admin/actors`, which must agree.
async fn expiries_scheduled(server: &TallyServer, admin: &Client) -> u64 {
    let text = reqwest::get(format!("{}/metrics", server.base_url())).await.unwrap().text().await.unwrap();
    let gauge = text
        .lines()
        .find_map(|line| line.strip_prefix("tally_pending_expiries_scheduled "))
        .unwrap_or_else(|| panic!("no tally_pending_expiries_scheduled in /metrics:\n{text}"));
    let (status, actors) = admin.get("/v1/admin/actors").await;
    assert_eq!(status, 200, "{actors}");
    let figure = actors["sagas"]["pending_expiries_scheduled"].as_u64().unwrap();
    assert_eq!(gauge.trim().parse::<f64>().unwrap(), figure as f64, "{text}\n{actors}");
    figure
}

fn micros(rfc3339: &Value) -> i128 {
    let text = rfc3339.as_str().unwrap_or_else(|| panic!("a time, not {rfc3339}"));
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("rfc 3339");
    parsed.unix_timestamp_nanos() / 1_000
}

// ---- on time, with the type's timeout and the transfer's own ----------------------------------

async fn expires_on_time(database_url: &str) {
    let mut clock = TestClock::new();
    let server = start(database_url, &clock).await;
    let admin = Client::admin(&server).await;
    let source = admin.open_account("USD").await;
    let destination = admin.open_account("USD").await;
    admin.fund(&source, "1000.00").await;

    // The type's timeout: set, persisted, shown in both listings.
    let (status, body) = put_type(
        &admin,
        "external",
        json!({"enabled": true, "execution_mode": "manual", "pending_timeout_secs": 3600}),
    )
    .await;
    assert_eq!((status, body["pending_timeout_secs"].as_u64()), (200, Some(3600)), "{body}");
    let (_, listed) = admin.get("/v1/admin/transfer-types").await;
    assert_eq!(listed["items"][1]["pending_timeout_secs"], 3600, "{listed}");
    let (_, public) = admin.get("/v1/transfer-types").await;
    assert_eq!(public[1]["pending_timeout_secs"], 3600, "{public}");
    assert_eq!(public[0]["pending_timeout_secs"], Value::Null, "internal never expires");

    // Its own 120 s wins over the type's hour; the other takes the type's.
    let (status, own) = admin.post("/v1/transfers", external(&source, "100.00", Some(json!(120)))).await;
    assert_eq!(status, 202, "{own}");
    let (status, typed) = admin.post("/v1/transfers", external(&source, "50.00", None)).await;
    assert_eq!(status, 202, "{typed}");
    assert_eq!(micros(&own["pending_expires_at"]) - micros(&own["created_at"]), 120_000_000, "{own}");
    assert_eq!(micros(&typed["pending_expires_at"]) - micros(&typed["created_at"]), 3_600_000_000, "{typed}");
    // A transfer that completes at once never expires, whatever it asked for.
    let (status, completed) = admin
        .post(
            "/v1/transfers",
            json!({"type": "internal", "source_account_id": source, "destination_account_id": destination,
                   "amount": "10.00", "pending_expires_in": 60}),
        )
        .await;
    assert_eq!((status, &completed["pending_expires_at"]), (201, &Value::Null), "{completed}");
    // Batch items (plain and atomic) take their type's timeout.
    let mut batched = Vec::new();
    for atomic in [false, true] {
        let (status, body) = admin
            .post("/v1/transfers/batch", json!({"atomic": atomic, "transfers": [external(&source, "1.00", None)]}))
            .await;
        let item = &body["results"][0]["transfer"];
        assert_eq!(
            (status, body["results"][0]["status"].as_u64(), item["status"].as_str()),
            (200, Some(202), Some("pending")),
            "atomic {atomic}: {body}"
        );
        assert_eq!(micros(&item["pending_expires_at"]) - micros(&item["created_at"]), 3_600_000_000, "{body}");
        batched.push(item["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(account(&admin, &source).await, ("990.00".parse().unwrap(), "152.00".parse().unwrap()));
    assert_eq!(expiries_scheduled(&server, &admin).await, 4, "own, typed and two batch items wait");
    // A decision takes its transfer out of the queue at once, not at its deadline.
    let (status, decided) = admin.post("/v1/transfers", external(&source, "5.00", Some(json!(600)))).await;
    assert_eq!(status, 202, "{decided}");
    assert_eq!(expiries_scheduled(&server, &admin).await, 5);
    let decided_id = decided["id"].as_str().unwrap();
    let (status, body) = admin.post(&format!("/v1/admin/transfers/{decided_id}/reject"), json!({})).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(expiries_scheduled(&server, &admin).await, 4, "the rejected transfer left the queue");
    assert_eq!(account(&admin, &source).await, ("990.00".parse().unwrap(), "152.00".parse().unwrap()));

    let own_id = own["id"].as_str().unwrap();
    let typed_id = typed["id"].as_str().unwrap();
    // Not yet: 119 s on, both wait.
    clock.advance(119).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(transfer(&admin, own_id).await["status"], "pending");

    clock.advance(2).await;
    let expired = settled(&admin, own_id).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    assert_eq!(expired["pending_reason"], Value::Null);
    assert!(expired["completed_at"].is_string(), "{expired}");
    assert_eq!(transfer(&admin, typed_id).await["status"], "pending", "the type's hour has not passed");
    assert_eq!(expiries_scheduled(&server, &admin).await, 3);
    // The hold is released exactly; nothing was debited.
    assert_eq!(account(&admin, &source).await, ("990.00".parse().unwrap(), "52.00".parse().unwrap()));
    // Decided: every decision is refused as for any decided transfer, and nothing moves.
    for (path, code) in [
        (format!("/v1/admin/transfers/{own_id}/execute"), "NOT_PENDING"),
        (format!("/v1/admin/transfers/{own_id}/reject"), "NOT_PENDING"),
        (format!("/v1/transfers/{own_id}/cancel"), "NOT_CANCELLABLE"),
    ] {
        let (status, body) = admin.post(&path, json!({})).await;
        assert_eq!((status, body["code"].as_str()), (409, Some(code)), "{path}: {body}");
    }
    assert_eq!(account(&admin, &source).await, ("990.00".parse().unwrap(), "52.00".parse().unwrap()));

    // The listings know `expired`, and the event was written.
    for path in ["/v1/transfers?status=expired", "/v1/admin/transfers?status=expired"] {
        let page = committed(&admin, path, |page| items(page) >= 1).await;
        let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![own_id], "{path}");
    }
    let count = committed(&admin, "/v1/admin/transfers/count?status=expired", |count| count["count"] == 1).await;
    assert_eq!(count["count"], 1, "{count}");
    let events =
        committed(&admin, "/v1/admin/events?after=0&types=transfer.expired", |events| items(events) >= 1).await;
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{events}");
    assert_eq!((items[0]["type"].as_str(), items[0]["data"]["id"].as_str()), (Some("transfer.expired"), Some(own_id)));
    assert_eq!(items[0]["data"]["status"], "expired");

    // The type's hour: the other one expires too.
    clock.advance(3_600).await;
    assert_eq!(settled(&admin, typed_id).await["status"], "expired");
    for id in &batched {
        assert_eq!(settled(&admin, id).await["status"], "expired", "batch item {id}");
    }
    assert_eq!(account(&admin, &source).await, ("990.00".parse().unwrap(), Decimal::ZERO));
    assert_eq!(account(&admin, &destination).await.0, "10.00".parse::<Decimal>().unwrap());
    assert_eq!(expiries_scheduled(&server, &admin).await, 0);
    drop(server);
    let (ok, report) = tally_check(database_url);
    assert!(ok, "tally check: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_transfer_expires_on_time_on_sqlite() {
    let (url, file) = sqlite_url("on-time");
    expires_on_time(&url).await;
    remove_sqlite(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_transfer_expires_on_time_on_postgres() {
    expires_on_time(&tally_tests::postgres::fresh_database("expiry_on_time").await).await;
}

// ---- bad input ---------------------------------------------------------------------------------

async fn bad_input_is_refused_and_changes_nothing(database_url: &str) {
    let clock = TestClock::new();
    let server = start(database_url, &clock).await;
    let admin = Client::admin(&server).await;
    let source = admin.open_account("USD").await;
    admin.fund(&source, "100.00").await;
    let (_, before) = admin.get("/v1/transfers").await;

    for bad in [json!(59), json!(2_592_001), json!(0), json!(-60), json!(60.5), json!("60"), json!(true), json!({})] {
        for path in ["/v1/transfers", "/v1/transfers/quote"] {
            let (status, body) = admin.post(path, external(&source, "10.00", Some(bad.clone()))).await;
            assert_eq!((status, body["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{path} {bad}: {body}");
            assert!(body.to_string().contains("pending_expires_in"), "{path} {bad}: names the field: {body}");
        }
    }
    // A bad one on a batch item: that item fails, nothing is held.
    for atomic in [false, true] {
        let (status, body) = admin
            .post(
                "/v1/transfers/batch",
                json!({"atomic": atomic, "transfers": [external(&source, "1.00", Some(json!(600)))]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"][0]["status"], 400, "atomic {atomic}: {body}");
        assert!(body.to_string().contains("pending_expires_in"), "{body}");
    }
    // The bounds themselves are accepted.
    for good in [60, 2_592_000] {
        let (status, body) = admin.post("/v1/transfers/quote", external(&source, "1.00", Some(json!(good)))).await;
        assert_eq!(status, 200, "{good}: {body}");
    }
    assert_eq!(account(&admin, &source).await, ("100.00".parse().unwrap(), Decimal::ZERO));
    let (_, after) = admin.get("/v1/transfers").await;
    assert_eq!(before["items"], after["items"], "nothing was created");

    // The fingerprint covers it: the same key with another expiry is another request.
    let first = external(&source, "5.00", Some(json!(600)));
    let (status, _) = admin.send(Method::POST, "/v1/transfers", Some(first.clone()), Some("exp-key")).await.unwrap();
    assert_eq!(status, 202);
    let (status, replay) = admin.send(Method::POST, "/v1/transfers", Some(first), Some("exp-key")).await.unwrap();
    assert_eq!(status, 202, "{replay}");
    let other = external(&source, "5.00", Some(json!(601)));
    let (status, body) = admin.send(Method::POST, "/v1/transfers", Some(other), Some("exp-key")).await.unwrap();
    assert_eq!((status, body["code"].as_str()), (409, Some("IDEMPOTENCY_KEY_REUSED")), "{body}");
    let unset = external(&source, "5.00", None);
    let (status, body) = admin.send(Method::POST, "/v1/transfers", Some(unset), Some("exp-key")).await.unwrap();
    assert_eq!((status, body["code"].as_str()), (409, Some("IDEMPOTENCY_KEY_REUSED")), "{body}");
    assert_eq!(account(&admin, &source).await, ("100.00".parse().unwrap(), "5.00".parse().unwrap()));

    // The type's timeout: out of range or the wrong type is 400 on the field, and the type is
    // unchanged; without a token, 401.
    let (_, types_before) = admin.get("/v1/admin/transfer-types").await;
    for bad in [json!(59), json!(2_592_001), json!("3600"), json!(-1), json!(1.5)] {
        let (status, body) = put_type(
            &admin,
            "external",
            json!({"enabled": true, "execution_mode": "manual", "pending_timeout_secs": bad}),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{bad}: {body}");
        assert!(body.to_string().contains("pending_timeout_secs"), "{bad}: {body}");
    }
    let (_, types_after) = admin.get("/v1/admin/transfer-types").await;
    assert_eq!(types_before, types_after);
    let anonymous = Client { token: "not-a-token".to_owned(), ..admin.clone() };
    let (status, _) = put_type(
        &anonymous,
        "external",
        json!({"enabled": true, "execution_mode": "manual", "pending_timeout_secs": 600}),
    )
    .await;
    assert_eq!(status, 401);
    // Setting it is audited as the other type settings are; null clears it.
    let (status, _) =
        put_type(&admin, "external", json!({"enabled": true, "execution_mode": "manual", "pending_timeout_secs": 600}))
            .await;
    assert_eq!(status, 200);
    let (_, audit) = admin.get("/v1/admin/audit?action=transfer_type.update").await;
    assert!(audit.to_string().contains("external"), "{audit}");
    let (status, cleared) = put_type(
        &admin,
        "external",
        json!({"enabled": true, "execution_mode": "manual", "pending_timeout_secs": null}),
    )
    .await;
    assert_eq!((status, &cleared["pending_timeout_secs"]), (200, &Value::Null), "{cleared}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expiry_input_is_refused_on_sqlite() {
    let (url, file) = sqlite_url("bad-input");
    bad_input_is_refused_and_changes_nothing(&url).await;
    remove_sqlite(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expiry_input_is_refused_on_postgres() {
    bad_input_is_refused_and_changes_nothing(&tally_tests::postgres::fresh_database("expiry_bad_input").await).await;
}

// ---- an admin's execute racing the expiry ------------------------------------------------------

const RACES: usize = 16;

async fn execute_races_expiry(database_url: &str) {
    let seed: u64 = std::env::var("TALLY_EXPIRY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xE4B1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut clock = TestClock::new();
    let server = start(database_url, &clock).await;
    let admin = Client::admin(&server).await;
    let source = admin.open_account("USD").await;
    admin.fund(&source, "1000.00").await;
    let (mut completed, mut expired) = (0, 0);
    for round in 0..RACES {
        let (status, sent) = admin.post("/v1/transfers", external(&source, "1.00", Some(json!(60)))).await;
        assert_eq!(status, 202, "{sent}");
        let id = sent["id"].as_str().unwrap().to_owned();
        // The deadline passes at the same moment the admin decides, give or take a few ticks.
        let delay = Duration::from_millis(rng.gen_range(0..400));
        let executing = {
            let admin = admin.clone();
            let id = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                admin.post(&format!("/v1/admin/transfers/{id}/execute"), json!({})).await
            })
        };
        clock.advance(61).await;
        let (status, answer) = executing.await.unwrap();
        let end = settled(&admin, &id).await;
        match (status, end["status"].as_str()) {
            (204, Some("completed")) => completed += 1,
            (409, Some("expired")) => {
                assert_eq!(answer["code"], "NOT_PENDING", "seed {seed} round {round}: {answer}");
                expired += 1;
            }
            other => panic!("seed {seed} round {round}: execute answered {other:?}: {answer} / {end}"),
        }
    }
    eprintln!("seed {seed}: {completed} executed, {expired} expired");
    assert_eq!(completed + expired, RACES);
    // Money moved exactly once per executed transfer, never for an expired one.
    let (balance, held) = account(&admin, &source).await;
    assert_eq!(held, Decimal::ZERO, "seed {seed}");
    assert_eq!(balance, Decimal::from(1000 - completed as i64), "seed {seed}");
    let count = committed(&admin, "/v1/admin/transfers/count?status=expired", |count| count["count"] == expired).await;
    assert_eq!(count["count"], expired, "seed {seed}");
    let events =
        committed(&admin, "/v1/admin/events?after=0&types=transfer.expired,transfer.completed&limit=1000", |events| {
            events["items"]
                .as_array()
                .is_some_and(|all| all.iter().filter(|event| event["type"] == "transfer.expired").count() == expired)
        })
        .await;
    let kinds: Vec<&str> = events["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "transfer.expired").count(), expired, "seed {seed}");
    drop(server);
    let (ok, report) = tally_check(database_url);
    assert!(ok, "tally check: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_racing_the_expiry_has_one_outcome_on_sqlite() {
    let (url, file) = sqlite_url("race");
    execute_races_expiry(&url).await;
    remove_sqlite(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_racing_the_expiry_has_one_outcome_on_postgres() {
    execute_races_expiry(&tally_tests::postgres::fresh_database("expiry_race").await).await;
}

// ---- across kill -9 ----------------------------------------------------------------------------

async fn expiry_survives_a_kill_9(database_url: &str) {
    let mut clock = TestClock::new();
    let mut server = start(database_url, &clock).await;
    let admin = Client::admin(&server).await;
    let source = admin.open_account("USD").await;
    admin.fund(&source, "100.00").await;
    let (_, soon) = admin.post("/v1/transfers", external(&source, "10.00", Some(json!(60)))).await;
    let (_, later) = admin.post("/v1/transfers", external(&source, "20.00", Some(json!(600)))).await;
    let (soon, later) = (soon["id"].as_str().unwrap().to_owned(), later["id"].as_str().unwrap().to_owned());
    server.kill();
    // While it is down, the first deadline passes.
    clock.advance(120).await;
    server.restart().await;
    let admin = Client::admin(&server).await;
    assert_eq!(settled(&admin, &soon).await["status"], "expired", "overdue at start-up");
    assert_eq!(transfer(&admin, &later).await["status"], "pending");
    assert_eq!(account(&admin, &source).await, ("100.00".parse().unwrap(), "20.00".parse().unwrap()));
    // Crash again; the second deadline passes after the restart.
    server.kill();
    server.restart().await;
    let admin = Client::admin(&server).await;
    assert_eq!(transfer(&admin, &later).await["status"], "pending");
    clock.advance(500).await;
    assert_eq!(settled(&admin, &later).await["status"], "expired", "scheduled again at start-up");
    assert_eq!(account(&admin, &source).await, ("100.00".parse().unwrap(), Decimal::ZERO));
    let events =
        committed(&admin, "/v1/admin/events?after=0&types=transfer.expired", |events| items(events) >= 2).await;
    assert_eq!(items(&events), 2, "{events}");
    drop(server);
    let (ok, report) = tally_check(database_url);
    assert!(ok, "tally check: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_survives_a_kill_9_on_sqlite() {
    let (url, file) = sqlite_url("kill");
    expiry_survives_a_kill_9(&url).await;
    remove_sqlite(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_survives_a_kill_9_on_postgres() {
    expiry_survives_a_kill_9(&tally_tests::postgres::fresh_database("expiry_kill").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_clock_needs_both_variables() {
    let (url, file) = sqlite_url("clock-env");
    let output = std::process::Command::new(tally_tests::server::tally_bin())
        .arg("serve")
        .env("TALLY_DATABASE_URL", &url)
        .env("TALLY_LISTEN", format!("127.0.0.1:{}", tally_tests::server::free_port()))
        .env("TALLY_TEST_CLOCK_OFFSET_FILE", "/tmp/none")
        .env_remove("TALLY_TEST_CLOCK")
        .env("TALLY_LOG", "warn")
        .output()
        .expect("run tally serve");
    assert!(!output.status.success(), "an offset file alone is refused");
    let text = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("TALLY_TEST_CLOCK"), "{text}");
    remove_sqlite(&file);
}
