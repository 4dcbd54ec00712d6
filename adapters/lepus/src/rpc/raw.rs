//! Calls by name: a request whose type is known only at run time (the `lepus call` command,
//! a gateway), its payload already JSON, its reply any JSON.
//!
//! The same client, table of pending calls, wire format and reply decoding as typed calls:
//! only the request's encoding differs (the payload bytes are copied verbatim into the
//! envelope, no retry metadata). A remote error, a timeout or an unroutable request is the
//! same [`RpcError`] a typed call returns.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, NameKind, NameProblem};
use crate::message::Message;
use crate::reply::ReplyTransport;

use super::client::{deadline_after, RpcClient};
use super::error::RpcError;
use super::pending::PendingReply;
use super::request::Request;
use super::wire::encode_raw_request;

/// Never constructed: gives a call by name its reply type (any JSON) in [`PendingReply`].
/// Its names are never sent: the request's type and routing key come from the caller.
#[derive(Serialize, Deserialize)]
enum ByName {}

impl Message for ByName {
    const TYPE: &'static str = "(by name)";
    const ROUTING_KEY: &'static str = "";
}

impl Request for ByName {
    type Reply = serde_json::Value;
    const REPLY_TYPE: &'static str = "(any)";
}

/// A call by name that was published; await it for the reply's payload as JSON. Dropping it
/// cancels the call, as for [`PendingReply`].
#[must_use = "a pending reply does nothing unless awaited; dropping it cancels the call"]
pub struct PendingJsonReply {
    inner: PendingReply<ByName>,
    type_name: String,
}

impl core::fmt::Debug for PendingJsonReply {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PendingJsonReply")
            .field("type", &self.type_name)
            .field("correlation_id", &self.correlation_id())
            .field("deadline", &self.deadline())
            .finish()
    }
}

impl PendingJsonReply {
    /// The request's correlation id, as sent.
    pub fn correlation_id(&self) -> String {
        self.inner.correlation_id()
    }

    /// When the call times out.
    pub fn deadline(&self) -> Instant {
        self.inner.deadline()
    }
}

impl Future for PendingJsonReply {
    type Output = Result<serde_json::Value, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

impl<T: ReplyTransport> RpcClient<T> {
    /// Sends a request of type `type_name` (the envelope's `className` and the `type`
    /// property) with `routing_key` and the JSON `payload_json`, and awaits the reply's
    /// payload for at most `timeout` (at most a year).
    ///
    /// # Errors
    /// As [`RpcClient::call`]; [`RpcError::Transport`] with [`ErrorKind::Encode`] when the
    /// payload is not JSON, or an invalid-name error when `type_name` is empty (nothing is
    /// sent).
    pub async fn call_json(
        &self,
        type_name: &str,
        routing_key: &str,
        payload_json: &[u8],
        timeout: Duration,
    ) -> Result<serde_json::Value, RpcError> {
        self.start_json(type_name, routing_key, payload_json, timeout)
            .await?
            .await
    }

