//! Webhooks (API.md *1.1* "Events and webhooks", `docs/events.md`): the subscription routes
//! and the delivery worker.
//!
//! **Delivery.** One task per enabled subscription (`Deliveries`, started by `tally serve` and
//! the test harness on their tokio runtime, never on a shard thread) reads the feed from the
//! subscription's position and posts one event at a time, in feed order (so in `seq` order per
//! shard), signed `Tally-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! with `Tally-Event-Id` and `Tally-Event-Type`; the body is the event's envelope, the same bytes
//! on every attempt. A `2xx` within 10 s is delivered; anything else is retried after an
//! exponential back-off with full jitter (1 s doubling, capped at 10 minutes) until 24 hours
//! after the first attempt (by the identity clock, so a test can move time), then `dead`, and
//! the task goes on with the next event. The position is stored after each event settles, so a
//! restart re-sends at most the event in flight (at-least-once; dedupe by `Tally-Event-Id`).
//! A slow or dead receiver holds only its own subscription's task (one request in flight each):
//! transfers never wait for deliveries, and other subscriptions go on.
//!
//! **Private receivers** (`WebhookOptions::deny_private`, `TALLY_WEBHOOK_DENY_PRIVATE`): a URL
//! whose host is, or resolves to, a loopback, private, link-local or unspecified address is
//! refused at create and at PATCH, and checked again at every delivery: a name is resolved by
//! the client's own resolver (`PublicOnly`), which refuses private answers, so the address
//! checked is the address connected to (a DNS answer that changes after the subscription was
//! accepted, "DNS rebinding", fails the delivery instead of reaching an internal host).
//!
//! **TLS.** `https` receivers are reached with rustls on aws-lc-rs (the crypto library the rest
//! of Tally uses) trusting Mozilla's roots (`webpki-roots`, compiled in: the same answer on every
//! host, no system store needed), plus the CA certificates of `WebhookOptions::extra_ca_pem`
//! (`TALLY_WEBHOOK_CA_FILE`: an internal CA, or a test's own).

use backon::{BackoffBuilder, ExponentialBuilder};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tally_engine::Timestamp;
use tally_persistence::events::webhooks::{Delivery, DeliveryStatus, Subscription};
use tally_persistence::events::{EventType, FeedPosition, StoredEvent};
use uuid::Uuid;

use crate::audit::{AdminChange, audited};
use crate::auth::Authorized;
use crate::auth::permissions::WebhooksManage;
use crate::auth::stepup::StepUp;
use crate::events::{envelope, parse_types};
use crate::json::ApiJson;
use crate::problem::ApiError;
use crate::query::ApiQuery;
use crate::state::AppState;
use crate::views::rfc3339;

/// API.md: a receiver has 10 s to answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// API.md: retried for 24 h after the first attempt, then `dead`.
pub const RETRY_WINDOW_MICROS: i64 = 24 * 3600 * 1_000_000;
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Events read from the feed per turn of a subscription's task.
const EVENTS_PER_READ: u32 = 100;
/// How often an idle subscription looks for new events, and the supervisor for new or
/// changed subscriptions.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Longest URL accepted.
const URL_LENGTH_MAX: usize = 2048;
const DESCRIPTION_LENGTH_MAX: usize = 500;
/// How long a create or PATCH waits for the receiver's name to resolve (deny-private only).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events counted per shard and subscription for the pending figures: a receiver far behind
/// costs a bounded index walk per scrape, and shows as "at least this many".
pub const BACKLOG_COUNT_CAP: u32 = 10_000;

/// What `tally serve` reads from the environment for webhooks; tests set it directly.
#[derive(Clone, Debug, Default)]
pub struct WebhookOptions {
    /// `TALLY_WEBHOOK_DENY_PRIVATE=true`: refuse receivers on loopback, private, link-local or
    /// unspecified addresses (default off: subscriptions are made by trusted admins, and
    /// receivers are often internal, API.md).
    pub deny_private: bool,
    /// PEM CA certificates trusted for `https` receivers besides Mozilla's roots
    /// (`TALLY_WEBHOOK_CA_FILE`).
    pub extra_ca_pem: Option<Vec<u8>>,
}

/// Deliveries since start, by outcome: the `/ops` page's rates (the Prometheus counters of the
/// same names cannot be read back).
static DELIVERED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static DEAD: AtomicU64 = AtomicU64::new(0);

/// `Tally-Signature` for `body` at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", data_encoding::HEXLOWER.encode(tag.as_ref()))
}

