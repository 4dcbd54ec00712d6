//! A service as it runs in production: a worker and an RPC server in a `lepus::Host`, health
//! probes over HTTP, Ctrl-C (or SIGTERM) to drain and exit, a second one to force it.
//!
//! Run: `AMQP_ADDR=amqp://127.0.0.1:5672/%2f cargo run -p lepus-examples --bin probe`
//! (without `AMQP_ADDR` it runs on the in-process broker and says so), then
//! `curl -i 127.0.0.1:8080/healthz` (liveness) and `curl -i 127.0.0.1:8080/readyz`
//! (readiness): `200 ok` or `503 unavailable`. `LEPUS_PROBE_ADDR` moves the listener.
//!
//! The HTTP responder is a few lines of tokio, no HTTP crate: it reads the request line, answers
//! and closes, which is all a Kubernetes `httpGet` probe needs.

use std::sync::Arc;
use std::time::Duration;

use lepus::rpc::{RpcServer, RpcServerConfig};
use lepus::{Host, Registry, Transport, Worker, WorkerConfig};
use lepus_examples::checkout::CreateInvoice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, serde::Serialize, serde::Deserialize, lepus::Message, lepus::rpc::Request)]
#[lepus(type = "Ping", routing_key = "probe.ping", reply = String, reply_type = "Pong")]
struct Ping {}

/// Answers `GET /healthz` with the host's liveness and `GET /readyz` with its readiness.
async fn serve_probes<T: Transport + 'static>(listener: TcpListener, host: Host<T>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let host = host.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut request))
                .await
                .unwrap_or(Ok(0))
                .unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..n]);
            let healthy = if line.starts_with("GET /healthz") {
                Some(host.is_live())
            } else if line.starts_with("GET /readyz") {
                Some(host.is_ready())
            } else {
                None
            };
            let (status, body) = match healthy {
                Some(true) => ("200 OK", "ok\n"),
                Some(false) => ("503 Service Unavailable", "unavailable\n"),
                None => ("404 Not Found", "try /healthz or /readyz\n"),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The broker is chosen explicitly: AMQP_ADDR names RabbitMQ (or `memory:`); without it
    // this demo picks the in-process broker and says so.
    let addr = std::env::var("AMQP_ADDR").unwrap_or_else(|_| lepus::IN_PROCESS_ADDR.to_owned());
    // A service retries its first connection for a minute (the broker may start after it).
    let broker = Arc::new(lepus::connect_to_within(Some(&addr), Duration::from_secs(60)).await?);
    println!("broker: {}", broker.name());

    let host = Host::new(Arc::clone(&broker)).drain_timeout(Duration::from_secs(20));
    let registry = Registry::new().with(|invoice: CreateInvoice, _| async move {
        println!("invoice for order {:?}", invoice.order);
        Ok(())
    });
    let worker = WorkerConfig::new("probe.invoices", "probe").bind("billing.#");
    host.add_worker(Worker::new(Arc::clone(&broker), worker, registry))
        .await?;
    let server = RpcServer::new(
        Arc::clone(&broker),
        RpcServerConfig::new("probe.ping", "probe").bind("probe.ping"),
    )
    .with(|_: Ping, _| async move { Ok("pong".to_owned()) });
    host.add_rpc_server(server).await?;

    let probe_addr =
        std::env::var("LEPUS_PROBE_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let listener = TcpListener::bind(&probe_addr).await?;
    println!("probes: http://{probe_addr}/healthz and /readyz; Ctrl-C to stop");
    let probes = tokio::spawn(serve_probes(listener, host.clone()));

    // Ctrl-C or SIGTERM: drain (up to 20 s), close the connection; a second one forces.
    let report = host.run().await?;
    probes.abort();
    println!(
        "stopped: {:?}; aborted: {:?}; forced: {}; in {:.1?}",
        report.stopped, report.aborted, report.forced, report.elapsed
    );
    Ok(())
}
