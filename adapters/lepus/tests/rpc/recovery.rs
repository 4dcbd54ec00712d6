//! The RPC client recovers its reply path: calls whose replies were lost end with a timeout
//! at their deadline (never earlier, never a hang), calls made meanwhile wait for the new
//! path, and the client keeps working with a new `reply_to` address, in both reply modes.
//!
//! On RabbitMQ the fault is the broker closing this test's own connections (`rabbitmqctl
//! close_connection`, found by connection name, so other users of the broker are untouched).
//! On the in-process broker a reply consumer is lost only when its exclusive reply queue is
//! deleted (its direct reply-to route lives as long as the client).

use crate::amqp_support;
use crate::rpc_support;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::rpc::{
    Request, RpcClient, RpcClientConfig, RpcServer, RpcServerConfig, RpcServerHandle,
};
use lepus::{
    AmqpTransport, InProcessBroker, Message, Properties, Publication, ReplyMode, ReplyTransport,
    RpcError, Transport,
};
use rpc_support::*;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How late past its deadline a call may end (the reply task's timer and scheduling).
const SLACK: Duration = Duration::from_millis(400);

/// Awaits `call` and checks that it ended with a timeout at its deadline (`started +
/// timeout`), neither earlier nor much later.
async fn times_out_at_deadline<F, V>(call: F, started: Instant, timeout: Duration)
where
    F: core::future::Future<Output = Result<V, RpcError>>,
    V: core::fmt::Debug,
{
    let outcome = tokio::time::timeout(timeout + Duration::from_secs(5), call)
        .await
        .expect("the call never hangs");
    let took = started.elapsed();
    assert!(matches!(outcome, Err(RpcError::Timeout)), "{outcome:?}");
    assert!(
        took + Duration::from_millis(50) >= timeout,
        "not failed early: {took:?}"
    );
    assert!(took <= timeout + SLACK, "by its deadline: {took:?}");
}

/// Waits up to 15 s for the client's reply path to be open again after a loss. An exclusive
/// reply queue has a new name; direct reply-to keeps its pseudo-queue name (the broker
/// rewrites it to name the new channel).
async fn reopened<T: ReplyTransport>(client: &RpcClient<T>, mode: ReplyMode, before: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(client.is_reply_path_up() && client.reopenings() >= 1) {
        assert!(Instant::now() < deadline, "the reply path was opened again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match mode {
        ReplyMode::ExclusiveQueue => assert_ne!(client.reply_to(), before, "a new reply queue"),
        ReplyMode::DirectReplyTo => assert_eq!(client.reply_to(), lepus::DIRECT_REPLY_TO),
    }
    assert!(!client.is_closed());
}

/// True when `rabbitmqctl` works here; otherwise skips loudly, or panics when the broker
/// is required.
fn rabbitmqctl_available(test: &str) -> bool {
    let ok = std::process::Command::new("rabbitmqctl")
        .arg("status")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if amqp_support::broker_required() {
            panic!("{test}: rabbitmqctl is required (LEPUS_REQUIRE_BROKER=1 or CI=true)");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n##########\n## SKIPPED {test}: needs rabbitmqctl\n##########"
        );
    }
    ok
}

/// Runs `rabbitmqctl args` (off the runtime's threads).
async fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .expect("rabbitmqctl runs")
}

