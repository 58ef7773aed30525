//! What a server is: its options ([`ServerOptions`]), its handle
//! ([`Server`]), what it reports ([`ServerEvent`]), and the three entries it
//! keeps in the reactor's registry: a [`Listener`], a [`Pending`] handshake
//! and a [`ServerChild`]. What a server does with them is in `server/`.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};

use crate::auth::Secret;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::options::{ChildSettings, LineSettings};
use crate::process::describe;
use crate::shm::SharedMemory;
use crate::token::Key;
use crate::worker::{Channel, Exec};

/// Default limit of concurrent connections of a [`Server`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default pause of a server's accepting after it ran out of descriptors.
pub const DEFAULT_ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How a [`Server`] listens and what each connection's child runs with:
/// the line format and limit it speaks, its death signal and the
/// descriptors it keeps (the serving child's side of what
/// [`WorkerOptions`](crate::WorkerOptions) sets for a local worker; the
/// parent holds no connection to it, so there are no buffer bounds here).
///
/// ```
/// use std::time::Duration;
/// use miniray::{ConnectOptions, Format, Reactor, ServerOptions};
///
/// # fn main() -> miniray::Result<()> {
/// let mut reactor = Reactor::new()?;
/// let opts = ServerOptions::new()
///     .format(Format::Marshal)
///     .max_line(1 << 20)
///     .max_connections(16);
/// let server = reactor.listen("127.0.0.1:0", &opts, |v: miniray::Value| v)?;
/// let addr = reactor.server_addr(server)?;
/// // A remote worker of the same reactor, speaking the server's format.
/// let w = reactor.connect(
///     addr,
///     &ConnectOptions::new().format(Format::Marshal),
///     Some(Duration::from_secs(5)),
/// )?;
/// reactor.send(w, &miniray::py!([1, "two", (3, b"four")]))?;
/// let back: miniray::Value = reactor.recv(w, Some(Duration::from_secs(5)))?;
/// assert_eq!(back, miniray::py!([1, "two", (3, b"four")]));
/// # Ok(())
/// # }
/// ```
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
///   line, exits [`EXIT_IDLE`](crate::process::EXIT_IDLE) and the slot is free again.
///
/// So without an idle limit, `max_connections` silent clients lock every
/// other client out for good; with one, a slot is held by a silent client
/// for at most `auth_timeout + idle_timeout`. Slowly dripping bytes that
/// never make a line do not count as activity. A served client is never
/// closed while its child is busy answering, only while it waits for input.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub(crate) line: LineSettings,
    pub(crate) child: ChildSettings,
    pub(crate) max_connections: usize,
    pub(crate) accept_backoff: Duration,
    pub(crate) secret: Option<Secret>,
    pub(crate) require_encryption: bool,
    pub(crate) auth_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            line: LineSettings::default(),
            child: ChildSettings::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            accept_backoff: DEFAULT_ACCEPT_BACKOFF,
            secret: None,
            require_encryption: false,
            auth_timeout: Duration::from_secs(5),
            idle_timeout: None,
        }
    }
}

impl ServerOptions {
    /// JSON, a 64 MiB line limit, 1024 connections, `SIGTERM` on parent
    /// death, no secret, a 5 s authentication limit, no idle limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// The line format each serving child speaks; clients must speak the
    /// same. No effect with [`Reactor::listen_exec`](crate::Reactor::listen_exec):
    /// the program reads and writes the socket itself, in whatever format it
    /// speaks.
    pub fn format(mut self, format: Format) -> Self {
        self.line.format = format;
        self
    }

