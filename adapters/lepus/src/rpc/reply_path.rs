//! The reply path an [`super::RpcClient`] sends on now: the requester half of its current
//! reply channel, replaced when that channel is lost and reopened.
//!
//! Each opened path has a generation (1 for the first, +1 per reopening). Callers take the
//! current one with [`ReplyPath::ready`], waiting while the path is down, up to their own
//! deadline. A caller whose publish was interrupted by the loss reports it
//! ([`ReplyPath::lost`]) and waits for a generation newer than the one it used; the client's
//! reply task puts the next path in ([`ReplyPath::replace`]). Once closed (the client is gone,
//! or the transport refused to open a path for good) every wait ends with
//! [`RpcError::Closed`].

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::reply::RequestSender;

use super::error::RpcError;

struct State<S> {
    /// The open path, `None` while it is down or closed.
    sender: Option<Arc<S>>,
    /// The generation of `sender`, or of the last one while down.
    generation: u64,
    /// The address of the last path (kept while down, for display).
    reply_to: String,
    closed: bool,
}

/// The current reply path of one client.
pub(crate) struct ReplyPath<S> {
    state: watch::Sender<State<S>>,
}

impl<S: RequestSender> ReplyPath<S> {
    /// A path up with its first sender (generation 1).
    pub(crate) fn new(sender: S) -> Self {
        let reply_to = sender.reply_to().to_owned();
        ReplyPath {
            state: watch::Sender::new(State {
                sender: Some(Arc::new(sender)),
                generation: 1,
                reply_to,
                closed: false,
            }),
        }
    }

    /// The `reply_to` address of the current path (of the last one while it is down).
    pub(crate) fn reply_to(&self) -> String {
        self.state.borrow().reply_to.clone()
    }

    /// The generation of the current (or last) path: 1 + the number of reopenings.
    pub(crate) fn generation(&self) -> u64 {
        self.state.borrow().generation
    }

    /// True while a path is open.
    pub(crate) fn is_up(&self) -> bool {
        self.state.borrow().sender.is_some()
    }

    /// The open path of a generation above `newer_than` and its generation, waiting for it
    /// until `deadline` ([`RpcError::Timeout`]); [`RpcError::Closed`] once closed.
    pub(crate) async fn ready(
        &self,
        newer_than: u64,
        deadline: Instant,
    ) -> Result<(Arc<S>, u64), RpcError> {
        let mut rx = self.state.subscribe();
        let usable = |s: &State<S>| s.closed || (s.sender.is_some() && s.generation > newer_than);
        let state = match tokio::time::timeout_at(deadline, rx.wait_for(usable)).await {
            Err(_) => return Err(RpcError::Timeout),
            // The sender lives as long as `self`: cannot happen, reported as closed.
            Ok(Err(_)) => return Err(RpcError::Closed),
            Ok(Ok(state)) => state,
        };
        match (&state.sender, state.closed) {
            (Some(sender), false) => Ok((Arc::clone(sender), state.generation)),
            _ => Err(RpcError::Closed),
        }
    }

    /// The path of `generation` is lost: it goes down (unless it was already replaced).
    /// Returns true when this call took it down.
    pub(crate) fn lost(&self, generation: u64) -> bool {
        self.state.send_if_modified(|s| {
            let current = s.sender.is_some() && s.generation == generation;
            if current {
                s.sender = None;
            }
            current
        })
    }

    /// Resolves once the path of `generation` is no longer up (lost, replaced or closed).
    pub(crate) async fn wait_lost(&self, generation: u64) {
        let mut rx = self.state.subscribe();
        let _ = rx
            .wait_for(|s| s.sender.is_none() || s.generation != generation)
            .await;
    }

    /// Puts `sender` in as the next generation and returns that generation.
    pub(crate) fn replace(&self, sender: S) -> u64 {
        let reply_to = sender.reply_to().to_owned();
        let sender = Arc::new(sender);
        let mut generation = 0;
        self.state.send_modify(|s| {
            if !s.closed {
                s.generation += 1;
                s.sender = Some(sender);
                s.reply_to = reply_to;
            }
            generation = s.generation;
        });
        generation
    }

    /// No path will open any more: waits end with [`RpcError::Closed`].
    pub(crate) fn close(&self) {
        self.state.send_modify(|s| {
            s.closed = true;
            s.sender = None;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use crate::transport::Publication;
    use tokio::time::Duration;

    #[derive(Debug)]
    struct Named(&'static str);

    impl RequestSender for Named {
        fn reply_to(&self) -> &str {
            self.0
        }

        async fn publish(&self, _: Publication<'_>) -> Result<()> {
            Ok(())
        }
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn up_path_is_ready_at_once() {
        let path = ReplyPath::new(Named("a"));
        let (sender, generation) = path.ready(0, soon(10)).await.unwrap();
        assert_eq!((sender.reply_to(), generation), ("a", 1));
        assert!(path.is_up());
    }

    #[tokio::test(start_paused = true)]
    async fn down_path_times_out_at_the_deadline() {
        let path = ReplyPath::new(Named("a"));
        assert!(path.lost(1));
        assert!(!path.lost(1), "already down");
        let started = Instant::now();
        let outcome = path.ready(0, soon(500)).await;
        assert!(matches!(outcome, Err(RpcError::Timeout)), "{outcome:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert_eq!(path.reply_to(), "a", "the last address is kept while down");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_get_the_next_generation() {
        let path = Arc::new(ReplyPath::new(Named("a")));
        let waiter = {
            let path = Arc::clone(&path);
            tokio::spawn(async move { path.ready(1, soon(1_000)).await.map(|(s, g)| (s.0, g)) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A stale loss report of generation 1 after the replacement changes nothing.
        assert_eq!(path.replace(Named("b")), 2);
        assert!(!path.lost(1));
        assert_eq!(waiter.await.unwrap().unwrap(), ("b", 2));
        assert_eq!((path.reply_to(), path.generation()), ("b".to_owned(), 2));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_lost_resolves_on_loss_only() {
        let path = Arc::new(ReplyPath::new(Named("a")));
        let watch = {
            let path = Arc::clone(&path);
            tokio::spawn(async move { path.wait_lost(1).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!watch.is_finished());
        path.lost(1);
        tokio::time::timeout(Duration::from_millis(10), watch)
            .await
            .expect("resolved")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn closed_path_ends_waits_and_refuses_replacements() {
        let path = Arc::new(ReplyPath::new(Named("a")));
        path.lost(1);
        let waiter = {
            let path = Arc::clone(&path);
            tokio::spawn(async move { path.ready(1, soon(60_000)).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        path.close();
        let outcome = waiter.await.unwrap();
        assert!(matches!(outcome, Err(RpcError::Closed)), "{outcome:?}");
        path.replace(Named("b"));
        assert!(!path.is_up());
        assert!(matches!(
            path.ready(0, soon(10)).await,
            Err(RpcError::Closed)
        ));
    }
}
