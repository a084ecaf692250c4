//! `/v1/admin/*` over a real socket: every route refuses callers without its permission
//! (`401` without a token, `403` without the action) and changes nothing; adjustments, review
//! of pending transfers, and account administration do what they say.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tally_engine::Currency;
use tally_engine::system_accounts::settlement;
use tally_http::auth::permissions::Action;
use tally_tests::http::TestServer;
use tally_tests::on_both_stores;

on_both_stores!(
    every_admin_route_refuses_callers_without_its_permission,
    adjustments_credit_and_debit_against_settlement,
    admins_read_any_transfer_and_any_account_with_its_holds,
    reject_and_cancel_release_the_hold_and_only_pending_transfers_are_reviewed,
    admins_open_accounts_and_block_unblock_and_close_them,
    an_execute_towards_a_quarantined_destination_is_503_and_changes_nothing,
    an_execute_the_destination_refuses_ends_the_transfer_failed_with_its_audit_entry,
    admins_list_and_read_every_customer_s_wallets_with_their_holds,
    a_credit_limit_with_more_decimals_than_the_currency_is_refused,
);

const IBAN: &str = "GB82WEST12345698765432";

fn external(source: &str, amount: &str) -> Value {
    json!({"type": "external", "source_account_id": source, "beneficiary": {"name": "Ada", "iban": IBAN}, "amount": amount})
}

/// Every action except `missing`.
fn all_but(missing: &str) -> Vec<&'static str> {
    Action::ALL.iter().map(|action| action.as_str()).filter(|action| *action != missing).collect()
}

