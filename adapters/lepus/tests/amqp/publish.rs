//! Publishing with confirms against the real broker.

use crate::amqp_support;
use std::sync::Arc;
use std::time::Instant;

use amqp_support::{cleanup, message_count, unique, wait_for_count};
use lepus::{ErrorKind, HeaderValue, NameKind, Properties, Publication, QueueSpec, Transport};

async fn setup(t: &lepus::AmqpTransport, prefix: &str, pattern: &str) -> QueueSpec {
    let spec = QueueSpec::new(unique(prefix), unique(&format!("{prefix}-ex"))).bind(pattern);
    t.declare_exchange(&spec.exchange).await.unwrap();
    t.declare_queue(&spec).await.unwrap();
    spec
}

#[tokio::test]
async fn publish_is_confirmed_with_properties_filled() {
    let t = broker!("publish_is_confirmed_with_properties_filled");
    let spec = setup(&t, "confirm", "mailer.ad.*").await;
    let props = Properties::new()
        .with_type("SendAdExpiredMail")
        .with_content_type("application/json")
        .with_message_id("m-1")
        .with_correlation_id("c-1")
        .with_reply_to("replies")
        .with_header("retryCount", 2i64)
        .with_header("reason", "test");
    let body = br#"{"payload":{"adId":1},"metadata":{"className":"SendAdExpiredMail"}}"#;
    t.publish(Publication::new(
        &spec.exchange,
        "mailer.ad.expired",
        body,
        &props,
    ))
    .await
    .unwrap();

    // Read it back raw, to see the AMQP properties as any client would (lapin on a
    // connection of its own: lepus does not hand out its lapin connection).
    let raw = lapin::Connection::connect(&t.config().addr, Default::default())
        .await
        .unwrap();
    let channel = raw.create_channel().await.unwrap();
    let got = channel
        .basic_get(spec.name.as_str().into(), Default::default())
        .await
        .unwrap()
        .unwrap();
    let p = &got.delivery.properties;
    assert_eq!(got.delivery.data, body);
    assert_eq!(*p.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        p.kind().as_ref().map(|s| s.as_str()),
        Some("SendAdExpiredMail")
    );
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
    assert_eq!(p.correlation_id().as_ref().map(|s| s.as_str()), Some("c-1"));
    assert_eq!(p.reply_to().as_ref().map(|s| s.as_str()), Some("replies"));
    assert!(p.timestamp().is_some_and(|ts| ts > 1_600_000_000));
    let headers = p.headers().as_ref().unwrap();
    assert!(headers.contains_key("retryCount") && headers.contains_key("reason"));
    let _ = channel.close(200, "ok".into()).await;
    let _ = raw.close(200, "ok".into()).await;

    // Without a message id or timestamp, the publisher fills them in.
    t.publish(Publication::new(
        &spec.exchange,
        "mailer.ad.x",
        b"{}",
        &Properties::new(),
    ))
    .await
    .unwrap();
    let mut sub = t.consume(&spec.name, 1).await.unwrap();
    let d = amqp_support::next_within(&mut sub, 2000).await.unwrap();
    assert!(d.message_id().is_some_and(|id| !id.is_empty()));
    assert!(d.properties().timestamp.is_some());
    assert_eq!(d.properties().headers.get("missing"), None::<&HeaderValue>);
    d.ack().await.unwrap();
    drop(sub);
    cleanup(&t, &spec).await;
}

