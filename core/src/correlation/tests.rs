use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};

/// Ids whose two 64-bit halves are equal all hash to the same home slot.
fn colliding(k: u64) -> u128 {
    (u128::from(k) << 64) | u128::from(k)
}

fn collect<T, S: Storage<T>, const G: usize, const R: usize>(
    t: &mut PendingRequests<T, S, G, R>,
    now: u64,
) -> Vec<Finished<T>> {
    let mut out = Vec::new();
    t.expire(now, |f| out.push(f));
    out
}

#[test]
fn register_complete_round_trip() {
    let mut t: PendingArray<&str, 8> = PendingArray::new();
    assert_eq!((t.len(), t.capacity(), t.is_empty()), (0, 8, true));
    t.register(1, 100, "a").unwrap();
    t.register(2, 200, "b").unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t.next_deadline(), Some(100));
    assert_eq!(t.deadline(2), Some(200));
    let done = t.complete(2, 50).unwrap();
    assert_eq!(
        done,
        Finished {
            id: 2,
            value: "b",
            group: None
        }
    );
    assert_eq!(t.complete(2, 51), Err(ReplyError::Duplicate));
    assert_eq!(t.complete(3, 51), Err(ReplyError::Unknown));
    assert_eq!(t.len(), 1);
    assert!(t.contains(1) && !t.contains(2));
    assert_eq!(
        t.counters(),
        ReplyCounters {
            unknown: 1,
            duplicate: 1,
            late: 0,
            cancelled: 0
        }
    );
}

