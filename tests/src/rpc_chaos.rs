//! The RPC load of the reliability tests: RPC servers (each on its own connection) answer
//! numbered pings, callers (each client on its own connection, both reply modes) call them
//! continuously, a fault is injected meanwhile. At the end every call must have ended by its
//! deadline (a reply or an error; none hangs), every reply must echo its own request, and
//! calls made after recovery must all succeed.
//!
//! What "lost" means here: RabbitMQ's direct reply-to is at-most-once and an exclusive reply
//! queue dies with its connection, so a reply on its way during the fault is gone; the call
//! ends with a timeout at its deadline, which is the specified behaviour. A lost call is one
//! that **hangs**: no outcome by its deadline.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::rpc::{Request, RpcClient, RpcClientConfig, RpcServer, RpcServerConfig};
use lepus::{AmqpConfig, AmqpTransport, Message, ReplyMode, RpcError, Transport};
use serde::{Deserialize, Serialize};

use crate::chaos::SCENARIO_LIMIT;

/// One call of the load: the server answers with the same fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Message, Request)]
#[lepus(type = "LepusChaosPing", routing_key = "chaos.ping")]
#[lepus(reply = Ping, reply_type = "LepusChaosPong")]
pub struct Ping {
    /// Which caller loop sent it.
    pub caller: u32,
    /// Its number within that loop.
    pub seq: u64,
}

/// The outcome of one RPC scenario, a row of the RPC summary table.
#[derive(Debug, Clone, Default)]
pub struct RpcRow {
    /// Scenario name.
    pub scenario: String,
    /// Calls made during the load (the check after recovery not included).
    pub calls: u64,
    /// Calls that got their reply.
    pub replies: u64,
    /// Calls that ended with [`RpcError::Timeout`] by their deadline.
    pub timeouts: u64,
    /// Calls that ended with another error by their deadline.
    pub errors: u64,
    /// Calls without an outcome by their deadline (plus a second of slack): lost.
    pub hung: u64,
    /// Replies that did not echo their own request.
    pub mismatched: u64,
    /// Calls of the check after recovery that succeeded, and how many were made.
    pub after_recovery: (u64, u64),
    /// Longest time from the end of a fault to the next successful reply.
    pub recovery: Duration,
    /// Connections rebuilt by the transports (servers and clients).
    pub reconnections: u64,
    /// Reply paths opened again by the clients.
    pub reopenings: u64,
    /// Requests each server took during the check after recovery (every server resumed).
    pub served_after_recovery: Vec<u64>,
    /// A few of the other errors' messages.
    pub error_samples: Vec<String>,
}

impl RpcRow {
    /// The table line of this row.
    pub fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {}/{} | {:.1} s | {} | {} |",
            self.scenario,
            self.calls,
            self.replies,
            self.timeouts,
            self.errors,
            self.hung,
            self.mismatched,
            self.after_recovery.0,
            self.after_recovery.1,
            self.recovery.as_secs_f64(),
            self.reconnections,
            self.reopenings
        )
    }
}

/// The header of the RPC summary table.
pub const RPC_TABLE_HEADER: &str = "| scenario | calls | replies | timeouts | other errors | hung | mismatched | after recovery | recovery | reconnections | reply paths reopened |\n|---|---|---|---|---|---|---|---|---|---|---|";

/// Prints a row (and the details behind it) to the process's stderr (the test harness does
/// not capture that).
pub fn report_rpc(row: &RpcRow) {
    let _ = writeln!(
        std::io::stderr(),
        "\n{RPC_TABLE_HEADER}\n{}\n  requests per server after recovery: {:?}; other errors, first few: {:?}\n",
        row.line(),
        row.served_after_recovery,
        row.error_samples
    );
}

/// What an RPC scenario needs to run.
#[derive(Debug, Clone)]
pub struct RpcSetup {
    /// Server queue name (unique per run); the exchange is `<queue>.x`.
    pub queue: String,
    /// Least number of calls (calling goes on until the faults are over).
    pub calls: u64,
    /// RPC server instances, each with its own connection.
    pub servers: usize,
    /// RPC clients, each with its own connection; even ones use direct reply-to, odd ones an
    /// exclusive reply queue.
    pub clients: usize,
    /// Caller loops per client, each making one call at a time.
    pub loops_per_client: usize,
    /// Each call's timeout.
    pub timeout: Duration,
    /// Calls per client of the check after recovery.
    pub check_calls: u64,
    /// Connection configuration (with several addresses, client `i` starts at the `i`-th:
    /// see [`crate::chaos::rotated`]).
    pub config: AmqpConfig,
    /// A quorum request queue (replicated, for a cluster) instead of a classic one.
    pub quorum: bool,
}

