//! The read model: a [`Worker`] consumes one queue and runs the [`Registry`]'s handlers.
//!
//! Per delivery, in a task of its own (at most [`WorkerConfig::concurrency`] at once):
//!
//! 1. Checks before decoding: body size ([`WorkerConfig::max_body`]), content type
//!    (`application/json` or absent), envelope ([`decode_json_raw`]), type registered. A
//!    failing check dead-letters the message with reason `oversized`, `wrong-content-type`,
//!    `malformed` or `unknown-type`; an unregistered type's payload is never decoded.
//! 2. Runs the handler, catching panics (a panic counts as a transient failure).
//! 3. Asks core what to do ([`decide`], with the type's default policy filled in by
//!    [`RetryMetadata::with_default`] when the envelope names no strategy), then:
//!    - ack;
//!    - retry: core rewrites the envelope with the next `retryCount` (payload bytes and
//!      unknown keys untouched), the transport publishes it into the wait queue of the
//!      delay, and the delivery is acked once that publish is confirmed;
//!    - dead-letter: published into `<queue>.dead` with `x-lepus-*` headers (why, when,
//!      attempts, origin), acked once confirmed.
//!
//! A delivery is acknowledged only after its handler finished and its follow-up was
//! confirmed (at-least-once). Acks are batched: core's [`AckWindow`](crate::core::AckWindow)
//! says when one `basic.ack` with `multiple` may cover every delivery up to a tag (all of them
//! done or already settled), which the worker sends once 64 are ready, 5 ms after the oldest
//! ready one, when nothing is in flight, and on shutdown. Nacks and rejects are sent at once.
//! One consumer per channel is assumed (a multiple ack covers the whole channel), and the
//! consume loop polls [`Subscription::next`] alongside finished handlers and the ack timer,
//! so a transport's `next` must be cancel-safe (lose no delivery when dropped unfinished).
//! When a follow-up publish fails the delivery is requeued
//! (`nack`), or, if the transport refused the message as invalid, rejected so that the
//! queue's own dead-lettering takes it. A lost acknowledgement ([`ErrorKind::AckLost`]) is
//! logged: the broker delivers the message again.
//!
//! Shutdown ([`Worker::run`]'s signal or [`WorkerHandle::shutdown`]): stop consuming, give
//! back deliveries not started (as fresh copies at the queue's tail, so that a restart does
//! not count towards [`WorkerConfig::delivery_limit`]; see [`redelivery`]), let running
//! handlers finish up to [`WorkerConfig::shutdown_timeout`], requeue what is left, return the
//! counters.

use core::future::Future;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::catch_unwind::CatchUnwind;

mod acks;

use acks::{Acks, Verdict};

use crate::core::envelope::{decode_json_raw, rewrite_json, MetadataEdits};
use crate::core::redelivery::{
    self, DeliveryInfo, Redelivery, COUNT_HEADER, DEFAULT_DELIVERY_LIMIT, QUORUM_COUNT_HEADER,
};
use crate::core::retry::{decide, DeadLetterReason, Decision, Outcome, RetryMetadata};
use crate::delivery::Delivery;
use crate::error::{Error, ErrorKind, Result};
use crate::properties::{HeaderValue, Properties};
use crate::publisher::CONTENT_TYPE_JSON;
use crate::registry::{Context, Registry};
use crate::topology::{QueueKind, QueueSpec};
use crate::transport::{Publication, Subscription, Transport};

/// Header: why a message was dead-lettered ([`DeadLetterReason::as_str`]).
pub const HEADER_REASON: &str = "x-lepus-reason";
/// Header: the handler's (or the check's) error message.
pub const HEADER_ERROR: &str = "x-lepus-error";
/// Header: when it was dead-lettered, Unix milliseconds.
pub const HEADER_FAILED_AT: &str = "x-lepus-failed-at";
/// Header: how many times a handler saw it (`retryCount + 1`; 1 when it never ran).
pub const HEADER_ATTEMPTS: &str = "x-lepus-attempts";
/// Header: the queue it was consumed from.
pub const HEADER_ORIGIN_QUEUE: &str = "x-lepus-origin-queue";
/// Header: the exchange it was first published to (kept across retries).
pub const HEADER_ORIGIN_EXCHANGE: &str = "x-lepus-origin-exchange";
/// Header: the routing key it was first published with (kept across retries).
pub const HEADER_ORIGIN_ROUTING_KEY: &str = "x-lepus-origin-routing-key";

