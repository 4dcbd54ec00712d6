//! Throughput against the broker at `AMQP_ADDR`, raw lapin vs lepus, in the same run.
//!
//! `cargo run --release -p lepus-bench --bin bench [messages] [--only messages|rpc]` (default
//! 20,000 messages; without `--only`, both parts run). Each scenario runs
//! twice; the better run counts. Messages are 256-byte persistent bodies on a durable topic
//! exchange bound to a durable classic queue, mandatory, with the same properties on both
//! sides.
//!
//! The in-process broker's throughput is measured first, with the same bodies, properties
//! and topology (it needs no broker, so its table prints even when RabbitMQ is down).
//!
//! The RPC part (`bench/rpc.rs`) follows: call latency and calls per second, raw lapin vs
//! lepus, in flight and gathered.
//!
//! `--only delay` (not part of the default run) compares delayed and plain publishes
//! (`bench/delay.rs`, 3,000 messages per round unless a count is given).
//!
//! `--only rate` (not part of the default run either): the achieved rate of a handler limited
//! to 10/s under 200 queued messages (`bench/rate.rs`).
//!
//! `--only cluster` (not part of the default run): publish and consume on a quorum queue of
//! the 3-node test cluster (`bench/cluster.rs`, `RMQ_CLUSTER_URLS`, 10,000 messages per form
//! and round unless a count is given).
//!
//! `--only cost` (not part of the default run): client CPU per message and rates, each Lepus
//! row beside the best raw lapin form, interleaved rounds (`bench/cost.rs`; 20,000 messages
//! unless a count is given; `--rounds R`, `--size BYTES` for the consume rows' payload,
//! `--rows a,b,..`; `--row NAME` and `--fill` for instruction counts, see
//! `cost_instructions.sh`).
#![forbid(unsafe_code)]

#[path = "cluster.rs"]
mod cluster;
#[path = "cost.rs"]
mod cost;
#[path = "delay.rs"]
mod delay;
#[path = "rate.rs"]
mod rate;
#[path = "rpc.rs"]
mod rpc;
#[path = "rpc_raw.rs"]
mod rpc_raw;
#[path = "spread.rs"]
mod spread;
#[path = "typed.rs"]
mod typed;
#[path = "usage.rs"]
mod usage;

use std::error::Error;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions,
};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use lepus::{
    AmqpConfig, AmqpTransport, InProcessBroker, Properties, Publication, QueueSpec, Transport,
};

type BoxError = Box<dyn Error + Send + Sync>;

const BODY: [u8; 256] = [b'x'; 256];
const KEY: &str = "bench.msg";
const PREFETCH: u16 = 500;

struct Row {
    name: &'static str,
    n: usize,
    took: Duration,
}

impl Row {
    fn rate(&self) -> f64 {
        self.n as f64 / self.took.as_secs_f64()
    }
}

/// What to run: `[messages] [--only messages|rpc|delay|rate|cluster|cost] [cost options]`.
struct Options {
    n: Option<usize>,
    messages: bool,
    rpc: bool,
    delay: bool,
    rate: bool,
    cluster: bool,
    cost: bool,
    rounds: usize,
    size: Option<usize>,
    row: Option<String>,
    fill: bool,
    rows: Option<Vec<String>>,
}

