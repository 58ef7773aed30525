//! The async pool's streams: [`AsyncMap`] in input order and
//! [`AsyncMapUnordered`], over one shared core (input, window, slot).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Sink, TaskResult};
use crate::task::TaskId;

use super::driver::{Books, MapSlot, Owner, Waiter};
use super::AsyncPool;

/// What the two map streams share: the input, the window and their slot.
pub(super) struct MapCore<'p, Req, Rep, I> {
    pub(super) pool: &'p AsyncPool<Req, Rep>,
    pub(super) input: Option<I>,
    pub(super) key: u64,
    pub(super) window: usize,
}

impl<'p, Req, Rep, I> MapCore<'p, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    pub(super) fn new(pool: &'p AsyncPool<Req, Rep>, input: I, ordered: bool) -> Self {
        let mut sh = pool.shared.borrow_mut();
        let key = sh.books.next_map;
        sh.books.next_map += 1;
        sh.books.maps.insert(
            key,
            MapSlot {
                waker: None,
                ordered,
                done: VecDeque::new(),
            },
        );
        // `Pool::map`'s own window (it grows with the chunk size).
        let window = crate::pool::map::window(&sh.fd.get_ref().0);
        drop(sh);
        MapCore {
            pool,
            input: Some(input),
            key,
            window,
        }
    }

    /// Takes items from the input while fewer than the window of this
    /// map's tasks are out; `out` counts them and `add` records each id.
    fn fill(&mut self, out: usize, mut add: impl FnMut(TaskId)) {
        for _ in out..self.window {
            let Some(input) = self.input.as_mut() else {
                return;
            };
            // The caller's iterator runs outside the borrow.
            let Some(req) = input.next() else {
                self.input = None;
                return;
            };
            let mut sh = self.pool.shared.borrow_mut();
            let id = sh.pool().enqueue_any(req, Sink::Handle);
            sh.books.waiting.insert(id, Waiter::Map(self.key));
            add(id);
        }
    }

    /// Drives the pool until `take` finds a result; `None` from `take` means
    /// not yet, `Some(None)` that the map is over.
    fn poll_take<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&mut Books<Rep>) -> Option<Option<T>>,
    ) -> Poll<Option<T>> {
        let me = Owner::Map(self.key);
        let mut sh = self.pool.shared.borrow_mut();
        loop {
            if let Some(item) = take(&mut sh.books) {
                if let Some(slot) = sh.books.maps.get_mut(&self.key) {
                    slot.waker = None;
                }
                sh.hand_off(me);
                return Poll::Ready(item);
            }
            if let Some(slot) = sh.books.maps.get_mut(&self.key) {
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    slot.waker = Some(cx.waker().clone());
                }
            }
            // `take` is retried at once after a `Ready` from the driver.
            let key = self.key;
            let ready = |b: &Books<Rep>| b.maps.get(&key).is_none_or(|m| m.waker.is_none());
            if sh.drive(me, cx, ready).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<Req, Rep, I> MapCore<'_, Req, Rep, I> {
    /// The stream is dropped: forget its unyielded tasks `ids` and its slot.
    fn end(&mut self, ids: &[TaskId]) {
        // A drop during a panic that left the pool borrowed: leave it.
        if let Ok(mut sh) = self.pool.shared.try_borrow_mut() {
            sh.forget(ids);
            sh.books.maps.remove(&self.key);
            sh.hand_off(Owner::Map(self.key));
        }
    }
}

/// [`AsyncPool::map`]'s stream: one result per item, in input order.
///
/// A [`Stream`](futures_core::Stream) (`StreamExt::next` from
/// `tokio-stream` or `futures` works), and [`AsyncMap::next`] without
/// either. Items are taken from the input only while fewer than
/// [`Map::window`](crate::pool::Map::window) of this map's tasks are
/// unfinished or unyielded (the same bound as `Pool::map`). Dropping it forgets its tasks.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[must_use = "streams do nothing unless polled"]
pub struct AsyncMap<'p, Req, Rep, I> {
    pub(super) inner: MapCore<'p, Req, Rep, I>,
    pub(super) ids: VecDeque<TaskId>,
}

