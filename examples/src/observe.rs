//! A short run of work for the observability examples (`traces`, `metrics`): a web request
//! publishes a `Charge`; its handler fails once (a retry), then publishes a `Receipt`, whose
//! handler makes an RPC call (`Quote`); a `Poison` message is dead-lettered. Every step logs
//! the trace id it runs in, so one trace shows request -> task -> retry -> follow-up -> RPC.
//!
//! [`serve_text`] is the smallest HTTP server that answers every request with one text body:
//! enough for a Prometheus scrape in the `metrics` example, without an HTTP stack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::rpc::{Request, RpcClient, RpcServer, RpcServerConfig};
use lepus::{
    HandlerError, Message, Publisher, Registry, ReplyTransport, RetryPolicy, TraceContext, Worker,
    WorkerConfig,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The exchange of the tasks.
pub const EXCHANGE: &str = "observe";
/// The exchange of the RPC requests.
pub const RPC_EXCHANGE: &str = "observe.rpc";

/// The task the web request publishes; fails on its first attempt.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(type = "Charge", routing_key = "observe.charge", retry = retry_soon)]
pub struct Charge {
    /// Amount in cents.
    pub cents: u64,
}

fn retry_soon() -> RetryPolicy {
    RetryPolicy::repeat(2, [100])
}

/// The follow-up task: asks the pricing service for a quote.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(type = "Receipt", routing_key = "observe.receipt")]
pub struct Receipt {
    /// Amount in cents.
    pub cents: u64,
}

/// Always refused by its handler: dead-lettered.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(type = "Poison", routing_key = "observe.poison")]
pub struct Poison {}

/// The RPC request: the tax on an amount.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(type = "Quote", routing_key = "rpc.quote", reply = u64, reply_type = "Quoted")]
pub struct Quote {
    /// Amount in cents.
    pub cents: u64,
}

/// What the run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The trace id of the web request (hex).
    pub trace_id: lepus::core::TraceId,
    /// Handlers that succeeded.
    pub succeeded: u64,
    /// Retries.
    pub retried: u64,
    /// Dead letters.
    pub dead_lettered: u64,
    /// RPC replies sent.
    pub replied: u64,
}

fn step(name: &str) {
    match TraceContext::current() {
        // With OpenTelemetry the parent is in the exporter's spans, not here.
        Some(cx) => println!(
            "  {name:<22} trace {} span {}{}",
            cx.trace_id(),
            cx.span_id(),
            cx.parent_id()
                .map_or_else(String::new, |p| format!(" parent {p}"))
        ),
        None => println!("  {name:<22} (no trace context)"),
    }
}

/// Runs the work on `transport` and stops everything it started; deletes nothing (the
/// in-process broker goes with the process).
///
/// # Errors
/// Declaring, consuming or publishing failed.
pub async fn run<T>(transport: Arc<T>) -> lepus::Result<Summary>
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let server = RpcServer::new(
        Arc::clone(&transport),
        RpcServerConfig::new("observe.quotes", RPC_EXCHANGE).bind("rpc.#"),
    )
    .with(|q: Quote, _| async move {
        step("rpc Quote");
        Ok(q.cents / 5)
    })
    .start()
    .await?;
    let publisher = Publisher::new(Arc::clone(&transport), EXCHANGE);
    let client = RpcClient::new(Arc::clone(&transport), RPC_EXCHANGE).await?;
    let registry = Registry::new()
        .with({
            let publisher = publisher.clone();
            move |c: Charge, ctx| {
                let publisher = publisher.clone();
                async move {
                    if ctx.attempt == 1 {
                        step("task Charge");
                        return Err(HandlerError::transient("card network busy"));
                    }
                    step("task Charge (retry)");
                    publisher
                        .send(&Receipt { cents: c.cents })
                        .await
                        .map_err(HandlerError::transient)?;
                    Ok(())
                }
            }
        })
        .with(move |r: Receipt, _| {
            let client = client.clone();
            async move {
                step("follow-up Receipt");
                let tax = client
                    .call(&Quote { cents: r.cents }, Duration::from_secs(5))
                    .await
                    .map_err(HandlerError::transient)?;
                println!("  {:<22} tax {tax} cents", "");
                Ok(())
            }
        })
        .with(|_: Poison, _| async {
            step("task Poison");
            Err(HandlerError::rejected("no such product"))
        });
    let worker = Worker::new(
        Arc::clone(&transport),
        WorkerConfig::new("observe.tasks", EXCHANGE).bind("observe.#"),
        registry,
    )
    .start()
    .await?;

    // The web request: a trace of its own, in which it publishes.
    let request = TraceContext::new_root();
    let trace_id = request.trace_id();
    request
        .scope(async {
            step("web request");
            publisher.send(&Charge { cents: 1999 }).await?;
            publisher.send(&Poison {}).await?;
            Ok::<_, lepus::Error>(())
        })
        .await?;

    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let s = worker.stats();
        if s.succeeded >= 2 && s.dead_lettered >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = worker.shutdown().await?;
    let served = server.shutdown().await;
    Ok(Summary {
        trace_id,
        succeeded: stats.succeeded,
        retried: stats.retried,
        dead_lettered: stats.dead_lettered,
        replied: served.replied,
    })
}

/// Answers every HTTP request on `listener` with `200 OK` and the text `render` returns
/// (`text/plain; version=0.0.4`, Prometheus's text format), until the task is dropped.
pub async fn serve_text<F>(listener: TcpListener, render: F)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            // Read the request head (up to 8 KiB); the path does not matter.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = render();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
