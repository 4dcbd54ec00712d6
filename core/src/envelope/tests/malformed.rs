//! Malformed input: a clear error, never a panic.

use super::*;

fn err(input: &[u8]) -> DecodeError {
    decode_json_raw(input).unwrap_err()
}

fn meta(fields: &str) -> String {
    format!(r#"{{"payload":{{}},"metadata":{{"className":"C",{fields}}}}}"#)
}

#[test]
fn syntax_errors_name_the_offset() {
    let cases: &[(&[u8], DecodeError)] = &[
        (b"", DecodeError::Syntax { offset: 0 }),
        (b"   ", DecodeError::Syntax { offset: 3 }),
        (b"{", DecodeError::Syntax { offset: 1 }),
        (
            br#"{"payload":{"adId":1},"metadata":{"className":"C""#,
            DecodeError::Syntax { offset: 49 },
        ),
        (
            br#"{"payload":{"adId":1"#,
            DecodeError::Syntax { offset: 20 },
        ),
        (
            br#"{"payload":{"adId":1,}}"#,
            DecodeError::Syntax { offset: 21 },
        ),
        (br#"{"payload":[1 2]}"#, DecodeError::Syntax { offset: 14 }),
        (br#"{"payload":tru}"#, DecodeError::Syntax { offset: 11 }),
        (br#"{"payload":01}"#, DecodeError::Syntax { offset: 12 }),
        (br#"{"payload":1.}"#, DecodeError::Syntax { offset: 13 }),
        (br#"{"payload":"\x"}"#, DecodeError::Syntax { offset: 12 }),
        (
            br#"{"payload":"\ud800"}"#,
            DecodeError::Syntax { offset: 12 },
        ),
        (
            b"{\"payload\":\"a\nb\"}",
            DecodeError::Syntax { offset: 13 },
        ),
        (br#"{"payload" 1}"#, DecodeError::Syntax { offset: 11 }),
        (br#"{payload:1}"#, DecodeError::Syntax { offset: 1 }),
        // Slide 39 as printed has a trailing comma: strict JSON refuses it, as json_decode does.
        (
            br#"{"payload":{},"metadata":{"className":"C","retryCount":"0",}}"#,
            DecodeError::Syntax { offset: 59 },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(err(input), *want, "{}", String::from_utf8_lossy(input));
    }
}

#[test]
fn shape_errors_name_the_field() {
    let cases: &[(String, DecodeError)] = &[
        (r#"[1,2]"#.into(), DecodeError::NotAnObject),
        (r#""x""#.into(), DecodeError::NotAnObject),
        (
            r#"{"metadata":{"className":"C"}}"#.into(),
            DecodeError::Missing(Field::Payload),
        ),
        (
            r#"{"payload":1}"#.into(),
            DecodeError::Missing(Field::Metadata),
        ),
        (
            r#"{"payload":1,"metadata":{}}"#.into(),
            DecodeError::Missing(Field::ClassName),
        ),
        (
            r#"{"payload":1,"metadata":[]}"#.into(),
            DecodeError::WrongType(Field::Metadata),
        ),
        (
            r#"{"payload":1,"metadata":{"className":7}}"#.into(),
            DecodeError::WrongType(Field::ClassName),
        ),
        (
            r#"{"payload":1,"payload":2,"metadata":{"className":"C"}}"#.into(),
            DecodeError::Duplicate(Field::Payload),
        ),
        (
            meta(r#""retryCount":1,"retryCount":2"#),
            DecodeError::Duplicate(Field::RetryCount),
        ),
        (
            meta(r#""className":"D""#),
            DecodeError::Duplicate(Field::ClassName),
        ),
        (
            meta(r#""retryLimit":true"#),
            DecodeError::WrongType(Field::RetryLimit),
        ),
        (
            meta(r#""retryLimit":[5]"#),
            DecodeError::WrongType(Field::RetryLimit),
        ),
        (
            meta(r#""retryCount":"five""#),
            DecodeError::InvalidNumber(Field::RetryCount),
        ),
        (
            meta(r#""retryCount":"""#),
            DecodeError::InvalidNumber(Field::RetryCount),
        ),
        (
            meta(r#""retryCount":" 5""#),
            DecodeError::InvalidNumber(Field::RetryCount),
        ),
        (
            meta(r#""retryCount":1.5"#),
            DecodeError::InvalidNumber(Field::RetryCount),
        ),
        (
            meta(r#""retryCount":1e2"#),
            DecodeError::InvalidNumber(Field::RetryCount),
        ),
        (
            meta(r#""retryCount":-1"#),
            DecodeError::OutOfRange(Field::RetryCount),
        ),
        (
            meta(r#""retryLimit":4294967296"#),
            DecodeError::OutOfRange(Field::RetryLimit),
        ),
        (
            meta(r#""retryLimit":99999999999999999999999999"#),
            DecodeError::OutOfRange(Field::RetryLimit),
        ),
        (
            meta(r#""retryInterval":[4294967.296]"#),
            DecodeError::OutOfRange(Field::RetryInterval),
        ),
        (
            meta(r#""retryInterval":[4294968]"#),
            DecodeError::OutOfRange(Field::RetryInterval),
        ),
        (
            meta(r#""retryInterval":[0.0005]"#),
            DecodeError::InvalidNumber(Field::RetryInterval),
        ),
        (
            meta(r#""retryInterval":[-1]"#),
            DecodeError::OutOfRange(Field::RetryInterval),
        ),
        (
            meta(r#""retryInterval":[null]"#),
            DecodeError::WrongType(Field::RetryInterval),
        ),
        (
            meta(r#""retryInterval":15"#),
            DecodeError::WrongType(Field::RetryInterval),
        ),
        (
            meta(r#""retryInterval":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]"#),
            DecodeError::TooMany(Field::RetryInterval),
        ),
        (
            meta(r#""retryBackoff":{"base":1,"base":2}"#),
            DecodeError::Duplicate(Field::BackoffBase),
        ),
        (
            meta(r#""retryBackoff":{"max":99999999}"#),
            DecodeError::OutOfRange(Field::BackoffMax),
        ),
        (
            meta(r#""retryBackoff":{"jitter":"yes"}"#),
            DecodeError::WrongType(Field::BackoffJitter),
        ),
        (
            meta(r#""retryBackoff":[1]"#),
            DecodeError::WrongType(Field::RetryBackoff),
        ),
        (
            meta(r#""retryStrategy":1"#),
            DecodeError::WrongType(Field::RetryStrategy),
        ),
        (
            meta(r#""response_queue":{}"#),
            DecodeError::WrongType(Field::ResponseQueue),
        ),
        (
            meta(r#""correlationId":false"#),
            DecodeError::WrongType(Field::CorrelationId),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(err(input.as_bytes()), *want, "{input}");
    }
}

#[test]
fn sixteen_intervals_fit() {
    let input = meta(r#""retryInterval":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]"#);
    let m = decode_json_raw(input.as_bytes()).unwrap();
    assert_eq!(m.metadata.retry.intervals.unwrap().len(), 16);
}

#[test]
fn trailing_garbage_and_invalid_utf8() {
    let ok = br#"{"payload":1,"metadata":{"className":"C"}}"#;
    assert!(decode_json_raw(ok).is_ok());
    let mut with_ws = ok.to_vec();
    with_ws.extend_from_slice(b" \n\t\r");
    assert!(decode_json_raw(&with_ws).is_ok());
    let mut garbage = ok.to_vec();
    garbage.extend_from_slice(b" x");
    assert_eq!(
        err(&garbage),
        DecodeError::TrailingData {
            offset: ok.len() + 1
        }
    );
    let mut two = ok.to_vec();
    two.extend_from_slice(ok);
    assert_eq!(err(&two), DecodeError::TrailingData { offset: ok.len() });
    assert_eq!(
        err(b"{\"payload\":\"\xff\",\"metadata\":{\"className\":\"C\"}}"),
        DecodeError::InvalidUtf8
    );
    assert_eq!(
        err(b"{\"payload\":1,\"metadata\":{\"className\":\"\xc3\"}}"),
        DecodeError::InvalidUtf8
    );
}

#[test]
fn payload_type_mismatch_is_payload_error() {
    let input = br#"{"payload":{"adId":"one"},"metadata":{"className":"C"}}"#;
    assert!(decode_json_raw(input).is_ok());
    assert_eq!(decode_json::<Ad>(input), Err(DecodeError::Payload));
}

#[test]
fn every_truncation_of_a_valid_envelope_is_an_error() {
    let (buf, n) = json(&full_message());
    for len in 0..n {
        assert!(decode_json_raw(&buf[..len]).is_err(), "{len}");
    }
    let mut pc = [0u8; 256];
    let n = encode_postcard(&full_message(), &mut pc).unwrap();
    for len in 0..n {
        assert!(decode_postcard::<Ad>(&pc[..len]).is_err(), "{len}");
    }
}

#[test]
fn postcard_errors() {
    let mut pc = [0u8; 256];
    let n = encode_postcard(&talk_message(), &mut pc).unwrap();
    let mut extra = pc[..n].to_vec();
    extra.push(0);
    assert_eq!(
        decode_postcard::<Ad>(&extra),
        Err(DecodeError::PostcardTrailingBytes)
    );
    let mut bad_strategy = pc[..n].to_vec();
    bad_strategy[18] = 9;
    assert_eq!(
        decode_postcard::<Ad>(&bad_strategy),
        Err(DecodeError::WrongType(Field::RetryStrategy))
    );
    let mut bad_utf8 = pc[..n].to_vec();
    bad_utf8[1] = 0xff;
    assert_eq!(decode_postcard::<Ad>(&bad_utf8), Err(DecodeError::Postcard));
    // 17 intervals.
    let mut many = vec![0x01, b'C', 0x00, 0x00, 0x00, 0x01, 17];
    many.extend(core::iter::repeat_n(0x01, 17));
    many.extend([0x00, 0x00, 0x00, 0x01]);
    assert_eq!(
        decode_postcard::<Ad>(&many),
        Err(DecodeError::TooMany(Field::RetryInterval))
    );
    let mut frame = [0x05u8, 0x01, 0x02, 0x03];
    assert_eq!(
        decode_postcard_cobs::<Ad>(&mut frame),
        Err(DecodeError::Postcard)
    );
}
