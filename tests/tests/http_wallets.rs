//! Wallets and crypto flows over a real socket (API.md "Wallets (multi-asset) and crypto
//! flows"): wallets, custodian deposits (signed webhook, one credit per tx_hash), withdrawals
//! held until the custodian answers, buy and sell orders from quotes, and the compensation of
//! an order whose wallet leg fails. Every scenario ends with `TestServer::shutdown`, which runs
//! `tally check`'s invariants: per currency, accounts and wallets together sum to zero.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tally_actors::ActorKind;
use tally_engine::{Currency, WalletId};
use tally_http::crypto::{custodian_signature, set_custodian_secret};
use tally_tests::http::{Reply, TestServer, TestUser};

const SECRET: &str = "test-custodian-secret";

fn decimal(reply: &Reply, field: &str) -> Decimal {
    Decimal::from_str(&reply.str(field)).unwrap_or_else(|_| panic!("{field} is a decimal in {}", reply.text))
}

async fn webhook(server: &TestServer, body: &Value, signature: Option<&str>) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut request =
        server.client.post(server.url("/v1/webhooks/custodian")).header("content-type", "application/json");
    if let Some(signature) = signature {
        request = request.header("x-custodian-signature", signature);
    }
    server.send(request.body(bytes)).await
}

async fn signed(server: &TestServer, body: Value) -> Reply {
    set_custodian_secret(SECRET);
    let signature = custodian_signature(SECRET.as_bytes(), &serde_json::to_vec(&body).unwrap());
    webhook(server, &body, Some(&signature)).await
}

async fn open_wallet(server: &TestServer, user: &TestUser, asset: &str) -> Reply {
    let reply = server.post("/v1/wallets", Some(&user.token), json!({"asset": asset})).await;
    reply.assert_status(201);
    reply
}

async fn wallet(server: &TestServer, user: &TestUser, id: &str) -> Reply {
    let reply = server.get(&format!("/v1/wallets/{id}"), Some(&user.token)).await;
    reply.assert_status(200);
    reply
}

/// `(balance, held)` of a wallet's asset, read over the API.
async fn wallet_position(server: &TestServer, user: &TestUser, id: &str) -> (Decimal, Decimal) {
    let reply = wallet(server, user, id).await;
    (decimal(&reply, "balance"), decimal(&reply, "held"))
}

async fn deposit(server: &TestServer, address: &str, amount: &str, tx_hash: &str) -> Reply {
    signed(server, json!({"event": "deposit", "address": address, "amount": amount, "tx_hash": tx_hash})).await
}

async fn wallets_open_one_per_asset_and_refuse_bad_input(server: TestServer) {
    let alice = server.user().await;
    let bob = server.user().await;
    let opened = open_wallet(&server, &alice, "BTC").await;
    assert_eq!(opened.str("asset"), "BTC");
    assert_eq!((opened.str("balance").as_str(), opened.str("held").as_str()), ("0.00000000", "0.00000000"));
    assert_eq!(opened.str("available_balance"), "0.00000000");
    assert_eq!(opened.str("status"), "active");
    let address = opened.str("deposit_address");
    assert!(address.starts_with("tly1") && address.len() == 44, "{address}");
    let id = opened.str("id");
    assert_eq!(opened.headers["location"], format!("/v1/wallets/{id}").as_str());

    // One per asset per user; another user may hold the same asset.
    server.post("/v1/wallets", Some(&alice.token), json!({"asset": "BTC"})).await.assert_problem(409, "CONFLICT");
    open_wallet(&server, &bob, "BTC").await;
    open_wallet(&server, &alice, "ETH").await;
    // Fiat is not a wallet asset, an unknown code is not a currency, bodies are checked.
    for body in
        [json!({"asset": "USD"}), json!({"asset": "XYZ"}), json!({"asset": "btc"}), json!({}), json!({"asset": 1})]
    {
        server.post("/v1/wallets", Some(&alice.token), body).await.assert_problem(400, "VALIDATION_ERROR");
    }
    server.post("/v1/wallets", Some(&alice.token), json!({"asset": "BTC", "extra": 1})).await.assert_status(400);
    server.post("/v1/wallets", None, json!({"asset": "USDC"})).await.assert_problem(401, "UNAUTHENTICATED");
    server.get("/v1/wallets", None).await.assert_problem(401, "UNAUTHENTICATED");

    let listed = server.get("/v1/wallets", Some(&alice.token)).await;
    listed.assert_status(200);
    let assets: Vec<&str> =
        listed.body["items"].as_array().unwrap().iter().map(|w| w["asset"].as_str().unwrap()).collect();
    assert_eq!(assets, ["BTC", "ETH"]);
    // Someone else's wallet is not found, as one that does not exist.
    server.get(&format!("/v1/wallets/{id}"), Some(&bob.token)).await.assert_problem(404, "NOT_FOUND");
    server
        .get(&format!("/v1/wallets/{}", uuid::Uuid::new_v4()), Some(&alice.token))
        .await
        .assert_problem(404, "NOT_FOUND");
    server.get("/v1/wallets/not-a-uuid", Some(&alice.token)).await.assert_problem(400, "VALIDATION_ERROR");
    server.shutdown().await;
}

