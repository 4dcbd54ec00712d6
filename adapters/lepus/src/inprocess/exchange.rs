//! An exchange of the in-process broker: its bindings, and routing through `lepus-core`.
//!
//! Every routing decision is core's: topic exchanges keep a boxed [`TopicRouter`] (routing
//! cost independent of the number of bindings); direct, fanout and headers exchanges keep
//! their bindings owned and route them through core's [`Exchange`] in chunks of
//! [`ROUTE_CHUNK`] bindings, borrowing the owned keys and arguments for the call.
//!
//! Capacities: a topic exchange holds [`TOPIC_BINDINGS`] bindings (and the trie sizes below);
//! another exchange [`MAX_TABLE_BINDINGS`]. A full exchange is
//! [`ErrorKind::CapacityExceeded`] and the exchange is unchanged.

use lepus_core::exchange::{Exchange, ExchangeError, ExchangeKind, Routing};
use lepus_core::headers::{FieldPair, FieldValue as CoreValue};
use lepus_core::router::{BindError, RouteError, TopicRouter};

use crate::error::{Error, ErrorKind, NameKind, NameProblem, Result};
use crate::properties::{HeaderValue, Headers};

/// Identifies a queue for the life of the broker (never reused).
pub(crate) type QueueId = u32;

/// Trie nodes of a topic exchange (distinct pattern prefixes, plus the root).
pub const TOPIC_NODES: usize = 2048;
/// Literal-word hash slots of a topic exchange (at most 3/4 used).
pub const TOPIC_EDGES: usize = 4096;
/// Word arena bytes of a topic exchange.
pub const TOPIC_WORD_BYTES: usize = 32 * 1024;
/// Bindings of a topic exchange.
pub const TOPIC_BINDINGS: usize = 1024;
/// Bindings of a direct, fanout or headers exchange.
pub const MAX_TABLE_BINDINGS: usize = 4096;
/// Bindings routed per call of core's [`Exchange`] for direct, fanout and headers exchanges.
pub const ROUTE_CHUNK: usize = 32;

/// The router of a topic exchange: about 160 KiB, so always boxed (see the size test). The
/// nodes allow every binding a pattern of two new words.
type Router = TopicRouter<QueueId, TOPIC_NODES, TOPIC_EDGES, TOPIC_WORD_BYTES, TOPIC_BINDINGS>;

#[derive(Debug, Clone, PartialEq)]
struct TableBinding {
    key: String,
    args: Headers,
    queue: QueueId,
}

#[derive(Debug)]
enum Bindings {
    Topic {
        router: Box<Router>,
        /// The `(pattern, queue)` pairs bound, to unbind a deleted queue.
        patterns: Vec<(String, QueueId)>,
    },
    Table(Vec<TableBinding>),
}

/// One exchange and its bindings.
#[derive(Debug)]
pub(crate) struct ExchangeEntry {
    kind: ExchangeKind,
    bindings: Bindings,
    /// Where messages this exchange routes nowhere go (`alternate-exchange`).
    alternate: Option<String>,
}

impl ExchangeEntry {
    /// An exchange of `kind` without bindings.
    pub(crate) fn new(kind: ExchangeKind) -> Self {
        let bindings = match kind {
            ExchangeKind::Topic => Bindings::Topic {
                router: Box::new(Router::new()),
                patterns: Vec::new(),
            },
            _ => Bindings::Table(Vec::new()),
        };
        ExchangeEntry {
            kind,
            bindings,
            alternate: None,
        }
    }

    /// The same exchange with an alternate exchange.
    pub(crate) fn with_alternate(mut self, alternate: Option<String>) -> Self {
        self.alternate = alternate;
        self
    }

    /// The alternate exchange, if any.
    pub(crate) fn alternate(&self) -> Option<&str> {
        self.alternate.as_deref()
    }

    pub(crate) fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Number of bindings.
    pub(crate) fn len(&self) -> usize {
        match &self.bindings {
            Bindings::Topic { patterns, .. } => patterns.len(),
            Bindings::Table(t) => t.len(),
        }
    }

