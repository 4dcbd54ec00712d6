//! The load harness of the reliability tests: publishers send numbered messages throughout,
//! several workers (each on its own connection) handle them, a fault is injected meanwhile,
//! and at the end every confirmed message must have been handled: lost ones are counted by
//! number, duplicates (at-least-once) are counted and reported.
//!
//! Options of a [`Setup`] widen the load for the cluster group: a quorum worker queue, a
//! handler that fails some messages once or twice (their retries wait on the delay levels)
//! and rejects a few for good (dead-lettered, and counted as accounted for), frames that go
//! through the firmware gateway on their way to the workers, and one address list given to
//! every client rotated by one (so that the clients spread over a cluster's nodes).

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::core::envelope::{encode_postcard_cobs, Envelope, Metadata};
use lepus::gateway::{Gateway, GatewayHandle};
use lepus::{
    AmqpConfig, AmqpTransport, ConsumerConfig, Context, HandlerError, Message, Properties,
    Publication, Publisher, QueueKind, QueueSpec, Registry, RetryPolicy, Transport, Worker,
    WorkerConfig, WorkerHandle,
};
use serde::{Deserialize, Serialize};

/// One numbered message of the load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Numbered {
    /// Its number, 0-based.
    pub n: u64,
}

impl Message for Numbered {
    const TYPE: &'static str = "LepusChaosNumbered";
    const ROUTING_KEY: &'static str = "chaos.numbered";
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::repeat(10, [100, 200, 500])
    }
}

/// The outcome of one scenario, a row of the summary table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Messages the publishers tried to send.
    pub sent: u64,
    /// Sends the broker confirmed.
    pub confirmed: u64,
    /// Sends that returned an error (never counted as sent).
    pub failed: u64,
    /// The failed sends by error kind (`ErrorKind`'s debug form) and the first error's text of
    /// each kind.
    pub failures: Vec<(String, u64, String)>,
    /// Distinct confirmed messages handled.
    pub handled: u64,
    /// Confirmed messages never handled.
    pub lost: u64,
    /// Extra handler runs of a message already handled (at-least-once).
    pub duplicates: u64,
    /// Longest time from a fault to the next confirmed send.
    pub recovery: Duration,
    /// Connections rebuilt by the transports.
    pub reconnections: u64,
    /// Confirmed messages found in the dead-letter queue (rejected for good by the handler
    /// of a [`Setup::failing`] load): accounted for, not lost.
    pub dead_lettered: u64,
    /// Longest time during the load without any progress: no confirmed send and no handled
    /// message.
    pub stall: Duration,
    /// Dead-letter workers of the broker's at-least-once quorum queues that were registered
    /// but not alive (or missing where the queue held dead letters), started again by the
    /// scenario ([`crate::cluster::restart_dead_letter_workers`], or
    /// [`local_dead_letter_workers`] on one node), with a node's dead-letter supervisor where
    /// it was gone: one line each. Messages they held arrive afterwards and are not lost; the
    /// row shows that the broker needed it.
    pub broker_repairs: Vec<String>,
    /// When messages were lost: where they were (never delivered or not, by class, what the
    /// broker held, the services' counters), printed with a failed assertion.
    pub diagnosis: String,
}

impl Row {
    /// The table line of this row.
    pub fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} |",
            self.scenario,
            self.sent,
            self.confirmed,
            self.failed,
            self.handled,
            self.lost,
            self.duplicates,
            self.recovery.as_secs_f64(),
            self.reconnections
        )
    }
}

/// The header of the summary table.
pub const TABLE_HEADER: &str = "| scenario | sent | confirmed | send errors | handled | lost | duplicates | recovery | reconnections |\n|---|---|---|---|---|---|---|---|---|";

