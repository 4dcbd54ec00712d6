//! RPC rows: round-trip latency and calls per second, raw lapin vs lepus's `RpcClient` and
//! `RpcServer` (both on direct reply-to), in the same run, against the same exchange.
//!
//! - sequential calls: p50, p99 and calls/s, raw lapin and lepus measured in alternating
//!   blocks so that load from other processes hits both alike;
//! - 64 calls in flight: calls/s (lepus: 64 tasks sharing one client; raw lapin: a window
//!   of 64 on one channel), best of two rounds;
//! - `gather` of four requests of four types (four servers) vs one call, with handlers that
//!   answer at once and with handlers that sleep 20 ms (then the ratio shows the overlap).
//!
//! Every request body is [`REQUEST_BYTES`] long on both sides and both servers echo. The
//! in-process broker's sequential row comes first (it needs no RabbitMQ).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};
use lepus::core::envelope::{encode_json_raw, Metadata, RawEnvelope, Text};
use lepus::rpc::{RpcServerHandle, RpcServerStats};
use lepus::{
    AmqpConfig, AmqpTransport, Context, HandlerError, InProcessBroker, Message, QueueSpec,
    ReplyTransport, Request, RpcClient, RpcServer, RpcServerConfig, Transport, DIRECT_REPLY_TO,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::rpc_raw::{self, RawClient};
use super::usage::{broker_pid, cpu_of, Usage};
use super::BoxError;

/// Size of every request body, lepus's JSON envelope and raw lapin's bytes alike.
const REQUEST_BYTES: usize = 256;
/// Sequential calls measured per side, in [`BLOCKS`] alternating blocks.
const SEQUENTIAL: usize = 2_000;
const BLOCKS: usize = 8;
const WARM_UP: usize = 200;
const IN_FLIGHT: usize = 64;
/// Calls per in-flight round (a multiple of [`IN_FLIGHT`]).
const IN_FLIGHT_CALLS: usize = 10_240;
const GATHERS: usize = 1_000;
const SLOW_GATHERS: usize = 200;
const SLOW_MS: u64 = 20;
const PREFETCH: u16 = 128;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The request of the sequential and in-flight rows; the server echoes `note`.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(routing_key = "rpcb.echo", reply = String, reply_type = "BenchEchoed")]
pub struct BenchEcho {
    note: String,
}

/// The same request sent by lepus's client to the raw lapin server, which echoes the whole
/// envelope: the reply's payload is the request's.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BenchEchoToRaw {
    note: String,
}

/// What the raw server's echo of a [`BenchEchoToRaw`] decodes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note {
    note: String,
}

impl Message for BenchEchoToRaw {
    const TYPE: &'static str = BenchEcho::TYPE;
    const ROUTING_KEY: &'static str = "rpcb.raw";
}

impl Request for BenchEchoToRaw {
    type Reply = Note;
    const REPLY_TYPE: &'static str = BenchEcho::REPLY_TYPE;
}

/// A gather request: its handler sleeps `sleep_ms`, then echoes `note`.
trait Work: Request<Reply = String> + Clone {
    fn new(note: String, sleep_ms: u64) -> Self;
    fn into_work(self) -> (String, u64);
}

macro_rules! gather_request {
    ($name:ident, $ty:literal, $key:literal, $reply:literal) => {
        #[derive(Debug, Clone, Serialize, Deserialize)]
        struct $name {
            note: String,
            sleep_ms: u64,
        }
        impl Message for $name {
            const TYPE: &'static str = $ty;
            const ROUTING_KEY: &'static str = $key;
        }
        impl Request for $name {
            type Reply = String;
            const REPLY_TYPE: &'static str = $reply;
        }
        impl Work for $name {
            fn new(note: String, sleep_ms: u64) -> Self {
                $name { note, sleep_ms }
            }
            fn into_work(self) -> (String, u64) {
                (self.note, self.sleep_ms)
            }
        }
    };
}

gather_request!(GetAds, "BenchGetAds", "rpcb.ads", "BenchAds");
gather_request!(
    GetMessages,
    "BenchGetMessages",
    "rpcb.messages",
    "BenchMessages"
);
gather_request!(GetWallet, "BenchGetWallet", "rpcb.wallet", "BenchWallet");
gather_request!(GetStats, "BenchGetStats", "rpcb.stats", "BenchStats");

