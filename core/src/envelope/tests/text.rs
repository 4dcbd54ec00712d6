//! `Text`: comparison, unescaping and re-encoding.

use super::*;

fn json_text(raw: &str) -> Text<'_> {
    Text::from_json(raw).unwrap()
}

#[test]
fn escaped_and_plain_compare_equal() {
    let cases: &[(&str, &str)] = &[
        (r"a\/b", "a/b"),
        (r"App\\Msg", "App\\Msg"),
        (r#"q\"x"#, "q\"x"),
        (r"\b\f\n\r\t", "\u{8}\u{c}\n\r\t"),
        (r"\u00e9\u20AC", "é€"),
        (r"\ud83d\ude00!", "😀!"),
        (r"\u0000", "\0"),
        ("plain é", "plain é"),
    ];
    for &(raw, plain) in cases {
        let t = json_text(raw);
        assert_eq!(t, plain, "{raw}");
        assert_eq!(t, Text::plain(plain), "{raw}");
        assert_eq!(t.len(), plain.len(), "{raw}");
        assert_eq!(t.to_string(), plain, "{raw}");
        let mut buf = [0u8; 32];
        assert_eq!(t.unescape_into(&mut buf).unwrap(), plain, "{raw}");
        assert_eq!(
            t.unescape_into(&mut buf[..plain.len().saturating_sub(1)])
                .is_err(),
            !plain.is_empty()
        );
    }
    assert_ne!(json_text(r"a\/b"), "a/c");
    assert_ne!(json_text(r"a\/b"), "a/");
    assert_ne!(json_text(r"a\/b"), "a/bc");
}

#[test]
fn invalid_raw_json_strings_are_refused() {
    for raw in [
        r"\",
        r"\x",
        r"\u12",
        r"\u12g4",
        r"\ud800",
        r"\ud800\u0041",
        r"\udc00",
        "a\"b",
        "a\nb",
    ] {
        assert!(Text::from_json(raw).is_none(), "{raw:?}");
    }
}

#[test]
fn plain_text_is_escaped_when_written_as_json() {
    let mut env = Envelope {
        payload: 0u8,
        metadata: Metadata::new("A\"B\\C\u{1}\n/é"),
    };
    env.metadata.correlation_id = Some(Text::plain(""));
    let mut buf = [0u8; 256];
    let n = encode_json(&env, &mut buf).unwrap();
    assert_eq!(
        core::str::from_utf8(&buf[..n]).unwrap(),
        r#"{"payload":0,"metadata":{"className":"A\"B\\C\u0001\n/é","retryCount":0,"correlationId":""}}"#
    );
    let back = decode_json::<u8>(&buf[..n]).unwrap();
    assert_eq!(back, env);
}
