//! Edge cases found from outside (php-amqplib, pika, the CLI), each failing on the worker
//! before the consumer runtime: a retry copy that grows past the payload limit, payloads
//! nested deeper than 32 levels, a byte-order mark, an untrusted delivery counter, and the
//! dead letter of an oversized message losing its reason.

use crate::amqp_support;
use crate::worker_support;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::{
    Context, HandlerError, HeaderValue, InProcessBroker, Message, Properties, Registry,
    RetryPolicy, Worker, HEADER_ERROR, HEADER_REASON,
};
use serde::{Deserialize, Serialize};
use worker_support::*;

/// A message that fails every time and is retried once after 300 ms.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bulky {
    data: String,
}

impl Message for Bulky {
    const TYPE: &'static str = "LepusTestBulky";
    const ROUTING_KEY: &'static str = "jobs.bulky";
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::repeat(1, [300])
    }
}

/// Any JSON payload under `v`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deep {
    v: serde_json::Value,
}

impl Message for Deep {
    const TYPE: &'static str = "LepusTestDeep";
    const ROUTING_KEY: &'static str = "jobs.deep";
}

fn json() -> Properties {
    Properties::new().with_content_type("application/json")
}

/// Defect: a body within a few bytes of the 1 MiB limit grows past it when `retryCount` is
/// written; the delayed publish was refused, the worker requeued, and the handler ran about
/// ten times in a row. The rule: no handler runs again sooner than its policy says. Here it
/// runs exactly twice, at least 300 ms apart, and the message ends `retries-exhausted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_copy_past_the_payload_limit_waits_for_its_retry() {
    let t = Arc::new(InProcessBroker::new());
    let runs: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = Arc::clone(&runs);
    let registry = Registry::new().with(move |_m: Bulky, _ctx: Context| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(Instant::now());
            Err(HandlerError::transient("the payment gateway is down"))
        }
    });
    let name = amqp_support::unique("edge-bulky");
    let worker = Worker::new(Arc::clone(&t), config(&name), registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let prefix = r#"{"payload":{"data":""#;
    let suffix = r#""},"metadata":{"className":"LepusTestBulky"}}"#;
    let fill = lepus::DEFAULT_MAX_PAYLOAD - 8 - prefix.len() - suffix.len();
    let body = format!("{prefix}{}{suffix}", "x".repeat(fill));
    assert_eq!(body.len(), lepus::DEFAULT_MAX_PAYLOAD - 8);
    publish_raw(&*t, &spec.exchange, body.as_bytes(), &json()).await;
    let dead = dead_letters(&*t, &spec.name, 1, 5_000).await;
    let runs = runs.lock().unwrap().clone();
    let why = dead
        .first()
        .map(|d| (header_str(d, HEADER_REASON), header_str(d, HEADER_ERROR)));
    assert_eq!(
        runs.len(),
        2,
        "the handler ran once, then once more after its delay: {why:?}"
    );
    assert!(
        runs[1] - runs[0] >= Duration::from_millis(300),
        "{:?}",
        runs[1] - runs[0]
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header_str(&dead[0], HEADER_REASON),
        Some("retries-exhausted")
    );
    handle.shutdown().await.unwrap();
    cleanup(&*t, &spec).await;
}

/// Defect: payloads nested deeper than 32 levels were `malformed` (the limit counted the
/// envelope). 128 levels of payload are handled; 100,000 levels end cleanly as `malformed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_payloads_are_handled_and_absurd_ones_dead_lettered() {
    let t = Arc::new(InProcessBroker::new());
    let handled = Arc::new(Mutex::new(0u32));
    let count = Arc::clone(&handled);
    let registry = Registry::new().with(move |_m: Deep, _ctx: Context| {
        let count = Arc::clone(&count);
        async move {
            *count.lock().unwrap() += 1;
            Ok(())
        }
    });
    let name = amqp_support::unique("edge-deep");
    let worker = Worker::new(Arc::clone(&t), config(&name), registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    // The payload object is level 1, `v`'s arrays the other 127.
    let deep = |levels: usize| {
        format!(
            r#"{{"payload":{{"v":{}1{}}},"metadata":{{"className":"LepusTestDeep"}}}}"#,
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    };
    publish_raw(&*t, &spec.exchange, deep(128).as_bytes(), &json()).await;
    publish_raw(&*t, &spec.exchange, deep(100_000).as_bytes(), &json()).await;
    let dead = dead_letters(&*t, &spec.name, 1, 5_000).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header_str(&dead[0], HEADER_REASON), Some("malformed"));
    let error = header_str(&dead[0], HEADER_ERROR).unwrap_or_default();
    assert!(error.contains("deeper than 128"), "{error}");
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(*handled.lock().unwrap(), 1, "{stats:?}");
    cleanup(&*t, &spec).await;
}

