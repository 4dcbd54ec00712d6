//! `lepus console`: one web page for the person on call. Queues grouped under each worker
//! queue (ready, unacked, consumers, rates, its dead letters), the delay levels, workers alive
//! and rates and handler times per message type (from the events of `lepus::events`), dead
//! letters with reason, error, attempts and payload, replay and purge by id, type or reason
//! (the code of `lepus dead`). Live through server-sent events.
//!
//! Served with axum (http1 and tokio only, no default features): the CLI already runs tokio,
//! axum is hyper's own router, and routing, extractors and SSE come without writing an HTTP
//! parser by hand. The page is one inline HTML file with vanilla JS: no build step.
//!
//! Read-only unless started with `--allow-writes`; binds 127.0.0.1 by default; `--auth
//! user:pass` (or `LEPUS_CONSOLE_AUTH`) asks for HTTP basic auth.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use lepus::events::DEFAULT_EVENTS_EXCHANGE;
use lepus::Transport;
use serde_json::{json, Value};

use crate::cli::{ConsoleArgs, Global};
use crate::dead::{self, Selection};
use crate::failure::{Code, Failure};
use crate::snapshot::{self, percent_decode};

/// How long a worker counts as alive after its last event.
const ALIVE_MS: i64 = 15_000;
/// How far back rates and handler times look.
const WINDOW_MS: i64 = 60_000;
/// Rate chart: buckets of this many ms, this many of them (5 minutes).
const BUCKET_MS: i64 = 5_000;
const BUCKETS: usize = 60;
/// Retries followed at most (the soonest due are kept).
const RETRIES_KEPT: usize = 10_000;
/// A retry not seen arriving this long after its due time is forgotten (its event was lost).
const RETRY_FORGOTTEN_MS: i64 = 300_000;
/// Retries listed on the page, soonest due first.
const RETRIES_LISTED: usize = 20;

/// What the events told so far.
#[derive(Debug, Default)]
struct Watch {
    /// Events received (batches unpacked).
    events: u64,
    /// (instance, queue) -> last event time, deliveries received (from heartbeats).
    workers: BTreeMap<(String, String), (i64, u64)>,
    /// `handled` events of the last [`WINDOW_MS`]: (at, type, ok, ms).
    handled: VecDeque<(i64, String, bool, f64)>,
    /// Handled per [`BUCKET_MS`] bucket: (bucket start, ok, failed).
    chart: VecDeque<(i64, u64, u64)>,
    /// RPC requests served in the last [`WINDOW_MS`]: (at, type, ms).
    served: VecDeque<(i64, String, f64)>,
    /// Retries and dead letters of the last [`WINDOW_MS`]: (at, kind, type).
    follow_ups: VecDeque<(i64, String, String)>,
    /// The last 30 events, newest first.
    recent: VecDeque<Value>,
    /// Retries waiting on the delay levels, by message id, from `retried` events until the
    /// message's next `handled` or `dead-lettered` event.
    retries: BTreeMap<String, Waiting>,
}

/// A retry waiting on the delay levels.
#[derive(Debug)]
struct Waiting {
    due_at: i64,
    message_type: String,
    queue: String,
    /// The attempt that will run.
    attempt: u64,
}

impl Watch {
    fn take(&mut self, e: &Value) {
        self.events += 1;
        let at = e["at"].as_i64().unwrap_or(0);
        let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
        let key = (text("instance"), text("queue"));
        let worker = self.workers.entry(key).or_default();
        worker.0 = worker.0.max(at);
        if let Some(n) = e["received"].as_u64() {
            worker.1 = n;
        }
        match e["kind"].as_str().unwrap_or_default() {
            "handled" => {
                let ok = e["outcome"] == "ok";
                self.handled
                    .push_back((at, text("type"), ok, e["ms"].as_f64().unwrap_or(0.0)));
                let bucket = at - at.rem_euclid(BUCKET_MS);
                match self.chart.back_mut() {
                    Some(b) if b.0 == bucket => {
                        if ok {
                            b.1 += 1;
                        } else {
                            b.2 += 1;
                        }
                    }
                    _ => self
                        .chart
                        .push_back((bucket, u64::from(ok), u64::from(!ok))),
                }
                while self.chart.len() > BUCKETS {
                    self.chart.pop_front();
                }
            }
            "served" => {
                self.served
                    .push_back((at, text("type"), e["ms"].as_f64().unwrap_or(0.0)));
            }
            kind @ ("retried" | "dead-lettered") => {
                self.follow_ups
                    .push_back((at, kind.to_owned(), text("type")));
            }
            _ => {}
        }
        self.follow_retry(e);
        if e["kind"] != "heartbeat" {
            self.recent.push_front(e.clone());
            self.recent.truncate(30);
        }
    }

