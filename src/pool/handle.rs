//! [`PoolHandle`]: a pool on a thread of its own, shared by handles that
//! are `Send + Sync + Clone`. Each submit becomes a task of the pool; its
//! result comes back through a [`Pending`], which is both a `Future` (any
//! async runtime) and a blocking wait. Results are taken from the pool's
//! one router (its submitted tasks' sink), as [`Pool::next_done`] takes
//! them.
//!
//! The pool's thread sleeps in the reactor's wait; a handle with something
//! to say queues it and writes one byte to a pipe registered in that wait.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::unix::pipe;
use mio::{Interest, Token};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Pool, PoolOptions, PoolStats, TaskResult};
use crate::error::{Error, Result};
use crate::task::{Cause, TaskError, TaskId};
use crate::worker::Exec;

/// The pipe's token among the reactor's user sources.
const WAKE: Token = Token(0);

/// What a handle asks of the pool's thread.
enum Command<Req, Rep> {
    Submit {
        req: Req,
        ticket: u64,
        reply: oneshot::Sender<TaskResult<Rep>>,
    },
    Cancel(u64),
    Stats(oneshot::Sender<PoolStats>),
    /// The last handle is gone: finish what is awaited, then end.
    Shutdown,
}

/// The queue between handles and the pool's thread.
struct Mailbox<Req, Rep> {
    commands: Mutex<Inbox<Req, Rep>>,
    wake: pipe::Sender,
    tickets: AtomicU64,
}

struct Inbox<Req, Rep> {
    queue: VecDeque<Command<Req, Rep>>,
    /// The thread is in (or about to enter) its wait: a new command must
    /// write the pipe.
    asleep: bool,
    /// A byte was written to the pipe since the thread last read it.
    rung: bool,
    /// The thread ended: nothing will be answered.
    gone: bool,
}

impl<Req, Rep> Mailbox<Req, Rep> {
    fn lock(&self) -> MutexGuard<'_, Inbox<Req, Rep>> {
        // A handle or the thread panicking while holding the lock leaves
        // the queue intact: go on with it.
        self.commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `c`; false if the pool's thread is gone.
    fn post(&self, c: Command<Req, Rep>) -> bool {
        let mut inbox = self.lock();
        if inbox.gone {
            return false;
        }
        inbox.queue.push_back(c);
        let wake = std::mem::replace(&mut inbox.asleep, false);
        inbox.rung |= wake;
        drop(inbox);
        if wake {
            // A full pipe already holds a wake-up: nothing lost.
            let _ = (&self.wake).write(&[1]);
        }
        true
    }
}

/// What the handles share; its drop (the last handle's) ends the pool.
struct Shared<Req, Rep> {
    mailbox: Arc<Mailbox<Req, Rep>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    window: usize,
}

impl<Req, Rep> Drop for Shared<Req, Rep> {
    fn drop(&mut self) {
        self.mailbox.post(Command::Shutdown);
    }
}

/// A pool on a thread of its own, usable from anywhere: `Send + Sync +
/// Clone` (share it as axum state, in an `Arc`, across `tokio::spawn`ed
/// tasks), with [`submit`](PoolHandle::submit) and
/// [`call`](PoolHandle::call) as futures and blocking calls, and
/// [`map`](PoolHandle::map) as an iterator and a `Stream`. No runtime is
/// needed: results are woken through a waker when polled as futures, and
/// a blocking wait parks the calling thread.
///
/// The pool behind it is a [`Pool`] like any other (same options, retries,
/// deadlines, supplies), run by a thread named `miniray-pool` which forks
/// the workers. Dropping the last handle lets the thread finish the tasks
/// whose [`Pending`] is still held, then close and reap every worker; a
/// [`Pending`] dropped before its task finished cancels it (a queued task
/// never runs; a running one's worker is stopped and replaced, and the task
/// is not tried again).
///
/// ```
/// use miniray::pool::{PoolHandle, PoolOptions};
/// # fn main() -> miniray::Result<()> {
/// let pool = PoolHandle::new(&PoolOptions::new().workers(2), |n: u64| n * 3)?;
/// let other = pool.clone(); // another thread's, or an async task's
/// let t = std::thread::spawn(move || other.call_blocking(7).expect("task ran"));
/// assert_eq!(t.join().expect("thread"), 21);
/// assert_eq!(pool.submit(5).wait().expect("task ran"), 15);
/// # Ok(())
/// # }
/// ```
///
/// From async code, `pool.call(x).await` (or `pool.submit(x)`, a future
/// you may hold and await later).
pub struct PoolHandle<Req, Rep> {
    shared: Arc<Shared<Req, Rep>>,
}

