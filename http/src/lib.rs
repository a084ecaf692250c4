//! Tally's HTTP API (axum). `app(state)` builds the router so tests can drive it in process
//! with `tower::ServiceExt::oneshot`; `tally serve` runs the same router on a socket.
//!
//! Architecture invariant: only this crate knows JSON and HTTP. Engine errors become
//! `application/problem+json` in one place (`problem.rs`); bad input never reaches a handler
//! (`json.rs`, `input.rs`).
//!
//! Following a transfer: `transfers::create` takes a `Caller` (`auth/caller.rs`: the bearer
//! token verified by `auth/tokens.rs`, from its cache when it can), the body through
//! `ApiJson`, resolves it into an engine `TransferRequest` (`plan`: ownership, currency,
//! amount), and hands it to `run_transfer`, the one call into the engine's saga. The answer
//! is rendered by `views.rs`: money as strings at the currency's scale, RFC 3339 times.
//! Admin routes (`admin.rs`) name their permission in their signature (`Authorized<P>`).
//! Identity (`auth/`) keeps users, signing keys and refresh tokens in the `UserStore`, in the
//! ledger's database.

pub mod accounts;
pub mod accounts_summary;
pub mod admin;
pub mod admin_page;
pub mod aml;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod beneficiaries;
pub mod cluster;
pub mod crypto;
pub mod crypto_history;
pub mod digest;
pub mod events;
pub mod health;
pub mod iban;
pub mod input;
pub mod json;
pub mod ledger;
pub mod limits;
pub mod listings;
pub mod logging;
pub mod mail;
pub mod metadata;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod ops_page;
pub mod pagination;
pub mod point_in_time;
pub mod pricing;
pub mod problem;
pub mod query;
pub mod request_scope;
pub mod request_stats;
pub mod routes;
pub mod server;
pub mod state;
pub mod statements;
pub mod transfers;
pub mod views;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
pub use state::AppState;

/// Largest request body. A batch of 8,190 transfers at ~400 bytes each is ~3.3 MB; nothing
/// else comes close. Larger bodies get `413` before they are read.
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Requests served at once. Beyond it requests wait in the listener's backlog: two cores
/// gain nothing from more concurrency, and memory stays bounded.
pub const CONCURRENT_REQUESTS_MAX: usize = 4_096;

/// A request that takes longer than this is answered without waiting for its end. A read gets
/// `503` (nothing changed; retry). A write gets `500` "outcome unknown": a saga goes on to its
/// end after its caller stops waiting (`RunToEnd`), so the write may yet be done, and a `503`
/// would tell a client without an idempotency key that resending is harmless. The default;
/// `TALLY_REQUEST_TIMEOUT_SECS` changes it (`AppState::set_request_timeout`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The router of the whole API. On a cluster node, `state` must already name the node
/// (`AppState::set_cluster`): the cluster's gate is placed here, and a router built before it
/// would serve every request itself instead of forwarding it to the owner.
pub fn app(state: AppState) -> Router {
    // Installs the process's metrics recorder before the first request is counted.
    metrics::handle();
    Router::new()
        .merge(routes::customer())
        .merge(routes::admin())
        .merge(routes::ops())
        .merge(routes::webhooks())
        // A route layer, so each request's route template (`MatchedPath`) is known; after every
        // route, so every route is counted (`http_metrics.rs` checks each operation of the
        // OpenAPI document). The identity routes mark their answers `Audited`, so the audit
        // part of the layer adds no second entry for them.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), route_policies))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        // One `Router::layer` call for the outer layers: each call wraps every route in a
        // boxed service whose future is boxed again on every request (`scripts/callgrind`:
        // 4,600 instructions less per keyed transfer than a call per layer). Outermost first:
        // on a cluster node the gate (serve or forward: `cluster/gate.rs`), then the request's
        // id and time limit, the concurrency bound, the body limit.
        .layer(
            tower::ServiceBuilder::new()
                .option_layer(state.cluster().map(|node| cluster::GateLayer::new(Arc::clone(node))))
                .layer(request_scope::RequestScopeLayer::new(state.clone()))
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(CONCURRENT_REQUESTS_MAX))
                .layer(DefaultBodyLimit::max(BODY_BYTES_MAX)),
        )
        .with_state(state)
}

/// The router's fallbacks answer outside the route layer (`route_policies`), so they count
/// their answers themselves: a `404` under the route `unmatched`, a `405` under the template of
/// the route whose method was wrong (the router has matched the path, so `MatchedPath` is set).
async fn no_route(request: Request) -> Response {
    counted(&request, problem::not_found())
}

async fn wrong_method(request: Request) -> Response {
    counted(&request, problem::method_not_allowed())
}

fn counted(request: &Request, answer: problem::ApiError) -> Response {
    use axum::response::IntoResponse;
    let tracking = metrics::Tracking::start(request);
    let response = answer.into_response();
    tracking.finish(&response);
    response
}

/// The per-route policies, in one layer because each `from_fn` layer clones the route's boxed
/// service and boxes a future on every request (three layers were ~2 % of the server's samples
/// under load): metrics around everything, then the verified-email gate of money routes, then
/// the audit of admin changes around the handler.
async fn route_policies(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let tracking = metrics::Tracking::start(&request);
    let response = match auth::verified_email::admit(&state, request).await {
        Ok(request) => audit::after_admin_change(axum::extract::State(state), request, next).await,
        Err(refusal) => refusal,
    };
    tracking.finish(&response);
    response
}
