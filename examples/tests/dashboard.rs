//! The dashboard demo on the in-process broker and on RabbitMQ (skipped loudly when
//! unreachable; failed under `CI=true` or `LEPUS_REQUIRE_BROKER=1`): the four replies are right
//! whichever way the page is built, and a gathered page takes about the slowest service's
//! time, not the sum. Latencies are 5x the talk's (200 to 600 ms) so that a loaded machine
//! does not blur the difference; the timing bounds leave hundreds of milliseconds of margin.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lepus::{AmqpTransport, InProcessBroker};
use lepus_examples::dashboard::{
    self, ActiveAds, DashboardConfig, Inbox, ObservedAds, Page, Recommendations, Report, Timings,
};

fn config(exchange: String) -> DashboardConfig {
    DashboardConfig {
        exchange,
        user_id: 7,
        timings: Timings::TALK.scaled(5),
    }
}

fn expected_page() -> Page {
    Page {
        active_ads: ActiveAds {
            ids: vec![701, 702, 703],
        },
        observed_ads: ObservedAds {
            ids: vec![751, 752],
        },
        recommendations: Recommendations {
            titles: vec![
                "City bike, 2 years old".into(),
                "Winter tyres 205/55 R16".into(),
                "Desk lamp".into(),
            ],
        },
        inbox: Inbox {
            unread: 2,
            latest: vec![
                "Is the bike still available?".into(),
                "Can you ship it to Gdansk?".into(),
            ],
        },
    }
}

fn check(report: &Report) {
    let expected = expected_page();
    assert_eq!(report.one_by_one.page, expected);
    assert_eq!(report.gathered.page, expected);
    assert_eq!(report.collected.page, expected);
    assert_eq!(
        report.served, 12,
        "four requests per way of building the page"
    );

    let timings = report.timings;
    // Each service's own time includes its latency; so the sum includes all four.
    for (own, latency) in report.service_times.iter().zip(timings.latencies()) {
        assert!(*own >= latency, "{own:?} < {latency:?}");
    }
    assert!(report.sum() >= timings.sum());
    assert!(report.one_by_one.total >= timings.sum());

    // Gathered: at least the slowest, well under the sum (1500 ms): the slowest plus half.
    let slowest = timings.slowest();
    let bound = slowest + slowest / 2;
    for (way, total) in [
        ("gather", report.gathered.total),
        ("start, own work, collect", report.collected.total),
    ] {
        assert!(total >= slowest, "{way}: {total:?} < slowest {slowest:?}");
        assert!(
            total <= bound,
            "{way}: {total:?} > {bound:?}, 1.5 x the slowest service"
        );
        assert!(total < report.sum(), "{way}: {total:?} >= the sum");
    }
    assert!(report.speedup() > 1.5, "{}", report.speedup());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_process() {
    let broker = Arc::new(InProcessBroker::new());
    let report = dashboard::run(Arc::clone(&broker), &config("site".into()))
        .await
        .unwrap();
    check(&report);
    for (_, suffix) in dashboard::SERVICES {
        let queue = format!("site.{suffix}");
        assert!(broker.message_count(&queue).is_err(), "{queue} deleted");
    }
}

async fn rabbitmq(test: &str) -> Option<AmqpTransport> {
    lepus::testing::connect(test).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_rabbitmq() {
    let Some(broker) = rabbitmq("dashboard_on_rabbitmq").await else {
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // A name of its own: other test runs may share the broker.
    let exchange = format!("lepus-test-dashboard-{}-{nanos:x}", std::process::id());
    let broker = Arc::new(broker);
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        dashboard::run(Arc::clone(&broker), &config(exchange.clone())),
    )
    .await
    .expect("finishes in time")
    .unwrap();
    check(&report);
    for (_, suffix) in dashboard::SERVICES {
        let queue = format!("{exchange}.{suffix}");
        assert_eq!(
            broker.queue_status(&queue).await.unwrap(),
            None,
            "{queue} deleted"
        );
    }
}
