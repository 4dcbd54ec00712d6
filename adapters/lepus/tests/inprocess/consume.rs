//! In-process broker: publishing, consuming, prefetch, acks, requeues and redelivery.

use std::time::Duration;

use lepus::{
    Delivery, ErrorKind, InProcessBroker, InProcessSubscription, NameKind, Properties, Publication,
    QueueSpec, Transport,
};

async fn setup(b: &InProcessBroker, n: u32) -> QueueSpec {
    let spec = QueueSpec::new("work", "shop").bind("#");
    b.declare_exchange(&spec.exchange).await.unwrap();
    b.declare_queue(&spec).await.unwrap();
    let props = Properties::new();
    for i in 0..n {
        let body = i.to_be_bytes();
        b.publish(Publication::new("shop", "k", &body, &props))
            .await
            .unwrap();
    }
    spec
}

async fn next_within(sub: &mut InProcessSubscription, ms: u64) -> Option<Delivery> {
    match tokio::time::timeout(Duration::from_millis(ms), sub.next()).await {
        Ok(Some(d)) => Some(d.unwrap()),
        Ok(None) | Err(_) => None,
    }
}

#[tokio::test(start_paused = true)]
async fn publish_consume_ack() {
    let b = InProcessBroker::new();
    setup(&b, 0).await;
    let props = Properties::new()
        .with_type("SendAdExpiredMail")
        .with_content_type("application/json")
        .with_message_id("m-1")
        .with_header("tenant", "eu");
    b.publish(Publication::new("shop", "mailer.ad.expired", b"{}", &props))
        .await
        .unwrap();
    assert_eq!(b.message_count("work").unwrap(), 1);

    let mut sub = b.consume("work", 10).await.unwrap();
    let d = next_within(&mut sub, 100).await.unwrap();
    assert_eq!(d.body, b"{}");
    assert_eq!(d.message_id(), Some("m-1"));
    assert_eq!(
        d.properties().message_type.as_deref(),
        Some("SendAdExpiredMail")
    );
    assert_eq!(
        d.properties()
            .headers
            .get("tenant")
            .and_then(|v| v.as_str()),
        Some("eu")
    );
    assert!(
        d.properties().timestamp.is_some(),
        "filled in like the AMQP publisher"
    );
    assert_eq!(d.exchange, "shop");
    assert_eq!(d.routing_key, "mailer.ad.expired");
    assert_eq!(d.delivery_tag, 1);
    assert!(!d.redelivered);
    assert_eq!(b.message_count("work").unwrap(), 0);
    assert_eq!(b.unacked_count("work").unwrap(), 1);
    d.ack().await.unwrap();
    assert_eq!(b.unacked_count("work").unwrap(), 0);
    // A second ack of the same delivery has no effect: an error, as on RabbitMQ.
    assert_eq!(d.ack().await.unwrap_err().kind(), ErrorKind::AckLost);
    assert!(next_within(&mut sub, 100).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn message_ids_are_filled_in() {
    let b = InProcessBroker::new();
    setup(&b, 2).await;
    let first = b.get("work").unwrap().unwrap();
    let second = b.get("work").unwrap().unwrap();
    assert!(first.message_id().is_some());
    assert_ne!(first.message_id(), second.message_id());
    assert!(b.get("work").unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn invalid_input_is_refused_before_anything_is_enqueued() {
    let b = InProcessBroker::with_max_payload(8);
    setup(&b, 0).await;
    let props = Properties::new();
    let err = b
        .publish(Publication::new("shop", "k", &[0; 9], &props))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge { size: 9, limit: 8 });
    let long = "k".repeat(256);
    let err = b
        .publish(Publication::new("shop", &long, b"x", &props))
        .await
        .unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::InvalidName {
            what: NameKind::RoutingKey,
            ..
        }
    ));
    let bad = Properties::new().with_message_id("i".repeat(256));
    assert!(b
        .publish(Publication::new("shop", "k", b"x", &bad))
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(b
        .declare_exchange("amq.mine")
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(b
        .consume("no space", 1)
        .await
        .unwrap_err()
        .is_invalid_input());
    // A batch with one invalid publication sends nothing.
    let ok = Publication::new("shop", "k", b"x", &props);
    let too_big = Publication::new("shop", "k", &[0; 9], &props);
    assert!(b.publish_batch(&[ok, too_big]).await.is_err());
    assert_eq!(b.message_count("work").unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn unroutable_and_missing_exchange() {
    let b = InProcessBroker::new();
    let spec = QueueSpec::new("mailer", "shop").bind("mailer.#");
    b.declare_exchange("shop").await.unwrap();
    b.declare_queue(&spec).await.unwrap();
    let props = Properties::new();
    let err = b
        .publish(Publication::new("shop", "billing.invoice", b"x", &props))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unroutable { reply_code: 312 });
    assert!(err.is_unroutable());
    let err = b
        .publish(Publication::new("", "no-such-queue", b"x", &props))
        .await
        .unwrap_err();
    assert!(err.is_unroutable());
    let err = b
        .publish(Publication::new("nowhere", "k", b"x", &props))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokerRefused { reply_code: 404 });
    // Batches report per message.
    let outcomes = b
        .publish_batch(&[
            Publication::new("shop", "mailer.x", b"1", &props),
            Publication::new("shop", "billing.x", b"2", &props),
        ])
        .await
        .unwrap();
    assert!(outcomes[0].is_ok());
    assert!(outcomes[1].as_ref().unwrap_err().is_unroutable());
    // The default exchange routes by queue name.
    b.publish(Publication::new("", "mailer", b"3", &props))
        .await
        .unwrap();
    assert_eq!(b.message_count("mailer").unwrap(), 2);
    // Consuming a missing queue is 404.
    let err = b.consume("ghost", 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokerRefused { reply_code: 404 });
}

#[tokio::test(start_paused = true)]
async fn prefetch_limits_unacked_deliveries() {
    let b = InProcessBroker::new();
    setup(&b, 50).await;
    let mut sub = b.consume("work", 10).await.unwrap();
    let mut held = Vec::new();
    while let Some(d) = next_within(&mut sub, 100).await {
        held.push(d);
    }
    assert_eq!(held.len(), 10, "prefetch 10 holds back the rest");
    assert_eq!(b.message_count("work").unwrap(), 40);
    for (i, d) in held.iter().enumerate() {
        assert_eq!(d.body, (i as u32).to_be_bytes(), "in order");
        assert_eq!(d.delivery_tag, i as u64 + 1);
    }
    // Acking the first five with `multiple` frees five slots.
    held[4].ack_multiple().await.unwrap();
    let mut more = Vec::new();
    while let Some(d) = next_within(&mut sub, 100).await {
        more.push(d);
    }
    assert_eq!(more.len(), 5);
    assert_eq!(more[0].body, 10u32.to_be_bytes());
    assert_eq!(held[2].ack().await.unwrap_err().kind(), ErrorKind::AckLost);
    for d in held[5..].iter().chain(&more) {
        d.ack().await.unwrap();
    }
    let mut seen = 15;
    while let Some(d) = next_within(&mut sub, 100).await {
        assert_eq!(d.body, (seen as u32).to_be_bytes());
        d.ack().await.unwrap();
        seen += 1;
    }
    assert_eq!(seen, 50);
    assert_eq!(b.message_count("work").unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn consumers_take_turns() {
    let b = InProcessBroker::new();
    setup(&b, 0).await;
    let mut a = b.consume("work", 100).await.unwrap();
    let mut c = b.consume("work", 100).await.unwrap();
    assert_eq!(b.consumer_count("work").unwrap(), 2);
    let props = Properties::new();
    for i in 0u32..6 {
        b.publish(Publication::new("shop", "k", &i.to_be_bytes(), &props))
            .await
            .unwrap();
    }
    let mut got_a = Vec::new();
    while let Some(d) = next_within(&mut a, 50).await {
        got_a.push(u32::from_be_bytes(d.body[..4].try_into().unwrap()));
    }
    let mut got_c = Vec::new();
    while let Some(d) = next_within(&mut c, 50).await {
        got_c.push(u32::from_be_bytes(d.body[..4].try_into().unwrap()));
    }
    assert_eq!(got_a, [0, 2, 4]);
    assert_eq!(got_c, [1, 3, 5]);
}

#[tokio::test(start_paused = true)]
async fn nack_requeue_redelivers_at_the_head() {
    let b = InProcessBroker::new();
    setup(&b, 3).await;
    let mut sub = b.consume("work", 1).await.unwrap();
    let first = next_within(&mut sub, 100).await.unwrap();
    assert!(!first.redelivered);
    first.nack(true).await.unwrap();
    let again = next_within(&mut sub, 100).await.unwrap();
    assert_eq!(again.body, first.body, "back at the head");
    assert!(again.redelivered);
    assert_eq!(again.delivery_tag, 2);
    again.reject(true).await.unwrap();
    let third = next_within(&mut sub, 100).await.unwrap();
    assert_eq!(third.body, first.body);
    assert!(third.redelivered);
    third.ack().await.unwrap();
    let next = next_within(&mut sub, 100).await.unwrap();
    assert_eq!(next.body, 1u32.to_be_bytes());
    assert!(!next.redelivered);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_subscription_requeues_unsettled_deliveries() {
    let b = InProcessBroker::new();
    setup(&b, 3).await;
    let mut sub = b.consume("work", 10).await.unwrap();
    let d0 = next_within(&mut sub, 100).await.unwrap();
    let d1 = next_within(&mut sub, 100).await.unwrap();
    d0.ack().await.unwrap();
    // d1 held, d2 delivered into the subscription's buffer but never read.
    drop(sub);
    assert_eq!(b.message_count("work").unwrap(), 2);
    assert_eq!(b.consumer_count("work").unwrap(), 0);
    // Settling on the closed subscription has no effect.
    assert_eq!(d1.ack().await.unwrap_err().kind(), ErrorKind::AckLost);

    let mut sub = b.consume("work", 10).await.unwrap();
    let r1 = next_within(&mut sub, 100).await.unwrap();
    let r2 = next_within(&mut sub, 100).await.unwrap();
    assert_eq!(r1.body, 1u32.to_be_bytes(), "original order kept");
    assert_eq!(r2.body, 2u32.to_be_bytes());
    assert!(r1.redelivered && r2.redelivered);
    assert_eq!(r1.delivery_tag, 1, "tags are per subscription");
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_the_flow_but_settling_still_works() {
    let b = InProcessBroker::new();
    setup(&b, 3).await;
    let mut sub = b.consume("work", 1).await.unwrap();
    let d = next_within(&mut sub, 100).await.unwrap();
    sub.cancel().await.unwrap();
    assert!(next_within(&mut sub, 100).await.is_none());
    d.ack().await.unwrap();
    assert_eq!(
        b.message_count("work").unwrap(),
        2,
        "nothing more delivered"
    );
}

#[tokio::test(start_paused = true)]
async fn purge_and_delete() {
    let b = InProcessBroker::new();
    let spec = setup(&b, 4).await;
    assert_eq!(b.purge("work").unwrap(), 4);
    assert_eq!(b.message_count("work").unwrap(), 0);
    let mut sub = b.consume("work", 1).await.unwrap();
    b.delete_queue("work").await.unwrap();
    assert!(
        next_within(&mut sub, 100).await.is_none(),
        "deleting ends consumers"
    );
    assert_eq!(
        b.message_count("work").unwrap_err().kind(),
        ErrorKind::BrokerRefused { reply_code: 404 }
    );
    // Its bindings went with it.
    assert_eq!(b.binding_count("shop").unwrap(), 0);
    b.delete_queue("work").await.unwrap();
    b.delete_exchange(&spec.exchange).await.unwrap();
    b.delete_exchange(&spec.exchange).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_broker() {
    let b = InProcessBroker::new();
    let other = b.clone();
    setup(&b, 1).await;
    assert_eq!(other.message_count("work").unwrap(), 1);
}