/// The broker's ids of the connections whose name contains `tag`.
async fn connections_named(tag: &str) -> Vec<String> {
    let out = rabbitmqctl(&["list_connections", "-s", "pid", "client_properties"]).await;
    assert!(out.status.success(), "list_connections failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(tag))
        .filter_map(|l| l.split('\t').next())
        .map(str::to_owned)
        .collect()
}

/// Has the broker close the connections `pids`, all at once.
async fn close_connections(pids: &[String]) {
    let mut closing = tokio::task::JoinSet::new();
    for pid in pids {
        let pid = pid.clone();
        closing.spawn(async move {
            let out = rabbitmqctl(&["close_connection", &pid, "lepus rpc recovery test"]).await;
            assert!(out.status.success(), "close_connection {pid} failed");
        });
    }
    while let Some(done) = closing.join_next().await {
        done.unwrap();
    }
}

/// Waits for the gate, then answers its number.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(type = "LepusTestGated", routing_key = "rpc.gated")]
#[lepus(reply = u64, reply_type = "LepusTestGatedReply")]
struct Gated {
    n: u64,
}

/// A server for [`Add`] and [`Gated`]; its gate starts closed.
async fn gated_server(
    t: &Arc<AmqpTransport>,
    queue: &str,
    exchange: &str,
) -> (Arc<watch::Sender<bool>>, RpcServerHandle) {
    let gate = Arc::new(watch::Sender::new(false));
    let config = RpcServerConfig::new(queue, exchange)
        .bind("rpc.#")
        .concurrency(64);
    let opened = Arc::clone(&gate);
    let server = RpcServer::new(Arc::clone(t), config)
        .with(|r: Add, _| async move { Ok(r.a + r.b) })
        .with(move |r: Gated, _| {
            let mut open = opened.subscribe();
            async move {
                let _ = open.wait_for(|o| *o).await;
                Ok(r.n)
            }
        })
        .start()
        .await
        .expect("server starts");
    (gate, server)
}

async fn connection_closed_by_broker(mode: ReplyMode, test: &str) {
    let Some(base) = amqp_support::connect(test).await else {
        return;
    };
    if !rabbitmqctl_available(test) {
        return;
    }
    let q = amqp_support::unique("rpc-recover");
    let x = format!("{q}.x");
    let named = |role: &str| {
        AmqpTransport::connect(amqp_support::env_config().connection_name(format!("{q}-{role}")))
    };
    // The server and the client each on a connection of their own, both closed by the broker.
    let server_t = Arc::new(named("server").await.unwrap());
    let client_t = Arc::new(named("client").await.unwrap());
    let (gate, server) = gated_server(&server_t, &q, &x).await;
    let config = RpcClientConfig::new(&x).reply_mode(mode);
    let client = RpcClient::with_config(Arc::clone(&client_t), config)
        .await
        .unwrap();
    assert_eq!(
        client
            .call(&Add { a: 1, b: 2 }, Duration::from_secs(5))
            .await
            .unwrap(),
        3
    );
    let before = client.reply_to();

    let pids = connections_named(&q).await;
    assert_eq!(pids.len(), 2, "both connections found: {pids:?}");

    // Calls in flight: their handlers wait for the gate, which opens once the connections
    // are gone, so every reply goes to the lost path.
    let timeout = Duration::from_millis(5_000);
    let started = Instant::now();
    let mut in_flight = Vec::new();
    for n in 0..20 {
        in_flight.push(client.start(&Gated { n }, timeout).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    close_connections(&pids).await;
    assert!(
        started.elapsed() < timeout,
        "rabbitmqctl closed the connections before the calls' deadline"
    );
    gate.send_replace(true);
    // Calls made right after the loss wait for the new reply path, then get their replies.
    let after: Vec<_> = (0..10u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call(&Add { a: i, b: 100 }, Duration::from_secs(20))
                    .await
            })
        })
        .collect();
    for p in in_flight {
        times_out_at_deadline(p, started, timeout).await;
    }
    for (i, call) in (0..10u64).zip(after) {
        assert_eq!(
            call.await.unwrap().unwrap(),
            i + 100,
            "call made after the loss"
        );
    }
    reopened(&client, mode, &before).await;
    assert_eq!(
        client
            .call(&Add { a: 2, b: 2 }, Duration::from_secs(5))
            .await
            .unwrap(),
        4
    );
    let counters = client.counters();
    assert_eq!(counters.in_flight, 0, "{counters:?}");
    assert_eq!(
        counters.unknown, 0,
        "no reply matched another call: {counters:?}"
    );
    assert!(client_t.reconnections() >= 1 && server_t.reconnections() >= 1);

    server.shutdown().await;
    drop(client);
    cleanup(&base, &q, &x).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_recovers_after_connections_closed() {
    connection_closed_by_broker(ReplyMode::DirectReplyTo, "rpc recovery (direct reply-to)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_recovers_after_connections_closed() {
    connection_closed_by_broker(ReplyMode::ExclusiveQueue, "rpc recovery (exclusive queue)").await;
}

/// A request to a missing exchange makes RabbitMQ close the channel, which is also the reply
/// channel: the caller gets the refusal, the client opens a new path and keeps working.
/// (The client declares its exchange before its first request: here it is deleted after.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_request_does_not_end_the_client() {
    let t = Arc::new(broker!("rpc refused request"));
    let q = amqp_support::unique("rpc-refused");
    let x = format!("{q}.x");
    let client = RpcClient::new(Arc::clone(&t), &x).await.unwrap();
    // Declared by the client, but no queue is bound yet: unroutable, the channel stays.
    let unroutable = client
        .call(&Add { a: 1, b: 1 }, Duration::from_secs(5))
        .await;
    match &unroutable {
        Err(RpcError::Transport(e)) => assert!(e.is_unroutable(), "{e}"),
        other => panic!("no queue is bound: {other:?}"),
    }
    t.delete_exchange(&x).await.unwrap();
    let before = client.reply_to();
    let refused = client
        .call(&Add { a: 1, b: 1 }, Duration::from_secs(5))
        .await;
    match &refused {
        Err(RpcError::Transport(e)) => assert!(!e.is_retryable(), "{e}"),
        other => panic!("the broker refused the request: {other:?}"),
    }
    let server = start_server(&t, &q, &x).await;
    reopened(&client, ReplyMode::DirectReplyTo, &before).await;
    assert_eq!(
        client
            .call(&Add { a: 1, b: 1 }, Duration::from_secs(5))
            .await
            .unwrap(),
        2
    );
    server.shutdown().await;
    drop(client);
    cleanup(&*t, &q, &x).await;
}

/// Publishes a raw reply carrying `value` with `correlation_id` to `to`.
async fn inject<T: Transport>(t: &T, to: &str, correlation_id: &str, value: u64) {
    let props = Properties::new().with_correlation_id(correlation_id);
    let body = format!(r#"{{"payload":{value},"metadata":{{"className":"LepusTestSlept"}}}}"#);
    t.publish(Publication::new("", to, body.as_bytes(), &props))
        .await
        .unwrap();
}

/// In-process: deleting the client's exclusive reply queue ends its reply consumer. Calls
/// pending at the loss keep their correlation ids until their deadline: a reply that does
/// come (here injected into the new queue) is still matched in time, and counted as late
/// after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_reply_queue_deleted() {
    let t = Arc::new(InProcessBroker::new());
    let q = amqp_support::unique("rpc-recover");
    let x = format!("{q}.x");
    let server = start_server(&t, &q, &x).await;
    let config = RpcClientConfig::new(&x).reply_mode(ReplyMode::ExclusiveQueue);
    let client = RpcClient::with_config(Arc::clone(&t), config)
        .await
        .unwrap();
    let before = client.reply_to();
    let timeout = Duration::from_millis(1_000);
    let started = Instant::now();
    let lost = client.start(&Slow { ms: 300 }, timeout).await.unwrap();
    let lost_id = lost.correlation_id();
    let kept = client
        .start(&Slow { ms: 60_000 }, timeout * 5)
        .await
        .unwrap();
    let kept_id = kept.correlation_id();
    t.delete_queue(&before).await.unwrap();
    times_out_at_deadline(lost, started, timeout).await;
    reopened(&client, ReplyMode::ExclusiveQueue, &before).await;
    assert_eq!(client.reopenings(), 1);
    assert_eq!(
        client
            .call(&Add { a: 5, b: 6 }, Duration::from_secs(5))
            .await
            .unwrap(),
        11
    );

    let to = client.reply_to();
    inject(&*t, &to, &kept_id, 42).await;
    assert_eq!(kept.await.unwrap(), 42, "still pending: matched");
    inject(&*t, &to, &lost_id, 43).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.counters().late < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let counters = client.counters();
    assert_eq!((counters.late, counters.unknown), (1, 0), "{counters:?}");
    assert_eq!(counters.in_flight, 0, "{counters:?}");

    let stats = server.shutdown().await;
    assert!(
        stats.unroutable_replies >= 1,
        "the lost reply went nowhere: {stats:?}"
    );
    drop(client);
    cleanup(&*t, &q, &x).await;
}
