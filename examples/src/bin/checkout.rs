//! The main demo: the talk's checkout flow on the in-process broker, or on RabbitMQ when
//! `AMQP_ADDR` is set.
//!
//! Run: `cargo run -p lepus-examples --bin checkout`
//! or:  `AMQP_ADDR=amqp://127.0.0.1:5672/%2f cargo run -p lepus-examples --bin checkout`
//!
//! With `--serve` (on RabbitMQ) the workers emit operational events, keep running until Ctrl-C
//! and leave the dead letters in place, for `lepus console --amqp $AMQP_ADDR` to show.

use std::process::ExitCode;
use std::sync::Arc;

use lepus_examples::checkout;

#[tokio::main]
async fn main() -> ExitCode {
    // The broker is chosen explicitly: AMQP_ADDR names RabbitMQ (or `memory:`); without it the
    // demo runs on the in-process broker, and says so below.
    let addr = std::env::var("AMQP_ADDR").unwrap_or_else(|_| lepus::IN_PROCESS_ADDR.to_owned());
    let broker = match lepus::connect_to(Some(&addr)).await {
        Ok(broker) => Arc::new(broker),
        Err(e) => {
            eprintln!("cannot reach the broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("Lepus checkout demo on the {} broker\n", broker.name());
    let serve = std::env::args().skip(1).any(|a| a == "--serve");
    let outcome = if serve {
        let events = lepus::events::Events::start(
            Arc::clone(&broker),
            lepus::events::EventsConfig::default(),
        );
        println!("serving: open `lepus console --amqp \"$AMQP_ADDR\"`; Ctrl-C stops the workers\n");
        checkout::serve(Arc::clone(&broker), events, lepus::shutdown_signal()).await
    } else {
        checkout::run(Arc::clone(&broker)).await
    };
    if let Err(e) = broker.close().await {
        eprintln!("closing the broker connection failed: {e}");
    }
    match outcome {
        Ok(summary) => {
            println!("\nSummary");
            println!(
                "  the web request published 7 tasks in {:.1} ms (done inline, they take at least {} ms)",
                summary.request_us as f64 / 1000.0,
                7 * checkout::TASK_MS
            );
            for (kind, n) in &summary.handled {
                println!("  handled  {kind:<22} x{n}");
            }
            println!(
                "  failed attempts: {} (retried later or dead-lettered)",
                summary.failures
            );
            for (queue, kind, reason, attempts) in &summary.dead_letters {
                println!("  dead letter in {queue}.dead: {kind} ({reason}, {attempts} attempt(s))");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("checkout demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
