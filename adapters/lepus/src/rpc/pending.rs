//! A started call whose reply is awaited later.

use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::{Duration, Instant, Sleep};

use super::correlation::format_correlation_id;
use super::correlator::{Correlator, Outcome};
use super::error::RpcError;
use super::request::Request;
use super::wire::decode_reply;

/// How long after its deadline a [`PendingReply`] stops waiting for the client's reply task
/// to report the timeout (a guard: that task normally reports it at the deadline).
const GUARD: Duration = Duration::from_millis(250);

/// A request that was published; await it for the typed reply. Dropping it cancels the
/// call (its slot is freed; a later reply is dropped and counted as cancelled).
///
/// It resolves by its deadline at the latest: the reply, the server's error, a decode
/// error, [`RpcError::Timeout`] (also when the reply path was lost after the request was sent:
/// the reply cannot arrive any more, see [`super::RpcClient`]), or [`RpcError::Closed`] when
/// the client was closed for good.
#[must_use = "a pending reply does nothing unless awaited; dropping it cancels the call"]
pub struct PendingReply<R: Request> {
    id: u128,
    rx: oneshot::Receiver<Outcome>,
    guard: Pin<Box<Sleep>>,
    correlator: Arc<Correlator>,
    deadline: Instant,
    done: bool,
    _request: PhantomData<fn() -> R>,
}

impl<R: Request> core::fmt::Debug for PendingReply<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PendingReply")
            .field("type", &R::TYPE)
            .field("correlation_id", &self.correlation_id())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<R: Request> PendingReply<R> {
    pub(crate) fn new(
        id: u128,
        rx: oneshot::Receiver<Outcome>,
        deadline: Instant,
        correlator: Arc<Correlator>,
    ) -> Self {
        PendingReply {
            id,
            rx,
            guard: Box::pin(tokio::time::sleep_until(deadline + GUARD)),
            correlator,
            deadline,
            done: false,
            _request: PhantomData,
        }
    }

    /// The request's correlation id, as sent.
    pub fn correlation_id(&self) -> String {
        format_correlation_id(self.id)
    }

    /// When the call times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl<R: Request> Future for PendingReply<R> {
    type Output = Result<R::Reply, RpcError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Err(RpcError::Closed));
        }
        if let Poll::Ready(outcome) = Pin::new(&mut this.rx).poll(cx) {
            this.done = true;
            return Poll::Ready(match outcome {
                Ok(Ok(reply)) => decode_reply::<R::Reply>(&reply),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(RpcError::Closed),
            });
        }
        if this.guard.as_mut().poll(cx).is_ready() {
            this.done = true;
            this.correlator.cancel(this.id);
            return Poll::Ready(Err(RpcError::Timeout));
        }
        Poll::Pending
    }
}

impl<R: Request> Drop for PendingReply<R> {
    fn drop(&mut self) {
        if !self.done {
            self.correlator.cancel(self.id);
        }
    }
}
