//! A subscription consumes again after a lost connection even when its `next` futures are
//! dropped half-way, as the worker's `select!` does all the time: no second consumer is left
//! behind holding deliveries nobody reads (the loss once seen in the close_all_connections
//! chaos scenario).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use lepus::{AmqpConfig, AmqpTransport, Properties, Publication, QueueSpec, Transport};
use lepus_tests::chaos::broker;
use lepus_tests::proxy::{Fault, Proxy};
use tokio::time::{timeout, Instant};

const MESSAGES: usize = 300;
const PREFETCH: u16 = 10;
const ROUNDS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_survives_dropped_next_futures() {
    let Some(config) = broker("subscription resume", false).await else {
        return;
    };
    let direct = AmqpTransport::connect(config).await.expect("connects");
    let queue = format!("lepus-resume-{}", std::process::id());
    let exchange = format!("{queue}.x");
    let spec = QueueSpec::new(queue.clone(), exchange.clone());
    direct.declare_queue(&spec).await.expect("declares");
    for n in 0..MESSAGES {
        let id = n.to_string();
        let properties = Properties {
            message_id: Some(id.clone()),
            ..Properties::default()
        };
        // The default exchange routes by queue name.
        let publication = Publication::new("", &queue, id.as_bytes(), &properties);
        direct.publish(publication).await.expect("published");
    }

    let upstream: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = Proxy::start(upstream).await.expect("proxy starts");
    let through = AmqpConfig::new(proxy.amqp_url()).send_timeout(Duration::from_secs(30));
    let transport = AmqpTransport::connect(through).await.expect("connects");
    let mut subscription = transport.consume(&queue, PREFETCH).await.expect("consumes");

    let mut received = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    // Polls of varying shortness, so that many of them are dropped in the middle of
    // opening a channel, setting the prefetch or consuming.
    let mut patience = 50u64;
    while received.len() < MESSAGES && Instant::now() < deadline {
        if round < ROUNDS && received.len() >= (round + 1) * MESSAGES / (ROUNDS + 1) {
            round += 1;
            proxy.inject(Fault::Drop);
            tokio::time::sleep(Duration::from_millis(50)).await;
            proxy.heal();
        }
        patience = patience * 7 % 2_003 + 20;
        let Ok(next) = timeout(Duration::from_micros(patience), subscription.next()).await else {
            continue;
        };
        let delivery = next.expect("not cancelled").expect("a delivery");
        let id = delivery.message_id().expect("has an id").to_owned();
        // An ack of a delivery from the lost connection fails: it comes again.
        if delivery.ack().await.is_ok() {
            received.insert(id);
        }
    }
    let consumers = direct
        .queue_status(&queue)
        .await
        .expect("inspects")
        .expect("queue exists")
        .consumers;
    drop(subscription);
    let _ = direct.delete_queue(&queue).await;
    let _ = direct.delete_queue(&format!("{queue}.dead")).await;
    let _ = direct.delete_exchange(&exchange).await;

    assert_eq!(round, ROUNDS, "every connection drop happened");
    assert!(
        transport.reconnections() >= ROUNDS as u64,
        "reconnected after each drop: {}",
        transport.reconnections()
    );
    assert_eq!(
        received.len(),
        MESSAGES,
        "every message was received and acked; missing: {:?}",
        (0..MESSAGES)
            .map(|n| n.to_string())
            .filter(|id| !received.contains(id))
            .collect::<Vec<_>>()
    );
    assert_eq!(consumers, 1, "one consumer: none left behind by a resume");
}
