//! Proof that lepus-core never allocates: a counting global allocator wraps the system one,
//! and every core operation (encoding, decoding, rewriting, matching, routing, deciding
//! retries, the RPC table) runs between two readings of this thread's allocation count.
//!
//! Setup (building inputs, the test harness itself) may allocate; only the measured closures
//! must not. The count is per thread so that other tests running in parallel cannot disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use lepus_core::correlation::{PendingArray, Slot};
use lepus_core::envelope::{
    decode_json, decode_json_raw, decode_json_raw_with, decode_json_with, decode_postcard,
    decode_postcard_cobs, encode_json, encode_postcard, encode_postcard_cobs, rewrite_json_retry,
    rewrite_json_with, DecodeError, DecodeLimits, Envelope, Metadata, MetadataEdits,
};
use lepus_core::exchange::{Exchange, ExchangeKind, Routing};
use lepus_core::headers::{self, FieldValue};
use lepus_core::retry::{decide, Backoff, Outcome, RetryMetadata, Strategy};
use lepus_core::router::TopicRouter;
use lepus_core::topic;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a plain
// thread-local cell that never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    let after = ALLOCATIONS.with(Cell::get);
    (after - before, result)
}

fn assert_no_alloc<R>(what: &str, f: impl FnOnce() -> R) -> R {
    let (count, result) = allocations_in(f);
    assert_eq!(count, 0, "{what} allocated {count} times");
    result
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the guard: if counting were broken, every other assertion would pass vacuously.
    let (count, v) = allocations_in(|| vec![1u8, 2, 3]);
    assert_eq!(v.len(), 3);
    assert!(
        count >= 1,
        "counting allocator did not see a Vec allocation"
    );
}

#[test]
fn topic_matching_and_routing_do_not_allocate() {
    let matched = assert_no_alloc("topic::matches", || {
        [
            topic::matches("mailer.ad.*", "mailer.ad.expired"),
            topic::matches("mailer.#", "mailer.ad.expired"),
            topic::matches(
                "#.#.#.#.#.#.b",
                "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a",
            ),
            topic::try_matches("*", "").unwrap_or(true),
        ]
    });
    assert_eq!(matched, [true, true, false, false]);

    let mut router: Box<TopicRouter<u8, 64, 128, 512, 32>> = Box::new(TopicRouter::new());
    let mut out = [0u8; 8];
    let n = assert_no_alloc("TopicRouter bind/route/unbind", || {
        router.bind("mailer.ad.expired", 1).unwrap();
        router.bind("mailer.ad.*", 2).unwrap();
        router.bind("mailer.#", 2).unwrap();
        router.bind("mailer.user.*", 3).unwrap();
        let n = router.route("mailer.ad.expired", &mut out).unwrap();
        assert!(router.unbind("mailer.user.*", 3));
        n
    });
    let mut routed = out[..n].to_vec();
    routed.sort_unstable();
    assert_eq!(
        routed,
        [1, 2],
        "queue 2 is bound twice and must get the message once"
    );
}

#[test]
fn exchange_and_headers_routing_do_not_allocate() {
    let args = [
        ("x-match", FieldValue::Str("any")),
        ("format", FieldValue::Str("pdf")),
    ];
    let headers_in = [
        ("format", FieldValue::Str("pdf")),
        ("size", FieldValue::Int(3)),
    ];
    let mut fanout: Exchange<'_, u8, 4> = Exchange::new(ExchangeKind::Fanout);
    let mut direct: Exchange<'_, u8, 4> = Exchange::new(ExchangeKind::Direct);
    let mut by_headers: Exchange<'_, u8, 4> = Exchange::new(ExchangeKind::Headers);
    let mut out = [0u8; 4];
    let counts = assert_no_alloc("Exchange bind/route and headers::matches", || {
        fanout.bind("", &[], 1).unwrap();
        fanout.bind("", &[], 2).unwrap();
        direct.bind("invoice.created", &[], 3).unwrap();
        by_headers.bind("", &args, 4).unwrap();
        let message = Routing {
            routing_key: "invoice.created",
            headers: &headers_in,
        };
        let a = fanout.route(&message, &mut out).unwrap();
        let b = direct.route(&message, &mut out).unwrap();
        let c = by_headers.route(&message, &mut out).unwrap();
        (a, b, c, headers::matches(&args, &headers_in))
    });
    assert_eq!(counts, (2, 1, 1, true));
}

