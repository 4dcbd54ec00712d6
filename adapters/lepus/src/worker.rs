//! The read model: a [`Worker`] consumes one queue and runs the [`Registry`]'s handlers.
//!
//! A worker is the retry and dead-letter policy on the consumer runtime
//! ([`crate::consumer`]), which owns the loop: concurrency, prefetch, the body limit, the
//! delivery limit, the handler timeout, panic capture, batched acks and the give-back at
//! shutdown. Per delivery:
//!
//! 1. Checks before decoding: body size ([`ConsumerConfig::max_body`]), content type
//!    (`application/json` or absent), envelope ([`decode_json_raw`]), type registered. A
//!    failing check dead-letters the message with reason `oversized`, `wrong-content-type`,
//!    `malformed` or `unknown-type`; an unregistered type's payload is never decoded.
//! 2. Holds the delivery while its type is at its limits ([`crate::Limits`]: a rate, a
//!    concurrency), then runs the handler, catching panics (a panic counts as a transient
//!    failure).
//! 3. Asks core what to do ([`decide`], with the type's default policy filled in by
//!    [`RetryMetadata::with_default`] when the envelope names no strategy), then:
//!    - ack;
//!    - retry: core rewrites the envelope with the next `retryCount` (payload bytes and
//!      unknown keys untouched), the transport publishes it onto the delay levels
//!      ([`crate::delay`]) addressed back to this queue only, and the delivery is acked once
//!      that publish is confirmed;
//!    - dead-letter: published into `<queue>.dead` with `x-lepus-*` headers (why, when,
//!      attempts, origin), acked once confirmed.
//!
//! A delivery is acknowledged only after its handler finished and its follow-up was
//! confirmed (at-least-once); acks are batched by the runtime.
//!
//! # No handler runs again sooner than its policy says
//!
//! Whatever fails after a handler ran, the message does not come straight back to a handler:
//!
//! - a retry copy the transport or broker refuses as invalid (over every size limit, say) is
//!   dead-lettered at once with the reason `follow-up-refused` and the refusal as its error;
//!   follow-ups are held to [`crate::MAX_FOLLOW_UP_BODY`], not to the publisher's limit, so a
//!   body that grows by a few bytes when its `retryCount` is written still waits for its retry;
//! - a follow-up (retry copy or dead letter) that fails for a passing reason (no confirm, a
//!   lost connection) is published again with backoff, the delivery held unacknowledged
//!   meanwhile, instead of being requeued (which would run the handler again at once);
//! - a dead letter the transport refuses as invalid is rejected, so the queue's own
//!   dead-lettering moves it to `<queue>.dead` (without the `x-lepus-*` headers).
//!
//! Two cases stay with the broker's at-least-once delivery, bounded by the delivery limit: a
//! connection lost between a handler's end and its follow-up's confirm (the broker delivers
//! the message again), and a follow-up still unconfirmed when the shutdown timeout ends (the
//! delivery is requeued).
//!
//! # Rate limits and per-type concurrency
//!
//! A type with [`crate::Limits`] (`#[lepus(rate = "10/s", concurrency = 2)]`, or
//! [`Registry::limit`]) has its deliveries **held**, not failed: its handler does not start,
//! no retry is counted, nothing is requeued or dead-lettered; the delivery waits until its
//! type has a free slot and a token of its rate (first come, first served per type), then
//! runs as usual. [`WorkerStats::held`] counts the deliveries that had to wait.
//!
//! Head-of-line behaviour: a held delivery gives up its handler slot
//! ([`ConsumerConfig::concurrency`]) while it waits, so other types keep running, but it keeps
//! its **prefetch** slot (it is delivered and unacknowledged). When a limited type fills the
//! whole prefetch with held deliveries, the broker sends nothing more until one of them
//! starts, and the other types of the queue wait behind them. Give a limited type a queue of
//! its own, or a prefetch well above what its limits hold at once (at 10/s with
//! deliveries queued behind, about everything the prefetch takes of that type). The limits
//! count per worker: two workers on one queue each start up to the rate.
//!
//! Shutdown ([`Worker::run`]'s signal or [`WorkerHandle::shutdown`]) is the runtime's: stop
//! consuming, give back deliveries not started, held ones included (as fresh copies, so that
//! a restart does not count towards the delivery limit; see [`crate::core::redelivery`]), let
//! running handlers finish up to [`ConsumerConfig::shutdown_timeout`], requeue what is left,
//! return the counters.

