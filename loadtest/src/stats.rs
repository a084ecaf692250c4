//! What the run measured: HDR latency histograms (overall and per second of intended start),
//! counts of acknowledgements by status and of errors by problem code.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track, in microseconds: an hour. The client gives up on one
/// exchange after `REQUEST_TIMEOUT` (30 s), but an open-loop latency runs from the intended
/// start and includes the wait for a free connection, which has no bound. Anything above is
/// recorded as this and counted in `Stats::clipped`.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Significant decimal digits kept: 3 gives 0.1 % resolution at every magnitude, HDR's usual.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// One finished request, as the driver saw it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Intended start, measured from the beginning of the measured part.
    pub intended: Duration,
    /// From the intended start to the answer (open loop) or from sending (closed loop).
    pub latency: Duration,
    /// `"201"`, `"202"`, `"200"` for successes, else the problem code (or `HTTP_<status>`,
    /// `TRANSPORT` when no answer came).
    pub outcome: Outcome,
    /// Transfers the server acknowledged in this answer: 1 for a single transfer, the
    /// acknowledged items of a batch, 0 for a read or an error.
    pub transfers: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(u16),
    Error(String),
}

#[derive(Debug)]
pub struct Second {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub transfers: u64,
    pub latency: Histogram<u64>,
}

#[derive(Debug)]
pub struct Stats {
    pub latency: Histogram<u64>,
    pub ok_by_status: BTreeMap<String, u64>,
    pub errors_by_code: BTreeMap<String, u64>,
    pub seconds: Vec<Second>,
    /// Transfers acknowledged by measured requests.
    pub transfers: u64,
    /// Latencies above `LATENCY_MAX_US`, recorded as that.
    pub clipped: u64,
}

impl Stats {
    pub fn new() -> Result<Self, crate::error::LoadError> {
        let latency = Histogram::new_with_bounds(1, LATENCY_MAX_US, SIGNIFICANT_DIGITS)
            .map_err(|e| crate::error::LoadError::Config(format!("latency histogram: {e}")))?;
        Ok(Self {
            latency,
            ok_by_status: BTreeMap::new(),
            errors_by_code: BTreeMap::new(),
            seconds: Vec::new(),
            transfers: 0,
            clipped: 0,
        })
    }
}

impl Stats {
    pub fn record(&mut self, sample: &Sample) {
        let us = u64::try_from(sample.latency.as_micros()).unwrap_or(u64::MAX);
        if us > LATENCY_MAX_US {
            self.clipped += 1;
        }
        let us = us.clamp(1, LATENCY_MAX_US);
        self.latency.saturating_record(us);
        let index = usize::try_from(sample.intended.as_secs()).unwrap_or(usize::MAX);
        if index < usize::MAX && self.seconds.len() <= index {
            let mut empty = self.latency.clone();
            empty.reset();
            self.seconds.resize_with(index + 1, || Second {
                sent: 0,
                ok: 0,
                errors: 0,
                transfers: 0,
                latency: empty.clone(),
            });
        }
        let second = self.seconds.get_mut(index);
        self.transfers += sample.transfers;
        match &sample.outcome {
            Outcome::Ok(status) => *self.ok_by_status.entry(status.to_string()).or_default() += 1,
            Outcome::Error(code) => *self.errors_by_code.entry(code.clone()).or_default() += 1,
        }
        if let Some(second) = second {
            second.sent += 1;
            second.transfers += sample.transfers;
            match sample.outcome {
                Outcome::Ok(_) => second.ok += 1,
                Outcome::Error(_) => second.errors += 1,
            }
            second.latency.saturating_record(us);
        }
    }

    /// A batch item the server refused inside a `200` batch answer.
    pub fn record_item_error(&mut self, code: &str) {
        *self.errors_by_code.entry(format!("ITEM_{code}")).or_default() += 1;
    }

    pub fn sent(&self) -> u64 {
        self.latency.len()
    }

    pub fn ok(&self) -> u64 {
        self.ok_by_status.values().sum()
    }

    pub fn errors(&self) -> u64 {
        self.errors_by_code.values().sum()
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p99_9_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// One bar of the latency histogram: requests whose latency fell in `(from_us, to_us]`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Bucket {
    pub from_us: u64,
    pub to_us: u64,
    pub count: u64,
}

/// Ratio between consecutive bucket bounds: 20 buckets per decade of latency, fine enough to
/// show a bimodal distribution and few enough to draw.
const BUCKET_RATIO: f64 = 1.122_018_454; // 10^(1/20)

/// The histogram in logarithmic buckets, empty buckets at either end dropped.
pub fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Bucket> = Vec::new();
    let mut from = 0;
    for step in h.iter_log(1, BUCKET_RATIO) {
        let to = step.value_iterated_to();
        out.push(Bucket { from_us: from, to_us: to, count: step.count_since_last_iteration() });
        from = to;
    }
    let first = out.iter().position(|b| b.count > 0).unwrap_or(0);
    let last = out.iter().rposition(|b| b.count > 0).map_or(0, |i| i + 1);
    out.drain(last..);
    out.drain(..first);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn samples_land_in_their_intended_second_and_counts_by_outcome() {
        let mut stats = Stats::new().unwrap();
        let at = |s: u64, ms: u64, outcome: Outcome| Sample {
            intended: Duration::from_millis(s * 1000 + 10),
            latency: Duration::from_millis(ms),
            transfers: u64::from(outcome == Outcome::Ok(201)),
            outcome,
        };
        stats.record(&at(0, 10, Outcome::Ok(201)));
        stats.record(&at(0, 20, Outcome::Ok(201)));
        stats.record(&at(2, 30, Outcome::Error("OVERLOADED".into())));
        assert_eq!(stats.sent(), 3);
        assert_eq!(stats.ok(), 2);
        assert_eq!(stats.errors_by_code.get("OVERLOADED"), Some(&1));
        assert_eq!(stats.seconds.len(), 3);
        assert_eq!(stats.seconds[0].sent, 2);
        assert_eq!(stats.seconds[1].sent, 0);
        assert_eq!(stats.seconds[2].errors, 1);
        assert_eq!(stats.transfers, 2);
        assert_eq!(stats.seconds[0].transfers, 2);
        let p = Percentiles::of(&stats.latency);
        assert!(p.max_us >= 29_900 && p.max_us <= 30_100, "{p:?}");
    }

    #[test]
    fn buckets_count_every_sample_once_and_cover_its_latency() {
        let mut h = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, SIGNIFICANT_DIGITS).unwrap();
        for us in [100, 100, 5_000, 5_100, 2_000_000] {
            h.record(us).unwrap();
        }
        let b = buckets(&h);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 5);
        assert!(b.first().unwrap().count == 2 && b.first().unwrap().to_us >= 100, "{b:?}");
        assert!(b.last().unwrap().count == 1 && b.last().unwrap().to_us >= 2_000_000, "{b:?}");
        assert!(b.windows(2).all(|w| w[0].to_us == w[1].from_us), "contiguous: {b:?}");
        assert!(buckets(&Histogram::<u64>::new(3).unwrap()).is_empty());
    }
}
