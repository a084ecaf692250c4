//! The JSON report: the configuration, what was sent and acknowledged, errors by code,
//! throughput and latency percentiles overall and per second, and the verification.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::Config;
use crate::stats::{Bucket, Percentiles, Stats, buckets};
use crate::verify::Verification;

#[derive(Debug, Clone, Serialize)]
pub struct SecondReport {
    pub second: usize,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub transfers: u64,
    pub latency: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: Config,
    pub run_id: String,
    /// Seconds from the first measured intended start to the last answer.
    pub duration_seconds: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub ok_by_status: BTreeMap<String, u64>,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Successful requests per second over the measured duration.
    pub throughput_per_second: f64,
    /// Transfers acknowledged by measured requests (a batch counts its acknowledged items).
    pub transfers_ok: u64,
    /// Acknowledged transfers per second over the measured duration: the figure to compare
    /// between single and batched workloads.
    pub transfers_per_second: f64,
    /// Latency in microseconds, from each request's intended start (open loop).
    pub latency: Percentiles,
    /// Requests whose latency exceeded the histograms' bound (`stats::LATENCY_MAX_US`, an hour)
    /// and was recorded as that bound: the percentiles understate them.
    pub latency_clipped: u64,
    /// The latency distribution in logarithmic buckets (for the HTML report's histogram).
    pub latency_histogram: Vec<Bucket>,
    pub per_second: Vec<SecondReport>,
    pub verification: Verification,
    /// CPU time of the processes named by `--cpu` over the measured window, and per
    /// acknowledged transfer.
    pub cpu: Vec<crate::cpu::Usage>,
}

impl Report {
    pub fn new(
        config: &Config,
        run_id: String,
        duration_seconds: f64,
        stats: &Stats,
        verification: Verification,
        cpu: Vec<crate::cpu::Usage>,
    ) -> Self {
        let per_second = stats
            .seconds
            .iter()
            .enumerate()
            .map(|(second, s)| SecondReport {
                second,
                sent: s.sent,
                ok: s.ok,
                errors: s.errors,
                transfers: s.transfers,
                latency: (s.sent > 0).then(|| Percentiles::of(&s.latency)),
            })
            .collect();
        let per = |count: u64| if duration_seconds > 0.0 { count as f64 / duration_seconds } else { 0.0 };
        Self {
            config: config.clone(),
            run_id,
            duration_seconds,
            sent: stats.sent(),
            ok: stats.ok(),
            errors: stats.errors(),
            ok_by_status: stats.ok_by_status.clone(),
            errors_by_code: stats.errors_by_code.clone(),
            throughput_per_second: per(stats.ok()),
            transfers_ok: stats.transfers,
            transfers_per_second: per(stats.transfers),
            latency: Percentiles::of(&stats.latency),
            latency_clipped: stats.clipped,
            latency_histogram: buckets(&stats.latency),
            per_second,
            verification,
            cpu,
        }
    }
}