/// The default RPC load on `config`: 2 servers, 4 clients of 2 loops, 3,000 calls at least,
/// 2 s per call, 50 calls per client after recovery.
pub fn rpc_setup(queue: &str, config: &AmqpConfig) -> RpcSetup {
    RpcSetup {
        queue: format!("lepus-chaos-{queue}-{}", std::process::id()),
        calls: 3_000,
        servers: 2,
        clients: 4,
        loops_per_client: 2,
        timeout: Duration::from_secs(2),
        check_calls: 50,
        config: config.clone(),
        quorum: false,
    }
}

/// How long past its deadline a call may take before it counts as hung.
const HANG_SLACK: Duration = Duration::from_secs(1);

/// Shared state of one RPC run.
#[derive(Debug, Default)]
pub struct RpcTally {
    calls: AtomicU64,
    replies: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    hung: AtomicU64,
    mismatched: AtomicU64,
    last_reply: Mutex<Option<Instant>>,
    recovery: Mutex<Duration>,
    error_samples: Mutex<Vec<String>>,
}

impl RpcTally {
    /// Notes that a fault ended at `at`: recovery is measured from there to the next
    /// successful reply (120 s at most).
    pub async fn fault_over(&self, at: Instant) {
        crate::chaos::note_recovery(&self.last_reply, &self.recovery, at).await;
    }

    /// Makes one call and counts its outcome; returns true for its correct reply.
    async fn call<T: lepus::ReplyTransport + 'static>(
        &self,
        client: &RpcClient<T>,
        ping: Ping,
        timeout: Duration,
    ) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(timeout + HANG_SLACK, client.call(&ping, timeout)).await {
            Err(_) => {
                self.hung.fetch_add(1, Ordering::Relaxed);
                false
            }
            Ok(Ok(reply)) if reply == ping => {
                self.replies.fetch_add(1, Ordering::Relaxed);
                *self.last_reply.lock().unwrap() = Some(Instant::now());
                true
            }
            Ok(Ok(_)) => {
                self.mismatched.fetch_add(1, Ordering::Relaxed);
                false
            }
            Ok(Err(RpcError::Timeout)) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                false
            }
            Ok(Err(e)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut samples = self.error_samples.lock().unwrap();
                if samples.len() < 5 {
                    samples.push(e.to_string());
                }
                false
            }
        }
    }
}

type Client = RpcClient<AmqpTransport>;

/// Runs the RPC load with `fault` injected meanwhile (it gets the tally to mark the end of
/// its faults), then checks calls after recovery and returns the row.
pub async fn run_rpc<F, Fut>(scenario: &str, setup: RpcSetup, fault: F) -> RpcRow
where
    F: FnOnce(Arc<RpcTally>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // Bounded: a scenario that hangs fails instead of holding CI.
    match tokio::time::timeout(SCENARIO_LIMIT, run_rpc_unbounded(scenario, setup, fault)).await {
        Ok(row) => row,
        Err(_) => panic!("scenario {scenario:?} did not finish within {SCENARIO_LIMIT:?}"),
    }
}

