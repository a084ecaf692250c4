//! The listings over a real socket: `GET /v1/transfers` (the caller's only, newest first,
//! every transfer exactly once across pages even while new ones arrive), the admin transfer
//! and account listings and counts with each filter and their permissions, and an account's
//! transactions and balance history against the postings the store holds; `order=oldest_first`
//! walks the pending queue from its oldest transfer, and a customer's transfers (both sides of
//! each of their accounts) page by page.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tally_tests::http::{TestServer, TestUser, account_id};
use tally_tests::on_both_stores;

on_both_stores!(
    pagination_walks_every_transfer_once_newest_first_across_concurrent_inserts,
    the_status_filter_applies_and_another_users_transfers_are_never_listed,
    bad_query_parameters_are_refused_and_a_token_is_needed,
    admin_listings_and_counts_apply_each_filter_and_need_their_permission,
    transactions_and_balance_history_match_the_postings,
    oldest_first_walks_the_pending_queue_from_its_oldest_transfer_and_cursors_keep_their_order,
    oldest_first_pages_a_customers_transfers_over_both_sides_of_every_account,
);

fn internal(source: &str, destination: &str, amount: &str) -> Value {
    json!({"type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": amount})
}

async fn alice_and_bob(server: &TestServer) -> (TestUser, String, TestUser, String) {
    let alice = server.user().await;
    let bob = server.user().await;
    let from = server.open_account(&alice, "USD").await;
    let to = server.open_account(&bob, "USD").await;
    server.fund(&from, dec!(100)).await;
    (alice, from, bob, to)
}

async fn send(server: &TestServer, user: &TestUser, source: &str, destination: &str, amount: &str) -> String {
    let reply = server.post("/v1/transfers", Some(&user.token), internal(source, destination, amount)).await;
    reply.assert_status(201);
    reply.str("id")
}

/// Every page of `path` (which has no query yet), following `next_cursor`; `between` runs
/// after the first page.
async fn walk(server: &TestServer, token: &str, path: &str, limit: u32) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cursor) => format!("{path}?limit={limit}&cursor={cursor}"),
            None => format!("{path}?limit={limit}"),
        };
        let page = server.get(&url, Some(token)).await;
        page.assert_status(200);
        let items = page.body["items"].as_array().unwrap().clone();
        assert!(items.len() <= limit as usize);
        pages.push(items);
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return pages,
        }
        assert!(pages.len() < 100, "pagination terminates");
    }
}

