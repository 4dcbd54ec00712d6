//! Operational events: what consumers do, as compact JSON on a topic exchange
//! (`lepus.events` by default), for a console or any other watcher. Off by default.
//!
//! ```rust,ignore
//! let events = Events::start(Arc::clone(&transport), EventsConfig::default());
//! let config = WorkerConfig::new("mailer", "shop").consumer(ConsumerConfig::default().events(events.clone()));
//! ```
//!
//! Every service on the consumer runtime (worker, RPC server, gateway) emits through the
//! runtime's one hook, so a service emits nothing of its own; a scheduler, which consumes
//! nothing, emits its own few ([`crate::Scheduler::events`]):
//!
//! | `kind` | when | fields beside `kind`, `queue`, `instance`, `at` (Unix ms) |
//! |---|---|---|
//! | `started` / `stopped` | a consumer starts / stops | |
//! | `heartbeat` | every [`EventsConfig::heartbeat`] per running consumer | `received` (count so far) |
//! | `received` | a delivery arrives (only with [`EventsConfig::received`]: the heartbeat carries the count, `handled` follows every delivery) | `type`, `id` |
//! | `handled` | a handler finished | `type`, `id`, `outcome` (`ok`, `error`, `panic`, `timeout`), `ms`, `error` |
//! | `retried` | a retry copy was confirmed | `type`, `id`, `attempt` (the one that failed), `next_attempt`, `delay_ms`, `due_at` (Unix ms) |
//! | `dead-lettered` | a dead letter was confirmed | `type`, `id`, `reason` |
//! | `replied` | an RPC server sent (or gave up) a reply | `outcome` (`reply`, `error`, `unroutable`, `failed`) |
//! | `served` | an RPC server finished a request: `ms` from the start of its handling (decode, handler, reply published) | `type`, `id`, `ms` |
//! | `leading`, `ticks-published` | a [`crate::Scheduler`] replica became the publisher / committed ticks (`queue` is its ledger, `lepus.schedule.<name>`) | `schedule`, `ticks`: [{`entry`, `tick_ms`}] |
//!
//! **Cost.** Emitting never awaits: an event goes into a bounded channel
//! ([`EventsConfig::capacity`]) and a background task publishes them in batches (one message
//! per batch, a JSON array, routing key `events.<instance>`), at most every
//! [`EventsConfig::flush_interval`] or when [`EventsConfig::batch`] are waiting. When the
//! channel is full (the broker is slow, or the exchange is missing) the event is dropped and
//! counted ([`EventStats::dropped`]), never blocking the consume path. Publishes are mandatory:
//! with nobody bound to the exchange a batch is unroutable, counted as `unrouted`, and nothing
//! is stored.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::ErrorKind;
use crate::properties::Properties;
use crate::protocol::{new_message_id, now_millis, CONTENT_TYPE_JSON};
use crate::transport::{Publication, Transport};

/// The exchange events go to by default.
pub const DEFAULT_EVENTS_EXCHANGE: &str = "lepus.events";

/// Settings of an [`Events`] emitter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventsConfig {
    /// The topic exchange (declared by the emitter). Default [`DEFAULT_EVENTS_EXCHANGE`].
    pub exchange: String,
    /// Events waiting at most; more are dropped and counted. Default 8192.
    pub capacity: usize,
    /// Events per published batch at most. Default 256.
    pub batch: usize,
    /// Longest an event waits for its batch. Default 250 ms.
    pub flush_interval: Duration,
    /// How often each running consumer says it is alive. Default 5 s.
    pub heartbeat: Duration,
    /// Emit a `received` event per delivery. Default off: the heartbeat carries the count of
    /// deliveries received, and every delivery is followed by its `handled` event, so this
    /// doubles the events for a figure a watcher already has.
    pub received: bool,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            exchange: DEFAULT_EVENTS_EXCHANGE.to_owned(),
            capacity: 8192,
            batch: 256,
            flush_interval: Duration::from_millis(250),
            heartbeat: Duration::from_secs(5),
            received: false,
        }
    }
}

impl EventsConfig {
    /// Sets the exchange.
    #[must_use]
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// Sets the capacity (at least 1).
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sets the heartbeat interval (at least 10 ms).
    #[must_use]
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// Sets the flush interval (at least 1 ms).
    #[must_use]
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.flush_interval = every.max(Duration::from_millis(1));
        self
    }

    /// Emits a `received` event per delivery too (see [`EventsConfig::received`]).
    #[must_use]
    pub fn received(mut self, on: bool) -> Self {
        self.received = on;
        self
    }
}

