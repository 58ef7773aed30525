//! A pool of workers: local closure workers, exec'd programs, connections
//! to `serve` hosts, or a mix ([`Pool::builder`]), behind [`Pool::map`] (in
//! input order, streaming, with bounded work in flight),
//! [`Pool::map_unordered`], [`Pool::submit`] and its handles; retries on
//! worker loss or deadline; supervision. [`PoolHandle`] is the same pool
//! on a thread of its own, `Send + Sync + Clone`, with futures and
//! blocking calls.
//!
//! Each try of a task is one call to one worker, matched to its answer by
//! the id its frame carries (the pool's own workers, Rust hosts, the
//! Python worker helper) or, for a plain peer, by position with one request
//! at a time; a worker's end fails exactly the tries it had in flight. A try
//! that failed with a retryable [`Cause`] (the worker was lost, a deadline
//! passed, the worker lost step; a panic only with
//! [`PoolOptions::retry_panics`]) goes back to the front of the queue and
//! runs on another worker (and host) when the pool has one, up to
//! [`PoolOptions::max_retries`] times; then the task fails with every try's
//! cause. A worker that ends (killed, crashed, recycled) is replaced.
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

mod build;
mod chunk;
mod engine;
mod handle;
mod map;
mod options;
mod progress;
mod queue;
mod router;
mod supply;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use build::PoolBuilder;
pub use handle::{HandleMap, HandleStream, Pending, PoolHandle};
pub use map::{Map, MapUnordered};
pub use options::{
    Chunking, PoolOptions, PoolStats, DEFAULT_CHUNK_BYTES, MAX_CHUNK, MAX_IN_FLIGHT, MAX_WINDOW,
    MAX_WORKERS,
};
pub use progress::Progress;
pub use supply::{HostState, HostStatus, Hosts, Protocol};

use crate::error::{Error, Result};
use crate::process::{deadline_after, Signal};
use crate::task::calls::{CallId, Calls, Event};
use crate::task::{Attempt, Cause, TaskError, TaskId};
use crate::worker::{Exec, Worker};
use queue::{Origin, Queue, Run, Task};
use router::{Router, SinkId, HANDLES};
use supply::Supply;

/// A task's result: its reply, or why it has none after every try.
pub type TaskResult<Rep> = std::result::Result<Rep, TaskError>;

/// A worker's place in the pool, kept in its slot of the worker set.
#[derive(Debug)]
struct Place {
    origin: Origin,
    /// Tasks given to it so far.
    dispatched: u64,
    /// To be closed once idle (`max_tasks_per_worker`): takes no more.
    recycle: bool,
}

/// A call in flight: the worker it went to and the tasks it carries.
#[derive(Debug)]
struct Unit<Req> {
    worker: Worker,
    origin: Origin,
    load: Load<Req>,
}

/// The tasks of a call, in order: a run of fresh ones (a chunk: no
/// bookkeeping per task), or tasks of their own.
#[derive(Debug)]
enum Load<Req> {
    Run(Run<Req>),
    One(Task<Req>),
    Tasks(Vec<Task<Req>>),
}

impl<Req> Load<Req> {
    fn len(&self) -> usize {
        match self {
            Load::Run(r) => r.reqs.len(),
            Load::One(_) => 1,
            Load::Tasks(t) => t.len(),
        }
    }

    fn holds(&self, id: TaskId) -> bool {
        match self {
            Load::Run(r) => r.holds(id),
            Load::One(t) => t.id == id,
            Load::Tasks(t) => t.iter().any(|t| t.id == id),
        }
    }

    fn into_tasks(self) -> Vec<Task<Req>> {
        match self {
            Load::Run(r) => r.into_tasks().collect(),
            Load::One(t) => vec![t],
            Load::Tasks(t) => t,
        }
    }
}

/// A pool of workers running one function, a program, or remote hosts
/// (see the [module docs](self)). `Req` is what a task sends, `Rep` what it
/// answers.
///
/// Dropping the pool kills the workers still busy (their process groups),
/// closes the idle ones and reaps them all: no child and no zombie is left.
pub struct Pool<Req, Rep> {
    /// The worker set: one slot per worker, its calls and its [`Place`].
    calls: Calls<Rep, Place>,
    supplies: Vec<Box<dyn Supply>>,
    opts: PoolOptions,
    queue: Queue<Req>,
    running: chunk::IdMap<CallId, Unit<Req>>,
    router: Router<Rep>,
    sizer: chunk::Sizer,
    next_task: u64,
    stats: PoolStats,
    closed: bool,
    /// Tasks whose caller gave up while they ran (see [`Pool::cancel`]).
    cancelled: Vec<TaskId>,
    events: Vec<Event<Rep, Place>>,
    /// The workers a dispatch looks at (kept to reuse its allocation).
    takers: Vec<Worker>,
    progress: Option<progress::Reporter>,
}

