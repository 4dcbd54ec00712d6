//! [`RpcClient`]: calls, scatter-gather and started calls collected later.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use crate::error::Result;
use crate::properties::Properties;
use crate::reply::{ReplyMode, ReplyReceiver, ReplyTransport, RequestSender};
use crate::transport::Publication;

use super::correlation::format_correlation_id;
use super::correlator::{Correlator, RpcCounters};
use super::error::RpcError;
use super::gather::{join_all, GatherSet};
use super::pending::PendingReply;
use super::request::Request;
use super::wire::encode_request;

/// How an [`RpcClient`] sends and where its replies come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcClientConfig {
    /// The exchange requests are published to, with [`crate::Message::ROUTING_KEY`]
    /// (`""`: the default exchange, the routing key then names the server's queue).
    pub exchange: String,
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
/// channel and one table of pending calls.
///
/// A background task reads the replies and times calls out at their deadlines; when the
/// reply consumer dies (channel or connection lost) every pending call fails at once with
/// [`RpcError::Closed`], and so do later calls: open a new client.
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
    sender: T::Sender,
    correlator: Arc<Correlator>,
    config: RpcClientConfig,
    task: JoinHandle<()>,
    _transport: Arc<T>,
}

impl<T: ReplyTransport> Drop for Inner<T> {
    fn drop(&mut self) {
        self.task.abort();
        self.correlator.close();
    }
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
    /// Opening the reply channel failed.
    pub async fn with_config(transport: Arc<T>, config: RpcClientConfig) -> Result<Self> {
        let (sender, receiver) = transport.reply_channel(config.reply_mode).await?;
        let correlator = Arc::new(Correlator::new(
            config.initial_capacity,
            config.max_in_flight,
        ));
        let task = tokio::spawn(read_replies(receiver, Arc::clone(&correlator)));
        Ok(RpcClient {
            inner: Arc::new(Inner {
                sender,
                correlator,
                config,
                task,
                _transport: transport,
            }),
        })
    }
}

impl<T: ReplyTransport> RpcClient<T> {
    /// The configuration.
    pub fn config(&self) -> &RpcClientConfig {
        &self.inner.config
    }

    /// The `reply_to` address requests carry.
    pub fn reply_to(&self) -> &str {
        self.inner.sender.reply_to()
    }

    /// Dropped replies by class, calls in flight and the table size.
    pub fn counters(&self) -> RpcCounters {
        self.inner.correlator.counters()
    }

    /// True once the reply consumer is gone: every call fails with [`RpcError::Closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.correlator.is_closed()
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
        self.start(request, timeout).await?.await
    }

    /// Publishes `request` (returns once the broker confirmed it) and hands back the
    /// [`PendingReply`] to await later; the call times out `timeout` from now.
    ///
    /// # Errors
    /// [`RpcError::Full`], [`RpcError::Closed`], or [`RpcError::Transport`] when the publish
    /// failed (then nothing is pending).
    pub async fn start<R: Request>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<PendingReply<R>, RpcError> {
        self.start_until(request, Instant::now() + timeout).await
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
    /// and calls by name ([`super::raw`]) both go through here.
    pub(super) async fn start_encoded<R: Request>(
        &self,
        routing_key: &str,
        deadline: Instant,
        encode: impl FnOnce(&str, &str) -> Result<(Vec<u8>, Properties)> + Send,
    ) -> Result<PendingReply<R>, RpcError> {
        let inner = &self.inner;
        let (id, rx) = inner.correlator.register(deadline)?;
        // From here on, dropping `pending` (an error below, or this future) frees the slot.
        let pending = PendingReply::new(id, rx, deadline, Arc::clone(&inner.correlator));
        let correlation_id = format_correlation_id(id);
        let (body, properties) = encode(&correlation_id, inner.sender.reply_to())?;
        inner
            .sender
            .publish(Publication::new(
                &inner.config.exchange,
                routing_key,
                &body,
                &properties,
            ))
            .await?;
        Ok(pending)
    }

    /// Sends every request of the tuple `(&A, &B, ...)` at once and awaits all replies
    /// under one deadline, `timeout` from now. Each element of the output is that request's
    /// own reply or error: one failure loses nothing else. Total time is that of the
    /// slowest call.
    pub async fn gather<G: GatherSet>(&self, requests: G, timeout: Duration) -> G::Output {
        requests.gather(self, Instant::now() + timeout).await
    }

    /// Sends every request (of one type) at once and awaits all replies under one deadline;
    /// outcomes in order.
    pub async fn gather_all<R: Request>(
        &self,
        requests: &[R],
        timeout: Duration,
    ) -> Vec<Result<R::Reply, RpcError>> {
        let deadline = Instant::now() + timeout;
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

/// The reply task: hands replies to their callers, times calls out, and fails everything
/// once the reply consumer ends.
async fn read_replies<Rx: ReplyReceiver>(mut receiver: Rx, correlator: Arc<Correlator>) {
    loop {
        let next = correlator.next_deadline();
        tokio::select! {
            biased;
            reply = receiver.next() => match reply {
                Some(reply) => correlator.complete(reply),
                None => {
                    tracing::warn!("RPC reply consumer ended; failing pending calls");
                    correlator.close();
                    return;
                }
            },
            () = sleep_until(next) => correlator.expire_due(),
            () = correlator.wake.notified() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => core::future::pending().await,
    }
}
