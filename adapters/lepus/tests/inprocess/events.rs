//! Operational events (`lepus::events`): a worker on the consumer runtime emits started,
//! received, handled, retried, dead-lettered and heartbeats to `lepus.events`, batched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::events::{Events, EventsConfig, DEFAULT_EVENTS_EXCHANGE};
use lepus::{
    Context, Entry, HandlerError, InProcessBroker, Message, Properties, Publication, Publisher,
    QueueSpec, Registry, RetryPolicy, Schedule, Scheduler, Transport, Worker, WorkerConfig,
};
use lepus::{Request, RpcClient, RpcServer, RpcServerConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flaky {
    fail: bool,
}

impl Message for Flaky {
    const TYPE: &'static str = "EventsFlaky";
    const ROUTING_KEY: &'static str = "events.flaky";
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::repeat(1, [20])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_emits_its_events_in_batches() {
    let t = Arc::new(InProcessBroker::new());
    let events = Events::start(
        Arc::clone(&t),
        EventsConfig::default()
            .heartbeat(Duration::from_millis(50))
            .flush_interval(Duration::from_millis(10))
            .received(true),
    );
    t.declare_exchange(DEFAULT_EVENTS_EXCHANGE).await.unwrap();
    t.declare_queue(&QueueSpec::new("events-watch", DEFAULT_EVENTS_EXCHANGE).bind("#"))
        .await
        .unwrap();
    let registry = Registry::new().with(|m: Flaky, _: Context| async move {
        if m.fail {
            return Err(HandlerError::transient("always down"));
        }
        Ok(())
    });
    let config = WorkerConfig::new("events-worker", "events.x")
        .bind("events.#")
        .events(events.clone());
    let handle = Worker::new(Arc::clone(&t), config, registry)
        .start()
        .await
        .unwrap();
    let publisher = Publisher::new(Arc::clone(&t), "events.x");
    publisher.send(&Flaky { fail: false }).await.unwrap();
    publisher.send(&Flaky { fail: true }).await.unwrap();
    // A producer that sets no `type` property (the talk's PHP one), of a type nobody handles.
    let legacy = br#"{"payload":{},"metadata":{"className":"LegacySms"}}"#;
    let props = Properties {
        content_type: Some("application/json".into()),
        ..Properties::default()
    };
    t.publish(Publication::new("events.x", "events.sms", legacy, &props))
        .await
        .unwrap();

    let mut watch = t.consume("events-watch", 100).await.unwrap();
    let mut seen: Vec<Value> = Vec::new();
    let wanted = [
        "started",
        "received",
        "handled",
        "retried",
        "dead-lettered",
        "heartbeat",
    ];
    let until = Instant::now() + Duration::from_secs(10);
    let unknown = |e: &Value| e["kind"] == "dead-lettered" && e["reason"] == "unknown-type";
    let exhausted = |e: &Value| e["kind"] == "dead-lettered" && e["reason"] == "retries-exhausted";
    while !(wanted.iter().all(|k| seen.iter().any(|e| e["kind"] == *k))
        && seen.iter().any(unknown)
        && seen.iter().any(exhausted))
        && Instant::now() < until
    {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(1), watch.next()).await
        else {
            continue;
        };
        assert_eq!(d.properties().message_type.as_deref(), Some("lepus.events"));
        let batch: Vec<Value> = serde_json::from_slice(&d.body).expect("a JSON array");
        seen.extend(batch);
        d.ack().await.unwrap();
    }
    for kind in wanted {
        assert!(
            seen.iter().any(|e| e["kind"] == kind),
            "no {kind} event in {seen:?}"
        );
    }
    for e in &seen {
        assert_eq!(e["queue"], "events-worker");
        assert_eq!(e["instance"], events.instance());
        assert!(e["at"].as_i64().unwrap() > 0);
    }
    let handled: Vec<&Value> = seen.iter().filter(|e| e["kind"] == "handled").collect();
    assert!(handled
        .iter()
        .any(|e| e["outcome"] == "ok" && e["type"] == "EventsFlaky"));
    assert!(handled
        .iter()
        .any(|e| e["outcome"] == "error" && e["error"] == "always down"));
    let retried = seen.iter().find(|e| e["kind"] == "retried").unwrap();
    assert_eq!(
        (
            &retried["attempt"],
            &retried["next_attempt"],
            &retried["delay_ms"]
        ),
        (&1.into(), &2.into(), &20.into())
    );
    let dead = seen.iter().find(|e| exhausted(e)).unwrap();
    assert_eq!(dead["type"], "EventsFlaky");
    // Without a `type` property, the envelope's className names it (the console's types).
    let dead = seen
        .iter()
        .find(|e| unknown(e))
        .expect("unknown-type dead letter");
    assert_eq!(dead["type"], "LegacySms");
    handle.shutdown().await.unwrap();
    let stats = events.stats();
    assert!(stats.published > 0 && stats.dropped == 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_emits_started_leading_and_its_ticks() {
    let t = Arc::new(InProcessBroker::new());
    let events = Events::start(
        Arc::clone(&t),
        EventsConfig::default()
            .heartbeat(Duration::from_millis(50))
            .flush_interval(Duration::from_millis(10)),
    );
    t.declare_exchange(DEFAULT_EVENTS_EXCHANGE).await.unwrap();
    t.declare_queue(&QueueSpec::new("events-watch-s", DEFAULT_EVENTS_EXCHANGE).bind("#"))
        .await
        .unwrap();
    t.declare_exchange("events.s").await.unwrap();
    t.declare_queue(&QueueSpec::new("events-beats", "events.s").bind("#"))
        .await
        .unwrap();
    let schedule = Schedule::new("events-sched")
        .unwrap()
        .entry(Entry::every("beat", Duration::from_millis(100), &Flaky { fail: false }).unwrap())
        .unwrap();
    let handle = Scheduler::new(Publisher::new(Arc::clone(&t), "events.s"), schedule)
        .events(events.clone())
        .start()
        .await
        .unwrap();
    let mut watch = t.consume("events-watch-s", 100).await.unwrap();
    let mut seen: Vec<Value> = Vec::new();
    let wanted = ["started", "leading", "ticks-published", "heartbeat"];
    let until = Instant::now() + Duration::from_secs(10);
    while !wanted.iter().all(|k| seen.iter().any(|e| e["kind"] == *k)) && Instant::now() < until {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(1), watch.next()).await
        else {
            continue;
        };
        seen.extend(serde_json::from_slice::<Vec<Value>>(&d.body).unwrap());
        d.ack().await.unwrap();
    }
    for kind in wanted {
        assert!(
            seen.iter().any(|e| e["kind"] == kind),
            "no {kind} in {seen:?}"
        );
    }
    let ticks = seen
        .iter()
        .find(|e| e["kind"] == "ticks-published")
        .unwrap();
    assert_eq!(ticks["queue"], "lepus.schedule.events-sched");
    assert_eq!(ticks["ticks"][0]["entry"], "beat");
    handle.shutdown().await.unwrap();
}

#[derive(Debug, Serialize, Deserialize, Message, Request)]
#[lepus(type = "EventsPing", routing_key = "ping.get", reply = u64, reply_type = "EventsPong")]
struct Ping {
    n: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_server_emits_served_with_its_latency() {
    let t = Arc::new(InProcessBroker::new());
    let events = Events::start(
        Arc::clone(&t),
        EventsConfig::default().flush_interval(Duration::from_millis(10)),
    );
    t.declare_exchange(DEFAULT_EVENTS_EXCHANGE).await.unwrap();
    t.declare_queue(&QueueSpec::new("events-watch-r", DEFAULT_EVENTS_EXCHANGE).bind("#"))
        .await
        .unwrap();
    let config = RpcServerConfig::new("events-rpc", "events.r")
        .bind("ping.#")
        .events(events.clone());
    let server = RpcServer::new(Arc::clone(&t), config)
        .with(|p: Ping, _| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(p.n + 1)
        })
        .start()
        .await
        .unwrap();
    let client = RpcClient::new(Arc::clone(&t), "events.r").await.unwrap();
    assert_eq!(
        client
            .call(&Ping { n: 1 }, Duration::from_secs(5))
            .await
            .unwrap(),
        2
    );
    let mut watch = t.consume("events-watch-r", 100).await.unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let mut served = None;
    while served.is_none() && Instant::now() < until {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(1), watch.next()).await
        else {
            continue;
        };
        let batch: Vec<Value> = serde_json::from_slice(&d.body).unwrap();
        served = batch.into_iter().find(|e| e["kind"] == "served");
        d.ack().await.unwrap();
    }
    let served = served.expect("a served event");
    assert_eq!(served["type"], "EventsPing");
    assert_eq!(served["queue"], "events-rpc");
    assert!(served["ms"].as_f64().unwrap() >= 20.0, "{served}");
    server.shutdown().await;
}
