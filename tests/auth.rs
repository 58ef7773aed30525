//! Authentication of TCP peers with a shared secret: both sides prove it,
//! every mismatch is a typed error naming the server and the cause (with
//! the server's refusal line as the verdict), nothing is forked for a
//! client that fails, and secrets are handled with care (no short ones, no
//! readable files, never in an exec program's environment).

mod common;

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{events_until, example, wait_child, DEADLINE};
use miniray::{
    AuthFailure, ConnectOptions, Error, Reactor, Secret, ServerEvent, ServerOptions, SECRET_ENV,
};
use serde_json::{json, Value};

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec()).expect("a long enough secret")
}

fn auth_failed(events: &[ServerEvent]) -> Option<&'static str> {
    events.iter().find_map(|e| match e {
        ServerEvent::AuthFailed { reason, .. } => Some(*reason),
        _ => None,
    })
}

fn accepted(events: &[ServerEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, ServerEvent::Accepted { .. }))
}

fn auth_reason(got: miniray::Result<impl std::fmt::Debug>) -> (std::net::SocketAddr, AuthFailure) {
    match got {
        Err(Error::Auth { addr, reason }) => (addr, reason),
        other => panic!("expected an authentication error, got {other:?}"),
    }
}

#[test]
fn right_secret_is_served_wrong_or_missing_is_refused_before_fork() {
    let s1 = secret("a shared secret of some length");
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new()
        .secret(s1.clone())
        .auth_timeout(Duration::from_millis(300));
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");

    // The right secret.
    let good = r
        .connect(addr, &ConnectOptions::new().secret(s1), Some(DEADLINE))
        .expect("connect");
    r.send(good, &json!({"authenticated": true})).expect("send");
    assert_eq!(
        r.recv::<Value>(good, Some(DEADLINE)).expect("echo"),
        json!({"authenticated": true})
    );
    let events = events_until(&mut r, accepted);
    assert!(auth_failed(&events).is_none(), "{events:?}");

    // A wrong secret: the server's refusal is the verdict, nothing forked.
    let wrong = ConnectOptions::new().secret(secret("a guess at the shared secret"));
    let (at, reason) = auth_reason(r.connect(addr, &wrong, Some(DEADLINE)));
    assert_eq!((at, reason), (addr, AuthFailure::WrongSecret));
    let events = events_until(&mut r, |e| auth_failed(e).is_some());
    assert_eq!(auth_failed(&events), Some("wrong answer"));
    assert!(!accepted(&events));

    // No secret at all: the challenge is never taken for a reply.
    let plain = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    r.send(plain, &json!("hello?")).expect("send");
    let (at, reason) = auth_reason(r.recv::<Value>(plain, Some(DEADLINE)));
    assert_eq!((at, reason), (addr, AuthFailure::SecretRequired));
    assert!(matches!(
        r.recv::<Value>(plain, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));
    let events = events_until(&mut r, |e| auth_failed(e).is_some());
    assert_eq!(auth_failed(&events), Some("malformed answer"));
    assert!(!accepted(&events));

    // Silence: refused and closed at the deadline.
    let mut silent = std::net::TcpStream::connect(addr).expect("connect");
    let events = events_until(&mut r, |e| auth_failed(e).is_some());
    assert_eq!(auth_failed(&events), Some("no answer in time"));
    assert!(!accepted(&events));
    let mut said = String::new();
    silent
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let _ = silent.read_to_string(&mut said);
    assert!(said.starts_with("miniray-auth-v2 challenge "), "{said:?}");
    assert!(
        said.ends_with("miniray-auth-v2 refused timeout\n"),
        "{said:?}"
    );
    assert_eq!(r.server_connections(s).expect("count"), 1);
}

/// A client with a secret against a server without one: no challenge ever
/// comes, and `connect` says so at its deadline.
#[test]
fn a_secret_against_a_plain_server_fails_naming_the_missing_challenge() {
    let mut r = Reactor::new().expect("reactor");
    let s = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let opts = ConnectOptions::new().secret(secret("a shared secret of some length"));
    let got = r.connect(addr, &opts, Some(Duration::from_millis(300)));
    let (at, reason) = auth_reason(got);
    assert_eq!((at, reason.clone()), (addr, AuthFailure::NoChallenge));
    assert!(reason.to_string().contains("no authentication challenge"));
    r.stop_server(s).expect("stop");
}

/// With several addresses, the missing challenge still names itself, and
/// no address is tried once the deadline has passed: the server sees one
/// connection, not one per address.
#[test]
fn a_missing_challenge_with_two_addresses_keeps_its_error_and_tries_once() {
    let mut r = Reactor::new().expect("reactor");
    let s = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let opts = ConnectOptions::new().secret(secret("a shared secret of some length"));
    let got = r.connect(&[addr, addr][..], &opts, Some(Duration::from_millis(300)));
    assert_eq!(auth_reason(got).1, AuthFailure::NoChallenge);
    // A marker connection: the listener accepts in order, so once it is
    // accepted, any connection `connect` made before it was too.
    let marker = std::net::TcpStream::connect(addr).expect("marker");
    let marker_port = marker.local_addr().expect("local").port();
    let events = events_until(&mut r, |ev| {
        ev.iter()
            .any(|e| matches!(e, ServerEvent::Accepted { peer, .. } if peer.port() == marker_port))
    });
    let accepted = events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Accepted { .. }))
        .count();
    assert_eq!(
        accepted, 2,
        "connect's connections plus the marker: {events:?}"
    );
    r.stop_server(s).expect("stop");
}

