//! [`RpcServer`]: typed request handlers on a queue, replies to `reply_to`.
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

use crate::worker::bump;
use core::future::Future;
use core::pin::Pin;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::catch_unwind::{panic_message, CatchUnwind};
use crate::core::envelope::decode_json_raw;
use crate::delivery::Delivery;
use crate::error::Result;
use crate::properties::HeaderValue;
use crate::registry::{Context, HandlerError, HandlerErrorKind};
use crate::topology::QueueSpec;
use crate::transport::{Publication, Subscription, Transport};

use super::error::RemoteErrorKind;
use super::request::Request;
use super::wire::{encode_error_reply, encode_reply};

/// What to do with a request that names no reply address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum NoReplyPolicy {
    /// Run the handler as for a plain message and drop its result (default).
    #[default]
    Handle,
    /// Move it to the queue's dead-letter queue (`<queue>.dead`) without running it.
    DeadLetter,
}

/// The queue an [`RpcServer`] consumes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcServerConfig {
    /// The queue.
    pub queue: String,
    /// The topic exchange it is bound to.
    pub exchange: String,
    /// Binding patterns.
    pub bindings: Vec<String>,
    /// Most unacknowledged requests (default 64).
    pub prefetch: u16,
    /// Most handlers running at once (default 32).
    pub concurrency: usize,
    /// Requests without a reply address.
    pub no_reply: NoReplyPolicy,
    /// How long [`RpcServerHandle::shutdown`] waits for running handlers (default 5 s).
    pub shutdown_timeout: Duration,
}

impl RpcServerConfig {
    /// Consumes `queue`, bound to `exchange` (add patterns with [`RpcServerConfig::bind`]).
    pub fn new(queue: impl Into<String>, exchange: impl Into<String>) -> Self {
        RpcServerConfig {
            queue: queue.into(),
            exchange: exchange.into(),
            bindings: Vec::new(),
            prefetch: 64,
            concurrency: 32,
            no_reply: NoReplyPolicy::Handle,
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    /// Adds a binding pattern.
    #[must_use]
    pub fn bind(mut self, pattern: impl Into<String>) -> Self {
        self.bindings.push(pattern.into());
        self
    }

    /// Sets the prefetch.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets how many handlers run at once (at least 1).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the policy for requests without a reply address.
    #[must_use]
    pub fn no_reply(mut self, policy: NoReplyPolicy) -> Self {
        self.no_reply = policy;
        self
    }

    /// Sets the shutdown grace period.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
}

/// Counters of an [`RpcServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RpcServerStats {
    /// Requests received.
    pub requests: u64,
    /// Successful replies published.
    pub replied: u64,
    /// Error replies published (handler errors, panics, undecodable or unknown requests).
    pub remote_errors: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Replies returned unroutable (requester gone).
    pub unroutable_replies: u64,
    /// Replies that could not be published for another reason.
    pub reply_failures: u64,
    /// Requests without a reply address.
    pub no_reply: u64,
    /// Requests dead-lettered.
    pub dead_lettered: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    replied: AtomicU64,
    remote_errors: AtomicU64,
    panics: AtomicU64,
    unroutable_replies: AtomicU64,
    reply_failures: AtomicU64,
    no_reply: AtomicU64,
    dead_lettered: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RpcServerStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RpcServerStats {
            requests: g(&self.requests),
            replied: g(&self.replied),
            remote_errors: g(&self.remote_errors),
            panics: g(&self.panics),
            unroutable_replies: g(&self.unroutable_replies),
            reply_failures: g(&self.reply_failures),
            no_reply: g(&self.no_reply),
            dead_lettered: g(&self.dead_lettered),
        }
    }
}

type ReplyFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, HandlerError>> + Send>>;
type Erased = dyn Fn(&[u8], Context) -> Result<ReplyFuture, String> + Send + Sync;

struct Handler {
    type_name: &'static str,
    reply_type: &'static str,
    run: Arc<Erased>,
}

struct Shared<T> {
    transport: Arc<T>,
    config: RpcServerConfig,
    handlers: HashMap<&'static str, Handler>,
    counters: Arc<Counters>,
}

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
    handlers: HashMap<&'static str, Handler>,
}

