//! `Display` for `Value` is Python's `repr`: each generated value is built
//! independently in a real `python3` (from exact bits and code points, not
//! from our text) and its `repr` compared with ours, line by line.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use miniray::{py, Dict, Value};

/// Runs `python3 -c script` with `input` on stdin and returns its stdout,
/// killing it if it has not finished by the deadline.
fn python(script: &str, input: String, limit: Duration) -> String {
    let mut child: Child = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().expect("writer");
    let out = reader.join().expect("reader").expect("utf-8 output");
    assert!(status.success(), "python3 failed: {status}");
    out
}

/// Builds each line's expression and prints its repr.
const REPR_SCRIPT: &str = r#"
import struct, sys
def f(bits): return struct.unpack('<d', struct.pack('<Q', bits))[0]
def s(points): return ''.join(map(chr, points))
for line in sys.stdin:
    print(repr(eval(line)))
"#;

/// A Python expression that builds `v` without relying on our `repr`.
fn py_expr(v: &Value) -> String {
    let join =
        |items: &mut dyn Iterator<Item = &Value>| items.map(py_expr).collect::<Vec<_>>().join(", ");
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => format!("({i})"),
        Value::BigInt(b) => format!("({b})"),
        Value::Float(x) => format!("f({})", x.to_bits()),
        Value::Complex { re, im } => format!("complex(f({}), f({}))", re.to_bits(), im.to_bits()),
        Value::Str(text) => format!("s({:?})", text.chars().map(u32::from).collect::<Vec<_>>()),
        Value::SurrogateStr(text) => format!("s({:?})", text.code_points().collect::<Vec<_>>()),
        Value::Bytes(b) => format!("bytes({b:?})"),
        Value::Tuple(items) => format!("tuple([{}])", join(&mut items.iter())),
        Value::List(items) => format!("[{}]", join(&mut items.iter())),
        Value::Dict(d) => format!(
            "dict([{}])",
            d.iter()
                .map(|(k, v)| format!("({}, {})", py_expr(k), py_expr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Set(s) => format!("set([{}])", join(&mut s.iter())),
        Value::FrozenSet(s) => format!("frozenset([{}])", join(&mut s.iter())),
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SPECIAL_FLOATS: [f64; 14] = [
    0.0,
    -0.0,
    1.0,
    -2.5,
    0.1,
    1e16,
    1e-5,
    123456789012345680.0,
    5e-324,
    f64::MAX,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1.0 / 3.0,
];

fn float(rng: &mut Rng) -> f64 {
    if rng.below(2) == 0 {
        SPECIAL_FLOATS[rng.below(SPECIAL_FLOATS.len() as u64) as usize]
    } else {
        f64::from_bits(rng.next())
    }
}

/// Code points from the ranges where repr's rules change.
fn code_point(rng: &mut Rng) -> u32 {
    const INTERESTING: [u32; 12] = [
        0x27, 0x22, 0x5C, 0x09, 0x0A, 0x0D, 0x00, 0x7F, 0xA0, 0xAD, 0x2028, 0xFEFF,
    ];
    match rng.below(8) {
        0 => INTERESTING[rng.below(INTERESTING.len() as u64) as usize],
        1 => rng.below(0x100) as u32,
        2 => 0xD800 + rng.below(0x800) as u32,
        3 => rng.below(0x1_0000) as u32,
        4 => rng.below(0x11_0000) as u32,
        _ => 0x20 + rng.below(0x5F) as u32,
    }
}

fn text(rng: &mut Rng) -> Value {
    let len = rng.below(8);
    Value::from_code_points((0..len).map(|_| code_point(rng))).expect("in range")
}

fn int(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => Value::Int(rng.below(20) as i64 - 10),
        1 => Value::Int(rng.next() as i64),
        2 => Value::from(u128::from(rng.next()) << 64 | u128::from(rng.next())),
        _ => {
            let big = num_bigint::BigInt::from(rng.next()).pow(5);
            Value::from(if rng.below(2) == 0 { -big } else { big })
        }
    }
}

fn value(rng: &mut Rng, depth: u32) -> Value {
    let kinds = if depth == 0 { 8 } else { 14 };
    match rng.below(kinds) {
        0 => Value::None,
        1 => Value::Bool(rng.below(2) == 0),
        2 => int(rng),
        3 => Value::Float(float(rng)),
        4 => Value::complex(float(rng), float(rng)),
        5 | 6 => text(rng),
        7 => Value::Bytes((0..rng.below(8)).map(|_| rng.next() as u8).collect()),
        8 => Value::Tuple((0..rng.below(3)).map(|_| value(rng, depth - 1)).collect()),
        9 => Value::List((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        10 | 11 => {
            let mut d = Dict::new();
            for _ in 0..rng.below(4) {
                let key = match rng.below(3) {
                    0 => text(rng),
                    1 => int(rng),
                    _ => Value::tuple([int(rng), text(rng)]),
                };
                d.insert(key, value(rng, depth - 1));
            }
            Value::Dict(d)
        }
        // CPython prints sets in hash order: small ascending ints agree.
        12 => Value::set((0..8).filter(|_| rng.below(2) == 0).collect::<Vec<i64>>()),
        _ => Value::frozenset((0..8).filter(|_| rng.below(3) == 0).collect::<Vec<i64>>()),
    }
}

fn compare(values: &[Value]) {
    let input: String = values.iter().map(|v| py_expr(v) + "\n").collect();
    let out = python(REPR_SCRIPT, input, Duration::from_secs(120));
    let theirs: Vec<&str> = out.lines().collect();
    assert_eq!(theirs.len(), values.len(), "one repr per value");
    let mut wrong = Vec::new();
    for (v, repr) in values.iter().zip(theirs) {
        let ours = v.to_string();
        if ours != repr {
            wrong.push(format!("{v:?}\n  ours:   {ours}\n  python: {repr}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ:\n{}",
        wrong.len(),
        values.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
}

#[test]
fn display_is_pythons_repr_for_generated_values() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut values: Vec<Value> = (0..3000).map(|_| value(&mut rng, 3)).collect();
    values.extend([
        py!(()),
        py!((1,)),
        py!(set[]),
        py!(frozenset[]),
        py!({}),
        py!("'"),
        py!("\""),
        py!("'\""),
        py!(b"'"),
        py!(b"'\""),
        Value::complex(0.0, -0.0),
        Value::complex(-0.0, 0.0),
        Value::complex(0.0, f64::NAN),
        Value::complex(-f64::NAN, -f64::NAN),
        Value::complex(1e16, 1e-5),
    ]);
    compare(&values);
}

/// Every code point, in chunks: the printability table and the escapes
/// agree with this python3 everywhere.
#[test]
fn every_code_point_is_escaped_as_python_does() {
    let values: Vec<Value> = (0..0x11_0000u32)
        .step_by(4096)
        .map(|start| Value::from_code_points(start..start + 4096).expect("in range"))
        .collect();
    compare(&values);
}