async fn deposits_credit_once_per_tx_hash_and_need_a_valid_signature(server: TestServer) {
    let alice = server.user().await;
    let opened = open_wallet(&server, &alice, "BTC").await;
    let (id, address) = (opened.str("id"), opened.str("deposit_address"));

    let first = deposit(&server, &address, "0.5", "tx-1").await;
    first.assert_status(200);
    assert_eq!(first.body["duplicate"], false);
    assert_eq!(first.body["operation"]["status"], "completed");
    assert_eq!(first.body["operation"]["crypto_amount"], "0.50000000");
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(0.5), dec!(0)));

    // The same report again (however the amount is written): a repeat, nothing changes.
    for amount in ["0.5", "0.50000000"] {
        let again = deposit(&server, &address, amount, "tx-1").await;
        again.assert_status(200);
        assert_eq!(again.body["duplicate"], true, "{}", again.text);
        assert_eq!(again.body["operation"]["id"], first.body["operation"]["id"]);
    }
    // The same tx_hash for another amount, or another wallet (a second output of one chain
    // transaction, or a custodian's mistake), is not a repeat: refused, nothing changes.
    deposit(&server, &address, "7", "tx-1").await.assert_problem(409, "CONFLICT");
    let bob = server.user().await;
    let bobs = open_wallet(&server, &bob, "BTC").await;
    deposit(&server, &bobs.str("deposit_address"), "0.5", "tx-1").await.assert_problem(409, "CONFLICT");
    signed(&server, json!({"event": "deposit", "wallet_id": bobs.str("id"), "amount": "0.5", "tx_hash": "tx-1"}))
        .await
        .assert_problem(409, "CONFLICT");
    assert_eq!(wallet_position(&server, &bob, &bobs.str("id")).await, (dec!(0), dec!(0)));
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(0.5), dec!(0)));
    // Concurrent repeats of a new hash: one credit.
    let repeats = futures::future::join_all((0..8).map(|_| deposit(&server, &address, "0.25", "tx-2"))).await;
    assert!(repeats.iter().all(|reply| reply.status == 200));
    assert_eq!(repeats.iter().filter(|reply| reply.body["duplicate"] == false).count(), 1);
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(0.75), dec!(0)));

    // By wallet id instead of address.
    signed(&server, json!({"event": "deposit", "wallet_id": id, "amount": "0.25", "tx_hash": "tx-3"}))
        .await
        .assert_status(200);
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(1.0), dec!(0)));

    // A bad signature (wrong secret, tampered body, missing, malformed) is 401 and nothing changes.
    let body = json!({"event": "deposit", "address": address, "amount": "5", "tx_hash": "tx-forged"});
    let wrong_secret = custodian_signature(b"not-the-secret", &serde_json::to_vec(&body).unwrap());
    let other_body = custodian_signature(SECRET.as_bytes(), b"{\"event\":\"deposit\"}");
    set_custodian_secret(SECRET);
    for signature in [Some(wrong_secret.as_str()), Some(other_body.as_str()), None, Some("sha256=00"), Some("md5=abc")]
    {
        webhook(&server, &body, signature).await.assert_problem(401, "UNAUTHENTICATED");
    }
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(1.0), dec!(0)));
    // The forged hash was not used up: a properly signed report of it still credits.
    deposit(&server, &address, "0.1", "tx-forged").await.assert_status(200);
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(1.1), dec!(0)));

    // Malformed, negative, too many decimals, unknown address, unknown event: refused, nothing moves.
    deposit(&server, &address, "0.000000001", "tx-4").await.assert_problem(400, "VALIDATION_ERROR");
    deposit(&server, &address, "-1", "tx-5").await.assert_problem(400, "VALIDATION_ERROR");
    deposit(&server, &address, "0", "tx-6").await.assert_problem(400, "VALIDATION_ERROR");
    deposit(&server, &address, "abc", "tx-7").await.assert_problem(400, "VALIDATION_ERROR");
    // More digits than a decimal holds: refused, not rounded up to 1.
    deposit(&server, &address, "0.99999999999999999999999999999", "tx-7b")
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    deposit(&server, "tly1unknown", "1", "tx-8").await.assert_problem(404, "NOT_FOUND");
    signed(&server, json!({"event": "refund", "tx_hash": "tx-9"})).await.assert_problem(400, "VALIDATION_ERROR");
    signed(&server, json!({"event": "deposit", "address": address, "tx_hash": "tx-10"}))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(1.1), dec!(0)));
    // A refused report did not use its hash either.
    deposit(&server, &address, "0.00000001", "tx-4").await.assert_status(200);
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(1.10000001), dec!(0)));
    server.shutdown().await;
}

