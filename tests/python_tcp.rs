//! miniray against real Python peers over TCP and as exec workers, both
//! formats, every Python value of the oracle (tests/common/pyvalues.rs)
//! compared type-exactly: a Python client against a miniray `Server` and
//! against the `serve` example, a miniray remote `Worker` against a Python
//! server, the `call` example against a Python server, and Python scripts
//! as exec workers (local and behind `serve --exec`).

mod common;
#[path = "common/pyvalues.rs"]
mod pyvalues;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{example, Reaped, DEADLINE};
use miniray::{ConnectOptions, Exec, Format, Reactor, ServerOptions, Value, WorkerOptions};
use pyvalues::{tag, PY_VALUES};

/// The original library's line codecs, and the cases each format carries:
/// every case in marshal; in JSON those `json.dumps` writes, expected back
/// as `json.loads` reads them.
const CODECS: &str = r#"
import socket, threading
def enc(v, fmt):
    if fmt == "json":
        return json.dumps(v).encode() + b"\n"
    return base64.b64encode(marshal.dumps(v)) + b"\n"
def dec(line, fmt):
    if fmt == "json":
        return json.loads(line)
    return marshal.loads(base64.b64decode(line.rstrip(b"\r\n"), validate=True))
def carried(fmt):
    out = []
    for name, v in CASES:
        if fmt == "marshal":
            out.append((name, v, v))
            continue
        try:
            out.append((name, v, json.loads(json.dumps(v))))
        except (TypeError, ValueError):
            pass
    return out
"#;

/// Lines of every carried case in a format: `name \t tag \t line`.
const DUMP: &str = r#"
for name, v, want in carried(sys.argv[1]):
    print("%s\t%s\t%s" % (name, tag_text(want), enc(v, sys.argv[1]).decode().rstrip("\n")))
"#;

/// A pipelined client: all requests, then every reply compared.
const CLIENT: &str = r#"
port, fmt = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=20)
f = s.makefile("rwb")
cases = carried(fmt)
for name, v, want in cases:
    f.write(enc(v, fmt))
f.flush()
for name, v, want in cases:
    got = dec(f.readline(), fmt)
    if tag_text(got) != tag_text(want):
        print("MISMATCH", name, repr(got)[:200], repr(want)[:200])
        sys.exit(1)
print("ok", len(cases))
"#;

const SERVER: &str = r#"
fmt = sys.argv[1]
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
def serve(c):
    f = c.makefile("rwb")
    for line in f:
        f.write(enc(dec(line, fmt), fmt))
        f.flush()
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// An exec worker: stdin and stdout are the worker's socket.
const EXEC_WORKER: &str = r#"
fmt = sys.argv[1]
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    v = dec(line, fmt)
    out.write(enc({"python": v}, fmt))
    out.flush()
"#;

/// Compares `call --output F` lines with the expected tags on stdin.
const COMPARE: &str = r#"
fmt = sys.argv[1]
n = 0
for raw in sys.stdin:
    want, line = raw.rstrip("\n").split("\t")
    got = dec(line.encode(), fmt)
    if isinstance(got, dict) and list(got) == ["python"]:
        got = got["python"]
    if tag_text(got) != want:
        print("MISMATCH", want[:200], repr(got)[:200])
        sys.exit(1)
    n += 1
print("ok", n)
"#;

fn script(body: &str) -> String {
    format!("{PY_VALUES}{CODECS}{body}")
}

/// One carried case: its name, the tag of what must come back, its line.
struct Case {
    name: String,
    tag: serde_json::Value,
    line: String,
}

fn cases(name: &str) -> Vec<Case> {
    pyvalues::python(&format!("{CODECS}{DUMP}"), &[name], "")
        .lines()
        .map(|row| {
            let cols: Vec<&str> = row.split('\t').collect();
            Case {
                name: cols[0].to_owned(),
                tag: serde_json::from_str(cols[1]).expect("tag"),
                line: cols[2].to_owned(),
            }
        })
        .collect()
}

