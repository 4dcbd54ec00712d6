//! [`RpcClient`]: calls, scatter-gather and started calls collected later.

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::properties::Properties;
use crate::publisher::DeclareOnce;
use crate::reply::{ReplyMode, ReplyTransport, RequestSender};
use crate::transport::Publication;

use super::correlation::format_correlation_id;
use super::correlator::{Correlator, RpcCounters};
use super::error::RpcError;
use super::gather::{join_all, GatherSet};
use super::pending::PendingReply;
use super::replies::read_replies;
use super::reply_path::ReplyPath;
use super::request::Request;
use super::wire::encode_request;

/// How an [`RpcClient`] sends and where its replies come back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcClientConfig {
    /// The exchange requests are published to, with [`crate::Message::ROUTING_KEY`]
    /// (`""`: the default exchange, the routing key then names the server's queue).
    pub exchange: String,
    /// Declare [`RpcClientConfig::exchange`] (durable topic, idempotent) before the first
    /// request (default true), so a client started before its servers gets
    /// [`crate::ErrorKind::Unroutable`], not a channel-closing `NOT_FOUND`. Tools that must
    /// not create topology (the `lepus call` command line: a mistyped exchange is an error)
    /// turn it off.
    pub declare_exchange: bool,
    /// Direct reply-to (default) or an exclusive reply queue.
    pub reply_mode: ReplyMode,
    /// Slots of the pending-call table at start (default 1024).
    pub initial_capacity: usize,
    /// Most calls in flight at once (default 65 536): the table doubles up to this, then
    /// [`RpcError::Full`].
    pub max_in_flight: usize,
}

impl RpcClientConfig {
    /// Requests to `exchange`, replies by direct reply-to.
    pub fn new(exchange: impl Into<String>) -> Self {
        RpcClientConfig {
            exchange: exchange.into(),
            reply_mode: ReplyMode::DirectReplyTo,
            declare_exchange: true,
            initial_capacity: 1024,
            max_in_flight: 65_536,
        }
    }

    /// Chooses the reply path.
    #[must_use]
    pub fn reply_mode(mut self, mode: ReplyMode) -> Self {
        self.reply_mode = mode;
        self
    }

    /// Whether to declare the exchange before the first request (see
    /// [`RpcClientConfig::declare_exchange`]).
    #[must_use]
    pub fn declare_exchange(mut self, declare: bool) -> Self {
        self.declare_exchange = declare;
        self
    }

    /// Sets the most calls in flight.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sets the initial table size.
    #[must_use]
    pub fn initial_capacity(mut self, n: usize) -> Self {
        self.initial_capacity = n.max(1);
        self
    }
}

/// Sends typed requests and matches their replies. Cheap to clone: clones share one reply
/// path and one table of pending calls.
///
/// A background task reads the replies and times calls out at their deadlines.
///
/// **Recovery.** When the reply path is lost (channel or connection lost, broker restart,
/// reply queue deleted) the client opens a new one on the recovered connection: a new direct
/// reply-to consumer on a new channel (the broker rewrites each request's `reply_to` to name
/// the channel it came on), or a new exclusive queue (a new [`RpcClient::reply_to`], carried
/// by later requests).
/// - Calls pending at the loss end with [`RpcError::Timeout`] at their own deadline, never
///   earlier and never later: their replies were addressed to the lost path and cannot arrive
///   (direct reply-to is at-most-once). They keep their correlation ids until the deadline, so
///   a reply that does come is counted as late (or matched, if in time), never handed to
///   another call. They are not failed at once: a timeout is what a caller already handles,
///   and the request itself may well have been handled by the server (retrying it is the
///   caller's decision, as after any timeout).
/// - Calls made while the path is down wait for the new one up to their deadline, then end
///   with [`RpcError::Timeout`]. A request whose publish is interrupted by the loss is sent
///   again (same correlation id, new `reply_to`) on the new path until its deadline, so a
///   server may handle such a request twice; only the reply to the new address can reach the
///   caller.
/// - Once the path is open again, calls work as before ([`RpcClient::reopenings`] counts the
///   reopenings).
///
/// [`RpcError::Closed`] only comes when the client can take no more calls: the transport
/// refused to open a reply path for good (a lost connection is not that), see
/// [`RpcClient::is_closed`].
///
/// ```no_run
/// # use lepus::{Message, rpc::{Request, RpcClient}};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct GetAds { user: u64 }
/// # #[derive(serde::Serialize, serde::Deserialize)] struct GetMessages { user: u64 }
/// # impl Message for GetAds { const TYPE: &'static str = "GetAds"; const ROUTING_KEY: &'static str = "ads.get"; }
/// # impl Request for GetAds { type Reply = Vec<u64>; const REPLY_TYPE: &'static str = "Ads"; }
/// # impl Message for GetMessages { const TYPE: &'static str = "GetMessages"; const ROUTING_KEY: &'static str = "messages.get"; }
/// # impl Request for GetMessages { type Reply = Vec<String>; const REPLY_TYPE: &'static str = "Messages"; }
/// # async fn demo() -> lepus::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// let broker = Arc::new(lepus::connect().await?);
/// let client = RpcClient::new(broker, "site").await?;
/// let (ads, messages) = client
///     .gather((&GetAds { user: 7 }, &GetMessages { user: 7 }), Duration::from_secs(2))
///     .await;
/// # let _ = (ads, messages); Ok(()) }
/// ```
pub struct RpcClient<T: ReplyTransport> {
    inner: Arc<Inner<T>>,
}

