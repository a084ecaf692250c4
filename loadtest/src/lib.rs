//! `tally-loadtest`: an HTTP load generator for Tally (issue 7). A black box: it speaks only
//! HTTP to a running Tally and depends on no Tally crate. A run is set-up (users, accounts,
//! funding) → load (open or closed loop) → verification (every acknowledged transfer stored
//! once, money conserved) → JSON report and a self-contained HTML report with charts.

pub mod cli;
pub mod client;
pub mod driver;
pub mod error;
pub mod html;
pub mod progress;
pub mod report;
pub mod setup;
pub mod stats;
pub mod svg;
pub mod verify;
pub mod workload;

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::cli::Config;
use crate::client::Client;
use crate::driver::{Shared, lock};
use crate::error::LoadError;
use crate::report::Report;
use crate::stats::Stats;

/// One whole run. `Ok` carries the report even when verification failed: the caller decides
/// the exit status from `report.verification.verdict()`.
pub async fn run(config: &Config) -> Result<Report, LoadError> {
    config.validate()?;
    let client = Client::new(&config.base_url)?;
    let run_id = setup::run_id();
    let fixture = setup::prepare(
        &client,
        &config.admin_email,
        &config.admin_password,
        config.accounts as usize,
        &config.currency,
        &config.funding,
        &run_id,
    )
    .await?;
    let before = verify::snapshot(&client, &fixture).await?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        fixture,
        amount: config.amount.clone(),
        warmup: config.warmup,
        stats: Mutex::new(Stats::new()?),
        acks: Mutex::new(Vec::new()),
        retry_mismatches: Mutex::new(Vec::new()),
    });
    let progress = (!config.quiet).then(|| progress::start(Arc::clone(&shared)));
    let started = Instant::now();
    driver::drive(config, Arc::clone(&shared)).await;
    let duration = started.elapsed().saturating_sub(config.warmup).as_secs_f64();
    if let Some(p) = progress {
        p.abort();
    }
    let acks = std::mem::take(&mut *lock(&shared.acks));
    let mismatches = std::mem::take(&mut *lock(&shared.retry_mismatches));
    let verification = verify::verify(&client, &shared.fixture, acks, mismatches, &before).await?;
    let stats = lock(&shared.stats);
    Ok(Report::new(config, run_id, duration, &stats, verification))
}