async fn withdrawals_are_held_until_the_custodian_confirms_or_fails_them(server: TestServer) {
    let alice = server.user().await;
    let bob = server.user().await;
    let opened = open_wallet(&server, &alice, "ETH").await;
    let (id, address) = (opened.str("id"), opened.str("deposit_address"));
    deposit(&server, &address, "2", "0xfund").await.assert_status(200);

    let body = json!({"wallet_id": id, "amount": "0.5", "address": "0xdestination"});
    let held = server.post_keyed("/v1/crypto/withdrawals", Some(&alice.token), "w-1", body.clone()).await;
    held.assert_status(202);
    assert_eq!(held.str("status"), "pending");
    assert_eq!(held.str("kind"), "withdrawal");
    assert_eq!(held.str("crypto_amount"), "0.500000000000000000");
    let withdrawal = held.str("id");
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(2), dec!(0.5)));
    assert_eq!(wallet(&server, &alice, &id).await.str("available_balance"), "1.500000000000000000");

    // The same key and body: the same withdrawal; another body under the key: refused.
    let replay = server.post_keyed("/v1/crypto/withdrawals", Some(&alice.token), "w-1", body.clone()).await;
    replay.assert_status(202);
    assert_eq!(replay.str("id"), withdrawal);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let other = json!({"wallet_id": id, "amount": "0.6", "address": "0xdestination"});
    server
        .post_keyed("/v1/crypto/withdrawals", Some(&alice.token), "w-1", other)
        .await
        .assert_problem(409, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(2), dec!(0.5)));

    // Readable by its owner only.
    let read = server.get(&format!("/v1/crypto/withdrawals/{withdrawal}"), Some(&alice.token)).await;
    read.assert_status(200);
    assert_eq!(read.str("status"), "pending");
    server
        .get(&format!("/v1/crypto/withdrawals/{withdrawal}"), Some(&bob.token))
        .await
        .assert_problem(404, "NOT_FOUND");

    // Confirmed: posted to settlement, the hold gone; a repeat changes nothing.
    let confirmed =
        signed(&server, json!({"event": "withdrawal.confirmed", "withdrawal_id": withdrawal, "tx_hash": "0xout"}))
            .await;
    confirmed.assert_status(200);
    assert_eq!(confirmed.body["operation"]["status"], "completed");
    assert_eq!(confirmed.body["operation"]["tx_hash"], "0xout");
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(1.5), dec!(0)));
    let again =
        signed(&server, json!({"event": "withdrawal.confirmed", "withdrawal_id": withdrawal, "tx_hash": "0xout"}))
            .await;
    again.assert_status(200);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(1.5), dec!(0)));
    // The other answer after one was applied is a conflict.
    signed(&server, json!({"event": "withdrawal.failed", "withdrawal_id": withdrawal, "tx_hash": "0xout"}))
        .await
        .assert_problem(409, "CONFLICT");
    let settlement = server.engine.account(tally_engine::system_accounts::settlement(Currency::ETH)).await.unwrap();
    assert_eq!(settlement.balance(), dec!(-1.5), "2 deposited, 0.5 withdrawn: settlement mirrors the wallet");

    // Failed: released.
    let second = server
        .post("/v1/crypto/withdrawals", Some(&alice.token), json!({"wallet_id": id, "amount": "1", "address": "0xd"}))
        .await;
    second.assert_status(202);
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(1.5), dec!(1)));
    let failed =
        signed(&server, json!({"event": "withdrawal.failed", "withdrawal_id": second.str("id"), "tx_hash": "0xnone"}))
            .await;
    failed.assert_status(200);
    assert_eq!(failed.body["operation"]["status"], "failed");
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(1.5), dec!(0)));
    let outcome = server.get(&format!("/v1/crypto/withdrawals/{}", second.str("id")), Some(&alice.token)).await;
    assert_eq!(outcome.str("status"), "failed");

    // Refusals: insufficient funds, too many decimals, negative, someone else's wallet,
    // unknown withdrawal, no token. Nothing moves.
    let attempt = |amount: &str, wallet: &str| json!({"wallet_id": wallet, "amount": amount, "address": "0xd"});
    server
        .post("/v1/crypto/withdrawals", Some(&alice.token), attempt("5", &id))
        .await
        .assert_problem(422, "INSUFFICIENT_FUNDS");
    server
        .post("/v1/crypto/withdrawals", Some(&alice.token), attempt("0.0000000000000000001", &id))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    server
        .post("/v1/crypto/withdrawals", Some(&alice.token), attempt("-1", &id))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    server.post("/v1/crypto/withdrawals", Some(&bob.token), attempt("0.1", &id)).await.assert_problem(404, "NOT_FOUND");
    server
        .post("/v1/crypto/withdrawals", Some(&alice.token), json!({"wallet_id": id, "amount": "0.1", "address": " "}))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    server.post("/v1/crypto/withdrawals", None, attempt("0.1", &id)).await.assert_problem(401, "UNAUTHENTICATED");
    signed(
        &server,
        json!({"event": "withdrawal.confirmed", "withdrawal_id": uuid::Uuid::new_v4().to_string(), "tx_hash": "0x1"}),
    )
    .await
    .assert_problem(404, "NOT_FOUND");
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(1.5), dec!(0)));
    server.shutdown().await;
}