/// Prints a row to the process's stderr (the test harness does not capture that).
pub fn report(row: &Row) {
    let _ = writeln!(
        std::io::stderr(),
        "\n{TABLE_HEADER}\n{}\n  dead-lettered {}, longest stall {:.1} s\n",
        row.line(),
        row.dead_lettered,
        row.stall.as_secs_f64()
    );
    if !row.broker_repairs.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "  the broker lost the dead-letter workers of {} queues; started again:\n    {}\n",
            row.broker_repairs.len(),
            row.broker_repairs.join("\n    ")
        );
    }
    for (kind, count, first) in &row.failures {
        let _ = writeln!(
            std::io::stderr(),
            "  send errors of kind {kind}: {count} (the first: {first})"
        );
    }
}

/// Shared state of one run.
#[derive(Debug, Default)]
pub struct Tally {
    handled: Mutex<HashMap<u64, u32>>,
    /// Handler runs per message, failed ones included (for the diagnosis of lost ones).
    attempts: Mutex<HashMap<u64, u32>>,
    confirmed_ids: Mutex<Vec<u64>>,
    confirmed: AtomicU64,
    failed: AtomicU64,
    /// Failed sends by error kind: how many, and the first one's text.
    failures: Mutex<std::collections::BTreeMap<String, (u64, String)>>,
    last_confirm: Mutex<Option<Instant>>,
    recovery: Mutex<Duration>,
    /// Time of the last progress (a confirm or a handled message) and the longest gap
    /// between two.
    progress: Mutex<Option<(Instant, Duration)>>,
}

impl Tally {
    /// Counts a failed send under its error kind.
    fn failed_with(&self, e: &lepus::Error) {
        let mut failures = self.failures.lock().unwrap();
        let entry = failures
            .entry(format!("{:?}", e.kind()))
            .or_insert_with(|| (0, e.to_string()));
        entry.0 += 1;
    }

    /// Notes progress (a confirm or a handled message) now.
    fn progressed(&self) {
        let now = Instant::now();
        let mut p = self.progress.lock().unwrap();
        *p = Some(match *p {
            Some((last, gap)) => (now, gap.max(now.duration_since(last))),
            None => (now, Duration::ZERO),
        });
    }

    /// Notes that a fault was injected at `at`: recovery is measured from there to the next
    /// confirmed send.
    pub async fn fault_injected(&self, at: Instant) {
        note_recovery(&self.last_confirm, &self.recovery, at).await;
    }

    /// Confirmed messages not handled yet, leaving out those `expected_dead` picks (a failing
    /// load's rejected ones).
    pub fn outstanding(&self, expected_dead: impl Fn(u64) -> bool) -> usize {
        let confirmed = self.confirmed_ids.lock().unwrap().clone();
        let handled = self.handled.lock().unwrap();
        confirmed
            .iter()
            .filter(|&&n| !handled.contains_key(&n) && !expected_dead(n))
            .count()
    }

    fn handled_count(&self) -> usize {
        self.handled.lock().unwrap().len()
    }
}

/// Runs a scenario's fault in a task; the flag turns true once it is over (the load goes on
/// until then).
pub fn spawn_fault<Fut>(fault: Fut) -> (tokio::task::JoinHandle<()>, Arc<AtomicBool>)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let task = tokio::spawn(async move {
        fault.await;
        flag.store(true, Ordering::Relaxed);
    });
    (task, done)
}