async fn every_admin_route_refuses_callers_without_its_permission(server: TestServer) {
    let customer = server.user().await;
    let account = server.open_account(&customer, "USD").await;
    server.fund(&account, dec!(50)).await;
    let pending = server.post("/v1/transfers", Some(&customer.token), external(&account, "20")).await;
    pending.assert_status(202);
    let transfer = pending.str("id");

    let target = server.user().await;
    // Refused before any lookup, so an id that names nothing serves the AML rows.
    let aml_id = uuid::Uuid::new_v4();
    let new_admin_email = format!("new-admin-{}@example.com", uuid::Uuid::new_v4().simple());
    // A role nobody holds, for the role rows.
    let role_owner = server.admin(&["admin_users:manage", "admin_users:read"]).await;
    let role = server
        .post("/v1/admin/roles", Some(&role_owner.token), json!({"name": "existing", "actions": []}))
        .await
        .str("id");
    let target_sessions = server.get("/v1/users/me/sessions", Some(&target.token)).await.body.as_array().unwrap().len();
    // (method, route template, concrete path, body, the permission it needs)
    let routes: Vec<(&str, &str, String, Option<Value>, &str)> = vec![
        (
            "POST",
            "/v1/admin/adjustments",
            "/v1/admin/adjustments".to_owned(),
            Some(json!({"type": "admin_credit", "account_id": account, "amount": "1000", "purpose": "x"})),
            "transfers:adjust",
        ),
        // With the 1.1 filters (metadata included), so the permission is checked with them too.
        (
            "GET",
            "/v1/admin/transfers",
            "/v1/admin/transfers?status=pending&type=external&min_amount=1&metadata.k=v".to_owned(),
            None,
            "transfers:read",
        ),
        (
            "GET",
            "/v1/admin/transfers/count",
            "/v1/admin/transfers/count?type=internal&from=2020-01-01&metadata.k=v".to_owned(),
            None,
            "transfers:read",
        ),
        ("GET", "/v1/admin/transfers/{id}", format!("/v1/admin/transfers/{transfer}"), None, "transfers:read"),
        (
            "POST",
            "/v1/admin/transfers/{id}/execute",
            format!("/v1/admin/transfers/{transfer}/execute"),
            None,
            "transfers:execute",
        ),
        (
            "POST",
            "/v1/admin/transfers/{id}/reject",
            format!("/v1/admin/transfers/{transfer}/reject"),
            Some(json!({"reason": "x"})),
            "transfers:reject",
        ),
        (
            "POST",
            "/v1/admin/transfers/{id}/cancel",
            format!("/v1/admin/transfers/{transfer}/cancel"),
            Some(json!({"reason": "x"})),
            "transfers:cancel",
        ),
        ("GET", "/v1/admin/accounts", "/v1/admin/accounts".to_owned(), None, "accounts:read"),
        ("GET", "/v1/admin/accounts/count", "/v1/admin/accounts/count".to_owned(), None, "accounts:read"),
        (
            "GET",
            "/v1/admin/statements",
            "/v1/admin/statements?from=2025-01-01&to=2025-01-31&format=csv".to_owned(),
            None,
            "transfers:read",
        ),
        (
            "POST",
            "/v1/admin/accounts",
            "/v1/admin/accounts".to_owned(),
            Some(json!({"user_id": customer.user_id, "currency": "EUR", "credit_limit": "1000000"})),
            "accounts:write",
        ),
        ("GET", "/v1/admin/accounts/{id}", format!("/v1/admin/accounts/{account}"), None, "accounts:read"),
        ("GET", "/v1/admin/wallets", "/v1/admin/wallets".to_owned(), None, "accounts:read"),
        ("GET", "/v1/admin/wallets/{id}", format!("/v1/admin/wallets/{}", uuid::Uuid::new_v4()), None, "accounts:read"),
        (
            "POST",
            "/v1/admin/accounts/{id}/status",
            format!("/v1/admin/accounts/{account}/status"),
            Some(json!({"action": "block", "reason": "x"})),
            "accounts:close",
        ),
        ("GET", "/v1/admin/users", "/v1/admin/users".to_owned(), None, "users:read"),
        (
            "POST",
            "/v1/admin/users",
            "/v1/admin/users".to_owned(),
            Some(
                json!({"email": new_admin_email, "password": "Str0ng!pass", "first_name": "N", "last_name": "A", "actions": ["ops:read"]}),
            ),
            "admin_users:manage",
        ),
        (
            "POST",
            "/v1/admin/users/{id}/permissions",
            format!("/v1/admin/users/{}/permissions", target.user_id),
            Some(json!({"actions": ["transfers:read"]})),
            "admin_users:manage",
        ),
        (
            "DELETE",
            "/v1/admin/users/{id}/permissions",
            format!("/v1/admin/users/{}/permissions", target.user_id),
            Some(json!({"actions": ["transfers:read"]})),
            "admin_users:manage",
        ),
        (
            "POST",
            "/v1/admin/users/{id}/status",
            format!("/v1/admin/users/{}/status", target.user_id),
            Some(json!({"status": "blocked", "reason": "x"})),
            "users:block",
        ),
        ("GET", "/v1/admin/permissions", "/v1/admin/permissions".to_owned(), None, "admin_users:read"),
        ("GET", "/v1/admin/actors", "/v1/admin/actors".to_owned(), None, "ops:read"),
        ("GET", "/v1/admin/cluster", "/v1/admin/cluster".to_owned(), None, "ops:read"),
        ("GET", "/v1/admin/aml/rules", "/v1/admin/aml/rules".to_owned(), None, "aml:write"),
        (
            "POST",
            "/v1/admin/aml/rules",
            "/v1/admin/aml/rules".to_owned(),
            Some(
                json!({"name": "x", "kind": "threshold", "config": {"amount": "1", "currency": "USD"}, "action": "block"}),
            ),
            "aml:write",
        ),
        ("GET", "/v1/admin/aml/rules/{id}", format!("/v1/admin/aml/rules/{aml_id}"), None, "aml:write"),
        (
            "PUT",
            "/v1/admin/aml/rules/{id}",
            format!("/v1/admin/aml/rules/{aml_id}"),
            Some(
                json!({"name": "x", "kind": "threshold", "config": {"amount": "1", "currency": "USD"}, "action": "block"}),
            ),
            "aml:write",
        ),
        ("DELETE", "/v1/admin/aml/rules/{id}", format!("/v1/admin/aml/rules/{aml_id}"), None, "aml:write"),
        ("GET", "/v1/admin/aml/flags", "/v1/admin/aml/flags?status=open".to_owned(), None, "aml:read"),
        ("GET", "/v1/admin/aml/flags/count", "/v1/admin/aml/flags/count".to_owned(), None, "aml:read"),
        ("GET", "/v1/admin/aml/flags/{id}", format!("/v1/admin/aml/flags/{aml_id}"), None, "aml:read"),
        (
            "POST",
            "/v1/admin/aml/flags/{id}/resolve",
            format!("/v1/admin/aml/flags/{aml_id}/resolve"),
            Some(json!({"action": "clear"})),
            "aml:write",
        ),
        ("GET", "/v1/admin/fx-rates", "/v1/admin/fx-rates".to_owned(), None, "fx:read"),
        (
            "PUT",
            "/v1/admin/fx-rates",
            "/v1/admin/fx-rates".to_owned(),
            Some(json!({"from": "USD", "to": "EUR", "rate": "0.9"})),
            "fx:write",
        ),
        ("GET", "/v1/admin/fee-rules", "/v1/admin/fee-rules".to_owned(), None, "fees:read"),
        (
            "POST",
            "/v1/admin/fee-rules",
            "/v1/admin/fee-rules".to_owned(),
            Some(
                json!({"name": "f", "transfer_type": "internal", "currency": "USD", "kind": "flat", "flat_amount": "1"}),
            ),
            "fees:write",
        ),
        ("GET", "/v1/admin/fee-rules/{id}", format!("/v1/admin/fee-rules/{account}"), None, "fees:read"),
        (
            "PUT",
            "/v1/admin/fee-rules/{id}",
            format!("/v1/admin/fee-rules/{account}"),
            Some(
                json!({"name": "f", "transfer_type": "internal", "currency": "USD", "kind": "flat", "flat_amount": "1"}),
            ),
            "fees:write",
        ),
        ("GET", "/v1/admin/transfer-types", "/v1/admin/transfer-types".to_owned(), None, "transfer_types:write"),
        (
            "PUT",
            "/v1/admin/transfer-types/{code}",
            "/v1/admin/transfer-types/internal".to_owned(),
            Some(json!({"enabled": false, "execution_mode": "auto"})),
            "transfer_types:write",
        ),
        (
            "POST",
            "/v1/admin/actors/{kind}/{id}/release",
            format!("/v1/admin/actors/account/{account}/release"),
            None,
            "ops:write",
        ),
        // Issue 14: admin user views, roles, audit.
        ("GET", "/v1/admin/users/count", "/v1/admin/users/count?status=active".to_owned(), None, "users:read"),
        ("GET", "/v1/admin/users/{id}", format!("/v1/admin/users/{}", target.user_id), None, "users:read"),
        (
            "PATCH",
            "/v1/admin/users/{id}",
            format!("/v1/admin/users/{}", target.user_id),
            Some(json!({"first_name": "Mallory"})),
            "users:write",
        ),
        (
            "POST",
            "/v1/admin/users/{id}/password-reset",
            format!("/v1/admin/users/{}/password-reset", target.user_id),
            None,
            "users:write",
        ),
        (
            "GET",
            "/v1/admin/users/{id}/sessions",
            format!("/v1/admin/users/{}/sessions", target.user_id),
            None,
            "users:read",
        ),
        (
            "DELETE",
            "/v1/admin/users/{id}/sessions",
            format!("/v1/admin/users/{}/sessions", target.user_id),
            None,
            "users:block",
        ),
        (
            "POST",
            "/v1/admin/users/{id}/verification",
            format!("/v1/admin/users/{}/verification", target.user_id),
            Some(json!({"level": "enhanced"})),
            "users:verify",
        ),
        (
            "POST",
            "/v1/admin/users/{id}/roles",
            format!("/v1/admin/users/{}/roles", target.user_id),
            Some(json!({"role_id": role})),
            "admin_users:manage",
        ),
        (
            "DELETE",
            "/v1/admin/users/{id}/roles/{role_id}",
            format!("/v1/admin/users/{}/roles/{role}", target.user_id),
            None,
            "admin_users:manage",
        ),
        ("GET", "/v1/admin/roles", "/v1/admin/roles".to_owned(), None, "admin_users:read"),
        (
            "POST",
            "/v1/admin/roles",
            "/v1/admin/roles".to_owned(),
            Some(json!({"name": "sneaky", "actions": []})),
            "admin_users:manage",
        ),
        ("GET", "/v1/admin/roles/{id}", format!("/v1/admin/roles/{role}"), None, "admin_users:read"),
        (
            "PUT",
            "/v1/admin/roles/{id}",
            format!("/v1/admin/roles/{role}"),
            Some(json!({"name": "renamed", "actions": []})),
            "admin_users:manage",
        ),
        ("DELETE", "/v1/admin/roles/{id}", format!("/v1/admin/roles/{role}"), None, "admin_users:manage"),
        ("GET", "/v1/admin/audit", "/v1/admin/audit".to_owned(), None, "audit:read"),
        ("GET", "/v1/admin/audit/head", "/v1/admin/audit/head".to_owned(), None, "audit:read"),
        // Issue 15: verification limits.
        ("GET", "/v1/admin/limits", "/v1/admin/limits".to_owned(), None, "limits:read"),
        (
            "PUT",
            "/v1/admin/limits/{level}",
            "/v1/admin/limits/basic".to_owned(),
            Some(json!({"limits": [{"currency": "USD", "per_transfer_max": "1"}]})),
            "limits:write",
        ),
        // Issue 16: the event feed and webhook subscriptions (an id that names none: the
        // permission is checked before the subscription is looked up).
        ("GET", "/v1/admin/events", "/v1/admin/events".to_owned(), None, "events:read"),
        ("GET", "/v1/admin/webhooks", "/v1/admin/webhooks".to_owned(), None, "webhooks:manage"),
        (
            "POST",
            "/v1/admin/webhooks",
            "/v1/admin/webhooks".to_owned(),
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
            "webhooks:manage",
        ),
        (
            "GET",
            "/v1/admin/webhooks/{id}",
            format!("/v1/admin/webhooks/{}", uuid::Uuid::nil()),
            None,
            "webhooks:manage",
        ),
        (
            "PATCH",
            "/v1/admin/webhooks/{id}",
            format!("/v1/admin/webhooks/{}", uuid::Uuid::nil()),
            Some(json!({"enabled": false})),
            "webhooks:manage",
        ),
        (
            "DELETE",
            "/v1/admin/webhooks/{id}",
            format!("/v1/admin/webhooks/{}", uuid::Uuid::nil()),
            None,
            "webhooks:manage",
        ),
        (
            "GET",
            "/v1/admin/webhooks/{id}/deliveries",
            format!("/v1/admin/webhooks/{}/deliveries", uuid::Uuid::nil()),
            None,
            "webhooks:manage",
        ),
        (
            "POST",
            "/v1/admin/webhooks/{id}/replay",
            format!("/v1/admin/webhooks/{}/replay", uuid::Uuid::nil()),
            Some(json!({"after_seq": "0"})),
            "webhooks:manage",
        ),
    ];
    // The matrix covers every admin operation the API documents (the document and the router
    // are kept identical by a unit test in `http/src/openapi.rs`), so a new admin route cannot
    // land without its row here.
    let document = serde_json::to_value(tally_http::openapi::document()).unwrap();
    let documented: std::collections::BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with("/v1/admin/"))
        .flat_map(|(path, item)| {
            item.as_object().unwrap().keys().map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let covered: std::collections::BTreeSet<(String, String)> =
        routes.iter().map(|(method, template, ..)| ((*method).to_owned(), (*template).to_owned())).collect();
    assert_eq!(covered, documented, "the authorization matrix must list every admin operation");

    for (method, _, path, body, permission) in &routes {
        let almost = server.admin(&all_but(permission)).await;
        for (token, status, code) in [
            (None, 401, "UNAUTHENTICATED"),
            (Some(customer.token.as_str()), 403, "FORBIDDEN"),
            (Some(almost.token.as_str()), 403, "FORBIDDEN"),
        ] {
            let reply = match (*method, body) {
                ("GET", _) => server.get(path, token).await,
                ("PUT", body) => {
                    let mut request = server.client.put(server.url(path));
                    if let Some(token) = token {
                        request = request.bearer_auth(token);
                    }
                    if let Some(body) = body {
                        request = request.json(body);
                    }
                    server.send(request).await
                }
                ("PATCH", body) => {
                    let mut request = server.client.patch(server.url(path));
                    if let Some(token) = token {
                        request = request.bearer_auth(token);
                    }
                    if let Some(body) = body {
                        request = request.json(body);
                    }
                    server.send(request).await
                }
                ("DELETE", body) => {
                    let mut request = server.client.delete(server.url(path));
                    if let Some(token) = token {
                        request = request.bearer_auth(token);
                    }
                    if let Some(body) = body {
                        request = request.json(body);
                    }
                    server.send(request).await
                }
                (_, Some(body)) => server.post(path, token, body.clone()).await,
                (_, None) => server.post_empty(path, token).await,
            };
            reply.assert_problem(status, code);
            if status == 403 {
                assert!(reply.str("detail").contains(permission), "{method} {path}: {}", reply.text);
            }
        }
    }
    // The refused user administration did nothing: the target still logs in, the new admin
    // does not exist.
    server.login(&target_email(&server, &target).await, tally_tests::http::PASSWORD).await.assert_status(200);
    server.login(&new_admin_email, "Str0ng!pass").await.assert_problem(401, "INVALID_CREDENTIALS");
    // The refused identity routes did nothing either: the profile, level, roles and sessions are
    // as they were, no role appeared or vanished, no mail went out.
    let me = server.get("/v1/users/me", Some(&target.token)).await;
    assert_eq!((me.str("first_name"), me.str("verification_level")), ("Test".to_owned(), "none".to_owned()));
    assert_eq!(me.body["permissions"], json!([]), "no role was assigned");
    assert!(
        server.get("/v1/users/me/sessions", Some(&target.token)).await.body.as_array().unwrap().len() > target_sessions
    );
    let roles = server.get("/v1/admin/roles", Some(&role_owner.token)).await;
    assert_eq!(roles.body["items"], json!([roles.body["items"][0].clone()]));
    assert_eq!(roles.body["items"][0]["name"], "existing");
    assert!(server.mail.messages().is_empty());
    // Nothing happened: the transfer still pends, the account is as it was, nothing opened.
    assert_eq!(server.get(&format!("/v1/transfers/{transfer}"), Some(&customer.token)).await.str("status"), "pending");
    assert_eq!(server.position(&account).await, (dec!(50), dec!(20)));
    let mine = server.get(&format!("/v1/accounts/{account}"), Some(&customer.token)).await;
    assert_eq!(mine.str("status"), "active");
    assert_eq!(server.get("/v1/accounts", Some(&customer.token)).await.body["items"].as_array().unwrap().len(), 1);
    // The refused pricing writes changed nothing.
    assert!(server.engine.fx_rates().is_empty() && server.engine.fee_rules().is_empty());
    assert!(server.engine.transfer_type(tally_engine::TransferKind::Internal).enabled);
    // The refused limits write changed nothing.
    assert!(server.engine.limits().of_level(tally_persistence::users::VerificationLevel::Basic).is_empty());
    server.shutdown().await;
}

/// The email `user` registered with, read back through `/v1/users/me`.
async fn target_email(server: &TestServer, user: &tally_tests::http::TestUser) -> String {
    server.get("/v1/users/me", Some(&user.token)).await.str("email")
}

async fn adjustments_credit_and_debit_against_settlement(server: TestServer) {
    let admin = server.admin(&["transfers:adjust"]).await;
    let customer = server.user().await;
    let account = server.open_account(&customer, "USD").await;
    let settlement_usd = settlement(Currency::USD).to_string();
    let settlement_before = server.position(&settlement_usd).await.0;
    let adjust = |kind: &str, amount: &str| json!({"type": kind, "account_id": account, "amount": amount, "purpose": "goodwill", "reference": "case 9"});

    let credit = server.post("/v1/admin/adjustments", Some(&admin.token), adjust("admin_credit", "100")).await;
    credit.assert_status(201);
    assert_eq!(credit.str("type"), "admin_credit");
    assert_eq!(credit.str("status"), "completed");
    assert_eq!(credit.str("source_account_id"), settlement_usd);
    assert_eq!(credit.str("destination_account_id"), account);
    assert_eq!(credit.str("description"), "goodwill");
    // `Location` is the admin's read of the adjustment, not the customer's route.
    let location = format!("/v1/admin/transfers/{}", credit.str("id"));
    assert_eq!(credit.headers["location"], location.as_str());
    let reader = server.admin(&["transfers:read"]).await;
    let read = server.get(&location, Some(&reader.token)).await;
    read.assert_status(200);
    assert_eq!(read.str("id"), credit.str("id"));
    let debit = server.post("/v1/admin/adjustments", Some(&admin.token), adjust("admin_debit", "30.25")).await;
    debit.assert_status(201);
    assert_eq!(debit.str("source_account_id"), account);
    assert_eq!(server.position(&account).await, (dec!(69.75), dec!(0)));
    assert_eq!(server.position(&settlement_usd).await.0, settlement_before - dec!(69.75));

    // Refusals, each moving nothing.
    server
        .post("/v1/admin/adjustments", Some(&admin.token), adjust("admin_debit", "69.76"))
        .await
        .assert_problem(422, "INSUFFICIENT_FUNDS");
    for (body, field) in [
        (adjust("internal", "1"), "type"),
        (adjust("admin_credit", "-1"), "amount"),
        (adjust("admin_credit", "1.001"), "amount"),
        (json!({"type": "admin_credit", "account_id": account, "amount": "1", "purpose": ""}), "purpose"),
        (json!({"type": "admin_credit", "account_id": settlement_usd, "amount": "1", "purpose": "x"}), "account_id"),
    ] {
        let reply = server.post("/v1/admin/adjustments", Some(&admin.token), body).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec![field]);
    }
    server
        .post(
            "/v1/admin/adjustments",
            Some(&admin.token),
            json!({"type": "admin_credit", "account_id": account, "amount": "1"}),
        )
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    let missing =
        json!({"type": "admin_credit", "account_id": uuid::Uuid::new_v4().to_string(), "amount": "1", "purpose": "x"});
    server.post("/v1/admin/adjustments", Some(&admin.token), missing).await.assert_problem(404, "NOT_FOUND");
    assert_eq!(server.position(&account).await, (dec!(69.75), dec!(0)));

    // Idempotent like every money-moving POST.
    let once =
        server.post_keyed("/v1/admin/adjustments", Some(&admin.token), "adj-1", adjust("admin_credit", "5")).await;
    let twice =
        server.post_keyed("/v1/admin/adjustments", Some(&admin.token), "adj-1", adjust("admin_credit", "5")).await;
    assert_eq!((once.status, twice.status), (201, 201));
    assert_eq!(once.str("id"), twice.str("id"));
    assert_eq!(server.position(&account).await, (dec!(74.75), dec!(0)));
    server.shutdown().await;
}

