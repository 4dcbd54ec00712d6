//! `lepus::Host`: a worker, an RPC server and an RPC client on one transport, stopped on one
//! signal (drain, clients, transport last); a second signal forces the exit; the drain deadline
//! aborts; health answers; dropping without `close` does not panic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::rpc::{RpcClient, RpcError, RpcServer, RpcServerConfig};
use lepus::{Host, Message, Publisher, Registry, ReplyTransport, Transport, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

use crate::amqp_support;
use crate::rpc_support::{cleanup, Add};

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[lepus(type = "LepusTestHostJob", routing_key = "job.run")]
struct Job {
    hang: bool,
}

fn registry(handled: &Arc<AtomicU64>, started: &Arc<AtomicBool>) -> Registry {
    let handled = Arc::clone(handled);
    let started = Arc::clone(started);
    Registry::new().with(move |job: Job, _| {
        let handled = Arc::clone(&handled);
        let started = Arc::clone(&started);
        async move {
            started.store(true, Ordering::SeqCst);
            if job.hang {
                std::future::pending::<()>().await;
            }
            handled.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

/// A host running a worker (`q`), an RPC server (`q.rpc`) and a client, all on `t`.
async fn host_of<T>(
    t: &Arc<T>,
    q: &str,
    worker_shutdown: Duration,
) -> (Host<T>, RpcClient<T>, Arc<AtomicU64>, Arc<AtomicBool>)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let x = format!("{q}.x");
    let handled = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let host = Host::new(Arc::clone(t));
    let config = WorkerConfig::new(q, &x)
        .bind("job.#")
        .shutdown_timeout(worker_shutdown);
    host.add_worker(Worker::new(
        Arc::clone(t),
        config,
        registry(&handled, &started),
    ))
    .await
    .unwrap();
    let server = RpcServer::new(
        Arc::clone(t),
        RpcServerConfig::new(format!("{q}.rpc"), &x).bind("rpc.#"),
    )
    .with(|r: Add, _| async move { Ok(r.a + r.b) });
    host.add_rpc_server(server).await.unwrap();
    let client = RpcClient::new(Arc::clone(t), &x).await.unwrap();
    host.add_rpc_client(client.clone()).await.unwrap();
    (host, client, handled, started)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < until, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One signal stops the worker, the server and the client, then closes the transport.
async fn one_signal_stops_everything<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let (host, client, handled, _) = host_of(&t, &q, Duration::from_secs(5)).await;
    assert!(host.is_live());
    wait_until("ready", || host.is_ready()).await;
    let publisher = Publisher::new(Arc::clone(&t), format!("{q}.x"));
    publisher.send(&Job { hang: false }).await.unwrap();
    let sum = client
        .call(&Add { a: 2, b: 3 }, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(sum, 5);
    wait_until("job handled", || handled.load(Ordering::SeqCst) == 1).await;

    let running = {
        let host = host.clone();
        tokio::spawn(async move { host.run_until(std::future::pending()).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!running.is_finished());
    host.signal();
    let report = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stopped in time")
        .unwrap()
        .expect("clean stop");
    assert_eq!(report.stopped.len(), 3, "{report:?}");
    assert!(report.aborted.is_empty() && !report.forced, "{report:?}");
    assert!(!host.is_ready() && !host.is_live());
    assert!(matches!(
        client
            .call(&Add { a: 1, b: 1 }, Duration::from_secs(1))
            .await,
        Err(RpcError::Closed)
    ));
    // Closing again is a no-op.
    assert_eq!(host.close().await.unwrap().stopped.len(), 0);
    assert!(add_after_close_fails(&host).await);
    tidy(&*t, &q).await;
}

rpc_tests!(one_signal_stops_everything);

/// Adding after the shutdown is refused.
async fn add_after_close_fails<T>(host: &Host<T>) -> bool
where
    T: Transport + 'static,
    T::Subscription: 'static,
{
    let worker = Worker::new(
        Arc::clone(host.transport()),
        WorkerConfig::new("lepus-test-never", "lepus-test-never"),
        Registry::new(),
    );
    host.add_worker(worker)
        .await
        .is_err_and(|e| e.kind() == lepus::ErrorKind::Closed)
}

/// A handler that never returns: with `force`, a second signal ends the drain at once;
/// without, the drain deadline (300 ms) does. Returns the report and how long it took.
async fn stop_a_hanging_handler<T>(
    t: &Arc<T>,
    q: &str,
    force: bool,
) -> (lepus::HostReport, Duration)
where
    T: ReplyTransport + 'static,
    T::Subscription: 'static,
{
    let (host, _client, _, started) = host_of(t, q, Duration::from_secs(600)).await;
    let host = if force {
        host.drain_timeout(Duration::from_secs(600))
    } else {
        host.drain_timeout(Duration::from_millis(300))
    };
    let publisher = Publisher::new(Arc::clone(t), format!("{q}.x"));
    publisher.send(&Job { hang: true }).await.unwrap();
    wait_until("handler started", || started.load(Ordering::SeqCst)).await;
    let running = {
        let host = host.clone();
        tokio::spawn(async move { host.run_until(std::future::pending()).await })
    };
    host.signal();
    let first = Instant::now();
    if force {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!running.is_finished(), "draining waits for the handler");
        host.signal();
    }
    let report = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("a forced stop returns promptly")
        .unwrap()
        .expect("aborting is not an error");
    (report, first.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_forces_the_exit_in_process() {
    for force in [true, false] {
        let t = Arc::new(lepus::InProcessBroker::new());
        let q = amqp_support::unique("host-force");
        let (report, took) = stop_a_hanging_handler(&t, &q, force).await;
        assert_eq!(report.forced, force, "{report:?}");
        assert_eq!(report.aborted, [format!("worker {q}")], "{report:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // The aborted delivery is back in its queue.
        wait_until("given back", || t.message_count(&q).unwrap() == 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_forces_the_exit_rabbitmq() {
    let admin = broker!("host force (admin)");
    for force in [true, false] {
        let t = Arc::new(broker!("host force"));
        let q = amqp_support::unique("host-force");
        let (report, took) = stop_a_hanging_handler(&t, &q, force).await;
        assert_eq!(report.forced, force, "{report:?}");
        assert_eq!(report.aborted, [format!("worker {q}")], "{report:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert!(!t.is_connected(), "the transport was closed");
        // Unacknowledged, the delivery went back to its queue with the connection.
        assert_eq!(amqp_support::wait_for_count(&admin, &q, 1).await, 1);
        cleanup(&admin, &q, &format!("{q}.x")).await;
        cleanup(&admin, &format!("{q}.rpc"), &format!("{q}.x")).await;
    }
    admin.close().await.unwrap();
}

/// Dropping a host (services, client, transport) without `close` never panics, also when the
/// runtime ends right after: on a runtime and thread of its own, counting every panic of
/// those threads and of lapin's I/O threads.
#[test]
fn dropping_without_close_never_panics() {
    static PANICS: AtomicU64 = AtomicU64::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        if name.starts_with("host-drop") || name.starts_with("lapin") {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    let mut skipped = false;
    for round in 0..5 {
        let outcome = std::thread::Builder::new()
            .name("host-drop".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("host-drop-rt")
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let t = amqp_support::connect("host drop").await?;
                    let t = Arc::new(t);
                    let q = amqp_support::unique("host-drop");
                    let (host, client, _, _) = host_of(&t, &q, Duration::from_secs(1)).await;
                    let publisher = Publisher::new(Arc::clone(&t), format!("{q}.x"));
                    publisher
                        .send(&Job {
                            hang: round % 2 == 1,
                        })
                        .await
                        .unwrap();
                    let _ = client
                        .call(&Add { a: 1, b: 2 }, Duration::from_secs(5))
                        .await;
                    drop((host, client, publisher, t));
                    Some(q)
                })
            })
            .unwrap()
            .join();
        match outcome {
            Ok(Some(q)) => cleanup_later(&q),
            Ok(None) => {
                skipped = true;
                break;
            }
            Err(_) => panic!("round {round}: the dropping thread panicked"),
        }
    }
    // lapin's threads end a little after the runtime.
    std::thread::sleep(Duration::from_millis(300));
    if !skipped {
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "no panic anywhere");
    }
}

/// Deletes what `host_of` declared for `q`, on a runtime of its own.
fn cleanup_later(q: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let admin = broker!("host drop (cleanup)");
        cleanup(&admin, q, &format!("{q}.x")).await;
        cleanup(&admin, &format!("{q}.rpc"), &format!("{q}.x")).await;
        admin.close().await.unwrap();
    });
}

/// A scheduler in the host: its ticks reach the host's worker, and the one signal stops it
/// with the others (giving its token back).
async fn scheduler_stops_with_the_host<T>(t: Arc<T>, q: String)
where
    T: ReplyTransport + lepus::ScheduleLedger + 'static,
    T::Subscription: 'static,
    T::Lease: 'static,
{
    let (host, _client, handled, _) = host_of(&t, &q, Duration::from_secs(5)).await;
    let publisher = Publisher::new(Arc::clone(&t), format!("{q}.x"));
    let schedule = lepus::Schedule::new(&q)
        .unwrap()
        .entry(
            lepus::Entry::every("tick", Duration::from_millis(100), &Job { hang: false }).unwrap(),
        )
        .unwrap();
    host.add_scheduler(lepus::Scheduler::new(publisher, schedule))
        .await
        .unwrap();
    wait_until("ticks handled", || handled.load(Ordering::SeqCst) >= 2).await;
    assert!(host.is_ready());
    host.signal();
    let report = host.run_until(std::future::pending()).await.unwrap();
    assert!(
        report.stopped.contains(&format!("scheduler {q}")),
        "{report:?}"
    );
    assert_eq!(report.stopped.len(), 4, "{report:?}");
    assert!(report.aborted.is_empty(), "{report:?}");
    tidy(&*t, &q).await;
}

rpc_tests!(scheduler_stops_with_the_host);

/// Deletes what `host_of` (and a schedule named `q`) declared, on `t` if it is still open,
/// else on a connection of its own (the host closed `t`).
async fn tidy<T: Transport>(t: &T, q: &str) {
    if t.is_connected() {
        tidy_on(t, q).await;
    } else if let Some(admin) = amqp_support::connect("host tidy").await {
        tidy_on(&admin, q).await;
        admin.close().await.unwrap();
    }
}

async fn tidy_on<T: Transport>(t: &T, q: &str) {
    for queue in [
        q.to_owned(),
        format!("{q}.dead"),
        format!("{q}.rpc"),
        format!("{q}.rpc.dead"),
        format!("lepus.schedule.{q}"),
    ] {
        t.delete_queue(&queue).await.unwrap();
    }
    t.delete_exchange(&format!("{q}.x")).await.unwrap();
}
