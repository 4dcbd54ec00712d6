//! Fuzzes the retry state machine: arbitrary (possibly corrupt) metadata, then a sequence of
//! delivery outcomes. Checks the invariants against a slow reference: success acks, rejection
//! dead-letters, every retry increments the count by one with exactly the declared delay (or a
//! backoff delay recomputed with u128 arithmetic), and deliveries never exceed limit + 1.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use lepus_core::retry::{
    decide, Backoff, DeadLetterReason, Decision, Intervals, Outcome, RetryMetadata, Strategy,
    DEFAULT_RETRY_LIMIT, MAX_INTERVALS,
};

fn metadata(u: &mut Unstructured<'_>) -> Result<RetryMetadata> {
    let strategy = match u.int_in_range(0u8..=4)? {
        0 => Strategy::Unspecified,
        1 => Strategy::Ignore,
        2 => Strategy::Repeat,
        3 => Strategy::Backoff,
        _ => Strategy::Unknown,
    };
    // Small limits and counts most of the time, so sequences reach exhaustion.
    let limit = if u.arbitrary()? {
        Some(if u.arbitrary()? { u.int_in_range(0..=20)? } else { u.arbitrary()? })
    } else {
        None
    };
    let count = if u.arbitrary()? { u.int_in_range(0..=25)? } else { u.arbitrary()? };
    let intervals = if u.arbitrary()? {
        let n = u.int_in_range(0..=MAX_INTERVALS)?;
        let mut v = Intervals::new();
        for _ in 0..n {
            let _ = v.push(u.arbitrary()?);
        }
        Some(v)
    } else {
        None
    };
    let backoff = if u.arbitrary()? {
        Some(Backoff {
            base_ms: u.arbitrary()?,
            factor: u.arbitrary()?,
            max_ms: u.arbitrary()?,
            jitter: u.arbitrary()?,
        })
    } else {
        None
    };
    Ok(RetryMetadata { strategy, limit, count, intervals, backoff })
}

/// Slow reference: `min(max, base * factor^k)` with a factor of 0 read as 1.
fn reference_backoff(b: &Backoff, k: u32) -> u32 {
    let f = u128::from(b.factor.max(1));
    let max = u128::from(b.max_ms);
    let mut d = u128::from(b.base_ms);
    let mut i = 0;
    while i < k && d < max && d != 0 && f > 1 {
        d *= f;
        i += 1;
    }
    d.min(max) as u32
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let mut meta = metadata(&mut u)?;
    let limit = meta.limit.unwrap_or(DEFAULT_RETRY_LIMIT);
    let start = meta.count;
    let mut deliveries: u64 = 1;
    // Each loop is one delivery; stop when the message leaves the system.
    for _ in 0..64 {
        let outcome = match u.int_in_range(0u8..=5)? {
            0 => Outcome::Success,
            1 => Outcome::Rejected,
            _ => Outcome::Transient,
        };
        let random: u32 = u.arbitrary()?;
        let d = decide(&meta, outcome, random);
        match outcome {
            Outcome::Success => {
                assert_eq!(d, Decision::Ack);
                return Ok(());
            }
            Outcome::Rejected => {
                assert_eq!(d, Decision::DeadLetter { reason: DeadLetterReason::Rejected });
                return Ok(());
            }
            Outcome::Transient => {}
        }
        match d {
            Decision::Ack => panic!("transient failure acked: {meta:?}"),
            Decision::DeadLetter { reason } => {
                let want = match meta.strategy {
                    Strategy::Unspecified | Strategy::Ignore => DeadLetterReason::RetryIgnored,
                    Strategy::Unknown => DeadLetterReason::UnknownStrategy,
                    Strategy::Repeat if meta.intervals.as_ref().is_some_and(|i| i.is_empty()) => {
                        DeadLetterReason::EmptyRetryInterval
                    }
                    _ => {
                        assert!(meta.count >= limit, "dead-lettered with retries left: {meta:?}");
                        DeadLetterReason::RetriesExhausted
                    }
                };
                assert_eq!(reason, want);
                assert_eq!(DeadLetterReason::from_wire(reason.as_str()), Some(reason));
                return Ok(());
            }
            Decision::Retry { delay_ms, next } => {
                assert!(meta.count < limit);
                assert_eq!(next.count, meta.count + 1);
                assert_eq!(
                    (next.strategy, next.limit, &next.intervals, next.backoff),
                    (meta.strategy, meta.limit, &meta.intervals, meta.backoff)
                );
                let k = meta.count;
                match meta.strategy {
                    Strategy::Repeat => {
                        let want = match &meta.intervals {
                            None => 0,
                            Some(l) => l[(k as usize).min(l.len() - 1)],
                        };
                        assert_eq!(delay_ms, want);
                    }
                    Strategy::Backoff => {
                        let b = meta.backoff.unwrap_or_default();
                        let d = reference_backoff(&b, k);
                        if b.jitter {
                            assert!(delay_ms >= d - d / 2 && delay_ms <= d, "{delay_ms} vs {d}");
                        } else {
                            assert_eq!(delay_ms, d);
                        }
                    }
                    s => panic!("retry under {s:?}"),
                }
                deliveries += 1;
                assert!(deliveries <= u64::from(limit.saturating_sub(start)) + 1);
                meta = next;
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
