//! The outermost layer of a cluster node's routes: the owner serves a request, a standby
//! forwards it (`forward.rs`, single transfers in batches: `batch.rs`), and a batch from a
//! peer is taken apart here.
//!
//! A hand-written `tower` layer, placed with the other outer layers in `app`'s one
//! `Router::layer` call (lib.rs): as a `from_fn` layer added by its own `Router::layer` call it
//! boxed every route once more and cloned the route's service into a boxed future on every
//! request of every node (`scripts/cluster bench`: docs/cluster.md, "Measured").

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tally_engine::ErrorCode;
use tower::{Layer, Service, ServiceExt};

use super::{Node, batch, forward, thread_client, unavailable};
use crate::problem::ApiError;

/// The gate over every route of a cluster node (`AppState::cluster`).
#[derive(Clone)]
pub struct GateLayer {
    node: Arc<Node>,
}

impl GateLayer {
    pub fn new(node: Arc<Node>) -> GateLayer {
        GateLayer { node }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate { inner, node: Arc::clone(&self.node) }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    node: Arc<Node>,
}

impl<S> Service<Request> for Gate<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    /// Always ready: the layers inside (the concurrency bound among them) are made ready only
    /// for a request this node serves, so a forwarded request holds none of their permits.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let node = Arc::clone(&self.node);
        Box::pin(async move { Ok(gate(node, request, inner).await) })
    }
}

/// The layers inside the gate, made ready and called.
async fn serve_here<S>(inner: S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    match inner.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Paths a node answers itself, whichever node owns the shards: its own liveness and metrics.
fn served_locally(path: &str) -> bool {
    matches!(path, "/health/live" | "/metrics")
}

/// Serve (the owner), or forward to the owner (a standby). A request a peer forwarded carries
/// its client's address, which then replaces the peer's for rate limits and sessions.
async fn gate<S>(node: Arc<Node>, mut request: Request, inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let path = request.uri().path().to_owned();
    if path == batch::PATH {
        return batch::serve(&node, request).await;
    }
    let vouched = forward::vouched_client(
        &node.config.secret,
        request.headers(),
        request.method().as_str(),
        &path_and_query(&request),
    );
    if let Some(client) = vouched {
        request.extensions_mut().insert(ConnectInfo::<SocketAddr>(client));
    }
    if served_locally(&path) {
        return serve_here(inner, request).await;
    }
    if node.serving() {
        let reads = matches!(*request.method(), Method::GET | Method::HEAD);
        let response = serve_here(inner, request).await;
        // A read that began before a pause (a stopped process, a stalled host) may have been
        // answered from an engine whose shards another node now owns: not sent. A write's
        // answer is sent: its commit passed the fence, so it happened under this node's lease.
        if reads && !node.serving() {
            return unavailable("this node's shard leases are being renewed");
        }
        return response;
    }
    if node.owner.load(Ordering::Acquire) {
        return unavailable("this node's shard leases are being renewed");
    }
    if request.headers().contains_key(forward::FORWARDED_BY) {
        // A peer thought this node the owner (or the request claims to come from one): no
        // second hop, the client retries.
        return unavailable("this node does not own the shards (ownership is moving)");
    }
    let Some((_, url)) = node.owner_seen() else {
        return unavailable("no node owns the shards at the moment (failover in progress)");
    };
    metrics::counter!("tally_cluster_forwarded_requests_total").increment(1);
    if let Some(length) = batch::batchable(&request) {
        return batch::forward(&node, request, length).await;
    }
    let Some(client) = thread_client() else {
        return unavailable("this node cannot forward at the moment");
    };
    match forward::to_owner(&client, &url, node.id(), &node.config.secret, request).await {
        Ok(response) => response,
        Err(forward::NotAnswered::NotSent) => unavailable("the node that owns the shards could not be reached"),
        // Sent, and then the owner went quiet or away: it may have done it. Not a 503, which
        // says "not done"; the client's retry under its `Idempotency-Key` finds out.
        Err(forward::NotAnswered::Unknown) => ApiError::new(
            ErrorCode::Internal,
            "the node that owns the shards did not answer; the outcome is unknown: retry under the same Idempotency-Key",
        )
        .into_response(),
    }
}

fn path_and_query(request: &Request) -> String {
    request.uri().path_and_query().map_or("/", |path| path.as_str()).to_owned()
}
