//! The TCP client: a remote worker ([`Reactor::connect`]) is a connection
//! of the reactor like a local worker's, opened with a non-blocking connect
//! and, with a secret, the mutual handshake of [`auth`](crate::auth) before
//! any message. It reaches the reactor through a small interface
//! (`insert_conn`, `conn`, `conn_mut`, `remove_conn`, `read_conn`,
//! `poll_once`, and `signal_queued` when `connect` ends).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;

use crate::auth::handshake::{ClientHandshake, Step};
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
/// line format and buffers, the secret and encryption, and TCP keepalive.
/// Nothing is forked, so there is no death signal or kept descriptor here
/// (a [`Server`](crate::Server)'s children take those from
/// [`ServerOptions`](crate::ServerOptions)).
///
/// `ConnectOptions::default()` is JSON, a 64 MiB line limit, a 64 MiB
/// output high-water mark, 64 MiB of received messages held before reading
/// pauses, no secret, no encryption, and [`Keepalive::default`] (probes,
/// no user timeout).
///
/// ```no_run
/// use std::time::Duration;
/// use miniray::{ConnectOptions, Format, Reactor, Secret};
///
/// # fn main() -> miniray::Result<()> {
/// let mut reactor = Reactor::new()?;
/// let opts = ConnectOptions::new()
///     .format(Format::Marshal)
///     .secret(Secret::from_file("/etc/miniray/secret")?);
/// let w = reactor.connect("127.0.0.1:7000", &opts, Some(Duration::from_secs(5)))?;
/// reactor.send(w, &miniray::py!({"x": 1}))?;
/// let reply: miniray::Value = reactor.recv(w, Some(Duration::from_secs(5)))?;
/// # let _ = reply;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub(crate) conn: ConnSettings,
    pub(crate) secret: Option<Secret>,
    pub(crate) encrypt: bool,
    pub(crate) keepalive: Option<Keepalive>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            conn: ConnSettings::default(),
            secret: None,
            encrypt: false,
            keepalive: Some(Keepalive::default()),
        }
    }
}

/// TCP keepalive, tuned (see [`ConnectOptions::keepalive`]): after `idle`
/// with nothing received the kernel probes the peer every `interval`, and
/// `count` unanswered probes end the connection, so a host that vanished
/// without closing (a machine powered off, a link cut while the connection
/// was idle) shows as [`Error::Closed`] within about
/// `idle + interval * count`. A live host's kernel answers the probes
/// however busy its process is, so a busy host is never taken for dead.
///
/// A stopped process (`SIGSTOP`) whose kernel still answers is not detected
/// this way: that takes a deadline on the task
/// ([`PoolOptions::timeout`](crate::PoolOptions::timeout)). Neither is a
/// link cut while data is in flight (probes are sent only on an idle
/// connection): that takes the task deadline, or `user_timeout`.
///
/// `user_timeout` (`TCP_USER_TIMEOUT`, off by default) aborts a connection
/// whose sent data stays unacknowledged that long. A busy host whose
/// receive window is full acknowledges nothing while it works, so a user
/// timeout shorter than the longest task aborts live connections: set it
/// above the task deadline, never below (a [`Pool`](crate::Pool) refuses
/// one that is not above its [`PoolOptions::timeout`](crate::PoolOptions::timeout)). Whole seconds for the probes (at
/// least 1); milliseconds for the user timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe.
    pub idle: Duration,
    /// Between probes.
    pub interval: Duration,
    /// Unanswered probes that end the connection.
    pub count: u32,
    /// `TCP_USER_TIMEOUT`: unacknowledged data older than this ends the
    /// connection. `None` (the default): the kernel's own (about 15
    /// minutes of retransmissions). Must exceed the task deadline.
    pub user_timeout: Option<Duration>,
}

