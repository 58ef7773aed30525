//! Calls: requests sent to workers, each matched to its answer.
//!
//! [`Calls`] owns a [`Reactor`] and keeps one [`Slot`] per worker: its calls
//! in flight, how it is spoken to ([`Proto`]) and whatever its owner keeps
//! beside (`S`, the pool's per-worker state), so there is one table of
//! workers, not one per layer. A call is one request line (one message, or
//! a chunk of several) and ends with one [`Answer`].
//!
//! Matching. A framed worker's answers name their call (`#r17`): an answer
//! for a call not in flight is dropped and counted ([`Calls::strays`]). A
//! plain worker answers in order, so its next line is its oldest plain
//! call's; a line that cannot be that (one with no call waiting, more lines
//! than calls, a line that does not decode as the reply) means the worker
//! lost step: it is stopped and every call it had fails with
//! [`Cause::OutOfSync`], which is retryable. A framed worker that breaks the
//! protocol is treated the same way.
//!
//! Ends are facts: a worker ends when its connection closes (and, for a
//! local one, its process is reaped), or when this layer stops it (a
//! deadline, lost step, the owner's word): `SIGKILL` to its process group,
//! or for a remote worker a dropped connection. Nothing a worker *says*
//! ends it. When it has ended, [`Event::Ended`] comes after the answers
//! of its calls.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::answer::Answer;
pub(crate) use super::attached::Attached;
use super::slot::Call;
pub(crate) use super::slot::{CallId, Proto, Slot, Stop};
use super::slot::{Due, SETTLE_TICK};
use super::slots::Slots;
use super::Cause;
use crate::error::{Error, Result};
use crate::frame::{self, Kind};
use crate::list_writer::{append_line, ListWriter};
use crate::process::{deadline_after, ChildKind, Signal};
use crate::reactor::Reactor;
use crate::worker::Worker;

/// A worker that ended.
#[derive(Debug)]
pub(crate) struct Ended<S> {
    pub(crate) worker: Worker,
    /// How it ended (`None`: unknown, or remote).
    pub(crate) status: Option<ExitStatus>,
    /// Answers it sent: 0 is the mark of a worker that could not start.
    pub(crate) answers: u64,
    /// Why this layer stopped it, if it did.
    pub(crate) stopped: Option<Stop>,
    /// A hello it never answered: the peer is plain and closed on it.
    pub(crate) hello_unanswered: bool,
    /// The error that broke its connection, if one did.
    pub(crate) broke: Option<Error>,
    /// The owner's state for it.
    pub(crate) ext: S,
}

/// What [`Calls::wait_into`] reports, in the order it happened.
#[derive(Debug)]
pub(crate) enum Event<Rep, S> {
    /// A call ended.
    Done {
        worker: Worker,
        call: CallId,
        answer: Answer<Rep>,
        /// Answers the worker had sent by then (0: it never answered).
        answers: u64,
    },
    /// A worker's protocol is settled: its hello was answered, or its
    /// program announced frames.
    Spoke { worker: Worker, framed: bool },
    /// A worker ended (the answers of its calls came before).
    Ended(Ended<S>),
}

/// How many of a chunk's items went out.
#[derive(Debug, Default)]
pub(crate) struct ChunkSent {
    /// Items taken from the front of the slice (sent, or left out below).
    pub(crate) taken: usize,
    /// Items among those that could not be encoded (left out of the call),
    /// by index in the slice, rising.
    pub(crate) unencodable: Vec<(usize, Error)>,
}

/// Calls over a reactor (see the module docs).
#[derive(Debug)]
pub(crate) struct Calls<Rep, S> {
    pub(super) reactor: Reactor,
    pub(super) slots: Slots<Slot<S>>,
    pub(super) deadlines: BinaryHeap<Reverse<Due>>,
    pub(super) events: Vec<Event<Rep, S>>,
    pub(super) in_flight: usize,
    pub(super) strays: u64,
    pub(super) out_of_sync: u64,
    /// Why the latest worker lost step (its offending line quoted).
    pub(super) last_out_of_sync: Option<String>,
    pub(super) ready: Vec<Worker>,
    /// Plain workers whose answer waits for them to go quiet.
    pub(super) settling: Vec<Worker>,
    pub(super) chunk_buf: Vec<u8>,
}

