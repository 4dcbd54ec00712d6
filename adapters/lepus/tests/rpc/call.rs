//! Calls, scatter-gather of mixed types, timeouts among successes, remote errors, panics
//! and requests without a reply address, on both transports.

use crate::amqp_support;
use crate::rpc_support;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::rpc::{RemoteErrorKind, RpcClient};
use lepus::{Publisher, ReplyTransport, RpcError};
use rpc_support::*;

async fn call_and_gather<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let x = format!("{q}.x");
    let server = start_server(&t, &q, &x).await;
    let client = RpcClient::new(Arc::clone(&t), &x).await.unwrap();

    let sum = client
        .call(&Add { a: 2, b: 3 }, Duration::from_secs(5))
        .await;
    assert_eq!(sum.unwrap(), 5);

    // Mixed types under one deadline: total time is the slowest call's.
    let started = Instant::now();
    let (sum, echo, slept) = client
        .gather(
            (
                &Add { a: 1, b: 1 },
                &Echo { text: "hi".into() },
                &Slow { ms: 300 },
            ),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(sum.unwrap(), 2);
    assert_eq!(echo.unwrap(), "HI");
    assert_eq!(slept.unwrap(), 300);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // Start, do other work, collect later.
    let a = client
        .start(&Slow { ms: 200 }, Duration::from_secs(5))
        .await
        .unwrap();
    let b = client
        .start(
            &Echo {
                text: "later".into(),
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b.await.unwrap(), "LATER");
    assert_eq!(a.await.unwrap(), 200);

    // One times out, one fails remotely, the others still succeed.
    let started = Instant::now();
    let (sum, slow, echo, fail) = client
        .gather(
            (
                &Add { a: 20, b: 22 },
                &Slow { ms: 3_000 },
                &Echo { text: "ok".into() },
                &Fail {
                    message: "no such ad".into(),
                },
            ),
            Duration::from_millis(600),
        )
        .await;
    let waited = started.elapsed();
    assert_eq!(sum.unwrap(), 42);
    assert!(matches!(slow, Err(RpcError::Timeout)), "{slow:?}");
    assert_eq!(echo.unwrap(), "OK");
    let fail = fail.unwrap_err();
    assert_eq!(
        fail.remote(),
        Some((RemoteErrorKind::Rejected, "no such ad"))
    );
    assert!(
        waited >= Duration::from_millis(550) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(client.counters().in_flight, 0, "timeouts free their slot");

    server.shutdown().await;
    cleanup(&*t, &q, &x).await;
}
rpc_tests!(call_and_gather);

async fn remote_errors_and_panics<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let x = format!("{q}.x");
    let server = start_server(&t, &q, &x).await;
    let client = RpcClient::new(Arc::clone(&t), &x).await.unwrap();
    let timeout = Duration::from_secs(5);

    let err = client
        .call(
            &Fail {
                message: "bad input".into(),
            },
            timeout,
        )
        .await
        .unwrap_err();
    assert_eq!(err.remote(), Some((RemoteErrorKind::Rejected, "bad input")));
    assert!(err.to_string().contains("bad input"));

    let err = client.call(&Boom {}, timeout).await.unwrap_err();
    let (kind, message) = err.remote().expect("remote error");
    assert_eq!(kind, RemoteErrorKind::Panicked);
    assert!(message.contains("boom handler"), "{message}");

    // The server keeps serving after a panic.
    assert_eq!(client.call(&Add { a: 7, b: 8 }, timeout).await.unwrap(), 15);

    // A request without reply_to is handled as a plain message, and nothing crashes.
    let publisher = Publisher::new(Arc::clone(&t), &x);
    publisher.send(&Add { a: 1, b: 1 }).await.unwrap();
    publisher.send(&Boom {}).await.unwrap();
    for _ in 0..100 {
        if server.stats().no_reply >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.call(&Add { a: 1, b: 2 }, timeout).await.unwrap(), 3);

    let stats = server.shutdown().await;
    assert_eq!(stats.no_reply, 2);
    assert_eq!(stats.panics, 2);
    assert!(stats.remote_errors >= 2, "{stats:?}");
    cleanup(&*t, &q, &x).await;
}
rpc_tests!(remote_errors_and_panics);
