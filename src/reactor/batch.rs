//! [`Batch`]: sends that queue instead of writing through, written together
//! when the batch ends.

use std::ops::{Deref, DerefMut};

use super::Reactor;

/// The reactor with its sends held back: made by [`Reactor::batch`], used
/// as the reactor itself (it derefs to it). While it lives,
/// [`Reactor::send`] queues instead of writing through (only a buffer past
/// 64 KiB is written at once); when it drops, everything queued is written,
/// one `send(2)` per worker instead of one per message.
///
/// For many small messages at once (a pipelined loop that answers each
/// reply with a new request): a write per message costs a system call and
/// wakes the worker once per message; a batch costs one of each per worker.
/// Nothing is held past the batch, so the write-through guarantee is back
/// as soon as it drops.
///
/// ```
/// use std::time::Duration;
/// use miniray::Reactor;
///
/// # fn main() -> miniray::Result<()> {
/// let mut reactor = Reactor::new()?;
/// let w = reactor.spawn(|n: u64| n * 2)?;
/// {
///     let mut batch = reactor.batch();
///     for n in 0..100u64 {
///         batch.send(w, &n)?; // queued
///     }
///     assert!(batch.pending_output(w)? > 0);
/// } // written here, in one send(2)
/// assert_eq!(reactor.pending_output(w)?, 0);
/// for n in 0..100u64 {
///     assert_eq!(reactor.recv::<u64>(w, Some(Duration::from_secs(10)))?, n * 2);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Batch<'r> {
    reactor: &'r mut Reactor,
}

impl Reactor {
    /// Holds sends back until the returned [`Batch`] drops; see there.
    pub fn batch(&mut self) -> Batch<'_> {
        self.batching = true;
        Batch { reactor: self }
    }
}

impl Deref for Batch<'_> {
    type Target = Reactor;
    fn deref(&self) -> &Reactor {
        self.reactor
    }
}

impl DerefMut for Batch<'_> {
    fn deref_mut(&mut self) -> &mut Reactor {
        self.reactor
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.reactor.batching = false;
        self.reactor.flush();
    }
}