#[test]
fn retry_decisions_do_not_allocate() {
    let mut meta = RetryMetadata {
        strategy: Strategy::Repeat,
        limit: Some(5),
        ..Default::default()
    };
    meta.intervals = Some([15_000u32, 30_000, 60_000].into_iter().collect());
    let backoff = RetryMetadata {
        strategy: Strategy::Backoff,
        limit: Some(4),
        backoff: Some(Backoff {
            base_ms: 100,
            factor: 3,
            max_ms: 5_000,
            jitter: true,
        }),
        ..Default::default()
    };
    let decisions = assert_no_alloc("retry::decide", || {
        let mut delays = [0u32; 6];
        let mut state = meta.clone();
        let mut retries = 0;
        while let lepus_core::Decision::Retry { delay_ms, next } =
            decide(&state, Outcome::Transient, 7)
        {
            delays[retries] = delay_ms;
            retries += 1;
            state = next;
        }
        let b = decide(&backoff, Outcome::Transient, 12_345);
        (
            retries,
            delays,
            matches!(b, lepus_core::Decision::Retry { .. }),
            decide(&meta, Outcome::Success, 0),
        )
    });
    assert_eq!(decisions.0, 5);
    assert_eq!(decisions.1, [15_000, 30_000, 60_000, 60_000, 60_000, 0]);
    assert!(decisions.2);
    assert_eq!(decisions.3, lepus_core::Decision::Ack);
}

#[test]
fn rpc_table_does_not_allocate() {
    let mut table: Box<PendingArray<u32, 64>> = Box::new(PendingArray::new());
    let outcome = assert_no_alloc("rpc table", || {
        for i in 0..10u32 {
            table
                .register(
                    0xfeed_0000_0000_0000_0000_0000_0000_0000 | u128::from(i),
                    1_000,
                    i,
                )
                .unwrap();
        }
        let reply = table
            .complete(0xfeed_0000_0000_0000_0000_0000_0000_0003, 500)
            .map(|f| f.value);
        let duplicate = table
            .complete(0xfeed_0000_0000_0000_0000_0000_0000_0003, 501)
            .is_err();
        let group = table
            .open_group(2_000, &[1, 2, 3], |id| id as u32 * 100)
            .unwrap();
        let mut expired = 0;
        table.expire(1_000, |_| expired += 1);
        let progress = table.group_progress(group).map(|p| p.remaining);
        (reply, duplicate, expired, progress, table.len())
    });
    assert_eq!(outcome, (Ok(3), true, 9, Some(3), 3));
    let _ = Slot::<u32>::default;
}

