//! Poison messages that never let their handler finish: a handler that hangs until the worker
//! is stopped (its delivery is requeued, as after a crash), on classic queues (the worker
//! counts deliveries in a header) and quorum queues (the broker counts), and a handler that
//! times out every time. Each ends in the dead-letter queue after a bounded number of
//! deliveries; other messages keep flowing.

use crate::amqp_support;
use crate::worker_support;
use std::sync::Arc;
use std::time::Duration;

use lepus::{
    Context, HandlerError, Publisher, QueueKind, Registry, Transport, Worker, WorkerConfig,
    HEADER_ERROR, HEADER_REASON,
};
use worker_support::*;

/// Job 666 hangs forever (a handler stuck, or a process about to be killed); others succeed.
fn hanging_registry(log: &Log) -> Registry {
    let log = log.clone();
    Registry::new().with(move |job: Job, ctx: Context| {
        let log = log.clone();
        async move {
            log.push(Seen {
                message_id: ctx.message_id.clone(),
                n: job.n,
                attempt: if ctx.redelivered { 2 } else { 1 },
                at: std::time::Instant::now(),
                routing_key: ctx.routing_key.clone(),
            });
            if job.n == 666 {
                std::future::pending::<()>().await;
            }
            Ok::<(), HandlerError>(())
        }
    })
}

fn poison_config(name: &str, kind: QueueKind) -> WorkerConfig {
    config(name)
        .kind(kind)
        .delivery_limit(3)
        .shutdown_timeout(Duration::from_millis(100))
}

async fn hanging_handler_is_dead_lettered_after_the_limit<T: Transport + 'static>(
    t: Arc<T>,
    name: &str,
    kind: QueueKind,
) {
    let log = Log::default();
    let spec = Worker::new(
        Arc::clone(&t),
        poison_config(name, kind),
        hanging_registry(&log),
    )
    .queue_spec();
    let mut publisher = None;
    let mut dead = Vec::new();
    // Each round: a worker starts, the poison message hangs its handler, the worker is stopped
    // (the delivery goes back to the queue as after a crash). Bounded: at most 8 rounds.
    for round in 0..8 {
        let worker = Worker::new(
            Arc::clone(&t),
            poison_config(name, kind),
            hanging_registry(&log),
        );
        let handle = worker.start().await.unwrap();
        let publisher =
            publisher.get_or_insert_with(|| Publisher::new(Arc::clone(&t), spec.exchange.clone()));
        if round == 0 {
            publisher
                .send(&Job {
                    n: 666,
                    note: "poison".into(),
                })
                .await
                .unwrap();
        }
        publisher
            .send(&Job {
                n: round,
                note: "fine".into(),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        handle.shutdown().await.unwrap();
        dead = dead_letters(&*t, name, 1, 300).await;
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(
        dead.len(),
        1,
        "the poison message reached the dead-letter queue"
    );
    let d = &dead[0];
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&payload_of(&d.body)).unwrap()["n"],
        666
    );
    let reason = header_str(d, HEADER_REASON);
    // Quorum queues may dead-letter by themselves (x-delivery-limit) before the worker does.
    assert!(
        reason == Some("delivery-limit") || (kind == QueueKind::Quorum && reason.is_none()),
        "reason {reason:?}"
    );
    let poison_runs = log.all().iter().filter(|s| s.n == 666).count();
    assert!(
        poison_runs <= 3,
        "the hanging handler ran {poison_runs} times, limit 3"
    );
    assert!(
        poison_runs >= 2,
        "it was delivered again before giving up ({poison_runs})"
    );
    // Every fine job was handled.
    let fine = log
        .all()
        .iter()
        .filter(|s| s.n != 666)
        .map(|s| s.n)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(fine.len() as u64, fine.iter().max().map_or(0, |m| m + 1));
    cleanup(&*t, &spec).await;
}

async fn timing_out_handler_is_retried_then_dead_lettered<T: Transport + 'static>(
    t: Arc<T>,
    name: &str,
) {
    let log = Log::default();
    let registry = {
        let log = log.clone();
        Registry::new().with(move |job: Job, ctx: Context| {
            let log = log.clone();
            async move {
                log.push(Seen {
                    message_id: ctx.message_id.clone(),
                    n: job.n,
                    attempt: ctx.attempt,
                    at: std::time::Instant::now(),
                    routing_key: ctx.routing_key.clone(),
                });
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<(), HandlerError>(())
            }
        })
    };
    let worker = Worker::new(
        Arc::clone(&t),
        config(name).handler_timeout(Duration::from_millis(100)),
        registry,
    );
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    Publisher::new(Arc::clone(&t), spec.exchange.clone())
        .send(&Job {
            n: 1,
            note: "slow".into(),
        })
        .await
        .unwrap();
    // Job's policy: repeat 3 times after 200 and 400 ms; each attempt times out after 100 ms.
    let dead = dead_letters(&*t, name, 1, 5_000).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header_str(&dead[0], HEADER_REASON),
        Some("retries-exhausted")
    );
    assert!(header_str(&dead[0], HEADER_ERROR).is_some_and(|e| e.contains("timed out")));
    assert_eq!(log.len(), 4, "first attempt and three retries");
    assert_eq!(stats.timed_out, 4);
    cleanup(&*t, &spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_hanging_handler_is_dead_lettered_after_the_limit() {
    let t = Arc::new(lepus::InProcessBroker::new());
    hanging_handler_is_dead_lettered_after_the_limit(t, "w-hang-local", QueueKind::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_classic_hanging_handler_is_dead_lettered_after_the_limit() {
    let t = broker!("worker_redelivery::amqp_classic");
    hanging_handler_is_dead_lettered_after_the_limit(
        Arc::new(t),
        &amqp_support::unique("w-hang"),
        QueueKind::Classic,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_quorum_hanging_handler_is_dead_lettered_after_the_limit() {
    let t = broker!("worker_redelivery::amqp_quorum");
    hanging_handler_is_dead_lettered_after_the_limit(
        Arc::new(t),
        &amqp_support::unique("w-hang-q"),
        QueueKind::Quorum,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_timing_out_handler_is_retried_then_dead_lettered() {
    timing_out_handler_is_retried_then_dead_lettered(
        Arc::new(lepus::InProcessBroker::new()),
        "w-slow-local",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_timing_out_handler_is_retried_then_dead_lettered() {
    let t = broker!("worker_redelivery::amqp_timeout");
    timing_out_handler_is_retried_then_dead_lettered(Arc::new(t), &amqp_support::unique("w-slow"))
        .await;
}
