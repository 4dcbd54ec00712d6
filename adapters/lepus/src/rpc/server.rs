//! [`RpcServer`]: typed request handlers on a queue, replies to `reply_to`.
//!
//! The server is the reply policy on the consumer runtime ([`crate::consumer`]), which gives
//! it what a worker has: a body limit, a delivery limit (a request that crashed or hung its
//! servers ends dead-lettered with a `delivery-limit` error reply, not in a loop), a handler
//! timeout (a `timed-out` error reply), panic capture, batched acks and the give-back at
//! shutdown. An oversized request is dead-lettered and answered with `too-large`.
//!
//! For each request: the handler runs (a panic is caught), the reply (or a typed remote
//! error, [`super::HEADER_RPC_ERROR`]) is published through the default exchange to the
//! request's `reply_to` (else its envelope's `response_queue`) with the request's
//! `correlation_id`, and only once the broker confirmed the reply is the request acked.
//! An unroutable reply (the requester's reply queue is gone) is logged and counted, and the
//! request acked. Replies to direct reply-to names are at-most-once and cannot be confirmed
//! as routed (RabbitMQ returns them as unroutable even when it delivers them): they count
//! as sent. A request without a reply address is handled as a
//! plain message or dead-lettered ([`NoReplyPolicy`]).

use core::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::consumer::{
    bump, requeue, run_handler, serve, ConsumerConfig, Counters, DeadLetter, HandlerRun, Policy,
    Refusal, Runtime, Slot, Verdict,
};
use crate::core::envelope::{decode_json_raw_with, DecodeError, RawEnvelope};
use crate::core::redelivery::DEFAULT_DELIVERY_LIMIT;
use crate::core::retry::DeadLetterReason;
use crate::delivery::Delivery;
use crate::error::Result;
use crate::events::Field;
use crate::handlers::{Context, HandlerError, HandlerErrorKind, HandlerTable};
use crate::topology::QueueSpec;
use crate::transport::{Publication, Transport};

use super::error::RemoteErrorKind;
use super::request::Request;
use super::wire::{encode_error_reply, encode_reply};

/// What to do with a request that names no reply address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum NoReplyPolicy {
    /// Run the handler as for a plain message and drop its result (default).
    #[default]
    Handle,
    /// Move it to the queue's dead-letter queue (`<queue>.dead`) without running it.
    DeadLetter,
}

/// The queue an [`RpcServer`] consumes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcServerConfig {
    /// The queue, its exchange and bindings, and its delivery limit.
    pub queue: QueueSpec,
    /// Prefetch (default 64), concurrency (default 32), body limit, handler timeout and
    /// shutdown timeout (default 5 s).
    pub consumer: ConsumerConfig,
    /// Requests without a reply address.
    pub no_reply: NoReplyPolicy,
}

impl RpcServerConfig {
    /// Consumes `queue`, bound to `exchange` (add patterns with [`RpcServerConfig::bind`]).
    pub fn new(queue: impl Into<String>, exchange: impl Into<String>) -> Self {
        RpcServerConfig {
            queue: QueueSpec::new(queue, exchange).delivery_limit(DEFAULT_DELIVERY_LIMIT),
            consumer: ConsumerConfig::default()
                .concurrency(32)
                .shutdown_timeout(Duration::from_secs(5)),
            no_reply: NoReplyPolicy::Handle,
        }
    }

    /// Adds a binding pattern.
    #[must_use]
    pub fn bind(mut self, pattern: impl Into<String>) -> Self {
        self.queue = self.queue.bind(pattern);
        self
    }

    /// Chooses a classic or a quorum request queue: on a cluster, a quorum queue (with its
    /// dead-letter queue) keeps requests through the loss of a node.
    #[must_use]
    pub fn kind(mut self, kind: crate::topology::QueueKind) -> Self {
        self.queue = self.queue.kind(kind);
        self
    }

    /// Sets the prefetch.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.consumer = self.consumer.prefetch(prefetch);
        self
    }

    /// Sets how many handlers run at once (0 is refused when the server starts).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.consumer = self.consumer.concurrency(n);
        self
    }

    /// Sets the largest request body served.
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.consumer = self.consumer.max_body(bytes);
        self
    }

    /// Sets the handler timeout.
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.consumer = self.consumer.handler_timeout(timeout);
        self
    }

    /// Sets the delivery limit (deliveries in all of one request, see
    /// [`crate::core::redelivery`]).
    #[must_use]
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.queue = self.queue.delivery_limit(limit);
        self
    }

    /// Sets the policy for requests without a reply address.
    #[must_use]
    pub fn no_reply(mut self, policy: NoReplyPolicy) -> Self {
        self.no_reply = policy;
        self
    }

    /// Emits the server's events to `events` (see [`crate::events`]); off by default.
    #[must_use]
    pub fn events(mut self, events: crate::events::Events) -> Self {
        self.consumer.events = Some(events);
        self
    }

    /// Sets the shutdown grace period.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.consumer = self.consumer.shutdown_timeout(timeout);
        self
    }
}

