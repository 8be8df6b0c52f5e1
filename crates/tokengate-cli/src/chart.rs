//! The SVG chart of a simulation: what every budget of the client admitted in the trailing
//! window of each limit's period, against the limit (per-day limits too, in panels of their
//! own), the provider's 429s marked where they fell, and the queue over time.
//!
//! Tokens are plotted as the provider counts them, as the report counts them: for a provider
//! that keeps `max_tokens` counted, `max_tokens`, with what the calls produced beside it. Each
//! panel's legend is drawn beside its plot, never over a series.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::Error;
use crate::gate::{Scope, Weights};
use crate::report::{fmt_duration, per_period};
use crate::sim::{Record, Simulation};
use crate::workload::nanos;

/// The width of the whole chart, and of each panel's legend beside its plot.
const WIDTH: u32 = 1500;
const LEGEND_WIDTH: u32 = 430;
/// The height of a panel, at least; more when its legend has more entries.
const PANEL_HEIGHT: u32 = 320;
/// A legend entry's height.
const ENTRY_HEIGHT: u32 = 18;
/// The most 429s marked on one series: more are thinned evenly (the label says so).
const MAX_MARKS: usize = 1_000;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// What was admitted: a thick line.
    Admitted,
    /// A limit: a thin line.
    Limit,
    /// What calls produced, beside what the provider counted: a thin line.
    Produced,
    /// The provider's 429s: red crosses.
    Refused,
}

/// One series of a panel.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    style: Style,
    /// Index into the palette (an admitted series and its limit share one).
    color: usize,
}

/// One panel: a title, the y axis's description, its series.
struct Panel {
    title: String,
    y_desc: &'static str,
    series: Vec<Series>,
}

/// The sum of amounts admitted in `(t - width, t]` at each instant of `times`; `records`
/// sorted by time.
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

fn minutes(t: u64) -> f64 {
    t as f64 / 60e9
}

/// What a record counts on a limit of `weights`: as the provider counted it (`counted`), or
/// as the call produced it. A 429 counts the request the client admitted, nothing else.
fn amount(r: &Record, weights: Weights, counted: bool) -> u64 {
    if r.status != 200 {
        return weights.requests;
    }
    let output = if counted { r.counted_output } else { r.output };
    weights.amount(r.input, output)
}

/// The panels: requests per window of each period (every budget's), tokens per window of
/// each budget and period, and the queue.
fn panels(sim: &Simulation) -> Vec<Panel> {
    let times: Vec<u64> = sim.samples.iter().map(|s| s.t).collect();
    let xs: Vec<f64> = times.iter().map(|&t| minutes(t)).collect();
    let x_end = xs.last().copied().unwrap_or(0.0);
    // Requests by period; tokens by budget and period (a day's scale would flatten a minute's).
    let mut requests: BTreeMap<Duration, Vec<Series>> = BTreeMap::new();
    let mut tokens: Vec<((String, Duration), Vec<Series>)> = Vec::new();
    let mut color = 0;
    for (scope, limits) in &sim.client_limits {
        let key = scope.name();
        let mine: Vec<&Record> = sim
            .records
            .iter()
            .filter(|r| scope.counts(&r.key, &r.tenant))
            .collect();
        // A model's 429s, marked on its requests curve of the shortest period (the provider
        // refuses per model: the tenants' and the account's curves would repeat them).
        let refused: Vec<u64> = match scope {
            Scope::Model(_) => mine
                .iter()
                .filter(|r| r.status == 429)
                .map(|r| r.t)
                .collect(),
            _ => Vec::new(),
        };
        let marked_on = limits
            .iter()
            .filter(|kl| kl.weights.requests > 0 && kl.dimension.name() == "requests")
            .map(|kl| kl.limit.period())
            .min();
        for kl in limits {
            let period = kl.limit.period();
            let width = nanos(period);
            let name = kl.dimension.name();
            let points = |counted: bool| -> Vec<(u64, u64)> {
                mine.iter()
                    .map(|r| (r.t, amount(r, kl.weights, counted)))
                    .collect()
            };
            let counted = points(true);
            let line = |sums: Vec<u64>| -> Vec<(f64, f64)> {
                xs.iter().zip(sums).map(|(&x, y)| (x, y as f64)).collect()
            };
            let mut series = vec![Series {
                label: format!("{key} {name} admitted in the last {}", fmt_duration(period)),
                points: line(trailing(&counted, &times, width)),
                style: Style::Admitted,
                color,
            }];
            let produced = points(false);
            if produced != counted {
                series.push(Series {
                    label: format!("{key} {name} produced (max_tokens counted)"),
                    points: line(trailing(&produced, &times, width)),
                    style: Style::Produced,
                    color,
                });
            }
            let amount = kl.limit.amount() as f64;
            series.push(Series {
                label: format!(
                    "{key} {name} limit ({})",
                    per_period(kl.limit.amount(), period)
                ),
                points: vec![(0.0, amount), (x_end, amount)],
                style: Style::Limit,
                color,
            });
            if !refused.is_empty() && name == "requests" && marked_on == Some(period) {
                series.push(refusals(&key, &counted, &refused, width));
            }
            color += 1;
            if name == "requests" {
                requests.entry(period).or_default().extend(series);
            } else {
                match tokens.iter_mut().find(|(k, _)| *k == (key.clone(), period)) {
                    Some((_, s)) => s.extend(series),
                    None => tokens.push(((key.clone(), period), series)),
                }
            }
        }
    }
    let mut all: Vec<Panel> = requests
        .into_iter()
        .map(|(period, series)| Panel {
            title: format!(
                "Requests admitted per window of {}, against the limits",
                fmt_duration(period)
            ),
            y_desc: "requests per window",
            series,
        })
        .collect();
    all.extend(tokens.into_iter().map(|((key, period), series)| Panel {
        title: format!(
            "{key}: tokens per window of {}, as the provider counts them, against the limits",
            fmt_duration(period)
        ),
        y_desc: "tokens per window",
        series,
    }));
    all.push(queue(sim, &xs, color));
    all
}

