//! The futures of `call`, `start` and `gather` are `Send`: they can run in spawned tasks
//! (web handlers under hyper or axum must be `Send`). A compile-time check, run once.

use crate::rpc_support;
use std::sync::Arc;
use std::time::Duration;

use lepus::rpc::RpcClient;
use lepus::InProcessBroker;
use rpc_support::{Add, Echo};

#[tokio::test]
async fn calls_and_gathers_run_in_spawned_tasks() {
    let broker = Arc::new(InProcessBroker::new());
    let client = RpcClient::new(Arc::clone(&broker), "x").await.unwrap();
    let task = tokio::spawn(async move {
        let a = Add { a: 1, b: 2 };
        let e = Echo { text: "hi".into() };
        let one = client.call(&a, Duration::from_millis(10)).await;
        let both = client.gather((&a, &e), Duration::from_millis(10)).await;
        (one.is_err(), both.0.is_err(), both.1.is_err())
    });
    // Nothing serves the exchange: every call ends in an error, none hangs.
    assert_eq!(task.await.unwrap(), (true, true, true));
}
