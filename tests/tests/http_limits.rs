//! Verification limits over a real socket: `GET /v1/admin/limits`, `PUT /v1/admin/limits/{level}`
//! (stored, audited, replacing the level's whole set, every bad body refused without a change)
//! and `GET /v1/users/me/limits` (the caller's level, its limits and the engine's usage
//! counters), on both stores; limits that survive a restart of a real `tally serve`; and
//! enforcement in saga step 1: 200 racing transfers against a daily limit that fits exactly 100
//! of them, a failed transfer giving its amount back, and an atomic batch counted whole.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use sqlx::Connection;
use tally_engine::{Currency, UserId};
use tally_persistence::users::VerificationLevel;
use tally_tests::http::{Backend, TestServer, TestUser};
use tally_tests::on_both_stores;
use tally_tests::server::{Client, TallyServer};

on_both_stores!(
    admins_set_each_level_s_limits_and_customers_see_theirs,
    bad_limits_are_refused_and_change_nothing,
    usage_shown_is_the_engine_s_counters,
    of_200_racing_transfers_exactly_the_100_that_fit_the_daily_limit_pass,
    a_transfer_that_fails_gives_its_amount_back_and_atomic_batches_count_whole,
    a_quote_refuses_what_the_transfer_would_be_refused_for_its_limits,
);

async fn put_level(server: &TestServer, token: &str, level: &str, body: Value) -> tally_tests::http::Reply {
    server.send_with(reqwest::Method::PUT, &format!("/v1/admin/limits/{level}"), Some(token), None, Some(body)).await
}

async fn all_levels(server: &TestServer, token: &str) -> Value {
    let reply = server.get("/v1/admin/limits", Some(token)).await;
    reply.assert_status(200);
    reply.body
}

async fn my_limits(server: &TestServer, user: &TestUser) -> Value {
    let reply = server.get("/v1/users/me/limits", Some(&user.token)).await;
    reply.assert_status(200);
    reply.body
}

async fn set_level(server: &TestServer, user: &TestUser, level: &str) {
    let verifier = server.admin(&["users:verify"]).await;
    server
        .post(&format!("/v1/admin/users/{}/verification", user.user_id), Some(&verifier.token), json!({"level": level}))
        .await
        .assert_status(204);
}

fn empty_levels() -> Value {
    json!({"items": [
        {"level": "none", "limits": []},
        {"level": "basic", "limits": []},
        {"level": "verified", "limits": []},
        {"level": "enhanced", "limits": []},
    ]})
}

/// The rows of `verification_limits` as the database holds them.
async fn stored(server: &TestServer) -> Vec<(String, String, Option<Decimal>, Option<Decimal>, Option<Decimal>)> {
    const SQL: &str = "SELECT level, currency, CAST(per_transfer_max AS TEXT), CAST(daily_max AS TEXT),
                              CAST(monthly_max AS TEXT) FROM verification_limits ORDER BY level, currency";
    type Row = (String, String, Option<String>, Option<String>, Option<String>);
    let rows: Vec<Row> = match server.backend {
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
            sqlx::query_as(SQL).fetch_all(&mut db).await.unwrap()
        }
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
            sqlx::query_as(SQL).fetch_all(&mut db).await.unwrap()
        }
    };
    let decimal = |text: Option<String>| text.map(|text| Decimal::from_str(&text).unwrap());
    rows.into_iter().map(|(l, c, p, d, m)| (l, c, decimal(p), decimal(d), decimal(m))).collect()
}

