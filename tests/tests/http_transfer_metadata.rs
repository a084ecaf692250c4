//! Transfer metadata and the transfer listings' filters (issue 15 item 1) over a real socket on
//! both stores: metadata round-trips through create, get, the listings, batch items, replays
//! and the stored row; every bad metadata is a 400 naming the field with nothing created;
//! every filter, and combinations of them, on the customer's and the admin's listing and the
//! admin count, checked against the transfers table read with SQL behind the API's back;
//! pagination with inserts between pages; a table-wide page's scan bound; bad filters 400.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use sqlx::Connection;
use tally_persistence::reads::LedgerReads;
use tally_persistence::reads::listing::{Order, Position, TransferFilter};
use tally_persistence::reads::transfer_query::{self, Arg, Dialect};
use tally_tests::http::{Backend, TestServer, TestUser};
use tally_tests::on_both_stores;

on_both_stores!(
    metadata_round_trips_through_create_get_lists_batches_replays_and_the_row,
    bad_metadata_is_refused_naming_the_field_and_creates_nothing,
    every_filter_and_their_combinations_list_what_the_table_holds,
    filtered_pages_repeat_and_skip_nothing_while_transfers_arrive,
    a_table_wide_page_stops_at_its_scan_bound_and_the_walk_is_complete,
    bad_filters_are_refused_and_the_listings_need_their_caller,
    every_page_query_reads_an_index_range_never_the_whole_table,
);

/// One transfer row as the database holds it.
#[derive(Clone, Debug)]
struct Row {
    id: String,
    kind: String,
    status: String,
    source: String,
    destination: String,
    amount: Decimal,
    reference: Option<String>,
    created_at: i64,
    metadata: BTreeMap<String, String>,
}

/// Every transfer row, read with SQL behind the API's back.
async fn table(server: &TestServer) -> Vec<Row> {
    type Raw = (String, String, String, String, String, String, Option<String>, i64, Option<String>);
    let rows: Vec<Raw> = match server.backend {
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
            sqlx::query_as(
                "SELECT id::text, kind, status, source_id::text, destination_id::text, amount::text, reference,
                        created_at, metadata::text FROM transfers",
            )
            .fetch_all(&mut db)
            .await
            .unwrap()
        }
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
            sqlx::query_as(
                "SELECT id, kind, status, source_id, destination_id, amount, reference, created_at, metadata
                 FROM transfers",
            )
            .fetch_all(&mut db)
            .await
            .unwrap()
        }
    };
    rows.into_iter()
        .map(|(id, kind, status, source, destination, amount, reference, created_at, metadata)| Row {
            id,
            kind,
            status,
            source,
            destination,
            amount: Decimal::from_str(&amount).unwrap(),
            reference,
            created_at,
            metadata: metadata.map(|text| serde_json::from_str(&text).unwrap()).unwrap_or_default(),
        })
        .collect()
}

async fn durable(server: &TestServer) {
    server.engine.journals().barrier().await.unwrap();
}

fn internal(source: &str, destination: &str, amount: &str, metadata: Value) -> Value {
    json!({"type": "internal", "source_account_id": source, "destination_account_id": destination,
           "amount": amount, "metadata": metadata})
}

