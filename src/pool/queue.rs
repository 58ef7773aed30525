//! Tasks waiting for a worker: fresh ones in the order they came, tries to
//! run again at the front, each with what it must avoid.

use std::collections::VecDeque;

use super::router::SinkId;
use crate::task::{Attempt, TaskId};
use crate::worker::Worker;

/// Where a worker came from: its supply, and for a remote worker its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) supply: usize,
    pub(crate) host: Option<usize>,
}

/// One task: its request and everything the pool keeps for it.
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
    /// Runs alone: it was in a chunk that failed as a whole.
    pub(crate) alone: bool,
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
        match self.avoid {
            None => true,
            Some((bad, bad_origin)) => {
                let same_host = bad_origin.host.is_some() && bad_origin == origin;
                !((bad == w && elsewhere) || (same_host && other_host))
            }
        }
    }

    /// A task that never failed a try (only those are packed into chunks).
    pub(crate) fn is_fresh(&self) -> bool {
        !self.alone && self.avoid.is_none() && self.tries.is_empty()
    }
}

/// The queue (see the module docs).
#[derive(Debug)]
pub(crate) struct Queue<Req> {
    tasks: VecDeque<Task<Req>>,
}

impl<Req> Default for Queue<Req> {
    fn default() -> Self {
        Queue {
            tasks: VecDeque::new(),
        }
    }
}

impl<Req> Queue<Req> {
    pub(crate) fn push(&mut self, task: Task<Req>) {
        self.tasks.push_back(task);
    }

    /// Puts a task back at the front (a retry, or a chunk's task sent again
    /// alone).
    pub(crate) fn push_front(&mut self, task: Task<Req>) {
        self.tasks.push_front(task);
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub(crate) fn front(&self) -> Option<&Task<Req>> {
        self.tasks.front()
    }

    pub(crate) fn pop_front(&mut self) -> Option<Task<Req>> {
        self.tasks.pop_front()
    }

    /// The first of the first `look` tasks that may run on `w` (a retry
    /// that avoids `w` lets a task behind it go first).
    pub(crate) fn take_for(
        &mut self,
        look: usize,
        fits: impl Fn(&Task<Req>) -> bool,
    ) -> Option<Task<Req>> {
        let i = self.tasks.iter().take(look).position(fits)?;
        self.tasks.remove(i)
    }

    /// Takes the run of fresh tasks at the front, up to `n` of them, into
    /// `out`.
    pub(crate) fn take_fresh(&mut self, n: usize, out: &mut Vec<Task<Req>>) {
        while out.len() < n {
            match self.tasks.front() {
                Some(t) if t.is_fresh() => {
                    if let Some(t) = self.tasks.pop_front() {
                        out.push(t);
                    }
                }
                _ => break,
            }
        }
    }

    /// Removes the tasks `drop` picks.
    pub(crate) fn remove_where(
        &mut self,
        mut drop: impl FnMut(&Task<Req>) -> bool,
    ) -> Vec<Task<Req>> {
        let mut gone = Vec::new();
        let mut kept = VecDeque::with_capacity(self.tasks.len());
        for t in self.tasks.drain(..) {
            if drop(&t) {
                gone.push(t);
            } else {
                kept.push_back(t);
            }
        }
        self.tasks = kept;
        gone
    }

    /// Takes every task out.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Task<Req>> + '_ {
        self.tasks.drain(..)
    }
}