#[test]
fn deadline_boundary_and_late_replies() {
    let mut t: PendingArray<u8, 4> = PendingArray::new();
    t.register(7, 100, 70).unwrap();
    // At the deadline the request is expired: the reply is late and the entry waits for expire.
    assert_eq!(t.complete(7, 100), Err(ReplyError::Late));
    assert!(t.contains(7));
    assert_eq!(collect(&mut t, 99), vec![]);
    assert_eq!(
        collect(&mut t, 100),
        vec![Finished {
            id: 7,
            value: 70,
            group: None
        }]
    );
    assert_eq!(t.complete(7, 101), Err(ReplyError::Late));
    assert_eq!(t.counters().late, 2);
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn full_table_and_duplicates_hand_value_back() {
    let mut t: PendingArray<String, 3> = PendingArray::new();
    for id in 0..3 {
        t.register(id, 10, format!("v{id}")).unwrap();
    }
    assert_eq!(
        t.register(9, 10, "x".into()),
        Err(RegisterError::Full("x".into()))
    );
    assert_eq!(
        t.register(1, 10, "y".into()),
        Err(RegisterError::Duplicate("y".into()))
    );
    assert_eq!(RegisterError::Full(5u8).into_value(), 5);
    assert_eq!(t.complete(9, 0), Err(ReplyError::Unknown)); // full-table probe terminates
    assert_eq!(t.len(), 3);
    assert_eq!(t.cancel(1).map(|f| f.value), Some("v1".to_string()));
    t.register(9, 10, "x".into()).unwrap();
    assert_eq!(t.complete(1, 0), Err(ReplyError::Cancelled));
    assert_eq!(t.counters().cancelled, 1);
}

#[test]
fn zero_capacity_table() {
    let mut t: PendingArray<u8, 0> = PendingArray::new();
    assert_eq!(t.register(1, 1, 1), Err(RegisterError::Full(1)));
    assert_eq!(t.complete(1, 0), Err(ReplyError::Unknown));
    assert_eq!(t.cancel(1), None);
    assert_eq!(collect(&mut t, u64::MAX), vec![]);
    assert_eq!(t.open_group(5, &[1], |_| 0), Err(GroupError::TableFull));
}

#[test]
fn colliding_ids_are_never_confused() {
    let mut t: PendingArray<u64, 16> = PendingArray::new();
    for k in 0..16 {
        t.register(colliding(k), 1000 + k, k).unwrap();
    }
    assert_eq!(
        t.register(colliding(99), 0, 99),
        Err(RegisterError::Full(99))
    );
    // Remove from the middle of the single cluster, then find every other id.
    for k in [5, 0, 15, 8] {
        assert_eq!(t.complete(colliding(k), 0).map(|f| f.value), Ok(k));
    }
    for k in 0..16 {
        let want = ![5, 0, 15, 8].contains(&k);
        assert_eq!(t.contains(colliding(k)), want, "k={k}");
        if want {
            assert_eq!(t.deadline(colliding(k)), Some(1000 + k));
        }
    }
    // Expire a subset in one scan with wrapping clusters.
    let mut gone: Vec<u64> = collect(&mut t, 1006).into_iter().map(|f| f.value).collect();
    gone.sort();
    assert_eq!(gone, vec![1, 2, 3, 4, 6]);
    assert_eq!(t.len(), 7);
    assert_eq!(t.next_deadline(), Some(1007));
}

#[test]
fn runtime_sized_table_with_ten_thousand_requests() {
    let mut buf: Vec<Slot<u32>> = (0..12_500).map(|_| Slot::new()).collect();
    let mut t: PendingRequests<u32, &mut [Slot<u32>]> = PendingRequests::with_storage(&mut buf[..]);
    let id =
        |i: u32| u128::from(i).wrapping_mul(0x2545_F491_4F6C_DD1D_2545_F491_4F6C_DD1D) ^ 0xABCD;
    for i in 0..10_000 {
        t.register(id(i), u64::from(i % 100) + 1, i).unwrap();
    }
    assert_eq!(t.len(), 10_000);
    assert_eq!(t.next_deadline(), Some(1));
    for i in (0..10_000).step_by(2) {
        assert_eq!(t.complete(id(i), 0).map(|f| f.value), Ok(i));
    }
    assert_eq!(t.len(), 5_000);
    let expired = collect(&mut t, 50);
    assert_eq!(expired.len(), 2_500); // odd i with i % 100 < 50
    assert!(expired
        .iter()
        .all(|f| f.value % 2 == 1 && f.value % 100 < 50));
    assert_eq!(t.next_deadline(), Some(52)); // odd i, i % 100 = 51
    for i in (1..10_000).step_by(2) {
        let r = t.complete(id(i), 0);
        if i % 100 < 50 {
            // The last DEFAULT_RECENT expired ids are remembered as late, the rest are unknown.
            assert!(
                matches!(r, Err(ReplyError::Unknown | ReplyError::Late)),
                "{i}"
            );
        } else {
            assert_eq!(r.map(|f| f.value), Ok(i));
        }
    }
    assert!(t.is_empty());
    let c = t.counters();
    // Interleaved completions also fill the ring, so at most DEFAULT_RECENT are seen as late.
    assert_eq!(c.late + c.unknown, 2_500);
    assert!(c.late <= DEFAULT_RECENT as u64);
    // Boxed storage works the same.
    let boxed: Box<[Slot<u8>]> = (0..4).map(|_| Slot::new()).collect();
    let mut b: PendingRequests<u8, Box<[Slot<u8>]>> = PendingRequests::with_storage(boxed);
    b.register(1, 1, 1).unwrap();
    assert_eq!(b.capacity(), 4);
}

#[test]
fn storage_reuse_clears_old_slots() {
    let mut buf: Vec<Slot<u8>> = (0..4).map(|_| Slot::new()).collect();
    {
        let mut t: PendingRequests<u8, &mut [Slot<u8>]> =
            PendingRequests::with_storage(&mut buf[..]);
        t.register(1, 1, 1).unwrap();
    }
    assert!(buf.iter().any(Slot::is_occupied));
    let t: PendingRequests<u8, &mut [Slot<u8>]> = PendingRequests::with_storage(&mut buf[..]);
    assert_eq!(t.len(), 0);
    assert!(!t.contains(1));
}

#[test]
fn recent_ring_forgets_beyond_capacity() {
    let mut t: PendingRequests<u8, [Slot<u8>; 8], 1, 2> = PendingRequests::new();
    for id in 1..=3 {
        t.register(id, 10, 0).unwrap();
        t.complete(id, 0).unwrap();
    }
    assert_eq!(t.complete(1, 0), Err(ReplyError::Unknown)); // pushed out of a ring of 2
    assert_eq!(t.complete(2, 0), Err(ReplyError::Duplicate));
    assert_eq!(t.complete(3, 0), Err(ReplyError::Duplicate));
    // A re-registered id is classified by its latest finish.
    t.register(2, 10, 0).unwrap();
    t.cancel(2).unwrap();
    assert_eq!(t.complete(2, 0), Err(ReplyError::Cancelled));
}

#[test]
fn scatter_gather_all_reply() {
    let mut t: PendingArray<u128, 8> = PendingArray::new();
    let ids = [10, 20, 30, 40];
    let g = t.open_group(500, &ids, |id| id * 2).unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(t.group_deadline(g), Some(500));
    let p = t.complete(20, 1).unwrap();
    assert_eq!(p.value, 40);
    assert_eq!(
        p.group,
        Some(GroupProgress {
            group: g,
            remaining: 3,
            replied: 1,
            timed_out: 0,
            cancelled: 0,
            done: false
        })
    );
    t.complete(10, 2).unwrap();
    t.complete(40, 3).unwrap();
    let last = t.complete(30, 4).unwrap().group.unwrap();
    assert!(last.done);
    assert_eq!((last.remaining, last.replied), (0, 4));
    assert_eq!(t.group_progress(g), None);
    // The slot is reused with a new generation: the stale id matches nothing.
    let g2 = t.open_group(500, &[1], |_| 0).unwrap();
    assert_ne!(g, g2);
    assert_eq!(t.group_progress(g), None);
    assert_eq!(
        t.cancel_group(g, |_| panic!("stale group cancelled something")),
        0
    );
}

#[test]
fn scatter_gather_deadline_reports_timed_out_members() {
    let mut t: PendingArray<u8, 8> = PendingArray::new();
    t.register(99, 10_000, 0).unwrap();
    let g = t.open_group(100, &[1, 2, 3], |id| id as u8).unwrap();
    t.complete(2, 50).unwrap();
    assert_eq!(t.next_deadline(), Some(100));
    let expired = collect(&mut t, 100);
    let mut timed_out: Vec<u128> = expired.iter().map(|f| f.id).collect();
    timed_out.sort();
    assert_eq!(timed_out, vec![1, 3]);
    assert!(expired.iter().all(|f| f.group.map(|p| p.group) == Some(g)));
    let done: Vec<_> = expired
        .iter()
        .filter_map(|f| f.group)
        .filter(|p| p.done)
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].replied, done[0].timed_out, done[0].remaining),
        (1, 2, 0)
    );
    assert_eq!(t.complete(3, 101), Err(ReplyError::Late));
    assert!(t.contains(99));
}

