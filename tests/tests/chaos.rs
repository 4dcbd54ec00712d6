//! Reliability under faults, against the real RabbitMQ (loopback only): load with publishers
//! sending throughout, several workers, a fault injected meanwhile; at the end zero confirmed
//! messages may be lost (duplicates are allowed by at-least-once, and reported).
//!
//! Scenarios run one at a time (they restart or alarm the shared broker). Each prints its row
//! of the summary table to stderr; `RELIABILITY.md` records a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus_tests::chaos::{
    broker, end_dead_letter_supervisor, rabbitmqctl, run, setup, BrokerGuard, Tally,
};
use lepus_tests::delays;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_all_connections_during_load_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(config) = broker("close_all_connections", true).await else {
        return;
    };
    let row = run(
        "`rabbitmqctl close_all_connections` x3",
        setup("close", &config),
        |tally: Arc<Tally>| async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                let at = Instant::now();
                rabbitmqctl(&["close_all_connections", "lepus chaos test"]).await;
                tally.fault_injected(at).await;
            }
        },
    )
    .await;
    assert_eq!(row.lost, 0, "{row:?}");
    assert_eq!(
        row.failed, 0,
        "every send was confirmed after recovery: {row:?}"
    );
    assert!(row.reconnections >= 3, "connections were rebuilt: {row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_restart_during_load_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(config) = broker("stop_app/start_app", true).await else {
        return;
    };
    let _guard = BrokerGuard;
    let row = run(
        "`rabbitmqctl stop_app` / `start_app`",
        setup("restart", &config),
        |tally: Arc<Tally>| async move {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let at = Instant::now();
            rabbitmqctl(&["stop_app"]).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            rabbitmqctl(&["start_app"]).await;
            tally.fault_injected(at).await;
        },
    )
    .await;
    assert_eq!(row.lost, 0, "{row:?}");
    assert_eq!(row.failed, 0, "{row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_alarm_blocks_then_resumes_losing_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(config) = broker("memory alarm", true).await else {
        return;
    };
    let _guard = BrokerGuard;
    let row = run(
        "memory alarm on for 3 s",
        setup("alarm", &config),
        |tally: Arc<Tally>| async move {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            rabbitmqctl(&["set_vm_memory_high_watermark", "0"]).await;
            // Measured from once the alarm is on: rabbitmqctl may take a second or two to
            // start under load, and publishes confirm until it runs. Confirms of what the
            // broker took just before the alarm arrive within the grace.
            let at = Instant::now() + Duration::from_millis(500);
            tokio::time::sleep(Duration::from_secs(3)).await;
            rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]).await;
            tally.fault_injected(at).await;
        },
    )
    .await;
    assert_eq!(row.lost, 0, "{row:?}");
    assert_eq!(row.failed, 0, "{row:?}");
    assert!(
        row.recovery >= Duration::from_secs(2),
        "publishing was blocked: {row:?}"
    );
}