/// Waits until `last` (the time of the last success) is after `at`, at most 120 s, and
/// raises `recovery` to the time that took (120 s when it never came).
pub async fn note_recovery(last: &Mutex<Option<Instant>>, recovery: &Mutex<Duration>, at: Instant) {
    let deadline = at + Duration::from_secs(120);
    loop {
        let seen = last.lock().unwrap().filter(|&l| l > at);
        if seen.is_some() || Instant::now() > deadline {
            let took = seen.map_or(Duration::from_secs(120), |l| l.duration_since(at));
            let mut recovery = recovery.lock().unwrap();
            *recovery = (*recovery).max(took);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a scenario needs to run.
pub struct Setup {
    /// Queue name (unique per run).
    pub queue: String,
    /// Least number of messages (sending goes on until the faults are over).
    pub messages: u64,
    /// Number of workers, each with its own connection.
    pub workers: usize,
    /// Publisher connection configuration.
    pub publisher_config: AmqpConfig,
    /// Worker connection configuration.
    pub worker_config: AmqpConfig,
    /// Worker queue kind: quorum (its delay levels and dead-letter queue too) or classic.
    pub quorum: bool,
    /// The handler fails messages `n % 10 == 1` once and `n % 10 == 2` twice (retried
    /// through the delay levels) and rejects `n % 50 == 3` for good (dead-lettered); the
    /// others succeed at once.
    pub failing: bool,
    /// Publishers send COBS-framed postcard envelopes to a frames queue (of the same kind as
    /// the worker queue) that the firmware gateway, on a connection of its own, turns into
    /// the JSON messages the workers handle.
    pub via_gateway: bool,
    /// Where to ask what the broker holds when messages are missing: the test cluster's
    /// nodes (`tests/cluster/cluster-ctl.sh`) or the default broker (`rabbitmqctl`).
    pub cluster: bool,
    /// The longest the scenario may take.
    pub limit: Duration,
}

/// `config` with its address list rotated by `i` (the `i`-th client starts at the `i`-th
/// node, modulo their number); a single address stays as it is.
pub fn rotated(config: &AmqpConfig, i: usize) -> AmqpConfig {
    let mut all = lepus::amqp::addresses(&config.addr);
    if all.len() > 1 {
        let k = i % all.len();
        all.rotate_left(k);
    }
    let mut c = config.clone();
    c.addr = all.join(",");
    c
}

fn registry(tally: &Arc<Tally>, failing: bool) -> Registry {
    let tally = Arc::clone(tally);
    Registry::new().with(move |m: Numbered, ctx: Context| {
        let tally = Arc::clone(&tally);
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            *tally.attempts.lock().unwrap().entry(m.n).or_insert(0) += 1;
            if failing {
                if m.n % 50 == 3 {
                    return Err(HandlerError::rejected("chaos: rejected for good"));
                }
                let failures = match m.n % 10 {
                    1 => 1,
                    2 => 2,
                    _ => 0,
                };
                if ctx.attempt <= failures {
                    return Err(HandlerError::transient("chaos: fails this attempt"));
                }
            }
            *tally.handled.lock().unwrap().entry(m.n).or_insert(0) += 1;
            tally.progressed();
            Ok::<(), HandlerError>(())
        }
    })
}

/// How many handled messages a failing load dead-letters among `confirmed` (its
/// `n % 50 == 3` ones).
pub fn rejected_among(confirmed: &[u64]) -> u64 {
    confirmed.iter().filter(|&&n| n % 50 == 3).count() as u64
}

/// The COBS frame (zero terminator included) of `Numbered { n }`, as a device writes it.
pub fn numbered_frame(n: u64) -> Vec<u8> {
    let envelope = Envelope {
        payload: Numbered { n },
        metadata: Metadata::new(Numbered::TYPE),
    };
    let mut buf = [0u8; 128];
    let len = encode_postcard_cobs(&envelope, &mut buf).expect("a frame fits in 128 bytes");
    buf[..len].to_vec()
}

/// The frames queue of a [`Setup::via_gateway`] load: `<queue>.frames` on the exchange
/// `<queue>.frames.x`, bound to `frames.#`.
fn frames_spec(setup: &Setup) -> QueueSpec {
    let spec = QueueSpec::new(
        format!("{}.frames", setup.queue),
        format!("{}.frames.x", setup.queue),
    )
    .bind("frames.#");
    if setup.quorum {
        spec.kind(QueueKind::Quorum)
    } else {
        spec
    }
}

/// The numbers of the messages in dead-letter queue `queue`, consumed (and acked) until it
/// has been quiet for 3 s.
async fn drain_dead_letters(transport: &AmqpTransport, queue: &str) -> Vec<u64> {
    let mut found = Vec::new();
    let Ok(mut sub) = transport.consume(queue, 200).await else {
        return found;
    };
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
        let n = serde_json::from_slice::<serde_json::Value>(&d.body)
            .ok()
            .and_then(|v| v.pointer("/payload/n").and_then(serde_json::Value::as_u64));
        if let Some(n) = n {
            found.push(n);
        }
        let _ = d.ack().await;
    }
    let _ = sub.cancel().await;
    found
}

/// How many messages dead-letter queue `queue` holds, by their `x-lepus-reason`, consumed
/// (and acked) until it has been quiet for 3 s.
async fn dead_letter_reasons(
    transport: &AmqpTransport,
    queue: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut found = std::collections::BTreeMap::new();
    let Ok(mut sub) = transport.consume(queue, 200).await else {
        return found;
    };
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
        let reason = match d.properties().headers.get(lepus::HEADER_REASON) {
            Some(lepus::HeaderValue::Str(r)) => r.clone(),
            _ => "(none)".to_owned(),
        };
        *found.entry(reason).or_default() += 1;
        let _ = d.ack().await;
    }
    let _ = sub.cancel().await;
    found
}

