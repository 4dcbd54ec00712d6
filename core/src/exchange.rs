//! Exchange routing for the four kinds of AMQP 0-9-1 exchanges
//! ([RabbitMQ docs](https://www.rabbitmq.com/docs/exchanges)):
//!
//! | kind      | a binding `(key, args, dest)` receives a message when ...                  |
//! |-----------|----------------------------------------------------------------------------|
//! | `direct`  | the message's routing key equals `key`                                      |
//! | `fanout`  | always                                                                      |
//! | `topic`   | the routing key matches the pattern `key` ([`crate::topic::matches`])       |
//! | `headers` | the message headers match `args` ([`crate::headers::matches`])              |
//!
//! A message is delivered to each destination once, however many of its bindings match,
//! as RabbitMQ does. Bindings are idempotent: binding the same `(key, args, dest)` twice
//! is one binding (for `topic`, the same `(pattern, dest)`; its arguments are not used).
//!
//! Direct, fanout and headers bindings borrow their key and arguments for `'a` and are
//! scanned when routing; topic bindings are copied into a [`TopicRouter`], whose routing
//! cost does not grow with the number of bindings.

#[cfg(test)]
mod tests;

use crate::headers::{matches_mode, FieldPair, HeadersError, XMatch};
use crate::router::{BindError, RouteError, TopicRouter};
use crate::topic::{validate_routing_key, TopicError};

/// The kind of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ExchangeKind {
    /// Routing key equality.
    Direct,
    /// Every binding.
    Fanout,
    /// Topic patterns (`*`, `#`).
    Topic,
    /// Header matching (`x-match`).
    Headers,
}

/// What an exchange routes a message by: its routing key and its headers.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Routing<'m> {
    /// The routing key (at most 255 bytes).
    pub routing_key: &'m str,
    /// The message headers (`application_headers`).
    pub headers: &'m [FieldPair<'m>],
}

/// Why [`Exchange::bind`] failed. The exchange is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ExchangeError {
    /// The binding key is longer than 255 bytes (AMQP short string).
    KeyTooLong,
    /// No free binding slot (`BINDINGS`).
    BindingsFull,
    /// The topic router refused the binding (it names what is full).
    Topic(BindError),
    /// The headers binding's `x-match` is invalid.
    Headers(HeadersError),
}

impl core::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ExchangeError::KeyTooLong => f.write_str("binding key longer than 255 bytes"),
            ExchangeError::BindingsFull => f.write_str("exchange full: no free binding slot"),
            ExchangeError::Topic(e) => write!(f, "{e}"),
            ExchangeError::Headers(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for ExchangeError {}

#[derive(Debug, Clone, Copy)]
struct TableBinding<'a, D> {
    key: &'a str,
    args: &'a [FieldPair<'a>],
    mode: XMatch,
    dest: D,
}

#[derive(Debug, Clone)]
enum Bindings<'a, D, const B: usize, const N: usize, const E: usize, const W: usize> {
    Table(heapless::Vec<TableBinding<'a, D>, B>),
    Topic(TopicRouter<D, N, E, W, B>),
}

/// An exchange of one kind with at most `BINDINGS` bindings to destinations `D`.
///
/// `NODES`, `EDGES` and `WORD_BYTES` size the [`TopicRouter`] of a topic exchange (see
/// [`crate::router`]); other kinds leave them at their defaults.
///
/// ```
/// use lepus_core::exchange::{Exchange, ExchangeKind, Routing};
/// use lepus_core::headers::FieldValue;
/// let args = [("x-match", FieldValue::Str("any")), ("format", FieldValue::Str("pdf"))];
/// let mut ex: Exchange<'_, u8, 8> = Exchange::new(ExchangeKind::Headers);
/// ex.bind("", &args, 1).unwrap();
/// let headers = [("format", FieldValue::Str("pdf"))];
/// let mut out = [0u8; 4];
/// let n = ex.route(&Routing { routing_key: "", headers: &headers }, &mut out).unwrap();
/// assert_eq!(&out[..n], &[1]);
/// ```
#[derive(Debug, Clone)]
pub struct Exchange<
    'a,
    D,
    const BINDINGS: usize,
    const NODES: usize = 1,
    const EDGES: usize = 0,
    const WORD_BYTES: usize = 0,
