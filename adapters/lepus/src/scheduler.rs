//! Periodic sends: a [`Scheduler`] publishes the typed messages of a [`Schedule`] on a fixed
//! interval or a cron expression, and any number of replicas may run the same schedule while
//! each tick is published once.
//!
//! ```
//! # async fn demo() -> lepus::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use lepus::{Entry, InProcessBroker, Missed, Publisher, Schedule, Scheduler};
//!
//! #[derive(serde::Serialize, serde::Deserialize, lepus::Message)]
//! #[lepus(routing_key = "stats.rollup")]
//! struct RollUpStats { period: String }
//!
//! let broker = Arc::new(InProcessBroker::new());
//! let publisher = Publisher::new(broker, "shop");
//! publisher.declare().await?;
//! let schedule = Schedule::new("shop")?
//!     .entry(Entry::every("minutely", Duration::from_secs(60), &RollUpStats { period: "1m".into() })?)?
//!     .entry(Entry::cron("nightly", "0 3 * * *", &RollUpStats { period: "1d".into() })?
//!         .missed(Missed::RunOnce))?;
//! let handle = Scheduler::new(publisher, schedule).start().await?;
//! // ... until the program stops:
//! let stats = handle.shutdown().await?;
//! # let _ = stats; Ok(()) }
//! ```
//!
//! # Election
//!
//! Every replica joins the schedule's ledger ([`crate::ledger`]): on RabbitMQ a durable quorum
//! queue `lepus.schedule.<name>` with `x-single-active-consumer`, holding one **token**
//! message that records, per entry, the time of the last tick settled (published, or skipped
//! by the missed-tick policy). Each replica consumes it with manual acks; the broker delivers
//! to one consumer only, the leader, which holds the token unacked while it leads. Nothing
//! else is needed: no lock service, no second beat. A new leader replaces the token it took
//! over at once (a commit with no tick), so the broker's delivery count of the token stays
//! low however often leaders change (RabbitMQ 4 drops a quorum queue message redelivered
//! past its default delivery limit of 20).
//!
//! # Exactly once, and its limits
//!
//! The leader publishes a due tick in one AMQP transaction on the ledger's channel: the tick
//! message, a new token recording the tick, the ack of the old token, `tx.commit`. Before the
//! commit nothing is visible and a dead leader's token goes back to the queue with the old
//! record, so its successor publishes the tick; after the commit the tick and the new record
//! exist together, so its successor does not. At any time one consumer holds the token, so
//! one replica decides. A tick's message id is deterministic,
//! `<schedule>:<entry>:<tick in Unix milliseconds>`, for consumers that deduplicate anyway.
//!
//! Limits:
//! - RabbitMQ's transactions are atomic per queue, not across queues: a **broker** crash in
//!   the middle of a commit can leave the tick in its queue without the new token, or the
//!   reverse (a duplicate or a gap, once). A replica's crash cannot.
//! - A commit whose `commit-ok` was lost with the connection is reported as an error,
//!   although the broker may have committed it; the token then on the queue tells the truth,
//!   so nothing is published twice.
//! - Tick times are computed from the leader's wall clock (UTC). The record decides what was
//!   published, so clocks that differ between replicas shift a tick's publication, never
//!   duplicate it, except for an entry the record does not know yet (a new entry, or a token
//!   that was deleted or unreadable): it starts at the leader's "now".
//! - Ticks are published to the publisher's exchange without `mandatory`: a tick that no
//!   queue is bound for is dropped by the broker. Bind the queues first.
//! - Deleting or purging the ledger queue while replicas run loses the token: the schedule
//!   stops until a replica joins an empty queue with no consumer (restart them all).
//!
//! # Takeover
//!
//! When the leader's connection closes, RabbitMQ returns the token to the queue and
//! activates the next consumer at once: for a killed process the kernel closes the socket,
//! so the survivor leads within milliseconds (measured on RabbitMQ 3.10: see
//! `RELIABILITY.md`, "Scheduler replicas"). A leader that hangs without its socket closing is
//! detected by the AMQP heartbeat (RabbitMQ's default: 60 s, so up to about two minutes).
//! The survivor then publishes every tick that fell due meanwhile, late, as long as it is
//! late by at most the entry's [`Entry::missed_after`] (30 s by default); ticks later than
//! that are missed, see [`Missed`].
//!
//! # Missed ticks
//!
//! A tick is missed when it fell due more than [`Entry::missed_after`] ago and was not
//! published, because no replica ran (all stopped, the broker was down). Per entry:
//! [`Missed::Skip`] (the default) drops them and resumes at the next tick;
//! [`Missed::RunOnce`] publishes one catch-up tick (the latest missed one) and resumes.
//! A new entry starts with the first tick after the leader first sees it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::core::schedule::{due, Every, Ticks};
use crate::error::{Error, ErrorKind, Result};
use crate::ledger::{ledger_queue_name, LedgerLease, ScheduleLedger};
use crate::message::Message;
use crate::properties::Properties;
use crate::protocol::CONTENT_TYPE_JSON;
use crate::publisher::{encode_envelope, Publisher};
use crate::transport::{Publication, Transport, FIRST_BACKOFF, MAX_BACKOFF};

