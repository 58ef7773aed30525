//! The properties the fuzz targets check. Shared, by `#[path]`, with
//! `tests/fuzz_corpus.rs`, which replays the committed corpus through the
//! same functions under `cargo test`.
// Each fuzz target uses one of these.
#![allow(dead_code)]

use miniray::framing::LineBuffer;
use miniray::serde_json::Value;
use miniray::{Error, Format};

#[derive(Debug, PartialEq)]
enum Out {
    Line(Vec<u8>),
    TooLong,
    Truncated(usize),
}

fn frame_all(limit: usize, chunks: &[&[u8]]) -> Vec<Out> {
    let mut lb = LineBuffer::new(limit);
    let mut out = Vec::new();
    for c in chunks {
        lb.feed(c, |r| {
            out.push(match r {
                Ok(l) => Out::Line(l.to_vec()),
                Err(Error::LineTooLong { .. }) => Out::TooLong,
                Err(e) => panic!("framing yielded {e}"),
            })
        });
        // Memory never beyond the line limit.
        assert!(
            lb.buffered() <= limit,
            "{} buffered over limit {limit}",
            lb.buffered()
        );
    }
    if let Some(Error::TruncatedLine { len }) = lb.finish() {
        out.push(Out::Truncated(len));
    }
    out
}

/// `lines`: the first byte sets the limit (1..=64), the next the chunking;
/// any chunking gives the same lines and errors as one feed.
pub fn lines(data: &[u8]) {
    let (Some(&l), Some(&step)) = (data.first(), data.get(1)) else {
        return;
    };
    let limit = 1 + usize::from(l % 64);
    let stream = &data[2..];
    let whole = frame_all(limit, &[stream]);
    let step = 1 + usize::from(step % 17);
    let chunks: Vec<&[u8]> = stream.chunks(step).collect();
    assert_eq!(whole, frame_all(limit, &chunks));
}

fn stable(format: Format, v: &Value) {
    let line = format.encode(v).expect("a decoded value encodes");
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
    let again = format
        .decode(&line[..line.len() - 1])
        .expect("what we encode decodes");
    assert_eq!(&again, v, "decode -> encode -> decode is stable");
}

/// `marshal`: raw marshal bytes never panic the decoder, and what decodes
/// survives encode and decode unchanged (in both formats).
pub fn marshal(data: &[u8]) {
    if let Ok(v) = miniray::marshal::decode(data) {
        stable(Format::Marshal, &v);
        stable(Format::Json, &v);
    }
}

/// `json_line`: any bytes as a JSON line. What decodes is stable in JSON;
/// it also encodes as marshal (or fails with a typed error, for an integer
/// past 4300 digits) and that line decodes. (Not equal text: JSON keeps a
/// number's spelling, `1E5`, `-0`, which marshal normalises.)
pub fn json_line(data: &[u8]) {
    if let Ok(v) = Format::Json.decode(data) {
        stable(Format::Json, &v);
        if let Ok(line) = Format::Marshal.encode(&v) {
            Format::Marshal
                .decode(&line[..line.len() - 1])
                .expect("marshal of a JSON value decodes");
        }
    }
}

/// `frame`: framing and both formats end to end, never a panic.
pub fn frame(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let format = if sel & 1 == 0 {
        Format::Json
    } else {
        Format::Marshal
    };
    let mut lb = LineBuffer::new(1 + usize::from(sel >> 1) * 64);
    let mut scratch = Vec::new();
    let mut values = Vec::new();
    for chunk in rest.chunks(1 + usize::from(sel % 7)) {
        lb.feed(chunk, |line| {
            if let Ok(line) = line {
                if let Ok(v) = format.decode_line(line, &mut scratch) {
                    values.push(v);
                }
            }
        });
    }
    let _ = lb.finish();
    for v in &values {
        stable(format, v);
    }
}
