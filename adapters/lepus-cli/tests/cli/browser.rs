//! `lepus console` in a real headless Chromium, driven through chromedriver's W3C WebDriver
//! protocol (JSON over HTTP, spoken with ureq): during a run of the checkout demo the page
//! shows its queues, workers, retries and dead letters, and a click on "replay" gets the
//! dead letter handled; with a stopped worker, the replayed message waits in its queue.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`,
//! done by `.ci/run`): skipped loudly without them, failed under `CI=true` or
//! `LEPUS_REQUIRE_BROKER=1`. `LEPUS_SCREENSHOT=docs/console.png` saves the page as it shows
//! the checkout demo's dead letter.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lepus::{
    AmqpConfig, AmqpTransport, Context, HandlerError, Message, Publisher, Registry, RetryPolicy,
    Transport, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Serialize, Deserialize)]
struct Refund {
    order: u64,
}

impl Message for Refund {
    const TYPE: &'static str = "LepusBrowserRefund";
    const ROUTING_KEY: &'static str = "billing.refund";
    fn retry_policy() -> RetryPolicy {
        // Long enough for the page to show the retry waiting (see the test).
        RetryPolicy::repeat(1, [8000])
    }
}

fn addr() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_default()
}

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("LEPUS_REQUIRE_BROKER").is_ok_and(|v| v == "1")
}

/// Kills the process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A WebDriver session, deleted when dropped (also when the test fails), so that chromedriver
/// closes its Chromium before it is killed.
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = agent().delete(&self.0).call();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// One WebDriver command: its `value`.
fn wd(method: &str, url: &str, body: Option<Value>) -> Value {
    let a = agent();
    let result = match (method, body) {
        ("POST", Some(b)) => a
            .post(url)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        ("DELETE", _) => a.delete(url).call(),
        _ => a.get(url).call(),
    };
    let mut response = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    doc["value"].clone()
}

