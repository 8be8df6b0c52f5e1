//! The middleware: estimate, acquire, send, observe the headers, settle from the reply.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::reqwest::header::CONTENT_TYPE;
use ::reqwest::{Body, Request, Response, ResponseBuilderExt, StatusCode};
use http::Extensions;
use reqwest_middleware::{Middleware, Next};

use super::route::{limits_for, tenant_of};
use super::settle::{MeteredBody, Pending};
use super::{Admission, ApiFormat, ChatRequest, GateConfig};
use crate::call::ReplyKind;
use crate::call::{Deadline, RetryCount};
use crate::clock::{Clock, SystemClock};
use crate::cost::Cost;
use crate::error::AcquireError;
use crate::estimate::Estimator;
use crate::feedback::usage::ReplyUsage;
use crate::feedback::ProviderReport;
use crate::limiter::{Key, Limiter, Permit};

/// A user's cost function: see [`TokenGateMiddleware::with_cost_fn`].
type CostFn = dyn Fn(&Request, Option<&ChatRequest>) -> Option<Cost> + Send + Sync;

/// A [`reqwest_middleware::Middleware`] that limits OpenAI- and Anthropic-style model calls
/// with a [`Limiter`], settles each from its reply's `usage`, and corrects the limiter from the
/// provider's rate-limit headers. See the [module docs](super) for the path of a call.
///
/// Cheap to clone (the limiter and estimator are shared handles).
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tokengate::estimate::Estimator;
/// use tokengate::reqwest::TokenGateMiddleware;
/// use tokengate::{Cost, Limiter, Policy};
///
/// let limiter = Limiter::new(Policy::builder().requests_per_minute(500).tokens_per_minute(30_000).build()?);
/// let gate = TokenGateMiddleware::new(limiter)
///     .with_timeout(Duration::from_secs(60))
///     .with_estimator(Estimator::builder().default_max_tokens(1_024).build()?)
///     // Price image generations by hand; everything else as estimated.
///     .with_cost_fn(|request, chat| {
///         if request.url().path().ends_with("/images/generations") {
///             return Some(Cost::request());
///         }
///         chat.map(|chat| chat.cost(&Estimator::new()))
///     });
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).with(gate).build();
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
pub struct TokenGateMiddleware<C: Clock = SystemClock> {
    limiter: Limiter<C>,
    estimator: Estimator,
    config: GateConfig,
    cost_fn: Option<Arc<CostFn>>,
    /// Retries so far (shared by clones): the jitter of each retry's wait is drawn from it.
    retried: RetryCount,
}

impl<C: Clock> TokenGateMiddleware<C> {
    /// Limits calls with `limiter`, estimating them with [`Estimator::new`] (the heuristic, or
    /// OpenAI's tokenizers with the `tiktoken` feature; `max_tokens` reserved for output),
    /// with the default [`GateConfig`].
    ///
    /// # Examples
    /// ```
    /// use tokengate::reqwest::TokenGateMiddleware;
    /// use tokengate::{Limiter, Policy};
    ///
    /// // Anthropic-style limits: requests, input and output tokens per minute.
    /// let policy = Policy::builder()
    ///     .requests_per_minute(50)
    ///     .input_tokens_per_minute(30_000)
    ///     .output_tokens_per_minute(8_000)
    ///     .build()?;
    /// let gate = TokenGateMiddleware::new(Limiter::new(policy));
    /// assert_eq!(gate.config().timeout(), None);
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).with(gate).build();
    /// # let _ = client;
    /// # Ok::<(), tokengate::BuildError>(())
    /// ```
    pub fn new(limiter: Limiter<C>) -> Self {
        Self {
            limiter,
            estimator: Estimator::new(),
            config: GateConfig::default(),
            cost_fn: None,
            retried: RetryCount::default(),
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: GateConfig) -> Self {
        self.config = config;
        self
    }

    /// Gives up on admission after `timeout`; see [`GateConfig::with_timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.with_timeout(timeout);
        self
    }

    /// Estimates calls with `estimator` (another default `max_tokens`, learned output
    /// reservations: complete replies are fed to [`Estimator::observe_output`]).
    pub fn with_estimator(mut self, estimator: Estimator) -> Self {
        self.estimator = estimator;
        self
    }

    /// Computes each request's cost with `cost_fn` instead: it gets the request and, when it
    /// is a model call, what was read from its body; `None` lets the request pass through,
    /// not limited. Replies are still read and settled as usual.
    ///
    /// # Examples
    /// ```
    /// use tokengate::estimate::Estimator;
    /// use tokengate::reqwest::TokenGateMiddleware;
    /// use tokengate::{Cost, Limiter, Policy};
    ///
    /// let limiter = Limiter::new(Policy::builder().tokens_per_minute(30_000).build()?);
    /// let estimator = Estimator::new();
    /// // Add a margin of 10% to every estimated prompt; count nothing else.
    /// let gate = TokenGateMiddleware::new(limiter).with_cost_fn(move |_request, chat| {
    ///     let cost = chat?.cost(&estimator);
    ///     let input = cost.input_tokens() + cost.input_tokens() / 10;
    ///     Some(Cost::request().input(input).output(cost.output_tokens()))
    /// });
    /// # let _ = gate;
    /// # Ok::<(), tokengate::BuildError>(())
    /// ```
    pub fn with_cost_fn<F>(mut self, cost_fn: F) -> Self
    where
        F: Fn(&Request, Option<&ChatRequest>) -> Option<Cost> + Send + Sync + 'static,
    {
        self.cost_fn = Some(Arc::new(cost_fn));
        self
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter<C> {
        &self.limiter
    }

    /// The estimator.
    pub fn estimator(&self) -> &Estimator {
        &self.estimator
    }

    /// The configuration.
    pub fn config(&self) -> &GateConfig {
        &self.config
    }

    /// The cost of `request`: the user's function, else the estimate of a model call, else the
    /// configured default cost (or none: not limited).
    fn cost_of(&self, request: &Request, chat: Option<&ChatRequest>) -> Option<Cost> {
        match &self.cost_fn {
            Some(cost_fn) => cost_fn(request, chat),
            None => match chat {
                Some(chat) => Some(chat.cost(&self.estimator)),
                None => self.config.default_cost().cloned(),
            },
        }
    }

    /// Acquires `cost` on `key`, waiting at most `left` (what is left of the timeout), if
    /// given.
    async fn acquire(
        &self,
        key: &Key<'_, C>,
        cost: Cost,
        left: Option<Duration>,
    ) -> Result<Permit<'static, C>, AcquireError> {
        let permit = match left {
            Some(left) => key.acquire_timeout(cost, left).await?,
            None => key.acquire(cost).await?,
        };
        Ok(permit.into_owned())
    }
}

