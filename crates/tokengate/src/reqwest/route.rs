//! Which limits a request is charged on: the tenant (from a [`Tenant`] extension or a
//! configured header) and the model (from the body).

use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName};

use crate::clock::Clock;
use crate::limiter::{Key, Limiter};

/// The tenant a request is made for, set as a request extension:
/// `client.post(url).with_extension(Tenant::new("acme"))`.
///
/// On a limiter built from a config ([`Limiter::from_config`]), the tenant and the model read
/// from the body pick the budgets a call is charged on, together ([`Limiter::key`]); on a
/// limiter of one policy, every call shares its limits. A request without one may name it in a header instead
/// ([`GateConfig::with_tenant_header`](super::GateConfig::with_tenant_header)).
///
/// # Examples
/// ```
/// use tokengate::reqwest::Tenant;
///
/// let tenant = Tenant::new("acme");
/// assert_eq!(tenant.as_str(), "acme");
/// assert_eq!(tenant.to_string(), "acme");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// The tenant named `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// Its name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tenant of a request: its [`Tenant`] extension, else the value of `header` (removed from
/// the request), else none.
pub(super) fn tenant_of(
    extensions: &Extensions,
    headers: &mut HeaderMap,
    header: Option<&HeaderName>,
) -> Option<Tenant> {
    let from_header = header
        .and_then(|name| headers.remove(name))
        .and_then(|value| value.to_str().ok().map(|s| Tenant::new(s.trim())));
    extensions.get::<Tenant>().cloned().or(from_header)
}

/// The key a call for `tenant` on `model` is charged on, and whose state the provider's
/// headers correct: on a limiter built from a config, the model's (or family's) and the
/// tenant's budgets together; on a limiter of one policy, that policy. Every acquisition and
/// observation of the middleware goes through here.
pub(super) fn limits_for<'a, C: Clock>(
    limiter: &'a Limiter<C>,
    tenant: Option<&Tenant>,
    model: Option<&str>,
) -> Key<'a, C> {
    limiter.key_of(tenant.map(Tenant::as_str), model)
}
