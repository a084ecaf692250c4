//! The operators' page `/ops` in a real headless Chromium against a real `tally serve` on
//! Postgres, while transfers run and injected panics restart account actors: the page logs in
//! with the token from its URL fragment, polls the health API, and draws its charts with data
//! (transfers/s, latency, active actors, restarts), the worst-actors table and the cluster
//! section (a cluster of one: node `local` owning every shard, no move). The rendered DOM
//! is asserted on; a screenshot is kept as a CI artifact (`TALLY_ARTIFACTS_DIR`, default
//! `target/ci-artifacts/ops.png`).
//!
//! The browser is `TALLY_CHROMIUM` (`scripts/test` installs Debian's `chromium` and sets it),
//! else `chromium` on the usual paths; without one the test fails and says so.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tally_tests::browser::{HEADLESS_FLAGS, artifacts_dir, chromium};
use tally_tests::postgres;
use tally_tests::server::{Client, TallyServer};

/// Virtual time the page runs for: about eight polls at one a second. Chromium's virtual time
/// runs timers at once while no request is pending, so this takes about a second of real time.
const VIRTUAL_TIME_BUDGET_MS: u32 = 8_000;

/// Real time a browser run may take before it is killed and the test fails.
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);

/// Transfers pushed before the page opens, so counters and actors are non-zero from its
/// first poll.
const BURST: usize = 200;

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or `--screenshot=...`) and
/// returns its standard output.
fn run_browser(browser: &Path, url: &str, action: &str) -> String {
    let profile = std::env::temp_dir().join(format!("tally-chromium-{}", uuid::Uuid::new_v4().simple()));
    let mut child = Command::new(browser)
        .args(HEADLESS_FLAGS)
        .args([
            "--window-size=1400,1900",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"),
            action,
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("start {}: {error}", browser.display()));
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > BROWSER_DEADLINE {
            let _ = child.kill();
            panic!("chromium did not finish {action} within {BROWSER_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(output.status.success(), "chromium {action} failed: {:?}", output.status);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The opening tag of the element with this id.
fn tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let needle = format!("id=\"{id}\"");
    let at = dom.find(&needle).unwrap_or_else(|| panic!("no element #{id} in the page"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

fn attribute(tag: &str, name: &str) -> String {
    let needle = format!("{name}=\"");
    let at = tag.find(&needle).unwrap_or_else(|| panic!("no {name} in {tag}")) + needle.len();
    tag[at..at + tag[at..].find('"').unwrap()].to_owned()
}

fn number(tag: &str, name: &str) -> f64 {
    attribute(tag, name).parse().unwrap_or_else(|_| panic!("{name} is not a number in {tag}"))
}

/// The element's markup from its opening tag to the end of the enclosing `</figure>`.
fn figure<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap();
    &dom[start..start + dom[start..].find("</figure>").unwrap()]
}

/// The text of the element with this id (no nested elements).
fn text<'a>(dom: &'a str, id: &str) -> &'a str {
    let opening = tag(dom, id);
    let at = dom.find(opening).unwrap() + opening.len();
    &dom[at..at + dom[at..].find('<').unwrap()]
}

fn transfer(accounts: &[String], i: usize) -> serde_json::Value {
    json!({"type": "internal", "source_account_id": accounts[i % accounts.len()],
           "destination_account_id": accounts[(i + 1) % accounts.len()], "amount": "0.01"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_page_in_headless_chromium_draws_live_charts_and_the_worst_actors() {
    let browser = chromium();
    let database = postgres::fresh_database("ops_page").await;
    // Every 40th account handler panics and is restarted (never quarantined): restarts and
    // the worst-actors table have something to show.
    let mut server = TallyServer::start(
        &database,
        &[("TALLY_FAULT_PANIC_EVERY", "account=40"), ("TALLY_QUARANTINE_RESTARTS", "1000000")],
    )
    .await;
    let admin = Client::admin(&server).await;
    // A webhook receiver on loopback answering 200: the webhook chart and tiles have
    // deliveries to show.
    let delivered = Arc::new(AtomicUsize::new(0));
    let hook = {
        let delivered = delivered.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                delivered.fetch_add(1, Ordering::Relaxed);
                async { axum::http::StatusCode::OK }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });
    let (status, created) = admin.post("/v1/admin/webhooks", json!({"url": hook_url, "events": ["*"]})).await;
    assert_eq!(status, 201, "{created}");
    let mut accounts = Vec::new();
    for _ in 0..4 {
        let account = admin.open_account("EUR").await;
        admin.fund(&account, "1000.00").await;
        accounts.push(account);
    }
    let burst = futures::future::join_all((0..BURST).map(|i| {
        let admin = admin.clone();
        let body = transfer(&accounts, i);
        async move { admin.send(reqwest::Method::POST, "/v1/transfers", Some(body), None).await.unwrap().0 }
    }))
    .await;
    let completed = burst.iter().filter(|status| **status == 201).count();
    assert!(completed > BURST / 2, "most of the burst completes despite the panics: {burst:?}");

    // Keep transfers running while the browser polls, so rates between polls are non-zero.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (admin, accounts, stop, sent) = (admin.clone(), accounts.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = admin.send(reqwest::Method::POST, "/v1/transfers", Some(transfer(&accounts, i)), None).await;
                i += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let url = format!("{}/ops#token={}", server.base_url(), admin.token);
    let screenshot = artifacts_dir().join("ops.png");
    let _ = std::fs::remove_file(&screenshot);
    let (dom, _) = {
        let (browser, url, shot) = (browser.clone(), url.clone(), format!("--screenshot={}", screenshot.display()));
        tokio::task::spawn_blocking(move || {
            let dom = run_browser(&browser, &url, "--dump-dom");
            let shot = run_browser(&browser, &url, &shot);
            (dom, shot)
        })
        .await
        .unwrap()
    };
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 0, "transfers ran while the page polled");

    // Logged in from the fragment and polling.
    let status = tag(&dom, "status");
    assert_eq!(attribute(status, "data-state"), "live", "the page is live: {status}");
    let body_at = dom.find("<body").unwrap();
    let body = &dom[body_at..body_at + dom[body_at..].find('>').unwrap() + 1];
    assert!(number(body, "data-polls") >= 3.0, "several polls: {body}");
    assert!(!dom.contains("#token="), "the token left the address bar");

    // Every chart has a line over several samples.
    for chart in [
        "transfers",
        "latency",
        "errors",
        "actors",
        "mailbox",
        "restarts",
        "journal",
        "flush",
        "sagas",
        "webhooks",
        "webhook-backlog",
    ] {
        let id = format!("chart-{chart}");
        assert!(number(tag(&dom, &id), "data-points") >= 3.0, "{id} has samples: {}", tag(&dom, &id));
        let markup = figure(&dom, &id);
        assert!(markup.contains("<polyline"), "{id} draws a line: {markup}");
    }
    // Where transfers ran, the charts show it.
    for chart in ["transfers", "latency", "actors", "restarts", "webhooks"] {
        let id = format!("chart-{chart}");
        assert!(number(tag(&dom, &id), "data-nonzero") > 0.0, "{id} shows non-zero data: {}", figure(&dom, &id));
    }
    let completed_total: f64 = text(&dom, "stat-transfers-total").trim().parse().unwrap();
    assert!(completed_total >= completed as f64, "the tile counts the completed transfers: {completed_total}");
    let active: f64 = text(&dom, "stat-actors-active").trim().parse().unwrap();
    assert!(active > 0.0, "actors are active: {active}");
    // The webhook tiles show figures, not the placeholder.
    assert!(delivered.load(Ordering::Relaxed) > 0, "the receiver got deliveries");
    for tile in ["stat-webhooks-pending", "stat-webhooks-failed", "stat-webhooks-oldest"] {
        let shown = text(&dom, tile).trim();
        assert!(shown.parse::<f64>().is_ok(), "{tile} shows a number: {shown:?}");
    }

    // The worst actors: account actors that restarted under the injected panics.
    let table = &dom[dom.find("id=\"worst\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(table.contains("<tr data-kind=\"account\""), "the worst-actors table lists accounts: {table}");

    // The cluster section: a server without TALLY_NODE_ID is a cluster of one, node `local`
    // owning every shard, and nothing moved while the page watched.
    let (status, view) = admin.get("/v1/admin/cluster").await;
    assert_eq!(status, 200, "{view}");
    let shards_total = view["shards_total"].as_u64().unwrap();
    assert!(shards_total > 0, "{view}");
    let cluster = tag(&dom, "cluster");
    assert!(number(cluster, "data-cluster-polls") >= 3.0, "the cluster view was polled: {cluster}");
    assert_eq!(attribute(cluster, "data-node-id"), "local", "{cluster}");
    assert_eq!(number(cluster, "data-shards-total"), shards_total as f64, "{cluster}");
    assert_eq!(number(cluster, "data-moves"), 0.0, "no shard moved: {cluster}");
    assert_eq!(number(cluster, "data-lease-takes"), 0.0, "a cluster of one takes no lease: {cluster}");
    assert_eq!(text(&dom, "cluster-stat-node").trim(), "local");
    assert_eq!(text(&dom, "cluster-stat-nodes-alive").trim(), "1 / 1");
    assert_eq!(text(&dom, "cluster-stat-shards").trim(), shards_total.to_string());
    assert_eq!(text(&dom, "cluster-stat-moves").trim(), "0");
    assert_eq!(text(&dom, "cluster-stat-lease-takes").trim(), "0");
    let nodes = &dom[dom.find("id=\"cluster-nodes\"").unwrap()..];
    let nodes = &nodes[..nodes.find("</table>").unwrap()];
    assert_eq!(nodes.matches("<tr data-node=").count(), 1, "one node: {nodes}");
    let local = &nodes[nodes.find("<tr data-node=\"local\"").unwrap_or_else(|| panic!("node local: {nodes}"))..];
    let local = &local[..local.find("</tr>").unwrap()];
    assert_eq!(attribute(local, "data-alive"), "true", "{local}");
    assert_eq!(number(local, "data-shards-owned"), shards_total as f64, "local owns every shard: {local}");
    let every_shard = if shards_total == 1 { "0".to_owned() } else { format!("0–{}", shards_total - 1) };
    assert!(local.contains(&format!("<td>{every_shard}</td>")), "its shards {every_shard}: {local}");
    let moves = &dom[dom.find("id=\"cluster-moves\"").unwrap()..];
    let moves = &moves[..moves.find("</table>").unwrap()];
    assert!(!moves.contains("data-from="), "no move listed: {moves}");
    assert!(moves.contains("no shard has moved"), "{moves}");

    let png = std::fs::read(&screenshot).unwrap_or_else(|error| panic!("screenshot {}: {error}", screenshot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is a PNG");
    assert!(png.len() > 20_000, "the screenshot shows a rendered page ({} bytes)", png.len());
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_page_says_clearly_when_the_token_is_invalid_or_lacks_ops_read() {
    let browser = chromium();
    let database = postgres::fresh_database("ops_page_denied").await;
    let mut server = TallyServer::start(&database, &[]).await;
    let base = server.base_url();
    let (email, password) = ("viewer@tally.test", "Vi3wer!password");
    let registered = reqwest::Client::new()
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": email, "password": password, "first_name": "Vi", "last_name": "Ewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let customer = Client::login(&base, email, password).await;

    let cases = [
        ("not-a-token".to_owned(), "login", "token is not valid"),
        (customer.token.clone(), "denied", "needs the ops:read permission"),
    ];
    for (token, state, message) in cases {
        let url = format!("{base}/ops#token={token}");
        let dom = {
            let browser = browser.clone();
            tokio::task::spawn_blocking(move || run_browser(&browser, &url, "--dump-dom")).await.unwrap()
        };
        assert_eq!(attribute(tag(&dom, "status"), "data-state"), state, "{}", tag(&dom, "status"));
        assert!(text(&dom, "login-message").contains(message), "{}", text(&dom, "login-message"));
        assert!(!tag(&dom, "login").contains("hidden"), "the login form is offered again");
        assert!(!dom.contains("data-polls"), "no data was shown");
    }
    server.kill();
}
