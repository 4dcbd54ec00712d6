//! `lepus topology`: the exchange, its queues, bindings, retry and dead-letter queues.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::cli::{Global, Output, TopologyArgs};
use crate::failure::{Code, Failure};
use crate::rabbitmqctl::{self, QueueRow};

pub async fn run(g: &Global, args: TopologyArgs) -> Result<Code, Failure> {
    let vhost = args
        .vhost
        .clone()
        .unwrap_or_else(|| rabbitmqctl::vhost_of(&g.amqp));
    let exchange = g.exchange.clone();
    let (exchanges, queues, bindings) = tokio::task::spawn_blocking(move || {
        Ok::<_, Failure>((
            rabbitmqctl::exchanges(&vhost)?,
            rabbitmqctl::queues(&vhost)?,
            rabbitmqctl::bindings(&vhost)?,
        ))
    })
    .await
    .map_err(|e| Failure::new(Code::Failed, format!("rabbitmqctl task: {e}")))??;
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
        let row = by_name.get(queue);
        let dead_name = format!("{queue}.dead");
        let dead = by_name.get(dead_name.as_str());
        let prefix = format!("{queue}.wait.");
        let waits: Vec<(u64, &QueueRow)> = queues
            .iter()
            .filter_map(|q| {
                let delay = q.name.strip_prefix(&prefix)?.parse().ok()?;
                Some((delay, q))
            })
            .collect();
        docs.push(json!({
            "name": queue,
            "messages": row.map(|r| r.messages),
            "consumers": row.map(|r| r.consumers),
            "bindings": patterns,
            "dead_letter": dead.map(|d| json!({"name": d.name, "messages": d.messages})),
            "wait": waits.iter().map(|(delay, q)| json!({
                "name": q.name, "delay_ms": delay, "messages": q.messages,
            })).collect::<Vec<_>>(),
        }));
    }
    match g.output {
        Output::Json => println!(
            "{}",
            json!({"exchange": {"name": exchange, "type": kind}, "queues": docs})
        ),
        Output::Text => {
            println!("exchange {exchange} ({kind})");
            for q in &docs {
                print_queue(q);
            }
        }
    }
    Ok(Code::Ok)
}

fn count(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_u64)
        .map_or("?".into(), |n| n.to_string())
}

fn print_queue(q: &Value) {
    let name = q.get("name").and_then(Value::as_str).unwrap_or_default();
    println!(
        "  queue {name}: {} ready, {} consumers",
        count(q, "messages"),
        count(q, "consumers")
    );
    let patterns: Vec<&str> = q
        .get("bindings")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!("    bound with {}", patterns.join(", "));
    if let Some(d) = q.get("dead_letter").filter(|d| !d.is_null()) {
        println!(
            "    dead letters {}: {}",
            d.get("name").and_then(Value::as_str).unwrap_or_default(),
            count(d, "messages")
        );
    }
    for w in q
        .get("wait")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "    retry wait {}: {} waiting",
            w.get("name").and_then(Value::as_str).unwrap_or_default(),
            count(w, "messages")
        );
    }
}