async fn admins_set_each_level_s_limits_and_customers_see_theirs(server: TestServer) {
    let admin = server.admin(&["limits:read", "limits:write", "audit:read"]).await;
    let token = admin.token.as_str();
    assert_eq!(all_levels(&server, token).await, empty_levels());

    let set = json!({"limits": [
        {"currency": "USD", "per_transfer_max": "1000", "daily_max": "2500.5", "monthly_max": "10000"},
        {"currency": "JPY", "daily_max": "100000", "per_transfer_max": null},
        {"currency": "ETH", "per_transfer_max": "0.000000000000000001"},
    ]});
    let reply = put_level(&server, token, "basic", set.clone()).await;
    reply.assert_status(200);
    // A PUT is idempotent: the same body again answers the same and stores the same.
    let replayed = put_level(&server, token, "basic", set).await;
    assert_eq!(replayed.body, reply.body);
    // At each currency's scale, in the currency table's order (USD, JPY, ..., ETH).
    let basic = json!({"level": "basic", "limits": [
        {"currency": "USD", "per_transfer_max": "1000.00", "daily_max": "2500.50", "monthly_max": "10000.00"},
        {"currency": "JPY", "per_transfer_max": null, "daily_max": "100000", "monthly_max": null},
        {"currency": "ETH", "per_transfer_max": "0.000000000000000001", "daily_max": null, "monthly_max": null},
    ]});
    assert_eq!(reply.body, basic);
    let mut expected = empty_levels();
    expected["items"][1] = basic.clone();
    assert_eq!(all_levels(&server, token).await, expected);
    // Stored exactly.
    assert_eq!(
        stored(&server).await,
        vec![
            ("basic".to_owned(), "ETH".to_owned(), Some(dec!(0.000000000000000001)), None, None),
            ("basic".to_owned(), "JPY".to_owned(), None, Some(dec!(100000)), None),
            ("basic".to_owned(), "USD".to_owned(), Some(dec!(1000)), Some(dec!(2500.5)), Some(dec!(10000))),
        ]
    );
    // Audited in the same transaction, with the set: each PUT, the repeat included.
    let entries = server.get("/v1/admin/audit?action=limits.update", Some(token)).await;
    let items = entries.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", entries.text);
    assert_eq!(items[0]["actor"]["id"], admin.user_id);
    assert_eq!(items[0]["target"], json!({"type": "verification_level", "id": "basic"}));
    assert_eq!(items[0]["details"]["limits"][0]["daily_max"], "2500.50");

    // A customer at level none has no limits; at basic, basic's, with nothing used.
    let alice = server.user().await;
    assert_eq!(my_limits(&server, &alice).await, json!({"verification_level": "none", "limits": []}));
    set_level(&server, &alice, "basic").await;
    let mine = my_limits(&server, &alice).await;
    assert_eq!(mine["verification_level"], "basic");
    let limits = mine["limits"].as_array().unwrap();
    assert_eq!(limits.len(), 3);
    for (mine, admins) in limits.iter().zip(basic["limits"].as_array().unwrap()) {
        for field in ["currency", "per_transfer_max", "daily_max", "monthly_max"] {
            assert_eq!(mine[field], admins[field], "{field}");
        }
    }
    assert_eq!((limits[0]["used_today"].as_str(), limits[0]["used_this_month"].as_str()), (Some("0.00"), Some("0.00")));
    assert_eq!(limits[1]["used_today"], "0");
    assert_eq!(limits[2]["used_this_month"], "0.000000000000000000");

    // A PUT replaces the whole set; an empty set clears the level. Other levels are untouched.
    let enhanced = json!({"limits": [{"currency": "USD", "monthly_max": "1000000"}]});
    put_level(&server, token, "enhanced", enhanced).await.assert_status(200);
    let reply = put_level(&server, token, "basic", json!({"limits": [{"currency": "EUR", "daily_max": "50"}]})).await;
    assert_eq!(
        reply.body,
        json!({"level": "basic", "limits": [{"currency": "EUR", "per_transfer_max": null, "daily_max": "50.00", "monthly_max": null}]})
    );
    let mine = my_limits(&server, &alice).await;
    assert_eq!(mine["limits"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["limits"][0]["currency"], "EUR");
    put_level(&server, token, "basic", json!({"limits": []})).await.assert_status(200);
    let levels = all_levels(&server, token).await;
    assert_eq!(levels["items"][1]["limits"], json!([]));
    assert_eq!(levels["items"][3]["limits"][0]["monthly_max"], "1000000.00");
    assert_eq!(my_limits(&server, &alice).await["limits"], json!([]));
    assert_eq!(stored(&server).await.len(), 1, "only enhanced's USD row is left");
    let entries = server.get("/v1/admin/audit?action=limits.update", Some(token)).await;
    assert_eq!(entries.body["items"].as_array().unwrap().len(), 5, "every change audited");

    // Who may call /v1/users/me/limits: a person; not without a token, not by API key.
    server.get("/v1/users/me/limits", None).await.assert_problem(401, "UNAUTHENTICATED");
    let key = server
        .post("/v1/api-keys", Some(&alice.token), json!({"name": "k", "scopes": ["accounts:read"]}))
        .await
        .str("key");
    server
        .send(server.client.get(server.url("/v1/users/me/limits")).header("x-api-key", key))
        .await
        .assert_problem(403, "FORBIDDEN");
    server.shutdown().await;
}

async fn bad_limits_are_refused_and_change_nothing(server: TestServer) {
    let admin = server.admin(&["limits:read", "limits:write", "audit:read"]).await;
    let token = admin.token.as_str();
    let good =
        json!({"limits": [{"currency": "USD", "per_transfer_max": "10", "daily_max": "20", "monthly_max": "30"}]});
    put_level(&server, token, "verified", good).await.assert_status(200);
    let before = all_levels(&server, token).await;

    let entry = |fields: Value| json!({"limits": [fields]});
    let cases: Vec<(Value, &str)> = vec![
        (entry(json!({"currency": "XXX", "daily_max": "1"})), "limits[0].currency"),
        (entry(json!({"currency": "usd", "daily_max": "1"})), "limits[0].currency"),
        (entry(json!({"currency": "USD", "per_transfer_max": "-1"})), "limits[0].per_transfer_max"),
        (entry(json!({"currency": "USD", "per_transfer_max": "0"})), "limits[0].per_transfer_max"),
        (entry(json!({"currency": "USD", "daily_max": "1.001"})), "limits[0].daily_max"),
        (entry(json!({"currency": "JPY", "daily_max": "0.5"})), "limits[0].daily_max"),
        (entry(json!({"currency": "USD", "monthly_max": "1000000000001"})), "limits[0].monthly_max"),
        (entry(json!({"currency": "USD", "monthly_max": "ten"})), "limits[0].monthly_max"),
        (entry(json!({"currency": "USD", "monthly_max": "1e3"})), "limits[0].monthly_max"),
        (entry(json!({"currency": "USD", "per_transfer_max": "10", "daily_max": "9.99"})), "limits[0].daily_max"),
        (entry(json!({"currency": "USD", "daily_max": "10", "monthly_max": "9"})), "limits[0].monthly_max"),
        (entry(json!({"currency": "USD", "per_transfer_max": "10", "monthly_max": "9"})), "limits[0].monthly_max"),
        (entry(json!({"currency": "USD"})), "limits[0].currency"),
        (entry(json!({"currency": "USD", "per_transfer_max": null, "daily_max": null})), "limits[0].currency"),
        (
            json!({"limits": [{"currency": "USD", "daily_max": "1"}, {"currency": "EUR", "daily_max": "1"}, {"currency": "USD", "daily_max": "2"}]}),
            "limits[2].currency",
        ),
        (
            json!({"limits": Currency::all().chain([Currency::USD]).map(|c| json!({"currency": c.code(), "daily_max": "1"})).collect::<Vec<_>>()}),
            "limits",
        ),
    ];
    for (body, field) in &cases {
        let reply = put_level(&server, token, "verified", body.clone()).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec![(*field).to_owned()], "{body}: {}", reply.text);
    }
    // Shapes serde refuses: missing, mistyped, unknown fields, numbers for amounts.
    for body in [
        json!({}),
        json!({"limits": {}}),
        json!({"limits": [{"daily_max": "1"}]}),
        json!({"limits": [{"currency": "USD", "daily_max": 1000}]}),
        json!({"limits": [{"currency": "USD", "daily_max": "1", "weekly_max": "5"}]}),
        json!({"limits": [], "level": "basic"}),
        json!([]),
    ] {
        put_level(&server, token, "verified", body).await.assert_problem(400, "VALIDATION_ERROR");
    }
    let raw = |content_type: &str, bytes: Vec<u8>| {
        server
            .client
            .put(server.url("/v1/admin/limits/verified"))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(bytes)
    };
    server.send(raw("application/json", b"{\"limits\":".to_vec())).await.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(server.send(raw("text/plain", b"limits".to_vec())).await.status, 415);
    let huge = server.send(raw("application/json", vec![b' '; tally_http::BODY_BYTES_MAX + 1])).await;
    assert_eq!(huge.status, 413, "{}", huge.text);
    // An unknown level is not a resource.
    for level in ["gold", "NONE", "none%20", "1"] {
        put_level(&server, token, level, json!({"limits": []})).await.assert_problem(404, "NOT_FOUND");
    }
    // Without a token, as a customer, as an admin without limits:write.
    let customer = server.user().await;
    let reader = server.admin(&["limits:read"]).await;
    let body = json!({"limits": []});
    put_level(&server, "not.a.token", "verified", body.clone()).await.assert_problem(401, "UNAUTHENTICATED");
    put_level(&server, &customer.token, "verified", body.clone()).await.assert_problem(403, "FORBIDDEN");
    put_level(&server, &reader.token, "verified", body.clone()).await.assert_problem(403, "FORBIDDEN");
    server.get("/v1/admin/limits", Some(&customer.token)).await.assert_problem(403, "FORBIDDEN");
    server.get("/v1/admin/limits", None).await.assert_problem(401, "UNAUTHENTICATED");

    // Nothing changed: memory, store and audit log are as after the one good PUT.
    assert_eq!(all_levels(&server, token).await, before);
    assert_eq!(
        stored(&server).await,
        vec![("verified".to_owned(), "USD".to_owned(), Some(dec!(10)), Some(dec!(20)), Some(dec!(30)))]
    );
    let entries = server.get("/v1/admin/audit?action=limits.update", Some(token)).await;
    assert_eq!(entries.body["items"].as_array().unwrap().len(), 1);
    server.shutdown().await;
}

