//! The crypto histories over a real socket on both stores: `GET /v1/crypto/orders`,
//! `GET /v1/crypto/withdrawals` and `GET /v1/wallets/{id}/transactions`, checked against the
//! database's own `crypto_ops` and `wallet_postings` rows: the caller's only, newest first,
//! every row once at every page size, rows added between pages never shifting a later page,
//! each item as it stands now; bad pages and foreign wallets refused; and each page one
//! range scan of its index (the plans of the very SQL the stores run).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use sqlx::Connection;
use tally_engine::{Currency, Timestamp};
use tally_http::crypto::{custodian_signature, set_custodian_secret};
use tally_persistence::reads::crypto::{CryptoHistory, op_page_sql, wallet_posting_page_sql};
use tally_tests::http::{Backend, Reply, TestServer, TestUser};
use tally_tests::on_both_stores;

on_both_stores!(
    orders_and_withdrawals_page_newest_first_as_the_store_holds_them,
    wallet_transactions_are_the_wallet_s_postings_newest_first,
    bad_pages_are_refused_and_histories_are_the_caller_s_only,
    each_page_is_one_range_scan_of_its_index,
    withdrawals_count_against_the_owner_s_limits,
    wallet_transactions_keep_their_order_while_the_clock_is_behind_the_bookings,
);

const SECRET: &str = "test-custodian-secret";

async fn signed(server: &TestServer, body: Value) -> Reply {
    set_custodian_secret(SECRET);
    let bytes = serde_json::to_vec(&body).unwrap();
    let signature = custodian_signature(SECRET.as_bytes(), &bytes);
    let request = server
        .client
        .post(server.url("/v1/webhooks/custodian"))
        .header("content-type", "application/json")
        .header("x-custodian-signature", signature)
        .body(bytes);
    server.send(request).await
}

/// A user with a funded EUR account and a BTC wallet holding `btc` from a deposit.
struct Trader {
    user: TestUser,
    eur: String,
    wallet: String,
}

async fn trader(server: &TestServer, btc: &str) -> Trader {
    let user = server.user().await;
    let eur = server.open_account(&user, "EUR").await;
    server.fund(&eur, dec!(10000)).await;
    let opened = server.post("/v1/wallets", Some(&user.token), json!({"asset": "BTC"})).await;
    opened.assert_status(201);
    let wallet = opened.str("id");
    let deposit = signed(
        server,
        json!({"event": "deposit", "address": opened.str("deposit_address"), "amount": btc,
               "tx_hash": format!("tx-{}", uuid::Uuid::new_v4().simple())}),
    )
    .await;
    deposit.assert_status(200);
    Trader { user, eur, wallet }
}

/// A buy (`fiat_amount` EUR of BTC) or a sell (`crypto_amount` BTC) at the current price.
async fn order(server: &TestServer, trader: &Trader, side: &str, amount: &str) -> String {
    let amount_field = if side == "buy" { "fiat_amount" } else { "crypto_amount" };
    let quote = server
        .get(
            &format!("/v1/crypto/quote?side={side}&asset=BTC&fiat_currency=EUR&{amount_field}={amount}"),
            Some(&trader.user.token),
        )
        .await;
    quote.assert_status(200);
    let placed = server
        .post(
            "/v1/crypto/orders",
            Some(&trader.user.token),
            json!({"quote_id": quote.str("quote_id"), "fiat_account_id": trader.eur}),
        )
        .await;
    placed.assert_status(201);
    placed.str("id")
}

async fn withdraw(server: &TestServer, trader: &Trader, amount: &str) -> String {
    let held = server
        .post(
            "/v1/crypto/withdrawals",
            Some(&trader.user.token),
            json!({"wallet_id": trader.wallet, "amount": amount, "address": "bc1qexample"}),
        )
        .await;
    held.assert_status(202);
    held.str("id")
}

async fn settle(server: &TestServer, withdrawal: &str, confirmed: bool) {
    let event = if confirmed { "withdrawal.confirmed" } else { "withdrawal.failed" };
    let reply = signed(
        server,
        json!({"event": event, "withdrawal_id": withdrawal, "tx_hash": format!("out-{}", uuid::Uuid::new_v4().simple())}),
    )
    .await;
    reply.assert_status(200);
}