/// What was read from a request: a model call, if it is one.
fn read_chat(request: &Request) -> Option<ChatRequest> {
    if request.method() != ::reqwest::Method::POST {
        return None;
    }
    let format = ApiFormat::from_path(request.url().path())?;
    let body = request.body()?.as_bytes()?;
    ChatRequest::from_json(format, body)
}

#[async_trait::async_trait]
impl<C: Clock> Middleware for TokenGateMiddleware<C> {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let tenant = tenant_of(
            extensions,
            request.headers_mut(),
            self.config.tenant_header(),
        );
        let chat = read_chat(&request);
        let model = chat.as_ref().and_then(|c| c.model.clone());
        let limits = limits_for(&self.limiter, tenant.as_ref(), model.as_deref());

        let cost = self
            .cost_of(&request, chat.as_ref())
            .filter(|c| !c.is_zero());
        let retry = self.config.retry();
        let mut retried = 0;
        // One deadline for every admission and retry of the call, from when it asked; when its
        // last attempt was admitted, and attempts sent.
        let deadline = Deadline::new(self.limiter.clock(), self.config.timeout());
        let asked = deadline.started();
        let (mut admitted, mut attempts) = (asked, 0);
        let (mut response, pending, report) = loop {
            let permit = match cost.clone() {
                Some(cost) => Some(
                    self.acquire(&limits, cost, deadline.left())
                        .await
                        .map_err(reqwest_middleware::Error::middleware)?,
                ),
                None => None,
            };
            attempts += 1;
            if let Some(permit) = &permit {
                admitted = permit.admitted_at();
            }
            let pending = permit.map(|permit| {
                Pending::new(permit, self.estimator.clone(), model.clone())
                    .cached_input(self.config.cached_input())
                    .heuristic_input(
                        chat.as_ref()
                            .filter(|_| self.cost_fn.is_none())
                            .and_then(|chat| self.estimator.heuristic_input(chat)),
                    )
            });
            // A copy for a retry, when one may follow and the body can be copied (a body in
            // memory; a stream cannot be sent twice).
            let copy = (retried < retry.retries())
                .then(|| request.try_clone())
                .flatten();
            let response = match next.clone().run(request, extensions).await {
                Ok(response) => response,
                Err(error) => {
                    if let Some(pending) = pending {
                        if error.is_connect() {
                            // Refused or unreachable: the provider never saw the call.
                            pending.settle_unprocessed();
                        }
                        // Anything else (a timeout, a broken connection) may have reached the
                        // provider: the reservation stands.
                    }
                    return Err(error);
                }
            };
            let report = ProviderReport::from_headers(response.headers(), SystemTime::now());
            #[cfg(feature = "tracing")]
            for ignored in &report.ignored {
                tracing::debug!(target: "tokengate::reqwest", "{ignored}");
            }
            if response.status() != StatusCode::TOO_MANY_REQUESTS {
                break (response, pending, Some(report));
            }
            // Settled first, as the provider counts a refused call: the limits the 429 lowers
            // no longer take back the tokens of permits admitted before.
            if let Some(pending) = pending {
                pending.settle_refused(retry.refused());
            }
            if self.config.feedback() {
                limits.observe_throttled(&report);
            }
            let wait = copy
                .as_ref()
                .and_then(|_| retry.wait(retried, &report, self.retried.next()))
                .filter(|&wait| deadline.allows(wait));
            let (Some(copy), Some(wait)) = (copy, wait) else {
                // The last attempt: the caller gets this 429, and what the limiter did.
                break (response, None, None);
            };
            // Retried through the limiter, after the wait the provider asked for (with up to a
            // tenth more, so that the retries of many callers do not come back together).
            retried += 1;
            tokio::time::sleep(wait).await;
            request = copy;
        };
        if let Some(cost) = cost {
            response.extensions_mut().insert(Admission {
                waited: Duration::from_nanos(admitted.saturating_sub(asked)),
                attempts,
                cost,
            });
        }
        // A reply that is no 429 (a 429's was observed as one).
        let Some(report) = report else {
            return Ok(response);
        };
        if self.config.feedback() {
            limits.observe(&report);
        }

