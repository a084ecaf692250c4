//! `/v1/accounts` over a real socket: a customer opens, lists and reads their own accounts;
//! bad input and other users' accounts are refused, and nothing is opened by a refusal.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rust_decimal_macros::dec;
use serde_json::json;
use tally_engine::Currency;
use tally_engine::system_accounts::settlement;
use tally_tests::http::TestServer;
use tally_tests::on_both_stores;

on_both_stores!(
    a_customer_opens_lists_and_reads_their_accounts,
    bad_account_input_is_refused_and_opens_nothing,
    another_users_account_is_not_found_just_like_a_missing_one,
);

async fn a_customer_opens_lists_and_reads_their_accounts(server: TestServer) {
    let user = server.user().await;
    let usd = server.post("/v1/accounts", Some(&user.token), json!({"currency": "USD"})).await;
    usd.assert_status(201);
    let usd_id = usd.str("id");
    assert_eq!(usd.headers["location"], format!("/v1/accounts/{usd_id}").as_str());
    assert_eq!(usd.str("user_id"), user.user_id);
    assert_eq!(usd.str("currency"), "USD");
    assert_eq!(usd.str("status"), "active");
    for field in ["balance", "held", "available_balance", "credit_limit"] {
        assert_eq!(usd.str(field), "0.00", "{field} as a string at scale 2");
    }
    assert!(usd.str("created_at").ends_with('Z'));
    let jpy = server.post("/v1/accounts", Some(&user.token), json!({"currency": "JPY"})).await;
    jpy.assert_status(201);
    assert_eq!(jpy.str("balance"), "0", "JPY has no decimals");
    let eth_id = server.open_account(&user, "ETH").await;

    server.fund(&usd_id, dec!(12.5)).await;
    let list = server.get("/v1/accounts", Some(&user.token)).await;
    list.assert_status(200);
    let items = list.body["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|item| item["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![usd_id.as_str(), jpy.str("id").as_str(), eth_id.as_str()], "oldest first");
    assert_eq!(items[0]["balance"], "12.50", "live balance, not a stale snapshot");
    assert_eq!(items[2]["balance"], "0.000000000000000000");

    let one = server.get(&format!("/v1/accounts/{usd_id}"), Some(&user.token)).await;
    one.assert_status(200);
    assert_eq!(one.str("available_balance"), "12.50");

    // Another user's list does not show them.
    let other = server.user().await;
    let theirs = server.get("/v1/accounts", Some(&other.token)).await;
    assert_eq!(theirs.body["items"], json!([]));
    server.shutdown().await;
}

async fn bad_account_input_is_refused_and_opens_nothing(server: TestServer) {
    let user = server.user().await;
    let token = Some(user.token.as_str());
    let refused = [
        server.post("/v1/accounts", token, json!({"currency": "XXX"})).await,
        server.post("/v1/accounts", token, json!({"currency": "usd"})).await,
        server.post("/v1/accounts", token, json!({"currency": 840})).await,
        server.post("/v1/accounts", token, json!({})).await,
        server.post("/v1/accounts", token, json!({"currency": "USD", "credit_limit": "1000"})).await,
        server.post_raw("/v1/accounts", token, "application/json", b"{\"currency\": ".to_vec()).await,
    ];
    for reply in &refused {
        reply.assert_problem(400, "VALIDATION_ERROR");
    }
    assert_eq!(refused[0].error_fields(), vec!["currency"]);
    server
        .post_raw("/v1/accounts", token, "text/plain", br#"{"currency": "USD"}"#.to_vec())
        .await
        .assert_problem(415, "VALIDATION_ERROR");
    let mut oversized = br#"{"currency": "USD", "padding": ""#.to_vec();
    oversized.extend(std::iter::repeat_n(b'x', tally_http::BODY_BYTES_MAX));
    oversized.extend(br#""}"#);
    server.post_raw("/v1/accounts", token, "application/json", oversized).await.assert_problem(413, "VALIDATION_ERROR");
    server.post("/v1/accounts", None, json!({"currency": "USD"})).await.assert_problem(401, "UNAUTHENTICATED");

    let list = server.get("/v1/accounts", token).await;
    assert_eq!(list.body["items"], json!([]), "no refused request opened an account");
    server.shutdown().await;
}

async fn another_users_account_is_not_found_just_like_a_missing_one(server: TestServer) {
    let owner = server.user().await;
    let stranger = server.user().await;
    let account = server.open_account(&owner, "USD").await;
    let theirs = server.get(&format!("/v1/accounts/{account}"), Some(&stranger.token)).await;
    theirs.assert_problem(404, "NOT_FOUND");
    let missing = server.get(&format!("/v1/accounts/{}", uuid::Uuid::new_v4()), Some(&stranger.token)).await;
    missing.assert_problem(404, "NOT_FOUND");
    assert_eq!(theirs.body["detail"], missing.body["detail"], "existence does not leak");
    // System accounts have no owner, so they are nobody's.
    let system = server.get(&format!("/v1/accounts/{}", settlement(Currency::USD)), Some(&owner.token)).await;
    system.assert_problem(404, "NOT_FOUND");
    let malformed = server.get("/v1/accounts/not-a-uuid", Some(&owner.token)).await;
    malformed.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(malformed.error_fields(), vec!["id"]);
    server.get(&format!("/v1/accounts/{account}"), None).await.assert_problem(401, "UNAUTHENTICATED");
    server.shutdown().await;
}
