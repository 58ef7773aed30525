//! The authenticated protocol as `PROTOCOL.md` section 4 states it, written
//! in Python with the standard library alone (`hmac`, `hashlib`,
//! `secrets`): a Python client against miniray's server and miniray's client
//! against a Python server, with the right secret (served, every line
//! tagged both ways), a wrong one (refused by name) and a forged line
//! (refused by name).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{events_until, DEADLINE};
use miniray::{AuthFailure, ConnectOptions, Error, Reactor, Secret, ServerEvent, ServerOptions};
use serde_json::{json, Value};

/// Both ends of the tagged mode, as clean functions (the Python worker
/// helper can take them as they are).
const PEER: &str = r#"
import hashlib, hmac, json, os, secrets, socket, sys

PREFIX = b"miniray-auth-v2"
MAX_HANDSHAKE_LINE = 512


def derive(secret, label, mode, ns, nc):
    """HMAC-SHA256 under the secret over 'PREFIX LABEL MODE NS NC' (hex nonces)."""
    text = b" ".join([PREFIX, label, mode, ns.hex().encode(), nc.hex().encode()])
    return hmac.new(secret, text, hashlib.sha256).digest()


def handshake_line(rfile):
    line = rfile.readline(MAX_HANDSHAKE_LINE + 1)
    if not line.endswith(b"\n"):
        raise ConnectionError("handshake line missing or too long: %r" % line[:80])
    return line.rstrip(b"\r\n").split(b" ")


class TagSession:
    """Lines after the handshake: 'TAG PAYLOAD', TAG = hex of the first 16
    bytes of HMAC-SHA256(key, seq as 8 bytes big-endian + payload)."""

    def __init__(self, sock, rfile, send_key, recv_key):
        self.sock, self.rfile = sock, rfile
        self.send_key, self.recv_key = send_key, recv_key
        self.send_seq = self.recv_seq = 0

    @staticmethod
    def tag(key, seq, payload):
        return hmac.new(key, seq.to_bytes(8, "big") + payload, hashlib.sha256).digest()[:16]

    def send_line(self, payload):
        t = self.tag(self.send_key, self.send_seq, payload)
        self.send_seq += 1
        self.sock.sendall(t.hex().encode() + b" " + payload + b"\n")

    def recv_line(self):
        """The next payload; None at EOF; ValueError for a line that does not verify."""
        line = self.rfile.readline()
        if not line:
            return None
        line = line.rstrip(b"\n")
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) < 33 or line[32:33] != b" ":
            raise ValueError("line %d carries no tag: %r" % (self.recv_seq, line[:80]))
        given, payload = bytes.fromhex(line[:32].decode()), line[33:]
        if not hmac.compare_digest(given, self.tag(self.recv_key, self.recv_seq, payload)):
            raise ValueError("line %d has a wrong tag" % self.recv_seq)
        self.recv_seq += 1
        return payload


def client_handshake(sock, secret):
    rfile = sock.makefile("rb")
    words = handshake_line(rfile)
    if len(words) != 3 or words[:2] != [PREFIX, b"challenge"]:
        raise PermissionError("no challenge from the server: %r" % b" ".join(words)[:80])
    ns, nc = bytes.fromhex(words[2].decode()), secrets.token_bytes(32)
    proof = derive(secret, b"client-proof", b"tag", ns, nc)
    sock.sendall(b" ".join([PREFIX, b"answer", b"tag", nc.hex().encode(), proof.hex().encode()]) + b"\n")
    words = handshake_line(rfile)
    if len(words) == 3 and words[:2] == [PREFIX, b"refused"]:
        raise PermissionError("refused: " + words[2].decode())
    if len(words) != 3 or words[:2] != [PREFIX, b"ok"]:
        raise PermissionError("no verdict: %r" % b" ".join(words)[:80])
    if not hmac.compare_digest(bytes.fromhex(words[2].decode()), derive(secret, b"server-proof", b"tag", ns, nc)):
        raise PermissionError("the server could not prove the secret")
    return TagSession(sock, rfile, derive(secret, b"client-to-server", b"tag", ns, nc),
                      derive(secret, b"server-to-client", b"tag", ns, nc))


def refuse(sock, word):
    sock.sendall(PREFIX + b" refused " + word + b"\n")
    sock.shutdown(socket.SHUT_WR)