#[test]
fn encryption_round_trips_and_a_server_can_require_it() {
    let s1 = secret("a shared secret of some length");
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new()
        .secret(s1.clone())
        .require_encryption(true);
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let enc = ConnectOptions::new().secret(s1.clone()).encrypt(true);
    let w = r.connect(addr, &enc, Some(DEADLINE)).expect("connect");
    // Large enough for many records, and a batch pipelined at once.
    let big = json!("é".repeat(300_000));
    for i in 0..20 {
        r.send(w, &json!({ "i": i })).expect("send");
    }
    r.send(w, &big).expect("send");
    for i in 0..20 {
        assert_eq!(
            r.recv::<Value>(w, Some(DEADLINE)).expect("reply"),
            json!({ "i": i })
        );
    }
    assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("reply"), big);

    // A client that does not encrypt is refused, naming why.
    let tags_only = ConnectOptions::new().secret(s1);
    let got = r.connect(addr, &tags_only, Some(DEADLINE));
    assert_eq!(auth_reason(got).1, AuthFailure::EncryptionRequired);
    let events = events_until(&mut r, |e| auth_failed(e).is_some());
    assert_eq!(auth_failed(&events), Some("encryption required"));

    // Encryption needs a secret, on both sides.
    let no_key = ConnectOptions::new().encrypt(true);
    assert!(matches!(
        r.connect(addr, &no_key, Some(DEADLINE)),
        Err(Error::Secret { .. })
    ));
    let no_key = ServerOptions::new().require_encryption(true);
    assert!(matches!(
        r.listen("127.0.0.1:0", &no_key, |v: Value| v),
        Err(Error::Secret { .. })
    ));
}

#[test]
fn short_and_empty_secrets_are_refused() {
    for bad in [&b""[..], b"short", b"fifteen bytes!!"] {
        match Secret::new(bad.to_vec()) {
            Err(Error::Secret { reason, .. }) => {
                assert!(reason.contains("at least 16"), "{reason}")
            }
            other => panic!("{bad:?}: expected Error::Secret, got {other:?}"),
        }
    }
    assert!(Secret::new(b"sixteen bytes!!!".to_vec()).is_ok());
}

/// A `serve` process and its address.
struct Serve(Child, String);

