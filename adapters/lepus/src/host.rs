//! [`Host`]: the services of one program on one transport, started together, stopped together
//! on one signal, and the transport closed last.
//!
//! A host runs any number of [`Worker`]s, [`RpcServer`]s, [`Scheduler`]s, gateways,
//! [`RpcClient`]s and any other [`Service`] (your own consumer loop): anything that can be
//! stopped gracefully, and aborted when that takes too long.
//!
//! **Shutdown.** [`Host::run`] waits for SIGINT (Ctrl-C) or SIGTERM ([`Host::run_until`]: for
//! a future of yours), then drains:
//! 1. every service is asked to stop, all at once: workers, RPC servers and gateways stop
//!    taking deliveries, give back those not started, and let running handlers finish (each
//!    up to its own shutdown timeout);
//! 2. once they stopped, RPC clients are closed (handlers may call them while draining);
//! 3. the transport is closed last ([`Transport::close`]; at most
//!    [`Host::close_timeout`]).
//!
//! Draining is bounded by [`Host::drain_timeout`] (default 30 s): a service still stopping
//! then is aborted. A **second** signal (or a second [`Host::signal`]) forces the exit: the
//! services still stopping are aborted at once, RPC clients are closed, the transport gets
//! [`FORCED_CLOSE_TIMEOUT`] to close (a second signal while it closes after a full drain stops
//! the wait), and `run` returns promptly with [`HostReport::forced`] set. What an abort gives back: handlers
//! still running are dropped mid-way (nothing they would have published after that point is
//! sent), and their deliveries, like every delivery received and not yet settled, are not
//! acknowledged; the broker puts them back in their queue when the connection closes,
//! flagged `redelivered` (so they count against the delivery limit, see `RELIABILITY.md`).
//! Nothing confirmed is lost. RPC calls still in flight end with
//! [`crate::RpcError::Closed`].
//!
//! **Health.** [`Host::is_live`]: the host runs (not closed) and no service ended by itself;
//! restart the process when it turns false. [`Host::is_ready`]: live, not shutting down, the
//! transport is connected and not blocked by a resource alarm, and every service is ready
//! (its consumer runs, an RPC client's reply path is open). Both are cheap and never wait: a
//! probe can call them on every request (see `examples/src/bin/probe.rs`).
//!
//! **Dropping** a host without [`Host::close`] does not panic: its services stop by
//! themselves in the background (a dropped handle stops its service), and the transport
//! closes when the last user drops it, less cleanly (the broker requeues what was unsettled).
//!
//! ```no_run
//! # use lepus::{Host, Registry, Worker, WorkerConfig};
//! # async fn demo() -> lepus::Result<()> {
//! use std::sync::Arc;
//! let broker = Arc::new(lepus::connect_within(std::time::Duration::from_secs(60)).await?);
//! let host = Host::new(Arc::clone(&broker));
//! host.add_worker(Worker::new(Arc::clone(&broker), WorkerConfig::new("mailer", "shop"), Registry::new()))
//!     .await?;
//! let report = host.run().await?; // Ctrl-C or SIGTERM: drain, close
//! println!("stopped {} services", report.stopped.len());
//! # Ok(()) }
//! ```

use core::future::Future;
use core::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::consumer::ConsumerConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::gateway::{Gateway, GatewayHandle};
use crate::ledger::ScheduleLedger;
use crate::reply::ReplyTransport;
use crate::rpc::{RpcClient, RpcServer, RpcServerHandle};
use crate::scheduler::{Scheduler, SchedulerHandle};
use crate::topology::QueueSpec;
use crate::transport::Transport;
use crate::worker::{Worker, WorkerHandle};

/// The future a [`Service`] returns from [`Service::stop`].
pub type StopFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Something a [`Host`] runs and stops: a started worker, RPC server or gateway, an RPC client,
/// a scheduler, or a service of your own ([`Host::add_service`]).
pub trait Service: Send {
    /// The name in logs and in the [`HostReport`].
    fn name(&self) -> &str;

    /// Stops gracefully: stop taking work, finish or give back what was taken. The host bounds
    /// it by its drain deadline and aborts the service after it. Called once.
    fn stop(&mut self) -> StopFuture<'_>;

