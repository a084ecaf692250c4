//! Admin users and permissions over a real socket: listing users a page at a time, creating
//! admins, granting and revoking permission actions (effective on the next request), blocking
//! and unblocking, and the permission catalog. Each route: happy path, bad input (400), no
//! token (401), missing permission (403), unknown user (404), and the self-lockout rules
//! (409).

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use serde_json::{Value, json};
use tally_http::auth::admin_users::ACTIONS_PER_REQUEST_MAX;
use tally_http::auth::permissions::Action;
use tally_tests::http::{PASSWORD, Reply, TestServer};
use tally_tests::on_both_stores;

on_both_stores!(
    users_are_listed_a_page_at_a_time_and_filtered_by_status,
    listing_users_refuses_bad_queries_missing_tokens_and_missing_permissions,
    an_admin_creates_an_admin_holding_exactly_the_granted_actions,
    creating_an_admin_refuses_bad_input_escalation_and_taken_emails,
    granted_and_revoked_permissions_take_effect_on_the_next_request,
    granting_and_revoking_refuse_bad_input_unknown_users_and_self_lockout,
    setting_a_users_status_refuses_bad_input_unknown_users_and_self_blocking,
    the_permission_catalog_lists_every_action_with_its_description,
    an_admin_whose_session_ended_is_refused_on_admin_routes,
    users_are_searched_filtered_and_counted,
    one_user_is_shown_with_roles_verification_mfa_and_sessions,
    an_admin_edits_a_profile_and_sets_the_verification_level,
    an_admin_password_reset_ends_every_session_and_mails_a_code,
    an_admin_lists_and_ends_a_users_sessions_at_once,
    the_admin_user_views_refuse_bad_input,
    a_lesser_admin_cannot_change_an_admin_holding_more_actions,
);

async fn delete_json(server: &TestServer, path: &str, token: Option<&str>, body: Value) -> Reply {
    let request = server.client.delete(server.url(path)).json(&body);
    server.send(if let Some(token) = token { request.bearer_auth(token) } else { request }).await
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|item| item.as_str().unwrap().to_owned()).collect()
}

