//! Python strings that Rust's `String` cannot hold: lone surrogates, kept
//! as generalized UTF-8 (what Python's `"surrogatepass"` handler writes, and
//! so what marshal carries).

use super::Value;

/// A Python `str` holding at least one lone surrogate (U+D800..U+DFFF),
/// stored as generalized UTF-8: UTF-8 in which each surrogate code point is
/// encoded on its own in three bytes, as Python's `"surrogatepass"` error
/// handler writes it. Two surrogates that would pair in UTF-16 stay two
/// code points, as in Python. Build one with [`Value::from_code_points`]
/// or [`Value::from_generalized_utf8`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SurrogateStr(Box<[u8]>);

impl SurrogateStr {
    /// The generalized UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The code points, surrogates included.
    pub fn code_points(&self) -> impl Iterator<Item = u32> + '_ {
        Decoder(&self.0)
    }

    /// The text with each lone surrogate replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> String {
        self.code_points()
            .map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }
}

/// Decodes already-validated generalized UTF-8.
struct Decoder<'a>(&'a [u8]);

impl Iterator for Decoder<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let (c, len) = decode_one(self.0)?;
        self.0 = &self.0[len..];
        Some(c)
    }
}

/// The first code point of `bytes` and its length, or `None` at the end or
/// at anything generalized UTF-8 does not allow (overlong forms, past
/// U+10FFFF, truncated sequences).
fn decode_one(bytes: &[u8]) -> Option<(u32, usize)> {
    let b0 = *bytes.first()?;
    let cont = |i: usize| -> Option<u32> {
        match bytes.get(i) {
            Some(&b) if b & 0xC0 == 0x80 => Some(u32::from(b & 0x3F)),
            _ => None,
        }
    };
    match b0 {
        0x00..=0x7F => Some((u32::from(b0), 1)),
        0xC2..=0xDF => Some(((u32::from(b0 & 0x1F) << 6) | cont(1)?, 2)),
        0xE0..=0xEF => {
            let c = (u32::from(b0 & 0x0F) << 12) | (cont(1)? << 6) | cont(2)?;
            (c >= 0x800).then_some((c, 3))
        }
        0xF0..=0xF4 => {
            let c = (u32::from(b0 & 0x07) << 18) | (cont(1)? << 12) | (cont(2)? << 6) | cont(3)?;
            (0x1_0000..=0x10_FFFF).contains(&c).then_some((c, 4))
        }
        _ => None,
    }
}

pub(super) fn from_generalized_utf8(bytes: &[u8]) -> Option<Value> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Some(Value::Str(s.to_owned()));
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        let (_, len) = decode_one(rest)?;
        rest = &rest[len..];
    }
    // Valid generalized UTF-8 that is not UTF-8 holds a surrogate.
    Some(Value::SurrogateStr(SurrogateStr(bytes.into())))
}

pub(super) fn from_code_points<I: IntoIterator<Item = u32>>(points: I) -> Option<Value> {
    let mut out = Vec::new();
    let mut surrogates = false;
    for c in points {
        if (0xD800..=0xDFFF).contains(&c) {
            surrogates = true;
            out.extend_from_slice(&[
                0xE0 | (c >> 12) as u8,
                0x80 | ((c >> 6) & 0x3F) as u8,
                0x80 | (c & 0x3F) as u8,
            ]);
        } else {
            let ch = char::from_u32(c)?;
            let mut buf = [0; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
    }
    Some(if surrogates {
        Value::SurrogateStr(SurrogateStr(out.into()))
    } else {
        // Only chars were written, so this is UTF-8.
        Value::Str(String::from_utf8(out).unwrap_or_default())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrogates_round_trip_through_code_points() {
        let points = [0x61, 0xD800, 0x62, 0xD83D, 0xDE00, 0x1F600];
        let v = from_code_points(points).expect("valid");
        let Value::SurrogateStr(s) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(s.code_points().collect::<Vec<_>>(), points);
        assert_eq!(from_generalized_utf8(s.as_bytes()), Some(v.clone()));
        assert_eq!(s.to_string_lossy(), "a\u{fffd}b\u{fffd}\u{fffd}😀");
        assert_eq!(
            from_code_points([0x61, 0xE9]),
            Some(Value::Str("aé".into()))
        );
        assert_eq!(from_code_points([0x11_0000]), None);
    }

    #[test]
    fn only_generalized_utf8_is_accepted() {
        // "\ud800" as surrogatepass writes it.
        assert!(matches!(
            from_generalized_utf8(b"\xed\xa0\x80"),
            Some(Value::SurrogateStr(_))
        ));
        for bad in [
            &b"\xc0\x80"[..],
            b"\xe0\x80\x80",
            b"\xf4\x90\x80\x80",
            b"\xed\xa0",
            b"\xff",
        ] {
            assert_eq!(from_generalized_utf8(bad), None, "{bad:?}");
        }
    }
}
