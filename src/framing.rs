//! Incremental line framing with a length limit.
//!
//! [`LineBuffer`] turns a byte stream that arrives in arbitrary chunks into
//! `\n`-terminated lines. Each byte is searched for a newline exactly once: a
//! chunk is scanned with SIMD `memchr` (a plain loop for a short one),
//! complete lines inside it are handed out as slices of the chunk itself
//! (no copy), and only the unfinished tail is kept.
//! The kept tail never holds a newline, so it is never scanned again; its
//! length is the search cursor.

use bytes::BytesMut;

use crate::error::Error;

/// Default maximum line length: 64 MiB, not counting the `\n`.
///
/// A JSON line is about as long as the JSON text; a marshal line is 4/3 of
/// the marshal bytes (base64), plus one.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024 * 1024;

/// How many of a too-long line's first bytes its error keeps: enough for a
/// frame's header, so a framed peer's answer can name the request.
pub const LINE_START: usize = 32;

/// A kept tail larger than this is freed, not kept for reuse, once it is consumed.
const KEEP_CAPACITY: usize = 4096;

/// Splits a byte stream into lines, with a maximum line length.
///
/// * A line is the bytes before a `\n`; a `\r` right before the `\n` is
///   stripped.
/// * A line of up to `max_line` bytes (counting a `\r`, not the `\n`) is
///   accepted; a longer one yields one [`Error::LineTooLong`], its bytes are
///   dropped up to and including the next newline, and framing resumes after
///   it. Memory held never exceeds `max_line` bytes.
/// * At end of stream, [`LineBuffer::finish`] reports an unfinished line as
///   [`Error::TruncatedLine`]; it is never handed out as a line.
///
/// Feeding a stream whole or split at any points yields the same lines and
/// errors in the same order.
#[derive(Debug)]
pub struct LineBuffer {
    /// The unfinished line: bytes already scanned, none of them `\n`.
    partial: BytesMut,
    max_line: usize,
    /// True while dropping the rest of a too-long line.
    discarding: bool,
}

impl LineBuffer {
    /// A buffer accepting lines of up to `max_line` bytes. Allocates nothing
    /// until a line is split across chunks.
    pub fn new(max_line: usize) -> Self {
        LineBuffer {
            partial: BytesMut::new(),
            max_line,
            discarding: false,
        }
    }

    /// The maximum line length in force.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Bytes held for an unfinished line.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Bytes of memory held (the tail's capacity).
    pub fn capacity(&self) -> usize {
        self.partial.capacity()
    }

    /// True while the rest of a too-long line is being dropped.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Feeds one chunk; calls `on_line` for each complete line (or
    /// [`Error::LineTooLong`]) in stream order.
    pub fn feed<F>(&mut self, chunk: &[u8], mut on_line: F)
    where
        F: FnMut(Result<&[u8], Error>),
    {
        // Each byte is searched once; each newline is found exactly once.
        let mut start = 0;
        while let Some(at) = find_newline(&chunk[start..]) {
            let nl = start + at;
            let head = &chunk[start..nl];
            start = nl + 1;
            if self.discarding {
                // The newline ends the line being dropped.
                self.discarding = false;
            } else if self.partial.is_empty() {
                if head.len() > self.max_line {
                    on_line(Err(self.too_long(head)));
                } else {
                    on_line(Ok(strip_cr(head)));
                }
            } else if self.partial.len() + head.len() > self.max_line {
                // The kept part alone is within the limit (keep_tail checks),
                // but the head may push it over.
                let e = self.too_long(head);
                self.release();
                on_line(Err(e));
            } else {
                self.partial.extend_from_slice(head);
                on_line(Ok(strip_cr(&self.partial)));
                self.release();
            }
        }
        self.keep_tail(&chunk[start..], &mut on_line);
    }

    /// Ends the stream. Returns [`Error::TruncatedLine`] if an unfinished line
    /// was held (it is dropped, never parsed); a too-long line being discarded
    /// was already reported and yields nothing more. The buffer is reset.
    pub fn finish(&mut self) -> Option<Error> {
        let held = self.partial.len();
        let was_discarding = self.discarding;
        self.discarding = false;
        self.release();
        if held > 0 && !was_discarding {
            Some(Error::TruncatedLine { len: held })
        } else {
            None
        }
    }

    fn keep_tail<F>(&mut self, tail: &[u8], on_line: &mut F)
    where
        F: FnMut(Result<&[u8], Error>),
    {
        if self.discarding || tail.is_empty() {
            return;
        }
        if self.partial.len() + tail.len() > self.max_line {
            // Whatever follows, this line is too long: report it now, once,
            // and hold nothing more of it.
            let e = self.too_long(tail);
            self.release();
            self.discarding = true;
            on_line(Err(e));
            return;
        }
        self.partial.extend_from_slice(tail);
    }

    /// The error for the line in progress (held in the tail, or starting
    /// at `rest` if nothing is held), with its first bytes.
    fn too_long(&self, rest: &[u8]) -> Error {
        let mut start = Vec::with_capacity(LINE_START);
        for part in [&self.partial[..], rest] {
            let room = LINE_START - start.len();
            start.extend_from_slice(&part[..part.len().min(room)]);
        }
        Error::LineTooLong {
            limit: self.max_line,
            start,
        }
    }

    /// Empties the tail, giving back a large allocation.
    fn release(&mut self) {
        if self.partial.capacity() > KEEP_CAPACITY {
            self.partial = BytesMut::new();
        } else {
            self.partial.clear();
        }
    }
}

/// Below this many bytes a plain loop finds a newline in fewer
/// instructions than `memchr`'s dispatch to its SIMD search: a small
/// message's line of 14 bytes costs 50 to 70 instructions less to frame
/// (counted with callgrind).
const SHORT: usize = 32;

