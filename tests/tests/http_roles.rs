//! Roles over a real socket, on SQLite and Postgres: a role's actions are the holder's from
//! their next request, changing or unassigning it takes them away at once, a role in use
//! cannot be deleted, and no admin escalates or locks themselves out through roles.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use serde_json::{Value, json};
use tally_http::auth::permissions::Action;
use tally_tests::http::{Reply, TestServer, TestUser};
use tally_tests::on_both_stores;

on_both_stores!(
    a_role_grants_on_the_next_request_and_changes_and_unassignment_take_effect_at_once,
    a_role_in_use_cannot_be_deleted,
    roles_are_validated_and_names_are_unique,
    no_admin_escalates_or_locks_themselves_out_through_roles,
    the_catalog_lists_the_new_actions_and_views_show_roles,
);

const MANAGE: &str = "admin_users:manage";

async fn create_role(server: &TestServer, admin: &TestUser, name: &str, actions: &[&str]) -> Reply {
    server.post("/v1/admin/roles", Some(&admin.token), json!({"name": name, "actions": actions})).await
}

async fn assign(server: &TestServer, admin: &TestUser, user: &TestUser, role: &str) -> Reply {
    server.post(&format!("/v1/admin/users/{}/roles", user.user_id), Some(&admin.token), json!({"role_id": role})).await
}

async fn unassign(server: &TestServer, admin: &TestUser, user: &TestUser, role: &str) -> Reply {
    server
        .send_with(
            Method::DELETE,
            &format!("/v1/admin/users/{}/roles/{role}", user.user_id),
            Some(&admin.token),
            None,
            None,
        )
        .await
}

async fn put_role(server: &TestServer, admin: &TestUser, role: &str, body: Value) -> Reply {
    server.send_with(Method::PUT, &format!("/v1/admin/roles/{role}"), Some(&admin.token), None, Some(body)).await
}

async fn a_role_grants_on_the_next_request_and_changes_and_unassignment_take_effect_at_once(server: TestServer) {
    // Holding ops:read as the clerk does: taking a role from an admin needs all their actions.
    let admin = server.admin(&[MANAGE, "audit:read", "users:read", "admin_users:read", "ops:read"]).await;
    let clerk = server.admin(&["ops:read"]).await;
    server.get("/v1/admin/audit", Some(&clerk.token)).await.assert_problem(403, "FORBIDDEN");

    let created = create_role(&server, &admin, "Auditor", &["audit:read", "users:read"]).await;
    created.assert_status(201);
    assert_eq!(created.body["actions"], json!(["audit:read", "users:read"]));
    assert_eq!(created.body["users"], 0);
    let role = created.str("id");
    assert_eq!(created.headers["location"], format!("/v1/admin/roles/{role}"));

    assign(&server, &admin, &clerk, &role).await.assert_status(204);
    // The very next request of the holder has the role's actions; the token is the same one.
    server.get("/v1/admin/audit", Some(&clerk.token)).await.assert_status(200);
    server.get("/v1/admin/users", Some(&clerk.token)).await.assert_status(200);
    let me = server.get("/v1/users/me", Some(&clerk.token)).await;
    assert_eq!(me.body["permissions"], json!(["audit:read", "ops:read", "users:read"]), "effective: direct and role");
    // Assigning again changes nothing.
    assign(&server, &admin, &clerk, &role).await.assert_status(204);
    assert_eq!(server.get(&format!("/v1/admin/roles/{role}"), Some(&admin.token)).await.body["users"], 1);

    // Changing the role changes every holder at once.
    let changed = put_role(&server, &admin, &role, json!({"name": "Auditor", "actions": ["users:read"]})).await;
    changed.assert_status(200);
    server.get("/v1/admin/audit", Some(&clerk.token)).await.assert_problem(403, "FORBIDDEN");
    server.get("/v1/admin/users", Some(&clerk.token)).await.assert_status(200);
    put_role(
        &server,
        &admin,
        &role,
        json!({"name": "Auditor", "actions": ["audit:read"], "description": "reads the log"}),
    )
    .await
    .assert_status(200);
    server.get("/v1/admin/audit", Some(&clerk.token)).await.assert_status(200);

    // Unassigning takes it away at once; unassigning again is a no-op.
    unassign(&server, &admin, &clerk, &role).await.assert_status(204);
    server.get("/v1/admin/audit", Some(&clerk.token)).await.assert_problem(403, "FORBIDDEN");
    unassign(&server, &admin, &clerk, &role).await.assert_status(204);
    assert_eq!(server.get("/v1/users/me", Some(&clerk.token)).await.body["permissions"], json!(["ops:read"]));

    // The audit log has one entry per change (the no-ops wrote none).
    let log = server.get("/v1/admin/audit?limit=200", Some(&admin.token)).await;
    let actions: Vec<&str> =
        log.body["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for (action, count) in [("role.create", 1), ("role.assign", 1), ("role.update", 2), ("role.unassign", 1)] {
        assert_eq!(actions.iter().filter(|a| **a == action).count(), count, "{action} in {actions:?}");
    }
    server.shutdown().await;
}