// The input is never pinned (only called through `&mut`).
impl<Req, Rep, I> Unpin for AsyncMap<'_, Req, Rep, I> {}

impl<Req, Rep, I> AsyncMap<'_, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    /// The next result, in input order; `None` after the last.
    pub async fn next(&mut self) -> Option<TaskResult<Rep>> {
        std::future::poll_fn(|cx| self.poll_result(cx)).await
    }

    fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<Option<TaskResult<Rep>>> {
        let ids = &mut self.ids;
        self.inner.fill(ids.len(), |id| ids.push_back(id));
        let ids = &mut self.ids;
        self.inner.poll_take(cx, |b| match ids.front() {
            None => Some(None),
            Some(front) => {
                let r = b.results.remove(front)?;
                ids.pop_front();
                Some(Some(r))
            }
        })
    }
}

impl<Req, Rep, I> Stream for AsyncMap<'_, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    type Item = TaskResult<Rep>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskResult<Rep>>> {
        self.get_mut().poll_result(cx)
    }
}

impl<Req, Rep, I> Drop for AsyncMap<'_, Req, Rep, I> {
    fn drop(&mut self) {
        let ids: Vec<TaskId> = self.ids.drain(..).collect();
        self.inner.end(&ids);
    }
}

impl<Req, Rep, I> fmt::Debug for AsyncMap<'_, Req, Rep, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncMap")
            .field("unyielded", &self.ids.len())
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

/// [`AsyncPool::map_unordered`]'s stream: `(task id, result)` in completion
/// order, with [`AsyncMap`]'s bound, [`Stream`](futures_core::Stream) and
/// [`AsyncMapUnordered::next`].
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[must_use = "streams do nothing unless polled"]
pub struct AsyncMapUnordered<'p, Req, Rep, I> {
    pub(super) inner: MapCore<'p, Req, Rep, I>,
    /// This map's tasks not yet yielded.
    pub(super) ids: HashSet<TaskId>,
}

// The input is never pinned (only called through `&mut`).
impl<Req, Rep, I> Unpin for AsyncMapUnordered<'_, Req, Rep, I> {}

impl<Req, Rep, I> AsyncMapUnordered<'_, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    /// The next result to finish, with its task id; `None` after the last.
    pub async fn next(&mut self) -> Option<(TaskId, TaskResult<Rep>)> {
        std::future::poll_fn(|cx| self.poll_result(cx)).await
    }

    fn poll_result(&mut self, cx: &mut Context<'_>) -> Poll<Option<(TaskId, TaskResult<Rep>)>> {
        let ids = &mut self.ids;
        self.inner.fill(ids.len(), |id| {
            ids.insert(id);
        });
        let (ids, key) = (&mut self.ids, self.inner.key);
        self.inner.poll_take(cx, |b| {
            if ids.is_empty() {
                return Some(None);
            }
            let (id, r) = b.maps.get_mut(&key)?.done.pop_front()?;
            ids.remove(&id);
            Some(Some((id, r)))
        })
    }
}

impl<Req, Rep, I> Stream for AsyncMapUnordered<'_, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    type Item = (TaskId, TaskResult<Rep>);

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(TaskId, TaskResult<Rep>)>> {
        self.get_mut().poll_result(cx)
    }
}

impl<Req, Rep, I> Drop for AsyncMapUnordered<'_, Req, Rep, I> {
    fn drop(&mut self) {
        let ids: Vec<TaskId> = self.ids.drain().collect();
        self.inner.end(&ids);
    }
}

impl<Req, Rep, I> fmt::Debug for AsyncMapUnordered<'_, Req, Rep, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncMapUnordered")
            .field("outstanding", &self.ids.len())
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}
