//! The streaming maps: items go in as workers free up, results come out as
//! they are ready, and at most a window of tasks is in the pool at once, so
//! memory stays flat whatever the input's length.

use std::collections::VecDeque;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Pool, Sink, TaskResult};
use crate::error::Result;
use crate::process::Signal;
use crate::task::TaskId;
use crate::worker::Worker;

/// Tasks one map keeps in the pool at once: enough to keep every worker
/// busy while finished results wait for an earlier one to be yielded
/// (4 requests per in-flight place, each of up to the largest chunk).
pub(super) fn window<Req, Rep>(pool: &Pool<Req, Rep>) -> usize {
    (4 * pool.opts.workers * pool.opts.in_flight_per_worker * pool.chunks.max()).max(64)
}

/// [`Pool::map`]'s iterator: one result per item, in input order.
///
/// Items are taken from the input only while fewer than
/// `max(64, 4 × workers × in_flight_per_worker × chunk)` of this map's
/// tasks are unfinished or finished but not yet yielded (`chunk`: the
/// largest chunk, 1 unchunked, n for
/// [`chunk_size(n)`](super::PoolOptions::chunk_size), 1024 for
/// [`chunk_size_auto`](super::PoolOptions::chunk_size_auto)); that bounds
/// the memory it holds, whatever the input's length. [`Map::window`] says
/// how many. Dropping it early forgets its tasks
/// (queued ones never run).
pub struct Map<'p, Req, Rep, I> {
    pool: &'p mut Pool<Req, Rep>,
    input: Option<I>,
    ids: VecDeque<TaskId>,
    window: usize,
}

impl<'p, Req, Rep, I> Map<'p, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    pub(super) fn new(pool: &'p mut Pool<Req, Rep>, input: I) -> Self {
        let window = window(pool);
        Map {
            pool,
            input: Some(input),
            ids: VecDeque::new(),
            window,
        }
    }

    /// The pool, to read its [`stats`](Pool::stats), workers or pids while
    /// mapping.
    pub fn pool(&self) -> &Pool<Req, Rep> {
        self.pool
    }

    /// The most tasks this map keeps taken from its input but not yet
    /// yielded.
    pub fn window(&self) -> usize {
        self.window
    }

    /// [`Pool::kill`] while mapping: the worker's tasks in flight are
    /// retried elsewhere and it is replaced.
    pub fn kill(&mut self, w: Worker, signal: impl Into<Signal>) -> Result<()> {
        self.pool.kill(w, signal)
    }
}

impl<Req, Rep, I> Iterator for Map<'_, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    type Item = TaskResult<Rep>;

    fn next(&mut self) -> Option<TaskResult<Rep>> {
        loop {
            while self.ids.len() < self.window {
                match self.input.as_mut().and_then(Iterator::next) {
                    Some(req) => self
                        .ids
                        .push_back(self.pool.enqueue_any(req, Sink::Ordered)),
                    None => {
                        self.input = None;
                        break;
                    }
                }
            }
            let &front = self.ids.front()?;
            if let Some(r) = self.pool.done.remove(&front) {
                self.ids.pop_front();
                return Some(r);
            }
            self.pool.step(None);
        }
    }
}

impl<Req, Rep, I> Drop for Map<'_, Req, Rep, I> {
    fn drop(&mut self) {
        self.pool.abandon(Sink::Ordered, self.ids.drain(..));
    }
}

impl<Req, Rep, I> fmt::Debug for Map<'_, Req, Rep, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("unyielded", &self.ids.len())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// [`Pool::map_unordered`]'s iterator: `(task id, result)` in completion
/// order, with [`Map`]'s bound on what it holds.
pub struct MapUnordered<'p, Req, Rep, I> {
    pool: &'p mut Pool<Req, Rep>,
    input: Option<I>,
    outstanding: usize,
    window: usize,
}

impl<'p, Req, Rep, I> MapUnordered<'p, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    pub(super) fn new(pool: &'p mut Pool<Req, Rep>, input: I) -> Self {
        let window = window(pool);
        MapUnordered {
            pool,
            input: Some(input),
            outstanding: 0,
            window,
        }
    }

    /// The pool (see [`Map::pool`]).
    pub fn pool(&self) -> &Pool<Req, Rep> {
        self.pool
    }

    /// [`Pool::kill`] while mapping (see [`Map::kill`]).
    pub fn kill(&mut self, w: Worker, signal: impl Into<Signal>) -> Result<()> {
        self.pool.kill(w, signal)
    }
}

impl<Req, Rep, I> Iterator for MapUnordered<'_, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    type Item = (TaskId, TaskResult<Rep>);

    fn next(&mut self) -> Option<(TaskId, TaskResult<Rep>)> {
        loop {
            while self.outstanding < self.window {
                match self.input.as_mut().and_then(Iterator::next) {
                    Some(req) => {
                        self.pool.enqueue_any(req, Sink::Unordered);
                        self.outstanding += 1;
                    }
                    None => {
                        self.input = None;
                        break;
                    }
                }
            }
            if let Some(done) = self.pool.unordered.pop_front() {
                self.outstanding -= 1;
                return Some(done);
            }
            if self.outstanding == 0 {
                return None;
            }
            self.pool.step(None);
        }
    }
}

impl<Req, Rep, I> Drop for MapUnordered<'_, Req, Rep, I> {
    fn drop(&mut self) {
        self.pool.unordered.clear();
        self.pool.abandon(Sink::Unordered, std::iter::empty());
    }
}

impl<Req, Rep, I> fmt::Debug for MapUnordered<'_, Req, Rep, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapUnordered")
            .field("outstanding", &self.outstanding)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}
