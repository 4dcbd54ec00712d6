//! Running a handler's future so that a panic becomes an error instead of ending the task.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::panic::AssertUnwindSafe;

/// Polls a boxed future, turning a panic while polling into the panic's message
/// (`Err(message)`); the worker and the RPC server keep serving.
pub(crate) struct CatchUnwind<T>(pub(crate) Pin<Box<dyn Future<Output = T> + Send>>);

impl<T> Future for CatchUnwind<T> {
    type Output = Result<T, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => Poll::Ready(Err(panic_message(panic.as_ref()))),
        }
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message() {
        let ok: CatchUnwind<u8> = CatchUnwind(Box::pin(async { 7 }));
        assert_eq!(ok.await, Ok(7));
        let boom: CatchUnwind<u8> = CatchUnwind(Box::pin(async { panic!("boom {}", 1) }));
        assert_eq!(boom.await, Err("boom 1".to_owned()));
    }
}
