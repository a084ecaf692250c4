//! Saved beneficiaries over a real socket on both stores: `GET/POST /v1/beneficiaries`,
//! `DELETE /v1/beneficiaries/{id}` (per user, IBAN checked, bounded exactly under
//! concurrency, audited) and `beneficiary_id` on external transfers, quotes and batch items:
//! exactly one of the two payee forms, unknown or another user's id `404`, every refusal
//! changing nothing, and idempotent replays that hold across the beneficiary's deletion.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tally_tests::http::{Reply, TestServer, TestUser};
use tally_tests::on_both_stores;

on_both_stores!(
    beneficiaries_are_saved_listed_and_deleted_per_user,
    bad_input_is_refused_and_changes_nothing,
    the_bound_of_live_beneficiaries_is_exact_under_concurrency,
    external_transfers_pay_a_saved_beneficiary_and_replay_across_its_deletion,
    batch_items_pay_saved_beneficiaries,
);

const IBAN: &str = "GB82WEST12345698765432";

/// A valid British IBAN with account number `n` (check digits computed per ISO 13616), so
/// tests can save as many distinct payees as they need.
fn iban(n: u32) -> String {
    let bban = format!("WEST{n:014}");
    let digits: String = format!("{bban}GB00")
        .chars()
        .map(|c| if c.is_ascii_digit() { c.to_string() } else { (u32::from(c) - u32::from('A') + 10).to_string() })
        .collect();
    let remainder = digits.bytes().fold(0_u32, |remainder, byte| (remainder * 10 + u32::from(byte - b'0')) % 97);
    format!("GB{:02}{bban}", 98 - remainder)
}

async fn save(server: &TestServer, user: &TestUser, name: &str, iban: &str) -> Reply {
    server.post("/v1/beneficiaries", Some(&user.token), json!({"name": name, "iban": iban})).await
}

async fn saved_id(server: &TestServer, user: &TestUser, name: &str, iban: &str) -> String {
    let reply = save(server, user, name, iban).await;
    reply.assert_status(201);
    reply.str("id")
}

async fn listed(server: &TestServer, user: &TestUser) -> Vec<Value> {
    let reply = server.get("/v1/beneficiaries", Some(&user.token)).await;
    reply.assert_status(200);
    reply.body["items"].as_array().unwrap().clone()
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect()
}

