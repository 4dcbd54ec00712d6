//! `lepus dead-letter-workers`: the broker's dead-letter workers, read or started again.
//!
//! A quorum queue that dead-letters at least once (Lepus's quorum delay levels and quorum
//! worker queues) passes its expired and rejected messages on through a worker process on its
//! leader. RabbitMQ 3.10 can lose those workers: after a node loss (rabbitmq-server#15548), and
//! all of a node's at once when their supervisor sees two failures within 5 s and ends, which
//! nothing starts again (#16652). The queue then holds what it should pass on: delayed
//! messages and retries wait, not lost, until the node restarts. `dead-letter-workers.erl`
//! reads, and starts again, what is missing through `rabbitmqctl eval`.

use serde_json::json;

use crate::cli::{DeadLetterWorkersArgs, Global, Output};
use crate::failure::{Code, Failure};
use crate::rabbitmqctl;

/// The expression, after `Restart = true|false,`.
const DEAD_LETTER_WORKERS: &str = include_str!("dead-letter-workers.erl");

/// What the expression printed, by kind of line.
#[derive(Debug, Default, PartialEq)]
struct Report {
    /// Every line, as printed.
    lines: Vec<String>,
    /// Nodes whose dead-letter supervisor is gone (reading) or was started again.
    supervisors: usize,
    /// Queues read (reading).
    queues: usize,
    /// Queues without a live worker (reading) or whose worker was started (restarting).
    workers: usize,
    /// Lines that say a read or a start failed.
    failures: usize,
}

fn report(printed: &str) -> Report {
    let mut r = Report::default();
    for line in printed.lines().map(str::trim) {
        if line.is_empty() || line == "ok" {
            continue;
        }
        if line.contains(" dead-letter supervisor gone") {
            r.supervisors += 1;
        } else if line.contains(" started: ") {
            r.workers += 1;
        } else if line.ends_with(" alive=true") {
            r.queues += 1;
        } else if line.ends_with(" alive=false") {
            r.queues += 1;
            r.workers += 1;
        }
        if line.contains("query failed")
            || line.contains("not read")
            || (line.contains(" started: ") && !line.contains(" started: {ok,"))
        {
            r.failures += 1;
        }
        r.lines.push(line.to_owned());
    }
    r
}

/// `lepus dead-letter-workers [--restart]`.
pub fn run(g: &Global, args: &DeadLetterWorkersArgs) -> Result<Code, Failure> {
    let printed = rabbitmqctl::eval(&format!(
        "Restart = {},\n{DEAD_LETTER_WORKERS}",
        args.restart
    ))?;
    let r = report(&printed);
    match g.output {
        Output::Json => println!(
            "{}",
            json!({
                "restart": args.restart,
                "lines": r.lines,
                "queues": r.queues,
                "supervisors": r.supervisors,
                "workers": r.workers,
                "failures": r.failures,
            })
        ),
        Output::Text => {
            for line in &r.lines {
                println!("{line}");
            }
            println!("{}", summary(args.restart, &r));
        }
    }
    Ok(if r.failures > 0 {
        Code::Failed
    } else {
        Code::Ok
    })
}

fn summary(restart: bool, r: &Report) -> String {
    if restart {
        return if r.supervisors + r.workers == 0 {
            "nothing was missing".to_owned()
        } else {
            format!(
                "started again: {} supervisor(s), {} worker(s); {} failed",
                r.supervisors, r.workers, r.failures
            )
        };
    }
    let mut text = format!(
        "{} at-least-once quorum queue(s), {} without a live dead-letter worker, {} node(s) \
         with the dead-letter supervisor gone",
        r.queues, r.workers, r.supervisors
    );
    if r.supervisors + r.workers > 0 {
        text.push_str(
            ": what they hold to pass on waits; `lepus dead-letter-workers --restart` starts \
             them again (README, \"Running on a cluster\")",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_counts_queues_missing_workers_and_gone_supervisors() {
        let printed = "rabbit@a dead-letter supervisor gone\n\
            lepus.delay.quorum.01 leader=rabbit@a discarded=0 checked_out=0 worker=<1.2.3> alive=false\n\
            lepus.delay.quorum.02 leader=rabbit@b discarded=3 checked_out=0 worker=none alive=false\n\
            lepus.delay.quorum.03 leader=rabbit@b discarded=0 checked_out=0 worker=<1.2.4> alive=true\n\
            lepus.delay.quorum.04 leader=rabbit@b query failed: {error,timeout}\n\
            ok\n";
        let r = report(printed);
        assert_eq!(
            (
                r.lines.len(),
                r.queues,
                r.workers,
                r.supervisors,
                r.failures
            ),
            (5, 3, 2, 1, 1)
        );
        assert!(summary(false, &r).contains("--restart"));
    }

    #[test]
    fn a_restart_counts_what_started_and_what_failed() {
        let printed = "rabbit@a dead-letter supervisor gone, started: {ok,<1.9.0>}\n\
            q1 leader=rabbit@a held=4 worker=<1.2.3> started: {ok,<1.9.1>}\n\
            q2 leader=rabbit@a held=0 worker=<1.2.4> started: {badrpc,{'EXIT',noproc}}\n";
        let r = report(printed);
        assert_eq!((r.supervisors, r.workers, r.failures), (1, 2, 1));
        assert_eq!(
            summary(true, &r),
            "started again: 1 supervisor(s), 2 worker(s); 1 failed"
        );
        assert_eq!(summary(true, &report("ok\n")), "nothing was missing");
    }
}
