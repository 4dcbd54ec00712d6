//! TLS (`amqps://`, the `rustls` feature) against the TLS node that `tests/tls/tls-up.sh`
//! starts with a throw-away CA: trusting that CA, the work goes through (confirmed publishes,
//! consuming, an RPC round trip); a certificate of another CA, a certificate for another host
//! name, a client certificate of another CA and a server that does not speak TLS are refused
//! with [`ErrorKind::TlsHandshake`] within the connect timeout; bad PEM is
//! [`ErrorKind::InvalidConfig`] before anything is connected.
//!
//! The node's tests skip loudly when `LEPUS_TLS_ADDR` is unset (run
//! `eval "$(tests/tls/tls-up.sh --env)"` first), and fail instead under `LEPUS_REQUIRE_TLS=1`
//! (set by `.ci/run`).

use crate::amqp_support;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amqp_support::{cleanup, next_within, unique};
use lepus::amqp::TlsIdentity;
use lepus::rpc::{RpcClient, RpcServer, RpcServerConfig};
use lepus::{
    AmqpConfig, AmqpTransport, ErrorKind, Message, Properties, Publication, QueueSpec, Request,
    Transport,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The per-address bound on connecting used here: a refusal must come well within it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS node of `tests/tls/tls-up.sh` (its `--env` exports).
struct TlsNode {
    /// `amqps://guest:guest@127.0.0.1:5671/%2f`: the server certificate names 127.0.0.1.
    addr: String,
    /// The same node at 127.0.0.2, a name its certificate does not hold.
    wrong_name_addr: String,
    /// The directory of `ca.pem`, with the client and other-CA certificates beside it.
    certs: PathBuf,
}

impl TlsNode {
    fn cert(&self, file: &str) -> PathBuf {
        self.certs.join(file)
    }

    /// `addr` trusting the node's CA.
    fn config(&self, addr: &str) -> AmqpConfig {
        AmqpConfig::new(addr)
            .connect_timeout(CONNECT_TIMEOUT)
            .tls_ca_file(self.cert("ca.pem"))
            .unwrap()
    }
}

/// True when a missing TLS node must fail the tests (`LEPUS_REQUIRE_TLS=1`, set by `.ci/run`).
fn tls_required() -> bool {
    std::env::var("LEPUS_REQUIRE_TLS").is_ok_and(|v| v == "1")
}

/// The TLS node; `None` after a loud notice when `LEPUS_TLS_ADDR` is unset and the node is
/// not required.
///
/// # Panics
/// When `LEPUS_TLS_ADDR` or `LEPUS_TLS_CA` is unset and `LEPUS_REQUIRE_TLS=1`.
fn tls_node(test: &str) -> Option<TlsNode> {
    let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (Some(addr), Some(ca)) = (var("LEPUS_TLS_ADDR"), var("LEPUS_TLS_CA")) else {
        if tls_required() {
            panic!("{test}: LEPUS_TLS_ADDR or LEPUS_TLS_CA is unset and LEPUS_REQUIRE_TLS=1");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n##########\n## SKIPPED {test}: needs the TLS test node\n\
             ## run `eval \"$(tests/tls/tls-up.sh --env)\"` first (LEPUS_TLS_ADDR, \
             LEPUS_TLS_CA); set LEPUS_REQUIRE_TLS=1 to make this fail\n##########"
        );
        return None;
    };
    let wrong_name_addr = var("LEPUS_TLS_WRONG_NAME_ADDR").unwrap_or_else(|| {
        addr.replacen("127.0.0.1", "127.0.0.2", 1)
            .replacen("localhost", "127.0.0.2", 1)
    });
    let certs = PathBuf::from(ca)
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    Some(TlsNode {
        addr,
        wrong_name_addr,
        certs,
    })
}

/// Connects with `config`, which must fail: the error, after checking that it came within
/// the connect timeout (a refusal, not a hang).
async fn refused(config: AmqpConfig) -> lepus::Error {
    let started = Instant::now();
    let err = AmqpTransport::connect(config)
        .await
        .expect_err("the connection is refused");
    assert!(
        started.elapsed() < CONNECT_TIMEOUT,
        "refused only after {:?}: {err}",
        started.elapsed()
    );
    eprintln!("refused as it should be, in {:?}: {err}", started.elapsed());
    err
}