    /// As [`RpcClient::call_json`], returning once the broker confirmed the request: the
    /// [`PendingJsonReply`] gives the correlation id and resolves to the reply.
    ///
    /// # Errors
    /// As [`RpcClient::start`], and the payload and name errors of [`RpcClient::call_json`].
    pub async fn start_json(
        &self,
        type_name: &str,
        routing_key: &str,
        payload_json: &[u8],
        timeout: Duration,
    ) -> Result<PendingJsonReply, RpcError> {
        if type_name.is_empty() {
            return Err(Error::invalid_name(NameKind::Property("type"), NameProblem::Empty).into());
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(payload_json) {
            return Err(Error::new(ErrorKind::Encode)
                .context(format!("the {type_name} payload is not JSON: {e}"))
                .into());
        }
        let inner = self
            .start_encoded::<ByName>(routing_key, deadline_after(timeout), |id, reply_to| {
                encode_raw_request(type_name, payload_json, id, reply_to)
            })
            .await?;
        Ok(PendingJsonReply {
            inner,
            type_name: type_name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::core::envelope::decode_json_raw;
    use crate::rpc::{RemoteErrorKind, RpcServer, RpcServerConfig, RpcServerHandle};
    use crate::{HandlerError, InProcessBroker, QueueSpec, Transport};

    #[derive(Serialize, Deserialize)]
    struct GetAds {
        user: u64,
    }
    impl Message for GetAds {
        const TYPE: &'static str = "GetAds";
        const ROUTING_KEY: &'static str = "ads.get";
    }
    impl Request for GetAds {
        type Reply = Vec<u64>;
        const REPLY_TYPE: &'static str = "Ads";
    }

    async fn server(t: &Arc<InProcessBroker>) -> RpcServerHandle {
        RpcServer::new(
            Arc::clone(t),
            RpcServerConfig::new("ads", "site").bind("ads.#"),
        )
        .with(|r: GetAds, _| async move {
            if r.user == 0 {
                return Err(HandlerError::rejected("no user 0"));
            }
            Ok(vec![r.user, 1, 2])
        })
        .start()
        .await
        .expect("server starts")
    }

    #[tokio::test]
    async fn a_call_by_name_reaches_a_typed_handler() {
        let t = Arc::new(InProcessBroker::new());
        let handle = server(&t).await;
        let client = RpcClient::new(Arc::clone(&t), "site")
            .await
            .expect("client");
        let second = Duration::from_secs(5);

        let reply = client
            .call_json("GetAds", "ads.get", br#" {"user": 7} "#, second)
            .await;
        assert_eq!(reply.ok(), Some(json!([7, 1, 2])));
        // A timeout beyond the clock's range is cut, not a panic.
        let reply = client
            .call_json("GetAds", "ads.get", br#"{"user": 1}"#, Duration::MAX)
            .await;
        assert_eq!(reply.ok(), Some(json!([1, 1, 2])));

        let pending = client
            .start_json("GetAds", "ads.get", br#"{"user": 0}"#, second)
            .await
            .expect("sent");
        assert_eq!(pending.correlation_id().len(), 32);
        match pending.await {
            Err(RpcError::Remote { kind, message }) => {
                assert_eq!(kind, RemoteErrorKind::Rejected);
                assert_eq!(message, "no user 0");
            }
            other => panic!("expected a remote error, got {other:?}"),
        }

        let unknown = client.call_json("Nope", "ads.get", b"{}", second).await;
        assert_eq!(
            unknown.err().and_then(|e| e.remote().map(|(k, _)| k)),
            Some(RemoteErrorKind::UnknownType)
        );
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn invalid_input_and_unroutable_requests_are_not_pending() {
        let t = Arc::new(InProcessBroker::new());
        t.declare_exchange("site").await.expect("exchange");
        let client = RpcClient::new(Arc::clone(&t), "site")
            .await
            .expect("client");
        let second = Duration::from_secs(5);
        for (type_name, payload) in [("GetAds", &b"{user: 7}"[..]), ("", b"{}")] {
            match client
                .call_json(type_name, "ads.get", payload, second)
                .await
            {
                Err(RpcError::Transport(e)) => assert!(e.is_invalid_input(), "{e}"),
                other => panic!("{type_name:?}: expected invalid input, got {other:?}"),
            }
        }
        match client.call_json("GetAds", "ads.get", b"{}", second).await {
            Err(RpcError::Transport(e)) => assert!(e.is_unroutable(), "{e}"),
            other => panic!("expected unroutable, got {other:?}"),
        }
        assert_eq!(client.counters().in_flight, 0);
    }

    #[tokio::test]
    async fn the_request_is_an_envelope_with_the_payload_verbatim() {
        let t = Arc::new(InProcessBroker::new());
        t.declare_exchange("site").await.expect("exchange");
        t.declare_queue(&QueueSpec::new("ads", "site").bind("ads.#"))
            .await
            .expect("queue");
        let client = RpcClient::new(Arc::clone(&t), "site")
            .await
            .expect("client");
        let pending = client
            .start_json(
                "GetAds",
                "ads.get",
                br#"{"user" : 7}"#,
                Duration::from_secs(5),
            )
            .await
            .expect("sent");
        let mut sub = t.consume("ads", 1).await.expect("consume");
        let d = sub.next().await.expect("open").expect("delivery");
        let cid = pending.correlation_id();
        assert_eq!(d.properties().message_type.as_deref(), Some("GetAds"));
        assert_eq!(d.properties().correlation_id.as_deref(), Some(cid.as_str()));
        assert_eq!(
            d.properties().reply_to.as_deref(),
            Some(client.reply_to().as_str())
        );
        let raw = decode_json_raw(&d.body).expect("an envelope");
        assert_eq!(raw.payload, br#"{"user" : 7}"#);
        assert_eq!(raw.metadata.class_name.to_string(), "GetAds");
        assert_eq!(
            raw.metadata.correlation_id.map(|c| c.to_string()),
            Some(cid)
        );
    }
}
