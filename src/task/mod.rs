//! Calls as tasks: a request sent to a worker becomes a [`TaskId`], and its
//! reply (or the reason it has none) comes back as one [`Done`].
//!
//! [`Tasks`] owns a [`Reactor`] and keeps, per worker, the calls in flight
//! in the order they were sent. The protocol has no ids: a worker answers
//! every request exactly once, in order (a failed request is an error reply
//! in its place), so the next reply line of a worker belongs to its oldest
//! call. Python peers keep working unchanged.
//!
//! When a worker ends, exactly its calls still in flight fail, with
//! [`Cause::WorkerLost`] and its exit status; replies that arrived before
//! are delivered first, each to its own call. A call may have a deadline:
//! when it passes, the replies already received are delivered, and if the
//! call is still in flight its worker is killed (`SIGKILL`, so a worker
//! stuck in its own code cannot ignore it; a remote worker's connection is
//! dropped instead); the call fails with
//! [`Cause::Deadline`] and the worker's other calls with
//! [`Cause::KilledForDeadline`] naming it. Lines the worker sent after
//! that are dropped, never given to a later call.
//!
//! ```
//! use std::time::Duration;
//! use miniray::task::{Cause, Tasks};
//! use miniray::Reactor;
//! # fn main() -> miniray::Result<()> {
//! let mut tasks = Tasks::<u64>::new(Reactor::new()?);
//! let w = tasks.reactor_mut().spawn(|n: u64| {
//!     if n == 0 {
//!         std::thread::sleep(Duration::from_secs(60));
//!     }
//!     n * 10
//! })?;
//! let quick = tasks.call(w, &4u64)?;
//! let stuck = tasks.call_with(w, &0u64, Some(Duration::from_millis(200)))?;
//! let mut done = Vec::new();
//! while done.len() < 2 {
//!     done.extend(tasks.wait(Some(Duration::from_secs(20)))?);
//! }
//! assert_eq!((done[0].id, done[0].result.as_ref().ok()), (quick, Some(&40)));
//! let err = done[1].result.as_ref().unwrap_err();
//! assert_eq!(done[1].id, stuck);
//! assert!(matches!(err.cause(), Cause::Deadline { .. }), "{err}");
//! # Ok(())
//! # }
//! ```

mod chunk;
mod error;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use chunk::ChunkReply;
pub use error::{Attempt, Cause, TaskError, TaskId};

use crate::error::{Error, Result};
use crate::process::{deadline_after, Signal};
use crate::reactor::Reactor;
use crate::worker::Worker;

/// A finished task: its id, the worker it ran on, and its reply or why it
/// has none (a [`TaskError`] with one try).
#[derive(Debug)]
pub struct Done<Rep> {
    /// The task.
    pub id: TaskId,
    /// The worker it was sent to.
    pub worker: Worker,
    /// The reply, or why there is none.
    pub result: std::result::Result<Rep, TaskError>,
}

/// A worker that ended (its `Closed`, or `Exited` for an exec worker whose
/// socket a descendant keeps open). Its calls in flight have failed by then.
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    /// The worker.
    pub worker: Worker,
    /// How it ended (`None`: unknown).
    pub status: Option<ExitStatus>,
    /// Reply lines it sent (error replies included): 0 means it never
    /// answered anything, the mark of a worker that could not start.
    pub replies: u64,
    /// Whether [`Tasks`] killed it because a deadline passed.
    pub killed_for_deadline: bool,
}

/// One call in flight.
#[derive(Debug)]
struct Call {
    id: TaskId,
    timeout: Option<Duration>,
    /// When its deadline passes: a call past its own deadline fails with
    /// `Deadline`, not as the victim of another's (a chunk's calls share one).
    at: Option<Instant>,
    /// Calls answered by the reply line this call leads (a chunk, made by
    /// [`Tasks::call_chunk_as`]); 0 for a plain call, and for the calls
    /// that follow a chunk's lead.
    chunk: usize,
}

/// A reply line as decoded for the oldest call.
enum Line<Rep> {
    One(Rep),
    Chunk(ChunkReply<Rep>),
}

/// A call's deadline, ordered by time (then id).
#[derive(Debug, PartialEq, Eq)]
struct Due {
    at: Instant,
    id: TaskId,
    worker: Worker,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.id).cmp(&(other.at, other.id))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A worker's side of the books.