impl Options {
    fn parse() -> Result<Self, BoxError> {
        let mut options = Options {
            n: None,
            messages: true,
            rpc: true,
            delay: false,
            rate: false,
            cluster: false,
            cost: false,
            rounds: 3,
            size: None,
            row: None,
            fill: false,
            rows: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--only" => {
                    match args.next().as_deref() {
                        Some("messages") => options.rpc = false,
                        Some("rpc") => options.messages = false,
                        Some("delay") => options.delay = true,
                        Some("rate") => options.rate = true,
                        Some("cluster") => options.cluster = true,
                        Some("cost") => options.cost = true,
                        _ => return Err(
                            "--only takes `messages`, `rpc`, `delay`, `rate`, `cluster` or `cost`"
                                .into(),
                        ),
                    }
                }
                "--rounds" => options.rounds = args.next().ok_or("--rounds R")?.parse()?,
                "--size" => options.size = Some(args.next().ok_or("--size BYTES")?.parse()?),
                "--row" => options.row = Some(args.next().ok_or("--row NAME")?),
                "--rows" => {
                    let rows = args.next().ok_or("--rows a,b")?;
                    options.rows = Some(rows.split(',').map(str::to_owned).collect());
                }
                "--fill" => options.fill = true,
                count => options.n = Some(count.parse()?),
            }
        }
        Ok(options)
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let options = Options::parse()?;
    if options.cluster {
        return cluster::run(options.n.unwrap_or(10_000)).await;
    }
    let config = AmqpConfig::from_env()?;
    if options.delay {
        return delay::run(&config, options.n.unwrap_or(3_000)).await;
    }
    if options.rate {
        return rate::run(&config).await;
    }
    if options.cost {
        let cost = cost::CostOptions {
            n: options.n.unwrap_or(20_000),
            rounds: options.rounds.max(1),
            size: options.size,
            row: options.row,
            fill: options.fill,
            rows: options.rows,
        };
        return cost::run(&config, cost).await;
    }
    if !options.messages {
        return rpc::run(&config).await;
    }
    let n = options.n.unwrap_or(20_000);
    in_process(n).await?;

    let raw = Connection::connect(&config.addr, ConnectionProperties::default()).await?;
    let ours = Arc::new(AmqpTransport::connect(config.clone()).await?);

    let suffix = std::process::id();
    let exchange = format!("lepus-bench-{suffix}");
    let spec = QueueSpec::new(format!("lepus-bench-{suffix}"), &exchange).bind("bench.#");
    ours.declare_exchange(&exchange).await?;
    ours.declare_queue(&spec).await?;
    let queue = spec.name.clone();

    let raw_pub = raw.create_channel().await?;
    raw_pub
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    let worker_queue = format!("lepus-bench-{suffix}-worker");
    let worker_config = typed::worker_config(&worker_queue, &exchange, PREFETCH);
    typed::declare_worker(&ours, &worker_config).await?;
    // The same worker with operational events on (lepus::events), a watcher queue bound so
    // that the batches are routed as they would be with a console running.
    let events_watch = format!("lepus-bench-{suffix}-events");
    ours.declare_exchange(lepus::events::DEFAULT_EVENTS_EXCHANGE)
        .await?;
    ours.declare_queue(
        &lepus::QueueSpec::new(&events_watch, lepus::events::DEFAULT_EVENTS_EXCHANGE).bind("#"),
    )
    .await?;
    let events =
        lepus::events::Events::start(Arc::clone(&ours), lepus::events::EventsConfig::default());

    let mut publish_rows = Vec::new();
    let mut consume_rows = Vec::new();
    for _round in 0..2 {
        purge(&raw, &queue).await?;
        let took = time(raw_publish(&raw_pub, &exchange, n)).await?;
        keep_best(
            &mut publish_rows,
            Row {
                name: "raw lapin: send all, await confirms",
                n,
                took,
            },
        );

        purge(&raw, &queue).await?;
        let took = time(lepus_publish_batch(&ours, &exchange, n)).await?;
        keep_best(
            &mut publish_rows,
            Row {
                name: "lepus publish_batch",
                n,
                took,
            },
        );

        purge(&raw, &queue).await?;
        let took = time(lepus_publish_concurrent(&ours, &exchange, n)).await?;
        keep_best(
            &mut publish_rows,
            Row {
                name: "lepus publish, 1 task per message",
                n,
                took,
            },
        );

        purge(&raw, &queue).await?;
        let took = typed::publisher_send_batch(&ours, &exchange, n).await?;
        keep_best(
            &mut publish_rows,
            Row {
                name: "lepus Publisher::send_batch (typed)",
                n,
                took,
            },
        );

        purge(&raw, &queue).await?;
        let took = typed::publisher_send(&ours, &exchange, n).await?;
        keep_best(
            &mut publish_rows,
            Row {
                name: "lepus Publisher::send, 1 task per message",
                n,
                took,
            },
        );

        purge(&raw, &queue).await?;
        raw_publish(&raw_pub, &exchange, n).await?;
        let took = time(raw_consume(&raw, &queue, n, 1)).await?;
        keep_best(
            &mut consume_rows,
            Row {
                name: "raw lapin: prefetch 500, ack each",
                n,
                took,
            },
        );

        purge(&raw, &queue).await?;
        raw_publish(&raw_pub, &exchange, n).await?;
        let took = time(lepus_consume(&ours, &queue, n, 1)).await?;
        keep_best(
            &mut consume_rows,
            Row {
                name: "lepus: prefetch 500, ack each",
                n,
                took,
            },
        );

        purge(&raw, &queue).await?;
        raw_publish(&raw_pub, &exchange, n).await?;
        let took = time(lepus_consume(&ours, &queue, n, 50)).await?;
        keep_best(
            &mut consume_rows,
            Row {
                name: "lepus: prefetch 500, ack_multiple per 50",
                n,
                took,
            },
        );

        typed::fill_worker_queue(&ours, &exchange, n).await?;
        let took = typed::worker_consume(&ours, worker_config.clone(), n).await?;
        keep_best(
            &mut consume_rows,
            Row {
                name: "lepus Worker, no-op handler (prefetch 500)",
                n,
                took,
            },
        );

        typed::fill_worker_queue(&ours, &exchange, n).await?;
        let config = worker_config.clone().events(events.clone());
        let took = typed::worker_consume(&ours, config, n).await?;
        keep_best(
            &mut consume_rows,
            Row {
                name: "lepus Worker, no-op handler, events on (prefetch 500)",
                n,
                took,
            },
        );
    }
    println!("events: {:?}", events.stats());

    print_table("publish with confirms", &publish_rows);
    print_table("consume + ack", &consume_rows);

    typed::cleanup(&ours, &worker_queue).await?;
    ours.delete_queue(&events_watch).await?;
    ours.delete_queue(&format!("{events_watch}.dead")).await?;
    ours.delete_queue(&queue).await?;
    ours.delete_queue(&format!("{queue}.dead")).await?;
    ours.delete_exchange(&exchange).await?;
    ours.close().await?;
    raw.close(200, "bye".into()).await?;
    if options.rpc {
        rpc::run(&config).await?;
    }
    Ok(())
}

