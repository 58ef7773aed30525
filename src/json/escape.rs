//! The text `json.dumps` writes for a str (with `ensure_ascii=True`), an
//! int and a float.

use super::error::SerError;
use crate::marshal::python_float_repr;

/// `PLAIN[b]`: byte `b` is written as it is (`' '..='~'` but `"` and `\`).
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        t[b as usize] = b != b'"' && b != b'\\';
        b += 1;
    }
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as a JSON string exactly as Python's `json.dumps` does by
/// default: printable ASCII as is, the short escapes, every other code
/// point as lowercase `\uXXXX` (astral ones as a surrogate pair).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if PLAIN[b as usize] {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if b < 0x80 {
            write_code_point(out, u32::from(b));
            i += 1;
        } else {
            // `i` is a char boundary: it only ever steps over whole chars.
            let c = s[i..].chars().next().unwrap_or('\u{fffd}');
            write_code_point(out, c as u32);
            i += c.len_utf8();
        }
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes a str given as generalized UTF-8 (lone surrogates encoded as
/// three bytes, as Python's `"surrogatepass"` does), escaping each code
/// point as [`write_str`] does: a lone surrogate becomes `\udXXX`.
pub(crate) fn write_generalized(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), SerError> {
    out.push(b'"');
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (len, init) = match b {
            0x00..=0x7f => (1, u32::from(b)),
            0xc0..=0xdf => (2, u32::from(b & 0x1f)),
            0xe0..=0xef => (3, u32::from(b & 0x0f)),
            0xf0..=0xf7 => (4, u32::from(b & 0x07)),
            _ => return Err(bad_payload()),
        };
        let tail = bytes.get(i + 1..i + len).ok_or_else(bad_payload)?;
        let mut cp = init;
        for &t in tail {
            if t & 0xc0 != 0x80 {
                return Err(bad_payload());
            }
            cp = (cp << 6) | u32::from(t & 0x3f);
        }
        if cp < 0x80 && PLAIN[cp as usize] {
            out.push(cp as u8);
        } else {
            write_code_point(out, cp);
        }
        i += len;
    }
    out.push(b'"');
    Ok(())
}

fn bad_payload() -> SerError {
    SerError("a str with lone surrogates whose payload is not generalized UTF-8".into())
}

/// One code point that is not written as itself.
fn write_code_point(out: &mut Vec<u8>, cp: u32) {
    let short = match cp {
        0x22 => b'"',
        0x5c => b'\\',
        0x0a => b'n',
        0x0d => b'r',
        0x09 => b't',
        0x08 => b'b',
        0x0c => b'f',
        _ => 0,
    };
    if short != 0 {
        out.extend_from_slice(&[b'\\', short]);
    } else if cp >= 0x1_0000 {
        let v = cp - 0x1_0000;
        write_u_escape(out, 0xd800 | (v >> 10));
        write_u_escape(out, 0xdc00 | (v & 0x3ff));
    } else {
        write_u_escape(out, cp);
    }
}

fn write_u_escape(out: &mut Vec<u8>, unit: u32) {
    out.extend_from_slice(&[
        b'\\',
        b'u',
        HEX[(unit >> 12 & 0xf) as usize],
        HEX[(unit >> 8 & 0xf) as usize],
        HEX[(unit >> 4 & 0xf) as usize],
        HEX[(unit & 0xf) as usize],
    ]);
}

/// A float as `json.dumps` writes it: `NaN`, `Infinity`, `-Infinity`, or
/// Python's `repr`.
pub(crate) fn write_float(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        // Python writes 1e-4 <= |f| < 1e16 positionally, as zmij does (its
        // positional range is wider: 1e-5 <= |f| < 1e16, with ryu's
        // layout); the bounds are exact because a shortest repr rounds to
        // its own double. The rest goes through the shared repr. zmij
        // took half the time of ryu here (a float list's encode was two
        // thirds ryu).
        let a = f.abs();
        if a == 0.0 || (1e-4..1e16).contains(&a) {
            let mut buf = zmij::Buffer::new();
            out.extend_from_slice(buf.format_finite(f).as_bytes());
        } else {
            out.extend_from_slice(python_float_repr(f).as_bytes());
        }
    }
}

/// An integer in decimal (the sign, then the magnitude's digits).
pub(crate) fn write_int(out: &mut Vec<u8>, negative: bool, magnitude: u128) {
    if negative {
        out.push(b'-');
    }
    // itoa: two digits per step, and u64 arithmetic whenever the value
    // fits (a u128 division is a library call, ~10x slower).
    let mut buf = itoa::Buffer::new();
    match u64::try_from(magnitude) {
        Ok(m) => out.extend_from_slice(buf.format(m).as_bytes()),
        Err(_) => out.extend_from_slice(buf.format(magnitude).as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float_text(f: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, f);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn float_fast_path_agrees_with_python_repr() {
        let special = [
            0.0,
            -0.0,
            1.0,
            0.1,
            1e-4,
            1.5e-4,
            1e-5,
            9.99e-5,
            1e15,
            1e16,
            1.5e16,
            123.456,
            1e22,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            0.00012345,
        ];
        for f in special.into_iter().flat_map(|f| [f, -f]) {
            assert_eq!(float_text(f), python_float_repr(f), "{f:e}");
        }
        // Bits spread over every exponent.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            if f.is_finite() {
                assert_eq!(float_text(f), python_float_repr(f), "{f:e}");
            }
        }
    }

    #[test]
    fn ints_of_every_width() {
        for (neg, m, want) in [
            (false, 0u128, "0"),
            (true, 1, "-1"),
            (false, u128::MAX, "340282366920938463463374607431768211455"),
            (
                true,
                1u128 << 127,
                "-170141183460469231731687303715884105728",
            ),
        ] {
            let mut out = Vec::new();
            write_int(&mut out, neg, m);
            assert_eq!(out, want.as_bytes());
        }
    }
}
