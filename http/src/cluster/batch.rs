//! Single transfers forwarded in batches (issue 13: "node-to-node calls are batched over HTTP/2
//! with keep-alive").
//!
//! Forwarded one by one, every single transfer a standby accepted cost a second HTTP exchange
//! on the standby and a third on the owner (~80 µs of CPU per forwarded transfer, measured by
//! `scripts/cluster bench`). Here a standby's runtime thread queues the `POST /v1/transfers`
//! requests it accepts and sends them to the owner as one `POST` of [`PATH`] over HTTP/2,
//! carrying each request's headers, body and client address; the owner runs each through its
//! router as the request it was (authentication, rate limits, idempotency, the saga), and
//! answers every one in one reply, in order.
//!
//! - **Batching without waiting**: a thread with nothing in flight sends a request at once, as
//!   a batch of one; while a batch is in flight (one per thread and owner), the requests that
//!   arrive queue and leave together with the next. So a batch never waits for company, and
//!   under load it carries everything that queued during a round trip (the journal's group
//!   commit does the same with records).
//! - **What is batched**: `POST /v1/transfers` with a declared body of at most
//!   [`ITEM_BODY_MAX`] bytes, the hot path. Everything else is forwarded one by one
//!   (`forward.rs`): statements and the event feed stream or wait long, and one slow answer
//!   must not hold up the others of its batch.
//! - **Proof**: the whole batch body, with a timestamp and the node's id, is signed with an
//!   HMAC of the cluster secret, so the clients' addresses and every header inside are the
//!   peer's word, not a client's.
//! - **Outcomes**: a batch the owner refused as a whole (not serving, a bad proof) ran none of
//!   its requests: each is answered `503` and the client retries. A batch sent and then not
//!   answered may have run any of them: each is answered `500` "outcome unknown", as a single
//!   forwarded request is, and the client's retry under its `Idempotency-Key` finds out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tally_engine::ErrorCode;
use tokio::sync::oneshot;
use tower::ServiceExt;

use super::forward::{self, NotAnswered};
use super::{Node, unavailable};
use crate::problem::ApiError;

/// Where a standby posts a batch on the owner. Not part of the public API (not in the OpenAPI
/// document): only a peer holding the cluster secret is answered.
pub const PATH: &str = "/internal/cluster/forwarded";

/// The one request path batched.
const BATCHED_PATH: &str = "/v1/transfers";
/// A transfer's body is well under a kilobyte; a larger one is forwarded by itself.
const ITEM_BODY_MAX: usize = 64 * 1024;
/// Requests per batch. 256 is the bench's whole concurrency, more than a thread ever queues in
/// one round trip, and bounds the owner's reply.
const ITEMS_MAX: usize = 256;
// Batches in flight per standby thread and owner: one, so that everything a thread accepts
// during a round trip leaves in the next batch. Measured with `scripts/cluster bench` at 6,000
// transfers/s: one in flight made batches of 5-9 requests and cost the three nodes 1.26-1.39×
// one node's CPU per transfer; two made batches of 3-4 and 1.36-1.53×, four 2.5 and 1.64×.
// The price is latency: a request waits for the batch in flight before its own leaves (p50
// 8-12 ms against 4 ms on one node at that rate).
/// Requests queued on one standby thread, beyond which a new one is answered `503` at once
/// (DESIGN.md §2: every queue has a bound). Four full batches: at 6,000 transfers/s a thread
/// queues ~10 per round trip, so this is reached only when the owner falls far behind.
const PENDING_MAX: usize = 4 * ITEMS_MAX;
/// A standby stops adding requests to a batch past this many bytes of bodies and headers (a
/// request alone may pass it).
const BATCH_BYTES_TARGET: usize = 1024 * 1024;
/// A batch's body on the owner: the target, plus one more request's body and a generous
/// header block, plus the encoding's overhead. Read before the proof can be checked, so kept
/// small: a forged batch costs the owner at most this much memory per connection.
const BATCH_BODY_MAX: usize = BATCH_BYTES_TARGET + ITEM_BODY_MAX + 512 * 1024;
/// An answer to a single transfer is a transfer view or a problem: a few kilobytes.
const ANSWER_BODY_MAX: usize = 1024 * 1024;

