//! Reading the broker's topology through `rabbitmqctl ... --formatter json`: the fallback
//! when the management HTTP API (see `management`) does not answer.
//!
//! `rabbitmqctl` ships with every broker but must run next to it (it talks to the node it
//! runs beside, not necessarily the one at `--amqp`), so it does not help against a managed
//! RabbitMQ. `LEPUS_RABBITMQCTL` replaces the command, e.g. `docker exec rabbitmq rabbitmqctl`.
//! It starts an Erlang VM per call: about a second each.

use std::process::Command;

use serde_json::Value;

use crate::failure::{Code, Failure};
use crate::snapshot::{Binding, QueueRow};

/// Runs `rabbitmqctl` (or `LEPUS_RABBITMQCTL`) with `args`: its output when it succeeded, a
/// `SourceUnavailable` failure that says how to run it otherwise.
fn output(args: &[&str]) -> Result<std::process::Output, Failure> {
    let command = std::env::var("LEPUS_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let mut words = command.split_whitespace();
    let program = words.next().unwrap_or("rabbitmqctl");
    let output = Command::new(program)
        .args(words)
        .args(args)
        .output()
        .map_err(|e| {
            Failure::new(
                Code::SourceUnavailable,
                format!(
                    "cannot run {command:?} ({e}); rabbitmqctl runs on the broker host: run \
                     lepus there, or set LEPUS_RABBITMQCTL \
                     (e.g. \"docker exec rabbitmq rabbitmqctl\")"
                ),
            )
        })?;
    if !output.status.success() {
        return Err(Failure::new(
            Code::SourceUnavailable,
            format!(
                "{command} {} failed: {}{}",
                args.iter().find(|a| !a.starts_with('-')).unwrap_or(&""),
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(output)
}

/// `rabbitmqctl eval <expression>` on the node beside: what the expression printed.
pub fn eval(expression: &str) -> Result<String, Failure> {
    let output = output(&["-q", "eval", expression])?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn run(vhost: &str, args: &[&str]) -> Result<Vec<Value>, Failure> {
    let command = [&["-q", "-p", vhost][..], args, &["--formatter", "json"]].concat();
    let output = output(&command)?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(rows)) => Ok(rows),
        _ => Err(Failure::new(
            Code::SourceUnavailable,
            format!("rabbitmqctl {}: unexpected output", args.join(" ")),
        )),
    }
}

fn text(row: &Value, key: &str) -> String {
    row.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn number(row: &Value, key: &str) -> u64 {
    row.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Exchanges: (name, type).
pub fn exchanges(vhost: &str) -> Result<Vec<(String, String)>, Failure> {
    Ok(run(vhost, &["list_exchanges", "name", "type"])?
        .iter()
        .map(|r| (text(r, "name"), text(r, "type")))
        .collect())
}

/// Queues with their counts.
pub fn queues(vhost: &str) -> Result<Vec<QueueRow>, Failure> {
    Ok(run(
        vhost,
        &[
            "list_queues",
            "name",
            "type",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ],
    )?
    .iter()
    .map(|r| QueueRow {
        name: text(r, "name"),
        kind: text(r, "type"),
        ready: number(r, "messages_ready"),
        unacked: number(r, "messages_unacknowledged"),
        messages: number(r, "messages"),
        consumers: number(r, "consumers"),
        rates: None,
    })
    .collect())
}

/// Bindings to queues.
pub fn bindings(vhost: &str) -> Result<Vec<Binding>, Failure> {
    Ok(run(
        vhost,
        &[
            "list_bindings",
            "source_name",
            "destination_name",
            "destination_kind",
            "routing_key",
        ],
    )?
    .iter()
    .filter(|r| text(r, "destination_kind") == "queue")
    .map(|r| Binding {
        source: text(r, "source_name"),
        destination: text(r, "destination_name"),
        routing_key: text(r, "routing_key"),
    })
    .collect())
}
