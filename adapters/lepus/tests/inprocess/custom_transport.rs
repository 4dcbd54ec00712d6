//! A transport implemented outside the crate, as a user would: a wrapper around the
//! in-process broker whose deliveries carry an acknowledger of its own, which records every
//! settlement and can lose an ack on the way (the fault a dying channel causes). A `Worker`
//! runs on it unchanged.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::{
    Acknowledge, Context, Delivery, ErrorKind, InProcessBroker, InProcessSubscription, Message,
    Properties, Publication, Publisher, QueueSpec, Registry, SettleFuture, Settlement,
    Subscription, Transport, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(type = "CustomTransportJob", routing_key = "jobs.custom")]
struct Job {
    n: u64,
}

/// What the acknowledgers saw, and the fault to inject.
#[derive(Debug, Default)]
struct Settlements {
    /// `(delivery tag, settlement)`, in the order they were sent.
    log: Mutex<Vec<(u64, Settlement)>>,
    /// Lose the next ack: the broker takes it back (requeues the message) and the
    /// acknowledger answers that the ack had no effect.
    lose_next_ack: AtomicBool,
}

impl Settlements {
    fn log(&self) -> Vec<(u64, Settlement)> {
        self.log.lock().unwrap().clone()
    }
}

/// The in-process broker behind a transport of our own.
struct Recording {
    inner: InProcessBroker,
    settlements: Arc<Settlements>,
}

struct RecordingSubscription {
    inner: InProcessSubscription,
    settlements: Arc<Settlements>,
}

/// Settles one delivery of the inner broker, recording the settlement first.
struct RecordingAcker {
    inner: Delivery,
    settlements: Arc<Settlements>,
}

impl Acknowledge for RecordingAcker {
    fn settle(&self, delivery_tag: u64, settlement: Settlement) -> SettleFuture<'_> {
        Box::pin(async move {
            self.settlements
                .log
                .lock()
                .unwrap()
                .push((delivery_tag, settlement));
            let is_ack = matches!(settlement, Settlement::Ack | Settlement::AckMultiple);
            if is_ack && self.settlements.lose_next_ack.swap(false, Ordering::SeqCst) {
                self.inner.nack(true).await?;
                return Ok(false);
            }
            match self.inner.settle(settlement).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == ErrorKind::AckLost => Ok(false),
                Err(e) => Err(e),
            }
        })
    }
}

impl Subscription for RecordingSubscription {
    async fn next(&mut self) -> Option<lepus::Result<Delivery>> {
        // Cancel-safe: the only await is the inner (cancel-safe) `next`.
        let mut inner = match self.inner.next().await? {
            Ok(delivery) => delivery,
            Err(e) => return Some(Err(e)),
        };
        let body = std::mem::take(&mut inner.body);
        let properties = inner.properties().clone();
        let exchange = std::mem::take(&mut inner.exchange);
        let routing_key = std::mem::take(&mut inner.routing_key);
        let (tag, redelivered, generation) =
            (inner.delivery_tag, inner.redelivered, inner.generation());
        let acker = Arc::new(RecordingAcker {
            inner,
            settlements: Arc::clone(&self.settlements),
        });
        Some(Ok(Delivery::new(body, tag, acker)
            .with_properties(properties)
            .with_redelivered(redelivered)
            .with_exchange(exchange)
            .with_routing_key(routing_key)
            .with_generation(generation)))
    }

    async fn cancel(&mut self) -> lepus::Result<()> {
        self.inner.cancel().await
    }
}

impl Transport for Recording {
    type Subscription = RecordingSubscription;

    async fn declare_exchange(&self, exchange: &str) -> lepus::Result<()> {
        self.inner.declare_exchange(exchange).await
    }
    async fn declare_queue(&self, spec: &QueueSpec) -> lepus::Result<()> {
        self.inner.declare_queue(spec).await
    }
    async fn publish(&self, publication: Publication<'_>) -> lepus::Result<()> {
        self.inner.publish(publication).await
    }
    async fn publish_batch(
        &self,
        batch: &[Publication<'_>],
    ) -> lepus::Result<Vec<lepus::Result<()>>> {
        self.inner.publish_batch(batch).await
    }
    async fn publish_delayed(
        &self,
        publication: Publication<'_>,
        delay: lepus::Delay,
    ) -> lepus::Result<()> {
        self.inner.publish_delayed(publication, delay).await
    }
    async fn publish_dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        properties: &Properties,
    ) -> lepus::Result<()> {
        self.inner
            .publish_dead_letter(queue, body, properties)
            .await
    }
    async fn consume(&self, queue: &str, prefetch: u16) -> lepus::Result<RecordingSubscription> {
        Ok(RecordingSubscription {
            inner: self.inner.consume(queue, prefetch).await?,
            settlements: Arc::clone(&self.settlements),
        })
    }
    async fn delete_queue(&self, queue: &str) -> lepus::Result<()> {
        self.inner.delete_queue(queue).await
    }
    async fn delete_exchange(&self, exchange: &str) -> lepus::Result<()> {
        self.inner.delete_exchange(exchange).await
    }
}

