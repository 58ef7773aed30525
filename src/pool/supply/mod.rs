//! Where a pool's workers come from: one seam for every kind of supply.
//! A [`Local`] supply forks closure workers or execs a program; a
//! [`HostsSupply`] keeps connections to `serve` hosts, fixed or fed by a
//! host source while the pool runs. A pool holds one or
//! more (a mixed pool holds several), asks each every turn to start what it
//! wants, tells it when one of its workers answered or ended, and never
//! branches on which kind it is.

mod hosts;
mod local;
mod membership;
mod remote;

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Instant;

pub use hosts::{HostState, HostStatus, Hosts, Protocol};
pub(crate) use local::{Local, Spawner as LocalSpawner};
pub(crate) use remote::HostsSupply;

use crate::process::ChildKind;
use crate::reactor::Reactor;
use crate::task::calls::{Proto, Stop};
use crate::worker::Worker;

/// A worker a supply just started.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) worker: Worker,
    /// How it is spoken to first.
    pub(crate) proto: Proto,
    /// Its host (a remote worker).
    pub(crate) host: Option<usize>,
    /// What it runs (`None`: a remote worker).
    pub(crate) kind: Option<ChildKind>,
}

/// How one of a supply's workers ended.
#[derive(Debug)]
pub(crate) struct End {
    pub(crate) worker: Worker,
    pub(crate) host: Option<usize>,
    pub(crate) status: Option<ExitStatus>,
    pub(crate) answers: u64,
    /// Why the pool stopped it, if it did.
    pub(crate) stopped: Option<Stop>,
    /// It closed without answering its hello: a plain peer.
    pub(crate) hello_unanswered: bool,
    /// The pool closed it on purpose (recycling, closing): no failure.
    pub(crate) on_purpose: bool,
    /// The error that broke its connection (an authentication failure).
    pub(crate) broke: Option<crate::error::Error>,
}

/// Whether a supply can still give the pool workers.
#[derive(Debug)]
pub(crate) enum Outlook {
    /// It has workers, or is starting some.
    Working,
    /// It has none and can start none now; the reason, for the tasks that
    /// then fail with `NoWorkers`.
    GaveUp(String),
}

/// One source of workers (see the module docs).
pub(crate) trait Supply: fmt::Debug {
    /// Starts what is wanted now (spawns up to its size, finishes and
    /// starts connects to due hosts), pushing each worker it made.
    fn top_up(&mut self, reactor: &mut Reactor, now: Instant, started: &mut Vec<Started>);

    /// One of its workers ended.
    fn ended(&mut self, end: &End, now: Instant);

    /// One of its workers answered a call: it, and its host, work.
    fn answered(&mut self, host: Option<usize>);

    /// A call on one of its workers hit its deadline.
    fn deadline_hit(&mut self, host: Option<usize>);

    /// Whether a worker on `host` may take another call now (a host under
    /// suspicion takes one probing call at a time).
    fn may_take(&self, host: Option<usize>) -> bool;

    /// A call was sent to a worker on `host`.
    fn dispatched(&mut self, host: Option<usize>);

    /// Whether workers on `host` are leaving (a drained host): they take no
    /// more calls and are closed once idle.
    fn retiring(&self, host: Option<usize>) -> bool {
        let _ = host;
        false
    }

    /// When a turn must look at this supply again (connects under way,
    /// a host due for another try), if no event of its workers comes first.
    fn wake_at(&self, now: Instant) -> Option<Instant>;

    /// Whether it can still give workers, at `now`.
    fn outlook(&mut self, now: Instant) -> Outlook;

    /// Starts nothing more (the pool is closing).
    fn stop(&mut self);

    /// Whether workers are being started that a turn cannot see yet
    /// (connects under way).
    fn starting(&self) -> bool {
        false
    }

    /// A worker on `host` settled how it speaks: its hello was answered
    /// (a round trip: the host works), or its program announced frames.
    fn spoke(&mut self, host: Option<usize>, framed: bool) {
        let _ = framed;
        self.answered(host);
    }

    /// A host's address (remote supplies).
    fn host_addr(&self, host: usize) -> Option<SocketAddr> {
        let _ = host;
        None
    }

    /// Its hosts as they stand (remote supplies).
    fn host_statuses(&self) -> Vec<HostStatus> {
        Vec::new()
    }

    /// How many hosts take calls now (remote supplies); 0 for a local one.
    fn hosts(&self) -> usize {
        0
    }

    /// Whether its workers are local processes (which regions can reach).
    fn is_local(&self) -> bool {
        false
    }

    /// The handle of the host source it runs (a launcher, a DNS source).
    fn host_source(&self) -> Option<&dyn Any> {
        None
    }
}