    /// Stops at once (a second signal, or the drain deadline passed), without waiting; the
    /// [`Service::stop`] future was dropped before. Default: nothing.
    fn abort(&mut self) {}

    /// True while the service takes work (for readiness). Default: true.
    fn is_ready(&self) -> bool {
        true
    }

    /// False once the service ended by itself, not through the host (for liveness).
    /// Default: true.
    fn is_live(&self) -> bool {
        true
    }
}

/// What a shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostReport {
    /// Services that stopped gracefully, in the order they were added.
    pub stopped: Vec<String>,
    /// Services aborted: still stopping at the drain deadline or at a second signal.
    pub aborted: Vec<String>,
    /// True when a second signal cut the drain short.
    pub forced: bool,
    /// From the first signal (or [`Host::close`]) to the transport closed.
    pub elapsed: Duration,
}

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const CLOSED: u8 = 2;

type Services = tokio::sync::Mutex<Vec<Box<dyn Service>>>;

struct Inner<T: Transport> {
    transport: Arc<T>,
    /// Workers, servers, gateways, schedulers: stopped first, all at once.
    services: Services,
    /// RPC clients: closed once the services stopped.
    clients: Services,
    phase: AtomicU8,
    /// Signals so far: 1 drains, 2 forces.
    signals: watch::Sender<u8>,
    timeouts: Mutex<(Duration, Duration)>,
}

impl<T: Transport> Drop for Inner<T> {
    fn drop(&mut self) {
        if self.phase.load(Ordering::Acquire) != CLOSED {
            tracing::debug!("host dropped without close(): its services stop by themselves");
        }
    }
}

/// Runs services on one transport and stops them on one signal; see the
/// [module docs](self). Cheap to clone: clones are the same host (give one to a health probe).
pub struct Host<T: Transport> {
    inner: Arc<Inner<T>>,
}

impl<T: Transport> Clone for Host<T> {
    fn clone(&self) -> Self {
        Host {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Transport> core::fmt::Debug for Host<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Host")
            .field("phase", &self.inner.phase.load(Ordering::Relaxed))
            .field("signals", &*self.inner.signals.borrow())
            .finish_non_exhaustive()
    }
}

/// Default of [`Host::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Host::close_timeout`].
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound on closing the transport after a forced exit.
pub const FORCED_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Transport + 'static> Host<T> {
    /// A host closing `transport` last, with no services yet.
    pub fn new(transport: Arc<T>) -> Self {
        Host {
            inner: Arc::new(Inner {
                transport,
                services: tokio::sync::Mutex::new(Vec::new()),
                clients: tokio::sync::Mutex::new(Vec::new()),
                phase: AtomicU8::new(RUNNING),
                signals: watch::Sender::new(0),
                timeouts: Mutex::new((DEFAULT_DRAIN_TIMEOUT, DEFAULT_CLOSE_TIMEOUT)),
            }),
        }
    }

    /// Sets how long draining may take in all (default [`DEFAULT_DRAIN_TIMEOUT`]); services
    /// still stopping then are aborted. Give each worker's own
    /// [`crate::WorkerConfig::shutdown_timeout`] less than this.
    #[must_use]
    pub fn drain_timeout(self, timeout: Duration) -> Self {
        lock(&self.inner.timeouts).0 = timeout;
        self
    }

