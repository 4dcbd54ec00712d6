use super::*;
use proptest::prelude::{any, prop_assert, prop_assert_eq, prop_oneof, proptest, Just};
use proptest::strategy::Strategy as Gen;

fn intervals(list: &[u32]) -> Intervals {
    Intervals::from_slice(list).unwrap()
}

fn repeat(limit: Option<u32>, count: u32, list: Option<&[u32]>) -> RetryMetadata {
    RetryMetadata {
        strategy: Strategy::Repeat,
        limit,
        count,
        intervals: list.map(intervals),
        backoff: None,
    }
}

fn backoff(limit: u32, count: u32, b: Backoff) -> RetryMetadata {
    RetryMetadata {
        strategy: Strategy::Backoff,
        limit: Some(limit),
        count,
        intervals: None,
        backoff: Some(b),
    }
}

fn retry_delay(d: &Decision) -> Option<u32> {
    match d {
        Decision::Retry { delay_ms, .. } => Some(*delay_ms),
        _ => None,
    }
}

#[test]
fn talk_example_declared_intervals() {
    // Slide 40: retryLimit 5, intervals [15, 30, 60, 300, 86400] seconds.
    let list = [15_000, 30_000, 60_000, 300_000, 86_400_000];
    let mut meta = repeat(Some(5), 0, Some(&list));
    let mut delays = Vec::new();
    loop {
        match decide(&meta, Outcome::Transient, 0) {
            Decision::Retry { delay_ms, next } => {
                assert_eq!(next.count, meta.count + 1);
                delays.push(delay_ms);
                meta = next;
            }
            Decision::DeadLetter { reason } => {
                assert_eq!(reason, DeadLetterReason::RetriesExhausted);
                break;
            }
            Decision::Ack => panic!("transient failure acked"),
        }
    }
    assert_eq!(delays, list);
}

#[test]
fn decision_table() {
    use DeadLetterReason as R;
    let dl = |reason| Decision::DeadLetter { reason };
    let ignore = RetryMetadata {
        strategy: Strategy::Ignore,
        ..Default::default()
    };
    let unknown = RetryMetadata {
        strategy: Strategy::Unknown,
        limit: Some(9),
        ..Default::default()
    };
    let cases: Vec<(RetryMetadata, Outcome, Decision)> = vec![
        (RetryMetadata::default(), Outcome::Success, Decision::Ack),
        (
            RetryMetadata::default(),
            Outcome::Transient,
            dl(R::RetryIgnored),
        ),
        (RetryMetadata::default(), Outcome::Rejected, dl(R::Rejected)),
        (ignore.clone(), Outcome::Transient, dl(R::RetryIgnored)),
        (ignore, Outcome::Success, Decision::Ack),
        (unknown.clone(), Outcome::Transient, dl(R::UnknownStrategy)),
        (unknown, Outcome::Success, Decision::Ack),
        (repeat(Some(5), 0, None), Outcome::Rejected, dl(R::Rejected)),
        (
            repeat(Some(5), 5, None),
            Outcome::Transient,
            dl(R::RetriesExhausted),
        ),
        (
            repeat(Some(5), 900, None),
            Outcome::Transient,
            dl(R::RetriesExhausted),
        ),
        (
            repeat(Some(5), u32::MAX, None),
            Outcome::Transient,
            dl(R::RetriesExhausted),
        ),
        (
            repeat(Some(0), 0, None),
            Outcome::Transient,
            dl(R::RetriesExhausted),
        ),
        (
            repeat(Some(5), 0, Some(&[])),
            Outcome::Transient,
            dl(R::EmptyRetryInterval),
        ),
        (
            repeat(Some(5), 9, Some(&[])),
            Outcome::Transient,
            dl(R::EmptyRetryInterval),
        ),
        (
            repeat(Some(5), 0, Some(&[])),
            Outcome::Success,
            Decision::Ack,
        ),
        (repeat(Some(5), 9, None), Outcome::Success, Decision::Ack),
        (
            repeat(None, DEFAULT_RETRY_LIMIT, None),
            Outcome::Transient,
            dl(R::RetriesExhausted),
        ),
        (
            repeat(Some(2), 1, None),
            Outcome::Transient,
            Decision::Retry {
                delay_ms: 0,
                next: repeat(Some(2), 2, None),
            },
        ),
        (
            repeat(None, 0, Some(&[7])),
            Outcome::Transient,
            Decision::Retry {
                delay_ms: 7,
                next: repeat(None, 1, Some(&[7])),
            },
        ),
        (
            repeat(Some(u32::MAX), u32::MAX - 1, Some(&[1, 2])),
            Outcome::Transient,
            Decision::Retry {
                delay_ms: 2,
                next: repeat(Some(u32::MAX), u32::MAX, Some(&[1, 2])),
            },
        ),
    ];
    for (i, (meta, outcome, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            decide(&meta, outcome, 12345),
            want,
            "case {i}: {meta:?} {outcome:?}"
        );
    }
}

