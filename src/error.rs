//! The one error type of the crate.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::process::ExitStatus;

use crate::format_kind::Format;
use crate::process::describe;

/// Every failure miniray reports.
///
/// Per-message errors ([`Error::LineTooLong`], [`Error::TruncatedLine`],
/// [`Error::Decode`], [`Error::Region`], [`Error::Remote`]; see
/// [`Error::is_message_error`]) fail one message only: read on after them. (After a `TruncatedLine` the
/// peer has hung up, so what follows is the end of its messages.)
/// [`Error::Closed`] is the last thing a worker ever reports.
#[non_exhaustive]
pub enum Error {
    /// A system call failed. `op` names it (`"fork"`, `"send"`, `"epoll_wait"`, ...).
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A line longer than the limit arrived. Its bytes were dropped up to and
    /// including the next newline; framing resumes after it.
    LineTooLong {
        /// The limit in force, in bytes, not counting the `\n`.
        limit: usize,
        /// The line's first bytes (at most
        /// [`LINE_START`](crate::framing::LINE_START)): whose line it was (a
        /// frame's header names its request).
        start: Vec<u8>,
    },
    /// The peer closed the connection in the middle of a line. The partial
    /// line (`len` bytes) was never decoded.
    TruncatedLine {
        /// Bytes of the unfinished line.
        len: usize,
    },
    /// A complete line could not be decoded.
    Decode(DecodeError),
    /// A value could not be encoded in the worker's format.
    Encode {
        /// The format that refused.
        format: Format,
        /// Why (names the Python type that has no form in this format, or
        /// repeats the message of a failing `Serialize` impl).
        reason: String,
    },
    /// The worker's process exited while its connection stays open (a
    /// descendant, say a background job of an exec worker, still holds the
    /// socket). Queued when the exit is seen, after the messages read
    /// before it; the connection still delivers what the descendant sends
    /// (and takes what is sent to it) until EOF, then [`Error::Closed`]
    /// follows with the same status. A worker whose socket closes with its
    /// exit never reports this.
    Exited {
        /// How the process ended (`None` when someone else reaped it).
        status: Option<ExitStatus>,
    },
    /// The worker is closed. `status` is its exit status once it was reaped
    /// (`None` when it was reaped by someone else or is not a local process).
    Closed {
        /// How the process ended, when known.
        status: Option<ExitStatus>,
    },
    /// The worker's output buffer holds `buffered` bytes; one more message of
    /// `needed` bytes would pass the high-water mark `limit`. Nothing was queued.
    Backpressure {
        /// Bytes already waiting to be written.
        buffered: usize,
        /// Bytes of the refused line.
        needed: usize,
        /// The high-water mark.
        limit: usize,
    },
    /// A shared memory region could not be created, sent, received or opened
    /// (for example: sent over TCP, descriptors dropped by the kernel with
    /// `MSG_CTRUNC`, a region not sealed against shrinking). Any descriptors
    /// that did arrive were closed.
    Region {
        /// What was wrong.
        reason: &'static str,
    },
    /// The worker reported that this request failed, in place of its reply
    /// (the wire form is an error reply line: see
    /// [`worker`](crate::worker#errors-from-a-worker)): its closure
    /// panicked (`kind` `"panic"`, then the worker exits and
    /// [`Error::Closed`] follows), its work function returned an error
    /// (`"error"`), or the request could not be decoded into the type it
    /// takes (`"decode"`, `"line too long"`, `"region"`; the worker goes on
    /// serving). A Python peer may send its own kinds.
    Remote {
        /// What failed, in one word or two.
        kind: String,
        /// Why, as the worker put it (a panic's message and where it was).
        message: String,
    },
    /// The handle names no worker of this reactor (never spawned here, or its
    /// `Closed` event was already returned).
    UnknownWorker,
    /// The handle names no server of this reactor (never started here, or
    /// already stopped).
    UnknownServer,
    /// The deadline passed with nothing to return.
    Timeout,
    /// A descriptor given to [`WorkerOptions::keep_fd`](crate::WorkerOptions::keep_fd)
    /// is negative, or not open in the parent when the worker is spawned.
    /// Checked before anything is forked: no child was created.
    BadDescriptor {
        /// The descriptor number as given.
        fd: i32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Authentication with a TCP peer failed, or a line after it did not
    /// verify (see [`Secret`](crate::Secret)). A connection that reports
    /// it is closed: [`Error::Closed`] follows.
    Auth {
        /// The peer: the server for a client, the client for a server.
        addr: SocketAddr,
        /// What went wrong.
        reason: AuthFailure,
    },
    /// A secret that cannot be used: too short (or empty), or kept in a
    /// file that group or others may read.
    Secret {
        /// Where it came from: `$MINIRAY_SECRET`, `secret file PATH`, ...
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An exec worker's program could not be executed: `execvp` failed in
    /// the child, which reported the error through a close-on-exec pipe and
    /// was reaped before the spawn returned. No worker was created.
    Exec {
        /// The program, as given to [`Exec::new`](crate::Exec::new).
        program: String,
        /// The OS error of `execvp` (`ENOENT`, `EACCES`, ...).
        source: io::Error,
    },
    /// A setting is out of its bounds (a [`PoolOptions`](crate::PoolOptions)
    /// value, say): nothing was made.
    InvalidOption {
        /// The setting, by its method's name (`"chunk_size"`).
        option: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// The pool was closed (or terminated): it takes no more tasks.
    PoolClosed,
}

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        Error::Io { op, source }
    }

    /// True for [`Error::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed { .. })
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }

