//! The pool under tokio (cargo feature `tokio`): [`AsyncPool`], whose
//! [`call`](AsyncPool::call), [`submit`](AsyncPool::submit) and
//! [`map`](AsyncPool::map) are futures and streams.
//!
//! How it is driven: see [`AsyncPool`]'s docs.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Sleep;

use super::{Pool, PoolStats, Sink, TaskResult};
use crate::error::{Error, Result};
use crate::process::Signal;
use crate::task::TaskId;
use crate::worker::Worker;

/// While work is queued or in flight the driver wakes at least this often,
/// for what the reactor retries on its own clock (reaping a child that got
/// no pidfd) and has no descriptor or task deadline to wake us for.
const TICK: Duration = Duration::from_millis(100);

/// Steps one poll may take before it yields to the runtime (cooperative:
/// a pool that always has something new never starves other tasks).
const BUDGET: usize = 64;

/// The pool as the `AsyncFd`'s inner value: its descriptor is the reactor's
/// epoll descriptor.
struct Registered<Req, Rep>(Pool<Req, Rep>);

impl<Req, Rep> AsRawFd for Registered<Req, Rep> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.tasks.reactor().as_raw_fd()
    }
}

/// Who waits on the pool: a submitted task's future, or a map's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Task(TaskId),
    Map(u64),
}

/// Where a task's result goes when it finishes.
#[derive(Debug)]
enum Waiter {
    /// A [`Submitted`] future, with its waker once it was polled.
    Task(Option<Waker>),
    /// A map's stream (its key in `Books::maps`).
    Map(u64),
}

/// A map stream's slot.
#[derive(Debug)]
struct MapSlot<Rep> {
    /// Set while the stream waits (returned `Pending`).
    waker: Option<Waker>,
    /// Ordered maps take results from `Books::results` by id; unordered
    /// ones from `done`, in completion order.
    ordered: bool,
    done: VecDeque<(TaskId, TaskResult<Rep>)>,
}

/// The results side: finished results and who waits for what.
#[derive(Debug)]
struct Books<Rep> {
    results: HashMap<TaskId, TaskResult<Rep>>,
    waiting: HashMap<TaskId, Waiter>,
    maps: HashMap<u64, MapSlot<Rep>>,
    next_map: u64,
}

