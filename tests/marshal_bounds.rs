//! Marshal decoding is bounded by its input: the hostile lines of the
//! reliability issue (references that expand, big ints referenced many
//! times, nested huge counts) and 1 MB inputs, each decoded under a
//! counting allocator. The decode must end in a value or a typed error,
//! hold at most `checks::marshal_peak_bound(N)` bytes at once, allocate at
//! most `checks::marshal_total_bound(N)` in all (work: what is decoded or
//! converted again is allocated again), and use little CPU time.
//! Also the 4300-digit int limit at its edge, against the machine's python3.
//! Decoding is `marshal::from_slice::<Value>`: the format's budget charges
//! a `Value` tree, the largest form the same data commonly takes.

#[path = "../fuzz/checks.rs"]
mod checks;
mod common;

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use checks::meter::Usage;

use miniray::{DecodeError, DecodeErrorKind, Format, Value};

const FLAG_REF: u8 = 0x80;

/// On-CPU nanoseconds of the calling thread (first field of schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Run {
    result: Result<Value, DecodeError>,
    used: Usage,
    cpu: Duration,
}

/// Decodes `data` on its own thread (the meter counts per thread), under
/// the test deadline, and asserts the bounds.
fn decode_measured(name: &str, data: Vec<u8>) -> Run {
    let n = data.len();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let cpu0 = thread_cpu_ns();
        let (result, used) =
            checks::meter::measure(|| miniray::marshal::from_slice::<Value>(&data));
        let cpu = Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu0));
        let _ = tx.send(Run { result, used, cpu });
    });
    // A runaway decode fails here at the deadline; the thread dies with the
    // test process.
    let deadline = common::DEADLINE * 3;
    let run = match rx.recv_timeout(deadline) {
        Ok(run) => run,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: decode still running after {deadline:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{name}: decode panicked"),
    };
    eprintln!(
        "{name}: {n} B in -> {}; peak {} B (bound {}), total {} B (bound {}), cpu {:?}",
        match &run.result {
            Ok(_) => "value".to_owned(),
            Err(e) => format!("{:?}", e.kind),
        },
        run.used.peak,
        checks::marshal_peak_bound(n),
        run.used.total,
        checks::marshal_total_bound(n),
        run.cpu
    );
    assert!(
        run.used.peak <= checks::marshal_peak_bound(n),
        "{name}: {} bytes live at once, over the bound {}",
        run.used.peak,
        checks::marshal_peak_bound(n)
    );
    assert!(
        run.used.total <= checks::marshal_total_bound(n),
        "{name}: {} bytes allocated in all, over the bound {}",
        run.used.total,
        checks::marshal_total_bound(n)
    );
    // Debug build, a shared machine: a linear decode of these inputs takes
    // milliseconds; the quadratic one took many seconds.
    assert!(
        run.cpu < Duration::from_secs(3),
        "{name}: decode used {:?} of CPU",
        run.cpu
    );
    run
}

fn u32le(n: usize) -> [u8; 4] {
    u32::try_from(n).expect("fits").to_le_bytes()
}

/// `[` with `count` items, not flagged.
fn list(out: &mut Vec<u8>, count: usize) {
    out.push(b'[');
    out.extend_from_slice(&u32le(count));
}

fn reference(out: &mut Vec<u8>, slot: usize) {
    out.push(b'r');
    out.extend_from_slice(&u32le(slot));
}

/// A 950-digit (base 2^15) long: about 4290 decimal digits.
fn long_950(out: &mut Vec<u8>, seed: u16) {
    out.push(b'l');
    out.extend_from_slice(&950i32.to_le_bytes());
    for i in 0..950u16 {
        let d = (i.wrapping_mul(7919) ^ seed) & 0x7fff;
        out.extend_from_slice(&d.max(1).to_le_bytes());
    }
}

fn list_len(v: Value) -> Option<usize> {
    match v {
        Value::List(items) => Some(items.len()),
        _ => None,
    }
}

fn dict_len(v: Value) -> Option<usize> {
    match v {
        Value::Dict(d) => Some(d.len()),
        _ => None,
    }
}

fn assert_too_large(name: &str, run: &Run) {
    match &run.result {
        Err(e) => assert!(
            matches!(e.kind, DecodeErrorKind::TooLarge { .. }),
            "{name}: {e}"
        ),
        Ok(_) => panic!("{name}: decoded, expected TooLarge"),
    }
}