    /// True for errors that fail a single message: [`Error::LineTooLong`],
    /// [`Error::TruncatedLine`], [`Error::Decode`], [`Error::Region`],
    /// [`Error::Remote`]. Read
    /// on after one; a [`Error::TruncatedLine`] is followed by
    /// [`Error::Closed`] (or end of stream), since the peer hung up.
    pub fn is_message_error(&self) -> bool {
        matches!(
            self,
            Error::LineTooLong { .. }
                | Error::TruncatedLine { .. }
                | Error::Decode(_)
                | Error::Region { .. }
                | Error::Remote { .. }
        )
    }

    /// True for [`Error::Auth`].
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Auth { .. })
    }

    /// [`Error::Region`] with `reason`.
    pub(crate) fn region(reason: &'static str) -> Self {
        Error::Region { reason }
    }
}

/// Derived-style, except that an exit status is written in words
/// (`Closed { status: exited with 101 (panicked) }`) rather than as std's
/// `unix_wait_status(25856)`, since `{:?}` is what most logs and panics show.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidOption { option, reason } => f
                .debug_struct("InvalidOption")
                .field("option", option)
                .field("reason", reason)
                .finish(),
            Error::PoolClosed => f.write_str("PoolClosed"),
            Error::Io { op, source } => f
                .debug_struct("Io")
                .field("op", op)
                .field("source", source)
                .finish(),
            Error::LineTooLong { limit, start } => f
                .debug_struct("LineTooLong")
                .field("limit", limit)
                .field("start", &String::from_utf8_lossy(start))
                .finish(),
            Error::TruncatedLine { len } => {
                f.debug_struct("TruncatedLine").field("len", len).finish()
            }
            Error::Decode(e) => f.debug_tuple("Decode").field(e).finish(),
            Error::Encode { format, reason } => f
                .debug_struct("Encode")
                .field("format", format)
                .field("reason", reason)
                .finish(),
            Error::Exited { status } => f
                .debug_struct("Exited")
                .field("status", &format_args!("{}", describe(*status)))
                .finish(),
            Error::Closed { status } => f
                .debug_struct("Closed")
                .field("status", &format_args!("{}", describe(*status)))
                .finish(),
            Error::Backpressure {
                buffered,
                needed,
                limit,
            } => f
                .debug_struct("Backpressure")
                .field("buffered", buffered)
                .field("needed", needed)
                .field("limit", limit)
                .finish(),
            Error::Region { reason } => f.debug_struct("Region").field("reason", reason).finish(),
            Error::Remote { kind, message } => f
                .debug_struct("Remote")
                .field("kind", kind)
                .field("message", message)
                .finish(),
            Error::UnknownWorker => f.write_str("UnknownWorker"),
            Error::UnknownServer => f.write_str("UnknownServer"),
            Error::Timeout => f.write_str("Timeout"),
            Error::BadDescriptor { fd, reason } => f
                .debug_struct("BadDescriptor")
                .field("fd", fd)
                .field("reason", reason)
                .finish(),
            Error::Auth { addr, reason } => f
                .debug_struct("Auth")
                .field("addr", addr)
                .field("reason", reason)
                .finish(),
            Error::Secret { origin, reason } => f
                .debug_struct("Secret")
                .field("origin", origin)
                .field("reason", reason)
                .finish(),
            Error::Exec { program, source } => f
                .debug_struct("Exec")
                .field("program", program)
                .field("source", source)
                .finish(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidOption { option, reason } => write!(f, "option {option}: {reason}"),
            Error::PoolClosed => f.write_str("the pool is closed: it takes no more tasks"),
            Error::Io { op, source } => write!(f, "{op} failed: {source}"),
            Error::LineTooLong { limit, start } => write!(
                f,
                "line longer than the {limit}-byte limit was discarded (it began {})",
                crate::frame::quote(start)
            ),
            Error::TruncatedLine { len } => {
                write!(f, "connection closed in the middle of a {len}-byte line")
            }
            Error::Decode(e) => e.fmt(f),
            Error::Encode { format, reason } => write!(f, "cannot encode as {format}: {reason}"),
            Error::Exited { status } => write!(
                f,
                "worker process ended: {}; its connection is still open",
                describe(*status)
            ),
            Error::Closed { status } => write!(f, "worker closed: {}", describe(*status)),
            Error::Backpressure {
                buffered,
                needed,
                limit,
            } => write!(
                f,
                "output buffer full: {buffered} bytes queued, {needed} more would pass the {limit}-byte high-water mark"
            ),
            Error::Region { reason } => write!(f, "shared memory region: {reason}"),
            Error::Remote { kind, message } => write!(f, "worker reported {kind}: {message}"),
            Error::UnknownWorker => f.write_str("no such worker in this reactor"),
            Error::UnknownServer => f.write_str("no such server in this reactor"),
            Error::Timeout => f.write_str("timed out"),
            Error::BadDescriptor { fd, reason } => {
                write!(f, "descriptor {fd} given to keep_fd {reason}")
            }
            Error::Auth { addr, reason } => {
                write!(f, "authentication with {addr} failed: {reason}")
            }
            Error::Secret { origin, reason } => {
                write!(f, "{origin} cannot be used as a secret: {reason}")
            }
            Error::Exec { program, source } => write!(f, "cannot execute {program}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Exec { source, .. } => Some(source),
            Error::Decode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Decode(e)
    }
}

