//! [`InProcessBroker`]: the [`Transport`] operations on the in-process broker.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use lepus_core::exchange::ExchangeKind;
use tokio::sync::mpsc;

use crate::core::delay::TOP_LEVEL;
use crate::delay::{self, Delay, DELIVERY_EXCHANGE, UNROUTED};
use crate::delivery::Delivery;
use crate::error::Result;
use crate::inprocess::exchange::QueueId;
use crate::inprocess::queue::{DeadLetterTarget, QueueArgs, Stored};
use crate::inprocess::state::{Clock, State};
use crate::inprocess::subscription::{delivery, Acker, InProcessSubscription};
use crate::names::{
    check_binding_pattern, check_exchange_name, check_payload, check_queue_name, check_routing_key,
    check_target_exchange,
};
use crate::properties::{Headers, Properties};
use crate::protocol::DEFAULT_MAX_PAYLOAD;
use crate::protocol::{new_message_id, now_seconds};
use crate::topology::{dead_letter_queue_name, QueueKind, QueueSpec};
use crate::transport::{Publication, Transport};

/// The broker's state, shared by its handles, subscriptions and deliveries.
pub(crate) struct Shared {
    state: Mutex<State>,
    max_payload: usize,
    /// The schedule ledgers (see [`crate::ledger`]).
    pub(crate) ledgers: crate::inprocess::ledger::Ledgers,
}

impl core::fmt::Debug for Shared {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Shared")
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn clock() -> Clock {
    Clock {
        now: tokio::time::Instant::now(),
        unix_secs: now_seconds(),
    }
}

/// Runs `f` on the locked state, then starts the expiry timers it asked for (on the current
/// tokio runtime; without one, they start with a later operation that has one).
pub(crate) fn locked<T>(shared: &Arc<Shared>, f: impl FnOnce(&mut State, Clock) -> T) -> T {
    let runtime = tokio::runtime::Handle::try_current().ok();
    let (out, timers) = {
        let mut state = shared.lock();
        let out = f(&mut state, clock());
        let timers = match runtime {
            Some(_) => state.take_timers(),
            None => {
                state.disarm_timers();
                Vec::new()
            }
        };
        (out, timers)
    };
    if let Some(runtime) = runtime {
        for queue in timers {
            runtime.spawn(expire_queue(Arc::downgrade(shared), queue));
        }
    }
    out
}

/// Dead-letters the head of a TTL queue whenever it expires, until the queue is empty.
/// Holds the broker weakly: dropping the broker ends it.
async fn expire_queue(shared: Weak<Shared>, queue: QueueId) {
    loop {
        let deadline = match shared.upgrade() {
            Some(s) => match s.lock().next_expiry(queue) {
                Some(deadline) => deadline,
                None => return,
            },
            None => return,
        };
        tokio::time::sleep_until(deadline).await;
        match shared.upgrade() {
            Some(s) => locked(&s, |state, clock| state.expire(queue, clock)),
            None => return,
        }
    }
}

/// A message broker inside the process, with RabbitMQ's semantics for everything
/// [`Transport`] offers: the same program runs on it or on [`crate::AmqpTransport`].
///
/// - Exchanges: durable topic ones through [`Transport::declare_exchange`], any kind
///   (direct, fanout, topic, headers) through [`InProcessBroker::declare_exchange_kind`];
///   the default exchange `""` routes by queue name; `amq.direct`, `amq.fanout`,
///   `amq.topic`, `amq.headers` and `amq.match` exist. Routing is `lepus-core`'s.
/// - Publishing is mandatory: a message no queue receives is
///   [`crate::ErrorKind::Unroutable`]; a missing exchange is
///   [`crate::ErrorKind::BrokerRefused`] 404. A publish returns once the message is
///   enqueued. Names, body size and properties are validated as on RabbitMQ.
/// - Consumers: per-subscription prefetch (0: unlimited) and delivery tags; consumers of one
///   queue take turns. Requeued messages go back to the head, marked redelivered; rejected
///   ones go to the queue's dead-letter target with an `x-death` header.
/// - Wait queues expire their head after the queue's message TTL on tokio timers (paused
///   time works) and dead-letter it back to the origin queue.
///
/// Cheap to clone: clones share one broker. Capacity limits (bindings per exchange, see
/// [`crate::inprocess`]) are [`crate::ErrorKind::CapacityExceeded`], never a panic.
#[derive(Debug, Clone)]
pub struct InProcessBroker {
    shared: Arc<Shared>,
}

impl Default for InProcessBroker {
    fn default() -> Self {
        InProcessBroker::new()
    }
}

impl InProcessBroker {
    /// An empty broker with the default body size limit
    /// ([`crate::DEFAULT_MAX_PAYLOAD`], as the RabbitMQ transport).
    pub fn new() -> Self {
        InProcessBroker::with_max_payload(DEFAULT_MAX_PAYLOAD)
    }

