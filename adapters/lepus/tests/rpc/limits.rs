//! The RPC server on the consumer runtime passes the worker's poison, oversize and timeout
//! cases: a request that keeps crashing its servers ends dead-lettered with a
//! `delivery-limit` error reply instead of looping, an oversized request is dead-lettered and
//! answered `too-large`, and a handler past the handler timeout is answered `timed-out`. On
//! the in-process broker and on RabbitMQ.

use crate::amqp_support;
use crate::rpc_support;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lepus::rpc::{RemoteErrorKind, RpcClient, RpcServer, RpcServerConfig};
use lepus::{ReplyTransport, RpcError, Subscription, HEADER_REASON};
use rpc_support::*;

fn server_config(queue: &str, exchange: &str) -> RpcServerConfig {
    RpcServerConfig::new(queue, exchange)
        .bind("rpc.#")
        .shutdown_timeout(Duration::from_millis(200))
}

fn remote_kind(outcome: Result<u64, RpcError>) -> RemoteErrorKind {
    match outcome {
        Err(RpcError::Remote { kind, .. }) => kind,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// The reason header of the one dead letter in `<queue>.dead`.
async fn dead_reason<T: ReplyTransport>(t: &T, queue: &str) -> String {
    let mut sub = t.consume(&format!("{queue}.dead"), 10).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a dead letter")
        .expect("not ended")
        .expect("no error");
    d.ack().await.unwrap();
    d.properties()
        .headers
        .get(HEADER_REASON)
        .and_then(|v| v.as_str())
        .unwrap_or("-")
        .to_owned()
}

/// A request whose handler never returns is delivered to three servers in turn, each
/// stopped as a crash would (abort): with a delivery limit of 2, the third one does not run
/// the handler again but dead-letters the request and answers `delivery-limit`.
async fn poison_request_ends_with_a_delivery_limit_reply<T: ReplyTransport + 'static>(
    t: Arc<T>,
    queue: String,
) {
    let exchange = format!("{queue}.x");
    let runs = Arc::new(AtomicU32::new(0));
    let start = |runs: Arc<AtomicU32>| {
        let config = server_config(&queue, &exchange).delivery_limit(2);
        RpcServer::new(Arc::clone(&t), config).with(move |_req: Slow, _ctx| {
            let runs = Arc::clone(&runs);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(0)
            }
        })
    };
    let first = start(Arc::clone(&runs)).start().await.unwrap();
    let client = RpcClient::new(Arc::clone(&t), exchange.clone())
        .await
        .unwrap();
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call(&Slow { ms: 0 }, Duration::from_secs(30)).await })
    };
    let mut server = Some(first);
    for crashes in 1..=2u32 {
        while runs.load(Ordering::SeqCst) < crashes {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.take().unwrap().abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server = Some(start(Arc::clone(&runs)).start().await.unwrap());
    }
    let outcome = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the caller gets an answer, not a loop")
        .unwrap();
    assert_eq!(remote_kind(outcome), RemoteErrorKind::DeliveryLimit);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the handler ran twice, not again"
    );
    let stats = server.take().unwrap().shutdown().await;
    assert_eq!(stats.refused, 1, "{stats:?}");
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");
    assert_eq!(dead_reason(&*t, &queue).await, "delivery-limit");
    drop(client);
    cleanup(&*t, &queue, &exchange).await;
}
rpc_tests!(poison_request_ends_with_a_delivery_limit_reply);

/// A request over the server's body limit is dead-lettered (reason `oversized`) and answered
/// `too-large`; the handler never runs.
async fn oversized_request_is_refused<T: ReplyTransport + 'static>(t: Arc<T>, queue: String) {
    let exchange = format!("{queue}.x");
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    let config = server_config(&queue, &exchange).max_body(256);
    let server = RpcServer::new(Arc::clone(&t), config)
        .with(move |req: Echo, _ctx| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok(req.text) }
        })
        .start()
        .await
        .unwrap();
    let client = RpcClient::new(Arc::clone(&t), exchange.clone())
        .await
        .unwrap();
    let big = Echo {
        text: "x".repeat(1024),
    };
    match client.call(&big, Duration::from_secs(10)).await {
        Err(RpcError::Remote { kind, .. }) => assert_eq!(kind, RemoteErrorKind::TooLarge),
        other => panic!("expected too-large, got {other:?}"),
    }
    let small = Echo { text: "hi".into() };
    assert_eq!(
        client.call(&small, Duration::from_secs(10)).await.unwrap(),
        "hi"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stats = server.shutdown().await;
    assert_eq!((stats.refused, stats.dead_lettered), (1, 1), "{stats:?}");
    assert_eq!(dead_reason(&*t, &queue).await, "oversized");
    drop(client);
    cleanup(&*t, &queue, &exchange).await;
}
rpc_tests!(oversized_request_is_refused);

/// A handler past the handler timeout is stopped and answered `timed-out`; the server keeps
/// serving.
async fn slow_handler_times_out<T: ReplyTransport + 'static>(t: Arc<T>, queue: String) {
    let exchange = format!("{queue}.x");
    let config = server_config(&queue, &exchange).handler_timeout(Duration::from_millis(200));
    let server = RpcServer::new(Arc::clone(&t), config)
        .with(|req: Slow, _ctx| async move {
            tokio::time::sleep(Duration::from_millis(req.ms)).await;
            Ok(req.ms)
        })
        .start()
        .await
        .unwrap();
    let client = RpcClient::new(Arc::clone(&t), exchange.clone())
        .await
        .unwrap();
    let slow = client
        .call(&Slow { ms: 5_000 }, Duration::from_secs(10))
        .await;
    assert_eq!(remote_kind(slow), RemoteErrorKind::TimedOut);
    let quick = client.call(&Slow { ms: 1 }, Duration::from_secs(10)).await;
    assert_eq!(quick.unwrap(), 1);
    let stats = server.shutdown().await;
    assert_eq!(stats.timed_out, 1, "{stats:?}");
    drop(client);
    cleanup(&*t, &queue, &exchange).await;
}
rpc_tests!(slow_handler_times_out);
