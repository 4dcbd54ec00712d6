//! `lepus tail QUEUE-OR-PATTERN`: print the tasks flowing through the exchange, first
//! attempts and retries, without taking anyone's messages and, through the firehose, without
//! changing routing.
//!
//! Two ways to watch:
//! - **firehose** (the default when the management API answers): RabbitMQ's tracer copies
//!   every publish of the virtual host to `amq.rabbitmq.trace` (routing key
//!   `publish.<exchange>`, the original exchange, routing keys, properties and the queues it
//!   was routed to in headers). The tail binds a temporary queue there for `publish.<exchange>`
//!   (first attempts, and whether anything took them) and `publish.lepus.delay.*` (retries
//!   and delayed sends entering the delay levels: the due time is in their level digits), and
//!   filters by the pattern itself. Routing of the exchange is untouched: a send nobody takes
//!   stays unroutable. The tracer costs the broker a copy per publish while it is on: the
//!   tail that turns it on declares the marker exchange `lepus.tail.firehose`, and the last
//!   tail to end (no other queue bound to the trace exchange) turns the tracer off and deletes
//!   the marker; a tracer found on without the marker was the operator's and stays on.
//! - **tap** (`--via tap`, or when the firehose cannot be had): a temporary queue bound to the
//!   exchange with the pattern. Binding is routing: while it runs, messages with matching
//!   keys that no other queue takes are routed to it (a mandatory send or a `lepus call` to a
//!   missing server is not refused), and retries are not seen (they come back through the
//!   delay levels). The tail says so when it starts.

use std::time::Duration;

use lepus::core::delay::{delay_of, exchange_from_word, parse_destination};
use lepus::core::topic;
use lepus::{Delivery, HeaderValue, Headers, HEADER_ORIGIN_EXCHANGE, HEADER_ORIGIN_ROUTING_KEY};
use serde_json::json;

use crate::cli::{Global, Output, TailArgs, TailVia};
use crate::failure::{Code, Failure};
use crate::management::Management;
use crate::show::{iso_millis, summarize, summarize_body};
use crate::snapshot;

/// The firehose exchange.
const TRACE_EXCHANGE: &str = "amq.rabbitmq.trace";
/// An exchange that exists while tails turned the tracer on: the last one to end turns it off
/// (one that found it on without the marker leaves it as the operator set it).
const FIREHOSE_MARKER: &str = "lepus.tail.firehose";

/// The firehose as this tail uses it.
struct Firehose {
    api: Management,
    vhost: String,
    /// This tail turned the tracer on.
    turned_on: bool,
    /// Tails turned it on (this one or another, [`FIREHOSE_MARKER`]): the last to end turns it
    /// off.
    owned: bool,
}

