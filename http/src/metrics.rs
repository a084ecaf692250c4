//! `GET /metrics`: Prometheus text, through the `metrics` crate and its Prometheus exporter.
//!
//! Three sources, each recorded where it is cheapest:
//! - **HTTP**: a route layer counts every request by route template and status and records
//!   its latency (`tally_http_requests_total`, `tally_http_request_duration_seconds`). Labels
//!   are the route *template* (`/v1/accounts/{id}`), never an id, so their number is bounded by
//!   the routes.
//! - **Journal**: the writer records each batch's flush latency and size
//!   (`persistence/src/journal.rs`), once per group commit.
//! - **Actors, sagas, journal state**: the engine already counts these in atomics for
//!   `/v1/admin/actors`; a scrape copies them into gauges and counters. Nothing is recorded
//!   per message on the actor threads, so the hot path pays nothing for them.
//!
//! The recorder is process-global (the `metrics` facade has one); it is installed once and
//! shared by every `app()` in the process. Histograms are real Prometheus histograms with the
//! buckets below, and the exporter's upkeep (draining histogram samples) runs on a timer.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tally_actors::HealthReport;

use crate::state::AppState;

/// Latency buckets in seconds: 100 µs to 10 s (the request time-out), dense where the
/// targets are (p99 ≤ 10 ms, DESIGN.md §9).
pub(crate) const LATENCY_BUCKETS_SECONDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Journal batch sizes in records, up to the writer's largest batch (8,192).
const BATCH_SIZE_BUCKETS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0];

/// How often the exporter drains histogram samples into buckets when nobody scrapes, so
/// memory stays bounded between scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS_SECONDS)
            .and_then(|builder| {
                builder
                    .set_buckets_for_metric(Matcher::Full("tally_journal_batch_size".to_owned()), &BATCH_SIZE_BUCKETS)
            });
        let recorder = match builder {
            Ok(builder) => builder.build_recorder(),
            // Only an empty bucket list fails, and the lists above are constants.
            Err(error) => {
                tracing::error!(%error, "metrics buckets refused; using summaries");
                PrometheusBuilder::new().build_recorder()
            }
        };
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only Tally's own");
        }
        describe();
        handle
    })
}

/// Help texts, once.
fn describe() {
    metrics::describe_counter!("tally_http_requests_total", "HTTP requests answered, by route template and status");
    metrics::describe_histogram!(
        "tally_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency, by route template"
    );
    metrics::describe_histogram!("tally_journal_flush_seconds", metrics::Unit::Seconds, "Journal group-commit latency");
    metrics::describe_histogram!("tally_journal_batch_size", "Records per journal group commit");
    metrics::describe_gauge!("tally_actors_active", "Resident actors, by kind");
    metrics::describe_counter!("tally_actor_restarts_total", "Actor restarts after a panic or internal error, by kind");
    metrics::describe_counter!("tally_actor_activations_total", "Actors activated from the store, by kind");
    metrics::describe_counter!("tally_actor_passivations_total", "Idle actors passivated, by kind");
    metrics::describe_gauge!("tally_actor_quarantined", "Actors quarantined after repeated failures, by kind");
    metrics::describe_gauge!("tally_actor_mailbox_depth", "Messages waiting in all mailboxes of a kind");
    metrics::describe_gauge!("tally_actor_mailbox_depth_max", "The deepest single mailbox of a kind");
    metrics::describe_counter!("tally_actor_messages_total", "Messages handled, by kind");
    // Microseconds, not seconds: the exporter's counters are integers, and whole seconds (or the
    // milliseconds this once was under a `_seconds` name) would lose or misstate handler time.
    metrics::describe_counter!("tally_actor_handler_microseconds_total", "Time spent in handlers, by kind");
    metrics::describe_gauge!("tally_sagas_in_flight", "Transfer sagas running now");
    metrics::describe_counter!("tally_sagas_total", "Transfer sagas ended, by outcome");
    metrics::describe_gauge!(
        "tally_pending_expiries_scheduled",
        "Pending transfers with a deadline that no decision has ended yet (each ends expired at its deadline)"
    );
    metrics::describe_gauge!("tally_journal_depth", "Records waiting to be committed");
    metrics::describe_gauge!("tally_journal_durable_lag_seconds", "Age of the oldest record not yet durable");
    metrics::describe_counter!("tally_journal_flush_errors_total", "Failed journal commits (each retried)");
    metrics::describe_gauge!("tally_journal_committed_seq", "The last journal sequence number committed");
    metrics::describe_counter!(
        "tally_journal_dependency_waits_total",
        "Times a journal's writer found its next record waiting for another shard's journal to commit first (an account whose records went to two journals)"
    );
    metrics::describe_counter!(
        "tally_runtime_inbox_wakeups_total",
        "Times a runtime thread woke for work other threads queued for it (saga starts, actor steps, their answers)"
    );
    metrics::describe_counter!(
        "tally_runtime_inbox_jobs_total",
        "Jobs other threads queued for a runtime thread; divided by the wake-ups, what one cross-thread wake-up carried"
    );
    metrics::describe_gauge!("tally_cluster_owner", "1 while this cluster node owns the shards, else 0");
    metrics::describe_gauge!("tally_cluster_shards_owned", "Shards whose lease this cluster node holds");
    metrics::describe_counter!("tally_cluster_lease_takes_total", "Times this cluster node took the shards' leases");
    metrics::describe_counter!(
        "tally_cluster_shard_moves_total",
        "Shards this cluster node took from another node (a failover or a hand-off)"
    );
    metrics::describe_counter!(
        "tally_cluster_forwarded_requests_total",
        "Requests this cluster node forwarded to the node that owns the shards"
    );
    metrics::describe_counter!(
        "tally_cluster_forward_failures_total",
        "Forwarded requests the owner did not answer (answered 503 here): a failover in progress"
    );
    metrics::describe_counter!(
        "tally_cluster_fenced_commits_total",
        "Journal writes of this process the lease fence refused (its leases had been taken): a commit, or the check of whether a commit whose answer was lost is in"
    );
    metrics::describe_counter!(
        "tally_webhook_deliveries_total",
        "Webhook delivery attempts by outcome: delivered (2xx), failed (retried), dead (given up)"
    );
    metrics::describe_gauge!("tally_webhook_subscriptions", "Webhook subscriptions, by state (enabled, disabled)");
    metrics::describe_gauge!(
        "tally_webhook_pending_events",
        "Events not yet delivered or dead, summed over the subscriptions of a state (counted up to 10,000 per shard and subscription)"
    );
    metrics::describe_gauge!(
        "tally_webhook_oldest_pending_seconds",
        "Age of the oldest event an enabled subscription has not delivered yet (0: none)"
    );
}

