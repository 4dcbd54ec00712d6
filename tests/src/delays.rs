//! Delay scenarios on the real broker: many distinct delays on the fixed levels (no queue
//! added, nothing early, lateness measured), and delayed messages waiting through a broker
//! restart on the quorum levels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::{
    AmqpConfig, AmqpTransport, Delivery, Message, Publisher, QueueKind, QueueSpec, SendOptions,
    Transport,
};
use serde::{Deserialize, Serialize};

/// The task the scenarios delay.
#[derive(Debug, Serialize, Deserialize)]
pub struct Later {
    /// Its number.
    pub n: u32,
}

impl Message for Later {
    const TYPE: &'static str = "LepusChaosLater";
    const ROUTING_KEY: &'static str = "later.task";
}

/// A task whose handler fails its first attempt: retried with backoff and jitter.
#[derive(Debug, Serialize, Deserialize)]
pub struct Flaky {
    /// Its number.
    pub n: u32,
}

impl Message for Flaky {
    const TYPE: &'static str = "LepusChaosFlaky";
    const ROUTING_KEY: &'static str = "flaky.task";

    fn retry_policy() -> lepus::RetryPolicy {
        lepus::RetryPolicy::backoff(
            3,
            lepus::core::retry::Backoff {
                base_ms: 200,
                factor: 2,
                max_ms: 5_000,
                jitter: true,
            },
        )
    }
}

/// Runs a worker on `spec` whose handler fails the first attempt of each of `count` `Flaky`
/// tasks, until all succeeded (or `deadline`): every retry waits on the delay levels with a
/// jittered backoff. Returns how many succeeded after a retry.
pub async fn flaky_retries(
    config: &AmqpConfig,
    spec: &QueueSpec,
    count: u32,
    deadline: Duration,
) -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    let t = Arc::new(
        AmqpTransport::connect(config.clone())
            .await
            .expect("connect"),
    );
    let retried = Arc::new(AtomicU32::new(0));
    let mut registry = lepus::Registry::new();
    let counter = Arc::clone(&retried);
    registry.register(move |_: Flaky, ctx: lepus::Context| {
        let counter = Arc::clone(&counter);
        async move {
            if ctx.attempt == 1 {
                return Err(lepus::HandlerError::transient("first attempt fails"));
            }
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    });
    let worker_config = lepus::WorkerConfig::new(&spec.name, &spec.exchange).bind("flaky.#");
    let worker = lepus::Worker::new(Arc::clone(&t), worker_config, registry);
    let handle = worker.start().await.expect("worker starts");
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    for n in 0..count {
        publisher.send(&Flaky { n }).await.expect("sent");
    }
    let until = Instant::now() + deadline;
    while retried.load(Ordering::Relaxed) < count && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = handle.shutdown().await;
    let _ = t.delete_queue(&spec.name).await;
    let _ = t.delete_queue(&format!("{}.dead", spec.name)).await;
    let _ = t.close().await;
    retried.load(Ordering::Relaxed)
}

/// What a delay scenario measured.
#[derive(Debug, Clone, Default)]
pub struct DelayRow {
    /// Messages sent with a delay (all confirmed, or the scenario fails).
    pub sent: usize,
    /// Distinct messages that arrived.
    pub arrived: usize,
    /// Extra deliveries of messages that had arrived.
    pub duplicates: usize,
    /// Messages that arrived before their due time (must be 0).
    pub early: usize,
    /// Queues on the broker before the sends and after the last arrival.
    pub queues_before: usize,
    /// See `queues_before`.
    pub queues_after: usize,
    /// Lateness (arrival minus due time), sorted, in milliseconds.
    pub lateness_ms: Vec<f64>,
    /// Dead-letter workers (and supervisors) that the broker had lost and the scenario started
    /// again, while messages were missing 20 s after `during` ([`send_and_collect`]): one line
    /// each. What they held arrives afterwards; the row shows that the broker needed it.
    pub broker_repairs: Vec<String>,
    /// When messages are missing at the deadline: the broker's queues and dead-letter workers
    /// as read then ([`broker_state`]), before the scenario's queues are deleted.
    pub diagnosis: String,
}

