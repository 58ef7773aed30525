//! One connection of the reactor, seen from the parent: its socket (a
//! socketpair end or TCP, in `stream.rs`), its state machine, its buffers, and the I/O of
//! one readiness event (read until `WouldBlock`, write with `MSG_NOSIGNAL`
//! and descriptor markers). Nothing here knows other connections, tokens
//! or children: the reactor decides what an outcome means.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::process::ExitStatus;

use mio::Token;

use crate::auth::handshake::ClientHandshake;
use crate::auth::noise::NoiseOpener;
use crate::auth::session::Sealer;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::inbound::{Inbound, Msg};
use crate::options::ConnSettings;
use crate::sys;

mod read;
mod session;
mod stream;

pub(crate) use read::{interest, ReadUntil};

pub(crate) use stream::Stream;

/// Bytes read per `read(2)`: one buffer shared by every connection.
pub(crate) const READ_CHUNK: usize = 256 * 1024;
/// A connection's queued output is written as soon as it passes this, not
/// only at the next `wait_any`/`recv`.
pub(crate) const FLUSH_AT: usize = 64 * 1024;
/// An output buffer larger than this is freed once it drains, so an idle
/// worker holds no buffer memory.
const KEEP_OUT_CAPACITY: usize = 4096;

/// Where a connection is in its life.
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

/// One connection and, for a local worker, its child.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket's number, as handed out in the [`Worker`](crate::Worker) handle.
    fd: RawFd,
    pid: Option<libc::pid_t>,
    format: Format,
    high_water: usize,
    /// `None` once the connection ended.
    sock: Option<Stream>,
    inbound: Inbound,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    out_pos: usize,
    /// `WRITABLE` interest is registered.
    writable: bool,
    /// On the reactor's list of connections with output to write.
    dirty: bool,
    /// On the reactor's list of connections with events to return.
    queued: bool,
    /// Descriptors to send with the line starting at that offset of `out`.
    out_fds: VecDeque<(usize, Vec<OwnedFd>)>,
    /// Reading stops while this many line bytes wait to be taken.
    max_queued: usize,
    read_paused: bool,
    state: State,
    /// The child's pidfd, registered under the connection's exit token: from
    /// spawn (when descriptors allow) or from hang-up until exit.
    pidfd: Option<OwnedFd>,
    /// `Some(status)` once the child was reaped (its pid may be reused:
    /// never signal it again).
    exit: Option<Option<ExitStatus>>,
    /// [`Error::Exited`] was queued.
    exit_told: bool,
    /// A TCP client's handshake while it is `Authenticating`.
    handshake: Option<Box<ClientHandshake>>,
    /// After an authenticated handshake: seals each line sent.
    sealer: Option<Box<Sealer>>,
    /// Mode `noise`: decrypts each read before framing (and the peer).
    records: Option<Box<(NoiseOpener, SocketAddr)>>,
}

/// What one [`Conn::write_out`] did.
#[derive(Debug, Default)]
pub(crate) struct WriteOutcome {
    /// Errors pushed into the inbox (refused descriptors, a failed send).
    pub(crate) reported: bool,
    /// The stream cannot go on (the peer is gone, or a send failed):
    /// read what is left, which ends the connection.
    pub(crate) failed: bool,
}

impl Conn {
    /// A connection over `sock`; `writable`: `WRITABLE` interest was
    /// registered with it.
    pub(crate) fn new(
        sock: Stream,
        pid: Option<libc::pid_t>,
        opts: &ConnSettings,
        state: State,
        writable: bool,
    ) -> Conn {
        Conn {
            fd: sock.as_raw_fd(),
            pid,
            format: opts.line.format,
            high_water: opts.high_water,
            sock: Some(sock),
            inbound: Inbound::new(opts.line.max_line),
            out: Vec::new(),
            out_pos: 0,
            writable,
            dirty: false,
            queued: false,
            out_fds: VecDeque::new(),
            max_queued: opts.max_queued,
            read_paused: false,
            state,
            pidfd: None,
            exit: None,
            exit_told: false,
            handshake: None,
            sealer: None,
            records: None,
        }
    }

