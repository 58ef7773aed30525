//! TCP: [`RemoteWorker`](Reactor::connect)s (client connections with the
//! same interface as local workers) and [`WorkerServer`](Reactor::listen)s
//! (listeners that fork one worker per accepted connection). Both live in
//! the same reactor as local workers.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::Interest;

use crate::auth::{self, Secret};
use crate::error::{Error, Result};
use crate::reactor::{
    deadline_after, next_generation, token, Reactor, State, Stream, KIND_CHILD, KIND_LISTENER,
    KIND_PENDING, MAX_KEY,
};
use crate::sys;
use crate::worker::{self, Channel, Exec, Work, Worker, WorkerOptions};

/// Default limit of concurrent connections of a [`Server`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default pause of a server's accepting after it ran out of descriptors.
pub const DEFAULT_ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Exit status of a serving child (of [`Reactor::listen`] or
/// [`Reactor::listen_channel`]) that closed its connection because no
/// complete line came within [`ServerOptions::idle_timeout`]; reported as
/// [`ServerEvent::Exited`]. 124, as `timeout(1)` uses.
pub const EXIT_IDLE: i32 = 124;

/// How a [`Server`] listens and what each connection's child runs with.
///
/// # How the limits combine
///
/// A server holds at most [`max_connections`](ServerOptions::max_connections)
/// connections at once, counting both handshakes in progress (with a
/// [`secret`](ServerOptions::secret)) and serving children; one more is
/// closed at once ([`ServerEvent::Rejected`]). A client that sends nothing
/// keeps its slot:
///
/// * while it authenticates, for at most
///   [`auth_timeout`](ServerOptions::auth_timeout) (5 s by default), after
///   which it is closed ([`ServerEvent::AuthFailed`]);
/// * once served, for as long as it likes unless
///   [`idle_timeout`](ServerOptions::idle_timeout) is set (it is off by
///   default): then the child closes after that long without a complete
///   line, exits [`EXIT_IDLE`] and the slot is free again.
///
/// So without an idle limit, `max_connections` silent clients lock every
/// other client out for good; with one, a slot is held by a silent client
/// for at most `auth_timeout + idle_timeout`. Slowly dripping bytes that
/// never make a line do not count as activity. A served client is never
/// closed while its child is busy answering, only while it waits for input.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub(crate) worker: WorkerOptions,
    pub(crate) max_connections: usize,
    pub(crate) accept_backoff: Duration,
    pub(crate) secret: Option<Secret>,
    pub(crate) auth_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            worker: WorkerOptions::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            accept_backoff: DEFAULT_ACCEPT_BACKOFF,
            secret: None,
            auth_timeout: Duration::from_secs(5),
            idle_timeout: None,
        }
    }
}

impl ServerOptions {
    /// JSON, a 64 MiB line limit, 1024 connections, `SIGTERM` on parent death.
    pub fn new() -> Self {
        Self::default()
    }

    /// The options of each connection's child (format, line limit, death
    /// signal, descriptors to keep).
    pub fn worker(mut self, worker: WorkerOptions) -> Self {
        self.worker = worker;
        self
    }

    /// The line format (shorthand for the worker options' format).
    pub fn format(mut self, format: crate::Format) -> Self {
        self.worker = self.worker.format(format);
        self
    }

    /// Connections held at once (handshakes in progress and serving
    /// children); one over it is closed at once and reported as
    /// [`ServerEvent::Rejected`]. See the type's docs for how it combines
    /// with the timeouts.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Require clients to prove they hold `secret` (HMAC-SHA256 over a
    /// random nonce, see [`Secret`]) before anything is forked for them.
    /// Off by default, so plain Python clients keep working.
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// How long a client has to answer the challenge. Default 5 s;
    /// `Duration::MAX` waits without limit (a silent client then holds its
    /// slot for good).
    pub fn auth_timeout(mut self, timeout: Duration) -> Self {
        self.auth_timeout = timeout;
        self
    }

