//! Where finished tasks go: the one result router behind every front of
//! the pool. A task's result goes to its sink: the submitted tasks' (kept
//! for [`Pool::get`](super::Pool::get) and
//! [`Pool::next_done`](super::Pool::next_done); the thread behind a
//! [`PoolHandle`](super::PoolHandle) takes them from there), an ordered
//! map's (held by position until the results before it are yielded), an
//! unordered map's (in completion order), or nowhere (a dropped map's).

use std::collections::VecDeque;

use slab::Slab;

use super::chunk::IdMap;
use super::TaskResult;
use crate::task::TaskId;

/// A sink's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SinkId(usize);

/// The submitted tasks' sink, which always exists.
pub(crate) const HANDLES: SinkId = SinkId(0);

#[derive(Debug)]
enum Sink<Rep> {
    /// Submitted tasks: finished results by id, in completion order.
    Handles {
        done: IdMap<TaskId, TaskResult<Rep>>,
        order: VecDeque<TaskId>,
        pending: IdMap<TaskId, ()>,
    },
    /// An ordered map: results held by the position they start at, from
    /// `next` on; the block being yielded is `current`.
    Ordered {
        next: u64,
        current: Option<Block<Rep>>,
        held: IdMap<u64, Block<Rep>>,
    },
    /// An unordered map: results in completion order.
    Unordered { done: VecDeque<Block<Rep>> },
    /// A dropped map: its results are thrown away.
    Dropped,
}

/// Finished results as they are kept: a run's replies together (a chunk
/// that succeeded whole: no entry per task), or one task's result.
#[derive(Debug)]
enum Block<Rep> {
    Run {
        next_id: u64,
        reps: std::vec::IntoIter<Rep>,
    },
    One(TaskId, TaskResult<Rep>),
}

impl<Rep> Block<Rep> {
    /// The block's next result, if any is left.
    fn take(&mut self) -> Option<(TaskId, TaskResult<Rep>)> {
        match self {
            Block::Run { next_id, reps } => {
                let rep = reps.next()?;
                let id = TaskId(*next_id);
                *next_id += 1;
                Some((id, Ok(rep)))
            }
            Block::One(..) => None,
        }
    }
}

/// Sinks and what each waits for.
#[derive(Debug)]
pub(crate) struct Router<Rep> {
    sinks: Slab<(Sink<Rep>, usize)>,
}

impl<Rep> Default for Router<Rep> {
    fn default() -> Self {
        let mut sinks = Slab::new();
        let handles = sinks.insert((
            Sink::Handles {
                done: IdMap::default(),
                order: VecDeque::new(),
                pending: IdMap::default(),
            },
            0,
        ));
        debug_assert_eq!(handles, HANDLES.0);
        Router { sinks }
    }
}

impl<Rep> Router<Rep> {
    /// A sink for a new map.
    pub(crate) fn open_map(&mut self, ordered: bool) -> SinkId {
        let sink = if ordered {
            Sink::Ordered {
                next: 0,
                current: None,
                held: IdMap::default(),
            }
        } else {
            Sink::Unordered {
                done: VecDeque::new(),
            }
        };
        SinkId(self.sinks.insert((sink, 0)))
    }

    /// Tasks `first..first + n` were made for `sink`: it counts them as
    /// outstanding (a handle sink also keeps their ids as pending).
    pub(crate) fn expect_run(&mut self, sink: SinkId, first: TaskId, n: usize) {
        if let Some((s, outstanding)) = self.sinks.get_mut(sink.0) {
            *outstanding += n;
            if let Sink::Handles { pending, .. } = s {
                for i in 0..n as u64 {
                    pending.insert(TaskId(first.get() + i), ());
                }
            }
        }
    }

    /// Files a finished task's result.
    pub(crate) fn deliver(&mut self, sink: SinkId, seq: u64, id: TaskId, result: TaskResult<Rep>) {
        let Some((s, outstanding)) = self.sinks.get_mut(sink.0) else {
            return;
        };
        *outstanding = outstanding.saturating_sub(1);
        match s {
            Sink::Handles {
                done,
                order,
                pending,
            } => {
                pending.remove(&id);
                done.insert(id, result);
                order.push_back(id);
            }
            Sink::Ordered { held, .. } => {
                held.insert(seq, Block::One(id, result));
            }
            Sink::Unordered { done } => done.push_back(Block::One(id, result)),
            Sink::Dropped => {
                if *outstanding == 0 {
                    self.sinks.remove(sink.0);
                }
            }
        }
    }

