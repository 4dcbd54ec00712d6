//! Rows for the typed API: `Publisher::send` / `send_batch` and a `Worker` with a no-op
//! handler, against the same broker and exchange as the raw lapin rows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::{
    AmqpTransport, Message, Publisher, Registry, RetryPolicy, Transport, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};

use super::BoxError;

/// A message for the publisher rows, routed to the raw rows' queue (`bench.#`).
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(routing_key = "bench.typed", retry = RetryPolicy::ignore)]
pub struct BenchMsg {
    note: String,
}

/// The same, routed to the worker's own queue (`benchw.#`).
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(routing_key = "benchw.msg", retry = RetryPolicy::ignore)]
pub struct WorkerMsg {
    note: String,
}

/// About 256 bytes of envelope, like the raw rows' bodies. (Not `format!("{i:0>150}")`: its
/// padding writes one char at a time, ~5,000 instructions a message that callgrind would
/// count against the typed rows.)
fn note(i: usize) -> String {
    let digits = i.to_string();
    let mut note = "0".repeat(150usize.saturating_sub(digits.len()));
    note.push_str(&digits);
    note
}

/// `Publisher::send`, one task per message (confirms pipeline across tasks).
pub async fn publisher_send(
    t: &Arc<AmqpTransport>,
    exchange: &str,
    n: usize,
) -> Result<Duration, BoxError> {
    let publisher = Publisher::new(Arc::clone(t), exchange);
    let messages: Vec<BenchMsg> = (0..n).map(|i| BenchMsg { note: note(i) }).collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for m in messages {
        let p = publisher.clone();
        tasks.spawn(async move { p.send(&m).await });
    }
    while let Some(outcome) = tasks.join_next().await {
        outcome??;
    }
    Ok(started.elapsed())
}

/// `Publisher::send_batch` of all messages.
pub async fn publisher_send_batch(
    t: &Arc<AmqpTransport>,
    exchange: &str,
    n: usize,
) -> Result<Duration, BoxError> {
    let publisher = Publisher::new(Arc::clone(t), exchange);
    let messages: Vec<BenchMsg> = (0..n).map(|i| BenchMsg { note: note(i) }).collect();
    let started = Instant::now();
    for outcome in publisher.send_batch(&messages).await? {
        outcome?;
    }
    Ok(started.elapsed())
}

/// The worker's queue config: prefetch 500 like the raw consumer.
pub fn worker_config(queue: &str, exchange: &str, prefetch: u16) -> WorkerConfig {
    WorkerConfig::new(queue, exchange)
        .bind("benchw.#")
        .prefetch(prefetch)
        .concurrency(usize::from(prefetch))
}

/// Declares the worker's queue, so that it can be filled before the worker starts.
pub async fn declare_worker(t: &Arc<AmqpTransport>, config: &WorkerConfig) -> Result<(), BoxError> {
    Worker::new(Arc::clone(t), config.clone(), Registry::new())
        .declare()
        .await?;
    Ok(())
}

/// Fills the worker's queue with `n` typed messages (not timed).
pub async fn fill_worker_queue(
    t: &Arc<AmqpTransport>,
    exchange: &str,
    n: usize,
) -> Result<(), BoxError> {
    let publisher = Publisher::new(Arc::clone(t), exchange);
    let messages: Vec<WorkerMsg> = (0..n).map(|i| WorkerMsg { note: note(i) }).collect();
    for outcome in publisher.send_batch(&messages).await? {
        outcome?;
    }
    Ok(())
}

/// Fills the worker's queue with `n` typed messages whose note is `size` bytes (`None`: the
/// usual ~256-byte envelope), in batches of at most 64 MiB (not timed).
pub async fn fill_worker_queue_sized(
    t: &Arc<AmqpTransport>,
    exchange: &str,
    n: usize,
    size: Option<usize>,
) -> Result<(), BoxError> {
    let Some(size) = size else {
        return fill_worker_queue(t, exchange, n).await;
    };
    let publisher = Publisher::new(Arc::clone(t), exchange);
    let chunk = ((64 << 20) / size.max(1)).clamp(1, 1_000);
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk);
        let messages: Vec<WorkerMsg> = (0..k)
            .map(|_| WorkerMsg {
                note: "x".repeat(size),
            })
            .collect();
        for outcome in publisher.send_batch(&messages).await? {
            outcome?;
        }
        left -= k;
    }
    Ok(())
}

/// A `Worker` with a no-op handler, from start (declare + consume) until its handler ran for
/// the `n`-th time (the last batched ack follows at once, as nothing is left in flight);
/// shutdown is not timed, and must find every message acked.
pub async fn worker_consume(
    t: &Arc<AmqpTransport>,
    config: WorkerConfig,
    n: usize,
) -> Result<Duration, BoxError> {
    worker_consume_as(t, config, n, Decode::Typed).await
}

/// How the worker bench's handler takes its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// Decoded into `WorkerMsg` by serde (`Registry::register`).
    Typed,
    /// Undecoded, as its JSON text (`Registry::register_raw`).
    Raw,
}

/// [`worker_consume`] with the handler taking its payload as `decode` says.
pub async fn worker_consume_as(
    t: &Arc<AmqpTransport>,
    config: WorkerConfig,
    n: usize,
    decode: Decode,
) -> Result<Duration, BoxError> {
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (h, d) = (Arc::clone(&handled), Arc::clone(&done));
    let count = move || {
        if h.fetch_add(1, Ordering::Relaxed) + 1 == n as u64 {
            d.notify_one();
        }
    };
    let registry = match decode {
        Decode::Typed => Registry::new().with(move |_: WorkerMsg, _| {
            count();
            async { Ok(()) }
        }),
        Decode::Raw => Registry::new().with_raw::<WorkerMsg, _, _>(move |_, _| {
            count();
            async { Ok(()) }
        }),
    };
    let started = Instant::now();
    let handle = Worker::new(Arc::clone(t), config, registry).start().await?;
    tokio::time::timeout(Duration::from_secs(120), done.notified()).await?;
    let took = started.elapsed();
    let stats = handle.shutdown().await?;
    if stats.succeeded != n as u64 || stats.acks_lost != 0 {
        return Err(format!("worker bench: {stats:?}").into());
    }
    Ok(took)
}

/// Deletes the worker's queue and its dead-letter queue.
pub async fn cleanup(t: &AmqpTransport, queue: &str) -> Result<(), BoxError> {
    t.delete_queue(queue).await?;
    t.delete_queue(&format!("{queue}.dead")).await?;
    Ok(())
}