/// The most entries in one [`Schedule`].
pub const MAX_ENTRIES: usize = 256;
/// The longest entry name, in bytes.
pub const MAX_ENTRY_NAME: usize = 64;
/// The most ticks one commit publishes; more due ticks go out in the next commits.
pub const MAX_TICKS_PER_COMMIT: usize = 100;
/// The longest a scheduler sleeps before looking at the clock again (so that a wall clock
/// set forwards or backwards is noticed within this).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// The default of [`Entry::missed_after`].
pub const DEFAULT_MISSED_AFTER: Duration = Duration::from_secs(30);

/// What to do with the ticks of an entry that were missed while no replica ran (see the
/// module docs, "Missed ticks"): core's [`crate::core::schedule::Missed`].
pub use crate::core::schedule::Missed;

#[derive(Debug, Clone)]
enum Timing {
    /// Every so many milliseconds, at the multiples of the interval since the Unix epoch.
    Every(Every),
    /// A cron expression, evaluated in UTC.
    Cron(Box<croner::Cron>),
}

/// One entry of a [`Schedule`]: when, and what to publish.
#[derive(Debug, Clone)]
pub struct Entry {
    name: String,
    timing: Timing,
    missed: Missed,
    missed_after_ms: u64,
    routing_key: String,
    message_type: String,
    body: Vec<u8>,
}

fn invalid(setting: &'static str, context: String) -> Error {
    Error::new(ErrorKind::InvalidConfig { setting }).context(context)
}

fn check_entry_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ENTRY_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "entry name",
            format!(
                "entry name {name:?}: 1 to {MAX_ENTRY_NAME} bytes of letters, digits, '-', '_', '.'"
            ),
        ))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

impl Entry {
    fn new<M: Message>(name: &str, timing: Timing, message: &M) -> Result<Entry> {
        let body = encode_envelope(message, M::retry_policy().into_metadata(), None, None)?;
        Entry::build(name, timing, M::TYPE, M::ROUTING_KEY, body)
    }

    fn build(
        name: &str,
        timing: Timing,
        message_type: &str,
        routing_key: &str,
        body: Vec<u8>,
    ) -> Result<Entry> {
        check_entry_name(name)?;
        crate::names::check_routing_key(routing_key)?;
        if message_type.is_empty() {
            return Err(invalid(
                "message type",
                format!("entry {name:?}: the message type must not be empty"),
            ));
        }
        crate::names::check_property("type", message_type)?;
        Ok(Entry {
            name: name.to_owned(),
            timing,
            missed: Missed::default(),
            missed_after_ms: millis(DEFAULT_MISSED_AFTER),
            routing_key: routing_key.to_owned(),
            message_type: message_type.to_owned(),
            body,
        })
    }

    fn interval(name: &str, interval: Duration) -> Result<Timing> {
        match Every::new(millis(interval)) {
            Some(every) => Ok(Timing::Every(every)),
            None => Err(invalid(
                "interval",
                format!("entry {name:?}: the interval must be at least 1 ms, not {interval:?}"),
            )),
        }
    }

