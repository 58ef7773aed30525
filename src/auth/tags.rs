//! Mode `tag`: every line after the handshake carries an integrity tag.
//!
//! A line on the wire is `TAG PAYLOAD\n`: `TAG` is 32 lower-case hex digits,
//! the first 16 bytes of HMAC-SHA256 under the direction's key over the
//! line's sequence number (8 bytes, big-endian, from 0 in each direction)
//! followed by the payload's bytes; one space; the payload (the line the
//! plain protocol would carry). A line that does not verify (a forged,
//! injected, altered, dropped, replayed or reordered one) ends the session.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{hex_into, keyed, unhex};

/// Bytes of a tag.
pub(crate) const TAG_LEN: usize = 16;
/// What a tag adds to a line: its hex digits and a space.
pub(crate) const PREFIX_LEN: usize = TAG_LEN * 2 + 1;

/// Tags the lines one side sends.
#[derive(Clone)]
pub(crate) struct TagSealer {
    key: Hmac<Sha256>,
    seq: u64,
}

/// Checks and strips the tags of the lines one side receives.
#[derive(Clone)]
pub(crate) struct TagOpener {
    key: Hmac<Sha256>,
    seq: u64,
}

impl std::fmt::Debug for TagSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TagSealer {{ seq: {} }}", self.seq)
    }
}

impl std::fmt::Debug for TagOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TagOpener {{ seq: {} }}", self.seq)
    }
}

fn tag(key: &Hmac<Sha256>, seq: u64, payload: &[u8]) -> Hmac<Sha256> {
    let mut m = key.clone();
    m.update(&seq.to_be_bytes());
    m.update(payload);
    m
}

impl TagSealer {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        TagSealer {
            key: keyed(key),
            seq: 0,
        }
    }

    /// Makes room for the next line's tag at the end of `out`; the line is
    /// then appended and [`TagSealer::seal`] fills the room in.
    pub(crate) fn reserve(out: &mut Vec<u8>) {
        out.resize(out.len() + PREFIX_LEN, b' ');
    }

    /// Tags what was appended to `out` since `mark` (where
    /// [`TagSealer::reserve`] made room): one line ending in `\n` (several
    /// lines are each tagged, at the cost of a copy).
    pub(crate) fn seal(&mut self, out: &mut Vec<u8>, mark: usize) {
        let body = mark + PREFIX_LEN;
        let lines = out
            .get(body..)
            .map_or(0, |b| memchr::memchr_iter(b'\n', b).count());
        if lines <= 1 {
            let end = if out.last() == Some(&b'\n') {
                out.len() - 1
            } else {
                out.len()
            };
            let (before, line) = out.split_at_mut(body);
            let payload = &line[..end.max(body) - body];
            self.next_into(payload, &mut before[mark..mark + TAG_LEN * 2]);
            return;
        }
        let rest = out.split_off(body);
        out.truncate(mark);
        for line in rest.split_inclusive(|&b| b == b'\n') {
            let payload = line.strip_suffix(b"\n").unwrap_or(line);
            let mut t = [0u8; TAG_LEN * 2];
            self.next_into(payload, &mut t);
            out.extend_from_slice(&t);
            out.push(b' ');
            out.extend_from_slice(line);
        }
    }

    /// Writes the hex tag of the next line into `dst` (no allocation).
    fn next_into(&mut self, payload: &[u8], dst: &mut [u8]) {
        let full = tag(&self.key, self.seq, payload).finalize().into_bytes();
        self.seq = self.seq.wrapping_add(1);
        hex_into(&full[..TAG_LEN], dst);
    }
}

impl TagOpener {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        TagOpener {
            key: keyed(key),
            seq: 0,
        }
    }

    /// The payload of a received line (without its `\n`), or why it does not
    /// verify. The sequence number moves on only for a line that verifies.
    pub(crate) fn open<'a>(&mut self, line: &'a [u8]) -> Result<&'a [u8], String> {
        let n = self.seq;
        let bad = |why: &str| format!("line {n} received after the handshake {why}");
        if line.len() < PREFIX_LEN || line[PREFIX_LEN - 1] != b' ' {
            return Err(bad("carries no tag"));
        }
        let Some(given) = unhex(&line[..TAG_LEN * 2]) else {
            return Err(bad("carries no tag"));
        };
        let payload = &line[PREFIX_LEN..];
        tag(&self.key, n, payload)
            .verify_truncated_left(&given)
            .map_err(|_| bad("has a wrong tag (forged, altered, replayed or out of order)"))?;
        self.seq = self.seq.wrapping_add(1);
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(s: &mut TagSealer, payload: &[u8]) -> Vec<u8> {
        let mut out = b"earlier\n".to_vec();
        let mark = out.len();
        TagSealer::reserve(&mut out);
        out.extend_from_slice(payload);
        out.push(b'\n');
        s.seal(&mut out, mark);
        out.split_off(mark)
    }

    #[test]
    fn lines_verify_in_order_and_nothing_else_does() {
        let key = [7u8; 32];
        let (mut s, mut o) = (TagSealer::new(&key), TagOpener::new(&key));
        let a = sealed(&mut s, b"{\"n\": 1}");
        let b = sealed(&mut s, b"{\"n\": 2}");
        assert_eq!(a[PREFIX_LEN - 1], b' ');
        // Out of order (b first) fails and does not move the sequence on.
        assert!(o.open(&b[..b.len() - 1]).is_err());
        assert_eq!(o.open(&a[..a.len() - 1]).expect("a"), b"{\"n\": 1}");
        // Replayed.
        assert!(o.open(&a[..a.len() - 1]).is_err());
        // Altered.
        let mut c = b.clone();
        c[PREFIX_LEN] ^= 1;
        assert!(o.open(&c[..c.len() - 1]).is_err());
        assert_eq!(o.open(&b[..b.len() - 1]).expect("b"), b"{\"n\": 2}");
        // Another key.
        let mut other = TagOpener::new(&[8u8; 32]);
        assert!(other.open(&a[..a.len() - 1]).is_err());
        assert!(o.open(b"no tag").is_err());
    }

    #[test]
    fn several_lines_appended_at_once_are_each_tagged() {
        let key = [1u8; 32];
        let (mut s, mut o) = (TagSealer::new(&key), TagOpener::new(&key));
        let mut out = Vec::new();
        TagSealer::reserve(&mut out);
        out.extend_from_slice(b"1\n2\n");
        s.seal(&mut out, 0);
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(o.open(lines[0]).expect("1"), b"1");
        assert_eq!(o.open(lines[1]).expect("2"), b"2");
    }
}
