//! The two line formats: `json` and `marshal` (base64 of Python's marshal v4).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use crate::error::{DecodeError, DecodeErrorKind, Error};
use crate::marshal;

/// How a message is written on its line.
///
/// Both formats carry a [`serde_json::Value`] and both put exactly one message
/// on one `\n`-terminated line, so Python peers of the original library read
/// and write them with `json.dumps`/`json.loads` or
/// `base64.b64encode(marshal.dumps(x))`/`marshal.loads(base64.b64decode(line))`.
///
/// Integers of any size stay exact in both (serde_json's `arbitrary_precision`);
/// dict key order is kept (`preserve_order`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// One compact JSON text per line. `NaN` and `Infinity` are refused.
    #[default]
    Json,
    /// Python marshal version 4, base64 with the standard padded alphabet.
    Marshal,
}

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
                    reason,
                })?;
                self.base64_into(scratch, out)?;
            }
        }
        out.push(b'\n');
        Ok(())
    }

    /// Appends the region envelope `{"miniray.regions": [ids], "msg": msg}`
    /// as one line, writing `msg` in place (the message is not copied). The
    /// line must go out in its own `sendmsg` with the descriptors (see
    /// `inbound.rs`); it holds exactly one newline, its last byte, which the
    /// reactor's flush looks for to end that `sendmsg`.
    pub(crate) fn encode_envelope_line(
        self,
        ids: &[u64],
        msg: &Value,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Error> {
        match self {
            Format::Json => {
                out.extend_from_slice(b"{\"");
                out.extend_from_slice(crate::shm::ENVELOPE_KEY.as_bytes());
                out.extend_from_slice(b"\":[");
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(id.to_string().as_bytes());
                }
                out.extend_from_slice(b"],\"msg\":");
                self.json_into(msg, out)?;
                out.push(b'}');
            }
            Format::Marshal => {
                scratch.clear();
                marshal::encode_envelope(crate::shm::ENVELOPE_KEY, ids, msg, scratch).map_err(
                    |reason| Error::Encode {
                        format: self,
                        reason,
                    },
                )?;
                self.base64_into(scratch, out)?;
            }
        }
        out.push(b'\n');
        Ok(())
    }

    /// Compact JSON: strings escape control characters, so the text never
    /// holds a raw newline.
    fn json_into(self, value: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
        serde_json::to_writer(&mut *out, value).map_err(|_| Error::Encode {
            format: self,
            reason: "serde_json refused the value",
        })
    }

    /// Appends `raw` as standard padded base64.
    fn base64_into(self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let n = base64::encoded_len(raw.len(), true).ok_or(Error::Encode {
            format: self,
            reason: "message too large",
        })?;
        let at = out.len();
        out.resize(at + n, 0);
        STANDARD
            .encode_slice(raw, &mut out[at..])
            .map_err(|_| Error::Encode {
                format: self,
                reason: "base64 length mismatch",
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

    /// The format's name: `"json"` or `"marshal"`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Marshal => "marshal",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name given to [`Format::from_str`] was neither `json` nor `marshal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown format {:?} (expected json or marshal)", self.0)
    }
}

impl std::error::Error for UnknownFormat {}

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Format::Json),
            "marshal" => Ok(Format::Marshal),
            other => Err(UnknownFormat(other.to_owned())),
        }
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
    fn envelope_line_equals_the_envelope_value_encoded() {
        let msg = json!({"tensor": 42, "shape": [2, 3], "name": "é"});
        let value = json!({"miniray.regions": [7, 1u64 << 40], "msg": msg});
        for format in [Format::Json, Format::Marshal] {
            let mut direct = Vec::new();
            format
                .encode_envelope_line(&[7, 1 << 40], &msg, &mut direct, &mut Vec::new())
                .expect("envelope");
            assert_eq!(direct, format.encode(&value).expect("value"), "{format}");
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("marshal".parse::<Format>(), Ok(Format::Marshal));
        assert!("yaml".parse::<Format>().is_err());
    }
}
