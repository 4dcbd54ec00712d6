//! Shared helpers of the `amqp_*` integration tests, which run against the real RabbitMQ at
//! `AMQP_ADDR` (unset: skipped, or failed when the broker is required).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lepus::{AmqpTransport, Delivery, QueueSpec, Subscription, Transport};

#[allow(unused_imports)]
pub use lepus::testing::{broker_required, connect, connect_with};

/// `let t = broker!("name");` returns from the test when the broker is unreachable and not
/// required.
#[macro_export]
macro_rules! broker {
    ($test:expr) => {
        match amqp_support::connect($test).await {
            Some(t) => t,
            None => return,
        }
    };
    ($test:expr, $config:expr) => {
        match amqp_support::connect_with($test, $config).await {
            Some(t) => t,
            None => return,
        }
    };
}

/// The configuration for `AMQP_ADDR`; unset, an empty address, whose connection error makes
/// [`connect_with`] skip the test (or fail it when the broker is required).
pub fn env_config() -> lepus::AmqpConfig {
    lepus::AmqpConfig::from_env().unwrap_or_else(|_| lepus::AmqpConfig::new(""))
}

/// A name unique to this test run: `lepus-test-<prefix>-<pid>-<nanos>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "lepus-test-{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Number of ready messages in `queue` (passive declare).
pub async fn message_count(t: &AmqpTransport, queue: &str) -> u32 {
    let status = t.queue_status(queue).await.unwrap();
    status.unwrap_or_else(|| panic!("{queue} exists")).messages
}

/// Waits until `queue` holds `n` ready messages (broker counts lag a little), up to 5 s.
pub async fn wait_for_count(t: &AmqpTransport, queue: &str, n: u32) -> u32 {
    let mut count = 0;
    for _ in 0..100 {
        count = message_count(t, queue).await;
        if count == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    count
}

/// The next delivery, or `None` after `ms` milliseconds.
pub async fn next_within<S: Subscription>(sub: &mut S, ms: u64) -> Option<Delivery> {
    match tokio::time::timeout(Duration::from_millis(ms), sub.next()).await {
        Ok(Some(delivery)) => Some(delivery.unwrap()),
        Ok(None) | Err(_) => None,
    }
}

/// Deletes what a test declared: the queue of `spec`, its dead-letter queue and the exchange
/// (the delay levels are shared by every test and stay).
pub async fn cleanup(t: &AmqpTransport, spec: &QueueSpec) {
    let q = &spec.name;
    for queue in [q.clone(), format!("{q}.dead")] {
        t.delete_queue(&queue).await.unwrap();
    }
    t.delete_exchange(&spec.exchange).await.unwrap();
}
