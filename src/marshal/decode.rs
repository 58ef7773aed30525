//! Marshal bytes to values, bounded by the input (see the module docs).

use serde_json::{Map, Number, Value};

use super::digits::digits_to_decimal;
use super::{python_float_repr, FLAG_REF, MAX_DEPTH, MAX_LONG_DIGITS};
use crate::error::{DecodeError, DecodeErrorKind};
use crate::format_kind::Format;

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
