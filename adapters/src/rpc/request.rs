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
/// #[derive(Serialize, Deserialize)]
/// struct GetActiveAds { user_id: u64 }
/// #[derive(Serialize, Deserialize)]
/// struct ActiveAds { ids: Vec<u64> }
///
/// impl Message for GetActiveAds {
///     const TYPE: &'static str = "GetActiveAds";
///     const ROUTING_KEY: &'static str = "ads.active.get";
/// }
/// impl Request for GetActiveAds {
///     type Reply = ActiveAds;
///     const REPLY_TYPE: &'static str = "ActiveAds";
/// }
/// ```
pub trait Request: Message {
    /// What the server sends back.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// The reply's wire type name (the reply envelope's `className` and `type` property).
    const REPLY_TYPE: &'static str;
}
