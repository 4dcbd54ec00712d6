//! `lepus dead list|show|replay|purge QUEUE`: the dead letters in `<QUEUE>.dead`.
//!
//! Listing and showing take messages with `basic.get` and never settle them: closing the
//! channel puts them all back in place. A replay settles a dead letter only after its
//! re-publish was confirmed by the broker, so an interrupted replay (Ctrl-C, crash, lost
//! connection) leaves every message not yet replayed in the dead-letter queue.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lepus::core::envelope::{rewrite_json_replay, RewriteError};
use lepus::{
    AmqpTransport, Delivery, HeaderValue, Headers, Properties, Publication, Transport,
    HEADER_ATTEMPTS, HEADER_ERROR, HEADER_FAILED_AT, HEADER_ORIGIN_EXCHANGE, HEADER_ORIGIN_QUEUE,
    HEADER_ORIGIN_ROUTING_KEY, HEADER_REASON,
};
use serde_json::{json, Value};

use crate::cli::{
    DeadListArgs, DeadPurgeArgs, DeadQueueArgs, DeadReplayArgs, DeadSelectArgs, DeadShowArgs,
    Global, Output,
};
use crate::failure::{Code, Failure};
use crate::show::{header_text, headers_json, iso_millis, summarize};

/// `mailer` -> `mailer.dead`; `mailer.dead` stays.
fn dead_queue(args: &DeadQueueArgs) -> String {
    if args.queue.ends_with(".dead") {
        args.queue.clone()
    } else {
        format!("{}.dead", args.queue)
    }
}

/// Connects and checks that the dead-letter queue exists; returns its ready count.
pub async fn open(g: &Global, dead: &str) -> Result<(AmqpTransport, u32), Failure> {
    let transport = crate::connect(g).await?;
    match transport.queue_status(dead).await? {
        Some(status) => Ok((transport, status.messages)),
        None => Err(Failure::not_found(format!(
            "dead-letter queue {dead:?} does not exist"
        ))),
    }
}

/// Where a dead letter came from: origin headers, else RabbitMQ's own `x-death`.
fn origin(headers: &Headers) -> Option<(String, String)> {
    let from_lepus = (
        headers
            .get(HEADER_ORIGIN_EXCHANGE)
            .and_then(HeaderValue::as_str),
        headers
            .get(HEADER_ORIGIN_ROUTING_KEY)
            .and_then(HeaderValue::as_str),
    );
    if let (Some(exchange), Some(key)) = from_lepus {
        return Some((exchange.to_owned(), key.to_owned()));
    }
    let HeaderValue::List(deaths) = headers.get("x-death")? else {
        return None;
    };
    let HeaderValue::Table(first) = deaths.last()? else {
        return None;
    };
    let exchange = first.get("exchange")?.as_str()?.to_owned();
    let HeaderValue::List(keys) = first.get("routing-keys")? else {
        return None;
    };
    Some((exchange, keys.first()?.as_str()?.to_owned()))
}

/// One dead letter as JSON (`full` adds headers and properties).
fn describe(position: u32, d: &Delivery, full: bool) -> Value {
    let h = &d.properties().headers;
    let s = summarize(d);
    let failed_at = h.get(HEADER_FAILED_AT).and_then(HeaderValue::as_i64);
    let origin = origin(h);
    let mut doc = json!({
        "position": position,
        "message_id": d.message_id(),
        "type": s.message_type,
        "reason": reason_of(h),
        "error": header_text(h, HEADER_ERROR),
        "attempts": h.get(HEADER_ATTEMPTS).and_then(HeaderValue::as_i64),
        "failed_at": failed_at.map(iso_millis),
        "origin_queue": header_text(h, HEADER_ORIGIN_QUEUE),
        "origin_exchange": origin.as_ref().map(|o| o.0.clone()),
        "origin_routing_key": origin.as_ref().map(|o| o.1.clone()),
        "retry_count": s.retry_count,
        "payload": s.payload,
    });
    if full {
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("headers".into(), headers_json(h));
            obj.insert("envelope_error".into(), json!(s.envelope_error));
            obj.insert("body".into(), json!(String::from_utf8_lossy(&d.body)));
        }
    }
    doc
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first `n` dead letters of `dead`, described as `dead list --output json` does; they
/// stay in place.
pub async fn browse(transport: &AmqpTransport, dead: &str, n: u32) -> Result<Vec<Value>, Failure> {
    let browser = transport.browse().await?;
    let mut docs = Vec::new();
    for position in 1..=n {
        let Some((d, _)) = browser.get(dead).await? else {
            break;
        };
        docs.push(describe(position, &d, true));
    }
    browser.close().await?;
    Ok(docs)
}