impl<Rep, S> Calls<Rep, S> {
    pub(crate) fn new(reactor: Reactor) -> Self {
        Calls {
            reactor,
            slots: Slots::default(),
            deadlines: BinaryHeap::new(),
            events: Vec::new(),
            in_flight: 0,
            strays: 0,
            out_of_sync: 0,
            last_out_of_sync: None,
            ready: Vec::new(),
            settling: Vec::new(),
            chunk_buf: Vec::new(),
        }
    }

    pub(crate) fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    pub(crate) fn reactor_mut(&mut self) -> &mut Reactor {
        &mut self.reactor
    }

    /// Takes `w` (spawned or connected on this reactor) as a worker spoken
    /// to with `proto`; for [`Proto::Hello`] the hello is sent now.
    pub(crate) fn add(
        &mut self,
        w: Worker,
        proto: Proto,
        kind: Option<ChildKind>,
        ext: S,
    ) -> Result<()> {
        if proto == Proto::Hello {
            self.reactor.send_with(w, |_, out, _| {
                out.extend_from_slice(frame::HELLO);
                out.push(b'\n');
                Ok(())
            })?;
        }
        self.slots.insert(
            w,
            Slot {
                calls: VecDeque::new(),
                proto,
                answers: 0,
                stopped: None,
                pid: self.reactor.pid(w),
                settling: None,
                kind,
                broke: None,
                ext,
            },
        );
        Ok(())
    }

    pub(crate) fn slot(&self, w: Worker) -> Option<&Slot<S>> {
        self.slots.get(w)
    }

    pub(crate) fn slot_mut(&mut self, w: Worker) -> Option<&mut Slot<S>> {
        self.slots.get_mut(w)
    }

