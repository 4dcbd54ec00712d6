//! Worker against the real RabbitMQ: batched acks (`multiple`) never cover a delivery still
//! in flight. A slow first delivery holds back the acks of the fast ones behind it; when the
//! shutdown timeout abandons it, it is requeued and only it comes back. Generic over
//! `T: Transport`.

use crate::amqp_support;
use crate::worker_support;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::{Context, Registry, Transport, Worker};
use worker_support::*;

const FAST: usize = 100;

async fn slow_first_is_not_covered_by_a_batched_ack<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let fast_done = Arc::new(AtomicUsize::new(0));
    let done = Arc::clone(&fast_done);
    let registry = Registry::new().with(move |job: Job, _ctx: Context| {
        let done = Arc::clone(&done);
        async move {
            if job.n == 0 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            } else {
                done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    });
    let config = config(name)
        .prefetch(500)
        .concurrency(500)
        .shutdown_timeout(Duration::from_millis(300));
    let worker = Worker::new(Arc::clone(&t), config, registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    send_jobs(&t, &spec.exchange, FAST as u64 + 1).await;
    let until = Instant::now() + Duration::from_secs(10);
    while fast_done.load(Ordering::SeqCst) < FAST && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fast_done.load(Ordering::SeqCst), FAST);
    // Well past the 5 ms flush delay: any batched ack that was going to go out went out.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.succeeded, FAST as u64);
    assert_eq!(stats.requeued, 1, "the slow one was abandoned: {stats:?}");
    assert_eq!(stats.acks_lost, 0);
    assert_eq!(
        drain(&*t, name, 500).await,
        1,
        "only the slow one comes back: the fast ones were acked, the slow one was not"
    );
    cleanup(&*t, &spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_slow_first_is_not_covered_by_a_batched_ack() {
    let t = broker!("worker_acks::amqp_slow_first_is_not_covered_by_a_batched_ack");
    slow_first_is_not_covered_by_a_batched_ack(Arc::new(t), &amqp_support::unique("w-acks")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_slow_first_is_not_covered_by_a_batched_ack() {
    let t = lepus::InProcessBroker::new();
    slow_first_is_not_covered_by_a_batched_ack(Arc::new(t), "w-acks-local").await;
}
