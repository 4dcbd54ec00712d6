//! Replies that match no caller: late, unknown, malformed and duplicate ones are dropped and
//! counted, never handed to the wrong caller. Raw replies are injected through an exclusive
//! reply queue (a direct reply-to name is only reachable by the server that got it).

use crate::amqp_support;
use crate::rpc_support;
use std::sync::Arc;
use std::time::Duration;

use lepus::rpc::{RpcClient, RpcClientConfig};
use lepus::{Properties, Publication, ReplyMode, ReplyTransport, RpcError, Transport};
use rpc_support::*;

async fn late_reply_is_dropped<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let x = format!("{q}.x");
    let server = start_server(&t, &q, &x).await;
    let client = RpcClient::new(Arc::clone(&t), &x).await.unwrap();
    let late = client
        .call(&Slow { ms: 400 }, Duration::from_millis(100))
        .await;
    assert!(matches!(late, Err(RpcError::Timeout)), "{late:?}");
    assert_eq!(client.counters().in_flight, 0);
    // The reply arrives after the deadline: dropped and counted as late.
    for _ in 0..100 {
        if client.counters().late == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.counters().late, 1, "{:?}", client.counters());
    assert_eq!(
        client
            .call(&Add { a: 1, b: 1 }, Duration::from_secs(5))
            .await
            .unwrap(),
        2
    );
    server.shutdown().await;
    cleanup(&*t, &q, &x).await;
}
rpc_tests!(late_reply_is_dropped);

async fn inject<T: Transport>(t: &T, to: &str, correlation_id: Option<&str>, value: u64) {
    let mut props = Properties::new();
    props.correlation_id = correlation_id.map(str::to_owned);
    let body = format!(r#"{{"payload":{value},"metadata":{{"className":"LepusTestSlept"}}}}"#);
    t.publish(Publication::new("", to, body.as_bytes(), &props))
        .await
        .unwrap();
}

async fn wrong_and_duplicate_ids<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let x = format!("{q}.x");
    let server = start_server(&t, &q, &x).await;
    let config = RpcClientConfig::new(&x).reply_mode(ReplyMode::ExclusiveQueue);
    let client = RpcClient::with_config(Arc::clone(&t), config)
        .await
        .unwrap();
    let to = client.reply_to().to_owned();
    let timeout = Duration::from_secs(5);

    let a = client.start(&Slow { ms: 500 }, timeout).await.unwrap();
    let b = client.start(&Slow { ms: 501 }, timeout).await.unwrap();
    let a_id = a.correlation_id();

    // Another client's id, a malformed id, no id at all: dropped.
    inject(&*t, &to, Some(&format!("{:032x}", 12345u128)), 1).await;
    inject(&*t, &to, Some("not-an-id"), 2).await;
    inject(&*t, &to, None, 3).await;
    // A forged reply to `a`: it goes to `a` (ids are the only key) and to no one else.
    inject(&*t, &to, Some(&a_id), 777).await;
    inject(&*t, &to, Some(&a_id), 778).await;

    assert_eq!(a.await.unwrap(), 777);
    assert_eq!(b.await.unwrap(), 501, "b gets its own reply");
    // The server's real reply to `a` and the second forgery are duplicates.
    for _ in 0..100 {
        if client.counters().duplicate >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = client.counters();
    assert_eq!(c.unknown, 1, "{c:?}");
    assert_eq!(c.malformed, 2, "{c:?}");
    assert_eq!(c.duplicate, 2, "{c:?}");
    assert_eq!(c.in_flight, 0);

    server.shutdown().await;
    drop(client);
    cleanup(&*t, &q, &x).await;
}
rpc_tests!(wrong_and_duplicate_ids);
