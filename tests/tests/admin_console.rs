//! The admins' console `/admin` in a real headless Chromium against a real `tally serve` on
//! Postgres, driven over the DevTools protocol (`tests/src/browser.rs`) as a person would use
//! it: log in through the form (password, then a TOTP code when on) or `#token=`, open the
//! pending queue, open a transfer, execute, reject and cancel it, resolve AML flags, find a
//! user and act on their accounts, read the audit trail. Every outcome is checked through the
//! API afterwards, never only on the page. Screenshots of the queue and of a transfer's detail
//! are kept as CI artifacts (`TALLY_ARTIFACTS_DIR`, default `target/ci-artifacts/`).

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::{Value, json};
use tally_engine::Timestamp;
use tally_http::auth::totp::{base32_decode, code_at, step_of};
use tally_tests::browser::{Browser, artifacts_dir};
use tally_tests::http::{Backend, TestServer};
use tally_tests::postgres;
use tally_tests::server::{ADMIN_EMAIL, ADMIN_PASSWORD, Client, TallyServer};

/// How long the page may take to show the outcome of one action (a few API calls).
const UI_WAIT: Duration = Duration::from_secs(20);

const IBAN: &str = "DE89 3704 0044 0532 0130 00";
const PASSWORD: &str = "Cust0mer!password";

/// A fresh Postgres database and a real `tally serve` on it, with its bootstrap admin.
async fn start(prefix: &str) -> (TallyServer, Client) {
    let database = postgres::fresh_database(prefix).await;
    let server = TallyServer::start(&database, &[]).await;
    let root = Client::admin(&server).await;
    (server, root)
}

/// A registered customer with one EUR account funded with 1,000.00; returns the customer
/// and the account id.
async fn funded_customer(server: &TallyServer, root: &Client, email: &str) -> (Client, String) {
    let base = server.base_url();
    let registered = reqwest::Client::new()
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "first_name": "Ada", "last_name": "Lovelace"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201, "register {email}");
    let customer = Client::login(&base, email, PASSWORD).await;
    let account = customer.open_account("EUR").await;
    root.fund(&account, "1000.00").await;
    (customer, account)
}

/// An external transfer out of `account`: pending for an admin (manual execution).
async fn pending_external(customer: &Client, account: &str, amount: &str, reference: &str) -> String {
    let (status, body) = customer
        .send(
            reqwest::Method::POST,
            "/v1/transfers",
            Some(json!({"type": "external", "source_account_id": account, "amount": amount, "reference": reference,
                        "beneficiary": {"name": "Grace Hopper", "iban": IBAN}})),
            Some(&uuid::Uuid::new_v4().to_string()),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "a pending external transfer: {body}");
    assert_eq!(body["status"], "pending");
    body["id"].as_str().unwrap().to_owned()
}

/// An admin holding exactly `actions`, logged in through the API.
async fn admin_with(server: &TallyServer, root: &Client, email: &str, actions: &[&str]) -> (Client, String) {
    let (status, body) = root
        .post(
            "/v1/admin/users",
            json!({"email": email, "password": PASSWORD, "first_name": "Ann", "last_name": "Admin", "actions": actions}),
        )
        .await;
    assert_eq!(status, 201, "create admin {email}: {body}");
    (Client::login(&server.base_url(), email, PASSWORD).await, body["user_id"].as_str().unwrap().to_owned())
}