fn worker_config(setup: &Setup) -> WorkerConfig {
    worker_config_for(&setup.queue, setup.quorum)
}

/// The worker configuration of the chaos load for `queue` (bound to `chaos.#` on
/// `<queue>.x`), also used by the `chaos_worker` process.
pub fn worker_config_for(queue: &str, quorum: bool) -> WorkerConfig {
    let config = WorkerConfig::new(queue.to_owned(), format!("{queue}.x"))
        .bind("chaos.#")
        .prefetch(100)
        .concurrency(16)
        .shutdown_timeout(Duration::from_secs(5));
    if quorum {
        config.kind(lepus::QueueKind::Quorum)
    } else {
        config
    }
}

/// Runs the load with `fault` injected meanwhile (it gets the tally to mark its faults), then
/// waits until every confirmed message was handled (or 120 s passed) and returns the row.
pub async fn run<F, Fut>(scenario: &str, setup: Setup, fault: F) -> Row
where
    F: FnOnce(Arc<Tally>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Bounded: a scenario that hangs fails instead of holding CI.
    let limit = setup.limit;
    match tokio::time::timeout(limit, run_unbounded(scenario, setup, fault)).await {
        Ok(row) => row,
        Err(_) => panic!("scenario {scenario:?} did not finish within {limit:?}"),
    }
}

/// How long after the load a scenario waits for missing messages before it looks for delay
/// levels without a dead-letter worker.
pub(crate) const REPAIR_AFTER: Duration = Duration::from_secs(20);

/// The longest one scenario may take.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(240);