async fn time<F: Future<Output = Result<(), BoxError>>>(f: F) -> Result<Duration, BoxError> {
    let started = Instant::now();
    f.await?;
    Ok(started.elapsed())
}

fn keep_best(rows: &mut Vec<Row>, row: Row) {
    match rows.iter_mut().find(|r| r.name == row.name) {
        Some(existing) if existing.took <= row.took => {}
        Some(existing) => *existing = row,
        None => rows.push(row),
    }
}

fn print_table(title: &str, rows: &[Row]) {
    let base = rows.first().map(Row::rate).unwrap_or(1.0);
    println!("\n{title}");
    println!(
        "| {:<42} | {:>8} | {:>9} | {:>10} | {:>6} |",
        "scenario", "messages", "seconds", "msg/s", "ratio"
    );
    println!(
        "|{:-<44}|{:->10}|{:->11}|{:->12}|{:->8}|",
        "", "", "", "", ""
    );
    for row in rows {
        println!(
            "| {:<42} | {:>8} | {:>9.3} | {:>10.0} | {:>5.2}x |",
            row.name,
            row.n,
            row.took.as_secs_f64(),
            row.rate(),
            row.rate() / base
        );
    }
}

async fn purge(raw: &Connection, queue: &str) -> Result<(), BoxError> {
    let ch = raw.create_channel().await?;
    ch.queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;
    ch.close(200, "ok".into()).await?;
    Ok(())
}

fn raw_properties(i: usize) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(format!("raw-{i}").into())
        .with_timestamp(1_700_000_000)
        .with_type("Bench".into())
        .with_content_type("application/octet-stream".into())
}

async fn raw_publish(ch: &Channel, exchange: &str, n: usize) -> Result<(), BoxError> {
    let mut confirms = Vec::with_capacity(n);
    for i in 0..n {
        let confirm = ch
            .basic_publish(
                exchange.into(),
                KEY.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &BODY,
                raw_properties(i),
            )
            .await?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation = confirm.await?;
        if !confirmation.is_ack() || confirmation.take_message().is_some() {
            return Err("raw publish not confirmed".into());
        }
    }
    Ok(())
}

fn lepus_properties(i: usize) -> Properties {
    Properties::new()
        .with_message_id(format!("lepus-{i}"))
        .with_timestamp(1_700_000_000)
        .with_type("Bench")
        .with_content_type("application/octet-stream")
}

async fn lepus_publish_batch(t: &AmqpTransport, exchange: &str, n: usize) -> Result<(), BoxError> {
    let props: Vec<Properties> = (0..n).map(lepus_properties).collect();
    let batch: Vec<Publication<'_>> = props
        .iter()
        .map(|p| Publication::new(exchange, KEY, &BODY, p))
        .collect();
    for outcome in t.publish_batch(&batch).await? {
        outcome?;
    }
    Ok(())
}