#[test]
fn interval_index_is_min_of_count_and_last() {
    let list = [10, 20, 30];
    for (count, want) in [(0, 10), (1, 20), (2, 30), (3, 30), (8, 30)] {
        let d = decide(&repeat(Some(10), count, Some(&list)), Outcome::Transient, 0);
        assert_eq!(retry_delay(&d), Some(want), "count {count}");
    }
}

#[test]
fn missing_backoff_uses_default() {
    let meta = RetryMetadata {
        strategy: Strategy::Backoff,
        count: 2,
        ..Default::default()
    };
    let d = decide(&meta, Outcome::Transient, 0);
    assert_eq!(retry_delay(&d), Some(4_000));
}

#[test]
fn backoff_sequence_through_decide() {
    let b = Backoff {
        base_ms: 250,
        factor: 3,
        max_ms: 5_000,
        jitter: false,
    };
    let mut meta = backoff(6, 0, b);
    let mut delays = Vec::new();
    while let Decision::Retry { delay_ms, next } = decide(&meta, Outcome::Transient, 7) {
        delays.push(delay_ms);
        meta = next;
    }
    assert_eq!(delays, [250, 750, 2_250, 5_000, 5_000, 5_000]);
    assert_eq!(meta.count, 6);
    assert_eq!(
        decide(&meta, Outcome::Transient, 7),
        Decision::DeadLetter {
            reason: DeadLetterReason::RetriesExhausted
        }
    );
}

#[test]
fn backoff_delay_table() {
    let b = |base_ms, factor, max_ms| Backoff {
        base_ms,
        factor,
        max_ms,
        jitter: false,
    };
    let cases = [
        (b(100, 2, 10_000), 0, 100),
        (b(100, 2, 10_000), 1, 200),
        (b(100, 2, 10_000), 6, 6_400),
        (b(100, 2, 10_000), 7, 10_000),
        (b(100, 2, 10_000), u32::MAX, 10_000),
        (b(100, 0, 10_000), 5, 100), // factor 0 acts as 1
        (b(100, 1, 10_000), 5, 100),
        (b(0, 2, 10_000), 5, 0),  // base 0: immediate
        (b(500, 2, 300), 0, 300), // cap below base
        (b(u32::MAX, u32::MAX, u32::MAX), u32::MAX, u32::MAX),
        (b(3, 10, u32::MAX), 9, u32::MAX), // 3e9 saturates? no: 3_000_000_000 fits
    ];
    for (i, (bo, k, want)) in cases.into_iter().enumerate() {
        let want = if i == 10 { 3_000_000_000 } else { want };
        assert_eq!(backoff_delay(&bo, k, 0), want, "case {i}");
    }
    assert_eq!(backoff_delay(&b(3, 10, u32::MAX), 10, 0), u32::MAX); // 3e10 saturates
}