async fn users_are_listed_a_page_at_a_time_and_filtered_by_status(server: TestServer) {
    let admin = server.admin(&["users:read", "users:block"]).await;
    let mut created = HashSet::new();
    for _ in 0..5 {
        created.insert(server.user().await.user_id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/admin/users?limit=2&cursor={cursor}"),
            None => "/v1/admin/users?limit=2".to_owned(),
        };
        let page = server.get(&path, Some(&admin.token)).await;
        page.assert_status(200);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        for item in items {
            seen.push(item["user_id"].as_str().unwrap().to_owned());
            assert!(item["email"].as_str().unwrap().contains('@'));
            assert!(item["permissions"].is_array());
            assert!(item["created_at"].as_str().unwrap().ends_with('Z'));
        }
        pages += 1;
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(seen.len(), 6, "five users and the admin, each once: {seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len(), "no user on two pages");
    assert!(created.iter().all(|id| seen.contains(id)));
    let admin_row = server.get("/v1/admin/users?limit=200", Some(&admin.token)).await;
    let admin_item = admin_row.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["user_id"] == admin.user_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(strings(&admin_item["permissions"]), ["users:block", "users:read"]);

    let blocked = created.iter().next().unwrap().clone();
    server
        .post(&format!("/v1/admin/users/{blocked}/status"), Some(&admin.token), json!({"status": "blocked"}))
        .await
        .assert_status(204);
    let only_blocked = server.get("/v1/admin/users?status=blocked", Some(&admin.token)).await;
    only_blocked.assert_status(200);
    let items = only_blocked.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["user_id"], blocked.as_str());
    assert_eq!(items[0]["status"], "blocked");
    assert_eq!(only_blocked.body["next_cursor"], Value::Null);
    let active = server.get("/v1/admin/users?status=active", Some(&admin.token)).await;
    assert_eq!(active.body["items"].as_array().unwrap().len(), 5);
    server.shutdown().await;
}

async fn listing_users_refuses_bad_queries_missing_tokens_and_missing_permissions(server: TestServer) {
    let admin = server.admin(&["users:read"]).await;
    for query in
        ["limit=0", "limit=201", "limit=ten", "limit=-1", "status=deleted", "cursor=not-a-cursor", "colour=red"]
    {
        server
            .get(&format!("/v1/admin/users?{query}"), Some(&admin.token))
            .await
            .assert_problem(400, "VALIDATION_ERROR");
    }
    server.get("/v1/admin/users", None).await.assert_problem(401, "UNAUTHENTICATED");
    let customer = server.user().await;
    server.get("/v1/admin/users", Some(&customer.token)).await.assert_problem(403, "FORBIDDEN");
    let other_admin = server.admin(&["users:block"]).await;
    server.get("/v1/admin/users", Some(&other_admin.token)).await.assert_problem(403, "FORBIDDEN");
    server.shutdown().await;
}

fn new_admin_body(actions: Value) -> Value {
    json!({
        "email": format!("new-admin-{}@example.com", uuid::Uuid::new_v4().simple()),
        "password": PASSWORD,
        "first_name": "New",
        "last_name": "Admin",
        "actions": actions,
    })
}

async fn an_admin_creates_an_admin_holding_exactly_the_granted_actions(server: TestServer) {
    let manager = server.admin(&["admin_users:manage", "users:read", "ops:read"]).await;
    let body = new_admin_body(json!(["users:read", "ops:read", "users:read"]));
    let created = server.post("/v1/admin/users", Some(&manager.token), body.clone()).await;
    created.assert_status(201);
    let user_id = created.str("user_id");
    assert_eq!(created.headers["location"], format!("/v1/admin/users/{user_id}").as_str());

    let login = server.login(body["email"].as_str().unwrap(), PASSWORD).await;
    login.assert_status(200);
    let token = login.str("access_token");
    let me = server.get("/v1/users/me", Some(&token)).await;
    assert_eq!(me.str("user_id"), user_id);
    assert_eq!(strings(&me.body["permissions"]), ["ops:read", "users:read"], "duplicates count once");
    server.get("/v1/admin/users", Some(&token)).await.assert_status(200);
    server.get("/v1/admin/actors", Some(&token)).await.assert_status(200);
    server.get("/v1/admin/permissions", Some(&token)).await.assert_problem(403, "FORBIDDEN");

    // Replayed: the same body again is a taken email, and nothing changes.
    server.post("/v1/admin/users", Some(&manager.token), body).await.assert_problem(409, "CONFLICT");
    server.shutdown().await;
}

async fn creating_an_admin_refuses_bad_input_escalation_and_taken_emails(server: TestServer) {
    let manager = server.admin(&["admin_users:manage", "users:read"]).await;
    let token = Some(manager.token.as_str());
    let unknown = server.post("/v1/admin/users", token, new_admin_body(json!(["users:read", "users:fly"]))).await;
    unknown.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(unknown.error_fields(), ["actions"]);
    server.post("/v1/admin/users", token, new_admin_body(json!([]))).await.assert_problem(400, "VALIDATION_ERROR");
    let too_many = vec!["users:read"; ACTIONS_PER_REQUEST_MAX + 1];
    server
        .post("/v1/admin/users", token, new_admin_body(json!(too_many)))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    server
        .post("/v1/admin/users", token, new_admin_body(json!("users:read")))
        .await
        .assert_problem(400, "VALIDATION_ERROR");

    let mut weak = new_admin_body(json!(["users:read"]));
    weak["password"] = json!("short");
    weak["email"] = json!("not-an-email");
    let weak = server.post("/v1/admin/users", token, weak).await;
    weak.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(weak.error_fields(), ["email", "password"], "every problem at once");

    let mut missing = new_admin_body(json!(["users:read"]));
    missing.as_object_mut().unwrap().remove("actions");
    server.post("/v1/admin/users", token, missing).await.assert_problem(400, "VALIDATION_ERROR");
    server
        .post_raw("/v1/admin/users", token, "application/json", b"{\"email\":".to_vec())
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    server
        .post_raw("/v1/admin/users", token, "application/json", vec![b' '; tally_http::BODY_BYTES_MAX + 1])
        .await
        .assert_problem(413, "VALIDATION_ERROR");

    // Granting what one does not hold is not a way to escalate.
    server
        .post("/v1/admin/users", token, new_admin_body(json!(["transfers:execute"])))
        .await
        .assert_problem(403, "FORBIDDEN");
    let taken = new_admin_body(json!(["users:read"]));
    let mut taken = taken;
    taken["email"] = json!(manager.email.to_uppercase());
    server.post("/v1/admin/users", token, taken).await.assert_problem(409, "CONFLICT");

    server
        .post("/v1/admin/users", None, new_admin_body(json!(["users:read"])))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    let reader = server.admin(&["users:read"]).await;
    server
        .post("/v1/admin/users", Some(&reader.token), new_admin_body(json!(["users:read"])))
        .await
        .assert_problem(403, "FORBIDDEN");
    // Nothing was created by any refused request: only the two admins and no one else.
    let listed = server.get("/v1/admin/users?limit=200", Some(&manager.token)).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2, "{}", listed.text);
    server.shutdown().await;
}

