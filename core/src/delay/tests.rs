use super::*;
use crate::exchange::{Exchange, ExchangeKind, Routing};
use crate::topic::matches;
use proptest::prelude::*;

/// Where a message can be in the reference model of the delay topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Exchange(u8),
    Queue(u8),
    Delivery,
}

/// The reference model: the topology the module documentation describes, built from the
/// bindings of this module and routed with core's headers exchange (levels) and topic
/// matcher (delivery), exchange to exchange, queue to queue. Returns every destination
/// (index into `destinations`) reached, with the wait it was reached after.
fn run_model(
    delay_ms: u64,
    exchange: &str,
    routing_key: &str,
    destinations: &[(&str, &str)],
) -> Vec<(u64, usize)> {
    let key = DestinationKey::new(exchange, routing_key).unwrap();
    let bits: Vec<(&str, bool)> = level_bits(delay_ms).unwrap().collect();
    let headers: Vec<FieldPair<'_>> = bits
        .iter()
        .map(|&(h, bit)| (h, FieldValue::Int(i64::from(bit))))
        .collect();
    let below = |level: u8| {
        if level == 0 {
            Node::Delivery
        } else {
            Node::Exchange(level - 1)
        }
    };
    let mut arrived = Vec::new();
    let mut work = match first_level(delay_ms) {
        Some(level) => vec![(Node::Exchange(level), 0u64)],
        None => vec![(Node::Delivery, 0)],
    };
    let mut hops = 0;
    while let Some((node, waited)) = work.pop() {
        hops += 1;
        assert!(hops < 10_000, "routing loop");
        match node {
            Node::Exchange(level) => {
                let wait = wait_binding(level).unwrap();
                let pass = pass_binding(level).unwrap();
                let mut ex: Exchange<'_, Node, 2> = Exchange::new(ExchangeKind::Headers);
                ex.bind("", &wait, Node::Queue(level)).unwrap();
                ex.bind("", &pass, below(level)).unwrap();
                let mut out = [Node::Delivery; 2];
                let message = Routing {
                    routing_key: key.as_str(),
                    headers: &headers,
                };
                let n = ex.route(&message, &mut out).unwrap();
                assert_eq!(n, 1, "exactly one binding of level {level} matches");
                work.push((out[0], waited));
            }
            Node::Queue(level) => {
                work.push((below(level), waited + level_ttl_ms(level).unwrap()));
            }
            Node::Delivery => {
                for (i, (dest_exchange, binding)) in destinations.iter().enumerate() {
                    let pattern = delivery_pattern(dest_exchange, binding).unwrap();
                    if matches(pattern.as_str(), key.as_str()) {
                        arrived.push((waited, i));
                    }
                }
            }
        }
    }
    arrived.sort_unstable();
    arrived
}

#[test]
fn keys_headers_and_bindings() {
    let key = DestinationKey::new("lepus", "mailer.ad.expired").unwrap();
    assert_eq!(key.as_str(), "lepus.mailer.ad.expired");
    assert_eq!(
        DestinationKey::new("", "mailer").unwrap().as_str(),
        "%.mailer"
    );
    // An empty routing key has no words: nothing follows the exchange word.
    assert_eq!(DestinationKey::new("ex", "").unwrap().as_str(), "ex");
    let bits: Vec<_> = level_bits(5).unwrap().collect();
    assert_eq!(
        bits,
        [
            ("lepus-delay-02", true),
            ("lepus-delay-01", false),
            ("lepus-delay-00", true)
        ]
    );
    assert_eq!(level_bits(0).unwrap().count(), 0);
    assert_eq!(level_bits(MAX_DELAY_MS).unwrap().count(), 35);
    assert!(level_bits(MAX_DELAY_MS + 1).is_err());
    assert_eq!(
        wait_binding(3),
        Some([
            ("x-match", FieldValue::Str("all")),
            ("lepus-delay-03", FieldValue::Int(1))
        ])
    );
    assert_eq!(pass_binding(34).map(|b| b[1].1), Some(FieldValue::Int(0)));
    assert_eq!(wait_binding(LEVELS), None);
    assert_eq!(pass_binding(200), None);
    assert_eq!(level_header(35), None);
    assert!(LEVEL_HEADERS
        .iter()
        .all(|h| h.starts_with(LEVEL_HEADER_PREFIX) && !h.starts_with("x-")));
    assert_eq!(
        delivery_pattern("lepus", "mailer.#").unwrap().as_str(),
        "lepus.mailer.#"
    );
}

