//! In-process broker: dead letters (`<queue>.dead`, `x-death`) and wait queues
//! (`<queue>.wait.<ms>`) on paused tokio time.

use std::time::Duration;

use lepus::{
    Delivery, HeaderValue, InProcessBroker, InProcessSubscription, Properties, Publication,
    QueueSpec, Transport,
};
use tokio::time::Instant;

async fn setup(b: &InProcessBroker) -> QueueSpec {
    let spec = QueueSpec::new("mailer", "shop")
        .bind("mailer.#")
        .retry_delays_ms([15_000, 30_000]);
    b.declare_exchange("shop").await.unwrap();
    b.declare_queue(&spec).await.unwrap();
    // Another queue on the same binding: wait queues must not return messages to it.
    b.declare_queue(&QueueSpec::new("audit", "shop").bind("mailer.#"))
        .await
        .unwrap();
    spec
}

async fn next_within(sub: &mut InProcessSubscription, ms: u64) -> Option<Delivery> {
    match tokio::time::timeout(Duration::from_millis(ms), sub.next()).await {
        Ok(Some(d)) => Some(d.unwrap()),
        Ok(None) | Err(_) => None,
    }
}

fn x_death(d: &Delivery) -> Vec<(String, String, i64)> {
    match d.properties.headers.get("x-death") {
        Some(HeaderValue::List(entries)) => entries
            .iter()
            .filter_map(|e| match e {
                HeaderValue::Table(t) => Some((
                    t.get("queue")?.as_str()?.to_owned(),
                    t.get("reason")?.as_str()?.to_owned(),
                    t.get("count")?.as_i64()?,
                )),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn reject_goes_to_the_dead_letter_queue() {
    let b = InProcessBroker::new();
    setup(&b).await;
    let props = Properties::new()
        .with_message_id("poison")
        .with_header("retryCount", 3i64);
    b.publish(Publication::new(
        "shop",
        "mailer.ad.expired",
        b"\x00bytes",
        &props,
    ))
    .await
    .unwrap();
    let mut sub = b.consume("mailer", 5).await.unwrap();
    let d = next_within(&mut sub, 100).await.unwrap();
    d.reject(false).await.unwrap();
    assert_eq!(b.message_count("mailer").unwrap(), 0);
    assert_eq!(b.message_count("mailer.dead").unwrap(), 1);

    let mut dead = b.consume("mailer.dead", 5).await.unwrap();
    let dl = next_within(&mut dead, 100).await.unwrap();
    assert_eq!(dl.body, b"\x00bytes", "payload bytes identical");
    assert_eq!(dl.message_id(), Some("poison"));
    assert_eq!(
        dl.properties.headers.get("retryCount"),
        Some(&HeaderValue::Int(3))
    );
    assert_eq!(x_death(&dl), [("mailer".into(), "rejected".into(), 1)]);
    assert_eq!(dl.routing_key, "mailer.dead");
    assert_eq!(dl.exchange, "");
    assert_eq!(
        dl.properties
            .headers
            .get("x-first-death-exchange")
            .and_then(HeaderValue::as_str),
        Some("shop")
    );
    // nack without requeue does the same.
    b.publish(Publication::new("shop", "mailer.x", b"2", &props))
        .await
        .unwrap();
    next_within(&mut sub, 100)
        .await
        .unwrap()
        .nack(false)
        .await
        .unwrap();
    assert_eq!(next_within(&mut dead, 100).await.unwrap().body, b"2");
}

#[tokio::test(start_paused = true)]
async fn publish_dead_letter_keeps_headers() {
    let b = InProcessBroker::new();
    setup(&b).await;
    let props = Properties::new().with_header("x-lepus-reason", "unknown type");
    b.publish_dead_letter("mailer", b"body", &props)
        .await
        .unwrap();
    let d = b.get("mailer.dead").unwrap().unwrap();
    assert_eq!(d.body, b"body");
    assert_eq!(
        d.properties
            .headers
            .get("x-lepus-reason")
            .and_then(HeaderValue::as_str),
        Some("unknown type")
    );
    assert!(
        x_death(&d).is_empty(),
        "published, not dead-lettered by the broker"
    );
    // No dead-letter queue declared: unroutable, as on RabbitMQ.
    assert!(b
        .publish_dead_letter("nobody", b"x", &props)
        .await
        .unwrap_err()
        .is_unroutable());
}

#[tokio::test(start_paused = true)]
async fn wait_queue_returns_after_exactly_the_delay_to_the_origin_only() {
    let b = InProcessBroker::new();
    setup(&b).await;
    let mut sub = b.consume("mailer", 5).await.unwrap();
    let start = Instant::now();
    let props = Properties::new().with_message_id("retry-1");
    b.publish_delayed("mailer", 15_000, b"again", &props)
        .await
        .unwrap();
    assert_eq!(b.message_count("mailer.wait.15000").unwrap(), 1);

    assert!(
        next_within(&mut sub, 14_999).await.is_none(),
        "not before the delay"
    );
    let d = next_within(&mut sub, 10).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(15_000),
        "exactly the delay"
    );
    assert_eq!(d.body, b"again");
    assert_eq!(d.message_id(), Some("retry-1"));
    assert!(!d.redelivered);
    assert_eq!(d.routing_key, "mailer");
    assert_eq!(
        x_death(&d),
        [("mailer.wait.15000".into(), "expired".into(), 1)]
    );
    d.ack().await.unwrap();
    assert_eq!(b.message_count("mailer.wait.15000").unwrap(), 0);
    assert_eq!(b.message_count("audit").unwrap(), 0, "origin queue only");
}

#[tokio::test(start_paused = true)]
async fn wait_queues_do_not_block_each_other_and_keep_fifo() {
    let b = InProcessBroker::new();
    setup(&b).await;
    let mut sub = b.consume("mailer", 50).await.unwrap();
    let start = Instant::now();
    let props = Properties::new();
    b.publish_delayed("mailer", 30_000, b"long", &props)
        .await
        .unwrap();
    b.publish_delayed("mailer", 15_000, b"short-1", &props)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // A delay that was not declared up front gets its wait queue on first use.
    b.publish_delayed("mailer", 200, b"lazy", &props)
        .await
        .unwrap();
    b.publish_delayed("mailer", 15_000, b"short-2", &props)
        .await
        .unwrap();

    let mut arrivals = Vec::new();
    while let Some(d) = next_within(&mut sub, 60_000).await {
        arrivals.push((
            String::from_utf8(d.body.clone()).unwrap(),
            start.elapsed().as_millis(),
        ));
        d.ack().await.unwrap();
    }
    assert_eq!(
        arrivals,
        [
            ("lazy".to_owned(), 1_200),
            ("short-1".to_owned(), 15_000),
            ("short-2".to_owned(), 16_000),
            ("long".to_owned(), 30_000),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_cycle_counts_deaths_and_ends_in_the_dead_letter_queue() {
    let b = InProcessBroker::new();
    setup(&b).await;
    let mut sub = b.consume("mailer", 1).await.unwrap();
    b.publish(Publication::new(
        "shop",
        "mailer.x",
        b"flaky",
        &Properties::new(),
    ))
    .await
    .unwrap();
    // Two retries through the same wait queue, then a rejection.
    for attempt in 1..=2 {
        let d = next_within(&mut sub, 100_000).await.unwrap();
        b.publish_delayed("mailer", 15_000, &d.body, &d.properties)
            .await
            .unwrap();
        d.ack().await.unwrap();
        let back = next_within(&mut sub, 100_000).await.unwrap();
        assert_eq!(
            x_death(&back),
            [("mailer.wait.15000".into(), "expired".into(), attempt)]
        );
        back.nack(true).await.unwrap();
    }
    let d = next_within(&mut sub, 100_000).await.unwrap();
    assert!(d.redelivered);
    d.reject(false).await.unwrap();
    let dead = b.get("mailer.dead").unwrap().unwrap();
    assert_eq!(dead.body, b"flaky");
    assert_eq!(
        x_death(&dead),
        [
            ("mailer".into(), "rejected".into(), 1),
            ("mailer.wait.15000".into(), "expired".into(), 2),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn expired_messages_without_origin_are_dropped() {
    let b = InProcessBroker::new();
    setup(&b).await;
    b.publish_delayed("mailer", 15_000, b"x", &Properties::new())
        .await
        .unwrap();
    b.delete_queue("mailer").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20_000)).await;
    assert_eq!(b.message_count("mailer.wait.15000").unwrap(), 0);
}
