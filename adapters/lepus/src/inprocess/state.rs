//! The broker's state machine: exchanges, queues, consumers and unsettled deliveries.
//!
//! It does no I/O and reads no clock: callers pass a [`Clock`] in; deliveries leave through
//! each consumer's channel, and queues whose head must expire are listed for the caller to
//! start a timer ([`State::take_timers`]). Routing decisions come from `lepus-core` through
//! [`ExchangeEntry`].

use std::collections::{BTreeMap, HashMap};

use lepus_core::exchange::ExchangeKind;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::delivery::Settlement;
use crate::error::{Error, ErrorKind, Result};
use crate::inprocess::dead_letter::{self, Death, DeathReason};
use crate::inprocess::exchange::{ExchangeEntry, QueueId};
use crate::inprocess::queue::{Queue, QueueArgs, Stored};
use crate::properties::Headers;

/// Names routed straight to a requester's channel (`amq.rabbitmq.reply-to.<token>`).
const DIRECT_REPLY_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// Identifies a consumer (one subscription) for the life of the broker.
pub(crate) type ConsumerId = u64;

/// The time of an operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// Monotonic time, for TTLs (tokio's, so paused time works).
    pub(crate) now: Instant,
    /// Seconds since the Unix epoch, for `x-death` entries.
    pub(crate) unix_secs: u64,
}

/// A delivery on its way to a subscription.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) tag: u64,
    pub(crate) message: Stored,
}

#[derive(Debug)]
struct Consumer {
    queue: QueueId,
    prefetch: u16,
    next_tag: u64,
    unacked: BTreeMap<u64, Stored>,
    /// `None` once cancelled.
    tx: Option<UnboundedSender<Outgoing>>,
}

impl Consumer {
    fn has_credit(&self) -> bool {
        self.tx.is_some() && (self.prefetch == 0 || self.unacked.len() < usize::from(self.prefetch))
    }
}

