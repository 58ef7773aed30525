//! Python's `json` module as a serde data format: [`to_vec`] writes
//! byte for byte what `json.dumps(v)` writes with its defaults, and
//! [`from_slice`] reads what `json.loads` reads.
//!
//! Writing: separators `", "` and `": "`; `ensure_ascii` (every code point
//! outside printable ASCII as lowercase `\uXXXX`, astral ones as a
//! surrogate pair, lone surrogates as themselves); floats as Python's
//! `repr`, `NaN`, `Infinity`, `-Infinity`; ints of any width; tuples as
//! arrays; dict keys converted as `json.dumps` converts them (str as is,
//! `true`/`false`/`null`, an int's decimal, a float's repr), any other key
//! refused with Python's `TypeError` message; bytes, set, frozenset and
//! complex refused naming the type ("Object of type bytes is not JSON
//! serializable"). Enums as `serde_json` writes them (a unit variant as its
//! name, any other as `{"Variant": content}`). The text never holds a raw
//! newline, so it is always one line.
//!
//! Reading (on jiter): `NaN`, `Infinity`, `-Infinity`; `\uXXXX` escapes
//! including lone surrogates (a `miniray::Value` keeps them; any other
//! type is refused with [`LoneSurrogate`](crate::DecodeErrorKind::LoneSurrogate));
//! ints of any size up to [`MAX_INT_DIGITS`](crate::marshal::MAX_INT_DIGITS)
//! digits, refused past it before any conversion as Python refuses them
//! ([`IntTooLarge`](crate::DecodeErrorKind::IntTooLarge)); duplicate keys
//! (the map type decides; a `Value`'s dict keeps the last value at the
//! first position, as Python). Nesting is capped at
//! [`MAX_DEPTH`](crate::marshal::MAX_DEPTH). An int reads into an `f64`;
//! an array into any sequence or tuple; a dict key into the type asked
//! for if it is that type's text (`"1"` into `i64`). Errors are
//! [`DecodeError`]s with the byte offset of the problem (for a value that
//! does not fit the type: where that value starts).
//!
//! ```
//! use miniray::Value;
//!
//! // What Python's json.dumps({"k": [1, 2.5, None], "t": (1e16, "é")}) writes:
//! let text = br#"{"k": [1, 2.5, null], "t": [1e+16, "\u00e9"]}"#;
//! let v: Value = miniray::json::from_slice(text)?;
//! assert_eq!(miniray::json::to_vec(&v)?, text);
//! let Value::Dict(d) = &v else { unreachable!() };
//! let t = Value::List(vec![Value::Float(1e16), Value::Str("é".into())]);
//! assert_eq!(d.get_str("t"), Some(&t));
//! // Typed: any `Deserialize` type, straight from the text.
//! let (n, f): (u8, f64) = miniray::json::from_slice(b"[7, NaN]")?;
//! assert!(n == 7 && f.is_nan());
//! # Ok::<(), miniray::Error>(())
//! ```

mod access;
mod de;
mod error;
mod escape;
mod key_de;
mod key_ser;
mod reader;
mod ser;
mod unescape;
mod writer;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DecodeError, Error};
use crate::format_kind::Format;

/// Appends the JSON text of `value` to `out`, exactly as Python's
/// `json.dumps(value)` writes it. On error `out` may hold part of it.
pub fn to_writer<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    value
        .serialize(&mut writer::Serializer::new(out))
        .map_err(|e| Error::Encode {
            format: Format::Json,
            reason: e.0,
        })
}

/// The JSON text of `value`, exactly as Python's `json.dumps(value)`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(128);
    to_writer(value, &mut out)?;
    Ok(out)
}

/// Reads one JSON text (what Python's `json.loads` reads) as a `T`; only
/// whitespace may follow it. A value that does not fit `T` fails with
/// [`DecodeErrorKind::Mismatch`](crate::DecodeErrorKind::Mismatch), its
/// message ending with where (`at .jobs[3].name`).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut de = reader::Deserializer::new(bytes);
    let value = T::deserialize(&mut de).map_err(|e| {
        let again = &mut reader::Deserializer::new(bytes);
        crate::error_path::with_path::<T, _>(e.into_public(), again)
    })?;
    de.end().map_err(error::DeError::into_public)?;
    Ok(value)
}
