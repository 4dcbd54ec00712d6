//! What the broker holds for one virtual host (exchanges, queues with counts, bindings), read
//! from the management HTTP API, else from `rabbitmqctl`.

use crate::cli::Global;
use crate::failure::{Code, Failure};
use crate::management::{Management, ManagementError};
use crate::rabbitmqctl;

/// One binding of an exchange to a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The exchange.
    pub source: String,
    /// The bound queue.
    pub destination: String,
    /// The pattern.
    pub routing_key: String,
}

/// Messages per second over the broker's last sampling interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    /// Published into the queue.
    pub publish: f64,
    /// Delivered to consumers (and `basic.get`).
    pub deliver: f64,
    /// Acknowledged by consumers.
    pub ack: f64,
    /// Delivered again (flagged `redelivered`).
    pub redeliver: f64,
}

/// One queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    /// Its name.
    pub name: String,
    /// `classic`, `quorum` or `stream`.
    pub kind: String,
    /// Ready messages.
    pub ready: u64,
    /// Delivered, not yet acknowledged.
    pub unacked: u64,
    /// All its messages as RabbitMQ counts them (`messages`): ready, unacked and held (see
    /// [`QueueRow::held`]).
    pub messages: u64,
    /// Consumers.
    pub consumers: u64,
    /// Rates (the management API only; `rabbitmqctl` has none).
    pub rates: Option<Rates>,
}

impl QueueRow {
    /// Neither ready nor delivered: on a quorum queue with at-least-once dead-lettering, the
    /// messages dead-lettered (or expired, on a delay level) that its dead-letter worker has
    /// not passed on yet.
    pub fn held(&self) -> u64 {
        self.messages.saturating_sub(self.ready + self.unacked)
    }
}

/// Where a snapshot was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The management HTTP API at this base URL.
    Management(String),
    /// `rabbitmqctl` on this machine, after the API failed for this reason.
    Rabbitmqctl(String),
}

impl Source {
    /// `management` or `rabbitmqctl`.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Management(_) => "management",
            Source::Rabbitmqctl(_) => "rabbitmqctl",
        }
    }
}

/// Exchanges, queues and bindings of one virtual host.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Where it was read.
    pub source: Source,
    /// (name, type).
    pub exchanges: Vec<(String, String)>,
    /// Queues.
    pub queues: Vec<QueueRow>,
    /// Bindings to queues.
    pub bindings: Vec<Binding>,
}

/// The management API of `--management-url`, or of the AMQP address.
pub fn management(g: &Global) -> Result<Management, ManagementError> {
    Management::new(g.management_url.as_deref(), g.amqp.as_deref())
}

fn from_management(m: &Management, vhost: &str) -> Result<Snapshot, ManagementError> {
    Ok(Snapshot {
        source: Source::Management(m.base().to_owned()),
        exchanges: m.exchanges(vhost)?,
        queues: m.queues(vhost)?,
        bindings: m.bindings(vhost)?,
    })
}

fn from_rabbitmqctl(vhost: &str, why: String) -> Result<Snapshot, Failure> {
    Ok(Snapshot {
        source: Source::Rabbitmqctl(why),
        exchanges: rabbitmqctl::exchanges(vhost)?,
        queues: rabbitmqctl::queues(vhost)?,
        bindings: rabbitmqctl::bindings(vhost)?,
    })
}

/// Reads `vhost` through the management API; when it does not answer (or refuses the
/// credentials), through `rabbitmqctl`. Blocking: call it on the blocking pool.
pub fn read(g: &Global, vhost: &str) -> Result<Snapshot, Failure> {
    let api = management(g);
    let why = match api.as_ref().map(|m| from_management(m, vhost)) {
        Ok(Ok(snapshot)) => return Ok(snapshot),
        // The API answered: the virtual host is not there. rabbitmqctl would say the same.
        Ok(Err(e @ ManagementError::NotFound(_))) => return Err(e.into()),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    from_rabbitmqctl(vhost, why.clone()).map_err(|f| {
        Failure::new(
            Code::SourceUnavailable,
            format!(
                "cannot read the topology: the management API ({}) {why}; and {}",
                api.as_ref().map_or("-", |m| m.base()),
                f.message
            ),
        )
    })
}

/// Reads in a blocking task.
pub async fn read_async(g: &Global, vhost: String) -> Result<Snapshot, Failure> {
    let g = g.clone();
    tokio::task::spawn_blocking(move || read(&g, &vhost))
        .await
        .map_err(|e| Failure::new(Code::Failed, format!("topology task: {e}")))?
}

/// The virtual host of an AMQP address: the percent-decoded path, `/` when there is none.
pub fn vhost_of(addr: &str) -> String {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.is_empty() {
        return "/".into();
    }
    percent_decode(path)
}

/// `%2f` -> `/`; a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes.get(i) == Some(&b'%'))
            .then(|| s.get(i + 1..i + 3))
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