async fn run_unbounded<F, Fut>(scenario: &str, setup: Setup, fault: F) -> Row
where
    F: FnOnce(Arc<Tally>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tally = Arc::new(Tally::default());
    // Client 0 publishes; the workers are clients 1..; the gateway comes last.
    let publisher_transport = Arc::new(
        AmqpTransport::connect(rotated(&setup.publisher_config, 0))
            .await
            .expect("publisher connects"),
    );
    let mut workers: Vec<(Arc<AmqpTransport>, WorkerHandle)> = Vec::new();
    let mut spec = None;
    for i in 0..setup.workers {
        let t = Arc::new(
            AmqpTransport::connect(rotated(&setup.worker_config, 1 + i))
                .await
                .expect("worker connects"),
        );
        let worker = Worker::new(
            Arc::clone(&t),
            worker_config(&setup),
            registry(&tally, setup.failing),
        );
        spec.get_or_insert_with(|| worker.queue_spec());
        workers.push((Arc::clone(&t), worker.start().await.expect("worker starts")));
    }
    let spec = spec.expect("at least one worker");
    let publisher = Arc::new(Publisher::new(
        Arc::clone(&publisher_transport),
        spec.exchange.clone(),
    ));
    let frames = setup.via_gateway.then(|| frames_spec(&setup));
    let mut gateway: Option<(Arc<AmqpTransport>, GatewayHandle)> = None;
    if let Some(frames) = &frames {
        let t = Arc::new(
            AmqpTransport::connect(rotated(&setup.worker_config, 1 + setup.workers))
                .await
                .expect("gateway connects"),
        );
        let mut g = Gateway::new(Arc::clone(&t), spec.exchange.clone());
        g.register::<Numbered>();
        let consumer = ConsumerConfig::default()
            .prefetch(100)
            .concurrency(16)
            .shutdown_timeout(Duration::from_secs(5));
        let handle = g
            .start(frames.clone(), consumer)
            .await
            .expect("gateway starts");
        gateway = Some((t, handle));
    }

    let (fault, faults_done) = spawn_fault(fault(Arc::clone(&tally)));
    // Publishers: 16 tasks share the numbers, sending at least `messages` and on until the
    // faults are over, so that every fault lands in the middle of the load.
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (publisher, tally, next) = (
            Arc::clone(&publisher),
            Arc::clone(&tally),
            Arc::clone(&next),
        );
        let raw = Arc::clone(&publisher_transport);
        let frames = frames.clone();
        let done = Arc::clone(&faults_done);
        let total = setup.messages;
        senders.spawn(async move {
            loop {
                if next.load(Ordering::Relaxed) >= total && done.load(Ordering::Relaxed) {
                    return;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let sent = match &frames {
                    None => publisher.send(&Numbered { n }).await.map(drop),
                    Some(frames) => {
                        let frame = numbered_frame(n);
                        let properties = Properties::default();
                        raw.publish(Publication::new(
                            &frames.exchange,
                            "frames.numbered",
                            &frame,
                            &properties,
                        ))
                        .await
                    }
                };
                match sent {
                    Ok(()) => {
                        tally.confirmed.fetch_add(1, Ordering::Relaxed);
                        tally.confirmed_ids.lock().unwrap().push(n);
                        *tally.last_confirm.lock().unwrap() = Some(Instant::now());
                        tally.progressed();
                    }
                    Err(e) => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        tally.failed_with(&e);
                    }
                }
                // Spread the load over a few seconds so that faults land in the middle.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    let monitor = {
        let (tally, next) = (Arc::clone(&tally), Arc::clone(&next));
        let started = Instant::now();
        let nodes: Vec<Arc<AmqpTransport>> = std::iter::once(Arc::clone(&publisher_transport))
            .chain(workers.iter().map(|(t, _)| Arc::clone(t)))
            .chain(gateway.iter().map(|(t, _)| Arc::clone(t)))
            .collect();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let ports: Vec<String> = nodes
                    .iter()
                    .map(|t| {
                        let node = t.node();
                        let port = node
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.split('/').next())
                            .unwrap_or("");
                        format!("{port}+{}", t.reconnections())
                    })
                    .collect();
                let _ = writeln!(
                    std::io::stderr(),
                    "  [{:>5.1} s] sent {} confirmed {} failed {} handled {} (clients on port+reconnections: {})",
                    started.elapsed().as_secs_f64(),
                    next.load(Ordering::Relaxed),
                    tally.confirmed.load(Ordering::Relaxed),
                    tally.failed.load(Ordering::Relaxed),
                    tally.handled_count(),
                    ports.join(" ")
                );
            }
        })
    };
    while senders.join_next().await.is_some() {}
    let _ = fault.await;
    let sent = next.load(Ordering::Relaxed);
    let stall = tally
        .progress
        .lock()
        .unwrap()
        .map_or(Duration::ZERO, |p| p.1);

    let confirmed_ids: Vec<u64> = tally.confirmed_ids.lock().unwrap().clone();
    // A failing load dead-letters its rejected messages: those are not waited for.
    let expected_dead: std::collections::HashSet<u64> = if setup.failing {
        confirmed_ids
            .iter()
            .copied()
            .filter(|n| n % 50 == 3)
            .collect()
    } else {
        Default::default()
    };
    let waiting = Instant::now();
    let deadline = waiting + Duration::from_secs(120);
    let mut broker_repairs = Vec::new();
    let mut next_repair = REPAIR_AFTER;
    loop {
        let missing = {
            let handled = tally.handled.lock().unwrap();
            confirmed_ids
                .iter()
                .filter(|n| !handled.contains_key(n) && !expected_dead.contains(n))
                .count()
        };
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        // Retries still missing 20 s after the load (their delays are at most 200 ms, the
        // broker's dead-letter confirm timeout on the test cluster is 5 s): a delay level
        // whose dead-letter worker is gone holds them until its next leader election (on one
        // node: until the node restarts). Start the missing workers, as an operator would,
        // every 20 s while messages are missing, and say so in the row. Each line names the
        // queue, its leader, what it held and the dead worker.
        if waiting.elapsed() > next_repair {
            next_repair += REPAIR_AFTER;
            let what = format!(
                "{missing} confirmed messages missing {:.0} s after the load",
                waiting.elapsed().as_secs_f64()
            );
            broker_repairs.extend(repair_dead_letter_workers(setup.cluster, &what).await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    monitor.abort();
    let mut diagnosis = String::new();
    if tally.handled_count() + expected_dead.len() < confirmed_ids.len() {
        // Where the missing ones are, while the workers still hold what they hold.
        let (held, levels) = if setup.cluster {
            (
                crate::cluster::queues_state(&setup.queue).await,
                crate::cluster::dead_letter_workers().await,
            )
        } else {
            (
                crate::delays::broker_state(&["lepus.delay.", &setup.queue]).await,
                String::new(),
            )
        };
        let _ = writeln!(std::io::stderr(), "  {held}\n  {levels}");
        diagnosis.push_str(&format!("before shutdown: {held}; {levels}; "));
    }
    let mut reconnections = publisher_transport.reconnections();
    if let Some((t, handle)) = gateway {
        let stats = handle.shutdown().await;
        diagnosis.push_str(&format!("gateway {stats:?}; "));
        reconnections += t.reconnections();
    }
    for (t, handle) in workers {
        let stats = handle.shutdown().await;
        diagnosis.push_str(&format!("worker {stats:?}; "));
        reconnections += t.reconnections();
    }
    let dead_queue = format!("{}.dead", spec.name);
    let dead: Vec<u64> = if setup.failing {
        drain_dead_letters(&publisher_transport, &dead_queue).await
    } else {
        Vec::new()
    };
    let handled = tally.handled.lock().unwrap().clone();
    let dead_set: std::collections::HashSet<u64> = dead.iter().copied().collect();
    let lost = confirmed_ids
        .iter()
        .filter(|n| !handled.contains_key(n) && !dead_set.contains(n))
        .count() as u64;
    if lost > 0 {
        let attempts = tally.attempts.lock().unwrap().clone();
        let missing: Vec<u64> = confirmed_ids
            .iter()
            .copied()
            .filter(|n| !handled.contains_key(n) && !dead_set.contains(n))
            .collect();
        let never = missing.iter().filter(|n| !attempts.contains_key(n)).count();
        let mut by_class = [0usize; 10];
        for n in &missing {
            by_class[(n % 10) as usize] += 1;
        }
        let mut sample = missing.clone();
        sample.sort_unstable();
        sample.truncate(20);
        let lost_line = format!(
            "lost {}: never delivered {never}; by n % 10 {by_class:?}; first {sample:?}; \
             confirmed range 0..{}",
            missing.len(),
            sent
        );
        let _ = writeln!(std::io::stderr(), "  {lost_line}");
        diagnosis.insert_str(0, &format!("{lost_line}; "));
        if let Some(frames) = &frames {
            let reasons =
                dead_letter_reasons(&publisher_transport, &format!("{}.dead", frames.name)).await;
            diagnosis.push_str(&format!("dead-lettered frames by reason {reasons:?}; "));
        }
        if setup.cluster {
            let after = crate::cluster::queues_state(&setup.queue).await;
            let _ = writeln!(std::io::stderr(), "  {after}");
            diagnosis.push_str(&format!("after shutdown: {after}; "));
            let events = crate::cluster::recent_events();
            diagnosis.push_str(&format!(
                "the library's last warnings and errors:\n    {}",
                events.join("\n    ")
            ));
        } else {
            broker_state(&setup.queue).await;
        }
    } else {
        diagnosis.clear();
    }
    let duplicates = handled
        .values()
        .map(|&c| u64::from(c.saturating_sub(1)))
        .sum::<u64>()
        + (dead.len() - dead_set.len()) as u64;
    let row = Row {
        scenario: scenario.to_owned(),
        sent,
        confirmed: tally.confirmed.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        failures: tally
            .failures
            .lock()
            .unwrap()
            .iter()
            .map(|(kind, (count, first))| (kind.clone(), *count, first.clone()))
            .collect(),
        handled: tally.handled_count() as u64,
        lost,
        duplicates,
        recovery: *tally.recovery.lock().unwrap(),
        reconnections,
        dead_lettered: dead_set.len() as u64,
        stall,
        broker_repairs,
        diagnosis,
    };
    // Leave nothing behind.
    let _ = publisher_transport.delete_queue(&dead_queue).await;
    let _ = publisher_transport.delete_queue(&spec.name).await;
    let _ = publisher_transport.delete_exchange(&spec.exchange).await;
    if let Some(frames) = &frames {
        let _ = publisher_transport
            .delete_queue(&format!("{}.dead", frames.name))
            .await;
        let _ = publisher_transport.delete_queue(&frames.name).await;
        let _ = publisher_transport.delete_exchange(&frames.exchange).await;
    }
    report(&row);
    row
}

/// Prints what the broker holds for a scenario's queues and which channels hold unacked
/// deliveries: when messages are missing, this says where they are.
async fn broker_state(queue: &str) {
    for args in [
        &[
            "list_queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ][..],
        &[
            "list_channels",
            "connection",
            "number",
            "consumer_count",
            "messages_unacknowledged",
        ][..],
        &["list_connections", "name", "state", "channels"][..],
    ] {
        let out = tokio::process::Command::new("rabbitmqctl")
            .args(["-q"])
            .args(args)
            .output()
            .await;
        let text = out.map_or_else(
            |e| e.to_string(),
            |o| String::from_utf8_lossy(&o.stdout).into_owned(),
        );
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| args[0] != "list_queues" || l.contains(queue))
            .collect();
        let _ = writeln!(
            std::io::stderr(),
            "  messages missing; rabbitmqctl {}:\n    {}",
            args[0],
            lines.join("\n    ")
        );
    }
}

/// Runs `rabbitmqctl` with `args`; panics with its output when it fails.
pub async fn rabbitmqctl(args: &[&str]) {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rabbitmqctl -q eval <expr>` on the default broker (blocking): what it printed.
fn local_eval_blocking(expr: &str) -> Result<String, String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "eval", expr])
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(text)
}

/// [`local_eval_blocking`] off the async runtime.
async fn local_eval(expr: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || local_eval_blocking(&expr))
        .await
        .map_err(|e| e.to_string())?
}

/// The expression that runs `adapters/lepus-cli/src/dead-letter-workers.erl`.
fn dead_letter_workers_expr(restart: bool) -> String {
    format!(
        "Restart = {restart},\n{}",
        crate::cluster::DEAD_LETTER_WORKERS
    )
}

/// Runs `adapters/lepus-cli/src/dead-letter-workers.erl` on the default broker
/// (`rabbitmqctl eval`): the lines it printed. With `restart`, what it started again (the
/// node's dead-letter supervisor, the queues' workers); without, every at-least-once quorum
/// queue's worker.
pub async fn local_dead_letter_workers(restart: bool) -> Result<Vec<String>, String> {
    let out = local_eval(dead_letter_workers_expr(restart)).await?;
    Ok(crate::cluster::printed_lines(&out))
}

/// Starts again the dead-letter supervisors and workers the broker (`cluster`: the test
/// cluster; else the default broker) lost, while `missing` (what is missing, for the log) is
/// still missing: one line per start, printed with `missing`; none when nothing was lost or
/// the broker did not answer (printed).
pub(crate) async fn repair_dead_letter_workers(cluster: bool, missing: &str) -> Vec<String> {
    let started = if cluster {
        crate::cluster::restart_dead_letter_workers().await
    } else {
        local_dead_letter_workers(true).await
    };
    match started {
        Ok(started) => {
            if !started.is_empty() {
                let _ = writeln!(
                    std::io::stderr(),
                    "  {missing}; dead-letter workers started again:\n    {}",
                    started.join("\n    ")
                );
            }
            started
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "  dead-letter workers not checked: {e}");
            Vec::new()
        }
    }
}

/// Restores the broker when dropped (a failed scenario must not leave it stopped or alarmed).
pub struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .output();
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["set_vm_memory_high_watermark", "0.4"])
            .output();
        // A scenario must not leave the next one's delayed messages held.
        let _ = local_eval_blocking(&dead_letter_workers_expr(true));
    }
}

/// A fault: ends the default broker's dead-letter supervisor the way RabbitMQ 3.10 can end it
/// itself, with two of its workers failing within 5 s (it allows one restart in 5 s, and is
/// not started again: rabbitmq-server#16652). Every at-least-once quorum queue of the node is
/// left without a worker. Returns whether the supervisor is gone afterwards.
pub async fn end_dead_letter_supervisor() -> Result<bool, String> {
    const EXPR: &str =
        "Ws = [P || {_, P, _, _} <- supervisor:which_children(rabbit_fifo_dlx_sup)], \
         [exit(P, kill) || P <- lists:sublist(Ws, 2)], timer:sleep(500), \
         whereis(rabbit_fifo_dlx_sup).";
    Ok(local_eval(EXPR.to_owned()).await?.trim() == "undefined")
}

pub use lepus::testing::broker_required;

/// The broker configuration for a scenario (90 s send timeout), or `None` after a loud notice
/// when RabbitMQ (and, with `needs_rabbitmqctl`, `rabbitmqctl`) is missing and not required.
pub async fn broker(test: &str, needs_rabbitmqctl: bool) -> Option<AmqpConfig> {
    let config = lepus::testing::config(test)?.send_timeout(Duration::from_secs(90));
    let reachable = AmqpTransport::connect(config.clone()).await.is_ok();
    let ctl = !needs_rabbitmqctl
        || std::process::Command::new("rabbitmqctl")
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success());
    if reachable && ctl {
        return Some(config);
    }
    if broker_required() {
        panic!("{test}: RabbitMQ and rabbitmqctl are required (reachable: {reachable}, rabbitmqctl: {ctl})");
    }
    lepus::testing::skipped(test, "needs RabbitMQ and rabbitmqctl");
    None
}

/// The default load of a scenario on `config`: 3,000 messages at least, 3 workers.
pub fn setup(queue: &str, config: &AmqpConfig) -> Setup {
    Setup {
        queue: format!("lepus-chaos-{queue}-{}", std::process::id()),
        messages: 3_000,
        workers: 3,
        publisher_config: config.clone(),
        worker_config: config.clone(),
        quorum: false,
        failing: false,
        via_gateway: false,
        cluster: false,
        limit: SCENARIO_LIMIT,
    }
}