/// One member of an event beside `kind`, `queue`, `instance` and `at`, borrowed from the
/// emitter: nothing is built or allocated for it before it is written.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    /// A string, or `null`.
    Str(Option<&'a str>),
    /// An unsigned integer.
    U64(u64),
    /// A signed integer.
    I64(i64),
    /// A number.
    F64(f64),
    /// Any JSON value.
    Json(&'a Value),
}

/// What an emitter did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EventStats {
    /// Events published (confirmed by the broker, routed to a watcher).
    pub published: u64,
    /// Events published while no queue was bound to the exchange (nothing stored).
    pub unrouted: u64,
    /// Events dropped because the channel was full (the broker was slower than the events).
    pub dropped: u64,
    /// Events lost because their batch's publish failed.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Shared {
    published: AtomicU64,
    unrouted: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Running consumers, by queue: how many, and the deliveries they received.
    live: Mutex<BTreeMap<String, (u32, u64)>>,
}

/// An event emitter: a cheap handle (clone it into every consumer config) on a background
/// task that batches and publishes. Dropping the last handle flushes and ends the task.
#[derive(Clone)]
pub struct Events {
    /// Events written as JSON objects when emitted (the batch is their concatenation).
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    instance: Arc<str>,
    /// [`EventsConfig::received`].
    received: bool,
}

impl core::fmt::Debug for Events {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Events")
            .field("instance", &self.instance)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Two handles are equal when they feed the same emitter.
impl PartialEq for Events {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for Events {}

impl Events {
    /// Starts an emitter on `transport` (spawns its task: call it inside a tokio runtime).
    pub fn start<T: Transport + 'static>(transport: Arc<T>, config: EventsConfig) -> Events {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let received = config.received;
        let shared = Arc::new(Shared::default());
        let instance: Arc<str> = Arc::from(format!(
            "{}-{}",
            std::process::id(),
            new_message_id().get(..8).unwrap_or("0")
        ));
        tokio::spawn(pump(
            transport,
            rx,
            Arc::clone(&shared),
            Arc::clone(&instance),
            config,
        ));
        Events {
            tx,
            shared,
            instance,
            received,
        }
    }

    /// This process's emitter id (`instance` in every event).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// What it did so far.
    pub fn stats(&self) -> EventStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EventStats {
            published: get(&self.shared.published),
            unrouted: get(&self.shared.unrouted),
            dropped: get(&self.shared.dropped),
            failed: get(&self.shared.failed),
        }
    }

    /// Queues an event of `queue`: `kind` and the extra `fields` (an object). Never waits:
    /// a full channel drops it and counts it.
    pub(crate) fn emit(&self, kind: &'static str, queue: &str, fields: Value) {
        let members: Vec<(&str, Field<'_>)> = match &fields {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.as_str(), Field::Json(v)))
                .collect(),
            _ => Vec::new(),
        };
        self.emit_fields(kind, queue, &members);
    }

