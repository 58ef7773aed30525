//! The TCP client: a remote worker ([`Reactor::connect`]) is a connection
//! of the reactor like a local worker's, opened with a non-blocking connect
//! and, with a secret, an answer to the server's challenge before any
//! message. It reaches the reactor through a small interface
//! (`insert_conn`, `conn`, `conn_mut`, `remove_conn`, `read_conn`,
//! `poll_once`, and `signal_queued` when `connect` ends).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;

use crate::auth::{self, Secret};
use crate::conn::{State, Stream};
use crate::error::{Error, Result};
use crate::format::Format;
use crate::options::ConnSettings;
use crate::process::deadline_after;
use crate::sys;
use crate::worker::Worker;
use crate::Reactor;

/// How to connect a remote worker ([`Reactor::connect`]): the connection's
/// line format and buffers, and the secret that answers the server's
/// challenge. Nothing is forked, so there is no death signal or kept
/// descriptor here (a [`Server`](crate::Server)'s children take those from
/// [`ServerOptions`](crate::ServerOptions)).
///
/// `ConnectOptions::default()` is JSON, a 64 MiB line limit, a 64 MiB
/// output high-water mark, 64 MiB of received messages held before reading
/// pauses, and no secret.
///
/// ```no_run
/// use std::time::Duration;
/// use miniray::{ConnectOptions, Format, Reactor, Secret};
///
/// # fn main() -> miniray::Result<()> {
/// let mut reactor = Reactor::new()?;
/// let opts = ConnectOptions::new()
///     .format(Format::Marshal)
///     .secret(Secret::new(b"shared secret".to_vec()));
/// let w = reactor.connect("127.0.0.1:7000", &opts, Some(Duration::from_secs(5)))?;
/// reactor.send(w, &miniray::py!({"x": 1}))?;
/// let reply: miniray::Value = reactor.recv(w, Some(Duration::from_secs(5)))?;
/// # let _ = reply;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub(crate) conn: ConnSettings,
    pub(crate) secret: Option<Secret>,
    pub(crate) keepalive: Option<Keepalive>,
}

/// TCP keepalive, tuned (see [`ConnectOptions::keepalive`]): after `idle`
/// with nothing received the kernel probes the peer every `interval`, and
/// `count` unanswered probes end the connection, so a host that vanished
/// without closing (a network partition, a machine powered off) shows as
/// [`Error::Closed`] within about `idle + interval * count`. The same total
/// is set as `TCP_USER_TIMEOUT`, which bounds data sent and never
/// acknowledged. A stopped process (`SIGSTOP`) whose kernel still answers
/// is not detected this way: that takes a deadline on the task
/// ([`PoolOptions::timeout`](crate::PoolOptions::timeout)). Whole seconds
/// (at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe.
    pub idle: Duration,
    /// Between probes.
    pub interval: Duration,
    /// Unanswered probes that end the connection.
    pub count: u32,
}

impl Default for Keepalive {
    /// 5 s idle, then a probe every second, 3 probes: a silent peer is
    /// found within about 8 s.
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(5),
            interval: Duration::from_secs(1),
            count: 3,
        }
    }
}

impl Keepalive {
    /// Sets it on a socket.
    fn apply(&self, sock: &TcpStream) -> io::Result<()> {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        sys::set_keepalive(sock, secs(self.idle), secs(self.interval), self.count)
    }
}

impl ConnectOptions {
    /// The defaults (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// The line format; the server must speak the same.
    pub fn format(mut self, format: Format) -> Self {
        self.conn.line.format = format;
        self
    }