    /// The socket's number, as handed out in the worker's handle.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// The connection's format.
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Where the connection is in its life.
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// The local child's pid (`None` for TCP), reaped or not.
    pub(crate) fn pid(&self) -> Option<libc::pid_t> {
        self.pid
    }

    /// The local child's pid while it may be signalled: not reaped (its pid
    /// could be reused) and `Closed` not yet queued.
    pub(crate) fn running_pid(&self) -> Option<libc::pid_t> {
        match self.state {
            State::Done => None,
            _ if self.exit.is_some() => None,
            _ => self.pid,
        }
    }

    /// `Some(status)` once the child was reaped.
    pub(crate) fn exit(&self) -> Option<Option<ExitStatus>> {
        self.exit
    }

    /// The stream ended (its socket is closed).
    pub(crate) fn is_ended(&self) -> bool {
        self.sock.is_none()
    }

    /// The child's pidfd is registered.
    pub(crate) fn is_watched(&self) -> bool {
        self.pidfd.is_some()
    }

    /// Keeps the child's registered pidfd.
    pub(crate) fn set_pidfd(&mut self, fd: OwnedFd) {
        self.pidfd = Some(fd);
    }

    /// Gives up the child's pidfd (for the caller to deregister).
    pub(crate) fn take_pidfd(&mut self) -> Option<OwnedFd> {
        self.pidfd.take()
    }

    /// The child was reaped with `status`; returns its pidfd to deregister.
    pub(crate) fn reaped(&mut self, status: Option<ExitStatus>) -> Option<OwnedFd> {
        self.exit = Some(status);
        self.pidfd.take()
    }

    /// Queues `Exited` for a reaped child whose connection is still open
    /// (not while reading is paused, nor twice). True if it was queued.
    pub(crate) fn tell_exit(&mut self) -> bool {
        let Some(status) = self.exit else {
            return false;
        };
        if self.exit_told || self.read_paused || self.sock.is_none() {
            return false;
        }
        self.exit_told = true;
        self.inbound.push(Err(Error::Exited { status }));
        true
    }

    /// Queues `Closed` as the last event; returns the pidfd to deregister.
    pub(crate) fn close_with(&mut self, status: Option<ExitStatus>) -> Option<OwnedFd> {
        self.state = State::Done;
        self.inbound.push(Err(Error::Closed { status }));
        self.pidfd.take()
    }

    /// `close`: an open connection starts closing (true); otherwise nothing.
    pub(crate) fn begin_close(&mut self) -> bool {
        if !matches!(self.state, State::Open) {
            return false;
        }
        self.state = State::Closing;
        true
    }

    /// Shutdown: closes the socket and marks the connection done. Returns
    /// the status if the child is reaped (or there is none), or the pid to
    /// wait for.
    pub(crate) fn abandon(&mut self) -> std::result::Result<Option<ExitStatus>, libc::pid_t> {
        drop(self.sock.take());
        let reaped = matches!(self.state, State::Done) || self.exit.is_some();
        self.state = State::Done;
        match self.pid {
            Some(pid) if !reaped => Err(pid),
            _ => Ok(self.exit.flatten().or_else(|| {
                self.inbound.inbox.iter().rev().find_map(|e| match e {
                    Err(Error::Closed { status }) => *status,
                    _ => None,
                })
            })),
        }
    }

    /// Reading paused at `max_queued`.
    pub(crate) fn is_reading_paused(&self) -> bool {
        self.read_paused
    }

    /// Resumes reading once the consumer took half of what was queued;
    /// true if it did (the caller then reads what is pending).
    pub(crate) fn resume_reading(&mut self) -> bool {
        if self.read_paused && self.inbound.queued_bytes <= self.max_queued / 2 {
            self.read_paused = false;
            return true;
        }
        false
    }

    /// The oldest queued event.
    pub(crate) fn pop(&mut self) -> Option<Result<Msg>> {
        self.inbound.pop()
    }

    /// Complete plain lines (not frames) received and not yet taken.
    pub(crate) fn queued_plain_lines(&self) -> usize {
        self.inbound.plain_lines()
    }