/// Longest `x-lepus-error` value, in bytes; longer messages are cut at a char boundary.
const MAX_ERROR_HEADER: usize = 4096;

/// Configuration of a [`Worker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The queue consumed.
    pub queue: String,
    /// The durable topic exchange the bindings are made on.
    pub exchange: String,
    /// Topic patterns bound to the queue (`mailer.ad.*`, `mailer.#`).
    pub bindings: Vec<String>,
    /// Classic or quorum queue.
    pub kind: QueueKind,
    /// Most unacknowledged deliveries at once (`basic.qos`).
    pub prefetch: u16,
    /// Most handlers running at once.
    pub concurrency: usize,
    /// Retry delays (ms) whose wait queues are declared up front, in addition to those of
    /// the registered types' policies.
    pub retry_delays_ms: Vec<u32>,
    /// Largest body handled; larger ones are dead-lettered as `oversized`.
    pub max_body: usize,
    /// How long shutdown waits for running handlers before requeueing their messages.
    pub shutdown_timeout: Duration,
    /// Deliveries allowed in all for one message (first delivery included) before it is
    /// dead-lettered as `delivery-limit`, so that a message that crashes the worker or hangs
    /// until the connection drops cannot loop forever (see [`crate::core::redelivery`]).
    pub delivery_limit: u32,
    /// Longest a handler may run; one that takes longer counts as a transient failure.
    /// `None`: no limit.
    pub handler_timeout: Option<Duration>,
}

impl WorkerConfig {
    /// A classic queue on `exchange`, no bindings, prefetch 64, 16 concurrent handlers,
    /// 1 MiB body limit, 30 s shutdown timeout.
    pub fn new(queue: impl Into<String>, exchange: impl Into<String>) -> Self {
        WorkerConfig {
            queue: queue.into(),
            exchange: exchange.into(),
            bindings: Vec::new(),
            kind: QueueKind::Classic,
            prefetch: 64,
            concurrency: 16,
            retry_delays_ms: Vec::new(),
            max_body: crate::names::DEFAULT_MAX_PAYLOAD,
            shutdown_timeout: Duration::from_secs(30),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            handler_timeout: None,
        }
    }

    /// Adds a topic binding pattern.
    #[must_use]
    pub fn bind(mut self, pattern: impl Into<String>) -> Self {
        self.bindings.push(pattern.into());
        self
    }

    /// Chooses classic or quorum.
    #[must_use]
    pub fn kind(mut self, kind: QueueKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the prefetch.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets the handler concurrency (at least 1).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Adds retry delays (ms) whose wait queues are declared up front.
    #[must_use]
    pub fn retry_delays_ms(mut self, delays: impl IntoIterator<Item = u32>) -> Self {
        self.retry_delays_ms.extend(delays);
        self
    }

    /// Sets the body size limit.
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sets the shutdown timeout.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sets the delivery limit (deliveries in all, see [`WorkerConfig::delivery_limit`]).
    #[must_use]
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = limit;
        self
    }

    /// Sets the handler timeout.
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = Some(timeout);
        self
    }
}

/// Counters of a worker, as returned by [`Worker::run`] and [`WorkerHandle::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerStats {
    /// Deliveries received.
    pub received: u64,
    /// Handlers that succeeded (message acked).
    pub succeeded: u64,
    /// Messages re-published into a wait queue for a retry.
    pub retried: u64,
    /// Messages published into the dead-letter queue.
    pub dead_lettered: u64,
    /// Deliveries given back to the queue: requeued after a failed follow-up or a handler
    /// stopped at shutdown, or, never started at shutdown, published again as a fresh copy.
    pub requeued: u64,
    /// Handlers that panicked.
    pub panicked: u64,
    /// Acknowledgements that had no effect (the broker redelivers).
    pub acks_lost: u64,
    /// Redelivered messages published again with their delivery count (classic queues).
    pub recounted: u64,
    /// Handlers stopped by the handler timeout.
    pub timed_out: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    succeeded: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    requeued: AtomicU64,
    panicked: AtomicU64,
    acks_lost: AtomicU64,
    recounted: AtomicU64,
    timed_out: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            received: get(&self.received),
            succeeded: get(&self.succeeded),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            requeued: get(&self.requeued),
            panicked: get(&self.panicked),
            acks_lost: get(&self.acks_lost),
            recounted: get(&self.recounted),
            timed_out: get(&self.timed_out),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What every delivery task shares.
