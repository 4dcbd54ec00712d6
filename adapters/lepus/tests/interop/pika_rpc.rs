//! Standard AMQP RPC (`reply_to` + `correlation_id`, JSON envelopes) with a real third-party
//! client, Python's `pika`, in the style of RabbitMQ tutorial 6, both ways:
//! - a pika client (exclusive callback queue, uuid4 correlation ids, PHP-style numeric
//!   strings, some requests addressed through the envelope's metadata as the talk's PHP did)
//!   calls our `RpcServer`;
//! - our `RpcClient`, with direct reply-to and with an exclusive reply queue, calls a pika
//!   server that sets only `correlation_id` on its replies (an envelope, a bare number, and
//!   our documented error reply).
//!
//! Needs `python3` with `pika`: without it the tests skip loudly, or fail under `CI=true` /
//! `LEPUS_REQUIRE_BROKER=1` (`.ci/run` installs it). Every Python process is bounded in time
//! and killed at the end.

use crate::amqp_support;
use crate::interop_support;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use interop_support::{amqp_url, pika_available, Script};
use lepus::rpc::{
    parse_correlation_id, RemoteErrorKind, Request, RpcClient, RpcClientConfig, RpcServer,
    RpcServerConfig,
};
use lepus::{HandlerError, Message, ReplyMode, RpcError, Transport, CONTENT_TYPE_JSON};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(routing_key = "users.friends.get", reply = UserFriends)]
struct GetUserFriends {
    user_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UserFriends {
    user_id: u64,
    friends: Vec<u64>,
}

/// The friends both servers (ours and pika's) answer for `user_id`.
fn friends_of(user_id: u64) -> UserFriends {
    UserFriends {
        user_id,
        friends: vec![10 * user_id + 1, 10 * user_id + 2],
    }
}

/// Always refused: "moderators only".
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(routing_key = "users.ban", reply = (), reply_type = "UserBanned")]
struct BanUser {
    user_id: u64,
}