/// The 429s of a budget (`refused`, their instants), each marked on the curve of `counted`
/// admissions in windows of `width`; thinned evenly to [`MAX_MARKS`].
fn refusals(key: &str, counted: &[(u64, u64)], refused: &[u64], width: u64) -> Series {
    let every = refused.len().div_ceil(MAX_MARKS).max(1);
    let shown: Vec<u64> = refused.iter().copied().step_by(every).collect();
    let heights = trailing(counted, &shown, width);
    let thinned = if every > 1 {
        format!(", one in {every} marked")
    } else {
        String::new()
    };
    Series {
        label: format!("{key}: 429s from the provider ({}{thinned})", refused.len()),
        points: shown
            .iter()
            .zip(heights)
            .map(|(&t, y)| (minutes(t), y as f64))
            .collect(),
        style: Style::Refused,
        color: 0,
    }
}

/// The queue panel: requests waiting and calls in flight.
fn queue(sim: &Simulation, xs: &[f64], color: usize) -> Panel {
    let line = |value: fn(&crate::sim::Sample) -> u64| -> Vec<(f64, f64)> {
        sim.samples
            .iter()
            .zip(xs)
            .map(|(s, &x)| (x, value(s) as f64))
            .collect()
    };
    Panel {
        title: "Queue length".to_owned(),
        y_desc: "requests",
        series: vec![
            Series {
                label: "queued (arrived, not yet admitted)".to_owned(),
                points: line(|s| s.queued),
                style: Style::Admitted,
                color,
            },
            Series {
                label: "calls in flight".to_owned(),
                points: line(|s| s.in_flight),
                style: Style::Admitted,
                color: color + 1,
            },
        ],
    }
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

/// How a series is drawn: its colour and line.
fn shape(series: &Series) -> ShapeStyle {
    let color = match series.style {
        Style::Refused => RED.to_rgba(),
        Style::Produced => Palette99::pick(series.color).mix(0.5),
        _ => Palette99::pick(series.color).to_rgba(),
    };
    ShapeStyle {
        color,
        filled: false,
        stroke_width: match series.style {
            Style::Admitted | Style::Refused => 2,
            Style::Limit | Style::Produced => 1,
        },
    }
}

/// A panel's height: enough for its legend.
fn height(panel: &Panel) -> u32 {
    PANEL_HEIGHT.max(60 + ENTRY_HEIGHT * panel.series.len() as u32)
}

fn draw(svg: &mut String, sim: &Simulation) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let panels = panels(sim);
    let title_height = 50;
    let total = title_height + panels.iter().map(height).sum::<u32>();
    let root = SVGBackend::with_string(svg, (WIDTH, total)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "tokengate simulate: {} time, seed {}",
        sim.report.mode, sim.report.seed
    );
    let root = root
        .titled(&title, ("sans-serif", 24))
        .map_err(|e| err(&e))?;
    let mut breaks = Vec::new();
    let mut y = 0;
    for panel in &panels[..panels.len().saturating_sub(1)] {
        y += height(panel);
        breaks.push(y);
    }
    let areas = root.split_by_breakpoints([] as [u32; 0], breaks);
    let x_max = (sim.report.duration_secs / 60.0).max(1e-6);
    for (area, panel) in areas.iter().zip(&panels) {
        let (plot, legend) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
        draw_panel(&plot, panel, x_max).map_err(|e| err(&e))?;
        draw_legend(&legend, panel).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult<'a> =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>>;

fn draw_panel<'a>(area: &Area<'a>, panel: &Panel, x_max: f64) -> DrawResult<'a> {
    let y_max = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time (minutes)")
        .y_desc(panel.y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| crate::report::thousands(y.round().max(0.0) as u64))
        .draw()?;
    for series in &panel.series {
        let style = shape(series);
        if series.style == Style::Refused {
            chart.draw_series(series.points.iter().map(|&p| Cross::new(p, 4, style)))?;
        } else {
            chart.draw_series(LineSeries::new(series.points.iter().copied(), style))?;
        }
    }
    Ok(())
}

