//! Python's `marshal` format, version 4, for JSON-like values.
//!
//! The decoder accepts everything CPython 3.11's `marshal.dumps` writes for
//! None, bools, ints of any size (up to [`MAX_INT_DIGITS`] decimal digits),
//! floats, str (every string code), lists, tuples (as arrays) and dicts with
//! str keys, including `FLAG_REF` slots and `r` back-references. Anything
//! else is refused with a [`DecodeErrorKind`] naming it.
//!
//! Decoding is bounded by its input, whatever the input: nesting is capped
//! at [`MAX_DEPTH`]; every byte of the decoded value (72 per [`Value`], each
//! string's and number's text, each dict entry at its worst growth) and of
//! the decoder's own tables is charged before it is allocated against
//! [`decode_budget`] (`80 × input + 512 KiB` bytes), and a line past it is
//! refused with [`DecodeErrorKind::TooLarge`]. Work is linear too: every
//! step produces charged bytes, and a big int is converted to decimal once.
//!
//! A back-reference is resolved by decoding the referenced object's bytes
//! again (a big int's text comes from a cache), so nothing is cloned just
//! in case it is referenced later, and each copy a reference makes is
//! charged like the original: references cannot amplify a small line into
//! a large value.

use serde_json::{Map, Number, Value};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::format_kind::Format;

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
const MAX_LONG_DIGITS: usize = 953;

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

/// Bytes of memory the decoded value may take per input byte: one `N` byte
/// is a whole [`Value`] (72 bytes), so no smaller factor accepts a plain list.
const BUDGET_PER_BYTE: usize = 80;

/// Bytes every decode may take whatever its length (small inputs, a few
/// big-int conversions, small dicts).
const BUDGET_BASE: usize = 512 << 10;

/// The most heap memory decoding `len` bytes may charge: the value it
/// builds, its reservations and the decoder's own tables. A line that would
/// take more is refused with [`DecodeErrorKind::TooLarge`].
pub fn decode_budget(len: usize) -> usize {
    len.saturating_mul(BUDGET_PER_BYTE)
        .saturating_add(BUDGET_BASE)
}

/// One [`Value`] in its parent's buffer.
const NODE: usize = std::mem::size_of::<Value>();

/// What a heap allocation costs beyond its bytes (malloc's header and
/// rounding), charged once per string.
const ALLOC_OVERHEAD: usize = 16;

/// One dict entry at its worst: IndexMap's bucket (hash, key, value) three
/// times over (capacity doubles, and the old buffer lives while it is
/// copied) plus its index (8 bytes and a control byte per bucket, at most
/// 8/7 buckets per entry, old and new table).
const ENTRY: usize = 3 * std::mem::size_of::<(u64, String, Value)>() + 32;

/// A dict's fixed cost on its first entry (the control bytes' tail group).
const MAP_BASE: usize = 64;

/// One slot of the reference table (a `usize`), three times over for growth.
const SLOT: usize = 3 * std::mem::size_of::<usize>();

/// One cached big-int text entry, three times over for growth (its text is
/// charged apart).
const CACHED: usize = 3 * std::mem::size_of::<(usize, String)>();

/// Room a float's `repr` text may take (24 characters at most, in a buffer
/// that may have doubled once).
const FLOAT_TEXT: usize = 64;

/// What a string of `len` bytes costs on the heap.
fn heap(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len + ALLOC_OVERHEAD
    }
}

/// Decodes one marshal value that must span all of `data`.
///
/// Time and memory are linear in `data.len()`: the value, and everything
/// the decoder reserves or keeps while building it, is charged against
/// [`decode_budget`]`(data.len())` before it is allocated (a number's text
/// by its largest possible size), and every step of work produces charged
/// bytes.
pub fn decode(data: &[u8]) -> Result<Value, DecodeError> {
    let limit = decode_budget(data.len());
    let mut d = Decoder {
        data,
        pos: 0,
        refs: Vec::new(),
        ints: Vec::new(),
        budget: limit,
        limit,
    };
    let v = d.object(0, true)?;
    if d.pos != data.len() {
        return Err(d.err_at(d.pos, DecodeErrorKind::TrailingBytes));
    }
    Ok(v)
}