async fn admins_read_any_transfer_and_any_account_with_its_holds(server: TestServer) {
    let admin = server.admin(&["transfers:read", "accounts:read"]).await;
    let customer = server.user().await;
    let account = server.open_account(&customer, "BTC").await;
    server.fund(&account, dec!(1.5)).await;
    let pending = server.post("/v1/transfers", Some(&customer.token), external(&account, "0.25")).await;
    pending.assert_status(202);
    let id = pending.str("id");

    let transfer = server.get(&format!("/v1/admin/transfers/{id}"), Some(&admin.token)).await;
    transfer.assert_status(200);
    assert_eq!(transfer.str("user_id"), customer.user_id);
    assert_eq!(transfer.str("status"), "pending");
    assert_eq!(transfer.str("amount"), "0.25000000");
    assert_eq!(transfer.str("saga_step"), "held");

    let viewed = server.get(&format!("/v1/admin/accounts/{account}"), Some(&admin.token)).await;
    viewed.assert_status(200);
    assert_eq!(viewed.str("user_id"), customer.user_id);
    assert_eq!(viewed.str("kind"), "user");
    assert_eq!(viewed.str("balance"), "1.50000000");
    assert_eq!(viewed.str("held"), "0.25000000");
    assert_eq!(viewed.body["holds"], json!([{"transfer_id": id, "amount": "0.25000000"}]));
    assert_eq!(viewed.body["aml_flags"], json!([]));
    let system = server.get(&format!("/v1/admin/accounts/{}", settlement(Currency::BTC)), Some(&admin.token)).await;
    system.assert_status(200);
    assert_eq!(system.body["user_id"], Value::Null);
    assert_eq!(system.str("kind"), "settlement");

    let nowhere = uuid::Uuid::new_v4();
    server.get(&format!("/v1/admin/transfers/{nowhere}"), Some(&admin.token)).await.assert_problem(404, "NOT_FOUND");
    server.get(&format!("/v1/admin/accounts/{nowhere}"), Some(&admin.token)).await.assert_problem(404, "NOT_FOUND");
    server.get("/v1/admin/accounts/x", Some(&admin.token)).await.assert_problem(400, "VALIDATION_ERROR");
    server.shutdown().await;
}

