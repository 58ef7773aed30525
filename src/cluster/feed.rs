//! The seam between host sources and their consumer: [`HostChange`]s sent
//! through a [`Feed`], which wakes the consumer after each one.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};

/// A change in the set of hosts that serve.
///
/// A source sends `Add` once for an address it learns and `Drain` once when
/// the address leaves; it never drains an address it did not add, and adds
/// it again only after draining it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostChange {
    /// A host that serves at this address: connect to it.
    Add(SocketAddr),
    /// A host leaving: give it no new tasks, let the tries it has in flight
    /// finish, then close its connections and stop reconnecting to it.
    Drain(SocketAddr),
}

impl HostChange {
    /// The host's address.
    pub fn addr(&self) -> SocketAddr {
        match *self {
            HostChange::Add(a) | HostChange::Drain(a) => a,
        }
    }
}

impl fmt::Display for HostChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostChange::Add(a) => write!(f, "add {a}"),
            HostChange::Drain(a) => write!(f, "drain {a}"),
        }
    }
}

/// What a [`Feed`] calls after each change it delivers, so a consumer
/// that sleeps in its own wait (a reactor's `epoll_wait`) looks at its
/// receiver: typically a write to an eventfd or a `mio::Waker`.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Where a host source sends its changes: an `mpsc` sender and a wake-up.
///
/// Cheap to clone, `Send + Sync`, so each source keeps its own copy on its
/// own thread. [`Feed::send`] returns `false` once the receiver is gone,
/// and a source stops then.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::Sender<HostChange>,
    wake: Wake,
}

impl Feed {
    /// A feed into `tx` that calls `wake` after each change delivered.
    pub fn new(tx: mpsc::Sender<HostChange>, wake: Wake) -> Self {
        Feed { tx, wake }
    }

    /// A feed and its receiver, for a consumer that blocks on the receiver
    /// itself (`recv_timeout`): the wake-up does nothing.
    pub fn channel() -> (Feed, mpsc::Receiver<HostChange>) {
        let (tx, rx) = mpsc::channel();
        (Feed::new(tx, Arc::new(|| {})), rx)
    }

    /// Delivers `change` and wakes the consumer; `false` (nothing called)
    /// once the receiver has been dropped.
    pub fn send(&self, change: HostChange) -> bool {
        if self.tx.send(change).is_err() {
            return false;
        }
        (self.wake)();
        true
    }
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn send_wakes_after_delivery_and_fails_once_the_receiver_is_gone() {
        let (tx, rx) = mpsc::channel();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let feed = Feed::new(
            tx,
            Arc::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let a: SocketAddr = "10.1.2.3:7000".parse().expect("addr");
        assert!(feed.clone().send(HostChange::Add(a)));
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert_eq!(rx.try_recv().ok(), Some(HostChange::Add(a)));
        drop(rx);
        assert!(!feed.send(HostChange::Drain(a)));
        assert_eq!(
            woken.load(Ordering::SeqCst),
            1,
            "no wake-up for a change never delivered"
        );
        assert_eq!(HostChange::Drain(a).to_string(), "drain 10.1.2.3:7000");
    }

    #[test]
    fn a_feed_is_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Feed>();
    }
}