async fn usage_shown_is_the_engine_s_counters(server: TestServer) {
    let admin = server.admin(&["limits:write"]).await;
    put_level(&server, &admin.token, "verified", json!({"limits": [{"currency": "USD", "daily_max": "100"}]}))
        .await
        .assert_status(200);
    let alice = server.user().await;
    set_level(&server, &alice, "verified").await;
    let user = UserId::from_uuid(uuid::Uuid::parse_str(&alice.user_id).unwrap());
    let limits = server.engine.limits();
    let now = server.engine.now();
    // What saga step 1 reserves, counted straight into the engine.
    limits.reserve(user, VerificationLevel::Verified, Currency::USD, dec!(12.34), now).unwrap().commit();
    limits.reserve(user, VerificationLevel::Verified, Currency::EUR, dec!(5), now).unwrap().commit();
    let dropped = limits.reserve(user, VerificationLevel::Verified, Currency::USD, dec!(80), now).unwrap();
    assert!(limits.reserve(user, VerificationLevel::Verified, Currency::USD, dec!(7.67), now).is_err(), "100 is full");
    drop(dropped);
    let mine = my_limits(&server, &alice).await;
    assert_eq!(
        mine,
        json!({"verification_level": "verified", "limits": [
            {"currency": "USD", "per_transfer_max": null, "daily_max": "100.00", "monthly_max": null,
             "used_today": "12.34", "used_this_month": "12.34"},
            {"currency": "EUR", "per_transfer_max": null, "daily_max": null, "monthly_max": null,
             "used_today": "5.00", "used_this_month": "5.00"},
        ]})
    );
    // The limit an admin set is the one the engine checks against.
    let limits_now = limits.limits(VerificationLevel::Verified, Currency::USD);
    assert_eq!(limits_now.daily_max, Some(dec!(100)));
    server.shutdown().await;
}

