//! `--only cost`: client cost per message, each Lepus row beside the best raw lapin form, in
//! one run (issue 13's honest baselines).
//!
//! Rows, in two groups:
//! - publish (persistent, mandatory, confirmed; 256-byte bodies, the typed rows an envelope of
//!   about that size): `raw-task` (raw lapin, one task per publish awaiting its own confirm),
//!   `raw-all` (raw lapin, send all then await every confirm: the same unbounded window as a
//!   batch), `publish` (`Transport::publish`, one task per message), `publish-batch`, `send`
//!   (typed `Publisher::send`, one task per message), `send-batch`;
//! - consume (a queue filled before the row with typed messages of `--size` bytes of payload,
//!   256 by default; prefetch 500): `raw-multi` (raw lapin acking with `multiple` every 50),
//!   `raw-each` (raw lapin acking each), `worker` (a `Worker` with a no-op handler; its acks
//!   batched by core's `AckWindow`), `worker-raw` (the same handler registered with
//!   `Registry::register_raw`: the payload handed over undecoded), `worker-events` (the
//!   `worker` row with `lepus::events` on),
//!   `subscription-multi` (`Transport::consume`, `ack_multiple` every 50).
//!
//! For each row: wall time and **client CPU per message** (`getrusage(RUSAGE_SELF)`, user +
//! system, over the timed section only). `--rounds R` rounds (3 by default), the row order
//! rotated each round (interleaved); printed: min / median / max of the rate and of the CPU per
//! message, and the median over rounds of each ratio to the best raw row of its group in the
//! same round (the faster raw rate, the cheaper raw CPU). The load average is printed before and
//! after.
//!
//! For instruction counts (`valgrind --tool=callgrind`), `--row NAME` runs one row once, and
//! `--fill` only fills the consume queue (run outside valgrind, so that filling is not counted):
//! `adapters/lepus-bench/cost_instructions.sh` runs each row at 1,000 and 4,000 messages and
//! prints (count at 4,000 - count at 1,000) / 3,000.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use lepus::{AmqpConfig, AmqpTransport, QueueSpec, Transport, WorkerConfig};

use super::spread::{load_average, min_median_max};
use super::{
    lepus_consume, lepus_publish_batch, lepus_publish_concurrent, purge, raw_consume,
    raw_properties, raw_publish, typed, BoxError, BODY, KEY, PREFETCH,
};

/// Fixed names: `--fill` and `--row` run in separate processes.
const EXCHANGE: &str = "lepus-bench-cost";
const PUBLISH_QUEUE: &str = "lepus-bench-cost";
const CONSUME_QUEUE: &str = "lepus-bench-cost-consume";
const EVENTS_WATCH: &str = "lepus-bench-cost-events";
/// The longest one row may take.
const ROW_LIMIT: Duration = Duration::from_secs(600);
/// `ack` with `multiple` once per this many deliveries (raw and subscription rows).
const ACK_EVERY: usize = 50;

const PUBLISH_ROWS: [&str; 6] = [
    "raw-task",
    "raw-all",
    "publish",
    "publish-batch",
    "send",
    "send-batch",
];
const CONSUME_ROWS: [&str; 6] = [
    "raw-multi",
    "raw-each",
    "worker",
    "worker-raw",
    "worker-events",
    "subscription-multi",
];

/// What `--only cost` was asked for.
pub struct CostOptions {
    pub n: usize,
    pub rounds: usize,
    pub size: Option<usize>,
    pub row: Option<String>,
    pub fill: bool,
    pub rows: Option<Vec<String>>,
}

/// User + system CPU time of this process so far.
fn cpu() -> Duration {
    super::usage::Usage::now().cpu
}

struct Bench {
    raw: Connection,
    raw_pub: Channel,
    ours: Arc<AmqpTransport>,
    worker: WorkerConfig,
    events: lepus::events::Events,
    size: Option<usize>,
}

/// One timed row: wall time and CPU time.
struct Sample {
    took: Duration,
    cpu: Duration,
}

