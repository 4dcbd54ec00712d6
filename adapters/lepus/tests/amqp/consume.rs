//! Consuming against the real broker: prefetch, ack, nack, redelivery, lost acks.

use crate::amqp_support;
use amqp_support::{cleanup, next_within, unique, wait_for_count};
use lepus::{ErrorKind, Properties, Publication, QueueSpec, Transport};

async fn setup_with(t: &lepus::AmqpTransport, prefix: &str, n: u32) -> QueueSpec {
    let spec = QueueSpec::new(unique(prefix), unique(&format!("{prefix}-ex"))).bind("#");
    t.declare_exchange(&spec.exchange).await.unwrap();
    t.declare_queue(&spec).await.unwrap();
    let props = Properties::new();
    let bodies: Vec<[u8; 4]> = (0..n).map(u32::to_be_bytes).collect();
    let batch: Vec<_> = bodies
        .iter()
        .map(|b| Publication::new(&spec.exchange, "k", b, &props))
        .collect();
    for outcome in t.publish_batch(&batch).await.unwrap() {
        outcome.unwrap();
    }
    spec
}

#[tokio::test]
async fn prefetch_limits_unacked_deliveries() {
    let t = broker!("prefetch_limits_unacked_deliveries");
    let spec = setup_with(&t, "prefetch", 50).await;
    let mut sub = t.consume(&spec.name, 10).await.unwrap();

    let mut held = Vec::new();
    while let Some(d) = next_within(&mut sub, 300).await {
        held.push(d);
    }
    assert_eq!(held.len(), 10, "prefetch 10 holds back the rest");
    for (i, d) in held.iter().enumerate() {
        assert_eq!(d.body, (i as u32).to_be_bytes(), "in order");
        assert!(!d.redelivered);
        d.ack().await.unwrap();
    }
    let mut seen = held.len();
    while let Some(d) = next_within(&mut sub, 1000).await {
        assert_eq!(d.body, (seen as u32).to_be_bytes());
        d.ack().await.unwrap();
        seen += 1;
        if seen == 50 {
            break;
        }
    }
    assert_eq!(seen, 50);
    drop(sub);
    assert_eq!(wait_for_count(&t, &spec.name, 0).await, 0);
    cleanup(&t, &spec).await;
}

#[tokio::test]
async fn unacked_and_requeued_messages_are_redelivered() {
    let t = broker!("unacked_and_requeued_messages_are_redelivered");
    let spec = setup_with(&t, "redeliver", 2).await;

    let mut sub = t.consume(&spec.name, 10).await.unwrap();
    let a = next_within(&mut sub, 2000).await.unwrap();
    let b = next_within(&mut sub, 2000).await.unwrap();
    a.nack(true).await.unwrap();
    let again = next_within(&mut sub, 2000).await.unwrap();
    assert_eq!(again.body, a.body);
    assert!(again.redelivered);
    again.ack().await.unwrap();

    // `b` is never acked: closing the subscription gives it back to the queue.
    drop(sub);
    let mut sub = t.consume(&spec.name, 10).await.unwrap();
    let b2 = next_within(&mut sub, 2000).await.unwrap();
    assert_eq!(b2.body, b.body);
    assert!(b2.redelivered);
    b2.ack().await.unwrap();

    // Acking `b` on the closed channel had no effect: that is an error, not a silent Ok.
    let err = b.ack().await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::AckLost);
    assert!(err.is_retryable());
    // So is a second ack of the same delivery.
    assert_eq!(
        b2.ack().await.err().map(|e| e.kind()),
        Some(ErrorKind::AckLost)
    );
    drop(sub);
    cleanup(&t, &spec).await;
}

#[tokio::test]
async fn ack_multiple_settles_earlier_deliveries() {
    let t = broker!("ack_multiple_settles_earlier_deliveries");
    let spec = setup_with(&t, "ackmulti", 20).await;
    let mut sub = t.consume(&spec.name, 20).await.unwrap();
    let mut last = None;
    for _ in 0..20 {
        last = next_within(&mut sub, 2000).await;
    }
    last.unwrap().ack_multiple().await.unwrap();
    drop(sub);
    assert_eq!(wait_for_count(&t, &spec.name, 0).await, 0);
    cleanup(&t, &spec).await;
}