#[test]
fn referenced_big_int_is_not_converted_again() {
    // The issue's 134 KB line: a flagged [950-digit int] and 20,000 `r`s.
    let mut d = Vec::new();
    list(&mut d, 20_001);
    d.push(b'[' | FLAG_REF);
    d.extend_from_slice(&u32le(1));
    long_950(&mut d, 1);
    for _ in 0..20_000 {
        reference(&mut d, 0);
    }
    let run = decode_measured("flagged [950-digit int] + 20,000 r", d);
    assert_too_large("big int refs", &run);

    // 20 references expand within the bound: a value, each copy equal.
    let mut d = Vec::new();
    list(&mut d, 21);
    d.push(b'[' | FLAG_REF);
    d.extend_from_slice(&u32le(1));
    long_950(&mut d, 1);
    for _ in 0..20 {
        reference(&mut d, 0);
    }
    let run = decode_measured("flagged [950-digit int] + 20 r", d);
    let v = run.result.expect("20 references decode");
    let Value::List(items) = v else {
        panic!("not a list: {v:?}")
    };
    assert_eq!(items.len(), 21);
    assert!(items.iter().all(|x| x == &items[0]));
}

#[test]
fn referenced_string_expansion_is_refused() {
    // The issue's 272 KB line: a flagged 256 KiB str referenced 2,000 times.
    let mut d = Vec::new();
    list(&mut d, 2001);
    d.push(b'a' | FLAG_REF);
    d.extend_from_slice(&u32le(256 << 10));
    d.extend(std::iter::repeat_n(b'x', 256 << 10));
    for _ in 0..2000 {
        reference(&mut d, 0);
    }
    let run = decode_measured("flagged 256 KiB str + 2,000 r", d);
    assert_too_large("str refs", &run);
}

#[test]
fn nested_huge_counts_reserve_nothing_past_the_bound() {
    // 127 levels, each claiming as many items as bytes remain, then 1 MB of
    // `N`: every claim passes "fits in the bytes left", the sum does not.
    let total = 1 << 20;
    let mut d = Vec::with_capacity(total);
    for level in 0..127 {
        list(&mut d, total - 5 * (level + 1));
    }
    d.resize(total, b'N');
    let run = decode_measured("127 levels claiming 1 MB each", d);
    assert!(run.result.is_err(), "the counts do not add up");
}

#[test]
fn one_megabyte_inputs_stay_within_the_bounds() {
    let total = 1 << 20;

    // Legitimate: 1 MB of None in one list.
    let mut d = Vec::new();
    list(&mut d, total - 5);
    d.resize(total, b'N');
    let run = decode_measured("1 MB list of None", d);
    assert_eq!(list_len(run.result.expect("decodes")), Some(total - 5));

    // Legitimate: distinct big ints, each converted once.
    let mut d = Vec::new();
    let n = (total - 5) / (1 + 4 + 2 * 950);
    list(&mut d, n);
    for i in 0..n {
        long_950(&mut d, i as u16);
    }
    let run = decode_measured("1 MB of 950-digit ints", d);
    assert_eq!(list_len(run.result.expect("decodes")), Some(n));

    // Legitimate: a dict of 65,536 distinct 4-byte keys.
    let mut d = vec![b'{'];
    let keys = 0x10000;
    for k in 0..keys {
        d.extend_from_slice(&[b'z', 4]);
        d.extend_from_slice(format!("{k:04x}").as_bytes());
        d.push(b'N');
    }
    d.push(b'0');
    let run = decode_measured("dict of 65,536 keys", d);
    assert_eq!(dict_len(run.result.expect("decodes")), Some(keys));

    // Hostile: each level a flagged list of 1000 references to the last.
    let mut d = Vec::new();
    list(&mut d, 1);
    d.push(b'[' | FLAG_REF);
    d.extend_from_slice(&u32le(1000));
    d.extend(std::iter::repeat_n(b'N', 1000));
    let mut level = 0;
    while d.len() + 5 + 5 * 1000 <= total {
        d.push(b'[' | FLAG_REF);
        d.extend_from_slice(&u32le(1000));
        for _ in 0..1000 {
            reference(&mut d, level);
        }
        level += 1;
    }
    // Make the outer count honest: slot 0 plus every level.
    let levels = level + 1;
    d[1..5].copy_from_slice(&u32le(levels));
    let run = decode_measured("1 MB chain of 1000-fold references", d);
    assert_too_large("reference chain", &run);

    // Hostile: 1 MB of `r` to a flagged 4 KiB str.
    let mut d = Vec::new();
    let refs = (total - 20 - 4096) / 5;
    list(&mut d, refs + 1);
    d.push(b'a' | FLAG_REF);
    d.extend_from_slice(&u32le(4096));
    d.extend(std::iter::repeat_n(b'y', 4096));
    for _ in 0..refs {
        reference(&mut d, 0);
    }
    let run = decode_measured("1 MB of r to a 4 KiB str", d);
    assert_too_large("str refs 1 MB", &run);
}