/// Why authentication with a TCP peer failed ([`Error::Auth`]).
///
/// The first five are settings that differ between the two ends: trying
/// the same host again fails the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The server refused our proof: it holds another secret.
    WrongSecret,
    /// The server sent an authentication challenge, and no secret is
    /// configured here.
    SecretRequired,
    /// A secret is configured, and the server sent no authentication
    /// challenge: it runs without a secret (or is no miniray server).
    NoChallenge,
    /// The server could not prove that it holds the secret: an impostor
    /// (a relay in the host list, say) answered.
    ServerUnproven,
    /// The server requires encryption, and this client did not ask for it.
    EncryptionRequired,
    /// A line (or encrypted record) received after the handshake does not
    /// verify: forged, injected, altered, replayed or reordered on the way.
    /// The words say which one and how.
    Integrity(String),
    /// The server refused for another reason (its word), or closed the
    /// connection during the handshake.
    Refused(String),
    /// A handshake line is not what the protocol says (`PROTOCOL.md`
    /// section 4).
    Protocol(String),
}

impl AuthFailure {
    /// True for the failures that come from the two ends' settings
    /// ([`AuthFailure::WrongSecret`], [`AuthFailure::SecretRequired`],
    /// [`AuthFailure::NoChallenge`], [`AuthFailure::ServerUnproven`],
    /// [`AuthFailure::EncryptionRequired`]): trying the same host again
    /// fails the same way until someone changes them.
    pub fn is_setting(&self) -> bool {
        matches!(
            self,
            AuthFailure::WrongSecret
                | AuthFailure::SecretRequired
                | AuthFailure::NoChallenge
                | AuthFailure::ServerUnproven
                | AuthFailure::EncryptionRequired
        )
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthFailure::WrongSecret => {
                f.write_str("wrong secret: the server holds a different one")
            }
            AuthFailure::SecretRequired => f.write_str(
                "the server requires a secret, and none is configured here",
            ),
            AuthFailure::NoChallenge => f.write_str(
                "a secret is configured, but the server sent no authentication challenge (does it run without a secret?)",
            ),
            AuthFailure::ServerUnproven => f.write_str(
                "the server could not prove that it holds the secret (an impostor answered)",
            ),
            AuthFailure::EncryptionRequired => {
                f.write_str("the server requires encryption, and it was not asked for")
            }
            AuthFailure::Integrity(why) => write!(f, "integrity: {why}"),
            AuthFailure::Refused(why) => write!(f, "the server refused: {why}"),
            AuthFailure::Protocol(why) => write!(f, "handshake protocol: {why}"),
        }
    }
}