use core::future::Future;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::consumer::{
    bump, give_back_held, origin, repeat_follow_up, requeue, run_handler, serve, Admission,
    ConsumerConfig, Counters, DeadLetter, HandlerRun, Policy, Refusal, Runtime, Slot, TypeLimit,
    Verdict,
};
use crate::core::envelope::{decode_json_raw_with, rewrite_json_with, DecodeLimits, MetadataEdits};
use crate::core::redelivery::DEFAULT_DELIVERY_LIMIT;
use crate::core::retry::{decide, DeadLetterReason, Decision, Outcome, RetryMetadata};
use crate::delay::Delay;
use crate::delivery::Delivery;
use crate::error::{Error, ErrorKind, Result};
use crate::events::Field;
use crate::handlers::Context;
use crate::metrics;
use crate::properties::{HeaderValue, Properties};
use crate::protocol::{
    is_json, CONTENT_TYPE_JSON, HEADER_ORIGIN_EXCHANGE, HEADER_ORIGIN_ROUTING_KEY,
};
use crate::registry::Registry;
use crate::topology::{QueueKind, QueueSpec};
use crate::transport::{Publication, Transport};

/// Configuration of a [`Worker`]: the queue layout it declares and how it consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The queue, its exchange and bindings, kind, declared retry delays and delivery limit.
    pub queue: QueueSpec,
    /// Prefetch, concurrency, body limit, handler and shutdown timeouts.
    pub consumer: ConsumerConfig,
}

impl WorkerConfig {
    /// A classic queue on `exchange`, no bindings, the delivery limit
    /// [`DEFAULT_DELIVERY_LIMIT`], and [`ConsumerConfig::default`].
    pub fn new(queue: impl Into<String>, exchange: impl Into<String>) -> Self {
        WorkerConfig {
            queue: QueueSpec::new(queue, exchange).delivery_limit(DEFAULT_DELIVERY_LIMIT),
            consumer: ConsumerConfig::default(),
        }
    }

    /// Adds a topic binding pattern.
    #[must_use]
    pub fn bind(mut self, pattern: impl Into<String>) -> Self {
        self.queue = self.queue.bind(pattern);
        self
    }

    /// Chooses classic or quorum.
    #[must_use]
    pub fn kind(mut self, kind: QueueKind) -> Self {
        self.queue = self.queue.kind(kind);
        self
    }

    /// Sets the delivery limit: deliveries allowed in all for one message (first delivery
    /// included) before it is dead-lettered as `delivery-limit`, so that a message that
    /// crashes the worker or hangs until the connection drops cannot loop forever (see
    /// [`crate::core::redelivery`]).
    #[must_use]
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.queue = self.queue.delivery_limit(limit);
        self
    }

    /// Declares the queue with a maximum priority, 1 to 255 (classic queues only; see
    /// [`QueueSpec::max_priority`]).
    #[must_use]
    pub fn max_priority(mut self, max: u8) -> Self {
        self.queue = self.queue.max_priority(max);
        self
    }

    /// Sets the prefetch.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.consumer = self.consumer.prefetch(prefetch);
        self
    }

    /// Sets the handler concurrency (0 is refused when the worker starts).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.consumer = self.consumer.concurrency(concurrency);
        self
    }

    /// Sets the body size limit.
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.consumer = self.consumer.max_body(bytes);
        self
    }

    /// Sets the shutdown timeout.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.consumer = self.consumer.shutdown_timeout(timeout);
        self
    }

    /// Sets the handler timeout.
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.consumer = self.consumer.handler_timeout(timeout);
        self
    }

    /// Emits the worker's events to `events` (see [`crate::events`]); off by default.
    #[must_use]
    pub fn events(mut self, events: crate::events::Events) -> Self {
        self.consumer.events = Some(events);
        self
    }

    /// Sets how deep a payload may nest (see [`ConsumerConfig::payload_depth`]).
    #[must_use]
    pub fn payload_depth(mut self, depth: u32) -> Self {
        self.consumer = self.consumer.payload_depth(depth);
        self
    }

    /// Checks the settings (see [`ConsumerConfig::validate`]) and the names.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] or [`ErrorKind::InvalidName`].
    pub fn validate(&self) -> Result<()> {
        self.consumer.validate()?;
        if self.queue.delivery_limit == Some(0) {
            return Err(Error::new(ErrorKind::InvalidConfig {
                setting: "delivery_limit",
            })
            .context("a message is always delivered once"));
        }
        self.queue.validate()
    }
}