async fn a_role_in_use_cannot_be_deleted(server: TestServer) {
    let admin = server.admin(&[MANAGE, "ops:read", "admin_users:read"]).await;
    let holder = server.user().await;
    let role = create_role(&server, &admin, "operators", &["ops:read"]).await.str("id");
    assign(&server, &admin, &holder, &role).await.assert_status(204);
    let path = format!("/v1/admin/roles/{role}");
    let delete = || server.send_with(Method::DELETE, &path, Some(&admin.token), None, None);
    let in_use = delete().await;
    in_use.assert_problem(409, "CONFLICT");
    assert!(in_use.body["detail"].as_str().unwrap().contains("1 user"), "{}", in_use.text);
    server.get("/v1/admin/actors", Some(&holder.token)).await.assert_status(200);
    unassign(&server, &admin, &holder, &role).await.assert_status(204);
    delete().await.assert_status(204);
    delete().await.assert_problem(404, "NOT_FOUND");
    server.get(&format!("/v1/admin/roles/{role}"), Some(&admin.token)).await.assert_problem(404, "NOT_FOUND");
    assign(&server, &admin, &holder, &role).await.assert_problem(404, "NOT_FOUND");
    server.shutdown().await;
}

async fn roles_are_validated_and_names_are_unique(server: TestServer) {
    let admin = server.admin(&[MANAGE, "admin_users:read", "users:read"]).await;
    let role = create_role(&server, &admin, "Support", &["users:read"]).await.str("id");
    create_role(&server, &admin, " support ", &[]).await.assert_problem(409, "CONFLICT");
    let second = create_role(&server, &admin, "Second line", &[]).await;
    second.assert_status(201);
    put_role(&server, &admin, &second.str("id"), json!({"name": "SUPPORT", "actions": []}))
        .await
        .assert_problem(409, "CONFLICT");

    for (body, field) in [
        (json!({"name": "", "actions": []}), Some("name")),
        (json!({"name": "x".repeat(101), "actions": []}), Some("name")),
        (json!({"name": "ok", "actions": ["users:fly"]}), Some("actions")),
        (json!({"name": "ok", "actions": vec!["users:read"; 65]}), Some("actions")),
        (json!({"name": "ok", "actions": ["users:read"], "description": "a\u{7}b"}), Some("description")),
        (json!({"name": "ok"}), None),
        (json!({"name": 7, "actions": []}), None),
        (json!({"name": "ok", "actions": [], "level": "gold"}), None),
    ] {
        let reply = server.post("/v1/admin/roles", Some(&admin.token), body.clone()).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        if let Some(field) = field {
            assert_eq!(reply.error_fields(), vec![field], "{body}");
        }
    }
    let malformed =
        server.post_raw("/v1/admin/roles", Some(&admin.token), "application/json", b"{\"name\"".to_vec()).await;
    malformed.assert_problem(400, "VALIDATION_ERROR");
    // Bad ids.
    server.get("/v1/admin/roles/not-a-uuid", Some(&admin.token)).await.assert_problem(400, "VALIDATION_ERROR");
    put_role(&server, &admin, &uuid::Uuid::new_v4().to_string(), json!({"name": "n", "actions": []}))
        .await
        .assert_problem(404, "NOT_FOUND");
    let user = server.user().await;
    let bad_role = assign(&server, &admin, &user, "nope").await;
    bad_role.assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(bad_role.error_fields(), vec!["role_id"]);
    let ghost = TestUser { user_id: uuid::Uuid::new_v4().to_string(), ..user.clone() };
    assign(&server, &admin, &ghost, &role).await.assert_problem(404, "NOT_FOUND");
    unassign(&server, &admin, &ghost, &role).await.assert_problem(404, "NOT_FOUND");
    server
        .send_with(Method::DELETE, &format!("/v1/admin/users/{}/roles/x", user.user_id), Some(&admin.token), None, None)
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    // Nothing of that left a role behind.
    let roles = server.get("/v1/admin/roles", Some(&admin.token)).await;
    let names: Vec<&str> =
        roles.body["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Second line", "Support"], "by name");
    server.shutdown().await;
}

