//! The command line, as clap types.

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes: 0 ok, 1 usage or invalid input, 2 broker unreachable, 3 not found,
4 unroutable (no queue bound), 5 other broker or operation failure,
6 topology source (rabbitmqctl) unavailable, 7 route: a key did not match,
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
#[derive(Debug, Args)]
pub struct Global {
    /// RabbitMQ address.
    #[arg(long = "amqp", env = "AMQP_ADDR", default_value = lepus::DEFAULT_ADDR, global = true)]
    pub amqp: String,
    /// The topic exchange of Lepus.
    #[arg(long, env = "LEPUS_EXCHANGE", default_value = "lepus", global = true)]
    pub exchange: String,
    /// Output format: text for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
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
    /// Print the envelopes flowing through the exchange, without consuming anyone's messages.
    Tail(TailArgs),
    /// Inspect, replay and purge dead letters (`<queue>.dead`).
    Dead {
        /// What to do with the dead letters.
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Explain which key words match which part of a topic pattern (no broker needed).
    Route(RouteArgs),
    /// List the exchange, its queues, bindings, retry and dead-letter queues with counts
    /// (through `rabbitmqctl`).
    Topology(TopologyArgs),
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
    /// Delete every dead letter of a queue.
    Purge(DeadQueueArgs),
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
    /// The message id (as `dead list` shows it).
    pub id: String,
}

/// `lepus dead replay`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
pub struct DeadReplayArgs {
    /// The queue.
    #[command(flatten)]
    pub queue: DeadQueueArgs,
    /// Replay the dead letter with this message id.
    #[arg(long)]
    pub id: Option<String>,
    /// Replay every dead letter (present when the replay starts).
    #[arg(long)]
    pub all: bool,
    /// Only dead letters of this task type.
    #[arg(long = "type", value_name = "TYPE")]
    pub message_type: Option<String>,
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
        _ => return Err(format!("unknown unit {unit:?} (ms, s, m, h)")),
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}
