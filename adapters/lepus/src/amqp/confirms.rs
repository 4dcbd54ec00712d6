//! Matching publisher confirms and returned (unroutable) messages to the publish they belong to.
//!
//! lapin hands each `basic.return` to whichever confirmation it resolves next; when the broker
//! confirms several publishes at once (`basic.ack` with `multiple`), that is not necessarily
//! the confirmation of the returned message (lapin iterates its pending tags in hash order).
//! Trusting it would report an unroutable message as delivered and a delivered one as
//! unroutable. So the returned message is matched by its `message_id` instead, which this
//! crate sets on every publish.
//!
//! Why this is exact: RabbitMQ sends a message's `basic.return` before its `basic.ack`, and
//! lapin attaches a waiting returned message to the first confirmation it resolves after the
//! return arrived. So by the time a publish's own confirmation is resolved, the confirmation
//! carrying its returned message (if any) is resolved too: either itself (a single ack) or one
//! of the same multiple ack, which resolves every older pending publish at once. One task per
//! channel (the [`ConfirmTracker`]) waits for the oldest confirmation, then sweeps the resolved
//! ones from the oldest on (and [`LOOKAHEAD`] further, for confirmations that arrived out of
//! order), collects the message ids of all returned messages, and only then settles each
//! resolved publish: unroutable if its own id was returned, else as the broker confirmed it.
//! A sweep costs O(resolved + [`LOOKAHEAD`]), not O(in flight).
//!
//! One more care: lapin resolves the confirmations of one multiple ack one by one while
//! holding its acknowledgement lock, so a sweep running on another thread can see a publish
//! resolved while the carrier of its returned message is not yet. Before settling, the sweep
//! therefore takes that lock once ([`sync_with_lapin`]): every batch that had begun resolving
//! is then complete, and a second look collects all the returned messages of those batches.
//! Only publishes seen resolved before that point are settled.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use lapin::{Channel, Confirmation, PublisherConfirm};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind, Result};

/// How many publishes past the first unconfirmed one a sweep looks at.
const LOOKAHEAD: usize = 256;

/// A publish waiting for its confirmation.
struct Tracked {
    message_id: String,
    confirm: PublisherConfirm,
    outcome: Option<lapin::Result<Confirmation>>,
    settle: oneshot::Sender<Result<()>>,
}

/// Hands publishes of one confirm-mode channel to the task that settles them.
#[derive(Debug, Clone)]
pub(crate) struct ConfirmTracker {
    sender: mpsc::UnboundedSender<Tracked>,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("message_id", &self.message_id)
            .finish()
    }
}

impl ConfirmTracker {
    /// Starts the settling task of one channel; it ends when every tracker clone is dropped
    /// and every tracked publish is settled.
    pub(crate) fn start(channel: Channel) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(settle_loop(channel, receiver));
        ConfirmTracker { sender }
    }

    /// Tracks the confirmation of the publish of `message_id`; the returned receiver yields
    /// its outcome.
    pub(crate) fn track(
        &self,
        message_id: String,
        confirm: PublisherConfirm,
    ) -> oneshot::Receiver<Result<()>> {
        let (settle, outcome) = oneshot::channel();
        let tracked = Tracked {
            message_id,
            confirm,
            outcome: None,
            settle,
        };
        if let Err(mpsc::error::SendError(tracked)) = self.sender.send(tracked) {
            // The settling task is gone (runtime shutting down): the outcome is unknown.
            let _ =
                tracked.settle.send(Err(Error::new(ErrorKind::ChannelClosed)
                    .context("publisher confirm tracking stopped")));
        }
        outcome
    }
}

async fn settle_loop(channel: Channel, mut incoming: mpsc::UnboundedReceiver<Tracked>) {
    let mut pending: VecDeque<Tracked> = VecDeque::new();
    let mut returned: HashMap<String, u16> = HashMap::new();
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            match incoming.recv().await {
                Some(t) => pending.push_back(t),
                None => open = false,
            }
        } else {
            tokio::select! {
                t = incoming.recv(), if open => match t {
                    Some(t) => pending.push_back(t),
                    None => open = false,
                },
                () = OldestConfirm(&mut pending) => {}
            }
        }
        while let Ok(t) = incoming.try_recv() {
            pending.push_back(t);
        }
        sweep(&channel, &mut pending, &mut returned);
    }
}

