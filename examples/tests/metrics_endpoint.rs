//! The `metrics` example's endpoint after a short run on the in-process broker: every metric
//! name the run touches appears in the Prometheus text, and every `lepus_` name there is one
//! that `lepus::metrics` documents.

use std::sync::Arc;

use lepus_examples::observe;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_the_documented_names() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let broker = Arc::new(lepus::InProcessBroker::new());
    let summary = observe::run(broker).await.expect("the work runs");
    assert_eq!((summary.succeeded, summary.retried), (2, 1), "{summary:?}");
    assert_eq!(
        (summary.dead_lettered, summary.replied),
        (1, 1),
        "{summary:?}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(observe::serve_text(listener, move || handle.render()));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    server.abort();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");

    use lepus::metrics::*;
    for name in [
        MESSAGES_RECEIVED,
        MESSAGES_IN_FLIGHT,
        MESSAGES_HANDLED,
        HANDLER_DURATION,
        MESSAGES_RETRIED,
        MESSAGES_DEAD_LETTERED,
        RPC_REPLIES,
        RPC_CLIENT_DURATION,
        MESSAGES_PUBLISHED,
    ] {
        assert!(response.contains(name), "{name} missing:\n{response}");
    }
    assert!(
        response.contains(
            r#"lepus_messages_handled_total{queue="observe.tasks",type="Charge",outcome="error"} 1"#
        ),
        "{response}"
    );
    for line in response.lines().filter(|l| l.starts_with("lepus_")) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let base = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|b| NAMES.contains(b)))
            .unwrap_or(name);
        assert!(NAMES.contains(&base), "undocumented metric {name}");
    }
}
