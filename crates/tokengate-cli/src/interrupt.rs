//! Ctrl-C during a real-time run: it ends the run early, and the report covers what happened
//! until then (rather than the process dying with nothing printed).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Waits for Ctrl-C, once; in virtual time (or when the signal cannot be caught), never.
pub(crate) struct Interrupt {
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Interrupt {
    /// Catches Ctrl-C from now on when `catch`; otherwise never fires. Polls the signal once,
    /// which installs its handler: a Ctrl-C from then on is caught.
    pub(crate) async fn arm(catch: bool) -> Self {
        if !catch {
            return Self { signal: None };
        }
        let mut signal: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async {
            if tokio::signal::ctrl_c().await.is_err() {
                // No handler could be installed: Ctrl-C ends the process as it would anyway.
                std::future::pending::<()>().await;
            }
        });
        let first = std::future::poll_fn(|cx| Poll::Ready(signal.as_mut().poll(cx))).await;
        Self {
            signal: first.is_pending().then_some(signal),
        }
    }

    /// Whether it can still fire.
    pub(crate) fn armed(&self) -> bool {
        self.signal.is_some()
    }

    /// Resolves at Ctrl-C; after it has fired once (or when not armed), never.
    pub(crate) async fn wait(&mut self) {
        match &mut self.signal {
            Some(signal) => {
                signal.await;
                self.signal = None;
            }
            None => std::future::pending().await,
        }
    }
}