    fn cron_expression(name: &str, expression: &str) -> Result<Timing> {
        let cron: croner::Cron = expression.parse().map_err(|e: croner::errors::CronError| {
            invalid(
                "cron expression",
                format!("entry {name:?}: cron expression {expression:?}: {e}"),
            )
        })?;
        let timing = Timing::Cron(Box::new(cron));
        if timing.next_after(unix_ms(SystemTime::now())).is_none() {
            return Err(invalid(
                "cron expression",
                format!("entry {name:?}: cron expression {expression:?} never matches"),
            ));
        }
        Ok(timing)
    }

    /// An entry named `name` publishing `message` every `interval`, at the multiples of
    /// `interval` since the Unix epoch (so every replica agrees on the tick times: an
    /// interval of 1 s ticks on each whole second, of 1 h on each whole hour, UTC).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for an interval under 1 ms or an invalid name
    /// (1 to [`MAX_ENTRY_NAME`] bytes of `A-Za-z0-9-_.`); [`ErrorKind::Encode`] when the
    /// message does not serialize.
    pub fn every<M: Message>(name: &str, interval: Duration, message: &M) -> Result<Entry> {
        Entry::new(name, Entry::interval(name, interval)?, message)
    }

    /// An entry named `name` publishing `message` at the times of the cron `expression`,
    /// in UTC: five fields (`minute hour day-of-month month day-of-week`), or six with
    /// seconds first, and `@hourly`, `@daily`, ... Parsed by the `croner` crate (OCPS 1.4:
    /// ranges, steps, lists, `L`, `W`, `#`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for an expression that does not parse, or that never
    /// matches a time (`0 0 30 2 *`); as [`Entry::every`] for the name and the message.
    pub fn cron<M: Message>(name: &str, expression: &str, message: &M) -> Result<Entry> {
        Entry::new(name, Entry::cron_expression(name, expression)?, message)
    }

    /// As [`Entry::every`], for an envelope already encoded (by
    /// [`crate::encode_raw_envelope`]): for tools that hold the payload as JSON text, such as
    /// `lepus schedule`. `message_type` is the AMQP `type` property.
    ///
    /// # Errors
    /// As [`Entry::every`]; [`ErrorKind::InvalidConfig`] for an empty message type,
    /// [`ErrorKind::InvalidName`] for a routing key or type over 255 bytes.
    pub fn every_raw(
        name: &str,
        interval: Duration,
        message_type: &str,
        routing_key: &str,
        envelope: Vec<u8>,
    ) -> Result<Entry> {
        let timing = Entry::interval(name, interval)?;
        Entry::build(name, timing, message_type, routing_key, envelope)
    }

    /// As [`Entry::cron`], for an envelope already encoded; see [`Entry::every_raw`].
    ///
    /// # Errors
    /// As [`Entry::cron`] and [`Entry::every_raw`].
    pub fn cron_raw(
        name: &str,
        expression: &str,
        message_type: &str,
        routing_key: &str,
        envelope: Vec<u8>,
    ) -> Result<Entry> {
        let timing = Entry::cron_expression(name, expression)?;
        Entry::build(name, timing, message_type, routing_key, envelope)
    }

    /// What to do with missed ticks (default [`Missed::Skip`]).
    #[must_use]
    pub fn missed(mut self, policy: Missed) -> Self {
        self.missed = policy;
        self
    }

    /// How late a tick may be published (default [`DEFAULT_MISSED_AFTER`], 30 s): a tick
    /// that fell due longer ago than this is missed (see [`Missed`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for less than 1 ms.
    pub fn missed_after(mut self, late: Duration) -> Result<Self> {
        let ms = millis(late);
        if ms == 0 {
            return Err(invalid(
                "missed_after",
                format!("entry {:?}: missed_after must be at least 1 ms", self.name),
            ));
        }
        self.missed_after_ms = ms;
        Ok(self)
    }

