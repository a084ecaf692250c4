//! Outgoing mail (DESIGN.md §7): SMTP through `lettre` when `TALLY_SMTP_URL` is set
//! (`smtp://host:port`, with optional `user:password@`; `smtps://` for TLS; see lettre's
//! `from_url` for `?tls=required` STARTTLS), else each message written as an RFC 5322 `.eml`
//! file under `<data dir>/mail/`, as web frameworks' file mail backends do.
//!
//! Sending never runs on the request's path: `Mailer::send` formats the message and puts it
//! on a bounded queue (`MAIL_QUEUE_MAX`), and a worker task hands each message to a delivery
//! task of its own with lettre's tokio transport (or tokio's file I/O), so no async thread
//! ever blocks on a mail server, and a slow one never slows an answer. That matters for more
//! than latency: a password-reset request must take as long for an unknown address as for a
//! known one, and delivery time would tell them apart.
//!
//! Up to `DELIVERIES_AT_ONCE` messages are being delivered at once, and a message waiting to
//! be retried holds no such place, so one slow or refusing recipient never holds up the next
//! user's code. A permanent refusal (an SMTP `5xx`, or a message lettre cannot send at all) is
//! not retried; any other failure is, up to `DELIVERY_ATTEMPTS` in all. A message that is not
//! delivered is logged (never with its body, which holds a code) and dropped; codes expire
//! anyway. What mail holds stays bounded: the queue, plus at most `MESSAGES_IN_FLIGHT_MAX`
//! taken from it and not yet done (past that the worker stops taking, the queue fills, and
//! `send` refuses).
//!
//! Mail goes to one plain address (`lettre::Address`), never to a string read as an RFC 5322
//! mailbox: `auth::validate::check_email` accepts exactly what this sends to.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Messages waiting for delivery at most. A message is a few kilobytes, so this is a few
/// megabytes; past it `send` refuses (a reset request still answers `202`, and the log says
/// why nothing came).
pub const MAIL_QUEUE_MAX: usize = 1_024;

/// Tries per message: a mail server that is restarting gets a second and third chance. A
/// permanent refusal gets none.
const DELIVERY_ATTEMPTS: u32 = 3;

/// Messages being delivered at once (SMTP exchanges, or file writes). A message waiting for
/// its retry holds no place.
const DELIVERIES_AT_ONCE: usize = 4;

/// Messages taken from the queue and not yet delivered or dropped (being delivered, or
/// waiting for a retry) at most.
const MESSAGES_IN_FLIGHT_MAX: usize = 256;

/// Wait before the second try; it quadruples before the third.
const RETRY_FIRST_WAIT: Duration = Duration::from_secs(1);

/// How long one SMTP exchange may take before it is abandoned (and retried).
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The sender when `TALLY_MAIL_FROM` is not set.
pub const DEFAULT_MAIL_FROM: &str = "Tally <no-reply@tally.localhost>";

/// Where mail goes.
#[derive(Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// A `smtp://` or `smtps://` URL (it may hold a password: never logged).
    Smtp(String),
    /// A directory for `.eml` files (created when the first message is written).
    Files(PathBuf),
}

impl std::fmt::Debug for MailTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MailTransport::Smtp(_) => f.write_str("Smtp(..)"),
            MailTransport::Files(dir) => f.debug_tuple("Files").field(dir).finish(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// `Name <address>` or a bare address.
    pub from: String,
}

impl MailConfig {
    /// Files under `<data_dir>/mail/`, from `DEFAULT_MAIL_FROM`.
    pub fn files_in(data_dir: impl Into<PathBuf>) -> MailConfig {
        MailConfig { transport: MailTransport::Files(data_dir.into().join("mail")), from: DEFAULT_MAIL_FROM.to_owned() }
    }
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig::files_in(DEFAULT_DATA_DIR)
    }
}

/// The data directory when `TALLY_DATA_DIR` is not set (the default SQLite file is there too).
pub const DEFAULT_DATA_DIR: &str = "./tally-data";

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail configuration: {0}")]
    Config(String),
    #[error("the recipient {0:?} is not a plain email address")]
    Recipient(String),
    #[error("the message could not be built: {0}")]
    Message(String),
    #[error("the mail queue is full")]
    QueueFull,
    #[error("the mail worker has stopped")]
    Stopped,
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

/// The handle requests send mail through. Cheap to share.
#[derive(Debug)]
pub struct Mailer {
    queue: mpsc::Sender<Message>,
    from: Mailbox,
}

