//! The rule "no handler runs again sooner than its policy says", over every way a
//! follow-up can fail: the retry copy or the dead letter, refused as invalid or failing for a
//! passing reason. A transport wrapper around the in-process broker injects the failure; each
//! row says how often the handler may run, how far apart, and how the message ends. The
//! gateway and the RPC server dead-letter through the same path: a dead letter that is not
//! confirmed is published again, never the delivery given back to be handled again.

use crate::worker_support;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::gateway::Gateway;
use lepus::{
    ConsumerConfig, Context, Error, ErrorKind, HandlerError, InProcessBroker,
    InProcessSubscription, Message, NameKind, NameProblem, Properties, Publication, QueueSpec,
    Registry, RetryPolicy, Transport, Worker, HEADER_REASON,
};
use serde::{Deserialize, Serialize};
use worker_support::*;

/// Fails every time; retried once after 200 ms.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flaky {
    reject: bool,
}

impl Message for Flaky {
    const TYPE: &'static str = "LepusTestFlaky";
    const ROUTING_KEY: &'static str = "jobs.flaky";
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::repeat(1, [200])
    }
}

/// What the wrapper does to one kind of follow-up.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Passes every publish through.
    None,
    /// Refuses every publish with this error kind.
    Refuse(ErrorKind),
    /// Fails the first `n` publishes as not confirmed (nacked), then passes.
    FailFirst(u32),
}

impl Fault {
    fn apply(self, calls: &AtomicU32) -> Option<Error> {
        let call = calls.fetch_add(1, Ordering::SeqCst);
        match self {
            Fault::None => None,
            Fault::Refuse(kind) => Some(Error::new(kind)),
            Fault::FailFirst(n) if call < n => Some(Error::new(ErrorKind::Nacked)),
            Fault::FailFirst(_) => None,
        }
    }
}

/// The in-process broker with faults on the retry copies, on the dead letters and on the
/// publishes to the exchange [`FAULTY_EXCHANGE`].
struct Faulty {
    inner: InProcessBroker,
    retry_copy: Fault,
    dead_letter: Fault,
    publish: Fault,
    retry_calls: AtomicU32,
    dead_calls: AtomicU32,
    publish_calls: AtomicU32,
}

/// The exchange whose publishes [`Faulty::publish`] fails.
const FAULTY_EXCHANGE: &str = "site";

impl Faulty {
    fn new(retry_copy: Fault, dead_letter: Fault, publish: Fault) -> Self {
        Faulty {
            inner: InProcessBroker::new(),
            retry_copy,
            dead_letter,
            publish,
            retry_calls: AtomicU32::new(0),
            dead_calls: AtomicU32::new(0),
            publish_calls: AtomicU32::new(0),
        }
    }
}

impl Transport for Faulty {
    type Subscription = InProcessSubscription;

    async fn declare_exchange(&self, exchange: &str) -> lepus::Result<()> {
        self.inner.declare_exchange(exchange).await
    }
    async fn declare_queue(&self, spec: &QueueSpec) -> lepus::Result<()> {
        self.inner.declare_queue(spec).await
    }
    async fn publish(&self, publication: Publication<'_>) -> lepus::Result<()> {
        if publication.exchange == FAULTY_EXCHANGE {
            if let Some(e) = self.publish.apply(&self.publish_calls) {
                return Err(e);
            }
        }
        self.inner.publish(publication).await
    }
    async fn publish_batch(
        &self,
        batch: &[Publication<'_>],
    ) -> lepus::Result<Vec<lepus::Result<()>>> {
        self.inner.publish_batch(batch).await
    }
    async fn publish_delayed(
        &self,
        publication: Publication<'_>,
        delay: lepus::Delay,
    ) -> lepus::Result<()> {
        if let Some(e) = self.retry_copy.apply(&self.retry_calls) {
            return Err(e);
        }
        self.inner.publish_delayed(publication, delay).await
    }
    async fn publish_dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        properties: &Properties,
    ) -> lepus::Result<()> {
        if let Some(e) = self.dead_letter.apply(&self.dead_calls) {
            return Err(e);
        }
        self.inner
            .publish_dead_letter(queue, body, properties)
            .await
    }
    async fn consume(&self, queue: &str, prefetch: u16) -> lepus::Result<InProcessSubscription> {
        self.inner.consume(queue, prefetch).await
    }
    async fn delete_queue(&self, queue: &str) -> lepus::Result<()> {
        self.inner.delete_queue(queue).await
    }
    async fn delete_exchange(&self, exchange: &str) -> lepus::Result<()> {
        self.inner.delete_exchange(exchange).await
    }
}