async fn reject_and_cancel_release_the_hold_and_only_pending_transfers_are_reviewed(server: TestServer) {
    let admin = server.admin(&["transfers:reject", "transfers:cancel", "transfers:execute"]).await;
    let customer = server.user().await;
    let account = server.open_account(&customer, "USD").await;
    server.fund(&account, dec!(100)).await;
    let first = server.post("/v1/transfers", Some(&customer.token), external(&account, "10")).await.str("id");
    let second = server.post("/v1/transfers", Some(&customer.token), external(&account, "20")).await.str("id");
    assert_eq!(server.position(&account).await, (dec!(100), dec!(30)));

    server
        .post(&format!("/v1/admin/transfers/{first}/reject"), Some(&admin.token), json!({"reason": "suspicious"}))
        .await
        .assert_status(204);
    assert_eq!(server.get(&format!("/v1/transfers/{first}"), Some(&customer.token)).await.str("status"), "rejected");
    assert_eq!(server.position(&account).await, (dec!(100), dec!(20)));
    server.post_empty(&format!("/v1/admin/transfers/{second}/cancel"), Some(&admin.token)).await.assert_status(204);
    assert_eq!(server.get(&format!("/v1/transfers/{second}"), Some(&customer.token)).await.str("status"), "cancelled");
    assert_eq!(server.position(&account).await, (dec!(100), dec!(0)));

    for action in ["execute", "reject", "cancel"] {
        for id in [&first, &second] {
            server
                .post_empty(&format!("/v1/admin/transfers/{id}/{action}"), Some(&admin.token))
                .await
                .assert_problem(409, "NOT_PENDING");
        }
        server
            .post_empty(&format!("/v1/admin/transfers/{}/{action}", uuid::Uuid::new_v4()), Some(&admin.token))
            .await
            .assert_problem(404, "NOT_FOUND");
    }
    assert_eq!(server.position(&account).await, (dec!(100), dec!(0)));
    server.shutdown().await;
}