    /// The maximum length in bytes of a line received from the server, not
    /// counting the `\n`. Default
    /// [`DEFAULT_MAX_LINE`](crate::framing::DEFAULT_MAX_LINE).
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.conn.line.max_line = bytes;
        self
    }

    /// Output bytes the reactor may hold for this connection before `send`
    /// returns [`Error::Backpressure`]. Default
    /// [`DEFAULT_HIGH_WATER`](crate::worker::DEFAULT_HIGH_WATER).
    pub fn high_water(mut self, bytes: usize) -> Self {
        self.conn.high_water = bytes;
        self
    }

    /// Line bytes of received messages the reactor may hold for this
    /// connection before it stops reading the socket; reading resumes once
    /// half is taken. At least 1 (0 counts as 1). Default
    /// [`DEFAULT_MAX_QUEUED`](crate::worker::DEFAULT_MAX_QUEUED).
    pub fn max_queued(mut self, bytes: usize) -> Self {
        self.conn.set_max_queued(bytes);
        self
    }

    /// Answer the server's authentication challenge with this secret (see
    /// [`Secret`]); the server must have the same
    /// ([`ServerOptions::secret`](crate::ServerOptions::secret)). Off by
    /// default, so plain Python servers work.
    ///
    /// The server sends no verdict (the protocol stays the original
    /// library's after the handshake), so a mismatch shows on the client as:
    ///
    /// | client | server | what the client sees |
    /// |---|---|---|
    /// | this secret | a different one | `connect` succeeds; the connection is closed at once: the next `recv` is [`Error::Closed`] with status `None` (the server reports `AuthFailed`) |
    /// | no secret | a secret | `connect` succeeds; the challenge line arrives as a message that does not decode ([`Error::Decode`]), then [`Error::Closed`] |
    /// | a secret | no secret | `connect` fails at its deadline with [`Error::Io`] `{ op: "authenticate" }` of kind `TimedOut`: no challenge came |
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Tuned TCP keepalive on the connection (see [`Keepalive`]); off by
    /// default (the kernel's own keepalive is off too). A
    /// [`Pool::remote`](crate::pool::Pool::remote) turns it on with
    /// [`Keepalive::default`] unless its
    /// [`Hosts::connect_options`](crate::pool::Hosts::connect_options)
    /// say otherwise.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }
}

impl Reactor {
    /// Connects a remote worker: a [`Worker`] that is a TCP connection to a
    /// server (a [`Server`](crate::Server) of miniray, or one of the original
    /// Python library), with the same interface as a local worker, set up
    /// with `opts`. The connect is non-blocking and completed through the
    /// reactor (other workers' events are read and queued meanwhile), tried
    /// on each resolved address in turn until `timeout` passes (`None`: no
    /// limit; the same kind of bound as every blocking call's, see the
    /// crate docs' Timeouts section). No address is tried once `timeout`
    /// has passed: the last one's error is returned. `TCP_NODELAY` is set.
    ///
    /// Errors: [`Error::Io`] with `op` `"connect"` (refused, unreachable,
    /// ...), `"resolve"` or `"authenticate"` (see
    /// [`ConnectOptions::secret`]), [`Error::Timeout`]. A reset or EOF later is the
    /// worker's [`Error::Closed`] (status `None`).
    pub fn connect<A: ToSocketAddrs>(
        &mut self,
        addr: A,
        opts: &ConnectOptions,
        timeout: Option<Duration>,
    ) -> Result<Worker> {
        let got = self.connect_addrs(addr, opts, timeout);
        // Its polls may have read other workers' events (success or not):
        // they must show on the reactor's descriptor.
        self.signal_queued();
        got
    }

    /// Drops a remote worker's connection at once, as a lost one: unsent
    /// output is thrown away, what was already received stays queued, and
    /// [`Error::Closed`] (status `None`) comes after it. This is what
    /// "kill" means for a remote worker (a deadline passed, the server went
    /// silent): its process is the server's, but the connection is ours.
    ///
    /// Errors: [`Error::Io`] with `op` `"disconnect"` and kind
    /// [`Unsupported`](io::ErrorKind::Unsupported) for a local worker (use
    /// [`Reactor::kill`]), [`Error::UnknownWorker`].
    pub fn disconnect(&mut self, w: Worker) -> Result<()> {
        let conn = self.conn(w)?;
        let ended = conn.is_ended();
        if conn.pid().is_some() || !(ended || conn.is_tcp()) {
            return Err(Error::io(
                "disconnect",
                io::Error::new(io::ErrorKind::Unsupported, "not a remote worker"),
            ));
        }
        if !ended {
            self.hang_up(w);
            self.signal_queued();
        }
        Ok(())
    }