impl Default for Keepalive {
    /// 5 s idle, then a probe every second, 3 probes: a vanished peer of an
    /// idle connection is found within about 8 s. No user timeout.
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(5),
            interval: Duration::from_secs(1),
            count: 3,
            user_timeout: None,
        }
    }
}

impl Keepalive {
    /// Sets `TCP_USER_TIMEOUT` (see the type's docs: it must exceed the
    /// longest task; `None` for none).
    pub fn user_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.user_timeout = timeout;
        self
    }

    /// Sets it on a socket.
    fn apply(&self, sock: &TcpStream) -> io::Result<()> {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let user_ms = self.user_timeout.map_or(0, |d| {
            // At least 1 ms: zero would mean "none" to the kernel.
            u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
        });
        sys::set_keepalive(
            sock,
            secs(self.idle),
            secs(self.interval),
            self.count,
            user_ms,
        )
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

    /// Authenticate with this secret (see [`Secret`]); the server must
    /// hold the same ([`ServerOptions::secret`](crate::ServerOptions::secret)).
    /// Off by default, so plain Python servers work.
    ///
    /// Both sides prove the secret to each other before `connect` returns,
    /// and every line after that carries an integrity tag bound to the
    /// handshake (`PROTOCOL.md` section 4). Every mismatch is an
    /// [`Error::Auth`] naming the server and an [`AuthFailure`](crate::AuthFailure):
    ///
    /// | client | server | the client's error |
    /// |---|---|---|
    /// | this secret | a different one | `connect` fails: `WrongSecret` (the server sent its refusal) |
    /// | no secret | a secret | the first `recv`: `SecretRequired` (the server's challenge is never taken for a reply), then [`Error::Closed`] |
    /// | a secret | no secret | `connect` fails at its deadline: `NoChallenge` |
    /// | a secret | an impostor relaying a real server | `connect` fails (`ServerUnproven`), or any line it injects or alters: `Integrity`, then [`Error::Closed`] |
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Encrypt the connection (off by default): after the handshake, a
    /// Noise session keyed from the secret and the handshake carries every
    /// byte, so what is sent is also confidential, not only authenticated
    /// (`PROTOCOL.md` section 4). Needs a secret, and a miniray server
    /// (Python peers speak the tagged mode only). A server with
    /// [`ServerOptions::require_encryption`](crate::ServerOptions::require_encryption)
    /// refuses clients without it (`EncryptionRequired`).
    pub fn encrypt(mut self, on: bool) -> Self {
        self.encrypt = on;
        self
    }

    /// TCP keepalive on the connection (see [`Keepalive`]): on by default
    /// with [`Keepalive::default`]; `None` turns it off.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// The keepalive this connection will have (`None`: off).
    pub fn keepalive_settings(&self) -> Option<Keepalive> {
        self.keepalive
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
    /// ...), `"resolve"` or `"authenticate"`, [`Error::Timeout`],
    /// [`Error::Auth`] (see [`ConnectOptions::secret`]), [`Error::Secret`]
    /// (encryption asked for without a secret). A reset or EOF later is the
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
        if opts.encrypt && opts.secret.is_none() {
            return Err(Error::Secret {
                origin: "ConnectOptions".into(),
                reason: "encryption was asked for, and no secret given to key it".into(),
            });
        }
        let sock = TcpStream::connect(addr).map_err(|e| Error::io("connect", e))?;
        if let Some(k) = &opts.keepalive {
            k.apply(&sock).map_err(|e| Error::io("setsockopt", e))?;
        }
        let w = self.insert_conn(
            Stream::Tcp(sock),
            None,
            &opts.conn,
            State::Connecting {
                authenticate: opts.secret.is_some(),
            },
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let conn = self.conn_mut(w)?;
        match &opts.secret {
            Some(s) => conn.set_handshake(ClientHandshake::new(s.clone(), opts.encrypt, addr)),
            None => conn.watch_for_challenge(addr),
        }
        Ok(w)
    }

    /// Where a connect begun with [`Reactor::connect_start`] stands, without
    /// waiting: `Ok(true)` open (with a secret: both sides proved it, the
    /// session is bound), `Ok(false)` still going. On failure the
    /// connection is removed and its error returned: [`Error::Auth`] for
    /// the server's refusal or an impostor. Give up on one that takes too
    /// long with [`Reactor::connect_abandon`], which says why.
    pub(crate) fn connect_progress(&mut self, w: Worker, _opts: &ConnectOptions) -> Result<bool> {
        let conn = self.conn_mut(w)?;
        match conn.state() {
            State::Connecting { .. } => Ok(false),
            State::Open => Ok(true),
            State::Authenticating => match self.handshake_step(w) {
                Ok(open) => Ok(open),
                Err(e) => {
                    self.remove_conn(w);
                    Err(e)
                }
            },
            _ => Err(self.connect_failed(w)),
        }
    }

    /// Gives up on a connect begun with [`Reactor::connect_start`] (its
    /// deadline passed): removes it and says why: [`Error::Auth`] with
    /// [`AuthFailure::NoChallenge`](crate::AuthFailure::NoChallenge) when
    /// the server never sent its challenge (it runs without a secret), an
    /// `Auth` refusal when our answer got no verdict, else
    /// [`Error::Timeout`].
    pub(crate) fn connect_abandon(&mut self, w: Worker) -> Error {
        let why = match self.conn_mut(w) {
            Ok(c) if matches!(c.state(), State::Authenticating) => c
                .handshake_mut()
                .map_or(Error::Timeout, |hs| hs.timed_out()),
            _ => Error::Timeout,
        };
        self.remove_conn(w);
        why
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

    /// Runs the client's handshake as far as the server's lines allow,
    /// never waiting: `Ok(true)` once authenticated and open.
    fn handshake_step(&mut self, w: Worker) -> Result<bool> {
        loop {
            let got = {
                let fd = self.conn(w)?.sock_fd().ok_or_else(not_connected)?;
                auth::take_line(fd)
            };
            let conn = self.conn_mut(w)?;
            let hs = conn.handshake_mut().ok_or_else(not_connected)?;
            let line = match got {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(hs.closed()),
                Err(e) => return Err(Error::io("authenticate", e)),
            };
            match hs.on_line(&line)? {
                Step::Send(answer) => {
                    // A fresh connection's buffer takes the short line whole.
                    let fd = conn.sock_fd().ok_or_else(not_connected)?;
                    match sys::send_nosignal(fd, &answer) {
                        Ok(n) if n == answer.len() => {}
                        Ok(_) => {
                            return Err(Error::io("authenticate", io::ErrorKind::WriteZero.into()))
                        }
                        Err(e) => return Err(Error::io("authenticate", e)),
                    }
                }
                Step::Done(session) => {
                    conn.open_session(session);
                    // Anything the server sent after its verdict.
                    self.read_conn(w);
                    return Ok(true);
                }
            }
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
            let mut authenticating = false;
            match conn.state() {
                State::Connecting { .. } => {}
                State::Open => return Ok(w),
                State::Authenticating => {
                    // Set by finish_connect, so no handshake line is read as
                    // a message.
                    authenticating = true;
                    match self.handshake_step(w) {
                        Ok(true) => return Ok(w),
                        Ok(false) => {}
                        Err(e) => {
                            self.remove_conn(w);
                            return Err(e);
                        }
                    }
                }
                _ => return Err(self.connect_failed(w)),
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(self.connect_abandon(w));
            }
            // While authenticating, this connection's events are not read
            // (its lines are the handshake's): look again after a short wait.
            let wait = if authenticating {
                Some(left.map_or(Duration::from_millis(10), |l| {
                    l.min(Duration::from_millis(10))
                }))
            } else {
                left
            };
            self.poll_once(wait)?;
        }
    }
}

fn not_connected() -> Error {
    Error::io("authenticate", io::ErrorKind::NotConnected.into())
}
