//! The consume loop, the checks before a handler, and the graceful shutdown.

use core::future::Future;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::acks::{Acks, Verdict};
use super::config::ConsumerConfig;
use super::counters::{bump, Counters};
use super::hold::Slot;
use crate::core::redelivery::{
    self, DeliveryInfo, Redelivery, COUNT_HEADER, DEFAULT_DELIVERY_LIMIT, QUORUM_COUNT_HEADER,
};
use crate::delivery::Delivery;
use crate::error::{Error, ErrorKind, Result};
use crate::events::Field;
use crate::metrics;
use crate::properties::HeaderValue;
use crate::topology::{QueueKind, QueueSpec};
use crate::transport::{Publication, Subscription, Transport};

/// Bytes a retry copy may have beyond [`ConsumerConfig::max_body`]: writing its `retryCount`
/// (`"retryCount":4294967295,` at most) makes a message at the limit that much longer, and
/// its retry must still reach its handler.
pub(crate) const RETRY_GROWTH: usize = 32;

/// Why the runtime will not hand a delivery to a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The body is over [`ConsumerConfig::max_body`].
    Oversized { len: usize, limit: usize },
    /// The message was delivered more often than the delivery limit allows.
    DeliveryLimit { deliveries: u32, limit: u32 },
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::Oversized { len, limit } => {
                write!(f, "body of {len} bytes exceeds the limit of {limit} bytes")
            }
            Refusal::DeliveryLimit { deliveries, limit } => write!(
                f,
                "delivered {deliveries} times without finishing (limit {limit})"
            ),
        }
    }
}

/// What a service on the runtime does with a delivery: the worker's retry and dead-letter
/// policy, the RPC server's reply policy.
///
/// Both functions settle nacks and rejects themselves and return [`Verdict::Settled`] then,
/// or return [`Verdict::Ack`] for the runtime to acknowledge the delivery in a batch once
/// the work it stands for is done (the handler finished, its follow-up was confirmed).
pub(crate) trait Policy<T: Transport>: Sized + Send + Sync + 'static {
    /// Handles a delivery that passed the runtime's checks. `redelivered`: the message was
    /// (or may have been) delivered before. `slot` is the delivery's handler slot, which a
    /// policy may give up while it holds the delivery ([`super::TypeLimit::admit`]).
    fn handle(
        rt: Arc<Runtime<T, Self>>,
        delivery: Arc<Delivery>,
        redelivered: bool,
        slot: Slot,
    ) -> impl Future<Output = Verdict> + Send;

    /// A delivery the runtime refused before any handler ran.
    fn refuse(
        rt: Arc<Runtime<T, Self>>,
        delivery: Arc<Delivery>,
        refusal: Refusal,
    ) -> impl Future<Output = Verdict> + Send;
}

/// A consumer of one queue: transport, settings, counters and the service's policy.
pub(crate) struct Runtime<T, P> {
    pub(crate) transport: Arc<T>,
    pub(crate) queue: String,
    /// Deliveries allowed in all for one message (see [`crate::core::redelivery`]).
    pub(crate) delivery_limit: u32,
    /// The queue is a quorum queue: only then is `x-delivery-count` the broker's own.
    pub(crate) quorum: bool,
    pub(crate) config: ConsumerConfig,
    pub(crate) counters: Arc<Counters>,
    pub(crate) policy: P,
}

impl<T, P> Runtime<T, P> {
    /// A runtime consuming the queue of `spec` (its name, delivery limit and kind) with
    /// `config`, for `policy`.
    pub(crate) fn new(
        transport: Arc<T>,
        spec: &QueueSpec,
        config: ConsumerConfig,
        policy: P,
    ) -> Self {
        let counters = Arc::new(Counters::new(&spec.name).with_events(config.events.clone()));
        Runtime {
            transport,
            queue: spec.name.clone(),
            delivery_limit: spec.delivery_limit.unwrap_or(DEFAULT_DELIVERY_LIMIT),
            quorum: spec.kind == QueueKind::Quorum,
            config,
            counters,
            policy,
        }
    }
}