pub async fn list(g: &Global, args: DeadListArgs) -> Result<Code, Failure> {
    let dead = dead_queue(&args.queue);
    let (transport, ready) = open(g, &dead).await?;
    let mut docs = browse(&transport, &dead, ready.min(args.limit)).await?;
    for doc in &mut docs {
        if let Some(obj) = doc.as_object_mut() {
            for key in ["headers", "envelope_error", "body"] {
                obj.remove(key);
            }
        }
    }
    let _ = transport.close().await;
    match g.output {
        Output::Json => println!("{}", Value::Array(docs)),
        Output::Text => {
            println!("{dead}: {ready} dead letters");
            for d in &docs {
                println!(
                    "{:>4}  {}  {}  reason={}  attempts={}  failed={}  from={}/{}",
                    plain(field(d, "position")),
                    plain(field(d, "message_id")),
                    plain(field(d, "type")),
                    plain(field(d, "reason")),
                    plain(field(d, "attempts")),
                    plain(field(d, "failed_at")),
                    plain(field(d, "origin_exchange")),
                    plain(field(d, "origin_routing_key")),
                );
                let error = plain(field(d, "error"));
                if error != "-" {
                    println!("      error: {error}");
                }
            }
        }
    }
    Ok(Code::Ok)
}

pub async fn show(g: &Global, args: DeadShowArgs) -> Result<Code, Failure> {
    let dead = dead_queue(&args.queue);
    let (transport, ready) = open(g, &dead).await?;
    let browser = transport.browse().await?;
    // The row number `dead list` printed, if the argument is one; a message id equal to
    // the argument wins over it.
    let row: Option<u32> = args.id.trim().parse().ok().filter(|n| *n >= 1);
    let (mut by_id, mut by_row) = (None, None);
    for position in 1..=ready {
        let Some((d, _)) = browser.get(&dead).await? else {
            break;
        };
        if d.message_id() == Some(args.id.as_str()) {
            by_id = Some(describe(position, &d, true));
            break;
        }
        if row == Some(position) {
            by_row = Some(describe(position, &d, true));
        }
    }
    browser.close().await?;
    let _ = transport.close().await;
    let Some(doc) = by_id.or(by_row) else {
        return Err(Failure::not_found(match row {
            Some(n) => format!(
                "no dead letter with id {:?} in {dead:?}, and no row {n} ({ready} dead letters)",
                args.id
            ),
            None => format!("no dead letter with id {:?} in {dead:?}", args.id),
        }));
    };
    match g.output {
        Output::Json => println!("{doc}"),
        Output::Text => {
            for key in [
                "position",
                "message_id",
                "type",
                "reason",
                "error",
                "attempts",
                "failed_at",
                "origin_queue",
                "origin_exchange",
                "origin_routing_key",
                "retry_count",
            ] {
                println!("{key:>18}: {}", plain(field(&doc, key)));
            }
            println!("{:>18}: {}", "headers", field(&doc, "headers"));
            let payload = serde_json::to_string_pretty(field(&doc, "payload"))
                .unwrap_or_else(|_| plain(field(&doc, "payload")));
            println!("{:>18}:\n{payload}", "payload");
        }
    }
    Ok(Code::Ok)
}

/// Headers a replayed message must not carry (the record of its death).
fn is_death_header(key: &str) -> bool {
    key.starts_with("x-lepus-")
        || key == "x-death"
        || key.starts_with("x-first-death-")
        || key.starts_with("x-last-death-")
}