struct Inner<T: ReplyTransport> {
    path: Arc<ReplyPath<T::Sender>>,
    correlator: Arc<Correlator>,
    config: RpcClientConfig,
    /// The request exchange, declared before the first request.
    declared: DeclareOnce,
    /// The reply task; taken by [`RpcClient::close`].
    task: Mutex<Option<JoinHandle<()>>>,
    transport: Arc<T>,
}

impl<T: ReplyTransport> Drop for Inner<T> {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        self.path.close();
        self.correlator.close();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T: ReplyTransport> Clone for RpcClient<T> {
    fn clone(&self) -> Self {
        RpcClient {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: ReplyTransport> core::fmt::Debug for RpcClient<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RpcClient")
            .field("exchange", &self.inner.config.exchange)
            .field("reply_to", &self.reply_to())
            .field("counters", &self.counters())
            .finish()
    }
}

impl<T: ReplyTransport + 'static> RpcClient<T> {
    /// A client sending to `exchange`, replies by direct reply-to.
    ///
    /// # Errors
    /// Opening the reply channel failed.
    pub async fn new(transport: Arc<T>, exchange: impl Into<String>) -> Result<Self> {
        RpcClient::with_config(transport, RpcClientConfig::new(exchange)).await
    }

    /// A client with `config`. Starts the reply task on the current tokio runtime.
    ///
    /// # Errors
    /// Opening the reply channel failed (the first one: later losses are recovered).
    pub async fn with_config(transport: Arc<T>, config: RpcClientConfig) -> Result<Self> {
        let (sender, receiver) = transport.reply_channel(config.reply_mode).await?;
        let correlator = Arc::new(Correlator::new(
            config.initial_capacity,
            config.max_in_flight,
        ));
        let path = Arc::new(ReplyPath::new(sender));
        let task = tokio::spawn(read_replies(
            Arc::clone(&transport),
            config.reply_mode,
            receiver,
            Arc::clone(&correlator),
            Arc::clone(&path),
        ));
        Ok(RpcClient {
            inner: Arc::new(Inner {
                path,
                correlator,
                config,
                declared: DeclareOnce::default(),
                task: Mutex::new(Some(task)),
                transport,
            }),
        })
    }
}

impl<T: ReplyTransport> RpcClient<T> {
    /// The configuration.
    pub fn config(&self) -> &RpcClientConfig {
        &self.inner.config
    }

    /// The `reply_to` address requests carry now (the last one while the reply path is
    /// down); it changes when the path is opened again after a loss.
    pub fn reply_to(&self) -> String {
        self.inner.path.reply_to()
    }

    /// How many times the reply path was opened again after a loss.
    pub fn reopenings(&self) -> u64 {
        self.inner.path.generation().saturating_sub(1)
    }

    /// True while the reply path is open (false from a loss until it is open again).
    pub fn is_reply_path_up(&self) -> bool {
        self.inner.path.is_up()
    }

    /// Dropped replies by class, calls in flight and the table size.
    pub fn counters(&self) -> RpcCounters {
        self.inner.correlator.counters()
    }

    /// True once the client can take no more calls (every call fails with
    /// [`RpcError::Closed`]): the transport refused to open a reply path for good. A lost
    /// connection does not close the client: its reply path is opened again.
    pub fn is_closed(&self) -> bool {
        self.inner.correlator.is_closed()
    }