/// Every page of `path?query` at `limit`, following `next_cursor`: the ids in order.
async fn walk(server: &TestServer, token: &str, path: &str, query: &str, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..200 {
        let mut url = format!("{path}?limit={limit}");
        if !query.is_empty() {
            url.push('&');
            url.push_str(query);
        }
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = server.get(&url, Some(token)).await;
        assert_eq!(page.status, 200, "{url}: {}", page.text);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        ids.extend(items.iter().map(|item| item["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
    panic!("{path}?{query} does not end");
}

async fn metadata_round_trips_through_create_get_lists_batches_replays_and_the_row(server: TestServer) {
    let alice = server.user().await;
    let admin = server.admin(&["transfers:read", "events:read"]).await;
    let from = server.open_account(&alice, "USD").await;
    let to = server.open_account(&alice, "USD").await;
    server.fund(&from, dec!(100)).await;
    let metadata = json!({"order_id": "A-1", "note": "café \"quoted\" & spaced", "x.y:z-1_2": "v"});
    let created = server
        .post_keyed("/v1/transfers", Some(&alice.token), "k-1", internal(&from, &to, "1.5", metadata.clone()))
        .await;
    created.assert_status(201);
    assert_eq!(created.body["metadata"], metadata);
    let id = created.str("id");
    let got = server.get(&format!("/v1/transfers/{id}"), Some(&alice.token)).await;
    assert_eq!(got.body["metadata"], metadata);
    let admin_view = server.get(&format!("/v1/admin/transfers/{id}"), Some(&admin.token)).await;
    admin_view.assert_status(200);
    assert_eq!(admin_view.body["metadata"], metadata);
    let listed = server.get("/v1/transfers", Some(&alice.token)).await;
    let item = listed.body["items"].as_array().unwrap().iter().find(|item| item["id"] == id.as_str()).unwrap().clone();
    assert_eq!(item["metadata"], metadata);
    let admin_listed = server.get("/v1/admin/transfers?metadata.order_id=A-1", Some(&admin.token)).await;
    assert_eq!(admin_listed.body["items"][0]["metadata"], metadata);

    // The same key and body, keys in another order: the same request, replayed.
    let reordered = json!({"x.y:z-1_2": "v", "order_id": "A-1", "note": "café \"quoted\" & spaced"});
    let replay =
        server.post_keyed("/v1/transfers", Some(&alice.token), "k-1", internal(&from, &to, "1.50", reordered)).await;
    replay.assert_status(201);
    assert_eq!(replay.str("id"), id);
    assert_eq!(replay.body["metadata"], metadata);
    // Other metadata under the same key is another request; so is none.
    for other in [json!({"order_id": "A-2"}), json!(null), json!({})] {
        let reused =
            server.post_keyed("/v1/transfers", Some(&alice.token), "k-1", internal(&from, &to, "1.5", other)).await;
        reused.assert_problem(409, "IDEMPOTENCY_KEY_REUSED");
    }
    // Without metadata: `{}` in the view, NULL in the row; `null` and `{}` are the same request.
    let plain =
        server.post_keyed("/v1/transfers", Some(&alice.token), "k-2", internal(&from, &to, "1", json!(null))).await;
    plain.assert_status(201);
    assert_eq!(plain.body["metadata"], json!({}));
    let again =
        server.post_keyed("/v1/transfers", Some(&alice.token), "k-2", internal(&from, &to, "1", json!({}))).await;
    again.assert_status(201);
    assert_eq!(again.str("id"), plain.str("id"));

    // Batch items carry their own metadata, in the results and on replay.
    let batch = json!({"transfers": [
        internal(&from, &to, "1", json!({"batch": "b-1", "line": "1"})),
        internal(&from, &to, "2", json!(null)),
    ]});
    let answer = server.post_keyed("/v1/transfers/batch", Some(&alice.token), "b-1", batch.clone()).await;
    answer.assert_status(200);
    assert_eq!(answer.body["results"][0]["transfer"]["metadata"], json!({"batch": "b-1", "line": "1"}));
    assert_eq!(answer.body["results"][1]["transfer"]["metadata"], json!({}));
    let replayed = server.post_keyed("/v1/transfers/batch", Some(&alice.token), "b-1", batch).await;
    assert_eq!(replayed.body["results"][0]["transfer"]["id"], answer.body["results"][0]["transfer"]["id"]);
    assert_eq!(replayed.body["results"][0]["transfer"]["metadata"], json!({"batch": "b-1", "line": "1"}));
    let atomic = json!({"atomic": true, "transfers": [internal(&from, &to, "1", json!({"batch": "b-2"}))]});
    let atomic = server.post("/v1/transfers/batch", Some(&alice.token), atomic).await;
    assert_eq!(atomic.body["results"][0]["transfer"]["metadata"], json!({"batch": "b-2"}));
    let atomic_id = atomic.body["results"][0]["transfer"]["id"].as_str().unwrap().to_owned();

    // The rows hold exactly the pairs (NULL for none).
    durable(&server).await;
    let rows = table(&server).await;
    let row = |id: &str| rows.iter().find(|row| row.id == id).unwrap().metadata.clone();
    assert_eq!(serde_json::to_value(row(&id)).unwrap(), metadata);
    assert!(row(&plain.str("id")).is_empty());
    assert_eq!(serde_json::to_value(row(&atomic_id)).unwrap(), json!({"batch": "b-2"}));
    // The transfer's event carries the transfer view, metadata included.
    let events = server.get("/v1/admin/events?limit=1000", Some(&admin.token)).await;
    events.assert_status(200);
    let event = events.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["data"]["id"] == id.as_str())
        .unwrap_or_else(|| panic!("an event of {id}: {}", events.text))
        .clone();
    assert_eq!(event["data"]["metadata"], metadata);
    // A quote accepts valid metadata and ignores it.
    let quote = server.post("/v1/transfers/quote", Some(&alice.token), internal(&from, &to, "1", metadata)).await;
    quote.assert_status(200);
    assert!(quote.body.get("metadata").is_none());
    server.shutdown().await;
}

async fn bad_metadata_is_refused_naming_the_field_and_creates_nothing(server: TestServer) {
    let alice = server.user().await;
    let from = server.open_account(&alice, "USD").await;
    let to = server.open_account(&alice, "USD").await;
    server.fund(&from, dec!(100)).await;
    durable(&server).await;
    let before = table(&server).await.len();
    let seventeen: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let sixteen: serde_json::Map<String, Value> = (0..16).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!(["a", "b"]), "metadata"),
        (json!("order=1"), "metadata"),
        (json!(42), "metadata"),
        (json!(true), "metadata"),
        (Value::Object(seventeen), "metadata"),
        (json!({"": "v"}), "metadata"),
        (json!({"k".repeat(65): "v"}), "metadata"),
        (json!({"with space": "v"}), "metadata"),
        (json!({"ünïcode": "v"}), "metadata"),
        (json!({"k": 1}), "metadata.k"),
        (json!({"k": -1.5}), "metadata.k"),
        (json!({"k": null}), "metadata.k"),
        (json!({"k": {"nested": "v"}}), "metadata.k"),
        (json!({"k": ["v"]}), "metadata.k"),
        (json!({"k": ""}), "metadata.k"),
        (json!({"k": "é".repeat(513)}), "metadata.k"),
        (json!({"k": "line\nbreak"}), "metadata.k"),
        (json!({"k": "nul\u{0}"}), "metadata.k"),
    ];
    for (metadata, field) in &cases {
        let reply = server.post("/v1/transfers", Some(&alice.token), internal(&from, &to, "1", metadata.clone())).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec![field.to_string()], "{metadata}");
        // A quote checks metadata as the transfer would.
        let quote =
            server.post("/v1/transfers/quote", Some(&alice.token), internal(&from, &to, "1", metadata.clone())).await;
        quote.assert_problem(400, "VALIDATION_ERROR");
        // A batch item fails alone; an atomic batch with it does nothing.
        let batch = json!({"transfers": [internal(&from, &to, "1", metadata.clone())]});
        let answer = server.post("/v1/transfers/batch", Some(&alice.token), batch).await;
        answer.assert_status(200);
        assert_eq!(answer.body["results"][0]["status"], 400, "{metadata}");
        let atomic = json!({"atomic": true, "transfers": [internal(&from, &to, "1", json!({"ok": "1"})),
                                                            internal(&from, &to, "1", metadata.clone())]});
        let answer = server.post("/v1/transfers/batch", Some(&alice.token), atomic).await;
        assert_ne!(answer.body["results"][0]["status"], 201, "{metadata}");
    }
    // A key given twice in one object (raw JSON: a map would keep one).
    let raw = format!(
        r#"{{"type":"internal","source_account_id":"{from}","destination_account_id":"{to}","amount":"1","metadata":{{"a":"1","a":"2"}}}}"#
    );
    let reply = server.post_raw("/v1/transfers", Some(&alice.token), "application/json", raw.into_bytes()).await;
    reply.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(reply.error_fields(), vec!["metadata.a".to_owned()]);
    durable(&server).await;
    assert_eq!(table(&server).await.len(), before, "nothing was created");
    assert_eq!(server.position(&from).await, (dec!(100.00), dec!(0.00)));
    // The bounds themselves are accepted.
    for metadata in [Value::Object(sixteen), json!({"k".repeat(64): "é".repeat(512)})] {
        let reply = server.post("/v1/transfers", Some(&alice.token), internal(&from, &to, "1", metadata.clone())).await;
        reply.assert_status(201);
        assert_eq!(reply.body["metadata"], metadata);
    }
    server.shutdown().await;
}

