//! Worker against the real RabbitMQ: success, retries with declared delays, exhaustion,
//! rejection, panics. Bodies are generic over `T: Transport`.

use crate::amqp_support;
use crate::worker_support;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lepus::{
    Context, HandlerError, Publisher, Registry, RetryPolicy, SendOptions, Transport, Worker,
    HEADER_ATTEMPTS, HEADER_ERROR, HEADER_FAILED_AT, HEADER_ORIGIN_EXCHANGE, HEADER_ORIGIN_QUEUE,
    HEADER_ORIGIN_ROUTING_KEY, HEADER_REASON,
};
use worker_support::*;

/// A handler that logs every call and fails while `attempt <= fail_until` (transiently), or
/// rejects when `reject` is set, or panics on attempt 1 when `panic_first` is set.
fn registry(log: &Log, fail_until: u32, reject: bool, panic_first: bool) -> Registry {
    let log = log.clone();
    Registry::new().with(move |job: Job, ctx: Context| {
        let log = log.clone();
        async move {
            log.push(Seen {
                message_id: ctx.message_id.clone(),
                n: job.n,
                attempt: ctx.attempt,
                at: Instant::now(),
                routing_key: ctx.routing_key.clone(),
            });
            if panic_first && ctx.attempt == 1 && job.n == 0 {
                panic!("boom on first attempt");
            }
            if reject {
                return Err(HandlerError::rejected("job is invalid"));
            }
            if ctx.attempt <= fail_until {
                return Err(HandlerError::transient("db down"));
            }
            Ok(())
        }
    })
}

async fn handled_once_and_acked<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let log = Log::default();
    let worker = Worker::new(
        Arc::clone(&t),
        config(name),
        registry(&log, 0, false, false),
    );
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    let job = Job {
        n: 7,
        note: "hello".into(),
    };
    let id = publisher.send(&job).await.unwrap();
    assert_eq!(log.wait_for(1, 5_000).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = handle.shutdown().await.unwrap();
    let seen = log.all();
    assert_eq!(seen.len(), 1, "handled exactly once");
    assert_eq!(seen[0].message_id.as_deref(), Some(id.as_str()));
    assert_eq!(seen[0].attempt, 1);
    assert_eq!(seen[0].routing_key, "jobs.test.run");
    assert_eq!(stats.succeeded, 1);
    assert_eq!(stats.requeued, 0);
    assert_eq!(drain(&*t, name, 300).await, 0, "acked: nothing left");
    cleanup(&*t, &spec).await;
}

async fn transient_retried_with_delays<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let log = Log::default();
    // Policy repeat(3, [200, 400]): fails on attempts 1 and 2, succeeds on 3.
    let worker = Worker::new(
        Arc::clone(&t),
        config(name),
        registry(&log, 2, false, false),
    );
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    let id = publisher
        .send_with(
            &Job {
                n: 1,
                note: String::new(),
            },
            &SendOptions::new().routing_key("jobs.other"),
        )
        .await
        .unwrap();
    assert_eq!(log.wait_for(3, 10_000).await, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = handle.shutdown().await.unwrap();
    let seen = log.all();
    assert_eq!(seen.len(), 3);
    let attempts: Vec<u32> = seen.iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "retryCount incremented");
    assert!(seen.iter().all(|s| s.message_id.as_deref() == Some(&id)));
    assert!(
        seen.iter().all(|s| s.routing_key == "jobs.other"),
        "origin routing key kept across retries"
    );
    let gap1 = seen[1].at - seen[0].at;
    let gap2 = seen[2].at - seen[1].at;
    assert!(
        gap1 >= Duration::from_millis(180) && gap1 < Duration::from_millis(2_000),
        "first delay ~200 ms: {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(380) && gap2 < Duration::from_millis(2_500),
        "second delay ~400 ms: {gap2:?}"
    );
    assert_eq!(
        (stats.retried, stats.succeeded, stats.dead_lettered),
        (2, 1, 0)
    );
    cleanup(&*t, &spec).await;
}