async fn quote(server: &TestServer, user: &TestUser, query: &str) -> Reply {
    server.get(&format!("/v1/crypto/quote?{query}"), Some(&user.token)).await
}

async fn buy_and_sell_move_fiat_and_crypto_through_fx_clearing(server: TestServer) {
    server.engine.set_fx_rate(Currency::BTC, Currency::EUR, dec!(30000), None).await.expect("price set");
    let alice = server.user().await;
    let bob = server.user().await;
    let eur = server.open_account(&alice, "EUR").await;
    server.fund(&eur, dec!(1000)).await;
    let usd = server.open_account(&alice, "USD").await;
    let bobs = server.open_account(&bob, "EUR").await;
    let btc = open_wallet(&server, &alice, "BTC").await.str("id");

    // Quote: 100 EUR buys 0.00333333 BTC (rounded down), fee 1% on top.
    let offer = quote(&server, &alice, "side=buy&asset=BTC&fiat_currency=EUR&fiat_amount=100").await;
    offer.assert_status(200);
    assert_eq!(
        (
            offer.str("price").as_str(),
            offer.str("fiat_amount").as_str(),
            offer.str("crypto_amount").as_str(),
            offer.str("fee").as_str()
        ),
        ("30000", "100.00", "0.00333333", "1.00")
    );
    assert!(offer.str("expires_at").ends_with('Z'));
    let order_body = json!({"quote_id": offer.str("quote_id"), "fiat_account_id": eur});

    // Wrong currency account, someone else's account, someone else's quote: refused, nothing moves.
    server
        .post(
            "/v1/crypto/orders",
            Some(&alice.token),
            json!({"quote_id": offer.str("quote_id"), "fiat_account_id": usd}),
        )
        .await
        .assert_problem(422, "CURRENCY_MISMATCH");
    server
        .post(
            "/v1/crypto/orders",
            Some(&alice.token),
            json!({"quote_id": offer.str("quote_id"), "fiat_account_id": bobs}),
        )
        .await
        .assert_problem(404, "NOT_FOUND");
    server
        .post(
            "/v1/crypto/orders",
            Some(&bob.token),
            json!({"quote_id": offer.str("quote_id"), "fiat_account_id": bobs}),
        )
        .await
        .assert_problem(404, "NOT_FOUND");
    // An account that does not exist is named as an account, not as a wallet.
    let unknown = server
        .post(
            "/v1/crypto/orders",
            Some(&alice.token),
            json!({"quote_id": offer.str("quote_id"), "fiat_account_id": uuid::Uuid::new_v4().to_string()}),
        )
        .await;
    unknown.assert_problem(404, "NOT_FOUND");
    assert!(unknown.body["detail"].as_str().unwrap().contains("account"), "{}", unknown.text);
    server.post("/v1/crypto/orders", None, order_body.clone()).await.assert_problem(401, "UNAUTHENTICATED");
    assert_eq!(server.position(&eur).await, (dec!(1000), dec!(0)));

    let bought = server.post_keyed("/v1/crypto/orders", Some(&alice.token), "buy-1", order_body.clone()).await;
    bought.assert_status(201);
    assert_eq!((bought.str("kind").as_str(), bought.str("status").as_str()), ("buy", "completed"));
    assert_eq!(server.position(&eur).await, (dec!(899.00), dec!(0)));
    assert_eq!(wallet_position(&server, &alice, &btc).await, (dec!(0.00333333), dec!(0)));
    // Replayed: the same order, nothing moves again; another body under the key: refused.
    let replay = server.post_keyed("/v1/crypto/orders", Some(&alice.token), "buy-1", order_body.clone()).await;
    replay.assert_status(201);
    assert_eq!(replay.str("id"), bought.str("id"));
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    server
        .post_keyed(
            "/v1/crypto/orders",
            Some(&alice.token),
            "buy-1",
            json!({"quote_id": uuid::Uuid::new_v4().to_string(), "fiat_account_id": eur}),
        )
        .await
        .assert_problem(409, "IDEMPOTENCY_KEY_REUSED");
    // A quote buys one order.
    server.post("/v1/crypto/orders", Some(&alice.token), order_body).await.assert_problem(404, "NOT_FOUND");
    assert_eq!(server.position(&eur).await, (dec!(899.00), dec!(0)));
    let read = server.get(&format!("/v1/crypto/orders/{}", bought.str("id")), Some(&alice.token)).await;
    assert_eq!(read.str("status"), "completed");
    server
        .get(&format!("/v1/crypto/orders/{}", bought.str("id")), Some(&bob.token))
        .await
        .assert_problem(404, "NOT_FOUND");

    // Sell it all back: 0.00333333 BTC fetch 99.99 EUR (rounded down), less a 1.00 fee.
    let bid = quote(&server, &alice, "side=sell&asset=BTC&fiat_currency=EUR&crypto_amount=0.00333333").await;
    bid.assert_status(200);
    assert_eq!((bid.str("fiat_amount").as_str(), bid.str("fee").as_str()), ("99.99", "1.00"));
    let sold = server
        .post("/v1/crypto/orders", Some(&alice.token), json!({"quote_id": bid.str("quote_id"), "fiat_account_id": eur}))
        .await;
    sold.assert_status(201);
    assert_eq!(sold.str("kind"), "sell");
    assert_eq!(server.position(&eur).await, (dec!(997.99), dec!(0)));
    assert_eq!(wallet_position(&server, &alice, &btc).await, (dec!(0), dec!(0)));
    let fees = server.engine.account(tally_engine::system_accounts::fees(Currency::EUR)).await.unwrap();
    assert_eq!(fees.balance(), dec!(2.00));

    // Eight orders at once on one quote, each under its own key: exactly one buys at it.
    let once = quote(&server, &alice, "side=buy&asset=BTC&fiat_currency=EUR&fiat_amount=10").await;
    once.assert_status(200);
    let body = json!({"quote_id": once.str("quote_id"), "fiat_account_id": eur});
    let racing = (0..8).map(|i| {
        let key = format!("race-{i}");
        let (server, token, body) = (&server, alice.token.clone(), body.clone());
        async move { server.post_keyed("/v1/crypto/orders", Some(&token), &key, body).await.status }
    });
    let mut statuses = futures::future::join_all(racing).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 404, 404, 404, 404, 404, 404, 404], "one order per quote");
    let paid: Decimal =
        once.str("fiat_amount").parse::<Decimal>().unwrap() + once.str("fee").parse::<Decimal>().unwrap();
    let after_race = dec!(997.99) - paid;
    assert_eq!(server.position(&eur).await, (after_race, dec!(0)));

    // More than the account holds: refused, nothing moves, the order is failed.
    let big = quote(&server, &alice, "side=buy&asset=BTC&fiat_currency=EUR&crypto_amount=1").await;
    big.assert_status(200);
    server
        .post("/v1/crypto/orders", Some(&alice.token), json!({"quote_id": big.str("quote_id"), "fiat_account_id": eur}))
        .await
        .assert_problem(422, "INSUFFICIENT_FUNDS");
    // Selling more than the wallet holds, likewise.
    let short = quote(&server, &alice, "side=sell&asset=BTC&fiat_currency=EUR&crypto_amount=1").await;
    server
        .post(
            "/v1/crypto/orders",
            Some(&alice.token),
            json!({"quote_id": short.str("quote_id"), "fiat_account_id": eur}),
        )
        .await
        .assert_problem(422, "INSUFFICIENT_FUNDS");
    assert_eq!(server.position(&eur).await, (after_race, dec!(0)));

    // Quote errors: no price, both amounts, neither, fiat as the asset, crypto as the fiat,
    // too many decimals, negative, a dust amount; no token.
    quote(&server, &alice, "side=buy&asset=ETH&fiat_currency=EUR&fiat_amount=10")
        .await
        .assert_problem(422, "FX_RATE_NOT_FOUND");
    for query in [
        "side=buy&asset=BTC&fiat_currency=EUR&fiat_amount=10&crypto_amount=1",
        "side=buy&asset=BTC&fiat_currency=EUR",
        "side=buy&asset=USD&fiat_currency=EUR&fiat_amount=10",
        "side=buy&asset=BTC&fiat_currency=ETH&fiat_amount=10",
        "side=buy&asset=BTC&fiat_currency=EUR&fiat_amount=10.001",
        "side=buy&asset=BTC&fiat_currency=EUR&fiat_amount=-10",
        "side=sell&asset=BTC&fiat_currency=EUR&crypto_amount=0.00000001",
        "side=hold&asset=BTC&fiat_currency=EUR&fiat_amount=10",
        "asset=BTC&fiat_currency=EUR&fiat_amount=10",
        "side=buy&asset=BTC&fiat_currency=EUR&fiat_amount=10&color=red",
    ] {
        quote(&server, &alice, query).await.assert_problem(400, "VALIDATION_ERROR");
    }
    server
        .get("/v1/crypto/quote?side=buy&asset=BTC&fiat_currency=EUR&fiat_amount=10", None)
        .await
        .assert_problem(401, "UNAUTHENTICATED");

    // An expired quote: QUOTE_EXPIRED, nothing moves.
    let stale = quote(&server, &alice, "side=buy&asset=BTC&fiat_currency=EUR&fiat_amount=10").await;
    server.clock.advance(Duration::from_secs(31));
    server
        .post(
            "/v1/crypto/orders",
            Some(&alice.token),
            json!({"quote_id": stale.str("quote_id"), "fiat_account_id": eur}),
        )
        .await
        .assert_problem(422, "QUOTE_EXPIRED");
    assert_eq!(server.position(&eur).await, (after_race, dec!(0)));

    let sums = tally_tests::assert_store_consistent(server.store.as_ref()).await;
    assert_eq!(sums.get(&Currency::BTC).copied().unwrap_or_default(), Decimal::ZERO);
    server.shutdown().await;
}

