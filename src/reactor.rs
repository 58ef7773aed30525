//! The reactor: one `mio::Poll` over every worker's connection.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::Value;
use slab::Slab;

use crate::envelope;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::inbound::{Inbound, Msg};
use crate::remote::is_fd_exhaustion;
use crate::shm::SharedMemory;
use crate::sys;
use crate::worker::{self, Channel, Worker, WorkerOptions};

/// A worker's connection: a socketpair end (local) or TCP (remote, served).
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(mio::net::TcpStream),
}

impl Stream {
    /// Reads bytes; on a Unix socket with `recvmsg`, collecting descriptors.
    fn read(&mut self, buf: &mut [u8], got: &mut sys::Received) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => sys::recv_with_fds(s.as_raw_fd(), buf, got),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl mio::event::Source for Stream {
    fn register(&mut self, r: &mio::Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.register(r, t, i),
            Stream::Tcp(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &mio::Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.reregister(r, t, i),
            Stream::Tcp(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.deregister(r),
            Stream::Tcp(s) => s.deregister(r),
        }
    }
}

/// Bytes read per `read(2)`: one buffer shared by every connection.
const READ_CHUNK: usize = 256 * 1024;
/// A connection's queued output is written as soon as it passes this, not
/// only at the next `wait_any`/`recv`.
const FLUSH_AT: usize = 64 * 1024;
/// An output buffer larger than this is freed once it drains, so an idle
/// worker holds no buffer memory.
const KEEP_OUT_CAPACITY: usize = 4096;
/// While a hung-up child could not get a pidfd, `waitpid` is retried this often.
const REAP_RETRY: Duration = Duration::from_millis(5);

/// The moment `d` from now, or `None` ("no deadline") when that is past what
/// an [`Instant`] can hold (`Duration::MAX`, say): `Instant + Duration`
/// panics on overflow, and a panic in `Drop` or event dispatch would take
/// the program down.
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// Default time [`Reactor`]'s drop and [`Reactor::shutdown`] give workers to exit
/// after their connection closes, before `SIGKILL`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(1);

/// One thread's event loop over many workers.
///
/// # Contract
///
/// * **Sources.** Every worker connection is a `mio` source whose
///   [`Token`] is its slab key (low 32 bits) and a generation (high 32 bits),
///   so an event for a removed worker never reaches the worker that reuses
///   its slot. Events for unknown tokens are ignored.
/// * **Sending never blocks.** [`send`](Reactor::send) encodes the message
///   into the worker's output buffer. Buffers are written when
///   [`wait_any`](Reactor::wait_any) or [`recv`](Reactor::recv) runs (one
///   `send(2)` per worker per batch, with `MSG_NOSIGNAL`), or at once when a
///   buffer passes 64 KiB, or on [`flush`](Reactor::flush). `WRITABLE`
///   interest is asked for only while a buffer cannot be written in full.
///   Past the worker's high-water mark `send` returns
///   [`Error::Backpressure`] and queues nothing.
/// * **Reading.** A readable connection is read until `WouldBlock` (mio is
///   edge-triggered); complete lines are decoded and queued per worker, in
///   order. Lines that fail (too long, undecodable) are queued as errors in
///   their place.
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
///   descriptor and the waker, plus a pidfd per exec worker from spawn
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
/// use miniray::{Reactor, serde_json::json};
/// use std::time::Duration;
///
/// let mut reactor = Reactor::new()?;
/// let w = reactor.spawn(|msg| json!({"echo": msg}))?;
/// reactor.send(w, &json!({"test": 123}))?;
/// let ready = reactor.wait_any(Some(Duration::from_secs(5)))?;
/// assert_eq!(ready, vec![w]);
/// assert_eq!(reactor.try_recv(w)?, Some(json!({"echo": {"test": 123}})));
/// # Ok::<(), miniray::Error>(())
/// ```
#[derive(Debug)]
pub struct Reactor {
    pub(crate) poll: Poll,
    pub(crate) events: Events,
    pub(crate) conns: Slab<Conn>,
    /// Workers that may have queued events (checked, not trusted).
    pub(crate) ready: Vec<Worker>,
    /// Workers with output not yet written.
    pub(crate) dirty: Vec<Worker>,
    /// Hung-up children that could get no pidfd: `waitpid` is retried.
    pub(crate) unreaped: Vec<Worker>,
    /// Exec workers given a pidfd at spawn, newest last: the ones that give
    /// it back when a spawn runs out of descriptors. Entries go stale (checked
    /// when used, swept when the list outgrows the workers).
    pub(crate) early_watched: Vec<Worker>,
    pub(crate) read_buf: Vec<u8>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) grace: Duration,
    /// Makes the epoll descriptor readable while work is queued but not
    /// returned (an eventfd under [`WAKE`]).
    pub(crate) waker: Waker,
    /// Set once the reactor's descriptor was handed out: only then is the
    /// waker written.
    pub(crate) embedded: AtomicBool,
    /// Events for the caller's own sources.
    pub(crate) user_events: Vec<UserEvent>,
    pub(crate) user_sources: usize,
    /// How many user and server events `wait_any` has already returned
    /// for: only new ones end a wait early, so events left untaken never
    /// make `wait_any` spin.
    pub(crate) announced: (usize, usize),
    /// Servers, their children, their events.
    pub(crate) tcp: crate::remote::Tcp,
}

/// Tokens below this are the caller's own (see [`Reactor::register_source`]);
/// miniray's tokens all lie above it.
pub const USER_TOKEN_LIMIT: usize = 0xffff_ffff;

/// The waker's token: the first one above the caller's range.
const WAKE: Token = Token(USER_TOKEN_LIMIT);

/// Readiness of one of the caller's own sources, from [`Reactor::take_user_events`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserEvent {
    /// The token the source was registered with.
    pub token: Token,
    /// Readable (or read side closed).
    pub readable: bool,
    /// Writable.
    pub writable: bool,
    /// The peer closed its side (read or write).
    pub closed: bool,
    /// An error is pending on the source.
    pub error: bool,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) gen: u32,
    pub(crate) fd: RawFd,
    pub(crate) pid: Option<libc::pid_t>,
    pub(crate) format: Format,
    pub(crate) high_water: usize,
    /// `None` once the connection ended.
    pub(crate) sock: Option<Stream>,
    pub(crate) inbound: Inbound,
    pub(crate) out: Vec<u8>,
    /// Bytes of `out` already written.
    pub(crate) out_pos: usize,
    pub(crate) writable: bool,
    pub(crate) dirty: bool,
    pub(crate) queued: bool,
    /// Descriptors to send with the line starting at that offset of `out`.
    pub(crate) out_fds: VecDeque<(usize, Vec<OwnedFd>)>,
    /// Reading stops while this many line bytes wait to be taken.
    pub(crate) max_queued: usize,
    pub(crate) read_paused: bool,
    pub(crate) state: State,
    /// The child's pidfd, registered under the `KIND_EXIT` token: from spawn
    /// (when descriptors allow) or from hang-up until exit.
    pub(crate) pidfd: Option<OwnedFd>,
    /// `Some(status)` once the child was reaped (its pid may be reused:
    /// never signal it again).
    pub(crate) exit: Option<Option<ExitStatus>>,
    /// [`Error::Exited`] was queued.
    pub(crate) exit_told: bool,
}

