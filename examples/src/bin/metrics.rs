//! Lepus's metrics (`lepus::metrics`) on a Prometheus text endpoint: a short run of work
//! (a task retried once, a follow-up, an RPC call, a dead letter), then `GET /metrics`.
//!
//! Run: `cargo run -p lepus-examples --features metrics --bin metrics`, then
//! `curl -s http://127.0.0.1:9898/metrics | grep lepus_` (Ctrl-C stops it).
//! `LEPUS_METRICS_ADDR` sets the listening address; `AMQP_ADDR` chooses RabbitMQ.

use std::process::ExitCode;
use std::sync::Arc;

use lepus_examples::observe;
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> ExitCode {
    let handle = match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("cannot install the Prometheus recorder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = std::env::var("AMQP_ADDR").unwrap_or_else(|_| lepus::IN_PROCESS_ADDR.to_owned());
    let broker = match lepus::connect_to(Some(&addr)).await {
        Ok(broker) => Arc::new(broker),
        Err(e) => {
            eprintln!("cannot reach the broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("Lepus metrics on the {} broker", broker.name());
    let outcome = observe::run(Arc::clone(&broker)).await;
    if let Err(e) = broker.close().await {
        eprintln!("closing the broker connection failed: {e}");
    }
    match outcome {
        Ok(s) => println!(
            "work done: {} handled, {} retried, {} dead-lettered, {} RPC replies",
            s.succeeded, s.retried, s.dead_lettered, s.replied
        ),
        Err(e) => {
            eprintln!("the work failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    let listen = std::env::var("LEPUS_METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9898".into());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().map_or(listen, |a| a.to_string());
    println!("serving http://{local}/metrics (Ctrl-C stops)");
    let serve = observe::serve_text(listener, move || handle.render());
    tokio::select! {
        () = serve => {}
        () = lepus::shutdown_signal() => {}
    }
    ExitCode::SUCCESS
}