async fn pagination_walks_every_transfer_once_newest_first_across_concurrent_inserts(server: TestServer) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    let mut sent = Vec::new();
    for _ in 0..12 {
        sent.push(send(&server, &alice, &from, &to, "1").await);
    }
    let first = server.get("/v1/transfers?limit=5", Some(&alice.token)).await;
    first.assert_status(200);
    let mut seen: Vec<Value> = first.body["items"].as_array().unwrap().clone();
    assert_eq!(seen.len(), 5);
    let mut cursor = first.str("next_cursor");
    // New transfers arrive while the client pages: they are newer than the cursor, so they
    // never appear on a later page and never shift one.
    let inserts = (0..3).map(|_| send(&server, &alice, &from, &to, "1"));
    let newer: HashSet<String> = futures::future::join_all(inserts).await.into_iter().collect();
    loop {
        let page = server.get(&format!("/v1/transfers?limit=5&cursor={cursor}"), Some(&alice.token)).await;
        page.assert_status(200);
        seen.extend(page.body["items"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let ids: Vec<String> = seen.iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no transfer twice: {ids:?}");
    assert_eq!(ids.len(), 13, "the 12 sent and the funding, nothing more");
    assert!(ids.iter().all(|id| !newer.contains(id)), "a transfer newer than the cursor is not on a later page");
    let mut expected: Vec<String> = sent.iter().rev().cloned().collect();
    expected.retain(|id| ids.contains(id));
    assert_eq!(&ids[..12], &expected[..], "newest first");
    let times: Vec<&str> = seen.iter().map(|item| item["created_at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|pair| pair[0] >= pair[1]), "ordered by creation, newest first");
    // A fresh walk now sees all 16 exactly once.
    let pages = walk(&server, &alice.token, "/v1/transfers", 4).await;
    let all: Vec<&Value> = pages.iter().flatten().collect();
    assert_eq!(all.len(), 16);
    assert_eq!(all.iter().map(|item| item["id"].as_str().unwrap()).collect::<HashSet<_>>().len(), 16);
    server.shutdown().await;
}

async fn the_status_filter_applies_and_another_users_transfers_are_never_listed(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let completed = send(&server, &alice, &from, &to, "10").await;
    let pending = server
        .post(
            "/v1/transfers",
            Some(&alice.token),
            json!({"type": "external", "source_account_id": from,
            "beneficiary": {"name": "Grace Hopper", "iban": "DE89 3704 0044 0532 0130 00"}, "amount": "5"}),
        )
        .await;
    pending.assert_status(202);
    let pending = pending.str("id");
    let only = server.get("/v1/transfers?status=pending", Some(&alice.token)).await;
    only.assert_status(200);
    let items = only.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], pending.as_str());
    assert_eq!(items[0]["status"], "pending");
    assert_eq!(only.body["next_cursor"], Value::Null);

    // Bob sees the transfer he received, not Alice's others; Carol sees nothing.
    let bobs = server.get("/v1/transfers", Some(&bob.token)).await;
    let bobs: Vec<&str> = bobs.body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(bobs, vec![completed.as_str()]);
    let carol = server.user().await;
    server.open_account(&carol, "USD").await;
    let carols = server.get("/v1/transfers", Some(&carol.token)).await;
    carols.assert_status(200);
    assert_eq!(carols.body["items"], json!([]));
    assert_eq!(carols.body["next_cursor"], Value::Null);
    server.shutdown().await;
}

async fn bad_query_parameters_are_refused_and_a_token_is_needed(server: TestServer) {
    let (alice, from, _bob, _to) = alice_and_bob(&server).await;
    let admin = server.admin(&["transfers:read", "accounts:read"]).await;
    let cursor_of_accounts = {
        let page = server.get("/v1/admin/accounts?limit=1", Some(&admin.token)).await;
        page.assert_status(200);
        page.str("next_cursor")
    };
    for query in [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=ten",
        "cursor=garbage",
        "cursor=",
        &format!("cursor={cursor_of_accounts}"),
        "status=done",
        "color=red",
    ] {
        let reply = server.get(&format!("/v1/transfers?{query}"), Some(&alice.token)).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
    }
    for query in ["status=open", "currency=XXX", "user_id=42", "search=%25", "search=a_b", "limit=1000"] {
        server
            .get(&format!("/v1/admin/accounts?{query}"), Some(&admin.token))
            .await
            .assert_problem(400, "VALIDATION_ERROR");
    }
    server
        .get("/v1/admin/transfers/count?status=nope", Some(&admin.token))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    let path = format!("/v1/accounts/{from}");
    for query in ["direction=sideways", "from=yesterday", "to=2024-13-01", "from=2025-02-01&to=2025-01-01", "limit=0"] {
        server
            .get(&format!("{path}/transactions?{query}"), Some(&alice.token))
            .await
            .assert_problem(400, "VALIDATION_ERROR");
    }
    for query in ["days=0", "days=367", "days=x"] {
        server
            .get(&format!("{path}/balance-history?{query}"), Some(&alice.token))
            .await
            .assert_problem(400, "VALIDATION_ERROR");
    }
    for unauthenticated in
        ["/v1/transfers", "/v1/admin/transfers", "/v1/admin/accounts/count", &format!("{path}/transactions")]
    {
        server.get(unauthenticated, None).await.assert_problem(401, "UNAUTHENTICATED");
    }
    server.shutdown().await;
}

async fn admin_listings_and_counts_apply_each_filter_and_need_their_permission(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let euros = server.open_account(&alice, "EUR").await;
    let admin = server.admin(&["transfers:read", "accounts:read", "accounts:close"]).await;
    send(&server, &alice, &from, &to, "10").await;
    let pending = server
        .post(
            "/v1/transfers",
            Some(&alice.token),
            json!({"type": "external", "source_account_id": from,
            "beneficiary": {"name": "Grace Hopper", "iban": "DE89 3704 0044 0532 0130 00"}, "amount": "5"}),
        )
        .await;
    pending.assert_status(202);

    let count = |query: &'static str| {
        let server = &server;
        let token = admin.token.clone();
        async move {
            let reply = server.get(&format!("/v1/admin/transfers/count{query}"), Some(&token)).await;
            reply.assert_status(200);
            reply.body["count"].as_u64().unwrap()
        }
    };
    // The funding, the internal transfer and the pending external one.
    assert_eq!(count("").await, 3);
    assert_eq!(count("?status=pending").await, 1);
    assert_eq!(count("?status=completed").await, 2);
    assert_eq!(count("?status=failed").await, 0);
    let listed = server.get("/v1/admin/transfers?status=pending", Some(&admin.token)).await;
    listed.assert_status(200);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], pending.str("id").as_str());
    assert_eq!(items[0]["user_id"], alice.user_id.as_str(), "the admin view names the user");
    let all = walk(&server, &admin.token, "/v1/admin/transfers", 2).await;
    assert_eq!(all.iter().flatten().count(), 3);

    server
        .post(
            &format!("/v1/admin/accounts/{to}/status"),
            Some(&admin.token),
            json!({"action": "block", "reason": "test"}),
        )
        .await
        .assert_status(204);
    let accounts = |query: String| {
        let server = &server;
        let token = admin.token.clone();
        async move {
            let list = server.get(&format!("/v1/admin/accounts?{query}"), Some(&token)).await;
            list.assert_status(200);
            let ids: HashSet<String> =
                list.body["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
            let counted = server.get(&format!("/v1/admin/accounts/count?{query}"), Some(&token)).await;
            counted.assert_status(200);
            assert_eq!(counted.body["count"].as_u64().unwrap() as usize, ids.len(), "count agrees with list: {query}");
            ids
        }
    };
    let set = |ids: &[&String]| ids.iter().map(|id| (*id).clone()).collect::<HashSet<String>>();
    assert_eq!(accounts(String::new()).await, set(&[&from, &to, &euros]), "customer accounts only");
    assert_eq!(accounts(format!("user_id={}", alice.user_id)).await, set(&[&from, &euros]));
    assert_eq!(accounts("currency=EUR".to_owned()).await, set(&[&euros]));
    assert_eq!(accounts("status=blocked".to_owned()).await, set(&[&to]));
    assert_eq!(accounts("status=active&currency=USD".to_owned()).await, set(&[&from]));
    assert_eq!(accounts(format!("search={}", &bob.email[..12].to_uppercase())).await, set(&[&to]), "email prefix");
    assert_eq!(accounts(format!("search={}", &euros[..13])).await, set(&[&euros]), "id prefix");
    assert_eq!(accounts("search=nobody@nowhere".to_owned()).await, HashSet::new());
    let listed = server.get(&format!("/v1/admin/accounts?user_id={}", bob.user_id), Some(&admin.token)).await;
    assert_eq!(listed.body["items"][0]["balance"], "10.00", "live balances");
    assert_eq!(listed.body["items"][0]["status"], "blocked");

    let reader = server.admin(&["accounts:read"]).await;
    for path in ["/v1/admin/transfers", "/v1/admin/transfers/count"] {
        server.get(path, Some(&reader.token)).await.assert_problem(403, "FORBIDDEN");
    }
    let other = server.admin(&["transfers:read"]).await;
    for path in ["/v1/admin/accounts", "/v1/admin/accounts/count"] {
        server.get(path, Some(&other.token)).await.assert_problem(403, "FORBIDDEN");
        server.get(path, Some(&alice.token)).await.assert_problem(403, "FORBIDDEN");
        server.get(path, None).await.assert_problem(401, "UNAUTHENTICATED");
    }
    server.shutdown().await;
}

