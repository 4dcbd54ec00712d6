//! End to end: the firmware producer's frames, with corrupt frames mixed in, piped through
//! the gateway into RabbitMQ and handled by a `Worker`. Needs RabbitMQ at `AMQP_ADDR`
//! (skipped loudly when unreachable; failed under `CI=true` or `LEPUS_REQUIRE_BROKER=1`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lepus::core::decode_json_raw;
use lepus::core::retry::Strategy;
use lepus::{AmqpTransport, Context, QueueSpec, Registry, Transport, Worker, WorkerConfig};
use lepus_examples::firmware::{sample, SensorReading};

async fn broker(test: &str) -> Option<AmqpTransport> {
    lepus::testing::connect(test).await
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_through_gateway_to_worker() {
    let Some(t) = broker("producer_through_gateway_to_worker").await else {
        return;
    };
    let t = Arc::new(t);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("lepus-test-fw-{}-{nanos:x}", std::process::id());
    let (exchange, queue, probe) = (format!("{name}.x"), name.clone(), format!("{name}.probe"));

    // A worker that records readings, and a probe queue to look at the JSON envelopes.
    let seen: Arc<Mutex<Vec<(SensorReading, u32)>>> = Arc::default();
    let mut registry = Registry::new();
    let log = Arc::clone(&seen);
    registry.register(move |r: SensorReading, ctx: Context| {
        let log = Arc::clone(&log);
        async move {
            if let Ok(mut log) = log.lock() {
                log.push((r, ctx.attempt));
            }
            Ok(())
        }
    });
    let worker = Worker::new(
        Arc::clone(&t),
        WorkerConfig::new(&queue, &exchange).bind("sensors.#"),
        registry,
    );
    worker.declare().await.unwrap();
    t.declare_queue(&QueueSpec::new(&probe, &exchange).bind("sensors.#"))
        .await
        .unwrap();
    let handle = worker.start().await.unwrap();

    // Six readings from the device, two corrupt frames and a truncated tail in between.
    let produced = Command::new(env!("CARGO_BIN_EXE_firmware_producer"))
        .arg("6")
        .output()
        .unwrap();
    assert!(produced.status.success());
    let frames: Vec<&[u8]> = produced.stdout.split_inclusive(|&b| b == 0).collect();
    assert_eq!(frames.len(), 6);
    let mut stream = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        stream.extend_from_slice(frame);
        if i == 1 {
            stream.extend_from_slice(b"\xff\x00"); // bad COBS
        }
        if i == 3 {
            stream.extend_from_slice(b"\x05junk\x00"); // valid COBS, not an envelope
        }
    }
    stream.extend_from_slice(b"\x04ab"); // the stream ends inside a frame

    let mut gateway = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--exchange", &exchange, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    gateway.stdin.take().unwrap().write_all(&stream).unwrap();
    let out = gateway.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gateway failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        "frames=9 published=6 corrupt=3 unknown_type=0 unroutable=0"
    );

    // The worker handled all six, first attempt each.
    let until = Instant::now() + Duration::from_secs(15);
    while seen.lock().map(|s| s.len()).unwrap_or(0) < 6 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.succeeded, 6);
    let mut got = seen.lock().unwrap().clone();
    got.sort_by_key(|(r, _)| r.seq);
    let expected: Vec<(SensorReading, u32)> = (0..6)
        .map(|seq| (sample(1 + (seq % 3) as u16, seq), 1))
        .collect();
    assert_eq!(got, expected);

    // The JSON envelope keeps the type, the device's retry policy and routes by type.
    let mut sub = t.consume(&probe, 1).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.routing_key, "sensors.reading");
    assert_eq!(
        d.properties().message_type.as_deref(),
        Some("SensorReading")
    );
    let raw = decode_json_raw(&d.body).unwrap();
    assert_eq!(raw.metadata.class_name, "SensorReading");
    assert_eq!(raw.metadata.retry.strategy, Strategy::Repeat);
    assert_eq!(raw.metadata.retry.limit, Some(3));
    assert_eq!(
        raw.metadata.retry.intervals.as_deref(),
        Some(&[1_000, 5_000][..])
    );
    assert_eq!(raw.payload, br#"{"sensor":1,"millivolts":3000,"seq":0}"#);
    d.ack().await.unwrap();
    drop(sub);

    for q in [
        queue.clone(),
        format!("{queue}.dead"),
        probe.clone(),
        format!("{probe}.dead"),
    ] {
        let _ = t.delete_queue(&q).await;
    }
    let _ = t.delete_exchange(&exchange).await;
}
