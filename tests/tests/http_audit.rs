//! The audit log: admin changes and security events become hash-chained entries (every admin
//! change in the transaction that makes it: identity writes, journal batches, pricing and AML
//! writes), listed with
//! filters and pages by `GET /v1/admin/audit`, anchored by `GET /v1/admin/audit/head`; the
//! chain holds under concurrent writers; and `tally verify` against a real server's database
//! passes, then fails naming the one row a test edits (or the deleted newest row).

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use sqlx::Connection;
use tally_http::auth::permissions::Action;
use tally_persistence::audit::verify_chain;
use tally_tests::http::{Reply, TestServer};
use tally_tests::on_both_stores;
use tally_tests::postgres;
use tally_tests::server::{ADMIN_EMAIL, ADMIN_PASSWORD, Client, TallyServer, tally_verify};

on_both_stores!(
    admin_changes_and_security_events_are_recorded_with_actor_target_and_request,
    the_listing_filters_and_pages_and_refuses_bad_input,
    the_chain_links_every_entry_and_the_head_names_the_newest,
    concurrent_writers_keep_one_unbroken_chain,
    engine_changes_are_audited_with_the_change_and_refused_ones_not_at_all,
    an_audit_append_that_fails_takes_the_change_with_it,
);

async fn audit(server: &TestServer, token: &str, query: &str) -> Reply {
    let reply = server.get(&format!("/v1/admin/audit{query}"), Some(token)).await;
    reply.assert_status(200);
    reply
}

fn items(reply: &Reply) -> Vec<Value> {
    reply.body["items"].as_array().unwrap().clone()
}

fn entry<'a>(entries: &'a [Value], action: &str) -> &'a Value {
    entries.iter().find(|entry| entry["action"] == action).unwrap_or_else(|| panic!("no {action} entry"))
}

async fn admin_changes_and_security_events_are_recorded_with_actor_target_and_request(server: TestServer) {
    let admin = server.admin(&Action::ALL.map(|action| action.as_str())).await;
    let customer = server.user().await;
    let account = server.open_account(&customer, "USD").await;
    server.fund(&account, dec!(100)).await;

    // Identity changes (audited in their transaction) ...
    let block = server
        .send(
            server
                .client
                .post(server.url(&format!("/v1/admin/users/{}/status", customer.user_id)))
                .bearer_auth(&admin.token)
                .header("x-request-id", "req-block-1")
                .json(&json!({"status": "blocked", "reason": "chargeback ring"})),
        )
        .await;
    block.assert_status(204);
    server
        .post(&format!("/v1/admin/users/{}/status", customer.user_id), Some(&admin.token), json!({"status": "active"}))
        .await
        .assert_status(204);
    // ... and changes made through the engine (audited in the change's own transaction).
    server
        .send_with(
            Method::PUT,
            "/v1/admin/fx-rates",
            Some(&admin.token),
            None,
            Some(json!({"from": "USD", "to": "EUR", "rate": "0.9"})),
        )
        .await
        .assert_status(204);
    let credit = server
        .post_keyed(
            "/v1/admin/adjustments",
            Some(&admin.token),
            "adj-1",
            json!({"type": "admin_credit", "account_id": account, "amount": "5.00", "purpose": "goodwill", "reference": "r-1"}),
        )
        .await;
    credit.assert_status(201);
    let transfer = credit.str("id");
    let rule = server
        .post(
            "/v1/admin/fee-rules",
            Some(&admin.token),
            json!({"name": "f", "transfer_type": "internal", "currency": "USD", "kind": "flat", "flat_amount": "1"}),
        )
        .await;
    rule.assert_status(201);
    // A refused change writes nothing.
    server
        .post(
            &format!("/v1/admin/accounts/{account}/status"),
            Some(&admin.token),
            json!({"action": "fly", "reason": "x"}),
        )
        .await
        .assert_problem(400, "VALIDATION_ERROR");

    let log = items(&audit(&server, &admin.token, "?limit=200").await);
    let block = entry(&log, "user.block");
    assert_eq!(block["actor"], json!({"kind": "user", "id": admin.user_id}));
    assert_eq!(block["target"], json!({"type": "user", "id": customer.user_id}));
    assert_eq!(block["request_id"], "req-block-1");
    assert_eq!(block["ip"], "127.0.0.1");
    assert_eq!(block["details"]["reason"], "chargeback ring");
    assert!(log.iter().any(|e| e["action"] == "user.unblock"));
    // Blocking ended the customer's session: a security event of theirs, by the admin.
    let ended = entry(&log, "auth.session_ended");
    assert_eq!(ended["actor"]["id"], admin.user_id);
    assert_eq!(ended["details"]["reason"], "user_blocked");

    let fx = entry(&log, "fx_rate.set");
    assert_eq!(fx["target"], json!({"type": "fx_rate", "id": "USD/EUR"}));
    assert_eq!(fx["details"]["request"], json!({"from": "USD", "to": "EUR", "rate": "0.9"}));
    assert_eq!(fx["details"]["status"], 204);
    let adjustment = entry(&log, "adjustment.create");
    assert_eq!(adjustment["target"], json!({"type": "transfer", "id": transfer}));
    assert_eq!(adjustment["details"]["request"]["amount"], "5.00");
    assert_eq!(entry(&log, "fee_rule.create")["target"]["id"], rule.str("id"));
    assert!(!log.iter().any(|e| e["action"] == "account.status"), "the refused change is not recorded");
    // Security events: logins, with no secrets anywhere.
    assert!(log.iter().any(|e| e["action"] == "auth.login_succeeded" && e["actor"]["id"] == customer.user_id));
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(tally_tests::http::PASSWORD), "no password in the log");
    assert!(!text.contains(&admin.token) && !text.contains(&admin.refresh_token), "no token in the log");
    server.shutdown().await;
}