    /// Closes the client for good, for every clone: calls in flight end at once with
    /// [`RpcError::Closed`] (their replies, should they come, are dropped), later calls fail
    /// with it, and the reply path is closed (the reply task stops, its channel is closed
    /// with the transport's). Call it before closing the transport (a [`crate::Host`] does):
    /// a client whose transport closes under it takes that for the loss of its reply path.
    /// Closing twice is a no-op; dropping every clone does the same without waiting.
    pub async fn close(&self) {
        let inner = &self.inner;
        // The reply task first, so that it does not take the closing for a loss.
        let task = lock(&inner.task).take();
        if let Some(task) = task {
            task.abort();
            // Returns at once: the task only awaits the broker, which an abort cancels.
            let _ = task.await;
            tracing::debug!(exchange = %inner.config.exchange, "RPC client closed");
        }
        inner.path.close();
        inner.correlator.close();
    }

    /// The transport the client publishes on.
    pub fn transport(&self) -> &Arc<T> {
        &self.inner.transport
    }

    /// Sends `request` and awaits its reply for at most `timeout`.
    ///
    /// # Errors
    /// See [`RpcError`]; never waits past the deadline.
    pub async fn call<R: Request>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Reply, RpcError> {
        self.call_until(request, deadline_after(timeout)).await
    }

    /// As [`RpcClient::call`], with an absolute deadline. What [`RpcClient::gather`] runs
    /// for each of its requests, concurrently.
    ///
    /// # Errors
    /// As [`RpcClient::call`].
    pub async fn call_until<R: Request>(
        &self,
        request: &R,
        deadline: Instant,
    ) -> Result<R::Reply, RpcError> {
        let started = std::time::Instant::now();
        let reply = async {
            let (mut pending, correlation_id) = self.register::<R>(deadline)?;
            let send = self.send_encoded(&correlation_id, R::ROUTING_KEY, deadline, |id, to| {
                encode_request(request, id, to)
            });
            // The reply proves the request arrived: it may overtake the publisher confirm,
            // which is then not waited for. A failed publish ends the call at once.
            tokio::select! {
                biased;
                reply = &mut pending => reply,
                sent = send => {
                    sent?;
                    pending.await
                }
            }
        }
        .await;
        let outcome = match &reply {
            Ok(_) => "ok",
            Err(RpcError::Remote { .. }) => "remote_error",
            Err(RpcError::Timeout) => "timeout",
            Err(_) => "error",
        };
        let labels = [("type", R::TYPE), ("outcome", outcome)];
        let elapsed = started.elapsed().as_secs_f64();
        crate::metrics::seconds(crate::metrics::RPC_CLIENT_DURATION, &labels, elapsed);
        reply
    }

    /// Publishes `request` (returns once the broker confirmed it) and hands back the
    /// [`PendingReply`] to await later; the call times out `timeout` from now.
    ///
    /// # Errors
    /// [`RpcError::Full`], [`RpcError::Closed`], [`RpcError::Timeout`] when the request could
    /// not be sent before the deadline (the reply path stayed down), or
    /// [`RpcError::Transport`] when the publish failed (then nothing is pending).
    pub async fn start<R: Request>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<PendingReply<R>, RpcError> {
        self.start_until(request, deadline_after(timeout)).await
    }

    /// As [`RpcClient::start`], with an absolute deadline.
    ///
    /// # Errors
    /// As [`RpcClient::start`].
    pub async fn start_until<R: Request>(
        &self,
        request: &R,
        deadline: Instant,
    ) -> Result<PendingReply<R>, RpcError> {
        self.start_encoded(R::ROUTING_KEY, deadline, |id, reply_to| {
            encode_request(request, id, reply_to)
        })
        .await
    }

    /// Registers a call, publishes the request `encode` builds from its correlation id and
    /// reply address with `routing_key`, and hands back its [`PendingReply`]. Typed calls
    /// and calls by name ([`super::raw`]) both go through here. Waits for the
    /// reply path while it is down; a publish interrupted by the loss of the path is encoded
    /// again for the next path (its address changed) and sent again, until `deadline`.
    pub(super) async fn start_encoded<R: Request>(
        &self,
        routing_key: &str,
        deadline: Instant,
        encode: impl Fn(&str, &str) -> Result<(Vec<u8>, Properties)> + Send,
    ) -> Result<PendingReply<R>, RpcError> {
        let (pending, correlation_id) = self.register::<R>(deadline)?;
        // Dropping `pending` (an error below, or this future) frees the slot.
        self.send_encoded(&correlation_id, routing_key, deadline, encode)
            .await?;
        Ok(pending)
    }

