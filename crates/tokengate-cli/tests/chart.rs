//! The chart (`--chart`): every legend beside its plot, never over a series; per-day limits
//! drawn; the provider's 429s marked.

mod common;

use common::{example_file, quick, scratch, text, write};

/// The chart of a five-minute run, with `args` added.
fn chart(name: &str, args: &[&str]) -> String {
    let dir = scratch(name);
    let svg = dir.join("chart.svg");
    let mut all = vec![
        "simulate",
        "-q",
        "--duration",
        "5m",
        "--seed",
        "3",
        "--chart",
        svg.to_str().unwrap(),
    ];
    all.extend(args);
    let out = quick(&all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::read_to_string(&svg).unwrap()
}

/// Whether a text of the chart labels a series (a legend entry).
fn is_legend(label: &str) -> bool {
    [
        " admitted in the last ",
        " limit (",
        " produced (",
        "429s from the provider",
        "queued (arrived",
        "calls in flight",
    ]
    .iter()
    .any(|n| label.contains(n))
}

#[test]
fn no_legend_covers_a_series() {
    let svg = chart("chart-legend", &[]);
    let doc = roxmltree::Document::parse(&svg).expect("valid XML");
    let number = |v: Option<&str>| v.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Every point of every series line.
    let series_right = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .flat_map(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|p| p.split(',').next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f64::max);
    let legends: Vec<f64> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter(|n| n.text().is_some_and(is_legend))
        .map(|n| number(n.attribute("x")))
        .collect();
    assert!(legends.len() >= 10, "{} legend entries", legends.len());
    let legend_left = legends.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        series_right < legend_left,
        "a series reaches x = {series_right}, a legend starts at x = {legend_left}"
    );
}

#[test]
fn per_day_limits_are_drawn() {
    let svg = chart("chart-daily", &[]);
    for label in [
        "gpt-4o-mini requests limit (100000 per day)",
        "gpt-4o-mini requests admitted in the last 1 d",
        "Requests admitted per window of 1 d, against the limits",
    ] {
        assert!(svg.contains(label), "no {label:?} in the chart");
    }
}

#[test]
fn the_providers_429s_are_marked() {
    let dir = scratch("chart-429-provider");
    // The provider allows 300 requests a minute to the mini family; the client thinks 500.
    let provider = write(
        &dir,
        "provider.toml",
        &example_file("provider.toml")
            .replace("requests_per_minute = 500", "requests_per_minute = 300"),
    );
    let svg = chart("chart-429", &["--provider", &provider]);
    assert!(
        svg.contains("gpt-4o-mini: 429s from the provider ("),
        "no 429s in the chart"
    );
    let doc = roxmltree::Document::parse(&svg).expect("valid XML");
    let red = doc
        .descendants()
        .filter(|n| n.has_tag_name("line") && n.attribute("stroke") == Some("#FF0000"))
        .count();
    assert!(red >= 4, "{red} red strokes: a cross is two");
    // A run without 429s marks none.
    let svg = chart("chart-no-429", &[]);
    assert!(!svg.contains("429s from the provider"));
}
