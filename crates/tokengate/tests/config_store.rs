//! `[store]` in a limits file: the section read and its mistakes (file, line, column, field,
//! message; never a password), the environment forms, reloads that would move the store,
//! limiters built from such a file, and two limiters from one file sharing one limit in a
//! real Redis started here.
#![cfg(feature = "redis")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::redis_server::{free_port, RedisServer};
use tokengate::config::{Config, ConfigError, ErrorKind};
use tokengate::{Cost, Limiter, OnStoreError};

const FILE: &str = "limits.toml";

/// A limit for the files below, which must set one.
const LIMITS: &str = "\n[account]\nrequests_per_minute = 600\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, FILE)
}

/// The error of `text`, which must be refused.
#[track_caller]
fn refuse(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("accepted: {text}\n{config:?}"),
        Err(e) => e,
    }
}

/// Asserts where `e` points: line, column, field, and that the text there starts with
/// `token`.
#[track_caller]
fn assert_at(text: &str, e: &ConfigError, line: usize, column: usize, field: &str, token: &str) {
    assert_eq!(e.file, FILE, "{e}");
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (line, column, field),
        "{e}"
    );
    let at: String = text
        .split('\n')
        .nth(line - 1)
        .unwrap()
        .chars()
        .skip(column - 1)
        .collect();
    assert!(
        at.starts_with(token),
        "{e}: the text there is {at:?}, not {token:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("{FILE}:{line}:{column}: field `{field}`: {}", e.message)
    );
}

/// A name for an environment variable that no other test uses.
fn var(name: &str) -> String {
    format!("TOKENGATE_TEST_{}_{name}", std::process::id())
}