type Gather4 = (GetAds, GetMessages, GetWallet, GetStats);

fn gather_set(note: &str, sleep_ms: u64) -> Gather4 {
    let n = || note.to_owned();
    (
        Work::new(n(), sleep_ms),
        Work::new(n(), sleep_ms),
        Work::new(n(), sleep_ms),
        Work::new(n(), sleep_ms),
    )
}

/// The envelope lepus's client publishes for `request` (as its `encode_request` does).
fn request_body<R: Request>(request: &R) -> Result<Vec<u8>, BoxError> {
    let payload = serde_json::to_vec(request)?;
    let correlation_id = format!("{:032x}", u128::MAX);
    let envelope = RawEnvelope {
        payload: &payload,
        metadata: Metadata {
            class_name: Text::plain(R::TYPE),
            retry: R::retry_policy().into_metadata(),
            response_queue: Some(Text::plain(DIRECT_REPLY_TO)),
            correlation_id: Some(Text::plain(&correlation_id)),
        },
    };
    let mut out = vec![0; payload.len() + 2048];
    let len = encode_json_raw(&envelope, &mut out).map_err(|e| format!("encode: {e}"))?;
    out.truncate(len);
    Ok(out)
}

/// A note that makes a [`BenchEcho`] request exactly [`REQUEST_BYTES`] long.
fn note() -> Result<String, BoxError> {
    let empty = request_body(&BenchEcho {
        note: String::new(),
    })?
    .len();
    let len = REQUEST_BYTES
        .checked_sub(empty)
        .ok_or("REQUEST_BYTES is smaller than an empty envelope")?;
    let note = "x".repeat(len);
    if request_body(&BenchEcho { note: note.clone() })?.len() != REQUEST_BYTES {
        return Err("request size does not add up".into());
    }
    Ok(note)
}

/// One table row.
struct Row {
    name: &'static str,
    calls: usize,
    p50: Option<Duration>,
    p99: Option<Duration>,
    rate: f64,
    ratio: f64,
}

