//! `Scheduler` on the in-process broker, in paused time: replicas elect one publisher, every
//! tick is published once, interval and cron entries, the missed-tick policies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lepus::{
    Entry, ErrorKind, InProcessBroker, Missed, Publisher, QueueSpec, Schedule, Scheduler, Transport,
};

#[derive(serde::Serialize, serde::Deserialize, lepus::Message)]
#[lepus(routing_key = "beat")]
struct Beat {
    n: u32,
}

/// 2026-12-01T00:00:00Z in Unix milliseconds: the wall clock of these tests starts 250 ms
/// after it and follows tokio's (paused) time.
const DEC_1: u64 = 1_764_547_200_000;

fn clock(t0: tokio::time::Instant) -> impl Fn() -> SystemTime + Send + Sync + 'static {
    let base = UNIX_EPOCH + Duration::from_millis(DEC_1 + 250);
    move || base + t0.elapsed()
}

async fn setup() -> (Arc<InProcessBroker>, Publisher<InProcessBroker>) {
    let broker = Arc::new(InProcessBroker::new());
    let publisher = Publisher::new(Arc::clone(&broker), "sched");
    publisher.declare().await.unwrap();
    broker
        .declare_queue(&QueueSpec::new("ticks", "sched").bind("#"))
        .await
        .unwrap();
    (broker, publisher)
}

/// Every tick in `ticks`: message id -> how many times it arrived.
fn drain(broker: &InProcessBroker) -> BTreeMap<String, u32> {
    let mut seen = BTreeMap::new();
    while let Some(d) = broker.get("ticks").unwrap() {
        let id = d.message_id().expect("ticks carry a message id").to_owned();
        assert_eq!(d.properties().message_type.as_deref(), Some("Beat"));
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

/// The message ids of `entry`'s ticks at these seconds after `DEC_1`.
fn ids(schedule: &str, entry: &str, seconds: impl IntoIterator<Item = u64>) -> Vec<String> {
    seconds
        .into_iter()
        .map(|s| format!("{schedule}:{entry}:{}", DEC_1 + s * 1000))
        .collect()
}

fn ids_of(seen: &BTreeMap<String, u32>, prefix: &str) -> Vec<String> {
    seen.keys()
        .filter(|id| id.starts_with(prefix))
        .cloned()
        .collect()
}

fn every_second() -> Schedule {
    Schedule::new("s")
        .unwrap()
        .entry(Entry::every("beat", Duration::from_secs(1), &Beat { n: 1 }).unwrap())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn two_replicas_publish_each_tick_once_and_hand_over() {
    let (broker, publisher) = setup().await;
    let t0 = tokio::time::Instant::now();
    let a = Scheduler::new(publisher.clone(), every_second())
        .with_clock(clock(t0))
        .start()
        .await
        .unwrap();
    let b = Scheduler::new(publisher.clone(), every_second())
        .with_clock(clock(t0))
        .start()
        .await
        .unwrap();
    // Until 10.5 s after the start at 0.25 s: ticks 1..=10.
    tokio::time::sleep(Duration::from_millis(10_250)).await;
    assert!(a.is_leading() != b.is_leading(), "exactly one leads");
    let (leader, follower) = if a.is_leading() { (a, b) } else { (b, a) };
    assert_eq!(leader.stats().ticks_published, 10);
    assert_eq!(follower.stats().ticks_published, 0);
    assert_eq!(follower.stats().leaderships, 0);

    // The leader stops (gives the token back); the follower takes over at once.
    let stopped = leader.shutdown().await.unwrap();
    assert_eq!(stopped.ticks_published, 10);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(follower.is_leading());
    let took_over = follower.shutdown().await.unwrap();
    assert_eq!(took_over.ticks_published, 5);
    assert_eq!(took_over.leaderships, 1);

    let seen = drain(&broker);
    assert!(seen.values().all(|&n| n == 1), "no duplicate: {seen:?}");
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), {
        let mut v = ids("s", "beat", 1..=15);
        v.sort();
        v
    });
}

#[tokio::test(start_paused = true)]
async fn a_dropped_leader_hands_over_without_a_gap() {
    // A task aborted mid-sleep, as a crashed replica (its lease is dropped, not released).
    let (broker, publisher) = setup().await;
    let t0 = tokio::time::Instant::now();
    let run = |publisher: Publisher<InProcessBroker>| {
        tokio::spawn(
            Scheduler::new(publisher, every_second())
                .with_clock(clock(t0))
                .run(std::future::pending()),
        )
    };
    let first = run(publisher.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = run(publisher.clone());
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    first.abort();
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    second.abort();
    let seen = drain(&broker);
    assert!(seen.values().all(|&n| n == 1), "no duplicate: {seen:?}");
    let mut expected = ids("s", "beat", 1..=10);
    expected.sort();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), expected);
}

