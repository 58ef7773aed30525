//! A host source running for one pool ([`Membership`]): its changes come
//! through an `mpsc` channel, and each one wakes the pool's reactor
//! through a pipe registered there as a user source, so a pool asleep in
//! its wait looks at them at once. The source itself runs on threads of
//! its own: the pool's thread only reads the pipe and the channel.

use std::any::Any;
use std::io::{self, Read, Write};
use std::sync::{mpsc, Arc};

use mio::unix::pipe;
use mio::{Interest, Token};

use super::hosts::{Guard, Source};
use crate::cluster::{Feed, HostChange, Wake};
use crate::error::{Error, Result};
use crate::reactor::Reactor;

/// The feed pipe's token among the reactor's user sources (a
/// [`PoolHandle`](crate::pool::PoolHandle) has `Token(0)` for its own
/// pipe). Every feed of a pool shares it: its readiness only ends a wait,
/// and each supply reads its own pipe every turn.
const FEED_TOKEN: Token = Token(1);

/// Wake-up bytes read per `read` call when emptying the pipe.
const DRAIN_CHUNK: usize = 64;

/// A started host source (see the module docs).
pub(crate) struct Membership {
    changes: mpsc::Receiver<HostChange>,
    woken: pipe::Receiver,
    /// The source's handle (a [`DnsSource`](crate::cluster::DnsSource), a
    /// [`SlurmLauncher`](crate::cluster::SlurmLauncher)): it lives as long
    /// as the pool, and dropping it ends the source (a launcher's steps).
    guard: Guard,
}

impl Membership {
    /// Registers a wake-up pipe in `reactor` and starts `source` with a
    /// feed that writes a byte to it after each change.
    pub(crate) fn start(source: &Source, reactor: &mut Reactor) -> Result<Membership> {
        let (wake, mut woken) = pipe::new().map_err(|e| Error::io("pipe", e))?;
        reactor.register_source(&mut woken, FEED_TOKEN, Interest::READABLE)?;
        let (tx, changes) = mpsc::channel();
        let wake: Wake = Arc::new(move || {
            // Non-blocking: a full pipe already holds a wake-up.
            let _ = (&wake).write(&[1]);
        });
        match source.start(Feed::new(tx, wake)) {
            Ok(guard) => Ok(Membership {
                changes,
                woken,
                guard,
            }),
            Err(e) => {
                let _ = reactor.deregister_source(&mut woken);
                Err(e)
            }
        }
    }

    /// Appends the changes sent since the last call, in order. The pipe is
    /// read empty first, so a change sent after this call wakes the next
    /// wait. Costs time linear in the changes (and wake-up bytes) waiting.
    pub(crate) fn take(&mut self, out: &mut Vec<HostChange>) {
        let mut buf = [0u8; DRAIN_CHUNK];
        loop {
            match (&self.woken).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: empty. Any other error: nothing to read now;
                // the channel is read anyway.
                Err(_) => break,
            }
        }
        out.extend(self.changes.try_iter());
    }

    /// The source's handle.
    pub(crate) fn source(&self) -> &dyn Any {
        &*self.guard
    }
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").finish_non_exhaustive()
    }
}
