//! Frames: the lines two miniray peers exchange once both speak them.
//!
//! A plain peer (the original Python library, any program that reads and
//! writes lines) answers the n-th request line with its n-th line, so a
//! reply is matched to its request by position. One extra line (a stray
//! `print`) moves every later reply onto the wrong request. Where both ends
//! are miniray's (a pool's own workers, a [`Reactor::listen`](crate::Reactor::listen) server, the
//! Python worker helper in `python/miniray_worker.py`), each line carries
//! the id of its request and a kind, outside the message:
//!
//! ```text
//! #q17 {"n": 5}                 request 17, its message in the connection's format
//! #r17 10                       the reply to request 17
//! #c18 [1, 2, 3]                chunk 18: a list of requests, answered by one line
//! #k18 [[2, 4], [[2, "ValueError", "bad"]], 5100]
//!                               its reply: the replies of the items that succeeded,
//!                               the failed ones as [index, kind, message], the
//!                               worker's nanoseconds on the chunk
//! #e19 ["decode", "expected int at byte 0"]
//!                               request 19 failed as a whole: [kind, message]
//!                               (a third string, a traceback, may follow)
//! #h0 miniray/1                 hello: "I speak frames"
//! #a0 miniray/1                 accept: "so do I"
//! ```
//!
//! A frame starts with `#`, which neither a JSON text nor base64 ever
//! starts with, so a frame is never taken for a plain line or the other way
//! round. Then one byte names the kind, then the id in decimal (at most 20
//! digits, at most `u64::MAX`, no sign, no leading zero but for `0`
//! itself), one space, and the payload: a message in the connection's
//! format (JSON text, or base64 marshal), except for hello and accept,
//! whose payload is the protocol name [`PROTOCOL`] as it stands.
//!
//! `PROTOCOL.md` at the crate's root states the whole protocol for peers
//! written in other languages: when each side speaks frames, and what a
//! peer does with a frame it did not expect.

use std::fmt;

/// The protocol name hello and accept carry.
pub const PROTOCOL: &str = "miniray/1";

/// The hello line (without its `\n`): sent first by a peer that wants
/// frames (a TCP client), or written unasked by an exec program that speaks
/// them when it finds `MINIRAY_FRAMES=1` in its environment.
pub const HELLO: &[u8] = b"#h0 miniray/1";

/// The accept line (without its `\n`): the answer to [`HELLO`] of a peer
/// that speaks frames.
pub const ACCEPT: &[u8] = b"#a0 miniray/1";

/// The environment variable a pool sets for its exec workers: a program
/// that speaks frames and finds it set to `1` writes [`ACCEPT`] as its
/// first line, and the pool then frames its requests.
pub const FRAMES_ENV: &str = "MINIRAY_FRAMES";

/// The longest header: `#`, the kind, 20 digits, the space.
pub const MAX_HEADER: usize = 23;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// `q`: one request.
    Request,
    /// `r`: the reply to one request.
    Reply,
    /// `c`: a chunk, a list of requests answered by one line.
    Chunk,
    /// `k`: the reply to a chunk.
    ChunkReply,
    /// `e`: the request (or chunk) failed as a whole.
    Error,
    /// `h`: hello, "I speak frames".
    Hello,
    /// `a`: accept, the answer to a hello.
    Accept,
}

impl Kind {
    /// The kind's byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Kind::Request => b'q',
            Kind::Reply => b'r',
            Kind::Chunk => b'c',
            Kind::ChunkReply => b'k',
            Kind::Error => b'e',
            Kind::Hello => b'h',
            Kind::Accept => b'a',
        }
    }

    /// The kind a byte names, if any.
    pub fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            b'q' => Kind::Request,
            b'r' => Kind::Reply,
            b'c' => Kind::Chunk,
            b'k' => Kind::ChunkReply,
            b'e' => Kind::Error,
            b'h' => Kind::Hello,
            b'a' => Kind::Accept,
            _ => return None,
        })
    }

    /// True for the kinds a worker sends in answer to a request.
    pub fn is_answer(self) -> bool {
        matches!(self, Kind::Reply | Kind::ChunkReply | Kind::Error)
    }
}

/// A frame's kind and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the frame is.
    pub kind: Kind,
    /// The request it is or answers (0 for hello and accept).
    pub id: u64,
}

/// A line that starts as a frame (`#`) but is not one: the reason, and the
/// line's first bytes for the person reading the error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    reason: &'static str,
    head: String,
}

impl FrameError {
    fn new(reason: &'static str, line: &[u8]) -> Self {
        FrameError {
            reason,
            head: quote(line),
        }
    }

    /// Why the line is no frame.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad frame ({}): {}", self.reason, self.head)
    }
}

