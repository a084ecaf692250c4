//! Operations over a real socket: an injected actor panic and the quarantine it leads to show
//! in `/v1/admin/actors`, an operator releases the quarantine (`ops:write`) and the account
//! works again; the health API's `http` section counts requests by status and latency; `/ops`
//! and `/admin` are self-contained HTML pages.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tally_actors::{ActorKind, EngineConfig};
use tally_tests::http::{TestServer, TestUser};
use tally_tests::on_both_stores;

on_both_stores!(
    an_injected_panic_quarantines_the_account_health_shows_it_and_release_brings_it_back,
    a_transfer_refused_as_unavailable_gives_its_key_back_so_its_retry_runs_once_the_account_is_back,
    release_refuses_bad_input_and_callers_without_ops_write_and_changes_nothing,
    the_health_api_counts_requests_by_status_and_latency_bucket,
    the_ops_page_is_one_self_contained_html_document,
    a_server_that_is_not_a_cluster_node_answers_the_cluster_view_as_a_cluster_of_one,
    the_admin_console_is_one_self_contained_html_document_under_a_hash_based_policy,
    login_sessions_show_as_session_actors_in_the_health_api,
);

fn kind<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == name)
        .unwrap_or_else(|| panic!("{name} in {health}"))
}

fn transfer(source: &str, destination: &str, amount: &str) -> Value {
    json!({"type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": amount})
}

async fn an_injected_panic_quarantines_the_account_health_shows_it_and_release_brings_it_back(server: TestServer) {
    let ops = server.admin(&["ops:read", "ops:write"]).await;
    let user = server.user().await;
    let source = server.open_account(&user, "EUR").await;
    let destination = server.open_account(&user, "EUR").await;
    server.fund(&source, dec!(100)).await;
    let health = server.get("/v1/admin/actors", Some(&ops.token)).await;
    health.assert_status(200);
    assert_eq!(kind(&health.body, "account")["quarantined"], 0, "{}", health.text);
    assert!(kind(&health.body, "transfer_saga").is_object(), "sagas are a kind of their own");

    // Exactly as many panics as quarantine an actor: the transfer's first step (the hold at
    // the source) panics, is restarted and redelivered, and panics again until quarantine.
    let restarts = EngineConfig::default().actors.quarantine_restarts;
    server.engine.faults().arm_panics(ActorKind::Account, restarts);
    let refused = server.post("/v1/transfers", Some(&user.token), transfer(&source, &destination, "10.00")).await;
    refused.assert_problem(503, "QUARANTINED");
    assert_eq!(server.position(&source).await, (dec!(100), dec!(0)), "nothing held or moved");

    let health = server.get("/v1/admin/actors", Some(&ops.token)).await;
    let account = kind(&health.body, "account");
    assert_eq!(account["quarantined"], 1, "{}", health.text);
    assert!(account["restarts"].as_u64().unwrap() >= u64::from(restarts), "{}", health.text);
    let worst = &health.body["worst"][0];
    assert_eq!(worst["kind"], "account", "{}", health.text);
    assert_eq!(worst["id"], source.as_str(), "the quarantined actor leads the worst list: {}", health.text);
    assert_eq!(worst["quarantined"], true);
    assert!(worst["restarts"].as_u64().unwrap() >= u64::from(restarts));

    // Quarantined: new work is refused cleanly, before and after the faults are spent.
    let again = server.post("/v1/transfers", Some(&user.token), transfer(&source, &destination, "10.00")).await;
    again.assert_problem(503, "QUARANTINED");

    let released = server.post_empty(&format!("/v1/admin/actors/account/{source}/release"), Some(&ops.token)).await;
    released.assert_status(204);
    // A replayed release finds nothing to release and changes nothing.
    let replay = server.post_empty(&format!("/v1/admin/actors/account/{source}/release"), Some(&ops.token)).await;
    replay.assert_problem(404, "NOT_FOUND");

    let works = server.post("/v1/transfers", Some(&user.token), transfer(&source, &destination, "10.00")).await;
    works.assert_status(201);
    assert_eq!(works.body["status"], "completed", "{}", works.text);
    assert_eq!(server.position(&source).await, (dec!(90), dec!(0)));
    assert_eq!(server.position(&destination).await, (dec!(10), dec!(0)));

    let health = server.get("/v1/admin/actors", Some(&ops.token)).await;
    assert_eq!(kind(&health.body, "account")["quarantined"], 0, "{}", health.text);
    let listed = health.body["worst"].as_array().unwrap().iter().find(|actor| actor["id"] == source.as_str());
    assert!(listed.is_none_or(|actor| actor["quarantined"] == false), "{}", health.text);
}