    /// Publishes with `key` instead of the message's [`Message::ROUTING_KEY`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] for a routing key over 255 bytes.
    pub fn routing_key(mut self, key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        crate::names::check_routing_key(&key)?;
        self.routing_key = key;
        Ok(self)
    }

    /// The entry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The routing key its ticks are published with.
    pub fn routing_key_in_use(&self) -> &str {
        &self.routing_key
    }

    /// Its missed-tick policy.
    pub fn missed_policy(&self) -> Missed {
        self.missed
    }

    /// The first tick strictly after `time`, if there is one.
    pub fn next_tick_after(&self, time: SystemTime) -> Option<SystemTime> {
        next_after(&self.timing, unix_ms(time)).map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }
}

impl Ticks for Timing {
    fn next_after(&self, ms: u64) -> Option<u64> {
        match self {
            Timing::Every(every) => every.next_after(ms),
            Timing::Cron(cron) => {
                let mut from = ms;
                // croner works in whole seconds; never return a time at or before `ms`.
                for _ in 0..2 {
                    let at = chrono::DateTime::from_timestamp_millis(i64::try_from(from).ok()?)?;
                    let next = cron.find_next_occurrence(&at, false).ok()?;
                    let next = u64::try_from(next.timestamp_millis()).ok()?;
                    if next > ms {
                        return Some(next);
                    }
                    from = next;
                }
                None
            }
        }
    }

    fn latest_at_or_before(&self, ms: u64) -> Option<u64> {
        match self {
            Timing::Every(every) => every.latest_at_or_before(ms),
            Timing::Cron(cron) => {
                let at = chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)?;
                let prev = cron.find_previous_occurrence(&at, true).ok()?;
                u64::try_from(prev.timestamp_millis())
                    .ok()
                    .filter(|&p| p <= ms)
            }
        }
    }
}

fn next_after(timing: &Timing, ms: u64) -> Option<u64> {
    timing.next_after(ms)
}

/// A named set of entries; its name names the ledger (`lepus.schedule.<name>`), so every
/// replica of one schedule uses the same name.
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    entries: Vec<Entry>,
}

impl Schedule {
    /// An empty schedule named `name`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for an empty name, [`ErrorKind::InvalidName`] for one
    /// that makes no valid queue name.
    pub fn new(name: &str) -> Result<Schedule> {
        ledger_queue_name(name)?;
        Ok(Schedule {
            name: name.to_owned(),
            entries: Vec::new(),
        })
    }

