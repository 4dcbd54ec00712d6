//! Topology against the real broker: idempotent declarations, wait queues that return a
//! message to its origin queue only, dead-letter queues.

use crate::amqp_support;
use std::time::{Duration, Instant};

use amqp_support::{cleanup, message_count, next_within, unique, wait_for_count};
use lepus::{ErrorKind, HeaderValue, Properties, Publication, QueueKind, QueueSpec, Transport};

#[tokio::test]
async fn declarations_are_idempotent() {
    let t = broker!("declarations_are_idempotent");
    let exchange = unique("idem-ex");
    for kind in [QueueKind::Classic, QueueKind::Quorum] {
        let spec = QueueSpec::new(unique("idem"), &exchange)
            .kind(kind)
            .bind("mailer.ad.*")
            .bind("mailer.#")
            .retry_delays_ms([15_000, 30_000, 60_000, 300_000, 86_400_000]);
        for _ in 0..2 {
            t.declare_exchange(&exchange).await.unwrap();
            t.declare_queue(&spec).await.unwrap();
        }
        // Redeclaring with another queue type is refused by the broker, clearly.
        let other = spec.clone().kind(match kind {
            QueueKind::Classic => QueueKind::Quorum,
            QueueKind::Quorum => QueueKind::Classic,
        });
        let err = t.declare_queue(&other).await.err().unwrap();
        assert_eq!(
            err.kind(),
            ErrorKind::BrokerRefused { reply_code: 406 },
            "{err}"
        );
        // ... and the transport keeps working.
        t.declare_queue(&spec).await.unwrap();
        cleanup(&t, &spec, &[]).await;
    }
}

#[tokio::test]
async fn wait_queue_returns_the_message_to_its_origin_queue_only() {
    let t = broker!("wait_queue_returns_the_message_to_its_origin_queue_only");
    let exchange = unique("wait-ex");
    let origin = QueueSpec::new(unique("wait-origin"), &exchange)
        .bind("orders.*")
        .retry_delays_ms([200]);
    // Another queue bound to the same routing keys must not see the retried message.
    let bystander = QueueSpec::new(unique("wait-bystander"), &exchange).bind("orders.#");
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(&origin).await.unwrap();
    t.declare_queue(&bystander).await.unwrap();

    let props = Properties::new()
        .with_message_id("retry-1")
        .with_header("retryCount", 1i64);
    let body = b"payload bytes stay identical";
    let mut sub = t.consume(&origin.name, 10).await.unwrap();
    let started = Instant::now();
    t.publish_delayed(&origin.name, 200, body, &props)
        .await
        .unwrap();

    assert!(
        next_within(&mut sub, 120).await.is_none(),
        "arrived before the delay"
    );
    let d = next_within(&mut sub, 3000)
        .await
        .expect("message came back");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(190),
        "waited only {waited:?}"
    );
    assert_eq!(d.body, body);
    assert_eq!(d.message_id(), Some("retry-1"));
    assert_eq!(
        d.properties.headers.get("retryCount"),
        Some(&HeaderValue::Int(1))
    );
    assert!(
        d.properties.headers.contains_key("x-death"),
        "dead-lettered by the broker"
    );
    assert_eq!(d.exchange, "", "came back through the default exchange");
    assert_eq!(d.routing_key, origin.name);
    d.ack().await.unwrap();

    // A delay not declared up front gets its wait queue on first use.
    t.publish_delayed(&origin.name, 150, b"lazy", &props)
        .await
        .unwrap();
    let d = next_within(&mut sub, 3000)
        .await
        .expect("lazy delay came back");
    assert_eq!(d.body, b"lazy");
    d.ack().await.unwrap();

    assert_eq!(message_count(&t, &bystander.name).await, 0);
    assert_eq!(
        message_count(&t, &format!("{}.wait.200", origin.name)).await,
        0
    );
    drop(sub);
    cleanup(&t, &origin, &[150]).await;
    cleanup(&t, &bystander, &[]).await;
}

#[tokio::test]
async fn dead_letter_queue_receives() {
    let t = broker!("dead_letter_queue_receives");
    let spec = QueueSpec::new(unique("dlq"), unique("dlq-ex")).bind("jobs.#");
    t.declare_exchange(&spec.exchange).await.unwrap();
    t.declare_queue(&spec).await.unwrap();
    let dead = format!("{}.dead", spec.name);

    // 1. Published there on purpose, with headers saying why.
    let props = Properties::new()
        .with_message_id("poison-1")
        .with_header("x-lepus-reason", "unknown type");
    t.publish_dead_letter(&spec.name, b"poison", &props)
        .await
        .unwrap();

    // 2. Rejected without requeue: the queue dead-letters it by itself.
    t.publish(Publication::new(
        &spec.exchange,
        "jobs.a",
        b"rejected",
        &Properties::new(),
    ))
    .await
    .unwrap();
    let mut sub = t.consume(&spec.name, 1).await.unwrap();
    let d = next_within(&mut sub, 3000).await.unwrap();
    d.reject(false).await.unwrap();
    drop(sub);

    assert_eq!(wait_for_count(&t, &dead, 2).await, 2);
    let mut dead_sub = t.consume(&dead, 10).await.unwrap();
    let first = next_within(&mut dead_sub, 3000).await.unwrap();
    assert_eq!(first.body, b"poison");
    assert_eq!(
        first
            .properties
            .headers
            .get("x-lepus-reason")
            .and_then(HeaderValue::as_str),
        Some("unknown type")
    );
    let second = next_within(&mut dead_sub, 3000).await.unwrap();
    assert_eq!(second.body, b"rejected");
    assert!(second.properties.headers.contains_key("x-death"));
    second.ack_multiple().await.unwrap();
    drop(dead_sub);
    assert_eq!(wait_for_count(&t, &dead, 0).await, 0);
    cleanup(&t, &spec, &[]).await;
}
