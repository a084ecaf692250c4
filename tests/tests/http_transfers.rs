//! `/v1/transfers` over a real socket: money moves exactly when the API says it did, every
//! refused request leaves every balance and hold as it was, pending external transfers wait
//! for an admin or are cancelled, and `Idempotency-Key` replays instead of paying twice.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tally_engine::Currency;
use tally_engine::system_accounts::settlement;
use tally_tests::http::{TestServer, TestUser};
use tally_tests::on_both_stores;

on_both_stores!(
    an_internal_transfer_completes_and_moves_the_money,
    bad_amounts_are_refused_and_nothing_moves,
    insufficient_funds_and_a_wrong_currency_destination_move_nothing,
    malformed_transfers_are_refused_before_anything_is_held,
    another_users_source_and_transfers_are_not_found,
    every_transfer_of_the_caller_s_listing_reads_by_id_and_only_the_payer_cancels,
    a_pending_external_transfer_holds_until_an_admin_executes_it,
    a_pending_transfer_is_cancelled_once_and_others_are_not_cancellable,
    a_quote_answers_without_creating_or_holding_anything,
    an_idempotency_key_replays_and_refuses_another_request,
    transfer_types_are_listed,
);

const IBAN: &str = "DE89 3704 0044 0532 0130 00";

fn internal(source: &str, destination: &str, amount: &str) -> Value {
    json!({"type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": amount})
}

fn external(source: &str, amount: &str) -> Value {
    json!({"type": "external", "source_account_id": source, "beneficiary": {"name": "Grace Hopper", "iban": IBAN}, "amount": amount})
}

/// Two users, each with a USD account; Alice's holds 100.00.
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

async fn an_internal_transfer_completes_and_moves_the_money(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let mut body = internal(&from, &to, "25.5");
    body["reference"] = json!("invoice 7");
    body["description"] = json!("rent share");
    let sent = server.post("/v1/transfers", Some(&alice.token), body).await;
    sent.assert_status(201);
    let id = sent.str("id");
    assert_eq!(sent.headers["location"], format!("/v1/transfers/{id}").as_str());
    assert_eq!(sent.str("type"), "internal");
    assert_eq!(sent.str("status"), "completed");
    assert_eq!(sent.str("amount"), "25.50");
    assert_eq!(sent.str("currency"), "USD");
    assert_eq!(sent.str("fee"), "0.00");
    assert_eq!(sent.str("total_debited"), "25.50");
    assert_eq!(sent.str("destination_amount"), "25.50");
    assert_eq!(sent.body["fx_rate"], Value::Null);
    assert_eq!(sent.body["pending_reason"], Value::Null);
    assert_eq!(sent.str("reference"), "invoice 7");
    assert!(sent.str("completed_at").ends_with('Z'));
    assert_positions(&server, &[(&from, dec!(74.50), dec!(0)), (&to, dec!(25.50), dec!(0))]).await;

    let read = server.get(&format!("/v1/transfers/{id}"), Some(&alice.token)).await;
    read.assert_status(200);
    assert_eq!(read.body, sent.body);
    let bobs = server.get(&format!("/v1/accounts/{to}"), Some(&bob.token)).await;
    assert_eq!(bobs.str("balance"), "25.50");
    server.shutdown().await;
}

async fn bad_amounts_are_refused_and_nothing_moves(server: TestServer) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    let amounts = [
        json!("-5"),
        json!("-0.01"),
        json!("0"),
        json!("0.00"),
        json!("1.001"),
        json!("abc"),
        json!("1e3"),
        json!(""),
        json!(" 5"),
        json!("1000000000000.01"),
    ];
    for amount in amounts {
        let mut body = internal(&from, &to, "1");
        body["amount"] = amount.clone();
        let reply = server.post("/v1/transfers", Some(&alice.token), body).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec!["amount"], "{amount}");
    }
    // A JSON number is not money.
    let mut number = internal(&from, &to, "1");
    number["amount"] = json!(10.5);
    server.post("/v1/transfers", Some(&alice.token), number).await.assert_problem(400, "VALIDATION_ERROR");
    // JPY has no decimals.
    let yen = server.open_account(&alice, "JPY").await;
    let yen_to = server.open_account(&alice, "JPY").await;
    server.fund(&yen, dec!(1000)).await;
    server
        .post("/v1/transfers", Some(&alice.token), internal(&yen, &yen_to, "1.5"))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    assert_positions(&server, &[(&from, dec!(100), dec!(0)), (&to, dec!(0), dec!(0)), (&yen, dec!(1000), dec!(0))])
        .await;
    server.shutdown().await;
}

