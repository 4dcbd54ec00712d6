//! `lepus call TYPE --key KEY --json '{...}' --timeout 5s`: one RPC call through the
//! library's [`lepus::RpcClient`] (a call by name), the reply's payload on stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::{ReplyMode, RpcClient, RpcClientConfig, RpcError};
use serde_json::{json, Value};

use crate::cli::{CallArgs, Global, Output};
use crate::failure::{Code, Failure};

pub async fn run(g: &Global, args: CallArgs) -> Result<Code, Failure> {
    if args.message_type.is_empty() {
        return Err(Failure::usage("the request type must not be empty"));
    }
    if args.timeout.is_zero() {
        return Err(Failure::usage("--timeout must be more than 0"));
    }
    let payload = crate::payload::read(args.json.as_deref())?;
    let transport = Arc::new(crate::connect(g).await?);
    let outcome = call(g, &args, &payload, &transport).await;
    // Best effort: the call is over (answered, failed or timed out).
    let _ = transport.close().await;
    let (correlation_id, elapsed, reply) = outcome?;
    match (reply, g.output) {
        (Ok(reply), Output::Text) => println!("{}", pretty(&reply)),
        (Ok(reply), Output::Json) => println!(
            "{}",
            json!({
                "type": args.message_type,
                "correlation_id": correlation_id,
                "elapsed_ms": millis(elapsed),
                "reply": reply,
            })
        ),
        (Err(e), output) => {
            if output == Output::Json {
                let kind = match e.remote() {
                    Some((kind, _)) => kind.as_str(),
                    None => "timeout",
                };
                println!(
                    "{}",
                    json!({
                        "type": args.message_type,
                        "correlation_id": correlation_id,
                        "elapsed_ms": millis(elapsed),
                        "error": {"kind": kind, "message": remote_message(&e)},
                    })
                );
            }
            return Err(answer_failure(&args, &correlation_id, e));
        }
    }
    Ok(Code::Ok)
}

/// Sends the request; once it is published, its correlation id, the time taken and its
/// outcome: the reply, or a timeout or remote error (what `--output json` reports).
async fn call(
    g: &Global,
    args: &CallArgs,
    payload: &[u8],
    transport: &Arc<lepus::AmqpTransport>,
) -> Result<(String, Duration, Result<Value, RpcError>), Failure> {
    let mode = if args.reply_queue {
        ReplyMode::ExclusiveQueue
    } else {
        ReplyMode::DirectReplyTo
    };
    // A tool creates no topology: a mistyped exchange stays an error (exit 3).
    let config = RpcClientConfig::new(g.exchange.clone())
        .reply_mode(mode)
        .declare_exchange(false)
        .initial_capacity(1);
    let client = RpcClient::with_config(Arc::clone(transport), config).await?;
    let started = Instant::now();
    let pending = client
        .start_json(&args.message_type, &args.key, payload, args.timeout)
        .await
        .map_err(|e| send_failure(g, args, e))?;
    let correlation_id = pending.correlation_id();
    let outcome = pending.await;
    let elapsed = started.elapsed();
    match outcome {
        Ok(reply) => Ok((correlation_id, elapsed, Ok(reply))),
        Err(e @ (RpcError::Timeout | RpcError::Remote { .. })) => {
            Ok((correlation_id, elapsed, Err(e)))
        }
        Err(e) => Err(Failure::from(e)),
    }
}

/// The request was not sent: explains unroutable keys and a missing exchange.
fn send_failure(g: &Global, args: &CallArgs, e: RpcError) -> Failure {
    let mut f = Failure::from(e);
    match f.code {
        Code::Unroutable => {
            f.message = format!(
                "no queue is bound for key {:?} on exchange {:?}: no RPC server takes {} \
                 there (check --key and --exchange): {}",
                args.key, g.exchange, args.message_type, f.message
            );
        }
        Code::NotFound => {
            f.message = format!(
                "exchange {:?} does not exist (an RPC server declares it; or pass --exchange): {}",
                g.exchange, f.message
            );
        }
        _ => {}
    }
    f
}

/// A timeout or a remote error, for stderr.
fn answer_failure(args: &CallArgs, correlation_id: &str, e: RpcError) -> Failure {
    let mut f = Failure::from(e);
    f.message = match f.code {
        Code::Timeout => format!(
            "no reply to {} within {:?} (correlation id {correlation_id})",
            args.message_type, args.timeout
        ),
        _ => format!(
            "{} failed on the server: {} (correlation id {correlation_id})",
            args.message_type, f.message
        ),
    };
    f
}

fn remote_message(e: &RpcError) -> String {
    match e.remote() {
        Some((_, message)) => message.to_owned(),
        None => e.to_string(),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
