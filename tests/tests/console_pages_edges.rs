//! The browser pages `/admin` and `/ops` at their edges, each a defect a review found and now
//! fixed (a real headless Chromium through `tests/src/browser.rs` against an in-process
//! `TestServer` on Postgres, or plain HTTP for headers): no link into a view the admin may not
//! read, an audit period that includes its last day, "Load more" going on with the listing
//! shown and kept by the queue's refresh, `/ops` asking again for a mistyped TOTP code,
//! `/ops` surviving an access token expiring on a slow link (one refresh at a time), and
//! `/ops` admitting only its own script and stylesheet.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tally_tests::browser::Browser;
use tally_tests::http::{Backend, PASSWORD, TestServer, TestUser};

/// How long a page may take to show the outcome of one action (a few API calls).
const UI_WAIT: Duration = Duration::from_secs(20);

const IBAN: &str = "DE89 3704 0044 0532 0130 00";

/// Opens `/admin` logged in with `admin`'s access token (the `#token=` automation path) and
/// waits until the console is ready.
fn open_console(browser: &mut Browser, server: &TestServer, admin: &TestUser) {
    browser.navigate(&format!("{}/admin#token={}", server.base, admin.token));
    browser.wait_for("the console", "document.querySelector('#status').dataset.state === 'ready'", UI_WAIT);
}

/// A customer with a funded EUR account and one pending external transfer of `amount` out of
/// it; answers the transfer id.
async fn pending_external(server: &TestServer, amount: &str) -> String {
    let customer = server.user().await;
    let account = server.open_account(&customer, "EUR").await;
    server.fund(&account, Decimal::new(100_000, 2)).await;
    let reply = server
        .post_keyed(
            "/v1/transfers",
            Some(&customer.token),
            &uuid::Uuid::new_v4().to_string(),
            json!({"type": "external", "source_account_id": account, "amount": amount, "reference": "invoice-1",
                   "beneficiary": {"name": "Grace Hopper", "iban": IBAN}}),
        )
        .await;
    reply.assert_status(202);
    reply.str("id")
}

/// The `seq` of every audit entry the API lists for `query` (newest first, at most 200).
async fn audit_seqs(server: &TestServer, token: &str, query: &str) -> Vec<u64> {
    let reply = server.get(&format!("/v1/admin/audit?limit=200{query}"), Some(token)).await;
    reply.assert_status(200);
    reply.body["items"].as_array().unwrap().iter().map(|entry| entry["seq"].as_u64().unwrap()).collect()
}

/// The `data-seq` of the audit table's rows, top to bottom.
fn table_seqs(browser: &mut Browser) -> Vec<u64> {
    let seqs =
        browser.eval("Array.from(document.querySelectorAll('#audit tbody tr')).map(row => Number(row.dataset.seq))");
    seqs.as_array().unwrap().iter().map(|seq| seq.as_u64().unwrap()).collect()
}

