//! Actor panics injected under load into a real `tally serve` (every 25th account handler and

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! every 40th saga step panic): restarts are counted in the health API, and nothing is lost
//! or applied twice.

use std::collections::HashMap;

use rust_decimal::Decimal;
use tally_engine::{Direction, TransferId};
use tally_persistence::Store;
use tally_tests::postgres;
use tally_tests::server::{Client, TallyServer, tally_check};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_panics_under_load_are_restarted_counted_and_lose_nothing() {
    let database = postgres::fresh_database("panics").await;
    let mut server = TallyServer::start(&database, &[]).await;
    let admin = Client::admin(&server).await;
    let mut accounts = Vec::new();
    for _ in 0..6 {
        let account = admin.open_account("EUR").await;
        admin.fund(&account, "500.00").await;
        accounts.push(account);
    }
    server.kill();
    // Restart with the fault switch on: panics spread through everything that follows.
    drop(server);
    let mut server = {
        TallyServer::start(
            &database,
            &[("TALLY_FAULT_PANIC_EVERY", "account=25,transfer_saga=40"), ("TALLY_QUARANTINE_RESTARTS", "1000000")],
        )
        .await
    };
    let admin = Client { base: server.base_url(), ..Client::admin(&server).await };

    let mut acknowledged = Vec::new();
    let results = futures::future::join_all(requests_vec(&admin, &accounts)).await;
    for (status, body) in &results {
        assert!(matches!(*status, 201 | 503), "only completions and clean refusals: {status} {body}");
        if *status == 201 {
            acknowledged.push(body["id"].as_str().expect("id").to_owned());
        }
    }
    assert!(acknowledged.len() > 500, "most transfers complete despite the panics: {}", acknowledged.len());

    let (status, health) = admin.get("/v1/admin/actors").await;
    assert_eq!(status, 200, "{health}");
    let restarts = |kind: &str| {
        health["kinds"].as_array().expect("kinds").iter().find(|k| k["kind"] == kind).expect("kind")["restarts"]
            .as_u64()
            .expect("restarts")
    };
    assert!(restarts("account") >= 20, "account restarts counted: {health}");
    assert!(restarts("transfer_saga") >= 10, "saga restarts counted: {health}");

    let mut total = Decimal::ZERO;
    for account in &accounts {
        total += admin.balance(account).await.parse::<Decimal>().expect("decimal");
    }
    assert_eq!(total, Decimal::from(3_000), "nothing lost or created");
    server.kill();
    let store = tally_persistence::postgres::PgStore::connect(&database).await.expect("connect");
    for id in &acknowledged {
        let postings =
            store.postings_of_transfer(TransferId::from_uuid(id.parse().expect("uuid"))).await.expect("postings");
        let mut directions: HashMap<Direction, usize> = HashMap::new();
        for posting in &postings {
            *directions.entry(posting.direction).or_default() += 1;
        }
        assert_eq!(
            (directions.get(&Direction::Debit), directions.get(&Direction::Credit)),
            (Some(&1), Some(&1)),
            "{id} applied once"
        );
    }
    let (ok, report) = tally_check(&database);
    assert!(ok, "{report}");
}

fn requests_vec(
    admin: &Client,
    accounts: &[String],
) -> Vec<impl std::future::Future<Output = (u16, serde_json::Value)> + use<>> {
    (0..600)
        .map(|i| {
            let admin = admin.clone();
            let body = serde_json::json!({
                "type": "internal", "source_account_id": accounts[i % 6],
                "destination_account_id": accounts[(i + 1) % 6], "amount": "0.10"
            });
            async move {
                admin
                    .send(reqwest::Method::POST, "/v1/transfers", Some(body), Some(&format!("panic-{i}")))
                    .await
                    .expect("request")
            }
        })
        .collect()
}