    /// How long accepting pauses after `EMFILE`/`ENFILE`. Default 50 ms;
    /// `Duration::MAX` stops accepting for good after the first failure.
    pub fn accept_backoff(mut self, pause: Duration) -> Self {
        self.accept_backoff = pause;
        self
    }

    /// Close a served connection that sends no complete line for `limit`
    /// while its child waits for one. Off by default (as before).
    ///
    /// * [`Reactor::listen`] and [`Reactor::listen_channel`]: the child's
    ///   [`Channel::recv`] fails with [`Error::Timeout`] (see
    ///   [`Channel::set_idle_timeout`]), the connection is shut down and the
    ///   child exits [`EXIT_IDLE`] once the work function returns (at once
    ///   for `listen`), reported as [`ServerEvent::Exited`]. The clock runs
    ///   only while the child waits for input, from the moment it starts
    ///   waiting: a slow answer never counts, and bytes without a newline
    ///   do not reset it.
    /// * [`Reactor::listen_exec`]: the program reads the socket itself, so
    ///   miniray cannot see its lines; `limit` becomes the socket's receive
    ///   timeout (`SO_RCVTIMEO`), and a blocking read that gets no byte for
    ///   that long fails with `EAGAIN` (most programs then exit; the status
    ///   is theirs). This is weaker: any byte resets it, and a program that
    ///   waits with `poll`/`select` is not limited.
    ///
    /// `Duration::MAX` means no limit.
    pub fn idle_timeout(mut self, limit: Duration) -> Self {
        self.idle_timeout = Some(limit);
        self
    }
}

/// A handle to a listening [`WorkerServer`](Reactor::listen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Server {
    pub(crate) key: u32,
    pub(crate) gen: u32,
}

/// What happened at a server, from [`Reactor::take_server_events`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A connection was accepted and a child forked to serve it.
    Accepted {
        /// The server.
        server: Server,
        /// The client's address.
        peer: SocketAddr,
        /// The serving child.
        pid: i32,
    },
    /// A connection over the limit was closed at once.
    Rejected {
        /// The server.
        server: Server,
        /// The client's address.
        peer: SocketAddr,
    },
    /// A serving child exited and was reaped.
    Exited {
        /// The server.
        server: Server,
        /// The child.
        pid: i32,
        /// Its exit status (`None` if someone else reaped it).
        status: Option<ExitStatus>,
    },
    /// A client failed authentication (wrong, malformed, late or missing
    /// answer) and was closed; nothing was forked.
    AuthFailed {
        /// The server.
        server: Server,
        /// The client's address.
        peer: SocketAddr,
        /// What was wrong.
        reason: &'static str,
    },
    /// A connection could not be served. `accept` failed: on
    /// `EMFILE`/`ENFILE` the pending connection was accepted with the spare
    /// descriptor and closed (`dropped`), and accepting pauses for the
    /// back-off before it resumes. Or the serving child could not be started
    /// (`fork` failed, or for [`Reactor::listen_exec`] the program could not
    /// be executed: [`Error::Exec`] naming it and the OS error); the
    /// connection was closed (`dropped`).
    AcceptFailed {
        /// The server.
        server: Server,
        /// The error.
        error: Error,
        /// A pending connection was closed to keep the queue moving.
        dropped: bool,
    },
}

/// A server's per-connection work function, run in each forked child.
type ConnectionWork = Box<dyn FnMut(&mut Channel) -> Result<()> + Send>;

pub(crate) enum ServerWork {
    Run(ConnectionWork),
    Exec(Exec),
}

impl fmt::Debug for ServerWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerWork::Run(_) => f.write_str("Run(..)"),
            ServerWork::Exec(e) => write!(f, "Exec({e:?})"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) gen: u32,
    sock: TcpListener,
    addr: SocketAddr,
    opts: ServerOptions,
    work: ServerWork,
    active: usize,
    /// Accepting paused after `EMFILE`...
    paused: bool,
    /// ... until then (`None`: for good, after a back-off of `Duration::MAX`).
    resume_at: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct ServerChild {
    pub(crate) gen: u32,
    pid: libc::pid_t,
    server: Server,
    pidfd: Option<OwnedFd>,
}

