//! The SVG chart of a simulation: admitted requests and tokens in the trailing window of each
//! limit's period, against the limit, and the queue over time.

use std::path::Path;

use plotters::prelude::*;

use crate::error::Error;
use crate::report::per_period;
use crate::sim::Simulation;
use crate::workload::nanos;

/// One line of a panel.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    /// A limit: drawn thinner.
    limit: bool,
    /// Index into the palette.
    color: usize,
}

/// One panel: a title, the y axis's description, its lines.
struct Panel {
    title: String,
    y_desc: &'static str,
    series: Vec<Series>,
}

/// The sum of amounts admitted in `(t - width, t]` at each sample instant.
fn trailing(records: &[(u64, u64)], times: &[u64], width: u64) -> Vec<u64> {
    let mut prefix = Vec::with_capacity(records.len() + 1);
    prefix.push(0u64);
    for &(_, a) in records {
        prefix.push(prefix.last().copied().unwrap_or(0) + a);
    }
    times
        .iter()
        .map(|&t| {
            let hi = records.partition_point(|r| r.0 <= t);
            let lo = records.partition_point(|r| r.0.saturating_add(width) <= t);
            prefix[hi] - prefix[lo.min(hi)]
        })
        .collect()
}

fn panels(sim: &Simulation) -> Vec<Panel> {
    let times: Vec<u64> = sim.samples.iter().map(|s| s.t).collect();
    let minutes: Vec<f64> = times.iter().map(|&t| t as f64 / 60e9).collect();
    let duration = (sim.report.duration_secs * 1e9) as u64;
    let mut requests = Vec::new();
    let mut token_panels = Vec::new();
    let mut color = 0;
    for (scope, limits) in &sim.client_limits {
        let key = scope.name();
        let mut tokens = Vec::new();
        let mine: Vec<_> = sim
            .records
            .iter()
            .filter(|r| scope.counts(&r.key, &r.tenant))
            .collect();
        for kl in limits {
            let width = nanos(kl.limit.period());
            if width > duration.max(1) {
                continue; // a daily cap over an hour's run: nothing to see per window
            }
            let amounts: Vec<(u64, u64)> = mine
                .iter()
                .map(|r| {
                    let a = if r.status == 200 {
                        kl.weights.amount(r.input, r.output)
                    } else {
                        kl.weights.requests
                    };
                    (r.t, a)
                })
                .collect();
            let sums = trailing(&amounts, &times, width);
            let name = kl.dimension.name();
            let period = crate::report::fmt_duration(kl.limit.period());
            let target = if name == "requests" {
                &mut requests
            } else {
                &mut tokens
            };
            target.push(Series {
                label: format!("{key} {name} admitted in the last {period}"),
                points: minutes
                    .iter()
                    .zip(&sums)
                    .map(|(&x, &y)| (x, y as f64))
                    .collect(),
                limit: false,
                color,
            });
            let amount = kl.limit.amount() as f64;
            target.push(Series {
                label: format!(
                    "{key} {name} limit ({})",
                    per_period(kl.limit.amount(), kl.limit.period())
                ),
                points: vec![
                    (0.0, amount),
                    (minutes.last().copied().unwrap_or(0.0), amount),
                ],
                limit: true,
                color,
            });
            color += 1;
        }
        if !tokens.is_empty() {
            token_panels.push(Panel {
                title: format!("{key}: tokens admitted per window (settled), against the limits"),
                y_desc: "tokens per window",
                series: tokens,
            });
        }
    }
    let queue = vec![
        Series {
            label: "queued (arrived, not yet admitted)".to_owned(),
            points: sim
                .samples
                .iter()
                .zip(&minutes)
                .map(|(s, &x)| (x, s.queued as f64))
                .collect(),
            limit: false,
            color,
        },
        Series {
            label: "calls in flight".to_owned(),
            points: sim
                .samples
                .iter()
                .zip(&minutes)
                .map(|(s, &x)| (x, s.in_flight as f64))
                .collect(),
            limit: false,
            color: color + 1,
        },
    ];
    let mut all = vec![Panel {
        title: "Requests admitted per window, against the limits".to_owned(),
        y_desc: "requests per window",
        series: requests,
    }];
    all.extend(token_panels);
    all.push(Panel {
        title: "Queue length".to_owned(),
        y_desc: "requests",
        series: queue,
    });
    all
}

/// Writes the chart of `sim` to `path` as SVG.
///
/// # Errors
/// When the chart cannot be drawn or the file written.
pub fn write_svg(path: &Path, sim: &Simulation) -> Result<(), Error> {
    let fail = |e: String| Error::new(format!("{}: cannot write the chart: {e}", path.display()));
    let mut svg = String::new();
    draw(&mut svg, sim).map_err(fail)?;
    std::fs::write(path, svg).map_err(|e| fail(e.to_string()))
}

/// Writes the chart of `sim` to `out` as SVG.
///
/// # Errors
/// When the chart cannot be drawn or `out` fails.
pub fn write_svg_to(out: &mut dyn std::io::Write, sim: &Simulation) -> std::io::Result<()> {
    let mut svg = String::new();
    draw(&mut svg, sim).map_err(std::io::Error::other)?;
    out.write_all(svg.as_bytes())
}

fn draw(svg: &mut String, sim: &Simulation) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::with_string(svg, (1200, 1500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "tokengate simulate: {} time, seed {}",
        sim.report.mode, sim.report.seed
    );
    let root = root
        .titled(&title, ("sans-serif", 24))
        .map_err(|e| err(&e))?;
    let x_max = (sim.report.duration_secs / 60.0).max(1e-6);
    let panels = panels(sim);
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        let y_max = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(1.0f64, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("time (minutes)")
            .y_desc(panel.y_desc)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| crate::report::thousands(y.round().max(0.0) as u64))
            .draw()
            .map_err(|e| err(&e))?;
        for series in panel.series {
            // An admitted series and its limit share a colour.
            let c = Palette99::pick(series.color).to_rgba();
            let style = ShapeStyle {
                color: c,
                filled: false,
                stroke_width: if series.limit { 1 } else { 2 },
            };
            chart
                .draw_series(LineSeries::new(series.points, style))
                .map_err(|e| err(&e))?
                .label(series.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
