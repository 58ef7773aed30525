//! One worker's place in the worker set: the calls it has in flight, in
//! send order, how it is spoken to, whether the calls layer stopped it, and
//! its owner's state beside.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::process::ChildKind;
use crate::worker::Worker;

/// A call's id, chosen by the caller: unique among the calls in flight.
pub(crate) type CallId = u64;

/// How a worker is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    /// Plain lines, answered in order.
    Plain,
    /// Plain lines until the program announces frames with an accept line
    /// (an exec worker started with `MINIRAY_FRAMES=1`).
    Announce,
    /// A hello was sent; nothing else is sent until it is answered.
    Hello,
    /// Frames.
    Framed,
}

/// Why this layer ended a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A call's deadline passed.
    Deadline,
    /// It lost step, or broke the protocol.
    OutOfSync,
    /// Its owner closed it (a recycled worker).
    Owner,
    /// Its owner gave up on a call it ran.
    Cancelled,
    /// Its process exited though a descendant holds its socket.
    Exited,
    /// Its connection failed.
    Broken,
}

/// One call in flight.
#[derive(Debug)]
pub(super) struct Call {
    pub(super) id: CallId,
    /// Items of a chunk; 0 for a single request.
    pub(super) items: u32,
    /// Sent as a frame (answered by id), or plain (answered in order).
    pub(super) framed: bool,
    pub(super) at: Option<Instant>,
    pub(super) timeout: Option<Duration>,
}

/// A worker's place: its calls in flight and the owner's state beside.
#[derive(Debug)]
pub(crate) struct Slot<S> {
    pub(super) calls: VecDeque<Call>,
    pub(super) proto: Proto,
    pub(super) answers: u64,
    pub(super) stopped: Option<Stop>,
    /// A local worker's pid: a plain answer is taken once it waits for
    /// input again (see [`Calls`]'s docs).
    pub(super) pid: Option<libc::pid_t>,
    /// Since when its answer waits for it to go quiet.
    pub(super) settling: Option<Instant>,
    /// What it runs (`None`: remote), for what its exit status means.
    pub(super) kind: Option<ChildKind>,
    /// The error that broke its connection, if one did (an authentication
    /// failure, say), for its owner to judge.
    pub(super) broke: Option<Error>,
    /// The owner's state for this worker.
    pub(crate) ext: S,
}

impl<S> Slot<S> {
    /// Calls in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Whether a call may be sent: not stopped, and not waiting for its
    /// hello's answer.
    pub(crate) fn takes_calls(&self) -> bool {
        self.stopped.is_none() && self.proto != Proto::Hello
    }

    /// Whether it speaks frames (so takes chunks and several calls at once).
    pub(crate) fn framed(&self) -> bool {
        self.proto == Proto::Framed
    }
}

/// How long a plain local worker's answer may wait for the worker to go
/// quiet (wait for input) before it is taken as it stands.
pub(super) const SETTLE_MAX: Duration = Duration::from_millis(20);

/// How often a worker that is not quiet yet is looked at again.
pub(super) const SETTLE_TICK: Duration = Duration::from_micros(200);

/// A call's deadline, ordered by time (then call).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Due {
    pub(super) at: Instant,
    pub(super) call: CallId,
    pub(super) worker: Worker,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.call).cmp(&(other.at, other.call))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