/// Counters of an [`RpcServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RpcServerStats {
    /// Requests received.
    pub requests: u64,
    /// Successful replies published.
    pub replied: u64,
    /// Error replies published (handler errors, panics, timeouts, undecodable, unknown,
    /// oversized or poison requests).
    pub remote_errors: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Handlers stopped by the handler timeout.
    pub timed_out: u64,
    /// Replies returned unroutable (requester gone).
    pub unroutable_replies: u64,
    /// Replies that could not be published for another reason.
    pub reply_failures: u64,
    /// Requests without a reply address.
    pub no_reply: u64,
    /// Requests dead-lettered.
    pub dead_lettered: u64,
    /// Requests refused before any handler ran (body limit, delivery limit).
    pub refused: u64,
    /// Requests given back to the queue (at shutdown, or after a reply could not be sent).
    pub requeued: u64,
}

#[derive(Debug, Default)]
struct ServerCounters {
    replied: AtomicU64,
    remote_errors: AtomicU64,
    unroutable_replies: AtomicU64,
    reply_failures: AtomicU64,
    no_reply: AtomicU64,
    dead_lettered: AtomicU64,
}

fn stats_of(c: &Counters, s: &ServerCounters) -> RpcServerStats {
    let consumer = c.snapshot();
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    RpcServerStats {
        requests: consumer.received,
        replied: g(&s.replied),
        remote_errors: g(&s.remote_errors),
        panics: consumer.panicked,
        timed_out: consumer.timed_out,
        unroutable_replies: g(&s.unroutable_replies),
        reply_failures: g(&s.reply_failures),
        no_reply: g(&s.no_reply),
        dead_lettered: g(&s.dead_lettered),
        refused: consumer.refused,
        requeued: consumer.requeued,
    }
}

/// The server's policy on the runtime: its handlers and what to do without a reply address.
struct ServerPolicy {
    handlers: HandlerTable<Vec<u8>, &'static str>,
    no_reply: NoReplyPolicy,
    counters: Arc<ServerCounters>,
}

type ServerRuntime<T> = Runtime<T, ServerPolicy>;

/// Serves typed requests from one queue.
///
/// ```no_run
/// # use lepus::{Message, rpc::{Request, RpcServer, RpcServerConfig}};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct GetAds { user: u64 }
/// # impl Message for GetAds { const TYPE: &'static str = "GetAds"; const ROUTING_KEY: &'static str = "ads.get"; }
/// # impl Request for GetAds { type Reply = Vec<u64>; const REPLY_TYPE: &'static str = "Ads"; }
/// # async fn demo() -> lepus::Result<()> {
/// let broker = std::sync::Arc::new(lepus::connect().await?);
/// let server = RpcServer::new(broker, RpcServerConfig::new("ads", "site").bind("ads.#"))
///     .with(|req: GetAds, _ctx| async move { Ok(vec![req.user, 1, 2]) });
/// let handle = server.start().await?;
/// // ...
/// handle.shutdown().await;
/// # Ok(()) }
/// ```
pub struct RpcServer<T> {
    transport: Arc<T>,
    config: RpcServerConfig,
    handlers: HandlerTable<Vec<u8>, &'static str>,
}

impl<T> core::fmt::Debug for RpcServer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RpcServer")
            .field("config", &self.config)
            .field("types", &self.handlers.types().collect::<Vec<_>>())
            .finish()
    }
}

/// A running [`RpcServer`].
#[derive(Debug)]
pub struct RpcServerHandle {
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<()>>,
    counters: (Arc<Counters>, Arc<ServerCounters>),
}

impl RpcServerHandle {
    /// The counters so far.
    pub fn stats(&self) -> RpcServerStats {
        stats_of(&self.counters.0, &self.counters.1)
    }