/// An admin who may read AML flags but not transfers is offered, in the AML flags table, a
/// link to each flag's transfer; following it opens the pending queue (whose tab the page hid)
/// and the transfer, and both answer `403 FORBIDDEN`. The page offers what the admin may not do
/// (admin.js `flagRow`: the transfer button is not guarded by `can("transfers:read")`, as
/// `userLink` is by `users:read`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aml_reader_without_transfers_read_is_not_led_into_a_forbidden_transfer_view() {
    let server = TestServer::start(Backend::Postgres).await;
    let rules = server.admin(&["aml:write"]).await;
    server
        .post(
            "/v1/admin/aml/rules",
            Some(&rules.token),
            json!({"name": "large EUR payments", "kind": "threshold",
                   "config": {"amount": "100.00", "currency": "EUR"}, "action": "flag"}),
        )
        .await
        .assert_status(201);
    pending_external(&server, "150.00").await;
    let reader = server.admin(&["aml:read"]).await;

    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    tokio::task::block_in_place(|| {
        open_console(&mut browser, &server, &reader);
        assert!(!browser.visible("#tab-queue"), "the queue is not offered without transfers:read");
        browser.wait_for(
            "the flag",
            "document.querySelector('#view-aml').dataset.loaded === 'true' && document.querySelectorAll('#aml-flags tbody tr').length === 1",
            UI_WAIT,
        );
        // Whatever the transfer cell holds, following it must not lead to a view the admin
        // may not read.
        let link = "#aml-flags tbody tr td:nth-child(5) button";
        if browser.exists(link) {
            browser.click(link);
            std::thread::sleep(Duration::from_secs(3));
            let banner_status = browser.attribute("#banner", "data-status");
            let banner_shown = browser.visible("#banner");
            let queue_shown = browser.visible("#view-queue");
            let detail = browser.eval("document.querySelector('#transfer').textContent");
            assert!(
                !(banner_shown && banner_status.as_deref() == Some("403")),
                "following the flag's transfer link ends in 403 FORBIDDEN: {}",
                browser.text("#banner-text")
            );
            assert!(!queue_shown, "the pending queue, hidden for lack of transfers:read, was opened; detail: {detail}");
        }
    });
    drop(browser);
    server.shutdown().await;
}

/// The audit filter's "to" is a date picker, sent as is; the API takes a date as its midnight
/// UTC and `to` as exclusive. So "from today to today" lists nothing, and any "to" date leaves
/// out that whole day: the page's "to" does not include the day it names (admin.js
/// `loadAudit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_filter_from_today_to_today_lists_todays_entries() {
    let server = TestServer::start(Backend::Postgres).await;
    let auditor = server.admin(&["audit:read"]).await;
    // The admin's creation and login were audited just now; their day as the server sees it.
    let newest = server.get("/v1/admin/audit?limit=1", Some(&auditor.token)).await;
    newest.assert_status(200);
    let at = newest.body["items"][0]["at"].as_str().unwrap().to_owned();
    let today = &at[..10];
    let todays = audit_seqs(&server, &auditor.token, &format!("&from={today}")).await;
    assert!(!todays.is_empty(), "entries were written today ({today})");

    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    tokio::task::block_in_place(|| {
        open_console(&mut browser, &server, &auditor);
        browser.wait_for("the audit trail", "document.querySelector('#view-audit').dataset.loaded === 'true'", UI_WAIT);
        browser.fill("#audit-from", today);
        browser.fill("#audit-to", today);
        browser.eval("document.querySelector('#view-audit').dataset.loaded = 'false'");
        browser.click("#audit-submit");
        browser.wait_for(
            "the filtered trail",
            "document.querySelector('#view-audit').dataset.loaded === 'true' || !document.querySelector('#banner').classList.contains('hidden')",
            UI_WAIT,
        );
        let shown = table_seqs(&mut browser);
        assert!(!browser.visible("#banner"), "the filter was refused: {}", browser.text("#banner-text"));
        assert_eq!(
            shown.len(),
            todays.len(),
            "from {today} to {today} shows {shown:?}, but {} entries were written on {today}: {todays:?}",
            todays.len()
        );
    });
    drop(browser);
    server.shutdown().await;
}

