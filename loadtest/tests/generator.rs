//! The generator tested against a fake server (tests/fake_server.rs): the rate it sends, its
//! latency accounting (a known injected delay, the coordinated-omission case, latencies past a
//! minute), its measured window (duration and CPU, whatever the window hooks cost) and its
//! verification catching a lost transfer. tests/verification.rs has the verification's cases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_server;

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use common::config;
use fake_server::Fault;
use std::sync::atomic::Ordering;
use tally_loadtest::cli::Config;
use tally_loadtest::client::Client;
use tally_loadtest::stats::{Outcome, Percentiles, Sample, Stats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_the_configured_rate() {
    let server = fake_server::start(Duration::ZERO, None).await;
    let cfg = config(&server.base_url, &["--mode", "open", "--rate", "200", "--duration", "3s"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    // 200/s for 3 s is 600 intended requests; the schedule is exact, so all of them go out.
    assert_eq!(report.sent, 600, "{report:?}");
    assert_eq!(report.ok_by_status.get("201"), Some(&600));
    assert!((2.9..4.0).contains(&report.duration_seconds), "duration {}", report.duration_seconds);
    // Each whole second carries its share of the rate, within 5 %.
    for s in &report.per_second[..3] {
        assert!((190..=210).contains(&s.sent), "second {} sent {}", s.second, s.sent);
    }
    assert!((180.0..=210.0).contains(&report.throughput_per_second), "{}", report.throughput_per_second);
    report.verification.verdict().unwrap();
    assert_eq!(report.verification.acknowledged, 600);
    assert_eq!(server.fake.transfers_stored(), 600 + 20); // plus the 20 fundings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifty_millisecond_server_is_reported_at_fifty_milliseconds() {
    let server = fake_server::start(Duration::from_millis(50), None).await;
    let cfg = config(&server.base_url, &["--rate", "40", "--duration", "2s", "--connections", "64"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    assert_eq!(report.sent, 80);
    let p50_ms = report.latency.p50_us as f64 / 1000.0;
    assert!((49.0..=90.0).contains(&p50_ms), "p50 {p50_ms} ms");
    report.verification.verdict().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queueing_behind_too_few_connections_is_charged_to_latency() {
    // Two connections at 50 ms serve at most 40/s; asking 100/s for 2 s queues requests, and
    // measuring from the intended start must show it (a generator that measured from the
    // actual send would report ~50 ms: coordinated omission).
    let server = fake_server::start(Duration::from_millis(50), None).await;
    let cfg = config(&server.base_url, &["--rate", "100", "--duration", "2s", "--connections", "2"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    assert_eq!(report.sent, 200);
    let p99_ms = report.latency.p99_us as f64 / 1000.0;
    // The last request is intended at ~2 s but served at ~5 s: ~3 s late.
    assert!(p99_ms > 1000.0, "p99 {p99_ms} ms should show the queueing");
    assert!(report.latency.p50_us > 500_000, "{:?}", report.latency);
    report.verification.verdict().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_keeps_the_concurrency_busy() {
    let server = fake_server::start(Duration::from_millis(20), None).await;
    let cfg = config(&server.base_url, &["--mode", "closed", "--concurrency", "4", "--duration", "1s"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    // 4 workers at ≥ 20 ms each: at most 200 in one second, and well over half of that.
    assert!((100..=204).contains(&report.sent), "sent {}", report.sent);
    assert!(report.latency.p50_us >= 20_000, "{:?}", report.latency);
    report.verification.verdict().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_catches_a_transfer_acknowledged_and_then_lost() {
    let server = fake_server::start(Duration::ZERO, Some(Fault::Lose(7))).await;
    let cfg = config(&server.base_url, &["--rate", "50", "--duration", "1s"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    assert_eq!(report.ok, 50);
    assert_eq!(report.verification.lost, 1, "{:?}", report.verification);
    assert!(!report.verification.passed);
    assert!(report.verification.verdict().is_err());
    assert!(report.verification.problems[0].contains("not stored"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_up_and_verification_reads_wait_out_a_briefly_unavailable_server() {
    // Three balance reads refused with 503 and Retry-After: the run waits them out.
    let server = fake_server::start(Duration::ZERO, Some(Fault::UnavailableReads(3))).await;
    let cfg = config(&server.base_url, &["--rate", "20", "--duration", "1s"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    assert_eq!(server.fake.reads_refused(), 3);
    report.verification.verdict().unwrap();
    assert_eq!(report.verification.conservation_delta, "0");

    // A server that stays unavailable still ends the run, with the answer it gave.
    let server = fake_server::start(Duration::ZERO, Some(Fault::UnavailableReads(usize::MAX))).await;
    let cfg = config(&server.base_url, &["--rate", "20", "--duration", "1s"]);
    let error = tally_loadtest::run(&cfg).await.unwrap_err().to_string();
    assert!(error.contains("read a balance") && error.contains("503"), "{error}");
    assert_eq!(server.fake.reads_refused(), 10, "ten attempts, then the answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_catches_money_created_by_a_stored_transfer() {
    let server = fake_server::start(Duration::ZERO, Some(Fault::CreditTwice(3))).await;
    let cfg = config(&server.base_url, &["--rate", "50", "--duration", "1s", "--amount", "0.25"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    // Every transfer is found, but one credited its destination twice: 0.25 appeared.
    assert_eq!(report.verification.lost, 0);
    assert_eq!(report.verification.conservation_delta, "0.25");
    assert!(report.verification.verdict().is_err());
    assert!(report.verification.problems.iter().any(|p| p.contains("not conserved")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_pays_again_fails_the_run() {
    let server = fake_server::start(Duration::ZERO, Some(Fault::IgnoreKeys)).await;
    let cfg = config(&server.base_url, &["--rate", "20", "--duration", "1s", "--retry-fraction", "1"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    assert_eq!(report.verification.replay_mismatches, 20, "{:?}", report.verification);
    assert!(report.verification.verdict().is_err());
    // 20 first answers + 20 paid replays + 20 fundings.
    assert_eq!(server.fake.transfers_stored(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_zipf_mixed_and_replays_verify_clean_when_nothing_is_lost() {
    let server = fake_server::start(Duration::ZERO, None).await;
    for extra in [
        &["--workload", "batch", "--batch-size", "25", "--rate", "20"][..],
        &["--workload", "zipf", "--zipf-exponent", "1.2", "--rate", "50"][..],
        &["--workload", "hot", "--rate", "50", "--retry-fraction", "0.5"][..],
        &["--workload", "mixed", "--rate", "50"][..],
    ] {
        let mut args = vec!["--duration", "1s"];
        args.extend_from_slice(extra);
        let report = tally_loadtest::run(&config(&server.base_url, &args)).await.unwrap();
        assert!(report.sent > 0 && report.errors == 0, "{extra:?}: {report:?}");
        report.verification.verdict().unwrap();
        assert!(report.verification.acknowledged > 0);
        assert_eq!(report.verification.conservation_delta, "0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_base_urls_share_the_load_and_a_dead_node_is_counted_not_fatal() {
    // Nodes A and B serve one ledger; the node between them is down (connection refused).
    let cluster = fake_server::start_cluster(2).await;
    let dead = fake_server::dead_url().await;
    let (a, b) = (cluster.base_urls[0].as_str(), cluster.base_urls[1].as_str());
    let args = ["--rate", "60", "--duration", "1s", "--retry-fraction", "1", "--base-url", &dead, "--base-url", b];
    let report = tally_loadtest::run(&config(a, &args)).await.unwrap();
    // Requests go A, dead, B, A, dead, B, ...: 20 each; the dead node's are transport errors.
    assert_eq!(report.sent, 60);
    assert_eq!((report.ok, report.errors), (40, 20), "{report:?}");
    assert_eq!(report.errors_by_code.get("TRANSPORT"), Some(&20));
    // Every first send and every replay landed on a live node: A's replay skips the dead node
    // for B, B's goes to A; each replay answered the same transfer (same key, paid once).
    let received: Vec<usize> = cluster.transfers_received.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert_eq!(received, [40, 40], "20 first sends and 20 replays on each live node");
    assert_eq!(cluster.fake.transfers_stored(), 40 + 20, "40 transfers and 20 fundings");
    report.verification.verdict().unwrap();
    assert_eq!(report.verification.acknowledged, 40);
    // One URL is reported as a string, as it always was; several as an array.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["config"]["base_url"], serde_json::json!([a, dead, b]));
    let single = serde_json::to_value(config(a, &[])).unwrap();
    assert_eq!(single["base_url"], serde_json::json!(a));

    // Closed loop: 4 workers over A and B, two on each.
    let args = ["--mode", "closed", "--concurrency", "4", "--duration", "1s", "--base-url", b];
    let before: Vec<usize> = cluster.transfers_received.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    let report = tally_loadtest::run(&config(a, &args)).await.unwrap();
    report.verification.verdict().unwrap();
    let sent: Vec<usize> =
        cluster.transfers_received.iter().zip(&before).map(|(r, b)| r.load(Ordering::SeqCst) - b).collect();
    assert!(sent.iter().all(|&n| n > 0), "both nodes loaded: {sent:?}");
    assert_eq!(sent.iter().sum::<usize>() as u64, report.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_reads_pass_a_dead_node_on_to_the_next() {
    let server = fake_server::start(Duration::ZERO, None).await;
    let dead = fake_server::dead_url().await;
    let path = "/v1/transfers/00000000-0000-0000-0000-000000000001";
    let both = Client::new(&[dead.clone(), server.base_url.clone()]).unwrap();
    assert_eq!(both.get_patiently(path, None).await.unwrap().status, 404, "answered by the live node");
    // With one URL the transport error is the answer, as before.
    assert!(Client::new(&[dead]).unwrap().get_patiently(path, None).await.is_err());
}

#[test]
fn out_of_range_options_are_refused() {
    let base = ["tally-loadtest", "--admin-email", "a@example.com", "--admin-password", "x"];
    let parse = |extra: &[&str]| Config::try_parse_from(base.iter().chain(extra)).map(|c| c.validate());
    assert!(parse(&["--batch-size", "8191"]).is_err());
    assert!(parse(&["--accounts", "1"]).is_err());
    assert!(parse(&["--rate", "0"]).unwrap().is_err());
    assert!(parse(&["--retry-fraction", "1.5"]).unwrap().is_err());
    assert!(parse(&["--duration", "0s"]).unwrap().is_err());
    assert!(parse(&["--batch-size", "8190", "--rate", "1"]).unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_counts_each_acknowledged_item_as_a_transfer() {
    let server = fake_server::start(Duration::ZERO, None).await;
    let cfg =
        config(&server.base_url, &["--workload", "batch", "--batch-size", "25", "--rate", "20", "--duration", "1s"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    // 20 batch requests of 25 items: 500 transfers, while the request count stays 20.
    assert_eq!(report.ok, 20);
    assert_eq!(report.transfers_ok, 500);
    assert_eq!(report.verification.acknowledged, 500);
    assert_eq!(report.per_second.iter().map(|s| s.transfers).sum::<u64>(), 500);
    assert!(report.transfers_per_second > 10.0 * report.throughput_per_second, "{report:?}");
    report.verification.verdict().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_is_self_contained_and_draws_every_chart() {
    let server = fake_server::start(Duration::from_millis(5), None).await;
    let cfg = config(&server.base_url, &["--rate", "100", "--duration", "2s"]);
    let mut report = tally_loadtest::run(&cfg).await.unwrap();
    // An error code is server-supplied text: it must be escaped, never markup.
    report.errors_by_code.insert("<script>alert(1)</script>".to_owned(), 3);
    report.errors_by_code.insert("OVERLOADED".to_owned(), 7);
    let html = tally_loadtest::html::render(&report);

    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    assert!(html.contains(&report.run_id));
    for heading in ["Throughput over time", "Latency percentiles over time", "Latency histogram", "Errors by code"] {
        assert!(html.contains(heading), "missing {heading}");
    }
    assert_eq!(html.matches("<svg").count(), 4, "four charts");
    // The two line charts have real lines, the histogram real bars, with the run's numbers.
    assert!(html.matches("<path d=\"M").count() >= 4, "throughput, errors and percentile lines");
    let bars: u64 = report.latency_histogram.iter().map(|b| b.count).sum();
    assert_eq!(bars, report.sent, "every request is in one histogram bucket");
    assert!(html.contains("OVERLOADED") && html.contains("&lt;script&gt;"));
    assert!(!html.contains("<script>"), "no script, escaped or ours");
    // Offline: nothing is fetched. The only URL is the SVG namespace, which is never loaded.
    // The target's base URL appears once as summary text (escaped, not a link); nothing else.
    let others = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "").replace(&server.base_url, "");
    assert!(!others.contains("http://") && !others.contains("https://"), "no URL but the namespace");
    assert!(!html.contains("src=") && !html.contains("href="), "no external resources");
    assert!(html.contains("passed"), "the verification verdict is shown");
}

/// The `--at-window-end` hook runs after the window: its run time is not measured time.
/// `duration` divides `transfers_per_second`, `throughput_per_second` and every `cores`, and
/// scripts/bench's hook (psql copying pg_stat_statements, a /metrics scrape) or
/// scripts/cluster's (three scrapes) take real time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_end_hook_is_not_counted_in_the_measured_duration() {
    let server = fake_server::start(Duration::ZERO, None).await;
    let cfg = config(&server.base_url, &["--rate", "50", "--duration", "2s", "--at-window-end", "sleep 2"]);
    let report = tally_loadtest::run(&cfg).await.unwrap();
    assert_eq!(report.transfers_ok, 100);
    assert!(
        report.duration_seconds < 3.0,
        "2 s of load reported as {:.2} s measured, {:.1} transfers/s instead of ~50",
        report.duration_seconds,
        report.transfers_per_second
    );
}

/// Clock ticks (utime + stime) of one process.
fn ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = text[text.rfind(')').unwrap() + 1..].split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A child process, killed and reaped when dropped.
struct Busy(std::process::Child);

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The window's first CPU sample is taken at the end of the warm-up, where the transfers and
/// the duration (and so `cores` and `per_transfer_us`) start counting, before
/// `--at-window-start` runs: the CPU spent while the hook runs is in the window. A process
/// burning one core steadily is reported at about its real rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_is_sampled_over_the_same_window_as_the_transfers() {
    let busy = Busy(std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap());
    let pid = busy.0.id();
    let server = fake_server::start(Duration::ZERO, None).await;
    let watch = format!("busy={pid}");
    let cfg = config(
        &server.base_url,
        &["--rate", "20", "--duration", "3s", "--at-window-start", "sleep 2", "--cpu", &watch],
    );
    let (t0, wall) = (ticks(pid), Instant::now());
    let report = tally_loadtest::run(&cfg).await.unwrap();
    let real_cores = (ticks(pid) - t0) as f64 / 100.0 / wall.elapsed().as_secs_f64();
    drop(busy);
    let reported = report.cpu[0].cores;
    assert!(
        reported > 0.7 * real_cores,
        "a process busy at {real_cores:.2} cores reported at {reported:.2} cores over the window"
    );
}

/// Open-loop latency runs from the intended start and includes the wait for a free connection
/// (and a replay can hold one for 30 s), so it has no bound near the client's 30 s time-out: a
/// 90 s latency is recorded as 90 s (it was clipped to 60 s), and one past the histograms'
/// bound (an hour) is counted as clipped.
#[test]
fn open_loop_latencies_over_a_minute_are_not_clipped() {
    let mut stats = Stats::new().unwrap();
    stats.record(&Sample {
        intended: Duration::from_secs(1),
        latency: Duration::from_secs(90),
        outcome: Outcome::Ok(201),
        transfers: 1,
    });
    let p = Percentiles::of(&stats.latency);
    assert!(p.max_us >= 89_000_000, "a 90 s latency reported as max {} µs", p.max_us);
    assert_eq!(stats.clipped, 0);
    stats.record(&Sample {
        intended: Duration::from_secs(1),
        latency: Duration::from_secs(2 * 3600),
        outcome: Outcome::Ok(201),
        transfers: 1,
    });
    assert_eq!(stats.clipped, 1, "a latency past the bound is counted");
}
