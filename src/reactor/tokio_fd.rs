//! Feature `tokio`: the reactor inside tokio's `AsyncFd`, registered here so
//! that an embedding needs no `unsafe` of its own.

use tokio::io::unix::{AsyncFd, AsyncFdRegisterError};
use tokio::io::Interest;

use super::Reactor;

impl Reactor {
    /// This reactor inside tokio's [`AsyncFd`] with read interest: await
    /// `readable_mut()`, take the non-blocking step (`wait_any(Some(ZERO))`
    /// and the `try_recv`s), and clear readiness only after a step that
    /// found nothing (the Embedding rules of the crate docs). Must be called
    /// inside a tokio runtime with I/O enabled; on failure the reactor comes
    /// back in the error (`into_parts`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use miniray::Reactor;
    ///
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let mut reactor = Reactor::new()?;
    ///     let w = reactor.spawn(|n: u64| n + 1)?;
    ///     reactor.send(w, &41u64)?;
    ///     let mut fd = reactor.into_async_fd().map_err(|e| e.into_parts().1)?;
    ///     let reply = 'outer: loop {
    ///         let mut ready = fd.readable_mut().await?;
    ///         let reactor = ready.get_inner_mut();
    ///         for w in reactor.wait_any(Some(Duration::ZERO))? {
    ///             if let Some(n) = reactor.try_recv::<u64>(w)? {
    ///                 break 'outer n;
    ///             }
    ///         }
    ///         ready.clear_ready();
    ///     };
    ///     assert_eq!(reply, 42);
    ///     Ok(())
    /// }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    // The error is large because it hands the reactor back, as tokio's own
    // `register` does; failing is rare (no runtime), so no box.
    #[allow(clippy::result_large_err)]
    pub fn into_async_fd(self) -> Result<AsyncFd<Reactor>, AsyncFdRegisterError<Reactor>> {
        // SAFETY: `as_raw_fd` is the reactor's epoll descriptor, opened in
        // `Reactor::new`, never replaced and closed only when the reactor
        // drops; the `AsyncFd` owns the reactor, so the descriptor stays open
        // and the same until the `AsyncFd` deregisters it (drop or
        // `into_inner`).
        unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) }
    }
}
