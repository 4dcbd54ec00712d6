//! The `lepus` binary against the real RabbitMQ at `AMQP_ADDR` (unset: skipped): publish, call (against a real RPC server), tail, dead
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
use serde_json::{json, Value};

fn addr() -> String {
    // Unset: an empty address, whose connection error skips (or fails when required).
    std::env::var("AMQP_ADDR").unwrap_or_default()
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
            "--priority",
            "7",
        ],
    );
    let doc = json_of(&out);
    assert_eq!(doc["priority"], 7);
    let mut sub = t.consume(&queue, 1).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message_id(), doc["message_id"].as_str());
    assert_eq!(d.routing_key, "sensors.kitchen");
    assert_eq!(
        d.properties().message_type.as_deref(),
        Some("SensorReading")
    );
    assert_eq!(d.properties().priority, Some(7));
    assert_eq!(
        d.body,
        br#"{"payload":{"sensor": 7, "mv": 3300},"metadata":{"className":"SensorReading","retryStrategy":"repeat","retryLimit":2,"retryCount":0,"retryInterval":[15,30]}}"#
    );
    d.ack().await.unwrap();

    // Delayed by 700 ms on the delay levels: not there before, then the same envelope.
    let started = Instant::now();
    let delayed = json_of(&lepus(
        &exchange,
        &[
            "--output",
            "json",
            "publish",
            "Later",
            "--key",
            "sensors.later",
            "--json",
            "{}",
            "--delay",
            "700ms",
        ],
    ));
    assert_eq!(delayed["delay_ms"], 700);
    let d = next(&mut sub).await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "not before its time"
    );
    assert_eq!(d.message_id(), delayed["message_id"].as_str());
    assert_eq!(
        d.body,
        br#"{"payload":{},"metadata":{"className":"Later","retryCount":0}}"#
    );
    d.ack().await.unwrap();
    // `--at` a time that has passed: routed at once, without the levels.
    let past = json_of(&lepus(
        &exchange,
        &[
            "--output",
            "json",
            "publish",
            "Past",
            "--key",
            "sensors.past",
            "--json",
            "{}",
            "--at",
            "2020-01-01T00:00:00+01:00",
        ],
    ));
    assert_eq!(past["delay_ms"], 0);
    let d = next(&mut sub).await;
    assert_eq!(d.routing_key, "sensors.past");
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

