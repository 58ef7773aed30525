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

    /// Removes task `id` if it is queued: a run holding it is split
    /// around it (its other tasks stay fresh, in place); no other entry is
    /// touched.
    pub(crate) fn remove_id(&mut self, id: TaskId) -> Option<Task<Req>> {
        let at = self.entries.iter().position(|e| match e {
            Entry::Alone(t) => t.id == id,
            Entry::Fresh { first, reqs, .. } => id
                .get()
                .checked_sub(*first)
                .is_some_and(|i| i < reqs.len() as u64),
        })?;
        let task = match self.entries.get_mut(at)? {
            Entry::Alone(_) => match self.entries.remove(at)? {
                Entry::Alone(t) => t,
                Entry::Fresh { .. } => return None,
            },
            Entry::Fresh {
                first,
                seq,
                sink,
                reqs,
            } => {
                let i = id.get() - *first;
                let (sink, task_seq) = (*sink, *seq + i);
                let req = if i == 0 {
                    // The first (the usual order of cancels): the run just
                    // starts one later.
                    *first += 1;
                    *seq += 1;
                    reqs.pop_front()?
                } else if i + 1 == reqs.len() as u64 {
                    reqs.pop_back()?
                } else {
                    // From the middle: the tasks after it become a run of
                    // their own, right behind.
                    let after = reqs.split_off(i as usize + 1);
                    let req = reqs.pop_back()?;
                    self.entries.insert(
                        at + 1,
                        Entry::Fresh {
                            first: id.get() + 1,
                            seq: task_seq + 1,
                            sink,
                            reqs: after,
                        },
                    );
                    req
                };
                if matches!(self.entries.get(at), Some(Entry::Fresh { reqs, .. }) if reqs.is_empty())
                {
                    self.entries.remove(at);
                }
                Task {
                    id,
                    req,
                    sink,
                    seq: task_seq,
                    tries: Vec::new(),
                    avoid: None,
                    regions: Vec::new(),
                }
            }
        };
        self.len -= 1;
        Some(task)
    }

    /// Removes every queued task of `sink` (whole runs: a run has one
    /// sink); how many.
    pub(crate) fn remove_sink(&mut self, sink: SinkId) -> usize {
        let before = self.len;
        let len = &mut self.len;
        self.entries.retain(|e| {
            let (s, n) = match e {
                Entry::Alone(t) => (t.sink, 1),
                Entry::Fresh { sink, reqs, .. } => (*sink, reqs.len()),
            };
            if s == sink {
                *len -= n;
            }
            s != sink
        });
        before - self.len
    }

    /// Takes every task out.
    pub(crate) fn drain(&mut self) -> Vec<Task<Req>> {
        self.len = 0;
        self.entries.drain(..).flat_map(Entry::into_tasks).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::router::{Router, HANDLES};

    fn ids(q: &mut Queue<u64>) -> Vec<u64> {
        q.drain().into_iter().map(|t| t.id.get()).collect()
    }

    #[test]
    fn removing_one_task_splits_only_its_run_and_a_sinks_runs_go_whole() {
        let mut router: Router<u64> = Router::default();
        let map = router.open_map(true);
        let mut q = Queue::default();
        assert_eq!(q.push_fresh_run(TaskId(0), 0, map, 0..10u64), 10);
        assert_eq!(q.push_fresh_run(TaskId(10), 0, HANDLES, 10..13u64), 3);
        // Task 4 comes out with its own place; the rest of its run stays
        // fresh, in order, around it.
        let t = q.remove_id(TaskId(4)).expect("queued");
        assert_eq!((t.id.get(), t.req, t.seq), (4, 4, 4));
        assert!(q.remove_id(TaskId(4)).is_none(), "gone");
        assert!(q.remove_id(TaskId(99)).is_none(), "never queued");
        assert_eq!(q.len(), 12);
        let t = q.remove_id(TaskId(12)).expect("the last of its run");
        assert_eq!(t.id.get(), 12);
        // The map's tasks go as whole runs; the others stay.
        assert_eq!(q.remove_sink(map), 9);
        assert_eq!(q.len(), 2);
        assert_eq!(ids(&mut q), [10, 11]);
    }

    #[test]
    fn a_run_split_by_a_removal_keeps_its_order() {
        let mut q = Queue::default();
        q.push_fresh_run(TaskId(0), 0, HANDLES, 0..5u64);
        q.remove_id(TaskId(2)).expect("queued");
        q.remove_id(TaskId(0)).expect("queued");
        assert_eq!(ids(&mut q), [1, 3, 4]);
    }
}
