//! The async pool's driver: the pool registered under `AsyncFd`, the
//! per-task and per-map slots results are filed into, and one pump step.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::time::Sleep;

use super::{Pool, TaskResult};
use crate::task::{Cause, TaskId};

/// While work is queued or in flight the driver wakes at least this often,
/// for what the reactor retries on its own clock (reaping a child that got
/// no pidfd) and has no descriptor or task deadline to wake us for.
pub(super) const TICK: Duration = Duration::from_millis(100);

/// Steps one poll may take before it yields to the runtime (cooperative:
/// a pool that always has something new never starves other tasks).
pub(super) const BUDGET: usize = 64;

/// The pool as the `AsyncFd`'s inner value: its descriptor is the reactor's
/// epoll descriptor.
pub(super) struct Registered<Req, Rep>(pub(super) Pool<Req, Rep>);

impl<Req, Rep> AsRawFd for Registered<Req, Rep> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.tasks.reactor().as_raw_fd()
    }
}

/// Who waits on the pool: a submitted task's future, or a map's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Owner {
    Task(TaskId),
    Map(u64),
}

/// Where a task's result goes when it finishes.
#[derive(Debug)]
pub(super) enum Waiter {
    /// A [`Submitted`] future, with its waker once it was polled.
    Task(Option<Waker>),
    /// A map's stream (its key in `Books::maps`).
    Map(u64),
}

/// A map stream's slot.
#[derive(Debug)]
pub(super) struct MapSlot<Rep> {
    /// Set while the stream waits (returned `Pending`).
    pub(super) waker: Option<Waker>,
    /// Ordered maps take results from `Books::results` by id; unordered
    /// ones from `done`, in completion order.
    pub(super) ordered: bool,
    pub(super) done: VecDeque<(TaskId, TaskResult<Rep>)>,
}

/// The results side: finished results and who waits for what.
#[derive(Debug)]
pub(super) struct Books<Rep> {
    pub(super) results: HashMap<TaskId, TaskResult<Rep>>,
    pub(super) waiting: HashMap<TaskId, Waiter>,
    pub(super) maps: HashMap<u64, MapSlot<Rep>>,
    pub(super) next_map: u64,
}

impl<Rep> Books<Rep> {
    /// Files a finished task's result with its waiter and wakes it; a
    /// result nobody waits for (its future was dropped) is thrown away.
    pub(super) fn file(&mut self, id: TaskId, result: TaskResult<Rep>) {
        match self.waiting.remove(&id) {
            Some(Waiter::Task(waker)) => {
                self.results.insert(id, result);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Some(Waiter::Map(key)) => {
                if let Some(slot) = self.maps.get_mut(&key) {
                    if slot.ordered {
                        self.results.insert(id, result);
                    } else {
                        slot.done.push_back((id, result));
                    }
                    if let Some(w) = slot.waker.take() {
                        w.wake();
                    }
                }
            }
            None => {}
        }
    }

    /// A waiting future or stream other than `me`.
    pub(super) fn other_waker(&self, me: Owner) -> Option<&Waker> {
        let map = self
            .maps
            .iter()
            .filter(|(&k, _)| Owner::Map(k) != me)
            .find_map(|(_, m)| m.waker.as_ref());
        map.or_else(|| {
            self.waiting
                .iter()
                .filter(|(&id, _)| Owner::Task(id) != me)
                .find_map(|(_, w)| match w {
                    Waiter::Task(Some(w)) => Some(w),
                    _ => None,
                })
        })
    }
}

/// Everything behind the [`AsyncPool`]'s `RefCell`.
pub(super) struct Shared<Req, Rep> {
    pub(super) fd: AsyncFd<Registered<Req, Rep>>,
    pub(super) books: Books<Rep>,
    /// Set to the nearest deadline (or the tick) when the driver waits.
    pub(super) timer: Option<Pin<Box<Sleep>>>,
    /// The waiter whose waker the descriptor and the timer hold.
    pub(super) driver: Option<Owner>,
}

impl<Req, Rep> Shared<Req, Rep> {
    pub(super) fn pool(&mut self) -> &mut Pool<Req, Rep> {
        &mut self.fd.get_mut().0
    }

