//! What the limiter did for a call, left on its response.

use std::time::Duration;

use crate::cost::Cost;

/// How a call went through the limiter: a [`TokenGateMiddleware`](super::TokenGateMiddleware)
/// puts one in the extensions of every response to a call it limited (not to a request that
/// passed through, not limited).
///
/// # Examples
/// ```no_run
/// # async fn f(client: reqwest_middleware::ClientWithMiddleware, body: String) -> Result<(), Box<dyn std::error::Error>> {
/// use tokengate::reqwest::Admission;
///
/// let response = client.post("https://api.openai.com/v1/chat/completions").body(body).send().await?;
/// if let Some(admission) = response.extensions().get::<Admission>() {
///     println!("waited {:?} over {} attempt(s)", admission.waited, admission.attempts);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admission {
    /// From the call to the admission of its last attempt: the waits for admission and,
    /// between attempts, for the 429s' `retry-after`.
    pub waited: Duration,
    /// Attempts sent: 1, plus the retries after 429s.
    pub attempts: u32,
    /// What each attempt reserved.
    pub cost: Cost,
}