    /// Starts a non-blocking connect to `addr` and returns at once: the
    /// worker is in state `Connecting` until the reactor's polls finish it
    /// (see [`Reactor::connect_progress`]). Only refusals known at once
    /// (no route, ...) fail here. For a pool that must not stall on one
    /// host while it connects.
    pub(crate) fn connect_start(
        &mut self,
        addr: SocketAddr,
        opts: &ConnectOptions,
    ) -> Result<Worker> {
        let sock = TcpStream::connect(addr).map_err(|e| Error::io("connect", e))?;
        if let Some(k) = &opts.keepalive {
            k.apply(&sock).map_err(|e| Error::io("setsockopt", e))?;
        }
        self.insert_conn(
            Stream::Tcp(sock),
            None,
            &opts.conn,
            State::Connecting {
                authenticate: opts.secret.is_some(),
            },
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Where a connect begun with [`Reactor::connect_start`] stands, without
    /// waiting: `Ok(true)` open (authenticated when `opts` has a secret),
    /// `Ok(false)` still going. On failure the connection is removed and its
    /// error returned. Give up on one with [`Reactor::remove_conn`].
    pub(crate) fn connect_progress(&mut self, w: Worker, opts: &ConnectOptions) -> Result<bool> {
        let conn = self.conn_mut(w)?;
        match conn.state() {
            State::Connecting { .. } => Ok(false),
            State::Open => Ok(true),
            State::Authenticating => {
                let Some(secret) = opts.secret.as_ref() else {
                    conn.authenticated();
                    return Ok(true);
                };
                match self.try_answer_challenge(w, secret) {
                    Ok(false) => Ok(false),
                    Ok(true) => {
                        if let Ok(conn) = self.conn_mut(w) {
                            conn.authenticated();
                        }
                        // Anything the server sent after the challenge.
                        self.read_conn(w);
                        Ok(true)
                    }
                    Err(e) => {
                        self.remove_conn(w);
                        Err(e)
                    }
                }
            }
            _ => Err(self.connect_failed(w)),
        }
    }

    /// A connect that failed: its error (the inbox holds it, then
    /// `Closed`), the connection removed.
    fn connect_failed(&mut self, w: Worker) -> Error {
        let err = match self.conn_mut(w).ok().and_then(|c| c.pop()) {
            Some(Err(e)) => e,
            _ => Error::io("connect", io::Error::other("connection failed")),
        };
        self.remove_conn(w);
        err
    }

    /// Answers the server's challenge if its line is here: `Ok(true)` once
    /// answered, `Ok(false)` while it has not come.
    fn try_answer_challenge(&mut self, w: Worker, secret: &Secret) -> Result<bool> {
        let fd = self
            .conn(w)?
            .sock_fd()
            .ok_or_else(|| Error::io("authenticate", io::ErrorKind::NotConnected.into()))?;
        match auth::take_line(fd) {
            Ok(Some(line)) => {
                let nonce = auth::parse_challenge(&line).ok_or_else(|| {
                    Error::io(
                        "authenticate",
                        io::Error::new(io::ErrorKind::InvalidData, "not a miniray challenge"),
                    )
                })?;
                let answer = secret.answer(&nonce);
                match sys::send_nosignal(fd, &answer) {
                    Ok(n) if n == answer.len() => Ok(true),
                    Ok(_) => Err(Error::io("authenticate", io::ErrorKind::WriteZero.into())),
                    Err(e) => Err(Error::io("authenticate", e)),
                }
            }
            Ok(None) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(Error::io("authenticate", e)),
        }
    }

    fn connect_addrs<A: ToSocketAddrs>(
        &mut self,
        addr: A,
        opts: &ConnectOptions,
        timeout: Option<Duration>,
    ) -> Result<Worker> {
        let deadline = timeout.and_then(deadline_after);
        let mut last = None;
        for a in addr
            .to_socket_addrs()
            .map_err(|e| Error::io("resolve", e))?
        {
            match self.connect_one(a, opts, deadline) {
                Ok(w) => return Ok(w),
                Err(e) => last = Some(e),
            }
            // Never open another connection after the deadline: the last
            // address's error (`Timeout`, or the missing challenge) is the
            // answer.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
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
        opts: &ConnectOptions,
        deadline: Option<Instant>,
    ) -> Result<Worker> {
        let w = self.connect_start(addr, opts)?;
        loop {
            let conn = self.conn_mut(w)?;
            match conn.state() {
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
                        conn.authenticated();
                    }
                    return match answered {
                        Ok(()) => {
                            // Anything the server sent after the challenge.
                            self.read_conn(w);
                            Ok(w)
                        }
                        Err(e) => {
                            self.remove_conn(w);
                            Err(e)
                        }
                    };
                }
                _ => return Err(self.connect_failed(w)),
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                self.remove_conn(w);
                return Err(Error::Timeout);
            }
            self.poll_once(left)?;
        }
    }

    /// The client's side of the handshake, on a connection just opened.
    fn answer_challenge(
        &mut self,
        w: Worker,
        secret: &Secret,
        deadline: Option<Instant>,
    ) -> Result<()> {
        loop {
            let fd = self
                .conn(w)?
                .sock_fd()
                .ok_or_else(|| Error::io("authenticate", io::ErrorKind::NotConnected.into()))?;
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
                // Say why: the usual cause is a server without a secret,
                // which sends no challenge and waits for messages.
                return Err(Error::io(
                    "authenticate",
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no authentication challenge from the server before the deadline (does it run with a secret?)",
                    ),
                ));
            }
            // Peek again after a short wait: this connection's events are
            // not read while it authenticates.
            self.poll_once(Some(left.min(Duration::from_millis(10))))?;
        }
    }
}
