//! Tasks waiting for a worker: fresh ones in runs (consecutive tasks of one
//! sink, kept as their requests alone: a map's million items cost a request
//! each, no bookkeeping), tries to run again at the front as tasks of their
//! own, each with what it must avoid.

use std::collections::VecDeque;

use super::router::SinkId;
use crate::task::calls::Attached;
use crate::task::{Attempt, TaskId};
use crate::worker::Worker;

/// Where a worker came from: its supply, and for a remote worker its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) supply: usize,
    pub(crate) host: Option<usize>,
}

/// One task with everything the pool keeps for it.
#[derive(Debug)]
pub(crate) struct Task<Req> {
    pub(crate) id: TaskId,
    pub(crate) req: Req,
    /// Where its result goes, and its place there.
    pub(crate) sink: SinkId,
    pub(crate) seq: u64,
    /// Its failed tries, first to last (charged ones only).
    pub(crate) tries: Vec<Attempt>,
    /// The worker and host its last try failed on: a retry runs elsewhere
    /// when the pool has another.
    pub(crate) avoid: Option<(Worker, Origin)>,
    /// Shared memory regions it carries (local workers only).
    pub(crate) regions: Vec<Attached>,
}

impl<Req> Task<Req> {
    /// Whether it may run on worker `w` from `origin` now, given that
    /// another worker (`elsewhere`) or another host (`other_host`) exists.
    pub(crate) fn may_run_on(
        &self,
        w: Worker,
        origin: Origin,
        elsewhere: bool,
        other_host: bool,
    ) -> bool {
        if !self.regions.is_empty() && origin.host.is_some() {
            // Descriptors do not cross machines.
            return false;
        }
        match self.avoid {
            None => true,
            Some((bad, bad_origin)) => {
                let same_host = bad_origin.host.is_some() && bad_origin == origin;
                !((bad == w && elsewhere) || (same_host && other_host))
            }
        }
    }
}

/// Consecutive fresh tasks of one sink: ids `first..`, positions `seq..`.
#[derive(Debug)]
pub(crate) struct Run<Req> {
    pub(crate) first: TaskId,
    pub(crate) seq: u64,
    pub(crate) sink: SinkId,
    pub(crate) reqs: Vec<Req>,
}

impl<Req> Run<Req> {
    /// Its tasks, one by one (a run that cannot stay one: a chunk that
    /// failed, an item to fail).
    pub(crate) fn into_tasks(self) -> impl Iterator<Item = Task<Req>> {
        let (first, seq, sink) = (self.first.get(), self.seq, self.sink);
        self.reqs.into_iter().zip(0u64..).map(move |(req, i)| Task {
            id: TaskId(first + i),
            req,
            sink,
            seq: seq + i,
            tries: Vec::new(),
            avoid: None,
            regions: Vec::new(),
        })
    }

    /// Cuts the run at `at`: this keeps the first `at` tasks, the rest is
    /// returned.
    pub(crate) fn split_off(&mut self, at: usize) -> Run<Req> {
        let at = at.min(self.reqs.len());
        Run {
            first: TaskId(self.first.get() + at as u64),
            seq: self.seq + at as u64,
            sink: self.sink,
            reqs: self.reqs.split_off(at),
        }
    }

    /// Whether task `id` is one of the run's.
    pub(crate) fn holds(&self, id: TaskId) -> bool {
        id.get()
            .checked_sub(self.first.get())
            .is_some_and(|i| i < self.reqs.len() as u64)
    }
}

/// A queue entry: a run of fresh tasks, or one task to run alone.
#[derive(Debug)]
enum Entry<Req> {
    Fresh {
        first: u64,
        seq: u64,
        sink: SinkId,
        reqs: VecDeque<Req>,
    },
    Alone(Task<Req>),
}

impl<Req> Entry<Req> {
    /// The entry's tasks, one by one.
    fn into_tasks(self) -> Vec<Task<Req>> {
        match self {
            Entry::Alone(t) => vec![t],
            Entry::Fresh {
                first,
                seq,
                sink,
                reqs,
            } => Run {
                first: TaskId(first),
                seq,
                sink,
                reqs: Vec::from(reqs),
            }
            .into_tasks()
            .collect(),
        }
    }
}

/// The queue (see the module docs).
#[derive(Debug)]
pub(crate) struct Queue<Req> {
    entries: VecDeque<Entry<Req>>,
    len: usize,
}

impl<Req> Default for Queue<Req> {
    fn default() -> Self {
        Queue {
            entries: VecDeque::new(),
            len: 0,
        }
    }
}

