"""A miniray worker in Python: ``serve(fn)`` answers each request with ``fn(request)``.

miniray runs a program as an exec worker (``Exec``, ``Pool::exec``,
``Reactor::spawn_exec``, ``Reactor::listen_exec``) with the worker's
socket as its stdin and stdout: one request per line in, one reply per line
out. This module is that loop, with the standard library alone (Python 3.8
or later, one file: copy it beside your program or put its directory on
``PYTHONPATH``)::

    # worker.py
    from miniray_worker import serve

    def work(job):
        print("working on", job)            # to stderr: never a reply
        if job["n"] < 0:
            raise ValueError("negative n")  # an error reply; serving goes on
        return {"n": job["n"] * 2}

    serve(work)

What ``serve(fn, format=None, max_line=64 MiB)`` does:

* **Formats.** Requests and replies are in ``format``: the argument, else
  ``MINIRAY_FORMAT`` from the environment, else ``"json"``. ``json`` lines
  are what ``json.dumps`` writes; ``marshal`` lines are
  ``base64.b64encode(marshal.dumps(v, 4))``.
* **Stdout is the protocol, and only the protocol.** Before ``fn`` first
  runs, the descriptors 0 and 1 are kept for the protocol alone (duplicated,
  not inherited by subprocesses); descriptor 0 then reads ``/dev/null``,
  descriptor 1 writes to stderr, and ``sys.stdin``/``sys.stdout`` follow.
  So a stray ``print``, a library's warning or a subprocess's output lands
  on stderr and cannot shift the replies. Each reply is flushed as it is
  written.
* **Errors.** An exception from ``fn`` becomes an error reply and serving
  goes on: on a plain line ``{"miniray.error": {"kind": "ValueError",
  "message": "negative n"}}`` (miniray's caller reads it as its error
  ``Remote``); on a framed request ``#e<id> ["ValueError", "negative n",
  traceback]``. A request that does not decode is answered with kind
  ``decode``, a reply that cannot be encoded with ``encode``, a line longer
  than ``max_line`` (not counting its newline) with ``line too long`` (the
  line is dropped up to its newline, read in bounded pieces: memory stays
  within one line of ``max_line`` bytes, time linear in the input).
  ``SystemExit`` and ``KeyboardInterrupt`` end the worker.
* **Frames** (miniray's ``PROTOCOL.md``). ``#h0 miniray/1`` is answered
  ``#a0 miniray/1``; with ``MINIRAY_FRAMES=1`` in the environment that accept
  line is written first, unasked, so a pool knows it may frame its
  requests. ``#q<id> <request>`` is answered ``#r<id> <reply>`` or
  ``#e<id> [...]``; a chunk ``#c<id> [r1, r2, ...]`` with one line
  ``#k<id> [replies, failures, nanos]``: the replies of the items that
  succeeded in order, ``[index, kind, message]`` for each that failed (the
  others are still answered), and the nanoseconds spent in ``fn``. A plain
  line is answered plainly, so frames and plain lines may mix. A frame that
  is malformed, or whose kind is no request, has no id to answer: it gets a
  plain error reply, kind ``bad frame``, quoting the line's first 200 bytes.

Run a function of a module as a worker with ``python3 miniray_worker.py
MODULE:FUNCTION [json|marshal]``.
"""

import base64
import json
import marshal
import os
import sys
import time
import traceback

__all__ = ["serve", "DEFAULT_MAX_LINE", "PROTOCOL"]

#: The longest request line read whole, not counting its newline (miniray's default).
DEFAULT_MAX_LINE = 64 << 20

#: The protocol name hello and accept carry.
PROTOCOL = "miniray/1"

_ACCEPT = b"#a0 " + PROTOCOL.encode()
# Request, reply, chunk, chunk reply, error, hello, accept.
_KINDS = frozenset([b"q", b"r", b"c", b"k", b"e", b"h", b"a"])
_QUOTE_BYTES = 200
# Pieces an over-long line is dropped in.
_DISCARD_PIECE = 1 << 20


class _BadFrame(Exception):
    """A line that starts as a frame (``#``) but is none."""

    def __init__(self, reason, line):
        super().__init__("bad frame (%s): %s" % (reason, _quote(line)))


def _quote(line):
    text = line[:_QUOTE_BYTES].decode("utf-8", "replace")
    if len(line) > _QUOTE_BYTES:
        text += "\u2026"
    return json.dumps(text, ensure_ascii=False)