/// True for an address a receiver may not have under `deny_private`: loopback, private
/// (RFC 1918, shared address space 100.64/10, IPv6 unique local fc00::/7), link-local
/// (169.254/16, fe80::/10, and the deprecated site-local fec0::/10), unspecified, "this
/// network" 0/8, broadcast, and the ranges no public receiver has: IETF protocol assignments
/// 192.0.0/24, benchmarking 198.18/15, reserved 240/4. An IPv6 address that carries an IPv4
/// one to a gateway is judged as that IPv4 address: IPv4-mapped (::ffff:a.b.c.d),
/// IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96, which a DNS64 network routes to the
/// IPv4 address in its last 32 bits) and 6to4 (2002:AABB:CCDD::/48).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64)
                || (a, b, c) == (192, 0, 0)
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let last_32 = |high: u16, low: u16| IpAddr::V4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
            // ::a.b.c.d (not :: or ::1, judged below as IPv6).
            if segments[..6] == [0; 6] && segments[6] != 0 {
                return is_private(last_32(segments[6], segments[7]));
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_private(last_32(segments[6], segments[7]));
            }
            if segments[0] == 0x2002 {
                return is_private(last_32(segments[1], segments[2]));
            }
            let first = segments[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
        }
    }
}

/// The client's resolver under `deny_private`: the system's resolver (`getaddrinfo` on a
/// blocking thread, as reqwest's default), refusing the name when any address it gives is
/// private. Resolving and checking in the connection's own path is what makes the check hold
/// against a name whose answer changes (the connection uses exactly the addresses checked).
#[derive(Debug)]
struct PublicOnly;

