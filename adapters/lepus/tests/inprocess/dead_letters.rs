//! In-process broker: dead letters (`<queue>.dead`, `x-death`) and the delay levels on paused
//! tokio time.

use std::time::Duration;

use lepus::delay::{level_name, UNROUTED};
use lepus::{
    Delay, Delivery, HeaderValue, InProcessBroker, InProcessSubscription, Properties, Publication,
    QueueKind, QueueSpec, Transport,
};
use tokio::time::Instant;

async fn setup(b: &InProcessBroker) -> QueueSpec {
    let spec = QueueSpec::new("mailer", "shop").bind("mailer.#");
    b.declare_exchange("shop").await.unwrap();
    b.declare_queue(&spec).await.unwrap();
    // Another queue on the same binding: a retry must not reach it.
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
    match d.properties().headers.get("x-death") {
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
        dl.properties().headers.get("retryCount"),
        Some(&HeaderValue::Int(3))
    );
    assert_eq!(x_death(&dl), [("mailer".into(), "rejected".into(), 1)]);
    assert_eq!(dl.routing_key, "mailer.dead");
    assert_eq!(dl.exchange, "");
    assert_eq!(
        dl.properties()
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
        d.properties()
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

/// A retry of `body` to the queue `mailer` after `ms`.
async fn retry(b: &InProcessBroker, ms: u64, body: &[u8], props: &Properties) {
    let publication = Publication::new("", "mailer", body, props);
    b.publish_delayed(publication, Delay::from_ms(ms).unwrap())
        .await
        .unwrap();
}

/// The level queues a delay of `ms` waits at, highest first.
fn levels_of(ms: u64) -> Vec<String> {
    (0..35u8)
        .rev()
        .filter(|&k| ms >> k & 1 == 1)
        .map(|k| level_name(QueueKind::Classic, k))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn delayed_retry_returns_after_exactly_the_delay_to_the_origin_only() {
    let b = InProcessBroker::new();
    setup(&b).await;
    let mut sub = b.consume("mailer", 5).await.unwrap();
    let start = Instant::now();
    let props = Properties::new().with_message_id("retry-1");
    retry(&b, 15_000, b"again", &props).await;
    // 15 000 = 8192 + 4096 + 2048 + 512 + 128 + 16 + 8: it waits at level 13 first.
    assert_eq!(
        b.message_count(&level_name(QueueKind::Classic, 13))
            .unwrap(),
        1
    );

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
    assert_eq!(
        d.exchange, "lepus.delay.02",
        "dead-lettered by level 3 to level 2"
    );
    let mut deaths = x_death(&d);
    deaths.sort();
    let mut expected: Vec<(String, String, i64)> = levels_of(15_000)
        .into_iter()
        .map(|q| (q, "expired".to_owned(), 1))
        .collect();
    expected.sort();
    assert_eq!(deaths, expected, "one wait per 1 bit");
    d.ack().await.unwrap();
    assert_eq!(b.message_count("audit").unwrap(), 0, "origin queue only");
}

#[tokio::test(start_paused = true)]
async fn delays_do_not_block_each_other_and_keep_fifo() {
    let b = InProcessBroker::new();
    setup(&b).await;
    let mut sub = b.consume("mailer", 50).await.unwrap();
    let start = Instant::now();
    let props = Properties::new();
    retry(&b, 30_000, b"long", &props).await;
    retry(&b, 15_000, b"short-1", &props).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    retry(&b, 200, b"lazy", &props).await;
    retry(&b, 15_000, b"short-2", &props).await;

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
async fn delays_of_a_year_are_exact_to_the_millisecond() {
    let b = InProcessBroker::new();
    setup(&b).await;
    let mut sub = b.consume("mailer", 50).await.unwrap();
    let start = Instant::now();
    let year = 365 * 86_400_000 + 1;
    for (ms, body) in [
        (year, "a year and 1 ms"),
        (86_400_000, "a day"),
        (1, "1 ms"),
    ] {
        retry(&b, ms, body.as_bytes(), &Properties::new()).await;
    }
    let mut arrivals = Vec::new();
    while let Some(d) = next_within(&mut sub, 400 * 86_400_000).await {
        arrivals.push((
            String::from_utf8(d.body.clone()).unwrap(),
            start.elapsed().as_millis(),
        ));
        d.ack().await.unwrap();
    }
    assert_eq!(
        arrivals,
        [
            ("1 ms".to_owned(), 1),
            ("a day".to_owned(), 86_400_000),
            ("a year and 1 ms".to_owned(), u128::from(year)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn delayed_send_reaches_the_queues_a_plain_send_would() {
    let b = InProcessBroker::new();
    setup(&b).await;
    b.declare_queue(&QueueSpec::new("billing", "shop").bind("billing.#"))
        .await
        .unwrap();
    let props = Properties::new().with_message_id("later");
    let send = Publication::new("shop", "mailer.ad.expired", b"envelope", &props);
    b.publish_delayed(send, Delay::from_ms(90_000).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(89_999)).await;
    assert_eq!(b.message_count("mailer").unwrap(), 0, "not before its time");
    tokio::time::sleep(Duration::from_millis(10)).await;
    for queue in ["mailer", "audit"] {
        let d = b
            .get(queue)
            .unwrap()
            .expect("delivered to every bound queue");
        assert_eq!(d.body, b"envelope");
    }
    assert_eq!(b.message_count("billing").unwrap(), 0);
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
    // Two retries through the same levels, then a rejection.
    for attempt in 1..=2 {
        let d = next_within(&mut sub, 100_000).await.unwrap();
        retry(&b, 15_000, &d.body, d.properties()).await;
        d.ack().await.unwrap();
        let back = next_within(&mut sub, 100_000).await.unwrap();
        let deaths = x_death(&back);
        assert_eq!(deaths.len(), levels_of(15_000).len());
        assert!(deaths
            .iter()
            .all(|(_, reason, count)| reason == "expired" && *count == attempt));
        back.nack(true).await.unwrap();
    }
    let d = next_within(&mut sub, 100_000).await.unwrap();
    assert!(d.redelivered);
    d.reject(false).await.unwrap();
    let dead = b.get("mailer.dead").unwrap().unwrap();
    assert_eq!(dead.body, b"flaky");
    let deaths = x_death(&dead);
    assert_eq!(deaths[0], ("mailer".into(), "rejected".into(), 1));
    assert!(deaths[1..].iter().all(|(_, _, count)| *count == 2));
}

#[tokio::test(start_paused = true)]
async fn delayed_messages_without_a_destination_wait_in_unrouted() {
    let b = InProcessBroker::new();
    setup(&b).await;
    retry(&b, 15_000, b"x", &Properties::new()).await;
    b.delete_queue("mailer").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20_000)).await;
    let kept = b.get(UNROUTED).unwrap().expect("kept, not dropped");
    assert_eq!(kept.body, b"x");
}
