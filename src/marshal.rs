//! Python's `marshal` format, version 4, for JSON-like values.
//!
//! The decoder accepts everything CPython 3.11's `marshal.dumps` writes for
//! None, bools, ints of any size (up to [`MAX_INT_DIGITS`] decimal digits),
//! floats, str (every string code), lists, tuples (as arrays) and dicts with
//! str keys, including `FLAG_REF` slots and `r` back-references. Anything
//! else is refused with a [`DecodeErrorKind`] naming it.
//!
//! Decoding is bounded whatever the input: nesting is capped at
//! [`MAX_DEPTH`], no allocation is sized by a length field beyond the bytes
//! that remain, and the decoded value may hold at most
//! `64 * input_len + 65536` nodes (a str counts one node per 32 bytes), so
//! back-references cannot amplify a small input into a large value.
//!
//! A back-reference to a finished container is resolved by decoding the
//! container's bytes again, so containers are never cloned just in case
//! they are referenced later.

use serde_json::{Map, Number, Value};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::format::Format;

/// Deepest nesting of lists, tuples and dicts the decoder accepts: 127, the
/// same as serde_json's recursion limit, so both formats accept exactly the
/// same values (what one decodes, the other can carry).
pub const MAX_DEPTH: usize = 127;

/// Largest integer, in decimal digits, that either direction converts (the
/// same as CPython's default `sys.get_int_max_str_digits()`).
pub const MAX_INT_DIGITS: usize = 4300;

/// A marshal long of more 15-bit digits than this is refused before any work
/// (1000 digits = 15,000 bits > 4,300 decimal digits).
const MAX_LONG_DIGITS: usize = 1000;

const FLAG_REF: u8 = 0x80;

// ---------------------------------------------------------------- encoding

/// Appends the marshal (version 4) bytes of `v` to `out`.
///
/// Ints become `i` (32-bit) or `l` (any size), floats `g`, ASCII str `z`/`a`,
/// other str `u`, arrays lists `[`, objects dicts `{`. No back-references are
/// written; `marshal.loads` does not need them.
pub fn encode(v: &Value, out: &mut Vec<u8>) -> Result<(), &'static str> {
    match v {
        Value::Null => out.push(b'N'),
        Value::Bool(true) => out.push(b'T'),
        Value::Bool(false) => out.push(b'F'),
        Value::Number(n) => encode_number(n, out)?,
        Value::String(s) => encode_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            out.extend_from_slice(&len_u32(items.len())?.to_le_bytes());
            for item in items {
                encode(item, out)?;
            }
        }
        Value::Object(map) => {
            out.push(b'{');
            for (k, item) in map {
                encode_str(k, out);
                encode(item, out)?;
            }
            out.push(b'0');
        }
    }
    Ok(())
}

/// Appends `{key: [ids...], "msg": msg}` as marshal, without building it
/// as a value first.
pub(crate) fn encode_envelope(
    key: &str,
    ids: &[u64],
    msg: &Value,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    out.push(b'{');
    encode_str(key, out);
    out.push(b'[');
    out.extend_from_slice(&len_u32(ids.len())?.to_le_bytes());
    for &id in ids {
        encode_number(&Number::from(id), out)?;
    }
    encode_str("msg", out);
    encode(msg, out)?;
    out.push(b'0');
    Ok(())
}

fn len_u32(n: usize) -> Result<u32, &'static str> {
    u32::try_from(n).map_err(|_| "length does not fit marshal's 32 bits")
}

fn encode_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    if bytes.is_ascii() && bytes.len() < 256 {
        out.push(b'z');
        out.push(bytes.len() as u8);
    } else {
        // A str (< 4 GiB) was checked by the caller's line limit long before.
        out.push(if bytes.is_ascii() { b'a' } else { b'u' });
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

fn encode_number(n: &Number, out: &mut Vec<u8>) -> Result<(), &'static str> {
    if let Some(i) = n.as_i64() {
        if let Ok(small) = i32::try_from(i) {
            out.push(b'i');
            out.extend_from_slice(&small.to_le_bytes());
        } else {
            encode_long_u128(i < 0, u128::from(i.unsigned_abs()), out);
        }
        return Ok(());
    }
    let text = n.as_str();
    if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        let f: f64 = text.parse().map_err(|_| "unparsable float")?;
        if !f.is_finite() {
            return Err("float out of range");
        }
        out.push(b'g');
        out.extend_from_slice(&f.to_le_bytes());
        return Ok(());
    }
    if let Some(u) = n.as_u64() {
        encode_long_u128(false, u128::from(u), out);
        return Ok(());
    }
    encode_big_decimal(text, out)
}