/// Counters of a worker, as returned by [`Worker::run`] and [`WorkerHandle::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Deliveries received.
    pub received: u64,
    /// Handlers that succeeded (message acked).
    pub succeeded: u64,
    /// Messages re-published into a wait queue for a retry.
    pub retried: u64,
    /// Messages published into the dead-letter queue.
    pub dead_lettered: u64,
    /// Deliveries given back to the queue: requeued after a handler stopped at shutdown, or,
    /// never started at shutdown, published again as a fresh copy.
    pub requeued: u64,
    /// Handlers that panicked.
    pub panicked: u64,
    /// Acknowledgements that had no effect (the broker redelivers).
    pub acks_lost: u64,
    /// Redelivered messages published again with their delivery count (classic queues).
    pub recounted: u64,
    /// Handlers stopped by the handler timeout.
    pub timed_out: u64,
    /// Deliveries refused before any handler ran (body limit, delivery limit).
    pub refused: u64,
    /// Follow-ups (retry copies, dead letters) published again after a passing failure.
    pub follow_ups_repeated: u64,
    /// Deliveries held before their handler started because their type was at its rate or
    /// concurrency limit (see the module docs); no retry is counted for them.
    pub held: u64,
}

#[derive(Debug, Default)]
struct WorkerCounters {
    succeeded: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    follow_ups_repeated: AtomicU64,
}

/// The worker's policy on the runtime: registry, retry and dead-letter decisions.
struct WorkerPolicy {
    registry: Registry,
    /// The live limits of the registry's limited types.
    limits: HashMap<&'static str, TypeLimit>,
    counters: Arc<WorkerCounters>,
    /// State of a small xorshift generator for backoff jitter.
    random: AtomicU64,
}

impl WorkerPolicy {
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

type WorkerRuntime<T> = Runtime<T, WorkerPolicy>;

fn stats<T>(rt: &WorkerRuntime<T>) -> WorkerStats {
    stats_of(&rt.counters, &rt.policy.counters)
}

fn stats_of(c: &Counters, w: &WorkerCounters) -> WorkerStats {
    let consumer = c.snapshot();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    WorkerStats {
        received: consumer.received,
        succeeded: get(&w.succeeded),
        retried: get(&w.retried),
        dead_lettered: get(&w.dead_lettered),
        requeued: consumer.requeued,
        panicked: consumer.panicked,
        acks_lost: consumer.acks_lost,
        recounted: consumer.recounted,
        timed_out: consumer.timed_out,
        refused: consumer.refused,
        follow_ups_repeated: get(&w.follow_ups_repeated),
        held: consumer.held,
    }
}

/// Consumes one queue and runs handlers; see the module docs.
pub struct Worker<T> {
    rt: Arc<WorkerRuntime<T>>,
    config: WorkerConfig,
}

impl<T> core::fmt::Debug for Worker<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("registry", &self.rt.policy.registry)
            .finish()
    }
}

/// A running worker started by [`Worker::start`].
#[derive(Debug)]
pub struct WorkerHandle {
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<WorkerStats>>,
    counters: (Arc<Counters>, Arc<WorkerCounters>),
}

impl WorkerHandle {
    /// The counters so far.
    pub fn stats(&self) -> WorkerStats {
        stats_of(&self.counters.0, &self.counters.1)
    }

    /// True once the worker stopped by itself (its subscription ended).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Aborts the worker's task (what a [`crate::Host`] does past its drain deadline).
    pub(crate) fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.join.abort_handle()
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
    /// A worker over `transport` with `config`, dispatching to `registry`. The configuration
    /// is checked when the worker starts.
    pub fn new(transport: Arc<T>, config: WorkerConfig, registry: Registry) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        let limits = registry
            .limited()
            .filter_map(|(type_name, limits)| Some((type_name, TypeLimit::new(&limits)?)))
            .collect();
        let policy = WorkerPolicy {
            registry,
            limits,
            counters: Arc::default(),
            random: AtomicU64::new(seed | 1),
        };
        let rt = Runtime::new(transport, &config.queue, config.consumer.clone(), policy);
        Worker {
            rt: Arc::new(rt),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// The counters so far.
    pub fn stats(&self) -> WorkerStats {
        stats(&self.rt)
    }

    /// The queue layout this worker declares: its queue, bindings and dead-letter queue
    /// (its retries wait on the delay levels of its kind, [`crate::delay`]).
    pub fn queue_spec(&self) -> QueueSpec {
        self.config.queue.clone()
    }

    /// Declares the exchange and the queue layout (idempotent).
    ///
    /// # Errors
    /// The transport's declaration errors.
    pub async fn declare(&self) -> Result<()> {
        let t = &self.rt.transport;
        t.declare_exchange(&self.config.queue.exchange).await?;
        t.declare_queue(&self.queue_spec()).await
    }

    /// Checks the configuration, declares the topology, starts consuming and runs until
    /// `shutdown` completes (then shuts down gracefully) or the subscription ends.
    ///
    /// # Errors
    /// An invalid configuration, declaration or consume errors;
    /// [`ErrorKind::ChannelClosed`] (or the consume error) when the subscription ended
    /// without a shutdown.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerStats> {
        let subscription = self.subscribe().await?;
        serve(Arc::clone(&self.rt), subscription, shutdown).await?;
        Ok(stats(&self.rt))
    }