#[test]
fn group_errors_are_all_or_nothing() {
    let mut t: PendingRequests<u8, [Slot<u8>; 4], 1> = PendingRequests::new();
    let never = |_| -> u8 { panic!("value factory called on a refused group") };
    assert_eq!(t.open_group(9, &[], never), Err(GroupError::Empty));
    assert_eq!(
        t.open_group(9, &[1, 2, 3, 4, 5], never),
        Err(GroupError::TableFull)
    );
    assert_eq!(
        t.open_group(9, &[1, 2, 1], never),
        Err(GroupError::Duplicate)
    );
    t.register(2, 9, 0).unwrap();
    assert_eq!(t.open_group(9, &[1, 2], never), Err(GroupError::Duplicate));
    assert_eq!(t.len(), 1);
    let g = t.open_group(9, &[5, 6], |_| 1).unwrap();
    assert_eq!(t.open_group(9, &[7], never), Err(GroupError::GroupsFull));
    let mut n = Vec::new();
    assert_eq!(t.cancel_group(g, |f| n.push(f.group.unwrap())), 2);
    assert_eq!(n.last().map(|p| (p.done, p.cancelled)), Some((true, 2)));
    assert_eq!(t.complete(5, 0), Err(ReplyError::Cancelled));
    t.open_group(9, &[7], |_| 1).unwrap();
}

#[test]
fn errors_display() {
    assert_eq!(
        RegisterError::Full(()).to_string(),
        "pending request table is full"
    );
    assert_eq!(
        ReplyError::Late.to_string(),
        "late reply to an expired request"
    );
    assert_eq!(
        GroupError::GroupsFull.to_string(),
        "request group slots are full"
    );
}

// ---- model-based property test ----

#[derive(Debug, Clone)]
enum Op {
    Register(usize, u64),
    Complete(usize, u64),
    Cancel(usize),
    Expire(u64),
    Group(Vec<usize>, u64),
    CancelGroup(usize),
}

const POOL: usize = 24;
const CAP: usize = 10;
const RING: usize = 4;
const GROUPS: usize = 2;