/// Exchanges RabbitMQ declares in every virtual host.
const PREDECLARED: [(&str, ExchangeKind); 5] = [
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

fn refused(reply_code: u16, context: String) -> Error {
    Error::new(ErrorKind::BrokerRefused { reply_code }).context(context)
}

fn not_found(what: &str, name: &str) -> Error {
    refused(404, format!("no {what} {name:?} (NOT_FOUND)"))
}

/// Everything the broker holds.
#[derive(Debug)]
pub(crate) struct State {
    exchanges: HashMap<String, ExchangeEntry>,
    queue_ids: HashMap<String, QueueId>,
    queues: HashMap<QueueId, Queue>,
    consumers: HashMap<ConsumerId, Consumer>,
    next_queue: QueueId,
    next_consumer: ConsumerId,
    /// Queues whose expiry timer the caller must start.
    timers: Vec<QueueId>,
    route_buf: Vec<QueueId>,
    /// Exchanges bound to other exchanges, by the destination id they are bound as (ids from
    /// the queues' sequence, never reused).
    exchange_dests: HashMap<QueueId, String>,
    exchange_dest_ids: HashMap<String, QueueId>,
    /// Open direct reply-to channels by their `amq.rabbitmq.reply-to.<token>` name.
    reply_routes: HashMap<String, UnboundedSender<Stored>>,
}

impl State {
    pub(crate) fn new() -> Self {
        let exchanges = PREDECLARED
            .iter()
            .map(|&(name, kind)| (name.to_owned(), ExchangeEntry::new(kind)))
            .collect();
        State {
            exchanges,
            queue_ids: HashMap::new(),
            queues: HashMap::new(),
            consumers: HashMap::new(),
            next_queue: 0,
            next_consumer: 0,
            timers: Vec::new(),
            route_buf: Vec::new(),
            exchange_dests: HashMap::new(),
            exchange_dest_ids: HashMap::new(),
            reply_routes: HashMap::new(),
        }
    }

    /// Declares an exchange; an existing one of another kind is refused (406).
    pub(crate) fn declare_exchange(&mut self, name: &str, kind: ExchangeKind) -> Result<()> {
        self.declare_exchange_with(name, kind, None)
    }

    /// Declares an exchange with an alternate exchange (`alternate-exchange`); an existing
    /// one of another kind or alternate is refused (406).
    pub(crate) fn declare_exchange_with(
        &mut self,
        name: &str,
        kind: ExchangeKind,
        alternate: Option<&str>,
    ) -> Result<()> {
        match self.exchanges.get(name) {
            Some(e) if e.kind() == kind && e.alternate() == alternate => Ok(()),
            Some(e) => Err(refused(
                406,
                format!(
                    "exchange {name:?} exists as {:?} with alternate {:?}, not {kind:?} with \
                     {alternate:?} (PRECONDITION_FAILED)",
                    e.kind(),
                    e.alternate()
                ),
            )),
            None => {
                let entry = ExchangeEntry::new(kind).with_alternate(alternate.map(str::to_owned));
                self.exchanges.insert(name.to_owned(), entry);
                Ok(())
            }
        }
    }

    /// Deletes an exchange, its bindings and the bindings to it; a missing one is fine.
    pub(crate) fn delete_exchange(&mut self, name: &str) {
        self.exchanges.remove(name);
        if let Some(id) = self.exchange_dest_ids.remove(name) {
            self.exchange_dests.remove(&id);
            for entry in self.exchanges.values_mut() {
                entry.unbind_queue(id);
            }
        }
    }

    /// Binds exchange `destination` to exchange `source` with `key` and `args`
    /// (`exchange.bind`).
    pub(crate) fn bind_exchange(
        &mut self,
        destination: &str,
        source: &str,
        key: &str,
        args: &Headers,
    ) -> Result<()> {
        if !self.exchanges.contains_key(destination) {
            return Err(not_found("exchange", destination));
        }
        let id = match self.exchange_dest_ids.get(destination) {
            Some(&id) => id,
            None => {
                let id = self.next_queue;
                self.next_queue = self.next_queue.wrapping_add(1);
                self.exchange_dest_ids.insert(destination.to_owned(), id);
                self.exchange_dests.insert(id, destination.to_owned());
                id
            }
        };
        let entry = self
            .exchanges
            .get_mut(source)
            .ok_or_else(|| not_found("exchange", source))?;
        entry.bind(key, args, id).map_err(|e| {
            e.context(format!(
                "bind exchange {destination:?} to exchange {source:?} with {key:?}"
            ))
        })
    }

    /// Number of bindings of an exchange.
    pub(crate) fn binding_count(&self, exchange: &str) -> Result<usize> {
        self.exchanges
            .get(exchange)
            .map(ExchangeEntry::len)
            .ok_or_else(|| not_found("exchange", exchange))
    }

    /// Whether the exchange exists.
    pub(crate) fn has_exchange(&self, name: &str) -> bool {
        self.exchanges.contains_key(name)
    }

    /// Declares a queue; an existing one with other arguments is refused (406).
    pub(crate) fn declare_queue(&mut self, name: &str, args: QueueArgs) -> Result<QueueId> {
        if let Some(&id) = self.queue_ids.get(name) {
            return match self.queues.get(&id) {
                Some(q) if q.args == args => Ok(id),
                Some(q) if q.args.kind != args.kind => {
                    Err(crate::topology::kind_mismatch(name, args.kind))
                }
                _ => Err(refused(
                    406,
                    format!("queue {name:?} exists with other arguments (PRECONDITION_FAILED)"),
                )),
            };
        }
        let id = self.next_queue;
        self.next_queue = self.next_queue.wrapping_add(1);
        self.queue_ids.insert(name.to_owned(), id);
        self.queues.insert(id, Queue::new(name.to_owned(), args));
        Ok(id)
    }

    fn queue_id(&self, name: &str) -> Result<QueueId> {
        self.queue_ids
            .get(name)
            .copied()
            .ok_or_else(|| not_found("queue", name))
    }

    fn queue(&self, name: &str) -> Result<&Queue> {
        let id = self.queue_id(name)?;
        self.queues.get(&id).ok_or_else(|| not_found("queue", name))
    }

    /// Binds a queue to an exchange.
    pub(crate) fn bind(
        &mut self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &Headers,
    ) -> Result<()> {
        let id = self.queue_id(queue)?;
        let entry = self
            .exchanges
            .get_mut(exchange)
            .ok_or_else(|| not_found("exchange", exchange))?;
        entry.bind(key, args, id).map_err(|e| {
            e.context(format!(
                "bind queue {queue:?} to exchange {exchange:?} with {key:?}"
            ))
        })
    }

    /// Removes a binding; returns whether it existed.
    pub(crate) fn unbind(
        &mut self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &Headers,
    ) -> bool {
        match (self.queue_ids.get(queue), self.exchanges.get_mut(exchange)) {
            (Some(&id), Some(entry)) => entry.unbind(key, args, id),
            _ => false,
        }
    }

    /// Deletes a queue, its messages and its bindings; its consumers end. A missing queue is
    /// fine. Returns the number of ready messages deleted.
    pub(crate) fn delete_queue(&mut self, name: &str) -> usize {
        let Some(id) = self.queue_ids.remove(name) else {
            return 0;
        };
        for entry in self.exchanges.values_mut() {
            entry.unbind_queue(id);
        }
        let Some(queue) = self.queues.remove(&id) else {
            return 0;
        };
        for consumer in &queue.consumers {
            self.consumers.remove(consumer);
        }
        queue.ready.len()
    }

    /// Routes a message and enqueues it on every matching queue. `Unroutable` when none
    /// matches (every publish is mandatory).
    pub(crate) fn publish(&mut self, exchange: &str, message: Stored, clock: Clock) -> Result<()> {
        if exchange.is_empty() && message.routing_key.starts_with(DIRECT_REPLY_PREFIX) {
            return self.publish_direct_reply(message);
        }
        let routed = self.route(exchange, &message.routing_key, &message.properties.headers)?;
        if routed.is_empty() {
            self.route_buf = routed;
            return Err(Error::new(ErrorKind::Unroutable { reply_code: 312 }));
        }
        self.enqueue_all(&routed, message, clock);
        self.route_buf = routed;
        Ok(())
    }

    /// Opens a direct reply-to channel: replies published to `name` through the default
    /// exchange go straight to `tx`.
    pub(crate) fn open_reply_route(&mut self, name: String, tx: UnboundedSender<Stored>) {
        self.reply_routes.insert(name, tx);
    }

    /// Closes a direct reply-to channel.
    pub(crate) fn close_reply_route(&mut self, name: &str) {
        self.reply_routes.remove(name);
    }

    /// A reply to a direct reply-to name: handed to the requester's channel, or unroutable
    /// when that channel is gone (at-most-once, as on RabbitMQ).
    fn publish_direct_reply(&mut self, message: Stored) -> Result<()> {
        let key = message.routing_key.clone();
        let sent = match self.reply_routes.get(&key) {
            Some(tx) => tx.send(message).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            self.reply_routes.remove(&key);
            Err(Error::new(ErrorKind::Unroutable { reply_code: 312 }))
        }
    }

    /// The queues `exchange` routes to; the returned buffer should be given back through
    /// `self.route_buf`.
    fn route(
        &mut self,
        exchange: &str,
        routing_key: &str,
        headers: &Headers,
    ) -> Result<Vec<QueueId>> {
        let mut out = core::mem::take(&mut self.route_buf);
        out.clear();
        if exchange.is_empty() {
            // The default exchange: a direct exchange every queue is bound to by its name.
            out.extend(self.queue_ids.get(routing_key).copied());
            return Ok(out);
        }
        let entry = match self.exchanges.get_mut(exchange) {
            Some(entry) => entry,
            None => {
                self.route_buf = out;
                return Err(not_found("exchange", exchange));
            }
        };
        if let Err(e) = entry.route(routing_key, headers, &mut out) {
            self.route_buf = out;
            return Err(e);
        }
        let to_alternate = out.is_empty() && entry.alternate().is_some();
        let to_exchanges = out.iter().any(|id| self.exchange_dests.contains_key(id));
        if !to_alternate && !to_exchanges {
            return Ok(out);
        }
        self.route_on(exchange, routing_key, headers, out)
    }

    /// Routing through exchange-to-exchange bindings and alternate exchanges, as RabbitMQ
    /// does: every exchange reached routes the message once (a cycle ends), an exchange that
    /// routes it nowhere hands it to its alternate exchange, and each queue receives it once.
    /// `found` is what `first` routed to already (it is not routed again).
    fn route_on(
        &mut self,
        first: &str,
        routing_key: &str,
        headers: &Headers,
        mut found: Vec<QueueId>,
    ) -> Result<Vec<QueueId>> {
        let mut out = Vec::new();
        let mut visited: Vec<String> = vec![first.to_owned()];
        let mut pending: Vec<String> = Vec::new();
        if found.is_empty() {
            let alternate = self.exchanges.get(first).and_then(|e| e.alternate());
            pending.extend(alternate.map(str::to_owned));
        }
        loop {
            for id in found.drain(..) {
                match self.exchange_dests.get(&id) {
                    Some(next) => pending.push(next.clone()),
                    None if !out.contains(&id) => out.push(id),
                    None => {}
                }
            }
            let Some(name) = pending.pop() else { break };
            if visited.contains(&name) {
                continue;
            }
            let Some(entry) = self.exchanges.get_mut(&name) else {
                continue;
            };
            entry.route(routing_key, headers, &mut found)?;
            if found.is_empty() {
                pending.extend(entry.alternate().map(str::to_owned));
            }
            visited.push(name);
        }
        self.route_buf = found;
        Ok(out)
    }

    fn enqueue_all(&mut self, routed: &[QueueId], message: Stored, clock: Clock) {
        if let Some((&last, rest)) = routed.split_last() {
            for &id in rest {
                self.enqueue(id, message.clone(), clock);
            }
            self.enqueue(last, message, clock);
        }
    }

    fn enqueue(&mut self, id: QueueId, message: Stored, clock: Clock) {
        if let Some(queue) = self.queues.get_mut(&id) {
            queue.push_back(message, clock.now);
        }
        self.after_change(id);
    }

    /// Delivers what can be delivered and notes a needed expiry timer.
    fn after_change(&mut self, id: QueueId) {
        self.dispatch(id);
        if let Some(queue) = self.queues.get_mut(&id) {
            if queue.needs_expiry_timer() {
                queue.expiry_armed = true;
                self.timers.push(id);
            }
        }
    }

    /// Hands ready messages to consumers with credit, taking turns.
    fn dispatch(&mut self, id: QueueId) {
        let Some(queue) = self.queues.get_mut(&id) else {
            return;
        };
        let n = queue.consumers.len();
        while !queue.ready.is_empty() && n > 0 {
            let start = queue.next_consumer % n;
            let chosen = (0..n).map(|step| (start + step) % n).find(|&i| {
                queue
                    .consumers
                    .get(i)
                    .and_then(|c| self.consumers.get(c))
                    .is_some_and(Consumer::has_credit)
            });
            let Some(i) = chosen else {
                break;
            };
            queue.next_consumer = (i + 1) % n;
            let Some(consumer) = queue
                .consumers
                .get(i)
                .and_then(|c| self.consumers.get_mut(c))
            else {
                break;
            };
            let Some(message) = queue.ready.pop_front() else {
                break;
            };
            consumer.next_tag += 1;
            let tag = consumer.next_tag;
            let sent = match &consumer.tx {
                Some(tx) => tx
                    .send(Outgoing {
                        tag,
                        message: message.clone(),
                    })
                    .is_ok(),
                None => false,
            };
            if sent {
                consumer.unacked.insert(tag, message);
            } else {
                // The subscription is gone: stop delivering to it, keep the message.
                consumer.tx = None;
                queue.push_front(message);
            }
        }
    }

    /// Starts a consumer of `queue`; deliveries go to `tx`.
    pub(crate) fn consume(
        &mut self,
        queue: &str,
        prefetch: u16,
        tx: UnboundedSender<Outgoing>,
    ) -> Result<ConsumerId> {
        let id = self.queue_id(queue)?;
        let cid = self.next_consumer;
        self.next_consumer += 1;
        self.consumers.insert(
            cid,
            Consumer {
                queue: id,
                prefetch,
                next_tag: 0,
                unacked: BTreeMap::new(),
                tx: Some(tx),
            },
        );
        if let Some(q) = self.queues.get_mut(&id) {
            q.consumers.push(cid);
        }
        self.dispatch(id);
        Ok(cid)
    }

    /// Stops deliveries to a consumer; its unsettled deliveries can still be settled.
    pub(crate) fn cancel(&mut self, cid: ConsumerId) {
        let Some(consumer) = self.consumers.get_mut(&cid) else {
            return;
        };
        consumer.tx = None;
        if let Some(queue) = self.queues.get_mut(&consumer.queue) {
            queue.consumers.retain(|&c| c != cid);
        }
    }

    /// Removes a consumer: its unsettled deliveries go back to the head of the queue, in
    /// order, marked redelivered.
    pub(crate) fn remove_consumer(&mut self, cid: ConsumerId) {
        self.cancel(cid);
        let Some(consumer) = self.consumers.remove(&cid) else {
            return;
        };
        let id = consumer.queue;
        if let Some(queue) = self.queues.get_mut(&id) {
            for (_, mut message) in consumer.unacked.into_iter().rev() {
                message.redelivered = true;
                queue.push_front(message);
            }
        }
        self.after_change(id);
    }

    /// Settles a delivery; false when it had no effect (unknown tag or consumer).
    pub(crate) fn settle(
        &mut self,
        cid: ConsumerId,
        tag: u64,
        how: Settlement,
        clock: Clock,
    ) -> bool {
        let Some(consumer) = self.consumers.get_mut(&cid) else {
            return false;
        };
        let id = consumer.queue;
        match how {
            Settlement::Ack => {
                if consumer.unacked.remove(&tag).is_none() {
                    return false;
                }
            }
            Settlement::AckMultiple => {
                if !consumer.unacked.contains_key(&tag) {
                    return false;
                }
                let later = consumer.unacked.split_off(&tag.saturating_add(1));
                consumer.unacked = later;
            }
            Settlement::Nack { requeue } | Settlement::Reject { requeue } => {
                let Some(mut message) = consumer.unacked.remove(&tag) else {
                    return false;
                };
                if requeue {
                    message.redelivered = true;
                    if let Some(queue) = self.queues.get_mut(&id) {
                        queue.push_front(message);
                    }
                } else {
                    self.dead_letter(id, message, DeathReason::Rejected, clock);
                }
            }
        }
        self.after_change(id);
        true
    }

    /// Sends a message a queue rejected or expired to the queue's dead-letter target, with
    /// an `x-death` record. Without a target, or when nothing is bound, it is dropped, as on
    /// RabbitMQ.
    fn dead_letter(
        &mut self,
        from: QueueId,
        mut message: Stored,
        reason: DeathReason,
        clock: Clock,
    ) {
        let Some(queue) = self.queues.get(&from) else {
            return;
        };
        let Some(target) = queue.args.dead_letter.clone() else {
            tracing::debug!(queue = %queue.name, "no dead-letter target; message dropped");
            return;
        };
        dead_letter::record(
            &mut message.properties.headers,
            Death {
                queue: &queue.name,
                reason,
                exchange: &message.exchange,
                routing_key: &message.routing_key,
                time: clock.unix_secs,
            },
        );
        let from_name = queue.name.clone();
        if let Some(key) = target.routing_key {
            message.routing_key = key;
        }
        message.exchange = target.exchange.clone();
        message.redelivered = false;
        match self.route(
            &target.exchange,
            &message.routing_key,
            &message.properties.headers,
        ) {
            Ok(routed) => {
                if routed.is_empty() {
                    tracing::warn!(queue = %from_name, "dead-letter target routes nowhere; message dropped");
                }
                self.enqueue_all(&routed, message, clock);
                self.route_buf = routed;
            }
            Err(e) => {
                tracing::warn!(queue = %from_name, error = %e, "dead-lettering failed; message dropped");
            }
        }
    }

    /// Dead-letters every expired message at the head of a queue.
    pub(crate) fn expire(&mut self, id: QueueId, clock: Clock) {
        loop {
            let Some(queue) = self.queues.get_mut(&id) else {
                return;
            };
            let expired = queue
                .ready
                .front()
                .and_then(|m| m.expires_at)
                .is_some_and(|at| at <= clock.now);
            if !expired {
                return;
            }
            if let Some(message) = queue.ready.pop_front() {
                self.dead_letter(id, message, DeathReason::Expired, clock);
            }
        }
    }

    /// When the head of a queue expires; `None` (and the timer disarmed) when nothing will.
    pub(crate) fn next_expiry(&mut self, id: QueueId) -> Option<Instant> {
        let queue = self.queues.get_mut(&id)?;
        let next = queue.ready.front().and_then(|m| m.expires_at);
        if next.is_none() {
            queue.expiry_armed = false;
        }
        next
    }

    /// Queues whose expiry timer must be started.
    pub(crate) fn take_timers(&mut self) -> Vec<QueueId> {
        core::mem::take(&mut self.timers)
    }

    /// Forgets timers that cannot be started (no runtime): a later change arms them again.
    pub(crate) fn disarm_timers(&mut self) {
        for id in core::mem::take(&mut self.timers) {
            if let Some(queue) = self.queues.get_mut(&id) {
                queue.expiry_armed = false;
            }
        }
    }

    /// Ready messages of a queue.
    pub(crate) fn message_count(&self, queue: &str) -> Result<usize> {
        Ok(self.queue(queue)?.ready.len())
    }

    /// Delivered, unsettled messages of a queue.
    pub(crate) fn unacked_count(&self, queue: &str) -> Result<usize> {
        let id = self.queue_id(queue)?;
        Ok(self
            .consumers
            .values()
            .filter(|c| c.queue == id)
            .map(|c| c.unacked.len())
            .sum())
    }

    /// Active consumers of a queue.
    pub(crate) fn consumer_count(&self, queue: &str) -> Result<usize> {
        Ok(self.queue(queue)?.consumers.len())
    }

    /// Removes every ready message of a queue; returns how many.
    pub(crate) fn purge(&mut self, queue: &str) -> Result<usize> {
        let id = self.queue_id(queue)?;
        let Some(q) = self.queues.get_mut(&id) else {
            return Err(not_found("queue", queue));
        };
        let n = q.ready.len();
        q.ready.clear();
        Ok(n)
    }

    /// Takes the head message of a queue (`basic.get` with automatic acknowledgement).
    pub(crate) fn get(&mut self, queue: &str) -> Result<Option<Stored>> {
        let id = self.queue_id(queue)?;
        Ok(self.queues.get_mut(&id).and_then(|q| q.ready.pop_front()))
    }
}
