//! Topology against the real broker: idempotent declarations, the delay levels (a retry
//! returns to its origin queue only, a delayed send reaches what a plain send would), the
//! upgrade from per-delay wait queues, dead-letter queues.

use crate::amqp_support;
use std::time::{Duration, Instant};

use amqp_support::{cleanup, message_count, next_within, unique, wait_for_count};
use lepus::{
    Delay, ErrorKind, HeaderValue, Properties, Publication, QueueKind, QueueSpec, Transport,
};

#[tokio::test]
async fn declarations_are_idempotent() {
    let t = broker!("declarations_are_idempotent");
    let exchange = unique("idem-ex");
    for kind in [QueueKind::Classic, QueueKind::Quorum] {
        let spec = QueueSpec::new(unique("idem"), &exchange)
            .kind(kind)
            .bind("mailer.ad.*")
            .bind("mailer.#");
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
        // ... in words: what exists, and how to migrate.
        let text = err.to_string();
        assert!(text.contains("exists on the broker as a"), "{text}");
        assert!(text.contains("To migrate"), "{text}");
        assert!(!text.contains("inequivalent arg"), "{text}");
        // ... and the transport keeps working.
        t.declare_queue(&spec).await.unwrap();
        cleanup(&t, &spec).await;
    }
}

#[tokio::test]
async fn delayed_retry_returns_to_its_origin_queue_only() {
    let t = broker!("delayed_retry_returns_to_its_origin_queue_only");
    let exchange = unique("wait-ex");
    let origin = QueueSpec::new(unique("wait-origin"), &exchange).bind("orders.*");
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
    // 205 ms = 128 + 64 + 8 + 4 + 1: five levels.
    let retry = Publication::new("", &origin.name, body, &props);
    t.publish_delayed(retry, Delay::from_ms(205).unwrap())
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
        waited >= Duration::from_millis(205),
        "waited only {waited:?}"
    );
    assert_eq!(d.body, body);
    assert_eq!(d.message_id(), Some("retry-1"));
    assert_eq!(
        d.properties().headers.get("retryCount"),
        Some(&HeaderValue::Int(1))
    );
    assert!(
        d.properties().headers.contains_key("x-death"),
        "dead-lettered by the broker"
    );
    // The raw delivery shows the last level's dead-letter exchange (level 0's: the delivery
    // exchange), the destination key and the level digits; the consumer runtime shows
    // handlers the destination instead.
    assert_eq!(d.exchange, lepus::delay::DELIVERY_EXCHANGE);
    assert_eq!(d.routing_key, format!("%.{}", origin.name));
    let digit = |h: &str| {
        d.properties()
            .headers
            .get(h)
            .and_then(HeaderValue::as_i64)
            .map(|v| v == 1)
    };
    assert_eq!(lepus::core::delay::delay_of(digit), 205);
    d.ack().await.unwrap();

    // Any other delay takes the same levels: no queue is declared for it.
    let retry = Publication::new("", &origin.name, b"other delay", &props);
    t.publish_delayed(retry, Delay::from_ms(150).unwrap())
        .await
        .unwrap();
    let d = next_within(&mut sub, 3000)
        .await
        .expect("the other delay came back");
    assert_eq!(d.body, b"other delay");
    d.ack().await.unwrap();

    assert_eq!(message_count(&t, &bystander.name).await, 0);
    assert_eq!(
        queues_named(&origin.name).await,
        [origin.name.clone(), format!("{}.dead", origin.name)],
        "no queue per delay"
    );
    drop(sub);
    cleanup(&t, &origin).await;
    cleanup(&t, &bystander).await;
}

#[tokio::test]
async fn delayed_send_reaches_the_queues_a_plain_send_would() {
    let t = broker!("delayed_send_reaches_the_queues_a_plain_send_would");
    let exchange = unique("delay-ex");
    let ads = QueueSpec::new(unique("delay-ads"), &exchange).bind("mailer.ad.*");
    let all = QueueSpec::new(unique("delay-all"), &exchange).bind("mailer.#");
    let billing = QueueSpec::new(unique("delay-billing"), &exchange).bind("billing.#");
    t.declare_exchange(&exchange).await.unwrap();
    for spec in [&ads, &all, &billing] {
        t.declare_queue(spec).await.unwrap();
    }
    let props = Properties::new().with_message_id("later-1");
    let body = br#"{"payload":{"adId":1},"metadata":{"className":"AdExpired"}}"#;
    let send = Publication::new(&exchange, "mailer.ad.expired", body, &props);
    t.publish_delayed(send, Delay::from_ms(300).unwrap())
        .await
        .unwrap();
    let mut got = Vec::new();
    for spec in [&ads, &all] {
        let mut sub = t.consume(&spec.name, 1).await.unwrap();
        let d = next_within(&mut sub, 5000).await.expect("delivered");
        assert_eq!(d.body, body, "envelope byte for byte");
        got.push(d.message_id().map(str::to_owned));
        d.ack().await.unwrap();
    }
    assert_eq!(
        got,
        [Some("later-1".to_owned()), Some("later-1".to_owned())]
    );
    assert_eq!(message_count(&t, &billing.name).await, 0);
    for spec in [&ads, &all, &billing] {
        cleanup(&t, spec).await;
    }
}

