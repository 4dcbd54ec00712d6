//! A worker process for the SIGKILL scenario of the reliability tests: consumes the queue
//! named by its first argument (bound to `chaos.#` on `<queue>.x`) and appends the number of
//! every message it handled to the file named by its second argument, one per line, flushed
//! before the handler returns (so a kill after the line and before the ack shows up as a
//! duplicate, never as a loss). Runs until killed, or stops gracefully on SIGTERM/Ctrl-C.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lepus::{AmqpConfig, AmqpTransport, Context, HandlerError, Registry, Worker};
use lepus_tests::chaos::{worker_config_for, Numbered};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(queue), Some(path)) = (args.next(), args.next()) else {
        return Err("usage: chaos_worker QUEUE HANDLED-FILE".into());
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let file = Arc::new(Mutex::new(file));
    let registry = Registry::new().with(move |m: Numbered, _ctx: Context| {
        let file = Arc::clone(&file);
        async move {
            // Long enough that a kill lands in the middle of some handlers.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut f = file
                .lock()
                .map_err(|_| HandlerError::transient("file lock"))?;
            writeln!(f, "{}", m.n).map_err(HandlerError::transient)?;
            f.flush().map_err(HandlerError::transient)?;
            Ok(())
        }
    });
    let transport = Arc::new(AmqpTransport::connect(AmqpConfig::from_env()?).await?);
    let worker = Worker::new(
        Arc::clone(&transport),
        worker_config_for(&queue, false),
        registry,
    );
    // SIGTERM or Ctrl-C: finish running handlers, give back the rest (SIGKILL skips this).
    let outcome = worker.run(lepus::shutdown_signal()).await;
    // Best effort, as in the CLI: lapin may refuse `connection.close` while the worker's
    // consumer channel is still closing; the process ends either way.
    if let Err(e) = transport.close().await {
        eprintln!("chaos_worker: closing the connection: {e}");
    }
    outcome?;
    Ok(())
}
