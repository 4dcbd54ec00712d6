//! Shared pieces of the `rpc_*` tests: request types, a server with handlers for them, and
//! the two transports. Bodies are generic over the transport.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use lepus::rpc::{Request, RpcServer, RpcServerConfig, RpcServerHandle};
use lepus::{HandlerError, Message, ReplyTransport, Transport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(type = "LepusTestAdd", routing_key = "rpc.add", reply = u64, reply_type = "LepusTestSum")]
pub struct Add {
    pub a: u64,
    pub b: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(type = "LepusTestEcho", routing_key = "rpc.echo")]
#[lepus(reply = String, reply_type = "LepusTestEchoed")]
pub struct Echo {
    pub text: String,
}

/// Sleeps `ms`, then answers `ms`.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(type = "LepusTestSlow", routing_key = "rpc.slow")]
#[lepus(reply = u64, reply_type = "LepusTestSlept")]
pub struct Slow {
    pub ms: u64,
}

/// Always rejected with `message`.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(type = "LepusTestFail", routing_key = "rpc.fail")]
#[lepus(reply = (), reply_type = "LepusTestNever")]
pub struct Fail {
    pub message: String,
}

/// The handler panics.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(type = "LepusTestBoom", routing_key = "rpc.boom")]
#[lepus(reply = (), reply_type = "LepusTestNever")]
pub struct Boom {}

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
