//! 10,000 concurrent calls from one client, every reply matched to its caller.

use crate::amqp_support;
use crate::rpc_support;
use std::sync::Arc;
use std::time::Duration;

use lepus::rpc::RpcClient;
use lepus::ReplyTransport;
use rpc_support::*;

const CALLS: u64 = 10_000;

async fn ten_thousand_calls<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let x = format!("{q}.x");
    let server = start_server(&t, &q, &x).await;
    let client = RpcClient::new(Arc::clone(&t), &x).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let client = client.clone();
        calls.spawn(async move {
            let reply = client
                .call(&Add { a: i, b: 3 * i + 1 }, Duration::from_secs(60))
                .await;
            (i, reply)
        });
    }
    let mut matched = 0;
    while let Some(joined) = calls.join_next().await {
        let (i, reply) = joined.unwrap();
        assert_eq!(reply.unwrap(), 4 * i + 1, "reply to call {i}");
        matched += 1;
    }
    assert_eq!(matched, CALLS);
    let c = client.counters();
    assert_eq!(c.in_flight, 0);
    assert_eq!(c.dropped(), 0, "{c:?}");
    let stats = server.shutdown().await;
    assert_eq!(stats.replied, CALLS);
    cleanup(&*t, &q, &x).await;
}
rpc_tests!(ten_thousand_calls);