/// Runs the exporter's upkeep every `UPKEEP_INTERVAL` until the process ends.
pub fn spawn_upkeep() {
    let handle = handle();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            interval.tick().await;
            handle.run_upkeep();
        }
    });
}

/// Copies the engine's counters into the recorder (see the module comment).
pub fn record_health(report: &HealthReport) {
    for kind in &report.kinds {
        let name = kind.kind.as_str();
        metrics::gauge!("tally_actors_active", "kind" => name).set(kind.active as f64);
        metrics::counter!("tally_actor_restarts_total", "kind" => name).absolute(kind.restarts);
        metrics::counter!("tally_actor_activations_total", "kind" => name).absolute(kind.activations);
        metrics::counter!("tally_actor_passivations_total", "kind" => name).absolute(kind.passivations);
        metrics::gauge!("tally_actor_quarantined", "kind" => name).set(kind.quarantined as f64);
        metrics::gauge!("tally_actor_mailbox_depth", "kind" => name).set(kind.mailbox_depth as f64);
        metrics::gauge!("tally_actor_mailbox_depth_max", "kind" => name).set(kind.mailbox_depth_max as f64);
        metrics::counter!("tally_actor_messages_total", "kind" => name).absolute(kind.handled);
        metrics::counter!("tally_actor_handler_microseconds_total", "kind" => name)
            .absolute(kind.handler_nanos / 1_000);
    }
    metrics::gauge!("tally_sagas_in_flight").set(report.sagas_in_flight as f64);
    metrics::counter!("tally_sagas_total", "outcome" => "completed").absolute(report.sagas_completed);
    metrics::counter!("tally_sagas_total", "outcome" => "failed").absolute(report.sagas_failed);
    metrics::counter!("tally_sagas_total", "outcome" => "compensated").absolute(report.sagas_compensated);
    metrics::gauge!("tally_pending_expiries_scheduled").set(report.pending_expiries_scheduled as f64);
    metrics::gauge!("tally_journal_depth").set(report.journal_depth as f64);
    metrics::gauge!("tally_journal_durable_lag_seconds").set(report.journal_durable_lag_micros as f64 / 1e6);
    metrics::counter!("tally_journal_flush_errors_total").absolute(report.journal_flush_errors);
    metrics::gauge!("tally_journal_committed_seq").set(report.journal_committed_seq as f64);
    metrics::counter!("tally_journal_dependency_waits_total").absolute(report.journal_dependency_waits);
    metrics::counter!("tally_runtime_inbox_wakeups_total").absolute(report.inbox_wakeups);
    metrics::counter!("tally_runtime_inbox_jobs_total").absolute(report.inbox_jobs);
}