impl<Req, Rep> Clone for PoolHandle<Req, Rep> {
    fn clone(&self) -> Self {
        PoolHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Req, Rep> fmt::Debug for PoolHandle<Req, Rep> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolHandle").finish_non_exhaustive()
    }
}

impl<Req, Rep> PoolHandle<Req, Rep>
where
    Req: Serialize + Send + 'static,
    Rep: DeserializeOwned + Send + 'static,
{
    /// A pool of local workers answering with `f` ([`Pool::new`]) on a
    /// thread of its own.
    pub fn new<F>(opts: &PoolOptions, f: F) -> Result<Self>
    where
        F: Fn(Req) -> Rep + Clone + Send + 'static,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        let opts = opts.clone();
        Self::spawn(move || Pool::new(&opts, f))
    }

    /// A pool of local workers whose `f` may fail ([`Pool::fallible`]: an
    /// `Err` fails its task with [`Cause::Remote`](crate::Cause::Remote) and
    /// the worker goes on) on a thread of its own.
    pub fn fallible<F, E>(opts: &PoolOptions, f: F) -> Result<Self>
    where
        F: Fn(Req) -> std::result::Result<Rep, E> + Clone + Send + 'static,
        E: fmt::Display,
        Req: DeserializeOwned,
        Rep: Serialize,
    {
        let opts = opts.clone();
        Self::spawn(move || Pool::fallible(&opts, f))
    }

    /// A pool of exec workers ([`Pool::exec`]) on a thread of its own.
    pub fn exec(opts: &PoolOptions, program: &Exec) -> Result<Self> {
        let (opts, program) = (opts.clone(), program.clone());
        Self::spawn(move || Pool::exec(&opts, &program))
    }

    /// The pool `make` builds (any supplies: [`Pool::builder`]), built and
    /// run on a thread of its own. Errors: `make`'s.
    pub fn spawn<M>(make: M) -> Result<Self>
    where
        M: FnOnce() -> Result<Pool<Req, Rep>> + Send + 'static,
    {
        let (wake, mut woken) = pipe::new().map_err(|e| Error::io("pipe", e))?;
        let mailbox = Arc::new(Mailbox {
            commands: Mutex::new(Inbox {
                queue: VecDeque::new(),
                asleep: false,
                rung: false,
                gone: false,
            }),
            wake,
            tickets: AtomicU64::new(0),
        });
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<usize>>();
        let thread_box = Arc::clone(&mailbox);
        let thread = std::thread::Builder::new()
            .name("miniray-pool".to_owned())
            .spawn(move || {
                let pool = make().and_then(|mut pool| {
                    pool.calls.reactor_mut().register_source(
                        &mut woken,
                        WAKE,
                        Interest::READABLE,
                    )?;
                    Ok(pool)
                });
                match pool {
                    Ok(pool) => {
                        let workers = pool.calls.workers().max(pool.opts.workers);
                        let _ = started_tx.send(Ok(pool.opts.window_for(workers)));
                        run(pool, &thread_box, woken);
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
                thread_box.lock().gone = true;
            })
            .map_err(|e| Error::io("spawn the pool's thread", e))?;
        let window = match started_rx.recv() {
            Ok(Ok(window)) => window,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::io(
                    "start the pool's thread",
                    io::Error::other("the pool's thread ended before it started"),
                ));
            }
        };
        Ok(PoolHandle {
            shared: Arc::new(Shared {
                mailbox,
                thread: Mutex::new(Some(thread)),
                window,
            }),
        })
    }
}