impl Serve {
    fn start(env_secret: Option<&str>, extra: &[&str]) -> Serve {
        let mut cmd = Command::new(example("serve"));
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove(SECRET_ENV)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(s) = env_secret {
            cmd.env(SECRET_ENV, s);
        }
        let mut child = cmd.spawn().expect("serve example (built by cargo test)");
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut first)
            .expect("banner");
        let addr = match first.trim().strip_prefix("listening on ") {
            Some(a) => a.to_owned(),
            None => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("serve output");
                panic!("no banner: {:?}", String::from_utf8_lossy(&out.stderr));
            }
        };
        Serve(child, addr)
    }

    fn stop(mut self) {
        // SAFETY: kill with plain integers on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let status = wait_child(&mut self.0, DEADLINE);
        assert!(status.success(), "serve exited {status:?}");
    }
}

impl Drop for Serve {
    /// A test that failed before `stop` leaves no server behind (its
    /// serving children end with it: parent-death signal).
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn call(addr: &str, secret: Option<&str>, extra: &[&str], input: &[u8]) -> std::process::Output {
    let mut cmd = Command::new(example("call"));
    cmd.args(["--connect", addr, "--timeout", "5"])
        .args(extra)
        .env_remove(SECRET_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(s) = secret {
        cmd.env(SECRET_ENV, s);
    }
    let mut child = cmd.spawn().expect("call example");
    // `call` may exit before it reads (a refused secret): a broken pipe then.
    let _ = child.stdin.take().expect("stdin").write_all(input);
    child.wait_with_output().expect("call finished")
}

#[test]
fn serve_and_call_name_the_secret_when_it_is_wrong_or_missing() {
    let right = "s3cret-for-the-test";
    let serve = Serve::start(Some(right), &[]);
    let ok = call(&serve.1, Some(right), &[], b"{\"x\":1}\n");
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "{'x': 1}\n");
    let enc = call(&serve.1, Some(right), &["--encrypt"], b"{\"x\":2}\n");
    assert!(enc.status.success(), "{enc:?}");
    assert_eq!(String::from_utf8_lossy(&enc.stdout), "{'x': 2}\n");

    for (given, says) in [
        (Some("a wrong secret, long enough"), "wrong secret"),
        (None, "requires a secret"),
    ] {
        let refused = call(&serve.1, given, &[], b"{\"x\":1}\n");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{err}");
        assert!(refused.stdout.is_empty(), "no reply: {refused:?}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains(&serve.1), "names the server: {err}");
        assert!(err.contains(SECRET_ENV), "names the secret: {err}");
    }
    // A secret against a server that has none.
    let plain = Serve::start(None, &[]);
    let refused = call(&plain.1, Some(right), &[], b"{\"x\":1}\n");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("no authentication challenge"), "{err}");
    assert!(err.contains(SECRET_ENV), "names the secret: {err}");
    plain.stop();
    serve.stop();
}

#[test]
fn an_empty_or_short_secret_in_the_environment_stops_serve_and_call() {
    for bad in ["", "short"] {
        let out = Command::new(example("serve"))
            .args(["--listen", "127.0.0.1:0"])
            .env(SECRET_ENV, bad)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("serve");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(SECRET_ENV) && err.contains("at least 16"),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "never listened: {out:?}");
        let out = call("127.0.0.1:9", Some(bad), &[], b"1\n");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(SECRET_ENV) && err.contains("at least 16"),
            "{err}"
        );
    }
}

