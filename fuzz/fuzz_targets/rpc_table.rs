//! Fuzzes the pending-request table with random register / complete / cancel / expire / group
//! operations on a runtime-sized table of 0..=32 slots, comparing every result with a slow
//! model (a HashMap of pending requests plus a list of recently finished ids).
#![no_main]

use std::collections::{HashMap, VecDeque};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use lepus_core::correlation::{
    Finished, GroupError, GroupProgress, PendingRequests, RegisterError, ReplyError, Slot,
};

const RING: usize = 4;
const GROUPS: usize = 2;

type Table = PendingRequests<u32, Box<[Slot<u32>]>, GROUPS, RING>;

/// A small id pool: half of it collides completely (equal 64-bit halves hash alike).
fn id(u: &mut Unstructured<'_>) -> Result<u128> {
    let k: u8 = u.int_in_range(0..=23)?;
    Ok(if k % 2 == 0 { (u128::from(k) << 64) | u128::from(k) } else { u128::from(k) * 0x1_0000_0001 })
}

#[derive(Default)]
struct Model {
    pending: HashMap<u128, (u64, u32, Option<usize>)>,
    ring: VecDeque<(u128, ReplyError)>,
    /// Open groups by model key: [members, replied, timed_out, cancelled].
    groups: HashMap<usize, [u32; 4]>,
}

impl Model {
    fn finish(&mut self, id: u128, class: ReplyError, group: Option<usize>, col: usize, got: &Finished<u32>) {
        self.ring.push_back((id, class));
        if self.ring.len() > RING {
            self.ring.pop_front();
        }
        let want = group.and_then(|g| {
            let c = self.groups.get_mut(&g)?;
            c[col] += 1;
            let c = *c;
            if c[1] + c[2] + c[3] == c[0] {
                self.groups.remove(&g);
            }
            Some(c)
        });
        match (got.group, want) {
            (None, None) => {}
            (Some(p), Some(c)) => check(p, c),
            (p, w) => panic!("group progress {p:?} vs model {w:?}"),
        }
    }
}

fn check(p: GroupProgress, c: [u32; 4]) {
    assert_eq!((p.replied, p.timed_out, p.cancelled), (c[1], c[2], c[3]));
    assert_eq!(p.remaining, c[0] - c[1] - c[2] - c[3]);
    assert_eq!(p.done, p.remaining == 0);
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let cap = u.int_in_range(0..=32usize)?;
    let storage: Box<[Slot<u32>]> = (0..cap).map(|_| Slot::new()).collect();
    let mut t = Table::with_storage(storage);
    let mut m = Model::default();
    // Model group key -> GroupId handed out by the table.
    let mut group_ids = Vec::new();
    let mut value = 0u32;
    while !u.is_empty() {
        value += 1;
        match u.int_in_range(0u8..=9)? {
            0..=2 => {
                let (id, d) = (id(&mut u)?, u.int_in_range(0..=60)?);
                let r = t.register(id, d, value);
                if m.pending.contains_key(&id) {
                    assert_eq!(r, Err(RegisterError::Duplicate(value)));
                } else if m.pending.len() == cap {
                    assert_eq!(r, Err(RegisterError::Full(value)));
                } else {
                    assert_eq!(r, Ok(()));
                    m.pending.insert(id, (d, value, None));
                }
            }
            3..=5 => {
                let (id, now) = (id(&mut u)?, u.int_in_range(0..=60)?);
                let r = t.complete(id, now);
                match m.pending.get(&id).copied() {
                    Some((d, v, g)) if now < d => {
                        let f = r.expect("in-time reply refused");
                        assert_eq!((f.id, f.value), (id, v));
                        m.pending.remove(&id);
                        m.finish(id, ReplyError::Duplicate, g, 1, &f);
                    }
                    Some(_) => assert_eq!(r.map(|f| f.id), Err(ReplyError::Late)),
                    None => {
                        let class = m.ring.iter().rev().find(|e| e.0 == id).map_or(ReplyError::Unknown, |e| e.1);
                        assert_eq!(r.map(|f| f.id), Err(class));
                    }
                }
            }
            6 => {
                let id = id(&mut u)?;
                let r = t.cancel(id);
                match m.pending.remove(&id) {
                    Some((_, v, g)) => {
                        let f = r.expect("pending request not cancelled");
                        assert_eq!(f.value, v);
                        m.finish(id, ReplyError::Cancelled, g, 3, &f);
                    }
                    None => assert!(r.is_none()),
                }
            }
            7 => {
                let now = u.int_in_range(0..=60)?;
                let mut got = Vec::new();
                let n = t.expire(now, |f| got.push(f));
                assert_eq!(n, got.len());
                let mut want: Vec<_> = m.pending.iter().filter(|e| e.1 .0 <= now).map(|e| (*e.0, e.1 .1)).collect();
                let mut seen: Vec<_> = got.iter().map(|f| (f.id, f.value)).collect();
                want.sort();
                seen.sort();
                assert_eq!(seen, want);
                for f in got {
                    let (_, _, g) = m.pending.remove(&f.id).expect("expired twice");
                    m.finish(f.id, ReplyError::Late, g, 2, &f);
                }
            }
            8 => {
                let n = u.int_in_range(0..=5usize)?;
                let mut ids = Vec::new();
                for _ in 0..n {
                    ids.push(id(&mut u)?);
                }
                let d = u.int_in_range(0..=60)?;
                let mut uniq = ids.clone();
                uniq.sort();
                uniq.dedup();
                let want = if ids.is_empty() {
                    Err(GroupError::Empty)
                } else if ids.len() > cap - m.pending.len() {
                    Err(GroupError::TableFull)
                } else if uniq.len() != ids.len() || ids.iter().any(|i| m.pending.contains_key(i)) {
                    Err(GroupError::Duplicate)
                } else if m.groups.len() == GROUPS {
                    Err(GroupError::GroupsFull)
                } else {
                    Ok(())
                };
                let r = t.open_group(d, &ids, |i| value ^ i as u32);
                assert_eq!(r.map(|_| ()), want);
                if let Ok(g) = r {
                    let key = group_ids.len();
                    group_ids.push(g);
                    m.groups.insert(key, [n as u32, 0, 0, 0]);
                    for i in ids {
                        m.pending.insert(i, (d, value ^ i as u32, Some(key)));
                    }
                }
            }
            _ => {
                let Some(key) = (!group_ids.is_empty()).then(|| u.choose_index(group_ids.len())).transpose()? else {
                    continue;
                };
                let mut got = Vec::new();
                let n = t.cancel_group(group_ids[key], |f| got.push(f));
                let mut want: Vec<u128> = m.pending.iter().filter(|e| e.1 .2 == Some(key)).map(|e| *e.0).collect();
                let mut seen: Vec<u128> = got.iter().map(|f| f.id).collect();
                want.sort();
                seen.sort();
                assert_eq!((n, seen), (want.len(), want));
                for f in got {
                    m.pending.remove(&f.id);
                    m.finish(f.id, ReplyError::Cancelled, Some(key), 3, &f);
                }
                assert_eq!(t.group_progress(group_ids[key]), None);
            }
        }
        assert_eq!(t.len(), m.pending.len());
        assert_eq!(t.next_deadline(), m.pending.values().map(|e| e.0).min());
        for (key, g) in group_ids.iter().enumerate() {
            match (t.group_progress(*g), m.groups.get(&key)) {
                (None, None) => {}
                (Some(p), Some(c)) => check(p, *c),
                (p, c) => panic!("group {key}: {p:?} vs model {c:?}"),
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
