//! Crash: under concurrent transfer load over HTTP, `kill -9` a real `tally serve` on

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Postgres at random moments (six times), restart it each time, then prove that every
//! acknowledged transfer is present exactly once, that retrying its Idempotency-Key returns
//! it rather than a second transfer, that nothing unacknowledged is half-applied, that money
//! is conserved, and that no transfer is stuck non-terminal (`tally check` passes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use tally_tests::postgres;
use tally_tests::server::{Client, TallyServer, assert_each_posted_once, tally_check};

const ACCOUNTS: usize = 8;
const WORKERS: usize = 16;
const KILLS: usize = 6;

#[derive(Clone, Debug)]
struct Sent {
    key: String,
    body: serde_json::Value,
    /// The transfer id of a `201`, if the client heard one.
    acknowledged: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged_and_leaves_nothing_half_done() {
    let seed: u64 = std::env::var("TALLY_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let database = postgres::fresh_database("crash").await;
    let mut server = TallyServer::start(&database, &[]).await;
    let admin = Client::admin(&server).await;
    let mut accounts = Vec::new();
    for _ in 0..ACCOUNTS {
        let account = admin.open_account("USD").await;
        admin.fund(&account, "10000.00").await;
        accounts.push(account);
    }
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(Vec::new()));

    for round in 0..KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let client = Client { base: server.base_url(), ..admin.clone() };
                let (accounts, sent, stop) = (accounts.clone(), sent.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let source = &accounts[(worker + i) % ACCOUNTS];
                        let destination = &accounts[(worker + 3 * i + 1) % ACCOUNTS];
                        if source == destination {
                            continue;
                        }
                        let key = format!("crash-{round}-{worker}-{i}");
                        let body = serde_json::json!({
                            "type": "internal", "source_account_id": source,
                            "destination_account_id": destination, "amount": "0.01"
                        });
                        let result =
                            client.send(reqwest::Method::POST, "/v1/transfers", Some(body.clone()), Some(&key)).await;
                        let acknowledged = match &result {
                            Ok((201, transfer)) => Some(transfer["id"].as_str().expect("id").to_owned()),
                            _ => None,
                        };
                        let failed = result.is_err();
                        sent.lock().expect("lock").push(Sent { key, body, acknowledged });
                        if failed {
                            // The server is down (killed): stop this round.
                            break;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..900))).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.expect("worker");
        }
        server.restart().await;
    }
    let sent = sent.lock().expect("lock").clone();
    let acknowledged: Vec<&Sent> = sent.iter().filter(|s| s.acknowledged.is_some()).collect();
    let unacknowledged = sent.len() - acknowledged.len();
    eprintln!("seed {seed}: {} sent, {} acknowledged, {unacknowledged} not", sent.len(), acknowledged.len());
    assert!(acknowledged.len() > 100, "the load ran: {} acknowledged", acknowledged.len());
    assert!(unacknowledged >= KILLS, "each kill cut requests short");

    // Every acknowledged transfer is there, completed, and its key replays to it.
    let admin = Client { base: server.base_url(), ..admin };
    for sent in &acknowledged {
        let id = sent.acknowledged.as_deref().expect("acknowledged");
        let (status, transfer) = admin.get(&format!("/v1/transfers/{id}")).await;
        assert_eq!((status, transfer["status"].as_str()), (200, Some("completed")), "seed {seed}: acked {id}");
        let (status, replay) = admin
            .send(reqwest::Method::POST, "/v1/transfers", Some(sent.body.clone()), Some(&sent.key))
            .await
            .expect("replay");
        assert_eq!((status, replay["id"].as_str()), (201, Some(id)), "seed {seed}: replay of {}", sent.key);
    }

    // Money is conserved: the users hold exactly what was funded.
    let mut total = Decimal::ZERO;
    for account in &accounts {
        total += admin.balance(account).await.parse::<Decimal>().expect("decimal");
    }
    assert_eq!(total, Decimal::from(10_000 * ACCOUNTS as i64), "seed {seed}: conservation");
    server.kill();

    // Exactly once, and nothing half-applied, read from the database itself.
    let ids: Vec<&str> = acknowledged.iter().filter_map(|sent| sent.acknowledged.as_deref()).collect();
    assert_each_posted_once(&database, &ids, &format!("seed {seed}: ")).await;
    let (ok, report) = tally_check(&database);
    assert!(ok, "seed {seed}: tally check found violations:\n{report}");
}