struct Shared<T> {
    transport: Arc<T>,
    registry: Registry,
    config: WorkerConfig,
    counters: Arc<Counters>,
    /// State of a small xorshift generator for backoff jitter.
    random: AtomicU64,
}

/// Consumes one queue and runs handlers; see the module docs.
pub struct Worker<T> {
    shared: Arc<Shared<T>>,
}

impl<T> core::fmt::Debug for Worker<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.shared.config)
            .field("registry", &self.shared.registry)
            .finish()
    }
}

/// A running worker started by [`Worker::start`].
#[derive(Debug)]
pub struct WorkerHandle {
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<WorkerStats>>,
    counters: Arc<Counters>,
}

impl WorkerHandle {
    /// The counters so far.
    pub fn stats(&self) -> WorkerStats {
        self.counters.snapshot()
    }

    /// True once the worker stopped by itself (its subscription ended).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Stops the worker gracefully (see the module docs) and returns its counters.
    ///
    /// # Errors
    /// The error that ended consumption, if it ended before the shutdown.
    pub async fn shutdown(mut self) -> Result<WorkerStats> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.join).await {
            Ok(outcome) => outcome,
            Err(e) => {
                Err(Error::new(ErrorKind::Broker).context(format!("worker task failed: {e}")))
            }
        }
    }
}

