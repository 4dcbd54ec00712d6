//! `lepus topology`: the exchange, its queues (type, ready, unacked, consumers, rates),
//! bindings and dead-letter queues, the messages waiting on the delay levels in level order,
//! and wait queues left from before the delay levels.

use std::collections::BTreeMap;

use lepus::core::delay::{level_ttl_ms, LEVELS};
use lepus::delay::{level_name, UNROUTED};
use lepus::QueueKind;
use serde_json::{json, Value};

use crate::cli::{Global, Output, TopologyArgs};
use crate::failure::{Code, Failure};
use crate::snapshot::{self, vhost_of, QueueRow, Snapshot, Source};

/// A queue of the delay levels: its set (`classic`, `quorum`) and level, from its name.
/// `lepus.delay.07` is (`classic`, 7), `lepus.delay.quorum.07` (`quorum`, 7); any other
/// name (the unrouted queue, a queue of someone else's) is `None`.
pub fn delay_level(name: &str) -> Option<(&'static str, u8)> {
    let rest = name.strip_prefix(lepus::delay::PREFIX)?;
    let (kind, set, digits) = match rest.strip_prefix("quorum.") {
        Some(digits) => (QueueKind::Quorum, "quorum", digits),
        None => (QueueKind::Classic, "classic", rest),
    };
    let level: u8 = digits.parse().ok().filter(|l| *l < LEVELS)?;
    (level_name(kind, level) == name).then_some((set, level))
}

/// A level's wait as people say it: `1ms`, `512ms`, `4.1s`, `17.5min`, `4.9h`, `9.7d`.
fn human_ms(ms: u64) -> String {
    // Precision for display only.
    #[allow(clippy::cast_precision_loss)]
    let f = ms as f64;
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", f / 1e3),
        60_000..=3_599_999 => format!("{:.1}min", f / 6e4),
        3_600_000..=86_399_999 => format!("{:.1}h", f / 3.6e6),
        _ => format!("{:.1}d", f / 8.64e7),
    }
}

fn queue_json(q: &QueueRow) -> Value {
    json!({
        "name": q.name,
        "type": q.kind,
        "messages": q.ready,
        "unacked": q.unacked,
        "consumers": q.consumers,
        "rates": q.rates.map(|r| json!({
            "publish": r.publish, "deliver": r.deliver, "ack": r.ack, "redeliver": r.redeliver,
        })),
    })
}

/// The topology of `exchange` as `--output json` prints it (also what the console shows).
pub fn document(snapshot: &Snapshot, exchange: &str) -> Result<Value, Failure> {
    let (exchanges, queues, bindings) = (&snapshot.exchanges, &snapshot.queues, &snapshot.bindings);
    let Some((_, kind)) = exchanges.iter().find(|(name, _)| *name == exchange) else {
        return Err(Failure::not_found(format!(
            "exchange {exchange:?} does not exist (pass --exchange)"
        )));
    };
    let by_name: BTreeMap<&str, &QueueRow> = queues.iter().map(|q| (q.name.as_str(), q)).collect();
    let mut bound: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for b in bindings.iter().filter(|b| b.source == exchange) {
        bound
            .entry(b.destination.as_str())
            .or_default()
            .push(b.routing_key.as_str());
    }
    let mut docs = Vec::new();
    for (queue, patterns) in &bound {
        let mut doc = match by_name.get(queue) {
            Some(row) => queue_json(row),
            None => json!({"name": queue}),
        };
        let dead_name = format!("{queue}.dead");
        let dead = by_name.get(dead_name.as_str());
        // Per-delay wait queues of versions before the delay levels: they drain by themselves.
        let prefix = format!("{queue}.wait.");
        let mut waits: Vec<(u64, &QueueRow)> = queues
            .iter()
            .filter_map(|q| {
                let delay = q.name.strip_prefix(&prefix)?.parse().ok()?;
                Some((delay, q))
            })
            .collect();
        waits.sort_by_key(|(delay, _)| *delay);
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("bindings".into(), json!(patterns));
            obj.insert("dead_letter".into(), json!(dead.map(|d| queue_json(d))));
            obj.insert(
                "wait".into(),
                waits
                    .iter()
                    .map(|(delay, q)| {
                        json!({"name": q.name, "delay_ms": delay, "messages": q.ready})
                    })
                    .collect(),
            );
        }
        docs.push(doc);
    }
    // The delay levels are shared by every queue of the virtual host: those holding messages,
    // classic set then quorum set, each in level order (shortest wait first).
    let mut levels: Vec<(&'static str, u8, &QueueRow)> = queues
        .iter()
        .filter(|q| q.ready + q.unacked + q.held() > 0)
        .filter_map(|q| delay_level(&q.name).map(|(set, level)| (set, level, q)))
        .collect();
    levels.sort_by_key(|(set, level, _)| (*set, *level));
    let delay_docs: Vec<Value> = levels
        .iter()
        .map(|(set, level, q)| {
            json!({"name": q.name, "set": set, "level": level,
                   "wait_ms": level_ttl_ms(*level), "messages": q.ready, "unacked": q.unacked,
                   "held": q.held()})
        })
        .collect();
    let unrouted = by_name
        .get(UNROUTED)
        .map(|q| json!({"name": q.name, "messages": q.ready}));
    Ok(json!({
        "source": snapshot.source.name(),
        "exchange": {"name": exchange, "type": kind},
        "queues": docs,
        "delay_levels": delay_docs,
        "delay_unrouted": unrouted,
    }))
}