/// A listing's filters as the test understands them, to pick the expected rows itself.
#[derive(Default)]
struct Expect<'a> {
    status: Option<&'a str>,
    kind: Option<&'a str>,
    account: Option<&'a str>,
    reference: Option<&'a str>,
    min: Option<Decimal>,
    max: Option<Decimal>,
    from: Option<i64>,
    to: Option<i64>,
    metadata: Vec<(&'a str, &'a str)>,
}

impl Expect<'_> {
    fn matches(&self, row: &Row, party: Option<&[String]>) -> bool {
        let touches = |accounts: &[String]| accounts.contains(&row.source) || accounts.contains(&row.destination);
        if let Some(party) = party {
            if !touches(party) {
                return false;
            }
            if let Some(account) = self.account
                && !party.iter().any(|mine| mine == account)
            {
                return false;
            }
        }
        self.status.is_none_or(|status| row.status == status)
            && self.kind.is_none_or(|kind| row.kind == kind)
            && self.account.is_none_or(|account| row.source == account || row.destination == account)
            && self.reference.is_none_or(|reference| row.reference.as_deref() == Some(reference))
            && self.min.is_none_or(|min| row.amount >= min)
            && self.max.is_none_or(|max| row.amount <= max)
            && self.from.is_none_or(|from| row.created_at >= from)
            && self.to.is_none_or(|to| row.created_at < to)
            && self.metadata.iter().all(|(key, value)| row.metadata.get(*key).map(String::as_str) == Some(*value))
    }
}

