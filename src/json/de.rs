//! The deserializer: what Python's `json.loads` reads, straight into any
//! `Deserialize` type, on jiter's `Jiter` iterator.
//!
//! jiter parses numbers, literals and well-formed strings (borrowed from
//! the input when they hold no escape). A string jiter refuses goes to
//! [`unescape`](super::unescape), which reads lone surrogates as Python
//! does; the jiter is then re-seated past it ([`Deserializer::reseat`]).
//! The parser state itself is in [`reader`](super::reader).

use jiter::{JiterError, NumberAny, NumberInt, Peek};
use serde::de::{self, value::BytesDeserializer, IntoDeserializer, Visitor};

use super::access::{Enum, Map, Seq};
use super::error::{DeError, Kind};
use super::reader::{string_fallback, Deserializer, Result};
use super::unescape::{self, Decoded};
use crate::marshal::MAX_INT_DIGITS;
use crate::value::magic::{encode_bigint, visit_magic, Magic, VALUE_TOKEN};

impl<'de> Deserializer<'de> {
    fn number(&mut self, peek: Peek, start: usize) -> Result<NumberAny> {
        match self.jiter.known_number(peek) {
            Ok(n) => Ok(n),
            Err(e) => self.number_error(e, start),
        }
    }

    /// A number jiter refused: past its digit limit (checked, as Python's
    /// 4300, before converting anything) it may still be a float with a
    /// long integer part, which Python's `float()` reads.
    #[cold]
    #[inline(never)]
    fn number_error(&mut self, e: JiterError, start: usize) -> Result<NumberAny> {
        let e = DeError::jiter(e, self.base);
        if !matches!(e.kind(), Kind::IntTooLarge) {
            return Err(e);
        }
        match long_float(self.data, start) {
            Some((f, end)) => {
                self.reseat(end);
                Ok(NumberAny::Float(f))
            }
            None => Err(DeError::at(Kind::IntTooLarge, start)),
        }
    }

