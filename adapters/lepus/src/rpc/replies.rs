//! The reply task of an [`super::RpcClient`]: hands replies to their callers, times calls out
//! at their deadlines, and opens the reply path again when it is lost.
//!
//! When the reply consumer ends (channel or connection lost, broker restarted, reply queue
//! deleted), or a caller reports that its request channel is gone, the task marks the path
//! down and opens a new one with [`ReplyTransport::reply_channel`] (on RabbitMQ that waits
//! for the transport's reconnection), retrying with backoff ([`FIRST_BACKOFF`] doubling to
//! [`MAX_BACKOFF`]) while the failures are retryable. Meanwhile calls keep their slots and
//! time out at their deadlines: replies addressed to the lost path can never arrive (direct
//! reply-to is at-most-once and its address names the lost channel; an exclusive reply queue
//! is deleted with it). A refusal that is not retryable (the transport will never open a reply
//! path again) closes the client: pending and later calls fail with [`RpcError::Closed`].
//!
//! [`RpcError::Closed`]: super::RpcError::Closed

use core::future::Future;
use std::sync::Arc;

use tokio::time::{Duration, Instant};

use crate::error::Result;
use crate::reply::{ReplyMessage, ReplyMode, ReplyReceiver, ReplyTransport};
use crate::transport::{FIRST_BACKOFF, MAX_BACKOFF};

use super::correlator::Correlator;
use super::reply_path::ReplyPath;

/// Runs until the client is dropped (the task is aborted) or closed for good.
pub(crate) async fn read_replies<T: ReplyTransport + 'static>(
    transport: Arc<T>,
    mode: ReplyMode,
    receiver: T::Receiver,
    correlator: Arc<Correlator>,
    path: Arc<ReplyPath<T::Sender>>,
) {
    let mut receiver = Some(receiver);
    let mut generation = path.generation();
    let mut reopening = None;
    let mut pause = Duration::ZERO;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if receiver.is_none() && reopening.is_none() {
            reopening = Some(Box::pin(reopen(Arc::clone(&transport), mode, pause)));
        }
        let live = receiver.is_some();
        let next = correlator.next_deadline();
        tokio::select! {
            biased;
            reply = next_reply(&mut receiver) => match reply {
                Some(reply) => correlator.complete(reply),
                None => {
                    // Logged as a loss by the transport; here only what happens next.
                    tracing::info!(generation, "RPC reply consumer ended; opening a new reply path");
                    path.lost(generation);
                    receiver = None;
                    pause = Duration::ZERO;
                }
            },
            () = path.wait_lost(generation), if live => {
                tracing::warn!(generation, "RPC request channel lost; opening a new reply path");
                receiver = None;
                pause = Duration::ZERO;
            }
            opened = finish(&mut reopening) => {
                reopening = None;
                match opened {
                    Ok((sender, rx)) => {
                        generation = path.replace(sender);
                        receiver = Some(rx);
                        backoff = FIRST_BACKOFF;
                        tracing::info!(generation, reply_to = %path.reply_to(), "RPC reply path open again");
                    }
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, ?backoff, "opening the RPC reply path failed; retrying");
                        pause = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Err(e) if e.kind() == crate::error::ErrorKind::Closed => {
                        // The transport was closed by its owner: an end, not a failure.
                        tracing::debug!(error = %e, "transport closed; RPC client closed");
                        path.close();
                        correlator.close();
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the RPC reply path cannot be opened again; client closed");
                        path.close();
                        correlator.close();
                        return;
                    }
                }
            }
            () = sleep_until(next) => correlator.expire_due(),
            () = correlator.wake.notified() => {}
        }
    }
}

/// Opens a reply channel after `pause`.
async fn reopen<T: ReplyTransport>(
    transport: Arc<T>,
    mode: ReplyMode,
    pause: Duration,
) -> Result<(T::Sender, T::Receiver)> {
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    transport.reply_channel(mode).await
}

/// The next reply of the live receiver; never resolves without one.
async fn next_reply<Rx: ReplyReceiver>(receiver: &mut Option<Rx>) -> Option<ReplyMessage> {
    match receiver {
        Some(rx) => rx.next().await,
        None => core::future::pending().await,
    }
}

/// The outcome of the reopening in progress; never resolves without one. Cancel-safe: the
/// reopening stays in `slot` when this is dropped.
async fn finish<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(f) => f.await,
        None => core::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => core::future::pending().await,
    }
}
