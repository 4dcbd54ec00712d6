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
use std::collections::HashMap;

use crate::core::envelope::Text;
use crate::core::retry::RetryMetadata;
use crate::error::Result;
use crate::handlers::{Context, Entry, HandlerError, HandlerTable, RawPayload};
use crate::limits::Limits;
use crate::message::Message;

/// Maps wire type names to async handlers (the worker's use of the crate's one handler
/// table), each with its type's default retry policy and its [`Limits`].
#[derive(Default)]
pub struct Registry {
    table: HandlerTable<(), RetryMetadata>,
    /// Limits by type name: [`Message::limits`] when registered, or [`Registry::limit`].
    limits: HashMap<&'static str, Limits>,
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
        let declared = M::limits();
        if !declared.is_unlimited() {
            self.limits.entry(M::TYPE).or_insert(declared);
        }
        self
    }

    /// Registers `handler` for messages of type `M` (by [`Message::TYPE`]) given their
    /// payload undecoded, as the JSON text it arrived in ([`RawPayload`]), replacing an earlier
    /// handler of the same type. For handlers that forward the payload, decode it with
    /// something other than serde, or read only part of it: a large payload is then never
    /// decoded into a value. Everything else is as for [`Registry::register`]: the envelope
    /// is read and checked, `M`'s retry policy and limits apply.
    ///
    /// ```
    /// # use lepus::{Message, RawPayload, Registry};
    /// # #[derive(serde::Serialize, serde::Deserialize, Message)]
    /// # #[lepus(routing_key = "archive.store")]
    /// # struct StoreDocument { body: String }
    /// let mut registry = Registry::new();
    /// registry.register_raw::<StoreDocument, _, _>(|payload: RawPayload, _ctx| async move {
    ///     let json: &[u8] = payload.as_bytes(); // e.g. written to object storage as it is
    ///     assert!(json.starts_with(b"{"));
    ///     Ok(())
    /// });
    /// assert!(registry.contains("StoreDocument"));
    /// ```
    pub fn register_raw<M, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        M: Message,
        F: Fn(RawPayload, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let policy = M::retry_policy().into_metadata();
        self.table.insert_raw(M::TYPE, policy, handler);
        let declared = M::limits();
        if !declared.is_unlimited() {
            self.limits.entry(M::TYPE).or_insert(declared);
        }
        self
    }

    /// Sets the limits of type `M` on this registry's worker, replacing what the type declares
    /// ([`Message::limits`], `#[lepus(rate = "10/s", concurrency = 2)]`), before or after
    /// [`Registry::register`]. `Limits::new()` lifts every limit.
    ///
    /// ```
    /// # use lepus::{Limits, Message, Registry};
    /// # #[derive(serde::Serialize, serde::Deserialize, Message)]
    /// # #[lepus(routing_key = "mailer.send")]
    /// # struct SendMail { to: String }
    /// let mut registry = Registry::new();
    /// registry.register(|_mail: SendMail, _ctx| async { Ok(()) });
    /// registry.limit::<SendMail>(Limits::new().per_second(10).concurrency(2))?;
    /// assert_eq!(registry.limits("SendMail").concurrency, Some(2));
    /// # Ok::<(), lepus::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) for a rate, burst or
    /// concurrency of 0; nothing is changed then.
    pub fn limit<M: Message>(&mut self, limits: Limits) -> Result<&mut Self> {
        limits.validate()?;
        self.limits.insert(M::TYPE, limits);
        Ok(self)
    }

    /// The limits of `type_name` (no limits when none were declared or set).
    pub fn limits(&self, type_name: &str) -> Limits {
        self.limits.get(type_name).copied().unwrap_or_default()
    }

    /// Checks every type's limits (a type's declared [`Message::limits`] are checked only
    /// here, when its worker starts).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig), naming the type.
    pub fn validate(&self) -> Result<()> {
        for (type_name, limits) in &self.limits {
            limits
                .validate()
                .map_err(|e| e.context(format!("limits of {type_name}")))?;
        }
        Ok(())
    }

    /// Every type with limits.
    pub(crate) fn limited(&self) -> impl Iterator<Item = (&'static str, Limits)> + '_ {
        self.limits
            .iter()
            .filter(|(_, l)| !l.is_unlimited())
            .map(|(t, l)| (*t, *l))
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

    /// Builder form of [`Registry::register_raw`].
    #[must_use]
    pub fn with_raw<M, F, Fut>(mut self, handler: F) -> Self
    where
        M: Message,
        F: Fn(RawPayload, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.register_raw::<M, F, Fut>(handler);
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
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.table.types()).finish()
    }
}
