//! `lepus`: the command line of Lepus against RabbitMQ. See `docs/cli.md`.
//!
//! Exit codes (also in `lepus --help`): 0 ok, 1 usage or invalid input, 2 broker unreachable,
//! 3 not found, 4 unroutable, 5 other broker or operation failure, 6 topology source
//! unavailable, 7 `route`: a key did not match, 8 `call`: no reply before the timeout,
//! 9 `call`: the server answered with an error, 130 interrupted.
#![forbid(unsafe_code)]

mod call;
mod cli;
mod console;
mod dead;
mod dead_letter_workers;
mod failure;
mod management;
mod payload;
mod publish;
mod rabbitmqctl;
mod route;
mod schedule;
mod show;
mod snapshot;
mod tail;
mod topology;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, DeadCommand};
use crate::failure::{Code, Failure};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Code::Usage
            } else {
                Code::Ok
            };
            // Printing help or a usage error can only fail on a closed stream.
            let _ = e.print();
            return code.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lepus: cannot start the async runtime: {e}");
            return Code::Failed.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code.into(),
        Err(failure) => {
            eprintln!("lepus: {}", failure.message);
            failure.code.into()
        }
    }
}

async fn run(cli: Cli) -> Result<Code, Failure> {
    let g = &cli.global;
    match cli.command {
        Command::Publish(args) => publish::run(g, args).await,
        Command::Call(args) => call::run(g, args).await,
        Command::Tail(args) => tail::run(g, args).await,
        Command::Dead { command } => match command {
            DeadCommand::List(args) => dead::list(g, args).await,
            DeadCommand::Show(args) => dead::show(g, args).await,
            DeadCommand::Replay(args) => dead::replay(g, args).await,
            DeadCommand::Purge(args) => dead::purge(g, args).await,
        },
        Command::Route(args) => route::run(g, args),
        Command::Topology(args) => topology::run(g, args).await,
        Command::DeadLetterWorkers(args) => dead_letter_workers::run(g, &args),
        Command::Schedule(args) => schedule::run(g, args).await,
        Command::Console(args) => console::run(g, args).await,
    }
}

/// Connects to RabbitMQ at `--amqp`, with the TLS settings of `AMQP_TLS_CA`, `AMQP_TLS_CERT`
/// and `AMQP_TLS_KEY` for an `amqps://` address (built with the `rustls` feature).
async fn connect(g: &cli::Global) -> Result<lepus::AmqpTransport, Failure> {
    let mut config = lepus::AmqpConfig::new(g.amqp()?)
        .connection_name("lepus-cli")
        .tls_from_env()?;
    config.connect_timeout = std::time::Duration::from_secs(10);
    Ok(lepus::AmqpTransport::connect(config).await?)
}

/// Seconds since the Unix epoch.
fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
