//! The pool under tokio (cargo feature `tokio`): [`AsyncPool`], whose
//! [`call`](AsyncPool::call), [`submit`](AsyncPool::submit) and
//! [`map`](AsyncPool::map) are futures and streams.
//!
//! How it is driven: see [`AsyncPool`]'s docs.

mod driver;
mod streams;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{Pool, PoolStats, Sink, TaskResult};
use crate::error::{Error, Result};
use crate::process::Signal;
use crate::task::TaskId;
use crate::worker::Worker;

use driver::{Books, Owner, Registered, Shared, Waiter};
use streams::MapCore;
pub use streams::{AsyncMap, AsyncMapUnordered};

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
/// [`LocalSet`](tokio::task::LocalSet) (`spawn_local`, each task holding an `Rc<AsyncPool>` clone, as `call` borrows the pool); the main future of
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
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let opts = PoolOptions::new().workers(2).timeout(Duration::from_secs(10));
///     let pool = Pool::new(&opts, |n: u64| n * n)?.into_async()?;
///     assert_eq!(pool.call(7).await?, 49);
///     let mut squares = pool.map(0..10u64);
///     let mut got = Vec::new();
///     while let Some(r) = squares.next().await {
///         got.push(r?);
///     }
///     assert_eq!(got[9], 81);
///     Ok(())
/// }
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