/// One forwarded request, as the standby received it.
#[derive(Debug, Serialize, Deserialize)]
struct Item {
    /// The client's address as the standby saw it.
    client: String,
    method: String,
    path: String,
    headers: Vec<(String, ByteBuf)>,
    body: ByteBuf,
}

impl Item {
    /// Its bytes, roughly as encoded.
    fn size(&self) -> usize {
        self.body.len() + self.headers.iter().map(|(name, value)| name.len() + value.len() + 4).sum::<usize>() + 64
    }
}

/// The owner's answer to one item.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    status: u16,
    headers: Vec<(String, ByteBuf)>,
    body: ByteBuf,
}

/// Whether a standby forwards `request` in a batch: `POST /v1/transfers` (no query) whose
/// declared `Content-Length` is at most [`ITEM_BODY_MAX`]. Returns that length.
pub fn batchable(request: &Request) -> Option<usize> {
    if request.method() != Method::POST
        || request.uri().path() != BATCHED_PATH
        || request.uri().query().is_some()
        || request.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return None;
    }
    let length = request.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse::<usize>().ok()?;
    (length <= ITEM_BODY_MAX).then_some(length)
}

fn to_pairs(headers: &HeaderMap) -> Vec<(String, ByteBuf)> {
    headers
        .iter()
        .filter(|(name, _)| !forward::hop_by_hop(name))
        .map(|(name, value)| (name.as_str().to_owned(), ByteBuf::from(value.as_bytes())))
        .collect()
}

fn from_pairs(pairs: Vec<(String, ByteBuf)>) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        if !forward::hop_by_hop(&name) {
            headers.append(name, HeaderValue::from_bytes(&value).ok()?);
        }
    }
    Some(headers)
}

