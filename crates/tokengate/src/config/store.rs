//! `[store]`: the shared store a limiter built from the file keeps its state in, the Redis
//! store of the `redis` feature. Read here with its URL (or password) from the environment
//! when asked; without the feature, the section is refused rather than ignored: a file meant
//! for one set of limits shared by N processes would otherwise give each process its own, N
//! times the limits.

#[cfg(not(feature = "redis"))]
use super::{
    document::Doc,
    error::{ConfigError, ErrorKind},
    tree::{Key, Node},
    Config,
};

/// The fields of `[store]`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const STORE_FIELDS: [&str; 7] = [
    "url",
    "password",
    "namespace",
    "prefix",
    "timeout",
    "lease",
    "on_error",
];

#[cfg(not(feature = "redis"))]
impl Doc<'_> {
    /// `[store]` in a build without the `redis` feature: an error, whatever it holds.
    pub(super) fn store(
        &self,
        key: &Key<'_>,
        _node: &Node<'_>,
        field: &str,
        _config: &mut Config,
    ) -> Result<(), ConfigError> {
        Err(self.error(
            key.span(),
            field,
            ErrorKind::Unsupported,
            "[store] needs tokengate's `redis` feature, which this build lacks: enable it \
             (features = [\"redis\"] on the tokengate dependency), or remove the section to keep \
             limits in this process alone (each process sharing the file would then admit the \
             whole limits by itself)",
        ))
    }
}

#[cfg(feature = "redis")]
pub(crate) use with_redis::store_change;
#[cfg(feature = "redis")]
pub use with_redis::StoreConfig;

#[cfg(feature = "redis")]
mod with_redis {
    use std::time::Duration;

    use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
    use toml::de::{DeTable, DeValue};

    use super::super::document::Doc;
    use super::super::error::{child, ConfigError, ErrorKind};
    use super::super::suggest::{suggest, unknown_field_message};
    use super::super::tree::{self, Key, Node, Span};
    use super::super::Config;
    use super::STORE_FIELDS;
    use crate::clock::Clock;
    use crate::redis::{RedisStore, DEFAULT_PREFIX, DEFAULT_TIMEOUT, MAX_TIMEOUT};
    use crate::{Limiter, OnStoreError};

    /// The schemes of a Redis URL that redis-rs reads.
    const SCHEMES: [&str; 7] = [
        "redis",
        "rediss",
        "unix",
        "redis+unix",
        "valkey",
        "valkeys",
        "valkey+unix",
    ];

    const EXPECTED_URL: &str =
        "expected a Redis URL: \"redis://[user:password@]host[:port][/db]\", \
         \"rediss://...\" (TLS) or \"unix:///path/to/redis.sock\"";

    /// A limits file's `[store]` (feature `redis`): the Redis a limiter built from the file
    /// keeps its state in, so that every process using the file shares one set of limits.
    /// [`Limiter::from_config`](crate::Limiter::from_config) and
    /// [`Limiter::from_config_file`](crate::Limiter::from_config_file) put such a limiter on
    /// it ([`store`](Self::store)), with its failure policy and lease; see the
    /// [module docs](crate::config) for the section's form.
    ///
    /// The URL, or the password, may come from the environment (`url = { env = "REDIS_URL" }`),
    /// read when the file is read. No `Debug`, `Display` or error shows a password:
    /// [`url`](Self::url) writes it `***`.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokengate::config::Config;
    /// use tokengate::OnStoreError;
    ///
    /// let config = Config::from_toml_str(
    ///     r#"
    ///     [store]
    ///     url = "redis://tokengate:s3cret@127.0.0.1:6379/0"
    ///     namespace = "prod"
    ///     timeout = "500ms"
    ///     on_error = { local_share = 0.25 }
    ///
    ///     [models.gpt-4o]
    ///     requests_per_minute = 500
    ///     "#,
    ///     "limits.toml",
    /// )?;
    /// let store = config.store().expect("the file has a [store]");
    /// assert_eq!(store.url(), "redis://tokengate:***@127.0.0.1:6379/0");
    /// assert_eq!(store.namespace(), "prod");
    /// assert_eq!(store.prefix(), "tokengate");
    /// assert_eq!(store.timeout(), Duration::from_millis(500));
    /// assert_eq!(store.lease(), Duration::from_secs(60));
    /// assert_eq!(store.on_error(), OnStoreError::LocalShare(0.25));
    /// assert!(!format!("{config:?}").contains("s3cret"));
    /// # Ok::<(), tokengate::config::ConfigError>(())
    /// ```
    #[derive(Clone)]
    pub struct StoreConfig {
        client: redis::Client,
        /// The variable the URL was read from, if any.
        url_env: Option<String>,
        /// The URL as resolved and the password given apart: compared, never shown.
        secret: (String, Option<String>),
        shown: String,
        namespace: String,
        prefix: String,
        timeout: Duration,
        lease: Duration,
        on_error: OnStoreError,
        line: usize,
        column: usize,
    }