#[test]
fn ack_window_does_not_allocate() {
    let mut window: Box<lepus_core::AckWindow<64>> =
        Box::new(lepus_core::AckWindow::new(lepus_core::AckPolicy::default()));
    let flushed = assert_no_alloc("ack window", || {
        let mut last = 0;
        for tag in 1..=100u64 {
            let _ = window.receive(tag);
        }
        for tag in (1..=64u64).rev() {
            if tag % 7 == 0 {
                window.settled(tag, tag).unwrap();
            } else {
                window.complete(tag, tag).unwrap();
            }
            if let Some(t) = window.flush_due(tag) {
                last = t;
            }
        }
        (last, window.untracked(), window.next_deadline())
    });
    assert_eq!(flushed, (64, 36, None));
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct SendAdExpiredMail {
    #[serde(rename = "adId")]
    ad_id: u32,
    subject: heapless::String<32>,
}

#[test]
fn envelope_encoding_decoding_and_rewriting_do_not_allocate() {
    // The PHP side's form: numeric strings, escapes, an unknown key.
    let php = br#"{"payload":{"adId":1,"subject":"Ad \"7\" expired"},"metadata":{"className":"App\\Mail\\SendAdExpiredMail","retryStrategy":"repeat","retryLimit":"5","retryCount":"0","retryInterval":[15,30,60,300,86400],"traceId":"abc"}}"#;
    let mut json = [0u8; 512];
    let mut rewritten = [0u8; 512];
    let mut postcard = [0u8; 256];
    let mut framed = [0u8; 256];
    let results = assert_no_alloc("envelope encode/decode/rewrite", || {
        let decoded = decode_json::<SendAdExpiredMail>(php).unwrap();
        let class_ok = decoded.metadata.class_name == "App\\Mail\\SendAdExpiredMail";
        let raw = decode_json_raw(php).unwrap();
        let json_len = encode_json(&decoded, &mut json).unwrap();
        let rewritten_len = rewrite_json_retry(php, &mut rewritten).unwrap();
        let again = decode_json_raw(&rewritten[..rewritten_len]).unwrap();
        let postcard_len = encode_postcard(&decoded, &mut postcard).unwrap();
        let back = decode_postcard::<SendAdExpiredMail>(&postcard[..postcard_len]).unwrap();
        let framed_len = encode_postcard_cobs(&decoded, &mut framed).unwrap();
        let unframed =
            decode_postcard_cobs::<SendAdExpiredMail>(&mut framed[..framed_len]).unwrap();
        let fresh = Envelope {
            payload: 3u8,
            metadata: Metadata::new("Tick"),
        };
        let fresh_len = encode_json(&fresh, &mut json[json_len..]).unwrap();
        (
            class_ok,
            decoded.payload.subject.len(),
            raw.payload == again.payload,
            again.metadata.retry.count,
            back.payload == decoded.payload,
            unframed.payload == decoded.payload,
            json_len > postcard_len,
            fresh_len > 0,
        )
    });
    assert_eq!(results, (true, 14, true, 1, true, true, true, true));
}

#[test]
fn one_pass_decoder_paths_do_not_allocate() {
    // The decoder's own paths: a 64 KiB payload string (the eight-byte scan), non-ASCII text
    // (checked as UTF-8 in its string), numbers in every lenient form, and the error path,
    // which checks the whole input for UTF-8 before naming another error.
    let big = [
        &br#"{"payload":{"text":""#[..],
        &b"abcdefgh".repeat(8192),
        br#"","n":[1,-2.5e3,0.125]},"metadata":{"className":"Caf\u00e9 "#,
        "é".as_bytes(),
        br#"","retryLimit":"5.0","retryInterval":[0.05,"15",86400],"retryBackoff":{"base":1,"max":"300","factor":2,"jitter":true}}}"#,
    ]
    .concat();
    let bad_utf8 = b"{\"payload\":1 ,\"metadata\":{\"className\":\"C\"}} \xff";
    let results = assert_no_alloc("one-pass decoder", || {
        let raw = decode_json_raw(&big).map(|r| (r.payload.len(), r.metadata.retry.limit));
        let bad = decode_json_raw(bad_utf8).map(|r| r.payload.len());
        (raw, bad)
    });
    assert_eq!(
        results,
        (Ok((65536 + 32, Some(5))), Err(DecodeError::InvalidUtf8))
    );
}

#[test]
fn redelivery_decisions_do_not_allocate() {
    use lepus_core::redelivery::{decide, earlier_deliveries, DeliveryInfo, Redelivery};
    let out = assert_no_alloc("redelivery::decide", || {
        (
            earlier_deliveries(DeliveryInfo {
                redelivered: true,
                counted: Some(2),
                ..Default::default()
            }),
            decide(
                DeliveryInfo {
                    redelivered: true,
                    ..Default::default()
                },
                5,
            ),
            decide(
                DeliveryInfo {
                    redelivered: true,
                    quorum_count: Some(9),
                    ..Default::default()
                },
                5,
            ),
            // An untrusted header claim is clamped below the limit.
            decide(
                DeliveryInfo {
                    counted: Some(1000),
                    ..Default::default()
                },
                5,
            ),
        )
    });
    assert_eq!(
        out,
        (
            3,
            Redelivery::Recount { deliveries: 1 },
            Redelivery::DeadLetter { deliveries: 10 },
            Redelivery::Handle {
                deliveries: 5,
                redelivered: true
            }
        )
    );
}

#[test]
fn envelope_limits_and_byte_order_mark_do_not_allocate() {
    // 1000 levels of payload behind a byte-order mark, and 100,000 unclosed brackets.
    let levels = 1000;
    let deep = [
        &b"\xEF\xBB\xBF{\"payload\":"[..],
        &br#"{"a":"#.repeat(levels),
        b"1",
        &b"}".repeat(levels),
        br#","metadata":{"className":"Deep","retryCount":0}}"#,
    ]
    .concat();
    let huge = [&br#"{"payload":"#[..], &b"[".repeat(100_000)].concat();
    let limits = DecodeLimits::new().payload_depth(1024).unwrap();
    let mut out = vec![0u8; deep.len() + 64];
    let mut scratch = [0u8; 16];
    let results = assert_no_alloc("envelope decode with limits", || {
        let raw = decode_json_raw_with(&deep, &limits).map(|r| r.payload.len());
        let typed = decode_json_with::<serde::de::IgnoredAny>(&deep, &mut scratch, &limits)
            .map(|e| e.metadata.class_name == "Deep");
        let rewritten = rewrite_json_with(&deep, &MetadataEdits::retry_count(1), &limits, &mut out);
        let default = decode_json_raw(&deep).map(|r| r.payload.len());
        let too_deep = decode_json_raw_with(&huge, &limits).map(|r| r.payload.len());
        (raw, typed, rewritten.is_ok(), default, too_deep)
    });
    assert_eq!(
        results,
        (
            Ok(levels * 6 + 1),
            Ok(true),
            true,
            Err(DecodeError::TooDeep {
                offset: 3 + 11 + 128 * 5,
                limit: 128
            }),
            Err(DecodeError::TooDeep {
                offset: 11 + 1024,
                limit: 1024
            }),
        )
    );
}

#[test]
fn token_bucket_does_not_allocate() {
    use lepus_core::rate::{Rate, Take, TokenBucket};
    let out = assert_no_alloc("rate::TokenBucket", || {
        let rate = Rate::parse("10/s").ok()?;
        let mut bucket = TokenBucket::new(rate, 2, 0).ok()?;
        Some((
            bucket.take(0),
            bucket.take(0),
            bucket.take(0),
            bucket.available(250_000),
            bucket.next_token_us(u64::MAX),
        ))
    });
    assert_eq!(
        out,
        Some((
            Take::Granted,
            Take::Granted,
            Take::Wait { micros: 100_000 },
            2,
            0
        ))
    );
}

#[test]
fn schedule_decisions_do_not_allocate() {
    use lepus_core::schedule::{due, Every, Missed};
    let mut ticks = [0u64; 8];
    let (skip, once) = assert_no_alloc("schedule::due", || {
        let every = Every::new(10).unwrap_or(Every::new(1).unwrap());
        let skip = due(&every, Missed::Skip, 15, 0, 100, &mut ticks);
        let once = due(&every, Missed::RunOnce, 15, 0, 100, &mut ticks);
        (skip, once)
    });
    assert_eq!((skip.count, skip.settled, skip.missed), (2, 100, true));
    assert_eq!((once.count, once.settled), (3, 100));
    assert_eq!(ticks[..3], [80, 90, 100]);
}

#[test]
fn traceparent_parsing_and_writing_do_not_allocate() {
    use lepus_core::traceparent::{TraceParent, TRACEPARENT_LEN};
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let bad = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    let (parsed, refused, same) = assert_no_alloc("traceparent parse/write", || {
        let parsed = TraceParent::parse(good);
        let refused = TraceParent::parse(bad).is_err();
        let mut out = [0u8; TRACEPARENT_LEN];
        let same = parsed.map(|tp| tp.write(&mut out) == good);
        (parsed.is_ok(), refused, same)
    });
    assert!(parsed && refused && same == Ok(true));
}
