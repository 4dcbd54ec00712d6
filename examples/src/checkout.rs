//! The talk's checkout flow (slides 1-6): a "payment confirmed" request that used to create the
//! invoice, refresh the wallet, add to stats, assign the paid feature and send three e-mails in
//! one go now publishes seven messages and returns; workers on four queues do the work.
//!
//! - the invoice e-mail's SMTP server times out twice: the message is retried after the
//!   declared intervals and succeeds on its third attempt;
//! - a paid feature that does not exist is a poison message: retried until its limit
//!   (`repeat(2, ..)`: two retries, three attempts in all: a limit of `n` is `n + 1`
//!   deliveries), then dead-lettered with the reason;
//! - a legacy producer sends a type no worker knows: dead-lettered at once, never decoded.
//!
//! [`run`] prints a timeline (who handled what, when, which attempt) and returns a
//! [`Summary`]; it finishes by itself. [`serve`] runs the same flow for `lepus console` to
//! watch: once the poison message is dead-lettered, the missing feature is added to the
//! catalogue (a fix deployed), so replaying the dead letter from the console gets it handled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lepus::topology::dead_letter_queue_name;
use lepus::{
    Context, Delivery, HandlerError, Message, Properties, Publication, Publisher, Registry,
    RetryPolicy, Subscription, Transport, Worker, WorkerConfig, WorkerHandle, HEADER_ATTEMPTS,
    HEADER_REASON,
};
use serde::{Deserialize, Serialize};

/// How long each task's simulated work (database, SMTP) takes, in milliseconds.
pub const TASK_MS: u64 = 20;

/// The exchange every checkout message is published to.
pub const EXCHANGE: &str = "shop";

/// The order being paid for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// Order number.
    pub order_id: u64,
    /// Paying user.
    pub user_id: u64,
    /// Amount in cents.
    pub amount_cents: u64,
}

/// Billing and wallet tasks: three retries (four attempts in all), 200 ms then 400 ms apart.
fn billing_policy() -> RetryPolicy {
    RetryPolicy::repeat(3, [200, 400])
}

/// Statistics: losing one is acceptable, so a failure is not retried.
fn stats_policy() -> RetryPolicy {
    RetryPolicy::ignore()
}

/// The paid feature: two retries (three attempts in all).
fn feature_policy() -> RetryPolicy {
    RetryPolicy::repeat(2, [150, 300])
}

/// E-mails and post: five retries (six attempts in all), backing off to a second.
fn mail_policy() -> RetryPolicy {
    RetryPolicy::repeat(5, [250, 500, 1000])
}

/// The seven tasks share one shape: the order, and a detail.
macro_rules! checkout_message {
    ($(#[$doc:meta])* $name:ident, $key:literal, $policy:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize, Message)]
        #[lepus(routing_key = $key, retry = $policy)]
        pub struct $name {
            /// The order this task is about.
            pub order: Order,
            /// A detail of the task (an address, a feature name).
            pub detail: String,
        }
    };
}

checkout_message!(
    /// Create the invoice (billing queue).
    CreateInvoice, "billing.invoice.create", billing_policy
);
checkout_message!(
    /// Refresh the user's wallet (wallet queue).
    RefreshWallet, "wallet.refresh", billing_policy
);
checkout_message!(
    /// Add the payment to the statistics (stats queue).
    AddToStats, "stats.payment", stats_policy
);
checkout_message!(
    /// Assign the paid feature (billing queue).
    AssignPaidFeature, "billing.feature.assign", feature_policy
);
checkout_message!(
    /// Send the payment confirmation e-mail (mailer queue).
    SendConfirmationEmail, "mailer.payment.confirmation", mail_policy
);
checkout_message!(
    /// Send the invoice by e-mail (mailer queue).
    SendInvoiceEmail, "mailer.invoice.email", mail_policy
);
checkout_message!(
    /// Send the printed invoice by post (mailer queue).
    SendPrintedInvoice, "mailer.invoice.printed", mail_policy
);

/// The worker queues and their bindings (slides 32-34).
pub const QUEUES: [(&str, &str); 4] = [
    ("checkout.billing", "billing.#"),
    ("checkout.wallet", "wallet.*"),
    ("checkout.stats", "stats.#"),
    ("checkout.mailer", "mailer.#"),
];

/// What happened, for the summary and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tasks handled successfully, by message type.
    pub handled: BTreeMap<String, u32>,
    /// Failed handler attempts (retried or dead-lettered).
    pub failures: u32,
    /// Dead letters: (queue, type property, reason, attempts).
    pub dead_letters: Vec<(String, String, String, i64)>,
    /// How long the "payment confirmed" request took to publish its seven messages, in
    /// microseconds.
    pub request_us: u128,
}