async fn granted_and_revoked_permissions_take_effect_on_the_next_request(server: TestServer) {
    // Holding ops:read too: revoking from an admin needs every action they hold.
    let manager = server.admin(&["admin_users:manage", "users:read", "ops:read"]).await;
    let target = server.admin(&["ops:read"]).await;
    let path = format!("/v1/admin/users/{}/permissions", target.user_id);
    server.get("/v1/admin/users", Some(&target.token)).await.assert_problem(403, "FORBIDDEN");

    server.post(&path, Some(&manager.token), json!({"actions": ["users:read"]})).await.assert_status(204);
    server.get("/v1/admin/users", Some(&target.token)).await.assert_status(200);
    // Replayed: granting again is still 204 and the action is held once.
    server.post(&path, Some(&manager.token), json!({"actions": ["users:read"]})).await.assert_status(204);
    let me = server.get("/v1/users/me", Some(&target.token)).await;
    assert_eq!(strings(&me.body["permissions"]), ["ops:read", "users:read"]);

    delete_json(&server, &path, Some(&manager.token), json!({"actions": ["users:read"]})).await.assert_status(204);
    server.get("/v1/admin/users", Some(&target.token)).await.assert_problem(403, "FORBIDDEN");
    delete_json(&server, &path, Some(&manager.token), json!({"actions": ["users:read"]})).await.assert_status(204);
    server.get("/v1/admin/actors", Some(&target.token)).await.assert_status(200);

    // A customer can be made an admin the same way.
    let customer = server.user().await;
    server
        .post(
            &format!("/v1/admin/users/{}/permissions", customer.user_id),
            Some(&manager.token),
            json!({"actions": ["users:read"]}),
        )
        .await
        .assert_status(204);
    server.get("/v1/admin/users", Some(&customer.token)).await.assert_status(200);
    server.shutdown().await;
}

