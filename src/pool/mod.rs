//! A pool of local workers, or of connections to `serve` hosts
//! ([`Pool::remote`] over [`Hosts`]): [`Pool::map`] in input order, streaming, with
//! bounded work in flight; [`Pool::map_unordered`]; [`Pool::submit`] and
//! its handles; retries on worker loss or deadline; supervision.
//!
//! Built on [`Tasks`]: each try of a task is one call, so a reply is never
//! given to the wrong task and a worker's end fails exactly the tries it
//! had in flight. A try that failed with a retryable [`Cause`] (the worker
//! was lost, a deadline passed; a panic only with
//! [`PoolOptions::retry_panics`]) goes back to the front of the queue and
//! runs on another worker, up to [`PoolOptions::max_retries`] times; then
//! the task fails with every try's cause. A worker that ends
//! (killed, crashed, recycled) is replaced.
//!
//! ```
//! use std::time::Duration;
//! use miniray::pool::{Pool, PoolOptions};
//! # fn main() -> miniray::Result<()> {
//! let opts = PoolOptions::new().workers(4).timeout(Duration::from_secs(5));
//! let mut pool = Pool::new(&opts, |n: u64| n * n)?;
//! let squares: Vec<u64> = pool.map(0..100u64).collect::<Result<_, _>>().expect("no task failed");
//! assert_eq!(squares[7], 49);
//! # Ok(())
//! # }
//! ```
//!
//! The README's example (the same lines; `tests/pool_chunks.rs` checks
//! they stay the same): a map with a deadline per try, retries elsewhere,
//! and chunks of tiny tasks.
//!
//! ```
//! # fn main() -> miniray::Result<()> {
//! use std::time::Duration;
//! use miniray::pool::{Pool, PoolOptions};
//!
//! let opts = PoolOptions::new()
//!     .workers(8)
//!     .timeout(Duration::from_secs(10)) // a try that takes longer: worker killed, task retried
//!     .max_retries(2) // on another worker, at most twice
//!     .chunk_size_auto(); // tiny tasks travel in chunks
//! let mut pool = Pool::new(&opts, |n: u64| n * n)?;
//! for (n, result) in (0u64..).zip(pool.map(0..10_000u64)) {
//!     match result {
//!         Ok(square) => assert_eq!(square, n * n),
//!         Err(e) => eprintln!("{e}"), // task 7 failed 3 times: (1) on worker 3: ...
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "tokio")]
mod asynch;
mod chunk;
mod engine;
mod hosts;
mod map;
mod options;
mod progress;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(feature = "tokio")]
pub use asynch::{AsyncMap, AsyncMapUnordered, AsyncPool, Submitted};
pub use hosts::{HostStatus, Hosts};
pub use map::{Map, MapUnordered};
pub use options::{Chunking, PoolOptions, PoolStats};
pub use progress::Progress;

use crate::error::{Error, Result};
use crate::process::{deadline_after, Signal};
use crate::reactor::Reactor;
use crate::task::{Attempt, Cause, Done, TaskError, TaskId, Tasks};
use crate::worker::{Exec, Worker};

/// A task's result: its reply, or why it has none after every try.
pub type TaskResult<Rep> = std::result::Result<Rep, TaskError>;

type Spawner = Box<dyn FnMut(&mut Reactor) -> Result<Worker>>;

/// Where a finished task's result goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sink {
    /// [`Pool::submit`]: kept for [`Pool::get`] / [`Pool::next_done`].
    Handle,
    /// An ordered map: kept by id, taken by the map.
    Ordered,
    /// An unordered map: in completion order.
    Unordered,
    /// Its map was dropped: thrown away.
    Discard,
}

#[derive(Debug)]
struct Entry<Req> {
    req: Req,
    tries: Vec<Attempt>,
    sink: Sink,
}

/// A live worker's place in the pool.
#[derive(Debug, Default)]
struct Slot {
    in_flight: usize,
    dispatched: u64,
    /// Gets no more work: recycling, or known to be ending (it panicked).
    retiring: bool,
}

/// N local workers running one function, or connections to remote hosts
/// ([`Pool::remote`]) (see the [module docs](self)).
/// `Req` is what a task sends, `Rep` what it answers.
///
/// Dropping the pool kills the workers still busy, closes the idle ones
/// and reaps them all: no child and no zombie is left.
pub struct Pool<Req, Rep> {
    tasks: Tasks<Rep>,
    spawn: Spawner,
    opts: PoolOptions,
    slots: HashMap<Worker, Slot>,
    /// One entry per free in-flight place of a worker; stale entries (of
    /// workers gone or retiring) are skipped when taken.
    free: Vec<Worker>,
    /// Workers closed for recycling: their end is no loss.
    retired: HashSet<Worker>,
    queue: VecDeque<TaskId>,
    entries: chunk::IdMap<Entry<Req>>,
    done: chunk::IdMap<TaskResult<Rep>>,
    /// Finished handles (`Sink::Handle`), in completion order.
    finished: VecDeque<TaskId>,
    unordered: VecDeque<(TaskId, TaskResult<Rep>)>,
    next_id: u64,
    stats: PoolStats,
    /// Workers in a row that ended before any reply (or failed to spawn).
    start_failures: u32,
    last_start_failure: String,
    closed: bool,
    batch: Vec<Done<Rep>>,
    /// The hosts of a [`Pool::remote`]: they supply its workers.
    remote: Option<Box<hosts::Remote>>,
    /// Chunking (closure pools only): see `chunk.rs`.
    chunks: chunk::Chunks,
    /// The progress callback: see `progress.rs`.
    progress: Option<progress::Reporter>,
}