fn signed_prefix(t: i64, node: &str) -> String {
    format!("{t}.{node}.batch.")
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<node>.batch." + body)>`.
fn proof(secret: &str, t: i64, node: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = aws_lc_rs::hmac::Context::with_key(&key);
    context.update(signed_prefix(t, node).as_bytes());
    context.update(body);
    format!("t={t},v1={}", data_encoding::HEXLOWER.encode(context.sign().as_ref()))
}

/// Whether `headers` carry a valid proof for `body` from a peer.
fn proven(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let (Some(auth), Some(node)) = (text(forward::AUTH), text(forward::FORWARDED_BY)) else {
        return false;
    };
    let Some((t, v1)) = forward::parse_proof(auth) else {
        return false;
    };
    if !forward::fresh(t) {
        return false;
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = aws_lc_rs::hmac::Context::with_key(&key);
    context.update(signed_prefix(t, node).as_bytes());
    context.update(body);
    aws_lc_rs::constant_time::verify_slices_are_equal(context.sign().as_ref(), &v1).is_ok()
}

/// Whether `headers` look like a peer's before anything of the body is read: a fresh proof's
/// form and the forwarding node's name. A peer's batch always passes; a stranger is refused
/// without costing the owner a byte of buffer.
fn looks_like_a_peer(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    text(forward::FORWARDED_BY).is_some()
        && text(forward::AUTH).and_then(forward::parse_proof).is_some_and(|(t, _)| forward::fresh(t))
}

/// Batches being read on this node, bounded so that strangers who pass the cheap checks cannot
/// make it buffer without limit; released once the proof is checked.
static READING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// At most this many batches are read at once (~1.6 MiB each at most: ~400 MiB in all).
const READING_MAX: usize = 256;
/// A batch's body arrives within this, or the owner stops reading it.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct Reading;

impl Reading {
    fn start() -> Option<Reading> {
        let before = READING.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if before >= READING_MAX {
            READING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            return None;
        }
        Some(Reading)
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        READING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn encode<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).ok()?;
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// The standby's side.

struct Pending {
    owner_url: String,
    item: Item,
    answer: oneshot::Sender<Result<Answer, NotAnswered>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// The owners this thread has a batch in flight to. One each, not one per thread: a batch
    /// stuck on a former owner (paused, its host gone) must not hold back the requests for the
    /// node that took its shards.
    sending_to: Vec<String>,
}

thread_local! {
    /// This runtime thread's queue (DESIGN.md §2: a request stays on the thread that accepted
    /// it, and so does its batch's connection).
    static QUEUE: Arc<Mutex<Queue>> = Arc::new(Mutex::new(Queue::default()));
    /// This thread's HTTP/2 client for batches.
    static CLIENT: std::cell::OnceCell<reqwest::Client> = const { std::cell::OnceCell::new() };
}

/// The batches' client: HTTP/2 with prior knowledge (the owner's server speaks it on the same
/// port), one connection per thread and owner.
pub(super) fn batch_client() -> reqwest::Result<reqwest::Client> {
    super::peer_client()
        .http2_prior_knowledge()
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .http2_keep_alive_timeout(std::time::Duration::from_secs(5))
        .build()
}

fn thread_client() -> Option<reqwest::Client> {
    CLIENT.with(|client| match client.get() {
        Some(client) => Some(client.clone()),
        None => batch_client().ok().map(|built| client.get_or_init(|| built).clone()),
    })
}

fn locked(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Forwards a [`batchable`] request (its body `length` bytes) to the owner in this thread's
/// next batch, and answers with the owner's answer to it.
pub async fn forward(node: &Arc<Node>, request: Request, length: usize) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, length.max(1)).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(ErrorCode::ValidationError, "the request body could not be read in full")
                .into_response();
        }
    };
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "0.0.0.0:0".to_owned(), |ConnectInfo(address)| address.to_string());
    let item = Item {
        client,
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        headers: to_pairs(&parts.headers),
        body: ByteBuf::from(Vec::from(body)),
    };
    // The owner as seen now, once the body is in: read before it, a request could queue for an
    // owner that others on this thread already know to be gone.
    let Some((_, owner_url)) = node.owner_seen() else {
        return unavailable("no node owns the shards at the moment (failover in progress)");
    };
    let owner_url = owner_url.as_str();
    let (sender, receiver) = oneshot::channel();
    let queue_handle = QUEUE.with(Arc::clone);
    let sending = {
        let mut queue = locked(&queue_handle);
        // Ownership moved: what waits for a former owner was never sent, and its batch in
        // flight may hang for the read timeout. Those clients hear 503 now (nothing was done)
        // and retry against the new owner; so the bound below is the current owner's alone.
        fail_unsent(&mut queue, |url| url != owner_url);
        if queue.pending.len() >= PENDING_MAX {
            drop(queue);
            metrics::counter!("tally_cluster_forward_failures_total").increment(1);
            return unavailable("too many requests are waiting for the node that owns the shards");
        }
        queue.pending.push(Pending { owner_url: owner_url.to_owned(), item, answer: sender });
        let start = !queue.sending_to.iter().any(|url| url == owner_url);
        if start {
            queue.sending_to.push(owner_url.to_owned());
        }
        // The guard exists before the task does, so even a task dropped before its first poll
        // (the runtime shutting down) clears the mark.
        start.then(|| Sending { queue: Arc::clone(&queue_handle), owner_url: owner_url.to_owned(), cleared: false })
    };
    if let Some(sending) = sending {
        tokio::spawn(send_batches(Arc::clone(node), sending));
    }
    match receiver.await {
        Ok(Ok(answer)) => into_response(answer),
        Ok(Err(NotAnswered::NotSent)) => unavailable("the node that owns the shards could not be reached"),
        Ok(Err(NotAnswered::Unknown)) | Err(_) => outcome_unknown(),
    }
}

fn outcome_unknown() -> Response {
    ApiError::new(
        ErrorCode::Internal,
        "the node that owns the shards did not answer; the outcome is unknown: retry under the same Idempotency-Key",
    )
    .into_response()
}

fn into_response(answer: Answer) -> Response {
    let mut response = Response::new(Body::from(answer.body.into_vec()));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match from_pairs(answer.headers) {
        Some(headers) => *response.headers_mut() = headers,
        None => return outcome_unknown(),
    }
    response
}

