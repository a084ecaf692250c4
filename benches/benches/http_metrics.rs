//! What recording HTTP metrics costs a request (issue 6: "recording must not slow the hot path
//! measurably"). The same one-route axum router is driven in process with and without
//! `tally_http::metrics::track` as its route layer, with the Prometheus recorder installed, so
//! the difference is exactly the per-request recording: one counter and one histogram sample,
//! labelled by route template and status.
//!
//! Back of the envelope. Recording is two registry look-ups (a hash of the name and two or
//! three labels, a read-locked map), an atomic add and a histogram push: a few hundred
//! nanoseconds. A durable transfer over HTTP costs tens of microseconds of CPU (JSON, auth,
//! the saga's actor round trips, the journal), so the recording should be under 1% of it.
//! The actor and journal gauges are copied from the engine's own counters at scrape time and
//! cost the hot path nothing; the journal's histograms are recorded once per group commit.

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

/// A middleware that does nothing: the cost of the layer itself (boxing, `Next`), apart from
/// what `track` records.
async fn pass(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    next.run(request).await
}

#[derive(Clone, Copy)]
enum Layer {
    None,
    Empty,
    Metrics,
}

fn router(layer: Layer) -> Router {
    let router = Router::new().route("/v1/accounts/{id}", get(|| async { "{}" }));
    match layer {
        Layer::None => router,
        Layer::Empty => router.route_layer(axum::middleware::from_fn(pass)),
        Layer::Metrics => router.route_layer(axum::middleware::from_fn(tally_http::metrics::track)),
    }
}

/// Requests between two upkeeps. `tally serve` drains samples every few seconds and on each
/// scrape; draining every 10,000 requests keeps the sample buffer as small here as there.
const UPKEEP_EVERY: u64 = 10_000;

fn bench(c: &mut Criterion) {
    tally_http::metrics::handle();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|error| {
        eprintln!("runtime: {error}");
        std::process::exit(1)
    });
    let mut group = c.benchmark_group("http_request");
    for (name, layer) in
        [("without_metrics", Layer::None), ("empty_layer", Layer::Empty), ("with_metrics", Layer::Metrics)]
    {
        let app = router(layer);
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter_custom(|iterations| {
                let app = app.clone();
                async move {
                    let started = std::time::Instant::now();
                    for iteration in 0..iterations {
                        let request =
                            Request::get("/v1/accounts/0b1c5a3e-6a43-4c8e-9f7e-2f9a3f1d2c4b").body(Body::empty());
                        if let Ok(request) = request {
                            let _ = app.clone().oneshot(request).await.map(|response| response.status());
                        }
                        // As `tally serve`'s upkeep timer does: drain histogram samples into
                        // buckets, so they do not pile up over millions of iterations.
                        if iteration % UPKEEP_EVERY == 0 {
                            tally_http::metrics::handle().run_upkeep();
                        }
                    }
                    started.elapsed()
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