    /// An empty broker refusing bodies over `bytes`.
    pub fn with_max_payload(bytes: usize) -> Self {
        InProcessBroker {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new()),
                max_payload: bytes,
                ledgers: crate::inprocess::ledger::Ledgers::default(),
            }),
        }
    }

    /// The body size limit, in bytes.
    pub fn max_payload(&self) -> usize {
        self.shared.max_payload
    }

    /// The shared state (for the RPC reply path).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State, Clock) -> T) -> T {
        locked(&self.shared, f)
    }

    /// Declares an exchange of any kind (idempotent; another kind under the same name is
    /// refused with 406, as on RabbitMQ).
    pub fn declare_exchange_kind(&self, exchange: &str, kind: ExchangeKind) -> Result<()> {
        check_exchange_name(exchange)?;
        self.with_state(|s, _| s.declare_exchange(exchange, kind))
    }

    /// Binds `queue` to `exchange` with a binding key (pattern for topic, routing key for
    /// direct, unused by fanout and headers) and arguments (matched by headers exchanges,
    /// `x-match` included). Idempotent. Errors: missing queue or exchange (404), invalid
    /// `x-match` (406), a full exchange ([`crate::ErrorKind::CapacityExceeded`]).
    pub fn bind_queue(&self, queue: &str, exchange: &str, key: &str, args: &Headers) -> Result<()> {
        check_queue_name(queue)?;
        check_target_exchange(exchange)?;
        check_binding_pattern(key)?;
        let props = Properties {
            headers: args.clone(),
            ..Properties::default()
        };
        props.validate()?;
        self.with_state(|s, _| s.bind(queue, exchange, key, args))
    }

    /// Removes a binding; returns whether it existed.
    pub fn unbind_queue(&self, queue: &str, exchange: &str, key: &str, args: &Headers) -> bool {
        self.with_state(|s, _| s.unbind(queue, exchange, key, args))
    }

    /// Number of bindings of `exchange`. 404 for a missing exchange.
    pub fn binding_count(&self, exchange: &str) -> Result<usize> {
        self.with_state(|s, _| s.binding_count(exchange))
    }

    /// Number of ready (not yet delivered) messages in `queue`, as RabbitMQ's
    /// `message_count`. 404 for a missing queue.
    pub fn message_count(&self, queue: &str) -> Result<usize> {
        self.with_state(|s, _| s.message_count(queue))
    }

    /// Number of delivered, unsettled messages of `queue`.
    pub fn unacked_count(&self, queue: &str) -> Result<usize> {
        self.with_state(|s, _| s.unacked_count(queue))
    }

    /// Number of active consumers of `queue`.
    pub fn consumer_count(&self, queue: &str) -> Result<usize> {
        self.with_state(|s, _| s.consumer_count(queue))
    }

    /// Deletes every ready message of `queue`; returns how many.
    pub fn purge(&self, queue: &str) -> Result<usize> {
        self.with_state(|s, _| s.purge(queue))
    }

    /// Takes the message at the head of `queue`, if any, already acknowledged (`basic.get`
    /// with `no_ack`): settling it is a no-op. For tests and inspection.
    pub fn get(&self, queue: &str) -> Result<Option<Delivery>> {
        check_queue_name(queue)?;
        let message = self.with_state(|s, _| s.get(queue))?;
        Ok(message.map(|m| {
            let acker = Acker {
                shared: None,
                consumer: 0,
                tag: 0,
            };
            delivery(m, 0, acker)
        }))
    }

    /// Checks a publication and turns it into a stored message (message id and timestamp
    /// filled in when absent, as the RabbitMQ publisher does).
    pub(crate) fn prepare(&self, p: &Publication<'_>) -> Result<Stored> {
        check_target_exchange(p.exchange)?;
        check_routing_key(p.routing_key)?;
        check_payload(p.body.len(), p.body_limit(self.shared.max_payload))?;
        p.properties.validate()?;
        let mut properties = p.properties.clone();
        if properties.message_id.is_none() {
            properties.message_id = Some(new_message_id());
        }
        if properties.timestamp.is_none() {
            properties.timestamp = Some(now_seconds());
        }
        Ok(Stored {
            body: p.body.to_vec(),
            properties,
            exchange: p.exchange.to_owned(),
            routing_key: p.routing_key.to_owned(),
            redelivered: false,
            expires_at: None,
        })
    }

    pub(crate) fn send(&self, p: &Publication<'_>, message: Stored) -> Result<()> {
        match self.with_state(|s, clock| s.publish(p.exchange, message, clock)) {
            Err(e) if !p.mandatory && e.is_unroutable() => Ok(()),
            other => other,
        }
        .map_err(|e| {
            e.context(format!(
                "publish to exchange {:?} with routing key {:?}",
                p.exchange, p.routing_key
            ))
        })
    }

    /// Declares the delay levels of `kind` ([`crate::delay`]) unless they exist: the same
    /// exchanges, queues and bindings as on RabbitMQ, routed by core's topic matcher.
    fn declare_delay_levels(&self, kind: QueueKind) -> Result<()> {
        let none = Headers::new();
        self.with_state(|s, _| {
            if s.has_exchange(&delay::level_name(kind, TOP_LEVEL)) {
                return Ok(());
            }
            s.declare_exchange(UNROUTED, ExchangeKind::Fanout)?;
            s.declare_queue(UNROUTED, QueueArgs::plain(QueueKind::Classic))?;
            s.bind(UNROUTED, UNROUTED, "", &none)?;
            s.declare_exchange_with(DELIVERY_EXCHANGE, ExchangeKind::Topic, Some(UNROUTED))?;
            for level in delay::levels(kind) {
                s.declare_exchange(&level.name, ExchangeKind::Headers)?;
                let args = QueueArgs {
                    kind,
                    dead_letter: Some(DeadLetterTarget {
                        exchange: level.below.clone(),
                        routing_key: None,
                    }),
                    message_ttl_ms: Some(level.ttl_ms),
                    max_priority: None,
                };
                s.declare_queue(&level.name, args)?;
                s.bind(&level.name, &level.name, "", &level.wait_binding)?;
                s.bind_exchange(&level.below, &level.name, "", &level.pass_binding)?;
            }
            Ok(())
        })
    }
}