async fn beneficiaries_are_saved_listed_and_deleted_per_user(server: TestServer) {
    let alice = server.user().await;
    let bob = server.user().await;
    assert!(listed(&server, &alice).await.is_empty());

    // The IBAN in its electronic form, the name trimmed; exactly the four fields.
    let first = save(&server, &alice, "  Ada Lovelace ", "gb82 west 1234 5698 7654 32").await;
    first.assert_status(201);
    let fields: Vec<&String> = first.body.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["created_at", "iban", "id", "name"]);
    assert_eq!((first.str("name"), first.str("iban")), ("Ada Lovelace".to_owned(), IBAN.to_owned()));
    let first_id = first.str("id");
    uuid::Uuid::parse_str(&first_id).unwrap();
    // Readable where its `Location` points, as listed.
    let location = format!("/v1/beneficiaries/{first_id}");
    assert_eq!(first.headers["location"], location.as_str());
    let read = server.get(&location, Some(&alice.token)).await;
    read.assert_status(200);
    assert_eq!(read.body, first.body);
    let second_id = saved_id(&server, &alice, "Grace", "DE89 3704 0044 0532 0130 00").await;
    // Newest first.
    let items = listed(&server, &alice).await;
    assert_eq!(ids(&items), [second_id.clone(), first_id.clone()]);
    assert_eq!(items[1], first.body, "listed as created");

    // Per user: Bob sees none of Alice's, cannot read or delete them, and may save the same IBAN.
    assert!(listed(&server, &bob).await.is_empty());
    server.get(&location, Some(&bob.token)).await.assert_problem(404, "NOT_FOUND");
    server
        .delete(&format!("/v1/beneficiaries/{first_id}"), Some(&bob.token), None)
        .await
        .assert_problem(404, "NOT_FOUND");
    let bobs = saved_id(&server, &bob, "Ada", IBAN).await;
    assert_eq!(listed(&server, &alice).await.len(), 2);

    // One live beneficiary per IBAN per user, however it is written: a repeated create is 409.
    save(&server, &alice, "Ada again", "GB82WEST12345698765432").await.assert_problem(409, "CONFLICT");
    save(&server, &alice, "  Ada Lovelace ", "gb82 west 1234 5698 7654 32").await.assert_problem(409, "CONFLICT");
    assert_eq!(listed(&server, &alice).await.len(), 2);

    // Deleting: 204 once, then 404 as for an unknown or another user's id.
    server.delete(&format!("/v1/beneficiaries/{first_id}"), Some(&alice.token), None).await.assert_status(204);
    assert_eq!(ids(&listed(&server, &alice).await), std::slice::from_ref(&second_id));
    for id in [first_id.clone(), uuid::Uuid::new_v4().to_string(), bobs.clone()] {
        server
            .delete(&format!("/v1/beneficiaries/{id}"), Some(&alice.token), None)
            .await
            .assert_problem(404, "NOT_FOUND");
        // A deleted, unknown or another user's beneficiary is not read either.
        server.get(&format!("/v1/beneficiaries/{id}"), Some(&alice.token)).await.assert_problem(404, "NOT_FOUND");
    }
    server.get(&format!("/v1/beneficiaries/{second_id}"), Some(&alice.token)).await.assert_status(200);
    for path in
        ["/v1/beneficiaries/not-a-uuid", "/v1/beneficiaries/%00", &format!("/v1/beneficiaries/{}", "a".repeat(4096))]
    {
        server.get(path, Some(&alice.token)).await.assert_problem(400, "VALIDATION_ERROR");
    }
    server
        .delete("/v1/beneficiaries/not-a-uuid", Some(&alice.token), None)
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    assert_eq!(listed(&server, &bob).await.len(), 1, "Bob's is untouched");
    // Once deleted, the IBAN may be saved again, as a new beneficiary.
    let again = saved_id(&server, &alice, "Ada", IBAN).await;
    assert_ne!(again, first_id);

    // Each change is in the audit log, with who, what and whose.
    let auditor = server.admin(&["audit:read"]).await;
    for (action, target) in
        [("beneficiary.create", &first_id), ("beneficiary.delete", &first_id), ("beneficiary.create", &again)]
    {
        let entries =
            server.get(&format!("/v1/admin/audit?action={action}&target_id={target}"), Some(&auditor.token)).await;
        entries.assert_status(200);
        let items = entries.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{action} {target}: {}", entries.text);
        assert_eq!(items[0]["actor"]["id"], alice.user_id);
        assert_eq!(items[0]["target"]["type"], "beneficiary");
    }

    // Who may call: a person with a token; no token is 401, an API key 403.
    for (method, path) in [
        (Method::GET, "/v1/beneficiaries".to_owned()),
        (Method::POST, "/v1/beneficiaries".to_owned()),
        (Method::GET, format!("/v1/beneficiaries/{second_id}")),
        (Method::DELETE, format!("/v1/beneficiaries/{second_id}")),
    ] {
        let body = (method == Method::POST).then(|| json!({"name": "X", "iban": iban(1)}));
        server.send_with(method.clone(), &path, None, None, body.clone()).await.assert_problem(401, "UNAUTHENTICATED");
        server
            .send_with(method.clone(), &path, Some("not.a.token"), None, body.clone())
            .await
            .assert_problem(401, "UNAUTHENTICATED");
        let key = server
            .post(
                "/v1/api-keys",
                Some(&alice.token),
                json!({"name": "k", "scopes": ["transfers:write", "accounts:read"]}),
            )
            .await
            .str("key");
        let mut request = server.client.request(method.clone(), server.url(&path)).header("x-api-key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        server.send(request).await.assert_problem(403, "FORBIDDEN");
    }
    assert_eq!(listed(&server, &alice).await.len(), 2, "second and again");
    server.shutdown().await;
}

