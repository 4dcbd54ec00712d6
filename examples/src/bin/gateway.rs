//! The gateway between devices and RabbitMQ: reads COBS-framed postcard envelopes from stdin
//! (`-`), a file, or a TCP socket (`--tcp HOST:PORT`, e.g. a serial-to-TCP bridge), and
//! publishes each as the JSON envelope to the exchange (`--exchange`, default `lepus`) at
//! `AMQP_ADDR`. Readings are routed by type (`SensorReading` -> `sensors.reading`). Prints the
//! counters at the end of the stream: `frames=.. published=.. corrupt=.. unknown_type=..
//! unroutable=..`.
//!
//! Run: `cargo run -p lepus-examples --bin firmware_producer | cargo run -p lepus-examples
//! --bin gateway -- -`

use std::process::ExitCode;
use std::sync::Arc;

use lepus::gateway::Gateway;
use lepus::{AmqpTransport, Transport};
use lepus_examples::firmware::SensorReading;
use tokio::io::AsyncRead;

const USAGE: &str = "usage: gateway [--exchange NAME] (- | FILE | --tcp HOST:PORT)";

#[tokio::main]
async fn main() -> ExitCode {
    let mut exchange = "lepus".to_owned();
    let mut source = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exchange" => exchange = args.next().unwrap_or_default(),
            "--tcp" => source = args.next().map(|a| format!("tcp:{a}")),
            _ => source = Some(arg),
        }
    }
    let Some(source) = source.filter(|_| !exchange.is_empty()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(1);
    };
    match run(&exchange, &source).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::from(2)
        }
    }
}

async fn open(source: &str) -> Result<Box<dyn AsyncRead + Unpin + Send>, String> {
    if source == "-" {
        return Ok(Box::new(tokio::io::stdin()));
    }
    if let Some(addr) = source.strip_prefix("tcp:") {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        return Ok(Box::new(stream));
    }
    let file = tokio::fs::File::open(source)
        .await
        .map_err(|e| format!("open {source}: {e}"))?;
    Ok(Box::new(file))
}

async fn run(exchange: &str, source: &str) -> Result<(), String> {
    let reader = open(source).await?;
    let transport = Arc::new(AmqpTransport::from_env().await.map_err(|e| e.to_string())?);
    transport
        .declare_exchange(exchange)
        .await
        .map_err(|e| e.to_string())?;
    let mut gateway = Gateway::new(Arc::clone(&transport), exchange);
    gateway.register::<SensorReading>();
    let stats = gateway.run(reader).await.map_err(|e| e.to_string())?;
    println!(
        "frames={} published={} corrupt={} unknown_type={} unroutable={}",
        stats.frames, stats.published, stats.corrupt, stats.unknown_type, stats.unroutable
    );
    let _ = transport.close().await;
    Ok(())
}
