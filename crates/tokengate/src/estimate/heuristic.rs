//! A token count without a tokenizer: fast, always available, and meant to err high.

/// Weights are in 24ths of a token, so that every rule below is an integer.
const UNIT: u64 = 24;
/// An ASCII letter: a quarter of a token.
const LETTER: u64 = 6;
/// An ASCII digit: a third (the tokenizers split numbers into groups of at most 3 digits).
const DIGIT: u64 = 8;
/// Other ASCII (punctuation, symbols, control characters): half a token.
const SYMBOL: u64 = 12;
/// ASCII whitespace: an eighth (runs of spaces and newlines merge into few tokens).
const SPACE: u64 = 3;
/// A 2-byte UTF-8 character (accented Latin, Greek, Cyrillic, Hebrew, Arabic): one token.
const WIDE_2: u64 = 24;
/// A 3-byte UTF-8 character (CJK, Hangul, Indic and Thai scripts): a token and a half.
const WIDE_3: u64 = 36;
/// A 4-byte UTF-8 character (emoji, rare CJK): three tokens.
const WIDE_4: u64 = 72;

/// The kinds of run the text is split into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Lowercase ASCII letters, or any non-ASCII character.
    Lower,
    /// A run that starts with an uppercase ASCII letter (`Token`, `HTTP`).
    Upper,
    Digit,
    Symbol,
    Space,
}

/// An estimate of the number of tokens in `text`, without a tokenizer, meant to be at or above
/// what OpenAI's tokenizers count for ordinary text.
///
/// # The rule
/// The text is split into runs the way tokenizers pre-split it: words (ASCII letters and any
/// non-ASCII characters; a lowercase-to-uppercase step starts a new word, as in `camelCase`),
/// numbers, runs of other ASCII symbols, and whitespace. Each run costs the sum of its
/// characters' weights, rounded up to a whole token:
///
/// | character | weight (tokens) |
/// |---|---|
/// | ASCII letter | 1/4 |
/// | ASCII digit | 1/3 |
/// | other ASCII (punctuation, symbols) | 1/2 |
/// | ASCII whitespace | 1/8; a single space before anything but a digit costs 0 (it joins the next token) |
/// | 2-byte UTF-8 character (é, Greek, Cyrillic, Hebrew, Arabic) | 1 |
/// | 3-byte UTF-8 character (CJK, Hangul, Indic, Thai) | 3/2 |
/// | 4-byte UTF-8 character (emoji) | 3 |
///
/// Always `ceil(non-whitespace bytes / 4) <= estimate <= bytes` (no tokenizer can count more
/// tokens than bytes in ordinary text).
///
/// # Which way it errs
/// High, for text as people and programs write it. Against `cl100k_base` (the older, less
/// compact OpenAI encoding) and `o200k_base`, measured on sample texts when this was written
/// (`tests/estimate.rs` checks the direction on such samples whenever the `tiktoken` feature
/// is on):
///
/// | text | estimate / cl100k_base | estimate / o200k_base |
/// |---|---|---|
/// | English prose (README, design notes) | 1.32 to 1.38 | 1.32 to 1.38 |
/// | Rust source code | 1.40 to 1.45 | 1.41 to 1.45 |
/// | JSON | 1.55 | 1.53 |
/// | Chinese, Japanese, Korean | 1.18 to 1.31 | 1.70 to 1.96 |
/// | Russian, Arabic, Hindi, Thai | 1.16 to 1.59 | 2.25 to 2.92 |
/// | UUIDs, URLs, long numbers | 1.00 to 1.41 | 1.00 to 1.41 |
///
/// It errs **low** on text with no structure for a tokenizer to exploit: base64 (0.60 to
/// 0.65), random letters (0.40), hex digests (0.96), though never below a quarter of the
/// non-whitespace bytes; and, under `cl100k_base` only, on Greek and Hebrew (0.86 to 0.94) and
/// on European languages with long words (German, Polish: 0.93 to 0.94), which `o200k_base`
/// counts lower than the estimate (1.06 to 1.88). Other providers' tokenizers (Anthropic,
/// Google, Meta, Mistral) differ from OpenAI's; when exact figures matter, settle each request
/// with the usage the provider reports ([`Permit::settle`](crate::Permit::settle)).
///
/// # Examples
/// ```
/// use tokengate::estimate::heuristic_tokens;
/// // "Hello" 2 (5 letters: 5/4 rounded up), "," 1, " world" 2, "!" 1.
/// assert_eq!(heuristic_tokens("Hello, world!"), 6);
/// assert_eq!(heuristic_tokens(""), 0);
/// ```
pub fn heuristic_tokens(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut total: u64 = 0;
    let mut run: Option<Run> = None;
    let mut weight: u64 = 0; // of the current run, in UNITs
    let mut lone_space = false; // the current run is exactly one ' '
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (kind, w, width) = match b {
            b'a'..=b'z' => (Run::Lower, LETTER, 1),
            b'A'..=b'Z' => (Run::Upper, LETTER, 1),
            b'0'..=b'9' => (Run::Digit, DIGIT, 1),
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => (Run::Space, SPACE, 1),
            0..=0x7f => (Run::Symbol, SYMBOL, 1),
            0xc0..=0xdf => (Run::Lower, WIDE_2, 2),
            0xe0..=0xef => (Run::Lower, WIDE_3, 3),
            // 0xf0..: a 4-byte character. (Continuation bytes are skipped by `width`.)
            _ => (Run::Lower, WIDE_4, 4),
        };
        let continues = match (run, kind) {
            // A word goes on through lowercase letters and non-ASCII characters after either
            // case, and through capitals after capitals (`HTTP`); a capital after a lowercase
            // letter starts a new word (`camelCase`).
            (Some(Run::Lower | Run::Upper), Run::Lower) => true,
            (Some(previous), kind) => previous == kind,
            (None, _) => false,
        };
        if !continues {
            total = total.saturating_add(run_cost(run, weight, lone_space, Some(kind)));
            run = Some(kind);
            weight = 0;
            lone_space = b == b' ';
        } else if kind == Run::Space {
            lone_space = false;
        }
        weight = weight.saturating_add(w);
        i += width;
    }
    // Nothing follows the last run: a lone space at the end is a token of its own.
    total.saturating_add(run_cost(run, weight, lone_space, None))
}

/// What a finished run costs, given the kind of run that follows it (`None` at the end).
fn run_cost(run: Option<Run>, weight: u64, lone_space: bool, next: Option<Run>) -> u64 {
    match run {
        None => 0,
        // One space joins the word or symbol after it (` the`, ` +`); before a number the
        // tokenizers keep it apart (`2 + 2`: `2`, ` +`, ` `, `2`).
        Some(Run::Space) if lone_space && next.is_some_and(|n| n != Run::Digit) => 0,
        Some(_) => weight.div_ceil(UNIT),
    }
}
