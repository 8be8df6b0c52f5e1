//! How a limiter is built: kept, so that a forked child can build its own from the same limits
//! (and the same Redis) instead of using the parent's.

use pyo3::prelude::*;
use tokengate::config::Config;
use tokengate::redis::{RedisStore, DEFAULT_PREFIX};
use tokengate::{Limiter, OnStoreError, Policy};

use crate::errors;

/// What a limiter is made of.
#[derive(Debug, Clone)]
pub(crate) struct Recipe {
    /// Its limits.
    pub(crate) limits: Limits,
    /// The Redis given as an argument (not the limits file's `[store]`, which `limits` carries).
    pub(crate) redis: Option<Redis>,
    /// The failure policy given as an argument: over the file's `on_error` when both are set.
    pub(crate) on_store_error: Option<OnStoreError>,
}

/// One policy, or a limits file (as last reloaded).
#[derive(Debug, Clone)]
pub(crate) enum Limits {
    /// `Limiter(rpm=..., ...)`.
    Policy(Policy),
    /// `Limiter.from_config(path)`.
    Config(Box<Config>),
}

/// A Redis given as `redis=`.
#[derive(Debug, Clone)]
pub(crate) struct Redis {
    /// Its URL (`redis://`, `rediss://`).
    pub(crate) url: String,
    /// `namespace=`: limiters share limits only within one namespace.
    pub(crate) namespace: Option<String>,
}

impl Recipe {
    /// Whether the limits live in a store (Redis), shared by processes.
    pub(crate) fn has_store(&self) -> bool {
        self.redis.is_some() || matches!(&self.limits, Limits::Config(c) if c.store().is_some())
    }

    /// A new limiter of these limits. Connects to nothing: a store connects at its first call.
    ///
    /// # Errors
    /// `ConfigError` for a Redis URL that cannot be read.
    pub(crate) fn build(&self) -> PyResult<Limiter> {
        let mut limiter = match &self.limits {
            Limits::Policy(policy) => Limiter::new(policy.clone()),
            // With a `[store]`, on it, with its `on_error` and `lease`.
            Limits::Config(config) => Limiter::from_config(Config::clone(config)),
        };
        if let Some(redis) = &self.redis {
            let file_store = match &self.limits {
                Limits::Config(config) => config.store().cloned(),
                Limits::Policy(_) => None,
            };
            let store = RedisStore::lazy(redis.url.as_str())
                .map_err(|e| errors::config_error_of(&format!("redis: {e}"), None, "redis"))?;
            // The file's namespace, prefix, deadline and lease, on the Redis given here.
            let store = match &file_store {
                Some(file) => store
                    .namespace(
                        file.prefix(),
                        redis.namespace.as_deref().unwrap_or(file.namespace()),
                    )
                    .timeout(file.timeout())
                    .lease(file.lease()),
                None => store.namespace(
                    DEFAULT_PREFIX,
                    redis.namespace.as_deref().unwrap_or("default"),
                ),
            };
            limiter = limiter.with_store(store);
        }
        if let Some(on_error) = self.on_store_error {
            limiter = limiter.on_store_error(on_error);
        }
        Ok(limiter)
    }
}

/// `on_store_error=`: `"fail_closed"`, `"fail_open"`, or a share in (0, 1] of every limit.
pub(crate) fn on_store_error(value: &Bound<'_, PyAny>) -> PyResult<OnStoreError> {
    if let Ok(name) = value.extract::<String>() {
        return match name.as_str() {
            "fail_closed" => Ok(OnStoreError::FailClosed),
            "fail_open" => Ok(OnStoreError::FailOpen),
            other => Err(errors::config_error_of(
                &format!(
                    "on_store_error is {other:?}: expected \"fail_closed\", \"fail_open\", or a share of every limit in (0, 1], e.g. 0.25"
                ),
                None,
                "on_store_error",
            )),
        };
    }
    match value.extract::<f64>() {
        Ok(share) if share > 0.0 && share <= 1.0 => Ok(OnStoreError::LocalShare(share)),
        _ => Err(errors::config_error_of(
            &format!(
                "on_store_error is {}: expected \"fail_closed\", \"fail_open\", or a share of every limit in (0, 1], e.g. 0.25",
                value.repr().map(|r| r.to_string()).unwrap_or_default()
            ),
            None,
            "on_store_error",
        )),
    }
}
