//! Sends the load. Open loop: request i is *intended* at t0 + i/rate and its latency is
//! measured from that instant, not from when it was actually sent, so a server that stalls
//! is charged for every request that should have gone out meanwhile (free of coordinated
//! omission). Closed loop: C workers back to back, latency from each send.

use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rust_decimal::Decimal;
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

/// A transfer the server acknowledged (201 or 202), to be found again by the verification
/// and accounted for in its accounts' balances.
#[derive(Debug, Clone)]
pub struct Ack {
    pub transfer_id: String,
    /// The acknowledging answer's status: `201` (completed) or `202` (pending).
    pub status: u16,
    /// Indexes into `Fixture::accounts` of the source and the destination requested.
    pub source: usize,
    pub destination: usize,
    /// The amount requested.
    pub amount: Decimal,
    /// The fee the answer reported, on top of the amount (zero when it reported none).
    pub fee: Decimal,
    /// Whether the answer named the requested amount, and the requested accounts.
    pub answered_amount: bool,
    pub answered_accounts: bool,
    pub owner: usize,
}

/// A request as sent, kept to be sent again under its `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct Request {
    /// `/v1/transfers` or `/v1/transfers/batch`.
    pub path: &'static str,
    pub key: String,
    pub body: Value,
    pub owner: usize,
    /// Sent with the owner's API key when set-up made one (single transfers), else its token.
    pub api_key: bool,
}

/// A request whose outcome the generator does not know: the server answered `5xx` other than
/// `503` (API.md: `500` is "outcome unknown, retry under the same key"), or the exchange broke
/// after the request may have reached the server (a time-out, a reset; a refused connection
/// sent nothing, and `503`, `4xx` did nothing). For a batch answered `200`, only its items
/// answered so.
#[derive(Debug, Clone)]
pub struct Unknown {
    pub request: Request,
    pub node: Client,
    /// The transfers concerned: (index in the request, source, destination); index 0 for a
    /// single transfer.
    pub items: Vec<(usize, usize, usize)>,
    pub why: String,
}

/// A transfer whose outcome stayed unknown after replaying its request: it may or may not have
/// moved money, and the verification allows for both.
#[derive(Debug, Clone)]
pub struct Unresolved {
    pub source: usize,
    pub destination: usize,
    pub amount: Decimal,
    pub why: String,
}

/// What replaying the unknown outcomes under their keys established.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Transfers of unknown outcome: items of batches count one each.
    pub unknown: usize,
    /// Those the replay answered as made (the first request's transfer, or made now).
    pub applied: Vec<Ack>,
    /// Those the replay answered as refused (nothing kept under the key, so nothing moved).
    pub not_applied: usize,
    pub unresolved: Vec<Unresolved>,
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
    /// Requests whose outcome is unknown, resolved after the load (`resolve`).
    pub unknowns: Mutex<Vec<Unknown>>,
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

/// Whether `answer` leaves its request's outcome unknown (see `Unknown`).
pub fn outcome_unknown(answer: &Result<Answer, LoadError>) -> bool {
    match answer {
        Ok(a) => a.status >= 500 && a.status != 503,
        // A connection that could not be made carried no request.
        Err(LoadError::Http(e)) => !e.is_connect(),
        Err(_) => true,
    }
}

fn described(answer: &Result<Answer, LoadError>) -> String {
    match answer {
        Ok(a) => format!("answered {} {}", a.status, a.code()),
        Err(e) => e.to_string(),
    }
}