/// A publish the broker never confirms (publishing blocked by a memory alarm) ends at the send
/// timeout, whether its frames were written or still waiting for the socket, one by one or in
/// a batch; a batch used to wait until the alarm ended. Nothing is reported sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_blocked_by_an_alarm_end_at_the_send_timeout() {
    use lepus::{AmqpTransport, ErrorKind, Properties, Publication, QueueSpec, Transport};

    let _one = ONE_AT_A_TIME.lock().await;
    let Some(config) = broker("send timeout under an alarm", true).await else {
        return;
    };
    let _guard = BrokerGuard;
    let send_timeout = Duration::from_secs(3);
    let t = AmqpTransport::connect(config.send_timeout(send_timeout))
        .await
        .unwrap();
    let queue = format!("lepus-chaos-send-timeout-{}", std::process::id());
    let exchange = format!("{queue}.x");
    t.declare_exchange(&exchange).await.unwrap();
    t.declare_queue(&QueueSpec::new(&queue, &exchange).bind("k"))
        .await
        .unwrap();
    rabbitmqctl(&["set_vm_memory_high_watermark", "0"]).await;
    let alarmed = Instant::now();
    loop {
        let alarms = tokio::process::Command::new("rabbitmqctl")
            .args(["eval", "rabbit_alarm:get_alarms()."])
            .output()
            .await
            .expect("rabbitmqctl runs");
        if String::from_utf8_lossy(&alarms.stdout).contains("memory") {
            break;
        }
        assert!(
            alarmed.elapsed() < Duration::from_secs(20),
            "the memory alarm came on"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let props = Properties::default();
    // 1 MB bodies: the socket's buffers fill, so later publishes of the batch are still
    // writing their frames when the deadline passes.
    let big = vec![b'x'; 1_000_000];
    let batch: Vec<_> = (0..16)
        .map(|_| Publication::new(&exchange, "k", &big, &props))
        .collect();
    let started = Instant::now();
    let (one, many) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(
            t.publish(Publication::new(&exchange, "k", b"one", &props)),
            t.publish_batch(&batch),
        )
    })
    .await
    .expect("the publishes ended within 30 s, not at the end of the alarm");
    let took = started.elapsed();
    rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]).await;
    let one = one.expect_err("a blocked publish is never reported sent");
    assert_eq!(one.kind(), ErrorKind::Timeout, "{one}");
    let many = many.expect("the batch was valid");
    assert_eq!(many.len(), batch.len());
    for outcome in &many {
        let e = outcome
            .as_ref()
            .expect_err("a blocked publish is never reported sent");
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    }
    assert!(
        took >= send_timeout && took < send_timeout + Duration::from_secs(10),
        "ended at the send timeout: {took:?}"
    );
    // Once the alarm is over the same transport publishes again.
    tokio::time::timeout(
        Duration::from_secs(30),
        t.publish(Publication::new(&exchange, "k", b"after", &props)),
    )
    .await
    .expect("publishing resumed")
    .unwrap();
    let _ = t.delete_queue(&queue).await;
    let _ = t.delete_exchange(&exchange).await;
    t.close().await.unwrap();
}