> {
    kind: ExchangeKind,
    bindings: Bindings<'a, D, BINDINGS, NODES, EDGES, WORD_BYTES>,
}

impl<'a, D, const B: usize, const N: usize, const E: usize, const W: usize>
    Exchange<'a, D, B, N, E, W>
where
    D: Copy + Eq,
{
    /// An exchange of `kind` without bindings. Never panics, never allocates.
    pub const fn new(kind: ExchangeKind) -> Self {
        let bindings = match kind {
            ExchangeKind::Topic => Bindings::Topic(TopicRouter::new()),
            _ => Bindings::Table(heapless::Vec::new()),
        };
        Exchange { kind, bindings }
    }

    /// The kind of this exchange.
    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        match &self.bindings {
            Bindings::Table(t) => t.len(),
            Bindings::Topic(r) => r.len(),
        }
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Binds `dest` with a binding key (routing key for direct, pattern for topic, unused
    /// otherwise) and arguments (used by headers). Binding the same triple twice is one
    /// binding. On error the exchange is unchanged.
    pub fn bind(
        &mut self,
        key: &'a str,
        args: &'a [FieldPair<'a>],
        dest: D,
    ) -> Result<(), ExchangeError> {
        if validate_routing_key(key).is_err() {
            return Err(ExchangeError::KeyTooLong);
        }
        let mode = match self.kind {
            ExchangeKind::Headers => XMatch::from_args(args).map_err(ExchangeError::Headers)?,
            _ => XMatch::All,
        };
        match &mut self.bindings {
            Bindings::Topic(router) => router.bind(key, dest).map_err(ExchangeError::Topic),
            Bindings::Table(table) => {
                if table.iter().any(|b| same(b, key, args, dest)) {
                    return Ok(());
                }
                table
                    .push(TableBinding {
                        key,
                        args,
                        mode,
                        dest,
                    })
                    .map_err(|_| ExchangeError::BindingsFull)
            }
        }
    }

    /// Removes the binding `(key, args, dest)`; returns whether it existed.
    pub fn unbind(&mut self, key: &str, args: &[FieldPair<'_>], dest: D) -> bool {
        match &mut self.bindings {
            Bindings::Topic(router) => router.unbind(key, dest),
            Bindings::Table(table) => match table.iter().position(|b| same(b, key, args, dest)) {
                Some(i) => {
                    table.remove(i);
                    true
                }
                None => false,
            },
        }
    }

    /// Writes each destination that should receive `message` into `out`, once, and returns
    /// how many (in no particular order). Never panics, never allocates.
    pub fn route(&mut self, message: &Routing<'_>, out: &mut [D]) -> Result<usize, RouteError> {
        if validate_routing_key(message.routing_key) == Err(TopicError::RoutingKeyTooLong) {
            return Err(RouteError::RoutingKeyTooLong);
        }
        let table = match &mut self.bindings {
            Bindings::Topic(router) => return router.route(message.routing_key, out),
            Bindings::Table(table) => table,
        };
        let mut count = 0usize;
        for b in table.iter() {
            let hit = match self.kind {
                ExchangeKind::Direct => b.key == message.routing_key,
                ExchangeKind::Fanout => true,
                ExchangeKind::Headers => matches_mode(b.mode, b.args, message.headers),
                ExchangeKind::Topic => crate::topic::matches(b.key, message.routing_key),
            };
            if !hit || out.get(..count).unwrap_or(&[]).contains(&b.dest) {
                continue;
            }
            match out.get_mut(count) {
                Some(o) => *o = b.dest,
                None => return Err(RouteError::OutputFull),
            }
            count += 1;
        }
        Ok(count)
    }
}

fn same<D: Eq>(b: &TableBinding<'_, D>, key: &str, args: &[FieldPair<'_>], dest: D) -> bool {
    b.dest == dest && b.key == key && b.args == args
}