impl<T> Worker<T>
where
    T: Transport + 'static,
    T::Subscription: 'static,
{
    /// A worker over `transport` with `config`, dispatching to `registry`.
    pub fn new(transport: Arc<T>, config: WorkerConfig, registry: Registry) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Worker {
            shared: Arc::new(Shared {
                transport,
                registry,
                config,
                counters: Arc::new(Counters::default()),
                random: AtomicU64::new(seed | 1),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.shared.config
    }

    /// The counters so far.
    pub fn stats(&self) -> WorkerStats {
        self.shared.counters.snapshot()
    }

    /// The queue layout this worker declares: its queue, bindings, dead-letter queue and the
    /// wait queues of the configured delays and of the registered types' policies.
    pub fn queue_spec(&self) -> QueueSpec {
        let c = &self.shared.config;
        let mut delays: Vec<u32> = c
            .retry_delays_ms
            .iter()
            .copied()
            .chain(self.shared.registry.retry_delays_ms())
            .collect();
        delays.sort_unstable();
        delays.dedup();
        let mut spec = QueueSpec::new(c.queue.clone(), c.exchange.clone())
            .kind(c.kind)
            .retry_delays_ms(delays)
            .delivery_limit(c.delivery_limit);
        spec.bindings.clone_from(&c.bindings);
        spec
    }

    /// Declares the exchange and the queue layout (idempotent).
    pub async fn declare(&self) -> Result<()> {
        let t = &self.shared.transport;
        t.declare_exchange(&self.shared.config.exchange).await?;
        t.declare_queue(&self.queue_spec()).await
    }

    /// Declares the topology, starts consuming and runs until `shutdown` completes (then
    /// shuts down gracefully) or the subscription ends.
    ///
    /// # Errors
    /// Declaration or consume errors; [`ErrorKind::ChannelClosed`] (or the consume error)
    /// when the subscription ended without a shutdown.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerStats> {
        self.declare().await?;
        let c = &self.shared.config;
        let subscription = self.shared.transport.consume(&c.queue, c.prefetch).await?;
        serve(Arc::clone(&self.shared), subscription, shutdown).await
    }

    /// Declares the topology, starts consuming (errors are returned here), then runs in a
    /// task of its own until [`WorkerHandle::shutdown`].
    ///
    /// # Errors
    /// Declaration or consume errors.
    pub async fn start(self) -> Result<WorkerHandle> {
        self.declare().await?;
        let c = &self.shared.config;
        let subscription = self.shared.transport.consume(&c.queue, c.prefetch).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let counters = Arc::clone(&self.shared.counters);
        let shared = Arc::clone(&self.shared);
        let join = tokio::spawn(serve(shared, subscription, async move {
            // A dropped handle stops the worker too.
            let _ = stopped.await;
        }));
        Ok(WorkerHandle {
            stop: Some(stop),
            join,
            counters,
        })
    }
}

/// The consume loop and the graceful shutdown.
async fn serve<T>(
    shared: Arc<Shared<T>>,
    mut subscription: T::Subscription,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WorkerStats>
where
    T: Transport + 'static,
    T::Subscription: 'static,
{
    let queue = shared.config.queue.clone();
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(shared.config.concurrency.max(1)));
    let mut tasks: JoinSet<Verdict> = JoinSet::new();
    let mut in_flight: InFlight = HashMap::new();
    let mut acks = Acks::new();
    let counters = &*shared.counters;
    // The delayed-flush timer, re-armed only when the deadline moves.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<tokio::time::Instant> = None;
    // A handler slot, taken before waiting for a delivery (so prefetch is not outrun).
    let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut ended: Option<Error> = None;
    tracing::info!(queue = %queue, "worker started");
    loop {
        let deadline = acks.deadline();
        if deadline != armed {
            if let Some(at) = deadline {
                timer.as_mut().reset(at);
            }
            armed = deadline;
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                reap(&shared, joined, &mut in_flight, &mut acks).await;
            }
            () = &mut timer, if armed.is_some() => {
                armed = None;
                acks.flush_due(counters).await;
            }
            acquired = Arc::clone(&permits).acquire_owned(), if permit.is_none() => {
                let Ok(acquired) = acquired else { break };
                permit = Some(acquired);
            }
            next = subscription.next(), if permit.is_some() => match next {
                None => {
                    ended = Some(Error::new(ErrorKind::ChannelClosed)
                        .context(format!("subscription to {queue:?} ended")));
                    break;
                }
                Some(Err(e)) => {
                    tracing::error!(queue = %queue, error = %e, "consuming failed");
                    ended = Some(e);
                    break;
                }
                Some(Ok(delivery)) => {
                    let Some(permit) = permit.take() else { break };
                    bump(&shared.counters.received);
                    let tracked = acks.receive(&shared.counters, &delivery);
                    let delivery = Arc::new(delivery);
                    let task = process(Arc::clone(&shared), Arc::clone(&delivery), permit);
                    let handle = tasks.spawn(task);
                    in_flight.insert(handle.id(), (delivery, tracked));
                }
            },
        }
    }
    drop(permit);

    // 1. Stop the flow; requeue what arrived but was not started.
    if ended.is_none() {
        if let Err(e) = subscription.cancel().await {
            tracing::warn!(queue = %queue, error = %e, "cancelling the consumer failed");
        }
        // Bounded like the handlers' wait: on a broker that stopped answering, the rest is
        // requeued at once (or left to the channel's end) instead of waiting per message.
        let until = tokio::time::Instant::now() + shared.config.shutdown_timeout;
        let mut giving_back = true;
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(100), subscription.next()).await
        {
            bump(&shared.counters.received);
            if giving_back {
                giving_back = give_back(&shared, &delivery, until).await;
            } else {
                requeue(&shared, &delivery).await;
            }
        }
    }
    // 2. Let running handlers finish, up to the timeout.
    let deadline = tokio::time::Instant::now() + shared.config.shutdown_timeout;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next_with_id()).await {
            Ok(Some(joined)) => reap(&shared, joined, &mut in_flight, &mut acks).await,
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    queue = %queue,
                    running = tasks.len(),
                    "shutdown timeout: requeueing the messages of running handlers"
                );
                tasks.abort_all();
                while let Some(joined) = tasks.join_next_with_id().await {
                    reap(&shared, joined, &mut in_flight, &mut acks).await;
                }
            }
        }
    }
    // 3. Acknowledge what finished.
    acks.flush(counters).await;
    drop(subscription);
    let stats = shared.counters.snapshot();
    tracing::info!(queue = %queue, ?stats, "worker stopped");
    match ended {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// Running delivery tasks: their delivery, and whether the ack window tracks it.
type InFlight = HashMap<tokio::task::Id, (Arc<Delivery>, bool)>;

/// Hands a finished task's verdict to the acks; requeues the delivery of a task that
/// panicked or was aborted.
async fn reap<T>(
    shared: &Shared<T>,
    joined: core::result::Result<(tokio::task::Id, Verdict), tokio::task::JoinError>,
    in_flight: &mut InFlight,
    acks: &mut Acks,
) {
    let (id, verdict) = match joined {
        Ok((id, verdict)) => (id, verdict),
        Err(e) => {
            if e.is_panic() {
                tracing::error!(error = %e, "a delivery task panicked");
            }
            if let Some((delivery, _)) = in_flight.get(&e.id()) {
                requeue(shared, delivery).await;
            }
            (e.id(), Verdict::Settled)
        }
    };
    if let Some((delivery, tracked)) = in_flight.remove(&id) {
        acks.finish(&shared.counters, delivery, tracked, verdict)
            .await;
    }
}

/// Gives back a delivery whose handler never started (shutdown) without counting it as a
/// failed delivery: a copy carrying the deliveries before this one
/// ([`redelivery::earlier_deliveries`]) goes to the tail of the queue, then the delivery is
/// acknowledged. A requeue would set `redelivered` (and quorum queues count every requeue),
/// so a message caught in the prefetch of a few restarts would end in the dead-letter queue
/// as if it had crashed its handlers.
///
/// If the copy is not confirmed by `until`, the delivery is requeued and `false` returned:
/// the caller requeues the rest the same way.
async fn give_back<T: Transport>(
    shared: &Shared<T>,
    delivery: &Delivery,
    until: tokio::time::Instant,
) -> bool {
    let earlier = redelivery::earlier_deliveries(delivery_info(delivery));
    let copy = publish_counted_copy(shared, delivery, earlier);
    let published = tokio::time::timeout_at(until, copy)
        .await
        .unwrap_or_else(|_| {
            Err(Error::new(ErrorKind::Timeout).context("give back: no confirm by the deadline"))
        });
    match published {
        Ok(()) => {
            match delivery.ack().await {
                Ok(()) => bump(&shared.counters.requeued),
                // The broker delivers the original again as well: a duplicate, not a loss.
                Err(e) => note_settle_error(&shared.counters, &e, "give back"),
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "giving back an unstarted delivery failed; requeueing");
            requeue(shared, delivery).await;
            false
        }
    }
}

/// Publishes a copy of `delivery` straight into the worker's queue with [`COUNT_HEADER`] set
/// to `count` (the recount of a classic redelivery, and giving back at shutdown), and waits
/// for its confirm. The broker's own count (`x-delivery-count`) belongs to the delivered copy,
/// so the new copy starts without one.
async fn publish_counted_copy<T: Transport>(
    shared: &Shared<T>,
    delivery: &Delivery,
    count: u32,
) -> Result<()> {
    let mut properties = delivery.properties.clone();
    properties.headers.remove(QUORUM_COUNT_HEADER);
    properties
        .headers
        .insert(COUNT_HEADER.to_owned(), HeaderValue::Int(i64::from(count)));
    let queue = &shared.config.queue;
    shared
        .transport
        .publish(Publication::new("", queue, &delivery.body, &properties))
        .await
}

async fn requeue<T>(shared: &Shared<T>, delivery: &Delivery) -> Verdict {
    match delivery.nack(true).await {
        Ok(()) => bump(&shared.counters.requeued),
        Err(e) => note_settle_error(&shared.counters, &e, "requeue"),
    }
    Verdict::Settled
}

fn note_settle_error(counters: &Counters, e: &Error, what: &str) {
    if e.kind() == ErrorKind::AckLost {
        bump(&counters.acks_lost);
        tracing::warn!(error = %e, "{what}: acknowledgement lost; the broker redelivers");
    } else {
        tracing::warn!(error = %e, "{what} failed");
    }
}

/// Why a message is dead-lettered, and what to put in the headers.
struct DeadLetter {
    reason: DeadLetterReason,
    error: String,
    attempts: u32,
}

/// Handles one delivery from checks to its verdict (nacks and rejects are sent here, acks
/// are left to the batch).
async fn process<T: Transport>(
    shared: Arc<Shared<T>>,
    delivery: Arc<Delivery>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) -> Verdict {
    let span = tracing::info_span!(
        "lepus.message",
        queue = %shared.config.queue,
        message_id = delivery.message_id().unwrap_or(""),
        message_type = delivery.properties.message_type.as_deref().unwrap_or(""),
        delivery_tag = delivery.delivery_tag,
        attempt = tracing::field::Empty,
    );
    async {
        match handle(&shared, &delivery).await {
            Ok(Follow::Ack) => {
                bump(&shared.counters.succeeded);
                Verdict::Ack
            }
            Ok(Follow::Retry { delay_ms, attempt }) => {
                tracing::info!(delay_ms, attempt, "retry scheduled");
                bump(&shared.counters.retried);
                Verdict::Ack
            }
            Ok(Follow::Recounted { deliveries }) => {
                tracing::warn!(
                    deliveries,
                    "redelivered message published again with its count"
                );
                bump(&shared.counters.recounted);
                Verdict::Ack
            }
            Ok(Follow::DeadLetter(dead)) => dead_letter(&shared, &delivery, dead).await,
            Err(e) => {
                // The follow-up was not confirmed: give the message back.
                tracing::warn!(error = %e, "follow-up failed; requeueing");
                requeue(&shared, &delivery).await
            }
        }
    }
    .instrument(span)
    .await
}

enum Follow {
    Ack,
    Retry { delay_ms: u32, attempt: u32 },
    Recounted { deliveries: u32 },
    DeadLetter(DeadLetter),
}

/// Checks, runs the handler, and performs a retry; returns what is left to do.
async fn handle<T: Transport>(shared: &Shared<T>, delivery: &Delivery) -> Result<Follow> {
    let body = &delivery.body;
    let dead = |reason, error: String, attempts| {
        Ok(Follow::DeadLetter(DeadLetter {
            reason,
            error,
            attempts,
        }))
    };
    if body.len() > shared.config.max_body {
        let error = format!(
            "body of {} bytes exceeds the limit of {} bytes",
            body.len(),
            shared.config.max_body
        );
        return dead(DeadLetterReason::Oversized, error, 1);
    }
    if let Some(ct) = delivery.properties.content_type.as_deref() {
        if !is_json(ct) {
            let error = format!("content type {ct:?} is not {CONTENT_TYPE_JSON}");
            return dead(DeadLetterReason::WrongContentType, error, 1);
        }
    }
    let raw = match decode_json_raw(body) {
        Ok(raw) => raw,
        Err(e) => return dead(DeadLetterReason::Malformed, format!("envelope: {e}"), 1),
    };
    let attempt = raw.metadata.retry.count.saturating_add(1);
    tracing::Span::current().record("attempt", attempt);
    let redelivered =
        match redelivery::decide(delivery_info(delivery), shared.config.delivery_limit) {
            Redelivery::Handle { redelivered, .. } => redelivered,
            Redelivery::Recount { deliveries } => {
                publish_counted_copy(shared, delivery, deliveries).await?;
                return Ok(Follow::Recounted { deliveries });
            }
            Redelivery::DeadLetter { deliveries } => {
                let error = format!(
                    "delivered {deliveries} times without finishing (limit {})",
                    shared.config.delivery_limit
                );
                return dead(DeadLetterReason::DeliveryLimit, error, attempt);
            }
        };
    let Some(entry) = shared.registry.lookup(&raw.metadata.class_name) else {
        let error = format!("no handler for type `{}`", raw.metadata.class_name);
        return dead(DeadLetterReason::UnknownType, error, attempt);
    };
    let retry = raw.metadata.retry.with_default(&entry.policy);
    let headers = &delivery.properties.headers;
    let ctx = Context {
        message_id: delivery.properties.message_id.clone(),
        message_type: entry.type_name,
        attempt,
        redelivered,
        routing_key: origin(headers, HEADER_ORIGIN_ROUTING_KEY, &delivery.routing_key),
        queue: shared.config.queue.clone(),
        correlation_id: delivery
            .properties
            .correlation_id
            .clone()
            .or_else(|| raw.metadata.correlation_id.map(|t| t.to_string())),
        reply_to: delivery
            .properties
            .reply_to
            .clone()
            .or_else(|| raw.metadata.response_queue.map(|t| t.to_string())),
    };
    let future = match entry.start(raw.payload, ctx) {
        Ok(future) => future,
        Err(e) => {
            let error = format!("payload of {}: {e}", entry.type_name);
            return dead(DeadLetterReason::Malformed, error, attempt);
        }
    };
    let guarded = async {
        match shared.config.handler_timeout {
            Some(limit) => tokio::time::timeout(limit, CatchUnwind(future)).await.ok(),
            None => Some(CatchUnwind(future).await),
        }
    };
    let Some(finished) = guarded.await else {
        bump(&shared.counters.timed_out);
        let error = format!(
            "handler timed out after {:?}",
            shared.config.handler_timeout
        );
        tracing::warn!("{error}");
        return follow_up(shared, delivery, &retry, Outcome::Transient, error, attempt).await;
    };
    let (outcome, error) = match finished {
        Ok(Ok(())) => (Outcome::Success, String::new()),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "handler failed");
            (e.outcome(), e.message().to_owned())
        }
        Err(panic) => {
            bump(&shared.counters.panicked);
            tracing::error!(panic = %panic, "handler panicked");
            (Outcome::Transient, format!("handler panicked: {panic}"))
        }
    };
    follow_up(shared, delivery, &retry, outcome, error, attempt).await
}