async fn an_order_whose_wallet_leg_fails_releases_the_fiat_hold(server: TestServer) {
    server.engine.set_fx_rate(Currency::BTC, Currency::USD, dec!(50000), None).await.expect("price set");
    let alice = server.user().await;
    let usd = server.open_account(&alice, "USD").await;
    server.fund(&usd, dec!(500)).await;
    let btc = open_wallet(&server, &alice, "BTC").await.str("id");
    let offer = quote(&server, &alice, "side=buy&asset=BTC&fiat_currency=USD&fiat_amount=100").await;
    offer.assert_status(200);

    // The wallet actor panics on every message: it restarts, then is quarantined; the order's
    // wallet leg fails and the saga releases the fiat hold.
    server.engine.faults().arm_panics(ActorKind::Wallet, 1_000);
    let body = json!({"quote_id": offer.str("quote_id"), "fiat_account_id": usd});
    let failed = server.post_keyed("/v1/crypto/orders", Some(&alice.token), "fault-1", body.clone()).await;
    assert_eq!(failed.status, 503, "{}", failed.text);
    assert!(["QUARANTINED", "OVERLOADED"].contains(&failed.body["code"].as_str().unwrap()), "{}", failed.text);
    server.engine.faults().disarm();
    server.engine.release_wallet_quarantine(WalletId::from_uuid(uuid::Uuid::parse_str(&btc).unwrap()));

    assert_eq!(server.position(&usd).await, (dec!(500.00), dec!(0)), "the fiat hold was released");
    assert_eq!(wallet_position(&server, &alice, &btc).await, (dec!(0), dec!(0)));
    let fx = server.engine.account(tally_engine::system_accounts::fx_clearing(Currency::BTC)).await.unwrap();
    assert_eq!((fx.balance(), fx.held()), (dec!(0), dec!(0)), "the FX clearing hold was released too");
    // The order is recorded failed without its key, and its quote is not used up: the client's
    // retry under the same key runs afresh (it does not replay the `503` for ever), once.
    let retry = server.post_keyed("/v1/crypto/orders", Some(&alice.token), "fault-1", body.clone()).await;
    retry.assert_status(201);
    assert_eq!(retry.str("status"), "completed");
    let (paid, bought) = (server.position(&usd).await, wallet_position(&server, &alice, &btc).await);
    assert!(paid.0 < dec!(500) && paid.1.is_zero() && bought.0 > dec!(0) && bought.1.is_zero(), "{paid:?} {bought:?}");
    let replay = server.post_keyed("/v1/crypto/orders", Some(&alice.token), "fault-1", body).await;
    replay.assert_status(201);
    assert_eq!(replay.str("id"), retry.str("id"));
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(server.position(&usd).await, paid, "paid once");
    assert_eq!(wallet_position(&server, &alice, &btc).await, bought);
    server.shutdown().await;
}

