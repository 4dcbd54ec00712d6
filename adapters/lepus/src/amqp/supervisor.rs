//! Keeping a RabbitMQ connection: reconnect with backoff, replay the declared topology, report
//! resource alarms.
//!
//! lapin's own recovery does not restore `basic.qos` and has open issues, so Lepus rebuilds:
//! a [`Session`] is one connection and its confirm-mode publisher; when it is lost, the next
//! caller that needs one ([`Supervisor::session`]) opens a new connection (one caller at a
//! time, the others wait for its result), declares again every exchange and queue layout this
//! transport declared, and swaps it in. Subscriptions consume again on the new session
//! (`crate::amqp::subscription`), publishers send again (at-least-once, same message id).
//!
//! Backoff between attempts doubles from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]. Callers with a
//! deadline (publishers: [`AmqpConfig::send_timeout`]) give up at it with a clear error;
//! subscriptions wait as long as it takes (their owner stops them).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_core::Stream;
use lapin::{Connection, Event};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::amqp::channels::OpenChannels;
use crate::amqp::config::AmqpConfig;
use crate::amqp::connection::connect;
use crate::amqp::publisher::ConfirmPublisher;
use crate::amqp::topology;
use crate::error::{Error, ErrorKind, Result};
use crate::topology::QueueSpec;

pub use crate::transport::{FIRST_BACKOFF, MAX_BACKOFF};

/// Longest wait for a session's channels to close before its connection is closed.
const CHANNELS_CLOSE: Duration = Duration::from_secs(2);

/// How often a session checks its connection's state (in addition to lapin's error events).
const STATUS_POLL: Duration = Duration::from_millis(100);

/// One connection and its publisher.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) connection: Arc<Connection>,
    /// Every channel opened on the connection (closed before it, see [`OpenChannels`]).
    pub(crate) channels: Arc<OpenChannels>,
    pub(crate) publisher: Arc<ConfirmPublisher>,
    /// 1 for the first connection, +1 per reconnection.
    pub(crate) generation: u64,
    /// Index of the address (in `AMQP_ADDR`'s list) the connection is on.
    pub(crate) node: usize,
    /// Becomes true once the connection is lost (never back to false).
    closed: watch::Receiver<bool>,
}

impl Session {
    /// Opens a channel on this session's connection; `what` names its use in errors.
    pub(crate) async fn open_channel(&self, what: &str) -> Result<Arc<lapin::Channel>> {
        self.channels.open(&self.connection, what).await
    }

    pub(crate) fn is_open(&self) -> bool {
        !*self.closed.borrow() && self.connection.status().connected()
    }

    /// Turns true once the connection is lost.
    pub(crate) fn lost(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    /// Resolves once the connection is lost. Work waiting on the broker (a confirmation, the
    /// next delivery) races this: lapin does not always fail what was pending when the
    /// broker closes the connection, and a publish or a consumer must not wait forever.
    pub(crate) async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }
}