    /// The maximum length in bytes of a line a serving child reads, not
    /// counting the `\n`; a longer one fails that message alone
    /// ([`Error::LineTooLong`] from the child's
    /// [`Channel::recv`](crate::Channel::recv);
    /// [`Reactor::listen`](crate::Reactor::listen) skips it).
    /// Default [`DEFAULT_MAX_LINE`](crate::framing::DEFAULT_MAX_LINE). No
    /// effect with [`Reactor::listen_exec`](crate::Reactor::listen_exec):
    /// the program reads the socket itself, so any limit is its own.
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.line.max_line = bytes;
        self
    }

    /// The signal each serving child gets when the thread that forked it
    /// (the one running the reactor) dies (`PR_SET_PDEATHSIG`); `None` for
    /// none. Default `SIGTERM`.
    pub fn death_signal(mut self, signal: Option<i32>) -> Self {
        self.child.death_signal = signal;
        self
    }

    /// A shared memory region every serving child inherits (see
    /// [`WorkerOptions::region`](crate::WorkerOptions::region)).
    pub fn region(self, region: &SharedMemory) -> Self {
        self.keep_fd(region.as_raw_fd())
    }

    /// A descriptor every serving child keeps open; every other inherited
    /// descriptor from 3 up is closed in it. Checked before each fork: a
    /// negative number, or one no longer open then, fails that connection
    /// ([`ServerEvent::AcceptFailed`] with [`Error::BadDescriptor`]). Keep
    /// it open while the server runs.
    pub fn keep_fd(mut self, fd: RawFd) -> Self {
        self.child.keep_fds.push(fd);
        self
    }

    /// Lets the child's closure batch its replies (off by default: each
    /// reply is written before the next request is worked on). With
    /// batching, replies wait while more requests are buffered, written in
    /// larger chunks: more pipelined throughput for tiny messages, but a
    /// slow request delays the finished replies queued before it. See
    /// [`Channel::set_batch_replies`](crate::Channel::set_batch_replies).
    /// `listen_exec` programs write their own output; this has no effect on them.
    pub fn batch_replies(mut self, batch: bool) -> Self {
        self.child.batch_replies = batch;
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

    /// Require clients to hold `secret` (see [`Secret`]): before anything
    /// is forked for a client, both sides prove the secret to each other
    /// (HMAC-SHA256 over both sides' nonces and their roles), and every
    /// line after that carries an integrity tag bound to the handshake, or
    /// is encrypted if the client asked (`PROTOCOL.md` section 4). A
    /// client that fails gets a refusal line naming why, is closed, and is
    /// reported as [`ServerEvent::AuthFailed`]. Off by default, so plain
    /// Python clients keep working.
    ///
    /// With [`Reactor::listen_exec`](crate::Reactor::listen_exec), the
    /// serving child keeps the connection and relays plain lines to and
    /// from the program over a socketpair, so the program needs to know
    /// nothing of the secret (and never sees it).
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Refuse clients that do not ask for encryption
    /// ([`ConnectOptions::encrypt`](crate::ConnectOptions::encrypt)) with
    /// the refusal `encryption-required`. Off by default: a server with a
    /// secret serves the tagged mode and, to clients that ask, encryption.
    /// Needs [`ServerOptions::secret`].
    pub fn require_encryption(mut self, on: bool) -> Self {
        self.require_encryption = on;
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
    /// while its child waits for one. Off by default.
    ///
    /// * [`Reactor::listen`](crate::Reactor::listen) and [`Reactor::listen_channel`](crate::Reactor::listen_channel): the child's
    ///   [`Channel::recv`](crate::Channel::recv) fails with [`Error::Timeout`] (see
    ///   [`Channel::set_idle_timeout`](crate::Channel::set_idle_timeout)), the connection is shut down and the
    ///   child exits [`EXIT_IDLE`](crate::process::EXIT_IDLE) once the work function returns (at once
    ///   for `listen`), reported as [`ServerEvent::Exited`]. The clock runs
    ///   only while the child waits for input, from the moment it starts
    ///   waiting: a slow answer never counts, and bytes without a newline
    ///   do not reset it.
    /// * [`Reactor::listen_exec`](crate::Reactor::listen_exec): the program reads the socket itself, so
    ///   miniray cannot see its lines; `limit` becomes the socket's receive
    ///   timeout (`SO_RCVTIMEO`), and a blocking read that gets no byte for
    ///   that long fails with `EAGAIN` (most programs then exit; the status
    ///   is theirs). This is weaker: any byte resets it, and a program that
    ///   waits with `poll`/`select` is not limited.
    ///
    /// `Duration::MAX` means no limit. `Duration::ZERO` acts as 1 ms on
    /// both paths (a zero `SO_RCVTIMEO` would mean "none"): a line already
    /// waiting, or arriving within that, is served; then the child closes.
    pub fn idle_timeout(mut self, limit: Duration) -> Self {
        self.idle_timeout = Some(limit);
        self
    }
}

/// A handle to a server: a listener of a [`Reactor`](crate::Reactor)
/// ([`Reactor::listen`](crate::Reactor::listen) and its kin) that forks a
/// child to serve each accepted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Server {
    pub(crate) key: Key,
}

impl Server {
    /// A small number for logs, unique among the servers (and workers) of
    /// every reactor of this process, as [`Worker::id`](crate::Worker::id).
    /// `Display` writes it as "server 2".
    pub fn id(&self) -> u64 {
        u64::from(self.key.gen)
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server {}", self.id())
    }
}