/// A `503` says "retry later", and a client retries under the same `Idempotency-Key`: the
/// refused transfer (recorded `failed`, nothing moved) must not keep the key, or the retry
/// would replay the `503` for ever. Refused at either end: the hold at a quarantined source,
/// the credit at a quarantined destination (after the hold, which is released).
async fn a_transfer_refused_as_unavailable_gives_its_key_back_so_its_retry_runs_once_the_account_is_back(
    server: TestServer,
) {
    let ops = server.admin(&["ops:read", "ops:write", "aml:read", "aml:write"]).await;
    let user = server.user().await;
    let source = server.open_account(&user, "EUR").await;
    let destination = server.open_account(&user, "EUR").await;
    server.fund(&source, dec!(100)).await;
    // A refused try is not a payment: it must not count toward a velocity rule either.
    let rule = json!({"name": "one a minute", "kind": "velocity",
        "config": {"window_seconds": 600, "max_count": 1, "currency": "EUR"}, "action": "flag"});
    server.post("/v1/admin/aml/rules", Some(&ops.token), rule).await.assert_status(201);
    let flags = || async {
        let reply = server.get("/v1/admin/aml/flags/count", Some(&ops.token)).await;
        reply.assert_status(200);
        reply.body["count"].as_u64().unwrap()
    };

    for (round, (quarantined, key)) in
        [(&destination, "retry-after-credit-refused"), (&source, "retry-after-hold-refused")].into_iter().enumerate()
    {
        server.arm_quarantine(&user, quarantined).await;
        let body = transfer(&source, &destination, "10.00");
        for _ in 0..2 {
            let refused = server.post_keyed("/v1/transfers", Some(&user.token), key, body.clone()).await;
            assert_eq!(refused.status, 503, "{}", refused.text);
            assert!(
                ["OVERLOADED", "QUARANTINED"].contains(&refused.body["code"].as_str().unwrap()),
                "{}",
                refused.text
            );
        }
        let release = format!("/v1/admin/actors/account/{quarantined}/release");
        server.post_empty(&release, Some(&ops.token)).await.assert_status(204);

        let retried = server.post_keyed("/v1/transfers", Some(&user.token), key, body.clone()).await;
        retried.assert_status(201);
        assert_eq!(retried.body["status"], "completed", "{}", retried.text);
        // From here the key is the completed transfer's: a repeat replays it, moving nothing.
        let replayed = server.post_keyed("/v1/transfers", Some(&user.token), key, body.clone()).await;
        replayed.assert_status(201);
        assert_eq!(replayed.body["id"], retried.body["id"], "{}", replayed.text);
        let other_body =
            server.post_keyed("/v1/transfers", Some(&user.token), key, transfer(&source, &destination, "11.00")).await;
        other_body.assert_problem(409, "IDEMPOTENCY_KEY_REUSED");
        if round == 0 {
            // Two refused tries and the payment, each screened on the source: one payment, so
            // the rule (more than one a minute) never fired. (Round 1's tries come after a
            // payment, so they are flagged when screened, before they are refused.)
            assert_eq!(flags().await, 0, "refused tries did not count as payments");
        }
    }
    // Each key moved money once; arm_quarantine funded each quarantined account with 5.
    assert_eq!(server.position(&source).await, (dec!(85), dec!(0)));
    assert_eq!(server.position(&destination).await, (dec!(25), dec!(0)));
}

