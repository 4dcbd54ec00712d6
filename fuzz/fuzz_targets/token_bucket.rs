//! Fuzzes the token bucket against a slow reference: credit advanced one microsecond at a
//! time and capped at every step, waits counted by stepping. Time moves forwards and
//! backwards by arbitrary amounts; the bucket must agree on every take and every count, and a
//! wait it names while time moves forwards must be exact (a token one microsecond earlier is
//! refused; after time went backwards a wait counts from the latest time seen). Also reads
//! arbitrary text as a rate.
#![no_main]

use lepus_core::rate::reference::SteppedBucket;
use lepus_core::rate::{Rate, Take, TokenBucket};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    if u.arbitrary()? {
        let text: &str = u.arbitrary()?;
        let _ = Rate::parse(text);
    }
    // Small values, so that the stepping reference stays fast.
    let count: u32 = u.int_in_range(1..=50)?;
    let period: u64 = u.int_in_range(1..=5_000)?;
    let burst: u32 = u.int_in_range(1..=8)?;
    let Ok(mut bucket) = TokenBucket::new(Rate::new(count, period), burst, 0) else {
        panic!("valid bucket refused");
    };
    let mut model = SteppedBucket::new(count, period, burst);
    let (mut now, mut latest): (u64, u64) = (0, 0);
    for _ in 0..u.int_in_range(0..=200)? {
        let step: i64 = u.int_in_range(-100..=2_000)?;
        now = now.saturating_add_signed(step).min(1_000_000);
        latest = latest.max(now);
        if u.arbitrary()? {
            let got = bucket.take(now);
            assert_eq!(got, model.take(now), "take at {now}");
            if let (Take::Wait { micros }, true) = (got, now == latest) {
                // Exact: one microsecond earlier there is no token (checked on a copy).
                let mut early = bucket.clone();
                assert!(matches!(early.take(now + micros - 1), Take::Wait { .. }));
                let mut due = bucket.clone();
                assert_eq!(due.take(now + micros), Take::Granted);
            }
        } else {
            assert_eq!(u64::from(bucket.available(now)), model.available(now));
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
