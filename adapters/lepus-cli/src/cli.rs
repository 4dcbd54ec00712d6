//! The command line, as clap types.

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes: 0 ok, 1 usage or invalid input, 2 broker unreachable, 3 not found,
4 unroutable (no queue bound), 5 other broker or operation failure,
6 topology source (management API and rabbitmqctl) unavailable, 7 route: a key did not match,
8 call: no reply before the timeout, 9 call: the server answered with an error,
130 interrupted (nothing lost).";

/// Lepus on the command line: publish tasks, make RPC calls, watch tasks flow, inspect and
/// replay dead letters, explain topic routing, list the topology.
#[derive(Debug, Parser)]
#[command(name = "lepus", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Options of every subcommand.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// RabbitMQ address (for example amqp://127.0.0.1:5672/%2f); no default: commands that
    /// need the broker say so when neither this nor AMQP_ADDR is given.
    #[arg(long = "amqp", env = "AMQP_ADDR", global = true)]
    pub amqp: Option<String>,
    /// The topic exchange of Lepus.
    #[arg(long, env = "LEPUS_EXCHANGE", default_value = "lepus", global = true)]
    pub exchange: String,
    /// Output format: text for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// The management HTTP API (`http://user:pass@host:15672`), for `topology` and `tail`.
    /// Default: the AMQP address's host on port 15672 with its credentials (guest/guest when
    /// it has none).
    #[arg(long, env = "LEPUS_MANAGEMENT_URL", global = true)]
    pub management_url: Option<String>,
}

impl Global {
    /// The broker address of `--amqp` or `AMQP_ADDR`; neither is a usage error (exit 1) that
    /// says how to choose, never a silent default.
    pub fn amqp(&self) -> Result<&str, crate::failure::Failure> {
        match self.amqp.as_deref().map(str::trim) {
            Some(addr) if !addr.is_empty() => Ok(addr),
            _ => Err(crate::failure::Failure::usage(format!(
                "no broker chosen: pass --amqp {} or set AMQP_ADDR",
                lepus::LOCAL_ADDR
            ))),
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned text.
    Text,
    /// JSON (one document; `tail` writes one JSON object per line).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish one task (the JSON envelope) with confirms.
    Publish(PublishArgs),
    /// Make one RPC call and print the reply's payload.
    Call(CallArgs),
    /// Print the tasks flowing through the exchange, first attempts and retries, without
    /// consuming anyone's messages or (through the firehose) changing routing.
    Tail(TailArgs),
    /// Inspect, replay and purge dead letters (`<queue>.dead`).
    Dead {
        /// What to do with the dead letters.
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Explain which key words match which part of a topic pattern (no broker needed).
    Route(RouteArgs),
    /// List the exchange, its queues, bindings, dead-letter queues and delay levels with
    /// counts (through the management HTTP API, else `rabbitmqctl`).
    Topology(TopologyArgs),
    /// Check (or, with --restart, start again) the broker's dead-letter workers, which pass
    /// on what quorum delay levels and quorum queues dead-letter: RabbitMQ 3.10 can lose them
    /// and then holds delayed messages and retries. Runs `rabbitmqctl eval` on the broker host.
    DeadLetterWorkers(DeadLetterWorkersArgs),
    /// Serve the operator's console: one web page with queues, workers, retries and dead
    /// letters, live (127.0.0.1:7070 by default; read-only unless --allow-writes).
    Console(ConsoleArgs),
    /// Run a scheduler replica: publish a task on an interval or a cron expression until
    /// Ctrl-C or SIGTERM. Any number of replicas of one schedule publish each tick once.
    Schedule(ScheduleArgs),
}

/// `lepus dead-letter-workers`.
#[derive(Debug, Args)]
pub struct DeadLetterWorkersArgs {
    /// Start again each node's dead-letter supervisor where it is gone, then the worker of
    /// every at-least-once quorum queue whose registered worker is not alive (what a node
    /// restart or the queue's next leader election would do).
    #[arg(long)]
    pub restart: bool,
}

/// `lepus console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub bind: String,
    /// Allow replay and purge of dead letters from the page.
    #[arg(long)]
    pub allow_writes: bool,
    /// Ask for HTTP basic auth with these credentials (`user:password`).
    #[arg(long, env = "LEPUS_CONSOLE_AUTH", hide_env_values = true)]
    pub auth: Option<String>,
}

/// `lepus schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The task type (the envelope's `className` and the AMQP `type` property).
    #[arg(value_name = "TYPE")]
    pub message_type: String,
    /// Routing key.
    #[arg(long)]
    pub key: String,
    /// The payload as JSON; read from stdin when absent.
    #[arg(long)]
    pub json: Option<String>,
    /// Publish every so long (`1s`, `15m`, `1h`, `1d`), on the multiples of it since the Unix
    /// epoch.
    #[arg(long, value_parser = parse_duration, conflicts_with = "cron", required_unless_present = "cron")]
    pub every: Option<std::time::Duration>,
    /// Publish at the times of a cron expression, in UTC (`"0 3 * * *"`; six fields with
    /// seconds first).
    #[arg(long)]
    pub cron: Option<String>,
    /// The schedule's name: replicas of one name elect one publisher (their ledger is the
    /// queue `lepus.schedule.<name>`).
    #[arg(long)]
    pub schedule: String,
    /// The entry's name in the schedule (the middle part of each tick's message id).
    #[arg(long, default_value = "task")]
    pub entry: String,
    /// Ticks missed while no replica ran (more than 30 s late): skip them, or publish one
    /// catch-up tick.
    #[arg(long, value_enum, default_value = "skip")]
    pub missed: MissedPolicy,
}

/// What `lepus schedule` does with missed ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MissedPolicy {
    /// Drop them; resume at the next tick.
    Skip,
    /// Publish one catch-up tick, then resume.
    RunOnce,
}

