//! Admin statements and the accounts summary over a real socket.
//!
//! `GET /v1/admin/statements` is checked against the ledger itself, read straight from the
//! database's `postings`, `transfers` and `accounts` tables (not through the read model under
//! test): JSON pages walk every posting exactly once, account by account and oldest first within
//! each; filters select by account,
//! user, direction and UTC day (edges at midnight to the microsecond); the CSV is the ledger
//! row by row, exact amounts at the currency's scale, tricky texts quoted per RFC 4180; a
//! failure mid-stream breaks the download instead of truncating it quietly; and a million
//! lines stream from a real `tally serve` in constant memory.
//!
//! `GET /v1/accounts/summary` sums the caller's live accounts per currency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use sqlx::Connection;
use tally_tests::http::{TestServer, TestUser};
use tally_tests::on_both_stores;
use tally_tests::server::{Client, TallyServer};
use tally_tests::statements::{
    CsvReader, HEADER, LedgerLine, assert_amount, assert_csv_record, assert_json_line, execute, ledger, parse_csv,
    posting_id, set_booked_at,
};

on_both_stores!(
    json_pages_walk_every_posting_once_oldest_first_as_the_ledger_holds_it,
    filters_select_by_account_user_direction_and_utc_day_to_the_microsecond,
    bad_queries_are_refused_and_statements_need_transfers_read,
    the_csv_is_the_ledger_row_by_row_with_tricky_texts_quoted,
    the_accounts_summary_sums_live_accounts_per_currency,
);

/// 2025-06-15T00:00:00Z in microseconds: the day of the bulk ledgers.
const DAY: i64 = 1_749_945_600_000_000;
const DAY_MICROS: i64 = 86_400_000_000;
// ---------------------------------------------------------------------------------------------
// Set-up. (The ledger as the database holds it, and the CSV reader, are `tally_tests::statements`.)

fn internal(source: &str, destination: &str, amount: &str, reference: &str, description: &str) -> Value {
    json!({"type": "internal", "source_account_id": source, "destination_account_id": destination,
           "amount": amount, "reference": reference, "description": description})
}

async fn send(server: &TestServer, user: &TestUser, body: Value) -> String {
    let reply = server.post("/v1/transfers", Some(&user.token), body).await;
    reply.assert_status(201);
    reply.str("id")
}

fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

/// Ten days ago (UTC): its midnight in microseconds, and its date.
fn ten_days_ago() -> (i64, String) {
    let date = time::OffsetDateTime::now_utc().date() - time::Duration::days(10);
    let midnight = i64::try_from(date.midnight().assume_utc().unix_timestamp_nanos() / 1_000).unwrap();
    (midnight, date.to_string())
}

fn date_of(micros: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).unwrap().date().to_string()
}

/// Every page of a statement query (without `cursor`), following `next_cursor`.
async fn walk(server: &TestServer, token: &str, query: &str, limit: u32) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cursor) => format!("/v1/admin/statements?{query}&limit={limit}&cursor={cursor}"),
            None => format!("/v1/admin/statements?{query}&limit={limit}"),
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
        assert!(pages.len() < 1_000, "pagination terminates");
    }
}

/// Two customers with USD, EUR, JPY and ETH accounts and a few transfers between them, with
/// references and descriptions that need quoting in a CSV.
struct World {
    alice: TestUser,
    bob: TestUser,
    alice_usd: String,
    alice_eur: String,
    bob_usd: String,
    transfers: Vec<String>,
}