/// A delivery from RabbitMQ is read in place (type, ids, content type, `reply_to`, string
/// headers); what that gives must be what its converted properties say, and what was sent.
#[tokio::test]
async fn deliveries_read_in_place_agree_with_their_properties() {
    let t = broker!("deliveries_read_in_place_agree_with_their_properties");
    let spec = setup(&t, "in-place", "in.place").await;
    let props = Properties::new()
        .with_type("Order")
        .with_content_type("application/json")
        .with_message_id("m-in-place")
        .with_correlation_id("c-in-place")
        .with_reply_to("replies")
        .with_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .with_header("x-lepus-deliveries", 3i64)
        .with_header("bin", HeaderValue::Bytes(vec![0xff, 0]));
    t.publish(Publication::new(&spec.exchange, "in.place", b"{}", &props))
        .await
        .unwrap();
    let mut sub = t.consume(&spec.name, 1).await.unwrap();
    let d = amqp_support::next_within(&mut sub, 2000).await.unwrap();
    assert_eq!(d.message_type(), Some("Order"));
    assert_eq!(d.content_type(), Some("application/json"));
    assert_eq!(d.message_id(), Some("m-in-place"));
    assert_eq!(d.correlation_id(), Some("c-in-place"));
    assert_eq!(d.reply_to(), Some("replies"));
    assert_eq!(
        d.header_str("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(d.header_str("x-lepus-deliveries"), None, "an integer");
    assert_eq!(d.header_str("bin"), None, "bytes that are not UTF-8");
    assert_eq!(d.header_str("missing"), None);
    // The same, converted.
    let whole = d.properties();
    assert_eq!(d.message_type(), whole.message_type.as_deref());
    assert_eq!(d.content_type(), whole.content_type.as_deref());
    assert_eq!(d.message_id(), whole.message_id.as_deref());
    assert_eq!(d.correlation_id(), whole.correlation_id.as_deref());
    assert_eq!(d.reply_to(), whole.reply_to.as_deref());
    assert_eq!(
        d.header_str("traceparent"),
        whole
            .headers
            .get("traceparent")
            .and_then(HeaderValue::as_str)
    );
    assert_eq!(
        whole.headers.get("bin"),
        Some(&HeaderValue::Bytes(vec![0xff, 0]))
    );
    assert_eq!(
        whole
            .headers
            .get("x-lepus-deliveries")
            .and_then(HeaderValue::as_i64),
        Some(3)
    );
    d.ack().await.unwrap();
    drop(sub);
    cleanup(&t, &spec).await;
}

#[tokio::test]
async fn unroutable_is_an_error_and_the_channel_survives() {
    let t = broker!("unroutable_is_an_error_and_the_channel_survives");
    let spec = setup(&t, "unroutable", "bound.key").await;
    let props = Properties::new();
    let err = t
        .publish(Publication::new(
            &spec.exchange,
            "nobody.listens",
            b"x",
            &props,
        ))
        .await
        .err()
        .unwrap();
    assert!(err.is_unroutable(), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unroutable { reply_code: 312 });
    assert!(err.to_string().contains("nobody.listens"), "{err}");
    t.publish(Publication::new(&spec.exchange, "bound.key", b"x", &props))
        .await
        .unwrap();
    assert_eq!(wait_for_count(&t, &spec.name, 1).await, 1);
    cleanup(&t, &spec).await;
}

/// lapin attaches a returned message to whichever confirmation it resolves next, which under
/// `multiple` acks is often a neighbour's: each outcome must still be the publish's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_mix_of_routable_and_unroutable_gets_each_its_own_outcome() {
    let t = broker!("pipelined_mix_of_routable_and_unroutable_gets_each_its_own_outcome");
    let spec = setup(&t, "mixed", "bound.key").await;
    let props = Properties::new();
    let keys: Vec<&str> = (0..600)
        .map(|i| {
            if (i * 7) % 3 == 0 {
                "nobody.listens"
            } else {
                "bound.key"
            }
        })
        .collect();
    let batch: Vec<Publication<'_>> = keys
        .iter()
        .map(|key| Publication::new(&spec.exchange, key, b"x", &props))
        .collect();
    let outcomes = t.publish_batch(&batch).await.unwrap();
    let mut routed = 0;
    for (key, outcome) in keys.iter().zip(&outcomes) {
        match (*key, outcome) {
            ("bound.key", Ok(())) => routed += 1,
            ("nobody.listens", Err(e)) if e.is_unroutable() => {}
            (key, outcome) => panic!("{key}: wrong outcome {outcome:?}"),
        }
    }
    // And concurrently, one task per publish.
    let sends = keys.iter().map(|key| {
        let t = &t;
        let exchange = spec.exchange.clone();
        let props = props.clone();
        async move {
            let outcome = t
                .publish(Publication::new(&exchange, key, b"x", &props))
                .await;
            (*key, outcome)
        }
    });
    for (key, outcome) in futures_join_all(sends).await {
        match (key, outcome) {
            ("bound.key", Ok(())) => routed += 1,
            ("nobody.listens", Err(e)) if e.is_unroutable() => {}
            (key, outcome) => panic!("concurrent {key}: wrong outcome {outcome:?}"),
        }
    }
    assert_eq!(
        routed,
        2 * keys.iter().filter(|k| **k == "bound.key").count()
    );
    assert_eq!(
        wait_for_count(&t, &spec.name, routed as u32).await,
        routed as u32
    );
    cleanup(&t, &spec).await;
}

/// The tracker keeps short message ids in place and long ones on the heap: ids of every
/// length up to AMQP's 255 bytes, on both sides of that line, are matched to their returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_are_matched_by_message_ids_of_any_length() {
    let t = broker!("returns_are_matched_by_message_ids_of_any_length");
    let spec = setup(&t, "long-ids", "bound.key").await;
    let lengths = [1, 30, 47, 48, 49, 64, 200, 255];
    let cases: Vec<(&str, Properties)> = (0..120)
        .map(|i| {
            let key = if i % 3 == 0 {
                "nobody.listens"
            } else {
                "bound.key"
            };
            let len = lengths[i % lengths.len()];
            let id = format!("{i:0>len$}");
            (key, Properties::new().with_message_id(id))
        })
        .collect();
    let batch: Vec<Publication<'_>> = cases
        .iter()
        .map(|(key, props)| Publication::new(&spec.exchange, key, b"x", props))
        .collect();
    let outcomes = t.publish_batch(&batch).await.unwrap();
    let mut routed = 0;
    for ((key, props), outcome) in cases.iter().zip(&outcomes) {
        match (*key, outcome) {
            ("bound.key", Ok(())) => routed += 1,
            ("nobody.listens", Err(e)) if e.is_unroutable() => {}
            (key, outcome) => panic!("{key} {:?}: wrong outcome {outcome:?}", props.message_id),
        }
    }
    assert_eq!(routed, 80);
    assert_eq!(wait_for_count(&t, &spec.name, 80).await, 80);
    cleanup(&t, &spec).await;
}