/// The ids `expect` selects from `rows`, newest first (ids are time-ordered; text order is id
/// order).
fn expected(rows: &[Row], expect: &Expect<'_>, party: Option<&[String]>) -> Vec<String> {
    let mut ids: Vec<String> = rows.iter().filter(|row| expect.matches(row, party)).map(|row| row.id.clone()).collect();
    ids.sort();
    ids.reverse();
    ids
}

fn micros_of(rfc3339: &str) -> i64 {
    let at = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap()
}

async fn every_filter_and_their_combinations_list_what_the_table_holds(server: TestServer) {
    let alice = server.user().await;
    let bob = server.user().await;
    let admin = server.admin(&["transfers:read"]).await;
    let a1 = server.open_account(&alice, "USD").await;
    let a2 = server.open_account(&alice, "USD").await;
    let b1 = server.open_account(&bob, "USD").await;
    server.fund(&a1, dec!(100)).await;
    server.fund(&a2, dec!(50)).await;
    server.fund(&b1, dec!(50)).await;
    let send = |user: &TestUser, body: Value| {
        let token = user.token.clone();
        let server = &server;
        async move { server.post("/v1/transfers", Some(&token), body).await }
    };
    let mut t1 = internal(&a1, &b1, "1.00", json!({"order": "o-1", "channel": "web"}));
    t1["reference"] = json!("inv-1");
    send(&alice, t1).await.assert_status(201);
    let mut t2 = internal(&a1, &a2, "2.50", json!({"order": "o-2", "channel": "web"}));
    t2["reference"] = json!("inv-2");
    send(&alice, t2).await.assert_status(201);
    let t3 = send(&alice, internal(&a2, &b1, "10", json!({"channel": "app"}))).await;
    t3.assert_status(201);
    let t3_at = t3.str("created_at");
    let external = json!({"type": "external", "source_account_id": a1, "amount": "5",
        "beneficiary": {"name": "Grace Hopper", "iban": "DE89 3704 0044 0532 0130 00"},
        "metadata": {"order": "o-3", "channel": "web"}});
    send(&alice, external).await.assert_status(202);
    send(&bob, internal(&b1, &a1, "3", json!({"channel": "web"}))).await.assert_status(201);
    let batch = json!({"transfers": [internal(&a1, &b1, "7.5", json!({"batch": "b-1"})),
                                     internal(&a1, &a2, "7.50", json!({"batch": "b-1", "channel": "web"}))]});
    server.post("/v1/transfers/batch", Some(&alice.token), batch).await.assert_status(200);
    durable(&server).await;
    let rows = table(&server).await;
    assert_eq!(rows.len(), 10);
    let from = micros_of(&t3_at);

    let cases: Vec<(String, Expect<'_>)> = vec![
        (String::new(), Expect::default()),
        ("status=pending".into(), Expect { status: Some("pending"), ..Default::default() }),
        ("status=completed".into(), Expect { status: Some("completed"), ..Default::default() }),
        ("type=external".into(), Expect { kind: Some("external"), ..Default::default() }),
        ("type=admin_credit".into(), Expect { kind: Some("admin_credit"), ..Default::default() }),
        (format!("account_id={a2}"), Expect { account: Some(&a2), ..Default::default() }),
        (format!("account_id={b1}"), Expect { account: Some(&b1), ..Default::default() }),
        ("reference=inv-1".into(), Expect { reference: Some("inv-1"), ..Default::default() }),
        ("min_amount=2.5".into(), Expect { min: Some(dec!(2.5)), ..Default::default() }),
        ("max_amount=2.50".into(), Expect { max: Some(dec!(2.5)), ..Default::default() }),
        (
            "min_amount=3&max_amount=7.5".into(),
            Expect { min: Some(dec!(3)), max: Some(dec!(7.5)), ..Default::default() },
        ),
        ("min_amount=9.99".into(), Expect { min: Some(dec!(9.99)), ..Default::default() }),
        (format!("from={t3_at}"), Expect { from: Some(from), ..Default::default() }),
        (format!("to={t3_at}"), Expect { to: Some(from), ..Default::default() }),
        (format!("from={t3_at}&to={t3_at}"), Expect { from: Some(from), to: Some(from), ..Default::default() }),
        ("metadata.channel=web".into(), Expect { metadata: vec![("channel", "web")], ..Default::default() }),
        (
            "metadata.channel=web&metadata.order=o-1".into(),
            Expect { metadata: vec![("channel", "web"), ("order", "o-1")], ..Default::default() },
        ),
        ("metadata.order=nope".into(), Expect { metadata: vec![("order", "nope")], ..Default::default() }),
        (
            "metadata.channel=web&type=internal&min_amount=2".into(),
            Expect {
                metadata: vec![("channel", "web")],
                kind: Some("internal"),
                min: Some(dec!(2)),
                ..Default::default()
            },
        ),
        (
            format!("account_id={a1}&metadata.batch=b-1&status=completed&from={t3_at}"),
            Expect {
                account: Some(&a1),
                metadata: vec![("batch", "b-1")],
                status: Some("completed"),
                from: Some(from),
                ..Default::default()
            },
        ),
        (
            "type=internal&reference=inv-2&max_amount=100".into(),
            Expect { kind: Some("internal"), reference: Some("inv-2"), max: Some(dec!(100)), ..Default::default() },
        ),
    ];
    let alice_accounts = vec![a1.clone(), a2.clone()];
    let bob_accounts = vec![b1.clone()];
    for (query, expect) in &cases {
        let want = expected(&rows, expect, Some(&alice_accounts));
        for limit in [1, 2, 50] {
            assert_eq!(
                walk(&server, &alice.token, "/v1/transfers", query, limit).await,
                want,
                "alice: {query} @ {limit}"
            );
        }
        let bobs = expected(&rows, expect, Some(&bob_accounts));
        assert_eq!(walk(&server, &bob.token, "/v1/transfers", query, 2).await, bobs, "bob: {query}");
        // The admin's listing and count: the same filters over every transfer, and per user.
        let all = expected(&rows, expect, None);
        assert_eq!(walk(&server, &admin.token, "/v1/admin/transfers", query, 2).await, all, "admin: {query}");
        let count = server.get(&format!("/v1/admin/transfers/count?{query}"), Some(&admin.token)).await;
        count.assert_status(200);
        assert_eq!(count.body["count"], all.len(), "count: {query}");
        let per_user = format!("user_id={}&{query}", alice.user_id);
        assert_eq!(walk(&server, &admin.token, "/v1/admin/transfers", &per_user, 3).await, want, "admin: {per_user}");
        let count = server.get(&format!("/v1/admin/transfers/count?{per_user}"), Some(&admin.token)).await;
        assert_eq!(count.body["count"], want.len(), "count: {per_user}");
        // Oldest first is the same set the other way round.
        let mut oldest = want.clone();
        oldest.reverse();
        let oldest_query =
            if query.is_empty() { "order=oldest_first".to_owned() } else { format!("{query}&order=oldest_first") };
        assert_eq!(walk(&server, &alice.token, "/v1/transfers", &oldest_query, 2).await, oldest, "{oldest_query}");
    }
    server.shutdown().await;
}

