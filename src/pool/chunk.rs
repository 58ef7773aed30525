//! Chunking: several queued tasks sent to a closure worker as one request
//! (a list) and answered by one reply line (a list of per-task outcomes),
//! each task still filed, retried and timed on its own (see
//! [`PoolOptions::chunk_size`](super::PoolOptions::chunk_size)).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::options::{Chunking, AUTO_MAX};
use super::Pool;
use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::task::{Attempt, Cause, ChunkReply, TaskId};
use crate::worker::Worker;

/// The worker time an automatic chunk aims to take.
const AUTO_TARGET: Duration = Duration::from_millis(1);

/// A map keyed by task id, hashed by [`IdHasher`].
pub(super) type IdMap<V> = HashMap<TaskId, V, BuildHasherDefault<IdHasher>>;

/// The pool's hasher for task ids: ids are sequential, so the low bits
/// (the bucket) are the id itself, and tasks in flight sit in neighbouring
/// buckets; the top 7 bits (hashbrown's tag) are mixed. A profile of a
/// 1M-task map had SipHash and cache misses of randomly placed entries at
/// about a third of the pool thread's time.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        const TAG: u64 = 0xFE00_0000_0000_0000;
        (self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) & TAG) | (self.0 & !TAG)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `TaskId`; anything else still hashes.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A pool's chunking state.
#[derive(Debug, Default)]
pub(super) struct Chunks {
    /// `Chunking::None` for exec pools, whatever the options say.
    mode: Chunking,
    /// The next chunk's size.
    size: usize,
    /// Chunks in flight, by their first task: the worker.
    sent: IdMap<Worker>,
    /// Chunks in flight per worker (`in_flight_per_worker` caps it).
    requests: HashMap<Worker, usize>,
}

impl Chunks {
    pub(super) fn new(mode: Chunking) -> Self {
        Chunks {
            mode,
            size: match mode {
                Chunking::Fixed(n) => n.max(1),
                _ => 1,
            },
            ..Chunks::default()
        }
    }

    /// The most tasks a request may carry (1: no chunking).
    pub(super) fn max(&self) -> usize {
        self.mode.max()
    }

    pub(super) fn on(&self) -> bool {
        self.mode != Chunking::None
    }

    /// The next chunk's size (what [`Chunks::done`] last chose).
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// Task `id` finished a try: if it led a chunk, that chunk is done
    /// (all of a chunk's tries end in the same reply line, or together
    /// with its worker).
    pub(super) fn done(&mut self, id: TaskId) {
        let Some(w) = self.sent.remove(&id) else {
            return;
        };
        if let Some(r) = self.requests.get_mut(&w) {
            *r = r.saturating_sub(1);
            if *r == 0 {
                self.requests.remove(&w);
            }
        }
    }