impl Bench {
    async fn new(config: &AmqpConfig, size: Option<usize>) -> Result<Self, BoxError> {
        let raw = Connection::connect(&config.addr, ConnectionProperties::default()).await?;
        let raw_pub = raw.create_channel().await?;
        raw_pub
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let ours = Arc::new(AmqpTransport::connect(config.clone()).await?);
        ours.declare_exchange(EXCHANGE).await?;
        ours.declare_queue(&QueueSpec::new(PUBLISH_QUEUE, EXCHANGE).bind("bench.#"))
            .await?;
        let worker = typed::worker_config(CONSUME_QUEUE, EXCHANGE, PREFETCH);
        typed::declare_worker(&ours, &worker).await?;
        ours.declare_exchange(lepus::events::DEFAULT_EVENTS_EXCHANGE)
            .await?;
        ours.declare_queue(
            &QueueSpec::new(EVENTS_WATCH, lepus::events::DEFAULT_EVENTS_EXCHANGE).bind("#"),
        )
        .await?;
        let events =
            lepus::events::Events::start(Arc::clone(&ours), lepus::events::EventsConfig::default());
        Ok(Bench {
            raw,
            raw_pub,
            ours,
            worker,
            events,
            size,
        })
    }

    /// Fills the consume queue with `n` typed messages (not timed).
    async fn fill(&self, n: usize) -> Result<(), BoxError> {
        purge(&self.raw, CONSUME_QUEUE).await?;
        typed::fill_worker_queue_sized(&self.ours, EXCHANGE, n, self.size).await
    }

    /// Runs `row` over `n` messages: the timed section's wall and CPU time. Consume rows
    /// expect the queue filled. The typed and worker rows time themselves (the wall time
    /// leaves out building the messages, and a worker's shutdown); their CPU window includes
    /// those (a constant per row, and a few µs per message to build, see BENCHMARKS.md).
    async fn run(&self, row: &str, n: usize) -> Result<Sample, BoxError> {
        // A consume row on a queue holding fewer than `n` messages would wait for ever.
        tokio::time::timeout(ROW_LIMIT, self.run_row(row, n))
            .await
            .map_err(|_| format!("{row}: not done within {ROW_LIMIT:?} (queue filled?)"))?
    }

    async fn run_row(&self, row: &str, n: usize) -> Result<Sample, BoxError> {
        let (t, ex) = (&self.ours, EXCHANGE);
        let started = Instant::now();
        let cpu_before = cpu();
        let own: Option<Duration> = match row {
            "raw-task" => raw_publish_tasks(&self.raw_pub, ex, n)
                .await
                .map(|()| None)?,
            "raw-all" => raw_publish(&self.raw_pub, ex, n).await.map(|()| None)?,
            "publish" => lepus_publish_concurrent(t, ex, n).await.map(|()| None)?,
            "publish-batch" => lepus_publish_batch(t, ex, n).await.map(|()| None)?,
            "send" => Some(typed::publisher_send(t, ex, n).await?),
            "send-batch" => Some(typed::publisher_send_batch(t, ex, n).await?),
            "raw-multi" => raw_consume(&self.raw, CONSUME_QUEUE, n, ACK_EVERY)
                .await
                .map(|()| None)?,
            "raw-each" => raw_consume(&self.raw, CONSUME_QUEUE, n, 1)
                .await
                .map(|()| None)?,
            "worker" => Some(typed::worker_consume(t, self.worker.clone(), n).await?),
            "worker-raw" => {
                let config = self.worker.clone();
                Some(typed::worker_consume_as(t, config, n, typed::Decode::Raw).await?)
            }
            "worker-events" => {
                let config = self.worker.clone().events(self.events.clone());
                Some(typed::worker_consume(t, config, n).await?)
            }
            "subscription-multi" => lepus_consume(t, CONSUME_QUEUE, n, ACK_EVERY)
                .await
                .map(|()| None)?,
            other => return Err(format!("no row {other:?}").into()),
        };
        let sample = Sample {
            took: own.unwrap_or_else(|| started.elapsed()),
            cpu: cpu().saturating_sub(cpu_before),
        };
        if PUBLISH_ROWS.contains(&row) {
            purge(&self.raw, PUBLISH_QUEUE).await?;
        }
        Ok(sample)
    }

    async fn close(self) -> Result<(), BoxError> {
        self.ours.close().await?;
        self.raw.close(200, "bye".into()).await?;
        Ok(())
    }
}

