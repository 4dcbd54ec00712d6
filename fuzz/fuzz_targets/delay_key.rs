//! The delay-level arithmetic against a reference model.
//!
//! Input: 8 bytes of delay, then `exchange 0xFF routing key` as UTF-8 (lossy). Checks that
//! level digits are written only for a delay in range, that they read back to the same delay,
//! that routing them level by level through core's headers exchange with the level bindings
//! waits exactly the delay, that a destination key is written only for a name that fits and
//! reads back to the same destination, reached by its own delivery pattern, and that
//! `parse_destination` never panics on any string.
#![no_main]
use lepus_core::delay::{
    delay_of, delivery_pattern, exchange_from_word, first_level, level_bits, level_ttl_ms,
    next_level, parse_destination, pass_binding, wait_binding, DestinationKey, MAX_DELAY_MS,
};
use lepus_core::exchange::{Exchange, ExchangeKind, Routing};
use lepus_core::headers::{FieldPair, FieldValue};
use lepus_core::topic::matches;
use libfuzzer_sys::fuzz_target;

/// Walks the level exchanges from the first level down, as RabbitMQ would: the total wait
/// before the message reaches the delivery exchange (each level must route to exactly one
/// of its two bindings).
fn model_wait(delay: u64, headers: &[FieldPair<'_>]) -> Option<u64> {
    let mut waited = 0u64;
    let Some(top) = first_level(delay) else {
        return Some(0);
    };
    for level in (0..=top).rev() {
        let wait = wait_binding(level)?;
        let pass = pass_binding(level)?;
        let mut ex: Exchange<'_, bool, 2> = Exchange::new(ExchangeKind::Headers);
        ex.bind("", &wait, true).ok()?;
        ex.bind("", &pass, false).ok()?;
        let mut out = [false; 2];
        let n = ex
            .route(&Routing { routing_key: "", headers }, &mut out)
            .ok()?;
        if n != 1 {
            return None;
        }
        if out[0] {
            waited += level_ttl_ms(level)?;
        }
    }
    Some(waited)
}

fuzz_target!(|data: &[u8]| {
    let Some((delay, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let delay = u64::from_le_bytes(*delay) % (MAX_DELAY_MS + 2);
    let text = String::from_utf8_lossy(rest);
    let _ = parse_destination(&text);
    match level_bits(delay) {
        Err(_) => assert!(delay > MAX_DELAY_MS),
        Ok(bits) => {
            let bits: Vec<(&str, bool)> = bits.collect();
            let headers: Vec<FieldPair<'_>> = bits
                .iter()
                .map(|&(h, b)| (h, FieldValue::Int(i64::from(b))))
                .collect();
            assert_eq!(model_wait(delay, &headers), Some(delay));
            let read = delay_of(|h| bits.iter().find(|(n, _)| *n == h).map(|&(_, b)| b));
            assert_eq!(read, delay);
            let mut walked = 0;
            let mut at = first_level(delay);
            while let Some(level) = at {
                walked += level_ttl_ms(level).unwrap_or(0);
                at = next_level(delay, level);
            }
            assert_eq!(walked, delay);
        }
    }
    let (exchange, key) = text.split_once('\u{FFFD}').unwrap_or((&text, ""));
    let Ok(destination) = DestinationKey::new(exchange, key) else {
        return;
    };
    let parsed = parse_destination(destination.as_str()).expect("a written key reads back");
    assert_eq!(parsed.routing_key, key);
    let mut name = [0u8; 256];
    let n = exchange_from_word(parsed.exchange_word, &mut name).expect("exchange word");
    assert_eq!(&name[..n], exchange.as_bytes());
    if let Ok(pattern) = delivery_pattern(exchange, key) {
        assert!(matches(pattern.as_str(), destination.as_str()));
    }
});
