//! Authentication of TCP peers with a shared secret (HMAC-SHA256 over a
//! random nonce): the right answer is served; a wrong, missing or late one
//! is closed before anything is forked, and reported.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{events_until, example, wait_child, DEADLINE};
use miniray::{ConnectOptions, Error, Reactor, Secret, ServerEvent, ServerOptions};
use serde_json::{json, Value};

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

#[test]
fn right_secret_is_served_wrong_or_missing_is_refused_before_fork() {
    let secret = Secret::new(b"a shared secret of some length".to_vec());
    let mut r = Reactor::new().expect("reactor");
    let opts = ServerOptions::new()
        .secret(secret.clone())
        .auth_timeout(Duration::from_millis(300));
    let s = r
        .listen("127.0.0.1:0", &opts, |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");

    // The right secret.
    let good = r
        .connect(addr, &ConnectOptions::new().secret(secret), Some(DEADLINE))
        .expect("connect");
    r.send(good, &json!({"authenticated": true})).expect("send");
    assert_eq!(
        r.recv::<Value>(good, Some(DEADLINE)).expect("echo"),
        json!({"authenticated": true})
    );
    let events = events_until(&mut r, accepted);
    assert!(auth_failed(&events).is_none(), "{events:?}");

    // A wrong secret: closed, nothing forked.
    let bad = r
        .connect(
            addr,
            &ConnectOptions::new().secret(Secret::new(b"guess".to_vec())),
            Some(DEADLINE),
        )
        .expect("the client side of the handshake completes");
    let events = events_until(&mut r, |e| auth_failed(e).is_some());
    assert_eq!(auth_failed(&events), Some("wrong answer"));
    assert!(!accepted(&events));
    assert!(matches!(
        r.recv::<Value>(bad, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));

    // No secret at all (a plain client sends a message as its first line).
    let plain = r
        .connect(addr, &ConnectOptions::new(), Some(DEADLINE))
        .expect("connect");
    r.send(plain, &json!("hello?")).expect("send");
    let events = events_until(&mut r, |e| auth_failed(e).is_some());
    assert!(!accepted(&events));
    // It saw the challenge (not JSON), then the close.
    assert!(matches!(
        r.recv::<Value>(plain, Some(DEADLINE)),
        Err(Error::Decode(_))
    ));
    assert!(matches!(
        r.recv::<Value>(plain, Some(DEADLINE)),
        Err(Error::Closed { .. })
    ));

    // Silence: closed at the deadline.
    let mut silent = std::net::TcpStream::connect(addr).expect("connect");
    let events = events_until(&mut r, |e| auth_failed(e).is_some());
    assert_eq!(auth_failed(&events), Some("no answer in time"));
    assert!(!accepted(&events));
    let _ = silent.write_all(b"late\n");
    assert_eq!(r.server_connections(s).expect("count"), 1);
}

#[test]
fn serve_and_call_take_the_secret_from_the_environment() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut serve = Command::new(example("serve"))
        .args(["--listen", "127.0.0.1:0"])
        .env("MINIRAY_SECRET", "s3cret-for-the-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve example (built by cargo test)");
    let mut first = String::new();
    std::io::BufReader::new(serve.stdout.as_mut().expect("stdout"))
        .read_line(&mut first)
        .expect("banner");
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .expect("banner")
        .to_owned();
    let call = |secret: Option<&str>| {
        let mut cmd = Command::new(example("call"));
        cmd.args(["--connect", &addr, "--timeout", "5"])
            .env_remove("MINIRAY_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(s) = secret {
            cmd.env("MINIRAY_SECRET", s);
        }
        let mut child = cmd.spawn().expect("call example");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"{\"x\":1}\n")
            .expect("write");
        child.wait_with_output().expect("call finished")
    };
    let ok = call(Some("s3cret-for-the-test"));
    assert!(ok.status.success());
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "{'x': 1}\n");
    let refused = call(Some("wrong"));
    assert!(
        !refused.status.success(),
        "a wrong secret must not get a reply"
    );
    // SIGTERM: serve stops gracefully and reaps its serving children itself.
    // SAFETY: kill with plain integers on our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut serve, DEADLINE);
    assert!(status.success(), "serve exited {status:?}");
}

/// A client with a secret against a server without one: no challenge ever
/// comes, and `connect` says so at its deadline instead of a bare timeout.
#[test]
fn a_secret_against_a_plain_server_fails_naming_the_missing_challenge() {
    let mut r = Reactor::new().expect("reactor");
    let s = r
        .listen("127.0.0.1:0", &ServerOptions::new(), |v: Value| v)
        .expect("listen");
    let addr = r.server_addr(s).expect("addr");
    let secret = Secret::new(b"a shared secret of some length".to_vec());
    match r.connect(
        addr,
        &ConnectOptions::new().secret(secret),
        Some(Duration::from_millis(300)),
    ) {
        Err(Error::Io { op, source }) => {
            assert_eq!(op, "authenticate");
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut);
            assert!(source.to_string().contains("no authentication challenge"));
        }
        other => panic!("expected an authenticate error, got {other:?}"),
    }
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
    let secret = Secret::new(b"a shared secret of some length".to_vec());
    let got = r.connect(
        &[addr, addr][..],
        &ConnectOptions::new().secret(secret),
        Some(Duration::from_millis(300)),
    );
    match got {
        Err(Error::Io { op, ref source }) => {
            assert_eq!(op, "authenticate");
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut);
        }
        other => panic!("expected an authenticate error, got {other:?}"),
    }
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
