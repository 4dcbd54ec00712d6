//! The `lepus` binary against the real RabbitMQ at `AMQP_ADDR` (default
//! `amqp://127.0.0.1:5672/%2f`): publish, call (against a real RPC server), tail, dead
//! letters made by a real worker, topology.
//! Skipped loudly when the broker is unreachable, failed under `CI=true` or
//! `LEPUS_REQUIRE_BROKER=1`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lepus::core::decode_json_raw;
use lepus::rpc::{Request, RpcServer, RpcServerConfig};
use lepus::{
    AmqpConfig, AmqpTransport, Context, HandlerError, Message, Publisher, QueueSpec, Registry,
    RetryPolicy, Subscription, Transport, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn addr() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| lepus::DEFAULT_ADDR.to_owned())
}

async fn broker(test: &str) -> Option<AmqpTransport> {
    lepus::testing::connect_with(test, AmqpConfig::new(addr())).await
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("lepus-test-cli-{prefix}-{}-{nanos:x}", std::process::id())
}

fn lepus(exchange: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lepus"))
        .args(["--amqp", &addr(), "--exchange", exchange])
        .args(args)
        .output()
        .expect("run lepus");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "lepus panicked: {stderr}");
    out
}

fn json_of(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

async fn next<S: Subscription>(sub: &mut S) -> lepus::Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10 s")
        .expect("subscription open")
        .expect("delivery")
}

