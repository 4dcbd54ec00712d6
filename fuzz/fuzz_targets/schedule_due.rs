//! `schedule::due` against a slow reference model: every tick in (settled, now] found by
//! stepping through the multiples of the interval one at a time, split at the cutoff into
//! missed and late-but-due ticks. Also: a buffer of any size never loses a tick (calling again
//! with the returned record yields the rest).
#![no_main]
use libfuzzer_sys::fuzz_target;
use lepus_core::schedule::{due, Every, Missed};

fn reference(interval: u64, policy: Missed, late: u64, settled: u64, now: u64) -> Vec<u64> {
    let cutoff = now.saturating_sub(late);
    let mut missed_last = None;
    let mut out = Vec::new();
    let mut t = (settled / interval + 1) * interval;
    while t <= now {
        if t <= cutoff {
            missed_last = Some(t);
        } else {
            out.push(t);
        }
        t += interval;
    }
    if policy == Missed::RunOnce {
        if let Some(m) = missed_last {
            out.insert(0, m);
        }
    }
    out
}

fuzz_target!(|input: (u16, u16, u32, u16, bool, u8)| {
    let (interval, late, settled, span, run_once, room) = input;
    let interval = u64::from(interval.max(1));
    let (late, settled) = (u64::from(late), u64::from(settled));
    let now = settled + u64::from(span);
    let policy = if run_once { Missed::RunOnce } else { Missed::Skip };
    let Some(every) = Every::new(interval) else { return };
    let want = reference(interval, policy, late, settled, now);
    // Called until nothing is left, with a buffer of `room` (at least 1) ticks.
    let mut buf = vec![0u64; usize::from(room.max(1))];
    let mut got = Vec::new();
    let mut record = settled;
    for _ in 0..=want.len() {
        let d = due(&every, policy, late, record, now, &mut buf);
        got.extend_from_slice(&buf[..d.count]);
        assert!(d.settled >= record, "the record never goes back");
        record = d.settled;
        if d.next.is_none_or(|n| n > now) {
            break;
        }
    }
    assert_eq!(got, want, "{interval} {policy:?} {late} {settled} {now}");
});
