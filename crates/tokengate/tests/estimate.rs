//! `tokengate::estimate`: token counts before a request is sent.
//!
//! - Encoding selection by model name, and how each count says how it was made.
//! - The heuristic: values by its documented rule, its bounds (a property test), and, with the
//!   `tiktoken` feature, the direction it errs against both encodings.
//! - Chat framing: the cookbook's formula, with the heuristic and with the tokenizers.
//! - With the `tiktoken` feature: exact counts of the strings and the chat example in OpenAI's
//!   cookbook ("How to count tokens with tiktoken"), whose figures the cookbook checked against
//!   the API, each also checked against tiktoken-rs itself.
//! - Output reservations: `max_tokens`, the default, and the learned quantile (minimum
//!   observations, floor, cap, convergence, sliding window, bounded memory, validation).
//! - Learned input scaling: off by default, the p99 ratio once trusted, never feeding on
//!   itself, tokenizer counts untouched, validation.
//! - Thread safety: concurrent observations and estimates, concurrent counting.
//!
//! Run: `cargo test -p tokengate --test estimate` and
//! `cargo test -p tokengate --test estimate --features tiktoken`.

use proptest::prelude::*;
use tokengate::estimate::{
    heuristic_tokens, ChatMessage, Encoding, Estimator, EstimatorError, HeuristicReason,
    InputLearning, Method, OutputLearning, OutputSource, DEFAULT_MAX_TOKENS, REPLY_PRIMING,
    TOKENS_PER_MESSAGE, TOKENS_PER_NAME,
};

// ---------------------------------------------------------------------------------------------
// Samples

/// The chat example of OpenAI's cookbook ("How to count tokens with tiktoken", section 6).
fn cookbook_messages() -> Vec<ChatMessage<'static>> {
    vec![
        ChatMessage::system(
            "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
        ),
        ChatMessage::system("New synergies will help drive top-line growth.")
            .with_name("example_user"),
        ChatMessage::system("Things working well together will increase revenue.")
            .with_name("example_assistant"),
        ChatMessage::system(
            "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
        )
        .with_name("example_user"),
        ChatMessage::system("Let's talk later when we're less busy about how to do better.")
            .with_name("example_assistant"),
        ChatMessage::user(
            "This late pivot means we don't have time to boil the ocean for the client deliverable.",
        ),
    ]
}

/// The nearest-rank quantile of `values`: the `ceil(q * n)`-th smallest.
fn nearest_rank(values: &[u64], q: f64) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A deterministic pseudo-random sequence (a 64-bit LCG), values in `0..bound`.
fn lcg(seed: u64, bound: u64) -> impl Iterator<Item = u64> {
    let mut state = seed;
    std::iter::repeat_with(move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound
    })
}

// ---------------------------------------------------------------------------------------------
// Encoding selection

#[test]
fn encodings_are_chosen_by_model_family() {
    let o200k = [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o-2024-08-06",
        "chatgpt-4o-latest",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4.5-preview",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5.1",
        "gpt-5.2-codex",
        "o1",
        "o1-mini",
        "o1-preview",
        "o3",
        "o3-mini",
        "o3-pro",
        "o4-mini",
        "GPT-4o",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
        "openai/gpt-4.1",
        " gpt-4o ",
    ];
    for model in o200k {
        assert_eq!(
            Encoding::for_model(model),
            Some(Encoding::O200kBase),
            "{model}"
        );
    }
    let cl100k = [
        "gpt-4",
        "gpt-4-0613",
        "gpt-4-32k",
        "gpt-4-turbo",
        "gpt-4-turbo-2024-04-09",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "gpt-3.5-turbo-16k",
        "gpt-35-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "ft:gpt-3.5-turbo-0125:acme::xyz",
    ];
    for model in cl100k {
        assert_eq!(
            Encoding::for_model(model),
            Some(Encoding::Cl100kBase),
            "{model}"
        );
    }
    let unknown = [
        "",
        "claude-sonnet-4-5",
        "gemini-2.5-pro",
        "llama-3.1-70b",
        "mistral-large",
        "gpt-4x",    // not a separator after the family name
        "gpt-4.7",   // an unknown gpt-4.x, not gpt-4
        "o2",        // no such family
        "o1x",       // not a separator
        "gpt-6",     // a future family
        "my-gpt-4o", // a deployment name, not a model name
        "text-embedding-ada-003",
        "gpt-oss-120b", // o200k_harmony: not one of the two encodings here
    ];
    for model in unknown {
        assert_eq!(Encoding::for_model(model), None, "{model}");
    }
    assert_eq!(Encoding::O200kBase.name(), "o200k_base");
    assert_eq!(Encoding::Cl100kBase.to_string(), "cl100k_base");
}

