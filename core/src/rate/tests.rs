use super::reference::SteppedBucket;
use super::*;
use proptest::prelude::*;

const S: u64 = 1_000_000;

fn bucket(rate: Rate, burst: u32) -> TokenBucket {
    TokenBucket::new(rate, burst, 0).unwrap()
}

#[test]
fn ten_per_second_with_burst_one_spaces_starts_by_100_ms() {
    let mut b = bucket(Rate::per_second(10), 1);
    assert_eq!(b.take(0), Take::Granted);
    assert_eq!(b.take(0), Take::Wait { micros: 100_000 });
    assert_eq!(b.take(40_000), Take::Wait { micros: 60_000 });
    assert_eq!(b.take(99_999), Take::Wait { micros: 1 });
    assert_eq!(b.take(100_000), Take::Granted);
    assert_eq!(b.take(100_000), Take::Wait { micros: 100_000 });
}

#[test]
fn a_full_bucket_grants_its_burst_at_once_then_refills_at_the_rate() {
    let mut b = bucket(Rate::per_second(10), 3);
    assert_eq!(b.available(0), 3);
    for _ in 0..3 {
        assert_eq!(b.take(0), Take::Granted);
    }
    assert_eq!(b.take(0), Take::Wait { micros: 100_000 });
    // A long quiet spell fills the bucket to its burst, not beyond.
    assert_eq!(b.available(3_600 * S), 3);
    for _ in 0..3 {
        assert_eq!(b.take(3_600 * S), Take::Granted);
    }
    assert!(matches!(b.take(3_600 * S), Take::Wait { .. }));
}

#[test]
fn a_caller_that_sleeps_the_waits_gets_exactly_the_rate() {
    // 7 per second for 100 s: 1 (the full bucket) + 7 * 100, however the waits round.
    let mut b = bucket(Rate::per_second(7), 1);
    let (mut now, mut granted) = (0, 0);
    while now <= 100 * S {
        match b.take(now) {
            Take::Granted => granted += 1,
            Take::Wait { micros } => now += micros,
        }
    }
    assert_eq!(granted, 701);
}

#[test]
fn a_token_not_taken_is_lost_beyond_the_burst() {
    // Asked only every 300 ms at 10/s with burst 1: one start per ask, not three.
    let mut b = bucket(Rate::per_second(10), 1);
    let granted = (0..100u64)
        .filter(|k| b.take(k * 300_000) == Take::Granted)
        .count();
    assert_eq!(granted, 100);
    assert!(matches!(b.take(99 * 300_000), Take::Wait { .. }));
}

#[test]
fn the_wait_is_exact_to_the_microsecond() {
    // 3 per second: a token every 333,333.3 us, so waits alternate without drift.
    let mut b = bucket(Rate::per_second(3), 1);
    let mut now = 0;
    assert_eq!(b.take(now), Take::Granted);
    for _ in 0..30 {
        let Take::Wait { micros } = b.take(now) else {
            panic!("bucket was empty");
        };
        assert!(matches!(b.take(now + micros - 1), Take::Wait { .. }));
        now += micros;
        assert_eq!(b.take(now), Take::Granted);
    }
    // 30 tokens of 1/3 s each: 10 s, to the microsecond (rounded up).
    assert_eq!(now, 10 * S);
}

#[test]
fn time_going_backwards_adds_nothing_and_does_not_panic() {
    let mut b = bucket(Rate::per_second(1), 1);
    assert_eq!(b.take(10 * S), Take::Granted);
    assert_eq!(b.take(5 * S), Take::Wait { micros: S });
    assert_eq!(b.take(0), Take::Wait { micros: S });
    // Credit is counted from the latest time seen, not from the earlier one.
    assert_eq!(b.take(10 * S + S - 1), Take::Wait { micros: 1 });
    assert_eq!(b.take(11 * S), Take::Granted);
}