#[test]
fn the_talks_day_and_a_year_are_exact() {
    for delay in [1, 86_400_000, 365 * 86_400_000, MAX_DELAY_MS] {
        assert_eq!(
            run_model(delay, "", "orders", &[("", "orders")]),
            [(delay, 0)],
            "{delay}"
        );
        let bits: Vec<_> = level_bits(delay).unwrap().collect();
        let read = delay_of(|h| bits.iter().find(|(n, _)| *n == h).map(|&(_, b)| b));
        assert_eq!(read, delay);
    }
    assert_eq!(
        level_bits(MAX_DELAY_MS + 1).err(),
        Some(DelayError::TooLong)
    );
    assert_eq!(level_bits(u64::MAX).err(), Some(DelayError::TooLong));
}

#[test]
fn levels_visited_are_the_set_bits() {
    for delay in [0u64, 1, 2, 3, 5, 1023, 1 << 34, MAX_DELAY_MS, 0b1010_0110] {
        let mut levels = Vec::new();
        let mut at = first_level(delay);
        while let Some(level) = at {
            levels.push(level);
            at = next_level(delay, level);
        }
        let expected: Vec<u8> = (0..LEVELS)
            .rev()
            .filter(|&k| (delay >> k) & 1 == 1)
            .collect();
        assert_eq!(levels, expected, "{delay}");
        let total: u64 = levels.iter().map(|&k| level_ttl_ms(k).unwrap()).sum();
        assert_eq!(total, delay);
    }
    assert_eq!(first_level(MAX_DELAY_MS + 1), None);
    assert_eq!(next_level(7, 0), None);
    assert_eq!(next_level(7, 200), None);
    assert_eq!(level_ttl_ms(LEVELS), None);
    assert_eq!(level_ttl_ms(TOP_LEVEL), Some(1 << 34));
}

#[test]
fn destinations_do_not_collide() {
    // Retries go back to one queue through the default exchange; a user's delayed send goes
    // through a topic exchange to every queue bound to its key, and only there.
    let destinations = [
        ("", "mailer"),
        ("", "mailer.eu"),
        ("lepus", "mailer.#"),
        ("lepus", "mailer.ad.*"),
        ("other", "mailer.#"),
        ("le.pus", "x"),
        ("le", "pus.x"),
    ];
    let cases: [(&str, &str, &[usize]); 7] = [
        ("", "mailer", &[0]),
        ("", "mailer.eu", &[1]),
        ("lepus", "mailer.ad.expired", &[2, 3]),
        ("lepus", "mailer", &[2]),
        ("other", "mailer.x", &[4]),
        ("le.pus", "x", &[5]),
        ("le", "pus.x", &[6]),
    ];
    for (exchange, key, expected) in cases {
        let reached: Vec<usize> = run_model(300, exchange, key, &destinations)
            .into_iter()
            .map(|(waited, i)| {
                assert_eq!(waited, 300);
                i
            })
            .collect();
        assert_eq!(reached, expected, "{exchange:?} {key:?}");
    }
}