/// A quorum queue's retries wait on the quorum levels (replicated, dead-lettered at least
/// once), not on the classic ones.
#[tokio::test]
async fn quorum_retry_waits_on_the_quorum_levels() {
    let t = broker!("quorum_retry_waits_on_the_quorum_levels");
    let exchange = unique("quorum-delay-ex");
    let spec = QueueSpec::new(unique("quorum-delay"), &exchange)
        .kind(QueueKind::Quorum)
        .bind("orders.*");
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(&spec).await.unwrap();
    let props = Properties::new().with_message_id("quorum-retry");
    let retry = Publication::new("", &spec.name, b"replicated wait", &props);
    let delay = Delay::from_ms(300).unwrap().on(QueueKind::Quorum);
    t.publish_delayed(retry, delay).await.unwrap();
    let mut sub = t.consume(&spec.name, 1).await.unwrap();
    let d = next_within(&mut sub, 5000).await.expect("came back");
    assert_eq!(d.body, b"replicated wait");
    let Some(HeaderValue::List(deaths)) = d.properties().headers.get("x-death") else {
        panic!("no x-death: {:?}", d.properties().headers);
    };
    let queues: Vec<&str> = deaths
        .iter()
        .filter_map(|e| match e {
            HeaderValue::Table(t) => t.get("queue").and_then(HeaderValue::as_str),
            _ => None,
        })
        .collect();
    // 300 ms = 256 + 32 + 8 + 4.
    let mut expected = vec![
        "lepus.delay.quorum.08",
        "lepus.delay.quorum.05",
        "lepus.delay.quorum.03",
        "lepus.delay.quorum.02",
    ];
    let mut got = queues.clone();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected, "waited on the quorum levels");
    d.ack().await.unwrap();
    drop(sub);
    cleanup(&t, &spec).await;
}

/// Before the delay levels, a retry waited in `<queue>.wait.<ms>`, which dead-letters back to
/// `<queue>` through the default exchange. A message left there by the old version still
/// arrives at the new worker's queue.
#[tokio::test]
async fn messages_in_old_wait_queues_still_arrive() {
    let t = broker!("messages_in_old_wait_queues_still_arrive");
    let exchange = unique("old-ex");
    let spec = QueueSpec::new(unique("old-origin"), &exchange).bind("orders.*");
    let old = format!("{}.wait.300", spec.name);
    // The old declaration, as the previous version made it.
    let raw = lapin::Connection::connect(&t.config().addr, Default::default())
        .await
        .unwrap();
    let ch = raw.create_channel().await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-message-ttl".into(),
        lapin::types::AMQPValue::LongLongInt(300),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        lapin::types::AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        lapin::types::AMQPValue::LongString(spec.name.as_str().into()),
    );
    args.insert(
        "x-expires".into(),
        lapin::types::AMQPValue::LongLongInt(60_600),
    );
    let durable = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(old.as_str().into(), durable, args)
        .await
        .unwrap();
    // The new version declares its queue; the old wait queue holds a retry.
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(&spec).await.unwrap();
    let props = Properties::new().with_message_id("waiting-since-the-upgrade");
    t.publish(Publication::new("", &old, b"old retry", &props))
        .await
        .unwrap();
    let mut sub = t.consume(&spec.name, 1).await.unwrap();
    let d = next_within(&mut sub, 5000).await.expect("arrived");
    assert_eq!(d.body, b"old retry");
    assert_eq!(d.message_id(), Some("waiting-since-the-upgrade"));
    d.ack().await.unwrap();
    drop(sub);
    t.delete_queue(&old).await.unwrap();
    let _ = raw.close(200, "done".into()).await;
    cleanup(&t, &spec).await;
}

/// Names of the queues on the broker (`rabbitmqctl`) that start with `prefix`, sorted.
async fn queues_named(prefix: &str) -> Vec<String> {
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new("rabbitmqctl")
            .args(["list_queues", "name", "--quiet", "--no-table-headers"])
            .output()
    })
    .await
    .unwrap()
    .expect("rabbitmqctl runs");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| l.starts_with(prefix))
        .collect();
    names.sort();
    names
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
            .properties()
            .headers
            .get("x-lepus-reason")
            .and_then(HeaderValue::as_str),
        Some("unknown type")
    );
    let second = next_within(&mut dead_sub, 3000).await.unwrap();
    assert_eq!(second.body, b"rejected");
    assert!(second.properties().headers.contains_key("x-death"));
    second.ack_multiple().await.unwrap();
    drop(dead_sub);
    assert_eq!(wait_for_count(&t, &dead, 0).await, 0);
    cleanup(&t, &spec).await;
}
