//! The reactor: one `mio::Poll` over every worker's connection, the
//! servers' listeners, handshakes and children, and the caller's own
//! sources. This file holds the type, polling and dispatch, `wait_any` and
//! embedding; its rooms:
//!
//! * `events.rs`: the one stream of every kind ([`Event`],
//!   `wait_events`), user events, and what `wait_any` has announced;
//! * `poll.rs`: one `epoll_wait` (its timeout kept in the deadline timer
//!   when long) and the dispatch of each event;
//! * `workers.rs`: the per-worker API (spawn, send, close, kill, receive);
//! * `exits.rs`: a connection's end and its child's exit (hang-up, pidfds,
//!   reaping, `Closed`), and `shutdown`;
//! * `serving.rs`: the public face of the TCP servers (`listen`, ...), which
//!   [`Servers`] runs;
//! * `client.rs` (beside this directory) adds `connect` through the same
//!   small interface.
//!
//! Every entry with a token is in the one [`Registry`]; every event goes
//! through [`Registry::resolve`] before it reaches anything.

mod batch;
mod events;
mod exits;
mod lines;
mod poll;
mod serving;
#[cfg(feature = "tokio")]
mod tokio_fd;
mod workers;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::conn::{self, Conn, ReadUntil, State, Stream};
use crate::error::{Error, Result};
use crate::fork;
use crate::options::ConnSettings;
use crate::process::{deadline_after, Unreaped};
use crate::registry::{Entry, Registry};
use crate::server::Servers;
use crate::sys;
use crate::token::Sub;
use crate::worker::Worker;

pub use batch::Batch;
use events::Announced;
pub use events::{Event, UserEvent};
pub(crate) use lines::Incoming;

/// Default time [`Reactor`]'s drop and [`Reactor::shutdown`] give workers to exit
/// after their connection closes, before `SIGKILL`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(1);