    /// Adds `entry`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] when an entry of that name exists;
    /// [`ErrorKind::CapacityExceeded`] past [`MAX_ENTRIES`].
    pub fn entry(mut self, entry: Entry) -> Result<Self> {
        if self.entries.iter().any(|e| e.name == entry.name) {
            return Err(invalid(
                "entry name",
                format!(
                    "schedule {:?} has an entry {:?} already",
                    self.name, entry.name
                ),
            ));
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(Error::new(ErrorKind::CapacityExceeded {
                what: "schedule entries",
            })
            .context(format!("at most {MAX_ENTRIES} entries per schedule")));
        }
        self.entries.push(entry);
        Ok(self)
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

/// The record a token carries: per entry name, the Unix time in milliseconds up to which
/// its ticks are settled. Entries this replica does not know are kept (another version of
/// the schedule may run them).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Record {
    v: u32,
    last: BTreeMap<String, u64>,
}

impl Record {
    /// Merges token bodies: the latest time per entry. An empty body is an empty record
    /// (a seed); an unreadable one is ignored (logged).
    fn merge(tokens: &[Vec<u8>]) -> Record {
        let mut record = Record {
            v: 1,
            last: BTreeMap::new(),
        };
        for body in tokens.iter().filter(|b| !b.is_empty()) {
            match serde_json::from_slice::<Record>(body) {
                Ok(r) => {
                    for (name, at) in r.last {
                        let slot = record.last.entry(name).or_insert(at);
                        *slot = (*slot).max(at);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable schedule token ignored"),
            }
        }
        record
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What is due now: the ticks to publish (entry index, Unix ms) and when to look again.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    ticks: Vec<(usize, u64)>,
    next_due: Option<u64>,
}

/// Decides what is due at `now` (Unix ms) and settles it in `record`, through core's
/// [`due`] for each entry. No I/O, no clock.
fn plan(entries: &[Entry], record: &mut Record, now: u64) -> Plan {
    let mut out = Plan::default();
    let mut buf = [0u64; MAX_TICKS_PER_COMMIT];
    let mut used = 0;
    for (index, entry) in entries.iter().enumerate() {
        let Some(&last) = record.last.get(&entry.name) else {
            // First sight: start with the first tick after now.
            record.last.insert(entry.name.clone(), now);
            continue;
        };
        let room = buf.get_mut(used..).unwrap_or_default();
        let d = due(
            &entry.timing,
            entry.missed,
            entry.missed_after_ms,
            last,
            now,
            room,
        );
        if d.missed {
            tracing::info!(
                entry = %entry.name,
                policy = ?entry.missed,
                "ticks missed while no replica ran"
            );
        }
        let written = buf.get(used..used + d.count).unwrap_or_default();
        out.ticks.extend(written.iter().map(|&t| (index, t)));
        used += d.count;
        record.last.insert(entry.name.clone(), d.settled);
    }
    for entry in entries {
        let settled = record.last.get(&entry.name).copied().unwrap_or(now);
        if let Some(next) = entry.timing.next_after(settled) {
            out.next_due = Some(out.next_due.map_or(next, |d: u64| d.min(next)));
        }
    }
    out
}

/// A scheduler's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// Ticks this replica published (committed).
    pub ticks_published: u64,
    /// Transactions committed (ticks, and token merges or new entries).
    pub commits: u64,
    /// Commits that failed (nothing published; the tick is tried again).
    pub commit_errors: u64,
    /// Times this replica became the leader.
    pub leaderships: u64,
}

#[derive(Debug, Default)]
struct Counters {
    /// Where the replica's events go (see [`crate::events`]), if anywhere.
    events: Option<crate::events::Events>,
    ticks_published: AtomicU64,
    commits: AtomicU64,
    commit_errors: AtomicU64,
    leaderships: AtomicU64,
    leading: AtomicBool,
}

impl Counters {
    fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            ticks_published: self.ticks_published.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            commit_errors: self.commit_errors.load(Ordering::Relaxed),
            leaderships: self.leaderships.load(Ordering::Relaxed),
        }
    }
}

/// The wall clock a scheduler reads.
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Runs a [`Schedule`] on any transport that keeps schedule ledgers; see the module docs.
pub struct Scheduler<T> {
    publisher: Publisher<T>,
    schedule: Arc<Schedule>,
    clock: Clock,
    counters: Arc<Counters>,
}

impl<T: Transport> core::fmt::Debug for Scheduler<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scheduler")
            .field("exchange", &self.publisher.exchange())
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

/// A running scheduler started by [`Scheduler::start`].
#[derive(Debug)]
pub struct SchedulerHandle {
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<SchedulerStats>>,
    counters: Arc<Counters>,
}

impl SchedulerHandle {
    /// The counters so far.
    pub fn stats(&self) -> SchedulerStats {
        self.counters.stats()
    }

    /// True while this replica leads: from the moment it got the schedule's token until it
    /// stops or notices that its lease is lost (its channel or connection closed).
    pub fn is_leading(&self) -> bool {
        self.counters.leading.load(Ordering::Relaxed)
    }

    /// True once the scheduler stopped by itself (on an error it cannot recover from).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Aborts the scheduler's task (what a [`crate::Host`] does past its drain deadline).
    pub(crate) fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.join.abort_handle()
    }

    /// Stops the scheduler, giving the token back (the next replica leads at once), and
    /// returns its counters.
    ///
    /// # Errors
    /// The error that stopped the scheduler, if it stopped before.
    pub async fn shutdown(mut self) -> Result<SchedulerStats> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.join).await {
            Ok(outcome) => outcome,
            Err(e) => {
                Err(Error::new(ErrorKind::Broker).context(format!("scheduler task failed: {e}")))
            }
        }
    }
}