    /// Takes a slot in the table of pending calls until `deadline`: the pending reply and
    /// its correlation id.
    fn register<R: Request>(
        &self,
        deadline: Instant,
    ) -> Result<(PendingReply<R>, String), RpcError> {
        let inner = &self.inner;
        let (id, rx) = inner.correlator.register(deadline)?;
        let pending = PendingReply::new(id, rx, deadline, Arc::clone(&inner.correlator));
        Ok((pending, format_correlation_id(id)))
    }

    /// Publishes the request of `correlation_id` on the current reply path (waiting for one
    /// while it is down), again on the next path if the loss of this one interrupted it,
    /// until `deadline`.
    async fn send_encoded(
        &self,
        correlation_id: &str,
        routing_key: &str,
        deadline: Instant,
        encode: impl Fn(&str, &str) -> Result<(Vec<u8>, Properties)> + Send,
    ) -> Result<(), RpcError> {
        let inner = &self.inner;
        let declare = async {
            if inner.config.declare_exchange {
                inner
                    .declared
                    .ensure(&*inner.transport, &inner.config.exchange)
                    .await
            } else {
                Ok(())
            }
        };
        match tokio::time::timeout_at(deadline, declare).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(RpcError::Timeout),
        }
        let mut stale = 0;
        loop {
            let (sender, generation) = inner.path.ready(stale, deadline).await?;
            let span = crate::publisher::publish_span(&inner.config.exchange);
            let (body, mut properties) = encode(correlation_id, sender.reply_to())?;
            // Inside the span: its trace context is the request's parent.
            let trace = span.in_scope(|| crate::trace::inject_publish(&mut properties.headers));
            crate::trace::record(&span, &trace);
            span.record("messaging.rabbitmq.destination.routing_key", routing_key);
            crate::publisher::record_properties(&span, &properties);
            let publication =
                Publication::new(&inner.config.exchange, routing_key, &body, &properties);
            let publish = tracing::Instrument::instrument(sender.publish(publication), span);
            match tokio::time::timeout_at(deadline, publish).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) if is_path_loss(&e) => {
                    tracing::debug!(error = %e, generation, "request interrupted by the loss of the reply path; sending it again on the next one");
                    inner.path.lost(generation);
                    stale = generation;
                }
                Ok(Err(e)) if e.kind() == ErrorKind::Nacked => {
                    // The call fails (the request was not stored), and the next ones go out on
                    // a new reply channel: after a quorum queue's leader was lost, RabbitMQ
                    // 3.10 was seen nacking every later request of one channel.
                    tracing::warn!(error = %e, generation, "request nacked; opening a new reply path for the next calls");
                    inner.path.lost(generation);
                    return Err(e.into());
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(RpcError::Timeout),
            }
        }
    }

    /// Sends every request of the tuple `(&A, &B, ...)` at once and awaits all replies
    /// under one deadline, `timeout` from now. Each element of the output is that request's
    /// own reply or error: one failure loses nothing else. Total time is that of the
    /// slowest call.
    pub async fn gather<G: GatherSet>(&self, requests: G, timeout: Duration) -> G::Output {
        requests.gather(self, deadline_after(timeout)).await
    }

    /// Sends every request (of one type) at once and awaits all replies under one deadline;
    /// outcomes in order.
    pub async fn gather_all<R: Request>(
        &self,
        requests: &[R],
        timeout: Duration,
    ) -> Vec<Result<R::Reply, RpcError>> {
        let deadline = deadline_after(timeout);
        join_all(
            requests
                .iter()
                .map(|r| async move {
                    match self.start_until(r, deadline).await {
                        Ok(pending) => pending.await,
                        Err(e) => Err(e),
                    }
                })
                .collect(),
        )
        .await
    }
}

/// The request channel (which is the reply channel) or its connection is gone.
fn is_path_loss(e: &Error) -> bool {
    e.is_connection_error() || e.kind() == ErrorKind::ChannelClosed
}

/// The longest wait of a call; longer timeouts (`Duration::MAX`, a number from a command
/// line) are cut to it, so that the deadline cannot overflow the clock.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The deadline `timeout` from now (at most [`MAX_TIMEOUT`]).
pub(super) fn deadline_after(timeout: Duration) -> Instant {
    Instant::now() + timeout.min(MAX_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_timeout_has_a_deadline() {
        let now = Instant::now();
        let far = deadline_after(Duration::MAX);
        assert!(far >= now + MAX_TIMEOUT, "cut to the longest wait");
        assert!(deadline_after(Duration::from_millis(5)) < far);
    }
}