#[test]
fn counts_say_how_they_were_made() {
    let estimator = Estimator::new();
    let unknown = estimator.count_text("claude-sonnet-4-5", "Hello, world!");
    assert_eq!(
        unknown.method,
        Method::Heuristic(HeuristicReason::UnknownModel)
    );
    assert_eq!(unknown.tokens, heuristic_tokens("Hello, world!"));
    assert!(unknown.method.to_string().contains("heuristic"));

    let known = estimator.method("gpt-4o");
    if cfg!(feature = "tiktoken") {
        assert_eq!(known, Method::Tokenizer(Encoding::O200kBase));
        assert!(known.is_tokenizer());
        assert_eq!(known.to_string(), "counted with o200k_base");
    } else {
        assert_eq!(
            known,
            Method::Heuristic(HeuristicReason::TokenizerDisabled(Encoding::O200kBase))
        );
        assert!(known.to_string().contains("`tiktoken` feature"));
        // Without the feature a known model is counted by the heuristic too.
        let count = estimator.count_text("gpt-4o", "Hello, world!");
        assert_eq!(count.tokens, heuristic_tokens("Hello, world!"));
    }
}

// ---------------------------------------------------------------------------------------------
// The heuristic

#[test]
fn heuristic_follows_its_documented_rule() {
    // (text, tokens by the rule in `heuristic_tokens`'s documentation, worked by hand)
    let cases: &[(&str, u64)] = &[
        ("", 0),
        // "Hello" 5/4 -> 2, "," 1, " " joins "world" 5/4 -> 2, "!" 1
        ("Hello, world!", 6),
        // "2" 1, " +" 1, " " before a digit 1, "2" 1, " =" 1, " " 1, "4" 1
        ("2 + 2 = 4", 7),
        // 28 letters: 28/4 = 7
        ("antidisestablishmentarianism", 7),
        // camelCase: "camel" 2, "Case" 1, "Name" 1; capitals after capitals stay: "HTTP" 1
        ("camelCaseName", 4),
        ("HTTPServer", 3), // "HTTPServer" is one run of capitals then lowercase: 10/4 -> 3
        // digits: groups of at most 3: 10 digits -> 4
        ("1234567890", 4),
        // 4 newlines: 4/8 -> 1, between two letters
        ("a\n\n\n\nb", 3),
        // a lone space at the end is a token of its own
        ("a ", 2),
        // symbols: 6 at 1/2 -> 3
        ("!?!?!?", 3),
        // 9 three-byte characters at 3/2 -> 14 (13.5 rounded up)
        ("お誕生日おめでとう", 14),
        // 2 two-byte characters at 1 -> 2; a 4-byte emoji at 3
        ("да", 2),
        ("🙂", 3),
        // "für": f 1/4 + ü 1 + r 1/4 = 3/2 -> 2
        ("für", 2),
    ];
    for &(text, expected) in cases {
        assert_eq!(heuristic_tokens(text), expected, "{text:?}");
    }
}

