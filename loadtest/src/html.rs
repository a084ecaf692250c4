//! The HTML report: one self-contained file (inline CSS and SVG, no script, no network) that a
//! person can open offline or attach to a ticket. It draws the same numbers as the JSON report:
//! throughput over time, latency percentiles over time, the latency histogram and errors by code.
//!
//! The charts are SVG written here rather than a charting library: a report must render the
//! same in ten years, without a CDN, and the four chart shapes it needs are a few lines each.

use std::fmt::Write as _;

use crate::report::Report;
use crate::svg::{self, Series};

/// Renders `report` as a complete HTML document.
pub fn render(report: &Report) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let title = format!("Tally load test {}", report.run_id);
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    summary(&mut page, report);
    let seconds: Vec<f64> = report.per_second.iter().map(|s| s.second as f64).collect();

    let transfers: Vec<f64> = report.per_second.iter().map(|s| s.transfers as f64).collect();
    let errors: Vec<f64> = report.per_second.iter().map(|s| s.errors as f64).collect();
    section(
        &mut page,
        "Throughput over time",
        &svg::line_chart(
            "second of the run",
            "per second",
            &seconds,
            &[
                Series { name: "transfers acknowledged", color: "#2563eb", values: transfers },
                Series { name: "errors", color: "#dc2626", values: errors },
            ],
        ),
    );

    let percentile = |pick: fn(&crate::stats::Percentiles) -> u64| -> Vec<f64> {
        report.per_second.iter().map(|s| s.latency.as_ref().map_or(f64::NAN, |l| pick(l) as f64 / 1000.0)).collect()
    };
    section(
        &mut page,
        "Latency percentiles over time (from each request's intended start)",
        &svg::line_chart(
            "second of the run",
            "milliseconds",
            &seconds,
            &[
                Series { name: "p50", color: "#16a34a", values: percentile(|l| l.p50_us) },
                Series { name: "p99", color: "#ea580c", values: percentile(|l| l.p99_us) },
                Series { name: "p99.9", color: "#9333ea", values: percentile(|l| l.p99_9_us) },
            ],
        ),
    );

    let bars: Vec<(String, f64)> =
        report.latency_histogram.iter().map(|b| (format!("≤ {}", format_ms(b.to_us)), b.count as f64)).collect();
    section(&mut page, "Latency histogram (requests per latency bucket)", &svg::bar_chart(&bars, "requests"));

    let codes: Vec<(String, f64)> = report.errors_by_code.iter().map(|(code, n)| (code.clone(), *n as f64)).collect();
    if codes.is_empty() {
        section(&mut page, "Errors by code", "<p class=\"ok\">No errors.</p>");
    } else {
        section(&mut page, "Errors by code", &svg::horizontal_bars(&codes));
    }
    page.push_str("</body></html>\n");
    page
}

fn summary(page: &mut String, report: &Report) {
    let l = &report.latency;
    let v = &report.verification;
    let config = &report.config;
    let verdict = if v.passed {
        format!(
            "<span class=\"ok\">passed</span>: {} acknowledged transfers found once as requested, every \
             account's balance explained, money conserved; {} unknown outcomes ({} made, {} refused, {} unresolved)",
            v.acknowledged, v.unknown, v.resolved_applied, v.resolved_not_applied, v.unresolved
        )
    } else {
        format!("<span class=\"bad\">FAILED</span>: {}", escape(&v.summary()))
    };
    let rows = [
        ("target", escape(&config.base_url.join(", "))),
        (
            "workload",
            format!(
                "{:?}, {:?} loop, {} accounts, batch size {}, retry fraction {}",
                config.workload, config.mode, config.accounts, config.batch_size, config.retry_fraction
            )
            .to_lowercase(),
        ),
        ("duration", format!("{:.1} s measured", report.duration_seconds)),
        ("requests", format!("{} sent, {} ok, {} errors", report.sent, report.ok, report.errors)),
        ("transfers/s", format!("{:.0}", report.transfers_per_second)),
        (
            "latency",
            format!(
                "p50 {} · p90 {} · p99 {} · p99.9 {} · max {}{}",
                format_ms(l.p50_us),
                format_ms(l.p90_us),
                format_ms(l.p99_us),
                format_ms(l.p99_9_us),
                format_ms(l.max_us),
                if report.latency_clipped > 0 {
                    format!(" ({} above the bound, recorded as it)", report.latency_clipped)
                } else {
                    String::new()
                }
            ),
        ),
        ("verification", verdict),
    ];
    page.push_str("<table class=\"summary\">\n");
    for (name, value) in rows {
        let _ = writeln!(page, "<tr><th>{name}</th><td>{value}</td></tr>");
    }
    page.push_str("</table>\n");
    for problem in v.problems.iter().take(20) {
        let _ = writeln!(page, "<p class=\"bad\">{}</p>", escape(problem));
    }
}

fn section(page: &mut String, heading: &str, body: &str) {
    let _ = writeln!(page, "<section><h2>{}</h2>\n{body}\n</section>", escape(heading));
}

/// Microseconds as milliseconds with a precision that suits the magnitude.
pub fn format_ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Text made safe for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#111}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table.summary{border-collapse:collapse}\
table.summary th{text-align:left;padding:3px 16px 3px 0;color:#555;font-weight:600}\
.ok{color:#15803d;font-weight:600}.bad{color:#b91c1c;font-weight:600}\
svg{width:100%;height:auto;background:#fafafa;border:1px solid #e5e5e5}\
svg text{font:11px system-ui,sans-serif;fill:#333}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn milliseconds_keep_sensible_precision() {
        assert_eq!(format_ms(1_234), "1.23 ms");
        assert_eq!(format_ms(45_600), "45.6 ms");
        assert_eq!(format_ms(2_500_000), "2500 ms");
    }
}