/// Reads the numbers a `chaos_worker` process wrote.
fn handled_in(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_process_killed_mid_handler_loses_nothing() {
    use lepus::{Publisher, Transport};
    use std::collections::HashMap;

    let _one = ONE_AT_A_TIME.lock().await;
    let Some(config) = broker("SIGKILL worker", true).await else {
        return;
    };
    let queue = format!("lepus-chaos-kill-{}", std::process::id());
    let dir = std::env::temp_dir().join(&queue);
    std::fs::create_dir_all(&dir).unwrap();
    let spawn = |name: &str| {
        let file = dir.join(name);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chaos_worker"))
            .args([queue.as_str(), file.to_str().unwrap()])
            .env("AMQP_ADDR", &config.addr)
            .kill_on_drop(true)
            .spawn()
            .expect("chaos_worker starts");
        (child, file)
    };
    // The queue exists before anything is published.
    let t = Arc::new(lepus::AmqpTransport::connect(config.clone()).await.unwrap());
    let probe = lepus::Worker::new(
        Arc::clone(&t),
        lepus_tests::chaos::worker_config_for(&queue, false),
        lepus::Registry::new(),
    );
    let spec = probe.queue_spec();
    probe.declare().await.unwrap();
    let (mut victim, victim_file) = spawn("victim");
    let (mut survivor, survivor_file) = spawn("survivor");

    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    let messages = 3_000u64;
    let mut confirmed = 0u64;
    let mut killed_at = None;
    for n in 0..messages {
        publisher
            .send(&lepus_tests::chaos::Numbered { n })
            .await
            .unwrap();
        confirmed += 1;
        // SIGKILL the victim while it is busy with its share.
        if killed_at.is_none() && n == messages / 2 && !handled_in(&victim_file).is_empty() {
            victim.start_kill().unwrap();
            killed_at = Some(Instant::now());
        }
    }
    let _ = victim.wait().await;
    // A replacement joins, as a supervisor would start one.
    let (mut replacement, replacement_file) = spawn("replacement");
    let deadline = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for file in [&victim_file, &survivor_file, &replacement_file] {
            for n in handled_in(file) {
                *counts.entry(n).or_default() += 1;
            }
        }
        if counts.len() as u64 >= messages || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all_handled_at = Instant::now();
    let _ = survivor.start_kill();
    let _ = replacement.start_kill();
    let _ = survivor.wait().await;
    let _ = replacement.wait().await;
    let lost = (0..messages).filter(|n| !counts.contains_key(n)).count() as u64;
    let duplicates: u64 = counts.values().map(|&c| u64::from(c - 1)).sum();
    let row = lepus_tests::chaos::Row {
        scenario: "worker process SIGKILLed mid-handler".into(),
        sent: messages,
        confirmed,
        failed: 0,
        handled: counts.len() as u64,
        lost,
        duplicates,
        // From the kill to every message handled.
        recovery: killed_at.map_or(Duration::ZERO, |k| all_handled_at.duration_since(k)),
        reconnections: 0,
        ..Default::default()
    };
    lepus_tests::chaos::report(&row);
    for q in [format!("{queue}.dead"), queue.clone()] {
        let _ = t.delete_queue(&q).await;
    }
    let _ = t.delete_exchange(&spec.exchange).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(killed_at.is_some(), "the victim was killed while working");
    assert_eq!(lost, 0, "{row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_process_stops_gracefully_on_sigterm() {
    use lepus::{Publisher, Transport};
    use std::collections::HashSet;

    let _one = ONE_AT_A_TIME.lock().await;
    let Some(config) = broker("SIGTERM worker", true).await else {
        return;
    };
    let queue = format!("lepus-chaos-term-{}", std::process::id());
    let dir = std::env::temp_dir().join(&queue);
    std::fs::create_dir_all(&dir).unwrap();
    let t = Arc::new(lepus::AmqpTransport::connect(config.clone()).await.unwrap());
    let probe = lepus::Worker::new(
        Arc::clone(&t),
        lepus_tests::chaos::worker_config_for(&queue, false),
        lepus::Registry::new(),
    );
    let spec = probe.queue_spec();
    probe.declare().await.unwrap();
    let spawn = |name: &str| {
        let file = dir.join(name);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chaos_worker"))
            .args([queue.as_str(), file.to_str().unwrap()])
            .env("AMQP_ADDR", &config.addr)
            .kill_on_drop(true)
            .spawn()
            .expect("chaos_worker starts");
        (child, file)
    };
    let publisher = Publisher::new(Arc::clone(&t), spec.exchange.clone());
    let messages = 5_000u64;
    for n in 0..messages {
        publisher
            .send(&lepus_tests::chaos::Numbered { n })
            .await
            .unwrap();
    }
    // A backlog is waiting when the worker starts.
    let (mut first, first_file) = spawn("first");
    // Stop it while it is working through the backlog.
    while handled_in(&first_file).len() < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = first.id().expect("running").to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(20), first.wait())
        .await
        .expect("stops within its shutdown timeout")
        .unwrap();
    assert!(status.success(), "graceful exit, not killed: {status:?}");
    let handled_by_first = handled_in(&first_file).len() as u64;
    assert!(
        handled_by_first < messages,
        "stopped before the end of the backlog"
    );

    let (mut second, second_file) = spawn("second");
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen: HashSet<u64> = loop {
        let seen: HashSet<u64> = handled_in(&first_file)
            .into_iter()
            .chain(handled_in(&second_file))
            .collect();
        if seen.len() as u64 >= messages || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = second.start_kill();
    let _ = second.wait().await;
    for q in [format!("{queue}.dead"), queue.clone()] {
        let _ = t.delete_queue(&q).await;
    }
    let _ = t.delete_exchange(&spec.exchange).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        seen.len() as u64,
        messages,
        "every message handled by one of the two"
    );
}

/// 1,000 delayed sends with distinct delays (0.1 to 8 s) on the classic levels, while a worker
/// retries 200 tasks with jittered backoff: no queue is added on the broker, nothing arrives
/// early, every retried task succeeds, and the lateness is printed (BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_distinct_delays_add_no_queue_and_none_is_early() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(config) = broker("thousand distinct delays", true).await else {
        return;
    };
    let spec = lepus::QueueSpec::new(
        format!("lepus-chaos-delays-{}", std::process::id()),
        format!("lepus-chaos-delays-x-{}", std::process::id()),
    )
    .bind("later.#");
    let delays = delays::distinct_delays(1_000, 100, 8_000, 0x1e905);
    let flaky = lepus::QueueSpec::new(
        format!("lepus-chaos-flaky-{}", std::process::id()),
        spec.exchange.clone(),
    );
    let retried = std::sync::atomic::AtomicU32::new(0);
    let row = delays::send_and_collect(
        &config,
        &spec,
        &delays,
        lepus::QueueKind::Classic,
        Duration::from_secs(60),
        &[spec.name.as_str(), flaky.name.as_str()],
        || async {
            let n = delays::flaky_retries(&config, &flaky, 200, Duration::from_secs(60)).await;
            retried.store(n, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .await;
    let retried = retried.into_inner();
    eprintln!("worker retries with jittered backoff: {retried} of 200 succeeded on a retry");
    assert_eq!(retried, 200, "every retried task succeeded");
    eprintln!(
        "| scenario | sent | arrived | lost | duplicates | early | queues before -> after | lateness min / p50 / p99 / max |"
    );
    eprintln!("{}", row.line("1,000 distinct delays, classic levels"));
    assert_eq!(row.arrived, 1_000, "{row:?}");
    assert_eq!(row.early, 0, "nothing before its time");
    assert_eq!(row.queues_after, row.queues_before, "no queue per delay");
    assert!(
        row.lateness_at(0.99) < 1_000.0,
        "99% within a second of their due time: {:?}",
        row.line("")
    );
}

/// 1,000 delayed sends (4 to 12 s) wait on the quorum levels while the broker is stopped and
/// started (`stop_app` / `start_app`): every one arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_messages_survive_a_broker_restart_on_quorum_levels() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(config) = broker("delays through a restart", true).await else {
        return;
    };
    let _guard = BrokerGuard;
    let delays = delays::distinct_delays(1_000, 4_000, 12_000, 0x9e57a27);
    let row = delays::through_quorum_levels(&config, "qdelays", &delays, || async {
        rabbitmqctl(&["stop_app"]).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        rabbitmqctl(&["start_app"]).await;
    })
    .await;
    eprintln!(
        "{}",
        row.line("1,000 delays on quorum levels, `stop_app` / `start_app`")
    );
    assert_eq!(row.arrived, 1_000, "0 lost: {row:?}");
    assert_eq!(row.early, 0, "nothing before its time");
}

