//! Interoperability with the talk's own client library, PHP's php-amqplib, in the talk's own
//! shapes (slides 18-27 and 38-43), condensed into one script each:
//! - `php_producer.php`: `MessageQueue` / `AbstractMessage` / `JsonMessageSerializer`
//!   publishing persistent JSON envelopes to a topic exchange, as PHP writes them (numbers
//!   as strings, namespaced class names, `\/`), handled by our `Worker`: typed payloads
//!   through `lepus::serde`, a retry then success, an unknown type dead-lettered;
//! - `php_rpc_client.php`: `RespondingMessageQueue::sendMultiple` of the user page's four
//!   requests (`reply_to` + `correlation_id`) and a `GetUserFriends` answered on its own
//!   `user-friends-<id>_<uniqid>` queue (`metadata.response_queue`), gathered with
//!   `getAsyncResponses`, against our `RpcServer`.
//!
//! Needs `php` with php-amqplib (`apt-get install php-cli php-amqplib`): without it the tests
//! skip loudly, or fail under `CI=true` / `LEPUS_REQUIRE_BROKER=1` (`.ci/run` installs it).
//! Every PHP process is bounded in time and killed at the end.

use crate::amqp_support;
use crate::interop_support;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interop_support::{amqp_url, php_available, Script};
use lepus::rpc::{Request, RpcServer, RpcServerConfig};
use lepus::{
    Context, Delivery, HandlerError, HeaderValue, Message, Registry, Transport, Worker,
    WorkerConfig, CONTENT_TYPE_JSON, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_ORIGIN_ROUTING_KEY,
    HEADER_REASON,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a PHP script may run before it is killed.
const PHP_LIMIT: Duration = Duration::from_secs(30);

/// Runs `php tests/interop/<name> <args>` to its end (killed after [`PHP_LIMIT`]) and returns
/// its stdout lines as JSON; panics with its stderr when it failed.
async fn run_php(name: &'static str, args: Vec<String>) -> Vec<Value> {
    let run = tokio::task::spawn_blocking(move || Script::php(name, &args).wait(PHP_LIMIT))
        .await
        .expect("the php task finishes");
    assert!(
        run.status.is_some_and(|s| s.success()),
        "{name}: {:?} (None: killed after {PHP_LIMIT:?}), stdout: {:?}, stderr: {}",
        run.status,
        run.lines,
        run.stderr
    );
    run.lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
        .collect()
}

fn header<'a>(d: &'a Delivery, key: &str) -> Option<&'a str> {
    d.properties()
        .headers
        .get(key)
        .and_then(HeaderValue::as_str)
}

// --- The producer: our worker handles the talk's messages.

/// Slide 18's message, its payload built from a PDO row: `{"adId":"1","userId":"7",
/// "url":"https:\/\/...","price":"19.99"}` (or `"price":null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[serde(rename_all = "camelCase")]
#[lepus(
    type = "App\\Mail\\SendAdExpiredMail",
    routing_key = "mailer.ad.expired"
)]
struct SendAdExpiredMail {
    #[serde(deserialize_with = "lepus::serde::number_from_str")]
    ad_id: u64,
    #[serde(deserialize_with = "lepus::serde::number_from_str")]
    user_id: u64,
    url: String,
    #[serde(default, deserialize_with = "lepus::serde::option_number_from_str")]
    price: Option<f64>,
}

/// `{"paymentId":"1001","amount":"49.90"}`; its handler fails the first attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[serde(rename_all = "camelCase")]
#[lepus(
    type = "App\\Billing\\ConfirmPayment",
    routing_key = "billing.payment.confirmed"
)]
struct ConfirmPayment {
    #[serde(deserialize_with = "lepus::serde::number_from_str")]
    payment_id: u32,
    #[serde(deserialize_with = "lepus::serde::number_from_str")]
    amount: f64,
}