proptest! {
    #[test]
    fn heuristic_stays_within_its_bounds(text in any::<String>()) {
        let tokens = heuristic_tokens(&text);
        let bytes = text.len() as u64;
        let non_space =
            text.bytes().filter(|b| !b" \t\n\r\x0b\x0c".contains(b)).count() as u64;
        prop_assert!(tokens <= bytes, "{tokens} tokens > {bytes} bytes in {text:?}");
        prop_assert!(
            tokens >= non_space.div_ceil(4),
            "{tokens} tokens < ceil({non_space} non-whitespace bytes / 4) in {text:?}"
        );
    }

    #[test]
    fn heuristic_never_shrinks_when_a_run_grows(
        prefix in "[ -~]{0,20}",
        word in "[a-z]{1,20}",
        extra in "[a-z]{1,20}",
    ) {
        // Appending letters to the last word never lowers the estimate.
        let short = format!("{prefix} {word}");
        let long = format!("{prefix} {word}{extra}");
        prop_assert!(heuristic_tokens(&long) >= heuristic_tokens(&short));
    }
}

// ---------------------------------------------------------------------------------------------
// Chat framing

#[test]
fn framing_constants_are_the_cookbooks() {
    // tokens_per_message = 3, tokens_per_name = 1, reply priming 3 (`<|start|>assistant<|message|>`).
    assert_eq!(
        (TOKENS_PER_MESSAGE, TOKENS_PER_NAME, REPLY_PRIMING),
        (3, 1, 3)
    );
}

#[test]
fn chat_framing_follows_the_cookbook_formula_with_the_heuristic() {
    let estimator = Estimator::new();
    let messages = cookbook_messages();
    let expected = REPLY_PRIMING
        + messages
            .iter()
            .map(|m| {
                TOKENS_PER_MESSAGE
                    + heuristic_tokens(m.role)
                    + heuristic_tokens(m.content)
                    + m.name.map_or(0, |n| heuristic_tokens(n) + TOKENS_PER_NAME)
            })
            .sum::<u64>();
    let count = estimator.count_chat("claude-sonnet-4-5", &messages);
    assert_eq!(count.tokens, expected);
    assert_eq!(
        count.method,
        Method::Heuristic(HeuristicReason::UnknownModel)
    );
    // No messages: only the reply priming.
    assert_eq!(estimator.count_chat("any", &[]).tokens, REPLY_PRIMING);
    // A name adds its tokens and TOKENS_PER_NAME.
    let plain = estimator
        .count_chat("any", &[ChatMessage::user("hi")])
        .tokens;
    let named = estimator
        .count_chat("any", &[ChatMessage::user("hi").with_name("ada")])
        .tokens;
    assert_eq!(named, plain + heuristic_tokens("ada") + TOKENS_PER_NAME);
}

#[test]
fn estimate_is_one_request_with_input_and_output() {
    let estimator = Estimator::new();
    let messages = [
        ChatMessage::developer("Be brief."),
        ChatMessage::user("Why?"),
    ];
    let cost = estimator.estimate_chat("mistral-large", &messages, Some(256));
    assert_eq!(cost.requests(), 1);
    assert_eq!(
        cost.input_tokens(),
        estimator.count_chat("mistral-large", &messages).tokens
    );
    assert_eq!(cost.output_tokens(), 256);
    let explained = estimator.explain_chat("mistral-large", &messages, Some(256));
    assert_eq!(explained.output.source, OutputSource::MaxTokens);
    assert_eq!(tokengate::Cost::from(explained), cost);
}

// ---------------------------------------------------------------------------------------------
// Exact counts (tiktoken feature)

#[cfg(feature = "tiktoken")]
mod exact {
    use super::*;
    use tiktoken_rs::{cl100k_base_singleton, o200k_base_singleton};

    const PROSE: &str = "Rate limiting for programs that call LLM APIs: stay under every limit a \
    provider sets (requests, input and output tokens, combined tokens, requests in flight, per minute \
    and per day at once) while using as much of the quota as possible. Providers read \"N per \
    minute\" in two ways: at most N in any 60-second window, and a smooth rate enforced over shorter \
    periods, so a burst of all N requests at once is refused. The long-run utilisation is 100% of N.";

