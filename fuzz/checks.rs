//! The properties the fuzz targets check. Shared, by `#[path]`, with
//! `tests/fuzz_corpus.rs`, which replays the committed corpus through the
//! same functions under `cargo test`.
// Each fuzz target uses one of these.
#![allow(dead_code)]

use miniray::framing::LineBuffer;
use miniray::Value;
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
    let again: Value = format
        .decode(&line[..line.len() - 1])
        .expect("what we encode decodes");
    assert_eq!(&again, v, "decode -> encode -> decode is stable");
}

/// The stated bound on decoding `n` marshal bytes: at no moment more than
/// `96 n + 1 MiB` bytes of heap live that the decode allocated (its result
/// included). 96 per byte because one `N` byte is a list slot (a 32-byte
/// `Value`, in a buffer that may have doubled, and the old buffer while it
/// is copied).
pub fn marshal_peak_bound(n: usize) -> usize {
    96 * n + (1 << 20)
}

/// The work bound on decoding `n` marshal bytes: at most `128 n + 2 MiB`
/// bytes allocated in all (freed ones too). Allocation stands in for time
/// deterministically: decoding a reference again allocates again.
pub fn marshal_total_bound(n: usize) -> usize {
    128 * n + (2 << 20)
}

/// Runs `decode` on `data` under the meter; panics if it passed either
/// bound. Returns the result and what it used.
pub fn bounded<T>(data: &[u8], decode: impl FnOnce(&[u8]) -> T) -> (T, meter::Usage) {
    let (r, used) = meter::measure(|| decode(data));
    assert!(
        used.peak <= marshal_peak_bound(data.len()),
        "decoding {} bytes held {} bytes at once, over the bound {}",
        data.len(),
        used.peak,
        marshal_peak_bound(data.len())
    );
    assert!(
        used.total <= marshal_total_bound(data.len()),
        "decoding {} bytes allocated {} bytes in all, over the bound {}",
        data.len(),
        used.total,
        marshal_total_bound(data.len())
    );
    (r, used)
}

/// Decodes `data` as a marshal [`miniray::Value`] under the meter (see
/// [`bounded`]).
pub fn marshal_bounded(
    data: &[u8],
) -> (Result<miniray::Value, miniray::DecodeError>, meter::Usage) {
    bounded(data, miniray::marshal::from_slice::<miniray::Value>)
}

/// `marshal`: raw marshal bytes never panic the decoder, decoding a `Value`
/// stays within [`marshal_peak_bound`] and [`marshal_total_bound`], what
/// decodes survives `to_vec` and `from_slice` unchanged, and decodes into
/// the same value when the bytes are decoded again with a reference table
/// Python never wrote (ours has none); both line formats keep what
/// decodes stable.
pub fn marshal(data: &[u8]) {
    if let (Ok(v), _) = marshal_bounded(data) {
        let bytes = miniray::marshal::to_vec(&v).expect("a decoded Value encodes");
        let again: miniray::Value =
            miniray::marshal::from_slice(&bytes).expect("what we encode decodes");
        assert_eq!(again, v, "decode -> encode -> decode is stable");
    }
    if let (Ok(v), _) = marshal_bounded(data) {
        stable(Format::Marshal, &v);
    }
}

/// A typed message, as a user's derive makes it: every serde shape.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Shape {
    Unit,
    New(Option<i64>),
    Pair(u8, String),
    Named { x: f64, tags: Vec<String> },
}

/// A typed message's body.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Typed {
    id: u32,
    name: String,
    shapes: Vec<Shape>,
    pair: (i32, Vec<f64>),
    map: std::collections::BTreeMap<i64, bool>,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
}

/// `marshal_typed`: raw marshal bytes into typed Rust values (a struct of
/// every serde shape, a bare enum, a map of ints, a `Vec<f64>`) never
/// panic, stay within the bounds, and what decodes round-trips.
pub fn marshal_typed(data: &[u8]) {
    fn check<T>(data: &[u8])
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        if let (Ok(v), _) = bounded(data, miniray::marshal::from_slice::<T>) {
            let bytes = miniray::marshal::to_vec(&v).expect("a decoded value encodes");
            let again: T = miniray::marshal::from_slice(&bytes).expect("what we encode decodes");
            // NaN != NaN: compare the bytes of a second encode instead.
            let bytes2 = miniray::marshal::to_vec(&again).expect("encodes again");
            assert_eq!(bytes, bytes2, "decode -> encode -> decode is stable");
        }
    }
    check::<Typed>(data);
    check::<Vec<Shape>>(data);
    check::<std::collections::BTreeMap<i64, String>>(data);
    check::<Vec<f64>>(data);
    check::<(i32, String, Option<u64>)>(data);
}