struct Row {
    what: &'static str,
    /// The handler rejects (dead letter at once) instead of failing transiently.
    reject: bool,
    retry_copy: Fault,
    dead_letter: Fault,
    /// Handler runs allowed in all.
    runs: usize,
    /// The reason on the dead letter (`None`: the queue's own dead-lettering, no headers).
    reason: Option<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_handler_runs_again_sooner_than_its_policy() {
    let too_large = ErrorKind::PayloadTooLarge {
        size: 200 << 20,
        limit: 128 << 20,
    };
    let bad_name = ErrorKind::InvalidName {
        what: NameKind::Queue,
        problem: NameProblem::Empty,
    };
    let rows = [
        Row {
            what: "no fault",
            reject: false,
            retry_copy: Fault::None,
            dead_letter: Fault::None,
            runs: 2,
            reason: Some("retries-exhausted"),
        },
        Row {
            what: "retry copy refused as too large",
            reject: false,
            retry_copy: Fault::Refuse(too_large),
            dead_letter: Fault::None,
            runs: 1,
            reason: Some("follow-up-refused"),
        },
        Row {
            what: "retry copy refused for an invalid name",
            reject: false,
            retry_copy: Fault::Refuse(bad_name),
            dead_letter: Fault::None,
            runs: 1,
            reason: Some("follow-up-refused"),
        },
        Row {
            what: "retry copy not confirmed twice",
            reject: false,
            retry_copy: Fault::FailFirst(2),
            dead_letter: Fault::None,
            runs: 2,
            reason: Some("retries-exhausted"),
        },
        Row {
            what: "dead letter not confirmed twice",
            reject: true,
            retry_copy: Fault::None,
            dead_letter: Fault::FailFirst(2),
            runs: 1,
            reason: Some("rejected"),
        },
        Row {
            what: "dead letter refused as too large",
            reject: true,
            retry_copy: Fault::None,
            dead_letter: Fault::Refuse(too_large),
            runs: 1,
            reason: None,
        },
        Row {
            what: "retry copy refused, then its dead letter not confirmed",
            reject: false,
            retry_copy: Fault::Refuse(too_large),
            dead_letter: Fault::FailFirst(1),
            runs: 1,
            reason: Some("follow-up-refused"),
        },
    ];
    for (i, row) in rows.iter().enumerate() {
        let t = Arc::new(Faulty::new(row.retry_copy, row.dead_letter, Fault::None));
        let runs: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let seen = Arc::clone(&runs);
        let registry = Registry::new().with(move |m: Flaky, _ctx: Context| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(Instant::now());
                if m.reject {
                    Err(HandlerError::rejected("never"))
                } else {
                    Err(HandlerError::transient("later"))
                }
            }
        });
        let name = format!("follow-ups-{i}");
        let worker = Worker::new(Arc::clone(&t), config(&name), registry);
        let spec = worker.queue_spec();
        let handle = worker.start().await.unwrap();
        let body = format!(
            r#"{{"payload":{{"reject":{}}},"metadata":{{"className":"LepusTestFlaky"}}}}"#,
            row.reject
        );
        publish_raw(
            &t.inner,
            &spec.exchange,
            body.as_bytes(),
            &Properties::default(),
        )
        .await;
        let dead = dead_letters(&t.inner, &spec.name, 1, 5_000).await;
        // Anything that would run the handler again sooner would do so within this wait.
        tokio::time::sleep(Duration::from_millis(300)).await;
        handle.shutdown().await.unwrap();
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs.len(), row.runs, "{}: handler runs", row.what);
        for pair in runs.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(200),
                "{}: ran again after {:?}, sooner than the 200 ms its policy says",
                row.what,
                pair[1] - pair[0]
            );
        }
        assert_eq!(dead.len(), 1, "{}: one dead letter", row.what);
        assert_eq!(
            header_str(&dead[0], HEADER_REASON),
            row.reason,
            "{}",
            row.what
        );
    }
}

/// A corrupt frame whose dead letter is not confirmed at first: the gateway publishes the dead
/// letter again (one delivery of the frame, its reason kept), where it used to requeue the frame
/// and read it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_publishes_an_unconfirmed_dead_letter_again() {
    let t = Arc::new(Faulty::new(Fault::None, Fault::FailFirst(2), Fault::None));
    t.declare_exchange("site").await.unwrap();
    let frames = QueueSpec::new("gateway-dead-frames", "devices").bind("frames.#");
    let gateway = Gateway::new(Arc::clone(&t), "site");
    let handle = gateway
        .start(frames.clone(), ConsumerConfig::default())
        .await
        .unwrap();
    let corrupt = [3u8, 1, 2, 0];
    t.publish(Publication::new(
        "devices",
        "frames.x",
        &corrupt,
        &Properties::default(),
    ))
    .await
    .unwrap();
    let dead = dead_letters(&t.inner, &frames.name, 1, 5_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(header_str(&dead[0], HEADER_REASON), Some("malformed"));
    assert_eq!(
        t.dead_calls.load(Ordering::SeqCst),
        3,
        "two failures, then confirmed"
    );
    assert_eq!(stats.frames, 1, "the frame was read once: {stats:?}");
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");
}

