//! `/metrics` on a real `tally serve` on Postgres: every name API.md lists is exported, the
//! counters and histograms move under a burst of transfers by exactly what was sent, and no
//! label carries an id.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use serde_json::json;
use tally_tests::postgres;
use tally_tests::server::{Client, TallyServer};

/// Every sample of a Prometheus text exposition, keyed by the full series
/// (`name{label="value",...}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {line}")))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

async fn scrape(base: &str) -> (String, HashMap<String, f64>) {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let parsed = samples(&text);
    (text, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_and_move_by_what_a_burst_of_transfers_did() {
    let database = postgres::fresh_database("metrics").await;
    let server = TallyServer::start(&database, &[]).await;
    let base = server.base_url();
    let admin = Client::admin(&server).await;
    let source = admin.open_account("EUR").await;
    let destination = admin.open_account("EUR").await;
    admin.fund(&source, "1000.00").await;

    let (_, before) = scrape(&base).await;
    const TRANSFERS: usize = 40;
    let sends = (0..TRANSFERS).map(|_| {
        admin.post(
            "/v1/transfers",
            json!({"type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": "1.00"}),
        )
    });
    for (status, body) in futures::future::join_all(sends).await {
        assert_eq!(status, 201, "{body}");
    }
    let (text, after) = scrape(&base).await;

    for name in [
        "tally_actors_active",
        "tally_actor_restarts_total",
        "tally_actor_mailbox_depth",
        "tally_sagas_in_flight",
        "tally_sagas_total",
        "tally_pending_expiries_scheduled",
        "tally_journal_depth",
        "tally_journal_flush_seconds_bucket",
        "tally_journal_batch_size_bucket",
        "tally_http_requests_total",
        "tally_http_request_duration_seconds_bucket",
        "tally_actor_activations_total",
        "tally_actor_passivations_total",
        "tally_journal_flush_errors_total",
        "tally_journal_dependency_waits_total",
        "tally_journal_durable_lag_seconds",
        "tally_runtime_inbox_wakeups_total",
        "tally_runtime_inbox_jobs_total",
    ] {
        assert!(after.keys().any(|series| series.starts_with(name)), "{name} missing from /metrics:\n{text}");
    }

    let created = r#"tally_http_requests_total{route="/v1/transfers",status="201"}"#;
    assert_eq!(value(&after, created) - value(&before, created), TRANSFERS as f64, "{text}");
    let latency = r#"tally_http_request_duration_seconds_count{route="/v1/transfers"}"#;
    assert_eq!(value(&after, latency) - value(&before, latency), TRANSFERS as f64);
    let completed = r#"tally_sagas_total{outcome="completed"}"#;
    assert!(value(&after, completed) - value(&before, completed) >= TRANSFERS as f64, "{text}");
    // Each acknowledged transfer was committed by some group commit.
    assert!(value(&after, "tally_journal_flush_seconds_count") > value(&before, "tally_journal_flush_seconds_count"));
    assert!(
        value(&after, "tally_journal_batch_size_sum") - value(&before, "tally_journal_batch_size_sum")
            >= TRANSFERS as f64
    );
    assert!(value(&after, r#"tally_actors_active{kind="account"}"#) >= 2.0, "{text}");
    assert_eq!(value(&after, "tally_sagas_in_flight"), 0.0, "every saga has ended");
    // Handler time is counted in microseconds: 40 transfers' hold, credit and post steps take
    // well over a microsecond in all, and far less than the run took.
    let handler = r#"tally_actor_handler_microseconds_total{kind="account"}"#;
    let spent = value(&after, handler) - value(&before, handler);
    assert!((1.0..60_000_000.0).contains(&spent), "account handler time {spent} µs:\n{text}");

    // Histograms have real buckets, ending in +Inf.
    assert!(
        after.contains_key(r#"tally_http_request_duration_seconds_bucket{route="/v1/transfers",le="0.01"}"#),
        "{text}"
    );
    assert!(after.contains_key(r#"tally_http_request_duration_seconds_bucket{route="/v1/transfers",le="+Inf"}"#));

    // No label value is an id: routes are templates, and nothing is labelled by account.
    for series in after.keys() {
        assert!(!series.contains(&source) && !series.contains(&destination), "an id in a label: {series}");
        let hex_run = series.split(|c: char| !c.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0);
        assert!(hex_run < 12, "something id-like in a label: {series}");
    }
    let by_id = r#"tally_http_requests_total{route="/v1/accounts/{id}",status="200"}"#;
    let _ = admin.get(&format!("/v1/accounts/{source}")).await;
    let (_, later) = scrape(&base).await;
    assert_eq!(value(&later, by_id) - value(&after, by_id), 1.0, "the template, not the id, is the label");
}

/// Every operation the OpenAPI document lists is counted in `tally_http_requests_total` under
/// its route template: the metrics live in a route layer, and a route added after that layer
/// would be served but never counted (four identity routes were, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_the_openapi_document_is_counted() {
    let database = postgres::fresh_database("metrics_routes").await;
    let server = TallyServer::start(&database, &[]).await;
    let base = server.base_url();
    let document: serde_json::Value = reqwest::get(format!("{base}/openapi.json")).await.unwrap().json().await.unwrap();
    let client = reqwest::Client::new();
    let mut operations = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        // A value that fits each parameter's route: an id where ids go, a word elsewhere.
        let path = template
            .split('/')
            .map(|part| match part {
                "{kind}" => "account",
                "{level}" | "{code}" => "basic",
                part if part.starts_with('{') => "00000000-0000-0000-0000-000000000000",
                part => part,
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys().filter(|key| key.as_str() != "parameters") {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Unauthenticated and with an empty object: each answers at once (mostly 401 or
            // 400), which is all a count needs.
            let response = client
                .request(method.clone(), format!("{base}{path}"))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert!(response.status().as_u16() < 500, "{method} {path}: {}", response.status());
            operations.push((method, template.clone()));
        }
    }
    assert!(operations.len() > 100, "the document lists every operation: {}", operations.len());
    let (text, _) = scrape(&base).await;
    let uncounted: Vec<_> = operations
        .iter()
        .filter(|(_, template)| !text.contains(&format!("tally_http_requests_total{{route=\"{template}\"")))
        .map(|(method, template)| format!("{method} {template}"))
        .collect();
    assert!(uncounted.is_empty(), "served but not counted: {uncounted:?}");
}

/// Requests no route serves are answered by the router's fallbacks, outside the route layer that
/// counts requests: a scan of unknown paths or a client calling a route with the wrong method
/// showed nowhere in `/metrics` or on `/ops` (found by a review). A `404` is counted under the
/// route `unmatched`, a `405` under the route template whose method was wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_are_counted() {
    let database = postgres::fresh_database("metrics_fallbacks").await;
    let server = TallyServer::start(&database, &[]).await;
    let base = server.base_url();
    let (_, before) = scrape(&base).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let answer = client.get(format!("{base}/v1/no-such-route")).send().await.unwrap();
        assert_eq!(answer.status(), 404);
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
    }
    for _ in 0..2 {
        let answer = client.delete(format!("{base}/v1/transfers")).send().await.unwrap();
        assert_eq!(answer.status(), 405);
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
    }
    let (_, after) = scrape(&base).await;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(moved("tally_http_requests_total{route=\"unmatched\",status=\"404\"}"), 3.0);
    assert_eq!(moved("tally_http_requests_total{route=\"/v1/transfers\",status=\"405\"}"), 2.0);
    assert_eq!(moved("tally_http_request_duration_seconds_count{route=\"unmatched\"}"), 3.0);
}