impl std::error::Error for FrameError {}

/// How many bytes of a line an error quotes.
pub const QUOTE_BYTES: usize = 200;

/// The first [`QUOTE_BYTES`] bytes of `line` as text a person can read (bytes
/// that are not UTF-8 replaced, `…` when cut), for errors that show what a
/// peer sent.
pub fn quote(line: &[u8]) -> String {
    let cut = line.len() > QUOTE_BYTES;
    let mut s = String::from_utf8_lossy(&line[..line.len().min(QUOTE_BYTES)]).into_owned();
    if cut {
        s.push('…');
    }
    format!("{s:?}")
}

/// Splits a line (without its `\n`) into a frame's header and payload:
/// `Ok(None)` for a plain line (one that does not start with `#`),
/// `Err` for a line that starts with `#` but is malformed. Looks at no more
/// than [`MAX_HEADER`] bytes.
pub fn parse(line: &[u8]) -> Result<Option<(Header, &[u8])>, FrameError> {
    let Some(rest) = line.strip_prefix(b"#") else {
        return Ok(None);
    };
    let Some((&k, rest)) = rest.split_first() else {
        return Err(FrameError::new("no kind", line));
    };
    let kind = Kind::from_byte(k).ok_or_else(|| FrameError::new("unknown kind", line))?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(FrameError::new("no id", line));
    }
    if digits > 20 || (digits > 1 && rest[0] == b'0') {
        return Err(FrameError::new("id not in canonical decimal", line));
    }
    let mut id: u64 = 0;
    for &d in &rest[..digits] {
        id = id
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| FrameError::new("id past 2^64 - 1", line))?;
    }
    let payload = match rest[digits..].split_first() {
        Some((b' ', payload)) => payload,
        _ => return Err(FrameError::new("no space after the id", line)),
    };
    if matches!(kind, Kind::Hello | Kind::Accept) && (id != 0 || payload != PROTOCOL.as_bytes()) {
        return Err(FrameError::new("hello or accept of another protocol", line));
    }
    Ok(Some((Header { kind, id }, payload)))
}

/// Appends a frame's header (`#`, kind, id, space) to `out`; the payload
/// and the `\n` follow.
pub fn write_header(kind: Kind, id: u64, out: &mut Vec<u8>) {
    out.push(b'#');
    out.push(kind.byte());
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.push(b' ');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        for kind in [
            Kind::Request,
            Kind::Reply,
            Kind::Chunk,
            Kind::ChunkReply,
            Kind::Error,
        ] {
            for id in [0, 1, 9, 10, 17, 1 << 40, u64::MAX] {
                let mut line = Vec::new();
                write_header(kind, id, &mut line);
                assert!(line.len() <= MAX_HEADER);
                line.extend_from_slice(b"[1, 2]");
                let (h, payload) = parse(&line).expect("frame").expect("not plain");
                assert_eq!((h, payload), (Header { kind, id }, &b"[1, 2]"[..]));
            }
        }
    }

    #[test]
    fn plain_lines_are_not_frames() {
        for line in [&b"{\"a\": 1}"[..], b"5", b"", b"6QEAAAA=", b" #q1 2"] {
            assert_eq!(parse(line), Ok(None));
        }
    }

    #[test]
    fn malformed_frames_say_why() {
        let cases: [(&[u8], &str); 9] = [
            (b"#", "no kind"),
            (b"#x1 2", "unknown kind"),
            (b"#q 2", "no id"),
            (b"#q01 2", "id not in canonical decimal"),
            (b"#q123456789012345678901 2", "id not in canonical decimal"),
            (b"#q18446744073709551616 2", "id past 2^64 - 1"),
            (b"#q12", "no space after the id"),
            (b"#h0 miniray/2", "hello or accept of another protocol"),
            (b"#a1 miniray/1", "hello or accept of another protocol"),
        ];
        for (line, reason) in cases {
            let e = parse(line).expect_err("malformed");
            assert_eq!(e.reason(), reason, "{}", String::from_utf8_lossy(line));
            assert!(e.to_string().contains(reason));
        }
        assert_eq!(
            parse(HELLO).expect("hello").map(|(h, _)| h.kind),
            Some(Kind::Hello)
        );
        assert_eq!(
            parse(ACCEPT).expect("accept").map(|(h, _)| h.kind),
            Some(Kind::Accept)
        );
    }

    #[test]
    fn quotes_are_bounded() {
        let long = vec![b'x'; 1000];
        let q = quote(&long);
        assert!(q.len() < QUOTE_BYTES + 10 && q.ends_with("…\""), "{q}");
        assert_eq!(quote(b"a\xffb"), "\"a\u{fffd}b\"");
    }
}
