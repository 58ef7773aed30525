//! The two line formats: `json` and `marshal` (base64 of Python's marshal v4).
//!
//! The [`Format`] enum itself lives in `format_kind.rs` (re-exported here);
//! this file holds its codec methods.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use crate::error::{DecodeError, DecodeErrorKind, Error};
pub use crate::format_kind::{Format, UnknownFormat};
use crate::marshal;

impl Format {
    /// Appends `value` as one line, `\n` included, to `out`. `scratch` is
    /// reused working space (marshal only).
    pub fn encode_line(
        self,
        value: &Value,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Error> {
        match self {
            Format::Json => self.json_into(value, out)?,
            Format::Marshal => {
                scratch.clear();
                marshal::encode(value, scratch).map_err(|reason| Error::Encode {
                    format: self,
                    reason: reason.into(),
                })?;
                self.base64_into(scratch, out)?;
            }
        }
        out.push(b'\n');
        Ok(())
    }

    /// Compact JSON: strings escape control characters, so the text never
    /// holds a raw newline.
    pub(crate) fn json_into(self, value: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
        serde_json::to_writer(&mut *out, value).map_err(|_| Error::Encode {
            format: self,
            reason: "serde_json refused the value".into(),
        })
    }

    /// Appends `raw` as standard padded base64.
    pub(crate) fn base64_into(self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let n = base64::encoded_len(raw.len(), true).ok_or(Error::Encode {
            format: self,
            reason: "message too large".into(),
        })?;
        let at = out.len();
        out.resize(at + n, 0);
        STANDARD
            .encode_slice(raw, &mut out[at..])
            .map_err(|_| Error::Encode {
                format: self,
                reason: "base64 length mismatch".into(),
            })?;
        Ok(())
    }

    /// Encodes `value` as a line (with its `\n`) into a new buffer.
    pub fn encode(self, value: &Value) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.encode_line(value, &mut out, &mut Vec::new())?;
        Ok(out)
    }

    /// Decodes one line (without its `\n`). `scratch` is reused working space.
    pub fn decode_line(self, line: &[u8], scratch: &mut Vec<u8>) -> Result<Value, DecodeError> {
        match self {
            Format::Json => serde_json::from_slice(line).map_err(|e| DecodeError {
                format: self,
                position: e.column().saturating_sub(1),
                kind: DecodeErrorKind::Json(e),
            }),
            Format::Marshal => {
                scratch.clear();
                STANDARD.decode_vec(line, scratch).map_err(|e| {
                    let position = match e {
                        base64::DecodeError::InvalidByte(at, _)
                        | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                        _ => line.len(),
                    };
                    DecodeError {
                        format: self,
                        position,
                        kind: DecodeErrorKind::Base64,
                    }
                })?;
                marshal::decode(scratch)
            }
        }
    }

    /// Decodes one line (without its `\n`).
    pub fn decode(self, line: &[u8]) -> Result<Value, DecodeError> {
        self.decode_line(line, &mut Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_line_is_compact_and_single_line() {
        let v = json!({"a": "x\ny", "b": [1, 2]});
        let line = Format::Json.encode(&v).expect("encode");
        assert_eq!(line, b"{\"a\":\"x\\ny\",\"b\":[1,2]}\n");
    }

    #[test]
    fn marshal_line_is_padded_base64_on_one_line() {
        let v = json!({"k": "v".repeat(200)});
        let line = Format::Marshal.encode(&v).expect("encode");
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!((line.len() - 1) % 4, 0);
        assert_eq!(
            Format::Marshal
                .decode(&line[..line.len() - 1])
                .expect("decode"),
            v
        );
    }

    #[test]
    fn json_refuses_nan_tokens() {
        let e = Format::Json.decode(b"[NaN]").expect_err("NaN refused");
        assert!(matches!(e.kind, DecodeErrorKind::Json(_)));
        assert_eq!(e.format, Format::Json);
    }

    #[test]
    fn marshal_refuses_bad_base64_with_position() {
        let e = Format::Marshal.decode(b"TQ*A").expect_err("bad base64");
        assert!(matches!(e.kind, DecodeErrorKind::Base64));
        assert_eq!(e.position, 2);
    }

    #[test]
    fn names_parse() {
        assert_eq!("marshal".parse::<Format>(), Ok(Format::Marshal));
        assert!("yaml".parse::<Format>().is_err());
    }
}
