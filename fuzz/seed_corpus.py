"""Writes the seed corpus of the fuzz targets (committed under corpus/).

Run from fuzz/: python3 seed_corpus.py. The marshal and frame seeds are
made by this machine's CPython, so they hold what marshal.dumps really
writes (FLAG_REF, back-references, every string code)."""
import base64, json, marshal, os

VALUES = [
    None, True, False, 0, -1, 2**31, -2**63 - 1, 2**64, 2**100, -(2**1000),
    0.1, -0.0, 1e308, 5e-324, 1e16, "", "ascii", "\u00e9\u20ac\U0001F600", "a" * 300,
    [], {}, (), (1, (2, 3)), [1, [2, [3, [4]]]],
    {"k": [1, 2.5, None]}, {"z": 1, "a": {"y": [], "b": {}}},
    [{"id": i, "name": "n%d" % i} for i in range(5)],
]
shared = [1, 2]
VALUES.append([shared, shared, {"x": shared}])
BAD = [b"x", {1}, frozenset([2]), {1: 2}, "\ud800", 1j]

def write(target, name, data):
    os.makedirs(os.path.join("corpus", target), exist_ok=True)
    with open(os.path.join("corpus", target, name), "wb") as f:
        f.write(data)

for i, v in enumerate(VALUES + BAD):
    m = marshal.dumps(v)
    write("marshal", "py-%02d" % i, m)
    line = base64.b64encode(m) + b"\n"
    write("frame", "marshal-%02d" % i, b"\x01" + line * 2)
for i, v in enumerate(VALUES):
    if isinstance(v, tuple):
        v = list(v)
    text = json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode()
    write("json_line", "py-%02d" % i, text)
    write("frame", "json-%02d" % i, b"\x00" + text + b"\n" + text + b"\r\n")
write("json_line", "nan", b"[NaN]")
write("json_line", "lone-surrogate", b'"\\ud800"')
write("lines", "mixed", b"\x05\x03ab\ncdefgh\n\r\nxyz")
write("lines", "long", b"\x02\x07" + b"y" * 200 + b"\nok\n")
write("lines", "empty-lines", b"\x01\x01\n\n\n")
write("marshal", "list-2g", b"[\x00\x00\x00\x80")
write("marshal", "long-huge", b"l\xff\xff\xff\x7f")
write("marshal", "ref-cycle", b"\xdb\x01\x00\x00\x00r\x00\x00\x00\x00")

# Python types past JSON, for the marshal serde format (Value and typed
# targets): tuples, bytes, sets, complex, non-finite floats, non-str keys,
# lone surrogates, shared refs, a typed message's shape.
EXTRA = [
    (1, (2, [3])), b"\x00\xff", {1, "a"}, frozenset({(1, 2)}), 1.5 - 2j,
    float("nan"), [float("-inf"), -0.0],
    {1: "i", 2.5: "f", (1,): "t", None: "n", frozenset(): "fs", b"b": "b"},
    "\ud800", "a\udfffb\ud83d\ude00", ["long shared " * 30] * 3, 2**1000,
    -(2**63) - 1, tuple(range(1000, 1300)), {"Pair": [1, "a"]}, "Unit",
    {"id": 7, "name": "n", "shapes": ["Unit", {"New": 5}, {"Named": {"x": 1.0, "tags": []}}],
     "pair": (1, [0.5, 1]), "map": {1: True, -2: False}, "blob": b"xy"},
    [0.5 * i for i in range(50)],
]
for i, v in enumerate(EXTRA):
    write("marshal", "py-x-%02d" % i, marshal.dumps(v))

# Frames (frame.rs, PROTOCOL.md): one line each, without its newline: every
# kind with JSON and marshal payloads, hello and accept, the largest id,
# and the malformed shapes parse names (plain lines among them).
FRAMES = [
    b'#q17 {"n": 5}', b"#r17 10", b"#c18 [1, 2, 3]",
    b'#k18 [[2, 4], [[2, "ValueError", "bad"]], 5100]',
    b'#e19 ["decode", "expected int at byte 0"]',
    b'#e20 ["ValueError", "x", "Traceback (most recent call last):\\n"]',
    b"#h0 miniray/1", b"#a0 miniray/1", b"#q0 ", b"#q18446744073709551615 1",
    b"#q3 " + base64.b64encode(marshal.dumps({"k": [1, 2.5, None]})),
    b"#c4 " + base64.b64encode(marshal.dumps([1, (2, 3), "x"])),
    b"#", b"#x1 2", b"#q 2", b"#q01 2", b"#q123456789012345678901 2",
    b"#q18446744073709551616 2", b"#q12", b"#h0 miniray/2", b"#a1 miniray/1",
    b'{"a": 1}', b"6QEAAAA=", b"", b" #q1 2", b"#q1 \xff\xfe\x00",
]
for i, line in enumerate(FRAMES):
    write("frames", "line-%02d" % i, line)