async fn granting_and_revoking_refuse_bad_input_unknown_users_and_self_lockout(server: TestServer) {
    let manager = server.admin(&["admin_users:manage", "users:read"]).await;
    let target = server.user().await;
    let token = Some(manager.token.as_str());
    let path = format!("/v1/admin/users/{}/permissions", target.user_id);
    let unknown_user = format!("/v1/admin/users/{}/permissions", uuid::Uuid::new_v4());
    server.post(&unknown_user, token, json!({"actions": ["users:read"]})).await.assert_problem(404, "NOT_FOUND");
    delete_json(&server, &unknown_user, token, json!({"actions": ["users:read"]}))
        .await
        .assert_problem(404, "NOT_FOUND");
    server
        .post("/v1/admin/users/not-a-uuid/permissions", token, json!({"actions": ["users:read"]}))
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    for bad in [
        json!({"actions": ["users:fly"]}),
        json!({"actions": []}),
        json!({}),
        json!({"actions": "users:read"}),
        json!({"actions": ["users:read"], "extra": 1}),
    ] {
        server.post(&path, token, bad.clone()).await.assert_problem(400, "VALIDATION_ERROR");
        delete_json(&server, &path, token, bad).await.assert_problem(400, "VALIDATION_ERROR");
    }
    server.post(&path, token, json!({"actions": ["transfers:execute"]})).await.assert_problem(403, "FORBIDDEN");
    server.post(&path, None, json!({"actions": ["users:read"]})).await.assert_problem(401, "UNAUTHENTICATED");
    delete_json(&server, &path, None, json!({"actions": ["users:read"]})).await.assert_problem(401, "UNAUTHENTICATED");
    let reader = server.admin(&["users:read"]).await;
    server.post(&path, Some(&reader.token), json!({"actions": ["users:read"]})).await.assert_problem(403, "FORBIDDEN");
    delete_json(&server, &path, Some(&reader.token), json!({"actions": ["users:read"]}))
        .await
        .assert_problem(403, "FORBIDDEN");

    // No admin can take their own management right away; another admin can.
    let own = format!("/v1/admin/users/{}/permissions", manager.user_id);
    delete_json(&server, &own, token, json!({"actions": ["admin_users:manage"]})).await.assert_problem(409, "CONFLICT");
    delete_json(&server, &own, token, json!({"actions": ["users:read"]})).await.assert_status(204);
    let me = server.get("/v1/users/me", token).await;
    assert_eq!(strings(&me.body["permissions"]), ["admin_users:manage"]);
    let other = server.admin(&["admin_users:manage"]).await;
    delete_json(&server, &own, Some(&other.token), json!({"actions": ["admin_users:manage"]})).await.assert_status(204);
    server.post(&path, token, json!({"actions": ["users:read"]})).await.assert_problem(403, "FORBIDDEN");
    let me = server.get("/v1/users/me", Some(&target.token)).await;
    assert_eq!(me.body["permissions"], json!([]), "no refused request granted anything");
    server.shutdown().await;
}

async fn setting_a_users_status_refuses_bad_input_unknown_users_and_self_blocking(server: TestServer) {
    // Holding users:read too: blocking an admin below needs every action they hold.
    let admin = server.admin(&["users:block", "users:read"]).await;
    let user = server.user().await;
    let token = Some(admin.token.as_str());
    let path = format!("/v1/admin/users/{}/status", user.user_id);
    for bad in [
        json!({"status": "deleted"}),
        json!({}),
        json!({"status": "blocked", "reason": "x".repeat(501)}),
        json!({"status": "blocked", "reason": "bad\u{0}reason"}),
        json!({"status": "blocked", "colour": "red"}),
    ] {
        server.post(&path, token, bad).await.assert_problem(400, "VALIDATION_ERROR");
    }
    server.post_raw(&path, token, "text/plain", b"blocked".to_vec()).await.assert_status(415);
    server
        .post(&format!("/v1/admin/users/{}/status", uuid::Uuid::new_v4()), token, json!({"status": "blocked"}))
        .await
        .assert_problem(404, "NOT_FOUND");
    server
        .post(&format!("/v1/admin/users/{}/status", admin.user_id), token, json!({"status": "blocked"}))
        .await
        .assert_problem(409, "CONFLICT");
    server.post(&path, None, json!({"status": "blocked"})).await.assert_problem(401, "UNAUTHENTICATED");
    let reader = server.admin(&["users:read"]).await;
    server.post(&path, Some(&reader.token), json!({"status": "blocked"})).await.assert_problem(403, "FORBIDDEN");
    // None of the refused requests blocked anyone.
    server.get("/v1/users/me", Some(&user.token)).await.assert_status(200);
    server.get("/v1/users/me", token).await.assert_status(200);

    // Blocking an admin ends their admin access too, at once.
    server
        .post(
            &format!("/v1/admin/users/{}/status", reader.user_id),
            token,
            json!({"status": "blocked", "reason": "left"}),
        )
        .await
        .assert_status(204);
    server.get("/v1/admin/users", Some(&reader.token)).await.assert_problem(401, "UNAUTHENTICATED");
    server.shutdown().await;
}