fn internal(source: &str, destination: &str, amount: &str) -> Value {
    json!({"type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": amount})
}

/// The rows of `transfers` from `account`, by status.
async fn transfers_from(server: &TestServer, account: &str) -> Vec<String> {
    let sql = format!("SELECT status FROM transfers WHERE CAST(source_id AS TEXT) = '{account}' ORDER BY status");
    match server.backend {
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
            sqlx::query_scalar(&sql).fetch_all(&mut db).await.unwrap()
        }
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
            sqlx::query_scalar(&sql).fetch_all(&mut db).await.unwrap()
        }
    }
}

/// The brief's proof over HTTP: a verified user's daily USD limit is 100.00; 200 transfers of
/// 1.00 race; exactly 100 are created and 100 refused `422 VERIFICATION_LIMIT_EXCEEDED`, the
/// refused ones leaving no transfer and moving nothing.
async fn of_200_racing_transfers_exactly_the_100_that_fit_the_daily_limit_pass(server: TestServer) {
    let admin = server.admin(&["limits:write"]).await;
    put_level(&server, &admin.token, "verified", json!({"limits": [{"currency": "USD", "daily_max": "100"}]}))
        .await
        .assert_status(200);
    let alice = server.user().await;
    let bob = server.user().await;
    set_level(&server, &alice, "verified").await;
    let source = server.open_account(&alice, "USD").await;
    let destination = server.open_account(&bob, "USD").await;
    server.fund(&source, dec!(1000)).await;
    let (balance_before, _) = server.position(&source).await;

    let replies = futures::future::join_all(
        (0..200).map(|_| server.post("/v1/transfers", Some(&alice.token), internal(&source, &destination, "1.00"))),
    )
    .await;
    let passed: Vec<&tally_tests::http::Reply> = replies.iter().filter(|reply| reply.status == 201).collect();
    let refused: Vec<&tally_tests::http::Reply> = replies.iter().filter(|reply| reply.status == 422).collect();
    assert_eq!(passed.len(), 100, "exactly the transfers that fit");
    assert_eq!(refused.len(), 100, "every other one refused, none lost to another error");
    for reply in &refused {
        reply.assert_problem(422, "VERIFICATION_LIMIT_EXCEEDED");
    }
    // Nothing of a refused transfer exists; the passed ones moved exactly their amounts and fees.
    assert_eq!(transfers_from(&server, &source).await, vec!["completed".to_owned(); 100]);
    let fees: Decimal =
        passed.iter().map(|reply| Decimal::from_str(reply.body["fee"].as_str().unwrap()).unwrap()).sum();
    let (balance_after, held) = server.position(&source).await;
    assert_eq!(balance_after, balance_before - dec!(100) - fees);
    assert_eq!(held, Decimal::ZERO);
    let mine = my_limits(&server, &alice).await;
    assert_eq!(mine["limits"][0]["used_today"], "100.00");
    // Full: the smallest amount is refused; another user, or another currency, is not.
    server
        .post("/v1/transfers", Some(&alice.token), internal(&source, &destination, "0.01"))
        .await
        .assert_problem(422, "VERIFICATION_LIMIT_EXCEEDED");
    let other = server.open_account(&bob, "USD").await;
    server.post("/v1/transfers", Some(&bob.token), internal(&destination, &other, "80.00")).await.assert_status(201);
    server.shutdown().await;
}

