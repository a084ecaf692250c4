//! Quarantine and release on a real `tally serve` on Postgres, driven by the process's fault
//! switch: with `TALLY_QUARANTINE_RESTARTS=1`, the first injected panic
//! (`TALLY_FAULT_PANIC_EVERY=account=N`) quarantines the account actor it hits. The health API
//! shows it (`quarantined`, first in `worst`), new work on it is refused with `503
//! QUARANTINED`, an operator releases it, and it takes transfers again. No money is lost.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tally_tests::postgres;
use tally_tests::server::{Client, TallyServer, tally_check};

/// Every 100th account handler panics: a transfer is three handlers, so the first panic
/// comes within ~34 transfers, and after the release the next is ~33 transfers away.
const PANIC_EVERY: u32 = 100;

/// Transfers tried before giving up on seeing the quarantine.
const ATTEMPTS_MAX: u32 = PANIC_EVERY;

fn kind<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_switch_quarantines_an_account_health_shows_it_and_a_release_brings_it_back() {
    let database = postgres::fresh_database("quarantine").await;
    let panic_every = format!("account={PANIC_EVERY}");
    let mut server =
        TallyServer::start(&database, &[("TALLY_FAULT_PANIC_EVERY", &panic_every), ("TALLY_QUARANTINE_RESTARTS", "1")])
            .await;
    let admin = Client::admin(&server).await;
    let source = admin.open_account("EUR").await;
    let destination = admin.open_account("EUR").await;
    admin.fund(&source, "100.00").await;
    let body = json!({"type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": "0.01"});

    let mut refused = None;
    for attempt in 0..ATTEMPTS_MAX {
        let key = format!("q-{attempt}");
        let (status, answer) =
            admin.send(reqwest::Method::POST, "/v1/transfers", Some(body.clone()), Some(&key)).await.unwrap();
        if status != 201 {
            refused = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refused.expect("an injected panic quarantined an account within the attempts");
    assert_eq!((status, answer["code"].as_str()), (503, Some("QUARANTINED")), "{answer}");

    let (status, health) = admin.get("/v1/admin/actors").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(kind(&health, "account")["quarantined"], 1, "{health}");
    assert!(kind(&health, "account")["restarts"].as_u64().unwrap() >= 1, "{health}");
    let worst = &health["worst"][0];
    assert_eq!((worst["kind"].as_str(), worst["quarantined"].as_bool()), (Some("account"), Some(true)), "{health}");
    let quarantined = worst["id"].as_str().unwrap().to_owned();
    assert!(quarantined == source || quarantined == destination, "one of the two accounts: {health}");

    let release = format!("/v1/admin/actors/account/{quarantined}/release");
    let (status, answer) = admin.post(&release, Value::Null).await;
    assert_eq!(status, 204, "{answer}");
    let (status, health) = admin.get("/v1/admin/actors").await;
    assert_eq!((status, kind(&health, "account")["quarantined"].as_i64()), (200, Some(0)), "{health}");

    let (status, answer) =
        admin.send(reqwest::Method::POST, "/v1/transfers", Some(body.clone()), Some("after-release")).await.unwrap();
    assert_eq!(status, 201, "the released account takes transfers again: {answer}");
    assert_eq!(answer["status"], "completed");

    let total = admin.balance(&source).await.parse::<Decimal>().unwrap()
        + admin.balance(&destination).await.parse::<Decimal>().unwrap();
    assert_eq!(total, Decimal::from(100), "nothing lost or created");
    server.kill();
    let (ok, report) = tally_check(&database);
    assert!(ok, "{report}");
}