async fn the_permission_catalog_lists_every_action_with_its_description(server: TestServer) {
    let admin = server.admin(&["admin_users:read"]).await;
    let catalog = server.get("/v1/admin/permissions", Some(&admin.token)).await;
    catalog.assert_status(200);
    let entries = catalog.body.as_array().unwrap();
    assert_eq!(entries.len(), Action::ALL.len());
    for (entry, action) in entries.iter().zip(Action::ALL) {
        assert_eq!(entry["action"], action.as_str());
        assert_eq!(entry["description"], action.description());
        assert!(!action.description().is_empty());
    }
    server.get("/v1/admin/permissions", None).await.assert_problem(401, "UNAUTHENTICATED");
    let other = server.admin(&["users:read"]).await;
    server.get("/v1/admin/permissions", Some(&other.token)).await.assert_problem(403, "FORBIDDEN");
    server.shutdown().await;
}

async fn an_admin_whose_session_ended_is_refused_on_admin_routes(server: TestServer) {
    let admin = server.admin(&["admin_users:read"]).await;
    server.get("/v1/admin/permissions", Some(&admin.token)).await.assert_status(200);
    server.post_empty("/v1/auth/logout", Some(&admin.token)).await.assert_status(204);
    server.get("/v1/admin/permissions", Some(&admin.token)).await.assert_problem(401, "UNAUTHENTICATED");
    server.shutdown().await;
}

async fn count(server: &TestServer, token: &str, query: &str) -> u64 {
    let reply = server.get(&format!("/v1/admin/users/count{query}"), Some(token)).await;
    reply.assert_status(200);
    reply.body["count"].as_u64().unwrap()
}

async fn listed_ids(server: &TestServer, token: &str, query: &str) -> Vec<String> {
    let reply = server.get(&format!("/v1/admin/users{query}"), Some(token)).await;
    reply.assert_status(200);
    reply.body["items"].as_array().unwrap().iter().map(|item| item["user_id"].as_str().unwrap().to_owned()).collect()
}

async fn users_are_searched_filtered_and_counted(server: TestServer) {
    let admin = server.admin(&["users:read", "users:block", "users:verify", "users:write"]).await;
    let ada = server.user().await;
    let grace = server.user().await;
    server
        .patch(
            &format!("/v1/admin/users/{}", ada.user_id),
            Some(&admin.token),
            json!({"first_name": "Augusta", "last_name": "Lovelace"}),
        )
        .await
        .assert_status(200);
    server
        .post(
            &format!("/v1/admin/users/{}/verification", grace.user_id),
            Some(&admin.token),
            json!({"level": "verified"}),
        )
        .await
        .assert_status(204);
    server
        .post(&format!("/v1/admin/users/{}/status", grace.user_id), Some(&admin.token), json!({"status": "blocked"}))
        .await
        .assert_status(204);

    let everyone = count(&server, &admin.token, "").await;
    assert_eq!(everyone, 3, "two users and the admin");
    // Search: part of the email, the start of a name (any ASCII case), the start of the id.
    let local = ada.email.split('@').next().unwrap().to_owned();
    assert_eq!(
        listed_ids(&server, &admin.token, &format!("?search={}", &local[5..15])).await,
        vec![ada.user_id.clone()]
    );
    assert_eq!(listed_ids(&server, &admin.token, "?search=LOVE").await, vec![ada.user_id.clone()]);
    // Search terms with a letter beyond `f`: the other users' emails are hex, and "ada" was
    // found in one of them about once in seventy runs.
    assert_eq!(listed_ids(&server, &admin.token, "?search=aug").await, vec![ada.user_id.clone()]);
    // Ids are time-ordered (UUIDv7): users made moments apart share their first characters,
    // so the prefix runs into the milliseconds and the bits after them.
    assert_eq!(
        listed_ids(&server, &admin.token, &format!("?search={}", &grace.user_id[..18])).await,
        vec![grace.user_id.clone()]
    );
    assert_eq!(count(&server, &admin.token, "?search=LOVE").await, 1);
    // LIKE's wildcards are plain text in a search.
    assert_eq!(count(&server, &admin.token, "?search=%25").await, 0);
    assert_eq!(count(&server, &admin.token, "?search=_").await, 0);
    assert_eq!(count(&server, &admin.token, "?search=nobody-matches-this").await, 0);
    // Filters, alone and together.
    assert_eq!(listed_ids(&server, &admin.token, "?verification_level=verified").await, vec![grace.user_id.clone()]);
    assert_eq!(count(&server, &admin.token, "?verification_level=none").await, 2);
    assert_eq!(count(&server, &admin.token, "?status=blocked").await, 1);
    assert_eq!(count(&server, &admin.token, "?status=blocked&verification_level=none").await, 0);
    assert_eq!(count(&server, &admin.token, "?status=active&search=aug").await, 1);
    server.shutdown().await;
}