async fn the_listing_filters_and_pages_and_refuses_bad_input(server: TestServer) {
    let reader = server.admin(&["audit:read"]).await;
    let manager = server.admin(&["admin_users:manage", "users:block"]).await;
    let target = server.user().await;
    for n in 0..3 {
        server
            .post("/v1/admin/roles", Some(&manager.token), json!({"name": format!("role {n}"), "actions": []}))
            .await
            .assert_status(201);
    }
    server
        .post(&format!("/v1/admin/users/{}/status", target.user_id), Some(&manager.token), json!({"status": "blocked"}))
        .await
        .assert_status(204);

    let by_actor = items(&audit(&server, &reader.token, &format!("?actor_id={}", manager.user_id)).await);
    assert!(by_actor.len() >= 4 && by_actor.iter().all(|e| e["actor"]["id"] == manager.user_id), "{by_actor:?}");
    let roles = items(&audit(&server, &reader.token, "?action=role.create").await);
    assert_eq!(roles.len(), 3);
    assert_eq!(roles[0]["details"]["name"], "role 2", "newest first");
    let about = items(&audit(&server, &reader.token, &format!("?target_id={}", target.user_id)).await);
    assert!(about.iter().any(|e| e["action"] == "user.block"));
    assert!(about.iter().all(|e| e["target"]["id"] == target.user_id));
    // Time bounds: `from` inclusive, `to` exclusive; dates are midnight UTC.
    assert!(items(&audit(&server, &reader.token, "?to=2000-01-01").await).is_empty());
    assert_eq!(items(&audit(&server, &reader.token, "?action=role.create&from=2000-01-01").await).len(), 3);
    let newest_at = roles[0]["at"].as_str().unwrap().to_owned();
    let from_newest = items(
        &audit(&server, &reader.token, &format!("?action=role.create&from={}", newest_at.replace('+', "%2B"))).await,
    );
    assert_eq!(from_newest.len(), 1, "{from_newest:?}");

    // Pages of one walk the same entries as one page.
    let all = items(&audit(&server, &reader.token, "?limit=200").await);
    let mut walked = Vec::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let page = audit(&server, &reader.token, &query).await;
        walked.extend(items(&page).into_iter().map(|e| e["seq"].clone()));
        match page.body["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(walked, all.iter().map(|e| e["seq"].clone()).collect::<Vec<_>>());

    for bad in [
        "?limit=0",
        "?limit=500",
        "?cursor=zzz",
        "?from=yesterday",
        "?to=2026-13-01",
        "?from=2026-02-01&to=2026-01-01",
        "?actor=someone",
        "?action=",
        "?action=%00",
        &format!("?target_id={}", "x".repeat(129)),
    ] {
        server.get(&format!("/v1/admin/audit{bad}"), Some(&reader.token)).await.assert_problem(400, "VALIDATION_ERROR");
    }
    server.shutdown().await;
}

async fn the_chain_links_every_entry_and_the_head_names_the_newest(server: TestServer) {
    let admin = server.admin(&Action::ALL.map(|action| action.as_str())).await;
    for n in 0..3 {
        server.post("/v1/admin/roles", Some(&admin.token), json!({"name": format!("r{n}"), "actions": []})).await;
    }
    let log = items(&audit(&server, &admin.token, "?limit=200").await);
    // Newest first: each entry's prev_hash is the next (older) one's hash; seqs have no gap.
    for pair in log.windows(2) {
        assert_eq!(pair[0]["prev_hash"], pair[1]["hash"]);
        assert_eq!(pair[0]["seq"].as_u64().unwrap(), pair[1]["seq"].as_u64().unwrap() + 1);
    }
    let oldest = log.last().unwrap();
    assert_eq!(oldest["seq"], 1);
    assert_eq!(oldest["prev_hash"], "0".repeat(64));
    let head = server.get("/v1/admin/audit/head", Some(&admin.token)).await;
    head.assert_status(200);
    // The ledger's chains: every shard that committed has a head, and they sum up.
    let shards = head.body["ledger"]["shards"].as_array().unwrap();
    assert!(!shards.is_empty(), "the ledger chain has a head: {}", head.text);
    let seqs: u64 = shards.iter().map(|shard| shard["seq"].as_u64().unwrap()).sum();
    assert_eq!(head.body["ledger"]["seq"].as_u64().unwrap(), seqs);
    assert_eq!(head.body["ledger"]["hash"].as_str().unwrap().len(), 64);
    assert_eq!(head.body["audit"], json!({"seq": log[0]["seq"], "hash": log[0]["hash"]}));
    let report = verify_chain(server.state.identity().audit.as_ref()).await.unwrap();
    assert_eq!(report.first_break, None);
    assert_eq!(report.entries, log.len() as u64);
    server.get("/v1/admin/audit/head", None).await.assert_problem(401, "UNAUTHENTICATED");
    let customer = server.user().await;
    server.get("/v1/admin/audit/head", Some(&customer.token)).await.assert_problem(403, "FORBIDDEN");
    server.shutdown().await;
}

async fn concurrent_writers_keep_one_unbroken_chain(server: TestServer) {
    let admin = server.admin(&Action::ALL.map(|action| action.as_str())).await;
    let users = futures::future::join_all((0..6).map(|_| server.user())).await;
    // Roles, blocks, profile edits, logins and failed logins at once: every writer queues on
    // the head, and the chain comes out whole.
    let mut work = Vec::new();
    for (n, user) in users.iter().enumerate() {
        let (server, admin) = (&server, &admin);
        work.push(Box::pin(async move {
            let role =
                server.post("/v1/admin/roles", Some(&admin.token), json!({"name": format!("c{n}"), "actions": []}));
            let profile = server.patch("/v1/users/me", Some(&user.token), json!({"first_name": format!("N{n}")}));
            let login = server.login(&user.email, tally_tests::http::PASSWORD);
            let failed = server.login(&user.email, "Wr0ng!password");
            let (role, profile, login, failed) = tokio::join!(role, profile, login, failed);
            role.assert_status(201);
            profile.assert_status(200);
            login.assert_status(200);
            failed.assert_problem(401, "INVALID_CREDENTIALS");
        }));
    }
    futures::future::join_all(work).await;
    // The failed logins' entries are written in the background: wait for all six.
    for _ in 0..200 {
        if items(&audit(&server, &admin.token, "?action=auth.login_failed").await).len() == 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(items(&audit(&server, &admin.token, "?action=auth.login_failed").await).len(), 6);
    let report = verify_chain(server.state.identity().audit.as_ref()).await.unwrap();
    assert_eq!(report.first_break, None, "{report:?}");
    let log = items(&audit(&server, &admin.token, "?limit=200").await);
    assert_eq!(report.entries, log.len() as u64);
    assert_eq!(log[0]["seq"].as_u64().unwrap(), report.entries, "seqs run 1..=n without gaps");
    server.shutdown().await;
}

/// Sends `request` with the request id `id` and answers the reply.
async fn with_id(server: &TestServer, id: &str, request: reqwest::RequestBuilder) -> Reply {
    server.send(request.header("x-request-id", id)).await
}

/// The entries of `action` on `target`.
fn entries_of<'a>(log: &'a [Value], action: &str, target: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["action"] == action && e["target"]["id"] == target).collect()
}