impl<Req> Queue<Req> {
    /// Queues the fresh tasks `reqs` gives, numbered from `first` and
    /// placed from `seq` on in `sink` (at the back, in the run before them
    /// when they follow it); how many it gave.
    pub(crate) fn push_fresh_run(
        &mut self,
        first: TaskId,
        seq: u64,
        sink: SinkId,
        reqs: impl Iterator<Item = Req>,
    ) -> usize {
        let n = match self.entries.back_mut() {
            Some(Entry::Fresh {
                first: f,
                seq: s,
                sink: k,
                reqs: run,
            }) if *k == sink
                && *f + run.len() as u64 == first.get()
                && *s + run.len() as u64 == seq =>
            {
                let before = run.len();
                run.extend(reqs);
                run.len() - before
            }
            _ => {
                let run: VecDeque<Req> = reqs.collect();
                let n = run.len();
                if n > 0 {
                    self.entries.push_back(Entry::Fresh {
                        first: first.get(),
                        seq,
                        sink,
                        reqs: run,
                    });
                }
                n
            }
        };
        self.len += n;
        n
    }

    /// Queues a task that runs alone (one that carries regions) at the back.
    pub(crate) fn push_alone(&mut self, task: Task<Req>) {
        self.len += 1;
        self.entries.push_back(Entry::Alone(task));
    }

    /// Puts a task back at the front, to run alone (a retry, or a chunk's
    /// task sent again).
    pub(crate) fn push_front(&mut self, task: Task<Req>) {
        self.len += 1;
        self.entries.push_front(Entry::Alone(task));
    }

    /// Puts a run's untaken rest back at the front, still fresh.
    pub(crate) fn push_front_run(&mut self, run: Run<Req>) {
        if run.reqs.is_empty() {
            return;
        }
        self.len += run.reqs.len();
        self.entries.push_front(Entry::Fresh {
            first: run.first.get(),
            seq: run.seq,
            sink: run.sink,
            reqs: run.reqs.into(),
        });
    }

    /// Tasks waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the front task is fresh (may travel in a chunk).
    pub(crate) fn front_is_fresh(&self) -> bool {
        matches!(self.entries.front(), Some(Entry::Fresh { .. }))
    }

    /// Up to `n` fresh tasks from the front run.
    pub(crate) fn take_run(&mut self, n: usize) -> Option<Run<Req>> {
        let Some(Entry::Fresh {
            first,
            seq,
            sink,
            reqs,
        }) = self.entries.front_mut()
        else {
            return None;
        };
        let k = n.min(reqs.len());
        let run = Run {
            first: TaskId(*first),
            seq: *seq,
            sink: *sink,
            reqs: reqs.drain(..k).collect(),
        };
        *first += k as u64;
        *seq += k as u64;
        if reqs.is_empty() {
            self.entries.pop_front();
        }
        self.len -= k;
        Some(run)
    }

    /// The first of the first `look` entries' tasks that `fits` (a retry
    /// that avoids a worker lets a task behind it go first; a fresh task
    /// fits anywhere).
    pub(crate) fn take_for(
        &mut self,
        look: usize,
        fits: impl Fn(&Task<Req>) -> bool,
    ) -> Option<Task<Req>> {
        let i = self.entries.iter().take(look).position(|e| match e {
            Entry::Fresh { .. } => true,
            Entry::Alone(t) => fits(t),
        })?;
        self.len -= 1;
        match &mut self.entries[i] {
            Entry::Fresh {
                first,
                seq,
                sink,
                reqs,
            } => {
                let req = reqs.pop_front()?;
                let task = Task {
                    id: TaskId(*first),
                    req,
                    sink: *sink,
                    seq: *seq,
                    tries: Vec::new(),
                    avoid: None,
                    regions: Vec::new(),
                };
                *first += 1;
                *seq += 1;
                if reqs.is_empty() {
                    self.entries.remove(i);
                }
                Some(task)
            }
            Entry::Alone(_) => match self.entries.remove(i) {
                Some(Entry::Alone(t)) => Some(t),
                _ => None,
            },
        }
    }

    /// Removes the tasks `drop(id, sink)` picks, as tasks.
    pub(crate) fn remove_where(&mut self, drop: impl Fn(TaskId, SinkId) -> bool) -> Vec<Task<Req>> {
        let mut gone = Vec::new();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            if let Entry::Alone(t) = e {
                if drop(t.id, t.sink) {
                    gone.push(t);
                } else {
                    kept.push_back(Entry::Alone(t));
                }
                continue;
            }
            // A run: split around the dropped tasks, keeping the rest fresh.
            let mut rest: Option<Entry<Req>> = None;
            for t in e.into_tasks() {
                if drop(t.id, t.sink) {
                    if let Some(r) = rest.take() {
                        kept.push_back(r);
                    }
                    gone.push(t);
                    continue;
                }
                match &mut rest {
                    Some(Entry::Fresh { reqs, .. }) => reqs.push_back(t.req),
                    _ => {
                        rest = Some(Entry::Fresh {
                            first: t.id.get(),
                            seq: t.seq,
                            sink: t.sink,
                            reqs: VecDeque::from([t.req]),
                        })
                    }
                }
            }
            if let Some(r) = rest {
                kept.push_back(r);
            }
        }
        self.entries = kept;
        self.len -= gone.len();
        gone
    }

    /// Takes every task out.
    pub(crate) fn drain(&mut self) -> Vec<Task<Req>> {
        self.len = 0;
        self.entries.drain(..).flat_map(Entry::into_tasks).collect()
    }
}