async fn one_user_is_shown_with_roles_verification_mfa_and_sessions(server: TestServer) {
    let admin = server.admin(&["users:read", "admin_users:manage"]).await;
    let user = server.user().await;
    server.session_of(&user.email, PASSWORD).await;
    let view = server.get(&format!("/v1/admin/users/{}", user.user_id), Some(&admin.token)).await;
    view.assert_status(200);
    let body = &view.body;
    assert_eq!(body["user_id"], user.user_id);
    assert_eq!(body["email"], user.email);
    assert_eq!(body["status"], "active");
    assert_eq!(body["verification_level"], "none", "the default");
    assert_eq!(body["email_verified"], false);
    assert_eq!(body["mfa"], json!({"totp_enabled": false}));
    assert_eq!(body["sessions_active"], 2);
    assert_eq!(body["roles"], json!([]));
    assert_eq!(body["permissions"], json!([]));
    // The listing shows the same user the same way.
    let listed = server.get(&format!("/v1/admin/users?search={}", user.user_id), Some(&admin.token)).await;
    let item = &listed.body["items"][0];
    for field in ["email", "verification_level", "email_verified", "mfa", "roles", "permissions", "sessions_active"] {
        assert_eq!(item[field], body[field], "{field}");
    }
    server
        .get(&format!("/v1/admin/users/{}", uuid::Uuid::new_v4()), Some(&admin.token))
        .await
        .assert_problem(404, "NOT_FOUND");
    server.shutdown().await;
}

async fn an_admin_edits_a_profile_and_sets_the_verification_level(server: TestServer) {
    let admin = server.admin(&["users:write", "users:verify", "users:read", "audit:read"]).await;
    let user = server.user().await;
    let path = format!("/v1/admin/users/{}", user.user_id);
    let edited = server.patch(&path, Some(&admin.token), json!({"last_name": "Hopper", "phone": "+15555550100"})).await;
    edited.assert_status(200);
    assert_eq!(edited.body["last_name"], "Hopper");
    assert_eq!(edited.body["phone"], "+15555550100");
    assert_eq!(server.get("/v1/users/me", Some(&user.token)).await.body["last_name"], "Hopper");
    server.patch(&path, Some(&admin.token), json!({"phone": "555"})).await.assert_problem(400, "VALIDATION_ERROR");
    server.patch(&path, Some(&admin.token), json!({"email": "x@y.zz"})).await.assert_problem(400, "VALIDATION_ERROR");
    server
        .patch(&format!("/v1/admin/users/{}", uuid::Uuid::new_v4()), Some(&admin.token), json!({"last_name": "X"}))
        .await
        .assert_problem(404, "NOT_FOUND");

    let verification = format!("/v1/admin/users/{}/verification", user.user_id);
    let verify = |body: Value| server.post(&verification, Some(&admin.token), body);
    verify(json!({"level": "enhanced", "notes": "passport and proof of address"})).await.assert_status(204);
    assert_eq!(server.get(&path, Some(&admin.token)).await.body["verification_level"], "enhanced");
    assert_eq!(server.get("/v1/users/me", Some(&user.token)).await.body["verification_level"], "enhanced");
    verify(json!({"level": "basic"})).await.assert_status(204);
    for bad in
        [json!({"level": "gold"}), json!({}), json!({"level": 3}), json!({"level": "basic", "notes": "x".repeat(501)})]
    {
        verify(bad).await.assert_problem(400, "VALIDATION_ERROR");
    }
    assert_eq!(server.get(&path, Some(&admin.token)).await.body["verification_level"], "basic", "nothing changed");
    server
        .post(
            &format!("/v1/admin/users/{}/verification", uuid::Uuid::new_v4()),
            Some(&admin.token),
            json!({"level": "basic"}),
        )
        .await
        .assert_problem(404, "NOT_FOUND");
    let log = server.get("/v1/admin/audit?action=user.verification", Some(&admin.token)).await;
    let entries = log.body["items"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[1]["details"],
        json!({"level": "enhanced", "previous_level": "none", "notes": "passport and proof of address"})
    );
    // The notes are the admins' record, not the user's activity.
    let activity = server.get("/v1/users/me/activity?limit=200", Some(&user.token)).await;
    assert!(!activity.text.contains("passport"));
    server.shutdown().await;
}