pub async fn run(g: &Global, args: TopologyArgs) -> Result<Code, Failure> {
    let vhost = match args.vhost.clone() {
        Some(vhost) => vhost,
        None => vhost_of(g.amqp()?),
    };
    let snapshot = snapshot::read_async(g, vhost).await?;
    let doc = document(&snapshot, &g.exchange)?;
    let exchange = &g.exchange;
    let kind = text(&doc["exchange"], "type").to_owned();
    let docs = doc["queues"].as_array().cloned().unwrap_or_default();
    let delay_docs = doc["delay_levels"].as_array().cloned().unwrap_or_default();
    let unrouted = Some(doc["delay_unrouted"].clone()).filter(|u| !u.is_null());
    match g.output {
        Output::Json => println!("{doc}"),
        Output::Text => {
            println!(
                "exchange {exchange} ({kind}), read from {}",
                source_text(&snapshot.source)
            );
            for q in &docs {
                print_queue(q);
            }
            if delay_docs.is_empty() {
                println!("delay levels: nothing waiting");
            } else {
                println!("delay levels (shared by the virtual host), shortest wait first:");
                for level in &delay_docs {
                    let wait = level.get("wait_ms").and_then(Value::as_u64).unwrap_or(0);
                    println!(
                        "  {:<24} waits {:>8}: {} waiting, {} unacked{}",
                        text(level, "name"),
                        human_ms(wait),
                        count(level, "messages"),
                        count(level, "unacked"),
                        held_text(level),
                    );
                }
            }
            if let Some(u) = unrouted.as_ref().filter(|u| count(u, "messages") != "0") {
                println!(
                    "{UNROUTED}: {} delayed messages whose destination had no queue",
                    count(u, "messages")
                );
            }
        }
    }
    Ok(Code::Ok)
}

/// `, 7500 held by the broker ...` for a level whose dead-letter worker holds messages.
fn held_text(level: &Value) -> String {
    match level.get("held").and_then(Value::as_u64) {
        Some(held) if held > 0 => format!(
            ", {held} due and held by the broker's dead-letter worker (if this stays: \
             `lepus dead-letter-workers`, and README \"Running on a cluster\")"
        ),
        _ => String::new(),
    }
}

fn source_text(source: &Source) -> String {
    match source {
        Source::Management(url) => format!("the management API at {url}"),
        Source::Rabbitmqctl(why) => format!("rabbitmqctl (management API: {why})"),
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn count(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_u64)
        .map_or("?".into(), |n| n.to_string())
}

/// `, 3.2/s in, 3.0/s out` when the source has rates.
fn rates_text(q: &Value) -> String {
    let Some(rates) = q.get("rates").filter(|r| !r.is_null()) else {
        return String::new();
    };
    let rate = |k: &str| rates.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    format!(
        ", {:.1}/s in, {:.1}/s out",
        rate("publish"),
        rate("deliver")
    )
}

fn print_queue(q: &Value) {
    let kind = text(q, "type");
    println!(
        "  queue {}{}: {} ready, {} unacked, {} consumers{}",
        text(q, "name"),
        if kind.is_empty() {
            String::new()
        } else {
            format!(" ({kind})")
        },
        count(q, "messages"),
        count(q, "unacked"),
        count(q, "consumers"),
        rates_text(q),
    );
    let patterns: Vec<&str> = q
        .get("bindings")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!("    bound with {}", patterns.join(", "));
    if let Some(d) = q.get("dead_letter").filter(|d| !d.is_null()) {
        println!(
            "    dead letters {}: {} ready, {} unacked",
            text(d, "name"),
            count(d, "messages"),
            count(d, "unacked"),
        );
    }
    for w in q
        .get("wait")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "    old wait queue {}: {} waiting (from before the delay levels)",
            text(w, "name"),
            count(w, "messages")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_level_names() {
        assert_eq!(delay_level("lepus.delay.00"), Some(("classic", 0)));
        assert_eq!(delay_level("lepus.delay.34"), Some(("classic", 34)));
        assert_eq!(delay_level("lepus.delay.quorum.07"), Some(("quorum", 7)));
        for other in [
            "lepus.delay.35",
            "lepus.delay.7",
            "lepus.delay.unrouted",
            "lepus.delay.deliver",
            "lepus.delay.quorum.x",
            "mailer",
        ] {
            assert_eq!(delay_level(other), None, "{other}");
        }
    }

    #[test]
    fn level_order_is_numeric_within_each_set() {
        let mut names = vec![
            "lepus.delay.quorum.10",
            "lepus.delay.12",
            "lepus.delay.quorum.02",
            "lepus.delay.03",
        ];
        names.sort_by_key(|n| delay_level(n));
        assert_eq!(
            names,
            [
                "lepus.delay.03",
                "lepus.delay.12",
                "lepus.delay.quorum.02",
                "lepus.delay.quorum.10"
            ]
        );
    }

    #[test]
    fn waits() {
        assert_eq!(human_ms(512), "512ms");
        assert_eq!(human_ms(4096), "4.1s");
        assert_eq!(human_ms(1 << 20), "17.5min");
        assert_eq!(human_ms(1 << 34), "198.8d");
    }
}