/// `lepus publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The task type (the envelope's `className` and the AMQP `type` property).
    #[arg(value_name = "TYPE")]
    pub message_type: String,
    /// Routing key.
    #[arg(long)]
    pub key: String,
    /// The payload as JSON; read from stdin when absent.
    #[arg(long)]
    pub json: Option<String>,
    /// `retryStrategy`.
    #[arg(long, value_enum)]
    pub retry_strategy: Option<RetryStrategy>,
    /// `retryLimit`: retries allowed after the first delivery.
    #[arg(long)]
    pub retry_limit: Option<u32>,
    /// `retryInterval`: delays in seconds, comma separated (`15,30,0.5`).
    #[arg(long, value_name = "SECONDS,...")]
    pub retry_interval: Option<String>,
    /// Message id (default: a fresh unique one).
    #[arg(long)]
    pub message_id: Option<String>,
    /// Route the task after this delay (`90s`, `15m`, `2h`, `7d`; exact to the millisecond,
    /// at most about 397 days), through the delay levels.
    #[arg(long, value_parser = parse_duration, conflicts_with = "at")]
    pub delay: Option<std::time::Duration>,
    /// Route the task at this time, RFC 3339 (`2026-12-24T18:00:00+01:00`); at once if past.
    #[arg(long, value_parser = parse_rfc3339)]
    pub at: Option<std::time::SystemTime>,
    /// Wait on the quorum delay levels (replicated, dead-lettered at least once): for tasks
    /// whose queues are quorum queues.
    #[arg(long)]
    pub quorum_levels: bool,
    /// AMQP `priority`, 0 to 255: delivered first from a queue declared with a maximum
    /// priority (above the maximum counts as the maximum); ignored by other queues.
    #[arg(long, value_name = "N")]
    pub priority: Option<u8>,
}

/// `lepus call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The request type (the envelope's `className` and the AMQP `type` property).
    #[arg(value_name = "TYPE")]
    pub message_type: String,
    /// Routing key (with `--exchange ''`: the server's queue name).
    #[arg(long)]
    pub key: String,
    /// The payload as JSON; read from stdin when absent.
    #[arg(long)]
    pub json: Option<String>,
    /// How long to wait for the reply, from the publish (`5s`, `500ms`, `1m`, or seconds).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: std::time::Duration,
    /// Replies to an exclusive queue of this call instead of RabbitMQ's direct reply-to.
    #[arg(long)]
    pub reply_queue: bool,
}

/// A retry strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RetryStrategy {
    /// Never retried.
    Ignore,
    /// Retried up to the limit after the intervals.
    Repeat,
    /// Retried up to the limit with exponential backoff.
    Backoff,
}

/// `lepus tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// A topic pattern (`mailer.#`), or the name of a queue whose bindings are copied.
    #[arg(value_name = "QUEUE-OR-PATTERN")]
    pub target: String,
    /// Treat the argument as a pattern even if a queue of that name exists.
    #[arg(long)]
    pub pattern: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long (`30s`, `500ms`, `2m`, or seconds).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// How to watch: RabbitMQ's firehose (routing unchanged, retries shown; turned on through
    /// the management API), a tap queue bound to the exchange (changes routing: see
    /// `docs/cli.md`), or the firehose when it can be had, else the tap.
    #[arg(long, value_enum, default_value = "auto")]
    pub via: TailVia,
}

