//! `tally-loadtest`: see the crate docs and README's Benchmarks section. Exit status: 0 the run
//! passed verification, 1 it lost or duplicated money, 2 it could not run.

use std::process::ExitCode;

use clap::Parser;
use tally_loadtest::cli::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tally-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &config.setup_only {
        return match runtime.block_on(tally_loadtest::setup_only(&config, path)) {
            Ok(fixture) => {
                eprintln!(
                    "set up {} accounts of {} users; fixture in {}",
                    fixture.accounts.len(),
                    fixture.tokens.len(),
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tally-loadtest: {e}");
                ExitCode::from(2)
            }
        };
    }
    let report = match runtime.block_on(tally_loadtest::run(&config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tally-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let json = match serde_json::to_string_pretty(&report) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("tally-loadtest: encoding the report: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &config.report
        && let Err(e) = std::fs::write(path, &json)
    {
        eprintln!("tally-loadtest: writing {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if let Some(path) = &config.html
        && let Err(e) = std::fs::write(path, tally_loadtest::html::render(&report))
    {
        eprintln!("tally-loadtest: writing {}: {e}", path.display());
        return ExitCode::from(2);
    }
    let l = &report.latency;
    eprintln!(
        "sent {} ok {} errors {} in {:.1} s: {:.1} requests/s, {:.1} transfers/s; latency ms p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
        report.sent,
        report.ok,
        report.errors,
        report.duration_seconds,
        report.throughput_per_second,
        report.transfers_per_second,
        l.p50_us as f64 / 1000.0,
        l.p90_us as f64 / 1000.0,
        l.p99_us as f64 / 1000.0,
        l.p99_9_us as f64 / 1000.0,
        l.max_us as f64 / 1000.0,
    );
    if report.latency_clipped > 0 {
        eprintln!(
            "{} latencies exceeded the histograms' bound ({} s) and were recorded as it",
            report.latency_clipped,
            tally_loadtest::stats::LATENCY_MAX_US / 1_000_000
        );
    }
    for usage in &report.cpu {
        eprintln!(
            "cpu {}: {:.2} s over the window ({:.2} cores), {:.1} µs per transfer",
            usage.name, usage.cpu_seconds, usage.cores, usage.per_transfer_us
        );
    }
    match report.verification.verdict() {
        Ok(()) => {
            let v = &report.verification;
            eprintln!(
                "verification passed: {} acknowledged transfers found as requested, every account's balance \
                 explained, money conserved; {} unknown outcomes ({} made, {} refused, {} unresolved)",
                v.acknowledged, v.unknown, v.resolved_applied, v.resolved_not_applied, v.unresolved
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tally-loadtest: {e}");
            for p in &report.verification.problems {
                eprintln!("  {p}");
            }
            ExitCode::from(1)
        }
    }
}