impl<Req, Rep> PoolHandle<Req, Rep>
where
    Req: Send + 'static,
    Rep: Send + 'static,
{
    /// Queues `req` as a task; the [`Pending`] gives its result (await it,
    /// or [`Pending::wait`]). Dropping the `Pending` first cancels the task.
    pub fn submit(&self, req: Req) -> Pending<Rep> {
        let (reply, rx) = oneshot::channel();
        let ticket = self.shared.mailbox.tickets.fetch_add(1, Ordering::Relaxed);
        let posted = self
            .shared
            .mailbox
            .post(Command::Submit { req, ticket, reply });
        Pending {
            rx: Some(rx),
            ticket,
            cancel: posted.then(|| Arc::clone(&self.shared.mailbox) as Arc<dyn Cancel>),
        }
    }

    /// Runs `req` as a task and gives its result, as a future.
    pub fn call(&self, req: Req) -> Pending<Rep> {
        self.submit(req)
    }

    /// Runs `req` as a task and gives its result, blocking this thread.
    pub fn call_blocking(&self, req: Req) -> TaskResult<Rep> {
        self.submit(req).wait()
    }

    /// Runs every item, yielding results in input order, blocking this
    /// thread for each. At most [`PoolOptions::map_window`] tasks are taken
    /// from `items` and not yet yielded. Dropping it cancels the tasks it
    /// holds.
    pub fn map<I>(&self, items: I) -> HandleMap<Req, Rep, I::IntoIter>
    where
        I: IntoIterator<Item = Req>,
    {
        HandleMap {
            handle: self.clone(),
            input: Some(items.into_iter()),
            pending: VecDeque::new(),
        }
    }

    /// [`PoolHandle::map`] as a `Stream` (`futures_core::Stream`, which
    /// every async runtime's stream helpers take), for async code.
    pub fn map_stream<I>(&self, items: I) -> HandleStream<Req, Rep, I::IntoIter>
    where
        I: IntoIterator<Item = Req>,
    {
        HandleStream(self.map(items))
    }

    /// The pool's counts, now (asks its thread and waits for the answer).
    pub fn stats(&self) -> PoolStats {
        let (tx, rx) = oneshot::channel();
        if !self.shared.mailbox.post(Command::Stats(tx)) {
            return PoolStats::default();
        }
        rx.recv().unwrap_or_default()
    }

    /// Drops this handle; if it was the last, waits until the pool's thread
    /// finished the tasks still awaited and reaped every worker.
    pub fn close(self) {
        let Ok(shared) = Arc::try_unwrap(self.shared) else {
            return;
        };
        let thread = shared
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(shared);
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The pool's thread: commands in, turns of the pool, results out.
fn run<Req, Rep>(mut pool: Pool<Req, Rep>, mailbox: &Mailbox<Req, Rep>, mut woken: pipe::Receiver)
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    // Each awaited task's reply channel and the ticket its `Pending`
    // cancels it by (both maps drop a task together).
    let mut waiting: HashMap<TaskId, (u64, oneshot::Sender<TaskResult<Rep>>)> = HashMap::new();
    let mut tickets: HashMap<u64, TaskId> = HashMap::new();
    let mut ending = false;
    loop {
        let commands = std::mem::take(&mut mailbox.lock().queue);
        for c in commands {
            match c {
                Command::Submit { req, ticket, reply } => match pool.submit(req) {
                    Ok(id) => {
                        waiting.insert(id, (ticket, reply));
                        tickets.insert(ticket, id);
                    }
                    Err(_) => drop(reply),
                },
                Command::Cancel(ticket) => {
                    if let Some(id) = tickets.remove(&ticket) {
                        if waiting.remove(&id).is_some() {
                            pool.cancel(id);
                        }
                    }
                }
                Command::Stats(tx) => {
                    let _ = tx.send(pool.stats());
                }
                Command::Shutdown => ending = true,
            }
        }
        while let Some((id, result)) = pool.router.next_handle() {
            if let Some((ticket, tx)) = waiting.remove(&id) {
                tickets.remove(&ticket);
                // A caller that stopped waiting meanwhile: nobody to tell.
                let _ = tx.send(result);
            }
        }
        if ending && waiting.is_empty() {
            break;
        }
        {
            let mut inbox = mailbox.lock();
            if !inbox.queue.is_empty() {
                continue;
            }
            inbox.asleep = true;
        }
        if pool.running.is_empty() && pool.queue.is_empty() {
            // Nothing to do but wait for a command (or a worker's end).
            pool.wait_and_file(None);
        } else {
            pool.step(None);
        }
        let rung = {
            let mut inbox = mailbox.lock();
            inbox.asleep = false;
            std::mem::take(&mut inbox.rung)
        };
        if rung {
            // A pipe's read returns all it holds up to the buffer: a short
            // read drained it (a byte written later brings its own edge).
            let mut drained = [0u8; 64];
            while matches!(woken.read(&mut drained), Ok(n) if n == drained.len()) {}
        }
    }
    pool.close();
}

/// What a [`Pending`] needs of the mailbox, without its types.
trait Cancel: Send + Sync {
    fn cancel(&self, ticket: u64);
}

impl<Req: Send, Rep: Send> Cancel for Mailbox<Req, Rep> {
    fn cancel(&self, ticket: u64) {
        self.post(Command::Cancel(ticket));
    }
}

/// A submitted task's result to come ([`PoolHandle::submit`]): a `Future`
/// of its [`TaskResult`], and [`Pending::wait`] for blocking code.
/// Dropping it before the result came cancels the task.
///
/// If the pool's thread is gone before the task got a number (the pool
/// failed), the error names task `u64::MAX` with [`Cause::Terminated`].
pub struct Pending<Rep> {
    rx: Option<oneshot::Receiver<TaskResult<Rep>>>,
    ticket: u64,
    cancel: Option<Arc<dyn Cancel>>,
}

impl<Rep> fmt::Debug for Pending<Rep> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("done", &self.rx.is_none())
            .finish_non_exhaustive()
    }
}

