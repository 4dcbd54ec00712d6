//! Traces across processes (`lepus::trace`): one trace id from a web request through a task,
//! its retry, the follow-up task it publishes and the RPC call that one makes, on both
//! transports; the span fields that a `tracing` subscriber sees; a malformed `traceparent`
//! from outside, which starts a new trace and loses nothing.

use crate::amqp_support;
use crate::rpc_support;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::rpc::{RpcClient, RpcServer, RpcServerConfig, RpcServerHandle};
use lepus::trace::{TraceContext, HEADER_TRACEPARENT};
use lepus::{
    HandlerError, Message, Properties, Publication, Publisher, Registry, ReplyTransport,
    RetryPolicy, Worker, WorkerConfig, WorkerHandle,
};
use rpc_support::*;
use serde::{Deserialize, Serialize};

/// The task: fails on its first attempt, then publishes a [`Receipt`].
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(type = "LepusTestCharge", routing_key = "trace.charge", retry = once_soon)]
struct Charge {
    amount: u64,
}

fn once_soon() -> RetryPolicy {
    RetryPolicy::repeat(1, [50])
}

/// The follow-up task: makes an RPC call.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(type = "LepusTestReceipt", routing_key = "trace.receipt")]
struct Receipt {
    amount: u64,
}

/// Always refused by its handler: dead-lettered at once.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(type = "LepusTestPoison", routing_key = "trace.poison")]
struct Poison {}

/// Which step saw which context.
#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<Vec<Step>>>);

/// A step's name and the context it ran in.
type Step = (&'static str, Option<TraceContext>);

impl Seen {
    fn push(&self, step: &'static str) {
        self.0.lock().unwrap().push((step, TraceContext::current()));
    }
    fn all(&self) -> Vec<Step> {
        self.0.lock().unwrap().clone()
    }
    async fn wait_for(&self, n: usize, ms: u64) -> usize {
        let until = Instant::now() + Duration::from_millis(ms);
        while self.0.lock().unwrap().len() < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.0.lock().unwrap().len()
    }
}

/// The worker (charge, receipt) and the RPC server (add) of the chain.
async fn start_chain<T>(t: &Arc<T>, q: &str, seen: &Seen) -> (WorkerHandle, RpcServerHandle)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let jobs = format!("{q}.jobs");
    let rpc_x = format!("{q}.x");
    let server = RpcServer::new(
        Arc::clone(t),
        RpcServerConfig::new(format!("{q}.rpc"), &rpc_x)
            .bind("rpc.#")
            .shutdown_timeout(Duration::from_millis(500)),
    )
    .with({
        let seen = seen.clone();
        move |r: Add, _| {
            seen.push("rpc");
            async move { Ok(r.a + r.b) }
        }
    })
    .start()
    .await
    .unwrap();
    let publisher = Publisher::new(Arc::clone(t), jobs.clone());
    let client = RpcClient::new(Arc::clone(t), &rpc_x).await.unwrap();
    let registry = Registry::new()
        .with({
            let (seen, publisher) = (seen.clone(), publisher.clone());
            move |c: Charge, ctx| {
                let (seen, publisher) = (seen.clone(), publisher.clone());
                async move {
                    if ctx.attempt == 1 {
                        seen.push("charge");
                        return Err(HandlerError::transient("card declined, try again"));
                    }
                    seen.push("charge retry");
                    publisher
                        .send(&Receipt { amount: c.amount })
                        .await
                        .map_err(HandlerError::transient)?;
                    Ok(())
                }
            }
        })
        .with({
            let seen = seen.clone();
            move |r: Receipt, _| {
                let (seen, client) = (seen.clone(), client.clone());
                async move {
                    seen.push("receipt");
                    let sum = client
                        .call(&Add { a: r.amount, b: 1 }, Duration::from_secs(5))
                        .await
                        .map_err(HandlerError::transient)?;
                    assert_eq!(sum, r.amount + 1);
                    Ok(())
                }
            }
        });
    let registry = registry.with(|_: Poison, _| async { Err(HandlerError::rejected("poison")) });
    let config = WorkerConfig::new(format!("{q}.work"), &jobs)
        .bind("trace.#")
        .shutdown_timeout(Duration::from_secs(2));
    let worker = Worker::new(Arc::clone(t), config, registry)
        .start()
        .await
        .unwrap();
    (worker, server)
}

