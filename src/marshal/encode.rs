//! Values to marshal bytes.

use serde_json::{Number, Value};

use super::MAX_INT_DIGITS;

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