impl<Req, Rep> fmt::Debug for Pool<Req, Rep> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.slots.len())
            .field("queued", &self.queue.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// A pool of `opts.workers` forked workers, each answering a request
    /// with `f(request)`. `f` is cloned into every worker, replacements
    /// included.
    ///
    /// Errors: the first worker that cannot be spawned (nothing is left
    /// running), or with [`PoolOptions::startup_check`] one that ends
    /// within it ([`Error::Closed`] with its status).
    pub fn new<F>(opts: &PoolOptions, f: F) -> Result<Self>
    where
        F: Fn(Req) -> Rep + Clone + 'static,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        if opts.chunking != Chunking::None {
            return Self::new_chunked(opts, f);
        }
        let wopts = opts.worker.clone();
        Self::with_spawner(opts, Box::new(move |r| r.spawn_with(&wopts, f.clone())))
    }

    /// A pool of `opts.workers` exec workers running `program` (which must
    /// answer each request line with one reply line, in order). A program
    /// that cannot be executed fails here with [`Error::Exec`].
    pub fn exec(opts: &PoolOptions, program: &Exec) -> Result<Self> {
        let (wopts, program) = (opts.worker.clone(), program.clone());
        Self::with_spawner(opts, Box::new(move |r| r.spawn_exec(&wopts, &program)))
    }

    fn with_spawner(opts: &PoolOptions, spawn: Spawner) -> Result<Self> {
        let mut pool = Self::unstarted(opts, spawn)?;
        for _ in 0..pool.opts.workers.max(1) {
            pool.spawn_one()?;
        }
        if let Some(check) = pool.opts.startup_check {
            pool.check_start(check)?;
        }
        Ok(pool)
    }

    /// The pool with no worker yet.
    fn unstarted(opts: &PoolOptions, spawn: Spawner) -> Result<Self> {
        Ok(Pool {
            tasks: Tasks::new(Reactor::new()?),
            spawn,
            opts: opts.clone(),
            slots: HashMap::new(),
            free: Vec::new(),
            retired: HashSet::new(),
            queue: VecDeque::new(),
            entries: chunk::IdMap::default(),
            done: chunk::IdMap::default(),
            finished: VecDeque::new(),
            unordered: VecDeque::new(),
            next_id: 0,
            stats: PoolStats::default(),
            start_failures: 0,
            last_start_failure: String::new(),
            closed: false,
            batch: Vec::new(),
            remote: None,
            chunks: chunk::Chunks::default(),
            progress: None,
        })
    }

    /// Waits `within` for a worker that ends before it is given work.
    fn check_start(&mut self, within: Duration) -> Result<()> {
        let until = deadline_after(within);
        loop {
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            self.tasks.wait(left)?;
            if let Some(e) = self.tasks.take_ended().first() {
                return Err(Error::Closed { status: e.status });
            }
            if left == Some(Duration::ZERO) {
                return Ok(());
            }
        }
    }

    fn spawn_one(&mut self) -> Result<Worker> {
        let w = (self.spawn)(self.tasks.reactor_mut())?;
        self.slots.insert(w, Slot::default());
        for _ in 0..self.opts.in_flight_per_worker.max(1) {
            self.free.push(w);
        }
        Ok(w)
    }

    /// Queues `req` as a task; its result is kept for [`Pool::get`] or
    /// [`Pool::next_done`]. Work is sent as workers free up, while this pool
    /// is waited on. Errors: [`Error::Closed`] once the pool is closed or
    /// terminated.
    pub fn submit(&mut self, req: Req) -> Result<TaskId> {
        self.enqueue(req, Sink::Handle)
    }

    fn enqueue(&mut self, req: Req, sink: Sink) -> Result<TaskId> {
        if self.closed {
            return Err(Error::Closed { status: None });
        }
        Ok(self.enqueue_any(req, sink))
    }

    /// The result of the submitted task `id`, waiting up to `timeout`
    /// (`None`: no limit). `None` when it did not finish in time, or when
    /// no such task is pending (its result was already taken).
    pub fn get(&mut self, id: TaskId, timeout: Option<Duration>) -> Option<TaskResult<Rep>> {
        let until = timeout.and_then(deadline_after);
        loop {
            if let Some(r) = self.done.remove(&id) {
                return Some(r);
            }
            if !self.entries.contains_key(&id) {
                return None;
            }
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return None;
            }
            self.step(left);
        }
    }

    /// The next submitted task to finish (in completion order), waiting up
    /// to `timeout`; `None` when none finished in time or none is pending.
    pub fn next_done(&mut self, timeout: Option<Duration>) -> Option<(TaskId, TaskResult<Rep>)> {
        let until = timeout.and_then(deadline_after);
        loop {
            while let Some(id) = self.finished.pop_front() {
                if let Some(r) = self.done.remove(&id) {
                    return Some((id, r));
                }
            }
            let pending = self.entries.values().any(|e| e.sink == Sink::Handle);
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            if !pending || left == Some(Duration::ZERO) {
                return None;
            }
            self.step(left);
        }
    }

    /// One turn of the pool with no task to wait for: sends queued work,
    /// files what finished and replaces workers that ended, waiting up to
    /// `timeout` for something to happen (only a moment when nothing is in
    /// flight). Waiting for results does the same on its own.
    pub fn poll(&mut self, timeout: Option<Duration>) {
        self.step(timeout);
    }

    /// Runs `f` on every item, yielding results in input order as they are
    /// ready (see [`Map`] for the bound on work in flight).
    pub fn map<I>(&mut self, items: I) -> Map<'_, Req, Rep, I::IntoIter>
    where
        I: IntoIterator<Item = Req>,
    {
        Map::new(self, items.into_iter())
    }

    /// [`Pool::map`] yielding each result as soon as it is ready, with its
    /// task id (the input index on a fresh pool).
    pub fn map_unordered<I>(&mut self, items: I) -> MapUnordered<'_, Req, Rep, I::IntoIter>
    where
        I: IntoIterator<Item = Req>,
    {
        MapUnordered::new(self, items.into_iter())
    }

    /// Counts so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            in_flight: self.tasks.len() as u64,
            ..self.stats
        }
    }

    /// The live workers.
    pub fn workers(&self) -> Vec<Worker> {
        self.slots.keys().copied().collect()
    }

    /// A worker's process id (while it runs).
    pub fn pid(&self, w: Worker) -> Option<i32> {
        self.tasks.reactor().pid(w)
    }

    /// Sends `signal` to a worker ([`Reactor::kill`]). If it dies, its tasks
    /// in flight are retried and it is replaced.
    pub fn kill(&mut self, w: Worker, signal: impl Into<Signal>) -> Result<()> {
        self.tasks.reactor_mut().kill(w, signal)
    }

    /// Finishes every queued and in-flight task (their results stay
    /// available through [`Pool::get`]), then closes the workers and reaps
    /// them. Later submits fail with [`Error::Closed`].
    pub fn close(&mut self) {
        while self.entries.values().any(|e| e.sink != Sink::Discard) {
            self.step(None);
        }
        self.closed = true;
        self.shut_down();
    }

    /// Kills every worker at once (`SIGKILL`) and reaps them; unfinished
    /// tasks fail with [`Cause::Terminated`].
    pub fn terminate(&mut self) {
        self.terminate_with(Cause::Terminated);
    }

    /// [`Pool::terminate`], unfinished tasks failing with `cause`.
    pub(crate) fn terminate_with(&mut self, cause: Cause) {
        self.closed = true;
        let ws: Vec<Worker> = self.slots.keys().copied().collect();
        for w in ws {
            let _ = self.tasks.reactor_mut().kill(w, Signal::KILL);
        }
        let ids: Vec<TaskId> = self.entries.keys().copied().collect();
        for id in ids {
            let last = Attempt {
                worker: None,
                cause: cause.clone(),
            };
            self.finish(id, Err(Some(last)));
        }
        self.queue.clear();
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.tasks.shutdown();
        self.slots.clear();
        self.free.clear();
        self.retired.clear();
    }
}