#[derive(Debug, thiserror::Error)]
#[error("{name} resolves to {address}, a private address (TALLY_WEBHOOK_DENY_PRIVATE)")]
struct PrivateAddress {
    name: String,
    address: IpAddr,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if let Some(private) = addresses.iter().find(|address| is_private(address.ip())) {
                return Err(Box::new(PrivateAddress { name, address: private.ip() }) as _);
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The delivery client: 10 s time-out, no redirects, rustls on aws-lc-rs with Mozilla's roots
/// and `extra_ca_pem`; under `deny_private`, the `PublicOnly` resolver and no proxy (through a
/// proxy Tally would never see the address it reaches). Errs on an unreadable CA file.
pub fn client(options: &WebhookOptions) -> Result<reqwest::Client, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(pem) = &options.extra_ca_pem {
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| format!("webhook CA file: {error}"))?;
            roots.add(certificate).map_err(|error| format!("webhook CA file: {error}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("webhook CA file: no PEM certificate in it".to_owned());
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("webhook TLS: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .use_preconfigured_tls(tls);
    if options.deny_private {
        builder = builder.no_proxy().dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().map_err(|error| format!("webhook client: {error}"))
}

/// Builds the delivery client and starts the supervisor of the delivery tasks on the current
/// tokio runtime. Errs (before anything starts) when the client cannot be built.
pub fn start(state: AppState) -> Result<(), String> {
    let client = client(&state.identity().webhooks)?;
    start_with(state, client);
    Ok(())
}

/// Starts the supervisor with a client built earlier (`tally serve` builds it at start-up, so
/// bad settings are refused at once, and starts deliveries only once its engine runs).
pub fn start_with(state: AppState, client: reqwest::Client) {
    tokio::spawn(supervise(state, client));
}

async fn supervise(state: AppState, client: reqwest::Client) {
    let mut running: HashMap<Uuid, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        running.retain(|_, task| !task.is_finished());
        match state.identity().events.subscriptions().await {
            Ok(subscriptions) => {
                for subscription in subscriptions.into_iter().filter(|s| s.enabled) {
                    running.entry(subscription.id).or_insert_with(|| {
                        tokio::spawn(run_subscription(state.clone(), client.clone(), subscription.id))
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "webhook subscriptions unreadable; retrying"),
        }
        tokio::time::sleep(IDLE_POLL).await;
    }
}

/// How often a subscription whose types matched nothing writes that it is past the events it
/// read: at most one store write per this, not one per `IDLE_POLL`.
const SKIP_WRITE_INTERVAL: Duration = Duration::from_secs(5);

/// A subscription to some types read nothing after its position: every event up to `heads`
/// (read before that read) is of another type. Its position moves past them, so the next
/// reads (and the backlog figures) do not scan them again, which for a rare type was every
/// event since the subscription's last delivery, on every poll. Written by compare-and-set
/// against what was read, like a run's settlement: a replay meanwhile wins.
async fn skip_unmatched(
    state: &AppState,
    subscription: &Subscription,
    position: &FeedPosition,
    heads: &[(u16, u64)],
    skipped_at: &mut Option<Instant>,
) {
    if heads.is_empty() || skipped_at.is_some_and(|at| at.elapsed() < SKIP_WRITE_INTERVAL) {
        return;
    }
    let mut past = position.clone();
    past.reach(heads);
    if past == *position {
        return;
    }
    *skipped_at = Some(Instant::now());
    let past = past.text();
    let written = state.identity().events.set_position(subscription.id, &past, Some(&subscription.position), None);
    if let Err(error) = written.await {
        tracing::warn!(%error, subscription = %subscription.id, "webhook position not moved past unmatched events");
    }
}

fn types_of(subscription: &Subscription) -> Option<Vec<EventType>> {
    subscription.events.as_ref().map(|names| names.iter().filter_map(|name| EventType::parse(name)).collect())
}

/// Delivers one subscription's events until it is disabled or deleted.
async fn run_subscription(state: AppState, client: reqwest::Client, id: Uuid) {
    let store = state.identity().events.clone();
    let mut skipped_at: Option<Instant> = None;
    loop {
        let Ok(Some(subscription)) = store.subscription(id).await else { return };
        if !subscription.enabled {
            return;
        }
        let Some(position) = FeedPosition::parse(&subscription.position) else { return };
        let types = types_of(&subscription);
        // With a type filter, where each shard stood before the read (see `skip_unmatched`).
        let heads = match types {
            Some(_) => store.event_heads().await,
            None => Ok(Vec::new()),
        };
        let read = store.events_after(&position, types.as_deref(), EVENTS_PER_READ).await;
        let (heads, events) = match (heads, read) {
            (Ok(heads), Ok(events)) => (heads, events),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, subscription = %id, "webhook feed unreadable; retrying");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
        };
        if events.is_empty() {
            skip_unmatched(&state, &subscription, &position, &heads, &mut skipped_at).await;
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        }
        let mut run = Run::new(position, subscription.position.clone());
        let mut checked = Instant::now();
        for (at, event) in events.iter().enumerate() {
            // An edit since (disabled, deleted, another URL or other types): start over from
            // what is stored now. Looked at every `IDLE_POLL`, not before every event: a store
            // round trip per event was a quarter of a delivery's cost, and a replay meanwhile
            // is caught by the position's compare-and-set anyway.
            if checked.elapsed() >= IDLE_POLL {
                match store.subscription(id).await {
                    Ok(Some(now))
                        if now.enabled
                            && now.position == run.written
                            && now.url == subscription.url
                            && now.events == subscription.events => {}
                    Ok(Some(_)) => break,
                    Ok(None) | Err(_) => return,
                }
                checked = Instant::now();
            }
            // Only the page's first event can have an unsettled delivery to resume (the task
            // stopped, or the server died, while it was retrying it); a later one is new, or
            // is sent again by a replay, which starts a fresh retry window anyway.
            if !deliver(&state, &client, &subscription, event, at == 0, &mut run).await {
                return;
            }
            if run.due() && !run.settle(&state, id).await {
                break;
            }
        }
        // The page's end: whatever is left of the run (lost to a replay: start over).
        run.settle(&state, id).await;
    }
}

/// Events a subscription's task has finished with (delivered, or dead) but not yet settled in
/// the store. Settling a run at once (its delivery rows and the position after it, one
/// transaction: `WebhookStore::settle`) instead of two commits per event is what lets one
/// subscription keep up with the transfer rate. A crash before a run is settled sends its
/// events again: at-least-once, deduplicated by `Tally-Event-Id`, as always.
struct Run {
    finished: Vec<Delivery>,
    /// The position after the last finished event.
    position: FeedPosition,
    /// The position last written (what the store should still have).
    written: String,
    since: Option<Instant>,
}

impl Run {
    /// A run is settled once this many events wait, or the oldest has waited `AGE_MAX`.
    const EVENTS_MAX: usize = 64;
    const AGE_MAX: Duration = Duration::from_millis(100);

    fn new(position: FeedPosition, written: String) -> Run {
        Run { finished: Vec::new(), position, written, since: None }
    }

    fn finish(&mut self, event: &StoredEvent, delivery: Delivery) {
        self.position.advance(event.shard, event.seq);
        self.finished.push(delivery);
        self.since.get_or_insert_with(Instant::now);
    }

    fn due(&self) -> bool {
        self.finished.len() >= Run::EVENTS_MAX || self.since.is_some_and(|since| since.elapsed() >= Run::AGE_MAX)
    }

    /// Writes the run; false if it was not written (a replay moved the position meanwhile, or
    /// the store failed): the task then starts over from what is stored.
    async fn settle(&mut self, state: &AppState, id: Uuid) -> bool {
        if self.finished.is_empty() {
            return true;
        }
        let next = self.position.text();
        let settled = state.identity().events.settle(id, &self.finished, &next, &self.written).await;
        self.finished.clear();
        self.since = None;
        match settled {
            Ok(true) => {
                self.written = next;
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(%error, subscription = %id, "webhook deliveries not settled; re-reading");
                false
            }
        }
    }
}

/// Why a URL may not be posted to now under `deny_private`, for an IP-literal host (a name is
/// checked by `PublicOnly` as it is resolved for the connection).
fn literal_private(url: &str) -> Option<IpAddr> {
    let ip = literal_host(&reqwest::Url::parse(url).ok()?)?;
    is_private(ip).then_some(ip)
}

/// The URL's host if it is an IP address (IPv6 hosts come bracketed).
fn literal_host(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// A delivery error's text with its causes (reqwest's own says only "error sending request";
/// the cause says connection refused, a TLS failure or a private address).
fn error_text(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out after 10 s".to_owned();
    }
    let mut causes = String::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        causes.push_str(": ");
        causes.push_str(&cause.to_string());
        source = cause.source();
    }
    // Without the URL: the delivery log is about this subscription's URL already.
    format!("not delivered: {}{causes}", error.without_url())
}

/// Delivers `event` until a `2xx` or `dead`, and adds it to `run`. False when the
/// subscription went away meanwhile (or a replay moved it: the task starts over).
async fn deliver(
    state: &AppState,
    client: &reqwest::Client,
    subscription: &Subscription,
    event: &StoredEvent,
    resume: bool,
    run: &mut Run,
) -> bool {
    let store = &state.identity().events;
    let deny_private = state.identity().webhooks.deny_private;
    let Ok(body) = envelope(event) else { return false };
    let existing = if resume { store.delivery(subscription.id, event.shard, event.seq).await } else { Ok(None) };
    let mut delivery = match existing {
        // A replay sends a delivered or dead event again, from a fresh retry window.
        Ok(Some(existing)) if existing.status == DeliveryStatus::Pending => existing,
        _ => Delivery {
            shard: event.shard,
            seq: event.seq,
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_status_code: None,
            last_error: None,
            first_attempt_at: state.identity().now(),
            next_attempt_at: None,
            delivered_at: None,
        },
    };
    loop {
        let t = unix_now();
        // An IP literal is connected to without resolving: checked here, each attempt (the
        // setting may have been turned on after the subscription was made).
        let refused = if deny_private { literal_private(&subscription.url) } else { None };
        let sent = match refused {
            Some(ip) => Err(format!("not delivered: {ip} is a private address (TALLY_WEBHOOK_DENY_PRIVATE)")),
            None => client
                .post(&subscription.url)
                .header("content-type", "application/json")
                .header("tally-event-id", event.id().to_string())
                .header("tally-event-type", event.kind.as_str())
                .header("tally-signature", signature(&subscription.secret, t, &body))
                .body(body.clone())
                .send()
                .await
                .map_err(error_text),
        };
        delivery.attempts = delivery.attempts.saturating_add(1);
        let now = state.identity().now();
        match sent {
            Ok(response) if response.status().is_success() => {
                delivery.status = DeliveryStatus::Delivered;
                delivery.last_status_code = Some(response.status().as_u16());
                delivery.last_error = None;
                delivery.next_attempt_at = None;
                delivery.delivered_at = Some(now);
                metrics::counter!("tally_webhook_deliveries_total", "outcome" => "delivered").increment(1);
                DELIVERED.fetch_add(1, Ordering::Relaxed);
                run.finish(event, delivery);
                return true;
            }
            Ok(response) => {
                delivery.last_status_code = Some(response.status().as_u16());
                delivery.last_error = Some(format!("answered {}", response.status().as_u16()));
            }
            Err(error) => {
                delivery.last_status_code = None;
                delivery.last_error = Some(error);
            }
        }
        metrics::counter!("tally_webhook_deliveries_total", "outcome" => "failed").increment(1);
        FAILED.fetch_add(1, Ordering::Relaxed);
        if now.as_micros().saturating_sub(delivery.first_attempt_at.as_micros()) >= RETRY_WINDOW_MICROS {
            delivery.status = DeliveryStatus::Dead;
            delivery.next_attempt_at = None;
            metrics::counter!("tally_webhook_deliveries_total", "outcome" => "dead").increment(1);
            DEAD.fetch_add(1, Ordering::Relaxed);
            run.finish(event, delivery);
            return true;
        }
        let wait = backoff(delivery.attempts);
        delivery.next_attempt_at =
            Some(Timestamp::from_micros(now.as_micros().saturating_add(wait.as_micros() as i64)));
        // The events delivered before this one are settled before the wait, which may be long.
        if !run.settle(state, subscription.id).await || !record(state, subscription.id, &delivery).await {
            return false;
        }
        tokio::time::sleep(wait).await;
        match store.subscription(subscription.id).await {
            Ok(Some(now)) if now.enabled && now.url == subscription.url => {}
            _ => return false,
        }
    }
}

async fn record(state: &AppState, subscription: Uuid, delivery: &Delivery) -> bool {
    match state.identity().events.record_delivery(subscription, delivery).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, %subscription, "webhook delivery state not stored");
            // The subscription may have been deleted (its deliveries with it).
            false
        }
    }
}

/// Exponential with jitter: a random time between half and all of 1 s · 2^(attempts-1), at
/// most 10 min (`BACKOFF_MAX`). Jitter spreads the retries of many subscriptions that failed
/// together; the lower half keeps a retry from coming at once.
fn backoff(attempts: u32) -> Duration {
    let mut waits = ExponentialBuilder::new()
        .with_min_delay(BACKOFF_FIRST / 2)
        .with_max_delay(BACKOFF_MAX / 2)
        .without_max_times()
        // backon's jitter adds up to the delay again: [d, 2d) of these halves.
        .with_jitter()
        .build();
    let nth = usize::try_from(attempts.saturating_sub(1).min(64)).unwrap_or(64);
    waits.nth(nth).unwrap_or(BACKOFF_MAX).min(BACKOFF_MAX)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs() as i64)
}

// ---- figures for /metrics and /ops ----

/// Where the subscriptions stand: what `/metrics` and `/v1/admin/actors` show.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub subscriptions_enabled: u64,
    pub subscriptions_disabled: u64,
    /// Events committed and not yet settled (delivered or dead), summed over the enabled and
    /// the disabled subscriptions (each counted up to `BACKLOG_COUNT_CAP` per shard).
    pub pending_enabled: u64,
    pub pending_disabled: u64,
    /// Age of the oldest event an enabled subscription has not settled yet (0: none).
    pub oldest_pending_seconds: f64,
    /// Since start: deliveries answered `2xx`, attempts that failed, events given up (`dead`).
    pub delivered: u64,
    pub failed: u64,
    pub dead: u64,
}

