//! Settling a model call's permit from its reply, whatever carries the call: what the reqwest
//! middleware does, for any HTTP client (the Python package's transports use it).

use crate::call::Refused;
use crate::clock::Clock;
use crate::cost::Usage;
use crate::estimate::Estimator;
use crate::feedback::usage::{CachedInput, ReplyUsage};
use crate::limiter::Permit;

/// How a reply's usage is read, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyKind {
    /// `text/event-stream`: read the usage from the events as they pass
    /// ([`StreamUsage`](crate::feedback::usage::StreamUsage)).
    EventStream,
    /// JSON, or no type at all: read the usage from the whole body
    /// ([`ReplyUsage::from_json`]).
    Json,
    /// Anything else (audio, images): no usage to read.
    Other,
}

impl ReplyKind {
    /// The kind of a reply whose `Content-Type` is `content_type` (`None`: it has none).
    ///
    /// # Examples
    /// ```
    /// use tokengate::call::ReplyKind;
    ///
    /// assert_eq!(ReplyKind::of(Some("text/event-stream; charset=utf-8")), ReplyKind::EventStream);
    /// assert_eq!(ReplyKind::of(Some("application/problem+json")), ReplyKind::Json);
    /// assert_eq!(ReplyKind::of(None), ReplyKind::Json);
    /// assert_eq!(ReplyKind::of(Some("audio/mpeg")), ReplyKind::Other);
    /// ```
    pub fn of(content_type: Option<&str>) -> Self {
        let essence = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence == "text/event-stream" {
            ReplyKind::EventStream
        } else if essence.is_empty() || essence == "application/json" || essence.ends_with("+json")
        {
            ReplyKind::Json
        } else {
            ReplyKind::Other
        }
    }
}

/// A call's permit waiting for its reply, and what settling it needs: settled from the reply's
/// usage (the estimator learning from complete figures, as it prices later calls), or as the
/// provider counts a call it refused, or one it never got.
///
/// # Examples
/// ```
/// use tokengate::call::PendingCall;
/// use tokengate::estimate::Estimator;
/// use tokengate::feedback::usage::ReplyUsage;
/// use tokengate::{Cost, Limiter, ManualClock, Policy};
///
/// let policy = Policy::builder().output_tokens_per_minute(8_000).build()?;
/// let limiter = Limiter::with_clock(policy, ManualClock::new());
/// let permit = limiter.try_acquire(Cost::request().input(20).output(800))?.into_owned();
/// let pending = PendingCall::new(permit, Estimator::new(), Some("claude-sonnet-4".into()));
/// let body = br#"{"type":"message","usage":{"input_tokens":20,"output_tokens":312}}"#;
/// pending.settle(ReplyUsage::from_json(body).ok());
/// assert_eq!(limiter.stats().limits[0].used, 312); // Anthropic counts what was produced
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PendingCall<C: Clock> {
    permit: Permit<'static, C>,
    cached: CachedInput,
    estimator: Estimator,
    model: Option<String>,
    heuristic: Option<u64>,
}

impl<C: Clock> PendingCall<C> {
    /// `permit`'s call to `model` (if known), whose complete usage `estimator` learns from.
    pub fn new(permit: Permit<'static, C>, estimator: Estimator, model: Option<String>) -> Self {
        Self {
            permit,
            cached: CachedInput::default(),
            estimator,
            model,
            heuristic: None,
        }
    }

    /// How cached input is charged (as the provider counts it unless set).
    pub fn cached_input(mut self, cached: CachedInput) -> Self {
        self.cached = cached;
        self
    }

    /// The heuristic's own count of the input, when the estimator priced the call and learns
    /// input counts ([`Estimator::heuristic_input`]).
    pub fn heuristic_input(mut self, heuristic: Option<u64>) -> Self {
        self.heuristic = heuristic;
        self
    }

    /// Settles with the usage of `reply`; with none, the reservation stands (the permit is
    /// dropped unsettled), as [`Key::run`](crate::Key::run) does for a call it cannot
    /// account.
    pub fn settle(self, reply: Option<ReplyUsage>) {
        match reply {
            Some(reply) => {
                if reply.complete {
                    if let Some(model) = &self.model {
                        self.estimator.observe_output(model, reply.output_tokens);
                        if let Some(heuristic) = self.heuristic {
                            self.estimator
                                .observe_input(model, heuristic, reply.input_tokens);
                        }
                    }
                }
                self.permit.settle(reply.usage(self.cached));
            }
            None => drop(self.permit),
        }
    }

    /// Settles a call the provider did not process (a refused connection): no tokens, the
    /// request itself still counted.
    pub fn settle_unprocessed(self) {
        self.permit.settle(Usage::new().input(0).output(0));
    }

    /// Settles a call the provider refused with a 429, as `refused` says it counts one.
    pub fn settle_refused(self, refused: Refused) {
        refused.settle(self.permit);
    }

    /// Ends the permit without a usage (the call failed after it was sent, or was given up):
    /// its in-flight slot is freed, its reservation stands.
    pub fn release(self) {
        drop(self.permit);
    }
}