struct Timeline {
    start: Instant,
    events: Mutex<Vec<String>>,
    handled: Mutex<BTreeMap<String, u32>>,
    failures: Mutex<u32>,
}

impl Timeline {
    fn log(&self, line: String) {
        let at = self.start.elapsed().as_secs_f64();
        let line = format!("{at:>7.3}s  {line}");
        println!("{line}");
        if let Ok(mut events) = self.events.lock() {
            events.push(line);
        }
    }
}

fn on<M, F>(registry: Registry, timeline: &Arc<Timeline>, work: F) -> Registry
where
    M: Message + std::fmt::Debug,
    F: Fn(&M, &Context) -> Result<String, HandlerError> + Send + Sync + 'static,
{
    let timeline = Arc::clone(timeline);
    let work = Arc::new(work);
    registry.with(move |message: M, ctx: Context| {
        let timeline = Arc::clone(&timeline);
        let work = Arc::clone(&work);
        async move {
            // Pretend to talk to a database or an SMTP server.
            tokio::time::sleep(Duration::from_millis(TASK_MS)).await;
            let who = ctx.queue.trim_start_matches("checkout.");
            match work(&message, &ctx) {
                Ok(done) => {
                    timeline.log(format!(
                        "[{who:<7}] {:<22} attempt {}  ok: {done}",
                        M::TYPE,
                        ctx.attempt
                    ));
                    if let Ok(mut handled) = timeline.handled.lock() {
                        *handled.entry(M::TYPE.to_string()).or_default() += 1;
                    }
                    Ok(())
                }
                Err(e) => {
                    timeline.log(format!(
                        "[{who:<7}] {:<22} attempt {}  FAILED: {}",
                        M::TYPE,
                        ctx.attempt,
                        e.message()
                    ));
                    if let Ok(mut failures) = timeline.failures.lock() {
                        *failures += 1;
                    }
                    Err(e)
                }
            }
        }
    })
}

/// The paid features that exist; `serve` adds the poison message's feature once it is
/// dead-lettered (the fix an operator deploys before replaying).
type Catalogue = Arc<Mutex<Vec<String>>>;

/// The feature the poison message asks for.
const MISSING_FEATURE: &str = "gold-frame";

fn registries(timeline: &Arc<Timeline>, catalogue: &Catalogue) -> [Registry; 4] {
    let catalogue = Arc::clone(catalogue);
    let billing = on(Registry::new(), timeline, |m: &CreateInvoice, _| {
        Ok(format!(
            "invoice FV/{}/2026 for {:.2} EUR",
            m.order.order_id,
            m.order.amount_cents as f64 / 100.0
        ))
    });
    let billing = on(billing, timeline, move |m: &AssignPaidFeature, _| {
        let known = catalogue
            .lock()
            .map(|c| c.contains(&m.detail))
            .unwrap_or(false);
        if known {
            Ok(format!("user {} has {}", m.order.user_id, m.detail))
        } else {
            Err(HandlerError::transient(format!(
                "feature {:?} is not in the catalogue",
                m.detail
            )))
        }
    });
    let wallet = on(Registry::new(), timeline, |m: &RefreshWallet, _| {
        Ok(format!("wallet of user {} refreshed", m.order.user_id))
    });
    let stats = on(Registry::new(), timeline, |m: &AddToStats, _| {
        Ok(format!(
            "+{} cents on today's revenue",
            m.order.amount_cents
        ))
    });
    let mailer = on(Registry::new(), timeline, |m: &SendConfirmationEmail, _| {
        Ok(format!("confirmation sent to {}", m.detail))
    });
    let mailer = on(mailer, timeline, |m: &SendInvoiceEmail, ctx| {
        if ctx.attempt < 3 {
            Err(HandlerError::transient("SMTP timeout"))
        } else {
            Ok(format!("invoice sent to {}", m.detail))
        }
    });
    let mailer = on(mailer, timeline, |m: &SendPrintedInvoice, _| {
        Ok(format!("printed invoice queued for {}", m.detail))
    });
    [billing, wallet, stats, mailer]
}