impl<Req, Rep> Pool<Req, Rep> {
    /// Queues `req` for a map (on a closed pool too: there it fails with
    /// [`Cause::NoWorkers`] rather than the map ending early).
    fn enqueue_any(&mut self, req: Req, sink: Sink) -> TaskId {
        let id = TaskId(self.next_id);
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                req,
                tries: Vec::new(),
                sink,
            },
        );
        self.queue.push_back(id);
        self.stats.submitted += 1;
        id
    }

    /// Forgets the tasks of a dropped map (every unfinished one with its
    /// `sink`, and the finished results `ids`): queued ones never run,
    /// running ones' results are thrown away.
    fn abandon(&mut self, sink: Sink, ids: impl Iterator<Item = TaskId>) {
        for id in ids {
            self.done.remove(&id);
        }
        for e in self.entries.values_mut() {
            if e.sink == sink {
                e.sink = Sink::Discard;
            }
        }
        let entries = &mut self.entries;
        self.queue.retain(|id| {
            let forget = entries.get(id).is_some_and(|e| e.sink == Sink::Discard);
            if forget {
                entries.remove(id);
            }
            !forget
        });
    }
}

impl<Req, Rep> Drop for Pool<Req, Rep> {
    fn drop(&mut self) {
        // Busy workers may never finish: kill them; idle ones exit on EOF.
        // Shutdown then reaps every child.
        for (&w, slot) in &self.slots {
            if slot.in_flight > 0 {
                let _ = self.tasks.reactor_mut().kill(w, Signal::KILL);
            }
        }
        self.tasks.shutdown();
    }
}