    /// Sets how long closing the transport may take (default [`DEFAULT_CLOSE_TIMEOUT`]).
    #[must_use]
    pub fn close_timeout(self, timeout: Duration) -> Self {
        lock(&self.inner.timeouts).1 = timeout;
        self
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<T> {
        &self.inner.transport
    }

    fn refuse_when_stopping(&self) -> Result<()> {
        if self.inner.phase.load(Ordering::Acquire) == RUNNING {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Closed).context("the host is shutting down"))
        }
    }

    /// Runs `service` until the host stops: what a scheduler, or a service of your own, plugs
    /// in with (start it first; the host only stops it).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] once the host is shutting down (the service is stopped at once).
    pub async fn add_service(&self, service: impl Service + 'static) -> Result<()> {
        self.push(&self.inner.services, Box::new(service)).await
    }

    async fn push(&self, list: &Services, mut service: Box<dyn Service>) -> Result<()> {
        let mut services = list.lock().await;
        if let Err(e) = self.refuse_when_stopping() {
            drop(services);
            if service.stop().await.is_err() {
                service.abort();
            }
            return Err(e);
        }
        tracing::debug!(service = service.name(), "service added to the host");
        services.push(service);
        Ok(())
    }

    /// Starts `worker` ([`Worker::start`]: declares, consumes) and runs it until the host
    /// stops.
    ///
    /// # Errors
    /// As [`Worker::start`]; [`ErrorKind::Closed`] once the host is shutting down.
    pub async fn add_worker<U>(&self, worker: Worker<U>) -> Result<()>
    where
        U: Transport + 'static,
        U::Subscription: 'static,
    {
        self.refuse_when_stopping()?;
        let name = format!("worker {}", worker.config().queue.name);
        let handle = worker.start().await?;
        let abort = handle.abort_handle();
        self.add_service(Hosted {
            name,
            handle: Some(handle),
            abort,
            stop: stop_worker,
        })
        .await
    }

    /// Starts `server` ([`RpcServer::start`]) and runs it until the host stops.
    ///
    /// # Errors
    /// As [`RpcServer::start`]; [`ErrorKind::Closed`] once the host is shutting down.
    pub async fn add_rpc_server<U>(&self, server: RpcServer<U>) -> Result<()>
    where
        U: Transport + 'static,
        U::Subscription: 'static,
    {
        self.refuse_when_stopping()?;
        let name = format!("RPC server {}", server.queue_spec().name);
        let handle = server.start().await?;
        let abort = handle.abort_handle();
        self.add_service(Hosted {
            name,
            handle: Some(handle),
            abort,
            stop: stop_rpc_server,
        })
        .await
    }

    /// Starts `gateway` on `queue` ([`Gateway::start`]) and runs it until the host stops.
    ///
    /// # Errors
    /// As [`Gateway::start`]; [`ErrorKind::Closed`] once the host is shutting down.
    pub async fn add_gateway<U>(
        &self,
        gateway: Gateway<U>,
        queue: QueueSpec,
        consumer: ConsumerConfig,
    ) -> Result<()>
    where
        U: Transport + 'static,
        U::Subscription: 'static,
    {
        self.refuse_when_stopping()?;
        let name = format!("gateway {}", queue.name);
        let handle = gateway.start(queue, consumer).await?;
        let abort = handle.abort_handle();
        self.add_service(Hosted {
            name,
            handle: Some(handle),
            abort,
            stop: stop_gateway,
        })
        .await
    }

    /// Starts `scheduler` ([`Scheduler::start`]: joins the schedule's election) and runs it
    /// until the host stops; stopping gives its token back, so another replica leads at once.
    ///
    /// # Errors
    /// As [`Scheduler::start`]; [`ErrorKind::Closed`] once the host is shutting down.
    pub async fn add_scheduler<U>(&self, scheduler: Scheduler<U>) -> Result<()>
    where
        U: Transport + ScheduleLedger + 'static,
        U::Lease: 'static,
    {
        self.refuse_when_stopping()?;
        let name = format!("scheduler {}", scheduler.schedule().name());
        let handle = scheduler.start().await?;
        let abort = handle.abort_handle();
        self.add_service(Hosted {
            name,
            handle: Some(handle),
            abort,
            stop: stop_scheduler,
        })
        .await
    }

    /// Closes `client` ([`RpcClient::close`], for every clone) once the other services
    /// stopped, before the transport closes; while it runs, its reply path counts for
    /// readiness.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] once the host is shutting down (the client is closed at once).
    pub async fn add_rpc_client<U: ReplyTransport + 'static>(
        &self,
        client: RpcClient<U>,
    ) -> Result<()> {
        let name = format!("RPC client {}", client.config().exchange);
        self.push(&self.inner.clients, Box::new(HostedClient { name, client }))
            .await
    }

    /// As if the process got SIGTERM: the first call starts the shutdown of [`Host::run`] (or
    /// [`Host::run_until`]), the second forces it.
    pub fn signal(&self) {
        self.inner.signals.send_modify(|n| *n = n.saturating_add(1));
    }

    /// Runs until SIGINT (Ctrl-C) or SIGTERM, then shuts down as the [module docs](self) say;
    /// a second signal forces the exit.
    ///
    /// # Errors
    /// As [`Host::close`].
    pub async fn run(&self) -> Result<HostReport> {
        let host = self.clone();
        // Every signal counts: the first drains, the second forces.
        let listener = tokio::spawn(async move {
            loop {
                crate::signal::shutdown_signal().await;
                host.signal();
            }
        });
        let outcome = self.run_until(core::future::pending()).await;
        listener.abort();
        outcome
    }

    /// Runs until `stop` completes or [`Host::signal`] is called, then shuts down; a
    /// [`Host::signal`] while draining forces the exit.
    ///
    /// # Errors
    /// As [`Host::close`].
    pub async fn run_until(&self, stop: impl Future<Output = ()> + Send) -> Result<HostReport> {
        let mut signals = self.inner.signals.subscribe();
        tokio::select! {
            () = stop => self.signal(),
            _ = signals.wait_for(|n| *n >= 1) => {}
        }
        self.shut_down().await
    }

    /// Shuts down now: drains, closes RPC clients, closes the transport (see the
    /// [module docs](self)); a [`Host::signal`] meanwhile forces it. Counts as the first
    /// signal, never as a second: called while a shutdown drains, it waits for it (and
    /// returns an empty report). Never hangs: bounded by
    /// [`Host::drain_timeout`] plus [`Host::close_timeout`]. Closing again returns an empty
    /// report.
    ///
    /// # Errors
    /// The first failure, after everything was stopped and closed anyway: a service that had
    /// ended with an error, or the transport's close (its error names the step). A service
    /// aborted at the deadline is not an error (see [`HostReport::aborted`]).
    pub async fn close(&self) -> Result<HostReport> {
        // A drain, never a force: closing while a shutdown drains waits for it.
        self.inner.signals.send_if_modified(|n| {
            let first = *n == 0;
            if first {
                *n = 1;
            }
            first
        });
        self.shut_down().await
    }

    async fn shut_down(&self) -> Result<HostReport> {
        let inner = &self.inner;
        let started = Instant::now();
        let mut services = inner.services.lock().await;
        if inner.phase.swap(DRAINING, Ordering::AcqRel) == CLOSED {
            inner.phase.store(CLOSED, Ordering::Release);
            return Ok(HostReport::default());
        }
        let (drain, close_timeout) = *lock(&inner.timeouts);
        let deadline = started + drain;
        tracing::info!(services = services.len(), ?drain, "host shutting down");
        let mut report = HostReport::default();
        let mut first_error = None;
        let mut signals = inner.signals.subscribe();
        let forced = async move {
            let _ = signals.wait_for(|n| *n >= 2).await;
        };
        tokio::pin!(forced);

        // 1. The services, all at once, each bounded by the deadline.
        let outcomes: Vec<Mutex<Option<Result<()>>>> =
            services.iter().map(|_| Mutex::new(None)).collect();
        {
            let stops: Vec<_> = services
                .iter_mut()
                .zip(&outcomes)
                .map(|(service, slot)| async move {
                    if let Ok(outcome) = tokio::time::timeout_at(deadline, service.stop()).await {
                        *lock(slot) = Some(outcome);
                    }
                })
                .collect();
            tokio::select! {
                _ = crate::rpc::join_all(stops) => {}
                () = &mut forced => {
                    report.forced = true;
                    tracing::warn!("second signal: aborting the services still stopping");
                }
            }
        }
        for (service, slot) in services.iter_mut().zip(outcomes) {
            let name = service.name().to_owned();
            match slot.into_inner().unwrap_or_else(PoisonError::into_inner) {
                Some(Ok(())) => report.stopped.push(name),
                Some(Err(e)) => {
                    tracing::warn!(service = %name, error = %e, "service had failed");
                    first_error.get_or_insert(e.context(name.clone()));
                    report.stopped.push(name);
                }
                None => {
                    service.abort();
                    if !report.forced {
                        tracing::warn!(service = %name, ?drain, "service still stopping at the drain deadline; aborted");
                    }
                    report.aborted.push(name);
                }
            }
        }
        services.clear();

        // 2. RPC clients (closing one never waits on the broker).
        let mut clients = inner.clients.lock().await;
        for client in clients.iter_mut() {
            let _ = client.stop().await;
            report.stopped.push(client.name().to_owned());
        }
        clients.clear();
        drop(clients);

        // 3. The transport, last. Forced, it gets a short bound; a second signal now leaves
        // it (it reconnects no more once closing began; the broker requeues with the socket).
        let bound = if report.forced {
            close_timeout.min(FORCED_CLOSE_TIMEOUT)
        } else {
            close_timeout
        };
        let closing = tokio::time::timeout(bound, inner.transport.close());
        let closed = tokio::select! {
            closed = closing => Some(closed),
            () = &mut forced, if !report.forced => {
                report.forced = true;
                tracing::warn!("second signal: not waiting for the transport to close");
                None
            }
        };
        match closed {
            None | Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => {
                tracing::warn!(error = %e, "closing the transport failed");
                first_error.get_or_insert(e.context("close the transport"));
            }
            Some(Err(_)) => {
                tracing::warn!(?bound, "closing the transport took too long");
                first_error.get_or_insert(
                    Error::new(ErrorKind::Timeout)
                        .context(format!("close the transport: not done in {bound:?}")),
                );
            }
        }
        inner.phase.store(CLOSED, Ordering::Release);
        drop(services);
        report.elapsed = started.elapsed();
        tracing::info!(
            stopped = report.stopped.len(),
            aborted = report.aborted.len(),
            forced = report.forced,
            elapsed = ?report.elapsed,
            "host stopped"
        );
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// True while the host runs (not closed) and no service ended by itself; see the
    /// [module docs](self). Never waits.
    pub fn is_live(&self) -> bool {
        let inner = &self.inner;
        match inner.phase.load(Ordering::Acquire) {
            CLOSED => false,
            DRAINING => true,
            _ => match inner.services.try_lock() {
                Ok(services) => services.iter().all(|s| s.is_live()),
                // Being added to: alive.
                Err(_) => true,
            },
        }
    }

    /// True while the host takes work: live, not shutting down, the transport connected and
    /// not blocked, every service ready. Never waits.
    pub fn is_ready(&self) -> bool {
        let inner = &self.inner;
        if inner.phase.load(Ordering::Acquire) != RUNNING
            || *inner.signals.borrow() > 0
            || !inner.transport.is_connected()
            || inner.transport.is_blocked()
        {
            return false;
        }
        let (Ok(services), Ok(clients)) = (inner.services.try_lock(), inner.clients.try_lock())
        else {
            return false;
        };
        services.iter().all(|s| s.is_live() && s.is_ready()) && clients.iter().all(|c| c.is_ready())
    }
}