#[derive(Debug)]
pub(crate) enum State {
    /// A TCP connect in progress; `authenticate`: answer the server's
    /// challenge before anything else is read.
    Connecting {
        authenticate: bool,
    },
    /// Connected; answering the server's authentication challenge.
    Authenticating,
    Open,
    /// `close` was called: shut down writing once `out` drains.
    Closing,
    /// Writing shut down; reading goes on until the child hangs up.
    WriteShut,
    /// The connection ended; waiting for the child to exit (via its pidfd,
    /// or by retrying `waitpid`).
    Reaping,
    /// `Closed` is queued.
    Done,
}

/// Generations are unique across every reactor of the process, so a handle
/// from one reactor is never taken for a worker of another.
pub(crate) fn next_generation() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    loop {
        let g = NEXT.fetch_add(1, Ordering::Relaxed);
        if g != 0 {
            return g;
        }
    }
}

/// The kind bits of a token's low half: which slab its key indexes.
pub(crate) const KIND_LISTENER: usize = 1 << 31;
pub(crate) const KIND_CHILD: usize = 1 << 30;
pub(crate) const KIND_PENDING: usize = 1 << 29;
/// A local worker's pidfd (the worker's own key and generation).
pub(crate) const KIND_EXIT: usize = 1 << 28;
/// Slab keys stay below this, clear of the kind bits.
pub(crate) const MAX_KEY: usize = (1 << 28) - 1;

pub(crate) fn token(key: usize, gen: u32) -> Token {
    Token(key | ((gen as usize) << 32))
}

pub(crate) fn untoken(t: Token) -> (usize, u32) {
    (t.0 & 0xffff_ffff, (t.0 >> 32) as u32)
}