impl<T> core::fmt::Debug for RpcServer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RpcServer")
            .field("config", &self.config)
            .field("types", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A running [`RpcServer`].
#[derive(Debug)]
pub struct RpcServerHandle {
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl core::fmt::Debug for Counters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl RpcServerHandle {
    /// The counters so far.
    pub fn stats(&self) -> RpcServerStats {
        self.counters.snapshot()
    }

    /// Stops taking requests, lets running handlers finish (up to the shutdown timeout;
    /// unfinished requests are redelivered to another server), and returns the counters.
    pub async fn shutdown(mut self) -> RpcServerStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.join).await;
        self.counters.snapshot()
    }

    /// Stops at once, as a crash would: running handlers are dropped, unacked requests go
    /// back to the queue, no reply is sent for them.
    pub fn abort(self) {
        self.join.abort();
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
            handlers: HashMap::new(),
        }
    }

    /// Registers `handler` for requests of type `R` (by [`crate::Message::TYPE`]).
    pub fn handle<R, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        R: Request,
        F: Fn(R, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let run = move |payload: &[u8], ctx: Context| -> Result<ReplyFuture, String> {
            let request: R = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            let handler = Arc::clone(&handler);
            Ok(Box::pin(async move {
                let reply = handler(request, ctx).await?;
                serde_json::to_vec(&reply)
                    .map_err(|e| HandlerError::rejected(format!("reply does not serialize: {e}")))
            }))
        };
        self.handlers.insert(
            R::TYPE,
            Handler {
                type_name: R::TYPE,
                reply_type: R::REPLY_TYPE,
                run: Arc::new(run),
            },
        );
        self
    }

    /// Builder form of [`RpcServer::handle`].
    #[must_use]
    pub fn with<R, F, Fut>(mut self, handler: F) -> Self
    where
        R: Request,
        F: Fn(R, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply, HandlerError>> + Send + 'static,
    {
        self.handle(handler);
        self
    }

    /// The queue layout: the queue, its bindings and its dead-letter queue.
    pub fn queue_spec(&self) -> QueueSpec {
        let mut spec = QueueSpec::new(self.config.queue.clone(), self.config.exchange.clone());
        spec.bindings.clone_from(&self.config.bindings);
        spec
    }

    /// Declares the exchange and the queue layout (idempotent).
    ///
    /// # Errors
    /// The transport's declaration errors.
    pub async fn declare(&self) -> Result<()> {
        self.transport
            .declare_exchange(&self.config.exchange)
            .await?;
        self.transport.declare_queue(&self.queue_spec()).await
    }

    /// Declares, starts consuming (errors are returned here), then serves in a task of its
    /// own until [`RpcServerHandle::shutdown`] (or the handle is dropped).
    ///
    /// # Errors
    /// Declaration or consume errors.
    pub async fn start(self) -> Result<RpcServerHandle> {
        self.declare().await?;
        let subscription = self
            .transport
            .consume(&self.config.queue, self.config.prefetch)
            .await?;
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            transport: self.transport,
            config: self.config,
            handlers: self.handlers,
            counters: Arc::clone(&counters),
        });
        let (stop, stopped) = oneshot::channel();
        let join = tokio::spawn(serve(shared, subscription, stopped));
        Ok(RpcServerHandle {
            stop: Some(stop),
            join,
            counters,
        })
    }
}

async fn serve<T: Transport + 'static>(
    shared: Arc<Shared<T>>,
    mut subscription: T::Subscription,
    mut stopped: oneshot::Receiver<()>,
) where
    T::Subscription: 'static,
{
    let slots = Arc::new(Semaphore::new(shared.config.concurrency));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => p,
            _ = &mut stopped => break,
        };
        let Ok(permit) = permit else { break };
        let next = tokio::select! {
            d = subscription.next() => d,
            _ = &mut stopped => break,
        };
        match next {
            Some(Ok(delivery)) => {
                let shared = Arc::clone(&shared);
                tasks.spawn(async move {
                    process(&shared, delivery).await;
                    drop(permit);
                });
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, queue = %shared.config.queue, "RPC server consume failed");
                break;
            }
            None => {
                tracing::info!(queue = %shared.config.queue, "RPC server subscription ended");
                break;
            }
        }
    }
    if let Err(e) = subscription.cancel().await {
        tracing::debug!(error = %e, "cancelling the RPC server consumer failed");
    }
    let drained = tokio::time::timeout(shared.config.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            queue = %shared.config.queue,
            "RPC handlers still running at shutdown; their requests will be redelivered"
        );
        tasks.abort_all();
    }
}