/// "Load more" reads the filter fields as they are now, not as they were for the page shown:
/// edit a filter without pressing "Filter", press "Load more", and the next page of the *new*
/// filter (from the old listing's cursor) is appended under the old listing. The table then
/// is neither listing: here the unfiltered trail with entries silently missing (admin.js
/// `loadAudit(true)`, and the same in `loadUsers` and `loadFlags`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_more_continues_the_listing_shown_not_an_unsubmitted_filter() {
    let server = TestServer::start(Backend::Postgres).await;
    let auditor = server.admin(&["audit:read", "aml:write"]).await;
    // More than a page (50) of entries newer than the admin's own creation and login.
    for n in 0..55 {
        server
            .post(
                "/v1/admin/aml/rules",
                Some(&auditor.token),
                json!({"name": format!("rule {n}"), "kind": "threshold",
                       "config": {"amount": "100.00", "currency": "EUR"}, "action": "flag"}),
            )
            .await
            .assert_status(201);
    }

    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    let shown = tokio::task::block_in_place(|| {
        open_console(&mut browser, &server, &auditor);
        browser.wait_for(
            "the first page",
            "document.querySelector('#view-audit').dataset.loaded === 'true' && document.querySelectorAll('#audit tbody tr').length === 50",
            UI_WAIT,
        );
        assert!(browser.visible("#audit-more"), "more than a page: Load more is offered");
        // The admin starts typing another filter, then presses Load more instead of Filter.
        browser.fill("#audit-action", "user.create");
        browser.click("#audit-more");
        browser.wait_for(
            "the next page",
            "document.querySelectorAll('#audit tbody tr').length !== 50 || document.querySelector('#audit-more').classList.contains('hidden')",
            UI_WAIT,
        );
        std::thread::sleep(Duration::from_millis(500));
        table_seqs(&mut browser)
    });
    let unfiltered = audit_seqs(&server, &auditor.token, "").await;
    let filtered = audit_seqs(&server, &auditor.token, "&action=user.create").await;
    let is_prefix = |listing: &[u64]| listing.len() >= shown.len() && listing[..shown.len()] == shown[..];
    assert!(
        is_prefix(&unfiltered) || is_prefix(&filtered),
        "the table is neither the unfiltered trail nor the filtered one:\n shown      {shown:?}\n unfiltered {unfiltered:?}\n filtered   {filtered:?}"
    );
    drop(browser);
    server.shutdown().await;
}

/// The pending queue reloads itself every 30 s (admin.js `refreshQueue`) and after each
/// decision. It reloaded only the first page, so an admin who had pressed "Load more" saw the
/// rows below it vanish under them at the next refresh (found by a review). It now reloads as
/// many rows as are shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_s_refresh_keeps_the_rows_load_more_added() {
    let server = TestServer::start(Backend::Postgres).await;
    let reviewer = server.admin(&["transfers:read"]).await;
    for _ in 0..55 {
        pending_external(&server, "1.00").await;
    }
    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    let rows_after_refresh = tokio::task::block_in_place(|| {
        open_console(&mut browser, &server, &reviewer);
        browser.wait_for(
            "the first page of the queue",
            "document.querySelector('#view-queue').dataset.loaded === 'true' && document.querySelectorAll('#queue tbody tr').length === 50",
            UI_WAIT,
        );
        browser.click("#queue-more");
        browser.wait_for("the next page", "document.querySelectorAll('#queue tbody tr').length === 55", UI_WAIT);
        // The timer's own callback, run now rather than in 30 s.
        browser.eval("document.querySelector('#queue-updated').textContent = ''; refreshQueue(); true");
        browser.wait_for("the refresh", "document.querySelector('#queue-updated').textContent !== ''", UI_WAIT);
        browser.eval("document.querySelectorAll('#queue tbody tr').length")
    });
    assert_eq!(rows_after_refresh, 55, "the refresh kept the rows shown");
    drop(browser);
    server.shutdown().await;
}

