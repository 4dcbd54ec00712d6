//! Connecting: a clear error when the broker is unreachable.

mod amqp_support;

use lepus::{AmqpConfig, AmqpTransport, ErrorKind};

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
    assert!(t.connection().status().connected());
    t.close().await.unwrap();
}