/// What goes back to the requester.
enum Answer {
    Reply { json: Vec<u8>, class: &'static str },
    Error(RemoteErrorKind, String),
}

async fn process<T: Transport>(shared: &Shared<T>, delivery: Delivery) {
    let c = &shared.counters;
    bump(&c.requests);
    let props = &delivery.properties;
    let raw = decode_json_raw(&delivery.body);
    let (class, response_queue, envelope_cid) = match &raw {
        Ok(r) => (
            Some(r.metadata.class_name.to_string()),
            r.metadata.response_queue.as_ref().map(|t| t.to_string()),
            r.metadata.correlation_id.as_ref().map(|t| t.to_string()),
        ),
        Err(_) => (None, None, None),
    };
    let reply_to = props
        .reply_to
        .clone()
        .filter(|r| !r.is_empty())
        .or(response_queue);
    let correlation_id = props.correlation_id.clone().or(envelope_cid);

    if reply_to.is_none() {
        bump(&c.no_reply);
        if shared.config.no_reply == NoReplyPolicy::DeadLetter {
            dead_letter(shared, &delivery).await;
            return;
        }
    }

    let answer = match (&raw, class) {
        (Err(e), _) => Answer::Error(RemoteErrorKind::Decode, format!("bad envelope: {e}")),
        (Ok(raw), Some(class)) => match shared.handlers.get(class.as_str()) {
            None => Answer::Error(
                RemoteErrorKind::UnknownType,
                format!("no handler for request type {class:?}"),
            ),
            Some(handler) => {
                let ctx = Context {
                    message_id: props.message_id.clone(),
                    message_type: handler.type_name,
                    attempt: 1,
                    redelivered: delivery.redelivered,
                    routing_key: delivery.routing_key.clone(),
                    queue: shared.config.queue.clone(),
                    correlation_id: correlation_id.clone(),
                    reply_to: reply_to.clone(),
                };
                run(handler, raw.payload, ctx, c).await
            }
        },
        (Ok(_), None) => Answer::Error(RemoteErrorKind::Decode, "no className".to_owned()),
    };

    let Some(reply_to) = reply_to else {
        if let Answer::Error(kind, message) = &answer {
            tracing::warn!(%kind, message, "request without reply address failed");
        }
        ack(&delivery).await;
        return;
    };
    let encoded = match &answer {
        Answer::Reply { json, class } => encode_reply(json, class, correlation_id.as_deref()),
        Answer::Error(kind, message) => {
            encode_error_reply(*kind, message, correlation_id.as_deref())
        }
    };
    let (body, properties) = match encoded {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "RPC reply could not be encoded");
            bump(&c.reply_failures);
            ack(&delivery).await;
            return;
        }
    };
    // RabbitMQ returns mandatory messages to direct reply-to names as unroutable even when
    // it delivers them (each return carrying the whole reply back), so there a return cannot
    // tell a gone requester: such replies are not mandatory.
    let direct = reply_to.starts_with(crate::reply::DIRECT_REPLY_TO);
    let mut publication = Publication::new("", &reply_to, &body, &properties);
    if direct {
        publication = publication.not_mandatory();
    }
    let published = shared.transport.publish(publication).await;
    match published {
        Ok(()) => match answer {
            Answer::Reply { .. } => bump(&c.replied),
            Answer::Error(..) => bump(&c.remote_errors),
        },
        Err(e) if e.is_unroutable() => {
            bump(&c.unroutable_replies);
            tracing::warn!(reply_to, "RPC reply unroutable (requester gone); dropped");
        }
        Err(e) if e.is_retryable() => {
            bump(&c.reply_failures);
            tracing::warn!(error = %e, "RPC reply not published; request requeued");
            if let Err(e) = delivery.nack(true).await {
                tracing::debug!(error = %e, "requeue failed; the broker will redeliver");
            }
            return;
        }
        Err(e) => {
            bump(&c.reply_failures);
            tracing::warn!(error = %e, reply_to, "RPC reply refused; request acked");
        }
    }
    ack(&delivery).await;
}

async fn run(handler: &Handler, payload: &[u8], ctx: Context, c: &Counters) -> Answer {
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| (handler.run)(payload, ctx)));
    let future = match started {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Answer::Error(RemoteErrorKind::Decode, e),
        Err(panic) => {
            bump(&c.panics);
            return Answer::Error(RemoteErrorKind::Panicked, panic_message(panic.as_ref()));
        }
    };
    match (CatchUnwind(future)).await {
        Ok(Ok(json)) => Answer::Reply {
            json,
            class: handler.reply_type,
        },
        Ok(Err(e)) => {
            let kind = match e.kind() {
                HandlerErrorKind::Rejected => RemoteErrorKind::Rejected,
                HandlerErrorKind::Transient => RemoteErrorKind::Transient,
            };
            Answer::Error(kind, e.message().to_owned())
        }
        Err(panic) => {
            bump(&c.panics);
            Answer::Error(RemoteErrorKind::Panicked, panic)
        }
    }
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.ack().await {
        tracing::warn!(error = %e, "acking an RPC request failed; it will be redelivered");
    }
}

async fn dead_letter<T: Transport>(shared: &Shared<T>, delivery: &Delivery) {
    let mut props = delivery.properties.clone();
    props.headers.insert(
        crate::worker::HEADER_REASON.to_owned(),
        HeaderValue::from("no-reply-to"),
    );
    match shared
        .transport
        .publish_dead_letter(&shared.config.queue, &delivery.body, &props)
        .await
    {
        Ok(()) => {
            bump(&shared.counters.dead_lettered);
            ack(delivery).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "dead-lettering an RPC request failed; requeued");
            if let Err(e) = delivery.nack(true).await {
                tracing::debug!(error = %e, "requeue failed");
            }
        }
    }
}