#[derive(Debug, Default)]
struct Flight {
    /// Calls in the order they were sent: the next reply is the front's.
    calls: VecDeque<Call>,
    replies: u64,
    /// Killed (for a deadline, or a broken connection): its calls have
    /// failed, later lines are dropped, no call is taken.
    killed: bool,
    /// Killed because a deadline passed.
    for_deadline: bool,
    /// Its end was already told (`Exited` before `Closed`).
    told: bool,
}

/// Calls as tasks over a [`Reactor`] (see the [module docs](self)); `Rep`
/// is the type every reply is read as.
///
/// Every worker of the reactor is treated as a task worker: [`Tasks::wait`]
/// takes each ready worker's events (a reply with no call in flight is
/// dropped and counted in [`Tasks::stray_replies`]), so do not `recv` from
/// them yourself.
pub struct Tasks<Rep> {
    reactor: Reactor,
    flights: HashMap<Worker, Flight>,
    /// (deadline, task, worker), earliest first; entries of finished calls
    /// stay until they come up or the heap is rebuilt.
    deadlines: BinaryHeap<Reverse<Due>>,
    done: Vec<Done<Rep>>,
    ended: Vec<Ended>,
    /// How many of `ended` a `wait` has already returned for.
    ended_told: usize,
    in_flight: usize,
    next_id: u64,
    strays: u64,
    ready: Vec<Worker>,
    /// (first task, size, the worker's time on it) of chunks answered
    /// since the last [`Tasks::take_chunk_work`].
    chunk_work: Vec<(TaskId, usize, Duration)>,
}

impl<Rep> fmt::Debug for Tasks<Rep> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasks")
            .field("workers", &self.flights.len())
            .field("in_flight", &self.in_flight)
            .field("done", &self.done.len())
            .finish_non_exhaustive()
    }
}

impl<Rep> Tasks<Rep> {
    /// The reactor, to spawn workers or read a worker's pid.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// The reactor, to spawn, close or kill workers (their calls fail when
    /// they end). Taking a task worker's events here steals its replies.
    pub fn reactor_mut(&mut self) -> &mut Reactor {
        &mut self.reactor
    }

    /// Closes and reaps every worker ([`Reactor::shutdown`]); calls still in
    /// flight are forgotten, not reported.
    pub fn shutdown(&mut self) -> Vec<(Worker, Option<ExitStatus>)> {
        self.flights.clear();
        self.deadlines.clear();
        self.in_flight = 0;
        self.reactor.shutdown()
    }
}

impl<Rep: DeserializeOwned> Tasks<Rep> {
    /// Tasks over `reactor` (whose workers, present and future, are task
    /// workers from now on).
    pub fn new(reactor: Reactor) -> Self {
        Tasks {
            reactor,
            flights: HashMap::new(),
            deadlines: BinaryHeap::new(),
            done: Vec::new(),
            ended: Vec::new(),
            ended_told: 0,
            in_flight: 0,
            next_id: 0,
            strays: 0,
            ready: Vec::new(),
            chunk_work: Vec::new(),
        }
    }

    /// Sends `msg` to `w` as a new task with no deadline.
    ///
    /// Errors (nothing sent, no task made): those of [`Reactor::send`], and
    /// [`Error::Closed`] for a worker [`Tasks`] killed (a deadline passed, or
    /// its connection broke).
    pub fn call<T: Serialize + ?Sized>(&mut self, w: Worker, msg: &T) -> Result<TaskId> {
        self.call_with(w, msg, None)
    }

    /// Sends `msg` to `w` as a new task that must finish within `timeout`
    /// of now (`None`: no deadline). With several calls in flight on one
    /// worker the time spent queued behind the others counts.
    pub fn call_with<T: Serialize + ?Sized>(
        &mut self,
        w: Worker,
        msg: &T,
        timeout: Option<Duration>,
    ) -> Result<TaskId> {
        let id = TaskId(self.next_id);
        self.call_as(id, w, msg, timeout)?;
        self.next_id += 1;
        Ok(id)
    }

    /// [`Tasks::call_with`] under an id the caller chose, such as a task's
    /// own id on its retry (a [`Pool`](crate::pool::Pool) numbers tasks
    /// itself). The id must not be in flight.
    pub fn call_as<T: Serialize + ?Sized>(
        &mut self,
        id: TaskId,
        w: Worker,
        msg: &T,
        timeout: Option<Duration>,
    ) -> Result<()> {
        if self.flights.get(&w).is_some_and(|f| f.killed) {
            return Err(Error::Closed { status: None });
        }
        self.reactor.send(w, msg)?;
        let at = timeout.and_then(deadline_after);
        if let Some(at) = at {
            self.deadlines.push(Reverse(Due { at, id, worker: w }));
        }
        self.flights.entry(w).or_default().calls.push_back(Call {
            id,
            timeout,
            at,
            chunk: 0,
        });
        self.in_flight += 1;
        Ok(())
    }