/// Rows of one SQL text from the server's database, behind the API's back.
async fn rows<T>(server: &TestServer, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    T: Send + Unpin,
{
    match server.backend {
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut db).await.unwrap()
        }
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut db).await.unwrap()
        }
    }
}

/// The ids of `owner`'s operations of `kinds` as the database holds them, newest first by
/// (created_at, id).
async fn stored_ops(server: &TestServer, owner: &str, kinds: &[&str]) -> Vec<String> {
    let mut ops: Vec<(String, String, i64)> = rows(
        server,
        &format!("SELECT CAST(id AS TEXT), kind, created_at FROM crypto_ops WHERE CAST(owner_id AS TEXT) = '{owner}'"),
    )
    .await;
    ops.retain(|(_, kind, _)| kinds.contains(&kind.as_str()));
    ops.sort_by(|a, b| (b.2, &b.0).cmp(&(a.2, &a.0)));
    ops.into_iter().map(|(id, _, _)| id).collect()
}

/// Every page of `path` (no cursor yet) at `limit`, following `next_cursor`.
async fn walk(server: &TestServer, token: &str, path: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(cursor) => format!("{path}{separator}limit={limit}&cursor={cursor}"),
            None => format!("{path}{separator}limit={limit}"),
        };
        let page = server.get(&url, Some(token)).await;
        page.assert_status(200);
        let lines = page.body["items"].as_array().unwrap();
        assert!(lines.len() <= limit as usize, "{}", page.text);
        items.extend(lines.iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("pagination did not terminate");
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect()
}

