//! `lepus schedule TYPE --key KEY --json '{...}' (--every 1m | --cron "0 3 * * *")
//! --schedule NAME`: one scheduler replica, until Ctrl-C or SIGTERM.

use std::sync::Arc;

use lepus::core::retry::RetryMetadata;
use lepus::{Entry, Missed, Publisher, Schedule, Scheduler};

use crate::cli::{Global, MissedPolicy, Output, ScheduleArgs};
use crate::failure::{Code, Failure};

pub async fn run(g: &Global, args: ScheduleArgs) -> Result<Code, Failure> {
    if args.message_type.is_empty() {
        return Err(Failure::usage("the task type must not be empty"));
    }
    let payload = crate::payload::read(args.json.as_deref())?;
    let body = lepus::encode_raw_envelope(
        &payload,
        &args.message_type,
        RetryMetadata::default(),
        None,
        None,
    )
    .map_err(|e| Failure::usage(format!("encode the envelope: {e}")))?;
    let (name, kind, key) = (&args.entry, &args.message_type, &args.key);
    let entry = match (args.every, &args.cron) {
        (Some(every), _) => Entry::every_raw(name, every, kind, key, body)?,
        (None, Some(cron)) => Entry::cron_raw(name, cron, kind, key, body)?,
        (None, None) => return Err(Failure::usage("give --every or --cron")),
    };
    let entry = entry.missed(match args.missed {
        MissedPolicy::Skip => Missed::Skip,
        MissedPolicy::RunOnce => Missed::RunOnce,
    });
    let schedule = Schedule::new(&args.schedule)?.entry(entry)?;
    let transport = Arc::new(crate::connect(g).await?);
    let publisher = Publisher::new(Arc::clone(&transport), g.exchange.clone());
    eprintln!(
        "lepus schedule: a replica of {:?} publishing {} to exchange {:?} with key {:?}; \
         Ctrl-C to stop",
        args.schedule, args.message_type, g.exchange, args.key
    );
    let outcome = Scheduler::new(publisher, schedule)
        .run(lepus::shutdown_signal())
        .await;
    // Best effort: the token was given back already.
    let _ = transport.close().await;
    let stats = outcome?;
    match g.output {
        Output::Text => println!(
            "stopped: {} ticks published, led {} times, {} failed commits",
            stats.ticks_published, stats.leaderships, stats.commit_errors
        ),
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "schedule": args.schedule,
                "entry": args.entry,
                "ticks_published": stats.ticks_published,
                "leaderships": stats.leaderships,
                "commit_errors": stats.commit_errors,
            })
        ),
    }
    Ok(Code::Ok)
}
