//! The slow path for strings jiter refuses but Python's `json.loads`
//! reads: `\uXXXX` escapes of lone surrogates (`"\ud800"`, `"a\udfffb"`)
//! and surrogates encoded in the raw bytes (Python decodes its input with
//! `"surrogatepass"`). Only strings jiter failed on come here, so it
//! decodes byte by byte, and is authoritative for their errors.

use super::error::{DeError, Kind};

/// A decoded JSON string.
pub(crate) enum Decoded {
    /// Valid Unicode.
    Str(String),
    /// Holds at least one lone surrogate: the code points in generalized
    /// UTF-8 (a surrogate as its three-byte form, as `"surrogatepass"`).
    Surrogates(Vec<u8>),
}

fn syntax(message: &str, position: usize) -> DeError {
    DeError::at(Kind::Syntax(message.into()), position)
}

/// Decodes the string whose opening quote is at `data[start]`; returns it
/// and the index just past its closing quote.
pub(crate) fn decode(data: &[u8], start: usize) -> Result<(Decoded, usize), DeError> {
    let mut out = Vec::new();
    let mut surrogates = false;
    let mut i = start + 1;
    loop {
        let Some(&b) = data.get(i) else {
            return Err(syntax("EOF while parsing a string", data.len()));
        };
        match b {
            b'"' => break,
            b'\\' => {
                let Some(&e) = data.get(i + 1) else {
                    return Err(syntax("EOF while parsing a string", data.len()));
                };
                i += 2;
                let short = match e {
                    b'"' | b'\\' | b'/' => e,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => 0,
                    _ => return Err(syntax("invalid escape", i - 1)),
                };
                if e != b'u' {
                    out.push(short);
                    continue;
                }
                let mut cp = hex4(data, i)?;
                i += 4;
                // A high surrogate escape followed by a low one is one
                // astral code point, as in Python; anything else stays lone.
                if (0xd800..0xdc00).contains(&cp) && data.get(i..i + 2) == Some(b"\\u") {
                    let low = hex4(data, i + 2)?;
                    if (0xdc00..0xe000).contains(&low) {
                        cp = 0x1_0000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                        i += 6;
                    }
                }
                surrogates |= (0xd800..0xe000).contains(&cp);
                push_code_point(&mut out, cp);
            }
            0x00..=0x1f => {
                return Err(syntax(
                    "control character (\\u0000-\\u001F) found while parsing a string",
                    i,
                ))
            }
            0x20..=0x7f => {
                out.push(b);
                i += 1;
            }
            _ => {
                let len = match b {
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    _ => 4,
                };
                let seq = data
                    .get(i..i + len)
                    .ok_or_else(|| DeError::at(Kind::InvalidUtf8, i))?;
                let encoded_surrogate =
                    b == 0xed && (0xa0..=0xbf).contains(&seq[1]) && seq[2] & 0xc0 == 0x80;
                if encoded_surrogate {
                    surrogates = true;
                } else if std::str::from_utf8(seq).is_err() {
                    return Err(DeError::at(Kind::InvalidUtf8, i));
                }
                out.extend_from_slice(seq);
                i += len;
            }
        }
    }
    let decoded = if surrogates {
        Decoded::Surrogates(out)
    } else {
        // Escapes only ever add valid code points and raw bytes were checked.
        Decoded::Str(String::from_utf8(out).map_err(|_| DeError::at(Kind::InvalidUtf8, start))?)
    };
    Ok((decoded, i + 1))
}

fn hex4(data: &[u8], at: usize) -> Result<u32, DeError> {
    let digits = data
        .get(at..at + 4)
        .ok_or_else(|| syntax("EOF while parsing a string", data.len()))?;
    let mut v = 0;
    for (k, &d) in digits.iter().enumerate() {
        let h = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(syntax("invalid escape", at + k)),
        };
        v = v << 4 | u32::from(h);
    }
    Ok(v)
}

/// A code point in generalized UTF-8 (surrogates encoded like any other
/// code point below 0x10000).
fn push_code_point(out: &mut Vec<u8>, cp: u32) {
    if cp < 0x80 {
        out.push(cp as u8);
    } else if cp < 0x800 {
        out.extend_from_slice(&[0xc0 | (cp >> 6) as u8, 0x80 | (cp & 0x3f) as u8]);
    } else if cp < 0x1_0000 {
        out.extend_from_slice(&[
            0xe0 | (cp >> 12) as u8,
            0x80 | (cp >> 6 & 0x3f) as u8,
            0x80 | (cp & 0x3f) as u8,
        ]);
    } else {
        out.extend_from_slice(&[
            0xf0 | (cp >> 18) as u8,
            0x80 | (cp >> 12 & 0x3f) as u8,
            0x80 | (cp >> 6 & 0x3f) as u8,
            0x80 | (cp & 0x3f) as u8,
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn surrogates(text: &[u8]) -> Vec<u8> {
        match decode(text, 0) {
            Ok((Decoded::Surrogates(b), end)) => {
                assert_eq!(end, text.len());
                b
            }
            Ok((Decoded::Str(s), _)) => panic!("no surrogate found in {s:?}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn lone_surrogates_and_pairs() {
        assert_eq!(surrogates(br#""\ud800""#), b"\xed\xa0\x80");
        assert_eq!(surrogates(br#""a\udfffb""#), b"a\xed\xbf\xbfb");
        // High then a non-low escape: both kept, the second decoded.
        assert_eq!(surrogates(br#""\ud800\u0041""#), b"\xed\xa0\x80A");
        // Raw encoded surrogate bytes ("surrogatepass").
        assert_eq!(surrogates(b"\"\xed\xa0\x80\""), b"\xed\xa0\x80");
        match decode(br#""\ud83d\ude00x""#, 0) {
            Ok((Decoded::Str(s), _)) => assert_eq!(s, "\u{1f600}x"),
            _ => panic!("a pair is one astral char"),
        }
    }

    #[test]
    fn errors_name_their_byte() {
        for (text, pos) in [
            (&br#""\ud80""#[..], 6),
            (br#""\x""#, 2),
            (b"\"a\x01\"", 2),
            (b"\"\xff\"", 1),
            (br#""abc"#, 4),
        ] {
            let e = decode(text, 0).err().expect("refused");
            assert_eq!(e.position(), Some(pos), "{text:?}: {e}");
        }
    }
}
