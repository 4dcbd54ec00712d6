use super::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct Beat {
    n: u32,
}

impl Message for Beat {
    const TYPE: &'static str = "Beat";
    const ROUTING_KEY: &'static str = "beat";
}

/// 2026-12-01T00:00:00Z in Unix milliseconds.
const DEC_1: u64 = 1_764_547_200_000;

fn every(name: &str, ms: u64) -> Entry {
    Entry::every(name, Duration::from_millis(ms), &Beat { n: 1 }).unwrap()
}

fn ticks(plan: &Plan) -> Vec<u64> {
    plan.ticks.iter().map(|&(_, t)| t).collect()
}

#[test]
fn zero_interval_and_bad_cron_are_invalid_config() {
    let zero = Entry::every("x", Duration::ZERO, &Beat { n: 1 }).unwrap_err();
    assert_eq!(
        zero.kind(),
        ErrorKind::InvalidConfig {
            setting: "interval"
        }
    );
    let sub_ms = Entry::every("x", Duration::from_micros(999), &Beat { n: 1 }).unwrap_err();
    assert_eq!(
        sub_ms.kind(),
        ErrorKind::InvalidConfig {
            setting: "interval"
        }
    );
    for bad in ["", "not cron", "61 * * * *", "* * * *", "0 0 30 2 *"] {
        let e = Entry::cron("x", bad, &Beat { n: 1 }).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidConfig {
                setting: "cron expression"
            },
            "{bad:?}: {e}"
        );
        assert!(e.to_string().contains("cron expression"), "{e}");
    }
    let e = every("x", 1000).missed_after(Duration::ZERO).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidConfig {
            setting: "missed_after"
        }
    );
}

#[test]
fn names_are_checked() {
    for bad in ["", "a b", "a/b", &"x".repeat(65)] {
        let e = Entry::every(bad, Duration::from_secs(1), &Beat { n: 1 }).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidConfig {
                setting: "entry name"
            }
        );
    }
    assert!(Schedule::new("").is_err());
    assert!(Schedule::new("a b").is_err());
    let schedule = Schedule::new("s").unwrap().entry(every("a", 1000)).unwrap();
    let dup = schedule.entry(every("a", 2000)).unwrap_err();
    assert_eq!(
        dup.kind(),
        ErrorKind::InvalidConfig {
            setting: "entry name"
        }
    );
}

#[test]
fn entries_are_capped() {
    let mut schedule = Schedule::new("s").unwrap();
    for i in 0..MAX_ENTRIES {
        schedule = schedule.entry(every(&format!("e{i}"), 1000)).unwrap();
    }
    let e = schedule.entry(every("one-more", 1000)).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::CapacityExceeded {
            what: "schedule entries"
        }
    );
}

#[test]
fn interval_ticks_are_multiples_since_the_epoch() {
    let e = every("a", 1000);
    assert_eq!(next_after(&e.timing, DEC_1), Some(DEC_1 + 1000));
    assert_eq!(next_after(&e.timing, DEC_1 + 1), Some(DEC_1 + 1000));
    assert_eq!(next_after(&e.timing, DEC_1 + 999), Some(DEC_1 + 1000));
    assert_eq!(
        e.timing.latest_at_or_before(DEC_1 + 1999),
        Some(DEC_1 + 1000)
    );
    // No overflow at the end of time.
    assert_eq!(next_after(&e.timing, u64::MAX), None);
}

#[test]
fn cron_ticks_in_utc() {
    let e = Entry::cron("nightly", "0 3 * * *", &Beat { n: 1 }).unwrap();
    let three = DEC_1 + 3 * 3_600_000;
    assert_eq!(next_after(&e.timing, DEC_1), Some(three));
    assert_eq!(next_after(&e.timing, three), Some(three + 86_400_000));
    assert_eq!(next_after(&e.timing, three - 1), Some(three));
    assert_eq!(e.timing.latest_at_or_before(three), Some(three));
    assert_eq!(
        e.timing.latest_at_or_before(three - 1),
        Some(three - 86_400_000)
    );
    // Six fields: seconds first.
    let s = Entry::cron("s", "*/5 * * * * *", &Beat { n: 1 }).unwrap();
    assert_eq!(next_after(&s.timing, DEC_1 + 500), Some(DEC_1 + 5000));
    assert_eq!(
        s.next_tick_after(UNIX_EPOCH + Duration::from_millis(DEC_1)),
        Some(UNIX_EPOCH + Duration::from_millis(DEC_1 + 5000))
    );
}