    /// Binds `queue` with a key (pattern for topic, routing key for direct, unused by fanout
    /// and headers) and arguments (used by headers). Idempotent, as on RabbitMQ. On error the
    /// exchange is unchanged.
    pub(crate) fn bind(&mut self, key: &str, args: &Headers, queue: QueueId) -> Result<()> {
        match &mut self.bindings {
            Bindings::Topic { router, patterns } => {
                if patterns.iter().any(|(p, q)| p == key && *q == queue) {
                    return Ok(());
                }
                router.bind(key, queue).map_err(bind_error)?;
                patterns.push((key.to_owned(), queue));
                Ok(())
            }
            Bindings::Table(table) => {
                let fields = binding_fields(args)?;
                // Validate through core exactly as routing will use it (x-match, key length).
                let mut probe: Exchange<'_, QueueId, 1> = Exchange::new(self.kind);
                probe.bind(key, &fields, queue).map_err(exchange_error)?;
                let binding = TableBinding {
                    key: key.to_owned(),
                    args: args.clone(),
                    queue,
                };
                if table.contains(&binding) {
                    return Ok(());
                }
                if table.len() >= MAX_TABLE_BINDINGS {
                    return Err(capacity("bindings of a direct, fanout or headers exchange"));
                }
                table.push(binding);
                Ok(())
            }
        }
    }

    /// Removes one binding; returns whether it existed.
    pub(crate) fn unbind(&mut self, key: &str, args: &Headers, queue: QueueId) -> bool {
        match &mut self.bindings {
            Bindings::Topic { router, patterns } => {
                match patterns.iter().position(|(p, q)| p == key && *q == queue) {
                    Some(i) => {
                        patterns.swap_remove(i);
                        router.unbind(key, queue)
                    }
                    None => false,
                }
            }
            Bindings::Table(table) => {
                let before = table.len();
                table.retain(|b| !(b.key == key && b.args == *args && b.queue == queue));
                table.len() != before
            }
        }
    }

    /// Removes every binding to `queue` (the queue was deleted).
    pub(crate) fn unbind_queue(&mut self, queue: QueueId) {
        match &mut self.bindings {
            Bindings::Topic { router, patterns } => {
                patterns.retain(|(p, q)| {
                    if *q == queue {
                        router.unbind(p, queue);
                        false
                    } else {
                        true
                    }
                });
            }
            Bindings::Table(table) => table.retain(|b| b.queue != queue),
        }
    }

    /// Replaces `out` with the queues that receive a message with `routing_key` and
    /// `headers`, each once, in no particular order.
    pub(crate) fn route(
        &mut self,
        routing_key: &str,
        headers: &Headers,
        out: &mut Vec<QueueId>,
    ) -> Result<()> {
        out.clear();
        match &mut self.bindings {
            Bindings::Topic { router, patterns } => {
                // Distinct destinations never outnumber bindings.
                out.resize(patterns.len().max(1), 0);
                let n = router.route(routing_key, out).map_err(route_error)?;
                out.truncate(n);
                Ok(())
            }
            Bindings::Table(table) => {
                let message_fields = match self.kind {
                    ExchangeKind::Headers => message_fields(headers),
                    _ => Vec::new(),
                };
                let message = Routing {
                    routing_key,
                    headers: &message_fields,
                };
                let mut found = [0 as QueueId; ROUTE_CHUNK];
                for chunk in table.chunks(ROUTE_CHUNK) {
                    let args: Vec<Vec<FieldPair<'_>>> = chunk
                        .iter()
                        .map(|b| binding_fields(&b.args))
                        .collect::<Result<_>>()?;
                    let mut exchange: Exchange<'_, QueueId, ROUTE_CHUNK> = Exchange::new(self.kind);
                    for (b, a) in chunk.iter().zip(&args) {
                        exchange.bind(&b.key, a, b.queue).map_err(exchange_error)?;
                    }
                    let n = exchange.route(&message, &mut found).map_err(route_error)?;
                    out.extend_from_slice(found.get(..n).unwrap_or(&[]));
                }
                out.sort_unstable();
                out.dedup();
                Ok(())
            }
        }
    }
}

/// The core view of a header value; tables, lists and decimals have none.
fn core_value(value: &HeaderValue) -> Option<CoreValue<'_>> {
    Some(match value {
        HeaderValue::Void => CoreValue::Void,
        HeaderValue::Bool(b) => CoreValue::Bool(*b),
        HeaderValue::Int(i) => CoreValue::Int(*i),
        HeaderValue::Float(f) => CoreValue::Float(*f),
        HeaderValue::Str(s) => CoreValue::Str(s),
        HeaderValue::Bytes(b) => CoreValue::Bytes(b),
        HeaderValue::Timestamp(t) => CoreValue::UInt(*t),
        HeaderValue::Decimal { .. } | HeaderValue::List(_) | HeaderValue::Table(_) => return None,
    })
}

