//! Mail from a real `tally serve`: with `TALLY_SMTP_URL` it goes over SMTP (to a real receiver
//! on loopback, with `TALLY_MAIL_FROM` as sender); without it, each message is an RFC 5322
//! `.eml` file under `<TALLY_DATA_DIR>/mail/`. Either way the code in it resets the password.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;
use tally_tests::server::{Client, TallyServer};
use tally_tests::smtp::{Received, SmtpReceiver};

const PASSWORD: &str = "Sup3r!secret";
const NEW_PASSWORD: &str = "N3w!passphrase";

fn sqlite_url() -> (String, std::path::PathBuf) {
    let file = std::env::temp_dir().join(format!("tally-mail-{}.db", uuid::Uuid::new_v4().simple()));
    (format!("sqlite://{}", file.display()), file)
}

fn remove_sqlite(file: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

async fn register_and_forget(server: &TallyServer, email: &str) {
    let http = reqwest::Client::new();
    let base = server.base_url();
    let registered = http
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "first_name": "M", "last_name": "L"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let forgot =
        http.post(format!("{base}/v1/auth/password/forgot")).json(&json!({"email": email})).send().await.unwrap();
    assert_eq!(forgot.status(), 202);
}

async fn reset_with(server: &TallyServer, email: &str, code: &str) {
    let reset = reqwest::Client::new()
        .post(format!("{}/v1/auth/password/reset", server.base_url()))
        .json(&json!({"email": email, "code": code, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204, "{}", reset.text().await.unwrap());
    Client::login(&server.base_url(), email, NEW_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_each_message_is_an_eml_file_in_the_data_directory() {
    let (url, file) = sqlite_url();
    let server = TallyServer::start(&url, &[]).await;
    let email = "eml-reader@example.com";
    register_and_forget(&server, email).await;
    let mail_dir = server.data_dir.join("mail");
    let mut found = None;
    for _ in 0..500 {
        let emls: Vec<_> = std::fs::read_dir(&mail_dir)
            .map(|entries| entries.filter_map(Result::ok).map(|entry| entry.path()).collect())
            .unwrap_or_default();
        if let Some(path) = emls.into_iter().find(|path| path.extension().is_some_and(|ext| ext == "eml")) {
            found = Some(path);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = found.unwrap_or_else(|| panic!("no .eml under {}", mail_dir.display()));
    let text = std::fs::read_to_string(&path).unwrap();
    // RFC 5322: headers, a blank line, the body; CRLF line ends.
    assert!(text.contains("\r\n\r\n"), "{text}");
    for header in ["From: Tally <no-reply@tally.localhost>\r\n", &format!("To: {email}\r\n"), "Subject: ", "Date: "] {
        assert!(text.contains(header), "{header} missing from {text}");
    }
    let message = Received { from: String::new(), to: vec![email.to_owned()], data: text };
    reset_with(&server, email, &message.code().unwrap()).await;
    drop(server);
    remove_sqlite(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_smtp_every_message_goes_to_the_mail_server() {
    let receiver = SmtpReceiver::start().await;
    let (url, file) = sqlite_url();
    let server = TallyServer::start(
        &url,
        &[("TALLY_SMTP_URL", &receiver.url()), ("TALLY_MAIL_FROM", "Bank Security <security@bank.example>")],
    )
    .await;
    let email = "smtp-reader@example.com";
    register_and_forget(&server, email).await;
    let message = receiver.next_to(email, 0).await;
    assert_eq!(message.from, "security@bank.example");
    let from = message.data.lines().find(|line| line.starts_with("From: ")).unwrap();
    assert!(from.contains("Bank Security") && from.ends_with("<security@bank.example>"), "{from}");
    reset_with(&server, email, &message.code().unwrap()).await;
    assert!(!server.data_dir.join("mail").exists(), "nothing was written to files");
    drop(server);
    remove_sqlite(&file);
}
