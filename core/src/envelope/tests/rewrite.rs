//! `rewrite_json`: payload byte-identical, unknown keys kept, edited keys replaced or inserted.

use super::*;

const PHP: &[u8] = br#"{ "payload": {"adId": 1, "url": "https:\/\/x.example\/a"},
  "metadata": {"className": "App\\Mail", "retryStrategy": "repeat", "retryLimit": "5",
               "retryCount": "0", "x-trace": {"id": [1, 2]}, "retryInterval": [15, 30] } }"#;

fn rewrite(input: &[u8], edits: &MetadataEdits<'_>) -> String {
    let mut out = [0u8; 1024];
    let n = rewrite_json(input, edits, &mut out).unwrap();
    String::from_utf8(out[..n].to_vec()).unwrap()
}

#[test]
fn retry_increments_count_in_place_keeping_everything_else() {
    let mut out = [0u8; 1024];
    let n = rewrite_json_retry(PHP, &mut out).unwrap();
    let want = core::str::from_utf8(PHP)
        .unwrap()
        .replace(r#""retryCount": "0""#, r#""retryCount": 1"#);
    assert_eq!(core::str::from_utf8(&out[..n]).unwrap(), want);
    let first = out[..n].to_vec();
    let n2 = rewrite_json_retry(&first, &mut out).unwrap();
    let want2 = want.replace(r#""retryCount": 1"#, r#""retryCount": 2"#);
    assert_eq!(core::str::from_utf8(&out[..n2]).unwrap(), want2);
    assert_eq!(decode_json_raw(&out[..n2]).unwrap().metadata.retry.count, 2);
}

#[test]
fn replay_resets_count() {
    let input = br#"{"payload":{"adId":1},"metadata":{"className":"A","retryCount":4}}"#;
    let mut out = [0u8; 256];
    let n = rewrite_json_replay(input, &mut out).unwrap();
    assert_eq!(
        &out[..n],
        br#"{"payload":{"adId":1},"metadata":{"className":"A","retryCount":0}}"#
    );
}

#[test]
fn absent_keys_are_appended_in_fixed_order() {
    let input = br#"{"metadata":{"className":"A","z":null} ,"payload":[1]}"#;
    let edits = MetadataEdits {
        retry_strategy: Some(Strategy::Backoff),
        retry_limit: Some(7),
        retry_count: Some(1),
        response_queue: Some("reply/\"q\""),
        correlation_id: Some("c\n1"),
    };
    assert_eq!(
        rewrite(input, &edits),
        r#"{"metadata":{"className":"A","z":null,"retryStrategy":"backoff","retryLimit":7,"retryCount":1,"response_queue":"reply/\"q\"","correlationId":"c\n1"} ,"payload":[1]}"#
    );
    let out = rewrite(input, &edits);
    let m = decode_json_raw(out.as_bytes()).unwrap().metadata;
    assert_eq!(m.response_queue.unwrap(), "reply/\"q\"");
    assert_eq!(m.correlation_id.unwrap(), "c\n1");
}

#[test]
fn present_keys_are_replaced_in_place() {
    let edits = MetadataEdits {
        retry_strategy: Some(Strategy::Ignore),
        retry_limit: Some(0),
        response_queue: Some("q2"),
        ..MetadataEdits::default()
    };
    let input = br#"{"payload":{},"metadata":{"response_queue":"q1","className":"A","retryLimit":"5","retryStrategy":"repeat"}}"#;
    assert_eq!(
        rewrite(input, &edits),
        r#"{"payload":{},"metadata":{"response_queue":"q2","className":"A","retryLimit":0,"retryStrategy":"ignore"}}"#
    );
}

#[test]
fn no_edits_copies_input_exactly() {
    assert_eq!(rewrite(PHP, &MetadataEdits::default()).as_bytes(), PHP);
}

#[test]
fn errors() {
    let mut out = [0u8; 1024];
    assert_eq!(
        rewrite_json(b"{", &MetadataEdits::retry_count(1), &mut out),
        Err(RewriteError::Decode(DecodeError::Syntax { offset: 1 }))
    );
    let edits = MetadataEdits {
        retry_strategy: Some(Strategy::Unknown),
        ..MetadataEdits::default()
    };
    assert_eq!(
        rewrite_json(PHP, &edits, &mut out),
        Err(RewriteError::InvalidEdit(Field::RetryStrategy))
    );
    let max = br#"{"payload":1,"metadata":{"className":"A","retryCount":4294967295}}"#;
    assert_eq!(
        rewrite_json_retry(max, &mut out),
        Err(RewriteError::CountOverflow)
    );
    let n = rewrite_json_retry(PHP, &mut out).unwrap();
    for len in 0..n {
        assert_eq!(
            rewrite_json_retry(PHP, &mut out[..len]),
            Err(RewriteError::BufferFull),
            "{len}"
        );
    }
}
