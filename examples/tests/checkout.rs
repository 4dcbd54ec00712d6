//! The main demo, run on the in-process broker: every task handled once, the invoice e-mail
//! after two failures, the poison and the unknown-type messages dead-lettered with reasons.

use std::sync::Arc;

use lepus::InProcessBroker;
use lepus_examples::checkout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_demo_finishes_with_the_expected_outcome() {
    let broker = Arc::new(InProcessBroker::new());
    let summary = checkout::run(Arc::clone(&broker)).await.unwrap();
    let expected = [
        "AddToStats",
        "AssignPaidFeature",
        "CreateInvoice",
        "RefreshWallet",
        "SendConfirmationEmail",
        "SendInvoiceEmail",
        "SendPrintedInvoice",
    ];
    assert_eq!(
        summary
            .handled
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        expected
    );
    assert!(
        summary.handled.values().all(|&n| n == 1),
        "{:?}",
        summary.handled
    );
    // Two SMTP timeouts, three failed attempts of the poison message.
    assert_eq!(summary.failures, 5);
    let mut dead = summary.dead_letters.clone();
    dead.sort();
    assert_eq!(
        dead,
        [
            (
                "checkout.billing".into(),
                "AssignPaidFeature".into(),
                "retries-exhausted".into(),
                3
            ),
            (
                "checkout.mailer".into(),
                "SendSmsNotification".into(),
                "unknown-type".into(),
                1
            ),
        ]
    );
    // The demo deletes what it declared.
    assert!(
        broker.message_count("checkout.mailer").is_err(),
        "queue deleted"
    );
}

/// `--serve`: the same flow with events on; the dead letters stay in place while the workers
/// run, and the queues stay after they stop (for `lepus console`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_checkout_leaves_dead_letters_for_the_console() {
    let broker = Arc::new(InProcessBroker::new());
    let events =
        lepus::events::Events::start(Arc::clone(&broker), lepus::events::EventsConfig::default());
    let watcher = Arc::clone(&broker);
    let until = async move {
        // The workers are still running here: both dead letters wait in their queues.
        for _ in 0..200 {
            let billing = watcher.message_count("checkout.billing.dead").unwrap_or(0);
            let mailer = watcher.message_count("checkout.mailer.dead").unwrap_or(0);
            if billing == 1 && mailer == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the dead letters did not stay in place");
    };
    let summary = checkout::serve(Arc::clone(&broker), events.clone(), until)
        .await
        .unwrap();
    assert_eq!(summary.handled.values().sum::<u32>(), 7, "{summary:?}");
    assert_eq!(summary.failures, 5);
    assert!(summary.dead_letters.is_empty(), "left in place, not read");
    assert_eq!(broker.message_count("checkout.billing.dead").unwrap(), 1);
    assert_eq!(broker.message_count("checkout.mailer.dead").unwrap(), 1);
    let stats = events.stats();
    assert!(
        stats.published + stats.unrouted > 0,
        "the workers emitted: {stats:?}"
    );
}