async fn release_refuses_bad_input_and_callers_without_ops_write_and_changes_nothing(server: TestServer) {
    let reader = server.admin(&["ops:read"]).await;
    let ops = server.admin(&["ops:read", "ops:write"]).await;
    let user = server.user().await;
    let account = server.open_account(&user, "EUR").await;
    server.arm_quarantine(&user, &account).await;
    let path = format!("/v1/admin/actors/account/{account}/release");

    server.post_empty(&path, None).await.assert_problem(401, "UNAUTHENTICATED");
    server.post_empty(&path, Some("not-a-token")).await.assert_problem(401, "UNAUTHENTICATED");
    server.post_empty(&path, Some(&reader.token)).await.assert_problem(403, "FORBIDDEN");
    server.post_empty(&path, Some(&user.token)).await.assert_problem(403, "FORBIDDEN");
    let bad_id = server.post_empty("/v1/admin/actors/account/not-a-uuid/release", Some(&ops.token)).await;
    bad_id.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(bad_id.error_fields(), vec!["id".to_owned()]);
    let oversized = format!("/v1/admin/actors/{}/{account}/release", "k".repeat(4_000));
    let unknown_kind = server.post_empty(&oversized, Some(&ops.token)).await;
    unknown_kind.assert_problem(404, "NOT_FOUND");
    assert!(unknown_kind.text.len() < 1_000, "the kind is not echoed whole: {}", unknown_kind.text);
    let saga = format!("/v1/admin/actors/transfer_saga/{account}/release");
    server.post_empty(&saga, Some(&ops.token)).await.assert_problem(404, "NOT_FOUND");
    let stranger = format!("/v1/admin/actors/account/{}/release", uuid::Uuid::new_v4());
    server.post_empty(&stranger, Some(&ops.token)).await.assert_problem(404, "NOT_FOUND");
    let get = server.get(&path, Some(&ops.token)).await;
    assert_eq!(get.status, 405, "{}", get.text);

    // None of that released anything.
    let health = server.get("/v1/admin/actors", Some(&reader.token)).await;
    assert_eq!(kind(&health.body, "account")["quarantined"], 1, "{}", health.text);
    server.post_empty(&path, Some(&ops.token)).await.assert_status(204);
}

