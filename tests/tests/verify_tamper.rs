//! `tally verify` against a real server's store, for the tampering the first version let
//! through: a shard's links deleted (with or without its `journal_shards` row), ids rewritten
//! in another spelling on SQLite, a log cut back to a consistent but shorter head (caught by
//! `--audit-head`/`--ledger-head`); that it passes every time while a live server writes; and
//! that the audit listing carries every hashed field, so a hash can be recomputed from it.
//! Also the audit details of admin bodies sent chunked or over the details limit.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, Row};
use tally_tests::postgres;
use tally_tests::server::{Client, TallyServer, TempSqlite, tally_verify};

/// Runs `tally verify` with `args`; answers whether it passed and what it printed.
/// Runs `sql` (one or more statements) behind Tally's back.
async fn exec(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut connection = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
        connection.close().await.unwrap();
    } else {
        let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
        connection.close().await.unwrap();
    }
}

/// The integer columns of `sql`'s first row, read behind Tally's back.
async fn numbers(url: &str, sql: &str) -> Vec<i64> {
    if url.starts_with("sqlite:") {
        let mut connection = sqlx::SqliteConnection::connect(url).await.unwrap();
        let row = sqlx::query(sql).fetch_one(&mut connection).await.unwrap();
        (0..row.len()).map(|at| row.get::<i64, _>(at)).collect()
    } else {
        let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
        let row = sqlx::query(sql).fetch_one(&mut connection).await.unwrap();
        (0..row.len())
            .map(|at| row.try_get::<i64, _>(at).unwrap_or_else(|_| i64::from(row.get::<i16, _>(at))))
            .collect()
    }
}