async fn insufficient_funds_and_a_wrong_currency_destination_move_nothing(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let broke = server.post("/v1/transfers", Some(&alice.token), internal(&from, &to, "100.01")).await;
    broke.assert_problem(422, "INSUFFICIENT_FUNDS");
    let euros = server.open_account(&bob, "EUR").await;
    // Another currency converts, but only at a rate an admin set; there is none here.
    let mismatch = server.post("/v1/transfers", Some(&alice.token), internal(&from, &euros, "10")).await;
    mismatch.assert_problem(422, "FX_RATE_NOT_FOUND");
    let unknown = uuid::Uuid::new_v4().to_string();
    server
        .post("/v1/transfers", Some(&alice.token), internal(&from, &unknown, "10"))
        .await
        .assert_problem(404, "NOT_FOUND");
    server
        .post("/v1/transfers", Some(&alice.token), external(&from, "100.01"))
        .await
        .assert_problem(422, "INSUFFICIENT_FUNDS");
    assert_positions(&server, &[(&from, dec!(100), dec!(0)), (&to, dec!(0), dec!(0)), (&euros, dec!(0), dec!(0))])
        .await;
    // Exactly the balance is fine.
    server.post("/v1/transfers", Some(&alice.token), internal(&from, &to, "100")).await.assert_status(201);
    assert_positions(&server, &[(&from, dec!(0), dec!(0)), (&to, dec!(100), dec!(0))]).await;
    server.shutdown().await;
}

async fn malformed_transfers_are_refused_before_anything_is_held(server: TestServer) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    let settlement_usd = settlement(Currency::USD).to_string();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"type": "internal", "source_account_id": from, "amount": "1"}), "destination_account_id"),
        (
            json!({"type": "internal", "source_account_id": from, "destination_account_id": to, "beneficiary": {"name": "x", "iban": IBAN}, "amount": "1"}),
            "beneficiary",
        ),
        (json!({"type": "external", "source_account_id": from, "amount": "1"}), "beneficiary"),
        (
            json!({"type": "external", "source_account_id": from, "destination_account_id": to, "beneficiary": {"name": "x", "iban": IBAN}, "amount": "1"}),
            "destination_account_id",
        ),
        (
            json!({"type": "external", "source_account_id": from, "beneficiary": {"name": "x", "iban": "DE89370400440532013001"}, "amount": "1"}),
            "beneficiary.iban",
        ),
        (
            json!({"type": "external", "source_account_id": from, "beneficiary": {"name": " ", "iban": IBAN}, "amount": "1"}),
            "beneficiary.name",
        ),
        (
            json!({"type": "admin_credit", "source_account_id": from, "destination_account_id": to, "amount": "1"}),
            "type",
        ),
        (internal(&from, &settlement_usd, "1"), "destination_account_id"),
        (internal("nope", &to, "1"), "source_account_id"),
        (
            json!({"type": "internal", "source_account_id": from, "destination_account_id": to, "amount": "1", "reference": "x".repeat(141)}),
            "reference",
        ),
    ];
    for (body, field) in cases {
        let reply = server.post("/v1/transfers", Some(&alice.token), body).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec![field], "{}", reply.text);
    }
    let same = server.post("/v1/transfers", Some(&alice.token), internal(&from, &from, "1")).await;
    same.assert_problem(400, "VALIDATION_ERROR");
    let mut unknown_field = internal(&from, &to, "1");
    unknown_field["fee"] = json!("0.00");
    server.post("/v1/transfers", Some(&alice.token), unknown_field).await.assert_problem(400, "VALIDATION_ERROR");
    server
        .post_raw("/v1/transfers", Some(&alice.token), "application/json", b"{\"type\": \"internal\",".to_vec())
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    server
        .post_raw("/v1/transfers", Some(&alice.token), "application/x-www-form-urlencoded", b"amount=1".to_vec())
        .await
        .assert_problem(415, "VALIDATION_ERROR");
    server.post("/v1/transfers", None, internal(&from, &to, "1")).await.assert_problem(401, "UNAUTHENTICATED");
    assert_positions(&server, &[(&from, dec!(100), dec!(0)), (&to, dec!(0), dec!(0))]).await;
    server.shutdown().await;
}