async fn world(server: &TestServer) -> World {
    let alice = server.user().await;
    let bob = server.user().await;
    let alice_usd = server.open_account(&alice, "USD").await;
    let alice_eur = server.open_account(&alice, "EUR").await;
    let alice_jpy = server.open_account(&alice, "JPY").await;
    let alice_eth = server.open_account(&alice, "ETH").await;
    let bob_usd = server.open_account(&bob, "USD").await;
    let bob_jpy = server.open_account(&bob, "JPY").await;
    let bob_eth = server.open_account(&bob, "ETH").await;
    server.fund(&alice_usd, dec!(1000.50)).await;
    server.fund(&alice_eur, dec!(20)).await;
    server.fund(&alice_jpy, dec!(150000)).await;
    server.fund(&alice_eth, dec!(1.000000000000000001)).await;
    let mut transfers = Vec::new();
    let tricky = [
        ("12.34", "plain", "rent"),
        ("0.01", "a,comma", "say \"hello\""),
        ("100", "\"quoted\"", "both, \"of\" them"),
        ("7.5", "ünïcødé €", "trailing space "),
    ];
    for (amount, reference, description) in tricky {
        transfers.push(send(server, &alice, internal(&alice_usd, &bob_usd, amount, reference, description)).await);
    }
    transfers.push(send(server, &bob, internal(&bob_usd, &alice_usd, "3.33", "back", "change")).await);
    transfers.push(send(server, &alice, internal(&alice_jpy, &bob_jpy, "1500", "yen", "jpy")).await);
    transfers
        .push(send(server, &alice, internal(&alice_eth, &bob_eth, "0.000000000000000001", "wei", "smallest")).await);
    World { alice, bob, alice_usd, alice_eur, bob_usd, transfers }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

async fn json_pages_walk_every_posting_once_oldest_first_as_the_ledger_holds_it(server: TestServer) {
    let _world = world(&server).await;
    let auditor = server.admin(&["transfers:read"]).await;
    let expected = ledger(&server).await;
    assert!(expected.len() >= 20, "the world made postings");

    let day = today();
    for limit in [1, 3, 500] {
        let pages = walk(&server, &auditor.token, &format!("from={day}&to={day}"), limit).await;
        let items: Vec<Value> = pages.into_iter().flatten().collect();
        assert_eq!(items.len(), expected.len(), "every posting exactly once at limit {limit}");
        for (item, line) in items.iter().zip(&expected) {
            assert_json_line(item, line);
        }
    }

    // The whole ledger balances: per currency, debits equal credits.
    let mut net: BTreeMap<String, Decimal> = BTreeMap::new();
    for line in &expected {
        let signed = if line.direction == "credit" { line.amount } else { -line.amount };
        *net.entry(line.currency.clone()).or_default() += signed;
    }
    assert!(net.values().all(Decimal::is_zero), "debits equal credits per currency: {net:?}");

    // A page holds at most 500 lines, and 100 when the client names no limit.
    let page = server.get(&format!("/v1/admin/statements?from={day}&to={day}"), Some(&auditor.token)).await;
    page.assert_status(200);
    assert_eq!(page.body["items"].as_array().unwrap().len(), expected.len().min(100));
    server.shutdown().await;
}

async fn filters_select_by_account_user_direction_and_utc_day_to_the_microsecond(server: TestServer) {
    let world = world(&server).await;
    let auditor = server.admin(&["transfers:read"]).await;
    let token = auditor.token.as_str();

    // Four of alice's transfers moved to the edges of a day ten days ago: one microsecond
    // before it, its first and last microsecond, and the next day's first.
    let (day_start, day) = ten_days_ago();
    let (before, after) = (date_of(day_start - 1), date_of(day_start + DAY_MICROS));
    let edges = [day_start - 1, day_start, day_start + DAY_MICROS - 1, day_start + DAY_MICROS];
    for (transfer, booked_at) in world.transfers.iter().zip(edges) {
        set_booked_at(&server, transfer, booked_at).await;
    }
    // Alice's USD was funded before those transfers: its funding moves back too, three days
    // before the day, so the account's postings stay in booking order.
    let three_before = date_of(day_start - 3 * DAY_MICROS);
    execute(
        &server,
        &format!(
            "UPDATE postings SET booked_at = {} WHERE transfer_id IN
                 (SELECT transfer_id FROM postings WHERE account_id = '{}' AND version = 1)",
            day_start - 3 * DAY_MICROS,
            world.alice_usd
        ),
    )
    .await;
    let expected = ledger(&server).await;
    let on = |from: i64, to: i64| -> Vec<&LedgerLine> {
        expected.iter().filter(|line| line.created_at >= from && line.created_at < to).collect()
    };
    let all = |query: String| {
        let server = &server;
        async move { walk(server, token, &query, 500).await.into_iter().flatten().collect::<Vec<Value>>() }
    };

    let on_day = on(day_start, day_start + DAY_MICROS);
    assert_eq!(on_day.len(), 4, "two transfers of two postings each on the day");
    let items = all(format!("from={day}&to={day}")).await;
    assert_eq!(items.len(), on_day.len());
    for (item, line) in items.iter().zip(&on_day) {
        assert_json_line(item, line);
    }
    let items = all(format!("from={before}&to={after}")).await;
    assert_eq!(items.len(), on(day_start - DAY_MICROS, day_start + 2 * DAY_MICROS).len());
    assert_eq!(items.len(), 8);
    let items = all(format!("from={day}&to={after}")).await;
    assert_eq!(items.len(), 6, "from is inclusive to its first microsecond");
    let items = all(format!("from={before}&to={day}")).await;
    assert_eq!(items.len(), 6, "to is inclusive to its last microsecond");
    let two_before = date_of(day_start - 2 * DAY_MICROS);
    assert!(all(format!("from={two_before}&to={two_before}")).await.is_empty());

    // One account: only its postings, and its balance runs forward line by line.
    let period = format!("from={three_before}&to={}", today());
    let items = all(format!("{period}&account_id={}", world.alice_usd)).await;
    let mine: Vec<&LedgerLine> = expected.iter().filter(|line| line.account == world.alice_usd).collect();
    assert_eq!(items.len(), mine.len());
    for (item, line) in items.iter().zip(&mine) {
        assert_json_line(item, line);
    }
    let mut balance = Decimal::ZERO;
    for line in &mine {
        balance += if line.direction == "credit" { line.amount } else { -line.amount };
        assert_eq!(line.balance_after, balance, "balance_after runs forward");
    }
    assert_eq!(server.position(&world.alice_usd).await.0, balance, "the last line is the live balance");

    // One user: every account of theirs, no one else's.
    let items = all(format!("{period}&user_id={}", world.bob.user_id)).await;
    let bobs: Vec<&LedgerLine> =
        expected.iter().filter(|line| line.owner.as_deref() == Some(world.bob.user_id.as_str())).collect();
    assert_eq!(items.len(), bobs.len());
    assert!(bobs.iter().any(|line| line.currency == "JPY") && bobs.iter().any(|line| line.currency == "USD"));
    for (item, line) in items.iter().zip(&bobs) {
        assert_json_line(item, line);
    }
    let items = all(format!("{period}&user_id={}", world.alice.user_id)).await;
    assert!(items.iter().any(|item| item["account_id"] == world.alice_eur), "every account of the user");

    // Direction, with a scope.
    let items = all(format!("{period}&user_id={}&direction=debit", world.bob.user_id)).await;
    let debits: Vec<&&LedgerLine> = bobs.iter().filter(|line| line.direction == "debit").collect();
    assert_eq!(items.len(), debits.len());
    assert!(!debits.is_empty());
    for (item, line) in items.iter().zip(&debits) {
        assert_json_line(item, line);
    }
    let credits = all(format!("{period}&account_id={}&direction=credit", world.bob_usd)).await;
    assert!(!credits.is_empty() && credits.iter().all(|item| item["direction"] == "credit"));

    // An account or user that does not exist is 404, not an empty statement.
    let nobody = uuid::Uuid::new_v4();
    for query in [format!("{period}&account_id={nobody}"), format!("{period}&user_id={nobody}")] {
        server.get(&format!("/v1/admin/statements?{query}"), Some(token)).await.assert_problem(404, "NOT_FOUND");
        let csv = format!("/v1/admin/statements?{query}&format=csv");
        server.get(&csv, Some(token)).await.assert_problem(404, "NOT_FOUND");
    }
    server.shutdown().await;
}

async fn bad_queries_are_refused_and_statements_need_transfers_read(server: TestServer) {
    let customer = server.user().await;
    let account = server.open_account(&customer, "USD").await;
    server.fund(&account, dec!(5)).await;
    let auditor = server.admin(&["transfers:read"]).await;
    let other_admin = server.admin(&["accounts:read", "fx:read"]).await;
    let ok = "from=2025-01-01&to=2025-01-31";
    let someone = uuid::Uuid::new_v4();
    let cases: Vec<(String, &str)> = vec![
        ("".to_owned(), "from"),
        ("to=2025-01-31".to_owned(), "from"),
        ("from=2025-01-01".to_owned(), "to"),
        ("from=2025-1-1&to=2025-01-31".to_owned(), "from"),
        ("from=2025-01-01T00:00:00Z&to=2025-01-31".to_owned(), "from"),
        ("from=2025-02-30&to=2025-03-01".to_owned(), "from"),
        ("from=2025-01-01&to=yesterday".to_owned(), "to"),
        ("from=2025-02-01&to=2025-01-31".to_owned(), "to"),
        ("from=2024-01-01&to=2025-01-01".to_owned(), "to"),
        (format!("{ok}&account_id={account}&user_id={}", customer.user_id), "user_id"),
        (format!("{ok}&account_id=42"), "account_id"),
        (format!("{ok}&user_id=not-a-uuid"), "user_id"),
        (format!("{ok}&direction=sideways"), "direction"),
        (format!("{ok}&limit=0"), "limit"),
        (format!("{ok}&limit=501"), "limit"),
        (format!("{ok}&limit=-1"), "limit"),
        (format!("{ok}&limit=ten"), "limit"),
        (format!("{ok}&cursor=nonsense"), "cursor"),
        (format!("{ok}&format=xml"), "format"),
        (format!("{ok}&format=csv&limit=10"), "limit"),
        (format!("{ok}&format=csv&cursor=abc"), "cursor"),
    ];
    for (query, field) in &cases {
        let reply = server.get(&format!("/v1/admin/statements?{query}"), Some(&auditor.token)).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec![(*field).to_owned()], "{query}: {}", reply.text);
    }
    // An unknown parameter.
    let reply = server.get(&format!("/v1/admin/statements?{ok}&page=2"), Some(&auditor.token)).await;
    reply.assert_problem(400, "VALIDATION_ERROR");
    // 366 days (a leap year) is the most a statement covers.
    server.get("/v1/admin/statements?from=2024-01-01&to=2024-12-31", Some(&auditor.token)).await.assert_status(200);

    // Who may read: an admin holding transfers:read, nobody else.
    let path = format!("/v1/admin/statements?{ok}&user_id={someone}");
    let csv = format!("/v1/admin/statements?{ok}&format=csv");
    for path in [path.as_str(), csv.as_str()] {
        server.get(path, None).await.assert_problem(401, "UNAUTHENTICATED");
        server.get(path, Some("not.a.token")).await.assert_problem(401, "UNAUTHENTICATED");
        server.get(path, Some(&customer.token)).await.assert_problem(403, "FORBIDDEN");
        server.get(path, Some(&other_admin.token)).await.assert_problem(403, "FORBIDDEN");
    }
    server.get(&csv, Some(&auditor.token)).await.assert_status(200);
    server.shutdown().await;
}