impl Transport for InProcessBroker {
    type Subscription = InProcessSubscription;

    async fn declare_exchange(&self, exchange: &str) -> Result<()> {
        self.declare_exchange_kind(exchange, ExchangeKind::Topic)
    }

    async fn declare_queue(&self, spec: &QueueSpec) -> Result<()> {
        spec.validate()?;
        let deliveries = delay::delivery_patterns(spec)?;
        self.declare_delay_levels(spec.kind)?;
        let queue = spec.name.as_str();
        let dead = dead_letter_queue_name(queue)?;
        let args = QueueArgs {
            kind: spec.kind,
            dead_letter: Some(DeadLetterTarget {
                exchange: String::new(),
                routing_key: Some(dead.clone()),
            }),
            message_ttl_ms: None,
            max_priority: spec.max_priority,
        };
        let none = Headers::new();
        self.with_state(|s, _| {
            s.declare_queue(queue, args)?;
            s.declare_queue(&dead, QueueArgs::plain(spec.kind))?;
            if !spec.bindings.is_empty() && !s.has_exchange(&spec.exchange) {
                return Err(
                    crate::Error::new(crate::ErrorKind::BrokerRefused { reply_code: 404 })
                        .context(format!("no exchange {:?} (NOT_FOUND)", spec.exchange)),
                );
            }
            for pattern in &spec.bindings {
                s.bind(queue, &spec.exchange, pattern, &none)?;
            }
            for pattern in &deliveries {
                s.bind(queue, DELIVERY_EXCHANGE, pattern, &none)?;
            }
            Ok(())
        })
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<()> {
        let message = self.prepare(&publication)?;
        self.send(&publication, message)
    }

    async fn publish_batch(&self, batch: &[Publication<'_>]) -> Result<Vec<Result<()>>> {
        let prepared = batch
            .iter()
            .map(|p| self.prepare(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(batch
            .iter()
            .zip(prepared)
            .map(|(p, message)| self.send(p, message))
            .collect())
    }

    async fn publish_delayed(&self, publication: Publication<'_>, delay: Delay) -> Result<()> {
        if delay.as_ms() == 0 {
            return self.publish(publication).await;
        }
        let key = delay::key(&publication)?;
        let properties = delay::with_levels(publication.properties, delay)?;
        self.declare_delay_levels(delay.levels())?;
        let entry = delay::entry_exchange(delay);
        self.publish(Publication {
            exchange: &entry,
            routing_key: key.as_str(),
            properties: &properties,
            ..publication
        })
        .await
    }

    async fn publish_dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        properties: &Properties,
    ) -> Result<()> {
        let dead = dead_letter_queue_name(queue)?;
        self.publish(Publication::new("", &dead, body, properties).follow_up())
            .await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<InProcessSubscription> {
        check_queue_name(queue)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let consumer = self
            .with_state(|s, _| s.consume(queue, prefetch, tx))
            .map_err(|e| e.context(format!("consume queue {queue:?}")))?;
        tracing::debug!(queue, prefetch, "consuming (in-process)");
        Ok(InProcessSubscription::new(
            Arc::clone(&self.shared),
            consumer,
            queue.to_owned(),
            rx,
        ))
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        check_queue_name(queue)?;
        self.with_state(|s, _| s.delete_queue(queue));
        Ok(())
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<()> {
        check_exchange_name(exchange)?;
        self.with_state(|s, _| s.delete_exchange(exchange));
        Ok(())
    }
}
