//! The rate-limit row: a handler limited to 10/s (burst 1) under 200 queued messages. The
//! queue is filled first, then a `Worker` (prefetch 64, concurrency 16) starts; every handler
//! start is timed. Reported: the rate over the whole run (199 intervals after the first
//! start, which the full bucket grants at once), the rate in each full 2-second window from
//! the first start (min, median, max), the gaps between starts (min, median, max), and the
//! worker's counters (every delivery but the first held, none retried).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::{AmqpConfig, AmqpTransport, Message, Publisher, Registry, Transport, Worker};
use lepus::{RetryPolicy, WorkerConfig};
use serde::{Deserialize, Serialize};

use super::spread::min_median_max;
use super::BoxError;

const MESSAGES: usize = 200;
const WINDOW: Duration = Duration::from_secs(2);

/// Limited to 10 starts per second by its derive.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(routing_key = "benchrate.msg", retry = RetryPolicy::ignore, rate = "10/s")]
struct RatedMsg {
    n: usize,
}

pub async fn run(config: &AmqpConfig) -> Result<(), BoxError> {
    let t = Arc::new(AmqpTransport::connect(config.clone()).await?);
    let suffix = std::process::id();
    let exchange = format!("lepus-bench-rate-{suffix}");
    let queue = format!("lepus-bench-rate-{suffix}");
    let worker_config = WorkerConfig::new(&queue, &exchange)
        .bind("benchrate.#")
        .prefetch(64)
        .concurrency(16);
    let starts = Arc::new(Mutex::new(Vec::with_capacity(MESSAGES)));
    let done = Arc::new(tokio::sync::Notify::new());
    let (s, d) = (Arc::clone(&starts), Arc::clone(&done));
    let registry = Registry::new().with(move |_: RatedMsg, _| {
        let (s, d) = (Arc::clone(&s), Arc::clone(&d));
        async move {
            let mut starts = s.lock().unwrap_or_else(|p| p.into_inner());
            starts.push(Instant::now());
            if starts.len() == MESSAGES {
                d.notify_one();
            }
            Ok(())
        }
    });
    let worker = Worker::new(Arc::clone(&t), worker_config, registry);
    worker.declare().await?;
    let publisher = Publisher::new(Arc::clone(&t), exchange.clone());
    let messages: Vec<RatedMsg> = (0..MESSAGES).map(|n| RatedMsg { n }).collect();
    for outcome in publisher.send_batch(&messages).await? {
        outcome?;
    }
    let handle = worker.start().await?;
    tokio::time::timeout(Duration::from_secs(60), done.notified()).await?;
    let stats = handle.shutdown().await?;
    let starts = starts.lock().unwrap_or_else(|p| p.into_inner()).clone();

    let (first, last) = (starts[0], starts[MESSAGES - 1]);
    let span = last.duration_since(first).as_secs_f64();
    let overall = (MESSAGES - 1) as f64 / span;
    let mut windows = Vec::new();
    let mut from = first;
    while from + WINDOW <= last {
        let count = starts
            .iter()
            .filter(|&&s| s >= from && s < from + WINDOW)
            .count();
        windows.push(count as f64 / WINDOW.as_secs_f64());
        from += WINDOW;
    }
    let mut gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1_000.0)
        .collect();
    let (windows_min, windows_median, windows_max) = min_median_max(&mut windows);
    let (gaps_min, gaps_median, gaps_max) = min_median_max(&mut gaps);

    println!("\nrate limit: a handler limited to 10/s (burst 1), {MESSAGES} messages queued");
    println!(
        "| {:<34} | {:>8} | {:>8} | {:>8} |",
        "measure", "min", "median", "max"
    );
    println!("|{:-<36}|{:->10}|{:->10}|{:->10}|", "", "", "", "");
    println!(
        "| {:<34} | {:>8.3} | {:>8.3} | {:>8.3} |",
        format!(
            "starts/s in {} s windows ({})",
            WINDOW.as_secs(),
            windows.len()
        ),
        windows_min,
        windows_median,
        windows_max
    );
    println!(
        "| {:<34} | {:>8.1} | {:>8.1} | {:>8.1} |",
        "gap between starts (ms)", gaps_min, gaps_median, gaps_max
    );
    println!(
        "overall: {overall:.3} starts/s ({} intervals in {span:.3} s); held {}, retried {}, \
         succeeded {}",
        MESSAGES - 1,
        stats.held,
        stats.retried,
        stats.succeeded
    );

    t.delete_queue(&queue).await?;
    t.delete_queue(&format!("{queue}.dead")).await?;
    t.delete_exchange(&exchange).await?;
    t.close().await?;
    if stats.succeeded != MESSAGES as u64 || stats.retried != 0 {
        return Err(format!("rate bench: {stats:?}").into());
    }
    Ok(())
}