/// Deliveries since start: (delivered, failed, dead).
pub fn counters() -> (u64, u64, u64) {
    (DELIVERED.load(Ordering::Relaxed), FAILED.load(Ordering::Relaxed), DEAD.load(Ordering::Relaxed))
}

/// Reads the figures: one bounded count per subscription and shard. `None` when the store
/// cannot be read (the caller shows the counters it has and says so).
pub async fn figures(state: &AppState) -> Option<Figures> {
    let store = &state.identity().events;
    let (delivered, failed, dead) = counters();
    let mut figures = Figures { delivered, failed, dead, ..Figures::default() };
    let subscriptions = match store.subscriptions().await {
        Ok(subscriptions) => subscriptions,
        Err(error) => {
            tracing::warn!(%error, "webhook subscriptions unreadable for the figures");
            return None;
        }
    };
    // Events carry the engine's booking time, which is the system clock (the identity clock
    // is the one tests move).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX));
    let mut oldest: Option<Timestamp> = None;
    for subscription in &subscriptions {
        let Some(position) = FeedPosition::parse(&subscription.position) else { continue };
        let backlog = match store.backlog(&position, types_of(subscription).as_deref(), BACKLOG_COUNT_CAP).await {
            Ok(backlog) => backlog,
            Err(error) => {
                tracing::warn!(%error, "webhook backlog unreadable for the figures");
                return None;
            }
        };
        if subscription.enabled {
            figures.subscriptions_enabled += 1;
            figures.pending_enabled = figures.pending_enabled.saturating_add(backlog.events);
            oldest = match (oldest, backlog.oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        } else {
            figures.subscriptions_disabled += 1;
            figures.pending_disabled = figures.pending_disabled.saturating_add(backlog.events);
        }
    }
    figures.oldest_pending_seconds =
        oldest.map_or(0.0, |oldest| now.saturating_sub(oldest.as_micros()).max(0) as f64 / 1e6);
    Some(figures)
}

/// Sets the webhook gauges from `figures` (the delivery counters are counted as they happen).
pub fn record_figures(figures: &Figures) {
    for (state, subscriptions, pending) in [
        ("enabled", figures.subscriptions_enabled, figures.pending_enabled),
        ("disabled", figures.subscriptions_disabled, figures.pending_disabled),
    ] {
        metrics::gauge!("tally_webhook_subscriptions", "state" => state).set(subscriptions as f64);
        metrics::gauge!("tally_webhook_pending_events", "state" => state).set(pending as f64);
    }
    metrics::gauge!("tally_webhook_oldest_pending_seconds").set(figures.oldest_pending_seconds);
}

// ---- routes ----

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    url: String,
    /// Event types, or `["*"]` for every type.
    events: Vec<String>,
    description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Redeliver every event after this: a seq (every shard; `0` = from the beginning) or a
    /// feed position `S:N,S:N`.
    #[schema(value_type = String)]
    after_seq: serde_json::Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookSubscription)]
