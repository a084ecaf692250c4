//! A three-node cluster of real `tally serve` processes on one Postgres (issue 13, DESIGN.md
//! §10), under transfer load sent to all three nodes: `kill -9` the owner, pause the next
//! owner with SIGSTOP until its leases run out and resume it, restart the killed node. Then:
//! every acknowledged transfer exists exactly once and replays under its key on another node,
//! money is conserved, `tally check` passes, and the fence refused the paused owner's commits
//! (counted in the store, > 0). `scripts/cluster` runs the same scenario longer, with
//! `tally-loadtest`.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tally_tests::cluster::{cluster_view, node_env, wait_for_owner};
use tally_tests::postgres;
use tally_tests::server::{ADMIN_EMAIL, ADMIN_PASSWORD, Client, TallyServer, assert_each_posted_once, tally_check};

const ACCOUNTS: usize = 8;
const WORKERS: usize = 12;
const LEASE_SECS: u64 = 2;
const SECRET: &str = "cluster-failover-test-secret-0123456789";

async fn start_node(database: &str, id: &str) -> TallyServer {
    tally_tests::cluster::start_node(database, id, SECRET, LEASE_SECS).await
}

#[derive(Clone, Debug)]
struct Sent {
    key: String,
    body: serde_json::Value,
    /// Which node the client sent it to.
    node: usize,
    /// The transfer id of a `201`, if the client heard one.
    acknowledged: Option<String>,
}

/// Sends one keyed internal transfer of 0.01 through `client` (node `node`) and records it;
/// true if it was acknowledged.
async fn send_transfer(
    client: &Client,
    node: usize,
    key: String,
    source: &str,
    destination: &str,
    sent: &Mutex<Vec<Sent>>,
) -> bool {
    let body = serde_json::json!({
        "type": "internal", "source_account_id": source,
        "destination_account_id": destination, "amount": "0.01"
    });
    let result = client.send(reqwest::Method::POST, "/v1/transfers", Some(body.clone()), Some(&key)).await;
    let acknowledged = match &result {
        Ok((201, transfer)) => Some(transfer["id"].as_str().expect("id").to_owned()),
        _ => None,
    };
    let acked = acknowledged.is_some();
    sent.lock().expect("lock").push(Sent { key, body, node, acknowledged });
    acked
}

