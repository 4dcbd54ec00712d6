//! Worker against the real RabbitMQ: graceful shutdown finishes running handlers and
//! gives the rest back; past the timeout, running handlers are abandoned and their messages
//! requeued; restarts do not count towards the delivery limit. Generic over `T: Transport`.

use crate::amqp_support;
use crate::worker_support;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use lepus::{
    Context, InProcessBroker, InProcessSubscription, Properties, Publication, Publisher, QueueKind,
    QueueSpec, Registry, Transport, Worker,
};
use worker_support::*;

/// Counts handler starts and completions; each handler sleeps `sleep_ms`.
fn slow_registry(started: &Arc<AtomicUsize>, done: &Arc<AtomicUsize>, sleep_ms: u64) -> Registry {
    let (started, done) = (Arc::clone(started), Arc::clone(done));
    Registry::new().with(move |_job: Job, _ctx: Context| {
        let (started, done) = (Arc::clone(&started), Arc::clone(&done));
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

async fn wait_until(counter: &AtomicUsize, n: usize, ms: u64) -> usize {
    let until = Instant::now() + Duration::from_millis(ms);
    while counter.load(Ordering::SeqCst) < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    counter.load(Ordering::SeqCst)
}

async fn graceful_shutdown_finishes_running<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let (started, done) = (Arc::default(), Arc::default());
    let config = config(name).concurrency(2).prefetch(10);
    let worker = Worker::new(Arc::clone(&t), config, slow_registry(&started, &done, 500));
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    send_jobs(&t, &spec.exchange, 10).await;
    assert_eq!(wait_until(&started, 2, 5_000).await, 2);
    let t0 = Instant::now();
    let stats = handle.shutdown().await.unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    assert_eq!(started.load(Ordering::SeqCst), 2, "nothing new started");
    assert_eq!(done.load(Ordering::SeqCst), 2, "running handlers finished");
    assert_eq!(stats.succeeded, 2);
    assert_eq!(
        drain(&*t, name, 500).await,
        8,
        "the rest is back in the queue"
    );
    cleanup(&*t, &spec).await;
}

async fn shutdown_timeout_requeues_running<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let (started, done) = (Arc::default(), Arc::default());
    let config = config(name)
        .concurrency(4)
        .shutdown_timeout(Duration::from_millis(200));
    let worker = Worker::new(
        Arc::clone(&t),
        config,
        slow_registry(&started, &done, 20_000),
    );
    let spec = worker.queue_spec();
    worker.declare().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    for n in 0..2 {
        publisher
            .send(&Job {
                n,
                note: String::new(),
            })
            .await
            .unwrap();
    }
    assert_eq!(wait_until(&started, 2, 5_000).await, 2);
    let t0 = Instant::now();
    stop.send(()).unwrap();
    let stats = running.await.unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(done.load(Ordering::SeqCst), 0);
    assert_eq!(stats.requeued, 2);
    assert_eq!(stats.succeeded, 0);
    assert_eq!(
        drain(&*t, name, 500).await,
        2,
        "abandoned messages requeued"
    );
    cleanup(&*t, &spec).await;
}

/// A worker restarted while messages wait in its prefetch: each stop gives them back as
/// fresh copies, so with a delivery limit of 2 and five restarts none is dead-lettered, each
/// is handled once, and no handler is told `redelivered` (a requeue would set it, and
/// count each restart as a failed delivery: the messages at the head of the queue would reach
/// the limit after two restarts).
async fn restarts_do_not_count_as_failed_deliveries<T: Transport + 'static>(
    t: Arc<T>,
    name: &str,
    kind: QueueKind,
) {
    let seen: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
    let registry = || {
        let seen = Arc::clone(&seen);
        Registry::new().with(move |job: Job, ctx: Context| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push((job.n, ctx.redelivered));
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(())
            }
        })
    };
    let config = config(name)
        .kind(kind)
        .concurrency(1)
        .prefetch(10)
        .delivery_limit(2);
    let spec = Worker::new(Arc::clone(&t), config.clone(), registry()).queue_spec();
    let mut given_back = 0;
    for round in 0..6 {
        let worker = Worker::new(Arc::clone(&t), config.clone(), registry());
        let handle = worker.start().await.unwrap();
        if round == 0 {
            send_jobs(&t, &spec.exchange, 8).await;
        }
        // Stop while one handler runs and the rest wait in the prefetch.
        let until = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().len() <= round && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stats = handle.shutdown().await.unwrap();
        assert_eq!(stats.dead_lettered, 0, "round {round}: {stats:?}");
        given_back += stats.requeued;
    }
    // The rest, without a stop.
    let handle = Worker::new(Arc::clone(&t), config.clone(), registry())
        .start()
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 8 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = handle.shutdown().await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    assert!(
        given_back >= 6,
        "messages waited in the prefetch: {given_back} given back"
    );
    assert!(
        seen.iter().all(|(_, redelivered)| !redelivered),
        "a restart is not a redelivery: {seen:?}"
    );
    seen.sort_unstable();
    let handled: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(handled, (0..8).collect::<Vec<_>>(), "each handled once");
    assert_eq!(stats.dead_lettered, 0);
    assert!(dead_letters(&*t, name, 1, 300).await.is_empty());
    cleanup(&*t, &spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_graceful_shutdown_finishes_running_handlers() {
    let t = broker!("worker_shutdown::amqp_graceful_shutdown_finishes_running_handlers");
    graceful_shutdown_finishes_running(Arc::new(t), &amqp_support::unique("w-stop")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_shutdown_timeout_requeues_running_handlers() {
    let t = broker!("worker_shutdown::amqp_shutdown_timeout_requeues_running_handlers");
    shutdown_timeout_requeues_running(Arc::new(t), &amqp_support::unique("w-abort")).await;
}

// The same bodies on the in-process broker (the embedded default).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_graceful_shutdown_finishes_running_handlers() {
    let t = lepus::InProcessBroker::new();
    graceful_shutdown_finishes_running(Arc::new(t), "w-stop-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_shutdown_timeout_requeues_running_handlers() {
    let t = lepus::InProcessBroker::new();
    shutdown_timeout_requeues_running(Arc::new(t), "w-abort-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_restarts_do_not_count_as_failed_deliveries() {
    let t = broker!("worker_shutdown::amqp_restarts_do_not_count_as_failed_deliveries");
    let name = amqp_support::unique("w-restart");
    restarts_do_not_count_as_failed_deliveries(Arc::new(t), &name, QueueKind::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_quorum_restarts_do_not_count_as_failed_deliveries() {
    let t = broker!("worker_shutdown::amqp_quorum_restarts_do_not_count_as_failed_deliveries");
    let name = amqp_support::unique("w-restart-q");
    restarts_do_not_count_as_failed_deliveries(Arc::new(t), &name, QueueKind::Quorum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_restarts_do_not_count_as_failed_deliveries() {
    let t = lepus::InProcessBroker::new();
    restarts_do_not_count_as_failed_deliveries(Arc::new(t), "w-restart-local", QueueKind::Classic)
        .await;
}

/// The in-process broker, except that publishing straight to a queue (the default exchange,
/// which giving back uses) never confirms: a broker that stopped answering.
struct NoCopies(InProcessBroker);

impl Transport for NoCopies {
    type Subscription = InProcessSubscription;

    async fn declare_exchange(&self, exchange: &str) -> lepus::Result<()> {
        self.0.declare_exchange(exchange).await
    }
    async fn declare_queue(&self, spec: &QueueSpec) -> lepus::Result<()> {
        self.0.declare_queue(spec).await
    }
    async fn publish(&self, publication: Publication<'_>) -> lepus::Result<()> {
        if publication.exchange.is_empty() {
            std::future::pending::<()>().await;
        }
        self.0.publish(publication).await
    }
    async fn publish_batch(
        &self,
        batch: &[Publication<'_>],
    ) -> lepus::Result<Vec<lepus::Result<()>>> {
        self.0.publish_batch(batch).await
    }
    async fn publish_delayed(
        &self,
        publication: Publication<'_>,
        delay: lepus::Delay,
    ) -> lepus::Result<()> {
        self.0.publish_delayed(publication, delay).await
    }
    async fn publish_dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        properties: &Properties,
    ) -> lepus::Result<()> {
        self.0.publish_dead_letter(queue, body, properties).await
    }
    async fn consume(&self, queue: &str, prefetch: u16) -> lepus::Result<InProcessSubscription> {
        self.0.consume(queue, prefetch).await
    }
    async fn delete_queue(&self, queue: &str) -> lepus::Result<()> {
        self.0.delete_queue(queue).await
    }
    async fn delete_exchange(&self, exchange: &str) -> lepus::Result<()> {
        self.0.delete_exchange(exchange).await
    }
}

/// When the copies are not confirmed, shutdown still ends within its timeout (it does not
/// wait for each message in turn) and every unstarted delivery is requeued: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_copies_fall_back_to_requeueing() {
    let t = Arc::new(NoCopies(InProcessBroker::new()));
    let (started, done) = (Arc::default(), Arc::default());
    let name = "w-no-copies";
    let config = config(name)
        .concurrency(1)
        .prefetch(10)
        .shutdown_timeout(Duration::from_millis(300));
    let worker = Worker::new(Arc::clone(&t), config, slow_registry(&started, &done, 50));
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    send_jobs(&t, &spec.exchange, 10).await;
    assert_eq!(wait_until(&started, 1, 5_000).await, 1);
    let t0 = Instant::now();
    let stats = tokio::time::timeout(Duration::from_secs(10), handle.shutdown())
        .await
        .expect("shutdown does not wait for copies that are never confirmed")
        .unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    let finished = done.load(Ordering::SeqCst) as u64;
    assert_eq!(stats.succeeded, finished);
    assert_eq!(
        stats.requeued + finished,
        stats.received,
        "every delivery not handled was requeued: {stats:?}"
    );
    assert_eq!(
        drain(&*t, name, 300).await as u64,
        10 - finished,
        "the rest is back in the queue"
    );
    cleanup(&*t, &spec).await;
}
