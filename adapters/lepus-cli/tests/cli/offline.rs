//! The `lepus` binary without a broker: routing explanations, usage errors, exit codes.

use std::process::{Command, Output};

fn lepus(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lepus"))
        .args(args)
        .env_remove("AMQP_ADDR")
        .env_remove("LEPUS_EXCHANGE")
        .output()
        .expect("run lepus");
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
        &["dead", "replay", "q"][..],
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