async fn the_csv_is_the_ledger_row_by_row_with_tricky_texts_quoted(server: TestServer) {
    let world = world(&server).await;
    // Texts the API refuses (control characters) can still be in the ledger (an import, an
    // older version): a newline and a lone CR must round-trip too.
    execute(
        &server,
        &format!(
            "UPDATE transfers SET reference = 'line one\nline \"two\", end', description = 'cr\ronly' WHERE id = '{}'",
            world.transfers[0]
        ),
    )
    .await;
    let auditor = server.admin(&["transfers:read"]).await;
    let expected = ledger(&server).await;
    assert!(expected.iter().any(|line| line.reference.as_deref() == Some("line one\nline \"two\", end")));

    let day = today();
    let reply = server.get(&format!("/v1/admin/statements?from={day}&to={day}&format=csv"), Some(&auditor.token)).await;
    reply.assert_status(200);
    let header = |name: &str| reply.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("").to_owned();
    assert!(header("content-type").starts_with("text/csv"), "{}", header("content-type"));
    assert_eq!(header("content-disposition"), format!("attachment; filename=\"statement-{day}-{day}.csv\""));
    let records = parse_csv(&reply.text);
    assert_eq!(records[0], HEADER, "a header row first");
    assert_eq!(records.len() - 1, expected.len(), "every posting, once");
    for (record, line) in records[1..].iter().zip(&expected) {
        assert_csv_record(record, line);
    }

    // One account's CSV is its postings, in order.
    let reply = server
        .get(
            &format!("/v1/admin/statements?from={day}&to={day}&account_id={}&format=csv", world.alice_usd),
            Some(&auditor.token),
        )
        .await;
    reply.assert_status(200);
    let records = parse_csv(&reply.text);
    let mine: Vec<&LedgerLine> = expected.iter().filter(|line| line.account == world.alice_usd).collect();
    assert_eq!(records.len() - 1, mine.len());
    for (record, line) in records[1..].iter().zip(&mine) {
        assert_csv_record(record, line);
    }

    // A period without postings is a header and nothing else.
    let reply = server.get("/v1/admin/statements?from=2001-01-01&to=2001-01-31&format=csv", Some(&auditor.token)).await;
    reply.assert_status(200);
    assert_eq!(parse_csv(&reply.text), vec![HEADER.map(str::to_owned).to_vec()]);
    assert_eq!(
        reply.headers.get("content-disposition").unwrap(),
        "attachment; filename=\"statement-2001-01-01-2001-01-31.csv\""
    );
    server.shutdown().await;
}

