use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

const BATCH: AckPolicy = AckPolicy {
    max_pending: 3,
    max_delay_ms: 10,
    flush_when_idle: false,
};

fn window<const N: usize>(policy: AckPolicy, tags: core::ops::RangeInclusive<u64>) -> AckWindow<N> {
    let mut w = AckWindow::new(policy);
    for t in tags {
        assert_eq!(w.receive(t), Ok(()));
    }
    w
}

#[test]
fn in_order_completions_flush_every_max_pending() {
    let mut w = window::<8>(BATCH, 1..=4);
    assert_eq!(w.complete(1, 0), Ok(()));
    assert_eq!(w.flush_due(0), None);
    assert_eq!(w.complete(2, 1), Ok(()));
    assert_eq!(w.flush_due(1), None);
    assert_eq!(w.complete(3, 2), Ok(()));
    assert_eq!(w.pending(), 3);
    assert_eq!(w.flush_due(2), Some(3));
    assert_eq!(w.pending(), 0);
    assert_eq!(w.in_flight(), 1);
    assert_eq!(w.flush(), None);
}

#[test]
fn an_unfinished_delivery_holds_back_later_ones() {
    let mut w = window::<8>(BATCH, 1..=5);
    for t in 2..=5 {
        assert_eq!(w.complete(t, 0), Ok(()));
    }
    assert_eq!(w.pending(), 0, "tag 1 is still in flight");
    assert_eq!(w.flush_due(100), None);
    assert_eq!(w.flush(), None);
    assert_eq!(w.complete(1, 7), Ok(()));
    assert_eq!(w.pending(), 5);
    assert_eq!(w.flush_due(7), Some(5));
}

#[test]
fn the_delay_flushes_a_small_batch() {
    let mut w = window::<8>(BATCH, 1..=3);
    assert_eq!(w.next_deadline(), None);
    assert_eq!(w.complete(1, 100), Ok(()));
    assert_eq!(w.next_deadline(), Some(110));
    assert_eq!(w.complete(2, 105), Ok(()));
    assert_eq!(w.next_deadline(), Some(110), "the oldest one counts");
    assert_eq!(w.flush_due(109), None);
    assert_eq!(w.flush_due(110), Some(2));
    assert_eq!(w.next_deadline(), None);
}

#[test]
fn idle_flushes_at_once() {
    let policy = AckPolicy {
        flush_when_idle: true,
        ..BATCH
    };
    let mut w = window::<8>(policy, 1..=2);
    assert_eq!(w.complete(2, 0), Ok(()));
    assert_eq!(w.flush_due(0), None);
    assert_eq!(w.complete(1, 0), Ok(()));
    assert_eq!(w.flush_due(0), Some(2));
    assert!(w.is_idle());
}

#[test]
fn settled_deliveries_do_not_block_and_are_never_the_ack_tag() {
    let mut w = window::<8>(BATCH, 1..=4);
    assert_eq!(w.complete(1, 0), Ok(()));
    assert_eq!(w.settled(2, 0), Ok(()));
    assert_eq!(w.complete(3, 0), Ok(()));
    assert_eq!(w.settled(4, 0), Ok(()));
    assert_eq!(w.pending(), 2);
    assert_eq!(w.flush(), Some(3));
    assert!(w.is_idle());
    // Only settled ones: nothing to ack, the window moves on by itself.
    assert_eq!(w.receive(5), Ok(()));
    assert_eq!(w.settled(5, 0), Ok(()));
    assert_eq!(w.flush(), None);
    assert!(w.is_idle());
}

#[test]
fn unknown_and_repeated_tags_are_refused() {
    let mut w = window::<8>(BATCH, 1..=2);
    assert_eq!(w.receive(2), Err(AckError::TagNotIncreasing));
    assert_eq!(w.receive(1), Err(AckError::TagNotIncreasing));
    assert_eq!(w.complete(3, 0), Err(AckError::UnknownTag));
    assert_eq!(w.complete(1, 0), Ok(()));
    assert_eq!(w.complete(1, 0), Err(AckError::UnknownTag));
    assert_eq!(w.settled(1, 0), Err(AckError::UnknownTag));
    assert_eq!(w.flush(), Some(1));
    assert_eq!(w.complete(1, 0), Err(AckError::UnknownTag));
    let mut fresh: AckWindow<4> = AckWindow::default();
    assert_eq!(fresh.receive(0), Err(AckError::TagNotIncreasing));
}

#[test]
fn a_full_window_refuses_until_the_refused_ones_are_settled() {
    let mut w = window::<3>(BATCH, 1..=3);
    assert_eq!(w.receive(4), Err(AckError::WindowFull));
    assert_eq!(w.untracked(), 1);
    assert_eq!(w.complete(1, 0), Ok(()));
    // Room again, but 4 is unsettled: 5 must not be tracked, or an ack up to 5 would cover 4.
    assert_eq!(w.receive(5), Err(AckError::WindowFull));
    assert_eq!(w.untracked(), 2);
    assert_eq!(w.complete(2, 0), Ok(()));
    assert_eq!(w.complete(3, 0), Ok(()));
    assert_eq!(w.flush(), Some(3));
    w.settled_untracked();
    w.settled_untracked();
    assert_eq!(w.receive(6), Ok(()));
    assert_eq!(w.complete(6, 0), Ok(()));
    assert_eq!(w.flush(), Some(6));
    assert_eq!(AckError::WindowFull.to_string(), "ack window is full");
}

