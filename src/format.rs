//! The two line formats: `json` and `marshal` (base64 of Python's marshal v4).
//!
//! The [`Format`] enum itself lives in `format_kind.rs` (re-exported here);
//! this file holds its line codec: any `T: Serialize` to one line, one line
//! to any `T: DeserializeOwned`, through the serde formats of `json/` and
//! `marshal/`, with base64 (SIMD) around marshal.

use base64_simd::STANDARD;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DecodeError, DecodeErrorKind, Error};
pub use crate::format_kind::{Format, UnknownFormat};

impl Format {
    /// Appends `value` as one line, `\n` included, to `out`. `scratch` is
    /// reused working space (marshal only). On error `out` is unchanged.
    pub fn encode_line<T: Serialize + ?Sized>(
        self,
        value: &T,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let start = out.len();
        let done = match self {
            Format::Json => crate::json::to_writer(value, out),
            Format::Marshal => {
                scratch.clear();
                crate::marshal::to_writer(value, scratch)
                    .map(|()| STANDARD.encode_append(&scratch[..], out))
            }
        };
        match done {
            Ok(()) => {
                out.push(b'\n');
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Encodes `value` as a line (with its `\n`) into a new buffer.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.encode_line(value, &mut out, &mut Vec::new())?;
        Ok(out)
    }

    /// Decodes one line (without its `\n`) into a `T`. A `T` the value does
    /// not fit fails with [`DecodeErrorKind::Mismatch`].
    pub fn decode<T: DeserializeOwned>(self, line: &[u8]) -> Result<T, DecodeError> {
        match self {
            Format::Json => crate::json::from_slice(line).map_err(|e| self.mismatch(line, e)),
            Format::Marshal => {
                // Decoded into a buffer of its own (3/4 of the line), not a
                // copy of the text decoded in place. The decode validates
                // as it goes and the line stays intact, so no separate
                // check pass: a bad line is looked at again only to say
                // where and why.
                let raw = STANDARD
                    .decode_to_vec(line)
                    .map_err(|_| self.mismatch(line, self.base64_error(line)))?;
                crate::marshal::from_slice(&raw)
            }
        }
    }

    /// Refuses a line that is not standard padded base64, naming where
    /// (or naming JSON, when it looks like JSON). SIMD, as fast as
    /// decoding, and done before decoding in place: that would overwrite
    /// the bytes an error position names.
    fn check_base64(self, line: &[u8]) -> Result<(), DecodeError> {
        match STANDARD.check(line) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.mismatch(line, self.base64_error(line))),
        }
    }

    fn base64_error(self, line: &[u8]) -> DecodeError {
        DecodeError {
            format: self,
            position: base64_error_at(line),
            kind: DecodeErrorKind::Base64,
        }
    }

    /// `e`, or [`DecodeErrorKind::WrongFormat`] when the line that failed
    /// looks like the other format: a JSON line that is all base64 (of a
    /// whole number of 4-character groups), or a marshal line that starts
    /// like a JSON container or string.
    fn mismatch(self, line: &[u8], e: DecodeError) -> DecodeError {
        let looks_like = match self {
            Format::Json => {
                let base64 = line.len() >= 8
                    && line.len().is_multiple_of(4)
                    && line
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
                base64.then_some(Format::Marshal)
            }
            Format::Marshal => {
                let start = line.iter().find(|b| !b.is_ascii_whitespace());
                matches!(start, Some(b'{' | b'[' | b'"')).then_some(Format::Json)
            }
        };
        match looks_like {
            Some(looks_like) => DecodeError {
                format: self,
                position: 0,
                kind: DecodeErrorKind::WrongFormat { looks_like },
            },
            None => e,
        }
    }

    /// Decodes a line the caller gives away: marshal's base64 is decoded in
    /// place, so a large line costs no second buffer.
    pub(crate) fn decode_owned<T: DeserializeOwned>(
        self,
        mut line: Vec<u8>,
    ) -> Result<T, DecodeError> {
        match self {
            Format::Json => crate::json::from_slice(&line).map_err(|e| self.mismatch(&line, e)),
            Format::Marshal => {
                self.check_base64(&line)?;
                let raw = STANDARD
                    .decode_inplace(&mut line)
                    .map_err(|_| self.base64_error(b""))?;
                crate::marshal::from_slice(raw)
            }
        }
    }
}

/// Where standard padded base64 goes wrong in `line` (asked only after the
/// decoder refused it): the first byte outside the alphabet, a misplaced
/// `=`, or the end for a bad length.
fn base64_error_at(line: &[u8]) -> usize {
    let body = line.len()
        - line
            .iter()
            .rev()
            .take(2)
            .take_while(|&&b| b == b'=')
            .count();
    line.iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'+' || b == b'/'))
        .filter(|&at| at < body)
        .unwrap_or(line.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    #[test]
    fn marshal_line_is_padded_base64_on_one_line() {
        let v = json!({"k": "v".repeat(200)});
        let line = Format::Marshal.encode(&v).expect("encode");
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!((line.len() - 1) % 4, 0);
        let back: Value = Format::Marshal
            .decode(&line[..line.len() - 1])
            .expect("decode");
        assert_eq!(back, v);
    }

    #[test]
    fn marshal_refuses_bad_base64_with_position() {
        for (line, at) in [(&b"TQ*A"[..], 2), (b"TQ=A", 2), (b"TQA", 3), (b"TQ==", 4)] {
            match Format::Marshal.decode::<Value>(line) {
                Err(e) if matches!(e.kind, DecodeErrorKind::Base64) => {
                    assert_eq!(e.position, at, "{line:?}")
                }
                // "TQ==" is valid base64 of "M", which is no marshal value.
                Err(e) => assert_eq!(line, b"TQ==", "{e}"),
                Ok(v) => panic!("{line:?} decoded to {v}"),
            }
        }
    }

    #[test]
    fn a_failed_encode_leaves_the_buffer_unchanged() {
        let mut out = b"before\n".to_vec();
        let bad = std::collections::HashMap::from([((1, 2), 3)]);
        assert!(Format::Json
            .encode_line(&bad, &mut out, &mut Vec::new())
            .is_err());
        assert_eq!(out, b"before\n");
    }

    #[test]
    fn a_line_in_the_other_format_is_named_as_such() {
        let marshal = Format::Marshal.encode(&[1, 2, 3]).expect("encode");
        let e = Format::Json
            .decode::<Value>(&marshal[..marshal.len() - 1])
            .expect_err("not json");
        assert!(matches!(
            e.kind,
            DecodeErrorKind::WrongFormat {
                looks_like: Format::Marshal
            }
        ));
        let e = Format::Marshal
            .decode::<Value>(b"{\"a\": 1}")
            .expect_err("not marshal");
        assert!(
            e.to_string().contains("looks like json, not marshal"),
            "{e}"
        );
        // Plain garbage is not blamed on the format.
        let e = Format::Json.decode::<Value>(b"nan").expect_err("not json");
        assert!(matches!(e.kind, DecodeErrorKind::Syntax(_)), "{e}");
    }

    #[test]
    fn names_parse() {
        assert_eq!("marshal".parse::<Format>(), Ok(Format::Marshal));
        assert!("yaml".parse::<Format>().is_err());
    }
}
