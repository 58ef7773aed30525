//! `Display` for [`Value`]: Python's `repr`, as CPython 3.11 writes it.
//! The rules (and where they knowingly differ) are in the `value` module
//! docs, section "Display is `repr`".

use std::fmt::{self, Display, Formatter, Write};

use super::printable::is_printable;
use super::Value;

/// Python's `repr` (see the [module docs](crate::value#display-is-repr) for the details).
///
/// ```
/// use miniray::py;
/// let v = py!({"a": (1,), "b": [2.0, None, true], "c": b"\n'", "d": set[]});
/// assert_eq!(v.to_string(), r#"{'a': (1,), 'b': [2.0, None, True], 'c': b"\n'", 'd': set()}"#);
/// ```
impl Display for Value {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::BigInt(b) => write!(f, "{b}"),
            Value::Float(x) => f.write_str(&float_repr(*x)),
            Value::Complex { re, im } => complex_repr(*re, *im, f),
            Value::Str(s) => str_repr(|| s.chars().map(u32::from), f),
            Value::SurrogateStr(s) => str_repr(|| s.code_points(), f),
            Value::Bytes(b) => bytes_repr(b, f),
            Value::Tuple(items) => {
                f.write_char('(')?;
                items_repr(items, f)?;
                if items.len() == 1 {
                    f.write_char(',')?;
                }
                f.write_char(')')
            }
            Value::List(items) => {
                f.write_char('[')?;
                items_repr(items, f)?;
                f.write_char(']')
            }
            Value::Dict(d) => {
                f.write_char('{')?;
                for (i, (k, v)) in d.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_char('}')
            }
            Value::Set(s) if s.is_empty() => f.write_str("set()"),
            Value::Set(s) => {
                f.write_char('{')?;
                items_repr(s.iter(), f)?;
                f.write_char('}')
            }
            Value::FrozenSet(s) if s.is_empty() => f.write_str("frozenset()"),
            Value::FrozenSet(s) => {
                f.write_str("frozenset({")?;
                items_repr(s.iter(), f)?;
                f.write_str("})")
            }
        }
    }
}

fn items_repr<'a>(
    items: impl IntoIterator<Item = &'a Value>,
    f: &mut Formatter<'_>,
) -> fmt::Result {
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// `repr(float)`.
fn float_repr(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        crate::marshal::python_float_repr(x)
    }
}

/// A complex part as CPython formats it (`repr` without the `.0` it adds
/// to integral floats), with a sign when `sign` is set (`+nan` for any NaN).
fn part_repr(x: f64, sign: bool) -> String {
    let mut text = float_repr(x);
    if let Some(stripped) = text.strip_suffix(".0") {
        text.truncate(stripped.len());
    }
    if sign && !text.starts_with('-') {
        text.insert(0, '+');
    }
    text
}

/// `repr(complex)`: no parentheses when the real part is `+0.0`.
fn complex_repr(re: f64, im: f64, f: &mut Formatter<'_>) -> fmt::Result {
    if re == 0.0 && re.is_sign_positive() {
        write!(f, "{}j", part_repr(im, false))
    } else {
        write!(f, "({}{}j)", part_repr(re, false), part_repr(im, true))
    }
}

/// CPython's `unicode_repr`.
fn str_repr<I: Iterator<Item = u32>>(points: impl Fn() -> I, f: &mut Formatter<'_>) -> fmt::Result {
    let (single, double) = points().fold((false, false), |(s, d), c| {
        (s || c == u32::from('\''), d || c == u32::from('"'))
    });
    let quote = if single && !double { '"' } else { '\'' };
    f.write_char(quote)?;
    for c in points() {
        match char::from_u32(c) {
            Some(ch) if ch == quote || ch == '\\' => write!(f, "\\{ch}")?,
            Some('\t') => f.write_str("\\t")?,
            Some('\n') => f.write_str("\\n")?,
            Some('\r') => f.write_str("\\r")?,
            Some(ch) if c < 0x20 || c == 0x7F => write!(f, "\\x{:02x}", u32::from(ch))?,
            Some(ch) if c < 0x7F || is_printable(c) => f.write_char(ch)?,
            _ if c <= 0xFF => write!(f, "\\x{c:02x}")?,
            _ if c <= 0xFFFF => write!(f, "\\u{c:04x}")?,
            _ => write!(f, "\\U{c:08x}")?,
        }
    }
    f.write_char(quote)
}

