//! The RPC reply path on the in-process broker: a pseudo direct reply-to (replies to the
//! requester's `amq.rabbitmq.reply-to.<token>` go straight to its channel, at-most-once), or
//! an exclusive queue deleted with the receiver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::{self, UnboundedReceiver};

use crate::error::Result;
use crate::inprocess::broker::{locked, InProcessBroker, Shared};
use crate::inprocess::queue::{QueueArgs, Stored};
use crate::inprocess::subscription::InProcessSubscription;
use crate::reply::{ReplyMessage, ReplyMode, ReplyReceiver, RequestSender, DIRECT_REPLY_TO};
use crate::topology::QueueKind;
use crate::transport::{Publication, Transport};

/// Publishes RPC requests to an [`InProcessBroker`]; replies go to its receiver.
#[derive(Debug)]
pub struct InProcessRequestSender {
    broker: InProcessBroker,
    reply_to: String,
}

/// Replies sent to an [`InProcessRequestSender`]'s address. Dropping it closes the address:
/// later replies are unroutable.
#[derive(Debug)]
pub struct InProcessReplyReceiver {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Direct {
        shared: Arc<Shared>,
        name: String,
        rx: UnboundedReceiver<Stored>,
    },
    Queue {
        broker: InProcessBroker,
        queue: String,
        subscription: InProcessSubscription,
    },
}

fn token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}.{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) async fn open(
    broker: &InProcessBroker,
    mode: ReplyMode,
) -> Result<(InProcessRequestSender, InProcessReplyReceiver)> {
    let (reply_to, inner) = match mode {
        ReplyMode::DirectReplyTo => {
            let name = format!("{DIRECT_REPLY_TO}.{}", token());
            let (tx, rx) = mpsc::unbounded_channel();
            let shared = Arc::clone(broker.shared());
            locked(&shared, |s, _| s.open_reply_route(name.clone(), tx));
            (name.clone(), Inner::Direct { shared, name, rx })
        }
        ReplyMode::ExclusiveQueue => {
            let queue = format!("lepus.rpc.reply.{}", token());
            locked(broker.shared(), |s, _| {
                s.declare_queue(&queue, QueueArgs::plain(QueueKind::Classic))
            })?;
            let subscription = broker.consume(&queue, 0).await?;
            (
                queue.clone(),
                Inner::Queue {
                    broker: broker.clone(),
                    queue,
                    subscription,
                },
            )
        }
    };
    Ok((
        InProcessRequestSender {
            broker: broker.clone(),
            reply_to,
        },
        InProcessReplyReceiver { inner },
    ))
}

impl RequestSender for InProcessRequestSender {
    fn reply_to(&self) -> &str {
        &self.reply_to
    }

    async fn publish(&self, publication: Publication<'_>) -> Result<()> {
        self.broker.publish(publication).await
    }
}

impl ReplyReceiver for InProcessReplyReceiver {
    async fn next(&mut self) -> Option<ReplyMessage> {
        match &mut self.inner {
            Inner::Direct { rx, .. } => {
                let m = rx.recv().await?;
                Some(ReplyMessage::new(m.body, m.properties))
            }
            Inner::Queue { subscription, .. } => {
                let d = subscription.next().await?.ok()?;
                // No-ack consumer: settled on receipt.
                if let Err(e) = d.ack().await {
                    tracing::debug!(error = %e, "settling an RPC reply failed");
                }
                let (body, properties) = d.into_message();
                Some(ReplyMessage::new(body, properties))
            }
        }
    }
}

impl Drop for InProcessReplyReceiver {
    fn drop(&mut self) {
        match &self.inner {
            Inner::Direct { shared, name, .. } => {
                locked(shared, |s, _| s.close_reply_route(name));
            }
            Inner::Queue { broker, queue, .. } => {
                locked(broker.shared(), |s, _| s.delete_queue(queue));
            }
        }
    }
}

impl crate::reply::ReplyTransport for InProcessBroker {
    type Sender = InProcessRequestSender;
    type Receiver = InProcessReplyReceiver;

    async fn reply_channel(
        &self,
        mode: ReplyMode,
    ) -> Result<(InProcessRequestSender, InProcessReplyReceiver)> {
        open(self, mode).await
    }
}