#[test]
fn a_new_entry_starts_after_now() {
    let entries = [every("a", 1000)];
    let mut record = Record::default();
    let now = DEC_1 + 500;
    let p = plan(&entries, &mut record, now);
    assert!(p.ticks.is_empty());
    assert_eq!(record.last.get("a"), Some(&now));
    assert_eq!(p.next_due, Some(DEC_1 + 1000));
}

#[test]
fn due_ticks_are_published_in_order_and_recorded() {
    let entries = [every("a", 1000), every("b", 2000)];
    let mut record = Record::default();
    record.last.insert("a".into(), DEC_1);
    record.last.insert("b".into(), DEC_1);
    let p = plan(&entries, &mut record, DEC_1 + 2500);
    assert_eq!(
        p.ticks,
        vec![(0, DEC_1 + 1000), (0, DEC_1 + 2000), (1, DEC_1 + 2000)]
    );
    assert_eq!(record.last["a"], DEC_1 + 2000);
    assert_eq!(record.last["b"], DEC_1 + 2000);
    assert_eq!(p.next_due, Some(DEC_1 + 3000));
    // Planned again at the same time: nothing more.
    let again = plan(&entries, &mut record, DEC_1 + 2500);
    assert!(again.ticks.is_empty());
}

#[test]
fn missed_ticks_skip_or_run_once() {
    let late = Duration::from_secs(5);
    // Last tick at DEC_1; now is 60 s later: 55 ticks are more than 5 s late.
    let now = DEC_1 + 60_000;
    let skip = [every("a", 1000).missed_after(late).unwrap()];
    let mut record = Record::default();
    record.last.insert("a".into(), DEC_1);
    let p = plan(&skip, &mut record, now);
    // Only the ticks at most 5 s late.
    assert_eq!(
        ticks(&p),
        (56..=60).map(|s| DEC_1 + s * 1000).collect::<Vec<_>>()
    );

    let once = [every("a", 1000)
        .missed_after(late)
        .unwrap()
        .missed(Missed::RunOnce)];
    let mut record = Record::default();
    record.last.insert("a".into(), DEC_1);
    let p = plan(&once, &mut record, now);
    // One catch-up tick (the latest missed one, 55 s), then the late ones.
    assert_eq!(
        ticks(&p),
        (55..=60).map(|s| DEC_1 + s * 1000).collect::<Vec<_>>()
    );
    assert_eq!(record.last["a"], now);
}

#[test]
fn a_huge_backlog_is_capped_per_commit() {
    let entries = [every("a", 1)
        .missed_after(Duration::from_secs(3600))
        .unwrap()];
    let mut record = Record::default();
    record.last.insert("a".into(), DEC_1);
    let p = plan(&entries, &mut record, DEC_1 + 1_000_000);
    assert_eq!(p.ticks.len(), MAX_TICKS_PER_COMMIT);
    assert_eq!(record.last["a"], DEC_1 + MAX_TICKS_PER_COMMIT as u64);
    assert!(p.next_due.is_some_and(|d| d <= DEC_1 + 1_000_000));
}

#[test]
fn records_merge_to_the_latest_tick_and_keep_unknown_entries() {
    let a = br#"{"v":1,"last":{"a":10,"old":5}}"#.to_vec();
    let b = br#"{"v":1,"last":{"a":20,"b":7}}"#.to_vec();
    let seed = Vec::new();
    let garbage = b"\xff not json".to_vec();
    let merged = Record::merge(&[a, seed, garbage, b]);
    assert_eq!(merged.last["a"], 20);
    assert_eq!(merged.last["b"], 7);
    assert_eq!(merged.last["old"], 5);
    assert_eq!(Record::merge(&[merged.encode()]), merged);
}

#[test]
fn raw_entries_check_the_type_and_key() {
    let body = br#"{"payload":{},"metadata":{"className":"T"}}"#.to_vec();
    let e = Entry::every_raw("a", Duration::from_secs(1), "T", "k", body.clone()).unwrap();
    assert_eq!(
        (e.message_type.as_str(), e.routing_key_in_use()),
        ("T", "k")
    );
    let empty = Entry::every_raw("a", Duration::from_secs(1), "", "k", body.clone()).unwrap_err();
    assert_eq!(
        empty.kind(),
        ErrorKind::InvalidConfig {
            setting: "message type"
        }
    );
    let long_key = "k".repeat(256);
    let e = Entry::cron_raw("a", "* * * * *", "T", &long_key, body.clone()).unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    let e = Entry::cron_raw("a", "nope", "T", "k", body).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidConfig {
            setting: "cron expression"
        }
    );
}