/// How `lepus tail` watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TailVia {
    /// The firehose if the management API answers, else the tap (saying so).
    Auto,
    /// RabbitMQ's firehose tracer (`amq.rabbitmq.trace`); exit 6 when it cannot be had.
    Firehose,
    /// A temporary queue bound to the exchange with the pattern.
    Tap,
}

/// `lepus dead ...`.
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List the dead letters of a queue (they stay where they are).
    List(DeadListArgs),
    /// Show one dead letter: reason, error, attempts, origin, headers, payload.
    Show(DeadShowArgs),
    /// Re-publish dead letters to their origin exchange and routing key, `retryCount` 0.
    Replay(DeadReplayArgs),
    /// Delete the dead letters of a queue: all of them, or those selected by id, type or
    /// reason.
    Purge(DeadPurgeArgs),
}

/// A queue whose dead letters are meant: `mailer` or `mailer.dead`.
#[derive(Debug, Args)]
pub struct DeadQueueArgs {
    /// The worker queue (its dead letters are in `<QUEUE>.dead`), or the `.dead` queue.
    pub queue: String,
}

/// `lepus dead list`.
#[derive(Debug, Args)]
pub struct DeadListArgs {
    /// The queue.
    #[command(flatten)]
    pub queue: DeadQueueArgs,
    /// List at most this many.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
}

/// `lepus dead show`.
#[derive(Debug, Args)]
pub struct DeadShowArgs {
    /// The queue.
    #[command(flatten)]
    pub queue: DeadQueueArgs,
    /// The message id, or the row number, as `dead list` shows them (an id wins when a
    /// message id is itself a number).
    pub id: String,
}

/// Which dead letters: by id, type and reason (all given must match).
#[derive(Debug, Clone, Args)]
pub struct DeadSelectArgs {
    /// The dead letter with this message id.
    #[arg(long)]
    pub id: Option<String>,
    /// Only dead letters of this task type.
    #[arg(long = "type", value_name = "TYPE")]
    pub message_type: Option<String>,
    /// Only dead letters dead-lettered for this reason (`retries-exhausted`, `rejected`,
    /// `malformed`, `unknown-type`, ... as `dead list` shows it).
    #[arg(long)]
    pub reason: Option<String>,
}

/// `lepus dead replay`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true)
    .args(["id", "all", "message_type", "reason"])))]
pub struct DeadReplayArgs {
    /// The queue.
    #[command(flatten)]
    pub queue: DeadQueueArgs,
    /// Which dead letters.
    #[command(flatten)]
    pub select: DeadSelectArgs,
    /// Replay every dead letter (present when the replay starts) that the other options
    /// select.
    #[arg(long)]
    pub all: bool,
}

/// `lepus dead purge`.
#[derive(Debug, Args)]
pub struct DeadPurgeArgs {
    /// The queue.
    #[command(flatten)]
    pub queue: DeadQueueArgs,
    /// Which dead letters; none of these: every one.
    #[command(flatten)]
    pub select: DeadSelectArgs,
}

/// `lepus route`.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// The binding pattern (`mailer.#.expired`).
    pub pattern: String,
    /// Routing keys to explain.
    #[arg(required = true)]
    pub keys: Vec<String>,
}

/// `lepus topology`.
#[derive(Debug, Args)]
pub struct TopologyArgs {
    /// Virtual host (default: the one of the AMQP address).
    #[arg(long)]
    pub vhost: Option<String>,
}

/// Parses `30s`, `500ms`, `2m`, `1h` or plain seconds (`1.5`).
/// An RFC 3339 time with its offset (`2026-12-24T18:00:00+01:00`, `2026-12-24T17:00:00Z`).
pub fn parse_rfc3339(s: &str) -> Result<std::time::SystemTime, String> {
    let at = chrono::DateTime::parse_from_rfc3339(s.trim())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (2026-12-24T18:00:00+01:00): {e}"))?;
    let seconds = u64::try_from(at.timestamp()).map_err(|_| format!("{s:?} is before 1970"))?;
    Ok(std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(seconds)
        + std::time::Duration::from_nanos(u64::from(at.timestamp_subsec_nanos())))
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return Err(format!("unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}