/// `--only cost`.
pub async fn run(config: &AmqpConfig, options: CostOptions) -> Result<(), BoxError> {
    let bench = Bench::new(config, options.size).await?;
    if options.fill {
        bench.fill(options.n).await?;
        return bench.close().await;
    }
    if let Some(row) = &options.row {
        // One row, once (for callgrind): a consume row reads what `--fill` left.
        let s = bench.run(row, options.n).await?;
        println!(
            "{row}: {} messages in {:.3} s, CPU {:.1} µs/msg",
            options.n,
            s.took.as_secs_f64(),
            s.cpu.as_secs_f64() * 1e6 / options.n as f64
        );
        return bench.close().await;
    }
    let wanted = |r: &&str| {
        options
            .rows
            .as_ref()
            .is_none_or(|rows| rows.iter().any(|w| w == r))
    };
    let groups: Vec<(&str, Vec<&str>)> = vec![
        (
            "publish",
            PUBLISH_ROWS.iter().copied().filter(wanted).collect(),
        ),
        (
            "consume",
            CONSUME_ROWS.iter().copied().filter(wanted).collect(),
        ),
    ];
    let payload = options
        .size
        .map_or("about 256 bytes of envelope".to_owned(), |s| {
            format!("a {s}-byte string in the envelope")
        });
    println!(
        "client cost: {} messages per row, {} rounds, consume rows {payload}; load average before: {}",
        options.n,
        options.rounds,
        load_average()
    );
    for (group, rows) in groups {
        if rows.is_empty() {
            continue;
        }
        // samples[row][round]
        let mut samples: Vec<Vec<Sample>> = rows.iter().map(|_| Vec::new()).collect();
        for round in 0..options.rounds {
            for k in 0..rows.len() {
                let i = (k + round) % rows.len();
                let row = rows[i];
                if group == "consume" {
                    bench.fill(options.n).await?;
                }
                let s = bench.run(row, options.n).await?;
                eprintln!(
                    "  round {} {row}: {:.0} msg/s, CPU {:.1} µs/msg (load {})",
                    round + 1,
                    options.n as f64 / s.took.as_secs_f64(),
                    s.cpu.as_secs_f64() * 1e6 / options.n as f64,
                    load_average()
                );
                samples[i].push(s);
            }
        }
        print_group(group, &rows, &samples, options.n);
    }
    println!("load average after: {}", load_average());
    println!("events: {:?}", bench.events.stats());
    let _ = bench.ours.delete_queue(EVENTS_WATCH).await;
    let _ = bench
        .ours
        .delete_queue(&format!("{EVENTS_WATCH}.dead"))
        .await;
    bench.close().await
}

fn print_group(group: &str, rows: &[&str], samples: &[Vec<Sample>], n: usize) {
    let rate = |s: &Sample| n as f64 / s.took.as_secs_f64();
    let cpu_us = |s: &Sample| s.cpu.as_secs_f64() * 1e6 / n as f64;
    let rounds = samples.iter().map(Vec::len).min().unwrap_or(0);
    let raw: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].starts_with("raw-"))
        .collect();
    println!("\n{group}: rate (msg/s) and client CPU (µs/msg), min / median / max over {rounds} rounds; ratios to the best raw row of the same round, median");
    println!("| row | msg/s | CPU µs/msg | rate / best raw | CPU / best raw |");
    println!("|---|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        let (r0, r1, r2) = min_median_max(&mut samples[i].iter().map(rate).collect::<Vec<_>>());
        let (c0, c1, c2) = min_median_max(&mut samples[i].iter().map(cpu_us).collect::<Vec<_>>());
        let ratios = |f: &dyn Fn(&Sample) -> f64, best_is_max: bool| {
            let mut per_round: Vec<f64> = (0..rounds)
                .filter_map(|k| {
                    let best = raw
                        .iter()
                        .map(|&j| f(&samples[j][k]))
                        .reduce(if best_is_max { f64::max } else { f64::min })?;
                    Some(f(&samples[i][k]) / best)
                })
                .collect();
            min_median_max(&mut per_round).1
        };
        println!(
            "| {row} | {r0:.0} / {r1:.0} / {r2:.0} | {c0:.1} / {c1:.1} / {c2:.1} | {:.2}x | {:.2}x |",
            ratios(&rate, true),
            ratios(&cpu_us, false)
        );
    }
}

/// Raw lapin, one task per publish, each awaiting its own confirm (the best raw form for
/// single publishes).
async fn raw_publish_tasks(ch: &Channel, exchange: &str, n: usize) -> Result<(), BoxError> {
    let exchange: Arc<str> = exchange.into();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let ch = ch.clone();
        let exchange = Arc::clone(&exchange);
        tasks.spawn(async move {
            let confirm = ch
                .basic_publish(
                    (*exchange).into(),
                    KEY.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &BODY,
                    raw_properties(i),
                )
                .await?;
            let confirmation = confirm.await?;
            if !confirmation.is_ack() || confirmation.take_message().is_some() {
                return Err::<(), BoxError>("raw publish not confirmed".into());
            }
            Ok(())
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        outcome??;
    }
    Ok(())
}