/// A reading a device sends through the gateway in the test below.
#[derive(Debug, Clone, Serialize, Deserialize, lepus::Message)]
#[lepus(type = "LepusTestGatewayReading", routing_key = "sensors.reading")]
struct Reading {
    millivolts: u32,
}

/// A frame whose JSON envelope the broker does not confirm three times (a nack, as during a
/// failover): the gateway publishes the envelope again with backoff while the frame stays
/// unacked. It used to give the frame back each time; on a quorum queue each return counts
/// as a delivery, and in the cluster's node-kill scenario thousands of good frames ended in
/// `<queue>.dead` as `delivery-limit`. Here the frames queue allows 2 deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_publishes_an_unconfirmed_envelope_again_without_giving_the_frame_back() {
    use lepus::core::envelope::{encode_postcard_cobs, Envelope, Metadata};
    let t = Arc::new(Faulty::new(Fault::None, Fault::None, Fault::FailFirst(3)));
    t.declare_exchange(FAULTY_EXCHANGE).await.unwrap();
    let readings = QueueSpec::new("gateway-again-readings", FAULTY_EXCHANGE).bind("sensors.#");
    t.declare_queue(&readings).await.unwrap();
    let frames = QueueSpec::new("gateway-again-frames", "devices")
        .bind("frames.#")
        .delivery_limit(2);
    let mut gateway = Gateway::new(Arc::clone(&t), FAULTY_EXCHANGE);
    gateway.register::<Reading>();
    let handle = gateway
        .start(frames.clone(), ConsumerConfig::default())
        .await
        .unwrap();
    let envelope = Envelope {
        payload: Reading { millivolts: 3300 },
        metadata: Metadata::new("LepusTestGatewayReading"),
    };
    let mut buf = [0u8; 64];
    let n = encode_postcard_cobs(&envelope, &mut buf).unwrap();
    t.inner
        .publish(Publication::new(
            "devices",
            "frames.x",
            &buf[..n],
            &Properties::default(),
        ))
        .await
        .unwrap();
    let mut sub = t.inner.consume(&readings.name, 10).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the reading is published within 5 s")
        .expect("not ended")
        .expect("no error");
    let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(body["payload"]["millivolts"], 3300);
    // Anything given back would be read (and published or dead-lettered) again in this wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(
        t.publish_calls.load(Ordering::SeqCst),
        4,
        "three nacks, then confirmed"
    );
    assert_eq!(stats.frames, 1, "the frame was read once: {stats:?}");
    assert_eq!(stats.published, 1, "{stats:?}");
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    let dead = drain(&t.inner, &format!("{}.dead", frames.name), 200).await;
    assert_eq!(dead, 0, "no dead letter");
}

/// A request for the RPC server, refused as oversized in the test below.
#[derive(Debug, Clone, Serialize, Deserialize, lepus::Message, lepus::Request)]
#[lepus(type = "LepusTestDeadAgain", routing_key = "rpc.dead-again", reply = String)]
struct DeadAgain {
    text: String,
}

/// An oversized request whose dead letter is not confirmed at first: the RPC server publishes
/// the dead letter again, with its reason, where it used to reject the request (the queue's
/// own dead-lettering then moved it without the `x-lepus-*` headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_server_publishes_an_unconfirmed_dead_letter_again() {
    use lepus::rpc::{RpcServer, RpcServerConfig};
    let t = Arc::new(Faulty::new(Fault::None, Fault::FailFirst(1), Fault::None));
    let config = RpcServerConfig::new("rpc-dead-again", "rpc-dead-again.x")
        .bind("rpc.#")
        .max_body(256);
    let server = RpcServer::new(Arc::clone(&t), config)
        .with(|req: DeadAgain, _ctx| async move { Ok(req.text) })
        .start()
        .await
        .unwrap();
    let body = format!(
        r#"{{"payload":{{"text":"{}"}},"metadata":{{"className":"LepusTestDeadAgain"}}}}"#,
        "x".repeat(1024)
    );
    t.publish(Publication::new(
        "rpc-dead-again.x",
        "rpc.dead-again",
        body.as_bytes(),
        &Properties::default(),
    ))
    .await
    .unwrap();
    let dead = dead_letters(&t.inner, "rpc-dead-again", 1, 5_000).await;
    let stats = server.shutdown().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header_str(&dead[0], HEADER_REASON),
        Some("oversized"),
        "the dead letter has its reason"
    );
    assert_eq!(
        t.dead_calls.load(Ordering::SeqCst),
        2,
        "one failure, then confirmed"
    );
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");
}