def _parse(line):
    """``None`` for a plain line, else ``(kind, id, payload)``; raises
    ``_BadFrame`` for a malformed frame (the rules of miniray's frame.rs)."""
    if not line.startswith(b"#"):
        return None
    if len(line) < 2:
        raise _BadFrame("no kind", line)
    kind = line[1:2]
    if kind not in _KINDS:
        raise _BadFrame("unknown kind", line)
    digits = 0
    while digits < 21 and 2 + digits < len(line) and 48 <= line[2 + digits] <= 57:
        digits += 1
    if digits == 0:
        raise _BadFrame("no id", line)
    if digits > 20 or (digits > 1 and line[2:3] == b"0"):
        raise _BadFrame("id not in canonical decimal", line)
    ident = int(line[2 : 2 + digits])
    if ident >= 1 << 64:
        raise _BadFrame("id past 2^64 - 1", line)
    if line[2 + digits : 3 + digits] != b" ":
        raise _BadFrame("no space after the id", line)
    payload = line[3 + digits :]
    if kind in (b"h", b"a") and (ident != 0 or payload != PROTOCOL.encode()):
        raise _BadFrame("hello or accept of another protocol", line)
    return kind, ident, payload


class _Codec:
    def __init__(self, name):
        if name not in ("json", "marshal"):
            raise ValueError("unknown miniray format %r (json or marshal)" % (name,))
        self.name = name

    def decode(self, data):
        if self.name == "json":
            return json.loads(data)
        return marshal.loads(base64.b64decode(data, validate=True))

    def encode(self, value):
        if self.name == "json":
            return json.dumps(value).encode()
        return base64.b64encode(marshal.dumps(value, 4))

    def encode_error(self, kind, message):
        # Built in the call, so CPython's marshal sees a dict nothing else
        # holds and writes a bare `{` (a shared one gets the reference flag).
        if self.name == "json":
            return json.dumps({"miniray.error": {"kind": kind, "message": message}}).encode()
        return base64.b64encode(
            marshal.dumps({"miniray.error": {"kind": kind, "message": message}}, 4)
        )


