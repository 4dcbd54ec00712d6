//! The load harness of the reliability tests: publishers send numbered messages throughout,
//! several workers (each on its own connection) handle them, a fault is injected meanwhile,
//! and at the end every confirmed message must have been handled: lost ones are counted by
//! number, duplicates (at-least-once) are counted and reported.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::{
    AmqpConfig, AmqpTransport, Context, HandlerError, Message, Publisher, Registry, RetryPolicy,
    Transport, Worker, WorkerConfig, WorkerHandle,
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
    let _ = writeln!(std::io::stderr(), "\n{TABLE_HEADER}\n{}\n", row.line());
}

/// Shared state of one run.
#[derive(Debug, Default)]
pub struct Tally {
    handled: Mutex<HashMap<u64, u32>>,
    confirmed_ids: Mutex<Vec<u64>>,
    confirmed: AtomicU64,
    failed: AtomicU64,
    last_confirm: Mutex<Option<Instant>>,
    recovery: Mutex<Duration>,
}

impl Tally {
    /// Notes that a fault was injected at `at`: recovery is measured from there to the next
    /// confirmed send.
    pub async fn fault_injected(&self, at: Instant) {
        note_recovery(&self.last_confirm, &self.recovery, at).await;
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
    /// Worker queue kind.
    pub quorum: bool,
}

fn registry(tally: &Arc<Tally>) -> Registry {
    let tally = Arc::clone(tally);
    Registry::new().with(move |m: Numbered, _ctx: Context| {
        let tally = Arc::clone(&tally);
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            *tally.handled.lock().unwrap().entry(m.n).or_insert(0) += 1;
            Ok::<(), HandlerError>(())
        }
    })
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
    match tokio::time::timeout(SCENARIO_LIMIT, run_unbounded(scenario, setup, fault)).await {
        Ok(row) => row,
        Err(_) => panic!("scenario {scenario:?} did not finish within {SCENARIO_LIMIT:?}"),
    }
}

/// The longest one scenario may take.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(240);

async fn run_unbounded<F, Fut>(scenario: &str, setup: Setup, fault: F) -> Row
where
    F: FnOnce(Arc<Tally>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tally = Arc::new(Tally::default());
    let publisher_transport = Arc::new(
        AmqpTransport::connect(setup.publisher_config.clone())
            .await
            .expect("publisher connects"),
    );
    let mut workers: Vec<(Arc<AmqpTransport>, WorkerHandle)> = Vec::new();
    let mut spec = None;
    for _ in 0..setup.workers {
        let t = Arc::new(
            AmqpTransport::connect(setup.worker_config.clone())
                .await
                .expect("worker connects"),
        );
        let worker = Worker::new(Arc::clone(&t), worker_config(&setup), registry(&tally));
        spec.get_or_insert_with(|| worker.queue_spec());
        workers.push((Arc::clone(&t), worker.start().await.expect("worker starts")));
    }
    let spec = spec.expect("at least one worker");
    let publisher = Arc::new(Publisher::new(
        Arc::clone(&publisher_transport),
        spec.exchange.clone(),
    ));

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
        let done = Arc::clone(&faults_done);
        let total = setup.messages;
        senders.spawn(async move {
            loop {
                if next.load(Ordering::Relaxed) >= total && done.load(Ordering::Relaxed) {
                    return;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                match publisher.send(&Numbered { n }).await {
                    Ok(_) => {
                        tally.confirmed.fetch_add(1, Ordering::Relaxed);
                        tally.confirmed_ids.lock().unwrap().push(n);
                        *tally.last_confirm.lock().unwrap() = Some(Instant::now());
                    }
                    Err(_) => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
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
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = writeln!(
                    std::io::stderr(),
                    "  [{:>5.1} s] sent {} confirmed {} failed {} handled {}",
                    started.elapsed().as_secs_f64(),
                    next.load(Ordering::Relaxed),
                    tally.confirmed.load(Ordering::Relaxed),
                    tally.failed.load(Ordering::Relaxed),
                    tally.handled_count()
                );
            }
        })
    };
    while senders.join_next().await.is_some() {}
    let _ = fault.await;
    let sent = next.load(Ordering::Relaxed);

    let confirmed_ids: Vec<u64> = tally.confirmed_ids.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing = {
            let handled = tally.handled.lock().unwrap();
            confirmed_ids
                .iter()
                .filter(|n| !handled.contains_key(n))
                .count()
        };
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    monitor.abort();
    if confirmed_ids.len() > tally.handled_count() {
        broker_state(&setup.queue).await;
    }
    let mut reconnections = publisher_transport.reconnections();
    for (t, handle) in workers {
        let _ = handle.shutdown().await;
        reconnections += t.reconnections();
    }
    let handled = tally.handled.lock().unwrap().clone();
    let lost = confirmed_ids
        .iter()
        .filter(|n| !handled.contains_key(n))
        .count() as u64;
    let duplicates = handled
        .values()
        .map(|&c| u64::from(c.saturating_sub(1)))
        .sum();
    let row = Row {
        scenario: scenario.to_owned(),
        sent,
        confirmed: tally.confirmed.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        handled: tally.handled_count() as u64,
        lost,
        duplicates,
        recovery: *tally.recovery.lock().unwrap(),
        reconnections,
    };
    // Leave nothing behind.
    let _ = publisher_transport
        .delete_queue(&format!("{}.dead", spec.name))
        .await;
    for delay in &spec.retry_delays_ms {
        let _ = publisher_transport
            .delete_queue(&format!("{}.wait.{delay}", spec.name))
            .await;
    }
    let _ = publisher_transport.delete_queue(&spec.name).await;
    let _ = publisher_transport.delete_exchange(&spec.exchange).await;
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
    }
}

pub use lepus::testing::broker_required;

/// The broker configuration for a scenario (90 s send timeout), or `None` after a loud notice
/// when RabbitMQ (and, with `needs_rabbitmqctl`, `rabbitmqctl`) is missing and not required.
pub async fn broker(test: &str, needs_rabbitmqctl: bool) -> Option<AmqpConfig> {
    let config = AmqpConfig::from_env().send_timeout(Duration::from_secs(90));
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
    }
}