/// Consumes until `shutdown` completes (then shuts down gracefully, see the module docs) or
/// the subscription ends (then returns why).
pub(crate) async fn serve<T, P>(
    rt: Arc<Runtime<T, P>>,
    mut subscription: T::Subscription,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()>
where
    T: Transport + 'static,
    T::Subscription: 'static,
    P: Policy<T>,
{
    let queue = rt.queue.clone();
    tokio::pin!(shutdown);
    let permits = Arc::new(Semaphore::new(rt.config.concurrency.max(1)));
    // Tells held deliveries to give themselves back.
    let (stop, stopping) = watch::channel(false);
    // A held delivery that may start wants the slot the loop holds while it waits. One wait
    // for it, kept across the loop's turns (a new one per turn registered and dropped a
    // waiter on every delivery); a notification while the loop has no slot is kept for when
    // it has one, as `Notify` keeps it for a later wait.
    let wanted = Arc::new(Notify::new());
    let want = wanted.notified();
    tokio::pin!(want);
    let mut tasks: JoinSet<Verdict> = JoinSet::new();
    let mut in_flight = InFlight::default();
    let mut acks = Acks::new();
    let counters = &*rt.counters;
    // The delayed-flush timer, re-armed only when the deadline moves.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<tokio::time::Instant> = None;
    // A handler slot, taken before waiting for a delivery (so prefetch is not outrun).
    let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut ended: Option<Error> = None;
    tracing::info!(queue = %queue, "consumer started");
    counters.event("started", |emit| emit(&[]));
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
                reap(&rt, joined, &mut in_flight, &mut acks).await;
            }
            () = &mut timer, if armed.is_some() => {
                armed = None;
                acks.flush_due(counters).await;
            }
            acquired = Arc::clone(&permits).acquire_owned(), if permit.is_none() => {
                let Ok(acquired) = acquired else { break };
                permit = Some(acquired);
            }
            () = &mut want, if permit.is_some() => {
                // The held delivery is queued for a slot first: it gets this one, and the
                // loop takes the next free one behind it.
                permit = None;
                want.set(wanted.notified());
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
                Some(Ok(mut delivery)) => {
                    let Some(permit) = permit.take() else { break };
                    counters.bump(&counters.received, metrics::MESSAGES_RECEIVED);
                    counters.event("received", |emit| {
                        emit(&[
                            ("type", Field::Str(delivery.message_type())),
                            ("id", Field::Str(delivery.message_id())),
                        ]);
                    });
                    in_flight_gauge(counters, 1.0);
                    crate::delay::arrival(&mut delivery);
                    let tracked = acks.receive(counters, &delivery);
                    let delivery = Arc::new(delivery);
                    let slot = Slot::new(
                        permit,
                        Arc::clone(&permits),
                        stopping.clone(),
                        Arc::clone(&wanted),
                    );
                    // Boxed: the task's future is large (the handler's run, the span, the
                    // policy's follow-ups), and spawning moves an unboxed one several times.
                    let task = Box::pin(process(Arc::clone(&rt), Arc::clone(&delivery), slot));
                    let handle = tasks.spawn(task);
                    in_flight.insert(handle.id(), (delivery, tracked));
                }
            },
        }
    }
    drop(permit);
    // Held deliveries give themselves back now, alongside step 1.
    let _ = stop.send(true);

    // 1. Stop the flow; give back what arrived but was not started (held ones included).
    if ended.is_none() {
        if let Err(e) = subscription.cancel().await {
            tracing::warn!(queue = %queue, error = %e, "cancelling the consumer failed");
        }
        // Bounded like the handlers' wait: on a broker that stopped answering, the rest is
        // requeued at once (or left to the channel's end) instead of waiting per message.
        let until = tokio::time::Instant::now() + rt.config.shutdown_timeout;
        let mut giving_back = true;
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(100), subscription.next()).await
        {
            counters.bump(&counters.received, metrics::MESSAGES_RECEIVED);
            if giving_back {
                giving_back = give_back(&rt, &delivery, until).await;
            } else {
                requeue(counters, &delivery).await;
            }
        }
    }
    // 2. Let running handlers finish, up to the timeout.
    let deadline = tokio::time::Instant::now() + rt.config.shutdown_timeout;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next_with_id()).await {
            Ok(Some(joined)) => reap(&rt, joined, &mut in_flight, &mut acks).await,
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    queue = %queue,
                    running = tasks.len(),
                    "shutdown timeout: requeueing the messages of running handlers"
                );
                tasks.abort_all();
                while let Some(joined) = tasks.join_next_with_id().await {
                    reap(&rt, joined, &mut in_flight, &mut acks).await;
                }
            }
        }
    }
    // 3. Acknowledge what finished, then close the consumer's channel.
    acks.flush(counters).await;
    drop(subscription);
    tracing::info!(queue = %queue, stats = ?counters.snapshot(), "consumer stopped");
    counters.event("stopped", |emit| emit(&[]));
    match ended {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Moves the `in flight` gauge of the consumer's queue by `delta`.
fn in_flight_gauge(counters: &Counters, delta: f64) {
    metrics::gauge_add(
        metrics::MESSAGES_IN_FLIGHT,
        &[("queue", &counters.queue)],
        delta,
    );
}

/// Counts a refusal, by reason.
fn refused(counters: &Counters, reason: &'static str) {
    bump(&counters.refused);
    let labels = [("queue", counters.queue.as_str()), ("reason", reason)];
    metrics::count(metrics::MESSAGES_REFUSED, &labels);
}

/// Running delivery tasks: their delivery, and whether the ack window tracks it.
type InFlight = HashMap<tokio::task::Id, (Arc<Delivery>, bool), BuildHasherDefault<TaskIdHasher>>;

/// Hashes tokio's task ids, numbers it hands out in sequence (not input from outside, so
/// nothing to guard against flooding), with a multiplication instead of SipHash.
#[derive(Default)]
struct TaskIdHasher(u64);

impl Hasher for TaskIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the golden ratio spreads a sequence over the high bits, which
        // the map's control bytes use, and keeps the low ones distinct.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Hands a finished task's verdict to the acks; requeues the delivery of a task that
/// panicked or was aborted.
async fn reap<T, P>(
    rt: &Runtime<T, P>,
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
                requeue(&rt.counters, delivery).await;
            }
            (e.id(), Verdict::Settled)
        }
    };
    if let Some((delivery, tracked)) = in_flight.remove(&id) {
        in_flight_gauge(&rt.counters, -1.0);
        acks.finish(&rt.counters, delivery, tracked, verdict).await;
    }
}