impl<T> Scheduler<T>
where
    T: Transport + ScheduleLedger + 'static,
    T::Lease: 'static,
{
    /// A scheduler publishing the ticks of `schedule` through `publisher` (to its exchange).
    pub fn new(publisher: Publisher<T>, schedule: Schedule) -> Self {
        Scheduler {
            publisher,
            schedule: Arc::new(schedule),
            clock: Arc::new(SystemTime::now),
            counters: Arc::default(),
        }
    }

    /// Reads the wall clock from `clock` instead of [`SystemTime::now`] (tests with paused
    /// tokio time pass a clock that follows it). The scheduler sleeps on tokio's timers for
    /// the time `clock` says is left.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Emits this replica's events to `events` (see [`crate::events`]): `started`,
    /// `stopped` and heartbeats under the queue name `lepus.schedule.<name>` (its ledger),
    /// `leading` when it becomes the publishing replica, `ticks-published` with the entries
    /// of each commit. Off by default. Call before [`Scheduler::start`] or [`Scheduler::run`].
    #[must_use]
    pub fn events(mut self, events: crate::events::Events) -> Self {
        if let Some(counters) = Arc::get_mut(&mut self.counters) {
            counters.events = Some(events);
        }
        self
    }

    /// Emits an event under the ledger's queue name, if events are on.
    fn event(&self, kind: &'static str, fields: impl FnOnce() -> serde_json::Value) {
        if let Some(events) = &self.counters.events {
            let queue = format!("lepus.schedule.{}", self.schedule.name);
            events.emit(kind, &queue, fields());
        }
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The counters so far.
    pub fn stats(&self) -> SchedulerStats {
        self.counters.stats()
    }

    async fn join(&self) -> Result<T::Lease> {
        if self.schedule.entries.is_empty() {
            return Err(invalid(
                "schedule entries",
                format!("schedule {:?} has no entries", self.schedule.name),
            ));
        }
        self.publisher.transport().join(&self.schedule.name).await
    }

    /// Joins the schedule's election and runs until `shutdown` resolves, then gives the token
    /// back and returns the counters.
    ///
    /// # Errors
    /// A schedule without entries; the ledger's declaration refused; an error it cannot
    /// recover from (the transport closed, a tick the broker cannot carry).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<SchedulerStats> {
        let lease = self.join().await?;
        self.serve(lease, shutdown).await
    }

    /// Joins the schedule's election (errors are returned here), then runs in a task of its
    /// own until [`SchedulerHandle::shutdown`] (or the handle is dropped).
    ///
    /// # Errors
    /// As [`Scheduler::run`], for the joining.
    pub async fn start(self) -> Result<SchedulerHandle> {
        let lease = self.join().await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let counters = Arc::clone(&self.counters);
        let join = tokio::spawn(self.serve(lease, async move {
            let _ = stopped.await;
        }));
        Ok(SchedulerHandle {
            stop: Some(stop),
            join,
            counters,
        })
    }

    async fn serve(
        self,
        mut lease: T::Lease,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<SchedulerStats> {
        tokio::pin!(shutdown);
        self.event(
            "started",
            || serde_json::json!({"schedule": self.schedule.name}),
        );
        let outcome = self.lead(&mut lease, &mut shutdown).await;
        self.event(
            "stopped",
            || serde_json::json!({"schedule": self.schedule.name}),
        );
        self.counters.leading.store(false, Ordering::Relaxed);
        if let Err(e) = lease.release().await {
            tracing::debug!(error = %e, "giving the schedule token back");
        }
        outcome.map(|()| self.counters.stats())
    }

    /// Records whether this replica leads; true when it just became the leader.
    fn set_leading(&self, leading: bool) -> bool {
        let was = self.counters.leading.swap(leading, Ordering::Relaxed);
        let name = &self.schedule.name;
        if leading && !was {
            self.counters.leaderships.fetch_add(1, Ordering::Relaxed);
            tracing::info!(schedule = %name, "leading the schedule");
            self.event("leading", || serde_json::json!({"schedule": name}));
            return true;
        }
        if was && !leading {
            tracing::info!(schedule = %name, "no longer leading the schedule");
        }
        false
    }

    fn now_ms(&self) -> u64 {
        unix_ms((self.clock)())
    }

    async fn lead(
        &self,
        lease: &mut T::Lease,
        shutdown: &mut core::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<()> {
        let name = &self.schedule.name;
        let mut backoff = FIRST_BACKOFF;
        let mut refresh = false;
        loop {
            if !lease.is_leading() {
                let _ = self.set_leading(false);
            }
            let acquired = tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(()),
                acquired = lease.acquire() => acquired,
            };
            let tokens = match acquired {
                Ok(tokens) => tokens,
                Err(e) => return Err(e.context(format!("schedule {name:?}"))),
            };
            // A new leader commits at once, even with nothing due: the token it took over
            // is replaced by a fresh message, so that the broker's delivery count of the
            // token never builds up over leader changes (RabbitMQ 4 drops a quorum queue
            // message past its default delivery limit of 20).
            refresh |= self.set_leading(true);
            let mut record = Record::merge(&tokens);
            let before = record.clone();
            let now = self.now_ms();
            let plan = plan(&self.schedule.entries, &mut record, now);
            if refresh || !plan.ticks.is_empty() || tokens.len() > 1 || record != before {
                match self.commit(lease, &plan, &record).await {
                    Ok(()) => {
                        refresh = false;
                        backoff = FIRST_BACKOFF;
                        continue;
                    }
                    Err(e) if e.is_invalid_input() => return Err(e),
                    Err(e) => {
                        tracing::warn!(schedule = %name, error = %e, "commit failed; trying again");
                        tokio::select! {
                            biased;
                            () = shutdown.as_mut() => return Ok(()),
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let wait = plan
                .next_due
                .map_or(MAX_SLEEP, |due| {
                    Duration::from_millis(due.saturating_sub(now))
                })
                .min(MAX_SLEEP);
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
                () = lease.changed() => {}
            }
        }
    }

    async fn commit(&self, lease: &mut T::Lease, plan: &Plan, record: &Record) -> Result<()> {
        let schedule = &self.schedule;
        let properties: Vec<Properties> = plan
            .ticks
            .iter()
            .map(|&(index, at)| {
                let entry = &schedule.entries[index];
                let mut properties = Properties::new()
                    .with_type(entry.message_type.clone())
                    .with_content_type(CONTENT_TYPE_JSON)
                    .with_message_id(format!("{}:{}:{at}", schedule.name, entry.name))
                    .with_timestamp(at / 1000);
                // Each tick starts a trace (or continues the scheduler's, see `crate::trace`).
                crate::trace::inject_publish(&mut properties.headers);
                properties
            })
            .collect();
        let publications: Vec<Publication<'_>> = plan
            .ticks
            .iter()
            .zip(&properties)
            .map(|(&(index, _), props)| {
                let entry = &schedule.entries[index];
                Publication::new(
                    self.publisher.exchange(),
                    &entry.routing_key,
                    &entry.body,
                    props,
                )
                .not_mandatory()
            })
            .collect();
        match lease.commit(&publications, &record.encode()).await {
            Ok(()) => {
                let n = plan.ticks.len() as u64;
                self.counters
                    .ticks_published
                    .fetch_add(n, Ordering::Relaxed);
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                if !plan.ticks.is_empty() {
                    self.event("ticks-published", || {
                        let ticks: Vec<serde_json::Value> = plan
                            .ticks
                            .iter()
                            .map(|&(index, at)| {
                                serde_json::json!({"entry": schedule.entries[index].name,
                                               "tick_ms": at})
                            })
                            .collect();
                        serde_json::json!({"schedule": schedule.name, "ticks": ticks})
                    });
                }
                for &(index, at) in &plan.ticks {
                    tracing::debug!(
                        schedule = %schedule.name,
                        entry = %schedule.entries[index].name,
                        tick_ms = at,
                        "tick published"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.counters.commit_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
