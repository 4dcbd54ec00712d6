//! Schedule ledgers on RabbitMQ ([`crate::ledger`]): a quorum queue with
//! `x-single-active-consumer` per schedule, consumed on a transaction channel.
//!
//! Every replica consumes `lepus.schedule.<name>` (manual acks, prefetch
//! [`MAX_HELD_TOKENS`]) on a channel of its own, put in transaction mode (`tx.select`; such a
//! channel cannot use publisher confirms, hence not the transport's publishing channel). The
//! broker delivers to one consumer only, the active one: it receives the token(s) and holds
//! them unacked while it leads. When its connection or channel closes, the broker returns
//! the tokens to the queue and activates the next consumer, which receives them.
//!
//! A commit publishes the ticks and the new token, acks the held tokens (`multiple`) and
//! sends `tx.commit`; a channel closed before `commit-ok` rolls the transaction back. A
//! joining replica seeds an empty token only when `queue.declare-ok` reports no ready message
//! and no consumer: nobody holds a token and none waits. Replicas starting together may each
//! seed one; the leader merges them at its next commit.

use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Consumer};

use crate::amqp::properties::{short_name, to_amqp};
use crate::amqp::supervisor::{Session, Supervisor, FIRST_BACKOFF, MAX_BACKOFF};
use crate::amqp::transport::AmqpTransport;
use crate::error::{Error, ErrorKind, NameKind, Result};
use crate::ledger::{ledger_queue_name, LedgerLease, ScheduleLedger, MAX_HELD_TOKENS};
use crate::names::{check_payload, check_routing_key, check_target_exchange};
use crate::properties::Properties;
use crate::protocol::{new_message_id, now_seconds};
use crate::transport::Publication;

/// How many times a new leader asks the broker whether tokens still wait to be delivered to
/// it, before it goes on with those it holds (the rest are merged at a later commit).
const SETTLE_ROUNDS: u32 = 10;
/// How long a new leader waits for each token the broker says is still on its way.
const SETTLE_WAIT: Duration = Duration::from_millis(500);

/// A replica's lease on a RabbitMQ schedule ledger; see [`LedgerLease`] and the module docs.
#[derive(Debug)]
pub struct AmqpLease {
    sup: Arc<Supervisor>,
    queue: String,
    live: Option<Live>,
    /// Opening the ledger channel, in a task of its own: a `basic.consume` cut short by a
    /// dropped `acquire` would leave a consumer that nobody reads, and on a single active
    /// consumer queue that one may be the active one, holding the token for ever. The task
    /// finishes; if the lease is gone by then, its channel is dropped and closed.
    opening: Option<tokio::task::JoinHandle<Result<Live>>>,
    /// Tokens delivered and not yet committed: delivery tag and body.
    held: Vec<(u64, Vec<u8>)>,
    /// Whether the held tokens were checked against the broker's count of ready tokens.
    settled: bool,
    /// A token was delivered on the current channel: this replica is the active consumer.
    leading: bool,
    backoff: Duration,
}

#[derive(Debug)]
struct Live {
    channel: Arc<Channel>,
    consumer: Consumer,
    session: Arc<Session>,
}

impl ScheduleLedger for AmqpTransport {
    type Lease = AmqpLease;