impl Mailer {
    /// Checks the configuration and starts the delivery worker on the current tokio runtime.
    pub fn start(config: &MailConfig) -> Result<Mailer, MailError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|error| MailError::Config(format!("TALLY_MAIL_FROM {:?}: {error}", config.from)))?;
        let transport = match &config.transport {
            MailTransport::Smtp(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    // The error text never holds the URL's password (lettre's parse errors name
                    // the part that failed), but say nothing of the URL to be sure.
                    .map_err(|error| MailError::Config(format!("TALLY_SMTP_URL is not usable: {error}")))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
            ),
            MailTransport::Files(dir) => Transport::Files(dir.clone()),
        };
        let (queue, messages) = mpsc::channel(MAIL_QUEUE_MAX);
        tokio::spawn(deliver(transport, messages));
        Ok(Mailer { queue, from })
    }

    /// Queues a plain-text message to `to`, a plain address (`name@example.com`: no display
    /// name, comment or brackets, which a mailbox parser would read another address out of).
    /// Returns once it is queued, not delivered.
    pub fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        self.reserve(to, subject, body)?.send();
        Ok(())
    }

    /// Builds the message and takes its place on the queue without sending it yet: a caller
    /// that stores something the mail announces (a code that replaces the previous one) stores
    /// it only once the mail is sure to be queued, and sends after. Dropping the reservation
    /// gives the place back and sends nothing.
    pub fn reserve(&self, to: &str, subject: &str, body: String) -> Result<Reserved<'_>, MailError> {
        let address: Address = to.trim().parse().map_err(|_| MailError::Recipient(to.to_owned()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, address))
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|error| MailError::Message(error.to_string()))?;
        let place = self.queue.try_reserve().map_err(|error| match error {
            mpsc::error::TrySendError::Full(()) => MailError::QueueFull,
            mpsc::error::TrySendError::Closed(()) => MailError::Stopped,
        })?;
        Ok(Reserved { place, message })
    }
}

/// A message with its place on the queue taken (`Mailer::reserve`).
pub struct Reserved<'a> {
    place: mpsc::Permit<'a, Message>,
    message: Message,
}

impl Reserved<'_> {
    /// Queues the message in the place taken for it; this cannot fail.
    pub fn send(self) {
        self.place.send(self.message);
    }
}

/// The delivery worker: takes each message off the queue (once fewer than
/// `MESSAGES_IN_FLIGHT_MAX` are in hand) and hands it to a delivery task of its own. Ends when
/// every `Mailer` is gone; messages in hand are still delivered.
async fn deliver(transport: Transport, mut messages: mpsc::Receiver<Message>) {
    let transport = Arc::new(transport);
    let in_flight = Arc::new(Semaphore::new(MESSAGES_IN_FLIGHT_MAX));
    let delivering = Arc::new(Semaphore::new(DELIVERIES_AT_ONCE));
    loop {
        let Ok(held) = Arc::clone(&in_flight).acquire_owned().await else { return };
        let Some(message) = messages.recv().await else { return };
        tokio::spawn(deliver_one(Arc::clone(&transport), Arc::clone(&delivering), message, held));
    }
}

/// Why one attempt failed, and whether another could succeed.
struct Failure {
    error: String,
    permanent: bool,
}

/// One attempt at `message`.
async fn attempt(transport: &Transport, message: &Message) -> Result<(), Failure> {
    match transport {
        // A `5xx` will be the answer again; so will a message lettre cannot send (e.g. a UTF-8
        // address to a server without SMTPUTF8). Anything else (a connection refused or cut,
        // a timeout, a `4xx`) may pass later.
        Transport::Smtp(smtp) => smtp.send(message.clone()).await.map(|_| ()).map_err(|error| Failure {
            permanent: error.is_permanent() || error.is_client(),
            error: error.to_string(),
        }),
        Transport::Files(dir) => {
            write_eml(dir, message).await.map_err(|error| Failure { error: error.to_string(), permanent: false })
        }
    }
}

