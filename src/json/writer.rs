//! The writer state JSON text is serialized with: the output, the nesting
//! depth and the magic-payload mark, and how a payload is written. Both
//! the value serializer ([`ser`](super::ser)) and the key serializer
//! ([`key_ser`](super::key_ser)) write through it; it imports neither.

use super::error::SerError;
use super::escape::write_generalized;
use crate::marshal::{MAX_DEPTH, MAX_INT_DIGITS};
use crate::value::magic::decode_bigint;

type Result<T, E = SerError> = std::result::Result<T, E>;

/// Which magic payload the next `serialize_bytes` carries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload {
    /// Plain bytes: refused.
    None,
    /// A [`BIGINT_TOKEN`](crate::value::magic::BIGINT_TOKEN) payload:
    /// written as a decimal int.
    BigInt,
    /// A [`SURROGATES_TOKEN`](crate::value::magic::SURROGATES_TOKEN)
    /// payload: written as an escaped string.
    Surrogates,
}

/// Writes JSON text into `out`.
pub(crate) struct Serializer<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    depth: usize,
    pub(crate) payload: Payload,
}

impl<'a> Serializer<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Serializer {
            out,
            depth: 0,
            payload: Payload::None,
        }
    }

    /// Opens one more level of nesting with `open`, refused past `MAX_DEPTH`.
    pub(super) fn enter(&mut self, open: &[u8]) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(SerError(format!("nesting deeper than {MAX_DEPTH}")));
        }
        self.depth += 1;
        self.out.extend_from_slice(open);
        Ok(())
    }

    /// Writes a magic payload (`bytes`) as the kind `payload` says.
    pub(crate) fn write_payload(&mut self, payload: Payload, bytes: &[u8]) -> Result<()> {
        match payload {
            Payload::None => Err(SerError::not_serializable("bytes")),
            Payload::Surrogates => write_generalized(self.out, bytes),
            Payload::BigInt => write_bigint(self.out, bytes),
        }
    }

    /// Closes a level [`enter`](Self::enter) opened.
    pub(super) fn leave(&mut self) {
        self.depth -= 1;
    }
}

/// A [`BIGINT_TOKEN`](crate::value::magic::BIGINT_TOKEN) payload in
/// decimal; refused past `MAX_INT_DIGITS` digits as Python's `json.dumps`
/// refuses it (and checked on the byte length first, so a huge payload
/// costs nothing).
fn write_bigint(out: &mut Vec<u8>, payload: &[u8]) -> Result<()> {
    let (negative, magnitude) =
        decode_bigint(payload).ok_or_else(|| SerError("malformed big int payload".into()))?;
    // 4300 digits need at most 14285 bits: 1786 bytes.
    let too_large = || {
        SerError(format!(
            "Exceeds the limit ({MAX_INT_DIGITS} digits) for integer string conversion"
        ))
    };
    if magnitude.len() > 1786 {
        return Err(too_large());
    }
    let digits = num_bigint::BigUint::from_bytes_le(magnitude).to_str_radix(10);
    if digits.len() > MAX_INT_DIGITS {
        return Err(too_large());
    }
    if negative && digits != "0" {
        out.push(b'-');
    }
    out.extend_from_slice(digits.as_bytes());
    Ok(())
}
