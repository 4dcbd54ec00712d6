//! Scatter-gather: several requests, of different types, under one deadline.

use core::future::Future;
use core::pin::Pin;
use core::task::Poll;

use tokio::time::Instant;

use crate::reply::ReplyTransport;

use super::client::RpcClient;
use super::error::RpcError;
use super::request::Request;

/// A tuple of request references, `(&A, &B, ...)` (1 to 8 of any [`Request`] types), that
/// [`RpcClient::gather`] sends at once and whose replies it awaits under one deadline. The
/// output is the tuple of each request's own result.
pub trait GatherSet {
    /// `(Result<A::Reply, RpcError>, Result<B::Reply, RpcError>, ...)`.
    type Output;

    /// Publishes every request concurrently and awaits every reply until `deadline`.
    fn gather<T: ReplyTransport>(
        self,
        client: &RpcClient<T>,
        deadline: Instant,
    ) -> impl Future<Output = Self::Output> + Send;
}

macro_rules! gather_tuple {
    ($($R:ident $r:ident),+) => {
        impl<$($R: Request),+> GatherSet for ($(&$R,)+) {
            type Output = ($(Result<$R::Reply, RpcError>,)+);

            fn gather<T: ReplyTransport>(
                self,
                client: &RpcClient<T>,
                deadline: Instant,
            ) -> impl Future<Output = Self::Output> + Send {
                let ($($r,)+) = self;
                async move { tokio::join!($(client.call_until($r, deadline)),+) }
            }
        }
    };
}

gather_tuple!(A a);
gather_tuple!(A a, B b);
gather_tuple!(A a, B b, C c);
gather_tuple!(A a, B b, C c, D d);
gather_tuple!(A a, B b, C c, D d, E e);
gather_tuple!(A a, B b, C c, D d, E e, F f);
gather_tuple!(A a, B b, C c, D d, E e, F f, G g);
gather_tuple!(A a, B b, C c, D d, E e, F f, G g, H h);

/// Runs every future to completion concurrently, outputs in order. For tens of futures (it
/// polls all of them on each wake).
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    core::future::poll_fn(|cx| {
        let mut all = true;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => all = false,
                }
            }
        }
        if all {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