/// Answers `503` (not sent, so not done) to every queued request whose owner URL `matches`.
fn fail_unsent(queue: &mut Queue, matches: impl Fn(&str) -> bool) {
    if !queue.pending.iter().any(|pending| matches(&pending.owner_url)) {
        return;
    }
    let (failed, kept): (Vec<Pending>, Vec<Pending>) =
        queue.pending.drain(..).partition(|pending| matches(&pending.owner_url));
    queue.pending = kept;
    for pending in failed {
        let _ = pending.answer.send(Err(NotAnswered::NotSent));
    }
}

/// Marks a thread's batch to an owner as in flight until dropped. A sender that ends any other
/// way than finding nothing to send (a panic, the runtime dropping its task) clears the mark
/// and answers `503` to the requests still queued for that owner, which were never sent, so
/// neither they nor the thread's next requests can wait for ever. The requests of the batch it
/// was sending are dropped with it, and their clients hear "outcome unknown".
struct Sending {
    queue: Arc<Mutex<Queue>>,
    owner_url: String,
    /// Set when the sender cleared the mark itself, under the lock that found nothing to send.
    cleared: bool,
}

impl Drop for Sending {
    fn drop(&mut self) {
        if !self.cleared {
            let mut queue = locked(&self.queue);
            queue.sending_to.retain(|url| *url != self.owner_url);
            fail_unsent(&mut queue, |url| url == self.owner_url);
        }
    }
}

/// Sends the queue's requests for `owner_url` in batches, one at a time, until there are none.
async fn send_batches(node: Arc<Node>, mut sending: Sending) {
    let queue = Arc::clone(&sending.queue);
    let owner_url = sending.owner_url.clone();
    loop {
        let batch: Vec<Pending> = {
            let mut queue = locked(&queue);
            let mut batch = Vec::new();
            let mut kept = Vec::new();
            let mut bytes = 0;
            for pending in queue.pending.drain(..) {
                if pending.owner_url == owner_url
                    && batch.len() < ITEMS_MAX
                    && (batch.is_empty() || bytes < BATCH_BYTES_TARGET)
                {
                    bytes += pending.item.size();
                    batch.push(pending);
                } else {
                    kept.push(pending);
                }
            }
            queue.pending = kept;
            if batch.is_empty() {
                // Cleared under the lock that found nothing to send: a request queued after it
                // starts a sender of its own.
                queue.sending_to.retain(|url| *url != owner_url);
                sending.cleared = true;
                return;
            }
            batch
        };
        let (items, answers): (Vec<Item>, Vec<_>) =
            batch.into_iter().map(|pending| (pending.item, pending.answer)).unzip();
        metrics::counter!("tally_cluster_forwarded_batches_total").increment(1);
        match send(&node, &owner_url, &items).await {
            Ok(replies) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = answer.send(Ok(reply));
                }
            }
            Err(failure) => {
                metrics::counter!("tally_cluster_forward_failures_total").increment(1);
                for answer in answers {
                    let _ = answer.send(failure.clone().into());
                }
                // The owner is down, stalled or refusing: what queued meanwhile was never sent.
                // Its clients hear 503 at once and retry (by then perhaps to a new owner)
                // rather than each waiting out another batch to the same address.
                fail_unsent(&mut locked(&queue), |url| url == owner_url);
            }
        }
    }
}

/// How a whole batch failed: not sent, or sent and not answered.
#[derive(Debug, Clone)]
enum Failure {
    NotAnswered(NotAnswered),
    /// The owner refused the batch as a whole, so it ran none of it: each request gets this.
    Refused(u16, Vec<(String, ByteBuf)>, Bytes),
}

impl From<Failure> for Result<Answer, NotAnswered> {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::NotAnswered(why) => Err(why),
            Failure::Refused(status, headers, body) => {
                Ok(Answer { status, headers, body: ByteBuf::from(Vec::from(body)) })
            }
        }
    }
}