#[test]
fn equal_jitter_stays_in_upper_half() {
    let bo = Backoff {
        base_ms: 1000,
        factor: 2,
        max_ms: 60_000,
        jitter: true,
    };
    // d = 4000 at k = 2: the result lies in [2000, 4000].
    assert_eq!(backoff_delay(&bo, 2, 0), 2000);
    assert_eq!(backoff_delay(&bo, 2, 2000), 4000);
    assert_eq!(backoff_delay(&bo, 2, 2001), 2000);
    assert_eq!(backoff_delay(&bo, 2, u32::MAX), 2000 + u32::MAX % 2001);
    // Odd d = 1: lies in [1, 1].
    let one = Backoff {
        base_ms: 1,
        factor: 1,
        max_ms: 10,
        jitter: true,
    };
    assert_eq!(backoff_delay(&one, 0, u32::MAX), 1);
    let big = Backoff {
        base_ms: u32::MAX,
        factor: 2,
        max_ms: u32::MAX,
        jitter: true,
    };
    assert_eq!(backoff_delay(&big, 3, u32::MAX), u32::MAX);
}

#[test]
fn reasons_round_trip_and_are_distinct() {
    let mut seen = std::collections::HashSet::new();
    for r in DeadLetterReason::ALL {
        assert!(seen.insert(r.as_str()), "duplicate wire string {r}");
        assert_eq!(DeadLetterReason::from_wire(r.as_str()), Some(r));
        assert_eq!(r.to_string(), r.as_str());
    }
    assert_eq!(
        DeadLetterReason::RetriesExhausted.as_str(),
        "retries-exhausted"
    );
    assert_eq!(
        DeadLetterReason::EmptyRetryInterval.as_str(),
        "empty-retry-interval"
    );
    assert_eq!(DeadLetterReason::from_wire("Rejected"), None);
    assert_eq!(DeadLetterReason::from_wire(""), None);
}

#[test]
fn with_default_fills_only_unspecified() {
    let policy = repeat(Some(4), 99, Some(&[5]));
    let bare = RetryMetadata {
        count: 2,
        ..Default::default()
    };
    assert_eq!(bare.with_default(&policy), repeat(Some(4), 2, Some(&[5])));
    let own_limit = RetryMetadata {
        limit: Some(1),
        count: 1,
        ..Default::default()
    };
    assert_eq!(
        own_limit.with_default(&policy),
        repeat(Some(1), 1, Some(&[5]))
    );
    let explicit = RetryMetadata {
        strategy: Strategy::Ignore,
        ..Default::default()
    };
    assert_eq!(explicit.with_default(&policy), explicit);
    let unknown = RetryMetadata {
        strategy: Strategy::Unknown,
        ..Default::default()
    };
    assert_eq!(unknown.with_default(&policy), unknown);
    assert_eq!(
        decide(&bare.with_default(&policy), Outcome::Transient, 0).dead_letter_reason(),
        None
    );
}

fn any_strategy() -> impl Gen<Value = Strategy> {
    prop_oneof![
        Just(Strategy::Unspecified),
        Just(Strategy::Ignore),
        Just(Strategy::Repeat),
        Just(Strategy::Backoff),
        Just(Strategy::Unknown),
    ]
}

fn any_backoff() -> impl Gen<Value = Backoff> {
    (0u32..5_000, 0u32..5, 0u32..1_000_000, any::<bool>()).prop_map(
        |(base_ms, factor, max_ms, jitter)| Backoff {
            base_ms,
            factor,
            max_ms,
            jitter,
        },
    )
}

fn any_meta() -> impl Gen<Value = RetryMetadata> {
    (
        any_strategy(),
        proptest::option::of(0u32..40),
        0u32..50,
        proptest::option::of(proptest::collection::vec(any::<u32>(), 0..=MAX_INTERVALS)),
        proptest::option::of(any_backoff()),
    )
        .prop_map(|(strategy, limit, count, list, backoff)| RetryMetadata {
            strategy,
            limit,
            count,
            intervals: list.map(|l| intervals(&l)),
            backoff,
        })
}