async fn transactions_and_balance_history_match_the_postings(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let mut body = internal(&from, &to, "12.5");
    body["description"] = json!("dinner");
    server.post("/v1/transfers", Some(&alice.token), body).await.assert_status(201);
    send(&server, &alice, &from, &to, "7").await;
    send(&server, &bob, &to, &from, "2").await;
    server.engine.journals().barrier().await.expect("durable");

    let postings = server.store.postings_of(account_id(&from)).await.unwrap();
    let pages = walk(&server, &alice.token, &format!("/v1/accounts/{from}/transactions"), 2).await;
    let items: Vec<&Value> = pages.iter().flatten().collect();
    assert_eq!(items.len(), postings.len());
    assert_eq!(items.len(), 4, "the funding, two debits and a credit");
    for (item, posting) in items.iter().zip(postings.iter().rev()) {
        assert_eq!(item["transfer_id"], posting.transfer.to_string().as_str());
        assert_eq!(item["direction"], posting.direction.as_str());
        assert_eq!(item["amount"].as_str().unwrap().parse::<Decimal>().unwrap(), posting.amount);
        assert_eq!(item["currency"], "USD");
    }
    assert_eq!(items[0]["balance_after"], "82.50", "newest first: after Bob's 2.00");
    assert_eq!(items[2]["description"], "dinner");
    let debits = server.get(&format!("/v1/accounts/{from}/transactions?direction=debit"), Some(&alice.token)).await;
    let debits = debits.body["items"].as_array().unwrap();
    assert_eq!(debits.len(), 2);
    assert!(debits.iter().all(|item| item["direction"] == "debit"));
    let none = server.get(&format!("/v1/accounts/{from}/transactions?to=2000-01-01"), Some(&alice.token)).await;
    assert_eq!(none.body["items"], json!([]));
    let today =
        server.get(&format!("/v1/accounts/{from}/transactions?from=2000-01-01T00:00:00Z"), Some(&alice.token)).await;
    assert_eq!(today.body["items"].as_array().unwrap().len(), 4);

    let history = server.get(&format!("/v1/accounts/{from}/balance-history?days=3"), Some(&alice.token)).await;
    history.assert_status(200);
    assert_eq!(history.str("opening_balance"), "0.00");
    assert_eq!(history.str("current_balance"), "82.50");
    assert_eq!(history.str("change"), "82.50");
    let points = history.body["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    assert_eq!(points[2]["balance"], "82.50", "today closes at the balance");
    assert_eq!(points[0]["balance"], "0.00");
    assert!(points[2]["date"].as_str().unwrap().len() == 10);
    let default = server.get(&format!("/v1/accounts/{from}/balance-history"), Some(&alice.token)).await;
    assert_eq!(default.body["points"].as_array().unwrap().len(), 30);

    for path in ["transactions", "balance-history", "balance"] {
        server.get(&format!("/v1/accounts/{from}/{path}"), Some(&bob.token)).await.assert_problem(404, "NOT_FOUND");
    }
    server.shutdown().await;
}

async fn oldest_first_walks_the_pending_queue_from_its_oldest_transfer_and_cursors_keep_their_order(
    server: TestServer,
) {
    let (alice, from, _bob, to) = alice_and_bob(&server).await;
    let admin = server.admin(&["transfers:read"]).await;
    let mut pending = Vec::new();
    for i in 0..7 {
        let body = json!({"type": "external", "source_account_id": from, "amount": format!("{}", i + 1),
                          "beneficiary": {"name": "Grace Hopper", "iban": "DE89 3704 0044 0532 0130 00"}});
        let reply = server.post("/v1/transfers", Some(&alice.token), body).await;
        reply.assert_status(202);
        pending.push(reply.str("id"));
        // A completed transfer between the pending ones: the status filter leaves it out.
        send(&server, &alice, &from, &to, "1").await;
    }
    // Pages of three, oldest first: every pending transfer once, in creation order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = "/v1/admin/transfers?status=pending&order=oldest_first&limit=3".to_owned();
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = server.get(&url, Some(&admin.token)).await;
        page.assert_status(200);
        seen.extend(page.body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(seen.len() <= pending.len(), "pagination terminates");
    }
    assert_eq!(seen, pending, "oldest first, each once");
    // Newest first (the default, and by name) is the same set reversed.
    let newest = server.get("/v1/admin/transfers?status=pending&limit=50", Some(&admin.token)).await;
    let named = server.get("/v1/admin/transfers?status=pending&order=newest_first&limit=50", Some(&admin.token)).await;
    let ids = |reply: &tally_tests::http::Reply| -> Vec<String> {
        reply.body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect()
    };
    let mut reversed = pending.clone();
    reversed.reverse();
    assert_eq!(ids(&newest), reversed);
    assert_eq!(ids(&named), reversed);
    // The customer's listing takes the same order.
    let mine = server.get("/v1/transfers?status=pending&order=oldest_first&limit=50", Some(&alice.token)).await;
    mine.assert_status(200);
    assert_eq!(ids(&mine), pending);

    // A cursor continues only the order it came from: a position means the opposite in the
    // other order, so it is refused rather than silently skipping the queue's head.
    let first = server.get("/v1/admin/transfers?status=pending&order=oldest_first&limit=2", Some(&admin.token)).await;
    let oldest_cursor = first.str("next_cursor");
    server
        .get(&format!("/v1/admin/transfers?status=pending&cursor={oldest_cursor}"), Some(&admin.token))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    let newest_first = server.get("/v1/admin/transfers?status=pending&limit=2", Some(&admin.token)).await;
    let newest_cursor = newest_first.str("next_cursor");
    server
        .get(&format!("/v1/admin/transfers?order=oldest_first&cursor={newest_cursor}"), Some(&admin.token))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    for bad in ["oldest", "asc", "", "OLDEST_FIRST"] {
        let reply = server.get(&format!("/v1/admin/transfers?order={bad}"), Some(&admin.token)).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert!(reply.text.contains("order"), "the field is named: {}", reply.text);
    }
    server.shutdown().await;
}

/// The ids of every page of `url` (which has a query already) after `cursor`, following
/// `next_cursor`.
async fn ids_after(server: &TestServer, token: &str, url: &str, limit: u32, mut cursor: Option<String>) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..100 {
        let page = match &cursor {
            Some(cursor) => server.get(&format!("{url}&limit={limit}&cursor={cursor}"), Some(token)).await,
            None => server.get(&format!("{url}&limit={limit}"), Some(token)).await,
        };
        page.assert_status(200);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        ids.extend(items.iter().map(|item| item["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
    panic!("pagination of {url} did not terminate");
}

/// Oldest first, a customer's listing is one range per index for each of their accounts, read
/// upwards from the cursor and merged: every page continues exactly where the last one ended,
/// whichever side of whichever account the next transfer is on, and a transfer on both sides
/// is listed once.
async fn oldest_first_pages_a_customers_transfers_over_both_sides_of_every_account(server: TestServer) {
    let (alice, from, bob, to) = alice_and_bob(&server).await;
    let savings = server.open_account(&alice, "USD").await;
    server.fund(&to, dec!(100)).await;
    let admin = server.admin(&["transfers:read"]).await;
    let mut sent = Vec::new();
    for _ in 0..4 {
        sent.push(send(&server, &alice, &from, &to, "1").await); // Alice's as source
        sent.push(send(&server, &bob, &to, &savings, "1").await); // as destination, another account
        sent.push(send(&server, &alice, &from, &savings, "1").await); // both sides hers
        sent.push(send(&server, &bob, &to, &from, "1").await); // as destination
    }
    // Newest first in one page: the 16 newest first, then her funding.
    let newest = server.get("/v1/transfers?limit=50", Some(&alice.token)).await;
    newest.assert_status(200);
    let newest: Vec<String> =
        newest.body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(newest.len(), 17, "16 sent and the funding");
    let oldest: Vec<String> = newest.iter().rev().cloned().collect();
    assert_eq!(&oldest[1..], &sent[..], "oldest first is the order they were made");
    for limit in [1, 2, 3, 4, 5, 16, 17, 50] {
        let walked = ids_after(&server, &alice.token, "/v1/transfers?order=oldest_first", limit, None).await;
        assert_eq!(walked, oldest, "limit {limit}");
        let completed =
            ids_after(&server, &alice.token, "/v1/transfers?order=oldest_first&status=completed", limit, None).await;
        assert_eq!(completed, oldest, "status=completed, limit {limit}");
    }
    // Bob's side: his funding and the 12 that touch his account, oldest first.
    let bobs = ids_after(&server, &bob.token, "/v1/transfers?order=oldest_first", 3, None).await;
    let his: Vec<&String> = sent.iter().enumerate().filter(|(i, _)| i % 4 != 2).map(|(_, id)| id).collect();
    assert_eq!(bobs.len(), 13);
    assert_eq!(bobs[1..].iter().collect::<Vec<_>>(), his);

    // Oldest first, a transfer made while a client pages is after its cursor: it comes on a
    // later page, once, at the end.
    let first = server.get("/v1/transfers?order=oldest_first&limit=5", Some(&alice.token)).await;
    first.assert_status(200);
    let mut seen: Vec<String> =
        first.body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect();
    let late = send(&server, &bob, &to, &savings, "1").await;
    let rest =
        ids_after(&server, &alice.token, "/v1/transfers?order=oldest_first", 5, Some(first.str("next_cursor"))).await;
    seen.extend(rest);
    let mut expected = oldest.clone();
    expected.push(late);
    assert_eq!(seen, expected);

    // The admin listing, every status, oldest first is the newest-first walk reversed.
    let mut admin_newest = ids_after(&server, &admin.token, "/v1/admin/transfers?order=newest_first", 4, None).await;
    admin_newest.reverse();
    let admin_oldest = ids_after(&server, &admin.token, "/v1/admin/transfers?order=oldest_first", 4, None).await;
    assert_eq!(admin_oldest, admin_newest);
    assert_eq!(admin_oldest.len(), 19, "two fundings and 17 sent");
    server.shutdown().await;
}
