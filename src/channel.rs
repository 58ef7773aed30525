//! A work function's end of the connection, in the child: [`Channel`],
//! blocking `recv` and `send` of messages over the worker's socket, and the
//! request→reply loop of [`Reactor::spawn`](crate::Reactor::spawn) and
//! [`Reactor::listen`](crate::Reactor::listen).

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Where [`Channel::read_lines`] hands each line (or a line's error).
pub(crate) type LineSink<'a> = dyn FnMut(std::result::Result<&[u8], Error>) -> io::Result<()> + 'a;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::handshake::{refusal, BAD_TAG};
use crate::auth::noise::NoiseOpener;
use crate::auth::session::{self, Opener, Sealer, Session};
use crate::envelope;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::inbound::{Inbound, Msg};
use crate::shm::SharedMemory;
use crate::sys;

/// A work function's end of the connection, in the child: blocking `recv`
/// and `send` of messages in the worker's format.
///
/// Each `send` is written before it returns (blocking while the socket is
/// full), so a reply never waits behind the work of a later request: a
/// caller with a deadline per request sees each reply as soon as it is
/// made. [`Channel::set_batch_replies`] trades that for throughput.
#[derive(Debug)]
pub struct Channel {
    sock: File,
    /// A Unix socket (descriptors can travel), not TCP.
    unix: bool,
    format: Format,
    inbound: Inbound,
    rbuf: Vec<u8>,
    /// Bytes of the last read (in `rbuf`) not framed yet: complete lines are
    /// decoded straight from here, with no copy into the inbox. Only a read
    /// that brought no descriptors is left here (see [`Channel::fill`]).
    unread: Range<usize>,
    out: Vec<u8>,
    scratch: Vec<u8>,
    eof: bool,
    /// See [`Channel::set_idle_timeout`].
    idle: Option<std::time::Duration>,
    idle_expired: bool,
    /// See [`Channel::set_batch_replies`].
    batch: bool,
    /// After an authenticated handshake: seals each line sent.
    sealer: Option<Box<Sealer>>,
    /// Bytes of `out` already sealed (a line cut short by a panic is not).
    sealed: usize,
    /// After a handshake in mode `noise`: decrypts each read, before framing.
    records: Option<Box<(NoiseOpener, SocketAddr)>>,
    /// Encrypted bytes of one read (mode `noise`; `rbuf` holds the plain ones).
    cipher: Vec<u8>,
}

const CHANNEL_READ: usize = 256 * 1024;
const CHANNEL_READ_MIN: usize = 4096;
const CHANNEL_FLUSH_AT: usize = 64 * 1024;

impl Channel {
    /// A channel over a connected, blocking stream socket (a `UnixStream`,
    /// a `TcpStream`, or its `OwnedFd`).
    pub fn new(sock: impl Into<OwnedFd>, format: Format, max_line: usize) -> Self {
        let sock = File::from(sock.into());
        Channel {
            unix: sys::is_unix_socket(&sock),
            sock,
            format,
            inbound: Inbound::new(max_line),
            rbuf: Vec::new(),
            unread: 0..0,
            out: Vec::new(),
            scratch: Vec::new(),
            eof: false,
            idle: None,
            idle_expired: false,
            batch: false,
            sealer: None,
            sealed: 0,
            records: None,
            cipher: Vec::new(),
        }
    }

    /// Seals and checks every line from now on with an authenticated
    /// handshake's session (a server's child gets it before its work runs).
    pub(crate) fn set_session(&mut self, session: Box<Session>) {
        let Session {
            peer,
            sealer,
            opener,
        } = *session;
        self.sealer = Some(Box::new(sealer));
        match opener {
            Opener::Tags(t) => self.inbound.expect_tags(t, peer),
            Opener::Noise(n) => self.records = Some(Box::new((n, peer))),
        }
    }

    /// The connection's socket (for `poll`).
    pub(crate) fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// A line or record failed its check: the session is over. The peer is
    /// told why with an untagged refusal line (it cannot verify it, and
    /// names it so), and the connection is shut down both ways, so nothing
    /// more is read or sent.
    fn end_session(&mut self) {
        self.eof = true;
        self.out.clear();
        self.sealed = 0;
        let _ = sys::send_nosignal(&self.sock, &refusal(BAD_TAG));
        let _ = sys::shutdown(&self.sock);
    }

    /// Limits how long [`Channel::recv`] waits for a complete line: once
    /// `limit` passes from the moment it starts waiting with no complete
    /// line (bytes without a newline do not count), it shuts the connection
    /// down (the peer reads EOF), fails with [`Error::Timeout`], and reads as
    /// closed (`Ok(None)`) from then on. `None` (the default) or a limit too
    /// long to be a deadline (`Duration::MAX`): no limit. Input already
    /// waiting is never idle; zero acts as 1 ms. Servers set it
    /// from [`ServerOptions::idle_timeout`](crate::ServerOptions::idle_timeout).
    pub fn set_idle_timeout(&mut self, limit: Option<std::time::Duration>) {
        self.idle = limit;
    }

    /// True once the idle limit closed the connection.
    pub fn idle_expired(&self) -> bool {
        self.idle_expired
    }

    /// Batches replies (off by default): while more requests are already
    /// buffered, [`Channel::send`] only queues, and the queue is written
    /// before the next blocking read, when it passes 64 KiB, and when the
    /// work function returns. Fewer, larger writes (pipelined throughput
    /// roughly doubles for tiny messages; see the README's table), but a
    /// finished reply then waits for the requests behind it to be worked
    /// on: a slow request delays the replies before it, and a caller's
    /// deadline may blame the wrong one. Set with
    /// [`WorkerOptions::batch_replies`](crate::WorkerOptions::batch_replies)
    /// or [`ServerOptions::batch_replies`](crate::ServerOptions::batch_replies).
    pub fn set_batch_replies(&mut self, batch: bool) {
        self.batch = batch;
    }

    /// The channel's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The next message; `Ok(None)` once the parent closed its end (or
    /// exited). Per-message errors ([`Error::LineTooLong`],
    /// [`Error::Decode`], [`Error::TruncatedLine`], [`Error::Region`]) fail
    /// that message only; call again for the next. Blocks, after writing any
    /// queued replies; [`Error::Timeout`] once an idle limit
    /// ([`Channel::set_idle_timeout`]) passes. Regions sent with the message are closed; use
    /// [`Channel::recv_regions`] to keep them.
    ///
    /// The line is decoded here, into the `T` asked for: a message that
    /// does not fit `T` fails alone with [`Error::Decode`]
    /// ([`DecodeErrorKind::Mismatch`](crate::DecodeErrorKind::Mismatch)).
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        let format = self.format;
        match self.next_item()? {
            Some(Item::Line(line)) => Msg::decode_line(line, format).map(Some),
            Some(Item::Queued(m)) => m.decode(format).map(Some),
            None => Ok(None),
        }
    }

    /// [`Channel::recv`], with the shared memory regions that came with the
    /// message (mapped read-write, or read-only if sealed against writes).
    pub fn recv_regions<T: DeserializeOwned>(&mut self) -> Result<Option<(T, Vec<SharedMemory>)>> {
        let format = self.format;
        match self.next_item()? {
            // A line read with no descriptors has no regions.
            Some(Item::Line(line)) => Msg::decode_line(line, format).map(|m| Some((m, Vec::new()))),
            Some(Item::Queued(m)) => m.decode_regions(format).map(Some),
            None => Ok(None),
        }
    }

    /// The next line, in stream order: one queued in the inbox, else a
    /// complete line of the last read taken in place (the common case: no
    /// copy, no queueing), else what the framing makes of the rest.
    pub(crate) fn next_item(&mut self) -> Result<Option<Item<'_>>> {
        let idle_until = self.idle.and_then(crate::process::deadline_after);
        loop {
            match self.buffered()? {
                Some(Found::InPlace(r)) => return Ok(Some(Item::Line(&self.rbuf[r]))),
                Some(Found::Queued(m)) => return Ok(Some(Item::Queued(m))),
                None => {}
            }
            if self.eof {
                return Ok(None);
            }
            self.flush()?;
            if let Some(until) = idle_until {
                self.await_input(until)?;
            }
            self.fill()?;
        }
    }

    /// The next line already read, if any, without reading.
    fn buffered(&mut self) -> Result<Option<Found>> {
        loop {
            if let Some(item) = self.inbound.pop() {
                if self.inbound.is_broken() && !self.eof {
                    self.end_session();
                }
                return item.map(|m| Some(Found::Queued(m)));
            }
            if self.unread.is_empty() {
                return Ok(None);
            }
            let start = self.unread.start;
            if let Some(len) = self.inbound.direct_line(&self.rbuf[self.unread.clone()]) {
                self.unread.start += len + 1;
                let line = crate::framing::strip_cr(&self.rbuf[start..start + len]);
                let end = start + line.len();
                return match self.inbound.screen_direct(line) {
                    // The payload is the line's end (a tag is cut off its front).
                    Ok(payload) => Ok(Some(Found::InPlace(end - payload.len()..end))),
                    Err(e) => {
                        self.unread = 0..0;
                        self.end_session();
                        Err(e)
                    }
                };
            }
            // A line split across reads, too long, or after one that
            // was: the framing takes the rest, in order.
            let rest = std::mem::replace(&mut self.unread, 0..0);
            self.inbound.feed(&self.rbuf[rest]);
        }
    }

    /// Waits until the socket is readable or `until` passes; then the
    /// connection is idle: shut it down and fail with [`Error::Timeout`].
    /// It polls before it looks at the deadline, so input already waiting
    /// is never idle, even with a zero limit (which so waits the 1 ms
    /// `poll_readable` always gives, as the exec path's receive timeout).
    fn await_input(&mut self, until: std::time::Instant) -> Result<()> {
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match sys::poll_readable(&self.sock, left) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("poll", e)),
            }
            if std::time::Instant::now() >= until {
                self.idle_expired = true;
                self.eof = true;
                // Shut down, not just closed by our exit: the work function
                // may go on, and the peer must learn now. (shutdown(2) is
                // the same call for a Unix socket as for TCP.)
                let _ = sys::shutdown(&self.sock);
                return Err(Error::Timeout);
            }
        }
    }

    /// Sends `msg` as one line, written before this returns (blocking while
    /// the socket is full), unless replies are batched
    /// ([`Channel::set_batch_replies`]).
    pub fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<()> {
        self.send_with(|format, out, scratch| format.encode_line(msg, out, scratch))
    }

    /// Sends one line that `encode` appends to the output (with its
    /// `\n`), as [`Channel::send`] sends a message; on an error nothing of
    /// it stays queued.
    pub(crate) fn send_with<E>(&mut self, encode: E) -> Result<()>
    where
        E: FnOnce(Format, &mut Vec<u8>, &mut Vec<u8>) -> Result<()>,
    {
        let format = self.format;
        self.sealed_line(|out, scratch| encode(format, out, scratch))?;
        if !self.batch || !self.request_buffered() || self.out.len() >= CHANNEL_FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// The longest line this channel reads (and a peer of the same
    /// settings reads from it).
    pub fn max_line(&self) -> usize {
        self.inbound.lines.max_line()
    }

    /// Appends one line made by `encode` to the output, sealed when the
    /// connection is authenticated.
    fn sealed_line(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let Some(sealer) = self.sealer.as_mut() else {
            let before = self.out.len();
            let encoded = encode(&mut self.out, &mut self.scratch);
            if encoded.is_err() {
                // Nothing of a line that failed stays queued.
                self.out.truncate(before);
            }
            return encoded;
        };
        let mark = sealer.begin(&mut self.out);
        if let Err(e) = encode(&mut self.out, &mut self.scratch) {
            Sealer::abandon(&mut self.out, mark);
            return Err(e);
        }
        sealer.seal(&mut self.out, mark, &mut self.scratch);
        self.sealed = self.out.len();
        Ok(())
    }

    /// Sends one line as it is (`payload` without its `\n`), sealed when
    /// the connection is authenticated, at once: the exec relay's output.
    pub(crate) fn send_line(&mut self, payload: &[u8]) -> Result<()> {
        self.sealed_line(|out, _| {
            out.extend_from_slice(payload);
            out.push(b'\n');
            Ok(())
        })?;
        self.flush()
    }

    /// One read (it blocks unless the socket is readable: `poll` first),
    /// then every complete line it brought, checked, to `sink` as it is (no
    /// decoding): the exec relay's input. A line too long for the limit
    /// goes to `sink` as its error (the caller answers it), unless it ended
    /// the session (tagged lines lose their sequence with it): then it is
    /// returned. `Ok(false)` once the peer closed (or the session ended on
    /// a line that did not verify: its error is returned).
    pub(crate) fn read_lines(&mut self, sink: &mut LineSink<'_>) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.fill()?;
        loop {
            let wrote = match self.buffered() {
                Ok(Some(Found::InPlace(r))) => sink(Ok(&self.rbuf[r])),
                Ok(Some(Found::Queued(m))) => sink(Ok(&m.into_line())),
                Ok(None) => return Ok(!self.eof),
                Err(e @ Error::LineTooLong { .. }) if !self.inbound.is_broken() => sink(Err(e)),
                Err(e) => return Err(e),
            };
            wrote.map_err(|e| Error::io("write", e))?;
        }
    }

    /// Sends `msg` with shared memory regions, at once (the wire form is
    /// described at [`Reactor::send_regions`](crate::Reactor::send_regions)).
    /// Fails with [`Error::Region`], sending nothing, over TCP. With no
    /// regions this is [`Channel::send`]: the plain message, no envelope.
    pub fn send_regions<T: Serialize + ?Sized>(
        &mut self,
        msg: &T,
        regions: &[&SharedMemory],
    ) -> Result<()> {
        if regions.is_empty() {
            return self.send(msg);
        }
        envelope::check_regions(regions, !self.unix)?;
        // Queued replies go first, so the sendmsg below carries the envelope
        // line and nothing else (the wire contract in inbound.rs).
        self.flush()?;
        envelope::encode_envelope_line(
            self.format,
            regions,
            msg,
            &mut self.out,
            &mut self.scratch,
        )?;
        let fd = self.sock.as_fd();
        let first = loop {
            match sys::send_with_fds(fd, &self.out, regions) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.out.clear();
                    return Err(Error::io("sendmsg", e));
                }
            }
        };
        self.out.drain(..first);
        self.flush()
    }

    /// Sends an error reply (see [`worker`](crate::worker#errors-from-a-worker))
    /// in place of a reply, at once: `kind` says what failed, `message`
    /// why. The caller's `recv` returns it as [`Error::Remote`]. Output
    /// left half-written by a panic (a line without its newline) is
    /// dropped first, so the error reply starts a line.
    pub fn send_error(&mut self, kind: &str, message: &str) -> Result<()> {
        let keep = if self.sealer.is_some() {
            self.sealed.min(self.out.len())
        } else {
            memchr::memrchr(b'\n', &self.out).map_or(0, |nl| nl + 1)
        };
        self.out.truncate(keep);
        let format = self.format;
        self.sealed_line(|out, scratch| {
            crate::remote_error::encode_line(format, kind, message, out, scratch)
        })?;
        self.flush()
    }

    /// Whether a complete request is already buffered (so a batched reply
    /// may wait for it).
    fn request_buffered(&self) -> bool {
        !self.inbound.inbox.is_empty()
            || memchr::memchr(b'\n', &self.rbuf[self.unread.clone()]).is_some()
    }

    /// Writes every queued reply.
    pub fn flush(&mut self) -> Result<()> {
        let mut done = 0;
        let fd = self.sock.as_fd();
        while done < self.out.len() {
            match sys::send_nosignal(fd, &self.out[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.out.clear();
                    self.sealed = 0;
                    return Err(Error::io("send", e));
                }
            }
        }
        self.out.clear();
        self.sealed = 0;
        if self.out.capacity() > CHANNEL_FLUSH_AT * 4 {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// One read. Called only once `unread` is empty (it reuses `rbuf`).
    fn fill(&mut self) -> Result<()> {
        debug_assert!(self.unread.is_empty());
        // Start small (a child that only ever sees small messages touches
        // one page for it) and double while reads fill the buffer.
        if self.rbuf.is_empty() {
            self.rbuf.resize(CHANNEL_READ_MIN, 0);
        }
        if self.records.is_some() {
            return self.fill_decrypted();
        }
        let mut got = sys::Received::default();
        let n = loop {
            let r = if self.unix {
                sys::recv_with_fds(&self.sock, &mut self.rbuf, &mut got)
            } else {
                self.sock.read(&mut self.rbuf)
            };
            match r {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break 0,
                Err(e) => return Err(Error::io("read", e)),
            }
        };
        if n == 0 {
            self.eof = true;
            self.inbound.finish();
            return Ok(());
        }
        if got.fds.is_empty() && !got.truncated {
            // Framed lazily by `next_item`, straight from `rbuf`.
            self.unread = 0..n;
        } else {
            self.inbound.feed_received(&self.rbuf[..n], &mut got);
        }
        if n == self.rbuf.len() && n < CHANNEL_READ {
            self.rbuf.resize(n * 2, 0);
        }
        Ok(())
    }
}

impl Channel {
    /// One read of an encrypted connection: its records decrypted into
    /// `rbuf`, left for `next_item` to frame. A record that does not
    /// decrypt ends the session with [`Error::Auth`].
    fn fill_decrypted(&mut self) -> Result<()> {
        if self.cipher.len() < CHANNEL_READ {
            self.cipher.resize(CHANNEL_READ, 0);
        }
        let n = loop {
            match self.sock.read(&mut self.cipher) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break 0,
                Err(e) => return Err(Error::io("read", e)),
            }
        };
        if n == 0 {
            self.eof = true;
            self.inbound.finish();
            return Ok(());
        }
        let Some((opener, peer)) = self.records.as_deref_mut() else {
            return Ok(());
        };
        let mut plain = std::mem::take(&mut self.rbuf);
        plain.clear();
        let opened = opener.open(&self.cipher[..n], |p| plain.extend_from_slice(p));
        self.unread = 0..plain.len();
        self.rbuf = plain;
        if let Err(why) = opened {
            let e = session::integrity_error(*peer, why);
            // Lines before the bad record were genuine: they are served
            // first; then the error ends the session.
            let rest = std::mem::replace(&mut self.unread, 0..0);
            self.inbound.feed(&self.rbuf[rest]);
            self.inbound.break_with(e);
        }
        Ok(())
    }
}

/// Where [`Channel::buffered`] found the next line.
enum Found {
    /// In the read buffer, in place.
    InPlace(Range<usize>),
    /// In the inbox.
    Queued(Msg),
}

/// What [`Channel::next_item`] found.
pub(crate) enum Item<'a> {
    /// A line taken in place from the read buffer (no descriptors came
    /// with its read).
    Line(&'a [u8]),
    /// An item of the inbox.
    Queued(Msg),
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