async fn bad_input_is_refused_and_changes_nothing(server: TestServer) {
    let alice = server.user().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": "", "iban": IBAN}), "name"),
        (json!({"name": "   ", "iban": IBAN}), "name"),
        (json!({"name": "x".repeat(141), "iban": IBAN}), "name"),
        (json!({"name": "a\nb", "iban": IBAN}), "name"),
        (json!({"name": "Ada", "iban": "GB82WEST12345698765433"}), "iban"),
        (json!({"name": "Ada", "iban": "GB28WEST12345698765432"}), "iban"),
        (json!({"name": "Ada", "iban": "GB82"}), "iban"),
        (json!({"name": "Ada", "iban": format!("GB82{}", "1".repeat(40))}), "iban"),
        (json!({"name": "Ada", "iban": "1282WEST12345698765432"}), "iban"),
        (json!({"name": "Ada", "iban": "GB82WEST1234569876543!"}), "iban"),
        // Each passes mod 97 and cannot exist: no such country, the wrong length for its
        // country, check digits ISO never computes (99 is 02 mod 97: one account, two IBANs).
        (json!({"name": "Ada", "iban": "XX4212345678901234"}), "iban"),
        (json!({"name": "Ada", "iban": "DE51370400440532013000123"}), "iban"),
        (json!({"name": "Ada", "iban": "DE99370400441000000087"}), "iban"),
    ];
    for (body, field) in &cases {
        let reply = server.post("/v1/beneficiaries", Some(&alice.token), body.clone()).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec![(*field).to_owned()], "{body}: {}", reply.text);
    }
    // Missing, mistyped and unknown fields; not JSON; not JSON at all.
    for body in [
        json!({"iban": IBAN}),
        json!({"name": "Ada"}),
        json!({}),
        json!({"name": 7, "iban": IBAN}),
        json!({"name": "Ada", "iban": 82}),
        json!({"name": "Ada", "iban": IBAN, "bic": "WESTGB2L"}),
        json!([]),
    ] {
        server.post("/v1/beneficiaries", Some(&alice.token), body).await.assert_problem(400, "VALIDATION_ERROR");
    }
    server
        .post_raw("/v1/beneficiaries", Some(&alice.token), "application/json", b"{\"name\":".to_vec())
        .await
        .assert_problem(400, "VALIDATION_ERROR");
    let wrong_type = server.post_raw("/v1/beneficiaries", Some(&alice.token), "text/plain", b"name=Ada".to_vec()).await;
    assert_eq!(wrong_type.status, 415, "{}", wrong_type.text);
    let huge = server
        .post_raw(
            "/v1/beneficiaries",
            Some(&alice.token),
            "application/json",
            vec![b' '; tally_http::BODY_BYTES_MAX + 1],
        )
        .await;
    assert_eq!(huge.status, 413, "{}", huge.text);
    assert_eq!(huge.body["code"], "VALIDATION_ERROR");
    let wrong_method = server.send_with(Method::PUT, "/v1/beneficiaries", Some(&alice.token), None, None).await;
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.text);
    assert!(listed(&server, &alice).await.is_empty(), "nothing was saved");
    // 140 characters is the longest name.
    saved_id(&server, &alice, &"x".repeat(140), IBAN).await;
    server.shutdown().await;
}

async fn the_bound_of_live_beneficiaries_is_exact_under_concurrency(server: TestServer) {
    let alice = server.user().await;
    let replies = futures::future::join_all((0..120).map(|n| {
        let server = &server;
        let alice = &alice;
        async move { save(server, alice, &format!("payee {n}"), &iban(n)).await }
    }))
    .await;
    let created = replies.iter().filter(|reply| reply.status == 201).count();
    for reply in replies.iter().filter(|reply| reply.status != 201) {
        reply.assert_problem(409, "CONFLICT");
    }
    assert_eq!(created, 100, "exactly the bound, however the creates raced");
    let items = listed(&server, &alice).await;
    assert_eq!(items.len(), 100);
    save(&server, &alice, "one more", &iban(500)).await.assert_problem(409, "CONFLICT");
    // Deleted ones do not count.
    let some = items[17]["id"].as_str().unwrap();
    server.delete(&format!("/v1/beneficiaries/{some}"), Some(&alice.token), None).await.assert_status(204);
    saved_id(&server, &alice, "one more", &iban(500)).await;
    save(&server, &alice, "and another", &iban(501)).await.assert_problem(409, "CONFLICT");
    // The bound is per user.
    let bob = server.user().await;
    saved_id(&server, &bob, "payee", &iban(1)).await;
    server.shutdown().await;
}