async fn a_withdrawal_refused_as_unavailable_gives_its_key_back(server: TestServer) {
    let alice = server.user().await;
    let opened = open_wallet(&server, &alice, "ETH").await;
    let (id, address) = (opened.str("id"), opened.str("deposit_address"));
    deposit(&server, &address, "2", "0xfund-busy").await.assert_status(200);
    let body = json!({"wallet_id": id, "amount": "0.5", "address": "0xdestination"});

    // The wallet actor panics on every message: the withdrawal's hold cannot be placed.
    server.engine.faults().arm_panics(ActorKind::Wallet, 1_000);
    let refused = server.post_keyed("/v1/crypto/withdrawals", Some(&alice.token), "w-busy", body.clone()).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    server.engine.faults().disarm();
    server.engine.release_wallet_quarantine(WalletId::from_uuid(uuid::Uuid::parse_str(&id).unwrap()));
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(2), dec!(0)), "nothing held");

    // The retry under the same key runs afresh: held once, and replayed after.
    let held = server.post_keyed("/v1/crypto/withdrawals", Some(&alice.token), "w-busy", body.clone()).await;
    held.assert_status(202);
    assert_eq!(held.str("status"), "pending");
    let replay = server.post_keyed("/v1/crypto/withdrawals", Some(&alice.token), "w-busy", body).await;
    replay.assert_status(202);
    assert_eq!(replay.str("id"), held.str("id"));
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(2), dec!(0.5)), "held once");
    server.shutdown().await;
}

