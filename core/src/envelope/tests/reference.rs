//! Differential tests: the one-pass decoder against the reference model (the decoder as it
//! was before issue 13, `envelope/reference`). Same envelope, same rewrite spans, same error,
//! on arbitrary bytes and on envelopes built from JSON fragments and broken at random.

use proptest::prelude::{any, prop_assert_eq, proptest, ProptestConfig};
use proptest::strategy::Strategy as Gen;

use super::super::decode::{parse, Spans};
use super::super::reference;
use super::*;

/// Pieces of envelopes: keys, values the metadata reads leniently, escapes, numbers at the
/// edges, broken UTF-8, whitespace and stray punctuation.
const FRAGMENTS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b" ",
    b"\n\t",
    b"\"",
    b"\"payload\":",
    b"\"metadata\":",
    b"\"pay\\u006coad\":",
    b"\"meta\\u0064ata\":",
    b"\"className\":",
    b"\"class\\u004eame\":",
    b"\"retryStrategy\":",
    b"\"retryLimit\":",
    b"\"retryCount\":",
    b"\"retryInterval\":",
    b"\"retryBackoff\":",
    b"\"response_queue\":",
    b"\"correlationId\":",
    b"\"base\":",
    b"\"factor\":",
    b"\"max\":",
    b"\"jitter\":",
    b"\"m\\u0061x\":",
    b"\"x\":",
    b"\"SendAdExpiredMail\"",
    b"\"App\\\\Mail\\\\Send\"",
    b"\"repeat\"",
    b"\"rep\\u0065at\"",
    b"\"backoff\"",
    b"\"ignore\"",
    b"\"nope\"",
    b"\"\\ud83d\\ude00\"",
    b"\"\\ud83d\"",
    b"\"\xc3\xa9t\xc3\xa9\"",
    b"\"\xff\"",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xEF\xBB\xBF",
    b"0",
    b"-0",
    b"5",
    b"5.0",
    b"5.5",
    b"0.05",
    b"0.0001",
    b"0.0010",
    b"-0.000",
    b"1e3",
    b"1E+2",
    b"1.",
    b"-",
    b"01",
    b"4294967295",
    b"4294967296",
    b"4294967.295",
    b"18446744073709551616",
    b"99999999999999999999.0",
    b"\"5\"",
    b"\"5.0\"",
    b"\" 5\"",
    b"\"-0\"",
    b"\"0.05\"",
    b"\"1e3\"",
    b"\"\\u0035\"",
    b"\"\"",
    b"\"abcdefghijklmnop\"",
    b"\"abcdefg\\u0001\"",
    b"\"tab\there\"",
    b"true",
    b"false",
    b"null",
    b"nul",
    b"tru",
    b"[15,30,60,300,86400]",
    b"[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]",
    b"[\"1\",null]",
    b"{\"adId\":1}",
    b"[[[[[[[[]]]]]]]]",
    b"{\"a\":{\"b\":{\"c\":[]}}}",
];

/// An input: fragments, some raw bytes between them.
fn input() -> impl Gen<Value = Vec<u8>> {
    proptest::collection::vec(
        (
            0..FRAGMENTS.len(),
            proptest::option::weighted(0.1, any::<u8>()),
        ),
        0..40,
    )
    .prop_map(|parts| {
        let mut out = Vec::new();
        for (i, byte) in parts {
            out.extend_from_slice(FRAGMENTS.get(i).copied().unwrap_or_default());
            out.extend(byte);
        }
        out
    })
}

/// A valid envelope around generated metadata members, so that most cases reach the
/// metadata rules rather than failing early.
fn envelope() -> impl Gen<Value = Vec<u8>> {
    (input(), input(), any::<bool>()).prop_map(|(payload, members, bom)| {
        let mut out = Vec::new();
        if bom {
            out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        out.extend_from_slice(b"{\"payload\":");
        out.extend_from_slice(if payload.is_empty() { b"1" } else { &payload });
        out.extend_from_slice(b",\"metadata\":{\"className\":\"C\"");
        if !members.is_empty() {
            out.push(b',');
            out.extend_from_slice(&members);
        }
        out.extend_from_slice(b"}}");
        out
    })
}

fn same(input: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
    for depth in [1, 2, DecodeLimits::DEFAULT_PAYLOAD_DEPTH] {
        let limits = DecodeLimits::new().payload_depth(depth).unwrap_or_default();
        let mut spans = Spans::default();
        let got = parse(input, &limits, Some(&mut spans));
        let want = reference::parse(input, &limits);
        match (got, want) {
            (Ok(got), Ok((want, want_spans))) => {
                prop_assert_eq!(got, want);
                prop_assert_eq!(spans, want_spans);
            }
            (got, want) => prop_assert_eq!(got, want.map(|(raw, _)| raw)),
        }
        // Without spans, the same answer.
        prop_assert_eq!(
            parse(input, &limits, None),
            reference::decode_json_raw_with(input, &limits)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn same_as_reference_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        same(&bytes)?;
    }

    #[test]
    fn same_as_reference_on_fragments(bytes in input()) {
        same(&bytes)?;
    }

    #[test]
    fn same_as_reference_on_envelopes(bytes in envelope()) {
        same(&bytes)?;
    }
}

#[test]
fn same_as_reference_on_edge_cases() {
    let cases: &[&[u8]] = &[
        b"",
        b"\xEF\xBB\xBF",
        b"\xEF\xBB\xBF\xEF\xBB\xBF{}",
        b"{\"payload\":\"\xff\",\"metadata\":{\"className\":\"C\"}}",
        b"{\"payload\":1,\"metadata\":{\"className\":\"C\"}}\xff",
        b"{\"payload\":1 \xff,\"metadata\":{\"className\":\"C\"}}",
        b"{\"payload\":[1,2,3],\"metadata\":{\"className\":\"C\",\"retryInterval\":[0.05,\"1.5\",\"-0\"]}}",
        b"{\"payload\":1,\"metadata\":{\"className\":\"C\",\"retryLimit\":\"5.0\",\"retryCount\":-0.0}}",
        b"{\"payload\":1,\"metadata\":{\"className\":\"C\",\"retryLimit\":18446744073709551616}}",
        b"{\"payload\":1,\"metadata\":{\"className\":\"C\",\"retryBackoff\":{\"base\":0.0001,\"m\\u0061x\":2}}}",
        b"{\"payload\":\"0123456789abcdef0123456789\\\"\\u00e9\",\"metadata\":{\"className\":\"\xc3\xa9\"}}",
    ];
    for case in cases {
        assert!(same(case).is_ok(), "{:?}", String::from_utf8_lossy(case));
    }
}