/// The legend of a panel, in its own area beside the plot: a swatch and a label a series.
fn draw_legend<'a>(area: &Area<'a>, panel: &Panel) -> DrawResult<'a> {
    let text = ("sans-serif", 13).into_font().color(&BLACK);
    for (i, series) in panel.series.iter().enumerate() {
        let y = 48 + (i as u32 * ENTRY_HEIGHT) as i32;
        let style = shape(series);
        if series.style == Style::Refused {
            area.draw(&Cross::new((17, y), 4, style))?;
        } else {
            let height = if series.style == Style::Admitted {
                3
            } else {
                1
            };
            area.draw(&Rectangle::new(
                [(6, y - height / 2), (28, y + height - height / 2)],
                style.filled(),
            ))?;
        }
        area.draw(&Text::new(
            series.label.clone(),
            (36, y),
            text.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{simulate, SimInput, SimOptions};

    #[test]
    fn tokens_are_plotted_as_the_provider_counts_them() {
        // The example's provider counts max_tokens (OpenAI): the client's gpt-4o token limit
        // binds on what it counted, not on what the calls produced.
        let input = SimInput::example().expect("the example");
        let options = SimOptions {
            seed: Some(7),
            duration: Some(Duration::from_secs(300)),
            ..SimOptions::default()
        };
        let sim = simulate(&input, &options).expect("it runs");
        let panels = panels(&sim);
        let series = |label: &str| -> &Series {
            panels
                .iter()
                .flat_map(|p| &p.series)
                .find(|s| s.label == label)
                .unwrap_or_else(|| panic!("no series {label:?}"))
        };
        let most = |s: &Series| s.points.iter().map(|p| p.1).fold(0.0, f64::max);
        let counted = most(series("gpt-4o tokens admitted in the last 1 min"));
        let produced = most(series("gpt-4o tokens produced (max_tokens counted)"));
        assert!(counted >= 90_000.0, "{counted} of the 100,000 limit");
        assert!(counted <= 100_000.0, "{counted} above the limit");
        assert!(produced < 0.8 * counted, "{produced} vs {counted}");
        // Exactly the records' counted tokens in each trailing minute.
        let (_, limits) = sim
            .client_limits
            .iter()
            .find(|(s, _)| s.name() == "gpt-4o")
            .expect("gpt-4o's budget");
        let kl = limits
            .iter()
            .find(|kl| kl.dimension.name() == "tokens")
            .unwrap();
        let t = sim.samples[200].t;
        let expected: u64 = sim
            .records
            .iter()
            .filter(|r| r.key.as_ref() == "gpt-4o" && r.t <= t && r.t + 60_000_000_000 > t)
            .map(|r| kl.weights.amount(r.input, r.counted_output))
            .sum();
        let plotted = series("gpt-4o tokens admitted in the last 1 min").points[200].1;
        assert_eq!(plotted, expected as f64);
    }
}