/// The element matching `css`, waiting up to `within`.
fn find(session: &str, css: &str, within: Duration) -> Option<String> {
    let until = Instant::now() + within;
    loop {
        let found = wd(
            "POST",
            &format!("{session}/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        if let Some(id) = found["element-6066-11e4-a52e-4f735466cecf"].as_str() {
            return Some(id.to_owned());
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn text_of(session: &str, css: &str) -> String {
    find(session, css, Duration::from_secs(1))
        .map(|e| wd("GET", &format!("{session}/element/{e}/text"), None))
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The text of the element matching `css` once `done` holds for it, waiting up to 10 s (the
/// page redraws its tables every 2 s: an element found can be gone when its text is read);
/// the last text read otherwise.
fn text_when(session: &str, css: &str, done: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = text_of(session, css);
        if done(&text) || Instant::now() > until {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `script` in the page (WebDriver "execute script"): its return value.
fn execute(session: &str, script: &str) -> Value {
    wd(
        "POST",
        &format!("{session}/execute/sync"),
        Some(json!({"script": script, "args": []})),
    )
}

/// Whether chromium and chromedriver are here; without them the test is skipped loudly
/// (failed when required).
fn have_browser(test: &str) -> bool {
    let have = |c: &str| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("chromedriver") && have("chromium") {
        return true;
    }
    assert!(
        !required(),
        "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
    );
    eprintln!("\n## SKIPPED {test}: no chromium/chromedriver\n");
    false
}

/// `lepus console --allow-writes` for `exchange` on a free port: the process and its URL.
fn start_console(exchange: &str) -> (Killed, String) {
    let mut console = Command::new(env!("CARGO_BIN_EXE_lepus"))
        .args(["--amqp", &addr(), "--exchange", exchange])
        .args(["console", "--bind", "127.0.0.1:0", "--allow-writes"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(console.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .strip_prefix("console at ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    (Killed(console), base)
}

/// chromedriver and a headless Chromium session on `url` (blocking): the driver, the
/// session's URL and its guard.
fn open_page(url: &str) -> (Killed, String, Session) {
    let port = free_port();
    let driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wd_base = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(20);
    let ready = || {
        agent()
            .get(&format!("{wd_base}/status"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|t| t.contains("\"ready\":true"))
    };
    while !ready() {
        assert!(Instant::now() < until, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let session = wd(
        "POST",
        &format!("{wd_base}/session"),
        Some(
            json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1500"]}}}}),
        ),
    );
    let session_id = session["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {session}"))
        .to_owned();
    let s = format!("{wd_base}/session/{session_id}");
    let guard = Session(s.clone());
    wd("POST", &format!("{s}/url"), Some(json!({"url": url})));
    (driver, s, guard)
}

/// Clicks the button matching `css` once and waits for the page's result line to read
/// `expect`: the line. The page redraws its tables every 2 s, so a button found can be gone
/// when it is clicked; WebDriver then answers "stale element reference" and the click is
/// tried again (a click that landed is never repeated: a second replay would read 0).
fn click_until(session: &str, css: &str, expect: &str) -> String {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if click(session, css) {
            return text_when(session, "#result", |t| t.contains(expect));
        }
        if Instant::now() > until {
            return text_of(session, "#result");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Clicks the element matching `css` (waiting up to 1 s for it): true when the click landed,
/// false when there was none or it went stale before the click.
fn click(session: &str, css: &str) -> bool {
    find(session, css, Duration::from_secs(1)).is_some_and(|button| {
        let answer = wd(
            "POST",
            &format!("{session}/element/{button}/click"),
            Some(json!({})),
        );
        answer.get("error").is_none()
    })
}

/// Clicks the "show" button of `queue`'s dead letters until the page lists them.
fn show_dead(session: &str, queue: &str) {
    let css = format!("button[data-dead=\"{queue}\"]");
    let shown = format!("{queue}.dead");
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        click(session, &css);
        if text_when(session, "#deadq", |t| t == shown) == shown {
            return;
        }
        assert!(
            Instant::now() < until,
            "the page does not show {shown}: {:?}",
            text_of(session, "#deadq")
        );
    }
}

/// The checkout demo (examples/src/checkout.rs) served on RabbitMQ with events on, the
/// console watching: the page shows the demo's four queues with their dead-letter queues, its
/// four workers alive, the message types with their failures and retries, and the poison
/// AssignPaidFeature dead letter with its reason and error; after the fix the demo deploys
/// (the feature added to the catalogue), a click on its "replay" gets it handled, seen on the
/// page (two AssignPaidFeature handled) and in the demo's own count.
#[tokio::test(flavor = "multi_thread")]
async fn checkout_demo_in_the_console_replayed_from_the_page() {
    use lepus_examples::checkout;
    if !have_browser("checkout_demo_in_the_console_replayed_from_the_page") {
        return;
    }
    let Some(t) = lepus::testing::connect_with(
        "checkout_demo_in_the_console_replayed_from_the_page",
        AmqpConfig::new(addr()),
    )
    .await
    else {
        return;
    };
    let t: Arc<AmqpTransport> = Arc::new(t);
    // What an earlier run left (the demo drops it too, but the wait below must not see it).
    for (queue, _) in checkout::QUEUES {
        t.delete_queue(&format!("{queue}.dead")).await.unwrap();
        t.delete_queue(queue).await.unwrap();
    }
    // The console first, so that it sees the workers' first events.
    let (console, base) = start_console(checkout::EXCHANGE);
    let events = lepus::events::Events::start(
        Arc::clone(&t),
        lepus::events::EventsConfig::default().heartbeat(Duration::from_millis(500)),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let demo = tokio::spawn(checkout::serve(Arc::clone(&t), events, async move {
        let _ = stopped.await;
    }));
    let billing_dead = "checkout.billing.dead";
    let until = Instant::now() + Duration::from_secs(30);
    while t
        .queue_status(billing_dead)
        .await
        .ok()
        .flatten()
        .map_or(0, |s| s.messages)
        < 1
    {
        assert!(
            Instant::now() < until,
            "the poison message was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The dead letter's id, from the console's own API.
    let doc: Value = {
        let url = format!("{base}api/dead?queue=checkout.billing");
        let text = tokio::task::spawn_blocking(move || {
            agent()
                .get(&url)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_default()
        })
        .await
        .unwrap();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    let poison = doc["dead_letters"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["type"] == "AssignPaidFeature"))
        .unwrap_or_else(|| panic!("no AssignPaidFeature dead letter: {doc}"));
    let id = poison["message_id"].as_str().unwrap().to_owned();
    let page = base.clone();
    let (result, types) = tokio::task::spawn_blocking(move || {
        let (driver, s, guard) = open_page(&page);
        let button = format!("tr[data-id=\"{id}\"] button[data-act=\"replay\"]");
        // The page opens on the first queue that had dead letters when it loaded, by the
        // management API's figures, which lag up to 5 s: that can be checkout.mailer's (its
        // dead letter came first). Choose billing's, as the person on call would.
        show_dead(&s, "checkout.billing");
        let Some(_) = find(&s, &button, Duration::from_secs(20)) else {
            panic!(
                "no row for the dead letter; status {:?}, queues {:?}, dead {:?}",
                text_of(&s, "#status"),
                text_of(&s, "#queues"),
                text_of(&s, "#dead")
            );
        };
        let all_queues = |text: &str| {
            checkout::QUEUES.iter().all(|(q, _)| text.contains(q))
                && text.contains("checkout.mailer.dead")
        };
        let queues = text_when(&s, "#queues", all_queues);
        assert!(all_queues(&queues), "{queues}");
        let dead_row = |text: &str| {
            text.contains("retries-exhausted") && text.contains("is not in the catalogue")
        };
        let row = text_when(&s, &format!("tr[data-id=\"{id}\"]"), dead_row);
        assert!(dead_row(&row), "{row}");
        // The four workers alive (heartbeats every 500 ms), the types with their failures
        // (the legacy message named by its envelope's className).
        let all_workers = |text: &str| {
            checkout::QUEUES.iter().all(|(q, _)| text.contains(q)) && text.contains("alive")
        };
        let workers = text_when(&s, "#workers", all_workers);
        assert!(all_workers(&workers), "{workers}");
        let all_types = |text: &str| {
            [
                "AssignPaidFeature",
                "SendInvoiceEmail",
                "CreateInvoice",
                "SendSmsNotification",
            ]
            .iter()
            .all(|t| text.contains(t))
        };
        let types = text_when(&s, "#types", all_types);
        assert!(all_types(&types), "{types}");
        if let Ok(path) = std::env::var("LEPUS_SCREENSHOT") {
            // Let the chart fill in first.
            std::thread::sleep(Duration::from_secs(3));
            let png = wd("GET", &format!("{s}/screenshot"), None);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(png.as_str().unwrap_or_default())
                .expect("a PNG");
            std::fs::write(&path, bytes).expect("write the screenshot");
        }
        let result = click_until(&s, &button, "replayed");
        // Handled: the page counts two AssignPaidFeature handled (premium-listing, then the
        // replayed gold-frame) within the last minute.
        let ok = "return [...document.querySelectorAll('#types tbody tr')]\
                  .filter((r) => r.cells[0].textContent === 'AssignPaidFeature')\
                  .map((r) => Number(r.cells[1].textContent))[0] || 0;";
        let until = Instant::now() + Duration::from_secs(15);
        let mut handled = execute(&s, ok);
        while handled.as_u64() != Some(2) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
            handled = execute(&s, ok);
        }
        drop(guard);
        drop(driver);
        (result, handled)
    })
    .await
    .unwrap();
    assert!(result.contains("replayed 1"), "{result}");
    assert_eq!(
        types.as_u64(),
        Some(2),
        "AssignPaidFeature ok/min on the page"
    );
    let _ = stop.send(());
    let summary = demo.await.unwrap().unwrap();
    assert_eq!(
        summary.handled.get("AssignPaidFeature"),
        Some(&2),
        "{summary:?}"
    );
    assert_eq!(
        t.queue_status(billing_dead)
            .await
            .unwrap()
            .unwrap()
            .messages,
        0
    );
    // The legacy message of an unknown type stays dead.
    assert_eq!(
        t.queue_status("checkout.mailer.dead")
            .await
            .unwrap()
            .unwrap()
            .messages,
        1
    );
    drop(console);
    for (queue, _) in checkout::QUEUES {
        let _ = t.delete_queue(queue).await;
        let _ = t.delete_queue(&format!("{queue}.dead")).await;
    }
    let _ = t.delete_exchange(checkout::EXCHANGE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_from_the_page_in_chromium() {
    if !have_browser("replay_from_the_page_in_chromium") {
        return;
    }
    let Some(t) =
        lepus::testing::connect_with("replay_from_the_page_in_chromium", AmqpConfig::new(addr()))
            .await
    else {
        return;
    };
    let t: Arc<AmqpTransport> = Arc::new(t);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let queue = format!("lepus-test-browser-{}-{nanos:x}", std::process::id());
    let exchange = format!("{queue}-x");
    let dead = format!("{queue}.dead");
    let events = lepus::events::Events::start(
        Arc::clone(&t),
        lepus::events::EventsConfig::default().heartbeat(Duration::from_millis(500)),
    );
    let registry = Registry::new().with(|_: Refund, _: Context| async move {
        Err::<(), _>(HandlerError::transient("payment gateway timeout"))
    });
    let worker = Worker::new(
        Arc::clone(&t),
        WorkerConfig::new(&queue, &exchange)
            .bind("billing.#")
            .events(events.clone()),
        registry,
    );
    worker.declare().await.unwrap();
    // The console, writes allowed.
    let (_console, base) = start_console(&exchange);
    let handle = worker.start().await.unwrap();
    let id = Publisher::new(Arc::clone(&t), &exchange)
        .send(&Refund { order: 1234 })
        .await
        .unwrap();
    let (base2, queue2, id2) = (base.clone(), queue.clone(), id.clone());
    let opened = tokio::task::spawn_blocking(move || {
        let (driver, s, guard) = open_page(&base2);
        // The failed first attempt's retry waits 8 s on the delay levels: the retry pipeline
        // lists it with its due time, from the worker's `retried` event.
        let waiting = |t: &str| t.contains("LepusBrowserRefund") && t.contains(" in ");
        let due = text_when(&s, "#due", waiting);
        assert!(waiting(&due), "the waiting retry is not listed: {due:?}");
        // The queue appears (from the management API), then its dead letter (the page shows
        // the first queue with dead letters), with its replay button.
        let button = format!("tr[data-id=\"{id2}\"] button[data-act=\"replay\"]");
        let Some(replay) = find(&s, &button, Duration::from_secs(20)) else {
            panic!(
                "no row for the dead letter; status {:?}, queues {:?}, dead {:?}",
                text_of(&s, "#status"),
                text_of(&s, "#queues"),
                text_of(&s, "#dead")
            );
        };
        let queues = text_when(&s, "#queues", |t| t.contains(&queue2));
        assert!(queues.contains(&queue2), "{queues}");
        let dead_row =
            |t: &str| t.contains("retries-exhausted") && t.contains("payment gateway timeout");
        let row = text_when(&s, &format!("tr[data-id=\"{id2}\"]"), dead_row);
        assert!(dead_row(&row), "{row}");
        let _ = replay;
        (driver, s, button, guard)
    })
    .await
    .unwrap();
    // Replay needs the worker stopped, or it would fail again at once.
    handle.shutdown().await.unwrap();
    let (driver, s, button, guard) = opened;
    let s2 = s.clone();
    let result = tokio::task::spawn_blocking(move || click_until(&s2, &button, "replayed"))
        .await
        .unwrap();
    assert!(result.contains("replayed 1"), "{result}");
    // Back in the worker queue, the dead-letter queue empty.
    let mut sub = t.consume(&queue, 1).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("replayed within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(d.message_id(), Some(id.as_str()));
    d.ack().await.unwrap();
    drop(sub);
    assert_eq!(t.queue_status(&dead).await.unwrap().unwrap().messages, 0);
    let _ = tokio::task::spawn_blocking(move || drop(guard)).await;
    drop(s);
    drop(driver);
    let _ = t.delete_queue(&queue).await;
    let _ = t.delete_queue(&dead).await;
    let _ = t.delete_exchange(&exchange).await;
}