    /// Keeps [`Watch::retries`]: a `retried` event starts the wait, the message's next
    /// `handled` or `dead-lettered` event ends it.
    fn follow_retry(&mut self, e: &Value) {
        let Some(id) = e["id"].as_str() else {
            return;
        };
        match e["kind"].as_str().unwrap_or_default() {
            "retried" => {
                let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                let waiting = Waiting {
                    due_at: e["due_at"].as_i64().unwrap_or(0),
                    message_type: text("type"),
                    queue: text("queue"),
                    attempt: e["next_attempt"].as_u64().unwrap_or(0),
                };
                self.retries.insert(id.to_owned(), waiting);
                if self.retries.len() > RETRIES_KEPT {
                    // Forget the one due last.
                    if let Some(last) = self
                        .retries
                        .iter()
                        .max_by_key(|(_, r)| r.due_at)
                        .map(|(id, _)| id.clone())
                    {
                        self.retries.remove(&last);
                    }
                }
            }
            "handled" | "dead-lettered" => {
                self.retries.remove(id);
            }
            _ => {}
        }
    }

    fn summary(&mut self, now: i64) -> Value {
        self.retries
            .retain(|_, r| now - r.due_at <= RETRY_FORGOTTEN_MS);
        let mut due: Vec<(&String, &Waiting)> = self.retries.iter().collect();
        due.sort_by_key(|(_, r)| r.due_at);
        let due: Vec<Value> = due
            .into_iter()
            .take(RETRIES_LISTED)
            .map(|(id, r)| {
                json!({"id": id, "type": r.message_type, "queue": r.queue,
                       "attempt": r.attempt, "due_at": r.due_at})
            })
            .collect();
        while self.handled.front().is_some_and(|h| now - h.0 > WINDOW_MS) {
            self.handled.pop_front();
        }
        while self
            .follow_ups
            .front()
            .is_some_and(|h| now - h.0 > WINDOW_MS)
        {
            self.follow_ups.pop_front();
        }
        while self.served.front().is_some_and(|h| now - h.0 > WINDOW_MS) {
            self.served.pop_front();
        }
        let mut rpc: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (_, t, ms) in &self.served {
            rpc.entry(t.as_str()).or_default().push(*ms);
        }
        let rpc: Vec<Value> = rpc
            .into_iter()
            .map(|(t, mut ms)| {
                ms.sort_by(f64::total_cmp);
                json!({"type": t, "per_min": ms.len(), "p50_ms": percentile(&ms, 0.50),
                       "p95_ms": percentile(&ms, 0.95), "p99_ms": percentile(&ms, 0.99)})
            })
            .collect();
        let workers: Vec<Value> = self
            .workers
            .iter()
            .map(|((instance, queue), (last, received))| {
                json!({"instance": instance, "queue": queue, "last_seen": last,
                       "alive": now - last <= ALIVE_MS, "received": received})
            })
            .collect();
        let mut types: BTreeMap<&str, (u64, u64, Vec<f64>, u64, u64)> = BTreeMap::new();
        for (_, t, ok, ms) in &self.handled {
            let row = types.entry(t.as_str()).or_default();
            if *ok {
                row.0 += 1;
            } else {
                row.1 += 1;
            }
            row.2.push(*ms);
        }
        for (_, kind, t) in &self.follow_ups {
            let row = types.entry(t.as_str()).or_default();
            if kind == "retried" {
                row.3 += 1;
            } else {
                row.4 += 1;
            }
        }
        let types: Vec<Value> = types
            .into_iter()
            .map(|(t, (ok, failed, mut ms, retried, dead))| {
                ms.sort_by(f64::total_cmp);
                json!({"type": t, "ok_per_min": ok, "failed_per_min": failed,
                       "retried_per_min": retried, "dead_per_min": dead,
                       "p50_ms": percentile(&ms, 0.50), "p95_ms": percentile(&ms, 0.95),
                       "p99_ms": percentile(&ms, 0.99)})
            })
            .collect();
        json!({"events": self.events, "workers": workers, "types": types, "rpc": rpc,
               "retries": {"waiting": self.retries.len(), "next": due},
               "chart": self.chart.iter().map(|(at, ok, failed)| json!([at, ok, failed]))
                   .collect::<Vec<_>>(),
               "recent": self.recent})
    }
}

