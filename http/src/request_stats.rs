//! Request counts by status and latency bucket, in plain atomics the operators' page can read
//! back. The Prometheus exporter's histograms cannot be read from inside the process, so the
//! route layer (`metrics::Tracking`) also adds one to one cell here per request: the cell of the
//! answer's status and the latency's bucket. Totals by status and by bucket are sums over that
//! table, made only when `/v1/admin/actors` is asked. The counters only grow (like Prometheus
//! counters); the page computes rates and percentiles from the difference between two polls.
//!
//! The table is process-global, like the metrics recorder: every `app()` in the process adds
//! to it (in tests, several servers share it; each test reads differences).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::metrics::STATUS_LABELS;

/// Upper bounds of the latency buckets in microseconds: the same bounds as the Prometheus
/// histogram `tally_http_request_duration_seconds` (a test checks), so the page and Grafana
/// read the same distribution. One more bucket holds everything slower.
pub const LATENCY_BOUNDS_MICROS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 7_500, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// The bounded buckets plus the overflow bucket.
const BUCKETS: usize = LATENCY_BOUNDS_MICROS.len() + 1;

/// One counter per (status label, latency bucket): 20 × 17 cells, 2.7 KiB.
static COUNTS: [[AtomicU64; BUCKETS]; STATUS_LABELS.len()] =
    [const { [const { AtomicU64::new(0) }; BUCKETS] }; STATUS_LABELS.len()];

/// Counts one answered request. `status_slot` is its index in `STATUS_LABELS`.
pub fn record(status_slot: usize, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let bucket = LATENCY_BOUNDS_MICROS.partition_point(|bound| *bound < micros);
    if let Some(cell) = COUNTS.get(status_slot).and_then(|row| row.get(bucket)) {
        cell.fetch_add(1, Ordering::Relaxed);
    }
}

/// The counters as the `http` section of `/v1/admin/actors`.
pub fn report() -> Value {
    let mut by_status = serde_json::Map::new();
    let mut buckets = [0_u64; BUCKETS];
    let (mut total, mut client_errors, mut server_errors) = (0_u64, 0_u64, 0_u64);
    for (label, row) in STATUS_LABELS.iter().zip(COUNTS.iter()) {
        let mut count = 0_u64;
        for (sum, cell) in buckets.iter_mut().zip(row.iter()) {
            let cell = cell.load(Ordering::Relaxed);
            *sum += cell;
            count += cell;
        }
        if count == 0 {
            continue;
        }
        total += count;
        match label.as_bytes().first() {
            Some(b'4') => client_errors += count,
            Some(b'5') => server_errors += count,
            _ => {}
        }
        by_status.insert((*label).to_owned(), json!(count));
    }
    let latency: Vec<Value> = buckets
        .iter()
        .enumerate()
        .map(|(index, count)| {
            // `le_ms: null` is the overflow bucket (slower than the last bound).
            let bound = LATENCY_BOUNDS_MICROS.get(index).map(|micros| *micros as f64 / 1e3);
            json!({"le_ms": bound, "count": count})
        })
        .collect();
    json!({
        "requests_total": total,
        "client_errors_total": client_errors,
        "server_errors_total": server_errors,
        "by_status": by_status,
        "latency_buckets": latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LATENCY_BUCKETS_SECONDS;

    #[test]
    fn latency_bounds_are_the_prometheus_histogram_bounds() {
        let seconds: Vec<u64> = LATENCY_BUCKETS_SECONDS.iter().map(|s| (s * 1e6).round() as u64).collect();
        assert_eq!(seconds, LATENCY_BOUNDS_MICROS.to_vec());
    }

    #[test]
    fn a_request_lands_in_the_bucket_of_its_status_and_latency_bound_inclusive() {
        // "2xx" (a success outside the contract's statuses): no other unit test answers one.
        let slot = STATUS_LABELS.iter().position(|label| *label == "2xx").unwrap();
        let before: Vec<u64> = COUNTS[slot].iter().map(|cell| cell.load(Ordering::Relaxed)).collect();
        record(slot, Duration::from_micros(100));
        record(slot, Duration::from_micros(101));
        record(slot, Duration::from_secs(60));
        let after: Vec<u64> = COUNTS[slot].iter().map(|cell| cell.load(Ordering::Relaxed)).collect();
        let added: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let mut expected = vec![0; BUCKETS];
        expected[0] = 1; // ≤ 100 µs
        expected[1] = 1; // ≤ 250 µs
        expected[BUCKETS - 1] = 1; // slower than 10 s
        assert_eq!(added, expected);
        let report = report();
        assert!(report["by_status"]["2xx"].as_u64().unwrap() >= 3);
        assert_eq!(report["latency_buckets"].as_array().unwrap().len(), BUCKETS);
        assert!(report["latency_buckets"][BUCKETS - 1]["le_ms"].is_null());
    }

    #[test]
    fn an_out_of_range_status_slot_is_ignored_rather_than_panicking() {
        record(STATUS_LABELS.len(), Duration::from_micros(1));
    }
}
