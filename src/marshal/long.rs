//! Python's `l` ints: base-2^15 digits, least significant first, the sign
//! in the digit count. Conversions to and from the magnitude as bytes
//! (`magic.rs`'s big-int payload) are linear: bits are only regrouped.

use num_bigint::BigUint;

use super::MAX_INT_DIGITS;

/// A marshal long of more 15-bit digits than this is refused before any
/// work: 954 digits are at least 2^14295 > 10^4300, past [`MAX_INT_DIGITS`].
pub(crate) const MAX_LONG_DIGITS: usize = 953;

/// Bits below which every magnitude has at most 4300 decimal digits
/// (2^14285 > 10^4300 > 2^14284).
const SAFE_BITS: usize = 14285;

/// Appends `l`, the signed digit count and the digits of a magnitude given
/// as little-endian bytes (trailing zero bytes allowed).
pub(crate) fn write_long_bytes(negative: bool, magnitude_le: &[u8], out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[b'l', 0, 0, 0, 0]);
    let (mut acc, mut bits, mut count, mut zeros) = (0u32, 0u32, 0i32, 0i32);
    let mut push = |d: u16, out: &mut Vec<u8>| {
        // Zero digits are held back until a non-zero one follows them, so
        // the top digit written is never zero.
        if d == 0 {
            zeros += 1;
            return;
        }
        for _ in 0..zeros {
            out.extend_from_slice(&[0, 0]);
        }
        count += zeros + 1;
        zeros = 0;
        out.extend_from_slice(&d.to_le_bytes());
    };
    for &b in magnitude_le {
        acc |= u32::from(b) << bits;
        bits += 8;
        if bits >= 15 {
            push((acc & 0x7fff) as u16, out);
            acc >>= 15;
            bits -= 15;
        }
    }
    if bits > 0 {
        push((acc & 0x7fff) as u16, out);
    }
    let count = if negative { -count } else { count };
    out[at + 1..at + 5].copy_from_slice(&count.to_le_bytes());
}

/// Appends an int that fits 128 bits as `i` (when it fits 32) or `l`.
#[inline]
pub(crate) fn write_int(negative: bool, magnitude: u128, out: &mut Vec<u8>) {
    if magnitude <= 0x7fff_ffff || (negative && magnitude == 0x8000_0000) {
        let v = if negative {
            (magnitude as i64).wrapping_neg() as i32
        } else {
            magnitude as i32
        };
        out.push(b'i');
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        write_long_bytes(negative && magnitude != 0, &magnitude.to_le_bytes(), out);
    }
}

/// The digits of an `l` read and checked: every digit below 2^15 and the
/// top one non-zero. `Err(())` for a bad digit.
pub(crate) struct Digits<'a> {
    /// Two bytes per digit, least significant first.
    pub(crate) bytes: &'a [u8],
    /// The magnitude's bit length.
    pub(crate) bits: usize,
}

impl<'a> Digits<'a> {
    pub(crate) fn check(bytes: &'a [u8]) -> Result<Self, ()> {
        if bytes.chunks_exact(2).any(|p| p[1] >= 0x80) {
            return Err(());
        }
        let n = bytes.len() / 2;
        if n == 0 {
            return Ok(Digits { bytes, bits: 0 });
        }
        let top = u16::from_le_bytes([bytes[2 * n - 2], bytes[2 * n - 1]]);
        if top == 0 {
            return Err(());
        }
        let bits = 15 * (n - 1) + (16 - top.leading_zeros() as usize);
        Ok(Digits { bytes, bits })
    }

    /// The magnitude, when it fits 128 bits.
    pub(crate) fn to_u128(&self) -> Option<u128> {
        if self.bits > 128 {
            return None;
        }
        let mut mag = 0u128;
        for pair in self.bytes.chunks_exact(2).rev() {
            mag = (mag << 15) | u128::from(u16::from_le_bytes([pair[0], pair[1]]));
        }
        Some(mag)
    }

    /// True when the magnitude has more than [`MAX_INT_DIGITS`] decimal
    /// digits (CPython's limit on int ↔ str, sign not counted).
    pub(crate) fn too_many_decimal_digits(&self) -> bool {
        if self.bits < SAFE_BITS {
            return false;
        }
        if self.bits > SAFE_BITS {
            return true;
        }
        // The one ambiguous bit length: compare exactly (rare, cheap).
        let limit = BigUint::from(10u32).pow(MAX_INT_DIGITS as u32);
        BigUint::from_bytes_le(&self.magnitude_le()) >= limit
    }

    /// The magnitude as little-endian bytes, without trailing zeros.
    pub(crate) fn magnitude_le(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bits / 8 + 2);
        self.append_magnitude(&mut out);
        out
    }

    /// Appends the magnitude's little-endian bytes, without trailing zeros.
    pub(crate) fn append_magnitude(&self, out: &mut Vec<u8>) {
        let at = out.len();
        let (mut acc, mut bits) = (0u32, 0u32);
        for pair in self.bytes.chunks_exact(2) {
            acc |= u32::from(u16::from_le_bytes([pair[0], pair[1]])) << bits;
            bits += 15;
            while bits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(acc as u8);
        }
        while out.len() > at && out.last() == Some(&0) {
            out.pop();
        }
    }
}