proptest! {
    #[test]
    fn deliveries_never_exceed_limit_plus_one(
        meta in any_meta(),
        randoms in proptest::collection::vec(any::<u32>(), 64),
    ) {
        let limit = meta.effective_limit();
        let start = meta.count;
        let mut cur = meta.clone();
        let mut deliveries: u64 = 1;
        let mut i = 0;
        let last = loop {
            let d = decide(&cur, Outcome::Transient, randoms[i % randoms.len()]);
            i += 1;
            match d {
                Decision::Retry { delay_ms, next } => {
                    prop_assert_eq!(next.count, cur.count + 1);
                    prop_assert_eq!(&next.intervals, &cur.intervals);
                    prop_assert_eq!(next.limit, cur.limit);
                    prop_assert_eq!(next.strategy, cur.strategy);
                    prop_assert_eq!(next.backoff, cur.backoff);
                    match cur.strategy {
                        Strategy::Repeat => {
                            let want = match &cur.intervals {
                                None => 0,
                                Some(l) => l[(cur.count as usize).min(l.len() - 1)],
                            };
                            prop_assert_eq!(delay_ms, want);
                        }
                        Strategy::Backoff => {
                            let b = cur.backoff.unwrap_or_default();
                            let plain = Backoff { jitter: false, ..b };
                            let d = backoff_delay(&plain, cur.count, 0);
                            prop_assert!(delay_ms <= d && delay_ms >= d - d / 2);
                            if !b.jitter { prop_assert_eq!(delay_ms, d); }
                        }
                        s => prop_assert!(false, "retry under {:?}", s),
                    }
                    cur = next;
                    deliveries += 1;
                }
                other => break other,
            }
        };
        prop_assert!(deliveries <= u64::from(limit) + 1);
        // Exactly limit - count retries when the strategy retries at all.
        let retried = deliveries - 1;
        prop_assert!(retried <= u64::from(limit.saturating_sub(start)));
        prop_assert!(matches!(last, Decision::DeadLetter { .. }), "transient failure acked");
        if retried > 0 {
            prop_assert_eq!(retried, u64::from(limit - start));
            prop_assert_eq!(last, Decision::DeadLetter { reason: DeadLetterReason::RetriesExhausted });
        }
    }

    #[test]
    fn success_acks_and_rejected_dead_letters(meta in any_meta(), random in any::<u32>()) {
        prop_assert_eq!(decide(&meta, Outcome::Success, random), Decision::Ack);
        prop_assert_eq!(
            decide(&meta, Outcome::Rejected, random),
            Decision::DeadLetter { reason: DeadLetterReason::Rejected }
        );
    }

    #[test]
    fn backoff_is_monotone_and_capped(b in any_backoff(), k in 0u32..64, r in any::<u32>()) {
        let plain = Backoff { jitter: false, ..b };
        let d0 = backoff_delay(&plain, k, r);
        let d1 = backoff_delay(&plain, k + 1, r);
        prop_assert!(d0 <= d1);
        prop_assert!(d1 <= plain.max_ms);
        let j = backoff_delay(&Backoff { jitter: true, ..b }, k, r);
        prop_assert!(j <= d0 && j >= d0 - d0 / 2);
    }

    #[test]
    fn never_panics_on_any_metadata(
        strategy in any_strategy(),
        limit in proptest::option::of(any::<u32>()),
        count in any::<u32>(),
        list in proptest::option::of(proptest::collection::vec(any::<u32>(), 0..=MAX_INTERVALS)),
        base in any::<u32>(), factor in any::<u32>(), max in any::<u32>(), jitter in any::<bool>(),
        random in any::<u32>(),
    ) {
        let meta = RetryMetadata {
            strategy, limit, count,
            intervals: list.map(|l| intervals(&l)),
            backoff: Some(Backoff { base_ms: base, factor, max_ms: max, jitter }),
        };
        if let Decision::Retry { next, .. } = decide(&meta, Outcome::Transient, random) {
            prop_assert_eq!(next.count, count + 1);
            prop_assert!(count < meta.effective_limit());
        }
    }
}
