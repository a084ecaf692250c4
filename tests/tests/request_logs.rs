//! One structured log line per request, against a real `tally serve`: with `TALLY_LOG=info,json`
//! every line is a JSON object, and a request's line carries the same request id as its
//! problem+json answer and its `X-Request-Id` header.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use tally_tests::postgres;
use tally_tests::server::TallyServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_logs_one_json_line_with_the_request_id_of_its_answer() {
    let database = postgres::fresh_database("logs").await;
    let server = TallyServer::start(&database, &[("TALLY_LOG", "info,json")]).await;
    let http = reqwest::Client::new();

    // The client's id is kept; a problem answer repeats it.
    let answer = http
        .get(format!("{}/v1/accounts", server.base_url()))
        .header("x-request-id", "client-chosen-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(answer.headers()["x-request-id"], "client-chosen-7f3a");
    let problem: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(problem["request_id"], "client-chosen-7f3a");

    // Without one, the server makes one, and the answer says which.
    let answer = http.get(format!("{}/v1/nowhere", server.base_url())).send().await.unwrap();
    assert_eq!(answer.status(), 404);
    let generated = answer.headers()["x-request-id"].to_str().unwrap().to_owned();
    let problem: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(problem["request_id"], generated.as_str());

    let line_of = |id: &str| -> Option<serde_json::Value> {
        server
            .log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["fields"]["request_id"] == id)
    };
    let started = Instant::now();
    while (line_of("client-chosen-7f3a").is_none() || line_of(&generated).is_none())
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = line_of("client-chosen-7f3a").unwrap_or_else(|| panic!("no log line:\n{}", server.log_text()));
    assert_eq!(first["fields"]["status"], 401);
    assert_eq!(first["fields"]["path"], "/v1/accounts");
    assert_eq!(first["fields"]["method"], "GET");
    assert!(first["fields"]["micros"].is_u64());
    assert_eq!(first["level"], "INFO");
    let second = line_of(&generated).unwrap();
    assert_eq!(second["fields"]["status"], 404);
    let requests = server
        .log_text()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["request_id"] == "client-chosen-7f3a")
        .count();
    assert_eq!(requests, 1, "one line per request");
    for line in server.log_text().lines().filter(|line| !line.trim().is_empty()) {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not JSON: {line}");
    }
}