    const CODE: &str = r#"/// Sets `name` to `amount` in a list of named amounts.
    fn set_named(list: &mut Vec<Named>, name: Arc<str>, amount: u64) {
        match list.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = amount,
            None => list.push((name, amount)),
        }
    }

    impl Cost {
        /// One request, no tokens yet.
        #[inline]
        pub fn request() -> Self {
            Self { requests: 1, ..Self::default() }
        }
    }
    "#;

    const JSON: &str = r#"{"id":"chatcmpl-123","object":"chat.completion","created":1677652288,"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21},"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how may I assist you today?"}}]}"#;

    const CHINESE: &str =
        "速度快的棕色狐狸跳过了懒狗。限速是为了在提供商设定的每个限制之下使用尽可能多的配额。";
    const JAPANESE: &str = "素早い茶色の狐がのろまな犬を飛び越える。東京は日本の首都です。";
    const KOREAN: &str = "빠른 갈색 여우가 게으른 개를 뛰어넘는다. 서울은 한국의 수도입니다.";
    const RUSSIAN: &str = "Съешь же ещё этих мягких французских булок, да выпей чаю.";
    const UUIDS: &str = "550e8400-e29b-41d4-a716-446655440000 123e4567-e89b-12d3-a456-426614174000";
    const EMOJI: &str = "🙂🚀🔥👍🏽 🎉🎉🎉";
    /// High-entropy text, which the heuristic is documented to under-estimate.
    const BASE64: &str =
        "U29tZSByYW5kb20gYmFzZTY0IGVuY29kZWQgc3RyaW5nIHRoYXQgZ29lcyBvbiBmb3IgYSB3aGlsZSBhbmQgb24=";

    /// Ordinary text: the heuristic must not count less than the tokenizers.
    const ORDINARY: &[(&str, &str)] = &[
        ("prose", PROSE),
        ("code", CODE),
        ("json", JSON),
        ("chinese", CHINESE),
        ("japanese", JAPANESE),
        ("korean", KOREAN),
        ("russian", RUSSIAN),
        ("uuids", UUIDS),
        ("emoji", EMOJI),
    ];

    fn tiktoken(encoding: Encoding, text: &str) -> u64 {
        let bpe = match encoding {
            Encoding::O200kBase => o200k_base_singleton(),
            Encoding::Cl100kBase => cl100k_base_singleton(),
            other => panic!("no such encoding in this test: {other:?}"),
        };
        bpe.encode_ordinary(text).len() as u64
    }

    #[test]
    fn known_strings_count_as_the_cookbook_says() {
        // (text, cl100k_base, o200k_base) as printed in the cookbook's sections 3 and 5.
        let cases: &[(&str, u64, u64)] = &[
            ("antidisestablishmentarianism", 6, 6),
            ("2 + 2 = 4", 7, 7),
            ("お誕生日おめでとう", 9, 8),
        ];
        let estimator = Estimator::new();
        for &(text, cl100k, o200k) in cases {
            assert_eq!(tiktoken(Encoding::Cl100kBase, text), cl100k, "{text}");
            assert_eq!(tiktoken(Encoding::O200kBase, text), o200k, "{text}");
            let gpt4 = estimator.count_text("gpt-4", text);
            assert_eq!(gpt4.tokens, cl100k, "{text}");
            assert_eq!(gpt4.method, Method::Tokenizer(Encoding::Cl100kBase));
            assert_eq!(estimator.count_text("gpt-4o", text).tokens, o200k, "{text}");
            assert_eq!(Encoding::Cl100kBase.count(text), cl100k);
            assert_eq!(Encoding::O200kBase.count(text), o200k);
        }
        // Section 3: "tiktoken is great!" is 6 tokens in o200k_base.
        assert_eq!(
            estimator
                .count_text("gpt-4o-mini", "tiktoken is great!")
                .tokens,
            6
        );
        assert_eq!(tiktoken(Encoding::O200kBase, "tiktoken is great!"), 6);
    }

    #[test]
    fn text_counts_match_tiktoken() {
        let estimator = Estimator::new();
        let special = "<|endoftext|> is text here, not a special token";
        for (_, text) in ORDINARY
            .iter()
            .chain(&[("special", special), ("base64", BASE64)])
        {
            for (model, encoding) in [
                ("gpt-4o", Encoding::O200kBase),
                ("o3-mini", Encoding::O200kBase),
                ("gpt-3.5-turbo", Encoding::Cl100kBase),
                ("text-embedding-3-small", Encoding::Cl100kBase),
            ] {
                assert_eq!(
                    estimator.count_text(model, text).tokens,
                    tiktoken(encoding, text),
                    "{model}: {text}"
                );
            }
        }
        // A special token's spelling is counted as ordinary text: more than one token.
        assert!(Encoding::Cl100kBase.count("<|endoftext|>") > 1);
    }

    #[test]
    fn cookbook_chat_example_counts_129_and_124() {
        // The cookbook's section 6 printed these, equal to the API's prompt_tokens.
        let estimator = Estimator::new();
        let messages = cookbook_messages();
        for (model, expected) in [
            ("gpt-3.5-turbo", 129),
            ("gpt-4-0613", 129),
            ("gpt-4", 129),
            ("gpt-4o", 124),
            ("gpt-4o-mini", 124),
        ] {
            let count = estimator.count_chat(model, &messages);
            assert_eq!(count.tokens, expected, "{model}");
            assert!(count.method.is_tokenizer());
        }
        // And the same from the formula with tiktoken-rs counting each piece of text.
        for (encoding, expected) in [(Encoding::Cl100kBase, 129), (Encoding::O200kBase, 124)] {
            let formula = REPLY_PRIMING
                + messages
                    .iter()
                    .map(|m| {
                        TOKENS_PER_MESSAGE
                            + tiktoken(encoding, m.role)
                            + tiktoken(encoding, m.content)
                            + m.name
                                .map_or(0, |n| tiktoken(encoding, n) + TOKENS_PER_NAME)
                    })
                    .sum::<u64>();
            assert_eq!(formula, expected, "{encoding}");
        }
    }

    #[test]
    fn heuristic_errs_high_on_ordinary_text() {
        for &(name, text) in ORDINARY {
            let estimate = heuristic_tokens(text);
            for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
                let exact = tiktoken(encoding, text);
                assert!(
                    estimate >= exact,
                    "{name}: heuristic {estimate} < {encoding} {exact}"
                );
            }
        }
        // Not wildly high on English and code: at most 1.6x (documented: 1.3x to 1.45x).
        for text in [PROSE, CODE] {
            let exact = tiktoken(Encoding::Cl100kBase, text);
            let estimate = heuristic_tokens(text);
            assert!(
                estimate * 10 <= exact * 16,
                "heuristic {estimate} vs cl100k_base {exact}: above 1.6x"
            );
        }
        // The documented exception: high-entropy text is under-estimated, but never below a
        // quarter of its bytes.
        let exact = tiktoken(Encoding::Cl100kBase, BASE64);
        let estimate = heuristic_tokens(BASE64);
        assert!(estimate < exact, "base64: {estimate} vs {exact}");
        assert!(estimate >= (BASE64.len() as u64).div_ceil(4));
    }

    #[test]
    fn counting_is_the_same_on_every_thread() {
        let estimator = Estimator::new();
        estimator.preload_encoders();
        let messages = cookbook_messages();
        let expected: Vec<u64> = ["gpt-4o", "gpt-4"]
            .iter()
            .map(|m| estimator.count_chat(m, &messages).tokens)
            .collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let estimator = estimator.clone();
                let messages = &messages;
                let expected = &expected;
                s.spawn(move || {
                    for _ in 0..50 {
                        let got: Vec<u64> = ["gpt-4o", "gpt-4"]
                            .iter()
                            .map(|m| estimator.count_chat(m, messages).tokens)
                            .collect();
                        assert_eq!(&got, expected);
                    }
                });
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Output reservations

#[test]
fn output_is_max_tokens_or_the_default_without_learning() {
    let estimator = Estimator::new();
    let r = estimator.reserve_output("gpt-4o", Some(1_000));
    assert_eq!((r.tokens, r.source), (1_000, OutputSource::MaxTokens));
    let r = estimator.reserve_output("gpt-4o", None);
    assert_eq!(
        (r.tokens, r.source),
        (DEFAULT_MAX_TOKENS, OutputSource::DefaultMaxTokens)
    );
    // Observations are ignored when learning is off.
    for _ in 0..1_000 {
        estimator.observe_output("gpt-4o", 10);
    }
    assert_eq!(estimator.output_stats("gpt-4o"), None);
    assert_eq!(
        estimator.reserve_output("gpt-4o", Some(1_000)).tokens,
        1_000
    );

    let estimator = Estimator::builder()
        .default_max_tokens(512)
        .build()
        .expect("valid");
    assert_eq!(estimator.reserve_output("gpt-4o", None).tokens, 512);
}

fn learning(min: usize, window: usize, floor: u64) -> Estimator {
    Estimator::builder()
        .learn_output(
            OutputLearning::new()
                .quantile(0.99)
                .window(window)
                .min_observations(min)
                .floor(floor),
        )
        .build()
        .expect("valid learning")
}

#[test]
fn learned_output_needs_its_minimum_observations() {
    let estimator = learning(10, 100, 1);
    for i in 0..9 {
        estimator.observe_output("m", 100 + i);
        let r = estimator.reserve_output("m", Some(2_000));
        assert_eq!(
            (r.tokens, r.source),
            (2_000, OutputSource::MaxTokens),
            "after {}",
            i + 1
        );
        let stats = estimator.output_stats("m").expect("observed");
        assert!(!stats.trusted);
        assert_eq!(stats.observations as u64, i + 1);
    }
    estimator.observe_output("m", 109);
    let r = estimator.reserve_output("m", Some(2_000));
    // p99 of 10 observations (100..=109) by nearest rank: the 10th, 109.
    assert_eq!(
        (r.tokens, r.source),
        (109, OutputSource::Learned { observations: 10 })
    );
    assert!(estimator.output_stats("m").expect("observed").trusted);
    // Other models are not affected.
    let other = estimator.reserve_output("other", Some(2_000));
    assert_eq!(
        (other.tokens, other.source),
        (2_000, OutputSource::MaxTokens)
    );
}

#[test]
fn learned_output_has_a_floor_and_a_cap() {
    let estimator = learning(5, 50, 64);
    for _ in 0..50 {
        estimator.observe_output("short", 3);
        estimator.observe_output("long", 5_000);
    }
    // The floor raises a learned figure below it ...
    assert_eq!(estimator.reserve_output("short", Some(1_000)).tokens, 64);
    // ... but max_tokens caps even the floor: never more than the model may write.
    assert_eq!(estimator.reserve_output("short", Some(16)).tokens, 16);
    // The cap is max_tokens, or the default when none is given.
    let r = estimator.reserve_output("long", Some(1_000));
    assert_eq!(
        (r.tokens, r.source),
        (1_000, OutputSource::Learned { observations: 50 })
    );
    assert_eq!(
        estimator.reserve_output("long", None).tokens,
        DEFAULT_MAX_TOKENS
    );
    assert_eq!(estimator.reserve_output("long", Some(8_000)).tokens, 5_000);
    assert_eq!(
        estimator
            .output_stats("long")
            .expect("observed")
            .quantile_tokens,
        5_000
    );
}

#[test]
fn learned_output_converges_to_the_quantile_of_the_recent_window() {
    let window = 1_000;
    let estimator = learning(100, window, 1);
    // Uniform in 0..2_000: the 99th percentile is about 1_980.
    let first: Vec<u64> = lcg(7, 2_000).take(5_000).collect();
    for (i, &v) in first.iter().enumerate() {
        estimator.observe_output("m", v);
        if i + 1 >= 100 && (i + 1) % 250 == 0 {
            let kept = &first[(i + 1).saturating_sub(window)..=i];
            let r = estimator.reserve_output("m", Some(10_000));
            assert_eq!(r.tokens, nearest_rank(kept, 0.99), "after {}", i + 1);
        }
    }
    let learned = estimator.reserve_output("m", Some(10_000)).tokens;
    assert!(
        (1_940..=2_000).contains(&learned),
        "p99 of U(0, 2000) learned as {learned}"
    );

    // The outputs shrink: within one window the reservation follows them down.
    let second: Vec<u64> = lcg(11, 200).take(window).collect();
    for &v in &second {
        estimator.observe_output("m", v);
    }
    let stats = estimator.output_stats("m").expect("observed");
    assert_eq!(
        stats.observations, window,
        "memory is bounded by the window"
    );
    assert_eq!(stats.quantile_tokens, nearest_rank(&second, 0.99));
    assert!(stats.quantile_tokens < 200);
}

#[test]
fn learning_is_validated() {
    let build = |l: OutputLearning| Estimator::builder().learn_output(l).build().map(|_| ());
    for q in [0.0, -0.5, 1.01, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                build(OutputLearning::new().quantile(q)),
                Err(EstimatorError::BadQuantile { .. })
            ),
            "quantile {q}"
        );
    }
    assert_eq!(build(OutputLearning::new().quantile(1.0)), Ok(()));
    assert_eq!(
        build(OutputLearning::new().window(0)),
        Err(EstimatorError::ZeroWindow)
    );
    assert_eq!(
        build(OutputLearning::new().window(10).min_observations(11)),
        Err(EstimatorError::BadMinObservations {
            min_observations: 11,
            window: 10
        })
    );
    assert_eq!(
        build(OutputLearning::new().min_observations(0)),
        Err(EstimatorError::BadMinObservations {
            min_observations: 0,
            window: 512
        })
    );
    let message = build(OutputLearning::new().quantile(99.0))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("99") && message.contains("0.99"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// Learned input scaling

/// Off by default; on, a model's heuristic counts follow the p99 of what the provider counted
/// over the heuristic's own count once trusted, within the window; a model counted with its
/// tokenizer is never scaled.
#[test]
fn input_counts_follow_what_the_provider_counted() {
    let text = "Summarise the attached quarterly report in three short bullet points, please.";
    let model = "claude-sonnet-4-5";
    let plain = Estimator::new();
    let raw = plain.count_text(model, text).tokens;
    plain.observe_input(model, raw, raw / 2);
    assert_eq!(
        plain.count_text(model, text).tokens,
        raw,
        "learning is off by default"
    );
    assert_eq!(plain.input_stats(model), None);

    let estimator = Estimator::builder()
        .learn_input(InputLearning::new().window(100).min_observations(20))
        .build()
        .unwrap();
    // The provider counts 70% to 80% of the heuristic: the factor is the p99, 0.80.
    for i in 0..19 {
        estimator.observe_input(model, raw, raw * (70 + i % 11) / 100);
    }
    assert_eq!(
        estimator.count_text(model, text).tokens,
        raw,
        "not trusted yet"
    );
    estimator.observe_input(model, raw, raw * 80 / 100);
    let stats = estimator.input_stats(model).unwrap();
    assert!(
        stats.trusted && (0.79..=0.80).contains(&stats.factor),
        "{stats:?}"
    );
    let scaled = estimator.count_text(model, text).tokens;
    assert!(
        scaled >= raw * 79 / 100 && scaled <= raw * 80 / 100 + 1,
        "{scaled} of {raw}"
    );
    for _ in 0..200 {
        estimator.observe_input(model, raw, raw * 80 / 100);
    }
    let again = estimator.input_stats(model).unwrap();
    assert!((0.79..=0.80).contains(&again.factor), "{again:?}");
    assert_eq!(again.observations, 100, "memory is bounded by the window");
    // Prompts that the provider counts above the heuristic (base64, say) raise it.
    for _ in 0..100 {
        estimator.observe_input(model, raw, raw * 3 / 2);
    }
    assert!(estimator.count_text(model, text).tokens >= raw * 3 / 2);
    // Chat counts are scaled too.
    let messages = [ChatMessage::user(text)];
    assert!(
        estimator.count_chat(model, &messages).tokens > plain.count_chat(model, &messages).tokens
    );
    #[cfg(feature = "tiktoken")]
    {
        let exact = estimator.count_text("gpt-4o", text).tokens;
        for _ in 0..100 {
            estimator.observe_input("gpt-4o", exact, exact / 2);
        }
        assert_eq!(estimator.count_text("gpt-4o", text).tokens, exact);
        assert_eq!(estimator.input_stats("gpt-4o"), None);
    }
}

/// What a request body gives to observe: the heuristic's own count, whatever factor is in
/// force (so a factor never feeds on itself), and nothing for a body with images (a fixed
/// reservation the heuristic did not count) or when learning is off.
#[cfg(feature = "json")]
#[test]
fn a_request_gives_the_heuristics_own_count_to_learn_from() {
    use tokengate::estimate::ChatRequest;
    let body = serde_json::json!({"model": "claude-x", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Name three prime numbers, please."}]});
    let chat = ChatRequest::from_value(None, &body).unwrap();
    assert_eq!(
        Estimator::new().heuristic_input(&chat),
        None,
        "learning is off"
    );
    let estimator = Estimator::builder()
        .learn_input(InputLearning::new().min_observations(1))
        .build()
        .unwrap();
    let heuristic = estimator.heuristic_input(&chat).unwrap();
    assert_eq!(heuristic, chat.estimate(&Estimator::new()).input.tokens);
    estimator.observe_input("claude-x", heuristic, heuristic / 2);
    // The factor is now a half; the count to learn from is the heuristic's still.
    assert!(chat.estimate(&estimator).input.tokens < heuristic);
    assert_eq!(estimator.heuristic_input(&chat), Some(heuristic));
    let image = serde_json::json!({"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user",
        "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]});
    let chat = ChatRequest::from_value(None, &image).unwrap();
    assert!(chat.extra_tokens > 0);
    assert_eq!(estimator.heuristic_input(&chat), None);
}

#[test]
fn input_learning_is_validated() {
    let build = |l: InputLearning| Estimator::builder().learn_input(l).build().map(|_| ());
    assert!(matches!(
        build(InputLearning::new().quantile(0.0)),
        Err(EstimatorError::BadQuantile { .. })
    ));
    assert_eq!(
        build(InputLearning::new().window(0)),
        Err(EstimatorError::ZeroWindow)
    );
    assert!(matches!(
        build(InputLearning::new().window(10).min_observations(11)),
        Err(EstimatorError::BadMinObservations { .. })
    ));
    assert_eq!(build(InputLearning::new()), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Thread safety

#[test]
fn estimator_is_shareable() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Estimator>();
}

#[test]
fn concurrent_observations_are_all_kept_and_estimates_stay_in_range() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 60;
    let estimator = learning(50, 512, 10);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let estimator = estimator.clone();
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    estimator.observe_output("shared", t * 1_000 + i);
                    estimator.observe_output(&format!("own-{t}"), i);
                    let r = estimator.reserve_output("shared", Some(5_000));
                    match r.source {
                        OutputSource::MaxTokens => assert_eq!(r.tokens, 5_000),
                        OutputSource::Learned { observations } => {
                            assert!(observations >= 50);
                            assert!((10..=5_000).contains(&r.tokens));
                        }
                        other => panic!("unexpected source {other:?}"),
                    }
                }
            });
        }
    });
    // 480 observations fit in the window: all are kept, whatever the interleaving.
    let all: Vec<u64> = (0..THREADS)
        .flat_map(|t| (0..PER_THREAD).map(move |i| t * 1_000 + i))
        .collect();
    let stats = estimator.output_stats("shared").expect("observed");
    assert_eq!(stats.observations, all.len());
    assert_eq!(stats.quantile_tokens, nearest_rank(&all, 0.99));
    for t in 0..THREADS {
        let own = estimator
            .output_stats(&format!("own-{t}"))
            .expect("observed");
        assert_eq!(own.observations as u64, PER_THREAD);
        assert_eq!(own.quantile_tokens, PER_THREAD - 1);
    }
}
