//! One trace across a web request, a task, its retry, the follow-up task and an RPC call,
//! exported to stdout through OpenTelemetry (feature `opentelemetry` of `lepus`), on the
//! in-process broker (or RabbitMQ with `AMQP_ADDR`).
//!
//! Run: `cargo run -p lepus-examples --features opentelemetry --bin traces`
//!
//! Each step prints the trace id it runs in (the same one throughout); then the
//! OpenTelemetry stdout exporter prints every span (`lepus.publish`, `lepus.message`,
//! `lepus.rpc.request`) with its trace id, parent span id and the messaging attributes.

use std::process::ExitCode;
use std::sync::Arc;

use lepus_examples::observe;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::main]
async fn main() -> ExitCode {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("lepus-examples"));
    let subscriber = tracing_subscriber::registry().with(layer);
    if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
        eprintln!("cannot install the tracing subscriber: {e}");
        return ExitCode::FAILURE;
    }
    let addr = std::env::var("AMQP_ADDR").unwrap_or_else(|_| lepus::IN_PROCESS_ADDR.to_owned());
    let broker = match lepus::connect_to(Some(&addr)).await {
        Ok(broker) => Arc::new(broker),
        Err(e) => {
            eprintln!("cannot reach the broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("Lepus traces on the {} broker", broker.name());
    let outcome = observe::run(Arc::clone(&broker)).await;
    if let Err(e) = broker.close().await {
        eprintln!("closing the broker connection failed: {e}");
    }
    let code = match outcome {
        Ok(s) => {
            println!(
                "trace {}: {} handled, {} retried, {} dead-lettered, {} RPC replies",
                s.trace_id, s.succeeded, s.retried, s.dead_lettered, s.replied
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("the work failed: {e}");
            ExitCode::FAILURE
        }
    };
    if let Err(e) = provider.shutdown() {
        eprintln!("flushing the spans failed: {e}");
    }
    code
}