pub async fn run(g: &Global, args: TailArgs) -> Result<Code, Failure> {
    let transport = crate::connect(g).await?;
    let patterns = patterns(g, &args, &transport).await?;
    let firehose = match args.via {
        TailVia::Tap => None,
        via => match firehose(g).await {
            Ok(f) => Some(f),
            Err(f) if via == TailVia::Firehose => return Err(f),
            Err(f) => {
                eprintln!(
                    "lepus: no firehose ({}); tapping the exchange instead",
                    f.message
                );
                None
            }
        },
    };
    let subscription = match &firehose {
        Some(f) => {
            let api = f.api.clone();
            let (vhost, exchange) = (f.vhost.clone(), g.exchange.clone());
            let exists =
                tokio::task::spawn_blocking(move || api.exchange_exists(&vhost, &exchange))
                    .await
                    .map_err(|e| Failure::new(Code::Failed, format!("management task: {e}")))?;
            if exists == Ok(false) {
                stop_firehose(firehose).await;
                return Err(Failure::not_found(format!(
                    "exchange {:?} does not exist",
                    g.exchange
                )));
            }
            let keys = vec![
                format!("publish.{}", g.exchange),
                "publish.lepus.delay.*".to_owned(),
                "publish.lepus.delay.quorum.*".to_owned(),
            ];
            transport.tap(TRACE_EXCHANGE, &keys).await
        }
        None => transport.tap(&g.exchange, &patterns).await,
    };
    let mut tap = match subscription {
        Ok(tap) => tap,
        Err(e) => {
            stop_firehose(firehose).await;
            let mut f = Failure::from(e);
            if f.code == Code::NotFound {
                f.message = format!("exchange {:?} does not exist: {}", g.exchange, f.message);
            }
            return Err(f);
        }
    };
    match &firehose {
        Some(f) => eprintln!(
            "tailing exchange {:?} with {} through RabbitMQ's firehose ({TRACE_EXCHANGE}{}): \
             routing is unchanged, retries are shown; Ctrl-C to stop",
            g.exchange,
            patterns.join(", "),
            if f.turned_on {
                format!(", turned on for vhost {:?} until this tail ends", f.vhost)
            } else {
                String::new()
            }
        ),
        None => eprintln!(
            "tailing exchange {:?} with {} through a tap queue bound to it; Ctrl-C to stop. \
             NOTE: while the tap runs, messages with these keys that no other queue takes are \
             routed to it (a send or a `lepus call` nobody takes is not refused as \
             unroutable), and retries are not shown: use the firehose (--via firehose, with \
             the management API) to watch without changing routing",
            g.exchange,
            patterns.join(", ")
        ),
    }
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let sleep = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut seen = 0u64;
    let mut failure = None;
    while args.count.is_none_or(|n| seen < n) {
        let delivery = tokio::select! {
            d = tap.next() => d,
            _ = &mut sleep => break,
            _ = &mut ctrl_c => break,
        };
        let Some(delivery) = delivery else { break };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                failure = Some(Failure::from(e));
                break;
            }
        };
        let event = match firehose {
            Some(_) => traced(&delivery, &g.exchange, &patterns),
            None => Some(Event::tapped(&delivery)),
        };
        if let Some(event) = event {
            seen += 1;
            print(g.output, &event);
        }
        // The tap queue is ours: acknowledging only empties it.
        let _ = delivery.ack().await;
    }
    let _ = tap.cancel().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), transport.close()).await;
    stop_firehose(firehose).await;
    match failure {
        Some(f) => Err(f),
        None => Ok(Code::Ok),
    }
}

/// The management API of `g`, with the tracer of the AMQP address's vhost on.
async fn firehose(g: &Global) -> Result<Firehose, Failure> {
    let api = snapshot::management(g)?;
    let vhost = snapshot::vhost_of(g.amqp()?);
    let f = tokio::task::spawn_blocking(move || {
        let turned_on = !api.tracing(&vhost)?;
        if turned_on {
            api.set_marker(&vhost, FIREHOSE_MARKER, true)?;
            api.set_tracing(&vhost, true)?;
        }
        let owned = turned_on || api.exchange_exists(&vhost, FIREHOSE_MARKER)?;
        Ok::<_, crate::management::ManagementError>(Firehose {
            api,
            vhost,
            turned_on,
            owned,
        })
    })
    .await
    .map_err(|e| Failure::new(Code::Failed, format!("management task: {e}")))??;
    Ok(f)
}

