//! Input as the PHP producer really sends it.

use super::*;

#[test]
fn slide_38_ignore() {
    let env = decode_json::<Ad>(
        br#"{ "payload": { "adId": 1 }, "metadata": { "className": "SendAdExpiredMail", "retryStrategy": "ignore" } }"#,
    )
    .unwrap();
    assert_eq!(env.payload, Ad { ad_id: 1 });
    assert_eq!(env.metadata.class_name, "SendAdExpiredMail");
    assert_eq!(
        env.metadata.retry,
        RetryMetadata {
            strategy: Strategy::Ignore,
            ..RetryMetadata::default()
        }
    );
}

#[test]
fn slide_40_numeric_strings() {
    let input = br#"{
        "payload": { "adId": 1 },
        "metadata": { "className": "SendAdExpiredMail", "retryStrategy": "repeat",
                      "retryLimit": "5", "retryCount": "0", "retryInterval": [15, 30, 60, 300, 86400] }
    }"#;
    assert_eq!(decode_json::<Ad>(input).unwrap(), talk_message());
}

#[test]
fn numeric_strings_everywhere() {
    let input = br#"{"payload":{},"metadata":{"className":"A","retryLimit":"5","retryCount":"2",
        "retryInterval":["15","0.5",1.25],"retryBackoff":{"base":"1","factor":"3","max":"60"}}}"#;
    let m = decode_json_raw(input).unwrap().metadata;
    assert_eq!(m.retry.limit, Some(5));
    assert_eq!(m.retry.count, 2);
    assert_eq!(
        m.retry.intervals.as_deref(),
        Some(&[15_000, 500, 1_250][..])
    );
    assert_eq!(
        m.retry.backoff,
        Some(Backoff {
            base_ms: 1_000,
            factor: 3,
            max_ms: 60_000,
            jitter: false
        })
    );
}

#[test]
fn php_escapes_slashes_and_backslashes() {
    // json_encode(['className' => 'App\Message\SendAdExpiredMail', 'response_queue' => 'a/b'])
    let input = br#"{"payload":{"adId":7},"metadata":{"className":"App\\Message\\SendAdExpiredMail","retryCount":0,"response_queue":"rpc\/user-friends-1_5f3a","correlationId":"caf\u00e9 \ud83d\ude00"}}"#;
    let env = decode_json::<Ad>(input).unwrap();
    let m = &env.metadata;
    assert_eq!(m.class_name, "App\\Message\\SendAdExpiredMail");
    assert!(m.class_name.is_escaped());
    assert_eq!(m.class_name.as_plain(), None);
    assert_eq!(m.response_queue.unwrap(), "rpc/user-friends-1_5f3a");
    assert_eq!(m.correlation_id.unwrap(), "café 😀");
    let mut buf = [0u8; 64];
    assert_eq!(
        m.class_name.unescape_into(&mut buf).unwrap(),
        "App\\Message\\SendAdExpiredMail"
    );
    // Re-encoding keeps PHP's escapes exactly.
    let (out, n) = json(&env);
    assert_eq!(&out[..n], input);
    // Postcard carries the unescaped text.
    let mut pc = [0u8; 128];
    let n = encode_postcard(&env, &mut pc).unwrap();
    let back = decode_postcard::<Ad>(&pc[..n]).unwrap();
    assert_eq!(
        back.metadata.class_name.as_plain(),
        Some("App\\Message\\SendAdExpiredMail")
    );
    assert_eq!(back, env);
}

#[test]
fn unknown_keys_missing_fields_and_any_order() {
    let input = br#"{"extra":[1,{"x":null}],"metadata":{"foo":{"bar":[true,false]},"retryCount":3,
        "className":"B","queue":"q"},"payload":{"adId":9}}"#;
    let env = decode_json::<Ad>(input).unwrap();
    assert_eq!(env.payload, Ad { ad_id: 9 });
    assert_eq!(env.metadata.class_name, "B");
    assert_eq!(
        env.metadata.retry,
        RetryMetadata {
            count: 3,
            ..RetryMetadata::default()
        }
    );
    assert_eq!(env.metadata.response_queue, None);
}

#[test]
fn nulls_are_defaults() {
    let input = br#"{"payload":null,"metadata":{"className":"C","retryStrategy":null,"retryLimit":null,
        "retryCount":null,"retryInterval":null,"retryBackoff":null,"response_queue":null,"correlationId":null}}"#;
    let raw = decode_json_raw(input).unwrap();
    assert_eq!(raw.payload, b"null");
    assert_eq!(raw.metadata, Metadata::new("C"));
}

#[test]
fn backoff_defaults_and_empty_intervals() {
    let input = br#"{"payload":[],"metadata":{"className":"C","retryStrategy":"backoff","retryBackoff":{"jitter":true,"x":1},"retryInterval":[]}}"#;
    let m = decode_json_raw(input).unwrap().metadata;
    assert_eq!(m.retry.strategy, Strategy::Backoff);
    assert_eq!(
        m.retry.backoff,
        Some(Backoff {
            jitter: true,
            ..Backoff::default()
        })
    );
    assert_eq!(m.retry.intervals, Some(Intervals::new()));
}

#[test]
fn unknown_strategy_is_kept_as_unknown() {
    let m =
        decode_json_raw(br#"{"payload":1,"metadata":{"className":"C","retryStrategy":"later"}}"#)
            .unwrap()
            .metadata;
    assert_eq!(m.retry.strategy, Strategy::Unknown);
    let m = decode_json_raw(
        br#"{"payload":1,"metadata":{"className":"C","retryStrategy":"rep\u0065at"}}"#,
    )
    .unwrap()
    .metadata;
    assert_eq!(m.retry.strategy, Strategy::Repeat);
}

#[test]
fn escaped_keys_are_recognised() {
    let m = decode_json_raw(
        br#"{"p\u0061yload":1,"metadata":{"cl\u0061ssName":"C","retry\u0043ount":4}}"#,
    )
    .unwrap();
    assert_eq!(m.payload, b"1");
    assert_eq!(m.metadata.class_name, "C");
    assert_eq!(m.metadata.retry.count, 4);
}

#[test]
fn whole_number_forms() {
    for (text, want) in [
        ("5", 5),
        ("\"5\"", 5),
        ("5.0", 5),
        ("\"5.00\"", 5),
        ("0", 0),
        ("-0", 0),
        ("4294967295", u32::MAX),
    ] {
        let input =
            format!(r#"{{"payload":1,"metadata":{{"className":"C","retryLimit":{text}}}}}"#);
        assert_eq!(
            decode_json_raw(input.as_bytes())
                .unwrap()
                .metadata
                .retry
                .limit,
            Some(want),
            "{text}"
        );
    }
}
