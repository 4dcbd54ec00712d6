//! Topic routing through each transport agrees with the conformance vectors recorded from a
//! live RabbitMQ 3.10 (`tests/conformance/topic.json`, made by `tests/conformance/generate.py`).
//!
//! Each distinct pattern gets its own topic exchange with one queue bound by that pattern;
//! each of the pattern's vector keys is published there, mandatory. A confirmed publish means
//! the key matched, `Unroutable` means it did not; the queue must then hold exactly the
//! matching messages. On the in-process broker this checks core's router behind the
//! transport; on RabbitMQ it checks that the broker still routes as recorded and that our
//! publisher reports unroutable messages.

use crate::amqp_support;
use std::collections::BTreeMap;
use std::sync::Arc;

use lepus::{Properties, Publication, QueueSpec, Transport};
use serde_json::Value;

const TOPIC: &str = include_str!("../../../../tests/conformance/topic.json");

/// pattern -> [(key, match)] from the recorded vectors.
fn vectors_by_pattern() -> BTreeMap<String, Vec<(String, bool)>> {
    let doc: Value = serde_json::from_str(TOPIC).expect("valid JSON");
    let mut by_pattern: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for v in doc["vectors"].as_array().expect("vectors") {
        let pattern = v["pattern"].as_str().expect("pattern").to_string();
        let key = v["key"].as_str().expect("key").to_string();
        by_pattern
            .entry(pattern)
            .or_default()
            .push((key, v["match"].as_bool().expect("match")));
    }
    by_pattern
}

async fn routing_agrees<T: Transport>(t: Arc<T>, prefix: &str) {
    let props = Properties::default();
    let mut checked = 0usize;
    let mut disagreements = Vec::new();
    for (i, (pattern, cases)) in vectors_by_pattern().iter().enumerate() {
        let exchange = format!("{prefix}.x{i}");
        let queue = format!("{prefix}.q{i}");
        t.declare_exchange(&exchange).await.unwrap();
        t.declare_queue(&QueueSpec::new(queue.clone(), exchange.clone()).bind(pattern.clone()))
            .await
            .unwrap();
        let batch: Vec<Publication<'_>> = cases
            .iter()
            .map(|(key, _)| Publication::new(&exchange, key, key.as_bytes(), &props))
            .collect();
        let outcomes = t.publish_batch(&batch).await.unwrap();
        let mut expected_in_queue = 0;
        for ((key, want), outcome) in cases.iter().zip(outcomes) {
            let routed = match outcome {
                Ok(()) => true,
                Err(e) if e.is_unroutable() => false,
                Err(e) => panic!("publish {key:?} to pattern {pattern:?}: {e}"),
            };
            if routed != *want {
                disagreements.push(format!(
                    "{pattern:?} vs {key:?}: broker recorded {want}, transport routed {routed}"
                ));
            }
            expected_in_queue += usize::from(*want);
            checked += 1;
        }
        let mut sub = t.consume(&queue, 1000).await.unwrap();
        let mut received = 0;
        while received < expected_in_queue {
            match amqp_support::next_within(&mut sub, 2_000).await {
                Some(d) => {
                    received += 1;
                    d.ack().await.unwrap();
                }
                None => break,
            }
        }
        assert_eq!(received, expected_in_queue, "queue of pattern {pattern:?}");
        drop(sub);
        t.delete_queue(&queue).await.unwrap();
        t.delete_queue(&format!("{queue}.dead")).await.unwrap();
        t.delete_exchange(&exchange).await.unwrap();
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(checked > 2_000, "only {checked} vectors checked");
    println!("{prefix}: {checked} topic vectors routed as RabbitMQ 3.10 recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inprocess_topic_routing_agrees_with_recorded_broker() {
    routing_agrees(Arc::new(lepus::InProcessBroker::new()), "conformance-local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_topic_routing_agrees_with_recorded_broker() {
    let t = broker!("routing_conformance::amqp");
    routing_agrees(Arc::new(t), &amqp_support::unique("conformance")).await;
}