    async fn join(&self, schedule: &str) -> Result<AmqpLease> {
        let queue = ledger_queue_name(schedule)?;
        let sup = Arc::clone(self.supervisor());
        let deadline = tokio::time::Instant::now() + sup.config.send_timeout;
        // Open at once, so that a broker that refuses the queue is an error of `join`.
        let mut backoff = FIRST_BACKOFF;
        let live = loop {
            match open(Arc::clone(&sup), queue.clone(), Some(deadline)).await {
                Ok(live) => break live,
                Err(e) if transient(&e, &sup) && tokio::time::Instant::now() < deadline => {
                    tracing::info!(queue, error = %e, "joining the schedule ledger: trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        };
        Ok(AmqpLease {
            sup,
            queue,
            live: Some(live),
            opening: None,
            held: Vec::new(),
            settled: false,
            leading: false,
            backoff: FIRST_BACKOFF,
        })
    }
}

/// Whether joining again may succeed: lost connections and channels. (RabbitMQ 3.10 answers a
/// `basic.consume` on a quorum queue whose Raft member is still starting, when another
/// replica's declaration created it a moment ago, with an internal error (541) that closes
/// the whole connection; seen in the chaos suite when two replicas start together. That is a
/// lost connection, see `Error::from_lapin`.)
fn transient(e: &Error, sup: &Supervisor) -> bool {
    if e.kind() == ErrorKind::Closed || sup.is_shut() {
        return false;
    }
    e.is_retryable() || e.is_connection_error() || !sup.current().is_open()
}

fn ledger_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    args
}

fn token_properties() -> Result<BasicProperties> {
    to_amqp(&Properties::new(), &new_message_id(), now_seconds())
}

/// Opens the ledger channel: prefetch, `tx.select`, declares the queue, seeds a token when
/// nobody holds one, and consumes.
async fn open(
    sup: Arc<Supervisor>,
    queue: String,
    deadline: Option<tokio::time::Instant>,
) -> Result<Live> {
    let session = sup.session(deadline).await?;
    let channel = session.open_channel("hold a schedule ledger").await?;
    let name = short_name(NameKind::Queue, &queue)?;
    let lapin_err = |what: &'static str| {
        let queue = queue.clone();
        move |e: lapin::Error| Error::from_lapin(e).context(format!("{what} {queue:?}"))
    };
    channel
        .basic_qos(MAX_HELD_TOKENS, BasicQosOptions { global: false })
        .await
        .map_err(lapin_err("set the prefetch of ledger"))?;
    channel
        .tx_select()
        .await
        .map_err(lapin_err("select transactions for ledger"))?;
    let declared = channel
        .queue_declare(
            name.clone(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            ledger_arguments(),
        )
        .await
        .map_err(lapin_err("declare ledger queue"))?;
    if declared.message_count() == 0 && declared.consumer_count() == 0 {
        tracing::info!(queue, "no token held or waiting: seeding an empty one");
        channel
            .basic_publish(
                "".into(),
                name.clone(),
                BasicPublishOptions::default(),
                b"",
                token_properties()?,
            )
            .await
            .map_err(lapin_err("seed a token in"))?;
        channel
            .tx_commit()
            .await
            .map_err(lapin_err("commit the seed token of"))?;
    }
    let consumer = channel
        .basic_consume(
            name,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(lapin_err("consume ledger queue"))?;
    tracing::debug!(queue, "joined the schedule ledger");
    Ok(Live {
        channel,
        consumer,
        session,
    })
}

/// What waiting on the ledger channel gave.
enum Event {
    Token(u64, Vec<u8>),
    Lost,
}

async fn next_event(live: &mut Live) -> Event {
    let consumer = &mut live.consumer;
    let next = core::future::poll_fn(|cx| core::pin::Pin::new(&mut *consumer).poll_next(cx));
    tokio::select! {
        item = next => match item {
            Some(Ok(d)) => Event::Token(d.delivery_tag, d.data),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "schedule ledger channel lost");
                Event::Lost
            }
            None => Event::Lost,
        },
        () = live.session.closed() => Event::Lost,
    }
}

impl AmqpLease {
    /// The ledger queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    fn lose(&mut self) {
        if self.live.take().is_some() {
            tracing::info!(queue = %self.queue, "schedule ledger lease lost");
        }
        self.held.clear();
        self.settled = false;
        self.leading = false;
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Token(tag, body) => {
                self.leading = true;
                self.held.push((tag, body));
            }
            Event::Lost => self.lose(),
        }
    }

    /// An open ledger channel, joining again after a loss (waits for the reconnection).
    async fn live(&mut self) -> Result<&mut Live> {
        while self.live.is_none() {
            let task = self.opening.get_or_insert_with(|| {
                let (sup, queue) = (Arc::clone(&self.sup), self.queue.clone());
                tokio::spawn(open(sup, queue, None))
            });
            let outcome = task.await;
            self.opening = None;
            match outcome {
                Ok(Ok(live)) => {
                    self.backoff = FIRST_BACKOFF;
                    self.live = Some(live);
                }
                Ok(Err(e)) if !transient(&e, &self.sup) => return Err(e),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "joining the schedule ledger again failed; retrying");
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    return Err(Error::new(ErrorKind::ChannelClosed)
                        .context(format!("joining the schedule ledger: {e}")))
                }
            }
        }
        match self.live.as_mut() {
            Some(live) => Ok(live),
            None => Err(Error::new(ErrorKind::ChannelClosed).context("schedule ledger")),
        }
    }

    /// Takes every token already delivered, without waiting.
    fn drain(&mut self) {
        while let Some(live) = self.live.as_mut() {
            let consumer = &mut live.consumer;
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            match core::pin::Pin::new(&mut *consumer).poll_next(&mut cx) {
                std::task::Poll::Ready(Some(Ok(d))) => {
                    self.apply(Event::Token(d.delivery_tag, d.data));
                }
                std::task::Poll::Ready(_) => self.lose(),
                std::task::Poll::Pending => return,
            }
        }
    }

    /// Asks the broker how many tokens are still ready (not yet delivered to this leader),
    /// and waits for them, a bounded number of times.
    async fn settle(&mut self) -> Result<()> {
        for _ in 0..SETTLE_ROUNDS {
            let Some(live) = self.live.as_mut() else {
                return Ok(());
            };
            let name = short_name(NameKind::Queue, &self.queue)?;
            let declared = live
                .channel
                .queue_declare(
                    name,
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match declared {
                Ok(q) if q.message_count() == 0 => return Ok(()),
                Ok(_) => {
                    if let Ok(event) = tokio::time::timeout(SETTLE_WAIT, next_event(live)).await {
                        self.apply(event);
                    }
                    self.drain();
                }
                Err(e) => {
                    self.lose();
                    return Err(Error::from_lapin(e)
                        .context(format!("count the tokens waiting in {:?}", self.queue)));
                }
            }
        }
        Ok(())
    }

    async fn send_commit(
        live: &Live,
        queue: &str,
        max_payload: usize,
        ticks: &[Publication<'_>],
        ledger: &[u8],
        last_tag: u64,
    ) -> Result<()> {
        let mut prepared = Vec::with_capacity(ticks.len());
        for p in ticks {
            check_target_exchange(p.exchange)?;
            check_routing_key(p.routing_key)?;
            check_payload(p.body.len(), p.body_limit(max_payload))?;
            p.properties.validate()?;
            let id = p
                .properties
                .message_id
                .clone()
                .unwrap_or_else(new_message_id);
            let timestamp = p.properties.timestamp.unwrap_or_else(now_seconds);
            prepared.push((
                short_name(NameKind::Exchange, p.exchange)?,
                short_name(NameKind::RoutingKey, p.routing_key)?,
                to_amqp(p.properties, &id, timestamp)?,
            ));
        }
        let fail = |what: &'static str| move |e: lapin::Error| Error::from_lapin(e).context(what);
        for ((exchange, routing_key, properties), p) in prepared.into_iter().zip(ticks) {
            live.channel
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions::default(),
                    p.body,
                    properties,
                )
                .await
                .map_err(fail("publish a tick"))?;
        }
        live.channel
            .basic_publish(
                "".into(),
                short_name(NameKind::Queue, queue)?,
                BasicPublishOptions::default(),
                ledger,
                token_properties()?,
            )
            .await
            .map_err(fail("publish the new ledger token"))?;
        live.channel
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await
            .map_err(fail("ack the held ledger tokens"))?;
        live.channel
            .tx_commit()
            .await
            .map_err(fail("commit the ticks and the ledger token"))
    }
}