    fn visit_number<V: Visitor<'de>>(
        &mut self,
        peek: Peek,
        start: usize,
        exact: bool,
        visitor: V,
    ) -> Result<V::Value> {
        match self.number(peek, start)? {
            NumberAny::Float(f) => visitor.visit_f64(f),
            NumberAny::Int(NumberInt::Int(i)) => visitor.visit_i64(i),
            NumberAny::Int(NumberInt::BigInt(b)) => {
                if let Ok(v) = u64::try_from(&b) {
                    visitor.visit_u64(v)
                } else if let Ok(v) = i128::try_from(&b) {
                    visitor.visit_i128(v)
                } else if let Ok(v) = u128::try_from(&b) {
                    visitor.visit_u128(v)
                } else if exact {
                    let (sign, magnitude) = b.to_bytes_le();
                    let mut payload = Vec::with_capacity(magnitude.len() + 1);
                    encode_bigint(sign == num_bigint::Sign::Minus, &magnitude, &mut payload);
                    visit_magic(visitor, Magic::BigInt, BytesDeserializer::new(&payload))
                } else {
                    let text = &self.data[start..self.pos()];
                    let digits = text.len() - usize::from(text.first() == Some(&b'-'));
                    Err(DeError::at(
                        Kind::Mismatch(format!(
                            "int of {digits} digits does not fit 128 bits; decode into miniray::Value"
                        )),
                        start,
                    ))
                }
            }
        }
    }

    fn visit_string<V: Visitor<'de>>(
        &mut self,
        start: usize,
        exact: bool,
        visitor: V,
    ) -> Result<V::Value> {
        let e = match self.jiter.known_str() {
            Ok(s) => return visitor.visit_str(s),
            Err(e) => e,
        };
        if !string_fallback(&e) {
            return Err(self.jerr(e));
        }
        let (decoded, end) = unescape::decode(self.data, start)?;
        self.reseat(end);
        match decoded {
            Decoded::Str(s) => visitor.visit_string(s),
            Decoded::Surrogates(b) if exact => {
                visit_magic(visitor, Magic::Surrogates, BytesDeserializer::new(&b))
            }
            Decoded::Surrogates(_) => Err(DeError::at(Kind::LoneSurrogate, start)),
        }
    }

    /// An integer into a typed field: up to 18 digits with no fraction or
    /// exponent is read here, straight from the text (jiter's number path
    /// decides int or float, big or small, and costs about 4x as much);
    /// anything else (a float, a longer int, a malformed number, not a
    /// number) takes the general path, which reads or refuses it.
    fn int<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let peek = self.peek()?;
        let start = self.pos();
        let Some((v, end)) = small_int(self.data, start).filter(|_| peek.is_num()) else {
            return self.any(false, visitor);
        };
        self.reseat(end);
        let r = match u64::try_from(v) {
            Ok(u) => visitor.visit_u64(u),
            Err(_) => visitor.visit_i64(v),
        };
        r.map_err(|e: DeError| e.or_at(start))
    }

    fn any<V: Visitor<'de>>(&mut self, exact: bool, visitor: V) -> Result<V::Value> {
        let peek = self.peek()?;
        let start = self.pos();
        let r = match peek {
            Peek::Null => {
                self.jiter.known_null().map_err(|e| self.jerr(e))?;
                visitor.visit_unit()
            }
            Peek::True | Peek::False => {
                let b = self.jiter.known_bool(peek).map_err(|e| self.jerr(e))?;
                visitor.visit_bool(b)
            }
            Peek::String => self.visit_string(start, exact, visitor),
            Peek::Array => self.enter(start).and_then(|()| {
                let mut seq = Seq::new(self);
                let v = visitor.visit_seq(&mut seq)?;
                seq.finish()?;
                self.leave();
                Ok(v)
            }),
            Peek::Object => self.enter(start).and_then(|()| {
                let mut map = Map::new(self);
                let v = visitor.visit_map(&mut map)?;
                map.finish()?;
                self.leave();
                Ok(v)
            }),
            _ => self.visit_number(peek, start, exact, visitor),
        };
        r.map_err(|e| e.or_at(start))
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = DeError;

    fn is_human_readable(&self) -> bool {
        true
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let exact = std::mem::take(&mut self.exact);
        self.any(exact, visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let peek = self.peek()?;
        if !peek.is_num() {
            return self.any(false, visitor);
        }
        let start = self.pos();
        // jiter's float path (half the cost of its int/float one) reads an
        // int too; only an int past MAX_INT_DIGITS, which Python refuses,
        // must be told apart, and it is long enough to be looked at.
        let base = self.base;
        let f = self
            .jiter
            .known_float(peek)
            .map_err(|e| DeError::jiter(e, base))?;
        let text = &self.data[start..self.pos()];
        if text.len() > MAX_INT_DIGITS && !text.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            let digits = text.len() - usize::from(text[0] == b'-');
            if digits > MAX_INT_DIGITS {
                return Err(DeError::at(Kind::IntTooLarge, start));
            }
        }
        visitor.visit_f64(f).map_err(|e: DeError| e.or_at(start))
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.int(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.int(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.int(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.int(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.int(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.int(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.int(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.int(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek()? == Peek::Null {
            let start = self.pos();
            self.jiter.known_null().map_err(|e| self.jerr(e))?;
            visitor.visit_none().map_err(|e: DeError| e.or_at(start))
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        self.peek()?;
        Err(DeError::at(Kind::Unsupported("bytes"), self.pos()))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == VALUE_TOKEN {
            self.exact = true;
        }
        let r = visitor.visit_newtype_struct(&mut *self);
        self.exact = false;
        r
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let peek = self.peek()?;
        let start = self.pos();
        let r = match peek {
            Peek::String => match self.jiter.known_str() {
                Ok(s) => visitor.visit_enum(s.into_deserializer()),
                Err(e) if string_fallback(&e) => {
                    let (decoded, end) = unescape::decode(self.data, start)?;
                    self.reseat(end);
                    match decoded {
                        Decoded::Str(s) => visitor.visit_enum(s.into_deserializer()),
                        Decoded::Surrogates(_) => Err(DeError::at(Kind::LoneSurrogate, start)),
                    }
                }
                Err(e) => Err(self.jerr(e)),
            },
            Peek::Object => self.enter(start).and_then(|()| {
                let v = visitor.visit_enum(Enum::new(self, start))?;
                Enum::finish(self)?;
                self.leave();
                Ok(v)
            }),
            _ => self.any(false, EnumShape).map(|never| match never {}),
        };
        r.map_err(|e| e.or_at(start))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        // Exact mode: a big int or lone surrogate is skipped, not refused.
        self.any(true, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i128 u128 char str string
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// The integer at `data[at..]` if it is one JSON reads as written: an
/// optional `-`, then `0` or 1 to 18 digits not starting with `0`, with no
/// `.`, `e` or `E` after; its value and where it ends. `None` otherwise
/// (the general path then reads or refuses it).
fn small_int(data: &[u8], at: usize) -> Option<(i64, usize)> {
    let negative = data.get(at) == Some(&b'-');
    let first = at + usize::from(negative);
    let rest = data.get(first..)?;
    // Most ints have under 8 digits and 8 bytes after their start: one
    // look at those 8 bytes reads them.
    if let Some(bytes) = rest.first_chunk::<8>() {
        let (n, v) = eight_digits(u64::from_le_bytes(*bytes));
        if n < 8 {
            return int_ends(rest, first, negative, n, v);
        }
    }
    long_small_int(rest, first, negative)
}

/// [`small_int`] for 8 digits or more, or near the end of the data: eight
/// bytes at a time while eight are left, then one at a time.
#[inline(never)]
fn long_small_int(rest: &[u8], first: usize, negative: bool) -> Option<(i64, usize)> {
    let (mut v, mut digits) = (0u64, 0usize);
    while let Some(bytes) = rest.get(digits..).and_then(<[u8]>::first_chunk::<8>) {
        let (n, value) = eight_digits(u64::from_le_bytes(*bytes));
        if digits + n > MAX_SMALL_DIGITS {
            return None;
        }
        // At most 18 digits in all: below 10^18, no overflow.
        v = v * POW10[n] + value;
        digits += n;
        if n < 8 {
            return int_ends(rest, first, negative, digits, v);
        }
    }
    for &b in &rest[digits..] {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if digits == MAX_SMALL_DIGITS {
            return None;
        }
        v = v * 10 + u64::from(d);
        digits += 1;
    }
    int_ends(rest, first, negative, digits, v)
}

/// The int whose `digits` digits (value `v`, under 10^18) start `rest`, if
/// JSON reads it as written: some digits, no leading zero, no fraction or
/// exponent after.
#[inline]
fn int_ends(
    rest: &[u8],
    first: usize,
    negative: bool,
    digits: usize,
    v: u64,
) -> Option<(i64, usize)> {
    if digits == 0 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    if matches!(rest.get(digits), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    // Below 10^18: fits an i64 either way.
    let v = v as i64;
    Some((if negative { -v } else { v }, first + digits))
}

/// The most digits [`small_int`] reads (10^18 < 2^63).
const MAX_SMALL_DIGITS: usize = 18;

/// 10^n for n in 0..=8.
const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The run of ASCII digits eight bytes (first byte lowest) start with: how
/// many (0 to 8) and their value. A byte is a digit iff `b - '0'` is below
/// 10, i.e. neither it nor it plus 6 has a high nibble; the digits before
/// the first non-digit borrow and carry nothing, so that byte is found
/// whatever follows it.
#[inline]
fn eight_digits(x: u64) -> (usize, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let sub = x.wrapping_sub(ONES * u64::from(b'0'));
    let high = (sub | sub.wrapping_add(ONES * 6)) & (ONES * 0xF0);
    let n = (high.trailing_zeros() / 8) as usize;
    if n == 0 {
        return (0, 0);
    }
    // The n digits to the top, zeros (leading digits) below them.
    let mut d = sub << (8 * (8 - n));
    d = (d & (ONES * 0x0F)).wrapping_mul(2561) >> 8;
    d = (d & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601) >> 16;
    d = (d & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001) >> 32;
    (n, d)
}

/// No value: what [`EnumShape`] never produces.
enum Never {}

/// A float whose integer part is longer than jiter reads (`MAX_INT_DIGITS`
/// digits), as Python's `float()` reads it: the value and where it ends;
/// `None` if the number at `start` is an int (or malformed).
fn long_float(data: &[u8], start: usize) -> Option<(f64, usize)> {
    let digits_from = |mut i: usize| {
        while data.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = digits_from(start + usize::from(data.get(start) == Some(&b'-')));
    if !matches!(data.get(i), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    if data[i] == b'.' {
        let end = digits_from(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(data.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(data.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits_from(i);
        if end == i {
            return None;
        }
        i = end;
    }
    let text = std::str::from_utf8(&data[start..i]).ok()?;
    Some((text.parse().ok()?, i))
}

/// Refuses any value but a str or a dict as an enum, naming what came.
struct EnumShape;

impl<'de> Visitor<'de> for EnumShape {
    type Value = Never;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a str (unit variant) or a dict of one key (other variants)")
    }
}

#[cfg(test)]
mod tests {
    use super::small_int;

    /// What a typed integer field gets from `text`: the fast path's answer
    /// must be the general path's (read as `i128`, which takes it, then
    /// narrowed), for every width, in and out of arrays.
    fn agree<T>(text: &str)
    where
        T: serde::de::DeserializeOwned + TryFrom<i128> + PartialEq + Clone + std::fmt::Debug,
    {
        let general: Option<T> = crate::json::from_slice::<i128>(text.as_bytes())
            .ok()
            .and_then(|v| T::try_from(v).ok());
        let fast = crate::json::from_slice::<T>(text.as_bytes()).ok();
        assert_eq!(fast, general, "{text:?} as {}", std::any::type_name::<T>());
        let fast = crate::json::from_slice::<Vec<T>>(format!("[ {text} ,{text}]").as_bytes()).ok();
        assert_eq!(fast, general.map(|g| vec![g.clone(), g]), "[{text:?}, ..]");
    }

    #[test]
    fn typed_ints_read_as_the_general_path_does() {
        let texts = [
            "0",
            "-0",
            "7",
            "-7",
            "255",
            "256",
            "-128",
            "-129",
            "65535",
            "65536",
            "2147483647",
            "2147483648",
            "-2147483649",
            "4294967295",
            "4294967296",
            "123456789012345678",
            "-123456789012345678",
            "999999999999999999",
            "1234567890123456789",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "01",
            "-01",
            "00",
            "-",
            "1.0",
            "1e2",
            "1E2",
            "-1.5",
            "1.",
            "NaN",
            "Infinity",
            "\"1\"",
            "true",
            "null",
            "[1]",
            "1 2",
            "1x",
        ];
        for t in texts {
            agree::<u8>(t);
            agree::<i8>(t);
            agree::<u16>(t);
            agree::<i16>(t);
            agree::<u32>(t);
            agree::<i32>(t);
            agree::<u64>(t);
            agree::<i64>(t);
        }
    }

    /// The digit by digit reading `small_int` must agree with.
    fn reference(data: &[u8], at: usize) -> Option<(i64, usize)> {
        let negative = data.get(at) == Some(&b'-');
        let first = at + usize::from(negative);
        let rest = data.get(first..)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 18 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        if matches!(rest.get(digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let v: i64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        Some((if negative { -v } else { v }, first + digits))
    }

    #[test]
    fn small_int_agrees_with_a_digit_by_digit_reading() {
        // Every length of digit run from 0 to 20, followed by every byte
        // value, then by enough bytes or none (the eight-byte path and the
        // tail), with and without a sign, at offsets 0 and 3.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in 0..=20usize {
            for stop in 0..=255u8 {
                for pad in [0usize, 1, 7, 9] {
                    for sign in [false, true] {
                        let mut line = b"[1,".to_vec();
                        if sign {
                            line.push(b'-');
                        }
                        for i in 0..len {
                            let d = (next() % 10) as u8;
                            // A leading zero now and then.
                            line.push(b'0' + if i == 0 && next() % 8 == 0 { 0 } else { d });
                        }
                        line.push(stop);
                        line.extend(std::iter::repeat_n(b'5', pad));
                        assert_eq!(
                            small_int(&line, 3),
                            reference(&line, 3),
                            "{:?}",
                            String::from_utf8_lossy(&line)
                        );
                        assert_eq!(small_int(&line[3..], 0), reference(&line[3..], 0));
                    }
                }
            }
        }
    }

    #[test]
    fn a_small_int_ends_where_its_digits_do() {
        assert_eq!(small_int(b"[12,3]", 1), Some((12, 3)));
        assert_eq!(small_int(b"-45]", 0), Some((-45, 3)));
        assert_eq!(small_int(b"0", 0), Some((0, 1)));
        assert_eq!(small_int(b"012", 0), None);
        assert_eq!(small_int(b"12.5", 0), None);
        assert_eq!(small_int(b"12e1", 0), None);
        assert_eq!(small_int(b"-", 0), None);
        assert_eq!(small_int(b"1234567890123456789", 0), None);
        assert_eq!(
            small_int(b"123456789012345678", 0),
            Some((123456789012345678, 18))
        );
    }

    #[test]
    fn an_out_of_range_int_is_named_at_its_place() {
        let e = crate::json::from_slice::<Vec<u8>>(b"[1, 300]").expect_err("300 into u8");
        let shown = e.to_string();
        assert!(shown.contains("300") && shown.contains("u8"), "{shown}");
        let e = crate::json::from_slice::<u64>(b"-5").expect_err("-5 into u64");
        assert!(e.to_string().contains("-5"), "{e}");
    }
}