impl Reactor {
    /// A reactor with no workers. System calls: `epoll_create1`, `eventfd`,
    /// `epoll_ctl`.
    ///
    /// The first reactor of the process installs miniray's panic hook (see
    /// [`worker`](crate::worker#panics-in-a-worker)): that takes std's
    /// panic-hook lock for writing, which waits for any hook running in
    /// another thread at that moment. Create it before other threads panic
    /// under locks of yours, as early in `main` as is convenient.
    pub fn new() -> Result<Self> {
        worker::install_panic_hook();
        let poll = Poll::new().map_err(|e| Error::io("epoll_create1", e))?;
        let waker = Waker::new(poll.registry(), WAKE).map_err(|e| Error::io("eventfd", e))?;
        Ok(Reactor {
            poll,
            waker,
            embedded: AtomicBool::new(false),
            user_events: Vec::new(),
            user_sources: 0,
            announced: (0, 0),
            tcp: crate::remote::Tcp::default(),
            events: Events::with_capacity(1024),
            conns: Slab::new(),
            ready: Vec::new(),
            dirty: Vec::new(),
            unreaped: Vec::new(),
            early_watched: Vec::new(),
            read_buf: Vec::new(),
            scratch: Vec::new(),
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
        self.conns.len()
    }

    /// True when the reactor has no workers.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Spawns a local worker with default options that answers each message
    /// with `f(message)`.
    ///
    /// System calls: `socketpair`, `fork`, `fcntl`, `epoll_ctl`.
    pub fn spawn<F>(&mut self, f: F) -> Result<Worker>
    where
        F: FnMut(Value) -> Value,
    {
        self.spawn_with(&WorkerOptions::default(), f)
    }

    /// Spawns a local worker that answers each message with `f(message)`.
    /// Lines the child cannot decode are skipped. The child exits 0 when the
    /// parent closes the connection.
    pub fn spawn_with<F>(&mut self, opts: &WorkerOptions, f: F) -> Result<Worker>
    where
        F: FnMut(Value) -> Value,
    {
        self.spawn_channel(opts, move |chan| worker::serve_replies(chan, f))
    }

    /// Spawns a local worker that runs `work` with the child's [`Channel`]:
    /// full control over what it receives and sends. The child exits 0 when
    /// `work` returns `Ok`, [`worker::EXIT_ERROR`] on `Err` and
    /// [`worker::EXIT_PANIC`] if it panics.
    pub fn spawn_channel<F>(&mut self, opts: &WorkerOptions, work: F) -> Result<Worker>
    where
        F: FnOnce(&mut Channel) -> Result<()>,
    {
        self.spawn_local(opts, worker::Work::Run(work))
    }

    /// Spawns a local worker that execs `program`: the child makes its
    /// socket the program's stdin and stdout, keeps stderr and the
    /// descriptors given to [`WorkerOptions::keep_fd`], closes the rest and
    /// execs with an empty signal mask and `SIGPIPE` at its default.
    /// `PR_SET_PDEATHSIG` survives the exec. Any program that reads and
    /// writes one message per line in the worker's format is a worker; one
    /// that cannot be executed fails the spawn with [`Error::Exec`].
    ///
    /// System calls: `socketpair`, `pipe2`, `fork`, `read` (until the exec),
    /// then in the child `dup2`, `close_range`, `sigaction`, `execvp`.
    pub fn spawn_exec(&mut self, opts: &WorkerOptions, program: &worker::Exec) -> Result<Worker> {
        self.spawn_local::<fn(&mut Channel) -> Result<()>>(opts, worker::Work::Exec(program))
    }

    fn spawn_local<F>(&mut self, opts: &WorkerOptions, work: worker::Work<'_, F>) -> Result<Worker>
    where
        F: FnOnce(&mut Channel) -> Result<()>,
    {
        // Before the socketpair, which could take a closed keep_fd's number.
        opts.check_keep_fds()?;
        if self.conns.vacant_key() > MAX_KEY {
            return Err(Error::io("spawn", io::Error::other("too many workers")));
        }
        // An exec worker's socket is its stdin and stdout, inherited by
        // whatever it starts, so it may outlive the worker: watch its exit
        // from spawn. A closure worker's socket is close-on-exec (only a raw
        // fork in its work function could share it), and a pidfd each would
        // add a descriptor to every later fork's table: watched from hang-up.
        let exec = match &work {
            worker::Work::Exec(program) => Some(*program),
            worker::Work::Run(_) => None,
        };
        let watch_now = exec.is_some();
        let pair = match std::os::unix::net::UnixStream::pair() {
            // Out of descriptors: early pidfds are a convenience, sockets
            // are not. Give two back (a socketpair needs two) and retry.
            Err(e) if is_fd_exhaustion(&e) && self.give_back_pidfds(2) > 0 => {
                std::os::unix::net::UnixStream::pair()
            }
            other => other,
        };
        let (parent_end, child_end) = pair.map_err(|e| Error::io("socketpair", e))?;
        let pid = match worker::spawn_child(opts, child_end.into(), work) {
            Ok(pid) => pid,
            // The exec error pipe found no room: likewise, give back and
            // start over (the socketpair was closed with the error).
            Err(Error::Io {
                op: "pipe2",
                source,
            }) if is_fd_exhaustion(&source) => match exec {
                Some(program) if self.give_back_pidfds(2) > 0 => {
                    drop(parent_end);
                    return self.spawn_local(opts, worker::Work::<F>::Exec(program));
                }
                _ => {
                    return Err(Error::Io {
                        op: "pipe2",
                        source,
                    })
                }
            },
            Err(e) => return Err(e),
        };
        let sock = parent_end
            .set_nonblocking(true)
            .map_err(|e| Error::io("fcntl", e))
            .map(|()| Stream::Unix(UnixStream::from_std(parent_end)));
        match sock.and_then(|sock| {
            self.insert_conn(sock, Some(pid), opts, State::Open, Interest::READABLE)
        }) {
            Ok(w) => {
                if watch_now && self.watch_exit(w.key as usize, true) {
                    self.note_early_watch(w);
                }
                Ok(w)
            }
            Err(e) => {
                // The child's end is closed with ours; make sure it is gone.
                let _ = sys::kill(pid, libc::SIGKILL);
                let _ = sys::wait(pid);
                Err(e)
            }
        }
    }

    /// Registers a connection and gives it a slot.
    pub(crate) fn insert_conn(
        &mut self,
        mut sock: Stream,
        pid: Option<libc::pid_t>,
        opts: &WorkerOptions,
        state: State,
        interest: Interest,
    ) -> Result<Worker> {
        let key = self.conns.vacant_key();
        if key > MAX_KEY {
            return Err(Error::io("spawn", io::Error::other("too many workers")));
        }
        let gen = next_generation();
        self.poll
            .registry()
            .register(&mut sock, token(key, gen), interest)
            .map_err(|e| Error::io("epoll_ctl", e))?;
        let fd = sock.as_raw_fd();
        let key = self.conns.insert(Conn {
            gen,
            fd,
            pid,
            format: opts.format,
            high_water: opts.high_water,
            sock: Some(sock),
            inbound: Inbound::new(opts.max_line),
            out: Vec::new(),
            out_pos: 0,
            writable: interest.is_writable(),
            dirty: false,
            queued: false,
            out_fds: VecDeque::new(),
            max_queued: opts.max_queued,
            read_paused: false,
            state,
            pidfd: None,
            exit: None,
            exit_told: false,
        });
        Ok(Worker {
            key: key as u32,
            gen,
            fd,
        })
    }

    pub(crate) fn conn(&self, w: Worker) -> Result<&Conn> {
        match self.conns.get(w.key as usize) {
            Some(c) if c.gen == w.gen => Ok(c),
            _ => Err(Error::UnknownWorker),
        }
    }

    pub(crate) fn conn_mut(&mut self, w: Worker) -> Result<&mut Conn> {
        match self.conns.get_mut(w.key as usize) {
            Some(c) if c.gen == w.gen => Ok(c),
            _ => Err(Error::UnknownWorker),
        }
    }

    /// The worker's process id, while it has not been reaped.
    pub fn pid(&self, w: Worker) -> Option<i32> {
        let c = self.conn(w).ok()?;
        match c.state {
            State::Done => None,
            _ if c.exit.is_some() => None,
            _ => c.pid,
        }
    }

    /// The worker's format.
    pub fn format(&self, w: Worker) -> Result<Format> {
        self.conn(w).map(|c| c.format)
    }

    /// Line bytes received from the worker and not yet taken (by
    /// `try_recv`/`recv`). Reading pauses past
    /// [`WorkerOptions::max_queued`](crate::WorkerOptions::max_queued).
    pub fn queued_input(&self, w: Worker) -> Result<usize> {
        self.conn(w).map(|c| c.inbound.queued_bytes)
    }

    /// Bytes queued for the worker and not yet written.
    pub fn pending_output(&self, w: Worker) -> Result<usize> {
        self.conn(w).map(|c| c.out.len() - c.out_pos)
    }

    /// Queues `msg` for the worker. Never blocks (see the type's docs).
    ///
    /// Errors: [`Error::Backpressure`] past the high-water mark (nothing
    /// queued), [`Error::Closed`] once the worker is closing or closed,
    /// [`Error::Encode`], [`Error::UnknownWorker`].
    pub fn send(&mut self, w: Worker, msg: &Value) -> Result<()> {
        self.queue(w, Vec::new(), |f, out, scratch| {
            f.encode_line(msg, out, scratch)
        })
    }

    /// Queues `msg` with shared memory regions: the receiver gets the
    /// message together with its own handles to the same regions
    /// ([`Reactor::recv_regions`], [`Channel::recv_regions`]). Name regions
    /// in `msg` by [`SharedMemory::id`], never by descriptor.
    ///
    /// On the wire the line is the envelope
    /// `{"miniray.regions": [id, ...], "msg": msg}` in the worker's format,
    /// whose first `sendmsg` starts at the line, carries nothing past its
    /// newline and holds the regions' descriptors as `SCM_RIGHTS` in id
    /// order (a line over 64 KiB, or a short write, sends the rest of the
    /// line as plain bytes after it).
    /// A line is read as an envelope only if descriptors came with it, so a
    /// message of the envelope's shape sent with [`Reactor::send`] arrives
    /// unchanged. With no regions this is [`Reactor::send`]: the plain
    /// message, no envelope. Over TCP this fails at once with
    /// [`Error::Region`] and nothing is queued. At most 32 regions per
    /// message.
    ///
    /// If the kernel refuses the descriptors when the line is written (for
    /// `ETOOMANYREFS`: the sending user has more descriptors in flight than
    /// its open-file limit, which a receiver that reads late can cause), that
    /// message alone is dropped and the worker's events carry
    /// [`Error::Io`] with `op` `"sendmsg with region descriptors"` in its
    /// place; the worker stays open and later messages are sent.
    ///
    /// System calls: `fcntl(F_DUPFD_CLOEXEC)` per region now (the duplicate
    /// is closed once sent), `sendmsg` when the line is written.
    pub fn send_regions(
        &mut self,
        w: Worker,
        msg: &Value,
        regions: &[&SharedMemory],
    ) -> Result<()> {
        if regions.is_empty() {
            return self.send(w, msg);
        }
        envelope::check_regions(regions, matches!(self.conn(w)?.sock, Some(Stream::Tcp(_))))?;
        let fds = regions
            .iter()
            .map(|r| sys::dup_cloexec(r.as_raw_fd()))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| Error::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        self.queue(w, fds, |f, out, scratch| {
            envelope::encode_envelope_line(f, regions, msg, out, scratch)
        })
    }

    /// Encodes one line straight into the worker's output buffer (with the
    /// descriptors to send with it) and schedules the write.
    fn queue<E>(&mut self, w: Worker, fds: Vec<OwnedFd>, encode: E) -> Result<()>
    where
        E: FnOnce(Format, &mut Vec<u8>, &mut Vec<u8>) -> Result<()>,
    {
        let conn = match self.conns.get_mut(w.key as usize) {
            Some(c) if c.gen == w.gen => c,
            _ => return Err(Error::UnknownWorker),
        };
        if !matches!(conn.state, State::Open) {
            return Err(Error::Closed { status: None });
        }
        let before = conn.out.len();
        if let Err(e) = encode(conn.format, &mut conn.out, &mut self.scratch) {
            conn.out.truncate(before);
            return Err(e);
        }
        let buffered = before - conn.out_pos;
        let pending = conn.out.len() - conn.out_pos;
        if buffered > 0 && pending > conn.high_water {
            conn.out.truncate(before);
            return Err(Error::Backpressure {
                buffered,
                needed: pending - buffered,
                limit: conn.high_water,
            });
        }
        if !fds.is_empty() {
            conn.out_fds.push_back((before, fds));
        }
        if pending >= FLUSH_AT {
            self.flush_conn(w.key as usize);
        } else if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(w);
        }
        Ok(())
    }

    /// Writes what every worker has queued, as far as the sockets take it
    /// without blocking. `wait_any` and `recv` do this first.
    pub fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for w in &dirty {
            if let Ok(c) = self.conn_mut(*w) {
                c.dirty = false;
                self.flush_conn(w.key as usize);
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Closes the worker's input: queued messages are written, then the
    /// socket's write side is shut down so the child reads EOF. Replies
    /// still arrive; [`Error::Closed`] follows when the child exits.
    pub fn close(&mut self, w: Worker) -> Result<()> {
        let conn = self.conn_mut(w)?;
        if matches!(conn.state, State::Open) {
            conn.state = State::Closing;
            self.flush_conn(w.key as usize);
        }
        Ok(())
    }

    /// Sends `signal` to the worker's process (while it has not been reaped).
    /// System calls: `kill`.
    ///
    /// This is how a worker that never answers (stuck in its own code, or
    /// hung on a lock some other thread of the parent held when it was
    /// forked: see [`worker`](crate::worker#panics-in-a-worker)) is
    /// recovered. miniray sets no deadline of its own: keep one per request;
    /// when [`Reactor::recv`] returns [`Error::Timeout`], or a deadline passes
    /// while [`Reactor::wait_any`] never returns the worker, send `SIGKILL`
    /// (which no worker can ignore or block) and read the worker's events
    /// until [`Error::Closed`]: its status carries the signal, and by then
    /// the child is reaped, so no zombie is left. Workers still running when
    /// the reactor is dropped or shut down are killed after the grace period
    /// ([`Reactor::set_grace`]) and reaped too.
    ///
    /// ```
    /// # use std::os::unix::process::ExitStatusExt;
    /// # use std::time::Duration;
    /// # use miniray::{Error, Reactor, serde_json::json};
    /// # fn main() -> miniray::Result<()> {
    /// let mut reactor = Reactor::new()?;
    /// let w = reactor.spawn(|_| loop {
    ///     std::thread::sleep(Duration::from_secs(1)); // never answers
    /// })?;
    /// reactor.send(w, &json!("ping"))?;
    /// match reactor.recv(w, Some(Duration::from_millis(100))) {
    ///     Err(Error::Timeout) => reactor.kill(w, libc::SIGKILL)?,
    ///     other => panic!("{other:?}"),
    /// }
    /// loop {
    ///     match reactor.recv(w, Some(Duration::from_secs(10))) {
    ///         Err(Error::Closed { status }) => {
    ///             assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    ///             break;
    ///         }
    ///         Ok(_) => {} // a reply sent before the kill
    ///         Err(Error::TruncatedLine { .. }) => {} // a line cut by the kill
    ///         Err(e) if e.is_message_error() => {}
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill(&mut self, w: Worker, signal: i32) -> Result<()> {
        let conn = self.conn(w)?;
        if let Some(status) = conn.exit {
            // Reaped already: the pid may belong to someone else now.
            return Err(Error::Closed { status });
        }
        match (conn.pid, &conn.state) {
            (_, State::Done) | (None, _) => Err(Error::Closed { status: None }),
            (Some(pid), _) => sys::kill(pid, signal).map_err(|e| Error::io("kill", e)),
        }
    }

    /// The worker's next queued event without waiting or polling: `Ok(None)`
    /// when nothing is queued, `Ok(Some(msg))` for a message, `Err` for a
    /// failed message or, last of all, [`Error::Closed`] (after which the
    /// handle is unknown).
    pub fn try_recv(&mut self, w: Worker) -> Result<Option<Value>> {
        // Regions that came with the message are closed here.
        Ok(self.try_recv_msg(w)?.map(|m| m.value))
    }

    /// [`Reactor::try_recv`], with the shared memory regions that came with
    /// the message (see [`Reactor::send_regions`]).
    pub fn try_recv_regions(&mut self, w: Worker) -> Result<Option<(Value, Vec<SharedMemory>)>> {
        Ok(self.try_recv_msg(w)?.map(|m| (m.value, m.regions)))
    }

    fn try_recv_msg(&mut self, w: Worker) -> Result<Option<Msg>> {
        let conn = self.conn_mut(w)?;
        let item = conn.inbound.pop();
        if conn.read_paused && conn.inbound.queued_bytes <= conn.max_queued / 2 {
            // The consumer caught up: read what the worker sent meanwhile.
            conn.read_paused = false;
            self.read_conn(w.key as usize);
            // An exit seen while paused is told once the data before it is in.
            self.tell_exit(w.key as usize);
        }
        match item {
            None => Ok(None),
            Some(Ok(m)) => Ok(Some(m)),
            Some(Err(e)) => {
                if e.is_closed() {
                    self.conns.remove(w.key as usize);
                }
                Err(e)
            }
        }
    }

    /// The worker's next event, waiting up to `timeout` (`None`: no limit).
    /// Events of other workers read meanwhile stay queued for them.
    /// [`Error::Timeout`] when the time runs out.
    pub fn recv(&mut self, w: Worker, timeout: Option<Duration>) -> Result<Value> {
        self.recv_msg(w, timeout).map(|m| m.value)
    }

    /// [`Reactor::recv`], with the regions that came with the message.
    pub fn recv_regions(
        &mut self,
        w: Worker,
        timeout: Option<Duration>,
    ) -> Result<(Value, Vec<SharedMemory>)> {
        self.recv_msg(w, timeout).map(|m| (m.value, m.regions))
    }

    fn recv_msg(&mut self, w: Worker, timeout: Option<Duration>) -> Result<Msg> {
        let deadline = timeout.and_then(deadline_after);
        let mut polled = false;
        loop {
            if let Some(v) = self.try_recv_msg(w)? {
                if polled {
                    self.signal_queued();
                }
                return Ok(v);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if polled && left == Some(Duration::ZERO) {
                self.signal_queued();
                return Err(Error::Timeout);
            }
            self.poll_once(left)?;
            polled = true;
        }
    }

    /// The workers that have at least one event queued (a message, a failed
    /// message, or `Closed`), waiting up to `timeout` for one: `None` waits
    /// without limit, `Some(ZERO)` only polls. Work already queued is
    /// returned without waiting. A reactor with no workers returns an empty
    /// list at once. A new server or user event
    /// ([`Reactor::take_server_events`], [`Reactor::take_user_events`]) also
    /// ends the wait, perhaps with no worker; events already announced and
    /// left untaken do not. Cost: one `epoll_wait` plus work proportional to
    /// the workers that are ready, never to the number of workers.
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
        let deadline = timeout.and_then(deadline_after);
        let mut polled = false;
        loop {
            self.collect_ready(out);
            let events = (self.user_events.len(), self.tcp.events.len());
            let fresh = events.0 > self.announced.0 || events.1 > self.announced.1;
            if !out.is_empty() || fresh {
                self.announced = events;
                self.signal_queued();
                return Ok(());
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let idle = self.conns.is_empty()
                && self.user_sources == 0
                && self.tcp.servers.is_empty()
                && self.tcp.children.is_empty();
            if polled && (idle || left == Some(Duration::ZERO)) {
                return Ok(());
            }
            // With nothing that could become ready, only poll (to clear a
            // pending wake-up), never wait.
            self.poll_once(if idle { Some(Duration::ZERO) } else { left })?;
            polled = true;
        }
    }

    /// In embedded use, makes the reactor's descriptor readable (again): work
    /// is queued that `wait_any` has yet to return, or was just returned and
    /// may not all be consumed. Each write is a fresh edge for
    /// edge-triggered outer loops; a level-triggered one sees the descriptor
    /// readable until the next `wait_any` polls.
    fn signal_queued(&mut self) {
        if self.embedded.load(Ordering::Relaxed)
            && (!self.ready.is_empty()
                || !self.user_events.is_empty()
                || !self.tcp.events.is_empty())
        {
            let _ = self.waker.wake();
        }
    }

    /// Registers a source of the caller's own in the reactor's poll, under
    /// a token below [`USER_TOKEN_LIMIT`] (miniray's tokens never are).
    /// Its readiness makes `wait_any` return (perhaps with no worker) and is
    /// collected by [`Reactor::take_user_events`]. Registration is
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

    /// The readiness events of the caller's own sources since the last call.
    pub fn take_user_events(&mut self) -> Vec<UserEvent> {
        self.announced.0 = 0;
        std::mem::take(&mut self.user_events)
    }

    fn collect_ready(&mut self, out: &mut Vec<Worker>) {
        let conns = &mut self.conns;
        self.ready.retain(|w| match conns.get_mut(w.key as usize) {
            Some(c) if c.gen == w.gen => {
                c.queued = !c.inbound.inbox.is_empty();
                c.queued
            }
            _ => false,
        });
        out.extend_from_slice(&self.ready);
    }

    /// One `epoll_wait` (after flushing), and the handling of what it returned.
    pub(crate) fn poll_once(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.flush();
        let mut cap = None;
        if !self.unreaped.is_empty() || !self.tcp.unreaped.is_empty() {
            cap = Some(REAP_RETRY);
        }
        if let Some(due) = self.tcp.next_deadline() {
            let until = due.saturating_duration_since(Instant::now());
            cap = Some(cap.map_or(until, |c: Duration| c.min(until)));
        }
        let timeout = match (timeout, cap) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, None) => t,
            (None, c) => c,
        };
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let polled = self.poll.poll(&mut events, timeout);
        let result = match polled {
            Ok(()) => {
                for event in events.iter() {
                    self.handle(event);
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(Error::io("epoll_wait", e)),
        };
        self.events = events;
        if !self.unreaped.is_empty() {
            self.retry_unreaped();
        }
        self.tcp_timers();
        result
    }

    fn handle(&mut self, event: &mio::event::Event) {
        if event.token() == WAKE {
            return;
        }
        if event.token().0 < USER_TOKEN_LIMIT {
            self.user_events.push(UserEvent {
                token: event.token(),
                readable: event.is_readable() || event.is_read_closed(),
                writable: event.is_writable(),
                closed: event.is_read_closed() || event.is_write_closed(),
                error: event.is_error(),
            });
            return;
        }
        let (key, gen) = untoken(event.token());
        if key & KIND_LISTENER != 0 {
            let key = key & !KIND_LISTENER;
            if self.tcp.servers.get(key).is_some_and(|l| l.gen == gen) {
                self.accept_ready(key);
            }
            return;
        }
        if key & KIND_PENDING != 0 {
            let key = key & !KIND_PENDING;
            if self.tcp.pending.get(key).is_some_and(|p| p.gen == gen) {
                self.auth_ready(key);
            }
            return;
        }
        if key & KIND_CHILD != 0 {
            let key = key & !KIND_CHILD;
            if self.tcp.children.get(key).is_some_and(|c| c.gen == gen) {
                self.reap_child(key, None);
            }
            return;
        }
        if key & KIND_EXIT != 0 {
            let key = key & !KIND_EXIT;
            if self.conns.get(key).is_some_and(|c| c.gen == gen) {
                self.exit_ready(key);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.gen != gen {
            return;
        }
        if matches!(conn.state, State::Authenticating) {
            // The handshake reads its line itself (`connect`).
            return;
        }
        if matches!(conn.state, State::Connecting { .. }) {
            self.finish_connect(key);
            if !matches!(self.conns.get(key).map(|c| &c.state), Some(State::Open)) {
                return;
            }
        }
        if event.is_writable() {
            self.flush_conn(key);
        }
        let paused = self.conns.get(key).is_some_and(|c| c.read_paused);
        if !paused && (event.is_readable() || event.is_read_closed() || event.is_error()) {
            self.read_conn(key);
        }
    }

    /// Reads the connection until `WouldBlock`, queueing decoded lines.
    pub(crate) fn read_conn(&mut self, key: usize) {
        if self.read_buf.len() < READ_CHUNK {
            self.read_buf.resize(READ_CHUNK, 0);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let before = conn.inbound.inbox.len();
        let mut ended = false;
        let mut got = sys::Received::default();
        while let Some(sock) = conn.sock.as_mut() {
            match sock.read(&mut self.read_buf, &mut got) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    conn.inbound.feed_received(
                        &self.read_buf[..n],
                        &mut got,
                        conn.format,
                        &mut self.scratch,
                    );
                    if conn.inbound.queued_bytes >= conn.max_queued {
                        // A worker that sends faster than it is read: stop
                        // reading (its socket fills and it blocks) until
                        // the consumer takes half of what is queued.
                        conn.read_paused = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // ECONNRESET and kin: the peer is gone, as with EOF.
                    ended = true;
                    break;
                }
            }
        }
        if conn.inbound.inbox.len() > before {
            mark_ready(&mut self.ready, conn, key);
        }
        if ended {
            self.hang_up(key);
        }
    }

    /// Writes queued output until done or `WouldBlock`; arms or disarms
    /// `WRITABLE` interest accordingly.
    pub(crate) fn flush_conn(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(sock) = conn.sock.as_mut() else {
            return;
        };
        let fd = sock.as_raw_fd();
        let mut failed = false;
        let mut refused = Vec::new();
        while conn.out_pos < conn.out.len() {
            // Plain bytes up to the next line that carries descriptors; that
            // line, and nothing after it, goes with them in one sendmsg (the
            // wire contract in inbound.rs: bytes of a later line in the same
            // sendmsg could share the receiver's read and claim them). At
            // most the line's first WITH_FDS_MAX bytes go with them (so a
            // retry while the socket is full scans no more); the rest of the
            // line follows as plain sends.
            const WITH_FDS_MAX: usize = 64 * 1024;
            let (end, with_fds) = match conn.out_fds.front() {
                Some((at, _)) if *at == conn.out_pos => {
                    let limit = conn
                        .out_fds
                        .get(1)
                        .map_or(conn.out.len(), |m| m.0)
                        .min(conn.out_pos + WITH_FDS_MAX);
                    let line = &conn.out[conn.out_pos..limit];
                    let end = memchr::memchr(b'\n', line).map_or(limit, |nl| conn.out_pos + nl + 1);
                    (end, true)
                }
                Some((at, _)) => (*at, false),
                None => (conn.out.len(), false),
            };
            let chunk = &conn.out[conn.out_pos..end];
            let sent = match conn.out_fds.front() {
                Some((_, fds)) if with_fds => {
                    let mut raw = [0 as RawFd; sys::MAX_FDS_PER_MESSAGE];
                    for (slot, fd) in raw.iter_mut().zip(fds) {
                        *slot = fd.as_raw_fd();
                    }
                    sys::send_with_fds(fd, chunk, &raw[..fds.len()])
                }
                _ => sys::send_nosignal(fd, chunk),
            };
            match sent {
                Ok(n) => {
                    conn.out_pos += n;
                    if with_fds {
                        // Sent with the line's first bytes: close our duplicates.
                        conn.out_fds.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if peer_gone(&e) => {
                    // The child is gone. What it sent before is still read below.
                    failed = true;
                    break;
                }
                Err(e) if with_fds => {
                    // The kernel refused the descriptors (ETOOMANYREFS: this
                    // user has more in flight than its open-file limit), so
                    // nothing of the line left. Drop that line alone and say
                    // so in the worker's events; the lines around it go on.
                    let rest = &conn.out[conn.out_pos..];
                    let len = memchr::memchr(b'\n', rest).map_or(rest.len(), |nl| nl + 1);
                    conn.out.drain(conn.out_pos..conn.out_pos + len);
                    conn.out_fds.pop_front();
                    for m in conn.out_fds.iter_mut() {
                        m.0 -= len;
                    }
                    refused.push(Error::io("sendmsg with region descriptors", e));
                }
                Err(e) => {
                    // Not a hang-up, yet the stream cannot go on (part of a
                    // line may have left): report it, then end as on EPIPE.
                    refused.push(Error::io("send", e));
                    failed = true;
                    break;
                }
            }
        }
        let drained = failed || conn.out_pos == conn.out.len();
        if drained {
            if conn.out.capacity() > KEEP_OUT_CAPACITY {
                conn.out = Vec::new();
            } else {
                conn.out.clear();
            }
            conn.out_pos = 0;
            conn.out_fds.clear();
        } else if conn.out_pos > FLUSH_AT && conn.out_pos * 2 > conn.out.len() {
            conn.out.drain(..conn.out_pos);
            for m in conn.out_fds.iter_mut() {
                m.0 -= conn.out_pos;
            }
            conn.out_pos = 0;
        }
        let want_writable = !drained;
        if want_writable != conn.writable {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let tok = token(key, conn.gen);
            if self.poll.registry().reregister(sock, tok, interest).is_ok() {
                conn.writable = want_writable;
            }
        }
        if drained && matches!(conn.state, State::Closing) {
            let _ = sock.shutdown(Shutdown::Write);
            conn.state = State::WriteShut;
        }
        if !refused.is_empty() {
            for e in refused {
                conn.inbound.push(Err(e));
            }
            mark_ready(&mut self.ready, conn, key);
        }
        if failed {
            self.read_conn(key);
        }
    }

    /// The connection ended: close it, report an unfinished line, reap.
    fn hang_up(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(mut sock) = conn.sock.take() {
            let _ = self.poll.registry().deregister(&mut sock);
        }
        conn.out = Vec::new();
        conn.out_pos = 0;
        conn.out_fds.clear();
        conn.inbound.finish();
        conn.state = State::Reaping;
        let watched = conn.pidfd.is_some();
        let me = Worker {
            key: key as u32,
            gen: conn.gen,
            fd: conn.fd,
        };
        match (conn.pid, conn.exit) {
            (None, _) => self.finish(key, None),
            // Reaped when its pidfd fired: Closed carries that status.
            (Some(_), Some(status)) => self.finish(key, status),
            (Some(pid), None) => match sys::try_wait(pid) {
                Ok(Some(status)) => self.finish(key, Some(status)),
                Err(_) => self.finish(key, None),
                // Its pidfd (from spawn) reports the exit.
                Ok(None) if watched => {}
                Ok(None) => {
                    // Wait for the exit on a pidfd; without one, poll waitpid.
                    if !self.watch_exit(key, false) {
                        self.unreaped.push(me);
                    }
                }
            },
        }
    }

    /// Opens the child's pidfd and registers it under the worker's
    /// `KIND_EXIT` token. `at_spawn`: only while the descriptor is numbered
    /// below half the soft open-file limit (see the type's docs). False when
    /// the child is not watched (no pidfd: `EMFILE`, an old kernel, ...).
    fn watch_exit(&mut self, key: usize, at_spawn: bool) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let Some(pid) = conn.pid else {
            return false;
        };
        let Ok(fd) = sys::pidfd_open(pid) else {
            return false;
        };
        if at_spawn && fd.as_raw_fd() as u64 >= sys::open_file_limit() / 2 {
            return false;
        }
        let tok = token(key | KIND_EXIT, conn.gen);
        let registered =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd.as_raw_fd()), tok, Interest::READABLE);
        if registered.is_err() {
            return false;
        }
        conn.pidfd = Some(fd);
        true
    }

    /// Remembers a worker watched from spawn (for [`Reactor::give_back_pidfds`]),
    /// sweeping stale entries once the list outgrows the workers.
    fn note_early_watch(&mut self, w: Worker) {
        if self.early_watched.len() >= 2 * self.conns.len() + 64 {
            let conns = &self.conns;
            self.early_watched.retain(|w| {
                matches!(conns.get(w.key as usize),
                    Some(c) if c.gen == w.gen && c.pidfd.is_some() && c.sock.is_some())
            });
        }
        self.early_watched.push(w);
    }

    /// Closes up to `n` pidfds of running workers watched from spawn (newest
    /// first); they fall back to being watched from hang-up. Returns how many.
    fn give_back_pidfds(&mut self, n: usize) -> usize {
        let mut given = 0;
        while given < n {
            let Some(w) = self.early_watched.pop() else {
                break;
            };
            let Some(conn) = self.conns.get_mut(w.key as usize) else {
                continue;
            };
            if conn.gen != w.gen || conn.sock.is_none() {
                continue;
            }
            if let Some(fd) = conn.pidfd.take() {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&fd.as_raw_fd()));
                given += 1;
            }
        }
        given
    }

    /// The child's pidfd read ready: it exited. Reap it now; read what its
    /// socket holds, so a socket that closed with it ends in `Closed` alone;
    /// if the socket stays open (a descendant holds it), tell `Exited`.
    fn exit_ready(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(pid) = conn.pid else {
            return;
        };
        if conn.exit.is_some() {
            return;
        }
        let status = match sys::try_wait(pid) {
            Ok(None) => return,
            Ok(Some(s)) => Some(s),
            Err(_) => None,
        };
        conn.exit = Some(status);
        if let Some(fd) = conn.pidfd.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        if conn.sock.is_none() {
            if matches!(conn.state, State::Reaping) {
                self.finish(key, status);
            }
            return;
        }
        // The child closed its descriptors before it became a zombie, so if
        // it held the last copy of its socket, EOF is there to read now.
        if !conn.read_paused {
            self.read_conn(key);
        }
        self.tell_exit(key);
    }

    /// Queues `Exited` for a reaped child whose connection is still open
    /// once everything before the exit was read (not while reading is paused:
    /// then it is told when reading resumes).
    fn tell_exit(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(status) = conn.exit else {
            return;
        };
        if conn.exit_told || conn.read_paused || conn.sock.is_none() {
            return;
        }
        conn.exit_told = true;
        conn.inbound.push(Err(Error::Exited { status }));
        mark_ready(&mut self.ready, conn, key);
    }

    fn try_reap(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return true;
        };
        let Some(pid) = conn.pid else {
            return true;
        };
        match sys::try_wait(pid) {
            Ok(None) => false,
            Ok(Some(status)) => {
                self.finish(key, Some(status));
                true
            }
            Err(_) => {
                self.finish(key, None);
                true
            }
        }
    }

    fn retry_unreaped(&mut self) {
        let mut list = std::mem::take(&mut self.unreaped);
        list.retain(|w| {
            matches!(self.conns.get(w.key as usize), Some(c) if c.gen == w.gen)
                && !self.try_reap(w.key as usize)
        });
        self.unreaped.append(&mut list);
    }

    /// Queues `Closed` as the worker's last event.
    fn finish(&mut self, key: usize, status: Option<ExitStatus>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(fd) = conn.pidfd.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        conn.state = State::Done;
        conn.inbound.push(Err(Error::Closed { status }));
        mark_ready(&mut self.ready, conn, key);
    }

    /// Closes every connection, waits up to the grace period (see
    /// [`Reactor::set_grace`]) for the children to exit, kills the rest with
    /// `SIGKILL`, and reaps them all. Returns each worker's exit status
    /// (`None` where it was not ours to reap). The reactor is empty afterwards.
    pub fn shutdown(&mut self) -> Vec<(Worker, Option<ExitStatus>)> {
        self.stop_all_servers();
        let mut waiting = Vec::new();
        let mut result = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            let w = Worker {
                key: key as u32,
                gen: conn.gen,
                fd: conn.fd,
            };
            // Closing removes the descriptor from the epoll set (no child
            // holds a copy), so no epoll_ctl per worker; any straggling event
            // finds an empty slab and is ignored.
            drop(conn.sock.take());
            let reaped = matches!(conn.state, State::Done) || conn.exit.is_some();
            conn.state = State::Done;
            match conn.pid {
                Some(pid) if !reaped => waiting.push((w, pid)),
                _ => {
                    let status = conn.exit.flatten().or_else(|| {
                        conn.inbound.inbox.iter().rev().find_map(|e| match e {
                            Err(Error::Closed { status }) => *status,
                            _ => None,
                        })
                    });
                    result.push((w, status));
                }
            }
        }
        // Dropping the slots closes the pidfds too (and so unregisters them).
        self.conns.clear();
        self.ready.clear();
        self.dirty.clear();
        self.unreaped.clear();
        self.early_watched.clear();
        let pids: Vec<libc::pid_t> = waiting.iter().map(|&(_, pid)| pid).collect();
        let statuses = reap_within(&pids, deadline_after(self.grace));
        result.extend(waiting.into_iter().map(|(w, _)| w).zip(statuses));
        result
    }
}

/// Puts the worker on the ready list unless it is there already.
fn mark_ready(ready: &mut Vec<Worker>, conn: &mut Conn, key: usize) {
    if !conn.queued {
        conn.queued = true;
        ready.push(Worker {
            key: key as u32,
            gen: conn.gen,
            fd: conn.fd,
        });
    }
}

/// A send error that means the peer closed its end (as EOF would).
fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNABORTED)
    )
}

