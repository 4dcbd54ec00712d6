//! The 3-node test cluster of the `cluster` chaos group: its addresses (`RMQ_CLUSTER_URLS`,
//! exported by `tests/cluster/cluster-up.sh --env`), fault injection on its own nodes through
//! the scripts in `tests/cluster/` (never the default broker), and a guard that puts the
//! cluster back together after a scenario, even a failed one.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lepus::AmqpConfig;

/// The scripts of the test cluster (`tests/cluster/`).
pub fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cluster")
}

/// True when a missing cluster must fail the tests (`LEPUS_REQUIRE_CLUSTER=1`, set by
/// `.ci/run`) instead of skipping them.
pub fn cluster_required() -> bool {
    std::env::var("LEPUS_REQUIRE_CLUSTER").is_ok_and(|v| v == "1")
}

/// Heartbeat asked for in the test URLs: lapin closes a connection after two intervals
/// without a frame from the broker, so a frozen (SIGSTOPped) node is left after about 10 s
/// instead of RabbitMQ's default 60 s interval (120 s).
pub const HEARTBEAT_SECS: u16 = 5;

/// The cluster's addresses (`RMQ_CLUSTER_URLS`, comma-separated) with a short heartbeat, as
/// one configuration; `None` after a loud notice when the variable is unset and the cluster
/// is not required.
///
/// # Panics
/// When `RMQ_CLUSTER_URLS` is unset or the cluster is unreachable and
/// `LEPUS_REQUIRE_CLUSTER=1`.
pub fn cluster(test: &str) -> Option<AmqpConfig> {
    let Some(urls) = std::env::var("RMQ_CLUSTER_URLS")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        if cluster_required() {
            panic!("{test}: RMQ_CLUSTER_URLS is unset and LEPUS_REQUIRE_CLUSTER=1");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n##########\n## SKIPPED {test}: needs the 3-node test cluster\n\
             ## run `eval \"$(tests/cluster/cluster-up.sh --env)\"` first (RMQ_CLUSTER_URLS); \
             set LEPUS_REQUIRE_CLUSTER=1 to make this fail\n##########"
        );
        return None;
    };
    let addr = lepus::amqp::addresses(&urls)
        .into_iter()
        .map(|u| with_heartbeat(u, HEARTBEAT_SECS))
        .collect::<Vec<_>>()
        .join(",");
    Some(
        AmqpConfig::new(addr)
            .connect_timeout(Duration::from_secs(3))
            .send_timeout(Duration::from_secs(90)),
    )
}

/// `url` with `heartbeat=<secs>` in its query (unless it has one).
pub fn with_heartbeat(url: &str, secs: u16) -> String {
    if url.contains("heartbeat=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&heartbeat={secs}")
    } else {
        format!("{url}?heartbeat={secs}")
    }
}

/// Node index (1-based) of a cluster address, from its port (`5681` is node 1 with the
/// default `RMQ_CLUSTER_AMQP_PORT_BASE`).
pub fn node_of(addr: &str) -> Option<usize> {
    let base: u16 = std::env::var("RMQ_CLUSTER_AMQP_PORT_BASE")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(5681);
    let authority = addr.split("://").nth(1)?.split('/').next()?;
    let port: u16 = authority.rsplit(':').next()?.parse().ok()?;
    port.checked_sub(base).map(|i| usize::from(i) + 1)
}

