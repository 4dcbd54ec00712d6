//! `lepus tail QUEUE-OR-PATTERN`: a temporary queue bound to the exchange, printed as it
//! fills. Nobody else's queue loses a message.

use std::time::Duration;

use serde_json::json;

use crate::cli::{Global, Output, TailArgs};
use crate::failure::{Code, Failure};
use crate::rabbitmqctl;
use crate::show::summarize;

pub async fn run(g: &Global, args: TailArgs) -> Result<Code, Failure> {
    let transport = crate::connect(g).await?;
    let patterns = patterns(g, &args, &transport).await?;
    let mut tap = transport.tap(&g.exchange, &patterns).await.map_err(|e| {
        let mut f = Failure::from(e);
        if f.code == Code::NotFound {
            f.message = format!("exchange {:?} does not exist: {}", g.exchange, f.message);
        }
        f
    })?;
    eprintln!(
        "tailing exchange {:?} with {}; Ctrl-C to stop",
        g.exchange,
        patterns.join(", ")
    );
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
    while args.count.is_none_or(|n| seen < n) {
        let delivery = tokio::select! {
            d = tap.next() => d,
            _ = &mut sleep => break,
            _ = &mut ctrl_c => break,
        };
        let Some(delivery) = delivery else { break };
        let delivery = delivery?;
        seen += 1;
        print(g.output, &delivery);
        // The tap queue is ours: acknowledging only empties it.
        let _ = delivery.ack().await;
    }
    let _ = tap.cancel().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), transport.close()).await;
    Ok(Code::Ok)
}

/// The patterns to bind: the argument itself, or the bindings of the queue it names.
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
    let vhost = rabbitmqctl::vhost_of(&g.amqp);
    let bindings = tokio::task::spawn_blocking(move || rabbitmqctl::bindings(&vhost))
        .await
        .map_err(|e| Failure::new(Code::Failed, format!("rabbitmqctl task: {e}")))?
        .map_err(|mut f| {
            f.message = format!(
                "{target:?} is a queue; its bindings are read with rabbitmqctl, which failed \
                 (pass --pattern to tail it as a routing pattern): {}",
                f.message
            );
            f
        })?;
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

fn print(output: Output, delivery: &lepus::Delivery) {
    let s = summarize(delivery);
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "type": s.message_type,
                "routing_key": delivery.routing_key,
                "exchange": delivery.exchange,
                "attempt": s.retry_count.saturating_add(1),
                "retry_count": s.retry_count,
                "message_id": delivery.message_id(),
                "payload": s.payload,
                "envelope_error": s.envelope_error,
            })
        ),
        Output::Text => {
            println!(
                "{} key={} attempt={} id={}",
                s.message_type,
                delivery.routing_key,
                s.retry_count.saturating_add(1),
                delivery.message_id().unwrap_or("-")
            );
            if let Some(e) = &s.envelope_error {
                println!("  (not a lepus envelope: {e})");
            }
            println!("  {}", s.payload);
        }
    }
}