    /// Checks the configuration, declares the topology, starts consuming (errors are
    /// returned here), then runs in a task of its own until [`WorkerHandle::shutdown`].
    ///
    /// # Errors
    /// An invalid configuration, declaration or consume errors.
    pub async fn start(self) -> Result<WorkerHandle> {
        let subscription = self.subscribe().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let rt = Arc::clone(&self.rt);
        let join = tokio::spawn(async move {
            serve(Arc::clone(&rt), subscription, async move {
                // A dropped handle stops the worker too.
                let _ = stopped.await;
            })
            .await?;
            Ok(stats(&rt))
        });
        Ok(WorkerHandle {
            stop: Some(stop),
            join,
            counters: (
                Arc::clone(&self.rt.counters),
                Arc::clone(&self.rt.policy.counters),
            ),
        })
    }

    async fn subscribe(&self) -> Result<T::Subscription> {
        self.config.validate()?;
        self.rt.policy.registry.validate()?;
        self.declare().await?;
        let c = &self.config;
        self.rt
            .transport
            .consume(&c.queue.name, c.consumer.prefetch)
            .await
    }
}

impl<T: Transport + 'static> Policy<T> for WorkerPolicy {
    async fn handle(
        rt: Arc<WorkerRuntime<T>>,
        delivery: Arc<Delivery>,
        redelivered: bool,
        mut slot: Slot,
    ) -> Verdict {
        match handle(&rt, &delivery, redelivered, &mut slot).await {
            Follow::Ack => {
                bump(&rt.policy.counters.succeeded);
                Verdict::Ack
            }
            Follow::Retried { delay_ms, attempt } => {
                tracing::info!(delay_ms, attempt, "retry scheduled");
                bump(&rt.policy.counters.retried);
                Verdict::Ack
            }
            // The rare paths are boxed: their futures (a publish awaiting its confirm) would
            // otherwise be part of every delivery's task, moved on each spawn.
            Follow::DeadLetter(dead) => Box::pin(dead_letter(&rt, &delivery, dead)).await,
            Follow::Stopped => Box::pin(requeue(&rt.counters, &delivery)).await,
            Follow::GiveBack => Box::pin(give_back_held(&rt, &delivery)).await,
        }
    }

    async fn refuse(
        rt: Arc<WorkerRuntime<T>>,
        delivery: Arc<Delivery>,
        refusal: Refusal,
    ) -> Verdict {
        let (reason, attempts) = match refusal {
            Refusal::Oversized { .. } => (DeadLetterReason::Oversized, 1),
            Refusal::DeliveryLimit { .. } => {
                let attempts = decode_json_raw_with(&delivery.body, &rt.config.decode_limits())
                    .map_or(1, |raw| raw.metadata.retry.count.saturating_add(1));
                (DeadLetterReason::DeliveryLimit, attempts)
            }
        };
        let dead = DeadLetter {
            reason,
            error: refusal.to_string(),
            attempts,
        };
        dead_letter(&rt, &delivery, dead).await
    }
}

/// What follows a handled delivery.
enum Follow {
    Ack,
    Retried {
        delay_ms: u32,
        attempt: u32,
    },
    DeadLetter(DeadLetter),
    /// The transport was closed before the follow-up was confirmed: requeue.
    Stopped,
    /// Held by its type's limits when the worker stopped: give it back, unstarted.
    GiveBack,
}