struct SubscriptionView {
    #[schema(format = Uuid)]
    id: String,
    url: String,
    events: Vec<String>,
    description: Option<String>,
    enabled: bool,
    created_at: String,
    /// Where its deliveries stand in the feed (`next_after` form).
    position: String,
    /// Only in the answer to create: shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl SubscriptionView {
    fn of(subscription: &Subscription, with_secret: bool) -> Result<SubscriptionView, ApiError> {
        Ok(SubscriptionView {
            id: subscription.id.to_string(),
            url: subscription.url.clone(),
            events: subscription.events.clone().unwrap_or_else(|| vec!["*".to_owned()]),
            description: subscription.description.clone(),
            enabled: subscription.enabled,
            created_at: rfc3339(subscription.created_at)?,
            position: subscription.position.clone(),
            secret: with_secret.then(|| subscription.secret.clone()),
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookSubscriptionList)]
struct SubscriptionList {
    items: Vec<SubscriptionView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDelivery)]
struct DeliveryView {
    #[schema(format = Uuid)]
    event_id: String,
    shard: u16,
    seq: u64,
    status: &'static str,
    attempts: u32,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    next_attempt_at: Option<String>,
    delivered_at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDeliveryPage)]
struct DeliveryPage {
    items: Vec<DeliveryView>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `dead`.
    status: Option<String>,
    cursor: Option<String>,
    /// 1 to 200, default 50.
    limit: Option<String>,
}

