//! The latency chart: open-loop percentiles per target, as a plain SVG.
//!
//! One panel per (protocol, rate); in each, one line per target through
//! p50, p90, p99 and p99.9, on a logarithmic millisecond axis so the tail and
//! the median both stay readable. Written by hand rather than with a
//! plotting crate: a few dozen SVG elements do not justify a font stack
//! (plotters' text needs fontconfig), and the file diffs cleanly.

use std::fmt::Write as _;

use crate::gen::Proto;
use crate::report::percentiles;
use crate::{Load, Results, Scenario};

const PANEL_WIDTH: f64 = 420.0;
const PANEL_HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_TOP: f64 = 56.0;
const MARGIN_BOTTOM: f64 = 40.0;
const LEGEND_HEIGHT: f64 = 40.0;
const COLOURS: [&str; 6] = [
    "#444444", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e",
];
const LABELS: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

/// The SVG document.
pub fn latency_svg(results: &Results) -> String {
    let panels: Vec<(Proto, u64)> = results
        .settings
        .protos
        .iter()
        .flat_map(|&proto| {
            results
                .settings
                .open_rates
                .iter()
                .map(move |&rate| (proto, rate))
        })
        .collect();
    let columns = results.settings.open_rates.len().max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let width = columns as f64 * (PANEL_WIDTH + MARGIN_LEFT) + 20.0;
    let height = rows as f64 * (PANEL_HEIGHT + MARGIN_TOP + MARGIN_BOTTOM) + LEGEND_HEIGHT + 30.0;

    // One y scale for all panels, so panels compare at a glance.
    let mut low = f64::MAX;
    let mut high = f64::MIN;
    for &(proto, rate) in &panels {
        for target in &results.targets {
            if let Some(values) = percentiles(
                results,
                target,
                Scenario {
                    load: Load::Open { rate },
                    proto,
                },
            ) {
                for value in values {
                    low = low.min(value);
                    high = high.max(value);
                }
            }
        }
    }
    if low > high {
        low = 0.01;
        high = 1.0;
    }
    let log_low = (low.max(0.001) * 0.8).log10().floor();
    let log_high = (high * 1.2).log10().ceil().max(log_low + 1.0);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.0}" y="20" text-anchor="middle" font-size="15">Open-loop latency per target (ms, log scale; medians of {} run(s), {})</text>"#,
        width / 2.0,
        results.settings.runs,
        results.machine.date
    );
    for (index, &(proto, rate)) in panels.iter().enumerate() {
        let x0 = (index % columns) as f64 * (PANEL_WIDTH + MARGIN_LEFT) + MARGIN_LEFT;
        let y0 =
            (index / columns) as f64 * (PANEL_HEIGHT + MARGIN_TOP + MARGIN_BOTTOM) + MARGIN_TOP;
        let y_of = |value: f64| {
            y0 + PANEL_HEIGHT * (1.0 - (value.max(1e-6).log10() - log_low) / (log_high - log_low))
        };
        let x_of = |slot: usize| x0 + PANEL_WIDTH * (slot as f64 + 0.5) / LABELS.len() as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">{} at {rate} req/s</text>"#,
            x0 + PANEL_WIDTH / 2.0,
            y0 - 8.0,
            proto.label()
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{y0:.1}" width="{PANEL_WIDTH}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>"##
        );
        // Decades and their halves as grid lines.
        let mut decade = log_low;
        while decade <= log_high {
            for factor in [1.0, 2.0, 5.0] {
                let value = 10f64.powf(decade) * factor;
                if value.log10() > log_high + 1e-9 {
                    continue;
                }
                let y = y_of(value);
                let stroke = if factor == 1.0 { "#ccc" } else { "#eee" };
                let _ = writeln!(
                    svg,
                    r#"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{stroke}"/>"#,
                    x0 + PANEL_WIDTH
                );
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10">{}</text>"#,
                    x0 - 4.0,
                    y + 3.0,
                    axis_label(value)
                );
            }
            decade += 1.0;
        }
        for (slot, label) in LABELS.iter().enumerate() {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
                x_of(slot),
                y0 + PANEL_HEIGHT + 16.0
            );
        }
        for (target_index, target) in results.targets.iter().enumerate() {
            let Some(values) = percentiles(
                results,
                target,
                Scenario {
                    load: Load::Open { rate },
                    proto,
                },
            ) else {
                continue;
            };
            let colour = COLOURS[target_index % COLOURS.len()];
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(slot, value)| format!("{:.1},{:.1}", x_of(slot), y_of(*value)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                points.join(" ")
            );
            for (slot, value) in values.iter().enumerate() {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{target} {}: {value:.3} ms</title></circle>"#,
                    x_of(slot),
                    y_of(*value),
                    LABELS[slot]
                );
            }
        }
    }
    let legend_y = height - LEGEND_HEIGHT + 10.0;
    for (index, target) in results.targets.iter().enumerate() {
        let x = MARGIN_LEFT + index as f64 * 130.0;
        let colour = COLOURS[index % COLOURS.len()];
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{colour}" stroke-width="3"/>"#,
            x + 24.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{target}</text>"#,
            x + 30.0,
            legend_y + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn axis_label(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}