async fn an_admin_password_reset_ends_every_session_and_mails_a_code(server: TestServer) {
    let admin = server.admin(&["users:write"]).await;
    let user = server.user().await;
    let second = server.session_of(&user.email, PASSWORD).await;
    let path = format!("/v1/admin/users/{}/password-reset", user.user_id);
    let reset = server.post_empty(&path, Some(&admin.token)).await;
    reset.assert_status(202);
    for session in [&user, &second] {
        server.get("/v1/users/me", Some(&session.token)).await.assert_problem(401, "UNAUTHENTICATED");
    }
    let code = server.mail.next_code(&user.email, 0).await;
    // The current password keeps working until the user resets it.
    server.session_of(&user.email, PASSWORD).await;
    // Asking again replaces the code (a replay gives the user a fresh one).
    server.post_empty(&path, Some(&admin.token)).await.assert_status(202);
    let newer = server.mail.next_code(&user.email, 1).await;
    let reset_with = |code: String| {
        server.post(
            "/v1/auth/password/reset",
            None,
            json!({"email": user.email, "code": code, "new_password": "Adm1n!chosen"}),
        )
    };
    if newer != code {
        reset_with(code).await.assert_problem(400, "INVALID_CODE");
    }
    reset_with(newer).await.assert_status(204);
    server.login(&user.email, "Adm1n!chosen").await.assert_status(200);
    server
        .post_empty(&format!("/v1/admin/users/{}/password-reset", uuid::Uuid::new_v4()), Some(&admin.token))
        .await
        .assert_problem(404, "NOT_FOUND");
    server.shutdown().await;
}

async fn an_admin_lists_and_ends_a_users_sessions_at_once(server: TestServer) {
    let admin = server.admin(&["users:read", "users:block"]).await;
    let user = server.user().await;
    let second = server.session_of(&user.email, PASSWORD).await;
    let bystander = server.user().await;
    let path = format!("/v1/admin/users/{}/sessions", user.user_id);
    let listed = server.get(&path, Some(&admin.token)).await;
    listed.assert_status(200);
    let sessions = listed.body.as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["client_ip"], "127.0.0.1");
    assert!(sessions[0].get("current").is_none(), "no session of the admin's is the user's");
    let ended = delete_json(&server, &path, Some(&admin.token), json!({})).await;
    ended.assert_status(200);
    assert_eq!(ended.body, json!({"ended": 2}));
    for session in [&user, &second] {
        server.get("/v1/users/me", Some(&session.token)).await.assert_problem(401, "UNAUTHENTICATED");
    }
    server.get("/v1/users/me", Some(&bystander.token)).await.assert_status(200);
    assert_eq!(server.get(&path, Some(&admin.token)).await.body, json!([]));
    // A replay ends nothing; the user can log in again.
    assert_eq!(delete_json(&server, &path, Some(&admin.token), json!({})).await.body, json!({"ended": 0}));
    server.session_of(&user.email, PASSWORD).await;
    let unknown = format!("/v1/admin/users/{}/sessions", uuid::Uuid::new_v4());
    server.get(&unknown, Some(&admin.token)).await.assert_problem(404, "NOT_FOUND");
    delete_json(&server, &unknown, Some(&admin.token), json!({})).await.assert_problem(404, "NOT_FOUND");
    server.shutdown().await;
}