/// Asks core what follows the handler's `outcome`, and performs a retry.
async fn follow_up<T: Transport>(
    shared: &Shared<T>,
    delivery: &Delivery,
    retry: &RetryMetadata,
    outcome: Outcome,
    error: String,
    attempts: u32,
) -> Result<Follow> {
    let body = &delivery.body;
    match decide(retry, outcome, shared.next_random()) {
        Decision::Ack => Ok(Follow::Ack),
        Decision::DeadLetter { reason } => Ok(Follow::DeadLetter(DeadLetter {
            reason,
            error,
            attempts,
        })),
        Decision::Retry { delay_ms, next } => {
            let rewritten = rewrite(body, &next)?;
            let properties = retry_properties(delivery);
            shared
                .transport
                .publish_delayed(&shared.config.queue, delay_ms, &rewritten, &properties)
                .await?;
            Ok(Follow::Retry {
                delay_ms,
                attempt: attempts,
            })
        }
    }
}

/// What the broker told about a delivery, for [`redelivery::decide`].
fn delivery_info(delivery: &Delivery) -> DeliveryInfo {
    let count = |key: &str| {
        delivery
            .properties
            .headers
            .get(key)
            .and_then(HeaderValue::as_i64)
            .and_then(|n| u64::try_from(n).ok())
    };
    DeliveryInfo {
        redelivered: delivery.redelivered,
        quorum_count: count(QUORUM_COUNT_HEADER),
        counted: count(COUNT_HEADER),
    }
}