fn fenced_of(view: &serde_json::Value, node: &str) -> i64 {
    view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == node)
        .map_or(0, |n| n["fenced_commits"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_loses_nothing_acknowledged_and_fences_the_paused_owner() {
    let database = postgres::fresh_database("cluster").await;
    let ids = ["n1", "n2", "n3"];
    let mut nodes = Vec::new();
    for id in ids {
        // n1 starts first and takes the shards; the others are standbys, ready once they can
        // forward to it.
        nodes.push(start_node(&database, id).await);
    }
    let bases: Vec<String> = nodes.iter().map(TallyServer::base_url).collect();
    // Logged in through a standby: forwarded to the owner.
    let admin = Client::login(&bases[1], ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(wait_for_owner(&admin, &bases, &[]).await, "n1");
    let mut accounts = Vec::new();
    for _ in 0..ACCOUNTS {
        let account = admin.open_account("USD").await;
        admin.fund(&account, "10000.00").await;
        accounts.push(account);
    }

    let sent: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (admin, bases, accounts, sent, stop) =
                (admin.clone(), bases.clone(), accounts.clone(), sent.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let source = &accounts[(worker + i) % ACCOUNTS];
                    let destination = &accounts[(worker + 3 * i + 1) % ACCOUNTS];
                    if source == destination {
                        continue;
                    }
                    let node = (worker + i) % bases.len();
                    let client = Client { base: bases[node].clone(), ..admin.clone() };
                    let acked =
                        send_transfer(&client, node, format!("cluster-{worker}-{i}"), source, destination, &sent).await;
                    // As fast as the nodes answer, so the owner is mid-saga whenever it is paused;
                    // a node down, paused or between owners is tried again after a moment.
                    if !acked {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();

    // The owner dies; another node takes the shards after the lease time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[0].kill();
    let survivors = [bases[1].clone(), bases[2].clone()];
    let mut owner = wait_for_owner(&admin, &survivors, &["n1"]).await;

    // The owner pauses past its lease; the last node takes over; the paused one wakes, finds
    // its commits fenced, and starts over as a standby. Paused again (at most three times)
    // until a commit of it was fenced: a pause that happens to find its journals empty leaves
    // nothing to refuse.
    let mut fenced = 0;
    for pause in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let paused = ids.iter().position(|id| *id == owner).unwrap();
        let other = 3 - paused;
        // A burst straight at the owner, so that it is mid-saga when it stops.
        let burst: Vec<_> = (0..64)
            .map(|i| {
                let client = Client { base: bases[paused].clone(), ..admin.clone() };
                let (source, destination) = (accounts[i % ACCOUNTS].clone(), accounts[(i + 1) % ACCOUNTS].clone());
                let sent = sent.clone();
                tokio::spawn(async move {
                    send_transfer(&client, paused, format!("burst-{pause}-{i}"), &source, &destination, &sent).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(15)).await;
        nodes[paused].pause();
        let next = wait_for_owner(&admin, &[bases[other].clone()], &["n1", &owner]).await;
        nodes[paused].resume();
        for request in burst {
            request.await.expect("burst request");
        }
        // It counts its fenced commits into the store before it starts over.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Some(view) = cluster_view(&admin, &[bases[other].clone()]).await {
                let node =
                    &view["nodes"].as_array().unwrap().iter().find(|n| n["id"] == owner.as_str()).unwrap().clone();
                fenced = fenced_of(&view, &owner);
                if node["alive"] == true && node["shards_owned"] == 0 && fenced > 0 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        owner = next;
        if fenced > 0 {
            break;
        }
    }
    assert!(fenced > 0, "the fence refused no commit of a paused owner in three pauses");

    // The killed node comes back as a standby; the load goes on a moment over all three.
    nodes[0].restart().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }

    let sent = sent.lock().expect("lock").clone();
    let acknowledged: Vec<&Sent> = sent.iter().filter(|s| s.acknowledged.is_some()).collect();
    eprintln!("{} sent, {} acknowledged", sent.len(), acknowledged.len());
    assert!(acknowledged.len() > 100, "the load ran: {} acknowledged", acknowledged.len());
    for node in 0..3 {
        assert!(acknowledged.iter().any(|s| s.node == node), "node {node} acknowledged transfers");
    }

    // Every acknowledged transfer is there, completed; its key replays to it through another
    // node than the one that acknowledged it (idempotency holds across nodes).
    let owner_now = wait_for_owner(&admin, &bases, &[]).await;
    eprintln!("owner at the end: {owner_now}");
    for (index, sent) in acknowledged.iter().enumerate() {
        // Every tenth read back and replayed through another node (each is a keyed look-up like
        // the others; the database check below covers every transfer).
        if index % 10 != 0 {
            continue;
        }
        let id = sent.acknowledged.as_deref().expect("acknowledged");
        let other = Client { base: bases[(sent.node + 1) % 3].clone(), ..admin.clone() };
        let (status, transfer) = other.get(&format!("/v1/transfers/{id}")).await;
        assert_eq!((status, transfer["status"].as_str()), (200, Some("completed")), "acked {id}");
        let (status, replay) = other
            .send(reqwest::Method::POST, "/v1/transfers", Some(sent.body.clone()), Some(&sent.key))
            .await
            .expect("replay");
        assert_eq!((status, replay["id"].as_str()), (201, Some(id)), "replay of {}", sent.key);
    }

    // Each node's own /metrics: the standbys forwarded, and the last owner took shards that
    // another node held.
    let metrics = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let scrape =
        |base: String| async move { reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap() };
    let mut forwarded = 0.0;
    for base in &bases {
        forwarded += metrics(&scrape(base.clone()).await, "tally_cluster_forwarded_requests_total");
    }
    assert!(forwarded > 0.0, "standbys forwarded requests");
    let mut batches = 0.0;
    for base in &bases {
        batches += metrics(&scrape(base.clone()).await, "tally_cluster_forwarded_batches_total");
    }
    assert!(batches > 0.0, "standbys forwarded single transfers in batches");
    let last_owner = &bases[ids.iter().position(|id| *id == owner_now).unwrap()];
    let text = scrape(last_owner.clone()).await;
    assert_eq!(metrics(&text, "tally_cluster_owner"), 1.0, "{text}");
    assert!(metrics(&text, "tally_cluster_shard_moves_total") >= 1.0, "{text}");

    // Money is conserved: the users hold exactly what was funded.
    let mut total = Decimal::ZERO;
    for account in &accounts {
        total += admin.balance(account).await.parse::<Decimal>().expect("decimal");
    }
    assert_eq!(total, Decimal::from(10_000 * ACCOUNTS as i64), "conservation");
    for node in &mut nodes {
        node.kill();
    }

    // Exactly once, and nothing half-applied, read from the database itself.
    let ids: Vec<&str> = acknowledged.iter().filter_map(|sent| sent.acknowledged.as_deref()).collect();
    assert_each_posted_once(&database, &ids, "").await;
    let (ok, report) = tally_check(&database);
    assert!(ok, "tally check found violations:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_node_refuses_the_token_on_every_node_within_a_second() {
    let database = postgres::fresh_database("cluster_logout").await;
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(start_node(&database, id).await);
    }
    let bases: Vec<String> = nodes.iter().map(TallyServer::base_url).collect();
    let admin = Client::login(&bases[2], ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for base in &bases {
        let client = Client { base: base.clone(), ..admin.clone() };
        assert_eq!(client.get("/v1/admin/cluster").await.0, 200, "the token works on {base}");
    }
    // A second session of the same admin, ended through node b.
    let second = Client::login(&bases[0], ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let on_b = Client { base: bases[1].clone(), ..second.clone() };
    let (status, _) = on_b.send(reqwest::Method::POST, "/v1/auth/logout", None, None).await.expect("logout");
    assert_eq!(status, 204);
    // The very next request on each node is refused (the contract asks within a second).
    for base in &bases {
        let client = Client { base: base.clone(), ..second.clone() };
        let (status, _) = client.get("/v1/admin/cluster").await;
        assert_eq!(status, 401, "the ended session's token is refused on {base}");
    }
    // The first session is untouched.
    for base in &bases {
        let client = Client { base: base.clone(), ..admin.clone() };
        assert_eq!(client.get("/v1/admin/cluster").await.0, 200);
    }
}

/// Two processes given one `TALLY_NODE_ID`: one that fails to start (its address taken) never
/// registers and changes nothing; one started later registers as the node and
/// takes its leases over at once (they name its id); the earlier one finds at its next
/// heartbeat that it is no longer the node and exits with status 78 (`EXIT_SUPERSEDED`),
/// rather than the two taking the leases from each other back and forth. Money acknowledged by
/// the first process is there in the second's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_under_one_node_id_supersedes_the_first_which_exits() {
    let database = postgres::fresh_database("cluster_one_id").await;
    let mut first = start_node(&database, "a").await;
    let admin = Client::login(&first.base_url(), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(wait_for_owner(&admin, &[first.base_url()], &[]).await, "a");
    let account = admin.open_account("USD").await;
    admin.fund(&account, "12.34").await;

    // A second process under the same id that cannot start (the first holds its address)
    // exits without ever registering, so the first stays the node.
    let data_dir = std::env::temp_dir().join(format!("tally-same-id-{}", std::process::id()));
    let mut failed = std::process::Command::new(tally_tests::server::tally_bin());
    failed
        .arg("serve")
        .env("TALLY_LISTEN", format!("127.0.0.1:{}", first.port))
        .env("TALLY_ADVERTISE_URL", first.base_url())
        .env("TALLY_DATABASE_URL", &database)
        .env("TALLY_DATA_DIR", &data_dir)
        .env("TALLY_LOG", "warn")
        .envs(node_env("a", SECRET, LEASE_SECS))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let status = tokio::task::spawn_blocking(move || failed.status()).await.unwrap().unwrap();
    assert!(!status.success(), "a second process on a taken address must fail to start");
    let _ = std::fs::remove_dir_all(&data_dir);
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECS)).await;
    assert!(
        first.wait_exit(Duration::from_millis(100)).await.is_none(),
        "a process that never started superseded the node"
    );

    let mut second = start_node(&database, "a").await;
    let status = first.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(
        status.and_then(|status| status.code()),
        Some(78),
        "the superseded process exits as EX_CONFIG; its log:\n{}",
        first.log_text()
    );
    assert!(first.log_text().contains("another process registered as this node"), "{}", first.log_text());

    // The second process is the node: it owns every shard, keeps its row alive, and serves.
    let on_second = Client { base: second.base_url(), ..admin.clone() };
    assert_eq!(wait_for_owner(&on_second, &[second.base_url()], &[]).await, "a");
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECS)).await;
    assert!(second.wait_exit(Duration::from_millis(100)).await.is_none(), "the newer process keeps running");
    assert_eq!(on_second.balance(&account).await, "12.34");
    let view = cluster_view(&on_second, &[second.base_url()]).await.expect("the cluster view");
    let nodes = view["nodes"].as_array().unwrap();
    assert!(nodes.iter().any(|node| node["id"] == "a" && node["alive"] == true), "{view}");
}

/// One raw request: status, the headers that describe the answer, and the body as JSON.
async fn raw_transfer(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    key: &str,
    body: &serde_json::Value,
) -> (u16, Vec<(String, String)>, serde_json::Value) {
    let mut request = http.post(format!("{base}/v1/transfers")).header("Idempotency-Key", key).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    // Every header but those that differ from answer to answer by nature.
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id" | "content-length"))
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or("?").to_owned()))
        .collect();
    headers.sort();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_transfers_through_a_standby_travel_in_batches_and_each_hears_its_own_answer() {
    let database = postgres::fresh_database("cluster_batches").await;
    let owner = start_node(&database, "a").await;
    let standby = start_node(&database, "b").await;
    let (on_owner, on_standby) = (owner.base_url(), standby.base_url());
    let admin = Client::login(&on_owner, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(wait_for_owner(&admin, std::slice::from_ref(&on_owner), &[]).await, "a");
    let (rich, poor) = (admin.open_account("USD").await, admin.open_account("USD").await);
    admin.fund(&rich, "1000.00").await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let token = admin.token.clone();

    // 128 at once through the standby: good transfers, overdrafts, bad amounts and one without
    // credentials, each keyed.
    let body = |i: usize| {
        let amount = match i % 4 {
            0 | 1 => "0.01",
            2 => "5000.00",
            _ => "-1",
        };
        serde_json::json!({"type": "internal", "source_account_id": rich, "destination_account_id": poor, "amount": amount})
    };
    let requests: Vec<_> = (0..128)
        .map(|i| {
            let (http, base, token, body) = (http.clone(), on_standby.clone(), token.clone(), body(i));
            tokio::spawn(async move {
                let token = (i != 7).then_some(token);
                raw_transfer(&http, &base, token.as_deref(), &format!("batched-{i}"), &body).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.expect("request"));
    }
    for (i, (status, _, answer)) in answers.iter().enumerate() {
        let expected = match (i, i % 4) {
            (7, _) => (401, "UNAUTHENTICATED"),
            (_, 0 | 1) => (201, ""),
            (_, 2) => (422, "INSUFFICIENT_FUNDS"),
            _ => (400, "VALIDATION_ERROR"),
        };
        assert_eq!((*status, answer["code"].as_str().unwrap_or("")), expected, "request {i}: {answer}");
    }
    // Each answer is the one its own key gets from the owner directly: same status, same
    // headers (content type, location, retry hints), same body.
    for (i, (status, headers, answer)) in answers.iter().enumerate() {
        if i == 7 {
            continue;
        }
        let (direct_status, mut direct_headers, direct) =
            raw_transfer(&http, &on_owner, Some(&token), &format!("batched-{i}"), &body(i)).await;
        let replayed = ("idempotent-replayed".to_owned(), "true".to_owned());
        if direct_status == 201 {
            assert!(direct_headers.contains(&replayed), "request {i} replays: {direct_headers:?}");
            direct_headers.retain(|header| *header != replayed);
        }
        assert_eq!((*status, headers), (direct_status, &direct_headers), "request {i}");
        if *status == 201 {
            assert_eq!(answer, &direct, "request {i} replays to the same transfer");
        } else {
            // (A replayed failure's detail names the transfer instead of the first reason.)
            assert_eq!(answer["code"], direct["code"], "request {i}");
        }
    }
    // The money moved once per acknowledged transfer.
    let acknowledged = answers.iter().filter(|(status, _, _)| *status == 201).count();
    assert_eq!(acknowledged, 64);
    assert_eq!(admin.balance(&poor).await.parse::<Decimal>().unwrap(), Decimal::new(64, 2));

    // They travelled in batches, fewer than the requests.
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let text = reqwest::get(format!("{on_standby}/metrics")).await.unwrap().text().await.unwrap();
    let (forwarded, batches) = (
        metric(&text, "tally_cluster_forwarded_requests_total"),
        metric(&text, "tally_cluster_forwarded_batches_total"),
    );
    assert!(forwarded >= 128.0, "{text}");
    assert!(batches > 0.0 && batches < 128.0, "128 requests in {batches} batches");

    // A batch that is not a peer's is refused and runs nothing: no proof, a proof under
    // another secret, or sent to a node that does not own the shards.
    let forged = |base: &str, proof: &str| {
        http.post(format!("{base}/internal/cluster/forwarded"))
            .header("Tally-Cluster-Auth", proof.to_owned())
            .header("Tally-Forwarded-By", "b")
            .header("Content-Type", "application/cbor")
            .body(vec![0x80_u8])
            .send()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let bad_proof = format!("t={now},v1={}", "ab".repeat(32));
    assert_eq!(forged(&on_owner, "").await.unwrap().status(), 401);
    assert_eq!(forged(&on_owner, &bad_proof).await.unwrap().status(), 401);
    assert_eq!(forged(&on_standby, &bad_proof).await.unwrap().status(), 503);
    // A proof made with the secret over another body, or too old, is no proof either; with a
    // good one, a body that is no batch is refused as such; too large or not a POST, refused
    // before anything is read.
    let signed = |t: u64, body: &[u8]| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
        let mut text = format!("{t}.b.batch.").into_bytes();
        text.extend_from_slice(body);
        let tag = aws_lc_rs::hmac::sign(&key, &text);
        let hex: String = tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
        format!("t={t},v1={hex}")
    };
    assert_eq!(forged(&on_owner, &signed(now, b"another body")).await.unwrap().status(), 401);
    assert_eq!(forged(&on_owner, &signed(now - 3_600, &[0x80])).await.unwrap().status(), 401);
    let not_a_batch = http
        .post(format!("{on_owner}/internal/cluster/forwarded"))
        .header("Tally-Cluster-Auth", signed(now, b"not cbor"))
        .header("Tally-Forwarded-By", "b")
        .body(b"not cbor".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(not_a_batch.status(), 400);
    assert_eq!(not_a_batch.headers()["content-type"], "application/problem+json");
    let get = http.get(format!("{on_owner}/internal/cluster/forwarded")).send().await.unwrap();
    assert_eq!(get.status(), 405);
    let huge = http
        .post(format!("{on_owner}/internal/cluster/forwarded"))
        .header("Tally-Cluster-Auth", bad_proof.clone())
        .header("Tally-Forwarded-By", "b")
        .body(vec![0_u8; 4 * 1024 * 1024])
        .send()
        .await;
    // Refused with 413, or the connection closed while the rest of the body was still coming
    // (the owner stops reading at its bound).
    assert!(huge.map_or(true, |response| response.status() == 413));
    assert_eq!(admin.balance(&poor).await.parse::<Decimal>().unwrap(), Decimal::new(64, 2));
}