/// An accepted connection answering the authentication challenge.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) gen: u32,
    stream: TcpStream,
    peer: SocketAddr,
    server: Server,
    nonce: Vec<u8>,
    /// `None`: an `auth_timeout` too long to be a deadline.
    deadline: Option<Instant>,
}

/// The TCP part of the reactor's state.
#[derive(Debug, Default)]
pub(crate) struct Tcp {
    pub(crate) servers: slab::Slab<Listener>,
    pub(crate) children: slab::Slab<ServerChild>,
    /// Connections in the authentication handshake.
    pub(crate) pending: slab::Slab<Pending>,
    pub(crate) events: VecDeque<ServerEvent>,
    /// Children that could get no pidfd: `waitpid` is retried.
    pub(crate) unreaped: Vec<usize>,
    /// Listeners pausing after `EMFILE`.
    pub(crate) paused: Vec<usize>,
    /// The spare descriptor of the `EMFILE` method.
    spare: Option<File>,
}

impl Tcp {
    /// The earliest moment a timer of ours is due, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let paused = self
            .paused
            .iter()
            .filter_map(|&k| self.servers.get(k).and_then(|l| l.resume_at));
        let handshakes = self.pending.iter().filter_map(|(_, p)| p.deadline);
        paused.chain(handshakes).min()
    }
}

/// `EMFILE` or `ENFILE`: out of descriptors (the process's or the system's).
pub(crate) fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