/// Whether the firehose tracer of vhost `/` is on (through the management API).
fn tracing_on() -> bool {
    let out = Command::new("curl")
        .args([
            "-fsS",
            "-u",
            "guest:guest",
            "http://127.0.0.1:15672/api/vhosts/%2F",
        ])
        .output()
        .expect("curl");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("vhost json");
    doc["tracing"] == true
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_watches_retries_without_changing_routing() {
    let Some(t) = broker("tail_watches_retries_without_changing_routing").await else {
        return;
    };
    let t = Arc::new(t);
    let (queue, exchange) = (unique("tail-fh"), unique("tail-fh-x"));
    let mut registry = Registry::new();
    registry.register(|_: Charge, _: Context| async move {
        Err::<(), _>(HandlerError::transient("card processor down"))
    });
    let worker = Worker::new(
        Arc::clone(&t),
        WorkerConfig::new(&queue, &exchange).bind("billing.#"),
        registry,
    );
    worker.declare().await.unwrap();
    let handle = worker.start().await.unwrap();
    // A broad pattern: every key of the exchange.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lepus"))
        .args([
            "--amqp",
            &addr(),
            "--exchange",
            &exchange,
            "--output",
            "json",
        ])
        .args(["tail", "#", "--count", "4", "--timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("tailing exchange") && line.contains("firehose"),
        "{line}"
    );
    assert!(tracing_on());
    // While it runs, a key nobody binds stays unroutable, and a call to a missing server
    // fails at once instead of waiting for its timeout.
    let out = lepus(
        &exchange,
        &["publish", "T", "--key", "nobody.here", "--json", "{}"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    let (out, wall) = lepus_call(
        &exchange,
        &[
            "T",
            "--key",
            "nobody.rpc",
            "--json",
            "{}",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    assert!(wall < Duration::from_secs(10), "{wall:?}");
    // A task that fails once is seen twice: its first attempt and its retry, with the due time.
    let id = Publisher::new(Arc::clone(&t), &exchange)
        .send(&Charge {
            order: 9,
            note: "tail".into(),
        })
        .await
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success());
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a json line"))
        .collect();
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(
        (&events[0]["routing_key"], &events[0]["routed"]),
        (&"nobody.here".into(), &false.into())
    );
    assert_eq!(events[1]["routing_key"], "nobody.rpc");
    assert_eq!(events[1]["routed"], false);
    let (first, retry) = (&events[2], &events[3]);
    assert_eq!(first["event"], "published");
    assert_eq!(first["type"], "LepusCliCharge");
    assert_eq!(first["message_id"], id.as_str());
    assert_eq!(
        (&first["attempt"], &first["routed"]),
        (&1.into(), &true.into())
    );
    assert_eq!(retry["event"], "retry");
    assert_eq!(retry["message_id"], id.as_str());
    assert_eq!(retry["routing_key"], "billing.charge");
    assert_eq!(retry["attempt"], 2);
    assert_eq!(retry["delay_ms"], 100);
    assert!(retry["due_at"].is_string());
    handle.shutdown().await.unwrap();
    // The last tail to end turns the tracer it turned on off again (other tests' tails may
    // still run for a moment).
    let until = Instant::now() + Duration::from_secs(30);
    while tracing_on() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!tracing_on(), "the firehose was left on");

    // The tap says what it does to routing.
    let out = lepus(&exchange, &["tail", "#", "--via", "tap", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("NOTE: while the tap runs"),
        "{}",
        stderr_of(&out)
    );
    cleanup(&t, &queue, &exchange).await;
}

/// A running `lepus console` and its base URL.
struct Console {
    child: std::process::Child,
    base: String,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn console(exchange: &str, extra: &[&str]) -> Console {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lepus"))
        .args(["--amqp", &addr(), "--exchange", exchange])
        .args(["console", "--bind", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let base = line
        .strip_prefix("console at ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"))
        .trim_end_matches('/')
        .to_owned();
    Console { child, base }
}

/// One HTTP call: status and body.
fn http(method: &str, url: &str, auth: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let header = auth.map(|a| {
        use base64_free::encode;
        format!("Basic {}", encode(a))
    });
    let result = match method {
        "POST" => {
            let mut r = agent.post(url);
            if let Some(h) = &header {
                r = r.header("Authorization", h);
            }
            r.send_empty()
        }
        _ => {
            let mut r = agent.get(url);
            if let Some(h) = &header {
                r = r.header("Authorization", h);
            }
            r.call()
        }
    };
    let mut response = result.expect("an HTTP answer");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, body)
}

/// Base64 for a basic-auth header (tests only).
mod base64_free {
    pub fn encode(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk.len();
            let v = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= n {
                    out.push(char::from(T[((v >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn console_shows_queues_workers_dead_letters_and_replays() {
    let Some(t) = broker("console_shows_queues_workers_dead_letters_and_replays").await else {
        return;
    };
    let t = Arc::new(t);
    let (queue, exchange) = (unique("console"), unique("console-x"));
    let dead = format!("{queue}.dead");
    let events = lepus::events::Events::start(
        Arc::clone(&t),
        lepus::events::EventsConfig::default().heartbeat(Duration::from_millis(300)),
    );
    let mut registry = Registry::new();
    registry.register(|_: Charge, _: Context| async move {
        Err::<(), _>(HandlerError::transient("card processor down"))
    });
    let worker = Worker::new(
        Arc::clone(&t),
        WorkerConfig::new(&queue, &exchange)
            .bind("billing.#")
            .events(events.clone()),
        registry,
    );
    worker.declare().await.unwrap();
    let rw = console(&exchange, &["--allow-writes", "--auth", "ops:s3cret"]);
    let ro = console(&exchange, &[]);
    let handle = worker.start().await.unwrap();
    let id = Publisher::new(Arc::clone(&t), &exchange)
        .send(&Charge {
            order: 77,
            note: "console".into(),
        })
        .await
        .unwrap();
    assert_eq!(wait_ready(&t, &dead, 1).await, 1);
    let auth = Some("ops:s3cret");
    let (base, ro_base) = (rw.base.clone(), ro.base.clone());
    let checks = tokio::task::spawn_blocking(move || {
        // Basic auth, then the page itself.
        assert_eq!(http("GET", &format!("{base}/"), None).0, 401);
        assert_eq!(http("GET", &format!("{base}/"), Some("ops:wrong")).0, 401);
        let (status, page) = http("GET", &format!("{base}/"), auth);
        assert_eq!(status, 200);
        assert!(page.contains("<title>lepus console</title>"));
        // The state: the queue (from the management API), the worker alive from its events,
        // the type's failures and retries.
        let until = Instant::now() + Duration::from_secs(20);
        let state = loop {
            let (status, body) = http("GET", &format!("{base}/api/state"), auth);
            assert_eq!(status, 200, "{body}");
            let state: Value = serde_json::from_str(&body).unwrap();
            let ready = state["events"]["workers"].as_array().is_some_and(|w| {
                w.iter()
                    .any(|w| w["queue"] == queue.as_str() && w["alive"] == true)
            }) && state["events"]["types"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|t| t["type"] == "LepusCliCharge" && t["dead_per_min"] == 1)
            });
            if ready || Instant::now() > until {
                break state;
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        assert_eq!(state["allow_writes"], true);
        assert_eq!(
            state["topology"]["queues"][0]["name"],
            queue.as_str(),
            "{state}"
        );
        assert_eq!(
            state["topology"]["queues"][0]["dead_letter"]["name"],
            dead.as_str()
        );
        let types = state["events"]["types"].as_array().unwrap();
        let charge = types
            .iter()
            .find(|t| t["type"] == "LepusCliCharge")
            .expect("{state}");
        assert_eq!(charge["failed_per_min"], 2, "{state}");
        assert_eq!(charge["retried_per_min"], 1, "{state}");
        assert!(charge["p99_ms"].is_number());
        // Live updates: the first server-sent event is the state.
        let mut sse = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
        write!(
            sse,
            "GET /api/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\n\r\n",
            base64_free::encode("ops:s3cret")
        )
        .unwrap();
        let mut reader = BufReader::new(sse);
        let mut head = String::new();
        while !head.contains("event: state") {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.contains("text/event-stream"), "{head}");
        assert!(head.contains("event: state"), "{head}");
        // The dead letter, as `lepus dead` shows it.
        let (status, body) = http("GET", &format!("{base}/api/dead?queue={queue}"), auth);
        assert_eq!(status, 200, "{body}");
        let doc: Value = serde_json::from_str(&body).unwrap();
        let d = &doc["dead_letters"][0];
        assert_eq!(d["message_id"], id.as_str());
        assert_eq!(d["reason"], "retries-exhausted");
        assert_eq!(d["attempts"], 2);
        assert_eq!(d["payload"]["order"], 77);
        // A read-only console refuses to replay; a selection is required.
        let (status, _) = http(
            "POST",
            &format!("{ro_base}/api/dead/replay?queue={queue}&id={id}"),
            None,
        );
        assert_eq!(status, 403);
        let (status, _) = http(
            "POST",
            &format!("{base}/api/dead/replay?queue={queue}"),
            auth,
        );
        assert_eq!(status, 400);
        (queue, id)
    })
    .await
    .unwrap();
    let (queue, id) = checks;
    // Replay from the console once the worker is stopped: back in the worker queue.
    handle.shutdown().await.unwrap();
    let base = rw.base.clone();
    let q = queue.clone();
    let (status, body) = tokio::task::spawn_blocking(move || {
        http(
            "POST",
            &format!("{base}/api/dead/replay?queue={q}&reason=retries-exhausted"),
            auth,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["replayed"], 1, "{doc}");
    assert_eq!(wait_ready(&t, &queue, 1).await, 1);
    let mut sub = t.consume(&queue, 1).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message_id(), Some(id.as_str()));
    d.ack().await.unwrap();
    drop(sub);
    drop((rw, ro));
    assert_eq!(events.stats().dropped, 0);
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
        .properties()
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

    // Topology shows the queue, its binding, its dead-letter queue and the delay levels.
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
        assert_eq!(q["wait"], serde_json::json!([]), "no queue per delay");
        assert!(topo["delay_levels"].is_array());
    }
    cleanup(&t, &queue, &exchange).await;
}

/// `lepus` with only `PATH` and the given variables, and `--amqp`.
fn lepus_env(exchange: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lepus"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(["--amqp", &addr(), "--exchange", exchange])
        .args(args);
    let out = command.output().expect("run lepus");
    assert!(!stderr_of(&out).contains("panicked"), "{}", stderr_of(&out));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn topology_reads_the_management_api_and_falls_back_to_rabbitmqctl() {
    let Some(t) = broker("topology_reads_the_management_api_and_falls_back_to_rabbitmqctl").await
    else {
        return;
    };
    let (queue, exchange) = (unique("topo"), unique("topo-x"));
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(&QueueSpec::new(&queue, &exchange).bind("topo.#"))
        .await
        .unwrap();
    // The API at the AMQP address's host, port 15672, guest/guest.
    let doc = json_of(&lepus_env(
        &exchange,
        &[],
        &["--output", "json", "topology"],
    ));
    assert_eq!(doc["source"], "management", "{doc}");
    assert_eq!(doc["exchange"]["type"], "topic");
    assert_eq!(doc["queues"][0]["name"], queue.as_str());
    assert_eq!(doc["queues"][0]["bindings"][0], "topo.#");
    // The API unreachable: rabbitmqctl, when this machine has it, and the output says why.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let out = lepus_env(
        &exchange,
        &[("LEPUS_MANAGEMENT_URL", &closed)],
        &["--output", "json", "topology"],
    );
    match out.status.code() {
        Some(0) => assert_eq!(json_of(&out)["source"], "rabbitmqctl"),
        Some(6) => {
            let stderr = stderr_of(&out);
            assert!(
                stderr.contains("management API") && stderr.contains("unreachable"),
                "{stderr}"
            );
        }
        other => panic!("topology exited {other:?}: {}", stderr_of(&out)),
    }
    // Refused credentials: the same fallback, never a silent empty answer.
    let out = lepus_env(
        &exchange,
        &[("LEPUS_MANAGEMENT_URL", "http://guest:wrong@127.0.0.1:15672")],
        &["topology"],
    );
    if out.status.code() == Some(0) {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("rabbitmqctl (management API: credentials refused"),
            "{text}"
        );
    } else {
        assert_eq!(out.status.code(), Some(6), "{}", stderr_of(&out));
    }
    cleanup(&t, &queue, &exchange).await;
}

/// `lepus topology --output json` until `done` accepts it (the API's figures are sampled
/// every 5 s), at most 20 s.
fn topology_until(exchange: &str, env: &[(&str, &str)], done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let doc = json_of(&lepus_env(exchange, env, &["--output", "json", "topology"]));
        if done(&doc) || Instant::now() > until {
            return doc;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn topology_without_rabbitmqctl_shows_unacked_and_sorted_delay_levels() {
    let Some(t) =
        broker("topology_without_rabbitmqctl_shows_unacked_and_sorted_delay_levels").await
    else {
        return;
    };
    let (queue, exchange) = (unique("topo-u"), unique("topo-u-x"));
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(&QueueSpec::new(&queue, &exchange).bind("topo.#"))
        .await
        .unwrap();
    // A PATH with no rabbitmqctl in it (only the tools a shell needs are not even there).
    let empty = std::env::temp_dir().join(unique("no-rabbitmqctl"));
    std::fs::create_dir_all(&empty).unwrap();
    let path = empty.to_string_lossy().into_owned();
    let no_ctl: [(&str, &str); 1] = [("PATH", &path)];
    // Two messages: one held by a consumer that does not ack (unacked), one ready; and one
    // waiting 10 s on the delay levels (entering at level 13, 8.2 s).
    for n in 0..2 {
        let out = lepus(
            &exchange,
            &[
                "publish",
                "Topo",
                "--key",
                "topo.a",
                "--json",
                &format!("{n}"),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    }
    let out = lepus(
        &exchange,
        &[
            "publish",
            "Topo",
            "--key",
            "topo.later",
            "--json",
            "{}",
            "--delay",
            "10s",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let delayed_at = Instant::now();
    let mut held = t.consume(&queue, 1).await.unwrap();
    let unacked = next(&mut held).await;
    let started = Instant::now();
    let doc = topology_until(&exchange, &no_ctl, |doc| {
        let q = &doc["queues"][0];
        let waiting = doc["delay_levels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["name"] == "lepus.delay.13"));
        // The management API updates each figure on its own (up to 5 s late): wait for all.
        q["unacked"] == 1 && q["messages"] == 1 && q["consumers"] == 1 && waiting
    });
    eprintln!("topology without rabbitmqctl: {:?}", started.elapsed());
    assert_eq!(doc["source"], "management", "{doc}");
    let q = &doc["queues"][0];
    assert_eq!(q["name"], queue.as_str());
    assert_eq!(q["type"], "classic");
    assert_eq!(
        (&q["messages"], &q["unacked"], &q["consumers"]),
        (&1.into(), &1.into(), &1.into()),
        "{doc}"
    );
    assert!(q["rates"]["publish"].is_number(), "{doc}");
    // Levels in order: classic set then quorum set, each by level; each waits 2^level ms.
    let levels = doc["delay_levels"].as_array().unwrap();
    assert!(
        levels.iter().any(|l| l["name"] == "lepus.delay.13"),
        "{doc}"
    );
    let keys: Vec<(String, u64)> = levels
        .iter()
        .map(|l| {
            (
                l["set"].as_str().unwrap().to_owned(),
                l["level"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    for l in levels {
        assert_eq!(
            l["wait_ms"].as_u64(),
            Some(1u64 << l["level"].as_u64().unwrap())
        );
    }
    // Text: unacked shown, the levels with their waits.
    let out = lepus_env(&exchange, &no_ctl, &["topology"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("1 ready, 1 unacked, 1 consumers"), "{text}");
    assert!(
        text.contains("lepus.delay.13") && text.contains("waits"),
        "{text}"
    );
    // The delayed message reaches the queue before it is deleted.
    unacked.ack().await.unwrap();
    drop(held);
    let due = Duration::from_secs(10).saturating_sub(delayed_at.elapsed());
    tokio::time::sleep(due).await;
    assert_eq!(wait_ready(&t, &queue, 2).await, 2);
    let _ = std::fs::remove_dir(&empty);
    cleanup(&t, &queue, &exchange).await;
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_by_row_number_reason_and_type() {
    let Some(t) = broker("dead_letters_by_row_number_reason_and_type").await else {
        return;
    };
    let t = Arc::new(t);
    let (queue, exchange) = (unique("dead-sel"), unique("dead-sel-x"));
    let dead = format!("{queue}.dead");
    let mut registry = Registry::new();
    registry.register(|_: Charge, _: Context| async move {
        Err::<(), _>(HandlerError::transient("card processor down"))
    });
    let worker = Worker::new(
        Arc::clone(&t),
        WorkerConfig::new(&queue, &exchange).bind("billing.#"),
        registry,
    );
    worker.declare().await.unwrap();
    let handle = worker.start().await.unwrap();
    let publisher = Publisher::new(Arc::clone(&t), &exchange);
    // Two that exhaust their retries, one that is no envelope, one of a type nobody handles.
    for order in 1..=2 {
        let note = format!("n{order}");
        publisher.send(&Charge { order, note }).await.unwrap();
    }
    let mut raw = lepus::Properties::new();
    raw.message_id = Some("raw-1".into());
    t.publish(lepus::Publication::new(
        &exchange,
        "billing.raw",
        b"not json",
        &raw,
    ))
    .await
    .unwrap();
    let out = lepus(
        &exchange,
        &[
            "publish",
            "LepusCliOther",
            "--key",
            "billing.other",
            "--json",
            "{}",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(wait_ready(&t, &dead, 4).await, 4);
    handle.shutdown().await.unwrap();

    let list = json_of(&lepus(
        &exchange,
        &["--output", "json", "dead", "list", &queue],
    ));
    let list = list.as_array().unwrap().clone();
    let mut reasons: Vec<&str> = list.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        [
            "malformed",
            "retries-exhausted",
            "retries-exhausted",
            "unknown-type"
        ]
    );
    // `dead show QUEUE N` takes the row number `dead list` printed.
    for entry in &list {
        let row = entry["position"].to_string();
        let shown = json_of(&lepus(
            &exchange,
            &["--output", "json", "dead", "show", &queue, &row],
        ));
        assert_eq!(shown["message_id"], entry["message_id"], "row {row}");
        assert_eq!(shown["reason"], entry["reason"], "row {row}");
    }
    let text = lepus(&exchange, &["dead", "list", &queue]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("   1  "));
    let out = lepus(&exchange, &["dead", "show", &queue, "5"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr_of(&out).contains("no row 5 (4 dead letters)"),
        "{}",
        stderr_of(&out)
    );

    // Replay by reason: the two that exhausted their retries go back, the others stay.
    let replay = json_of(&lepus(
        &exchange,
        &[
            "--output",
            "json",
            "dead",
            "replay",
            &queue,
            "--reason",
            "retries-exhausted",
        ],
    ));
    assert_eq!(replay["replayed"], 2, "{replay}");
    assert_eq!(wait_ready(&t, &queue, 2).await, 2);
    assert_eq!(wait_ready(&t, &dead, 2).await, 2);
    let left = json_of(&lepus(
        &exchange,
        &["--output", "json", "dead", "list", &queue],
    ));
    let mut left: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    left.sort_unstable();
    assert_eq!(left, ["malformed", "unknown-type"]);
    // Type and reason together select nothing here: nothing replayed.
    let none = json_of(&lepus(
        &exchange,
        &[
            "--output",
            "json",
            "dead",
            "replay",
            &queue,
            "--type",
            "LepusCliOther",
            "--reason",
            "malformed",
        ],
    ));
    assert_eq!(none["replayed"], 0);
    // Purge by type, then by reason.
    let purged = json_of(&lepus(
        &exchange,
        &[
            "--output",
            "json",
            "dead",
            "purge",
            &queue,
            "--type",
            "LepusCliOther",
        ],
    ));
    assert_eq!(purged["purged"], 1);
    let left = json_of(&lepus(
        &exchange,
        &["--output", "json", "dead", "list", &queue],
    ));
    assert_eq!(left[0]["message_id"], "raw-1");
    assert_eq!(left.as_array().unwrap().len(), 1);
    let purged = json_of(&lepus(
        &exchange,
        &[
            "--output",
            "json",
            "dead",
            "purge",
            &queue,
            "--reason",
            "malformed",
        ],
    ));
    assert_eq!(purged["purged"], 1);
    assert_eq!(wait_ready(&t, &dead, 0).await, 0);
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

#[tokio::test(flavor = "multi_thread")]
async fn schedule_publishes_ticks_until_sigterm() {
    let Some(t) = broker("schedule_publishes_ticks_until_sigterm").await else {
        return;
    };
    let (queue, exchange, name) = (unique("sq"), unique("sx"), unique("sched"));
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(&QueueSpec::new(queue.clone(), exchange.clone()).bind("cli.tick"))
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
        .args([
            "schedule",
            "CliTick",
            "--key",
            "cli.tick",
            "--json",
            r#"{"n":1}"#,
        ])
        .args(["--every", "1s", "--schedule", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lepus schedule");
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    let out = loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break child.wait_with_output().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "exits on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let doc = json_of(&out);
    let published = doc["ticks_published"].as_u64().unwrap();
    assert!((2..=4).contains(&published), "{doc}");
    let mut sub = t.consume(&queue, 10).await.unwrap();
    let mut ticks = Vec::new();
    for _ in 0..published {
        let d = next(&mut sub).await;
        assert_eq!(d.properties().message_type.as_deref(), Some("CliTick"));
        let id = d.message_id().unwrap().to_owned();
        assert!(id.starts_with(&format!("{name}:task:")), "{id}");
        ticks.push(id.rsplit(':').next().unwrap().parse::<u64>().unwrap());
        let raw = decode_json_raw(&d.body).unwrap();
        assert_eq!(raw.payload, br#"{"n":1}"#);
        d.ack().await.unwrap();
    }
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "{ticks:?}");
    }
    drop(sub);
    t.delete_queue(&format!("lepus.schedule.{name}"))
        .await
        .unwrap();
    cleanup(&t, &queue, &exchange).await;
}

/// Starts the broker's dead-letter workers again when dropped, so that a failed test cannot
/// leave the next ones' delays held.
struct RestartDeadLetterWorkers;

impl Drop for RestartDeadLetterWorkers {
    fn drop(&mut self) {
        let _ = lepus("lepus", &["dead-letter-workers", "--restart"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letter_workers_lost_by_the_broker_are_shown_and_started_again() {
    let Some(t) =
        broker("dead_letter_workers_lost_by_the_broker_are_shown_and_started_again").await
    else {
        return;
    };
    let ctl = Command::new("rabbitmqctl").arg("status").output();
    if !ctl.is_ok_and(|o| o.status.success()) {
        assert!(
            !lepus::testing::broker_required(),
            "rabbitmqctl is needed beside the broker"
        );
        eprintln!("SKIPPED: no rabbitmqctl beside the broker");
        return;
    }
    let (queue, exchange) = (unique("dlxw"), unique("dlxw-x"));
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(
        &QueueSpec::new(&queue, &exchange)
            .kind(lepus::QueueKind::Quorum)
            .bind("dlxw.#"),
    )
    .await
    .unwrap();
    let _restart = RestartDeadLetterWorkers;
    let line_of = |doc: &Value| -> String {
        doc["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|l| l.starts_with(&format!("{queue} leader=")))
            .unwrap_or_default()
            .to_owned()
    };
    let check = || {
        json_of(&lepus(
            &exchange,
            &["--output", "json", "dead-letter-workers"],
        ))
    };

    let before = check();
    assert!(line_of(&before).ends_with("alive=true"), "{before}");
    assert_eq!(before["failures"], 0, "{before}");

    // What RabbitMQ 3.10 does itself when two workers fail within 5 s (#16652).
    let ended = Command::new("rabbitmqctl")
        .args([
            "-q",
            "eval",
            "Ws = [P || {_, P, _, _} <- supervisor:which_children(rabbit_fifo_dlx_sup)], \
             [exit(P, kill) || P <- lists:sublist(Ws, 2)], timer:sleep(500), \
             whereis(rabbit_fifo_dlx_sup).",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ended.stdout).trim(), "undefined");
    let lost = check();
    assert!(line_of(&lost).ends_with("alive=false"), "{lost}");
    assert!(lost["supervisors"].as_u64() >= Some(1), "{lost}");
    let text = lepus(&exchange, &["dead-letter-workers"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("--restart` starts them again"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    let restarted = json_of(&lepus(
        &exchange,
        &["--output", "json", "dead-letter-workers", "--restart"],
    ));
    assert!(restarted["supervisors"].as_u64() >= Some(1), "{restarted}");
    assert!(
        line_of(&restarted).contains(" started: {ok,"),
        "{restarted}"
    );
    assert_eq!(restarted["failures"], 0, "{restarted}");

    let after = check();
    assert!(line_of(&after).ends_with("alive=true"), "{after}");
    assert_eq!(
        (&after["supervisors"], &after["workers"]),
        (&json!(0), &json!(0)),
        "{after}"
    );
    cleanup(&t, &queue, &exchange).await;
}
