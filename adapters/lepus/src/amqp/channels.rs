//! The channels opened on one connection, so that closing the connection closes them first.
//!
//! lapin closes a dropped [`Channel`] on its own: the drop queues a `channel.close` that its
//! I/O loop runs in a task of its own, later. If `connection.close` starts meanwhile, lapin
//! marks every channel as closing, the queued `channel.close` then fails on that state
//! ("invalid channel state: Closing (channel.close)"), and lapin treats the failure as an
//! error of the whole connection: the `connection.close` in progress fails with it, or, when
//! the error lands before the `close` frame was written, never completes at all. A worker
//! drops its consumer's channel right before its program closes the transport, so this race
//! was run on every graceful exit.
//!
//! Every channel of a session is opened here and owned through an [`Arc`]: before the
//! connection is closed, [`OpenChannels::close_all`] closes the channels still owned (and
//! waits for their `close-ok`) and waits for the channels whose owners dropped them to finish
//! closing. Only then is `connection.close` sent, with no channel close left in flight.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use lapin::{Channel, ChannelStatus, Connection};

use crate::error::{Error, Result};

/// How often [`OpenChannels::close_all`] looks at the channels whose owners dropped them.
const SETTLE_POLL: Duration = Duration::from_millis(2);

/// One channel opened here.
#[derive(Debug)]
struct Opened {
    status: ChannelStatus,
    owner: Weak<Channel>,
}

impl Opened {
    /// Neither open nor closing: nothing of it is left in flight.
    fn is_settled(&self) -> bool {
        !self.status.connected() && !self.status.closing() && !self.status.initializing()
    }
}

/// The channels of one connection; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct OpenChannels {
    opened: Mutex<Vec<Opened>>,
}

impl OpenChannels {
    /// Opens a channel on `connection` and keeps track of it. `what` names its use in errors.
    pub(crate) async fn open(&self, connection: &Connection, what: &str) -> Result<Arc<Channel>> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| Error::from_lapin(e).context(format!("open a channel to {what}")))?;
        let channel = Arc::new(channel);
        let mut opened = lock(&self.opened);
        // Forget channels that are gone for good, so a long-lived connection keeps a short list.
        opened.retain(|o| o.owner.strong_count() > 0 || !o.is_settled());
        opened.push(Opened {
            status: channel.status().clone(),
            owner: Arc::downgrade(&channel),
        });
        Ok(channel)
    }

    /// Closes every channel still owned (code 200) and waits for the dropped ones to finish
    /// closing, up to `limit` in all. Never fails: what is left when `limit` passes goes with
    /// the connection.
    pub(crate) async fn close_all(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let opened: Vec<Opened> = std::mem::take(&mut *lock(&self.opened));
        for o in &opened {
            let Some(channel) = o.owner.upgrade() else {
                continue;
            };
            if !channel.status().connected() {
                continue;
            }
            let close = channel.close(200, "closing the connection".into());
            match tokio::time::timeout_at(deadline, close).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "closing a channel failed"),
                Err(_) => return,
            }
        }
        while opened.iter().any(|o| !o.is_settled()) {
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!("channels still closing when the connection closes");
                return;
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