    /// Every worker and its slot.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (Worker, &Slot<S>)> {
        self.slots.iter()
    }

    /// Workers in the table (ended ones leave it with their
    /// [`Event::Ended`]).
    pub(crate) fn workers(&self) -> usize {
        self.slots.len()
    }

    /// Answers dropped because their call was not in flight.
    pub(crate) fn strays(&self) -> u64 {
        self.strays
    }

    /// Workers stopped for losing step or breaking the protocol.
    pub(crate) fn out_of_sync(&self) -> u64 {
        self.out_of_sync
    }

    /// Why the latest worker lost step.
    pub(crate) fn last_out_of_sync(&self) -> Option<&str> {
        self.last_out_of_sync.as_deref()
    }

    /// Sends `msg` to `w` as call `id` (framed if `w` speaks frames).
    ///
    /// Errors (nothing sent, no call made): those of
    /// [`Reactor::send`], and [`Error::Closed`] for a worker that takes no
    /// calls (stopped, or its hello unanswered).
    pub(crate) fn send_one<T: Serialize + ?Sized>(
        &mut self,
        w: Worker,
        id: CallId,
        msg: &T,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let framed = self.sendable(w)?;
        self.reactor.send_with(w, |format, out, scratch| {
            if framed {
                frame::write_header(Kind::Request, id, out);
            }
            format.encode_line(msg, out, scratch)
        })?;
        self.begin(w, id, 0, framed, timeout);
        Ok(())
    }

    /// [`Calls::send_one`] with shared memory regions: the request travels
    /// in the region envelope, its descriptors with it (`SCM_RIGHTS`).
    /// Refused over TCP ([`Error::Region`]), nothing sent.
    pub(crate) fn send_one_regions<T: Serialize + ?Sized>(
        &mut self,
        w: Worker,
        id: CallId,
        msg: &T,
        regions: &[Attached],
        timeout: Option<Duration>,
    ) -> Result<()> {
        let framed = self.sendable(w)?;
        let fds = regions
            .iter()
            .map(|r| crate::sys::dup_cloexec(&r.fd))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        let ids: Vec<u64> = regions.iter().map(|r| r.id).collect();
        self.reactor.send_fds_with(w, fds, |format, out, scratch| {
            if framed {
                frame::write_header(Kind::Request, id, out);
            }
            crate::envelope::encode_envelope_ids(format, &ids, msg, out, scratch)
        })?;
        self.begin(w, id, 0, framed, timeout);
        Ok(())
    }

    /// Sends items from the front of `items` to `w` (which must speak
    /// frames) as chunk `id`: as many as fit in `budget` bytes of line (at
    /// least one), an item that cannot be encoded left out (and reported).
    /// With none left to send, no call is made (`taken` says what was
    /// looked at).
    pub(crate) fn send_chunk<X, T: Serialize>(
        &mut self,
        w: Worker,
        id: CallId,
        items: &[X],
        msg: impl Fn(&X) -> &T,
        budget: usize,
        timeout: Option<Duration>,
    ) -> Result<ChunkSent> {
        if !self.sendable(w)? {
            return Err(Error::io(
                "send",
                std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "a chunk needs a worker that speaks frames",
                ),
            ));
        }
        let format = self.reactor.format(w)?;
        let mut list = ListWriter::new(format, std::mem::take(&mut self.chunk_buf));
        let mut sent = ChunkSent::default();
        for (i, item) in items.iter().enumerate() {
            let mark = list.mark();
            if let Err(e) = list.push(msg(item)) {
                sent.unencodable.push((i, e));
                sent.taken = i + 1;
                continue;
            }
            if list.len() > 1 && frame::MAX_HEADER + list.text_len() > budget {
                list.truncate(mark);
                break;
            }
            sent.taken = i + 1;
        }
        let n = list.len();
        let raw = list.finish();
        let queued = if n == 0 {
            Ok(())
        } else {
            self.reactor.send_with(w, |format, out, _| {
                frame::write_header(Kind::Chunk, id, out);
                append_line(format, &raw, out);
                Ok(())
            })
        };
        self.chunk_buf = raw;
        queued?;
        if n > 0 {
            let items = u32::try_from(n).unwrap_or(u32::MAX);
            self.begin(w, id, items, true, timeout);
        }
        Ok(sent)
    }

    /// Whether `w` takes a call now, and whether it is framed.
    fn sendable(&self, w: Worker) -> Result<bool> {
        match self.slots.get(w) {
            Some(s) if s.takes_calls() => Ok(s.framed()),
            Some(_) => Err(Error::Closed { status: None }),
            None => Err(Error::UnknownWorker),
        }
    }

    fn begin(
        &mut self,
        w: Worker,
        id: CallId,
        items: u32,
        framed: bool,
        timeout: Option<Duration>,
    ) {
        let at = timeout.and_then(deadline_after);
        if let Some(at) = at {
            self.deadlines.push(Reverse(Due {
                at,
                call: id,
                worker: w,
            }));
        }
        if let Some(slot) = self.slots.get_mut(w) {
            slot.calls.push_back(Call {
                id,
                items,
                framed,
                at,
                timeout,
            });
            self.in_flight += 1;
        }
    }

    /// Waits up to `timeout` (`None`: no limit) for something to happen,
    /// appending what did to `out`: finished calls, settled protocols,
    /// ended workers. Returns early on an empty reactor, and on any readiness
    /// of the caller's own sources. Deadlines are enforced meanwhile.
    pub(crate) fn wait_into(
        &mut self,
        out: &mut Vec<Event<Rep, S>>,
        timeout: Option<Duration>,
    ) -> Result<()>
    where
        Rep: DeserializeOwned,
    {
        let until = timeout.and_then(deadline_after);
        loop {
            if !self.events.is_empty() {
                break;
            }
            let next = match (until, self.deadlines.peek()) {
                (Some(u), Some(Reverse(due))) => Some(u.min(due.at)),
                (u, due) => u.or(due.map(|Reverse(due)| due.at)),
            };
            let left = next.map(|d| d.saturating_duration_since(Instant::now()));
            let mut ready = std::mem::take(&mut self.ready);
            let polled = if self.settling.is_empty() {
                self.reactor.wait_any_into(&mut ready, left)
            } else {
                // A worker's answer waits for it to go quiet: its lines stay
                // queued, so `wait_any` would return at once. Poll for a
                // tick instead, then take what is ready.
                let tick = left.map_or(SETTLE_TICK, |l| l.min(SETTLE_TICK));
                self.reactor
                    .poll_once(Some(tick))
                    .and_then(|()| self.reactor.wait_any_into(&mut ready, Some(Duration::ZERO)))
            };
            ready.append(&mut self.settling);
            for &w in &ready {
                self.drain(w);
            }
            ready.clear();
            self.ready = ready;
            polled?;
            self.expire(Instant::now());
            // Ends: the time ran out, nothing is left to wait on, or a
            // source of the owner's is ready (its events stay queued for it).
            if until.is_some_and(|u| u <= Instant::now())
                || !self.reactor.has_sources()
                || self.reactor.user_events_waiting()
            {
                break;
            }
        }
        out.append(&mut self.events);
        Ok(())
    }

    /// Stops `w` now: `SIGKILL` to its process group, or for a remote
    /// worker its connection dropped. Its calls fail at once with
    /// `cause(call id)`; what it sends from now on is dropped, and
    /// [`Event::Ended`] follows once its end is seen.
    pub(crate) fn stop(&mut self, w: Worker, why: Stop, cause: impl Fn(CallId) -> Cause) {
        let Some(slot) = self.slots.get_mut(w) else {
            return;
        };
        if slot.stopped.is_none() {
            slot.stopped = Some(why);
            if self.reactor.disconnect(w).is_err() {
                let _ = self.reactor.kill(w, Signal::KILL);
            }
        }
        self.fail_all(w, |c| cause(c.id));
    }

    /// Closes `w`'s input gracefully (a recycled worker): it finishes what
    /// it has and exits; it takes no more calls.
    pub(crate) fn close(&mut self, w: Worker) {
        if let Some(slot) = self.slots.get_mut(w) {
            slot.stopped.get_or_insert(Stop::Owner);
        }
        let _ = self.reactor.close(w);
    }

    /// Closes and reaps every worker ([`Reactor::shutdown`]); calls still in
    /// flight are forgotten, not reported.
    pub(crate) fn shutdown(&mut self) {
        self.slots.clear();
        self.deadlines.clear();
        self.events.clear();
        self.in_flight = 0;
        self.reactor.shutdown();
    }

    /// `w` is gone: its calls fail with its status, then its end is told.
    pub(super) fn ended(&mut self, w: Worker, status: Option<ExitStatus>) {
        let kind = self.slots.get(w).and_then(|s| s.kind);
        self.fail_all(w, |_| Cause::WorkerLost { status, kind });
        let Some(slot) = self.slots.remove(w) else {
            return;
        };
        self.events.push(Event::Ended(Ended {
            worker: w,
            status,
            answers: slot.answers,
            stopped: slot.stopped,
            hello_unanswered: slot.proto == Proto::Hello,
            broke: slot.broke,
            ext: slot.ext,
        }));
    }

    pub(super) fn fail_all(&mut self, w: Worker, cause: impl Fn(&Call) -> Cause) {
        let Some(slot) = self.slots.get_mut(w) else {
            return;
        };
        self.in_flight -= slot.calls.len();
        for call in slot.calls.drain(..) {
            self.events.push(Event::Done {
                worker: w,
                call: call.id,
                answer: Answer::Failed(cause(&call)),
                answers: slot.answers,
            });
        }
    }
}