impl<Rep> Books<Rep> {
    /// Files a finished task's result with its waiter and wakes it; a
    /// result nobody waits for (its future was dropped) is thrown away.
    fn file(&mut self, id: TaskId, result: TaskResult<Rep>) {
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
    fn other_waker(&self, me: Owner) -> Option<&Waker> {
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
struct Shared<Req, Rep> {
    fd: AsyncFd<Registered<Req, Rep>>,
    books: Books<Rep>,
    /// Set to the nearest deadline (or the tick) when the driver waits.
    timer: Option<Pin<Box<Sleep>>>,
    /// The waiter whose waker the descriptor and the timer hold.
    driver: Option<Owner>,
}

impl<Req, Rep> Shared<Req, Rep> {
    fn pool(&mut self) -> &mut Pool<Req, Rep> {
        &mut self.fd.get_mut().0
    }

    /// `me` stops waiting (finished, yielded or dropped): if the descriptor
    /// and the timer would wake it, or nobody took them over since the last
    /// hand-off, wake another waiter to take over.
    fn hand_off(&mut self, me: Owner) {
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
    fn forget(&mut self, ids: &[TaskId]) {
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
    fn drive(
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
                    pool.last_start_failure = format!("tokio's I/O driver failed: {e}");
                    pool.terminate();
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
    fn arm_timer(&mut self, cx: &mut Context<'_>) -> bool {
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
fn pump<Req, Rep>(pool: &mut Pool<Req, Rep>, books: &mut Books<Rep>) -> bool
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

/// A [`Pool`] driven by tokio: its tasks are futures, its maps streams.
///
/// Made by [`Pool::into_async`] or [`AsyncPool::new`] inside a tokio
/// runtime with I/O and time enabled (`enable_all`); a current-thread or a
/// multi-thread runtime.
///
/// # Not `Send`
///
/// The pool is single-threaded: it owns forked children and the function it
/// clones into new ones (which need not be `Send`). So `AsyncPool`, its
/// futures and its streams are neither `Send` nor `Sync`: use them from
/// one task. Many may be pending at once in that task (`join!`,
/// `join_all`, `select!`, `FuturesUnordered`) or in tasks of a
/// [`LocalSet`](tokio::task::LocalSet) (`spawn_local`); the main future of
/// `#[tokio::main]` or `Runtime::block_on` need not be `Send`, so a
/// multi-thread runtime works too. Other tasks reach it through a channel.
/// Its workers are forked from the thread that polls it: keep it on a
/// thread that outlives them (see [`Reactor`](crate::Reactor)'s Threads
/// and fork).
///
/// # How it is driven
///
/// One driver, no thread of its own: whichever future or stream of the
/// pool is polled drives it one non-blocking step at a time (send queued
/// work, read replies, file what finished into per-task slots and wake the
/// futures that were waiting for them). When a step finds nothing, it waits
/// on the reactor's descriptor through tokio's [`AsyncFd`] and on a timer
/// set to the nearest task deadline, so deadlines fire with no I/O at all
/// (while work is out the timer also fires every 100 ms, for what the
/// reactor retries on its own clock, such as reaping a child that got no
/// pidfd).
///
/// The readiness rule: the `AsyncFd` guard is taken *before* the step, and
/// cleared only when that step found nothing; an event that comes after the
/// guard was taken bumps tokio's readiness tick, so clearing never loses it.
/// `Reactor::send` writes through and a short write leaves `WRITABLE`
/// interest in the reactor's epoll (which makes its descriptor ready), so
/// queued output is flushed by the next step (crate docs, Embedding).
///
/// One waker is registered with the descriptor and the timer: the last
/// poller's that found them not ready. A future or stream that completes,
/// yields or is dropped while it holds that place (or while nobody has
/// taken it since the last hand-over) wakes another waiting one, which
/// polls and takes it over, so the pool is never left undriven while
/// anything waits on it.
///
/// # Dropping
///
/// Dropping a future or stream forgets its tasks (queued ones never run).
/// Dropping the `AsyncPool` drops the [`Pool`]: busy workers are killed,
/// idle ones closed, all reaped; that waits (blocking the thread) up to the
/// reactor's grace for idle workers to exit.
///
/// ```
/// use std::time::Duration;
/// use miniray::pool::{Pool, PoolOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let opts = PoolOptions::new().workers(2).timeout(Duration::from_secs(10));
/// let pool = Pool::new(&opts, |n: u64| n * n)?.into_async()?;
/// assert_eq!(pool.call(7).await?, 49);
/// let mut squares = pool.map(0..10u64);
/// let mut got = Vec::new();
/// while let Some(r) = squares.next().await {
///     got.push(r?);
/// }
/// assert_eq!(got[9], 81);
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct AsyncPool<Req, Rep> {
    shared: RefCell<Shared<Req, Rep>>,
}

impl<Req, Rep> fmt::Debug for AsyncPool<Req, Rep> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AsyncPool");
        if let Ok(sh) = self.shared.try_borrow() {
            d.field("pool", &sh.fd.get_ref().0)
                .field("waiting", &sh.books.waiting.len());
        }
        d.finish_non_exhaustive()
    }
}

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// This pool driven by tokio ([`AsyncPool::new`]).
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn into_async(self) -> Result<AsyncPool<Req, Rep>> {
        AsyncPool::new(self)
    }
}

impl<Req, Rep> AsyncPool<Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    /// Registers `pool`'s reactor descriptor with the current tokio runtime.
    ///
    /// Errors: [`Error::Io`] when called outside a tokio runtime (`op`
    /// "tokio runtime") or when the registration fails (`"epoll_ctl"`); the
    /// pool is dropped then (its workers reaped).
    ///
    /// # Panics
    ///
    /// In a runtime built without I/O (tokio's own panic); one without
    /// time panics at the first wait with work out.
    pub fn new(pool: Pool<Req, Rep>) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::io(
                "tokio runtime",
                io::Error::other("AsyncPool must be made inside a tokio runtime"),
            ));
        }
        let fd = register(Registered(pool)).map_err(|e| Error::io("epoll_ctl", e))?;
        Ok(AsyncPool {
            shared: RefCell::new(Shared {
                fd,
                books: Books {
                    results: HashMap::new(),
                    waiting: HashMap::new(),
                    maps: HashMap::new(),
                    next_map: 0,
                },
                timer: None,
                driver: None,
            }),
        })
    }

    /// Queues `req` as a task and returns its result as a future. The task
    /// is sent when a worker is free, while this or any other future or
    /// stream of the pool is polled; dropping the future forgets the task.
    pub fn submit(&self, req: Req) -> Submitted<'_, Req, Rep> {
        let mut sh = self.shared.borrow_mut();
        let id = sh.pool().enqueue_any(req, Sink::Handle);
        sh.books.waiting.insert(id, Waiter::Task(None));
        Submitted {
            pool: self,
            id,
            finished: false,
        }
    }

