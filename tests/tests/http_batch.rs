//! `POST /v1/transfers/batch` over a real socket: each item answers as it would alone, an
//! atomic batch moves all or nothing, and a batch's `Idempotency-Key` replays it (one transfer
//! per item however often it is sent or raced) and refuses a different body. Every scenario
//! ends with the store's invariants (`TestServer::shutdown`); the money scenarios also assert
//! per-currency conservation right after the batch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tally_tests::http::{TestServer, TestUser};
use tally_tests::on_both_stores;

on_both_stores!(
    a_batch_stored_under_the_older_fingerprint_replays,
    a_batch_reports_each_items_own_outcome_and_runs_the_good_ones,
    an_oversized_empty_or_malformed_batch_is_refused_whole_and_needs_a_token,
    an_item_with_a_field_or_a_metadata_key_given_twice_is_refused_as_it_would_be_alone,
    a_keyed_batch_with_an_item_nested_past_any_limit_refuses_that_item_alone,
    an_atomic_batch_whose_last_item_overdraws_creates_nothing_while_a_plain_one_completes_the_others,
    an_atomic_batch_with_a_malformed_item_or_a_blocked_destination_does_nothing,
    an_atomic_batch_applies_every_item,
    a_batch_replays_under_its_key_and_refuses_a_different_body,
    concurrent_duplicate_batches_make_exactly_one_transfer_per_item,
);

fn internal(source: &str, destination: &str, amount: &str) -> Value {
    json!({"type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": amount})
}

fn external(source: &str, amount: &str) -> Value {
    json!({"type": "external", "source_account_id": source,
           "beneficiary": {"name": "Grace Hopper", "iban": "DE89 3704 0044 0532 0130 00"}, "amount": amount})
}

/// Two users with a USD account each; Alice's holds 100.00.
async fn alice_and_bob(server: &TestServer) -> (TestUser, String, TestUser, String) {
    let alice = server.user().await;
    let bob = server.user().await;
    let from = server.open_account(&alice, "USD").await;
    let to = server.open_account(&bob, "USD").await;
    server.fund(&from, dec!(100)).await;
    (alice, from, bob, to)
}

async fn assert_positions(server: &TestServer, expected: &[(&str, Decimal, Decimal)]) {
    for (account, balance, held) in expected {
        assert_eq!(server.position(account).await, (*balance, *held), "account {account}");
    }
}

/// Every currency's balances sum to zero in the store, right now (and the rest of `tally
/// check`'s invariants hold).
async fn assert_conserved(server: &TestServer) {
    server.engine.journals().barrier().await.expect("journal durable");
    let sums = tally_tests::assert_store_consistent(server.store.as_ref()).await;
    assert!(sums.values().all(Decimal::is_zero), "per-currency sums: {sums:?}");
}

fn results(reply: &tally_tests::http::Reply) -> Vec<Value> {
    reply.assert_status(200);
    reply.body["results"].as_array().unwrap_or_else(|| panic!("results in {}", reply.text)).clone()
}

#[track_caller]
fn assert_item(result: &Value, index: usize, status: u16, code: Option<&str>) {
    assert_eq!(result["index"], index, "{result}");
    assert_eq!(result["status"], status, "{result}");
    match code {
        Some(code) => {
            assert_eq!(result["error"]["code"], code, "{result}");
            assert_eq!(result["error"]["status"], status, "{result}");
            assert!(result.get("transfer").is_none(), "{result}");
        }
        None => {
            assert!(result.get("error").is_none(), "{result}");
            assert!(result["transfer"]["id"].as_str().is_some(), "{result}");
        }
    }
}

async fn transfer_count(server: &TestServer, user: &TestUser) -> usize {
    let page = server.get("/v1/transfers?limit=200", Some(&user.token)).await;
    page.assert_status(200);
    page.body["items"].as_array().unwrap().len()
}

