//! Mail from a real `tally serve`: with `TALLY_SMTP_URL` it goes over SMTP (to a real receiver
//! on loopback, with `TALLY_MAIL_FROM` as sender); without it, each message is an RFC 5322
//! `.eml` file under `<TALLY_DATA_DIR>/mail/`. Either way the code in it resets the password.
//! And the mailer itself against a relay that refuses some recipients for good.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tally_http::mail::{MailConfig, MailTransport, Mailer};
use tally_tests::server::{Client, TallyServer};
use tally_tests::smtp::{Received, SmtpReceiver};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

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

/// A message is kept as it arrived at the test's SMTP server, with when it arrived.
#[derive(Clone, Debug)]
struct Arrival {
    to: String,
    at: Instant,
}

/// An SMTP server that refuses every recipient at `rejected.example` with a permanent
/// `550` (as a relay does for a domain that does not exist or a mailbox it knows is gone),
/// every recipient at `greylisted.example` with a transient `451` (as a greylisting relay
/// does), and accepts the rest, noting when each accepted message arrived and how often each
/// address was tried.
struct PickySmtp {
    port: u16,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    rcpt_tries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PickySmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PickySmtp {
    /// A mailer that delivers to this server.
    fn mailer(&self) -> Mailer {
        Mailer::start(&MailConfig {
            transport: MailTransport::Smtp(format!("smtp://127.0.0.1:{}", self.port)),
            from: "Tally <no-reply@tally.test>".to_owned(),
        })
        .unwrap()
    }

    /// Sends one message to each of two addresses at `domain`, then a reset code to
    /// `honest@example.com`; answers how long after it was queued the code arrived.
    async fn two_then_an_honest_code(&self, mailer: &Mailer, domain: &str) -> Duration {
        for n in 0..2 {
            mailer.send(&format!("user-{n}@{domain}"), "Verify", "Your code is 123456.\r\n".to_owned()).unwrap();
        }
        let queued = Instant::now();
        mailer.send("honest@example.com", "Your reset code", "Your code is 654321.\r\n".to_owned()).unwrap();
        for _ in 0..2_500 {
            if let Some(arrival) =
                self.arrivals.lock().unwrap().iter().find(|arrival| arrival.to == "honest@example.com")
            {
                return arrival.at.duration_since(queued);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the honest message did not arrive within 25 s");
    }

    async fn start() -> PickySmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let rcpt_tries = Arc::new(Mutex::new(Vec::new()));
        let (kept, tries) = (Arc::clone(&arrivals), Arc::clone(&rcpt_tries));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, tries) = (Arc::clone(&kept), Arc::clone(&tries));
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read);
                    let _ = write.write_all(b"220 picky ESMTP\r\n").await;
                    let mut to = Vec::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let command = line.trim_end().to_owned();
                        let verb = command.split(' ').next().unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-picky\r\n250 8BITMIME\r\n",
                            "MAIL" => {
                                to.clear();
                                b"250 OK\r\n"
                            }
                            "RCPT" => {
                                let start = command.find('<').map_or(0, |at| at + 1);
                                let end = command.rfind('>').unwrap_or(command.len());
                                let address = command[start..end].to_owned();
                                tries.lock().unwrap().push(address.clone());
                                if address.ends_with("@rejected.example") {
                                    b"550 5.1.1 no such mailbox\r\n"
                                } else if address.ends_with("@greylisted.example") {
                                    b"451 4.7.1 greylisted, try again later\r\n"
                                } else {
                                    to.push(address);
                                    b"250 OK\r\n"
                                }
                            }
                            "DATA" => {
                                let _ = write.write_all(b"354 go on\r\n").await;
                                loop {
                                    line.clear();
                                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                        return;
                                    }
                                    if line == ".\r\n" {
                                        break;
                                    }
                                }
                                let at = Instant::now();
                                kept.lock().unwrap().extend(to.drain(..).map(|to| Arrival { to, at }));
                                b"250 OK queued\r\n"
                            }
                            "QUIT" => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            "RSET" | "NOOP" | "HELO" => b"250 OK\r\n",
                            _ => b"502 not implemented\r\n",
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        PickySmtp { port, arrivals, rcpt_tries, task }
    }
}

/// A permanent refusal is not retried, and an undeliverable message does not delay the next
/// user's code (found by a review): one worker delivered every message in turn and retried
/// any failure twice, waiting 1 s and then 4 s, even a permanent `550`, so one message to an
/// address the relay refuses stalled everyone else's codes for 5 s, and an attacker with a few
/// such accounts kept the worker asleep (codes arriving late, or, once the queue was full,
/// never). Now a `5xx` is final, and retries wait without holding up other deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_message_neither_is_retried_nor_delays_the_next_users_code() {
    let smtp = PickySmtp::start().await;
    let mailer = smtp.mailer();
    let waited = smtp.two_then_an_honest_code(&mailer, "rejected.example").await;
    // Deliveries run side by side, so the refused ones may still be under way: give them
    // longer than a retry's first wait (1 s) before counting their tries.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let tries = smtp.rcpt_tries.lock().unwrap().iter().filter(|to| to.ends_with("@rejected.example")).count();
    assert!(
        waited < Duration::from_secs(2) && tries == 2,
        "the next user's code waited {waited:?} behind two messages the relay refused for good, which were tried \
         {tries} times in all (2 expected)"
    );
}

/// A message waiting for its retry holds up no one: two messages a relay refuses for now
/// (`451`) are retried (three tries each, 1 s then 4 s apart), while the next user's code goes
/// out at once. Before, the one worker slept through each wait, and the code came ten seconds
/// late (the transient side of the review's finding above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_for_its_retry_does_not_delay_the_next_users_code() {
    let smtp = PickySmtp::start().await;
    let mailer = smtp.mailer();
    let waited = smtp.two_then_an_honest_code(&mailer, "greylisted.example").await;
    assert!(waited < Duration::from_secs(1), "the next user's code waited {waited:?} behind two retried messages");
    // The refused ones are still retried: 3 tries each, the last about 5 s after the first.
    let tries = || smtp.rcpt_tries.lock().unwrap().iter().filter(|to| to.ends_with("@greylisted.example")).count();
    for _ in 0..1_000 {
        if tries() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tries(), 6, "two messages refused for now were tried 3 times each");
}