/// What a handler saw: its message, the attempt, and whether a message id came along.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Mail(SendAdExpiredMail, u32, Option<String>),
    Payment(ConfirmPayment, u32),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_producer_messages_are_handled_by_our_worker() {
    let test = "php_producer_messages_are_handled_by_our_worker";
    if !php_available(test) {
        return;
    }
    let t = Arc::new(broker!(test));
    let name = amqp_support::unique("interop.php-producer");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (mails, payments) = (Arc::clone(&seen), Arc::clone(&seen));
    let registry = Registry::new()
        .with(move |mail: SendAdExpiredMail, ctx: Context| {
            let log = Arc::clone(&mails);
            async move {
                assert_eq!(ctx.message_type, "App\\Mail\\SendAdExpiredMail");
                log.lock()
                    .unwrap()
                    .push(Seen::Mail(mail, ctx.attempt, ctx.message_id));
                Ok(())
            }
        })
        .with(move |payment: ConfirmPayment, ctx: Context| {
            let log = Arc::clone(&payments);
            async move {
                log.lock()
                    .unwrap()
                    .push(Seen::Payment(payment, ctx.attempt));
                if ctx.attempt == 1 {
                    return Err(HandlerError::transient("payment gateway timed out"));
                }
                Ok(())
            }
        });
    // The payment's retryInterval [0.2] (seconds) waits 200 ms on the delay levels.
    let config = WorkerConfig::new(name.clone(), format!("{name}.x"))
        .bind("mailer.#")
        .bind("billing.#")
        .bind("stats.#");
    let worker = Worker::new(Arc::clone(&t), config, registry);
    let spec = worker.queue_spec();
    let handle = worker.start().await.unwrap();

    let published = run_php("php_producer.php", vec![amqp_url(), spec.exchange.clone()]).await;
    assert_eq!(published.len(), 7, "{published:#?}");
    let body_of = |class: &str| -> Vec<u8> {
        let line = published
            .iter()
            .find(|l| l["className"] == class)
            .unwrap_or_else(|| panic!("{class} published"));
        line["body"].as_str().unwrap().as_bytes().to_vec()
    };
    let unknown_body = body_of("App\\Stats\\RecordAdView");
    // The bytes are PHP's: an escaped slash and an escaped namespace separator.
    let mail_body = String::from_utf8(body_of("App\\Mail\\SendAdExpiredMail")).unwrap();
    assert!(mail_body.contains(r#""adId":"1","userId":"7","url":"https:\/\/example.com"#));
    assert!(mail_body.contains(r#""className":"App\\Mail\\SendAdExpiredMail""#));

    let mut dead_queue = t.consume(&format!("{name}.dead"), 10).await.unwrap();
    let dead = tokio::time::timeout(Duration::from_secs(10), dead_queue.next())
        .await
        .expect("the unknown type is dead-lettered")
        .expect("a delivery")
        .unwrap();
    dead.ack().await.unwrap();
    let _ = dead_queue.cancel().await;
    for _ in 0..250 {
        if seen.lock().unwrap().len() >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = handle.shutdown().await.unwrap();
    amqp_support::cleanup(&t, &spec).await;

    // Five mails, each once, decoded from numeric strings and null.
    let seen = seen.lock().unwrap().clone();
    let mut mails: Vec<_> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Mail(mail, attempt, message_id) => Some((mail.clone(), *attempt, message_id)),
            Seen::Payment(..) => None,
        })
        .collect();
    mails.sort_by_key(|(m, _, _)| m.ad_id);
    let expected = [
        (1, 7, Some(19.99)),
        (2, 7, None),
        (3, 8, Some(5.0)),
        (4, 9, None),
        (5, 4_294_967_296, Some(0.5)),
    ];
    assert_eq!(mails.len(), expected.len(), "{seen:#?}");
    for ((mail, attempt, message_id), (ad_id, user_id, price)) in mails.iter().zip(expected) {
        let want = SendAdExpiredMail {
            ad_id,
            user_id,
            url: format!("https://example.com/ad/{ad_id}"),
            price,
        };
        assert_eq!(*mail, want);
        assert_eq!(*attempt, 1);
        assert!(message_id.is_none(), "php-amqplib sent no message_id");
    }

    // The payment: failed once, retried after 0.2 s, then handled.
    let payments: Vec<_> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Payment(payment, attempt) => Some((payment.clone(), *attempt)),
            Seen::Mail(..) => None,
        })
        .collect();
    let payment = ConfirmPayment {
        payment_id: 1001,
        amount: 49.90,
    };
    assert_eq!(payments, [(payment.clone(), 1), (payment, 2)]);

    // The unknown type: dead-lettered untouched, with the reason.
    assert_eq!(dead.body, unknown_body, "PHP's bytes, unchanged");
    assert_eq!(header(&dead, HEADER_REASON), Some("unknown-type"));
    assert_eq!(
        header(&dead, HEADER_ERROR),
        Some("no handler for type `App\\Stats\\RecordAdView`")
    );
    assert_eq!(
        dead.properties()
            .headers
            .get(HEADER_ATTEMPTS)
            .and_then(HeaderValue::as_i64),
        Some(1)
    );
    assert_eq!(
        header(&dead, HEADER_ORIGIN_ROUTING_KEY),
        Some("stats.ad.viewed")
    );

    assert_eq!(stats.received, 8, "{stats:?}");
    assert_eq!(stats.succeeded, 6, "{stats:?}");
    assert_eq!(stats.retried, 1, "{stats:?}");
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");
    assert_eq!(
        stats.requeued + stats.panicked + stats.acks_lost,
        0,
        "{stats:?}"
    );
}

// --- The RPC client: our server answers the talk's user page.

// The four requests of slide 43 carry `{"userId":"7"}`.

#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[serde(rename_all = "camelCase")]
#[lepus(type = "App\\Rpc\\GetActiveAds", routing_key = "rpc.ads.active")]
#[lepus(reply = Ads, reply_type = "App\\Rpc\\ActiveAds")]
struct GetActiveAds {
    #[serde(deserialize_with = "lepus::serde::number_from_str")]
    user_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[serde(rename_all = "camelCase")]
#[lepus(type = "App\\Rpc\\GetObservedAds", routing_key = "rpc.ads.observed")]
#[lepus(reply = Ads, reply_type = "App\\Rpc\\ObservedAds")]
struct GetObservedAds {
    #[serde(deserialize_with = "lepus::serde::number_from_str")]
    user_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[serde(rename_all = "camelCase")]
#[lepus(
    type = "App\\Rpc\\GetRecommendations",
    routing_key = "rpc.ads.recommended"
)]
#[lepus(reply = Ads, reply_type = "App\\Rpc\\Recommendations")]
struct GetRecommendations {
    #[serde(deserialize_with = "lepus::serde::number_from_str")]
    user_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[serde(rename_all = "camelCase")]
#[lepus(type = "App\\Rpc\\GetMessages", routing_key = "rpc.messages.unread")]
#[lepus(reply = UnreadMessages, reply_type = "App\\Rpc\\UnreadMessages")]
struct GetMessages {
    #[serde(deserialize_with = "lepus::serde::number_from_str")]
    user_id: u64,
}

/// Slide 41's request: `{"user_id":"7"}`, its reply queue in the envelope's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(type = "App\\Rpc\\GetUserFriends", routing_key = "rpc.users.friends")]
#[lepus(reply = UserFriends, reply_type = "App\\Rpc\\UserFriends")]
struct GetUserFriends {
    #[serde(deserialize_with = "lepus::serde::number_from_str")]
    user_id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ads {
    user_id: u64,
    ads: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnreadMessages {
    user_id: u64,
    unread: u32,
    latest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserFriends {
    user_id: u64,
    friends: Vec<u64>,
}

/// Each service's answer for `user_id`, by the reply's PHP class.
fn answer(reply_class: &str, user_id: u64) -> Value {
    let ads = |base: u64| Ads {
        user_id,
        ads: vec![base + user_id, base + 2 * user_id],
    };
    let value = match reply_class {
        "App\\Rpc\\ActiveAds" => serde_json::to_value(ads(100)),
        "App\\Rpc\\ObservedAds" => serde_json::to_value(ads(200)),
        "App\\Rpc\\Recommendations" => serde_json::to_value(ads(300)),
        "App\\Rpc\\UnreadMessages" => serde_json::to_value(UnreadMessages {
            user_id,
            unread: 3,
            latest: Some("Is the bike still for sale? / ¿Sigue disponible?".into()),
        }),
        "App\\Rpc\\UserFriends" => serde_json::to_value(UserFriends {
            user_id,
            friends: vec![10 * user_id + 1, 10 * user_id + 2],
        }),
        other => panic!("no answer for {other}"),
    };
    value.unwrap()
}

/// [`answer`] as the handler's reply type.
fn reply<T: serde::de::DeserializeOwned>(reply_class: &str, user_id: u64) -> T {
    serde_json::from_value(answer(reply_class, user_id)).unwrap()
}

/// What the server's handlers saw: request type → (reply address, correlation id).
type Asked = Arc<Mutex<BTreeMap<&'static str, (Option<String>, Option<String>)>>>;

fn note(asked: &Asked, ctx: &Context) {
    let previous = asked.lock().unwrap().insert(
        ctx.message_type,
        (ctx.reply_to.clone(), ctx.correlation_id.clone()),
    );
    assert!(previous.is_none(), "{} asked twice", ctx.message_type);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_rpc_client_gathers_replies_from_our_server() {
    let test = "php_rpc_client_gathers_replies_from_our_server";
    if !php_available(test) {
        return;
    }
    let t = Arc::new(broker!(test));
    let queue = amqp_support::unique("interop.php-rpc");
    let exchange = format!("{queue}.x");
    let asked: Asked = Arc::default();
    let (a, b, c, d, e) = (
        Arc::clone(&asked),
        Arc::clone(&asked),
        Arc::clone(&asked),
        Arc::clone(&asked),
        Arc::clone(&asked),
    );
    let server = RpcServer::new(
        Arc::clone(&t),
        RpcServerConfig::new(queue.clone(), exchange.clone())
            .bind("rpc.#")
            .shutdown_timeout(Duration::from_secs(2)),
    )
    .with(move |r: GetActiveAds, ctx| {
        note(&a, &ctx);
        async move { Ok(reply("App\\Rpc\\ActiveAds", r.user_id)) }
    })
    .with(move |r: GetObservedAds, ctx| {
        note(&b, &ctx);
        async move { Ok(reply("App\\Rpc\\ObservedAds", r.user_id)) }
    })
    .with(move |r: GetRecommendations, ctx| {
        note(&c, &ctx);
        async move {
            // The slowest service answers last.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(reply("App\\Rpc\\Recommendations", r.user_id))
        }
    })
    .with(move |r: GetMessages, ctx| {
        note(&d, &ctx);
        async move { Ok(reply("App\\Rpc\\UnreadMessages", r.user_id)) }
    })
    .with(move |r: GetUserFriends, ctx| {
        note(&e, &ctx);
        async move { Ok(reply("App\\Rpc\\UserFriends", r.user_id)) }
    })
    .start()
    .await
    .unwrap();

    let replies = run_php(
        "php_rpc_client.php",
        vec![amqp_url(), exchange.clone(), "10".into()],
    )
    .await;
    let stats = server.shutdown().await;
    t.delete_queue(&format!("{queue}.dead")).await.unwrap();
    t.delete_queue(&queue).await.unwrap();
    t.delete_exchange(&exchange).await.unwrap();

    assert_eq!(replies.len(), 5, "{replies:#?}");
    let asked = asked.lock().unwrap().clone();
    let mut correlation_ids = BTreeSet::new();
    let mut classes = BTreeSet::new();
    for line in &replies {
        let request = line["request"].as_str().expect("request class");
        let reply_class = line["phpClass"].as_str().expect("reply class");
        // The reply's className became a PHP object of that (namespaced) class.
        assert_eq!(line["type"], reply_class, "{line}");
        assert_eq!(line["contentType"], CONTENT_TYPE_JSON, "{line}");
        assert_eq!(line["metadata"]["className"], reply_class, "{line}");
        assert_eq!(line["payload"], answer(reply_class, 7), "{line}");
        assert!(classes.insert(reply_class.to_owned()), "one reply each");

        let reply_queue = line["replyQueue"].as_str().expect("reply queue");
        assert_eq!(line["replyTo"], reply_queue, "answered where asked: {line}");
        let (reply_to, correlation_id) = &asked[request];
        assert_eq!(reply_to.as_deref(), Some(reply_queue), "{line}");
        if request == "App\\Rpc\\GetUserFriends" {
            // Slide 41: no properties; the queue is the correlation.
            let suffix = reply_queue
                .strip_prefix("user-friends-7_")
                .unwrap_or_else(|| panic!("metadata.response_queue: {reply_queue}"));
            assert!(!suffix.is_empty(), "{reply_queue}");
            assert_eq!(line["correlationId"], Value::Null);
            assert_eq!(line["replyCorrelationId"], Value::Null);
            assert_eq!(*correlation_id, None);
        } else {
            let sent = line["correlationId"].as_str().expect("correlation id sent");
            assert!(reply_queue.starts_with("amq.gen-"), "{reply_queue}");
            assert_eq!(line["replyCorrelationId"], sent, "{line}");
            assert_eq!(line["metadata"]["correlationId"], sent, "{line}");
            assert_eq!(correlation_id.as_deref(), Some(sent));
            assert!(correlation_ids.insert(sent.to_owned()), "{sent} reused");
        }
    }
    assert_eq!(correlation_ids.len(), 4);
    assert_eq!(
        classes,
        [
            "App\\Rpc\\ActiveAds",
            "App\\Rpc\\ObservedAds",
            "App\\Rpc\\Recommendations",
            "App\\Rpc\\UnreadMessages",
            "App\\Rpc\\UserFriends",
        ]
        .map(String::from)
        .into(),
    );
    assert_eq!(stats.requests, 5, "{stats:?}");
    assert_eq!(stats.replied, 5, "{stats:?}");
    assert_eq!(
        stats.remote_errors + stats.no_reply + stats.unroutable_replies + stats.reply_failures,
        0,
        "{stats:?}"
    );
}
