//! Connecting: a clear error when the broker is unreachable or is not an AMQP broker; closing
//! is final.

use crate::amqp_support;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use amqp_support::{cleanup, unique};
use lepus::{
    AmqpConfig, AmqpTransport, ErrorKind, Properties, Publication, QueueSpec, RpcClient, RpcError,
    Transport,
};

#[tokio::test]
async fn unreachable_broker_is_a_clear_error() {
    let config = AmqpConfig::new("amqp://guest:secret@127.0.0.1:1/%2f");
    let err = AmqpTransport::connect(config).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::ConnectionFailed);
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(text.contains("AMQP_ADDR"), "{text}");
    assert!(!text.contains("secret"), "password leaked: {text}");
}

/// Without the `rustls` feature an `amqps://` address, even one of several, is refused before
/// anything is connected, and the error names the feature (the TLS tests themselves, in
/// `tls.rs`, run with it).
#[cfg(not(feature = "rustls"))]
#[tokio::test]
async fn amqps_without_rustls_names_the_feature() {
    let config = AmqpConfig::new("amqp://127.0.0.1:1/%2f,amqps://guest:secret@127.0.0.1:1/%2f");
    let err = AmqpTransport::connect(config).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::FeatureDisabled { feature: "rustls" });
    let text = err.to_string();
    assert!(text.contains("`rustls` feature"), "{text}");
    assert!(!text.contains("secret"), "password leaked: {text}");
}

/// What a local stand-in server does with each connection it accepts.
#[derive(Clone, Copy)]
enum Stranger {
    /// Reads the request (lapin's protocol header) and answers an HTTP 400, then closes.
    Http,
    /// Sends bytes that are no AMQP frame, then stays until the client leaves.
    Garbage,
    /// Answers lapin's protocol header with AMQP 1.0's, as a broker that speaks only 1.0 does.
    Amqp10,
    /// Closes the connection at once.
    Hangup,
    /// Says nothing and stays until the client leaves.
    Silent,
}

const HTTP_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
    Content-Length: 11\r\nConnection: close\r\n\r\nBad Request";

/// Fixed pseudo-random bytes (xorshift, fixed seed): the same garbage on every run. Its first
/// byte, 0x19, is no AMQP frame type, so the parser rejects it at once.
fn garbage() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..64)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Starts `kind` on 127.0.0.1 and returns its port.
async fn stranger(kind: Stranger) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(kind, socket));
        }
    });
    port
}

async fn serve(kind: Stranger, mut socket: TcpStream) {
    let mut buf = [0u8; 512];
    match kind {
        Stranger::Http => {
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(HTTP_400).await;
            let _ = socket.shutdown().await;
        }
        Stranger::Garbage => {
            let _ = socket.write_all(&garbage()).await;
            while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
        }
        Stranger::Amqp10 => {
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"AMQP\x00\x01\x00\x00").await;
            let _ = socket.shutdown().await;
        }
        Stranger::Hangup => drop(socket),
        Stranger::Silent => while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {},
    }
}

/// Connects to `kind` with a short connect timeout; the attempt must end well within 10 s.
async fn connect_to(kind: Stranger) -> (String, lepus::Error) {
    let port = stranger(kind).await;
    // A password, to check that it stays hidden.
    let mut config = AmqpConfig::new(format!("amqp://guest:secret@127.0.0.1:{port}/%2f"));
    config.connect_timeout = Duration::from_millis(500);
    let outcome = tokio::time::timeout(Duration::from_secs(10), AmqpTransport::connect(config))
        .await
        .expect("connecting ends by the connect timeout");
    (
        format!("127.0.0.1:{port}"),
        outcome.expect_err("not a broker"),
    )
}

/// The text a person sees: names the address, hides the password, points at `AMQP_ADDR`, and
/// shows nothing of lapin's parser.
fn assert_plain_words(shown: &str, err: &lepus::Error) -> String {
    let text = err.to_string();
    assert!(text.contains(shown), "names the address: {text}");
    assert!(text.contains("AMQP_ADDR"), "says how to fix it: {text}");
    assert!(!text.contains("secret"), "password leaked: {text}");
    for parser in ["ParserErrors", "Nom", "Parsing Error", "failed to parse"] {
        assert!(
            !text.contains(parser),
            "parser text `{parser}` shown: {text}"
        );
    }
    text
}

#[tokio::test]
async fn an_http_server_is_not_an_amqp_broker() {
    let (shown, err) = connect_to(Stranger::Http).await;
    let text = assert_plain_words(&shown, &err);
    assert!(text.contains("did not answer as an AMQP broker"), "{text}");
    assert_eq!(err.kind(), ErrorKind::WrongProtocol, "{text}");
    assert!(!err.is_retryable(), "{text}");
    assert!(err.is_connection_error(), "{text}");
}

#[tokio::test]
async fn a_server_sending_garbage_is_not_an_amqp_broker() {
    let (shown, err) = connect_to(Stranger::Garbage).await;
    let text = assert_plain_words(&shown, &err);
    assert!(text.contains("did not answer as an AMQP broker"), "{text}");
    assert_eq!(err.kind(), ErrorKind::WrongProtocol, "{text}");
    assert!(!err.is_retryable(), "{text}");
}