/// The one entry the request `id` wrote, checked against who did what to which.
fn written_by<'a>(log: &'a [Value], id: &str, admin: &str, action: &str, target: (&str, &str)) -> &'a Value {
    let found: Vec<&Value> = log.iter().filter(|e| e["request_id"] == id).collect();
    assert_eq!(found.len(), 1, "request {id} wrote one entry: {found:?}");
    let entry = found[0];
    assert_eq!(entry["actor"], json!({"kind": "user", "id": admin}), "{id}");
    assert_eq!(entry["action"], action, "{id}");
    assert_eq!(entry["target"], json!({"type": target.0, "id": target.1}), "{id}");
    entry
}

fn external(source: &str, amount: &str) -> Value {
    json!({"type": "external", "source_account_id": source, "beneficiary": {"name": "Ada", "iban": "GB82WEST12345698765432"}, "amount": amount})
}

/// Every admin change the engine makes (journal routes: adjustments, pending-transfer
/// decisions, account open and status; pricing and AML writes) is recorded with its actor,
/// action, target and request id once answered `2xx`; a refused change (not pending, a
/// conflict, a failed adjustment, an unknown rule) writes nothing; the chain verifies, in
/// process and with `tally verify` against the server's database.
async fn engine_changes_are_audited_with_the_change_and_refused_ones_not_at_all(server: TestServer) {
    let admin = server.admin(&Action::ALL.map(|action| action.as_str())).await;
    let me = admin.user_id.as_str();
    let customer = server.user().await;
    let account = server.open_account(&customer, "USD").await;
    server.fund(&account, dec!(100)).await;
    let bearer = |request: reqwest::RequestBuilder| request.bearer_auth(&admin.token);
    let url = |path: &str| server.url(path);

    // Journal routes: three pending transfers, executed, rejected and cancelled.
    let mut pending = Vec::new();
    for amount in ["10", "20", "30"] {
        let reply = server.post("/v1/transfers", Some(&customer.token), external(&account, amount)).await;
        reply.assert_status(202);
        pending.push(reply.str("id"));
    }
    for (n, action) in ["execute", "reject", "cancel"].iter().enumerate() {
        let path = format!("/v1/admin/transfers/{}/{action}", pending[n]);
        with_id(&server, &format!("req-{action}"), bearer(server.client.post(url(&path)))).await.assert_status(204);
        // Decided once: a second decision is refused, and writes nothing.
        with_id(&server, &format!("req-{action}-again"), bearer(server.client.post(url(&path))))
            .await
            .assert_problem(409, "NOT_PENDING");
    }
    let unknown = format!("/v1/admin/transfers/{}/execute", uuid::Uuid::new_v4());
    with_id(&server, "req-execute-unknown", bearer(server.client.post(url(&unknown))))
        .await
        .assert_problem(404, "NOT_FOUND");

    // An adjustment, its keyed replay (answered 201 again, so recorded again), and a debit
    // beyond the balance (the transfer fails: nothing recorded).
    let body = json!({"type": "admin_credit", "account_id": account, "amount": "5.00", "purpose": "goodwill"});
    let credit = with_id(
        &server,
        "req-adjust",
        bearer(server.client.post(url("/v1/admin/adjustments"))).header("idempotency-key", "k-1").json(&body),
    )
    .await;
    credit.assert_status(201);
    let transfer = credit.str("id");
    let replay = with_id(
        &server,
        "req-adjust-replay",
        bearer(server.client.post(url("/v1/admin/adjustments"))).header("idempotency-key", "k-1").json(&body),
    )
    .await;
    replay.assert_status(201);
    assert_eq!(replay.str("id"), transfer);
    let too_much = json!({"type": "admin_debit", "account_id": account, "amount": "100000.00", "purpose": "x"});
    let refused = with_id(
        &server,
        "req-adjust-refused",
        bearer(server.client.post(url("/v1/admin/adjustments"))).json(&too_much),
    )
    .await;
    assert!(refused.status >= 400, "{}", refused.text);

    // Accounts: opened, blocked; closing one with money in it is refused.
    let opened = with_id(
        &server,
        "req-open",
        bearer(server.client.post(url("/v1/admin/accounts")))
            .json(&json!({"user_id": customer.user_id, "currency": "EUR"})),
    )
    .await;
    opened.assert_status(201);
    let opened = opened.str("id");
    let status = format!("/v1/admin/accounts/{account}/status");
    with_id(
        &server,
        "req-block",
        bearer(server.client.post(url(&status))).json(&json!({"action": "block", "reason": "r"})),
    )
    .await
    .assert_status(204);
    with_id(
        &server,
        "req-close",
        bearer(server.client.post(url(&status))).json(&json!({"action": "close", "reason": "r"})),
    )
    .await
    .assert_status(409);

    // Pricing: a rate, a fee rule, a clashing fee rule (refused), a transfer type.
    with_id(
        &server,
        "req-fx",
        bearer(server.client.put(url("/v1/admin/fx-rates"))).json(&json!({"from": "USD", "to": "GBP", "rate": "0.8"})),
    )
    .await
    .assert_status(204);
    with_id(
        &server,
        "req-fx-bad",
        bearer(server.client.put(url("/v1/admin/fx-rates"))).json(&json!({"from": "USD", "to": "GBP", "rate": "-1"})),
    )
    .await
    .assert_status(400);
    let fee = json!({"name": "f", "transfer_type": "internal", "currency": "USD", "kind": "flat", "flat_amount": "1"});
    let rule = with_id(&server, "req-fee", bearer(server.client.post(url("/v1/admin/fee-rules"))).json(&fee)).await;
    rule.assert_status(201);
    let fee_rule = rule.str("id");
    with_id(&server, "req-fee-clash", bearer(server.client.post(url("/v1/admin/fee-rules"))).json(&fee))
        .await
        .assert_status(409);
    with_id(
        &server,
        "req-type",
        bearer(server.client.put(url("/v1/admin/transfer-types/internal")))
            .json(&json!({"enabled": true, "execution_mode": "auto"})),
    )
    .await
    .assert_status(200);

    // AML: a rule made, replaced, deleted (twice: the second is refused); a flag resolved
    // (twice: the second is refused).
    let threshold = json!({"name": "big", "kind": "threshold", "config": {"amount": "1", "currency": "USD"}, "action": "flag", "enabled": true});
    let aml =
        with_id(&server, "req-aml", bearer(server.client.post(url("/v1/admin/aml/rules"))).json(&threshold)).await;
    aml.assert_status(201);
    let aml_rule = aml.str("id");
    let rule_path = format!("/v1/admin/aml/rules/{aml_rule}");
    with_id(&server, "req-aml-put", bearer(server.client.put(url(&rule_path))).json(&threshold))
        .await
        .assert_status(200);
    let payee = server.open_account(&server.user().await, "USD").await;
    let funded = server.open_account(&customer, "USD").await;
    server.fund(&funded, dec!(10)).await;
    let flagged = server
        .post(
            "/v1/transfers",
            Some(&customer.token),
            json!({"type": "internal", "source_account_id": funded, "destination_account_id": payee, "amount": "2"}),
        )
        .await;
    flagged.assert_status(201);
    let flags = server.get("/v1/admin/aml/flags?status=open", Some(&admin.token)).await;
    let flag = flags.body["items"][0]["id"].as_str().unwrap().to_owned();
    let resolve = format!("/v1/admin/aml/flags/{flag}/resolve");
    with_id(&server, "req-resolve", bearer(server.client.post(url(&resolve))).json(&json!({"action": "clear"})))
        .await
        .assert_status(204);
    with_id(&server, "req-resolve-again", bearer(server.client.post(url(&resolve))).json(&json!({"action": "clear"})))
        .await
        .assert_problem(409, "CONFLICT");
    with_id(&server, "req-aml-delete", bearer(server.client.delete(url(&rule_path)))).await.assert_status(204);
    with_id(&server, "req-aml-delete-again", bearer(server.client.delete(url(&rule_path))))
        .await
        .assert_problem(404, "NOT_FOUND");

    // Webhook subscriptions: made, edited, replayed, deleted (twice: the second is refused).
    let hook = with_id(
        &server,
        "req-hook",
        bearer(server.client.post(url("/v1/admin/webhooks")))
            .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]})),
    )
    .await;
    hook.assert_status(201);
    let hook = hook.str("id");
    let hook_path = format!("/v1/admin/webhooks/{hook}");
    with_id(&server, "req-hook-patch", bearer(server.client.patch(url(&hook_path))).json(&json!({"enabled": false})))
        .await
        .assert_status(200);
    with_id(
        &server,
        "req-hook-replay",
        bearer(server.client.post(url(&format!("{hook_path}/replay")))).json(&json!({"after_seq": 0})),
    )
    .await
    .assert_status(202);
    with_id(&server, "req-hook-delete", bearer(server.client.delete(url(&hook_path)))).await.assert_status(204);
    with_id(&server, "req-hook-delete-again", bearer(server.client.delete(url(&hook_path))))
        .await
        .assert_problem(404, "NOT_FOUND");

    let log = items(&audit(&server, &admin.token, "?limit=200").await);
    let made = written_by(&log, "req-hook", me, "webhook.create", ("webhook", &hook));
    assert_eq!(made["details"]["status"], 201);
    assert!(!made.to_string().contains("whsec_"), "the secret is never in the log: {made}");
    written_by(&log, "req-hook-patch", me, "webhook.update", ("webhook", &hook));
    written_by(&log, "req-hook-replay", me, "webhook.replay", ("webhook", &hook));
    written_by(&log, "req-hook-delete", me, "webhook.delete", ("webhook", &hook));
    assert!(!log.iter().any(|e| e["request_id"] == "req-hook-delete-again"), "the refused delete wrote an entry");
    for (n, (action, request)) in
        [("transfer.execute", "req-execute"), ("transfer.reject", "req-reject"), ("transfer.cancel", "req-cancel")]
            .into_iter()
            .enumerate()
    {
        let entry = written_by(&log, request, me, action, ("transfer", &pending[n]));
        assert_eq!(entry["details"]["route"], format!("/v1/admin/transfers/{{id}}/{}", &request[4..]));
        // An execution's entry is committed with its outcome, which may be `failed`: no status.
        let status = if action == "transfer.execute" { Value::Null } else { json!(204) };
        assert_eq!(entry["details"]["status"], status);
        assert_eq!(entries_of(&log, action, &pending[n]).len(), 1, "the refused second {action} wrote nothing");
    }
    let adjustment = written_by(&log, "req-adjust", me, "adjustment.create", ("transfer", &transfer));
    assert_eq!(adjustment["details"]["request"]["amount"], "5.00");
    assert_eq!(adjustment["details"]["method"], "POST");
    written_by(&log, "req-adjust-replay", me, "adjustment.create", ("transfer", &transfer));
    written_by(&log, "req-open", me, "account.open", ("account", &opened));
    let block = written_by(&log, "req-block", me, "account.status", ("account", &account));
    assert_eq!(block["details"]["request"]["action"], "block");
    let fx = written_by(&log, "req-fx", me, "fx_rate.set", ("fx_rate", "USD/GBP"));
    assert_eq!(fx["details"]["request"], json!({"from": "USD", "to": "GBP", "rate": "0.8"}));
    written_by(&log, "req-fee", me, "fee_rule.create", ("fee_rule", &fee_rule));
    written_by(&log, "req-type", me, "transfer_type.update", ("transfer_type", "internal"));
    written_by(&log, "req-aml", me, "aml_rule.create", ("aml_rule", &aml_rule));
    written_by(&log, "req-aml-put", me, "aml_rule.update", ("aml_rule", &aml_rule));
    written_by(&log, "req-aml-delete", me, "aml_rule.delete", ("aml_rule", &aml_rule));
    written_by(&log, "req-resolve", me, "aml_flag.resolve", ("aml_flag", &flag));
    for refused in [
        "req-execute-again",
        "req-reject-again",
        "req-cancel-again",
        "req-execute-unknown",
        "req-adjust-refused",
        "req-close",
        "req-fx-bad",
        "req-fee-clash",
        "req-resolve-again",
        "req-aml-delete-again",
    ] {
        assert!(!log.iter().any(|e| e["request_id"] == refused), "the refused {refused} wrote an entry");
    }

    let report = verify_chain(server.state.identity().audit.as_ref()).await.unwrap();
    assert_eq!(report.first_break, None, "{report:?}");
    assert_eq!(report.entries, log.len() as u64);
    let (ok, text) = tally_verify(&server.database_url, &[]);
    assert!(ok, "tally verify: {text}");
    assert!(text.contains(&format!("audit log: {} entries, chain intact", log.len())), "{text}");
    server.shutdown().await;
}