/// The envelope with `retryCount` set to `next.count`, everything else byte-identical.
fn rewrite(body: &[u8], next: &RetryMetadata) -> Result<Vec<u8>> {
    // `"retryCount":4294967295` plus a comma is the most a count edit adds.
    let mut out = vec![0; body.len() + 32];
    match rewrite_json(body, &MetadataEdits::retry_count(next.count), &mut out) {
        Ok(n) => {
            out.truncate(n);
            Ok(out)
        }
        Err(e) => Err(Error::new(ErrorKind::Encode).context(format!("rewrite for a retry: {e}"))),
    }
}

/// Properties of a retry: the delivery's, without the broker's death records, with the
/// origin exchange and routing key remembered on the first retry.
fn retry_properties(delivery: &Delivery) -> Properties {
    let mut properties = delivery.properties.clone();
    properties.headers.retain(|k, _| {
        !(k == "x-death" || k.starts_with("x-first-death") || k.starts_with("x-last-death"))
    });
    properties
        .headers
        .entry(HEADER_ORIGIN_EXCHANGE.to_owned())
        .or_insert_with(|| HeaderValue::Str(delivery.exchange.clone()));
    properties
        .headers
        .entry(HEADER_ORIGIN_ROUTING_KEY.to_owned())
        .or_insert_with(|| HeaderValue::Str(delivery.routing_key.clone()));
    properties
}