        let Some(pending) = pending else {
            return Ok(response);
        };
        match reply_kind(&response) {
            ReplyKind::EventStream => Ok(stream_reply(response, pending)),
            ReplyKind::Json => json_reply(response, pending).await,
            _ => {
                // Audio, images, ...: no usage to read; the reservation stands.
                pending.release();
                Ok(response)
            }
        }
    }
}

/// How the usage of `response` is read, from its `Content-Type`.
fn reply_kind(response: &Response) -> ReplyKind {
    let content_type = response.headers().get(CONTENT_TYPE);
    ReplyKind::of(content_type.map(|v| v.to_str().unwrap_or("")))
}

/// The parts of a response to rebuild it around a new body.
struct Head {
    status: StatusCode,
    version: ::reqwest::Version,
    url: ::reqwest::Url,
    headers: ::reqwest::header::HeaderMap,
    extensions: Extensions,
}

impl Head {
    fn take(response: &mut Response) -> Self {
        Self {
            status: response.status(),
            version: response.version(),
            url: response.url().clone(),
            headers: std::mem::take(response.headers_mut()),
            extensions: std::mem::take(response.extensions_mut()),
        }
    }

    fn with_body(self, body: Body) -> Response {
        let mut builder = http::Response::builder()
            .status(self.status)
            .version(self.version)
            .url(self.url);
        if let Some(headers) = builder.headers_mut() {
            *headers = self.headers;
        }
        if let Some(extensions) = builder.extensions_mut() {
            extensions.extend(self.extensions);
        }
        match builder.body(body) {
            Ok(response) => Response::from(response),
            // Every part came from a valid response.
            Err(_) => unreachable!("a response's own parts are valid"),
        }
    }
}

/// Passes the body on as it arrives, settling when the stream ends or is dropped.
fn stream_reply<C: Clock>(mut response: Response, pending: Pending<C>) -> Response {
    let head = Head::take(&mut response);
    let body = MeteredBody::new(Body::from(response), pending);
    head.with_body(Body::wrap(body))
}

/// Reads the whole body, settles with its usage, and hands the caller the same response.
async fn json_reply<C: Clock>(
    mut response: Response,
    pending: Pending<C>,
) -> reqwest_middleware::Result<Response> {
    let head = Head::take(&mut response);
    // An error reading the body drops `pending`: the reservation stands.
    let bytes = response.bytes().await?;
    let reply = ReplyUsage::from_json(&bytes);
    #[cfg(feature = "tracing")]
    if let Err(error) = &reply {
        tracing::debug!(target: "tokengate::reqwest", status = head.status.as_u16(), "no usage in the reply: {error}");
    }
    pending.settle(reply.ok());
    Ok(head.with_body(Body::from(bytes)))
}

impl<C: Clock> Clone for TokenGateMiddleware<C> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            estimator: self.estimator.clone(),
            config: self.config.clone(),
            cost_fn: self.cost_fn.clone(),
            retried: self.retried.clone(),
        }
    }
}

impl<C: Clock + fmt::Debug> fmt::Debug for TokenGateMiddleware<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGateMiddleware")
            .field("limiter", &self.limiter)
            .field("estimator", &self.estimator)
            .field("config", &self.config)
            .field("cost_fn", &self.cost_fn.as_ref().map(|_| "..."))
            .finish()
    }
}