    /// Calls in flight on `w`.
    pub fn in_flight(&self, w: Worker) -> usize {
        self.flights.get(&w).map_or(0, |f| f.calls.len())
    }

    /// Calls in flight on every worker.
    pub fn len(&self) -> usize {
        self.in_flight
    }

    /// True when no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight == 0
    }

    /// Reply lines that came with no call in flight (dropped).
    pub fn stray_replies(&self) -> u64 {
        self.strays
    }

    /// Tasks finished since the last call, waiting up to `timeout` for one
    /// (`None`: no limit; see the crate's Timeouts section): an empty list
    /// when none finished in time, or when a worker ended with no call in
    /// flight (take those with [`Tasks::take_ended`]). Deadlines are
    /// enforced while it waits.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Vec<Done<Rep>>> {
        let mut out = Vec::new();
        self.wait_into(&mut out, timeout)?;
        Ok(out)
    }

    /// [`Tasks::wait`] appending to a caller's vector.
    pub fn wait_into(&mut self, out: &mut Vec<Done<Rep>>, timeout: Option<Duration>) -> Result<()> {
        let until = timeout.and_then(deadline_after);
        loop {
            if !self.done.is_empty() || self.ended.len() > self.ended_told {
                break;
            }
            let now = Instant::now();
            let next = match (until, self.deadlines.peek()) {
                (Some(u), Some(Reverse(due))) => Some(u.min(due.at)),
                (u, due) => u.or(due.map(|Reverse(due)| due.at)),
            };
            let left = next.map(|d| d.saturating_duration_since(now));
            let mut ready = std::mem::take(&mut self.ready);
            let polled = self.reactor.wait_any_into(&mut ready, left);
            for &w in &ready {
                self.drain(w);
            }
            self.ready = ready;
            polled?;
            self.expire(Instant::now());
            // No worker left: nothing could ever come (`wait_any` returns
            // at once on an empty reactor, so do not spin).
            if until.is_some_and(|u| u <= Instant::now()) || self.reactor.is_empty() {
                break;
            }
        }
        self.ended_told = self.ended.len();
        out.append(&mut self.done);
        Ok(())
    }

    /// Workers that ended since the last call (their calls have failed).
    pub fn take_ended(&mut self) -> Vec<Ended> {
        self.ended_told = 0;
        std::mem::take(&mut self.ended)
    }

    /// Takes every event queued for `w`, matching replies to calls.
    fn drain(&mut self, w: Worker) {
        loop {
            // The oldest call says what the next line is: one reply, or a
            // chunk's list of item outcomes.
            let chunk = self
                .flights
                .get(&w)
                .and_then(|f| f.calls.front())
                .map_or(0, |c| c.chunk);
            let got = if chunk > 0 {
                self.reactor
                    .try_recv::<ChunkReply<Rep>>(w)
                    .map(|o| o.map(Line::Chunk))
            } else {
                self.reactor.try_recv::<Rep>(w).map(|o| o.map(Line::One))
            };
            match got {
                Ok(None) => return,
                Ok(Some(Line::One(rep))) => self.reply(w, Ok(rep)),
                Ok(Some(Line::Chunk(items))) => self.chunk_reply(w, items),
                Err(Error::Remote { kind, message }) => {
                    self.reply(w, Err(Cause::Remote { kind, message }))
                }
                // The peer hung up mid-line: no reply, `Closed` follows.
                Err(Error::TruncatedLine { .. }) => {}
                Err(e) if e.is_message_error() => self.reply(
                    w,
                    Err(Cause::Reply {
                        message: e.to_string(),
                    }),
                ),
                Err(Error::Exited { status }) => {
                    // The process is gone though a descendant holds the
                    // socket: nothing more will answer these calls.
                    self.end(w, status, false);
                    let _ = self.reactor.close(w);
                }
                Err(Error::Closed { status }) => {
                    self.end(w, status, true);
                    return;
                }
                Err(Error::UnknownWorker) => {
                    self.end(w, None, true);
                    return;
                }
                Err(e) => {
                    // No reply and no end: the connection is unusable.
                    let cause = Cause::Connection {
                        message: e.to_string(),
                    };
                    self.fail_all(w, |_| cause.clone());
                    self.flights.entry(w).or_default().killed = true;
                    self.stop(w);
                }
            }
        }
    }

    /// One reply line from `w`: the oldest call's (an error reply in a
    /// chunk's place fails each of its calls).
    fn reply(&mut self, w: Worker, result: std::result::Result<Rep, Cause>) {
        let flight = self.flights.entry(w).or_default();
        flight.replies += 1;
        let Some(call) = flight.calls.pop_front() else {
            // Killed for a deadline (its calls already failed), or a line
            // nobody asked for.
            self.strays += 1;
            return;
        };
        self.in_flight -= 1;
        let rest = call.chunk.saturating_sub(1).min(flight.calls.len());
        let cause = match result {
            Ok(rep) => {
                self.done.push(Done {
                    id: call.id,
                    worker: w,
                    result: Ok(rep),
                });
                return;
            }
            Err(cause) => cause,
        };
        for c in flight.calls.drain(..rest) {
            self.in_flight -= 1;
            self.done.push(Done {
                id: c.id,
                worker: w,
                result: Err(TaskError::new(c.id, Some(w), cause.clone())),
            });
        }
        self.done.push(Done {
            id: call.id,
            worker: w,
            result: Err(TaskError::new(call.id, Some(w), cause)),
        });
    }

    /// `w` ended: its calls in flight fail with its status.
    fn end(&mut self, w: Worker, status: Option<ExitStatus>, closed: bool) {
        self.fail_all(w, |_| Cause::WorkerLost { status });
        let flight = self.flights.entry(w).or_default();
        let told = std::mem::replace(&mut flight.told, true);
        let (replies, for_deadline) = (flight.replies, flight.for_deadline);
        if closed {
            self.flights.remove(&w);
        }
        if !told {
            self.ended.push(Ended {
                worker: w,
                status,
                replies,
                killed_for_deadline: for_deadline,
            });
        }
    }

    fn fail_all(&mut self, w: Worker, cause: impl Fn(&Call) -> Cause) {
        let Some(flight) = self.flights.get_mut(&w) else {
            return;
        };
        self.in_flight -= flight.calls.len();
        for call in flight.calls.drain(..) {
            self.done.push(Done {
                id: call.id,
                worker: w,
                result: Err(TaskError::new(call.id, Some(w), cause(&call))),
            });
        }
    }

    /// Kills the workers of calls whose deadline passed by `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse(due)) = self.deadlines.peek() {
            if due.at > now {
                break;
            }
            let (id, w) = (due.id, due.worker);
            self.deadlines.pop();
            if !self.is_in_flight(w, id) {
                continue;
            }
            // Replies already here are delivered first, each to its call.
            self.drain(w);
            if !self.is_in_flight(w, id) {
                continue;
            }
            // SIGKILL: a worker stuck in its own code cannot ignore it. If it
            // is already reaped, its `Closed` is on the way: fail the calls
            // now all the same.
            self.stop(w);
            self.fail_all(w, |call| match call.timeout {
                Some(timeout) if call.id == id || call.at.is_some_and(|at| at <= now) => {
                    Cause::Deadline { timeout }
                }
                _ => Cause::KilledForDeadline { task: id },
            });
            if let Some(flight) = self.flights.get_mut(&w) {
                flight.killed = true;
                flight.for_deadline = true;
            }
        }
        // Entries of finished calls pile up with a long timeout: rebuild
        // when they outnumber the calls in flight, so memory stays flat.
        if self.deadlines.len() > 2 * self.in_flight + 64 {
            let flights = &self.flights;
            self.deadlines.retain(|Reverse(due)| {
                flights
                    .get(&due.worker)
                    .is_some_and(|f| !f.killed && f.calls.iter().any(|c| c.id == due.id))
            });
        }
    }

    /// Ends a worker whose calls were failed: `SIGKILL` for a local one;
    /// a remote one's connection is dropped ([`Reactor::disconnect`]), or
    /// it would stay open with no end ever told and never be replaced.
    fn stop(&mut self, w: Worker) {
        if self.reactor.disconnect(w).is_err() {
            let _ = self.reactor.kill(w, Signal::KILL);
        }
    }

    /// The earliest call deadline (perhaps of a call already finished: its
    /// entry stays until it comes up), for a caller that waits elsewhere
    /// and must wake to enforce it (the async pool).
    #[cfg(feature = "tokio")]
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse(due)| due.at)
    }

    fn is_in_flight(&self, w: Worker, id: TaskId) -> bool {
        self.flights
            .get(&w)
            .is_some_and(|f| !f.killed && f.calls.iter().any(|c| c.id == id))
    }
}