/// Publishes into the dead-letter queue with the `x-lepus-*` headers; the delivery is then
/// acked (or, if that publish failed, requeued or rejected).
async fn dead_letter<T: Transport>(
    shared: &Shared<T>,
    delivery: &Delivery,
    dead: DeadLetter,
) -> Verdict {
    tracing::warn!(
        reason = dead.reason.as_str(),
        error = %dead.error,
        attempts = dead.attempts,
        "dead-lettering"
    );
    let mut properties = delivery.properties.clone();
    let h = &mut properties.headers;
    let exchange = origin(h, HEADER_ORIGIN_EXCHANGE, &delivery.exchange);
    let routing_key = origin(h, HEADER_ORIGIN_ROUTING_KEY, &delivery.routing_key);
    h.insert(HEADER_REASON.into(), dead.reason.as_str().into());
    h.insert(HEADER_ERROR.into(), truncate(dead.error).into());
    h.insert(HEADER_FAILED_AT.into(), HeaderValue::Int(now_millis()));
    h.insert(
        HEADER_ATTEMPTS.into(),
        HeaderValue::Int(i64::from(dead.attempts)),
    );
    h.insert(
        HEADER_ORIGIN_QUEUE.into(),
        shared.config.queue.clone().into(),
    );
    h.insert(HEADER_ORIGIN_EXCHANGE.into(), exchange.into());
    h.insert(HEADER_ORIGIN_ROUTING_KEY.into(), routing_key.into());
    let published = shared
        .transport
        .publish_dead_letter(&shared.config.queue, &delivery.body, &properties)
        .await;
    match published {
        Ok(()) => {
            bump(&shared.counters.dead_lettered);
            Verdict::Ack
        }
        Err(e) if e.is_invalid_input() => {
            // The transport will not carry it (e.g. over its size limit): let the queue's
            // own dead-lettering move it to `<queue>.dead`, without our headers.
            tracing::warn!(error = %e, "dead-letter publish refused; rejecting instead");
            match delivery.reject(false).await {
                Ok(()) => bump(&shared.counters.dead_lettered),
                Err(e) => note_settle_error(&shared.counters, &e, "reject"),
            }
            Verdict::Settled
        }
        Err(e) => {
            tracing::warn!(error = %e, "dead-letter publish failed; requeueing");
            requeue(shared, delivery).await
        }
    }
}

