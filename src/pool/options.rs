//! A pool's settings, their bounds, and its counts.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::worker::WorkerOptions;

/// How a [`Pool`](super::Pool) runs its workers. Build with
/// [`PoolOptions::new`] and the setters; a pool checks the settings when it
/// is made and refuses one out of its bounds with
/// [`Error::InvalidOption`] naming it.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    pub(crate) workers: usize,
    pub(crate) max_retries: u32,
    pub(crate) retry_panics: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_tasks_per_worker: Option<u64>,
    in_flight_per_worker: Option<usize>,
    pub(crate) max_start_failures: u32,
    pub(crate) startup_check: Option<Duration>,
    pub(crate) worker: WorkerOptions,
    pub(crate) chunking: Chunking,
    pub(crate) chunk_bytes: Option<usize>,
    pub(crate) window: Option<usize>,
}

/// How tasks are packed into requests (see [`PoolOptions::chunk_size`]).
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

/// The largest automatic chunk.
pub(crate) const AUTO_MAX: usize = 1024;
/// The largest chunk [`PoolOptions::chunk_size`] takes.
pub const MAX_CHUNK: usize = 1 << 16;
/// The most tasks one worker may hold at once
/// ([`PoolOptions::in_flight_per_worker`]).
pub const MAX_IN_FLIGHT: usize = 1024;
/// The most workers one pool may keep ([`PoolOptions::workers`]).
pub const MAX_WORKERS: usize = 1 << 16;
/// The largest map window ([`PoolOptions::map_window`]).
pub const MAX_WINDOW: usize = 1 << 24;
/// The default bound on a chunk's request line ([`PoolOptions::chunk_bytes`]).
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

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
            in_flight_per_worker: None,
            max_start_failures: 3,
            startup_check: None,
            worker: WorkerOptions::default(),
            chunking: Chunking::None,
            chunk_bytes: None,
            window: None,
        }
    }
}

impl PoolOptions {
    /// The defaults: one worker per CPU, 2 retries, no timeout, no
    /// recycling, no chunking, one task in flight per worker (two chunks
    /// when chunking is on).
    pub fn new() -> Self {
        Self::default()
    }

    /// Local workers to keep running (default: one per CPU; 1 to
    /// [`MAX_WORKERS`]). A remote pool's size comes from its hosts.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Tries after the first for a task whose worker was lost or whose
    /// deadline passed (default 2, so 3 tries in all; a panic counts only
    /// with [`PoolOptions::retry_panics`]). A task that fails on every try
    /// reports every try's cause. A retry runs on another worker, and on
    /// another host, whenever the pool has one.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Whether a task whose function panicked is retried too (default
    /// false). The worker is lost either way (it exits after reporting the
    /// panic, and is replaced); a panic usually comes from the task's own
    /// data and would come again, so by default the task fails at once
    /// with the panic's message. Set it for panics that depend on the
    /// worker (its state, its memory).
    pub fn retry_panics(mut self, retry: bool) -> Self {
        self.retry_panics = retry;
        self
    }

    /// Each try's deadline, from when it is sent (default none;
    /// `Duration::MAX`: none). When it passes, the worker is killed (its
    /// process group gets `SIGKILL`, so what the task started ends too; a
    /// remote worker's connection is dropped) and replaced, and the task
    /// is retried on another worker. A chunk's deadline runs from its send
    /// and covers its tasks together; when it passes, each of its tasks
    /// runs again alone under its own.
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

    /// Requests one worker holds at once (default 1, or 2 with chunking
    /// on; 1 to [`MAX_IN_FLIGHT`]).
    ///
    /// More than one hides the round trip for small tasks (chunking does it
    /// too, with fewer lines): with two chunks in flight a worker finds its
    /// next chunk waiting as it answers one, which makes a chunked map of
    /// tiny tasks about 1.5 times as fast. Workers that speak frames (the pool's own,
    /// Rust hosts, the Python worker helper) match each reply by its id; a
    /// plain peer (any other program, the original Python library's
    /// server) is matched by position, so it always gets one at a time
    /// whatever this says: one stray line would otherwise shift every
    /// reply behind it. When a worker dies, everything it held runs again
    /// elsewhere, and a deadline counts the time a request waited behind
    /// the others.
    pub fn in_flight_per_worker(mut self, n: usize) -> Self {
        self.in_flight_per_worker = Some(n);
        self
    }

    /// The requests one worker holds at once, in force (see
    /// [`PoolOptions::in_flight_per_worker`]).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight_per_worker
            .unwrap_or(if self.chunking == Chunking::None {
                1
            } else {
                2
            })
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

    /// Sends up to `n` queued tasks to a worker as one request, a chunk,
    /// answered by one line, for tasks so small that a round trip per task
    /// would dominate. `n` of 0 or 1 turns chunking off; at most
    /// [`MAX_CHUNK`].
    ///
    /// A chunk is one unit on the wire and in the pool's books, and each
    /// task in it stays a task of its own: its result, its failure (a
    /// panic in one task is caught around that task alone and fails only
    /// it; the worker answers the rest of the chunk, then exits and is
    /// replaced), its retries. A chunk also stops growing at
    /// [`PoolOptions::chunk_bytes`] of request line. When a chunk fails as
    /// a whole (its worker lost, its deadline passed, one of its requests
    /// did not decode, its answer was over the line limit), each of its
    /// tasks runs again alone, and that costs none of them a try: a task
    /// never fails for a neighbour's fault.
    ///
    /// Chunks go to workers that speak frames: the pool's own, Rust hosts
    /// (`serve`, [`Reactor::listen`](crate::Reactor::listen)) and exec
    /// programs using the Python worker helper. A plain peer gets one task
    /// per line whatever this says.
    pub fn chunk_size(mut self, n: usize) -> Self {
        self.chunking = if n <= 1 {
            Chunking::None
        } else {
            Chunking::Fixed(n)
        };
        self
    }

