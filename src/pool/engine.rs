//! The pool's engine: one turn of sending queued work, filing finished
//! tries (retry or fail), recycling and replacing workers.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Pool, Sink};
use crate::error::Error;
use crate::task::{Attempt, Cause, Done, TaskError, TaskId};
use crate::worker::Worker;

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// One turn: send queued work, wait up to `timeout` for results, file
    /// them (retrying what may be retried), replace ended workers.
    pub(super) fn step(&mut self, timeout: Option<Duration>) {
        self.top_up();
        self.dispatch();
        if self.tasks.is_empty() && self.slots.is_empty() {
            if self.remote.is_some() {
                // Every host is down: wait for the next reconnect, or fail
                // what waits once they were all down too long.
                self.remote_stalled(timeout);
                return;
            }
            // Nothing runs and nothing can: fail what waits.
            self.fail_queued();
            self.report_progress();
            return;
        }
        if self.tasks.is_empty() && self.queue.is_empty() {
            // Nothing in flight or waiting: only a worker's end could come,
            // so look once rather than wait for nothing.
            self.wait_and_file(Some(Duration::ZERO));
            self.report_progress();
            return;
        }
        let timeout = self.remote_wait(timeout);
        self.wait_and_file(timeout);
        self.top_up();
        self.dispatch();
        self.report_progress();
    }

    fn wait_and_file(&mut self, timeout: Option<Duration>) {
        let mut batch = std::mem::take(&mut self.batch);
        if let Err(e) = self.tasks.wait_into(&mut batch, timeout) {
            // The reactor itself failed (epoll): nothing will come. Fail
            // everything rather than hang.
            self.terminate_with(Cause::NoWorkers {
                message: format!("the pool's reactor failed: {e}"),
            });
            return;
        }
        for d in batch.drain(..) {
            self.chunks.done(d.id);
            self.file(d);
        }
        self.learn_chunks();
        self.batch = batch;
        for e in self.tasks.take_ended() {
            self.remote_ended(&e);
            self.slots.remove(&e.worker);
            if self.retired.remove(&e.worker) || self.closed {
                continue;
            }
            self.stats.replaced += 1;
            if e.replies == 0 && !e.killed_for_deadline {
                self.start_failures += 1;
                self.last_start_failure = format!(
                    "{} ended before its first reply: {}",
                    e.worker,
                    crate::process::describe(e.status)
                );
            }
        }
    }

    /// Files one try's end.
    fn file(&mut self, d: Done<Rep>) {
        if !matches!(&d.result, Err(e) if e.cause().is_retryable()) {
            // The worker answered: a remote one's host is healthy.
            self.remote_replied(d.worker);
        }
        if let Some(slot) = self.slots.get_mut(&d.worker) {
            slot.in_flight -= 1;
            let lost = matches!(&d.result, Err(e) if e.cause().is_retryable());
            if lost {
                // It is ending (a panic, a kill): give it no more work.
                slot.retiring = true;
            } else {
                self.start_failures = 0;
            }
            if slot.retiring {
                if slot.in_flight == 0 && !lost {
                    self.recycle(d.worker);
                }
            } else {
                self.free.push(d.worker);
            }
        }
        let result = d.result.map_err(|e| e.into_tries());
        match result {
            Ok(rep) => self.finish(d.id, Ok(rep)),
            Err(tries) => {
                let retry_panics = self.opts.retry_panics;
                let retry = tries
                    .iter()
                    .all(|t| t.cause.is_retryable() && (retry_panics || !t.cause.is_panic()));
                let Some(entry) = self.entries.get_mut(&d.id) else {
                    return;
                };
                entry.tries.extend(tries);
                if retry && entry.tries.len() <= self.opts.max_retries as usize {
                    self.stats.retried += 1;
                    self.queue.push_front(d.id);
                } else {
                    self.finish(d.id, Err(None));
                }
            }
        }
    }

    /// Ends task `id`: with its reply, or failed with the tries recorded
    /// so far plus `last` when given.
    pub(super) fn finish(&mut self, id: TaskId, result: std::result::Result<Rep, Option<Attempt>>) {
        let Some(mut entry) = self.entries.remove(&id) else {
            return;
        };
        let result = match result {
            Ok(rep) => {
                self.stats.completed += 1;
                Ok(rep)
            }
            Err(last) => {
                self.stats.failed += 1;
                entry.tries.extend(last);
                Err(TaskError::with_tries(id, entry.tries))
            }
        };
        match entry.sink {
            Sink::Handle => {
                self.done.insert(id, result);
                self.finished.push_back(id);
            }
            Sink::Ordered => {
                self.done.insert(id, result);
            }
            Sink::Unordered => self.unordered.push_back((id, result)),
            Sink::Discard => {}
        }
    }

    /// A worker that served `max_tasks_per_worker` tasks: closed, replaced.
    fn recycle(&mut self, w: Worker) {
        self.slots.remove(&w);
        self.retired.insert(w);
        let _ = self.tasks.reactor_mut().close(w);
        self.stats.recycled += 1;
    }

    /// Spawns workers up to the pool's size, unless too many in a row could
    /// not start.
    fn top_up(&mut self) {
        if self.remote.is_some() {
            self.top_up_remote();
            return;
        }
        while !self.closed
            && self.slots.len() < self.opts.workers.max(1)
            && self.start_failures < self.opts.max_start_failures
        {
            if let Err(e) = self.spawn_one() {
                self.start_failures += 1;
                self.last_start_failure = format!("spawn failed: {e}");
            }
        }
    }

    /// Sends queued tasks to free workers.
    fn dispatch(&mut self) {
        if self.chunks.on() {
            return self.dispatch_chunks();
        }
        while let Some(&id) = self.queue.front() {
            let Some(w) = self.take_free() else {
                return;
            };
            self.queue.pop_front();
            let Some(entry) = self.entries.get(&id) else {
                self.free.push(w);
                continue;
            };
            match self.tasks.call_as(id, w, &entry.req, self.opts.timeout) {
                Ok(()) => {
                    if let Some(slot) = self.slots.get_mut(&w) {
                        slot.in_flight += 1;
                        slot.dispatched += 1;
                        if self
                            .opts
                            .max_tasks_per_worker
                            .is_some_and(|m| slot.dispatched >= m)
                        {
                            slot.retiring = true;
                        }
                    }
                }
                Err(Error::Closed { .. } | Error::UnknownWorker | Error::Backpressure { .. }) => {
                    // The worker is going (or full): not the task's fault.
                    self.queue.push_front(id);
                    if let Some(slot) = self.slots.get_mut(&w) {
                        slot.retiring = true;
                    }
                }
                Err(e) => {
                    self.free.push(w);
                    let cause = Cause::Send {
                        message: e.to_string(),
                    };
                    let last = Attempt {
                        worker: Some(w),
                        cause,
                    };
                    self.finish(id, Err(Some(last)));
                }
            }
        }
    }

    fn take_free(&mut self) -> Option<Worker> {
        while let Some(w) = self.free.pop() {
            let cap = self.opts.in_flight_per_worker.max(1);
            if self
                .slots
                .get(&w)
                .is_some_and(|s| !s.retiring && s.in_flight < cap)
            {
                return Some(w);
            }
        }
        None
    }

    /// No worker left and none can start: every queued task fails.
    fn fail_queued(&mut self) {
        let message = if self.last_start_failure.is_empty() {
            "the pool has no workers".to_string()
        } else {
            format!(
                "{} workers in a row could not start; the last: {}",
                self.start_failures, self.last_start_failure
            )
        };
        while let Some(id) = self.queue.pop_front() {
            let cause = Cause::NoWorkers {
                message: message.clone(),
            };
            let last = Attempt {
                worker: None,
                cause,
            };
            self.finish(id, Err(Some(last)));
        }
    }
}