    /// Runs `req` as a task and waits for its result ([`AsyncPool::submit`]
    /// then `.await`): its reply, or why it has none after every try
    /// (retries, deadline: [`PoolOptions`](super::PoolOptions)).
    pub async fn call(&self, req: Req) -> TaskResult<Rep> {
        self.submit(req).await
    }

    /// Runs the pool's function on every item: a stream of results in input
    /// order, with the bound on work in flight of [`Pool::map`].
    pub fn map<I>(&self, items: I) -> AsyncMap<'_, Req, Rep, I::IntoIter>
    where
        I: IntoIterator<Item = Req>,
    {
        AsyncMap {
            inner: MapCore::new(self, items.into_iter(), true),
            ids: VecDeque::new(),
        }
    }

    /// [`AsyncPool::map`] yielding each result as soon as it is ready, with
    /// its task id.
    pub fn map_unordered<I>(&self, items: I) -> AsyncMapUnordered<'_, Req, Rep, I::IntoIter>
    where
        I: IntoIterator<Item = Req>,
    {
        AsyncMapUnordered {
            inner: MapCore::new(self, items.into_iter(), false),
            ids: HashSet::new(),
        }
    }

    /// Counts so far ([`Pool::stats`]).
    pub fn stats(&self) -> PoolStats {
        self.shared.borrow().fd.get_ref().0.stats()
    }

    /// The live workers ([`Pool::workers`]).
    pub fn workers(&self) -> Vec<Worker> {
        self.shared.borrow().fd.get_ref().0.workers()
    }

    /// A worker's process id, while it runs ([`Pool::pid`]).
    pub fn pid(&self, w: Worker) -> Option<i32> {
        self.shared.borrow().fd.get_ref().0.pid(w)
    }

    /// Sends `signal` to a worker ([`Pool::kill`]): if it dies, its tasks in
    /// flight are retried and it is replaced.
    pub fn kill(&self, w: Worker, signal: impl Into<Signal>) -> Result<()> {
        self.shared.borrow_mut().pool().kill(w, signal)
    }

    /// The pool back, its descriptor deregistered from tokio (for
    /// [`Pool::close`], say). Tasks whose futures were dropped are gone.
    pub fn into_inner(self) -> Pool<Req, Rep> {
        self.shared.into_inner().fd.into_inner().0
    }
}