#[test]
fn the_whole_section_is_read() {
    let text = r#"
[store]
url = "redis://app:s3cret@127.0.0.1:6390/2"
namespace = "prod"
prefix = "limits"
timeout = "750ms"
lease = "90s"
on_error = { local_share = 0.25 }

[models.gpt-4o]
requests_per_minute = 500
"#;
    let config = parse(text).unwrap();
    let store = config.store().expect("a [store]");
    assert_eq!(store.url(), "redis://app:***@127.0.0.1:6390/2");
    assert_eq!((store.namespace(), store.prefix()), ("prod", "limits"));
    assert_eq!(store.timeout(), Duration::from_millis(750));
    assert_eq!(store.lease(), Duration::from_secs(90));
    assert_eq!(store.on_error(), OnStoreError::LocalShare(0.25));
    assert_eq!((store.line(), store.column()), (2, 2));
    let info = store.client().get_connection_info();
    assert_eq!(info.redis_settings().password(), Some("s3cret"));
    assert_eq!(info.redis_settings().db(), 2);
    for shown in [
        format!("{config:?}"),
        format!("{store:?}"),
        format!("{:?}", store.store()),
    ] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

#[test]
fn defaults_and_the_other_failure_policies() {
    let config = parse(&format!("[store]\nurl = \"redis://127.0.0.1\"{LIMITS}")).unwrap();
    let store = config.store().unwrap();
    assert_eq!(store.url(), "redis://127.0.0.1:6379/0");
    assert_eq!(
        (store.namespace(), store.prefix()),
        ("default", "tokengate")
    );
    assert_eq!(store.timeout(), Duration::from_secs(2));
    assert_eq!(store.lease(), Duration::from_secs(60));
    assert_eq!(store.on_error(), OnStoreError::FailClosed);
    for (written, policy) in [
        ("\"fail_open\"", OnStoreError::FailOpen),
        ("\"fail_closed\"", OnStoreError::FailClosed),
        ("{ local_share = 1 }", OnStoreError::LocalShare(1.0)),
        ("{ local_share = 0.5 }", OnStoreError::LocalShare(0.5)),
    ] {
        let text = format!("[store]\nurl = \"redis://h\"\non_error = {written}{LIMITS}");
        assert_eq!(
            parse(&text).unwrap().store().unwrap().on_error(),
            policy,
            "{written}"
        );
    }
    // A unix socket; a user alone is shown as a secret (it may be a password written there).
    let unix = parse(&format!(
        "[store]\nurl = \"unix:///run/redis.sock\"{LIMITS}"
    ))
    .unwrap();
    assert_eq!(unix.store().unwrap().url(), "unix:///run/redis.sock?db=0");
    let user = parse(&format!("[store]\nurl = \"redis://hunter2@h:1/0\"{LIMITS}")).unwrap();
    assert_eq!(user.store().unwrap().url(), "redis://***@h:1/0");
    // No [store]: none.
    assert!(parse(LIMITS).unwrap().store().is_none());
}

#[test]
fn each_mistake_is_named_where_it_is() {
    #[rustfmt::skip]
    let cases: &[(&str, usize, usize, &str, &str, ErrorKind, &str)] = &[
        ("[store]\nnamespce = \"prod\"\nurl = \"redis://h\"\n",
            2, 1, "store.namespce", "namespce", ErrorKind::UnknownField,
            "unknown field `namespce`: expected one of url, password, namespace, prefix, timeout, lease, on_error (did you mean `namespace`?)"),
        ("[store]\nnamespace = \"prod\"\n",
            1, 2, "store", "store", ErrorKind::Missing, "[store] needs `url`"),
        ("[store]\nurl = \"http://user:pw@h:6379\"\n",
            2, 7, "store.url", "\"http", ErrorKind::InvalidValue, "the URL has the scheme `http`"),
        ("[store]\nurl = \"127.0.0.1:6379\"\n",
            2, 7, "store.url", "\"127", ErrorKind::InvalidValue, "found text that is not a URL"),
        ("[store]\nurl = \"redis://h/zero\"\n",
            2, 7, "store.url", "\"redis", ErrorKind::InvalidValue, "the URL is not one"),
        ("[store]\nurl = 6379\n",
            2, 7, "store.url", "6379", ErrorKind::WrongType,
            "expected a Redis URL as a string, or { env = \"REDIS_URL\" }"),
        ("[store]\nurl = \"redis://h\"\ntimeout = \"0s\"\n",
            3, 11, "store.timeout", "\"0s\"", ErrorKind::InvalidValue, "expected a deadline longer than 0"),
        ("[store]\nurl = \"redis://h\"\ntimeout = \"2d\"\n",
            3, 11, "store.timeout", "\"2d\"", ErrorKind::InvalidValue,
            "expected a deadline of at most a day (\"24h\"), found 2days"),
        ("[store]\nurl = \"redis://h\"\ntimeout = 2\n",
            3, 11, "store.timeout", "2", ErrorKind::WrongType, "a number needs a unit and quotes"),
        ("[store]\nurl = \"redis://h\"\nlease = \"soon\"\n",
            3, 9, "store.lease", "\"soon\"", ErrorKind::InvalidValue, "expected a duration such as"),
        ("[store]\nurl = \"redis://h\"\non_error = { local_share = 0 }\n",
            3, 28, "store.on_error.local_share", "0", ErrorKind::InvalidValue,
            "expected a share above 0 and at most 1"),
        ("[store]\nurl = \"redis://h\"\non_error = { local_share = 1.5 }\n",
            3, 28, "store.on_error.local_share", "1.5", ErrorKind::InvalidValue, "found 1.5"),
        ("[store]\nurl = \"redis://h\"\non_error = { local_share = nan }\n",
            3, 28, "store.on_error.local_share", "nan", ErrorKind::InvalidValue, "found nan"),
        ("[store]\nurl = \"redis://h\"\non_error = { local_share = \"25%\" }\n",
            3, 28, "store.on_error.local_share", "\"25%\"", ErrorKind::WrongType, "found a string"),
        ("[store]\nurl = \"redis://h\"\non_error = { share = 0.5 }\n",
            3, 14, "store.on_error.share", "share", ErrorKind::UnknownField, "unknown field `share`"),
        ("[store]\nurl = \"redis://h\"\non_error = \"local_share\"\n",
            3, 12, "store.on_error", "\"local_share\"", ErrorKind::InvalidValue,
            "on_error = { local_share = 0.25 }"),
        ("[store]\nurl = \"redis://h\"\non_error = \"fail-open\"\n",
            3, 12, "store.on_error", "\"fail-open\"", ErrorKind::InvalidValue,
            "(did you mean \"fail_open\"?)"),
        ("[store]\nurl = \"redis://h\"\nnamespace = \"\"\n",
            3, 13, "store.namespace", "\"\"", ErrorKind::InvalidValue,
            "expected a namespace that is not empty"),
        ("[store]\nurl = \"redis://:pw@h\"\npassword = \"other\"\n",
            3, 12, "store.password", "\"other\"", ErrorKind::Duplicate,
            "the URL holds a password already"),
        ("[store]\nurl = { env = \"REDIS_URL\", default = \"redis://h\" }\n",
            2, 28, "store.url.default", "default", ErrorKind::UnknownField,
            "unknown field `default`: expected one of env"),
        ("[store]\nurl = { env = \"\" }\n",
            2, 15, "store.url.env", "\"\"", ErrorKind::InvalidValue,
            "expected the name of an environment variable"),
        ("store = \"redis://h\"\n",
            1, 9, "store", "\"redis", ErrorKind::WrongType, "expected a table: [store] with url = "),
        ("[stor]\nurl = \"redis://h\"\n",
            1, 2, "stor", "stor", ErrorKind::UnknownField, "(did you mean `store`?)"),
    ];
    for (head, line, column, field, token, kind, says) in cases {
        let text = format!("{head}{LIMITS}");
        let e = refuse(&text);
        assert_at(&text, &e, *line, *column, field, token);
        assert_eq!(&e.kind, kind, "{e}");
        assert!(e.message.contains(says), "{e}\nexpected it to say: {says}");
        assert!(!e.to_string().contains("pw@"), "{e}");
    }
}

#[test]
fn tls_urls_are_read_or_say_what_is_missing() {
    match parse(&format!("[store]\nurl = \"rediss://h:6380/0\"{LIMITS}")) {
        Ok(config) => assert_eq!(config.store().unwrap().url(), "rediss://h:6380/0"),
        Err(e) => {
            assert_eq!(
                (e.line, e.column, e.kind.clone()),
                (2, 7, ErrorKind::InvalidValue)
            );
            assert!(e.message.contains("asks for TLS"), "{e}");
        }
    }
}

#[test]
fn the_url_and_the_password_come_from_the_environment() {
    let (url_var, password_var) = (var("URL"), var("PASSWORD"));
    std::env::set_var(&url_var, "redis://app@127.0.0.1:6391/3");
    std::env::set_var(&password_var, "from-the-env");
    let text = format!(
        "[store]\nurl = {{ env = \"{url_var}\" }}\npassword = {{ env = \"{password_var}\" }}{LIMITS}"
    );
    let config = parse(&text).unwrap();
    let store = config.store().unwrap();
    assert_eq!(store.url(), "redis://app:***@127.0.0.1:6391/3");
    let settings = store.client().get_connection_info().redis_settings();
    assert_eq!(
        (settings.username(), settings.password()),
        (Some("app"), Some("from-the-env"))
    );
    assert!(!format!("{config:?}").contains("from-the-env"));

    // Unset: the variable is named, where it is written.
    let unset = var("UNSET");
    let text = format!("[store]\nurl = {{ env = \"{unset}\" }}{LIMITS}");
    let e = refuse(&text);
    assert_at(&text, &e, 2, 15, "store.url", "\"TOKENGATE_TEST_");
    assert!(
        e.message
            .contains(&format!("environment variable `{unset}` is not set")),
        "{e}"
    );

    // A variable holding no Redis URL: named, its value never repeated.
    let wrong = var("WRONG");
    std::env::set_var(&wrong, "https://admin:hunter2@example.com/");
    let e = refuse(&format!("[store]\nurl = {{ env = \"{wrong}\" }}{LIMITS}"));
    let says = format!("environment variable `{wrong}` has the scheme `https`");
    assert!(e.message.contains(&says), "{e}");
    assert!(!format!("{e} {e:#?}").contains("hunter2"), "{e}");
    std::env::set_var(&wrong, "hunter2");
    let e = refuse(&format!("[store]\nurl = {{ env = \"{wrong}\" }}{LIMITS}"));
    assert!(e.message.contains("holds text that is not a URL"), "{e}");
    assert!(!format!("{e} {e:#?}").contains("hunter2"), "{e}");
}

#[test]
fn a_limiter_from_the_file_is_on_its_store() {
    let text = format!(
        "[store]\nurl = \"redis://127.0.0.1:1/0\"\non_error = \"fail_open\"\nlease = \"9s\"{LIMITS}"
    );
    // Outside any runtime: nothing connects, nothing panics.
    let limiter = Limiter::from_config(parse(&text).unwrap());
    assert!(limiter.store().is_some());
    assert_eq!(limiter.store_error_policy(), OnStoreError::FailOpen);
    // Without the section, none.
    assert!(Limiter::from_config(parse(LIMITS).unwrap())
        .store()
        .is_none());
}

#[test]
fn a_reload_never_moves_the_store() {
    let with = |extra: &str| {
        parse(&format!(
            "[store]\nurl = \"redis://:pw@127.0.0.1:1/0\"\n{extra}{LIMITS}"
        ))
        .unwrap()
    };
    let limiter = Limiter::from_config(with(""));
    // The same store, other limits: done.
    let other_limits =
        "[store]\nurl = \"redis://:pw@127.0.0.1:1/0\"\n[account]\nrequests_per_minute = 60\n";
    limiter.try_reload(parse(other_limits).unwrap()).unwrap();
    for (extra, key) in [
        ("namespace = \"other\"\n", "namespace"),
        ("timeout = \"1s\"\n", "timeout"),
        ("on_error = \"fail_open\"\n", "on_error"),
        ("prefix = \"p\"\n", "prefix"),
        ("lease = \"1s\"\n", "lease"),
    ] {
        let e = limiter.try_reload(with(extra)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::StoreChanged, "{e}");
        assert_eq!((e.line, e.column, e.field.as_str()), (1, 2, "store"), "{e}");
        let says = format!("`{key}` differs from the [store] the limiter was built with");
        assert!(e.message.starts_with(&says), "{e}");
        assert!(e.message.contains("restart the process"), "{e}");
    }
    let other_url =
        "[store]\nurl = \"redis://:other@127.0.0.1:1/0\"\n[account]\nrequests_per_minute = 1\n";
    let e = limiter.try_reload(parse(other_url).unwrap()).unwrap_err();
    assert!(e.message.starts_with("`url` differs"), "{e}");
    assert!(
        !e.to_string().contains("other@") && !e.to_string().contains("pw"),
        "{e}"
    );
    let e = limiter.try_reload(parse(LIMITS).unwrap()).unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.line),
        (ErrorKind::StoreChanged, 0),
        "{e}"
    );
    assert!(e.message.contains("the file has no [store]"), "{e}");

    // `reload` keeps the store it has: what it was built with still counts as unchanged.
    limiter.reload(with("namespace = \"other\"\n"));
    limiter.try_reload(with("")).unwrap();

    // A limiter built without one gets none by a reload.
    let memory = Limiter::from_config(parse(LIMITS).unwrap());
    let e = memory.try_reload(with("")).unwrap_err();
    assert_eq!((e.line, e.column), (1, 2), "{e}");
    assert!(e.message.contains("built without a [store]"), "{e}");
    memory.try_reload(parse(LIMITS).unwrap()).unwrap();
}