async fn orders_and_withdrawals_page_newest_first_as_the_store_holds_them(server: TestServer) {
    server.engine.set_fx_rate(Currency::BTC, Currency::EUR, dec!(30000), None).await.unwrap();
    let alice = trader(&server, "1").await;
    let bob = trader(&server, "1").await;
    for _ in 0..4 {
        order(&server, &alice, "buy", "30").await;
    }
    for _ in 0..3 {
        order(&server, &alice, "sell", "0.001").await;
    }
    let withdrawals: Vec<String> = futures::future::join_all((0..5).map(|_| withdraw(&server, &alice, "0.01"))).await;
    settle(&server, &withdrawals[1], true).await;
    settle(&server, &withdrawals[3], false).await;
    let bobs_order = order(&server, &bob, "buy", "10").await;
    let bobs_withdrawal = withdraw(&server, &bob, "0.5").await;

    let token = alice.user.token.as_str();
    for (path, kinds) in [("/v1/crypto/orders", &["buy", "sell"][..]), ("/v1/crypto/withdrawals", &["withdrawal"][..])]
    {
        let expected = stored_ops(&server, &alice.user.user_id, kinds).await;
        assert_eq!(expected.len(), if kinds.len() == 2 { 7 } else { 5 });
        for limit in [1, 2, 200] {
            let items = walk(&server, token, path, limit).await;
            assert_eq!(ids(&items), expected, "{path} at limit {limit}: every operation once, newest first");
            // Each item is the operation as it stands now, as its own route shows it.
            for item in &items {
                let single = server.get(&format!("{path}/{}", item["id"].as_str().unwrap()), Some(token)).await;
                assert_eq!(item, &single.body, "{path}");
                assert!(kinds.contains(&item["kind"].as_str().unwrap()));
            }
        }
        // The default page holds up to 50.
        let page = server.get(path, Some(token)).await;
        assert_eq!(ids(page.body["items"].as_array().unwrap()), expected);
        assert_eq!(page.body["next_cursor"], Value::Null);
    }
    let listed = walk(&server, token, "/v1/crypto/withdrawals", 200).await;
    let status_of = |id: &str| listed.iter().find(|item| item["id"] == id).unwrap()["status"].clone();
    assert_eq!(status_of(&withdrawals[1]), "completed");
    assert_eq!(status_of(&withdrawals[3]), "failed");
    assert_eq!(status_of(&withdrawals[0]), "pending");

    // Bob sees his own only, and Alice none of his.
    let bobs = walk(&server, &bob.user.token, "/v1/crypto/orders", 50).await;
    assert_eq!(ids(&bobs), std::slice::from_ref(&bobs_order));
    assert_eq!(
        ids(&walk(&server, &bob.user.token, "/v1/crypto/withdrawals", 50).await),
        std::slice::from_ref(&bobs_withdrawal)
    );
    assert!(!ids(&walk(&server, token, "/v1/crypto/orders", 200).await).contains(&bobs_order));

    // Orders placed between pages are newer than the cursor: the rest of the walk is exactly
    // what followed the first page before, and a new walk starts with them.
    let before = stored_ops(&server, &alice.user.user_id, &["buy", "sell"]).await;
    let first = server.get("/v1/crypto/orders?limit=3", Some(token)).await;
    assert_eq!(ids(first.body["items"].as_array().unwrap()), before[..3]);
    let newer = [order(&server, &alice, "buy", "5").await, order(&server, &alice, "sell", "0.0001").await];
    let mut rest = Vec::new();
    let mut cursor = first.str("next_cursor");
    loop {
        let page = server.get(&format!("/v1/crypto/orders?limit=3&cursor={cursor}"), Some(token)).await;
        page.assert_status(200);
        rest.extend(ids(page.body["items"].as_array().unwrap()));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(rest, before[3..], "no repeat, no shift");
    let again = ids(&walk(&server, token, "/v1/crypto/orders", 4).await);
    assert_eq!(again[..2], [newer[1].clone(), newer[0].clone()]);
    assert_eq!(again[2..], before[..]);
    server.shutdown().await;
}

type PostingRow = (i64, i64, String, String, String, String, String);

async fn wallet_transactions_are_the_wallet_s_postings_newest_first(server: TestServer) {
    server.engine.set_fx_rate(Currency::BTC, Currency::EUR, dec!(30000), None).await.unwrap();
    let alice = trader(&server, "0.5").await;
    let bob = trader(&server, "0.25").await;
    let buy = order(&server, &alice, "buy", "300").await;
    let sell = order(&server, &alice, "sell", "0.0001").await;
    let confirmed = withdraw(&server, &alice, "0.1").await;
    settle(&server, &confirmed, true).await;
    let failed = withdraw(&server, &alice, "0.2").await;
    settle(&server, &failed, false).await;
    let pending = withdraw(&server, &alice, "0.05").await;

    let postings: Vec<PostingRow> = rows(
        &server,
        &format!(
            "SELECT CAST(shard AS BIGINT), seq, CAST(transfer_id AS TEXT), direction, CAST(amount AS TEXT),
                    CAST(balance_after AS TEXT), asset
             FROM wallet_postings WHERE CAST(wallet_id AS TEXT) = '{}' ORDER BY booked_at DESC, shard DESC, seq DESC",
            alice.wallet
        ),
    )
    .await;
    let ops: Vec<(String, String, i64)> =
        rows(&server, "SELECT CAST(id AS TEXT), kind, created_at FROM crypto_ops").await;
    // Deposit, buy, sell, confirmed withdrawal: the failed and the pending ones posted nothing.
    assert_eq!(postings.len(), 4, "{postings:?}");
    let posted: Vec<&str> = postings.iter().map(|row| row.2.as_str()).collect();
    assert_eq!(posted[..3], [confirmed.as_str(), sell.as_str(), buy.as_str()]);
    assert!(!posted.contains(&failed.as_str()) && !posted.contains(&pending.as_str()));

    let path = format!("/v1/wallets/{}/transactions", alice.wallet);
    for limit in [1, 3, 200] {
        let items = walk(&server, &alice.user.token, &path, limit).await;
        assert_eq!(items.len(), postings.len(), "every posting once at limit {limit}");
        for (item, (shard, seq, operation, direction, amount, balance_after, asset)) in items.iter().zip(&postings) {
            let (_, kind, created_at) = ops.iter().find(|(id, ..)| id == operation).unwrap();
            let id = (u128::try_from(*shard).unwrap() << 64) | u128::try_from(*seq).unwrap();
            assert_eq!(item["id"], uuid::Uuid::from_u128(id).to_string(), "the shard and sequence as one UUID");
            assert_eq!(item["operation_id"], operation.as_str());
            assert_eq!(item["kind"], kind.as_str());
            assert_eq!(item["direction"], direction.as_str());
            assert_eq!(item["asset"], asset.as_str());
            for (field, stored) in [("amount", amount), ("balance_after", balance_after)] {
                let text = item[field].as_str().unwrap();
                assert_eq!(Decimal::from_str(text).unwrap(), Decimal::from_str(stored).unwrap(), "{field}");
                assert_eq!(text.split_once('.').unwrap().1.len(), 8, "{text} at BTC's scale");
            }
            let at = time::OffsetDateTime::parse(
                item["created_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert_eq!(i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap(), *created_at);
        }
    }
    // The newest balance is the wallet's posted balance.
    let wallet = server.get(&format!("/v1/wallets/{}", alice.wallet), Some(&alice.user.token)).await;
    let newest = server.get(&format!("{path}?limit=1"), Some(&alice.user.token)).await;
    assert_eq!(newest.body["items"][0]["balance_after"], wallet.body["balance"]);

    // Another user's wallet, or none at all, is 404; a malformed id 400.
    server.get(&path, Some(&bob.user.token)).await.assert_problem(404, "NOT_FOUND");
    server
        .get(&format!("/v1/wallets/{}/transactions", uuid::Uuid::new_v4()), Some(&alice.user.token))
        .await
        .assert_problem(404, "NOT_FOUND");
    server.get("/v1/wallets/nope/transactions", Some(&alice.user.token)).await.assert_problem(400, "VALIDATION_ERROR");
    let bobs = walk(&server, &bob.user.token, &format!("/v1/wallets/{}/transactions", bob.wallet), 10).await;
    assert_eq!(bobs.len(), 1, "Bob's deposit only");
    assert_eq!(bobs[0]["kind"], "deposit");
    server.shutdown().await;
}

async fn bad_pages_are_refused_and_histories_are_the_caller_s_only(server: TestServer) {
    server.engine.set_fx_rate(Currency::BTC, Currency::EUR, dec!(30000), None).await.unwrap();
    let alice = trader(&server, "1").await;
    for _ in 0..2 {
        order(&server, &alice, "buy", "30").await;
        withdraw(&server, &alice, "0.01").await;
    }
    let token = alice.user.token.as_str();
    let wallet_path = format!("/v1/wallets/{}/transactions", alice.wallet);
    let cursor_of = |path: String| {
        let server = &server;
        async move { server.get(&format!("{path}?limit=1"), Some(token)).await.str("next_cursor") }
    };
    let orders_cursor = cursor_of("/v1/crypto/orders".to_owned()).await;
    let withdrawals_cursor = cursor_of("/v1/crypto/withdrawals".to_owned()).await;
    let wallet_cursor = cursor_of(wallet_path.clone()).await;
    let account = server.open_account(&alice.user, "USD").await;
    server.fund(&account, dec!(1)).await;
    server.fund(&account, dec!(1)).await;
    let postings_cursor = cursor_of(format!("/v1/accounts/{account}/transactions")).await;

    for (path, foreign) in [
        ("/v1/crypto/orders".to_owned(), [withdrawals_cursor.clone(), wallet_cursor.clone()]),
        ("/v1/crypto/withdrawals".to_owned(), [orders_cursor.clone(), postings_cursor.clone()]),
        (wallet_path.clone(), [orders_cursor.clone(), postings_cursor.clone()]),
    ] {
        let mut cases: Vec<(String, &str)> =
            ["0", "201", "-1", "ten", ""].into_iter().map(|limit| (format!("{path}?limit={limit}"), "limit")).collect();
        cases.push((format!("{path}?cursor=nonsense"), "cursor"));
        cases.extend(foreign.iter().map(|cursor| (format!("{path}?cursor={cursor}"), "cursor")));
        for (url, field) in &cases {
            let reply = server.get(url, Some(token)).await;
            reply.assert_problem(400, "VALIDATION_ERROR");
            assert_eq!(reply.error_fields(), vec![(*field).to_owned()], "{url}: {}", reply.text);
        }
        server.get(&format!("{path}?status=pending"), Some(token)).await.assert_problem(400, "VALIDATION_ERROR");
        server.get(&format!("{path}?limit=200"), Some(token)).await.assert_status(200);
        server.get(&path, None).await.assert_problem(401, "UNAUTHENTICATED");
        server.get(&path, Some("not.a.token")).await.assert_problem(401, "UNAUTHENTICATED");
        let key = server
            .post("/v1/api-keys", Some(token), json!({"name": "k", "scopes": ["accounts:read", "transfers:read"]}))
            .await
            .str("key");
        server
            .send(server.client.get(server.url(&path)).header("x-api-key", key))
            .await
            .assert_problem(403, "FORBIDDEN");
    }
    // A user with no crypto at all has empty histories.
    let carol = server.user().await;
    for path in ["/v1/crypto/orders", "/v1/crypto/withdrawals"] {
        let page = server.get(path, Some(&carol.token)).await;
        assert_eq!(page.body, json!({"items": [], "next_cursor": null}));
    }
    server.shutdown().await;
}

async fn each_page_is_one_range_scan_of_its_index(server: TestServer) {
    let owner = uuid::Uuid::new_v4();
    let after = (1_749_945_600_000_000_i64, uuid::Uuid::new_v4());
    let checks = [
        (CryptoHistory::Orders, false),
        (CryptoHistory::Orders, true),
        (CryptoHistory::Withdrawals, false),
        (CryptoHistory::Withdrawals, true),
    ];
    match server.backend {
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
            // With sequential scans, bitmap scans and sorts priced out, a plan that can walk the
            // index in the page's order does; one that cannot still scans or sorts (disabled
            // only raises their cost), and the assertions below see it. On these near-empty
            // tables the planner would otherwise pick a bitmap scan and a sort of two rows.
            for setting in ["SET enable_seqscan = off", "SET enable_bitmapscan = off", "SET enable_sort = off"] {
                sqlx::query(setting).execute(&mut db).await.unwrap();
            }
            for (history, with_cursor) in checks {
                let sql = format!("EXPLAIN {}", op_page_sql(history, with_cursor));
                let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(owner).bind(50_i64);
                if with_cursor {
                    query = query.bind(after.0).bind(after.1);
                }
                let plan: Vec<String> =
                    query.fetch_all(&mut db).await.unwrap().into_iter().map(|(line,)| line).collect();
                let text = plan.join("\n");
                // An index-only scan is as good: the index holds both columns the page reads.
                assert!(text.contains(&format!("Backward using {}", history.index())), "{history:?}:\n{text}");
                assert!(!text.contains("Sort") && !text.contains("Seq Scan"), "{history:?}:\n{text}");
            }
            for with_cursor in [false, true] {
                let sql = format!("EXPLAIN {}", wallet_posting_page_sql(with_cursor));
                let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(owner).bind(50_i64);
                if with_cursor {
                    query = query.bind(after.0).bind(0_i16).bind(1_000_i64);
                }
                let plan: Vec<String> =
                    query.fetch_all(&mut db).await.unwrap().into_iter().map(|(line,)| line).collect();
                let text = plan.join("\n");
                assert!(text.contains("Backward using wallet_postings_by_wallet"), "{text}");
                assert!(!text.contains("Sort") && !text.contains("Seq Scan"), "{text}");
            }
        }
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
            let owner = owner.hyphenated().to_string();
            for (history, with_cursor) in checks {
                let sql = format!("EXPLAIN QUERY PLAN {}", op_page_sql(history, with_cursor));
                let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&sql).bind(&owner).bind(50_i64);
                if with_cursor {
                    query = query.bind(after.0).bind(after.1.hyphenated().to_string());
                }
                let plan: Vec<String> =
                    query.fetch_all(&mut db).await.unwrap().into_iter().map(|(.., detail)| detail).collect();
                let text = plan.join("\n");
                assert!(text.contains(&format!("INDEX {} (owner_id=?", history.index())), "{history:?}:\n{text}");
                assert!(!text.contains("TEMP B-TREE") && !text.contains("SCAN crypto_ops"), "{history:?}:\n{text}");
            }
            for with_cursor in [false, true] {
                let sql = format!("EXPLAIN QUERY PLAN {}", wallet_posting_page_sql(with_cursor));
                let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&sql).bind(&owner).bind(50_i64);
                if with_cursor {
                    query = query.bind(after.0).bind(0_i64).bind(1_000_i64);
                }
                let plan: Vec<String> =
                    query.fetch_all(&mut db).await.unwrap().into_iter().map(|(.., detail)| detail).collect();
                let text = plan.join("\n");
                assert!(text.contains("INDEX wallet_postings_by_wallet (wallet_id=?"), "{text}");
                assert!(!text.contains("TEMP B-TREE") && !text.contains("SCAN wp"), "{text}");
            }
        }
    }
    server.shutdown().await;
}

