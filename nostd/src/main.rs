//! A `#![no_std]`, `#![no_main]` program for the host that links and calls every module of
//! `lepus-core`, with no allocator: if the core needed `std` or `alloc`, this would not link.
//! It talks to the outside world only through libc's `write(2)`.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

#[link(name = "c")]
unsafe extern "C" {
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
}

fn print(text: &str) {
    // SAFETY: the pointer and length come from a valid `&str`.
    unsafe {
        write(1, text.as_ptr(), text.len());
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    print("lepus-core no_std check: panic\n");
    loop {}
}

/// A sensor reading, as firmware would send it.
#[derive(serde::Serialize, serde::Deserialize, PartialEq)]
struct Reading {
    sensor: u16,
    millivolts: u32,
}

fn check(ok: bool, what: &str) -> bool {
    if !ok {
        print("lepus-core no_std check failed: ");
        print(what);
        print("\n");
    }
    ok
}

fn run() -> bool {
    use lepus_core::ack::{AckPolicy, AckWindow};
    use lepus_core::envelope::{self, Envelope, Metadata};
    use lepus_core::exchange::{Exchange, ExchangeKind, Routing};
    use lepus_core::headers::FieldValue;
    use lepus_core::retry::{self, Decision, Outcome, Strategy};
    use lepus_core::router::TopicRouter;
    use lepus_core::correlation::PendingArray;
    use lepus_core::topic;

    let mut ok = true;

    // envelope: JSON and COBS-framed postcard, into fixed buffers.
    let mut metadata = Metadata::new("SensorReading");
    metadata.retry.strategy = Strategy::Repeat;
    metadata.retry.limit = Some(3);
    let reading = Envelope {
        payload: Reading {
            sensor: 7,
            millivolts: 3300,
        },
        metadata,
    };
    let mut json = [0u8; 256];
    let mut frame = [0u8; 64];
    let json_len = envelope::encode_json(&reading, &mut json).unwrap_or(0);
    let frame_len = envelope::encode_postcard_cobs(&reading, &mut frame).unwrap_or(0);
    ok &= check(json_len > frame_len && frame_len > 0, "envelope encode");
    let decoded = envelope::decode_json::<Reading>(json.get(..json_len).unwrap_or(&[]));
    ok &= check(
        matches!(decoded, Ok(ref e) if e.payload == reading.payload),
        "envelope decode",
    );
    let mut rewritten = [0u8; 256];
    let n = envelope::rewrite_json_retry(json.get(..json_len).unwrap_or(&[]), &mut rewritten);
    ok &= check(n.is_ok(), "envelope rewrite");

    // envelope limits: a deeper payload than the default allows, behind a byte-order mark.
    let deep = envelope::DecodeLimits::new().payload_depth(200);
    let mut body = [0u8; 512];
    let mut len = 0;
    for part in [
        &b"\xEF\xBB\xBF{\"payload\":"[..],
        &[b'['; 200],
        &[b']'; 200],
        b",\"metadata\":{\"className\":\"Deep\"}}",
    ] {
        if let Some(slot) = body.get_mut(len..len + part.len()) {
            slot.copy_from_slice(part);
            len += part.len();
        }
    }
    let body = body.get(..len).unwrap_or(&[]);
    let raw = deep.map(|limits| envelope::decode_json_raw_with(body, &limits));
    ok &= check(
        matches!(raw, Ok(Ok(ref r)) if r.payload.len() == 400)
            && matches!(
                envelope::decode_json_raw(body),
                Err(envelope::DecodeError::TooDeep { limit: 128, .. })
            ),
        "envelope limits",
    );

    // retry: a transient failure under "repeat" is retried.
    let decision = retry::decide(&reading.metadata.retry, Outcome::Transient, 0);
    ok &= check(matches!(decision, Decision::Retry { .. }), "retry decision");

    // delay levels: a day's digits and destination, read back.
    let day = lepus_core::delay::level_bits(86_400_000)
        .map(|bits| {
            let mut read = 0u64;
            for (header, bit) in bits {
                read |= lepus_core::delay::delay_of(|h| (h == header).then_some(bit));
            }
            read
        })
        .unwrap_or(0);
    let key = lepus_core::delay::DestinationKey::new("", "orders");
    let parsed = key
        .as_ref()
        .ok()
        .and_then(|k| lepus_core::delay::parse_destination(k.as_str()).ok())
        .map(|d| d.routing_key == "orders");
    ok &= check(day == 86_400_000 && parsed == Some(true), "delay levels");

    // topic + router + exchange.
    ok &= check(
        topic::matches("sensor.*.voltage", "sensor.7.voltage"),
        "topic match",
    );
    let mut router: TopicRouter<u8, 16, 32, 128, 8> = TopicRouter::new();
    let bound = router.bind("sensor.#", 1).is_ok() && router.bind("sensor.*.voltage", 2).is_ok();
    let mut out = [0u8; 4];
    let routed = router.route("sensor.7.voltage", &mut out).unwrap_or(0);
    ok &= check(bound && routed == 2, "topic router");
    let args = [
        ("x-match", FieldValue::Str("all")),
        ("unit", FieldValue::Str("mV")),
    ];
    let mut by_headers: Exchange<'_, u8, 4> = Exchange::new(ExchangeKind::Headers);
    let headers = [("unit", FieldValue::Str("mV"))];
    let message = Routing {
        routing_key: "",
        headers: &headers,
    };
    let routed =
        by_headers.bind("", &args, 3).is_ok() && by_headers.route(&message, &mut out) == Ok(1);
    ok &= check(routed, "headers exchange");

    // correlation: one request registered and completed.
    let mut pending: PendingArray<u8, 8> = PendingArray::new();
    let registered = pending.register(0x1234, 1_000, 9).is_ok();
    let completed = matches!(pending.complete(0x1234, 10), Ok(f) if f.value == 9);
    ok &= check(registered && completed, "rpc table");

    // ack: two deliveries finish out of order, one multiple ack covers both.
    let mut acks: AckWindow<8> = AckWindow::new(AckPolicy::default());
    let received = acks.receive(1).is_ok() && acks.receive(2).is_ok();
    let done = acks.complete(2, 0).is_ok() && acks.complete(1, 0).is_ok();
    ok &= check(
        received && done && acks.flush_due(0) == Some(2),
        "ack window",
    );

    // redelivery: a redelivered message on a classic queue is recounted.
    let info = lepus_core::redelivery::DeliveryInfo {
        redelivered: true,
        ..Default::default()
    };
    let recount = lepus_core::redelivery::decide(info, 3);
    ok &= check(
        matches!(recount, lepus_core::Redelivery::Recount { deliveries: 1 })
            && lepus_core::redelivery::earlier_deliveries(info) == 1,
        "redelivery",
    );

    // rate: 10 per second, burst 1: one start now, the next in 100 ms.
    use lepus_core::rate::{Rate, Take, TokenBucket};
    let paced = match TokenBucket::new(Rate::per_second(10), 1, 0) {
        Ok(mut bucket) => {
            bucket.take(0) == Take::Granted
                && bucket.take(0) == Take::Wait { micros: 100_000 }
                && bucket.take(100_000) == Take::Granted
        }
        Err(_) => false,
    };
    ok &= check(paced, "rate");

    // schedule: two ticks of a 10 ms interval due, the older ones missed and skipped.
    let mut ticks = [0u64; 4];
    let due = lepus_core::schedule::Every::new(10).map(|every| {
        lepus_core::schedule::due(&every, lepus_core::Missed::Skip, 15, 0, 100, &mut ticks)
    });
    ok &= check(
        matches!(due, Some(d) if d.count == 2 && d.settled == 100 && d.missed)
            && ticks[..2] == [90, 100],
        "schedule",
    );

    // traceparent: parse, write back, refuse uppercase.
    use lepus_core::traceparent::{TraceParent, TRACEPARENT_LEN};
    let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut out = [0u8; TRACEPARENT_LEN];
    let traced = match TraceParent::parse(header) {
        Ok(tp) => tp.write(&mut out) == header,
        Err(_) => false,
    } && TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_err();
    ok &= check(traced, "traceparent");
    ok
}

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    if run() {
        print("lepus-core no_std check: ok (envelope, retry, topic, router, exchange, headers, correlation, ack, redelivery, rate, schedule, traceparent)\n");
        0
    } else {
        1
    }
}
