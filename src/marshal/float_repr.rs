//! Python's float `repr`.

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
        out.extend(std::iter::repeat_n(b'0', (-decpt) as usize));
        out.extend_from_slice(d);
    } else {
        let p = decpt as usize;
        if p >= d.len() {
            out.extend_from_slice(d);
            out.extend(std::iter::repeat_n(b'0', p - d.len()));
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
