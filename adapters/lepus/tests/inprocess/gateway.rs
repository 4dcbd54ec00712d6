//! The gateway on the consumer runtime: COBS-framed postcard envelopes that arrive as
//! messages on a queue are published as JSON envelopes; a corrupt frame and a frame of an
//! unregistered type are dead-lettered with their reason and their bytes.

use std::sync::Arc;
use std::time::Duration;

use lepus::core::envelope::{decode_json_raw, encode_postcard_cobs, Envelope, Metadata};
use lepus::gateway::Gateway;
use lepus::{
    ConsumerConfig, InProcessBroker, Message, Properties, Publication, QueueSpec, Subscription,
    Transport, HEADER_REASON,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[lepus(type = "LepusTestReading", routing_key = "sensors.reading")]
struct Reading {
    sensor: u16,
    millivolts: u32,
}

fn frame<P: Serialize>(class_name: &str, payload: P) -> Vec<u8> {
    let envelope = Envelope {
        payload,
        metadata: Metadata::new(class_name),
    };
    let mut buf = [0u8; 256];
    let n = encode_postcard_cobs(&envelope, &mut buf).unwrap();
    buf[..n].to_vec()
}

async fn next_body<S: Subscription>(sub: &mut S) -> (Vec<u8>, Option<String>) {
    let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message")
        .expect("not ended")
        .expect("no error");
    d.ack().await.unwrap();
    let reason = d
        .properties()
        .headers
        .get(HEADER_REASON)
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    (d.body, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_from_a_queue_become_json_envelopes() {
    let t = Arc::new(InProcessBroker::new());
    let target = QueueSpec::new("readings", "site").bind("sensors.#");
    t.declare_exchange("site").await.unwrap();
    t.declare_queue(&target).await.unwrap();
    let frames = QueueSpec::new("device-frames", "devices").bind("frames.#");
    let mut gateway = Gateway::new(Arc::clone(&t), "site");
    gateway.register::<Reading>();
    let handle = gateway
        .start(frames.clone(), ConsumerConfig::default())
        .await
        .unwrap();

    let good = frame(
        "LepusTestReading",
        Reading {
            sensor: 7,
            millivolts: 3300,
        },
    );
    let unknown = frame("LepusTestOther", 5u8);
    let corrupt = vec![3, 1, 2, 0];
    let props = Properties::default();
    for body in [&good, &unknown, &corrupt] {
        t.publish(Publication::new("devices", "frames.x", body, &props))
            .await
            .unwrap();
    }

    let mut readings = t.consume("readings", 10).await.unwrap();
    let (json, _) = next_body(&mut readings).await;
    let raw = decode_json_raw(&json).unwrap();
    assert_eq!(raw.metadata.class_name.to_string(), "LepusTestReading");
    let reading: Reading = serde_json::from_slice(raw.payload).unwrap();
    assert_eq!(
        reading,
        Reading {
            sensor: 7,
            millivolts: 3300
        }
    );

    let mut dead = t.consume("device-frames.dead", 10).await.unwrap();
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let (body, reason) = next_body(&mut dead).await;
        assert!(
            body == unknown || body == corrupt,
            "the frame's bytes are kept"
        );
        reasons.push(reason.unwrap_or_default());
    }
    reasons.sort();
    assert_eq!(reasons, ["malformed", "unknown-type"]);
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(
        (stats.frames, stats.published, stats.dead_lettered),
        (3, 1, 2),
        "{stats:?}"
    );
}