/// One thread's event loop over many workers.
///
/// # Contract
///
/// * **Sources.** Every worker connection (and every listener, handshake
///   and serving child) is an entry of one registry, and its `mio`
///   [`Token`]s carry the entry's slot and a generation unique in the
///   process, so an event for a removed worker never reaches the worker that
///   reuses its slot, and a handle of another reactor names nothing here.
///   Events for unknown tokens are ignored.
/// * **Sending never blocks.** [`send`](Reactor::send) encodes the message
///   into the worker's output buffer and, when nothing is queued ahead of
///   it, writes it at once (one non-blocking `send(2)` with
///   `MSG_NOSIGNAL`). What the socket does not take, and lines queued
///   behind it, are written as the socket drains (`WRITABLE` interest is
///   asked for only while a buffer cannot be written in full), by
///   [`wait_any`](Reactor::wait_any) and [`recv`](Reactor::recv), or on
///   [`flush`](Reactor::flush).
///   Past the worker's high-water mark `send` returns
///   [`Error::Backpressure`] and queues nothing.
/// * **Reading.** A readable connection is read until the kernel has
///   nothing more for it (mio is edge-triggered): after an event that
///   reported only new bytes, until a read returns less than the buffer
///   (one `recvmsg`); after an urgent mark, a hang-up, an error or
///   descriptors, until `WouldBlock`. Complete lines are queued per worker,
///   in order, and decoded when taken; lines that fail (too long,
///   undecodable) fail in their place.
/// * **Closing.** When a connection ends, its descriptor is closed, an
///   unfinished line is queued as [`Error::TruncatedLine`], the child is reaped
///   (`waitpid(pid, WNOHANG)`, then on its pidfd if it has not exited yet) and
///   [`Error::Closed`] with its exit status is queued last. Once that event is
///   returned the handle is gone ([`Error::UnknownWorker`]). miniray never
///   calls `waitpid(-1)` and installs no signal handler.
/// * **Exit before hang-up.** An exec worker's pidfd is watched from spawn
///   (its socket is its stdin and stdout, which whatever it starts
///   inherits), so its exit is seen when it happens: it is reaped at once
///   and, if its connection is still open after reading it to the end (a
///   descendant, such as a background job, holds the socket),
///   [`Error::Exited`] is queued after the messages read so far. The
///   connection then goes on (messages both ways) until EOF brings
///   [`Error::Closed`] with the same status. A child whose socket closes
///   with it reports only `Closed`. A closure worker's socket is
///   close-on-exec, so only a raw `fork` in its work function could keep it
///   open: its exit is watched from hang-up.
/// * **Descriptors.** One per running worker (its socket), the epoll
///   descriptor, the waker and the deadline timer, plus a pidfd per exec worker from spawn
///   while that pidfd is numbered below half the soft open-file limit (the
///   upper half is left to sockets and to the program; past it, or when
///   `pidfd_open` fails, the worker is watched from hang-up), given back
///   when a spawn runs out of descriptors; and a pidfd per child between
///   hang-up and exit.
/// * **Durations** too long for an [`Instant`] (`Duration::MAX`) mean no
///   deadline.
/// * **Dropping** the reactor closes every connection, gives the children
///   [`DEFAULT_GRACE`] to exit, kills the rest with `SIGKILL` and reaps all.
///
/// # Threads and fork
///
/// `spawn` forks. Fork from a thread that outlives the workers:
/// `PR_SET_PDEATHSIG` fires when the *forking thread* exits, not the
/// process (so under `cargo test`, whose tests run on threads, a test's
/// workers die with its thread). In the child only the forking thread
/// exists: a work function must not wait on a lock another parent thread
/// might have held at fork time (stdout's, a `Mutex` of yours). glibc's
/// `malloc` is safe there.
///
/// # Example
///
/// ```
/// use miniray::{py, Reactor, Value};
/// use std::time::Duration;
///
/// let mut reactor = Reactor::new()?;
/// let w = reactor.spawn(|msg: Value| py!({"echo": msg}))?;
/// reactor.send(w, &py!({"test": 123}))?;
/// let ready = reactor.wait_any(Some(Duration::from_secs(5)))?;
/// assert_eq!(ready, vec![w]);
/// assert_eq!(reactor.try_recv::<Value>(w)?, Some(py!({"echo": {"test": 123}})));
/// # Ok::<(), miniray::Error>(())
/// ```
#[derive(Debug)]
pub struct Reactor {
    poll: Poll,
    events: Events,
    /// Every connection, listener, handshake and serving child.
    tokens: Registry,
    /// Workers that may have queued events (checked, not trusted).
    ready: Vec<Worker>,
    /// Workers with output not yet written.
    dirty: Vec<Worker>,
    /// Hung-up children that could get no pidfd: `waitpid` is retried.
    unreaped: Unreaped<Worker>,
    /// Exec workers given a pidfd at spawn, newest last: the ones that give
    /// it back when a spawn runs out of descriptors. Entries go stale (checked
    /// when used, swept when the list outgrows the workers).
    early_watched: Vec<Worker>,
    /// The read buffer every connection shares.
    read_buf: Vec<u8>,
    /// Encoding scratch space (marshal's bytes before base64).
    scratch: Vec<u8>,
    /// A [`Batch`] is open: sends queue instead of writing through.
    batching: bool,
    grace: Duration,
    /// Makes the epoll descriptor readable while work is queued but not
    /// returned (an eventfd under [`WAKE`]).
    waker: Waker,
    /// The deadline of long waits, kept armed across them (a timerfd, also
    /// under [`WAKE`]): see [`Reactor::wait_timeout`].
    timer: sys::Timer,
    /// When `timer` expires, as last armed (it is one-shot: once this has
    /// passed, it is disarmed).
    timer_due: Option<Instant>,
    /// Set once the reactor's descriptor was handed out: only then is the
    /// waker written.
    embedded: AtomicBool,
    /// Events for the caller's own sources.
    user_events: Vec<UserEvent>,
    user_sources: usize,
    /// What `wait_any` has already returned for (see [`Announced`]).
    announced: Announced,
    /// Servers: their events and timers (their entries are in `tokens`).
    servers: Servers,
}

