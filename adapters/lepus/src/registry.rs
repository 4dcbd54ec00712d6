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
use core::pin::Pin;
use std::collections::HashMap;
use std::sync::Arc;

use crate::core::envelope::Text;
use crate::core::retry::{Outcome, RetryMetadata};
use crate::message::Message;

/// Why a handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerErrorKind {
    /// May succeed later (timeout, unavailable dependency): retried per the retry policy.
    Transient,
    /// Will never succeed: dead-lettered at once with the reason `rejected`.
    Rejected,
}

/// The error a handler returns: transient (retried) or rejected (dead-lettered), with a
/// message that ends up in the `x-lepus-error` header when the message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    kind: HandlerErrorKind,
    message: String,
}

impl HandlerError {
    /// A failure that may succeed later: the message is retried per its policy.
    pub fn transient(message: impl fmt::Display) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Transient,
            message: message.to_string(),
        }
    }

    /// A permanent failure: the message is dead-lettered at once.
    pub fn rejected(message: impl fmt::Display) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Rejected,
            message: message.to_string(),
        }
    }

    /// Transient or rejected.
    pub fn kind(&self) -> HandlerErrorKind {
        self.kind
    }

    /// The handler's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The retry outcome this error stands for.
    pub fn outcome(&self) -> Outcome {
        match self.kind {
            HandlerErrorKind::Transient => Outcome::Transient,
            HandlerErrorKind::Rejected => Outcome::Rejected,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            HandlerErrorKind::Transient => write!(f, "transient failure: {}", self.message),
            HandlerErrorKind::Rejected => write!(f, "rejected: {}", self.message),
        }
    }
}

impl std::error::Error for HandlerError {}

/// What a handler knows about the delivery it handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The message id property (stays the same across retries).
    pub message_id: Option<String>,
    /// The wire type name (`className`).
    pub message_type: &'static str,
    /// Which attempt this is: `retryCount + 1` (1 on the first delivery).
    pub attempt: u32,
    /// True when the broker delivered this very message before (e.g. after a consumer died
    /// without acknowledging it): the handler may have run on it already.
    pub redelivered: bool,
    /// The routing key the message was first published with (kept across retries).
    pub routing_key: String,
    /// The queue the message was consumed from.
    pub queue: String,
    /// Correlation id of an RPC request, if any.
    pub correlation_id: Option<String>,
    /// Where an RPC reply goes (`reply_to`, else the envelope's `response_queue`), if any.
    pub reply_to: Option<String>,
}

/// The future a handler returns, boxed.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A type-erased handler: decodes the payload span into its message type and starts the
/// handler; a payload that does not decode is the serde error's text.
type ErasedHandler =
    dyn Fn(&[u8], Context) -> Result<HandlerFuture, String> + Send + Sync + 'static;

/// A registered message type.
pub(crate) struct Entry {
    pub(crate) type_name: &'static str,
    pub(crate) policy: RetryMetadata,
    handler: Arc<ErasedHandler>,
}

impl Entry {
    /// Decodes `payload` (exactly the envelope's payload bytes) and starts the handler.
    pub(crate) fn start(&self, payload: &[u8], ctx: Context) -> Result<HandlerFuture, String> {
        (self.handler)(payload, ctx)
    }
}

/// Maps wire type names to async handlers.
#[derive(Default)]
pub struct Registry {
    entries: HashMap<&'static str, Entry>,
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
        let erased = move |payload: &[u8], ctx: Context| -> Result<HandlerFuture, String> {
            let message: M = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            Ok(Box::pin(handler(message, ctx)))
        };
        self.entries.insert(
            M::TYPE,
            Entry {
                type_name: M::TYPE,
                policy: M::retry_policy().into_metadata(),
                handler: Arc::new(erased),
            },
        );
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
        self.entries.contains_key(type_name)
    }

    /// The registered type names, in no particular order.
    pub fn types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.keys().copied()
    }

    /// Number of registered types.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The default retry policy of a registered type.
    pub fn retry_policy(&self, type_name: &str) -> Option<&RetryMetadata> {
        self.entries.get(type_name).map(|e| &e.policy)
    }

    /// Looks up a `className` as read from an envelope (possibly still JSON-escaped, as PHP
    /// writes namespaced class names).
    pub(crate) fn lookup(&self, class_name: &Text<'_>) -> Option<&Entry> {
        match class_name.as_plain() {
            Some(name) => self.entries.get(name),
            None => self.entries.get(class_name.to_string().as_str()),
        }
    }

    /// Every retry delay named by a registered type's policy, in milliseconds.
    pub(crate) fn retry_delays_ms(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries
            .values()
            .filter_map(|e| e.policy.intervals.as_ref())
            .flat_map(|i| i.iter().copied())
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.entries.keys()).finish()
    }
}