    /// `me` stops waiting (finished, yielded or dropped): if the descriptor
    /// and the timer would wake it, or nobody took them over since the last
    /// hand-off, wake another waiter to take over.
    pub(super) fn hand_off(&mut self, me: Owner) {
        if self.driver.is_some_and(|d| d != me) {
            return;
        }
        self.driver = None;
        if let Some(w) = self.books.other_waker(me) {
            w.wake_by_ref();
        }
    }

    /// Forgets tasks nobody waits for any more: their entries go, so a
    /// queued one is skipped when its turn comes (it never runs) and a
    /// running one's result, or failure, is dropped when it comes (no
    /// retry); they count as neither completed nor failed.
    pub(super) fn forget(&mut self, ids: &[TaskId]) {
        for id in ids {
            self.books.results.remove(id);
            self.books.waiting.remove(id);
        }
        let pool = self.pool();
        for id in ids {
            pool.done.remove(id);
            pool.entries.remove(id);
        }
    }
}

impl<Req, Rep> Shared<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// Drives the pool for `me` until `ready` says what it waits for is
    /// here (`Ready`), or nothing more can happen now (`Pending`, with `cx`
    /// registered with the descriptor and the timer).
    pub(super) fn drive(
        &mut self,
        me: Owner,
        cx: &mut Context<'_>,
        ready: impl Fn(&Books<Rep>) -> bool,
    ) -> Poll<()> {
        // A step that found nothing right after readiness was cleared need
        // not be repeated: any later event sets readiness again.
        let mut idle = false;
        for _ in 0..BUDGET {
            if ready(&self.books) {
                return Poll::Ready(());
            }
            let Shared {
                fd, books, driver, ..
            } = self;
            match fd.poll_read_ready_mut(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    let progress = pump(&mut guard.get_inner_mut().0, books);
                    if progress {
                        guard.retain_ready();
                    } else {
                        guard.clear_ready();
                        idle = true;
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => {
                    // The runtime's I/O driver is gone: nothing will wake
                    // us again. Fail everything rather than hang.
                    let pool = &mut fd.get_mut().0;
                    pool.terminate_with(Cause::NoWorkers {
                        message: format!("tokio's I/O driver failed: {e}"),
                    });
                    pump(pool, books);
                    return Poll::Ready(());
                }
                // `cx` is registered: any event from here on wakes it, so
                // `me` must hand over if it stops waiting, even after
                // finding its result in this very call.
                Poll::Pending => *driver = Some(me),
            }
            if !idle && pump(&mut fd.get_mut().0, books) {
                continue;
            }
            if self.arm_timer(cx) {
                idle = false;
                continue;
            }
            return Poll::Pending;
        }
        // Out of budget: come back after the runtime's other tasks.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Sets the timer to the nearest task deadline (or the tick while work
    /// is out) and registers `cx` with it; true when it has already passed.
    pub(super) fn arm_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let pool = &self.fd.get_ref().0;
        // With no call in flight every deadline entry is stale (and a step
        // with no worker left does not pop them): waking for one would spin.
        let mut due = None;
        if !pool.tasks.is_empty() {
            due = pool.tasks.next_deadline();
        }
        if !pool.queue.is_empty() || !pool.tasks.is_empty() {
            if let Some(tick) = Instant::now().checked_add(TICK) {
                due = Some(due.map_or(tick, |d| d.min(tick)));
            }
        }
        let Some(at) = due else {
            return false;
        };
        let at = tokio::time::Instant::from_std(at);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

/// One non-blocking step of the pool, and the filing of what finished.
/// True when anything happened (a result, a retry, a worker's end, work
/// sent), so the caller steps again before it waits.
pub(super) fn pump<Req, Rep>(pool: &mut Pool<Req, Rep>, books: &mut Books<Rep>) -> bool
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    let before = pool.stats();
    pool.step(Some(Duration::ZERO));
    let mut filed = false;
    while let Some(id) = pool.finished.pop_front() {
        if let Some(r) = pool.done.remove(&id) {
            books.file(id, r);
            filed = true;
        }
    }
    filed || pool.stats() != before
}