async fn no_admin_escalates_or_locks_themselves_out_through_roles(server: TestServer) {
    let boss = server.admin(&Action::ALL.map(|action| action.as_str())).await;
    let manager = server.admin(&[MANAGE, "users:read"]).await;
    let target = server.user().await;
    // A manager cannot define or hand out actions they do not hold.
    create_role(&server, &manager, "ops", &["ops:write"]).await.assert_problem(403, "FORBIDDEN");
    let ops = create_role(&server, &boss, "ops", &["ops:write"]).await.str("id");
    assign(&server, &manager, &target, &ops).await.assert_problem(403, "FORBIDDEN");
    put_role(&server, &manager, &ops, json!({"name": "ops", "actions": ["ops:write", "ops:read"]}))
        .await
        .assert_problem(403, "FORBIDDEN");
    // Nor take away actions they do not hold: emptying a greater admin's role, or taking the
    // role from them, would strip powers the manager could never grant back.
    assign(&server, &boss, &target, &ops).await.assert_status(204);
    put_role(&server, &manager, &ops, json!({"name": "ops", "actions": []})).await.assert_problem(403, "FORBIDDEN");
    unassign(&server, &manager, &target, &ops).await.assert_problem(403, "FORBIDDEN");
    let view = server.get(&format!("/v1/admin/users/{}", target.user_id), Some(&boss.token)).await;
    assert_eq!(view.body["permissions"], json!(["ops:write"]), "{}", view.text);
    unassign(&server, &boss, &target, &ops).await.assert_status(204);
    server.get("/v1/admin/actors", Some(&target.token)).await.assert_problem(403, "FORBIDDEN");

    // An admin who holds admin_users:manage only through a role cannot take it from themselves.
    let managers = create_role(&server, &boss, "managers", &[MANAGE]).await.str("id");
    let delegate = server.admin(&["users:read"]).await;
    assign(&server, &boss, &delegate, &managers).await.assert_status(204);
    unassign(&server, &delegate, &delegate, &managers).await.assert_problem(409, "CONFLICT");
    put_role(&server, &delegate, &managers, json!({"name": "managers", "actions": []}))
        .await
        .assert_problem(409, "CONFLICT");
    server
        .send_with(
            Method::DELETE,
            &format!("/v1/admin/users/{}/permissions", delegate.user_id),
            Some(&boss.token),
            None,
            Some(json!({"actions": ["users:read"]})),
        )
        .await
        .assert_status(204);
    // With the action held directly as well, giving up the role is fine.
    server
        .post(
            &format!("/v1/admin/users/{}/permissions", delegate.user_id),
            Some(&boss.token),
            json!({"actions": [MANAGE]}),
        )
        .await
        .assert_status(204);
    unassign(&server, &delegate, &delegate, &managers).await.assert_status(204);
    // Revoking one's own direct admin_users:manage while a role still grants it is allowed.
    assign(&server, &boss, &delegate, &managers).await.assert_status(204);
    server
        .send_with(
            Method::DELETE,
            &format!("/v1/admin/users/{}/permissions", delegate.user_id),
            Some(&delegate.token),
            None,
            Some(json!({"actions": [MANAGE]})),
        )
        .await
        .assert_status(204);
    server.get("/v1/admin/roles", Some(&delegate.token)).await.assert_problem(403, "FORBIDDEN");
    // Customers and missing tokens.
    create_role(&server, &target, "mine", &[]).await.assert_problem(403, "FORBIDDEN");
    server
        .post("/v1/admin/roles", None, json!({"name": "x", "actions": []}))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    server.shutdown().await;
}

async fn the_catalog_lists_the_new_actions_and_views_show_roles(server: TestServer) {
    let admin = server.admin(&Action::ALL.map(|action| action.as_str())).await;
    let catalog = server.get("/v1/admin/permissions", Some(&admin.token)).await;
    let actions: Vec<&str> = catalog.body.as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    for action in
        ["users:write", "users:verify", "limits:read", "limits:write", "audit:read", "events:read", "webhooks:manage"]
    {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
    let role = create_role(&server, &admin, "readers", &["transfers:read"]).await.str("id");
    let user = server.admin(&["accounts:read"]).await;
    assign(&server, &admin, &user, &role).await.assert_status(204);
    let view = server.get(&format!("/v1/admin/users/{}", user.user_id), Some(&admin.token)).await;
    view.assert_status(200);
    assert_eq!(view.body["roles"], json!([{"id": role, "name": "readers"}]));
    assert_eq!(view.body["direct_permissions"], json!(["accounts:read"]));
    assert_eq!(view.body["permissions"], json!(["accounts:read", "transfers:read"]));
    let listed = server.get("/v1/admin/roles", Some(&admin.token)).await;
    assert_eq!(listed.body["items"][0]["users"], 1);
    server.shutdown().await;
}
