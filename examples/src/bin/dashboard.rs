//! The talk's dashboard (slides 41-43): four RPC services with different latencies; the page
//! asks them one by one, then all at once, and prints what each way cost.
//!
//! Run: `cargo run -p lepus-examples --bin dashboard`
//! or:  `AMQP_ADDR=amqp://127.0.0.1:5672/%2f cargo run -p lepus-examples --bin dashboard`

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use lepus_examples::dashboard::{self, DashboardConfig, Page, Report, SERVICES};

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn ids(ids: &[u64]) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each service's reply, one line each, in [`SERVICES`] order.
fn replies(page: &Page) -> [String; 4] {
    [
        format!("ads {}", ids(&page.active_ads.ids)),
        format!("ads {}", ids(&page.observed_ads.ids)),
        page.recommendations.titles.join(" | "),
        format!(
            "{} unread: {}",
            page.inbox.unread,
            page.inbox.latest.join(" | ")
        ),
    ]
}

fn print(report: &Report) {
    let latencies = report.timings.latencies();
    println!("One by one (the page before: each call waits for the previous one)");
    let lines = replies(&report.one_by_one.page);
    for (((name, _), own), line) in SERVICES.iter().zip(report.service_times).zip(&lines) {
        println!("  {name:<16} {:>9}  {line}", ms(own));
    }
    println!("  {:<16} {:>9}", "sum", ms(report.sum()));

    println!("\nAll at once: gather of the four requests, one deadline");
    let lines = replies(&report.gathered.page);
    for ((name, _), (latency, line)) in SERVICES.iter().zip(latencies.iter().zip(&lines)) {
        println!("  {name:<16} (takes {:>8})  {line}", ms(*latency));
    }
    println!(
        "  {:<16} {:>9}  (slowest service {}, sum of the individual times {}: {:.1}x faster)",
        "total",
        ms(report.gathered.total),
        ms(report.timings.slowest()),
        ms(report.sum()),
        report.speedup()
    );

    println!(
        "\nSend, do own work ({} rendering the layout), then collect (slide 43)",
        ms(report.timings.own_work)
    );
    let same = report.collected.page == report.gathered.page;
    println!(
        "  {:<16} {:>9}  (same four replies: {})",
        "total",
        ms(report.collected.total),
        if same { "yes" } else { "NO" }
    );
    println!("\n{} requests served; servers stopped", report.served);
}

#[tokio::main]
async fn main() -> ExitCode {
    // The broker is chosen explicitly: AMQP_ADDR names RabbitMQ (or `memory:`); without it the
    // demo runs on the in-process broker, and says so below.
    let addr = std::env::var("AMQP_ADDR").unwrap_or_else(|_| lepus::IN_PROCESS_ADDR.to_owned());
    let broker = match lepus::connect_to(Some(&addr)).await {
        Ok(broker) => Arc::new(broker),
        Err(e) => {
            eprintln!("cannot reach the broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = DashboardConfig::default();
    println!(
        "Lepus RPC dashboard on the {} broker, user {}\n",
        broker.name(),
        config.user_id
    );
    let outcome = dashboard::run(Arc::clone(&broker), &config).await;
    if let Err(e) = broker.close().await {
        eprintln!("closing the broker connection failed: {e}");
    }
    match outcome {
        Ok(report) => {
            print(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dashboard failed: {e}");
            ExitCode::FAILURE
        }
    }
}