async fn filtered_pages_repeat_and_skip_nothing_while_transfers_arrive(server: TestServer) {
    let alice = server.user().await;
    let admin = server.admin(&["transfers:read"]).await;
    let from = server.open_account(&alice, "USD").await;
    let to = server.open_account(&alice, "USD").await;
    server.fund(&from, dec!(1000)).await;
    for i in 0..9 {
        let tag = if i % 3 == 0 { "other" } else { "mine" };
        let body = internal(&from, &to, &format!("{}", i + 1), json!({"tag": tag}));
        server.post("/v1/transfers", Some(&alice.token), body).await.assert_status(201);
    }
    let expect = Expect { metadata: vec![("tag", "mine")], min: Some(dec!(2)), ..Default::default() };
    for (walk_number, (token, path)) in
        [(&alice.token, "/v1/transfers"), (&admin.token, "/v1/admin/transfers")].into_iter().enumerate()
    {
        // What matches when the walk starts (the first walk's inserts are there for the second).
        durable(&server).await;
        let want = expected(&table(&server).await, &expect, None);
        assert_eq!(want.len(), 6 + 3 * walk_number);
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{path}?limit=2&metadata.tag=mine&min_amount=2");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page = server.get(&url, Some(token)).await;
            page.assert_status(200);
            seen.extend(
                page.body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()),
            );
            // Matching and other transfers arrive between pages: newer than the cursor, so a
            // newest-first walk started before them never shows them, nor shifts.
            for tag in ["mine", "other"] {
                let body = internal(&from, &to, "5", json!({"tag": tag}));
                server.post("/v1/transfers", Some(&alice.token), body).await.assert_status(201);
            }
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no transfer repeated on {path}");
        assert_eq!(seen, want, "{path}");
    }
    server.shutdown().await;
}