/// The connection keeper of one [`crate::AmqpTransport`].
#[derive(Debug)]
pub(crate) struct Supervisor {
    pub(crate) config: AmqpConfig,
    current: Mutex<Arc<Session>>,
    reconnecting: tokio::sync::Mutex<()>,
    exchanges: Mutex<BTreeSet<String>>,
    queues: Mutex<BTreeMap<String, QueueSpec>>,
    blocked: Arc<AtomicBool>,
    reconnections: AtomicU64,
    /// True once the owner closed the transport: no connection is opened after that.
    shut: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Supervisor {
    /// Connects for the first time, retrying with backoff up to
    /// [`AmqpConfig::startup_timeout`] while the failure may pass (zero: one round over the
    /// addresses).
    pub(crate) async fn open(config: AmqpConfig) -> Result<Arc<Supervisor>> {
        let blocked = Arc::new(AtomicBool::new(false));
        let session = open_first(&config, &blocked).await?;
        Ok(Arc::new(Supervisor {
            config,
            current: Mutex::new(Arc::new(session)),
            reconnecting: tokio::sync::Mutex::new(()),
            exchanges: Mutex::new(BTreeSet::new()),
            queues: Mutex::new(BTreeMap::new()),
            blocked,
            reconnections: AtomicU64::new(0),
            shut: watch::Sender::new(false),
        }))
    }

    /// The current session, open or not.
    pub(crate) fn current(&self) -> Arc<Session> {
        Arc::clone(&lock(&self.current))
    }

    /// True while the broker blocks publishing on this connection (memory or disk alarm).
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// How many times the connection was rebuilt.
    pub(crate) fn reconnections(&self) -> u64 {
        self.reconnections.load(Ordering::Relaxed)
    }

    /// Remembers an exchange to declare again after a reconnection.
    pub(crate) fn remember_exchange(&self, exchange: &str) {
        lock(&self.exchanges).insert(exchange.to_owned());
    }

    /// Remembers a queue layout to declare again after a reconnection.
    pub(crate) fn remember_queue(&self, spec: &QueueSpec) {
        lock(&self.queues).insert(spec.name.clone(), spec.clone());
    }

    /// Forgets a deleted exchange or queue.
    pub(crate) fn forget(&self, name: &str) {
        lock(&self.exchanges).remove(name);
        lock(&self.queues).remove(name);
    }

    /// The address (password hidden) a session is connected to.
    pub(crate) fn node_of(&self, session: &Session) -> String {
        let all = crate::amqp::connection::addresses(&self.config.addr);
        all.get(session.node)
            .map(|a| crate::amqp::connection::redact(a))
            .unwrap_or_default()
    }

    /// True once [`Supervisor::shut_down`] was called.
    pub(crate) fn is_shut(&self) -> bool {
        *self.shut.borrow()
    }

    /// Closes the connection for good: sessions are refused from now on
    /// ([`ErrorKind::Closed`]). A reconnection under way is waited for (it stops at its next
    /// step and closes what it opened), so no connection of this supervisor is being opened
    /// or left open when this returns. Closing twice is not an error.
    ///
    /// The wait matters beyond tidiness: lapin opens a connection on a thread of its own that
    /// blocks on the runtime's tasks, and a program that drops its runtime while one is being
    /// opened makes that thread panic.
    pub(crate) async fn shut_down(&self) -> Result<()> {
        self.shut.send_replace(true);
        let _no_reconnection = self.reconnecting.lock().await;
        close_session(&self.current(), self.config.send_timeout).await
    }

    /// An open session: the current one, or a new one after reconnecting (waiting with
    /// backoff until `deadline`, or without end for `None`). After [`Supervisor::shut_down`],
    /// an [`ErrorKind::Closed`] error.
    pub(crate) async fn session(&self, deadline: Option<Instant>) -> Result<Arc<Session>> {
        if self.is_shut() {
            return Err(shut_error());
        }
        let current = self.current();
        if current.is_open() {
            return Ok(current);
        }
        // Boxed: reconnecting is rare and its future large; every publish's future (moved
        // whole when a caller spawns it) would carry it.
        Box::pin(self.reconnect(deadline)).await
    }

    /// [`Self::session`] once the current session is found closed: one reconnection at a time.
    async fn reconnect(&self, deadline: Option<Instant>) -> Result<Arc<Session>> {
        let _reconnecting = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.reconnecting.lock())
                .await
                .map_err(|_| gave_up(&self.config, "another reconnection was still running"))?,
            None => self.reconnecting.lock().await,
        };
        if self.is_shut() {
            return Err(shut_error());
        }
        let current = self.current();
        if current.is_open() {
            return Ok(current);
        }
        tracing::warn!(
            generation = current.generation,
            "connection to RabbitMQ lost; reconnecting"
        );
        let mut backoff = FIRST_BACKOFF;
        // Start at the next node: the one just lost may be down (on one node, it is the same).
        let next_node = current.node + 1;
        loop {
            let attempt = async {
                let session = open_session(
                    &self.config,
                    current.generation + 1,
                    next_node,
                    &self.blocked,
                )
                .await?;
                self.replay_topology(&session).await?;
                Ok::<_, Error>(session)
            };
            let outcome = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, attempt)
                    .await
                    .unwrap_or_else(|_| Err(gave_up(&self.config, "connecting took too long"))),
                None => attempt.await,
            };
            match outcome {
                Ok(session) if self.is_shut() => {
                    close_session(&session, self.config.send_timeout).await?;
                    return Err(shut_error());
                }
                Ok(session) => {
                    let session = Arc::new(session);
                    *lock(&self.current) = Arc::clone(&session);
                    self.reconnections.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::count(crate::metrics::RECONNECTIONS, &[]);
                    tracing::info!(
                        generation = session.generation,
                        node = %self.node_of(&session),
                        "reconnected to RabbitMQ"
                    );
                    return Ok(session);
                }
                Err(e) => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now + backoff >= d) {
                        return Err(e.context(gave_up_text(&self.config)));
                    }
                    tracing::debug!(error = %e, ?backoff, "reconnection attempt failed");
                    let mut shut = self.shut.subscribe();
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shut.wait_for(|shut| *shut) => return Err(shut_error()),
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn replay_topology(&self, session: &Session) -> Result<()> {
        let exchanges: Vec<String> = lock(&self.exchanges).iter().cloned().collect();
        let queues: Vec<QueueSpec> = lock(&self.queues).values().cloned().collect();
        if exchanges.is_empty() && queues.is_empty() {
            return Ok(());
        }
        let channel = session.open_channel("declare the topology again").await?;
        for exchange in &exchanges {
            topology::declare_exchange(&channel, exchange).await?;
        }
        let mut channel = Some(channel);
        for (i, spec) in queues.iter().enumerate() {
            // The delay levels of each kind once, with the first queue of that kind.
            let first = !queues[..i].iter().any(|s| s.kind == spec.kind);
            let ch = match channel.take() {
                Some(ch) => ch,
                None => session.open_channel("declare the topology again").await?,
            };
            topology::declare_queue(&ch, spec, first).await?;
            if first {
                // Declaring the levels may end with the channel closed by the broker (the
                // queue for unrouted messages on a node that is down): the next queue gets
                // a channel of its own.
                let _ = ch.close(200, "topology declared".into()).await;
            } else {
                channel = Some(ch);
            }
        }
        if let Some(channel) = channel {
            let _ = channel.close(200, "topology declared".into()).await;
        }
        tracing::info!(
            exchanges = exchanges.len(),
            queues = queues.len(),
            "topology declared again"
        );
        Ok(())
    }
}

