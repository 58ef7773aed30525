//! Python's `marshal` format, version 4, as a serde data format.
//!
//! [`to_vec`]/[`to_writer`] write any `T: Serialize` as marshal bytes and
//! [`from_slice`] reads any `T: DeserializeOwned` from them, with no
//! intermediate value; [`Value`](crate::Value) is one `T` and carries every
//! Python type exactly. The mapping:
//!
//! | Python              | code written                        | serde                                   |
//! |---------------------|-------------------------------------|-----------------------------------------|
//! | `None`              | `N`                                 | unit, `None`, unit struct               |
//! | `bool`              | `T` / `F`                           | bool                                    |
//! | `int`               | `i` if it fits 32 bits, else `l`    | any integer (past 128 bits: `Value`)    |
//! | `float`             | `g`                                 | `f32`, `f64`                            |
//! | `complex`           | `y`                                 | a pair of floats (`Value::Complex`)     |
//! | `str`               | `z` / `a` (ASCII), `u`              | str, char, unit variant                 |
//! | `bytes`             | `s`                                 | bytes (`serde_bytes`)                   |
//! | `tuple`             | `)` under 256 items, else `(`       | tuple, tuple struct                     |
//! | `list`              | `[`                                 | sequence                                |
//! | `dict`              | `{` … `0`                           | map, struct, `{variant: content}`       |
//! | `set` / `frozenset` | `<` / `>`                           | sequence (`Value::Set`/`FrozenSet`)     |
//!
//! **Reading** accepts everything CPython 3.11's `marshal.dumps` writes for
//! these types: every str code (`z`, `Z`, `a`, `A` are Latin-1; `u`, `t`
//! UTF-8 with lone surrogates as `"surrogatepass"` writes them), `i`, `I`
//! and `l` ints, `FLAG_REF` on any object and `r` back-references. Decoding
//! is lenient where Python is: a list, tuple, set or frozenset fills any
//! Rust sequence or tuple; an int fills an `f64`. Ints of more than
//! [`MAX_INT_DIGITS`] decimal digits are refused (`IntTooLarge`), as
//! Python refuses to print them; `marshal.loads` would accept them.
//!
//! **Writing** uses the codes CPython 3.11 picks, and never `FLAG_REF`,
//! interning or references. `marshal.dumps` flags an object whenever its
//! reference count is above one (small ints, interned strs, the top-level
//! object, anything shared), and writes `Z`/`A`/`t` for interned strs and
//! `r` for repeats; so our bytes equal `marshal.dumps`' exactly for values
//! Python would not flag (a fresh list of computed floats, big ints or
//! strs), and otherwise differ only in those flags and in writing a shared
//! object out again where Python writes `r`. `marshal.loads` reads both to
//! equal values. A non-ASCII str is `u` even when it is Latin-1, as in
//! CPython.
//!
//! Decoding is bounded by its input, whatever the input: nesting is capped
//! at [`MAX_DEPTH`]; every byte of the decoded value (a [`Value`](crate::Value)
//! slot per item, each string's bytes, each dict entry at its worst
//! growth) and of the decoder's own tables is charged before it is
//! allocated against [`decode_budget`] (`80 × input + 512 KiB` bytes), and a
//! line past it is refused with
//! [`DecodeErrorKind::TooLarge`](crate::DecodeErrorKind::TooLarge). A count
//! is checked against the bytes left before any size hint is given, so a
//! hostile count preallocates nothing. A back-reference is resolved by
//! decoding the referenced bytes again, charged again: references cannot
//! amplify a small line into a large value, and a reference to a container
//! not yet finished (a cycle) is
//! [`UnfinishedReference`](crate::DecodeErrorKind::UnfinishedReference).
//! Big ints are regrouped between base 2^15 and bytes in linear time.
//!
//! A dict key or set member that Python cannot hash (a list, dict or set,
//! or a tuple holding one at any depth; a frozenset is hashable) is refused
//! where that container starts, as `marshal.loads` refuses it
//! ([`Unhashable`](crate::DecodeErrorKind::Unhashable): `unhashable type:
//! 'dict'`), and the encoder refuses to write one. The check costs nothing
//! beyond reading the key once, so a line of such keys fails at its first.
//!
//! A [`Value`](crate::Value) is built directly from the bytes, not through
//! serde's visitor, with the same bounds and errors; typed `T`s go through
//! serde.
//!
//! Error positions are byte offsets into the raw marshal bytes; a value
//! that does not fit `T` is a `Mismatch` at the value's first byte.

mod access;
mod budget;
mod build;
mod codes;
mod de;
mod error;
mod float_repr;
mod long;
mod reader;
mod ser;
#[cfg(test)]
mod tests;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use budget::decode_budget;
pub use float_repr::python_float_repr;

use crate::error::{DecodeError, Error};
use crate::format_kind::Format;

/// Deepest nesting of tuples, lists, sets and dicts the decoder accepts:
/// 127, the same as serde_json's recursion limit, so both formats accept
/// exactly the same values (what one decodes, the other can carry).
pub const MAX_DEPTH: usize = 127;

/// Largest integer, in decimal digits, that either format converts: the
/// same as CPython's default `sys.get_int_max_str_digits()`, and counted as
/// CPython does, without the sign (`-(10**4300 - 1)` passes, `10**4300`
/// does not).
pub const MAX_INT_DIGITS: usize = 4300;

/// Bit 7 of a type code: the object takes the next slot of the reference table.
pub(crate) const FLAG_REF: u8 = 0x80;

/// Appends the marshal bytes of `value` to `out` (see the module docs for
/// the codes). On error `out` may hold a partial value.
pub fn to_writer<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    value
        .serialize(ser::Ser::new(out))
        .map_err(|e| Error::Encode {
            format: Format::Marshal,
            reason: e.into_reason(),
        })
}

/// The marshal bytes of `value`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    to_writer(value, &mut out)?;
    Ok(out)
}

/// Decodes one value of type `T` that must span all of `bytes` (raw
/// marshal, no base64), within [`decode_budget`]`(bytes.len())`. A value
/// that does not fit `T` fails with
/// [`DecodeErrorKind::Mismatch`](crate::DecodeErrorKind::Mismatch), its
/// message ending with where (`at .jobs[3].name`).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut r = reader::Reader::new(bytes);
    let v = T::deserialize(&mut r).map_err(|e| {
        let again = &mut reader::Reader::new(bytes);
        crate::error_path::with_path::<T, _>(e.into_public(0), again)
    })?;
    r.end().map_err(|e| e.into_public(0))?;
    Ok(v)
}