def server_handshake(sock, secret):
    """The session, or None after refusing the client."""
    rfile = sock.makefile("rb")
    ns = secrets.token_bytes(32)
    sock.sendall(PREFIX + b" challenge " + ns.hex().encode() + b"\n")
    try:
        words = handshake_line(rfile)
    except ConnectionError:
        refuse(sock, b"malformed-answer")
        return None
    if len(words) != 5 or words[:2] != [PREFIX, b"answer"] or words[2] != b"tag":
        refuse(sock, b"malformed-answer")
        return None
    nc, proof = bytes.fromhex(words[3].decode()), bytes.fromhex(words[4].decode())
    if not hmac.compare_digest(proof, derive(secret, b"client-proof", b"tag", ns, nc)):
        refuse(sock, b"wrong-secret")
        return None
    sock.sendall(PREFIX + b" ok " + derive(secret, b"server-proof", b"tag", ns, nc).hex().encode() + b"\n")
    return TagSession(sock, rfile, derive(secret, b"server-to-client", b"tag", ns, nc),
                      derive(secret, b"client-to-server", b"tag", ns, nc))


def main():
    secret = os.environb[b"MINIRAY_SECRET"]
    if sys.argv[1] == "client":
        host, port = sys.argv[2].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        s = client_handshake(sock, secret)
        for v in [{"x": 1}, [1, 2.5, None], "é"]:
            s.send_line(json.dumps(v).encode())
            print(json.dumps(json.loads(s.recv_line())), flush=True)
        # A line with a made-up tag: the server names it and closes.
        sock.sendall(b"0" * 32 + b' {"forged": true}\n')
        print(s.rfile.readline().decode().strip(), flush=True)
        try:
            client_handshake(socket.create_connection((host, int(port))), b"not the secret at all")
        except PermissionError as e:
            print(e, flush=True)
    else:
        listener = socket.create_server(("127.0.0.1", 0))
        print(listener.getsockname()[1], flush=True)
        for _ in range(2):
            conn, _ = listener.accept()
            s = server_handshake(conn, secret)
            if s is None:
                continue
            try:
                while (payload := s.recv_line()) is not None:
                    s.send_line(json.dumps(json.loads(payload)).encode())
            except ValueError as e:
                print("refused:", e, flush=True)
                refuse(conn, b"bad-tag")
            s.rfile.close()
            conn.close()


main()
"#;

const SECRET: &str = "the python interop secret";

/// Kills and reaps the Python peer however the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The peer script, written for one test (each removes its own copy).
fn script(test: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "miniray-auth-peer-{}-{test}.py",
        std::process::id()
    ));
    std::fs::write(&path, PEER).expect("write the script");
    path
}

#[test]
fn a_python_client_is_served_and_its_forged_line_refused() {
    let secret = Secret::new(SECRET.as_bytes().to_vec()).expect("secret");
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new().secret(secret);
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let path = script("client");
    let py = Command::new("python3")
        .arg(&path)
        .args(["client", &addr.to_string()])
        .env("MINIRAY_SECRET", SECRET)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    // The reactor serves while the Python client runs.
    let events = events_until(&mut r, |e| {
        e.iter()
            .filter(|e| matches!(e, ServerEvent::AuthFailed { .. }))
            .count()
            == 1
            && e.iter().any(|e| matches!(e, ServerEvent::Exited { .. }))
    });
    let out = py.wait_with_output().expect("python3 finished");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "{\"x\": 1}",
            "[1, 2.5, null]",
            "\"\\u00e9\"",
            "miniray-auth-v2 refused bad-tag",
            "refused: wrong-secret",
        ],
        "{events:?}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn miniray_authenticates_to_a_python_server_and_is_refused_with_a_wrong_secret() {
    let path = script("server");
    let mut py = Reaped(
        Command::new("python3")
            .arg(&path)
            .arg("server")
            .env("MINIRAY_SECRET", SECRET)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let mut out = BufReader::new(py.0.stdout.take().expect("stdout"));
    let mut port = String::new();
    out.read_line(&mut port).expect("port");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", port.trim()).parse().expect("addr");

    let mut r = Reactor::new().expect("reactor");
    let secret = Secret::new(SECRET.as_bytes().to_vec()).expect("secret");
    let w = r
        .connect(addr, &ConnectOptions::new().secret(secret), Some(DEADLINE))
        .expect("authenticated by Python");
    for v in [
        json!({"a": [1, 2]}),
        json!("x".repeat(100_000)),
        json!(null),
    ] {
        r.send(w, &v).expect("send");
        assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("reply"), v);
    }
    r.close(w).expect("close");
    assert!(matches!(
        r.recv::<Value>(w, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));

    let wrong = Secret::new(b"not the python secret".to_vec()).expect("secret");
    match r.connect(addr, &ConnectOptions::new().secret(wrong), Some(DEADLINE)) {
        Err(Error::Auth { addr: at, reason }) => {
            assert_eq!((at, reason), (addr, AuthFailure::WrongSecret));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let status = common::wait_child(&mut py.0, DEADLINE);
    assert!(status.success(), "python server exited {status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("rest");
    assert!(rest.is_empty(), "no line failed its check: {rest}");
    let _ = std::fs::remove_file(path);
    let _ = std::io::stdout().flush();
}