async fn cleanup(t: &AmqpTransport, queue: &str, exchange: &str) {
    let _ = t.delete_queue(queue).await;
    let _ = t.delete_queue(&format!("{queue}.dead")).await;
    let _ = t.delete_queue(&format!("{queue}.wait.100")).await;
    let _ = t.delete_exchange(exchange).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_delivers_the_envelope() {
    let Some(t) = broker("publish_delivers_the_envelope").await else {
        return;
    };
    let (queue, exchange) = (unique("pub"), unique("pub-x"));
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(&QueueSpec::new(&queue, &exchange).bind("sensors.#"))
        .await
        .unwrap();
    let out = lepus(
        &exchange,
        &[
            "--output",
            "json",
            "publish",
            "SensorReading",
            "--key",
            "sensors.kitchen",
            "--json",
            r#"{"sensor": 7, "mv": 3300}"#,
            "--retry-strategy",
            "repeat",
            "--retry-limit",
            "2",
            "--retry-interval",
            "15,30",
        ],
    );
    let doc = json_of(&out);
    let mut sub = t.consume(&queue, 1).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message_id(), doc["message_id"].as_str());
    assert_eq!(d.routing_key, "sensors.kitchen");
    assert_eq!(d.properties.message_type.as_deref(), Some("SensorReading"));
    assert_eq!(
        d.body,
        br#"{"payload":{"sensor": 7, "mv": 3300},"metadata":{"className":"SensorReading","retryStrategy":"repeat","retryLimit":2,"retryCount":0,"retryInterval":[15,30]}}"#
    );
    d.ack().await.unwrap();

    // Unroutable (no queue bound for the key): exit 4. Missing exchange: exit 3.
    let out = lepus(
        &exchange,
        &["publish", "T", "--key", "nobody.here", "--json", "{}"],
    );
    assert_eq!(out.status.code(), Some(4));
    let out = lepus(
        &unique("none"),
        &["publish", "T", "--key", "k", "--json", "{}"],
    );
    assert_eq!(out.status.code(), Some(3));

    // From stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lepus"))
        .args(["--amqp", &addr(), "--exchange", &exchange])
        .args(["publish", "Stdin", "--key", "sensors.stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"[1,2]\n").unwrap();
    assert!(child.wait().unwrap().success());
    let d = next(&mut sub).await;
    assert_eq!(decode_json_raw(&d.body).unwrap().payload, b"[1,2]");
    d.ack().await.unwrap();
    drop(sub);
    cleanup(&t, &queue, &exchange).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_prints_what_flows_without_taking_it() {
    let Some(t) = broker("tail_prints_what_flows_without_taking_it").await else {
        return;
    };
    let (queue, exchange) = (unique("tail"), unique("tail-x"));
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(&QueueSpec::new(&queue, &exchange).bind("orders.#"))
        .await
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lepus"))
        .args([
            "--amqp",
            &addr(),
            "--exchange",
            &exchange,
            "--output",
            "json",
        ])
        .args(["tail", "orders.*", "--count", "1", "--timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the tap is bound.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("tailing exchange"), "{line}");
    let out = lepus(
        &exchange,
        &[
            "publish",
            "OrderPlaced",
            "--key",
            "orders.eu",
            "--json",
            r#"{"id":42}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let doc: Value = serde_json::from_slice(&output.stdout).expect("one json line");
    assert_eq!(doc["type"], "OrderPlaced");
    assert_eq!(doc["routing_key"], "orders.eu");
    assert_eq!(doc["attempt"], 1);
    assert_eq!(doc["payload"]["id"], 42);
    // The worker queue still has its copy.
    let status = t.queue_status(&queue).await.unwrap().unwrap();
    assert_eq!(status.messages, 1);

    // A queue name taps the queue's own bindings (through rabbitmqctl).
    let out = lepus(&exchange, &["tail", &queue, "--timeout", "1s"]);
    match out.status.code() {
        Some(0) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("orders.#"), "{stderr}");
        }
        Some(6) => eprintln!("rabbitmqctl unavailable: tail QUEUE not checked"),
        other => panic!("tail QUEUE exited {other:?}"),
    }
    cleanup(&t, &queue, &exchange).await;
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Charge {
    order: u64,
    note: String,
}

impl Message for Charge {
    const TYPE: &'static str = "LepusCliCharge";
    const ROUTING_KEY: &'static str = "billing.charge";
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::repeat(1, [100])
    }
}

async fn wait_ready(t: &AmqpTransport, queue: &str, n: u32) -> u32 {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let got = t
            .queue_status(queue)
            .await
            .unwrap()
            .map_or(0, |s| s.messages);
        if got >= n || Instant::now() > until {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_list_show_replay_purge() {
    let Some(t) = broker("dead_letters_list_show_replay_purge").await else {
        return;
    };
    let t = Arc::new(t);
    let (queue, exchange) = (unique("dead"), unique("dead-x"));
    let dead = format!("{queue}.dead");
    let mut registry = Registry::new();
    registry.register(|_: Charge, _: Context| async move {
        Err::<(), _>(HandlerError::transient("card processor down"))
    });
    let config = WorkerConfig::new(&queue, &exchange).bind("billing.#");
    let worker = Worker::new(Arc::clone(&t), config, registry);
    worker.declare().await.unwrap();
    let handle = worker.start().await.unwrap();
    let publisher = Publisher::new(Arc::clone(&t), &exchange);
    let mut ids = Vec::new();
    for order in 1..=3 {
        let note = format!("é \"quoted\" {order}");
        ids.push(publisher.send(&Charge { order, note }).await.unwrap());
    }
    // Attempt 1 fails, retry after 100 ms fails, then dead-lettered with retryCount 1.
    assert_eq!(wait_ready(&t, &dead, 3).await, 3);
    handle.shutdown().await.unwrap();

    let list = json_of(&lepus(
        &exchange,
        &["--output", "json", "dead", "list", &queue],
    ));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    for entry in list {
        assert_eq!(entry["type"], "LepusCliCharge");
        assert_eq!(entry["attempts"], 2);
        assert_eq!(entry["retry_count"], 1);
        assert_eq!(entry["origin_exchange"], exchange.as_str());
        assert_eq!(entry["origin_routing_key"], "billing.charge");
        assert!(entry["error"]
            .as_str()
            .unwrap()
            .contains("card processor down"));
        assert!(!entry["reason"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        wait_ready(&t, &dead, 3).await,
        3,
        "listing takes nothing away"
    );
    let text = lepus(&exchange, &["dead", "list", &dead]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&ids[0]));

    let show = json_of(&lepus(
        &exchange,
        &["--output", "json", "dead", "show", &queue, &ids[1]],
    ));
    assert_eq!(show["message_id"], ids[1].as_str());
    assert_eq!(show["payload"]["order"], 2);
    assert_eq!(show["headers"]["x-lepus-origin-queue"], queue.as_str());
    assert_eq!(
        lepus(&exchange, &["dead", "show", &queue, "no-such-id"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        lepus(&exchange, &["dead", "list", &unique("missing")])
            .status
            .code(),
        Some(3)
    );

    // Replay one: back in the origin queue, retryCount 0, payload bytes identical.
    let mut browse = t.consume(&dead, 10).await.unwrap();
    let mut original = None;
    for _ in 0..3 {
        let d = next(&mut browse).await;
        if d.message_id() == Some(ids[1].as_str()) {
            original = Some(d.body.clone());
        }
    }
    browse.cancel().await.unwrap();
    drop(browse);
    let original = original.unwrap();
    let replay = json_of(&lepus(
        &exchange,
        &[
            "--output", "json", "dead", "replay", &queue, "--id", &ids[1],
        ],
    ));
    assert_eq!(replay["replayed"], 1);
    assert_eq!(wait_ready(&t, &queue, 1).await, 1);
    let mut sub = t.consume(&queue, 1).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message_id(), Some(ids[1].as_str()));
    assert_eq!(d.routing_key, "billing.charge");
    assert!(!d
        .properties
        .headers
        .keys()
        .any(|k| k.starts_with("x-lepus-")));
    let before = decode_json_raw(&original).unwrap();
    let after = decode_json_raw(&d.body).unwrap();
    assert_eq!(before.metadata.retry.count, 1);
    assert_eq!(after.metadata.retry.count, 0);
    assert_eq!(after.payload, before.payload, "payload bytes identical");
    assert_eq!(after.metadata.class_name, "LepusCliCharge");
    d.ack().await.unwrap();
    drop(sub);
    assert_eq!(wait_ready(&t, &dead, 2).await, 2);

    // A type filter that matches nothing replays nothing and leaves both in place.
    let none = json_of(&lepus(
        &exchange,
        &[
            "--output", "json", "dead", "replay", &queue, "--all", "--type", "Other",
        ],
    ));
    assert_eq!(none["replayed"], 0);
    assert_eq!(wait_ready(&t, &dead, 2).await, 2);

    let purge = json_of(&lepus(
        &exchange,
        &["--output", "json", "dead", "purge", &queue],
    ));
    assert_eq!(purge["purged"], 2);
    assert_eq!(t.queue_status(&dead).await.unwrap().unwrap().messages, 0);

    // Topology shows the queue, its binding, dead-letter and wait queues.
    let out = lepus(&exchange, &["--output", "json", "topology"]);
    if out.status.code() == Some(6) {
        eprintln!("rabbitmqctl unavailable: topology not checked");
    } else {
        let topo = json_of(&out);
        assert_eq!(topo["exchange"]["type"], "topic");
        let q = &topo["queues"][0];
        assert_eq!(q["name"], queue.as_str());
        assert_eq!(q["bindings"][0], "billing.#");
        assert_eq!(q["dead_letter"]["name"], dead.as_str());
        assert_eq!(q["wait"][0]["delay_ms"], 100);
    }
    cleanup(&t, &queue, &exchange).await;
}

/// `lepus` run off the runtime's threads, so an RPC server in this process keeps answering.
async fn lepus_call(exchange: &str, args: &[&str]) -> (Output, Duration) {
    let exchange = exchange.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut all = vec!["call"];
        all.extend(args.iter().map(String::as_str));
        let out = lepus(&exchange, &all);
        (out, started.elapsed())
    })
    .await
    .expect("lepus ran")
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[derive(Debug, Serialize, Deserialize, Message, Request)]
#[lepus(type = "LepusCliGetAds", routing_key = "ads.get", reply = Ads, reply_type = "LepusCliAds")]
struct GetAds {
    user: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ads {
    user: u64,
    ids: Vec<u64>,
}

#[tokio::test(flavor = "multi_thread")]
async fn call_prints_the_reply_or_the_remote_error() {
    let Some(t) = broker("call_prints_the_reply_or_the_remote_error").await else {
        return;
    };
    let t = Arc::new(t);
    let (queue, exchange) = (unique("call"), unique("call-x"));
    let config = RpcServerConfig::new(&queue, &exchange)
        .bind("ads.#")
        .shutdown_timeout(Duration::from_secs(1));
    let server = RpcServer::new(Arc::clone(&t), config)
        .with(|r: GetAds, _| async move {
            if r.user == 0 {
                return Err(HandlerError::rejected("no ads for user 0"));
            }
            Ok(Ads {
                user: r.user,
                ids: vec![r.user * 10, r.user * 10 + 1],
            })
        })
        .start()
        .await
        .unwrap();
    let call = |json: &'static str| ["LepusCliGetAds", "--key", "ads.get", "--json", json];

    // Text: the reply's payload, pretty.
    let (out, _) = lepus_call(&exchange, &call(r#"{"user": 7}"#)).await;
    let reply = json_of(&out);
    assert_eq!(reply["user"], 7);
    assert_eq!(reply["ids"], serde_json::json!([70, 71]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\n  \"ids\": ["),
        "pretty printed: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // JSON for scripts, replies through an exclusive queue this time.
    let mut args = vec!["--output", "json", "--reply-queue", "--timeout", "10s"];
    args.extend(call(r#"{"user": 3}"#));
    let (out, wall) = lepus_call(&exchange, &args).await;
    let doc = json_of(&out);
    assert_eq!(doc["type"], "LepusCliGetAds");
    assert_eq!(doc["reply"]["ids"], serde_json::json!([30, 31]));
    let cid = doc["correlation_id"].as_str().unwrap();
    assert!(
        cid.len() == 32 && cid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cid}"
    );
    let elapsed_ms = doc["elapsed_ms"].as_f64().unwrap();
    assert!(
        elapsed_ms > 0.0 && elapsed_ms < wall.as_secs_f64() * 1000.0,
        "{elapsed_ms} ms"
    );

    // The payload from stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lepus"))
        .args(["--amqp", &addr(), "--exchange", &exchange])
        .args(["call", "LepusCliGetAds", "--key", "ads.get"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"user\": 5}\n")
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(json_of(&out)["ids"], serde_json::json!([50, 51]));

    // The handler's error: exit 9, the server's message on stderr; its kind in JSON.
    let (out, _) = lepus_call(&exchange, &call(r#"{"user": 0}"#)).await;
    assert_eq!(out.status.code(), Some(9), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("no ads for user 0") && stderr.contains("rejected"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout in text mode");
    let mut args = vec!["--output", "json"];
    args.extend(call(r#"{"user": 0}"#));
    let (out, _) = lepus_call(&exchange, &args).await;
    assert_eq!(out.status.code(), Some(9));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(doc["error"]["kind"], "rejected");
    assert_eq!(doc["error"]["message"], "no ads for user 0");
    assert!(doc["reply"].is_null());

    // A type the server has no handler for is a remote error too.
    let (out, _) = lepus_call(
        &exchange,
        &["LepusCliNoSuchType", "--key", "ads.get", "--json", "{}"],
    )
    .await;
    assert_eq!(out.status.code(), Some(9));
    assert!(
        stderr_of(&out).contains("unknown-type"),
        "{}",
        stderr_of(&out)
    );

    let stats = server.shutdown().await;
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.replied, 3);
    assert_eq!(stats.remote_errors, 3);
    cleanup(&t, &queue, &exchange).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn call_times_out_or_fails_before_sending() {
    let Some(t) = broker("call_times_out_or_fails_before_sending").await else {
        return;
    };
    let (queue, exchange) = (unique("call-silent"), unique("call-silent-x"));
    // A queue nobody consumes: requests are routed, never answered.
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(&QueueSpec::new(&queue, &exchange).bind("silent.#"))
        .await
        .unwrap();
    let silent = ["T", "--key", "silent.x", "--json", "{}"];

    let mut args = vec!["--timeout", "500ms"];
    args.extend(silent);
    let (out, wall) = lepus_call(&exchange, &args).await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("no reply to T within 500ms"),
        "{}",
        stderr_of(&out)
    );
    assert!(
        wall >= Duration::from_millis(500) && wall < Duration::from_secs(5),
        "{wall:?}"
    );
    let mut args = vec!["--output", "json", "--timeout", "300ms"];
    args.extend(silent);
    let (out, _) = lepus_call(&exchange, &args).await;
    assert_eq!(out.status.code(), Some(8));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(doc["error"]["kind"], "timeout");
    assert!(doc["elapsed_ms"].as_f64().unwrap() >= 300.0, "{doc}");
    assert_eq!(
        wait_ready(&t, &queue, 2).await,
        2,
        "both requests were sent"
    );

    // No queue bound for the key: exit 4 at once, not a timeout.
    let (out, wall) = lepus_call(
        &exchange,
        &[
            "T",
            "--key",
            "nobody.here",
            "--json",
            "{}",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    assert!(wall < Duration::from_secs(10), "{wall:?}");
    assert!(
        stderr_of(&out).contains("no queue is bound for key \"nobody.here\""),
        "{}",
        stderr_of(&out)
    );

    // Malformed JSON: exit 1, nothing sent. A missing exchange: exit 3.
    let (out, _) = lepus_call(
        &exchange,
        &["T", "--key", "silent.x", "--json", "{user: 1}"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("not valid JSON"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(t.queue_status(&queue).await.unwrap().unwrap().messages, 2);
    let (out, _) = lepus_call(&unique("none"), &silent).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    cleanup(&t, &queue, &exchange).await;
}