    /// Line bytes received and not yet taken.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.inbound.queued_bytes
    }

    /// Puts the connection on the reactor's write list: true if it was not.
    pub(crate) fn mark_dirty(&mut self) -> bool {
        !std::mem::replace(&mut self.dirty, true)
    }

    /// Taken off the reactor's write list.
    pub(crate) fn clear_dirty(&mut self) {
        self.dirty = false;
    }

    /// Puts the connection on the reactor's ready list: true if it was not.
    pub(crate) fn mark_queued(&mut self) -> bool {
        !std::mem::replace(&mut self.queued, true)
    }

    /// Whether the connection stays on the ready list: it has events.
    pub(crate) fn recheck_queued(&mut self) -> bool {
        self.queued = !self.inbound.inbox.is_empty();
        self.queued
    }

    /// Bytes queued and not yet written.
    pub(crate) fn pending_output(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// The socket, while the connection has one.
    pub(crate) fn sock_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sock.as_ref().map(|s| s.as_fd())
    }

    /// A TCP connection (descriptors cannot travel).
    pub(crate) fn is_tcp(&self) -> bool {
        matches!(self.sock, Some(Stream::Tcp(_)))
    }

    /// Encodes one line straight into the output buffer, with the
    /// descriptors to send with it. `Ok(true)` when it should be written
    /// now: `write_through` (no `Batch` open) and nothing was queued ahead
    /// of it (the line leaves at once, not at the next wait), or the buffer passed
    /// [`FLUSH_AT`]. Output queued behind earlier output waits for the
    /// socket's `WRITABLE` readiness (registered by the write that stopped
    /// short), which also makes the reactor's descriptor ready.
    pub(crate) fn queue<E>(
        &mut self,
        fds: Vec<OwnedFd>,
        scratch: &mut Vec<u8>,
        write_through: bool,
        encode: E,
    ) -> Result<bool>
    where
        E: FnOnce(Format, &mut Vec<u8>, &mut Vec<u8>) -> Result<()>,
    {
        if !matches!(self.state, State::Open) {
            return Err(Error::Closed { status: None });
        }
        let before = self.out.len();
        self.encode_sealed(scratch, encode)?;
        let buffered = before - self.out_pos;
        let pending = self.out.len() - self.out_pos;
        if buffered > 0 && pending > self.high_water {
            self.out.truncate(before);
            return Err(Error::Backpressure {
                buffered,
                needed: pending - buffered,
                limit: self.high_water,
            });
        }
        if !fds.is_empty() {
            self.out_fds.push_back((before, fds));
        }
        Ok((write_through && buffered == 0) || pending >= FLUSH_AT)
    }

    /// Writes queued output until done or `WouldBlock`; arms or disarms
    /// `WRITABLE` interest (under `token`) accordingly; shuts writing down
    /// once a closing connection's output drained.
    pub(crate) fn write_out(&mut self, registry: &mio::Registry, token: Token) -> WriteOutcome {
        let Some(sock) = self.sock.as_mut() else {
            return WriteOutcome::default();
        };
        let fd = sock.as_fd();
        let mut failed = false;
        let mut refused = Vec::new();
        while self.out_pos < self.out.len() {
            // Plain bytes up to the next line that carries descriptors; that
            // line, and nothing after it, goes with them in one sendmsg (the
            // wire contract in inbound.rs: bytes of a later line in the same
            // sendmsg could share the receiver's read and claim them). At
            // most the line's first WITH_FDS_MAX bytes go with them (so a
            // retry while the socket is full scans no more); the rest of the
            // line follows as plain sends.
            const WITH_FDS_MAX: usize = 64 * 1024;
            let (end, with_fds) = match self.out_fds.front() {
                Some((at, _)) if *at == self.out_pos => {
                    let limit = self
                        .out_fds
                        .get(1)
                        .map_or(self.out.len(), |m| m.0)
                        .min(self.out_pos + WITH_FDS_MAX);
                    let line = &self.out[self.out_pos..limit];
                    let end = memchr::memchr(b'\n', line).map_or(limit, |nl| self.out_pos + nl + 1);
                    (end, true)
                }
                Some((at, _)) => (*at, false),
                None => (self.out.len(), false),
            };
            let chunk = &self.out[self.out_pos..end];
            let sent = match self.out_fds.front() {
                Some((_, fds)) if with_fds => sys::send_with_fds(fd, chunk, fds),
                _ => sys::send_nosignal(fd, chunk),
            };
            match sent {
                Ok(n) => {
                    self.out_pos += n;
                    if with_fds {
                        // Sent with the line's first bytes: close our duplicates.
                        self.out_fds.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if peer_gone(&e) => {
                    // The child is gone. What it sent before is still read.
                    failed = true;
                    break;
                }
                Err(e) if with_fds => {
                    // The kernel refused the descriptors (ETOOMANYREFS: this
                    // user has more in flight than its open-file limit), so
                    // nothing of the line left. Drop that line alone and say
                    // so in the worker's events; the lines around it go on.
                    let rest = &self.out[self.out_pos..];
                    let len = memchr::memchr(b'\n', rest).map_or(rest.len(), |nl| nl + 1);
                    self.out.drain(self.out_pos..self.out_pos + len);
                    self.out_fds.pop_front();
                    for m in self.out_fds.iter_mut() {
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
        let drained = failed || self.out_pos == self.out.len();
        if drained {
            if self.out.capacity() > KEEP_OUT_CAPACITY {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
            self.out_pos = 0;
            self.out_fds.clear();
        } else if self.out_pos > FLUSH_AT && self.out_pos * 2 > self.out.len() {
            self.out.drain(..self.out_pos);
            for m in self.out_fds.iter_mut() {
                m.0 -= self.out_pos;
            }
            self.out_pos = 0;
        }
        let want_writable = !drained;
        if want_writable != self.writable {
            if let Some(sock) = self.sock.as_mut() {
                match registry.reregister(sock, token, interest(want_writable)) {
                    Ok(()) => self.writable = want_writable,
                    // Without WRITABLE the rest of the output would wait for
                    // a wake-up that never comes: say so.
                    Err(e) if want_writable => refused.push(Error::io("epoll_ctl", e)),
                    Err(_) => {}
                }
            }
        }
        if drained && matches!(self.state, State::Closing) {
            if let Some(sock) = self.sock.as_ref() {
                let _ = sock.shutdown(Shutdown::Write);
            }
            self.state = State::WriteShut;
        }
        let reported = !refused.is_empty();
        for e in refused {
            self.inbound.push(Err(e));
        }
        WriteOutcome { reported, failed }
    }

    /// Ends the stream: deregisters and closes the socket, drops unsent
    /// output, reports an unfinished line; the connection is `Reaping`. The
    /// child (if any) is left to the caller.
    pub(crate) fn end_stream(&mut self, registry: &mio::Registry) {
        if let Some(mut sock) = self.sock.take() {
            let _ = registry.deregister(&mut sock);
        }
        self.out = Vec::new();
        self.out_pos = 0;
        self.out_fds.clear();
        self.inbound.finish();
        self.state = State::Reaping;
    }

    /// A connecting socket became writable (or failed): finish the connect.
    /// Returns false while the connect is still in progress. On failure the
    /// inbox holds the connect error, then `Closed`.
    pub(crate) fn finish_connect(&mut self, registry: &mio::Registry) -> bool {
        let Some(Stream::Tcp(sock)) = self.sock.as_ref() else {
            return true;
        };
        let failure = match sock.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match sock.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return false,
                Err(e) => Some(e),
            },
        };
        match failure {
            None => {
                let _ = sock.set_nodelay(true);
                let authenticate = matches!(self.state, State::Connecting { authenticate: true });
                self.state = if authenticate {
                    State::Authenticating
                } else {
                    State::Open
                };
            }
            Some(e) => {
                if let Some(mut s) = self.sock.take() {
                    let _ = registry.deregister(&mut s);
                }
                self.inbound.push(Err(Error::io("connect", e)));
                self.inbound.push(Err(Error::Closed { status: None }));
                self.state = State::Done;
            }
        }
        true
    }
}

/// A send error that means the peer closed its end (as EOF would).
fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNABORTED)
    )
}

#[cfg(test)]
mod tests {
    //! One connection's I/O over a socketpair: no fork, no reactor.

    use super::*;
    use mio::Interest;
    use serde_json::{json, Value};

    fn pair(opts: &ConnSettings) -> (Conn, Conn) {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        a.set_nonblocking(true).expect("nonblocking");
        b.set_nonblocking(true).expect("nonblocking");
        let conn = |s| {
            let s = Stream::Unix(mio::net::UnixStream::from_std(s));
            Conn::new(s, None, opts, State::Open, false)
        };
        (conn(a), conn(b))
    }

    fn send(c: &mut Conn, v: &Value) -> Result<bool> {
        let mut scratch = Vec::new();
        c.queue(Vec::new(), &mut scratch, true, |f, out, s| {
            f.encode_line(v, out, s)
        })
    }

    fn values(c: &mut Conn) -> Vec<Value> {
        let mut got = Vec::new();
        while let Some(item) = c.inbound.pop() {
            got.push(item.expect("a message").decode(c.format).expect("decodes"));
        }
        got
    }

    #[test]
    fn lines_arrive_in_order_and_a_closing_write_side_ends_the_peer() {
        let poll = mio::Poll::new().expect("poll");
        let (mut a, mut b) = pair(&ConnSettings::default());
        let mut buf = Vec::new();
        for i in 0..3 {
            // The first line is to be written at once (nothing ahead of
            // it); the others queue behind it (it was not written here).
            assert_eq!(send(&mut a, &json!({ "n": i })).expect("queue"), i == 0);
        }
        let done = a.write_out(poll.registry(), Token(1));
        assert!(!done.failed && !done.reported && a.pending_output() == 0);
        let got = b.read_available(&mut buf, ReadUntil::WouldBlock);
        assert!(got.queued && !got.ended);
        assert_eq!(
            values(&mut b),
            [json!({"n": 0}), json!({"n": 1}), json!({"n": 2})]
        );

        // Closing: once the output drained, writing is shut down.
        a.state = State::Closing;
        a.write_out(poll.registry(), Token(1));
        assert!(matches!(a.state, State::WriteShut));
        let got = b.read_available(&mut buf, ReadUntil::WouldBlock);
        assert!(got.ended && !got.queued);
        assert!(matches!(
            send(&mut a, &json!(1)),
            Err(Error::Closed { status: None })
        ));
    }

    #[test]
    fn past_the_high_water_mark_nothing_is_queued() {
        let (mut a, _b) = pair(&ConnSettings {
            high_water: 100,
            ..ConnSettings::default()
        });
        let big = json!("x".repeat(80));
        assert!(send(&mut a, &big).is_ok());
        let before = a.pending_output();
        match send(&mut a, &big) {
            Err(Error::Backpressure { limit: 100, .. }) => {}
            other => panic!("expected Backpressure, got {other:?}"),
        }
        assert_eq!(a.pending_output(), before);
    }

    #[test]
    fn a_short_write_keeps_the_rest_and_finishes_once_the_peer_reads() {
        let poll = mio::Poll::new().expect("poll");
        let (mut a, mut b) = pair(&ConnSettings::default());
        if let Some(s) = a.sock.as_mut() {
            poll.registry()
                .register(s, Token(1), Interest::READABLE)
                .expect("register");
        }
        // 8 MiB is more than a socketpair's buffers hold.
        let line = json!("y".repeat(1 << 20));
        for _ in 0..8 {
            send(&mut a, &line).expect("queue");
        }
        a.write_out(poll.registry(), Token(1));
        assert!(
            a.pending_output() > 0 && a.writable,
            "a short write arms WRITABLE"
        );
        let mut buf = Vec::new();
        let mut received = 0;
        for _ in 0..10_000 {
            b.read_available(&mut buf, ReadUntil::WouldBlock);
            received += values(&mut b).len();
            a.write_out(poll.registry(), Token(1));
            if a.pending_output() == 0 && received == 8 {
                break;
            }
        }
        assert_eq!(received, 8);
        assert!(!a.writable, "a full drain disarms WRITABLE");
    }
}