/// Turns the tracer off if tails turned it on and no other queue listens to it.
async fn stop_firehose(firehose: Option<Firehose>) {
    let Some(f) = firehose.filter(|f| f.owned) else {
        return;
    };
    let result = tokio::task::spawn_blocking(move || {
        // Our tap queue went with the connection; anyone still bound is someone else.
        let others = f.api.trace_listeners(&f.vhost)?;
        if others == 0 {
            f.api.set_tracing(&f.vhost, false)?;
            f.api.set_marker(&f.vhost, FIREHOSE_MARKER, false)?;
        }
        Ok::<_, crate::management::ManagementError>((others, f.vhost))
    })
    .await;
    match result {
        Ok(Ok((0, _))) => {}
        Ok(Ok((others, vhost))) => eprintln!(
            "lepus: the firehose stays on for vhost {vhost:?}: {others} other queue(s) listen \
             to {TRACE_EXCHANGE} (turn it off with `rabbitmqctl trace_off -p {vhost}` or the \
             management API)"
        ),
        Ok(Err(e)) => eprintln!("lepus: could not turn the firehose off: {e}"),
        Err(e) => eprintln!("lepus: could not turn the firehose off: {e}"),
    }
}

/// One message seen.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    /// `published` (a send to the exchange), `retry` (a failed attempt's copy entering the
    /// delay levels), `delayed` (a delayed send entering them), `tapped` (tap mode).
    kind: &'static str,
    exchange: String,
    routing_key: String,
    message_type: String,
    retry_count: u32,
    message_id: Option<String>,
    payload: serde_json::Value,
    envelope_error: Option<String>,
    /// Whether a queue took it (firehose `publish` only).
    routed: Option<bool>,
    /// How long it waits on the delay levels.
    delay_ms: Option<u64>,
    /// When it was seen, Unix milliseconds.
    seen_at_ms: i64,
}

fn now_ms() -> i64 {
    i64::try_from(crate::now_millis()).unwrap_or(i64::MAX)
}

impl Event {
    fn tapped(d: &Delivery) -> Event {
        let s = summarize(d);
        Event {
            kind: "tapped",
            exchange: d.exchange.clone(),
            routing_key: d.routing_key.clone(),
            message_type: s.message_type,
            retry_count: s.retry_count,
            message_id: d.message_id().map(str::to_owned),
            payload: s.payload,
            envelope_error: s.envelope_error,
            routed: None,
            delay_ms: None,
            seen_at_ms: now_ms(),
        }
    }
}

fn str_of<'a>(h: &'a Headers, key: &str) -> Option<&'a str> {
    h.get(key).and_then(HeaderValue::as_str)
}

/// A firehose message as an event of `exchange` matching one of `patterns`; `None` for the
/// other exchanges' and keys' traffic.
fn traced(d: &Delivery, exchange: &str, patterns: &[String]) -> Option<Event> {
    let h = &d.properties().headers;
    let traced_exchange = str_of(h, "exchange_name")?;
    let first_key = match h.get("routing_keys") {
        Some(HeaderValue::List(keys)) => keys.first().and_then(HeaderValue::as_str),
        _ => None,
    }
    .unwrap_or_default();
    let empty = Headers::new();
    let props = match h.get("properties") {
        Some(HeaderValue::Table(t)) => t,
        _ => &empty,
    };
    let inner = match props.get("headers") {
        Some(HeaderValue::Table(t)) => t,
        _ => &empty,
    };
    let (kind, origin_exchange, key, delay_ms) = if traced_exchange == exchange {
        ("published", exchange.to_owned(), first_key.to_owned(), None)
    } else if traced_exchange.starts_with(lepus::delay::PREFIX) {
        let delay = delay_of(|header| {
            inner.get(header).map(|v| match v {
                HeaderValue::Int(i) => *i == 1,
                HeaderValue::Bool(b) => *b,
                HeaderValue::Str(s) => s == "1",
                _ => false,
            })
        });
        match (
            str_of(inner, HEADER_ORIGIN_EXCHANGE),
            str_of(inner, HEADER_ORIGIN_ROUTING_KEY),
        ) {
            // A failed attempt's copy: the worker wrote where it first went.
            (Some(e), Some(k)) => ("retry", e.to_owned(), k.to_owned(), Some(delay)),
            // A delayed send: its destination is in its routing key.
            _ => {
                let dest = parse_destination(first_key).ok()?;
                let mut buf = [0u8; 255];
                let n = exchange_from_word(dest.exchange_word, &mut buf).ok()?;
                let e = std::str::from_utf8(buf.get(..n)?).ok()?.to_owned();
                ("delayed", e, dest.routing_key.to_owned(), Some(delay))
            }
        }
    } else {
        return None;
    };
    if origin_exchange != exchange || !patterns.iter().any(|p| topic::matches(p, &key)) {
        return None;
    }
    let s = summarize_body(&d.body, str_of(props, "type"));
    let routed = match (kind, h.get("routed_queues")) {
        ("published", Some(HeaderValue::List(queues))) => Some(!queues.is_empty()),
        _ => None,
    };
    Some(Event {
        kind,
        exchange: origin_exchange,
        routing_key: key,
        message_type: s.message_type,
        retry_count: s.retry_count,
        message_id: str_of(props, "message_id").map(str::to_owned),
        payload: s.payload,
        envelope_error: s.envelope_error,
        routed,
        delay_ms,
        seen_at_ms: now_ms(),
    })
}

