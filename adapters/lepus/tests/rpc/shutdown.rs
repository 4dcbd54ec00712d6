//! A server that stops mid-flight: callers get errors or timeouts at their deadline, never
//! hang. (A client whose reply path is lost: `rpc_recovery.rs`.)

use crate::amqp_support;
use crate::rpc_support;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::rpc::RpcClient;
use lepus::{ReplyTransport, RpcError};
use rpc_support::*;

async fn server_stopped_mid_flight<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let x = format!("{q}.x");
    let server = start_server(&t, &q, &x).await;
    let client = RpcClient::new(Arc::clone(&t), &x).await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..20 {
        pending.push(
            client
                .start(&Slow { ms: 3_000 }, Duration::from_millis(800))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.abort();
    let started = Instant::now();
    for p in pending {
        let outcome = tokio::time::timeout(Duration::from_secs(5), p)
            .await
            .expect("never hangs");
        assert!(matches!(outcome, Err(RpcError::Timeout)), "{outcome:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(client.counters().in_flight, 0);
    // With no server, a new call ends at its deadline too.
    let outcome = tokio::time::timeout(
        Duration::from_secs(5),
        client.call(&Add { a: 1, b: 1 }, Duration::from_millis(300)),
    )
    .await
    .expect("never hangs");
    assert!(matches!(outcome, Err(RpcError::Timeout)), "{outcome:?}");
    cleanup(&*t, &q, &x).await;
}
rpc_tests!(server_stopped_mid_flight);