/// Crypto withdrawals are checked in their step 1 against the owner's level (here `none`, with
/// a daily BTC maximum of 0.3): what does not fit is `422 VERIFICATION_LIMIT_EXCEEDED` before
/// anything is held, and a withdrawal the custodian fails gives its amount back.
async fn withdrawals_count_against_the_owner_s_limits(server: TestServer) {
    let admin = server.admin(&["limits:write"]).await;
    server
        .send_with(
            reqwest::Method::PUT,
            "/v1/admin/limits/none",
            Some(&admin.token),
            None,
            Some(json!({"limits": [{"currency": "BTC", "daily_max": "0.3"}]})),
        )
        .await
        .assert_status(200);
    let alice = trader(&server, "1").await;
    let used = || async {
        let mine = server.get("/v1/users/me/limits", Some(&alice.user.token)).await;
        mine.assert_status(200);
        mine.body["limits"][0]["used_today"].as_str().unwrap().to_owned()
    };
    let first = withdraw(&server, &alice, "0.2").await;
    assert_eq!(used().await, "0.20000000");
    let refused = server
        .post(
            "/v1/crypto/withdrawals",
            Some(&alice.user.token),
            json!({"wallet_id": alice.wallet, "amount": "0.2", "address": "bc1qexample"}),
        )
        .await;
    refused.assert_problem(422, "VERIFICATION_LIMIT_EXCEEDED");
    let held: Vec<(String,)> = rows(&server, "SELECT CAST(id AS TEXT) FROM crypto_ops WHERE kind = 'withdrawal'").await;
    assert_eq!(held, vec![(first.clone(),)], "the refused withdrawal left nothing");
    settle(&server, &first, false).await;
    assert_eq!(used().await, "0.00000000", "a failed withdrawal gives its amount back");
    withdraw(&server, &alice, "0.3").await;
    assert_eq!(used().await, "0.30000000");
    server.shutdown().await;
}