async fn lepus_publish_concurrent(
    t: &Arc<AmqpTransport>,
    exchange: &str,
    n: usize,
) -> Result<(), BoxError> {
    let exchange: Arc<str> = exchange.into();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let t = Arc::clone(t);
        let exchange = Arc::clone(&exchange);
        tasks.spawn(async move {
            t.publish(Publication::new(
                &exchange,
                KEY,
                &BODY,
                &lepus_properties(i),
            ))
            .await
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        outcome??;
    }
    Ok(())
}

/// Raw lapin consuming `n` deliveries of `queue` (prefetch [`PREFETCH`]): acks each when
/// `ack_every` is 1, else an ack with `multiple` every `ack_every` deliveries and on the last.
async fn raw_consume(
    raw: &Connection,
    queue: &str,
    n: usize,
    ack_every: usize,
) -> Result<(), BoxError> {
    let (ch, mut consumer) = rpc_raw::consume(raw, queue, PREFETCH).await?;
    for i in 1..=n {
        let delivery = rpc_raw::next(&mut consumer).await?;
        if ack_every <= 1 || i % ack_every == 0 || i == n {
            let options = BasicAckOptions {
                multiple: ack_every > 1,
            };
            if !delivery.acker.ack(options).await? {
                return Err("raw ack lost".into());
            }
        }
    }
    ch.close(200, "ok".into()).await?;
    Ok(())
}

async fn lepus_consume(
    t: &AmqpTransport,
    queue: &str,
    n: usize,
    ack_every: usize,
) -> Result<(), BoxError> {
    let mut sub = t.consume(queue, PREFETCH).await?;
    for i in 1..=n {
        let delivery = sub.next().await.ok_or("subscription ended")??;
        if ack_every <= 1 {
            delivery.ack().await?;
        } else if i % ack_every == 0 || i == n {
            delivery.ack_multiple().await?;
        }
    }
    Ok(())
}

/// Publish and consume+ack throughput of the in-process broker.
async fn in_process(n: usize) -> Result<(), BoxError> {
    let broker = InProcessBroker::new();
    let exchange = "lepus-bench";
    let spec = QueueSpec::new("lepus-bench", exchange).bind("bench.#");
    broker.declare_exchange(exchange).await?;
    broker.declare_queue(&spec).await?;
    let queue = spec.name.as_str();

    let mut publish_rows = Vec::new();
    let mut consume_rows = Vec::new();
    for _round in 0..2 {
        broker.purge(queue)?;
        let took = time(in_process_publish(&broker, exchange, n)).await?;
        keep_best(
            &mut publish_rows,
            Row {
                name: "in-process publish, one at a time",
                n,
                took,
            },
        );

        broker.purge(queue)?;
        let took = time(in_process_publish_batch(&broker, exchange, n)).await?;
        keep_best(
            &mut publish_rows,
            Row {
                name: "in-process publish_batch",
                n,
                took,
            },
        );

        for (name, ack_every) in [
            ("in-process: prefetch 500, ack each", 1),
            ("in-process: prefetch 500, ack_multiple/50", 50),
        ] {
            broker.purge(queue)?;
            in_process_publish_batch(&broker, exchange, n).await?;
            let took = time(in_process_consume(&broker, queue, n, ack_every)).await?;
            keep_best(&mut consume_rows, Row { name, n, took });
        }
    }
    print_table("in-process broker: publish", &publish_rows);
    print_table("in-process broker: consume + ack", &consume_rows);
    Ok(())
}

async fn in_process_publish(b: &InProcessBroker, exchange: &str, n: usize) -> Result<(), BoxError> {
    for i in 0..n {
        let props = lepus_properties(i);
        b.publish(Publication::new(exchange, KEY, &BODY, &props))
            .await?;
    }
    Ok(())
}

async fn in_process_publish_batch(
    b: &InProcessBroker,
    exchange: &str,
    n: usize,
) -> Result<(), BoxError> {
    let props: Vec<Properties> = (0..n).map(lepus_properties).collect();
    let batch: Vec<Publication<'_>> = props
        .iter()
        .map(|p| Publication::new(exchange, KEY, &BODY, p))
        .collect();
    for outcome in b.publish_batch(&batch).await? {
        outcome?;
    }
    Ok(())
}

async fn in_process_consume(
    b: &InProcessBroker,
    queue: &str,
    n: usize,
    ack_every: usize,
) -> Result<(), BoxError> {
    let mut sub = b.consume(queue, PREFETCH).await?;
    for i in 1..=n {
        let delivery = sub.next().await.ok_or("subscription ended")??;
        if ack_every <= 1 {
            delivery.ack().await?;
        } else if i % ack_every == 0 || i == n {
            delivery.ack_multiple().await?;
        }
    }
    sub.cancel().await?;
    Ok(())
}
