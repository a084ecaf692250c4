//! Sends the load. Open loop: request i is *intended* at t0 + i/rate and its latency is
//! measured from that instant, not from when it was actually sent, so a server that stalls
//! is charged for every request that should have gone out meanwhile (free of coordinated
//! omission). Closed loop: C workers back to back, latency from each send.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::cli::{Config, Mode};
use crate::client::{Answer, Client};
use crate::error::LoadError;
use crate::setup::Fixture;
use crate::stats::{Outcome, Sample, Stats};
use crate::workload::{Op, Picker};

/// Delay between starting the clock and the first intended request, so the first requests
/// are not late merely because the scheduler task was still being set up.
const START_LEAD: Duration = Duration::from_millis(10);

/// A transfer the server acknowledged (201 or 202), to be found again by the verification.
#[derive(Debug, Clone)]
pub struct Ack {
    pub transfer_id: String,
    pub amount: String,
    pub owner: usize,
}

/// State shared by every request task.
#[derive(Debug)]
pub struct Shared {
    pub client: Client,
    pub fixture: Fixture,
    pub amount: String,
    pub warmup: Duration,
    pub stats: Mutex<Stats>,
    pub acks: Mutex<Vec<Ack>>,
    /// Idempotent replays that did not answer the original transfer (a duplicate payment or
    /// a lost key).
    pub retry_mismatches: Mutex<Vec<String>>,
}

/// A poisoned lock only means another task panicked mid-update; the counters stay usable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The node (index into the `--base-url`s) open-loop request `i` goes to: round-robin, so
/// each of `nodes` nodes gets every n-th request whatever the workload.
pub fn node_of_request(i: u64, nodes: usize) -> usize {
    (i % nodes.max(1) as u64) as usize
}

/// The node closed-loop worker `worker` sends all its requests to: workers are dealt to the
/// nodes round-robin, so `C` workers over `n` nodes put `C/n` (±1) on each.
pub fn node_of_worker(worker: u32, nodes: usize) -> usize {
    worker as usize % nodes.max(1)
}

/// When request `i` is intended, relative to t0, at `rate` requests per second.
pub fn intended_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Runs the load described by `config` until its warm-up plus duration have passed and every
/// request sent has answered.
pub async fn drive(config: &Config, shared: Arc<Shared>) {
    match config.mode {
        Mode::Open => open_loop(config, shared).await,
        Mode::Closed => closed_loop(config, shared).await,
    }
}