async fn send(node: &Node, owner_url: &str, items: &[Item]) -> Result<Vec<Answer>, Failure> {
    let not_sent = Failure::NotAnswered(NotAnswered::NotSent);
    let unknown = Failure::NotAnswered(NotAnswered::Unknown);
    let client = thread_client().ok_or(not_sent.clone())?;
    let body = encode(&items).ok_or(not_sent.clone())?;
    let t = forward::unix_now();
    let reply = client
        .post(format!("{owner_url}{PATH}"))
        .header(forward::AUTH, proof(&node.config.secret, t, node.id(), &body))
        .header(forward::FORWARDED_BY, node.id())
        .header(header::CONTENT_TYPE, "application/cbor")
        .body(body)
        .send()
        .await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => {
            tracing::debug!(%error, owner = owner_url, "forwarding a batch to the owner failed");
            return Err(if error.is_connect() { not_sent } else { unknown });
        }
    };
    let status = reply.status();
    let headers = to_pairs(reply.headers());
    let bytes = reply.bytes().await.map_err(|_| unknown.clone())?;
    if status == StatusCode::OK {
        let answers: Vec<Answer> = ciborium::from_reader(bytes.as_ref()).map_err(|_| unknown.clone())?;
        return if answers.len() == items.len() { Ok(answers) } else { Err(unknown) };
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // The owner is not serving (renewing, or no longer the owner): nothing ran, the
        // clients retry.
        return Err(Failure::Refused(status.as_u16(), headers, bytes));
    }
    if status.is_client_error() {
        // A bad proof (the nodes' secrets differ) or a batch the owner could not read: it ran
        // nothing. The clients' requests were fine, so they hear 503, and the operator the log.
        tracing::error!(%status, owner = owner_url, "the owner refused a forwarded batch; check TALLY_CLUSTER_SECRET on every node");
        return Err(Failure::NotAnswered(NotAnswered::NotSent));
    }
    Err(unknown)
}

// ---------------------------------------------------------------------------------------------
// The owner's side.

/// Serves a batch from a peer: each item through the node's router, all at once, answered in
/// order. Called by the gate for [`PATH`] before anything else.
pub async fn serve(node: &Node, request: Request) -> Response {
    if request.method() != Method::POST {
        return ApiError::new(ErrorCode::ValidationError, "a forwarded batch is a POST")
            .with_status(StatusCode::METHOD_NOT_ALLOWED)
            .into_response();
    }
    if !node.serving() {
        return unavailable("this node does not serve the shards at the moment (ownership is moving)");
    }
    let (parts, body) = request.into_parts();
    let refused = || {
        ApiError::new(ErrorCode::Unauthenticated, "a forwarded batch needs a valid Tally-Cluster-Auth").into_response()
    };
    if !looks_like_a_peer(&parts.headers) {
        return refused();
    }
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    if declared.is_none_or(|length| length > BATCH_BODY_MAX) {
        return ApiError::new(ErrorCode::ValidationError, "a forwarded batch declares its length, at most ~1.6 MiB")
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            .into_response();
    }
    let Some(reading) = Reading::start() else {
        return unavailable("too many forwarded batches are being read");
    };
    let body = match tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, BATCH_BODY_MAX)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) | Err(_) => {
            return ApiError::new(ErrorCode::ValidationError, "a forwarded batch was too large, cut short or too slow")
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
                .into_response();
        }
    };
    if !proven(&node.config.secret, &parts.headers, &body) {
        return refused();
    }
    drop(reading);
    let items: Vec<Item> = match ciborium::from_reader(body.as_ref()) {
        Ok(items) => items,
        Err(_) => {
            return ApiError::new(ErrorCode::ValidationError, "a forwarded batch could not be read").into_response();
        }
    };
    if items.len() > ITEMS_MAX {
        return ApiError::new(
            ErrorCode::ValidationError,
            format!("a forwarded batch holds at most {ITEMS_MAX} requests"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .into_response();
    }
    // Each request carries the forwarding node's name again, so that the gate's one-hop rule
    // holds for it: should this node lose its standing while the batch runs, an item is
    // answered 503 (not done) instead of being forwarded a second time to the new owner.
    let peer = parts.headers.get(forward::FORWARDED_BY).cloned();
    let requests: Vec<Option<Request>> = items
        .into_iter()
        .map(|item| {
            let mut request = into_request(item)?;
            if let Some(peer) = &peer {
                request.headers_mut().insert(forward::FORWARDED_BY, peer.clone());
            }
            Some(request)
        })
        .collect();
    if requests.iter().any(Option::is_none) {
        return ApiError::new(ErrorCode::ValidationError, "a forwarded batch holds a request that is not batched")
            .into_response();
    }
    // Each item goes through the whole router, this gate included (it serves the item only
    // while this node may serve), exactly as the request would have had it come here first.
    let Some(router) = node.router.get() else {
        return unavailable("this node is starting");
    };
    // `FuturesOrdered` polls only the items whose saga woke it (`join_all` polls every item
    // on each wake-up below 30 items), and yields the answers in the items' order.
    let responses: Vec<Response> = requests
        .into_iter()
        .flatten()
        .map(|request| {
            let router = router.clone();
            async move {
                match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(infallible) => match infallible {},
                }
            }
        })
        .collect::<futures::stream::FuturesOrdered<_>>()
        .collect()
        .await;
    let mut answers = Vec::with_capacity(responses.len());
    for response in responses {
        let (parts, body) = response.into_parts();
        let answer = match axum::body::to_bytes(body, ANSWER_BODY_MAX).await {
            Ok(body) => Answer {
                status: parts.status.as_u16(),
                headers: to_pairs(&parts.headers),
                body: ByteBuf::from(Vec::from(body)),
            },
            // Done, but its answer cannot be carried: the client hears "outcome unknown" and
            // its retry under the key replays the transfer.
            Err(_) => {
                let (parts, body) = outcome_unknown().into_parts();
                Answer {
                    status: parts.status.as_u16(),
                    headers: to_pairs(&parts.headers),
                    body: ByteBuf::from(Vec::from(
                        axum::body::to_bytes(body, ANSWER_BODY_MAX).await.unwrap_or_default(),
                    )),
                }
            }
        };
        answers.push(answer);
    }
    match encode(&answers) {
        Some(bytes) => ([(header::CONTENT_TYPE, "application/cbor")], bytes).into_response(),
        None => ApiError::new(ErrorCode::Internal, "the batch's answers could not be encoded").into_response(),
    }
}

