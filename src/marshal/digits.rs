//! A big int's magnitude to decimal text, in CPython's way (for the
//! `serde_json::Value` bridge, whose numbers are text).

use super::MAX_INT_DIGITS;

/// 10^9: one `u32` limb of the decimal accumulator holds nine digits.
const DECIMAL_BASE: u64 = 1_000_000_000;

/// A magnitude (little-endian bytes) to decimal text, or `None` past
/// [`MAX_INT_DIGITS`] digits (the sign not counted, as in CPython).
/// CPython's method: Horner's rule over 30 bits at a time into base-10^9
/// limbs, about n²/4 limb steps for n 15-bit digits.
pub(crate) fn magnitude_to_decimal(negative: bool, magnitude_le: &[u8]) -> Option<String> {
    // 30-bit chunks, least significant first.
    let mut chunks: Vec<u32> = Vec::with_capacity(magnitude_le.len() * 8 / 30 + 1);
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in magnitude_le {
        acc |= u64::from(b) << bits;
        bits += 8;
        if bits >= 30 {
            chunks.push((acc & 0x3fff_ffff) as u32);
            acc >>= 30;
            bits -= 30;
        }
    }
    if bits > 0 {
        chunks.push(acc as u32);
    }
    // Base 10^9, least significant first.
    let mut dec: Vec<u32> = Vec::with_capacity(chunks.len() + 1);
    for &chunk in chunks.iter().rev() {
        let mut carry = u64::from(chunk);
        for limb in dec.iter_mut() {
            // limb < 10^9 < 2^30, carry < 2^31: fits in 61 bits.
            let x = (u64::from(*limb) << 30) + carry;
            *limb = (x % DECIMAL_BASE) as u32;
            carry = x / DECIMAL_BASE;
        }
        while carry != 0 {
            dec.push((carry % DECIMAL_BASE) as u32);
            carry /= DECIMAL_BASE;
        }
    }
    let Some((&high, lower)) = dec.split_last() else {
        return Some("0".into());
    };
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
    for (i, &limb) in dec.iter().rev().enumerate() {
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
