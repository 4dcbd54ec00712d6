//! Shared pieces of the `worker_*` tests. Everything here is generic over `T: Transport`, so
//! the in-process broker can run the same bodies.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::core::decode_json_raw;
use lepus::{
    Delivery, HeaderValue, Message, Properties, Publication, Publisher, QueueSpec, RetryPolicy,
    Subscription, Transport, WorkerConfig,
};
use serde::{Deserialize, Serialize};

/// A test job; `n` identifies it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Message)]
#[lepus(type = "LepusTestJob", routing_key = "jobs.test.run", retry = job_policy)]
pub struct Job {
    pub n: u64,
    pub note: String,
}

fn job_policy() -> RetryPolicy {
    RetryPolicy::repeat(3, [200, 400])
}

/// What a handler saw: message id, attempt, when.
#[derive(Debug, Clone)]
pub struct Seen {
    pub message_id: Option<String>,
    pub n: u64,
    pub attempt: u32,
    pub at: Instant,
    pub routing_key: String,
}

/// A shared log of handler calls.
#[derive(Debug, Clone, Default)]
pub struct Log(pub Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub fn push(&self, seen: Seen) {
        self.0.lock().unwrap().push(seen);
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    /// Waits until `n` calls were logged, up to `ms`.
    pub async fn wait_for(&self, n: usize, ms: u64) -> usize {
        let until = Instant::now() + Duration::from_millis(ms);
        while self.len() < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.len()
    }
}

/// A worker config for a test queue bound to `jobs.#` on its own exchange.
pub fn config(name: &str) -> WorkerConfig {
    WorkerConfig::new(name, format!("{name}.x"))
        .bind("jobs.#")
        .prefetch(50)
        .concurrency(8)
        .shutdown_timeout(Duration::from_secs(5))
}

/// Sends jobs `0..n` (empty notes) to `exchange` in one confirmed batch.
pub async fn send_jobs<T: Transport + 'static>(t: &Arc<T>, exchange: &str, n: u64) {
    let publisher = Publisher::new(Arc::clone(t), exchange.to_owned());
    let jobs: Vec<Job> = (0..n)
        .map(|n| Job {
            n,
            note: String::new(),
        })
        .collect();
    for outcome in publisher.send_batch(&jobs).await.unwrap() {
        outcome.unwrap();
    }
}

/// Publishes raw bytes to the worker's exchange with the default routing key.
pub async fn publish_raw<T: Transport>(t: &T, exchange: &str, body: &[u8], props: &Properties) {
    t.publish(Publication::new(exchange, Job::ROUTING_KEY, body, props))
        .await
        .unwrap();
}

/// Reads up to `n` messages from `<queue>.dead` (waiting up to `ms` for each), acking them.
pub async fn dead_letters<T: Transport>(t: &T, queue: &str, n: usize, ms: u64) -> Vec<Delivery> {
    let mut sub = t.consume(&format!("{queue}.dead"), 100).await.unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_millis(ms), sub.next()).await;
        match next {
            Ok(Some(Ok(d))) => {
                d.ack().await.unwrap();
                out.push(d);
            }
            _ => break,
        }
    }
    let _ = sub.cancel().await;
    out
}

/// Reads whatever is ready in `queue` within `ms` and requeues nothing (acks all);
/// returns how many there were.
pub async fn drain<T: Transport>(t: &T, queue: &str, ms: u64) -> usize {
    let mut sub = t.consume(queue, 500).await.unwrap();
    let mut n = 0;
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(ms), sub.next()).await {
        d.ack().await.unwrap();
        n += 1;
    }
    let _ = sub.cancel().await;
    n
}

/// A header as a string.
pub fn header_str<'a>(d: &'a Delivery, key: &str) -> Option<&'a str> {
    d.properties()
        .headers
        .get(key)
        .and_then(HeaderValue::as_str)
}

/// A header as an integer.
pub fn header_int(d: &Delivery, key: &str) -> Option<i64> {
    d.properties()
        .headers
        .get(key)
        .and_then(HeaderValue::as_i64)
}

/// The payload span of an envelope.
pub fn payload_of(body: &[u8]) -> Vec<u8> {
    decode_json_raw(body).unwrap().payload.to_vec()
}

/// The retryCount of an envelope.
pub fn retry_count_of(body: &[u8]) -> u32 {
    decode_json_raw(body).unwrap().metadata.retry.count
}

/// Deletes what a worker declared.
pub async fn cleanup<T: Transport>(t: &T, spec: &QueueSpec) {
    let q = &spec.name;
    for queue in [q.clone(), format!("{q}.dead")] {
        t.delete_queue(&queue).await.unwrap();
    }
    t.delete_exchange(&spec.exchange).await.unwrap();
}

/// splitmix64: a seeded, reproducible random stream.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