#[derive(Debug, Clone, Serialize, Deserialize, Message, Request)]
#[lepus(type = "LepusTlsTestShout", routing_key = "rpc.shout", reply = String, reply_type = "LepusTlsTestShouted")]
struct Shout {
    text: String,
}

#[tokio::test]
async fn publish_consume_and_rpc_over_tls() {
    let Some(node) = tls_node("publish_consume_and_rpc_over_tls") else {
        return;
    };
    let t = Arc::new(
        AmqpTransport::connect(node.config(&node.addr))
            .await
            .expect("connects over amqps trusting the test CA"),
    );
    assert!(t.node().starts_with("amqps://"), "{}", t.node());

    // Confirmed publishes, then every one consumed in order.
    let spec = QueueSpec::new(unique("tls"), unique("tls-ex")).bind("#");
    t.declare_exchange(&spec.exchange).await.unwrap();
    t.declare_queue(&spec).await.unwrap();
    let props = Properties::new();
    let bodies: Vec<[u8; 4]> = (0..20u32).map(u32::to_be_bytes).collect();
    let batch: Vec<_> = bodies
        .iter()
        .map(|b| Publication::new(&spec.exchange, "k", b, &props))
        .collect();
    for outcome in t.publish_batch(&batch).await.unwrap() {
        outcome.expect("confirmed by the broker");
    }
    let mut sub = t.consume(&spec.name, 10).await.unwrap();
    for expected in &bodies {
        let d = next_within(&mut sub, 5000).await.expect("a delivery");
        assert_eq!(&d.body[..], expected);
        d.ack().await.unwrap();
    }
    drop(sub);

    // An RPC round trip: request and reply both over the TLS connection.
    let exchange = format!("{}.rpc", spec.exchange);
    let server = RpcServer::new(
        Arc::clone(&t),
        RpcServerConfig::new(format!("{}.rpc", spec.name), &exchange).bind("rpc.#"),
    )
    .with(|r: Shout, _| async move { Ok(r.text.to_uppercase()) })
    .start()
    .await
    .unwrap();
    let client = RpcClient::new(Arc::clone(&t), &exchange).await.unwrap();
    let reply = client
        .call(
            &Shout {
                text: "over tls".into(),
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(reply, "OVER TLS");
    client.close().await;
    server.shutdown().await;
    t.delete_queue(&format!("{}.rpc", spec.name)).await.unwrap();
    t.delete_exchange(&exchange).await.unwrap();
    cleanup(&t, &spec).await;
    t.close().await.unwrap();
}

#[tokio::test]
async fn a_client_certificate_is_presented() {
    let Some(node) = tls_node("a_client_certificate_is_presented") else {
        return;
    };
    // The node checks a client certificate against its CA when one is presented.
    let ours = node
        .config(&node.addr)
        .tls_identity_files(node.cert("client.pem"), node.cert("client.key"))
        .unwrap();
    let t = AmqpTransport::connect(ours)
        .await
        .expect("a client certificate of the node's CA is accepted");
    t.close().await.unwrap();

    // A key that is not the certificate's: refused before anything connects.
    let err = node
        .config(&node.addr)
        .tls_identity_files(node.cert("client.pem"), node.cert("other-client.key"))
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidConfig {
            setting: "tls_identity"
        },
        "{err}"
    );

    // One of another CA is refused: proof that it is sent at all (without one the node lets
    // the client in, see above). Under TLS 1.3 the broker checks it after the client's part
    // of the handshake, and its alert comes either as such (TlsHandshake) or, when the reset
    // of the closed socket overtakes it, as a connection closed during the AMQP handshake.
    let theirs = node
        .config(&node.addr)
        .tls_identity_files(node.cert("other-client.pem"), node.cert("other-client.key"))
        .unwrap();
    let err = refused(theirs).await;
    assert!(err.is_connection_error(), "{err}");
    let text = err.to_string();
    match err.kind() {
        ErrorKind::TlsHandshake => assert!(text.contains("alert"), "{text}"),
        ErrorKind::ConnectionFailed => assert!(text.contains("client certificate"), "{text}"),
        other => panic!("refused as {other:?}: {text}"),
    }
}

#[tokio::test]
async fn a_certificate_of_an_untrusted_ca_is_refused() {
    let Some(node) = tls_node("a_certificate_of_an_untrusted_ca_is_refused") else {
        return;
    };
    // The system's roots alone do not know the test CA; nor does another CA.
    let system_roots_only = AmqpConfig::new(&node.addr).connect_timeout(CONNECT_TIMEOUT);
    let other_ca = AmqpConfig::new(&node.addr)
        .connect_timeout(CONNECT_TIMEOUT)
        .tls_ca_file(node.cert("other-ca.pem"))
        .unwrap();
    for config in [system_roots_only, other_ca] {
        let err = refused(config).await;
        assert_eq!(err.kind(), ErrorKind::TlsHandshake, "{err}");
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains("UnknownIssuer"), "rustls's reason: {text}");
        assert!(text.contains("127.0.0.1:5671"), "names the address: {text}");
        assert!(!text.contains("guest:guest"), "password leaked: {text}");
    }
    // Not retried by the start-up timeout either: it would not pass.
    let started = Instant::now();
    let patient = AmqpConfig::new(&node.addr)
        .connect_timeout(CONNECT_TIMEOUT)
        .startup_timeout(Duration::from_secs(30));
    let err = AmqpTransport::connect(patient).await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::TlsHandshake, "{err}");
    assert!(
        started.elapsed() < CONNECT_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused() {
    let Some(node) = tls_node("a_certificate_for_another_host_name_is_refused") else {
        return;
    };
    let err = refused(node.config(&node.wrong_name_addr)).await;
    assert_eq!(err.kind(), ErrorKind::TlsHandshake, "{err}");
    assert!(
        err.to_string().contains("not valid for name"),
        "rustls's reason: {err}"
    );
}

#[tokio::test]
async fn an_address_list_moves_past_a_refused_handshake() {
    let Some(node) = tls_node("an_address_list_moves_past_a_refused_handshake") else {
        return;
    };
    // Nothing at the first address, a certificate for another name at the second: the third
    // is used, with the same TLS settings.
    let list = format!(
        "amqps://127.0.0.1:1/%2f, {}, {}",
        node.wrong_name_addr, node.addr
    );
    let t = AmqpTransport::connect(node.config(&list)).await.unwrap();
    assert_eq!(t.node(), lepus::amqp::redact(&node.addr));
    t.close().await.unwrap();

    // All handshakes refused: the kind says so, the message names each address.
    let both = format!("{},{}", node.wrong_name_addr, node.wrong_name_addr);
    let err = refused(node.config(&both)).await;
    assert_eq!(err.kind(), ErrorKind::TlsHandshake, "{err}");
    assert!(err.to_string().contains("none of the 2"), "{err}");
}

/// Accepts connections on 127.0.0.1 and answers each with AMQP 0-9-1's protocol header, as a
/// plain (non-TLS) AMQP port does to a TLS client hello; returns the port.
async fn plain_amqp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"AMQP\x00\x00\x09\x01").await;
                let _ = socket.read(&mut buf).await;
            });
        }
    });
    port
}