async fn a_deposit_whose_wallet_is_unavailable_is_finished_by_the_custodians_retry(server: TestServer) {
    let alice = server.user().await;
    let opened = open_wallet(&server, &alice, "USDC").await;
    let (id, address) = (opened.str("id"), opened.str("deposit_address"));
    server.engine.faults().arm_panics(ActorKind::Wallet, 1_000);
    let first = deposit(&server, &address, "25", "tx-retry").await;
    assert_eq!(first.status, 503, "{}", first.text);
    server.engine.faults().disarm();
    server.engine.release_wallet_quarantine(WalletId::from_uuid(uuid::Uuid::parse_str(&id).unwrap()));
    let retry = deposit(&server, &address, "25", "tx-retry").await;
    retry.assert_status(200);
    assert_eq!(retry.body["operation"]["status"], "completed");
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(25), dec!(0)));
    deposit(&server, &address, "25", "tx-retry").await.assert_status(200);
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(25), dec!(0)), "one credit per tx_hash");
    server.shutdown().await;
}

tally_tests::on_both_stores!(
    wallets_open_one_per_asset_and_refuse_bad_input,
    deposits_credit_once_per_tx_hash_and_need_a_valid_signature,
    withdrawals_are_held_until_the_custodian_confirms_or_fails_them,
    a_withdrawal_refused_as_unavailable_gives_its_key_back,
    buy_and_sell_move_fiat_and_crypto_through_fx_clearing,
    an_order_whose_wallet_leg_fails_releases_the_fiat_hold,
    a_deposit_whose_wallet_is_unavailable_is_finished_by_the_custodians_retry,
    a_hex_tx_hash_in_another_case_is_the_same_transaction,
);