#[tokio::test(start_paused = true)]
async fn interval_and_cron_entries() {
    let (broker, publisher) = setup().await;
    let schedule = Schedule::new("mixed")
        .unwrap()
        .entry(Entry::every("three", Duration::from_secs(3), &Beat { n: 3 }).unwrap())
        .unwrap()
        .entry(
            Entry::cron("even", "*/2 * * * * *", &Beat { n: 2 })
                .unwrap()
                .routing_key("beat.even")
                .unwrap(),
        )
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let handle = Scheduler::new(publisher, schedule)
        .with_clock(clock(t0))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(12_000)).await;
    let stats = handle.shutdown().await.unwrap();
    let seen = drain(&broker);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    assert_eq!(
        ids_of(&seen, "mixed:three:"),
        ids("mixed", "three", [3, 6, 9, 12])
    );
    let mut even = ids("mixed", "even", [2, 4, 6, 8, 10, 12]);
    even.sort();
    assert_eq!(ids_of(&seen, "mixed:even:"), even);
    assert_eq!(stats.ticks_published, 10);
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_are_skipped_or_run_once() {
    let (broker, publisher) = setup().await;
    let late = Duration::from_secs(5);
    let schedule = || {
        Schedule::new("m")
            .unwrap()
            .entry(
                Entry::every("skip", Duration::from_secs(10), &Beat { n: 1 })
                    .unwrap()
                    .missed_after(late)
                    .unwrap(),
            )
            .unwrap()
            .entry(
                Entry::every("once", Duration::from_secs(10), &Beat { n: 1 })
                    .unwrap()
                    .missed_after(late)
                    .unwrap()
                    .missed(Missed::RunOnce),
            )
            .unwrap()
    };
    let t0 = tokio::time::Instant::now();
    let first = Scheduler::new(publisher.clone(), schedule())
        .with_clock(clock(t0))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await; // ticks at 10 s
    first.shutdown().await.unwrap();
    // No replica runs from 15.25 s to 72.25 s: ticks 20..=60 s fell due, 70 s is 2.25 s late.
    tokio::time::sleep(Duration::from_secs(57)).await;
    let second = Scheduler::new(publisher, schedule())
        .with_clock(clock(t0))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await; // until 82.25 s: the 80 s tick
    second.shutdown().await.unwrap();
    let seen = drain(&broker);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    // Skip: 20..=60 dropped; 70 is late by less than 5 s and still published.
    assert_eq!(ids_of(&seen, "m:skip:"), ids("m", "skip", [10, 70, 80]));
    // Run once: one catch-up tick (60 s, the latest missed), then as above.
    assert_eq!(ids_of(&seen, "m:once:"), ids("m", "once", [10, 60, 70, 80]));
}

#[tokio::test(start_paused = true)]
async fn an_empty_schedule_and_bad_names_are_errors() {
    let (_broker, publisher) = setup().await;
    let empty = Schedule::new("empty").unwrap();
    let e = Scheduler::new(publisher, empty).start().await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidConfig {
            setting: "schedule entries"
        }
    );
    let e = Entry::cron("x", "every day", &Beat { n: 1 }).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidConfig {
            setting: "cron expression"
        }
    );
}

#[tokio::test(start_paused = true)]
async fn runs_on_the_broker_enum() {
    let broker = Arc::new(lepus::Broker::in_process());
    let publisher = Publisher::new(Arc::clone(&broker), "sched");
    publisher.declare().await.unwrap();
    broker
        .declare_queue(&QueueSpec::new("ticks", "sched").bind("#"))
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let handle = Scheduler::new(publisher, every_second())
        .with_clock(clock(t0))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert!(handle.is_leading());
    assert_eq!(handle.shutdown().await.unwrap().ticks_published, 3);
    let seen = drain(broker.as_in_process().unwrap());
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ids("s", "beat", 1..=3)
    );
}

/// A new leader replaces the token it took over at once, with nothing due (so the broker's
/// delivery count of a token never builds up over leader changes).
#[tokio::test(start_paused = true)]
async fn a_new_leader_refreshes_the_token_at_once() {
    let (_broker, publisher) = setup().await;
    let hourly = || {
        Schedule::new("h")
            .unwrap()
            .entry(Entry::every("hourly", Duration::from_secs(3600), &Beat { n: 1 }).unwrap())
            .unwrap()
    };
    let t0 = tokio::time::Instant::now();
    let first = Scheduler::new(publisher.clone(), hourly())
        .with_clock(clock(t0))
        .start()
        .await
        .unwrap();
    let second = Scheduler::new(publisher, hourly())
        .with_clock(clock(t0))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(first.stats().commits, 1, "the first leader's refresh");
    assert_eq!(second.stats().commits, 0);
    first.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = second.shutdown().await.unwrap();
    assert_eq!(
        (stats.leaderships, stats.commits, stats.ticks_published),
        (1, 1, 0)
    );
}
