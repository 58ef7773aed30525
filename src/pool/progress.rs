//! Progress: a callback the pool calls with its counts as work finishes.

use std::fmt;
use std::time::{Duration, Instant};

use super::Pool;

/// A pool's counts, as given to its progress callback
/// ([`Pool::set_progress`]). `done`, `failed` and `retried` only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Tasks submitted (map items included) so far.
    pub submitted: u64,
    /// Tasks that finished with a reply.
    pub done: u64,
    /// Tasks that failed for good.
    pub failed: u64,
    /// Tries in flight on workers now.
    pub in_flight: u64,
    /// Tasks waiting for a worker now (retries included).
    pub queued: u64,
    /// Tries sent again after a retryable failure.
    pub retried: u64,
    /// Workers replaced after they ended.
    pub replaced: u64,
}

/// The callback and when it last ran.
pub(super) struct Reporter {
    every: Duration,
    last_at: Option<Instant>,
    last: Progress,
    f: Box<dyn FnMut(&Progress)>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("every", &self.every)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl<Req, Rep> Pool<Req, Rep> {
    /// Calls `f` with the pool's counts as work goes on: from the pool's
    /// own thread, inside whatever waits on the pool (a map's `next`,
    /// [`Pool::get`], [`Pool::poll`], [`Pool::close`]), after a turn that
    /// changed a count, at most once per `every` — and always once the pool
    /// runs out of work (nothing queued or in flight), so the last call has
    /// the exact totals. `every` of zero: after every turn that filed
    /// results (a batch of completions). Replaces any earlier callback.
    pub fn set_progress(&mut self, every: Duration, f: impl FnMut(&Progress) + 'static) {
        self.progress = Some(Reporter {
            every,
            last_at: None,
            last: Progress::default(),
            f: Box::new(f),
        });
    }

    /// Stops calling the progress callback.
    pub fn clear_progress(&mut self) {
        self.progress = None;
    }
}

impl<Req, Rep> Pool<Req, Rep> {
    /// The counts a progress callback is given, now.
    pub fn progress(&self) -> Progress {
        let stats = self.stats();
        Progress {
            submitted: stats.submitted,
            done: stats.completed,
            failed: stats.failed,
            in_flight: stats.in_flight,
            queued: self.queue.len() as u64,
            retried: stats.retried,
            replaced: stats.replaced,
        }
    }

    /// Calls the progress callback if it is due (see [`Pool::set_progress`]).
    pub(super) fn report_progress(&mut self) {
        let Some(rep) = self.progress.as_ref() else {
            return;
        };
        let p = self.progress();
        if p == rep.last {
            return;
        }
        let idle = p.in_flight == 0 && p.queued == 0;
        let due = rep.last_at.is_none_or(|t| t.elapsed() >= rep.every);
        if !(idle || due) {
            return;
        }
        if let Some(rep) = self.progress.as_mut() {
            rep.last = p;
            rep.last_at = Some(Instant::now());
            (rep.f)(&p);
        }
    }
}
