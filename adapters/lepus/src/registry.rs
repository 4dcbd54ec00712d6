//! The handler registry (the talk's `QueueMapper`): wire type names to async handlers.
//!
//! A worker reads the envelope's `className` first (core's
//! [`decode_json_raw`](crate::core::decode_json_raw)) and looks it up here. Only a registered
//! type's payload is ever decoded, and only into that type: a message whose type is not
//! registered goes to the dead-letter queue with the reason `unknown-type`. (The talk's
//! `new $messageType()` built from the message body is exactly what this prevents.)
//!
//! ```
//! use lepus::{Context, HandlerError, Message, Registry};
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # struct SendAdExpiredMail { ad_id: u64 }
//! # impl Message for SendAdExpiredMail {
//! #     const TYPE: &'static str = "SendAdExpiredMail";
//! #     const ROUTING_KEY: &'static str = "mailer.ad.expired";
//! # }
//! let mut registry = Registry::new();
//! registry.register(|mail: SendAdExpiredMail, ctx: Context| async move {
//!     if mail.ad_id == 0 {
//!         return Err(HandlerError::rejected("ad 0 does not exist"));
//!     }
//!     tracing::info!(attempt = ctx.attempt, "mail sent");
//!     Ok(())
//! });
//! assert!(registry.contains("SendAdExpiredMail"));
//! ```

use core::fmt;
use core::future::Future;

use crate::core::envelope::Text;
use crate::core::retry::RetryMetadata;
use crate::handlers::{Context, Entry, HandlerError, HandlerTable};
use crate::message::Message;

/// Maps wire type names to async handlers (the worker's use of the crate's one handler
/// table), each with its type's default retry policy.
#[derive(Default)]
pub struct Registry {
    table: HandlerTable<(), RetryMetadata>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers `handler` for messages of type `M` (by [`Message::TYPE`]), replacing an
    /// earlier handler of the same type.
    pub fn register<M, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        M: Message,
        F: Fn(M, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let policy = M::retry_policy().into_metadata();
        self.table.insert(M::TYPE, policy, handler, Ok);
        self
    }

    /// Builder form of [`Registry::register`].
    #[must_use]
    pub fn with<M, F, Fut>(mut self, handler: F) -> Self
    where
        M: Message,
        F: Fn(M, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.register(handler);
        self
    }

    /// True when a handler is registered for `type_name`.
    pub fn contains(&self, type_name: &str) -> bool {
        self.table.get(type_name).is_some()
    }

    /// The registered type names, in no particular order.
    pub fn types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.table.types()
    }

    /// Number of registered types.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// The default retry policy of a registered type.
    pub fn retry_policy(&self, type_name: &str) -> Option<&RetryMetadata> {
        self.table.get(type_name).map(|e| &e.meta)
    }

    /// Looks up a `className` as read from an envelope.
    pub(crate) fn lookup(&self, class_name: &Text<'_>) -> Option<&Entry<(), RetryMetadata>> {
        self.table.lookup(class_name)
    }

    /// Every retry delay named by a registered type's policy, in milliseconds.
    pub(crate) fn retry_delays_ms(&self) -> impl Iterator<Item = u32> + '_ {
        self.table
            .entries()
            .filter_map(|e| e.meta.intervals.as_ref())
            .flat_map(|i| i.iter().copied())
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.table.types()).finish()
    }
}
