//! The streaming maps: items go in as workers free up, results come out as
//! they are ready, and at most a window of tasks is in the pool at once, so
//! memory stays flat whatever the input's length.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::router::SinkId;
use super::{Pool, TaskResult};
use crate::error::Result;
use crate::process::Signal;
use crate::task::TaskId;
use crate::worker::Worker;

/// Takes a finished result of a map's sink, if one is ready.
type Take<Req, Rep> = fn(&mut Pool<Req, Rep>, SinkId) -> Option<(TaskId, TaskResult<Rep>)>;

/// What both maps share: the input, the sink, and the bound on what is
/// taken and not yet yielded.
struct Core<'p, Req, Rep, I> {
    pool: &'p mut Pool<Req, Rep>,
    input: Option<I>,
    sink: SinkId,
    next_seq: u64,
    unyielded: usize,
    window: usize,
}

impl<'p, Req, Rep, I> Core<'p, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    fn new(pool: &'p mut Pool<Req, Rep>, input: I, ordered: bool) -> Self {
        let workers = pool.calls.workers().max(pool.opts.workers);
        let window = pool.opts.window_for(workers);
        let sink = pool.router.open_map(ordered);
        Core {
            pool,
            input: Some(input),
            sink,
            next_seq: 0,
            unyielded: 0,
            window,
        }
    }

    /// Takes items from the input while the window has room, once half of
    /// it is free (at least half a window stays queued or running: items
    /// are taken in runs, not one per result).
    fn fill(&mut self) {
        let room = self.window.saturating_sub(self.unyielded);
        let Some(input) = self
            .input
            .as_mut()
            .filter(|_| room >= self.window.div_ceil(2))
        else {
            return;
        };
        let taken = self
            .pool
            .enqueue_run(input.by_ref().take(room), self.sink, self.next_seq);
        self.next_seq += taken as u64;
        self.unyielded += taken;
        if taken < room {
            // The input ended: it is not asked again.
            self.input = None;
        }
    }

    /// The next result `take` finds, turning the pool until there is one.
    fn next_with(&mut self, take: Take<Req, Rep>) -> Option<(TaskId, TaskResult<Rep>)> {
        loop {
            self.fill();
            if let Some(done) = take(self.pool, self.sink) {
                self.unyielded -= 1;
                return Some(done);
            }
            if self.unyielded == 0 {
                return None;
            }
            self.pool.step(None);
        }
    }
}

impl<Req, Rep, I> Drop for Core<'_, Req, Rep, I> {
    fn drop(&mut self) {
        self.pool.abandon(self.sink);
    }
}

/// [`Pool::map`]'s iterator: one result per item, in input order.
///
/// Items are taken from the input only while fewer than a window of this
/// map's tasks are unfinished or finished but not yet yielded
/// ([`PoolOptions::map_window`](super::PoolOptions::map_window); by default
/// `max(64, 4 × workers × in_flight_per_worker × largest chunk)`); that
/// bounds the memory it holds, whatever the input's length. They are taken
/// in runs, once half the window is free, so at least half a window of
/// tasks stays queued or running while the input lasts.
/// [`Map::window`] says how many. Dropping it early forgets its tasks
/// (queued ones never run).
pub struct Map<'p, Req, Rep, I> {
    core: Core<'p, Req, Rep, I>,
}

impl<'p, Req, Rep, I> Map<'p, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    pub(super) fn new(pool: &'p mut Pool<Req, Rep>, input: I, ordered: bool) -> Self {
        Map {
            core: Core::new(pool, input, ordered),
        }
    }

    /// The pool, to read its [`stats`](Pool::stats), workers or pids while
    /// mapping.
    pub fn pool(&self) -> &Pool<Req, Rep> {
        self.core.pool
    }

    /// The most tasks this map keeps taken from its input but not yet
    /// yielded.
    pub fn window(&self) -> usize {
        self.core.window
    }

    /// [`Pool::kill`] while mapping: the worker's tasks in flight are
    /// retried elsewhere and it is replaced.
    pub fn kill(&mut self, w: Worker, signal: impl Into<Signal>) -> Result<()> {
        self.core.pool.kill(w, signal)
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
        self.core
            .next_with(|pool, sink| pool.router.next_ordered(sink))
            .map(|(_, r)| r)
    }
}

impl<Req, Rep, I> fmt::Debug for Map<'_, Req, Rep, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("unyielded", &self.core.unyielded)
            .field("window", &self.core.window)
            .finish_non_exhaustive()
    }
}

/// [`Pool::map_unordered`]'s iterator: `(task id, result)` in completion
/// order, with [`Map`]'s bound on what it holds.
pub struct MapUnordered<'p, Req, Rep, I> {
    core: Core<'p, Req, Rep, I>,
}

impl<'p, Req, Rep, I> MapUnordered<'p, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    pub(super) fn new(pool: &'p mut Pool<Req, Rep>, input: I) -> Self {
        MapUnordered {
            core: Core::new(pool, input, false),
        }
    }

    /// The pool (see [`Map::pool`]).
    pub fn pool(&self) -> &Pool<Req, Rep> {
        self.core.pool
    }

    /// The most tasks this map keeps taken from its input but not yet
    /// yielded.
    pub fn window(&self) -> usize {
        self.core.window
    }

    /// [`Pool::kill`] while mapping (see [`Map::kill`]).
    pub fn kill(&mut self, w: Worker, signal: impl Into<Signal>) -> Result<()> {
        self.core.pool.kill(w, signal)
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
        self.core
            .next_with(|pool, sink| pool.router.next_unordered(sink))
    }
}

impl<Req, Rep, I> fmt::Debug for MapUnordered<'_, Req, Rep, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapUnordered")
            .field("unyielded", &self.core.unyielded)
            .field("window", &self.core.window)
            .finish_non_exhaustive()
    }
}