async fn a_table_wide_page_stops_at_its_scan_bound_and_the_walk_is_complete(server: TestServer) {
    let alice = server.user().await;
    let from = server.open_account(&alice, "USD").await;
    let to = server.open_account(&alice, "USD").await;
    server.fund(&from, dec!(1000)).await;
    for i in 0..12 {
        let mut body =
            internal(&from, &to, &format!("{}", i + 1), json!({"odd": if i % 2 == 1 { "yes" } else { "no" }}));
        if i % 4 == 0 {
            body["reference"] = json!("rare");
        }
        server.post("/v1/transfers", Some(&alice.token), body).await.assert_status(201);
    }
    durable(&server).await;
    let rows = table(&server).await;
    let reads = &server.state.identity().reads;
    let filters = [
        (
            TransferFilter { reference: Some("rare".into()), ..Default::default() },
            Expect { reference: Some("rare"), ..Default::default() },
        ),
        (
            TransferFilter { kind: Some("internal".into()), max_amount: Some(dec!(6)), ..Default::default() },
            Expect { kind: Some("internal"), max: Some(dec!(6)), ..Default::default() },
        ),
        (
            TransferFilter { metadata: vec![("odd".into(), "yes".into())], ..Default::default() },
            Expect { metadata: vec![("odd", "yes")], ..Default::default() },
        ),
    ];
    for (filter, expect) in filters {
        for order in [Order::NewestFirst, Order::OldestFirst] {
            let filter = TransferFilter { scan_rows_max: Some(3), order, ..filter.clone() };
            let mut want = expected(&rows, &expect, None);
            if order == Order::OldestFirst {
                want.reverse();
            }
            let (mut seen, mut after, mut short_pages) = (Vec::new(), None, 0);
            for _ in 0..100 {
                let page = reads.transfer_page(&filter, after, 2).await.unwrap();
                // The bound applies wherever no index serves the filter (Postgres serves
                // metadata by its GIN index, so that page reads to its limit).
                assert!(page.rows.len() <= 2);
                if page.rows.len() < 2 && page.scanned_to.is_some() {
                    short_pages += 1;
                }
                seen.extend(page.rows.iter().map(|(id, _)| id.to_string()));
                after = match (page.rows.len() == 2, page.scanned_to) {
                    (true, _) => page.rows.last().map(|(_, position)| *position),
                    (false, Some(scanned)) => Some(scanned),
                    (false, None) => break,
                };
            }
            assert_eq!(seen, want, "{filter:?}");
            let served_by_index = server.backend == Backend::Postgres && !filter.metadata.is_empty();
            assert_eq!(short_pages > 0, !served_by_index, "{filter:?}");
        }
    }
    server.shutdown().await;
}