#[test]
fn an_unreachable_store_falls_back_to_the_local_share() {
    // A port nothing listens on: every call fails, and the local share decides, in this
    // process alone (it is not on the store itself).
    let text = format!(
        "[store]\nurl = \"redis://127.0.0.1:{}/0\"\ntimeout = \"300ms\"\n\
         on_error = {{ local_share = 0.5 }}\n[account]\nrequests_per_hour = 4\n",
        free_port()
    );
    let limiter = Limiter::from_config(parse(&text).unwrap());
    // From this thread, outside any runtime (on the limiter's own): admitted locally.
    let permit = limiter.acquire_blocking(Cost::request());
    drop(permit.expect("the local share admits"));
    assert!(
        limiter.store_stats().errors >= 1,
        "{:?}",
        limiter.store_stats()
    );
    // Half of 4 an hour, locally: one more, then refusals.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admitted = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            let mut admitted = 0;
            for _ in 0..3 {
                let acquired = limiter
                    .acquire_timeout(Cost::request(), Duration::ZERO)
                    .await;
                admitted += usize::from(acquired.is_ok());
            }
            admitted
        })
        .await
        .expect("within 20 s")
    });
    assert_eq!(admitted, 1);
    assert!(
        limiter.store_stats().errors >= 4,
        "{:?}",
        limiter.store_stats()
    );
}

