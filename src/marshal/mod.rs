//! Python's `marshal` format, version 4, for JSON-like values.
//!
//! The decoder accepts everything CPython 3.11's `marshal.dumps` writes for
//! None, bools, ints of any size (up to [`MAX_INT_DIGITS`] decimal digits),
//! floats, str (every string code), lists, tuples (as arrays) and dicts with
//! str keys, including `FLAG_REF` slots and `r` back-references. Anything
//! else is refused with a [`DecodeErrorKind`](crate::DecodeErrorKind) naming it.
//!
//! Decoding is bounded by its input, whatever the input: nesting is capped
//! at [`MAX_DEPTH`]; every byte of the decoded value (72 per [`Value`](serde_json::Value), each
//! string's and number's text, each dict entry at its worst growth) and of
//! the decoder's own tables is charged before it is allocated against
//! [`decode_budget`] (`80 × input + 512 KiB` bytes), and a line past it is
//! refused with [`DecodeErrorKind::TooLarge`](crate::DecodeErrorKind::TooLarge). Work is linear too: every
//! step produces charged bytes, and a big int is converted to decimal once.
//!
//! A back-reference is resolved by decoding the referenced object's bytes
//! again (a big int's text comes from a cache), so nothing is cloned just
//! in case it is referenced later, and each copy a reference makes is
//! charged like the original: references cannot amplify a small line into
//! a large value.

mod decode;
mod digits;
mod encode;
mod float_repr;

pub use decode::{decode, decode_budget};
pub use encode::encode;
pub use float_repr::python_float_repr;

/// Deepest nesting of lists, tuples and dicts the decoder accepts: 127, the
/// same as serde_json's recursion limit, so both formats accept exactly the
/// same values (what one decodes, the other can carry).
pub const MAX_DEPTH: usize = 127;

/// Largest integer, in decimal digits, that either direction converts: the
/// same as CPython's default `sys.get_int_max_str_digits()`, and counted as
/// CPython does, without the sign (`-(10**4300 - 1)` passes, `10**4300`
/// does not).
pub const MAX_INT_DIGITS: usize = 4300;

/// A marshal long of more 15-bit digits than this is refused before any work:
/// 954 digits are at least 2^14295 > 10^4303, past [`MAX_INT_DIGITS`].
pub(crate) const MAX_LONG_DIGITS: usize = 953;

/// Bit 7 of a type code: the object takes the next slot of the reference table.
pub(crate) const FLAG_REF: u8 = 0x80;

#[cfg(test)]
mod tests {
    use super::digits::digits_to_decimal;
    use super::*;
    use crate::error::DecodeErrorKind;
    use serde_json::json;
    use serde_json::Value;

    fn roundtrip(v: &Value) -> Value {
        let mut out = Vec::new();
        encode(v, &mut out).expect("encode");
        decode(&out).expect("decode")
    }

    #[test]
    fn scalars_and_containers_roundtrip() {
        for v in [
            json!(null),
            json!(true),
            json!(0),
            json!(-1),
            json!(2147483648u64),
            json!(-9223372036854775808i64),
            json!(u64::MAX),
            json!(0.1),
            json!(-0.0),
            json!("é€😀"),
            json!({"b": [1, 2.5, null], "a": {}}),
            json!([[], {}, ""]),
        ] {
            assert_eq!(roundtrip(&v), v, "{v}");
        }
    }