/// The worker's counters once `succeeded` handlers finished (the last step is seen before
/// its handler returns), up to 5 s.
async fn settled(worker: &WorkerHandle, succeeded: u64) -> lepus::WorkerStats {
    let until = Instant::now() + Duration::from_secs(5);
    while worker.stats().succeeded < succeeded && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stats()
}

async fn stop_chain<T: ReplyTransport>(
    t: &T,
    q: &str,
    worker: WorkerHandle,
    server: RpcServerHandle,
) {
    worker.shutdown().await.unwrap();
    server.shutdown().await;
    for queue in [format!("{q}.work"), format!("{q}.work.dead")] {
        t.delete_queue(&queue).await.unwrap();
    }
    t.delete_exchange(&format!("{q}.jobs")).await.unwrap();
    rpc_support::cleanup(t, &format!("{q}.rpc"), &format!("{q}.x")).await;
}

/// Web request -> task -> retry -> follow-up task -> RPC: one trace id, each step a child
/// of the one before.
async fn one_trace_id_across_the_chain<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let seen = Seen::default();
    let (worker, server) = start_chain(&t, &q, &seen).await;
    let request = TraceContext::new_root();
    let publisher = Publisher::new(Arc::clone(&t), format!("{q}.jobs"));
    request
        .clone()
        .scope(async { publisher.send(&Charge { amount: 41 }).await.unwrap() })
        .await;
    assert_eq!(seen.wait_for(4, 20_000).await, 4, "{:?}", seen.all());
    let all = seen.all();
    let steps: Vec<&str> = all.iter().map(|(step, _)| *step).collect();
    assert_eq!(steps, ["charge", "charge retry", "receipt", "rpc"]);
    let mut span_ids = vec![request.span_id()];
    for (step, cx) in &all {
        let cx = cx.as_ref().unwrap_or_else(|| panic!("{step}: no context"));
        assert_eq!(cx.trace_id(), request.trace_id(), "{step}");
        let parent = cx
            .parent_id()
            .unwrap_or_else(|| panic!("{step}: no parent"));
        assert!(
            !span_ids.contains(&cx.span_id()),
            "{step}: a span of its own"
        );
        assert!(
            !span_ids.contains(&parent),
            "{step}: the parent is the publish span"
        );
        span_ids.push(cx.span_id());
    }
    let stats = settled(&worker, 2).await;
    assert_eq!((stats.retried, stats.succeeded), (1, 2), "{stats:?}");
    stop_chain(&*t, &q, worker, server).await;
}

rpc_tests!(one_trace_id_across_the_chain);

/// A delayed send reaches its handler in the sender's trace; a dead letter carries the trace
/// in its `traceparent`.
async fn delays_and_dead_letters_keep_the_trace<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let seen = Seen::default();
    let (worker, server) = start_chain(&t, &q, &seen).await;
    let request = TraceContext::new_root();
    let publisher = Publisher::new(Arc::clone(&t), format!("{q}.jobs"));
    request
        .clone()
        .scope(async {
            let delay = Duration::from_millis(150);
            publisher
                .send_after(&Receipt { amount: 2 }, delay)
                .await
                .unwrap();
            publisher.send(&Poison {}).await.unwrap();
        })
        .await;
    assert_eq!(seen.wait_for(2, 20_000).await, 2, "{:?}", seen.all());
    for (step, cx) in seen.all() {
        assert_eq!(
            cx.map(|cx| cx.trace_id()),
            Some(request.trace_id()),
            "{step}"
        );
    }
    let mut dead = t.consume(&format!("{q}.work.dead"), 10).await.unwrap();
    let letter = tokio::time::timeout(
        Duration::from_secs(10),
        lepus::Subscription::next(&mut dead),
    )
    .await
    .expect("a dead letter")
    .expect("open")
    .unwrap();
    letter.ack().await.unwrap();
    let cx = TraceContext::from_headers(&letter.properties().headers).expect("a traceparent");
    assert_eq!(cx.trace_id(), request.trace_id());
    drop(dead);
    settled(&worker, 1).await;
    stop_chain(&*t, &q, worker, server).await;
}

rpc_tests!(delays_and_dead_letters_keep_the_trace);