#[test]
fn a_secret_file_group_or_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("miniray-auth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("secret");
    std::fs::write(&path, "a secret kept in a file\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = Command::new(example("serve"))
        .args(["--listen", "127.0.0.1:0", "--secret-file"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("0640") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let serve = Serve::start(None, &["--secret-file", path.to_str().expect("utf-8 path")]);
    let ok = call(
        &serve.1,
        None,
        &["--secret-file", path.to_str().expect("utf-8 path")],
        b"[1]\n",
    );
    assert!(ok.status.success(), "{ok:?}");
    serve.stop();
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// `serve --exec` with a secret: the program speaks plain lines (the
/// serving child relays the tagged or encrypted session to it) and never
/// sees the secret in its environment.
#[test]
fn an_exec_program_never_sees_the_secret_and_needs_no_tags() {
    let right = "s3cret-for-the-exec-test";
    let script = r#"while read line; do echo "[\"${MINIRAY_SECRET:-unset}\", $line]"; done"#;
    let serve = Serve::start(Some(right), &["--exec", "sh", "-c", script]);
    for extra in [&[][..], &["--encrypt"][..]] {
        let out = call(&serve.1, Some(right), extra, b"1\n2\n");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "['unset', 1]\n['unset', 2]\n",
            "{extra:?}"
        );
    }
    serve.stop();
}

/// A remote pool without a secret against a host that requires one: its
/// tasks fail naming the missing secret, never as a reply that does not
/// decode (the challenge is not taken for one).
#[test]
fn a_pool_without_a_secret_is_told_the_host_requires_one() {
    use miniray::pool::{Hosts, Pool, PoolOptions};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let host = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut r = Reactor::new().expect("reactor");
            let opts = ServerOptions::new().secret(secret("the host's own secret"));
            let s = r
                .listen("127.0.0.1:0", &opts, |n: u64| n + 1)
                .expect("listen");
            tx.send(r.server_addr(s).expect("addr")).expect("send");
            while !stop.load(Ordering::Relaxed) {
                let _ = r.wait_events(Some(Duration::from_millis(20)));
            }
        })
    };
    let addr = rx.recv().expect("address");
    let hosts = Hosts::new([addr])
        .expect("hosts")
        .give_up_after(Duration::from_secs(2));
    let opts = PoolOptions::new().max_retries(1);
    let mut pool: Pool<u64, u64> = Pool::remote(&opts, &hosts).expect("pool");
    let got: Vec<_> = pool.map(0..1u64).collect();
    stop.store(true, Ordering::Relaxed);
    host.join().expect("host thread");
    let e = got[0].as_ref().expect_err("no secret: no result");
    let text = e.to_string();
    assert!(text.contains("requires a secret"), "{text}");
    assert!(!text.contains("decode"), "{text}");
}

/// An exec server with a secret relays each line to its program; a client
/// line over the server's limit cannot go, and is answered in its place
/// with an error naming why (before, the relay dropped it and the client
/// waited for a reply that never came). Encrypted, so the session goes on.
#[test]
fn an_exec_relay_answers_a_line_too_long_in_its_place() {
    use miniray::Exec;
    let secret = Secret::new(b"a secret for the relay's limit".to_vec()).expect("secret");
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop) = std::sync::mpsc::channel::<()>();
    let server_secret = secret.clone();
    let server = std::thread::spawn(move || {
        let mut r = Reactor::new().expect("reactor");
        let opts = ServerOptions::new().secret(server_secret).max_line(1024);
        let s = r
            .listen_exec(
                "127.0.0.1:0",
                &opts,
                Exec::new("cat", [] as [&str; 0]).expect("exec"),
            )
            .expect("listen");
        tx.send(r.server_addr(s).expect("addr")).expect("addr sent");
        while stop.try_recv().is_err() {
            r.wait_events(Some(Duration::from_millis(50)))
                .expect("serve");
        }
        r.stop_server(s).expect("stop");
    });
    let addr = rx.recv_timeout(DEADLINE).expect("server up");
    let mut r = Reactor::new().expect("reactor");
    let opts = ConnectOptions::new().secret(secret).encrypt(true);
    let w = r.connect(addr, &opts, Some(DEADLINE)).expect("connect");
    r.send(w, &json!(1)).expect("send");
    r.send(w, &json!("x".repeat(5000))).expect("send");
    r.send(w, &json!(3)).expect("send");
    assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("first"), json!(1));
    match r.recv::<Value>(w, Some(DEADLINE)) {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "line too long", "{message}");
        }
        other => panic!("the over-long line's answer: {other:?}"),
    }
    assert_eq!(r.recv::<Value>(w, Some(DEADLINE)).expect("third"), json!(3));
    drop(r);
    stop_tx.send(()).expect("stop");
    server.join().expect("server thread");
}