impl DelayRow {
    /// The lateness at quantile `q` (0..=1), in milliseconds.
    pub fn lateness_at(&self, q: f64) -> f64 {
        if self.lateness_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lateness_ms.len() - 1) as f64 * q).round() as usize;
        self.lateness_ms[i.min(self.lateness_ms.len() - 1)]
    }

    /// One line for RELIABILITY.md / BENCHMARKS.md.
    pub fn line(&self, scenario: &str) -> String {
        format!(
            "| {scenario} | {} | {} | **{}** | {} | {} | {} -> {} | {:.1} / {:.1} / {:.1} / {:.1} ms |",
            self.sent,
            self.arrived,
            self.sent - self.arrived.min(self.sent),
            self.duplicates,
            self.early,
            self.queues_before,
            self.queues_after,
            self.lateness_at(0.0),
            self.lateness_at(0.5),
            self.lateness_at(0.99),
            self.lateness_at(1.0),
        )
    }
}

/// Number of queues on the broker (`rabbitmqctl list_queues`) whose name starts with one of
/// `prefixes` (other tests may declare and delete queues of their own meanwhile).
pub async fn queue_count(prefixes: &[&str]) -> usize {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(["list_queues", "name", "--quiet", "--no-table-headers"])
        .output()
        .await
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| prefixes.iter().any(|p| l.trim().starts_with(p)))
        .count()
}

/// The broker's queues whose names start with one of `prefixes` (type, ready, unacked,
/// consumers) and its at-least-once quorum queues' dead-letter workers
/// (`adapters/lepus-cli/src/dead-letter-workers.erl`): where missing delayed messages wait.
pub async fn broker_state(prefixes: &[&str]) -> String {
    let queues = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "name",
            "type",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "--quiet",
            "--no-table-headers",
        ])
        .output()
        .await
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| prefixes.iter().any(|p| l.trim().starts_with(p)))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let workers = match crate::chaos::local_dead_letter_workers(false).await {
        Ok(lines) => lines.join("\n    "),
        Err(e) => format!("not read: {e}"),
    };
    format!(
        "queues: name type ready unacked consumers\n    {}\ndead-letter workers:\n    {}",
        queues.join("\n    "),
        workers
    )
}

/// splitmix64: a seeded, reproducible stream of delays.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `count` distinct delays in `min_ms..max_ms`, shuffled.
pub fn distinct_delays(count: usize, min_ms: u64, max_ms: u64, seed: u64) -> Vec<u64> {
    let mut state = seed;
    let mut seen = std::collections::HashSet::new();
    let mut delays = Vec::with_capacity(count);
    while delays.len() < count {
        let d = min_ms + next_random(&mut state) % (max_ms - min_ms);
        if seen.insert(d) {
            delays.push(d);
        }
    }
    delays
}

/// Sends `delays` on the quorum levels to a quorum queue of its own (`lepus-chaos-<name>-<pid>`)
/// while `during` runs (a fault), and collects them for up to 120 s: [`send_and_collect`] as
/// the quorum scenarios use it.
pub async fn through_quorum_levels<F, Fut>(
    config: &AmqpConfig,
    name: &str,
    delays: &[u64],
    during: F,
) -> DelayRow
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let id = std::process::id();
    let spec = QueueSpec::new(
        format!("lepus-chaos-{name}-{id}"),
        format!("lepus-chaos-{name}-x-{id}"),
    )
    .kind(QueueKind::Quorum)
    .bind("later.#");
    send_and_collect(
        config,
        &spec,
        delays,
        QueueKind::Quorum,
        Duration::from_secs(120),
        &[spec.name.as_str()],
        during,
    )
    .await
}

