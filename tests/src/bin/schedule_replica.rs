//! A scheduler replica for the SIGKILL scenario of the reliability tests: runs the schedule
//! named by its first argument (one entry, `beat`, every second, routing key
//! `schedule.beat`) publishing to the exchange named by its second argument, and appends
//! `leading <unix ms>` to the file named by its third argument each time it becomes the
//! leader (checked every 5 ms). Runs until killed, or gives the token back and exits on
//! SIGTERM/Ctrl-C.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lepus::{AmqpConfig, AmqpTransport, Entry, Publisher, Schedule, Scheduler};

/// The message each tick publishes.
#[derive(serde::Serialize, serde::Deserialize, lepus::Message)]
#[lepus(routing_key = "schedule.beat")]
struct Beat {
    source: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(exchange), Some(path)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: schedule_replica SCHEDULE EXCHANGE LEADING-FILE".into());
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let transport = Arc::new(AmqpTransport::connect(AmqpConfig::from_env()?).await?);
    let schedule = Schedule::new(&name)?.entry(Entry::every(
        "beat",
        Duration::from_secs(1),
        &Beat {
            source: "schedule_replica".into(),
        },
    )?)?;
    let handle = Scheduler::new(Publisher::new(Arc::clone(&transport), exchange), schedule)
        .start()
        .await?;
    let shutdown = lepus::shutdown_signal();
    tokio::pin!(shutdown);
    let mut leading = false;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        if handle.is_finished() {
            break;
        }
        let now = handle.is_leading();
        if now && !leading {
            let ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
            writeln!(file, "leading {ms}")?;
            file.flush()?;
        }
        leading = now;
    }
    let outcome = handle.shutdown().await;
    if let Err(e) = transport.close().await {
        eprintln!("schedule_replica: closing the connection: {e}");
    }
    outcome?;
    Ok(())
}