/// Wallet transactions are ordered by (booking time, shard, seq): a wallet's postings have no
/// number of their own to break a tie, and a crypto operation's records go to its own shard's
/// journal. While the clock was behind the latest booking, batches of every journal were booked
/// at that one instant, and the wallet's postings listed in shard order, not as applied.
/// Booking times are strictly increasing now (found by a review).
async fn wallet_transactions_keep_their_order_while_the_clock_is_behind_the_bookings(server: TestServer) {
    let alice = server.user().await;
    let opened = server.post("/v1/wallets", Some(&alice.token), json!({"asset": "BTC"})).await;
    opened.assert_status(201);
    let (wallet, address) = (opened.str("id"), opened.str("deposit_address"));
    let floor = server.engine.now().as_micros() + 60_000_000;
    server.engine.journals().book_no_earlier_than(Timestamp::from_micros(floor));
    // Twelve deposits one after another: the wallet's balance rises with each.
    for n in 1..=12 {
        let deposit = signed(
            &server,
            json!({"event": "deposit", "address": address, "amount": format!("0.{n:02}"),
                   "tx_hash": format!("tx-{}", uuid::Uuid::new_v4().simple())}),
        )
        .await;
        deposit.assert_status(200);
    }
    let items = walk(&server, &alice.token, &format!("/v1/wallets/{wallet}/transactions"), 200).await;
    assert_eq!(items.len(), 12);
    let balances: Vec<Decimal> =
        items.iter().map(|item| Decimal::from_str(item["balance_after"].as_str().unwrap()).unwrap()).collect();
    let mut newest_first = balances.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(balances, newest_first, "newest first, each balance_after below the one listed before it");
    let wallet_now = server.get(&format!("/v1/wallets/{wallet}"), Some(&alice.token)).await;
    assert_eq!(items[0]["balance_after"], wallet_now.body["balance"], "the newest line is the balance");
    server.shutdown().await;
}