/// The `Ack` of `transfer`, answered with `status` to a request for `source` → `destination`;
/// `None` when the answer has no transfer id.
fn ack_of(
    shared: &Shared,
    transfer: &Value,
    status: u16,
    (source, destination): (usize, usize),
    owner: usize,
) -> Option<Ack> {
    let transfer_id = transfer.get("id")?.as_str()?.to_owned();
    let decimal = |name: &str| transfer.get(name).and_then(Value::as_str).and_then(|t| Decimal::from_str(t).ok());
    let amount = Decimal::from_str(&shared.amount).ok()?;
    let id_of = |index: usize| shared.fixture.accounts.get(index).map(|a| a.id.as_str());
    let names = |field: &str, index: usize| transfer.get(field).and_then(Value::as_str) == id_of(index);
    Some(Ack {
        transfer_id,
        status,
        source,
        destination,
        amount,
        fee: decimal("fee").unwrap_or(Decimal::ZERO),
        answered_amount: decimal("amount") == Some(amount),
        answered_accounts: names("source_account_id", source) && names("destination_account_id", destination),
        owner,
    })
}

fn acknowledge(
    shared: &Shared,
    transfer: &Value,
    status: u16,
    accounts: (usize, usize),
    owner: usize,
) -> Option<String> {
    let ack = ack_of(shared, transfer, status, accounts, owner)?;
    let id = ack.transfer_id.clone();
    lock(&shared.acks).push(ack);
    Some(id)
}

/// Sends `request` to `node`, with the owner's API key if it is to and there is one, else the
/// owner's token.
async fn send(shared: &Shared, node: &Client, request: &Request) -> Result<Answer, LoadError> {
    let api_key = shared.fixture.api_keys.get(request.owner).filter(|_| request.api_key);
    match api_key {
        Some(api_key) => node.post_with_api_key(request.path, api_key, Some(&request.key), &request.body).await,
        None => {
            let token = shared.fixture.tokens.get(request.owner).map(String::as_str);
            node.post(request.path, token, Some(&request.key), &request.body).await
        }
    }
}

/// How many times a replay answered `503` or `500` is sent again, `REPLAY_UNAVAILABLE_PAUSE` apart: 30 s,
/// longer than a cluster's failover (a lease of 5 s, then recovery).
const REPLAY_UNAVAILABLE_RETRIES: usize = 60;
const REPLAY_UNAVAILABLE_PAUSE: Duration = Duration::from_millis(500);