async fn a_batch_reports_each_items_own_outcome_and_runs_the_good_ones(server: TestServer) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    let carol = server.user().await;
    let carols = server.open_account(&carol, "USD").await;
    server.fund(&carols, dec!(50)).await;
    let body = json!({"transfers": [
        internal(&from, &to, "10"),
        external(&from, "5.25"),
        {"type": "internal", "source_account_id": from, "destination_account_id": to},
        internal(&from, &to, "1000"),
        internal(&from, &to, "1.001"),
        internal(&carols, &to, "1"),
        internal(&from, &uuid::Uuid::new_v4().to_string(), "1"),
        "not an object",
        // serde's derive would read a transfer from its fields in order; no client means that.
        ["internal", from, to, null, null, "7.00", null, null, null, null],
    ]});
    let reply = server.post("/v1/transfers/batch", Some(&alice.token), body).await;
    let items = results(&reply);
    assert_eq!(items.len(), 9);
    assert_item(&items[0], 0, 201, None);
    assert_eq!(items[0]["transfer"]["status"], "completed");
    assert_eq!(items[0]["transfer"]["amount"], "10.00");
    assert_item(&items[1], 1, 202, None);
    assert_eq!(items[1]["transfer"]["status"], "pending");
    assert_item(&items[2], 2, 400, Some("VALIDATION_ERROR"));
    assert_item(&items[3], 3, 422, Some("INSUFFICIENT_FUNDS"));
    assert_item(&items[4], 4, 400, Some("VALIDATION_ERROR"));
    assert_eq!(items[4]["error"]["errors"][0]["field"], "amount");
    assert_item(&items[5], 5, 404, Some("NOT_FOUND"));
    assert!(items[6]["status"].as_u64().unwrap() >= 400, "{}", items[6]);
    assert!(items[6].get("transfer").is_none());
    assert_item(&items[7], 7, 400, Some("VALIDATION_ERROR"));
    assert_item(&items[8], 8, 400, Some("VALIDATION_ERROR"));
    // Each item's error names the batch request's id (it said "-").
    let request_id = reply.headers["x-request-id"].to_str().unwrap();
    assert!(
        items.iter().filter_map(|item| item.get("error")).all(|error| error["request_id"] == request_id),
        "{}",
        reply.text
    );
    // A field of the wrong type is a field error naming it, as it is alone.
    assert_eq!(items[2]["error"]["errors"][0]["field"], "amount", "{}", items[2]);
    assert_eq!(items[8]["error"]["detail"], "invalid item: expected a JSON object");
    let positional = json!(["internal", from, to, null, null, "7.00", null, null, null, null]);
    let alone = server.post("/v1/transfers", Some(&alice.token), positional).await;
    alone.assert_problem(400, "VALIDATION_ERROR");
    assert_positions(
        &server,
        &[(&from, dec!(90.00), dec!(5.25)), (&to, dec!(10.00), dec!(0)), (&carols, dec!(50), dec!(0))],
    )
    .await;
    assert_conserved(&server).await;
    server.shutdown().await;
}

async fn an_oversized_empty_or_malformed_batch_is_refused_whole_and_needs_a_token(server: TestServer) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    let too_many: Vec<Value> = (0..8_191).map(|_| internal(&from, &to, "0.01")).collect();
    server
        .post("/v1/transfers/batch", Some(&alice.token), json!({"transfers": too_many}))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    let reply = server.post("/v1/transfers/batch", Some(&alice.token), json!({"transfers": []})).await;
    reply.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(reply.error_fields(), vec!["transfers"]);
    for body in [json!({}), json!({"transfers": "x"}), json!({"transfers": [], "extra": 1}), json!([1])] {
        server.post("/v1/transfers/batch", Some(&alice.token), body).await.assert_problem(400, "VALIDATION_ERROR");
    }
    server
        .post(
            "/v1/transfers/batch",
            Some(&alice.token),
            json!({"transfers": [internal(&from, &to, "1")], "atomic": "yes"}),
        )
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    server
        .post_raw("/v1/transfers/batch", Some(&alice.token), "application/json", b"{\"transfers\": [".to_vec())
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    server
        .post("/v1/transfers/batch", None, json!({"transfers": [internal(&from, &to, "1")]}))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    server
        .post("/v1/transfers/batch", Some("not-a-token"), json!({"transfers": [internal(&from, &to, "1")]}))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    let bad_key = server
        .send(
            server
                .client
                .post(server.url("/v1/transfers/batch"))
                .bearer_auth(&alice.token)
                .header("idempotency-key", "has space")
                .json(&json!({"transfers": [internal(&from, &to, "1")]})),
        )
        .await;
    bad_key.assert_problem(400, "VALIDATION_ERROR");
    assert_positions(&server, &[(&from, dec!(100), dec!(0)), (&to, dec!(0), dec!(0))]).await;
    assert_eq!(transfer_count(&server, &alice).await, 1, "only the funding exists");
    server.shutdown().await;
}