/// Runs futures concurrently on the current task (no extra dependency).
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, f) in set.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test]
async fn missing_exchange_is_refused_and_publishing_recovers() {
    let t = broker!("missing_exchange_is_refused_and_publishing_recovers");
    let spec = setup(&t, "missing-ex", "k").await;
    let props = Properties::new();
    let err = t
        .publish(Publication::new(
            &unique("no-such-exchange"),
            "k",
            b"x",
            &props,
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.kind(),
        ErrorKind::BrokerRefused { reply_code: 404 },
        "{err}"
    );
    // The broker closed the publishing channel; the next publish opens a new one.
    t.publish(Publication::new(&spec.exchange, "k", b"x", &props))
        .await
        .unwrap();
    cleanup(&t, &spec).await;
}

#[tokio::test]
async fn invalid_input_is_refused_before_sending() {
    let config = amqp_support::env_config().max_payload(1024);
    let t = broker!("invalid_input_is_refused_before_sending", config);
    let spec = setup(&t, "invalid", "#").await;
    let props = Properties::new();

    let big = vec![0u8; 1025];
    let err = t
        .publish(Publication::new(&spec.exchange, "k", &big, &props))
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.kind(),
        ErrorKind::PayloadTooLarge {
            size: 1025,
            limit: 1024
        }
    );

    let long_key = "k".repeat(300);
    let err = t
        .publish(Publication::new(&spec.exchange, &long_key, b"x", &props))
        .await
        .err()
        .unwrap();
    assert!(matches!(
        err.kind(),
        ErrorKind::InvalidName {
            what: NameKind::RoutingKey,
            ..
        }
    ));

    let long_header = Properties::new().with_header("h".repeat(256), 1i64);
    let err = t
        .publish(Publication::new(&spec.exchange, "k", b"x", &long_header))
        .await
        .err()
        .unwrap();
    assert!(err.is_invalid_input());

    let err = t.declare_exchange(&"e".repeat(256)).await.err().unwrap();
    assert!(err.is_invalid_input());
    let err = t
        .declare_queue(&QueueSpec::new("amq.reserved", &spec.exchange))
        .await
        .err()
        .unwrap();
    assert!(err.is_invalid_input());

    // A batch with one invalid message sends nothing.
    let ok = Publication::new(&spec.exchange, "k", b"x", &props);
    let bad = Publication::new(&spec.exchange, "k", &big, &props);
    assert!(t.publish_batch(&[ok, ok, bad]).await.is_err());

    // The connection is still fine, and nothing reached the queue.
    t.publish(ok).await.unwrap();
    assert_eq!(wait_for_count(&t, &spec.name, 1).await, 1);
    cleanup(&t, &spec).await;
}

