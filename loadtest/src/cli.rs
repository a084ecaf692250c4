//! Command-line configuration. Every knob has a default that makes a short, gentle run, so
//! `tally-loadtest --admin-email E --admin-password P` is already meaningful.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// The most transfers one batch request may carry (API.md: `POST /v1/transfers/batch` takes
/// at most 8,190 items).
pub const BATCH_SIZE_MAX: usize = 8190;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Source and destination uniform over the accounts.
    Uniform,
    /// Source and destination drawn from a Zipf distribution (a few accounts are busy).
    Zipf,
    /// Account 0 is the source or the destination of every transfer (worst-case contention).
    Hot,
    /// `--batch-size` uniform transfers per `POST /v1/transfers/batch`.
    Batch,
    /// Half reads (`GET /v1/accounts/{id}`), half uniform transfers.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Fixed arrival rate: request i is intended at t0 + i/rate whatever the server does.
    Open,
    /// Fixed concurrency: C workers, each sending its next request when the last one answers.
    Closed,
}

/// How load users authenticate their transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// `Authorization: Bearer` with the user's access token (a person's session).
    Bearer,
    /// `X-API-Key` with a key each load user makes in set-up (a machine client).
    ApiKey,
}

#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "tally-loadtest", about = "HTTP load generator for Tally (black box)")]
pub struct Config {
    /// Where Tally listens. Repeat it to drive every node of a cluster: the load's requests
    /// go round-robin over the URLs (open loop: request i to URL i mod n; closed loop: worker
    /// w to URL w mod n), set-up goes to the first, and a request refused by a node that is
    /// down counts as a `TRANSPORT` error. A `--retry-fraction` replay goes to the next URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    #[serde(serialize_with = "one_or_many")]
    pub base_url: Vec<String>,
    /// An admin with `transfers:adjust` and `accounts:read` (funding and verification).
    #[arg(long, env = "TALLY_ADMIN_EMAIL")]
    pub admin_email: String,
    #[arg(long, env = "TALLY_ADMIN_PASSWORD", hide_env_values = true)]
    #[serde(skip)]
    pub admin_password: String,
    /// How many accounts the load spreads over.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..))]
    pub accounts: u32,
    #[arg(long, value_enum, default_value_t = Workload::Uniform)]
    pub workload: Workload,
    /// Zipf exponent s: key k is chosen with weight 1/k^s (1.0 is the classic skew).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_exponent: f64,
    /// Transfers per batch request (`--workload batch`).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=BATCH_SIZE_MAX as i64))]
    pub batch_size: u32,
    #[arg(long, value_enum, default_value_t = Mode::Open)]
    pub mode: Mode,
    /// Open loop: requests per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Closed loop: concurrent workers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    /// Open loop: at most this many requests in flight (connections). A request that finds
    /// them all busy waits, and its wait counts in its latency.
    #[arg(long, default_value_t = 256)]
    pub connections: u32,
    /// Measured time, e.g. `30s`, `2m`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "as_seconds")]
    pub duration: Duration,
    /// Time before the measured part whose requests are sent but not counted.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    #[serde(serialize_with = "as_seconds")]
    pub warmup: Duration,
    /// Share of transfers sent a second time with the same `Idempotency-Key` (0 to 1); the
    /// replay must answer the same transfer.
    #[arg(long, default_value_t = 0.0)]
    pub retry_fraction: f64,
    /// Currency of the test's accounts.
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// Amount of each transfer (a decimal string, in the currency's scale).
    #[arg(long, default_value = "0.01")]
    pub amount: String,
    /// Admin credit given to each account before the run.
    #[arg(long, default_value = "1000000.00")]
    pub funding: String,
    /// Seed of the workload's random choices: the same seed sends the same sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the HTML report (charts, self-contained, opens offline) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// How load users authenticate their transfers.
    #[arg(long, value_enum, default_value_t = Auth::Bearer)]
    pub auth: Auth,
    /// Report the CPU time another process used over the measured window, and per transfer:
    /// `NAME=PID` (one process) or `NAME=tree:PID` (it and its descendants, e.g. a Postgres
    /// postmaster and its backends). Repeatable. Linux only (`/proc`).
    #[arg(long = "cpu", value_parser = crate::cpu::Watch::parse)]
    pub cpu: Vec<crate::cpu::Watch>,
    /// Set up (users, API keys, accounts, funding), write the fixture here as JSON, and stop:
    /// for driving the same accounts with another client (`scripts/bench`'s wrk scenario).
    #[arg(long)]
    pub setup_only: Option<PathBuf>,
    /// A shell command run when the measured window starts (after the warm-up), e.g. to reset
    /// a database's statement statistics so they cover the window only. The window's CPU is
    /// sampled before it runs; the load goes on while it does.
    #[arg(long)]
    pub at_window_start: Option<String>,
    /// A shell command run when the last measured request has answered, before verification.
    /// The window (its duration and CPU) ends before it runs.
    #[arg(long)]
    pub at_window_end: Option<String>,
}

impl Config {
    /// Checks the bounds clap cannot express.
    pub fn validate(&self) -> Result<(), crate::error::LoadError> {
        let bad = |m: &str| Err(crate::error::LoadError::Config(m.to_owned()));
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return bad("--rate must be a positive number");
        }
        if !(self.zipf_exponent.is_finite() && self.zipf_exponent > 0.0) {
            return bad("--zipf-exponent must be positive");
        }
        if !(0.0..=1.0).contains(&self.retry_fraction) {
            return bad("--retry-fraction must be between 0 and 1");
        }
        if self.concurrency == 0 || self.connections == 0 {
            return bad("--concurrency and --connections must be at least 1");
        }
        if self.base_url.is_empty() {
            return bad("--base-url needs at least one URL");
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive");
        }
        // The verification accounts each transfer's amount in its accounts' balances.
        if !self.amount.parse::<rust_decimal::Decimal>().is_ok_and(|a| a.is_sign_positive() && !a.is_zero()) {
            return bad("--amount must be a positive decimal");
        }
        Ok(())
    }
}

/// One `--base-url` is reported as the string it always was; several as an array.
fn one_or_many<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    match urls {
        [one] => s.serialize_str(one),
        many => many.serialize(s),
    }
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// `"10"` and `"10s"` are seconds, `"500ms"` milliseconds, `"2m"` minutes.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 10s, 500ms or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("`{text}`: unit must be ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