/// CPython's `bytes_repr`.
fn bytes_repr(b: &[u8], f: &mut Formatter<'_>) -> fmt::Result {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    f.write_char('b')?;
    f.write_char(char::from(quote))?;
    for &byte in b {
        match byte {
            _ if byte == quote || byte == b'\\' => write!(f, "\\{}", char::from(byte))?,
            b'\t' => f.write_str("\\t")?,
            b'\n' => f.write_str("\\n")?,
            b'\r' => f.write_str("\\r")?,
            0x20..=0x7E => f.write_char(char::from(byte))?,
            _ => write!(f, "\\x{byte:02x}")?,
        }
    }
    f.write_char(char::from(quote))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::py;

    fn repr(v: &Value) -> String {
        v.to_string()
    }

    #[test]
    fn scalars_print_as_python() {
        assert_eq!(repr(&py!(None)), "None");
        assert_eq!(repr(&py!(false)), "False");
        assert_eq!(repr(&Value::from(u128::MAX)), u128::MAX.to_string());
        assert_eq!(repr(&py!(1.0)), "1.0");
        assert_eq!(repr(&py!(1e16)), "1e+16");
        assert_eq!(repr(&py!(f64::NAN)), "nan");
        assert_eq!(repr(&py!(f64::NEG_INFINITY)), "-inf");
        assert_eq!(repr(&py!(-0.0)), "-0.0");
    }

    #[test]
    fn complex_prints_as_python() {
        let c = |re, im| repr(&Value::complex(re, im));
        assert_eq!(c(1.0, 2.0), "(1+2j)");
        assert_eq!(c(0.0, 2.0), "2j");
        assert_eq!(c(0.0, -0.0), "-0j");
        assert_eq!(c(-0.0, -0.0), "(-0-0j)");
        assert_eq!(c(-0.0, 1.0), "(-0+1j)");
        assert_eq!(c(1.0, f64::NAN), "(1+nanj)");
        assert_eq!(c(1.0, -f64::NAN), "(1+nanj)");
        assert_eq!(c(f64::INFINITY, f64::NEG_INFINITY), "(inf-infj)");
        assert_eq!(c(0.0, 1e16), "1e+16j");
        assert_eq!(c(1.5, 0.0), "(1.5+0j)");
    }

    #[test]
    fn strings_choose_quotes_and_escape_as_python() {
        assert_eq!(repr(&py!("a'b")), r#""a'b""#);
        assert_eq!(repr(&py!("a'b\"")), r#"'a\'b"'"#);
        assert_eq!(
            repr(&py!("\\\t\n\r\x00\x7f\u{80}\u{a0}é\u{ad}")),
            r"'\\\t\n\r\x00\x7f\x80\xa0é\xad'"
        );
        assert_eq!(
            repr(&py!("\u{2028}\u{378}\u{e0001}😀")),
            r"'\u2028\u0378\U000e0001😀'"
        );
        let lone = Value::from_code_points([0x61, 0xD800, 0xDFFF]).expect("valid");
        assert_eq!(repr(&lone), r"'a\ud800\udfff'");
    }

    #[test]
    fn bytes_choose_quotes_and_escape_as_python() {
        assert_eq!(repr(&py!(b"a'b")), r#"b"a'b""#);
        assert_eq!(repr(&py!(b"'\"")), r#"b'\'"'"#);
        assert_eq!(
            repr(&py!(b"\\\t\n\r\x00\x7f\x80\xff ~")),
            r"b'\\\t\n\r\x00\x7f\x80\xff ~'"
        );
    }

    #[test]
    fn containers_print_as_python() {
        assert_eq!(repr(&py!(())), "()");
        assert_eq!(repr(&py!((1,))), "(1,)");
        assert_eq!(repr(&py!((1, 2))), "(1, 2)");
        assert_eq!(repr(&py!([])), "[]");
        assert_eq!(repr(&py!({})), "{}");
        assert_eq!(repr(&py!({"a": [1, "b"]})), "{'a': [1, 'b']}");
        assert_eq!(repr(&py!(set[1, 2])), "{1, 2}");
        assert_eq!(repr(&py!(set[])), "set()");
        assert_eq!(repr(&py!(frozenset[1])), "frozenset({1})");
        assert_eq!(repr(&py!(frozenset[])), "frozenset()");
    }
}
