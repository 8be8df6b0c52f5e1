//! Stable-toolchain fallback for the fuzz targets: replays every file in `seeds/TARGET/`,
//! `corpus/TARGET/` and `artifacts/TARGET/` (whichever exist) through the same checks as the
//! libFuzzer binaries, then runs a small deterministic mutation loop over those inputs
//! (`FUZZ_ITERS` mutants per target, default 20 000; `FUZZ_SEED` picks the sequence).
//!
//! A failure names the input: for a mutant, its bytes are written to
//! `artifacts/TARGET/replay-mutant-SEED-N` so that the libFuzzer binary (or this test,
//! which replays `artifacts/`) reproduces it.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files in `seeds/`, `corpus/` and `artifacts/` for `target`, sorted by path.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in ["seeds", "corpus", "artifacts"] {
        let Ok(entries) = fs::read_dir(dir().join(sub).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a fixed, dependency-free sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes the parsers care about, spliced in by the mutator.
const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"\r",
    b":",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"=",
    b",",
    b".",
    b"-",
    b"0",
    b"9",
    b"18446744073709551616",
    b"1e308",
    b"-1",
    b"0.5",
    b"h",
    b"m",
    b"s",
    b"ms",
    b"us",
    b"\xc2\xb5s",
    b"ns",
    b"data: ",
    b"event: ",
    b"[DONE]",
    b"usage",
    b"input_tokens",
    b"output_tokens",
    b"prompt_tokens",
    b"completion_tokens",
    b"retry-after",
    b"retry-after-ms",
    b"x-ratelimit-remaining-tokens",
    b"anthropic-ratelimit-requests-reset",
    b"[[models.a.limits]]\n",
    b"per = \"",
    b"amount = ",
    b"burst = ",
    b"match = [\"*\"]",
    b"\xff",
    b"\xe2\x82",
    b"\0",
    b"  ",
];

fn mutate(rng: &mut Rng, base: &[u8], pool: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut data = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 if !data.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            4 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())].1;
                let from = rng.below(other.len() + 1);
                let end = (from + rng.below(64)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied());
            }
            _ if !data.is_empty() => {
                let from = rng.below(data.len());
                let end = (from + 1 + rng.below(32)).min(data.len());
                let copy = data[from..end].to_vec();
                data.splice(at..at, copy);
            }
            _ => data.push(rng.next() as u8),
        }
    }
    data.truncate(4096);
    data
}

fn run(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        files
            .iter()
            .any(|(p, _)| p.starts_with(dir().join("seeds"))),
        "no seeds for {target}"
    );
    for (path, bytes) in &files {
        if panic::catch_unwind(AssertUnwindSafe(|| check(bytes))).is_err() {
            panic!("{target}: input {} fails", path.display());
        }
    }

    let iters = env_u64("FUZZ_ITERS", 20_000);
    let seed = env_u64("FUZZ_SEED", 0x7e57_5eed);
    let mut rng = Rng(seed | 1);
    let mut base = files.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>();
    for n in 0..iters {
        let parent = &base[rng.below(base.len())];
        let input = mutate(&mut rng, parent, &files);
        if panic::catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            let out = dir().join("artifacts").join(target);
            let _ = fs::create_dir_all(&out);
            let file = out.join(format!("replay-mutant-{seed}-{n}"));
            let saved = fs::write(&file, &input).is_ok();
            panic!(
                "{target}: mutant {n} (FUZZ_SEED={seed}) fails: {:?}{}",
                String::from_utf8_lossy(&input),
                if saved {
                    format!("; saved to {}", file.display())
                } else {
                    String::new()
                }
            );
        }
        // Keep some mutants as parents so that changes accumulate.
        if n % 8 == 0 && base.len() < 256 {
            base.push(input);
        }
    }
}

#[test]
fn headers() {
    run("headers", tokengate_fuzz::headers);
}

#[test]
fn config() {
    run("config", tokengate_fuzz::config);
}

#[test]
fn usage() {
    run("usage", tokengate_fuzz::usage);
}