/// The largest depth a worker may be set to (512, as PHP's `json_encode`) decodes into a
/// typed payload on a handler task's stack without overflowing it, in a debug build too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deepest_settable_payload_fits_the_stack() {
    let t = Arc::new(InProcessBroker::new());
    let handled = Arc::new(Mutex::new(0u32));
    let count = Arc::clone(&handled);
    let registry = Registry::new().with(move |_m: Deep, _ctx: Context| {
        let count = Arc::clone(&count);
        async move {
            *count.lock().unwrap() += 1;
            Ok(())
        }
    });
    let name = amqp_support::unique("edge-deepest");
    let config = config(&name).payload_depth(lepus::consumer::MAX_PAYLOAD_DEPTH);
    let worker = Worker::new(Arc::clone(&t), config, registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let levels = lepus::consumer::MAX_PAYLOAD_DEPTH as usize - 1;
    let body = format!(
        r#"{{"payload":{{"v":{}1{}}},"metadata":{{"className":"LepusTestDeep"}}}}"#,
        "[".repeat(levels),
        "]".repeat(levels)
    );
    publish_raw(&*t, &spec.exchange, body.as_bytes(), &json()).await;
    let until = Instant::now() + Duration::from_secs(5);
    while *handled.lock().unwrap() == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(*handled.lock().unwrap(), 1, "{stats:?}");
    cleanup(&*t, &spec).await;
}

/// Defect: a UTF-8 byte-order mark before the envelope made it `malformed`. Defect: a
/// third-party `x-lepus-deliveries: 1000` dead-lettered a fresh message on its first delivery.
/// Both are handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bom_and_untrusted_counter_are_handled() {
    let t = Arc::new(InProcessBroker::new());
    let log = Log::default();
    let handler_log = log.clone();
    let registry = Registry::new().with(move |job: Job, ctx: Context| {
        let log = handler_log.clone();
        async move {
            log.push(Seen {
                message_id: ctx.message_id,
                n: job.n,
                attempt: ctx.attempt,
                at: Instant::now(),
                routing_key: ctx.routing_key,
            });
            Ok(())
        }
    });
    let name = amqp_support::unique("edge-bom");
    let worker = Worker::new(Arc::clone(&t), config(&name), registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let envelope = |n: u64| {
        format!(r#"{{"payload":{{"n":{n},"note":""}},"metadata":{{"className":"LepusTestJob"}}}}"#)
    };
    let with_bom = [&[0xEF, 0xBB, 0xBF][..], envelope(1).as_bytes()].concat();
    publish_raw(&*t, &spec.exchange, &with_bom, &json()).await;
    let mut counted = json();
    counted
        .headers
        .insert("x-lepus-deliveries".into(), HeaderValue::Int(1000));
    publish_raw(&*t, &spec.exchange, envelope(2).as_bytes(), &counted).await;
    assert_eq!(log.wait_for(2, 5_000).await, 2);
    let stats = handle.shutdown().await.unwrap();
    assert_eq!((stats.succeeded, stats.dead_lettered), (2, 0), "{stats:?}");
    cleanup(&*t, &spec).await;
}

/// Defect: with the defaults, the dead letter of an oversized message (over the worker's
/// 1 MiB body limit, sent by a producer whose limit is larger) was refused by the transport's
/// own 1 MiB limit, and the worker fell back to `reject`: the dead letter had no `x-lepus-*`
/// headers. It now carries `oversized`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_dead_letter_keeps_its_reason() {
    let t = Arc::new(broker!("oversized_dead_letter_keeps_its_reason"));
    let producer = broker!(
        "oversized_dead_letter_producer",
        amqp_support::env_config().max_payload(4 * 1024 * 1024)
    );
    let name = amqp_support::unique("edge-oversized");
    let worker = Worker::new(Arc::clone(&t), config(&name), Registry::new());
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let body = format!(
        r#"{{"payload":{{"n":1,"note":"{}"}},"metadata":{{"className":"LepusTestJob"}}}}"#,
        "x".repeat(1_500_000)
    );
    publish_raw(&producer, &spec.exchange, body.as_bytes(), &json()).await;
    let dead = dead_letters(&*t, &spec.name, 1, 10_000).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header_str(&dead[0], HEADER_REASON), Some("oversized"));
    assert_eq!(dead[0].body.len(), body.len(), "the bytes are kept");
    handle.shutdown().await.unwrap();
    cleanup(&*t, &spec).await;
    producer.close().await.unwrap();
    t.close().await.unwrap();
}
