//! Shard leases as rows and fenced commits, on a real Postgres (issue 13, DESIGN.md §10): a
//! node's engine commits while it holds its leases; another node cannot take them while they
//! run; once they have run out it can, and from then on every commit of the former owner is
//! refused by the fence, counted, and changes nothing.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use rust_decimal_macros::dec;
use tally_actors::{Engine, EngineConfig};
use tally_engine::{Currency, TransferKind, TransferStatus, UserId};
use tally_persistence::cluster::{ClusterStore, fenced_commits};
use tally_persistence::postgres::PgStore;
use tally_persistence::{Store, StoreReads};
use tally_tests::{internal_request, postgres};

const LEASE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_leases_can_never_commit_again() {
    let (_, url) = postgres::fresh_store("leases").await;
    let config = EngineConfig::default();
    let shards = u16::try_from(config.actors.shards).unwrap();

    // Node a takes every shard and runs an engine fenced by its leases.
    let a = ClusterStore::connect(&url, "a", "http://127.0.0.1:1", LEASE).await.unwrap();
    let b = ClusterStore::connect(&url, "b", "http://127.0.0.1:2", LEASE).await.unwrap();
    a.heartbeat().await.unwrap();
    b.heartbeat().await.unwrap();
    let taken = a.take_all(shards).await.unwrap().expect("nobody holds a lease yet");
    assert_eq!(taken.moved, 0, "nobody held them before");
    let leases = taken.leases;
    assert_eq!(leases.len(), usize::from(shards));
    assert!(leases.iter().all(|lease| lease.epoch == 1), "a first take is epoch 1: {leases:?}");
    let store_a = Arc::new(PgStore::connect(&url).await.unwrap());
    store_a.fence_journal_writers("a", &leases, LEASE);
    let engine = Engine::start(store_a.clone(), config.clone()).await.unwrap();
    let owner = UserId::from_u128(7);
    let source = engine.open_account(owner, Currency::USD, dec!(0)).await.unwrap();
    let destination = engine.open_account(owner, Currency::USD, dec!(0)).await.unwrap();
    let funded = engine.adjust(TransferKind::AdminCredit, source.id, dec!(100.00), None, None, None).await.unwrap();
    assert_eq!(funded.status, TransferStatus::Completed);

    // While a's leases run, b cannot take them, and a server that is no cluster node refuses
    // to start beside a.
    assert_eq!(b.take_all(shards).await.unwrap(), None);
    assert!(a.renew(&leases).await.unwrap());
    let outsider = Arc::new(PgStore::connect(&url).await.unwrap());
    let refused = Engine::start(outsider, config.clone()).await;
    assert!(refused.is_err(), "a server that is not a cluster node must not start beside one");
    let view = b.view().await.unwrap();
    assert!(view.shards.iter().all(|lease| lease.owner.as_deref() == Some("a")), "{view:?}");
    assert_eq!(view.nodes.iter().find(|node| node.id == "a").unwrap().shards_owned, usize::from(shards));

    // a stops renewing (paused, partitioned); once its leases run out b takes them.
    tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
    let taken = b.take_all(shards).await.unwrap().expect("a's leases ran out");
    assert_eq!(taken.moved, usize::from(shards), "every shard moved from a to b");
    let taken = taken.leases;
    assert!(taken.iter().all(|lease| lease.epoch == 2), "a take raises the epoch: {taken:?}");
    assert!(!a.renew(&leases).await.unwrap(), "a renewal after the take must fail");

    // Every commit of a is refused now: the transfer is never acknowledged (its saga waits on
    // a stopped journal; a node in this state restarts as a standby, `http/src/cluster.rs`)
    // and nothing moved.
    let fenced_before = fenced_commits();
    let request = internal_request(&engine, &source, &destination, dec!(1.00));
    let outcome = tokio::time::timeout(Duration::from_secs(3), engine.transfer(request)).await;
    assert!(!matches!(outcome, Ok(Ok(_))), "a fenced node acknowledged a transfer: {outcome:?}");
    assert!(fenced_commits() > fenced_before, "the fence's refusals are counted");
    let checker = PgStore::connect(&url).await.unwrap();
    let stored_source = checker.load_account(source.id).await.unwrap().unwrap().value;
    assert_eq!(stored_source.balance(), dec!(100.00), "the fenced transfer moved money");
    drop(engine);

    // b's engine, fenced by b's leases, serves the same ledger from the store.
    let store_b = Arc::new(PgStore::connect(&url).await.unwrap());
    store_b.fence_journal_writers("b", &taken, LEASE);
    let config_for_later = config.clone();
    let engine_b = Engine::start(store_b.clone() as Arc<dyn Store>, config).await.unwrap();
    let moved = engine_b.transfer(internal_request(&engine_b, &source, &destination, dec!(2.50))).await.unwrap();
    assert_eq!(moved.status, TransferStatus::Completed);
    assert_eq!(engine_b.account(source.id).await.unwrap().balance(), dec!(97.50));
    assert_eq!(engine_b.account(destination.id).await.unwrap().balance(), dec!(2.50));
    engine_b.shutdown(Duration::from_secs(5)).await;
    tally_tests::assert_store_consistent(store_b.as_ref()).await;

    // A clean stop hands over at once: b releases (its journals flushed by the shutdown
    // above), and a takes the shards without waiting for the lease to run out.
    b.release(&taken).await.unwrap();
    let back = a.take_all(shards).await.unwrap().expect("released leases are free at once");
    assert!(back.leases.iter().all(|lease| lease.epoch == 3), "{back:?}");

    a.add_fenced_commits(fenced_commits() - fenced_before).await.unwrap();
    let view = b.view().await.unwrap();
    assert!(view.nodes.iter().find(|node| node.id == "a").unwrap().fenced_commits > 0, "{view:?}");

    // Once the cluster is gone (a released its leases), a server that is not a cluster node
    // may start: it clears the leases that ran out and commits. Should a cluster node take the
    // shards after that, the fence refuses that server's commits too, though it set nothing.
    a.release(&back.leases).await.unwrap();
    let standalone_store = Arc::new(PgStore::connect(&url).await.unwrap());
    let standalone = Engine::start(standalone_store.clone() as Arc<dyn Store>, config_for_later).await.unwrap();
    let moved = standalone.transfer(internal_request(&standalone, &source, &destination, dec!(0.50))).await.unwrap();
    assert_eq!(moved.status, TransferStatus::Completed);
    assert!(b.take_all(shards).await.unwrap().is_some(), "cleared leases are free");
    let request = internal_request(&standalone, &source, &destination, dec!(0.25));
    let outcome = tokio::time::timeout(Duration::from_secs(3), standalone.transfer(request)).await;
    assert!(!matches!(outcome, Ok(Ok(_))), "a server that is no cluster node committed beside one: {outcome:?}");
    let stored = checker.load_account(source.id).await.unwrap().unwrap().value;
    assert_eq!(stored.balance(), dec!(97.00), "only the transfers made before the take moved money");
}

/// A server that is no cluster node asks the store where its shard stands when a batch's
/// answer was lost. While a node holds the shard, the answer is refused: that node carries the
/// sequence on from the committed prefix, and its number would say the lost batch was in when
/// it may not be. Answered regardless before, such a server could count a node's commits as
/// its own and acknowledge records the store never held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outside_the_cluster_cannot_read_a_shards_sequence_a_node_holds() {
    let (store, url) = postgres::fresh_store("plainseq").await;
    store.open_shards(1).await.unwrap();
    let mut writers = Arc::clone(&store).journal_writers(0).await.unwrap();
    let writer = writers.first_mut().expect("one writer");
    assert_eq!(writer.committed_seq().await.unwrap(), 0, "nobody holds the shard: the sequence is the server's");

    let node = ClusterStore::connect(&url, "n", "http://127.0.0.1:1", LEASE).await.unwrap();
    node.heartbeat().await.unwrap();
    node.take_all(1).await.unwrap().expect("nobody holds a lease");
    let refused = writer.committed_seq().await;
    assert!(
        matches!(refused, Err(tally_persistence::StoreError::Corrupt(_))),
        "a node holds the shard: refused, got {refused:?}"
    );
}