/// A transfer that passes step 1 and then fails (its destination does not exist) gives its
/// amount back; an atomic batch is counted item by item, and one that does not fit does
/// nothing at all.
async fn a_transfer_that_fails_gives_its_amount_back_and_atomic_batches_count_whole(server: TestServer) {
    let admin = server.admin(&["limits:write"]).await;
    put_level(
        &server,
        &admin.token,
        "basic",
        json!({"limits": [{"currency": "USD", "per_transfer_max": "50", "daily_max": "100"}]}),
    )
    .await
    .assert_status(200);
    let alice = server.user().await;
    let bob = server.user().await;
    set_level(&server, &alice, "basic").await;
    let source = server.open_account(&alice, "USD").await;
    let destination = server.open_account(&bob, "USD").await;
    server.fund(&source, dec!(1000)).await;
    let nowhere = uuid::Uuid::now_v7().to_string();
    let failed = server.post("/v1/transfers", Some(&alice.token), internal(&source, &nowhere, "50.00")).await;
    assert!(failed.status >= 400, "{:?}", failed.body);
    assert_eq!(transfers_from(&server, &source).await, vec!["failed".to_owned()], "it ran, and failed");
    assert_eq!(my_limits(&server, &alice).await["limits"][0]["used_today"], "0.00", "given back");
    // Above the per-transfer maximum: refused before anything.
    server
        .post("/v1/transfers", Some(&alice.token), internal(&source, &destination, "50.01"))
        .await
        .assert_problem(422, "VERIFICATION_LIMIT_EXCEEDED");
    // 40 + 40 fit; 40 + 40 + 40 does not: that batch does nothing.
    let batch = |n: usize| json!({"atomic": true, "transfers": vec![internal(&source, &destination, "40.00"); n]});
    let reply = server.post("/v1/transfers/batch", Some(&alice.token), batch(3)).await;
    assert!(
        reply.status >= 400
            || reply.body["results"]
                .as_array()
                .is_some_and(|items| { items.iter().all(|item| item["status"] != "completed") }),
        "{:?}",
        reply.body
    );
    assert_eq!(my_limits(&server, &alice).await["limits"][0]["used_today"], "0.00", "an aborted batch counts nothing");
    let reply = server.post("/v1/transfers/batch", Some(&alice.token), batch(2)).await;
    assert!(reply.status < 300, "{:?}", reply.body);
    assert_eq!(my_limits(&server, &alice).await["limits"][0]["used_today"], "80.00");
    let mut statuses = transfers_from(&server, &source).await;
    statuses.sort();
    assert_eq!(statuses, ["completed", "completed", "failed"]);
    server.shutdown().await;
}