async fn open_loop(config: &Config, shared: Arc<Shared>) {
    let total = config.warmup + config.duration;
    let connections = Arc::new(Semaphore::new(config.connections as usize));
    let mut picker = picker(config, config.seed);
    let t0 = Instant::now() + START_LEAD;
    let mut tasks = JoinSet::new();
    for i in 0u64.. {
        let offset = intended_offset(i, config.rate);
        if offset >= total {
            break;
        }
        let intended = t0 + offset;
        tokio::time::sleep_until(intended).await;
        let op = picker.next_op();
        let retry = picker.chance() < config.retry_fraction;
        let node = shared.client.node(node_of_request(i, shared.client.nodes()));
        let shared = Arc::clone(&shared);
        let connections = Arc::clone(&connections);
        tasks.spawn(async move {
            // Waiting for a free connection is part of the latency: the clock started at
            // `intended`.
            let Ok(_permit) = connections.acquire_owned().await else { return };
            execute(&shared, &node, op, retry, intended, offset).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn closed_loop(config: &Config, shared: Arc<Shared>) {
    let t0 = Instant::now();
    let end = t0 + config.warmup + config.duration;
    let mut tasks = JoinSet::new();
    for worker in 0..config.concurrency {
        let mut picker = picker(config, config.seed.wrapping_add(u64::from(worker)));
        let node = shared.client.node(node_of_worker(worker, shared.client.nodes()));
        let shared = Arc::clone(&shared);
        let retry_fraction = config.retry_fraction;
        tasks.spawn(async move {
            loop {
                let intended = Instant::now();
                if intended >= end {
                    break;
                }
                let op = picker.next_op();
                let retry = picker.chance() < retry_fraction;
                execute(&shared, &node, op, retry, intended, intended - t0).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn picker(config: &Config, seed: u64) -> Picker {
    Picker::new(config.workload, config.accounts as usize, config.zipf_exponent, config.batch_size as usize, seed)
}

/// Sends `op` to `node`, records its sample (unless in the warm-up) and any acknowledged
/// transfers.
async fn execute(shared: &Shared, node: &Client, op: Op, retry: bool, intended: Instant, offset: Duration) {
    let (outcome, latency, transfers) = match op {
        Op::Transfer { source, destination } => {
            let (outcome, latency) = transfer(shared, node, source, destination, retry, intended).await;
            let acked = u64::from(matches!(outcome, Outcome::Ok(_)));
            (outcome, latency, acked)
        }
        Op::Batch(items) => {
            let (outcome, acked) = batch(shared, node, &items).await;
            (outcome, intended.elapsed(), acked)
        }
        Op::Read { account } => (read(shared, node, account).await, intended.elapsed(), 0),
    };
    if let Some(measured) = offset.checked_sub(shared.warmup) {
        lock(&shared.stats).record(&Sample { intended: measured, latency, outcome, transfers });
    }
}

fn outcome_of(answer: &Result<Answer, LoadError>, ok: &[u16]) -> Outcome {
    match answer {
        Ok(a) if ok.contains(&a.status) => Outcome::Ok(a.status),
        Ok(a) => Outcome::Error(a.code()),
        Err(_) => Outcome::Error("TRANSPORT".to_owned()),
    }
}

fn transfer_body(shared: &Shared, source: usize, destination: usize) -> Option<(Value, usize)> {
    let from = shared.fixture.accounts.get(source)?;
    let to = shared.fixture.accounts.get(destination)?;
    let body = json!({
        "type": "internal", "source_account_id": from.id, "destination_account_id": to.id,
        "amount": shared.amount, "reference": "loadtest",
    });
    Some((body, from.owner))
}

fn acknowledge(shared: &Shared, transfer: &Value, owner: usize) -> Option<String> {
    let id = transfer.get("id")?.as_str()?.to_owned();
    let amount = transfer.get("amount")?.as_str()?.to_owned();
    lock(&shared.acks).push(Ack { transfer_id: id.clone(), amount, owner });
    Some(id)
}

/// How many times a replay answered `503` or `500` is sent again, `REPLAY_UNAVAILABLE_PAUSE` apart: 30 s,
/// longer than a cluster's failover (a lease of 5 s, then recovery).
const REPLAY_UNAVAILABLE_RETRIES: usize = 60;
const REPLAY_UNAVAILABLE_PAUSE: Duration = Duration::from_millis(500);

/// Sends one transfer to `node`; the latency ends at its first answer, before any replay (a
/// replay measures the idempotency path, not the load). The replay goes to the next node, so
/// with several base URLs it checks that an `Idempotency-Key` holds across nodes; a node it
/// cannot reach passes it on to the one after (same key, so nothing can be paid twice), each
/// node tried once.
async fn transfer(
    shared: &Shared,
    node: &Client,
    source: usize,
    destination: usize,
    retry: bool,
    intended: Instant,
) -> (Outcome, Duration) {
    let Some((body, owner)) = transfer_body(shared, source, destination) else {
        return (Outcome::Error("BAD_ACCOUNT_INDEX".to_owned()), intended.elapsed());
    };
    let token = shared.fixture.tokens.get(owner).map(String::as_str);
    let key = Uuid::new_v4().to_string();
    let api_key = shared.fixture.api_keys.get(owner).map(String::as_str);
    let send = |node: Client| {
        let (key, body) = (&key, &body);
        async move {
            match api_key {
                Some(api_key) => node.post_with_api_key("/v1/transfers", api_key, Some(key), body).await,
                None => node.post("/v1/transfers", token, Some(key), body).await,
            }
        }
    };
    let answer = send(node.clone()).await;
    let latency = intended.elapsed();
    let outcome = outcome_of(&answer, &[201, 202]);
    let Ok(first) = answer else { return (outcome, latency) };
    if !matches!(outcome, Outcome::Ok(_)) {
        return (outcome, latency);
    }
    let Some(id) = acknowledge(shared, &first.body, owner) else {
        return (Outcome::Error("ACK_WITHOUT_TRANSFER".to_owned()), latency);
    };
    if retry {
        // The replay must answer the very same transfer with the same status.
        // A node it cannot reach passes it on (to the next, at once); a `503` ("nothing done, retry later": a cluster
        // between owners, a full queue) or a `500` ("outcome unknown, retry under the same
        // key": a node that stalled past the request time-out) is retried after a pause, as a
        // client must, for up to `REPLAY_UNAVAILABLE_RETRIES` pauses.
        // Every node unreachable in a row (one killed, one paused, one restarting: a cluster
        // mid-failover) counts as one `503`, paused and retried too. Unreachable nodes were
        // counted over the whole retry, so a replay that met a dead node, then `503`s, then a
        // paused node gave up with the transport error though the cluster was recovering.
        let mut replay_node = node.next_node();
        let mut again = send(replay_node.clone()).await;
        let mut unreachable = 0;
        let mut unavailable = 0;
        loop {
            let pause = match &again {
                Err(LoadError::Http(_)) => {
                    unreachable += 1;
                    unreachable >= node.nodes()
                }
                Ok(answer) if matches!(answer.status, 500 | 503) => true,
                _ => break,
            };
            if pause {
                if unavailable >= REPLAY_UNAVAILABLE_RETRIES {
                    break;
                }
                unavailable += 1;
                unreachable = 0;
                tokio::time::sleep(REPLAY_UNAVAILABLE_PAUSE).await;
            }
            replay_node = replay_node.next_node();
            again = send(replay_node.clone()).await;
        }
        let same = matches!(&again, Ok(a) if a.status == first.status
            && a.body.get("id").and_then(Value::as_str) == Some(id.as_str()));
        if !same {
            let seen = again.map_or_else(|e| e.to_string(), |a| format!("{} {}", a.status, a.body));
            lock(&shared.retry_mismatches).push(format!("transfer {id}: replay answered {seen}"));
        }
    }
    (outcome, latency)
}

/// Sends one batch to `node`; answers its outcome and how many of its items were acknowledged.
async fn batch(shared: &Shared, node: &Client, items: &[(usize, usize)]) -> (Outcome, u64) {
    let mut transfers = Vec::with_capacity(items.len());
    let mut owner = 0;
    for (i, &(source, destination)) in items.iter().enumerate() {
        // A batch is sent by one caller: every item's source belongs to the first item's owner
        // (the source is moved to an account of that owner when it is not).
        let Some((mut body, item_owner)) = transfer_body(shared, source, destination) else {
            return (Outcome::Error("BAD_ACCOUNT_INDEX".to_owned()), 0);
        };
        if i == 0 {
            owner = item_owner;
        } else if item_owner != owner {
            let Some(own) =
                shared.fixture.accounts.iter().find(|a| a.owner == owner && a.id != body["destination_account_id"])
            else {
                continue;
            };
            body["source_account_id"] = json!(own.id);
        }
        transfers.push(body);
    }
    let token = shared.fixture.tokens.get(owner).map(String::as_str);
    let key = Uuid::new_v4().to_string();
    let answer = node.post("/v1/transfers/batch", token, Some(&key), &json!({"transfers": transfers})).await;
    let outcome = outcome_of(&answer, &[200]);
    let mut acked = 0;
    if let Ok(a) = &answer {
        for result in a.body.get("results").and_then(Value::as_array).into_iter().flatten() {
            let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
            match result.get("transfer") {
                Some(t) if status == 201 || status == 202 => {
                    acked += u64::from(acknowledge(shared, t, owner).is_some());
                }
                _ => {
                    let code = result.pointer("/error/code").and_then(Value::as_str).unwrap_or("UNKNOWN");
                    lock(&shared.stats).record_item_error(code);
                }
            }
        }
    }
    (outcome, acked)
}

async fn read(shared: &Shared, node: &Client, account: usize) -> Outcome {
    let Some(a) = shared.fixture.accounts.get(account) else {
        return Outcome::Error("BAD_ACCOUNT_INDEX".to_owned());
    };
    let token = shared.fixture.tokens.get(a.owner).map(String::as_str);
    let answer = node.get(&format!("/v1/accounts/{}", a.id), token).await;
    outcome_of(&answer, &[200])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_open_loop_schedule_spaces_requests_by_one_over_the_rate() {
        assert_eq!(intended_offset(0, 100.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 100.0), Duration::from_millis(10));
        assert_eq!(intended_offset(250, 100.0), Duration::from_millis(2500));
        // Over 3 s at 200/s the schedule holds exactly 600 requests.
        let within = (0u64..).take_while(|&i| intended_offset(i, 200.0) < Duration::from_secs(3)).count();
        assert_eq!(within, 600);
        // A fractional rate still spaces evenly.
        assert_eq!(intended_offset(3, 0.5), Duration::from_secs(6));
    }

    #[test]
    fn requests_and_workers_are_spread_round_robin_over_the_nodes() {
        // Open loop: 3 nodes, 300 requests: 100 each, and consecutive requests never share one.
        let mut per_node = [0u32; 3];
        for i in 0..300 {
            per_node[node_of_request(i, 3)] += 1;
            assert_ne!(node_of_request(i, 3), node_of_request(i + 1, 3));
        }
        assert_eq!(per_node, [100, 100, 100]);
        // Closed loop: 16 workers over 3 nodes: 6, 5 and 5.
        let mut per_node = [0u32; 3];
        for worker in 0..16 {
            per_node[node_of_worker(worker, 3)] += 1;
        }
        assert_eq!(per_node, [6, 5, 5]);
        // One node takes everything, as before there were several.
        assert!((0..1000).all(|i| node_of_request(i, 1) == 0));
        assert!((0..64).all(|w| node_of_worker(w, 1) == 0));
    }

    #[test]
    fn a_node_client_sends_to_its_url_and_the_next_one_wraps_around() {
        let urls = ["http://a:1/".to_owned(), "http://b:2".to_owned(), "http://c:3".to_owned()];
        let client = Client::new(&urls).unwrap();
        assert_eq!(client.base_url(), "http://a:1", "set-up goes to the first, trailing / removed");
        assert_eq!(client.nodes(), 3);
        let sent_to: Vec<String> = (0..6).map(|i| client.node(node_of_request(i, 3)).base_url().to_owned()).collect();
        assert_eq!(sent_to, ["http://a:1", "http://b:2", "http://c:3", "http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(client.node(2).next_node().base_url(), "http://a:1");
        let single = Client::new(&["http://only:9".to_owned()]).unwrap();
        assert_eq!(single.next_node().base_url(), "http://only:9");
        assert!(Client::new(&[]).is_err());
    }
}