/// An item nested deeper than serde_json reads (a `metadata` value of 100,000 arrays, 200 KB,
/// well-formed JSON the batch body takes whole): under a key, the batch's fingerprint reads
/// every item as written. That item is refused alone (`400`) and the others run, the retry
/// under the key replays, and the server is still up.
async fn a_keyed_batch_with_an_item_nested_past_any_limit_refuses_that_item_alone(server: TestServer) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    let depth = 100_000;
    let deep = format!(
        r#"{{"type": "internal", "source_account_id": "{from}", "destination_account_id": "{to}", "amount": "1.00", "metadata": {{"x": {}{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let fine = internal(&from, &to, "2.00");
    let batch = format!(r#"{{"transfers": [{deep}, {fine}]}}"#);
    let send = || {
        server.send(
            server
                .client
                .post(server.url("/v1/transfers/batch"))
                .bearer_auth(&alice.token)
                .header("idempotency-key", "deep-batch-1")
                .header("content-type", "application/json")
                .body(batch.clone()),
        )
    };
    let reply = send().await;
    let items = results(&reply);
    assert_item(&items[0], 0, 400, Some("VALIDATION_ERROR"));
    assert_item(&items[1], 1, 201, None);
    let again = send().await;
    let replayed = results(&again);
    assert_item(&replayed[0], 0, 400, Some("VALIDATION_ERROR"));
    assert_item(&replayed[1], 1, 201, None);
    assert_eq!(replayed[1]["transfer"]["id"], items[1]["transfer"]["id"], "the retry replays the item's transfer");
    assert_positions(&server, &[(&from, dec!(98), dec!(0)), (&to, dec!(2), dec!(0))]).await;
    assert_conserved(&server).await;
    server.shutdown().await;
}

async fn an_item_with_a_field_or_a_metadata_key_given_twice_is_refused_as_it_would_be_alone(server: TestServer) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    // `json!` cannot repeat a key: the items are written out as text.
    let head = format!(r#""type": "internal", "source_account_id": "{from}", "destination_account_id": "{to}""#);
    let amount_twice = format!(r#"{{{head}, "amount": "1.00", "amount": "50.00"}}"#);
    let metadata_key_twice = format!(r#"{{{head}, "amount": "1.00", "metadata": {{"order": "a", "order": "b"}}}}"#);
    let fine = format!(r#"{{{head}, "amount": "2.00"}}"#);

    // Alone, each of the first two is refused.
    for body in [&amount_twice, &metadata_key_twice] {
        let reply =
            server.post_raw("/v1/transfers", Some(&alice.token), "application/json", body.clone().into_bytes()).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
    }
    // In a batch, the same two items are refused and the third runs.
    let batch = format!(r#"{{"transfers": [{amount_twice}, {metadata_key_twice}, {fine}]}}"#);
    let reply =
        server.post_raw("/v1/transfers/batch", Some(&alice.token), "application/json", batch.into_bytes()).await;
    let items = results(&reply);
    assert_item(&items[0], 0, 400, Some("VALIDATION_ERROR"));
    assert!(items[0]["error"]["detail"].as_str().unwrap().contains("duplicate field"), "{}", items[0]);
    assert_item(&items[1], 1, 400, Some("VALIDATION_ERROR"));
    let fields: Vec<&str> =
        items[1]["error"]["errors"].as_array().unwrap().iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, vec!["metadata.order"], "{}", items[1]);
    assert_item(&items[2], 2, 201, None);
    assert_positions(&server, &[(&from, dec!(98), dec!(0)), (&to, dec!(2), dec!(0))]).await;
    assert_conserved(&server).await;
    server.shutdown().await;
}

async fn an_atomic_batch_whose_last_item_overdraws_creates_nothing_while_a_plain_one_completes_the_others(
    server: TestServer,
) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let dave = server.user().await;
    let third = server.open_account(&dave, "USD").await;
    let transfers = json!([internal(&from, &to, "30"), internal(&from, &third, "30"), internal(&from, &to, "50")]);

    let atomic =
        server.post("/v1/transfers/batch", Some(&alice.token), json!({"transfers": transfers, "atomic": true})).await;
    let items = results(&atomic);
    assert_item(&items[0], 0, 409, Some("CONFLICT"));
    assert_item(&items[1], 1, 409, Some("CONFLICT"));
    assert_item(&items[2], 2, 422, Some("INSUFFICIENT_FUNDS"));
    assert_positions(&server, &[(&from, dec!(100), dec!(0)), (&to, dec!(0), dec!(0)), (&third, dec!(0), dec!(0))])
        .await;
    assert_eq!(transfer_count(&server, &alice).await, 1, "the atomic batch created no transfer");
    assert_eq!(transfer_count(&server, &bob).await, 0);
    assert_conserved(&server).await;
    // The aborted batch left no admission behind: the destination can still be closed.
    let closer = server.admin(&["accounts:close"]).await;
    server
        .post(
            &format!("/v1/admin/accounts/{third}/status"),
            Some(&closer.token),
            json!({"action": "close", "reason": "test"}),
        )
        .await
        .assert_status(204);

    let plain = server
        .post(
            "/v1/transfers/batch",
            Some(&alice.token),
            json!({"transfers": [
        internal(&from, &to, "30"), internal(&from, &to, "30"), internal(&from, &to, "50")]}),
        )
        .await;
    let items = results(&plain);
    assert_item(&items[0], 0, 201, None);
    assert_item(&items[1], 1, 201, None);
    assert_item(&items[2], 2, 422, Some("INSUFFICIENT_FUNDS"));
    assert_positions(&server, &[(&from, dec!(40), dec!(0)), (&to, dec!(60), dec!(0))]).await;
    assert_conserved(&server).await;
    server.shutdown().await;
}

async fn an_atomic_batch_with_a_malformed_item_or_a_blocked_destination_does_nothing(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let malformed = server
        .post(
            "/v1/transfers/batch",
            Some(&alice.token),
            json!({"atomic": true, "transfers": [
            internal(&from, &to, "10"), internal(&from, &to, "-3"), internal(&from, &to, "10")]}),
        )
        .await;
    let items = results(&malformed);
    assert_item(&items[0], 0, 409, Some("CONFLICT"));
    assert_item(&items[1], 1, 400, Some("VALIDATION_ERROR"));
    assert_item(&items[2], 2, 409, Some("CONFLICT"));
    assert_positions(&server, &[(&from, dec!(100), dec!(0)), (&to, dec!(0), dec!(0))]).await;

    // A blocked destination refuses its admission in the first phase: nothing moves anywhere.
    let carol = server.user().await;
    let carols = server.open_account(&carol, "USD").await;
    let blocker = server.admin(&["accounts:close"]).await;
    server
        .post(
            &format!("/v1/admin/accounts/{carols}/status"),
            Some(&blocker.token),
            json!({"action": "block", "reason": "test"}),
        )
        .await
        .assert_status(204);
    let blocked = server
        .post(
            "/v1/transfers/batch",
            Some(&alice.token),
            json!({"atomic": true, "transfers": [
            internal(&from, &to, "10"), internal(&from, &carols, "10")]}),
        )
        .await;
    let items = results(&blocked);
    assert_item(&items[0], 0, 409, Some("CONFLICT"));
    assert_item(&items[1], 1, 422, Some("ACCOUNT_NOT_ACTIVE"));
    assert_positions(&server, &[(&from, dec!(100), dec!(0)), (&to, dec!(0), dec!(0)), (&carols, dec!(0), dec!(0))])
        .await;
    assert_eq!(transfer_count(&server, &bob).await, 0);
    assert_conserved(&server).await;
    server.shutdown().await;
}

async fn an_atomic_batch_applies_every_item(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let transfers: Vec<Value> = (0..20).map(|_| internal(&from, &to, "5")).collect();
    let reply =
        server.post("/v1/transfers/batch", Some(&alice.token), json!({"atomic": true, "transfers": transfers})).await;
    let items = results(&reply);
    assert_eq!(items.len(), 20);
    for (index, item) in items.iter().enumerate() {
        assert_item(item, index, 201, None);
        assert_eq!(item["transfer"]["status"], "completed");
    }
    assert_positions(&server, &[(&from, dec!(0), dec!(0)), (&to, dec!(100), dec!(0))]).await;
    assert_eq!(transfer_count(&server, &bob).await, 20);
    assert_conserved(&server).await;
    server.shutdown().await;
}

async fn a_batch_replays_under_its_key_and_refuses_a_different_body(server: TestServer) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    for atomic in [false, true] {
        let key = format!("batch-{atomic}");
        let body = json!({"atomic": atomic, "transfers": [internal(&from, &to, "7"), internal(&from, &to, "3"), internal(&from, &to, "0")]});
        let body = if atomic {
            json!({"atomic": true, "transfers": [internal(&from, &to, "7"), internal(&from, &to, "3")]})
        } else {
            body
        };
        let first = server.post_keyed("/v1/transfers/batch", Some(&alice.token), &key, body.clone()).await;
        assert!(first.headers.get("idempotent-replayed").is_none(), "a first run is no replay");
        let first = results(&first);
        let before = server.position(&from).await;
        let again = server.post_keyed("/v1/transfers/batch", Some(&alice.token), &key, body.clone()).await;
        assert_eq!(
            again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()),
            Some("true"),
            "{}",
            again.text
        );
        let again = results(&again);
        assert_eq!(first.len(), again.len());
        for (one, two) in first.iter().zip(&again) {
            assert_eq!(one["status"], two["status"], "{one} vs {two}");
            assert_eq!(one["transfer"]["id"], two["transfer"]["id"], "the replay names the same transfer");
        }
        assert_item(&first[0], 0, 201, None);
        assert_item(&first[1], 1, 201, None);
        if !atomic {
            assert_item(&first[2], 2, 400, Some("VALIDATION_ERROR"));
        }
        assert_eq!(server.position(&from).await, before, "a replay moves nothing");
        let other = json!({"atomic": atomic, "transfers": [internal(&from, &to, "8")]});
        server
            .post_keyed("/v1/transfers/batch", Some(&alice.token), &key, other)
            .await
            .assert_problem(409, "IDEMPOTENCY_KEY_REUSED");
    }
    // 7 + 3 twice (once per mode), each once however often replayed.
    assert_positions(&server, &[(&from, dec!(80), dec!(0)), (&to, dec!(20), dec!(0))]).await;
    assert_conserved(&server).await;
    server.shutdown().await;
}

async fn concurrent_duplicate_batches_make_exactly_one_transfer_per_item(server: TestServer) {
    const SENDERS: usize = 8;
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let body = json!({"transfers": (0..5).map(|_| internal(&from, &to, "2")).collect::<Vec<_>>()});
    let sends = (0..SENDERS).map(|_| server.post_keyed("/v1/transfers/batch", Some(&alice.token), "dup", body.clone()));
    let replies = futures::future::join_all(sends).await;
    let ids: Vec<Vec<Value>> = replies
        .iter()
        .map(|reply| results(reply).iter().map(|item| item["transfer"]["id"].clone()).collect())
        .collect();
    assert!(ids.iter().all(|one| one == &ids[0]), "every duplicate names the same transfers: {ids:?}");
    assert!(ids[0].iter().all(Value::is_string));
    assert_positions(&server, &[(&from, dec!(90), dec!(0)), (&to, dec!(10), dec!(0))]).await;
    assert_eq!(transfer_count(&server, &bob).await, 5);
    assert_conserved(&server).await;
    server.shutdown().await;
}

/// A plain keyed batch one of whose items could not be planned for a passing reason (the
/// store could not read the saved beneficiary it names) keeps its other items under the key;
/// the identical retry replays those and runs the failed item afresh, then replays it too.
/// The batch's fingerprint was made from each item as planned (or, where planning failed, as
/// written), so the retry, planned in full, no longer matched, and the same key with the same
/// body was refused `409 IDEMPOTENCY_KEY_REUSED` for ever. Postgres only: the passing failure
/// is the beneficiaries table renamed away for the first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_retried_after_an_item_failed_in_passing_replays_and_runs_that_item() {
    let server = TestServer::start(tally_tests::http::Backend::Postgres).await;
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    let saved = server
        .post(
            "/v1/beneficiaries",
            Some(&alice.token),
            json!({"name": "Grace Hopper", "iban": "DE89 3704 0044 0532 0130 00"}),
        )
        .await;
    saved.assert_status(201);
    let beneficiary = saved.str("id");
    let body = json!({"transfers": [
        internal(&from, &to, "5"),
        {"type": "external", "source_account_id": from, "beneficiary_id": beneficiary, "amount": "5"},
    ]});

    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&server.database_url).await.unwrap();
    sqlx::query("ALTER TABLE beneficiaries RENAME TO beneficiaries_away").execute(&mut db).await.unwrap();
    let first = server.post_keyed("/v1/transfers/batch", Some(&alice.token), "passing", body.clone()).await;
    sqlx::query("ALTER TABLE beneficiaries_away RENAME TO beneficiaries").execute(&mut db).await.unwrap();
    let first = results(&first);
    assert_item(&first[0], 0, 201, None);
    assert_eq!(first[1]["status"], 500, "the item that could not be planned: {}", first[1]);

    let retry = server.post_keyed("/v1/transfers/batch", Some(&alice.token), "passing", body.clone()).await;
    // A repeat, though one of its items runs now for the first time.
    assert_eq!(retry.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let retry = results(&retry);
    assert_item(&retry[0], 0, 201, None);
    assert_eq!(retry[0]["transfer"]["id"], first[0]["transfer"]["id"], "the item that ran is replayed");
    // An external transfer waits for an admin's execution (its type's default).
    assert_item(&retry[1], 1, 202, None);

    let again = server.post_keyed("/v1/transfers/batch", Some(&alice.token), "passing", body).await;
    let again = results(&again);
    for (one, two) in retry.iter().zip(&again) {
        assert_eq!(one["transfer"]["id"], two["transfer"]["id"], "the third try replays both items");
    }
    // The internal item moved its 5 once and the external one holds its 5, once (no fees).
    assert_positions(&server, &[(&from, dec!(95), dec!(5)), (&to, dec!(5), dec!(0))]).await;
    assert_conserved(&server).await;
    server.shutdown().await;
}