/// The first session, retried with backoff within `config.startup_timeout`.
async fn open_first(config: &AmqpConfig, blocked: &Arc<AtomicBool>) -> Result<Session> {
    let deadline = Instant::now() + config.startup_timeout;
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 1u32;
    let mut node = 0;
    loop {
        let error = match open_session(config, 1, node, blocked).await {
            Ok(session) => {
                if attempts > 1 {
                    tracing::info!(attempts, "connected to RabbitMQ");
                }
                return Ok(session);
            }
            Err(e) => e,
        };
        let now = Instant::now();
        if !error.is_retryable() || now + backoff > deadline {
            if attempts > 1 {
                return Err(error.context(format!(
                    "RabbitMQ stayed unreachable for {attempts} attempts within the start-up \
                     timeout of {:?}",
                    config.startup_timeout
                )));
            }
            return Err(error);
        }
        tracing::warn!(error = %error, ?backoff, "RabbitMQ not reachable yet; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempts += 1;
        node += 1;
    }
}

async fn open_session(
    config: &AmqpConfig,
    generation: u64,
    first_node: usize,
    blocked: &Arc<AtomicBool>,
) -> Result<Session> {
    let (connection, node) = connect(config, first_node).await?;
    let connection = Arc::new(connection);
    let (closed_tx, closed) = watch::channel(false);
    watch_connection(&connection, Arc::downgrade(blocked), closed_tx);
    let channels = Arc::new(OpenChannels::default());
    let publisher = Arc::new(
        ConfirmPublisher::open_in(
            Arc::clone(&connection),
            Arc::clone(&channels),
            closed.clone(),
            config.max_payload,
        )
        .await?,
    );
    Ok(Session {
        connection,
        channels,
        publisher,
        generation,
        node,
        closed,
    })
}

/// Follows a connection: resource alarms (`connection.blocked` / `unblocked`), and its loss
/// (an error event, the end of the events, or a state other than connected), which it
/// announces on `closed` before ending.
fn watch_connection(
    connection: &Arc<Connection>,
    blocked: Weak<AtomicBool>,
    closed: watch::Sender<bool>,
) {
    let mut events = Box::pin(connection.events_listener());
    let weak = Arc::downgrade(connection);
    tokio::spawn(async move {
        loop {
            let next = std::future::poll_fn(|cx| events.as_mut().poll_next(cx));
            let event = tokio::select! {
                event = next => event,
                () = tokio::time::sleep(STATUS_POLL) => {
                    match weak.upgrade() {
                        Some(c) if c.status().connected() => continue,
                        _ => None,
                    }
                }
            };
            let flag = blocked.upgrade();
            match event {
                Some(Event::ConnectionBlocked(reason)) => {
                    if let Some(flag) = flag {
                        flag.store(true, Ordering::Relaxed);
                    }
                    tracing::warn!(%reason, "RabbitMQ blocked publishing (resource alarm); sends wait");
                }
                Some(Event::ConnectionUnblocked) => {
                    if let Some(flag) = flag {
                        flag.store(false, Ordering::Relaxed);
                    }
                    tracing::info!("RabbitMQ unblocked publishing");
                }
                // lapin reports a channel's soft error (a 404 on one declaration) here too,
                // with the connection still up: that is no loss of the connection.
                Some(Event::Error(e)) if weak.upgrade().is_some_and(|c| c.status().connected()) => {
                    tracing::debug!(error = %e, "error on a channel; the connection stays");
                }
                Some(Event::Error(e)) => {
                    tracing::warn!(error = %e, "RabbitMQ connection failed");
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        if let Some(flag) = blocked.upgrade() {
            flag.store(false, Ordering::Relaxed);
        }
        let _ = closed.send(true);
    });
}

/// Closes a session's connection cleanly (code 200) if it is still open: first its channels
/// (see [`OpenChannels`]; this takes at most [`CHANNELS_CLOSE`]), then the connection,
/// waiting up to `timeout` for the broker's `close-ok`.
async fn close_session(session: &Session, timeout: Duration) -> Result<()> {
    let connection = &session.connection;
    if !connection.status().connected() {
        return Ok(());
    }
    session
        .channels
        .close_all(CHANNELS_CLOSE.min(timeout))
        .await;
    match tokio::time::timeout(timeout, connection.close(200, "bye".into())).await {
        Ok(closed) => closed.map_err(|e| Error::from_lapin(e).context("close connection")),
        Err(_) => Err(Error::new(ErrorKind::Timeout).context("close connection: no close-ok")),
    }
}

fn shut_error() -> Error {
    Error::new(ErrorKind::Closed).context("RabbitMQ connection")
}

fn gave_up_text(config: &AmqpConfig) -> String {
    format!(
        "RabbitMQ at {} stayed unreachable for {:?}",
        crate::amqp::connection::redact(&config.addr),
        config.send_timeout
    )
}

fn gave_up(config: &AmqpConfig, why: &str) -> Error {
    Error::new(ErrorKind::ConnectionLost).context(format!("{}: {why}", gave_up_text(config)))
}
