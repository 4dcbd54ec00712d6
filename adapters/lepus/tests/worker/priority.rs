//! Worker queues with a maximum priority (`x-max-priority`): messages published while no
//! consumer runs come out highest priority first, FIFO within a priority, above the maximum
//! counted as the maximum; a priority on a quorum queue is a configuration error. The same
//! bodies on RabbitMQ and on the in-process broker.

use crate::amqp_support;
use crate::worker_support;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lepus::{
    Context, ErrorKind, Publisher, QueueKind, Registry, SendOptions, Transport, Worker,
    WorkerConfig,
};
use worker_support::*;

/// (job number, priority) in publish order; the expected delivery order follows.
const SENT: [(u64, Option<u8>); 8] = [
    (0, Some(1)),
    (1, None),
    (2, Some(9)),
    (3, Some(1)),
    (4, Some(200)), // above the maximum (10): counts as 10
    (5, Some(9)),
    (6, Some(0)),
    (7, Some(10)),
];
/// 10: 4 then 7 (FIFO within a priority); 9: 2, 5; 1: 0, 3; 0 and none: 1, 6.
const EXPECTED: [u64; 8] = [4, 7, 2, 5, 0, 3, 1, 6];

async fn high_priority_first<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let config = config(name).max_priority(10).prefetch(1).concurrency(1);
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&order);
    let registry = Registry::new().with(move |job: Job, _ctx: Context| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(job.n);
            Ok(())
        }
    });
    let worker = Worker::new(Arc::clone(&t), config, registry);
    let spec = worker.queue_spec();
    worker.declare().await.unwrap();
    // Published while no consumer runs.
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    for (n, priority) in SENT {
        let options = match priority {
            Some(p) => SendOptions::new().priority(p),
            None => SendOptions::new(),
        };
        let job = Job {
            n,
            note: String::new(),
        };
        publisher.send_with(&job, &options).await.unwrap();
    }
    let handle = worker.start().await.unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while order.lock().unwrap().len() < SENT.len() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(*order.lock().unwrap(), EXPECTED);
    assert_eq!(stats.succeeded, SENT.len() as u64);
    cleanup(&*t, &spec).await;
}

/// On a quorum queue a priority is refused before anything is declared, by the worker and by
/// the transport alike.
async fn quorum_priority_is_invalid_config<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let config = WorkerConfig::new(name, format!("{name}.x"))
        .kind(QueueKind::Quorum)
        .max_priority(5);
    let setting = "max_priority";
    let err = t.declare_queue(&config.queue).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig { setting });
    assert!(err.to_string().contains("quorum"), "{err}");
    let worker = Worker::new(Arc::clone(&t), config, Registry::new());
    let err = worker.start().await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig { setting });
    // Nothing was declared.
    assert!(t.declare_queue(&config_probe(name)).await.is_ok());
    t.delete_queue(name).await.unwrap();
    t.delete_queue(&format!("{name}.dead")).await.unwrap();
}

/// A plain classic spec of the same name: declaring it succeeds only if no quorum queue of
/// that name exists (a different queue type is refused with 406).
fn config_probe(name: &str) -> lepus::QueueSpec {
    lepus::QueueSpec::new(name, format!("{name}.x"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_priority_queue_delivers_high_priority_first() {
    let t = broker!("worker_priority::amqp_priority_queue_delivers_high_priority_first");
    high_priority_first(Arc::new(t), &amqp_support::unique("w-prio")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_priority_on_a_quorum_queue_is_invalid_config() {
    let t = broker!("worker_priority::amqp_priority_on_a_quorum_queue_is_invalid_config");
    quorum_priority_is_invalid_config(Arc::new(t), &amqp_support::unique("w-prio-q")).await;
}

#[tokio::test(start_paused = true)]
async fn inprocess_priority_queue_delivers_high_priority_first() {
    let t = lepus::InProcessBroker::new();
    high_priority_first(Arc::new(t), "w-prio-local").await;
}

#[tokio::test]
async fn inprocess_priority_on_a_quorum_queue_is_invalid_config() {
    let t = lepus::InProcessBroker::new();
    quorum_priority_is_invalid_config(Arc::new(t), "w-prio-q-local").await;
}