/// The fingerprint a plain or atomic batch was stored under before the body-as-written one
/// (batch.rs `legacy_batch_fingerprint`), rebuilt from the older algorithm: each item's
/// single-transfer fingerprint on the batch route, or (an item that failed to plan) the item
/// re-serialised; then `{"atomic", "items"}` hashed.
fn legacy_print(atomic: bool, items: &[String]) -> String {
    let canonical = json!({ "atomic": atomic, "items": items });
    tally_http::digest::sha256_hex(&serde_json::to_vec(&canonical).unwrap())
}

fn usd_request(
    server: &TestServer,
    user: &TestUser,
    from: &str,
    to: &str,
    amount: Decimal,
) -> tally_engine::TransferRequest {
    let now = server.engine.now();
    tally_engine::TransferRequest {
        id: server.engine.new_transfer_id_at(now),
        kind: tally_engine::TransferKind::Internal,
        source: tally_tests::http::account_id(from),
        destination: tally_tests::http::account_id(to),
        amount,
        currency: tally_engine::Currency::USD,
        fee: dec!(0.00),
        reference: None,
        description: None,
        beneficiary: None,
        initiated_by: Some(tally_engine::UserId::from_uuid(user.user_id.parse().unwrap())),
        created_at: now,
        metadata: Default::default(),
    }
}

