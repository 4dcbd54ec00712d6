//! Exact bytes, both directions, JSON and postcard.

use super::*;

const TALK_JSON: &[u8] = br#"{"payload":{"adId":1},"metadata":{"className":"SendAdExpiredMail","retryStrategy":"repeat","retryLimit":5,"retryCount":0,"retryInterval":[15,30,60,300,86400]}}"#;

const FULL_JSON: &[u8] = br#"{"payload":{"adId":1},"metadata":{"className":"SendAdExpiredMail","retryStrategy":"backoff","retryLimit":5,"retryCount":2,"retryInterval":[15,30,60,300,86400],"retryBackoff":{"base":0.05,"factor":2,"max":300,"jitter":true},"response_queue":"user-friends-7_65f1","correlationId":"c-42"}}"#;

/// Computed independently (Python varint encoder) from the layout in `compact.rs`.
const TALK_POSTCARD: &[u8] = &[
    0x11, b'S', b'e', b'n', b'd', b'A', b'd', b'E', b'x', b'p', b'i', b'r', b'e', b'd', b'M', b'a',
    b'i', b'l', // className
    0x02, // repeat
    0x01, 0x05, // Some(5)
    0x00, // count 0
    0x01, 0x05, 0x98, 0x75, 0xb0, 0xea, 0x01, 0xe0, 0xd4, 0x03, 0xe0, 0xa7, 0x12, 0x80, 0xb8, 0x99,
    0x29, // ms
    0x00, 0x00, 0x00, // no backoff, no response_queue, no correlationId
    0x01, // adId
];

#[test]
fn talk_message_encodes_to_exact_json() {
    let (buf, n) = json(&talk_message());
    assert_eq!(
        core::str::from_utf8(&buf[..n]).unwrap(),
        core::str::from_utf8(TALK_JSON).unwrap()
    );
}

#[test]
fn talk_json_decodes_to_talk_message() {
    assert_eq!(decode_json::<Ad>(TALK_JSON).unwrap(), talk_message());
}

#[test]
fn full_message_encodes_to_exact_json_and_back() {
    let (buf, n) = json(&full_message());
    assert_eq!(
        core::str::from_utf8(&buf[..n]).unwrap(),
        core::str::from_utf8(FULL_JSON).unwrap()
    );
    assert_eq!(decode_json::<Ad>(FULL_JSON).unwrap(), full_message());
}

#[test]
fn talk_message_encodes_to_exact_postcard() {
    let mut buf = [0u8; 128];
    let n = encode_postcard(&talk_message(), &mut buf).unwrap();
    assert_eq!(&buf[..n], TALK_POSTCARD);
}

#[test]
fn talk_postcard_decodes_to_talk_message() {
    assert_eq!(
        decode_postcard::<Ad>(TALK_POSTCARD).unwrap(),
        talk_message()
    );
}

#[test]
fn full_message_postcard_round_trips() {
    let mut buf = [0u8; 128];
    let n = encode_postcard(&full_message(), &mut buf).unwrap();
    // Tail: Some(backoff 50 ms, 2, 300000 ms, true), Some("user-friends-7_65f1"), Some("c-42"), adId.
    let tail: &[u8] = &[
        0x01, 0x32, 0x02, 0xe0, 0xa7, 0x12, 0x01, //
        0x01, 0x13, b'u', b's', b'e', b'r', b'-', b'f', b'r', b'i', b'e', b'n', b'd', b's', b'-',
        b'7', b'_', b'6', b'5', b'f', b'1', //
        0x01, 0x04, b'c', b'-', b'4', b'2', //
        0x01,
    ];
    assert!(buf[..n].ends_with(tail), "{:02x?}", &buf[..n]);
    assert_eq!(decode_postcard::<Ad>(&buf[..n]).unwrap(), full_message());
}

#[test]
fn postcard_cobs_round_trips_with_exact_frame() {
    let mut buf = [0u8; 128];
    let n = encode_postcard_cobs(&talk_message(), &mut buf).unwrap();
    // COBS: no zero byte inside the frame, one zero terminator, overhead of one byte per zero run.
    assert_eq!(buf[n - 1], 0);
    assert!(!buf[..n - 1].contains(&0));
    assert_eq!(n, TALK_POSTCARD.len() + 2);
    let env = decode_postcard_cobs::<Ad>(&mut buf[..n]).unwrap();
    assert_eq!(env, talk_message());
}

