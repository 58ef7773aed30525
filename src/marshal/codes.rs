//! Facts about type codes and their bytes, shared by the reader and its
//! accessors: the Python type a code is, and the generalized UTF-8 check
//! of a `u` string.

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

/// The Python type a value of code `ty` is (for error messages).
pub(crate) fn python_type(ty: u8) -> &'static str {
    match ty {
        b'N' => "NoneType",
        b'T' | b'F' => "bool",
        b'i' | b'I' | b'l' => "int",
        b'g' => "float",
        b'y' => "complex",
        b's' => "bytes",
        b'(' | b')' => "tuple",
        b'[' => "list",
        b'{' => "dict",
        b'<' => "set",
        b'>' => "frozenset",
        b'z' | b'Z' | b'a' | b'A' | b'u' | b't' => "str",
        _ => "unknown",
    }
}