/// The origin recorded in a header by an earlier retry, else the delivery's own.
fn origin(headers: &crate::properties::Headers, key: &str, own: &str) -> String {
    headers
        .get(key)
        .and_then(HeaderValue::as_str)
        .unwrap_or(own)
        .to_owned()
}

/// `application/json`, any case, optionally with parameters (`; charset=utf-8`).
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE_JSON))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_HEADER {
        let mut end = MAX_ERROR_HEADER;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl<T> Shared<T> {
    /// xorshift64*: jitter only needs spread, not quality.
    fn next_random(&self) -> u32 {
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json(""));
    }

    #[test]
    fn error_header_is_cut_at_a_char_boundary() {
        let s = "é".repeat(MAX_ERROR_HEADER);
        let t = truncate(s);
        assert!(t.len() <= MAX_ERROR_HEADER && t.len() >= MAX_ERROR_HEADER - 1);
    }

    #[test]
    fn rewrite_keeps_payload_and_unknown_keys() {
        let body =
            br#"{"payload": {"adId":"1"},"metadata":{"className":"A","x":[1],"retryCount":"0"}}"#;
        let next = RetryMetadata {
            count: 1,
            ..RetryMetadata::default()
        };
        let out = rewrite(body, &next).ok();
        assert_eq!(
            out.as_deref(),
            Some(&br#"{"payload": {"adId":"1"},"metadata":{"className":"A","x":[1],"retryCount":1}}"#[..])
        );
    }
}