/// A list of `first` (if any) then copies of `item`, about `size` bytes.
fn filled(first: &[u8], item: &[u8], size: usize) -> Vec<u8> {
    let copies = (size - 5 - first.len()) / item.len();
    let mut d = Vec::with_capacity(size);
    list(&mut d, copies + usize::from(!first.is_empty()));
    d.extend_from_slice(first);
    for _ in 0..copies {
        d.extend_from_slice(item);
    }
    d
}

#[test]
fn densest_shapes_stay_within_the_bounds() {
    // Each shape as often as 256 KiB holds: the bound must hold for the
    // cheapest bytes of every kind, decoded or refused.
    let size = 256 << 10;
    let r0 = [b'r', 0, 0, 0, 0];
    let mut long9 = vec![b'l', 9, 0, 0, 0];
    long9.extend(std::iter::repeat_n([0xff, 0x7f], 9).flatten());
    let mut long8 = vec![b'l', 8, 0, 0, 0];
    long8.extend(std::iter::repeat_n([0xff, 0x7f], 8).flatten());
    let float = [b'g', 0x34, 0x33, 0x33, 0x33, 0x33, 0x33, 0xd3, 0x3f]; // 0.30000000000000004
    let shapes: &[(&str, &[u8], &[u8])] = &[
        ("empty tuples", b"", b")\x00"),
        ("1-tuples", b"", b")\x01N"),
        ("3-tuples", b"", b")\x03NNN"),
        ("flagged empty tuples", b"", &[b')' | FLAG_REF, 0]),
        ("empty dicts", b"", b"{0"),
        ("1-entry dicts", b"", b"{z\x00N0"),
        ("1-entry dicts, 1-char keys", b"", b"{z\x01kN0"),
        ("ints", b"", b"i\x01\x02\x03\x04"),
        ("floats", b"", &float),
        (
            "flagged floats",
            b"",
            &[&[b'g' | FLAG_REF][..], &float[1..]].concat(),
        ),
        ("latin-1 chars", b"", b"z\x01\xe9"),
        ("ascii chars", b"", b"z\x01a"),
        ("9-digit longs", b"", &long9),
        ("8-digit longs", b"", &long8),
        (
            "refs to {'': None}",
            &[b'{' | FLAG_REF, b'z', 0, b'N', b'0'],
            &r0,
        ),
        ("refs to {}", &[b'{' | FLAG_REF, b'0'], &r0),
        ("refs to ()", &[b')' | FLAG_REF, 0], &r0),
        (
            "refs to (None,)*3",
            &[b')' | FLAG_REF, 3, b'N', b'N', b'N'],
            &r0,
        ),
        (
            "refs to a float",
            &[&[b'g' | FLAG_REF][..], &float[1..]].concat(),
            &r0,
        ),
        (
            "refs to a 9-digit long",
            &[&[b'l' | FLAG_REF][..], &long9[1..]].concat(),
            &r0,
        ),
        ("refs to 'é'", &[b'z' | FLAG_REF, 1, 0xe9], &r0),
    ];
    for (name, first, item) in shapes {
        let run = decode_measured(name, filled(first, item, size));
        if let Err(e) = &run.result {
            assert!(
                matches!(e.kind, DecodeErrorKind::TooLarge { .. }),
                "{name}: {e}"
            );
        }
    }
    // A dict of one repeated key: a value, one entry.
    let mut d = vec![b'{'];
    for _ in 0..(size - 2) / 3 {
        d.extend_from_slice(b"z\x00N");
    }
    d.push(b'0');
    let run = decode_measured("one key 87,000 times", d);
    if let Ok(v) = run.result {
        assert_eq!(dict_len(v), Some(1));
    }
}