/// Limits are stored, so a restarted server has them (the engine loads them at start).
async fn limits_survive_a_restart(database_url: &str) {
    let mut server = TallyServer::start(database_url, &[]).await;
    let admin = Client::admin(&server).await;
    let (status, body) = admin
        .send(
            reqwest::Method::PUT,
            "/v1/admin/limits/enhanced",
            Some(json!({"limits": [{"currency": "GBP", "per_transfer_max": "5000", "monthly_max": "20000"}]})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    server.restart().await;
    let admin = Client::admin(&server).await;
    let (status, levels) = admin.get("/v1/admin/limits").await;
    assert_eq!(status, 200, "{levels}");
    assert_eq!(
        levels["items"][3],
        json!({"level": "enhanced", "limits": [{"currency": "GBP", "per_transfer_max": "5000.00", "daily_max": null, "monthly_max": "20000.00"}]})
    );
}

/// Usage is counted in memory and recovered from the ledger at start: after a `kill -9`, a
/// real `tally serve` shows the same usage and still refuses what no longer fits.
async fn usage_survives_a_kill_9(database_url: &str) {
    let mut server = TallyServer::start(database_url, &[]).await;
    let base = server.base_url();
    let admin = Client::admin(&server).await;
    let (status, body) = admin
        .send(
            reqwest::Method::PUT,
            "/v1/admin/limits/none",
            Some(json!({"limits": [{"currency": "USD", "daily_max": "100"}]})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let mut clients = Vec::new();
    for name in ["alice", "bob"] {
        let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
        let registered = reqwest::Client::new()
            .post(format!("{base}/v1/auth/register"))
            .json(
                &json!({"email": email, "password": tally_tests::http::PASSWORD, "first_name": name, "last_name": "L"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(registered.status(), 201);
        clients.push((email.clone(), Client::login(&base, &email, tally_tests::http::PASSWORD).await));
    }
    let (alice_email, alice) = clients[0].clone();
    let source = alice.open_account("USD").await;
    let destination = clients[1].1.open_account("USD").await;
    admin.fund(&source, "500").await;
    for amount in ["30.00", "40.00"] {
        let (status, body) = alice.post("/v1/transfers", internal(&source, &destination, amount)).await;
        assert_eq!(status, 201, "{body}");
    }
    let used = |client: Client| async move {
        let (status, body) = client.get("/v1/users/me/limits").await;
        assert_eq!(status, 200, "{body}");
        body["limits"][0]["used_today"].as_str().unwrap().to_owned()
    };
    assert_eq!(used(alice.clone()).await, "70.00");
    server.kill();
    server.restart().await;
    let alice = Client::login(&server.base_url(), &alice_email, tally_tests::http::PASSWORD).await;
    assert_eq!(used(alice.clone()).await, "70.00", "recovered from the ledger");
    let (status, body) = alice.post("/v1/transfers", internal(&source, &destination, "30.01")).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("VERIFICATION_LIMIT_EXCEEDED")), "{body}");
    let (status, body) = alice.post("/v1/transfers", internal(&source, &destination, "30.00")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(used(alice).await, "100.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_survives_a_kill_9_on_postgres() {
    usage_survives_a_kill_9(&tally_tests::postgres::fresh_database("limits_usage").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_survives_a_kill_9_on_sqlite() {
    let file = std::env::temp_dir().join(format!("tally-limits-usage-{}.db", uuid::Uuid::new_v4().simple()));
    usage_survives_a_kill_9(&format!("sqlite://{}", file.display())).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_survive_a_restart_on_postgres() {
    limits_survive_a_restart(&tally_tests::postgres::fresh_database("limits").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_survive_a_restart_on_sqlite() {
    let file = std::env::temp_dir().join(format!("tally-limits-{}.db", uuid::Uuid::new_v4().simple()));
    limits_survive_a_restart(&format!("sqlite://{}", file.display())).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

/// `POST /v1/transfers/quote` runs the checks that need no balance as the transfer would, and
/// the verification limits need none: a quote of an amount past them is refused as the
/// transfer is, and counts nothing. It quoted `200` before (found by a review, helper).
async fn a_quote_refuses_what_the_transfer_would_be_refused_for_its_limits(server: TestServer) {
    let admin = server.admin(&["limits:write"]).await;
    put_level(
        &server,
        &admin.token,
        "none",
        json!({"limits": [{"currency": "USD", "per_transfer_max": "50", "daily_max": "70"}]}),
    )
    .await
    .assert_status(200);
    let alice = server.user().await;
    let bob = server.user().await;
    let from = server.open_account(&alice, "USD").await;
    let to = server.open_account(&bob, "USD").await;
    server.fund(&from, dec!(200)).await;
    let body = |amount: &str| json!({"type": "internal", "source_account_id": from, "destination_account_id": to, "amount": amount});
    server
        .post("/v1/transfers/quote", Some(&alice.token), body("60"))
        .await
        .assert_problem(422, "VERIFICATION_LIMIT_EXCEEDED");
    server
        .post("/v1/transfers", Some(&alice.token), body("60"))
        .await
        .assert_problem(422, "VERIFICATION_LIMIT_EXCEEDED");
    // Within the transfer bound; the day's room is what transfers used, not what quotes asked.
    for _ in 0..3 {
        server.post("/v1/transfers/quote", Some(&alice.token), body("40")).await.assert_status(200);
    }
    server.post("/v1/transfers", Some(&alice.token), body("40")).await.assert_status(201);
    server
        .post("/v1/transfers/quote", Some(&alice.token), body("40"))
        .await
        .assert_problem(422, "VERIFICATION_LIMIT_EXCEEDED");
    server.post("/v1/transfers/quote", Some(&alice.token), body("30")).await.assert_status(200);
    server.shutdown().await;
}