class _Worker:
    def __init__(self, fn, codec, max_line, inp, out):
        self.fn = fn
        self.codec = codec
        self.max_line = max_line
        self.inp = inp
        self.out = out

    # -- the wire ---------------------------------------------------------

    def lines(self):
        """Request lines without their newline (and a ``\\r`` before it);
        ``(None, head)`` for one longer than the limit, whose rest is read
        and dropped in bounded pieces."""
        while True:
            line = self.inp.readline(self.max_line + 2)
            if not line:
                return
            ended = line.endswith(b"\n")
            if ended:
                line = line[:-1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) <= self.max_line:
                    yield line, None
                    continue
            elif len(line) <= self.max_line:
                sys.stderr.write(
                    "miniray_worker: input ended inside a %d-byte line, dropped\n" % len(line)
                )
                return
            head = line[:_QUOTE_BYTES]
            while not ended:
                piece = self.inp.readline(_DISCARD_PIECE)
                ended = not piece or piece.endswith(b"\n")
            yield None, head

    def write(self, data):
        self.out.write(data + b"\n")
        self.out.flush()

    def plain_error(self, kind, message):
        self.write(self.codec.encode_error(kind, message))

    def framed(self, kind, ident, payload):
        self.write(b"#" + kind + str(ident).encode() + b" " + payload)

    def framed_error(self, ident, fields):
        try:
            payload = self.codec.encode(list(fields))
        except Exception:
            # A traceback with lone surrogates, say: keep what encodes.
            payload = self.codec.encode([_text(f) for f in fields])
        self.framed(b"e", ident, payload)

    # -- serving ----------------------------------------------------------

    def run(self):
        for line, too_long in self.lines():
            if line is None:
                self.line_too_long(too_long)
                continue
            try:
                frame = _parse(line)
            except _BadFrame as e:
                self.plain_error("bad frame", str(e))
                continue
            if frame is None:
                self.plain(line)
                continue
            kind, ident, payload = frame
            if kind == b"q":
                self.request(ident, payload)
            elif kind == b"c":
                self.chunk(ident, payload)
            elif kind == b"h":
                self.write(_ACCEPT)
            else:
                self.plain_error("bad frame", str(_BadFrame("not a request", line)))

    def line_too_long(self, head):
        message = "line longer than the %d-byte limit was discarded" % self.max_line
        # A framed request is answered in kind, when its header was read.
        try:
            frame = _parse(head)
        except _BadFrame:
            frame = None
        if frame is not None and frame[0] in (b"q", b"c"):
            self.framed_error(frame[1], ["line too long", message])
        else:
            self.plain_error("line too long", message)

    def plain(self, line):
        try:
            request = self.codec.decode(line)
        except Exception as e:
            self.plain_error("decode", _describe(e))
            return
        try:
            reply = self.fn(request)
        except Exception as e:
            # A plain error reply has no room for the traceback: stderr has it.
            traceback.print_exc()
            self.plain_error(type(e).__name__, str(e))
            return
        try:
            data = self.codec.encode(reply)
        except Exception as e:
            self.plain_error("encode", _describe(e))
            return
        self.write(data)

    def request(self, ident, payload):
        try:
            request = self.codec.decode(payload)
        except Exception as e:
            self.framed_error(ident, ["decode", _describe(e)])
            return
        try:
            reply = self.fn(request)
        except Exception as e:
            self.framed_error(ident, [type(e).__name__, str(e), traceback.format_exc()])
            return
        try:
            data = self.codec.encode(reply)
        except Exception as e:
            self.framed_error(ident, ["encode", _describe(e)])
            return
        self.framed(b"r", ident, data)

    def chunk(self, ident, payload):
        try:
            items = self.codec.decode(payload)
        except Exception as e:
            self.framed_error(ident, ["decode", _describe(e)])
            return
        if not isinstance(items, (list, tuple)):
            self.framed_error(ident, ["decode", "a chunk is a list, not %s" % type(items).__name__])
            return
        replies, failures = [], []
        nanos = 0
        for index, item in enumerate(items):
            start = time.perf_counter_ns()
            try:
                replies.append((index, self.fn(item)))
            except Exception as e:
                failures.append([index, type(e).__name__, str(e)])
            nanos += time.perf_counter_ns() - start
        try:
            data = self.codec.encode([[r for _, r in replies], failures, nanos])
        except Exception:
            # Some reply does not encode: it fails alone, the rest go.
            kept = []
            for index, reply in replies:
                try:
                    self.codec.encode(reply)
                    kept.append((index, reply))
                except Exception as e:
                    failures.append([index, "encode", _describe(e)])
            failures.sort(key=lambda f: f[0])
            data = self.codec.encode([[r for _, r in kept], failures, nanos])
        self.framed(b"k", ident, data)


def _describe(e):
    return "%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__


def _text(value):
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return str(value)


def _take_std_streams():
    """Keeps descriptors 0 and 1 for the protocol alone; returns them as
    binary files. Descriptor 0 then reads /dev/null and 1 writes to stderr,
    and sys.stdin and sys.stdout follow, so nothing the work function or its
    subprocesses print or read touches the protocol."""
    sys.stdout.flush()
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = sys.stderr
    return os.fdopen(proto_in, "rb"), os.fdopen(proto_out, "wb")


def serve(fn, format=None, max_line=DEFAULT_MAX_LINE):
    """Answers each request line on stdin with ``fn(request)`` on stdout,
    until stdin ends (see the module's docs). ``format``: ``"json"`` or
    ``"marshal"``; ``None`` takes ``MINIRAY_FORMAT`` from the environment,
    else ``"json"``. ``max_line``: the longest request line read, in bytes,
    not counting its newline."""
    codec = _Codec(format or os.environ.get("MINIRAY_FORMAT") or "json")
    if max_line < 1:
        raise ValueError("max_line must be at least 1")
    inp, out = _take_std_streams()
    worker = _Worker(fn, codec, max_line, inp, out)
    try:
        if os.environ.get("MINIRAY_FRAMES") == "1":
            worker.write(_ACCEPT)
        worker.run()
    except (BrokenPipeError, ConnectionResetError):
        # The caller is gone: nobody to answer.
        pass
    finally:
        try:
            out.close()
        except OSError:
            pass


def _main(argv):
    if len(argv) not in (2, 3) or ":" not in argv[1]:
        sys.stderr.write("usage: python3 miniray_worker.py MODULE:FUNCTION [json|marshal]\n")
        return 2
    import importlib

    module, _, name = argv[1].partition(":")
    sys.path.insert(0, os.getcwd())
    fn = getattr(importlib.import_module(module), name)
    serve(fn, argv[2] if len(argv) == 3 else None)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