fn stop_worker(handle: WorkerHandle) -> StopFuture<'static> {
    Box::pin(async move { handle.shutdown().await.map(drop) })
}

fn stop_rpc_server(handle: RpcServerHandle) -> StopFuture<'static> {
    Box::pin(handle.shutdown_checked())
}

fn stop_scheduler(handle: SchedulerHandle) -> StopFuture<'static> {
    Box::pin(async move { handle.shutdown().await.map(drop) })
}

fn stop_gateway(handle: GatewayHandle) -> StopFuture<'static> {
    Box::pin(async move { handle.shutdown().await.map(drop) })
}

/// The handle of a started worker, RPC server or gateway.
struct Hosted<H> {
    name: String,
    handle: Option<H>,
    abort: AbortHandle,
    stop: fn(H) -> StopFuture<'static>,
}

impl<H: Send + 'static> Service for Hosted<H> {
    fn name(&self) -> &str {
        &self.name
    }

    fn stop(&mut self) -> StopFuture<'_> {
        match self.handle.take() {
            Some(handle) => (self.stop)(handle),
            None => Box::pin(core::future::ready(Ok(()))),
        }
    }

    fn abort(&mut self) {
        self.abort.abort();
    }

    fn is_ready(&self) -> bool {
        self.is_live()
    }

    fn is_live(&self) -> bool {
        self.handle.is_some() && !self.abort.is_finished()
    }
}

struct HostedClient<T: ReplyTransport> {
    name: String,
    client: RpcClient<T>,
}

impl<T: ReplyTransport + 'static> Service for HostedClient<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn stop(&mut self) -> StopFuture<'_> {
        Box::pin(async move {
            self.client.close().await;
            Ok(())
        })
    }

    fn is_ready(&self) -> bool {
        !self.client.is_closed() && self.client.is_reply_path_up()
    }

    fn is_live(&self) -> bool {
        !self.client.is_closed()
    }
}