    /// An automatic size learns from a chunk of `n` tasks that took its
    /// worker `work`: the next size fills [`AUTO_TARGET`] at that time per
    /// task, at most twice the current size (growth is gradual, a
    /// slowdown is followed at once), within 1 and [`AUTO_MAX`]. The
    /// worker's own time, not the round trip: on a loaded machine the round
    /// trip is mostly waiting for a CPU, which a bigger chunk amortizes
    /// rather than suffers from.
    pub(super) fn learn(&mut self, n: usize, work: Duration) {
        if self.mode != Chunking::Auto || n == 0 {
            return;
        }
        let per_task = work.as_secs_f64() / n as f64;
        let fits = (AUTO_TARGET.as_secs_f64() / per_task.max(1e-9)).min(AUTO_MAX as f64) as usize;
        self.size = fits.min(2 * self.size).clamp(1, AUTO_MAX);
    }
}

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// A closure pool whose workers answer chunks (see [`Pool::new`]).
    pub(super) fn new_chunked<F>(opts: &super::PoolOptions, f: F) -> Result<Self>
    where
        F: Fn(Req) -> Rep + Clone + 'static,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        let wopts = opts.worker.clone();
        let mut pool = Self::with_spawner(
            opts,
            Box::new(move |r| {
                let f = f.clone();
                r.spawn_channel(&wopts, move |chan| serve_chunks(chan, &f))
            }),
        )?;
        pool.chunks = Chunks::new(opts.chunking);
        Ok(pool)
    }

    /// Files chunk bookkeeping for the tries just filed: chunks done, and
    /// what the workers said their chunks took.
    pub(super) fn learn_chunks(&mut self) {
        if !self.chunks.on() {
            return;
        }
        for (_, n, work) in self.tasks.take_chunk_work() {
            self.chunks.learn(n, work);
        }
    }

    /// Sends queued tasks to free workers, up to the chunk size per request.
    pub(super) fn dispatch_chunks(&mut self) {
        let cap = self.opts.in_flight_per_worker.max(1);
        let mut ids: Vec<TaskId> = Vec::new();
        while !self.queue.is_empty() {
            let Some(w) = self.take_free_chunk(cap) else {
                return;
            };
            ids.clear();
            // A worker to be recycled after m tasks gets no more than m.
            let left = match (self.opts.max_tasks_per_worker, self.slots.get(&w)) {
                (Some(m), Some(slot)) => m.saturating_sub(slot.dispatched).max(1),
                _ => u64::MAX,
            };
            let size = self
                .chunks
                .size()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            while ids.len() < size {
                let Some(&id) = self.queue.front() else {
                    break;
                };
                let Some(entry) = self.entries.get(&id) else {
                    self.queue.pop_front();
                    continue;
                };
                // A task that failed a try goes alone: whatever lost it
                // (its own crash, a deadline) then hits it alone.
                let retry = !entry.tries.is_empty();
                if retry && !ids.is_empty() {
                    break;
                }
                self.queue.pop_front();
                ids.push(id);
                if retry {
                    break;
                }
            }
            if ids.is_empty() {
                self.free.push(w);
                continue;
            }
            let reqs: Vec<&Req> = ids
                .iter()
                .filter_map(|id| self.entries.get(id).map(|e| &e.req))
                .collect();
            match self.tasks.call_chunk_as(&ids, w, &reqs, self.opts.timeout) {
                Ok(()) => {
                    let n = ids.len();
                    self.chunks.sent.insert(ids[0], w);
                    *self.chunks.requests.entry(w).or_default() += 1;
                    if let Some(slot) = self.slots.get_mut(&w) {
                        slot.in_flight += n;
                        slot.dispatched += n as u64;
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
                    // The worker is going (or full): not the tasks' fault.
                    for &id in ids.iter().rev() {
                        self.queue.push_front(id);
                    }
                    if let Some(slot) = self.slots.get_mut(&w) {
                        slot.retiring = true;
                    }
                }
                Err(e) => {
                    self.free.push(w);
                    let message = e.to_string();
                    for &id in &ids {
                        let cause = Cause::Send {
                            message: message.clone(),
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
    }

    /// A live worker with room for another chunk; stale entries of the free
    /// list (a chunk pushes one per task it finished) are dropped.
    fn take_free_chunk(&mut self, cap: usize) -> Option<Worker> {
        while let Some(w) = self.free.pop() {
            let room = self.chunks.requests.get(&w).copied().unwrap_or(0) < cap;
            if room && self.slots.get(&w).is_some_and(|s| !s.retiring) {
                return Some(w);
            }
        }
        None
    }
}

/// In the worker: answers each chunk with one line, each task run with its
/// panic caught, so a panic fails only its own task. After a chunk with a
/// panic the worker exits (status 101, as any panicked worker), so the
/// pool replaces it: its state may be broken.
fn serve_chunks<Req, Rep, F>(chan: &mut Channel, f: &F) -> Result<()>
where
    F: Fn(Req) -> Rep,
    Req: DeserializeOwned,
    Rep: Serialize,
{
    let mut out = ChunkReply(Vec::new(), Vec::new(), 0);
    loop {
        match chan.recv::<Vec<Req>>() {
            Ok(Some(items)) => {
                out.0.clear();
                out.1.clear();
                let started = Instant::now();
                for (i, item) in items.into_iter().enumerate() {
                    match panic::catch_unwind(AssertUnwindSafe(|| f(item))) {
                        Ok(rep) => out.0.push(rep),
                        Err(payload) => {
                            // With its location, as a plain worker's panic
                            // (kept by the worker's panic hook).
                            let message = crate::fork::last_panic_text();
                            // Its drop could panic again, outside any catch.
                            std::mem::forget(payload);
                            out.1.push((i, "panic".to_owned(), message));
                        }
                    }
                }
                out.2 = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let panicked = !out.1.is_empty();
                match chan.send(&out) {
                    // A reply the format cannot carry fails the chunk alone.
                    Err(e @ Error::Encode { .. }) => chan.send_error("encode", &e.to_string())?,
                    other => other?,
                }
                if panicked {
                    chan.flush()?;
                    crate::sys::exit_now(crate::process::EXIT_PANIC);
                }
            }
            Ok(None) => return Ok(()),
            Err(e) if e.is_message_error() => {
                let kind = match &e {
                    Error::Decode(_) => "decode",
                    Error::LineTooLong { .. } => "line too long",
                    // The peer hung up mid-line: nobody to answer.
                    Error::TruncatedLine { .. } => continue,
                    _ => "error",
                };
                chan.send_error(kind, &e.to_string())?;
            }
            Err(e) => return Err(e),
        }
    }
}
