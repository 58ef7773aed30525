//! A big int's base-2^15 digits to decimal text, in CPython's way.

use super::MAX_INT_DIGITS;

/// 10^9: one `u32` limb of the decimal accumulator holds nine digits.
const DECIMAL_BASE: u64 = 1_000_000_000;

/// Base-2^15 digits (least significant first, top digit non-zero) to
/// decimal text, or `None` past [`MAX_INT_DIGITS`] digits (the sign not
/// counted, as in CPython). CPython's method: Horner's rule over 30 bits at
/// a time into base-10^9 limbs, about n²/4 limb steps for n digits.
pub(crate) fn digits_to_decimal(negative: bool, digits: &[u16]) -> Option<String> {
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