/// What happened at a server, from [`Reactor::take_server_events`](crate::Reactor::take_server_events)
/// or as [`Event::Server`](crate::Event::Server) from [`Reactor::wait_events`](crate::Reactor::wait_events).
///
/// `Display` writes one log line ("server 2: child 4711 exited with 124
/// (idle timeout)"); `Debug` writes an exit status in the same words.
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
    /// answer, or no encryption where it is required), was sent a refusal
    /// line and closed; nothing was forked.
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
    /// (`fork` failed, or for [`Reactor::listen_exec`](crate::Reactor::listen_exec) the program could not
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

impl fmt::Display for ServerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerEvent::Accepted { server, peer, pid } => {
                write!(f, "{server}: accepted {peer}, served by child {pid}")
            }
            ServerEvent::Rejected { server, peer } => {
                write!(f, "{server}: rejected {peer} (connection limit)")
            }
            ServerEvent::Exited {
                server,
                pid,
                status,
            } => write!(f, "{server}: child {pid} {}", describe(*status)),
            ServerEvent::AuthFailed {
                server,
                peer,
                reason,
            } => write!(f, "{server}: {peer} failed authentication: {reason}"),
            ServerEvent::AcceptFailed {
                server,
                error,
                dropped,
            } => {
                write!(f, "{server}: could not serve a connection: {error}")?;
                if *dropped {
                    f.write_str(" (a pending connection was closed)")?;
                }
                Ok(())
            }
        }
    }
}

/// Derived-style, with the exit status in words (see [`describe`]).
impl fmt::Debug for ServerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerEvent::Accepted { server, peer, pid } => f
                .debug_struct("Accepted")
                .field("server", server)
                .field("peer", peer)
                .field("pid", pid)
                .finish(),
            ServerEvent::Rejected { server, peer } => f
                .debug_struct("Rejected")
                .field("server", server)
                .field("peer", peer)
                .finish(),
            ServerEvent::Exited {
                server,
                pid,
                status,
            } => f
                .debug_struct("Exited")
                .field("server", server)
                .field("pid", pid)
                .field("status", &format_args!("{}", describe(*status)))
                .finish(),
            ServerEvent::AuthFailed {
                server,
                peer,
                reason,
            } => f
                .debug_struct("AuthFailed")
                .field("server", server)
                .field("peer", peer)
                .field("reason", reason)
                .finish(),
            ServerEvent::AcceptFailed {
                server,
                error,
                dropped,
            } => f
                .debug_struct("AcceptFailed")
                .field("server", server)
                .field("error", error)
                .field("dropped", dropped)
                .finish(),
        }
    }
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
    pub(crate) sock: TcpListener,
    pub(crate) addr: SocketAddr,
    pub(crate) opts: ServerOptions,
    pub(crate) work: ServerWork,
    /// Serving children.
    pub(crate) active: usize,
    /// Handshakes in progress.
    pub(crate) handshaking: usize,
    /// Accepting paused after `EMFILE`...
    pub(crate) paused: bool,
    /// ... until then (`None`: for good, after a back-off of `Duration::MAX`).
    pub(crate) resume_at: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct ServerChild {
    pub(crate) pid: libc::pid_t,
    pub(crate) server: Server,
    pub(crate) pidfd: Option<OwnedFd>,
}

/// An accepted connection answering the authentication challenge.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) server: Server,
    pub(crate) nonce: [u8; 32],
    /// `None`: an `auth_timeout` too long to be a deadline.
    pub(crate) deadline: Option<Instant>,
}

impl ServerChild {
    /// A child entry for the registry's unit tests (no process behind it).
    #[cfg(test)]
    pub(crate) fn for_test(pid: libc::pid_t) -> Self {
        ServerChild {
            pid,
            server: Server {
                key: Key { slot: 0, gen: 0 },
            },
            pidfd: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn server_events_read_as_log_lines() {
        let server = Server {
            key: Key { slot: 0, gen: 2 },
        };
        assert_eq!(server.to_string(), "server 2");
        let ev = ServerEvent::Exited {
            server,
            pid: 4711,
            status: Some(ExitStatus::from_raw(crate::process::EXIT_IDLE << 8)),
        };
        assert_eq!(
            ev.to_string(),
            "server 2: child 4711 exited with 124 (idle timeout)"
        );
        assert!(
            format!("{ev:?}").contains("status: exited with 124 (idle timeout)"),
            "{ev:?}"
        );
    }
}