/// The patterns to match: the argument itself, or the bindings of the queue it names.
async fn patterns(
    g: &Global,
    args: &TailArgs,
    transport: &lepus::AmqpTransport,
) -> Result<Vec<String>, Failure> {
    let target = args.target.clone();
    let wildcard = target.split('.').any(|w| w == "*" || w == "#");
    if args.pattern
        || wildcard
        || transport
            .queue_status(&target)
            .await
            .ok()
            .flatten()
            .is_none()
    {
        return Ok(vec![target]);
    }
    let vhost = snapshot::vhost_of(g.amqp()?);
    let bindings = snapshot::read_async(g, vhost)
        .await
        .map_err(|mut f| {
            f.message = format!(
                "{target:?} is a queue; its bindings are read through the management API or \
                 rabbitmqctl, which failed (pass --pattern to tail it as a routing pattern): {}",
                f.message
            );
            f
        })?
        .bindings;
    let patterns: Vec<String> = bindings
        .into_iter()
        .filter(|b| b.source == g.exchange && b.destination == target)
        .map(|b| b.routing_key)
        .collect();
    if patterns.is_empty() {
        return Err(Failure::not_found(format!(
            "queue {target:?} has no bindings on exchange {:?} (pass --pattern to tail it as a \
             routing pattern)",
            g.exchange
        )));
    }
    Ok(patterns)
}

fn print(output: Output, e: &Event) {
    let attempt = e.retry_count.saturating_add(1);
    let due_at = e.delay_ms.map(|d| {
        iso_millis(
            e.seen_at_ms
                .saturating_add(i64::try_from(d).unwrap_or(i64::MAX)),
        )
    });
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "event": e.kind,
                "type": e.message_type,
                "routing_key": e.routing_key,
                "exchange": e.exchange,
                "attempt": attempt,
                "retry_count": e.retry_count,
                "message_id": e.message_id,
                "routed": e.routed,
                "delay_ms": e.delay_ms,
                "due_at": due_at,
                "payload": e.payload,
                "envelope_error": e.envelope_error,
            })
        ),
        Output::Text => {
            let note = match (e.kind, e.routed, e.delay_ms, &due_at) {
                (_, Some(false), _, _) => "  UNROUTABLE (no queue took it)".to_owned(),
                ("retry", _, Some(ms), Some(at)) => format!("  retry, due in {ms}ms at {at}"),
                ("delayed", _, Some(ms), Some(at)) => format!("  delayed {ms}ms, due at {at}"),
                _ => String::new(),
            };
            println!(
                "{} key={} attempt={attempt} id={}{note}",
                e.message_type,
                e.routing_key,
                e.message_id.as_deref().unwrap_or("-"),
            );
            if let Some(err) = &e.envelope_error {
                println!("  (not a lepus envelope: {err})");
            }
            println!("  {}", e.payload);
        }
    }
}