fn formats() -> [(Format, &'static str, usize); 2] {
    // (format, name, cases it carries)
    [(Format::Json, "json", 17), (Format::Marshal, "marshal", 22)]
}

/// Runs a Python client against `port` while `drive` keeps the serving
/// side going; asserts it saw every case come back exactly.
fn python_client(port: u16, name: &str, n: usize, mut drive: impl FnMut()) {
    let mut py = Reaped(
        Command::new("python3")
            .args(["-c", &script(CLIENT), &port.to_string(), name])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let end = Instant::now() + DEADLINE;
    let status = loop {
        assert!(
            Instant::now() < end,
            "python client did not finish ({name})"
        );
        drive();
        if let Some(s) = py.0.try_wait().expect("try_wait") {
            break s;
        }
    };
    let mut out = String::new();
    BufReader::new(py.0.stdout.take().expect("stdout"))
        .read_line(&mut out)
        .expect("read");
    assert!(status.success(), "{name}: {out}");
    assert_eq!(out.trim(), format!("ok {n}"), "{name}");
}

#[test]
fn python_client_against_miniray_server() {
    for (format, name, n) in formats() {
        let mut r = Reactor::new().expect("reactor");
        let server = r
            .listen(
                "127.0.0.1:0",
                &ServerOptions::new().format(format),
                |v: Value| v,
            )
            .expect("listen");
        let port = r.server_addr(server).expect("addr").port();
        python_client(port, name, n, || {
            r.wait_any(Some(Duration::from_millis(50)))
                .expect("wait_any");
            let _ = r.take_server_events();
        });
    }
}

/// Starts an example program that prints `listening on HOST:PORT` first.
fn start_server(args: &[&str]) -> (Reaped, String) {
    let mut serve = Reaped(
        Command::new(example("serve"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve example (built by cargo test)"),
    );
    let mut first = String::new();
    BufReader::new(serve.0.stdout.as_mut().expect("stdout"))
        .read_line(&mut first)
        .expect("listening line");
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .expect("banner")
        .to_owned();
    (serve, addr)
}

fn stop(mut serve: Reaped, name: &str) {
    // SIGTERM: graceful shutdown, exit 0.
    // SAFETY: kill with plain integers on our own child.
    unsafe { libc::kill(serve.0.id() as i32, libc::SIGTERM) };
    let status = common::wait_child(&mut serve.0, DEADLINE);
    assert!(status.success(), "{name}: serve exited {status:?}");
}

#[test]
fn python_client_against_the_serve_example() {
    for (_, name, n) in formats() {
        let (serve, addr) = start_server(&["--listen", "127.0.0.1:0", "--format", name]);
        let port: u16 = addr
            .rsplit(':')
            .next()
            .expect("port")
            .parse()
            .expect("port");
        python_client(port, name, n, || {
            std::thread::sleep(Duration::from_millis(20))
        });
        stop(serve, name);
    }
}

fn python_server(name: &str) -> (Reaped, u16) {
    let mut py = Reaped(
        Command::new("python3")
            .args(["-c", &script(SERVER), name])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let mut port = String::new();
    BufReader::new(py.0.stdout.as_mut().expect("stdout"))
        .read_line(&mut port)
        .expect("port");
    (py, port.trim().parse().expect("port number"))
}

#[test]
fn miniray_remote_worker_against_python_server() {
    for (format, name, n) in formats() {
        let cases = cases(name);
        assert_eq!(cases.len(), n);
        let (py, port) = python_server(name);
        let mut r = Reactor::new().expect("reactor");
        let w = r
            .connect(
                ("127.0.0.1", port),
                &ConnectOptions::new().format(format),
                Some(DEADLINE),
            )
            .expect("connect");
        for c in &cases {
            let v: Value = format.decode(c.line.as_bytes()).expect("decode");
            r.send(w, &v).expect("send");
        }
        for c in &cases {
            let reply: Value = r.recv(w, Some(DEADLINE)).expect("reply");
            assert_eq!(tag(&reply), c.tag, "{name}: {}", c.name);
        }
        r.close(w).expect("close");
        assert!(r
            .recv::<Value>(w, Some(DEADLINE))
            .expect_err("closed")
            .is_closed());
        drop(py);
    }
}

/// `{"python": v}` from an exec worker: the `v`.
fn unwrap_python(reply: &Value) -> &Value {
    match reply {
        Value::Dict(d) => d.get_str("python").expect("python key"),
        other => panic!("not a dict: {other:?}"),
    }
}

#[test]
fn python_script_as_local_exec_worker() {
    for (format, name, n) in formats() {
        let cases = cases(name);
        assert_eq!(cases.len(), n);
        let mut r = Reactor::new().expect("reactor");
        let exec = Exec::new("python3", ["-c", &script(EXEC_WORKER), name]).expect("exec");
        let w = r
            .spawn_exec(&WorkerOptions::new().format(format), &exec)
            .expect("spawn_exec");
        for c in &cases {
            let v: Value = format.decode(c.line.as_bytes()).expect("decode");
            r.send(w, &v).expect("send");
        }
        for c in &cases {
            let reply: Value = r.recv(w, Some(DEADLINE)).expect("reply");
            assert_eq!(tag(unwrap_python(&reply)), c.tag, "{name}: {}", c.name);
        }
        r.close(w).expect("close");
        match r.recv::<Value>(w, Some(DEADLINE)) {
            Err(miniray::Error::Closed { status: Some(s) }) => assert!(s.success(), "{name}"),
            other => panic!("expected Closed, got {other:?}"),
        }
    }
}

#[test]
fn exec_of_a_missing_program_fails_the_spawn() {
    let mut r = Reactor::new().expect("reactor");
    let exec = Exec::new("/nonexistent/program", Vec::<String>::new()).expect("exec");
    match r.spawn_exec(&WorkerOptions::new(), &exec) {
        Err(miniray::Error::Exec { program, source }) => {
            assert_eq!(program, "/nonexistent/program");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("expected Error::Exec, got {other:?}"),
    }
    assert!(r.is_empty());
}

/// Runs `call --connect addr --format name --input name --output name` with
/// every case's line on stdin; Python compares its output with the tags.
fn call_every_case(addr: &str, name: &str, n: usize) {
    let cases = cases(name);
    assert_eq!(cases.len(), n);
    let mut call = Command::new(example("call"))
        .args([
            "--connect",
            addr,
            "--format",
            name,
            "--input",
            name,
            "--output",
            name,
            "--timeout",
            "30",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("call example");
    let input: String = cases.iter().map(|c| format!("{}\n", c.line)).collect();
    let mut stdin = call.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = call.wait_with_output().expect("call finished");
    writer.join().expect("writer").expect("write");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(replies.lines().count(), n, "{name}");
    let rows: String = cases
        .iter()
        .zip(replies.lines())
        .map(|(c, reply)| format!("{}\t{reply}\n", c.tag))
        .collect();
    let checked = pyvalues::python(&format!("{CODECS}{COMPARE}"), &[name], &rows);
    assert_eq!(checked.trim(), format!("ok {n}"), "{name}");
}

#[test]
fn call_example_against_python_server() {
    for (_, name, n) in formats() {
        let (py, port) = python_server(name);
        call_every_case(&format!("127.0.0.1:{port}"), name, n);
        drop(py);
    }
}

#[test]
fn serve_exec_python_script_and_call_against_it() {
    for (_, name, n) in formats() {
        let script = script(EXEC_WORKER);
        let (serve, addr) = start_server(&[
            "--listen",
            "127.0.0.1:0",
            "--format",
            name,
            "--exec",
            "python3",
            "-c",
            &script,
            name,
        ]);
        call_every_case(&addr, name, n);
        stop(serve, name);
    }
}

#[test]
fn call_prints_python_repr_by_default() {
    let (py, port) = python_server("json");
    let mut call = Command::new(example("call"))
        .args(["--connect", &format!("127.0.0.1:{port}"), "--timeout", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("call example");
    call.stdin
        .take()
        .expect("stdin")
        .write_all(b"{\"a\": [1, 2.5, null, true, \"x\"]}\nNaN\n")
        .expect("write");
    let out = call.wait_with_output().expect("call finished");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).expect("utf8"),
        "{'a': [1, 2.5, None, True, 'x']}\nnan\n"
    );
    drop(py);
}