fn recording() -> Arc<Recording> {
    Arc::new(Recording {
        inner: InProcessBroker::new(),
        settlements: Arc::default(),
    })
}

/// A worker that logs which jobs it handled.
fn worker(
    t: &Arc<Recording>,
    config: WorkerConfig,
    handled: &Arc<Mutex<Vec<u64>>>,
) -> Worker<Recording> {
    let handled = Arc::clone(handled);
    let registry = Registry::new().with(move |job: Job, _ctx: Context| {
        let handled = Arc::clone(&handled);
        async move {
            handled.lock().unwrap().push(job.n);
            Ok(())
        }
    });
    Worker::new(Arc::clone(t), config, registry)
}

async fn send(t: &Arc<Recording>, exchange: &str, n: u64) {
    let publisher = Publisher::new(Arc::clone(t), exchange.to_owned());
    for n in 0..n {
        publisher.send(&Job { n }).await.unwrap();
    }
}

async fn wait_for(handled: &Mutex<Vec<u64>>, n: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    while handled.lock().unwrap().len() < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The tags a run of settlements acknowledged (an `AckMultiple` covers every earlier tag
/// not yet settled).
fn acked_tags(log: &[(u64, Settlement)]) -> BTreeSet<u64> {
    let mut acked = BTreeSet::new();
    let mut settled = BTreeSet::new();
    for &(tag, settlement) in log {
        match settlement {
            Settlement::Ack => {
                acked.insert(tag);
            }
            Settlement::AckMultiple => {
                for t in 1..=tag {
                    if settled.insert(t) {
                        acked.insert(t);
                    }
                }
            }
            _ => {}
        }
        settled.insert(tag);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_acks_through_a_custom_acknowledger() {
    let t = recording();
    let handled = Arc::default();
    let config = WorkerConfig::new("custom-acks", "custom-acks.x")
        .bind("jobs.#")
        .prefetch(10)
        .concurrency(4);
    let handle = worker(&t, config, &handled).start().await.unwrap();
    send(&t, "custom-acks.x", 20).await;
    wait_for(&handled, 20).await;
    let stats = handle.shutdown().await.unwrap();

    let mut seen = handled.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>(), "each job handled once");
    assert_eq!(stats.succeeded, 20, "{stats:?}");
    assert_eq!(stats.acks_lost, 0, "{stats:?}");
    let log = t.settlements.log();
    assert!(
        log.iter()
            .all(|(_, s)| matches!(s, Settlement::Ack | Settlement::AckMultiple)),
        "only acks: {log:?}"
    );
    assert_eq!(
        acked_tags(&log),
        (1..=20).collect::<BTreeSet<_>>(),
        "every delivery acked through the custom acknowledger: {log:?}"
    );
    assert_eq!(t.inner.message_count("custom-acks").unwrap(), 0);
    assert_eq!(t.inner.unacked_count("custom-acks").unwrap(), 0);
}

/// The acknowledger loses the first ack (the broker requeues the message): the worker counts
/// the lost ack, the message comes back and is handled again (at-least-once), and in the end
/// nothing is left in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ack_means_the_message_comes_back() {
    let t = recording();
    t.settlements.lose_next_ack.store(true, Ordering::SeqCst);
    let handled = Arc::default();
    let config = WorkerConfig::new("custom-lost", "custom-lost.x")
        .bind("jobs.#")
        .prefetch(1)
        .concurrency(1);
    let handle = worker(&t, config, &handled).start().await.unwrap();
    send(&t, "custom-lost.x", 3).await;
    wait_for(&handled, 4).await;
    let stats = handle.shutdown().await.unwrap();

    let mut seen = handled.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, [0, 0, 1, 2], "job 0 handled again after its lost ack");
    assert_eq!(stats.acks_lost, 1, "{stats:?}");
    let log = t.settlements.log();
    assert!(log.len() >= 4, "{log:?}");
    assert_eq!(t.inner.message_count("custom-lost").unwrap(), 0);
    assert_eq!(t.inner.unacked_count("custom-lost").unwrap(), 0);
}