/// `json_line`: any bytes as a JSON line. What decodes is stable in JSON;
/// it also encodes as marshal (or fails with a typed error, for an integer
/// past 4300 digits) and that line decodes. (Not equal text: JSON keeps a
/// number's spelling, `1E5`, `-0`, which marshal normalises.)
pub fn json_line(data: &[u8]) {
    if let Ok(v) = Format::Json.decode::<Value>(data) {
        stable(Format::Json, &v);
        if let Ok(line) = Format::Marshal.encode(&v) {
            Format::Marshal
                .decode::<Value>(&line[..line.len() - 1])
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
    let mut values = Vec::new();
    for chunk in rest.chunks(1 + usize::from(sel % 7)) {
        lb.feed(chunk, |line| {
            if let Ok(line) = line {
                if let Ok(v) = format.decode::<Value>(line) {
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

/// `frames`: [`frame::parse`](miniray::frame::parse) over any line. It never
/// panics; a line without a leading `#` is plain (`Ok(None)`); a frame that
/// parses is exactly its header (at most `MAX_HEADER` bytes, as
/// `write_header` writes it) followed by its payload, and a hello or accept
/// is id 0 with the protocol's name; a malformed frame starts with `#` and
/// its error quotes a bounded head. The other way round: a header written
/// for a kind and an id taken from the input, followed by the rest, parses
/// back to them (hello and accept only with their own payload).
pub fn frames(data: &[u8]) {
    use miniray::frame::{self, Kind, MAX_HEADER, PROTOCOL, QUOTE_BYTES};
    match frame::parse(data) {
        Ok(None) => assert!(!data.starts_with(b"#"), "a frame taken as plain"),
        Ok(Some((h, payload))) => {
            let mut line = Vec::new();
            frame::write_header(h.kind, h.id, &mut line);
            assert!(line.len() <= MAX_HEADER, "header of {} bytes", line.len());
            line.extend_from_slice(payload);
            assert_eq!(line, data, "re-encoded differently");
            if matches!(h.kind, Kind::Hello | Kind::Accept) {
                assert_eq!((h.id, payload), (0, PROTOCOL.as_bytes()));
            }
        }
        Err(e) => {
            assert!(data.starts_with(b"#"), "a plain line refused: {e}");
            // The quote: at most QUOTE_BYTES bytes, each at most a
            // replacement character or a 6-byte escape, and the reason.
            assert!(e.to_string().len() <= 6 * QUOTE_BYTES + 100, "{e}");
        }
    }

    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let Some(kind) = Kind::from_byte(b"qrckeha"[usize::from(k) % 7]) else {
        unreachable!("every byte of the list is a kind");
    };
    let (id, payload) = match rest.split_first_chunk::<8>() {
        Some((id, payload)) => (u64::from_le_bytes(*id), payload),
        None => (u64::from(k), rest),
    };
    let (id, payload) = match kind {
        Kind::Hello | Kind::Accept => (0, PROTOCOL.as_bytes()),
        _ => (id, payload),
    };
    let mut line = Vec::new();
    frame::write_header(kind, id, &mut line);
    let header = line.len();
    assert!(header <= MAX_HEADER);
    line.extend_from_slice(payload);
    let (h, back) = frame::parse(&line)
        .expect("a written frame parses")
        .expect("a written frame is no plain line");
    assert_eq!((h.kind, h.id, back), (kind, id, payload));
}

/// A counting global allocator: what the calling thread allocates inside
/// [`meter::measure`], as the live peak and the running total. Per thread,
/// so tests running in parallel do not disturb each other's figures.
pub mod meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// The system allocator, counted.
    pub struct Counting;

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    thread_local! {
        // const-initialised Cells without Drop: no lazy registration and no
        // allocation when the allocator touches them.
        static ON: Cell<bool> = const { Cell::new(false) };
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
        static TOTAL: Cell<usize> = const { Cell::new(0) };
    }

    /// What one measured call used, in bytes.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Usage {
        /// Most bytes live at once (allocated inside the call, not yet freed).
        pub peak: usize,
        /// Bytes allocated in all, freed or not.
        pub total: usize,
    }

    fn grew(by: usize, freed: usize) {
        let _ = ON.try_with(|on| {
            if on.get() {
                // A moving realloc holds old and new at once: count the peak
                // before the old block is released.
                let live = LIVE.with(Cell::get) + by as isize;
                PEAK.with(|p| p.set(p.get().max(live)));
                LIVE.with(|l| l.set(live - freed as isize));
                TOTAL.with(|t| t.set(t.get().saturating_add(by)));
            }
        });
    }

    fn shrank(by: usize) {
        let _ = ON.try_with(|on| {
            if on.get() {
                LIVE.with(|l| l.set(l.get() - by as isize));
            }
        });
    }

    // SAFETY: every method forwards to `System` with the caller's arguments
    // unchanged, so System's guarantees hold; the counting touches only
    // const thread-locals and never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            grew(layout.size(), 0);
            // SAFETY: the caller's contract for `alloc`, passed on.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            grew(layout.size(), 0);
            // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            shrank(layout.size());
            // SAFETY: the caller's contract for `dealloc`, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            grew(new_size, layout.size());
            // SAFETY: the caller's contract for `realloc`, passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Runs `f` on this thread, counting its allocations. Not reentrant.
    pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
        LIVE.with(|l| l.set(0));
        PEAK.with(|p| p.set(0));
        TOTAL.with(|t| t.set(0));
        ON.with(|on| on.set(true));
        let r = f();
        ON.with(|on| on.set(false));
        let used = Usage {
            peak: PEAK.with(Cell::get).max(0) as usize,
            total: TOTAL.with(Cell::get),
        };
        (r, used)
    }
}
