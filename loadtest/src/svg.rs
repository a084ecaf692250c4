//! Minimal SVG charts for the HTML report: a line chart with a legend, a vertical bar chart and
//! horizontal bars. Geometry is in floating point (pixels and request rates, never money).

use std::fmt::Write as _;

use crate::html::escape;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;

/// One line of a line chart. `NaN` values are gaps (a second without samples).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: &'static str,
    pub color: &'static str,
    pub values: Vec<f64>,
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `max`.
pub fn nice_ceiling(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn open(out: &mut String, height: f64) {
    let _ = write!(out, "<svg viewBox=\"0 0 {WIDTH} {height}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\">");
}

fn label(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Axes with five horizontal grid lines from 0 to `y_max`, and the axis titles.
fn axes(out: &mut String, y_max: f64, x_title: &str, y_title: &str) {
    let plot_h = HEIGHT - TOP - BOTTOM;
    for i in 0..=5 {
        let y = TOP + plot_h - plot_h * f64::from(i) / 5.0;
        let value = y_max * f64::from(i) / 5.0;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            label(value)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{}</text>",
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 6.0,
        escape(x_title),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_title)
    );
}

/// Lines over a shared x axis, with a legend along the top.
pub fn line_chart(x_title: &str, y_title: &str, xs: &[f64], series: &[Series]) -> String {
    let mut out = String::new();
    open(&mut out, HEIGHT);
    let y_max = nice_ceiling(
        series.iter().flat_map(|s| s.values.iter().copied()).filter(|v| v.is_finite()).fold(0.0, f64::max),
    );
    let x_max = xs.iter().copied().fold(0.0, f64::max).max(1.0);
    axes(&mut out, y_max, x_title, y_title);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    // Whole seconds on the x axis, at most about ten ticks.
    let step = (x_max / 10.0).ceil().max(1.0);
    for x in (0..).map(|i| f64::from(i) * step).take_while(|x| *x <= x_max) {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            LEFT + plot_w * x / x_max,
            TOP + plot_h + 16.0,
            label(x)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let mut path = String::new();
        let mut pen_down = false;
        for (x, y) in xs.iter().zip(&s.values) {
            if !y.is_finite() {
                pen_down = false;
                continue;
            }
            let px = LEFT + plot_w * x / x_max;
            let py = TOP + plot_h - plot_h * y / y_max;
            let _ = write!(path, "{}{px:.1},{py:.1} ", if pen_down { "L" } else { "M" });
            pen_down = true;
        }
        let _ = write!(
            out,
            "<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"><title>{}</title></path>\
             <rect x=\"{:.1}\" y=\"8\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"18\">{}</text>",
            path.trim_end(),
            s.color,
            escape(s.name),
            LEFT + 180.0 * i as f64,
            s.color,
            LEFT + 180.0 * i as f64 + 16.0,
            escape(s.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// Vertical bars, one per labelled value, in order.
pub fn bar_chart(bars: &[(String, f64)], y_title: &str) -> String {
    let mut out = String::new();
    open(&mut out, HEIGHT);
    let y_max = nice_ceiling(bars.iter().map(|(_, v)| *v).fold(0.0, f64::max));
    axes(&mut out, y_max, "latency (upper bound of the bucket)", y_title);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / bars.len().max(1) as f64;
    // Label every bar when they fit, else about twelve of them.
    let label_every = (bars.len() / 12).max(1);
    for (i, (name, value)) in bars.iter().enumerate() {
        let h = plot_h * value / y_max;
        let x = LEFT + slot * i as f64;
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#2563eb\"><title>{}: {}</title></rect>",
            x + 1.0,
            TOP + plot_h - h,
            (slot - 2.0).max(1.0),
            escape(name),
            label(*value)
        );
        if i % label_every == 0 {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + slot / 2.0,
                TOP + plot_h + 16.0,
                escape(name)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// Horizontal bars, one row per labelled value (errors by code).
pub fn horizontal_bars(rows: &[(String, f64)]) -> String {
    let row_h = 24.0;
    let height = TOP + row_h * rows.len() as f64 + 8.0;
    let mut out = String::new();
    open(&mut out, height);
    let label_w = 260.0;
    let max = rows.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1.0);
    let bar_w = WIDTH - label_w - RIGHT - 80.0;
    for (i, (name, value)) in rows.iter().enumerate() {
        let y = TOP + row_h * i as f64;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#dc2626\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            label_w - 8.0,
            y + 15.0,
            escape(name),
            y + 3.0,
            (bar_w * value / max).max(1.0),
            row_h - 6.0,
            label_w + (bar_w * value / max).max(1.0) + 6.0,
            y + 15.0,
            label(*value)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
        assert_eq!(nice_ceiling(24_000.0), 50_000.0);
    }

    #[test]
    fn a_gap_in_a_series_lifts_the_pen() {
        let chart = line_chart(
            "x",
            "y",
            &[0.0, 1.0, 2.0, 3.0],
            &[Series { name: "s", color: "#000", values: vec![1.0, f64::NAN, 2.0, 3.0] }],
        );
        let path = chart.split("<path d=\"").nth(1).unwrap_or_default();
        let d = path.split('"').next().unwrap_or_default();
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 1, "{d}");
    }
}