/// Reaps `pids` (children told to exit), in order: each is checked with
/// `waitpid(WNOHANG)` and, while it runs, waited for on a pidfd until it
/// exits or `deadline` passes (`None`: no deadline), so
/// children that exit in the order they were told cost one call each, never
/// a sweep over all of them. Whatever is left at the deadline is killed with
/// `SIGKILL` and reaped. Statuses come back in `pids`' order (`None`: not
/// ours to reap).
pub(crate) fn reap_within(
    pids: &[libc::pid_t],
    deadline: Option<Instant>,
) -> Vec<Option<ExitStatus>> {
    let mut out = vec![None; pids.len()];
    let mut late = Vec::new();
    for (i, &pid) in pids.iter().enumerate() {
        let mut nap = Duration::from_micros(50);
        loop {
            match sys::try_wait(pid) {
                Ok(Some(status)) => out[i] = Some(status),
                Err(_) => {}
                Ok(None) if deadline.map_or(true, |d| Instant::now() < d) => {
                    // Sleep until it exits (its pidfd reads ready) or the
                    // deadline; without a pidfd, nap and look again.
                    let left = deadline.map_or(Duration::MAX, |d| {
                        d.saturating_duration_since(Instant::now())
                    });
                    match sys::pidfd_open(pid) {
                        Ok(fd) => {
                            let _ = sys::poll_readable(fd.as_raw_fd(), left);
                        }
                        Err(_) => {
                            std::thread::sleep(nap.min(left));
                            nap = (nap * 2).min(Duration::from_millis(5));
                        }
                    }
                    continue;
                }
                Ok(None) => late.push(i),
            }
            break;
        }
    }
    for i in late {
        let _ = sys::kill(pids[i], libc::SIGKILL);
        out[i] = sys::wait(pids[i]).ok();
    }
    out
}

impl Drop for Reactor {
    fn drop(&mut self) {
        if !self.conns.is_empty() || !self.tcp.servers.is_empty() || !self.tcp.children.is_empty() {
            self.shutdown();
        }
    }
}

impl AsRawFd for Reactor {
    /// The epoll descriptor, for embedding (see the crate docs): readable
    /// whenever [`Reactor::wait_any`] has something to return. Asking for
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