async fn admins_open_accounts_and_block_unblock_and_close_them(server: TestServer) {
    let admin = server.admin(&["accounts:write", "accounts:close", "transfers:adjust"]).await;
    let customer = server.user().await;
    let opened = server
        .post(
            "/v1/admin/accounts",
            Some(&admin.token),
            json!({"user_id": customer.user_id, "currency": "USD", "credit_limit": "50.5"}),
        )
        .await;
    opened.assert_status(201);
    let account = opened.str("id");
    assert_eq!(opened.str("user_id"), customer.user_id);
    assert_eq!(opened.str("credit_limit"), "50.50");
    assert_eq!(opened.str("available_balance"), "50.50");
    let listed = server.get("/v1/accounts", Some(&customer.token)).await;
    assert_eq!(listed.body["items"][0]["id"], account.as_str(), "the customer sees it");

    for (body, status, code) in [
        (json!({"user_id": uuid::Uuid::new_v4().to_string(), "currency": "USD"}), 404, "NOT_FOUND"),
        (json!({"user_id": customer.user_id, "currency": "USD", "credit_limit": "-1"}), 400, "VALIDATION_ERROR"),
        (json!({"user_id": customer.user_id, "currency": "USD", "credit_limit": "1.001"}), 400, "VALIDATION_ERROR"),
        (json!({"user_id": customer.user_id, "currency": "ABC"}), 400, "VALIDATION_ERROR"),
        (json!({"user_id": "someone", "currency": "USD"}), 400, "VALIDATION_ERROR"),
    ] {
        server.post("/v1/admin/accounts", Some(&admin.token), body).await.assert_problem(status, code);
    }
    assert_eq!(server.get("/v1/accounts", Some(&customer.token)).await.body["items"].as_array().unwrap().len(), 1);

    let status = |action: &str| json!({"action": action, "reason": "review"});
    let path = format!("/v1/admin/accounts/{account}/status");
    let other = server.open_account(&customer, "USD").await;
    server.post(&path, Some(&admin.token), status("block")).await.assert_status(204);
    assert_eq!(server.get(&format!("/v1/accounts/{account}"), Some(&customer.token)).await.str("status"), "blocked");
    let blocked_send = server
        .post(
            "/v1/transfers",
            Some(&customer.token),
            json!({"type": "internal", "source_account_id": account, "destination_account_id": other, "amount": "1"}),
        )
        .await;
    blocked_send.assert_problem(422, "ACCOUNT_NOT_ACTIVE");
    server.post(&path, Some(&admin.token), status("unblock")).await.assert_status(204);

    // Closing needs an empty account: the credit limit lets it go negative, so spend some.
    server
        .post(
            "/v1/transfers",
            Some(&customer.token),
            json!({"type": "internal", "source_account_id": account, "destination_account_id": other, "amount": "20"}),
        )
        .await
        .assert_status(201);
    server.post(&path, Some(&admin.token), status("close")).await.assert_problem(409, "ACCOUNT_NOT_EMPTY");
    assert_eq!(server.get(&format!("/v1/accounts/{account}"), Some(&customer.token)).await.str("status"), "active");
    let repay = json!({"type": "admin_credit", "account_id": account, "amount": "20", "purpose": "repay"});
    server.post("/v1/admin/adjustments", Some(&admin.token), repay).await.assert_status(201);
    server.post(&path, Some(&admin.token), status("close")).await.assert_status(204);
    assert_eq!(server.get(&format!("/v1/accounts/{account}"), Some(&customer.token)).await.str("status"), "closed");
    server.post(&path, Some(&admin.token), status("unblock")).await.assert_problem(409, "CONFLICT");

    server.post(&path, Some(&admin.token), status("delete")).await.assert_problem(400, "VALIDATION_ERROR");
    server.post(&path, Some(&admin.token), json!({"action": "block"})).await.assert_problem(400, "VALIDATION_ERROR");
    server
        .post(&format!("/v1/admin/accounts/{}/status", settlement(Currency::USD)), Some(&admin.token), status("block"))
        .await
        .assert_problem(403, "FORBIDDEN");
    server
        .post(&format!("/v1/admin/accounts/{}/status", uuid::Uuid::new_v4()), Some(&admin.token), status("block"))
        .await
        .assert_problem(404, "NOT_FOUND");
    server.shutdown().await;
}