/// No broker needed: what is wrong is found before or during the handshake.
#[tokio::test]
async fn bad_tls_settings_and_non_tls_servers_are_clear_errors() {
    // Bad PEM: an InvalidConfig error naming the setting, before anything is connected.
    let err = AmqpTransport::connect(AmqpConfig::new("amqps://127.0.0.1:1/%2f").tls_ca_pem("x"))
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidConfig {
            setting: "tls_ca_pem"
        },
        "{err}"
    );
    let identity = TlsIdentity::from_pem("not a certificate", "not a key");
    let err =
        AmqpTransport::connect(AmqpConfig::new("amqps://127.0.0.1:1/%2f").tls_identity(identity))
            .await
            .err()
            .unwrap();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidConfig {
            setting: "tls_identity"
        },
        "{err}"
    );
    let missing = std::env::temp_dir().join(unique("no-such-ca"));
    let err = AmqpConfig::new("amqps://h/%2f")
        .tls_ca_file(&missing)
        .err()
        .unwrap();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidConfig {
            setting: "tls_ca_pem"
        }
    );
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );

    // A server that answers in plain AMQP: the handshake fails at once.
    let port = plain_amqp_port().await;
    let config =
        AmqpConfig::new(format!("amqps://127.0.0.1:{port}/%2f")).connect_timeout(CONNECT_TIMEOUT);
    let err = refused(config).await;
    assert_eq!(err.kind(), ErrorKind::TlsHandshake, "{err}");
}
