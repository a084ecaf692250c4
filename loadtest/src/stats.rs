//! What the run measured: HDR latency histograms (overall and per second of intended start),
//! counts of acknowledgements by status and of errors by problem code.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track, in microseconds: the client gives up on a request
/// after `REQUEST_TIMEOUT` (30 s), so a minute covers every recorded value with room left.
pub const LATENCY_MAX_US: u64 = 60_000_000;
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
    pub latency: Histogram<u64>,
}

#[derive(Debug)]
pub struct Stats {
    pub latency: Histogram<u64>,
    pub ok_by_status: BTreeMap<String, u64>,
    pub errors_by_code: BTreeMap<String, u64>,
    pub seconds: Vec<Second>,
}

impl Stats {
    pub fn new() -> Result<Self, crate::error::LoadError> {
        let latency = Histogram::new_with_bounds(1, LATENCY_MAX_US, SIGNIFICANT_DIGITS)
            .map_err(|e| crate::error::LoadError::Config(format!("latency histogram: {e}")))?;
        Ok(Self { latency, ok_by_status: BTreeMap::new(), errors_by_code: BTreeMap::new(), seconds: Vec::new() })
    }
}

impl Stats {
    pub fn record(&mut self, sample: &Sample) {
        let us = u64::try_from(sample.latency.as_micros()).unwrap_or(LATENCY_MAX_US).clamp(1, LATENCY_MAX_US);
        self.latency.saturating_record(us);
        let index = usize::try_from(sample.intended.as_secs()).unwrap_or(usize::MAX);
        if index < usize::MAX && self.seconds.len() <= index {
            let mut empty = self.latency.clone();
            empty.reset();
            self.seconds.resize_with(index + 1, || Second { sent: 0, ok: 0, errors: 0, latency: empty.clone() });
        }
        let second = self.seconds.get_mut(index);
        match &sample.outcome {
            Outcome::Ok(status) => *self.ok_by_status.entry(status.to_string()).or_default() += 1,
            Outcome::Error(code) => *self.errors_by_code.entry(code.clone()).or_default() += 1,
        }
        if let Some(second) = second {
            second.sent += 1;
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
        let p = Percentiles::of(&stats.latency);
        assert!(p.max_us >= 29_900 && p.max_us <= 30_100, "{p:?}");
    }
}