    #[test]
    fn floats_print_as_python_repr() {
        for (f, text) in [
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1e308, "1e+308"),
            (5e-324, "5e-324"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456789.125, "123456789.125"),
            (-1.5e-7, "-1.5e-07"),
            (2.5, "2.5"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (1e-100, "1e-100"),
            (9007199254740992.0, "9007199254740992.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.001, "0.001"),
        ] {
            assert_eq!(python_float_repr(f), text);
        }
    }

    #[test]
    fn big_ints_stay_exact() {
        for text in [
            "1267650600228229401496703205376",
            "-1267650600228229401496703205376",
            "-9223372036854775809",
            "340282366920938463463374607431768211456",
        ] {
            let v: Value = serde_json::from_str(text).expect("parse");
            let back = roundtrip(&v);
            assert_eq!(back.to_string(), text);
        }
    }

    #[test]
    fn seed_example_line() {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode("e9oBa1sDAAAA6QEAAADnAAAAAAAABEBOMA==")
            .expect("b64");
        assert_eq!(
            decode(&bytes).expect("decode"),
            json!({"k": [1, 2.5, null]})
        );
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        // A list claiming 2^31 items in 5 bytes.
        let e = decode(b"[\x00\x00\x00\x80").expect_err("refused");
        assert!(matches!(e.kind, DecodeErrorKind::UnexpectedEnd));
        let e = decode(b"l\xff\xff\xff\x7f").expect_err("refused");
        assert!(matches!(e.kind, DecodeErrorKind::IntTooLarge));
    }

    #[test]
    fn reference_amplification_hits_the_budget() {
        // Slot 0: a flagged list of 200 Nones; then lists of references to it,
        // each level referencing the previous one 200 times.
        let mut data = vec![b'[' | FLAG_REF];
        data.extend_from_slice(&3u32.to_le_bytes());
        data.push(0x80 | b'[');
        data.extend_from_slice(&200u32.to_le_bytes());
        data.extend(std::iter::repeat_n(b'N', 200));
        for level in 0..2u32 {
            data.push(0x80 | b'[');
            data.extend_from_slice(&200u32.to_le_bytes());
            for _ in 0..200 {
                data.push(b'r');
                data.extend_from_slice(&(level + 1).to_le_bytes());
            }
        }
        let e = decode(&data).expect_err("over budget");
        assert!(matches!(e.kind, DecodeErrorKind::TooLarge { .. }), "{e}");
    }

    /// Base-2^15 digits to decimal the slow obvious way (repeated division
    /// by 10), the reference for `digits_to_decimal`.
    fn decimal_reference(negative: bool, digits: &[u16]) -> String {
        let mut digits = digits.to_vec();
        let mut out = Vec::new();
        while !digits.is_empty() {
            let mut rem = 0u32;
            for d in digits.iter_mut().rev() {
                let x = (rem << 15) | u32::from(*d);
                *d = (x / 10) as u16;
                rem = x % 10;
            }
            out.push(b'0' + rem as u8);
            while digits.last() == Some(&0) {
                digits.pop();
            }
        }
        if negative {
            out.push(b'-');
        }
        out.reverse();
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn decimal_conversion_matches_the_reference() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0x7fff) as u16
        };
        let sizes = (1..=40).chain([99, 100, 501, 952, 953]);
        for n in sizes {
            for fill in [None, Some(0x7fff), Some(1)] {
                let mut digits: Vec<u16> = (0..n).map(|_| fill.unwrap_or_else(&mut next)).collect();
                if digits[n - 1] == 0 {
                    digits[n - 1] = 1;
                }
                let negative = n % 2 == 0;
                let want = decimal_reference(negative, &digits);
                let got = digits_to_decimal(negative, &digits);
                if want.trim_start_matches('-').len() > MAX_INT_DIGITS {
                    assert_eq!(got, None, "{n} digits");
                } else {
                    assert_eq!(got.as_deref(), Some(want.as_str()), "{n} digits");
                }
            }
        }
    }

    #[test]
    fn referenced_big_int_is_converted_once() {
        // A flagged 950-digit int referenced twice decodes three equal texts.
        let mut data = vec![b'[', 3, 0, 0, 0, b'l' | FLAG_REF];
        data.extend_from_slice(&950i32.to_le_bytes());
        for i in 0..950u16 {
            data.extend_from_slice(&(i % 0x7fff + 1).to_le_bytes());
        }
        data.extend_from_slice(&[b'r', 0, 0, 0, 0, b'r', 0, 0, 0, 0]);
        let v = decode(&data).expect("decode");
        let items = v.as_array().expect("list");
        assert_eq!(items.len(), 3);
        assert!(items[1] == items[0] && items[2] == items[0]);
    }

    #[test]
    fn cycle_is_refused() {
        // A flagged list whose only item refers to itself.
        let mut data = vec![b'[' | FLAG_REF, 1, 0, 0, 0, b'r', 0, 0, 0, 0];
        let e = decode(&data).expect_err("cycle");
        assert!(matches!(e.kind, DecodeErrorKind::UnfinishedReference(0)));
        data.push(b'N');
        assert!(decode(&data).is_err());
    }

    #[test]
    fn depth_limit_matches_serde_json() {
        for d in [MAX_DEPTH, MAX_DEPTH + 1] {
            let text = format!("{}{}", "[".repeat(d), "]".repeat(d));
            let json_ok = serde_json::from_str::<Value>(&text).is_ok();
            let mut data = Vec::new();
            for _ in 0..d - 1 {
                data.extend_from_slice(&[b'[', 1, 0, 0, 0]);
            }
            data.extend_from_slice(&[b'[', 0, 0, 0, 0]);
            assert_eq!(decode(&data).is_ok(), json_ok, "depth {d}");
            assert_eq!(json_ok, d == MAX_DEPTH);
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut data = Vec::new();
        for _ in 0..MAX_DEPTH + 1 {
            data.extend_from_slice(&[b'[', 1, 0, 0, 0]);
        }
        data.push(b'N');
        let e = decode(&data).expect_err("too deep");
        assert!(matches!(e.kind, DecodeErrorKind::TooDeep(_)));
    }
}
