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