impl Reactor {
    /// Connects a `RemoteWorker`: a TCP connection to a `WorkerServer` (of
    /// miniray or of the original Python library) with the same interface as
    /// a local worker. The connect is non-blocking and completed through the
    /// reactor (other workers' events are read and queued meanwhile), tried
    /// on each resolved address in turn until `timeout` (`Duration::MAX`: no
    /// limit). `TCP_NODELAY` is set.
    ///
    /// Errors: [`Error::Io`] with `op` `"connect"` (refused, unreachable,
    /// ...) or `"resolve"`, [`Error::Timeout`]. A reset or EOF later is the
    /// worker's [`Error::Closed`] (status `None`).
    pub fn connect<A: ToSocketAddrs>(
        &mut self,
        addr: A,
        opts: &WorkerOptions,
        timeout: Duration,
    ) -> Result<Worker> {
        let deadline = deadline_after(timeout);
        let mut last = None;
        for a in addr
            .to_socket_addrs()
            .map_err(|e| Error::io("resolve", e))?
        {
            match self.connect_one(a, opts, deadline) {
                Ok(w) => return Ok(w),
                Err(Error::Timeout) => return Err(Error::Timeout),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::io(
                "resolve",
                io::Error::new(io::ErrorKind::NotFound, "no address"),
            )
        }))
    }

    fn connect_one(
        &mut self,
        addr: SocketAddr,
        opts: &WorkerOptions,
        deadline: Option<Instant>,
    ) -> Result<Worker> {
        let sock = TcpStream::connect(addr).map_err(|e| Error::io("connect", e))?;
        let w = self.insert_conn(
            Stream::Tcp(sock),
            None,
            opts,
            State::Connecting {
                authenticate: opts.secret.is_some(),
            },
            Interest::READABLE | Interest::WRITABLE,
        )?;
        loop {
            let conn = self.conn_mut(w)?;
            match conn.state {
                State::Connecting { .. } => {}
                State::Open => return Ok(w),
                State::Authenticating => {
                    // Set by finish_connect, so the challenge line was not
                    // read as a message.
                    let Some(secret) = opts.secret.clone() else {
                        return Ok(w);
                    };
                    let answered = self.answer_challenge(w, &secret, deadline);
                    if let Ok(conn) = self.conn_mut(w) {
                        conn.state = State::Open;
                    }
                    return match answered {
                        Ok(()) => {
                            // Anything the server sent after the challenge.
                            self.read_conn(w.key as usize);
                            Ok(w)
                        }
                        Err(e) => {
                            if let Some(mut c) = self.conns.try_remove(w.key as usize) {
                                if let Some(mut s) = c.sock.take() {
                                    let _ = self.poll.registry().deregister(&mut s);
                                }
                            }
                            Err(e)
                        }
                    };
                }
                _ => {
                    // Failed: the inbox holds the connect error, then Closed.
                    let err = match conn.inbound.pop() {
                        Some(Err(e)) => e,
                        _ => Error::io("connect", io::Error::other("connection failed")),
                    };
                    self.conns.remove(w.key as usize);
                    return Err(err);
                }
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                if let Some(mut c) = self.conns.try_remove(w.key as usize) {
                    if let Some(mut s) = c.sock.take() {
                        let _ = self.poll.registry().deregister(&mut s);
                    }
                }
                return Err(Error::Timeout);
            }
            self.poll_once(left)?;
        }
    }

    /// A connecting socket became writable (or failed): finish the connect.
    pub(crate) fn finish_connect(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(Stream::Tcp(sock)) = conn.sock.as_ref() else {
            return;
        };
        let failure = match sock.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match sock.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        match failure {
            None => {
                let _ = sock.set_nodelay(true);
                let authenticate = matches!(conn.state, State::Connecting { authenticate: true });
                conn.state = if authenticate {
                    State::Authenticating
                } else {
                    State::Open
                };
                // Disarms WRITABLE once nothing is queued.
                self.flush_conn(key);
            }
            Some(e) => {
                if let Some(mut s) = conn.sock.take() {
                    let _ = self.poll.registry().deregister(&mut s);
                }
                conn.inbound.inbox.push_back(Err(Error::io("connect", e)));
                conn.inbound
                    .inbox
                    .push_back(Err(Error::Closed { status: None }));
                conn.state = State::Done;
            }
        }
    }

    /// Starts a `WorkerServer` on `addr` (port 0 picks a free port; see
    /// [`Reactor::server_addr`]): every accepted connection gets a forked
    /// child that answers each message with `f(message)`, with the same
    /// hygiene as a local worker (every inherited descriptor but its
    /// connection closed, the listener and the epoll descriptor included;
    /// `PR_SET_PDEATHSIG`; `_exit`). The parent closes its copy of the
    /// connection and reaps the child ([`ServerEvent::Exited`]).
    ///
    /// System calls: `socket`, `bind`, `listen`, `epoll_ctl`; per
    /// connection `accept4`, `fork`, `pidfd_open`.
    pub fn listen<A, F>(&mut self, addr: A, opts: &ServerOptions, mut f: F) -> Result<Server>
    where
        A: ToSocketAddrs,
        F: FnMut(serde_json::Value) -> serde_json::Value + Send + 'static,
    {
        let work = move |ch: &mut Channel| worker::serve_replies(ch, &mut f);
        self.listen_work(addr, opts, ServerWork::Run(Box::new(work)))
    }

    /// [`Reactor::listen`] with full control: each connection's child runs
    /// `work` with its [`Channel`].
    pub fn listen_channel<A, F>(&mut self, addr: A, opts: &ServerOptions, work: F) -> Result<Server>
    where
        A: ToSocketAddrs,
        F: FnMut(&mut Channel) -> Result<()> + Send + 'static,
    {
        self.listen_work(addr, opts, ServerWork::Run(Box::new(work)))
    }

    /// [`Reactor::listen`] where each connection's child execs `program`
    /// with the connection as its stdin and stdout (see [`Reactor::spawn_exec`]).
    pub fn listen_exec<A: ToSocketAddrs>(
        &mut self,
        addr: A,
        opts: &ServerOptions,
        program: Exec,
    ) -> Result<Server> {
        self.listen_work(addr, opts, ServerWork::Exec(program))
    }

    fn listen_work<A: ToSocketAddrs>(
        &mut self,
        addr: A,
        opts: &ServerOptions,
        work: ServerWork,
    ) -> Result<Server> {
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| Error::io("resolve", e))?
            .next()
            .ok_or_else(|| {
                Error::io(
                    "resolve",
                    io::Error::new(io::ErrorKind::NotFound, "no address"),
                )
            })?;
        if self.tcp.spare.is_none() {
            self.tcp.spare = Some(File::open("/dev/null").map_err(|e| Error::io("open", e))?);
        }
        let mut sock = TcpListener::bind(addr).map_err(|e| Error::io("bind", e))?;
        let addr = sock.local_addr().map_err(|e| Error::io("getsockname", e))?;
        let key = self.tcp.servers.vacant_key();
        if key > MAX_KEY {
            return Err(Error::io("listen", io::Error::other("too many servers")));
        }
        let gen = next_generation();
        self.poll
            .registry()
            .register(
                &mut sock,
                token(key | KIND_LISTENER, gen),
                Interest::READABLE,
            )
            .map_err(|e| Error::io("epoll_ctl", e))?;
        self.tcp.servers.insert(Listener {
            gen,
            sock,
            addr,
            opts: opts.clone(),
            work,
            active: 0,
            paused: false,
            resume_at: None,
        });
        Ok(Server {
            key: key as u32,
            gen,
        })
    }

    fn listener(&mut self, s: Server) -> Result<&mut Listener> {
        match self.tcp.servers.get_mut(s.key as usize) {
            Some(l) if l.gen == s.gen => Ok(l),
            _ => Err(Error::UnknownWorker),
        }
    }

    /// The address a server listens on.
    pub fn server_addr(&mut self, s: Server) -> Result<SocketAddr> {
        self.listener(s).map(|l| l.addr)
    }

    /// Connections a server is serving now.
    pub fn server_connections(&mut self, s: Server) -> Result<usize> {
        self.listener(s).map(|l| l.active)
    }

    /// What happened at the servers since the last call. A new event makes
    /// `wait_any` return (perhaps with no worker ready); events left untaken
    /// do not make it return again.
    pub fn take_server_events(&mut self) -> Vec<ServerEvent> {
        self.announced.1 = 0;
        self.tcp.events.drain(..).collect()
    }

    /// Accepts until `WouldBlock`, forking a child per connection.
    pub(crate) fn accept_ready(&mut self, key: usize) {
        loop {
            let Some(l) = self.tcp.servers.get_mut(key) else {
                return;
            };
            if l.paused {
                return;
            }
            let server = Server {
                key: key as u32,
                gen: l.gen,
            };
            match l.sock.accept() {
                Ok((stream, peer)) => self.serve_connection(key, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED) | Some(libc::EPROTO)
                    ) => {}
                Err(e) => {
                    let mut dropped = false;
                    if is_fd_exhaustion(&e) {
                        // The spare-descriptor method: free one, take the
                        // pending connection off the queue and close it, so a
                        // level-triggered embedder does not spin and an
                        // edge-triggered loop does not stall. (accept fails
                        // with EMFILE even when nothing is pending: then there
                        // is nothing to report, and the next connection
                        // raises a new event.)
                        self.tcp.spare = None;
                        let pending = l.sock.accept().map(drop);
                        // The accepted connection is closed: its descriptor
                        // becomes the spare again.
                        self.tcp.spare = File::open("/dev/null").ok();
                        match pending {
                            Ok(()) => dropped = true,
                            Err(again) if again.kind() == io::ErrorKind::WouldBlock => return,
                            Err(_) => {}
                        }
                    }
                    l.paused = true;
                    l.resume_at = deadline_after(l.opts.accept_backoff);
                    self.tcp.paused.push(key);
                    self.tcp.events.push_back(ServerEvent::AcceptFailed {
                        server,
                        error: Error::io("accept", e),
                        dropped,
                    });
                    return;
                }
            }
        }
    }

    fn serve_connection(&mut self, key: usize, stream: TcpStream, peer: SocketAddr) {
        let Some(l) = self.tcp.servers.get_mut(key) else {
            return;
        };
        let server = Server {
            key: key as u32,
            gen: l.gen,
        };
        let handshaking = self
            .tcp
            .pending
            .iter()
            .filter(|(_, p)| p.server == server)
            .count();
        if l.active + handshaking >= l.opts.max_connections {
            drop(stream);
            self.tcp
                .events
                .push_back(ServerEvent::Rejected { server, peer });
            return;
        }
        if l.opts.secret.is_some() {
            let deadline = deadline_after(l.opts.auth_timeout);
            self.start_handshake(server, stream, peer, deadline);
            return;
        }
        self.fork_for(key, stream, peer);
    }

    /// Forks the child that serves an accepted (and, if asked, authenticated)
    /// connection.
    fn fork_for(&mut self, key: usize, stream: TcpStream, peer: SocketAddr) {
        let Some(l) = self.tcp.servers.get_mut(key) else {
            return;
        };
        let server = Server {
            key: key as u32,
            gen: l.gen,
        };
        let std_stream = std::net::TcpStream::from(stream);
        let _ = std_stream.set_nodelay(true);
        let idle = l.opts.idle_timeout;
        if let (Some(limit), ServerWork::Exec(_)) = (idle, &l.work) {
            // The program reads the socket itself: the receive timeout is
            // the only limit miniray can set (see `idle_timeout`). Zero
            // would mean "none" to the kernel.
            let _ = std_stream.set_read_timeout(Some(limit.max(Duration::from_millis(1))));
        }
        if let Err(e) = std_stream.set_nonblocking(false) {
            self.tcp.events.push_back(ServerEvent::AcceptFailed {
                server,
                error: Error::io("fcntl", e),
                dropped: true,
            });
            return;
        }
        let fd = OwnedFd::from(std_stream);
        let forked = match &mut l.work {
            ServerWork::Run(work) => worker::spawn_child(
                &l.opts.worker,
                fd,
                Work::Run(|ch: &mut Channel| {
                    ch.set_idle_timeout(idle);
                    let outcome = work(ch);
                    if ch.idle_expired() {
                        // The connection is already shut down; say why we
                        // leave in the exit status.
                        let _ = ch.flush();
                        sys::exit_now(EXIT_IDLE);
                    }
                    outcome
                }),
            ),
            ServerWork::Exec(e) => worker::spawn_child::<fn(&mut Channel) -> Result<()>>(
                &l.opts.worker,
                fd,
                Work::Exec(e),
            ),
        };
        let pid = match forked {
            Ok(pid) => pid,
            Err(error) => {
                self.tcp.events.push_back(ServerEvent::AcceptFailed {
                    server,
                    error,
                    dropped: true,
                });
                return;
            }
        };
        l.active += 1;
        self.tcp
            .events
            .push_back(ServerEvent::Accepted { server, peer, pid });
        self.watch_child(server, pid);
    }

    /// Sends the challenge and waits (in the reactor) for the answer.
    fn start_handshake(
        &mut self,
        server: Server,
        mut stream: TcpStream,
        peer: SocketAddr,
        deadline: Option<Instant>,
    ) {
        let mut fail = |reason| {
            self.tcp.events.push_back(ServerEvent::AuthFailed {
                server,
                peer,
                reason,
            })
        };
        let _ = stream.set_nodelay(true);
        let Ok((nonce, line)) = auth::challenge() else {
            return fail("no random nonce");
        };
        // A fresh socket's buffer takes the 82-byte line whole.
        if sys::send_nosignal(stream.as_raw_fd(), &line).ok() != Some(line.len()) {
            return fail("could not send the challenge");
        }
        let key = self.tcp.pending.vacant_key();
        let gen = next_generation();
        if key > MAX_KEY
            || self
                .poll
                .registry()
                .register(
                    &mut stream,
                    token(key | KIND_PENDING, gen),
                    Interest::READABLE,
                )
                .is_err()
        {
            return self.tcp.events.push_back(ServerEvent::AuthFailed {
                server,
                peer,
                reason: "could not watch the connection",
            });
        }
        self.tcp.pending.insert(Pending {
            gen,
            stream,
            peer,
            server,
            nonce,
            deadline,
        });
        // The answer may be there already (edge-triggered: look now).
        self.auth_ready(key);
    }

    /// The answer arrived (or the peer went away): verify, then fork or close.
    pub(crate) fn auth_ready(&mut self, key: usize) {
        let Some(p) = self.tcp.pending.get(key) else {
            return;
        };
        let verdict = match auth::take_line(p.stream.as_raw_fd()) {
            Ok(None) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Ok(Some(answer)) => {
                let secret = self
                    .tcp
                    .servers
                    .get(p.server.key as usize)
                    .filter(|l| l.gen == p.server.gen)
                    .and_then(|l| l.opts.secret.as_ref());
                match secret {
                    Some(s) if s.verify(&p.nonce, &answer) => Ok(()),
                    Some(_) => Err("wrong answer"),
                    None => Err("server gone"),
                }
            }
            Err(_) => Err("closed, or sent an over-long line, during the handshake"),
        };
        let mut p = self.tcp.pending.remove(key);
        let _ = self.poll.registry().deregister(&mut p.stream);
        match verdict {
            Ok(()) => self.fork_for(p.server.key as usize, p.stream, p.peer),
            Err(reason) => self.tcp.events.push_back(ServerEvent::AuthFailed {
                server: p.server,
                peer: p.peer,
                reason,
            }),
        }
    }

    /// Closes handshakes past their deadline.
    fn expire_handshakes(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .tcp
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k)
            .collect();
        for key in late {
            let mut p = self.tcp.pending.remove(key);
            let _ = self.poll.registry().deregister(&mut p.stream);
            self.tcp.events.push_back(ServerEvent::AuthFailed {
                server: p.server,
                peer: p.peer,
                reason: "no answer in time",
            });
        }
    }

    /// The client's side of the handshake, on a connection just opened.
    fn answer_challenge(
        &mut self,
        w: Worker,
        secret: &Secret,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let fd = w.fd;
        loop {
            match auth::take_line(fd) {
                Ok(Some(line)) => {
                    let nonce = auth::parse_challenge(&line).ok_or_else(|| {
                        Error::io(
                            "authenticate",
                            io::Error::new(io::ErrorKind::InvalidData, "not a miniray challenge"),
                        )
                    })?;
                    let answer = secret.answer(&nonce);
                    return match sys::send_nosignal(fd, &answer) {
                        Ok(n) if n == answer.len() => Ok(()),
                        Ok(_) => Err(Error::io("authenticate", io::ErrorKind::WriteZero.into())),
                        Err(e) => Err(Error::io("authenticate", e)),
                    };
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::io("authenticate", e)),
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Err(Error::Timeout);
            }
            // Peek again after a short wait: this connection's events are
            // not read while it authenticates.
            self.poll_once(Some(left.min(Duration::from_millis(10))))?;
        }
    }

    /// Reaps a serving child when its pidfd reads ready (or by retrying).
    fn watch_child(&mut self, server: Server, pid: libc::pid_t) {
        let ckey = self.tcp.children.vacant_key();
        let gen = next_generation();
        let pidfd = sys::pidfd_open(pid).ok().and_then(|fd| {
            self.poll
                .registry()
                .register(
                    &mut SourceFd(&fd.as_raw_fd()),
                    token(ckey | KIND_CHILD, gen),
                    Interest::READABLE,
                )
                .ok()
                .map(|()| fd)
        });
        let watched = pidfd.is_some();
        let ckey = self.tcp.children.insert(ServerChild {
            gen,
            pid,
            server,
            pidfd,
        });
        if !watched {
            self.tcp.unreaped.push(ckey);
        }
    }

    /// Tries to reap one serving child; true once it is gone.
    pub(crate) fn reap_child(&mut self, ckey: usize, status: Option<Option<ExitStatus>>) -> bool {
        let Some(c) = self.tcp.children.get(ckey) else {
            return true;
        };
        let status = match status {
            Some(s) => s,
            None => match sys::try_wait(c.pid) {
                Ok(None) => return false,
                Ok(Some(s)) => Some(s),
                Err(_) => None,
            },
        };
        let c = self.tcp.children.remove(ckey);
        if let Some(fd) = &c.pidfd {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        if let Some(l) = self.tcp.servers.get_mut(c.server.key as usize) {
            if l.gen == c.server.gen {
                l.active = l.active.saturating_sub(1);
            }
        }
        self.tcp.events.push_back(ServerEvent::Exited {
            server: c.server,
            pid: c.pid,
            status,
        });
        true
    }

    /// Retries `waitpid` for children without a pidfd, and resumes paused
    /// listeners whose back-off is over.
    pub(crate) fn tcp_timers(&mut self) {
        if !self.tcp.pending.is_empty() {
            self.expire_handshakes();
        }
        if !self.tcp.unreaped.is_empty() {
            let list = std::mem::take(&mut self.tcp.unreaped);
            for ckey in list {
                if !self.reap_child(ckey, None) {
                    self.tcp.unreaped.push(ckey);
                }
            }
        }
        if !self.tcp.paused.is_empty() {
            let now = Instant::now();
            let list = std::mem::take(&mut self.tcp.paused);
            for key in list {
                let due = match self.tcp.servers.get_mut(key) {
                    Some(l) if l.paused => match l.resume_at {
                        Some(t) if t <= now => {
                            l.paused = false;
                            l.resume_at = None;
                            true
                        }
                        // Not yet; or never (an endless back-off).
                        _ => {
                            self.tcp.paused.push(key);
                            false
                        }
                    },
                    _ => false,
                };
                if due {
                    // Edge-triggered: connections queued while paused raise
                    // no new event, so look now.
                    self.accept_ready(key);
                }
            }
        }
    }

    /// Stops a server: closes the listener, sends `SIGTERM` to its serving
    /// children, waits up to the grace period (see [`Reactor::set_grace`]),
    /// kills the rest with `SIGKILL`, and reaps them all
    /// ([`ServerEvent::Exited`] for each).
    pub fn stop_server(&mut self, s: Server) -> Result<()> {
        self.listener(s)?;
        let mut l = self.tcp.servers.remove(s.key as usize);
        let _ = self.poll.registry().deregister(&mut l.sock);
        drop(l);
        let mine: Vec<usize> = self
            .tcp
            .children
            .iter()
            .filter(|(_, c)| c.server == s)
            .map(|(k, _)| k)
            .collect();
        self.end_children(&mine);
        Ok(())
    }

    /// `SIGTERM`, bounded grace, `SIGKILL`, reap: for serving children.
    pub(crate) fn end_children(&mut self, keys: &[usize]) {
        let mut pids = Vec::with_capacity(keys.len());
        for &k in keys {
            if let Some(c) = self.tcp.children.get(k) {
                let _ = sys::kill(c.pid, libc::SIGTERM);
                pids.push((k, c.pid));
            }
        }
        let just_pids: Vec<libc::pid_t> = pids.iter().map(|&(_, p)| p).collect();
        let statuses = crate::reactor::reap_within(&just_pids, deadline_after(self.grace));
        for ((k, _), status) in pids.into_iter().zip(statuses) {
            self.reap_child(k, Some(status));
        }
        self.tcp.unreaped.retain(|k| self.tcp.children.contains(*k));
    }

    /// Stops every server (see [`Reactor::stop_server`]).
    pub(crate) fn stop_all_servers(&mut self) {
        let servers: Vec<Server> = self
            .tcp
            .servers
            .iter()
            .map(|(k, l)| Server {
                key: k as u32,
                gen: l.gen,
            })
            .collect();
        for s in servers {
            let _ = self.stop_server(s);
        }
        // Children whose server is already gone.
        let rest: Vec<usize> = self.tcp.children.iter().map(|(k, _)| k).collect();
        self.end_children(&rest);
    }
}
