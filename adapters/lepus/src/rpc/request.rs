//! Typed requests and their typed replies.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::message::Message;

/// A request: a [`Message`] that expects a reply of type [`Request::Reply`].
///
/// ```
/// use lepus::{Message, rpc::Request};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Message, Request)]
/// #[lepus(routing_key = "ads.active.get", reply = ActiveAds)]
/// struct GetActiveAds { user_id: u64 }
///
/// #[derive(Serialize, Deserialize)]
/// struct ActiveAds { ids: Vec<u64> }
///
/// // What the derives wrote: the names default to the types' names.
/// assert_eq!(GetActiveAds::TYPE, "GetActiveAds");
/// assert_eq!(GetActiveAds::REPLY_TYPE, "ActiveAds");
/// ```
///
/// By hand, the same is `impl Message for GetActiveAds { const TYPE ...; const ROUTING_KEY
/// ...; }` and `impl Request for GetActiveAds { type Reply = ActiveAds; const REPLY_TYPE:
/// &'static str = "ActiveAds"; }`.
pub trait Request: Message {
    /// What the server sends back.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// The reply's wire type name (the reply envelope's `className` and `type` property).
    const REPLY_TYPE: &'static str;
}