fn check_url(url: &str) -> Result<String, ApiError> {
    let refuse = |why: &str| ApiError::field("url", why.to_owned());
    if url.len() > URL_LENGTH_MAX {
        return Err(refuse("must be at most 2048 characters"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| refuse("must be an absolute http or https URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(refuse("must be an absolute http or https URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse("must not carry credentials"));
    }
    Ok(parsed.to_string())
}

/// Under `deny_private`, refuses a URL whose host is, or resolves to, a private address
/// (`is_private`), or whose name does not resolve (it cannot be checked). Deliveries check
/// again as they connect (`PublicOnly`), since a name's answer can change afterwards.
async fn check_receiver(options: &WebhookOptions, url: &str) -> Result<(), ApiError> {
    if !options.deny_private {
        return Ok(());
    }
    let refuse = |why: String| ApiError::field("url", why);
    let parsed = reqwest::Url::parse(url).map_err(|_| refuse("must be an absolute http or https URL".to_owned()))?;
    let addresses: Vec<IpAddr> = match literal_host(&parsed) {
        Some(ip) => vec![ip],
        None => {
            let host = parsed.host_str().unwrap_or_default().to_owned();
            let port = parsed.port_or_known_default().unwrap_or(443);
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await {
                Ok(Ok(found)) => found.map(|address| address.ip()).collect(),
                Ok(Err(_)) | Err(_) => {
                    return Err(refuse(format!(
                        "host {host} does not resolve, so it cannot be checked against private addresses"
                    )));
                }
            }
        }
    };
    if let Some(private) = addresses.into_iter().find(|ip| is_private(*ip)) {
        return Err(refuse(format!(
            "resolves to {private}, a loopback, private, link-local or unspecified address; this server refuses \
             those (TALLY_WEBHOOK_DENY_PRIVATE)"
        )));
    }
    Ok(())
}

fn check_events(events: &[String]) -> Result<Option<Vec<String>>, ApiError> {
    if events.len() == 1 && events[0] == "*" {
        return Ok(None);
    }
    if events.is_empty() {
        return Err(ApiError::field("events", "must name at least one event type, or be [\"*\"]"));
    }
    let joined = events.join(",");
    if events.iter().any(|name| name.contains(',')) {
        return Err(ApiError::field("events", "unknown event type"));
    }
    let types = parse_types(Some(&joined)).map_err(|_| ApiError::field("events", "unknown event type"))?;
    Ok(types.map(|types| types.iter().map(|kind| kind.as_str().to_owned()).collect()))
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::field("id", "must be a UUID"))
}

async fn existing(state: &AppState, id: Uuid) -> Result<Subscription, ApiError> {
    state.identity().events.subscription(id).await?.ok_or_else(|| ApiError::not_found("webhook"))
}

/// `POST /v1/admin/webhooks` ★ (`webhooks:manage`).
#[utoipa::path(
    post,
    path = "/v1/admin/webhooks",
    tag = "admin",
    params(("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for webhooks.manage (POST /v1/auth/step-up)")),
    request_body = CreateBody,
    description = "Subscribes `url` (http or https, no credentials) to `events` (types, or `[\"*\"]`). The answer \
                   carries `secret`, shown only here: deliveries are signed `Tally-Signature: t=<unix seconds>,\
                   v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`. Deliveries start from the events committed \
                   after the subscription was made. Stepped up for users with TOTP on (`webhooks.manage`). With \
                   `TALLY_WEBHOOK_DENY_PRIVATE=true`, a host that is or resolves to a loopback, private, link-local or \
                   unspecified address (or does not resolve) is `400` on `url`.",
    responses((status = 201, body = SubscriptionView)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    admin: Authorized<WebhooksManage>,
    _step_up: StepUp<crate::auth::stepup::WebhooksManage>,
    change: AdminChange,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let url = check_url(&body.url)?;
    let events = check_events(&body.events)?;
    check_receiver(&state.identity().webhooks, &url).await?;
    if body.description.as_ref().is_some_and(|text| text.chars().count() > DESCRIPTION_LENGTH_MAX) {
        return Err(ApiError::field("description", "must be at most 500 characters"));
    }
    let mut bytes = [0_u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ApiError::internal("the system random generator failed"))?;
    // From now on: the feed's current end, per shard.
    let mut position = FeedPosition::default();
    for head in state.identity().events.ledger_heads().await? {
        position.advance(head.shard, head.last_seq);
    }
    let subscription = Subscription {
        id: Uuid::now_v7(),
        url,
        events,
        description: body.description,
        secret: format!("whsec_{}", URL_SAFE_NO_PAD.encode(bytes)),
        enabled: true,
        created_at: state.identity().now(),
        position: position.text(),
    };
    let entry =
        change.record(state.identity(), admin.admin_id(), Some(StatusCode::CREATED), Some(subscription.id.to_string()));
    state.identity().events.create_subscription(&subscription, Some(&entry)).await?;
    let mut response = crate::accounts::created(
        format!("/v1/admin/webhooks/{}", subscription.id),
        SubscriptionView::of(&subscription, true)?,
    );
    // The one answer that shows the secret: kept by no cache (as an API key's).
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(audited(response))
}

/// `GET /v1/admin/webhooks` (`webhooks:manage`).
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin", description = "Every subscription, oldest first (never its secret).", responses((status = 200, body = SubscriptionList)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _admin: Authorized<WebhooksManage>) -> Result<Response, ApiError> {
    let items = state
        .identity()
        .events
        .subscriptions()
        .await?
        .iter()
        .map(|subscription| SubscriptionView::of(subscription, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(SubscriptionList { items }).into_response())
}

/// `GET /v1/admin/webhooks/{id}` (`webhooks:manage`).
#[utoipa::path(get, path = "/v1/admin/webhooks/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 200, body = SubscriptionView)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _admin: Authorized<WebhooksManage>,
    crate::input::TextPath(id): crate::input::TextPath,
) -> Result<Response, ApiError> {
    let subscription = existing(&state, parse_id(&id)?).await?;
    Ok(axum::Json(SubscriptionView::of(&subscription, false)?).into_response())
}

