//! The `lepus` binary without a broker: routing explanations, usage errors, exit codes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};

fn lepus(args: &[&str]) -> Output {
    lepus_at(None, args)
}

/// Runs `lepus` with `AMQP_ADDR` set to `amqp_addr`, or unset.
fn lepus_at(amqp_addr: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lepus"));
    command.args(args).env_remove("LEPUS_EXCHANGE");
    match amqp_addr {
        Some(addr) => command.env("AMQP_ADDR", addr),
        None => command.env_remove("AMQP_ADDR"),
    };
    let out = command.output().expect("run lepus");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "lepus panicked: {stderr}");
    out
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn route_explains_each_word() {
    let out = lepus(&["route", "mailer.#.expired", "mailer.ad.user.expired"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.contains(r#""mailer.ad.user.expired" matches "mailer.#.expired""#),
        "{text}"
    );
    assert!(
        text.contains(r#"#        ->  "ad.user" (2 words)"#),
        "{text}"
    );
    assert!(text.contains(r#"expired  ->  "expired""#), "{text}");
}

#[test]
fn route_json_and_no_match_exit_code() {
    let out = lepus(&["--output", "json", "route", "a.*.#", "a.b", "x.y"]);
    assert_eq!(code(&out), 7, "a key that does not match exits 7");
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(doc[0]["matches"], true);
    assert_eq!(doc[0]["words"][1]["kind"], "star");
    assert_eq!(doc[0]["words"][1]["matched"], "b");
    assert_eq!(doc[0]["words"][2]["kind"], "hash");
    assert_eq!(doc[0]["words"][2]["key_words"], 0);
    assert_eq!(doc[1]["matches"], false);
    assert!(doc[1]["words"].is_null());
}

#[test]
fn usage_errors_exit_1() {
    for args in [
        &["publish", "T", "--key", "k", "--json", "{bad"][..],
        &["publish", "T", "--json", "{}"][..],
        &[
            "publish",
            "T",
            "--key",
            "k",
            "--json",
            "{}",
            "--retry-strategy",
            "often",
        ][..],
        &[
            "publish",
            "T",
            "--key",
            "k",
            "--json",
            "{}",
            "--retry-interval",
            "a,b",
        ][..],
        &[
            "publish",
            "T",
            "--key",
            "k",
            "--json",
            "{}",
            "--priority",
            "256",
        ][..],
        &["dead", "replay", "q"][..],
        &[
            "publish", "T", "--key", "k", "--json", "{}", "--delay", "soon",
        ][..],
        &[
            "publish", "T", "--key", "k", "--json", "{}", "--delay", "400d",
        ][..],
        &[
            "publish", "T", "--key", "k", "--json", "{}", "--at", "tomorrow",
        ][..],
        &[
            "publish",
            "T",
            "--key",
            "k",
            "--json",
            "{}",
            "--delay",
            "1s",
            "--at",
            "2030-01-01T00:00:00Z",
        ][..],
        &["call", "T", "--key", "k", "--json", "{}", "--timeout", "5x"][..],
        &[
            "call",
            "T",
            "--key",
            "k",
            "--json",
            "{}",
            "--timeout",
            "soon",
        ][..],
        &["call", "T", "--key", "k", "--json", "{}", "--timeout", "0s"][..],
        &["call", "T", "--json", "{}"][..],
        // Checked before connecting: the broker is not reachable here.
        &[
            "--amqp",
            "amqp://127.0.0.1:1/%2f",
            "call",
            "T",
            "--key",
            "k",
            "--json",
            "[1,",
        ][..],
        &["route", &"a".repeat(300), "a"][..],
        &["nonsense"][..],
    ] {
        let out = lepus(args);
        assert_eq!(
            code(&out),
            1,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    assert_eq!(code(&lepus(&["--help"])), 0);
}

#[test]
fn unreachable_broker_exits_2() {
    let dead_port = "amqp://127.0.0.1:1/%2f";
    for args in [
        &[
            "--amqp", dead_port, "publish", "T", "--key", "k", "--json", "{}",
        ][..],
        &["--amqp", dead_port, "dead", "list", "q"][..],
        &[
            "--amqp", dead_port, "call", "T", "--key", "k", "--json", "{}",
        ][..],
        &["--amqp", dead_port, "tail", "a.#", "--timeout", "1s"][..],
    ] {
        let out = lepus(args);
        assert_eq!(code(&out), 2, "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("127.0.0.1:1"),
            "names the address: {stderr}"
        );
    }
}

/// A stand-in HTTP server on 127.0.0.1: each connection gets a 400 answer, then is closed.
/// Returns its port.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        for mut socket in listener.incoming().flatten() {
            let mut request = [0u8; 512];
            let _ = socket.read(&mut request);
            let _ = socket.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

#[test]
fn an_http_server_is_not_a_broker_and_exits_2() {
    let port = http_server();
    let addr = format!("amqp://guest:secret@127.0.0.1:{port}/%2f");
    let out = lepus_at(Some(&addr), &["publish", "T", "--key", "k", "--json", "{}"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "names the address: {stderr}"
    );
    assert!(
        stderr.contains("did not answer as an AMQP broker"),
        "{stderr}"
    );
    assert!(stderr.contains("AMQP_ADDR"), "says what to fix: {stderr}");
    assert!(!stderr.contains("secret"), "password leaked: {stderr}");
    for parser in ["ParserErrors", "Nom", "Parsing Error", "failed to parse"] {
        assert!(!stderr.contains(parser), "parser text `{parser}`: {stderr}");
    }
}

/// One rule everywhere: no address chooses no broker. Without `--amqp` and `AMQP_ADDR` a
/// command that needs RabbitMQ is a usage error naming both, never a connection to a default.
#[test]
fn no_broker_address_is_a_usage_error() {
    for args in [
        &["publish", "T", "--key", "k", "--json", "{}"][..],
        &["call", "T", "--key", "k", "--json", "{}"][..],
    ] {
        let out = lepus(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("--amqp"), "{stderr}");
        assert!(stderr.contains("AMQP_ADDR"), "{stderr}");
    }
    // Commands that need no broker still run.
    assert_eq!(code(&lepus(&["route", "a.*", "a.b"])), 0);
}

#[test]
fn schedule_usage_errors_exit_1_before_connecting() {
    let base = [
        "--amqp",
        "amqp://127.0.0.1:1/%2f",
        "schedule",
        "T",
        "--key",
        "k",
    ];
    for extra in [
        &["--json", "{}", "--schedule", "s", "--cron", "every day"][..],
        &["--json", "{}", "--schedule", "s", "--cron", "0 0 30 2 *"][..],
        &["--json", "{}", "--schedule", "s", "--every", "0s"][..],
        &["--json", "{}", "--schedule", "s"][..],
        &[
            "--json",
            "{}",
            "--schedule",
            "s",
            "--every",
            "1s",
            "--cron",
            "* * * * *",
        ][..],
        &["--json", "{}", "--schedule", "a b", "--every", "1s"][..],
        &[
            "--json",
            "{}",
            "--schedule",
            "s",
            "--every",
            "1s",
            "--entry",
            "a/b",
        ][..],
        &["--json", "{bad", "--schedule", "s", "--every", "1s"][..],
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = lepus(&args);
        assert_eq!(
            code(&out),
            1,
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{extra:?} says why");
    }
    let out = lepus(&[
        "--amqp",
        "amqp://127.0.0.1:1/%2f",
        "schedule",
        "T",
        "--key",
        "k",
        "--json",
        "{}",
        "--schedule",
        "s",
        "--cron",
        "every day",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cron expression"),
        "{out:?}"
    );
}