/// Sends one `Later` per delay (at once, pipelined) to `exchange` on the levels of `kind`,
/// then consumes `queue` while `during` (a fault, say) runs, until every message arrived or
/// `deadline` passed. `queue` must be bound to `exchange` with `later.#`. Queues are counted
/// among the delay levels and the names of `watched` (what a design with a queue per delay
/// would add to).
pub async fn send_and_collect<F, Fut>(
    config: &AmqpConfig,
    spec: &QueueSpec,
    delays: &[u64],
    kind: QueueKind,
    deadline: Duration,
    watched: &[&str],
    during: F,
) -> DelayRow
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let t = Arc::new(
        AmqpTransport::connect(config.clone())
            .await
            .expect("connect"),
    );
    t.declare_exchange(&spec.exchange).await.expect("exchange");
    t.declare_queue(spec).await.expect("queue and levels");
    let mut prefixes = vec!["lepus.delay."];
    prefixes.extend_from_slice(watched);
    let mut row = DelayRow {
        queues_before: queue_count(&prefixes).await,
        ..DelayRow::default()
    };
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    // The due time of each message, by its number.
    let mut due: HashMap<u32, Instant> = HashMap::new();
    let mut sends = tokio::task::JoinSet::new();
    for (n, &ms) in delays.iter().enumerate() {
        let n = n as u32;
        let options = SendOptions::new()
            .delay(Duration::from_millis(ms))
            .delay_levels(kind);
        // The broker starts the wait no earlier than this: arrival - due >= 0.
        due.insert(n, Instant::now() + Duration::from_millis(ms));
        let publisher = publisher.clone();
        sends.spawn(async move { publisher.send_with(&Later { n }, &options).await });
    }
    while let Some(sent) = sends.join_next().await {
        sent.expect("send task").expect("delayed send confirmed");
        row.sent += 1;
    }
    // Arrivals are taken as they come, while `during` runs.
    let mut sub = t.consume(&spec.name, 500).await.expect("consume");
    let expected = delays.len();
    let collector = tokio::spawn(async move {
        let mut arrived: HashMap<u32, Instant> = HashMap::new();
        let mut duplicates = 0;
        let until = Instant::now() + deadline;
        while arrived.len() < expected && Instant::now() < until {
            let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await
            else {
                continue;
            };
            let now = Instant::now();
            if let Some(n) = number_of(&d) {
                if arrived.insert(n, now).is_some() {
                    duplicates += 1;
                }
            }
            d.ack().await.expect("ack");
        }
        (arrived, duplicates)
    });
    during().await;
    // Messages still missing 20 s after `during` (the longest delay is 12 s) wait on a quorum
    // level whose dead-letter worker RabbitMQ lost: start the missing workers again, as an
    // operator would (README, "Running on a cluster"), every 20 s, and say so in the row.
    let waiting = Instant::now();
    let mut next_repair = crate::chaos::REPAIR_AFTER;
    while !collector.is_finished() {
        if kind == QueueKind::Quorum && waiting.elapsed() > next_repair {
            next_repair += crate::chaos::REPAIR_AFTER;
            let what = format!(
                "delayed messages missing {:.0} s after the fault",
                waiting.elapsed().as_secs_f64()
            );
            row.broker_repairs
                .extend(crate::chaos::repair_dead_letter_workers(false, &what).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (arrived, duplicates) = collector.await.expect("collector");
    row.duplicates = duplicates;
    row.arrived = arrived.len();
    let mut lateness: Vec<f64> = Vec::new();
    for (n, at) in &arrived {
        let Some(due_at) = due.get(n) else { continue };
        match at.checked_duration_since(*due_at) {
            Some(late) => lateness.push(late.as_secs_f64() * 1000.0),
            None => row.early += 1,
        }
    }
    lateness.sort_by(f64::total_cmp);
    row.lateness_ms = lateness;
    row.queues_after = queue_count(&prefixes).await;
    if row.arrived < row.sent {
        row.diagnosis = broker_state(&prefixes).await;
        eprintln!(
            "{} of {} missing at the deadline; {}",
            row.sent - row.arrived,
            row.sent,
            row.diagnosis
        );
    }
    let _ = t.delete_queue(&spec.name).await;
    let _ = t.delete_queue(&format!("{}.dead", spec.name)).await;
    let _ = t.delete_exchange(&spec.exchange).await;
    let _ = t.close().await;
    row
}

fn number_of(d: &Delivery) -> Option<u32> {
    let raw = lepus::core::decode_json_raw(&d.body).ok()?;
    let later: Later = serde_json::from_slice(raw.payload).ok()?;
    Some(later.n)
}