async fn run_rpc_unbounded<F, Fut>(scenario: &str, setup: RpcSetup, fault: F) -> RpcRow
where
    F: FnOnce(Arc<RpcTally>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tally = Arc::new(RpcTally::default());
    let exchange = format!("{}.x", setup.queue);
    let mut clients_so_far = 0;
    let mut next_config = || {
        clients_so_far += 1;
        crate::chaos::rotated(&setup.config, clients_so_far - 1)
    };
    let connect = |config: AmqpConfig| async {
        Arc::new(AmqpTransport::connect(config).await.expect("connects"))
    };
    let mut transports = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..setup.servers {
        let t = connect(next_config()).await;
        let mut config =
            RpcServerConfig::new(setup.queue.clone(), exchange.clone()).bind("chaos.#");
        if setup.quorum {
            config = config.kind(lepus::QueueKind::Quorum);
        }
        let server = RpcServer::new(Arc::clone(&t), config)
            .with(|ping: Ping, _| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(ping)
            })
            .start()
            .await
            .expect("server starts");
        transports.push(t);
        servers.push(server);
    }
    let mut clients: Vec<Client> = Vec::new();
    for i in 0..setup.clients {
        let t = connect(next_config()).await;
        let mode = if i % 2 == 0 {
            ReplyMode::DirectReplyTo
        } else {
            ReplyMode::ExclusiveQueue
        };
        let config = RpcClientConfig::new(exchange.clone()).reply_mode(mode);
        clients.push(
            RpcClient::with_config(Arc::clone(&t), config)
                .await
                .expect("client starts"),
        );
        transports.push(t);
    }

    let (fault, faults_done) = crate::chaos::spawn_fault(fault(Arc::clone(&tally)));
    let monitor = {
        let tally = Arc::clone(&tally);
        let started = Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let _ = writeln!(
                    std::io::stderr(),
                    "  [{:>5.1} s] calls {} replies {} timeouts {} errors {} hung {}",
                    started.elapsed().as_secs_f64(),
                    g(&tally.calls),
                    g(&tally.replies),
                    g(&tally.timeouts),
                    g(&tally.errors),
                    g(&tally.hung)
                );
            }
        })
    };
    let mut callers = tokio::task::JoinSet::new();
    let mut caller = 0u32;
    for client in &clients {
        for _ in 0..setup.loops_per_client {
            let (client, tally, done) =
                (client.clone(), Arc::clone(&tally), Arc::clone(&faults_done));
            let (total, timeout) = (setup.calls, setup.timeout);
            callers.spawn(async move {
                for seq in 0.. {
                    if tally.calls.load(Ordering::Relaxed) >= total && done.load(Ordering::Relaxed)
                    {
                        return;
                    }
                    tally.call(&client, Ping { caller, seq }, timeout).await;
                    // Spread the load over a few seconds so that the fault lands in the middle.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            caller += 1;
        }
    }
    while callers.join_next().await.is_some() {}
    let _ = fault.await;
    let calls = tally.calls.load(Ordering::Relaxed);
    let before_check: Vec<u64> = servers.iter().map(|s| s.stats().requests).collect();

    // After recovery every call succeeds, on every client.
    let check = Arc::new(RpcTally::default());
    let mut checks = tokio::task::JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let (client, check) = (client.clone(), Arc::clone(&check));
        let (n, timeout) = (setup.check_calls, setup.timeout);
        let caller = u32::MAX - i as u32;
        checks.spawn(async move {
            for seq in 0..n {
                check.call(&client, Ping { caller, seq }, timeout).await;
            }
        });
    }
    while checks.join_next().await.is_some() {}
    monitor.abort();

    let mut served_after = Vec::new();
    for (server, before) in servers.into_iter().zip(before_check) {
        let stats = server.shutdown().await;
        served_after.push(stats.requests.saturating_sub(before));
    }
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let row = RpcRow {
        scenario: scenario.to_owned(),
        calls,
        replies: g(&tally.replies),
        timeouts: g(&tally.timeouts),
        errors: g(&tally.errors),
        hung: g(&tally.hung) + g(&check.hung),
        mismatched: g(&tally.mismatched) + g(&check.mismatched),
        after_recovery: (g(&check.replies), g(&check.calls)),
        recovery: *tally.recovery.lock().unwrap(),
        reconnections: transports.iter().map(|t| t.reconnections()).sum(),
        reopenings: clients.iter().map(RpcClient::reopenings).sum(),
        served_after_recovery: served_after,
        error_samples: tally.error_samples.lock().unwrap().clone(),
    };
    drop(clients);
    // Leave nothing behind.
    if let Some(t) = transports.first() {
        let _ = t.delete_queue(&format!("{}.dead", setup.queue)).await;
        let _ = t.delete_queue(&setup.queue).await;
        let _ = t.delete_exchange(&exchange).await;
    }
    report_rpc(&row);
    row
}