/// Runs `sql` on the test server's database, behind Tally's back.
async fn behind_the_back(server: &TestServer, sql: &str) {
    match server.backend {
        tally_tests::http::Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
            sqlx::query(sql).execute(&mut connection).await.unwrap();
            connection.close().await.unwrap();
        }
        tally_tests::http::Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
            sqlx::query(sql).execute(&mut connection).await.unwrap();
            connection.close().await.unwrap();
        }
    }
}

/// `sql`'s one number, read from the test server's database behind Tally's back.
async fn count_behind_the_back(server: &TestServer, sql: &str) -> i64 {
    match server.backend {
        tally_tests::http::Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&server.database_url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut connection).await.unwrap()
        }
        tally_tests::http::Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut connection).await.unwrap()
        }
    }
}

/// The entry is written in the change's transaction, not after it: when the append cannot be
/// made (the audit head row is gone), the change is rolled back with it. The interim, which
/// wrote the entry after the change, would have left each change standing.
async fn an_audit_append_that_fails_takes_the_change_with_it(server: TestServer) {
    let admin = server.admin(&Action::ALL.map(|action| action.as_str())).await;
    let customer = server.user().await;
    let account = server.open_account(&customer, "USD").await;
    server.fund(&account, dec!(100)).await;
    behind_the_back(&server, "DELETE FROM audit_head").await;

    let rate = server
        .send_with(
            Method::PUT,
            "/v1/admin/fx-rates",
            Some(&admin.token),
            None,
            Some(json!({"from": "USD", "to": "GBP", "rate": "0.8"})),
        )
        .await;
    assert!(rate.status >= 500, "{}", rate.text);
    let rates = server.get("/v1/admin/fx-rates", Some(&admin.token)).await;
    assert!(!rates.text.contains("GBP"), "the rate was not stored: {}", rates.text);
    let loaded = server.store.load_pricing().await.unwrap();
    assert!(loaded.fx_rates.iter().all(|rate| rate.to.code() != "GBP"), "nor in the store");

    let threshold = json!({"name": "big", "kind": "threshold", "config": {"amount": "1", "currency": "USD"}, "action": "flag", "enabled": true});
    let rule = server.post("/v1/admin/aml/rules", Some(&admin.token), threshold).await;
    assert!(rule.status >= 500, "{}", rule.text);
    let rules = server.get("/v1/admin/aml/rules", Some(&admin.token)).await;
    assert_eq!(rules.body["items"], json!([]), "the rule was not stored");

    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]});
    let hook = server.post("/v1/admin/webhooks", Some(&admin.token), hook).await;
    assert!(hook.status >= 500, "{}", hook.text);
    let hooks = server.get("/v1/admin/webhooks", Some(&admin.token)).await;
    assert_eq!(hooks.body["items"], json!([]), "the subscription was not stored");

    // A journal route: the batch holding the account's opening cannot commit without its
    // entry, so the opening is not answered and is not in the store.
    let opened = server
        .post("/v1/admin/accounts", Some(&admin.token), json!({"user_id": customer.user_id, "currency": "EUR"}))
        .await;
    assert!(opened.status >= 500, "{}", opened.text);
    let eur = "SELECT count(*) FROM accounts WHERE currency = 'EUR' AND kind = 'user'";
    assert_eq!(count_behind_the_back(&server, eur).await, 0, "the opening was not committed");
    assert_eq!(count_behind_the_back(&server, "SELECT count(*) FROM audit_log WHERE action = 'account.open'").await, 0);
    // That journal refused a batch and stopped, as it should (docs/audit.md), so the server
    // cannot shut down cleanly (its journals never become durable): stop it as a crash would.
    server.engine.halt().await;
}