/// The `q` quantile of sorted `values` (nearest rank); `null` when empty.
fn percentile(sorted: &[f64], q: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    // Rank arithmetic on small counts.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    json!((sorted[rank - 1] * 1000.0).round() / 1000.0)
}

struct App {
    g: Global,
    vhost: String,
    allow_writes: bool,
    /// The expected `Authorization` header, if auth is on.
    auth: Option<String>,
    watch: Mutex<Watch>,
}

type Shared = Arc<App>;

pub async fn run(g: &Global, args: ConsoleArgs) -> Result<Code, Failure> {
    let vhost = snapshot::vhost_of(g.amqp()?);
    let auth = match args.auth.as_deref().filter(|a| !a.is_empty()) {
        Some(pair) if pair.contains(':') => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )),
        Some(_) => return Err(Failure::usage("--auth takes user:password")),
        None => None,
    };
    let app = Arc::new(App {
        g: g.clone(),
        vhost,
        allow_writes: args.allow_writes,
        auth,
        watch: Mutex::new(Watch::default()),
    });
    // Events: a tap on the events exchange (declared here too: emitters declare it, but the
    // console may start first).
    let transport = crate::connect(g).await?;
    transport.declare_exchange(DEFAULT_EVENTS_EXCHANGE).await?;
    let mut tap = transport
        .tap(DEFAULT_EVENTS_EXCHANGE, &["#".to_owned()])
        .await?;
    let watcher = Arc::clone(&app);
    tokio::spawn(async move {
        while let Some(Ok(d)) = lepus::Subscription::next(&mut tap).await {
            if let Ok(Value::Array(batch)) = serde_json::from_slice::<Value>(&d.body) {
                if let Ok(mut w) = watcher.watch.lock() {
                    for e in &batch {
                        w.take(e);
                    }
                }
            }
            let _ = d.ack().await;
        }
    });
    let router = Router::new()
        .route("/", get(page))
        .route("/api/state", get(state))
        .route("/api/stream", get(stream))
        .route("/api/dead", get(dead_list))
        .route("/api/dead/replay", post(dead_replay))
        .route("/api/dead/purge", post(dead_purge))
        .with_state(Arc::clone(&app));
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", args.bind)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::new(Code::Failed, e.to_string()))?;
    eprintln!(
        "console at http://{local}/ ({}{}); Ctrl-C to stop",
        if app.allow_writes {
            "replay and purge allowed"
        } else {
            "read-only: start with --allow-writes to replay and purge"
        },
        if app.auth.is_some() {
            ", basic auth"
        } else {
            ""
        }
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Failure::new(Code::Failed, format!("console server: {e}")))?;
    let _ = tokio::time::timeout(Duration::from_secs(2), transport.close()).await;
    Ok(Code::Ok)
}

/// Whether the request carries the expected basic auth (always, when auth is off).
fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(expected) = &app.auth else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"lepus console\"")],
        "authentication required",
    )
        .into_response()
}

/// A JSON answer (axum's `Json` needs its `json` feature; one `to_string` does the same).
fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn failure(f: &Failure) -> Response {
    let status = match f.code {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Usage => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    };
    json_response(status, &json!({"error": f.message}))
}

/// The query's `key=value` pairs, percent-decoded (`+` as space).
fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (!k.is_empty()).then(|| {
                (
                    percent_decode(&k.replace('+', " ")),
                    percent_decode(&v.replace('+', " ")),
                )
            })
        })
        .collect()
}

async fn page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    Html(PAGE).into_response()
}