/// Checks, runs the handler, and performs a retry; returns what is left to do.
async fn handle<T: Transport>(
    rt: &WorkerRuntime<T>,
    delivery: &Arc<Delivery>,
    redelivered: bool,
    slot: &mut Slot,
) -> Follow {
    let body = &delivery.body;
    let dead = |reason, error: String, attempts| {
        Follow::DeadLetter(DeadLetter {
            reason,
            error,
            attempts,
        })
    };
    if let Some(ct) = delivery.content_type() {
        if !is_json(ct) {
            let error = format!("content type {ct:?} is not {CONTENT_TYPE_JSON}");
            return dead(DeadLetterReason::WrongContentType, error, 1);
        }
    }
    let limits = rt.config.decode_limits();
    let raw = match decode_json_raw_with(body, &limits) {
        Ok(raw) => raw,
        Err(e) => return dead(DeadLetterReason::Malformed, format!("envelope: {e}"), 1),
    };
    let attempt = raw.metadata.retry.count.saturating_add(1);
    tracing::Span::current().record("attempt", attempt);
    let Some(entry) = rt.policy.registry.lookup(&raw.metadata.class_name) else {
        let error = format!("no handler for type `{}`", raw.metadata.class_name);
        return dead(DeadLetterReason::UnknownType, error, attempt);
    };
    let retry = raw.metadata.retry.with_default(&entry.meta);
    let ctx = Context {
        message_id: delivery.message_id().map(str::to_owned),
        message_type: entry.type_name,
        attempt,
        redelivered,
        routing_key: origin(delivery, HEADER_ORIGIN_ROUTING_KEY, &delivery.routing_key),
        queue: rt.queue.clone(),
        correlation_id: delivery
            .correlation_id()
            .map(str::to_owned)
            .or_else(|| raw.metadata.correlation_id.map(|t| t.to_string())),
        reply_to: delivery
            .reply_to()
            .map(str::to_owned)
            .or_else(|| raw.metadata.response_queue.map(|t| t.to_string())),
    };
    let future = match entry.start(raw.payload, Some(delivery), ctx) {
        Ok(future) => future,
        Err(e) => {
            let error = format!("payload of {}: {e}", entry.type_name);
            return dead(DeadLetterReason::Malformed, error, attempt);
        }
    };
    // Held here while the type is at its limits; the type's slot is kept until the end.
    let _admitted = match rt.policy.limits.get(entry.type_name) {
        None => None,
        Some(limit) => match limit.admit(slot, &rt.counters).await {
            Admission::Go(admitted) => Some(admitted),
            Admission::Stopping => return Follow::GiveBack,
        },
    };
    let type_name = entry.type_name;
    let (outcome, error) = match run_handler(
        future,
        rt.config.handler_timeout,
        &rt.counters,
        entry.type_name,
        delivery.message_id(),
    )
    .await
    {
        HandlerRun::Finished(Ok(())) => (Outcome::Success, String::new()),
        HandlerRun::Finished(Err(e)) => {
            tracing::info!(error = %e, "handler failed");
            (e.outcome(), e.message().to_owned())
        }
        HandlerRun::Panicked(panic) => (Outcome::Transient, format!("handler panicked: {panic}")),
        HandlerRun::TimedOut(limit) => (
            Outcome::Transient,
            format!("handler timed out after {limit:?}"),
        ),
    };
    let follow = follow_up(rt, delivery, &retry, outcome, error, attempt, &limits).await;
    if let Follow::Retried { delay_ms, attempt } = follow {
        let labels = [("queue", rt.queue.as_str()), ("type", type_name)];
        metrics::count(metrics::MESSAGES_RETRIED, &labels);
        rt.counters.event("retried", |emit| {
            emit(&[
                ("type", Field::Str(Some(type_name))),
                ("id", Field::Str(delivery.message_id())),
                ("attempt", Field::U64(u64::from(attempt))),
                (
                    "next_attempt",
                    Field::U64(u64::from(attempt.saturating_add(1))),
                ),
                ("delay_ms", Field::U64(u64::from(delay_ms))),
                (
                    "due_at",
                    Field::I64(crate::protocol::now_millis() + i64::from(delay_ms)),
                ),
            ]);
        });
    }
    follow
}