/// Payloads a Python peer really sends, about 1 MB each of marshal.
/// Runs a python3 script; its standard output.
fn python_output(script: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

const PAYLOADS: &str = r#"
import base64, marshal
K = 100000
cases = {
    "small dicts": [{"a": None} for _ in range(K)],
    "records": [{"id": i, "name": "n%d" % i} for i in range(K // 3)],
    "dict of dicts": {"k%d" % i: {"v": None} for i in range(K // 2)},
    "dict of 2-char keys": {chr(65 + i // 256) + chr(i % 256): None for i in range(K)},
    "1-lists": [[None] for _ in range(K)],
    "tuples of ints": [(i, -i) for i in range(K)],
    "floats": [i / 7 for i in range(K)],
    "strs": [str(i) for i in range(K)],
    "big ints": [2**100 + i for i in range(K // 2)],
    "one str 100,000 times": ["x" * 100] * K,
    "one row 50,000 times": [[1.5, "abc", None]] * (K // 2),
}
for name, v in cases.items():
    print(name + "\t" + base64.b64encode(marshal.dumps(v)).decode())
"#;

#[test]
fn python_payloads_decode_within_the_bounds() {
    let text = python_output(PAYLOADS);
    let mut n = 0;
    for row in text.lines() {
        let (name, line) = row.split_once('\t').expect("two columns");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(line)
            .expect("base64");
        let run = decode_measured(name, raw);
        if let Err(e) = run.result {
            panic!("{name}: {e}");
        }
        n += 1;
    }
    assert_eq!(n, 11);
}

/// Each row: python's marshal of an int at the edge, and its str() or
/// `refused` when CPython's 4300-digit limit refuses it.
const INT_EDGE: &str = r#"
import base64, marshal
for name, v in [("10**4299", 10**4299), ("-10**4299", -(10**4299)),
                ("10**4300-1", 10**4300 - 1), ("-(10**4300-1)", -(10**4300 - 1)),
                ("10**4300", 10**4300), ("-10**4300", -(10**4300))]:
    try:
        text = str(v)
    except ValueError:
        text = "refused"
    print(name, base64.b64encode(marshal.dumps(v)).decode(), text)
"#;

#[test]
fn int_digit_limit_is_cpythons_sign_excluded() {
    let text = python_output(INT_EDGE);
    let mut rows = 0;
    for row in text.lines() {
        let cols: Vec<&str> = row.split(' ').collect();
        let [name, line, py] = cols[..] else {
            panic!("bad row {row}")
        };
        rows += 1;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(line)
            .expect("base64");
        let ours = Format::Marshal.decode::<serde_json::Value>(line.as_bytes());
        let value = miniray::marshal::from_slice::<Value>(&raw);
        if py == "refused" {
            let e = match ours {
                Err(e) => e,
                Ok(v) => panic!(
                    "{name} decoded ({} chars), CPython refuses it",
                    v.to_string().len()
                ),
            };
            assert!(
                matches!(e.kind, DecodeErrorKind::IntTooLarge),
                "{name}: {e}"
            );
            let e = value.expect_err("Value refuses it too");
            assert!(
                matches!(e.kind, DecodeErrorKind::IntTooLarge),
                "{name}: {e}"
            );
            // The encoder refuses the same number given as JSON text.
            let negative = name.starts_with('-');
            let json = format!("{}1{}", if negative { "-" } else { "" }, "0".repeat(4300));
            let v: serde_json::Value = serde_json::from_str(&json).expect("parse");
            assert!(Format::Marshal.encode(&v).is_err(), "{name} encoded");
        } else {
            let v = ours.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.to_string(), py, "{name}");
            // The encoder accepts it and writes CPython's bytes (CPython
            // flags the int for its reference table; we write no flags).
            let mut again = Vec::new();
            miniray::marshal::encode(&v, &mut again).expect(name);
            let mut unflagged = raw.clone();
            unflagged[0] &= !FLAG_REF;
            assert!(again == unflagged, "{name}: encoder differs from CPython");
            let parsed: serde_json::Value = serde_json::from_str(py).expect("parse");
            assert!(Format::Marshal.encode(&parsed).is_ok(), "{name}");
            // As a Value: the same number, and the same bytes back.
            let value = value.unwrap_or_else(|e| panic!("{name}: {e}"));
            let Value::BigInt(b) = &value else {
                panic!("{name}: {value:?}")
            };
            assert_eq!(b.to_string(), py, "{name}");
            let bytes = miniray::marshal::to_vec(&value).expect(name);
            assert!(bytes == unflagged, "{name}: to_vec differs from CPython");
        }
    }
    assert_eq!(rows, 6);
}