#[tokio::test]
async fn an_amqp_1_0_broker_is_not_an_amqp_0_9_1_broker() {
    let (shown, err) = connect_to(Stranger::Amqp10).await;
    let text = assert_plain_words(&shown, &err);
    assert!(text.contains("it speaks AMQP 1.0.0"), "{text}");
    assert_eq!(err.kind(), ErrorKind::WrongProtocol, "{text}");
    assert!(!err.is_retryable(), "{text}");
}

#[tokio::test]
async fn a_server_that_hangs_up_at_once_is_a_clear_error() {
    let (shown, err) = connect_to(Stranger::Hangup).await;
    let text = assert_plain_words(&shown, &err);
    assert!(text.contains("closed the connection"), "{text}");
    // A proxy with no broker behind it does this too: trying again later may work.
    assert_eq!(err.kind(), ErrorKind::ConnectionFailed, "{text}");
    assert!(err.is_retryable(), "{text}");
}

#[tokio::test]
async fn a_server_that_never_answers_ends_by_the_connect_timeout() {
    let started = std::time::Instant::now();
    let (shown, err) = connect_to(Stranger::Silent).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by connect_timeout"
    );
    let text = assert_plain_words(&shown, &err);
    assert!(text.contains("no answer"), "{text}");
    assert!(text.contains("500ms"), "says how long it waited: {text}");
    assert_eq!(err.kind(), ErrorKind::ConnectionFailed, "{text}");
    assert!(err.is_retryable(), "{text}");
}

#[tokio::test]
async fn connects_from_amqp_addr() {
    let t = broker!("connects_from_amqp_addr");
    assert!(t.is_connected());
    t.close().await.unwrap();
}

/// After `close`, nothing that still holds the transport connects again: its subscription
/// ends with `Closed`, an RPC client (whose reply task would otherwise open a new reply path)
/// and a publish fail with `Closed`, and the transport reports no reconnection. A program can
/// therefore close, then end its runtime, without a connection being opened meanwhile (lapin's
/// connecting thread panics when the runtime goes away under it).
#[tokio::test]
async fn close_is_final() {
    let t = Arc::new(broker!("close_is_final"));
    let admin = broker!("close_is_final_admin");
    let spec = QueueSpec::new(unique("close"), unique("close-x")).bind("close.#");
    admin.declare_exchange(&spec.exchange).await.unwrap();
    admin.declare_queue(&spec).await.unwrap();
    let mut subscription = t.consume(&spec.name, 10).await.unwrap();
    let client = RpcClient::new(Arc::clone(&t), spec.exchange.clone())
        .await
        .unwrap();
    assert!(client.is_reply_path_up());

    t.close().await.unwrap();

    let next = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("the subscription does not wait for a reconnection");
    match next {
        Some(Err(e)) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
        other => panic!("the subscription ends with Closed, got {other:?}"),
    }
    let call = client.start_json("CloseProbe", "close.probe", b"{}", Duration::from_secs(2));
    let call = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call does not wait for a reconnection");
    match call {
        Err(RpcError::Closed) => {}
        Err(RpcError::Transport(e)) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
        Err(e) => panic!("the call fails as closed, got {e}"),
        Ok(_) => panic!("a request was sent on a closed transport"),
    }
    let properties = Properties::default();
    let publish = t.publish(Publication::new(
        &spec.exchange,
        "close.x",
        b"{}",
        &properties,
    ));
    let err = publish.await.expect_err("nothing is sent after close");
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(!err.is_retryable());

    // Give the client's reply task time to try (it used to reconnect at once).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.reconnections(), 0, "nothing connected again after close");
    assert!(!t.is_connected());
    t.close().await.expect("closing twice is not an error");
    drop(client);
    cleanup(&admin, &spec).await;
    admin.close().await.unwrap();
}

/// A program that stops a consumer and then closes its transport: the consumer's channel,
/// dropped just before, was still closing inside lapin when `connection.close` started, and
/// the close failed ("invalid channel state: Closing (channel.close)") or, now and then, never
/// completed (a worker process hung after SIGTERM). Each of 20 rounds consumes with
/// cancels the consumer, drops the subscription and closes: every close succeeds, promptly.
#[tokio::test]
async fn close_right_after_dropping_a_subscription_is_clean() {
    let admin = broker!("close_after_drop_admin");
    let spec = QueueSpec::new(unique("close-drop"), unique("close-drop-x")).bind("drop.#");
    admin.declare_exchange(&spec.exchange).await.unwrap();
    admin.declare_queue(&spec).await.unwrap();
    let properties = Properties::default();
    for _ in 0..20 {
        admin
            .publish(Publication::new(
                &spec.exchange,
                "drop.x",
                b"{}",
                &properties,
            ))
            .await
            .unwrap();
    }
    for round in 0..20 {
        let t = broker!("close_after_drop");
        let mut subscription = t.consume(&spec.name, 10).await.unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("a delivery")
            .expect("not ended")
            .expect("not an error");
        delivery.ack().await.unwrap();
        subscription.cancel().await.unwrap();
        drop(subscription);
        let closed = tokio::time::timeout(Duration::from_secs(5), t.close())
            .await
            .unwrap_or_else(|_| panic!("round {round}: close hung"));
        closed.unwrap_or_else(|e| panic!("round {round}: close failed: {e}"));
    }
    cleanup(&admin, &spec).await;
    admin.close().await.unwrap();
}

