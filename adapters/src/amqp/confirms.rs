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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use lapin::{Confirmation, PublisherConfirm};
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
    pub(crate) fn start() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(settle_loop(receiver));
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

async fn settle_loop(mut incoming: mpsc::UnboundedReceiver<Tracked>) {
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
                outcome = OldestConfirm(&mut pending) => {
                    if let Some(front) = pending.front_mut() {
                        front.outcome = Some(outcome);
                    }
                }
            }
        }
        while let Ok(t) = incoming.try_recv() {
            pending.push_back(t);
        }
        sweep(&mut pending, &mut returned);
    }
}

/// Resolves with the outcome of the oldest tracked confirmation.
struct OldestConfirm<'a>(&'a mut VecDeque<Tracked>);

impl Future for OldestConfirm<'_> {
    type Output = lapin::Result<Confirmation>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.front_mut() {
            Some(front) if front.outcome.is_none() => Pin::new(&mut front.confirm).poll(cx),
            _ => Poll::Pending,
        }
    }
}

/// Settles every tracked publish whose confirmation is resolved, after collecting the message
/// ids of all returned messages carried by any of them.
fn sweep(pending: &mut VecDeque<Tracked>, returned: &mut HashMap<String, u16>) {
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
        if let Some(Ok(Confirmation::Ack(Some(message)) | Confirmation::Nack(Some(message)))) =
            &tracked.outcome
        {
            // Without an id the return cannot be matched: blame the carrier, as lapin does.
            let id = match message.delivery.properties.message_id() {
                Some(id) => id.as_str().to_string(),
                None => tracked.message_id.clone(),
            };
            returned.insert(id, message.reply_code);
        }
    }
    let mut still_pending = VecDeque::with_capacity(pending.len());
    for tracked in pending.drain(..swept) {
        let Some(outcome) = tracked.outcome else {
            still_pending.push_back(tracked);
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
    still_pending.append(pending);
    *pending = still_pending;
}