fn pool_id(i: usize) -> u128 {
    // Half the pool collides completely, the rest are ordinary.
    if i % 2 == 0 {
        colliding(i as u64)
    } else {
        (i as u128) * 0x1_0000_0001 + 7
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..POOL, 0u64..60).prop_map(|(i, d)| Op::Register(i, d)),
        4 => (0..POOL, 0u64..60).prop_map(|(i, n)| Op::Complete(i, n)),
        1 => (0..POOL).prop_map(Op::Cancel),
        2 => (0u64..60).prop_map(Op::Expire),
        1 => (proptest::collection::vec(0..POOL, 0..5), 0u64..60).prop_map(|(v, d)| Op::Group(v, d)),
        1 => (0..4usize).prop_map(Op::CancelGroup),
    ]
}

#[derive(Default)]
struct Model {
    pending: HashMap<u128, (u64, u32, Option<u32>)>,
    ring: VecDeque<(u128, ReplyError)>,
    groups: HashMap<u32, [u32; 4]>, // members, replied, timed_out, cancelled
    counters: ReplyCounters,
}

impl Model {
    fn finish(&mut self, id: u128, class: ReplyError) {
        self.ring.push_back((id, class));
        if self.ring.len() > RING {
            self.ring.pop_front();
        }
    }
    fn group_count(&mut self, g: Option<u32>, slot: usize) -> Option<(u32, [u32; 4])> {
        let g = g?;
        let c = self.groups.get_mut(&g)?;
        c[slot] += 1;
        let c = *c;
        if c[1] + c[2] + c[3] == c[0] {
            self.groups.remove(&g);
        }
        Some((g, c))
    }
}

fn check_progress(
    p: Option<GroupProgress>,
    want: Option<(u32, [u32; 4])>,
) -> Result<(), TestCaseError> {
    match (p, want) {
        (None, None) => {}
        (Some(p), Some((g, c))) => {
            prop_assert_eq!(p.group.index, g);
            prop_assert_eq!((p.replied, p.timed_out, p.cancelled), (c[1], c[2], c[3]));
            prop_assert_eq!(p.remaining, c[0] - c[1] - c[2] - c[3]);
            prop_assert_eq!(p.done, p.remaining == 0);
        }
        (p, w) => prop_assert!(false, "progress {:?} vs model {:?}", p, w),
    }
    Ok(())
}