/// A list of addresses (a cluster's nodes): a dead port and a node that accepts TCP but never
/// answers (a frozen, SIGSTOPped node) are each given up after the connect timeout, and the
/// connection lands on the live broker, which the transport reports.
#[tokio::test]
async fn several_addresses_fall_over_to_a_live_one() {
    let Some(probe) = amqp_support::connect("several_addresses_fall_over_to_a_live_one").await
    else {
        return;
    };
    let live = probe.config().addr.clone();
    probe.close().await.unwrap();
    let frozen = stranger(Stranger::Silent).await;
    let addr = format!(
        "amqp://guest:secret@127.0.0.1:1/%2f, amqp://guest:secret@127.0.0.1:{frozen}/%2f ,{live}"
    );
    let config = AmqpConfig::new(addr).connect_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let t = AmqpTransport::connect(config)
        .await
        .expect("the live address");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(t.node(), lepus::amqp::redact(&live));
    t.declare_exchange(&unique("failover-x")).await.unwrap();
    t.close().await.unwrap();

    // No address answers: the error names each one, passwords hidden.
    let dead =
        format!("amqp://guest:secret@127.0.0.1:1/%2f,amqp://guest:secret@127.0.0.1:{frozen}/%2f");
    let config = AmqpConfig::new(dead).connect_timeout(Duration::from_millis(300));
    let err = AmqpTransport::connect(config)
        .await
        .expect_err("none answers");
    assert_eq!(err.kind(), ErrorKind::ConnectionFailed);
    let text = err.to_string();
    assert!(text.contains("none of the 2 broker addresses"), "{text}");
    assert!(
        text.contains("127.0.0.1:1") && text.contains(&frozen.to_string()),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
}

/// The address of `addr` moved to `127.0.0.1:port` (credentials and virtual host kept), and
/// the `host:port` it named.
fn moved_to(addr: &str, port: u16) -> (String, String) {
    let (scheme, rest) = addr.split_once("://").expect("an amqp:// address");
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h.to_owned()),
        None => (String::new(), authority.to_owned()),
    };
    let hostport = if hostport.contains(':') {
        hostport
    } else {
        format!("{hostport}:5672")
    };
    (
        format!("{scheme}://{userinfo}127.0.0.1:{port}{path}"),
        hostport,
    )
}

/// Celery's retry on start-up: the broker appears 1.5 s after the program started connecting
/// (a TCP proxy to RabbitMQ starts listening on the port only then); with a start-up timeout
/// the first connection is retried with backoff and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_at_start_waits_for_a_broker_that_appears_later() {
    let probe = broker!("connecting_at_start_waits_for_a_broker_that_appears_later");
    let upstream_addr = probe.config().addr.clone();
    probe.close().await.unwrap();
    let port = {
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        free.local_addr().unwrap().port()
    };
    let (addr, upstream) = moved_to(&upstream_addr, port);
    let proxy = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut broker) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                }
            });
        }
    });
    let started = std::time::Instant::now();
    let broker = lepus::connect_to_within(Some(&addr), Duration::from_secs(20))
        .await
        .expect("connected once the broker appeared");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1_400), "{waited:?}");
    assert!(
        waited < Duration::from_secs(10),
        "backoff is bounded: {waited:?}"
    );
    assert!(broker.is_connected());
    let x = unique("startup-x");
    broker.declare_exchange(&x).await.unwrap();
    broker.delete_exchange(&x).await.unwrap();
    broker.close().await.unwrap();
    proxy.abort();
}

/// Without a broker, a start-up timeout bounds the retries and the error says so; the default
/// (zero) fails at the first refusal.
#[tokio::test]
async fn startup_timeout_bounds_the_retries() {
    let port = {
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        free.local_addr().unwrap().port()
    };
    let addr = format!("amqp://127.0.0.1:{port}/%2f");
    let started = std::time::Instant::now();
    let err =
        AmqpTransport::connect(AmqpConfig::new(&addr).startup_timeout(Duration::from_secs(1)))
            .await
            .err()
            .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700), "retried: {took:?}");
    assert!(took < Duration::from_secs(3), "bounded: {took:?}");
    assert_eq!(err.kind(), ErrorKind::ConnectionFailed);
    assert!(err.to_string().contains("start-up timeout"), "{err}");
    let started = std::time::Instant::now();
    let err = AmqpTransport::connect(AmqpConfig::new(&addr))
        .await
        .err()
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(!err.to_string().contains("start-up timeout"), "{err}");
}
