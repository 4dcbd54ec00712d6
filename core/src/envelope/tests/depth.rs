//! Nesting depth: the payload's own depth is bounded per call, everything else by a small fixed
//! bound; deep input is an error, never a stack overflow.

use super::*;

/// An envelope whose payload is `depth` nested arrays around `1`.
fn arrays(depth: usize) -> String {
    format!(
        r#"{{"payload":{}1{},"metadata":{{"className":"C"}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// An envelope whose payload is `depth` nested objects, as PHP's `json_encode` writes them.
fn objects(depth: usize) -> String {
    format!(
        r#"{{"metadata":{{"className":"C"}},"payload":{}null{}}}"#,
        r#"{"a":"#.repeat(depth),
        "}".repeat(depth)
    )
}

#[test]
fn payload_nests_128_levels_by_default() {
    for depth in [0, 1, 31, 32, 64, 127, 128] {
        for input in [arrays(depth), objects(depth)] {
            let raw = decode_json_raw(input.as_bytes());
            assert!(raw.is_ok(), "depth {depth}: {raw:?}");
        }
    }
    // The bracket that opens level 129 is refused.
    assert!(matches!(
        decode_json_raw(arrays(129).as_bytes()),
        Err(DecodeError::TooDeep { offset: 139, .. })
    ));
    assert!(matches!(
        decode_json_raw(objects(129).as_bytes()),
        Err(DecodeError::TooDeep { .. })
    ));
}

#[test]
fn deep_input_is_an_error_not_a_stack_overflow() {
    let huge = format!(r#"{{"payload":{}"#, "[".repeat(100_000));
    assert!(matches!(
        decode_json_raw(huge.as_bytes()),
        Err(DecodeError::TooDeep { .. })
    ));
    let huge = format!(r#"{{"payload":{}"#, "[{\"a\":".repeat(200_000));
    assert!(matches!(
        decode_json_raw(huge.as_bytes()),
        Err(DecodeError::TooDeep { .. })
    ));
    let mut out = [0u8; 64];
    assert!(matches!(
        rewrite_json(huge.as_bytes(), &MetadataEdits::default(), &mut out),
        Err(RewriteError::Decode(DecodeError::TooDeep { .. }))
    ));
}

#[test]
fn typed_and_rewrite_accept_what_raw_accepts() {
    #[derive(Deserialize)]
    struct Any {}
    let input = objects(128);
    assert!(decode_json::<Any>(input.as_bytes()).is_ok());
    let mut out = [0u8; 2048];
    let n = rewrite_json_retry(input.as_bytes(), &mut out).unwrap();
    assert_eq!(decode_json_raw(&out[..n]).unwrap().metadata.retry.count, 1);
}

fn limits(depth: u32) -> DecodeLimits {
    DecodeLimits::new().payload_depth(depth).unwrap()
}

#[test]
fn limits_are_checked_when_set() {
    let cases: &[(u32, Result<u32, LimitError>)] = &[
        (0, Err(LimitError::ZeroPayloadDepth)),
        (1, Ok(1)),
        (128, Ok(128)),
        (1024, Ok(1024)),
        (1025, Err(LimitError::PayloadDepthAboveMax)),
        (u32::MAX, Err(LimitError::PayloadDepthAboveMax)),
    ];
    for (depth, want) in cases {
        let got = DecodeLimits::new().payload_depth(*depth);
        assert_eq!(got.map(|l| l.max_payload_depth()), *want, "{depth}");
    }
    assert_eq!(DecodeLimits::default(), DecodeLimits::DEFAULT);
    assert_eq!(DecodeLimits::DEFAULT.max_payload_depth(), 128);
    assert_eq!(
        LimitError::PayloadDepthAboveMax.to_string(),
        "payload depth above the cap of 1024"
    );
}

#[test]
fn payload_depth_is_exact_for_every_limit() {
    for limit in [1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129, 512, 1023, 1024] {
        let l = limits(limit);
        let depth = limit as usize;
        for (ok, deep, prefix) in [
            (arrays(depth), arrays(depth + 1), 11),
            (objects(depth), objects(depth + 1), 40),
        ] {
            let raw = decode_json_raw_with(ok.as_bytes(), &l);
            assert!(raw.is_ok(), "limit {limit}: {raw:?}");
            let step = if prefix == 11 { 1 } else { 5 };
            assert_eq!(
                decode_json_raw_with(deep.as_bytes(), &l),
                Err(DecodeError::TooDeep {
                    offset: prefix + depth * step,
                    limit
                }),
                "limit {limit}"
            );
        }
    }
}

#[test]
fn metadata_and_unknown_keys_keep_a_fixed_bound() {
    let nest = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let unknown_meta = |d| {
        format!(
            r#"{{"payload":1,"metadata":{{"className":"C","x":{}}}}}"#,
            nest(d)
        )
    };
    let unknown_backoff = |d| {
        format!(
            r#"{{"payload":1,"metadata":{{"className":"C","retryBackoff":{{"x":{}}}}}}}"#,
            nest(d)
        )
    };
    let unknown_top = |d| {
        format!(
            r#"{{"x":{},"payload":1,"metadata":{{"className":"C"}}}}"#,
            nest(d)
        )
    };
    // The metadata object is level 1 of its 32.
    let cases: [(String, String); 3] = [
        (unknown_meta(31), unknown_meta(32)),
        (unknown_backoff(30), unknown_backoff(31)),
        (unknown_top(32), unknown_top(33)),
    ];
    for l in [DecodeLimits::DEFAULT, limits(1), limits(1024)] {
        for (ok, deep) in &cases {
            assert!(decode_json_raw_with(ok.as_bytes(), &l).is_ok(), "{ok}");
            assert!(
                matches!(
                    decode_json_raw_with(deep.as_bytes(), &l),
                    Err(DecodeError::TooDeep { limit: 32, .. })
                ),
                "{deep}"
            );
        }
    }
    let deep = format!(
        r#"{{"payload":1,"metadata":{{"className":"C","x":{}}}}}"#,
        "{\"a\":".repeat(64)
    );
    assert!(matches!(
        decode_json_raw(deep.as_bytes()),
        Err(DecodeError::TooDeep { .. })
    ));
}

#[test]
fn too_deep_names_the_limit() {
    let err = decode_json_raw(arrays(129).as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "JSON nested deeper than 128 levels at byte 139"
    );
    let err = decode_json_raw_with(arrays(3).as_bytes(), &limits(2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "JSON nested deeper than 2 levels at byte 13"
    );
}

#[test]
fn rewrite_and_typed_decode_follow_the_limits() {
    #[derive(Deserialize)]
    struct Any {}
    let input = objects(300);
    let mut out = [0u8; 4096];
    let mut scratch = [0u8; 16];
    let edits = MetadataEdits::retry_count(1);
    assert!(matches!(
        rewrite_json(input.as_bytes(), &edits, &mut out),
        Err(RewriteError::Decode(DecodeError::TooDeep {
            limit: 128,
            ..
        }))
    ));
    assert!(matches!(
        decode_json::<Any>(input.as_bytes()),
        Err(DecodeError::TooDeep { limit: 128, .. })
    ));
    let deep = limits(300);
    let n = rewrite_json_with(input.as_bytes(), &edits, &deep, &mut out).unwrap();
    let after = decode_json_raw_with(&out[..n], &deep).unwrap();
    assert_eq!(after.metadata.retry.count, 1);
    assert!(decode_json_with::<Any>(input.as_bytes(), &mut scratch, &deep).is_ok());
    assert!(matches!(
        decode_json_with::<Any>(input.as_bytes(), &mut scratch, &limits(299)),
        Err(DecodeError::TooDeep { limit: 299, .. })
    ));
}

#[test]
fn typed_decode_at_the_cap_fits_a_test_thread_stack() {
    // serde-json-core recurses once per level to skip the unknown field `a`.
    #[derive(Deserialize)]
    struct Any {}
    let input = objects(1024);
    let mut scratch = [0u8; 16];
    assert!(decode_json_with::<Any>(input.as_bytes(), &mut scratch, &limits(1024)).is_ok());
}

/// Builds a valid JSON value from `ops` (0: open an array, 1: open an object, 2: close, 3: a
/// scalar) and returns it with the reference model's answer: its depth and the offset, within
/// the value, of the first bracket that opens each level.
fn build(ops: &[u8]) -> (String, Vec<usize>) {
    let mut out = String::new();
    let mut open: Vec<bool> = Vec::new();
    let mut first_at: Vec<usize> = Vec::new();
    let mut need_comma = false;
    let start_elem = |out: &mut String, open: &[bool], need_comma: &mut bool| {
        if *need_comma {
            out.push(',');
        }
        if open.last() == Some(&true) {
            out.push_str(r#""k":"#);
        }
        *need_comma = false;
    };
    for &op in ops {
        match op % 4 {
            2 if !open.is_empty() => {
                out.push(if open.pop() == Some(true) { '}' } else { ']' });
                need_comma = true;
            }
            0 | 1 => {
                if open.is_empty() && !out.is_empty() {
                    continue;
                }
                start_elem(&mut out, &open, &mut need_comma);
                if first_at.len() == open.len() {
                    first_at.push(out.len());
                }
                out.push(if op % 4 == 1 { '{' } else { '[' });
                open.push(op % 4 == 1);
            }
            _ if !open.is_empty() => {
                start_elem(&mut out, &open, &mut need_comma);
                out.push_str("\"]}\"");
                need_comma = true;
            }
            _ => {}
        }
    }
    if out.is_empty() {
        out.push('0');
    }
    while let Some(is_obj) = open.pop() {
        out.push(if is_obj { '}' } else { ']' });
    }
    (out, first_at)
}

proptest::proptest! {
    #[test]
    fn depth_check_matches_a_reference_model(
        ops in proptest::collection::vec(0u8..4, 0..600),
        limit in 1u32..=300,
    ) {
        let (payload, first_at) = build(&ops);
        let input = format!(r#"{{"payload":{payload},"metadata":{{"className":"C"}}}}"#);
        let got = decode_json_raw_with(input.as_bytes(), &limits(limit));
        match first_at.get(limit as usize) {
            None => proptest::prop_assert_eq!(got.map(|r| r.payload), Ok(payload.as_bytes())),
            Some(at) => proptest::prop_assert_eq!(
                got,
                Err(DecodeError::TooDeep { offset: 11 + at, limit })
            ),
        }
    }
}
