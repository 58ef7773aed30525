//! The raw line API the task layer works on: a worker's next line as bytes
//! (not decoded: a frame is parsed before its payload is), a failed line, or
//! the worker's end as an event rather than an `Err`; lines written with a
//! caller's encoder (a frame's header, then its payload).

use std::process::ExitStatus;

use std::os::fd::OwnedFd;

use super::Reactor;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::inbound::Msg;
use crate::worker::Worker;

/// What a worker sent next, as the task layer takes it.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A line (without its `\n`), and any descriptors that came with it.
    Line(Msg),
    /// A line that failed on its own ([`Error::is_message_error`]), or a
    /// connection error that is no end (a refused send).
    Failed(Error),
    /// The process exited while a descendant holds its socket: nothing
    /// more will answer, though lines may still arrive.
    Exited(Option<ExitStatus>),
    /// The connection ended, and the process with it (local workers are
    /// reaped by now); the last event of the worker.
    Closed(Option<ExitStatus>),
}

impl Reactor {
    /// The worker's next queued item without waiting, its end included as
    /// [`Incoming::Closed`] (after which the handle is unknown).
    pub(crate) fn take_incoming(&mut self, w: Worker) -> Result<Option<Incoming>> {
        match self.try_recv_msg(w) {
            Ok(Some(m)) => Ok(Some(Incoming::Line(m))),
            Ok(None) => Ok(None),
            Err(Error::Closed { status }) => Ok(Some(Incoming::Closed(status))),
            Err(Error::Exited { status }) => Ok(Some(Incoming::Exited(status))),
            Err(Error::UnknownWorker) => Err(Error::UnknownWorker),
            Err(e) => Ok(Some(Incoming::Failed(e))),
        }
    }

    /// Complete plain lines (not frames) received from `w` and not yet
    /// taken (failed lines and ends not counted): a count kept as lines
    /// are queued and taken, so asking per line taken stays linear.
    pub(crate) fn queued_plain_lines(&self, w: Worker) -> usize {
        self.conn(w).map_or(0, |c| c.queued_plain_lines())
    }

    /// Queues one line that `encode` appends to the worker's output (with
    /// its `\n`), as [`Reactor::send`] does for a message: on an error
    /// nothing of it stays queued.
    pub(crate) fn send_with<E>(&mut self, w: Worker, encode: E) -> Result<()>
    where
        E: FnOnce(Format, &mut Vec<u8>, &mut Vec<u8>) -> Result<()>,
    {
        self.queue(w, Vec::new(), encode)
    }

    /// [`Reactor::send_with`] for a line that carries descriptors (a region
    /// envelope): they go in its `sendmsg`. Refused over TCP, and past
    /// 32 descriptors, with nothing queued.
    pub(crate) fn send_fds_with<E>(&mut self, w: Worker, fds: Vec<OwnedFd>, encode: E) -> Result<()>
    where
        E: FnOnce(Format, &mut Vec<u8>, &mut Vec<u8>) -> Result<()>,
    {
        if self.conn(w)?.is_tcp() {
            return Err(Error::region(
                "regions cannot be sent over TCP: descriptors do not cross machines",
            ));
        }
        if fds.len() > crate::envelope::MAX_REGIONS {
            return Err(Error::region("at most 32 regions per message"));
        }
        self.queue(w, fds, encode)
    }

    /// Whether a wait could end for anything but its timeout: a worker, a
    /// server or a source of the caller's is registered.
    pub(crate) fn has_sources(&self) -> bool {
        self.user_sources > 0 || !self.tokens.is_empty()
    }

    /// Whether readiness of the caller's own sources is queued, untaken.
    pub(crate) fn user_events_waiting(&self) -> bool {
        !self.user_events.is_empty()
    }
}