async fn the_accounts_summary_sums_live_accounts_per_currency(server: TestServer) {
    let alice = server.user().await;
    let bob = server.user().await;
    let closer = server.admin(&["accounts:close"]).await;

    // Nothing yet: no currencies.
    let reply = server.get("/v1/accounts/summary", Some(&alice.token)).await;
    reply.assert_status(200);
    assert_eq!(reply.body, json!({"items": []}));

    let usd_1 = server.open_account(&alice, "USD").await;
    let usd_2 = server.open_account(&alice, "USD").await;
    let usd_blocked = server.open_account(&alice, "USD").await;
    let usd_closed = server.open_account(&alice, "USD").await;
    let jpy = server.open_account(&alice, "JPY").await;
    let bob_usd = server.open_account(&bob, "USD").await;
    server.fund(&usd_1, dec!(100.25)).await;
    server.fund(&usd_2, dec!(0.75)).await;
    server.fund(&usd_blocked, dec!(10)).await;
    server.fund(&jpy, dec!(5000)).await;
    server.fund(&bob_usd, dec!(999)).await;
    // A pending external transfer holds 20 on usd_1.
    let pending = server
        .post(
            "/v1/transfers",
            Some(&alice.token),
            json!({"type": "external", "source_account_id": usd_1,
                   "beneficiary": {"name": "Ada", "iban": "GB82WEST12345698765432"}, "amount": "20"}),
        )
        .await;
    pending.assert_status(202);
    let held = server.position(&usd_1).await.1;
    assert!(held >= dec!(20), "the external transfer holds at least its amount");
    for (account, action) in [(&usd_blocked, "block"), (&usd_closed, "close")] {
        server
            .post(
                &format!("/v1/admin/accounts/{account}/status"),
                Some(&closer.token),
                json!({"action": action, "reason": "test"}),
            )
            .await
            .assert_status(204);
    }

    let reply = server.get("/v1/accounts/summary", Some(&alice.token)).await;
    reply.assert_status(200);
    let items = reply.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", reply.text);
    assert_eq!(items[0]["currency"], "JPY", "currencies in code order");
    assert_eq!(items[0]["account_count"], 1);
    assert_eq!(items[0]["balance"], "5000");
    assert_eq!(items[0]["held"], "0");
    assert_eq!(items[0]["available_balance"], "5000");
    assert_eq!(items[1]["currency"], "USD");
    assert_eq!(items[1]["account_count"], 3, "the closed account is left out");
    assert_eq!(items[1]["balance"], "111.00", "active and blocked balances");
    let at_usd_scale = |mut value: Decimal| {
        value.rescale(2);
        value.to_string()
    };
    assert_eq!(items[1]["held"], at_usd_scale(held));
    let available = at_usd_scale(dec!(101) - held);
    assert_eq!(items[1]["available_balance"], available, "the blocked account's money is not available");

    // The same figures as the account listing at the same instant.
    let listed = server.get("/v1/accounts", Some(&alice.token)).await;
    let usd_balance: Decimal = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|account| account["currency"] == "USD" && account["status"] != "closed")
        .map(|account| Decimal::from_str(account["balance"].as_str().unwrap()).unwrap())
        .sum();
    assert_eq!(usd_balance, dec!(111));

    // Another user sees only their own.
    let reply = server.get("/v1/accounts/summary", Some(&bob.token)).await;
    assert_eq!(
        reply.body,
        json!({"items": [{"currency": "USD", "account_count": 1, "balance": "999.00", "held": "0.00", "available_balance": "999.00"}]})
    );

    // Errors: no token, a bad token, a wrong method; `summary` is not taken for an account id.
    server.get("/v1/accounts/summary", None).await.assert_problem(401, "UNAUTHENTICATED");
    server.get("/v1/accounts/summary", Some("nope")).await.assert_problem(401, "UNAUTHENTICATED");
    let reply = server.post("/v1/accounts/summary", Some(&alice.token), json!({})).await;
    assert_eq!(reply.status, 405, "{}", reply.text);
    server.get(&format!("/v1/accounts/{usd_1}"), Some(&alice.token)).await.assert_status(200);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Bulk ledgers straight into Postgres, then a real `tally serve`.