/// `PATCH /v1/admin/webhooks/{id}` (`webhooks:manage`).
#[utoipa::path(
    patch,
    path = "/v1/admin/webhooks/{id}",
    tag = "admin",
    params(("id" = String, Path), ("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for webhooks.manage (POST /v1/auth/step-up)")),
    request_body = UpdateBody,
    description = "Changes `url`, `events` or `enabled` (never the delivery position: see replay). A new `url` is \
                   checked as at create, `TALLY_WEBHOOK_DENY_PRIVATE` included. Stepped up for users with TOTP on \
                   (`webhooks.manage`), as create is.",
    responses((status = 200, body = SubscriptionView)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    admin: Authorized<WebhooksManage>,
    // A new `url` sends every later event (a replay: every earlier one) somewhere else: as
    // much as a new subscription, so the same step-up.
    _step_up: StepUp<crate::auth::stepup::WebhooksManage>,
    change: AdminChange,
    crate::input::TextPath(id): crate::input::TextPath,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Response, ApiError> {
    // Read, change the fields given, write back: one at a time, or two PATCHes of different
    // fields racing would each write the other's field as it read it, and one change would be
    // lost while both answered 200 (a disable answered `"enabled": false` left enabled). One
    // lock for every subscription: these are rare admin writes, and a cluster serves identity
    // and webhooks from one node.
    static UPDATES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _updating = UPDATES.lock().await;
    let mut subscription = existing(&state, parse_id(&id)?).await?;
    if let Some(url) = body.url {
        subscription.url = check_url(&url)?;
        check_receiver(&state.identity().webhooks, &subscription.url).await?;
    }
    if let Some(events) = body.events {
        subscription.events = check_events(&events)?;
    }
    if let Some(enabled) = body.enabled {
        subscription.enabled = enabled;
    }
    let entry =
        change.record(state.identity(), admin.admin_id(), Some(StatusCode::OK), Some(subscription.id.to_string()));
    if !state.identity().events.update_subscription(&subscription, Some(&entry)).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(audited(axum::Json(SubscriptionView::of(&subscription, false)?).into_response()))
}

/// `DELETE /v1/admin/webhooks/{id}` (`webhooks:manage`).
#[utoipa::path(delete, path = "/v1/admin/webhooks/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 204)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    admin: Authorized<WebhooksManage>,
    change: AdminChange,
    crate::input::TextPath(id): crate::input::TextPath,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let entry = change.record(state.identity(), admin.admin_id(), Some(StatusCode::NO_CONTENT), Some(id.to_string()));
    if !state.identity().events.delete_subscription(id, Some(&entry)).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(audited(StatusCode::NO_CONTENT.into_response()))
}

