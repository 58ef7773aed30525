//! A connection's read path: reading what one readiness event (or a
//! caller) finds waiting, as far as [`ReadUntil`] says, into the inbox, and
//! the interest the socket is registered with so that events say what a
//! short read cannot (urgent marks, hang-ups, errors).

use std::io;

use mio::Interest;

use super::{Conn, READ_CHUNK};
use crate::sys;

/// What one [`Conn::read_available`] did.
#[derive(Debug, Default)]
pub(crate) struct ReadOutcome {
    /// Events were added to the inbox.
    pub(crate) queued: bool,
    /// EOF or a reset: the connection ended.
    pub(crate) ended: bool,
}

/// When [`Conn::read_available`] takes the socket as drained.
///
/// The reactor's sockets are edge-triggered: an event comes when bytes
/// arrive, the peer hangs up, an urgent mark (`MSG_OOB`) arrives, or an error
/// happens, and not again until one of those happens anew. A read returns
/// everything queued up to the size of the buffer, except in three cases:
/// `recvmsg` on a Unix stream stops right after a segment that carried
/// descriptors; a read stops at an urgent mark (Unix stream and TCP alike);
/// and one stops at the buffer's end. After an event that reported only
/// new bytes, a read that brought no descriptors and left room in the
/// buffer therefore took everything (bytes arriving meanwhile bring an
/// event of their own), and a further read would only return `WouldBlock`:
/// one system call per readable event instead of two, about a fifth of
/// the system calls of a local round trip. An event that also reported an
/// urgent mark (`EPOLLPRI`: the connections register for it), a hang-up
/// or an error is read to `WouldBlock`, as is every read not caused by an
/// event (reading resumed after a pause, a failed write, a child's exit,
/// a handshake's end), since no event vouches for what is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadUntil {
    /// Until a read returns `WouldBlock` (or EOF).
    WouldBlock,
    /// After an event that reported only new bytes: until a read that
    /// brought no descriptors leaves room in the buffer.
    ShortRead,
}

/// The interest a connection's socket is registered with: readable and
/// urgent marks (see [`ReadUntil`]), and writable while output waits.
pub(crate) fn interest(writable: bool) -> Interest {
    let base = Interest::READABLE | Interest::PRIORITY;
    if writable {
        base | Interest::WRITABLE
    } else {
        base
    }
}

impl Conn {
    /// Reads what is waiting (or until reading pauses at `max_queued`),
    /// feeding the inbox. `buf` is the reactor's shared read buffer; `until`
    /// says when the socket counts as drained (see [`ReadUntil`]).
    pub(crate) fn read_available(&mut self, buf: &mut Vec<u8>, until: ReadUntil) -> ReadOutcome {
        if buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
        let before = self.inbound.inbox.len();
        let mut ended = false;
        let mut got = sys::Received::default();
        while let Some(sock) = self.sock.as_mut() {
            match sock.read(buf, &mut got) {
                Ok(0) => {
                    self.end_of_records();
                    ended = true;
                    break;
                }
                Ok(n) => {
                    // A segment with descriptors ends a read early, so bytes
                    // may follow it in the socket.
                    let with_fds = !got.fds.is_empty() || got.truncated;
                    self.feed_read(&buf[..n], &mut got);
                    if self.inbound.is_broken() {
                        // A line or record that does not verify: nothing
                        // after it can be trusted, so the connection ends.
                        ended = true;
                        break;
                    }
                    if self.inbound.queued_bytes >= self.max_queued {
                        // A worker that sends faster than it is read: stop
                        // reading (its socket fills and it blocks) until
                        // the consumer takes half of what is queued.
                        self.read_paused = true;
                        break;
                    }
                    if until == ReadUntil::ShortRead && n < buf.len() && !with_fds {
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
        ReadOutcome {
            queued: self.inbound.inbox.len() > before,
            ended,
        }
    }
}
