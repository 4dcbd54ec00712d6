//! A TCP proxy between a client and the broker, for fault injection on loopback: it forwards
//! bytes both ways and, on command, drops every connection, stalls them (stops forwarding
//! without closing), or half-closes them (shuts the client's write side down).
//!
//! Only loopback addresses are used: the proxy listens on `127.0.0.1:0` and connects to the
//! upstream address it is given.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to the connections it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward bytes both ways.
    None,
    /// Stop forwarding without closing (a stalled network path).
    Stall,
    /// Close every connection (both ways), then forward new ones again.
    Drop,
    /// Shut down the write half towards the client (the broker side seems to have closed).
    HalfClose,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    control: watch::Sender<(u64, Fault)>,
    generation: AtomicU64,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (control, watcher) = watch::channel((0, Fault::None));
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let watcher = watcher.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        carry(client, server, watcher).await;
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            control,
            generation: AtomicU64::new(0),
            accepted,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An AMQP URL through the proxy (guest/guest, default vhost), with a 5 s heartbeat so
    /// that both ends notice a stalled or half-open connection within seconds.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f?heartbeat=5", self.addr)
    }

    /// How many client connections were accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Applies `fault` to every current connection (new connections are forwarded normally
    /// after a `Drop` or `HalfClose`; a `Stall` holds until [`Proxy::heal`]).
    pub fn inject(&self, fault: Fault) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.control.send((generation, fault));
    }

    /// Ends a stall: forwarding resumes.
    pub fn heal(&self) {
        self.inject(Fault::None);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.inject(Fault::Drop);
    }
}

/// Forwards between `client` and `server` until either side closes or a fault ends it.
async fn carry(client: TcpStream, server: TcpStream, mut control: watch::Receiver<(u64, Fault)>) {
    let started = control.borrow_and_update().0;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    let mut stalled = false;
    loop {
        tokio::select! {
            changed = control.changed() => {
                if changed.is_err() {
                    return;
                }
                let (generation, fault) = *control.borrow();
                if generation <= started {
                    continue;
                }
                match fault {
                    Fault::None => stalled = false,
                    Fault::Stall => stalled = true,
                    Fault::Drop => return,
                    Fault::HalfClose => {
                        let _ = client_write.shutdown().await;
                        // Keep reading the client until it gives up, forwarding nothing.
                        let _ = tokio::time::timeout(Duration::from_secs(30), async {
                            while matches!(client_read.read(&mut up).await, Ok(n) if n > 0) {}
                        })
                        .await;
                        return;
                    }
                }
            }
            n = client_read.read(&mut up), if !stalled => match n {
                Ok(n) if n > 0 => {
                    if server_write.write_all(&up[..n]).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
            n = server_read.read(&mut down), if !stalled => match n {
                Ok(n) if n > 0 => {
                    if client_write.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
        }
    }
}
