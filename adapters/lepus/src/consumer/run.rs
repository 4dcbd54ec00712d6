//! Running one handler: panics caught, the handler timeout applied.

use core::future::Future;
use core::pin::Pin;
use std::time::Duration;

use super::counters::{bump, Counters};
use crate::catch_unwind::CatchUnwind;
use crate::events::Field;
use crate::handlers::HandlerError;
use crate::metrics;

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

/// Runs `future` under `timeout`, catching a panic; counts panics and timeouts, and the
/// run's outcome and duration by message type (see [`crate::metrics`]).
pub(crate) async fn run_handler<T: Send + 'static>(
    future: Pin<Box<dyn Future<Output = Result<T, HandlerError>> + Send>>,
    timeout: Option<Duration>,
    counters: &Counters,
    type_name: &'static str,
    message_id: Option<&str>,
) -> HandlerRun<T> {
    let started = std::time::Instant::now();
    let run = run(future, timeout, counters).await;
    let outcome = match &run {
        HandlerRun::Finished(Ok(_)) => "ok",
        HandlerRun::Finished(Err(_)) => "error",
        HandlerRun::Panicked(_) => "panic",
        HandlerRun::TimedOut(_) => "timeout",
    };
    let labels = [
        ("queue", counters.queue.as_str()),
        ("type", type_name),
        ("outcome", outcome),
    ];
    metrics::count(metrics::MESSAGES_HANDLED, &labels);
    let elapsed = started.elapsed().as_secs_f64();
    metrics::seconds(metrics::HANDLER_DURATION, &labels, elapsed);
    counters.event("handled", |emit| {
        let timed_out;
        let error = match &run {
            HandlerRun::Finished(Err(e)) => Some(e.message()),
            HandlerRun::Panicked(panic) => Some(panic.as_str()),
            HandlerRun::TimedOut(limit) => {
                timed_out = format!("timed out after {limit:?}");
                Some(timed_out.as_str())
            }
            HandlerRun::Finished(Ok(_)) => None,
        };
        emit(&[
            ("type", Field::Str(Some(type_name))),
            ("id", Field::Str(message_id)),
            ("outcome", Field::Str(Some(outcome))),
            ("ms", Field::F64(elapsed * 1000.0)),
            ("error", Field::Str(error)),
        ]);
    });
    run
}

async fn run<T: Send + 'static>(
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