#[test]
fn skipped_tags_count_as_settled() {
    let mut w = window::<8>(BATCH, 1..=1);
    assert_eq!(w.receive(4), Ok(()));
    assert_eq!(w.complete(4, 0), Ok(()));
    assert_eq!(w.pending(), 0);
    assert_eq!(w.complete(1, 0), Ok(()));
    assert_eq!(w.flush(), Some(4));
    // An empty window jumps over any gap, however long.
    assert_eq!(w.receive(1_000), Ok(()));
    assert_eq!(w.complete(1_000, 0), Ok(()));
    assert_eq!(w.flush(), Some(1_000));
}

#[test]
fn a_zero_capacity_window_refuses_everything() {
    let mut w: AckWindow<0> = AckWindow::default();
    assert_eq!(w.receive(1), Err(AckError::WindowFull));
    w.settled_untracked();
    assert_eq!(w.receive(2), Err(AckError::WindowFull));
    assert_eq!(w.flush(), None);
}

#[derive(Debug, Clone)]
enum Op {
    /// Receive the next tag after skipping this many.
    Receive(u8),
    /// Complete the k-th tracked delivery in flight (mod count).
    Complete(u8),
    /// Settle (nack) the k-th tracked delivery in flight.
    Settle(u8),
    /// Settle the k-th refused delivery in flight.
    SettleUntracked(u8),
    /// Let time pass, then ask.
    Tick(u8),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3).prop_map(|s| if s == 2 { Op::Receive(3) } else { Op::Receive(0) }),
        3 => any::<u8>().prop_map(Op::Complete),
        1 => any::<u8>().prop_map(Op::Settle),
        1 => any::<u8>().prop_map(Op::SettleUntracked),
        1 => (0u8..20).prop_map(Op::Tick),
        1 => Just(Op::Flush),
    ]
}

/// The broker's view: which tags are unacknowledged, and what a multiple ack may cover.
#[derive(Default)]
struct Model {
    next: u64,
    now: u64,
    in_flight: BTreeSet<u64>,
    untracked: BTreeSet<u64>,
    done: BTreeSet<u64>,
    acked: BTreeSet<u64>,
}

impl Model {
    /// Applies a multiple ack up to `t`, checking it is safe.
    fn ack_multiple(&mut self, t: u64) {
        assert!(
            self.done.contains(&t),
            "ack tag {t} is a completed delivery"
        );
        assert!(
            self.in_flight.range(..=t).next().is_none(),
            "ack up to {t} covers a delivery in flight: {:?}",
            self.in_flight
        );
        assert!(
            self.untracked.range(..=t).next().is_none(),
            "ack up to {t} covers a refused delivery in flight"
        );
        let covered: Vec<u64> = self.done.range(..=t).copied().collect();
        for c in covered {
            self.done.remove(&c);
            self.acked.insert(c);
        }
    }
}

fn pick(set: &BTreeSet<u64>, k: u8) -> Option<u64> {
    (!set.is_empty()).then(|| *set.iter().nth(usize::from(k) % set.len()).unwrap())
}

fn run<const N: usize>(ops: &[Op], policy: AckPolicy) {
    let mut w: AckWindow<N> = AckWindow::new(policy);
    let mut m = Model::default();
    for op in ops {
        match *op {
            Op::Receive(skip) => {
                m.next += 1 + u64::from(skip);
                match w.receive(m.next) {
                    Ok(()) => m.in_flight.insert(m.next),
                    Err(AckError::WindowFull) => m.untracked.insert(m.next),
                    Err(e) => panic!("receive: {e}"),
                };
            }
            Op::Complete(k) => {
                if let Some(t) = pick(&m.in_flight, k) {
                    assert_eq!(w.complete(t, m.now), Ok(()));
                    m.in_flight.remove(&t);
                    m.done.insert(t);
                }
            }
            Op::Settle(k) => {
                if let Some(t) = pick(&m.in_flight, k) {
                    assert_eq!(w.settled(t, m.now), Ok(()));
                    m.in_flight.remove(&t);
                }
            }
            Op::SettleUntracked(k) => {
                if let Some(t) = pick(&m.untracked, k) {
                    w.settled_untracked();
                    m.untracked.remove(&t);
                }
            }
            Op::Tick(dt) => {
                m.now += u64::from(dt);
                if let Some(t) = w.flush_due(m.now) {
                    m.ack_multiple(t);
                }
            }
            Op::Flush => {
                if let Some(t) = w.flush() {
                    m.ack_multiple(t);
                }
            }
        }
        if let Some(t) = w.flush_due(m.now) {
            m.ack_multiple(t);
        }
        assert_eq!(w.in_flight() as usize, m.in_flight.len());
        assert_eq!(w.untracked() as usize, m.untracked.len());
        // Pending = completed deliveries with nothing in flight before them.
        let blocker = m.in_flight.iter().chain(&m.untracked).min().copied();
        let ready = m.done.iter().filter(|&&d| blocker.is_none_or(|b| d < b));
        assert_eq!(w.pending() as usize, ready.count());
        if let Some(d) = w.next_deadline() {
            assert!(d > m.now, "a due delay was flushed");
        }
    }
    // Drain: everything finishes, one final flush acks every completed delivery.
    for t in std::mem::take(&mut m.in_flight) {
        assert_eq!(w.complete(t, m.now), Ok(()));
        m.done.insert(t);
    }
    for _ in std::mem::take(&mut m.untracked) {
        w.settled_untracked();
    }
    if let Some(t) = w.flush() {
        m.ack_multiple(t);
    }
    assert!(m.done.is_empty(), "left unacked: {:?}", m.done);
    assert!(w.is_idle());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn never_acks_a_delivery_in_flight_and_loses_none(
        ops in proptest::collection::vec(op(), 0..200),
        max_pending in 1u32..6,
        max_delay_ms in 0u64..30,
        flush_when_idle: bool,
    ) {
        let policy = AckPolicy { max_pending, max_delay_ms, flush_when_idle };
        run::<4>(&ops, policy);
        run::<16>(&ops, policy);
    }
}