/// Writes `text` to a file of this test's own.
fn file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tokengate-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn two_limiters_from_one_file_share_its_limit_in_redis() {
    let server = RedisServer::start();
    // 10 an hour, all at once (an hour's burst is its amount): no refill within the test; no
    // safety margin, for the exact count.
    let path = file(
        "shared",
        &format!(
            "margin = \"0s\"\n[store]\nurl = \"{}\"\nnamespace = \"config-store-test\"\n\n\
             [account]\nrequests_per_hour = 10\n",
            server.url()
        ),
    );
    let a = Limiter::from_config_file(&path).unwrap();
    let b = Limiter::from_config_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (from_a, from_b) = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut admitted = [0, 0];
            for _ in 0..15 {
                for (i, limiter) in [&a, &b].into_iter().enumerate() {
                    match limiter
                        .acquire_timeout(Cost::request(), Duration::ZERO)
                        .await
                    {
                        Ok(permit) => {
                            admitted[i] += 1;
                            drop(permit);
                        }
                        Err(tokengate::AcquireError::Timeout { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            (admitted[0], admitted[1])
        })
        .await
        .expect("within 30 s")
    });
    // Each alone would admit 10: together they hold the one limit.
    assert_eq!(from_a + from_b, 10, "a admitted {from_a}, b {from_b}");
    assert!(
        from_a >= 1 && from_b >= 1,
        "a admitted {from_a}, b {from_b}"
    );
    for limiter in [&a, &b] {
        let stats = limiter.store_stats();
        assert_eq!(stats.errors, 0, "{stats:?}");
        assert!(stats.calls >= 15, "{stats:?}");
    }
}