/// A migrated Postgres database holding `n_transfers` synthetic internal USD transfers from
/// account A to account B (two postings each, `2 * n_transfers` in all: posting `i` of each
/// account is transfer `i`'s), all booked on DAY one microsecond apart, every thousandth with
/// a reference that needs quoting. Each account's snapshot is at its last posting, so the
/// server that starts on it loads the accounts without replaying them. Only the reads are
/// exercised: the synthetic ledger does not balance (A was never funded), which no read
/// checks. Returns the database URL and A and B in the order a statement lists them (account
/// id order): `(url, first, second, first_is_a)`.
async fn bulk_ledger(n_transfers: i64) -> (String, String, String, bool) {
    let (store, url) = tally_tests::postgres::fresh_store("statements").await;
    drop(store);
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let owner = uuid::Uuid::new_v4();
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let transfer_id = "('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid";
    let amount = "round(((i % 100) + 1)::numeric / 100, 2)";
    let last = DAY + n_transfers;
    let statements = [
        format!(
            "INSERT INTO accounts (id, owner_id, currency, kind, status, balance, held, credit_limit, created_at,
                                   version, booked_at)
             VALUES ('{a}', '{owner}', 'USD', 'user', 'active', 0, 0, 0, {DAY}, {n_transfers}, {last}),
                    ('{b}', '{owner}', 'USD', 'user', 'active', 0, 0, 0, {DAY}, {n_transfers}, {last})"
        ),
        format!(
            "INSERT INTO transfers (id, kind, status, step, source_id, destination_id, amount, currency, fee,
                                    destination_amount, destination_currency, reference, description,
                                    created_at, completed_at, seq)
             SELECT {transfer_id}, 'internal', 'completed', 'posted', '{a}', '{b}', {amount}, 'USD', 0,
                    {amount}, 'USD',
                    CASE WHEN i % 1000 = 0 THEN 'bulk, \"' || i || '\"' ELSE 'bulk-' || i END, NULL,
                    {DAY} + i, {DAY} + i, i
             FROM generate_series(1, {n_transfers}) i"
        ),
        format!(
            "INSERT INTO postings (account_id, booked_at, version, transfer_id, currency, direction, amount,
                                   balance_after, shard, seq)
             SELECT '{a}'::uuid, {DAY} + i, i, {transfer_id}, 'USD', 'debit', {amount},
                    -SUM({amount}) OVER (ORDER BY i), 0, i
             FROM generate_series(1, {n_transfers}) i
             UNION ALL
             SELECT '{b}'::uuid, {DAY} + i, i, {transfer_id}, 'USD', 'credit', {amount},
                    SUM({amount}) OVER (ORDER BY i), 0, i
             FROM generate_series(1, {n_transfers}) i"
        ),
    ];
    for sql in statements {
        sqlx::query(&sql).execute(&mut db).await.unwrap();
    }
    db.close().await.unwrap();
    let (first, second) = if a < b { (a, b) } else { (b, a) };
    (url, first.to_string(), second.to_string(), a < b)
}