fn encode_long_u128(negative: bool, mut mag: u128, out: &mut Vec<u8>) {
    let mut digits = [0u16; 9];
    let mut n = 0;
    while mag != 0 {
        digits[n] = (mag & 0x7fff) as u16;
        mag >>= 15;
        n += 1;
    }
    write_long(negative, &digits[..n], out);
}

fn write_long(negative: bool, digits: &[u16], out: &mut Vec<u8>) {
    out.push(b'l');
    let count = digits.len() as i32;
    out.extend_from_slice(&(if negative { -count } else { count }).to_le_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_le_bytes());
    }
}

/// Decimal text (an optional `-` and digits) to base-2^15 digits.
fn encode_big_decimal(text: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not an integer");
    }
    if body.len() > MAX_INT_DIGITS {
        return Err("integer has more than 4300 decimal digits");
    }
    let mut limbs: Vec<u16> = Vec::new();
    // Four decimal digits at a time: limb * 10^4 + carry stays under 2^32.
    let bytes = body.as_bytes();
    let first = bytes.len() % 4;
    let mut groups = Vec::with_capacity(bytes.len() / 4 + 1);
    if first > 0 {
        groups.push((&bytes[..first], 10u32.pow(first as u32)));
    }
    for g in bytes[first..].chunks(4) {
        groups.push((g, 10_000));
    }
    for (group, scale) in groups {
        let mut carry = group.iter().fold(0u32, |a, b| a * 10 + u32::from(b - b'0'));
        for limb in limbs.iter_mut() {
            let x = u32::from(*limb) * scale + carry;
            *limb = (x & 0x7fff) as u16;
            carry = x >> 15;
        }
        while carry != 0 {
            limbs.push((carry & 0x7fff) as u16);
            carry >>= 15;
        }
    }
    write_long(negative && !limbs.is_empty(), &limbs, out);
    Ok(())
}

// ---------------------------------------------------------------- decoding

/// Decodes one marshal value that must span all of `data`.
pub fn decode(data: &[u8]) -> Result<Value, DecodeError> {
    let mut d = Decoder {
        data,
        pos: 0,
        refs: Vec::new(),
        budget: data.len().saturating_mul(64).saturating_add(65_536),
    };
    let v = d.object(0, true)?;
    if d.pos != data.len() {
        return Err(d.err_at(d.pos, DecodeErrorKind::TrailingBytes));
    }
    Ok(v)
}

enum Slot {
    /// A container still being decoded.
    Pending,
    /// A finished scalar.
    Scalar(Value, usize),
    /// A finished container: decode again from `start` to copy it.
    Container { start: usize, cost: usize },
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    refs: Vec<Slot>,
    budget: usize,
}