    /// [`PoolOptions::chunk_size`] picked from the measured time per task:
    /// the first chunk has 1 task; each chunk's answer carries the time the
    /// worker spent on its tasks, and the next size is what fills about
    /// 1 ms of it, at most twice the last size (it grows gradually, and
    /// shrinks at once when tasks get slower), and at most 1024. The
    /// worker's time rather than the round trip: on a loaded machine a
    /// round trip is mostly waiting for a CPU, which bigger chunks
    /// amortize. The map window grows with it (see [`PoolOptions::map_window`]).
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

    /// The most bytes a chunk's request line holds (default: 1 MiB or
    /// half the line limit, whichever is less; at least 1 KiB, at most the
    /// line limit): a chunk stops growing there, so large items travel in
    /// small chunks and never make a line over the limit out of items that
    /// fit alone.
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = Some(bytes);
        self
    }

    /// The chunk bound in force (see [`PoolOptions::chunk_bytes`]).
    pub(crate) fn chunk_budget(&self) -> usize {
        let max_line = self.worker.conn.line.max_line;
        self.chunk_bytes
            .unwrap_or_else(|| DEFAULT_CHUNK_BYTES.min(max_line / 2))
            .max(1)
    }

    /// The most tasks a map keeps taken from its input and not yet yielded
    /// (default: 4 requests' worth per place a worker has, at least 64: `max(64, 4 ×
    /// workers × in_flight_per_worker × largest chunk)`; 1 to
    /// [`MAX_WINDOW`]). It bounds the memory a map holds whatever its
    /// input's length. Items are taken in runs once half the window is free. An ordered [`Pool::map`](super::Pool::map) yields
    /// in input order, so one slow task holds the window up behind it: a
    /// stopped host, a straggler. Where that matters more than order
    /// (slow or flaky hosts), use
    /// [`Pool::map_unordered`](super::Pool::map_unordered), which yields
    /// each result as it comes.
    pub fn map_window(mut self, tasks: usize) -> Self {
        self.window = Some(tasks);
        self
    }

    /// The options each local worker is spawned with (format, limits,
    /// inherited regions).
    pub fn worker_options(mut self, opts: WorkerOptions) -> Self {
        self.worker = opts;
        self
    }

    /// The map window in force (see [`PoolOptions::map_window`]).
    pub(crate) fn window_for(&self, workers: usize) -> usize {
        self.window.unwrap_or_else(|| {
            let places = workers
                .saturating_mul(self.in_flight())
                .saturating_mul(self.chunking.max());
            places.saturating_mul(4).clamp(64, MAX_WINDOW)
        })
    }

    /// Checks every setting against its bound.
    pub(crate) fn check(&self) -> Result<()> {
        let max_line = self.worker.conn.line.max_line;
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(invalid(
                "workers",
                format!("{} is not within 1..={MAX_WORKERS}", self.workers),
            ));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.in_flight()) {
            return Err(invalid(
                "in_flight_per_worker",
                format!("{} is not within 1..={MAX_IN_FLIGHT}", self.in_flight()),
            ));
        }
        if let Chunking::Fixed(n) = self.chunking {
            if n > MAX_CHUNK {
                return Err(invalid("chunk_size", format!("{n} is over {MAX_CHUNK}")));
            }
        }
        if let Some(bytes) = self.chunk_bytes {
            if bytes < 1024 || bytes > max_line {
                return Err(invalid(
                    "chunk_bytes",
                    format!("{bytes} is not within 1024..={max_line} (the line limit)"),
                ));
            }
        }
        if let Some(w) = self.window {
            if !(1..=MAX_WINDOW).contains(&w) {
                return Err(invalid(
                    "map_window",
                    format!("{w} is not within 1..={MAX_WINDOW}"),
                ));
            }
        }
        Ok(())
    }
}

fn invalid(option: &'static str, reason: String) -> Error {
    Error::InvalidOption { option, reason }
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
    /// Tries sent again after a retryable failure (a chunk's tasks sent
    /// again alone after the chunk failed as a whole included).
    pub retried: u64,
    /// Workers replaced after they ended (killed, crashed, deadline, lost
    /// step).
    pub replaced: u64,
    /// Workers closed and replaced after `max_tasks_per_worker`.
    pub recycled: u64,
    /// Workers that lost step with the pool (a plain peer's stray or
    /// missing line, a framed peer breaking the protocol): each was
    /// recycled and its tries run again. [`Pool::last_out_of_sync`](crate::Pool::last_out_of_sync)
    /// quotes the latest cause. This is the count of stray events: a plain
    /// worker that printed one extra line counts one here.
    pub out_of_sync: u64,
    /// Lines that came after their try ended (a stopped worker's last
    /// words, a framed reply for an id not in flight): dropped, never
    /// delivered. Not a loss of step of its own: the worker had already
    /// stopped, or the frame named its try. A plain worker's stray usually
    /// counts here too: its real answer, read after the worker was stopped
    /// for the stray, is such a line (so do not add the two counters).
    pub late_answers: u64,
    /// Tries in flight now.
    pub in_flight: u64,
}