/// The envelope with `retryCount` 0, payload bytes identical.
fn replay_body(body: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let mut out = vec![0u8; body.len() + 64];
    let n = rewrite_json_replay(body, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Which dead letters an operation takes: every given criterion must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The message id.
    pub id: Option<String>,
    /// The task type (`className`, else the AMQP `type`).
    pub message_type: Option<String>,
    /// The reason (`x-lepus-reason`, else the broker's `x-death` reason).
    pub reason: Option<String>,
}

impl From<DeadSelectArgs> for Selection {
    fn from(a: DeadSelectArgs) -> Self {
        Selection {
            id: a.id,
            message_type: a.message_type,
            reason: a.reason,
        }
    }
}

impl Selection {
    /// No criterion: every dead letter.
    pub fn is_everything(&self) -> bool {
        self.id.is_none() && self.message_type.is_none() && self.reason.is_none()
    }

    /// Whether `d` is selected.
    pub fn matches(&self, d: &Delivery) -> bool {
        let id_ok = self
            .id
            .as_deref()
            .is_none_or(|id| d.message_id() == Some(id));
        let type_ok = self
            .message_type
            .as_deref()
            .is_none_or(|t| summarize(d).message_type == t);
        let reason_ok = self
            .reason
            .as_deref()
            .is_none_or(|r| reason_of(&d.properties().headers) == r);
        id_ok && type_ok && reason_ok
    }
}

/// Why it died: Lepus's `x-lepus-reason`, else the reason RabbitMQ wrote in `x-death`
/// (`rejected`, `expired`, `maxlen`, `delivery_limit`); `""` when neither is there.
pub fn reason_of(headers: &Headers) -> String {
    let lepus = header_text(headers, HEADER_REASON);
    if !lepus.is_empty() {
        return lepus;
    }
    let Some(HeaderValue::List(deaths)) = headers.get("x-death") else {
        return String::new();
    };
    deaths
        .first()
        .and_then(|d| match d {
            HeaderValue::Table(t) => t.get("reason").and_then(HeaderValue::as_str),
            _ => None,
        })
        .unwrap_or_default()
        .to_owned()
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Re-published (confirmed) and removed from the dead-letter queue.
    pub replayed: u64,
    /// Selected but left in place: `{"position", "message_id", "why"}`.
    pub skipped: Vec<Value>,
    /// What stopped the replay early, if anything (the rest stays in place).
    pub failure: Option<Failure>,
}

/// Replays the dead letters of `dead` that `selection` takes, those present when it starts
/// (`ready`), each removed only after its re-publish was confirmed; stops when `interrupted`
/// is set, after one when the selection names an id. `progress(position)` after each one.
pub async fn replay_selected(
    transport: &AmqpTransport,
    dead: &str,
    ready: u32,
    selection: &Selection,
    interrupted: &AtomicBool,
    mut progress: impl FnMut(u32),
) -> Result<ReplayReport, Failure> {
    let browser = transport.browse().await?;
    let mut report = ReplayReport::default();
    for position in 1..=ready {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let Some((d, _)) = browser.get(dead).await? else {
            break;
        };
        // Not selected: held unsettled, so it goes back in place when the browser closes.
        if !selection.matches(&d) {
            continue;
        }
        let Some((exchange, routing_key)) = origin(&d.properties().headers) else {
            report
                .skipped
                .push(json!({"position": position, "message_id": d.message_id(),
                "why": "no origin exchange/routing key in its headers"}));
            continue;
        };
        let body = match replay_body(&d.body) {
            Ok(body) => body,
            Err(e) => {
                report
                    .skipped
                    .push(json!({"position": position, "message_id": d.message_id(),
                    "why": format!("not a replayable envelope: {e}")}));
                continue;
            }
        };
        let mut properties: Properties = d.properties().clone();
        properties.headers.retain(|k, _| !is_death_header(k));
        let publication = Publication::new(&exchange, &routing_key, &body, &properties);
        if let Err(e) = transport.publish(publication).await {
            report.failure = Some(Failure::from(e));
            break;
        }
        // Confirmed: only now may the dead letter go.
        if let Err(e) = d.ack().await {
            report.failure = Some(Failure::new(
                Code::Failed,
                format!("replayed but its dead letter stays (it may be replayed twice): {e}"),
            ));
            break;
        }
        report.replayed += 1;
        progress(position);
        if selection.id.is_some() {
            break;
        }
    }
    browser.close().await?;
    Ok(report)
}

/// Deletes the dead letters of `dead` that `selection` takes (all of them at once when it
/// takes everything; else those present now, one by one); returns how many.
pub async fn purge_selected(
    transport: &AmqpTransport,
    dead: &str,
    ready: u32,
    selection: &Selection,
) -> Result<u64, Failure> {
    if selection.is_everything() {
        return Ok(u64::from(transport.purge_queue(dead).await?));
    }
    let browser = transport.browse().await?;
    let mut purged = 0u64;
    for _ in 0..ready {
        let Some((d, _)) = browser.get(dead).await? else {
            break;
        };
        if selection.matches(&d) {
            d.ack().await?;
            purged += 1;
        }
    }
    browser.close().await?;
    Ok(purged)
}

pub async fn replay(g: &Global, args: DeadReplayArgs) -> Result<Code, Failure> {
    let dead = dead_queue(&args.queue);
    let (transport, ready) = open(g, &dead).await?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let selection = Selection::from(args.select);
    let progress = std::io::stderr().is_terminal() && selection.id.is_none() && ready > 1;
    let report = replay_selected(&transport, &dead, ready, &selection, &interrupted, |p| {
        if progress {
            eprint!("\rreplaying {dead}: {p}/{ready}");
        }
    })
    .await?;
    if progress {
        eprintln!();
    }
    let _ = transport.close().await;
    let was_interrupted = interrupted.load(Ordering::SeqCst);
    let ReplayReport {
        replayed,
        skipped,
        failure,
    } = report;
    match g.output {
        Output::Json => println!(
            "{}",
            json!({"queue": dead, "replayed": replayed, "skipped": skipped,
                   "interrupted": was_interrupted,
                   "error": failure.as_ref().map(|f| f.message.clone())})
        ),
        Output::Text => {
            println!("replayed {replayed} dead letters from {dead}");
            for s in &skipped {
                println!(
                    "  skipped {} ({})",
                    plain(field(s, "message_id")),
                    plain(field(s, "why"))
                );
            }
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    if was_interrupted {
        return Err(Failure::new(
            Code::Interrupted,
            "interrupted; the dead letters not replayed are still in place",
        ));
    }
    if replayed == 0 && selection.id.is_some() {
        return Err(Failure::not_found(format!(
            "no replayable dead letter with id {:?} in {dead:?}",
            selection.id.unwrap_or_default()
        )));
    }
    Ok(Code::Ok)
}

pub async fn purge(g: &Global, args: DeadPurgeArgs) -> Result<Code, Failure> {
    let dead = dead_queue(&args.queue);
    let (transport, ready) = open(g, &dead).await?;
    let selection = Selection::from(args.select);
    let purged = purge_selected(&transport, &dead, ready, &selection).await?;
    let _ = transport.close().await;
    match g.output {
        Output::Json => println!("{}", json!({"queue": dead, "purged": purged})),
        Output::Text => println!("purged {purged} dead letters from {dead}"),
    }
    Ok(Code::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_resets_the_count_only() {
        let body = br#"{"payload":{"a":[1, 2]},"metadata":{"className":"A","retryCount":3}}"#;
        let out = replay_body(body).ok();
        assert_eq!(
            out.as_deref(),
            Some(&br#"{"payload":{"a":[1, 2]},"metadata":{"className":"A","retryCount":0}}"#[..])
        );
        assert!(replay_body(b"nope").is_err());
    }

    #[test]
    fn origin_from_x_death() {
        let mut death = Headers::new();
        death.insert("exchange".into(), "lepus".into());
        death.insert(
            "routing-keys".into(),
            HeaderValue::List(vec!["mailer.ad".into()]),
        );
        let mut h = Headers::new();
        h.insert(
            "x-death".into(),
            HeaderValue::List(vec![HeaderValue::Table(death)]),
        );
        assert_eq!(origin(&h), Some(("lepus".into(), "mailer.ad".into())));
        h.insert(HEADER_ORIGIN_EXCHANGE.into(), "ex".into());
        h.insert(HEADER_ORIGIN_ROUTING_KEY.into(), "k".into());
        assert_eq!(origin(&h), Some(("ex".into(), "k".into())));
        assert!(is_death_header("x-lepus-reason") && !is_death_header("tenant"));
    }
}