/// A line that could not be decoded: which format, where, and what was met.
#[derive(Debug)]
pub struct DecodeError {
    /// The format of the line.
    pub format: Format,
    /// Byte offset of the problem: in the line for JSON and base64, in the
    /// base64-decoded bytes for marshal.
    pub position: usize,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

/// What made a line undecodable.
#[derive(Debug)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The marshal line is not standard padded base64.
    Base64,
    /// The marshal data ended inside a value.
    UnexpectedEnd,
    /// A marshal type code that does not exist.
    UnknownCode(u8),
    /// A Python type miniray's values do not model (marshal: `"code"`,
    /// `"Ellipsis"`, `"StopIteration"`, the text floats of marshal before
    /// version 2), named.
    Unsupported(&'static str),
    /// A str holding a lone surrogate, decoded into a type other than
    /// [`Value`](crate::Value) (only `Value` holds one).
    LoneSurrogate,
    /// A str whose bytes are not UTF-8.
    InvalidUtf8,
    /// A back-reference to a slot that does not exist.
    BadReference(u32),
    /// A back-reference to a container that is not finished (a cycle).
    UnfinishedReference(u32),
    /// Bytes left after the value.
    TrailingBytes,
    /// Nesting deeper than the limit.
    TooDeep(usize),
    /// The line is not in the connection's format but looks like the
    /// other one (base64 on a JSON connection, JSON on a marshal one): the
    /// two ends disagree on the format.
    WrongFormat {
        /// The format the line looks like.
        looks_like: Format,
    },
    /// A dict key or set member that is or holds (in a tuple or frozenset,
    /// at any depth) a list, dict or set, which `marshal.loads` refuses
    /// too (`TypeError: unhashable type: 'list'`); the position is that
    /// container's.
    Unhashable {
        /// `"dict key"` or `"set member"`.
        what: &'static str,
        /// `"list"`, `"dict"` or `"set"`.
        kind: &'static str,
    },
    /// JSON syntax the Python `json` module would refuse too (jiter's
    /// message: an unexpected character, an unterminated string, ...).
    Syntax(String),
    /// The line is well formed, but its value does not fit the type asked
    /// for (serde's message, e.g. ``invalid type: string "x", expected u32``).
    Mismatch(String),
    /// The decoded value would take more than `limit` bytes of memory: the
    /// bound a marshal line of this length may expand to (back-references
    /// repeat what they point at).
    TooLarge {
        /// The bound, in bytes, for this input.
        limit: usize,
    },
    /// An integer past 4300 decimal digits (CPython's limit), or past 128
    /// bits where the type asked for is a Rust integer.
    IntTooLarge,
    /// A marshal long digit outside base 2^15, or a zero top digit.
    BadLongDigit,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} decode error at byte {}: ",
            self.format, self.position
        )?;
        match &self.kind {
            DecodeErrorKind::Base64 => f.write_str("invalid base64"),
            DecodeErrorKind::UnexpectedEnd => f.write_str("data ends inside a value"),
            DecodeErrorKind::UnknownCode(c) => write!(f, "unknown type code {c:#04x}"),
            DecodeErrorKind::Unsupported(t) => write!(f, "Python {t} is not supported"),
            DecodeErrorKind::LoneSurrogate => {
                f.write_str("str holds a lone surrogate, which only miniray::Value can hold")
            }
            DecodeErrorKind::InvalidUtf8 => f.write_str("str is not valid UTF-8"),
            DecodeErrorKind::BadReference(i) => write!(f, "reference to missing slot {i}"),
            DecodeErrorKind::UnfinishedReference(i) => {
                write!(f, "reference to unfinished container in slot {i}")
            }
            DecodeErrorKind::TrailingBytes => f.write_str("trailing bytes after the value"),
            DecodeErrorKind::Syntax(m) => write!(f, "{m}"),
            DecodeErrorKind::Unhashable { what, kind } => {
                write!(f, "unhashable type: '{kind}' in a {what}")
            }
            DecodeErrorKind::WrongFormat { looks_like } => write!(
                f,
                "the line looks like {looks_like}, not {}: do both ends use the same format?",
                self.format
            ),
            DecodeErrorKind::Mismatch(m) => write!(f, "{m}"),
            DecodeErrorKind::TooDeep(d) => write!(f, "nesting deeper than {d}"),
            DecodeErrorKind::TooLarge { limit } => {
                write!(f, "decoded value would take more than {limit} bytes")
            }
            DecodeErrorKind::IntTooLarge => f.write_str(
                "integer too large: past 4300 digits (CPython's limit), or past 128 bits where a Rust integer was asked for (decode into miniray::Value)",
            ),
            DecodeErrorKind::BadLongDigit => f.write_str("long digit out of range"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_and_keeps_source() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        let e = Error::io("fork", io::Error::from_raw_os_error(libc::EAGAIN));
        assert!(e.to_string().starts_with("fork failed"));
        let src = std::error::Error::source(&e).expect("source kept");
        let io = src.downcast_ref::<io::Error>().expect("io error");
        assert_eq!(io.raw_os_error(), Some(libc::EAGAIN));
    }

    #[test]
    fn message_errors_are_exactly_the_documented_ones() {
        // The type's docs and `Channel::recv` list these as failing one
        // message only; callers skip them and read on.
        let per_message = [
            Error::LineTooLong {
                limit: 16,
                start: b"#q1 ".to_vec(),
            },
            Error::TruncatedLine { len: 3 },
            Error::Decode(
                Format::Json
                    .decode::<crate::Value>(b"[")
                    .expect_err("bad json"),
            ),
            Error::Region { reason: "test" },
        ];
        for e in &per_message {
            assert!(e.is_message_error(), "{e:?} should fail one message only");
        }
        let ending = [
            Error::Closed { status: None },
            Error::Exited { status: None },
            Error::Timeout,
            Error::UnknownWorker,
            Error::io("recv", io::Error::from_raw_os_error(libc::ECONNRESET)),
        ];
        for e in &ending {
            assert!(!e.is_message_error(), "{e:?} is no per-message error");
        }
    }
}