/// The expected amount of bulk transfer `i`, as text at USD's scale.
fn bulk_amount(i: i64) -> Decimal {
    Decimal::new((i % 100) + 1, 2)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// A million lines stream from a real `tally serve` while its resident memory stays flat.
///
/// Back of the envelope: a line is ~250 bytes of CSV and a `StatementLine` in memory ~200
/// bytes with its strings, so holding the rows or the text would take 200-450 MB. The server
/// holds one chunk of 1,000 lines (~0.5 MB) at a time; the bound below (48 MiB of growth over
/// the idle server's resident size) is generous for allocator slack and still an order of
/// magnitude below holding the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_lines_stream_as_csv_in_constant_memory() {
    const N_TRANSFERS: i64 = 500_000;
    const GROWTH_KIB_MAX: u64 = 48 * 1024;
    let started = Instant::now();
    let (url, first, second, first_is_a) = bulk_ledger(N_TRANSFERS).await;
    eprintln!("bulk insert of {} postings: {:?}", 2 * N_TRANSFERS, started.elapsed());
    // This measures memory, not time: the first read of a table just loaded with a million
    // rows (no statistics yet) outran the default 10 s request time-out once in CI.
    let server = TallyServer::start(&url, &[("TALLY_REQUEST_TIMEOUT_SECS", "120")]).await;
    let pid = server.pid().unwrap();
    let admin = Client::admin(&server).await;

    // Warm the route (the first request allocates pools, caches and prepared statements).
    let (status, page) = admin.get("/v1/admin/statements?from=2025-06-15&to=2025-06-15&limit=500").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 500);
    let baseline = rss_kib(pid, "VmRSS:");

    let streaming = Instant::now();
    let mut response = admin
        .http
        .get(format!("{}/v1/admin/statements?from=2025-06-15&to=2025-06-15&format=csv", server.base_url()))
        .bearer_auth(&admin.token)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = CsvReader::default();
    let mut rows: i64 = 0;
    let mut bytes: u64 = 0;
    let mut rss_max = baseline;
    let mut n_samples = 0;
    let mut header_seen = false;
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        reader.feed(&chunk);
        for record in reader.take() {
            if !header_seen {
                assert_eq!(record, HEADER);
                header_seen = true;
                continue;
            }
            rows += 1;
            // The first account's postings, then the second's; posting `i` of either is
            // transfer `i`'s, a debit of A and a credit of B.
            let (account, i) = if rows <= N_TRANSFERS { (&first, rows) } else { (&second, rows - N_TRANSFERS) };
            let is_a = (account == &first) == first_is_a;
            assert_eq!(record[0], posting_id(account, i), "row {rows} in account and posting order");
            assert_eq!(&record[2], account);
            assert_eq!(record[5], if is_a { "debit" } else { "credit" });
            assert_amount(&record[6], bulk_amount(i), "USD");
            if i % 1000 == 0 {
                assert_eq!(record[9], format!("bulk, \"{i}\""), "a quoted reference round-trips");
            }
        }
        if rows / 10_000 > n_samples {
            n_samples = rows / 10_000;
            rss_max = rss_max.max(rss_kib(pid, "VmRSS:"));
        }
    }
    reader.finish();
    let elapsed = streaming.elapsed();
    eprintln!(
        "streamed {rows} rows, {} MB in {elapsed:?}; server RSS baseline {baseline} KiB, max {rss_max} KiB over {n_samples} samples",
        bytes / 1_000_000
    );
    assert_eq!(rows, 2 * N_TRANSFERS, "every posting, once");
    assert!(n_samples >= 50, "memory was sampled throughout the stream");
    assert!(bytes > 150_000_000, "the file is far larger than the memory bound ({bytes} bytes)");
    assert!(
        rss_max.saturating_sub(baseline) < GROWTH_KIB_MAX,
        "server RSS grew from {baseline} KiB to {rss_max} KiB while streaming"
    );
    drop(server);
}