/// A batch stored by the previous version (items keyed "K #i" with the older fingerprint)
/// replays under the new one: the same transfers, nothing new, no `409` (untested until a
/// review wrote this).
async fn a_batch_stored_under_the_older_fingerprint_replays(server: TestServer) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    let scope: uuid::Uuid = alice.user_id.parse().unwrap();
    for atomic in [false, true] {
        let key = format!("legacy-{atomic}");
        let mut raw = vec![internal(&from, &to, "7"), internal(&from, &to, "3")];
        if !atomic {
            raw.push(internal(&from, &to, "0"));
        }
        let requests = [
            usd_request(&server, &alice, &from, &to, dec!(7.00)),
            usd_request(&server, &alice, &from, &to, dec!(3.00)),
        ];
        let mut items: Vec<String> = requests
            .iter()
            .map(|request| tally_http::transfers::fingerprint("POST /v1/transfers/batch", request).unwrap())
            .collect();
        if !atomic {
            items.push(serde_json::to_string(&raw[2]).unwrap());
        }
        let print = legacy_print(atomic, &items);
        let mut ids = Vec::new();
        for (index, request) in requests.into_iter().enumerate() {
            let idem = tally_engine::Idempotency {
                scope,
                key: format!("{key} #{index}").into(),
                fingerprint: print.as_str().into(),
            };
            let (transfer, _) = server.engine.transfer_idempotent(request, Some(idem)).await.unwrap();
            ids.push(transfer.id.to_string());
        }
        let before = server.position(&from).await;
        let body = json!({"atomic": atomic, "transfers": raw});
        let replay = server.post_keyed("/v1/transfers/batch", Some(&alice.token), &key, body).await;
        let items = results(&replay);
        assert_eq!(items[0]["transfer"]["id"], ids[0], "{}", replay.text);
        assert_eq!(items[1]["transfer"]["id"], ids[1], "{}", replay.text);
        assert_eq!(server.position(&from).await, before, "a replay moves nothing");
    }
    server.shutdown().await;
}
