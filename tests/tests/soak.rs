//! The host soak: 500 start/work/stop cycles of a program against RabbitMQ. Each cycle
//! connects, runs a worker, an RPC server and a live `RpcClient` in a `lepus::Host`, publishes
//! tasks and makes calls, then stops everything on one signal and closes the transport.
//! Counted: cycles that hang (each is bounded by a timeout), errors of any step, and every
//! WARN or ERROR line logged through `tracing` (Lepus's and lapin's) by a subscriber of this
//! binary. All three must be 0. Its own binary so that no other scenario logs meanwhile.
//!
//! `LEPUS_SOAK_CYCLES=n` changes the number of cycles (500 by default).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::rpc::{Request, RpcClient, RpcServer, RpcServerConfig};
use lepus::{
    AmqpConfig, AmqpTransport, Host, Message, Publisher, Registry, Transport, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};

/// Counts `tracing` events at WARN and ERROR, keeping the first lines for the failure message.
struct Counter {
    warn_or_error: AtomicUsize,
    lines: Mutex<Vec<String>>,
    next_id: AtomicU64,
}

struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Counter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let metadata = event.metadata();
        if *metadata.level() > tracing::Level::WARN {
            return;
        }
        self.warn_or_error.fetch_add(1, Ordering::SeqCst);
        let mut text = Text(format!("{} {}:", metadata.level(), metadata.target()));
        event.record(&mut text);
        let mut lines = self.lines.lock().unwrap();
        if lines.len() < 20 {
            lines.push(text.0);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(type = "LepusSoakJob", routing_key = "soak.job")]
struct Job {
    n: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(type = "LepusSoakAdd", routing_key = "soak.add", reply = u64, reply_type = "LepusSoakSum")]
struct Add {
    a: u64,
    b: u64,
}

const JOBS: u64 = 4;
const CALLS: u64 = 2;
const CYCLE: Duration = Duration::from_secs(20);

/// One start/work/stop cycle; `Err` names the failed step.
async fn cycle(config: &AmqpConfig, queue: &str, exchange: &str) -> Result<(), String> {
    let step = |what: &'static str| move |e: lepus::Error| format!("{what}: {e}");
    let t = Arc::new(
        AmqpTransport::connect(config.clone())
            .await
            .map_err(step("connect"))?,
    );
    let host = Host::new(Arc::clone(&t)).drain_timeout(Duration::from_secs(10));
    let handled = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&handled);
    let registry = Registry::new().with(move |_: Job, _| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let worker_config = WorkerConfig::new(queue, exchange)
        .bind("soak.job")
        .shutdown_timeout(Duration::from_secs(5));
    host.add_worker(Worker::new(Arc::clone(&t), worker_config, registry))
        .await
        .map_err(step("start the worker"))?;
    let server = RpcServer::new(
        Arc::clone(&t),
        RpcServerConfig::new(format!("{queue}.rpc"), exchange)
            .bind("soak.add")
            .shutdown_timeout(Duration::from_secs(5)),
    )
    .with(|r: Add, _| async move { Ok(r.a + r.b) });
    host.add_rpc_server(server)
        .await
        .map_err(step("start the RPC server"))?;
    let client = RpcClient::new(Arc::clone(&t), exchange)
        .await
        .map_err(step("open the RPC client"))?;
    host.add_rpc_client(client.clone())
        .await
        .map_err(step("add the RPC client"))?;
    if !host.is_ready() || !host.is_live() {
        return Err("the host is not ready after starting".into());
    }

    let publisher = Publisher::new(Arc::clone(&t), exchange);
    for n in 0..JOBS {
        publisher
            .send(&Job { n })
            .await
            .map_err(step("publish a task"))?;
    }
    for a in 0..CALLS {
        let sum = client
            .call(&Add { a, b: 1 }, Duration::from_secs(5))
            .await
            .map_err(|e| format!("RPC call: {e}"))?;
        if sum != a + 1 {
            return Err(format!("RPC call: {a} + 1 = {sum}?"));
        }
    }
    while handled.load(Ordering::SeqCst) < JOBS {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // Stop on one signal, as a SIGTERM would.
    let running = {
        let host = host.clone();
        tokio::spawn(async move { host.run_until(std::future::pending()).await })
    };
    host.signal();
    let report = running
        .await
        .map_err(|e| format!("host task: {e}"))?
        .map_err(step("stop"))?;
    if report.stopped.len() != 3 || !report.aborted.is_empty() || report.forced {
        return Err(format!("stop: {report:?}"));
    }
    if t.is_connected() || host.is_live() {
        return Err("the transport is still open after the stop".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_start_work_stop_500_cycles() {
    let counter = Arc::new(Counter {
        warn_or_error: AtomicUsize::new(0),
        lines: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(0),
    });
    tracing::subscriber::set_global_default(Arc::clone(&counter)).unwrap();
    let Some(config) = lepus_tests::chaos::broker("host soak", false).await else {
        return;
    };
    let config = config
        .send_timeout(Duration::from_secs(10))
        .connection_name("lepus soak");
    let cycles: usize = std::env::var("LEPUS_SOAK_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let suffix = std::process::id();
    let queue = format!("lepus-soak-{suffix}");
    let exchange = format!("lepus-soak-{suffix}.x");
    // The counter sees what is logged (a self-check), and what the broker check logged
    // (nothing expected) is not part of the soak.
    let seen = counter.warn_or_error.load(Ordering::SeqCst);
    tracing::warn!("soak: the counter sees this line");
    assert_eq!(counter.warn_or_error.load(Ordering::SeqCst), seen + 1);
    counter.lines.lock().unwrap().clear();
    let before = seen + 1;

    let started = Instant::now();
    let (mut hangs, mut errors) = (0, 0);
    let mut first_errors = Vec::new();
    for i in 0..cycles {
        match tokio::time::timeout(CYCLE, cycle(&config, &queue, &exchange)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                errors += 1;
                if first_errors.len() < 5 {
                    first_errors.push(format!("cycle {i}: {e}"));
                }
            }
            Err(_) => {
                hangs += 1;
                if first_errors.len() < 5 {
                    first_errors.push(format!("cycle {i}: hung past {CYCLE:?}"));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    // Late lines (a task logging after its cycle) count too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warn_lines = counter.warn_or_error.load(Ordering::SeqCst) - before;

    let admin = AmqpTransport::connect(config.clone()).await.unwrap();
    for q in [
        queue.clone(),
        format!("{queue}.dead"),
        format!("{queue}.rpc"),
        format!("{queue}.rpc.dead"),
    ] {
        admin.delete_queue(&q).await.unwrap();
    }
    admin.delete_exchange(&exchange).await.unwrap();
    admin.close().await.unwrap();

    eprintln!(
        "| host start/work/stop (worker, RPC server, live RPC client; {JOBS} tasks, {CALLS} calls each) \
         | {cycles} | {elapsed:.1?} | {hangs} | {errors} | {warn_lines} |"
    );
    let lines = counter.lines.lock().unwrap().clone();
    assert_eq!(hangs, 0, "{first_errors:#?}");
    assert_eq!(errors, 0, "{first_errors:#?}");
    assert_eq!(warn_lines, 0, "{lines:#?}");
}