    /// Stops taking requests, gives back those not started, lets running handlers finish
    /// (up to the shutdown timeout; unfinished requests are redelivered to another server),
    /// and returns the counters.
    pub async fn shutdown(mut self) -> RpcServerStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.join).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the RPC server had stopped consuming"),
            Err(e) => tracing::warn!(error = %e, "the RPC server task failed"),
        }
        self.stats()
    }

    /// Stops at once, as a crash would: running handlers are dropped, unacked requests go
    /// back to the queue, no reply is sent for them.
    pub fn abort(self) {
        self.join.abort();
    }

    /// Aborts the server's task (what a [`crate::Host`] does past its drain deadline).
    pub(crate) fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.join.abort_handle()
    }

    /// True once the server stopped by itself (its subscription ended).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// As [`RpcServerHandle::shutdown`], returning the error that had ended consumption
    /// instead of logging it.
    pub(crate) async fn shutdown_checked(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.join).await {
            Ok(outcome) => outcome,
            Err(e) => Err(crate::error::Error::new(crate::error::ErrorKind::Broker)
                .context(format!("RPC server task failed: {e}"))),
        }
    }
}

impl<T> RpcServer<T>
where
    T: Transport + 'static,
    T::Subscription: 'static,
{
    /// A server over `transport` with `config` and no handlers yet.
    pub fn new(transport: Arc<T>, config: RpcServerConfig) -> Self {
        RpcServer {
            transport,
            config,
            handlers: HandlerTable::default(),
        }
    }

    /// Registers `handler` for requests of type `R` (by [`crate::Message::TYPE`]).
    pub fn handle<R, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        R: Request + Send,
        F: Fn(R, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply, HandlerError>> + Send + 'static,
        R::Reply: Send,
    {
        self.handlers.insert(
            R::TYPE,
            R::REPLY_TYPE,
            handler,
            encode_reply_payload::<R::Reply>,
        );
        self
    }

    /// Builder form of [`RpcServer::handle`].
    #[must_use]
    pub fn with<R, F, Fut>(mut self, handler: F) -> Self
    where
        R: Request + Send,
        F: Fn(R, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply, HandlerError>> + Send + 'static,
        R::Reply: Send,
    {
        self.handle(handler);
        self
    }

    /// The queue layout: the queue, its bindings and its dead-letter queue.
    pub fn queue_spec(&self) -> QueueSpec {
        self.config.queue.clone()
    }

    /// Declares the exchange and the queue layout (idempotent).
    ///
    /// # Errors
    /// The transport's declaration errors.
    pub async fn declare(&self) -> Result<()> {
        self.transport
            .declare_exchange(&self.config.queue.exchange)
            .await?;
        self.transport.declare_queue(&self.queue_spec()).await
    }

    /// Checks the configuration, declares, starts consuming (errors are returned here), then
    /// serves in a task of its own until [`RpcServerHandle::shutdown`] (or the handle is
    /// dropped).
    ///
    /// # Errors
    /// An invalid configuration, declaration or consume errors.
    pub async fn start(self) -> Result<RpcServerHandle> {
        self.config.consumer.validate()?;
        self.config.queue.validate()?;
        self.declare().await?;
        let c = &self.config;
        let subscription = self
            .transport
            .consume(&c.queue.name, c.consumer.prefetch)
            .await?;
        let counters = Arc::new(ServerCounters::default());
        let policy = ServerPolicy {
            handlers: self.handlers,
            no_reply: c.no_reply,
            counters: Arc::clone(&counters),
        };
        let rt = Arc::new(Runtime::new(
            self.transport,
            &c.queue,
            c.consumer.clone(),
            policy,
        ));
        let handle_counters = (Arc::clone(&rt.counters), counters);
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(serve(rt, subscription, async move {
            let _ = stopped.await;
        }));
        Ok(RpcServerHandle {
            stop: Some(stop),
            join,
            counters: handle_counters,
        })
    }
}

fn encode_reply_payload<R: serde::Serialize>(reply: R) -> Result<Vec<u8>, HandlerError> {
    serde_json::to_vec(&reply)
        .map_err(|e| HandlerError::rejected(format!("reply does not serialize: {e}")))
}

/// What goes back to the requester.
enum Answer {
    Reply { json: Vec<u8>, class: &'static str },
    Error(RemoteErrorKind, String),
}

/// Where a request's reply goes, and its correlation id: the AMQP properties first, then the
/// envelope's `response_queue` and `correlationId` (the talk's PHP clients).
struct ReplyAddress {
    reply_to: Option<String>,
    correlation_id: Option<String>,
}

fn reply_address(delivery: &Delivery, envelope: Option<&RawEnvelope<'_>>) -> ReplyAddress {
    let (response_queue, envelope_cid) = match envelope {
        Some(r) => (
            r.metadata.response_queue.as_ref().map(|t| t.to_string()),
            r.metadata.correlation_id.as_ref().map(|t| t.to_string()),
        ),
        None => (None, None),
    };
    ReplyAddress {
        reply_to: delivery
            .reply_to()
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .or(response_queue),
        correlation_id: delivery
            .correlation_id()
            .map(str::to_owned)
            .or(envelope_cid),
    }
}

impl<T: Transport + 'static> Policy<T> for ServerPolicy {
    async fn handle(
        rt: Arc<ServerRuntime<T>>,
        delivery: Arc<Delivery>,
        redelivered: bool,
        // Held for the whole call: the handler slot (RPC servers hold no deliveries).
        _slot: Slot,
    ) -> Verdict {
        let c = &rt.policy.counters;
        let limits = rt.config.decode_limits();
        let envelope = decode_json_raw_with(&delivery.body, &limits);
        let address = reply_address(&delivery, envelope.as_ref().ok());
        if address.reply_to.is_none() {
            bump(&c.no_reply);
            if rt.policy.no_reply == NoReplyPolicy::DeadLetter {
                let error = "the request names no reply address".to_owned();
                return dead_letter(&rt, &delivery, DeadLetterReason::NoReplyTo, error).await;
            }
        }
        let started = std::time::Instant::now();
        let answer = answer(&rt, &delivery, envelope, &address, redelivered).await;
        let verdict = reply(&rt, &delivery, &address, answer).await;
        // Receipt to reply (the handler's own time is in `handled`).
        rt.counters.event("served", |emit| {
            emit(&[
                ("type", Field::Str(delivery.message_type())),
                ("id", Field::Str(delivery.message_id())),
                ("ms", Field::F64(started.elapsed().as_secs_f64() * 1000.0)),
            ]);
        });
        verdict
    }

    async fn refuse(
        rt: Arc<ServerRuntime<T>>,
        delivery: Arc<Delivery>,
        refusal: Refusal,
    ) -> Verdict {
        let envelope = decode_json_raw_with(&delivery.body, &rt.config.decode_limits());
        let address = reply_address(&delivery, envelope.as_ref().ok());
        let (reason, kind) = match refusal {
            Refusal::Oversized { .. } => (DeadLetterReason::Oversized, RemoteErrorKind::TooLarge),
            Refusal::DeliveryLimit { .. } => (
                DeadLetterReason::DeliveryLimit,
                RemoteErrorKind::DeliveryLimit,
            ),
        };
        let verdict = dead_letter(&rt, &delivery, reason, refusal.to_string()).await;
        if verdict == Verdict::Ack && address.reply_to.is_some() {
            // Dead-lettered: the requester learns why at once instead of timing out.
            let answer = Answer::Error(kind, refusal.to_string());
            send_reply(&rt, &address, answer).await;
        }
        verdict
    }
}

/// Runs the request's handler (decode, lookup, timeout, panic capture) into an answer.
async fn answer<T: Transport>(
    rt: &ServerRuntime<T>,
    delivery: &Delivery,
    envelope: core::result::Result<RawEnvelope<'_>, DecodeError>,
    address: &ReplyAddress,
    redelivered: bool,
) -> Answer {
    let raw = match envelope {
        Ok(raw) => raw,
        Err(e) => return Answer::Error(RemoteErrorKind::Decode, format!("bad envelope: {e}")),
    };
    let Some(entry) = rt.policy.handlers.lookup(&raw.metadata.class_name) else {
        return Answer::Error(
            RemoteErrorKind::UnknownType,
            format!(
                "no handler for request type {:?}",
                raw.metadata.class_name.to_string()
            ),
        );
    };
    let ctx = Context {
        message_id: delivery.message_id().map(str::to_owned),
        message_type: entry.type_name,
        attempt: 1,
        redelivered,
        routing_key: delivery.routing_key.clone(),
        queue: rt.queue.clone(),
        correlation_id: address.correlation_id.clone(),
        reply_to: address.reply_to.clone(),
    };
    let future = match entry.start(raw.payload, None, ctx) {
        Ok(future) => future,
        Err(e) => return Answer::Error(RemoteErrorKind::Decode, e),
    };
    // One span per request, inside the runtime's `lepus.message` span.
    let span = tracing::info_span!(
        "lepus.rpc.request",
        "otel.name" = entry.type_name,
        "otel.kind" = "server",
        "rpc.system" = "lepus",
        "rpc.method" = entry.type_name,
        "messaging.message.conversation_id" = address.correlation_id.as_deref().unwrap_or(""),
    );
    let run = run_handler(
        future,
        rt.config.handler_timeout,
        &rt.counters,
        entry.type_name,
        delivery.message_id(),
    );
    match tracing::Instrument::instrument(run, span).await {
        HandlerRun::Finished(Ok(json)) => Answer::Reply {
            json,
            class: entry.meta,
        },
        HandlerRun::Finished(Err(e)) => {
            let kind = match e.kind() {
                HandlerErrorKind::Rejected => RemoteErrorKind::Rejected,
                HandlerErrorKind::Transient => RemoteErrorKind::Transient,
            };
            Answer::Error(kind, e.message().to_owned())
        }
        HandlerRun::Panicked(panic) => Answer::Error(RemoteErrorKind::Panicked, panic),
        HandlerRun::TimedOut(limit) => Answer::Error(
            RemoteErrorKind::TimedOut,
            format!("handler timed out after {limit:?}"),
        ),
    }
}

/// Sends the answer (if there is a reply address) and says how the request ends.
async fn reply<T: Transport>(
    rt: &ServerRuntime<T>,
    delivery: &Delivery,
    address: &ReplyAddress,
    answer: Answer,
) -> Verdict {
    if address.reply_to.is_none() {
        if let Answer::Error(kind, message) = &answer {
            tracing::warn!(%kind, message, "request without reply address failed");
        }
        return Verdict::Ack;
    }
    match send_reply(rt, address, answer).await {
        Sent::Done => Verdict::Ack,
        Sent::Retry => requeue(&rt.counters, delivery).await,
    }
}

/// Counts a reply in `counter` and in the metrics, by outcome.
fn reply_sent<T>(rt: &ServerRuntime<T>, counter: &AtomicU64, outcome: &'static str) {
    bump(counter);
    rt.counters.event("replied", |emit| {
        emit(&[("outcome", Field::Str(Some(outcome)))])
    });
    let labels = [("queue", rt.queue.as_str()), ("outcome", outcome)];
    crate::metrics::count(crate::metrics::RPC_REPLIES, &labels);
}

enum Sent {
    /// Published, or dropped for good (requester gone, reply refused): ack the request.
    Done,
    /// Not published for a passing reason: requeue the request.
    Retry,
}

async fn send_reply<T: Transport>(
    rt: &ServerRuntime<T>,
    address: &ReplyAddress,
    answer: Answer,
) -> Sent {
    let c = &rt.policy.counters;
    let Some(reply_to) = address.reply_to.as_deref() else {
        return Sent::Done;
    };
    let correlation_id = address.correlation_id.as_deref();
    let encoded = match &answer {
        Answer::Reply { json, class } => encode_reply(json, class, correlation_id),
        Answer::Error(kind, message) => encode_error_reply(*kind, message, correlation_id),
    };
    let (body, properties) = match encoded {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "RPC reply could not be encoded");
            reply_sent(rt, &c.reply_failures, "failed");
            return Sent::Done;
        }
    };
    // RabbitMQ returns mandatory messages to direct reply-to names as unroutable even when
    // it delivers them (each return carrying the whole reply back), so there a return cannot
    // tell a gone requester: such replies are not mandatory.
    let direct = reply_to.starts_with(crate::reply::DIRECT_REPLY_TO);
    let mut publication = Publication::new("", reply_to, &body, &properties);
    if direct {
        publication = publication.not_mandatory();
    }
    match rt.transport.publish(publication).await {
        Ok(()) => {
            match answer {
                Answer::Reply { .. } => reply_sent(rt, &c.replied, "reply"),
                Answer::Error(..) => reply_sent(rt, &c.remote_errors, "error"),
            }
            Sent::Done
        }
        Err(e) if e.is_unroutable() => {
            reply_sent(rt, &c.unroutable_replies, "unroutable");
            tracing::warn!(reply_to, "RPC reply unroutable (requester gone); dropped");
            Sent::Done
        }
        Err(e) if e.is_retryable() => {
            reply_sent(rt, &c.reply_failures, "failed");
            tracing::warn!(error = %e, "RPC reply not published; request requeued");
            Sent::Retry
        }
        Err(e) => {
            reply_sent(rt, &c.reply_failures, "failed");
            tracing::warn!(error = %e, reply_to, "RPC reply refused; request acked");
            Sent::Done
        }
    }
}

/// Moves a request to `<queue>.dead` with the `x-lepus-*` headers (see
/// [`crate::consumer::dead_letter`]: published again while not confirmed, so the handler never
/// runs twice for it).
async fn dead_letter<T: Transport>(
    rt: &ServerRuntime<T>,
    delivery: &Delivery,
    reason: DeadLetterReason,
    error: String,
) -> Verdict {
    let dead = DeadLetter {
        reason,
        error,
        attempts: 1,
    };
    crate::consumer::dead_letter(rt, delivery, dead, &rt.policy.counters.dead_lettered, None).await
}