impl LedgerLease for AmqpLease {
    async fn acquire(&mut self) -> Result<Vec<Vec<u8>>> {
        loop {
            self.drain();
            if !self.held.is_empty() {
                if !self.settled {
                    match self.settle().await {
                        Ok(()) => self.settled = true,
                        // The channel or connection went meanwhile: join again.
                        Err(e) if e.is_retryable() || e.is_connection_error() => {
                            tracing::warn!(error = %e, "schedule ledger lost while settling");
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                    if self.held.is_empty() {
                        continue;
                    }
                }
                return Ok(self.held.iter().map(|(_, body)| body.clone()).collect());
            }
            let live = self.live().await?;
            let event = next_event(live).await;
            self.apply(event);
        }
    }

    fn is_leading(&self) -> bool {
        self.leading && self.live.is_some()
    }

    async fn changed(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let event = next_event(live).await;
        self.apply(event);
    }

    async fn commit(&mut self, ticks: &[Publication<'_>], ledger: &[u8]) -> Result<()> {
        let Some(last_tag) = self.held.iter().map(|&(tag, _)| tag).max() else {
            return Err(Error::new(ErrorKind::ChannelClosed).context(format!(
                "commit to {:?}: this replica holds no token",
                self.queue
            )));
        };
        let Some(live) = self.live.as_ref() else {
            return Err(Error::new(ErrorKind::ChannelClosed)
                .context(format!("commit to {:?}: the lease was lost", self.queue)));
        };
        let timeout = self.sup.config.send_timeout;
        let max_payload = self.sup.config.max_payload;
        let commit = Self::send_commit(live, &self.queue, max_payload, ticks, ledger, last_tag);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, commit) => outcome.unwrap_or_else(|_| {
                Err(Error::new(ErrorKind::Timeout).context("no commit-ok from the broker"))
            }),
            () = live.session.closed() => Err(Error::new(ErrorKind::ConnectionLost)
                .context("connection lost during the ledger transaction")),
        };
        match outcome {
            Ok(()) => {
                self.held.clear();
                Ok(())
            }
            Err(e) => {
                // Invalid input was refused before anything was sent: the lease stands.
                if !e.is_invalid_input() {
                    // Closing the channel rolls an unfinished transaction back.
                    self.lose();
                }
                Err(e.context(format!("commit to the schedule ledger {:?}", self.queue)))
            }
        }
    }

    async fn release(mut self) -> Result<()> {
        self.held.clear();
        let Some(live) = self.live.take() else {
            return Ok(());
        };
        if !live.channel.status().connected() {
            return Ok(());
        }
        let close = live.channel.close(200, "schedule replica leaving".into());
        match tokio::time::timeout(Duration::from_secs(5), close).await {
            Ok(outcome) => outcome.map_err(|e| {
                Error::from_lapin(e).context(format!("leave the schedule ledger {:?}", self.queue))
            }),
            Err(_) => Err(Error::new(ErrorKind::Timeout).context(format!(
                "leave the schedule ledger {:?}: no answer",
                self.queue
            ))),
        }
    }
}
