//! The checks behind the fuzz targets in `fuzz_targets/`, one function per target, so that the
//! libFuzzer binaries and the stable replay test (`tests/replay.rs`) run the same code.
//!
//! Each function takes arbitrary bytes, feeds them to a public parser of `tokengate`, and
//! panics only when the library panics or breaks one of the cheap invariants checked here.

use std::time::{Duration, SystemTime};

use tokengate::config::Config;
use tokengate::feedback::usage::{ReplyUsage, StreamUsage};
use tokengate::feedback::{parse_go_duration, ProviderReport};

/// The instant the `headers` target reads its headers at: 2024-06-04T18:31:15Z.
pub const HEADERS_NOW_SECS: u64 = 1_717_525_875;

/// Target `headers`: each input line is a header, split at its first `:` (a line without one
/// is a name with an empty value), read by [`ProviderReport::from_headers`]; the whole input
/// (when UTF-8) and each value are also read by [`parse_go_duration`].
///
/// Checks: no panic; at most one [`ReportedLimit`](tokengate::feedback::ReportedLimit) per
/// dimension (as `ProviderReport::limits` documents).
pub fn headers(data: &[u8]) {
    let pairs: Vec<(&[u8], &[u8])> = data
        .split(|&b| b == b'\n')
        .map(|line| match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &[][..]),
        })
        .collect();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(HEADERS_NOW_SECS);
    let report = ProviderReport::from_headers(pairs.iter().copied(), now);
    for (i, limit) in report.limits.iter().enumerate() {
        assert!(
            report.limits[..i]
                .iter()
                .all(|earlier| earlier.dimension != limit.dimension),
            "dimension {:?} reported twice: {:?}",
            limit.dimension,
            report.limits
        );
    }
    let _ = format!("{report:?}");
    for ignored in &report.ignored {
        let _ = format!("{ignored:?}");
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_go_duration(text);
    }
    for (_, value) in &pairs {
        if let Ok(value) = std::str::from_utf8(value) {
            let _ = parse_go_duration(value);
            let _ = parse_go_duration(value.trim());
        }
    }
}

/// Target `config`: the input (when UTF-8) read by [`Config::from_toml_str`].
///
/// Checks: no panic (the function documents "Never panics"); an error's line and column lie
/// within the input: line 0 only with column 0, else `1 <= line <= lines` (lines counted as
/// `split('\n')` pieces, so an error at the very end may name the empty last line) and
/// `1 <= column <= chars in that line + 1` (one past the end allowed).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text, "fuzz.toml") {
        Ok(config) => {
            let _ = config.model_policy("gpt-4o");
            let _ = config.model_policy("");
            let _ = config.tenant_policy("tenant");
            let _ = config.models().count();
            let _ = config.families().count();
            let _ = config.tenants().count();
            let _ = format!("{config:?}");
        }
        Err(err) => {
            let message = err.to_string();
            if err.line == 0 {
                assert_eq!(err.column, 0, "line 0 with a column: {message}");
                return;
            }
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                err.line <= lines.len(),
                "line {} beyond the input's {} lines: {message}",
                err.line,
                lines.len()
            );
            let chars = lines[err.line - 1].chars().count();
            assert!(
                err.column >= 1 && err.column <= chars + 1,
                "column {} outside line {} of {} chars: {message}",
                err.column,
                err.line,
                chars
            );
        }
    }
}

/// Target `usage`: the input read by [`ReplyUsage::from_json`], and as a server-sent-events
/// stream by [`StreamUsage`] in two chunks split at a position taken from the first byte.
///
/// Checks: no panic; the split does not change what the stream reads (usage so far, lines
/// ignored, provider error, and the final result equal [`ReplyUsage::from_sse`] on the whole
/// input), also with a small line cap (17 to 80 bytes, also taken from the first byte).
pub fn usage(data: &[u8]) {
    let _ = ReplyUsage::from_json(data).map_err(|e| e.to_string());

    let first = data.first().copied().unwrap_or(0);
    let split = usize::from(first) % (data.len() + 1);
    let (head, tail) = data.split_at(split);

    let mut whole = StreamUsage::new();
    whole.push(data);
    let mut parts = StreamUsage::new();
    parts.push(head);
    parts.push(tail);
    same_stream(&whole, &parts, split);
    assert_eq!(
        parts.try_finish(),
        ReplyUsage::from_sse(data),
        "split at {split} changed the result"
    );
    let _ = whole.finish();

    let cap = 17 + usize::from(first) % 64;
    let mut whole = StreamUsage::with_max_line_bytes(cap);
    whole.push(data);
    let mut parts = StreamUsage::with_max_line_bytes(cap);
    parts.push(head);
    parts.push(tail);
    same_stream(&whole, &parts, split);
    assert_eq!(
        whole.try_finish(),
        parts.try_finish(),
        "split at {split} changed the result (cap {cap})"
    );
}

/// Asserts that two readers of the same bytes, pushed differently, saw the same things.
fn same_stream(whole: &StreamUsage, parts: &StreamUsage, split: usize) {
    assert_eq!(
        whole.current(),
        parts.current(),
        "split at {split}: current"
    );
    assert_eq!(
        whole.ignored(),
        parts.ignored(),
        "split at {split}: ignored"
    );
    assert_eq!(
        whole.ignored_total(),
        parts.ignored_total(),
        "split at {split}: ignored_total"
    );
    assert_eq!(
        whole.provider_error(),
        parts.provider_error(),
        "split at {split}: provider_error"
    );
}