/// RabbitMQ 3.10 ends a node's dead-letter supervisor, and with it every quorum queue's
/// dead-letter worker, when two workers fail within 5 s, and does not start it again
/// (rabbitmq-server#16652): a likely cause of a CI run where half of the delays of the restart
/// scenario above never arrived. 500 delays wait on the quorum levels while that happens; they
/// are held, then all arrive once the scenario starts the supervisor and the workers again, as
/// the README's runbook says.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letter_supervisor_gone_holds_delays_until_started_again() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(config) = broker("dead-letter supervisor gone", true).await else {
        return;
    };
    let _guard = BrokerGuard;
    let delays = delays::distinct_delays(500, 3_000, 8_000, 0xd1_5c0);
    let gone = std::sync::atomic::AtomicBool::new(false);
    let row = delays::through_quorum_levels(&config, "dlxsup", &delays, || async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ended = end_dead_letter_supervisor()
            .await
            .expect("rabbitmqctl eval");
        gone.store(ended, std::sync::atomic::Ordering::Relaxed);
    })
    .await;
    eprintln!(
        "{}",
        row.line("500 delays on quorum levels, the dead-letter supervisor ended")
    );
    assert!(
        gone.into_inner(),
        "the broker's dead-letter supervisor was gone"
    );
    assert!(
        row.broker_repairs
            .iter()
            .any(|l| l.contains("dead-letter supervisor gone, started: {ok,")),
        "the scenario started the supervisor again: {:?}",
        row.broker_repairs
    );
    assert_eq!(row.arrived, 500, "0 lost: {row:?}");
    assert_eq!(row.early, 0, "nothing before its time");
}

/// The `leading <unix ms>` lines a `schedule_replica` process wrote.
fn leading_in(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("leading ")?.trim().parse().ok())
        .collect()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Two `schedule_replica` processes run one schedule (a tick every second) for about a