/// Latencies of one scenario.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    /// The `p`-th percentile (nearest rank); zero when empty.
    fn percentile(&self, p: usize) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = (sorted.len() * p).div_ceil(100).max(1);
        sorted.get(rank - 1).copied().unwrap_or_default()
    }

    /// Calls per second, one after another.
    fn rate(&self) -> f64 {
        let total: Duration = self.0.iter().sum();
        self.0.len() as f64 / total.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn row(&self, name: &'static str, ratio: f64) -> Row {
        Row {
            name,
            calls: self.0.len(),
            p50: Some(self.percentile(50)),
            p99: Some(self.percentile(99)),
            rate: self.rate(),
            ratio,
        }
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
}

async fn timed<F: Future<Output = Result<(), BoxError>>>(f: F) -> Result<Duration, BoxError> {
    let started = Instant::now();
    f.await?;
    Ok(started.elapsed())
}

/// Runs every RPC scenario and prints the tables.
pub async fn run(config: &AmqpConfig) -> Result<(), BoxError> {
    let note = note()?;
    in_process(&note).await?;

    let raw = Arc::new(Connection::connect(&config.addr, ConnectionProperties::default()).await?);
    let ours = Arc::new(AmqpTransport::connect(config.clone()).await?);
    let suffix = std::process::id();
    let exchange = format!("lepus-bench-rpc-{suffix}");
    let prefix = format!("lepus-bench-rpc-{suffix}");
    ours.declare_exchange(&exchange).await?;

    let raw_queue = format!("{prefix}-raw");
    ours.declare_queue(&QueueSpec::new(&raw_queue, &exchange).bind("rpcb.raw"))
        .await?;
    // Four consumers, as lepus's gather rows have four servers.
    let mut raw_servers = Vec::new();
    for _ in 0..4 {
        raw_servers.push(rpc_raw::start_server(&raw, &raw_queue, PREFETCH).await?);
    }
    let mut servers = vec![echo_server(&ours, &format!("{prefix}-echo"), &exchange).await?];
    let queue = |i: usize| format!("{prefix}-g{i}");
    servers.push(gather_server::<GetAds>(&ours, queue(0), &exchange).await?);
    servers.push(gather_server::<GetMessages>(&ours, queue(1), &exchange).await?);
    servers.push(gather_server::<GetWallet>(&ours, queue(2), &exchange).await?);
    servers.push(gather_server::<GetStats>(&ours, queue(3), &exchange).await?);
    let client = RpcClient::new(Arc::clone(&ours), &exchange).await?;

    // From a spawned task, as a request handler calls (hyper and axum spawn one per
    // connection), for both sides alike: `main`'s own thread is not a runtime worker, and
    // waking it would add a thread hand-off to every reply.
    let outcome = {
        let (raw, client, exchange, note) = (
            Arc::clone(&raw),
            client.clone(),
            exchange.clone(),
            note.clone(),
        );
        tokio::spawn(async move {
            measure(&raw, &client, &exchange, &note)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(BoxError::from)
        .and_then(|measured| measured.map_err(BoxError::from))
    };

    let mut stats = Vec::new();
    for server in servers {
        stats.push(server.shutdown().await);
    }
    for server in raw_servers {
        server.abort();
    }
    drop(client);
    let mut queues = vec![raw_queue, format!("{prefix}-echo")];
    queues.extend((0..4).map(queue));
    for queue in &queues {
        ours.delete_queue(queue).await?;
        ours.delete_queue(&format!("{queue}.dead")).await?;
    }
    ours.delete_exchange(&exchange).await?;
    ours.close().await?;
    raw.close(200, "bye".into()).await?;
    outcome?;
    check_servers(&stats)
}

fn check_servers(stats: &[RpcServerStats]) -> Result<(), BoxError> {
    for s in stats {
        if s.remote_errors != 0 || s.reply_failures != 0 || s.panics != 0 {
            return Err(format!("RPC server reported failures: {s:?}").into());
        }
    }
    Ok(())
}

/// Everything measured against RabbitMQ.
async fn measure(
    raw: &Arc<Connection>,
    client: &RpcClient<AmqpTransport>,
    exchange: &str,
    note: &str,
) -> Result<(), BoxError> {
    let echo = BenchEcho {
        note: note.to_owned(),
    };
    let body = request_body(&echo)?;
    let ([raw_seq, raw_to_ours, ours_to_raw, ours_seq, raw_confirms], spent) =
        sequential(raw, client, exchange, &echo, &body).await?;

    // 64 in flight, best of two rounds after a warm-up round.
    let (mut raw_best, mut ours_best) = (Duration::MAX, Duration::MAX);
    for round in 0..3 {
        let mut window = RawClient::open(raw, exchange, "rpcb.raw", body.clone(), false).await?;
        let raw_took = window.windowed(IN_FLIGHT_CALLS, IN_FLIGHT).await?;
        window.close().await?;
        let ours_took = in_flight(client, &echo, IN_FLIGHT_CALLS).await?;
        if round > 0 {
            raw_best = raw_best.min(raw_took);
            ours_best = ours_best.min(ours_took);
        }
    }

    // Gather of four vs one call.
    let mut raw_client = RawClient::open(raw, exchange, "rpcb.raw", body.clone(), false).await?;
    let (raw_one, raw_four) = raw_four_vs_one(&mut raw_client, GATHERS).await?;
    raw_client.close().await?;
    let (one, four) = gather_vs_one(client, note, 0, GATHERS).await?;
    let (slow_one, slow_four) = gather_vs_one(client, note, SLOW_MS, SLOW_GATHERS).await?;

    let p50 = |s: &Samples| s.percentile(50);
    let vs_raw = |s: &Samples| ratio(p50(s), p50(&raw_seq));
    print_table(
        &format!(
            "RPC, sequential calls ({REQUEST_BYTES}-byte requests, echo; ratio = p50 / raw lapin p50)"
        ),
        &[
            raw_seq.row("raw lapin client -> raw lapin server", 1.0),
            raw_to_ours.row("raw lapin client -> lepus RpcServer", vs_raw(&raw_to_ours)),
            ours_to_raw.row("lepus RpcClient -> raw lapin server", vs_raw(&ours_to_raw)),
            ours_seq.row("lepus RpcClient -> lepus RpcServer", vs_raw(&ours_seq)),
            raw_confirms.row(
                "raw client awaiting confirms -> raw server",
                vs_raw(&raw_confirms),
            ),
        ],
    );
    print_spent(
        &[
            "raw lapin client -> raw lapin server",
            "raw lapin client -> lepus RpcServer",
            "lepus RpcClient -> raw lapin server",
            "lepus RpcClient -> lepus RpcServer",
            "raw client awaiting confirms -> raw server",
        ],
        &spent,
        SEQUENTIAL,
    );
    let rate = |took: Duration| IN_FLIGHT_CALLS as f64 / took.as_secs_f64();
    let in_flight_row = |name, took: Duration, sequential: &Samples| Row {
        name,
        calls: IN_FLIGHT_CALLS,
        p50: None,
        p99: None,
        rate: rate(took),
        ratio: rate(took) / sequential.rate(),
    };
    print_table(
        "RPC, 64 calls in flight (ratio = calls/s / the same client's sequential calls/s)",
        &[
            in_flight_row("raw lapin, window of 64 on one channel", raw_best, &raw_seq),
            in_flight_row("lepus, 64 tasks on one RpcClient", ours_best, &ours_seq),
        ],
    );
    let vs = |s: &Samples, base: &Samples| ratio(p50(s), p50(base));
    print_table(
        "RPC, gather of 4 (4 servers) vs one call (ratio = p50 / the same side's one call p50)",
        &[
            raw_one.row("raw lapin: one call, no delay", 1.0),
            raw_four.row("raw lapin: 4 at once, no delay", vs(&raw_four, &raw_one)),
            one.row("lepus: one call, no delay", 1.0),
            four.row("lepus: gather of 4, no delay", vs(&four, &one)),
            slow_one.row("lepus: one call, handler sleeps 20 ms", 1.0),
            slow_four.row(
                "lepus: gather of 4, handlers sleep 20 ms",
                vs(&slow_four, &slow_one),
            ),
        ],
    );
    print_targets(&[
        (
            "lepus sequential p50 / raw lapin p50",
            vs_raw(&ours_seq),
            Goal::AtMost(1.1),
        ),
        (
            "lepus 64 in flight / lepus sequential, calls/s",
            rate(ours_best) / ours_seq.rate(),
            Goal::AtLeast(5.0),
        ),
        (
            "gather of 4 / one call, p50 (no delay)",
            vs(&four, &one),
            Goal::AtMost(1.5),
        ),
        (
            "gather of 4 / one call, p50 (handlers sleep 20 ms)",
            vs(&slow_four, &slow_one),
            Goal::AtMost(1.5),
        ),
    ]);
    Ok(())
}

/// What the calls of one sequential row used, summed over its blocks: this process's CPU and
/// context switches (clients and servers run here), and the broker's CPU.
#[derive(Default, Clone, Copy)]
struct Spent {
    process: Usage,
    broker: Duration,
}

/// Sequential calls of each client to each server, in alternating blocks after a warm-up:
/// raw -> raw, raw -> lepus, lepus -> raw, lepus -> lepus, and raw -> raw awaiting each
/// request's confirmation before its reply (as lepus's client does). Besides the latencies,
/// what each row's blocks used ([`Spent`]).
async fn sequential(
    raw: &Connection,
    client: &RpcClient<AmqpTransport>,
    exchange: &str,
    echo: &BenchEcho,
    body: &[u8],
) -> Result<([Samples; 5], [Spent; 5]), BoxError> {
    let to_raw = BenchEchoToRaw {
        note: echo.note.clone(),
    };
    let open = |key, confirms| RawClient::open(raw, exchange, key, body.to_vec(), confirms);
    let mut raw_client = open("rpcb.raw", false).await?;
    let mut raw_to_ours = open(BenchEcho::ROUTING_KEY, false).await?;
    let mut raw_confirms = open("rpcb.raw", true).await?;
    for _ in 0..WARM_UP {
        raw_client.call().await?;
        raw_to_ours.call().await?;
        call_raw_server(client, &to_raw).await?;
        call(client, echo).await?;
        raw_confirms.call().await?;
    }
    let mut seq: [Samples; 5] = Default::default();
    let mut spent = [Spent::default(); 5];
    let broker = broker_pid();
    let broker_cpu = || broker.as_deref().and_then(cpu_of).unwrap_or_default();
    let block = SEQUENTIAL / BLOCKS;
    for _ in 0..BLOCKS {
        for (row, spent) in spent.iter_mut().enumerate() {
            let (before, broker_before) = (Usage::now(), broker_cpu());
            for _ in 0..block {
                let took = match row {
                    0 => timed(raw_client.call()).await?,
                    1 => timed(raw_to_ours.call()).await?,
                    2 => call_raw_server(client, &to_raw).await?,
                    3 => call(client, echo).await?,
                    _ => timed(raw_confirms.call()).await?,
                };
                seq[row].0.push(took);
            }
            let used = Usage::now().since(before);
            spent.process.cpu += used.cpu;
            spent.process.switches += used.switches;
            spent.broker += broker_cpu().saturating_sub(broker_before);
        }
    }
    raw_client.close().await?;
    raw_to_ours.close().await?;
    raw_confirms.close().await?;
    Ok((seq, spent))
}

/// Where a sequential call's time goes, per call of each row: this process's CPU (client and
/// server both run here) and context switches (each hop from one thread to another parks one
/// and wakes another), and the broker's CPU.
fn print_spent(names: &[&str], spent: &[Spent], calls: usize) {
    println!(
        "\nRPC, sequential calls: resources per call (this process holds clients and servers)"
    );
    println!(
        "| {:<42} | {:>12} | {:>17} | {:>11} |",
        "scenario", "process µs", "context switches", "broker µs"
    );
    println!("|{:-<44}|{:->14}|{:->19}|{:->13}|", "", "", "", "");
    let per = |d: Duration| d.as_secs_f64() * 1e6 / calls as f64;
    for (name, s) in names.iter().zip(spent) {
        println!(
            "| {:<42} | {:>12.1} | {:>17.2} | {:>11.1} |",
            name,
            per(s.process.cpu),
            s.process.switches as f64 / calls as f64,
            per(s.broker)
        );
    }
}

/// One lepus call of `request`; returns how long it took.
async fn call<T: ReplyTransport + 'static>(
    client: &RpcClient<T>,
    request: &BenchEcho,
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let reply = client.call(request, TIMEOUT).await?;
    let took = started.elapsed();
    if reply.len() != request.note.len() {
        return Err("echo reply of the wrong size".into());
    }
    Ok(took)
}

/// One lepus call to the raw lapin server.
async fn call_raw_server(
    client: &RpcClient<AmqpTransport>,
    request: &BenchEchoToRaw,
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let reply = client.call(request, TIMEOUT).await?;
    let took = started.elapsed();
    if reply.note.len() != request.note.len() {
        return Err("echo reply of the wrong size".into());
    }
    Ok(took)
}

/// `n` calls from [`IN_FLIGHT`] tasks sharing `client`; returns the time taken.
async fn in_flight(
    client: &RpcClient<AmqpTransport>,
    request: &BenchEcho,
    n: usize,
) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (client, request) = (client.clone(), request.clone());
        tasks.spawn(async move {
            for _ in 0..n / IN_FLIGHT {
                call(&client, &request).await?;
            }
            Ok::<(), BoxError>(())
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        outcome??;
    }
    Ok(started.elapsed())
}

/// `n` single calls and `n` gathers of four, in alternating blocks of up to 50.
async fn gather_vs_one(
    client: &RpcClient<AmqpTransport>,
    note: &str,
    sleep_ms: u64,
    n: usize,
) -> Result<(Samples, Samples), BoxError> {
    let set = gather_set(note, sleep_ms);
    let (mut one, mut four) = (Samples::default(), Samples::default());
    for _ in 0..(n / 10).min(50) {
        client.call(&set.0, TIMEOUT).await?;
        gather(client, &set).await?;
    }
    let block = n.clamp(1, 50);
    for _ in 0..n / block {
        for _ in 0..block {
            let started = Instant::now();
            client.call(&set.0, TIMEOUT).await?;
            one.0.push(started.elapsed());
        }
        for _ in 0..block {
            four.0.push(gather(client, &set).await?);
        }
    }
    Ok((one, four))
}

/// The raw baseline of a gather: `n` single calls and `n` rounds of four requests at once
/// (no handler delay), in alternating blocks of up to 50.
async fn raw_four_vs_one(
    raw_client: &mut RawClient,
    n: usize,
) -> Result<(Samples, Samples), BoxError> {
    let (mut one, mut four) = (Samples::default(), Samples::default());
    for _ in 0..(n / 10).min(50) {
        raw_client.call().await?;
        raw_client.windowed(4, 4).await?;
    }
    let block = n.clamp(1, 50);
    for _ in 0..n / block {
        for _ in 0..block {
            one.0.push(timed(raw_client.call()).await?);
        }
        for _ in 0..block {
            four.0.push(raw_client.windowed(4, 4).await?);
        }
    }
    Ok((one, four))
}

async fn gather(client: &RpcClient<AmqpTransport>, set: &Gather4) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let (a, b, c, d) = client
        .gather((&set.0, &set.1, &set.2, &set.3), TIMEOUT)
        .await;
    let took = started.elapsed();
    a?;
    b?;
    c?;
    d?;
    Ok(took)
}

fn server_config(queue: &str, exchange: &str, key: &str) -> RpcServerConfig {
    RpcServerConfig::new(queue, exchange)
        .bind(key)
        .prefetch(PREFETCH)
        .concurrency(usize::from(PREFETCH))
}

/// The echo server of the sequential and in-flight rows.
async fn echo_server<T>(
    t: &Arc<T>,
    queue: &str,
    exchange: &str,
) -> Result<RpcServerHandle, BoxError>
where
    T: Transport + 'static,
    T::Subscription: 'static,
{
    let config = server_config(queue, exchange, BenchEcho::ROUTING_KEY);
    Ok(RpcServer::new(Arc::clone(t), config)
        .with(|r: BenchEcho, _| async move { Ok(r.note) })
        .start()
        .await?)
}

/// A server of one gather type on a queue of its own.
async fn gather_server<R: Work>(
    t: &Arc<AmqpTransport>,
    queue: String,
    exchange: &str,
) -> Result<RpcServerHandle, BoxError> {
    let config = server_config(&queue, exchange, R::ROUTING_KEY);
    Ok(RpcServer::new(Arc::clone(t), config)
        .with(|r: R, _: Context| async move {
            let (note, sleep_ms) = r.into_work();
            if sleep_ms > 0 {
                tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
            }
            Ok::<_, HandlerError>(note)
        })
        .start()
        .await?)
}

/// The in-process broker's sequential row (no network, no persistence).
async fn in_process(note: &str) -> Result<(), BoxError> {
    let broker = Arc::new(InProcessBroker::new());
    let exchange = "lepus-bench-rpc";
    broker.declare_exchange(exchange).await?;
    let server = echo_server(&broker, "lepus-bench-rpc-echo", exchange).await?;
    let client = RpcClient::new(Arc::clone(&broker), exchange).await?;
    let request = BenchEcho {
        note: note.to_owned(),
    };
    for _ in 0..WARM_UP {
        call(&client, &request).await?;
    }
    let mut samples = Samples::default();
    for _ in 0..SEQUENTIAL {
        samples.0.push(call(&client, &request).await?);
    }
    drop(client);
    check_servers(&[server.shutdown().await])?;
    print_table(
        "in-process broker: RPC, sequential calls",
        &[samples.row("lepus RpcClient::call", 1.0)],
    );
    Ok(())
}

fn micros(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.0}", d.as_secs_f64() * 1e6),
    )
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "| {:<42} | {:>6} | {:>9} | {:>9} | {:>8} | {:>6} |",
        "scenario", "calls", "p50 µs", "p99 µs", "calls/s", "ratio"
    );
    println!(
        "|{:-<44}|{:->8}|{:->11}|{:->11}|{:->10}|{:->8}|",
        "", "", "", "", "", ""
    );
    for row in rows {
        println!(
            "| {:<42} | {:>6} | {:>9} | {:>9} | {:>8.0} | {:>5.2}x |",
            row.name,
            row.calls,
            micros(row.p50),
            micros(row.p99),
            row.rate,
            row.ratio
        );
    }
}

/// A target: the measured ratio must be at most, or at least, this.
#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtMost(limit) => value <= limit,
            Goal::AtLeast(limit) => value >= limit,
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::AtMost(limit) => write!(f, "<= {limit:.2}x"),
            Goal::AtLeast(limit) => write!(f, ">= {limit:.2}x"),
        }
    }
}

fn print_targets(targets: &[(&str, f64, Goal)]) {
    println!("\nRPC targets");
    println!(
        "| {:<50} | {:>8} | {:>8} | {:>7} |",
        "target", "measured", "goal", "verdict"
    );
    println!("|{:-<52}|{:->10}|{:->10}|{:->9}|", "", "", "", "");
    for (name, value, goal) in targets {
        let verdict = if goal.met(*value) { "PASS" } else { "MISS" };
        let goal = goal.to_string();
        println!("| {name:<50} | {value:>7.2}x | {goal:>8} | {verdict:>7} |");
    }
}