async fn bad_filters_are_refused_and_the_listings_need_their_caller(server: TestServer) {
    let alice = server.user().await;
    let admin = server.admin(&["transfers:read"]).await;
    let bad: Vec<(&str, Option<&str>)> = vec![
        ("status=done", Some("status")),
        ("type=wire", Some("type")),
        ("account_id=not-a-uuid", Some("account_id")),
        ("reference=", Some("reference")),
        ("min_amount=abc", Some("min_amount")),
        ("min_amount=-1", Some("min_amount")),
        ("min_amount=1e5", Some("min_amount")),
        ("min_amount=1.", Some("min_amount")),
        ("max_amount=%201", Some("max_amount")),
        ("min_amount=5&max_amount=4.99", Some("max_amount")),
        ("from=yesterday", Some("from")),
        ("to=2026-13-01", Some("to")),
        ("from=2026-02-02&to=2026-02-01", Some("to")),
        ("status=pending&status=failed", Some("status")),
        ("metadata.=x", Some("metadata")),
        ("metadata.a%20b=x", Some("metadata")),
        ("metadata.k=", Some("metadata.k")),
        ("metadata.k=a%0Ab", Some("metadata.k")),
        ("metadata.k=1&metadata.k=2", Some("metadata.k")),
        ("colour=red", None),
        ("metadata=x", None),
    ];
    for (query, field) in &bad {
        for (token, path) in [(&alice.token, "/v1/transfers"), (&admin.token, "/v1/admin/transfers")] {
            let reply = server.get(&format!("{path}?{query}"), Some(token)).await;
            reply.assert_problem(400, "VALIDATION_ERROR");
            if let Some(field) = field {
                assert_eq!(reply.error_fields(), vec![field.to_string()], "{path}?{query}");
            }
        }
        let count = server.get(&format!("/v1/admin/transfers/count?{query}"), Some(&admin.token)).await;
        count.assert_problem(400, "VALIDATION_ERROR");
    }
    let seventeen: Vec<String> = (0..17).map(|i| format!("metadata.k{i}=v")).collect();
    let reply = server.get(&format!("/v1/transfers?{}", seventeen.join("&")), Some(&alice.token)).await;
    reply.assert_problem(400, "VALIDATION_ERROR");
    // `user_id` is the admin's; `order`, `cursor` and `limit` are not the count's.
    let user = format!("/v1/transfers?user_id={}", alice.user_id);
    server.get(&user, Some(&alice.token)).await.assert_problem(400, "VALIDATION_ERROR");
    server.get("/v1/admin/transfers?user_id=nope", Some(&admin.token)).await.assert_problem(400, "VALIDATION_ERROR");
    for query in ["order=oldest_first", "limit=2", "cursor=x"] {
        let reply = server.get(&format!("/v1/admin/transfers/count?{query}"), Some(&admin.token)).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
    }
    // Who may ask.
    server.get("/v1/transfers?metadata.k=v", None).await.assert_problem(401, "UNAUTHENTICATED");
    server.get("/v1/admin/transfers?metadata.k=v", None).await.assert_problem(401, "UNAUTHENTICATED");
    server.get("/v1/admin/transfers?type=internal", Some(&alice.token)).await.assert_problem(403, "FORBIDDEN");
    server.get("/v1/admin/transfers/count?type=internal", Some(&alice.token)).await.assert_problem(403, "FORBIDDEN");
    server.shutdown().await;
}