/// `/ops` polls every second whether or not the previous poll has finished, and each poll
/// that meets a `401` refreshes with the refresh token it holds, without waiting for a refresh
/// already under way. On a slow link (a poll taking more than a second) two polls meet the
/// expired token and spend the same refresh token twice: the API takes the second for a
/// stolen token and revokes the session, and the page drops to the login form
/// (ops/index.html `read`/`refresh`; the admin console shares one refresh at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_page_survives_an_access_token_expiring_on_a_slow_link() {
    let server = TestServer::start(Backend::Postgres).await;
    let operator = server.admin(&["ops:read"]).await;
    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    tokio::task::block_in_place(|| {
        browser.navigate(&format!("{}/ops", server.base));
        browser.fill("#email", &operator.email);
        browser.fill("#password", PASSWORD);
        browser.click("#login button[type=submit]");
        browser.wait_for("the live page", "document.querySelector('#status').dataset.state === 'live'", UI_WAIT);
        // A slow link: every request takes 2.5 s to leave the browser (the page still polls
        // once a second).
        browser.eval(
            "(() => { const original = window.fetch; \
               window.fetch = (...args) => new Promise((resolve) => setTimeout(resolve, 2500)).then(() => original.apply(window, args)); \
               return true; })()",
        );
        std::thread::sleep(Duration::from_secs(3));
    });
    // Past the access token's 15 minutes, within the session's idle time-out.
    server.clock.advance(Duration::from_secs(16 * 60));
    server.get("/v1/users/me", Some(&operator.token)).await.assert_problem(401, "TOKEN_EXPIRED");
    tokio::task::block_in_place(|| {
        let polls = browser.eval("Number(document.body.dataset.polls)").as_u64().unwrap();
        let outcome = browser.wait_for(
            "either the login form or a few more polls",
            &format!(
                "document.querySelector('#status').dataset.state === 'login' ? 'login' \
                 : (Number(document.body.dataset.polls) >= {} ? 'live' : null)",
                polls + 8
            ),
            Duration::from_secs(60),
        );
        assert_eq!(outcome, Value::from("live"), "the page lost its session: {}", browser.text("#login-message"));
    });
    // The session itself must still be alive (not revoked as a stolen refresh token).
    let token = tokio::task::block_in_place(|| browser.eval("token"));
    if let Some(token) = token.as_str() {
        server.get("/v1/users/me", Some(token)).await.assert_status(200);
    }
    drop(browser);
    server.shutdown().await;
}

/// `/ops` dropped its MFA session on any refused code: an operator who mistyped the TOTP code
/// was sent back to the password (whose login then counted as a second attempt), where the API
/// keeps the MFA session open for further tries and `/admin` lets them type the code again
/// (found by a review). A wrong code now keeps the code field; the right one then logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_totp_code_on_the_ops_page_asks_for_the_code_again() {
    let server = TestServer::start(Backend::Postgres).await;
    let operator = server.admin(&["ops:read"]).await;
    let (secret, _) = tally_tests::mfa::enable_totp(&server, &operator).await;
    let wrong = tally_tests::mfa::wrong_code(&server, &secret);
    let right = tally_tests::mfa::current_code(&server, &secret);
    let mut browser = tokio::task::block_in_place(|| Browser::launch(1400, 1000));
    tokio::task::block_in_place(|| {
        browser.navigate(&format!("{}/ops", server.base));
        browser.fill("#email", &operator.email);
        browser.fill("#password", PASSWORD);
        browser.click("#login button[type=submit]");
        browser.wait_for("the code field", "!document.querySelector('#code').classList.contains('hidden')", UI_WAIT);
        browser.fill("#code", &wrong);
        browser.click("#login button[type=submit]");
        browser.wait_for(
            "the refusal",
            "document.querySelector('#login-message').textContent.includes('attempts left')",
            UI_WAIT,
        );
        assert!(browser.visible("#code"), "the code is asked for again");
        browser.fill("#code", &right);
        browser.click("#login button[type=submit]");
        browser.wait_for("the live page", "document.querySelector('#status').dataset.state === 'live'", UI_WAIT);
    });
    drop(browser);
    server.shutdown().await;
}

/// `/ops` is served with `script-src 'unsafe-inline'` (and `style-src 'unsafe-inline'`): any
/// markup injected into it would run as script, so its policy does not do what its comment
/// says ("only this page's own inline code"); `/admin` admits its script by hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_page_policy_admits_only_its_own_script() {
    let server = TestServer::start(Backend::Postgres).await;
    let reply = server.get("/ops", None).await;
    reply.assert_status(200);
    let policy = reply.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let script_src = policy.split(';').map(str::trim).find(|d| d.starts_with("script-src")).unwrap_or("").to_owned();
    assert!(!script_src.is_empty(), "a script-src: {policy}");
    assert!(!script_src.contains("'unsafe-inline'"), "any inline script may run on /ops: {script_src}");
    server.shutdown().await;
}