/// `0x5C50…`, `0x5c50…` and `5c50…` are one chain transaction: a custodian's re-report with the
/// hash in another case or without its `0x` is a repeat, not a second credit (it credited the wallet twice: money created;
/// found by a review). A withdrawal's confirm under its hash in another case is its repeat too.
/// A hash that is not hexadecimal keeps its case (base58 hashes are case-sensitive).
async fn a_hex_tx_hash_in_another_case_is_the_same_transaction(server: TestServer) {
    let alice = server.user().await;
    let opened = open_wallet(&server, &alice, "ETH").await;
    let (id, address) = (opened.str("id"), opened.str("deposit_address"));
    let hash = "0x5C504ED432CB51138BCF09AA5E8A410DD4A1E204EF84BFED1BE16DFBA1B22060";
    deposit(&server, &address, "1", hash).await.assert_status(200);
    let again = deposit(&server, &address, "1", &hash.to_ascii_lowercase()).await;
    again.assert_status(200);
    assert_eq!(again.body["duplicate"], true, "{}", again.text);
    // Without its `0x` it is the same transaction too (custodians differ on the prefix), and
    // the other way round: a bare hash reported first is found again with `0x`.
    let bare = deposit(&server, &address, "1", &hash[2..]).await;
    assert_eq!(bare.body["duplicate"], true, "{}", bare.text);
    let other_hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    deposit(&server, &address, "1", other_hash).await.assert_status(200);
    let prefixed = deposit(&server, &address, "1", &format!("0X{}", other_hash.to_ascii_uppercase())).await;
    assert_eq!(prefixed.body["duplicate"], true, "{}", prefixed.text);
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(2), dec!(0)));
    // Base58 (no hex): case-sensitive, two transactions.
    deposit(&server, &address, "1", "5VfYmGBjvxKfKQ").await.assert_status(200);
    let other = deposit(&server, &address, "1", "5vfymgbjvxkfkq").await;
    assert_eq!(other.body["duplicate"], false, "{}", other.text);
    assert_eq!(wallet_position(&server, &alice, &id).await, (dec!(4), dec!(0)));
    server.shutdown().await;
}