/// Tokens below this are the caller's own (see [`Reactor::register_source`]);
/// miniray's tokens all lie above it.
pub const USER_TOKEN_LIMIT: usize = 0xffff_ffff;

/// The token of the waker and the deadline timer: the first one above the
/// caller's range (no entry's token decodes to it). Their events only end
/// a wait.
const WAKE: Token = Token(USER_TOKEN_LIMIT);

impl Reactor {
    /// A reactor with no workers. System calls: `epoll_create1`, `eventfd`,
    /// `timerfd_create`, `epoll_ctl`.
    ///
    /// The first reactor of the process installs miniray's panic hook (see
    /// [`worker`](crate::worker#panics-in-a-worker)): that takes std's
    /// panic-hook lock for writing, which waits for any hook running in
    /// another thread at that moment. Create it before other threads panic
    /// under locks of yours, as early in `main` as is convenient.
    pub fn new() -> Result<Self> {
        fork::install_panic_hook();
        let poll = Poll::new().map_err(|e| Error::io("epoll_create1", e))?;
        let waker = Waker::new(poll.registry(), WAKE).map_err(|e| Error::io("eventfd", e))?;
        let timer = sys::Timer::new().map_err(|e| Error::io("timerfd_create", e))?;
        poll.registry()
            .register(
                &mut SourceFd(&timer.as_fd().as_raw_fd()),
                WAKE,
                Interest::READABLE,
            )
            .map_err(|e| Error::io("epoll_ctl", e))?;
        Ok(Reactor {
            poll,
            waker,
            timer,
            timer_due: None,
            embedded: AtomicBool::new(false),
            user_events: Vec::new(),
            user_sources: 0,
            announced: Announced::default(),
            servers: Servers::default(),
            events: Events::with_capacity(1024),
            tokens: Registry::default(),
            ready: Vec::new(),
            dirty: Vec::new(),
            unreaped: Unreaped::default(),
            early_watched: Vec::new(),
            read_buf: Vec::new(),
            scratch: Vec::new(),
            batching: false,
            grace: DEFAULT_GRACE,
        })
    }

    /// Sets how long drop, [`Reactor::shutdown`] and
    /// [`Reactor::stop_server`] wait for children to exit after closing their
    /// connections, before killing them. `Duration::MAX` waits without limit
    /// (for children that exit on EOF or `SIGTERM`).
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Number of workers whose `Closed` event has not been returned yet.
    pub fn len(&self) -> usize {
        self.tokens.conns()
    }

    /// True when the reactor has no workers.
    pub fn is_empty(&self) -> bool {
        self.tokens.conns() == 0
    }

    /// Registers a connection and gives it an entry.
    pub(crate) fn insert_conn(
        &mut self,
        mut sock: Stream,
        pid: Option<libc::pid_t>,
        opts: &ConnSettings,
        state: State,
        interest: Interest,
    ) -> Result<Worker> {
        let poll = self.poll.registry();
        let mut fd = sock.as_raw_fd();
        let writable = interest.is_writable();
        let key = self.tokens.insert_with(|key| {
            poll.register(&mut sock, key.token(Sub::Main), conn::interest(writable))
                .map_err(|e| Error::io("epoll_ctl", e))?;
            fd = sock.as_raw_fd();
            Ok::<_, Error>(Entry::Conn(Conn::new(sock, pid, opts, state, writable)))
        })?;
        Ok(Worker { key, fd })
    }

    /// The worker's connection, or [`Error::UnknownWorker`] for a handle
    /// that names none (stale, of another reactor, or no worker's).
    pub(crate) fn conn(&self, w: Worker) -> Result<&Conn> {
        self.tokens.conn(w.key).ok_or(Error::UnknownWorker)
    }

    /// As [`Reactor::conn`], mutably.
    pub(crate) fn conn_mut(&mut self, w: Worker) -> Result<&mut Conn> {
        self.tokens.conn_mut(w.key).ok_or(Error::UnknownWorker)
    }

