//! Facts about type codes and their bytes, shared by the reader and its
//! accessors: why a code is refused, and the generalized UTF-8 check of a
//! `u` string.

use crate::error::DecodeErrorKind;

/// Why a type code no value starts with is refused: a Python type miniray
/// does not carry, or no marshal code at all.
#[cold]
pub(crate) fn refused(code: u8) -> DecodeErrorKind {
    match code & !super::FLAG_REF {
        b'c' => DecodeErrorKind::Unsupported("code"),
        b'.' => DecodeErrorKind::Unsupported("Ellipsis"),
        b'S' => DecodeErrorKind::Unsupported("StopIteration"),
        b'x' => DecodeErrorKind::Unsupported("complex as text (marshal version < 2)"),
        b'f' => DecodeErrorKind::Unsupported("float as text (marshal version < 2)"),
        _ => DecodeErrorKind::UnknownCode(code),
    }
}

/// Checks generalized UTF-8 (lone surrogates as `ED A0..BF xx`, what
/// CPython's `"surrogatepass"` writes): `Err` holds the offset of the first
/// byte that is not.
pub(crate) fn surrogates(bytes: &[u8]) -> Result<(), usize> {
    let mut at = 0;
    loop {
        match std::str::from_utf8(&bytes[at..]) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let bad = at + e.valid_up_to();
                match bytes.get(bad..bad + 3) {
                    Some(&[0xED, b1, b2]) if (0xA0..=0xBF).contains(&b1) && b2 & 0xC0 == 0x80 => {
                        at = bad + 3
                    }
                    _ => return Err(bad),
                }
            }
        }
    }
}
