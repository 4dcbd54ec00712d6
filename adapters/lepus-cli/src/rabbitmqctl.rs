//! Reading the broker's topology through `rabbitmqctl ... --formatter json`.
//!
//! Why `rabbitmqctl`: AMQP itself cannot list queues or bindings, and the management HTTP
//! API is a plugin that is often not enabled. `rabbitmqctl` ships with every broker; it talks
//! to the node it runs next to (not necessarily the one at `--amqp`). `LEPUS_RABBITMQCTL`
//! replaces the command, e.g. `docker exec rabbitmq rabbitmqctl`.

use std::process::Command;

use serde_json::Value;

use crate::failure::{Code, Failure};

/// One binding of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The exchange.
    pub source: String,
    /// The bound queue (or exchange).
    pub destination: String,
    /// The pattern.
    pub routing_key: String,
}

/// One queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    /// Its name.
    pub name: String,
    /// Ready messages.
    pub messages: u64,
    /// Consumers.
    pub consumers: u64,
}

/// The virtual host of an AMQP address: the percent-decoded path, `/` when there is none.
pub fn vhost_of(addr: &str) -> String {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.is_empty() {
        return "/".into();
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes.get(i) == Some(&b'%'))
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.extend(bytes.get(i).copied());
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn run(vhost: &str, args: &[&str]) -> Result<Vec<Value>, Failure> {
    let command = std::env::var("LEPUS_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let mut words = command.split_whitespace();
    let program = words.next().unwrap_or("rabbitmqctl");
    let output = Command::new(program)
        .args(words)
        .args(["-q", "-p", vhost])
        .args(args)
        .args(["--formatter", "json"])
        .output()
        .map_err(|e| {
            Failure::new(
                Code::SourceUnavailable,
                format!(
                    "cannot run {command:?} ({e}); topology is read with rabbitmqctl on the \
                     broker host: run lepus there, or set LEPUS_RABBITMQCTL \
                     (e.g. \"docker exec rabbitmq rabbitmqctl\")"
                ),
            )
        })?;
    if !output.status.success() {
        return Err(Failure::new(
            Code::SourceUnavailable,
            format!(
                "{command} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(rows)) => Ok(rows),
        _ => Err(Failure::new(
            Code::SourceUnavailable,
            format!("{command} {}: unexpected output", args.join(" ")),
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
    Ok(
        run(vhost, &["list_queues", "name", "messages", "consumers"])?
            .iter()
            .map(|r| QueueRow {
                name: text(r, "name"),
                messages: number(r, "messages"),
                consumers: number(r, "consumers"),
            })
            .collect(),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhosts() {
        assert_eq!(vhost_of("amqp://127.0.0.1:5672/%2f"), "/");
        assert_eq!(vhost_of("amqp://127.0.0.1:5672"), "/");
        assert_eq!(vhost_of("amqp://u:p@h/prod%2Deu?heartbeat=5"), "prod-eu");
        assert_eq!(vhost_of("amqp://h/%zz"), "%zz");
    }
}
