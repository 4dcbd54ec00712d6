use super::*;

fn every(ms: u64) -> Every {
    Every::new(ms).unwrap()
}

fn run(t: &impl Ticks, policy: Missed, late: u64, settled: u64, now: u64) -> (Vec<u64>, Due) {
    let mut out = [0u64; 64];
    let d = due(t, policy, late, settled, now, &mut out);
    (out[..d.count].to_vec(), d)
}

#[test]
fn zero_interval_is_none() {
    assert_eq!(Every::new(0), None);
    assert_eq!(every(5).interval_ms(), 5);
}

/// (interval, policy, late, settled, now) -> (ticks, new settled, missed).
type Case = (u64, Missed, u64, u64, u64, &'static [u64], u64, bool);

#[test]
fn table() {
    use Missed::{RunOnce, Skip};
    // (interval, policy, late, settled, now) -> ticks, settled, missed
    let cases: &[Case] = &[
        // Nothing due yet.
        (10, Skip, 100, 0, 9, &[], 0, false),
        // On time and a little late: all published.
        (10, Skip, 100, 0, 10, &[10], 10, false),
        (10, Skip, 100, 0, 35, &[10, 20, 30], 30, false),
        // More than `late` late: skipped, or one catch-up tick.
        (10, Skip, 15, 0, 100, &[90, 100], 100, true),
        (10, RunOnce, 15, 0, 100, &[80, 90, 100], 100, true),
        // The cutoff falls between ticks: settled at the cutoff.
        (10, Skip, 15, 0, 104, &[90, 100], 100, true),
        (10, Skip, 25, 0, 104, &[80, 90, 100], 100, true),
        // Late, but nothing between the record and the cutoff.
        (10, RunOnce, 5, 95, 104, &[100], 100, false),
        // A record ahead of the clock: nothing due.
        (10, RunOnce, 5, 500, 104, &[], 500, false),
    ];
    for &(interval, policy, late, settled, now, ticks, new_settled, missed) in cases {
        let (got, d) = run(&every(interval), policy, late, settled, now);
        let case = (interval, policy, late, settled, now);
        assert_eq!(got, ticks, "{case:?}");
        assert_eq!(d.settled, new_settled, "{case:?}");
        assert_eq!(d.missed, missed, "{case:?}");
        assert_eq!(d.next, every(interval).next_after(new_settled), "{case:?}");
    }
}

#[test]
fn a_full_buffer_leaves_the_rest_for_the_next_call() {
    let t = every(1);
    let mut out = [0u64; 3];
    let d = due(&t, Missed::Skip, 1_000, 0, 10, &mut out);
    assert_eq!((d.count, d.settled, d.next), (3, 3, Some(4)));
    assert_eq!(out, [1, 2, 3]);
    let d = due(&t, Missed::Skip, 1_000, d.settled, 10, &mut out);
    assert_eq!(out, [4, 5, 6]);
    assert_eq!(d.settled, 6);
    // An empty buffer: a catch-up tick waits for room; nothing is lost.
    let d = due(&every(10), Missed::RunOnce, 5, 0, 100, &mut []);
    assert_eq!((d.count, d.settled, d.missed), (0, 0, true));
    assert!(d.next.is_some_and(|n| n <= 100));
}

/// Every tick in (settled, now] by stepping one millisecond at a time: the reference model.
fn reference(interval: u64, policy: Missed, late: u64, settled: u64, now: u64) -> Vec<u64> {
    let cutoff = now.saturating_sub(late);
    let all: Vec<u64> = (settled + 1..=now).filter(|t| t % interval == 0).collect();
    let (missed, on_time): (Vec<u64>, Vec<u64>) = all.into_iter().partition(|&t| t <= cutoff);
    let mut out = Vec::new();
    if policy == Missed::RunOnce {
        out.extend(missed.last());
    }
    out.extend(on_time);
    out
}

#[test]
fn agrees_with_the_reference_model() {
    for interval in [1, 3, 7, 10] {
        for late in [1, 5, 12, 40] {
            for settled in 0..30 {
                for now in settled..settled + 60 {
                    for policy in [Missed::Skip, Missed::RunOnce] {
                        let (got, d) = run(&every(interval), policy, late, settled, now);
                        let want = reference(interval, policy, late, settled, now);
                        assert_eq!(got, want, "{interval} {policy:?} {late} {settled} {now}");
                        assert!(d.settled >= settled && d.settled <= now.max(settled));
                    }
                }
            }
        }
    }
}

#[test]
fn extreme_times_never_panic() {
    for interval in [1, 2, 1_000, u64::MAX] {
        for (settled, now) in [(0, 0), (0, u64::MAX), (u64::MAX, u64::MAX), (u64::MAX, 0)] {
            for late in [0, 1, u64::MAX] {
                for policy in [Missed::Skip, Missed::RunOnce] {
                    let mut out = [0u64; 4];
                    let d = due(&every(interval), policy, late, settled, now, &mut out);
                    assert!(d.count <= out.len());
                }
            }
        }
    }
    assert_eq!(every(1_000).next_after(u64::MAX), None);
}