/// Takes lapin's acknowledgement lock once and lets it go, so that every batch of
/// confirmations that had begun resolving has finished. (`wait_for_confirms` takes that lock
/// on its first poll; the future is then dropped. It also consumes lapin's "last pending"
/// marker, which only `wait_for_confirms` uses, and nothing here calls it otherwise.)
fn sync_with_lapin(channel: &Channel) {
    let mut noop = Context::from_waker(Waker::noop());
    let mut wait = std::pin::pin!(channel.wait_for_confirms());
    let _ = wait.as_mut().poll(&mut noop);
}

/// Ready once the oldest tracked confirmation is resolved (recording its outcome), at once
/// if it already was.
struct OldestConfirm<'a>(&'a mut VecDeque<Tracked>);

impl Future for OldestConfirm<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(front) = self.0.front_mut() else {
            return Poll::Pending;
        };
        if front.outcome.is_some() {
            return Poll::Ready(());
        }
        match Pin::new(&mut front.confirm).poll(cx) {
            Poll::Ready(outcome) => {
                front.outcome = Some(outcome);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Settles every tracked publish whose confirmation is resolved, after collecting the message
/// ids of all returned messages carried by any of them. Touches only the entries
/// [`poll_resolved`] looked at, never the whole backlog.
fn sweep(channel: &Channel, pending: &mut VecDeque<Tracked>, returned: &mut HashMap<String, u16>) {
    let swept = poll_resolved(pending);
    let resolved_before_sync: Vec<bool> = pending
        .iter()
        .take(swept)
        .map(|t| t.outcome.is_some())
        .collect();
    if !resolved_before_sync.iter().any(|&r| r) {
        return;
    }
    sync_with_lapin(channel);
    // A second look: carriers of returned messages resolved since the first look.
    let looked = poll_resolved(pending).max(swept);
    for tracked in pending.iter_mut().take(looked) {
        // Each carried message is taken once: the carrier's own outcome stays an ack (or
        // nack), and the id waits in `returned` for its publish.
        let carried = match tracked.outcome.take() {
            Some(Ok(Confirmation::Ack(Some(message)))) => {
                tracked.outcome = Some(Ok(Confirmation::Ack(None)));
                Some(message)
            }
            Some(Ok(Confirmation::Nack(Some(message)))) => {
                tracked.outcome = Some(Ok(Confirmation::Nack(None)));
                Some(message)
            }
            other => {
                tracked.outcome = other;
                None
            }
        };
        if let Some(message) = carried {
            // Without an id the return cannot be matched: blame the carrier, as lapin does.
            let id = match message.delivery.properties.message_id() {
                Some(id) => id.as_str().to_string(),
                None => tracked.message_id.clone(),
            };
            returned.insert(id, message.reply_code);
        }
    }
    // Settle the resolved ones among the first `swept`; the others go back, in order.
    let mut kept = Vec::new();
    for (settle_now, mut tracked) in resolved_before_sync.into_iter().zip(pending.drain(..swept)) {
        let outcome = if settle_now {
            tracked.outcome.take()
        } else {
            None
        };
        let Some(outcome) = outcome else {
            kept.push(tracked);
            continue;
        };
        let result = match outcome {
            Err(e) => Err(Error::from_lapin(e)),
            Ok(_) if returned.contains_key(&tracked.message_id) => {
                let reply_code = returned.remove(&tracked.message_id).unwrap_or(312);
                Err(Error::new(ErrorKind::Unroutable { reply_code }))
            }
            Ok(Confirmation::Ack(_)) => Ok(()),
            Ok(Confirmation::Nack(_)) => Err(Error::new(ErrorKind::Nacked)),
            Ok(Confirmation::NotRequested) => {
                Err(Error::new(ErrorKind::Broker).context("publisher confirms are not enabled"))
            }
        };
        // The publisher may have stopped waiting (its future was dropped): nothing to do.
        let _ = tracked.settle.send(result);
    }
    for tracked in kept.into_iter().rev() {
        pending.push_front(tracked);
    }
}

/// Polls the oldest tracked confirmations (up to [`LOOKAHEAD`] unresolved ones) and records
/// those that resolved; returns how many entries were looked at.
fn poll_resolved(pending: &mut VecDeque<Tracked>) -> usize {
    let mut noop = Context::from_waker(Waker::noop());
    let mut unresolved_seen = 0usize;
    let mut swept = 0usize;
    for tracked in pending.iter_mut() {
        if tracked.outcome.is_none() {
            if let Poll::Ready(outcome) = Pin::new(&mut tracked.confirm).poll(&mut noop) {
                tracked.outcome = Some(outcome);
            }
        }
        swept += 1;
        if tracked.outcome.is_none() {
            unresolved_seen += 1;
            if unresolved_seen > LOOKAHEAD {
                break;
            }
        }
    }
    swept
}
