//! The Grafana dashboard in the repository (`ops/grafana/tally.json`) stays true to the
//! exporter: it parses, it is importable with a Prometheus data-source variable, and every
//! metric its queries name is one that a real `/metrics` answer exports.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tally_tests::http::{Backend, TestServer};

const DASHBOARD: &str = include_str!("../../ops/grafana/tally.json");

/// The metric names in a Prometheus text exposition; a histogram `h` also exports `h_bucket`,
/// `h_sum` and `h_count`, which are what queries name.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            names.insert(name.to_owned());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap();
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// Every identifier starting with `tally_` in a query.
fn metric_names(expression: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = expression;
    while let Some(start) = rest.find("tally_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        found.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    found
}

/// Every PromQL expression in the dashboard: panel targets and template-variable queries.
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            all.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(definition) = variable["definition"].as_str() {
            all.push(definition.to_owned());
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_only_metrics_that_metrics_exports() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let server = TestServer::start(Backend::Sqlite).await;
    // One transfer, so the request and journal histograms have samples and are exported.
    let user = server.user().await;
    let source = server.open_account(&user, "EUR").await;
    let destination = server.open_account(&user, "EUR").await;
    server.fund(&source, dec!(10)).await;
    let body = json!({"type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": "1.00"});
    server.post("/v1/transfers", Some(&user.token), body).await.assert_status(201);
    let scrape = server.get("/metrics", None).await;
    scrape.assert_status(200);
    let exported = exported_names(&scrape.text);
    assert!(exported.contains("tally_http_request_duration_seconds_bucket"), "{exported:?}");

    let expressions = expressions(&dashboard);
    assert!(expressions.len() >= 12, "a panel per figure of the /ops page");
    let mut named = BTreeSet::new();
    for expression in &expressions {
        let names = metric_names(expression);
        assert!(!names.is_empty(), "a query over no Tally metric: {expression}");
        for name in names {
            assert!(exported.contains(&name), "{name} (in {expression}) is not exported by /metrics");
            named.insert(name);
        }
    }
    for essential in [
        "tally_sagas_total",
        "tally_http_request_duration_seconds_bucket",
        "tally_actors_active",
        "tally_actor_mailbox_depth",
        "tally_actor_restarts_total",
        "tally_journal_depth",
        "tally_journal_flush_seconds_bucket",
        "tally_sagas_in_flight",
    ] {
        assert!(named.contains(essential), "the dashboard shows {essential}");
    }
    server.shutdown().await;
}

#[test]
fn the_dashboard_is_importable_with_a_prometheus_data_source_variable() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    assert!(dashboard["title"].as_str().is_some_and(|title| !title.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|uid| !uid.is_empty()));
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let source = variables.iter().find(|v| v["type"] == "datasource").expect("a data-source variable");
    assert_eq!(source["query"], "prometheus");
    let name = source["name"].as_str().unwrap();
    let reference = format!("${{{name}}}");
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel ids are unique");
        assert_eq!(panel["datasource"]["uid"], reference.as_str(), "{} uses the variable", panel["title"]);
        assert!(panel["gridPos"]["w"].as_u64().is_some_and(|w| w > 0 && w <= 24));
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has a query", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], reference.as_str());
        }
    }
}