#[tokio::test]
async fn thousand_pipelined_publishes_are_confirmed() {
    let t = Arc::new(broker!("thousand_pipelined_publishes_are_confirmed"));
    let spec = setup(&t, "pipeline", "p.#").await;
    let exchange: Arc<str> = spec.exchange.as_str().into();

    // 1,000 concurrent single publishes, each awaiting its own confirm.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let t = Arc::clone(&t);
        let exchange = Arc::clone(&exchange);
        tasks.spawn(async move {
            let props = Properties::new().with_message_id(format!("single-{i}"));
            t.publish(Publication::new(
                &exchange,
                "p.single",
                &i.to_be_bytes(),
                &props,
            ))
            .await
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        outcome.unwrap().unwrap();
    }
    let concurrent = started.elapsed();

    // 1,000 in one batch: all sent, then all confirms awaited.
    let props = Properties::new();
    let bodies: Vec<[u8; 4]> = (0..1000u32).map(u32::to_be_bytes).collect();
    let batch: Vec<Publication<'_>> = bodies
        .iter()
        .map(|b| Publication::new(&spec.exchange, "p.batch", b, &props))
        .collect();
    let started = Instant::now();
    let outcomes = t.publish_batch(&batch).await.unwrap();
    let batched = started.elapsed();
    assert_eq!(outcomes.len(), 1000);
    assert!(outcomes.iter().all(Result::is_ok));

    // A mixed batch reports per message.
    let mixed = [
        Publication::new(&spec.exchange, "p.ok", b"x", &props),
        Publication::new(&spec.exchange, "unbound", b"x", &props),
    ];
    let outcomes = t.publish_batch(&mixed).await.unwrap();
    assert!(outcomes[0].is_ok());
    assert!(outcomes[1]
        .as_ref()
        .err()
        .is_some_and(|e| e.is_unroutable()));

    eprintln!("1,000 concurrent publishes: {concurrent:?}; batch of 1,000: {batched:?}");
    assert_eq!(wait_for_count(&t, &spec.name, 2001).await, 2001);
    assert_eq!(message_count(&t, &spec.name).await, 2001);
    cleanup(&t, &spec).await;
}

#[tokio::test]
async fn transient_stays_transient_and_dead_letters_are_persistent() {
    let t = broker!("transient_stays_transient_and_dead_letters_are_persistent");
    let spec = setup(&t, "transient", "t.key").await;
    let props = Properties::new()
        .with_type("Ping")
        .with_message_id("transient-1")
        .with_transient();
    t.publish(Publication::new(&spec.exchange, "t.key", b"{}", &props))
        .await
        .unwrap();
    t.publish_dead_letter(&spec.name, b"{}", &props.clone().with_message_id("dead-1"))
        .await
        .unwrap();
    let browser = t.browse().await.unwrap();
    let (d, _) = browser.get(&spec.name).await.unwrap().expect("a message");
    assert_eq!(d.message_id(), Some("transient-1"));
    assert!(d.properties().transient, "delivery_mode 1 on the wire");
    let dead = format!("{}.dead", spec.name);
    let (d, _) = browser.get(&dead).await.unwrap().expect("a dead letter");
    assert_eq!(d.message_id(), Some("dead-1"));
    assert!(!d.properties().transient, "dead letters are kept on disk");
    browser.close().await.unwrap();
    cleanup(&t, &spec).await;
}

#[derive(Debug, serde::Serialize, serde::Deserialize, lepus::Message)]
#[lepus(type = "LepusTestFirst", routing_key = "first.sent")]
struct First {
    n: u32,
}

/// Deploy order does not matter: a producer started before any worker declares its exchange
/// before its first send, which is then unroutable (no queue bound yet, the send is
/// mandatory), not a channel-closing NOT_FOUND; once a worker's queue is bound, sends arrive.
#[tokio::test]
async fn a_producer_started_first_declares_its_exchange() {
    let t = std::sync::Arc::new(broker!("a_producer_started_first_declares_its_exchange"));
    let spec = QueueSpec::new(unique("first"), unique("first-ex")).bind("first.#");
    let publisher = lepus::Publisher::new(std::sync::Arc::clone(&t), spec.exchange.clone());
    let err = publisher.send(&First { n: 1 }).await.unwrap_err();
    assert!(err.is_unroutable(), "not NOT_FOUND: {err}");
    // A clone shares the declaration; the worker side declares its queue later.
    t.declare_queue(&spec).await.unwrap();
    publisher.clone().send(&First { n: 2 }).await.unwrap();
    assert_eq!(amqp_support::wait_for_count(&t, &spec.name, 1).await, 1);
    cleanup(&t, &spec).await;
}
