//! The progress line on stderr, once a second, so an operator sees the run is alive and how
//! it is going without waiting for the report.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::driver::{Shared, lock};

/// How often the line is printed.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Prints until the returned handle is aborted.
pub fn start(shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let line = {
                let stats = lock(&shared.stats);
                format!(
                    "[{:>4}s] sent {} ok {} errors {} p50 {:.1} ms p99 {:.1} ms",
                    started.elapsed().as_secs(),
                    stats.sent(),
                    stats.ok(),
                    stats.errors(),
                    stats.latency.value_at_quantile(0.5) as f64 / 1000.0,
                    stats.latency.value_at_quantile(0.99) as f64 / 1000.0,
                )
            };
            eprintln!("{line}");
        }
    })
}
