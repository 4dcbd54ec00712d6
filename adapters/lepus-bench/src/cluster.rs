//! `--only cluster`: publish and consume rates on a quorum queue of the 3-node test cluster
//! (`RMQ_CLUSTER_URLS`, from `tests/cluster/cluster-up.sh --env`), raw lapin against Lepus in
//! the same run.
//!
//! The queue is declared through the first address (so its leader is on that node, RabbitMQ's
//! `client-local` placement) and both clients connect there; each message is replicated to the
//! two other nodes before its confirm. Each round runs, in an order that alternates between
//! rounds: raw lapin publish (send all, then await every confirm), raw lapin consume (prefetch
//! 500, ack each), Lepus `publish_batch`, Lepus publishes one task each, Lepus consume (ack
//! each); the queue is purged between forms. Prints min / median / max of each rate over the
//! rounds, with the load average before and after.

use std::sync::Arc;

use lapin::options::ConfirmSelectOptions;
use lapin::{Connection, ConnectionProperties};
use lepus::{AmqpConfig, AmqpTransport, QueueKind, QueueSpec, Transport};

use super::spread::{load_average, min_median_max};
use super::{
    lepus_consume, lepus_publish_batch, lepus_publish_concurrent, purge, raw_consume, raw_publish,
    time, BoxError,
};

const ROUNDS: usize = 5;

fn summary(rates: &mut [f64]) -> String {
    let (min, median, max) = min_median_max(rates);
    format!("{min:>8.0} | {median:>8.0} | {max:>8.0}")
}

/// Runs the cluster comparison with `n` messages per form and round.
pub async fn run(n: usize) -> Result<(), BoxError> {
    let urls = std::env::var("RMQ_CLUSTER_URLS").map_err(|_| {
        "--only cluster needs RMQ_CLUSTER_URLS: eval \"$(tests/cluster/cluster-up.sh --env)\""
    })?;
    let first = lepus::amqp::addresses(&urls)
        .first()
        .map(|a| (*a).to_owned())
        .ok_or("RMQ_CLUSTER_URLS is empty")?;
    let raw = Connection::connect(&first, ConnectionProperties::default()).await?;
    let ours = Arc::new(AmqpTransport::connect(AmqpConfig::new(urls.clone())).await?);

    let suffix = std::process::id();
    let exchange = format!("lepus-bench-cluster-{suffix}");
    let spec = QueueSpec::new(format!("lepus-bench-cluster-{suffix}"), &exchange)
        .bind("bench.#")
        .kind(QueueKind::Quorum);
    ours.declare_exchange(&exchange).await?;
    ours.declare_queue(&spec).await?;
    let queue = spec.name.clone();
    let raw_pub = raw.create_channel().await?;
    raw_pub
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    println!(
        "cluster: quorum queue {queue} via {} (3 nodes), {n} messages of 256 bytes per form, \
         {ROUNDS} rounds; load average before: {}",
        lepus::amqp::redact(&first),
        load_average()
    );
    let names = [
        "raw lapin publish (send all, await confirms)",
        "lepus publish_batch",
        "lepus publish, one task each",
        "raw lapin consume, ack each",
        "lepus consume, ack each",
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for round in 0..ROUNDS {
        let raw_first = round % 2 == 0;
        for side in 0..2 {
            let raw_turn = (side == 0) == raw_first;
            if raw_turn {
                purge(&raw, &queue).await?;
                let took = time(raw_publish(&raw_pub, &exchange, n)).await?;
                rates[0].push(n as f64 / took.as_secs_f64());
                let took = time(raw_consume(&raw, &queue, n, 1)).await?;
                rates[3].push(n as f64 / took.as_secs_f64());
            } else {
                purge(&raw, &queue).await?;
                let took = time(lepus_publish_batch(&ours, &exchange, n)).await?;
                rates[1].push(n as f64 / took.as_secs_f64());
                purge(&raw, &queue).await?;
                let took = time(lepus_publish_concurrent(&ours, &exchange, n)).await?;
                rates[2].push(n as f64 / took.as_secs_f64());
                let took = time(lepus_consume(&ours, &queue, n, 1)).await?;
                rates[4].push(n as f64 / took.as_secs_f64());
            }
        }
    }
    println!("\n| cluster, quorum queue | min msg/s | median msg/s | max msg/s |");
    println!("|---|---|---|---|");
    for (name, rates) in names.iter().zip(rates.iter_mut()) {
        println!("| {name} | {} |", summary(rates));
    }
    println!("\nload average after: {}", load_average());
    let _ = ours.delete_queue(&format!("{queue}.dead")).await;
    let _ = ours.delete_queue(&queue).await;
    let _ = ours.delete_exchange(&exchange).await;
    let _ = ours.close().await;
    Ok(())
}