#[test]
fn raw_forms_round_trip() {
    let raw = decode_json_raw(TALK_JSON).unwrap();
    assert_eq!(raw.payload, br#"{"adId":1}"#);
    let mut buf = [0u8; 256];
    let n = encode_json_raw(&raw, &mut buf).unwrap();
    assert_eq!(&buf[..n], TALK_JSON);

    let raw = decode_postcard_raw(TALK_POSTCARD).unwrap();
    assert_eq!(raw.payload, &[0x01]);
    let n = encode_postcard_raw(&raw, &mut buf).unwrap();
    assert_eq!(&buf[..n], TALK_POSTCARD);
}

#[test]
fn postcard_is_markedly_smaller_than_json() {
    let (_, json_len) = json(&talk_message());
    let mut buf = [0u8; 128];
    let pc_len = encode_postcard(&talk_message(), &mut buf).unwrap();
    assert_eq!((json_len, pc_len), (TALK_JSON.len(), 43));
    assert!(json_len >= 3 * pc_len, "json {json_len} postcard {pc_len}");
    let (_, full_json) = json(&full_message());
    let full_pc = encode_postcard(&full_message(), &mut buf).unwrap();
    assert!(
        full_json >= 3 * full_pc,
        "json {full_json} postcard {full_pc}"
    );
}

#[test]
fn durations_encode_as_integer_or_decimal_seconds() {
    let cases: &[(u32, &str)] = &[
        (0, "0"),
        (50, "0.05"),
        (500, "0.5"),
        (1, "0.001"),
        (1_500, "1.5"),
        (15_000, "15"),
        (86_400_000, "86400"),
        (u32::MAX, "4294967.295"),
    ];
    for &(ms, text) in cases {
        let mut env = talk_message();
        env.metadata.retry.intervals = Some(Intervals::from_slice(&[ms]).unwrap());
        let (buf, n) = json(&env);
        let s = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            s.contains(&format!("\"retryInterval\":[{text}]")),
            "{ms}: {s}"
        );
        assert_eq!(decode_json::<Ad>(&buf[..n]).unwrap(), env, "{ms}");
    }
}

#[test]
fn absent_fields_are_omitted_and_unknown_strategy_is_written_as_unknown() {
    let mut env = Envelope {
        payload: Ad { ad_id: 3 },
        metadata: Metadata::new("X"),
    };
    let (buf, n) = json(&env);
    assert_eq!(
        &buf[..n],
        br#"{"payload":{"adId":3},"metadata":{"className":"X","retryCount":0}}"#
    );
    env.metadata.retry.strategy = Strategy::Unknown;
    let (buf, n) = json(&env);
    assert_eq!(
        &buf[..n],
        br#"{"payload":{"adId":3},"metadata":{"className":"X","retryStrategy":"unknown","retryCount":0}}"#
    );
    assert_eq!(decode_json::<Ad>(&buf[..n]).unwrap(), env);
}

#[test]
fn every_short_buffer_is_buffer_full() {
    let (_, json_len) = json(&full_message());
    let mut buf = [0u8; 512];
    for len in 0..json_len {
        assert_eq!(
            encode_json(&full_message(), &mut buf[..len]),
            Err(EncodeError::BufferFull),
            "{len}"
        );
    }
    let pc_len = encode_postcard(&full_message(), &mut buf).unwrap();
    for len in 0..pc_len {
        assert_eq!(
            encode_postcard(&full_message(), &mut buf[..len]),
            Err(EncodeError::BufferFull),
            "{len}"
        );
        assert_eq!(
            encode_postcard_cobs(&full_message(), &mut buf[..len]),
            Err(EncodeError::BufferFull),
            "{len}"
        );
    }
    let raw = decode_json_raw(FULL_JSON).unwrap();
    for len in 0..FULL_JSON.len() {
        assert_eq!(
            encode_json_raw(&raw, &mut buf[..len]),
            Err(EncodeError::BufferFull),
            "{len}"
        );
    }
}