async fn exhausted_goes_to_dead_letter<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let log = Log::default();
    let worker = Worker::new(
        Arc::clone(&t),
        config(name),
        registry(&log, u32::MAX, false, false),
    );
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    let job = Job {
        n: 2,
        note: "ünïcode \"quoted\"".into(),
    };
    let policy = RetryPolicy::repeat(2, [100]);
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let id = publisher
        .send_with(&job, &SendOptions::new().retry_policy(policy))
        .await
        .unwrap();
    assert_eq!(log.wait_for(3, 10_000).await, 3, "first try + 2 retries");
    let dead = dead_letters(&*t, name, 1, 5_000).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(log.len(), 3, "no fourth attempt");
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    let expected_payload = serde_json::to_vec(&job).unwrap();
    assert_eq!(
        payload_of(&d.body),
        expected_payload,
        "payload bytes identical"
    );
    assert_eq!(retry_count_of(&d.body), 2);
    assert_eq!(d.message_id(), Some(id.as_str()));
    assert_eq!(header_str(d, HEADER_REASON), Some("retries-exhausted"));
    assert_eq!(header_str(d, HEADER_ERROR), Some("db down"));
    assert_eq!(header_int(d, HEADER_ATTEMPTS), Some(3));
    assert_eq!(header_str(d, HEADER_ORIGIN_QUEUE), Some(name));
    assert_eq!(
        header_str(d, HEADER_ORIGIN_EXCHANGE),
        Some(spec.exchange.as_str())
    );
    assert_eq!(
        header_str(d, HEADER_ORIGIN_ROUTING_KEY),
        Some("jobs.test.run")
    );
    let failed_at = header_int(d, HEADER_FAILED_AT).unwrap();
    assert!(failed_at >= before && failed_at < before + 30_000);
    assert_eq!(d.properties().message_type.as_deref(), Some("LepusTestJob"));
    assert_eq!(
        (stats.retried, stats.dead_lettered, stats.succeeded),
        (2, 1, 0)
    );
    cleanup(&*t, &spec).await;
}

async fn rejected_dead_lettered_at_once<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let log = Log::default();
    let worker = Worker::new(Arc::clone(&t), config(name), registry(&log, 0, true, false));
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    let job = Job {
        n: 3,
        note: String::new(),
    };
    publisher.send(&job).await.unwrap();
    let dead = dead_letters(&*t, name, 1, 5_000).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(log.len(), 1, "never retried");
    assert_eq!(dead.len(), 1);
    assert_eq!(header_str(&dead[0], HEADER_REASON), Some("rejected"));
    assert_eq!(header_str(&dead[0], HEADER_ERROR), Some("job is invalid"));
    assert_eq!(header_int(&dead[0], HEADER_ATTEMPTS), Some(1));
    assert_eq!(retry_count_of(&dead[0].body), 0);
    assert_eq!(payload_of(&dead[0].body), serde_json::to_vec(&job).unwrap());
    assert_eq!((stats.retried, stats.dead_lettered), (0, 1));
    cleanup(&*t, &spec).await;
}

