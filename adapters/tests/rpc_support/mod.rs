//! Shared pieces of the `rpc_*` tests: request types, a server with handlers for them, and
//! the two transports. Bodies are generic over the transport.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use lepus::rpc::{Request, RpcServer, RpcServerConfig, RpcServerHandle};
use lepus::{HandlerError, Message, ReplyTransport, Transport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add {
    pub a: u64,
    pub b: u64,
}
impl Message for Add {
    const TYPE: &'static str = "LepusTestAdd";
    const ROUTING_KEY: &'static str = "rpc.add";
}
impl Request for Add {
    type Reply = u64;
    const REPLY_TYPE: &'static str = "LepusTestSum";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Echo {
    pub text: String,
}
impl Message for Echo {
    const TYPE: &'static str = "LepusTestEcho";
    const ROUTING_KEY: &'static str = "rpc.echo";
}
impl Request for Echo {
    type Reply = String;
    const REPLY_TYPE: &'static str = "LepusTestEchoed";
}

/// Sleeps `ms`, then answers `ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slow {
    pub ms: u64,
}
impl Message for Slow {
    const TYPE: &'static str = "LepusTestSlow";
    const ROUTING_KEY: &'static str = "rpc.slow";
}
impl Request for Slow {
    type Reply = u64;
    const REPLY_TYPE: &'static str = "LepusTestSlept";
}

/// Always rejected with `message`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail {
    pub message: String,
}
impl Message for Fail {
    const TYPE: &'static str = "LepusTestFail";
    const ROUTING_KEY: &'static str = "rpc.fail";
}
impl Request for Fail {
    type Reply = ();
    const REPLY_TYPE: &'static str = "LepusTestNever";
}

/// The handler panics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Boom {}
impl Message for Boom {
    const TYPE: &'static str = "LepusTestBoom";
    const ROUTING_KEY: &'static str = "rpc.boom";
}
impl Request for Boom {
    type Reply = ();
    const REPLY_TYPE: &'static str = "LepusTestNever";
}

/// Starts a server on `queue` bound to `exchange` with `rpc.#`, handling every test type.
pub async fn start_server<T>(t: &Arc<T>, queue: &str, exchange: &str) -> RpcServerHandle
where
    T: Transport + 'static,
    T::Subscription: 'static,
{
    let config = RpcServerConfig::new(queue, exchange)
        .bind("rpc.#")
        .prefetch(200)
        .concurrency(64)
        .shutdown_timeout(Duration::from_millis(500));
    RpcServer::new(Arc::clone(t), config)
        .with(|r: Add, _| async move { Ok(r.a + r.b) })
        .with(|r: Echo, _| async move { Ok(r.text.to_uppercase()) })
        .with(|r: Slow, _| async move {
            tokio::time::sleep(Duration::from_millis(r.ms)).await;
            Ok(r.ms)
        })
        .with(|r: Fail, _| async move { Err::<(), _>(HandlerError::rejected(r.message)) })
        .with(|_: Boom, _| async move {
            if true {
                panic!("boom handler");
            }
            Ok(())
        })
        .start()
        .await
        .expect("server starts")
}

/// Deletes what a server declared.
pub async fn cleanup<T: ReplyTransport>(t: &T, queue: &str, exchange: &str) {
    t.delete_queue(queue).await.unwrap();
    t.delete_queue(&format!("{queue}.dead")).await.unwrap();
    t.delete_exchange(exchange).await.unwrap();
}

/// Runs `body` against the in-process broker.
#[macro_export]
macro_rules! rpc_tests {
    ($body:ident) => {
        mod $body {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_process() {
                let t = std::sync::Arc::new(lepus::InProcessBroker::new());
                let q = amqp_support::unique(stringify!($body));
                tokio::time::timeout(std::time::Duration::from_secs(120), super::$body(t, q))
                    .await
                    .expect("test finished in time");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rabbitmq() {
                let t = std::sync::Arc::new(broker!(concat!("rpc ", stringify!($body))));
                let q = amqp_support::unique(stringify!($body));
                tokio::time::timeout(std::time::Duration::from_secs(120), super::$body(t, q))
                    .await
                    .expect("test finished in time");
            }
        }
    };
}