    /// [`Events::emit`] with the members given as borrowed [`Field`]s: what the consume path
    /// uses, building nothing before the event is written.
    pub(crate) fn emit_fields(
        &self,
        kind: &'static str,
        queue: &str,
        fields: &[(&str, Field<'_>)],
    ) {
        match kind {
            "started" => {
                if let Ok(mut live) = self.shared.live.lock() {
                    live.entry(queue.to_owned()).or_default().0 += 1;
                }
            }
            "stopped" => {
                if let Ok(mut live) = self.shared.live.lock() {
                    if let Some(entry) = live.get_mut(queue) {
                        entry.0 = entry.0.saturating_sub(1);
                        if entry.0 == 0 {
                            live.remove(queue);
                        }
                    }
                }
            }
            "received" => {
                if let Ok(mut live) = self.shared.live.lock() {
                    if let Some(entry) = live.get_mut(queue) {
                        entry.1 += 1;
                    }
                }
                if !self.received {
                    // Counted for the heartbeat; the event itself only on request.
                    return;
                }
            }
            _ => {}
        }
        let event = event_json(kind, queue, &self.instance, now_millis(), fields);
        if self.tx.try_send(event).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One event as a JSON object: `kind`, `queue`, `instance` and `at`, then `fields` (a member
/// named like one of the four is left out). Written once, here, on the emitting side: no map
/// is built, and the batch is the objects joined.
fn event_json(
    kind: &str,
    queue: &str,
    instance: &str,
    at: i64,
    fields: &[(&str, Field<'_>)],
) -> Vec<u8> {
    fn member(out: &mut Vec<u8>, key: &str, value: Field<'_>) {
        out.push(if out.is_empty() { b'{' } else { b',' });
        string(out, key);
        out.push(b':');
        // Integers, numbers and JSON values always serialize into a `Vec`.
        let _ = match value {
            Field::Str(Some(s)) => {
                string(out, s);
                Ok(())
            }
            Field::Str(None) => {
                out.extend_from_slice(b"null");
                Ok(())
            }
            Field::U64(n) => serde_json::to_writer(&mut *out, &n),
            Field::I64(n) => serde_json::to_writer(&mut *out, &n),
            Field::F64(x) => serde_json::to_writer(&mut *out, &x),
            Field::Json(Value::String(s)) => {
                string(out, s);
                Ok(())
            }
            Field::Json(v) => serde_json::to_writer(&mut *out, v),
        };
    }
    let mut out = Vec::with_capacity(160);
    member(&mut out, "kind", Field::Str(Some(kind)));
    member(&mut out, "queue", Field::Str(Some(queue)));
    member(&mut out, "instance", Field::Str(Some(instance)));
    member(&mut out, "at", Field::I64(at));
    for &(key, value) in fields {
        if !matches!(key, "kind" | "queue" | "instance" | "at") {
            member(&mut out, key, value);
        }
    }
    out.push(b'}');
    out
}

/// A JSON string: copied between quotes when it needs no escape (the names and ids events
/// carry), else escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// The background task: batches, heartbeats, publishes.
async fn pump<T: Transport>(
    transport: Arc<T>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    instance: Arc<str>,
    config: EventsConfig,
) {
    if let Err(e) = transport.declare_exchange(&config.exchange).await {
        tracing::warn!(exchange = %config.exchange, error = %e, "events: cannot declare the exchange");
    }
    let key = format!("events.{instance}");
    let mut flush = tokio::time::interval(config.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(config.batch);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(event) => {
                    batch.push(event);
                    if batch.len() >= config.batch {
                        publish(&*transport, &config.exchange, &key, &mut batch, &shared).await;
                    }
                }
                None => break,
            },
            _ = flush.tick() => {
                publish(&*transport, &config.exchange, &key, &mut batch, &shared).await;
            }
            _ = heartbeat.tick() => {
                let live: Vec<(String, u64)> = shared
                    .live
                    .lock()
                    .map(|l| l.iter().map(|(q, (_, n))| (q.clone(), *n)).collect())
                    .unwrap_or_default();
                for (queue, received) in live {
                    let fields = [("received", Field::U64(received))];
                    batch.push(event_json("heartbeat", &queue, &instance, now_millis(), &fields));
                }
            }
        }
    }
    publish(&*transport, &config.exchange, &key, &mut batch, &shared).await;
}

async fn publish<T: Transport>(
    transport: &T,
    exchange: &str,
    key: &str,
    batch: &mut Vec<Vec<u8>>,
    shared: &Shared,
) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let mut body = Vec::with_capacity(batch.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, event) in batch.drain(..).enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&event);
    }
    body.push(b']');
    let mut properties = Properties::new();
    properties.content_type = Some(CONTENT_TYPE_JSON.to_owned());
    properties.message_type = Some("lepus.events".to_owned());
    properties.transient = true;
    let counter = match transport
        .publish(Publication::new(exchange, key, &body, &properties))
        .await
    {
        Ok(()) => &shared.published,
        Err(e) if matches!(e.kind(), ErrorKind::Unroutable { .. }) => &shared.unrouted,
        Err(e) => {
            tracing::debug!(error = %e, "events: a batch was not published");
            &shared.failed
        }
    };
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inprocess::InProcessBroker;
    use serde_json::json;

    #[test]
    fn an_event_is_one_json_object_whatever_its_strings_hold() {
        let fields = json!({"type": "Ünïcode \"quoted\" \\ \u{1}", "ms": 1.5,
                            "queue": "not this one", "error": null, "n": [1, 2]});
        let members: Vec<(&str, Field<'_>)> = fields
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.as_str(), Field::Json(v)))
                    .collect()
            })
            .unwrap_or_default();
        let text = event_json("handled", "q\"ueue\n", "pid-1", 1_700_000_000_000, &members);
        let event: Value = serde_json::from_slice(&text).expect("valid JSON");
        assert_eq!(
            event,
            json!({"kind": "handled", "queue": "q\"ueue\n", "instance": "pid-1",
                   "at": 1_700_000_000_000_i64, "type": "Ünïcode \"quoted\" \\ \u{1}",
                   "ms": 1.5, "error": null, "n": [1, 2]})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_channel_drops_and_counts_without_waiting() {
        let broker = Arc::new(InProcessBroker::new());
        let events = Events::start(broker, EventsConfig::default().capacity(4));
        // No await between the emits: the task cannot drain, the channel fills.
        for _ in 0..100 {
            events.emit("handled", "q", json!({"type": "T"}));
        }
        assert_eq!(events.stats().dropped, 96);
    }

    #[tokio::test(start_paused = true)]
    async fn received_events_are_only_counted_unless_asked_for() {
        let broker = Arc::new(InProcessBroker::new());
        let quiet = Events::start(Arc::clone(&broker), EventsConfig::default().capacity(4));
        let asked = Events::start(broker, EventsConfig::default().capacity(4).received(true));
        for events in [&quiet, &asked] {
            events.emit_fields("started", "q", &[]);
            for _ in 0..100 {
                events.emit_fields("received", "q", &[("id", Field::Str(Some("m")))]);
            }
        }
        // Not queued at all by default (the heartbeat's count has them).
        assert_eq!(quiet.stats().dropped, 0);
        assert_eq!(quiet.shared.live.lock().unwrap()["q"], (1, 100));
        assert_eq!(asked.stats().dropped, 97);
    }
}