/// `POST /v1/admin/webhooks/{id}/replay {after_seq}` (`webhooks:manage`) → `202`.
#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/replay", tag = "admin", params(("id" = String, Path), ("X-Step-Up-Token" = Option<String>, Header, description = "Needed when the caller has TOTP on: a step-up token for webhooks.manage (POST /v1/auth/step-up)")), request_body = ReplayBody, description = "Redelivers every event after `after_seq` (a seq applying to every shard, `0` = from the beginning, or a feed position `S:N,S:N`), in order, then goes on with new ones. A seq past a shard's newest event replays nothing of that shard and goes on with its new events (it is clamped to the newest). Stepped up for users with TOTP on (`webhooks.manage`), as create is.", responses((status = 202)), security(("bearer" = [])))]
pub async fn replay(
    State(state): State<AppState>,
    admin: Authorized<WebhooksManage>,
    _step_up: StepUp<crate::auth::stepup::WebhooksManage>,
    change: AdminChange,
    crate::input::TextPath(id): crate::input::TextPath,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Response, ApiError> {
    let subscription = existing(&state, parse_id(&id)?).await?;
    let text = match &body.after_seq {
        serde_json::Value::Number(number) if number.is_u64() => number.to_string(),
        serde_json::Value::String(text) => text.clone(),
        _ => return Err(ApiError::field("after_seq", "must be a seq or a position S:N,S:N")),
    };
    let asked = FeedPosition::parse(&text)
        .ok_or_else(|| ApiError::field("after_seq", "must be a seq or a position S:N,S:N"))?;
    // Every shard named (a bare seq stands for each; the task's first write, naming only the
    // shards it delivered from, would otherwise drop it and send every other shard's history
    // again), and none past its newest event: a position beyond it would skip, unseen, every
    // event committed later up to that seq. Past the newest event means "nothing old there; go
    // on with the new ones", so it is clamped to it.
    let events = &state.identity().events;
    let heads = events.event_heads().await?;
    let head = |shard: u16| heads.iter().find(|(s, _)| *s == shard).map_or(0, |(_, seq)| *seq);
    let mut shards: Vec<u16> = events.event_shards().await?;
    shards.extend(asked.shards.iter().map(|(shard, _)| *shard));
    shards.sort_unstable();
    shards.dedup();
    let position = FeedPosition {
        default_after: 0,
        shards: shards.into_iter().map(|shard| (shard, asked.after(shard).min(head(shard)))).collect(),
    };
    // Unconditional: the subscription's task sees its compare-and-set fail and starts over
    // from here.
    let entry = change.record(
        state.identity(),
        admin.admin_id(),
        Some(StatusCode::ACCEPTED),
        Some(subscription.id.to_string()),
    );
    if !state.identity().events.set_position(subscription.id, &position.text(), None, Some(&entry)).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(audited(StatusCode::ACCEPTED.into_response()))
}

/// `GET /v1/admin/webhooks/{id}/deliveries?status&cursor&limit` (`webhooks:manage`).
#[utoipa::path(get, path = "/v1/admin/webhooks/{id}/deliveries", tag = "admin", params(("id" = String, Path), DeliveryQuery), description = "The subscription's delivery log in (shard, seq) order: each event attempted, its latest state.", responses((status = 200, body = DeliveryPage)), security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    _admin: Authorized<WebhooksManage>,
    crate::input::TextPath(id): crate::input::TextPath,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Response, ApiError> {
    let subscription = existing(&state, parse_id(&id)?).await?;
    let status = query
        .status
        .as_deref()
        .map(|text| {
            DeliveryStatus::parse(text).ok_or_else(|| ApiError::field("status", "must be pending, delivered or dead"))
        })
        .transpose()?;
    let limit = crate::pagination::limit(query.limit.as_deref())?;
    let after = match query.cursor.as_deref() {
        None => None,
        Some(text) => {
            let position = FeedPosition::parse(text).filter(|position| position.shards.len() == 1);
            let (shard, seq) = position
                .map(|position| position.shards[0])
                .ok_or_else(|| ApiError::field("cursor", "must be a cursor this listing answered"))?;
            Some((shard, seq))
        }
    };
    let mut items = state.identity().events.deliveries(subscription.id, status, after, limit + 1).await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more { items.last().map(|last| format!("{}:{}", last.shard, last.seq)) } else { None };
    let items = items
        .iter()
        .map(|delivery| {
            Ok(DeliveryView {
                event_id: tally_persistence::events::event_id(delivery.shard, delivery.seq).to_string(),
                shard: delivery.shard,
                seq: delivery.seq,
                status: delivery.status.as_str(),
                attempts: delivery.attempts,
                last_status_code: delivery.last_status_code,
                last_error: delivery.last_error.clone(),
                next_attempt_at: delivery.next_attempt_at.map(rfc3339).transpose()?,
                delivered_at: delivery.delivered_at.map(rfc3339).transpose()?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(axum::Json(DeliveryPage { items, next_cursor }).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_signature_is_stripes_scheme_over_timestamp_and_body() {
        // RFC 4231-style known answer computed independently: HMAC-SHA256("key", "1.{}").
        let signed = signature("key", 1, "{}");
        assert!(signed.starts_with("t=1,v1="));
        assert_eq!(signed.len(), "t=1,v1=".len() + 64);
        assert_ne!(signature("key", 2, "{}"), signed);
        assert_ne!(signature("other", 1, "{}"), signed);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempts in 1..40 {
            let wait = backoff(attempts);
            assert!(wait <= BACKOFF_MAX);
            let ceiling = BACKOFF_FIRST.saturating_mul(1_u32 << (attempts - 1).min(16)).min(BACKOFF_MAX);
            assert!(wait >= ceiling / 2, "attempt {attempts}: {wait:?} below half of {ceiling:?}");
        }
    }

    #[test]
    fn private_addresses_are_the_documented_ranges() {
        for private in [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "::127.0.0.1",
            "::10.0.0.5",
            "64:ff9b::a00:5",
            "64:ff9b::7f00:1",
            "2002:a00:5::1",
            "2002:7f00:1::",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private} is private");
        }
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "11.0.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "239.255.255.254",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_private(public.parse().unwrap()), "{public} is public");
        }
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let options = WebhookOptions { extra_ca_pem: Some(b"not a certificate".to_vec()), ..WebhookOptions::default() };
        assert!(client(&options).is_err());
        assert!(client(&WebhookOptions::default()).is_ok());
    }

    #[test]
    fn urls_are_http_or_https_only() {
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("https://example.com/hook").is_ok());
        for bad in ["ftp://example.com", "example.com/hook", "http://user:pw@example.com/", "file:///etc/passwd"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