/// An admin executes a pending transfer whose destination's actor is quarantined (it kept
/// failing). The answer is `503` and, as a `503` must, it changed nothing: the transfer is
/// still `pending` with its source's hold, the customer's key still answers it, and once an
/// operator releases the quarantine the same execute completes it. Before, the execute failed
/// the transfer for good while answering `503` "retry later": the retry got `409 NOT_PENDING`,
/// and the customer's key replayed `503` for ever. Found by a review (helper).
async fn an_execute_towards_a_quarantined_destination_is_503_and_changes_nothing(server: TestServer) {
    use tally_tests::http::account_id;
    let admin = server.admin(&["transfers:execute", "transfers:read"]).await;
    let customer = server.user().await;
    let source = server.open_account(&customer, "USD").await;
    let destination = server.open_account(&customer, "USD").await;
    server.fund(&source, dec!(100)).await;
    server.engine.set_transfer_type(
        tally_engine::TransferKind::Internal,
        tally_engine::TransferTypeSettings {
            execution_mode: tally_engine::ExecutionMode::Manual,
            ..tally_engine::TransferTypeSettings::internal_default()
        },
    );
    let key = format!("quarantined-{}", uuid::Uuid::new_v4().simple());
    let body =
        json!({"type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": "10"});
    let created = server.post_keyed("/v1/transfers", Some(&customer.token), &key, body.clone()).await;
    created.assert_status(202);
    let id = created.str("id");

    // The destination's actor keeps failing: quarantined (the default bound is 5 restarts).
    let engine = &server.engine;
    let (from, to) = (account_id(&destination), account_id(&source));
    let request = tally_tests::internal_request(
        engine,
        &engine.account(from).await.unwrap(),
        &engine.account(to).await.unwrap(),
        dec!(1),
    );
    engine.faults().arm_panics(tally_actors::ActorKind::Account, 5);
    assert!(engine.transfer(request).await.is_err());
    engine.faults().disarm();
    assert!(engine.accounts().is_quarantined(from));

    let path = format!("/v1/admin/transfers/{id}/execute");
    let execute = || server.post_empty(&path, Some(&admin.token));
    let refused = execute().await;
    assert_eq!((refused.status, refused.body["code"].as_str()), (503, Some("QUARANTINED")), "{}", refused.text);
    let stored = server.get(&format!("/v1/admin/transfers/{id}"), Some(&admin.token)).await;
    assert_eq!(stored.str("status"), "pending", "{}", stored.text);
    assert_eq!(server.position(&source).await, (dec!(100.00), dec!(10.00)), "still held");
    let replay = server.post_keyed("/v1/transfers", Some(&customer.token), &key, body.clone()).await;
    assert_eq!((replay.status, replay.str("status")), (202, "pending".to_owned()), "{}", replay.text);

    engine.release_account_quarantine(from);
    execute().await.assert_status(204);
    assert_eq!(server.position(&source).await, (dec!(90.00), dec!(0.00)));
    assert_eq!(server.position(&destination).await, (dec!(10.00), dec!(0.00)));
    let replay = server.post_keyed("/v1/transfers", Some(&customer.token), &key, body).await;
    assert_eq!(replay.str("status"), "completed", "{}", replay.text);
    server.shutdown().await;
}