    /// Forgets a connection at once (a failed connect): deregisters and
    /// closes its socket. Its child, if any, is the caller's to end.
    pub(crate) fn remove_conn(&mut self, w: Worker) -> Option<Conn> {
        self.tokens.conn(w.key)?;
        let Some(Entry::Conn(mut c)) = self.tokens.remove(w.key) else {
            return None;
        };
        c.end_stream(self.poll.registry());
        Some(c)
    }

    /// Writes what every worker has queued, as far as the sockets take it
    /// without blocking. `wait_any` and `recv` do this first.
    pub fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for w in &dirty {
            if let Ok(c) = self.conn_mut(*w) {
                c.clear_dirty();
                self.flush_conn(*w);
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Writes the connection's queued output (see [`Conn::write_out`]).
    pub(crate) fn flush_conn(&mut self, w: Worker) {
        let Some(conn) = self.tokens.conn_mut(w.key) else {
            return;
        };
        let done = conn.write_out(self.poll.registry(), w.key.token(Sub::Main));
        if done.reported {
            mark_ready(&mut self.ready, conn, w);
        }
        if done.failed {
            self.read_conn(w);
        }
    }

    /// Reads the connection until `WouldBlock`, queueing its lines.
    pub(crate) fn read_conn(&mut self, w: Worker) {
        self.read_conn_until(w, ReadUntil::WouldBlock);
    }

    /// Reads the connection as far as `until` says, queueing its lines.
    fn read_conn_until(&mut self, w: Worker, until: ReadUntil) {
        let Some(conn) = self.tokens.conn_mut(w.key) else {
            return;
        };
        let got = conn.read_available(&mut self.read_buf, until);
        if got.queued {
            mark_ready(&mut self.ready, conn, w);
        }
        if got.ended {
            self.hang_up(w);
        }
    }

    /// The workers that have at least one event queued (a message, a failed
    /// message, or `Closed`), waiting up to `timeout` for one: `None` waits
    /// without limit, `Some(ZERO)` only polls. Every call first writes
    /// queued output and polls once without waiting (so workers whose
    /// messages are left untaken never hold up the others); work already
    /// queued is then returned without waiting. A reactor with no workers returns an empty
    /// list at once. Cost: one `epoll_wait` plus work proportional to
    /// the workers that are ready, never to the number of workers.
    ///
    /// Server and user events are not returned here but stay queued for
    /// [`Reactor::take_server_events`], [`Reactor::take_user_events`] or
    /// [`Reactor::wait_events`] (which returns every kind in one stream).
    /// A new one ends the wait, perhaps with no worker; events already
    /// announced by an earlier `wait_any` and left untaken do not, so they
    /// never make it spin (nor keep an embedded reactor's descriptor
    /// readable: take them after the `wait_any` that announced them).
    pub fn wait_any(&mut self, timeout: Option<Duration>) -> Result<Vec<Worker>> {
        let mut out = Vec::new();
        self.wait_any_into(&mut out, timeout)?;
        Ok(out)
    }

    /// [`Reactor::wait_any`] into a caller's vector (cleared first), to reuse
    /// its allocation.
    pub fn wait_any_into(
        &mut self,
        out: &mut Vec<Worker>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        out.clear();
        self.wait_for(timeout, |r| {
            r.recheck_ready();
            out.extend_from_slice(&r.ready);
            let queued = r.queued_events();
            if out.is_empty() && !r.announced.fresh(queued) {
                return false;
            }
            r.announced = queued;
            true
        })
    }

    /// The wait of `wait_any` and `wait_events`: polls until `found` (which
    /// looks at what is queued and fills the caller's list) says there is
    /// something to return, or `timeout` passes.
    fn wait_for(
        &mut self,
        timeout: Option<Duration>,
        mut found: impl FnMut(&mut Self) -> bool,
    ) -> Result<()> {
        let deadline = timeout.and_then(deadline_after);
        // Every wait polls (writing queued output, reading what other
        // sources have), so a worker whose messages the caller leaves
        // untaken never starves the rest; with work already queued that one
        // poll does not wait. One `epoll_wait` per call in the common cases.
        let mut wait = if self.maybe_queued() {
            Some(Duration::ZERO)
        } else {
            deadline.map(|d| d.saturating_duration_since(Instant::now()))
        };
        loop {
            let idle = self.user_sources == 0 && self.tokens.is_empty();
            // With nothing that could become ready, never wait.
            self.poll_once(if idle { Some(Duration::ZERO) } else { wait })?;
            if found(self) {
                self.signal_queued();
                return Ok(());
            }
            wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if idle || wait == Some(Duration::ZERO) {
                return Ok(());
            }
        }
    }

    /// Whether anything may be queued for a wait to return (conservative:
    /// `ready` may name workers already drained).
    fn maybe_queued(&self) -> bool {
        !self.ready.is_empty() || !self.user_events.is_empty() || self.servers.events_len() > 0
    }

    /// In embedded use, makes the reactor's descriptor readable (again): work
    /// is queued that a wait has yet to return, or was just returned and
    /// may not all be consumed. Each write is a fresh edge for
    /// edge-triggered outer loops; a level-triggered one sees the descriptor
    /// readable until the next wait polls. Called on every way out of
    /// whatever polls or queues events outside a wait's own return: the
    /// waits, `recv`, `connect`, `stop_server` and `shutdown`.
    pub(crate) fn signal_queued(&mut self) {
        if self.embedded.load(Ordering::Relaxed) && self.maybe_queued() {
            let _ = self.waker.wake();
        }
    }

    /// Registers a source of the caller's own in the reactor's poll, under
    /// a token below [`USER_TOKEN_LIMIT`] (miniray's tokens never are).
    /// Its readiness makes `wait_any` return (perhaps with no worker) and is
    /// collected by [`Reactor::take_user_events`], or comes as
    /// [`Event::User`] from [`Reactor::wait_events`]. Registration is
    /// edge-triggered, as everything in mio.
    pub fn register_source<S>(
        &mut self,
        source: &mut S,
        token: Token,
        interest: Interest,
    ) -> Result<()>
    where
        S: mio::event::Source + ?Sized,
    {
        if token.0 >= USER_TOKEN_LIMIT {
            return Err(Error::io(
                "epoll_ctl",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "user tokens must be below USER_TOKEN_LIMIT",
                ),
            ));
        }
        self.poll
            .registry()
            .register(source, token, interest)
            .map_err(|e| Error::io("epoll_ctl", e))?;
        self.user_sources += 1;
        Ok(())
    }

    /// Removes a source registered with [`Reactor::register_source`].
    pub fn deregister_source<S>(&mut self, source: &mut S) -> Result<()>
    where
        S: mio::event::Source + ?Sized,
    {
        self.poll
            .registry()
            .deregister(source)
            .map_err(|e| Error::io("epoll_ctl", e))?;
        self.user_sources = self.user_sources.saturating_sub(1);
        Ok(())
    }

    /// Drops from the ready list the workers with nothing queued any more.
    fn recheck_ready(&mut self) {
        let tokens = &mut self.tokens;
        self.ready.retain(|w| match tokens.conn_mut(w.key) {
            Some(c) => c.recheck_queued(),
            None => false,
        });
    }
}

/// Puts the worker on the ready list unless it is there already.
fn mark_ready(ready: &mut Vec<Worker>, conn: &mut Conn, w: Worker) {
    if conn.mark_queued() {
        ready.push(w);
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        if !self.tokens.is_empty() {
            self.shutdown();
        }
    }
}

impl AsRawFd for Reactor {
    /// The epoll descriptor, for embedding (see the crate docs): readable
    /// whenever [`Reactor::wait_any`] or [`Reactor::wait_events`] has
    /// something to return. Asking for
    /// it turns on the wake-ups that keep that promise for queued work.
    fn as_raw_fd(&self) -> RawFd {
        self.embedded.store(true, Ordering::Relaxed);
        self.poll.as_raw_fd()
    }
}

impl AsFd for Reactor {
    /// As [`AsRawFd::as_raw_fd`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.embedded.store(true, Ordering::Relaxed);
        self.poll.registry().as_fd()
    }
}
