//! `tokengate::config`: the shipped example files, each kind of mistake (file, line, column,
//! field and message), model resolution, and a parser that never panics.
#![cfg(feature = "config")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use tokengate::config::{Budget, Config, ConfigError, ErrorKind};
use tokengate::{Algorithm, BuildError, Cost, Dimension, Limit, Limiter, ManualClock, Policy};

const FILE: &str = "limits.toml";

/// The keys that set a limit in a policy table, as messages list them.
const LIMIT_KEYS: &str = "requests_per_second, requests_per_minute, requests_per_hour, requests_per_day, \
     input_tokens_per_second, input_tokens_per_minute, input_tokens_per_hour, input_tokens_per_day, \
     output_tokens_per_second, output_tokens_per_minute, output_tokens_per_hour, output_tokens_per_day, \
     tokens_per_second, tokens_per_minute, tokens_per_hour, tokens_per_day, max_in_flight";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, FILE)
}

/// The error of `text`, which must be refused.
fn refuse(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("accepted: {text}\n{config:?}"),
        Err(e) => e,
    }
}

/// The text at an error's line and column.
fn text_at<'t>(text: &'t str, e: &ConfigError) -> &'t str {
    let line = text
        .split('\n')
        .nth(e.line - 1)
        .unwrap_or_else(|| panic!("no line {} in {text:?}", e.line));
    let start = line
        .char_indices()
        .nth(e.column - 1)
        .map_or(line.len(), |(i, _)| i);
    &line[start..]
}

/// Asserts the position and field of `e`, that the text there starts with `token`, and
/// returns the message.
#[track_caller]
fn assert_at(text: &str, e: &ConfigError, line: usize, column: usize, field: &str, token: &str) {
    assert_eq!(e.file, FILE, "{e}");
    assert_eq!((e.line, e.column), (line, column), "{e}");
    assert_eq!(e.field, field, "{e}");
    assert!(
        text_at(text, e).starts_with(token),
        "{e}: the text at {line}:{column} is {:?}, expected it to start with {token:?}",
        text_at(text, e)
    );
    let field_part = if field.is_empty() {
        String::new()
    } else {
        format!("field `{field}`: ")
    };
    assert_eq!(
        e.to_string(),
        format!("{FILE}:{line}:{column}: {field_part}{}", e.message)
    );
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/limits")
}

