//! Publisher confirms under concurrency: each publish gets its own outcome from the broker.
//!
//! lapin numbers a publish (its delivery tag) under one lock and queues its frames under
//! another, so two publishes started at once on two threads can reach the broker in the other
//! order than their tags. The broker numbers messages in the order they arrive, so each would
//! then get the other's `basic.ack` or `basic.nack`: a refused message reported as stored.

use crate::amqp_support;
use std::collections::BTreeSet;
use std::sync::Arc;

use amqp_support::{cleanup, env_config, next_within, unique, wait_for_count};
use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lepus::{ErrorKind, Properties, Publication, QueueSpec, Transport};

/// What the broker does with a publish, by its routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Routed to a queue with room: confirmed (`basic.ack`).
    Kept,
    /// Routed only to a full queue that rejects publishes: `basic.nack`.
    Refused,
    /// Mandatory and routed nowhere: `basic.return`, then `basic.ack`.
    Returned,
}

impl Fate {
    fn of(i: usize) -> Fate {
        match i % 3 {
            0 => Fate::Kept,
            1 => Fate::Refused,
            _ => Fate::Returned,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Fate::Kept => "kept",
            Fate::Refused => "refused",
            Fate::Returned => "nobody.listens",
        }
    }

    /// What the publish reported, as a fate (or the unexpected error).
    fn reported(outcome: &lepus::Result<()>) -> Result<Fate, String> {
        match outcome {
            Ok(()) => Ok(Fate::Kept),
            Err(e) if e.kind() == ErrorKind::Nacked => Ok(Fate::Refused),
            Err(e) if e.is_unroutable() => Ok(Fate::Returned),
            Err(e) => Err(e.to_string()),
        }
    }
}

const ROUNDS: usize = 20;
const PER_ROUND: usize = 600;
/// Of each round, how many go in one `publish_batch` (the others one task each).
const BATCHED: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_confirms_with_returns_and_nacks_each_get_their_own_outcome() {
    let t = Arc::new(broker!(
        "out_of_order_confirms_with_returns_and_nacks_each_get_their_own_outcome"
    ));
    let spec = QueueSpec::new(unique("order"), unique("order-ex")).bind(Fate::Kept.key());
    t.declare_exchange(&spec.exchange).await.unwrap();
    t.declare_queue(&spec).await.unwrap();

    // A queue that holds nothing and refuses every publish (Lepus declares no such queue, so
    // lapin does it here).
    let raw = lapin::Connection::connect(&env_config().addr, Default::default())
        .await
        .unwrap();
    let raw_channel = raw.create_channel().await.unwrap();
    let full = unique("order-full");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    raw_channel
        .queue_declare(full.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    raw_channel
        .queue_bind(
            full.as_str().into(),
            spec.exchange.as_str().into(),
            Fate::Refused.key().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // Many rounds of concurrent publishes from the runtime's threads, all on one transport
    // (one publishing channel).
    let exchange: Arc<str> = spec.exchange.as_str().into();
    let mut wrong: Vec<String> = Vec::new();
    let mut reported_kept = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..PER_ROUND - BATCHED {
            let t = Arc::clone(&t);
            let exchange = Arc::clone(&exchange);
            tasks.spawn(async move {
                let fate = Fate::of(i);
                let id = format!("{round}-{i}");
                let props = Properties::new().with_message_id(id.as_str());
                let outcome = t
                    .publish(Publication::new(&exchange, fate.key(), b"x", &props))
                    .await;
                vec![(id, fate, outcome)]
            });
        }
        // The last ones of the round in one batch, among the single publishes.
        let t = Arc::clone(&t);
        let exchange = Arc::clone(&exchange);
        tasks.spawn(async move {
            let ids: Vec<(String, Fate)> = (PER_ROUND - BATCHED..PER_ROUND)
                .map(|i| (format!("{round}-{i}"), Fate::of(i)))
                .collect();
            let props: Vec<Properties> = ids
                .iter()
                .map(|(id, _)| Properties::new().with_message_id(id.as_str()))
                .collect();
            let batch: Vec<Publication<'_>> = ids
                .iter()
                .zip(&props)
                .map(|((_, fate), props)| Publication::new(&exchange, fate.key(), b"x", props))
                .collect();
            let outcomes = t.publish_batch(&batch).await.unwrap();
            ids.into_iter()
                .zip(outcomes)
                .map(|((id, fate), outcome)| (id, fate, outcome))
                .collect()
        });
        while let Some(joined) = tasks.join_next().await {
            for (id, fate, outcome) in joined.unwrap() {
                match Fate::reported(&outcome) {
                    Ok(reported) if reported == fate => {}
                    Ok(reported) => wrong.push(format!("{id}: {fate:?} reported as {reported:?}")),
                    Err(e) => wrong.push(format!("{id}: {fate:?} failed: {e}")),
                }
                if outcome.is_ok() {
                    reported_kept.insert(id);
                }
            }
        }
    }
    let total = ROUNDS * PER_ROUND;
    let mut problems = Vec::new();
    if !wrong.is_empty() {
        problems.push(format!(
            "{} of {total} publishes got another's outcome, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(6)]
        ));
    }

    // What the broker really kept: exactly the publishes reported confirmed.
    let expected = (0..total)
        .filter(|i| Fate::of(i % PER_ROUND) == Fate::Kept)
        .count() as u32;
    let count = wait_for_count(&t, &spec.name, expected).await;
    if count != expected {
        problems.push(format!("{count} messages stored, {expected} expected"));
    }
    let mut sub = t.consume(&spec.name, 500).await.unwrap();
    let mut stored = BTreeSet::new();
    while let Some(delivery) = next_within(&mut sub, 2000).await {
        stored.insert(delivery.message_id().unwrap_or_default().to_string());
        delivery.ack().await.unwrap();
        if stored.len() == count as usize {
            break;
        }
    }
    drop(sub);
    let missing: Vec<_> = reported_kept.difference(&stored).take(6).collect();
    let extra: Vec<_> = stored.difference(&reported_kept).take(6).collect();
    if !missing.is_empty() || !extra.is_empty() {
        problems.push(format!(
            "reported confirmed but not stored: {missing:?}; stored but not reported confirmed: {extra:?}"
        ));
    }
    let full_status = t.queue_status(&full).await.unwrap();
    assert_eq!(full_status.map(|s| s.messages), Some(0));

    raw_channel
        .queue_delete(full.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let _ = raw.close(200, "done".into()).await;
    cleanup(&t, &spec).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
