//! `Scheduler` on RabbitMQ: the single-active-consumer ledger queue elects one publisher, a
//! leader that stops hands over at once, seeded tokens are merged. The two-process kill test
//! is in the chaos suite (`tests/tests/chaos_schedule.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::amqp_support;
use amqp_support::{cleanup, next_within, unique};
use lepus::ledger::ledger_queue_name;
use lepus::{
    AmqpTransport, Entry, LedgerLease, Properties, Publication, Publisher, QueueSpec, Schedule,
    ScheduleLedger, Scheduler, Transport,
};

#[derive(serde::Serialize, serde::Deserialize, lepus::Message)]
#[lepus(routing_key = "beat")]
struct Beat {
    n: u32,
}

fn every_second(name: &str) -> Schedule {
    Schedule::new(name)
        .unwrap()
        .entry(Entry::every("beat", Duration::from_secs(1), &Beat { n: 1 }).unwrap())
        .unwrap()
}

/// The tick times (Unix ms) of the ticks waiting in `queue`, in arrival order.
async fn ticks_in(t: &AmqpTransport, queue: &str) -> Vec<u64> {
    let mut sub = t.consume(queue, 100).await.unwrap();
    let mut ticks = Vec::new();
    while let Some(d) = next_within(&mut sub, 500).await {
        let id = d.message_id().unwrap().to_owned();
        let at = id.rsplit(':').next().unwrap().parse::<u64>().unwrap();
        ticks.push(at);
        d.ack().await.unwrap();
    }
    ticks
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn replicas_elect_one_publisher_and_hand_over() {
    let t1 = Arc::new(broker!("replicas_elect_one_publisher_and_hand_over"));
    let t2 = Arc::new(broker!("replicas_elect_one_publisher_and_hand_over"));
    let spec = QueueSpec::new(unique("sched"), unique("sched-ex")).bind("#");
    t1.declare_exchange(&spec.exchange).await.unwrap();
    t1.declare_queue(&spec).await.unwrap();
    let name = unique("sched");
    let a = Scheduler::new(
        Publisher::new(Arc::clone(&t1), &spec.exchange),
        every_second(&name),
    )
    .start()
    .await
    .unwrap();
    let b = Scheduler::new(
        Publisher::new(Arc::clone(&t2), &spec.exchange),
        every_second(&name),
    )
    .start()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(a.is_leading() != b.is_leading(), "exactly one leads");
    let (leader, follower) = if a.is_leading() { (a, b) } else { (b, a) };
    assert_eq!(follower.stats().ticks_published, 0);

    let stopped_at = Instant::now();
    let led = leader.shutdown().await.unwrap();
    while !follower.is_leading() {
        assert!(stopped_at.elapsed() < Duration::from_secs(5), "no takeover");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let takeover = stopped_at.elapsed();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let followed = follower.shutdown().await.unwrap();
    eprintln!(
        "scheduler hand-over on RabbitMQ: {takeover:?}; ticks {} + {}",
        led.ticks_published, followed.ticks_published
    );
    assert!(takeover < Duration::from_secs(1), "{takeover:?}");
    assert!(led.ticks_published >= 2 && followed.ticks_published >= 2);

    let ticks = ticks_in(&t1, &spec.name).await;
    assert_eq!(
        ticks.len() as u64,
        led.ticks_published + followed.ticks_published
    );
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "no gap, no duplicate: {ticks:?}");
    }
    // One token is left, given back by the last replica.
    let ledger = ledger_queue_name(&name).unwrap();
    let status = t1.queue_status(&ledger).await.unwrap().unwrap();
    assert_eq!(status.messages, 1);
    t1.delete_queue(&ledger).await.unwrap();
    cleanup(&t1, &spec).await;
}

#[tokio::test]
async fn tokens_seeded_more_than_once_are_merged() {
    let t = Arc::new(broker!("tokens_seeded_more_than_once_are_merged"));
    let spec = QueueSpec::new(unique("merge"), unique("merge-ex")).bind("#");
    t.declare_exchange(&spec.exchange).await.unwrap();
    t.declare_queue(&spec).await.unwrap();
    let name = unique("merge");
    let ledger = ledger_queue_name(&name).unwrap();
    // Declares the ledger and seeds an empty token; then two more tokens, as replicas that
    // started together would leave (one recording a tick 3 s ahead).
    let lease = t.join(&name).await.unwrap();
    lease.release().await.unwrap();
    let ahead = (now_ms() / 1000 + 3) * 1000;
    let props = Properties::new();
    for body in [
        format!(r#"{{"v":1,"last":{{"beat":{ahead}}}}}"#),
        format!(r#"{{"v":1,"last":{{"beat":{},"gone":5}}}}"#, ahead - 5000),
    ] {
        t.publish(Publication::new("", &ledger, body.as_bytes(), &props))
            .await
            .unwrap();
    }
    let handle = Scheduler::new(
        Publisher::new(Arc::clone(&t), &spec.exchange),
        every_second(&name),
    )
    .start()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.leaderships, 1);
    let ticks = ticks_in(&t, &spec.name).await;
    assert!(!ticks.is_empty());
    // The latest record wins: nothing at or before the tick recorded ahead.
    assert!(ticks[0] > ahead, "{ticks:?} after {ahead}");
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "{ticks:?}");
    }
    // The three tokens became one.
    let status = t.queue_status(&ledger).await.unwrap().unwrap();
    assert_eq!(status.messages, 1);
    t.delete_queue(&ledger).await.unwrap();
    cleanup(&t, &spec).await;
}