/// One delivery from the runtime's checks to its verdict, in a span of its own.
async fn process<T, P>(rt: Arc<Runtime<T, P>>, delivery: Arc<Delivery>, slot: Slot) -> Verdict
where
    T: Transport + 'static,
    P: Policy<T>,
{
    let message_id = delivery.message_id().unwrap_or("");
    let span = tracing::info_span!(
        "lepus.message",
        queue = %rt.queue,
        message_id,
        message_type = delivery.message_type().unwrap_or(""),
        delivery_tag = delivery.delivery_tag,
        attempt = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
        "otel.name" = format!("process {}", rt.queue),
        "otel.kind" = "consumer",
        "messaging.system" = "rabbitmq",
        "messaging.operation.type" = "process",
        "messaging.destination.name" = %delivery.exchange,
        "messaging.rabbitmq.destination.routing_key" = %delivery.routing_key,
        "messaging.message.id" = message_id,
        "messaging.message.conversation_id" =
            delivery.correlation_id().unwrap_or(""),
    );
    // The one place a message's trace is read: the handler (and what it publishes), the
    // retry copy and the dead letter all continue it.
    let context = crate::trace::for_delivery(
        delivery.header_bytes(crate::trace::HEADER_TRACEPARENT),
        delivery.header_str(crate::trace::HEADER_TRACESTATE),
        &span,
    );
    crate::trace::record(&span, &context);
    let processing = async {
        let limit = rt.config.max_body;
        if delivery.body.len() > limit.saturating_add(RETRY_GROWTH) {
            refused(&rt.counters, "oversized");
            let refusal = Refusal::Oversized {
                len: delivery.body.len(),
                limit,
            };
            // The refusals and the recount are boxed (rare; see the worker's `handle`).
            return Box::pin(P::refuse(rt, delivery, refusal)).await;
        }
        match redelivery::decide(delivery_info(&delivery, rt.quorum), rt.delivery_limit) {
            Redelivery::Handle { redelivered, .. } => {
                P::handle(rt, delivery, redelivered, slot).await
            }
            Redelivery::Recount { deliveries } => {
                match Box::pin(publish_counted_copy(&*rt, &delivery, deliveries)).await {
                    Ok(()) => {
                        tracing::warn!(
                            deliveries,
                            "redelivered message published again with its count"
                        );
                        rt.counters.bump(&rt.counters.recounted, metrics::MESSAGES_RECOUNTED);
                        Verdict::Ack
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing the counted copy failed; requeueing");
                        Box::pin(requeue(&rt.counters, &delivery)).await
                    }
                }
            }
            Redelivery::DeadLetter { deliveries } => {
                refused(&rt.counters, "delivery-limit");
                let refusal = Refusal::DeliveryLimit {
                    deliveries,
                    limit: rt.delivery_limit,
                };
                Box::pin(P::refuse(rt, delivery, refusal)).await
            }
        }
    }
    .instrument(span);
    context.scope(processing).await
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
async fn give_back<T: Transport, P>(
    rt: &Runtime<T, P>,
    delivery: &Delivery,
    until: tokio::time::Instant,
) -> bool {
    let earlier = redelivery::earlier_deliveries(delivery_info(delivery, rt.quorum));
    let copy = publish_counted_copy(rt, delivery, earlier);
    let published = tokio::time::timeout_at(until, copy)
        .await
        .unwrap_or_else(|_| {
            Err(Error::new(ErrorKind::Timeout).context("give back: no confirm by the deadline"))
        });
    match published {
        Ok(()) => {
            match delivery.ack().await {
                Ok(()) => rt
                    .counters
                    .bump(&rt.counters.requeued, metrics::MESSAGES_REQUEUED),
                // The broker delivers the original again as well: a duplicate, not a loss.
                Err(e) => note_settle_error(&rt.counters, &e, "give back"),
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "giving back an unstarted delivery failed; requeueing");
            requeue(&rt.counters, delivery).await;
            false
        }
    }
}

/// Gives back a held delivery at shutdown (see [`give_back`]), within the shutdown timeout.
pub(crate) async fn give_back_held<T: Transport, P>(
    rt: &Runtime<T, P>,
    delivery: &Delivery,
) -> Verdict {
    let until = tokio::time::Instant::now() + rt.config.shutdown_timeout;
    give_back(rt, delivery, until).await;
    Verdict::Settled
}

/// Publishes a copy of `delivery` straight into the consumer's queue with [`COUNT_HEADER`]
/// set to `count` (the recount of a classic redelivery, and giving back at shutdown), and
/// waits for its confirm. The broker's own count (`x-delivery-count`) belongs to the
/// delivered copy, so the new copy starts without one.
async fn publish_counted_copy<T: Transport, P>(
    rt: &Runtime<T, P>,
    delivery: &Delivery,
    count: u32,
) -> Result<()> {
    let mut properties = delivery.properties().clone();
    properties.headers.remove(QUORUM_COUNT_HEADER);
    properties
        .headers
        .insert(COUNT_HEADER.to_owned(), HeaderValue::Int(i64::from(count)));
    let publication = Publication::new("", &rt.queue, &delivery.body, &properties).follow_up();
    rt.transport.publish(publication).await
}

/// Requeues a delivery (`nack` with requeue).
pub(crate) async fn requeue(counters: &Counters, delivery: &Delivery) -> Verdict {
    match delivery.nack(true).await {
        Ok(()) => counters.bump(&counters.requeued, metrics::MESSAGES_REQUEUED),
        Err(e) => note_settle_error(counters, &e, "requeue"),
    }
    Verdict::Settled
}

/// Logs a failed settlement; counts a lost acknowledgement.
pub(crate) fn note_settle_error(counters: &Counters, e: &Error, what: &str) {
    if e.kind() == ErrorKind::AckLost {
        counters.bump(&counters.acks_lost, metrics::ACKS_LOST);
        tracing::warn!(error = %e, "{what}: acknowledgement lost; the broker redelivers");
    } else {
        tracing::warn!(error = %e, "{what} failed");
    }
}

/// What the broker told about a delivery, for [`redelivery::decide`]. On a classic queue an
/// `x-delivery-count` header is a publisher's, not the broker's: it is ignored.
fn delivery_info(delivery: &Delivery, quorum: bool) -> DeliveryInfo {
    let count = |key: &str| delivery.header_i64(key).and_then(|n| u64::try_from(n).ok());
    DeliveryInfo {
        redelivered: delivery.redelivered,
        quorum_count: if quorum {
            count(QUORUM_COUNT_HEADER)
        } else {
            None
        },
        counted: count(COUNT_HEADER),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::Hasher;

    use super::TaskIdHasher;

    fn hash(id: u64) -> u64 {
        let mut h = TaskIdHasher::default();
        h.write_u64(id);
        h.finish()
    }

    #[test]
    fn task_ids_in_sequence_spread_over_high_and_low_bits() {
        let hashes: Vec<u64> = (1..=4096).map(hash).collect();
        assert_eq!(hashes.iter().collect::<HashSet<_>>().len(), 4096);
        // hashbrown takes its control byte from the top 7 bits and the bucket from the low.
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(top.len(), 128, "{top:?}");
        let low: HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        assert_eq!(low.len(), 4096);
    }
}