/// Delivers one message: up to `DELIVERY_ATTEMPTS` tries, each in one of the
/// `DELIVERIES_AT_ONCE` places, waiting between them (`RETRY_FIRST_WAIT`, then four times the
/// last wait) without holding a place; a permanent failure ends it at once. `_held` is the
/// message's place among those in hand.
async fn deliver_one(
    transport: Arc<Transport>,
    delivering: Arc<Semaphore>,
    message: Message,
    _held: OwnedSemaphorePermit,
) {
    let subject = message.headers().get_raw("Subject").unwrap_or_default().to_owned();
    let mut waits = ExponentialBuilder::new()
        .with_min_delay(RETRY_FIRST_WAIT)
        .with_factor(4.0)
        .without_max_delay()
        .without_max_times()
        .build();
    for try_number in 1..=DELIVERY_ATTEMPTS {
        let result = {
            let Ok(_place) = delivering.acquire().await else { return };
            attempt(&transport, &message).await
        };
        match result {
            Ok(()) => {
                tracing::debug!(%subject, "mail delivered");
                return;
            }
            Err(Failure { error, permanent: true }) => {
                tracing::error!(%subject, %error, "mail refused for good; dropped");
                return;
            }
            Err(Failure { error, .. }) if try_number < DELIVERY_ATTEMPTS => {
                tracing::warn!(%subject, %error, attempt = try_number, "mail delivery failed; retrying");
                tokio::time::sleep(waits.next().unwrap_or(RETRY_FIRST_WAIT)).await;
            }
            Err(Failure { error, .. }) => tracing::error!(%subject, %error, "mail could not be delivered; dropped"),
        }
    }
}

/// Writes the message as `<uuid>.eml`: first under a temporary name, then renamed, so a
/// reader never sees half a message.
async fn write_eml(dir: &std::path::Path, message: &Message) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    tokio::fs::create_dir_all(dir).await?;
    let name = uuid::Uuid::new_v4().simple().to_string();
    let partial = dir.join(format!(".{name}.eml.partial"));
    // The message holds a live code: readable by the server's user only, whatever the umask
    // (a review found the files world-readable under the usual 022).
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial).await?;
    file.write_all(&message.formatted()).await?;
    file.flush().await?;
    drop(file);
    tokio::fs::rename(&partial, dir.join(format!("{name}.eml"))).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn a_message_lands_whole_as_an_eml_file_in_the_mail_directory() {
        let dir = std::env::temp_dir().join(format!("tally-mail-{}", uuid::Uuid::new_v4().simple()));
        let mailer = Mailer::start(&MailConfig::files_in(&dir)).unwrap();
        mailer.send("ada@example.com", "Your code", "Your code is 123456.\n".to_owned()).unwrap();
        let mail = dir.join("mail");
        let mut found = None;
        for _ in 0..200 {
            if let Ok(mut entries) = std::fs::read_dir(&mail)
                && let Some(entry) = entries.next()
            {
                found = Some(entry.unwrap().path());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let path = found.expect("an .eml file was written");
        assert_eq!(path.extension().unwrap(), "eml", "{path:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("To: ada@example.com"), "{text}");
        assert!(text.contains("Subject: Your code"), "{text}");
        assert!(text.contains("123456"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a message holding a code is the server user's only: {mode:o}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_reservation_holds_a_place_until_sent_or_dropped() {
        let (queue, mut messages) = mpsc::channel(1);
        let mailer = Mailer { queue, from: DEFAULT_MAIL_FROM.parse().unwrap() };
        let first = mailer.reserve("ada@example.com", "first", "1".to_owned()).unwrap();
        assert!(
            matches!(mailer.reserve("ada@example.com", "second", "2".to_owned()), Err(MailError::QueueFull)),
            "the one place is taken by the first reservation"
        );
        assert!(matches!(mailer.send("ada@example.com", "second", "2".to_owned()), Err(MailError::QueueFull)));
        drop(first);
        assert!(messages.try_recv().is_err(), "a dropped reservation sends nothing");
        mailer.reserve("ada@example.com", "third", "3".to_owned()).unwrap().send();
        let message = String::from_utf8(messages.try_recv().unwrap().formatted()).unwrap();
        assert!(message.contains("Subject: third"), "{message}");
        drop(messages);
        assert!(matches!(mailer.reserve("ada@example.com", "s", String::new()), Err(MailError::Stopped)));
    }

    #[tokio::test]
    async fn bad_configuration_and_recipients_are_refused() {
        let bad_from = MailConfig { from: "not an address".to_owned(), ..MailConfig::files_in("/tmp") };
        assert!(matches!(Mailer::start(&bad_from), Err(MailError::Config(_))));
        let bad_url = MailConfig { transport: MailTransport::Smtp("ftp://x".to_owned()), ..MailConfig::default() };
        assert!(matches!(Mailer::start(&bad_url), Err(MailError::Config(_))));
        let mailer = Mailer::start(&MailConfig::files_in("/nonexistent")).unwrap();
        assert!(matches!(mailer.send("no at sign", "s", String::new()), Err(MailError::Recipient(_))));
    }
}