/// Runs `rabbitmqctl args` off the runtime's threads; `None` when it cannot run here.
async fn rabbitmqctl(args: &[&str]) -> Option<std::process::Output> {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
            .ok()
    })
    .await
    .unwrap()
}

/// The broker closes the leader's connection: the follower takes over, the old leader
/// reconnects and joins again as a follower, and no tick is published twice or skipped.
#[tokio::test]
async fn a_leader_whose_connection_is_closed_hands_over() {
    let test = "a_leader_whose_connection_is_closed_hands_over";
    let ctl = rabbitmqctl(&["status"]).await;
    if !ctl.is_some_and(|o| o.status.success()) {
        assert!(
            !amqp_support::broker_required(),
            "{test}: rabbitmqctl is required"
        );
        eprintln!("\n##########\n## SKIPPED {test}: needs rabbitmqctl\n##########");
        return;
    }
    let name = unique("sched-lost");
    let config = |role: &str| amqp_support::env_config().connection_name(format!("{name}-{role}"));
    let t1 = Arc::new(broker!(test, config("first")));
    let t2 = Arc::new(broker!(test, config("second")));
    let spec = QueueSpec::new(unique("sched-lost"), unique("sched-lost-ex")).bind("#");
    t1.declare_exchange(&spec.exchange).await.unwrap();
    t1.declare_queue(&spec).await.unwrap();
    let first = Scheduler::new(
        Publisher::new(Arc::clone(&t1), &spec.exchange),
        every_second(&name),
    )
    .start()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(first.is_leading(), "the first to join leads");
    let second = Scheduler::new(
        Publisher::new(Arc::clone(&t2), &spec.exchange),
        every_second(&name),
    )
    .start()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(!second.is_leading());

    // Close the leader's connection from the broker's side.
    let out = rabbitmqctl(&["list_connections", "-s", "pid", "client_properties"])
        .await
        .unwrap();
    let tag = format!("{name}-first");
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| l.split('\t').next().map(str::to_owned))
        .collect();
    assert_eq!(pids.len(), 1, "{pids:?}");
    let closed = rabbitmqctl(&["close_connection", &pids[0], "lepus scheduler test"])
        .await
        .unwrap();
    assert!(closed.status.success());
    let closed_at = Instant::now();
    while !second.is_leading() {
        assert!(closed_at.elapsed() < Duration::from_secs(10), "no takeover");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert!(!first.is_leading(), "the old leader noticed and follows");
    assert!(t1.reconnections() >= 1);
    let a = first.shutdown().await.unwrap();
    let b = second.shutdown().await.unwrap();
    assert_eq!(a.leaderships, 1);
    assert_eq!(b.leaderships, 1);

    let ticks = ticks_in(&t2, &spec.name).await;
    assert_eq!(ticks.len() as u64, a.ticks_published + b.ticks_published);
    assert!(ticks.len() >= 5, "{ticks:?}");
    let mut sorted = ticks.clone();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "no gap, no duplicate: {ticks:?}");
    }
    let ledger = ledger_queue_name(&name).unwrap();
    t2.delete_queue(&ledger).await.unwrap();
    cleanup(&t2, &spec).await;
}

/// Replicas that start together declare the new ledger queue at the same moment: every
/// `join` succeeds (RabbitMQ 3.10 may answer a `basic.consume` on a quorum queue whose Raft
/// member another connection's declaration is still starting with an internal error that
/// closes the connection: `join` tries again), and exactly one of them leads.
#[tokio::test]
async fn replicas_joining_a_new_schedule_together_all_join() {
    let test = "replicas_joining_a_new_schedule_together_all_join";
    let mut transports = Vec::new();
    for _ in 0..4 {
        transports.push(Arc::new(broker!(test)));
    }
    for round in 0..15 {
        let name = unique(&format!("sched-race-{round}"));
        let joins = transports.iter().map(|t| {
            let (t, name) = (Arc::clone(t), name.clone());
            tokio::spawn(async move { t.join(&name).await })
        });
        let mut leases = Vec::new();
        for join in joins {
            match join.await.unwrap() {
                Ok(lease) => leases.push(lease),
                Err(e) => panic!("round {round}: join failed: {e}"),
            }
        }
        // Up to 5 s for a leader (a loaded broker is slow), then the others must still wait.
        let started = Instant::now();
        let mut leader = None;
        while leader.is_none() && started.elapsed() < Duration::from_secs(5) {
            for (i, lease) in leases.iter_mut().enumerate() {
                let acquired = tokio::time::timeout(Duration::from_millis(10), lease.acquire());
                if acquired.await.is_ok_and(|tokens| tokens.is_ok()) {
                    leader = Some(i);
                    break;
                }
            }
        }
        let leader = leader.unwrap_or_else(|| panic!("round {round}: no leader in 5 s"));
        for (i, lease) in leases.iter_mut().enumerate().filter(|&(i, _)| i != leader) {
            let acquired = tokio::time::timeout(Duration::from_millis(150), lease.acquire());
            assert!(
                acquired.await.is_err(),
                "round {round}: replica {i} leads beside replica {leader}"
            );
        }
        for lease in leases {
            lease.release().await.unwrap();
        }
        transports[0]
            .delete_queue(&ledger_queue_name(&name).unwrap())
            .await
            .unwrap();
    }
}