async fn the_health_api_counts_requests_by_status_and_latency_bucket(server: TestServer) {
    let ops = server.admin(&["ops:read"]).await;
    let before = server.get("/v1/admin/actors", Some(&ops.token)).await;
    before.assert_status(200);
    let missing = format!("/v1/transfers/{}", uuid::Uuid::new_v4());
    for _ in 0..3 {
        server.get(&missing, Some(&ops.token)).await.assert_status(404);
    }
    let after = server.get("/v1/admin/actors", Some(&ops.token)).await;
    let http = |reply: &tally_tests::http::Reply, field: &str| reply.body["http"][field].as_u64().unwrap_or(0);
    let status =
        |reply: &tally_tests::http::Reply, code: &str| reply.body["http"]["by_status"][code].as_u64().unwrap_or(0);
    // Other tests in this process add to the same counters, so only lower bounds hold.
    assert!(status(&after, "404") >= status(&before, "404") + 3, "{}", after.text);
    assert!(http(&after, "client_errors_total") >= http(&before, "client_errors_total") + 3);
    assert!(http(&after, "requests_total") >= http(&before, "requests_total") + 4, "the three 404s and a poll");
    let buckets = after.body["http"]["latency_buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 17, "16 bounds and the overflow bucket");
    assert_eq!(buckets[0]["le_ms"], 0.1);
    assert!(buckets[16]["le_ms"].is_null());
    let by_status: u64 =
        after.body["http"]["by_status"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    let by_bucket: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    // One snapshot is not atomic across cells, but both sums read the same cells once each.
    assert!(by_status > 0 && by_bucket > 0);
    assert!(by_status.abs_diff(by_bucket) <= by_status / 10 + 50, "{by_status} vs {by_bucket}");

    server.get("/v1/admin/actors", None).await.assert_problem(401, "UNAUTHENTICATED");
    let user = server.user().await;
    server.get("/v1/admin/actors", Some(&user.token)).await.assert_problem(403, "FORBIDDEN");
}

async fn a_server_that_is_not_a_cluster_node_answers_the_cluster_view_as_a_cluster_of_one(server: TestServer) {
    let ops = server.admin(&["ops:read"]).await;
    let view = server.get("/v1/admin/cluster", Some(&ops.token)).await;
    view.assert_status(200);
    let body = &view.body;
    assert_eq!(body["node_id"], "local");
    let shards = body["shards"].as_array().unwrap();
    assert!(!shards.is_empty());
    assert_eq!(body["shards_total"].as_u64(), Some(shards.len() as u64));
    for (index, shard) in shards.iter().enumerate() {
        assert_eq!(shard["shard"].as_u64(), Some(index as u64));
        assert_eq!(
            (&shard["owner"], &shard["epoch"], &shard["expires_at"]),
            (&json!("local"), &json!(0), &Value::Null)
        );
    }
    let nodes = body["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["id"], "local");
    assert_eq!(nodes[0]["url"], Value::Null);
    assert_eq!(nodes[0]["alive"], true);
    assert_eq!(nodes[0]["shards_owned"].as_u64(), Some(shards.len() as u64));
    assert_eq!(nodes[0]["fenced_commits"], 0);
    assert!(nodes[0]["last_heartbeat_at"].as_str().unwrap().ends_with('Z'));

    server.get("/v1/admin/cluster", None).await.assert_problem(401, "UNAUTHENTICATED");
    let user = server.user().await;
    server.get("/v1/admin/cluster", Some(&user.token)).await.assert_problem(403, "FORBIDDEN");
}

async fn the_ops_page_is_one_self_contained_html_document(server: TestServer) {
    let page = server.get("/ops", None).await;
    page.assert_status(200);
    let header = |name: &str| page.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert!(header("content-security-policy").contains("default-src 'none'"));
    assert!(header("content-security-policy").contains("connect-src 'self'"));
    assert_eq!(header("cache-control"), "no-store");
    assert!(page.text.starts_with("<!doctype html>"));
    assert!(page.text.contains("<svg") || page.text.contains("createElementNS"), "draws its own charts");
    let without_namespace = page.text.replace("http://www.w3.org/2000/svg", "");
    assert!(!without_namespace.contains("http://") && !without_namespace.contains("https://"));
    assert_eq!(server.post_empty("/ops", None).await.status, 405);
}

async fn the_admin_console_is_one_self_contained_html_document_under_a_hash_based_policy(server: TestServer) {
    let page = server.get("/admin", None).await;
    page.assert_status(200);
    let header = |name: &str| page.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    let policy = header("content-security-policy");
    for directive in ["default-src 'none'", "connect-src 'self'", "form-action 'none'", "frame-ancestors 'none'"] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    // The one script and the one stylesheet are admitted by their hash, and nothing inline
    // besides: the hashes in the header are those of the page's own elements.
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
    let inner = |open: &str, close: &str| {
        let start = page.text.find(open).unwrap() + open.len();
        page.text[start..start + page.text[start..].find(close).unwrap()].to_owned()
    };
    for (element, directive) in
        [(inner("<script>", "</script>"), "script-src"), (inner("<style>", "</style>"), "style-src")]
    {
        let hash = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            tally_http::digest::sha256(element.as_bytes()),
        );
        assert!(
            policy.contains(&format!("{directive} 'sha256-{hash}'")),
            "{directive} admits the page's own element: {policy}"
        );
    }
    assert!(page.text.starts_with("<!doctype html>"));
    assert!(!page.text.contains("http://") && !page.text.contains("https://"), "nothing from elsewhere");
    assert!(page.text.contains("/v1/admin/transfers") && page.text.contains("/v1/auth/login"), "it uses the API");
    assert_eq!(server.post_empty("/admin", None).await.status, 405);
}

trait Quarantine {
    async fn arm_quarantine(&self, owner: &TestUser, account: &str);
}

impl Quarantine for TestServer {
    /// Drives `account`'s actor into quarantine with injected panics (through a transfer from
    /// it, which is refused).
    async fn arm_quarantine(&self, owner: &TestUser, account: &str) {
        let other = self.open_account(owner, "EUR").await;
        self.fund(account, dec!(5)).await;
        self.engine.faults().arm_panics(ActorKind::Account, EngineConfig::default().actors.quarantine_restarts);
        // The hold is the first step; it panics whether or not there is money.
        let reply = self.post("/v1/transfers", Some(&owner.token), transfer(account, &other, "1.00")).await;
        assert_eq!(reply.status, 503, "{}", reply.text);
    }
}

async fn login_sessions_show_as_session_actors_in_the_health_api(server: TestServer) {
    let ops = server.admin(&["ops:read"]).await;
    let health = || server.get("/v1/admin/actors", Some(&ops.token));
    let before = health().await;
    before.assert_status(200);
    let users = [server.user().await, server.user().await, server.user().await];
    // A session actor starts on the sessions' thread just after its login answers, so the
    // count may lag a request behind: wait for it, briefly.
    let mut during = health().await;
    for _ in 0..100 {
        if kind(&during.body, "session")["active"].as_i64().unwrap_or(0) >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        during = health().await;
    }
    let sessions = kind(&during.body, "session");
    assert!(sessions["active"].as_i64().unwrap() >= 4, "three users and the operator are logged in: {sessions}");
    let activations = |body: &Value| kind(body, "session")["activations"].as_u64().unwrap();
    assert_eq!(activations(&during.body) - activations(&before.body), 3, "one actor per login");

    server.post_empty("/v1/auth/logout", Some(&users[0].token)).await.assert_status(204);
    let after = health().await;
    let handled = |body: &Value| kind(body, "session")["handled"].as_u64().unwrap();
    assert!(handled(&after.body) > handled(&during.body), "the logout was a message the session actor handled");
    assert_eq!(kind(&after.body, "session")["mailbox_depth"], 0, "nothing left waiting: {}", after.text);
    server.shutdown().await;
}