/// A line the server cannot write after the answer started (here a posting whose currency the
/// engine does not know, past the first chunk) breaks the download: the client gets an error
/// reading the body, never a shorter file that looks complete. Before the first byte, the same
/// failure is a problem+json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_stream_aborts_the_download_instead_of_truncating_it() {
    let (url, first, _, _) = bulk_ledger(2_500).await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    // Line 1,501 of the statement: in its second chunk of 1,000.
    sqlx::query(&format!("UPDATE postings SET currency = 'XXX' WHERE account_id = '{first}' AND version = 1501"))
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let server = TallyServer::start(&url, &[]).await;
    let admin = Client::admin(&server).await;

    let response = admin
        .http
        .get(format!("{}/v1/admin/statements?from=2025-06-15&to=2025-06-15&format=csv", server.base_url()))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the first chunk was fine, so the answer started");
    let body = response.bytes().await;
    assert!(body.is_err(), "the body must not end cleanly");

    // The same line in the first chunk fails before the answer starts.
    let (status, body) = admin.get("/v1/admin/statements?from=2025-06-15&to=2025-06-15&limit=500").await;
    assert_eq!(status, 200, "{body}");
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("UPDATE postings SET currency = 'XXX' WHERE account_id = '{first}' AND version = 2"))
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let response = admin
        .http
        .get(format!("{}/v1/admin/statements?from=2025-06-15&to=2025-06-15&format=csv", server.base_url()))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    drop(server);
}