/// The position of the first `\n` in `bytes`: SIMD `memchr`, or a plain
/// loop for a slice shorter than [`SHORT`].
#[inline]
pub(crate) fn find_newline(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < SHORT {
        bytes.iter().position(|&b| b == b'\n')
    } else {
        memchr::memchr(b'\n', bytes)
    }
}

/// `line` without a `\r` right before where its `\n` was.
pub(crate) fn strip_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', rest)) => rest,
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Out {
        Line(Vec<u8>),
        TooLong,
        Truncated(usize),
    }

    fn run(lb: &mut LineBuffer, chunks: &[&[u8]]) -> Vec<Out> {
        let mut out = Vec::new();
        for c in chunks {
            lb.feed(c, |r| out.push(conv(r)));
        }
        if let Some(Error::TruncatedLine { len }) = lb.finish() {
            out.push(Out::Truncated(len));
        }
        out
    }

    fn conv(r: Result<&[u8], Error>) -> Out {
        match r {
            Ok(l) => Out::Line(l.to_vec()),
            Err(Error::LineTooLong { .. }) => Out::TooLong,
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn line(s: &str) -> Out {
        Out::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn limit_underrun_exact_and_over() {
        let mut lb = LineBuffer::new(5);
        let out = run(&mut lb, &[b"abcd\nabcde\nabcdef\nok\n"]);
        assert_eq!(
            out,
            vec![line("abcd"), line("abcde"), Out::TooLong, line("ok")]
        );
    }

    #[test]
    fn exact_limit_across_chunks_is_accepted() {
        let mut lb = LineBuffer::new(5);
        let out = run(&mut lb, &[b"ab", b"cde", b"\n"]);
        assert_eq!(out, vec![line("abcde")]);
        let out = run(&mut lb, &[b"ab", b"cdef", b"gh\nx\n"]);
        assert_eq!(out, vec![Out::TooLong, line("x")]);
    }

    #[test]
    fn bursts() {
        let mut lb = LineBuffer::new(64);
        let out = run(&mut lb, &[b"a\nb\n", b"c\nd", b"\ne\n"]);
        assert_eq!(
            out,
            vec![line("a"), line("b"), line("c"), line("d"), line("e")]
        );
    }

    #[test]
    fn one_big_burst() {
        let mut lb = LineBuffer::new(16);
        let mut data = Vec::new();
        for i in 0..10_000 {
            data.extend_from_slice(format!("{i}\n").as_bytes());
        }
        let out = run(&mut lb, &[&data]);
        assert_eq!(out.len(), 10_000);
        assert_eq!(out[9_999], line("9999"));
        assert_eq!(lb.capacity(), 0, "no tail kept for whole lines");
    }

    #[test]
    fn newline_between_decodes() {
        let mut lb = LineBuffer::new(64);
        let out = run(&mut lb, &[b"hello", b"\n", b"\n", b"world\r", b"\n"]);
        assert_eq!(out, vec![line("hello"), line(""), line("world")]);
    }

    #[test]
    fn repeated_discards_report_once_each() {
        let mut lb = LineBuffer::new(3);
        let out = run(
            &mut lb,
            &[b"aaaa", b"aaaa", b"aa\nbbbbbb\n", b"cc", b"cccc", b"\nok\n"],
        );
        assert_eq!(
            out,
            vec![Out::TooLong, Out::TooLong, Out::TooLong, line("ok")]
        );
        assert!(lb.buffered() == 0 && !lb.is_discarding());
    }

    #[test]
    fn memory_stays_under_the_limit_while_discarding() {
        let mut lb = LineBuffer::new(1000);
        let chunk = vec![b'x'; 999];
        let mut errors = 0;
        for _ in 0..1000 {
            lb.feed(&chunk, |r| {
                assert!(r.is_err());
                errors += 1
            });
            assert!(lb.buffered() <= 1000);
        }
        assert_eq!(errors, 1);
    }

    #[test]
    fn eof_mid_line_is_reported_not_parsed() {
        let mut lb = LineBuffer::new(64);
        let out = run(&mut lb, &[b"done\npart"]);
        assert_eq!(out, vec![line("done"), Out::Truncated(4)]);
        // A too-long line cut by EOF was already reported once.
        let out = run(&mut lb, &[b"0123456789".repeat(10).as_slice()]);
        assert_eq!(out, vec![Out::TooLong]);
        assert!(lb.finish().is_none());
    }

    #[test]
    fn cr_stripped_only_before_newline() {
        let mut lb = LineBuffer::new(64);
        let out = run(&mut lb, &[b"a\r\r\n\rb\n"]);
        assert_eq!(out, vec![line("a\r"), line("\rb")]);
    }

    /// xorshift64*: deterministic randomness without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn property_any_split_equals_whole_feed() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..2000 {
            let limit = 1 + rng.below(40);
            let len = rng.below(400);
            // Short lines, long lines, CRs and newlines in a small alphabet.
            let alphabet = b"ab\r\n\n";
            let stream: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(60) == 0 {
                        b'\n'
                    } else {
                        alphabet[rng.below(alphabet.len())]
                    }
                })
                .collect();
            let whole = run(&mut LineBuffer::new(limit), &[&stream]);
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let n = 1 + rng.below(stream.len() - at);
                chunks.push(&stream[at..at + n]);
                at += n;
            }
            let split = run(&mut LineBuffer::new(limit), &chunks);
            assert_eq!(whole, split, "case {case}: limit {limit}");
            let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
            let one = run(&mut LineBuffer::new(limit), &bytewise);
            assert_eq!(whole, one, "case {case} byte by byte");
        }
    }
}