/// Asks core what follows the handler's `outcome`, and performs a retry.
async fn follow_up<T: Transport>(
    rt: &WorkerRuntime<T>,
    delivery: &Delivery,
    retry: &RetryMetadata,
    outcome: Outcome,
    error: String,
    attempts: u32,
    limits: &DecodeLimits,
) -> Follow {
    match decide(retry, outcome, rt.policy.next_random()) {
        Decision::Ack => Follow::Ack,
        Decision::DeadLetter { reason } => Follow::DeadLetter(DeadLetter {
            reason,
            error,
            attempts,
        }),
        Decision::Retry { delay_ms, next } => {
            let rewritten = match rewrite(&delivery.body, &next, limits) {
                Ok(rewritten) => rewritten,
                Err(e) => {
                    return Follow::DeadLetter(DeadLetter {
                        reason: DeadLetterReason::FollowUpRefused,
                        error: format!("{error}; the retry copy could not be written: {e}"),
                        attempts,
                    })
                }
            };
            let properties = retry_properties(delivery);
            let levels = if rt.quorum {
                QueueKind::Quorum
            } else {
                QueueKind::Classic
            };
            // A `u32` of milliseconds (49 days) is always within the levels' 397 days.
            let delay = match Delay::from_ms(u64::from(delay_ms)) {
                Ok(delay) => delay.on(levels),
                Err(e) => {
                    return Follow::DeadLetter(DeadLetter {
                        reason: DeadLetterReason::FollowUpRefused,
                        error: format!("{error}; the retry cannot wait: {e}"),
                        attempts,
                    })
                }
            };
            let publish = || {
                let publication =
                    Publication::new("", &rt.queue, &rewritten, &properties).follow_up();
                rt.transport.publish_delayed(publication, delay)
            };
            let c = &rt.policy.counters;
            // Boxed: see `Policy::handle`.
            match Box::pin(repeat_follow_up(
                &rt.counters,
                Some(&c.follow_ups_repeated),
                "retry copy",
                publish,
            ))
            .await
            {
                Ok(()) => Follow::Retried {
                    delay_ms,
                    attempt: attempts,
                },
                Err(e) if e.kind() == ErrorKind::Closed => Follow::Stopped,
                Err(refused) => Follow::DeadLetter(DeadLetter {
                    reason: DeadLetterReason::FollowUpRefused,
                    error: format!("{error}; the retry copy was refused: {refused}"),
                    attempts,
                }),
            }
        }
    }
}

/// The envelope with `retryCount` set to `next.count`, everything else byte-identical.
fn rewrite(body: &[u8], next: &RetryMetadata, limits: &DecodeLimits) -> Result<Vec<u8>> {
    // `"retryCount":4294967295` plus a comma is the most a count edit adds.
    let mut out = vec![0; body.len() + 32];
    let edits = MetadataEdits::retry_count(next.count);
    match rewrite_json_with(body, &edits, limits, &mut out) {
        Ok(n) => {
            out.truncate(n);
            Ok(out)
        }
        Err(e) => Err(Error::new(ErrorKind::Encode).context(format!("rewrite for a retry: {e}"))),
    }
}

/// Properties of a retry: the delivery's, without the broker's death records, with the
/// origin exchange and routing key remembered on the first retry, and the handling span as
/// the trace parent.
fn retry_properties(delivery: &Delivery) -> Properties {
    let mut properties = delivery.properties().clone();
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
    // The same trace, the failed attempt's span as the parent (see `crate::trace`).
    crate::trace::inject_follow_up(&mut properties.headers);
    properties
}

/// Moves the delivery to `<queue>.dead` (see [`crate::consumer::dead_letter`]), logging why.
async fn dead_letter<T: Transport>(
    rt: &WorkerRuntime<T>,
    delivery: &Delivery,
    dead: DeadLetter,
) -> Verdict {
    tracing::warn!(
        reason = dead.reason.as_str(),
        error = %dead.error,
        attempts = dead.attempts,
        "dead-lettering"
    );
    let c = &rt.policy.counters;
    crate::consumer::dead_letter(
        rt,
        delivery,
        dead,
        &c.dead_lettered,
        Some(&c.follow_ups_repeated),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_payload_and_unknown_keys() {
        let body =
            br#"{"payload": {"adId":"1"},"metadata":{"className":"A","x":[1],"retryCount":"0"}}"#;
        let next = RetryMetadata {
            count: 1,
            ..RetryMetadata::default()
        };
        let out = rewrite(body, &next, &DecodeLimits::DEFAULT).ok();
        assert_eq!(
            out.as_deref(),
            Some(&br#"{"payload": {"adId":"1"},"metadata":{"className":"A","x":[1],"retryCount":1}}"#[..])
        );
    }
}