async fn another_users_source_and_transfers_are_not_found(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let thief = server.post("/v1/transfers", Some(&bob.token), internal(&from, &to, "50")).await;
    thief.assert_problem(404, "NOT_FOUND");
    server.post("/v1/transfers", Some(&bob.token), external(&from, "50")).await.assert_problem(404, "NOT_FOUND");
    server
        .post("/v1/transfers/quote", Some(&bob.token), internal(&from, &to, "50"))
        .await
        .assert_problem(404, "NOT_FOUND");
    assert_positions(&server, &[(&from, dec!(100), dec!(0)), (&to, dec!(0), dec!(0))]).await;

    let pending = server.post("/v1/transfers", Some(&alice.token), external(&from, "10")).await;
    pending.assert_status(202);
    // The engine now remembers the source's owner (no actor read per transfer): still refused.
    let thief = server.post("/v1/transfers", Some(&bob.token), internal(&from, &to, "5")).await;
    thief.assert_problem(404, "NOT_FOUND");
    server
        .post("/v1/transfers/quote", Some(&bob.token), internal(&from, &to, "5"))
        .await
        .assert_problem(404, "NOT_FOUND");
    let id = pending.str("id");
    let theirs = server.get(&format!("/v1/transfers/{id}"), Some(&bob.token)).await;
    theirs.assert_problem(404, "NOT_FOUND");
    let missing = server.get(&format!("/v1/transfers/{}", uuid::Uuid::new_v4()), Some(&bob.token)).await;
    missing.assert_problem(404, "NOT_FOUND");
    assert_eq!(theirs.body["detail"], missing.body["detail"], "existence does not leak");
    server.post_empty(&format!("/v1/transfers/{id}/cancel"), Some(&bob.token)).await.assert_problem(404, "NOT_FOUND");
    // Still pending, still held.
    let read = server.get(&format!("/v1/transfers/{id}"), Some(&alice.token)).await;
    assert_eq!(read.str("status"), "pending");
    assert_positions(&server, &[(&from, dec!(100), dec!(10))]).await;
    server.shutdown().await;
}

async fn a_pending_external_transfer_holds_until_an_admin_executes_it(server: TestServer) {
    let (alice, from, _bob, _to) = alice_and_bob(&server).await;
    let admin = server.admin(&["transfers:execute", "transfers:read"]).await;
    let settlement_usd = settlement(Currency::USD).to_string();
    let settlement_before = server.position(&settlement_usd).await.0;

    let sent = server.post("/v1/transfers", Some(&alice.token), external(&from, "40")).await;
    sent.assert_status(202);
    assert_eq!(sent.str("status"), "pending");
    assert_eq!(sent.str("pending_reason"), "manual_execution");
    assert_eq!(sent.body["beneficiary"], json!({"name": "Grace Hopper", "iban": "DE89370400440532013000"}));
    assert_eq!(sent.str("destination_account_id"), settlement_usd);
    assert_eq!(sent.body["completed_at"], Value::Null);
    let id = sent.str("id");
    assert_positions(&server, &[(&from, dec!(100), dec!(40))]).await;
    let account = server.get(&format!("/v1/accounts/{from}"), Some(&alice.token)).await;
    assert_eq!((account.str("held"), account.str("available_balance")), ("40.00".to_owned(), "60.00".to_owned()));

    server.post_empty(&format!("/v1/admin/transfers/{id}/execute"), Some(&admin.token)).await.assert_status(204);
    let done = server.get(&format!("/v1/transfers/{id}"), Some(&alice.token)).await;
    assert_eq!(done.str("status"), "completed");
    assert_eq!(done.body["pending_reason"], Value::Null);
    assert_positions(&server, &[(&from, dec!(60), dec!(0))]).await;
    assert_eq!(server.position(&settlement_usd).await.0, settlement_before + dec!(40), "paid out through settlement");
    // Executing again: not pending.
    server
        .post_empty(&format!("/v1/admin/transfers/{id}/execute"), Some(&admin.token))
        .await
        .assert_problem(409, "NOT_PENDING");
    assert_positions(&server, &[(&from, dec!(60), dec!(0))]).await;
    server.shutdown().await;
}