async fn transfer(root: &Client, id: &str) -> Value {
    let (status, body) = root.get(&format!("/v1/admin/transfers/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn account(root: &Client, id: &str) -> Value {
    let (status, body) = root.get(&format!("/v1/admin/accounts/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The page's `data-*` attribute as a number.
fn count(browser: &mut Browser, selector: &str) -> u64 {
    browser.attribute(selector, "data-count").and_then(|text| text.parse().ok()).unwrap_or(u64::MAX)
}

/// The ids of the queue's rows, top to bottom.
fn queue_ids(browser: &mut Browser) -> Vec<String> {
    let ids =
        browser.eval("Array.from(document.querySelectorAll('#queue tbody tr')).map(row => row.dataset.transferId)");
    ids.as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
}

/// Opens a transfer from the queue and waits until its detail has loaded.
fn open_transfer(browser: &mut Browser, id: &str) {
    browser.click(&format!("#queue tr[data-transfer-id=\"{id}\"]"));
    browser.wait_for(
        "the transfer's detail",
        &format!("document.querySelector('#transfer').dataset.transferId === '{id}' && document.querySelector('#transfer').dataset.loaded === 'true'"),
        UI_WAIT,
    );
}

/// Waits for the dialog to ask for `purpose`.
fn dialog_asks(browser: &mut Browser, purpose: &str) {
    browser.wait_for(
        &format!("the dialog to ask for {purpose}"),
        &format!("document.querySelector('#dialog').open && document.querySelector('#dialog').dataset.purpose === '{purpose}'"),
        UI_WAIT,
    );
}

/// Logs in through the form with a password (no second factor) and waits for the console.
fn log_in_with_password(browser: &mut Browser, base: &str, email: &str, password: &str) {
    browser.navigate(&format!("{base}/admin"));
    browser.fill("#email", email);
    browser.fill("#password", password);
    browser.click("#login-submit");
    browser.wait_for("the console", "document.querySelector('#status').dataset.state === 'ready'", UI_WAIT);
}

fn assert_no_page_problems(browser: &mut Browser) {
    let problems = browser.problems();
    assert!(problems.is_empty(), "the page logged errors, exceptions or CSP violations: {problems:?}");
}

/// Codes as an authenticator app computes them, from the real clock (the server's), each
/// step used once: the next code is the step after the last one used, or the current
/// window's oldest, waiting only when the next step is still ahead of the server's window.
struct Authenticator {
    secret: Vec<u8>,
    last_step: i64,
}

impl Authenticator {
    fn step_now() -> i64 {
        let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
        step_of(Timestamp::from_micros(i64::try_from(micros).unwrap()))
    }

    async fn next_code(&mut self) -> String {
        loop {
            let now = Authenticator::step_now();
            let step = (self.last_step + 1).max(now - 1);
            // The server accepts a step either side of its own; leave a step's margin on the
            // near side so the code is not about to fall out of the window.
            if step <= now + 1 {
                self.last_step = step;
                return code_at(&self.secret, step);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A six-digit code valid for no step near now.
    fn wrong_code(&self) -> String {
        let now = Authenticator::step_now();
        let valid: Vec<String> = (now - 2..=now + 2).map(|step| code_at(&self.secret, step)).collect();
        (0..1_000_000).map(|n| format!("{n:06}")).find(|code| !valid.contains(code)).unwrap()
    }
}

/// Turns TOTP on for `admin` through the API; returns their authenticator.
async fn enable_totp(admin: &Client) -> Authenticator {
    let (status, setup) = admin.post("/v1/users/me/mfa/totp/setup", json!({})).await;
    assert_eq!(status, 200, "{setup}");
    let secret = base32_decode(setup["secret"].as_str().unwrap()).unwrap();
    let mut authenticator = Authenticator { secret, last_step: i64::MIN / 2 };
    let code = authenticator.next_code().await;
    let (status, body) = admin.post("/v1/users/me/mfa/totp/confirm", json!({"code": code})).await;
    assert_eq!(status, 204, "confirm TOTP: {body}");
    authenticator
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_logs_in_and_executes_rejects_and_cancels_pending_transfers_from_the_queue() {
    let (server, root) = start("admin_console_queue").await;
    let base = server.base_url();
    // Transfers of 100.00 EUR or more are flagged (they still wait for manual execution).
    let (status, rule) = root
        .post(
            "/v1/admin/aml/rules",
            json!({"name": "large EUR payments", "kind": "threshold", "config": {"amount": "100.00", "currency": "EUR"}, "action": "flag"}),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    let (customer, source) = funded_customer(&server, &root, "ada@tally.test").await;
    let first = pending_external(&customer, &source, "125.50", "invoice-1").await;
    let second = pending_external(&customer, &source, "40.00", "invoice-2").await;
    let third = pending_external(&customer, &source, "10.00", "invoice-3").await;
    assert_eq!(account(&root, &source).await["held"], "175.50");

    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    tokio::task::block_in_place(|| log_in_with_password(&mut browser, &base, ADMIN_EMAIL, ADMIN_PASSWORD));
    // The bootstrap admin holds every permission: every section is offered, the queue first.
    tokio::task::block_in_place(|| {
        for tab in ["#tab-queue", "#tab-aml", "#tab-users", "#tab-audit"] {
            assert!(browser.visible(tab), "{tab} is offered");
        }
        browser.wait_for("the queue", "document.querySelector('#view-queue').dataset.loaded === 'true'", UI_WAIT);
    });

    // The queue: oldest first, counted, with amount, accounts, reason and age.
    tokio::task::block_in_place(|| {
        assert_eq!(count(&mut browser, "#queue-count"), 3);
        assert_eq!(queue_ids(&mut browser), vec![first.clone(), second.clone(), third.clone()], "oldest first");
        let row = browser.text(&format!("#queue tr[data-transfer-id=\"{first}\"]"));
        for expected in ["125.50 EUR", "Grace Hopper", "manual execution", "external", "invoice-1", &source[..8]] {
            assert!(row.contains(expected), "the row shows {expected:?}: {row}");
        }
        let age = browser.text(&format!("#queue tr[data-transfer-id=\"{first}\"] td"));
        assert!(age.ends_with(" s") || age.ends_with(" min"), "its age: {age}");
        browser.screenshot(&artifacts_dir().join("admin-queue.png"));
    });

    // A transfer's detail: both accounts with balances and holds, and its AML flag.
    tokio::task::block_in_place(|| {
        open_transfer(&mut browser, &first);
        let source_card = format!("#transfer .account[data-account-id=\"{source}\"]");
        assert_eq!(browser.text(&format!("{source_card} [data-field=balance]")), "1000.00 EUR");
        assert_eq!(browser.text(&format!("{source_card} [data-field=held]")), "175.50 EUR");
        assert_eq!(browser.text(&format!("{source_card} [data-field=available]")), "824.50 EUR");
        assert!(
            browser.exists(&format!("{source_card} li.this-transfer[data-transfer-id=\"{first}\"]")),
            "its hold is marked"
        );
        assert_eq!(browser.eval("document.querySelectorAll('#transfer .account').length"), json!(2), "both accounts");
        let flags = browser.text("#transfer-flags");
        assert!(flags.contains("large EUR payments") && flags.contains("open"), "the AML flag: {flags}");
        for action in ["#action-execute", "#action-reject", "#action-cancel"] {
            assert!(browser.visible(action), "{action} is offered");
        }
        browser.screenshot(&artifacts_dir().join("admin-transfer.png"));
    });

    // Execute: the transfer completes and leaves the queue.
    tokio::task::block_in_place(|| {
        browser.click("#action-execute");
        dialog_asks(&mut browser, "execute");
        browser.click("#dialog-confirm");
        browser.wait_for(
            "the transfer to complete",
            "document.querySelector('#transfer').dataset.status === 'completed'",
            UI_WAIT,
        );
        browser.wait_for(
            "the queue to shrink",
            "document.querySelector('#queue-count').dataset.count === '2'",
            UI_WAIT,
        );
        assert!(!queue_ids(&mut browser).contains(&first), "executed, it left the queue");
        assert!(!browser.exists("#action-execute"), "nothing left to decide");
    });
    let executed = transfer(&root, &first).await;
    assert_eq!(executed["status"], "completed", "{executed}");
    let after_execute = account(&root, &source).await;
    assert_eq!(after_execute["balance"], "874.50");
    assert_eq!(after_execute["held"], "50.00");

    // Reject with a reason: the hold is released.
    tokio::task::block_in_place(|| {
        open_transfer(&mut browser, &second);
        browser.click("#action-reject");
        dialog_asks(&mut browser, "reject");
        browser.click("#dialog-confirm");
        // A reason is required: the dialog stays and says so.
        assert!(browser.text("#dialog-message").contains("reason"), "a reason is asked for");
        browser.fill("#dialog-reason", "beneficiary name does not match the IBAN");
        browser.click("#dialog-confirm");
        browser.wait_for("the rejection", "document.querySelector('#transfer').dataset.status === 'rejected'", UI_WAIT);
        browser.wait_for(
            "the queue to shrink",
            "document.querySelector('#queue-count').dataset.count === '1'",
            UI_WAIT,
        );
    });
    assert_eq!(transfer(&root, &second).await["status"], "rejected");
    let after_reject = account(&root, &source).await;
    assert_eq!(after_reject["held"], "10.00", "the rejected transfer's hold is released: {after_reject}");
    assert_eq!(after_reject["available_balance"], "864.50");
    assert_eq!(after_reject["balance"], "874.50");

    // Cancel with a reason: the hold is released and the queue is empty.
    tokio::task::block_in_place(|| {
        open_transfer(&mut browser, &third);
        browser.click("#action-cancel");
        dialog_asks(&mut browser, "cancel");
        browser.fill("#dialog-reason", "customer asked by phone");
        browser.click("#dialog-confirm");
        browser.wait_for(
            "the cancellation",
            "document.querySelector('#transfer').dataset.status === 'cancelled'",
            UI_WAIT,
        );
        browser.wait_for("an empty queue", "document.querySelector('#queue-count').dataset.count === '0'", UI_WAIT);
        assert!(browser.visible("#queue-empty"), "the queue says nothing waits");
    });
    assert_eq!(transfer(&root, &third).await["status"], "cancelled");
    assert_eq!(account(&root, &source).await["held"], "0.00");

    // The audit trail shows the rejection with its reason, found by the action filter.
    tokio::task::block_in_place(|| {
        browser.click("#tab-audit");
        browser.fill("#audit-action", "transfer.reject");
        browser.click("#audit-submit");
        let row = format!("#audit tr[data-target-id=\"{second}\"]");
        browser.wait_for(
            "the rejection's audit entry, alone",
            &format!(
                "document.querySelector('{row}') !== null && document.querySelectorAll('#audit tbody tr').length === 1"
            ),
            UI_WAIT,
        );
        assert!(browser.text(&row).contains("beneficiary name does not match the IBAN"), "{}", browser.text(&row));
        browser.screenshot(&artifacts_dir().join("admin-audit.png"));
        let actions =
            browser.eval("Array.from(document.querySelectorAll('#audit tbody tr')).map(row => row.dataset.action)");
        assert!(actions.as_array().unwrap().iter().all(|action| action == "transfer.reject"), "filtered: {actions}");
    });

    // AML flags: the open flag of the executed transfer, resolved with a note.
    let (status, flags) = root.get(&format!("/v1/admin/aml/flags?transfer_id={first}")).await;
    assert_eq!(status, 200, "{flags}");
    let flag = flags["items"][0]["id"].as_str().unwrap().to_owned();
    tokio::task::block_in_place(|| {
        browser.click("#tab-aml");
        let row = format!("#aml-flags tr[data-flag-id=\"{flag}\"]");
        browser.wait_for("the open flag", &format!("document.querySelector('{row}') !== null"), UI_WAIT);
        assert_eq!(count(&mut browser, "#aml-count"), 1);
        browser.screenshot(&artifacts_dir().join("admin-aml.png"));
        browser.click(&format!("{row} button.resolve"));
        dialog_asks(&mut browser, "resolve");
        browser.fill("#dialog-notes", "regular supplier, invoice on file");
        browser.click("#dialog-confirm");
        browser.wait_for("no open flag", "document.querySelector('#aml-count').dataset.count === '0'", UI_WAIT);
    });
    let (_, resolved) = root.get(&format!("/v1/admin/aml/flags/{flag}")).await;
    assert_eq!(resolved["status"], "cleared", "{resolved}");
    assert_eq!(resolved["notes"], "regular supplier, invoice on file");

    tokio::task::block_in_place(|| assert_no_page_problems(&mut browser));
    drop(customer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_without_transfers_execute_is_offered_no_execute_and_a_forged_call_is_refused() {
    let (server, root) = start("admin_console_denied").await;
    let base = server.base_url();
    let (customer, source) = funded_customer(&server, &root, "bob@tally.test").await;
    let pending = pending_external(&customer, &source, "75.00", "invoice-9").await;
    let (reviewer, reviewer_id) =
        admin_with(&server, &root, "reviewer@tally.test", &["transfers:read", "transfers:reject", "accounts:read"])
            .await;

    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    tokio::task::block_in_place(|| {
        // Automation logs in with the token in the fragment, which leaves the address bar.
        browser.navigate(&format!("{base}/admin#token={}", reviewer.token));
        browser.wait_for("the console", "document.querySelector('#status').dataset.state === 'ready'", UI_WAIT);
        assert!(!browser.eval("location.href").as_str().unwrap().contains("token"), "the token left the address bar");
        // Only what the permissions allow is offered.
        assert!(browser.visible("#tab-queue"));
        for tab in ["#tab-aml", "#tab-users", "#tab-audit"] {
            assert!(!browser.visible(tab), "{tab} is not offered without its permission");
        }
        browser.wait_for("the queue", "document.querySelector('#view-queue').dataset.loaded === 'true'", UI_WAIT);
        open_transfer(&mut browser, &pending);
        assert!(!browser.exists("#action-execute"), "no execute button without transfers:execute");
        assert!(!browser.exists("#action-cancel"), "no cancel button without transfers:cancel");
        assert!(browser.visible("#action-reject"), "reject is offered");
        assert!(browser.text("#transfer-flags").contains("aml:read"), "flags need aml:read, and the page says so");
    });

    // A forged call with the page's own token: the API refuses it, whatever the page offers.
    let forged = tokio::task::block_in_place(|| {
        browser.eval(&format!(
            "fetch('/v1/admin/transfers/{pending}/execute', {{method: 'POST', headers: {{Authorization: 'Bearer ' + session.access}}}})
               .then(response => response.json().then(body => [response.status, body.code, response.headers.get('content-type')]))"
        ))
    });
    assert_eq!(forged[0], 403, "{forged}");
    assert_eq!(forged[1], "FORBIDDEN", "{forged}");
    assert!(forged[2].as_str().unwrap().starts_with("application/problem+json"), "{forged}");
    assert_eq!(transfer(&root, &pending).await["status"], "pending", "the forged execute changed nothing");

    // A permission revoked after the page loaded: the button is still there, the API refuses,
    // and the page shows the 403 with the API's detail (not a blank page, not a success).
    let (status, body) = root
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/admin/users/{reviewer_id}/permissions"),
            Some(json!({"actions": ["transfers:reject"]})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    tokio::task::block_in_place(|| {
        browser.click("#action-reject");
        dialog_asks(&mut browser, "reject");
        browser.fill("#dialog-reason", "duplicate payment");
        browser.click("#dialog-confirm");
        browser.wait_for("the refusal", "document.querySelector('#banner').dataset.status === '403'", UI_WAIT);
        assert_eq!(browser.attribute("#banner", "data-code").as_deref(), Some("FORBIDDEN"));
        let banner = browser.text("#banner-text");
        assert!(banner.contains("Not allowed (403 FORBIDDEN)") && banner.contains("transfers:reject"), "{banner}");
        assert!(banner.contains("[request "), "the request id to quote: {banner}");
        assert_eq!(
            browser.attribute("#transfer", "data-status").as_deref(),
            Some("pending"),
            "still pending on the page"
        );
    });
    assert_eq!(transfer(&root, &pending).await["status"], "pending", "the refused reject changed nothing");
    assert_eq!(account(&root, &source).await["held"], "75.00");
    tokio::task::block_in_place(|| {
        assert_no_page_problems(&mut browser);
        // The policy holds in a real browser: a script injected into the page does not run,
        // and the browser reports the violation (so the check above would have seen one).
        let ran = browser.eval(
            "(() => { const script = document.createElement('script'); script.textContent = 'window.injected = true'; \
               document.body.append(script); return window.injected === true; })()",
        );
        assert_eq!(ran, json!(false), "an injected inline script must not run");
        let problems = browser.problems();
        assert!(
            problems.iter().any(|problem| problem.contains("Content Security Policy")),
            "the violation is reported: {problems:?}"
        );
    });
    drop(customer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_with_totp_on_is_asked_for_a_code_before_a_transfer_is_executed() {
    let (server, root) = start("admin_console_step_up").await;
    let base = server.base_url();
    // This one waits for AML review: an internal transfer a review rule held back.
    let (status, rule) = root
        .post(
            "/v1/admin/aml/rules",
            json!({"name": "review large internal", "kind": "threshold", "action": "review",
                   "config": {"amount": "250.00", "currency": "EUR", "transfer_type": "internal"}}),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    let (customer, source) = funded_customer(&server, &root, "cy@tally.test").await;
    let (payee, destination) = funded_customer(&server, &root, "dee@tally.test").await;
    let (status, held) = customer
        .send(
            reqwest::Method::POST,
            "/v1/transfers",
            Some(json!({"type": "internal", "source_account_id": source, "destination_account_id": destination,
                        "amount": "300.00", "reference": "rent"})),
            Some(&uuid::Uuid::new_v4().to_string()),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{held}");
    assert_eq!(held["pending_reason"], "aml_review", "{held}");
    let pending = held["id"].as_str().unwrap().to_owned();
    let email = "approver@tally.test";
    let (approver, _) =
        admin_with(&server, &root, email, &["transfers:read", "transfers:execute", "accounts:read"]).await;
    let mut authenticator = enable_totp(&approver).await;

    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    // Log in through the form: the password, then a code.
    tokio::task::block_in_place(|| {
        browser.navigate(&format!("{base}/admin"));
        browser.fill("#email", email);
        browser.fill("#password", PASSWORD);
        browser.click("#login-submit");
        browser.wait_for("the code field", "!document.querySelector('#code').classList.contains('hidden')", UI_WAIT);
        assert_eq!(
            browser.attribute("#status", "data-state").as_deref(),
            Some("login"),
            "not logged in before the code"
        );
    });
    let code = authenticator.next_code().await;
    tokio::task::block_in_place(|| {
        browser.fill("#code", &code);
        browser.click("#login-submit");
        browser.wait_for("the console", "document.querySelector('#status').dataset.state === 'ready'", UI_WAIT);
        assert!(browser.text("#whoami").contains("TOTP on"));
        browser.wait_for("the queue", "document.querySelector('#view-queue').dataset.loaded === 'true'", UI_WAIT);
        let row = browser.text(&format!("#queue tr[data-transfer-id=\"{pending}\"]"));
        assert!(row.contains("AML review") && row.contains("300.00 EUR"), "{row}");
        open_transfer(&mut browser, &pending);
        // Both customers' accounts: the source holding the amount, the destination not yet credited.
        let source_card = format!("#transfer .account[data-account-id=\"{source}\"]");
        let destination_card = format!("#transfer .account[data-account-id=\"{destination}\"]");
        assert_eq!(browser.text(&format!("{source_card} [data-field=held]")), "300.00 EUR");
        assert_eq!(browser.text(&format!("{destination_card} [data-field=balance]")), "1000.00 EUR");
        browser.click("#action-execute");
        dialog_asks(&mut browser, "execute");
        browser.click("#dialog-confirm");
        // Confirming asks for a code before anything is sent to execute.
        dialog_asks(&mut browser, "step-up");
        assert!(browser.visible("#dialog-code"), "a code field");
        browser.screenshot(&artifacts_dir().join("admin-step-up.png"));
    });
    assert_eq!(transfer(&root, &pending).await["status"], "pending", "nothing executed before the code");

    // A wrong code is refused in the dialog, which asks again; the transfer still waits.
    let wrong = authenticator.wrong_code();
    tokio::task::block_in_place(|| {
        browser.fill("#dialog-code", &wrong);
        browser.click("#dialog-confirm");
        browser.wait_for(
            "the wrong code refused",
            "document.querySelector('#dialog-message').textContent.includes('INVALID_CREDENTIALS')",
            UI_WAIT,
        );
        dialog_asks(&mut browser, "step-up");
    });
    assert_eq!(transfer(&root, &pending).await["status"], "pending", "a wrong code executes nothing");

    let code = authenticator.next_code().await;
    tokio::task::block_in_place(|| {
        browser.fill("#dialog-code", &code);
        browser.click("#dialog-confirm");
        browser.wait_for(
            "the transfer to complete",
            "document.querySelector('#transfer').dataset.status === 'completed'",
            UI_WAIT,
        );
        browser.wait_for("an empty queue", "document.querySelector('#queue-count').dataset.count === '0'", UI_WAIT);
    });
    assert_eq!(transfer(&root, &pending).await["status"], "completed");
    assert_eq!(account(&root, &source).await["balance"], "700.00");
    assert_eq!(account(&root, &destination).await["balance"], "1300.00");
    tokio::task::block_in_place(|| {
        let destination_card = format!("#transfer .account[data-account-id=\"{destination}\"]");
        assert_eq!(
            browser.text(&format!("{destination_card} [data-field=balance]")),
            "1300.00 EUR",
            "the detail reloaded"
        );
    });
    tokio::task::block_in_place(|| assert_no_page_problems(&mut browser));
    drop((customer, payee));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_finds_a_user_and_blocks_unblocks_and_adjusts_their_accounts() {
    let (server, root) = start("admin_console_users").await;
    let base = server.base_url();
    let (customer, account_id) = funded_customer(&server, &root, "dora@tally.test").await;
    let (status, user) = customer.get("/v1/users/me").await;
    assert_eq!(status, 200);
    let user_id = user["user_id"].as_str().unwrap().to_owned();

    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    tokio::task::block_in_place(|| {
        log_in_with_password(&mut browser, &base, ADMIN_EMAIL, ADMIN_PASSWORD);
        browser.click("#tab-users");
        browser.fill("#users-search", "dora@");
        browser.click("#users-submit");
        let row = format!("#users tr[data-user-id=\"{user_id}\"]");
        // The tab's own first load (no filter) lists this user too, so wait for the search's
        // answer, whose count replaces the unfiltered one, rather than for the row alone.
        browser.wait_for(
            "the search to find the one user",
            &format!(
                "document.querySelector('#users-count').dataset.count === '1' \
                 && document.querySelectorAll('#users tbody tr').length === 1 \
                 && document.querySelector('{row}') !== null"
            ),
            UI_WAIT,
        );
        assert_eq!(count(&mut browser, "#users-count"), 1, "the search finds one user");
        browser.click(&row);
        browser.wait_for("the user's detail", "document.querySelector('#user').dataset.loaded === 'true'", UI_WAIT);
        let detail = browser.text("#user");
        for expected in ["dora@tally.test", "none", "Sessions", "Accounts"] {
            assert!(detail.contains(expected), "the detail shows {expected:?}: {detail}");
        }
        assert_eq!(browser.text("#user-level"), "none", "the verification level");
        assert!(browser.exists("#user-sessions tbody tr"), "the customer's live session is listed");
        let account_row = format!("#user-accounts tr[data-account-id=\"{account_id}\"]");
        assert_eq!(browser.text(&format!("{account_row} [data-field=balance]")), "1000.00");
        browser.screenshot(&artifacts_dir().join("admin-user.png"));

        // Block the account, with a reason.
        browser.click(&format!("{account_row} button.account-status"));
        dialog_asks(&mut browser, "account-status");
        browser.fill("#dialog-reason", "suspicious card activity");
        browser.click("#dialog-confirm");
        browser.wait_for(
            "the account blocked",
            &format!("document.querySelector('{account_row}')?.dataset.status === 'blocked'"),
            UI_WAIT,
        );
    });
    assert_eq!(account(&root, &account_id).await["status"], "blocked");

    tokio::task::block_in_place(|| {
        let account_row = format!("#user-accounts tr[data-account-id=\"{account_id}\"]");
        browser.click(&format!("{account_row} button.account-status"));
        dialog_asks(&mut browser, "account-status");
        browser.fill("#dialog-reason", "cleared by the customer's call");
        browser.click("#dialog-confirm");
        browser.wait_for(
            "the account active",
            &format!("document.querySelector('{account_row}')?.dataset.status === 'active'"),
            UI_WAIT,
        );

        // An adjustment: a credit of 25.00 from settlement.
        browser.click(&format!("{account_row} button.adjust"));
        dialog_asks(&mut browser, "adjust");
        browser.fill("#dialog-amount", "25.00");
        browser.fill("#dialog-purpose", "goodwill credit for the delay");
        browser.click("#dialog-confirm");
        browser.wait_for(
            "the adjusted balance",
            &format!("document.querySelector('{account_row} [data-field=balance]')?.textContent === '1025.00'"),
            UI_WAIT,
        );

        // Block the user: their sessions end at once.
        browser.click("#user-status");
        dialog_asks(&mut browser, "user-status");
        browser.fill("#dialog-reason", "identity documents expired");
        browser.click("#dialog-confirm");
        browser.wait_for("the user blocked", "document.querySelector('#user').dataset.status === 'blocked'", UI_WAIT);
        assert!(!browser.exists("#user-sessions tbody tr"), "no live session is left");
    });
    assert_eq!(account(&root, &account_id).await["status"], "active");
    assert_eq!(account(&root, &account_id).await["balance"], "1025.00");
    let (_, user) = root.get(&format!("/v1/admin/users/{user_id}")).await;
    assert_eq!(user["status"], "blocked", "{user}");
    let (status, _) = customer.get("/v1/users/me").await;
    assert_eq!(status, 401, "the blocked user's session ended");
    tokio::task::block_in_place(|| assert_no_page_problems(&mut browser));
}

/// In process (`TestServer`, whose clock a test moves), so an access token can expire without
/// waiting 15 minutes: the page refreshes it once, with its refresh token, and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_is_refreshed_and_the_console_carries_on() {
    let server = TestServer::start(Backend::Postgres).await;
    let admin = server.admin(&["transfers:read"]).await;
    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    let (access, refresh) = tokio::task::block_in_place(|| {
        log_in_with_password(&mut browser, &server.base, &admin.email, tally_tests::http::PASSWORD);
        browser.wait_for("the queue", "document.querySelector('#view-queue').dataset.loaded === 'true'", UI_WAIT);
        (browser.eval("session.access"), browser.eval("session.refresh"))
    });
    // Past the access token's 15 minutes, within the session's idle time-out.
    server.clock.advance(Duration::from_secs(16 * 60));
    let old_token = access.as_str().unwrap().to_owned();
    server.get("/v1/users/me", Some(&old_token)).await.assert_problem(401, "TOKEN_EXPIRED");
    tokio::task::block_in_place(|| {
        browser.eval("document.querySelector('#queue-updated').textContent = ''");
        browser.click("#queue-refresh");
        browser.wait_for("the queue reloaded", "document.querySelector('#queue-updated').textContent !== ''", UI_WAIT);
        assert_eq!(browser.attribute("#status", "data-state").as_deref(), Some("ready"), "still logged in");
        assert!(!browser.visible("#banner"), "no error shown");
        assert_ne!(browser.eval("session.access"), access, "a new access token");
        assert_ne!(browser.eval("session.refresh"), refresh, "the refresh token rotated");
        assert_no_page_problems(&mut browser);
    });
    server.shutdown().await;
}
