//! The same test body against every transport: the in-process broker (directly and through
//! [`lepus::Broker`]) on paused time, and RabbitMQ at `AMQP_ADDR` (skipped loudly when
//! unreachable, failing under `CI=true` or `LEPUS_REQUIRE_BROKER=1`).

use crate::amqp_support;
use std::time::Duration;

use amqp_support::{next_within, unique};
use lepus::{
    Delay, Delivery, HeaderValue, InProcessBroker, Properties, Publication, QueueSpec,
    Subscription, Transport,
};
use tokio::time::Instant;

struct Names {
    exchange: String,
    ads: String,
    all: String,
}

impl Names {
    fn new() -> Self {
        Names {
            exchange: unique("parity-ex"),
            ads: unique("parity-ads"),
            all: unique("parity-all"),
        }
    }
}

fn first_death(d: &Delivery) -> Option<(String, String, i64)> {
    match d.properties().headers.get("x-death")? {
        HeaderValue::List(entries) => match entries.first()? {
            HeaderValue::Table(t) => Some((
                t.get("queue")?.as_str()?.to_owned(),
                t.get("reason")?.as_str()?.to_owned(),
                t.get("count")?.as_i64()?,
            )),
            _ => None,
        },
        _ => None,
    }
}

async fn next<S: Subscription>(sub: &mut S) -> Delivery {
    next_within(sub, 5_000)
        .await
        .expect("a delivery within 5 s")
}

/// Topic routing, unroutable, requeue, reject to `<queue>.dead`, a wait queue and a
/// dead-letter publish: what the worker relies on, identical on every transport.
async fn worker_semantics<T: Transport>(t: &T, n: &Names) {
    let ads = QueueSpec::new(&n.ads, &n.exchange).bind("mailer.ad.*");
    let all = QueueSpec::new(&n.all, &n.exchange).bind("mailer.#");
    t.declare_exchange(&n.exchange).await.unwrap();
    t.declare_queue(&ads).await.unwrap();
    t.declare_queue(&all).await.unwrap();

    let props = Properties::new().with_type("AdExpired");
    let publish = |key: &'static str, body: &'static [u8]| {
        let p = props.clone();
        let exchange = n.exchange.clone();
        async move { t.publish(Publication::new(&exchange, key, body, &p)).await }
    };
    publish("mailer.ad.expired", b"ad").await.unwrap();
    publish("mailer.invoice", b"invoice").await.unwrap();
    let err = publish("billing.invoice", b"lost").await.unwrap_err();
    assert!(err.is_unroutable(), "{err}");

    // `mailer.#` got both, in order.
    let mut sub_all = t.consume(&n.all, 10).await.unwrap();
    let a = next(&mut sub_all).await;
    let b = next(&mut sub_all).await;
    assert_eq!(
        (a.body.as_slice(), b.body.as_slice()),
        (&b"ad"[..], &b"invoice"[..])
    );
    assert_eq!(a.routing_key, "mailer.ad.expired");
    assert_eq!(a.properties().message_type.as_deref(), Some("AdExpired"));
    b.ack_multiple().await.unwrap();

    // `mailer.ad.*` got one: requeue, then reject to the dead-letter queue.
    let mut sub_ads = t.consume(&n.ads, 10).await.unwrap();
    let d = next(&mut sub_ads).await;
    assert_eq!(d.body, b"ad");
    assert!(!d.redelivered);
    d.nack(true).await.unwrap();
    let d = next(&mut sub_ads).await;
    assert!(d.redelivered);
    d.reject(false).await.unwrap();
    let dead_name = format!("{}.dead", n.ads);
    let mut sub_dead = t.consume(&dead_name, 10).await.unwrap();
    let dead = next(&mut sub_dead).await;
    assert_eq!(dead.body, b"ad");
    assert_eq!(
        first_death(&dead),
        Some((n.ads.clone(), "rejected".to_owned(), 1))
    );
    dead.ack().await.unwrap();

    // A retry on the delay levels returns the message to its origin only, after the delay
    // (200 ms = 128 + 64 + 8: its last wait is at level 3).
    let started = Instant::now();
    let retry = Publication::new("", &n.ads, b"later", &props);
    t.publish_delayed(retry, Delay::from_ms(200).unwrap())
        .await
        .unwrap();
    let back = next(&mut sub_ads).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(back.body, b"later");
    assert!(
        back.exchange.starts_with(lepus::delay::PREFIX),
        "{}",
        back.exchange
    );
    assert_eq!(
        first_death(&back),
        Some(("lepus.delay.03".to_owned(), "expired".to_owned(), 1))
    );
    back.ack().await.unwrap();
    assert!(
        next_within(&mut sub_all, 300).await.is_none(),
        "origin only"
    );

    // A delayed send is routed by the topic exchange's bindings when its time comes.
    let send = Publication::new(&n.exchange, "mailer.invoice", b"invoice later", &props);
    t.publish_delayed(send, Delay::from_ms(100).unwrap())
        .await
        .unwrap();
    let later = next(&mut sub_all).await;
    assert_eq!(later.body, b"invoice later");
    later.ack().await.unwrap();
    assert!(
        next_within(&mut sub_ads, 300).await.is_none(),
        "`mailer.ad.*` does not match"
    );

    // Publishing straight into the dead-letter queue.
    t.publish_dead_letter(&n.ads, b"poison", &props.clone().with_header("why", "test"))
        .await
        .unwrap();
    let dead = next(&mut sub_dead).await;
    assert_eq!(dead.body, b"poison");
    assert_eq!(
        dead.properties()
            .headers
            .get("why")
            .and_then(HeaderValue::as_str),
        Some("test")
    );
    dead.ack().await.unwrap();

    drop((sub_all, sub_ads, sub_dead));
    for q in [
        n.ads.clone(),
        dead_name,
        n.all.clone(),
        format!("{}.dead", n.all),
    ] {
        t.delete_queue(&q).await.unwrap();
    }
    t.delete_exchange(&n.exchange).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn in_process() {
    worker_semantics(&InProcessBroker::new(), &Names::new()).await;
}

#[tokio::test(start_paused = true)]
async fn in_process_through_broker_choice() {
    let broker = lepus::connect_to(Some(lepus::IN_PROCESS_ADDR))
        .await
        .unwrap();
    assert_eq!(broker.name(), "in-process");
    assert!(broker.as_in_process().is_some());
    worker_semantics(&broker, &Names::new()).await;
}

#[tokio::test]
async fn rabbitmq() {
    let t = broker!("inprocess_parity::rabbitmq");
    worker_semantics(&t, &Names::new()).await;
}

#[tokio::test]
async fn rabbitmq_through_broker_choice() {
    let Some(t) = amqp_support::connect("inprocess_parity::rabbitmq_through_broker_choice").await
    else {
        return;
    };
    let broker = lepus::Broker::from(t);
    assert_eq!(broker.name(), "rabbitmq");
    worker_semantics(&broker, &Names::new()).await;
}