impl<Req, Rep> fmt::Debug for Pool<Req, Rep> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.calls.workers())
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
    /// included. The pool's workers speak frames: replies are matched by
    /// id, and tasks may travel in chunks ([`PoolOptions::chunk_size`]).
    ///
    /// Errors: a setting out of its bounds ([`Error::InvalidOption`]); the
    /// first worker that cannot be spawned (nothing is left running); with
    /// [`PoolOptions::startup_check`] one that ends within it
    /// ([`Error::Closed`] with its status).
    pub fn new<F>(opts: &PoolOptions, f: F) -> Result<Self>
    where
        F: Fn(Req) -> Rep + Clone + 'static,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        Self::builder(opts).local(opts.workers, f).build()
    }

    /// [`Pool::new`] with a work function that can fail: an `Err(e)` fails
    /// its task with `e`'s text ([`Cause::Remote`] of kind
    /// [`RemoteKind::Error`](crate::task::RemoteKind::Error)); it is not
    /// retried (it would fail again), and the worker goes on.
    pub fn fallible<F, E>(opts: &PoolOptions, f: F) -> Result<Self>
    where
        F: Fn(Req) -> std::result::Result<Rep, E> + Clone + 'static,
        E: fmt::Display,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        Self::builder(opts).local_fallible(opts.workers, f).build()
    }

    /// [`Pool::new`] whose work function also gets the shared memory
    /// regions a task carries ([`Pool::submit_regions`]; empty for a task
    /// without): mapped read-write, or read-only if the sender sealed them
    /// so. Regions every worker needs from the start are better inherited
    /// ([`WorkerOptions::region`](crate::WorkerOptions::region)).
    pub fn with_regions<F>(opts: &PoolOptions, f: F) -> Result<Self>
    where
        F: Fn(Req, Vec<crate::shm::SharedMemory>) -> Rep + Clone + 'static,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        Self::builder(opts).local_regions(opts.workers, f).build()
    }

    /// A pool of `opts.workers` exec workers running `program`, which must
    /// answer each request line with one reply line. **Its stdout is the
    /// protocol**: a line it prints that is no reply makes the pool recycle
    /// it and run its request again (counted in
    /// [`PoolStats::out_of_sync`]). A plain program gets one request at a
    /// time. A program that speaks frames (the Python worker helper,
    /// `python/miniray_worker.py`, when it finds `MINIRAY_FRAMES=1`, which
    /// the pool sets) has its replies matched by id, and may take several
    /// requests at once and chunks, once its accept line is read (until
    /// then it is sent plain lines, so a fresh helper's first request may
    /// go plain: if it fails, its [`Cause::Remote`]
    /// has no `trace`). A program that cannot be executed fails here with
    /// [`Error::Exec`].
    pub fn exec(opts: &PoolOptions, program: &Exec) -> Result<Self> {
        Self::builder(opts).exec(opts.workers, program).build()
    }

    /// A pool whose workers are connections to `hosts`
    /// ([`Hosts::per_host`] to each; `opts.workers` is ignored). Everything
    /// else of `opts` applies: set [`PoolOptions::timeout`], the only way a
    /// host that stops answering without closing (a stopped process) is
    /// found while a task waits on it. See [`Hosts`] for what happens when
    /// hosts fail. Hosts that cannot be reached now are not an error: they
    /// are retried with backoff, and tasks wait for a host within
    /// [`Hosts::give_up_after`]. It returns once each host's first
    /// connections are up or failed, within [`Hosts::connect_timeout`]
    /// (2 s by default): a host that accepts but never completes the
    /// handshake (a plain server, while a secret is set here) holds it
    /// that long. A host that refuses the handshake is not an error here
    /// either: see [`HostStatus::refused`](crate::pool::HostStatus::refused).
    pub fn remote(opts: &PoolOptions, hosts: &Hosts) -> Result<Self> {
        Self::builder(opts).hosts(hosts).build()
    }

    /// Queues `req` as a task; its result is kept for [`Pool::get`] or
    /// [`Pool::next_done`]. Work is sent as workers free up, while this pool
    /// is waited on. Errors: [`Error::PoolClosed`] once the pool is closed
    /// or terminated.
    pub fn submit(&mut self, req: Req) -> Result<TaskId> {
        if self.closed {
            return Err(Error::PoolClosed);
        }
        // Positions mean nothing in the handle sink, but consecutive ones
        // let submitted tasks join one queue run (and so travel in chunks).
        let seq = self.next_task;
        Ok(self.enqueue(req, HANDLES, seq))
    }

    /// [`Pool::submit`] with shared memory regions attached: they travel
    /// with the request to a local worker (their descriptors, with
    /// `SCM_RIGHTS`; the data is not copied) and its work function gets them
    /// ([`Pool::with_regions`]); a retry carries them again. The pool keeps
    /// a duplicate descriptor of each until the task ends. A task with
    /// regions runs alone (never in a chunk) and only on a local worker:
    /// descriptors do not cross machines.
    ///
    /// Errors: [`Error::PoolClosed`]; [`Error::Region`] for a pool with no
    /// local workers, or more than 32 regions; the descriptor duplicates'.
    pub fn submit_regions(
        &mut self,
        req: Req,
        regions: &[&crate::shm::SharedMemory],
    ) -> Result<TaskId> {
        if self.closed {
            return Err(Error::PoolClosed);
        }
        if !self.supplies.iter().any(|s| s.is_local()) {
            return Err(Error::region(
                "regions travel only to local workers, and this pool has none",
            ));
        }
        if regions.len() > crate::envelope::MAX_REGIONS {
            return Err(Error::region("at most 32 regions per message"));
        }
        let attached = regions
            .iter()
            .map(|r| crate::task::calls::Attached::new(r))
            .collect::<Result<Vec<_>>>()?;
        let id = TaskId(self.next_task);
        self.next_task += 1;
        self.router.expect_run(HANDLES, id, 1);
        self.queue.push_alone(Task {
            id,
            req,
            sink: HANDLES,
            seq: 0,
            tries: Vec::new(),
            avoid: None,
            regions: attached,
        });
        self.stats.submitted += 1;
        Ok(id)
    }

    /// The result of the submitted task `id`, waiting up to `timeout`
    /// (`None`: no limit). `None` when it did not finish in time, or when
    /// no such task is pending (its result was already taken).
    pub fn get(&mut self, id: TaskId, timeout: Option<Duration>) -> Option<TaskResult<Rep>> {
        let until = timeout.and_then(deadline_after);
        loop {
            if let Some(r) = self.router.take_handle(id) {
                return Some(r);
            }
            if !self.router.handle_pending(id) {
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
            if let Some(done) = self.router.next_handle() {
                return Some(done);
            }
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            if self.router.handles_pending() == 0 || left == Some(Duration::ZERO) {
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

    /// Runs every item, yielding results in input order as they are ready
    /// (see [`Map`] for the bound on work in flight).
    pub fn map<I>(&mut self, items: I) -> Map<'_, Req, Rep, I::IntoIter>
    where
        I: IntoIterator<Item = Req>,
    {
        Map::new(self, items.into_iter(), true)
    }

    /// [`Pool::map`] yielding each result as soon as it is ready, with its
    /// task id (the input index on a fresh pool): one slow task holds up
    /// nothing behind it.
    pub fn map_unordered<I>(&mut self, items: I) -> MapUnordered<'_, Req, Rep, I::IntoIter>
    where
        I: IntoIterator<Item = Req>,
    {
        MapUnordered::new(self, items.into_iter())
    }

    /// Finishes every queued and in-flight task (their results stay
    /// available through [`Pool::get`]), then closes the workers and reaps
    /// them. Later submits fail with [`Error::PoolClosed`].
    pub fn close(&mut self) {
        while self.router.anything_awaited() {
            self.step(None);
        }
        self.closed = true;
        self.shut_down();
    }

    /// Kills every worker at once (their process groups get `SIGKILL`) and
    /// reaps them; unfinished tasks fail with [`Cause::Terminated`].
    pub fn terminate(&mut self) {
        self.terminate_with(Cause::Terminated);
    }
}

impl<Req, Rep> Pool<Req, Rep> {
    /// Counts so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            in_flight: self.running.values().map(|u| u.load.len() as u64).sum(),
            out_of_sync: self.calls.out_of_sync(),
            late_answers: self.calls.strays(),
            ..self.stats
        }
    }

    /// Why the latest worker that lost step did (its offending line
    /// quoted, at most 200 bytes), or `None` if none has
    /// ([`PoolStats::out_of_sync`] counts them). Its tries ran again; this is
    /// what to look at when the count grows.
    pub fn last_out_of_sync(&self) -> Option<&str> {
        self.calls.last_out_of_sync()
    }

    /// The live workers.
    pub fn workers(&self) -> Vec<Worker> {
        self.calls.slots().map(|(w, _)| w).collect()
    }

    /// A worker's process id (while it runs; `None` for a remote worker).
    pub fn pid(&self, w: Worker) -> Option<i32> {
        self.calls.reactor().pid(w)
    }

    /// The host a remote worker is connected to (`None` for a local worker
    /// or one that ended).
    pub fn host_of(&self, w: Worker) -> Option<SocketAddr> {
        let origin = self.calls.slot(w)?.ext.origin;
        self.supplies.get(origin.supply)?.host_addr(origin.host?)
    }

    /// Each remote host as it stands (empty for a local pool); drained
    /// hosts stay listed, so a host's place never changes.
    pub fn hosts(&self) -> Vec<HostStatus> {
        self.supplies
            .iter()
            .flat_map(|s| s.host_statuses())
            .collect()
    }

    /// The handle of the host source this pool started ([`Hosts::source`],
    /// [`Hosts::dns`], [`Hosts::slurm`]) if it is an `S`: a
    /// [`SlurmLauncher`](crate::cluster::SlurmLauncher) to start or cancel
    /// steps while the pool runs, a [`DnsSource`](crate::cluster::DnsSource)
    /// for its status. The first such source of the pool's.
    pub fn host_source<S: 'static>(&self) -> Option<&S> {
        self.supplies
            .iter()
            .find_map(|s| s.host_source()?.downcast_ref())
    }

    /// Sends `signal` to a local worker's process group ([`Reactor::kill`](crate::Reactor::kill)).
    /// If it dies, its tasks in flight are retried and it is replaced.
    pub fn kill(&mut self, w: Worker, signal: impl Into<Signal>) -> Result<()> {
        self.calls.reactor_mut().kill(w, signal)
    }

    /// [`Pool::terminate`], unfinished tasks failing with `cause`.
    pub(crate) fn terminate_with(&mut self, cause: Cause) {
        self.closed = true;
        for s in &mut self.supplies {
            s.stop();
        }
        let busy: Vec<Worker> = self.calls.slots().map(|(w, _)| w).collect();
        for w in busy {
            let _ = self.calls.reactor_mut().kill(w, Signal::KILL);
        }
        let running: Vec<Unit<Req>> = self.running.drain().map(|(_, u)| u).collect();
        let queued: Vec<Task<Req>> = self.queue.drain();
        for task in running
            .into_iter()
            .flat_map(|u| u.load.into_tasks())
            .chain(queued)
        {
            let last = Attempt {
                worker: None,
                cause: cause.clone(),
            };
            self.finish(task, Err(Some(last)));
        }
        self.shut_down();
    }

    fn shut_down(&mut self) {
        for s in &mut self.supplies {
            s.stop();
        }
        self.calls.shutdown();
    }

    /// Makes a task of `req` for `sink`, at position `seq` there.
    fn enqueue(&mut self, req: Req, sink: SinkId, seq: u64) -> TaskId {
        let id = TaskId(self.next_task);
        self.enqueue_run(std::iter::once(req), sink, seq);
        id
    }

    /// Makes tasks of what `reqs` gives for `sink`, at positions from `seq`
    /// there: one queue run, one count for the router. How many it made.
    fn enqueue_run(&mut self, reqs: impl Iterator<Item = Req>, sink: SinkId, seq: u64) -> usize {
        let first = TaskId(self.next_task);
        let n = self.queue.push_fresh_run(first, seq, sink, reqs);
        self.next_task += n as u64;
        self.router.expect_run(sink, first, n);
        self.stats.submitted += n as u64;
        n
    }

    /// Ends `task`: with its reply, or failed with the tries recorded so
    /// far plus `last` when given.
    fn finish(&mut self, mut task: Task<Req>, result: std::result::Result<Rep, Option<Attempt>>) {
        let result = match result {
            Ok(rep) => {
                self.stats.completed += 1;
                Ok(rep)
            }
            Err(last) => {
                self.stats.failed += 1;
                task.tries.extend(last);
                Err(TaskError::with_tries(task.id, task.tries))
            }
        };
        self.router.deliver(task.sink, task.seq, task.id, result);
    }

    /// Ends a run whose every task succeeded: its replies filed together.
    fn finish_run(&mut self, run: Run<Req>, reps: Vec<Rep>) {
        self.stats.completed += reps.len() as u64;
        self.router.deliver_run(run.sink, run.seq, run.first, reps);
    }

    /// Forgets the tasks of a dropped map: queued ones never run, running
    /// ones' results are thrown away.
    fn abandon(&mut self, sink: SinkId) {
        self.router.drop_map(sink);
        let gone = self.queue.remove_sink(sink);
        self.router.forget(sink, gone);
    }
}

impl<Req, Rep> Drop for Pool<Req, Rep> {
    fn drop(&mut self) {
        // Busy workers may never finish: kill them; idle ones exit on EOF.
        // Shutdown then reaps every child.
        let busy: Vec<Worker> = self
            .calls
            .slots()
            .filter(|(_, s)| s.in_flight() > 0)
            .map(|(w, _)| w)
            .collect();
        for w in busy {
            let _ = self.calls.reactor_mut().kill(w, Signal::KILL);
        }
        self.calls.shutdown();
    }
}
