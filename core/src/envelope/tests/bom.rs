//! A UTF-8 byte-order mark before the envelope is accepted once; offsets stay those of the
//! input; rewriting keeps it.

use super::*;

const BOM: &[u8] = b"\xEF\xBB\xBF";
const PLAIN: &[u8] = br#"{"payload":{"adId":1},"metadata":{"className":"A","retryCount":"0"}}"#;

fn with_bom(body: &[u8]) -> Vec<u8> {
    [BOM, body].concat()
}

#[test]
fn a_leading_bom_is_skipped() {
    let input = with_bom(PLAIN);
    let raw = decode_json_raw(&input).unwrap();
    assert_eq!(raw, decode_json_raw(PLAIN).unwrap());
    // The payload span is a slice of the input, after the BOM.
    let start = raw.payload.as_ptr() as usize - input.as_ptr() as usize;
    assert_eq!(start, 3 + 11);
    assert_eq!(decode_json::<Ad>(&input).unwrap().payload, Ad { ad_id: 1 });
    // Whitespace may follow the BOM.
    assert!(decode_json_raw(&with_bom(
        b" \n{\"payload\":1,\"metadata\":{\"className\":\"A\"}}"
    ))
    .is_ok());
}

#[test]
fn errors_after_a_bom_name_offsets_in_the_input() {
    let cases: &[(&[u8], DecodeError)] = &[
        (b"", DecodeError::Syntax { offset: 3 }),
        (b"{", DecodeError::Syntax { offset: 4 }),
        (br#"{"payload":[1 2]}"#, DecodeError::Syntax { offset: 17 }),
        (b"[1]", DecodeError::NotAnObject),
        (
            br#"{"payload":[[1]],"metadata":{"className":"A"}} x"#,
            DecodeError::TrailingData { offset: 50 },
        ),
    ];
    for (body, want) in cases {
        assert_eq!(
            decode_json_raw(&with_bom(body)),
            Err(*want),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let deep = format!(r#"{{"payload":{}"#, "[".repeat(200));
    assert_eq!(
        decode_json_raw_with(
            &with_bom(deep.as_bytes()),
            &DecodeLimits::new().payload_depth(2).unwrap()
        ),
        Err(DecodeError::TooDeep {
            offset: 3 + 13,
            limit: 2
        })
    );
}

#[test]
fn only_one_leading_bom() {
    let cases: &[(Vec<u8>, DecodeError)] = &[
        // Two BOMs: the second is not whitespace.
        (
            [BOM, BOM, PLAIN].concat(),
            DecodeError::Syntax { offset: 3 },
        ),
        // After whitespace: not leading.
        (
            [b" ", BOM, PLAIN].concat(),
            DecodeError::Syntax { offset: 1 },
        ),
        // Inside the envelope, between tokens.
        (
            [&PLAIN[..1], BOM, &PLAIN[1..]].concat(),
            DecodeError::Syntax { offset: 1 },
        ),
        // After the envelope.
        (
            [PLAIN, BOM].concat(),
            DecodeError::TrailingData {
                offset: PLAIN.len(),
            },
        ),
        // A BOM alone.
        (BOM.to_vec(), DecodeError::Syntax { offset: 3 }),
        // A truncated BOM is not UTF-8.
        ([&BOM[..2], PLAIN].concat(), DecodeError::InvalidUtf8),
    ];
    for (input, want) in cases {
        assert_eq!(decode_json_raw(input), Err(*want), "{input:?}");
    }
    // U+FEFF inside a string is just a character.
    let in_string =
        r#"{"payload":"\u{feff}x","metadata":{"className":"A"}}"#.replace(r"\u{feff}", "\u{feff}");
    assert!(decode_json_raw(in_string.as_bytes()).is_ok());
}

#[test]
fn rewrite_keeps_the_bom_and_everything_else() {
    let input = with_bom(PLAIN);
    let mut out = [0u8; 256];
    let n = rewrite_json(&input, &MetadataEdits::default(), &mut out).unwrap();
    assert_eq!(&out[..n], &input[..]);
    let n = rewrite_json_retry(&input, &mut out).unwrap();
    let want = with_bom(br#"{"payload":{"adId":1},"metadata":{"className":"A","retryCount":1}}"#);
    assert_eq!(&out[..n], &want[..]);
    let edits = MetadataEdits {
        correlation_id: Some("c-1"),
        ..MetadataEdits::default()
    };
    let n = rewrite_json(&input, &edits, &mut out).unwrap();
    let want = with_bom(
        br#"{"payload":{"adId":1},"metadata":{"className":"A","retryCount":"0","correlationId":"c-1"}}"#,
    );
    assert_eq!(&out[..n], &want[..]);
}