/// Runs the checkout flow on `broker` and returns what happened. Declares (and at the end
/// deletes) the exchange `shop` and the `checkout.*` queues.
///
/// # Errors
/// A transport error (broker unreachable, refused declaration).
pub async fn run<T: Transport + 'static>(broker: Arc<T>) -> lepus::Result<Summary> {
    flow(broker, None, None::<core::future::Ready<()>>).await
}

/// The checkout flow for `lepus console` to watch: the workers emit operational events
/// through `events`, the dead letters stay in `checkout.*.dead` (for replay from the console),
/// and the workers keep running until `until` resolves (Ctrl-C in the demo); then they stop,
/// and the queues stay. Once the poison message is dead-lettered its feature is added to the
/// catalogue, so a replay from the console is handled (the legacy message stays unknown).
/// The summary's `dead_letters` is empty: they were left in place.
///
/// # Errors
/// A transport error (broker unreachable, refused declaration).
pub async fn serve<T: Transport + 'static>(
    broker: Arc<T>,
    events: lepus::events::Events,
    until: impl core::future::Future<Output = ()>,
) -> lepus::Result<Summary> {
    flow(broker, Some(events), Some(until)).await
}

async fn flow<T: Transport + 'static>(
    broker: Arc<T>,
    events: Option<lepus::events::Events>,
    until: Option<impl core::future::Future<Output = ()>>,
) -> lepus::Result<Summary> {
    let timeline = Arc::new(Timeline {
        start: Instant::now(),
        events: Mutex::default(),
        handled: Mutex::default(),
        failures: Mutex::default(),
    });

    // Workers: one per queue, declared before anything is published.
    let catalogue: Catalogue = Arc::new(Mutex::new(vec!["premium-listing".to_string()]));
    let mut workers: Vec<(WorkerHandle, lepus::QueueSpec)> = Vec::new();
    for ((queue, pattern), registry) in QUEUES.iter().zip(registries(&timeline, &catalogue)) {
        let mut config = WorkerConfig::new(*queue, EXCHANGE)
            .bind(*pattern)
            .prefetch(20)
            .concurrency(4);
        if let Some(events) = &events {
            config = config.events(events.clone());
        }
        let worker = Worker::new(Arc::clone(&broker), config, registry);
        let spec = worker.queue_spec();
        // A fresh demo: drop what an earlier run may have left on a real broker.
        broker.delete_queue(&format!("{queue}.dead")).await?;
        broker.delete_queue(queue).await?;
        workers.push((worker.start().await?, spec));
    }
    timeline.log(format!(
        "{} workers listening on {:?}",
        workers.len(),
        QUEUES.map(|(q, _)| q)
    ));

    // The web request: payment confirmed, publish seven tasks, answer the user.
    let publisher = Publisher::new(Arc::clone(&broker), EXCHANGE);
    let order = Order {
        order_id: 42,
        user_id: 7,
        amount_cents: 4_900,
    };
    let task = |detail: &str| (order.clone(), detail.to_string());
    let request = Instant::now();
    let (o, d) = task("");
    publisher
        .send(&CreateInvoice {
            order: o,
            detail: d,
        })
        .await?;
    let (o, d) = task("");
    publisher
        .send(&RefreshWallet {
            order: o,
            detail: d,
        })
        .await?;
    let (o, d) = task("");
    publisher
        .send(&AddToStats {
            order: o,
            detail: d,
        })
        .await?;
    let (o, d) = task("premium-listing");
    publisher
        .send(&AssignPaidFeature {
            order: o,
            detail: d,
        })
        .await?;
    let (o, d) = task("buyer@example.com");
    publisher
        .send(&SendConfirmationEmail {
            order: o,
            detail: d,
        })
        .await?;
    let (o, d) = task("buyer@example.com");
    publisher
        .send(&SendInvoiceEmail {
            order: o,
            detail: d,
        })
        .await?;
    let (o, d) = task("Main St 1, Springfield");
    publisher
        .send(&SendPrintedInvoice {
            order: o,
            detail: d,
        })
        .await?;
    let request_us = request.elapsed().as_micros();
    timeline.log(format!("payment confirmed: 7 tasks published and confirmed in {:.1} ms; the user sees the thank-you page",
        request_us as f64 / 1000.0));

    // The poison message: a feature that is not in the catalogue.
    let (o, d) = task(MISSING_FEATURE);
    publisher
        .send(&AssignPaidFeature {
            order: o,
            detail: d,
        })
        .await?;
    // A legacy producer's message of a type no worker knows.
    let legacy =
        br#"{"payload":{"phone":"+48600100200"},"metadata":{"className":"SendSmsNotification"}}"#;
    let props = Properties {
        content_type: Some("application/json".into()),
        ..Properties::default()
    };
    broker
        .publish(Publication::new(EXCHANGE, "mailer.sms", legacy, &props))
        .await?;
    timeline.log("published a poison AssignPaidFeature and a legacy SendSmsNotification".into());

    // Wait until the seven tasks are done and both bad messages are dead-lettered.
    let mut dead_letters: Vec<(String, String, String, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    if let Some(until) = until {
        // Served: the dead letters stay where they are; the poison message's third failure
        // is its last (then it is dead-lettered).
        while (handled_total(&timeline) < 7 || failures(&timeline) < 5) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Ok(mut c) = catalogue.lock() {
            c.push(MISSING_FEATURE.to_string());
        }
        timeline.log(format!(
            "done; the dead letters stay in checkout.*.dead. Fix deployed: {MISSING_FEATURE:?} \
             is now in the catalogue, so replaying the AssignPaidFeature dead letter (lepus \
             console, or `lepus dead replay checkout.billing --type AssignPaidFeature`) gets it \
             handled. The workers keep running; Ctrl-C stops them, the queues stay"
        ));
        until.await;
        for (handle, _) in workers {
            handle.shutdown().await?;
        }
        return Ok(summary(&timeline, Vec::new(), request_us));
    }
    for (queue, _) in QUEUES {
        let mut dead = broker.consume(&format!("{queue}.dead"), 10).await?;
        let want = match queue {
            "checkout.billing" | "checkout.mailer" => 1,
            _ => 0,
        };
        while dead_letters.iter().filter(|(q, ..)| q == queue).count() < want
            && Instant::now() < deadline
        {
            if let Ok(Some(Ok(delivery))) =
                tokio::time::timeout(Duration::from_millis(200), dead.next()).await
            {
                let entry = describe_dead_letter(queue, &delivery);
                timeline.log(format!(
                    "[dead   ] {} in {queue}.dead: {} after {} attempt(s)",
                    entry.1, entry.2, entry.3
                ));
                dead_letters.push(entry);
                delivery.ack().await?;
            }
        }
        dead.cancel().await?;
    }
    while handled_total(&timeline) < 7 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for (handle, spec) in workers {
        handle.shutdown().await?;
        for queue in [dead_letter_queue_name(&spec.name)?, spec.name.clone()] {
            broker.delete_queue(&queue).await?;
        }
    }
    broker.delete_exchange(EXCHANGE).await?;
    Ok(summary(&timeline, dead_letters, request_us))
}

fn summary(
    timeline: &Timeline,
    dead_letters: Vec<(String, String, String, i64)>,
    request_us: u128,
) -> Summary {
    let handled = timeline
        .handled
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    Summary {
        handled,
        failures: failures(timeline),
        dead_letters,
        request_us,
    }
}

fn failures(timeline: &Timeline) -> u32 {
    timeline.failures.lock().map(|r| *r).unwrap_or_default()
}

fn handled_total(timeline: &Timeline) -> u32 {
    timeline
        .handled
        .lock()
        .map(|h| h.values().sum())
        .unwrap_or(0)
}

fn describe_dead_letter(queue: &str, d: &Delivery) -> (String, String, String, i64) {
    let reason = d.header_str(HEADER_REASON).unwrap_or_default().to_string();
    let attempts = d
        .properties()
        .headers
        .get(HEADER_ATTEMPTS)
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let kind = d.message_type().map(str::to_string).unwrap_or_else(|| {
        lepus::core::envelope::decode_json_raw(&d.body)
            .map(|e| e.metadata.class_name.to_string())
            .unwrap_or_else(|_| "?".into())
    });
    (queue.to_string(), kind, reason, attempts)
}
