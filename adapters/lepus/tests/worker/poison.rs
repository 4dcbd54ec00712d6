//! Worker against the real RabbitMQ: poison messages (unknown type, malformed JSON, wrong
//! content type, oversized body, payload not fitting the type) are dead-lettered with their
//! reason and identical bytes, and the worker keeps going. Generic over `T: Transport`.

use crate::amqp_support;
use crate::worker_support;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use lepus::{
    Context, Properties, Publisher, Registry, Transport, Worker, HEADER_ATTEMPTS, HEADER_ERROR,
    HEADER_REASON,
};
use worker_support::*;

async fn poison_is_dead_lettered<T: Transport + 'static>(t: Arc<T>, name: &str) {
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
    let worker = Worker::new(Arc::clone(&t), config(name).max_body(1024), registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();
    let x = spec.exchange.clone();
    let json = || Properties::new().with_content_type("application/json");

    let unknown = br#"{"payload":{"n":1,"note":""},"metadata":{"className":"App\\Evil\\Gadget","retryCount":"4"}}"#.to_vec();
    let malformed =
        br#"{"payload":{"n":1,"note":""},"metadata":{"className":"LepusTestJob""#.to_vec();
    let wrong_type =
        br#"{"payload":{"n":1,"note":""},"metadata":{"className":"LepusTestJob"}}"#.to_vec();
    let big_note = "x".repeat(4096);
    let oversized = format!(
        r#"{{"payload":{{"n":1,"note":"{big_note}"}},"metadata":{{"className":"LepusTestJob"}}}}"#
    )
    .into_bytes();
    let bad_payload =
        br#"{"payload":{"n":"not a number"},"metadata":{"className":"LepusTestJob"}}"#.to_vec();

    let cases: Vec<(&str, Vec<u8>, Properties, &str)> = vec![
        ("unknown", unknown, json(), "unknown-type"),
        ("malformed", malformed, json(), "malformed"),
        (
            "wrong-ct",
            wrong_type,
            Properties::new().with_content_type("text/plain"),
            "wrong-content-type",
        ),
        ("oversized", oversized, json(), "oversized"),
        // No content type at all is accepted; the payload then does not fit `Job`.
        ("bad-payload", bad_payload, Properties::new(), "malformed"),
    ];
    for (id, body, props, _) in &cases {
        let props = props.clone().with_message_id(*id);
        publish_raw(&*t, &x, body, &props).await;
    }
    // The worker keeps going: a good message after the poison ones is handled.
    let publisher = Publisher::new(Arc::clone(&t), x.clone());
    publisher
        .send(&Job {
            n: 42,
            note: "fine".into(),
        })
        .await
        .unwrap();
    assert_eq!(log.wait_for(1, 5_000).await, 1);

    let dead = dead_letters(&*t, name, cases.len(), 5_000).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(log.len(), 1, "no poison message reached the handler");
    assert_eq!(log.all()[0].n, 42);
    assert_eq!(dead.len(), cases.len());
    let by_id: HashMap<&str, _> = dead.iter().map(|d| (d.message_id().unwrap(), d)).collect();
    for (id, body, _, reason) in &cases {
        let d = by_id[id];
        assert_eq!(d.body, *body, "{id}: bytes identical");
        assert_eq!(header_str(d, HEADER_REASON), Some(*reason), "{id}");
        assert!(
            header_str(d, HEADER_ERROR).is_some_and(|e| !e.is_empty()),
            "{id}"
        );
    }
    // The unknown type's retry count is read (without decoding its payload).
    assert_eq!(header_int(by_id["unknown"], HEADER_ATTEMPTS), Some(5));
    assert!(header_str(by_id["unknown"], HEADER_ERROR)
        .unwrap()
        .contains("App\\Evil\\Gadget"));
    assert_eq!(stats.dead_lettered, cases.len() as u64);
    assert_eq!(stats.succeeded, 1);
    cleanup(&*t, &spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_poison_is_dead_lettered_with_reason() {
    let t = broker!("worker_poison::amqp_poison_is_dead_lettered_with_reason");
    poison_is_dead_lettered(Arc::new(t), &amqp_support::unique("w-poison")).await;
}

// The same bodies on the in-process broker (the embedded default).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_poison_is_dead_lettered_with_reason() {
    let t = lepus::InProcessBroker::new();
    poison_is_dead_lettered(Arc::new(t), "w-poison-local").await;
}