    /// Files a run's replies together: tasks `first..` at positions
    /// `seq..` of `sink`, all succeeded.
    pub(crate) fn deliver_run(&mut self, sink: SinkId, seq: u64, first: TaskId, reps: Vec<Rep>) {
        let Some((s, outstanding)) = self.sinks.get_mut(sink.0) else {
            return;
        };
        let n = reps.len();
        *outstanding = outstanding.saturating_sub(n);
        let block = Block::Run {
            next_id: first.get(),
            reps: reps.into_iter(),
        };
        match s {
            Sink::Ordered { held, .. } => {
                held.insert(seq, block);
            }
            Sink::Unordered { done } => done.push_back(block),
            Sink::Handles {
                done,
                order,
                pending,
            } => {
                let mut block = block;
                while let Some((id, r)) = block.take() {
                    pending.remove(&id);
                    done.insert(id, r);
                    order.push_back(id);
                }
            }
            Sink::Dropped => {
                if *outstanding == 0 {
                    self.sinks.remove(sink.0);
                }
            }
        }
    }

    /// Tasks of `sink` not finished yet.
    pub(crate) fn outstanding(&self, sink: SinkId) -> usize {
        self.sinks.get(sink.0).map_or(0, |(_, n)| *n)
    }

    /// An ordered map's next result, if it is in.
    pub(crate) fn next_ordered(&mut self, sink: SinkId) -> Option<(TaskId, TaskResult<Rep>)> {
        let Some((
            Sink::Ordered {
                next,
                current,
                held,
            },
            _,
        )) = self.sinks.get_mut(sink.0)
        else {
            return None;
        };
        loop {
            match current.take() {
                Some(Block::One(id, r)) => {
                    *next += 1;
                    return Some((id, r));
                }
                Some(mut run) => {
                    if let Some(r) = run.take() {
                        *next += 1;
                        *current = Some(run);
                        return Some(r);
                    }
                }
                None => {}
            }
            *current = Some(held.remove(next)?);
        }
    }

    /// An unordered map's next result, if any.
    pub(crate) fn next_unordered(&mut self, sink: SinkId) -> Option<(TaskId, TaskResult<Rep>)> {
        let Some((Sink::Unordered { done }, _)) = self.sinks.get_mut(sink.0) else {
            return None;
        };
        loop {
            match done.front_mut()? {
                Block::One(..) => match done.pop_front() {
                    Some(Block::One(id, r)) => return Some((id, r)),
                    _ => return None,
                },
                run => {
                    if let Some(r) = run.take() {
                        return Some(r);
                    }
                    done.pop_front();
                }
            }
        }
    }

    /// Forgets a map: results still to come are thrown away.
    pub(crate) fn drop_map(&mut self, sink: SinkId) {
        if sink == HANDLES {
            return;
        }
        match self.sinks.get_mut(sink.0) {
            Some((_, 0)) => {
                self.sinks.remove(sink.0);
            }
            Some((s, _)) => *s = Sink::Dropped,
            None => {}
        }
    }

    /// `n` tasks of a dropped sink were dropped before they finished.
    pub(crate) fn forget(&mut self, sink: SinkId, n: usize) {
        let Some((s, outstanding)) = self.sinks.get_mut(sink.0) else {
            return;
        };
        *outstanding = outstanding.saturating_sub(n);
        if matches!(s, Sink::Dropped) && *outstanding == 0 {
            self.sinks.remove(sink.0);
        }
    }

    /// The submitted task `id`'s result, if it finished.
    pub(crate) fn take_handle(&mut self, id: TaskId) -> Option<TaskResult<Rep>> {
        match self.sinks.get_mut(HANDLES.0) {
            Some((Sink::Handles { done, .. }, _)) => done.remove(&id),
            _ => None,
        }
    }

    /// Whether the submitted task `id` is still to finish.
    pub(crate) fn handle_pending(&self, id: TaskId) -> bool {
        matches!(self.sinks.get(HANDLES.0), Some((Sink::Handles { pending, .. }, _)) if pending.contains_key(&id))
    }

    /// The next submitted task to have finished, in completion order.
    pub(crate) fn next_handle(&mut self) -> Option<(TaskId, TaskResult<Rep>)> {
        let Some((Sink::Handles { done, order, .. }, _)) = self.sinks.get_mut(HANDLES.0) else {
            return None;
        };
        while let Some(id) = order.pop_front() {
            if let Some(r) = done.remove(&id) {
                return Some((id, r));
            }
        }
        None
    }

    /// Submitted tasks not finished yet.
    pub(crate) fn handles_pending(&self) -> usize {
        self.outstanding(HANDLES)
    }

    /// Whether any task anybody waits for is unfinished (dropped maps'
    /// are nobody's).
    pub(crate) fn anything_awaited(&self) -> bool {
        self.sinks
            .iter()
            .any(|(_, (s, n))| *n > 0 && !matches!(s, Sink::Dropped))
    }
}
