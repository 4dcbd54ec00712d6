//! The `traces` example (OpenTelemetry, stdout exporter) on the in-process broker: every
//! step and every exported span is in the one trace of the web request, and the spans the
//! issue asks for are there (publish, process with a parent, the RPC request).

use std::process::Command;

#[test]
fn every_exported_span_is_in_the_web_requests_trace() {
    let output = Command::new(env!("CARGO_BIN_EXE_traces"))
        .env_remove("AMQP_ADDR")
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let last = stdout
        .lines()
        .rfind(|l| l.starts_with("trace "))
        .expect("the summary line");
    assert!(
        last.ends_with("2 handled, 1 retried, 1 dead-lettered, 1 RPC replies"),
        "{last}"
    );
    let trace_id = last["trace ".len()..].split(':').next().unwrap_or("");
    assert_eq!(trace_id.len(), 32, "{last}");
    let exported: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("TraceId      : "))
        .collect();
    // 4 publishes (charge, poison, receipt, quote), 5 deliveries, the RPC request span.
    assert!(exported.len() >= 10, "{stdout}");
    assert!(exported.iter().all(|t| *t == trace_id), "{stdout}");
    let steps = stdout
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(" trace "));
    for step in steps {
        assert!(step.contains(trace_id), "{step}");
    }
    for name in [
        "publish observe",
        "process observe.tasks",
        "process observe.quotes",
        "Quote",
    ] {
        let line = format!("Name         : {name}");
        assert!(stdout.contains(&line), "{name}: {stdout}");
    }
    assert!(stdout.contains("messaging.rabbitmq.destination.routing_key"));
    assert!(stdout.contains("messaging.message.conversation_id"));
}