/// Sends `request` again under its key, from `node` on. A node it cannot reach passes it on
/// (to the next, at once); a `503` ("nothing done, retry later": a cluster between owners, a
/// full queue) or a `500` ("outcome unknown, retry under the same key": a node that stalled
/// past the request time-out) is retried after a pause, as a client must, for up to
/// `REPLAY_UNAVAILABLE_RETRIES` pauses and never past `give_up`.
/// Every node unreachable in a row (one killed, one paused, one restarting: a cluster
/// mid-failover) counts as one `503`, paused and retried too. Unreachable nodes were
/// counted over the whole retry, so a replay that met a dead node, then `503`s, then a
/// paused node gave up with the transport error though the cluster was recovering.
async fn replay(
    shared: &Shared,
    node: &Client,
    request: &Request,
    give_up: Option<Instant>,
) -> Result<Answer, LoadError> {
    let mut replay_node = node.clone();
    let mut again = send(shared, &replay_node, request).await;
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
            if unavailable >= REPLAY_UNAVAILABLE_RETRIES || give_up.is_some_and(|at| Instant::now() >= at) {
                break;
            }
            unavailable += 1;
            unreachable = 0;
            tokio::time::sleep(REPLAY_UNAVAILABLE_PAUSE).await;
        }
        replay_node = replay_node.next_node();
        again = send(shared, &replay_node, request).await;
    }
    again
}

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
    let request = Request { path: "/v1/transfers", key: Uuid::new_v4().to_string(), body, owner, api_key: true };
    let answer = send(shared, node, &request).await;
    let latency = intended.elapsed();
    let outcome = outcome_of(&answer, &[201, 202]);
    if outcome_unknown(&answer) {
        let why = described(&answer);
        let items = vec![(0, source, destination)];
        lock(&shared.unknowns).push(Unknown { request, node: node.clone(), items, why });
        return (outcome, latency);
    }
    let Ok(first) = answer else { return (outcome, latency) };
    if !matches!(outcome, Outcome::Ok(_)) {
        return (outcome, latency);
    }
    let Some(id) = acknowledge(shared, &first.body, first.status, (source, destination), owner) else {
        return (Outcome::Error("ACK_WITHOUT_TRANSFER".to_owned()), latency);
    };
    if retry {
        // The replay must answer the very same transfer with the same status.
        let again = replay(shared, &node.next_node(), &request, None).await;
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
    // (source, destination) of each item sent.
    let mut sent = Vec::with_capacity(items.len());
    let mut owner = 0;
    for (i, &(mut source, destination)) in items.iter().enumerate() {
        // A batch is sent by one caller: every item's source belongs to the first item's owner
        // (the source is moved to an account of that owner when it is not).
        let Some((mut body, item_owner)) = transfer_body(shared, source, destination) else {
            return (Outcome::Error("BAD_ACCOUNT_INDEX".to_owned()), 0);
        };
        if i == 0 {
            owner = item_owner;
        } else if item_owner != owner {
            let accounts = &shared.fixture.accounts;
            let Some(own) = accounts.iter().position(|a| a.owner == owner && a.id != body["destination_account_id"])
            else {
                continue;
            };
            body["source_account_id"] = json!(accounts[own].id);
            source = own;
        }
        transfers.push(body);
        sent.push((source, destination));
    }
    let body = json!({"transfers": transfers});
    let request = Request { path: "/v1/transfers/batch", key: Uuid::new_v4().to_string(), body, owner, api_key: false };
    let answer = send(shared, node, &request).await;
    let outcome = outcome_of(&answer, &[200]);
    if outcome_unknown(&answer) {
        let why = format!("batch {}", described(&answer));
        let items = sent.iter().enumerate().map(|(i, &(s, d))| (i, s, d)).collect();
        lock(&shared.unknowns).push(Unknown { request, node: node.clone(), items, why });
        return (outcome, 0);
    }
    let mut acked = 0;
    if let Ok(a) = &answer
        && a.status == 200
    {
        let mut unknown = Vec::new();
        let mut answered = vec![false; sent.len()];
        for (position, result) in a.body.get("results").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let index = result.get("index").and_then(Value::as_u64).map_or(position, |i| i as usize);
            let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
            let Some(&accounts) = sent.get(index) else { continue };
            answered[index] = true;
            match result.get("transfer") {
                Some(t) if status == 201 || status == 202 => {
                    acked += u64::from(acknowledge(shared, t, status as u16, accounts, owner).is_some());
                }
                _ => {
                    let code = result.pointer("/error/code").and_then(Value::as_str).unwrap_or("UNKNOWN");
                    lock(&shared.stats).record_item_error(code);
                    if status >= 500 && status != 503 {
                        unknown.push((index, accounts.0, accounts.1));
                    }
                }
            }
        }
        // An item the answer does not mention may have been made or not.
        unknown.extend(answered.iter().enumerate().filter(|(_, a)| !**a).map(|(i, _)| (i, sent[i].0, sent[i].1)));
        if !unknown.is_empty() {
            let why = format!("batch item answered 5xx or not at all ({} items)", unknown.len());
            lock(&shared.unknowns).push(Unknown { request, node: node.clone(), items: unknown, why });
        }
    }
    (outcome, acked)
}

/// Transfers whose outcome the load left unknown, at most this many replayed at once.
const RESOLVE_CONCURRENCY: usize = 64;
/// No replay of an unknown outcome pauses for a `500`/`503`, and none is sent, after this long
/// from the start of the resolution: a server that stays down must not hold the verification
/// for ever.
const RESOLVE_PATIENCE: Duration = Duration::from_secs(60);