/// minute; the leader is SIGKILLed half-way. Every tick from the first to the last must be on
/// the queue exactly once, and the survivor must lead within 2 s of the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_leader_killed_every_tick_published_once() {
    use lepus::Transport;
    use std::collections::BTreeMap;

    const HALF: Duration = Duration::from_secs(30);
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(config) = broker("SIGKILL scheduler leader", false).await else {
        return;
    };
    let id = std::process::id();
    let schedule = format!("lepus-chaos-schedule-{id}");
    let exchange = format!("lepus-chaos-schedule-{id}.x");
    let queue = format!("lepus-chaos-schedule-{id}");
    let dir = std::env::temp_dir().join(&queue);
    std::fs::create_dir_all(&dir).unwrap();
    let t = Arc::new(lepus::AmqpTransport::connect(config.clone()).await.unwrap());
    t.declare_exchange(&exchange).await.unwrap();
    let spec = lepus::QueueSpec::new(queue.clone(), exchange.clone()).bind("schedule.beat");
    t.declare_queue(&spec).await.unwrap();
    let spawn = |name: &str| {
        let file = dir.join(name);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_schedule_replica"))
            .args([schedule.as_str(), exchange.as_str(), file.to_str().unwrap()])
            .env("AMQP_ADDR", &config.addr)
            .kill_on_drop(true)
            .spawn()
            .expect("schedule_replica starts");
        (child, file)
    };
    let started = Instant::now();
    let (mut one, one_file) = spawn("one");
    let (mut two, two_file) = spawn("two");
    tokio::time::sleep(HALF).await;

    // SIGKILL whichever leads.
    let (one_leads, two_leads) = (leading_in(&one_file), leading_in(&two_file));
    assert!(
        one_leads.len() + two_leads.len() == 1,
        "one replica led, once: {one_leads:?} {two_leads:?}"
    );
    let one_led = !one_leads.is_empty();
    let survivor_file = if one_led { &two_file } else { &one_file };
    let (victim, survivor) = if one_led {
        (&mut one, &mut two)
    } else {
        (&mut two, &mut one)
    };
    victim.start_kill().unwrap();
    let killed_at = unix_ms();
    let _ = victim.wait().await;
    tokio::time::sleep(HALF).await;
    let survivor_leads = leading_in(survivor_file);
    // SIGTERM: the survivor gives the token back and exits 0.
    let pid = survivor.id().expect("survivor runs").to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(20), survivor.wait())
        .await
        .expect("the survivor exits on SIGTERM")
        .unwrap();
    let ran = started.elapsed();

    // Every tick on the queue: tick time -> copies.
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    let mut sub = t.consume(&queue, 500).await.unwrap();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
        let d = d.unwrap();
        let id = d.message_id().unwrap_or_default().to_owned();
        assert!(id.starts_with(&format!("{schedule}:beat:")), "{id}");
        let at: u64 = id.rsplit(':').next().unwrap().parse().unwrap();
        *counts.entry(at).or_default() += 1;
        d.ack().await.unwrap();
    }
    drop(sub);
    let (first, last) = (
        *counts.keys().next().expect("ticks"),
        *counts.keys().next_back().expect("ticks"),
    );
    let expected = (last - first) / 1000 + 1;
    let missing = (0..expected)
        .filter(|k| !counts.contains_key(&(first + k * 1000)))
        .count();
    let duplicates: u32 = counts.values().map(|c| c - 1).sum();
    let takeover = survivor_leads
        .iter()
        .find(|&&at| at >= killed_at)
        .map(|&at| Duration::from_millis(at - killed_at));
    eprintln!(
        "| two scheduler replicas, 1 s interval, leader SIGKILLed after {} s, {:.0} s in all | {expected} | {} | **{missing}** | **{duplicates}** | {} |",
        HALF.as_secs(),
        ran.as_secs_f64(),
        counts.values().sum::<u32>(),
        takeover.map_or("none".into(), |d| format!("{} ms", d.as_millis())),
    );
    let ledger = lepus::ledger::ledger_queue_name(&schedule).unwrap();
    let _ = t.delete_queue(&ledger).await;
    let _ = t.delete_queue(&format!("{queue}.dead")).await;
    let _ = t.delete_queue(&queue).await;
    let _ = t.delete_exchange(&exchange).await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = t.close().await;

    assert!(status.success(), "graceful exit: {status:?}");
    assert_eq!(missing, 0, "no gap: {counts:?}");
    assert_eq!(duplicates, 0, "no duplicate: {counts:?}");
    // The ticks span the run on both sides of the kill.
    assert!(
        first + 25_000 <= killed_at && last >= killed_at + 25_000,
        "{first}..{last} around {killed_at}"
    );
    let takeover = takeover.expect("the survivor took over");
    assert!(takeover < Duration::from_secs(2), "takeover {takeover:?}");
}