async fn a_pending_transfer_is_cancelled_once_and_others_are_not_cancellable(server: TestServer) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    let pending = server.post("/v1/transfers", Some(&alice.token), external(&from, "30")).await;
    let id = pending.str("id");
    assert_positions(&server, &[(&from, dec!(100), dec!(30))]).await;
    let cancelled = server
        .post(&format!("/v1/transfers/{id}/cancel"), Some(&alice.token), json!({"reason": "changed my mind"}))
        .await;
    cancelled.assert_status(204);
    assert!(cancelled.text.is_empty());
    assert_eq!(server.get(&format!("/v1/transfers/{id}"), Some(&alice.token)).await.str("status"), "cancelled");
    assert_positions(&server, &[(&from, dec!(100), dec!(0))]).await;
    server
        .post_empty(&format!("/v1/transfers/{id}/cancel"), Some(&alice.token))
        .await
        .assert_problem(409, "NOT_CANCELLABLE");

    let completed = server.post("/v1/transfers", Some(&alice.token), internal(&from, &to, "5")).await;
    let completed_id = completed.str("id");
    server
        .post_empty(&format!("/v1/transfers/{completed_id}/cancel"), Some(&alice.token))
        .await
        .assert_problem(409, "NOT_CANCELLABLE");
    // A body, when sent, is checked like any other.
    let another = server.post("/v1/transfers", Some(&alice.token), external(&from, "1")).await.str("id");
    server
        .post(&format!("/v1/transfers/{another}/cancel"), Some(&alice.token), json!({"why": "x"}))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    server
        .post_raw(&format!("/v1/transfers/{another}/cancel"), Some(&alice.token), "text/plain", b"why".to_vec())
        .await
        .assert_problem(415, "VALIDATION_ERROR");
    assert_positions(&server, &[(&from, dec!(95), dec!(1)), (&to, dec!(5), dec!(0))]).await;
    server.shutdown().await;
}

async fn a_quote_answers_without_creating_or_holding_anything(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let quote = server.post("/v1/transfers/quote", Some(&alice.token), internal(&from, &to, "12.3")).await;
    quote.assert_status(200);
    assert_eq!(
        quote.body,
        json!({
            "amount": "12.30", "currency": "USD", "fee": "0.00", "fx_rate": null,
            "destination_amount": "12.30", "destination_currency": "USD",
            "hold_amount": "12.30", "total_debited": "12.30"
        })
    );
    let external_quote = server.post("/v1/transfers/quote", Some(&alice.token), external(&from, "500")).await;
    external_quote.assert_status(200);
    assert_eq!(external_quote.str("total_debited"), "500.00", "a quote does not check funds");
    let euros = server.open_account(&bob, "EUR").await;
    server
        .post("/v1/transfers/quote", Some(&alice.token), internal(&from, &euros, "1"))
        .await
        .assert_problem(422, "FX_RATE_NOT_FOUND");
    server
        .post("/v1/transfers/quote", Some(&alice.token), internal(&from, &uuid::Uuid::new_v4().to_string(), "1"))
        .await
        .assert_problem(404, "NOT_FOUND");
    server
        .post("/v1/transfers/quote", Some(&alice.token), internal(&from, &to, "0"))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    assert_positions(&server, &[(&from, dec!(100), dec!(0)), (&to, dec!(0), dec!(0))]).await;
    server.shutdown().await;
}

