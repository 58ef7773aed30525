//! One turn of the pool: start the workers its supplies want, send queued
//! tasks to workers with room (one dispatch path: a single request is a
//! call of one task, a chunk a call of several), wait, file what ended
//! (each task's result, a retry, a chunk's tasks sent again alone), and
//! tell the supplies what their workers did.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::queue::{Origin, Task};
use super::supply::{End, Outlook, Started};
use super::{Load, Pool, Unit};
use crate::error::Error;
use crate::task::calls::{CallId, Ended, Event, Stop};
use crate::task::{Answer, Attempt, Cause};
use crate::worker::Worker;

/// How far into the queue a worker looks for a task that may run on it
/// (retries at the front may avoid it).
const LOOK: usize = 64;

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// One turn: start workers, send queued work, wait up to `timeout` for
    /// something to happen, file it, send again.
    pub(super) fn step(&mut self, timeout: Option<Duration>) {
        self.top_up();
        self.retire_idle();
        self.dispatch();
        if !self.queue.is_empty() && !self.any_taker() && self.gave_up() {
            self.report_progress();
            return;
        }
        let idle = self.running.is_empty() && self.queue.is_empty();
        let wait = if idle {
            // Only a worker's end could come: look once, do not wait.
            Some(Duration::ZERO)
        } else {
            self.bound(timeout)
        };
        self.wait_and_file(wait);
        self.top_up();
        self.retire_idle();
        self.dispatch();
        self.report_progress();
    }

    /// `timeout`, cut to when a supply must be looked at again.
    fn bound(&self, timeout: Option<Duration>) -> Option<Duration> {
        let now = Instant::now();
        let wake = self.supplies.iter().filter_map(|s| s.wake_at(now)).min();
        match (timeout, wake) {
            (t, None) => t,
            (t, Some(w)) => {
                let w = w.saturating_duration_since(now);
                Some(t.map_or(w, |t| t.min(w)))
            }
        }
    }

    /// Waits for the worker set and files what happened; with no worker to
    /// wait on (every host down), sleeps until `timeout` instead.
    pub(super) fn wait_and_file(&mut self, timeout: Option<Duration>) {
        if self.calls.workers() == 0 && !self.calls.reactor().has_sources() {
            if let Some(t) = timeout.filter(|t| !t.is_zero()) {
                std::thread::sleep(t);
            }
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        if let Err(e) = self.calls.wait_into(&mut events, timeout) {
            // The reactor itself failed (epoll): nothing will come. Fail
            // everything rather than hang.
            self.terminate_with(Cause::NoWorkers {
                message: format!("the pool's reactor failed: {e}"),
            });
            return;
        }
        for event in events.drain(..) {
            match event {
                Event::Done {
                    worker,
                    call,
                    answer,
                    answers,
                } => self.file(worker, call, answer, answers),
                Event::Spoke { worker, framed } => {
                    if let Some(origin) = self.origin(worker) {
                        self.supplies[origin.supply].spoke(origin.host, framed);
                    }
                }
                Event::Ended(e) => self.ended(e),
            }
        }
        self.events = events;
        // Readiness of the pool's own sources (a membership feed's pipe, a
        // handle's) only ends a wait; what came is read elsewhere.
        self.calls.reactor_mut().take_user_events();
    }

    fn origin(&self, w: Worker) -> Option<Origin> {
        self.calls.slot(w).map(|s| s.ext.origin)
    }

    /// Whether some worker takes calls now.
    fn any_taker(&self) -> bool {
        self.calls.slots().any(|(_, s)| s.takes_calls())
    }

    /// With no worker to take them: fails the queued tasks once every
    /// supply gave up; true if it did.
    fn gave_up(&mut self) -> bool {
        let now = Instant::now();
        let mut why = Vec::new();
        for s in &mut self.supplies {
            match s.outlook(now) {
                Outlook::Working => return false,
                Outlook::GaveUp(reason) => why.push(reason),
            }
        }
        let message = why.join("; ");
        for task in self.queue.drain() {
            let last = Attempt {
                worker: None,
                cause: Cause::NoWorkers {
                    message: message.clone(),
                },
            };
            self.finish(task, Err(Some(last)));
        }
        true
    }

    /// Asks every supply to start what it wants; takes what it started.
    pub(super) fn top_up(&mut self) {
        if self.closed {
            return;
        }
        let now = Instant::now();
        let mut started: Vec<Started> = Vec::new();
        for i in 0..self.supplies.len() {
            self.supplies[i].top_up(self.calls.reactor_mut(), now, &mut started);
            for s in started.drain(..) {
                let w = s.worker;
                if self.adopt(i, s).is_err() {
                    // Its hello could not be queued: the connection is
                    // already failing, and its end will be told.
                    let _ = self.calls.reactor_mut().disconnect(w);
                }
            }
        }
    }

    /// Sends queued tasks to every worker with room.
    fn dispatch(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let mut takers = std::mem::take(&mut self.takers);
        takers.clear();
        takers.extend(
            self.calls
                .slots()
                .filter(|(_, s)| s.takes_calls() && !s.ext.recycle)
                .map(|(w, _)| w),
        );
        let elsewhere = takers.len() > 1;
        let hosts = self.supplies.iter().map(|s| s.hosts()).sum::<usize>();
        let other_host = hosts > 1 || (hosts > 0 && self.supplies.len() > 1);
        for &w in &takers {
            while !self.queue.is_empty() && self.has_room(w) {
                if !self.send_to(w, elsewhere, other_host) {
                    break;
                }
            }
            if self.queue.is_empty() {
                break;
            }
        }
        self.takers = takers;
    }

    fn has_room(&self, w: Worker) -> bool {
        let Some(slot) = self.calls.slot(w) else {
            return false;
        };
        // A plain peer is matched by position: one request at a time.
        let cap = if slot.framed() {
            self.opts.in_flight()
        } else {
            1
        };
        let supply = &self.supplies[slot.ext.origin.supply];
        slot.takes_calls()
            && !slot.ext.recycle
            && slot.in_flight() < cap
            && supply.may_take(slot.ext.origin.host)
            && !supply.retiring(slot.ext.origin.host)
    }

    /// Closes the idle workers their supply retires (a drained host's):
    /// they finished what they had, and take nothing more.
    fn retire_idle(&mut self) {
        let retiring = |s: &crate::task::calls::Slot<super::Place>| {
            s.in_flight() == 0
                && s.takes_calls()
                && self.supplies[s.ext.origin.supply].retiring(s.ext.origin.host)
        };
        // Rare: look before collecting.
        if !self.calls.slots().any(|(_, s)| retiring(s)) {
            return;
        }
        let idle: Vec<Worker> = self
            .calls
            .slots()
            .filter(|(_, s)| retiring(s))
            .map(|(w, _)| w)
            .collect();
        for w in idle {
            self.calls.close(w);
        }
    }

    /// Sends one call to `w`: a chunk of fresh tasks when it speaks frames
    /// and chunking is on, else the first task that may run on it. False
    /// when nothing could be sent to it.
    fn send_to(&mut self, w: Worker, elsewhere: bool, other_host: bool) -> bool {
        let Some(slot) = self.calls.slot(w) else {
            return false;
        };
        let origin = slot.ext.origin;
        let left = self
            .opts
            .max_tasks_per_worker
            .map_or(u64::MAX, |m| m.saturating_sub(slot.ext.dispatched).max(1));
        let chunk = slot.framed() && self.sizer.on() && self.queue.front_is_fresh();
        let timeout = self.opts.timeout;
        // A call is named by its first task: unique among calls in flight,
        // and what a victim of its deadline names.
        let id: CallId;
        let sent = if chunk {
            let n = self
                .sizer
                .size()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let Some(mut run) = self.queue.take_run(n) else {
                return false;
            };
            id = run.first.get();
            let budget = self.opts.chunk_budget();
            match self
                .calls
                .send_chunk(w, id, &run.reqs, |r| r, budget, timeout)
            {
                Ok(sent) if sent.unencodable.is_empty() => {
                    // Items past what fitted wait for the next chunk.
                    self.queue.push_front_run(run.split_off(sent.taken));
                    Ok(Load::Run(run))
                }
                Ok(sent) => {
                    // Items that cannot be encoded fail alone; the rest of
                    // the chunk went without them.
                    // Items past what fitted wait for the next chunk.
                    self.queue.push_front_run(run.split_off(sent.taken));
                    let mut tasks = run.into_tasks().collect::<Vec<_>>();
                    for (i, e) in sent.unencodable.into_iter().rev() {
                        let task = tasks.remove(i);
                        let cause = Cause::Send {
                            message: e.to_string(),
                        };
                        let last = Attempt {
                            worker: Some(w),
                            cause,
                        };
                        self.finish(task, Err(Some(last)));
                    }
                    Ok(Load::Tasks(tasks))
                }
                Err(e) => Err((e, Load::Run(run))),
            }
        } else {
            let fits = |t: &Task<Req>| t.may_run_on(w, origin, elsewhere, other_host);
            let Some(task) = self.queue.take_for(LOOK, fits) else {
                return false;
            };
            id = task.id.get();
            let sent = if task.regions.is_empty() {
                self.calls.send_one(w, id, &task.req, timeout)
            } else {
                self.calls
                    .send_one_regions(w, id, &task.req, &task.regions, timeout)
            };
            match sent {
                Ok(()) => Ok(Load::One(task)),
                Err(e) => Err((e, Load::One(task))),
            }
        };
        match sent {
            Ok(load) if load.len() == 0 => true,
            Ok(load) => {
                let n = load.len() as u64;
                self.running.insert(
                    id,
                    Unit {
                        worker: w,
                        origin,
                        load,
                    },
                );
                self.supplies[origin.supply].dispatched(origin.host);
                if let Some(slot) = self.calls.slot_mut(w) {
                    slot.ext.dispatched += n;
                    if self
                        .opts
                        .max_tasks_per_worker
                        .is_some_and(|m| slot.ext.dispatched >= m)
                    {
                        slot.ext.recycle = true;
                    }
                }
                true
            }
            Err((
                Error::Closed { .. } | Error::UnknownWorker | Error::Backpressure { .. },
                load,
            )) => {
                // The worker is going (or full): not the tasks' fault.
                match load {
                    Load::Run(run) => self.queue.push_front_run(run),
                    Load::One(t) => self.queue.push_front(t),
                    Load::Tasks(tasks) => {
                        for t in tasks.into_iter().rev() {
                            self.queue.push_front(t);
                        }
                    }
                }
                false
            }
            Err((e, load)) => {
                let message = e.to_string();
                for task in load.into_tasks() {
                    let cause = Cause::Send {
                        message: message.clone(),
                    };
                    let last = Attempt {
                        worker: Some(w),
                        cause,
                    };
                    self.finish(task, Err(Some(last)));
                }
                true
            }
        }
    }

    /// Call `call` of worker `w` ended with `answer`.
    fn file(&mut self, w: Worker, call: CallId, answer: Answer<Rep>, answers: u64) {
        let Some(unit) = self.running.remove(&call) else {
            return;
        };
        let origin = unit.origin;
        let supply = &mut self.supplies[origin.supply];
        match &answer {
            Answer::Failed(Cause::Deadline { .. }) => supply.deadline_hit(origin.host),
            Answer::Failed(c) if c.is_retryable() => {}
            _ => supply.answered(origin.host),
        }
        match (answer, unit.load) {
            (Answer::One(rep), Load::One(task)) => self.finish(task, Ok(rep)),
            (Answer::One(rep), load) if load.len() == 1 => {
                if let Some(task) = load.into_tasks().pop() {
                    self.finish(task, Ok(rep));
                }
            }
            // The calls layer matches one reply only to a call of one task:
            // should a chunk ever get one, its tasks fail as a chunk (each
            // then runs alone), none is dropped.
            (Answer::One(_), load) => {
                let message = format!("one reply for a chunk of {} tasks", load.len());
                self.chunk_failed(load.into_tasks(), w, origin, Cause::Reply { message })
            }
            (
                Answer::Chunk {
                    replies,
                    failures,
                    work,
                },
                load,
            ) => {
                self.sizer.learn(load.len(), work);
                match load {
                    // The common case: every task of a fresh run succeeded.
                    Load::Run(run) if failures.is_empty() && replies.len() == run.reqs.len() => {
                        self.finish_run(run, replies)
                    }
                    load => {
                        let mut replies = replies.into_iter();
                        let mut failures = failures.into_iter().peekable();
                        for (i, task) in load.into_tasks().into_iter().enumerate() {
                            match failures.next_if(|f| f.0 == i) {
                                Some((_, cause)) => self.try_failed(task, w, origin, cause, true),
                                None => match replies.next() {
                                    Some(rep) => self.finish(task, Ok(rep)),
                                    // Counted by the calls layer: cannot happen.
                                    None => {
                                        let cause = Cause::Reply {
                                            message: "a chunk reply was short".into(),
                                        };
                                        self.try_failed(task, w, origin, cause, true)
                                    }
                                },
                            }
                        }
                    }
                }
            }
            (Answer::Failed(cause), load) if load.len() > 1 => {
                self.chunk_failed(load.into_tasks(), w, origin, cause)
            }
            (Answer::Failed(cause), load) => {
                // A connection that never answered anything (a host that
                // closes what it will not serve): no try of the task's.
                let charged = !(origin.host.is_some()
                    && answers == 0
                    && matches!(cause, Cause::WorkerLost { .. } | Cause::Connection { .. }));
                let task = match load {
                    Load::One(task) => Some(task),
                    load => load.into_tasks().pop(),
                };
                if let Some(task) = task {
                    self.try_failed(task, w, origin, cause, charged);
                }
            }
        }
        self.maybe_recycle(w);
    }

    /// A try of `task` failed on `w` with `cause`: retried (on another
    /// worker when there is one) or failed for good.
    fn try_failed(
        &mut self,
        mut task: Task<Req>,
        w: Worker,
        origin: Origin,
        cause: Cause,
        charged: bool,
    ) {
        let retry = cause.is_retryable() || (self.opts.retry_panics && cause.is_panic());
        let cancelled = matches!(cause, Cause::Cancelled) && self.take_cancelled(task.id);
        if charged || !retry {
            task.tries.push(Attempt {
                worker: Some(w),
                cause,
            });
        }
        if retry && !cancelled && task.tries.len() <= self.opts.max_retries as usize {
            self.stats.retried += 1;
            task.avoid = Some((w, origin));
            self.queue.push_front(task);
        } else {
            self.finish(task, Err(None));
        }
    }

    /// A chunk failed as a whole: each of its tasks runs again alone, at no
    /// cost of a try (a cancelled one ends; a pool being torn down fails
    /// them all).
    fn chunk_failed(&mut self, tasks: Vec<Task<Req>>, w: Worker, origin: Origin, cause: Cause) {
        let lost = cause.is_retryable();
        for mut task in tasks.into_iter().rev() {
            let final_cause = match &cause {
                Cause::Cancelled if self.take_cancelled(task.id) => Some(Cause::Cancelled),
                Cause::Terminated | Cause::NoWorkers { .. } => Some(cause.clone()),
                _ => None,
            };
            match final_cause {
                Some(c) => self.finish(
                    task,
                    Err(Some(Attempt {
                        worker: Some(w),
                        cause: c,
                    })),
                ),
                None => {
                    self.stats.retried += 1;
                    if lost {
                        task.avoid = Some((w, origin));
                    }
                    self.queue.push_front(task);
                }
            }
        }
    }

    fn take_cancelled(&mut self, id: crate::task::TaskId) -> bool {
        match self.cancelled.iter().position(|&c| c == id) {
            Some(i) => {
                self.cancelled.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// A worker to recycle that has finished its calls is closed.
    fn maybe_recycle(&mut self, w: Worker) {
        let Some(slot) = self.calls.slot(w) else {
            return;
        };
        if slot.ext.recycle && slot.in_flight() == 0 && slot.takes_calls() {
            self.calls.close(w);
            self.stats.recycled += 1;
        }
    }

    /// A worker ended: its supply is told, and it is replaced by the next
    /// top-up unless it went on purpose.
    fn ended(&mut self, e: Ended<super::Place>) {
        let origin = e.ext.origin;
        let on_purpose = e.ext.recycle || self.closed;
        let end = End {
            worker: e.worker,
            host: origin.host,
            status: e.status,
            answers: e.answers,
            stopped: e.stopped,
            hello_unanswered: e.hello_unanswered,
            on_purpose,
            broke: e.broke,
        };
        if !on_purpose && !e.hello_unanswered && e.stopped != Some(Stop::Owner) {
            self.stats.replaced += 1;
        }
        self.supplies[origin.supply].ended(&end, Instant::now());
    }

    /// Gives up on task `id`: queued, it is dropped; running, its try is
    /// ended as a deadline ends one (its worker stopped and replaced, the
    /// others of its chunk sent again) and it is not tried again. Its
    /// result then says [`Cause::Cancelled`].
    pub(crate) fn cancel(&mut self, id: crate::task::TaskId) {
        if let Some(task) = self.queue.remove_id(id) {
            let last = Attempt {
                worker: None,
                cause: Cause::Cancelled,
            };
            self.finish(task, Err(Some(last)));
        }
        let running = self
            .running
            .iter()
            .find(|(_, u)| u.load.holds(id))
            .map(|(&call, u)| (call, u.worker));
        if let Some((call, w)) = running {
            self.cancelled.push(id);
            self.calls.stop(w, Stop::Cancelled, |c| {
                if c == call {
                    Cause::Cancelled
                } else {
                    Cause::KilledForCancel { task: id }
                }
            });
        }
    }
}
