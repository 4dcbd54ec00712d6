//! Running one handler: panics caught, the handler timeout applied.

use core::future::Future;
use core::pin::Pin;
use std::time::Duration;

use super::counters::{bump, Counters};
use crate::catch_unwind::CatchUnwind;
use crate::handlers::HandlerError;

/// How a handler's run ended.
#[derive(Debug)]
pub(crate) enum HandlerRun<T> {
    /// It returned.
    Finished(Result<T, HandlerError>),
    /// It panicked, with this message.
    Panicked(String),
    /// It ran past the handler timeout and was dropped.
    TimedOut(Duration),
}

/// Runs `future` under `timeout`, catching a panic; counts panics and timeouts.
pub(crate) async fn run_handler<T: Send + 'static>(
    future: Pin<Box<dyn Future<Output = Result<T, HandlerError>> + Send>>,
    timeout: Option<Duration>,
    counters: &Counters,
) -> HandlerRun<T> {
    let caught = CatchUnwind(future);
    let finished = match timeout {
        Some(limit) => match tokio::time::timeout(limit, caught).await {
            Ok(finished) => finished,
            Err(_) => {
                bump(&counters.timed_out);
                tracing::warn!(?limit, "handler timed out");
                return HandlerRun::TimedOut(limit);
            }
        },
        None => caught.await,
    };
    match finished {
        Ok(result) => HandlerRun::Finished(result),
        Err(panic) => {
            bump(&counters.panicked);
            tracing::error!(panic = %panic, "handler panicked");
            HandlerRun::Panicked(panic)
        }
    }
}
