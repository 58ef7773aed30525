//! Error replies: how a worker tells its caller that a request failed, in
//! place of the reply, on the same line protocol.
//!
//! The wire form is one ordinary line in the connection's format, a dict
//! with one reserved key:
//!
//! ```text
//! {"miniray.error": {"kind": "panic", "message": "index out of bounds: ..."}}
//! ```
//!
//! `kind` says what failed (`"panic"`: the work function panicked;
//! `"error"`: it returned an error; `"decode"`: the request could not be
//! decoded into the type the worker takes; `"line too long"`; `"region"`),
//! `message` says why, in words. A Python peer reads it as a dict and can
//! send one itself (an exec worker reporting an exception, say). The
//! receiving side turns such a line, in either format, into
//! [`Error::Remote`] at `recv`; a
//! user message of exactly this shape is read as an error too, so the key
//! is reserved, like the region envelope's.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::format::Format;

/// The reserved key.
const KEY: &str = "miniray.error";

/// An error reply as it is written.
#[derive(Serialize)]
struct Reply<'a> {
    #[serde(rename = "miniray.error")]
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    kind: &'a str,
    message: &'a str,
}

/// An error reply as it is read: exactly that shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Received {
    #[serde(rename = "miniray.error")]
    error: ReceivedBody,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceivedBody {
    kind: String,
    message: String,
}

/// Appends the error reply line (`\n` included) for `kind` and `message`.
pub(crate) fn encode_line(
    format: Format,
    kind: &str,
    message: &str,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> crate::Result<()> {
    let reply = Reply {
        error: Body { kind, message },
    };
    format.encode_line(&reply, out, scratch)
}

/// If `line` (without its `\n`) is an error reply, in either format, the
/// [`Error::Remote`] it carries. Either format, whatever the connection's:
/// a peer that cannot read our format answers in its own, and that answer
/// is what tells the caller of the mismatch. The first byte decides which
/// format to look for (a JSON reply starts with `{`, which base64 never
/// holds; a marshal one with `e`, base64 of a dict's `{`, which JSON never
/// starts with), so ordinary messages cost a few byte comparisons.
pub(crate) fn parse(line: &[u8]) -> Option<Error> {
    let format = match line.first() {
        Some(b'{') => Format::Json,
        Some(b'e') => Format::Marshal,
        _ => return None,
    };
    if !starts_like_one(format, line) {
        return None;
    }
    let reply: Received = format.decode(line).ok()?;
    Some(Error::Remote {
        kind: reply.error.kind,
        message: reply.error.message,
    })
}

/// Whether the line starts as a dict whose first key is the reserved one:
/// JSON `{"miniray.error"` (spaces allowed where Python puts them); marshal
/// `{` then the key as any str code Python writes (`z`/`Z` with a 1-byte
/// length, `a`/`A`/`u`/`t` with a 4-byte one, the reference flag allowed).
fn starts_like_one(format: Format, line: &[u8]) -> bool {
    match format {
        Format::Json => {
            let rest = line.strip_prefix(b"{").unwrap_or(b"");
            let rest = trim_start(rest);
            rest.strip_prefix(b"\"")
                .and_then(|r| r.strip_prefix(KEY.as_bytes()))
                .is_some_and(|r| r.first() == Some(&b'"'))
        }
        Format::Marshal => {
            // 28 base64 characters are 21 bytes: enough for the longest head.
            let head = &line[..line.len().min(28)];
            // Into a stack buffer: this runs for every marshal line that
            // starts like a dict, so it allocates nothing.
            let mut buf = [0u8; 21];
            let Ok(raw) =
                base64_simd::STANDARD.decode(head, base64_simd::AsOut::as_out(&mut buf[..]))
            else {
                return false;
            };
            let key = KEY.as_bytes();
            match &*raw {
                [b'{', code, rest @ ..] => match code & 0x7f {
                    b'z' | b'Z' => {
                        rest.first() == Some(&(key.len() as u8)) && rest[1..].starts_with(key)
                    }
                    b'a' | b'A' | b'u' | b't' => {
                        rest.get(..4) == Some(&(key.len() as u32).to_le_bytes()[..])
                            && rest[4..].starts_with(key)
                    }
                    _ => false,
                },
                _ => false,
            }
        }
    }
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_error_reply_parses_back_in_both_formats() {
        for format in [Format::Json, Format::Marshal] {
            let mut line = Vec::new();
            encode_line(format, "panic", "boom: é", &mut line, &mut Vec::new()).expect("encode");
            line.pop();
            match parse(&line) {
                Some(Error::Remote { kind, message }) => {
                    assert_eq!((kind.as_str(), message.as_str()), ("panic", "boom: é"));
                }
                other => panic!("{format}: {other:?}"),
            }
        }
    }

    #[test]
    fn ordinary_messages_are_not_error_replies() {
        for format in [Format::Json, Format::Marshal] {
            for v in [
                serde_json::json!({"miniray.errors": 1}),
                serde_json::json!({"a": {"miniray.error": 1}}),
                serde_json::json!(["miniray.error"]),
                serde_json::json!({"miniray.error": "no body"}),
                serde_json::json!({"miniray.error": {"kind": "x", "message": "y", "extra": 1}}),
            ] {
                let line = format.encode(&v).expect("encode");
                assert!(parse(&line[..line.len() - 1]).is_none(), "{format} {v}");
            }
        }
    }
}
