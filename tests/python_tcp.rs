//! miniray against real Python peers over TCP, both formats: a Python client
//! against a miniray `Server`, a miniray remote `Worker` against a Python
//! server, and Python scripts as exec workers (local and behind `serve --exec`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{example, DEADLINE};
use miniray::serde_json::{self, Value};
use miniray::{ConnectOptions, Exec, Format, Reactor, ServerOptions, WorkerOptions};

/// The value set, and the line codecs of the original library.
const COMMON: &str = r#"
import base64, json, marshal, socket, sys, threading
VALUES = [
    {"outer": {"z": 1, "a": {"y": [1, {"b": None}], "c": {}}}, "list": [3, 2, 1]},
    "h\u00e9llo w\u00f6rld \u2713 \U0001F600 \U0001F4A9 \n\t\"\\ \x00 \u2028 \x7f",
    [0, -1, 2**31, -2**63 - 1, 2**64, 2**100],
    [0.1, -0.0, 1e308, 5e-324],
    [True, False, None],
    [[], {}, ""],
    "x" * (1 << 20),
]
def enc(v, fmt):
    if fmt == "json":
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"
    return base64.b64encode(marshal.dumps(v)) + b"\n"
def dec(line, fmt):
    if fmt == "json":
        return json.loads(line)
    return marshal.loads(base64.b64decode(line.rstrip(b"\r\n"), validate=True))
"#;

const DUMP: &str = r#"
for v in VALUES:
    sys.stdout.write(enc(v, "json").decode())
"#;

const CLIENT: &str = r#"
port, fmt = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=20)
f = s.makefile("rwb")
for v in VALUES:          # pipelined: all requests first
    f.write(enc(v, fmt))
f.flush()
for v in VALUES:
    got = dec(f.readline(), fmt)
    if not same(got, v):
        print("MISMATCH", repr(got)[:200], repr(v)[:200])
        sys.exit(1)
print("ok", len(VALUES))
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

fn script(body: &str) -> String {
    format!("{COMMON}{}{body}", common::PY_SAME)
}

/// A child process that is killed and reaped when dropped.
struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn values_as_json_text() -> Vec<String> {
    let out = Command::new("python3")
        .args(["-c", &script(DUMP)])
        .output()
        .expect("python3 runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn formats() -> [(Format, &'static str); 2] {
    [(Format::Json, "json"), (Format::Marshal, "marshal")]
}

#[test]
fn python_client_against_miniray_server() {
    for (format, name) in formats() {
        let mut r = Reactor::new().expect("reactor");
        let server = r
            .listen("127.0.0.1:0", &ServerOptions::new().format(format), |v| v)
            .expect("listen");
        let port = r.server_addr(server).expect("addr").port().to_string();
        let mut py = Reaped(
            Command::new("python3")
                .args(["-c", &script(CLIENT), &port, name])
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
            r.wait_any(Some(Duration::from_millis(50)))
                .expect("wait_any");
            let _ = r.take_server_events();
            if let Some(s) = py.0.try_wait().expect("try_wait") {
                break s;
            }
        };
        let mut out = String::new();
        BufReader::new(py.0.stdout.take().expect("stdout"))
            .read_line(&mut out)
            .expect("read");
        assert!(status.success(), "{name}: {out}");
        assert_eq!(out.trim(), "ok 7", "{name}");
    }
}

#[test]
fn miniray_remote_worker_against_python_server() {
    let texts = values_as_json_text();
    assert_eq!(texts.len(), 7);
    for (format, name) in formats() {
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
        let port: u16 = port.trim().parse().expect("port number");
        let mut r = Reactor::new().expect("reactor");
        let w = r
            .connect(
                ("127.0.0.1", port),
                &ConnectOptions::new().format(format),
                DEADLINE,
            )
            .expect("connect");
        for t in &texts {
            let v: Value = serde_json::from_str(t).expect("parse");
            r.send(w, &v).expect("send");
        }
        for t in &texts {
            let reply = r.recv(w, Some(DEADLINE)).expect("reply");
            // Byte-identical JSON: exact ints, Python float repr, key order.
            assert_eq!(&serde_json::to_string(&reply).expect("text"), t, "{name}");
        }
        r.close(w).expect("close");
        assert!(r.recv(w, Some(DEADLINE)).expect_err("closed").is_closed());
        drop(py);
    }
}

#[test]
fn python_script_as_local_exec_worker() {
    let texts = values_as_json_text();
    for (format, name) in formats() {
        let mut r = Reactor::new().expect("reactor");
        let exec = Exec::new("python3", ["-c", &script(EXEC_WORKER), name]).expect("exec");
        let w = r
            .spawn_exec(&WorkerOptions::new().format(format), &exec)
            .expect("spawn_exec");
        for t in &texts {
            r.send(w, &serde_json::from_str(t).expect("parse"))
                .expect("send");
        }
        for t in &texts {
            let reply = r.recv(w, Some(DEADLINE)).expect("reply");
            assert_eq!(
                serde_json::to_string(&reply["python"]).expect("text"),
                *t,
                "{name}"
            );
        }
        r.close(w).expect("close");
        match r.recv(w, Some(DEADLINE)) {
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

#[test]
fn serve_exec_python_script_and_call_against_it() {
    for (_, name) in formats() {
        let mut serve = Reaped(
            Command::new(example("serve"))
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--format",
                    name,
                    "--exec",
                    "python3",
                    "-c",
                ])
                .arg(script(EXEC_WORKER))
                .arg(name)
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
        let mut call = Command::new(example("call"))
            .args(["--connect", &addr, "--format", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("call example");
        let input = "{\"b\":1,\"a\":[2**100]}\n"
            .replace("2**100", "1267650600228229401496703205376")
            + "\"\u{1F600}\"\n";
        call.stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        let out = call.wait_with_output().expect("call finished");
        assert!(out.status.success(), "{name}");
        assert_eq!(
            String::from_utf8(out.stdout).expect("utf8"),
            "{\"python\":{\"b\":1,\"a\":[1267650600228229401496703205376]}}\n{\"python\":\"\u{1F600}\"}\n",
            "{name}"
        );
        // SIGTERM: graceful shutdown, exit 0.
        // SAFETY: kill with plain integers on our own child.
        unsafe { libc::kill(serve.0.id() as i32, libc::SIGTERM) };
        let status = common::wait_child(&mut serve.0, DEADLINE);
        assert!(status.success(), "{name}: serve exited {status:?}");
    }
}