/// Message headers as core fields. A value core cannot compare (table, list, decimal) reads
/// as void: it still satisfies a presence check and never equals a binding value.
fn message_fields(headers: &Headers) -> Vec<FieldPair<'_>> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), core_value(v).unwrap_or(CoreValue::Void)))
        .collect()
}

/// Binding arguments as core fields; a table, list or decimal argument is refused.
fn binding_fields(args: &Headers) -> Result<Vec<FieldPair<'_>>> {
    args.iter()
        .map(|(k, v)| match core_value(v) {
            Some(v) => Ok((k.as_str(), v)),
            None => Err(
                Error::new(ErrorKind::BrokerRefused { reply_code: 540 }).context(format!(
                    "binding argument {k:?}: tables, lists and decimals are not supported"
                )),
            ),
        })
        .collect()
}

fn capacity(what: &'static str) -> Error {
    Error::new(ErrorKind::CapacityExceeded { what })
}

fn bind_error(e: BindError) -> Error {
    match e {
        BindError::PatternTooLong => {
            Error::invalid_name(NameKind::BindingPattern, NameProblem::TooLong { len: 256 })
        }
        BindError::NodesFull => capacity("trie nodes of a topic exchange"),
        BindError::EdgesFull => capacity("literal word slots of a topic exchange"),
        BindError::WordBytesFull => capacity("word arena of a topic exchange"),
        BindError::BindingsFull => capacity("bindings of a topic exchange"),
        _ => capacity("topic exchange"),
    }
}

fn exchange_error(e: ExchangeError) -> Error {
    match e {
        ExchangeError::KeyTooLong => {
            Error::invalid_name(NameKind::BindingPattern, NameProblem::TooLong { len: 256 })
        }
        ExchangeError::BindingsFull => capacity("bindings of a direct, fanout or headers exchange"),
        ExchangeError::Topic(e) => bind_error(e),
        // RabbitMQ refuses such a binding with 406 PRECONDITION_FAILED.
        ExchangeError::Headers(e) => {
            Error::new(ErrorKind::BrokerRefused { reply_code: 406 }).context(e.to_string())
        }
        _ => Error::new(ErrorKind::BrokerRefused { reply_code: 406 }),
    }
}

fn route_error(e: RouteError) -> Error {
    match e {
        RouteError::RoutingKeyTooLong => {
            Error::invalid_name(NameKind::RoutingKey, NameProblem::TooLong { len: 256 })
        }
        _ => capacity("routing output of an exchange"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_stays_boxable() {
        // Boxed per topic exchange; keep it far below a thread's stack.
        let size = core::mem::size_of::<Router>();
        assert!(size <= 192 * 1024, "{size}");
    }

    #[test]
    fn topic_routing_dedups() {
        let mut ex = ExchangeEntry::new(ExchangeKind::Topic);
        let none = Headers::new();
        ex.bind("mailer.ad.*", &none, 1).unwrap();
        ex.bind("mailer.#", &none, 2).unwrap();
        ex.bind("mailer.#", &none, 1).unwrap();
        ex.bind("mailer.#", &none, 1).unwrap();
        assert_eq!(ex.len(), 3);
        let mut out = Vec::new();
        ex.route("mailer.ad.expired", &none, &mut out).unwrap();
        out.sort();
        assert_eq!(out, [1, 2]);
        ex.unbind_queue(1);
        ex.route("mailer.ad.expired", &none, &mut out).unwrap();
        assert_eq!(out, [2]);
    }

    #[test]
    fn table_routing_spans_chunks() {
        let mut ex = ExchangeEntry::new(ExchangeKind::Fanout);
        let none = Headers::new();
        for q in 0..(3 * ROUTE_CHUNK as u32 + 5) {
            ex.bind("", &none, q).unwrap();
        }
        let mut out = Vec::new();
        ex.route("any", &none, &mut out).unwrap();
        assert_eq!(out.len(), 3 * ROUTE_CHUNK + 5);
    }
}
