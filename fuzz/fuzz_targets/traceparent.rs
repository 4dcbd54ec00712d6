//! `traceparent` parsing: never panics; whatever parses is written back (as version 00) to
//! text that parses to the same ids and flags, and a version-00 header reads back exactly.
#![no_main]
use lepus_core::traceparent::{TraceParent, TRACEPARENT_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let Ok(tp) = TraceParent::parse(text) else {
        return;
    };
    assert!(!tp.trace_id.is_zero() && !tp.parent_id.is_zero());
    let mut out = [0u8; TRACEPARENT_LEN];
    let written = tp.write(&mut out);
    if tp.version == 0 {
        assert_eq!(written, text);
    }
    let again = TraceParent::parse(written).expect("a written traceparent parses");
    assert_eq!(again, TraceParent { version: 0, ..tp });
});