/// A `traceparent` that breaks the spec's rules (uppercase, all-zero ids, wrong length, not a
/// string) starts a new trace: the message is handled once and acknowledged, never refused.
async fn malformed_traceparent_starts_a_new_trace<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let seen = Seen::default();
    let (worker, server) = start_chain(&t, &q, &seen).await;
    let body = lepus::encode_raw_envelope(
        br#"{"amount":1}"#,
        Receipt::TYPE,
        RetryPolicy::ignore().into_metadata(),
        None,
        None,
    )
    .unwrap();
    let bad: [lepus::HeaderValue; 4] = [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01".into(),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7".into(),
        lepus::HeaderValue::Int(7),
    ];
    let jobs = format!("{q}.jobs");
    for value in &bad {
        let props = Properties::new()
            .with_type(Receipt::TYPE)
            .with_header(HEADER_TRACEPARENT, value.clone());
        let publication = Publication::new(&jobs, Receipt::ROUTING_KEY, &body, &props);
        t.publish(publication).await.unwrap();
    }
    // Each receipt makes one RPC call: 8 steps.
    assert_eq!(seen.wait_for(8, 20_000).await, 8, "{:?}", seen.all());
    let receipts: Vec<TraceContext> = seen
        .all()
        .into_iter()
        .filter(|(step, _)| *step == "receipt")
        .map(|(_, cx)| cx.expect("a new trace"))
        .collect();
    assert_eq!(receipts.len(), 4);
    for cx in &receipts {
        assert!(
            !cx.trace_id().is_zero() && cx.parent_id().is_none(),
            "{cx:?}"
        );
        assert_ne!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
    let stats = settled(&worker, 4).await;
    assert_eq!((stats.succeeded, stats.dead_lettered), (4, 0), "{stats:?}");
    stop_chain(&*t, &q, worker, server).await;
}

rpc_tests!(malformed_traceparent_starts_a_new_trace);

/// A minimal `tracing` subscriber that keeps every span's name and fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<SpanRecord>>>);

/// A span's name and fields.
type SpanRecord = (&'static str, HashMap<String, String>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = HashMap::new();
        span.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push((span.metadata().name(), fields));
        tracing::span::Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, fields)) = spans.get_mut(span.into_u64() as usize - 1) {
            values.record(&mut Fields(fields));
        }
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The spans carry the trace ids and the messaging semantic conventions' fields; each
/// `lepus.message` span's parent is a `lepus.publish` span of the same trace.
#[tokio::test]
async fn spans_carry_trace_ids_and_messaging_fields() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.clone());
    let t = Arc::new(lepus::InProcessBroker::new());
    let q = amqp_support::unique("trace-spans");
    let seen = Seen::default();
    let (worker, server) = start_chain(&t, &q, &seen).await;
    let request = TraceContext::new_root();
    let publisher = Publisher::new(Arc::clone(&t), format!("{q}.jobs"));
    request
        .clone()
        .scope(async { publisher.send(&Charge { amount: 1 }).await.unwrap() })
        .await;
    assert_eq!(seen.wait_for(4, 20_000).await, 4, "{:?}", seen.all());
    stop_chain(&*t, &q, worker, server).await;

    let spans = capture.0.lock().unwrap().clone();
    let trace_id = request.trace_id().to_string();
    let named = |name: &str| -> Vec<HashMap<String, String>> {
        spans
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, f)| f.clone())
            .collect()
    };
    let publishes = named("lepus.publish");
    let messages = named("lepus.message");
    // Charge, its retry copy's delivery, the receipt and the RPC request.
    assert!(messages.len() >= 4, "{messages:?}");
    assert!(publishes.len() >= 3, "{publishes:?}");
    assert_eq!(named("lepus.rpc.request").len(), 1);
    for m in &messages {
        assert_eq!(m.get("trace_id"), Some(&trace_id), "{m:?}");
        assert_eq!(m["messaging.system"], "rabbitmq");
        assert_eq!(m["messaging.operation.type"], "process");
        assert!(m.contains_key("messaging.rabbitmq.destination.routing_key"));
        assert!(m.contains_key("messaging.message.id"));
        assert!(m.contains_key("span_id") && m.contains_key("parent_span_id"));
    }
    for p in &publishes {
        assert_eq!(p.get("trace_id"), Some(&trace_id), "{p:?}");
        assert_eq!(p["messaging.operation.type"], "publish");
    }
    // The first delivery's parent is the first publish span.
    let first_publish = &publishes[0];
    assert!(
        messages
            .iter()
            .any(|m| m.get("parent_span_id") == first_publish.get("span_id")),
        "{messages:?} {first_publish:?}"
    );
    // The RPC request carries its correlation id as the conversation id.
    let rpc = messages
        .iter()
        .find(|m| m["queue"].ends_with(".rpc"))
        .expect("the RPC request's span");
    assert!(
        !rpc["messaging.message.conversation_id"].is_empty(),
        "{rpc:?}"
    );
}
