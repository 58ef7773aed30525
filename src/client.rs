//! The TCP client: a `RemoteWorker` is a connection of the reactor like a
//! local worker's, opened with a non-blocking connect and, with a secret,
//! an answer to the server's challenge before any message. It reaches the
//! reactor through a small interface (`insert_conn`, `conn_mut`,
//! `remove_conn`, `read_conn`, `poll_once`).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;

use crate::auth::{self, Secret};
use crate::conn::{State, Stream};
use crate::error::{Error, Result};
use crate::process::deadline_after;
use crate::sys;
use crate::worker::{Worker, WorkerOptions};
use crate::Reactor;

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
                _ => {
                    // Failed: the inbox holds the connect error, then Closed.
                    let err = match conn.pop() {
                        Some(Err(e)) => e,
                        _ => Error::io("connect", io::Error::other("connection failed")),
                    };
                    self.remove_conn(w);
                    return Err(err);
                }
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
                return Err(Error::Timeout);
            }
            // Peek again after a short wait: this connection's events are
            // not read while it authenticates.
            self.poll_once(Some(left.min(Duration::from_millis(10))))?;
        }
    }
}