/// Topology, events summary and settings: what the page draws.
async fn snapshot_json(app: &Shared) -> Value {
    let topology = match snapshot::read_async(&app.g, app.vhost.clone()).await {
        Ok(s) => crate::topology::document(&s, &app.g.exchange)
            .unwrap_or_else(|f| json!({"error": f.message})),
        Err(f) => json!({"error": f.message}),
    };
    let now = i64::try_from(crate::now_millis()).unwrap_or(i64::MAX);
    let events = app
        .watch
        .lock()
        .map(|mut w| w.summary(now))
        .unwrap_or(Value::Null);
    json!({"exchange": app.g.exchange, "allow_writes": app.allow_writes, "now": now,
           "topology": topology, "events": events})
}

async fn state(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    json_response(StatusCode::OK, &snapshot_json(&app).await)
}

async fn stream(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let updates =
        futures_util::stream::unfold((app, true), |(app, first): (Shared, bool)| async move {
            if !first {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let data = snapshot_json(&app).await.to_string();
            let event = SseEvent::default().event("state").data(data);
            Some((Ok::<_, Infallible>(event), (app, false)))
        });
    Sse::new(updates)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The dead-letter queue a request names (`queue=mailer` or `mailer.dead`).
fn dead_queue(q: &BTreeMap<String, String>) -> Result<String, Failure> {
    match q.get("queue").map(String::as_str) {
        Some(name) if !name.is_empty() => Ok(if name.ends_with(".dead") {
            name.to_owned()
        } else {
            format!("{name}.dead")
        }),
        _ => Err(Failure::usage("queue= is missing")),
    }
}

fn selection(q: &BTreeMap<String, String>) -> Selection {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    Selection {
        id: get("id"),
        message_type: get("type"),
        reason: get("reason"),
    }
}

/// Why a replay or purge request is refused: no credentials, or a read-only console.
fn refused_write(app: &App, headers: &HeaderMap) -> Option<Response> {
    if !authorized(app, headers) {
        return Some(unauthorized());
    }
    (!app.allow_writes).then(forbidden)
}

/// The dead-letter queue and the selection of a replay or purge: a selection by id, type or
/// reason, or every dead letter with `all=1`.
fn write_selection(q: &BTreeMap<String, String>) -> Result<(String, Selection), Failure> {
    let dead = dead_queue(q)?;
    let selection = selection(q);
    if selection.is_everything() && q.get("all").map(String::as_str) != Some("1") {
        return Err(Failure::usage(
            "select by id, type or reason, or pass all=1",
        ));
    }
    Ok((dead, selection))
}

async fn dead_list(State(app): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if !authorized(&app, &headers) {
        return unauthorized();
    }
    let q = query(&uri);
    let result = async {
        let dead = dead_queue(&q)?;
        let (transport, ready) = dead::open(&app.g, &dead).await?;
        let docs = dead::browse(&transport, &dead, ready.min(200)).await;
        let _ = transport.close().await;
        Ok::<_, Failure>(json!({"queue": dead, "ready": ready, "dead_letters": docs?}))
    }
    .await;
    match result {
        Ok(doc) => json_response(StatusCode::OK, &doc),
        Err(f) => failure(&f),
    }
}

async fn dead_replay(State(app): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refused) = refused_write(&app, &headers) {
        return refused;
    }
    let q = query(&uri);
    let result = async {
        let (dead, selection) = write_selection(&q)?;
        let (transport, ready) = dead::open(&app.g, &dead).await?;
        let never = AtomicBool::new(false);
        let report =
            dead::replay_selected(&transport, &dead, ready, &selection, &never, |_| {}).await;
        let _ = transport.close().await;
        let report = report?;
        Ok(
            json!({"queue": dead, "replayed": report.replayed, "skipped": report.skipped,
                  "error": report.failure.map(|f| f.message)}),
        )
    }
    .await;
    match result {
        Ok(doc) => json_response(StatusCode::OK, &doc),
        Err(f) => failure(&f),
    }
}

async fn dead_purge(State(app): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(refused) = refused_write(&app, &headers) {
        return refused;
    }
    let q = query(&uri);
    let result = async {
        let (dead, selection) = write_selection(&q)?;
        let (transport, ready) = dead::open(&app.g, &dead).await?;
        let purged = dead::purge_selected(&transport, &dead, ready, &selection).await;
        let _ = transport.close().await;
        Ok(json!({"queue": dead, "purged": purged?}))
    }
    .await;
    match result {
        Ok(doc) => json_response(StatusCode::OK, &doc),
        Err(f) => failure(&f),
    }
}

fn forbidden() -> Response {
    json_response(
        StatusCode::FORBIDDEN,
        &json!({"error": "read-only console: start it with --allow-writes"}),
    )
}

/// The page: inline HTML and JS, no build step.
const PAGE: &str = include_str!("console.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), json!(50.0));
        assert_eq!(percentile(&v, 0.99), json!(99.0));
        assert_eq!(percentile(&[], 0.5), Value::Null);
    }

    #[test]
    fn queries() {
        let uri: Uri = "/api/dead?queue=a.b&reason=retries-exhausted&type=A%5CB+C"
            .parse()
            .unwrap();
        let q = query(&uri);
        assert_eq!(q["queue"], "a.b");
        assert_eq!(selection(&q).message_type.as_deref(), Some("A\\B C"));
        assert_eq!(dead_queue(&q).unwrap(), "a.b.dead");
    }

    #[test]
    fn the_watch_counts_workers_and_types() {
        let mut w = Watch::default();
        let now = 1_000_000;
        w.take(&json!({"kind": "heartbeat", "queue": "q", "instance": "i", "at": now - 1000, "received": 3}));
        w.take(
            &json!({"kind": "handled", "queue": "q", "instance": "i", "at": now - 500,
                       "type": "T", "outcome": "ok", "ms": 2.0}),
        );
        w.take(
            &json!({"kind": "handled", "queue": "q", "instance": "i", "at": now - 400,
                       "type": "T", "outcome": "error", "ms": 4.0}),
        );
        w.take(&json!({"kind": "heartbeat", "queue": "old", "instance": "j", "at": now - 60_000}));
        let s = w.summary(now);
        // By (instance, queue): i/q then j/old.
        assert_eq!(s["workers"][0]["alive"], true);
        assert_eq!(s["workers"][0]["received"], 3);
        assert_eq!(s["workers"][1]["alive"], false);
        assert_eq!(s["types"][0]["ok_per_min"], 1);
        assert_eq!(s["types"][0]["failed_per_min"], 1);
        assert_eq!(s["types"][0]["p99_ms"], json!(4.0));
        for ms in [10.0, 30.0, 20.0] {
            w.take(
                &json!({"kind": "served", "queue": "ads", "instance": "i", "at": now - 100,
                           "type": "GetAds", "ms": ms}),
            );
        }
        // A retry waits from its `retried` event until the message is handled again.
        for (id, due) in [("m1", now + 5_000), ("m2", now + 1_000)] {
            w.take(
                &json!({"kind": "retried", "queue": "q", "instance": "i", "at": now - 50,
                        "type": "T", "id": id, "attempt": 1, "next_attempt": 2,
                        "delay_ms": 1000, "due_at": due}),
            );
        }
        let s = w.summary(now);
        assert_eq!(s["retries"]["waiting"], 2);
        assert_eq!(s["retries"]["next"][0]["id"], "m2", "soonest due first");
        assert_eq!(s["retries"]["next"][0]["attempt"], 2);
        assert_eq!(s["retries"]["next"][1]["due_at"], now + 5_000);
        w.take(
            &json!({"kind": "handled", "queue": "q", "instance": "i", "at": now,
                    "type": "T", "id": "m2", "outcome": "ok", "ms": 1.0}),
        );
        assert_eq!(w.summary(now)["retries"]["waiting"], 1);
        let s = w.summary(now);
        assert_eq!(s["rpc"][0]["type"], "GetAds");
        assert_eq!(s["rpc"][0]["per_min"], 3);
        assert_eq!(s["rpc"][0]["p50_ms"], json!(20.0));
        assert_eq!(s["rpc"][0]["p99_ms"], json!(30.0));
        // One whose arrival was never seen is forgotten after a while.
        assert_eq!(
            w.summary(now + 5_000 + RETRY_FORGOTTEN_MS + 1)["retries"]["waiting"],
            0
        );
    }
}