async fn an_idempotency_key_replays_and_refuses_another_request(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let first = server.post_keyed("/v1/transfers", Some(&alice.token), "pay-bob-1", internal(&from, &to, "10")).await;
    first.assert_status(201);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // The same request written differently ("10.00" is "10") is the same request.
    let again =
        server.post_keyed("/v1/transfers", Some(&alice.token), "pay-bob-1", internal(&from, &to, "10.00")).await;
    again.assert_status(201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.str("id"), first.str("id"));
    assert_positions(&server, &[(&from, dec!(90), dec!(0)), (&to, dec!(10), dec!(0))]).await;

    let other = server.post_keyed("/v1/transfers", Some(&alice.token), "pay-bob-1", internal(&from, &to, "11")).await;
    other.assert_problem(409, "IDEMPOTENCY_KEY_REUSED");
    assert_positions(&server, &[(&from, dec!(90), dec!(0)), (&to, dec!(10), dec!(0))]).await;

    // Keys are scoped to the caller: Bob's "pay-bob-1" is his own.
    let bobs = server.post_keyed("/v1/transfers", Some(&bob.token), "pay-bob-1", internal(&to, &from, "1")).await;
    bobs.assert_status(201);
    assert_ne!(bobs.str("id"), first.str("id"));

    // A failed request replays as the same failure, and still moves nothing.
    let broke = server.post_keyed("/v1/transfers", Some(&alice.token), "too-much", internal(&from, &to, "500")).await;
    broke.assert_problem(422, "INSUFFICIENT_FUNDS");
    let broke_again =
        server.post_keyed("/v1/transfers", Some(&alice.token), "too-much", internal(&from, &to, "500")).await;
    broke_again.assert_problem(422, "INSUFFICIENT_FUNDS");

    // A pending transfer replays as 202 with its id.
    let pending = server.post_keyed("/v1/transfers", Some(&alice.token), "payout", external(&from, "20")).await;
    pending.assert_status(202);
    let replayed = server.post_keyed("/v1/transfers", Some(&alice.token), "payout", external(&from, "20")).await;
    replayed.assert_status(202);
    assert_eq!(replayed.str("id"), pending.str("id"));
    assert_positions(&server, &[(&from, dec!(91), dec!(20)), (&to, dec!(9), dec!(0))]).await;

    let bad_key = server.post_keyed("/v1/transfers", Some(&alice.token), "has space", internal(&from, &to, "1")).await;
    bad_key.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(bad_key.error_fields(), vec!["Idempotency-Key"]);
    assert_positions(&server, &[(&from, dec!(91), dec!(20))]).await;
    server.shutdown().await;
}

async fn transfer_types_are_listed(server: TestServer) {
    let user = server.user().await;
    let types = server.get("/v1/transfer-types", Some(&user.token)).await;
    types.assert_status(200);
    let listed: Vec<(String, bool, String)> = types
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["code"].as_str().unwrap().to_owned(),
                t["enabled"].as_bool().unwrap(),
                t["execution_mode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![("internal".to_owned(), true, "auto".to_owned()), ("external".to_owned(), true, "manual".to_owned())]
    );
    server.get("/v1/transfer-types", None).await.assert_problem(401, "UNAUTHENTICATED");
    server.shutdown().await;
}

/// `GET /v1/transfers` lists the caller's transfers, incoming ones and admins' credits to
/// their accounts included, but `GET /v1/transfers/{id}` answered `404` for those: only the
/// initiator or the source's owner could read one (found by a review). Reading now follows
/// the listing; cancelling stays with the paying side (the receiver gets `404`, as before).
async fn every_transfer_of_the_caller_s_listing_reads_by_id_and_only_the_payer_cancels(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    server.fund(&to, dec!(3)).await;
    let sent = server.post("/v1/transfers", Some(&alice.token), internal(&from, &to, "5")).await;
    sent.assert_status(201);
    let listed = server.get("/v1/transfers?limit=200", Some(&bob.token)).await;
    listed.assert_status(200);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the incoming transfer and the admin's credit: {}", listed.text);
    for item in items {
        let id = item["id"].as_str().unwrap();
        let read = server.get(&format!("/v1/transfers/{id}"), Some(&bob.token)).await;
        read.assert_status(200);
        assert_eq!(read.body["id"], item["id"]);
    }
    let id = sent.str("id");
    server.post_empty(&format!("/v1/transfers/{id}/cancel"), Some(&bob.token)).await.assert_problem(404, "NOT_FOUND");
    // A third user still reads nothing of it.
    let carol = server.user().await;
    server.get(&format!("/v1/transfers/{id}"), Some(&carol.token)).await.assert_problem(404, "NOT_FOUND");
    server.shutdown().await;
}