impl<'a> Decoder<'a> {
    fn err_at(&self, position: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            format: Format::Marshal,
            position,
            kind,
        }
    }

    fn charge(&mut self, cost: usize) -> Result<(), DecodeError> {
        match self.budget.checked_sub(cost) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(self.err_at(self.pos, DecodeErrorKind::OverBudget)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err_at(self.data.len(), DecodeErrorKind::UnexpectedEnd))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }

    /// A length that must fit in the bytes left, each item taking at least
    /// `min_item` bytes. Caps every preallocation by the input size.
    fn count(&mut self, n: usize, min_item: usize) -> Result<usize, DecodeError> {
        let left = self.data.len() - self.pos;
        if n.saturating_mul(min_item) > left {
            return Err(self.err_at(self.data.len(), DecodeErrorKind::UnexpectedEnd));
        }
        Ok(n)
    }

    /// Decodes one object. `register` is false while replaying a container
    /// for a back-reference: its slots exist already.
    fn object(&mut self, depth: usize, register: bool) -> Result<Value, DecodeError> {
        self.object_cost(depth, register).map(|(v, _)| v)
    }

    fn object_cost(&mut self, depth: usize, register: bool) -> Result<(Value, usize), DecodeError> {
        let start = self.pos;
        let code = self.u8()?;
        let flag = register && code & FLAG_REF != 0;
        let ty = code & !FLAG_REF;
        let scalar = match ty {
            // Singletons never take a slot, flagged or not (as in CPython).
            b'N' => return self.charge(1).map(|_| (Value::Null, 1)),
            b'T' => return self.charge(1).map(|_| (Value::Bool(true), 1)),
            b'F' => return self.charge(1).map(|_| (Value::Bool(false), 1)),
            b'i' => Value::from(self.i32()?),
            b'I' => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::from(i64::from_le_bytes(a))
            }
            b'l' => self.long(start)?,
            b'g' => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let f = f64::from_le_bytes(a);
                if !f.is_finite() {
                    return Err(self.err_at(start, DecodeErrorKind::NonFinite));
                }
                Value::Number(Number::from_string_unchecked(python_float_repr(f)))
            }
            b'z' | b'Z' => {
                let n = usize::from(self.u8()?);
                self.latin1(n)?
            }
            b'a' | b'A' => {
                let n = self.u32()? as usize;
                let n = self.count(n, 1)?;
                self.latin1(n)?
            }
            b'u' | b't' => {
                let n = self.u32()? as usize;
                let n = self.count(n, 1)?;
                let at = self.pos;
                let bytes = self.take(n)?;
                match std::str::from_utf8(bytes) {
                    Ok(s) => Value::String(s.to_owned()),
                    Err(e) => {
                        let bad = &bytes[e.valid_up_to()..];
                        // CPython writes str with "surrogatepass": a lone
                        // surrogate is ED A0..BF xx.
                        let kind = if bad.len() >= 2 && bad[0] == 0xED && bad[1] >= 0xA0 {
                            DecodeErrorKind::LoneSurrogate
                        } else {
                            DecodeErrorKind::InvalidUtf8
                        };
                        return Err(self.err_at(at + e.valid_up_to(), kind));
                    }
                }
            }
            b'r' => {
                let idx = self.u32()?;
                return self.reference(start, idx, depth);
            }
            b')' | b'(' | b'[' => {
                let n = if ty == b')' {
                    usize::from(self.u8()?)
                } else {
                    self.u32()? as usize
                };
                return self.sequence(start, n, depth, register, flag);
            }
            b'{' => return self.dict(start, depth, register, flag),
            other => {
                let kind = match other {
                    b's' => DecodeErrorKind::Unsupported("bytes"),
                    b'<' => DecodeErrorKind::Unsupported("set"),
                    b'>' => DecodeErrorKind::Unsupported("frozenset"),
                    b'y' | b'x' => DecodeErrorKind::Unsupported("complex"),
                    b'c' => DecodeErrorKind::Unsupported("code"),
                    b'.' => DecodeErrorKind::Unsupported("Ellipsis"),
                    b'S' => DecodeErrorKind::Unsupported("StopIteration"),
                    b'f' => DecodeErrorKind::Unsupported("text float (marshal version < 2)"),
                    _ => DecodeErrorKind::UnknownCode(code),
                };
                return Err(self.err_at(start, kind));
            }
        };
        let cost = match &scalar {
            Value::String(s) => 1 + s.len() / 32,
            _ => 1,
        };
        self.charge(cost)?;
        if flag {
            self.refs.push(Slot::Scalar(scalar.clone(), cost));
        }
        Ok((scalar, cost))
    }

    fn latin1(&mut self, n: usize) -> Result<Value, DecodeError> {
        let bytes = self.take(n)?;
        Ok(Value::String(match std::str::from_utf8(bytes) {
            Ok(s) if bytes.is_ascii() => s.to_owned(),
            _ => bytes.iter().map(|&b| char::from(b)).collect(),
        }))
    }

    fn reference(
        &mut self,
        start: usize,
        idx: u32,
        depth: usize,
    ) -> Result<(Value, usize), DecodeError> {
        match self.refs.get(idx as usize) {
            None => Err(self.err_at(start, DecodeErrorKind::BadReference(idx))),
            Some(Slot::Pending) => {
                Err(self.err_at(start, DecodeErrorKind::UnfinishedReference(idx)))
            }
            Some(Slot::Scalar(v, cost)) => {
                let (v, cost) = (v.clone(), *cost);
                self.charge(cost)?;
                Ok((v, cost))
            }
            Some(&Slot::Container { start: at, cost }) => {
                // Charge up front so a budget overrun fails before the work.
                self.charge(cost)?;
                self.budget += cost;
                let resume = self.pos;
                self.pos = at;
                let r = self.object_cost(depth, false);
                self.pos = resume;
                r
            }
        }
    }

    fn enter(&self, start: usize, depth: usize) -> Result<usize, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(self.err_at(start, DecodeErrorKind::TooDeep(MAX_DEPTH)));
        }
        Ok(depth + 1)
    }

    fn reserve_slot(&mut self, flag: bool) -> Option<usize> {
        flag.then(|| {
            self.refs.push(Slot::Pending);
            self.refs.len() - 1
        })
    }

    fn finish_slot(&mut self, slot: Option<usize>, start: usize, cost: usize) {
        if let Some(i) = slot {
            self.refs[i] = Slot::Container { start, cost };
        }
    }

    fn sequence(
        &mut self,
        start: usize,
        n: usize,
        depth: usize,
        register: bool,
        flag: bool,
    ) -> Result<(Value, usize), DecodeError> {
        let depth = self.enter(start, depth)?;
        let n = self.count(n, 1)?;
        self.charge(1)?;
        let slot = self.reserve_slot(flag);
        let mut items = Vec::with_capacity(n);
        let mut cost = 1;
        for _ in 0..n {
            let (v, c) = self.object_cost(depth, register)?;
            items.push(v);
            cost += c;
        }
        self.finish_slot(slot, start, cost);
        Ok((Value::Array(items), cost))
    }

    fn dict(
        &mut self,
        start: usize,
        depth: usize,
        register: bool,
        flag: bool,
    ) -> Result<(Value, usize), DecodeError> {
        let depth = self.enter(start, depth)?;
        self.charge(1)?;
        let slot = self.reserve_slot(flag);
        let mut map = Map::new();
        let mut cost = 1;
        loop {
            let at = self.pos;
            match self.data.get(at) {
                None => return Err(self.err_at(at, DecodeErrorKind::UnexpectedEnd)),
                Some(b'0') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => {}
            }
            let (key, kc) = self.object_cost(depth, register)?;
            let key = match key {
                Value::String(s) => s,
                other => {
                    return Err(self.err_at(at, DecodeErrorKind::NonStrKey(python_type(&other))))
                }
            };
            let (v, vc) = self.object_cost(depth, register)?;
            cost += kc + vc;
            map.insert(key, v);
        }
        self.finish_slot(slot, start, cost);
        Ok((Value::Object(map), cost))
    }

    /// `l`: i32 signed digit count, then |count| u16 digits in base 2^15,
    /// least significant first.
    fn long(&mut self, start: usize) -> Result<Value, DecodeError> {
        let count = self.i32()?;
        let negative = count < 0;
        let n = count.unsigned_abs() as usize;
        if n > MAX_LONG_DIGITS {
            return Err(self.err_at(start, DecodeErrorKind::IntTooLarge));
        }
        let n = self.count(n, 2)?;
        let bytes = self.take(n * 2)?;
        let mut digits = Vec::with_capacity(n);
        for pair in bytes.chunks_exact(2) {
            let d = u16::from_le_bytes([pair[0], pair[1]]);
            if d > 0x7fff {
                return Err(self.err_at(start, DecodeErrorKind::BadLongDigit));
            }
            digits.push(d);
        }
        if digits.last() == Some(&0) {
            return Err(self.err_at(start, DecodeErrorKind::BadLongDigit));
        }
        if n <= 8 {
            // At most 120 bits: exact in u128.
            let mag = digits
                .iter()
                .rev()
                .fold(0u128, |a, &d| (a << 15) | u128::from(d));
            return Ok(int_value(negative, mag));
        }
        let text = digits_to_decimal(negative, digits);
        if text.len() > MAX_INT_DIGITS + 1 {
            return Err(self.err_at(start, DecodeErrorKind::IntTooLarge));
        }
        Ok(Value::Number(Number::from_string_unchecked(text)))
    }
}