/// The plan of one built query, as text lines: Postgres `EXPLAIN` with sequential scans
/// disabled (on these near-empty tables the planner would scan them anyway; disabled only
/// raises their cost, so a query no index can serve still shows one), or SQLite's
/// `EXPLAIN QUERY PLAN`.
async fn plan_of(server: &TestServer, query: &transfer_query::Query) -> String {
    match server.backend {
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
            sqlx::query("SET enable_seqscan = off").execute(&mut db).await.unwrap();
            let sql = format!("EXPLAIN {}", query.sql);
            let mut explain = sqlx::query_as::<_, (String,)>(&sql);
            for arg in query.args.clone() {
                explain = match arg {
                    Arg::Text(text) => explain.bind(text),
                    Arg::Int(value) => explain.bind(value),
                    Arg::Id(id) => explain.bind(id),
                    Arg::Amount(amount) => explain.bind(amount),
                };
            }
            explain.fetch_all(&mut db).await.unwrap().into_iter().map(|(line,)| line).collect::<Vec<_>>().join("\n")
        }
        Backend::Sqlite => {
            let mut db = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
            let sql = format!("EXPLAIN QUERY PLAN {}", query.sql);
            let mut explain = sqlx::query_as::<_, (i64, i64, i64, String)>(&sql);
            for arg in query.args.clone() {
                explain = match arg {
                    Arg::Text(text) => explain.bind(text),
                    Arg::Int(value) => explain.bind(value),
                    Arg::Id(id) => explain.bind(id.to_string()),
                    Arg::Amount(amount) => explain.bind(transfer_query::amount_key(amount)),
                };
            }
            explain.fetch_all(&mut db).await.unwrap().into_iter().map(|row| row.3).collect::<Vec<_>>().join("\n")
        }
    }
}

async fn every_page_query_reads_an_index_range_never_the_whole_table(server: TestServer) {
    let alice = server.user().await;
    let from = server.open_account(&alice, "USD").await;
    let to = server.open_account(&alice, "USD").await;
    server.fund(&from, dec!(100)).await;
    server
        .post("/v1/transfers", Some(&alice.token), internal(&from, &to, "1", json!({"k": "v"})))
        .await
        .assert_status(201);
    durable(&server).await;
    let dialect = match server.backend {
        Backend::Postgres => Dialect::Postgres,
        Backend::Sqlite => Dialect::Sqlite,
    };
    let party = Some(tally_engine::UserId::from_uuid(uuid::Uuid::parse_str(&alice.user_id).unwrap()));
    let account = Some(tally_tests::http::account_id(&from));
    let everything = TransferFilter {
        status: Some("completed".into()),
        kind: Some("internal".into()),
        reference: Some("r".into()),
        min_amount: Some(dec!(1)),
        max_amount: Some(dec!(9)),
        from: Some(1),
        to: Some(i64::MAX / 2),
        metadata: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    let filters = [
        ("customer, every filter", TransferFilter { party, ..everything.clone() }),
        ("customer, one account", TransferFilter { party, account, ..everything.clone() }),
        ("admin, one account", TransferFilter { account, ..everything.clone() }),
        ("admin, metadata", TransferFilter { metadata: vec![("k".into(), "v".into())], ..Default::default() }),
        (
            "admin, pending",
            TransferFilter { status: Some("pending".into()), kind: Some("external".into()), ..Default::default() },
        ),
        ("admin, every filter", everything.clone()),
        ("admin, time window", TransferFilter { from: Some(1), to: Some(i64::MAX / 2), ..Default::default() }),
    ];
    let after = Some(Position { created_at: 0, id: uuid::Uuid::max() });
    for (name, filter) in filters {
        for order in [Order::NewestFirst, Order::OldestFirst] {
            let filter = TransferFilter { order, ..filter.clone() };
            let bound = transfer_query::scan_bound(dialect, &filter, after);
            let page =
                transfer_query::page(dialect, &filter, after, 51, Some(uuid::Uuid::nil()).filter(|_| bound.is_some()));
            for query in bound.iter().chain([&page]) {
                let plan = plan_of(&server, query).await;
                match server.backend {
                    Backend::Postgres => {
                        assert!(!plan.contains("Seq Scan on transfers"), "{name} {order:?}: {}\n{plan}", query.sql)
                    }
                    Backend::Sqlite => assert!(
                        plan.lines().all(|line| !line.starts_with("SCAN transfers") || line.contains("USING")),
                        "{name} {order:?}: {}\n{plan}",
                        query.sql
                    ),
                }
            }
        }
    }
    // The GIN index serves the containment a metadata filter compiles to (its operator class
    // and its partial predicate both fit). On this near-empty table the planner reads the
    // page's primary-key range instead; on a large one the cheaper of the two wins.
    if server.backend == Backend::Postgres {
        let containment = transfer_query::Query {
            sql: "SELECT id FROM transfers WHERE metadata @> $1::jsonb".to_owned(),
            args: vec![Arg::Text(r#"{"k":"v"}"#.to_owned())],
        };
        let plan = plan_of(&server, &containment).await;
        assert!(plan.contains("transfers_by_metadata"), "{plan}");
    }
    server.shutdown().await;
}
