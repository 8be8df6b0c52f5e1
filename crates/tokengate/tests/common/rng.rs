//! A small deterministic random source for test workloads (xorshift64*): every run of a test
//! with the same seed draws the same numbers.

/// The next number of the sequence of `seed`, which it advances.
pub fn next_random(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A number in `low..=high`.
pub fn between(seed: &mut u64, low: u64, high: u64) -> u64 {
    low + next_random(seed) % (high - low + 1)
}

const WORDS: &[&str] = &[
    "the",
    "model",
    "answers",
    "questions",
    "about",
    "rate",
    "limits",
    "tokens",
    "every",
    "minute",
    "provider",
    "request",
    "budget",
    "window",
    "bucket",
    "refill",
    "steady",
    "queue",
    "order",
    "fair",
];

/// A prompt of `words` words drawn from a small vocabulary.
pub fn prompt(seed: &mut u64, words: usize) -> String {
    let mut text = String::new();
    for i in 0..words {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(WORDS[(next_random(seed) % WORDS.len() as u64) as usize]);
    }
    text
}