fn int_value(negative: bool, mag: u128) -> Value {
    if !negative {
        if let Ok(u) = u64::try_from(mag) {
            return Value::from(u);
        }
    } else if mag <= 1u128 << 63 {
        return Value::from((mag as i128).wrapping_neg() as i64);
    }
    let text = if negative {
        format!("-{mag}")
    } else {
        mag.to_string()
    };
    Value::Number(Number::from_string_unchecked(text))
}

/// Base-2^15 digits (least significant first) to decimal text.
fn digits_to_decimal(negative: bool, mut digits: Vec<u16>) -> String {
    let mut groups: Vec<u16> = Vec::new(); // base 10^4, least significant first
    while !digits.is_empty() {
        let mut rem = 0u32;
        for d in digits.iter_mut().rev() {
            let x = (rem << 15) | u32::from(*d);
            *d = (x / 10_000) as u16;
            rem = x % 10_000;
        }
        groups.push(rem as u16);
        while digits.last() == Some(&0) {
            digits.pop();
        }
    }
    let mut s = String::with_capacity(groups.len() * 4 + 1);
    if negative {
        s.push('-');
    }
    let mut iter = groups.iter().rev();
    if let Some(top) = iter.next() {
        s.push_str(&top.to_string());
    }
    for g in iter {
        s.push_str(&format!("{g:04}"));
    }
    s
}