/// How many of the worst actors a scrape asks the engine for (it only needs the per-kind
/// figures; the list itself is for `/v1/admin/actors`).
const SCRAPE_WORST_MAX: usize = 0;

/// `GET /metrics` → Prometheus text exposition format 0.0.4. Unauthenticated, as Prometheus
/// scrapes: it carries counts and latencies, never an id or an amount (bind the listener, or
/// the proxy in front of it, so only the monitoring network reaches it).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String))
)]
pub async fn scrape(State(state): State<AppState>) -> Response {
    if let Some(report) = state.health(SCRAPE_WORST_MAX) {
        record_health(&report);
    }
    // The webhook gauges are store reads (a bounded count per subscription), taken per scrape
    // rather than kept up to date on the delivery path.
    if let Some(figures) = crate::webhooks::figures(&state).await {
        crate::webhooks::record_figures(&figures);
    }
    let handle = handle();
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

/// Status codes a route answers with, as label values, in the order of `STATUS_INDEX`.
pub(crate) const STATUS_LABELS: [&str; 20] = [
    "200", "201", "202", "204", "400", "401", "403", "404", "405", "409", "413", "415", "422", "429", "500", "503",
    "2xx", "3xx", "4xx", "5xx",
];

/// The slot of `status` in `STATUS_LABELS`: the contract's statuses exactly, others grouped.
fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        201 => 1,
        202 => 2,
        204 => 3,
        400 => 4,
        401 => 5,
        403 => 6,
        404 => 7,
        405 => 8,
        409 => 9,
        413 => 10,
        415 => 11,
        422 => 12,
        429 => 13,
        500 => 14,
        503 => 15,
        _ if status < 300 => 16,
        _ if status < 400 => 17,
        _ if status < 500 => 18,
        _ => 19,
    }
}

/// One route's metric handles, registered on its first request: after that a request pays one
/// map look-up by route template and two atomic updates, not a registry look-up with label
/// hashing and allocation per metric (which measured ~1 µs a request; see
/// `benches/benches/http_metrics.rs`).
struct RouteMetrics {
    requests: [metrics::Counter; STATUS_LABELS.len()],
    duration: metrics::Histogram,
}

impl RouteMetrics {
    fn register(route: &str) -> RouteMetrics {
        RouteMetrics {
            requests: STATUS_LABELS.map(|status| {
                metrics::counter!("tally_http_requests_total", "route" => route.to_owned(), "status" => status)
            }),
            duration: metrics::histogram!("tally_http_request_duration_seconds", "route" => route.to_owned()),
        }
    }
}

/// Handles by route template. Bounded by the router's routes plus "unmatched".
fn routes() -> &'static dashmap::DashMap<String, std::sync::Arc<RouteMetrics>> {
    static ROUTES: OnceLock<dashmap::DashMap<String, std::sync::Arc<RouteMetrics>>> = OnceLock::new();
    ROUTES.get_or_init(dashmap::DashMap::new)
}

/// Counts and times one request: started before the route's other policies and its handler
/// (`lib.rs`, `route_policies`), finished with the answer.
pub struct Tracking {
    handles: std::sync::Arc<RouteMetrics>,
    started: Instant,
}

/// The metrics alone as a route layer (what the `http_metrics` bench measures); the server runs
/// them inside `lib.rs`'s `route_policies`.
pub async fn track(request: Request, next: axum::middleware::Next) -> Response {
    let tracking = Tracking::start(&request);
    let response = next.run(request).await;
    tracking.finish(&response);
    response
}

impl Tracking {
    pub fn start(request: &Request) -> Tracking {
        let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
        let handles = match routes().get(route) {
            Some(handles) => std::sync::Arc::clone(handles.value()),
            None => {
                let handles = std::sync::Arc::new(RouteMetrics::register(route));
                routes().insert(route.to_owned(), std::sync::Arc::clone(&handles));
                handles
            }
        };
        Tracking { handles, started: Instant::now() }
    }

    pub fn finish(self, response: &Response) {
        let elapsed = self.started.elapsed();
        let status = status_index(response.status().as_u16());
        self.handles.duration.record(elapsed.as_secs_f64());
        self.handles.requests[status].increment(1);
        // The operators' page reads these back (the exporter's histograms cannot be).
        crate::request_stats::record(status, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_exact_for_the_contract_statuses_and_grouped_otherwise() {
        let label = |status| STATUS_LABELS[status_index(status)];
        for status in [200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503] {
            assert_eq!(label(status), status.to_string());
        }
        assert_eq!(label(418), "4xx");
        assert_eq!(label(302), "3xx");
        assert_eq!(label(206), "2xx");
        assert_eq!(label(504), "5xx");
    }
}