fn example(name: &str) -> Config {
    Config::from_file(examples_dir().join(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn limits_of(policy: &Policy) -> Vec<(Dimension, Limit)> {
    policy
        .limits()
        .map(|(d, l)| (d.clone(), l.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The shipped examples

#[test]
fn every_shipped_example_parses_and_says_its_numbers_are_examples() {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/limits exists")
        .map(|entry| {
            entry
                .expect("readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".toml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["anthropic-tier1.toml", "bedrock.toml", "openai-tier1.toml"]
    );
    for name in &names {
        let path = examples_dir().join(name);
        let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.source_name(), path.display().to_string());
        assert!(
            config.models().count() + config.families().count() > 0,
            "{name}"
        );
        let text = std::fs::read_to_string(&path).expect("readable");
        let head: String = text.lines().take(5).collect::<Vec<_>>().join("\n");
        assert!(head.starts_with('#'), "{name} starts with a comment");
        assert!(
            head.contains("THE NUMBERS BELOW ARE EXAMPLES") && head.contains("real limits")
                || head.contains("real quotas"),
            "{name}: the top comment says the numbers are examples to replace:\n{head}"
        );
    }
}

#[test]
fn openai_example_resolves_snapshots_to_their_family_and_unknown_models_to_the_default() {
    let config = example("openai-tier1.toml");
    let (budget, policy) = config
        .model_policy("gpt-4o-mini-2024-07-18")
        .expect("covered");
    assert_eq!(budget, Budget::Family("gpt-4o-mini"));
    assert_eq!(
        limits_of(policy),
        [
            (Dimension::Requests, Limit::per_minute(500)),
            (Dimension::Requests, Limit::per_day(10_000)),
            (Dimension::Tokens, Limit::per_minute(200_000)),
        ]
    );
    assert_eq!(
        config.model_policy("gpt-4o-mini").map(|(b, _)| b),
        Some(Budget::Family("gpt-4o-mini"))
    );
    assert_eq!(
        config.model_policy("gpt-4o").map(|(b, _)| b),
        Some(Budget::Model("gpt-4o"))
    );
    let (budget, policy) = config.model_policy("gpt-5").expect("the default");
    assert_eq!(budget, Budget::Default("gpt-5"));
    assert_eq!(policy.max_in_flight(), Some(16));
}

#[test]
fn anthropic_example_has_separate_input_and_output_limits_and_tenants() {
    let config = example("anthropic-tier1.toml");
    let (budget, policy) = config
        .model_policy("claude-sonnet-4-20250514")
        .expect("covered");
    assert_eq!(budget, Budget::Family("claude-sonnet-4"));
    let dims: Vec<Dimension> = policy.limits().map(|(d, _)| d.clone()).collect();
    assert_eq!(
        dims,
        [
            Dimension::Requests,
            Dimension::InputTokens,
            Dimension::OutputTokens
        ]
    );
    assert_eq!(config.tenant_policy("acme").map(|(n, _)| n), Some("acme"));
    let (name, policy) = config.tenant_policy("globex").expect("the default tenant");
    assert_eq!(name, "globex");
    assert_eq!(policy.max_in_flight(), Some(2));
}

#[test]
fn bedrock_example_weighs_output_tokens_five_times() {
    let config = example("bedrock.toml");
    let (budget, policy) = config
        .model_policy("us.anthropic.claude-sonnet-4-20250514-v1:0")
        .expect("covered");
    assert_eq!(budget, Budget::Family("claude-sonnet-4"));
    assert_eq!(policy.limits().count(), 3);
    let limiter = Limiter::with_clock(policy.clone(), ManualClock::new());
    let _permit = limiter
        .try_acquire(Cost::request().input(1_000).output(1_000))
        .expect("admitted");
    let stats = limiter.stats();
    let tokens: Vec<u64> = stats
        .limits
        .iter()
        .filter(|l| l.dimension == Dimension::Tokens)
        .map(|l| l.used)
        .collect();
    assert_eq!(
        tokens,
        [6_000, 6_000],
        "1,000 in + 5 x 1,000 out, per minute and per day"
    );
}

// ---------------------------------------------------------------------------------------------
// The general form and shorthands build the policies they say

#[test]
fn shorthands_and_the_general_form_build_the_same_limits_as_the_builder() {
    let text = r#"
[models."m"]
requests_per_minute = 5_000
requests_per_day = 100_000
input_tokens_per_minute = 30_000
input_tokens_per_day = 1_000_000
output_tokens_per_minute = 8_000
output_tokens_per_day = 200_000
tokens_per_minute = { amount = 2_000_000, input_weight = 2, output_weight = 5 }
tokens_per_day = 90_000_000
max_in_flight = 10

[[models."m".limits]]
dimension = "images"
amount = 50
per = "1m30s"
algorithm = "token_bucket"
burst = 5

[[models."m".limits]]
dimension = "requests"
amount = 10
per = "second"
algorithm = "sliding_window_log"

[[models."m".limits]]
dimension = "tokens"
amount = 7_000
per = "2d12h"
output_weight = 3
"#;
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let (_, policy) = config.model_policy("m").expect("listed");
    let expected = Policy::builder()
        .requests_per_minute(5_000)
        .requests_per_day(100_000)
        .input_tokens_per_minute(30_000)
        .limit(Dimension::InputTokens, Limit::per_day(1_000_000))
        .output_tokens_per_minute(8_000)
        .limit(Dimension::OutputTokens, Limit::per_day(200_000))
        .combined_tokens(Limit::per_minute(2_000_000), 2, 5)
        .tokens_per_day(90_000_000)
        .custom(
            "images",
            Limit::new(50, Duration::from_secs(90))
                .algorithm(Algorithm::TokenBucket)
                .burst(5),
        )
        .limit(
            Dimension::Requests,
            Limit::per_second(10).algorithm(Algorithm::SlidingWindowLog),
        )
        .combined_tokens(Limit::new(7_000, Duration::from_secs(216_000)), 1, 3)
        .max_in_flight(10)
        .build()
        .expect("valid");
    assert_eq!(limits_of(policy), limits_of(&expected));
    assert_eq!(policy.max_in_flight(), Some(10));

    // Weights take effect: 2 x 100 in + 5 x 100 out = 700 on the per-minute tokens limit.
    let limiter = Limiter::with_clock(policy.clone(), ManualClock::new());
    let _permit = limiter
        .try_acquire(Cost::request().input(100).output(100))
        .expect("admitted");
    let used: Vec<u64> = limiter
        .stats()
        .limits
        .iter()
        .filter(|l| l.dimension == Dimension::Tokens)
        .map(|l| l.used)
        .collect();
    assert_eq!(used, [700, 200, 400]);
}

#[test]
fn per_second_and_per_hour_shorthands_build_limits_of_one_second_and_one_hour() {
    let text = r#"
[models.m]
requests_per_second = 10
requests_per_hour = 20_000
input_tokens_per_second = 1_000
input_tokens_per_hour = 2_000_000
output_tokens_per_second = 300
output_tokens_per_hour = 400_000

[models.n]
tokens_per_second = { amount = 5_000, output_weight = 5 }
tokens_per_hour = 9_000_000
"#;
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let (_, m) = config.model_policy("m").expect("listed");
    let second = Duration::from_secs(1);
    let hour = Duration::from_secs(3_600);
    let figures: Vec<(Dimension, u64, Duration)> = m
        .limits()
        .map(|(d, l)| (d.clone(), l.amount(), l.period()))
        .collect();
    assert_eq!(
        figures,
        [
            (Dimension::Requests, 10, second),
            (Dimension::Requests, 20_000, hour),
            (Dimension::InputTokens, 1_000, second),
            (Dimension::InputTokens, 2_000_000, hour),
            (Dimension::OutputTokens, 300, second),
            (Dimension::OutputTokens, 400_000, hour),
        ]
    );
    let (_, n) = config.model_policy("n").expect("listed");
    assert_eq!(
        limits_of(n),
        [
            (Dimension::Tokens, Limit::per_second(5_000)),
            (Dimension::Tokens, Limit::per_hour(9_000_000)),
        ]
    );
    // The output weight of the table form applies: 1 in + 5 x 1 out per second; the integer
    // form per hour counts 1 + 1.
    let limiter = Limiter::with_clock(n.clone(), ManualClock::new());
    let _permit = limiter
        .try_acquire(Cost::request().input(1).output(1))
        .expect("admitted");
    let used: Vec<u64> = limiter.stats().limits.iter().map(|l| l.used).collect();
    assert_eq!(used, [6, 2]);

    // A per-second shorthand and a [[...limits]] entry per "1s" are the same limit twice.
    let text = "[models.x]\nrequests_per_second = 5\n\n[[models.x.limits]]\ndimension = \"requests\"\namount = 1\nper = \"1s\"\n";
    let e = refuse(text);
    assert_at(text, &e, 4, 1, "models.x.limits[0]", "[[models.x.limits]]");
    assert_eq!(e.kind, ErrorKind::Duplicate);
    assert_eq!(
        e.message,
        "a second requests limit per second (the first is `models.x.requests_per_second` at 2:23): keep one, or give them different periods"
    );
}

/// How many costs of `cost` the model `m` of `text` admits at once, on a clock that stands
/// still (at most `cap`).
fn admitted_at_once(text: &str, cost: &Cost, cap: usize) -> usize {
    // Bursts are the question, not the safety margin: none.
    let text = format!("margin = \"0s\"\n{text}");
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let limiter = Limiter::from_config_with_clock(config, ManualClock::new());
    let model = limiter.model("m");
    let mut permits = Vec::new();
    while permits.len() < cap {
        match model.try_acquire(cost.clone()) {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    permits.len()
}

#[test]
fn the_table_form_of_a_shorthand_sets_its_burst() {
    // The default holds a sixtieth of a per-minute limit at once; a burst of the whole minute
    // admits all of it.
    let plain = "[models.m]\nrequests_per_minute = 600\n";
    let whole_minute = "[models.m]\nrequests_per_minute = { amount = 600, burst = 600 }\n";
    assert_eq!(admitted_at_once(plain, &Cost::request(), 1_000), 10);
    assert_eq!(admitted_at_once(whole_minute, &Cost::request(), 1_000), 600);
    let config = parse(whole_minute).unwrap_or_else(|e| panic!("{e}"));
    let (_, policy) = config.model_policy("m").expect("listed");
    assert_eq!(
        limits_of(policy),
        [(Dimension::Requests, Limit::per_minute(600).burst(600))]
    );

    // Every shorthand has the table form; `burst` may be left out.
    let config = parse(
        "[models.m]\n\
         requests_per_second = { amount = 10, burst = 5 }\n\
         input_tokens_per_minute = { amount = 30_000 }\n\
         output_tokens_per_hour = { amount = 8_000, burst = 100 }\n\
         tokens_per_day = { amount = 1_000_000, burst = 1_000, input_weight = 2 }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, policy) = config.model_policy("m").expect("listed");
    assert_eq!(
        limits_of(policy),
        [
            (Dimension::Requests, Limit::per_second(10).burst(5)),
            (Dimension::InputTokens, Limit::per_minute(30_000)),
            (Dimension::OutputTokens, Limit::per_hour(8_000).burst(100)),
            (Dimension::Tokens, Limit::per_day(1_000_000).burst(1_000)),
        ]
    );

    // Combined tokens take a burst and weights together: 6,000 at once, an output token
    // counting 5 (the default would hold 100 at once).
    let tokens =
        "[models.m]\ntokens_per_minute = { amount = 6_000, burst = 6_000, output_weight = 5 }\n";
    let one_out = Cost::request().output(1);
    assert_eq!(admitted_at_once(tokens, &one_out, 10_000), 1_200);
    let tokens = "[models.m]\ntokens_per_minute = { amount = 6_000, output_weight = 5 }\n";
    assert_eq!(admitted_at_once(tokens, &one_out, 10_000), 20);
}

#[test]
fn a_missing_amount_in_the_table_form_of_a_shorthand_is_named_with_an_example() {
    let text = "[models.x]\nrequests_per_minute = { burst = 600 }\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        2,
        1,
        "models.x.requests_per_minute.amount",
        "requests_per_minute",
    );
    assert_eq!(e.kind, ErrorKind::Missing);
    assert_eq!(
        e.message,
        "is missing: expected the requests per minute, e.g. { amount = 600, burst = 600 }"
    );
}

#[test]
fn an_unknown_key_in_the_table_form_of_a_shorthand_lists_the_allowed_keys() {
    let cases: [(&str, usize, &str, &str); 4] = [
        (
            "[models.x]\nrequests_per_minute = { amount = 600, brust = 600 }\n",
            39,
            "models.x.requests_per_minute.brust",
            "unknown field `brust`: expected one of amount, burst (did you mean `burst`?)",
        ),
        (
            "[models.x]\ninput_tokens_per_hour = { amount = 600, per = \"2h\" }\n",
            41,
            "models.x.input_tokens_per_hour.per",
            "unknown field `per`: expected one of amount, burst; \
             for another algorithm or period, use a [[...limits]] entry instead of the shorthand",
        ),
        (
            "[models.x]\nrequests_per_day = { amount = 600, output_weight = 5 }\n",
            36,
            "models.x.requests_per_day.output_weight",
            "unknown field `output_weight`: expected one of amount, burst; weights apply to combined tokens only, \
             e.g. tokens_per_minute = { amount = 2_000_000, output_weight = 5 }",
        ),
        (
            "[models.x]\ntokens_per_second = { amount = 600, bursts = 6 }\n",
            37,
            "models.x.tokens_per_second.bursts",
            "unknown field `bursts`: expected one of amount, burst, input_weight, output_weight (did you mean `burst`?)",
        ),
    ];
    for (text, column, field, message) in cases {
        let e = refuse(text);
        let token = field.rsplit('.').next().expect("a key");
        assert_at(text, &e, 2, column, field, token);
        assert_eq!(e.kind, ErrorKind::UnknownField, "{e}");
        assert_eq!(e.message, message);
    }
}

#[test]
fn a_typo_of_a_per_second_or_per_hour_shorthand_suggests_it() {
    for (typo, meant) in [
        ("request_per_second", "requests_per_second"),
        ("tokens_per_hours", "tokens_per_hour"),
        ("input_token_per_second", "input_tokens_per_second"),
        ("rps", "requests_per_second"),
    ] {
        let text = format!("[models.x]\n{typo} = {{ amount = 10, burst = 10 }}\n");
        let e = refuse(&text);
        assert_at(&text, &e, 2, 1, &format!("models.x.{typo}"), typo);
        assert_eq!(e.kind, ErrorKind::UnknownField);
        assert_eq!(
            e.message,
            format!(
                "unknown field `{typo}`: expected one of {LIMIT_KEYS}, margin, limits (did you mean `{meant}`?)"
            )
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Resolution

const RESOLUTION: &str = r#"
[defaults.model]
requests_per_minute = 1

[families.mini]
match = ["gpt-4o-mini", "gpt-4o-mini-*"]
requests_per_minute = 2

[models."gpt-4o-mini-2024-07-18"]   # carved out of the family's prefix pattern
requests_per_minute = 3

[models."GPT-4o"]
requests_per_minute = 4

[tenants.acme]
requests_per_minute = 5
"#;

fn rpm(policy: &Policy) -> u64 {
    policy
        .limits()
        .find(|(d, _)| **d == Dimension::Requests)
        .map(|(_, l)| l.amount())
        .expect("a requests limit")
}

#[test]
fn a_listed_model_wins_over_a_family_which_wins_over_the_default() {
    let config = parse(RESOLUTION).unwrap_or_else(|e| panic!("{e}"));
    let resolve = |name| {
        config
            .model_policy(name)
            .map(|(b, p)| (b, rpm(p)))
            .expect("resolved")
    };
    assert_eq!(
        resolve("gpt-4o-mini-2024-07-18"),
        (Budget::Model("gpt-4o-mini-2024-07-18"), 3)
    );
    assert_eq!(resolve("gpt-4o-mini-2025"), (Budget::Family("mini"), 2));
    assert_eq!(resolve("gpt-4o-mini"), (Budget::Family("mini"), 2));
    assert_eq!(
        resolve("gpt-4o-minis"),
        (Budget::Default("gpt-4o-minis"), 1)
    );
    assert_eq!(resolve("o3"), (Budget::Default("o3"), 1));
}

#[test]
fn model_names_and_patterns_ignore_case_and_budgets_keep_the_written_name() {
    let config = parse(RESOLUTION).unwrap_or_else(|e| panic!("{e}"));
    let (budget, policy) = config.model_policy("gpt-4o").expect("listed as GPT-4o");
    assert_eq!((budget, rpm(policy)), (Budget::Model("GPT-4o"), 4));
    assert_eq!(
        config.model_policy("GPT-4O-MINI-X").map(|(b, _)| b),
        Some(Budget::Family("mini"))
    );
    assert_eq!(
        config
            .model_policy("GPT-4O-MINI-2024-07-18")
            .map(|(b, _)| b),
        Some(Budget::Model("gpt-4o-mini-2024-07-18"))
    );
    // Budgets are distinct strings, family or model.
    assert_eq!(Budget::Family("mini").to_string(), "family mini");
    assert_eq!(Budget::Model("GPT-4o").to_string(), "model GPT-4o");
    assert_eq!(Budget::Default("o3").to_string(), "model o3");
    assert_eq!(Budget::Family("mini").name(), "mini");
}

#[test]
fn without_defaults_an_unlisted_model_or_tenant_has_no_policy() {
    let config = parse("[models.a]\nrequests_per_minute = 1\n[tenants.t]\nmax_in_flight = 2\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.model_policy("b").is_none());
    assert!(config.tenant_policy("u").is_none());
    assert!(config.default_model().is_none());
    assert!(config.default_tenant().is_none());
    assert_eq!(
        config
            .tenant_policy("t")
            .map(|(n, p)| (n, p.max_in_flight())),
        Some(("t", Some(2)))
    );
}

#[test]
fn tenant_names_are_compared_exactly_with_the_default_for_others() {
    let config = parse(
        RESOLUTION
            .replace(
                "[tenants.acme]",
                "[defaults.tenant]\nrequests_per_minute = 6\n[tenants.acme]",
            )
            .as_str(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.tenant_policy("acme").map(|(n, p)| (n, rpm(p))),
        Some(("acme", 5))
    );
    assert_eq!(
        config.tenant_policy("ACME").map(|(n, p)| (n, rpm(p))),
        Some(("ACME", 6))
    );
    let names: Vec<&str> = config.tenants().map(|(n, _)| n).collect();
    assert_eq!(names, ["acme"]);
    let models: Vec<&str> = config.models().map(|(n, _)| n).collect();
    assert_eq!(models, ["gpt-4o-mini-2024-07-18", "GPT-4o"]);
    let family = config.families().next().expect("one family");
    assert_eq!(
        (family.name(), family.patterns()),
        (
            "mini",
            &["gpt-4o-mini".to_owned(), "gpt-4o-mini-*".to_owned()][..]
        )
    );
    assert_eq!(rpm(family.policy()), 2);
}

#[test]
fn a_single_pattern_may_be_a_string() {
    let config = parse("[families.f]\nmatch = \"claude-3-5-haiku-*\"\nrequests_per_minute = 1\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config
            .model_policy("claude-3-5-haiku-20241022")
            .map(|(b, _)| b),
        Some(Budget::Family("f"))
    );
    assert!(config.model_policy("claude-3-5-sonnet").is_none());
}

// ---------------------------------------------------------------------------------------------
// Mistakes: unknown fields

#[test]
fn an_unknown_field_lists_the_allowed_ones_and_suggests_the_closest() {
    let text = "[models.gpt-4o]\nrequests_per_minit = 500\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        2,
        1,
        "models.gpt-4o.requests_per_minit",
        "requests_per_minit",
    );
    assert_eq!(e.kind, ErrorKind::UnknownField);
    assert_eq!(
        e.message,
        format!(
            "unknown field `requests_per_minit`: expected one of {LIMIT_KEYS}, margin, limits \
             (did you mean `requests_per_minute`?)"
        )
    );
}

#[test]
fn an_abbreviation_is_unknown_with_the_full_name_suggested() {
    let text = "[tenants.acme]\ntpm = 500\n";
    let e = refuse(text);
    assert_at(text, &e, 2, 1, "tenants.acme.tpm", "tpm");
    assert!(
        e.message
            .starts_with("unknown field `tpm`: expected one of requests_per_second,"),
        "{e}"
    );
    assert!(
        e.message.ends_with("(did you mean `tokens_per_minute`?)"),
        "{e}"
    );
}

#[test]
fn an_unquoted_dotted_model_name_is_explained() {
    let text = "[models.anthropic.claude-3-haiku]\nrequests_per_minute = 5\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        1,
        19,
        "models.anthropic.claude-3-haiku",
        "claude-3-haiku",
    );
    assert_eq!(e.kind, ErrorKind::UnknownField);
    assert!(
        e.message.ends_with(
            "; a name holding a dot must be quoted, e.g. [models.\"anthropic.claude-3-5-sonnet\"]"
        ),
        "{e}"
    );
}

#[test]
fn unknown_fields_at_every_level_are_refused() {
    let cases: [(&str, usize, usize, &str, String); 6] = [
        (
            "requests_per_minute = 5\n",
            1,
            1,
            "requests_per_minute",
            "unknown field `requests_per_minute`: expected one of margin, unlisted_models, account, defaults, models, families, tenants, store; \
             limits belong in a table: [account] (every request), [defaults.model], [models.NAME], [families.NAME] or [tenants.NAME]"
                .to_owned(),
        ),
        (
            "[model.x]\nrequests_per_minute = 5\n",
            1,
            2,
            "model",
            "unknown field `model`: expected one of margin, unlisted_models, account, defaults, models, families, tenants, store (did you mean `models`?)"
                .to_owned(),
        ),
        (
            "[defaults.modle]\nrequests_per_minute = 5\n",
            1,
            11,
            "defaults.modle",
            "unknown field `modle`: expected one of model, tenant (did you mean `model`?)".to_owned(),
        ),
        (
            "[[models.x.limits]]\ndimension = \"requests\"\namount = 5\nper = \"1m\"\nwindow = 3\n",
            5,
            1,
            "models.x.limits[0].window",
            "unknown field `window`: expected one of dimension, amount, per, algorithm, burst, input_weight, output_weight"
                .to_owned(),
        ),
        (
            "[models.x]\ntokens_per_minute = { amount = 5, algorithm = \"token_bucket\" }\n",
            2,
            35,
            "models.x.tokens_per_minute.algorithm",
            "unknown field `algorithm`: expected one of amount, burst, input_weight, output_weight; \
             for another algorithm or period, use a [[...limits]] entry instead of the shorthand"
                .to_owned(),
        ),
        (
            "[models.x]\nrequests_per_minute = 5\nmatch = [\"x\"]\n",
            3,
            1,
            "models.x.match",
            format!("unknown field `match`: expected one of {LIMIT_KEYS}, margin, limits"),
        ),
    ];
    for (text, line, column, field, message) in cases {
        let e = refuse(text);
        let token = field.rsplit('.').next().expect("a key");
        assert_at(text, &e, line, column, field, token);
        assert_eq!(e.kind, ErrorKind::UnknownField, "{e}");
        assert_eq!(e.message, message);
    }
}

// ---------------------------------------------------------------------------------------------
// Mistakes: wrong types

#[test]
fn a_quoted_number_is_a_wrong_type_with_a_hint() {
    let text = "[models.gpt-4o]\nrequests_per_minute = \"5_000\"\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        2,
        23,
        "models.gpt-4o.requests_per_minute",
        "\"5_000\"",
    );
    assert_eq!(e.kind, ErrorKind::WrongType);
    assert_eq!(
        e.message,
        "expected a whole number of at least 1 (requests per minute), found a string: write 5_000 without quotes"
    );
}

#[test]
fn wrong_types_say_what_is_expected_and_what_was_found() {
    let cases: [(&str, usize, usize, &str, &str, &str); 7] = [
        (
            "[models.x]\noutput_tokens_per_day = 1.5\n",
            2,
            25,
            "models.x.output_tokens_per_day",
            "1.5",
            "expected a whole number of at least 1 (tokens per day), found a float",
        ),
        (
            "[models.x]\ntokens_per_minute = true\n",
            2,
            21,
            "models.x.tokens_per_minute",
            "true",
            "expected a whole number of at least 1 (tokens per minute), or { amount = N, input_weight = 1, \
             output_weight = 5 }, found a boolean",
        ),
        (
            "models = 5\n",
            1,
            10,
            "models",
            "5",
            "expected a table of models, e.g. [models.\"gpt-4o\"], found an integer",
        ),
        (
            "[models]\nx = 5\n",
            2,
            5,
            "models.x",
            "5",
            "expected a table of limits for the model (e.g. requests_per_minute = 500), found an integer",
        ),
        (
            "[models.x]\nlimits = { dimension = \"requests\" }\n",
            2,
            10,
            "models.x.limits",
            "{",
            "expected an array of tables, written [[...limits]] with dimension, amount and per, found a table",
        ),
        (
            "[families.f]\nmatch = 5\nrequests_per_minute = 5\n",
            2,
            9,
            "families.f.match",
            "5",
            "expected a model name or pattern, or an array of them, e.g. match = [\"gpt-4o-mini\", \"gpt-4o-mini-*\"] \
             (exact names, or a prefix and a trailing *), found an integer",
        ),
        (
            "[[models.x.limits]]\ndimension = \"requests\"\namount = 5\nper = 60\n",
            4,
            7,
            "models.x.limits[0].per",
            "60",
            "expected a duration such as \"1s\", \"1m\", \"1h\", \"1d\", \"90s\" or \"1m30s\" (units ns, us, ms, s, m, h, d), \
             found an integer: a number needs a unit and quotes, e.g. \"60s\"",
        ),
    ];
    for (text, line, column, field, token, message) in cases {
        let e = refuse(text);
        assert_at(text, &e, line, column, field, token);
        assert_eq!(e.kind, ErrorKind::WrongType, "{e}");
        assert_eq!(e.message, message);
    }
}

// ---------------------------------------------------------------------------------------------
// Mistakes: durations, algorithms, dimensions

#[test]
fn a_duration_with_an_unknown_unit_is_refused() {
    let text = "[[models.x.limits]]\ndimension = \"requests\"\namount = 5\nper = \"5x\"\n";
    let e = refuse(text);
    assert_at(text, &e, 4, 7, "models.x.limits[0].per", "\"5x\"");
    assert_eq!(e.kind, ErrorKind::InvalidValue);
    assert_eq!(
        e.message,
        "expected a duration such as \"1s\", \"1m\", \"1h\", \"1d\", \"90s\" or \"1m30s\" (units ns, us, ms, s, m, h, d), found \"5x\""
    );
    for bad in [
        "\"\"",
        "\"-1m\"",
        "\"1 m\"",
        "\"m\"",
        "\"1d-2h\"",
        "\"60\"",
        "\"1w\"",
    ] {
        let text = text.replace("\"5x\"", bad);
        let e = refuse(&text);
        assert_eq!(
            (e.line, e.column, e.kind.clone()),
            (4, 7, ErrorKind::InvalidValue),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_zero_period_is_refused() {
    let text = "[[models.x.limits]]\ndimension = \"requests\"\namount = 5\nper = \"0s\"\n";
    let e = refuse(text);
    assert_at(text, &e, 4, 7, "models.x.limits[0].per", "\"0s\"");
    assert_eq!(e.kind, ErrorKind::InvalidValue);
    assert!(
        e.message
            .ends_with("found \"0s\": the period must be longer than 0"),
        "{e}"
    );
}

#[test]
fn a_period_beyond_584_years_is_the_librarys_error_at_per() {
    let text = "[[models.x.limits]]\ndimension = \"requests\"\namount = 100\nper = \"300000d\"\n";
    let e = refuse(text);
    assert_at(text, &e, 4, 7, "models.x.limits[0].per", "\"300000d\"");
    assert!(
        matches!(&e.kind, ErrorKind::Policy(b) if matches!(&**b, BuildError::InLimit { source, .. } if matches!(**source, BuildError::PeriodTooLong { .. }))),
        "{e:?}"
    );
    assert_eq!(
        e.message,
        "requests limit 100 per 25920000000s: the period 25920000000s is longer than 584 years: use a shorter period"
    );
    assert!(
        std::error::Error::source(&e).is_some(),
        "the BuildError is the source"
    );
}

#[test]
fn an_unknown_algorithm_lists_the_algorithms_and_suggests_one() {
    let text = "[[models.x.limits]]\ndimension = \"requests\"\namount = 5\nper = \"1m\"\nalgorithm = \"token-bucket\"\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        5,
        13,
        "models.x.limits[0].algorithm",
        "\"token-bucket\"",
    );
    assert_eq!(e.kind, ErrorKind::InvalidValue);
    assert_eq!(
        e.message,
        "expected one of smooth_window, token_bucket, leaky_bucket, sliding_window_log, sliding_window_counter, \
         fixed_window, found \"token-bucket\" (did you mean \"token_bucket\"?)"
    );
}

#[test]
fn a_dimension_resembling_a_builtin_or_in_flight_is_refused() {
    for (name, message) in [
        (
            "Input-Tokens",
            "\"Input-Tokens\" looks like the built-in dimension \"input_tokens\": write dimension = \"input_tokens\" \
             (a name of your own must not resemble requests, input_tokens, output_tokens or tokens)",
        ),
        (
            "request",
            "\"request\" looks like the built-in dimension \"requests\": write dimension = \"requests\" \
             (a name of your own must not resemble requests, input_tokens, output_tokens or tokens)",
        ),
        (
            "in_flight",
            "in_flight is not a rate: write max_in_flight = N in the policy table instead",
        ),
        (
            " images",
            "expected a dimension name without leading or trailing spaces, found \" images\"",
        ),
    ] {
        let text = format!("[[models.x.limits]]\ndimension = \"{name}\"\namount = 5\nper = \"1m\"\n");
        let e = refuse(&text);
        assert_at(&text, &e, 2, 13, "models.x.limits[0].dimension", "\"");
        assert_eq!(e.kind, ErrorKind::InvalidValue);
        assert_eq!(e.message, message);
    }
}

#[test]
fn weights_on_a_dimension_other_than_tokens_are_refused() {
    let text = "[[models.x.limits]]\ndimension = \"requests\"\namount = 5\nper = \"1m\"\noutput_weight = 5\n";
    let e = refuse(text);
    assert_at(text, &e, 5, 17, "models.x.limits[0].output_weight", "5");
    assert_eq!(e.kind, ErrorKind::InvalidValue);
    assert_eq!(
        e.message,
        "weights apply to dimension = \"tokens\" only, and this limit counts `requests`: remove the weight, or count combined tokens"
    );
}

#[test]
fn a_missing_field_of_a_limit_is_named_with_an_example() {
    let text = "[models.x]\nrequests_per_minute = 5\n\n[[models.x.limits]]\ndimension = \"images\"\nper = \"1m\"\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        4,
        1,
        "models.x.limits[0].amount",
        "[[models.x.limits]]",
    );
    assert_eq!(e.kind, ErrorKind::Missing);
    assert_eq!(
        e.message,
        "is missing: expected the units admitted per period, e.g. amount = 30_000"
    );
    let text = "[models.x]\ntokens_per_minute = { output_weight = 5 }\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        2,
        1,
        "models.x.tokens_per_minute.amount",
        "tokens_per_minute",
    );
    assert_eq!(e.kind, ErrorKind::Missing);
}

// ---------------------------------------------------------------------------------------------
// Mistakes: zero and out-of-range figures

#[test]
fn a_zero_rate_is_refused_with_how_to_leave_a_dimension_unlimited() {
    let text = "[models.gpt-4o]\nrequests_per_minute = 5_000\ninput_tokens_per_minute = 0\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        3,
        27,
        "models.gpt-4o.input_tokens_per_minute",
        "0",
    );
    assert_eq!(e.kind, ErrorKind::InvalidValue);
    assert_eq!(
        e.message,
        "expected a whole number of at least 1 (tokens per minute), found 0: a limit of 0 would admit nothing; \
         to leave a dimension unlimited, leave its key out"
    );
}

#[test]
fn zero_negative_and_huge_figures_are_refused_where_written() {
    let cases: [(&str, usize, usize, &str, &str); 6] = [
        (
            "[models.x]\nrequests_per_day = -3\n",
            2,
            20,
            "models.x.requests_per_day",
            "found -3",
        ),
        (
            "[models.x]\nmax_in_flight = 0\n",
            2,
            17,
            "models.x.max_in_flight",
            "(requests in flight), found 0",
        ),
        (
            "[models.x]\nrequests_per_minute = 99_999_999_999_999_999_999\n",
            2,
            23,
            "models.x.requests_per_minute",
            "at most 18446744073709551615, found 99999999999999999999",
        ),
        (
            "[[tenants.t.limits]]\ndimension = \"requests\"\namount = 0\nper = \"1m\"\n",
            3,
            10,
            "tenants.t.limits[0].amount",
            "found 0",
        ),
        (
            "[[tenants.t.limits]]\ndimension = \"requests\"\namount = 1\nper = \"1m\"\nburst = 0\n",
            5,
            9,
            "tenants.t.limits[0].burst",
            "(units (leave `burst` out for the default)), found 0",
        ),
        (
            "[tenants.t]\ntokens_per_day = { amount = 10, input_weight = -1 }\n",
            2,
            48,
            "tenants.t.tokens_per_day.input_weight",
            "expected a whole number of at least 0 (input weight), found -1",
        ),
    ];
    for (text, line, column, field, part) in cases {
        let e = refuse(text);
        let token = text_at(text, &e).to_owned();
        assert_at(text, &e, line, column, field, &token);
        assert!(
            !token.is_empty() && token.as_bytes()[0].is_ascii_digit() || token.starts_with('-'),
            "{e}"
        );
        assert_eq!(e.kind, ErrorKind::InvalidValue, "{e}");
        assert!(e.message.contains(part), "{e}");
    }
}

#[test]
fn a_zero_output_weight_is_the_librarys_error_at_the_weight() {
    let text = "[models.x]\ntokens_per_minute = { amount = 100, output_weight = 0 }\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        2,
        53,
        "models.x.tokens_per_minute.output_weight",
        "0",
    );
    assert_eq!(
        e.kind,
        ErrorKind::Policy(Box::new(BuildError::BadWeight {
            which: "output",
            weight: 0
        }))
    );
    assert_eq!(
        e.message,
        "the output weight of combined tokens is 0: give weights of at least 1 for output (Bedrock: 5) and 0 or more for input, not both 0"
    );
}

#[test]
fn burst_mistakes_point_at_the_burst() {
    let text =
        "[[models.x.limits]]\ndimension = \"requests\"\namount = 100\nper = \"1m\"\nburst = 200\n";
    let e = refuse(text);
    assert_at(text, &e, 5, 9, "models.x.limits[0].burst", "200");
    assert!(
        matches!(&e.kind, ErrorKind::Policy(b) if matches!(&**b, BuildError::InLimit { source, .. }
            if **source == BuildError::BurstAboveAmount { burst: 200, amount: 100 })),
        "{e:?}"
    );
    assert_eq!(
        e.message,
        "requests limit 100 per minute: the burst 200 is above the amount 100: the smooth window never admits more than \
         the amount per period; lower `burst`, or use algorithm = \"token_bucket\""
    );

    let text = "[[models.x.limits]]\ndimension = \"requests\"\namount = 100\nper = \"1m\"\nalgorithm = \"fixed_window\"\nburst = 2\n";
    let e = refuse(text);
    assert_at(text, &e, 6, 9, "models.x.limits[0].burst", "2");
    assert_eq!(e.kind, ErrorKind::InvalidValue);
    assert_eq!(
        e.message,
        "the fixed_window algorithm has no burst: remove `burst`, or use algorithm = \"token_bucket\" or \"smooth_window\""
    );

    let text = "[[models.x.limits]]\ndimension = \"requests\"\namount = 1\nper = \"100000d\"\nalgorithm = \"token_bucket\"\nburst = 3\n";
    let e = refuse(text);
    assert_at(text, &e, 6, 9, "models.x.limits[0].burst", "3");
    assert!(
        matches!(&e.kind, ErrorKind::Policy(b) if matches!(&**b, BuildError::InLimit { source, .. } if matches!(**source, BuildError::BurstTooLarge { burst: 3, amount: 1, .. }))),
        "{e:?}"
    );
    assert!(
        e.message
            .contains("the burst 3 takes more than 584 years to refill"),
        "{e}"
    );
}

#[test]
fn burst_mistakes_in_the_table_form_of_a_shorthand_point_at_the_burst() {
    // A burst of 0.
    let text = "[models.x]\nrequests_per_minute = { amount = 600, burst = 0 }\n";
    let e = refuse(text);
    assert_at(text, &e, 2, 47, "models.x.requests_per_minute.burst", "0");
    assert_eq!(e.kind, ErrorKind::InvalidValue);
    assert_eq!(
        e.message,
        "expected a whole number of at least 1 (units (leave `burst` out for the default)), found 0: \
         a bucket must hold at least 1 unit"
    );
    assert_eq!(
        e.to_string(),
        "limits.toml:2:47: field `models.x.requests_per_minute.burst`: expected a whole number of at least 1 \
         (units (leave `burst` out for the default)), found 0: a bucket must hold at least 1 unit"
    );

    // A burst above the amount: the library's error, at the burst.
    let text = "[models.x]\nrequests_per_minute = 5\ntokens_per_minute = { amount = 60_000, burst = 60_001, output_weight = 5 }\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        3,
        48,
        "models.x.tokens_per_minute.burst",
        "60_001",
    );
    assert!(
        matches!(&e.kind, ErrorKind::Policy(b) if matches!(&**b, BuildError::InLimit { source, .. }
            if **source == BuildError::BurstAboveAmount { burst: 60_001, amount: 60_000 })),
        "{e:?}"
    );
    assert_eq!(
        e.message,
        "tokens limit 60000 per minute: the burst 60001 is above the amount 60000: the smooth window never admits \
         more than the amount per period; lower `burst`, or use a [[...limits]] entry with algorithm = \"token_bucket\""
    );

    // A burst that is not a whole number.
    for (value, found) in [
        ("\"600\"", "found a string: write 600 without quotes"),
        ("1.5", "found a float"),
        ("-2", "found -2"),
    ] {
        let text = format!(
            "[tenants.t]\noutput_tokens_per_second = {{ amount = 600, burst = {value} }}\n"
        );
        let e = refuse(&text);
        assert_at(
            &text,
            &e,
            2,
            52,
            "tenants.t.output_tokens_per_second.burst",
            value,
        );
        assert_eq!(
            e.message,
            format!(
                "expected a whole number of at least 1 (units (leave `burst` out for the default)), {found}"
            )
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Mistakes: duplicates and overlaps

#[test]
fn a_model_listed_twice_ignoring_case_is_refused() {
    let text =
        "[models.gpt-4o]\nrequests_per_minute = 1\n\n[models.GPT-4o]\nrequests_per_minute = 2\n";
    let e = refuse(text);
    assert_at(text, &e, 4, 9, "models.GPT-4o", "GPT-4o");
    assert_eq!(e.kind, ErrorKind::Duplicate);
    assert_eq!(
        e.message,
        "model `GPT-4o` is listed twice: `gpt-4o` at 1:9 is the same model (names are compared ignoring case); keep one"
    );
}

#[test]
fn a_model_listed_twice_exactly_is_a_toml_duplicate_key() {
    let text =
        "[models.gpt-4o]\nrequests_per_minute = 1\n[models.gpt-4o]\nrequests_per_minute = 2\n";
    let e = refuse(text);
    assert_at(text, &e, 3, 9, "models.gpt-4o", "gpt-4o");
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!(
        e.message,
        "duplicate key: `gpt-4o` is already defined in this table; each key and table may be written once"
    );
    let text = "[tenants.t]\nrequests_per_minute = 1\nrequests_per_minute = 2\n";
    let e = refuse(text);
    assert_at(
        text,
        &e,
        3,
        1,
        "tenants.t.requests_per_minute",
        "requests_per_minute",
    );
    assert_eq!(e.kind, ErrorKind::Syntax);
}

#[test]
fn the_same_dimension_and_period_twice_in_one_table_is_refused() {
    let text = "[models.x]\nrequests_per_minute = 5\n\n[[models.x.limits]]\ndimension = \"requests\"\namount = 1\nper = \"60s\"\n";
    let e = refuse(text);
    assert_at(text, &e, 4, 1, "models.x.limits[0]", "[[models.x.limits]]");
    assert_eq!(e.kind, ErrorKind::Duplicate);
    assert_eq!(
        e.message,
        "a second requests limit per minute (the first is `models.x.requests_per_minute` at 2:23): keep one, or give them different periods"
    );
}

#[test]
fn an_exact_name_in_both_models_and_a_family_is_refused() {
    let text = "[models.gpt-4o-mini]\nrequests_per_minute = 1\n\n[families.mini]\nmatch = [\"gpt-4o-mini-*\", \"GPT-4o-mini\"]\nrequests_per_minute = 2\n";
    let e = refuse(text);
    assert_at(text, &e, 5, 27, "families.mini.match[1]", "\"GPT-4o-mini\"");
    assert_eq!(e.kind, ErrorKind::Overlap);
    assert_eq!(
        e.message,
        "`GPT-4o-mini` is also listed as [models.gpt-4o-mini] at 1:9: a model has one budget, so remove it from one of \
         the two (a [models] entry may override a family's prefix pattern, not an exact name)"
    );
}

#[test]
fn families_whose_patterns_overlap_are_refused() {
    // (first family's match, second family's match, the pattern reported, column)
    let cases = [
        (
            "[\"gpt-4o*\"]",
            "[\"gpt-4o-mini\"]",
            "gpt-4o-mini",
            "gpt-4o*",
            10,
        ),
        ("[\"a*\"]", "[\"x\", \"ab*\"]", "ab*", "a*", 15),
        ("[\"ab*\"]", "[\"A*\"]", "A*", "ab*", 10),
        ("[\"ab\"]", "\"AB\"", "AB", "ab", 9),
    ];
    for (first, second, reported, other, column) in cases {
        let text = format!(
            "[families.one]\nmatch = {first}\nrequests_per_minute = 1\n\n[families.two]\nmatch = {second}\nrequests_per_minute = 1\n"
        );
        let e = refuse(&text);
        let field = if second.starts_with('[') {
            format!("families.two.match[{}]", usize::from(column == 15))
        } else {
            "families.two.match".to_owned()
        };
        assert_at(&text, &e, 6, column, &field, "\"");
        assert_eq!(e.kind, ErrorKind::Overlap);
        assert_eq!(
            e.message,
            format!(
                "pattern \"{reported}\" overlaps \"{other}\" of family `one` (at 2:10): a model would belong to two budgets; \
                 make the patterns disjoint (list exact names, or a longer prefix)"
            )
        );
    }
    // Disjoint patterns are fine, and so are overlaps within one family.
    parse("[families.one]\nmatch = [\"gpt-4o-mini\", \"gpt-4o-mini-*\", \"gpt-4o-mini-2024*\"]\nrequests_per_minute = 1\n\
           [families.two]\nmatch = [\"gpt-4o\", \"gpt-4o-2024*\"]\nrequests_per_minute = 1\n")
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn malformed_patterns_and_names_are_refused() {
    let cases: [(&str, usize, usize, &str, &str); 6] = [
        (
            "[families.f]\nmatch = \"*\"\nrequests_per_minute = 1\n",
            2,
            9,
            "families.f.match",
            "found \"*\": a bare `*` would match every model: give a prefix, or use [defaults.model] for models not listed",
        ),
        (
            "[families.f]\nmatch = [\"gpt*4o\"]\nrequests_per_minute = 1\n",
            2,
            10,
            "families.f.match[0]",
            "found \"gpt*4o\": `*` may only end a pattern, once",
        ),
        (
            "[families.f]\nmatch = []\nrequests_per_minute = 1\n",
            2,
            9,
            "families.f.match",
            "found an empty array",
        ),
        (
            "[families.f]\nmatch = [\"\"]\nrequests_per_minute = 1\n",
            2,
            10,
            "families.f.match[0]",
            "found \"\": a pattern is not empty and has no leading or trailing spaces",
        ),
        (
            "[models.\"gpt-*\"]\nrequests_per_minute = 1\n",
            1,
            9,
            "models.\"gpt-*\"",
            "a model name cannot hold `*`: a pattern belongs in a family, e.g. [families.NAME] with match = [\"gpt-*\"]",
        ),
        (
            "[models.\"gpt-4o \"]\nrequests_per_minute = 1\n",
            1,
            9,
            "models.\"gpt-4o \"",
            "expected a model name that is not empty and has no leading or trailing spaces, found \"gpt-4o \"",
        ),
    ];
    for (text, line, column, field, part) in cases {
        let e = refuse(text);
        assert_at(text, &e, line, column, field, "");
        assert_eq!(e.kind, ErrorKind::InvalidValue, "{e}");
        assert!(e.message.ends_with(part), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Mistakes: empty tables, syntax, files

#[test]
fn an_empty_policy_table_is_refused() {
    let text = "[models.gpt-4o]\n# limits to come\n";
    let e = refuse(text);
    assert_at(text, &e, 1, 9, "models.gpt-4o", "gpt-4o");
    assert_eq!(e.kind, ErrorKind::Empty);
    assert_eq!(
        e.message,
        format!("the model sets no limit: expected at least one of {LIMIT_KEYS}, or a [[...limits]] entry")
    );
    let text = "[defaults.tenant]\n";
    let e = refuse(text);
    assert_at(text, &e, 1, 11, "defaults.tenant", "tenant");
    assert!(
        e.message
            .starts_with("the default tenant policy sets no limit"),
        "{e}"
    );
}

#[test]
fn a_family_needs_match() {
    let text = "[families.mini]\nrequests_per_minute = 1\n";
    let e = refuse(text);
    assert_at(text, &e, 1, 11, "families.mini.match", "mini");
    assert_eq!(e.kind, ErrorKind::Missing);
    assert!(e.message.starts_with("a family needs `match`"), "{e}");
}

#[test]
fn a_file_with_no_limit_is_refused() {
    for text in ["", "# nothing yet\n", "[models]\n[tenants]\n"] {
        let e = refuse(text);
        assert_at(text, &e, 1, 1, "", "");
        assert_eq!(e.kind, ErrorKind::Empty);
        assert_eq!(
            e.message,
            "the file sets no limit: expected at least one of [account], [defaults.model], [models.NAME], \
             [families.NAME], [tenants.NAME] or [defaults.tenant]"
        );
    }
}

#[test]
fn a_syntax_error_has_its_position() {
    let text = "[models.x]\nrequests_per_minute = \n";
    let e = refuse(text);
    assert_at(text, &e, 2, 23, "", "");
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert!(e.message.starts_with("invalid TOML: "), "{e}");
    // Columns count characters, not bytes.
    let text = "[models]\n\"ü\" = { requests_per_minute = \"é\" }\n";
    let e = refuse(text);
    assert_at(text, &e, 2, 31, "models.\"ü\".requests_per_minute", "\"é\"");
}

#[test]
fn an_unreadable_file_names_the_path() {
    let path = std::env::temp_dir().join(format!(
        "tokengate-config-missing-{}.toml",
        std::process::id()
    ));
    let e = Config::from_file(&path).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io(std::io::ErrorKind::NotFound));
    assert_eq!(
        (e.file.as_str(), e.line, e.column, e.field.as_str()),
        (path.display().to_string().as_str(), 0, 0, "")
    );
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read the file: ", path.display())),
        "{e}"
    );
}

/// Reading a file is bounded: a directory, a FIFO and `/dev/zero` are refused without being
/// read (a FIFO would wait for a writer, `/dev/zero` never ends), and so is a file above
/// 16 MiB; text that is not UTF-8 is an error too. Each names the path.
#[test]
fn only_a_regular_file_of_at_most_16_mib_is_read() {
    let dir = std::env::temp_dir().join(format!("tokengate-config-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("writable temp dir");
    let fifo = dir.join("fifo.toml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'#'; 16 * 1024 * 1024 + 1]).expect("writable");
    let latin1 = dir.join("latin1.toml");
    std::fs::write(&latin1, b"# caf\xe9\n[models.x]\nrequests_per_minute = 1\n").expect("writable");
    let mut cases = vec![
        (dir.clone(), "not a regular file"),
        (std::path::PathBuf::from("/dev/zero"), "not a regular file"),
        (big.clone(), "larger than 16777216 bytes"),
        (latin1.clone(), "not UTF-8"),
    ];
    if made.is_ok_and(|s| s.success()) {
        cases.push((fifo.clone(), "not a regular file"));
    }
    for (path, says) in cases {
        let e = Config::from_file(&path).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Io(_)), "{e}");
        assert_eq!(e.file, path.display().to_string());
        assert!(e.to_string().contains(says), "{}: {e}", path.display());
    }
    // Exactly 16 MiB of comments and a limit is still a limits file.
    let mut text = vec![b'#'; 16 * 1024 * 1024 - 40];
    text.extend_from_slice(b"\n[models.x]\nrequests_per_minute = 1\n");
    std::fs::write(&big, &text).expect("writable");
    assert!(Config::from_file(&big).is_ok());
    std::fs::remove_dir_all(&dir).expect("removable");
}

#[test]
fn a_mistake_in_a_file_names_the_path() {
    let path =
        std::env::temp_dir().join(format!("tokengate-config-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "[models.x]\nrequests_per_minute = 0\n").expect("writable temp dir");
    let e = Config::from_file(&path).unwrap_err();
    std::fs::remove_file(&path).expect("removable");
    assert_eq!(e.file, path.display().to_string());
    assert!(
        e.to_string().starts_with(&format!(
            "{}:2:23: field `models.x.requests_per_minute`: ",
            path.display()
        )),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Never panics

/// Fragments of the schema, right and wrong, to reach deep into the reader.
fn fragment() -> impl Strategy<Value = String> {
    let headers = prop::sample::select(vec![
        "[defaults.model]",
        "[defaults.tenant]",
        "[defaults]",
        "[models.\"gpt-4o\"]",
        "[models.GPT-4o]",
        "[models.\"a.b\"]",
        "[models.\"\"]",
        "[families.f]",
        "[families.g]",
        "[tenants.t]",
        "[[models.\"gpt-4o\".limits]]",
        "[[families.f.limits]]",
        "[[tenants.t.limits]]",
        "[models]",
        "[x]",
    ]);
    let keys = prop::sample::select(vec![
        "requests_per_minute",
        "requests_per_day",
        "requests_per_second",
        "input_tokens_per_minute",
        "input_tokens_per_hour",
        "output_tokens_per_day",
        "tokens_per_second",
        "tokens_per_minute",
        "tokens_per_day",
        "max_in_flight",
        "match",
        "dimension",
        "amount",
        "per",
        "algorithm",
        "burst",
        "input_weight",
        "output_weight",
        "limits",
        "model",
        "rpm",
    ]);
    let values = prop::sample::select(vec![
        "0",
        "1",
        "-1",
        "500",
        "1.5",
        "99999999999999999999",
        "18446744073709551615",
        "\"1m\"",
        "\"0s\"",
        "\"300000d\"",
        "\"5x\"",
        "\"requests\"",
        "\"tokens\"",
        "\"images\"",
        "\"in_flight\"",
        "\"token_bucket\"",
        "\"fixed_window\"",
        "\"gpt-4o*\"",
        "\"*\"",
        "[\"gpt-4o\", \"gpt-4o-*\"]",
        "[\"gpt*\"]",
        "[]",
        "{ amount = 5, output_weight = 0 }",
        "{ amount = 5, input_weight = 2 }",
        "{ output_weight = 5 }",
        "{ amount = 5, burst = 5 }",
        "{ amount = 5, burst = 0 }",
        "{ amount = 5, burst = 6 }",
        "{ amount = 5, burst = 18446744073709551615, input_weight = 3 }",
        "{ burst = 5 }",
        "{}",
        "true",
        "1979-05-27T07:32:00Z",
        "[{ dimension = \"requests\", amount = 5, per = \"1s\" }]",
    ]);
    prop_oneof![
        headers.prop_map(str::to_owned),
        (keys, values).prop_map(|(k, v)| format!("{k} = {v}")),
    ]
}

/// The properties every result has: errors point inside the text, and a parsed config
/// resolves every model it lists to that model.
fn check(text: &str) {
    match Config::from_toml_str(text, "fuzz.toml") {
        Ok(config) => {
            for (name, _) in config.models() {
                assert_eq!(
                    config.model_policy(name).map(|(b, _)| b),
                    Some(Budget::Model(name))
                );
            }
            for (name, _) in config.tenants() {
                assert_eq!(config.tenant_policy(name).map(|(n, _)| n), Some(name));
            }
        }
        Err(e) => {
            let lines = text.split('\n').count();
            assert!(e.line >= 1 && e.line <= lines, "{e} in {lines} lines");
            let line = text.split('\n').nth(e.line - 1).unwrap_or("");
            assert!(e.column >= 1 && e.column <= line.chars().count() + 1, "{e}");
            assert!(!e.message.is_empty());
            assert!(e.to_string().starts_with("fuzz.toml:"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn toml_like_strings_never_panic(text in "[\\[\\]\"'=.,{}*a-z0-9_ \n#-]{0,200}") {
        check(&text);
    }

    #[test]
    fn schema_fragments_never_panic(parts in prop::collection::vec(fragment(), 0..24)) {
        check(&parts.join("\n"));
    }
}

#[test]
fn the_schema_in_the_module_docs_parses() {
    let source = include_str!("../src/config/mod.rs");
    let toml: String = source
        .lines()
        .skip_while(|l| *l != "//! ```toml")
        .skip(1)
        .take_while(|l| *l != "//! ```")
        .map(|l| {
            l.strip_prefix("//!")
                .unwrap_or(l)
                .strip_prefix(' ')
                .unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(toml.contains("[[models.\"gpt-4o\".limits]]"), "{toml}");
    let config = parse(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let (budget, policy) = config.model_policy("gpt-4o").expect("listed");
    assert_eq!(budget, Budget::Model("gpt-4o"));
    assert_eq!(policy.limits().count(), 4);
    assert_eq!(
        config
            .model_policy("anthropic.claude-3-5-sonnet")
            .map(|(b, _)| b),
        Some(Budget::Model("anthropic.claude-3-5-sonnet"))
    );
    assert_eq!(
        config.default_model().and_then(Policy::max_in_flight),
        Some(10)
    );
}

#[test]
fn deep_nesting_is_a_syntax_error_not_a_stack_overflow() {
    for text in [
        format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("a = {}1{}", "{b = ".repeat(50_000), "}".repeat(50_000)),
    ] {
        let e = refuse(&text);
        assert_eq!((e.line, &e.kind), (1, &ErrorKind::Syntax), "{e}");
        assert!(e.message.contains("recursion"), "{e}");
    }
}

#[test]
fn the_account_table_is_a_policy_like_the_others() {
    let config = tokengate::config::Config::from_toml_str(
        "[account]\nrequests_per_minute = 10_000\ntokens_per_day = 50_000_000\n",
        "limits.toml",
    )
    .unwrap();
    let account = config.account().expect("[account] is read");
    assert_eq!(account.limits().count(), 2);
    assert!(config.default_model().is_none());
    let text = "[account]\nrequests_per_minute = 0\n";
    let e = refuse(text);
    assert_at(text, &e, 2, 23, "account.requests_per_minute", "");
}

/// The margin of each limit of `model`'s policy, in nanoseconds.
fn margins(config: &Config, model: &str) -> Vec<u64> {
    let (_, policy) = config.model_policy(model).expect("covered");
    policy
        .limits()
        .map(|(_, l)| tokengate::core::LimitRule::new(l).unwrap().margin())
        .collect()
}

#[test]
fn a_margin_in_the_file_or_a_table_is_every_limits_margin() {
    let config = parse(
        "margin = \"10ms\"\n\
         [models.a]\n\
         requests_per_minute = 600\n\
         tokens_per_minute = 60_000\n\
         [models.b]\n\
         margin = \"0s\"\n\
         requests_per_minute = 600\n\
         [models.c]\n\
         margin = \"150ms\"\n\
         requests_per_minute = 600\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(margins(&config, "a"), [10_000_000, 10_000_000]);
    assert_eq!(margins(&config, "b"), [0]);
    assert_eq!(margins(&config, "c"), [150_000_000]);
    // Without one, the library's default.
    let plain = parse("[models.a]\nrequests_per_minute = 600\n").unwrap();
    assert_eq!(
        margins(&plain, "a"),
        [Limit::DEFAULT_MARGIN.as_nanos() as u64]
    );
}

#[test]
fn a_bad_margin_is_an_error_at_its_field() {
    let text = "[models.a]\nrequests_per_minute = 600\nmargin = 50\n";
    let e = refuse(text);
    assert_at(text, &e, 3, 10, "models.a.margin", "50");
    assert!(
        e.to_string().contains("a number needs a unit and quotes"),
        "{e}"
    );
    // A margin that is not shorter than a limit's period.
    let text = "margin = \"2s\"\n[models.a]\nrequests_per_second = 10\n";
    let e = refuse(text);
    assert!(
        e.to_string().contains("is not shorter than the period"),
        "{e}"
    );
}