/// Two accounts and a few transfers between them on a real server.
async fn transfers(admin: &Client, n: usize) {
    let a = admin.open_account("USD").await;
    let b = admin.open_account("USD").await;
    admin.fund(&a, "100.00").await;
    for _ in 0..n {
        let (status, body) = admin
            .post(
                "/v1/transfers",
                json!({"type": "internal", "source_account_id": a, "destination_account_id": b, "amount": "1.00"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

/// The reported repro: a shard's links deleted and one of its postings edited verified "chain
/// intact" (no link read as no chain), and so did the same with the shard's `journal_shards`
/// row deleted too (the walk took its shards from that table alone). Both are found now, and
/// a shard head anchored elsewhere (`--ledger-head`) must still be in the chain.
async fn deleted_links_are_found_and_shard_heads_are_checked(url: &str) {
    let ledger_head = {
        let server = TallyServer::start(url, &[]).await;
        let admin = Client::admin(&server).await;
        transfers(&admin, 5).await;
        let (status, heads) = admin.get("/v1/admin/audit/head").await;
        assert_eq!(status, 200, "{heads}");
        let newest = heads["ledger"]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .max_by_key(|shard| shard["seq"].as_u64())
            .unwrap()
            .clone();
        format!("{}:{}:{}", newest["shard"], newest["seq"], newest["hash"].as_str().unwrap())
    };
    let (ok, text) = tally_verify(url, &[]);
    assert!(ok, "an untouched ledger verifies: {text}");

    let posting = numbers(url, "SELECT shard, seq FROM postings ORDER BY seq DESC LIMIT 1").await;
    let (shard, seq) = (posting[0], posting[1]);
    let edit = format!(
        "CREATE TABLE saved_links AS SELECT * FROM journal_batches WHERE shard = {shard};
         CREATE TABLE saved_amount AS SELECT amount FROM postings WHERE shard = {shard} AND seq = {seq};
         DELETE FROM journal_batches WHERE shard = {shard};
         UPDATE postings SET amount = '999999.00' WHERE shard = {shard} AND seq = {seq};"
    );
    let restore = format!(
        "INSERT INTO journal_batches SELECT * FROM saved_links;
         UPDATE postings SET amount = (SELECT amount FROM saved_amount) WHERE shard = {shard} AND seq = {seq};
         DROP TABLE saved_links; DROP TABLE saved_amount;"
    );
    exec(url, &edit).await;
    let (ok, text) = tally_verify(url, &[]);
    assert!(!ok, "a shard without its links is found: {text}");
    assert!(text.contains(&format!("journal batch shard {shard} ")) && text.contains("no batch link covers"), "{text}");

    exec(url, &format!("CREATE TABLE saved_shard AS SELECT * FROM journal_shards WHERE shard = {shard}; DELETE FROM journal_shards WHERE shard = {shard};")).await;
    let (ok, text) = tally_verify(url, &[]);
    assert!(!ok, "a shard without its links nor its journal_shards row is found: {text}");
    assert!(text.contains("no journal_shards row"), "{text}");
    exec(url, "INSERT INTO journal_shards SELECT * FROM saved_shard; DROP TABLE saved_shard;").await;
    exec(url, &restore).await;
    let (ok, text) = tally_verify(url, &["--ledger-head", &ledger_head]);
    assert!(ok, "restored, it verifies again, holding its anchored head: {text}");

    // The newest link cut off, with the shard's committed seq moved back to match: the chain
    // is consistent, but no longer holds the head anchored elsewhere.
    exec(
        url,
        &format!(
            "CREATE TABLE saved_links AS SELECT * FROM journal_batches WHERE shard = {shard};
             CREATE TABLE saved_shard AS SELECT * FROM journal_shards WHERE shard = {shard};
             DELETE FROM postings WHERE shard = {shard} AND seq >= (SELECT max(first_seq) FROM journal_batches WHERE shard = {shard});
             DELETE FROM journal_batches WHERE shard = {shard} AND last_seq = (SELECT max(last_seq) FROM saved_links);
             UPDATE journal_shards SET committed_seq = (SELECT max(last_seq) FROM journal_batches WHERE shard = {shard}) WHERE shard = {shard};"
        ),
    )
    .await;
    // Events of the cut batch would still be found as rows past the chain: drop them too, as
    // a careful forger would (SQLite's `events`; Postgres' `event_batches`).
    let events = if url.starts_with("sqlite:") {
        format!(
            "DELETE FROM events WHERE shard = {shard} AND seq > (SELECT committed_seq FROM journal_shards WHERE shard = {shard})"
        )
    } else {
        format!(
            "DELETE FROM event_batches WHERE shard = {shard} AND last_seq > (SELECT committed_seq FROM journal_shards WHERE shard = {shard})"
        )
    };
    exec(url, &events).await;
    let (ok, text) = tally_verify(url, &[]);
    assert!(ok, "a consistently cut chain verifies on its own: {text}");
    let (ok, text) = tally_verify(url, &["--ledger-head", &ledger_head]);
    assert!(!ok, "but not against the head anchored before the cut: {text}");
    assert!(text.contains("the anchored head of shard"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_links_are_found_and_shard_heads_are_checked_on_sqlite() {
    let file = TempSqlite::new("verify-links");
    deleted_links_are_found_and_shard_heads_are_checked(&file.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_links_are_found_and_shard_heads_are_checked_on_postgres() {
    let url = postgres::fresh_database("verify_links").await;
    deleted_links_are_found_and_shard_heads_are_checked(&url).await;
}

/// A log cut back to an earlier entry with its head row moved back to match verifies on its
/// own; `--audit-head` with the head copied before the cut finds it, and a forged hash too.
async fn an_anchored_audit_head_catches_a_consistent_truncation(url: &str) {
    let head = {
        let server = TallyServer::start(url, &[]).await;
        let admin = Client::admin(&server).await;
        for n in 0..3 {
            let (status, body) =
                admin.post("/v1/admin/roles", json!({"name": format!("role {n}"), "actions": ["users:read"]})).await;
            assert_eq!(status, 201, "{body}");
        }
        let (status, heads) = admin.get("/v1/admin/audit/head").await;
        assert_eq!(status, 200, "{heads}");
        (heads["audit"]["seq"].as_u64().unwrap(), heads["audit"]["hash"].as_str().unwrap().to_owned())
    };
    let anchor = format!("{}:{}", head.0, head.1);
    let (ok, text) = tally_verify(url, &["--audit-head", &anchor]);
    assert!(ok, "{text}");
    let forged = format!("{}:{}", head.0, "ab".repeat(32));
    let (ok, text) = tally_verify(url, &["--audit-head", &forged]);
    assert!(!ok, "a head the log does not hold is refused: {text}");
    assert!(text.contains("the anchored head names seq"), "{text}");

    let keep = head.0 - 2;
    exec(
        url,
        &format!(
            "DELETE FROM audit_log WHERE seq > {keep};
             UPDATE audit_head SET seq = {keep}, hash = (SELECT hash FROM audit_log WHERE seq = {keep});"
        ),
    )
    .await;
    let (ok, text) = tally_verify(url, &[]);
    assert!(ok, "the cut log is consistent on its own: {text}");
    let (ok, text) = tally_verify(url, &["--audit-head", &anchor]);
    assert!(!ok, "the anchored head finds the cut: {text}");
    assert!(text.contains(&format!("the log ends at seq {keep}")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchored_audit_head_catches_a_consistent_truncation_on_sqlite() {
    let file = TempSqlite::new("verify-audit-head");
    an_anchored_audit_head_catches_a_consistent_truncation(&file.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchored_audit_head_catches_a_consistent_truncation_on_postgres() {
    let url = postgres::fresh_database("verify_audit_head").await;
    an_anchored_audit_head_catches_a_consistent_truncation(&url).await;
}

/// SQLite keeps ids as text; the chains hash their lowercase form. Upper-cased ids hashed the
/// same and passed, while they hid a user's entries from their activity listing (a text
/// comparison). Verification now refuses them, for the audit log and the ledger's postings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_stored_in_another_spelling_are_refused_on_sqlite() {
    let file = TempSqlite::new("verify-spelling");
    let url = file.url();
    {
        let server = TallyServer::start(&url, &[]).await;
        let admin = Client::admin(&server).await;
        transfers(&admin, 2).await;
    }
    let (ok, text) = tally_verify(&url, &[]);
    assert!(ok, "{text}");

    exec(&url, "UPDATE audit_log SET subject_user_id = upper(subject_user_id), id = upper(id)").await;
    let (ok, text) = tally_verify(&url, &[]);
    assert!(!ok, "upper-case audit ids are refused: {text}");
    assert!(text.contains("is stored as") && text.contains("audit entry seq"), "{text}");
    exec(&url, "UPDATE audit_log SET subject_user_id = lower(subject_user_id), id = lower(id)").await;
    let (ok, text) = tally_verify(&url, &[]);
    assert!(ok, "{text}");

    exec(&url, "UPDATE postings SET account_id = upper(account_id)").await;
    let (ok, text) = tally_verify(&url, &[]);
    assert!(!ok, "an upper-case posting account is refused: {text}");
    assert!(text.contains("the account_id of posting seq"), "{text}");
}

/// Under load a verification read the audit head, then walked entries appended after it, and
/// read a shard's committed seq, then links and postings committed after it: it reported
/// tampering that was not there (5 runs of 6). Now every run passes while a real server takes
/// transfers and admin changes. Bounded: six runs, and the writers stop when they end.
async fn verify_passes_every_time_on_a_live_store(url: &str) {
    let server = TallyServer::start(url, &[]).await;
    let admin = Client::admin(&server).await;
    let a = admin.open_account("USD").await;
    let b = admin.open_account("USD").await;
    admin.fund(&a, "1000000.00").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..3 {
        let (admin, a, b, stop) = (admin.clone(), a.clone(), b.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0_u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let (status, body) = if writer == 0 {
                    admin.post("/v1/admin/roles", json!({"name": format!("live {n}"), "actions": ["users:read"]})).await
                } else {
                    admin
                        .post(
                            "/v1/transfers",
                            json!({"type": "internal", "source_account_id": a, "destination_account_id": b, "amount": "0.01"}),
                        )
                        .await
                };
                assert_eq!(status, 201, "{body}");
            }
            n
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for run in 0..6 {
        let url = url.to_owned();
        let (ok, text) = tokio::task::spawn_blocking(move || tally_verify(&url, &[])).await.unwrap();
        assert!(ok, "run {run} under load: {text}");
        assert!(Instant::now() < deadline, "six runs take less than two minutes");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        assert!(writer.await.unwrap() > 0, "each writer wrote while verify ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_every_time_on_a_live_store_on_sqlite() {
    let file = TempSqlite::new("verify-live");
    verify_passes_every_time_on_a_live_store(&file.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_every_time_on_a_live_store_on_postgres() {
    let url = postgres::fresh_database("verify_live").await;
    verify_passes_every_time_on_a_live_store(&url).await;
}

/// One field of the documented canonical form (docs/audit.md "The chain").
fn field(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => out.extend_from_slice(format!("{}:{value},", value.len()).as_bytes()),
        None => out.extend_from_slice(b"-,"),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// docs/audit.md's recipe, from an entry of `GET /v1/admin/audit` alone.
fn recomputed_hash(entry: &Value) -> String {
    use time::format_description::well_known::Rfc3339;
    let at = time::OffsetDateTime::parse(entry["at"].as_str().unwrap(), &Rfc3339).unwrap();
    let at_micros = (at.unix_timestamp_nanos() / 1_000).to_string();
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let mut canonical = Vec::new();
    field(&mut canonical, Some("tally-audit-v1"));
    field(&mut canonical, Some(&entry["seq"].as_u64().unwrap().to_string()));
    field(&mut canonical, text(&entry["id"]).as_deref());
    field(&mut canonical, Some(&at_micros));
    field(&mut canonical, text(&entry["actor"]["kind"]).as_deref());
    field(&mut canonical, text(&entry["actor"]["id"]).as_deref());
    field(&mut canonical, text(&entry["action"]).as_deref());
    field(&mut canonical, text(&entry["target"]["type"]).as_deref());
    field(&mut canonical, text(&entry["target"]["id"]).as_deref());
    field(&mut canonical, text(&entry["subject_user_id"]).as_deref());
    field(&mut canonical, text(&entry["request_id"]).as_deref());
    field(&mut canonical, text(&entry["ip"]).as_deref());
    field(&mut canonical, text(&entry["user_agent"]).as_deref());
    field(&mut canonical, Some(&serde_json::to_string(&entry["details"]).unwrap()));
    let prev = entry["prev_hash"].as_str().unwrap();
    let mut input: Vec<u8> =
        (0..prev.len()).step_by(2).map(|at| u8::from_str_radix(&prev[at..at + 2], 16).unwrap()).collect();
    input.extend_from_slice(&canonical);
    sha256_hex(&input)
}

/// An admin body sent chunked (no exact size) was recorded as `request: null`, and so was
/// one over the 64 KiB details limit, though both changes went through. Now the first is
/// recorded as sent, the second as its size and SHA-256. And every entry's hash, those with a
/// subject user included, is recomputed from the listing's fields by the documented recipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_large_admin_bodies_are_recorded_and_listed_entries_rehash() {
    let file = TempSqlite::new("verify-bodies");
    let server = TallyServer::start(&file.url(), &[]).await;
    let admin = Client::admin(&server).await;
    let rate = br#"{"from": "USD", "to": "GBP", "rate": "0.8"}"#.to_vec();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = rate.chunks(7).map(|chunk| Ok(chunk.to_vec())).collect();
    let response = admin
        .http
        .put(format!("{}/v1/admin/fx-rates", admin.base))
        .bearer_auth(&admin.token)
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());

    let mut padded = br#"{"enabled": true, "execution_mode": "auto"}"#.to_vec();
    padded.extend(std::iter::repeat_n(b' ', 70_000));
    let sha256 = sha256_hex(&padded);
    let response = admin
        .http
        .put(format!("{}/v1/admin/transfer-types/internal", admin.base))
        .bearer_auth(&admin.token)
        .header("Content-Type", "application/json")
        .body(padded.clone())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());

    let (status, page) = admin.get("/v1/admin/audit?limit=200").await;
    assert_eq!(status, 200, "{page}");
    let entries = page["items"].as_array().unwrap();
    let of =
        |action: &str| entries.iter().find(|entry| entry["action"] == action).unwrap_or_else(|| panic!("{action}"));
    assert_eq!(of("fx_rate.set")["details"]["request"], json!({"from": "USD", "to": "GBP", "rate": "0.8"}));
    assert_eq!(
        of("transfer_type.update")["details"]["request"],
        json!({"bytes": padded.len(), "sha256": sha256}),
        "a body over the limit is its size and hash"
    );

    let with_subject: Vec<&Value> = entries.iter().filter(|entry| entry["subject_user_id"].is_string()).collect();
    assert!(!with_subject.is_empty(), "the admin's login has the admin as subject: {page}");
    for entry in entries {
        assert_eq!(recomputed_hash(entry), entry["hash"].as_str().unwrap(), "{entry}");
    }
}