fn external_to(source: &str, beneficiary_id: &str, amount: &str) -> Value {
    json!({"type": "external", "source_account_id": source, "beneficiary_id": beneficiary_id, "amount": amount})
}

async fn external_transfers_pay_a_saved_beneficiary_and_replay_across_its_deletion(server: TestServer) {
    let alice = server.user().await;
    let bob = server.user().await;
    let account = server.open_account(&alice, "USD").await;
    server.fund(&account, dec!(100)).await;
    let ada = saved_id(&server, &alice, "Ada Lovelace", IBAN).await;
    let grace = saved_id(&server, &alice, "Grace Hopper", &iban(7)).await;
    let bobs = saved_id(&server, &bob, "Bob's payee", &iban(8)).await;

    // Paid by id: the transfer records the payee's name and IBAN.
    let paid = server.post("/v1/transfers", Some(&alice.token), external_to(&account, &ada, "10")).await;
    paid.assert_status(202);
    assert_eq!(paid.body["beneficiary"], json!({"name": "Ada Lovelace", "iban": IBAN}));
    assert_eq!(server.position(&account).await, (dec!(100), dec!(10)));

    // Refusals, each changing nothing.
    let both = json!({"type": "external", "source_account_id": account, "beneficiary_id": ada,
                      "beneficiary": {"name": "Ada", "iban": IBAN}, "amount": "1"});
    let neither = json!({"type": "external", "source_account_id": account, "amount": "1"});
    let internal = json!({"type": "internal", "source_account_id": account, "destination_account_id": account,
                          "beneficiary_id": ada, "amount": "1"});
    for (body, field) in [
        (both, "beneficiary_id"),
        (neither, "beneficiary"),
        (internal, "beneficiary_id"),
        (external_to(&account, "not-a-uuid", "1"), "beneficiary_id"),
        (external_to(&account, &ada, "-1"), "amount"),
        (external_to(&account, &ada, "1.001"), "amount"),
        (external_to(&account, &ada, "0"), "amount"),
    ] {
        let reply = server.post("/v1/transfers", Some(&alice.token), body.clone()).await;
        reply.assert_problem(400, "VALIDATION_ERROR");
        assert_eq!(reply.error_fields(), vec![field.to_owned()], "{body}: {}", reply.text);
    }
    for unknown in [uuid::Uuid::new_v4().to_string(), bobs.clone()] {
        let reply = server.post("/v1/transfers", Some(&alice.token), external_to(&account, &unknown, "1")).await;
        reply.assert_problem(404, "NOT_FOUND");
        server
            .post("/v1/transfers/quote", Some(&alice.token), external_to(&account, &unknown, "1"))
            .await
            .assert_problem(404, "NOT_FOUND");
    }
    // Another user's account with Alice's beneficiary: the source decides first.
    let bob_account = server.open_account(&bob, "USD").await;
    server
        .post("/v1/transfers", Some(&alice.token), external_to(&bob_account, &ada, "1"))
        .await
        .assert_problem(404, "NOT_FOUND");
    assert_eq!(server.position(&account).await, (dec!(100), dec!(10)), "nothing moved");

    // A quote by id is the quote of the same payee inline.
    let by_id = server.post("/v1/transfers/quote", Some(&alice.token), external_to(&account, &ada, "5")).await;
    by_id.assert_status(200);
    let inline = server
        .post(
            "/v1/transfers/quote",
            Some(&alice.token),
            json!({"type": "external", "source_account_id": account, "beneficiary": {"name": "Ada Lovelace", "iban": IBAN}, "amount": "5"}),
        )
        .await;
    assert_eq!(by_id.body, inline.body);

    // Idempotency: the fingerprint covers the resolved payee.
    let first =
        server.post_keyed("/v1/transfers", Some(&alice.token), "pay-ada", external_to(&account, &ada, "20")).await;
    first.assert_status(202);
    let transfer = first.str("id");
    let again =
        server.post_keyed("/v1/transfers", Some(&alice.token), "pay-ada", external_to(&account, &ada, "20.00")).await;
    again.assert_status(202);
    assert_eq!(again.str("id"), transfer);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let same_payee_inline = json!({"type": "external", "source_account_id": account,
                                   "beneficiary": {"name": "Ada Lovelace", "iban": "gb82 west 1234 5698 7654 32"}, "amount": "20"});
    let inline = server.post_keyed("/v1/transfers", Some(&alice.token), "pay-ada", same_payee_inline).await;
    assert_eq!(
        (inline.status, inline.str("id")),
        (202, transfer.clone()),
        "the same payee written inline is the same request"
    );
    server
        .post_keyed("/v1/transfers", Some(&alice.token), "pay-ada", external_to(&account, &grace, "20"))
        .await
        .assert_problem(409, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(server.position(&account).await, (dec!(100), dec!(30)));

    // Deleted: a retry under the first key still answers with its transfer; anything new is 404.
    server.delete(&format!("/v1/beneficiaries/{ada}"), Some(&alice.token), None).await.assert_status(204);
    let replay =
        server.post_keyed("/v1/transfers", Some(&alice.token), "pay-ada", external_to(&account, &ada, "20")).await;
    replay.assert_status(202);
    assert_eq!(replay.str("id"), transfer);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    server
        .post_keyed("/v1/transfers", Some(&alice.token), "pay-ada", external_to(&account, &ada, "21"))
        .await
        .assert_problem(409, "IDEMPOTENCY_KEY_REUSED");
    server
        .post_keyed("/v1/transfers", Some(&alice.token), "pay-ada-2", external_to(&account, &ada, "20"))
        .await
        .assert_problem(404, "NOT_FOUND");
    server
        .post("/v1/transfers", Some(&alice.token), external_to(&account, &ada, "20"))
        .await
        .assert_problem(404, "NOT_FOUND");
    server
        .post("/v1/transfers/quote", Some(&alice.token), external_to(&account, &ada, "20"))
        .await
        .assert_problem(404, "NOT_FOUND");
    assert_eq!(server.position(&account).await, (dec!(100), dec!(30)), "only the two transfers hold money");
    // The transfers keep their payee.
    let kept = server.get(&format!("/v1/transfers/{transfer}"), Some(&alice.token)).await;
    assert_eq!(kept.body["beneficiary"], json!({"name": "Ada Lovelace", "iban": IBAN}));

    // A machine client with `transfers:write` pays a saved beneficiary too.
    let key = server
        .post("/v1/api-keys", Some(&alice.token), json!({"name": "payouts", "scopes": ["transfers:write"]}))
        .await
        .str("key");
    let by_key = server
        .send(
            server
                .client
                .post(server.url("/v1/transfers"))
                .header("x-api-key", key)
                .json(&external_to(&account, &grace, "1")),
        )
        .await;
    by_key.assert_status(202);
    assert_eq!(by_key.body["beneficiary"]["name"], "Grace Hopper");
    server.shutdown().await;
}

async fn batch_items_pay_saved_beneficiaries(server: TestServer) {
    let alice = server.user().await;
    let account = server.open_account(&alice, "USD").await;
    server.fund(&account, dec!(100)).await;
    let ada = saved_id(&server, &alice, "Ada", IBAN).await;
    let grace = saved_id(&server, &alice, "Grace", &iban(3)).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let inline = json!({"type": "external", "source_account_id": account, "beneficiary": {"name": "Inline", "iban": iban(4)}, "amount": "1"});
    let batch = json!({"transfers": [external_to(&account, &ada, "1"), external_to(&account, &unknown, "1"), inline]});

    let results = |reply: &Reply| -> Vec<(u64, Option<String>)> {
        reply.assert_status(200);
        reply.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|result| (result["status"].as_u64().unwrap(), result["transfer"]["id"].as_str().map(str::to_owned)))
            .collect()
    };
    let first = server.post_keyed("/v1/transfers/batch", Some(&alice.token), "batch-1", batch.clone()).await;
    let first = results(&first);
    assert_eq!(first.iter().map(|(status, _)| *status).collect::<Vec<_>>(), [202, 404, 202]);
    assert_eq!(server.position(&account).await, (dec!(100), dec!(2)));

    // Deleting Ada changes no replay of the batch: same transfers, no 409, nothing new.
    server.delete(&format!("/v1/beneficiaries/{ada}"), Some(&alice.token), None).await.assert_status(204);
    let replay = server.post_keyed("/v1/transfers/batch", Some(&alice.token), "batch-1", batch.clone()).await;
    assert_eq!(results(&replay), first);
    assert_eq!(server.position(&account).await, (dec!(100), dec!(2)));
    // A new batch naming the deleted beneficiary: that item is 404, the others run.
    let fresh = server.post_keyed("/v1/transfers/batch", Some(&alice.token), "batch-2", batch).await;
    let fresh = results(&fresh);
    assert_eq!(fresh.iter().map(|(status, _)| *status).collect::<Vec<_>>(), [404, 404, 202]);
    assert_eq!(server.position(&account).await, (dec!(100), dec!(3)));

    // Atomic: one unknown beneficiary and nothing happens; all saved ones and all happen.
    let atomic = json!({"atomic": true, "transfers": [external_to(&account, &grace, "5"), external_to(&account, &unknown, "5")]});
    let aborted = results(&server.post("/v1/transfers/batch", Some(&alice.token), atomic).await);
    assert_eq!(aborted.iter().map(|(status, _)| *status).collect::<Vec<_>>(), [409, 404]);
    assert_eq!(server.position(&account).await, (dec!(100), dec!(3)), "the atomic batch did nothing");
    let atomic =
        json!({"atomic": true, "transfers": [external_to(&account, &grace, "5"), external_to(&account, &grace, "6")]});
    let ran = results(&server.post("/v1/transfers/batch", Some(&alice.token), atomic).await);
    assert_eq!(ran.iter().map(|(status, _)| *status).collect::<Vec<_>>(), [202, 202]);
    assert_eq!(server.position(&account).await, (dec!(100), dec!(14)));
    server.shutdown().await;
}