#[test]
fn names_that_do_not_fit() {
    let word = "lepus";
    let room = MAX_LEN - word.len() - 1;
    assert!(DestinationKey::new(word, &"k".repeat(room)).is_ok());
    assert_eq!(
        DestinationKey::new(word, &"k".repeat(room + 1)),
        Err(DelayError::KeyTooLong)
    );
    assert_eq!(
        delivery_pattern(word, &"k".repeat(room + 1)),
        Err(DelayError::KeyTooLong)
    );
    // Escaping makes a name longer.
    assert_eq!(
        DestinationKey::new(&".".repeat(90), "k"),
        Err(DelayError::KeyTooLong)
    );
    assert_eq!(
        DestinationKey::new("", "a.#"),
        Err(DelayError::WildcardWord)
    );
    assert_eq!(delivery_pattern("", "*.b"), Err(DelayError::WildcardWord));
    // In a topic exchange's key, `*` and `#` are literal: fine.
    assert!(DestinationKey::new("lepus", "a.#").is_ok());
    assert!(delivery_pattern("lepus", "a.#").is_ok());
}

#[test]
fn exchange_words_round_trip() {
    let mut word = [0u8; 64];
    let mut name = [0u8; 64];
    for exchange in [
        "",
        "lepus",
        "a.b",
        "%",
        "*",
        "#",
        "%2E",
        "x.%.*.#.y",
        "zażółć",
    ] {
        let n = exchange_word(exchange, &mut word).unwrap();
        let w = core::str::from_utf8(&word[..n]).unwrap();
        assert!(!w.contains('.'), "{w}");
        assert!(w != "*" && w != "#");
        let m = exchange_from_word(w, &mut name).unwrap();
        assert_eq!(core::str::from_utf8(&name[..m]).unwrap(), exchange);
    }
    for bad in ["%2", "%zz", "a%", "a.b", ""] {
        assert_eq!(
            exchange_from_word(bad, &mut name),
            Err(DelayError::BadExchangeWord),
            "{bad}"
        );
    }
    assert_eq!(
        exchange_word("abc", &mut [0u8; 2]),
        Err(DelayError::KeyTooLong)
    );
    assert_eq!(
        exchange_from_word("abc", &mut [0u8; 2]),
        Err(DelayError::BadExchangeWord)
    );
}

#[test]
fn parse_refuses_keys_without_an_exchange_word() {
    for key in ["", ".q", ".."] {
        assert_eq!(
            parse_destination(key),
            Err(DelayError::NotADestination),
            "{key}"
        );
    }
    assert_eq!(
        parse_destination("lepus"),
        Ok(Destination {
            exchange_word: "lepus",
            routing_key: ""
        })
    );
    assert_eq!(
        parse_destination("%.a.b"),
        Ok(Destination {
            exchange_word: "%",
            routing_key: "a.b"
        })
    );
}

proptest! {
    #[test]
    fn model_agrees_with_arithmetic(
        delay in 0..=MAX_DELAY_MS,
        exchange in "[a-z.%*#]{0,8}",
        key in "[a-z]{1,4}(\\.[a-z*#]{0,3}){0,4}",
    ) {
        let destination = match DestinationKey::new(&exchange, &key) {
            Ok(k) => k,
            Err(DelayError::WildcardWord) => {
                prop_assert!(exchange.is_empty());
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        };
        let parsed = parse_destination(destination.as_str()).unwrap();
        prop_assert_eq!(parsed.routing_key, key.as_str());
        let mut name = [0u8; 64];
        let n = exchange_from_word(parsed.exchange_word, &mut name).unwrap();
        prop_assert_eq!(&name[..n], exchange.as_bytes());
        // Bound as the destination itself and as a catch-all of another exchange.
        let destinations = [(exchange.as_str(), key.as_str()), ("elsewhere", "#")];
        prop_assert_eq!(run_model(delay, &exchange, &key, &destinations), vec![(delay, 0)]);
        let bits: Vec<_> = level_bits(delay).unwrap().collect();
        prop_assert_eq!(delay_of(|h| bits.iter().find(|(n, _)| *n == h).map(|&(_, b)| b)), delay);
        // Level by level, the sum of the waits is the delay.
        let mut waited = 0;
        let mut at = first_level(delay);
        while let Some(level) = at {
            waited += level_ttl_ms(level).unwrap();
            at = next_level(delay, level);
        }
        prop_assert_eq!(waited, delay);
    }
}
