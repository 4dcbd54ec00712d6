//! `--only delay`: the cost of a delayed publish against a plain one, on RabbitMQ.
//!
//! Each round publishes `n` messages to one queue with `Transport::publish` (plain) and with
//! `Transport::publish_delayed` at 100 ms (3 level waits: 64 + 32 + 4) and at 1,023 ms
//! (10 waits), one task per publish, then consumes them all. Rounds interleave the three
//! forms. Per form it prints the publish rate (until every confirm), the client's CPU per
//! message during the publishes, and the broker's CPU per message from the first publish
//! to the last arrival (`beam.smp`'s utime + stime from `/proc`, so the level hops count),
//! as min / median / max over the rounds, with the load average.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lepus::{AmqpConfig, AmqpTransport, Delay, Properties, Publication, QueueSpec, Transport};
use tokio::task::JoinSet;

use super::spread::{load_average, min_median_max};
use super::usage::{broker_pid, cpu_of};
use super::BoxError;

/// One measurement of one form.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rate: f64,
    client_us: f64,
    broker_us: f64,
}

async fn round(
    t: &Arc<AmqpTransport>,
    queue: &str,
    n: usize,
    delay_ms: Option<u64>,
    broker: Option<&str>,
) -> Result<Sample, BoxError> {
    let properties = Arc::new(Properties::new().with_content_type("application/json"));
    let body: Arc<[u8]> =
        Arc::from(&br#"{"payload":{"n":1},"metadata":{"className":"Bench"}}"#[..]);
    let broker_before = broker.and_then(cpu_of);
    let client_before = cpu_of("self");
    let started = Instant::now();
    let mut sends = JoinSet::new();
    for _ in 0..n {
        let (t, properties, body, queue) = (
            Arc::clone(t),
            Arc::clone(&properties),
            Arc::clone(&body),
            queue.to_owned(),
        );
        sends.spawn(async move {
            let publication = Publication::new("", &queue, &body, &properties);
            match delay_ms {
                Some(ms) => t.publish_delayed(publication, Delay::from_ms(ms)?).await,
                None => t.publish(publication).await,
            }
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    let published = started.elapsed();
    let client = cpu_of("self").zip(client_before).map(|(a, b)| a - b);
    let mut sub = t.consume(queue, 1000).await?;
    let mut got = 0;
    while got < n {
        let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(30), sub.next()).await else {
            return Err(format!("only {got} of {n} arrived").into());
        };
        let d = d?;
        got += 1;
        if got % 500 == 0 || got == n {
            d.ack_multiple().await?;
        }
    }
    drop(sub);
    let broker_cpu = broker
        .and_then(cpu_of)
        .zip(broker_before)
        .map(|(a, b)| a - b);
    let per = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e6 / n as f64);
    Ok(Sample {
        rate: n as f64 / published.as_secs_f64(),
        client_us: per(client),
        broker_us: per(broker_cpu),
    })
}

fn spread(values: &mut [f64]) -> String {
    let (min, median, max) = min_median_max(values);
    format!("{min:.0} / {median:.0} / {max:.0}")
}

/// Runs the comparison and prints its table.
pub async fn run(config: &AmqpConfig, n: usize) -> Result<(), BoxError> {
    const ROUNDS: usize = 3;
    let t = Arc::new(AmqpTransport::connect(config.clone()).await?);
    let suffix = std::process::id();
    let spec = QueueSpec::new(
        format!("lepus-bench-delay-{suffix}"),
        format!("lepus-bench-delay-x-{suffix}"),
    );
    t.declare_exchange(&spec.exchange).await?;
    t.declare_queue(&spec).await?;
    let broker = broker_pid();
    let forms: [(&str, Option<u64>); 3] = [
        ("publish (plain)", None),
        ("publish_delayed 100 ms (3 waits)", Some(100)),
        ("publish_delayed 1,023 ms (10 waits)", Some(1_023)),
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); forms.len()];
    let load_before = load_average();
    for _ in 0..ROUNDS {
        for (i, (_, delay)) in forms.iter().enumerate() {
            let sample = round(&t, &spec.name, n, *delay, broker.as_deref()).await?;
            samples[i].push(sample);
        }
    }
    println!(
        "\nDelayed against plain publishes, {n} messages per round, {ROUNDS} interleaved rounds, min / median / max (load average {load_before} before, {} after)",
        load_average()
    );
    println!(
        "{:<38} {:>22} {:>24} {:>26}",
        "form", "confirmed msg/s", "client CPU us/msg", "broker CPU us/msg"
    );
    for ((name, _), s) in forms.iter().zip(&mut samples) {
        let mut rates: Vec<f64> = s.iter().map(|x| x.rate).collect();
        let mut client: Vec<f64> = s.iter().map(|x| x.client_us).collect();
        let mut brokers: Vec<f64> = s.iter().map(|x| x.broker_us).collect();
        println!(
            "{name:<38} {:>22} {:>24} {:>26}",
            spread(&mut rates),
            spread(&mut client),
            spread(&mut brokers)
        );
    }
    if broker.is_none() {
        println!("(broker CPU: no beam.smp on this machine)");
    }
    t.delete_queue(&spec.name).await?;
    t.delete_queue(&format!("{}.dead", spec.name)).await?;
    t.delete_exchange(&spec.exchange).await?;
    t.close().await?;
    Ok(())
}
