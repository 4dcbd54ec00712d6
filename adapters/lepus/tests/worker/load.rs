//! Worker against the real RabbitMQ under load: 10,000 messages, seeded random transient
//! failures; every message is handled successfully exactly once (by message id), none lost,
//! duplicates counted. Generic over `T: Transport`.

use crate::amqp_support;
use crate::worker_support;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::{
    Context, HandlerError, Publisher, Registry, RetryPolicy, SendOptions, Transport, Worker,
};
use worker_support::*;

const MESSAGES: u64 = 10_000;
/// The whole run must finish well within this.
const BOUND: Duration = Duration::from_secs(120);
const SEED: u64 = 0x1e905;

/// Fails transiently on about one attempt in five, decided by (seed, n, attempt); never on
/// attempt 4 or later, so `Job`'s default policy (3 retries) is never exhausted.
fn fails(n: u64, attempt: u32) -> bool {
    attempt <= 3 && splitmix(SEED ^ n.wrapping_mul(0x100) ^ u64::from(attempt)).is_multiple_of(5)
}

async fn many_messages_exactly_once<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let successes: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let failures = Arc::new(Mutex::new(0u64));
    let (s, f) = (Arc::clone(&successes), Arc::clone(&failures));
    let registry = Registry::new().with(move |job: Job, ctx: Context| {
        let (s, f) = (Arc::clone(&s), Arc::clone(&f));
        async move {
            if fails(job.n, ctx.attempt) {
                *f.lock().unwrap() += 1;
                return Err(HandlerError::transient("random failure"));
            }
            let id = ctx.message_id.unwrap_or_default();
            *s.lock().unwrap().entry(id).or_insert(0) += 1;
            Ok(())
        }
    });
    let config = config(name).prefetch(200).concurrency(64);
    let worker = Worker::new(Arc::clone(&t), config, registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    // The batch half uses `Job`'s policy (200 ms, 400 ms); the other half overrides it.
    let policy = SendOptions::new().retry_policy(RetryPolicy::repeat(3, [50]));
    let jobs: Vec<Job> = (0..MESSAGES)
        .map(|n| Job {
            n,
            note: format!("job {n}"),
        })
        .collect();
    let started = Instant::now();
    let mut sent = HashSet::new();
    // Half through send_batch, half through concurrent sends with a policy override.
    let (batch, single) = jobs.split_at(jobs.len() / 2);
    for chunk in batch.chunks(250) {
        for outcome in publisher.send_batch(chunk).await.unwrap() {
            sent.insert(outcome.unwrap());
        }
    }
    let mut sends = tokio::task::JoinSet::new();
    for job in single {
        let (p, o, job) = (publisher.clone(), policy.clone(), job.clone());
        sends.spawn(async move { p.send_with(&job, &o).await });
    }
    while let Some(id) = sends.join_next().await {
        sent.insert(id.unwrap().unwrap());
    }
    assert_eq!(sent.len(), MESSAGES as usize, "unique message ids");

    let until = started + BOUND;
    while successes.lock().unwrap().len() < sent.len() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = handle.shutdown().await.unwrap();
    let successes = successes.lock().unwrap().clone();
    let duplicates: u32 = successes.values().map(|c| c - 1).sum();
    let missing = sent
        .iter()
        .filter(|id| !successes.contains_key(*id))
        .count();
    let failures = *failures.lock().unwrap();
    println!(
        "load: {:.1?}, {} sent, {} handled, {missing} missing, {duplicates} duplicates, \
         {failures} transient failures, stats {stats:?}",
        started.elapsed(),
        sent.len(),
        successes.len()
    );
    assert_eq!(missing, 0, "none lost");
    // No connection is lost here, so at-least-once owes no redelivery: any duplicate is a bug.
    assert_eq!(duplicates, 0, "exactly once per message id");
    assert!(started.elapsed() < BOUND, "bounded in time");
    assert!(successes.keys().all(|id| sent.contains(id)));
    assert!(
        failures > MESSAGES / 10,
        "the seed does fail a good share: {failures}"
    );
    assert_eq!(stats.retried, failures);
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(stats.succeeded, MESSAGES);
    assert_eq!(drain(&*t, name, 300).await, 0);
    assert_eq!(drain(&*t, &format!("{name}.dead"), 300).await, 0);
    cleanup(&*t, &spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_10000_messages_with_random_failures_exactly_once() {
    let t = broker!("worker_load::amqp_10000_messages_with_random_failures_exactly_once");
    many_messages_exactly_once(Arc::new(t), &amqp_support::unique("w-load")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_10000_messages_with_random_failures_exactly_once() {
    many_messages_exactly_once(Arc::new(lepus::InProcessBroker::new()), "w-load-local").await;
}
