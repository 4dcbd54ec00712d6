//! `#[derive(Message)]` and `#[derive(Request)]` give the same types as hand-written impls:
//! they publish, route and answer on the in-process broker.

use std::sync::Arc;
use std::time::Duration;

use lepus::rpc::{Request, RpcClient, RpcServer, RpcServerConfig};
use lepus::{InProcessBroker, Message, RetryPolicy};
use serde::{Deserialize, Serialize};

fn mail_policy() -> RetryPolicy {
    RetryPolicy::repeat(5, [15_000, 30_000, 60_000])
}

/// The talk's message: wire name from the type's name, retry policy from a function.
#[derive(Debug, Serialize, Deserialize, Message)]
#[lepus(routing_key = "mailer.ad.expired", retry = mail_policy)]
struct SendAdExpiredMail {
    ad_id: u64,
}

/// A request whose wire names are given.
#[derive(Debug, Serialize, Deserialize, Message, Request)]
#[lepus(type = "GetActiveAds", routing_key = "ads.active.get")]
#[lepus(reply = ActiveAds)]
struct AskActiveAds {
    user_id: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ActiveAds {
    ids: Vec<u64>,
}

/// Generic types work too.
#[derive(Debug, Serialize, Deserialize, Message)]
#[lepus(type = "Wrapped", routing_key = "wrapped.x")]
struct Wrapped<T> {
    inner: T,
}

#[test]
fn derived_constants() {
    assert_eq!(SendAdExpiredMail::TYPE, "SendAdExpiredMail");
    assert_eq!(SendAdExpiredMail::ROUTING_KEY, "mailer.ad.expired");
    assert_eq!(SendAdExpiredMail::retry_policy(), mail_policy());
    assert_eq!(AskActiveAds::TYPE, "GetActiveAds");
    assert_eq!(AskActiveAds::REPLY_TYPE, "ActiveAds");
    assert_eq!(AskActiveAds::retry_policy(), RetryPolicy::default());
    assert_eq!(<Wrapped<u8> as Message>::TYPE, "Wrapped");
}

#[tokio::test]
async fn a_derived_request_is_answered() {
    let broker = Arc::new(InProcessBroker::new());
    let config = RpcServerConfig::new("derive-q", "derive-x").bind("ads.#");
    let server = RpcServer::new(Arc::clone(&broker), config)
        .with(|ask: AskActiveAds, _ctx| async move {
            Ok(ActiveAds {
                ids: vec![ask.user_id, ask.user_id + 1],
            })
        })
        .start()
        .await
        .unwrap();
    let client = RpcClient::new(Arc::clone(&broker), "derive-x")
        .await
        .unwrap();
    let reply = client
        .call(&AskActiveAds { user_id: 7 }, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(reply, ActiveAds { ids: vec![7, 8] });
    server.shutdown().await;
}