    impl std::fmt::Debug for StoreConfig {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("StoreConfig")
                .field("url", &self.shown)
                .field("namespace", &self.namespace)
                .field("prefix", &self.prefix)
                .field("timeout", &self.timeout)
                .field("lease", &self.lease)
                .field("on_error", &self.on_error)
                .finish_non_exhaustive()
        }
    }

    impl PartialEq for StoreConfig {
        /// The same Redis (URL and password), namespace, prefix, deadline, lease and failure
        /// policy; where each was written does not count.
        fn eq(&self, other: &Self) -> bool {
            self.differs_in(other).is_none()
        }
    }

    impl StoreConfig {
        /// The URL, its password (if any) written `***`.
        pub fn url(&self) -> &str {
            &self.shown
        }

        /// The environment variable the URL was read from (`url = { env = "REDIS_URL" }`),
        /// if it was.
        pub fn url_env(&self) -> Option<&str> {
            self.url_env.as_deref()
        }

        /// `namespace`: stores with different namespaces share nothing (`"default"` unless
        /// set; see [`RedisStore::namespace`]).
        pub fn namespace(&self) -> &str {
            &self.namespace
        }

        /// `prefix`: what every key starts with ([`DEFAULT_PREFIX`] unless set).
        pub fn prefix(&self) -> &str {
            &self.prefix
        }

        /// `timeout`: the deadline of each call to Redis ([`DEFAULT_TIMEOUT`] unless set).
        pub fn timeout(&self) -> Duration {
            self.timeout
        }

        /// `lease`: how long an in-flight slot is held without a renewal (60 s unless set),
        /// given both to the store ([`RedisStore::lease`]) and to the limiter
        /// ([`Limiter::with_store_lease`]).
        pub fn lease(&self) -> Duration {
            self.lease
        }

        /// `on_error`: what an acquisition does when the store fails
        /// ([`OnStoreError::FailClosed`] unless set).
        pub fn on_error(&self) -> OnStoreError {
            self.on_error
        }

        /// The line of the section in the file (from 1).
        pub fn line(&self) -> usize {
            self.line
        }

        /// The column of the section's name in the file (from 1).
        pub fn column(&self) -> usize {
            self.column
        }

        /// The redis-rs client of the URL (and password): for a connection of your own.
        pub fn client(&self) -> &redis::Client {
            &self.client
        }

        /// A store on this Redis, with the section's namespace, prefix, lease and deadline,
        /// that connects at its first call ([`RedisStore::lazy`]): made now without a runtime
        /// and without waiting. What a limiter built from the file uses.
        ///
        /// # Examples
        /// ```
        /// use tokengate::config::Config;
        ///
        /// let config = Config::from_toml_str(
        ///     "[store]\nurl = \"redis://127.0.0.1:6379/0\"\n[account]\nrequests_per_minute = 600",
        ///     "limits.toml",
        /// )?;
        /// let store = config.store().expect("a [store]").store(); // nothing connects yet
        /// # drop(store);
        /// # Ok::<(), tokengate::config::ConfigError>(())
        /// ```
        pub fn store(&self) -> RedisStore {
            RedisStore::lazy_on(self.client.clone())
                .namespace(&self.prefix, &self.namespace)
                .lease(self.lease)
                .timeout(self.timeout)
        }

        /// `limiter` on this store, with the section's failure policy and lease.
        pub(crate) fn attach<C: Clock>(&self, limiter: Limiter<C>) -> Limiter<C> {
            limiter
                .with_store(self.store())
                .on_store_error(self.on_error)
                .with_store_lease(self.lease)
        }

        /// The first key whose value differs from `other`'s, if any.
        pub(crate) fn differs_in(&self, other: &Self) -> Option<&'static str> {
            if self.secret.0 != other.secret.0 {
                Some("url")
            } else if self.secret.1 != other.secret.1 {
                Some("password")
            } else if self.namespace != other.namespace {
                Some("namespace")
            } else if self.prefix != other.prefix {
                Some("prefix")
            } else if self.timeout != other.timeout {
                Some("timeout")
            } else if self.lease != other.lease {
                Some("lease")
            } else if self.on_error != other.on_error {
                Some("on_error")
            } else {
                None
            }
        }
    }

    /// The error of a reload from `new` on a limiter whose store came from `current` (`None`:
    /// none came from its file), if the two differ.
    pub(crate) fn store_change(current: Option<&StoreConfig>, new: &Config) -> Option<ConfigError> {
        const RESTART: &str = "a limiter's store is fixed when it is built, and a reload \
                               changes limits only: restart the process to change stores";
        let error = |line, column, field: &str, message: String| ConfigError {
            file: new.source_name().to_owned(),
            line,
            column,
            field: field.to_owned(),
            message,
            kind: ErrorKind::StoreChanged,
        };
        match (current, new.store()) {
            (None, None) => None,
            (Some(current), Some(next)) => next.differs_in(current).map(|key| {
                error(
                    next.line,
                    next.column,
                    "store",
                    format!(
                        "`{key}` differs from the [store] the limiter was built with; {RESTART}"
                    ),
                )
            }),
            (None, Some(next)) => Some(error(
                next.line,
                next.column,
                "store",
                format!(
                    "the limiter was built without a [store] from its file, and this file has one; {RESTART}"
                ),
            )),
            (Some(_), None) => Some(error(
                0,
                0,
                "",
                format!(
                    "the file has no [store], but the limiter keeps its state in the one of the file it was built from; keep the section, or {}",
                    &RESTART[RESTART.find("restart").unwrap_or(0)..]
                ),
            )),
        }
    }

    /// A value written in the file or read from the environment.
    struct Secret {
        value: String,
        /// The variable it was read from.
        env: Option<String>,
        span: Span,
        field: String,
    }

    impl Secret {
        /// Where the value comes from, for messages: "the URL" or "environment variable X".
        fn origin(&self, what: &str) -> String {
            match &self.env {
                Some(var) => format!("environment variable `{var}`"),
                None => what.to_owned(),
            }
        }
    }

    impl Doc<'_> {
        /// `[store]`.
        pub(in crate::config) fn store(
            &self,
            key: &Key<'_>,
            node: &Node<'_>,
            path: &str,
            config: &mut Config,
        ) -> Result<(), ConfigError> {
            let DeValue::Table(table) = node.get_ref() else {
                return Err(self.error(
                    node.span(),
                    path,
                    ErrorKind::WrongType,
                    format!(
                        "expected a table: [store] with url = \"redis://host:6379/0\", found {}",
                        tree::kind(node.get_ref())
                    ),
                ));
            };
            let (line, column) = self.line_column(key.span().start);
            let mut url = None;
            let mut password = None;
            let mut namespace = "default".to_owned();
            let mut prefix = DEFAULT_PREFIX.to_owned();
            let mut timeout = DEFAULT_TIMEOUT;
            let mut lease = crate::store::DEFAULT_LEASE;
            let mut on_error = OnStoreError::FailClosed;
            for (key, node) in tree::entries(table) {
                let name: &str = key.get_ref();
                let field = child(path, name);
                match name {
                    "url" => url = Some(self.secret(node, field, "a Redis URL", "REDIS_URL")?),
                    "password" => {
                        password =
                            Some(self.secret(node, field, "a password", "REDIS_PASSWORD")?);
                    }
                    "namespace" => namespace = self.key_part(node, &field, "namespace")?,
                    "prefix" => prefix = self.key_part(node, &field, "prefix")?,
                    "timeout" => timeout = self.deadline(node, &field)?,
                    "lease" => lease = self.positive(node, &field, "lease")?,
                    "on_error" => on_error = self.on_error(node, &field)?,
                    _ => {
                        return Err(self.error(
                            key.span(),
                            &field,
                            ErrorKind::UnknownField,
                            unknown_field_message(name, &STORE_FIELDS),
                        ))
                    }
                }
            }
            let Some(url) = url else {
                return Err(self.error(
                    key.span(),
                    path,
                    ErrorKind::Missing,
                    "[store] needs `url`: url = \"redis://127.0.0.1:6379/0\", or \
                     url = { env = \"REDIS_URL\" } to read it from the environment",
                ));
            };
            let info = self.connection_info(&url, password.as_ref())?;
            let shown = shown(&url.value, &info);
            let client = redis::Client::open(info).map_err(|e| {
                self.error(
                    url.span.clone(),
                    &url.field,
                    ErrorKind::InvalidValue,
                    format!("{EXPECTED_URL}: {e}"),
                )
            })?;
            config.store = Some(StoreConfig {
                client,
                url_env: url.env,
                secret: (url.value, password.map(|p| p.value)),
                shown,
                namespace,
                prefix,
                timeout,
                lease,
                on_error,
                line,
                column,
            });
            Ok(())
        }

        /// A string, or `{ env = "NAME" }` read from the environment now.
        fn secret(
            &self,
            node: &Node<'_>,
            field: String,
            what: &str,
            example: &str,
        ) -> Result<Secret, ConfigError> {
            let expected =
                format!("expected {what} as a string, or {{ env = \"{example}\" }} to read it from the environment");
            let table: &DeTable<'_> = match node.get_ref() {
                DeValue::String(s) => {
                    return Ok(Secret {
                        value: s.to_string(),
                        env: None,
                        span: node.span(),
                        field,
                    })
                }
                DeValue::Table(t) => t,
                other => {
                    return Err(self.error(
                        node.span(),
                        &field,
                        ErrorKind::WrongType,
                        format!("{expected}, found {}", tree::kind(other)),
                    ))
                }
            };
            let mut var = None;
            for (key, value) in tree::entries(table) {
                let name: &str = key.get_ref();
                let at = child(&field, name);
                if name != "env" {
                    return Err(self.error(
                        key.span(),
                        &at,
                        ErrorKind::UnknownField,
                        unknown_field_message(name, &["env"]),
                    ));
                }
                let DeValue::String(s) = value.get_ref() else {
                    return Err(self.error(
                        value.span(),
                        &at,
                        ErrorKind::WrongType,
                        format!(
                            "expected the name of an environment variable, such as \"{example}\", found {}",
                            tree::kind(value.get_ref())
                        ),
                    ));
                };
                if s.is_empty() || s.contains(['=', '\0']) {
                    return Err(self.error(
                        value.span(),
                        &at,
                        ErrorKind::InvalidValue,
                        format!(
                            "expected the name of an environment variable, such as \"{example}\", found \"{}\"",
                            s.escape_debug()
                        ),
                    ));
                }
                var = Some((s.to_string(), value.span()));
            }
            let Some((var, span)) = var else {
                return Err(self.error(
                    node.span(),
                    &field,
                    ErrorKind::Missing,
                    format!("{expected}: the table needs `env`"),
                ));
            };
            let value = match (self.env)(&var) {
                Ok(value) => value,
                Err(std::env::VarError::NotPresent) => {
                    return Err(self.error(
                        span,
                        &field,
                        ErrorKind::InvalidValue,
                        format!(
                            "environment variable `{var}` is not set: set it to {what}, or write the value here"
                        ),
                    ))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(self.error(
                        span,
                        &field,
                        ErrorKind::InvalidValue,
                        format!("environment variable `{var}` is not valid UTF-8: set it to {what}"),
                    ))
                }
            };
            Ok(Secret {
                value,
                env: Some(var),
                span,
                field,
            })
        }

        /// The connection of `url`, with `password` if given. No message repeats the URL or
        /// the password (only the scheme, when it is the mistake).
        fn connection_info(
            &self,
            url: &Secret,
            password: Option<&Secret>,
        ) -> Result<ConnectionInfo, ConfigError> {
            let invalid = |message: String| {
                self.error(
                    url.span.clone(),
                    &url.field,
                    ErrorKind::InvalidValue,
                    message,
                )
            };
            let origin = url.origin("the URL");
            let scheme = url.value.split_once("://").map(|(s, _)| s).filter(|s| {
                !s.is_empty()
                    && s.len() <= 20
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            });
            let Some(scheme) = scheme else {
                let found = if url.env.is_some() {
                    format!("{origin} holds text that is not a URL")
                } else {
                    "found text that is not a URL".to_owned()
                };
                return Err(invalid(format!("{EXPECTED_URL}; {found}")));
            };
            if !SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                return Err(invalid(format!(
                    "{EXPECTED_URL}; {origin} has the scheme `{scheme}`"
                )));
            }
            let info = url.value.as_str().into_connection_info().map_err(|e| {
                let detail = e.to_string();
                if detail.contains("TLS") {
                    invalid(format!(
                        "{origin} asks for TLS (`{scheme}://`), which this build's Redis client lacks \
                         (tokengate's `redis-tls` feature, where available, adds it); or use redis:// \
                         on a trusted network"
                    ))
                } else {
                    invalid(format!("{EXPECTED_URL}; {origin} is not one: {detail}"))
                }
            })?;
            let Some(password) = password else {
                return Ok(info);
            };
            if info.redis_settings().password().is_some() {
                return Err(self.error(
                    password.span.clone(),
                    &password.field,
                    ErrorKind::Duplicate,
                    format!(
                        "{} holds a password already: give the password in one place",
                        url.origin("the URL")
                    ),
                ));
            }
            let settings = info.redis_settings().clone().set_password(&password.value);
            Ok(info.set_redis_settings(settings))
        }

        /// `namespace` or `prefix`: a string that is not empty.
        fn key_part(
            &self,
            node: &Node<'_>,
            field: &str,
            what: &str,
        ) -> Result<String, ConfigError> {
            match node.get_ref() {
                DeValue::String(s) if !s.is_empty() => Ok(s.to_string()),
                DeValue::String(_) => Err(self.error(
                    node.span(),
                    field,
                    ErrorKind::InvalidValue,
                    format!("expected a {what} that is not empty, found \"\": leave `{what}` out for the default"),
                )),
                other => Err(self.error(
                    node.span(),
                    field,
                    ErrorKind::WrongType,
                    format!("expected a {what} as a string, found {}", tree::kind(other)),
                )),
            }
        }

        /// `timeout` or `lease`: a duration above 0.
        fn positive(
            &self,
            node: &Node<'_>,
            field: &str,
            what: &str,
        ) -> Result<Duration, ConfigError> {
            let d = self.margin(node, field)?;
            if d.is_zero() {
                return Err(self.error(
                    node.span(),
                    field,
                    ErrorKind::InvalidValue,
                    format!("expected a {what} longer than 0, such as \"2s\", found \"0s\""),
                ));
            }
            Ok(d)
        }

        /// `timeout`: a deadline above 0, at most a day ([`MAX_TIMEOUT`]).
        fn deadline(&self, node: &Node<'_>, field: &str) -> Result<Duration, ConfigError> {
            let d = self.positive(node, field, "deadline")?;
            if d > MAX_TIMEOUT {
                return Err(self.error(
                    node.span(),
                    field,
                    ErrorKind::InvalidValue,
                    format!(
                        "expected a deadline of at most a day (\"24h\"), found {}",
                        humantime::format_duration(d)
                    ),
                ));
            }
            Ok(d)
        }

        /// `on_error = "fail_closed"`, `"fail_open"` or `{ local_share = F }`.
        fn on_error(&self, node: &Node<'_>, field: &str) -> Result<OnStoreError, ConfigError> {
            const EXPECTED: &str = "expected \"fail_closed\" (refuse while the store fails; the \
                 default), \"fail_open\" (admit without limits) or { local_share = 0.25 } (decide \
                 on that share of every limit in this process)";
            const NAMES: [&str; 3] = ["fail_closed", "fail_open", "local_share"];
            let table = match node.get_ref() {
                DeValue::String(s) => {
                    match s.as_ref() {
                        "fail_closed" => return Ok(OnStoreError::FailClosed),
                        "fail_open" => return Ok(OnStoreError::FailOpen),
                        _ => {}
                    }
                    let normal = s.to_lowercase().replace(['-', ' '], "_");
                    let mut message = format!("{EXPECTED}, found \"{}\"", s.escape_debug());
                    if normal == "local_share" {
                        message.push_str(": a local share needs its share, as a table: on_error = { local_share = 0.25 }");
                    } else if let Some(near) = NAMES
                        .iter()
                        .find(|n| **n == normal)
                        .copied()
                        .or_else(|| suggest(&normal, &NAMES[..2]))
                    {
                        message.push_str(&format!(" (did you mean \"{near}\"?)"));
                    }
                    return Err(self.error(node.span(), field, ErrorKind::InvalidValue, message));
                }
                DeValue::Table(t) => t,
                other => {
                    return Err(self.error(
                        node.span(),
                        field,
                        ErrorKind::WrongType,
                        format!("{EXPECTED}, found {}", tree::kind(other)),
                    ))
                }
            };
            let mut share = None;
            for (key, value) in tree::entries(table) {
                let name: &str = key.get_ref();
                let at = child(field, name);
                if name != "local_share" {
                    return Err(self.error(
                        key.span(),
                        &at,
                        ErrorKind::UnknownField,
                        unknown_field_message(name, &["local_share"]),
                    ));
                }
                share = Some(self.share(value, &at)?);
            }
            share.map(OnStoreError::LocalShare).ok_or_else(|| {
                self.error(
                    node.span(),
                    field,
                    ErrorKind::Missing,
                    format!("{EXPECTED}: the table needs `local_share`"),
                )
            })
        }

        /// `local_share = F`: a number above 0 and at most 1.
        fn share(&self, node: &Node<'_>, field: &str) -> Result<f64, ConfigError> {
            const EXPECTED: &str = "expected a share above 0 and at most 1, such as 0.25 (a \
                 quarter of every limit; 1/n for n processes sharing the store)";
            let (share, written) = match node.get_ref() {
                DeValue::Float(f) => (
                    f.as_str().replace('_', "").parse::<f64>().ok(),
                    f.as_str().to_owned(),
                ),
                DeValue::Integer(i) => (
                    tree::integer(node.get_ref()).map(|i| i as f64),
                    i.as_str().to_owned(),
                ),
                other => {
                    return Err(self.error(
                        node.span(),
                        field,
                        ErrorKind::WrongType,
                        format!("{EXPECTED}, found {}", tree::kind(other)),
                    ))
                }
            };
            match share {
                Some(s) if s > 0.0 && s <= 1.0 => Ok(s),
                _ => Err(self.error(
                    node.span(),
                    field,
                    ErrorKind::InvalidValue,
                    format!("{EXPECTED}, found {written}"),
                )),
            }
        }
    }

    /// `url` as shown: scheme, user, address and database, the password written `***`; built
    /// from what redis-rs read, never from the text.
    fn shown(url: &str, info: &ConnectionInfo) -> String {
        let scheme = url.split_once("://").map_or("redis", |(s, _)| s);
        let settings = info.redis_settings();
        let secret = settings.password().is_some();
        let db = settings.db();
        if let ConnectionAddr::Unix(path) = info.addr() {
            let pass = if secret { "&pass=***" } else { "" };
            return format!("{scheme}://{}?db={db}{pass}", path.display());
        }
        // A user alone may be a password written where the user goes: shown as `***` too.
        let user = match (settings.username(), secret) {
            (Some(user), true) => format!("{user}:***@"),
            (None, true) => ":***@".to_owned(),
            (Some(_), false) => "***@".to_owned(),
            (None, false) => String::new(),
        };
        format!("{scheme}://{user}{}/{db}", info.addr())
    }
}

#[cfg(all(test, not(feature = "redis")))]
mod tests {
    use crate::config::{Config, ErrorKind};

    #[test]
    fn a_store_without_the_redis_feature_is_refused_where_it_is() {
        let limits = "[account]\nrequests_per_minute = 600\n";
        for (text, line, column) in [
            (
                format!("[store]\nurl = \"redis://127.0.0.1:6379/0\"\n{limits}"),
                1,
                2,
            ),
            (format!("store = {{ url = \"redis://h\" }}\n{limits}"), 1, 1),
            // Whatever the section holds: the feature is the first thing to fix.
            (format!("[store]\nurl = 5\n{limits}"), 1, 2),
        ] {
            let e = Config::from_toml_str(&text, "limits.toml").unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
            assert_eq!(
                (e.line, e.column, e.field.as_str()),
                (line, column, "store"),
                "{e}"
            );
            assert!(
                e.to_string().starts_with(&format!(
                    "limits.toml:{line}:{column}: field `store`: [store] needs tokengate's `redis` feature"
                )),
                "{e}"
            );
        }
    }
}
