//! Connecting: a clear error when the broker is unreachable; closing is final.

use crate::amqp_support;
use std::sync::Arc;
use std::time::Duration;

use amqp_support::{cleanup, unique};
use lepus::{
    AmqpConfig, AmqpTransport, ErrorKind, Properties, Publication, QueueSpec, RpcClient, RpcError,
    Transport,
};

#[tokio::test]
async fn unreachable_broker_is_a_clear_error() {
    let config = AmqpConfig::new("amqp://guest:secret@127.0.0.1:1/%2f");
    let err = AmqpTransport::connect(config).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::ConnectionFailed);
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(text.contains("AMQP_ADDR"), "{text}");
    assert!(!text.contains("secret"), "password leaked: {text}");
}

#[tokio::test]
async fn connects_from_amqp_addr() {
    let t = broker!("connects_from_amqp_addr");
    assert!(t.is_connected());
    t.close().await.unwrap();
}

/// After `close`, nothing that still holds the transport connects again: its subscription
/// ends with `Closed`, an RPC client (whose reply task would otherwise open a new reply path)
/// and a publish fail with `Closed`, and the transport reports no reconnection. A program can
/// therefore close, then end its runtime, without a connection being opened meanwhile (lapin's
/// connecting thread panics when the runtime goes away under it).
#[tokio::test]
async fn close_is_final() {
    let t = Arc::new(broker!("close_is_final"));
    let admin = broker!("close_is_final_admin");
    let spec = QueueSpec::new(unique("close"), unique("close-x")).bind("close.#");
    admin.declare_exchange(&spec.exchange).await.unwrap();
    admin.declare_queue(&spec).await.unwrap();
    let mut subscription = t.consume(&spec.name, 10).await.unwrap();
    let client = RpcClient::new(Arc::clone(&t), spec.exchange.clone())
        .await
        .unwrap();
    assert!(client.is_reply_path_up());

    t.close().await.unwrap();

    let next = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("the subscription does not wait for a reconnection");
    match next {
        Some(Err(e)) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
        other => panic!("the subscription ends with Closed, got {other:?}"),
    }
    let call = client.start_json("CloseProbe", "close.probe", b"{}", Duration::from_secs(2));
    let call = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call does not wait for a reconnection");
    match call {
        Err(RpcError::Closed) => {}
        Err(RpcError::Transport(e)) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
        Err(e) => panic!("the call fails as closed, got {e}"),
        Ok(_) => panic!("a request was sent on a closed transport"),
    }
    let properties = Properties::default();
    let publish = t.publish(Publication::new(
        &spec.exchange,
        "close.x",
        b"{}",
        &properties,
    ));
    let err = publish.await.expect_err("nothing is sent after close");
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(!err.is_retryable());

    // Give the client's reply task time to try (it used to reconnect at once).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.reconnections(), 0, "nothing connected again after close");
    assert!(!t.is_connected());
    t.close().await.expect("closing twice is not an error");
    drop(client);
    cleanup(&admin, &spec, &[]).await;
    admin.close().await.unwrap();
}

/// A program that stops a consumer and then closes its transport: the consumer's channel,
/// dropped just before, was still closing inside lapin when `connection.close` started, and
/// the close failed ("invalid channel state: Closing (channel.close)") or, now and then, never
/// completed (a worker process hung after SIGTERM). Each of 20 rounds consumes with
/// cancels the consumer, drops the subscription and closes: every close succeeds, promptly.
#[tokio::test]
async fn close_right_after_dropping_a_subscription_is_clean() {
    let admin = broker!("close_after_drop_admin");
    let spec = QueueSpec::new(unique("close-drop"), unique("close-drop-x")).bind("drop.#");
    admin.declare_exchange(&spec.exchange).await.unwrap();
    admin.declare_queue(&spec).await.unwrap();
    let properties = Properties::default();
    for _ in 0..20 {
        admin
            .publish(Publication::new(
                &spec.exchange,
                "drop.x",
                b"{}",
                &properties,
            ))
            .await
            .unwrap();
    }
    for round in 0..20 {
        let t = broker!("close_after_drop");
        let mut subscription = t.consume(&spec.name, 10).await.unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("a delivery")
            .expect("not ended")
            .expect("not an error");
        delivery.ack().await.unwrap();
        subscription.cancel().await.unwrap();
        drop(subscription);
        let closed = tokio::time::timeout(Duration::from_secs(5), t.close())
            .await
            .unwrap_or_else(|_| panic!("round {round}: close hung"));
        closed.unwrap_or_else(|e| panic!("round {round}: close failed: {e}"));
    }
    cleanup(&admin, &spec, &[]).await;
    admin.close().await.unwrap();
}