/// A retry that names a beneficiary deleted while the first request under its key is still
/// being recorded waits for that first request and replays it; it used to look in the store
/// without the key's claim, find nothing yet, and answer `404` for a transfer that then
/// completed. Postgres only: the first request's commit is held back by another connection's
/// lock on `transfers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_naming_a_beneficiary_deleted_while_the_first_try_runs_replays_it() {
    use sqlx::Connection;
    let server = TestServer::start(tally_tests::http::Backend::Postgres).await;
    let alice = server.user().await;
    let account = server.open_account(&alice, "USD").await;
    server.fund(&account, dec!(100)).await;
    let saved = server
        .post(
            "/v1/beneficiaries",
            Some(&alice.token),
            json!({"name": "Ada Lovelace", "iban": "GB82 WEST 1234 5698 7654 32"}),
        )
        .await;
    saved.assert_status(201);
    let ada = saved.str("id");
    let body = external_to(&account, &ada, "7");

    let mut lock = sqlx::PgConnection::connect(&server.database_url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE transfers IN SHARE MODE").execute(&mut lock).await.unwrap();
    // The first try, and meanwhile: the deletion, then the retry, then the lock let go.
    let first = server.post_keyed("/v1/transfers", Some(&alice.token), "pay-ada", body.clone());
    let meanwhile = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        server.delete(&format!("/v1/beneficiaries/{ada}"), Some(&alice.token), None).await.assert_status(204);
        let retry = server.post_keyed("/v1/transfers", Some(&alice.token), "pay-ada", body);
        let release = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
        };
        tokio::join!(retry, release).0
    };
    let (first, retry) = tokio::join!(first, meanwhile);
    first.assert_status(202);
    retry.assert_status(202);
    assert_eq!(retry.body["id"], first.body["id"], "the retry replays the first try's transfer");
    assert_eq!(server.position(&account).await, (dec!(100), dec!(7)), "one transfer held");
    server.shutdown().await;
}