#[test]
fn huge_values_saturate_instead_of_panicking() {
    let mut b = TokenBucket::new(Rate::per_hour(u32::MAX), u32::MAX, u64::MAX).unwrap();
    assert_eq!(b.take(u64::MAX), Take::Granted);
    assert_eq!(b.available(0), u32::MAX - 1);
    let mut b = TokenBucket::new(Rate::per_second(u32::MAX), 1, 0).unwrap();
    assert_eq!(b.take(0), Take::Granted);
    assert_eq!(b.take(0), Take::Wait { micros: 1 });
    assert_eq!(b.take(u64::MAX), Take::Granted);
    let mut b = TokenBucket::new(Rate::new(1, u64::MAX), 1, 0).unwrap();
    assert_eq!(b.take(0), Take::Granted);
    assert_eq!(b.take(0), Take::Wait { micros: u64::MAX });
    assert_eq!(b.next_token_us(u64::MAX), 0);
}

#[test]
fn invalid_rates_and_buckets_are_errors() {
    assert_eq!(
        TokenBucket::new(Rate::per_second(0), 1, 0),
        Err(RateError::ZeroCount)
    );
    assert_eq!(
        TokenBucket::new(Rate::new(1, 0), 1, 0),
        Err(RateError::ZeroPeriod)
    );
    assert_eq!(
        TokenBucket::new(Rate::per_second(1), 0, 0),
        Err(RateError::ZeroBurst)
    );
    assert_eq!(
        TokenBucket::new(Rate::new(1, u64::MAX), 2, 0),
        Err(RateError::BucketTooLarge)
    );
    assert_eq!(
        TokenBucket::new(Rate::new(2, u64::MAX), 1, 0),
        Err(RateError::BucketTooLarge)
    );
    assert_eq!(RateError::ZeroBurst.to_string(), "burst is 0");
}

#[test]
fn celery_notation_parses() {
    assert_eq!(Rate::parse("10/s"), Ok(Rate::per_second(10)));
    assert_eq!(Rate::parse(" 100 / m "), Ok(Rate::per_minute(100)));
    assert_eq!(Rate::parse("5/h"), Ok(Rate::per_hour(5)));
    assert_eq!(Rate::parse("4"), Ok(Rate::per_second(4)));
    assert_eq!(Rate::parse("4294967295/s"), Ok(Rate::per_second(u32::MAX)));
    assert_eq!(Rate::parse("0/s"), Err(RateError::ZeroCount));
    for bad in [
        "",
        "/s",
        "10/",
        "10/d",
        "-1/s",
        "+1/s",
        "1.5/s",
        "4294967296/s",
        "10/s/s",
        "ten",
    ] {
        assert_eq!(Rate::parse(bad), Err(RateError::Malformed), "{bad:?}");
    }
    for rate in [Rate::per_second(10), Rate::per_minute(3), Rate::per_hour(1)] {
        assert_eq!(Rate::parse(&rate.to_string()), Ok(rate));
    }
    assert_eq!(Rate::new(3, 1_500_000).to_string(), "3/1500000us");
}

proptest! {
    #[test]
    fn bucket_agrees_with_the_step_by_step_model(
        count in 1u32..20,
        period in 1u64..2_000,
        burst in 1u32..5,
        // (time step, possibly backwards; whether to take or only look)
        steps in proptest::collection::vec((-50i64..400, any::<bool>()), 1..200),
    ) {
        let mut bucket = TokenBucket::new(Rate::new(count, period), burst, 0).unwrap();
        let mut model = SteppedBucket::new(count, period, burst);
        let mut now: u64 = 0;
        for (step, take) in steps {
            now = now.saturating_add_signed(step);
            if take {
                prop_assert_eq!(bucket.take(now), model.take(now), "take at {}", now);
            } else {
                prop_assert_eq!(
                    u64::from(bucket.available(now)),
                    model.available(now),
                    "available at {}", now
                );
            }
        }
    }

    #[test]
    fn never_panics_on_any_input(
        count in any::<u32>(),
        period in any::<u64>(),
        burst in any::<u32>(),
        times in proptest::collection::vec(any::<u64>(), 0..50),
    ) {
        if let Ok(mut bucket) = TokenBucket::new(Rate::new(count, period), burst, 0) {
            for now in times {
                let _ = bucket.take(now);
                let _ = bucket.available(now);
                let _ = bucket.next_token_us(now);
            }
        }
    }

    #[test]
    fn parse_never_panics(text in "\\PC{0,16}") {
        let _ = Rate::parse(&text);
    }
}
