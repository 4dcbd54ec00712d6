//! Interoperability with a real third-party client, Python's `pika` (RabbitMQ tutorial style):
//! a pika producer sends the talk's JSON envelope exactly as the PHP side did (no properties,
//! numeric strings, `\/` escapes, an unknown metadata key) and our worker handles it; our
//! publisher's messages are read by a pika consumer, which sees the envelope and properties.
//!
//! Needs `python3` with `pika` (`pip install pika`): without it the tests skip loudly, or fail
//! under `CI=true` / `LEPUS_REQUIRE_BROKER=1` (`.ci/run` installs it).

use crate::amqp_support;
use crate::interop_support;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interop_support::{amqp_url, pika_available, script};

use lepus::{Context, Message, Publisher, Registry, RetryPolicy, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SendAdExpiredMail {
    #[serde(rename = "adId")]
    ad_id: u64,
    url: String,
}

impl Message for SendAdExpiredMail {
    const TYPE: &'static str = "SendAdExpiredMail";
    const ROUTING_KEY: &'static str = "mailer.ad.expired";
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::repeat(5, [15_000, 30_000, 60_000, 300_000, 86_400_000])
    }
}

async fn run_python(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(&args)
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("the python task finishes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_style_envelope_from_pika_is_handled_by_our_worker() {
    let test = "php_style_envelope_from_pika_is_handled_by_our_worker";
    if !pika_available(test) {
        return;
    }
    let t = Arc::new(broker!(test));
    let name = amqp_support::unique("interop.php");
    let handled: Arc<Mutex<Vec<(SendAdExpiredMail, u32, bool)>>> = Arc::default();
    let log = Arc::clone(&handled);
    let registry = Registry::new().with(move |mail: SendAdExpiredMail, ctx: Context| {
        let log = Arc::clone(&log);
        async move {
            let foreign_id = ctx.message_id.is_none();
            log.lock().unwrap().push((mail, ctx.attempt, foreign_id));
            Ok(())
        }
    });
    let config = WorkerConfig::new(name.clone(), format!("{name}.x")).bind("mailer.ad.*");
    let worker = Worker::new(Arc::clone(&t), config, registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();

    let count = 25u64;
    let out = run_python(vec![
        script("pika_producer.py").display().to_string(),
        amqp_url(),
        spec.exchange.clone(),
        "mailer.ad.expired".into(),
        count.to_string(),
    ])
    .await;
    assert!(
        out.status.success(),
        "pika producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for _ in 0..250 {
        if handled.lock().unwrap().len() >= count as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = handle.shutdown().await.unwrap();
    let mut seen = handled.lock().unwrap().clone();
    seen.sort_by_key(|(m, _, _)| m.ad_id);
    assert_eq!(
        seen.len(),
        count as usize,
        "every PHP-style message handled exactly once"
    );
    for (i, (mail, attempt, foreign_id)) in seen.iter().enumerate() {
        assert_eq!(mail.ad_id, i as u64);
        // `\/` in the PHP bytes is unescaped by the payload decoder.
        assert_eq!(mail.url, format!("https://example.com/ad/{i}"));
        assert_eq!(*attempt, 1, "numeric-string retryCount \"0\" is attempt 1");
        assert!(*foreign_id, "pika sent no message_id property");
    }
    assert_eq!(stats.succeeded, count);
    assert_eq!(stats.dead_lettered, 0);
    amqp_support::cleanup(&t, &spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_publisher_is_read_by_a_pika_consumer() {
    let test = "our_publisher_is_read_by_a_pika_consumer";
    if !pika_available(test) {
        return;
    }
    let t = Arc::new(broker!(test));
    let name = amqp_support::unique("interop.pika");
    let config = WorkerConfig::new(name.clone(), format!("{name}.x")).bind("mailer.#");
    let worker = Worker::new(Arc::clone(&t), config, Registry::new());
    let spec = worker.queue_spec();
    worker.declare().await.unwrap();
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());

    let mut sent = BTreeMap::new();
    for ad_id in 0..5u64 {
        let mail = SendAdExpiredMail {
            ad_id,
            url: format!("https://example.com/ad/{ad_id}"),
        };
        let id = publisher.send(&mail).await.unwrap();
        sent.insert(id, mail);
    }

    let out = run_python(vec![
        script("pika_consumer.py").display().to_string(),
        amqp_url(),
        name.clone(),
        "5".into(),
        "10".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "pika consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON line per message"))
        .collect();
    assert_eq!(lines.len(), 5);
    for line in &lines {
        let id = line["message_id"]
            .as_str()
            .expect("message_id property set");
        let mail = &sent[id];
        assert_eq!(line["content_type"], "application/json");
        assert_eq!(line["type"], "SendAdExpiredMail");
        assert_eq!(line["delivery_mode"], 2, "persistent");
        assert!(line["timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000));
        assert_eq!(line["routing_key"], "mailer.ad.expired");
        let body = &line["body"];
        assert_eq!(body["payload"]["adId"], mail.ad_id);
        assert_eq!(body["payload"]["url"], mail.url.as_str());
        let meta = &body["metadata"];
        assert_eq!(meta["className"], "SendAdExpiredMail");
        assert_eq!(meta["retryStrategy"], "repeat");
        assert_eq!(meta["retryLimit"], 5);
        assert_eq!(meta["retryCount"], 0);
        assert_eq!(
            meta["retryInterval"],
            serde_json::json!([15, 30, 60, 300, 86400])
        );
    }
    amqp_support::cleanup(&t, &spec).await;
}