/// The one `unsafe` of the feature: tokio's registration of a raw
/// descriptor (its safe constructors are deprecated as unsound).
fn register<Req, Rep>(inner: Registered<Req, Rep>) -> io::Result<AsyncFd<Registered<Req, Rep>>> {
    // SAFETY: `as_raw_fd` returns the epoll descriptor of the pool's
    // reactor, created in `Reactor::new` and closed only when the reactor
    // drops. The `AsyncFd` owns the pool, which owns its `Tasks`, which owns
    // the reactor; none of them is ever replaced in place (this module only
    // borrows the pool to step it), so the descriptor stays open and the same
    // until the `AsyncFd` deregisters it in `drop` or `into_inner`.
    let registered = unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) };
    registered.map_err(|e| e.into_parts().1)
}

/// A submitted task's result, as a future ([`AsyncPool::submit`]).
/// Dropping it before it is ready forgets the task. Polling it again after
/// it returned its result panics, as for most futures.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[must_use = "a task's future does nothing unless polled, and dropping it forgets the task"]
pub struct Submitted<'p, Req, Rep> {
    pool: &'p AsyncPool<Req, Rep>,
    id: TaskId,
    finished: bool,
}

impl<Req, Rep> Submitted<'_, Req, Rep> {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }
}

impl<Req, Rep> Future for Submitted<'_, Req, Rep>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    type Output = TaskResult<Rep>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TaskResult<Rep>> {
        let this = self.get_mut();
        assert!(!this.finished, "Submitted polled after it finished");
        let (id, me) = (this.id, Owner::Task(this.id));
        let mut sh = this.pool.shared.borrow_mut();
        if let Some(Waiter::Task(w)) = sh.books.waiting.get_mut(&id) {
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        if sh
            .drive(me, cx, |b| b.results.contains_key(&id))
            .is_pending()
        {
            return Poll::Pending;
        }
        sh.hand_off(me);
        sh.books.waiting.remove(&id);
        this.finished = true;
        match sh.books.results.remove(&id) {
            Some(r) => Poll::Ready(r),
            // Only when tokio's driver failed and the pool was terminated
            // before this task was even filed.
            None => Poll::Ready(Err(crate::task::TaskError::new(
                id,
                None,
                crate::task::Cause::Terminated,
            ))),
        }
    }
}

impl<Req, Rep> Drop for Submitted<'_, Req, Rep> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // A drop during a panic that left the pool borrowed: leave it.
        if let Ok(mut sh) = self.pool.shared.try_borrow_mut() {
            sh.forget(&[self.id]);
            sh.hand_off(Owner::Task(self.id));
        }
    }
}

impl<Req, Rep> fmt::Debug for Submitted<'_, Req, Rep> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submitted")
            .field("id", &self.id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// What the two map streams share: the input, the window and their slot.
struct MapCore<'p, Req, Rep, I> {
    pool: &'p AsyncPool<Req, Rep>,
    input: Option<I>,
    key: u64,
    window: usize,
}

impl<'p, Req, Rep, I> MapCore<'p, Req, Rep, I>
where
    Req: Serialize,
    Rep: DeserializeOwned,
    I: Iterator<Item = Req>,
{
    fn new(pool: &'p AsyncPool<Req, Rep>, input: I, ordered: bool) -> Self {
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
        // As `Pool::map`: enough to keep every worker busy while results
        // wait for an earlier one to be yielded.
        let opts = &sh.fd.get_ref().0.opts;
        let window = (4 * opts.workers * opts.in_flight_per_worker).max(64);
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
/// `max(64, 4 × workers × in_flight_per_worker)` of this map's tasks are
/// unfinished or unyielded. Dropping it forgets its tasks.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[must_use = "streams do nothing unless polled"]
pub struct AsyncMap<'p, Req, Rep, I> {
    inner: MapCore<'p, Req, Rep, I>,
    ids: VecDeque<TaskId>,
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
    inner: MapCore<'p, Req, Rep, I>,
    /// This map's tasks not yet yielded.
    ids: HashSet<TaskId>,
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