fn gone<Rep>() -> TaskResult<Rep> {
    Err(TaskError::new(TaskId(u64::MAX), None, Cause::Terminated))
}

impl<Rep> Pending<Rep> {
    /// Blocks until the task's result came.
    pub fn wait(mut self) -> TaskResult<Rep> {
        let result = match self.rx.take() {
            Some(rx) => rx.recv().unwrap_or_else(|_| gone()),
            None => gone(),
        };
        self.cancel = None;
        result
    }

    /// Blocks up to `timeout` for the task's result: `None` if it did not
    /// come in time (the task goes on; wait again, or drop this to cancel
    /// it).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<TaskResult<Rep>> {
        let rx = self.rx.as_ref()?;
        let result = match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(oneshot::RecvTimeoutError::Timeout) => return None,
            Err(oneshot::RecvTimeoutError::Disconnected) => gone(),
        };
        self.rx = None;
        self.cancel = None;
        Some(result)
    }
}

impl<Rep> Future for Pending<Rep> {
    type Output = TaskResult<Rep>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TaskResult<Rep>> {
        let this = self.get_mut();
        let Some(rx) = this.rx.as_mut() else {
            return Poll::Ready(gone());
        };
        match Pin::new(rx).poll(cx) {
            Poll::Ready(r) => {
                this.rx = None;
                this.cancel = None;
                Poll::Ready(r.unwrap_or_else(|_| gone()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<Rep> Drop for Pending<Rep> {
    fn drop(&mut self) {
        if let (Some(_), Some(cancel)) = (self.rx.take(), self.cancel.take()) {
            cancel.cancel(self.ticket);
        }
    }
}

/// [`PoolHandle::map`]'s results in input order, an `Iterator` that blocks.
pub struct HandleMap<Req, Rep, I> {
    handle: PoolHandle<Req, Rep>,
    input: Option<I>,
    pending: VecDeque<Pending<Rep>>,
}

impl<Req, Rep, I> fmt::Debug for HandleMap<Req, Rep, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandleMap")
            .field("unyielded", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<Req: Send + 'static, Rep: Send + 'static, I: Iterator<Item = Req>> HandleMap<Req, Rep, I> {
    fn fill(&mut self) {
        while self.pending.len() < self.handle.shared.window {
            match self.input.as_mut().and_then(Iterator::next) {
                Some(req) => self.pending.push_back(self.handle.submit(req)),
                None => {
                    self.input = None;
                    return;
                }
            }
        }
    }
}

impl<Req: Send + 'static, Rep: Send + 'static, I: Iterator<Item = Req>> Iterator
    for HandleMap<Req, Rep, I>
{
    type Item = TaskResult<Rep>;

    fn next(&mut self) -> Option<TaskResult<Rep>> {
        self.fill();
        self.pending.pop_front().map(Pending::wait)
    }
}

/// [`PoolHandle::map_stream`]'s results in input order, a `Stream`.
pub struct HandleStream<Req, Rep, I>(HandleMap<Req, Rep, I>);

impl<Req, Rep, I> fmt::Debug for HandleStream<Req, Rep, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<Req, Rep, I> futures_core::Stream for HandleStream<Req, Rep, I>
where
    Req: Send + 'static,
    Rep: Send + 'static,
    I: Iterator<Item = Req> + Unpin,
{
    type Item = TaskResult<Rep>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskResult<Rep>>> {
        let this = &mut self.get_mut().0;
        this.fill();
        let Some(front) = this.pending.front_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(front).poll(cx) {
            Poll::Ready(r) => {
                this.pending.pop_front();
                Poll::Ready(Some(r))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