/// Tutorial 6's request: the pika server answers the bare number.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(routing_key = "math.fib", reply = u64, reply_type = "FibNumber")]
struct Fib {
    n: u32,
}

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_client_calls_our_server() {
    let test = "pika_client_calls_our_server";
    if !pika_available(test) {
        return;
    }
    let t = Arc::new(broker!(test));
    let queue = amqp_support::unique("interop.rpc-server");
    let exchange = format!("{queue}.x");
    let config = RpcServerConfig::new(queue.clone(), exchange.clone())
        .bind("users.#")
        .shutdown_timeout(Duration::from_secs(2));
    let server = RpcServer::new(Arc::clone(&t), config)
        .with(|r: GetUserFriends, _| async move { Ok(friends_of(r.user_id)) })
        .with(
            |_: BanUser, _| async move { Err::<(), _>(HandlerError::rejected("moderators only")) },
        )
        .start()
        .await
        .unwrap();

    let count = 20u64;
    let client = Script::python(
        "pika_rpc_client.py",
        &[amqp_url(), queue.clone(), count.to_string(), "15".into()],
    );
    let run = tokio::task::spawn_blocking(move || client.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    let stats = server.shutdown().await;
    t.delete_queue(&format!("{queue}.dead")).await.unwrap();
    t.delete_queue(&queue).await.unwrap();
    t.delete_exchange(&exchange).await.unwrap();

    assert!(
        run.status.is_some_and(|s| s.success()),
        "pika client: {:?}, stderr: {}",
        run.status,
        run.stderr
    );
    let replies: Vec<Value> = run
        .lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON line per reply"))
        .collect();
    assert_eq!(replies.len(), count as usize + 2, "{replies:#?}");

    let mut users = BTreeSet::new();
    let mut by_metadata = 0;
    for reply in &replies {
        let asked = &reply["request"];
        let body = &reply["body"];
        match asked["class"].as_str() {
            Some("GetUserFriends") => {
                let user_id = asked["user_id"].as_u64().expect("user id");
                let friends: UserFriends =
                    serde_json::from_value(body["payload"].clone()).expect("friends payload");
                assert_eq!(friends, friends_of(user_id));
                assert_eq!(body["metadata"]["className"], "UserFriends");
                // The reply carries the client's uuid, whether it came as a property or in
                // the envelope's metadata.
                assert_eq!(body["metadata"]["correlationId"], reply["correlation_id"]);
                assert_eq!(reply["type"], "UserFriends");
                assert_eq!(reply["content_type"], CONTENT_TYPE_JSON);
                assert!(users.insert(user_id), "one reply per request");
                if asked["addressing"] == "metadata" {
                    by_metadata += 1;
                }
            }
            Some("BanUser") => {
                assert_eq!(reply["headers"]["x-lepus-rpc-error"], "rejected");
                assert_eq!(body["payload"]["error"], "moderators only");
                assert_eq!(body["payload"]["kind"], "rejected");
                assert_eq!(body["metadata"]["className"], "LepusRpcError");
            }
            Some("GetUserEnemies") => {
                assert_eq!(reply["headers"]["x-lepus-rpc-error"], "unknown-type");
                let error = body["payload"]["error"].as_str().unwrap_or("");
                assert!(error.contains("GetUserEnemies"), "{error}");
            }
            other => panic!("reply to an unexpected request {other:?}: {reply}"),
        }
    }
    assert_eq!(users, (1..=count).collect::<BTreeSet<_>>());
    assert_eq!(by_metadata, count / 5, "PHP-style addressing answered too");
    assert_eq!(stats.requests, count + 2);
    assert_eq!(stats.replied, count);
    assert_eq!(stats.remote_errors, 2);
    assert_eq!(stats.unroutable_replies + stats.reply_failures, 0);
}

/// Our client, in `mode`, against the running pika server: concurrent calls of one type, then
/// a gather of three types (an envelope reply, a bare reply, an error reply).
async fn call_pika_server<T: lepus::ReplyTransport + 'static>(
    t: &Arc<T>,
    exchange: &str,
    mode: ReplyMode,
) -> usize {
    let client = RpcClient::with_config(
        Arc::clone(t),
        RpcClientConfig::new(exchange).reply_mode(mode),
    )
    .await
    .unwrap();

    let requests: Vec<GetUserFriends> =
        (1..=20).map(|user_id| GetUserFriends { user_id }).collect();
    let replies = client.gather_all(&requests, TIMEOUT).await;
    for (request, reply) in requests.iter().zip(replies) {
        assert_eq!(
            reply.unwrap_or_else(|e| panic!("{mode:?} user {}: {e}", request.user_id)),
            friends_of(request.user_id)
        );
    }

    let (friends, fib, ban) = client
        .gather(
            (
                &GetUserFriends { user_id: 99 },
                &Fib { n: 30 },
                &BanUser { user_id: 13 },
            ),
            TIMEOUT,
        )
        .await;
    assert_eq!(friends.unwrap(), friends_of(99));
    assert_eq!(fib.unwrap(), 832_040, "tutorial 6's bare reply");
    match ban {
        Err(RpcError::Remote { kind, message }) => {
            assert_eq!(kind, RemoteErrorKind::Rejected);
            assert_eq!(message, "moderators only");
        }
        other => panic!("{mode:?}: expected the pika server's error, got {other:?}"),
    }

    let counters = client.counters();
    assert_eq!(counters.in_flight, 0, "{mode:?}");
    assert_eq!(counters.dropped(), 0, "{mode:?}: {counters:?}");
    requests.len() + 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_calls_a_pika_server() {
    let test = "our_client_calls_a_pika_server";
    if !pika_available(test) {
        return;
    }
    let t = Arc::new(broker!(test));
    let queue = amqp_support::unique("interop.rpc-pika-server");
    let exchange = format!("{queue}.x");
    t.declare_exchange(&exchange).await.unwrap();
    let server = Script::python(
        "pika_rpc_server.py",
        &[
            amqp_url(),
            exchange.clone(),
            queue.clone(),
            "#".into(),
            "60".into(),
        ],
    );
    let ready = server.next_line(Duration::from_secs(20));
    if ready.as_deref() != Some(r#"{"ready": true}"#) {
        let done = server.kill();
        panic!("pika server not ready: {ready:?}, stderr: {}", done.stderr);
    }

    let calls = tokio::time::timeout(Duration::from_secs(60), async {
        let direct = call_pika_server(&t, &exchange, ReplyMode::DirectReplyTo).await;
        let exclusive = call_pika_server(&t, &exchange, ReplyMode::ExclusiveQueue).await;
        (direct, exclusive)
    })
    .await
    .expect("calls finish in time");

    let done = server.kill();
    t.delete_queue(&queue).await.unwrap();
    t.delete_exchange(&exchange).await.unwrap();

    // What the pika server saw: every request with standard RPC properties.
    let requests: Vec<Value> = done
        .lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON line per request"))
        .collect();
    assert_eq!(requests.len(), calls.0 + calls.1, "stderr: {}", done.stderr);
    let (direct, exclusive) = requests.split_at(calls.0);
    for (seen, reply_prefix) in [(direct, "amq.rabbitmq.reply-to."), (exclusive, "amq.gen-")] {
        let mut ids = BTreeSet::new();
        for request in seen {
            let class = request["className"].as_str().expect("className");
            assert_eq!(request["type"], class);
            assert_eq!(request["content_type"], CONTENT_TYPE_JSON);
            let reply_to = request["reply_to"].as_str().expect("reply_to");
            assert!(reply_to.starts_with(reply_prefix), "{reply_to}");
            let id = request["correlation_id"].as_str().expect("correlation_id");
            assert!(parse_correlation_id(id).is_some(), "{id}");
            assert_eq!(request["metadata"]["correlationId"], id);
            assert!(ids.insert(id.to_owned()), "correlation ids are unique");
        }
    }
}
