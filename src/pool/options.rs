//! A pool's settings and its counts.

use std::time::Duration;

use crate::worker::WorkerOptions;

/// How a [`Pool`](super::Pool) runs its workers. Build with
/// [`PoolOptions::new`] and the setters.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    pub(crate) workers: usize,
    pub(crate) max_retries: u32,
    pub(crate) retry_panics: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_tasks_per_worker: Option<u64>,
    pub(crate) in_flight_per_worker: usize,
    pub(crate) max_start_failures: u32,
    pub(crate) startup_check: Option<Duration>,
    pub(crate) worker: WorkerOptions,
    pub(crate) chunking: Chunking,
}

/// How a closure pool ([`Pool::new`](super::Pool::new)) packs tasks into
/// requests (see [`PoolOptions::chunk_size`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Chunking {
    /// One task per request (the default).
    #[default]
    None,
    /// Up to this many tasks per request.
    Fixed(usize),
    /// A size picked from the measured time per task (see
    /// [`PoolOptions::chunk_size_auto`]).
    Auto,
}

/// The largest automatic chunk: with the map window at 4 chunks per
/// in-flight place, 8 workers hold at most 32 k tasks (a few MB).
pub(crate) const AUTO_MAX: usize = 1024;

impl Chunking {
    /// The most tasks one request may carry.
    pub(crate) fn max(self) -> usize {
        match self {
            Chunking::None => 1,
            Chunking::Fixed(n) => n.max(1),
            Chunking::Auto => AUTO_MAX,
        }
    }
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_retries: 2,
            retry_panics: false,
            timeout: None,
            max_tasks_per_worker: None,
            in_flight_per_worker: 1,
            max_start_failures: 3,
            startup_check: None,
            worker: WorkerOptions::default(),
            chunking: Chunking::None,
        }
    }
}

impl PoolOptions {
    /// The defaults: one worker per CPU, 2 retries, no timeout, no
    /// recycling, one task in flight per worker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Workers to keep running (at least 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Tries after the first for a task whose worker was lost or whose
    /// deadline passed (default 2, so 3 tries in all; a panic counts only
    /// with [`PoolOptions::retry_panics`]). A task that fails
    /// on every try reports every try's cause.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Whether a task whose function panicked is retried too (default
    /// false). The worker is lost either way (it exits after reporting the
    /// panic, and is replaced); a panic usually comes from the task's own
    /// data and would come again, so by default the task fails at once
    /// with the panic's message, as Ray does not retry application errors.
    /// Set it for panics that depend on the worker (its state, its memory).
    pub fn retry_panics(mut self, retry: bool) -> Self {
        self.retry_panics = retry;
        self
    }

    /// Each try's deadline, from when it is sent (default none). When it
    /// passes, the worker is killed (`SIGKILL`) and replaced, and the task
    /// is retried on another worker.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Recycles a worker after it was given `n` tasks: it is closed once
    /// they are done and a fresh one takes its place (for work that leaks).
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.max_tasks_per_worker = Some(n.max(1));
        self
    }

    /// Tasks sent to one worker before its replies come (default 1).
    ///
    /// Why 1: the protocol has no ids, so a worker holds its tasks in a
    /// queue; when it dies, every task queued on it dies too and runs again
    /// elsewhere, and a deadline counts the time a task waited behind the
    /// others. With one in flight only the task that was running is hit,
    /// and a deadline measures that task alone. More in flight hides the
    /// round trip for tiny tasks (about as much as chunking several items
    /// into one request does, which keeps those guarantees).
    pub fn in_flight_per_worker(mut self, n: usize) -> Self {
        self.in_flight_per_worker = n.max(1);
        self
    }

    /// Workers in a row that may end before their first reply (or fail to
    /// spawn) before the pool stops replacing them (default 3); then, once
    /// none is left, every waiting task fails with
    /// [`Cause::NoWorkers`](crate::task::Cause::NoWorkers) naming the
    /// last one's status. A reply from any worker resets the count.
    pub fn max_start_failures(mut self, n: u32) -> Self {
        self.max_start_failures = n.max(1);
        self
    }

    /// Makes [`Pool::new`](super::Pool::new) and
    /// [`Pool::exec`](super::Pool::exec) wait `within` for a worker that
    /// ends before it is given any work (an exec program that crashes on
    /// start) and fail with its status (default: no wait; such a worker is
    /// then found at its first task, which is retried elsewhere).
    pub fn startup_check(mut self, within: Duration) -> Self {
        self.startup_check = Some(within);
        self
    }

    /// Sends up to `n` queued tasks to a worker as one request (a list),
    /// answered by one reply (a list of per-task outcomes), for tasks so
    /// small that a round trip per task would dominate. `n` of 0 or 1 turns
    /// chunking off.
    ///
    /// Each task stays a task of its own: its result, its failure (a panic
    /// in one task is caught around that task alone and fails only it; the
    /// worker answers the rest of the chunk, then exits and is replaced, as
    /// after any panic), its retries and deadline. A chunk lost with its
    /// worker fails exactly its tasks with no reply yet, and each is
    /// retried alone (a task that failed a try is never chunked again, so
    /// a task that kills its worker cannot take others down twice). A
    /// deadline runs from when the chunk is sent, so it covers the tasks
    /// before it in the chunk: give a timeout larger than a chunk's time.
    ///
    /// Closure pools only: an [`exec`](super::Pool::exec) pool speaks one
    /// line per task (its program, a Python one say, is unchanged), so
    /// there this setting does nothing.
    pub fn chunk_size(mut self, n: usize) -> Self {
        self.chunking = if n <= 1 {
            Chunking::None
        } else {
            Chunking::Fixed(n)
        };
        self
    }

    /// [`PoolOptions::chunk_size`] picked from the measured time per task:
    /// the first chunk has 1 task; each chunk's reply carries the time the
    /// worker spent on its tasks, over its size that is the time per task,
    /// and the next size is what fills about 1 ms of it, at most twice the
    /// last size (it grows gradually, and shrinks at once when tasks get
    /// slower), and at most 1024. The worker's time rather than the round
    /// trip: on a loaded machine a round trip is mostly waiting for a CPU,
    /// which bigger chunks amortize. The map window grows with it (see [`Map`](super::Map)), so
    /// every worker still has work queued and memory stays bounded.
    pub fn chunk_size_auto(mut self) -> Self {
        self.chunking = Chunking::Auto;
        self
    }

    /// Sets the [`Chunking`] directly.
    pub fn chunking(mut self, chunking: Chunking) -> Self {
        self.chunking = match chunking {
            Chunking::Fixed(n) if n <= 1 => Chunking::None,
            c => c,
        };
        self
    }

    /// The options each worker is spawned with (format, limits, regions).
    pub fn worker_options(mut self, opts: WorkerOptions) -> Self {
        self.worker = opts;
        self
    }
}

/// What a pool has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Tasks submitted (map items included).
    pub submitted: u64,
    /// Tasks that finished with a reply.
    pub completed: u64,
    /// Tasks that failed for good.
    pub failed: u64,
    /// Tries sent again after a retryable failure.
    pub retried: u64,
    /// Workers replaced after they ended (killed, crashed, deadline).
    pub replaced: u64,
    /// Workers closed and replaced after `max_tasks_per_worker` (and, with
    /// chunking, a worker that caught a panic and finished its chunk).
    pub recycled: u64,
    /// Tries in flight now.
    pub in_flight: u64,
}