/// Settles what the load left unknown: each such request is sent again under its
/// `Idempotency-Key` (same body, same caller), which answers the transfer the first request
/// made if it made one, and otherwise makes it now or refuses it. Either way its effect is then
/// known, and checked like any other acknowledged transfer. A request whose replay still gets no
/// answer, or an answer that settles nothing (`5xx`, `401`, `429`, ...), stays unresolved.
pub async fn resolve(shared: &Arc<Shared>) -> Result<Resolution, LoadError> {
    let unknowns = std::mem::take(&mut *lock(&shared.unknowns));
    let give_up = Instant::now() + RESOLVE_PATIENCE;
    let limit = Arc::new(Semaphore::new(RESOLVE_CONCURRENCY));
    let mut tasks = JoinSet::new();
    let mut resolution = Resolution::default();
    for unknown in unknowns {
        resolution.unknown += unknown.items.len();
        let (shared, limit) = (Arc::clone(shared), Arc::clone(&limit));
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            if Instant::now() >= give_up {
                // A server that stays down makes each replay wait out its time-out: past the
                // patience, the rest are left unresolved unsent, so the run still ends.
                let amount = Decimal::from_str(&shared.amount).unwrap_or(Decimal::ZERO);
                let why = format!("first {}; not replayed: the resolution ran out of time", unknown.why);
                let unresolved = unknown.items.iter().map(|&(_, source, destination)| Unresolved {
                    source,
                    destination,
                    amount,
                    why: why.clone(),
                });
                return (Vec::new(), 0, unresolved.collect());
            }
            let answer = replay(&shared, &unknown.node, &unknown.request, Some(give_up)).await;
            settle(&shared, &unknown, &answer)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (applied, not_applied, unresolved) =
            joined.map_err(|e| LoadError::Verification(format!("a replay task failed: {e}")))?;
        resolution.applied.extend(applied);
        resolution.not_applied += not_applied;
        resolution.unresolved.extend(unresolved);
    }
    Ok(resolution)
}

/// Whether a replay's `status` (without a transfer) shows that nothing was kept under the key:
/// a refusal on the request's merits, checked afresh because the first attempt kept nothing.
fn refused(status: u64) -> bool {
    matches!(status, 400 | 404 | 422)
}

/// What a replay's `answer` settles of `unknown`: the transfers made, how many were refused,
/// and the ones still unknown.
fn settle(
    shared: &Shared,
    unknown: &Unknown,
    answer: &Result<Answer, LoadError>,
) -> (Vec<Ack>, usize, Vec<Unresolved>) {
    let (mut applied, mut not_applied, mut unresolved) = (Vec::new(), 0, Vec::new());
    let owner = unknown.request.owner;
    let amount = Decimal::from_str(&shared.amount).unwrap_or(Decimal::ZERO);
    let still = |source: usize, destination: usize, why: String| Unresolved { source, destination, amount, why };
    let first = format!("first {}", unknown.why);
    match answer {
        Ok(a) if unknown.request.path == "/v1/transfers" => {
            for &(_, source, destination) in &unknown.items {
                match ack_of(shared, &a.body, a.status, (source, destination), owner) {
                    Some(ack) if matches!(a.status, 201 | 202) => applied.push(ack),
                    _ if refused(u64::from(a.status)) => not_applied += 1,
                    _ => unresolved.push(still(source, destination, format!("{first}; replay {}", described(answer)))),
                }
            }
        }
        Ok(a) if a.status == 200 => {
            let results = a.body.get("results").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            for &(index, source, destination) in &unknown.items {
                let result = results
                    .iter()
                    .find(|r| r.get("index").and_then(Value::as_u64) == Some(index as u64))
                    .or_else(|| results.get(index));
                let status = result.and_then(|r| r.get("status")).and_then(Value::as_u64).unwrap_or(0);
                let made = result.and_then(|r| r.get("transfer")).filter(|_| matches!(status, 201 | 202));
                match made.and_then(|t| ack_of(shared, t, status as u16, (source, destination), owner)) {
                    Some(ack) => applied.push(ack),
                    None if refused(status) => not_applied += 1,
                    None => unresolved.push(still(source, destination, format!("{first}; replayed item {status}"))),
                }
            }
        }
        Ok(a) if refused(u64::from(a.status)) => not_applied += unknown.items.len(),
        _ => {
            for &(_, source, destination) in &unknown.items {
                unresolved.push(still(source, destination, format!("{first}; replay {}", described(answer))));
            }
        }
    }
    (applied, not_applied, unresolved)
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