/// The request an item was on the standby, with its client's address; `None` for anything
/// that is not batched (a peer never sends one).
fn into_request(item: Item) -> Option<Request> {
    if item.method != "POST" || item.path != BATCHED_PATH {
        return None;
    }
    let client: SocketAddr = item.client.parse().ok()?;
    let headers = from_pairs(item.headers)?;
    let mut request = Request::new(Body::from(item.body.into_vec()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = BATCHED_PATH.parse().ok()?;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(ConnectInfo(client));
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_proven_by_the_secret_over_its_whole_body() {
        let secret = "a-cluster-secret-of-some-length";
        let body = b"the batch's bytes";
        let t = forward::unix_now();
        let mut headers = HeaderMap::new();
        headers.insert(forward::AUTH, HeaderValue::from_str(&proof(secret, t, "n2", body)).unwrap());
        headers.insert(forward::FORWARDED_BY, HeaderValue::from_static("n2"));
        assert!(proven(secret, &headers, body));
        assert!(!proven("another-secret-entirely-of-length", &headers, body));
        assert!(!proven(secret, &headers, b"the batch's bytes, changed"));
        let mut other_node = headers.clone();
        other_node.insert(forward::FORWARDED_BY, HeaderValue::from_static("n3"));
        assert!(!proven(secret, &other_node, body));
        let mut stale = HeaderMap::new();
        stale.insert(forward::AUTH, HeaderValue::from_str(&proof(secret, t - 3_600, "n2", body)).unwrap());
        stale.insert(forward::FORWARDED_BY, HeaderValue::from_static("n2"));
        assert!(!proven(secret, &stale, body));
        assert!(!proven(secret, &HeaderMap::new(), body));
    }

    fn pending(url: &str) -> (Pending, oneshot::Receiver<Result<Answer, NotAnswered>>) {
        let (answer, receiver) = oneshot::channel();
        let item = Item {
            client: "0.0.0.0:0".to_owned(),
            method: "POST".to_owned(),
            path: BATCHED_PATH.to_owned(),
            headers: Vec::new(),
            body: ByteBuf::new(),
        };
        (Pending { owner_url: url.to_owned(), item, answer }, receiver)
    }

    #[test]
    fn a_sender_that_ends_abnormally_frees_its_owner_and_answers_what_never_left() {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let (for_a, mut a_answer) = pending("http://a");
        let (for_b, mut b_answer) = pending("http://b");
        {
            let mut locked = locked(&queue);
            locked.pending.extend([for_a, for_b]);
            locked.sending_to = vec!["http://a".to_owned(), "http://b".to_owned()];
        }
        // The sender to a ends without clearing its mark (a panic, its task dropped).
        drop(Sending { queue: Arc::clone(&queue), owner_url: "http://a".to_owned(), cleared: false });
        assert!(matches!(a_answer.try_recv(), Ok(Err(NotAnswered::NotSent))), "never sent: 503");
        assert!(b_answer.try_recv().is_err(), "another owner's request still waits");
        let locked = locked(&queue);
        assert_eq!(locked.sending_to, vec!["http://b".to_owned()], "the next request for a starts a sender");
        assert_eq!(locked.pending.len(), 1);
    }

    #[test]
    fn a_sender_that_found_nothing_to_send_leaves_a_successors_mark_alone() {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let (for_a, mut a_answer) = pending("http://a");
        {
            let mut locked = locked(&queue);
            locked.pending.push(for_a);
            // A new sender to a started after the old one cleared its mark.
            locked.sending_to = vec!["http://a".to_owned()];
        }
        drop(Sending { queue: Arc::clone(&queue), owner_url: "http://a".to_owned(), cleared: true });
        assert!(a_answer.try_recv().is_err(), "the new sender's request is untouched");
        assert_eq!(locked(&queue).sending_to, vec!["http://a".to_owned()]);
    }

    #[test]
    fn only_single_transfers_with_a_small_declared_body_are_batched() {
        let request = |method: Method, uri: &str, length: Option<&str>| {
            let mut request = Request::new(Body::empty());
            *request.method_mut() = method;
            *request.uri_mut() = uri.parse().unwrap();
            if let Some(length) = length {
                request.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_str(length).unwrap());
            }
            request
        };
        assert_eq!(batchable(&request(Method::POST, "/v1/transfers", Some("300"))), Some(300));
        assert_eq!(batchable(&request(Method::POST, "/v1/transfers", Some("65537"))), None);
        assert_eq!(batchable(&request(Method::POST, "/v1/transfers", None)), None);
        assert_eq!(batchable(&request(Method::POST, "/v1/transfers?x=1", Some("300"))), None);
        assert_eq!(batchable(&request(Method::GET, "/v1/transfers", Some("0"))), None);
        assert_eq!(batchable(&request(Method::POST, "/v1/transfers/batch", Some("300"))), None);
    }

    #[test]
    fn an_item_becomes_the_request_it_was_with_its_clients_address() {
        let item = Item {
            client: "203.0.113.9:5000".to_owned(),
            method: "POST".to_owned(),
            path: BATCHED_PATH.to_owned(),
            headers: vec![
                ("idempotency-key".to_owned(), ByteBuf::from(b"k-1".to_vec())),
                ("connection".to_owned(), ByteBuf::from(b"close".to_vec())),
            ],
            body: ByteBuf::from(b"{}".to_vec()),
        };
        let bytes = encode(&vec![item]).unwrap();
        let mut items: Vec<Item> = ciborium::from_reader(bytes.as_slice()).unwrap();
        let request = into_request(items.remove(0)).unwrap();
        assert_eq!(request.uri().path(), BATCHED_PATH);
        assert_eq!(request.headers().get("idempotency-key").unwrap(), "k-1");
        assert!(request.headers().get("connection").is_none(), "hop-by-hop headers stay behind");
        let ConnectInfo(client) = request.extensions().get::<ConnectInfo<SocketAddr>>().unwrap();
        assert_eq!(client.to_string(), "203.0.113.9:5000");
        let other = Item {
            client: "203.0.113.9:5000".to_owned(),
            method: "GET".to_owned(),
            path: "/v1/admin/users".to_owned(),
            headers: Vec::new(),
            body: ByteBuf::new(),
        };
        assert!(into_request(other).is_none(), "only batched requests are run from a batch");
    }
}