proptest! {
    #[test]
    fn table_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut t: PendingRequests<u32, [Slot<u32>; CAP], GROUPS, RING> = PendingRequests::new();
        let mut m = Model::default();
        let mut group_ids: Vec<GroupId> = Vec::new();
        let mut next_value = 0u32;
        for op in ops {
            next_value += 1;
            match op {
                Op::Register(i, d) => {
                    let id = pool_id(i);
                    let r = t.register(id, d, next_value);
                    if m.pending.contains_key(&id) {
                        prop_assert_eq!(r, Err(RegisterError::Duplicate(next_value)));
                    } else if m.pending.len() == CAP {
                        prop_assert_eq!(r, Err(RegisterError::Full(next_value)));
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        m.pending.insert(id, (d, next_value, None));
                    }
                }
                Op::Complete(i, now) => {
                    let id = pool_id(i);
                    let r = t.complete(id, now);
                    match m.pending.get(&id).copied() {
                        Some((d, v, g)) if now < d => {
                            m.pending.remove(&id);
                            m.finish(id, ReplyError::Duplicate);
                            let want = m.group_count(g, 1);
                            let f = r.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                            prop_assert_eq!((f.id, f.value), (id, v));
                            check_progress(f.group, want)?;
                        }
                        Some(_) => {
                            m.counters.late += 1;
                            prop_assert_eq!(r.map(|f| f.id), Err(ReplyError::Late));
                        }
                        None => {
                            let class = m.ring.iter().rev().find(|(r, _)| *r == id).map_or(ReplyError::Unknown, |(_, c)| *c);
                            match class {
                                ReplyError::Unknown => m.counters.unknown += 1,
                                ReplyError::Duplicate => m.counters.duplicate += 1,
                                ReplyError::Late => m.counters.late += 1,
                                _ => m.counters.cancelled += 1,
                            }
                            prop_assert_eq!(r.map(|f| f.id), Err(class));
                        }
                    }
                }
                Op::Cancel(i) => {
                    let id = pool_id(i);
                    let r = t.cancel(id);
                    match m.pending.remove(&id) {
                        Some((_, v, g)) => {
                            m.finish(id, ReplyError::Cancelled);
                            let want = m.group_count(g, 3);
                            let f = r.ok_or_else(|| TestCaseError::fail("cancel found nothing"))?;
                            prop_assert_eq!(f.value, v);
                            check_progress(f.group, want)?;
                        }
                        None => prop_assert!(r.is_none()),
                    }
                }
                Op::Expire(now) => {
                    let mut got = Vec::new();
                    let n = t.expire(now, |f| got.push(f));
                    prop_assert_eq!(n, got.len());
                    let mut want: Vec<(u128, u32)> = m.pending.iter().filter(|(_, e)| e.0 <= now).map(|(id, e)| (*id, e.1)).collect();
                    want.sort();
                    let mut seen: Vec<(u128, u32)> = got.iter().map(|f| (f.id, f.value)).collect();
                    seen.sort();
                    prop_assert_eq!(&seen, &want);
                    // The model follows the table's (unspecified) expiry order.
                    for f in got {
                        let (_, _, g) = m.pending.remove(&f.id).unwrap();
                        m.finish(f.id, ReplyError::Late);
                        let wantp = m.group_count(g, 2);
                        check_progress(f.group, wantp)?;
                    }
                }
                Op::Group(members, d) => {
                    let ids: Vec<u128> = members.iter().map(|i| pool_id(*i)).collect();
                    let mut uniq = ids.clone();
                    uniq.sort();
                    uniq.dedup();
                    let r = t.open_group(d, &ids, |id| next_value ^ (id as u32));
                    let want = if ids.is_empty() {
                        Err(GroupError::Empty)
                    } else if ids.len() > CAP - m.pending.len() {
                        Err(GroupError::TableFull)
                    } else if uniq.len() != ids.len() || ids.iter().any(|id| m.pending.contains_key(id)) {
                        Err(GroupError::Duplicate)
                    } else if m.groups.len() == GROUPS {
                        Err(GroupError::GroupsFull)
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(r.map(|_| ()), want);
                    if let Ok(g) = r {
                        prop_assert!(!m.groups.contains_key(&g.index));
                        m.groups.insert(g.index, [ids.len() as u32, 0, 0, 0]);
                        for id in &ids {
                            m.pending.insert(*id, (d, next_value ^ (*id as u32), Some(g.index)));
                        }
                        group_ids.push(g);
                    }
                }
                Op::CancelGroup(k) => {
                    let Some(g) = group_ids.get(k).copied() else { continue };
                    let mut got = Vec::new();
                    let n = t.cancel_group(g, |f| got.push(f));
                    let open = t_group_open(&m, g, &group_ids);
                    let mut want: Vec<u128> = if open {
                        m.pending.iter().filter(|(_, e)| e.2 == Some(g.index)).map(|(id, _)| *id).collect()
                    } else {
                        Vec::new()
                    };
                    want.sort();
                    let mut seen: Vec<u128> = got.iter().map(|f| f.id).collect();
                    seen.sort();
                    prop_assert_eq!(n, seen.len());
                    prop_assert_eq!(&seen, &want);
                    for f in got {
                        let (_, v, gi) = m.pending.remove(&f.id).unwrap();
                        prop_assert_eq!(f.value, v);
                        m.finish(f.id, ReplyError::Cancelled);
                        let wantp = m.group_count(gi, 3);
                        check_progress(f.group, wantp)?;
                    }
                }
            }
            prop_assert_eq!(t.len(), m.pending.len());
            prop_assert_eq!(t.counters(), m.counters);
            prop_assert_eq!(t.next_deadline(), m.pending.values().map(|e| e.0).min());
            for i in 0..POOL {
                let id = pool_id(i);
                prop_assert_eq!(t.deadline(id), m.pending.get(&id).map(|e| e.0));
            }
        }
    }
}

/// Whether `g` is the latest group opened in its slot and still open in the model.
fn t_group_open(m: &Model, g: GroupId, opened: &[GroupId]) -> bool {
    let latest = opened.iter().rev().find(|o| o.index == g.index);
    latest == Some(&g) && m.groups.contains_key(&g.index)
}