async fn the_admin_user_views_refuse_bad_input(server: TestServer) {
    let admin = server.admin(&["users:read", "users:write"]).await;
    for query in [
        "?search=",
        &format!("?search={}", "a".repeat(255)),
        "?search=%07",
        "?status=gone",
        "?verification_level=gold",
        "?limit=0",
        "?limit=201",
        "?cursor=not-a-cursor",
        "?sort=email",
    ] {
        server
            .get(&format!("/v1/admin/users{query}"), Some(&admin.token))
            .await
            .assert_problem(400, "VALIDATION_ERROR");
    }
    for query in ["?search=", "?status=gone", "?verification_level=gold", "?limit=5", "?cursor=x"] {
        server
            .get(&format!("/v1/admin/users/count{query}"), Some(&admin.token))
            .await
            .assert_problem(400, "VALIDATION_ERROR");
    }
    for path in ["/v1/admin/users/nope", "/v1/admin/users/nope/sessions"] {
        server.get(path, Some(&admin.token)).await.assert_problem(400, "VALIDATION_ERROR");
    }
    let user = server.user().await;
    let malformed = server
        .send(
            server
                .client
                .patch(server.url(&format!("/v1/admin/users/{}", user.user_id)))
                .bearer_auth(&admin.token)
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
    malformed.assert_problem(400, "VALIDATION_ERROR");
    server.shutdown().await;
}

/// Every admin route that changes another user refuses, with `403` and no change, a target who
/// holds an action the caller does not: a lesser admin cannot lock out, sign out, strip, reset
/// or edit a greater one. Customers and equals stay within reach.
async fn a_lesser_admin_cannot_change_an_admin_holding_more_actions(server: TestServer) {
    let common = ["users:read", "users:block", "users:write", "users:verify", "admin_users:manage", "admin_users:read"];
    let lesser = server.admin(&common).await;
    let greater = server.admin(&[&common[..], &["transfers:execute"]].concat()).await;
    let token = Some(lesser.token.as_str());
    let path = format!("/v1/admin/users/{}", greater.user_id);
    let before = server.get(&path, Some(&greater.token)).await;
    before.assert_status(200);

    let refused = [
        server.post(&format!("{path}/status"), token, json!({"status": "blocked"})).await,
        delete_json(&server, &format!("{path}/sessions"), token, json!({})).await,
        server.post_empty(&format!("{path}/password-reset"), token).await,
        server.patch(&path, token, json!({"first_name": "Mallory"})).await,
        server.post(&format!("{path}/verification"), token, json!({"level": "enhanced"})).await,
        delete_json(&server, &format!("{path}/permissions"), token, json!({"actions": ["transfers:execute"]})).await,
        delete_json(&server, &format!("{path}/permissions"), token, json!({"actions": ["users:read"]})).await,
    ];
    for reply in &refused {
        reply.assert_problem(403, "FORBIDDEN");
        assert!(reply.text.contains("transfers:execute"), "names what the caller lacks: {}", reply.text);
    }
    // Nothing changed: the greater admin is still signed in, active, unchanged.
    let after = server.get(&path, Some(&greater.token)).await;
    after.assert_status(200);
    for field in ["status", "first_name", "verification_level", "permissions", "sessions_active"] {
        assert_eq!(after.body[field], before.body[field], "{field} changed by a refused request");
    }

    // The other way round every one of them is allowed, and so is acting on a customer or on
    // an admin holding the same actions.
    let customer = server.user().await;
    server
        .post(&format!("/v1/admin/users/{}/status", customer.user_id), token, json!({"status": "blocked"}))
        .await
        .assert_status(204);
    let equal = server.admin(&common).await;
    delete_json(&server, &format!("/v1/admin/users/{}/sessions", equal.user_id), token, json!({}))
        .await
        .assert_status(200);
    server
        .post(&format!("/v1/admin/users/{}/status", lesser.user_id), Some(&greater.token), json!({"status": "blocked"}))
        .await
        .assert_status(204);
    server.get("/v1/users/me", Some(&lesser.token)).await.assert_problem(401, "UNAUTHENTICATED");
    server.shutdown().await;
}