/// A reference slot not finished yet (a container being decoded).
const PENDING: usize = usize::MAX;

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    /// Per `FLAG_REF` slot, where its object starts in `data` (or
    /// [`PENDING`]). A reference decodes the object again from there, so
    /// nothing is cloned in case it is referenced later; the copies it makes
    /// are charged like any other output.
    refs: Vec<usize>,
    /// The decimal text of every big int decoded so far, by start position
    /// (ascending: the first pass reads forward; a reference's second pass
    /// adds nothing), so decoding one again never converts it again.
    ints: Vec<(usize, String)>,
    /// Bytes of the budget left.
    budget: usize,
    /// The whole budget, for the error.
    limit: usize,
}

impl<'a> Decoder<'a> {
    fn err_at(&self, position: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            format: Format::Marshal,
            position,
            kind,
        }
    }

    /// Takes `cost` bytes from the budget, before they are allocated.
    fn charge(&mut self, cost: usize) -> Result<(), DecodeError> {
        match self.budget.checked_sub(cost) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(self.err_at(self.pos, DecodeErrorKind::TooLarge { limit: self.limit })),
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

    fn bytes8(&mut self) -> Result<[u8; 8], DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// A length that must fit in the bytes left, each item taking at least
    /// `min_item` bytes.
    fn count(&mut self, n: usize, min_item: usize) -> Result<usize, DecodeError> {
        let left = self.data.len() - self.pos;
        if n.saturating_mul(min_item) > left {
            return Err(self.err_at(self.data.len(), DecodeErrorKind::UnexpectedEnd));
        }
        Ok(n)
    }

    /// Decodes one object. `register` is false while decoding an object
    /// again for a back-reference: its slots exist already.
    fn object(&mut self, depth: usize, register: bool) -> Result<Value, DecodeError> {
        let start = self.pos;
        let code = self.u8()?;
        let flag = register && code & FLAG_REF != 0;
        let ty = code & !FLAG_REF;
        match ty {
            // Singletons never take a slot, flagged or not (as in CPython).
            b'N' => return Ok(Value::Null),
            b'T' => return Ok(Value::Bool(true)),
            b'F' => return Ok(Value::Bool(false)),
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
                let slot = self.reserve_slot(flag)?;
                let v = self.sequence(start, n, depth, register)?;
                self.finish_slot(slot, start);
                return Ok(v);
            }
            b'{' => {
                let slot = self.reserve_slot(flag)?;
                let v = self.dict(start, depth, register)?;
                self.finish_slot(slot, start);
                return Ok(v);
            }
            _ => {}
        }
        let scalar = self.scalar(start, ty, code, register)?;
        if flag {
            // A scalar is finished at once: decoded again from `start`.
            self.charge(SLOT)?;
            self.refs.push(start);
        }
        Ok(scalar)
    }

    fn scalar(
        &mut self,
        start: usize,
        ty: u8,
        code: u8,
        register: bool,
    ) -> Result<Value, DecodeError> {
        Ok(match ty {
            b'i' => {
                self.charge(heap(11))?;
                Value::from(self.i32()?)
            }
            b'I' => {
                self.charge(heap(20))?;
                Value::from(i64::from_le_bytes(self.bytes8()?))
            }
            b'l' => self.long(start, register)?,
            b'g' => {
                let f = f64::from_le_bytes(self.bytes8()?);
                if !f.is_finite() {
                    return Err(self.err_at(start, DecodeErrorKind::NonFinite));
                }
                self.charge(heap(FLOAT_TEXT))?;
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
                    Ok(s) => {
                        self.charge(heap(s.len()))?;
                        Value::String(s.to_owned())
                    }
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
        })
    }

    /// Latin-1 bytes as a str: each byte from 0x80 up takes two in UTF-8.
    fn latin1(&mut self, n: usize) -> Result<Value, DecodeError> {
        let bytes = self.take(n)?;
        if let (true, Ok(s)) = (bytes.is_ascii(), std::str::from_utf8(bytes)) {
            self.charge(heap(n))?;
            return Ok(Value::String(s.to_owned()));
        }
        let high = bytes.iter().filter(|&&b| b >= 0x80).count();
        self.charge(heap(n + high))?;
        let mut s = String::with_capacity(n + high);
        s.extend(bytes.iter().map(|&b| char::from(b)));
        Ok(Value::String(s))
    }

    fn reference(&mut self, start: usize, idx: u32, depth: usize) -> Result<Value, DecodeError> {
        match self.refs.get(idx as usize) {
            None => Err(self.err_at(start, DecodeErrorKind::BadReference(idx))),
            Some(&PENDING) => Err(self.err_at(start, DecodeErrorKind::UnfinishedReference(idx))),
            Some(&at) => {
                // Decode the object again where it stands; every byte it
                // produces is charged, and big ints come from `ints`.
                let resume = self.pos;
                self.pos = at;
                let r = self.object(depth, false);
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

    fn reserve_slot(&mut self, flag: bool) -> Result<Option<usize>, DecodeError> {
        if !flag {
            return Ok(None);
        }
        self.charge(SLOT)?;
        self.refs.push(PENDING);
        Ok(Some(self.refs.len() - 1))
    }

    fn finish_slot(&mut self, slot: Option<usize>, start: usize) {
        if let Some(i) = slot {
            self.refs[i] = start;
        }
    }

    fn sequence(
        &mut self,
        start: usize,
        n: usize,
        depth: usize,
        register: bool,
    ) -> Result<Value, DecodeError> {
        let depth = self.enter(start, depth)?;
        let n = self.count(n, 1)?;
        // The whole buffer is charged before it is reserved, so the
        // reservations of all open levels together stay within the budget.
        self.charge(n.saturating_mul(NODE))?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.object(depth, register)?);
        }
        Ok(Value::Array(items))
    }

    fn dict(&mut self, start: usize, depth: usize, register: bool) -> Result<Value, DecodeError> {
        let depth = self.enter(start, depth)?;
        let mut map = Map::new();
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
            // Charged even when the key repeats (and replaces): every pair
            // costs, so decoding a dict again is paid for too.
            self.charge(if map.is_empty() {
                ENTRY + MAP_BASE
            } else {
                ENTRY
            })?;
            let key = match self.object(depth, register)? {
                Value::String(s) => s,
                other => {
                    return Err(self.err_at(at, DecodeErrorKind::NonStrKey(python_type(&other))))
                }
            };
            let v = self.object(depth, register)?;
            map.insert(key, v);
        }
        Ok(Value::Object(map))
    }

    /// `l`: i32 signed digit count, then |count| u16 digits in base 2^15,
    /// least significant first. A big one is converted to decimal once; a
    /// reference decoding it again (`register` false) takes the text made
    /// the first time.
    fn long(&mut self, start: usize, register: bool) -> Result<Value, DecodeError> {
        let count = self.i32()?;
        let negative = count < 0;
        let n = count.unsigned_abs() as usize;
        if n > MAX_LONG_DIGITS {
            return Err(self.err_at(start, DecodeErrorKind::IntTooLarge));
        }
        let n = self.count(n, 2)?;
        let bytes = self.take(n * 2)?;
        if n <= 8 {
            // At most 120 bits: exact in u128.
            let mut mag = 0u128;
            for pair in bytes.chunks_exact(2).rev() {
                mag = (mag << 15) | u128::from(self.long_digit(start, pair)?);
            }
            if n > 0 && mag >> (15 * (n - 1)) == 0 {
                return Err(self.err_at(start, DecodeErrorKind::BadLongDigit));
            }
            self.charge(heap(40))?;
            return Ok(int_value(negative, mag));
        }
        if !register {
            if let Ok(i) = self.ints.binary_search_by_key(&start, |(at, _)| *at) {
                self.charge(heap(self.ints[i].1.len()))?;
                let text = self.ints[i].1.clone();
                return Ok(Value::Number(Number::from_string_unchecked(text)));
            }
        }
        let mut digits = Vec::with_capacity(n);
        for pair in bytes.chunks_exact(2) {
            digits.push(self.long_digit(start, pair)?);
        }
        if digits.last() == Some(&0) {
            return Err(self.err_at(start, DecodeErrorKind::BadLongDigit));
        }
        // The value's text and the cached copy: 15 bits make at most 4.52
        // decimal digits.
        self.charge(2 * heap(5 * n + 2) + CACHED)?;
        let text = digits_to_decimal(negative, &digits)
            .ok_or_else(|| self.err_at(start, DecodeErrorKind::IntTooLarge))?;
        if register {
            self.ints.push((start, text.clone()));
        }
        Ok(Value::Number(Number::from_string_unchecked(text)))
    }

    fn long_digit(&self, start: usize, pair: &[u8]) -> Result<u16, DecodeError> {
        match pair {
            &[lo, hi] if hi < 0x80 => Ok(u16::from_le_bytes([lo, hi])),
            _ => Err(self.err_at(start, DecodeErrorKind::BadLongDigit)),
        }
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

/// 10^9: one `u32` limb of the decimal accumulator holds nine digits.
const DECIMAL_BASE: u64 = 1_000_000_000;

/// Base-2^15 digits (least significant first, top digit non-zero) to
/// decimal text, or `None` past [`MAX_INT_DIGITS`] digits (the sign not
/// counted, as in CPython). CPython's method: Horner's rule over 30 bits at
/// a time into base-10^9 limbs, about n²/4 limb steps for n digits.
fn digits_to_decimal(negative: bool, digits: &[u16]) -> Option<String> {
    // Base 10^9, least significant first.
    let mut acc: Vec<u32> = Vec::with_capacity(digits.len() / 2 + 2);
    let (top, rest) = if digits.len() % 2 == 1 {
        (
            digits.last().map(|&d| u64::from(d)),
            &digits[..digits.len() - 1],
        )
    } else {
        (None, digits)
    };
    let mut add = |shift: u32, value: u64| {
        let mut carry = value;
        for limb in acc.iter_mut() {
            // limb < 10^9 < 2^30, carry < 2^31: fits in 61 bits.
            let x = (u64::from(*limb) << shift) + carry;
            *limb = (x % DECIMAL_BASE) as u32;
            carry = x / DECIMAL_BASE;
        }
        while carry != 0 {
            acc.push((carry % DECIMAL_BASE) as u32);
            carry /= DECIMAL_BASE;
        }
    };
    if let Some(t) = top {
        add(15, t);
    }
    for pair in rest.rchunks_exact(2) {
        add(30, (u64::from(pair[1]) << 15) | u64::from(pair[0]));
    }
    let (&high, lower) = acc.split_last()?;
    let high_digits = high.checked_ilog10().map_or(1, |l| l as usize + 1);
    let len = lower.len() * 9 + high_digits;
    if len > MAX_INT_DIGITS {
        return None;
    }
    let mut s = String::with_capacity(len + usize::from(negative));
    if negative {
        s.push('-');
    }
    let mut buf = [0u8; 9];
    for (i, &limb) in acc.iter().rev().enumerate() {
        let mut v = limb;
        for b in buf.iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
        let from = if i == 0 { 9 - high_digits } else { 0 };
        s.extend(buf[from..].iter().map(|&b| char::from(b)));
    }
    Some(s)
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