/// Runs `tests/cluster/<script> args...`; returns its stdout, or its output as the error.
fn script(name: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(scripts().join(name))
        .args(args)
        .output()
        .map_err(|e| format!("{name}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{name} {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A fault (or the repair) applied to node `i` with `tests/cluster/cluster-node.sh`
/// (`kill`, `stop`, `pause`, `resume`, `start`), off the async runtime.
///
/// # Panics
/// When the script fails.
pub async fn node(op: &'static str, i: usize) {
    let started = Instant::now();
    let result =
        tokio::task::spawn_blocking(move || script("cluster-node.sh", &[op, &i.to_string()]))
            .await
            .expect("cluster-node.sh runs");
    if let Err(e) = result {
        panic!("{e}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "  cluster: {op} node {i} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// A RabbitMQ CLI call against node `i` (`tests/cluster/cluster-ctl.sh`), off the async
/// runtime.
pub async fn ctl(i: usize, args: &[&str]) -> Result<String, String> {
    let mut all = vec![i.to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        script("cluster-ctl.sh", &refs)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The node index (1-based) that leads quorum queue `queue`, asked through node `via`
/// (`rabbitmqctl list_queues name leader`).
pub async fn leader(queue: &str, via: usize) -> Option<usize> {
    let out = ctl(via, &["rabbitmqctl", "-q", "list_queues", "name", "leader"])
        .await
        .ok()?;
    let prefix = std::env::var("RMQ_CLUSTER_NODE_PREFIX").unwrap_or_else(|_| "lp".into());
    out.lines().find_map(|l| {
        let mut fields = l.split_whitespace();
        (fields.next()? == queue).then_some(())?;
        let leader = fields.next()?;
        leader
            .strip_prefix(prefix.as_str())?
            .split('@')
            .next()?
            .parse()
            .ok()
    })
}

/// Waits until `queue` has a leader on a node other than `not` (a new one after a failover),
/// asked through a live node; returns the time that took from `since`, or `None` after 60 s.
pub async fn new_leader(queue: &str, not: usize, since: Instant) -> Option<Duration> {
    let via = if not == 1 { 2 } else { 1 };
    while since.elapsed() < Duration::from_secs(60) {
        if leader(queue, via).await.is_some_and(|l| l != not) {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Prints what the cluster holds for queues whose name contains `queue`, asked through a
/// node that runs.
pub async fn print_queues(queue: &str) {
    let state = queues_state(queue).await;
    let _ = writeln!(std::io::stderr(), "  {state}");
}

/// What the cluster holds for queues whose name contains `queue` (and the delay levels that
/// hold messages): name, type, leader, ready, unacked, consumers, asked through a node that
/// runs.
pub async fn queues_state(queue: &str) -> String {
    for via in 1..=3 {
        if let Ok(out) = ctl(
            via,
            &[
                "rabbitmqctl",
                "-q",
                "list_queues",
                "name",
                "type",
                "leader",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
            ],
        )
        .await
        {
            let lines: Vec<&str> = out
                .lines()
                .filter(|l| {
                    l.contains(queue)
                        || (l.contains("lepus.delay")
                            && l.split_whitespace().skip(3).take(2).any(|n| n != "0"))
                })
                .collect();
            return format!(
                "cluster queues (via node {via}): name type leader ready unacked consumers\n    {}",
                lines.join("\n    ")
            );
        }
    }
    "cluster queues: no node answered".to_owned()
}

/// `adapters/lepus-cli/src/dead-letter-workers.erl` (what `lepus dead-letter-workers` runs):
/// reads (or, with `restart`, starts again) the dead-letter workers of the broker's or the
/// cluster's at-least-once quorum queues.
pub(crate) const DEAD_LETTER_WORKERS: &str =
    include_str!("../../adapters/lepus-cli/src/dead-letter-workers.erl");

/// The lines [`DEAD_LETTER_WORKERS`] printed, without blanks and the `ok` of `eval`.
pub(crate) fn printed_lines(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "ok")
        .map(str::to_owned)
        .collect()
}

/// Runs [`DEAD_LETTER_WORKERS`] through the first node that answers (blocking): that node and
/// the lines printed.
fn dead_letter_workers_via_cli(restart: bool) -> Result<(usize, Vec<String>), String> {
    let expr = format!("Restart = {restart},\n{DEAD_LETTER_WORKERS}");
    let mut last = String::new();
    for via in 1..=3 {
        match script(
            "cluster-ctl.sh",
            &[&via.to_string(), "rabbitmqctl", "-q", "eval", &expr],
        ) {
            Ok(out) => return Ok((via, printed_lines(&out))),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// [`dead_letter_workers_via_cli`] off the async runtime.
async fn eval_dead_letter_workers(restart: bool) -> Result<(usize, Vec<String>), String> {
    tokio::task::spawn_blocking(move || dead_letter_workers_via_cli(restart))
        .await
        .map_err(|e| e.to_string())?
}

/// Every at-least-once quorum queue's dead-letter worker as read on the queue's leader, one
/// line each (`<queue> leader=... discarded=... checked_out=... worker=... alive=...`).
pub async fn dead_letter_worker_lines() -> Result<Vec<String>, String> {
    eval_dead_letter_workers(false)
        .await
        .map(|(_, lines)| lines)
}

/// A fault: terminates every dead-letter worker running on node `i`, the way its
/// supervisor would, without a restart (what RabbitMQ can leave behind after a node loss:
/// RELIABILITY.md, "Cluster"). Returns how many there were.
pub async fn terminate_dead_letter_workers(i: usize) -> Result<usize, String> {
    const EXPR: &str = "length([supervisor:terminate_child(rabbit_fifo_dlx_sup, P) \
                        || {_, P, _, _} <- supervisor:which_children(rabbit_fifo_dlx_sup)]).";
    let out = ctl(i, &["rabbitmqctl", "-q", "eval", EXPR]).await?;
    out.trim()
        .parse()
        .map_err(|e| format!("node {i} answered {out:?}: {e}"))
}

/// The dead-lettering of the cluster's at-least-once quorum queues that hold messages or whose
/// worker is not alive, read on each queue's leader: messages waiting to be passed on, those
/// handed to the queue's dead-letter worker, and whether that worker is alive.
pub async fn dead_letter_workers() -> String {
    match eval_dead_letter_workers(false).await {
        Ok((via, lines)) => {
            let lines: Vec<String> = lines
                .into_iter()
                .filter(|l| !(l.contains("discarded=0 checked_out=0") && l.ends_with("alive=true")))
                .collect();
            format!(
                "dead-letter workers holding messages or not alive (via node {via}):\n    {}",
                lines.join("\n    ")
            )
        }
        Err(e) => format!("dead-letter workers: no node answered ({e})"),
    }
}

/// Starts the dead-letter worker again of every at-least-once quorum queue whose registered
/// worker is not alive (or that has none and holds messages), what the queue's next leader
/// election would do: RabbitMQ can leave a queue without one after a node loss
/// (rabbitmq-server#16652, #15548; RELIABILITY.md, "Cluster"). Returns one line per worker
/// started (empty when none was missing), or why no node answered.
pub async fn restart_dead_letter_workers() -> Result<Vec<String>, String> {
    eval_dead_letter_workers(true).await.map(|(_, lines)| lines)
}

/// Puts the cluster back together when dropped, whatever the scenario did: resumes paused
/// nodes, then `cluster-up.sh` restarts any node that is down and waits for it to rejoin.
/// Create one before the first fault.
#[derive(Debug)]
pub struct ClusterGuard;

impl ClusterGuard {
    /// Repairs the cluster now (blocking: also what `drop` does).
    pub fn repair() {
        for i in 1..=3 {
            // Fails harmlessly for a node that is not running.
            let _ = script("cluster-node.sh", &["resume", &i.to_string()]);
        }
        let started = Instant::now();
        match script("cluster-up.sh", &[]) {
            Ok(_) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "  cluster: repaired by cluster-up.sh ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "  cluster: repair failed: {e}");
                return;
            }
        }
        // A queue left without a dead-letter worker would hold the next scenario's retries.
        match dead_letter_workers_via_cli(true) {
            Ok((_, started)) if !started.is_empty() => {
                let _ = writeln!(
                    std::io::stderr(),
                    "  cluster: dead-letter workers started again:\n    {}",
                    started.join("\n    ")
                );
            }
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "  cluster: dead-letter workers not checked: {e}"
                );
            }
        }
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        ClusterGuard::repair();
    }
}

/// lepus's recent WARN and ERROR events (the last [`KEPT_EVENTS`]), for the diagnosis of a
/// failed scenario.
static EVENTS: std::sync::Mutex<std::collections::VecDeque<String>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());
/// How many WARN and ERROR events [`recent_events`] keeps.
pub const KEPT_EVENTS: usize = 40;

/// The WARN and ERROR events of lepus kept since [`record_events`], oldest first.
pub fn recent_events() -> Vec<String> {
    EVENTS
        .lock()
        .map(|e| e.iter().cloned().collect())
        .unwrap_or_default()
}

/// Installs a tiny `tracing` subscriber (once per process) that keeps lepus's WARN and ERROR
/// events for [`recent_events`] and, with `print` (`LEPUS_TRACE=1`), prints its INFO, WARN and
/// ERROR events with a timestamp to stderr.
pub fn record_events(print: bool) {
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};
    struct Keep {
        started: Instant,
        print: bool,
    }
    struct Fields(String);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={:?}", field.name(), value));
        }
    }
    impl Subscriber for Keep {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            let wanted = if self.print {
                tracing::Level::INFO
            } else {
                tracing::Level::WARN
            };
            *m.level() <= wanted && m.target().starts_with("lepus")
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &Event<'_>) {
            let mut f = Fields(String::new());
            e.record(&mut f);
            let line = format!(
                "[{:>6.2}] {} {}{}",
                self.started.elapsed().as_secs_f64(),
                e.metadata().level(),
                e.metadata().target(),
                f.0
            );
            // The failing load's own rejections are expected, and would crowd out the rest.
            if *e.metadata().level() <= tracing::Level::WARN && !line.contains("chaos: rejected") {
                if let Ok(mut kept) = EVENTS.lock() {
                    if kept.len() == KEPT_EVENTS {
                        kept.pop_front();
                    }
                    kept.push_back(line.clone());
                }
            }
            if self.print {
                let _ = writeln!(std::io::stderr(), "  trace {line}");
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
    let _ = tracing::subscriber::set_global_default(Keep {
        started: Instant::now(),
        print,
    });
}