/// An execution whose destination refuses the credit (blocked since the transfer was made)
/// still decided the pending transfer: it ends `failed`, its hold released, and the admin's
/// `transfer.execute` entry is committed with that outcome (there was none: the change was
/// unaudited, found by a review).
async fn an_execute_the_destination_refuses_ends_the_transfer_failed_with_its_audit_entry(server: TestServer) {
    let admin = server.admin(&["transfers:execute", "transfers:read", "accounts:close", "audit:read"]).await;
    let customer = server.user().await;
    let source = server.open_account(&customer, "USD").await;
    let destination = server.open_account(&customer, "USD").await;
    server.fund(&source, dec!(100)).await;
    server.engine.set_transfer_type(
        tally_engine::TransferKind::Internal,
        tally_engine::TransferTypeSettings {
            execution_mode: tally_engine::ExecutionMode::Manual,
            ..tally_engine::TransferTypeSettings::internal_default()
        },
    );
    let body =
        json!({"type": "internal", "source_account_id": source, "destination_account_id": destination, "amount": "10"});
    let created = server.post("/v1/transfers", Some(&customer.token), body).await;
    created.assert_status(202);
    let id = created.str("id");
    server
        .post(
            &format!("/v1/admin/accounts/{destination}/status"),
            Some(&admin.token),
            json!({"action": "block", "reason": "review"}),
        )
        .await
        .assert_status(204);

    let refused = server.post_empty(&format!("/v1/admin/transfers/{id}/execute"), Some(&admin.token)).await;
    refused.assert_problem(422, "ACCOUNT_NOT_ACTIVE");
    let stored = server.get(&format!("/v1/admin/transfers/{id}"), Some(&admin.token)).await;
    assert_eq!(stored.str("status"), "failed", "{}", stored.text);
    assert_eq!(server.position(&source).await, (dec!(100.00), dec!(0.00)), "the hold is released");
    assert_eq!(server.position(&destination).await, (dec!(0.00), dec!(0.00)));

    let log = server.get(&format!("/v1/admin/audit?target_id={id}"), Some(&admin.token)).await;
    log.assert_status(200);
    let entries = log.body["items"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", log.text);
    assert_eq!(entries[0]["action"], "transfer.execute", "{}", log.text);
    assert_eq!(entries[0]["actor"]["id"], admin.user_id.as_str(), "{}", log.text);
    assert!(entries[0]["details"].get("status").is_none(), "the outcome, not the entry, says how it ended");
    server.shutdown().await;
}

/// API.md 1.1: `GET /v1/admin/wallets?asset&user_id&cursor&limit` and `GET /v1/admin/wallets/{id}`
/// (`accounts:read`), wallets with holds. They were not served at all (`404` for both; found by
/// a review). Newest first, filtered, paged by an opaque cursor, with a pending withdrawal's
/// hold shown; bad filters are `400` and an unknown wallet `404`.
async fn admins_list_and_read_every_customer_s_wallets_with_their_holds(server: TestServer) {
    let admin = server.admin(&["accounts:read"]).await;
    let (alice, bob) = (server.user().await, server.user().await);
    let open = |user: &tally_tests::http::TestUser, asset: &'static str| {
        let token = user.token.clone();
        let server = &server;
        async move {
            let reply = server.post("/v1/wallets", Some(&token), json!({"asset": asset})).await;
            reply.assert_status(201);
            (reply.str("id"), reply.str("deposit_address"))
        }
    };
    let (alice_btc, _) = open(&alice, "BTC").await;
    let (alice_eth, alice_eth_address) = open(&alice, "ETH").await;
    let (bob_eth, _) = open(&bob, "ETH").await;
    // Alice's ETH: 2 deposited, 0.5 held by a pending withdrawal.
    server
        .engine
        .deposit(tally_actors::DepositTarget::Address(alice_eth_address), dec!(2), "0xadmin-wallets".into())
        .await
        .unwrap();
    let owner = tally_engine::UserId::from_uuid(uuid::Uuid::parse_str(&alice.user_id).unwrap());
    let wallet = tally_engine::WalletId::from_uuid(uuid::Uuid::parse_str(&alice_eth).unwrap());
    let (withdrawal, _) = server.engine.withdraw(owner, wallet, dec!(0.5), "0xaway".into(), None).await.unwrap();

    let one = server.get(&format!("/v1/admin/wallets/{alice_eth}"), Some(&admin.token)).await;
    one.assert_status(200);
    assert_eq!(
        (one.str("owner_id"), one.str("asset"), one.str("balance"), one.str("held")),
        (alice.user_id.clone(), "ETH".to_owned(), "2.000000000000000000".to_owned(), "0.500000000000000000".to_owned()),
        "{}",
        one.text
    );
    assert_eq!(
        one.body["holds"],
        json!([{"transfer_id": withdrawal.id.to_string(), "amount": "0.500000000000000000"}])
    );
    server
        .get(&format!("/v1/admin/wallets/{}", uuid::Uuid::new_v4()), Some(&admin.token))
        .await
        .assert_problem(404, "NOT_FOUND");

    let ids = |reply: &tally_tests::http::Reply| -> Vec<String> {
        reply.body["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect()
    };
    let mine = server.get(&format!("/v1/admin/wallets?user_id={}", alice.user_id), Some(&admin.token)).await;
    assert_eq!(ids(&mine), vec![alice_eth.clone(), alice_btc.clone()], "newest first: {}", mine.text);
    let eth = server.get(&format!("/v1/admin/wallets?asset=ETH&user_id={}", bob.user_id), Some(&admin.token)).await;
    assert_eq!(ids(&eth), vec![bob_eth.clone()]);
    // Paged one at a time over every ETH wallet: each exactly once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/admin/wallets?asset=ETH&limit=1&cursor={cursor}"),
            None => "/v1/admin/wallets?asset=ETH&limit=1".to_owned(),
        };
        let page = server.get(&path, Some(&admin.token)).await;
        page.assert_status(200);
        seen.extend(ids(&page));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let position = |id: &String| seen.iter().position(|seen| seen == id).unwrap();
    assert!(position(&bob_eth) < position(&alice_eth), "newest first: {seen:?}");
    assert_eq!(seen.len(), seen.iter().collect::<std::collections::BTreeSet<_>>().len(), "each once: {seen:?}");
    assert!(!seen.contains(&alice_btc));
    for bad in ["asset=DOGE", "user_id=nope", "limit=0", "limit=201", "cursor=garbage", "colour=blue"] {
        server
            .get(&format!("/v1/admin/wallets?{bad}"), Some(&admin.token))
            .await
            .assert_problem(400, "VALIDATION_ERROR");
    }
    let customer_token = alice.token.clone();
    server.get("/v1/admin/wallets", Some(&customer_token)).await.assert_problem(403, "FORBIDDEN");
    server.shutdown().await;
}

/// API.md, conventions: money "more decimals than the currency allows ... -> 400
/// VALIDATION_ERROR", and `input::credit_limit` says "like an amount, but zero is allowed"
/// (its unit test: "allow zero but not negatives or extra decimals"). A zero written with more
/// decimals than the currency has ("0.000" USD, "0.0" JPY) was accepted and opened an account
/// (found by a review): `parse_amount` reports it as `NotPositive` before its decimals, and
/// `credit_limit` turned every `NotPositive` into a zero limit.
async fn a_credit_limit_with_more_decimals_than_the_currency_is_refused(server: TestServer) {
    let admin = server.admin(&["accounts:write"]).await;
    let customer = server.user().await;
    for (currency, limit) in [("USD", "0.000"), ("JPY", "0.0"), ("USD", "1.000")] {
        let reply = server
            .post(
                "/v1/admin/accounts",
                Some(&admin.token),
                json!({"user_id": customer.user_id, "currency": currency, "credit_limit": limit}),
            )
            .await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec!["credit_limit"], "{currency} {limit}");
    }
    let listed = server.get("/v1/accounts", Some(&customer.token)).await;
    assert_eq!(listed.body["items"], json!([]), "a refused request opens nothing");
    server.shutdown().await;
}
