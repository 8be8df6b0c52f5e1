//! The provider corrects the limiter: a 429 pauses it (waiters keep their order and are admitted
//! when the pause ends), and remaining figures below the local view lower it.

use std::time::Duration;

use tokengate::{AcquireError, Cost, Denied, Limiter, ManualClock, Policy, TokioClock};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_waiters_in_order_until_it_ends() {
    // One a second, burst one: the second waiter is paced a second after the first (exact
    // instants: no safety margin).
    let policy = Policy::builder()
        .requests_per_minute(60)
        .margin(Duration::ZERO)
        .build()
        .unwrap();
    let limiter = Limiter::with_clock(policy, TokioClock::new());
    let start = tokio::time::Instant::now();
    limiter.pause(ms(1_500));
    assert_eq!(limiter.stats().paused_for, Some(ms(1_500)));
    let (a, b) = tokio::join!(
        async {
            limiter
                .acquire(Cost::request())
                .await
                .unwrap()
                .admitted_at()
        },
        async {
            limiter
                .acquire(Cost::request())
                .await
                .unwrap()
                .admitted_at()
        },
    );
    assert_eq!(
        (Duration::from_nanos(a), Duration::from_nanos(b)),
        (ms(1_500), ms(2_500))
    );
    assert!(start.elapsed() >= ms(2_500));
    let stats = limiter.stats();
    assert_eq!(
        (stats.throttled, stats.paused_for, stats.admitted),
        (1, None, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_shorter_than_the_pause_fails_at_once() {
    let policy = Policy::builder().requests_per_minute(600).build().unwrap();
    let limiter = Limiter::with_clock(policy, TokioClock::new());
    limiter.pause(Duration::from_secs(30));
    let start = tokio::time::Instant::now();
    let err = limiter
        .acquire_timeout(Cost::request(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no sleeping before failing"
    );
    assert_eq!(
        err,
        AcquireError::Paused {
            wait: Duration::from_secs(30),
            timeout: Duration::from_secs(5)
        }
    );
}

#[test]
fn a_shorter_429_does_not_cut_a_longer_pause_and_pause_replaces_it() {
    let limiter = Limiter::with_clock(
        Policy::builder().requests_per_minute(600).build().unwrap(),
        ManualClock::new(),
    );
    let paused = |limiter: &Limiter<ManualClock>| limiter.try_acquire(Cost::request()).unwrap_err();
    limiter.observe_throttled(&report(&[("retry-after", "10")]));
    limiter.observe_throttled(&report(&[("retry-after", "1")]));
    limiter.observe_throttled(&report(&[("retry-after", "0")]));
    assert_eq!(
        paused(&limiter),
        Denied::Paused {
            wait: Duration::from_secs(10)
        }
    );
    assert_eq!(limiter.stats().throttled, 3);
    // `pause` says how long from now, shorter or longer; zero lifts it, as `resume` does.
    limiter.pause(Duration::from_secs(1));
    assert_eq!(
        paused(&limiter),
        Denied::Paused {
            wait: Duration::from_secs(1)
        }
    );
    limiter.pause(Duration::ZERO);
    assert!(limiter.try_acquire(Cost::request()).is_ok());
    limiter.pause(Duration::from_secs(20));
    limiter.resume();
    assert!(limiter.try_acquire(Cost::request()).is_ok());
    assert_eq!(limiter.stats().paused_for, None);
    // An impossible cost still says so during a pause.
    let policy = Policy::builder()
        .input_tokens_per_minute(100)
        .build()
        .unwrap();
    let limiter = Limiter::with_clock(policy, ManualClock::new());
    limiter.pause(Duration::from_secs(10));
    assert!(matches!(
        limiter.try_acquire(Cost::request().input(101)),
        Err(Denied::Never(AcquireError::Exceeds { .. }))
    ));
}

/// One header gone wrong never stops a model for good: a 429's `retry-after` of 584 years, an
/// HTTP date in year 9999, or `pause(Duration::MAX)` pause for the longest allowed (5 minutes
/// by default, or as set), counted; a `retry-after` on a reply that is no 429 pauses nothing.
#[test]
fn a_pause_is_bounded_whatever_the_provider_says() {
    let limiter = Limiter::with_clock(
        Policy::builder().requests_per_minute(600).build().unwrap(),
        ManualClock::new(),
    );
    let max = Limiter::DEFAULT_MAX_PAUSE;
    assert_eq!((limiter.max_pause(), max), (max, Duration::from_secs(300)));
    limiter.observe(&report(&[("retry-after", "99999999999")]));
    assert!(limiter.try_acquire(Cost::request()).is_ok());
    assert_eq!(limiter.stats().paused_for, None);
    for (n, headers) in [
        vec![("retry-after", "99999999999")],
        vec![("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")],
        vec![("retry-after-ms", "18446744073709551615")],
    ]
    .into_iter()
    .enumerate()
    {
        limiter.observe_throttled(&report(&headers));
        let stats = limiter.stats();
        assert_eq!(stats.paused_for, Some(max), "{headers:?}");
        assert_eq!(stats.pauses_clamped, n as u64 + 1);
        limiter.clock().advance(max);
        assert!(limiter.try_acquire(Cost::request()).is_ok(), "{headers:?}");
    }
    limiter.pause(Duration::MAX);
    assert_eq!(limiter.stats().paused_for, Some(max));
    // Shorter or longer, as set.
    limiter.set_max_pause(Duration::from_secs(3_600));
    limiter.observe_throttled(&report(&[("retry-after", "7200")]));
    assert_eq!(limiter.stats().paused_for, Some(Duration::from_secs(3_600)));
    limiter.set_max_pause(Duration::from_secs(2));
    limiter.pause(Duration::from_secs(30));
    assert_eq!(limiter.stats().paused_for, Some(Duration::from_secs(2)));
}

/// A model's pause outlives a reload of the same limits (the provider asked for it) and is
/// lifted by `Key::resume`.
#[test]
fn a_reload_keeps_a_pause_and_resume_lifts_it() {
    let text = "[models.gpt-4o]\nrequests_per_minute = 600";
    let config = || tokengate::config::Config::from_toml_str(text, "limits.toml").unwrap();
    let limiter = Limiter::from_config_with_clock(config(), ManualClock::new());
    let key = limiter.model("gpt-4o");
    key.observe_throttled(&report(&[("retry-after", "30")]));
    limiter.reload(config());
    assert!(matches!(
        key.try_acquire(Cost::request()),
        Err(Denied::Paused { .. })
    ));
    key.resume();
    assert!(key.try_acquire(Cost::request()).is_ok());
}

fn report(headers: &[(&str, &str)]) -> tokengate::feedback::ProviderReport {
    tokengate::feedback::ProviderReport::from_headers(
        headers.iter().copied(),
        std::time::SystemTime::now(),
    )
}

#[test]
fn remaining_below_the_local_view_lowers_it_and_never_raises_it() {
    let policy = Policy::builder()
        .requests_per_minute(500)
        .limit(
            tokengate::Dimension::Tokens,
            tokengate::Limit::per_minute(30_000),
        )
        .build()
        .unwrap();
    let limiter = Limiter::with_clock(policy, ManualClock::new());
    let _p = limiter.try_acquire(Cost::request().input(1_000)).unwrap();
    // The provider has counted 5,000 tokens (another client shares the key): 4,000 more here.
    let lowered = limiter.observe(&report(&[
        ("x-ratelimit-limit-tokens", "30000"),
        ("x-ratelimit-remaining-tokens", "25000"),
        ("x-ratelimit-limit-requests", "500"),
        ("x-ratelimit-remaining-requests", "499"),
    ]));
    assert_eq!(lowered, 4_000);
    let s = limiter.stats();
    assert_eq!(
        (
            s.limits[1].used,
            s.limits[1].lowered,
            s.limits[1].reported_amount
        ),
        (5_000, 4_000, Some(30_000))
    );
    assert_eq!((s.limits[0].used, s.limits[0].lowered), (1, 0));
    // More room there than here changes nothing.
    assert_eq!(
        limiter.observe(&report(&[("x-ratelimit-remaining-tokens", "30000")])),
        0
    );
    assert_eq!(limiter.stats().limits[1].used, 5_000);
    // A different limit there is surfaced, not adopted.
    limiter.observe(&report(&[("x-ratelimit-limit-tokens", "20000")]));
    let s = limiter.stats();
    assert_eq!(
        (s.limits[1].amount, s.limits[1].reported_amount),
        (30_000, Some(20_000))
    );
}

#[test]
fn a_429_pauses_for_its_retry_after_or_until_the_exhausted_reset() {
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(
        Policy::builder().requests_per_minute(600).build().unwrap(),
        clock.clone(),
    );
    limiter.observe_throttled(&report(&[("retry-after-ms", "250")]));
    assert_eq!(
        limiter.try_acquire(Cost::request()).unwrap_err(),
        Denied::Paused { wait: ms(250) }
    );
    clock.advance(ms(250));
    drop(limiter.try_acquire(Cost::request()).unwrap());
    // No retry-after: until the exhausted dimension resets.
    limiter.observe_throttled(&report(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "2s"),
    ]));
    assert_eq!(
        limiter.try_acquire(Cost::request()).unwrap_err().wait(),
        Some(Duration::from_secs(2))
    );
    assert_eq!(limiter.stats().throttled, 2);
}

#[tokio::test(start_paused = true)]
async fn a_pause_during_a_wait_moves_the_head_to_its_end() {
    // One a second, burst one: the second request waits a second; a 3 s pause moves it to 3 s.
    let limiter = Limiter::with_clock(
        Policy::builder().requests_per_minute(60).build().unwrap(),
        TokioClock::new(),
    );
    drop(limiter.try_acquire(Cost::request()).unwrap());
    let waiter = async {
        limiter
            .acquire(Cost::request())
            .await
            .unwrap()
            .admitted_at()
    };
    let pauser = async {
        tokio::time::sleep(ms(500)).await;
        limiter.pause(Duration::from_millis(2_500));
    };
    let (at, ()) = tokio::join!(waiter, pauser);
    assert_eq!(Duration::from_nanos(at), Duration::from_secs(3));
}

#[test]
fn a_reported_limit_is_recorded_and_only_adopted_when_asked() {
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(
        Policy::builder()
            .requests_per_minute(60)
            .tokens_per_minute(10_000)
            // Exact instants and bursts: no safety margin.
            .margin(Duration::ZERO)
            .build()
            .unwrap(),
        clock.clone(),
    );
    let _held = limiter.try_acquire(Cost::request().input(4_000)).unwrap();
    let higher = report(&[
        ("x-ratelimit-limit-requests", "600"),
        ("x-ratelimit-remaining-requests", "599"),
        ("x-ratelimit-limit-tokens", "20000"),
        ("x-ratelimit-remaining-tokens", "16000"),
    ]);
    limiter.observe(&higher);
    let stats = limiter.stats();
    assert_eq!(
        (stats.limits[0].amount, stats.limits[0].reported_amount),
        (60, Some(600))
    );
    assert_eq!(
        (stats.limits[1].amount, stats.limits[1].reported_amount),
        (10_000, Some(20_000))
    );

    limiter.adopt_reported_limits(true);
    limiter.observe(&higher);
    let stats = limiter.stats();
    assert_eq!(stats.limits[0].amount, 600);
    assert_eq!(stats.limits[1].amount, 20_000);
    // What was counted is kept: one request, 4,000 tokens.
    assert_eq!((stats.limits[0].used, stats.limits[1].used), (1, 4_000));
    // None remain at once: the 4,000 are more than the new limit's one-second bucket (333
    // tokens) and are paid back at its pace; the window has 16,000 left.
    assert_eq!(stats.limits[1].remaining, 0);
    // Once the debt is paid (4,000 - 333 at 20,000 a minute: 11.001 s), the request burst
    // follows the new amount: 600 a minute paces at 10 a second.
    clock.advance(Duration::from_secs(11));
    assert!(limiter.try_acquire(Cost::request()).is_err());
    clock.advance(Duration::from_secs(1));
    let mut admitted = 0;
    while limiter.try_acquire(Cost::request()).is_ok() {
        admitted += 1;
    }
    assert_eq!(admitted, 10);
}

#[test]
fn adopting_on_a_key_changes_its_model_only() {
    let config = tokengate::config::Config::from_toml_str(
        "[defaults.model]\nrequests_per_minute = 60\n",
        "limits.toml",
    )
    .unwrap();
    let limiter = Limiter::from_config_with_clock(config, ManualClock::new());
    limiter.adopt_reported_limits(true);
    let a = limiter.model("model-a");
    let b = limiter.model("model-b");
    drop(a.try_acquire(Cost::request()).unwrap());
    drop(b.try_acquire(Cost::request()).unwrap());
    a.observe(&report(&[("x-ratelimit-limit-requests", "6000")]));
    assert_eq!(a.stats()[1].limits[0].amount, 6_000);
    assert_eq!(b.stats()[1].limits[0].amount, 60);
    // A budget made later for another model still gets the configured default.
    assert_eq!(limiter.model("model-c").stats()[1].limits[0].amount, 60);
}

/// Anthropic rounds its token `remaining` figures to the nearest thousand: a figure up to 500
/// below the limiter's own view may be rounding, and lowers nothing; beyond that, the excess
/// over the rounding is charged.
#[test]
fn a_rounded_token_figure_lowers_only_beyond_its_rounding() {
    let limiter = Limiter::with_clock(
        Policy::builder()
            .input_tokens_per_minute(40_000)
            .build()
            .unwrap(),
        ManualClock::new(),
    );
    let _held = limiter.try_acquire(Cost::request().input(700)).unwrap();
    let anthropic = |remaining: &str| {
        report(&[
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", remaining),
        ])
    };
    // 39,300 left, sent as 39,000: read exactly, 300 tokens the provider never counted would
    // be charged; read as at most 39,500 left, nothing is.
    assert_eq!(limiter.observe(&anthropic("39000")), 0);
    assert_eq!(limiter.stats().limits[0].used, 700);
    // 38,000: at most 38,500 left, so at least 1,500 counted there, 800 more than here.
    assert_eq!(limiter.observe(&anthropic("38000")), 800);
    assert_eq!(limiter.stats().limits[0].lowered, 800);
    // OpenAI's figures are exact: one token fewer is one token lowered.
    let exact = report(&[
        ("x-ratelimit-limit-tokens", "40000"),
        ("x-ratelimit-remaining-tokens", "38499"),
    ]);
    let openai = Limiter::with_clock(
        Policy::builder().tokens_per_minute(40_000).build().unwrap(),
        ManualClock::new(),
    );
    let _held = openai.try_acquire(Cost::request().input(1_500)).unwrap();
    assert_eq!(openai.observe(&exact), 1);
}

/// Units another client used, as a lower `remaining` shows them, count in the default
/// algorithm's window, not in its one-second bucket: the provider counted them over the last
/// minute, and most have left a bucket that size.
#[test]
fn units_counted_elsewhere_fill_the_window_not_the_bucket() {
    let limiter = Limiter::with_clock(
        // A whole burst at once: no safety margin.
        Policy::builder()
            .requests_per_minute(600)
            .margin(Duration::ZERO)
            .build()
            .unwrap(),
        ManualClock::new(),
    );
    let lowered = limiter.observe(&report(&[
        ("x-ratelimit-limit-requests", "600"),
        ("x-ratelimit-remaining-requests", "100"),
    ]));
    assert_eq!(lowered, 500);
    // A second's worth (10) still goes at once; the window holds the rest: 90 more.
    for _ in 0..10 {
        drop(limiter.try_acquire(Cost::request()).unwrap());
    }
    let stats = limiter.stats();
    assert_eq!((stats.limits[0].used, stats.limits[0].lowered), (510, 500));
}

fn throttled(headers: &[(&str, &str)]) -> tokengate::feedback::ProviderReport {
    report(headers)
}

/// A 429 lowers the limits it reports exhausted to 7/10, once per 2 s (a per-minute limit),
/// never below a tenth; time without one raises them back a twentieth each 5 s.
#[test]
fn a_429_lowers_what_it_names_and_time_raises_it_back() {
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(
        Policy::builder()
            .requests_per_minute(600)
            .tokens_per_minute(60_000)
            .build()
            .unwrap(),
        clock.clone(),
    );
    let amounts = |l: &Limiter<ManualClock>| {
        l.stats()
            .limits
            .iter()
            .map(|s| (s.amount, s.configured_amount, s.decreases))
            .collect::<Vec<_>>()
    };
    let tokens_out = throttled(&[
        ("x-ratelimit-remaining-requests", "300"),
        ("x-ratelimit-remaining-tokens", "0"),
    ]);
    limiter.observe_throttled(&tokens_out);
    assert_eq!(
        amounts(&limiter),
        [(600, 600, 0), (42_000, 60_000, 1)],
        "only tokens"
    );
    // The 429s of calls sent before the first came back teach nothing new.
    clock.advance(ms(1_999));
    limiter.observe_throttled(&tokens_out);
    assert_eq!(amounts(&limiter)[1], (42_000, 60_000, 1));
    clock.advance(ms(1));
    limiter.observe_throttled(&tokens_out);
    assert_eq!(amounts(&limiter)[1], (29_400, 60_000, 2));
    // A 429 that names nothing exhausted lowers every limit of a minute or less.
    clock.advance(ms(2_000));
    limiter.observe_throttled(&throttled(&[("retry-after-ms", "10")]));
    assert_eq!(
        amounts(&limiter),
        [(420, 600, 1), (20_580, 60_000, 3)],
        "everything"
    );
    // Never below a tenth of the configured amount.
    for _ in 0..20 {
        clock.advance(ms(2_000));
        limiter.observe_throttled(&tokens_out);
    }
    assert_eq!(amounts(&limiter)[1].0, 6_000);
    // Back up a twentieth (3,000) each 5 s without a 429, read on the next reply.
    clock.advance(ms(4_999));
    limiter.observe(&report(&[]));
    assert_eq!(amounts(&limiter)[1].0, 6_000);
    clock.advance(ms(1));
    limiter.observe(&report(&[]));
    assert_eq!(amounts(&limiter)[1].0, 9_000);
    // From the floor, back in full after 17 more steps.
    clock.advance(ms(84_999));
    limiter.observe(&report(&[]));
    assert_eq!(amounts(&limiter)[1].0, 57_000);
    clock.advance(ms(1));
    limiter.observe(&report(&[]));
    let back = amounts(&limiter);
    assert_eq!((back[0].0, back[1].0), (600, 60_000));
    // Nothing counted was lost on the way: no admission was made, none is counted.
    assert_eq!(limiter.stats().limits[1].used, 0);
}

/// Permits admitted before a 429 lowered a limit settle that limit on the safe side (what
/// they used beyond the reservation is charged, nothing comes back) and the others as usual.
#[test]
fn permits_from_before_a_lowered_limit_settle_the_rest_as_usual() {
    let limiter = Limiter::with_clock(
        Policy::builder()
            .requests_per_minute(600)
            .input_tokens_per_minute(60_000)
            .output_tokens_per_minute(60_000)
            .build()
            .unwrap(),
        ManualClock::new(),
    );
    let permit = limiter
        .try_acquire(Cost::request().input(500).output(500))
        .unwrap();
    limiter.observe_throttled(&throttled(&[(
        "anthropic-ratelimit-output-tokens-remaining",
        "0",
    )]));
    permit.settle(tokengate::Usage::new().input(100).output(100));
    let stats = limiter.stats();
    assert_eq!(stats.limits[2].amount, 42_000);
    // Input: 400 back. Output: its limit changed since; the 500 stay (with the 59,000 the
    // 429's rounded `remaining` of 0, at most 500, says the provider counted beyond them).
    assert_eq!((stats.limits[1].used, stats.limits[1].refunded), (100, 400));
    let output = &stats.limits[2];
    assert_eq!(
        (output.used, output.refunded, output.lowered),
        (59_500, 0, 59_000)
    );
}

/// A reload puts the configured figures in force again: what 429s taught is forgotten.
#[test]
fn a_reload_forgets_what_429s_taught() {
    let config = || {
        tokengate::config::Config::from_toml_str(
            "[models.m]\nrequests_per_minute = 600\n",
            "limits.toml",
        )
        .unwrap()
    };
    let limiter = Limiter::from_config_with_clock(config(), ManualClock::new());
    let m = limiter.model("m");
    m.observe_throttled(&throttled(&[("x-ratelimit-remaining-requests", "0")]));
    assert_eq!(m.stats()[1].limits[0].amount, 420);
    limiter.reload(config());
    let requests = &m.stats()[1].limits[0];
    assert_eq!((requests.amount, requests.configured_amount), (600, 600));
}