/// Makes some audited history on a real server, stops it, and checks `tally verify`: intact,
/// then one row's details edited behind Tally's back, then the newest row deleted.
async fn tally_verify_names_the_row_that_was_edited(database_url: &str, edit: impl AsyncFn(&str)) {
    {
        let server = TallyServer::start(database_url, &[]).await;
        let admin = Client::admin(&server).await;
        for n in 0..4 {
            let (status, body) =
                admin.post("/v1/admin/roles", json!({"name": format!("role {n}"), "actions": ["users:read"]})).await;
            assert_eq!(status, 201, "{body}");
        }
        Client::login(&server.base_url(), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    }
    let (ok, text) = tally_verify(database_url, &[]);
    assert!(ok, "an untouched log verifies: {text}");
    assert!(text.contains("chain intact"), "{text}");

    edit("UPDATE audit_log SET details = '{\"name\":\"role 9\"}' WHERE seq = 3").await;
    let (ok, text) = tally_verify(database_url, &[]);
    assert!(!ok, "an edited row is found: {text}");
    assert!(text.contains("audit entry seq 3 (id "), "names the edited row: {text}");
    assert!(text.contains("does not match its contents"), "{text}");

    // Put the contents back (the chain holds again), then drop the newest entry.
    edit("UPDATE audit_log SET details = (SELECT details FROM audit_log WHERE seq = 4) WHERE seq = 3").await;
    let (ok, _) = tally_verify(database_url, &[]);
    assert!(!ok, "seq 3 now holds seq 4's details: still a mismatch");
}

/// The SQL of each store, run behind Tally's back.
async fn run_sqlite(file: std::path::PathBuf, sql: String) {
    let url = format!("sqlite://{}", file.display());
    let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(&sql).execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
}

async fn run_postgres(url: String, sql: String) {
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&sql).execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tally_verify_fails_naming_an_edited_audit_row_on_sqlite() {
    let file = std::env::temp_dir().join(format!("tally-verify-{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}", file.display());
    tally_verify_names_the_row_that_was_edited(&url, async |sql: &str| run_sqlite(file.clone(), sql.to_owned()).await)
        .await;
    tally_verify_truncation_is_found(&url, async |sql: &str| run_sqlite(file.clone(), sql.to_owned()).await).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tally_verify_fails_naming_an_edited_audit_row_on_postgres() {
    let url = postgres::fresh_database("verify").await;
    tally_verify_names_the_row_that_was_edited(&url, async |sql: &str| run_postgres(url.clone(), sql.to_owned()).await)
        .await;
    tally_verify_truncation_is_found(&url, async |sql: &str| run_postgres(url.clone(), sql.to_owned()).await).await;
}

/// Deleting the newest entries leaves the head naming an entry that is gone.
async fn tally_verify_truncation_is_found(database_url: &str, edit: impl AsyncFn(&str)) {
    edit("DELETE FROM audit_log WHERE seq >= 3").await;
    let (ok, text) = tally_verify(database_url, &[]);
    assert!(!ok, "{text}");
    assert!(text.contains("the head names seq"), "{text}");
}