/// A finite float as Python's `repr` writes it (and so `json.dumps`):
/// the shortest digits that round-trip, positional for decimal exponents
/// -4 ≤ e < 16 (`1e-05`, `0.0001`, `1e+16`, `1000000000000000.0`).
pub fn python_float_repr(f: f64) -> String {
    // ryu gives the shortest round-trip digits; only its layout differs
    // from Python's, so take the digits and the decimal point from it.
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(f.abs()).as_bytes();
    let (mantissa, exp) = match text.iter().position(|&b| b == b'e') {
        Some(i) => (&text[..i], parse_exp(&text[i + 1..])),
        None => (text, 0),
    };
    let mut digits = [0u8; 24];
    let mut n = 0;
    let mut int_len = mantissa.len();
    for (i, &b) in mantissa.iter().enumerate() {
        if b == b'.' {
            int_len = i;
        } else if n < digits.len() {
            digits[n] = b;
            n += 1;
        }
    }
    // value = 0.DIGITS × 10^decpt; drop leading and trailing zeros.
    let mut decpt = int_len as i32 + exp;
    let lead = digits[..n].iter().take_while(|&&d| d == b'0').count();
    let (mut lo, mut hi) = (lead, n);
    decpt -= lead as i32;
    while hi > lo && digits[hi - 1] == b'0' {
        hi -= 1;
    }
    if lo == hi {
        // Zero.
        lo = 0;
        hi = 1;
        digits[0] = b'0';
        decpt = 1;
    }
    let d = &digits[lo..hi];
    let mut out = Vec::with_capacity(d.len() + 8);
    if f.is_sign_negative() {
        out.push(b'-');
    }
    if decpt <= -4 || decpt > 16 {
        out.push(d[0]);
        if d.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&d[1..]);
        }
        let e = decpt - 1;
        out.push(b'e');
        out.push(if e < 0 { b'-' } else { b'+' });
        let e = e.unsigned_abs();
        if e >= 100 {
            out.push(b'0' + (e / 100) as u8);
        }
        out.push(b'0' + (e / 10 % 10) as u8);
        out.push(b'0' + (e % 10) as u8);
    } else if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat(b'0').take((-decpt) as usize));
        out.extend_from_slice(d);
    } else {
        let p = decpt as usize;
        if p >= d.len() {
            out.extend_from_slice(d);
            out.extend(std::iter::repeat(b'0').take(p - d.len()));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&d[..p]);
            out.push(b'.');
            out.extend_from_slice(&d[p..]);
        }
    }
    // Only ASCII digits, signs, '.', 'e' were written.
    String::from_utf8(out).unwrap_or_default()
}

fn parse_exp(b: &[u8]) -> i32 {
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let v = digits
        .iter()
        .fold(0i32, |a, &c| a * 10 + i32::from(c.wrapping_sub(b'0')));
    if neg {
        -v
    } else {
        v
    }
}

fn python_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list or tuple",
        Value::Object(_) => "dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        data.extend(std::iter::repeat(b'N').take(200));
        for level in 0..2u32 {
            data.push(0x80 | b'[');
            data.extend_from_slice(&200u32.to_le_bytes());
            for _ in 0..200 {
                data.push(b'r');
                data.extend_from_slice(&(level + 1).to_le_bytes());
            }
        }
        let e = decode(&data).expect_err("over budget");
        assert!(matches!(e.kind, DecodeErrorKind::OverBudget), "{e}");
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