async fn panic_retried_and_worker_keeps_running<T: Transport + 'static>(t: Arc<T>, name: &str) {
    let log = Log::default();
    let worker = Worker::new(Arc::clone(&t), config(name), registry(&log, 0, false, true));
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    publisher
        .send(&Job {
            n: 0,
            note: "panics once".into(),
        })
        .await
        .unwrap();
    // n=0 panics on attempt 1, then succeeds on attempt 2 (after 200 ms).
    assert_eq!(log.wait_for(2, 10_000).await, 2);
    publisher
        .send(&Job {
            n: 1,
            note: "after the panic".into(),
        })
        .await
        .unwrap();
    assert_eq!(log.wait_for(3, 5_000).await, 3, "worker still running");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = handle.shutdown().await.unwrap();
    let seen = log.all();
    let n0: Vec<u32> = seen
        .iter()
        .filter(|s| s.n == 0)
        .map(|s| s.attempt)
        .collect();
    assert_eq!(n0, [1, 2]);
    assert_eq!(stats.panicked, 1);
    assert_eq!(stats.succeeded, 2);
    assert_eq!(stats.retried, 1);
    cleanup(&*t, &spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_handled_once_and_acked() {
    let t = broker!("worker_handling::amqp_handled_once_and_acked");
    handled_once_and_acked(Arc::new(t), &amqp_support::unique("w-once")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_transient_retried_with_declared_delays() {
    let t = broker!("worker_handling::amqp_transient_retried_with_declared_delays");
    transient_retried_with_delays(Arc::new(t), &amqp_support::unique("w-retry")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_exhausted_goes_to_dead_letter() {
    let t = broker!("worker_handling::amqp_exhausted_goes_to_dead_letter");
    exhausted_goes_to_dead_letter(Arc::new(t), &amqp_support::unique("w-exhaust")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_rejected_dead_lettered_at_once() {
    let t = broker!("worker_handling::amqp_rejected_dead_lettered_at_once");
    rejected_dead_lettered_at_once(Arc::new(t), &amqp_support::unique("w-reject")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_panic_retried_and_worker_keeps_running() {
    let t = broker!("worker_handling::amqp_panic_retried_and_worker_keeps_running");
    panic_retried_and_worker_keeps_running(Arc::new(t), &amqp_support::unique("w-panic")).await;
}

// The same bodies on the in-process broker (the embedded default).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_handled_once_and_acked() {
    let t = lepus::InProcessBroker::new();
    handled_once_and_acked(Arc::new(t), "w-once-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_transient_retried_with_declared_delays() {
    let t = lepus::InProcessBroker::new();
    transient_retried_with_delays(Arc::new(t), "w-retry-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_exhausted_goes_to_dead_letter() {
    let t = lepus::InProcessBroker::new();
    exhausted_goes_to_dead_letter(Arc::new(t), "w-exhaust-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_rejected_dead_lettered_at_once() {
    let t = lepus::InProcessBroker::new();
    rejected_dead_lettered_at_once(Arc::new(t), "w-reject-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_panic_retried_and_worker_keeps_running() {
    let t = lepus::InProcessBroker::new();
    panic_retried_and_worker_keeps_running(Arc::new(t), "w-panic-local").await;
}

/// A handler registered with `register_raw` gets the payload's JSON text byte for byte (the
/// spacing and escapes as the producer wrote them), and the type's retry policy still applies:
/// a transient failure is retried and the second attempt sees the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_raw_handler_gets_the_payload_text_and_is_retried() {
    use lepus::{Properties, RawPayload};
    use std::sync::Mutex;
    let t = Arc::new(lepus::InProcessBroker::new());
    type Attempt = (u32, Vec<u8>, Job);
    let seen: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let log = Arc::clone(&seen);
    let registry = Registry::new().with_raw::<Job, _, _>(move |payload: RawPayload, ctx| {
        let log = Arc::clone(&log);
        async move {
            let job: Job = payload.decode()?;
            log.lock()
                .unwrap()
                .push((ctx.attempt, payload.into_bytes(), job));
            if ctx.attempt == 1 {
                return Err(HandlerError::transient("first attempt fails"));
            }
            Ok(())
        }
    });
    let worker = Worker::new(Arc::clone(&t), config("w-raw-local"), registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let payload = r#"{ "n" : 5,"note":"a \"quoted\" \u00e9" }"#;
    let body = format!(r#"{{"payload":{payload},"metadata":{{"className":"LepusTestJob"}}}}"#);
    publish_raw(&*t, &spec.exchange, body.as_bytes(), &Properties::default()).await;
    let until = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().len() < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = handle.shutdown().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "the first attempt and its retry: {seen:?}");
    let expected = Job {
        n: 5,
        note: "a \"quoted\" é".into(),
    };
    for (i, (attempt, bytes, job)) in seen.iter().enumerate() {
        assert_eq!(*attempt, i as u32 + 1);
        assert_eq!(bytes.as_slice(), payload.as_bytes(), "attempt {attempt}");
        assert_eq!(job, &expected);
    }
    assert_eq!(stats.succeeded, 1, "{stats:?}");
    assert_eq!(stats.retried, 1, "{stats:?}");
    cleanup(&*t, &spec).await;
}

/// A raw handler's `decode` into a type the payload does not fit is a rejection: the message
/// is dead-lettered at once, with the decode error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_raw_handler_decode_failure_is_dead_lettered() {
    use lepus::{Properties, RawPayload};
    let t = Arc::new(lepus::InProcessBroker::new());
    let registry = Registry::new().with_raw::<Job, _, _>(|payload: RawPayload, _ctx| async move {
        payload.decode::<Job>()?;
        Ok(())
    });
    let worker = Worker::new(Arc::clone(&t), config("w-raw-bad-local"), registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let body = br#"{"payload":{"n":"five"},"metadata":{"className":"LepusTestJob"}}"#;
    publish_raw(&*t, &spec.exchange, body, &Properties::default()).await;
    let dead = dead_letters(&*t, &spec.name, 1, 5_000).await;
    handle.shutdown().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(header_str(&dead[0], HEADER_REASON), Some("rejected"));
    let error = header_str(&dead[0], HEADER_ERROR).unwrap_or_default();
    assert!(error.contains("payload does not decode"), "{error}");
    cleanup(&*t, &spec).await;
}
